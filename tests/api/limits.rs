//! Hostile feature SQL, one class per test: each is refused with a JSON 4xx (or 503) by the
//! worker's limits, and the app still serves afterwards. Small limits keep CI fast and safe.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_overloaded, holds_within, seeded, spawn_app_with, TestApp};

const MEMORY_MB: u64 = 256;

async fn small_limits_app() -> TestApp {
    spawn_app_with(|c| {
        c.compute_memory_limit_mb = MEMORY_MB;
        c.compute_timeout = Duration::from_secs(2);
    })
    .await
}

/// A table `t` (k string, v integer) holding `rows` rows over `keys` keys; returns its id.
async fn table_with_rows(app: &TestApp, rows: usize, keys: usize) -> i64 {
    let id = app
        .create_table(json!({"name": "t", "schema_definition": {"k": "string", "v": "integer"}}))
        .await;
    let mut csv = String::from("k,v\n");
    for i in 0..rows {
        csv.push_str(&format!("k{},{}\n", i % keys, i));
    }
    let (status, body) = app
        .post_raw(
            &format!("/api/v1/raw-tables/{id}/data"),
            Some("text/csv"),
            &csv,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

async fn register(app: &TestApp, table: i64, name: &str, sql: &str) -> (StatusCode, Value) {
    app.post(
        "/api/v1/features",
        &json!({"name": name, "raw_table_id": table, "entity_key": "k", "computation_logic": sql}),
    )
    .await
}

/// Register (which must pass its dry run), then compute over the stored rows.
async fn compute_over_stored_rows(app: &TestApp, table: i64, sql: &str) -> (StatusCode, Value) {
    let (status, feature) = register(app, table, "hostile", sql).await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    app.post(
        &format!("/api/v1/features/{}/compute", feature["id"]),
        &json!({"version": "v1"}),
    )
    .await
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

/// A 400 whose detail says which limit stopped the work, under `prefix`.
fn assert_stopped_by_a_limit(status: StatusCode, body: &Value, prefix: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        detail(body).starts_with(&format!("{prefix}: the computation exceeded the")),
        "{body}"
    );
}

/// The app answers, serves a computed vector, and can still compute.
async fn assert_still_serving(app: &TestApp) {
    assert_eq!(app.get("/health").await.0, StatusCode::OK);
    let (_, feature) = seeded(app).await;
    let (status, vector) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={}",
            app.compute(feature, "v1").await["feature_version_id"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    assert_eq!(vector["feature_values"]["avg_amount"], json!(112.875));
}

/// Every worker process seen while `job` ran; polled, since a worker lives only as long as its
/// job.
async fn workers_seen_during<T>(app: &TestApp, job: tokio::task::JoinHandle<T>) -> (T, Vec<u32>) {
    let mut seen = Vec::new();
    while !job.is_finished() {
        for pid in app.state.compute.worker_pids() {
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (job.await.unwrap(), seen)
}

/// Every worker seen ran, and none outlived its job (killed and reaped before the answer).
fn assert_workers_gone(workers: &[u32]) {
    assert!(!workers.is_empty(), "no worker was seen");
    let alive = |pid: &u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(!workers.iter().any(alive), "a worker outlived its job");
}

/// Compute v1 of `feature` in the background: (status, body, how long it took).
fn spawn_compute(
    app: &TestApp,
    feature: &Value,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let client = app.client.clone();
    let url = app.url(&format!("/api/v1/features/{}/compute", feature["id"]));
    tokio::spawn(async move {
        let started = Instant::now();
        let resp = client
            .post(url)
            .json(&json!({"version": "v1"}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (
            status,
            resp.json::<Value>().await.unwrap(),
            started.elapsed(),
        )
    })
}

#[tokio::test]
async fn registration_returns_400_when_the_sql_generates_rows_from_a_literal() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 10, 5).await;
    let (status, body) = register(
        &app,
        table,
        "generator",
        "SELECT k, COUNT(*) AS n FROM data WHERE k NOT IN \
         (SELECT UNNEST(STRING_TO_ARRAY(RPAD('', 200000000, ','), ',')) AS x) GROUP BY k",
    )
    .await;
    assert_stopped_by_a_limit(status, &body, "Invalid feature computation");
    let (_, features) = app.get("/api/v1/features").await;
    assert_eq!(features, json!([]));
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn compute_returns_400_at_the_memory_limit_when_the_sql_pads_values() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 2_000, 100).await;
    let (status, feature) = register(
        &app,
        table,
        "pad",
        "SELECT k, MAX(RPAD(k, 2000000000, 'x')) AS p FROM data GROUP BY k",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    let compute = spawn_compute(&app, &feature);
    let ((status, body, _), workers) = workers_seen_during(&app, compute).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        detail(&body),
        format!(
            "Feature computation failed: the computation exceeded the memory limit of {MEMORY_MB} MiB"
        )
    );
    assert_workers_gone(&workers);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn compute_returns_400_when_a_cross_join_outgrows_the_limits() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 20_000, 20_000).await;
    let (status, body) = compute_over_stored_rows(
        &app,
        table,
        "SELECT a.k, COUNT(*) AS n, MAX(b.v) AS m FROM data a CROSS JOIN data b GROUP BY a.k",
    )
    .await;
    assert_stopped_by_a_limit(status, &body, "Feature computation failed");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_self_join_within_the_limits_computes() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 6, 3).await;
    // Rows k0: v 0,3; k1: 1,4; k2: 2,5. Pairs (a, b) with b.v < a.v per key: one each.
    let (status, body) = compute_over_stored_rows(
        &app,
        table,
        "SELECT a.k, COUNT(*) AS earlier FROM data a JOIN data b ON a.k = b.k WHERE b.v < a.v GROUP BY a.k",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, vector) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=k1&feature_version_id={}",
            body["feature_version_id"]
        ))
        .await;
    assert_eq!(vector["feature_values"], json!({"earlier": 1}));
}

#[tokio::test]
async fn ctes_that_double_the_rows_level_after_level_are_refused_by_a_limit() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 1_000, 1_000).await;
    let mut sql = String::from("WITH l0 AS (SELECT k, v FROM data)");
    for level in 1..=30 {
        let below = level - 1;
        sql.push_str(&format!(
            ", l{level} AS (SELECT k, v FROM l{below} UNION ALL SELECT k, v FROM l{below})"
        ));
    }
    sql.push_str(" SELECT k, SUM(v) AS s FROM l30 GROUP BY k");
    // Polars expands each CTE reference, so the plan itself doubles per level: the dry run on
    // an empty frame may already meet the limit. Either step must refuse it, by a limit.
    let (status, feature) = register(&app, table, "doubling", &sql).await;
    let (status, body, prefix) = if status == StatusCode::CREATED {
        let (status, body) = app
            .post(
                &format!("/api/v1/features/{}/compute", feature["id"]),
                &json!({"version": "v1"}),
            )
            .await;
        (status, body, "Feature computation failed")
    } else {
        (status, feature, "Invalid feature computation")
    };
    assert_stopped_by_a_limit(status, &body, prefix);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn registration_returns_400_with_the_engine_message_when_the_engine_panics() {
    let app = small_limits_app().await;
    let table = table_with_rows(&app, 10, 5).await;
    let (status, body) = register(&app, table, "regex", "SELECT k, COLUMNS('(') FROM data").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        detail(&body).starts_with("Invalid feature computation: "),
        "{body}"
    );
    assert_still_serving(&app).await;
}

/// A feature over 2M stored rows whose compute takes seconds: a self-join on a key with ~400
/// rows each (800M joined rows, counted as they stream: 5.5 s and a 108 MiB worker here on
/// 2026-12-01; with ~20 rows per key it took 1.0 s, too close to the 1 s limits below).
async fn heavy_feature(app: &TestApp) -> Value {
    let table = app
        .create_table(json!({"name": "big", "schema_definition": {"k": "integer", "v": "float"}}))
        .await;
    let mut csv = String::from("k,v\n");
    for i in 0..2_000_000 {
        csv.push_str(&format!("{},{}\n", i % 5_003, i));
    }
    let (status, body) = app
        .post_raw(
            &format!("/api/v1/raw-tables/{table}/data"),
            Some("text/csv"),
            &csv,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, feature) = app
        .post(
            "/api/v1/features",
            &json!({"name": "heavy", "raw_table_id": table, "entity_key": "k",
                    "computation_logic": "SELECT a.k, COUNT(*) AS n FROM data a \
                     JOIN data b ON a.k = b.k GROUP BY a.k"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    feature
}

#[tokio::test]
async fn compute_returns_400_at_the_time_limit_and_kills_the_worker_while_serving_answers() {
    let app = spawn_app_with(|c| {
        c.compute_memory_limit_mb = 2048;
        c.compute_timeout = Duration::from_secs(1);
    })
    .await;
    let feature = heavy_feature(&app).await;

    let compute = spawn_compute(&app, &feature);
    let health = {
        let (client, url) = (app.client.clone(), app.url("/health"));
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !compute.is_finished() {
                let started = Instant::now();
                let status = client.get(&url).send().await.unwrap().status();
                assert_eq!(status, StatusCode::OK);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (compute.await.unwrap(), slowest)
        })
    };
    let (((status, body, took), slowest), workers) = workers_seen_during(&app, health).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        detail(&body),
        "Feature computation failed: the computation exceeded the time limit of 1 s"
    );
    assert!(took < Duration::from_secs(5), "the compute ran {took:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "serving stalled {slowest:?}"
    );
    // Killed and reaped before the answer, not left running.
    assert_workers_gone(&workers);
    let (_, versions) = app
        .get(&format!("/api/v1/features/{}/versions", feature["id"]))
        .await;
    assert_eq!(versions, json!([]));
}

#[tokio::test]
async fn compute_returns_503_with_retry_after_when_the_queue_is_full() {
    let app = spawn_app_with(|c| {
        c.compute_workers = 1;
        c.compute_queue_size = 0;
        c.compute_timeout = Duration::from_secs(1);
    })
    .await;
    let slow = heavy_feature(&app).await;
    let table = table_with_rows(&app, 10, 5).await;
    let (status, quick) = register(&app, table, "quick", "SELECT k FROM data GROUP BY k").await;
    assert_eq!(status, StatusCode::CREATED, "{quick}");

    let first = spawn_compute(&app, &slow);
    // Evidence, not a sleep: the one worker is taken.
    let taken = holds_within(
        Duration::from_secs(10),
        Duration::from_millis(2),
        || async { app.state.compute.running() > 0 },
    )
    .await;
    assert!(taken, "the slow compute never started");
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/features/{}/compute", quick["id"])))
        .json(&json!({"version": "v1"}))
        .send()
        .await
        .unwrap();
    let body = assert_overloaded(resp).await;
    assert!(detail(&body).contains("compute workers are busy"), "{body}");
    // The first one holds its worker until it is killed at the time limit.
    assert_eq!(first.await.unwrap().0, StatusCode::BAD_REQUEST);
    // With the worker free again the same compute goes through.
    app.compute(quick["id"].as_i64().unwrap(), "v1").await;
}

#[tokio::test]
async fn a_training_set_over_the_worker_memory_limit_is_400_naming_it_and_the_server_keeps_serving()
{
    let app = spawn_app_with(|c| {
        c.compute_memory_limit_mb = MEMORY_MB;
        c.compute_timeout = std::time::Duration::from_secs(120);
    })
    .await;
    let table = table_with_rows(&app, 200, 100).await;
    // 30 value columns over 100 entities: each training row gathers 30 values.
    let columns: Vec<String> = (0..30)
        .map(|i| format!("CAST(SUM(v) + {i} AS DOUBLE) AS c{i}"))
        .collect();
    let sql = format!("SELECT k, {} FROM data GROUP BY k", columns.join(", "));
    let (status, body) = compute_over_stored_rows(&app, table, &sql).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // 2M rows × 30 columns of floats: 480 MB of values alone, past the 256 MiB limit.
    use polars::prelude::*;
    let n = 2_000_000usize;
    let mut rows = df!(
        "entity_id" => (0..n).map(|i| format!("k{}", i % 100)).collect::<Vec<_>>(),
        "timestamp" => vec![4_102_444_800_000_000i64; n]
    )
    .unwrap();
    rows.apply("timestamp", |c| {
        c.cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .unwrap()
    })
    .unwrap();
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut rows).unwrap();
    let resp = app
        .post_as(
            "/api/v1/training-sets?features=hostile",
            "application/vnd.apache.parquet",
            parquet,
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        detail(&body),
        format!(
            "The training set failed: the computation exceeded the memory limit of {MEMORY_MB} MiB"
        )
    );
    assert_still_serving(&app).await;
}
