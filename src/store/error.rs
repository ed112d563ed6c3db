//! What a store call can fail with. Uniqueness and foreign-key violations are outcomes the
//! services word for the client; waiting too long is load; everything else keeps its sqlx
//! cause for the log.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write hit a uniqueness rule (a name or label already taken).
    #[error("a row with that key already exists")]
    Duplicate,
    /// A row referenced by the write, or referencing the deleted row, is missing or present.
    #[error("a referenced row is missing or still referenced")]
    StillReferenced,
    /// The version a compute started for was deleted before it published: nothing is
    /// recorded, and the version is not recreated.
    #[error("the feature version was deleted while it was computed")]
    VersionGone,
    /// No connection, or SQLite's one writer, became free in time; or Postgres refused more
    /// connections.
    #[error("the database is busy")]
    Busy(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The direct SQLite connections (point reads, bulk vector writes).
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    /// What was to be stored is not well formed (a broken vector chunk).
    #[error("{0}")]
    Invalid(String),
    /// A blocking task of the store was lost (it panicked or the runtime stopped).
    #[error("a database task did not finish: {0}")]
    Task(String),
    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_busy(&e) {
            StoreError::Busy(Box::new(e))
        } else {
            StoreError::Database(e)
        }
    }
}

/// Waiting too long for a connection, or for SQLite's one writer (SQLITE_BUSY, SQLITE_LOCKED
/// and their extended codes), or Postgres refusing more connections: load, not a bug.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("5" | "6" | "261" | "262" | "517" | "53300")
        ),
        _ => false,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy(Box::new(e))
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Unique and foreign-key violations as their own variants; anything else as `From` sorts it.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate,
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::StillReferenced,
        _ => StoreError::from(e),
    }
}
