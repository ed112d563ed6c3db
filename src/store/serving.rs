//! What serving reads: which version a name or an id means now, and its freshness.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::{ChangeState, Store};
use crate::served::VersionMeta;

/// What serving reports about a version besides its id: how fresh its served snapshot is.
pub(super) const META_COLUMNS: &str = concat!(
    "v.id AS version_id, v.entity_key, v.generation, v.entity_count, v.computed_at, v.data_as_of, ",
    stale_sql!("v", "f.raw_table_id")
);

impl Store {
    /// The change counter as committed now: what every replica polls.
    pub async fn change_state(&self) -> Result<ChangeState> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT instance, changes FROM cache_state WHERE id = 1"
        )
        .fetch_one(p)
        .await)?)
    }
    /// Give the database a new instance name (and count a change), unless another replica
    /// already did: called when the change counter is found below what caches saw, a database
    /// restored from a backup. Entries cached under the old name, in Redis and in each
    /// replica, are never read again. Returns the state now.
    pub async fn rename_instance(&self, old: &str, new: &str) -> Result<ChangeState> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE cache_state SET instance = $2, changes = changes + 1 \
             WHERE id = 1 AND instance = $1"
        )
        .bind(old)
        .bind(new)
        .execute(p)
        .await
        .map(|_| ()))?;
        self.change_state().await
    }

    /// The newest active version of a feature (by id) that has been computed.
    pub async fn latest_served_version(&self, feature_name: &str) -> Result<Option<VersionMeta>> {
        if !super::storable(feature_name) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {META_COLUMNS} FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE f.name = $1 AND v.status = 'active' AND v.computed_at IS NOT NULL \
             ORDER BY v.id DESC LIMIT 1"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(feature_name)
            .fetch_optional(p)
            .await)?)
    }

    /// The version serving by `feature_name` at `at`: the newest (by id) that was active then
    /// and had a snapshot recorded by then. A version made or archived later, or only
    /// backfilled later, does not change what was served then.
    pub async fn served_version_at(
        &self,
        feature_name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<VersionMeta>> {
        if !super::storable(feature_name) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {META_COLUMNS} FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE f.name = $1 \
             AND EXISTS (SELECT 1 FROM feature_snapshots s \
                         WHERE s.feature_version_id = v.id AND s.computed_at <= $2) \
             AND (SELECT c.status FROM version_status_changes c \
                  WHERE c.feature_version_id = v.id AND c.changed_at <= $2 \
                  ORDER BY c.changed_at DESC, c.id DESC LIMIT 1) = 'active' \
             ORDER BY v.id DESC LIMIT 1"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(feature_name)
            .bind(at)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn version_meta(&self, version_id: i64) -> Result<Option<VersionMeta>> {
        let sql = format!(
            "SELECT {META_COLUMNS} FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE v.id = $1"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(version_id)
            .fetch_optional(p)
            .await)?)
    }

    /// A feature's version by its label, whatever its status.
    pub async fn version_meta_by_label(
        &self,
        feature_name: &str,
        version: &str,
    ) -> Result<Option<VersionMeta>> {
        if !super::storable(feature_name) || !super::storable(version) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {META_COLUMNS} FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE f.name = $1 AND v.version = $2"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(feature_name)
            .bind(version)
            .fetch_optional(p)
            .await)?)
    }
}
