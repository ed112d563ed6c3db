use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{holds_within, seeded, spawn_app};

#[tokio::test]
async fn create_version_accepts_the_body_with_or_without_feature_id() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let path = format!("/api/v1/features/{feature}/versions");
    let (status, v1) = app
        .post(&path, &json!({"version": "v1", "status": "active"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["feature_id"], feature);
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["status"], "active");
    assert!(v1["created_at"].is_string());
    let (status, v2) = app
        .post(&path, &json!({"version": "v2", "feature_id": feature}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["status"], "active");
    assert!(v2["computation_logic"]
        .as_str()
        .unwrap()
        .contains("AVG(transaction_amount)"));
}

#[tokio::test]
async fn create_version_returns_400_when_the_body_feature_id_disagrees() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/versions"),
            &json!({"version": "v1", "feature_id": feature + 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("does not match"),
        "{body}"
    );
}

#[tokio::test]
async fn create_version_returns_400_when_it_exists() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let path = format!("/api/v1/features/{feature}/versions");
    app.post(&path, &json!({"version": "v1"})).await;
    let (status, body) = app.post(&path, &json!({"version": "v1"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        format!("Version 'v1' already exists for feature {feature}")
    );
}

#[tokio::test]
async fn create_version_returns_404_for_an_unknown_feature_and_422_for_a_bad_status() {
    let app = spawn_app().await;
    let (status, body) = app
        .post("/api/v1/features/9/versions", &json!({"version": "v1"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Feature with ID 9 not found");
    let (_, feature) = seeded(&app).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/features/{feature}/versions"),
            &json!({"version": "v1", "status": "live"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn versions_are_listed_oldest_first_and_fetched_one_by_one() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let path = format!("/api/v1/features/{feature}/versions");
    for v in ["v1", "v2", "v3"] {
        app.post(&path, &json!({ "version": v })).await;
    }
    let (status, list) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    let labels: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(labels, vec![json!("v1"), json!("v2"), json!("v3")]);
    let id = list[1]["id"].as_i64().unwrap();
    let (status, one) = app.get(&format!("{path}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["version"], "v2");
    assert_eq!(
        app.get(&format!("{path}/9999")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn archiving_the_newest_version_makes_serving_by_name_fall_back_at_once() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    let (_, v1) = app.post(&compute, &json!({"version": "v1"})).await;
    let (_, v2) = app.post(&compute, &json!({"version": "v2"})).await;
    let by_name = "/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount";
    let (_, served) = app.get(by_name).await;
    assert_eq!(served["feature_version_id"], v2["feature_version_id"]);

    let v2_id = v2["feature_version_id"].as_i64().unwrap();
    let (status, body) = app
        .patch(
            &format!("/api/v1/features/{feature}/versions/{v2_id}"),
            &json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "archived");
    let (_, served) = app.get(by_name).await;
    assert_eq!(served["feature_version_id"], v1["feature_version_id"]);

    let v1_id = v1["feature_version_id"].as_i64().unwrap();
    app.patch(
        &format!("/api/v1/features/{feature}/versions/{v1_id}"),
        &json!({"status": "deprecated"}),
    )
    .await;
    let (status, body) = app.get(by_name).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["detail"],
        "No active computed version found for feature 'avg_transaction_amount'"
    );

    // An explicit version id still serves a deprecated version.
    let (status, _) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={v1_id}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_version_removes_it_and_its_vectors() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let v1 = app.compute(feature, "v1").await;
    let id = v1["feature_version_id"].as_i64().unwrap();
    let (status, _) = app
        .delete(&format!("/api/v1/features/{feature}/versions/{id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_001&feature_version_id={id}"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_version_deleted_while_it_recomputes_stays_deleted() {
    let app = spawn_app().await;
    let (status, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "t", "schema_definition": {"k": "string", "v": "integer"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    // A self-join: slow enough over the big body below that the delete lands mid-compute.
    let feature = app.create_feature(json!({"name": "pairs", "raw_table_id": table["id"], "entity_key": "k",
                "computation_logic": "SELECT a.k, COUNT(*) AS n FROM data a JOIN data b ON a.k = b.k GROUP BY a.k"})).await;
    let compute_url = format!("/api/v1/features/{feature}/compute");
    let (status, first) = app
        .post(
            &compute_url,
            &json!({"version": "v1", "raw_data": [{"k": "a", "v": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let version = first["feature_version_id"].as_i64().unwrap();

    let rows: Vec<Value> = (0..400_000)
        .map(|i| json!({"k": format!("k{}", i % 10_000), "v": i}))
        .collect();
    let recompute = {
        let (client, url) = (app.client.clone(), app.url(&compute_url));
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({"version": "v1", "raw_data": rows}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        })
    };
    let started = holds_within(
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async { app.state.compute.running() > 0 },
    )
    .await;
    assert!(started, "the recompute never started");
    let (status, body) = app
        .delete(&format!("/api/v1/features/{feature}/versions/{version}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, body) = recompute.await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("deleted while it was computed"),
        "{body}"
    );
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    assert_eq!(versions, json!([]), "the deleted version came back");
    let (status, _) = app
        .get("/api/v1/feature-vectors?entity_id=a&feature_name=pairs")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
