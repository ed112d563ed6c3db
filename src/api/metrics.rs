//! The edge's metrics: every matched request counted and timed by its route template, and the
//! `/metrics` scrape, which reads the gauges of what the process and the database hold now.
//! The registry itself is `crate::metrics`, which the cache and services count into.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::{ErrorCause, RequestLabels, RouteLabels, VersionLabels};
use crate::service::AppState;

/// Route templates as `&'static str`, so labelling a request allocates nothing. The set is the
/// router's routes, fixed at start, so what is leaked is bounded.
fn intern(route: &str) -> &'static str {
    static ROUTES: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    if let Ok(known) = ROUTES.read() {
        if let Some(r) = known.iter().find(|r| **r == route) {
            return r;
        }
    }
    let mut known = match ROUTES.write() {
        Ok(k) => k,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(r) = known.iter().find(|r| **r == route) {
        return r;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    known.push(leaked);
    leaked
}

fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Count and time every request that matched a route (the route template, not the raw path,
/// so ids do not explode the label set), and log server errors with their request id (the
/// per-request span is at debug level: at info it cost ~10% of cached serving throughput).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| intern(p.as_str()));
    let method = method_label(req.method());
    // A cheap clone (shared bytes), kept for the error log.
    let request_id = req.headers().get("x-request-id").cloned();
    let started = Instant::now();
    let response = next.run(req).await;
    if response.status().is_server_error() {
        let id = request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let cause = response
            .extensions()
            .get::<ErrorCause>()
            .map_or("", |c| c.0.as_str());
        tracing::error!(
            method,
            route,
            status = response.status().as_u16(),
            request_id = id,
            cause,
            "request failed"
        );
    }
    let m = &state.metrics;
    m.latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Prometheus text format. Gauges of what the process and the database hold now are read at
/// scrape time.
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    m.compute_queue_depth.set(state.compute.waiting() as i64);
    m.compute_workers_busy.set(state.compute.running() as i64);
    match state.store.served_freshness().await {
        Ok(versions) => {
            // Rebuilt each time: a deleted or archived version must drop out.
            m.snapshot_age.clear();
            m.version_stale.clear();
            let now = state.clock.now();
            for v in versions {
                let labels = VersionLabels {
                    feature: v.feature,
                    version: v.version,
                };
                let age = (now - v.computed_at).num_milliseconds() as f64 / 1000.0;
                m.snapshot_age.get_or_create(&labels).set(age.max(0.0));
                m.version_stale
                    .get_or_create(&labels)
                    .set(i64::from(v.stale));
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read versions' freshness for /metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
