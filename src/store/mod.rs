//! The repository: one `Store` over SQLite or Postgres, chosen at runtime from the URL.
//!
//! Both backends run the same SQL text (sqlx's SQLite driver accepts `$1` placeholders), so
//! each method is written once and expanded per backend by `on_pool!`. Where a backend needs
//! its own statement, the method matches on the variant instead.

mod error;
mod rows;
mod sqlite_reads;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use error::StoreError;
pub use jobs::{JobFilter, JobKind, JobRow, JobStatus};
pub use rows::{FeatureRow, RawTableRow, VectorRow, VersionRow};
pub use schedule::DueRefresh;
pub use snapshots::{SnapshotKind, SnapshotRow};

use crate::served::{EncodedVector, VersionMeta};
use error::{classify, Result};

#[derive(Clone, Debug)]
pub enum Store {
    /// SQLite allows one writer at a time; a one-connection write pool queues writers here
    /// instead of letting them fail with SQLITE_BUSY, while readers use their own pool (WAL).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// Point reads off sqlx's worker threads (file databases only).
        fast: Option<sqlite_reads::FastReads>,
    },
    Postgres(PgPool),
}

/// `... AS stale`: whether the raw table (`$raw_table_id`) holds batches newer than the newest
/// one the served snapshot of `$version` (a feature_versions row) read. The one definition of
/// staleness every query uses.
macro_rules! stale_sql {
    ($version:literal, $raw_table_id:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM raw_table_batches b WHERE b.raw_table_id = ",
            $raw_table_id,
            " AND b.id > COALESCE(",
            $version,
            ".data_batch_id, 0)) AS stale"
        )
    };
}

/// Run `$body` with `$p` bound to the pool of either backend.
macro_rules! on_pool {
    ($self:expr, read, |$p:ident| $body:expr) => {
        match $self {
            Store::Sqlite { read: $p, .. } => $body,
            Store::Postgres($p) => $body,
        }
    };
    ($self:expr, write, |$p:ident| $body:expr) => {
        match $self {
            Store::Sqlite { write: $p, .. } => $body,
            Store::Postgres($p) => $body,
        }
    };
}

// After `on_pool!`, which they use.
mod jobs;
mod schedule;
mod snapshots;

/// Rows per multi-row INSERT: 4 parameters each stays far below both backends' limits.
const INSERT_CHUNK: usize = 1000;

/// The outcome of a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub version_id: i64,
    pub snapshot_id: i64,
    /// Whether the snapshot became the served set (it is the newest by `valid_from`); then
    /// `generation` and `change` are the new ones. An older one is only kept as history.
    pub served: bool,
    pub generation: i64,
    /// The change counter this publish committed (see `changes`), when it served.
    pub change: Option<i64>,
}

/// The database's change counter and the name of this database (`cache_state`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeState {
    pub instance: String,
    pub changes: i64,
}

/// Every change to what is served bumps the counter in its own transaction, so the counter
/// can never lag the change it stands for.
const BUMP_CHANGES: &str =
    "UPDATE cache_state SET changes = changes + 1 WHERE id = 1 RETURNING changes";

/// Everything a publish writes besides the vectors.
pub struct PublishRequest<'a> {
    pub feature_id: i64,
    pub version: &'a str,
    pub computation_logic: &'a str,
    pub entity_key: &'a str,
    pub output_schema: &'a str,
    pub computed_at: DateTime<Utc>,
    pub vectors: &'a [EncodedVector],
    /// When the snapshot starts to count: the publish time of a live compute, `as_of` else.
    pub valid_from: DateTime<Utc>,
    pub kind: SnapshotKind,
    /// The typed result, as `engine::result::snapshot_to_ipc` wrote it.
    pub snapshot: &'a [u8],
    /// The newest stored batch the compute read; `None` when its rows came with the request.
    pub data: Option<BatchMark>,
    /// The snapshot's column statistics as JSON.
    pub stats: Option<&'a str>,
    /// The job this publish ends, recorded succeeded in the same transaction: nobody can see
    /// the snapshot while its job still says it runs, nor the job succeeded without it.
    pub job: Option<i64>,
}

/// A stored raw batch, as freshness counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchMark {
    pub batch_id: i64,
    pub ingested_at: DateTime<Utc>,
}

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

/// How much a raw table holds, and when it last took rows.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IngestSummary {
    pub raw_table_id: i64,
    pub row_count: i64,
    pub last_ingest_at: DateTime<Utc>,
}

/// A table's stored batches, oldest first, and the newest one's mark.
pub struct StoredBatches {
    pub blobs: Vec<Vec<u8>>,
    pub newest: Option<BatchMark>,
}

const RAW_TABLE_COLUMNS: &str =
    "id, name, description, schema_definition, event_time_column, created_at, updated_at";
const FEATURE_COLUMNS: &str =
    "id, name, description, raw_table_id, computation_logic, entity_key, created_at, updated_at";
const VERSION_COLUMNS: &str = concat!(
    "id, feature_id, version, status, computation_logic, entity_key, created_at, updated_at, \
     computed_at, entity_count, output_schema, generation, data_batch_id, data_as_of, \
     refresh_every_seconds, next_refresh_at, refresh_checked_at, refresh_failures, ",
    stale_sql!(
        "feature_versions",
        "(SELECT raw_table_id FROM features WHERE id = feature_versions.feature_id)"
    )
);

/// What serving reports about a version besides its id: how fresh its served snapshot is.
const META_COLUMNS: &str = concat!(
    "v.id AS version_id, v.generation, v.entity_count, v.data_as_of, ",
    stale_sql!("v", "f.raw_table_id")
);

impl Store {
    /// `busy_timeout`: how long a write waits for SQLite's one writer (and a request for a
    /// pooled connection) before it is answered 503.
    pub async fn connect(url: &str, busy_timeout: Duration) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(busy_timeout);
            let store = if url.contains(":memory:") || url.contains("mode=memory") {
                // An in-memory database lives as long as its one connection: keep it forever.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await?;
                Store::Sqlite {
                    read: pool.clone(),
                    write: pool,
                    fast: None,
                }
            } else {
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(busy_timeout)
                    .connect_with(options.clone())
                    .await?;
                let fast = Some(sqlite_reads::FastReads::new(options.get_filename()));
                let read = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(busy_timeout)
                    .connect_with(options)
                    .await?;
                Store::Sqlite { read, write, fast }
            };
            if let Store::Sqlite { write, .. } = &store {
                sqlx::migrate!("migrations/sqlite").run(write).await?;
            }
            Ok(store)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(busy_timeout)
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite { .. } => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Store::Postgres(p) => p.close().await,
        }
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, read, |p| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    // ---- raw tables ----

    pub async fn create_raw_table(
        &self,
        name: &str,
        description: Option<&str>,
        schema_definition: &str,
        event_time_column: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RawTableRow> {
        let sql = format!(
            "INSERT INTO raw_tables (name, description, schema_definition, event_time_column, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING {RAW_TABLE_COLUMNS}"
        );
        on_pool!(self, write, |p| sqlx::query_as(&sql)
            .bind(name)
            .bind(description)
            .bind(schema_definition)
            .bind(event_time_column)
            .bind(now)
            .fetch_one(p)
            .await
            .map_err(classify))
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

    // ---- stored rows ----

    /// Store a batch; returns the change counter it committed: every version over this table
    /// is now stale, and serving says so.
    pub async fn append_batch(
        &self,
        raw_table_id: i64,
        row_count: i64,
        data: &[u8],
        now: DateTime<Utc>,
    ) -> Result<i64> {
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO raw_table_batches (raw_table_id, row_count, data, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(raw_table_id)
            .bind(row_count)
            .bind(data)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            let change: i64 = sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?;
            crate::failpoint::reach(crate::failpoint::INGEST_BEFORE_COMMIT).await;
            tx.commit().await?;
            Ok(change)
        })
    }

    /// Every stored batch of a table, oldest first, and which one is the newest.
    pub async fn load_batches(&self, raw_table_id: i64) -> Result<StoredBatches> {
        let rows: Vec<(i64, DateTime<Utc>, Vec<u8>)> = on_pool!(self, read, |p| {
            sqlx::query_as(
            "SELECT id, created_at, data FROM raw_table_batches WHERE raw_table_id = $1 ORDER BY id"
        )
        .bind(raw_table_id)
        .fetch_all(p)
        .await
        })?;
        let newest = rows.last().map(|(id, at, _)| BatchMark {
            batch_id: *id,
            ingested_at: *at,
        });
        Ok(StoredBatches {
            blobs: rows.into_iter().map(|(_, _, data)| data).collect(),
            newest,
        })
    }

    /// The newest batch stored into a table, if any.
    pub async fn newest_batch(&self, raw_table_id: i64) -> Result<Option<BatchMark>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT id AS batch_id, created_at AS ingested_at FROM raw_table_batches \
             WHERE raw_table_id = $1 ORDER BY id DESC LIMIT 1"
        )
        .bind(raw_table_id)
        .fetch_optional(p)
        .await)?)
    }

    /// Whether the raw table of a version holds batches newer than `read` (the newest one a
    /// snapshot read; `None`: it read none).
    pub async fn has_unread_batches(&self, version_id: i64, read: Option<i64>) -> Result<bool> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM raw_table_batches b \
             JOIN features f ON f.raw_table_id = b.raw_table_id \
             JOIN feature_versions v ON v.feature_id = f.id \
             WHERE v.id = $1 AND b.id > $2)"
        )
        .bind(version_id)
        .bind(read.unwrap_or(0))
        .fetch_one(p)
        .await)?)
    }

    /// The oldest batches that together hold at least `rows` rows (for previews).
    pub async fn load_first_batches(&self, raw_table_id: i64, rows: i64) -> Result<Vec<Vec<u8>>> {
        Ok(on_pool!(self, read, |p| {
            sqlx::query_scalar(
            "SELECT data FROM (SELECT id, data, SUM(row_count) OVER (ORDER BY id) - row_count AS before \
             FROM raw_table_batches WHERE raw_table_id = $1) b WHERE before < $2 ORDER BY id"
        )
        .bind(raw_table_id)
        .bind(rows)
        .fetch_all(p)
        .await
        })?)
    }

    /// Rows stored and the newest ingest of each table that has any (all tables, or one).
    pub async fn ingest_summaries(&self, only: Option<i64>) -> Result<Vec<IngestSummary>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT raw_table_id, CAST(SUM(row_count) AS BIGINT) AS row_count, \
             MAX(created_at) AS last_ingest_at FROM raw_table_batches \
             WHERE $1 IS NULL OR raw_table_id = $1 GROUP BY raw_table_id"
        )
        .bind(only)
        .fetch_all(p)
        .await)?)
    }

    pub async fn stored_row_count(&self, raw_table_id: i64) -> Result<i64> {
        let n: Option<i64> = on_pool!(self, read, |p| {
            sqlx::query_scalar(
            "SELECT CAST(SUM(row_count) AS BIGINT) FROM raw_table_batches WHERE raw_table_id = $1"
        )
        .bind(raw_table_id)
        .fetch_one(p)
        .await
        })?;
        Ok(n.unwrap_or(0))
    }

    // ---- features ----

    pub async fn create_feature(
        &self,
        name: &str,
        description: Option<&str>,
        raw_table_id: i64,
        computation_logic: &str,
        entity_key: &str,
        now: DateTime<Utc>,
    ) -> Result<FeatureRow> {
        let sql = format!(
            "INSERT INTO features (name, description, raw_table_id, computation_logic, entity_key, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {FEATURE_COLUMNS}"
        );
        on_pool!(self, write, |p| sqlx::query_as(&sql)
            .bind(name)
            .bind(description)
            .bind(raw_table_id)
            .bind(computation_logic)
            .bind(entity_key)
            .bind(now)
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

    pub async fn feature_exists_by_name(&self, name: &str) -> Result<bool> {
        let found: Option<i64> = on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT id FROM features WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(p)
        .await)?;
        Ok(found.is_some())
    }

    /// Deletes the feature with its versions and their vectors; the change counter it
    /// committed, or `None` when there was no such feature.
    pub async fn delete_feature(&self, id: i64) -> Result<Option<i64>> {
        self.delete_counted("DELETE FROM features WHERE id = $1", id)
            .await
    }

    /// Run an `UPDATE` that takes a row's id as `$1` and a time as `$2`; returns the rows it
    /// changed.
    async fn update_at(&self, sql: &'static str, id: i64, at: DateTime<Utc>) -> Result<u64> {
        Ok(on_pool!(self, write, |p| sqlx::query(sql)
            .bind(id)
            .bind(at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// Run a one-row delete and, when it deleted something, bump the change counter in the
    /// same transaction.
    async fn delete_counted(&self, sql: &'static str, id: i64) -> Result<Option<i64>> {
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            let deleted = sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(None);
            }
            let change: i64 = sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(change))
        })
    }

    // ---- versions ----

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
    ) -> Result<Option<(VersionRow, Option<i64>)>> {
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
            Ok(Some((row, counted)))
        })
    }

    /// The change counter the delete committed, or `None` when there was no such version.
    pub async fn delete_version(&self, id: i64) -> Result<Option<i64>> {
        self.delete_counted("DELETE FROM feature_versions WHERE id = $1", id)
            .await
    }

    /// The change counter as committed now: what every replica polls.
    pub async fn change_state(&self) -> Result<ChangeState> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT instance, changes FROM cache_state WHERE id = 1"
        )
        .fetch_one(p)
        .await)?)
    }

    // ---- serving ----

    /// The newest active version of a feature (by id) that has been computed.
    pub async fn latest_served_version(&self, feature_name: &str) -> Result<Option<VersionMeta>> {
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

    /// Stored values (JSON text) of many entities of one version; absent entities are absent.
    pub async fn get_values_many(
        &self,
        version_id: i64,
        entity_ids: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::with_capacity(entity_ids.len());
        for chunk in entity_ids.chunks(INSERT_CHUNK) {
            let rows: Vec<(String, String)> = on_pool!(self, read, |p| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT entity_id, feature_values FROM feature_vectors WHERE feature_version_id = ",
                );
                q.push_bind(version_id).push(" AND entity_id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build_query_as().fetch_all(p).await
            })?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// Every stored (entity, values) of a version, for an in-memory snapshot.
    pub async fn all_values(&self, version_id: i64) -> Result<Vec<(String, String)>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT entity_id, feature_values FROM feature_vectors WHERE feature_version_id = $1"
        )
        .bind(version_id)
        .fetch_all(p)
        .await)?)
    }

    pub async fn get_vector(&self, version_id: i64, entity_id: &str) -> Result<Option<VectorRow>> {
        if let Store::Sqlite {
            fast: Some(fast), ..
        } = self
        {
            match fast.get_vector(version_id, entity_id) {
                Ok(found) => return Ok(found),
                Err(e) => tracing::debug!(error = e, "fast SQLite read failed; using sqlx"),
            }
        }
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT entity_id, feature_values, computed_at FROM feature_vectors \
             WHERE feature_version_id = $1 AND entity_id = $2"
        )
        .bind(version_id)
        .bind(entity_id)
        .fetch_optional(p)
        .await)?)
    }

    // ---- publishing ----

    /// Create the version if it does not exist, then replace all its vectors, in one
    /// transaction. The version row is updated first: on Postgres its row lock serializes
    /// concurrent publishes of one version, on SQLite the single writer does, so the stored set
    /// is always exactly one compute's output. Updating before inserting keeps recomputes from
    /// consuming ids (a conflicting insert burns a sequence value on both backends).
    pub async fn publish(&self, req: &PublishRequest<'_>) -> Result<Published> {
        let count = req.vectors.len() as i64;
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            // Taking the version row's lock (Postgres) before reading its newest snapshot keeps
            // two publishes of one version from both deciding they are the newest.
            let lock = "UPDATE feature_versions SET updated_at = updated_at \
                        WHERE feature_id = $1 AND version = $2 RETURNING id, computed_at";
            let mut found: Option<(i64, Option<DateTime<Utc>>)> = None;
            for attempt in 0..2 {
                found = sqlx::query_as(lock)
                    .bind(req.feature_id)
                    .bind(req.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_some() || attempt == 1 {
                    break;
                }
                // First compute of this version: create it. A concurrent publish may create it
                // first; then this insert does nothing and the lock waits for it.
                sqlx::query(
                    "INSERT INTO feature_versions (feature_id, version, status, computation_logic, \
                     entity_key, created_at, updated_at) VALUES ($1, $2, 'active', $3, $4, $5, $5) \
                     ON CONFLICT (feature_id, version) DO NOTHING",
                )
                .bind(req.feature_id)
                .bind(req.version)
                .bind(req.computation_logic)
                .bind(req.entity_key)
                .bind(req.computed_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            let (version_id, computed_at) = found.ok_or(StoreError::StillReferenced)?;
            let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT valid_from FROM feature_snapshots WHERE feature_version_id = $1 \
                 ORDER BY valid_from DESC, id DESC LIMIT 1",
            )
            .bind(version_id)
            .fetch_optional(&mut *tx)
            .await?;
            // A version computed before snapshots existed has served since its computed_at.
            let served = newest.or(computed_at).is_none_or(|n| req.valid_from >= n);
            let (data_batch_id, data_as_of) = match req.data {
                Some(m) => (Some(m.batch_id), Some(m.ingested_at)),
                None => (None, None),
            };
            let snapshot_id: i64 = sqlx::query_scalar(
                "INSERT INTO feature_snapshots (feature_version_id, valid_from, computed_at, \
                 entity_count, kind, data, data_batch_id, data_as_of, stats) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(version_id)
            .bind(req.valid_from)
            .bind(req.computed_at)
            .bind(count)
            .bind(req.kind.as_str())
            .bind(req.snapshot)
            .bind(data_batch_id)
            .bind(data_as_of)
            .bind(req.stats)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(job) = req.job {
                sqlx::query(
                    "UPDATE jobs SET status = 'succeeded', version_id = $2, error = NULL, \
                     finished_at = $3 WHERE id = $1",
                )
                .bind(job)
                .bind(version_id)
                .bind(req.computed_at)
                .execute(&mut *tx)
                .await?;
            }
            if !served {
                tx.commit().await?;
                return Ok(Published {
                    version_id,
                    snapshot_id,
                    served,
                    generation: 0,
                    change: None,
                });
            }
            let generation: i64 = sqlx::query_scalar(
                "UPDATE feature_versions SET generation = generation + 1, computed_at = $2, \
                 entity_count = $3, output_schema = $4, updated_at = $2, data_batch_id = $5, \
                 data_as_of = $6 WHERE id = $1 RETURNING generation",
            )
            .bind(version_id)
            .bind(req.computed_at)
            .bind(count)
            .bind(req.output_schema)
            .bind(data_batch_id)
            .bind(data_as_of)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM feature_vectors WHERE feature_version_id = $1")
                .bind(version_id)
                .execute(&mut *tx)
                .await?;
            for chunk in req.vectors.chunks(INSERT_CHUNK) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO feature_vectors (feature_version_id, entity_id, feature_values, computed_at) ",
                );
                insert.push_values(chunk, |mut row, v| {
                    row.push_bind(version_id)
                        .push_bind(&v.entity_id)
                        .push_bind(&v.values)
                        .push_bind(req.computed_at);
                });
                insert.build().execute(&mut *tx).await?;
            }
            let change: i64 = sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?;
            crate::failpoint::reach(crate::failpoint::PUBLISH_BEFORE_COMMIT).await;
            tx.commit().await?;
            Ok(Published {
                version_id,
                snapshot_id,
                served,
                generation,
                change: Some(change),
            })
        })
    }
}
