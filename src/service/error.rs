//! What a service fails with, in the domain's words. No HTTP here: `api::error` maps each
//! kind to a status and a body in one place, as the edge.

use crate::offline::OfflineError;
use crate::spark::SparkError;
use crate::store::StoreError;

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A fault on our side, with its cause (an encoder, a task, a broken invariant).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A domain rule refused the request: SQL that reads a file, a row that does not fit its
    /// table, a duplicate name. The message is the client's.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request's body could not be read as what it declares to be.
    #[error("{0}")]
    Unreadable(String),
    /// The request's body passed the configured size limit.
    #[error("Request body too large")]
    TooLarge,
    /// Too much work is already waiting; the client should retry later.
    #[error("{0}")]
    Overloaded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data location (DATA_DIR, object storage) refused or failed.
    #[error(transparent)]
    Storage(#[from] OfflineError),
    #[error(transparent)]
    Spark(#[from] SparkError),
    /// Our own fault, never the request's: the cause is logged, not sent.
    #[error(transparent)]
    Fault(Cause),
}

impl ServiceError {
    pub fn fault(cause: impl Into<Cause>) -> Self {
        ServiceError::Fault(cause.into())
    }

    /// The words a client is told, which a failed job keeps too. A fault of ours says only
    /// that; its cause goes to the log.
    pub fn public_detail(&self) -> String {
        match self {
            ServiceError::Invalid(why)
            | ServiceError::NotFound(why)
            | ServiceError::Unreadable(why)
            | ServiceError::Overloaded(why) => why.clone(),
            ServiceError::TooLarge => self.to_string(),
            ServiceError::Store(StoreError::Busy(_)) => "The database is busy; retry later".into(),
            ServiceError::Store(e @ StoreError::VersionGone) => e.to_string(),
            ServiceError::Storage(OfflineError::Invalid(why)) => why.clone(),
            ServiceError::Storage(_) => "The data storage is unavailable; retry later".into(),
            ServiceError::Spark(e @ SparkError::Unreachable(_)) => format!("{e}; retry later"),
            ServiceError::Spark(SparkError::Query(why)) => {
                format!("The Spark computation failed: {why}")
            }
            ServiceError::Spark(e @ SparkError::TimedOut(_)) => {
                format!("The Spark computation failed: {e}")
            }
            ServiceError::Store(_) | ServiceError::Spark(_) | ServiceError::Fault(_) => {
                "Internal Server Error".into()
            }
        }
    }
}

impl From<crate::cache::CacheError> for ServiceError {
    fn from(e: crate::cache::CacheError) -> Self {
        ServiceError::fault(e)
    }
}
