//! Other engines read our data: the Python `deltalake` and `polars` packages (PyPI) read a raw
//! table and a snapshot file and get the rows the API returns. `#[ignore]`d where they are not
//! installed; `.ci/run` installs them and runs it.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{files_under, spawn_app};

#[tokio::test]
#[ignore = "needs python3 with deltalake and polars (pip install deltalake polars; .ci/run does)"]
async fn python_deltalake_and_polars_read_a_raw_table_and_a_snapshot_as_the_api_serves_them() {
    let app = spawn_app().await;
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "events", "schema_definition": {
                "user_id": "string", "amount": "float", "n": "integer", "ok": "boolean",
                "day": "date", "ts": "datetime"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let id = table["id"].as_i64().unwrap();
    let rows = json!([
        {"user_id": "u1", "amount": 1.5, "n": 1, "ok": true, "day": "2024-01-01", "ts": "2024-01-01T10:00:00Z"},
        {"user_id": "u2", "amount": 2.5, "n": 2, "ok": false, "day": "2024-01-02", "ts": "2024-01-02T11:30:00.25Z"},
    ]);
    assert_eq!(app.ingest(id, rows).await.0, StatusCode::OK);
    let more =
        json!([{"user_id": "u1", "amount": 3.0, "n": null, "ok": null, "day": null, "ts": null}]);
    assert_eq!(app.ingest(id, more).await.0, StatusCode::OK);
    let (status, feature) = app
        .post(
            "/api/v1/features",
            &json!({"name": "spend", "raw_table_id": id, "entity_key": "user_id",
                    "computation_logic": "SELECT user_id, SUM(amount) AS total, MAX(ts) AS last FROM data GROUP BY user_id"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    let feature = feature["id"].as_i64().unwrap();
    app.compute(feature, "v1").await;

    let root = PathBuf::from(app.state.offline.root().uri());
    let stored = app.state.store.get_raw_table(id).await.unwrap().unwrap();
    let table_dir = root.join(stored.storage_uri.expect("a managed table's location"));
    let snapshot_file = files_under(&root.join("snapshots"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a snapshot file");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/client/read_tables.py"
        ))
        .arg(&table_dir)
        .arg(&snapshot_file)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    assert_eq!(
        read["version"], 2,
        "two ingests, two commits after the table's creation"
    );
    assert_eq!(read["files"], 2);

    let (status, preview) = app.get(&format!("/api/v1/raw-tables/{id}/data")).await;
    assert_eq!(status, StatusCode::OK);
    let mut ours: Vec<Value> = preview["rows"].as_array().unwrap().clone();
    let mut theirs: Vec<Value> = read["table"].as_array().unwrap().clone();
    let key = |v: &Value| format!("{}{}", v["user_id"], v["amount"]);
    ours.sort_by_key(key);
    theirs.sort_by_key(key);
    assert_eq!(ours.len(), 3);
    assert_eq!(theirs.len(), 3);
    for (a, b) in ours.iter().zip(&theirs) {
        for column in ["user_id", "amount", "n", "ok", "day"] {
            assert_eq!(a[column], b[column], "{column}: {a} vs {b}");
        }
        // The API writes RFC 3339 with Z; the script prints microseconds without a zone.
        match (a["ts"].as_str(), b["ts"].as_str()) {
            (Some(ours), Some(theirs)) => {
                let ours = chrono::DateTime::parse_from_rfc3339(ours).unwrap();
                assert_eq!(ours.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(), theirs);
            }
            (None, None) => {}
            other => panic!("ts differs: {other:?}"),
        }
    }

    let snapshot = read["snapshot"].as_array().unwrap();
    assert_eq!(snapshot.len(), 2);
    for row in snapshot {
        let entity = row["user_id"].as_str().unwrap();
        let (status, served) = app
            .get(&format!(
                "/api/v1/feature-vectors?entity_id={entity}&feature_name=spend"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{served}");
        assert_eq!(served["feature_values"]["total"], row["total"], "{entity}");
    }
}
