//! Following streams. Every replica runs `spawn`'s loop, which keeps one follower per stream;
//! the follower that holds the stream's lease reads the source and commits micro-batches, the
//! others wait to take over.
//!
//! Exactly once: a batch's rows go into the table in one Delta commit whose application
//! transactions (`txn`, as Spark's Delta sink writes; one per lane, a Kafka partition) record
//! the last offset of the batch in each lane; its rejected messages go into the rejected
//! dataset the same way, first. A follower starting
//! (after a restart, a SIGKILL, a takeover) reads both numbers and resumes after the rows',
//! leaving out the rejected messages the rejected dataset already holds: nothing is lost,
//! nothing is written twice. (A long run of batches with no valid message at all is read
//! again after a restart, since only rows move the table's number.) A replica that
//! lost its lease while committing cannot write the same offsets twice either: Delta refuses a
//! commit whose `txn` app was committed by another writer since it read the table.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use polars::prelude::*;
use tokio::time::Instant;

use futures::FutureExt;

use super::super::ingest::{self, Stored, StreamTxn};
use super::super::live::{Chunk, Followed, Live, TableLive};
use super::super::{blocking, online, raw_tables, AppState, Shared};
use super::source::{self, LaneName, Reader, Received};
use crate::config::Config;
use crate::engine::messages::{self, Message, Sorted};
use crate::engine::schema::TableSchema;
use crate::metrics::TableLabels;
use crate::model::{StreamPartition, StreamSource};
use crate::offline::{self, Location, OfflineStore};
use crate::store::{RawTableRow, Store, StreamProgress, StreamRow};

/// The longest wait between tries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A micro-batch also commits once its messages hold this many bytes: with NATS's 1 MiB
/// messages, `max_batch_events` alone would let a batch hold gigabytes.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// A run is the messages the source has ready at once, up to this many: each run's rows are
/// served before their commit.
const MAX_RUN: usize = 2_000;

/// How often a follower renews its lease (and the supervisor looks for new streams).
fn tick(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Keep a follower running for every stream, on this replica, until the app is dropped.
pub fn spawn(state: &AppState) {
    let weak = Arc::downgrade(&state.0);
    let tick = tick(state.config.stream_lease);
    tokio::spawn(async move {
        let mut followers: HashMap<i64, (i64, tokio::task::JoinHandle<()>)> = HashMap::new();
        loop {
            let Some(shared) = weak.upgrade() else {
                followers.values().for_each(|(_, task)| task.abort());
                return;
            };
            let streams = shared.store.list_streams().await;
            drop(shared);
            match streams {
                Ok(streams) => {
                    // A stream deleted or changed: its follower stops, and its uncommitted
                    // events are dropped (a changed one starts again below, at the new
                    // generation).
                    let mut stopped = Vec::new();
                    followers.retain(|id, (generation, task)| {
                        let current = streams
                            .iter()
                            .any(|s| s.raw_table_id == *id && s.generation == *generation);
                        if !current {
                            task.abort();
                            stopped.push((*id, *generation));
                        }
                        current && !task.is_finished()
                    });
                    if let Some(shared) = weak.upgrade() {
                        for (id, generation) in stopped {
                            shared.live.stop(id, generation);
                        }
                    }
                    for stream in streams {
                        if !followers.contains_key(&stream.raw_table_id) {
                            let (id, generation) = (stream.raw_table_id, stream.generation);
                            let task = tokio::spawn(follow(weak.clone(), stream));
                            followers.insert(id, (generation, task));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list the streams to follow"),
            }
            tokio::time::sleep(tick).await;
        }
    });
}

/// Give up every stream lease this replica holds (at shutdown), so others take over at once.
pub async fn release(shared: &Shared) {
    let streams = match shared.store.list_streams().await {
        Ok(streams) => streams,
        Err(e) => {
            tracing::warn!(error = %e, "could not release the stream leases");
            return;
        }
    };
    for stream in streams
        .iter()
        .filter(|s| s.holder.as_deref() == Some(shared.scheduler_id.as_str()))
    {
        if let Err(e) = shared
            .store
            .release_stream_lease(stream.raw_table_id, &shared.scheduler_id)
            .await
        {
            tracing::warn!(error = %e, "could not release a stream lease");
        }
    }
}

/// Take or renew the stream's lease: `None` when the app is gone.
async fn hold(weak: &Weak<Shared>, row: &StreamRow) -> Option<bool> {
    let state = AppState(weak.upgrade()?);
    let held = state
        .store
        .hold_stream_lease(
            row.raw_table_id,
            row.generation,
            &state.scheduler_id,
            state.config.stream_lease.max(Duration::from_secs(1)),
            state.clock.now(),
        )
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not renew a stream lease");
            false
        });
    Some(held)
}

async fn report(weak: &Weak<Shared>, raw_table_id: i64, progress: StreamProgress) {
    let Some(state) = weak.upgrade().map(AppState) else {
        return;
    };
    if let Err(e) = state
        .store
        .record_stream_progress(
            raw_table_id,
            &state.scheduler_id,
            &progress,
            state.clock.now(),
        )
        .await
    {
        tracing::warn!(raw_table_id, error = %e, "could not record a stream's progress");
    }
}

/// One stream on this replica: wait for its lease, lead while holding it, back off after a
/// failure (renewing the lease meanwhile, so the stream shows `failing`, not orphaned).
async fn follow(weak: Weak<Shared>, row: StreamRow) {
    let Some(lease) = weak.upgrade().map(|s| s.config.stream_lease) else {
        return;
    };
    let tick = tick(lease);
    let mut failures = 0u32;
    loop {
        match hold(&weak, &row).await {
            None => return,
            Some(false) => {
                // Another replica commits; this one reads the stream too, to serve its
                // events before their commit, until it takes the lease.
                tail(&weak, &row, tick).await;
                continue;
            }
            Some(true) => {}
        }
        match lead(&weak, &row, tick).await {
            Ok(()) => failures = 0,
            Err(reason) => {
                failures += 1;
                tracing::warn!(raw_table_id = row.raw_table_id, %reason, "stream failing");
                report(
                    &weak,
                    row.raw_table_id,
                    StreamProgress {
                        status: "failing",
                        reason: Some(reason),
                        ..StreamProgress::default()
                    },
                )
                .await;
                let until = Instant::now() + backoff(failures);
                while Instant::now() < until {
                    tokio::time::sleep(tick.min(until - Instant::now())).await;
                    if hold(&weak, &row).await != Some(true) {
                        break;
                    }
                }
            }
        }
    }
}

/// 0.5 s after the first failure, doubling, at most `MAX_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// Where a stream commits, and how far each dataset got in each lane.
struct Target {
    table: RawTableRow,
    schema: TableSchema,
    rejected_at: Location,
    lanes: Vec<Lane>,
    /// The offset a lane's `txn` stands at when nothing was committed.
    nothing: i64,
}

struct Lane {
    name: LaneName,
    rows_upto: i64,
    rejected_upto: i64,
}

impl Target {
    /// How far the stream got: a NATS stream's offset, or each Kafka partition's offset and
    /// lag (as JSON for the store).
    fn progress(&self, kind: &str, pending: &[u64]) -> (Option<i64>, Option<String>) {
        let committed = |lane: &Lane| {
            Some(lane.rows_upto.max(lane.rejected_upto)).filter(|c| *c > self.nothing)
        };
        if kind == "nats" {
            return (self.lanes.first().and_then(committed), None);
        }
        let partitions: Vec<StreamPartition> = self
            .lanes
            .iter()
            .zip(pending)
            .map(|(lane, pending)| StreamPartition {
                partition: lane.name.partition.clone(),
                committed_offset: committed(lane),
                lag: Some(*pending as i64),
            })
            .collect();
        (None, serde_json::to_string(&partitions).ok())
    }
}

/// Read and commit while holding the lease. `Ok` when the lease is lost or the app is gone;
/// an error (shown as the stream's reason) when the source or a commit fails.
async fn lead(weak: &Weak<Shared>, row: &StreamRow, tick: Duration) -> Result<(), String> {
    let source: StreamSource = serde_json::from_str(&row.source).map_err(|e| e.to_string())?;
    let max_events = source.max_batch_events.unwrap_or(10_000) as usize;
    let (target, mut reader, live) = {
        let Some(state) = weak.upgrade().map(AppState) else {
            return Ok(());
        };
        let target = open_target(&state.store, &state.offline, &state.config, row, &source).await?;
        // Rejected messages commit before their batch's rows, so every message up to
        // `rows_upto` is in one of the two datasets; after it, only rejected ones can be
        // (a crash between the two commits, or batches of nothing but rejected messages),
        // and those are left out below.
        let from: Vec<i64> = target.lanes.iter().map(|l| l.rows_upto + 1).collect();
        let live = live_of(&state.live, row, &target, max_events);
        for (i, lane) in target.lanes.iter().enumerate() {
            live.start_at(i, lane.rows_upto + 1);
        }
        let names: Vec<LaneName> = target.lanes.iter().map(|l| l.name.clone()).collect();
        let reader = Reader::open(&source, &names, &from, auth(&state.config)).await?;
        (target, reader, live)
    };
    let schema = target.schema.clone();
    let lanes = target.lanes.len();
    let mut pending = vec![0u64; lanes];
    let (committed_offset, partitions) = target.progress(&source.kind, &pending);
    report(
        weak,
        row.raw_table_id,
        StreamProgress {
            status: "running",
            committed_offset,
            partitions,
            ..StreamProgress::default()
        },
    )
    .await;
    let interval = Duration::from_millis(u64::from(source.max_batch_interval_ms.unwrap_or(1000)));
    let mut batch: Vec<(usize, Sorted)> = Vec::new();
    let mut events = 0usize;
    let mut bytes = 0usize;
    let mut deadline: Option<Instant> = None;
    let mut renewed = Instant::now();
    let mut last_commit = Instant::now();
    let mut connected = true;
    // One commit at a time runs beside the reading, so a slow commit (a Delta checkpoint)
    // does not hold up the events served before it; the next batch fills meanwhile, and
    // reading waits once it is full. `target` is the commit's while it runs.
    let mut committing: Option<tokio::task::JoinHandle<Committed>> = None;
    let mut target = Some(target);
    let led = async {
        loop {
            let full = events >= max_events || bytes >= MAX_BATCH_BYTES;
            let wake = deadline.map_or(renewed + tick, |d| d.min(renewed + tick));
            tokio::select! {
                received = reader.next(), if !(full && committing.is_some()) => {
                    let room = max_events.saturating_sub(events).clamp(1, MAX_RUN);
                    let received = run(&mut reader, received?, room)?;
                    if batch.is_empty() {
                        deadline = Some(Instant::now() + interval);
                    }
                    events += received.len();
                    bytes += received.iter().map(|r| r.message.payload.len()).sum::<usize>();
                    let Some(state) = weak.upgrade().map(AppState) else {
                        return Ok(());
                    };
                    for (lane, messages) in by_lane(received, &mut pending) {
                        let (sorted, _) = take_run(&state, &schema, (&live, lane), messages).await?;
                        batch.push((lane, sorted));
                    }
                }
                done = async {
                    match committing.as_mut() {
                        Some(commit) => commit.await,
                        None => std::future::pending().await,
                    }
                }, if committing.is_some() => {
                    committing = None;
                    let (back, result) = done.map_err(|e| format!("a commit stopped: {e}"))?;
                    target = Some(back);
                    let (rows, rejected, seconds) =
                        result.map_err(|e| format!("committing a batch failed: {e}"))?;
                    let Some(state) = weak.upgrade().map(AppState) else {
                        return Ok(());
                    };
                    let Some(t) = target.as_ref() else {
                        return Ok(());
                    };
                    for (i, lane) in t.lanes.iter().enumerate() {
                        live.trim(i, lane.rows_upto);
                    }
                    let labels = TableLabels {
                        raw_table: t.table.name.clone(),
                    };
                    state
                        .metrics
                        .stream_commit_seconds
                        .get_or_create(&labels)
                        .observe(seconds);
                    state
                        .metrics
                        .stream_events
                        .get_or_create(&labels)
                        .inc_by(rows as u64);
                    state
                        .metrics
                        .stream_rejected
                        .get_or_create(&labels)
                        .inc_by(rejected as u64);
                    let lag: u64 = pending.iter().sum();
                    state
                        .metrics
                        .stream_lag
                        .get_or_create(&labels)
                        .set(lag as i64);
                    let elapsed = last_commit.elapsed().as_secs_f64().max(1e-3);
                    last_commit = Instant::now();
                    let (committed_offset, partitions) = t.progress(&source.kind, &pending);
                    report(
                        weak,
                        row.raw_table_id,
                        StreamProgress {
                            status: "running",
                            committed_offset,
                            partitions,
                            lag: Some(lag as i64),
                            events_committed: rows as i64,
                            rejected: rejected as i64,
                            events_per_second: Some((rows + rejected) as f64 / elapsed),
                            committed_at: Some(state.clock.now()),
                            ..StreamProgress::default()
                        },
                    )
                    .await;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= renewed + tick {
                if hold(weak, row).await != Some(true) {
                    return Ok(());
                }
                renewed = now;
                let trouble = reader.trouble(&source).await;
                if trouble.is_none() != connected {
                    connected = !connected;
                    let status = if connected { "running" } else { "failing" };
                    report(
                        weak,
                        row.raw_table_id,
                        StreamProgress {
                            status,
                            reason: trouble,
                            ..Default::default()
                        },
                    )
                    .await;
                }
            }
            let due = events >= max_events
                || bytes >= MAX_BATCH_BYTES
                || deadline.is_some_and(|d| d <= now);
            if due && committing.is_none() {
                // Renewed just before committing: a replica that lost the lease stops here (and
                // one that lost it after this, Delta refuses; see the module's note).
                if hold(weak, row).await != Some(true) {
                    return Ok(());
                }
                renewed = Instant::now();
                let Some(state) = weak.upgrade().map(AppState) else {
                    return Ok(());
                };
                let Some(mut t) = target.take() else {
                    return Ok(());
                };
                let runs = std::mem::take(&mut batch);
                (events, bytes, deadline) = (0, 0, None);
                committing = Some(tokio::spawn(async move {
                    let started = Instant::now();
                    let result = commit(&state, &mut t, runs)
                        .await
                        .map(|(rows, rejected)| (rows, rejected, started.elapsed().as_secs_f64()));
                    (t, result)
                }));
            }
        }
    }
    .await;
    // Leaving (the lease lost, a failure): the commit under way ends first, so whoever
    // reads the table's offsets next sees it.
    if let Some(commit) = committing {
        let _ = commit.await;
    }
    led
}

/// The table's live events for the stream's lanes, this replica's, made if need be.
fn live_of(live: &Live, row: &StreamRow, target: &Target, max_events: usize) -> Arc<TableLive> {
    let apps: Vec<String> = target.lanes.iter().map(|l| l.name.app.clone()).collect();
    let committed: Vec<i64> = target.lanes.iter().map(|l| l.rows_upto).collect();
    live.follow(
        row.raw_table_id,
        Followed {
            generation: row.generation,
            apps: &apps,
            committed: &committed,
            nothing: target.nothing,
            max_batch_events: max_events,
        },
    )
}

/// A run's messages by lane, in the order each lane gave them; each lane's lag noted.
fn by_lane(received: Vec<Received>, pending: &mut [u64]) -> Vec<(usize, Vec<Message>)> {
    let mut lanes: Vec<(usize, Vec<Message>)> = Vec::new();
    for r in received {
        if let Some(p) = pending.get_mut(r.lane) {
            *p = r.pending;
        }
        match lanes.iter_mut().find(|(lane, _)| *lane == r.lane) {
            Some((_, messages)) => messages.push(r.message),
            None => lanes.push((r.lane, vec![r.message])),
        }
    }
    lanes
}

/// What a commit running beside the reading gives back: the target, and the rows and
/// rejected messages it committed, and how long it took.
type Committed = (Target, Result<(usize, usize, f64), String>);

/// `first` and the messages the source has ready after it (`most` in all).
fn run(reader: &mut Reader, first: Received, most: usize) -> Result<Vec<Received>, String> {
    let mut received = vec![first];
    while received.len() < most {
        match reader.next().now_or_never() {
            Some(next) => received.push(next?),
            None => break,
        }
    }
    Ok(received)
}

/// Check a run of one lane's messages as its commit will; keep its valid rows as the table's
/// live events of that lane and give them to the online state of the table's features at
/// once. The run sorted, and whether the live events are over their bound.
async fn take_run(
    state: &AppState,
    schema: &TableSchema,
    (live, lane): (&Arc<TableLive>, usize),
    messages: Vec<Message>,
) -> Result<(Sorted, bool), String> {
    let Some(last) = messages.last().map(|m| m.offset) else {
        return Ok((Sorted::default(), false));
    };
    let schema = schema.clone();
    let sorted = blocking(move || messages::sort(&schema, &messages))
        .await
        .map_err(|e| e.public_detail())??;
    let over = live.push(
        lane,
        Chunk {
            frame: sorted.rows.clone().unwrap_or_default(),
            offsets: sorted.offsets.clone(),
            last,
        },
    );
    if live.start_taker() {
        tokio::spawn(give_to_online(Arc::downgrade(&state.0), live.clone()));
    }
    Ok((sorted, over))
}

/// Give the table's new live events to the online state after each push, beside the reader
/// (which goes on reading meanwhile), for as long as `live` is the table's.
async fn give_to_online(weak: Weak<Shared>, live: Arc<TableLive>) {
    loop {
        live.pushed().await;
        let Some(state) = weak.upgrade().map(AppState) else {
            return;
        };
        match state.live.table(live.raw_table_id) {
            Some(now) if Arc::ptr_eq(&now, &live) => {}
            _ => return,
        }
        online::take_table_live(&state.online, live.raw_table_id).await;
    }
}

/// While another replica commits the stream: read it from where this replica's live events
/// end, so its aggregation features answer with events before their commit, and drop what
/// the committer reports committed. Returns when this replica takes the lease (or the app is
/// gone); a source that fails is opened again after a backoff.
async fn tail(weak: &Weak<Shared>, row: &StreamRow, tick: Duration) {
    let mut failures = 0u32;
    loop {
        match tail_once(weak, row, tick).await {
            Ok(()) => return,
            Err(reason) => {
                failures += 1;
                tracing::debug!(raw_table_id = row.raw_table_id, %reason, "reading a stream failed");
                let until = Instant::now() + backoff(failures);
                while Instant::now() < until {
                    tokio::time::sleep(tick.min(until - Instant::now())).await;
                    if hold(weak, row).await != Some(false) {
                        return;
                    }
                }
            }
        }
    }
}

async fn tail_once(weak: &Weak<Shared>, row: &StreamRow, tick: Duration) -> Result<(), String> {
    let source: StreamSource = serde_json::from_str(&row.source).map_err(|e| e.to_string())?;
    let max_events = source.max_batch_events.unwrap_or(10_000) as usize;
    let (target, live, mut reader) = {
        let Some(state) = weak.upgrade().map(AppState) else {
            return Ok(());
        };
        let target = open_target(&state.store, &state.offline, &state.config, row, &source).await?;
        let live = live_of(&state.live, row, &target, max_events);
        let upto = live.upto();
        let from: Vec<i64> = target
            .lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| upto.get(i).copied().unwrap_or(i64::MIN).max(lane.rows_upto) + 1)
            .collect();
        for (i, from) in from.iter().enumerate() {
            live.start_at(i, *from);
        }
        let names: Vec<LaneName> = target.lanes.iter().map(|l| l.name.clone()).collect();
        let reader = Reader::open(&source, &names, &from, auth(&state.config)).await?;
        (target, live, reader)
    };
    let mut pending = vec![0u64; target.lanes.len()];
    let mut renewed = Instant::now();
    let mut over = false;
    loop {
        tokio::select! {
            // Over the bound, reading waits for a commit.
            _ = live.wait_for_room(), if over => over = false,
            received = reader.next(), if !over => {
                let received = run(&mut reader, received?, MAX_RUN)?;
                let Some(state) = weak.upgrade().map(AppState) else {
                    return Ok(());
                };
                for (lane, messages) in by_lane(received, &mut pending) {
                    over |= take_run(&state, &target.schema, (&live, lane), messages).await?.1;
                }
            }
            _ = tokio::time::sleep_until(renewed + tick) => {}
        }
        if Instant::now() >= renewed + tick {
            if hold(weak, row).await != Some(false) {
                return Ok(());
            }
            renewed = Instant::now();
            // A Kafka topic given partitions makes the reader fail once: opened again with
            // them all.
            reader.trouble(&source).await;
            let Some(state) = weak.upgrade().map(AppState) else {
                return Ok(());
            };
            if let Ok(Some(stream)) = state.store.get_stream(row.raw_table_id).await {
                for (i, committed) in committed_of(&stream, &target).into_iter().enumerate() {
                    if let Some(committed) = committed {
                        live.trim(i, committed);
                    }
                }
            }
        }
    }
}

/// Each lane's offset the committing replica last reported committed.
fn committed_of(stream: &StreamRow, target: &Target) -> Vec<Option<i64>> {
    let Some(partitions) = &stream.partitions else {
        return vec![stream.committed_offset];
    };
    let partitions: Vec<StreamPartition> = serde_json::from_str(partitions).unwrap_or_default();
    target
        .lanes
        .iter()
        .map(|lane| {
            partitions
                .iter()
                .find(|p| p.partition == lane.name.partition)
                .and_then(|p| p.committed_offset)
        })
        .collect()
}

/// How this service authenticates to the brokers: its settings.
fn auth(config: &Config) -> source::Auth<'_> {
    source::Auth {
        nats: &config.nats_auth,
        nats_tls: &config.nats_tls,
        kafka: &config.kafka_auth,
    }
}

async fn open_target(
    store: &Store,
    offline: &OfflineStore,
    config: &Config,
    row: &StreamRow,
    source: &StreamSource,
) -> Result<Target, String> {
    let fail = |e: super::super::ServiceError| e.public_detail();
    let table = store
        .get_raw_table(row.raw_table_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the raw table is gone")?;
    let schema = raw_tables::schema_of(&table).map_err(fail)?;
    let location = raw_tables::location_of(store, offline, &table)
        .await
        .map_err(fail)?
        .ok_or("the raw table has no storage")?;
    let rejected_at = offline
        .resolve(&row.rejected_location)
        .map_err(|e| e.to_string())?;
    offline
        .create_rejected(&rejected_at)
        .await
        .map_err(|e| e.to_string())?;
    let nothing = source::nothing_committed(source);
    let upto = |location: &Location, app: &str| {
        let (offline, location, app) = (offline.clone(), location.clone(), app.to_string());
        async move {
            offline
                .txn_version(&location, &app)
                .await
                .map(|v| v.unwrap_or(nothing))
                .map_err(|e| e.to_string())
        }
    };
    let mut lanes = Vec::new();
    for name in source::lanes(source, auth(config)).await? {
        lanes.push(Lane {
            rows_upto: upto(&location, &name.app).await?,
            rejected_upto: upto(&rejected_at, &name.app).await?,
            name,
        });
    }
    Ok(Target {
        table,
        schema,
        rejected_at,
        lanes,
        nothing,
    })
}

/// Commit one batch (its runs of messages, sorted, each of one lane): its rejected messages,
/// then its rows, each with every lane's last offset in the batch as that lane's `txn`,
/// leaving out what each dataset already holds. The rows and rejected messages it committed.
async fn commit(
    state: &AppState,
    target: &mut Target,
    runs: Vec<(usize, Sorted)>,
) -> Result<(usize, usize), String> {
    // Each lane's last offset in the batch.
    let mut last: Vec<Option<i64>> = vec![None; target.lanes.len()];
    for (lane, run) in &runs {
        let row = run.offsets.last().copied();
        let rejected = run.rejected.iter().map(|m| m.offset).max();
        if let Some(l) = last.get_mut(*lane) {
            *l = (*l).max(row).max(rejected);
        }
    }
    let mut rejected: Vec<Vec<messages::Rejected>> = vec![Vec::new(); target.lanes.len()];
    let mut frames = Vec::new();
    let mut keep: Vec<bool> = Vec::new();
    for (lane, run) in runs {
        let (Some(set_aside), Some(l)) = (rejected.get_mut(lane), target.lanes.get(lane)) else {
            continue;
        };
        set_aside.extend(
            run.rejected
                .into_iter()
                .filter(|r| r.offset > l.rejected_upto),
        );
        if let Some(frame) = run.rows {
            frames.push(frame);
            // Just after a resume: rows the table already holds are left out.
            keep.extend(run.offsets.iter().map(|o| *o > l.rows_upto));
        }
    }
    let rejected_count = rejected.iter().map(Vec::len).sum::<usize>();
    if rejected_count > 0 {
        let lanes: Vec<(String, Vec<messages::Rejected>)> = target
            .lanes
            .iter()
            .zip(rejected)
            .filter(|(_, r)| !r.is_empty())
            .map(|(lane, r)| (lane.name.partition.clone(), r))
            .collect();
        let now = state.clock.now().timestamp_micros();
        let parquet = blocking(move || {
            let mut all: Option<DataFrame> = None;
            for (partition, rejected) in &lanes {
                let frame = messages::rejected_frame(partition, rejected, now)
                    .map_err(|e| e.to_string())?;
                match all.as_mut() {
                    Some(all) => {
                        all.vstack_mut(&frame).map_err(|e| e.to_string())?;
                    }
                    None => all = Some(frame),
                }
            }
            let mut frame = all.unwrap_or_default();
            offline::write_parquet(&mut frame)
        })
        .await
        .map_err(|e| e.public_detail())??;
        let moved: Vec<(usize, i64)> = target
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, lane)| last[i].filter(|l| *l > lane.rejected_upto).map(|l| (i, l)))
            .collect();
        let txns: Vec<offline::Txn> = moved
            .iter()
            .map(|(i, number)| offline::Txn {
                app: &target.lanes[*i].name.app,
                number: *number,
            })
            .collect();
        state
            .offline
            .append(
                &target.rejected_at,
                Bytes::from(parquet),
                rejected_count as i64,
                &txns,
                offline::Holds::Rows,
                std::future::ready(()),
            )
            .await
            .map_err(|e| e.to_string())?;
        for (i, number) in moved {
            target.lanes[i].rejected_upto = number;
        }
    }
    let mut rows_count = 0;
    if !frames.is_empty() {
        let mut frame = blocking(move || {
            let mut all = frames.remove(0);
            for f in &frames {
                all.vstack_mut(f)?;
            }
            Ok::<_, PolarsError>(all)
        })
        .await
        .map_err(|e| e.public_detail())?
        .map_err(|e| e.to_string())?;
        if keep.iter().any(|k| !k) {
            let keep: BooleanChunked = keep.into_iter().collect();
            frame = frame.filter(&keep).map_err(|e| e.to_string())?;
        }
        if frame.height() > 0 {
            let moved: Vec<(usize, i64)> = target
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, lane)| last[i].filter(|l| *l > lane.rows_upto).map(|l| (i, l)))
                .collect();
            let txns = moved
                .iter()
                .map(|(i, upto)| StreamTxn {
                    app: target.lanes[*i].name.app.clone(),
                    // A file is named with its offsets only when the stream has one lane:
                    // a name cannot say which lane.
                    after: (target.lanes.len() == 1).then_some(target.lanes[*i].rows_upto),
                    upto: *upto,
                })
                .collect();
            rows_count = ingest::commit(state, &target.table, Stored::Frame(frame), txns)
                .await
                .map_err(|e| e.public_detail())?;
            for (i, upto) in moved {
                target.lanes[i].rows_upto = upto;
            }
        }
    }
    Ok((rows_count, rejected_count))
}
