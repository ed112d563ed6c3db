//! Overload is a 503 with Retry-After and a JSON detail, never a 500, and changes nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_overloaded, spawn_app_with, TestApp};

/// An app on a SQLite file of its own (whatever `TEST_DATABASE_URL` says: SQLite's single
/// writer is what these tests hold from another connection), with a 300 ms busy timeout.
async fn app_on_sqlite_file() -> (TestApp, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    let file = path.clone();
    let app = spawn_app_with(move |c| {
        c.database_url = format!("sqlite:{}", file.display());
        c.database_busy_timeout = Duration::from_millis(300);
    })
    .await;
    (app, path, dir)
}

/// The single writer held elsewhere: a write waits out its timeout and is refused.
#[tokio::test]
async fn a_write_answers_503_with_retry_after_while_the_sqlite_writer_is_held_elsewhere() {
    let (app, path, _dir) = app_on_sqlite_file().await;
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let table = json!({"name": "t", "schema_definition": {"a": "string"}});
    let resp = app
        .client
        .post(app.url("/api/v1/raw-tables"))
        .json(&table)
        .send()
        .await
        .unwrap();
    let body = assert_overloaded(resp).await;
    assert_eq!(body, json!({"detail": "The database is busy; retry later"}));

    holder.execute_batch("ROLLBACK").unwrap();
    let (_, tables) = app.get("/api/v1/raw-tables").await;
    assert_eq!(tables, json!([]), "the refused write left something behind");
    let (status, created) = app.post("/api/v1/raw-tables", &table).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

/// An ingest commits its rows to the Delta table before it records the table's version in the
/// database. When only the record finds the database busy, the rows are stored: the answer
/// says so (a 503 would tell the client to send them again, storing them twice), and the next
/// ingest (or any read of the table) records the version.
#[tokio::test]
async fn rows_committed_while_the_database_is_busy_are_answered_as_stored_and_counted_once() {
    let (app, path, _dir) = app_on_sqlite_file().await;
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "t", "schema_definition": {"a": "string"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let (status, body) = app
        .post(
            "/api/v1/ingest",
            &json!({"raw_table_id": table["id"], "data": [{"a": "first"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records_ingested"], 1);

    holder.execute_batch("ROLLBACK").unwrap();
    // The next ingest finds the version before its own unrecorded and records both.
    let (status, body) = app
        .post(
            "/api/v1/ingest",
            &json!({"raw_table_id": table["id"], "data": [{"a": "second"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, table) = app.get("/api/v1/raw-tables/1").await;
    assert_eq!(table["row_count"], 2, "{table}");
    let (_, preview) = app.get("/api/v1/raw-tables/1/data").await;
    assert_eq!(preview["total_rows"], 2, "{preview}");
    let mut values: Vec<&str> = preview["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["a"].as_str().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["first", "second"], "{preview}");
}
