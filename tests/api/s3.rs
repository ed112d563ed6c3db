//! Raw tables and snapshots on S3: a real S3 server over a directory (`tools/s3-server`,
//! s3s-fs), started by `.ci/run`. `#[ignore]`d without one: set `TEST_S3_ENDPOINT`
//! (`http://127.0.0.1:PORT`), `TEST_S3_BUCKET`, `TEST_S3_ACCESS_KEY` and `TEST_S3_SECRET_KEY`.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{sample_rows, spawn_app_with, spawn_replica_with, TestApp};

fn s3_settings() -> (String, BTreeMap<String, String>) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is needed for the S3 tests"))
    };
    let prefix = format!(
        "s3://{}/t{}",
        var("TEST_S3_BUCKET"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let options = BTreeMap::from([
        ("aws_endpoint_url".to_string(), var("TEST_S3_ENDPOINT")),
        ("aws_region".to_string(), "us-east-1".to_string()),
        ("aws_access_key_id".to_string(), var("TEST_S3_ACCESS_KEY")),
        (
            "aws_secret_access_key".to_string(),
            var("TEST_S3_SECRET_KEY"),
        ),
        ("aws_allow_http".to_string(), "true".to_string()),
    ]);
    (prefix, options)
}

async fn app_on_s3() -> TestApp {
    let (prefix, options) = s3_settings();
    spawn_app_with(|c| {
        c.data_dir = Some(prefix);
        c.storage_options = options;
    })
    .await
}

async fn register_events(app: &TestApp) -> i64 {
    app.create_table(json!({"name": "events", "event_time_column": "ts",
                    "schema_definition": {"user_id": "string", "amount": "float", "ts": "datetime"}})).await
}

#[tokio::test]
#[ignore = "needs an S3 server: TEST_S3_ENDPOINT (started by .ci/run)"]
async fn ingest_compute_as_of_serving_and_training_sets_work_on_s3() {
    let app = app_on_s3().await;
    assert!(app.state.offline.root().uri().starts_with("s3://"));
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let table = register_events(&app).await;
    for (day, amount) in [
        ("2024-01-01", 1.0),
        ("2024-01-02", 2.0),
        ("2024-01-05", 4.0),
    ] {
        app.ingested(
            table,
            json!([{"user_id": "u1", "amount": amount, "ts": format!("{day}T12:00:00Z")}]),
        )
        .await;
    }
    let (status, shown) = app.get(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["version"], 3);
    assert_eq!(shown["row_count"], 3);
    let feature = app.create_feature(json!({"name": "spent", "raw_table_id": table, "entity_key": "user_id",
                    "computation_logic": "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id"})).await;
    let (status, past) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "as_of": "2024-01-03T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{past}");
    let version = past["feature_version_id"].as_i64().unwrap();
    let now = app.compute(feature, "v1").await;
    assert_eq!(now["vectors_created"], 1);
    let (status, value) = app
        .get("/api/v1/feature-vectors?entity_id=u1&feature_name=spent")
        .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["feature_values"]["total"], 7.0);
    let (status, then) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=u1&feature_version_id={version}&as_of=2024-01-04T00:00:00Z"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["feature_values"]["total"], 3.0);
    let (status, training) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["spent@v1"],
                    "rows": [{"entity_id": "u1", "timestamp": "2024-01-04T00:00:00Z", "label": 1},
                             {"entity_id": "u1", "timestamp": "2024-01-02T00:00:00Z", "label": 0}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{training}");
    assert_eq!(training["rows"][0]["features"]["spent@v1"]["total"], 3.0);
    assert_eq!(training["rows"][1]["features"]["spent@v1"], Value::Null);
    let (status, preview) = app.get(&format!("/api/v1/raw-tables/{table}/data")).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3);

    // A label table in, the training set written as Parquet files on S3; read back by
    // registering the directory as an external Parquet dataset.
    let labels = app
        .create_table(json!({"name": "labels", "schema_definition":
            {"entity_id": "string", "timestamp": "datetime", "label": "integer"}}))
        .await;
    app.ingested(
        labels,
        json!([{"entity_id": "u1", "timestamp": "2024-01-04T00:00:00Z", "label": 1}]),
    )
    .await;
    let (status, written) = app
        .post(
            "/api/v1/training-sets/datasets",
            &json!({"features": ["spent"], "labels": {"raw_table_id": labels}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    let uri = written["uri"].as_str().unwrap();
    assert!(uri.starts_with("s3://"), "{written}");
    assert_eq!(
        written["files"],
        json!([format!("{uri}/part-00000.parquet")])
    );
    let external = app
        .create_table(json!({"name": "written",
            "source": {"format": "parquet", "uri": uri}}))
        .await;
    let (status, read) = app
        .get(&format!("/api/v1/raw-tables/{external}/data"))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["rows"][0]["spent__total"], 3.0, "{read}");
    assert_eq!(read["rows"][0]["label"], 1, "{read}");
}

#[tokio::test]
#[ignore = "needs an S3 server: TEST_S3_ENDPOINT (started by .ci/run)"]
async fn two_replicas_ingesting_into_one_s3_table_at_once_both_land_in_separate_commits() {
    let app = app_on_s3().await;
    let (root, options) = (
        app.state.offline.root().uri(),
        app.state.config.storage_options.clone(),
    );
    let other = spawn_replica_with(&app, |c| {
        c.data_dir = Some(root);
        c.storage_options = options;
    })
    .await;
    let table = app.register_transactions().await;
    for _ in 0..4 {
        let (a, b) = tokio::join!(
            app.ingest(table, sample_rows()),
            other.ingest(table, sample_rows())
        );
        assert_eq!(a.0, StatusCode::OK, "{}", a.1);
        assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    }
    let (_, shown) = app.get(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(shown["version"], 8, "eight commits: {shown}");
    assert_eq!(shown["row_count"], 64);
    let (status, preview) = other
        .get(&format!("/api/v1/raw-tables/{table}/data?limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["rows"].as_array().unwrap().len(),
        64,
        "every row is in the table"
    );
}
