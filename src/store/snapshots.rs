//! Snapshot history: every publish of a version keeps its whole result, typed and compressed.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::Store;

/// How a snapshot came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A compute, live (valid from its publish) or `as_of` (valid from that instant).
    Compute,
    /// One step of a backfill.
    Backfill,
    /// A scheduled refresh after new rows arrived.
    Refresh,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Compute => "compute",
            SnapshotKind::Backfill => "backfill",
            SnapshotKind::Refresh => "refresh",
        }
    }
}

/// A snapshot without its data.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SnapshotRow {
    pub id: i64,
    pub feature_version_id: i64,
    pub valid_from: DateTime<Utc>,
    pub computed_at: DateTime<Utc>,
    pub entity_count: i64,
    pub kind: String,
    /// The table version it read (`None`: its rows came with the request), and when that
    /// version was committed.
    pub data_version: Option<i64>,
    pub data_as_of: Option<DateTime<Utc>>,
    /// Its Parquet file, relative to the data location (`None` only for a snapshot still
    /// waiting to be moved out of the database at start).
    pub location: Option<String>,
}

const SNAPSHOT_COLUMNS: &str = "id, feature_version_id, valid_from, computed_at, entity_count, \
     kind, data_version, data_as_of, location";

impl Store {
    /// A version's snapshots, oldest first (ties by id, as serving breaks them).
    pub async fn list_snapshots(&self, version_id: i64) -> Result<Vec<SnapshotRow>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM feature_snapshots WHERE feature_version_id = $1 \
             ORDER BY valid_from, id"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(version_id)
            .fetch_all(p)
            .await)?)
    }

    /// The newest `valid_from` among a version's snapshots (by feature and label: a first
    /// compute has no version id yet).
    pub async fn newest_valid_from(
        &self,
        feature_id: i64,
        version: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        if !super::storable(version) {
            return Ok(None);
        }
        let newest: Option<Option<DateTime<Utc>>> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT MAX(s.valid_from) FROM feature_snapshots s \
             JOIN feature_versions v ON v.id = s.feature_version_id \
             WHERE v.feature_id = $1 AND v.version = $2"
        )
        .bind(feature_id)
        .bind(version)
        .fetch_optional(p)
        .await)?;
        Ok(newest.flatten())
    }

    /// The snapshot in force at `at`: the greatest `valid_from` at or before it.
    pub async fn snapshot_at(
        &self,
        version_id: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<SnapshotRow>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM feature_snapshots \
             WHERE feature_version_id = $1 AND valid_from <= $2 \
             ORDER BY valid_from DESC, id DESC LIMIT 1"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(version_id)
            .bind(at)
            .fetch_optional(p)
            .await)?)
    }

    /// A snapshot's stored statistics (JSON; `None` for snapshots made before statistics).
    pub async fn snapshot_stats(&self, snapshot_id: i64) -> Result<Option<String>> {
        let stats: Option<Option<String>> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT stats FROM feature_snapshots WHERE id = $1"
        )
        .bind(snapshot_id)
        .fetch_optional(p)
        .await)?;
        Ok(stats.flatten())
    }

    /// The drift of `target` from `base` (JSON), if it was kept.
    pub async fn kept_drift(&self, target: i64, base: i64) -> Result<Option<String>> {
        let drift: Option<Option<String>> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT drift FROM feature_snapshots WHERE id = $1 AND drift_base = $2"
        )
        .bind(target)
        .bind(base)
        .fetch_optional(p)
        .await)?;
        Ok(drift.flatten())
    }

    /// Keep the drift of `target` from `base`, the snapshot before it.
    pub async fn keep_drift(&self, target: i64, base: i64, drift: &str) -> Result<()> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE feature_snapshots SET drift_base = $2, drift = $3 WHERE id = $1"
        )
        .bind(target)
        .bind(base)
        .bind(drift)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn get_snapshot(&self, snapshot_id: i64) -> Result<Option<SnapshotRow>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM feature_snapshots WHERE id = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(snapshot_id)
            .fetch_optional(p)
            .await)?)
    }

    /// Delete the snapshots superseded at or before `cutoff`: a newer one of the same version
    /// (by `valid_from`) was recorded by then. When it is recorded counts, not when it is
    /// valid from: a backfill into last year supersedes its steps today, and they stay for the
    /// retention period from today. Each version keeps its newest. Returns the files of those
    /// that went.
    pub async fn prune_snapshots(&self, cutoff: DateTime<Utc>) -> Result<Vec<Option<String>>> {
        Ok(on_pool!(self, write, |p| {
            sqlx::query_scalar(
            "DELETE FROM feature_snapshots WHERE EXISTS (SELECT 1 FROM feature_snapshots newer \
             WHERE newer.feature_version_id = feature_snapshots.feature_version_id \
             AND newer.computed_at <= $1 \
             AND (newer.valid_from > feature_snapshots.valid_from \
                  OR (newer.valid_from = feature_snapshots.valid_from AND newer.id > feature_snapshots.id))) \
             RETURNING location"
        )
        .bind(cutoff)
        .fetch_all(p)
        .await
        })?)
    }
}
