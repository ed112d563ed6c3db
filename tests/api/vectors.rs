use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures::sql_feature;
use crate::helpers::{seeded, spawn_app, spawn_app_with, spawn_replica_with, TestApp};

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

/// One entity's served values by name, or `None` when the answer is 404.
async fn served(app: &TestApp, feature: &str, id: &str) -> Option<serde_json::Value> {
    let resp = app
        .client
        .get(app.url("/api/v1/feature-vectors"))
        .query(&[("entity_id", id), ("feature_name", feature)])
        .send()
        .await
        .expect("send");
    match resp.status() {
        StatusCode::OK => {
            Some(resp.json::<serde_json::Value>().await.expect("json")["feature_values"].clone())
        }
        StatusCode::NOT_FOUND => None,
        other => panic!("{id:?}: {other} {}", resp.text().await.unwrap_or_default()),
    }
}

/// Postgres stores a generation's vectors in blocks of neighbouring ids (one read finds the
/// block at or below an id, then the id in it): every entity must still be served as written,
/// and an id that sorts between, before or after the written ones must not borrow a neighbour.
#[tokio::test]
async fn thousands_of_vectors_are_each_served_alone_and_in_batches_and_ids_between_them_are_not() {
    // The second app serves batches from the database row by row, not from a version held
    // whole.
    for whole_versions in [true, false] {
        let app = spawn_app_with(|c| {
            if !whole_versions {
                c.batch_snapshot_max_bytes = 1;
            }
        })
        .await;
        let table = app
            .create_table(json!({"name": "wide", "schema_definition": {"id": "string", "note": "string", "n": "integer"}}))
            .await;
        // Ids u0..u2999 in byte order (u0, u1, u10, u100, ...); every 500th note is bigger
        // than a block, so it is a block of its own.
        let note = |i: usize| match i % 500 {
            0 => format!("big{}", "x".repeat(2_500)),
            _ => format!("n\t{i}"),
        };
        let rows: Vec<_> = (0..3_000)
            .map(|i| json!({"id": format!("u{i}"), "note": note(i), "n": i}))
            .collect();
        app.ingested(table, json!(rows)).await;
        let feature = app
            .create_feature(sql_feature(
                "wide",
                table,
                "id",
                "SELECT id, note, n FROM data",
            ))
            .await;
        app.compute(feature, "v1").await;

        let sample: Vec<usize> = (0..3_000)
            .filter(|i| i % 7 == 0 || i % 500 == 0 || *i == 2_999)
            .collect();
        for &i in &sample {
            assert_eq!(
                served(&app, "wide", &format!("u{i}")).await,
                Some(json!({"note": note(i), "n": i})),
                "u{i}"
            );
        }
        let absent = ["a", "u", "u1000x", "u15 ", "u2999~", "v", "ü"];
        for id in absent {
            assert_eq!(served(&app, "wide", id).await, None, "{id:?}");
        }

        for part in sample.chunks(90) {
            let mut ids: Vec<String> = part.iter().map(|i| format!("u{i}")).collect();
            ids.extend(absent.iter().map(|a| a.to_string()));
            let (status, batch) = app
                .post(
                    "/api/v1/feature-vectors/batch",
                    &json!({"entity_ids": ids, "features": ["wide"]}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{batch}");
            for (row, i) in part.iter().enumerate() {
                assert_eq!(batch["results"][row]["entity_id"], format!("u{i}"));
                assert_eq!(
                    batch["results"][row]["features"]["wide"],
                    json!({"note": note(*i), "n": i}),
                    "whole versions: {whole_versions}, u{i}"
                );
            }
            for row in part.len()..ids.len() {
                assert_eq!(
                    batch["results"][row]["missing"],
                    json!(["wide"]),
                    "whole versions: {whole_versions}, {}",
                    ids[row]
                );
            }
        }
    }
}

/// Migration 0015 moves Postgres' vectors from a row each into blocks: what a generation held
/// before it (ids with tabs and non-ASCII, values of any size) is read back after it, alone, in
/// a batch and whole, and ids it never held are absent.
#[tokio::test]
#[ignore = "needs TEST_DATABASE_URL (Postgres); .ci/run runs it"]
async fn vectors_stored_a_row_each_before_the_blocks_migration_are_read_back_after_it() {
    assert!(
        std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")),
        "this test reads a Postgres migration: set TEST_DATABASE_URL"
    );
    let (url, _dir) = crate::helpers::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut before = sqlx::migrate!("migrations/postgres");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 15)
            .cloned()
            .collect(),
    );
    before.run(&pool).await.expect("migrations before 0015");
    let stored = [
        ("u1", r#"{"v":1}"#.to_string()),
        ("u10", format!(r#"{{"v":"{}"}}"#, "x".repeat(5_000))),
        ("ü\t2", r#"{"v":"tab\tand ü"}"#.to_string()),
    ];
    for (id, values) in &stored {
        sqlx::query("INSERT INTO feature_vectors (generation, entity_id, feature_values) VALUES (5, $1, $2)")
            .bind(id)
            .bind(values)
            .execute(&pool)
            .await
            .expect("a vector written before the migration");
    }
    pool.close().await;

    let store = feature_store::store::Store::connect(&url, std::time::Duration::from_secs(5))
        .await
        .expect("the store migrates to blocks");
    for (id, values) in &stored {
        assert_eq!(
            store.get_vector(5, id).await.expect("read"),
            Some(values.clone()),
            "{id:?}"
        );
    }
    for absent in ["u", "u0", "u100", "u2", "ü"] {
        assert_eq!(
            store.get_vector(5, absent).await.expect("read"),
            None,
            "{absent:?}"
        );
    }
    assert_eq!(store.get_vector(6, "u1").await.expect("read"), None);
    let mut many = store
        .get_values_many(5, &["ü\t2", "u2", "u1", "u10"])
        .await
        .expect("read");
    many.sort();
    let mut all = store.all_values(5).await.expect("read");
    all.sort();
    let expected: Vec<(String, String)> = stored
        .iter()
        .map(|(id, values)| (id.to_string(), values.clone()))
        .collect();
    assert_eq!(many, expected);
    assert_eq!(all, expected);
}

/// Postgres' text cannot hold a NUL byte, so no backend takes one in an entity id: a result
/// with one is refused and publishes nothing, and asking for one (or for a feature or version
/// named with one) finds nothing, not an error.
#[tokio::test]
async fn an_entity_id_with_a_nul_byte_is_refused_at_compute_and_absent_when_asked_for() {
    let app = spawn_app().await;
    let table = app
        .create_table(json!({"name": "nul", "schema_definition": {"id": "string", "n": "integer"}}))
        .await;
    app.ingested(
        table,
        json!([{"id": "a\u{0}b", "n": 1}, {"id": "ab", "n": 2}]),
    )
    .await;
    let feature = app
        .create_feature(sql_feature("nul", table, "id", "SELECT id, n FROM data"))
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("NUL byte"),
        "{body}"
    );
    let (_, versions) = app
        .get(&format!("/api/v1/features/{feature}/versions"))
        .await;
    assert_eq!(versions, json!([]));

    // Served without the NUL id, then asked for it.
    let clean = app
        .create_feature(sql_feature(
            "clean",
            table,
            "id",
            "SELECT id, n FROM data WHERE id = 'ab'",
        ))
        .await;
    app.compute(clean, "v1").await;
    assert_eq!(served(&app, "clean", "ab").await, Some(json!({"n": 2})));
    assert_eq!(served(&app, "clean", "a\u{0}b").await, None);
    // In a batch, from a version held whole and (a replica with a cap of one byte) from the
    // database.
    let reads_rows = spawn_replica_with(&app, |c| c.batch_snapshot_max_bytes = 1).await;
    for replica in [&app, &reads_rows] {
        let (status, batch) = replica
            .post(
                "/api/v1/feature-vectors/batch",
                &json!({"entity_ids": ["a\u{0}b", "ab"], "features": ["clean"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{batch}");
        assert_eq!(batch["results"][0]["missing"], json!(["clean"]), "{batch}");
        assert_eq!(
            batch["results"][1]["features"]["clean"],
            json!({"n": 2}),
            "{batch}"
        );
    }

    // Names and labels refuse control characters when made, so asking by one with a NUL byte
    // finds nothing either.
    assert_eq!(served(&app, "cl\u{0}ean", "ab").await, None);
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["ab"], "features": ["cl\u{0}ean", "clean@v\u{0}1", "clean"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        batch["results"][0]["missing"],
        json!(["cl\u{0}ean", "clean@v\u{0}1"]),
        "{batch}"
    );
    assert_eq!(
        batch["results"][0]["features"]["clean"],
        json!({"n": 2}),
        "{batch}"
    );

    // Asked for at an instant (the version that served the name then), and by label in a
    // training set (which names what it could not resolve): nothing found either, and no 500.
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["ab"], "features": ["cl\u{0}ean", "clean"],
                    "as_of": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        batch["results"][0]["missing"],
        json!(["cl\u{0}ean"]),
        "{batch}"
    );
    assert_eq!(
        batch["results"][0]["features"]["clean"],
        json!({"n": 2}),
        "{batch}"
    );
    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["clean@v\u{0}1"],
                    "rows": [{"entity_id": "ab", "timestamp": "2999-01-01T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["unresolved"]["clean@v\u{0}1"],
        json!("Version 'v\u{0}1' of feature 'clean' not found"),
        "{body}"
    );
    assert_eq!(
        body["rows"],
        json!([{"entity_id": "ab", "features": {"clean@v\u{0}1": null},
                "timestamp": "2999-01-01T00:00:00.000000Z"}]),
        "{body}"
    );
}
