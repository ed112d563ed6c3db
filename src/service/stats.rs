//! Statistics of snapshots and drift between them.

use std::collections::BTreeMap;

use crate::engine::drift::{self, ColumnDrift};
use crate::engine::stats;
use crate::error::{AppError, Result};
use crate::model::{Drift, SnapshotStats};
use crate::store::SnapshotRow;
use crate::AppState;

use super::{blocking, history, versions};

/// A snapshot of this version, or 404.
async fn snapshot_of(state: &AppState, version_id: i64, snapshot_id: i64) -> Result<SnapshotRow> {
    match state.store.get_snapshot(snapshot_id).await? {
        Some(s) if s.feature_version_id == version_id => Ok(s),
        _ => Err(AppError::NotFound(format!(
            "Snapshot {snapshot_id} of feature version {version_id} not found"
        ))),
    }
}

/// The version's snapshots in serving order (by valid_from, then id); 404 when it has none.
async fn ordered(state: &AppState, version_id: i64) -> Result<Vec<SnapshotRow>> {
    let list = state.store.list_snapshots(version_id).await?;
    if list.is_empty() {
        return Err(AppError::NotFound(format!(
            "Feature version {version_id} has no snapshots yet: compute it first"
        )));
    }
    Ok(list)
}

pub async fn of_snapshot(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    snapshot_id: i64,
) -> Result<SnapshotStats> {
    versions::get_row(state, feature_id, version_id).await?;
    let snapshot = snapshot_of(state, version_id, snapshot_id).await?;
    stats_of(state, &snapshot).await
}

/// The statistics of the snapshot served now (the newest).
pub async fn of_newest(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
) -> Result<SnapshotStats> {
    versions::get_row(state, feature_id, version_id).await?;
    let list = ordered(state, version_id).await?;
    let newest = list
        .last()
        .ok_or_else(|| AppError::internal("no snapshot"))?;
    stats_of(state, newest).await
}

/// Stored statistics, or (for a snapshot made before they were) computed from its data now.
async fn stats_of(state: &AppState, snapshot: &SnapshotRow) -> Result<SnapshotStats> {
    let columns = match state.store.snapshot_stats(snapshot.id).await? {
        Some(json) => serde_json::from_str(&json).map_err(AppError::internal)?,
        None => {
            let decoded = history::decoded(state, snapshot.id).await?;
            blocking(move || {
                let key = decoded
                    .frame
                    .columns()
                    .first()
                    .map(|c| c.name().to_string())
                    .unwrap_or_default();
                stats::frame_stats(&decoded.frame, &key)
                    .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string()))
            })
            .await?
            .map_err(AppError::internal)?
        }
    };
    Ok(SnapshotStats {
        snapshot_id: snapshot.id,
        entity_count: snapshot.entity_count,
        columns,
    })
}

/// Drift from `base` to `target` (defaults: the newest snapshot, and the one before it).
pub async fn drift(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    base: Option<i64>,
    target: Option<i64>,
) -> Result<Drift> {
    let version = versions::get_row(state, feature_id, version_id).await?;
    let list = ordered(state, version_id).await?;
    let target = match target {
        Some(id) => snapshot_of(state, version_id, id).await?,
        None => list
            .last()
            .cloned()
            .ok_or_else(|| AppError::internal("no snapshot"))?,
    };
    let base = match base {
        Some(id) => snapshot_of(state, version_id, id).await?,
        None => {
            let at = list.iter().position(|s| s.id == target.id).unwrap_or(0);
            at.checked_sub(1).map(|i| list[i].clone()).ok_or_else(|| {
                AppError::NotFound(format!(
                    "Snapshot {} is the first of feature version {version_id}: there is nothing to compare it with",
                    target.id
                ))
            })?
        }
    };
    let newest_pair = list.len() >= 2
        && list[list.len() - 1].id == target.id
        && list[list.len() - 2].id == base.id;
    // A snapshot's drift from the one before it is kept once computed: snapshots never change.
    let consecutive = list
        .windows(2)
        .any(|w| w[0].id == base.id && w[1].id == target.id);
    let kept = match consecutive {
        true => state.store.kept_drift(target.id, base.id).await?,
        false => None,
    };
    let columns: BTreeMap<String, ColumnDrift> = match kept {
        Some(json) => serde_json::from_str(&json).map_err(AppError::internal)?,
        None => {
            let (b, t) = (
                history::decoded(state, base.id).await?,
                history::decoded(state, target.id).await?,
            );
            let columns = blocking(move || drift::frame_drift(&b.frame, &t.frame))
                .await?
                .map_err(AppError::internal)?;
            if consecutive {
                let json = serde_json::to_string(&columns).map_err(AppError::internal)?;
                state.store.keep_drift(target.id, base.id, &json).await?;
            }
            columns
        }
    };
    if newest_pair {
        let feature = super::features::get_row(state, feature_id).await?;
        state
            .metrics
            .set_drift(&feature.name, &version.version, &columns);
    }
    Ok(Drift {
        base: base.id,
        target: target.id,
        columns,
    })
}

/// After a publish that became the served snapshot, compute drift against the one before for
/// the gauge, in the background.
pub fn refresh_drift_gauge(state: &AppState, feature_id: i64, version_id: i64) {
    let state = state.clone();
    tokio::spawn(async move {
        match drift(&state, feature_id, version_id, None, None).await {
            Ok(_) | Err(AppError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(version_id, error = %e, "could not compute drift for the gauge")
            }
        }
    });
}
