//! Raw tables: registering, listing, deleting; where their rows live.

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::{RawTableRow, Store};

/// A raw table to register.
pub struct NewRawTable<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub schema_definition: &'a str,
    pub event_time_column: Option<&'a str>,
    /// An external dataset's URI; `None` for a managed table (its Delta table is made next).
    pub storage_uri: Option<&'a str>,
    pub source_format: Option<&'a str>,
    /// An external dataset's version now.
    pub initial_version: Option<InitialVersion>,
}

pub struct InitialVersion {
    pub version: i64,
    pub row_count: i64,
    pub fingerprint: Option<String>,
}

pub(super) const RAW_TABLE_COLUMNS: &str =
    "id, name, description, schema_definition, event_time_column, \
     storage_uri, source_format, created_at, updated_at";

impl Store {
    /// Register a raw table and, for an external dataset, the version it has now, together.
    pub async fn create_raw_table(
        &self,
        new: &NewRawTable<'_>,
        now: DateTime<Utc>,
    ) -> Result<RawTableRow> {
        let sql = format!(
            "INSERT INTO raw_tables (name, description, schema_definition, event_time_column, \
             storage_uri, source_format, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {RAW_TABLE_COLUMNS}"
        );
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            let row: RawTableRow = sqlx::query_as(&sql)
                .bind(new.name)
                .bind(new.description)
                .bind(new.schema_definition)
                .bind(new.event_time_column)
                .bind(new.storage_uri)
                .bind(new.source_format)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
            if let Some(v) = &new.initial_version {
                sqlx::query(
                    "INSERT INTO raw_table_versions (raw_table_id, version, row_count, \
                     created_at, fingerprint) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(row.id)
                .bind(v.version)
                .bind(v.row_count)
                .bind(now)
                .bind(v.fingerprint.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn list_raw_tables(&self) -> Result<Vec<RawTableRow>> {
        let sql = format!("SELECT {RAW_TABLE_COLUMNS} FROM raw_tables ORDER BY id");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await)?)
    }

    pub async fn get_raw_table(&self, id: i64) -> Result<Option<RawTableRow>> {
        let sql = format!("SELECT {RAW_TABLE_COLUMNS} FROM raw_tables WHERE id = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// Deletes the table and its stored rows; refused while a feature reads it.
    pub async fn delete_raw_table(&self, id: i64) -> Result<bool> {
        on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM raw_tables WHERE id = $1"
        )
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(classify))
    }

    pub async fn feature_names_of_raw_table(&self, raw_table_id: i64) -> Result<Vec<String>> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT name FROM features WHERE raw_table_id = $1 ORDER BY name"
        )
        .bind(raw_table_id)
        .fetch_all(p)
        .await)?)
    }
}
