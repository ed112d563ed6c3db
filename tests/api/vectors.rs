use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures::sql_feature;
use crate::helpers::{seeded, spawn_app, TestApp};

async fn computed(app: &TestApp) -> i64 {
    let (_, feature) = seeded(app).await;
    let body = app.compute(feature, "v1").await;
    body["feature_version_id"].as_i64().unwrap()
}

#[tokio::test]
async fn vectors_are_served_by_version_id_and_by_name_alike() {
    let app = spawn_app().await;
    let version = computed(&app).await;
    let (status, by_id) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=user_002&feature_version_id={version}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, by_name) = app
        .get("/api/v1/feature-vectors?entity_id=user_002&feature_name=avg_transaction_amount")
        .await;
    assert_eq!(by_id, by_name);
    assert_eq!(
        by_id.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![
            "computed_at",
            "data_as_of",
            "entity_id",
            "feature_values",
            "feature_version_id",
            "stale"
        ]
    );
    // Served twice: the second answer comes from the cache and is the same.
    let (_, again) = app
        .get("/api/v1/feature-vectors?entity_id=user_002&feature_name=avg_transaction_amount")
        .await;
    assert_eq!(again, by_name);
}

#[tokio::test]
async fn vectors_need_a_feature_name_or_a_version_id() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/feature-vectors?entity_id=user_001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Either feature_version_id or feature_name must be provided"
    );
    let (status, _) = app.get("/api/v1/feature-vectors?feature_name=x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn unknown_features_versions_and_entities_are_404() {
    let app = spawn_app().await;
    let version = computed(&app).await;
    let (status, body) = app
        .get("/api/v1/feature-vectors?entity_id=user_001&feature_name=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Feature 'nope' not found");
    let (status, body) = app
        .get("/api/v1/feature-vectors?entity_id=user_001&feature_version_id=999")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Feature version with ID 999 not found");
    let (status, body) = app
        .get(&format!(
            "/api/v1/feature-vectors?entity_id=ghost&feature_version_id={version}"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["detail"],
        "Feature vector not found for entity 'ghost'"
    );
}

#[tokio::test]
async fn a_feature_with_only_an_uncomputed_version_is_not_served_by_name() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    app.post(
        &format!("/api/v1/features/{feature}/versions"),
        &json!({"version": "v1"}),
    )
    .await;
    let (status, body) = app
        .get("/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("No active computed version"));
}

#[tokio::test]
async fn odd_entity_ids_are_looked_up_verbatim() {
    let app = spawn_app().await;
    let (_, t) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "odd", "schema_definition": {"k": "string", "v": "int"}}),
        )
        .await;
    let (_, f) = app
        .post(
            "/api/v1/features",
            &json!({"name": "odd_v", "raw_table_id": t["id"], "entity_key": "k",
                    "computation_logic": "SELECT k, MAX(v) AS v FROM data GROUP BY k"}),
        )
        .await;
    let keys = ["a'b", "ü/ñ", "100%", "a&b=c", " spaced "];
    let rows: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"k": k, "v": i}))
        .collect();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{}/compute", f["id"]),
            &json!({"version": "v1", "raw_data": rows}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (i, k) in keys.iter().enumerate() {
        let resp = app
            .client
            .get(app.url("/api/v1/feature-vectors"))
            .query(&[("entity_id", *k), ("feature_name", "odd_v")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["entity_id"], *k);
        assert_eq!(body["feature_values"]["v"], i);
    }
}

#[tokio::test]
async fn ids_and_values_with_tabs_newlines_backslashes_and_non_ascii_are_served_as_they_were_ingested(
) {
    let app = spawn_app().await;
    let table = app
        .create_table(
            json!({"name": "notes", "schema_definition": {"id": "string", "note": "string"}}),
        )
        .await;
    let rows = [
        ("tab\there", "a\tb"),
        ("new\nline", "line\none\r\n"),
        ("back\\slash", "C:\\path\\N"),
        ("ünï\u{1F600}", "\\t is not a tab"),
        ("plain", "\"quoted\""),
    ];
    let body: Vec<_> = rows
        .iter()
        .map(|(id, note)| json!({"id": id, "note": note}))
        .collect();
    app.ingested(table, json!(body)).await;
    let feature = app
        .create_feature(sql_feature(
            "notes",
            table,
            "id",
            "SELECT id, note FROM data",
        ))
        .await;
    app.compute(feature, "v1").await;

    let ids: Vec<&str> = rows.iter().map(|(id, _)| *id).collect();
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ids, "features": ["notes"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    for (i, (id, note)) in rows.iter().enumerate() {
        assert_eq!(batch["results"][i]["entity_id"], *id, "{batch}");
        assert_eq!(
            batch["results"][i]["features"]["notes"]["note"], *note,
            "{batch}"
        );
    }
}
