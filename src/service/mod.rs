//! Domain rules, consistency checks and cache invalidation; handlers call these. The state
//! they run with, `AppState`, is defined here, at their own level, from the parts below them;
//! `crate::app` assembles it at start.

pub mod batch;
pub mod changed;
pub mod changes;
pub mod compute;
pub mod error;
pub mod failures;
pub mod features;
pub mod history;
pub mod ingest;
pub mod jobs;
pub mod live;
pub mod lookup;
pub mod migrate;
pub mod online;
pub mod present;
pub mod raw_tables;
pub mod readiness;
pub mod scheduler;
pub mod spark;
pub mod stats;
pub mod streams;
pub mod training;
pub mod vectors;
pub mod versions;

pub use error::{Result, ServiceError};

use std::sync::Arc;

use crate::cache::Cache;
use crate::config::Config;
use crate::store::Store;

/// Shared by every handler and service: one `Arc`, so each request's clone is a single atomic
/// increment.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Store,
    /// The database's clock, as this replica reads it.
    pub clock: crate::clock::Clock,
    pub cache: Cache,
    pub metrics: crate::metrics::Metrics,
    /// Runs every feature SQL in a worker process under limits.
    pub compute: crate::worker::ComputePool,
    /// The Spark cluster features with the `spark` engine run on (`SPARK_CONNECT_URL`).
    pub spark: Option<crate::spark::Spark>,
    /// Raw tables (Delta) and snapshot files, under DATA_DIR or object storage.
    pub offline: crate::offline::OfflineStore,
    /// Decoded snapshots, for `as_of` serving (training sets, drift and statistics read snapshot
    /// files in workers).
    pub history: history::History,
    /// The events aggregation features' online answers need, as this replica holds them.
    pub online: online::Online,
    /// The events of streams not committed yet, as this replica has read them.
    pub live: live::Live,
    /// This process's name as a holder of the scheduler lease.
    pub scheduler_id: String,
    /// The last answer about the data location, for `/ready`.
    pub ready: readiness::ReadyCache,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    /// The parts statistics and drift use.
    pub fn stats_parts(&self) -> stats::Parts {
        stats::Parts {
            store: self.store.clone(),
            offline: self.offline.clone(),
            compute: self.compute.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

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
