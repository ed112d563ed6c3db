use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

pub(crate) const READER: &str = "reader-key-0123456789abcdef";
pub(crate) const WRITER: &str = "writer-key-0123456789abcdef";

/// An app with one read key and one write key.
pub(crate) async fn app_with_keys() -> crate::helpers::TestApp {
    spawn_app_with(|c| {
        c.api_keys =
            feature_store::auth::ApiKeys::parse(&format!("{READER}:read,{WRITER}:write")).unwrap()
    })
    .await
}

#[tokio::test]
async fn api_keys_guard_the_api_by_role_and_leave_health_and_docs_open() {
    let app = app_with_keys().await;
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
    let app = app_with_keys().await;
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

/// Every operation of the served document that is not a read refuses a read key, so a new
/// route that forgets to declare itself a change fails here.
#[tokio::test]
async fn every_changing_operation_in_the_openapi_document_refuses_a_read_key() {
    let app = app_with_keys().await;
    let (_, doc) = app.get("/openapi.json").await;
    let reads_sent_as_post = ["/api/v1/feature-vectors/batch", "/api/v1/training-sets"];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if method == "get" || reads_sent_as_post.contains(&path.as_str()) {
                continue;
            }
            let url = app.url(
                &path
                    .replace("{table_id}", "1")
                    .replace("{feature_id}", "1")
                    .replace("{version_id}", "1"),
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .client
                .request(method.clone(), &url)
                .bearer_auth(READER)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} changing operations found");
}

#[tokio::test]
async fn a_web_page_on_another_origin_cannot_change_data_even_without_keys() {
    let app = crate::helpers::spawn_app().await;
    let own_origin = app.url("");
    let table = r#"{"name": "t", "schema_definition": {"a": "int"}}"#;
    // What a page elsewhere can send without a preflight: a typeless body.
    let resp = app
        .client
        .post(app.url("/api/v1/raw-tables"))
        .header("origin", "https://evil.example")
        .body(table)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("CORS_ALLOWED_ORIGINS"));
    let (_, tables) = app.get("/api/v1/raw-tables").await;
    assert_eq!(tables, json!([]));

    // The server's own pages (Swagger UI's "try it out") are its own origin.
    let resp = app
        .client
        .post(app.url("/api/v1/raw-tables"))
        .header("origin", own_origin.trim_end_matches('/'))
        .body(table)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_listed_origin_may_change_data_and_gets_cors_answers() {
    let app =
        spawn_app_with(|c| c.cors_allowed_origins = vec!["https://app.example.com".into()]).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/raw-tables"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let resp = app
        .client
        .post(app.url("/api/v1/raw-tables"))
        .header("origin", "https://app.example.com")
        .json(&json!({"name": "t", "schema_definition": {"a": "int"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app
        .client
        .delete(app.url("/api/v1/raw-tables/1"))
        .header("origin", "https://other.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let (status, _) = app.get("/api/v1/raw-tables/1").await;
    assert_eq!(status, StatusCode::OK);
}

/// The port the app listens on, for Host headers that name it.
fn port_of(app: &TestApp) -> &str {
    app.base.rsplit(':').next().unwrap_or_default()
}

#[tokio::test]
async fn a_request_addressed_to_a_foreign_name_is_421_and_changes_nothing() {
    let app = spawn_app().await;
    let port = port_of(&app);
    // What a page on rebind.example sends once its name re-resolves to 127.0.0.1.
    let resp = app
        .client
        .post(app.url("/api/v1/raw-tables"))
        .header("host", format!("rebind.example:{port}"))
        .header("origin", format!("http://rebind.example:{port}"))
        .json(&json!({"name": "t", "schema_definition": {"k": "string"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("ALLOWED_HOSTS"),
        "{body}"
    );
    let (status, tables) = app.get("/api/v1/raw-tables").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tables, json!([]), "the refused request created a table");

    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let resp = app
            .client
            .get(app.url("/api/v1/raw-tables"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn allowed_hosts_admits_the_names_it_lists_and_no_other() {
    let app = spawn_app_with(|c| c.allowed_hosts = vec!["features.internal".into()]).await;
    let port = port_of(&app).to_string();
    for (host, expected) in [
        ("features.internal", StatusCode::OK),
        ("other.internal", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let resp = app
            .client
            .get(app.url("/api/v1/raw-tables"))
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected, "{host}");
    }
}

#[tokio::test]
async fn the_single_vector_route_asks_for_a_key_like_every_other() {
    // Without keys that route is answered before the router; with keys it must not be.
    let app = app_with_keys().await;
    let vector = app.url("/api/v1/feature-vectors?entity_id=u1&feature_name=nothing");

    let resp = app.client.get(&vector).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let detail: Value = resp.json().await.unwrap();
    assert!(detail["detail"]
        .as_str()
        .unwrap()
        .contains("Missing API key"));

    let resp = app
        .client
        .get(&vector)
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let detail: Value = resp.json().await.unwrap();
    assert_eq!(detail["detail"], "Feature 'nothing' not found");
}

#[tokio::test]
async fn the_single_vector_route_keeps_the_host_check_and_the_request_id() {
    let app = spawn_app().await;
    let port = port_of(&app);
    let vector = app.url("/api/v1/feature-vectors?entity_id=u1&feature_name=nothing");

    let resp = app
        .client
        .get(&vector)
        .header("host", format!("rebind.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    let resp = app
        .client
        .get(&vector)
        .header("x-request-id", "trace-the-vector")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-request-id"], "trace-the-vector");
    assert_eq!(resp.headers()["content-type"], "application/json");

    // Without one, each answer is given an id of its own.
    let mut made = Vec::new();
    for _ in 0..2 {
        let resp = app.client.get(&vector).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        made.push(resp.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    assert!(!made[0].is_empty(), "{made:?}");
    assert_ne!(made[0], made[1]);
}
