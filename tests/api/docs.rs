use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_lists_every_endpoint() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/health",
        "/api/v1/raw-tables",
        "/api/v1/raw-tables/{table_id}",
        "/api/v1/raw-tables/{table_id}/data",
        "/api/v1/features",
        "/api/v1/features/{feature_id}",
        "/api/v1/features/{feature_id}/versions",
        "/api/v1/features/{feature_id}/versions/{version_id}",
        "/api/v1/features/{feature_id}/compute",
        "/api/v1/feature-vectors",
        "/api/v1/feature-vectors/batch",
        "/api/v1/ingest",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
}

#[tokio::test]
async fn swagger_ui_and_redoc_are_served_offline() {
    let app = spawn_app().await;
    for path in ["/docs/", "/redoc", "/redoc/redoc.standalone.js"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("cdn.jsdelivr.net"),
            "{path} loads from a CDN"
        );
    }
    let resp = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
