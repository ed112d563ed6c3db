use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{seeded, spawn_app, spawn_app_with, spawn_replica_with};

#[tokio::test]
async fn batch_serves_many_entities_and_features_with_missing_marked() {
    let app = spawn_app().await;
    let (table, feature) = seeded(&app).await;
    let v1 = app.compute(feature, "v1").await;
    let (status, body) = app
        .post(
            "/api/v1/features",
            &json!({"name": "tx_count", "raw_table_id": table, "entity_key": "user_id",
                    "computation_logic": "SELECT user_id, COUNT(*) AS n FROM data WHERE transaction_amount > 100 GROUP BY user_id"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, counts) = app
        .post(
            &format!("/api/v1/features/{}/compute", body["id"]),
            &json!({"version": "v1"}),
        )
        .await;
    let v1_id = v1["feature_version_id"].as_i64().unwrap();

    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({
                "entity_ids": ["user_001", "user_003", "ghost"],
                "features": ["avg_transaction_amount", "tx_count", "avg_transaction_amount@v1", v1_id, "nope", "tx_count@v9"]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["versions"]["avg_transaction_amount"], v1_id);
    assert_eq!(batch["versions"]["tx_count"], counts["feature_version_id"]);
    assert_eq!(batch["versions"]["nope"], serde_json::Value::Null);
    assert_eq!(batch["unresolved"]["nope"], "Feature 'nope' not found");
    assert!(batch["unresolved"]["tx_count@v9"].is_string());

    let rows = batch["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["entity_id"], "user_001");
    assert_eq!(
        rows[0]["features"]["avg_transaction_amount"],
        json!({"avg_amount": 112.875})
    );
    assert_eq!(
        rows[0]["features"]["avg_transaction_amount@v1"],
        json!({"avg_amount": 112.875})
    );
    assert_eq!(
        rows[0]["features"][v1_id.to_string()],
        json!({"avg_amount": 112.875})
    );
    assert_eq!(rows[0]["features"]["tx_count"], json!({"n": 2}));
    assert_eq!(rows[0]["missing"], json!(["nope", "tx_count@v9"]));
    // user_003 has no transaction over 100: tx_count is missing for it, not an error.
    assert_eq!(rows[1]["features"]["tx_count"], serde_json::Value::Null);
    assert_eq!(
        rows[1]["missing"],
        json!(["tx_count", "nope", "tx_count@v9"])
    );
    assert_eq!(rows[2]["missing"].as_array().unwrap().len(), 6);

    // Asked again (now from the cache) the answer is the same.
    let (_, again) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({
                "entity_ids": ["user_001", "user_003", "ghost"],
                "features": ["avg_transaction_amount", "tx_count", "avg_transaction_amount@v1", v1_id, "nope", "tx_count@v9"]
            }),
        )
        .await;
    assert_eq!(again, batch);

    // Every reference resolved and every version held: answered from what is held without a
    // wait (`held_columns`), the same as when it was loaded.
    let resolved = json!({
        "entity_ids": ["user_003", "ghost", "user_001"],
        "features": ["tx_count", v1_id, "avg_transaction_amount@v1", "avg_transaction_amount"]
    });
    let (_, loaded) = app.post("/api/v1/feature-vectors/batch", &resolved).await;
    let (status, held) = app.post("/api/v1/feature-vectors/batch", &resolved).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held, loaded);
    assert_eq!(held["unresolved"], json!({}));
    assert_eq!(held["versions"][v1_id.to_string()], v1_id);
    assert_eq!(
        held["results"][2]["features"]["avg_transaction_amount@v1"],
        json!({"avg_amount": 112.875})
    );
    assert_eq!(held["results"][0]["missing"], json!(["tx_count"]));
    assert_eq!(held["results"][1]["missing"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn batch_follows_a_recompute_at_once() {
    let app = spawn_app().await;
    let (table, feature) = seeded(&app).await;
    let compute = format!("/api/v1/features/{feature}/compute");
    app.post(&compute, &json!({"version": "v1"})).await;
    let ask = json!({"entity_ids": ["user_001"], "features": ["avg_transaction_amount"]});
    let (_, before) = app.post("/api/v1/feature-vectors/batch", &ask).await;
    assert_eq!(
        before["results"][0]["features"]["avg_transaction_amount"]["avg_amount"],
        112.875
    );
    // Asked again, the version is held whole and its lookup current.
    let (_, held) = app.post("/api/v1/feature-vectors/batch", &ask).await;
    assert_eq!(held, before);
    app.ingest(
        table,
        json!([{"user_id": "user_001", "transaction_amount": 1000.0, "transaction_date": "d"}]),
    )
    .await;
    app.post(&compute, &json!({"version": "v1"})).await;
    for _ in 0..2 {
        let (_, after) = app.post("/api/v1/feature-vectors/batch", &ask).await;
        assert_eq!(
            after["results"][0]["features"]["avg_transaction_amount"]["avg_amount"],
            290.3
        );
    }
}

#[tokio::test]
async fn batch_refuses_empty_or_oversized_requests() {
    let app = spawn_app().await;
    let (status, _) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["a"], "features": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let many: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let (status, _) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": many, "features": ["f"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["a"], "features": ["@v1"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": "a", "features": ["f"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_feature_reference_that_is_neither_a_name_nor_a_version_id_is_refused_saying_what_it_must_be(
) {
    let app = spawn_app().await;
    for reference in [
        json!(1.5),
        json!(true),
        json!(null),
        json!({"name": "f"}),
        json!(u64::MAX),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/feature-vectors/batch",
                &json!({"entity_ids": ["a"], "features": ["f", reference]}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reference}: {body}"
        );
        assert!(
            body.to_string()
                .contains("a feature name (text) or a version id (integer)"),
            "{reference}: {body}"
        );
    }
    // A version id that names nothing is not an error of the request: it comes back unresolved.
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["a"], "features": [987654]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["versions"]["987654"], Value::Null);
    assert!(body["unresolved"]["987654"].is_string(), "{body}");
}

#[tokio::test]
async fn batch_reads_entity_by_entity_when_versions_are_too_large_to_snapshot() {
    // 100 bytes: the three sample vectors with their index slots need more.
    let app = spawn_app_with(|c| c.batch_snapshot_max_bytes = 100).await;
    let (_, feature) = seeded(&app).await;
    app.compute(feature, "v1").await;
    let ask = json!({"entity_ids": ["user_002", "ghost", "user_001"], "features": ["avg_transaction_amount"]});
    for _ in 0..2 {
        let (status, body) = app.post("/api/v1/feature-vectors/batch", &ask).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["results"][0]["features"]["avg_transaction_amount"]["avg_amount"],
            212.75
        );
        assert_eq!(
            body["results"][1]["missing"],
            json!(["avg_transaction_amount"])
        );
        assert_eq!(
            body["results"][2]["features"]["avg_transaction_amount"]["avg_amount"],
            112.875
        );
    }
    // Found too big once (at publish, from the vectors' sizes) and never built since.
    assert_eq!(app.state.cache.snapshot_builds(), 0);
    assert!(app.state.cache.held_snapshots().await.is_empty());
}

#[tokio::test]
async fn a_version_found_too_big_on_first_use_is_not_rebuilt_on_later_calls() {
    // 6,000 bytes: 203 entities pass the slot floor (13 bytes each) but not the real size, so
    // a replica that did not publish them builds the snapshot once to find out.
    let app = spawn_app_with(|c| c.batch_snapshot_max_bytes = 6_000).await;
    let (table, feature) = seeded(&app).await;
    let many: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"user_id": format!("u{i:04}"), "transaction_amount": i as f64, "transaction_date": "d"}))
        .collect();
    app.ingested(table, json!(many)).await;
    let v1 = app.compute(feature, "v1").await["feature_version_id"].clone();
    let replica = spawn_replica_with(&app, |c| c.batch_snapshot_max_bytes = 6_000).await;
    let ask = json!({"entity_ids": ["u0007", "user_001", "ghost"], "features": [v1]});
    let key = v1.to_string();
    for _ in 0..3 {
        let (status, body) = replica.post("/api/v1/feature-vectors/batch", &ask).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"][0]["features"][&key]["avg_amount"], 7.0);
        assert_eq!(body["results"][1]["features"][&key]["avg_amount"], 112.875);
        assert_eq!(body["results"][2]["missing"], json!([key]));
    }
    assert_eq!(replica.state.cache.snapshot_builds(), 1, "rebuilt");
    assert!(replica.state.cache.held_snapshots().await.is_empty());
}

#[tokio::test]
async fn a_publish_lets_go_of_its_versions_older_snapshots() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    let ask = json!({"entity_ids": ["user_001"], "features": ["avg_transaction_amount"]});
    let mut version = 0;
    for _ in 0..3 {
        version = app.compute(feature, "v1").await["feature_version_id"]
            .as_i64()
            .unwrap();
        let (status, body) = app.post("/api/v1/feature-vectors/batch", &ask).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let served = app
        .state
        .store
        .version_meta(version)
        .await
        .unwrap()
        .unwrap()
        .generation;
    let held = app.state.cache.held_snapshots().await;
    assert_eq!(
        held,
        vec![(version, served)],
        "older generations are still held"
    );
}
