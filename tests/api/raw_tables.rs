use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{sample_rows, seeded, spawn_app};

#[tokio::test]
async fn register_raw_table_returns_201_with_the_table() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "events", "description": "d", "schema_definition": {"id": "int", "at": "timestamp"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "events");
    assert_eq!(body["description"], "d");
    assert_eq!(
        body["schema_definition"],
        json!({"id": "int", "at": "timestamp"})
    );
    assert!(body["id"].as_i64().is_some());
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn register_raw_table_returns_400_when_the_name_exists() {
    let app = spawn_app().await;
    app.register_transactions().await;
    let (status, body) = app
        .post("/api/v1/raw-tables", &json!({"name": "user_transactions"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Raw table with name 'user_transactions' already exists"
    );
}

#[tokio::test]
async fn register_raw_table_returns_400_for_an_unknown_column_type() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "t", "schema_definition": {"a": "blob"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("Unknown type"),
        "{body}"
    );
    let (_, list) = app.get("/api/v1/raw-tables").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn register_raw_table_returns_400_for_names_that_are_not_identifiers() {
    let app = spawn_app().await;
    let long = "x".repeat(1000);
    for name in ["", "has space", "quo\"te", "../etc", "1abc", long.as_str()] {
        let (status, body) = app
            .post("/api/v1/raw-tables", &json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
    }
    let (status, _) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "ok", "schema_definition": {"bad column": "int"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn list_raw_tables_returns_them_oldest_first() {
    let app = spawn_app().await;
    for name in ["b_table", "a_table"] {
        app.post("/api/v1/raw-tables", &json!({ "name": name }))
            .await;
    }
    let (status, body) = app.get("/api/v1/raw-tables").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("b_table"), json!("a_table")]);
}

#[tokio::test]
async fn get_raw_table_returns_it_or_404_with_the_original_message() {
    let app = spawn_app().await;
    let id = app.register_transactions().await;
    let (status, body) = app.get(&format!("/api/v1/raw-tables/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "user_transactions");
    let (status, body) = app.get("/api/v1/raw-tables/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Raw table with ID 999 not found");
}

#[tokio::test]
async fn delete_raw_table_is_refused_while_a_feature_reads_it() {
    let app = spawn_app().await;
    let (table, feature) = seeded(&app).await;
    let (status, body) = app.delete(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("avg_transaction_amount"),
        "{body}"
    );

    app.delete(&format!("/api/v1/features/{feature}")).await;
    let (status, _) = app.delete(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn preview_returns_stored_rows_in_ingest_order() {
    let app = spawn_app().await;
    let (table, _) = seeded(&app).await;
    app.ingest(
        table,
        json!([{"user_id": "user_009", "transaction_amount": 1, "transaction_date": null}]),
    )
    .await;
    let (status, body) = app
        .get(&format!("/api/v1/raw-tables/{table}/data?limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_rows"], 9);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[0], sample_rows()[0]);
    assert_eq!(
        rows[8],
        json!({"user_id": "user_009", "transaction_amount": 1.0, "transaction_date": null})
    );

    let (_, body) = app
        .get(&format!("/api/v1/raw-tables/{table}/data?limit=2"))
        .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 2);
    let (status, _) = app
        .get(&format!("/api/v1/raw-tables/{table}/data?limit=0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
