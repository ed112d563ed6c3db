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
    /// No connection, or SQLite's one writer, became free in time; or Postgres refused more
    /// connections.
    #[error("the database is busy")]
    Busy(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_busy(&e) {
            StoreError::Busy(e)
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

/// Unique and foreign-key violations as their own variants; anything else as `From` sorts it.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate,
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::StillReferenced,
        _ => StoreError::from(e),
    }
}
