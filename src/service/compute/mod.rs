//! Computing a feature version, by step: `run.rs` (a worker slot, the input, the worker
//! started), `spark.rs` (the Spark handoff), `publish.rs` (the vectors written and served, the
//! change announced, or what was written abandoned). Here: the three ways in (a compute, a
//! backfill of many `as_of` steps, a refresh of what is stale) and what they share.

mod publish;
mod run;
mod spark;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use self::run::{pinned_rows, run_and_publish, Run, Source};
use super::jobs::Tracked;
use super::{blocking, check_label, raw_tables, MAX_VERSION_LEN};
use super::{failures, lookup};
use super::{AppState, Result, ServiceError};
use crate::model::{BackfillRequest, ComputeResponse, Engine};
use crate::store::{JobKind, Published, RawTableRow, SnapshotKind, SnapshotRow};
use crate::times::format_ts;
use crate::worker::{ComputeError, EventTimeLimit, FailureKind};

/// Compute a version of a feature and publish its vectors.
///
/// The version is created (active) only when the compute succeeds; an existing version is
/// recomputed with the SQL it snapshotted at creation. `rows` empty means the rows ingested
/// into the raw table: the worker scans the files of its newest version. With `as_of`, only
/// rows whose event time is at or before it count, and the snapshot is valid from `as_of`
/// (served only if no newer one exists). Publishing serves the new vectors in one small
/// transaction, then the cache moves on, so every reader sees the new set as soon as this
/// returns.
pub async fn compute(
    state: &AppState,
    feature_id: i64,
    version: &str,
    rows: Vec<Map<String, Value>>,
    as_of: Option<DateTime<Utc>>,
) -> Result<ComputeResponse> {
    check_label("version", version, MAX_VERSION_LEN)?;
    let started = std::time::Instant::now();
    let feature = lookup::feature(&state.store, feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(&state.store, feature.raw_table_id).await?;
    let (existing, logic, entity_key) = match state.store.find_version(feature_id, version).await? {
        Some(v) => (Some(v.id), v.computation_logic, v.entity_key),
        None => (None, feature.computation_logic, feature.entity_key),
    };
    let target = Target {
        feature_id,
        version: version.to_string(),
        existing,
        logic,
        entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    if target.engine == Engine::Spark {
        super::spark::cluster(&state.spark)?;
        if !rows.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "Feature {feature_id} is computed on Spark, which reads its raw table's stored \
                 rows; ingest the rows, then compute without raw_data"
            )));
        }
    }
    let event_time = match as_of {
        Some(at) => Some(event_time_limit(&table, at, state.clock.now())?),
        None => None,
    };
    let source = if rows.is_empty() {
        Source::Table(&table)
    } else {
        // Body rows are checked here (they are the client's input, not SQL) and handed to the
        // worker as one Arrow IPC file.
        let schema = raw_tables::schema_of(&table)?;
        let encoded = blocking(move || {
            let mut frame = schema
                .frame_from_rows(&rows)
                .map_err(|e| ServiceError::Invalid(format!("Invalid raw data: {e}")))?;
            crate::engine::batches::encode(&mut frame).map_err(ServiceError::fault)
        })
        .await??;
        Source::Piped(encoded)
    };
    let job = Tracked::queue(state, JobKind::Compute, feature_id, existing, version).await?;
    let made = run_and_publish(
        state,
        &target,
        Run {
            table: &table,
            source,
            as_of: event_time,
            kind: SnapshotKind::Compute,
        },
        &job,
        true,
    )
    .await;
    if made.is_err() {
        job.finish(&made, None).await;
    }
    let made = made?;
    state
        .metrics
        .compute_seconds
        .get_or_create(&crate::metrics::EngineLabels {
            engine: target.engine.as_str(),
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        feature_id,
        version,
        version_id = made.published.version_id,
        snapshot_id = made.published.snapshot_id,
        served = made.published.served,
        vectors = made.vectors,
        queued_ms = made.queued.as_millis() as u64,
        worker_ms = made.worker.as_millis() as u64,
        query_ms = made.query.as_millis() as u64,
        check_ms = made.check.as_millis() as u64,
        stats_ms = made.stats.as_millis() as u64,
        snapshot_ms = made.snapshot.as_millis() as u64,
        publish_ms = made.publish.as_millis() as u64,
        vectors_wait_ms = made.written.waited.as_millis() as u64,
        vectors_write_ms = made.written.wrote.as_millis() as u64,
        worker_peak_rss_mib = made.peak_rss_kib / 1024,
        "published feature version"
    );
    Ok(ComputeResponse {
        feature_version_id: made.published.version_id,
        vectors_created: made.vectors,
        entities_processed: made.vectors,
        snapshot_id: made.published.snapshot_id,
        valid_from: format_ts(&made.valid_from),
    })
}

/// Make one snapshot per step from `start` to `end` inclusive, each over the rows whose event
/// time is at or before the step, in the compute workers. Every step reads the same table
/// version (pinned once: a file list, not the rows). A step older than the served snapshot is
/// kept as history only.
pub async fn backfill(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    req: &BackfillRequest,
) -> Result<Vec<SnapshotRow>> {
    let steps = backfill_steps(req, state.clock.now())?;
    let version = lookup::version(&state.store, feature_id, version_id).await?;
    let feature = lookup::feature(&state.store, feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(&state.store, feature.raw_table_id).await?;
    // Checked before any work: every step needs the event time.
    event_time_limit(&table, req.end, state.clock.now())?;
    let target = Target {
        feature_id,
        existing: Some(version.id),
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    let pinned = pinned_rows(state, &table).await?;
    let job = Tracked::queue(
        state,
        JobKind::Backfill,
        feature_id,
        Some(version_id),
        &target.version,
    )
    .await?;
    let mut made = Vec::with_capacity(steps.len());
    let last = steps.len().saturating_sub(1);
    for (i, at) in steps.into_iter().enumerate() {
        let step = match event_time_limit(&table, at, state.clock.now()) {
            Ok(limit) => {
                let run = Run {
                    table: &table,
                    source: Source::Pinned(pinned.clone()),
                    as_of: Some(limit),
                    kind: SnapshotKind::Backfill,
                };
                run_and_publish(state, &target, run, &job, i == last).await
            }
            Err(e) => Err(e),
        };
        match step {
            Ok(step) => made.push(step.published.snapshot_id),
            Err(e) => {
                let failed = Err(ServiceError::Invalid(format!(
                    "step {} of the backfill failed after {} snapshots: {}",
                    made.len() + 1,
                    made.len(),
                    e.public_detail()
                )));
                job.finish::<()>(&failed, None).await;
                return Err(e);
            }
        }
    }
    let listed = state.store.list_snapshots(version_id).await?;
    Ok(listed
        .into_iter()
        .filter(|s| made.contains(&s.id))
        .collect())
}

/// At most this many snapshots per backfill.
pub const MAX_BACKFILL_STEPS: i64 = 1000;

/// `now`: on the database's clock.
fn backfill_steps(req: &BackfillRequest, now: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>> {
    if req.every_seconds < 1 {
        return Err(ServiceError::Invalid(
            "every_seconds must be at least 1".into(),
        ));
    }
    if req.end < req.start {
        return Err(ServiceError::Invalid("end must not be before start".into()));
    }
    if req.end > now {
        return Err(ServiceError::Invalid(
            "end must not be in the future".into(),
        ));
    }
    let span = (req.end - req.start).num_seconds();
    let count = span / req.every_seconds + 1;
    if count > MAX_BACKFILL_STEPS {
        return Err(ServiceError::Invalid(format!(
            "the backfill has {count} steps; at most {MAX_BACKFILL_STEPS} are allowed"
        )));
    }
    Ok((0..count)
        .map(|i| req.start + chrono::Duration::seconds(i * req.every_seconds))
        .collect())
}

/// What a compute runs and where it publishes.
struct Target {
    feature_id: i64,
    version: String,
    /// The version's id when the work began, if it existed: a publish never brings back a
    /// version deleted meanwhile.
    existing: Option<i64>,
    logic: String,
    entity_key: String,
    engine: Engine,
}

struct Made {
    published: Published,
    valid_from: DateTime<Utc>,
    vectors: usize,
    /// Waiting for a worker.
    queued: std::time::Duration,
    /// From the worker's start to its reply: the query, the checks, statistics, the snapshot.
    worker: std::time::Duration,
    query: std::time::Duration,
    stats: std::time::Duration,
    snapshot: std::time::Duration,
    /// From the reply to the publish's commit: the vectors written, then served.
    publish: std::time::Duration,
    written: publish::Written,
    /// Of `query`: checking and sorting the result.
    check: std::time::Duration,
    peak_rss_kib: u64,
}

/// The `as_of` limit of a compute over `table`, or why there can be none.
fn event_time_limit(
    table: &RawTableRow,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<EventTimeLimit> {
    let column = table.event_time_column.clone().ok_or_else(|| {
        ServiceError::Invalid(format!(
            "as_of needs an event time: raw table '{}' has no event_time_column",
            table.name
        ))
    })?;
    if at > now {
        return Err(ServiceError::Invalid(
            "as_of must not be in the future".into(),
        ));
    }
    Ok(EventTimeLimit {
        column,
        micros: at.timestamp_micros(),
    })
}

/// What a refresh did.
pub enum Refreshed {
    /// The raw table has no version the served snapshot did not read.
    NothingNew,
    Published {
        snapshot_id: i64,
    },
}

/// Recompute a version from its table's newest version if the served snapshot did not read
/// it, and publish the result as a `refresh` snapshot.
pub async fn refresh(state: &AppState, version_id: i64) -> Result<Refreshed> {
    let version = state
        .store
        .get_version(version_id)
        .await?
        .ok_or_else(|| lookup::version_not_found(version_id))?;
    let feature = lookup::feature(&state.store, version.feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(&state.store, feature.raw_table_id).await?;
    let Some(pinned) = raw_tables::pin(state, &table).await? else {
        return Ok(Refreshed::NothingNew);
    };
    if version
        .data_version
        .is_some_and(|read| read >= pinned.1.version)
    {
        return Ok(Refreshed::NothingNew);
    }
    let target = Target {
        feature_id: feature.id,
        existing: Some(version_id),
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    let job = Tracked::queue(
        state,
        JobKind::Refresh,
        feature.id,
        Some(version_id),
        &target.version,
    )
    .await?;
    let run = Run {
        table: &table,
        source: Source::Pinned(pinned),
        as_of: None,
        kind: SnapshotKind::Refresh,
    };
    let made = run_and_publish(state, &target, run, &job, true).await;
    if made.is_err() {
        job.finish(&made, None).await;
    }
    Ok(Refreshed::Published {
        snapshot_id: made?.published.snapshot_id,
    })
}

/// An aggregation feature has no snapshots to compute: its values are evaluated from the
/// raw table's events at the instant each is asked for.
fn refuse_aggregations(feature: &crate::store::FeatureRow) -> Result<()> {
    if feature.declaration.is_none() {
        return Ok(());
    }
    Err(ServiceError::Invalid(format!(
        "Feature '{}' declares aggregations: its values are computed from raw table {}'s \
         events at the instant each is asked for (a request, a training row), so there is no \
         snapshot to compute",
        feature.name, feature.raw_table_id
    )))
}

/// A worker's refusal in the words compute has always used.
fn compute_failed(e: ComputeError) -> ServiceError {
    match e {
        ComputeError::Refused(FailureKind::Result, reason) => {
            ServiceError::Invalid(format!("Invalid feature result: {reason}"))
        }
        e => failures::worker_error(e, "Feature computation failed"),
    }
}
