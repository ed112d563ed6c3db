//! feature-store: register raw tables, ingest rows, define features as SQL, compute immutable
//! versions and serve feature vectors over HTTP.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod model;
pub mod service;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use cache::Cache;
pub use config::Config;
use store::Store;

/// Shared by every handler: one `Arc`, so each request's clone is a single atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub cache: Cache,
    pub metrics: metrics::Metrics,
    /// Computes run on the blocking pool; this bounds how many run at once so serving keeps
    /// its cores.
    pub compute_permits: Semaphore,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub async fn new(config: Config) -> error::Result<Self> {
        let store = Store::connect(&config.database_url).await?;
        let metrics = metrics::Metrics::new();
        let cache = match &config.redis_url {
            Some(url) => Cache::with_redis(
                config.cache_ttl,
                url,
                &config.redis_key_prefix,
                metrics.clone(),
            )
            .map_err(error::AppError::Internal)?,
            None => Cache::in_memory(config.cache_ttl, metrics.clone()),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(AppState(Arc::new(Shared {
            config,
            store,
            cache,
            metrics,
            // Half the cores at most: a burst of computes never takes every core from serving.
            compute_permits: Semaphore::new((cores / 2).max(1)),
        })))
    }
}

/// The whole application: state plus router.
pub async fn build_app(config: Config) -> error::Result<(AppState, Router)> {
    let state = AppState::new(config).await?;
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
