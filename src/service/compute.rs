use serde_json::{Map, Value};

use crate::cache::Snapshot;
use crate::engine::{batches, result};
use crate::error::{AppError, Result};
use crate::model::{now, ComputeResponse};
use crate::served::VersionMeta;
use crate::store::PublishRequest;
use crate::store::StoreError;
use crate::worker::{ComputeError, FailureKind, Job};
use crate::AppState;

use super::{blocking, check_label, features, raw_tables, versions};

/// Compute a version of a feature and publish its vectors.
///
/// The version is created (active) only when the compute succeeds; an existing version is
/// recomputed with the SQL it snapshotted at creation. `rows` empty means the rows ingested
/// into the raw table. Publishing replaces the version's vectors in one transaction, then the
/// cache moves on, so every reader sees the new set as soon as this returns.
pub async fn compute(
    state: &AppState,
    feature_id: i64,
    version: &str,
    rows: Vec<Map<String, Value>>,
) -> Result<ComputeResponse> {
    check_label("version", version, versions::MAX_VERSION_LEN)?;
    let started = std::time::Instant::now();
    let feature = features::get_row(state, feature_id).await?;
    let table = raw_tables::get_row(state, feature.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    let definition = raw_tables::definition_of(&table)?;
    let (logic, entity_key) = match state.store.find_version(feature_id, version).await? {
        Some(v) => (v.computation_logic, v.entity_key),
        None => (feature.computation_logic, feature.entity_key),
    };
    let stored = if rows.is_empty() {
        let blobs = state.store.load_batches(table.id).await?;
        if blobs.is_empty() {
            return Err(AppError::BadRequest(format!(
                "Invalid raw data: No data provided, and raw table '{}' has no ingested rows",
                table.name
            )));
        }
        Some(blobs)
    } else {
        None
    };

    let inputs = match stored {
        Some(blobs) => blobs,
        // Body rows are checked here (they are the client's input, not SQL) and handed to the
        // worker as one Arrow IPC batch.
        None => vec![
            blocking(move || {
                let mut frame = schema
                    .frame_from_rows(&rows)
                    .map_err(|e| AppError::BadRequest(format!("Invalid raw data: {e}")))?;
                batches::encode(&mut frame).map_err(AppError::internal)
            })
            .await??,
        ],
    };
    let job = Job {
        sql: logic.clone(),
        entity_key: entity_key.clone(),
        max_rows: state.config.compute_max_rows,
        schema: definition,
        dry_run: false,
    };
    let loaded = started.elapsed();
    let encoded = state
        .compute
        .run(&job, &inputs)
        .await
        .map_err(compute_failed)?;
    drop(inputs);
    let worked = started.elapsed();

    // Publishing and announcing it finish even if the client goes away meanwhile.
    let publish = {
        let state = state.clone();
        let version = version.to_string();
        async move {
            let output_schema =
                serde_json::to_string(&encoded.output_schema).map_err(AppError::internal)?;
            let published = state
                .store
                .publish(&PublishRequest {
                    feature_id,
                    version: &version,
                    computation_logic: &logic,
                    entity_key: &entity_key,
                    output_schema: &output_schema,
                    computed_at: now(),
                    vectors: &encoded.vectors,
                })
                .await
                .map_err(|e| match e {
                    StoreError::StillReferenced => features::not_found(feature_id),
                    e => e.into(),
                })?;
            state.cache.advance(published.change as u64).await;
            Ok((published, encoded))
        }
    };
    let (published, encoded) = super::detached(publish).await?;
    state
        .metrics
        .compute_seconds
        .observe(started.elapsed().as_secs_f64());
    let count = encoded.vectors.len();
    warm_batch_snapshot(
        state,
        published.version_id,
        published.generation,
        encoded.vectors,
    );
    tracing::info!(
        feature_id,
        version,
        version_id = published.version_id,
        generation = published.generation,
        vectors = count,
        load_ms = loaded.as_millis() as u64,
        worker_ms = (worked - loaded).as_millis() as u64,
        publish_ms = (started.elapsed() - worked).as_millis() as u64,
        "published feature version"
    );
    Ok(ComputeResponse {
        feature_version_id: published.version_id,
        vectors_created: count,
        entities_processed: count,
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
            Snapshot::build(&pairs)
        })
        .await;
        if let Ok(Some(snapshot)) = built {
            state.cache.put_snapshot(meta, snapshot).await;
        }
    });
}
