//! Builders for what most tests start from: a raw table, a feature, ingested rows. Each one
//! asserts its request succeeded (with the server's answer in the failure message) and returns
//! what the test goes on with, so a test's body says what it checks, not how it set up.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;

impl TestApp {
    /// Register a raw table from its body (`name`, `schema_definition`, ...); it must be
    /// created. Returns its id.
    pub async fn create_table(&self, body: Value) -> i64 {
        let (status, created) = self.post("/api/v1/raw-tables", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} -> {created}");
        created["id"].as_i64().expect("the table's id")
    }

    /// Register a feature from its body (SQL or aggregations); it must be created. Returns its
    /// id.
    pub async fn create_feature(&self, body: Value) -> i64 {
        let (status, created) = self.post("/api/v1/features", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{body} -> {created}");
        created["id"].as_i64().expect("the feature's id")
    }

    /// Ingest JSON rows into a table; they must be stored.
    pub async fn ingested(&self, table: i64, rows: Value) {
        let (status, answer) = self.ingest(table, rows).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

/// The body of a SQL feature `name` over `table`, keyed by `entity_key`.
pub fn sql_feature(name: &str, table: i64, entity_key: &str, sql: &str) -> Value {
    json!({"name": name, "raw_table_id": table, "entity_key": entity_key, "computation_logic": sql})
}
