//! Prometheus metrics, served at /metrics: requests by matched route, method and status,
//! latency histograms per route, cache hits and misses per tier, compute durations, ingested
//! rows.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
pub struct TableLabels {
    pub raw_table: String,
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
    /// `cache`'s counters by tier and result, resolved on first use: the serving path counts
    /// a lookup on every request, and the family's lookup (a lock and a hash) is skipped.
    cache_counters: Arc<[OnceLock<Counter>; 6]>,
    /// Computes by engine, end to end.
    pub compute_seconds: Family<EngineLabels, Histogram, fn() -> Histogram>,
    pub ingested_rows: Counter,
    pub refresh_runs: Family<ResultLabels, Counter>,
    /// 1 while this replica holds the scheduler lease.
    pub scheduler_leader: Gauge,
    /// Times this replica, holding the lease, looked for due refreshes.
    pub scheduler_passes: Counter,
    /// Per raw table that follows a stream, on the replica committing it.
    pub stream_events: Family<TableLabels, Counter>,
    pub stream_rejected: Family<TableLabels, Counter>,
    pub stream_lag: Family<TableLabels, Gauge>,
    pub stream_commit_seconds: Family<TableLabels, Histogram, fn() -> Histogram>,
    // Set at scrape time (`api::metrics::serve`), from what the pool and the database hold.
    pub compute_queue_depth: Gauge,
    pub compute_workers_busy: Gauge,
    pub snapshot_age: Family<VersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub version_stale: Family<VersionLabels, Gauge>,
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
        let stream_events = Family::<TableLabels, Counter>::default();
        let stream_rejected = Family::<TableLabels, Counter>::default();
        let stream_lag = Family::<TableLabels, Gauge>::default();
        let stream_commit_seconds =
            Family::<TableLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                compute_histogram,
            );
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
            "stream_events",
            "Stream messages committed to each raw table as rows",
            stream_events.clone(),
        );
        registry.register(
            "stream_rejected",
            "Stream messages set aside, with their reasons, per raw table",
            stream_rejected.clone(),
        );
        registry.register(
            "stream_lag",
            "Messages the stream holds after the last one committed, per raw table",
            stream_lag.clone(),
        );
        registry.register(
            "stream_commit_duration_seconds",
            "Micro-batch commits of a stream (rows and rejected messages), per raw table",
            stream_commit_seconds.clone(),
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
            cache_counters: Arc::default(),
            compute_seconds,
            ingested_rows,
            refresh_runs,
            scheduler_leader,
            scheduler_passes,
            stream_events,
            stream_rejected,
            stream_lag,
            stream_commit_seconds,
            compute_queue_depth,
            compute_workers_busy,
            snapshot_age,
            version_stale,
            drift_psi,
        }
    }

    pub fn cache_lookup(&self, tier: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        let slot = match tier {
            "memory" => 0,
            "redis" => 2,
            "snapshot" => 4,
            _ => {
                self.cache
                    .get_or_create(&CacheLabels { tier, result })
                    .inc();
                return;
            }
        } + usize::from(!hit);
        self.cache_counters[slot]
            .get_or_init(|| {
                self.cache
                    .get_or_create(&CacheLabels { tier, result })
                    .clone()
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
