use serde_json::{Map, Value};

use crate::cache::Snapshot;
use crate::engine::{batches, execute, result};
use crate::error::{AppError, Result};
use crate::model::{now, ComputeResponse};
use crate::store::{PublishRequest, VersionMeta};
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

    let _permit = state
        .compute_permits
        .acquire()
        .await
        .map_err(AppError::internal)?;
    let max_rows = state.config.compute_max_rows;
    let limit = state.config.compute_timeout;
    let (sql, key) = (logic.clone(), entity_key.clone());
    let work = blocking(
        move || -> std::result::Result<result::EncodedResult, AppError> {
            let frame = match stored {
                Some(blobs) => batches::decode_all(&blobs, &schema.polars_schema())
                    .map_err(AppError::internal)?,
                None => schema
                    .frame_from_rows(&rows)
                    .map_err(|e| AppError::BadRequest(format!("Invalid raw data: {e}")))?,
            };
            let out = execute::run_sql_within(&sql, frame, Some(limit))
                .map_err(|e| AppError::BadRequest(format!("Feature computation failed: {e}")))?;
            result::encode(&out, &key, max_rows)
                .map_err(|e| AppError::BadRequest(format!("Invalid feature result: {e}")))
        },
    );
    // The engine cancels its own query at the limit; this outer bound (with slack for decoding
    // and encoding) keeps the request from waiting on anything else that runs long.
    let encoded = tokio::time::timeout(limit * 2, work).await.map_err(|_| {
        AppError::ComputeLimit(format!(
            "Feature computation exceeded the time limit of {} s",
            limit.as_secs()
        ))
    })???;

    let output_schema =
        serde_json::to_string(&encoded.output_schema).map_err(AppError::internal)?;
    let published = state
        .store
        .publish(&PublishRequest {
            feature_id,
            version,
            computation_logic: &logic,
            entity_key: &entity_key,
            output_schema: &output_schema,
            computed_at: now(),
            vectors: &encoded.vectors,
        })
        .await
        .map_err(|e| match e {
            AppError::StillReferenced => features::not_found(feature_id),
            e => e,
        })?;
    state.cache.versions_changed().await;
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
        "published feature version"
    );
    Ok(ComputeResponse {
        feature_version_id: published.version_id,
        vectors_created: count,
        entities_processed: count,
    })
}

/// Batch serving reads small enough versions from an in-memory snapshot; build it from the
/// vectors just published (in the background) instead of reading them back on first use.
fn warm_batch_snapshot(
    state: &AppState,
    version_id: i64,
    generation: i64,
    vectors: Vec<result::EncodedVector>,
) {
    if vectors.len() as i64 > state.config.batch_snapshot_max_entities {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let meta = VersionMeta {
            version_id,
            generation,
            entity_count: Some(vectors.len() as i64),
        };
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
