use polars::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

async fn upload(
    app: &TestApp,
    table: i64,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/raw-tables/{table}/data")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn total_rows(app: &TestApp, table: i64) -> i64 {
    app.get(&format!("/api/v1/raw-tables/{table}/data?limit=1"))
        .await
        .1["total_rows"]
        .as_i64()
        .unwrap()
}

async fn served_average(app: &TestApp, table: i64) -> Value {
    let feature = app.create_avg_feature(table).await;
    app.compute(feature, "v1").await;
    app.get("/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount")
        .await
        .1["feature_values"]["avg_amount"]
        .clone()
}

#[tokio::test]
async fn csv_uploads_are_stored_and_computed_over() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let csv = "user_id,transaction_amount,transaction_date,ignored\n\
               user_001,100.0,2024-01-15,x\nuser_001,50,2024-01-16,y\nuser_002,7.5,,z\n";
    let (status, body) = upload(&app, table, "text/csv", csv.into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records_ingested"], 3);
    assert_eq!(
        body["message"],
        "Successfully ingested 3 records into raw table 'user_transactions'"
    );
    assert_eq!(served_average(&app, table).await, 75.0);
}

#[tokio::test]
async fn ndjson_uploads_are_stored() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let lines: String = (0..1000)
        .map(|i| format!("{{\"user_id\":\"user_00{}\",\"transaction_amount\":{}.0,\"transaction_date\":\"d\"}}\n", i % 2, i))
        .collect();
    let (status, body) = upload(&app, table, "application/x-ndjson", lines.into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records_ingested"], 1000);
    assert_eq!(total_rows(&app, table).await, 1000);
    // user_001 holds the odd amounts 1..999: their mean is 500.
    assert_eq!(served_average(&app, table).await, 500.0);
}

#[tokio::test]
async fn parquet_uploads_are_stored() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let mut df = df!(
        "user_id" => ["user_001", "user_001", "user_002"],
        "transaction_amount" => [10i64, 20, 30],
        "transaction_date" => ["a", "b", "c"]
    )
    .unwrap();
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(&mut df).unwrap();
    let (status, body) = upload(&app, table, "application/vnd.apache.parquet", buf).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records_ingested"], 3);
    assert_eq!(served_average(&app, table).await, 15.0);
}

#[tokio::test]
async fn json_uploads_accept_an_array_or_the_ingest_body() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let row = json!({"user_id": "u", "transaction_amount": 1.0, "transaction_date": "d"});
    let (status, _) = upload(
        &app,
        table,
        "application/json",
        json!([row]).to_string().into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = upload(
        &app,
        table,
        "application/json",
        json!({"data": [row]}).to_string().into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(total_rows(&app, table).await, 2);
}

#[tokio::test]
async fn json_arrays_are_read_into_columns_with_the_same_values_and_messages() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    // Keys outside the schema are skipped, a missing key is null, a key given twice keeps
    // the last value, and escapes are read.
    let body = r#"[
        {"user_id": "user_001", "transaction_amount": 1.0, "transaction_date": "d", "note": {"deep": [1, 2]}},
        {"user_\u0069d": "user_001", "transaction_amount": 5.0, "transaction_amount": 29.0, "transaction_date": "d"},
        {"user_id": "user_002", "transaction_date": "d"}
    ]"#;
    let (status, body) = upload(&app, table, "application/json", body.into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records_ingested"], 3);
    assert_eq!(served_average(&app, table).await, 15.0);

    for (bad, status, detail) in [
        (
            r#"[{"user_id": "u", "transaction_amount": 1, "transaction_date": "d"}, 3]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "every row must be a JSON object",
        ),
        (
            r#"[{"user_id": "u", "transaction_amount": 1"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "JSON decode error: EOF while parsing an object at line 1 column 41",
        ),
        (
            r#"[{"user_id": "u", "transaction_amount": "x", "transaction_date": "d"}]"#,
            StatusCode::BAD_REQUEST,
            "Invalid data: Column transaction_amount should be float, got str",
        ),
        (
            r#"[{"user_id": "u"}]"#,
            StatusCode::BAD_REQUEST,
            "Invalid data: Missing required columns: transaction_amount, transaction_date",
        ),
        (
            "[]",
            StatusCode::BAD_REQUEST,
            "Invalid data: No data provided",
        ),
    ] {
        let (got, body) = upload(&app, table, "application/json", bad.into()).await;
        assert_eq!(got, status, "{bad}: {body}");
        let said = match &body["detail"] {
            Value::String(s) => s.clone(),
            list => list[0]["msg"].as_str().unwrap_or_default().to_string(),
        };
        assert_eq!(said, detail, "{bad}");
    }
    assert_eq!(total_rows(&app, table).await, 3);

    // A malformed body is refused as such before the table it names is looked up.
    let (status, body) = upload(&app, 999, "application/json", "[1]".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = upload(&app, 999, "application/json", "[{}]".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_ingest_messages_and_store_nothing() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let (status, body) = upload(&app, table, "text/csv", "user_id\nu1\n".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid data: Missing required columns: transaction_amount, transaction_date"
    );

    let ndjson = "{\"user_id\":\"a\",\"transaction_amount\":1,\"transaction_date\":\"d\"}\n{\"user_id\":\"b\",\"transaction_amount\":\"x\",\"transaction_date\":\"d\"}\n";
    let (status, body) = upload(&app, table, "application/x-ndjson", ndjson.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid data: Column transaction_amount should be float, got str"
    );

    let (status, body) = upload(
        &app,
        table,
        "application/x-ndjson",
        "{\"user_id\":\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _) = upload(
        &app,
        table,
        "text/csv",
        "user_id,transaction_amount,transaction_date\nu,abc,d\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = upload(
        &app,
        table,
        "application/vnd.apache.parquet",
        b"not parquet".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _) = upload(&app, table, "text/csv", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = upload(&app, table, "application/xml", "<rows/>".into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["detail"].as_str().unwrap().contains("text/csv"));

    assert_eq!(total_rows(&app, table).await, 0);
    let (status, _) = upload(&app, 999, "text/csv", "a\n1\n".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ndjson_over_the_body_limit_is_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let table = app.register_transactions().await;
    let lines: String = (0..1000)
        .map(|i| {
            format!(
                "{{\"user_id\":\"u{i}\",\"transaction_amount\":1.0,\"transaction_date\":\"d\"}}\n"
            )
        })
        .collect();
    let (status, body) = upload(&app, table, "application/x-ndjson", lines.into()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["detail"].is_string());
    assert_eq!(total_rows(&app, table).await, 0);
}
