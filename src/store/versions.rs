//! Versions: creating, listing, changing, deleting; a version's served snapshot.

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::{Changed, Store, VersionRow, BUMP_CHANGES};

/// A version to create.
pub struct NewVersion<'a> {
    pub feature_id: i64,
    pub version: &'a str,
    pub status: &'a str,
    pub computation_logic: &'a str,
    pub entity_key: &'a str,
    pub refresh_every_seconds: Option<i64>,
}

/// What a PATCH of a version changes; `None` leaves that part as it is.
pub struct VersionChange<'a> {
    pub status: Option<&'a str>,
    /// `Some(None)`: back to manual.
    pub refresh_every_seconds: Option<Option<i64>>,
}

pub(super) const VERSION_COLUMNS: &str = concat!(
    "id, feature_id, version, status, computation_logic, entity_key, created_at, updated_at, \
     computed_at, entity_count, output_schema, generation, data_version, data_as_of, \
     refresh_every_seconds, next_refresh_at, refresh_checked_at, refresh_failures, ",
    stale_sql!(
        "feature_versions",
        "(SELECT raw_table_id FROM features WHERE id = feature_versions.feature_id)"
    )
);

impl Store {
    /// `refresh_every_seconds`: the refresh period, or `None` for manual; a scheduled version
    /// is due at once (the first check finds out whether there is anything to compute).
    pub async fn create_version(
        &self,
        new: &NewVersion<'_>,
        now: DateTime<Utc>,
    ) -> Result<VersionRow> {
        let sql = format!(
            "INSERT INTO feature_versions (feature_id, version, status, computation_logic, \
             entity_key, created_at, updated_at, refresh_every_seconds, next_refresh_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) RETURNING {VERSION_COLUMNS}"
        );
        let next = new.refresh_every_seconds.map(|_| now);
        on_pool!(self, write, |p| sqlx::query_as(&sql)
            .bind(new.feature_id)
            .bind(new.version)
            .bind(new.status)
            .bind(new.computation_logic)
            .bind(new.entity_key)
            .bind(now)
            .bind(new.refresh_every_seconds)
            .bind(next)
            .fetch_one(p)
            .await
            .map_err(classify))
    }

    pub async fn list_versions(&self, feature_id: i64) -> Result<Vec<VersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM feature_versions WHERE feature_id = $1 ORDER BY id"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(feature_id)
            .fetch_all(p)
            .await)?)
    }

    pub async fn get_version(&self, id: i64) -> Result<Option<VersionRow>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM feature_versions WHERE id = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn find_version(&self, feature_id: i64, version: &str) -> Result<Option<VersionRow>> {
        if !super::storable(version) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM feature_versions WHERE feature_id = $1 AND version = $2"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(feature_id)
            .bind(version)
            .fetch_optional(p)
            .await)?)
    }

    /// Change a version's status and/or refresh period in one transaction. Returns the updated
    /// version and, when the status changed what is served, the change counter it committed.
    pub async fn update_version(
        &self,
        id: i64,
        change: &VersionChange<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<(VersionRow, Changed)>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM feature_versions WHERE id = $1");
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            let touched = sqlx::query("UPDATE feature_versions SET updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if touched == 0 {
                return Ok(None);
            }
            let mut counted = None;
            if let Some(status) = change.status {
                sqlx::query("UPDATE feature_versions SET status = $2 WHERE id = $1")
                    .bind(id)
                    .bind(status)
                    .execute(&mut *tx)
                    .await?;
                counted = Some(sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?);
            }
            if let Some(every) = change.refresh_every_seconds {
                // A new period starts now: the first check is due at once.
                sqlx::query(
                    "UPDATE feature_versions SET refresh_every_seconds = $2, next_refresh_at = $3, \
                     refresh_failures = 0 WHERE id = $1",
                )
                .bind(id)
                .bind(every)
                .bind(every.map(|_| now))
                .execute(&mut *tx)
                .await?;
            }
            let row: VersionRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some((
                row,
                Changed {
                    change: counted,
                    ..Changed::default()
                },
            )))
        })
    }

    /// Deletes the version; its vectors and snapshot files are left for the caller to drop
    /// (`Changed`). `None` when there was no such version.
    pub async fn delete_version(&self, id: i64) -> Result<Option<Changed>> {
        self.delete_counted(
            "DELETE FROM feature_versions WHERE id = $1",
            "feature_versions v WHERE v.id = $1",
            id,
        )
        .await
    }
}
