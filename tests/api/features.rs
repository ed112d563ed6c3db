use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{seeded, spawn_app, TestApp};

fn feature(table: i64, name: &str, sql: &str, key: &str) -> Value {
    json!({"name": name, "raw_table_id": table, "computation_logic": sql, "entity_key": key})
}

async fn refused(app: &TestApp, table: i64, sql: &str, key: &str) -> String {
    let (status, body) = app
        .post("/api/v1/features", &feature(table, "f", sql, key))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
    let detail = body["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("Invalid feature computation: "),
        "{detail}"
    );
    detail
}

#[tokio::test]
async fn create_feature_returns_201_with_the_feature() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = app
        .post(
            "/api/v1/features",
            &feature(
                table,
                "total",
                "SELECT user_id, SUM(transaction_amount) AS total FROM data GROUP BY user_id",
                "user_id",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "total");
    assert_eq!(body["raw_table_id"], table);
    assert_eq!(body["entity_key"], "user_id");
    assert!(body["computation_logic"]
        .as_str()
        .unwrap()
        .starts_with("SELECT"));
}

#[tokio::test]
async fn create_feature_returns_400_when_sql_reads_a_file() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    for f in ["read_csv", "read_parquet", "read_ipc", "read_json"] {
        let detail = refused(
            &app,
            table,
            &format!("SELECT * FROM {f}('/etc/passwd')"),
            "user_id",
        )
        .await;
        assert!(
            detail.contains("table functions are not allowed"),
            "{detail}"
        );
    }
    refused(
        &app,
        table,
        "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
        "user_id",
    )
    .await;
    let (_, list) = app.get("/api/v1/features").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn create_feature_returns_400_for_other_tables_statements_and_garbage() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    for sql in [
        "SELECT * FROM raw_tables",
        "SELECT user_id FROM data; SELECT user_id FROM data",
        "DROP TABLE data",
        "SELECT a.user_id FROM (data a CROSS JOIN raw_tables b)",
        "SELECT a.user_id FROM (data a CROSS JOIN read_csv('/etc/passwd') b)",
        "not sql at all",
        "",
    ] {
        refused(&app, table, sql, "user_id").await;
    }
}

#[tokio::test]
async fn create_feature_returns_400_when_sql_names_an_unknown_column() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let detail = refused(
        &app,
        table,
        "SELECT user_id, AVG(nope) AS x FROM data GROUP BY user_id",
        "user_id",
    )
    .await;
    assert!(detail.contains("nope"), "{detail}");
}

#[tokio::test]
async fn create_feature_returns_400_when_the_output_lacks_the_entity_key() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let detail = refused(
        &app,
        table,
        "SELECT AVG(transaction_amount) AS a FROM data",
        "user_id",
    )
    .await;
    assert!(detail.contains("no column 'user_id'"), "{detail}");
}

#[tokio::test]
async fn create_feature_returns_400_for_a_duplicate_name() {
    let app = spawn_app().await;
    let (table, _) = seeded(&app).await;
    let (status, body) = app
        .post(
            "/api/v1/features",
            &feature(
                table,
                "avg_transaction_amount",
                "SELECT user_id FROM data GROUP BY user_id",
                "user_id",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Feature with name 'avg_transaction_amount' already exists"
    );
}

#[tokio::test]
async fn create_feature_returns_404_for_an_unknown_raw_table() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/features",
            &feature(77, "f", "SELECT user_id FROM data", "user_id"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Raw table with ID 77 not found");
}

#[tokio::test]
async fn features_can_be_listed_fetched_and_are_404_when_unknown() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (status, list) = app.get("/api/v1/features").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, one) = app.get(&format!("/api/v1/features/{feature}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["name"], "avg_transaction_amount");
    let (status, body) = app.get("/api/v1/features/555").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Feature with ID 555 not found");
}

#[tokio::test]
async fn deleting_a_feature_removes_its_versions_and_stops_serving_it() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    app.compute(feature, "v1").await;
    let by_name = "/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount";
    assert_eq!(app.get(by_name).await.0, StatusCode::OK);

    let (status, _) = app.delete(&format!("/api/v1/features/{feature}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(by_name).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        app.get(&format!("/api/v1/features/{feature}/versions"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/features/{feature}")).await.0,
        StatusCode::NOT_FOUND
    );
}
