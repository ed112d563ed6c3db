use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::cache::Snapshot as BatchSnapshot;
use crate::engine::{batches, result};
use crate::error::{AppError, Result};
use crate::model::{format_ts, now, BackfillRequest, ComputeResponse, Snapshot};
use crate::served::VersionMeta;
use crate::store::StoreError;
use crate::store::{
    BatchMark, JobKind, PublishRequest, Published, RawTableRow, SnapshotKind, StoredBatches,
};
use crate::worker::{ComputeError, EventTimeLimit, FailureKind, Job};
use crate::AppState;

use super::jobs::Tracked;
use super::{blocking, check_label, features, raw_tables, versions};

/// Compute a version of a feature and publish its vectors.
///
/// The version is created (active) only when the compute succeeds; an existing version is
/// recomputed with the SQL it snapshotted at creation. `rows` empty means the rows ingested
/// into the raw table. With `as_of`, only rows whose event time is at or before it count, and
/// the snapshot is valid from `as_of` (served only if no newer one exists). Publishing replaces
/// the served vectors in one transaction, then the cache moves on, so every reader sees the new
/// set as soon as this returns.
pub async fn compute(
    state: &AppState,
    feature_id: i64,
    version: &str,
    rows: Vec<Map<String, Value>>,
    as_of: Option<DateTime<Utc>>,
) -> Result<ComputeResponse> {
    check_label("version", version, versions::MAX_VERSION_LEN)?;
    let started = std::time::Instant::now();
    let feature = features::get_row(state, feature_id).await?;
    let table = raw_tables::get_row(state, feature.raw_table_id).await?;
    let (existing, logic, entity_key) = match state.store.find_version(feature_id, version).await? {
        Some(v) => (Some(v.id), v.computation_logic, v.entity_key),
        None => (None, feature.computation_logic, feature.entity_key),
    };
    let target = Target {
        feature_id,
        version: version.to_string(),
        logic,
        entity_key,
    };
    let event_time = match as_of {
        Some(at) => Some(event_time_limit(&table, at)?),
        None => None,
    };
    let (inputs, data) = if rows.is_empty() {
        let stored = stored_inputs(state, &table).await?;
        (stored.blobs, stored.newest)
    } else {
        // Body rows are checked here (they are the client's input, not SQL) and handed to the
        // worker as one Arrow IPC batch.
        let schema = raw_tables::schema_of(&table)?;
        let encoded = blocking(move || {
            let mut frame = schema
                .frame_from_rows(&rows)
                .map_err(|e| AppError::BadRequest(format!("Invalid raw data: {e}")))?;
            batches::encode(&mut frame).map_err(AppError::internal)
        })
        .await??;
        (vec![encoded], None)
    };
    let loaded = started.elapsed();
    let definition = raw_tables::definition_of(&table)?;
    let job = Tracked::queue(state, JobKind::Compute, feature_id, existing, version).await?;
    let made = run_and_publish(
        state,
        &target,
        Run {
            definition: &definition,
            inputs: &inputs,
            as_of: event_time,
            data,
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
    drop(inputs);
    state
        .metrics
        .compute_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        feature_id,
        version,
        version_id = made.published.version_id,
        snapshot_id = made.published.snapshot_id,
        served = made.published.served,
        vectors = made.vectors,
        load_ms = loaded.as_millis() as u64,
        worker_ms = made.worker.as_millis() as u64,
        stats_ms = made.stats.as_millis() as u64,
        publish_ms = made.publish.as_millis() as u64,
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

/// Make one snapshot per step from `start` to `end` inclusive, each over the stored rows whose
/// event time is at or before the step, in the compute workers. A step older than the served
/// snapshot is kept as history only.
pub async fn backfill(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    req: &BackfillRequest,
) -> Result<Vec<Snapshot>> {
    let steps = backfill_steps(req)?;
    let version = versions::get_row(state, feature_id, version_id).await?;
    let feature = features::get_row(state, feature_id).await?;
    let table = raw_tables::get_row(state, feature.raw_table_id).await?;
    // Checked before any work: every step needs the event time.
    event_time_limit(&table, req.end)?;
    let target = Target {
        feature_id,
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
    };
    let definition = raw_tables::definition_of(&table)?;
    let stored = stored_inputs(state, &table).await?;
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
        let step = match event_time_limit(&table, at) {
            Ok(limit) => {
                let run = Run {
                    definition: &definition,
                    inputs: &stored.blobs,
                    as_of: Some(limit),
                    data: stored.newest,
                    kind: SnapshotKind::Backfill,
                };
                run_and_publish(state, &target, run, &job, i == last).await
            }
            Err(e) => Err(e),
        };
        match step {
            Ok(step) => made.push(step.published.snapshot_id),
            Err(e) => {
                let failed = Err(AppError::BadRequest(format!(
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
        .map(Snapshot::from)
        .collect())
}

/// At most this many snapshots per backfill.
pub const MAX_BACKFILL_STEPS: i64 = 1000;

fn backfill_steps(req: &BackfillRequest) -> Result<Vec<DateTime<Utc>>> {
    if req.every_seconds < 1 {
        return Err(AppError::BadRequest(
            "every_seconds must be at least 1".into(),
        ));
    }
    if req.end < req.start {
        return Err(AppError::BadRequest("end must not be before start".into()));
    }
    if req.end > now() {
        return Err(AppError::BadRequest("end must not be in the future".into()));
    }
    let span = (req.end - req.start).num_seconds();
    let count = span / req.every_seconds + 1;
    if count > MAX_BACKFILL_STEPS {
        return Err(AppError::BadRequest(format!(
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
    logic: String,
    entity_key: String,
}

struct Made {
    published: Published,
    valid_from: DateTime<Utc>,
    vectors: usize,
    worker: std::time::Duration,
    /// Of `worker`, the time spent on the snapshot's statistics.
    stats: std::time::Duration,
    publish: std::time::Duration,
}

/// The `as_of` limit of a compute over `table`, or why there can be none.
fn event_time_limit(table: &RawTableRow, at: DateTime<Utc>) -> Result<EventTimeLimit> {
    let column = table.event_time_column.clone().ok_or_else(|| {
        AppError::BadRequest(format!(
            "as_of needs an event time: raw table '{}' has no event_time_column",
            table.name
        ))
    })?;
    if at > now() {
        return Err(AppError::BadRequest(
            "as_of must not be in the future".into(),
        ));
    }
    Ok(EventTimeLimit {
        column,
        micros: at.timestamp_micros(),
    })
}

async fn stored_inputs(state: &AppState, table: &RawTableRow) -> Result<StoredBatches> {
    let stored = state.store.load_batches(table.id).await?;
    if stored.blobs.is_empty() {
        return Err(AppError::BadRequest(format!(
            "Invalid raw data: No data provided, and raw table '{}' has no ingested rows",
            table.name
        )));
    }
    Ok(stored)
}

/// What a refresh did.
pub enum Refreshed {
    /// The raw table has no batch the served snapshot did not read.
    NothingNew,
    Published {
        snapshot_id: i64,
    },
}

/// Recompute a version from its stored rows if its raw table has batches the served snapshot
/// did not read, and publish the result as a `refresh` snapshot.
pub async fn refresh(state: &AppState, version_id: i64) -> Result<Refreshed> {
    let version = state
        .store
        .get_version(version_id)
        .await?
        .ok_or_else(|| versions::not_found(version_id))?;
    let feature = features::get_row(state, version.feature_id).await?;
    let table = raw_tables::get_row(state, feature.raw_table_id).await?;
    let newest = state.store.newest_batch(table.id).await?;
    let unread = match (newest, version.data_batch_id) {
        (None, _) => false,
        (Some(n), Some(read)) => n.batch_id > read,
        (Some(_), None) => true,
    };
    if !unread {
        return Ok(Refreshed::NothingNew);
    }
    let target = Target {
        feature_id: feature.id,
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
    };
    let job = Tracked::queue(
        state,
        JobKind::Refresh,
        feature.id,
        Some(version_id),
        &target.version,
    )
    .await?;
    let made = async {
        let stored = stored_inputs(state, &table).await?;
        let definition = raw_tables::definition_of(&table)?;
        let run = Run {
            definition: &definition,
            inputs: &stored.blobs,
            as_of: None,
            data: stored.newest,
            kind: SnapshotKind::Refresh,
        };
        run_and_publish(state, &target, run, &job, true).await
    }
    .await;
    if made.is_err() {
        job.finish(&made, None).await;
    }
    Ok(Refreshed::Published {
        snapshot_id: made?.published.snapshot_id,
    })
}

/// What one worker run computes over, and what kind of snapshot it makes.
struct Run<'a> {
    definition: &'a std::collections::BTreeMap<String, String>,
    inputs: &'a [Vec<u8>],
    as_of: Option<EventTimeLimit>,
    /// The newest stored batch among `inputs` (`None`: rows from the request).
    data: Option<BatchMark>,
    kind: SnapshotKind,
}

/// Run in a worker and publish. `job` is marked running once a worker takes it, and when
/// `finishes`, succeeded by the publish's own transaction, even if the client has gone.
async fn run_and_publish(
    state: &AppState,
    target: &Target,
    run: Run<'_>,
    tracked: &Tracked,
    finishes: bool,
) -> Result<Made> {
    let started = std::time::Instant::now();
    let Run {
        definition,
        inputs,
        as_of,
        data,
        kind,
    } = run;
    let valid_from_as_of = as_of
        .as_ref()
        .and_then(|l| DateTime::<Utc>::from_timestamp_micros(l.micros));
    let job = Job {
        sql: target.logic.clone(),
        entity_key: target.entity_key.clone(),
        max_rows: state.config.compute_max_rows,
        schema: definition.clone(),
        dry_run: false,
        as_of,
    };
    let admitted = state.compute.admit().await.map_err(compute_failed)?;
    tracked.running().await;
    let encoded = state
        .compute
        .run_admitted(admitted, &job, inputs)
        .await
        .map_err(compute_failed)?;
    let worker = started.elapsed();
    let stats_time = encoded.stats_time;

    // Publishing and announcing it finish even if the client goes away meanwhile.
    let publish = {
        let state = state.clone();
        let feature_id = target.feature_id;
        let version = target.version.clone();
        let logic = target.logic.clone();
        let entity_key = target.entity_key.clone();
        let tracked = tracked.clone();
        async move {
            let output_schema =
                serde_json::to_string(&encoded.output_schema).map_err(AppError::internal)?;
            let computed_at = now();
            let valid_from = valid_from_as_of.unwrap_or(computed_at);
            let published = state
                .store
                .publish(&PublishRequest {
                    feature_id,
                    version: &version,
                    computation_logic: &logic,
                    entity_key: &entity_key,
                    output_schema: &output_schema,
                    computed_at,
                    vectors: &encoded.vectors,
                    valid_from,
                    kind,
                    snapshot: &encoded.snapshot,
                    data,
                    stats: encoded.stats.as_deref(),
                    job: finishes.then(|| tracked.id()),
                })
                .await
                .map_err(|e| match e {
                    StoreError::StillReferenced => features::not_found(feature_id),
                    e => e.into(),
                })?;
            if let Some(change) = published.change {
                state.cache.advance(change as u64).await;
            }
            if finishes {
                tracked.finished_by_publish();
            }
            Ok((published, valid_from, encoded.vectors))
        }
    };
    let (published, valid_from, vectors) = super::detached(publish).await?;
    let count = vectors.len();
    if published.served {
        warm_batch_snapshot(state, published.version_id, published.generation, vectors);
        super::stats::refresh_drift_gauge(state, target.feature_id, published.version_id);
    }
    Ok(Made {
        published,
        valid_from,
        vectors: count,
        worker,
        stats: stats_time,
        publish: started.elapsed() - worker,
    })
}

/// A worker's refusal in the words compute has always used.
fn compute_failed(e: ComputeError) -> AppError {
    match e {
        ComputeError::Refused(FailureKind::Result, reason) => {
            AppError::BadRequest(format!("Invalid feature result: {reason}"))
        }
        e => worker_error(e, "Feature computation failed"),
    }
}

/// Overload is a 503, a server-side fault a 500, and anything about the job a 400 under
/// `prefix`.
pub(crate) fn worker_error(e: ComputeError, prefix: &str) -> AppError {
    match e {
        ComputeError::Overloaded { .. } => AppError::Overloaded(e.to_string()),
        ComputeError::Io(_) | ComputeError::Refused(FailureKind::Input, _) => AppError::internal(e),
        e => AppError::BadRequest(format!("{prefix}: {e}")),
    }
}

/// Batch serving reads versions that fit its byte cap from an in-memory snapshot; build it
/// from the vectors just published (in the background) instead of reading them back on first
/// use, and drop the version's older generations.
fn warm_batch_snapshot(
    state: &AppState,
    version_id: i64,
    generation: i64,
    vectors: Vec<result::EncodedVector>,
) {
    let state = state.clone();
    tokio::spawn(async move {
        let meta = VersionMeta {
            version_id,
            generation,
            entity_count: Some(vectors.len() as i64),
            // Batch snapshots are keyed by version and generation only.
            freshness: Default::default(),
        };
        let bytes: usize = vectors
            .iter()
            .map(|v| v.entity_id.len() + v.values.len())
            .sum();
        if !state
            .cache
            .fits_snapshot(meta, bytes as u64, vectors.len() as u64)
            .await
        {
            return;
        }
        let built = blocking(move || {
            let pairs: Vec<(&str, &str)> = vectors
                .iter()
                .map(|v| (v.entity_id.as_str(), v.values.as_str()))
                .collect();
            BatchSnapshot::build(&pairs)
        })
        .await;
        if let Ok(Some(snapshot)) = built {
            state.cache.put_snapshot(meta, snapshot).await;
        }
    });
}
