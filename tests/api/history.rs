//! Snapshot history: every publish kept, event time, as-of computes, backfills, as-of serving.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_for, TestApp};

/// A table with event time `ts`, and `total` = SUM(amount) per user.
async fn table_with_event_time(app: &TestApp) -> (i64, i64) {
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "tx", "event_time_column": "ts",
                "schema_definition": {"user_id": "string", "amount": "float", "ts": "datetime"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    assert_eq!(table["event_time_column"], "ts");
    let table = table["id"].as_i64().unwrap();
    app.ingested(
        table,
        json!([
            {"user_id": "u1", "amount": 1.0, "ts": "2024-01-01T00:00:00Z"},
            {"user_id": "u1", "amount": 2.0, "ts": "2024-01-02T00:00:00Z"},
            {"user_id": "u2", "amount": 5.0, "ts": "2024-01-03T00:00:00Z"},
            {"user_id": "u1", "amount": 4.0, "ts": "2024-01-03T00:00:00.000001Z"}
        ]),
    )
    .await;
    let feature = app.create_feature(json!({"name": "total", "raw_table_id": table, "entity_key": "user_id",
                "computation_logic": "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id"})).await;
    (table, feature)
}

/// The values `version` serves now for `entity`.
async fn served(app: &TestApp, version: i64, entity: &str) -> Value {
    let (status, vector) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id={entity}&feature_version_id={version}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    vector["feature_values"].clone()
}

/// A version's snapshots, oldest first.
async fn snapshots(app: &TestApp, feature: i64, version: i64) -> Vec<Value> {
    let (status, list) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/snapshots"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

async fn value_as_of(app: &TestApp, version: i64, entity: &str, at: &str) -> (StatusCode, Value) {
    app.get(&format!(
        "/api/v1/feature-vectors?entity_id={entity}&feature_version_id={version}&as_of={}",
        at.replace('+', "%2B")
    ))
    .await
}

#[tokio::test]
async fn event_time_must_be_a_date_or_datetime_column_of_the_schema() {
    let app = spawn_app().await;
    for (column, schema) in [
        ("ts", json!({"ts": "string"})),
        ("missing", json!({"ts": "datetime"})),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/raw-tables",
                &json!({"name": "t", "event_time_column": column, "schema_definition": schema}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("event_time_column"));
    }
    let (_, tables) = app.get("/api/v1/raw-tables").await;
    assert_eq!(tables, json!([]));
}

#[tokio::test]
async fn an_as_of_compute_sees_rows_at_or_before_the_instant_only() {
    let app = spawn_app().await;
    let (_, feature) = table_with_event_time(&app).await;
    // Exactly at u1's third row minus one microsecond: that row is left out.
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "as_of": "2024-01-03T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["valid_from"], "2024-01-03T00:00:00.000000Z");
    let version = body["feature_version_id"].as_i64().unwrap();
    assert_eq!(served(&app, version, "u1").await, json!({"total": 3.0}));
    assert_eq!(served(&app, version, "u2").await, json!({"total": 5.0}));

    // A live compute afterwards sees every row and becomes what is served.
    let live = app.compute(feature, "v1").await;
    assert_eq!(served(&app, version, "u1").await, json!({"total": 7.0}));
    let snapshots = snapshots(&app, feature, version).await;
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0]["valid_from"], "2024-01-03T00:00:00.000000Z");
    assert_eq!(snapshots[0]["kind"], "compute");
    assert_eq!(snapshots[1]["id"], live["snapshot_id"]);
    assert_eq!(snapshots[1]["entity_count"], 2);
}

#[tokio::test]
async fn as_of_needs_an_event_time_column_and_a_past_instant() {
    let app = spawn_app().await;
    let (_, feature) = crate::helpers::seeded(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "as_of": "2024-01-03T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("event_time_column"));

    let app = spawn_app().await;
    let (_, feature) = table_with_event_time(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute?as_of=2999-01-01T00:00:00Z"),
            &json!({"version": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    assert_eq!(versions, json!([]));
}

#[tokio::test]
async fn a_backfill_into_the_past_keeps_history_and_never_replaces_the_served_set() {
    let app = spawn_app().await;
    let (_, feature) = table_with_event_time(&app).await;
    let live = app.compute(feature, "v1").await;
    let version = live["feature_version_id"].as_i64().unwrap();
    let (status, made) = app
        .post(
            &format!("/api/v1/features/{feature}/versions/{version}/backfill"),
            &json!({"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z",
                "every_seconds": 86400}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let made = made.as_array().unwrap();
    let valid_from: Vec<&str> = made
        .iter()
        .map(|s| s["valid_from"].as_str().unwrap())
        .collect();
    assert_eq!(
        valid_from,
        [
            "2024-01-01T00:00:00.000000Z",
            "2024-01-02T00:00:00.000000Z",
            "2024-01-03T00:00:00.000000Z"
        ]
    );
    assert!(made.iter().all(|s| s["kind"] == "backfill"));
    assert_eq!(made[0]["entity_count"], 1);

    // Served: still the live compute.
    let (_, vector) = app
        .get("/api/v1/feature-vectors?entity_id=u1&feature_name=total")
        .await;
    assert_eq!(vector["feature_values"], json!({"total": 7.0}));

    // As of each instant: the snapshot in force then; exactly at valid_from counts.
    for (at, expected) in [
        ("2024-01-01T00:00:00Z", json!({"total": 1.0})),
        ("2024-01-01T23:59:59.999999Z", json!({"total": 1.0})),
        ("2024-01-02T00:00:00Z", json!({"total": 3.0})),
        ("2024-01-03T12:00:00Z", json!({"total": 3.0})),
    ] {
        let (status, vector) = value_as_of(&app, version, "u1", at).await;
        assert_eq!(status, StatusCode::OK, "{at}: {vector}");
        assert_eq!(vector["feature_values"], expected, "{at}");
    }
    // Before any snapshot, and an entity that appears only later.
    let (status, _) = value_as_of(&app, version, "u1", "2023-12-31T23:59:59.999999Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = value_as_of(&app, version, "u2", "2024-01-02T00:00:00Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, vector) = value_as_of(&app, version, "u2", "2024-01-03T00:00:00Z").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vector["feature_values"], json!({"total": 5.0}));

    let snapshots = snapshots(&app, feature, version).await;
    assert_eq!(snapshots.len(), 4);
}

#[tokio::test]
async fn a_backfill_refuses_too_many_steps_and_tables_without_event_time() {
    let app = spawn_app().await;
    let (_, feature) = table_with_event_time(&app).await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let url = format!("/api/v1/features/{feature}/versions/{version}/backfill");
    let (status, body) = app
        .post(
            &url,
            &json!({"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:16:40Z",
                "every_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1001 steps"));
    let (status, _) = app
        .post(
            &url,
            &json!({"start": "2024-01-02T00:00:00Z", "end": "2024-01-01T00:00:00Z",
                "every_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let snapshots = snapshots(&app, feature, version).await;
    assert_eq!(snapshots.len(), 1);

    let app = spawn_app().await;
    let (_, feature) = crate::helpers::seeded(&app).await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/versions/{version}/backfill"),
            &json!({"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z",
                "every_seconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("event_time_column"));
}

/// v1 of `total` with snapshots valid from Jan 1, 2 and 3 (backfilled) and the live one.
async fn backfilled(app: &TestApp) -> (i64, i64) {
    let (_, feature) = table_with_event_time(app).await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/versions/{version}/backfill"),
            &json!({"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z",
                "every_seconds": 86400}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (feature, version)
}

#[tokio::test]
async fn a_training_set_takes_each_rows_values_from_the_snapshot_in_force_and_never_a_later_one() {
    let app = spawn_app().await;
    let (_, version) = backfilled(&app).await;
    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["total", version, "nope"], "rows": [
                {"entity_id": "u1", "timestamp": "2024-01-02T00:00:00Z", "label": 1},
                {"entity_id": "u1", "timestamp": "2024-01-01T23:59:59.999999Z", "label": 0},
                {"entity_id": "u1", "timestamp": "2023-12-31T00:00:00Z", "label": 0},
                {"entity_id": "u2", "timestamp": "2024-01-02T12:00:00Z", "label": 1},
                {"entity_id": "u2", "timestamp": "2024-01-03T00:00:00Z", "label": 1}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["versions"]["total"], version);
    assert_eq!(body["versions"]["nope"], Value::Null);
    assert!(body["unresolved"]["nope"].is_string());
    let rows = body["rows"].as_array().unwrap();
    let totals: Vec<Value> = rows
        .iter()
        .map(|r| r["features"]["total"].clone())
        .collect();
    assert_eq!(
        totals,
        [
            json!({"total": 3.0}),
            json!({"total": 1.0}),
            Value::Null,
            Value::Null,
            json!({"total": 5.0})
        ]
    );
    // By version id, the same values; the row's own columns come back as sent, in order.
    assert_eq!(
        rows[0]["features"][version.to_string()],
        json!({"total": 3.0})
    );
    assert_eq!(rows[0]["entity_id"], "u1");
    assert_eq!(rows[0]["timestamp"], "2024-01-02T00:00:00.000000Z");
    assert_eq!(rows[0]["label"], 1);
    assert_eq!(rows[1]["label"], 0);
    assert_eq!(rows[2]["features"]["nope"], Value::Null);
}

#[tokio::test]
async fn a_training_set_answers_a_feature_referenced_many_times_once() {
    let app = spawn_app().await;
    let (_, version) = backfilled(&app).await;
    let mut features = vec![json!("total"); 99];
    features.push(json!(version));
    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": features, "rows": [
                {"entity_id": "u1", "timestamp": "2024-01-02T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<&String> = body["versions"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{body}");
    let row = body["rows"][0]["features"].as_object().unwrap();
    assert_eq!(row.len(), 2, "{body}");
    assert_eq!(row["total"], json!({"total": 3.0}));

    let csv = "entity_id,timestamp\nu1,2024-01-02T00:00:00Z\n";
    let resp = app
        .post_as(
            "/api/v1/training-sets?features=total&features=total&features=total",
            "text/csv",
            csv,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert_eq!(
        text.lines().next(),
        Some("entity_id,timestamp,total__total")
    );
}

#[tokio::test]
async fn a_drift_read_over_backfilled_history_is_computed_and_keeps_nothing() {
    let app = spawn_app().await;
    let (feature, version) = backfilled(&app).await;
    let list = snapshots(&app, feature, version).await;
    let (base, target) = (
        list[0]["id"].as_i64().unwrap(),
        list[1]["id"].as_i64().unwrap(),
    );
    let url =
        format!("/api/v1/features/{feature}/versions/{version}/drift?base={base}&target={target}");
    let (status, drift) = app.get(&url).await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    assert_eq!(drift["base"], base);
    assert!(drift["columns"]["total"]["psi"].is_number(), "{drift}");
    let kept = app.state.store.kept_drift(target, base).await.unwrap();
    assert_eq!(kept, None, "a read stored what it computed");
    let (_, again) = app.get(&url).await;
    assert_eq!(again, drift);
}

#[tokio::test]
async fn max_age_nulls_values_from_snapshots_older_than_the_row_by_more() {
    let app = spawn_app().await;
    backfilled(&app).await;
    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["total"], "max_age_seconds": 3600, "rows": [
                {"entity_id": "u1", "timestamp": "2024-01-02T01:00:00Z"},
                {"entity_id": "u1", "timestamp": "2024-01-02T01:00:00.000001Z"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["features"]["total"], json!({"total": 3.0}));
    assert_eq!(body["rows"][1]["features"]["total"], Value::Null);
}

#[tokio::test]
async fn a_training_set_goes_csv_in_csv_out_parquet_in_parquet_out_and_arrow_in_arrow_out_with_nulls_kept(
) {
    let app = spawn_app().await;
    backfilled(&app).await;
    let csv = "entity_id,timestamp,label\nu1,2024-01-02T00:00:00Z,1\nu9,2024-01-02T00:00:00Z,0\nu2,2024-01-01T00:00:00Z,1\n";
    let resp = app
        .post_as("/api/v1/training-sets?features=total", "text/csv", csv)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "entity_id,timestamp,label,total__total");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with("u1,") && lines[1].ends_with(",1,3.0"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("u9,") && lines[2].ends_with(",0,"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("u2,") && lines[3].ends_with(",1,"),
        "{text}"
    );

    use polars::prelude::*;
    let mut rows = df!(
        "entity_id" => ["u1", "u2"],
        "timestamp" => ["2024-01-03T00:00:00Z", "2024-01-03T00:00:00Z"],
        "label" => [1i64, 0]
    )
    .unwrap();
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut rows).unwrap();
    let resp = app
        .post_as(
            "/api/v1/training-sets?features=total&max_age_seconds=0",
            "application/vnd.apache.parquet",
            parquet,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    let out = ParquetReader::new(std::io::Cursor::new(bytes.to_vec()))
        .finish()
        .unwrap();
    assert_eq!(out.height(), 2);
    let totals: Vec<Option<f64>> = out
        .column("total__total")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(totals, [Some(3.0), Some(5.0)]);
    let labels: Vec<Option<i64>> = out.column("label").unwrap().i64().unwrap().iter().collect();
    assert_eq!(labels, [Some(1), Some(0)]);

    // An Arrow IPC file in and out (what the Python SDK sends): the same values, and strings
    // in the classic layout any Arrow reader takes.
    let mut arrow = Vec::new();
    IpcWriter::new(&mut arrow).finish(&mut rows).unwrap();
    let resp = app
        .post_as(
            "/api/v1/training-sets?features=total",
            "application/vnd.apache.arrow.file",
            arrow,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apache.arrow.file"
    );
    let bytes = resp.bytes().await.unwrap();
    let out = IpcReader::new(std::io::Cursor::new(bytes.to_vec()))
        .finish()
        .unwrap();
    let totals: Vec<Option<f64>> = out
        .column("total__total")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(totals, [Some(3.0), Some(5.0)]);
    let ids: Vec<Option<&str>> = out
        .column("entity_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ids, [Some("u1"), Some("u2")]);
}

#[tokio::test]
async fn a_training_set_names_bad_timestamps_and_missing_columns() {
    let app = spawn_app().await;
    backfilled(&app).await;
    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["total"], "rows": [
                {"entity_id": "u1", "timestamp": "2024-01-02T00:00:00Z"},
                {"entity_id": "u1", "timestamp": "yesterday"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("rows[1]: timestamp"));
    let (status, body) = app
        .post_raw(
            "/api/v1/training-sets?features=total",
            Some("text/csv"),
            "entity,timestamp\nu1,2024-01-02T00:00:00Z\n",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("entity_id"));
    let (status, body) = app
        .post_raw(
            "/api/v1/training-sets?features=total",
            Some("application/vnd.apache.arrow.file"),
            "entity_id,timestamp\nu1,2024-01-02T00:00:00Z\n",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the Arrow IPC file does not parse"),
        "{body}"
    );
    let (status, _) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": [], "rows": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_batch_as_of_serves_each_versions_snapshot_in_force_then() {
    let app = spawn_app().await;
    backfilled(&app).await;
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1", "u2", "u1"], "features": ["total"],
                "as_of": "2024-01-02T06:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["features"]["total"], json!({"total": 3.0}));
    assert_eq!(results[1]["features"]["total"], Value::Null);
    assert_eq!(results[1]["missing"], json!(["total"]));
    assert_eq!(results[2]["features"]["total"], json!({"total": 3.0}));

    // Before any snapshot: unresolved, with the reason.
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1"], "features": ["total"], "as_of": "2023-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["unresolved"]["total"]
        .as_str()
        .unwrap()
        .contains("no snapshot"));
    // Without as_of: the live set.
    let (_, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1"], "features": ["total"]}),
        )
        .await;
    assert_eq!(
        body["results"][0]["features"]["total"],
        json!({"total": 7.0})
    );
}

#[tokio::test]
async fn csv_rows_come_back_as_json_with_their_own_columns_and_a_features_column_is_refused() {
    let app = spawn_app().await;
    backfilled(&app).await;
    let (status, body) = app
        .post_raw(
            "/api/v1/training-sets?features=total",
            Some("text/csv"),
            "entity_id,timestamp,label\nu1,2024-01-02T00:00:00Z,1\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["label"], 1);
    assert_eq!(body["rows"][0]["features"]["total"], json!({"total": 3.0}));

    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["total"], "rows": [
                {"entity_id": "u1", "timestamp": "2024-01-02T00:00:00Z", "features": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("'features'"));
}

#[tokio::test]
async fn a_csv_training_set_keeps_ids_as_text_with_their_leading_zeros() {
    let app = spawn_app().await;
    let table = app
        .create_table(
            json!({"name": "accounts", "schema_definition": {"id": "string", "amount": "float"}}),
        )
        .await;
    let (status, body) = app
        .ingest(table, json!([{"id": "00123", "amount": 2.5}]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, feature) = app
        .post(
            "/api/v1/features",
            &json!({"name": "balance", "raw_table_id": table, "entity_key": "id",
                "computation_logic": "SELECT id, SUM(amount) AS balance FROM data GROUP BY id"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    app.compute(feature["id"].as_i64().unwrap(), "v1").await;

    let resp = app
        .post_as(
            "/api/v1/training-sets?features=balance",
            "text/csv",
            "entity_id,timestamp\n00123,2100-01-01T00:00:00Z\n",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("00123,") && row.ends_with(",2.5"),
        "the id lost its zeros or its value: {text}"
    );

    // And in the JSON answer to CSV rows.
    let resp = app
        .client
        .post(app.url("/api/v1/training-sets?features=balance"))
        .header("content-type", "text/csv")
        .body("entity_id,timestamp\n00123,2100-01-01T00:00:00Z\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rows"][0]["entity_id"], "00123", "{body}");
    assert_eq!(
        body["rows"][0]["features"]["balance"],
        json!({"balance": 2.5})
    );
}

#[tokio::test]
async fn a_version_served_from_an_as_of_snapshot_is_stale_until_a_refresh_serves_every_row() {
    let app = spawn_app().await;
    let (_, feature) = table_with_event_time(&app).await;
    let (status, made) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "as_of": "2024-01-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let version = made["feature_version_id"].as_i64().unwrap();
    let url = format!("/api/v1/feature-vectors?entity_id=u1&feature_version_id={version}");
    let (_, vector) = app.get(&url).await;
    assert_eq!(vector["feature_values"], json!({"total": 3.0}));
    assert_eq!(
        vector["stale"], true,
        "rows after as_of were left out: {vector}"
    );

    let (status, body) = app
        .patch(
            &format!("/api/v1/features/{feature}/versions/{version}"),
            &json!({"refresh_every_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let vector = wait_for(30, || async {
        let (_, vector) = app.get(&url).await;
        (vector["feature_values"] == json!({"total": 7.0})).then_some(vector)
    })
    .await
    .expect("the refresh never served every row");
    assert_eq!(vector["stale"], false, "{vector}");
}

/// user_001-style lookup of `total` for u1 by feature name, as of `at`.
async fn total_by_name_as_of(app: &TestApp, at: &str) -> (StatusCode, Value) {
    app.get(&format!(
        "/api/v1/feature-vectors?entity_id=u1&feature_name=total&as_of={at}"
    ))
    .await
}

#[tokio::test]
async fn as_of_by_feature_name_serves_the_version_that_served_the_name_then() {
    let app = spawn_app().await;
    let (table, feature) = table_with_event_time(&app).await;
    let v1 = app.compute(feature, "v1").await;
    let v1_from = v1["valid_from"].as_str().unwrap().to_string();
    app.ingested(
        table,
        json!([{"user_id": "u1", "amount": 10.0, "ts": "2024-01-04T00:00:00Z"}]),
    )
    .await;
    let v2 = app.compute(feature, "v2").await;
    let v2_id = v2["feature_version_id"].as_i64().unwrap();
    let v2_from = v2["valid_from"].as_str().unwrap().to_string();

    // Now, by name: v2. At v1's instant, by name: v1, although v2 is the name's version now.
    let (_, now) = app
        .get("/api/v1/feature-vectors?entity_id=u1&feature_name=total")
        .await;
    assert_eq!(now["feature_values"], json!({"total": 17.0}));
    let (status, then) = total_by_name_as_of(&app, &v1_from).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["feature_values"], json!({"total": 7.0}));
    assert_eq!(then["feature_version_id"], v1["feature_version_id"]);

    // Archived later, v2 still answers for the time it served the name.
    let (status, body) = app
        .patch(
            &format!("/api/v1/features/{feature}/versions/{v2_id}"),
            &json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, now) = app
        .get("/api/v1/feature-vectors?entity_id=u1&feature_name=total")
        .await;
    assert_eq!(now["feature_values"], json!({"total": 7.0}), "{now}");
    let (status, then) = total_by_name_as_of(&app, &v2_from).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["feature_version_id"], v2_id);
    assert_eq!(then["feature_values"], json!({"total": 17.0}));

    // The batch form resolves names the same way.
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1"], "features": ["total"], "as_of": v1_from}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["versions"]["total"], v1["feature_version_id"]);
    assert_eq!(
        batch["results"][0]["features"]["total"],
        json!({"total": 7.0})
    );
}

#[tokio::test]
async fn retention_counts_from_when_a_snapshot_was_superseded_so_a_backfill_into_last_year_stays() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.snapshot_retention = std::time::Duration::from_secs(30 * 86_400)
    })
    .await;
    let (feature, version) = backfilled(&app).await;
    assert_eq!(snapshots(&app, feature, version).await.len(), 4);
    // The backfill's steps are valid from 2024 but were superseded only now: all stay.
    feature_store::service::history::prune(&app.state).await;
    let kept = snapshots(&app, feature, version).await;
    assert_eq!(kept.len(), 4, "{kept:?}");
    let (status, vector) = value_as_of(&app, version, "u1", "2024-01-01T12:00:00Z").await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    assert_eq!(vector["feature_values"], json!({"total": 1.0}));

    // With no retention, everything superseded goes and the served snapshot stays.
    let app = crate::helpers::spawn_replica_with(&app, |c| {
        c.snapshot_retention = std::time::Duration::ZERO
    })
    .await;
    feature_store::service::history::prune(&app.state).await;
    let kept = snapshots(&app, feature, version).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["kind"], "compute");
}
