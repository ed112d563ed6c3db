//! Aggregation features: a declaration checked against its raw table, and its values for
//! given entities at given instants, computed from the table's events with the exact kernels
//! of [`super::windows`].

use std::collections::HashMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::{ColumnType, TableSchema};
use super::windows::{self, Span};

/// The longest window.
pub const MAX_WINDOW_SECONDS: i64 = 366 * 86_400;
/// Output columns per feature.
pub const MAX_OUTPUTS: usize = 100;

pub const FUNCTIONS: &str =
    "count, sum, mean, min, max, stddev, first, last, count_distinct, percentile";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Stddev,
    First,
    Last,
    CountDistinct,
    Percentile(f64),
}

impl Function {
    fn parse(name: &str, q: Option<f64>) -> Result<Function, String> {
        let f = match name {
            "count" => Function::Count,
            "sum" => Function::Sum,
            "mean" => Function::Mean,
            "min" => Function::Min,
            "max" => Function::Max,
            "stddev" => Function::Stddev,
            "first" => Function::First,
            "last" => Function::Last,
            "count_distinct" => Function::CountDistinct,
            "percentile" => match q {
                Some(q) if q > 0.0 && q < 1.0 => return Ok(Function::Percentile(q)),
                Some(q) => return Err(format!("q must be between 0 and 1 (exclusive), not {q}")),
                None => return Err("percentile needs q, between 0 and 1 (exclusive)".into()),
            },
            other => {
                return Err(format!(
                    "unknown function '{other}'; use one of {FUNCTIONS}"
                ))
            }
        };
        match q {
            Some(_) => Err(format!("q applies only to percentile, not to {name}")),
            None => Ok(f),
        }
    }

    /// Whether the function reads the values themselves, so needs numbers.
    fn needs_numbers(self) -> bool {
        !matches!(
            self,
            Function::Count | Function::CountDistinct | Function::First | Function::Last
        )
    }

    /// In output names: `sum`, `p95`, `p99_9`.
    fn label(self) -> String {
        match self {
            Function::Count => "count".into(),
            Function::Sum => "sum".into(),
            Function::Mean => "mean".into(),
            Function::Min => "min".into(),
            Function::Max => "max".into(),
            Function::Stddev => "stddev".into(),
            Function::First => "first".into(),
            Function::Last => "last".into(),
            Function::CountDistinct => "count_distinct".into(),
            Function::Percentile(q) => format!("p{}", percent_label(q)),
        }
    }
}

/// `100·q` as written in a name, shifted in decimal text so 0.95 is `95` and 0.999 is `99_9`
/// (multiplying in binary would give 94.99999999999999 for some).
fn percent_label(q: f64) -> String {
    let text = format!("{q}");
    let digits = text.strip_prefix("0.").unwrap_or(&text);
    let digits = format!("{digits:0<2}");
    let (whole, fraction) = digits.split_at(2);
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    match fraction {
        "" => whole.to_string(),
        f => format!("{whole}_{f}"),
    }
}

/// One declared aggregation, as the client wrote it.
pub struct Requested<'a> {
    pub column: &'a str,
    pub function: &'a str,
    pub q: Option<f64>,
    pub windows: &'a [String],
}

/// One output column: a function of a column over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub column: String,
    pub function: Function,
    pub window_micros: i64,
}

/// A window as written: a positive integer and a unit `s`, `m`, `h`, `d` or `w`, at most 366
/// days. Its length in seconds and its text without leading zeros.
pub fn parse_window(text: &str) -> Result<(i64, String), String> {
    let bad = || {
        format!(
            "window '{text}' is not a positive integer followed by s, m, h, d or w (like 30m, 7d)"
        )
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.trim_start_matches('0').parse().unwrap_or(0);
    if n == 0 {
        return Err(format!("window '{text}' must be longer than zero"));
    }
    match n.checked_mul(scale) {
        Some(seconds) if seconds <= MAX_WINDOW_SECONDS => Ok((seconds, format!("{n}{unit}"))),
        _ => Err(format!("window '{text}' is longer than 366 days")),
    }
}

/// Check a declaration against the table's columns and name its outputs
/// (`{column}_{function}_{window}`). Every error names the aggregation and what is wrong.
pub fn plan(requested: &[Requested], schema: &TableSchema) -> Result<Vec<Output>, String> {
    if requested.is_empty() {
        return Err("aggregations must not be empty".into());
    }
    let mut outputs: Vec<Output> = Vec::new();
    for (i, r) in requested.iter().enumerate() {
        let at = |why: String| format!("aggregations[{i}]: {why}");
        let ty = schema
            .columns()
            .find(|(name, _, _)| *name == r.column)
            .map(|(_, ty, _)| ty)
            .ok_or_else(|| at(format!("the raw table has no column '{}'", r.column)))?;
        let function = Function::parse(r.function, r.q).map_err(at)?;
        if function.needs_numbers() && !matches!(ty, ColumnType::Integer | ColumnType::Float) {
            return Err(at(format!(
                "{} needs a numeric column; '{}' is {}",
                r.function,
                r.column,
                ty.name()
            )));
        }
        if r.windows.is_empty() {
            return Err(at("windows must not be empty".into()));
        }
        for w in r.windows {
            let (seconds, text) = parse_window(w).map_err(at)?;
            let name = format!("{}_{}_{text}", r.column, function.label());
            if outputs.iter().any(|o| o.name == name) {
                return Err(at(format!("the output '{name}' is declared twice")));
            }
            outputs.push(Output {
                name,
                column: r.column.to_string(),
                function,
                window_micros: seconds * 1_000_000,
            });
        }
    }
    if outputs.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} outputs declared; at most {MAX_OUTPUTS} per feature",
            outputs.len()
        ));
    }
    Ok(outputs)
}

/// The query that keeps the events `filter` (a SQL predicate over the table's columns)
/// keeps: refused unless the filter is one expression and the whole passes the SQL guard.
pub fn filter_sql(filter: &str) -> Result<String, String> {
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::Token;
    if filter.trim().is_empty() {
        return Err("the filter is empty".into());
    }
    let mut parser = Parser::new(&GenericDialect)
        .try_with_sql(filter)
        .map_err(|e| format!("does not parse: {e}"))?;
    parser
        .parse_expr()
        .map_err(|e| format!("does not parse: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err("must be one condition (like status = 'ok'), with nothing after it".into());
    }
    let sql = format!(
        "SELECT * FROM {} WHERE ({filter})",
        super::sql_guard::DATA_TABLE
    );
    super::sql_guard::check(&sql)?;
    Ok(sql)
}

/// What an aggregation reads of a table's events.
pub struct EventsQuery<'a> {
    /// As stored (`crate::keys`).
    pub entity_key: &'a str,
    pub event_time: &'a str,
    pub filter: Option<&'a str>,
    pub outputs: &'a [Output],
}

/// Why events could not be selected: the filter (SQL) or the events themselves.
#[derive(Debug)]
pub enum SelectError {
    Filter(String),
    Input(String),
}

/// The events `query` reads: the rows its filter keeps, the key, time and aggregated columns
/// (and `extra`, when given), collected with `engine`; for a feature keyed by several columns
/// the tuple id is added in a column named for the key, and an event without its whole key
/// (it belongs to no entity) is dropped. Shared by the worker (a table version's files, with
/// the streaming engine) and the server (a stream's few uncommitted events), so both read
/// the same events.
pub fn select_events(
    events: LazyFrame,
    query: &EventsQuery<'_>,
    extra: Option<&str>,
    engine: Engine,
) -> Result<DataFrame, SelectError> {
    collect_events(events_plan(events, query, extra)?, query.entity_key, engine)
}

/// Run a plan of `events_plan` and key its rows (`keyed_events`).
pub fn collect_events(
    plan: LazyFrame,
    entity_key: &str,
    engine: Engine,
) -> Result<DataFrame, SelectError> {
    let events = plan
        .collect_with_engine(engine)
        .map(|r| r.unwrap_single())
        .map_err(|e| SelectError::Input(super::execute::clean_message(&e.to_string())))?;
    keyed_events(events, entity_key).map_err(SelectError::Input)
}

/// `select_events` before it runs: the rows the filter keeps and the columns it reads.
pub fn events_plan(
    events: LazyFrame,
    query: &EventsQuery<'_>,
    extra: Option<&str>,
) -> Result<LazyFrame, SelectError> {
    let mut events = events;
    if let Some(filter) = query.filter {
        let sql = filter_sql(filter).map_err(SelectError::Filter)?;
        events = super::execute::plan_sql(&sql, events).map_err(SelectError::Filter)?;
    }
    let mut needed = needed_columns(query.entity_key, query.event_time, query.outputs);
    needed.extend(extra.map(str::to_string));
    Ok(events.select(needed.into_iter().map(col).collect::<Vec<_>>()))
}

/// Events as `select_events` gives them, from its plan's rows: for a feature keyed by several
/// columns (`entity_key` as stored), the tuple id added and the events without a whole key
/// dropped; else as they are.
pub fn keyed_events(events: DataFrame, entity_key: &str) -> Result<DataFrame, String> {
    let key = crate::keys::EntityKey::from_stored(entity_key);
    match key.single() {
        Some(_) => Ok(events),
        None => tuple_events(events, &key, entity_key),
    }
}

/// `events` with the tuple id column (stored form) of `key` added; an event without its whole
/// key belongs to no entity and is dropped.
fn tuple_events(
    mut events: DataFrame,
    key: &crate::keys::EntityKey,
    stored: &str,
) -> Result<DataFrame, String> {
    for name in key.columns() {
        let column = events.column(name).map_err(|e| e.to_string())?;
        if column.null_count() > 0 {
            let keep = column.is_not_null();
            events = events.filter(&keep).map_err(|e| e.to_string())?;
        }
    }
    let columns = key
        .columns()
        .iter()
        .map(|c| events.column(c).cloned())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let ids = super::result::tuple_column(
        key,
        &columns,
        events.height(),
        super::result::IdForm::Stored,
    )?;
    events
        .with_column(ids.with_name(stored.into()).into_column())
        .map_err(|e| e.to_string())?;
    Ok(events)
}

/// The columns evaluating `outputs` reads from the table, key and time first.
pub fn needed_columns(key: &str, time: &str, outputs: &[Output]) -> Vec<String> {
    // `key` as stored (`crate::keys`): each of a tuple's columns is read.
    let mut columns: Vec<String> = crate::keys::EntityKey::from_stored(key).columns().to_vec();
    for name in std::iter::once(time).chain(outputs.iter().map(|o| o.column.as_str())) {
        if !columns.iter().any(|c| c == name) {
            columns.push(name.to_string());
        }
    }
    columns
}

/// An event time column as microseconds since the epoch (a date is its midnight, UTC).
pub(crate) fn event_micros(c: &Column) -> Result<Vec<Option<i64>>, String> {
    let err = |e: PolarsError| e.to_string();
    match c.dtype() {
        DataType::Datetime(_, zone) => {
            let us = c
                .cast(&DataType::Datetime(TimeUnit::Microseconds, zone.clone()))
                .map_err(err)?
                .to_physical_repr();
            Ok(us.i64().map_err(err)?.iter().collect())
        }
        DataType::Date => {
            let days = c.to_physical_repr();
            Ok(days
                .i32()
                .map_err(err)?
                .iter()
                .map(|d| d.map(|d| i64::from(d) * 86_400_000_000))
                .collect())
        }
        other => Err(format!(
            "the event time column '{}' is {other}, not a date or datetime",
            c.name()
        )),
    }
}

/// A column's values in the events' sorted order, in the forms the kernels take.
struct Values {
    /// As the events hold it, in their row order.
    column: Column,
    ints: Option<Vec<Option<i64>>>,
    /// Floats (integers converted); NaN is null.
    floats: Option<Vec<Option<f64>>>,
    /// Presence: for floats, not NaN either.
    present: Vec<Option<()>>,
    /// Distinct values numbered from 0, when a distinct count needs them.
    ids: Option<Vec<Option<u32>>>,
}

impl Values {
    /// `column`'s values in sorted order: the event at sorted position `i` is row `order[i]`
    /// (row `i` when there is no `order`). Numbers are read straight from the column's
    /// buffer on `threads` threads; other types are taken into order first.
    fn new(
        column: &Column,
        order: Option<&[IdxSize]>,
        distinct: bool,
        threads: usize,
    ) -> Result<Values, String> {
        let err = |e: PolarsError| e.to_string();
        let n = order.map_or(column.len(), <[IdxSize]>::len);
        let row = |i: usize| order.map_or(i, |o| o[i] as usize);
        let (ints, floats) = match column.dtype() {
            // An empty column may hold no chunk, which a buffer cannot be read from.
            DataType::Int64 if column.is_empty() => (Some(Vec::new()), Some(Vec::new())),
            DataType::Float64 if column.is_empty() => (None, Some(Vec::new())),
            DataType::Int64 => {
                let ca = column.i64().map_err(err)?.rechunk();
                let arr = ca.downcast_as_array();
                let (numbers, validity) = (arr.values().as_slice(), arr.validity());
                let ints = on_ranges(n, threads, |i| {
                    let r = row(i);
                    validity.is_none_or(|v| v.get_bit(r)).then(|| numbers[r])
                });
                let floats = on_ranges(n, threads, |i| ints[i].map(|v| v as f64));
                (Some(ints), Some(floats))
            }
            DataType::Float64 => {
                let ca = column.f64().map_err(err)?.rechunk();
                let arr = ca.downcast_as_array();
                let (numbers, validity) = (arr.values().as_slice(), arr.validity());
                let floats = on_ranges(n, threads, |i| {
                    let r = row(i);
                    let valid = validity.is_none_or(|v| v.get_bit(r)) && !numbers[r].is_nan();
                    valid.then(|| numbers[r])
                });
                (None, Some(floats))
            }
            _ => (None, None),
        };
        // Other types in sorted order, for their presence and distinct values.
        let sorted = match (&floats, order) {
            (Some(_), _) => None,
            (None, Some(o)) => Some(column.take_slice(o).map_err(err)?),
            (None, None) => Some(column.clone()),
        };
        let present = match (&floats, &sorted) {
            (Some(f), _) => on_ranges(n, threads, |i| f[i].map(|_| ())),
            (None, Some(sorted)) => sorted
                .is_not_null()
                .iter()
                .map(|v| (v == Some(true)).then_some(()))
                .collect(),
            (None, None) => Vec::new(),
        };
        let ids = distinct
            .then(|| distinct_ids(sorted.as_ref(), ints.as_deref(), floats.as_deref()))
            .transpose()?;
        Ok(Values {
            column: column.clone(),
            ints,
            floats,
            present,
            ids,
        })
    }
}

/// `item(i)` for `i` in `0..n`, computed over ranges of `i` on up to `threads` threads and
/// joined in order.
fn on_ranges<T: Send + Copy>(n: usize, threads: usize, item: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut parts =
        on_threads(ranges(n, threads), |r| r.map(&item).collect::<Vec<T>>()).into_iter();
    let mut whole = parts.next().unwrap_or_default();
    whole.reserve_exact(n - whole.len());
    for part in parts {
        whole.extend_from_slice(&part);
    }
    whole
}

/// Each value's number among the column's distinct values (null stays null; floats by their
/// value, with -0 as 0): from the floats of a float column, the integers of an integer
/// column, else the column in sorted order.
fn distinct_ids(
    sorted: Option<&Column>,
    ints: Option<&[Option<i64>]>,
    floats: Option<&[Option<f64>]>,
) -> Result<Vec<Option<u32>>, String> {
    let err = |e: PolarsError| e.to_string();
    fn number<K: std::hash::Hash + Eq>(
        values: impl Iterator<Item = Option<K>>,
    ) -> Vec<Option<u32>> {
        let mut ids: HashMap<K, u32> = HashMap::new();
        values
            .map(|v| {
                v.map(|v| {
                    let next = ids.len() as u32;
                    *ids.entry(v).or_insert(next)
                })
            })
            .collect()
    }
    match (sorted, ints, floats) {
        (_, Some(ints), _) => Ok(number(ints.iter().copied())),
        (_, None, Some(floats)) => Ok(number(
            floats.iter().map(|v| v.map(|v| (v + 0.0).to_bits())),
        )),
        (Some(column), None, None) => match column.dtype() {
            DataType::String => Ok(number(column.str().map_err(err)?.iter())),
            _ => {
                let physical = column
                    .to_physical_repr()
                    .cast(&DataType::Int64)
                    .map_err(err)?;
                Ok(number(physical.i64().map_err(err)?.iter()))
            }
        },
        (None, None, None) => Err("a distinct count has no values to count".to_string()),
    }
}

/// Distinct keys numbered from 0. A key of at most 15 bytes is looked up by its bytes and
/// length packed in one integer, so numbering millions of events compares no strings and
/// follows no pointers; a longer key by its text.
#[derive(Default)]
struct KeyIds<'a> {
    short: HashMap<u128, u32, ahash::RandomState>,
    long: HashMap<&'a str, u32, ahash::RandomState>,
    /// Short keys numbered partition by partition (`part_of`), when every key is short.
    parts: Vec<HashMap<u128, u32, ahash::RandomState>>,
}

/// Partitions of the events numbered apart: each partition's keys fit in cache.
const PART_BITS: u32 = 8;

/// The partition of a packed key.
fn part_of(packed: u128) -> usize {
    let mixed = (packed as u64) ^ ((packed >> 64) as u64).rotate_left(29);
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PART_BITS)) as usize
}

fn pack(key: &str) -> Option<u128> {
    let bytes = key.as_bytes();
    (bytes.len() < 16).then(|| {
        let mut packed = [0u8; 16];
        packed[..bytes.len()].copy_from_slice(bytes);
        packed[15] = bytes.len() as u8;
        u128::from_le_bytes(packed)
    })
}

impl<'a> KeyIds<'a> {
    fn len(&self) -> usize {
        self.short.len() + self.long.len() + self.parts.iter().map(HashMap::len).sum::<usize>()
    }

    /// The key's number, and whether it was new.
    fn number(&mut self, key: &'a str) -> (u32, bool) {
        let next = self.len() as u32;
        let id = match pack(key) {
            Some(p) => *self.short.entry(p).or_insert(next),
            None => *self.long.entry(key).or_insert(next),
        };
        (id, id == next)
    }

    fn get(&self, key: &str) -> Option<u32> {
        match pack(key) {
            Some(p) if !self.parts.is_empty() => self.parts[part_of(p)].get(&p).copied(),
            Some(p) => self.short.get(&p).copied(),
            None if !self.parts.is_empty() => None,
            None => self.long.get(key).copied(),
        }
    }
}

/// Keys numbered, each key's run of events, the events' times in that order, and the rows to
/// take into that order (`None`: as they are).
type Runs<'a> = (
    KeyIds<'a>,
    Vec<(usize, usize)>,
    Vec<i64>,
    Option<Vec<IdxSize>>,
);

/// When the events come sorted by key and time and have a key and a time each: the runs,
/// found in one pass that compares neighbours. `None` when they are not in that order.
fn sorted_runs<'a>(keys: &'a StringChunked, micros: &[Option<i64>]) -> Option<Runs<'a>> {
    let mut key_ids = KeyIds::default();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut times = Vec::with_capacity(micros.len());
    let mut previous: Option<(&str, i64)> = None;
    for (i, (k, t)) in keys.iter().zip(micros).enumerate() {
        let (k, t) = (k?, (*t)?);
        match previous {
            Some((p, pt)) if p == k => {
                if t < pt {
                    return None;
                }
            }
            _ => {
                if !key_ids.number(k).1 {
                    return None;
                }
                if let Some(last) = runs.last_mut() {
                    last.1 = i;
                }
                runs.push((i, i));
            }
        }
        times.push(t);
        previous = Some((k, t));
    }
    if let Some(last) = runs.last_mut() {
        last.1 = micros.len();
    }
    Some((key_ids, runs, times, None))
}

/// When every key is short: the events scattered into partitions by key (reading them once,
/// writing to a few hundred places), then each partition numbered and ordered on its own,
/// in cache, on up to `threads` threads. The runs come partition by partition; within one, as
/// `sort_runs` orders them.
fn partitioned_runs<'a>(
    keys: &'a StringChunked,
    micros: &[Option<i64>],
    threads: usize,
) -> Option<Runs<'a>> {
    let parts = 1usize << PART_BITS;
    // The rows in one range a thread: each range's events counted by partition, then
    // scattered into its own places, after the earlier ranges' events of each partition, so
    // rows stay ascending within a partition.
    let row_ranges = ranges(micros.len(), threads);
    let range_counts: Vec<Option<Vec<usize>>> = on_threads(row_ranges.iter().collect(), |r| {
        let mut counts = vec![0usize; parts];
        let keys = keys.slice(r.start as i64, r.len());
        for (k, t) in keys.iter().zip(&micros[r.clone()]) {
            if let (Some(k), Some(_)) = (k, t) {
                counts[part_of(pack(k)?)] += 1;
            }
        }
        Some(counts)
    });
    let range_counts: Vec<Vec<usize>> = range_counts.into_iter().collect::<Option<_>>()?;
    // Where each partition starts; `counts[parts]` is every event with a key and a time.
    let mut counts = vec![0usize; parts + 1];
    for p in 0..parts {
        counts[p + 1] = counts[p] + range_counts.iter().map(|c| c[p]).sum::<usize>();
    }
    // (packed key, time, row), partition by partition, rows ascending within each.
    let mut items: Vec<Item> = vec![(0, 0, 0); counts[parts]];
    {
        let mut pieces: Vec<Vec<&mut [Item]>> = row_ranges
            .iter()
            .map(|_| Vec::with_capacity(parts))
            .collect();
        let mut rest = items.as_mut_slice();
        for p in 0..parts {
            for (range, counted) in pieces.iter_mut().zip(&range_counts) {
                let (piece, after) = rest.split_at_mut(counted[p]);
                range.push(piece);
                rest = after;
            }
        }
        on_threads(
            row_ranges.iter().zip(pieces).collect(),
            |(r, mut pieces)| {
                let mut next = vec![0usize; parts];
                let keys = keys.slice(r.start as i64, r.len());
                for ((k, t), i) in keys.iter().zip(&micros[r.clone()]).zip(r.clone()) {
                    // Every key packed when counted.
                    if let (Some(packed), Some(t)) = (k.and_then(pack), t) {
                        let p = part_of(packed);
                        pieces[p][next[p]] = (packed, *t, i as IdxSize);
                        next[p] += 1;
                    }
                }
            },
        );
    }
    // Partitions numbered and ordered on up to `threads` threads, a run of partitions each,
    // then joined in partition order.
    let ordered: Vec<Ordered> = on_threads(ranges(parts, threads), |r| {
        order_partitions(&items, &counts, r)
    });
    drop(items);
    let mut key_ids = KeyIds::default();
    let mut runs: Vec<(usize, usize)> =
        Vec::with_capacity(ordered.iter().map(|o| o.runs.len()).sum());
    let mut order: Vec<IdxSize> = Vec::with_capacity(counts[parts]);
    let mut times: Vec<i64> = Vec::with_capacity(counts[parts]);
    for o in ordered {
        let (base, offset) = (runs.len() as u32, order.len());
        runs.extend(o.runs.iter().map(|&(lo, hi)| (offset + lo, offset + hi)));
        order.extend_from_slice(&o.order);
        times.extend_from_slice(&o.times);
        for mut ids in o.ids {
            for id in ids.values_mut() {
                *id += base;
            }
            key_ids.parts.push(ids);
        }
    }
    Some((key_ids, runs, times, Some(order)))
}

/// `0..n` cut into at most `threads` consecutive ranges of about equal length (none when `n`
/// is 0).
fn ranges(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let per = n.div_ceil(threads.max(1)).max(1);
    (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect()
}

/// `work` done on each of `jobs`, a thread each (none when there is one job), the results in
/// the jobs' order. A job's panic goes on in the caller.
fn on_threads<J: Send, R: Send>(jobs: Vec<J>, work: impl Fn(J) -> R + Sync) -> Vec<R> {
    if jobs.len() <= 1 {
        return jobs.into_iter().map(work).collect();
    }
    std::thread::scope(|scope| {
        let work = &work;
        let running: Vec<_> = jobs
            .into_iter()
            .map(|job| scope.spawn(move || work(job)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// An event as partitioned: its packed key, its time and its row.
type Item = (u128, i64, IdxSize);

/// A run of partitions numbered and ordered: keys numbered from 0 within the run, each key's
/// events as a span of `order` and `times`.
struct Ordered {
    ids: Vec<HashMap<u128, u32, ahash::RandomState>>,
    runs: Vec<(usize, usize)>,
    order: Vec<IdxSize>,
    times: Vec<i64>,
}

/// Number and order the partitions `which` of `items` (partition `p` is
/// `items[counts[p]..counts[p + 1]]`): each key's events by time, ties in row order.
fn order_partitions(items: &[Item], counts: &[usize], which: std::ops::Range<usize>) -> Ordered {
    let size = counts[which.end] - counts[which.start];
    let mut out = Ordered {
        ids: Vec::with_capacity(which.len()),
        runs: Vec::new(),
        order: Vec::with_capacity(size),
        times: Vec::with_capacity(size),
    };
    let mut local: Vec<u32> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut placed: Vec<usize> = Vec::new();
    for p in which {
        let slice = &items[counts[p]..counts[p + 1]];
        let mut ids: HashMap<u128, u32, ahash::RandomState> = HashMap::default();
        local.clear();
        for item in slice {
            let next_id = ids.len() as u32;
            local.push(*ids.entry(item.0).or_insert(next_id));
        }
        starts.clear();
        starts.resize(ids.len() + 1, 0);
        for &id in &local {
            starts[id as usize + 1] += 1;
        }
        for g in 1..starts.len() {
            starts[g] += starts[g - 1];
        }
        placed.clear();
        placed.resize(slice.len(), 0);
        let mut fill = starts.clone();
        for (j, &id) in local.iter().enumerate() {
            placed[fill[id as usize]] = j;
            fill[id as usize] += 1;
        }
        let base = out.runs.len() as u32;
        let offset = out.order.len();
        for g in 0..ids.len() {
            let run = &mut placed[starts[g]..starts[g + 1]];
            // Stable: events of one time keep their row order, which is ingest order.
            run.sort_by_key(|&j| slice[j].1);
            for &j in run.iter() {
                out.order.push(slice[j].2);
                out.times.push(slice[j].1);
            }
            out.runs.push((offset + starts[g], offset + starts[g + 1]));
        }
        for id in ids.values_mut() {
            *id += base;
        }
        out.ids.push(ids);
    }
    out
}

/// Number the keys and order the events by (key, time), ties as ingested: a counting sort by
/// key, then each key's few events by time (a stable sort, so ties keep their order).
fn sort_runs<'a>(keys: &'a StringChunked, micros: &[Option<i64>], threads: usize) -> Runs<'a> {
    if let Some(runs) = partitioned_runs(keys, micros, threads) {
        return runs;
    }
    let mut key_ids = KeyIds::default();
    let ids: Vec<u32> = keys
        .iter()
        .zip(micros)
        .map(|(k, t)| match (k, t) {
            (Some(k), Some(_)) => key_ids.number(k).0,
            _ => u32::MAX,
        })
        .collect();
    let mut starts = vec![0usize; key_ids.len() + 1];
    for &id in ids.iter().filter(|&&id| id != u32::MAX) {
        starts[id as usize + 1] += 1;
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    let mut next = starts.clone();
    let mut order: Vec<IdxSize> = vec![0; starts[starts.len() - 1]];
    for (i, &id) in ids.iter().enumerate().filter(|(_, &id)| id != u32::MAX) {
        order[next[id as usize]] = i as IdxSize;
        next[id as usize] += 1;
    }
    let time = |i: IdxSize| micros[i as usize].unwrap_or(i64::MIN);
    let runs: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    for &(lo, hi) in &runs {
        order[lo..hi].sort_by_key(|&i| time(i));
    }
    let times: Vec<i64> = order.iter().map(|&i| time(i)).collect();
    (key_ids, runs, times, Some(order))
}

/// The rows of `events` that have a key and a time, grouped by key (in the order keys first
/// appear), each key's in time order, ties as ingested: how a worker sends what a replica
/// holds, so that the replica adds each entity's events in one piece; `None` when they are
/// grouped so already. A counting sort by key, then each key's events by time: 4 bytes a row
/// for the key's number and 4 for the order besides the times (16 bytes a row, as
/// `event_micros` gives them), far less than `sort_runs`'s partitions (32 bytes a row more),
/// so the worker's memory goes to the events themselves.
pub fn entity_order(
    events: &DataFrame,
    key: &str,
    time: &str,
) -> Result<Option<Vec<IdxSize>>, String> {
    let err = |e: PolarsError| e.to_string();
    let column = |name: &str| {
        events
            .column(name)
            .map_err(|_| format!("the events have no column '{name}'"))
    };
    let keys = column(key)?.cast(&DataType::String).map_err(err)?;
    let keys = keys.str().map_err(err)?;
    let micros = event_micros(column(time)?)?;
    let mut key_ids = KeyIds::default();
    let ids: Vec<u32> = keys
        .iter()
        .zip(&micros)
        .map(|(k, t)| match (k, t) {
            (Some(k), Some(_)) => key_ids.number(k).0,
            _ => u32::MAX,
        })
        .collect();
    let mut starts = vec![0usize; key_ids.len() + 1];
    drop(key_ids);
    for &id in ids.iter().filter(|&&id| id != u32::MAX) {
        starts[id as usize + 1] += 1;
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    let mut order: Vec<IdxSize> = vec![0; starts[starts.len() - 1]];
    {
        let mut next = starts.clone();
        for (i, &id) in ids.iter().enumerate().filter(|(_, &id)| id != u32::MAX) {
            order[next[id as usize]] = i as IdxSize;
            next[id as usize] += 1;
        }
    }
    drop(ids);
    let time = |i: IdxSize| micros[i as usize].unwrap_or(i64::MIN);
    for w in starts.windows(2) {
        // Stable: ties keep the order they were ingested in.
        order[w[0]..w[1]].sort_by_key(|&i| time(i));
    }
    let unchanged =
        order.len() == events.height() && order.iter().enumerate().all(|(i, &r)| r as usize == i);
    Ok((!unchanged).then_some(order))
}

/// One output's values for every label in the labels' sorted order, as they are filled
/// entity by entity.
enum Filling {
    Ints(Vec<Option<i64>>),
    Floats(Vec<Option<f64>>),
    /// Rows of the events (first, last), taken from the column at the end.
    Positions(Vec<Option<IdxSize>>),
}

/// One output's values for one slice of labels.
enum FillingMut<'a> {
    Ints(&'a mut [Option<i64>]),
    Floats(&'a mut [Option<f64>]),
    Positions(&'a mut [Option<IdxSize>]),
}

impl Filling {
    /// The values cut into one piece per slice (`slices` are consecutive from 0).
    fn cut(&mut self, slices: &[std::ops::Range<usize>]) -> Vec<FillingMut<'_>> {
        fn pieces<'a, T>(
            mut rest: &'a mut [T],
            slices: &[std::ops::Range<usize>],
        ) -> Vec<&'a mut [T]> {
            let mut pieces = Vec::with_capacity(slices.len());
            for r in slices {
                let (piece, after) = rest.split_at_mut(r.len());
                pieces.push(piece);
                rest = after;
            }
            pieces
        }
        match self {
            Filling::Ints(v) => pieces(v, slices)
                .into_iter()
                .map(FillingMut::Ints)
                .collect(),
            Filling::Floats(v) => pieces(v, slices)
                .into_iter()
                .map(FillingMut::Floats)
                .collect(),
            Filling::Positions(v) => pieces(v, slices)
                .into_iter()
                .map(FillingMut::Positions)
                .collect(),
        }
    }
}

/// The values of `outputs` for each (entity, instant) pair, one row per pair in their order:
/// every event of `events` with its event time at or before the instant and after the
/// instant less the window. `events` holds the key, the event time and the aggregated
/// columns; rows without a key or an event time take part in nothing. The kernels run on up
/// to `threads` threads, each over its own entities' labels.
pub fn evaluate(
    events: &DataFrame,
    key: &str,
    time: &str,
    outputs: &[Output],
    entities: &StringChunked,
    at: &[i64],
    threads: usize,
) -> Result<DataFrame, String> {
    let err = |e: PolarsError| e.to_string();
    let column = |name: &str| {
        events
            .column(name)
            .map_err(|_| format!("the events have no column '{name}'"))
    };
    let keys = column(key)?.cast(&DataType::String).map_err(err)?;
    let keys = keys.str().map_err(err)?.rechunk();
    let micros = event_micros(column(time)?)?;
    let (key_ids, runs, times, take) = match sorted_runs(&keys, &micros) {
        Some(found) => found,
        None => sort_runs(&keys, &micros, threads),
    };
    // Each aggregated column once, read into the events' sorted order; `column_of[j]` is
    // output j's.
    let mut names: Vec<&str> = Vec::new();
    let mut values: Vec<Values> = Vec::new();
    let mut column_of = Vec::with_capacity(outputs.len());
    for o in outputs {
        match names.iter().position(|c| *c == o.column) {
            Some(i) => column_of.push(i),
            None => {
                let distinct = outputs
                    .iter()
                    .any(|p| p.column == o.column && p.function == Function::CountDistinct);
                values.push(Values::new(
                    column(&o.column)?,
                    take.as_deref(),
                    distinct,
                    threads,
                )?);
                names.push(&o.column);
                column_of.push(values.len() - 1);
            }
        }
    }
    // Which columns' prefix totals are shared by their outputs, and whether with squares.
    let totals_of: Vec<Option<bool>> = (0..values.len())
        .map(|c| {
            let uses = |f: fn(Function) -> bool| {
                outputs
                    .iter()
                    .zip(&column_of)
                    .any(|(o, &oc)| oc == c && f(o.function))
            };
            let numeric = values[c].floats.is_some();
            let shared = uses(|f| matches!(f, Function::Count | Function::Mean | Function::Stddev))
                || (values[c].ints.is_none() && uses(|f| f == Function::Sum));
            (numeric && shared).then(|| uses(|f| f == Function::Stddev))
        })
        .collect();

    // The labels by (entity, instant), looked up and sorted over ranges of rows on the
    // threads, then merged (a stable sort finds the sorted runs and merges them). A label
    // whose entity has no events is left out here; its row gets an empty window's values when
    // the answers are put in row order.
    let n = at.len();
    let per_range = on_threads(ranges(n, threads), |r| {
        let entities = entities.slice(r.start as i64, r.len());
        let mut labels: Vec<(u32, i64, u32)> = entities
            .iter()
            .zip(&at[r.clone()])
            .zip(r)
            .filter_map(|((e, t), i)| e.and_then(|e| key_ids.get(e)).map(|id| (id, *t, i as u32)))
            .collect();
        labels.sort_unstable();
        labels
    });
    // Moved, not copied: each range's vector is freed as it is read.
    let mut labels: Vec<(u32, i64, u32)> = per_range.into_iter().flatten().collect();
    labels.sort();

    // Distinct windows, each output's index among them.
    let mut widths: Vec<i64> = Vec::new();
    let window_of: Vec<usize> = outputs
        .iter()
        .map(
            |o| match widths.iter().position(|w| *w == o.window_micros) {
                Some(i) => i,
                None => {
                    widths.push(o.window_micros);
                    widths.len() - 1
                }
            },
        )
        .collect();
    let kernels = Kernels {
        outputs,
        values: &values,
        column_of: &column_of,
        totals_of: &totals_of,
        widths: &widths,
        window_of: &window_of,
        runs: &runs,
        times: &times,
        order: take.as_deref(),
    };
    // The label groups split into one slice a thread, at entity boundaries; each thread fills
    // its slice's part of every output, in the labels' sorted order.
    let slices = split_at_groups(&labels, threads);
    let mut sorted: Vec<Filling> = kernels.empty(labels.len());
    let mut parts: Vec<Vec<FillingMut>> = slices.iter().map(|_| Vec::new()).collect();
    for output in sorted.iter_mut() {
        for (part, piece) in parts.iter_mut().zip(output.cut(&slices)) {
            part.push(piece);
        }
    }
    let jobs: Vec<_> = slices.iter().zip(parts).collect();
    on_threads(jobs, |(r, mut part)| {
        kernels.fill(&labels[r.clone()], &mut part)
    })
    .into_iter()
    .collect::<Result<(), String>>()?;

    // Row order: each row's place among the sorted labels (none when its entity has no
    // events), gathered over ranges of rows on as many threads.
    let mut place_of = vec![u32::MAX; n];
    for (k, label) in labels.iter().enumerate() {
        place_of[label.2 as usize] = k as u32;
    }
    let mut row_ranges: Vec<&[u32]> = ranges(n, threads)
        .into_iter()
        .map(|r| &place_of[r])
        .collect();
    if row_ranges.is_empty() {
        // No rows: still one (empty) range, so every output keeps its type.
        row_ranges.push(&[]);
    }
    let gathered: Vec<Vec<Gathered>> =
        on_threads(row_ranges, |rows| gather_rows(outputs, &sorted, rows));
    drop(sorted);
    drop(place_of);
    let mut by_output: Vec<Option<Gathered>> = (0..outputs.len()).map(|_| None).collect();
    for range in gathered {
        for (whole, part) in by_output.iter_mut().zip(range) {
            match whole {
                None => *whole = Some(part),
                Some(w) => w.append(part).map_err(err)?,
            }
        }
    }
    let mut columns = Vec::with_capacity(outputs.len());
    for (j, (o, whole)) in outputs.iter().zip(by_output).enumerate() {
        let name: PlSmallStr = o.name.as_str().into();
        columns.push(match whole {
            Some(Gathered::Ints(v)) => v.with_name(name).into_column(),
            Some(Gathered::Floats(v)) => v.with_name(name).into_column(),
            Some(Gathered::Positions(at)) => values[column_of[j]]
                .column
                .take(&at)
                .map_err(err)?
                .with_name(name),
            // There is always at least one range of rows, even for no rows.
            None => return Err(format!("{} was not evaluated", o.name)),
        });
    }
    DataFrame::new(n, columns).map_err(err)
}

/// What every slice of labels is evaluated with: the events in (key, time) order and each
/// output's column, window, and whether its column's prefix totals are shared.
struct Kernels<'a> {
    outputs: &'a [Output],
    values: &'a [Values],
    column_of: &'a [usize],
    /// Per column: whether its outputs share prefix totals, and whether with squares.
    totals_of: &'a [Option<bool>],
    widths: &'a [i64],
    window_of: &'a [usize],
    runs: &'a [(usize, usize)],
    times: &'a [i64],
    /// The events' rows in sorted order (`None`: already sorted).
    order: Option<&'a [IdxSize]>,
}

impl Kernels<'_> {
    /// The events' row of sorted position `i`.
    fn row(&self, i: usize) -> IdxSize {
        self.order.map_or(i as IdxSize, |o| o[i])
    }

    /// Every output's values for `n` labels, to be filled.
    fn empty(&self, n: usize) -> Vec<Filling> {
        self.outputs
            .iter()
            .zip(self.column_of)
            .map(|(o, &c)| match o.function {
                Function::Count | Function::CountDistinct => Filling::Ints(vec![Some(0); n]),
                Function::Sum | Function::Min | Function::Max if self.values[c].ints.is_some() => {
                    Filling::Ints(vec![None; n])
                }
                Function::First | Function::Last => Filling::Positions(vec![None; n]),
                _ => Filling::Floats(vec![None; n]),
            })
            .collect()
    }

    /// Every output's values for `labels` (whole entity groups, sorted by entity and
    /// instant), into `filling` (one piece an output, as long as `labels`), in that order.
    fn fill(
        &self,
        labels: &[(u32, i64, u32)],
        filling: &mut [FillingMut<'_>],
    ) -> Result<(), String> {
        let (outputs, values, column_of) = (self.outputs, self.values, self.column_of);
        let mut seen = Vec::new();
        // Buffers reused from one entity to the next.
        let mut spans: Vec<Vec<Span>> = vec![Vec::new(); self.widths.len()];
        let mut totals: Vec<Option<windows::Totals>> = self
            .totals_of
            .iter()
            .map(|t| t.map(|squares| windows::Totals::new(&[], squares)))
            .collect();
        let mut queries = Vec::new();
        let mut g = 0;
        while g < labels.len() {
            let id = labels[g].0;
            let end = g + labels[g..].iter().take_while(|l| l.0 == id).count();
            let at = g;
            g = end;
            let (lo, hi) = self.runs[id as usize];
            let times = &self.times[lo..hi];
            queries.clear();
            queries.extend(labels[at..end].iter().map(|l| l.1));
            for (buffer, width) in spans.iter_mut().zip(self.widths) {
                windows::spans_into(times, &queries, *width, buffer);
            }
            for ((buffer, squares), v) in totals.iter_mut().zip(self.totals_of).zip(values) {
                if let (Some(buffer), Some(squares)) = (buffer, squares) {
                    let floats = v.floats.as_deref().unwrap_or(&[]);
                    buffer.refill(&floats[lo..hi], *squares);
                }
            }
            for (j, (o, fill)) in outputs.iter().zip(filling.iter_mut()).enumerate() {
                let v = &values[column_of[j]];
                let prefix = totals[column_of[j]].as_ref();
                let s = &spans[self.window_of[j]];
                let floats = || v.floats.as_deref().map(|f| &f[lo..hi]).unwrap_or(&[]);
                let ints = || v.ints.as_deref().map(|f| &f[lo..hi]).unwrap_or(&[]);
                let present = &v.present[lo..hi];
                match (o.function, fill) {
                    (Function::Count, FillingMut::Ints(out)) => match prefix {
                        Some(t) => place(out, at, t.count(s).map(Some)),
                        None => place(out, at, windows::count(present, s).into_iter().map(Some)),
                    },
                    (Function::CountDistinct, FillingMut::Ints(out)) => {
                        let ids = v.ids.as_deref().map(|f| &f[lo..hi]).unwrap_or(&[]);
                        let counts = windows::count_distinct(ids, s, &mut seen);
                        place(out, at, counts.into_iter().map(Some))
                    }
                    (Function::Sum, FillingMut::Ints(out)) => {
                        place(out, at, windows::sum_int(ints(), s))
                    }
                    (Function::Min, FillingMut::Ints(out)) => {
                        place(out, at, windows::extreme(ints(), s, false))
                    }
                    (Function::Max, FillingMut::Ints(out)) => {
                        place(out, at, windows::extreme(ints(), s, true))
                    }
                    (Function::Sum, FillingMut::Floats(out)) => match prefix {
                        Some(t) => place(out, at, t.sum(s)),
                        None => place(out, at, windows::sum(floats(), s)),
                    },
                    (Function::Min, FillingMut::Floats(out)) => {
                        place(out, at, windows::extreme(floats(), s, false))
                    }
                    (Function::Max, FillingMut::Floats(out)) => {
                        place(out, at, windows::extreme(floats(), s, true))
                    }
                    (Function::Mean, FillingMut::Floats(out)) => match prefix {
                        Some(t) => place(out, at, t.mean(s)),
                        None => place(out, at, windows::mean(floats(), s)),
                    },
                    (Function::Stddev, FillingMut::Floats(out)) => match prefix {
                        Some(t) => place(out, at, t.stddev(floats(), s)),
                        None => place(out, at, windows::stddev(floats(), s)),
                    },
                    (Function::Percentile(q), FillingMut::Floats(out)) => {
                        place(out, at, windows::percentile(floats(), s, q))
                    }
                    (Function::First, FillingMut::Positions(out)) => {
                        let first = windows::first(present, s).into_iter();
                        place(out, at, first.map(|p| p.map(|p| self.row(lo + p))))
                    }
                    (Function::Last, FillingMut::Positions(out)) => {
                        let last = windows::last(present, s).into_iter();
                        place(out, at, last.map(|p| p.map(|p| self.row(lo + p))))
                    }
                    _ => return Err(format!("{} cannot be evaluated", o.name)),
                }
            }
        }
        Ok(())
    }
}

/// A group's values into their places, from `at` on.
fn place<T>(out: &mut [Option<T>], at: usize, values: impl IntoIterator<Item = Option<T>>) {
    for (slot, v) in out[at..].iter_mut().zip(values) {
        *slot = v;
    }
}

/// `labels` (sorted by entity) cut into at most `parts` ranges of about equal length, each
/// ending where an entity's labels end; always at least one range.
fn split_at_groups(labels: &[(u32, i64, u32)], parts: usize) -> Vec<std::ops::Range<usize>> {
    let target = labels.len().div_ceil(parts.max(1)).max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < labels.len() {
        let mut end = (start + target).min(labels.len());
        while end < labels.len() && labels[end].0 == labels[end - 1].0 {
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    if ranges.is_empty() {
        ranges.push(0..0);
    }
    ranges
}

/// One output's values for a range of rows, in row order.
enum Gathered {
    Ints(Int64Chunked),
    Floats(Float64Chunked),
    /// Rows of the events, taken from the column once all ranges are joined.
    Positions(IdxCa),
}

impl Gathered {
    fn append(&mut self, next: Gathered) -> PolarsResult<()> {
        match (self, next) {
            (Gathered::Ints(a), Gathered::Ints(b)) => a.append_owned(b),
            (Gathered::Floats(a), Gathered::Floats(b)) => a.append_owned(b),
            (Gathered::Positions(a), Gathered::Positions(b)) => a.append_owned(b),
            _ => Err(PolarsError::ComputeError(
                "an output was filled as two kinds".into(),
            )),
        }
    }
}

/// Every output's values for the rows whose places among the sorted labels are `rows`
/// (`u32::MAX`: the entity has no events, an empty window's value).
fn gather_rows(outputs: &[Output], sorted: &[Filling], rows: &[u32]) -> Vec<Gathered> {
    fn at<T: Copy>(values: &[Option<T>], rows: &[u32]) -> Vec<Option<T>> {
        rows.iter()
            .map(|&k| values.get(k as usize).copied().flatten())
            .collect()
    }
    outputs
        .iter()
        .zip(sorted)
        .map(|(o, f)| match f {
            Filling::Ints(v) => {
                let empty =
                    matches!(o.function, Function::Count | Function::CountDistinct).then_some(0);
                let values: Vec<Option<i64>> = rows
                    .iter()
                    .map(|&k| v.get(k as usize).copied().unwrap_or(empty))
                    .collect();
                Gathered::Ints(Int64Chunked::new("".into(), values))
            }
            Filling::Floats(v) => Gathered::Floats(Float64Chunked::new("".into(), at(v, rows))),
            Filling::Positions(v) => Gathered::Positions(IdxCa::new("at".into(), at(v, rows))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events put in entity order come key by key, each key's in time order with ties as
    /// ingested, and without the rows that have no key or no time.
    #[test]
    fn events_in_entity_order_keep_ties_as_ingested_and_drop_rows_without_key_or_time() {
        let events = df!(
            "k" => [Some("b"), Some("a"), None, Some("b"), Some("a"), Some("b"), Some("a")],
            "t" => [Some(5i64), Some(3), Some(1), Some(5), None, Some(2), Some(3)]
        )
        .unwrap();
        let events = events
            .lazy()
            .with_column(col("t").cast(DataType::Datetime(TimeUnit::Microseconds, None)))
            .collect()
            .unwrap();
        // b: row 5 at 2, then rows 0 and 3 at 5 (as ingested); a: rows 1 and 6 at 3.
        assert_eq!(
            entity_order(&events, "k", "t").unwrap(),
            Some(vec![5, 0, 3, 1, 6])
        );
        // Already in order, with every key and time: nothing to take.
        assert_eq!(entity_order(&events.slice(5, 2), "k", "t").unwrap(), None);
        assert_eq!(entity_order(&events.slice(0, 2), "k", "t").unwrap(), None);
    }
    use std::collections::BTreeMap;

    fn schema() -> TableSchema {
        let def: BTreeMap<String, String> = [
            ("user_id", "string"),
            ("ts", "datetime"),
            ("amount", "float"),
            ("qty", "integer"),
            ("merchant", "string"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        TableSchema::from_definition(&def).unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(
        column: &str,
        function: &str,
        q: Option<f64>,
        windows: &[String],
    ) -> Result<Vec<Output>, String> {
        plan(
            &[Requested {
                column,
                function,
                q,
                windows,
            }],
            &schema(),
        )
    }

    #[test]
    fn outputs_are_named_column_function_window_and_percentiles_by_their_percent() {
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let names = |o: Vec<Output>| o.into_iter().map(|o| o.name).collect::<Vec<_>>();
        assert_eq!(
            names(one("amount", "sum", None, &w(&["1h", "07d"])).unwrap()),
            ["amount_sum_1h", "amount_sum_7d"]
        );
        for (q, name) in [
            (0.95, "amount_p95_30d"),
            (0.999, "amount_p99_9_30d"),
            (0.5, "amount_p50_30d"),
            (0.05, "amount_p5_30d"),
            (0.001, "amount_p0_1_30d"),
            (0.29, "amount_p29_30d"),
        ] {
            assert_eq!(
                names(one("amount", "percentile", Some(q), &w(&["30d"])).unwrap()),
                [name]
            );
        }
        let o = one("merchant", "count_distinct", None, &w(&["1w"])).unwrap();
        assert_eq!(o[0].window_micros, 7 * 86_400 * 1_000_000);
    }

    #[test]
    fn bad_declarations_are_refused_with_what_is_wrong() {
        let w = |s: &str| vec![s.to_string()];
        let refused = |r: Result<Vec<Output>, String>| r.err().unwrap_or_default();
        assert!(
            refused(one("amount", "median", None, &w("1d"))).contains("unknown function 'median'")
        );
        assert!(refused(one("nope", "sum", None, &w("1d"))).contains("no column 'nope'"));
        assert!(refused(one("merchant", "sum", None, &w("1d"))).contains("'merchant' is string"));
        assert!(refused(one("amount", "sum", None, &w("0d"))).contains("longer than zero"));
        assert!(refused(one("amount", "sum", None, &w("5y"))).contains("'5y'"));
        assert!(refused(one("amount", "sum", None, &w("367d"))).contains("366 days"));
        assert!(refused(one("amount", "sum", None, &w("d"))).contains("'d'"));
        assert!(refused(one("amount", "sum", None, &w("1.5h"))).contains("'1.5h'"));
        assert!(
            refused(one("amount", "percentile", Some(1.0), &w("1d"))).contains("between 0 and 1")
        );
        assert!(refused(one("amount", "percentile", None, &w("1d"))).contains("needs q"));
        assert!(refused(one("amount", "sum", Some(0.5), &w("1d"))).contains("only to percentile"));
        assert!(refused(one("amount", "sum", None, &[])).contains("windows must not be empty"));
        let twice = vec!["1d".to_string(), "1d".to_string()];
        assert!(refused(one("amount", "sum", None, &twice)).contains("declared twice"));
        assert!(parse_window("366d").is_ok() && parse_window("52w").is_ok());
    }

    #[test]
    fn rows_are_cut_into_at_most_one_range_a_thread() {
        assert_eq!(ranges(10, 3), [0..4, 4..8, 8..10]);
        assert_eq!(ranges(2, 8), [0..1, 1..2]);
        assert_eq!(
            (ranges(5, 0).len(), ranges(5, 0).first()),
            (1, Some(&(0..5)))
        );
        assert!(ranges(0, 2).is_empty());
    }

    #[test]
    fn labels_are_split_into_slices_that_never_cut_an_entitys_labels() {
        let labels: Vec<(u32, i64, u32)> = [0, 0, 0, 1, 2, 2, 2, 2, 3, 4]
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, i as i64, i as u32))
            .collect();
        for parts in 1..=12 {
            let slices = split_at_groups(&labels, parts);
            assert!(slices.len() <= parts, "{parts}: {slices:?}");
            assert_eq!(slices.first().map(|r| r.start), Some(0));
            assert_eq!(slices.last().map(|r| r.end), Some(labels.len()));
            for pair in slices.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{parts}: {slices:?}");
                assert_ne!(labels[pair[0].end - 1].0, labels[pair[1].start].0);
            }
        }
        assert_eq!(split_at_groups(&labels, 2), [0..8, 8..10]);
        assert_eq!(split_at_groups(&[], 4).len(), 1);
        assert!(split_at_groups(&[], 4)[0].is_empty());
    }

    #[test]
    fn no_labels_still_answer_every_output_with_its_type() {
        let ts = Int64Chunked::from_vec("ts".into(), vec![3, 1, 2])
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column();
        let events = DataFrame::new(
            3,
            vec![
                Column::new("user_id".into(), ["a", "b", "a"]),
                ts,
                Column::new("qty".into(), [Some(1i64), None, Some(4)]),
            ],
        )
        .unwrap();
        let w = vec!["1d".to_string()];
        let mut outputs = one("qty", "count", None, &w).unwrap();
        outputs.extend(one("qty", "mean", None, &w).unwrap());
        let none = StringChunked::from_iter_values("entity_id".into(), std::iter::empty::<&str>());
        for threads in [1, 2] {
            let got = evaluate(&events, "user_id", "ts", &outputs, &none, &[], threads).unwrap();
            assert_eq!(got.height(), 0);
            assert_eq!(
                got.column("qty_count_1d").unwrap().dtype(),
                &DataType::Int64
            );
            assert_eq!(
                got.column("qty_mean_1d").unwrap().dtype(),
                &DataType::Float64
            );
        }
    }

    /// Events of a few users with ties, nulls and NaN; labels at event times and between.
    #[test]
    fn evaluation_equals_brute_force_for_every_function_with_ties_nulls_and_unknown_entities() {
        let mut seed = 42u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let rows = 3000;
        let users: Vec<Option<String>> = (0..rows)
            .map(|_| (next(50) != 0).then(|| format!("u{}", next(40))))
            .collect();
        let ts: Vec<Option<i64>> = (0..rows)
            .map(|_| (next(40) != 0).then(|| next(500) as i64 * 1_000_000))
            .collect();
        let amount: Vec<Option<f64>> = (0..rows)
            .map(|_| match next(10) {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some(next(1000) as f64 / 7.0),
            })
            .collect();
        let qty: Vec<Option<i64>> = (0..rows)
            .map(|_| (next(6) != 0).then(|| next(9) as i64 - 3))
            .collect();
        let merchant: Vec<Option<String>> = (0..rows)
            .map(|_| (next(5) != 0).then(|| format!("m{}", next(5))))
            .collect();
        let ts_col = Int64Chunked::from_iter_options("ts".into(), ts.iter().copied())
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column();
        let events = DataFrame::new(
            rows,
            vec![
                Column::new("user_id".into(), users.clone()),
                ts_col,
                Column::new("amount".into(), amount.clone()),
                Column::new("qty".into(), qty.clone()),
                Column::new("merchant".into(), merchant.clone()),
            ],
        )
        .unwrap();
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let windows = w(&["1s", "7s", "60s", "600s"]);
        let mut outputs = Vec::new();
        for (column, function, q) in [
            ("amount", "count", None),
            ("amount", "sum", None),
            ("amount", "mean", None),
            ("amount", "min", None),
            ("amount", "max", None),
            ("amount", "stddev", None),
            ("amount", "percentile", Some(0.9)),
            ("amount", "first", None),
            ("amount", "last", None),
            ("qty", "sum", None),
            ("qty", "max", None),
            ("qty", "count_distinct", None),
            ("qty", "first", None),
            ("qty", "last", None),
            ("merchant", "count_distinct", None),
            ("merchant", "last", None),
            ("merchant", "count", None),
        ] {
            outputs.extend(one(column, function, q, &windows).unwrap());
        }
        let labels = 2000;
        let entities: Vec<String> = (0..labels).map(|_| format!("u{}", next(45))).collect();
        let at: Vec<i64> = (0..labels)
            .map(|i| match (i % 2, ts[i % rows]) {
                (0, Some(t)) => t,
                _ => next(520) as i64 * 1_000_000 - 10_000_000,
            })
            .collect();
        let entity_ca = StringChunked::from_iter_values(
            "entity_id".into(),
            entities.iter().map(String::as_str),
        );
        let got = evaluate(&events, "user_id", "ts", &outputs, &entity_ca, &at, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.height(), labels);
        // Split across threads by entity: the same answers, whatever the number of slices.
        for threads in [2, 3, 7, 64] {
            let split = evaluate(&events, "user_id", "ts", &outputs, &entity_ca, &at, threads)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                split.equals_missing(&got),
                "{threads} threads: {split} {got}"
            );
        }
        // Columns in several chunks (as a scan gives them) are read the same.
        let mut chunked = events.slice(0, rows / 3);
        chunked
            .vstack_mut(&events.slice((rows / 3) as i64, rows))
            .unwrap();
        assert!(chunked.column("amount").unwrap().n_chunks() > 1);
        let again = evaluate(&chunked, "user_id", "ts", &outputs, &entity_ca, &at, 2).unwrap();
        assert!(again.equals_missing(&got), "{again} {got}");
        // A label without an entity gets an empty window's values; the others are unchanged.
        let some_missing = StringChunked::from_iter_options(
            "entity_id".into(),
            entities
                .iter()
                .enumerate()
                .map(|(i, e)| (i % 5 != 0).then_some(e.as_str())),
        );
        let again = evaluate(&events, "user_id", "ts", &outputs, &some_missing, &at, 2).unwrap();
        for o in &outputs {
            let (a, g) = (again.column(&o.name).unwrap(), got.column(&o.name).unwrap());
            for l in 0..labels {
                let expected = match (l % 5, o.function) {
                    (0, Function::Count | Function::CountDistinct) => AnyValue::Int64(0),
                    (0, _) => AnyValue::Null,
                    _ => g.get(l).unwrap(),
                };
                assert_eq!(a.get(l).unwrap(), expected, "{} at {l}", o.name);
            }
        }
        // Events that come sorted by key and time take the one-pass path; same answers.
        let sorted = events
            .clone()
            .lazy()
            .filter(col("user_id").is_not_null().and(col("ts").is_not_null()))
            .sort(
                ["user_id", "ts"],
                SortMultipleOptions::default().with_maintain_order(true),
            )
            .collect()
            .unwrap();
        let keys = sorted.column("user_id").unwrap().str().unwrap().clone();
        let micros = event_micros(sorted.column("ts").unwrap()).unwrap();
        assert!(sorted_runs(&keys, &micros).is_some());
        let again = evaluate(&sorted, "user_id", "ts", &outputs, &entity_ca, &at, 2).unwrap();
        assert!(again.equals_missing(&got), "{again} {got}");
        // Keys too long to pack take the path that compares text; same answers.
        let long = |u: &str| format!("{u}-with-a-name-longer-than-fifteen-bytes");
        let mut renamed = events.clone();
        let long_users: Vec<Option<String>> =
            users.iter().map(|u| u.as_deref().map(long)).collect();
        renamed
            .replace("user_id", Column::new("user_id".into(), long_users))
            .unwrap();
        let long_entities =
            StringChunked::from_iter_values("entity_id".into(), entities.iter().map(|e| long(e)));
        let keys = renamed.column("user_id").unwrap().str().unwrap().clone();
        let micros = event_micros(renamed.column("ts").unwrap()).unwrap();
        assert!(partitioned_runs(&keys, &micros, 2).is_none());
        let again = evaluate(&renamed, "user_id", "ts", &outputs, &long_entities, &at, 2).unwrap();
        assert!(again.equals_missing(&got), "{again} {got}");

        for o in &outputs {
            let c = got.column(&o.name).unwrap();
            for l in 0..labels {
                // The window's events in (time, ingest) order.
                let mut inside: Vec<usize> = (0..rows)
                    .filter(|&i| users[i].as_deref() == Some(entities[l].as_str()))
                    .filter(|&i| ts[i].is_some_and(|t| t <= at[l] && t > at[l] - o.window_micros))
                    .collect();
                inside.sort_by_key(|&i| (ts[i], i));
                let floats: Vec<f64> = inside
                    .iter()
                    .filter_map(|&i| amount[i].filter(|v| !v.is_nan()))
                    .collect();
                let got_value = c.get(l).unwrap();
                let as_f64 = |v: &AnyValue| v.extract::<f64>();
                let expect_f = |e: Option<f64>| {
                    let g = as_f64(&got_value);
                    match (g, e) {
                        (None, None) => {}
                        (Some(g), Some(e)) => assert!(
                            (g - e).abs() <= 1e-9 * e.abs().max(1.0),
                            "{} at {l}: {g} vs {e}",
                            o.name
                        ),
                        (g, e) => panic!("{} at {l}: {g:?} vs {e:?}", o.name),
                    }
                };
                match (o.column.as_str(), o.function) {
                    ("amount", Function::Count) => expect_f(Some(floats.len() as f64)),
                    ("amount", Function::Sum) => {
                        expect_f((!floats.is_empty()).then(|| floats.iter().sum()))
                    }
                    ("amount", Function::Mean) => expect_f(
                        (!floats.is_empty())
                            .then(|| floats.iter().sum::<f64>() / floats.len() as f64),
                    ),
                    ("amount", Function::Min) => expect_f(floats.iter().copied().reduce(f64::min)),
                    ("amount", Function::Max) => expect_f(floats.iter().copied().reduce(f64::max)),
                    ("amount", Function::Stddev) => expect_f((floats.len() > 1).then(|| {
                        let m = floats.iter().sum::<f64>() / floats.len() as f64;
                        (floats.iter().map(|v| (v - m).powi(2)).sum::<f64>()
                            / (floats.len() - 1) as f64)
                            .sqrt()
                    })),
                    ("amount", Function::Percentile(q)) => {
                        expect_f((!floats.is_empty()).then(|| {
                            let mut s = floats.clone();
                            s.sort_by(f64::total_cmp);
                            let p = q * (s.len() - 1) as f64;
                            let k = p.floor() as usize;
                            s[k] + (s[(k + 1).min(s.len() - 1)] - s[k]) * (p - p.floor())
                        }))
                    }
                    ("amount", Function::First) => expect_f(floats.first().copied()),
                    ("amount", Function::Last) => expect_f(floats.last().copied()),
                    ("qty", f) => {
                        let ints: Vec<i64> = inside.iter().filter_map(|&i| qty[i]).collect();
                        let expected = match f {
                            Function::Sum => (!ints.is_empty()).then(|| ints.iter().sum::<i64>()),
                            Function::Max => ints.iter().copied().max(),
                            Function::First => ints.first().copied(),
                            Function::Last => ints.last().copied(),
                            _ => {
                                let mut d = ints.clone();
                                d.sort_unstable();
                                d.dedup();
                                Some(d.len() as i64)
                            }
                        };
                        assert_eq!(got_value.extract::<i64>(), expected, "{} at {l}", o.name);
                        if expected.is_some() {
                            assert_eq!(got_value.dtype(), DataType::Int64);
                        }
                    }
                    ("merchant", f) => {
                        let m: Vec<&str> = inside
                            .iter()
                            .filter_map(|&i| merchant[i].as_deref())
                            .collect();
                        match f {
                            Function::Last => assert_eq!(
                                got_value.get_str(),
                                m.last().copied(),
                                "{} at {l}",
                                o.name
                            ),
                            Function::Count => {
                                assert_eq!(got_value.extract::<i64>(), Some(m.len() as i64))
                            }
                            _ => {
                                let mut d = m.clone();
                                d.sort_unstable();
                                d.dedup();
                                assert_eq!(
                                    got_value.extract::<i64>(),
                                    Some(d.len() as i64),
                                    "{} at {l}",
                                    o.name
                                );
                            }
                        }
                    }
                    other => panic!("untested {other:?}"),
                }
            }
        }
    }
}
