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
pub use publish::{DataMark, PublishRequest, Published};
pub use rows::{FeatureRow, RawTableRow, VersionRow};
pub use schedule::DueRefresh;
pub use snapshots::{SnapshotKind, SnapshotRow};
pub use tables::{IngestSummary, TableVersion};
pub use vectors::VectorWriter;

use crate::served::VersionMeta;
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
        /// The database file (file databases only), for bulk vector writes.
        path: Option<std::path::PathBuf>,
        busy_timeout: Duration,
    },
    Postgres(PgPool),
}

/// `... AS stale`: whether the raw table (`$raw_table_id`) has a version newer than the one
/// the served snapshot of `$version` (a feature_versions row) read. The one definition of
/// staleness every query uses.
macro_rules! stale_sql {
    ($version:literal, $raw_table_id:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM raw_table_versions r WHERE r.raw_table_id = ",
            $raw_table_id,
            " AND r.version > COALESCE(",
            $version,
            ".data_version, -1)) AS stale"
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
pub mod migrate_blobs;
mod publish;
mod schedule;
mod snapshots;
mod tables;
mod vectors;

/// Rows per multi-row INSERT: 4 parameters each stays far below both backends' limits.
const INSERT_CHUNK: usize = 1000;

/// The database's change counter and the name of this database (`cache_state`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeState {
    pub instance: String,
    pub changes: i64,
}

/// Every change to what is served bumps the counter in its own transaction, so the counter
/// can never lag the change it stands for.
pub(crate) const BUMP_CHANGES: &str =
    "UPDATE cache_state SET changes = changes + 1 WHERE id = 1 RETURNING changes";

/// What a delete of a feature or version committed, and what it left to drop outside the
/// transaction: vector generations nobody serves and snapshot files nobody reads.
#[derive(Debug, Clone, Default)]
pub struct Deleted {
    pub change: i64,
    pub generations: Vec<i64>,
    pub files: Vec<String>,
}

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

/// A feature to register.
pub struct NewFeature<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub raw_table_id: i64,
    pub computation_logic: &'a str,
    pub entity_key: &'a str,
    /// `polars` or `spark`.
    pub engine: &'a str,
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

const RAW_TABLE_COLUMNS: &str = "id, name, description, schema_definition, event_time_column, \
     storage_uri, source_format, created_at, updated_at";
const FEATURE_COLUMNS: &str =
    "id, name, description, raw_table_id, computation_logic, entity_key, \
     engine, created_at, updated_at";
const VERSION_COLUMNS: &str = concat!(
    "id, feature_id, version, status, computation_logic, entity_key, created_at, updated_at, \
     computed_at, entity_count, output_schema, generation, data_version, data_as_of, \
     refresh_every_seconds, next_refresh_at, refresh_checked_at, refresh_failures, ",
    stale_sql!(
        "feature_versions",
        "(SELECT raw_table_id FROM features WHERE id = feature_versions.feature_id)"
    )
);

/// What serving reports about a version besides its id: how fresh its served snapshot is.
const META_COLUMNS: &str = concat!(
    "v.id AS version_id, v.generation, v.entity_count, v.computed_at, v.data_as_of, ",
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
                // A new database gets 16 KiB pages: bulk writes of vectors ran ~15% faster than
                // with 4 KiB (an existing database keeps its page size).
                .page_size(16384)
                // Checkpoints run in the background (`checkpoint`), never inside the commit of
                // whichever write happens to cross the WAL's threshold.
                .pragma("wal_autocheckpoint", "0")
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
                    path: None,
                    busy_timeout,
                }
            } else {
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(busy_timeout)
                    .connect_with(options.clone())
                    .await?;
                let path = options.get_filename().to_path_buf();
                let fast = Some(sqlite_reads::FastReads::new(&path));
                let read = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(busy_timeout)
                    .connect_with(options)
                    .await?;
                Store::Sqlite {
                    read,
                    write,
                    fast,
                    path: Some(path),
                    busy_timeout,
                }
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

    /// The database's clock, in microseconds since 1970: the one clock every replica's
    /// decisions share. SQLite reads the machine's clock to the millisecond.
    pub async fn database_micros(&self) -> Result<i64> {
        Ok(match self {
            Store::Postgres(p) => {
                let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                    .fetch_one(p)
                    .await?;
                now.timestamp_micros()
            }
            Store::Sqlite { read, .. } => {
                sqlx::query_scalar(
                    "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)",
                )
                .fetch_one(read)
                .await?
            }
        })
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

    /// SQLite (a file): copy what the write-ahead log holds into the database file, as far as
    /// readers allow, without blocking readers or writers. Called every second in the
    /// background; a no-op on Postgres.
    pub async fn checkpoint(&self) -> Result<()> {
        let Store::Sqlite {
            path: Some(path),
            busy_timeout,
            ..
        } = self
        else {
            return Ok(());
        };
        let (path, busy_timeout) = (path.clone(), *busy_timeout);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(busy_timeout)?;
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, read, |p| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    // ---- raw tables ----

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

    // ---- features ----

    pub async fn create_feature(
        &self,
        new: &NewFeature<'_>,
        now: DateTime<Utc>,
    ) -> Result<FeatureRow> {
        let sql = format!(
            "INSERT INTO features (name, description, raw_table_id, computation_logic, entity_key, \
             created_at, updated_at, engine) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
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

    /// Deletes the feature with its versions; their vectors and snapshot files are left for
    /// the caller to drop (`Deleted`). `None` when there was no such feature.
    pub async fn delete_feature(&self, id: i64) -> Result<Option<Deleted>> {
        self.delete_counted(
            "DELETE FROM features WHERE id = $1",
            "feature_versions v WHERE v.feature_id = $1",
            id,
        )
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

    /// Run a one-row delete of a feature or a version (`sql`) and, when it deleted something,
    /// bump the change counter in the same transaction. `versions` (`feature_versions v WHERE
    /// ...` with the id as `$1`) names the versions that go with it: their generations are
    /// retired and their snapshot files returned, since neither is the database's to cascade.
    async fn delete_counted(
        &self,
        sql: &'static str,
        versions: &'static str,
        id: i64,
    ) -> Result<Option<Deleted>> {
        let generations = format!(
            "UPDATE vector_generations SET state = 'retired' WHERE id IN \
             (SELECT v.generation FROM {versions}) RETURNING id"
        );
        let files = format!(
            "SELECT s.location FROM feature_snapshots s WHERE s.location IS NOT NULL AND \
             s.feature_version_id IN (SELECT v.id FROM {versions})"
        );
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            let generations: Vec<i64> = sqlx::query_scalar(&generations)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            let files: Vec<String> = sqlx::query_scalar(&files)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
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
            Ok(Some(Deleted {
                change,
                generations,
                files,
            }))
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

    /// Deletes the version; its vectors and snapshot files are left for the caller to drop
    /// (`Deleted`). `None` when there was no such version.
    pub async fn delete_version(&self, id: i64) -> Result<Option<Deleted>> {
        self.delete_counted(
            "DELETE FROM feature_versions WHERE id = $1",
            "feature_versions v WHERE v.id = $1",
            id,
        )
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

    /// The version serving by `feature_name` at `at`: the newest (by id) that was active then
    /// and had a snapshot recorded by then. A version made or archived later, or only
    /// backfilled later, does not change what was served then.
    pub async fn served_version_at(
        &self,
        feature_name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<VersionMeta>> {
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
