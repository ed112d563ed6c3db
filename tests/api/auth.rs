use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app_with;

const READER: &str = "reader-key-0123456789abcdef";
const WRITER: &str = "writer-key-0123456789abcdef";

#[tokio::test]
async fn api_keys_guard_the_api_by_role_and_leave_health_and_docs_open() {
    let app = spawn_app_with(|c| {
        c.api_keys =
            feature_store::auth::ApiKeys::parse(&format!("{READER}:read,{WRITER}:write")).unwrap()
    })
    .await;
    let tables = app.url("/api/v1/raw-tables");
    let body = json!({"name": "t", "schema_definition": {"a": "int"}});

    let resp = app.client.get(&tables).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let detail: serde_json::Value = resp.json().await.unwrap();
    assert!(detail["detail"]
        .as_str()
        .unwrap()
        .contains("Missing API key"));

    let resp = app
        .client
        .get(&tables)
        .bearer_auth("not-a-key-at-all-0000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = app
        .client
        .get(&tables)
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .client
        .post(&tables)
        .bearer_auth(READER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let detail: serde_json::Value = resp.json().await.unwrap();
    assert!(detail["detail"].as_str().unwrap().contains("only read"));

    let resp = app
        .client
        .post(&tables)
        .header("x-api-key", WRITER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app
        .client
        .get(&tables)
        .header("x-api-key", READER)
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Batch serving is a read even though it is a POST.
    let resp = app
        .client
        .post(app.url("/api/v1/feature-vectors/batch"))
        .bearer_auth(READER)
        .json(&json!({"entity_ids": ["a"], "features": ["f"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    for open in ["/health", "/ready", "/openapi.json", "/docs/", "/redoc"] {
        let resp = app.client.get(app.url(open)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn ready_reports_the_database_and_cache_mode() {
    let app = crate::helpers::spawn_app().await;
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    let expected_db = if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(body["database"], expected_db);
    let expected_cache = if crate::helpers::test_redis_url().is_some() {
        "redis"
    } else {
        "memory"
    };
    assert_eq!(body["cache"], expected_cache);

    app.state.store.close().await;
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["detail"], "Database unavailable");
}

#[tokio::test]
async fn responses_carry_a_request_id_and_keep_the_one_sent() {
    let app = crate::helpers::spawn_app().await;
    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(!resp.headers()["x-request-id"].is_empty());
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_read_key_gets_403_for_delete_patch_and_compute_and_changes_nothing() {
    let app = spawn_app_with(|c| {
        c.api_keys =
            feature_store::auth::ApiKeys::parse(&format!("{READER}:read,{WRITER}:write")).unwrap()
    })
    .await;
    let write = |req: reqwest::RequestBuilder| req.bearer_auth(WRITER);
    let table = json!({"name": "user_transactions", "schema_definition": {
        "user_id": "string", "transaction_amount": "float", "transaction_date": "string"}});
    let resp = write(app.client.post(app.url("/api/v1/raw-tables")))
        .json(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let feature = json!({"name": "avg", "raw_table_id": 1, "entity_key": "user_id",
        "computation_logic": "SELECT user_id, AVG(transaction_amount) AS a FROM data GROUP BY user_id"});
    let resp = write(app.client.post(app.url("/api/v1/features")))
        .json(&feature)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = write(app.client.post(app.url("/api/v1/features/1/compute")))
        .json(&json!({"version": "v1", "raw_data": [
            {"user_id": "u1", "transaction_amount": 2.0, "transaction_date": "d"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let attempts = [
        app.client.delete(app.url("/api/v1/features/1/versions/1")),
        app.client
            .patch(app.url("/api/v1/features/1/versions/1"))
            .json(&json!({"status": "archived"})),
        app.client
            .post(app.url("/api/v1/features/1/compute"))
            .json(&json!({"version": "v2"})),
        app.client.delete(app.url("/api/v1/features/1")),
    ];
    for attempt in attempts {
        // The scheme name is matched case-insensitively: the key is recognised, then refused.
        let resp = attempt
            .header("authorization", format!("bearer {READER}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    let resp = app
        .client
        .get(app.url("/api/v1/features/1/versions"))
        .header("authorization", format!("BEARER {READER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let versions: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_eq!(versions[0]["status"], "active");
}
