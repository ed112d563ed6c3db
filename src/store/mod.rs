//! The repository: one `Store` over SQLite or Postgres, chosen at runtime from the URL.
//!
//! Both backends run the same SQL text (sqlx's SQLite driver accepts `$1` placeholders), so
//! each method is written once and expanded per backend by `on_pool!`. Where a backend needs
//! its own statement, the method matches on the variant instead.

mod blocks;
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
pub use features::NewFeature;
pub use jobs::{JobFilter, JobKind, JobRow, JobStatus};
pub use publish::{DataMark, PublishRequest, Published};
pub use raw_tables::{InitialVersion, NewRawTable};
pub use rows::{FeatureRow, RawTableRow, VersionRow};
pub use schedule::DueRefresh;
pub use snapshots::{SnapshotKind, SnapshotRow};
pub use streams::{StreamProgress, StreamRow};
pub use tables::{IngestSummary, TableVersion};
pub use vectors::{VectorRows, VectorWriter};
pub use versions::{NewVersion, VersionChange};

use error::Result;

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

/// Whether `text` can be a stored name, label or entity id: none holds a NUL byte (names and
/// labels refuse control characters, entity ids NUL), and Postgres' text cannot hold one, so
/// binding it fails the query instead of finding nothing. A lookup by such a text finds
/// nothing, on both backends.
fn storable(text: &str) -> bool {
    !text.contains('\0')
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
mod features;
mod jobs;
pub mod migrate_blobs;
mod publish;
mod raw_tables;
mod schedule;
mod serving;
mod snapshots;
mod streams;
mod tables;
mod vectors;
mod versions;

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

/// What a committed change changed, as every committing method returns it, for
/// `service::changed::announce` to tell the caches and to drop what it left behind outside
/// the transaction.
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// The change counter it committed; None when nothing served changed.
    pub change: Option<i64>,
    /// Vector generations nobody serves any more.
    pub retired: Vec<Retired>,
    /// Snapshot files nobody reads any more.
    pub files: Vec<String>,
    /// A feature that is gone, whose online state goes with it.
    pub feature_deleted: Option<i64>,
}

/// A generation nobody serves; with its version when a batch snapshot of it may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub version_id: Option<i64>,
    pub generation: i64,
}

impl Retired {
    /// Generations of versions that are gone, or found by the sweep.
    pub fn all(generations: Vec<i64>) -> Vec<Retired> {
        generations
            .into_iter()
            .map(|generation| Retired {
                version_id: None,
                generation,
            })
            .collect()
    }
}

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

    // ---- helpers the aggregates share ----

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
    ) -> Result<Option<Changed>> {
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
            Ok(Some(Changed {
                change: Some(change),
                retired: Retired::all(generations),
                files,
                feature_deleted: None,
            }))
        })
    }
}
