//! The events an aggregation feature's online answers need, held per entity in the serving
//! process: every event whose time is after `now − longest window` (older ones can never be
//! in a window that ends now or later), in time order, ties in the order they were ingested.
//!
//! An answer at instant `t` runs the same kernels as training sets (`windows`) over the
//! entity's events, so online and offline cannot disagree. Cost: per event 8 bytes of time,
//! 8 of stream offset, plus 16 bytes per aggregated column (a value and its null flag; a string's text besides);
//! per entity a map entry and one vector per column. Work per answer: the entity's held
//! events, once per output.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat};
use polars::prelude::*;

use super::aggregations::{Function, Output};
use super::windows::{self, Span};

/// One column's values for one entity's events.
#[derive(Debug, Clone)]
enum Cells {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<Box<str>>>),
    Bool(Vec<Option<bool>>),
    /// Days since the epoch.
    Date(Vec<Option<i32>>),
    /// Microseconds since the epoch.
    Datetime(Vec<Option<i64>>),
}

impl Cells {
    /// A whole column's values.
    fn of(column: &Column) -> Result<Cells, String> {
        let err = |e: PolarsError| e.to_string();
        Ok(match column.dtype() {
            DataType::Int64 => Cells::Int(column.i64().map_err(err)?.iter().collect()),
            DataType::Float64 => Cells::Float(column.f64().map_err(err)?.iter().collect()),
            DataType::String => Cells::Text(
                column
                    .str()
                    .map_err(err)?
                    .iter()
                    .map(|v| v.map(Into::into))
                    .collect(),
            ),
            DataType::Boolean => Cells::Bool(column.bool().map_err(err)?.iter().collect()),
            DataType::Date => {
                let days = column.to_physical_repr();
                Cells::Date(days.i32().map_err(err)?.iter().collect())
            }
            DataType::Datetime(_, zone) => {
                let us = column
                    .cast(&DataType::Datetime(TimeUnit::Microseconds, zone.clone()))
                    .map_err(err)?
                    .to_physical_repr();
                Cells::Datetime(us.i64().map_err(err)?.iter().collect())
            }
            other => return Err(format!("a column of type {other} cannot be aggregated")),
        })
    }

    /// No values, of the same kind.
    fn empty_like(&self) -> Cells {
        match self {
            Cells::Int(_) => Cells::Int(Vec::new()),
            Cells::Float(_) => Cells::Float(Vec::new()),
            Cells::Text(_) => Cells::Text(Vec::new()),
            Cells::Bool(_) => Cells::Bool(Vec::new()),
            Cells::Date(_) => Cells::Date(Vec::new()),
            Cells::Datetime(_) => Cells::Datetime(Vec::new()),
        }
    }

    /// Append `source`'s value at `i` (the same kind; another kind appends nothing).
    fn push_from(&mut self, source: &Cells, i: usize) {
        match (self, source) {
            (Cells::Int(to), Cells::Int(from)) => to.push(from[i]),
            (Cells::Float(to), Cells::Float(from)) => to.push(from[i]),
            (Cells::Text(to), Cells::Text(from)) => to.push(from[i].clone()),
            (Cells::Bool(to), Cells::Bool(from)) => to.push(from[i]),
            (Cells::Date(to), Cells::Date(from)) => to.push(from[i]),
            (Cells::Datetime(to), Cells::Datetime(from)) => to.push(from[i]),
            _ => {}
        }
    }

    /// Keep the values at `order`'s positions, in that order.
    fn reorder(&mut self, order: &[usize]) {
        fn pick<T: Clone>(v: &mut Vec<T>, order: &[usize]) {
            *v = order.iter().map(|&i| v[i].clone()).collect();
        }
        match self {
            Cells::Int(v) => pick(v, order),
            Cells::Float(v) => pick(v, order),
            Cells::Text(v) => pick(v, order),
            Cells::Bool(v) => pick(v, order),
            Cells::Date(v) => pick(v, order),
            Cells::Datetime(v) => pick(v, order),
        }
    }

    /// Keep the values where `keep` is true.
    fn retain(&mut self, keep: &[bool]) {
        fn only<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        match self {
            Cells::Int(v) => only(v, keep),
            Cells::Float(v) => only(v, keep),
            Cells::Text(v) => only(v, keep),
            Cells::Bool(v) => only(v, keep),
            Cells::Date(v) => only(v, keep),
            Cells::Datetime(v) => only(v, keep),
        }
    }

    fn drain_front(&mut self, n: usize) {
        match self {
            Cells::Int(v) => drop(v.drain(..n)),
            Cells::Float(v) => drop(v.drain(..n)),
            Cells::Text(v) => drop(v.drain(..n)),
            Cells::Bool(v) => drop(v.drain(..n)),
            Cells::Date(v) => drop(v.drain(..n)),
            Cells::Datetime(v) => drop(v.drain(..n)),
        }
    }

    /// Whether each value is there (floats: not NaN either, as offline).
    fn present(&self, span: Span) -> Vec<Option<()>> {
        fn of<T>(v: &[Option<T>]) -> Vec<Option<()>> {
            v.iter().map(|x| x.as_ref().map(|_| ())).collect()
        }
        let r = span.lo..span.hi;
        match self {
            Cells::Float(v) => v[r]
                .iter()
                .map(|x| x.filter(|x| !x.is_nan()).map(|_| ()))
                .collect(),
            Cells::Int(v) => of(&v[r]),
            Cells::Text(v) => of(&v[r]),
            Cells::Bool(v) => of(&v[r]),
            Cells::Date(v) => of(&v[r]),
            Cells::Datetime(v) => of(&v[r]),
        }
    }

    fn floats(&self, span: Span) -> Vec<Option<f64>> {
        let r = span.lo..span.hi;
        match self {
            Cells::Float(v) => v[r].iter().map(|x| x.filter(|x| !x.is_nan())).collect(),
            Cells::Int(v) => v[r].iter().map(|x| x.map(|x| x as f64)).collect(),
            _ => Vec::new(),
        }
    }

    /// The window's values numbered by identity, for distinct counts.
    fn ids(&self, span: Span) -> Vec<Option<u32>> {
        fn number<K: std::hash::Hash + Eq>(v: impl Iterator<Item = Option<K>>) -> Vec<Option<u32>> {
            let mut ids = HashMap::new();
            v.map(|x| {
                x.map(|x| {
                    let next = ids.len() as u32;
                    *ids.entry(x).or_insert(next)
                })
            })
            .collect()
        }
        let r = span.lo..span.hi;
        match self {
            Cells::Int(v) => number(v[r].iter().copied()),
            Cells::Float(v) => number(
                v[r].iter()
                    .map(|x| x.filter(|x| !x.is_nan()).map(|x| (x + 0.0).to_bits())),
            ),
            Cells::Text(v) => number(v[r].iter().map(|x| x.as_deref())),
            Cells::Bool(v) => number(v[r].iter().copied()),
            Cells::Date(v) => number(v[r].iter().copied()),
            Cells::Datetime(v) => number(v[r].iter().copied()),
        }
    }

    /// The value at `i` as JSON text, as a training set's JSON answer writes it.
    fn json(&self, i: usize) -> String {
        let null = || "null".to_string();
        match self {
            Cells::Int(v) => v[i].map_or_else(null, |x| x.to_string()),
            Cells::Float(v) => v[i].map_or_else(null, json_f64),
            Cells::Text(v) => v[i].as_deref().map_or_else(null, |s| {
                serde_json::to_string(s).unwrap_or_else(|_| null())
            }),
            Cells::Bool(v) => v[i].map_or_else(null, |b| b.to_string()),
            Cells::Date(v) => v[i]
                .and_then(|d| DateTime::from_timestamp(i64::from(d) * 86_400, 0))
                .map_or_else(null, |t| format!("\"{}\"", t.format("%Y-%m-%d"))),
            Cells::Datetime(v) => v[i]
                .and_then(DateTime::from_timestamp_micros)
                .map_or_else(null, |t| {
                    format!("\"{}\"", t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                }),
        }
    }
}

fn json_f64(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| "null".to_string(), |n| n.to_string())
}

#[derive(Debug, Clone)]
struct Events {
    times: Vec<i64>,
    /// Each event's stream offset when it came from a stream before its commit, else
    /// `FROM_TABLE`.
    offsets: Vec<i64>,
    columns: Vec<Cells>,
    /// Events were added out of time order since the last sort.
    unsorted: bool,
}

/// The offset of an event read from the table's files.
pub const FROM_TABLE: i64 = i64::MIN;

/// One aggregation feature's held events.
#[derive(Debug)]
pub struct Held {
    outputs: Vec<Output>,
    /// The aggregated columns, in the order `Events::columns` holds them.
    columns: Vec<String>,
    /// Index into `columns` of each output's column.
    column_of: Vec<usize>,
    /// The longest window, in microseconds.
    horizon: i64,
    /// aHash, randomly keyed as SipHash is, and a few times faster: the hash is taken once
    /// per event a stream delivers.
    entities: HashMap<Box<str>, Events, ahash::RandomState>,
    events: usize,
    /// The `before` of the last pass of `prune`.
    pruned: i64,
}

impl Held {
    pub fn new(outputs: Vec<Output>) -> Held {
        let mut columns: Vec<String> = Vec::new();
        let column_of = outputs
            .iter()
            .map(|o| match columns.iter().position(|c| *c == o.column) {
                Some(i) => i,
                None => {
                    columns.push(o.column.clone());
                    columns.len() - 1
                }
            })
            .collect();
        let horizon = outputs.iter().map(|o| o.window_micros).max().unwrap_or(0);
        Held {
            outputs,
            columns,
            column_of,
            horizon,
            entities: HashMap::default(),
            events: 0,
            pruned: i64::MIN,
        }
    }

    /// Events held, over every entity.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The longest window, in microseconds: events at or before `now − horizon` are dropped.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// Add a batch of events (key, event time and the aggregated columns, in the order they
    /// were ingested), after every event added before. Rows without a key or a time are
    /// skipped, as offline.
    pub fn add(&mut self, frame: &DataFrame, key: &str, time: &str) -> Result<(), String> {
        self.add_from(frame, key, time, None)
    }

    /// `add`, the events of a stream not committed yet: `offsets` has each row's offset, so
    /// they can be taken out again (`remove_offsets`) when their commit is read.
    pub fn add_from(
        &mut self,
        frame: &DataFrame,
        key: &str,
        time: &str,
        offsets: Option<&[i64]>,
    ) -> Result<(), String> {
        let err = |e: PolarsError| e.to_string();
        let column = |name: &str| {
            frame
                .column(name)
                .map_err(|_| format!("the events have no column '{name}'"))
        };
        let keys = column(key)?.cast(&DataType::String).map_err(err)?;
        let keys = keys.str().map_err(err)?;
        let times = super::aggregations::event_micros(column(time)?)?;
        // Each column read once into its typed values, then shared out by row.
        let sources = self
            .columns
            .iter()
            .map(|c| Cells::of(column(c)?))
            .collect::<Result<Vec<_>, _>>()?;
        let mut touched: Vec<Box<str>> = Vec::new();
        for (i, (k, t)) in keys.iter().zip(&times).enumerate() {
            let (Some(k), Some(t)) = (k, t) else { continue };
            let events = match self.entities.get_mut(k) {
                Some(e) => e,
                None => {
                    let columns = sources.iter().map(Cells::empty_like).collect();
                    self.entities.entry(k.into()).or_insert(Events {
                        times: Vec::new(),
                        offsets: Vec::new(),
                        columns,
                        unsorted: false,
                    })
                }
            };
            if !events.unsorted && events.times.last().is_some_and(|last| last > t) {
                events.unsorted = true;
                touched.push(k.into());
            }
            events.times.push(*t);
            events.offsets.push(
                offsets
                    .and_then(|o| o.get(i).copied())
                    .unwrap_or(FROM_TABLE),
            );
            for (cells, source) in events.columns.iter_mut().zip(&sources) {
                cells.push_from(source, i);
            }
            self.events += 1;
        }
        // Late events go to their place in time; a stable sort keeps ingest order in ties.
        for k in touched {
            if let Some(e) = self.entities.get_mut(&k) {
                let mut order: Vec<usize> = (0..e.times.len()).collect();
                order.sort_by_key(|&i| e.times[i]);
                e.times = order.iter().map(|&i| e.times[i]).collect();
                e.offsets = order.iter().map(|&i| e.offsets[i]).collect();
                for c in &mut e.columns {
                    c.reorder(&order);
                }
                e.unsorted = false;
            }
        }
        Ok(())
    }

    /// Drop the events at or before `before`: no window ending after `before + horizon` holds
    /// them. A pass over every entity, so it runs only once `before` has moved a second (or
    /// a 64th of the horizon, if more) since the last one: older events cost memory until
    /// then, never a wrong answer.
    pub fn prune(&mut self, before: i64) {
        let step = (self.horizon / 64).max(1_000_000);
        if before < self.pruned.saturating_add(step) {
            return;
        }
        self.pruned = before;
        let mut dropped = 0;
        self.entities.retain(|_, e| {
            let n = e.times.partition_point(|&t| t <= before);
            if n > 0 {
                e.times.drain(..n);
                e.offsets.drain(..n);
                for c in &mut e.columns {
                    c.drain_front(n);
                }
                dropped += n;
            }
            !e.times.is_empty()
        });
        self.events -= dropped;
    }

    /// Take out the stream's events with offsets in `(lo, hi]` (added by `add_from`): the
    /// table's files now hold them, and are read instead.
    pub fn remove_offsets(&mut self, lo: i64, hi: i64) {
        let taken = |o: i64| lo < o && o <= hi;
        let mut removed = 0;
        self.entities.retain(|_, e| {
            if !e.offsets.iter().any(|&o| taken(o)) {
                return true;
            }
            let keep: Vec<bool> = e.offsets.iter().map(|&o| !taken(o)).collect();
            let mut i = 0;
            e.times.retain(|_| {
                i += 1;
                keep[i - 1]
            });
            e.offsets.retain(|&o| !taken(o));
            for c in &mut e.columns {
                c.retain(&keep);
            }
            removed += keep.iter().filter(|k| !**k).count();
            !e.times.is_empty()
        });
        self.events -= removed;
    }

    /// The feature's values for `entity` at instant `at`, as the JSON object a training set
    /// would give for a row at that time. `at` must not be before the last prune plus the
    /// horizon.
    pub fn values_at(&self, entity: &str, at: i64) -> String {
        let empty = Events {
            times: Vec::new(),
            offsets: Vec::new(),
            columns: Vec::new(),
            unsorted: false,
        };
        let events = self.entities.get(entity).unwrap_or(&empty);
        let mut out = String::with_capacity(32 * self.outputs.len() + 2);
        out.push('{');
        for (j, o) in self.outputs.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&o.name).unwrap_or_default());
            out.push(':');
            let span = windows::spans(&events.times, &[at], o.window_micros)[0];
            let cells = events.columns.get(self.column_of[j]);
            out.push_str(&value(o.function, cells, span));
        }
        out.push('}');
        out
    }
}

/// One output's value over the window `span` of an entity's events (`cells` is `None` for
/// an entity with no events).
fn value(function: Function, cells: Option<&Cells>, span: Span) -> String {
    let whole = [Span {
        lo: 0,
        hi: span.hi - span.lo,
    }];
    let Some(cells) = cells else {
        return match function {
            Function::Count | Function::CountDistinct => "0".into(),
            _ => "null".into(),
        };
    };
    let float = |v: Option<f64>| v.map_or_else(|| "null".to_string(), json_f64);
    let int = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
    match function {
        Function::Count => windows::count(&cells.present(span), &whole)[0].to_string(),
        Function::CountDistinct => {
            windows::count_distinct(&cells.ids(span), &whole, &mut Vec::new())[0].to_string()
        }
        Function::First => windows::first(&cells.present(span), &whole)[0]
            .map_or_else(|| "null".into(), |i| cells.json(span.lo + i)),
        Function::Last => windows::last(&cells.present(span), &whole)[0]
            .map_or_else(|| "null".into(), |i| cells.json(span.lo + i)),
        Function::Sum | Function::Min | Function::Max if matches!(cells, Cells::Int(_)) => {
            let Cells::Int(v) = cells else {
                return "null".into();
            };
            let v = &v[span.lo..span.hi];
            int(match function {
                Function::Sum => windows::sum_int(v, &whole)[0],
                Function::Min => windows::extreme(v, &whole, false)[0],
                _ => windows::extreme(v, &whole, true)[0],
            })
        }
        f => {
            let v = cells.floats(span);
            float(match f {
                Function::Sum => windows::sum(&v, &whole)[0],
                Function::Min => windows::extreme(&v, &whole, false)[0],
                Function::Max => windows::extreme(&v, &whole, true)[0],
                Function::Mean => windows::mean(&v, &whole)[0],
                Function::Stddev => windows::stddev(&v, &whole)[0],
                Function::Percentile(q) => windows::percentile(&v, &whole, q)[0],
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::aggregations::evaluate;

    /// Held events answer exactly what a training set answers for a row at the same instant,
    /// whatever order the batches came in and after pruning what no window can reach.
    #[test]
    fn held_answers_equal_the_offline_evaluation_at_the_same_instant() {
        let mut seed = 9u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let rows = 800;
        let users: Vec<Option<String>> =
            (0..rows).map(|_| Some(format!("u{}", next(12)))).collect();
        let ts: Vec<Option<i64>> = (0..rows)
            .map(|_| (next(30) != 0).then(|| next(300) as i64 * 1_000_000))
            .collect();
        let amount: Vec<Option<f64>> = (0..rows)
            .map(|_| (next(6) != 0).then(|| next(100) as f64 / 4.0))
            .collect();
        let qty: Vec<Option<i64>> = (0..rows)
            .map(|_| (next(6) != 0).then(|| next(7) as i64))
            .collect();
        let tag: Vec<Option<String>> = (0..rows)
            .map(|_| (next(5) != 0).then(|| format!("t{}", next(4))))
            .collect();
        let frame = |lo: usize, hi: usize| {
            let ts = Int64Chunked::from_iter_options("ts".into(), ts[lo..hi].iter().copied())
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column();
            DataFrame::new(
                hi - lo,
                vec![
                    Column::new("user_id".into(), &users[lo..hi]),
                    ts,
                    Column::new("amount".into(), &amount[lo..hi]),
                    Column::new("qty".into(), &qty[lo..hi]),
                    Column::new("tag".into(), &tag[lo..hi]),
                ],
            )
            .unwrap()
        };
        let mut outputs = Vec::new();
        let function = [
            Function::Count,
            Function::Sum,
            Function::Mean,
            Function::Min,
            Function::Max,
            Function::Stddev,
            Function::First,
            Function::Last,
            Function::CountDistinct,
            Function::Percentile(0.75),
        ];
        for (k, f) in function.iter().enumerate() {
            for (column, w) in [("amount", 10), ("qty", 60), ("tag", 25)] {
                let numeric = column != "tag";
                if !numeric
                    && !matches!(
                        f,
                        Function::Count
                            | Function::CountDistinct
                            | Function::First
                            | Function::Last
                    )
                {
                    continue;
                }
                outputs.push(Output {
                    name: format!("{column}_{k}_{w}"),
                    column: column.into(),
                    function: *f,
                    window_micros: w * 1_000_000,
                });
            }
        }
        let mut held = Held::new(outputs.clone());
        // Batches in ingest order, with late events in each.
        for (lo, hi) in [(0, 300), (300, 301), (301, 800)] {
            held.add(&frame(lo, hi), "user_id", "ts").unwrap();
        }
        assert_eq!(held.events(), ts.iter().flatten().count());
        // The same events, rows from 300 on taken from a stream before their commit (row 300
        // is offset 1); the commit of offsets (100, 200] is then read from its file, in place
        // of the events taken for those offsets.
        let mut streamed = Held::new(outputs.clone());
        streamed.add(&frame(0, 300), "user_id", "ts").unwrap();
        let offsets = |lo: usize, hi: usize| (lo as i64 - 299..hi as i64 - 299).collect::<Vec<_>>();
        for (lo, hi) in [(300, 301), (301, 500)] {
            let o = offsets(lo, hi);
            streamed
                .add_from(&frame(lo, hi), "user_id", "ts", Some(&o))
                .unwrap();
        }
        streamed.remove_offsets(100, 200);
        streamed.add(&frame(400, 500), "user_id", "ts").unwrap();
        let o = offsets(500, 800);
        streamed
            .add_from(&frame(500, 800), "user_id", "ts", Some(&o))
            .unwrap();
        assert_eq!(streamed.events(), held.events());
        let at = 200 * 1_000_000;
        held.prune(at - held.horizon());
        streamed.prune(at - held.horizon());
        assert!(held.events() < ts.iter().flatten().count());
        let all = frame(0, rows);
        for t in [
            at,
            at + 1,
            at + 5_000_000,
            at + 59_999_999,
            at + 400_000_000,
        ] {
            let entities: Vec<String> = (0..13).map(|u| format!("u{u}")).collect();
            let labels =
                StringChunked::from_iter_values("e".into(), entities.iter().map(String::as_str));
            let offline = evaluate(&all, "user_id", "ts", &outputs, &labels, &[t; 13], 1).unwrap();
            let cells: Vec<(String, Vec<String>)> = offline
                .columns()
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        crate::engine::result::encode_cells(c).unwrap(),
                    )
                })
                .collect();
            for (i, e) in entities.iter().enumerate() {
                assert_eq!(streamed.values_at(e, t), held.values_at(e, t), "{e} at {t}");
                let online: serde_json::Value =
                    serde_json::from_str(&held.values_at(e, t)).unwrap();
                for (name, values) in &cells {
                    let expected: serde_json::Value = serde_json::from_str(&values[i]).unwrap();
                    let got = &online[name];
                    let same = match (got.as_f64(), expected.as_f64()) {
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        _ => *got == expected,
                    };
                    assert!(same, "{e} at {t}, {name}: online {got} offline {expected}");
                }
            }
        }
    }
}
