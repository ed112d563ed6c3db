//! Snapshot history: listing, decoded snapshots (immutable, so cached by id without any
//! invalidation, within `SNAPSHOT_CACHE_MAX_BYTES`) and serving what was served at an instant.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use polars::prelude::{DataFrame, PlHashMap};

use super::AppState;
use super::{Result, ServiceError};
use crate::engine::history::Indexed;
use crate::engine::result;
use crate::model::VectorQuery;
use crate::offline::OfflineStore;
use crate::served::Freshness;
use crate::store::{Changed, SnapshotRow, Store};
use crate::times::format_ts;

use super::{blocking, vectors};
use super::{changed, lookup};

/// A stored snapshot, decoded: the typed frame (entity key first) and where each entity is.
pub struct Decoded {
    pub frame: DataFrame,
    pub rows: PlHashMap<String, u32>,
    bytes: u64,
}

impl Decoded {
    fn from_frame(frame: DataFrame) -> std::result::Result<Decoded, String> {
        let Indexed { frame, rows } = Indexed::new(frame)?;
        let bytes = frame.estimated_size() as u64 + rows.len() as u64 * 48;
        Ok(Decoded { frame, rows, bytes })
    }
}

/// Decoded snapshots by id, bounded in bytes.
#[derive(Clone)]
pub struct History {
    decoded: moka::future::Cache<i64, Arc<Decoded>>,
}

impl History {
    pub fn new(max_bytes: u64) -> History {
        History {
            decoded: moka::future::Cache::builder()
                .weigher(|_, d: &Arc<Decoded>| d.bytes.min(u32::MAX as u64) as u32)
                .max_capacity(max_bytes)
                .build(),
        }
    }
}

/// A snapshot's frame, from the cache or its file.
pub async fn decoded(
    history: &History,
    store: &Store,
    offline: &OfflineStore,
    snapshot_id: i64,
) -> Result<Arc<Decoded>> {
    if let Some(hit) = history.decoded.get(&snapshot_id).await {
        return Ok(hit);
    }
    let snapshot = store
        .get_snapshot(snapshot_id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("Snapshot {snapshot_id} not found")))?;
    let location = snapshot
        .location
        .ok_or_else(|| ServiceError::fault(format!("snapshot {snapshot_id} has no file yet")))?;
    let location = offline.resolve(&location)?;
    let frame = crate::offline::read_snapshot(&location, offline.options()).await?;
    let decoded = Arc::new(
        blocking(move || Decoded::from_frame(frame))
            .await?
            .map_err(ServiceError::fault)?,
    );
    history.decoded.insert(snapshot_id, decoded.clone()).await;
    Ok(decoded)
}

/// Where a snapshot's file is, as a worker reaches it (a path or an `s3://` URI).
pub fn file_uri(offline: &OfflineStore, snapshot: &SnapshotRow) -> Result<String> {
    let stored = snapshot
        .location
        .as_deref()
        .ok_or_else(|| ServiceError::fault(format!("snapshot {} has no file", snapshot.id)))?;
    Ok(offline.resolve(stored)?.uri())
}

pub async fn list(store: &Store, feature_id: i64, version_id: i64) -> Result<Vec<SnapshotRow>> {
    lookup::version(store, feature_id, version_id).await?;
    Ok(store.list_snapshots(version_id).await?)
}

/// The snapshot of `version_id` in force at `at`, or `NotFound` saying there was none.
pub async fn in_force(store: &Store, version_id: i64, at: DateTime<Utc>) -> Result<SnapshotRow> {
    store.snapshot_at(version_id, at).await?.ok_or_else(|| {
        ServiceError::NotFound(format!(
            "Feature version {version_id} has no snapshot valid at or before {}",
            format_ts(&at)
        ))
    })
}

/// How fresh a stored snapshot is: the table version it read against the table's newest.
pub async fn snapshot_freshness(
    store: &Store,
    version_id: i64,
    snapshot: &SnapshotRow,
) -> Result<Freshness> {
    Ok(Freshness {
        data_as_of: snapshot.data_as_of,
        stale: store
            .has_newer_table_version(version_id, snapshot.data_version)
            .await?,
    })
}

/// What `GET /feature-vectors` served at `at`: the same body, from the snapshot then in force.
pub async fn vector_as_of(
    state: &AppState,
    query: &VectorQuery<'_>,
    at: DateTime<Utc>,
) -> Result<Bytes> {
    let requested = vectors::Requested::of(query);
    let meta =
        match vectors::resolve_key_at(&state.cache, &state.store, vectors::lookup_key(query)?, at)
            .await
        {
            Ok(meta) => meta,
            Err(ServiceError::NotFound(why)) => {
                // An aggregation feature: its values at `at`, computed from the events.
                if let (None, Some(name)) = (query.feature_version_id, &query.feature_name) {
                    let entity = requested.id.as_ref();
                    if let Some(answers) =
                        super::online::values_at(state, name, &[entity], at).await?
                    {
                        if let Some(key) = state.online.entity_key(name).await {
                            requested.check(&key)?;
                        }
                        if let Some(a) = answers.first() {
                            return super::online::encode(entity, a);
                        }
                    }
                }
                return Err(ServiceError::NotFound(why));
            }
            Err(e) => return Err(e),
        };
    requested.check(&meta.entity_key)?;
    let snapshot = in_force(&state.store, meta.version_id, at).await?;
    let decoded = decoded(&state.history, &state.store, &state.offline, snapshot.id).await?;
    let row = *decoded.rows.get(requested.id.as_ref()).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "Feature vector not found for entity '{}'",
            requested.id
        ))
    })?;
    let frame = decoded.frame.slice(row as i64, 1);
    let key = frame.columns()[0].name().to_string();
    let encoded = result::encode_part(&frame, &key).map_err(ServiceError::fault)?;
    let values = encoded
        .into_iter()
        .next()
        .map(|v| v.values)
        .ok_or_else(|| ServiceError::fault("an empty snapshot row"))?;
    let freshness = snapshot_freshness(&state.store, meta.version_id, &snapshot).await?;
    let tuple = match vectors::typed_entity(&state.store, &meta, &requested.id).await? {
        Some(typed) => format!(r#","entity":{typed}"#),
        None => String::new(),
    };
    let body = format!(
        r#"{{"entity_id":{}{tuple},"feature_values":{},"feature_version_id":{},"computed_at":"{}","snapshot_id":{},"valid_from":"{}",{}}}"#,
        serde_json::to_string(requested.id.as_ref()).map_err(ServiceError::fault)?,
        values,
        meta.version_id,
        format_ts(&snapshot.computed_at),
        snapshot.id,
        format_ts(&snapshot.valid_from),
        freshness.json_fields(),
    );
    Ok(Bytes::from(body))
}

/// Finished jobs are kept this long.
pub const JOB_RETENTION_DAYS: i64 = 30;

/// Prune at start and hourly (`prune`). Every replica may run it: the deletes are idempotent.
pub fn spawn_pruner(state: &AppState) {
    let weak = std::sync::Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            prune(&AppState(shared)).await;
        }
    });
}

/// Delete snapshots superseded more than `SNAPSHOT_RETENTION_DAYS` ago (and their files),
/// retired vector generations, and jobs that finished more than `JOB_RETENTION_DAYS` ago.
/// A failure is logged and left for the next run.
pub async fn prune(state: &AppState) {
    let retention = chrono::Duration::from_std(state.config.snapshot_retention)
        .unwrap_or(chrono::Duration::MAX);
    let cutoff = state
        .clock
        .now()
        .checked_sub_signed(retention)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    match state.store.prune_snapshots(cutoff).await {
        Ok(files) if files.is_empty() => {}
        Ok(files) => {
            tracing::info!(pruned = files.len(), "pruned superseded snapshots");
            let files = files.into_iter().flatten().collect();
            changed::announce(
                state,
                Changed {
                    files,
                    ..Changed::default()
                },
            )
            .await;
        }
        Err(e) => tracing::warn!(error = %e, "pruning snapshots failed; retrying in an hour"),
    }
    match state.store.generations_to_drop().await {
        Ok(generations) => changed::drop_generations(&state.store, generations),
        Err(e) => tracing::warn!(error = %e, "could not list generations to drop"),
    }
    let jobs_cutoff = state.clock.now() - chrono::Duration::days(JOB_RETENTION_DAYS);
    match state.store.prune_jobs(jobs_cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned finished jobs"),
        Err(e) => tracing::warn!(error = %e, "pruning jobs failed; retrying in an hour"),
    }
}
