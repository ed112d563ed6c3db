//! The HTTP surface: one router per resource, thin handlers, JSON errors everywhere.

pub mod access;
pub mod compute;
pub mod docs;
pub mod error;
pub mod extract;
pub mod features;
pub mod health;
pub mod history;
mod hot_route;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod raw_tables;
mod request_id;
pub mod stats;
pub mod streams;
pub mod training;
pub mod ui;
pub mod vectors;
pub mod versions;

use std::convert::Infallible;

use axum::extract::{DefaultBodyLimit, Request};
use axum::response::Response;
use axum::Router;
use tower_http::trace::TraceLayer;

use self::error::AppError;
use crate::service::AppState;

/// The whole HTTP surface as one service: what `router` returns and `crate::app::serve` serves.
pub trait Surface:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Surface for T where
    T: tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

pub fn router(state: AppState) -> impl Surface {
    // Full paths rather than `nest("/api/v1", ...)`: nesting rewrites every request's URI.
    let mut api = Router::new()
        .merge(raw_tables::router())
        .merge(streams::router())
        .merge(features::router())
        .merge(versions::router())
        .merge(compute::router())
        .merge(history::router())
        .merge(jobs::router())
        .merge(stats::router())
        .merge(training::router())
        .merge(vectors::router())
        .merge(ingest::router());
    // Only when keys are configured: every layer costs the serving path a little.
    if state.config.api_keys.is_enabled() {
        api = api.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    }
    let limit = state.config.max_body_bytes;
    let cors = access::cors(&state.config.cors_allowed_origins);
    let allowed_hosts = state.config.allowed_hosts.clone();
    let routes = Router::new()
        .merge(api)
        .merge(health::router())
        .merge(docs::router())
        .merge(ui::router())
        .route("/metrics", axum::routing::get(metrics::serve))
        .route_layer(metrics::TrackLayer::new(state.metrics.clone()))
        .fallback(|| async { AppError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .with_state(state.clone());
    // The single-vector GET answered before the router; not with API keys, whose check is a
    // route layer of the router.
    let hot = (!state.config.api_keys.is_enabled()).then(|| {
        metrics::Track::named(
            state.metrics.clone(),
            vectors::VECTOR_PATH,
            vectors::get_vector_service(state.clone()),
        )
    });
    // The per-request span and tower-http's request events are at debug level; without them
    // the layer is left out (at info it cost ~10% of cached serving throughput, and a layer
    // that logs nothing still costs a little).
    let trace = (tracing::enabled!(tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG))
    .then(|| {
        tower::layer::util::Stack::new(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::debug_span!("request", method = %req.method(), path = req.uri().path(), request_id = id)
            }),
            // One body type whether the layer is there or not.
            tower::util::MapResponseLayer::new(|r: axum::http::Response<_>| {
                r.map(axum::body::Body::new)
            }),
        )
    });
    // A made request id goes into the request only for the span, which shows it.
    let span_shows_id = trace.is_some();
    // The layers every request passes through, composed into one service around the router.
    // Given to `Router::layer` one by one, each would wrap every route in a boxed service of
    // its own, and every request would clone and box the whole chain, a level per layer
    // (`clone_box` was ~10% of a cached GET's CPU).
    let every_request = tower::ServiceBuilder::new()
        .option_layer(cors)
        .layer(request_id::RequestIdLayer::new(span_shows_id))
        .option_layer(trace)
        .layer(access::CheckHostLayer::new(&allowed_hosts))
        .service(hot_route::HotRoute::new(
            vectors::VECTOR_PATH,
            hot,
            // Inside, where bodies are read: the limit is an extension every request would
            // otherwise allocate a map for.
            tower::Layer::layer(&DefaultBodyLimit::max(limit), routes),
        ));
    // Served as it is, not as a `Router`'s fallback: that cost every request a route match,
    // an extensions map and a boxed clone of the whole stack.
    every_request
}
