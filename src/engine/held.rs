//! The events an aggregation feature's online answers need, held per entity in the serving
//! process: every event whose time is after `now − longest window` (older ones can never be
//! in a window that ends now or later), in time order, ties in the order they were ingested.
//!
//! An answer at instant `t` runs the same kernels as training sets (`windows`) over the
//! entity's events, so online and offline cannot disagree. Work per answer: the entity's held
//! events, once per output.
//!
//! Cost per event: 8 bytes of time, and per aggregated column its value: 8 bytes for a float
//! (a missing one held as NaN), an integer or a datetime, 4 for a date, 1 for a boolean, 16
//! for a string besides its text; an integer, boolean, date or datetime column adds a byte
//! of null flag per event of an entity once one of its values is missing. 8 bytes of stream
//! offset only for an entity holding events taken from a stream before their commit. Per
//! entity: a map slot (`size_of::<(Box<str>, Events)>()`, 88 bytes, and a control byte), its
//! key, and one vector per column. Vectors grow by doubling: `trim` gives back all the room
//! past what they hold (a read, before it is absorbed), `prune` the room past twice that.
//! `Held::bytes` says what is allocated.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat};
use polars::prelude::*;

use super::aggregations::{Function, Output};
use super::windows::{self, Span};

/// Values of a type with no spare value to mark a missing one: a flag per value, kept only
/// once one is missing (a column with no nulls pays nothing for them).
#[derive(Debug, Clone, Default)]
struct Maybe<T> {
    values: Vec<T>,
    /// `true` where the value is missing; empty while none is.
    missing: Vec<bool>,
}

impl<T: Copy + Default> Maybe<T> {
    fn collect(values: impl Iterator<Item = Option<T>>) -> Maybe<T> {
        let mut m = Maybe {
            values: Vec::with_capacity(values.size_hint().0),
            missing: Vec::new(),
        };
        for v in values {
            m.push(v);
        }
        m
    }

    fn push(&mut self, value: Option<T>) {
        push_sparse(&mut self.missing, self.values.len(), value.is_none(), false);
        self.values.push(value.unwrap_or_default());
    }

    fn get(&self, i: usize) -> Option<T> {
        (!self.missing.get(i).copied().unwrap_or(false)).then(|| self.values[i])
    }

    fn span(&self, span: Span) -> impl Iterator<Item = Option<T>> + '_ {
        (span.lo..span.hi).map(|i| self.get(i))
    }

    fn append(&mut self, other: &mut Maybe<T>) {
        let (mine, theirs) = (self.values.len(), other.values.len());
        append_sparse(&mut self.missing, mine, &mut other.missing, theirs, false);
        self.values.append(&mut other.values);
    }
}

/// Push `value` onto `v`, a vector that is empty while every one of its `len` items is
/// `absent` (so it costs nothing until one is not).
fn push_sparse<T: Clone + PartialEq>(v: &mut Vec<T>, len: usize, value: T, absent: T) {
    if v.is_empty() {
        if value == absent {
            return;
        }
        v.resize(len, absent);
    }
    v.push(value);
}

/// Move `theirs` (standing for `their_len` items) after `mine` (for `my_len`), both vectors
/// that are empty while all their items are `absent`, as `push_sparse` keeps them.
fn append_sparse<T: Clone>(
    mine: &mut Vec<T>,
    my_len: usize,
    theirs: &mut Vec<T>,
    their_len: usize,
    absent: T,
) {
    if mine.is_empty() && theirs.is_empty() {
        return;
    }
    mine.resize(my_len, absent.clone());
    if theirs.is_empty() {
        mine.resize(my_len + their_len, absent);
    } else {
        mine.append(theirs);
    }
}

/// What every kind of held column does alike.
trait Stored {
    fn drain_front(&mut self, n: usize);
    /// Keep the values where `keep` is true.
    fn retain(&mut self, keep: &[bool]);
    /// Keep the values at `order`'s positions, in that order.
    fn reorder(&mut self, order: &[usize]);
    /// Give back room more than `slack` past what is held.
    fn trim(&mut self, slack: fn(usize) -> usize);
    /// Bytes allocated for it.
    fn bytes(&self) -> usize;
    /// Room for `n` more values, and no more.
    fn reserve_exact(&mut self, n: usize);
}

fn retain_by<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

fn trim_vec<T>(v: &mut Vec<T>, slack: fn(usize) -> usize) {
    if v.capacity() > v.len() + slack(v.len()) {
        v.shrink_to_fit();
    }
}

impl<T: Clone> Stored for Vec<T> {
    fn drain_front(&mut self, n: usize) {
        self.drain(..n);
    }
    fn retain(&mut self, keep: &[bool]) {
        retain_by(self, keep);
    }
    fn reorder(&mut self, order: &[usize]) {
        *self = order.iter().map(|&i| self[i].clone()).collect();
    }
    fn trim(&mut self, slack: fn(usize) -> usize) {
        trim_vec(self, slack);
    }
    fn bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
    }
    fn reserve_exact(&mut self, n: usize) {
        Vec::reserve_exact(self, n);
    }
}

impl<T: Copy> Stored for Maybe<T> {
    fn drain_front(&mut self, n: usize) {
        self.values.drain(..n);
        if !self.missing.is_empty() {
            self.missing.drain(..n);
        }
    }
    fn retain(&mut self, keep: &[bool]) {
        retain_by(&mut self.values, keep);
        if !self.missing.is_empty() {
            retain_by(&mut self.missing, keep);
        }
    }
    fn reorder(&mut self, order: &[usize]) {
        self.values.reorder(order);
        if !self.missing.is_empty() {
            self.missing.reorder(order);
        }
    }
    fn trim(&mut self, slack: fn(usize) -> usize) {
        trim_vec(&mut self.values, slack);
        trim_vec(&mut self.missing, slack);
    }
    fn bytes(&self) -> usize {
        self.values.bytes() + self.missing.capacity()
    }
    /// Room for the values; missing flags are made when one is missing.
    fn reserve_exact(&mut self, n: usize) {
        self.values.reserve_exact(n);
    }
}

/// One column's values for one entity's events.
#[derive(Debug, Clone)]
enum Cells {
    Int(Maybe<i64>),
    /// A missing value is held as NaN: every function skips NaN as it skips null, so the
    /// two need not be told apart, and a float costs its 8 bytes alone.
    Float(Vec<f64>),
    Text(Vec<Option<Box<str>>>),
    Bool(Maybe<bool>),
    /// Days since the epoch.
    Date(Maybe<i32>),
    /// Microseconds since the epoch.
    Datetime(Maybe<i64>),
}

impl Cells {
    /// A whole column's values.
    fn of(column: &Column) -> Result<Cells, String> {
        let err = |e: PolarsError| e.to_string();
        Ok(match column.dtype() {
            DataType::Int64 => Cells::Int(Maybe::collect(column.i64().map_err(err)?.iter())),
            DataType::Float64 => Cells::Float(
                column
                    .f64()
                    .map_err(err)?
                    .iter()
                    .map(|v| v.unwrap_or(f64::NAN))
                    .collect(),
            ),
            DataType::String => Cells::Text(
                column
                    .str()
                    .map_err(err)?
                    .iter()
                    .map(|v| v.map(Into::into))
                    .collect(),
            ),
            DataType::Boolean => Cells::Bool(Maybe::collect(column.bool().map_err(err)?.iter())),
            DataType::Date => {
                let days = column.to_physical_repr();
                Cells::Date(Maybe::collect(days.i32().map_err(err)?.iter()))
            }
            DataType::Datetime(_, zone) => {
                let us = column
                    .cast(&DataType::Datetime(TimeUnit::Microseconds, zone.clone()))
                    .map_err(err)?
                    .to_physical_repr();
                Cells::Datetime(Maybe::collect(us.i64().map_err(err)?.iter()))
            }
            other => return Err(format!("a column of type {other} cannot be aggregated")),
        })
    }

    /// No values, of the same kind.
    fn empty_like(&self) -> Cells {
        match self {
            Cells::Int(_) => Cells::Int(Maybe::default()),
            Cells::Float(_) => Cells::Float(Vec::new()),
            Cells::Text(_) => Cells::Text(Vec::new()),
            Cells::Bool(_) => Cells::Bool(Maybe::default()),
            Cells::Date(_) => Cells::Date(Maybe::default()),
            Cells::Datetime(_) => Cells::Datetime(Maybe::default()),
        }
    }

    fn stored(&mut self) -> &mut dyn Stored {
        match self {
            Cells::Int(v) => v,
            Cells::Float(v) => v,
            Cells::Text(v) => v,
            Cells::Bool(v) => v,
            Cells::Date(v) => v,
            Cells::Datetime(v) => v,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Cells::Int(v) => v.bytes(),
            Cells::Float(v) => v.bytes(),
            Cells::Text(v) => v.bytes() + v.iter().flatten().map(|s| s.len()).sum::<usize>(),
            Cells::Bool(v) => v.bytes(),
            Cells::Date(v) => v.bytes(),
            Cells::Datetime(v) => v.bytes(),
        }
    }

    /// Append `source`'s value at `i` (the same kind; another kind appends nothing).
    fn push_from(&mut self, source: &Cells, i: usize) {
        match (self, source) {
            (Cells::Int(to), Cells::Int(from)) => to.push(from.get(i)),
            (Cells::Float(to), Cells::Float(from)) => to.push(from[i]),
            (Cells::Text(to), Cells::Text(from)) => to.push(from[i].clone()),
            (Cells::Bool(to), Cells::Bool(from)) => to.push(from.get(i)),
            (Cells::Date(to), Cells::Date(from)) => to.push(from.get(i)),
            (Cells::Datetime(to), Cells::Datetime(from)) => to.push(from.get(i)),
            _ => {}
        }
    }

    /// Move `other`'s values after these (the same kind; another kind moves nothing).
    fn append(&mut self, other: &mut Cells) {
        match (self, other) {
            (Cells::Int(to), Cells::Int(from)) => to.append(from),
            (Cells::Float(to), Cells::Float(from)) => to.append(from),
            (Cells::Text(to), Cells::Text(from)) => to.append(from),
            (Cells::Bool(to), Cells::Bool(from)) => to.append(from),
            (Cells::Date(to), Cells::Date(from)) => to.append(from),
            (Cells::Datetime(to), Cells::Datetime(from)) => to.append(from),
            _ => {}
        }
    }

    /// Whether each value is there (floats: not NaN either, as offline).
    fn present(&self, span: Span) -> Vec<Option<()>> {
        fn of<T: Copy + Default>(v: &Maybe<T>, span: Span) -> Vec<Option<()>> {
            v.span(span).map(|x| x.map(|_| ())).collect()
        }
        match self {
            Cells::Float(v) => v[span.lo..span.hi]
                .iter()
                .map(|x| (!x.is_nan()).then_some(()))
                .collect(),
            Cells::Int(v) => of(v, span),
            Cells::Text(v) => v[span.lo..span.hi]
                .iter()
                .map(|x| x.as_ref().map(|_| ()))
                .collect(),
            Cells::Bool(v) => of(v, span),
            Cells::Date(v) => of(v, span),
            Cells::Datetime(v) => of(v, span),
        }
    }

    fn floats(&self, span: Span) -> Vec<Option<f64>> {
        match self {
            Cells::Float(v) => v[span.lo..span.hi]
                .iter()
                .map(|x| (!x.is_nan()).then_some(*x))
                .collect(),
            Cells::Int(v) => v.span(span).map(|x| x.map(|x| x as f64)).collect(),
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
            Cells::Int(v) => number(v.span(span)),
            Cells::Float(v) => number(
                v[r].iter()
                    .map(|x| (!x.is_nan()).then(|| (x + 0.0).to_bits())),
            ),
            Cells::Text(v) => number(v[r].iter().map(|x| x.as_deref())),
            Cells::Bool(v) => number(v.span(span)),
            Cells::Date(v) => number(v.span(span)),
            Cells::Datetime(v) => number(v.span(span)),
        }
    }

    /// The value at `i` as JSON text, as a training set's JSON answer writes it.
    fn json(&self, i: usize) -> String {
        let null = || "null".to_string();
        match self {
            Cells::Int(v) => v.get(i).map_or_else(null, |x| x.to_string()),
            Cells::Float(v) => json_f64(v[i]),
            Cells::Text(v) => v[i].as_deref().map_or_else(null, |s| {
                serde_json::to_string(s).unwrap_or_else(|_| null())
            }),
            Cells::Bool(v) => v.get(i).map_or_else(null, |b| b.to_string()),
            Cells::Date(v) => v
                .get(i)
                .and_then(|d| DateTime::from_timestamp(i64::from(d) * 86_400, 0))
                .map_or_else(null, |t| format!("\"{}\"", t.format("%Y-%m-%d"))),
            Cells::Datetime(v) => v
                .get(i)
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
    /// `FROM_TABLE`; empty while every event came from the table's files.
    offsets: Vec<i64>,
    columns: Box<[Cells]>,
    /// Events were added out of time order since the last sort.
    unsorted: bool,
}

impl Events {
    fn new(like: &[Cells]) -> Events {
        Events {
            times: Vec::new(),
            offsets: Vec::new(),
            columns: like.iter().map(Cells::empty_like).collect(),
            unsorted: false,
        }
    }

    /// The offset of the event about to be pushed.
    fn push_offset(&mut self, offset: i64) {
        push_sparse(&mut self.offsets, self.times.len(), offset, FROM_TABLE);
    }

    /// Move `other`'s events after these.
    fn append(&mut self, other: &mut Events) {
        let (mine, theirs) = (self.times.len(), other.times.len());
        append_sparse(
            &mut self.offsets,
            mine,
            &mut other.offsets,
            theirs,
            FROM_TABLE,
        );
        if self.times.last() > other.times.first() && !other.times.is_empty() {
            self.unsorted = true;
        }
        self.times.append(&mut other.times);
        for (mine, theirs) in self.columns.iter_mut().zip(other.columns.iter_mut()) {
            mine.append(theirs);
        }
    }

    /// Late events to their place in time; a stable sort keeps ingest order in ties.
    fn sort(&mut self) {
        if !self.unsorted {
            return;
        }
        let mut order: Vec<usize> = (0..self.times.len()).collect();
        order.sort_by_key(|&i| self.times[i]);
        self.times.reorder(&order);
        if !self.offsets.is_empty() {
            self.offsets.reorder(&order);
        }
        for c in self.columns.iter_mut() {
            c.stored().reorder(&order);
        }
        self.unsorted = false;
    }

    /// `f` on every vector of values (the offsets only while there are some).
    fn each_stored(&mut self, mut f: impl FnMut(&mut dyn Stored)) {
        f(&mut self.times);
        if !self.offsets.is_empty() {
            f(&mut self.offsets);
        }
        for c in self.columns.iter_mut() {
            f(c.stored());
        }
    }

    fn bytes(&self) -> usize {
        self.times.bytes()
            + self.offsets.bytes()
            + self
                .columns
                .iter()
                .map(|c| std::mem::size_of::<Cells>() + c.bytes())
                .sum::<usize>()
    }
}

/// The offset of an event read from the table's files.
pub const FROM_TABLE: i64 = i64::MIN;

/// Room a vector may keep past what it holds before `Held::prune` gives it back: vectors
/// grow by doubling, so right after a growth one holds up to twice its events.
fn slack(len: usize) -> usize {
    len + 8
}

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

    /// An empty `Held` for the same outputs: events are read into it apart, and `absorb`ed.
    pub fn empty_like(&self) -> Held {
        Held::new(self.outputs.clone())
    }

    /// Events held, over every entity.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The longest window, in microseconds: events at or before `now − horizon` are dropped.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// Bytes allocated for what is held: the entity table and every entity's vectors and
    /// texts (the allocator's own overhead aside).
    pub fn bytes(&self) -> usize {
        // The table's buckets: its capacity is 7/8 of them, a power of two, each with a
        // control byte, and a group's worth of control bytes more.
        let buckets = match self.entities.capacity() {
            0 => 0,
            c => (c * 8).div_ceil(7).next_power_of_two(),
        };
        let slot = std::mem::size_of::<(Box<str>, Events)>() + 1;
        buckets * slot
            + 16
            + self
                .entities
                .iter()
                .map(|(k, e)| k.len() + e.bytes())
                .sum::<usize>()
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
        // Rows come in runs of one key (a worker sends them grouped by key): each run's
        // entity is looked up once, and a new one is given room for the run alone.
        let key_at: Vec<Option<&str>> = keys.iter().collect();
        let mut start = 0;
        while start < key_at.len() {
            let k = key_at[start];
            let mut end = start + 1;
            while end < key_at.len() && key_at[end] == k {
                end += 1;
            }
            let run = start..end;
            start = end;
            let Some(k) = k else { continue };
            let n = times[run.clone()].iter().flatten().count();
            if n == 0 {
                // No entity is made without an event.
                continue;
            }
            let events = match self.entities.get_mut(k) {
                Some(e) => e,
                None => {
                    let mut fresh = Events::new(&sources);
                    fresh.times.reserve_exact(n);
                    for c in fresh.columns.iter_mut() {
                        c.stored().reserve_exact(n);
                    }
                    self.entities.entry(k.into()).or_insert(fresh)
                }
            };
            for i in run {
                let Some(t) = times[i] else { continue };
                if !events.unsorted && events.times.last().is_some_and(|&last| last > t) {
                    events.unsorted = true;
                    touched.push(k.into());
                }
                events.push_offset(
                    offsets
                        .and_then(|o| o.get(i).copied())
                        .unwrap_or(FROM_TABLE),
                );
                events.times.push(t);
                for (cells, source) in events.columns.iter_mut().zip(&sources) {
                    cells.push_from(source, i);
                }
                self.events += 1;
            }
        }
        for k in touched {
            if let Some(e) = self.entities.get_mut(&k) {
                e.sort();
            }
        }
        Ok(())
    }

    /// Move `other`'s events (the same outputs, read after every event held here) after these,
    /// as if they had been `add`ed here.
    pub fn absorb(&mut self, mut other: Held) {
        if self.entities.is_empty() {
            other.pruned = self.pruned;
            *self = other;
            return;
        }
        for (k, mut theirs) in other.entities.drain() {
            self.events += theirs.times.len();
            match self.entities.get_mut(&k) {
                Some(mine) => {
                    mine.append(&mut theirs);
                    mine.sort();
                }
                None => {
                    self.entities.insert(k, theirs);
                }
            }
        }
    }

    /// Give back all the room vectors keep past what they hold: after a large read, before it
    /// is absorbed (`prune` gives back only room past `slack` as it passes, since vectors
    /// that still grow would take it again).
    pub fn trim(&mut self) {
        for e in self.entities.values_mut() {
            e.each_stored(|v| v.trim(|_| 0));
        }
        self.entities.shrink_to_fit();
    }

    /// Drop the events at or before `before`: no window ending after `before + horizon` holds
    /// them. A pass over every entity, so it runs only once `before` has moved a second (or
    /// a 64th of the horizon, if more) since the last one: older events cost memory until
    /// then, never a wrong answer. Vectors with more room than `slack` give it back.
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
                e.each_stored(|v| v.drain_front(n));
                dropped += n;
            }
            e.each_stored(|v| v.trim(slack));
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
            e.each_stored(|v| v.retain(&keep));
            if e.offsets.iter().all(|&o| o == FROM_TABLE) {
                e.offsets = Vec::new();
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
        let empty = Events::new(&[]);
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
            let v: Vec<Option<i64>> = v.span(span).collect();
            int(match function {
                Function::Sum => windows::sum_int(&v, &whole)[0],
                Function::Min => windows::extreme(&v, &whole, false)[0],
                _ => windows::extreme(&v, &whole, true)[0],
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
        let flag: Vec<Option<bool>> = (0..rows)
            .map(|_| (next(4) != 0).then(|| next(2) == 0))
            .collect();
        let seen: Vec<Option<i64>> = (0..rows)
            .map(|_| (next(4) != 0).then(|| next(5) as i64 * 86_400_000_000))
            .collect();
        let frame = |lo: usize, hi: usize| {
            let ts = Int64Chunked::from_iter_options("ts".into(), ts[lo..hi].iter().copied())
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column();
            let seen = Int64Chunked::from_iter_options("seen".into(), seen[lo..hi].iter().copied())
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column();
            let day = seen.cast(&DataType::Date).unwrap().with_name("day".into());
            DataFrame::new(
                hi - lo,
                vec![
                    Column::new("user_id".into(), &users[lo..hi]),
                    ts,
                    Column::new("amount".into(), &amount[lo..hi]),
                    Column::new("qty".into(), &qty[lo..hi]),
                    Column::new("tag".into(), &tag[lo..hi]),
                    Column::new("flag".into(), &flag[lo..hi]),
                    seen,
                    day,
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
            for (column, w) in [
                ("amount", 10),
                ("qty", 60),
                ("tag", 25),
                ("flag", 30),
                ("seen", 40),
                ("day", 20),
            ] {
                let numeric = matches!(column, "amount" | "qty");
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
        // The same batches each read apart in key order, trimmed and absorbed, as a replica
        // reads files from a worker.
        let mut absorbed = Held::new(outputs.clone());
        for (lo, hi) in [(0, 300), (300, 301), (301, 800)] {
            let mut read = absorbed.empty_like();
            let batch = frame(lo, hi);
            let ordered =
                match crate::engine::aggregations::entity_order(&batch, "user_id", "ts").unwrap() {
                    Some(order) => batch
                        .take(&IdxCa::from_vec(PlSmallStr::EMPTY, order))
                        .unwrap(),
                    None => batch,
                };
            read.add(&ordered, "user_id", "ts").unwrap();
            read.trim();
            absorbed.absorb(read);
        }
        assert_eq!(absorbed.events(), held.events());
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
        absorbed.prune(at - held.horizon());
        assert_eq!(absorbed.events(), held.events());
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
                assert_eq!(absorbed.values_at(e, t), held.values_at(e, t), "{e} at {t}");
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

    /// Once trimmed, an event of a float column costs its time and its value (a missing value
    /// is NaN, no flag), one of an integer column with missing values a flag more, and an
    /// entity a bounded overhead besides.
    #[test]
    fn held_events_cost_their_time_and_values_and_little_more() {
        let rows = 100_000;
        let entities = 1_000;
        let users: Vec<String> = (0..rows).map(|i| format!("u{}", i % entities)).collect();
        let ts: Vec<i64> = (0..rows).map(|i| i as i64 * 1_000).collect();
        let amount: Vec<Option<f64>> = (0..rows).map(|i| (i % 10 != 0).then_some(1.5)).collect();
        let qty: Vec<Option<i64>> = (0..rows).map(|i| (i % 10 != 0).then_some(2)).collect();
        let frame = DataFrame::new(
            rows,
            vec![
                Column::new("user_id".into(), &users),
                Int64Chunked::from_vec("ts".into(), ts)
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_column(),
                Column::new("amount".into(), &amount),
                Column::new("qty".into(), &qty),
            ],
        )
        .unwrap();
        let output = |column: &str| Output {
            name: format!("{column}_sum"),
            column: column.into(),
            function: Function::Sum,
            window_micros: 1_000_000_000,
        };
        // Per entity: the map's buckets (at most twice the entities, 89 bytes each with the
        // control byte), the key and one column's enum: about 250 bytes here.
        let entity_overhead = 320 * entities;
        for (column, per_event) in [("amount", 16), ("qty", 17)] {
            let mut held = Held::new(vec![output(column)]);
            let mut read = held.empty_like();
            read.add(&frame, "user_id", "ts").unwrap();
            read.trim();
            held.absorb(read);
            assert_eq!(held.events(), rows);
            let bytes = held.bytes();
            assert!(bytes >= per_event * rows, "{column}: {bytes} bytes");
            assert!(
                bytes <= per_event * rows + entity_overhead,
                "{column}: {bytes} bytes for {rows} events"
            );
        }
        // Untrimmed, the vectors keep what doubling left, at most twice what they hold.
        let mut grown = Held::new(vec![output("amount")]);
        grown.add(&frame, "user_id", "ts").unwrap();
        assert!(grown.bytes() <= 2 * 16 * rows + 8 * 16 * entities + entity_overhead);
    }

    /// A stream's events for an entity nothing else holds keep their offsets (so their commit
    /// takes them out again), a row without a time makes no entity, and missing values stay
    /// missing when reads are absorbed, whichever side had them.
    #[test]
    fn streamed_offsets_and_missing_values_survive_new_entities_and_absorbing() {
        let frame = |users: &[&str], ts: &[Option<i64>], qty: &[Option<i64>]| {
            DataFrame::new(
                users.len(),
                vec![
                    Column::new("user_id".into(), users),
                    Int64Chunked::from_iter_options("ts".into(), ts.iter().copied())
                        .into_datetime(TimeUnit::Microseconds, None)
                        .into_column(),
                    Column::new("qty".into(), qty),
                ],
            )
            .unwrap()
        };
        let outputs: Vec<Output> = [Function::Count, Function::Sum]
            .iter()
            .map(|&f| Output {
                name: format!("{f:?}"),
                column: "qty".into(),
                function: f,
                window_micros: 100,
            })
            .collect();
        let answer = |held: &Held, user: &str| -> serde_json::Value {
            serde_json::from_str(&held.values_at(user, 50)).unwrap()
        };
        // From a stream only: both events carry their offsets and leave with their commit.
        let mut held = Held::new(outputs.clone());
        let streamed = frame(&["s", "s"], &[Some(1), Some(2)], &[Some(1), None]);
        held.add_from(&streamed, "user_id", "ts", Some(&[1, 2]))
            .unwrap();
        assert_eq!(answer(&held, "s")["Count"], 1);
        held.remove_offsets(0, 2);
        assert_eq!(held.events(), 0);
        assert_eq!(answer(&held, "s")["Count"], 0);
        // A row with a key and no time is no event and makes no entity.
        held.add(&frame(&["n"], &[None], &[Some(7)]), "user_id", "ts")
            .unwrap();
        assert_eq!(held.events(), 0);
        // Missing values on either side of an absorb stay missing.
        for (first, second) in [
            ([Some(5), Some(6)], [None, Some(3)]),
            ([None, Some(6)], [Some(5), Some(3)]),
        ] {
            let mut held = Held::new(outputs.clone());
            held.add(
                &frame(&["u", "u"], &[Some(1), Some(2)], &first),
                "user_id",
                "ts",
            )
            .unwrap();
            let mut read = held.empty_like();
            read.add(
                &frame(&["u", "u"], &[Some(3), Some(4)], &second),
                "user_id",
                "ts",
            )
            .unwrap();
            held.absorb(read);
            let got = answer(&held, "u");
            assert_eq!(got["Count"], 3, "{first:?} then {second:?}: {got}");
            assert_eq!(got["Sum"], 14, "{first:?} then {second:?}: {got}");
        }
    }
}
