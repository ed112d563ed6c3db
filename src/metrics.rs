//! Prometheus metrics, served at /metrics: requests by matched route, method and status,
//! latency histograms per route, cache hits and misses per tier, compute durations, ingested
//! rows.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

/// Why a request failed on the server's side: the error and each of its sources. The edge
/// puts it on a 5xx response; the request log here writes it beside the request id.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `memory`, `redis` or `snapshot`.
    pub tier: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `succeeded`, `failed` or `nothing_new`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub feature: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    /// `polars` or `spark`.
    pub engine: &'static str,
}

fn compute_histogram() -> Histogram {
    // 1 ms .. ~2 min
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub cache: Family<CacheLabels, Counter>,
    /// Computes by engine, end to end.
    pub compute_seconds: Family<EngineLabels, Histogram, fn() -> Histogram>,
    pub ingested_rows: Counter,
    pub refresh_runs: Family<ResultLabels, Counter>,
    /// 1 while this replica holds the scheduler lease.
    pub scheduler_leader: Gauge,
    /// Times this replica, holding the lease, looked for due refreshes.
    pub scheduler_passes: Counter,
    compute_queue_depth: Gauge,
    compute_workers_busy: Gauge,
    snapshot_age: Family<VersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    version_stale: Family<VersionLabels, Gauge>,
    drift_psi: Family<ColumnLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColumnLabels {
    pub feature: String,
    pub version: String,
    pub column: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let cache = Family::<CacheLabels, Counter>::default();
        let compute_seconds =
            Family::<EngineLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                compute_histogram,
            );
        let ingested_rows = Counter::default();
        let refresh_runs = Family::<ResultLabels, Counter>::default();
        let scheduler_leader = Gauge::default();
        let scheduler_passes = Counter::default();
        let compute_queue_depth = Gauge::default();
        let compute_workers_busy = Gauge::default();
        let snapshot_age = Family::default();
        let version_stale = Family::default();
        let drift_psi = Family::default();
        let mut registry = Registry::with_prefix("feature_store");
        registry.register(
            "http_requests",
            "HTTP requests by matched route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by matched route",
            latency.clone(),
        );
        registry.register(
            "cache_lookups",
            "Serving cache lookups by tier and result",
            cache.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Feature computations by engine, end to end",
            compute_seconds.clone(),
        );
        registry.register(
            "ingested_rows",
            "Rows stored into raw tables",
            ingested_rows.clone(),
        );
        registry.register(
            "refresh_runs",
            "Scheduled refreshes by result: succeeded, failed, nothing_new",
            refresh_runs.clone(),
        );
        registry.register(
            "scheduler_leader",
            "1 while this replica holds the scheduler lease",
            scheduler_leader.clone(),
        );
        registry.register(
            "scheduler_passes",
            "Times this replica, holding the scheduler lease, looked for due refreshes",
            scheduler_passes.clone(),
        );
        registry.register(
            "compute_queue_depth",
            "Computes waiting for a compute worker",
            compute_queue_depth.clone(),
        );
        registry.register(
            "compute_workers_busy",
            "Compute workers running a job",
            compute_workers_busy.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the served snapshot of each computed, unarchived version was computed",
            snapshot_age.clone(),
        );
        registry.register(
            "version_stale",
            "1 when a version's raw table holds rows its served snapshot did not read",
            version_stale.clone(),
        );
        registry.register(
            "drift_psi",
            "PSI of each value column between a version's two newest snapshots",
            drift_psi.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            latency,
            cache,
            compute_seconds,
            ingested_rows,
            refresh_runs,
            scheduler_leader,
            scheduler_passes,
            compute_queue_depth,
            compute_workers_busy,
            snapshot_age,
            version_stale,
            drift_psi,
        }
    }

    pub fn cache_lookup(&self, tier: &'static str, hit: bool) {
        self.cache
            .get_or_create(&CacheLabels {
                tier,
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    pub fn refresh_run(&self, result: &'static str) {
        self.refresh_runs
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Record the drift between a version's two newest snapshots.
    pub fn set_drift(
        &self,
        feature: &str,
        version: &str,
        columns: &std::collections::BTreeMap<String, crate::model::ColumnDrift>,
    ) {
        for (column, drift) in columns {
            if let Some(psi) = drift.psi {
                self.drift_psi
                    .get_or_create(&ColumnLabels {
                        feature: feature.to_string(),
                        version: version.to_string(),
                        column: column.clone(),
                    })
                    .set(psi);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
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
