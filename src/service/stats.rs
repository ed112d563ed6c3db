//! Statistics of snapshots and drift between them.

use std::collections::BTreeMap;

use super::{Result, ServiceError};
use crate::engine::drift;
use crate::metrics::Metrics;
use crate::model::{ColumnDrift, DriftBin};
use crate::model::{Drift, SnapshotStats};
use crate::offline::OfflineStore;
use crate::store::{SnapshotRow, Store};
use crate::worker::protocol::{DriftJob, StatsJob};
use crate::worker::{ComputePool, Job, Task};

use super::history;
use super::{failures, lookup};
use failures::worker_error;

/// The parts of the app statistics use: snapshot rows, their files, the workers that read
/// them, and the drift gauge.
#[derive(Clone)]
pub struct Parts {
    pub store: Store,
    pub offline: OfflineStore,
    pub compute: ComputePool,
    pub metrics: Metrics,
}

/// A snapshot of this version, or `NotFound`.
async fn snapshot_of(parts: &Parts, version_id: i64, snapshot_id: i64) -> Result<SnapshotRow> {
    match parts.store.get_snapshot(snapshot_id).await? {
        Some(s) if s.feature_version_id == version_id => Ok(s),
        _ => Err(ServiceError::NotFound(format!(
            "Snapshot {snapshot_id} of feature version {version_id} not found"
        ))),
    }
}

/// The version's snapshots in serving order (by valid_from, then id); `NotFound` when it has none.
async fn ordered(parts: &Parts, version_id: i64) -> Result<Vec<SnapshotRow>> {
    let list = parts.store.list_snapshots(version_id).await?;
    if list.is_empty() {
        return Err(ServiceError::NotFound(format!(
            "Feature version {version_id} has no snapshots yet: compute it first"
        )));
    }
    Ok(list)
}

pub async fn of_snapshot(
    parts: &Parts,
    feature_id: i64,
    version_id: i64,
    snapshot_id: i64,
) -> Result<SnapshotStats> {
    lookup::version(&parts.store, feature_id, version_id).await?;
    let snapshot = snapshot_of(parts, version_id, snapshot_id).await?;
    stats_of(parts, &snapshot).await
}

/// The statistics of the snapshot served now (the newest).
pub async fn of_newest(parts: &Parts, feature_id: i64, version_id: i64) -> Result<SnapshotStats> {
    lookup::version(&parts.store, feature_id, version_id).await?;
    let list = ordered(parts, version_id).await?;
    let newest = list
        .last()
        .ok_or_else(|| ServiceError::fault("no snapshot"))?;
    stats_of(parts, newest).await
}

/// Stored statistics, or (for a snapshot made before they were) computed from its data now.
async fn stats_of(parts: &Parts, snapshot: &SnapshotRow) -> Result<SnapshotStats> {
    let columns = match parts.store.snapshot_stats(snapshot.id).await? {
        Some(json) => serde_json::from_str(&json).map_err(ServiceError::fault)?,
        None => {
            let task = Task::Stats(StatsJob {
                snapshot: history::file_uri(&parts.offline, snapshot)?,
            });
            let payload = in_worker(parts, task, "Statistics failed").await?;
            serde_json::from_slice(&payload).map_err(ServiceError::fault)?
        }
    };
    Ok(SnapshotStats {
        snapshot_id: snapshot.id,
        entity_count: snapshot.entity_count,
        columns,
    })
}

/// Drift from `base` to `target` (defaults: the newest snapshot, and the one before it).
/// A read: drift between consecutive snapshots kept by the publish path is answered from the
/// database, anything else is computed in a worker and not stored.
pub async fn drift(
    parts: &Parts,
    feature_id: i64,
    version_id: i64,
    base: Option<i64>,
    target: Option<i64>,
) -> Result<Drift> {
    let version = lookup::version(&parts.store, feature_id, version_id).await?;
    let list = ordered(parts, version_id).await?;
    let target = match target {
        Some(id) => snapshot_of(parts, version_id, id).await?,
        None => list
            .last()
            .cloned()
            .ok_or_else(|| ServiceError::fault("no snapshot"))?,
    };
    let base = match base {
        Some(id) => snapshot_of(parts, version_id, id).await?,
        None => {
            let at = list.iter().position(|s| s.id == target.id).unwrap_or(0);
            at.checked_sub(1).map(|i| list[i].clone()).ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "Snapshot {} is the first of feature version {version_id}: there is nothing to compare it with",
                    target.id
                ))
            })?
        }
    };
    let newest_pair = list.len() >= 2
        && list[list.len() - 1].id == target.id
        && list[list.len() - 2].id == base.id;
    let columns = match parts.store.kept_drift(target.id, base.id).await? {
        Some(json) => serde_json::from_str(&json).map_err(ServiceError::fault)?,
        None => computed_drift(parts, &base, &target).await?,
    };
    if newest_pair {
        let feature = lookup::feature(&parts.store, feature_id).await?;
        parts
            .metrics
            .set_drift(&feature.name, &version.version, &columns);
    }
    Ok(Drift {
        base: base.id,
        target: target.id,
        columns,
    })
}

async fn computed_drift(
    parts: &Parts,
    base: &SnapshotRow,
    target: &SnapshotRow,
) -> Result<BTreeMap<String, ColumnDrift>> {
    let task = Task::Drift(DriftJob {
        base: history::file_uri(&parts.offline, base)?,
        target: history::file_uri(&parts.offline, target)?,
    });
    let payload = in_worker(parts, task, "Drift failed").await?;
    let columns: BTreeMap<String, drift::ColumnDrift> =
        serde_json::from_slice(&payload).map_err(ServiceError::fault)?;
    Ok(columns
        .into_iter()
        .map(|(name, c)| (name, column_drift(c)))
        .collect())
}

/// The engine's drift of a column in the API's shape.
fn column_drift(c: drift::ColumnDrift) -> ColumnDrift {
    ColumnDrift {
        kind: c.kind,
        psi: c.psi,
        null_rate_change: c.null_rate_change,
        base_null_rate: c.base_null_rate,
        target_null_rate: c.target_null_rate,
        bins: c
            .bins
            .into_iter()
            .map(|b| DriftBin {
                label: b.label,
                lower: b.lower,
                upper: b.upper,
                base: b.base,
                target: b.target,
            })
            .collect(),
    }
}

/// Run a task that answers with one payload in a worker, under the compute limits.
async fn in_worker(parts: &Parts, task: Task, failed: &str) -> Result<Vec<u8>> {
    let job = Job {
        task,
        storage: parts.offline.options().clone(),
    };
    let (_, payload) = parts
        .compute
        .run(&job, None)
        .await
        .map_err(|e| worker_error(e, failed))?;
    payload.ok_or_else(|| ServiceError::fault("the worker sent no answer"))
}

/// After a publish that became the served snapshot: the drift from the one before it, kept
/// (snapshots never change, so it is computed once, here and not on a read) and set on the
/// gauge, in the background.
pub fn refresh_drift_gauge(parts: Parts, feature_id: i64, version_id: i64) {
    tokio::spawn(async move {
        if let Err(e) = keep_newest_drift(&parts, version_id).await {
            tracing::warn!(version_id, error = %e, "could not compute drift for the gauge");
            return;
        }
        match drift(&parts, feature_id, version_id, None, None).await {
            Ok(_) | Err(ServiceError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(version_id, error = %e, "could not compute drift for the gauge")
            }
        }
    });
}

/// Compute and keep the drift between the version's two newest snapshots, if not kept yet.
async fn keep_newest_drift(parts: &Parts, version_id: i64) -> Result<()> {
    let list = parts.store.list_snapshots(version_id).await?;
    let [.., base, target] = list.as_slice() else {
        return Ok(());
    };
    if parts.store.kept_drift(target.id, base.id).await?.is_some() {
        return Ok(());
    }
    let columns = computed_drift(parts, base, target).await?;
    let json = serde_json::to_string(&columns).map_err(ServiceError::fault)?;
    parts.store.keep_drift(target.id, base.id, &json).await?;
    Ok(())
}
