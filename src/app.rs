//! Startup: the parts assembled into the services' state from the configuration, the background
//! tasks started, the router built; and serving until shutdown. Failing here is a
//! `StartupError`, which a process prints and exits on; no HTTP status is involved.

use std::future::Future;

use tokio::net::TcpListener;

use crate::cache::{Cache, RedisOptions};
use crate::config::{Config, ConfigError};
use crate::offline::OfflineError;
use crate::service::{self, AppState, ServiceError, Shared};
use crate::store::{Store, StoreError};
use crate::{api, clock, metrics, offline, spark, worker};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("metadata database: {0}")]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("data location: {0}")]
    Offline(#[from] OfflineError),
    #[error("cache: {0}")]
    Cache(String),
    #[error("Spark: {0}")]
    Spark(String),
    #[error("moving stored blobs into the data location: {0}")]
    Migrate(#[from] ServiceError),
}

/// Make ring the process's TLS crypto provider. rustls finds two in this binary (aws-lc-rs
/// through reqwest, ring through async-nats) and so picks none by itself, and a NATS
/// connection over TLS builds its configuration from the process default. Idempotent.
pub fn install_tls_provider() {
    // An error only says one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connect to what the configuration names and assemble the state every service runs with.
pub async fn state(config: Config) -> Result<AppState, StartupError> {
    install_tls_provider();
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
            RedisOptions {
                url,
                prefix: &config.redis_key_prefix,
                epoch_lease: config.redis_epoch_lease,
            },
            &changes.instance,
            counter,
            metrics.clone(),
        )
        .map_err(StartupError::Cache)?,
        None => Cache::in_memory(
            config.cache_ttl,
            config.batch_snapshot_max_bytes,
            &changes.instance,
            counter,
            metrics.clone(),
        ),
    };
    let compute = worker::ComputePool::new(config.compute_pool()?);
    let history = service::history::History::new(config.snapshot_cache_max_bytes);
    let spark = config
        .spark_connect_url
        .as_deref()
        .map(spark::Spark::new)
        .transpose()
        .map_err(StartupError::Spark)?;
    let prefixes = config
        .external_source_prefixes
        .iter()
        .map(|p| offline::Location::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let location = config.data_location()?;
    let offline = offline::OfflineStore::new(
        location,
        config.storage_options.clone(),
        prefixes,
        &changes.instance,
    );
    Ok(AppState::new(Shared {
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
        live: Default::default(),
        scheduler_id: service::scheduler::holder_id(),
        ready: Default::default(),
    }))
}

/// The whole application: state plus router, with its background tasks running.
pub async fn build_app(config: Config) -> Result<(AppState, impl api::Surface), StartupError> {
    let state = state(config).await?;
    // Blobs stored in the database by earlier versions move into the data location once,
    // before anything reads them there.
    service::migrate::run(&state.store, &state.offline).await?;
    service::changes::spawn_poller(&state);
    service::changes::spawn_calibrator(&state);
    service::changes::spawn_checkpointer(&state);
    service::history::spawn_pruner(&state);
    service::scheduler::spawn(&state);
    service::streams::spawn(&state);
    let router = api::router(state.clone());
    Ok((state, router))
}

/// Serve until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    app: impl api::Surface,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, axum::ServiceExt::into_make_service(app))
        .with_graceful_shutdown(shutdown)
        .await
}
