//! Streams that raw tables follow: their sources, the lease that lets one replica commit each,
//! and what that replica last reported. Offsets are not kept here (they live in the Delta
//! table's transactions, committed with the rows); `committed_offset` only shows them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::Store;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StreamRow {
    pub raw_table_id: i64,
    /// The source as JSON (`model::StreamSource`).
    pub source: String,
    pub rejected_location: String,
    pub generation: i64,
    pub holder: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub status: String,
    pub reason: Option<String>,
    pub committed_offset: Option<i64>,
    pub lag: Option<i64>,
    /// A stream of several partitions: each one's committed offset and lag (JSON,
    /// `model::StreamPartition`s).
    pub partitions: Option<String>,
    pub events_committed: i64,
    pub rejected: i64,
    pub events_per_second: Option<f64>,
    pub last_commit_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const STREAM_COLUMNS: &str = "raw_table_id, source, rejected_location, generation, holder, \
     expires_at, status, reason, committed_offset, lag, partitions, events_committed, \
     rejected, events_per_second, last_commit_at, created_at, updated_at";

/// What the committing replica reports after a commit or a failure.
#[derive(Debug, Clone, Default)]
pub struct StreamProgress {
    pub status: &'static str,
    pub reason: Option<String>,
    /// Set on a commit (or when the committed offsets were read at start).
    pub committed_offset: Option<i64>,
    pub lag: Option<i64>,
    /// Set with each partition's offset and lag, for a stream of several (JSON).
    pub partitions: Option<String>,
    pub events_committed: i64,
    pub rejected: i64,
    pub events_per_second: Option<f64>,
    pub committed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Make the table follow `source`, or change what it follows: a change moves the
    /// generation, so the replica following the old source stops, and clears the report.
    pub async fn put_stream(
        &self,
        raw_table_id: i64,
        source: &str,
        rejected_location: &str,
        now: DateTime<Utc>,
    ) -> Result<StreamRow> {
        // A generation from the clock, moving up at least one: a stream deleted and set again
        // within one look of the followers' supervisor is still another generation.
        let sql = format!(
            "INSERT INTO raw_table_streams (raw_table_id, source, rejected_location, expires_at, \
             created_at, updated_at, generation) VALUES ($1, $2, $3, $4, $5, $5, $6) \
             ON CONFLICT (raw_table_id) DO UPDATE SET source = excluded.source, \
             generation = CASE WHEN excluded.generation > raw_table_streams.generation \
             THEN excluded.generation ELSE raw_table_streams.generation + 1 END, \
             status = 'starting', reason = NULL, lag = NULL, partitions = NULL, \
             events_per_second = NULL, \
             updated_at = excluded.updated_at \
             RETURNING {STREAM_COLUMNS}"
        );
        on_pool!(self, write, |p| sqlx::query_as(&sql)
            .bind(raw_table_id)
            .bind(source)
            .bind(rejected_location)
            .bind(DateTime::<Utc>::UNIX_EPOCH)
            .bind(now)
            .bind(now.timestamp_micros())
            .fetch_one(p)
            .await
            .map_err(classify))
    }

    pub async fn get_stream(&self, raw_table_id: i64) -> Result<Option<StreamRow>> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM raw_table_streams WHERE raw_table_id = $1");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .bind(raw_table_id)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn list_streams(&self) -> Result<Vec<StreamRow>> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM raw_table_streams ORDER BY raw_table_id");
        Ok(on_pool!(self, read, |p| sqlx::query_as(&sql)
            .fetch_all(p)
            .await)?)
    }

    /// Stop following; whether the table followed a stream.
    pub async fn delete_stream(&self, raw_table_id: i64) -> Result<bool> {
        Ok(on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM raw_table_streams WHERE raw_table_id = $1"
        )
        .bind(raw_table_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected() > 0))?)
    }

    /// Take or renew the lease to commit the stream of `raw_table_id` at `generation`, for
    /// `ttl`; whether `holder` holds it now. One UPDATE decides, as for the scheduler's lease
    /// (`hold_lease`); a changed or deleted stream matches no row, so its follower stops.
    pub async fn hold_stream_lease(
        &self,
        raw_table_id: i64,
        generation: i64,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let held: Option<i64> = match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(
                    "UPDATE raw_table_streams SET holder = $3, \
                     expires_at = clock_timestamp() + make_interval(secs => $4) \
                     WHERE raw_table_id = $1 AND generation = $2 \
                     AND (holder = $3 OR holder IS NULL OR expires_at < clock_timestamp()) \
                     RETURNING raw_table_id",
                )
                .bind(raw_table_id)
                .bind(generation)
                .bind(holder)
                .bind(ttl.as_secs_f64())
                .fetch_optional(p)
                .await?
            }
            Store::Sqlite { write, .. } => {
                let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
                sqlx::query_scalar(
                    "UPDATE raw_table_streams SET holder = $3, expires_at = $4 \
                     WHERE raw_table_id = $1 AND generation = $2 \
                     AND (holder = $3 OR holder IS NULL OR expires_at < $5) \
                     RETURNING raw_table_id",
                )
                .bind(raw_table_id)
                .bind(generation)
                .bind(holder)
                .bind(until)
                .bind(now)
                .fetch_optional(write)
                .await?
            }
        };
        Ok(held.is_some())
    }

    /// Give a stream's lease up (at shutdown, or when it stops), so another replica takes it
    /// at once.
    pub async fn release_stream_lease(&self, raw_table_id: i64, holder: &str) -> Result<()> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE raw_table_streams SET holder = NULL, expires_at = $3 \
             WHERE raw_table_id = $1 AND holder = $2"
        )
        .bind(raw_table_id)
        .bind(holder)
        .bind(DateTime::<Utc>::UNIX_EPOCH)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Record what the holder of the lease did; nothing when it no longer holds it.
    pub async fn record_stream_progress(
        &self,
        raw_table_id: i64,
        holder: &str,
        progress: &StreamProgress,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(on_pool!(self, write, |p| sqlx::query(
            "UPDATE raw_table_streams SET status = $3, reason = $4, \
             committed_offset = COALESCE($5, committed_offset), lag = COALESCE($6, lag), \
             events_committed = events_committed + $7, rejected = rejected + $8, \
             events_per_second = COALESCE($9, events_per_second), \
             last_commit_at = COALESCE($10, last_commit_at), updated_at = $11, \
             partitions = COALESCE($12, partitions) \
             WHERE raw_table_id = $1 AND holder = $2"
        )
        .bind(raw_table_id)
        .bind(holder)
        .bind(progress.status)
        .bind(progress.reason.as_deref())
        .bind(progress.committed_offset)
        .bind(progress.lag)
        .bind(progress.events_committed)
        .bind(progress.rejected)
        .bind(progress.events_per_second)
        .bind(progress.committed_at)
        .bind(now)
        .bind(progress.partitions.as_deref())
        .execute(p)
        .await
        .map(|r| r.rows_affected() > 0))?)
    }
}
