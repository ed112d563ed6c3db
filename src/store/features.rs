//! Features: registering, listing, deleting (with their versions and vectors).

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::{Changed, FeatureRow, Store};

/// A feature to register.
pub struct NewFeature<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub raw_table_id: i64,
    pub computation_logic: &'a str,
    pub entity_key: &'a str,
    /// `polars` or `spark`.
    pub engine: &'a str,
    /// An aggregation feature's declaration (JSON).
    pub declaration: Option<&'a str>,
}

pub(super) const FEATURE_COLUMNS: &str =
    "id, name, description, raw_table_id, computation_logic, entity_key, \
     engine, declaration, created_at, updated_at";

impl Store {
    pub async fn create_feature(
        &self,
        new: &NewFeature<'_>,
        now: DateTime<Utc>,
    ) -> Result<FeatureRow> {
        let sql = format!(
            "INSERT INTO features (name, description, raw_table_id, computation_logic, entity_key, \
             created_at, updated_at, engine, declaration) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) \
             RETURNING {FEATURE_COLUMNS}"
        );
        on_pool!(self, write, |p| sqlx::query_as(&sql)
            .bind(new.name)
            .bind(new.description)
            .bind(new.raw_table_id)
            .bind(new.computation_logic)
            .bind(new.entity_key)
            .bind(now)
            .bind(new.engine)
            .bind(new.declaration)
            .fetch_one(p)
            .await
            .map_err(classify))
    }

    pub async fn list_features(&self) -> Result<Vec<FeatureRow>> {
        let sql = format!("SELECT {FEATURE_COLUMNS} FROM features ORDER BY id");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await)?)
    }

    pub async fn get_feature(&self, id: i64) -> Result<Option<FeatureRow>> {
        let sql = format!("SELECT {FEATURE_COLUMNS} FROM features WHERE id = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn feature_by_name(&self, name: &str) -> Result<Option<FeatureRow>> {
        if !super::storable(name) {
            return Ok(None);
        }
        let sql = format!("SELECT {FEATURE_COLUMNS} FROM features WHERE name = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn feature_exists_by_name(&self, name: &str) -> Result<bool> {
        if !super::storable(name) {
            return Ok(false);
        }
        let found: Option<i64> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT id FROM features WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(p)
        .await)?;
        Ok(found.is_some())
    }

    /// Deletes the feature with its versions; their vectors and snapshot files are left for
    /// the caller to drop (`Changed`). `None` when there was no such feature.
    pub async fn delete_feature(&self, id: i64) -> Result<Option<Changed>> {
        let deleted = self
            .delete_counted(
                "DELETE FROM features WHERE id = $1",
                "feature_versions v WHERE v.feature_id = $1",
                id,
            )
            .await?;
        Ok(deleted.map(|changed| Changed {
            feature_deleted: Some(id),
            ..changed
        }))
    }
}
