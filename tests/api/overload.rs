//! Overload is a 503 with Retry-After and a JSON detail, never a 500, and changes nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_overloaded, spawn_app_with};

/// Always on SQLite (whatever `TEST_DATABASE_URL` says): the single writer is what is held.
#[tokio::test]
async fn a_write_answers_503_with_retry_after_while_the_sqlite_writer_is_held_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    let app = spawn_app_with(|c| {
        c.database_url = format!("sqlite:{}", path.display());
        c.database_busy_timeout = Duration::from_millis(300);
    })
    .await;
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
