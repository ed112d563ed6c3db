//! What the move of stored blobs into the offline store (`service::migrate`) reads and records.
//! Each step commits on its own, so a move that stops half-way resumes where it stopped.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::raw_tables::RAW_TABLE_COLUMNS;
use super::{RawTableRow, Store};

/// A raw batch stored in the database before raw tables became Delta tables.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LegacyBatch {
    pub id: i64,
    pub row_count: i64,
    pub created_at: DateTime<Utc>,
}

/// Held while one replica moves blobs (Postgres: a session advisory lock on its own
/// connection), so two replicas starting at once do not both move them.
pub enum MoveLock {
    Sqlite,
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// An arbitrary constant naming this lock among advisory locks.
const MOVE_LOCK_KEY: i64 = 0x6673_6d6f_7665;

impl MoveLock {
    pub async fn release(self) {
        if let MoveLock::Postgres(mut conn) = self {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MOVE_LOCK_KEY)
                .execute(&mut *conn)
                .await;
        }
    }
}

impl Store {
    pub async fn lock_blob_move(&self) -> Result<MoveLock> {
        match self {
            Store::Sqlite { .. } => Ok(MoveLock::Sqlite),
            Store::Postgres(p) => {
                let mut conn = p.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MOVE_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
                Ok(MoveLock::Postgres(conn))
            }
        }
    }

    /// Managed raw tables whose Delta table was never made (registered before, or their
    /// creation was interrupted).
    pub async fn tables_without_storage(&self) -> Result<Vec<RawTableRow>> {
        let sql = format!(
            "SELECT {RAW_TABLE_COLUMNS} FROM raw_tables \
             WHERE storage_uri IS NULL AND source_format IS NULL ORDER BY id"
        );
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await)?)
    }

    /// Tables that still have batches in the database.
    pub async fn tables_with_blobs(&self) -> Result<Vec<i64>> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT DISTINCT raw_table_id FROM raw_table_batches ORDER BY raw_table_id"
        )
        .fetch_all(p)
        .await)?)
    }

    pub async fn legacy_batches(&self, raw_table_id: i64) -> Result<Vec<LegacyBatch>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT id, row_count, created_at FROM raw_table_batches \
             WHERE raw_table_id = $1 ORDER BY id"
        )
        .bind(raw_table_id)
        .fetch_all(p)
        .await)?)
    }

    pub async fn legacy_batch_data(&self, batch_id: i64) -> Result<Vec<u8>> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT data FROM raw_table_batches WHERE id = $1"
        )
        .bind(batch_id)
        .fetch_one(p)
        .await)?)
    }

    /// A batch now lives in the table's Delta version `version`: record that version, point
    /// the snapshots and versions that read the batch at it, and drop the blob.
    pub async fn finish_moved_batch(
        &self,
        raw_table_id: i64,
        batch: &LegacyBatch,
        version: i64,
    ) -> Result<()> {
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO raw_table_versions (raw_table_id, version, row_count, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (raw_table_id, version) DO NOTHING",
            )
            .bind(raw_table_id)
            .bind(version)
            .bind(batch.row_count)
            .bind(batch.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE feature_snapshots SET data_version = $2 WHERE data_batch_id = $1")
                .bind(batch.id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE feature_versions SET data_version = $2 WHERE data_batch_id = $1")
                .bind(batch.id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM raw_table_batches WHERE id = $1")
                .bind(batch.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(super::BUMP_CHANGES).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Snapshots still stored as blobs: (id, feature id).
    pub async fn legacy_snapshots(&self) -> Result<Vec<(i64, i64)>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT s.id, v.feature_id FROM feature_snapshots s \
             JOIN feature_versions v ON v.id = s.feature_version_id \
             WHERE s.location IS NULL AND s.data IS NOT NULL ORDER BY s.id"
        )
        .fetch_all(p)
        .await)?)
    }

    pub async fn legacy_snapshot_data(&self, snapshot_id: i64) -> Result<Option<Vec<u8>>> {
        let data: Option<Option<Vec<u8>>> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT data FROM feature_snapshots WHERE id = $1"
        )
        .bind(snapshot_id)
        .fetch_optional(p)
        .await)?;
        Ok(data.flatten())
    }

    /// A snapshot now lives in a file: record where, and drop the blob.
    pub async fn set_snapshot_location(&self, snapshot_id: i64, location: &str) -> Result<()> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE feature_snapshots SET location = $2, data = NULL WHERE id = $1"
        )
        .bind(snapshot_id)
        .bind(location)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
