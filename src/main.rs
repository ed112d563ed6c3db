use std::net::SocketAddr;

use std::process::ExitCode;

use feature_store::{build_app, serve, telemetry, worker, Config};
use tokio::net::TcpListener;

// mimalloc for serving, the system allocator for compute workers (see `alloc`).
#[global_allocator]
static GLOBAL: feature_store::alloc::Allocator = feature_store::alloc::Allocator;

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // A compute worker reads no configuration and starts no runtime: its job comes on stdin.
    if std::env::args().nth(1).as_deref() == Some(worker::SUBCOMMAND) {
        return Ok(worker::child::main());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())?;
    Ok(ExitCode::SUCCESS)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    tracing::info!(?config, "starting feature-store");
    let addr = SocketAddr::new(config.host, config.port);
    if !config.api_keys.is_enabled() && !config.host.is_loopback() {
        tracing::warn!(%addr, "API_KEYS is not set: the API is open to anyone who can reach this address");
    }
    let (state, router) = build_app(config).await?;
    let listener = TcpListener::bind(addr).await?;
    // The address bound, not asked for: with PORT=0 the system picks the port, and this line
    // is where a supervisor (or a test) learns it.
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        database = state.store.backend(),
        cache = state.cache.mode(),
        "listening"
    );
    serve(listener, router, shutdown_signal()).await?;
    feature_store::service::scheduler::release(&state).await;
    feature_store::service::streams::release(&state).await;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
