//! The HTTP surface: one router per resource, thin handlers, JSON errors everywhere.

pub mod compute;
pub mod docs;
pub mod extract;
pub mod features;
pub mod health;
pub mod ingest;
pub mod raw_tables;
mod request_id;
pub mod vectors;
pub mod versions;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::AppState;

/// With API keys configured, every /api/v1 call needs one; reads need read, changes write.
async fn require_api_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, AppError> {
    let keys = &state.config.api_keys;
    let headers = req.headers();
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .ok_or_else(|| {
            AppError::Unauthorized(
                "Missing API key: send Authorization: Bearer <key> or X-API-Key".into(),
            )
        })?;
    let role = keys
        .role_of(presented)
        .ok_or_else(|| AppError::Unauthorized("Invalid API key".into()))?;
    let method = req.method();
    let is_read = method == axum::http::Method::GET
        || method == axum::http::Method::HEAD
        || req.uri().path() == "/api/v1/feature-vectors/batch";
    if !is_read && role < crate::auth::Role::Write {
        return Err(AppError::Forbidden(
            "This API key may only read; changes need a write key".into(),
        ));
    }
    Ok(next.run(req).await)
}

/// The credentials of `Bearer <token>`; the scheme name is case-insensitive (RFC 9110).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

pub fn router(state: AppState) -> Router {
    // Full paths rather than `nest("/api/v1", ...)`: nesting rewrites every request's URI.
    let mut api = Router::new()
        .merge(raw_tables::router())
        .merge(features::router())
        .merge(versions::router())
        .merge(compute::router())
        .merge(vectors::router())
        .merge(ingest::router());
    // Only when keys are configured: every layer costs the serving path a little.
    if state.config.api_keys.is_enabled() {
        api = api.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    }
    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(api)
        .merge(health::router())
        .merge(docs::router())
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(|| async { AppError::NotFound("Not Found".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::debug_span!("request", method = %req.method(), path = req.uri().path(), request_id = id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(request_id::MakeRequestId::new()))
        .with_state(state)
}
