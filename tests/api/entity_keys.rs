//! Entities named by more than one column: registration, serving one vector and a batch,
//! training sets and `as_of`, each checked as a client sees it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fixtures::sql_feature;
use crate::helpers::{spawn_app, TestApp};

/// A purchases table with two users buying from merchants 7 and 9 (u1 twice from 7), a
/// user × merchant feature `pair_spend` and a user feature `user_spend`, both computed.
/// Returns the pair feature's version id.
async fn purchases(app: &TestApp) -> i64 {
    let table = app
        .create_table(json!({"name": "purchases",
            "schema_definition": {"user_id": "string", "merchant_id": "integer", "amount": "float"}}))
        .await;
    app.ingested(
        table,
        json!([
            {"user_id": "u1", "merchant_id": 7, "amount": 10.0},
            {"user_id": "u1", "merchant_id": 7, "amount": 5.0},
            {"user_id": "u1", "merchant_id": 9, "amount": 1.0},
            {"user_id": "u2", "merchant_id": 7, "amount": 2.5}
        ]),
    )
    .await;
    let pair = app
        .create_feature(json!({"name": "pair_spend", "raw_table_id": table,
            "entity_key": ["user_id", "merchant_id"],
            "computation_logic": "SELECT user_id, merchant_id, COUNT(*) AS purchases, SUM(amount) AS spent \
                                  FROM data GROUP BY user_id, merchant_id"}))
        .await;
    let user = app
        .create_feature(sql_feature(
            "user_spend",
            table,
            "user_id",
            "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id",
        ))
        .await;
    app.compute(user, "v1").await;
    let computed = app.compute(pair, "v1").await;
    assert_eq!(computed["vectors_created"], 3, "{computed}");
    computed["feature_version_id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_feature_keyed_by_two_columns_shows_its_key_as_a_list() {
    let app = spawn_app().await;
    purchases(&app).await;
    let (status, features) = app.get("/api/v1/features").await;
    assert_eq!(status, StatusCode::OK);
    let by_name = |name: &str| {
        features
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_name("pair_spend")["entity_key"],
        json!(["user_id", "merchant_id"])
    );
    assert_eq!(by_name("user_spend")["entity_key"], "user_id");
    let pair_id = by_name("pair_spend")["id"].as_i64().unwrap();
    let (_, versions) = app
        .get(&format!("/api/v1/features/{pair_id}/versions"))
        .await;
    assert_eq!(
        versions[0]["entity_key"],
        json!(["user_id", "merchant_id"]),
        "{versions}"
    );
}

#[tokio::test]
async fn one_vector_is_served_by_each_key_column_as_its_own_parameter() {
    let app = spawn_app().await;
    purchases(&app).await;
    let (status, answer) = app
        .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1&merchant_id=7")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["feature_values"],
        json!({"purchases": 2, "spent": 15.0})
    );
    // The key keeps its type (merchant_id is an integer column); the id is text.
    assert_eq!(answer["entity"], json!({"user_id": "u1", "merchant_id": 7}));
    assert_eq!(answer["entity_id"], r#"{"merchant_id":"7","user_id":"u1"}"#);

    // The parameters' order does not matter, a cached answer is the same, and the answer's
    // entity_id names the same entity.
    for path in [
        "/api/v1/feature-vectors?merchant_id=7&user_id=u1&feature_name=pair_spend".to_string(),
        "/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1&merchant_id=7".to_string(),
        format!(
            "/api/v1/feature-vectors?feature_name=pair_spend&entity_id={}",
            urlencode(answer["entity_id"].as_str().unwrap())
        ),
    ] {
        let (status, again) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {again}");
        assert_eq!(again["feature_values"], answer["feature_values"], "{path}");
        assert_eq!(again["entity"], answer["entity"], "{path}");
    }

    let (status, other) = app
        .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u2&merchant_id=7")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        other["feature_values"],
        json!({"purchases": 1, "spent": 2.5})
    );
    let (status, body) = app
        .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u2&merchant_id=9")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn missing_or_extra_key_parameters_are_400s_naming_them() {
    let app = spawn_app().await;
    purchases(&app).await;
    // Asked twice each: the second request finds the lookup cached, and must not answer
    // differently.
    for _ in 0..2 {
        let (status, body) = app
            .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(detail(&body).contains("missing 'merchant_id'"), "{body}");
        let (status, body) = app
            .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1&merchant_id=7&shop=3")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(detail(&body).contains("'shop'"), "{body}");
        // A feature keyed by one column takes its column's name, or entity_id, and no other.
        let (status, body) = app
            .get("/api/v1/feature-vectors?feature_name=user_spend&user_id=u2")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["feature_values"]["total"], 2.5);
        let (status, body) = app
            .get("/api/v1/feature-vectors?feature_name=user_spend&customer=u2")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(detail(&body).contains("missing 'user_id'"), "{body}");
        assert!(detail(&body).contains("'customer'"), "{body}");
    }
}

#[tokio::test]
async fn registration_checks_the_key_columns() {
    let app = spawn_app().await;
    let table = app
        .create_table(json!({"name": "t", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "merchant_id": "integer", "ts": "datetime", "amount": "float"}}))
        .await;
    let feature = |key: Value| {
        json!({"name": "f", "raw_table_id": table, "entity_key": key,
            "computation_logic": "SELECT user_id, SUM(amount) AS spent FROM data GROUP BY user_id"})
    };
    let (status, body) = app
        .post(
            "/api/v1/features",
            &feature(json!(["user_id", "merchant_id"])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(detail(&body).contains("'merchant_id'"), "{body}");
    for bad in [
        json!([]),
        json!(["a", "b", "c", "d", "e"]),
        json!(["user_id", "user_id"]),
        json!(7),
    ] {
        let (status, body) = app.post("/api/v1/features", &feature(bad.clone())).await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
        assert!(detail(&body).contains("entity_key"), "{bad}: {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/features",
            &json!({"name": "agg", "raw_table_id": table,
            "entity_key": ["user_id", "shop"],
            "aggregations": [{"column": "amount", "function": "sum", "windows": ["1d"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(detail(&body).contains("no column 'shop'"), "{body}");
    let (status, features) = app.get("/api/v1/features").await;
    assert_eq!((status, features), (StatusCode::OK, json!([])));

    // Two rows for one pair: the one-row-per-entity rule names both columns.
    app.ingested(
        table,
        json!([{"user_id": "u1", "merchant_id": 7, "ts": "2024-01-01T00:00:00Z", "amount": 1.0}]),
    )
    .await;
    let twice = app
        .create_feature(json!({"name": "twice", "raw_table_id": table,
            "entity_key": ["user_id", "merchant_id"],
            "computation_logic": "SELECT user_id, merchant_id, amount FROM data UNION ALL SELECT user_id, merchant_id, amount FROM data"}))
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{twice}/compute?version=v1"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        detail(&body).contains("GROUP BY user_id, merchant_id"),
        "{body}"
    );
}

#[tokio::test]
async fn a_batch_joins_each_feature_on_the_key_columns_it_needs() {
    let app = spawn_app().await;
    purchases(&app).await;
    let (status, answer) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entities": [{"user_id": "u1", "merchant_id": 7},
                                 {"user_id": "u2", "merchant_id": "9"}],
                    "features": ["user_spend", "pair_spend"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows = &answer["results"];
    assert_eq!(
        rows[0]["entity"],
        json!({"user_id": "u1", "merchant_id": 7})
    );
    assert_eq!(rows[0]["features"]["user_spend"], json!({"total": 16.0}));
    assert_eq!(
        rows[0]["features"]["pair_spend"],
        json!({"purchases": 2, "spent": 15.0})
    );
    assert_eq!(rows[1]["features"]["user_spend"], json!({"total": 2.5}));
    assert_eq!(rows[1]["features"]["pair_spend"], Value::Null);
    assert_eq!(rows[1]["missing"], json!(["pair_spend"]));

    // An entity without a feature's key column, or plain ids for a feature keyed by two.
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entities": [{"user_id": "u1"}], "features": ["pair_spend"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(detail(&body).contains("'merchant_id'"), "{body}");
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["u1"], "features": ["pair_spend"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        detail(&body).contains("keyed by (user_id, merchant_id)"),
        "{body}"
    );
    // Bad entity lists change nothing and say what is wrong.
    for (body, says) in [
        (json!({"features": ["user_spend"]}), "give the entities"),
        (
            json!({"entity_ids": ["u1"], "entities": ["u1"], "features": ["user_spend"]}),
            "not both",
        ),
        (
            json!({"entities": [{"user_id": 1.5}], "features": ["user_spend"]}),
            "text or an integer",
        ),
        (
            json!({"entities": [[1]], "features": ["user_spend"]}),
            "an object of key values or an id",
        ),
    ] {
        let (status, answer) = app.post("/api/v1/feature-vectors/batch", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(detail(&answer).contains(says), "{body}: {answer}");
    }
    // Plain ids still serve a feature keyed by one column, in `entities` too.
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entities": ["u2"], "features": ["user_spend"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["entity_id"], "u2");
    assert_eq!(body["results"][0]["features"]["user_spend"]["total"], 2.5);
}

#[tokio::test]
async fn training_rows_carry_each_key_column_by_name() {
    let app = spawn_app().await;
    purchases(&app).await;
    let (status, answer) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["pair_spend", "user_spend"], "rows": [
                {"user_id": "u1", "merchant_id": 7, "timestamp": "2100-01-01T00:00:00Z", "label": 1},
                {"user_id": "u2", "merchant_id": 9, "timestamp": "2100-01-01T00:00:00Z", "label": 0},
                {"user_id": "u1", "merchant_id": 9, "timestamp": "2000-01-01T00:00:00Z", "label": 0}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows = &answer["rows"];
    assert_eq!(rows[0]["merchant_id"], 7, "{answer}");
    assert_eq!(rows[0]["label"], 1);
    assert_eq!(
        rows[0]["features"]["pair_spend"],
        json!({"purchases": 2, "spent": 15.0})
    );
    assert_eq!(rows[0]["features"]["user_spend"], json!({"total": 16.0}));
    assert_eq!(rows[1]["features"]["pair_spend"], Value::Null);
    assert_eq!(rows[1]["features"]["user_spend"], json!({"total": 2.5}));
    // Before the first compute: nothing was in force.
    assert_eq!(rows[2]["features"]["pair_spend"], Value::Null);

    let csv =
        "merchant_id,user_id,timestamp\n7,u1,2100-01-01T00:00:00Z\n9,u1,2100-01-01T00:00:00Z\n";
    let resp = app
        .post_as(
            "/api/v1/training-sets?features=pair_spend&features=user_spend",
            "text/csv",
            csv,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "timestamp,merchant_id,user_id,pair_spend__purchases,pair_spend__spent,user_spend__total",
        "{text}"
    );
    assert!(lines[1].ends_with(",7,u1,2,15.0,16.0"), "{text}");
    assert!(lines[2].ends_with(",9,u1,1,1.0,16.0"), "{text}");

    let (status, body) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["pair_spend"], "rows": [
                {"user_id": "u1", "timestamp": "2100-01-01T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(detail(&body).contains("'merchant_id'"), "{body}");
}

#[tokio::test]
async fn as_of_serves_a_pair_from_the_snapshot_then_in_force() {
    let app = spawn_app().await;
    purchases(&app).await;
    let (status, answer) = app
        .get("/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1&merchant_id=9&as_of=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["feature_values"],
        json!({"purchases": 1, "spent": 1.0})
    );
    assert_eq!(answer["entity"], json!({"user_id": "u1", "merchant_id": 9}));
    assert!(answer["snapshot_id"].is_i64(), "{answer}");
    let (status, body) = app
        .get(
            "/api/v1/feature-vectors?feature_name=pair_spend&user_id=u1&as_of=2100-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entities": [{"user_id": "u1", "merchant_id": 9}, {"user_id": "u1", "merchant_id": 7}],
                    "features": ["pair_spend"], "as_of": "2100-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["features"]["pair_spend"]["spent"], 1.0);
    assert_eq!(body["results"][1]["features"]["pair_spend"]["spent"], 15.0);
}

fn detail(body: &Value) -> String {
    body["detail"].to_string()
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_backfilled_pair_gives_each_training_row_the_snapshot_then_in_force() {
    let app = spawn_app().await;
    let table = app
        .create_table(json!({"name": "visits", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "shop": "integer", "ts": "datetime"}}))
        .await;
    app.ingested(
        table,
        json!([
            {"user_id": "u1", "shop": 3, "ts": "2024-01-01T10:00:00Z"},
            {"user_id": "u1", "shop": 3, "ts": "2024-01-02T10:00:00Z"},
            {"user_id": "u1", "shop": 4, "ts": "2024-01-02T11:00:00Z"}
        ]),
    )
    .await;
    let feature = app
        .create_feature(json!({"name": "visits_pair", "raw_table_id": table,
            "entity_key": ["user_id", "shop"],
            "computation_logic": "SELECT user_id, shop, COUNT(*) AS visits FROM data GROUP BY user_id, shop"}))
        .await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/versions/{version}/backfill"),
            &json!({"start": "2024-01-02T00:00:00Z", "end": "2024-01-03T00:00:00Z",
                "every_seconds": 86400}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, answer) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["visits_pair"], "rows": [
                {"user_id": "u1", "shop": 3, "timestamp": "2024-01-02T00:00:00Z"},
                {"user_id": "u1", "shop": 3, "timestamp": "2024-01-03T00:00:00Z"},
                {"user_id": "u1", "shop": 4, "timestamp": "2024-01-02T12:00:00Z"},
                {"user_id": "u1", "shop": 4, "timestamp": "2024-01-03T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let visits: Vec<Value> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["features"]["visits_pair"]["visits"].clone())
        .collect();
    // Statistics and drift describe the values: the key columns are the entity, not values.
    let (status, stats) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/stats"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let columns: Vec<&String> = stats["columns"].as_object().unwrap().keys().collect();
    assert_eq!(columns, ["visits"], "{stats}");
    let (status, drift) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/drift"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{drift}");
    let columns: Vec<&String> = drift["columns"].as_object().unwrap().keys().collect();
    assert_eq!(columns, ["visits"], "{drift}");
    // Jan 2 00:00 saw one visit to shop 3 and none to shop 4 yet; Jan 3 saw both days.
    assert_eq!(
        visits,
        [json!(1), json!(2), Value::Null, json!(1)],
        "{answer}"
    );
}

#[tokio::test]
async fn an_aggregation_feature_keyed_by_two_columns_is_exact_in_training_and_online() {
    let app = spawn_app().await;
    let table = app
        .create_table(json!({"name": "spend", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "shop": "integer", "amount": "float", "ts": "datetime"}}))
        .await;
    let recent = (chrono::Utc::now() - chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    app.ingested(
        table,
        json!([
            {"user_id": "u1", "shop": 3, "amount": 10.0, "ts": "2024-01-01T10:00:00Z"},
            {"user_id": "u1", "shop": 3, "amount": 5.0, "ts": "2024-01-01T20:00:00Z"},
            {"user_id": "u1", "shop": 4, "amount": 1.0, "ts": "2024-01-01T12:00:00Z"},
            {"user_id": "u2", "shop": 3, "amount": 7.0, "ts": "2024-01-01T11:00:00Z"},
            {"user_id": "u1", "shop": null, "amount": 100.0, "ts": "2024-01-01T19:00:00Z"},
            {"user_id": "u1", "shop": 3, "amount": 2.0, "ts": recent},
            {"user_id": "u1", "shop": 3, "amount": 3.0, "ts": recent}
        ]),
    )
    .await;
    app.create_feature(json!({"name": "spend_pair", "raw_table_id": table,
        "entity_key": ["user_id", "shop"],
        "aggregations": [{"column": "amount", "function": "sum", "windows": ["1d"]},
                         {"column": "amount", "function": "count", "windows": ["1d"]}]}))
        .await;

    // Training rows: a window at t holds t - 1d < event time <= t; an event without its
    // whole key (shop null) belongs to no pair.
    let (status, answer) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["spend_pair"], "rows": [
                {"user_id": "u1", "shop": 3, "timestamp": "2024-01-01T20:00:00Z"},
                {"user_id": "u1", "shop": 3, "timestamp": "2024-01-02T10:00:00Z"},
                {"user_id": "u1", "shop": 4, "timestamp": "2024-01-01T12:00:00Z"},
                {"user_id": "u2", "shop": 4, "timestamp": "2024-01-01T12:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let values: Vec<Value> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["features"]["spend_pair"].clone())
        .collect();
    assert_eq!(
        values,
        [
            json!({"amount_sum_1d": 15.0, "amount_count_1d": 2}),
            json!({"amount_sum_1d": 5.0, "amount_count_1d": 1}),
            json!({"amount_sum_1d": 1.0, "amount_count_1d": 1}),
            json!({"amount_sum_1d": null, "amount_count_1d": 0}),
        ],
        "{answer}"
    );

    // Online: the two recent events, by the pair's key parameters, one vector or a batch.
    let (status, vector) = app
        .get("/api/v1/feature-vectors?feature_name=spend_pair&shop=3&user_id=u1")
        .await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    assert_eq!(
        vector["feature_values"],
        json!({"amount_sum_1d": 5.0, "amount_count_1d": 2})
    );
    let (status, body) = app
        .get("/api/v1/feature-vectors?feature_name=spend_pair&user_id=u1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(detail(&body).contains("missing 'shop'"), "{body}");
    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entities": [{"user_id": "u1", "shop": 3}, {"user_id": "u2", "shop": 3}],
                    "features": ["spend_pair"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        batch["results"][0]["features"]["spend_pair"]["amount_sum_1d"],
        5.0
    );
    assert_eq!(
        batch["results"][1]["features"]["spend_pair"]["amount_count_1d"],
        0
    );
}
