//! `spawn_app()`: the real app on a free port, with a fresh database per test.
//!
//! SQLite in a temporary directory by default; with `TEST_DATABASE_URL=postgres://...` each
//! test gets its own freshly created Postgres database instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use feature_store::{build_app, serve, AppState, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub database_url: String,
    pub redis_prefix: Option<String>,
    dir: Option<Arc<TempDir>>,
    _stop: oneshot::Sender<()>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where each test database's data location is (raw tables, snapshots): a temporary
/// directory per database, shared by every replica of it.
static DATA_DIRS: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// The data directory of a database made by `fresh_database`.
pub fn data_dir_for(database_url: &str) -> Option<std::path::PathBuf> {
    DATA_DIRS
        .lock()
        .ok()?
        .iter()
        .find(|(url, _)| url == database_url)
        .map(|(_, dir)| dir.clone())
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// A database URL nobody else uses, and a temporary directory that holds its data location
/// (and, for SQLite, the database file).
pub async fn fresh_database() -> (String, Option<Arc<TempDir>>) {
    let (url, dir) = fresh_database_only().await;
    let dir = dir.unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("temp dir")));
    if let Ok(mut dirs) = DATA_DIRS.lock() {
        dirs.push((url.clone(), dir.path().join("data")));
    }
    (url, Some(dir))
}

async fn fresh_database_only() -> (String, Option<Arc<TempDir>>) {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if !base.trim().is_empty() => {
            let name = format!("fs_test_{}", unique_suffix());
            let mut admin = sqlx::PgConnection::connect(&base)
                .await
                .expect("connect to TEST_DATABASE_URL");
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create test database");
            let (prefix, _) = base
                .split('?')
                .next()
                .and_then(|u| u.rsplit_once('/'))
                .expect("TEST_DATABASE_URL has a database path");
            (format!("{prefix}/{name}"), None)
        }
        _ => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite:{}/feature_store.db", dir.path().display());
            (url, Some(Arc::new(dir)))
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The Redis a test should use, if the environment provides one (`TEST_REDIS_URL`).
pub fn test_redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A fresh database, and Redis with a key prefix of its own when `TEST_REDIS_URL` is set.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let (database_url, dir) = fresh_database().await;
    let prefix = test_redis_url().map(|_| format!("fs_test:{}:", unique_suffix()));
    start(database_url, dir, prefix, adjust).await
}

/// Another replica of `app`: the same database and the same Redis key prefix.
pub async fn spawn_replica(app: &TestApp) -> TestApp {
    spawn_replica_with(app, |_| {}).await
}

/// Another replica of `app` (same database, same Redis key prefix), configured by `adjust`.
pub async fn spawn_replica_with(app: &TestApp, adjust: impl FnOnce(&mut Config)) -> TestApp {
    start(
        app.database_url.clone(),
        app.dir.clone(),
        app.redis_prefix.clone(),
        adjust,
    )
    .await
}

async fn start(
    database_url: String,
    dir: Option<Arc<TempDir>>,
    redis_prefix: Option<String>,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config {
        database_url: database_url.clone(),
        // The test harness is this process's executable; workers are the server binary.
        compute_worker_program: Some(env!("CARGO_BIN_EXE_feature-store").into()),
        data_dir: data_dir_for(&database_url).map(|d| d.display().to_string()),
        ..Config::default()
    };
    if let (Some(url), Some(prefix)) = (test_redis_url(), &redis_prefix) {
        config.redis_url = Some(url);
        config.redis_key_prefix = prefix.clone();
    }
    adjust(&mut config);
    // A test that points at a Redis of its own (or an unreachable one) waits for what it expects.
    let uses_redis = config.redis_url.is_some() && config.redis_url == test_redis_url();
    let (state, router) = build_app(config).await.expect("build app");
    if uses_redis {
        wait_for_cache_mode(&state, "redis").await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, async {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        state,
        database_url,
        redis_prefix,
        dir,
        _stop: stop,
    }
}

/// Poll `check` every 100 ms for up to `secs` seconds; true once it holds. Tests wait for
/// evidence with this (or `wait_for`), never for a fixed time.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(secs, || {
        let held = check();
        async move { held.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Poll `find` every 100 ms for up to `secs` seconds; what it first finds, or None.
pub async fn wait_for<T, F, Fut>(secs: u64, find: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll(Duration::from_secs(secs), Duration::from_millis(100), find).await
}

/// Poll `check` every `every` for at most `bound`; true once it holds. For a bound the test
/// asserts (a replica sees a change within its poll of the database) or a moment that must be
/// caught while it lasts (a worker while it runs), where `eventually`'s 100 ms is too coarse.
pub async fn holds_within<F, Fut>(bound: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll(bound, every, || {
        let held = check();
        async move { held.await.then_some(()) }
    })
    .await
    .is_some()
}

async fn poll<T, F, Fut>(bound: Duration, every: Duration, mut find: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(found) = find().await {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Poll until the cache reports `mode` (the Redis watchdog connects in the background).
pub async fn wait_for_cache_mode(state: &AppState, mode: &str) {
    for _ in 0..200 {
        if state.cache.mode() == mode {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cache mode is {:?}, expected {mode:?}", state.cache.mode());
}

async fn decode(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        decode(self.client.get(self.url(path)).send().await.expect("send")).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        decode(
            self.client
                .delete(self.url(path))
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        decode(
            self.client
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        decode(
            self.client
                .patch(self.url(path))
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        decode(req.send().await.expect("send")).await
    }

    /// POST `body` in the media type `format` and ask for the answer in the same one.
    pub async fn post_as(
        &self,
        path: &str,
        format: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", format)
            .header("accept", format)
            .body(body)
            .send()
            .await
            .expect("send")
    }

    /// Register `user_transactions` as the original's sample does; returns its id.
    pub async fn register_transactions(&self) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/raw-tables",
                &json!({
                    "name": "user_transactions",
                    "description": "User transaction data",
                    "schema_definition": {
                        "user_id": "string",
                        "transaction_amount": "float",
                        "transaction_date": "string"
                    }
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("id")
    }

    /// Create `avg_transaction_amount` over the table; returns its id.
    pub async fn create_avg_feature(&self, table_id: i64) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/features",
                &json!({
                    "name": "avg_transaction_amount",
                    "description": "Average transaction amount per user",
                    "raw_table_id": table_id,
                    "computation_logic": "SELECT user_id, AVG(transaction_amount) as avg_amount FROM data GROUP BY user_id",
                    "entity_key": "user_id"
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("id")
    }

    /// Compute `version` of `feature` over its ingested rows; must succeed. Returns the body.
    pub async fn compute(&self, feature: i64, version: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v1/features/{feature}/compute"),
                &json!({ "version": version }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics text")
    }

    pub async fn ingest(&self, table_id: i64, rows: Value) -> (StatusCode, Value) {
        self.post(
            "/api/v1/ingest",
            &json!({"raw_table_id": table_id, "data": rows}),
        )
        .await
    }
}

/// The sample rows: user_001 averages 112.875, user_002 212.75, user_003 75.0.
pub fn sample_rows() -> Value {
    json!([
        {"user_id": "user_001", "transaction_amount": 150.50, "transaction_date": "2024-01-15"},
        {"user_id": "user_001", "transaction_amount": 75.25, "transaction_date": "2024-01-16"},
        {"user_id": "user_002", "transaction_amount": 300.00, "transaction_date": "2024-01-15"},
        {"user_id": "user_001", "transaction_amount": 200.00, "transaction_date": "2024-01-17"},
        {"user_id": "user_003", "transaction_amount": 50.00, "transaction_date": "2024-01-15"},
        {"user_id": "user_002", "transaction_amount": 125.50, "transaction_date": "2024-01-18"},
        {"user_id": "user_001", "transaction_amount": 25.75, "transaction_date": "2024-01-19"},
        {"user_id": "user_003", "transaction_amount": 100.00, "transaction_date": "2024-01-20"}
    ])
}

/// A table, the average feature and the sample rows ingested: (table id, feature id).
pub async fn seeded(app: &TestApp) -> (i64, i64) {
    let table = app.register_transactions().await;
    let (status, body) = app.ingest(table, sample_rows()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let feature = app.create_avg_feature(table).await;
    (table, feature)
}

/// A 503 with `Retry-After: 2` and a JSON `detail`; returns the body.
pub async fn assert_overloaded(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: Value = resp.json().await.expect("JSON body");
    assert!(body["detail"].is_string(), "{body}");
    body
}
