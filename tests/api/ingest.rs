use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{sample_rows, spawn_app};

#[tokio::test]
async fn ingest_stores_rows_and_says_how_many() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = app.ingest(table, sample_rows()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "message": "Successfully ingested 8 records into raw table 'user_transactions'",
            "records_ingested": 8
        })
    );
    let (_, preview) = app.get(&format!("/api/v1/raw-tables/{table}/data")).await;
    assert_eq!(preview["total_rows"], 8);
}

#[tokio::test]
async fn ingest_returns_400_listing_missing_columns_sorted() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = app
        .ingest(table, json!([{"transaction_amount": 1.0}]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid data: Missing required columns: transaction_date, user_id"
    );
}

#[tokio::test]
async fn ingest_returns_400_naming_a_mistyped_column_and_stores_nothing() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let mut rows = sample_rows();
    rows[5]["transaction_amount"] = json!("lots");
    let (status, body) = app.ingest(table, rows).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid data: Column transaction_amount should be float, got str"
    );
    let (_, preview) = app.get(&format!("/api/v1/raw-tables/{table}/data")).await;
    assert_eq!(preview["total_rows"], 0);
}

#[tokio::test]
async fn ingest_returns_400_when_no_data_is_sent() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = app.ingest(table, json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["detail"], "Invalid data: No data provided");
}

#[tokio::test]
async fn ingest_returns_404_for_an_unknown_table() {
    let app = spawn_app().await;
    let (status, body) = app.ingest(42, sample_rows()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Raw table with ID 42 not found");
}

#[tokio::test]
async fn ingest_returns_422_when_rows_are_not_objects() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = app.ingest(table, json!([1, 2])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["detail"].is_array(), "{body}");
}

#[tokio::test]
async fn ingest_into_a_table_without_schema_returns_400() {
    let app = spawn_app().await;
    let (_, t) = app
        .post("/api/v1/raw-tables", &json!({"name": "loose"}))
        .await;
    let (status, body) = app
        .ingest(t["id"].as_i64().unwrap(), json!([{"a": 1}]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("no schema_definition"));
}

#[tokio::test]
async fn ingested_rows_survive_a_restart() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    app.ingest(table, sample_rows()).await;
    let url = app.database_url.clone();
    app.state.store.close().await;
    let reopened = feature_store::store::Store::connect(&url, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reopened.stored_row_count(table).await.unwrap(), 8);
}
