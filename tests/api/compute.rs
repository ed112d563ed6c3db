use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{sample_rows, seeded, spawn_app};

fn by_name(entity: &str) -> String {
    format!("/api/v1/feature-vectors?entity_id={entity}&feature_name=avg_transaction_amount")
}

#[tokio::test]
async fn compute_with_raw_data_in_the_body_serves_the_real_average() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let feature = app.create_avg_feature(table).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": sample_rows()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["vectors_created"], 3);
    assert_eq!(body["entities_processed"], 3);
    let (status, vector) = app.get(&by_name("user_001")).await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    assert_eq!(vector["entity_id"], "user_001");
    assert_eq!(vector["feature_values"], json!({"avg_amount": 112.875}));
    assert_eq!(vector["feature_version_id"], body["feature_version_id"]);
    assert!(vector["computed_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn compute_accepts_a_bare_array_with_the_version_in_the_query() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let feature = app.create_avg_feature(table).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute?version=v1"),
            &sample_rows(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, vector) = app.get(&by_name("user_002")).await;
    assert_eq!(vector["feature_values"]["avg_amount"], 212.75);
}

#[tokio::test]
async fn compute_without_rows_uses_the_ingested_rows() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (status, body) = app
        .post_raw(
            &format!("/api/v1/features/{feature}/compute?version=v1"),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["vectors_created"], 3);
    let (_, vector) = app.get(&by_name("user_003")).await;
    assert_eq!(vector["feature_values"]["avg_amount"], 75.0);
}

#[tokio::test]
async fn compute_without_rows_or_ingested_data_returns_400_and_creates_no_version() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let feature = app.create_avg_feature(table).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("Invalid raw data: No data provided"));
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    assert_eq!(versions, json!([]));
}

#[tokio::test]
async fn compute_returns_400_for_invalid_raw_data() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": [{"user_id": 5, "transaction_amount": 1.0, "transaction_date": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid raw data: Column user_id should be string, got int"
    );
}

#[tokio::test]
async fn a_failed_compute_leaves_no_version_behind() {
    let app = spawn_app().await;
    let table = app.register_transactions().await;
    let feature = app
        .create_feature(
            json!({"name": "raw_amount", "raw_table_id": table, "entity_key": "user_id",
                    "computation_logic": "SELECT user_id, transaction_amount FROM data"}),
        )
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": sample_rows()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("more than one row for entity 'user_00"),
        "{detail}"
    );
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    assert_eq!(versions, json!([]));
}

#[tokio::test]
async fn a_recompute_is_served_at_once_with_a_new_computed_at() {
    let app = spawn_app().await;
    let (table, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    let (_, first) = app.post(&compute, &json!({"version": "v1"})).await;
    let (_, before) = app.get(&by_name("user_001")).await;
    assert_eq!(before["feature_values"]["avg_amount"], 112.875);

    app.ingest(table, json!([{"user_id": "user_001", "transaction_amount": 1000.0, "transaction_date": "2024-02-01"}]))
        .await;
    let (status, second) = app.post(&compute, &json!({"version": "v1"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["feature_version_id"], second["feature_version_id"]);
    let (_, after) = app.get(&by_name("user_001")).await;
    assert_eq!(after["feature_values"]["avg_amount"], 290.3);
    assert_ne!(before["computed_at"], after["computed_at"]);
    let (_, by_id) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={}",
            second["feature_version_id"]
        ))
        .await;
    assert_eq!(by_id["feature_values"]["avg_amount"], 290.3);
}

#[tokio::test]
async fn a_recompute_replaces_the_whole_set_of_vectors() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    app.post(&compute, &json!({"version": "v1"})).await;
    assert_eq!(app.get(&by_name("user_003")).await.0, StatusCode::OK);
    let only_one =
        json!([{"user_id": "user_001", "transaction_amount": 2.0, "transaction_date": "d"}]);
    let (_, body) = app
        .post(&compute, &json!({"version": "v1", "raw_data": only_one}))
        .await;
    assert_eq!(body["vectors_created"], 1);
    assert_eq!(app.get(&by_name("user_003")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn integer_entity_keys_are_served_as_text_and_nan_as_null() {
    let app = spawn_app().await;
    let (_, t) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "m", "schema_definition": {"id": "integer", "x": "float"}}),
        )
        .await;
    let (status, f) = app
        .post(
            "/api/v1/features",
            &json!({"name": "ratio", "raw_table_id": t["id"], "entity_key": "id",
                    "computation_logic": "SELECT id, x / 0.0 AS r, x FROM data"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    let rows = json!([{"id": 1, "x": 0.0}, {"id": 2, "x": 1.0}]);
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{}/compute", f["id"]),
            &json!({"version": "v1", "raw_data": rows}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, one) = app
        .get("/api/v1/feature-vectors?entity_id=1&feature_name=ratio")
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["entity_id"], "1");
    assert_eq!(one["feature_values"], json!({"r": null, "x": 0.0}));
    let (_, two) = app
        .get("/api/v1/feature-vectors?entity_id=2&feature_name=ratio")
        .await;
    assert_eq!(two["feature_values"]["r"], Value::Null);
}

#[tokio::test]
async fn compute_returns_422_without_a_version_and_404_for_an_unknown_feature() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"raw_data": sample_rows()}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post("/api/v1/features/999/compute", &json!({"version": "v1"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Feature with ID 999 not found");
    let (status, _) = app
        .post(
            &format!("/api/v1/features/{feature}/compute?version=v1"),
            &json!([1, 2]),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_version_recomputes_with_the_sql_it_was_created_with() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (_, created) = app
        .post(
            &format!("/api/v1/features/{feature}/versions"),
            &json!({"version": "v1"}),
        )
        .await;
    let computed = app.compute(feature, "v1").await;
    assert_eq!(created["id"], computed["feature_version_id"]);
    let (_, version) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{}",
            created["id"]
        ))
        .await;
    assert_eq!(version["entity_count"], 3);
    assert_eq!(
        version["output_schema"],
        json!({"avg_amount": "float", "user_id": "string"})
    );
    assert!(version["computed_at"].is_string());
}

#[tokio::test]
async fn concurrent_recomputes_leave_exactly_one_computes_output() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = app.client.clone();
        let url = app.url(&compute);
        // Every compute publishes a different set: entities u{i}_0 .. u{i}_{i}.
        let rows: Vec<Value> = (0..=i)
            .map(|j| json!({"user_id": format!("u{i}_{j}"), "transaction_amount": 1.0, "transaction_date": "d"}))
            .collect();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"version": "v1", "raw_data": rows}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    let count = versions[0]["entity_count"].as_i64().unwrap();
    let winner = count - 1;
    for j in 0..count {
        let (status, _) = app.get(&by_name(&format!("u{winner}_{j}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    for other in (0..6).filter(|i| *i != winner) {
        let (status, _) = app.get(&by_name(&format!("u{other}_0"))).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "set of compute {other} leaked"
        );
    }
}

#[tokio::test]
async fn recomputes_do_not_consume_version_ids() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    let (_, v1) = app.post(&compute, &json!({"version": "v1"})).await;
    app.post(&compute, &json!({"version": "v1"})).await;
    app.post(&compute, &json!({"version": "v1"})).await;
    let (_, v2) = app.post(&compute, &json!({"version": "v2"})).await;
    assert_eq!(
        v2["feature_version_id"].as_i64().unwrap(),
        v1["feature_version_id"].as_i64().unwrap() + 1
    );
}
