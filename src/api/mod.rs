//! The HTTP surface: one router per resource, thin handlers, JSON errors everywhere.

pub mod compute;
pub mod docs;
pub mod extract;
pub mod features;
pub mod health;
pub mod ingest;
pub mod raw_tables;
pub mod vectors;
pub mod versions;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::AppState;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(raw_tables::router())
        .merge(features::router())
        .merge(versions::router())
        .merge(compute::router())
        .merge(vectors::router())
        .merge(ingest::router());
    let limit = state.config.max_body_bytes;
    Router::new()
        .nest("/api/v1", api)
        .merge(health::router())
        .merge(docs::router())
        .fallback(|| async { AppError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
