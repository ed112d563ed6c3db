use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_says_healthy() {
    let app = spawn_app().await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "healthy"}));
}

#[tokio::test]
async fn malformed_json_is_422_with_a_detail() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_raw(
            "/api/v1/raw-tables",
            Some("application/json"),
            "{\"name\": ",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"][0]["msg"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_422() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/api/v1/raw-tables", &json!({"description": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"][0]["msg"].as_str().unwrap().contains("name"),
        "{body}"
    );
    let (status, _) = app
        .post("/api/v1/features", &json!({"name": "f", "raw_table_id": "one", "computation_logic": "", "entity_key": "k"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post("/api/v1/raw-tables", &json!(["not", "an", "object"]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn deeply_nested_json_is_422_not_a_crash() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = app
        .post_raw("/api/v1/ingest", Some("application/json"), &deep)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn non_integer_overflowing_and_negative_ids_are_handled() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/api/v1/raw-tables/abc").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get("/api/v1/features/99999999999999999999999").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get("/api/v1/features/-1").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = app
        .get("/api/v1/feature-vectors?entity_id=a&feature_version_id=abc")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_wrong_methods_405_json() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Not Found");
    let (status, body) = app.delete("/api/v1/ingest").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["detail"], "Method Not Allowed");
}

#[tokio::test]
async fn a_non_json_content_type_is_415_and_a_missing_one_is_read_as_json() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_raw(
            "/api/v1/raw-tables",
            Some("text/plain"),
            "{\"name\": \"t\"}",
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    let (status, body) = app
        .post_raw("/api/v1/raw-tables", None, "{\"name\": \"t\"}")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_json() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let table = app.register_transactions().await;
    let rows: Vec<_> = (0..100)
        .map(|i| json!({"user_id": format!("u{i}"), "transaction_amount": 1.0, "transaction_date": "d"}))
        .collect();
    let (status, body) = app.ingest(table, json!(rows)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["detail"].is_string());
}
