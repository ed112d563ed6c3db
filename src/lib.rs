//! feature-store: register raw tables, ingest rows, define features as SQL, compute immutable
//! versions and serve feature vectors over HTTP.

pub mod alloc;
pub mod api;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod served;
pub mod service;
pub mod spark;
pub mod store;
pub mod telemetry;
pub mod times;
pub mod worker;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use cache::Cache;
pub use config::Config;
use store::Store;

/// Shared by every handler: one `Arc`, so each request's clone is a single atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Store,
    /// The database's clock, as this replica reads it.
    pub clock: clock::Clock,
    pub cache: Cache,
    pub metrics: metrics::Metrics,
    /// Runs every feature SQL in a worker process under limits.
    pub compute: worker::ComputePool,
    /// The Spark cluster features with the `spark` engine run on (`SPARK_CONNECT_URL`).
    pub spark: Option<spark::Spark>,
    /// Raw tables (Delta) and snapshot files, under DATA_DIR or object storage.
    pub offline: offline::OfflineStore,
    /// Decoded snapshots, for `as_of` serving (training sets, drift and statistics read snapshot
    /// files in workers).
    pub history: service::history::History,
    /// The events aggregation features' online answers need, as this replica holds them.
    pub online: service::online::Online,
    /// This process's name as a holder of the scheduler lease.
    pub scheduler_id: String,
    /// The last answer about the data location, for `/ready`.
    pub ready: service::readiness::ReadyCache,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub async fn new(config: Config) -> error::Result<Self> {
        let store = Store::connect(&config.database_url, config.database_busy_timeout).await?;
        let clock = clock::Clock::new(config.test_clock_skew_seconds);
        clock.calibrate(&store).await?;
        let metrics = metrics::Metrics::new();
        let changes = store.change_state().await?;
        let counter = changes.changes.max(0) as u64;
        let cache = match &config.redis_url {
            Some(url) => Cache::with_redis(
                config.cache_ttl,
                config.batch_snapshot_max_bytes,
                url,
                &config.redis_key_prefix,
                &changes.instance,
                counter,
                metrics.clone(),
            )
            .map_err(error::AppError::Internal)?,
            None => Cache::in_memory(
                config.cache_ttl,
                config.batch_snapshot_max_bytes,
                &changes.instance,
                counter,
                metrics.clone(),
            ),
        };
        let compute = worker::ComputePool::new(
            config
                .compute_pool()
                .map_err(|e| error::AppError::Internal(e.to_string()))?,
        );
        let history = service::history::History::new(config.snapshot_cache_max_bytes);
        let spark = config
            .spark_connect_url
            .as_deref()
            .map(spark::Spark::new)
            .transpose()
            .map_err(error::AppError::Internal)?;
        let prefixes = config
            .external_source_prefixes
            .iter()
            .map(|p| offline::Location::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let location = config
            .data_location()
            .map_err(|e| error::AppError::Internal(e.to_string()))?;
        let offline = offline::OfflineStore::new(
            location,
            config.storage_options.clone(),
            prefixes,
            &changes.instance,
        );
        Ok(AppState(Arc::new(Shared {
            config,
            store,
            clock,
            cache,
            metrics,
            compute,
            spark,
            offline,
            history,
            online: Default::default(),
            scheduler_id: service::scheduler::holder_id(),
            ready: Default::default(),
        })))
    }
}

/// The whole application: state plus router.
pub async fn build_app(config: Config) -> error::Result<(AppState, Router)> {
    let state = AppState::new(config).await?;
    // Blobs stored in the database by earlier versions move into the data location once,
    // before anything reads them there.
    service::migrate::run(&state).await?;
    service::changes::spawn_poller(&state);
    service::changes::spawn_calibrator(&state);
    service::changes::spawn_checkpointer(&state);
    service::history::spawn_pruner(&state);
    service::scheduler::spawn(&state);
    let router = api::router(state.clone());
    Ok((state, router))
}

/// Serve until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
