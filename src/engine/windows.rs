//! Exact window kernels: the values of one entity's events in the window `(t − w, t]` at any
//! query time `t`, for every function an aggregation feature can declare.
//!
//! Training sets, `as_of` and online answers all call these, so the three cannot disagree.
//! Each kernel takes one entity's events in time order (ties in the order they were
//! ingested) and the query times in ascending order, and answers one value per query.
//!
//! How each stays exact, in O((events + queries) · log) per entity and window:
//! - counts, sums, means and variances: per-entity prefix totals, the window being
//!   `P(hi) − P(lo)`. Float totals are double-double (about 106 bits), so the difference of two
//!   large prefixes keeps the window's own digits; integer sums are exact in `i128`; the
//!   variance is `(n·Σx² − (Σx)²) / (n(n − 1))` with the squares and the products taken
//!   exactly, so a large mean does not swallow a small spread.
//! - min and max: a monotonic deque slid over the queries (both window ends only move forward).
//! - first and last: the next and previous non-null event of each position.
//! - distinct counts: a count per value, slid with the window.
//! - percentiles: a Fenwick tree over the entity's values in rank order, slid with the window;
//!   the k-th smallest is a descent of the tree. Linear interpolation between the two order
//!   statistics around `q · (n − 1)`, as numpy's default and DuckDB's `quantile_cont`.
//!
//! Nulls are skipped everywhere (the caller passes NaN as null). On a window with no values
//! counts are 0 and every other function is null; a sample standard deviation needs two.

/// The events of one window: positions `lo..hi` of the entity's time-ordered events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub lo: usize,
    pub hi: usize,
}

/// The window `(q − width, q]` of each query as a span of `times` (both sorted ascending):
/// an event at exactly `q` is in, one at exactly `q − width` is out.
pub fn spans(times: &[i64], queries: &[i64], width: i64) -> Vec<Span> {
    let mut out = Vec::with_capacity(queries.len());
    spans_into(times, queries, width, &mut out);
    out
}

/// [`spans`] into `out` (cleared first), so a caller going over many entities reuses one
/// buffer.
pub fn spans_into(times: &[i64], queries: &[i64], width: i64, out: &mut Vec<Span>) {
    debug_assert!(queries.windows(2).all(|w| w[0] <= w[1]));
    let (mut lo, mut hi) = (0, 0);
    out.clear();
    out.extend(queries.iter().map(|&q| {
        let start = q.saturating_sub(width);
        while hi < times.len() && times[hi] <= q {
            hi += 1;
        }
        while lo < hi && times[lo] <= start {
            lo += 1;
        }
        Span { lo, hi }
    }));
}

/// Non-null values in each window.
pub fn count<T>(values: &[Option<T>], spans: &[Span]) -> Vec<i64> {
    let prefix = prefix_counts(values);
    spans
        .iter()
        .map(|s| (prefix[s.hi] - prefix[s.lo]) as i64)
        .collect()
}

fn prefix_counts<T>(values: &[Option<T>]) -> Vec<u32> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    let mut n = 0u32;
    prefix.push(0);
    for v in values {
        n += u32::from(v.is_some());
        prefix.push(n);
    }
    prefix
}

/// Exact sums of integers; null on an empty window or when the sum does not fit an `i64`.
pub fn sum_int(values: &[Option<i64>], spans: &[Span]) -> Vec<Option<i64>> {
    let counts = prefix_counts(values);
    let mut prefix = Vec::with_capacity(values.len() + 1);
    let mut total = 0i128;
    prefix.push(0);
    for v in values {
        total += i128::from(v.unwrap_or(0));
        prefix.push(total);
    }
    spans
        .iter()
        .map(|s| {
            (counts[s.hi] > counts[s.lo])
                .then(|| i64::try_from(prefix[s.hi] - prefix[s.lo]).ok())
                .flatten()
        })
        .collect()
}

/// One entity's prefix totals of a column: count, Σx and (when asked for) Σx², as
/// double-doubles. Built once, they answer count, sum, mean and stddev for every window.
pub struct Totals {
    counts: Vec<u32>,
    sums: Vec<Dd>,
    squares: Vec<Dd>,
}

impl Totals {
    pub fn new(values: &[Option<f64>], squares: bool) -> Self {
        let mut totals = Totals {
            counts: Vec::with_capacity(values.len() + 1),
            sums: Vec::with_capacity(values.len() + 1),
            squares: Vec::with_capacity(if squares { values.len() + 1 } else { 0 }),
        };
        totals.refill(values, squares);
        totals
    }

    /// The totals of other values, in the buffers these hold (a caller going over many
    /// entities allocates once).
    pub fn refill(&mut self, values: &[Option<f64>], squares: bool) {
        let (counts, sums, sq) = (&mut self.counts, &mut self.sums, &mut self.squares);
        counts.clear();
        sums.clear();
        sq.clear();
        let (mut n, mut s, mut s2) = (0u32, Dd::ZERO, Dd::ZERO);
        counts.push(n);
        sums.push(s);
        if squares {
            sq.push(s2);
        }
        for v in values {
            if let Some(x) = *v {
                n += 1;
                s = s.add(Dd::from(x));
                if squares {
                    s2 = s2.add(Dd::product(x, x));
                }
            }
            counts.push(n);
            sums.push(s);
            if squares {
                sq.push(s2);
            }
        }
    }

    fn n(&self, s: &Span) -> u32 {
        self.counts[s.hi] - self.counts[s.lo]
    }

    fn total(&self, s: &Span) -> Dd {
        self.sums[s.hi].sub(self.sums[s.lo])
    }

    /// Non-null values in each window.
    pub fn count<'a>(&'a self, spans: &'a [Span]) -> impl Iterator<Item = i64> + 'a {
        spans.iter().map(|s| i64::from(self.n(s)))
    }

    /// Sums; null on an empty window.
    pub fn sum<'a>(&'a self, spans: &'a [Span]) -> impl Iterator<Item = Option<f64>> + 'a {
        spans
            .iter()
            .map(|s| (self.n(s) > 0).then(|| self.total(s).value()))
    }

    /// Means; null on an empty window.
    pub fn mean<'a>(&'a self, spans: &'a [Span]) -> impl Iterator<Item = Option<f64>> + 'a {
        spans.iter().map(|s| {
            let n = self.n(s);
            (n > 0).then(|| self.total(s).div_f64(f64::from(n)).value())
        })
    }

    /// Sample standard deviations (n − 1); null below two values. Needs the totals built
    /// with squares, and the values they were built from.
    pub fn stddev(&self, values: &[Option<f64>], spans: &[Span]) -> Vec<Option<f64>> {
        spans
            .iter()
            .map(|s| {
                let n = self.n(s);
                if n < 2 || self.squares.is_empty() {
                    return None;
                }
                let n = f64::from(n);
                let sum = self.total(s);
                let squares = self.squares[s.hi].sub(self.squares[s.lo]);
                let spread = squares.mul_f64(n).sub(sum.mul(sum)).value();
                // The prefix totals carry about 2^-104 of their size per step, so when the
                // spread is not many orders above what they can hold (a tiny deviation around
                // a huge mean, late in a long history), go over the window's own values.
                let steps = s.hi as f64 + 2.0;
                let noise = self.squares[s.hi].hi * n * steps * steps * 2f64.powi(-100);
                if spread <= noise * 1e10 {
                    return Some(direct_stddev(&values[s.lo..s.hi]));
                }
                Some((spread / (n * (n - 1.0))).sqrt())
            })
            .collect()
    }
}

/// Sums of floats; null on an empty window.
pub fn sum(values: &[Option<f64>], spans: &[Span]) -> Vec<Option<f64>> {
    Totals::new(values, false).sum(spans).collect()
}

/// Means; null on an empty window.
pub fn mean(values: &[Option<f64>], spans: &[Span]) -> Vec<Option<f64>> {
    Totals::new(values, false).mean(spans).collect()
}

/// Sample standard deviations (n − 1); null below two values.
pub fn stddev(values: &[Option<f64>], spans: &[Span]) -> Vec<Option<f64>> {
    Totals::new(values, true).stddev(values, spans)
}

/// The sample standard deviation of a few values, by deviations from their mean (taken
/// exactly), corrected for what rounding left in the mean.
fn direct_stddev(values: &[Option<f64>]) -> f64 {
    let (mut n, mut total) = (0.0, Dd::ZERO);
    for x in values.iter().flatten() {
        total = total.add(Dd::from(*x));
        n += 1.0;
    }
    let mean = total.div_f64(n);
    let (mut deviations, mut squares) = (Dd::ZERO, Dd::ZERO);
    for x in values.iter().flatten() {
        let d = Dd::from(*x).sub(mean);
        deviations = deviations.add(d);
        squares = squares.add(d.mul(d));
    }
    let spread = squares.sub(deviations.mul(deviations).div_f64(n)).value();
    (spread.max(0.0) / (n - 1.0)).sqrt()
}

/// Smallest (`largest` false) or largest value of each window; null on an empty window.
pub fn extreme<T: PartialOrd + Copy>(
    values: &[Option<T>],
    spans: &[Span],
    largest: bool,
) -> Vec<Option<T>> {
    // Positions whose values are strictly better than every later one in the deque: the front
    // is the window's answer once positions before the window's start are dropped.
    let beats = |a: T, b: T| if largest { a >= b } else { a <= b };
    let mut deque = std::collections::VecDeque::new();
    let mut next = 0;
    spans
        .iter()
        .map(|s| {
            while next < s.hi {
                if let Some(v) = values[next] {
                    while deque
                        .back()
                        .is_some_and(|&i: &usize| values[i].is_some_and(|b| beats(v, b)))
                    {
                        deque.pop_back();
                    }
                    deque.push_back(next);
                }
                next += 1;
            }
            while deque.front().is_some_and(|&i| i < s.lo) {
                deque.pop_front();
            }
            deque.front().and_then(|&i| values[i])
        })
        .collect()
}

/// The position of each window's earliest non-null event (ties: the first ingested).
pub fn first<T>(values: &[Option<T>], spans: &[Span]) -> Vec<Option<usize>> {
    let mut next = vec![usize::MAX; values.len() + 1];
    for i in (0..values.len()).rev() {
        next[i] = if values[i].is_some() { i } else { next[i + 1] };
    }
    spans
        .iter()
        .map(|s| Some(next[s.lo]).filter(|&i| i < s.hi))
        .collect()
}

/// The position of each window's latest non-null event (ties: the last ingested).
pub fn last<T>(values: &[Option<T>], spans: &[Span]) -> Vec<Option<usize>> {
    // previous[i]: the last non-null position before i, plus one (0: none).
    let mut previous = vec![0usize; values.len() + 1];
    for i in 0..values.len() {
        previous[i + 1] = if values[i].is_some() {
            i + 1
        } else {
            previous[i]
        };
    }
    spans
        .iter()
        .map(|s| {
            let p = previous[s.hi];
            (p > s.lo).then(|| p - 1)
        })
        .collect()
}

/// Distinct non-null values in each window. Values are small ids (the caller numbers the
/// distinct values); `seen` is scratch indexed by id, all zeros on entry and on return.
pub fn count_distinct(values: &[Option<u32>], spans: &[Span], seen: &mut Vec<u32>) -> Vec<i64> {
    if let Some(top) = values.iter().flatten().max() {
        if seen.len() <= *top as usize {
            seen.resize(*top as usize + 1, 0);
        }
    }
    let (mut lo, mut hi, mut distinct) = (0, 0, 0i64);
    let out = spans
        .iter()
        .map(|s| {
            while hi < s.hi {
                if let Some(v) = values[hi] {
                    let c = &mut seen[v as usize];
                    distinct += i64::from(*c == 0);
                    *c += 1;
                }
                hi += 1;
            }
            while lo < s.lo {
                if let Some(v) = values[lo] {
                    let c = &mut seen[v as usize];
                    *c -= 1;
                    distinct -= i64::from(*c == 0);
                }
                lo += 1;
            }
            distinct
        })
        .collect();
    for v in values[lo..hi].iter().flatten() {
        seen[*v as usize] -= 1;
    }
    out
}

/// The `q`-quantile (0 < q < 1) of each window's values, interpolated linearly between the
/// order statistics around `q · (n − 1)`; null on an empty window.
pub fn percentile(values: &[Option<f64>], spans: &[Span], q: f64) -> Vec<Option<f64>> {
    // Each value's rank among the entity's values (ties by position), and the values by rank.
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_some()).collect();
    order.sort_by(|&a, &b| {
        values[a]
            .partial_cmp(&values[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rank = vec![usize::MAX; values.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let by_rank: Vec<f64> = order.iter().filter_map(|&i| values[i]).collect();
    let mut tree = Fenwick::new(by_rank.len());
    let (mut lo, mut hi, mut n) = (0, 0, 0usize);
    spans
        .iter()
        .map(|s| {
            while hi < s.hi {
                if values[hi].is_some() {
                    tree.add(rank[hi], 1);
                    n += 1;
                }
                hi += 1;
            }
            while lo < s.lo {
                if values[lo].is_some() {
                    tree.add(rank[lo], -1);
                    n -= 1;
                }
                lo += 1;
            }
            if n == 0 {
                return None;
            }
            let position = q * (n - 1) as f64;
            let below = position.floor();
            let k = below as usize;
            let a = by_rank[tree.kth(k)];
            if k + 1 >= n {
                return Some(a);
            }
            let b = by_rank[tree.kth(k + 1)];
            Some(a + (b - a) * (position - below))
        })
        .collect()
}

/// Counts per rank, with prefix sums and the k-th present rank in O(log n).
struct Fenwick {
    tree: Vec<i32>,
    top: usize,
}

impl Fenwick {
    fn new(n: usize) -> Self {
        let top = if n == 0 { 0 } else { 1 << n.ilog2() };
        Fenwick {
            tree: vec![0; n + 1],
            top,
        }
    }

    fn add(&mut self, rank: usize, by: i32) {
        let mut i = rank + 1;
        while i < self.tree.len() {
            self.tree[i] += by;
            i += i & i.wrapping_neg();
        }
    }

    /// The rank of the k-th (from 0) present element.
    fn kth(&self, k: usize) -> usize {
        let (mut pos, mut left) = (0, k as i32 + 1);
        let mut step = self.top;
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] < left {
                pos = next;
                left -= self.tree[next];
            }
            step >>= 1;
        }
        pos
    }
}

/// A double-double: an unevaluated sum `hi + lo` carrying about 106 bits.
#[derive(Debug, Clone, Copy)]
struct Dd {
    hi: f64,
    lo: f64,
}

/// `a + b` as the rounded sum and its exact error.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

impl Dd {
    const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };

    fn from(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }

    /// `a · b`, exactly.
    fn product(a: f64, b: f64) -> Dd {
        let p = a * b;
        Dd {
            hi: p,
            lo: a.mul_add(b, -p),
        }
    }

    fn normal(hi: f64, lo: f64) -> Dd {
        let (hi, lo) = two_sum(hi, lo);
        Dd { hi, lo }
    }

    fn add(self, o: Dd) -> Dd {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let (s, e) = two_sum(s, e + t);
        Dd::normal(s, e + f)
    }

    fn sub(self, o: Dd) -> Dd {
        self.add(Dd {
            hi: -o.hi,
            lo: -o.lo,
        })
    }

    fn mul(self, o: Dd) -> Dd {
        let p = Dd::product(self.hi, o.hi);
        Dd::normal(p.hi, p.lo + (self.hi * o.lo + self.lo * o.hi))
    }

    fn mul_f64(self, b: f64) -> Dd {
        let p = Dd::product(self.hi, b);
        Dd::normal(p.hi, p.lo + self.lo * b)
    }

    fn div_f64(self, b: f64) -> Dd {
        let q = self.hi / b;
        let r = self.sub(Dd::product(q, b));
        Dd::normal(q, r.hi / b)
    }

    fn value(self) -> f64 {
        self.hi + self.lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: random enough for test data, and no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// One entity's events: times with ties, values with nulls, in time order.
    struct Case {
        times: Vec<i64>,
        floats: Vec<Option<f64>>,
        ints: Vec<Option<i64>>,
        ids: Vec<Option<u32>>,
        queries: Vec<i64>,
    }

    fn case(rng: &mut Rng, events: usize, queries: usize, shape: u64) -> Case {
        // Few distinct times, so ties are common; queries often at event times exactly.
        let span = 1 + rng.below(200) as i64;
        let mut times: Vec<i64> = (0..events).map(|_| rng.below(span as u64) as i64).collect();
        times.sort_unstable();
        let float = |rng: &mut Rng| match shape {
            // A large mean with a small spread: what breaks naive variances.
            0 => 1e9 + rng.unit(),
            // Values of mixed sign that cancel: what breaks naive prefix sums.
            1 => (rng.unit() - 0.5) * 1e12,
            // Few distinct values, so percentiles and extremes meet ties.
            2 => rng.below(4) as f64,
            _ => rng.unit() * 100.0,
        };
        let floats = (0..events)
            .map(|_| (rng.below(5) != 0).then(|| float(rng)))
            .collect();
        let ints = (0..events)
            .map(|_| (rng.below(5) != 0).then(|| rng.below(2000) as i64 - 1000))
            .collect();
        let ids = (0..events)
            .map(|_| (rng.below(5) != 0).then(|| rng.below(6) as u32))
            .collect();
        let mut qs: Vec<i64> = (0..queries)
            .map(|_| match rng.below(3) {
                0 if !times.is_empty() => times[rng.below(times.len() as u64) as usize],
                _ => rng.below(span as u64 + 20) as i64 - 10,
            })
            .collect();
        qs.sort_unstable();
        Case {
            times,
            floats,
            ints,
            ids,
            queries: qs,
        }
    }

    /// The window's values by definition: every event with `q − w < t ≤ q`, in order.
    fn window<T: Copy>(c: &Case, values: &[Option<T>], q: i64, w: i64) -> Vec<(usize, T)> {
        (0..c.times.len())
            .filter(|&i| c.times[i] > q - w && c.times[i] <= q)
            .filter_map(|i| values[i].map(|v| (i, v)))
            .collect()
    }

    fn close(a: Option<f64>, b: Option<f64>, scale: f64) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * scale.max(b.abs()).max(1e-300),
            _ => false,
        }
    }

    fn each_case(mut check: impl FnMut(&Case, i64, &[Span])) {
        let mut rng = Rng(7);
        for round in 0..400 {
            let events = rng.below(60) as usize;
            let queries = 1 + rng.below(40) as usize;
            let c = case(&mut rng, events, queries, round % 4);
            for w in [1, 2, 5, 17, 1000] {
                let spans = spans(&c.times, &c.queries, w);
                check(&c, w, &spans);
            }
        }
    }

    #[test]
    fn spans_hold_exactly_the_events_after_the_old_end_and_up_to_the_query() {
        each_case(|c, w, spans| {
            for (q, s) in c.queries.iter().zip(spans) {
                let expected: Vec<usize> = (0..c.times.len())
                    .filter(|&i| c.times[i] > q - w && c.times[i] <= *q)
                    .collect();
                assert_eq!((s.lo..s.hi).collect::<Vec<_>>(), expected, "q={q} w={w}");
            }
        });
    }

    #[test]
    fn counts_sums_and_means_equal_brute_force() {
        each_case(|c, w, spans| {
            let counts = count(&c.floats, spans);
            let sums = sum(&c.floats, spans);
            let means = mean(&c.floats, spans);
            let int_sums = sum_int(&c.ints, spans);
            for (j, &q) in c.queries.iter().enumerate() {
                let vals = window(c, &c.floats, q, w);
                assert_eq!(counts[j], vals.len() as i64);
                let scale: f64 = vals.iter().map(|(_, v)| v.abs()).sum();
                let expected = (!vals.is_empty()).then(|| vals.iter().map(|(_, v)| v).sum());
                assert!(
                    close(sums[j], expected, scale),
                    "{:?} {expected:?}",
                    sums[j]
                );
                let expected_mean = expected.map(|s: f64| s / vals.len() as f64);
                let mean_scale = scale / vals.len().max(1) as f64;
                assert!(close(means[j], expected_mean, mean_scale));
                let ints = window(c, &c.ints, q, w);
                let expected = (!ints.is_empty()).then(|| ints.iter().map(|(_, v)| v).sum());
                assert_eq!(int_sums[j], expected);
            }
        });
    }

    #[test]
    fn standard_deviations_equal_a_two_pass_reference_even_with_a_large_mean() {
        each_case(|c, w, spans| {
            let got = stddev(&c.floats, spans);
            for (j, &q) in c.queries.iter().enumerate() {
                let vals: Vec<f64> = window(c, &c.floats, q, w).iter().map(|p| p.1).collect();
                // Two passes, corrected for the rounding left in the mean.
                let expected = (vals.len() >= 2).then(|| {
                    let n = vals.len() as f64;
                    let m = vals.iter().sum::<f64>() / n;
                    let d: f64 = vals.iter().map(|v| v - m).sum();
                    let d2: f64 = vals.iter().map(|v| (v - m) * (v - m)).sum();
                    ((d2 - d * d / n) / (n - 1.0)).sqrt()
                });
                // Relative to the spread itself, not to the (large) values.
                let ok = match (got[j], expected) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.max(1e-3),
                    (a, b) => a == b,
                };
                assert!(ok, "q={q} w={w}: {:?} vs {expected:?}", got[j]);
            }
        });
    }

    #[test]
    fn extremes_firsts_and_lasts_equal_brute_force() {
        each_case(|c, w, spans| {
            let mins = extreme(&c.floats, spans, false);
            let maxes = extreme(&c.ints, spans, true);
            let firsts = first(&c.floats, spans);
            let lasts = last(&c.floats, spans);
            for (j, &q) in c.queries.iter().enumerate() {
                let vals = window(c, &c.floats, q, w);
                let min = vals.iter().map(|p| p.1).reduce(f64::min);
                assert_eq!(mins[j], min);
                let max = window(c, &c.ints, q, w).iter().map(|p| p.1).max();
                assert_eq!(maxes[j], max);
                assert_eq!(firsts[j], vals.first().map(|p| p.0));
                assert_eq!(lasts[j], vals.last().map(|p| p.0));
            }
        });
    }

    #[test]
    fn distinct_counts_equal_brute_force_and_leave_the_scratch_clean() {
        let mut seen = Vec::new();
        each_case(|c, w, spans| {
            let got = count_distinct(&c.ids, spans, &mut seen);
            for (j, &q) in c.queries.iter().enumerate() {
                let mut vals: Vec<u32> = window(c, &c.ids, q, w).iter().map(|p| p.1).collect();
                vals.sort_unstable();
                vals.dedup();
                assert_eq!(got[j], vals.len() as i64);
            }
            assert!(seen.iter().all(|&n| n == 0));
        });
    }

    #[test]
    fn percentiles_interpolate_like_numpy_between_order_statistics() {
        for q in [0.01, 0.25, 0.5, 0.95, 0.999] {
            each_case(|c, w, spans| {
                let got = percentile(&c.floats, spans, q);
                for (j, &t) in c.queries.iter().enumerate() {
                    let mut vals: Vec<f64> =
                        window(c, &c.floats, t, w).iter().map(|p| p.1).collect();
                    vals.sort_by(|a, b| a.total_cmp(b));
                    let expected = (!vals.is_empty()).then(|| {
                        let pos = q * (vals.len() - 1) as f64;
                        let (k, frac) = (pos.floor() as usize, pos - pos.floor());
                        let b = vals[(k + 1).min(vals.len() - 1)];
                        vals[k] + (b - vals[k]) * frac
                    });
                    let scale = vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert!(close(got[j], expected, scale), "{:?} {expected:?}", got[j]);
                }
            });
        }
        // numpy.percentile([1, 2, 3, 4], 95) == 3.85
        let one = [Span { lo: 0, hi: 4 }];
        let v = [Some(4.0), Some(1.0), Some(3.0), Some(2.0)];
        assert!((percentile(&v, &one, 0.95)[0].unwrap_or(0.0) - 3.85).abs() < 1e-12);
    }

    #[test]
    fn a_window_with_no_values_is_zero_for_counts_and_null_for_the_rest() {
        let times = [10, 20];
        let values = [None, Some(1.0)];
        let s = spans(&times, &[5, 15, 20, 30], 5);
        assert_eq!(count(&values, &s), [0, 0, 1, 0]);
        assert_eq!(sum(&values, &s), [None, None, Some(1.0), None]);
        assert_eq!(stddev(&values, &s), [None, None, None, None]);
        assert_eq!(
            count_distinct(&[None, Some(0)], &s, &mut Vec::new()),
            [0, 0, 1, 0]
        );
        assert_eq!(percentile(&values, &s, 0.5), [None, None, Some(1.0), None]);
    }
}
