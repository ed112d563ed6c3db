//! The edge's metrics: every matched request counted and timed by its route template, and the
//! `/metrics` scrape, which reads the gauges of what the process and the database hold now.
//! The registry itself is `crate::metrics`, which the cache and services count into.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Metrics, RequestLabels, RouteLabels, VersionLabels};
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
/// so ids do not explode the label set), and leave the route and method on a server error's
/// answer for `super::request_id` to log with the request id (the per-request span exists
/// only when debug logging is on: at info it cost ~10% of cached serving throughput).
///
/// A tower layer given to `Router::route_layer`, so one `Track` serves one route's method: it
/// resolves its labels and metric handles on its first request and keeps them, where
/// `from_fn` would box a future and clone the inner service, and every request would look
/// its labels up in the metric families again.
#[derive(Clone)]
pub struct TrackLayer {
    metrics: Metrics,
}

impl TrackLayer {
    pub fn new(metrics: Metrics) -> Self {
        TrackLayer { metrics }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            route: Arc::new(RouteMetrics {
                metrics: self.metrics.clone(),
                handles: OnceLock::new(),
            }),
        }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    route: Arc<RouteMetrics>,
}

/// One route's metrics: the registry, and the handles of its latency and of its successful
/// answers, resolved on its first request.
struct RouteMetrics {
    metrics: Metrics,
    handles: OnceLock<Handles>,
}

struct Handles {
    route: &'static str,
    latency: Histogram,
    /// The counter of 200s for the method of the first 200 (a route's `Track` also answers
    /// HEAD for a GET, and its 405s): answers of other methods and statuses are counted
    /// through the family.
    ok: OnceLock<(&'static str, Counter)>,
}

impl RouteMetrics {
    fn handles(&self, req: &Request) -> &Handles {
        self.handles.get_or_init(|| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| intern(p.as_str()));
            Handles::new(&self.metrics, route)
        })
    }
}

impl Handles {
    fn new(metrics: &Metrics, route: &'static str) -> Self {
        Handles {
            route,
            latency: metrics
                .latency
                .get_or_create(&RouteLabels { route })
                .clone(),
            ok: OnceLock::new(),
        }
    }
}

/// Left on a server error's answer by `Track`: which route and method failed.
#[derive(Clone, Copy)]
pub struct Failed {
    pub route: &'static str,
    pub method: &'static str,
}

impl<S> Track<S> {
    /// A `Track` for a route answered before the router (`super::hot_route`), where no
    /// `MatchedPath` names it: its requests count under `route`, as the router's would.
    pub fn named(metrics: Metrics, route: &str, inner: S) -> Self {
        let handles = OnceLock::new();
        let _ = handles.set(Handles::new(&metrics, intern(route)));
        Track {
            inner,
            route: Arc::new(RouteMetrics { metrics, handles }),
        }
    }
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let method = method_label(req.method());
        self.route.handles(&req);
        // Before the call: an answer held in process is made inside it.
        let started = Instant::now();
        Tracked {
            inner: self.inner.call(req),
            route: self.route.clone(),
            method,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's answer, counted and timed when it is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: Arc<RouteMetrics>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let elapsed = this.started.elapsed().as_secs_f64();
        let Some(handles) = this.route.handles.get() else {
            return Poll::Ready(Ok(response));
        };
        let route = handles.route;
        let method = *this.method;
        let status = response.status();
        if status.is_server_error() {
            // For the error log, written where the request id is known (`super::request_id`).
            response.extensions_mut().insert(Failed { route, method });
        }
        handles.latency.observe(elapsed);
        let labels = RequestLabels {
            route,
            method,
            status: status.as_u16(),
        };
        let requests = &this.route.metrics.requests;
        if status == StatusCode::OK {
            let (ok_method, ok) = handles
                .ok
                .get_or_init(|| (method, requests.get_or_create(&labels).clone()));
            if *ok_method == method {
                ok.inc();
                return Poll::Ready(Ok(response));
            }
        }
        requests.get_or_create(&labels).inc();
        Poll::Ready(Ok(response))
    }
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
