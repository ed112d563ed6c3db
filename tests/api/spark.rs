//! Features computed on Apache Spark through Spark Connect: a local standalone cluster (a
//! master, two workers and the Connect server, from PyPI's pyspark) that `.ci/run` starts.
//! `#[ignore]`d without one: set `TEST_SPARK_CONNECT_URL` (`sc://127.0.0.1:15002`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, holds_within, spawn_app, spawn_app_with, spawn_replica_with, TestApp,
};

fn spark_url() -> String {
    std::env::var("TEST_SPARK_CONNECT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .expect("TEST_SPARK_CONNECT_URL is needed for the Spark tests")
}

/// On a loaded 2-core machine a Spark job takes seconds; the limit is not what these test.
async fn app_with_spark() -> TestApp {
    spawn_app_with(|c| {
        c.spark_connect_url = Some(spark_url());
        c.compute_timeout = Duration::from_secs(300);
        c.scheduler_lease = Duration::from_secs(1);
    })
    .await
}

/// Events of three users over January 2024, with an event time.
async fn events(app: &TestApp) -> i64 {
    let table = app
        .create_table(
            json!({"name": "events", "event_time_column": "ts", "schema_definition":
                {"user_id": "string", "amount": "float", "category": "string",
                 "ts": "datetime", "day": "date"}}),
        )
        .await;
    let mut rows = Vec::new();
    for i in 0..30_i64 {
        let user = ["u1", "u2", "u3"][(i % 3) as usize];
        let category = ["food", "travel", "games"][(i % 4 % 3) as usize];
        let day = 1 + (i * 7) % 28;
        rows.push(json!({
            "user_id": user,
            "amount": (i * 37 % 250) as f64 + 0.25,
            "category": category,
            "ts": format!("2024-01-{day:02}T{:02}:00:00Z", i % 24),
            "day": format!("2024-{:02}-{day:02}", 1 + i % 2),
        }));
    }
    app.ingested(table, Value::Array(rows)).await;
    table
}

async fn feature(
    app: &TestApp,
    table: i64,
    name: &str,
    sql: &str,
    engine: &str,
) -> (StatusCode, Value) {
    app.post(
        "/api/v1/features",
        &json!({"name": name, "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": sql, "engine": engine}),
    )
    .await
}

/// Every user's served values of `feature` (by name).
async fn served_values(app: &TestApp, feature: &str) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    for user in ["u1", "u2", "u3"] {
        let (status, vector) = app
            .get(&format!(
                "/api/v1/feature-vectors?entity_id={user}&feature_name={feature}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{feature} {user}: {vector}");
        values.insert(user.to_string(), vector["feature_values"].clone());
    }
    values
}

/// Equal, numbers within a relative 1e-9 (the engines sum in different orders).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The dialect both engines speak, as docs/operations.md documents it: each query, computed on both
/// over the same table, serves the same vectors.
const COMMON_DIALECT: &[(&str, &str)] = &[
    (
        "aggregates",
        "SELECT user_id, SUM(amount) AS total, AVG(amount) AS mean, COUNT(*) AS n, \
         MIN(amount) AS lo, MAX(amount) AS hi, COUNT(DISTINCT category) AS kinds \
         FROM data GROUP BY user_id",
    ),
    (
        "case_when",
        "SELECT user_id, SUM(CASE WHEN amount > 100 THEN 1 ELSE 0 END) AS big, \
         SUM(CASE WHEN category = 'food' THEN amount ELSE 0.0 END) AS food \
         FROM data GROUP BY user_id",
    ),
    (
        "dates",
        "SELECT user_id, MAX(day) AS last_day, MIN(ts) AS first_seen, \
         COUNT(DISTINCT EXTRACT(MONTH FROM day)) AS months \
         FROM data WHERE day >= DATE '2024-01-05' GROUP BY user_id",
    ),
    (
        "windows",
        "SELECT user_id, amount AS first_amount FROM \
         (SELECT user_id, amount, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn \
          FROM data) ranked WHERE rn = 1",
    ),
    (
        "ctes_and_filters",
        "WITH big AS (SELECT user_id, amount FROM data WHERE amount > 50 AND category <> 'games') \
         SELECT user_id, COUNT(*) AS n, AVG(amount) * 2 AS twice FROM big GROUP BY user_id",
    ),
];

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn the_common_dialect_serves_the_same_vectors_on_spark_and_on_polars() {
    let app = app_with_spark().await;
    let table = events(&app).await;
    for (name, sql) in COMMON_DIALECT {
        let mut served = Vec::new();
        for engine in ["polars", "spark"] {
            let label = format!("{name}_{engine}");
            let (status, body) = feature(&app, table, &label, sql, engine).await;
            assert_eq!(status, StatusCode::CREATED, "{label}: {body}");
            assert_eq!(body["engine"], engine);
            let id = body["id"].as_i64().unwrap();
            let computed = app.compute(id, "v1").await;
            assert_eq!(computed["vectors_created"], 3, "{label}: {computed}");
            served.push(served_values(&app, &label).await);
        }
        for user in ["u1", "u2", "u3"] {
            assert!(
                same(&served[0][user], &served[1][user]),
                "{name} for {user}: polars {} but spark {}",
                served[0][user],
                served[1][user]
            );
        }
    }
    // Jobs and metrics name the engine.
    let (_, jobs) = app.get("/api/v1/jobs").await;
    let engines: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["engine"].as_str().unwrap())
        .collect();
    assert!(
        engines.contains(&"spark") && engines.contains(&"polars"),
        "{engines:?}"
    );
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"feature_store_compute_duration_seconds_count{engine="spark"}"#),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn a_feature_keyed_by_two_columns_computes_on_spark_as_on_polars() {
    let app = app_with_spark().await;
    let table = events(&app).await;
    let sql = "SELECT user_id, category, COUNT(*) AS n, SUM(amount) AS spent \
               FROM data GROUP BY user_id, category";
    let mut answers = Vec::new();
    for engine in ["polars", "spark"] {
        let name = format!("pair_{engine}");
        let (status, body) = app
            .post(
                "/api/v1/features",
                &json!({"name": name, "raw_table_id": table, "entity_key": ["user_id", "category"],
                    "computation_logic": sql, "engine": engine}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let computed = app.compute(body["id"].as_i64().unwrap(), "v1").await;
        assert_eq!(computed["vectors_created"], 9, "{engine}: {computed}");
        let (status, vector) = app
            .get(&format!(
                "/api/v1/feature-vectors?feature_name={name}&user_id=u1&category=food"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{engine}: {vector}");
        answers.push(vector["feature_values"].clone());
    }
    assert!(
        same(&answers[0], &answers[1]),
        "polars {} but spark {}",
        answers[0],
        answers[1]
    );
    // A key column Spark's analyzer does not see in the result is refused before registering.
    let (status, body) = app
        .post(
            "/api/v1/features",
            &json!({"name": "no_category", "raw_table_id": table, "entity_key": ["user_id", "category"],
                "computation_logic": "SELECT user_id, COUNT(*) AS n FROM data GROUP BY user_id",
                "engine": "spark"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].to_string().contains("'category'"), "{body}");
}

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn as_of_backfill_and_scheduled_refresh_run_on_spark() {
    let app = app_with_spark().await;
    let table = events(&app).await;
    let sql = "SELECT user_id, SUM(amount) AS total, COUNT(*) AS n FROM data GROUP BY user_id";
    let (_, polars) = feature(&app, table, "total_polars", sql, "polars").await;
    let (status, spark) = feature(&app, table, "total_spark", sql, "spark").await;
    assert_eq!(status, StatusCode::CREATED, "{spark}");
    let (polars, spark) = (
        polars["id"].as_i64().unwrap(),
        spark["id"].as_i64().unwrap(),
    );

    // As of the 10th: the same rows on both engines.
    let mut versions = Vec::new();
    for id in [polars, spark] {
        let (status, body) = app
            .post(
                &format!("/api/v1/features/{id}/compute"),
                &json!({"version": "v1", "as_of": "2024-01-10T00:00:00Z"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        versions.push(body["feature_version_id"].as_i64().unwrap());
    }
    let (a, b) = (
        served_values(&app, "total_polars").await,
        served_values(&app, "total_spark").await,
    );
    assert_eq!(a, b);
    let n: i64 = b.values().map(|v| v["n"].as_i64().unwrap()).sum();
    assert!(n > 0 && n < 30, "as_of left no row out: {n}");

    // A backfill of three daily steps, each on Spark.
    let (status, steps) = app
        .post(
            &format!("/api/v1/features/{spark}/versions/{}/backfill", versions[1]),
            &json!({"start": "2024-01-05T00:00:00Z", "end": "2024-01-07T00:00:00Z",
                "every_seconds": 86400}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{steps}");
    assert_eq!(steps.as_array().unwrap().len(), 3);
    let (status, then) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=u1&feature_version_id={}&as_of=2024-01-06T12:00:00Z",
            versions[1]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");

    // Scheduled refresh: the as-of version is stale, and Spark refreshes it with every row.
    let (status, body) = app
        .patch(
            &format!("/api/v1/features/{spark}/versions/{}", versions[1]),
            &json!({"refresh_every_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = eventually(60, || async {
        let values = served_values(&app, "total_spark").await;
        values
            .values()
            .map(|v| v["n"].as_i64().unwrap())
            .sum::<i64>()
            == 30
    })
    .await;
    assert!(refreshed, "the refresh on Spark never served every row");
    let (_, jobs) = app.get(&format!("/api/v1/jobs?feature_id={spark}")).await;
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["status"] == "succeeded")
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"refresh") && kinds.contains(&"backfill"),
        "{kinds:?}"
    );
}

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn spark_failures_are_400s_with_sparks_words_and_change_nothing() {
    let app = app_with_spark().await;
    let table = events(&app).await;
    // Analysis on the cluster finds the unknown column at registration; nothing runs.
    let (status, body) = feature(
        &app,
        table,
        "bad",
        "SELECT user_id, SUM(nope) AS x FROM data GROUP BY user_id",
        "spark",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("UNRESOLVED_COLUMN"), "{detail}");
    // The guard applies before Spark sees anything.
    for sql in [
        "SELECT user_id, reflect('java.lang.System', 'exit', 1) AS x FROM data",
        "SELECT * FROM parquet.`/etc/passwd`",
    ] {
        let (status, body) = feature(&app, table, "evil", sql, "spark").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
    }
    let (_, features) = app.get("/api/v1/features").await;
    assert_eq!(features, json!([]));

    // Two rows per entity passes analysis; the result check refuses it, and no version is made.
    let (status, body) = feature(
        &app,
        table,
        "not_one_row",
        "SELECT user_id, amount FROM data",
        "spark",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{id}/compute"),
            &json!({"version": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid feature result"),
        "{body}"
    );
    let (_, versions) = app.get(&format!("/api/v1/features/{id}/versions")).await;
    assert_eq!(versions, json!([]));
    // Rows sent with the compute are for polars.
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{id}/compute"),
            &json!({"version": "v1", "raw_data": [{"user_id": "u1", "amount": 1.0,
                "category": "x", "ts": "2024-01-01T00:00:00Z", "day": "2024-01-01"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Nothing was left in the data directory's Spark area.
    let spark_dir = crate::helpers::data_dir_for(&app.database_url)
        .expect("a local data dir")
        .join("spark");
    assert!(
        crate::helpers::files_under(&spark_dir).is_empty(),
        "{:?}",
        crate::helpers::files_under(&spark_dir)
    );
}

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn a_spark_computation_past_the_time_limit_is_interrupted_and_the_cluster_goes_on() {
    // Registration (Spark's analyzer) and the small compute run on a replica with the default
    // limit: on a loaded 2-core machine even those can pass four seconds. Only the endless
    // compute runs where the limit is 4 s.
    let app = app_with_spark().await;
    let limited = spawn_replica_with(&app, |c| {
        c.spark_connect_url = Some(spark_url());
        c.compute_timeout = Duration::from_secs(4);
    })
    .await;
    let table = events(&app).await;
    // Thirty rows cubed four times over: far more than four seconds of work.
    let (status, body) = feature(
        &app,
        table,
        "endless",
        "SELECT a.user_id, COUNT(*) AS n FROM data a CROSS JOIN data b CROSS JOIN data c \
         CROSS JOIN data d CROSS JOIN data e CROSS JOIN data f GROUP BY a.user_id",
        "spark",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let started = std::time::Instant::now();
    let (status, body) = limited
        .post(
            &format!("/api/v1/features/{id}/compute"),
            &json!({"version": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("time limit of 4 s"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The interrupted job is not holding the cluster: a small compute goes through.
    let (status, body) = feature(
        &app,
        table,
        "small",
        "SELECT user_id, COUNT(*) AS n FROM data GROUP BY user_id",
        "spark",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let small = app.compute(body["id"].as_i64().unwrap(), "v1").await;
    assert_eq!(small["vectors_created"], 3);
}

#[tokio::test]
#[ignore = "needs a Spark Connect server (TEST_SPARK_CONNECT_URL); .ci/run starts one"]
async fn one_replica_computes_on_spark_while_another_serves() {
    let a = app_with_spark().await;
    let b = spawn_replica_with(&a, |c| c.spark_connect_url = Some(spark_url())).await;
    let table = events(&a).await;
    let (status, body) = feature(
        &a,
        table,
        "total",
        "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id",
        "spark",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    a.compute(id, "v1").await;
    let before = served_values(&b, "total").await;
    let (status, body) = a
        .ingest(
            table,
            json!([{"user_id": "u1", "amount": 1000.0, "category": "food",
                "ts": "2024-01-30T00:00:00Z", "day": "2024-01-30"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let computing = {
        let (client, url) = (
            a.client.clone(),
            a.url(&format!("/api/v1/features/{id}/compute")),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"version": "v1"}))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    // B answers throughout, from the old set until the new one is published.
    let mut slowest = Duration::ZERO;
    while !computing.is_finished() {
        let started = std::time::Instant::now();
        let (status, vector) = b
            .get("/api/v1/feature-vectors?entity_id=u2&feature_name=total")
            .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{vector}");
        assert_eq!(vector["feature_values"], before["u2"]);
    }
    assert_eq!(computing.await.unwrap().unwrap(), StatusCode::OK);
    assert!(
        slowest < Duration::from_secs(1),
        "serving stalled {slowest:?}"
    );
    // B learns of the publish from the change counter, within one poll (250 ms) and a read.
    let old = before["u1"]["total"].as_f64().unwrap();
    let seen = holds_within(
        Duration::from_secs(2),
        Duration::from_millis(20),
        || async {
            let new = served_values(&b, "total").await["u1"]["total"].as_f64();
            new.is_some_and(|new| (new - old - 1000.0).abs() < 1e-9)
        },
    )
    .await;
    assert!(
        seen,
        "B still serves {} (before: {old})",
        served_values(&b, "total").await["u1"]["total"]
    );
}

#[tokio::test]
async fn spark_features_need_spark_connect_url_and_an_unreachable_cluster_is_a_503() {
    let app = spawn_app().await;
    let table = events(&app).await;
    let sql = "SELECT user_id, COUNT(*) AS n FROM data GROUP BY user_id";
    let (status, body) = feature(&app, table, "f", sql, "spark").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("SPARK_CONNECT_URL"),
        "{body}"
    );
    let (status, body) = feature(&app, table, "f", sql, "flink").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Nothing listens on port 1: refused at once.
    let app = spawn_app_with(|c| c.spark_connect_url = Some("sc://127.0.0.1:1".into())).await;
    let table = events(&app).await;
    let resp = app
        .client
        .post(app.url("/api/v1/features"))
        .json(
            &json!({"name": "f", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": sql, "engine": "spark"}),
        )
        .send()
        .await
        .unwrap();
    let body = crate::helpers::assert_overloaded(resp).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Spark cluster"),
        "{body}"
    );
    let (_, features) = app.get("/api/v1/features").await;
    assert_eq!(features, json!([]));
}
