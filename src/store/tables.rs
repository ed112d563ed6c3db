//! The versions of each raw table the service has seen (Delta commits, or listings of a Parquet
//! dataset): what freshness and refresh compare, and what row counts add up.

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::{Changed, Store, BUMP_CHANGES};

/// One version of a raw table.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TableVersion {
    pub version: i64,
    /// When the service committed or first saw it.
    pub created_at: DateTime<Utc>,
    /// A Parquet dataset's listing at this version.
    pub fingerprint: Option<String>,
}

/// How much a raw table holds, and when it last took rows.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IngestSummary {
    pub raw_table_id: i64,
    pub row_count: i64,
    pub last_ingest_at: DateTime<Utc>,
    /// The newest version.
    pub version: i64,
}

impl Store {
    /// Record a version of a raw table (nothing happens if it is known). Returns what it
    /// changed: the change counter it committed when the version was new (every version over
    /// the table is now stale, and serving says so).
    pub async fn record_table_version(
        &self,
        raw_table_id: i64,
        version: i64,
        row_count: i64,
        fingerprint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Changed> {
        self.insert_table_version(
            "INSERT INTO raw_table_versions (raw_table_id, version, row_count, created_at, \
             fingerprint) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (raw_table_id, version) DO NOTHING",
            (raw_table_id, version, row_count, fingerprint, now),
        )
        .await
    }

    /// Record a version of a raw table that holds `total_rows` in all: its own rows are the
    /// total less what the versions recorded before it hold, counted in the same statement.
    /// Two replicas recording the versions they missed at once then never count one
    /// version's rows twice (a count read first, then written, did: the other replica's
    /// version could land in between).
    pub async fn record_table_version_holding(
        &self,
        raw_table_id: i64,
        version: i64,
        total_rows: i64,
        fingerprint: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Changed> {
        // `WHERE true`: SQLite needs it to read ON CONFLICT after INSERT ... SELECT.
        self.insert_table_version(
            "INSERT INTO raw_table_versions (raw_table_id, version, row_count, created_at, \
             fingerprint) SELECT $1, $2, $3 - COALESCE((SELECT CAST(SUM(row_count) AS BIGINT) \
             FROM raw_table_versions WHERE raw_table_id = $1), 0), $4, $5 WHERE true \
             ON CONFLICT (raw_table_id, version) DO NOTHING",
            (raw_table_id, version, total_rows, fingerprint, now),
        )
        .await
    }

    async fn insert_table_version(
        &self,
        sql: &str,
        (raw_table_id, version, row_count, fingerprint, now): (
            i64,
            i64,
            i64,
            Option<&str>,
            DateTime<Utc>,
        ),
    ) -> Result<Changed> {
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            let added = sqlx::query(sql)
                .bind(raw_table_id)
                .bind(version)
                .bind(row_count)
                .bind(now)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
            if added == 0 {
                return Ok(Changed::default());
            }
            let change: i64 = sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Changed {
                change: Some(change),
                ..Changed::default()
            })
        })
    }

    /// The newest version of a raw table the service knows.
    pub async fn newest_table_version(&self, raw_table_id: i64) -> Result<Option<TableVersion>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT version, created_at, fingerprint FROM raw_table_versions \
             WHERE raw_table_id = $1 ORDER BY version DESC LIMIT 1"
        )
        .bind(raw_table_id)
        .fetch_optional(p)
        .await)?)
    }

    /// One known version of a raw table.
    pub async fn table_version(
        &self,
        raw_table_id: i64,
        version: i64,
    ) -> Result<Option<TableVersion>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT version, created_at, fingerprint FROM raw_table_versions \
             WHERE raw_table_id = $1 AND version = $2"
        )
        .bind(raw_table_id)
        .bind(version)
        .fetch_optional(p)
        .await)?)
    }

    /// Whether the raw table of a version has a version newer than `read` (the one a snapshot
    /// read; `None`: it read none).
    pub async fn has_newer_table_version(
        &self,
        version_id: i64,
        read: Option<i64>,
    ) -> Result<bool> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM raw_table_versions r \
             JOIN features f ON f.raw_table_id = r.raw_table_id \
             JOIN feature_versions v ON v.feature_id = f.id \
             WHERE v.id = $1 AND r.version > $2)"
        )
        .bind(version_id)
        .bind(read.unwrap_or(-1))
        .fetch_one(p)
        .await)?)
    }

    /// Rows stored and the newest version's time, for each table that has any (all tables, or
    /// one).
    pub async fn ingest_summaries(&self, only: Option<i64>) -> Result<Vec<IngestSummary>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT raw_table_id, CAST(SUM(row_count) AS BIGINT) AS row_count, \
             MAX(created_at) AS last_ingest_at, MAX(version) AS version FROM raw_table_versions \
             WHERE $1 IS NULL OR raw_table_id = $1 GROUP BY raw_table_id"
        )
        .bind(only)
        .fetch_all(p)
        .await)?)
    }

    pub async fn stored_row_count(&self, raw_table_id: i64) -> Result<i64> {
        let n: Option<i64> = on_pool!(self, read, |p| {
            sqlx::query_scalar(
                "SELECT CAST(SUM(row_count) AS BIGINT) FROM raw_table_versions \
                 WHERE raw_table_id = $1",
            )
            .bind(raw_table_id)
            .fetch_one(p)
            .await
        })?;
        Ok(n.unwrap_or(0))
    }

    /// Where a raw table's rows live, once its Delta table exists.
    /// Record where a table's rows live, unless another replica recorded a place first; the
    /// place that holds (`None`: the table is gone).
    pub async fn claim_storage_uri(&self, raw_table_id: i64, uri: &str) -> Result<Option<String>> {
        let stored: Option<Option<String>> = on_pool!(self, write, |p| sqlx::query_scalar(
            "UPDATE raw_tables SET storage_uri = COALESCE(storage_uri, $2) WHERE id = $1 \
             RETURNING storage_uri"
        )
        .bind(raw_table_id)
        .bind(uri)
        .fetch_optional(p)
        .await
        .map_err(classify))?;
        Ok(stored.flatten())
    }
}
