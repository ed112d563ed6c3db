//! Drift between two snapshots of a version: the population stability index (PSI) per value
//! column, and how the share of nulls moved.
//!
//! PSI = sum over bins of (t - b) * ln(t / b), where b and t are the base's and the target's
//! shares of non-null values in each bin. Numbers are binned at the base's deciles (values at
//! or below the first, between consecutive ones, above the last; repeated deciles merge);
//! strings and booleans by category: the base's 20 most frequent values and one bin for all
//! others. Shares are smoothed so an empty bin does not make PSI infinite: share =
//! (count + 0.5) / (n + 0.5 * bins). Customary reading: below 0.1 no real change, 0.1 to 0.25
//! worth watching, above 0.25 act.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::stats::{categories, numbers, numeric_kind, quantile, TOP_VALUES};

/// How one value column moved from a base snapshot to a target. A worker sends it as JSON;
/// the service gives it the API's shape (`model::ColumnDrift`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColumnDrift {
    /// `numeric` or `categorical`.
    pub kind: String,
    /// None when either snapshot has no non-null value in the column.
    pub psi: Option<f64>,
    /// Target null share minus base null share.
    pub null_rate_change: f64,
    pub base_null_rate: f64,
    pub target_null_rate: f64,
    pub bins: Vec<DriftBin>,
}

/// One bin's counts in the base and the target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftBin {
    /// `<= 1.5`, `(1.5, 2]`, `> 9` for numbers; the value (or `(other)`) for categories.
    pub label: String,
    /// A numeric bin's bounds (`lower` excluded, `upper` included; None: unbounded).
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub base: u64,
    pub target: u64,
}

/// Pseudo-count added to every bin.
const SMOOTHING: f64 = 0.5;
const OTHER: &str = "(other)";

/// Drift of every column both frames have with the same kind, but their keys.
pub fn frame_drift(
    base: &DataFrame,
    target: &DataFrame,
) -> Result<BTreeMap<String, ColumnDrift>, String> {
    let key = |f: &DataFrame| f.columns().first().map(|c| c.name().to_string());
    let (base_key, target_key) = (key(base), key(target));
    let mut out = BTreeMap::new();
    for column in target.columns() {
        let name = column.name().as_str();
        if Some(name) == target_key.as_deref() || Some(name) == base_key.as_deref() {
            continue;
        }
        let Ok(before) = base.column(name) else {
            continue;
        };
        let (b, t) = (
            before.as_materialized_series(),
            column.as_materialized_series(),
        );
        let drift = match (numeric_kind(b.dtype()), numeric_kind(t.dtype())) {
            (Some(_), Some(_)) => numeric(&numbers(b)?, &numbers(t)?),
            (None, None) => categorical(&categories(b)?, &categories(t)?),
            _ => continue,
        };
        out.insert(name.to_string(), drift);
    }
    Ok(out)
}

fn null_rate<T>(values: &[Option<T>]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|v| v.is_none()).count() as f64 / values.len() as f64
}

fn numeric(base: &[Option<f64>], target: &[Option<f64>]) -> ColumnDrift {
    let mut sorted: Vec<f64> = base.iter().flatten().copied().collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut edges: Vec<f64> = if sorted.is_empty() {
        Vec::new()
    } else {
        (1..10)
            .map(|i| quantile(&sorted, i as f64 / 10.0))
            .collect()
    };
    edges.dedup();
    let bin = |v: f64| edges.partition_point(|e| *e < v);
    let count = |values: &[Option<f64>]| {
        let mut counts = vec![0u64; edges.len() + 1];
        for v in values.iter().flatten() {
            counts[bin(*v)] += 1;
        }
        counts
    };
    let (b, t) = (count(base), count(target));
    let bounds = |i: usize| (i.checked_sub(1).map(|j| edges[j]), edges.get(i).copied());
    let label = |i: usize| match bounds(i) {
        (None, Some(hi)) => format!("<= {hi}"),
        (Some(lo), Some(hi)) => format!("({lo}, {hi}]"),
        (Some(lo), None) => format!("> {lo}"),
        (None, None) => "all".into(),
    };
    let mut drift = finish("numeric", base, target, b, t, label);
    for (i, bin) in drift.bins.iter_mut().enumerate() {
        (bin.lower, bin.upper) = bounds(i);
    }
    drift
}

fn categorical(base: &[Option<String>], target: &[Option<String>]) -> ColumnDrift {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for v in base.iter().flatten() {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let categories: Vec<&str> = ranked.iter().take(TOP_VALUES).map(|(v, _)| *v).collect();
    let index: HashMap<&str, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, i))
        .collect();
    let count = |values: &[Option<String>]| {
        let mut counts = vec![0u64; categories.len() + 1];
        for v in values.iter().flatten() {
            let at = index.get(v.as_str()).copied().unwrap_or(categories.len());
            counts[at] += 1;
        }
        counts
    };
    let (b, t) = (count(base), count(target));
    let label = |i: usize| {
        categories
            .get(i)
            .map_or(OTHER.to_string(), |v| v.to_string())
    };
    finish("categorical", base, target, b, t, label)
}

fn finish<T>(
    kind: &'static str,
    base: &[Option<T>],
    target: &[Option<T>],
    b: Vec<u64>,
    t: Vec<u64>,
    label: impl Fn(usize) -> String,
) -> ColumnDrift {
    let (base_null_rate, target_null_rate) = (null_rate(base), null_rate(target));
    ColumnDrift {
        kind: kind.into(),
        psi: psi(&b, &t),
        null_rate_change: target_null_rate - base_null_rate,
        base_null_rate,
        target_null_rate,
        bins: b
            .iter()
            .zip(&t)
            .enumerate()
            .map(|(i, (b, t))| DriftBin {
                label: label(i),
                lower: None,
                upper: None,
                base: *b,
                target: *t,
            })
            .collect(),
    }
}

/// PSI of two count vectors over the same bins, with additive smoothing.
pub fn psi(base: &[u64], target: &[u64]) -> Option<f64> {
    let (nb, nt) = (base.iter().sum::<u64>(), target.iter().sum::<u64>());
    if nb == 0 || nt == 0 {
        return None;
    }
    let bins = base.len() as f64;
    let share = |c: u64, n: u64| (c as f64 + SMOOTHING) / (n as f64 + SMOOTHING * bins);
    Some(
        base.iter()
            .zip(target)
            .map(|(b, t)| {
                let (b, t) = (share(*b, nb), share(*t, nt));
                (t - b) * (t / b).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_has_no_drift_and_a_shifted_one_has_much() {
        let base: Vec<Option<f64>> = (0..1000).map(|i| Some(i as f64)).collect();
        let same = numeric(&base, &base);
        assert!(same.psi.unwrap().abs() < 1e-12);
        assert_eq!(same.bins.len(), 10);
        assert_eq!(same.bins.iter().map(|b| b.base).sum::<u64>(), 1000);
        let shifted: Vec<Option<f64>> = (0..1000).map(|i| Some(i as f64 + 500.0)).collect();
        assert!(numeric(&base, &shifted).psi.unwrap() > 0.25);
    }

    #[test]
    fn psi_matches_the_formula_with_smoothing() {
        // shares: base (10.5/21, 10.5/21), target (0.5/21, 20.5/21)
        let expected = (0.5f64 / 21.0 - 10.5 / 21.0) * ((0.5f64 / 21.0) / (10.5 / 21.0)).ln()
            + (20.5f64 / 21.0 - 10.5 / 21.0) * ((20.5f64 / 21.0) / (10.5 / 21.0)).ln();
        assert!((psi(&[10, 10], &[0, 20]).unwrap() - expected).abs() < 1e-12);
        assert_eq!(psi(&[0, 0], &[1, 1]), None);
    }

    #[test]
    fn categories_outside_the_base_top_go_to_other_and_null_rates_move() {
        let base: Vec<Option<String>> = vec![Some("a".into()), Some("b".into()), None, None];
        let target: Vec<Option<String>> =
            vec![Some("a".into()), Some("z".into()), None, Some("a".into())];
        let d = categorical(&base, &target);
        let labels: Vec<&str> = d.bins.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["a", "b", "(other)"]);
        assert_eq!(d.bins[2].target, 1);
        assert!((d.null_rate_change - (0.25 - 0.5)).abs() < 1e-12);
    }
}
