//! Online answers of aggregation features, exact at the instant of the request.
//!
//! Each replica holds, per aggregation feature it has been asked for, the events that a window
//! ending now or later can still hold (`engine::held`), read from the raw table by a worker.
//! Before answering, a request checks the change epoch the cache serves under (every ingest
//! moves it, on every replica, before it is acknowledged); when it moved, the table's newest
//! version is read from the database, and the files added since the held version are read by
//! a worker and added. So an acknowledged ingest is in the next answer on every replica, as
//! the read-your-writes contract of SQL features says, and a restarted replica or a new one
//! builds what it holds from the table: nothing is lost or counted twice, since what is held
//! is exactly the files it has read.
//!
//! A table that follows a stream also gives its events before their commit (`live`): each
//! state knows, for each of the stream's lanes, up to which offset it holds every valid event
//! (`stream_upto`), takes the events after it as the replica reads them, and, reading the
//! table's new files, leaves out what it holds twice (`plan_reads`): a NATS stream's file
//! names its offsets and is skipped when they are all held; a Kafka topic's files are read,
//! and the events taken before their commit up to each partition's committed offset are taken
//! out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::live::{lane_offset, lane_range, Live, TableLive};
use super::AppState;
use super::{blocking, lookup, raw_tables, Result, ServiceError};
use crate::cache::Epoch;
use crate::engine::aggregations::{self, Output, Requested};
use crate::engine::held::Held;
use crate::engine::schema::TableSchema;
use crate::engine::training::Format;
use crate::model::{Aggregation, Declaration};
use crate::store::{FeatureRow, Store};
use crate::worker::protocol::{
    AggregatedSource, EventsJob, Job, Task, TrainingFeature, TrainingJob,
};

/// Events this much older than the longest window are kept too, so a clock read a little
/// behind another replica's never asks for an event already dropped.
const MARGIN_MICROS: i64 = 60_000_000;

/// What this replica holds, by feature name.
#[derive(Default)]
pub struct Online {
    features: RwLock<HashMap<String, Arc<FeatureHeld>>>,
    /// Whether `features` ever held one: until then a SQL feature's request pays one load
    /// instead of a lock.
    any: std::sync::atomic::AtomicBool,
}

struct FeatureHeld {
    feature_id: i64,
    table_id: i64,
    /// The events of the table's stream not committed yet, when this replica reads them
    /// (`live`): their generation is this state's for good; another one builds it afresh.
    live: Option<Arc<TableLive>>,
    /// One catch-up at a time; answers read `state` meanwhile.
    refresh: tokio::sync::Mutex<()>,
    state: tokio::sync::RwLock<State>,
}

struct State {
    held: Held,
    source: AggregatedSource,
    /// The table's files already read into `held`.
    files: HashSet<String>,
    /// The table version those files make, and when it was recorded.
    version: i64,
    data_as_of: Option<DateTime<Utc>>,
    /// The epoch under which the table was last found at `version`.
    checked: Option<Epoch>,
    /// With `live`, for each lane: every valid event of the lane with an offset up to this
    /// one is held, once (read from the table's files, or taken from `live` before its
    /// commit), and none after it. `None` until the table was first read.
    stream_upto: Option<Vec<i64>>,
    /// Each lane's committed offset at `version` (its `txn`).
    txns: Vec<Option<i64>>,
}

/// An online answer: the values at `evaluated_at`.
pub struct Answer {
    pub values: String,
    pub evaluated_at: DateTime<Utc>,
    pub data_as_of: Option<DateTime<Utc>>,
}

impl Online {
    fn get(&self, name: &str) -> Option<Arc<FeatureHeld>> {
        self.features.read().map_or_else(
            |p| p.into_inner().get(name).cloned(),
            |m| m.get(name).cloned(),
        )
    }

    /// Whether `name` is an aggregation feature this replica holds events for: its requests
    /// go straight to `values`, without a version lookup.
    pub fn holds(&self, name: &str) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.features.read().map_or_else(
            |p| p.into_inner().contains_key(name),
            |m| m.contains_key(name),
        )
    }

    /// The key column of aggregation feature `name`, when this replica holds it.
    pub async fn entity_key(&self, name: &str) -> Option<String> {
        let held = self.get(name)?;
        let key = held.state.read().await.source.entity_key.clone();
        Some(key)
    }

    fn put(&self, name: &str, held: Option<Arc<FeatureHeld>>) {
        let mut map = match self.features.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match held {
            Some(h) => {
                self.any.store(true, std::sync::atomic::Ordering::Relaxed);
                map.insert(name.to_string(), h)
            }
            None => map.remove(name),
        };
    }

    /// Drop what is held for feature `id` (deleted here; other replicas drop theirs when next
    /// asked for its name).
    pub fn forget(&self, id: i64) {
        let mut map = match self.features.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, h| h.feature_id != id);
    }

    /// Events held by this replica, over every feature.
    async fn total_events(&self) -> usize {
        let all: Vec<Arc<FeatureHeld>> = match self.features.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        let mut n = 0;
        for f in all {
            n += f.state.read().await.held.events();
        }
        n
    }
}

/// The values of aggregation feature `name` for each entity at this instant; `None` when
/// `name` is not an aggregation feature (the caller answers as for any other name).
pub async fn values(
    state: &AppState,
    name: &str,
    entities: &[&str],
) -> Result<Option<Vec<Answer>>> {
    let epoch = state.cache.epoch().await;
    let held = match state.online.get(name) {
        Some(h) if epoch.is_some() && h.is_current(&state.live) && h.checked(epoch).await => h,
        _ => match refresh(state, name, epoch).await? {
            Some(h) => h,
            None => return Ok(None),
        },
    };
    if held.behind_live().await {
        take_newest(&held).await;
    }
    let now = state.clock.now();
    let at = now.timestamp_micros();
    let s = held.state.read().await;
    Ok(Some(
        entities
            .iter()
            .map(|e| Answer {
                values: s.held.values_at(e, at),
                evaluated_at: now,
                data_as_of: s.data_as_of,
            })
            .collect(),
    ))
}

/// Bring what is held for `name` up to the table's newest version (building it on first
/// use); `None` when `name` is not an aggregation feature.
async fn refresh(
    state: &AppState,
    name: &str,
    epoch: Option<Epoch>,
) -> Result<Option<Arc<FeatureHeld>>> {
    let Some(feature) = state.store.feature_by_name(name).await? else {
        state.online.put(name, None);
        return Ok(None);
    };
    if feature.declaration.is_none() {
        state.online.put(name, None);
        return Ok(None);
    }
    let held = match state.online.get(name) {
        // A feature deleted and registered again under the name is another feature; a stream
        // set again (or stopped) is read afresh.
        Some(h) if h.feature_id == feature.id && h.is_current(&state.live) => h,
        _ => {
            let source = source_of(&state.store, &feature).await?;
            let fresh = Arc::new(FeatureHeld {
                feature_id: feature.id,
                table_id: feature.raw_table_id,
                live: state.live.table(feature.raw_table_id),
                refresh: tokio::sync::Mutex::new(()),
                state: tokio::sync::RwLock::new(State {
                    held: Held::new(source.outputs.clone()),
                    source,
                    files: HashSet::new(),
                    version: -1,
                    data_as_of: None,
                    checked: None,
                    stream_upto: None,
                    txns: Vec::new(),
                }),
            });
            state.online.put(name, Some(fresh.clone()));
            fresh
        }
    };
    let one = held.clone();
    let _one = one.refresh.lock().await;
    if epoch.is_some() && held.state.read().await.checked == epoch {
        return Ok(Some(held));
    }
    let table = lookup::table(&state.store, held.table_id).await?;
    let newest = state.store.newest_table_version(table.id).await?;
    let (known, data_as_of) = newest.map_or((0, None), |v| (v.version, Some(v.created_at)));
    let (version, horizon) = {
        let s = held.state.read().await;
        (s.version, s.held.horizon())
    };
    let after = state.clock.now().timestamp_micros() - horizon - MARGIN_MICROS;
    let mut committed: Vec<Option<i64>> = Vec::new();
    if known > version {
        let apps = held.live.as_ref().map_or(&[][..], |l| l.apps.as_slice());
        if let Some((pinned, _)) = raw_tables::pin_with(state, &table, apps).await? {
            let new_files: Vec<String> = {
                let s = held.state.read().await;
                pinned
                    .files
                    .iter()
                    .filter(|f| !s.files.contains(*f))
                    .cloned()
                    .collect()
            };
            // Only a state that takes the stream's events before their commit skips files.
            let plan = match &held.live {
                Some(live) => {
                    let s = held.state.read().await;
                    let held_before = Stream {
                        upto: s.stream_upto.as_deref(),
                        txns: &s.txns,
                        nothing: live.nothing,
                    };
                    plan_reads(&new_files, held_before, &pinned.txns)
                }
                None => Reads {
                    read: new_files.clone(),
                    remove: Vec::new(),
                    stream_upto: Vec::new(),
                },
            };
            let read = match plan.read.is_empty() {
                true => None,
                false => {
                    Some(read_events(state, &held, &plan.read, pinned.partitioned, after).await?)
                }
            };
            // One write: an answer sees the events taken before the commit or the file
            // holding them, never neither.
            let mut s = held.state.write().await;
            for (lo, hi) in plan.remove {
                s.held.remove_offsets(lo, hi);
            }
            if let Some(read) = read {
                s.held.absorb(read);
            }
            s.files.extend(new_files);
            s.version = pinned.version;
            s.stream_upto = Some(plan.stream_upto);
            s.txns = pinned.txns.clone();
            committed = pinned.txns;
        }
    }
    let mut s = held.state.write().await;
    s.held.prune(after);
    s.data_as_of = data_as_of.or(s.data_as_of);
    s.checked = epoch;
    if let (None, Some(live)) = (&s.stream_upto, &held.live) {
        // A table with no rows yet: every event of the stream is still to come.
        s.stream_upto = Some(vec![live.nothing; live.lanes()]);
    }
    drop(s);
    if let Some(live) = &held.live {
        for (lane, committed) in committed.iter().enumerate() {
            if let Some(committed) = committed {
                live.trim(lane, *committed);
            }
        }
    }
    drop(_one);
    if held.behind_live().await {
        take_newest(&held).await;
    }
    Ok(Some(held))
}

/// `take_live` before an answer: events a failure left out are left to the next take, and the
/// answer is what is held (the table's committed events at least).
async fn take_newest(held: &FeatureHeld) {
    if let Err(e) = take_live(held).await {
        tracing::warn!(feature_id = held.feature_id, error = %e, "could not take a stream's events");
    }
}

/// Which of a table's new files to read, given what is held of its stream.
#[derive(Debug, PartialEq)]
struct Reads {
    read: Vec<String>,
    /// Take out the stream's events held with these offsets (`lane_range`s) before reading:
    /// a file read holds them.
    remove: Vec<(i64, i64)>,
    /// Each lane's offset every held event of it is at or before, after the reads.
    stream_upto: Vec<i64>,
}

/// What a state held of a table's stream before reading its new files.
#[derive(Clone, Copy)]
struct Stream<'a> {
    /// Each lane's `State::stream_upto`; `None` before the table was first read.
    upto: Option<&'a [i64]>,
    /// Each lane's committed offset at the version last read (`State::txns`).
    txns: &'a [Option<i64>],
    /// A lane's offset when nothing was committed.
    nothing: i64,
}

/// `txns` are the stream's committed offsets at the version to read, one per lane.
///
/// One lane (a NATS stream, a one-partition topic): a file the stream committed names its
/// offsets `(a, b]`; when every event up to `b` is held already (taken before the commit), it
/// is skipped; otherwise it is read, and the events after `a` held from the stream are taken
/// out (the file holds them). Any other file is read. The lane's `txn` covers files named
/// before streams named theirs.
///
/// Several lanes (a Kafka topic's partitions): a commit's file holds several lanes' offsets
/// and says only that (`holds_lanes`). When every lane's events up to its committed offset
/// are held already, those files are skipped; otherwise every new file is read, and each
/// lane's events held from the stream between its committed offset before and after are
/// taken out (the files hold them). Any other file is read.
fn plan_reads(new_files: &[String], held: Stream<'_>, txns: &[Option<i64>]) -> Reads {
    if txns.len() != 1 {
        let committed = |lane: usize| txns[lane].unwrap_or(held.nothing);
        let all_held = held.upto.is_some_and(|upto| {
            (0..txns.len()).all(|lane| upto.get(lane).is_some_and(|u| *u >= committed(lane)))
        });
        if all_held {
            return Reads {
                read: new_files
                    .iter()
                    .filter(|f| !crate::offline::holds_lanes(f))
                    .cloned()
                    .collect(),
                remove: Vec::new(),
                stream_upto: held.upto.map(<[i64]>::to_vec).unwrap_or_default(),
            };
        }
        let mut remove = Vec::new();
        let mut stream_upto = Vec::with_capacity(txns.len());
        for lane in 0..txns.len() {
            let now = committed(lane);
            let before = held
                .txns
                .get(lane)
                .copied()
                .flatten()
                .unwrap_or(held.nothing);
            let upto = held.upto.and_then(|u| u.get(lane).copied());
            if let Some(upto) = upto.filter(|u| *u > before && now > before) {
                remove.push(lane_range(lane, before, Some(now.min(upto))));
            }
            stream_upto.push(upto.unwrap_or(held.nothing).max(now));
        }
        return Reads {
            read: new_files.to_vec(),
            remove,
            stream_upto,
        };
    }
    let txn = txns.first().copied().flatten();
    let mut upto = held
        .upto
        .and_then(|u| u.first().copied())
        .unwrap_or(i64::MIN);
    let mut named: Vec<(i64, i64, &String)> = Vec::new();
    let mut read = Vec::new();
    for file in new_files {
        match crate::offline::stream_range(file) {
            Some((a, b)) => named.push((b, a, file)),
            None => read.push(file.clone()),
        }
    }
    named.sort();
    let mut remove_after: Option<i64> = None;
    for (b, a, file) in named {
        if b <= upto {
            continue;
        }
        if a < upto {
            remove_after = Some(remove_after.map_or(a, |r| r.min(a)));
        }
        read.push(file.clone());
        upto = b;
    }
    if let Some(c) = txn {
        if c > upto {
            // Committed offsets in files read above that do not say theirs.
            if upto > i64::MIN {
                remove_after = Some(remove_after.map_or(upto, |r| r.min(upto)));
            }
            upto = c;
        }
    }
    Reads {
        read,
        remove: remove_after
            .map(|after| lane_range(0, after, None))
            .into_iter()
            .collect(),
        stream_upto: vec![upto.max(held.nothing)],
    }
}

impl FeatureHeld {
    /// Whether this state reads the table's stream as this replica does now.
    fn is_current(&self, live: &Live) -> bool {
        match (&self.live, live.table(self.table_id)) {
            (None, None) => true,
            (Some(mine), Some(now)) => Arc::ptr_eq(mine, &now),
            _ => false,
        }
    }

    async fn checked(&self, epoch: Option<Epoch>) -> bool {
        self.state.read().await.checked == epoch
    }

    /// Whether the stream has events this state has not taken.
    async fn behind_live(&self) -> bool {
        let Some(live) = &self.live else {
            return false;
        };
        self.state
            .read()
            .await
            .stream_upto
            .as_ref()
            .is_some_and(|held| live.read_past(held))
    }
}

/// The offset column the stream's rows carry through the feature's filter (`lane_offset`s).
const OFFSET_COLUMN: &str = "__feature_store_offset";

/// Add the stream's events this state has not taken yet (read by this replica, not committed
/// yet), from every lane: the feature's filter and key applied in this process, to at most
/// the table's bound of uncommitted events (`live`).
async fn take_live(held: &FeatureHeld) -> Result<()> {
    let Some(live) = &held.live else {
        return Ok(());
    };
    let _one = held.refresh.lock().await;
    let (upto, source) = {
        let s = held.state.read().await;
        match &s.stream_upto {
            Some(upto) => (upto.clone(), s.source.clone()),
            None => return Ok(()),
        }
    };
    let mut taken = upto.clone();
    let mut runs = Vec::new();
    for (lane, after) in upto.iter().enumerate() {
        // `None`: events after `after` were committed and dropped here; the next read of the
        // table's files takes them.
        if let Some((chunks, last)) = live.since(lane, *after) {
            if !chunks.is_empty() {
                runs.push((lane, *after, chunks));
            }
            taken[lane] = last;
        }
    }
    if taken == upto {
        return Ok(());
    }
    let events = if runs.is_empty() {
        None
    } else {
        Some(
            blocking(move || live_events(&runs, &source))
                .await?
                .map_err(ServiceError::fault)?,
        )
    };
    let mut s = held.state.write().await;
    if s.stream_upto.as_ref() != Some(&upto) {
        return Ok(());
    }
    if let Some(events) = events {
        let offsets: Vec<i64> = events
            .column(OFFSET_COLUMN)
            .and_then(|c| c.i64().map(|o| o.into_no_null_iter().collect()))
            .map_err(ServiceError::fault)?;
        let (key, time) = (s.source.entity_key.clone(), s.source.event_time.clone());
        s.held
            .add_from(&events, &key, &time, Some(&offsets))
            .map_err(ServiceError::fault)?;
    }
    s.stream_upto = Some(taken);
    Ok(())
}

/// A lane's chunks, and the offset of it after which their events are taken.
type LaneRun = (usize, i64, Vec<Arc<super::live::Chunk>>);

/// The events of each lane's chunks after its offset that the feature reads, with their
/// `lane_offset`s.
fn live_events(
    runs: &[LaneRun],
    source: &AggregatedSource,
) -> std::result::Result<polars::prelude::DataFrame, String> {
    use polars::prelude::*;
    let err = |e: PolarsError| e.to_string();
    let mut all: Option<DataFrame> = None;
    for (lane, after, chunks) in runs {
        for (i, chunk) in chunks.iter().enumerate() {
            let mut frame = chunk.frame.clone();
            let offsets: Vec<i64> = chunk
                .offsets
                .iter()
                .map(|o| lane_offset(*lane, *o))
                .collect();
            frame
                .with_column(Column::new(OFFSET_COLUMN.into(), offsets))
                .map_err(err)?;
            if i == 0 && chunk.offsets.first().is_some_and(|o| o <= after) {
                let keep = frame
                    .column(OFFSET_COLUMN)
                    .map_err(err)?
                    .as_materialized_series()
                    .gt(lane_offset(*lane, *after))
                    .map_err(err)?;
                frame = frame.filter(&keep).map_err(err)?;
            }
            match &mut all {
                Some(all) => {
                    all.vstack_mut(&frame).map_err(err)?;
                }
                None => all = Some(frame),
            }
        }
    }
    let events = all.unwrap_or_default();
    let plain = crate::keys::EntityKey::from_stored(&source.entity_key)
        .single()
        .is_some();
    if source.filter.is_none() && plain {
        // The common case needs no query: a run is read many times a second.
        let mut needed = crate::engine::aggregations::needed_columns(
            &source.entity_key,
            &source.event_time,
            &source.outputs,
        );
        needed.push(OFFSET_COLUMN.to_string());
        return events.select(needed).map_err(err);
    }
    let events = events.lazy();
    let query = crate::engine::aggregations::EventsQuery {
        entity_key: &source.entity_key,
        event_time: &source.event_time,
        filter: source.filter.as_deref(),
        outputs: &source.outputs,
    };
    crate::engine::aggregations::select_events(
        events,
        &query,
        Some(OFFSET_COLUMN),
        Engine::InMemory,
    )
    .map_err(|e| match e {
        crate::engine::aggregations::SelectError::Filter(e)
        | crate::engine::aggregations::SelectError::Input(e) => e,
    })
}

/// Take the new events of `raw_table_id`'s stream into every state held over the table (the
/// stream's reader calls this after each run of messages, so answers need not).
pub async fn take_table_live(online: &Online, raw_table_id: i64) {
    let held: Vec<Arc<FeatureHeld>> = {
        let map = online.features.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|h| h.table_id == raw_table_id)
            .cloned()
            .collect()
    };
    for h in held {
        if h.behind_live().await {
            if let Err(e) = take_live(&h).await {
                tracing::warn!(raw_table_id, error = %e, "could not take a stream's events");
            }
        }
    }
}

/// Read `files`' events after `after` in a worker, into a `Held` apart from the one answers
/// read (`Held::absorb` moves them in). The worker sends them in batches, each added before
/// the next is read, so this replica holds one batch of the answer at a time besides the
/// events, and stops the worker as soon as the events pass `AGGREGATION_MAX_HELD_EVENTS`.
async fn read_events(
    state: &AppState,
    held: &FeatureHeld,
    files: &[String],
    partitioned: bool,
    after: i64,
) -> Result<Held> {
    let (mut source, mut staged) = {
        let s = held.state.read().await;
        (s.source.clone(), s.held.empty_like())
    };
    source.files = files.to_vec();
    source.partitioned = partitioned;
    let (key, time) = (source.entity_key.clone(), source.event_time.clone());
    let job = Job {
        task: Task::Events(EventsJob {
            source,
            after_micros: after,
        }),
        storage: state.offline.options().clone(),
    };
    let failed = |e| super::failures::worker_error(e, "Reading the feature's events failed");
    let started = std::time::Instant::now();
    let mut adding = std::time::Duration::ZERO;
    let admitted = state.compute.admit().await.map_err(failed)?;
    let spawned = std::time::Instant::now();
    let mut running = state
        .compute
        .start(admitted, &job, None)
        .await
        .map_err(failed)?;
    // The worker replies once it has read and ordered the events, before it sends them.
    let worker_ms = spawned.elapsed().as_millis() as u64;
    let worker_peak_rss_mib = running.reply().peak_rss_kib / 1024;
    // Past the limit a feature's events are not loaded and its online answers are refused
    // (its training sets are not limited by this).
    let held_before = state.online.total_events().await;
    let limit = state.config.aggregation_max_held_events;
    let too_many = |n: usize| {
        ServiceError::Invalid(format!(
            "Serving this feature online would hold more events on this replica than \
             AGGREGATION_MAX_HELD_EVENTS ({limit}): {n} with those held already; its training \
             sets are not limited by this"
        ))
    };
    if held_before + running.reply().rows > limit {
        let rows = running.reply().rows;
        running.stop().await;
        return Err(too_many(held_before + rows));
    }
    while let Some(batch) = running.next_blob().await.map_err(failed)? {
        let (key, time) = (key.clone(), time.clone());
        let added = std::time::Instant::now();
        staged = blocking(move || {
            use polars::prelude::{IpcReader, SerReader};
            let frame = IpcReader::new(std::io::Cursor::new(batch))
                .finish()
                .map_err(|e| e.to_string())?;
            staged.add(&frame, &key, &time)?;
            Ok::<Held, String>(staged)
        })
        .await?
        .map_err(ServiceError::fault)?;
        adding += added.elapsed();
        if held_before + staged.events() > limit {
            running.stop().await;
            return Err(too_many(held_before + staged.events()));
        }
    }
    running.finish().await.map_err(failed)?;
    let (staged, bytes) = blocking(move || {
        staged.trim();
        let bytes = staged.bytes();
        (staged, bytes)
    })
    .await?;
    tracing::info!(
        feature_id = held.feature_id,
        files = files.len(),
        events_read = staged.events(),
        bytes,
        worker_ms,
        worker_peak_rss_mib,
        adding_ms = adding.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "online events read"
    );
    Ok(staged)
}

/// The output columns of declared aggregations over a table of `schema`, or what is wrong
/// with them.
pub(crate) fn plan(
    aggregations: &[Aggregation],
    schema: &TableSchema,
) -> std::result::Result<Vec<Output>, String> {
    let requested: Vec<Requested> = aggregations
        .iter()
        .map(|a| Requested {
            column: &a.column,
            function: &a.function,
            q: a.q,
            windows: &a.windows,
        })
        .collect();
    aggregations::plan(&requested, schema)
}

/// Where the feature's events are and what is computed from them (the files are filled in
/// per read).
pub(crate) async fn source_of(store: &Store, feature: &FeatureRow) -> Result<AggregatedSource> {
    let declaration: Declaration =
        serde_json::from_str(feature.declaration.as_deref().unwrap_or(""))
            .map_err(ServiceError::fault)?;
    let table = lookup::table(store, feature.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    // Checked at registration against the same schema (tables' schemas do not change).
    let outputs = plan(&declaration.aggregations, &schema).map_err(ServiceError::fault)?;
    let event_time = table.event_time_column.clone().ok_or_else(|| {
        ServiceError::fault("an aggregation feature's table without an event time column")
    })?;
    Ok(AggregatedSource {
        files: Vec::new(),
        partitioned: false,
        schema: raw_tables::definition_of(&table)?,
        entity_key: feature.entity_key.clone(),
        event_time,
        filter: declaration.filter,
        outputs,
    })
}

/// A single-vector answer: `{"entity_id", "feature_values", "feature_version_id": null,
/// "computed_at" and "evaluated_at" (the instant the values hold at), "data_as_of", "stale":
/// false}`. Such values are never stale: they are computed at the request.
pub fn encode(entity: &str, answer: &Answer) -> Result<bytes::Bytes> {
    let at = crate::times::format_ts(&answer.evaluated_at);
    let mut out = String::with_capacity(answer.values.len() + entity.len() + 160);
    out.push_str("{\"entity_id\":");
    out.push_str(&serde_json::to_string(entity).map_err(ServiceError::fault)?);
    out.push_str(",\"feature_values\":");
    out.push_str(&answer.values);
    out.push_str(",\"feature_version_id\":null,\"computed_at\":\"");
    out.push_str(&at);
    out.push_str("\",\"evaluated_at\":\"");
    out.push_str(&at);
    out.push_str("\",");
    out.push_str(
        &crate::served::Freshness {
            data_as_of: answer.data_as_of,
            stale: false,
        }
        .json_fields(),
    );
    out.push('}');
    Ok(bytes::Bytes::from(out))
}

/// The values of aggregation feature `name` for each entity at a past instant `at` (`as_of`),
/// computed as a training set's rows at `at` would be, in a worker over the table's current
/// version; `None` when `name` is not an aggregation feature.
pub async fn values_at(
    state: &AppState,
    name: &str,
    entities: &[&str],
    at: DateTime<Utc>,
) -> Result<Option<Vec<Answer>>> {
    let Some(feature) = state.store.feature_by_name(name).await? else {
        return Ok(None);
    };
    if feature.declaration.is_none() {
        return Ok(None);
    }
    let table = lookup::table(&state.store, feature.raw_table_id).await?;
    let mut source = source_of(&state.store, &feature).await?;
    let newest = state.store.newest_table_version(table.id).await?;
    if let Some((pinned, _)) = raw_tables::pin(state, &table).await? {
        source.files = pinned.files;
        source.partitioned = pinned.partitioned;
    }
    let timestamp = crate::times::format_ts(&at);
    let rows: Vec<serde_json::Value> = entities
        .iter()
        .map(|e| serde_json::json!({"entity_id": e, "timestamp": timestamp}))
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({ "rows": rows })).map_err(ServiceError::fault)?;
    let job = Job {
        task: Task::Training(TrainingJob {
            input: Format::Json,
            output: Format::Json,
            max_age_micros: None,
            features: vec![TrainingFeature {
                reference: name.to_string(),
                version_id: None,
                unresolved: None,
                entity_key: None,
                snapshots: Vec::new(),
                aggregated: Some(source),
            }],
            labels: None,
            dataset: None,
            pass_events: 0,
        }),
        storage: state.offline.options().clone(),
    };
    let failed = |e| super::failures::worker_error(e, "Computing the values failed");
    let admitted = state.compute.admit().await.map_err(failed)?;
    let mut running = state
        .compute
        .start(admitted, &job, Some(&body))
        .await
        .map_err(failed)?;
    let mut answer = Vec::new();
    while let Some(frame) = running.next_frame().await.map_err(failed)? {
        answer.extend_from_slice(&frame);
    }
    running.finish().await.map_err(failed)?;
    let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(ServiceError::fault)?;
    let data_as_of = newest.map(|v| v.created_at);
    Ok(Some(
        (0..entities.len())
            .map(|i| Answer {
                values: answer["rows"][i]["features"][name].to_string(),
                evaluated_at: at,
                data_as_of,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("/data/t/{n}")).collect()
    }

    fn nats(upto: Option<&[i64]>) -> Stream<'_> {
        Stream {
            upto,
            txns: &[],
            nothing: 0,
        }
    }

    /// Lane 0's offsets after `after`, as the state takes them out.
    fn after(after: i64) -> Vec<(i64, i64)> {
        vec![lane_range(0, after, None)]
    }

    #[test]
    fn a_streams_file_is_read_only_for_the_offsets_not_held_before_its_commit() {
        let f = files(&[
            "part-1-a-o0-10.zstd.parquet",
            "part-2-b.zstd.parquet",
            "part-3-c-o10-20.zstd.parquet",
        ]);
        // Nothing held yet: every file is read.
        let all = plan_reads(&f, nats(None), &[Some(20)]);
        assert_eq!(all.read.len(), 3);
        assert_eq!((all.remove, all.stream_upto), (vec![], vec![20]));
        // Held up to 20 before the commits: only the HTTP ingest's file is read.
        let held = plan_reads(&f, nats(Some(&[25])), &[Some(20)]);
        assert_eq!(held.read, files(&["part-2-b.zstd.parquet"]));
        assert_eq!((held.remove, held.stream_upto), (vec![], vec![25]));
        // Held up to 15: (10, 20] is read, and the events after 10 taken before are dropped.
        let part = plan_reads(&f, nats(Some(&[15])), &[Some(20)]);
        assert_eq!(
            part.read,
            files(&["part-2-b.zstd.parquet", "part-3-c-o10-20.zstd.parquet"])
        );
        assert_eq!((part.remove, part.stream_upto), (after(10), vec![20]));
        // A stream's file from before files named their offsets: the transaction says.
        let old = plan_reads(
            &files(&["part-4-d.zstd.parquet"]),
            nats(Some(&[20])),
            &[Some(30)],
        );
        assert_eq!((old.remove, old.stream_upto), (after(20), vec![30]));
    }

    #[test]
    fn a_topics_files_are_read_and_each_partitions_events_taken_before_their_commit_go() {
        let f = files(&["part-1-a-lanes.zstd.parquet", "part-2-b.zstd.parquet"]);
        // Nothing held yet: every file is read, each partition from its committed offset.
        let first = Stream {
            upto: None,
            txns: &[],
            nothing: -1,
        };
        let all = plan_reads(&f, first, &[Some(9), None, Some(3)]);
        assert_eq!(all.read, f);
        assert_eq!((all.remove, all.stream_upto), (vec![], vec![9, -1, 3]));
        // Committed at 9, -1 and 3 before; taken since up to 15, 4 and 3; committed now at
        // 12, 6 and 3: partition 0's (9, 12] and partition 1's (-1, 4] taken are the files'.
        let before = [Some(9), None, Some(3)];
        let held = Stream {
            upto: Some(&[15, 4, 3]),
            txns: &before,
            nothing: -1,
        };
        let next = plan_reads(&f, held, &[Some(12), Some(6), Some(3)]);
        assert_eq!(next.read, f);
        assert_eq!(
            next.remove,
            vec![lane_range(0, 9, Some(12)), lane_range(1, -1, Some(4))]
        );
        assert_eq!(next.stream_upto, vec![15, 6, 3]);
        // Held past every partition's commit: the topic's file is skipped, the HTTP ingest's
        // read.
        let ahead = Stream {
            upto: Some(&[15, 7, 3]),
            txns: &before,
            nothing: -1,
        };
        let skip = plan_reads(&f, ahead, &[Some(12), Some(6), Some(3)]);
        assert_eq!(skip.read, files(&["part-2-b.zstd.parquet"]));
        assert_eq!((skip.remove, skip.stream_upto), (vec![], vec![15, 7, 3]));
    }
}
