//! Domain rules, consistency checks and cache invalidation; handlers call these.

pub mod batch;
pub mod changes;
pub mod compute;
pub mod error;
pub mod failures;
pub mod features;
pub mod generations;
pub mod history;
pub mod ingest;
pub mod jobs;
pub mod lookup;
pub mod migrate;
pub mod online;
pub mod raw_tables;
pub mod readiness;
pub mod scheduler;
pub mod spark;
pub mod stats;
pub mod training;
pub mod vectors;
pub mod versions;

pub use error::{Result, ServiceError};

/// Run CPU-bound engine work on the blocking pool so request handling never stalls on it.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ServiceError::fault)
}

/// Run `work` to its end even if the request that started it goes away: a change that has
/// committed must also be announced, whether or not anyone waits for the answer.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work).await.map_err(ServiceError::fault)?
}

/// The longest version label.
pub const MAX_VERSION_LEN: usize = 100;

/// Names shown in URLs and lists: non-empty, bounded, no control characters.
pub(crate) fn check_label(what: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(ServiceError::Invalid(format!("{what} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ServiceError::Invalid(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}
