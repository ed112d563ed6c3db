use reqwest::StatusCode;

use crate::helpers::{seeded, spawn_app};

#[tokio::test]
async fn metrics_count_requests_by_route_and_method_cache_lookups_computes_and_ingested_rows() {
    let app = spawn_app().await;
    let (_, feature) = seeded(&app).await;
    app.compute(feature, "v1").await;
    let by_name = "/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount";
    for _ in 0..3 {
        assert_eq!(app.get(by_name).await.0, StatusCode::OK);
    }
    // A HEAD is served by the GET route, and counted as a HEAD.
    let head = app.client.head(app.url(by_name)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    app.get("/api/v1/raw-tables/12345").await;

    let text = app.metrics_text().await;
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_string()
    };
    assert!(line(r#"feature_store_http_requests_total{route="/api/v1/feature-vectors",method="GET",status="200"}"#).ends_with(" 3"));
    assert!(line(r#"route="/api/v1/feature-vectors",method="HEAD",status="200""#).ends_with(" 1"));
    // Ids are not labels: the route template is.
    assert!(
        line(r#"route="/api/v1/raw-tables/{table_id}",method="GET",status="404""#).ends_with(" 1")
    );
    assert!(
        line(r#"feature_store_cache_lookups_total{tier="memory",result="hit"}"#).ends_with(" 3")
    );
    assert!(
        line(r#"feature_store_cache_lookups_total{tier="memory",result="miss"}"#).ends_with(" 1")
    );
    assert!(line("feature_store_ingested_rows_total").ends_with(" 8"));
    assert!(
        line("feature_store_compute_duration_seconds_count{engine=\"polars\"}").ends_with(" 1")
    );
    assert!(text.contains("feature_store_http_request_duration_seconds_bucket"));
    let age: f64 = line(
        r#"feature_store_snapshot_age_seconds{feature="avg_transaction_amount",version="v1"}"#,
    )
    .rsplit(' ')
    .next()
    .unwrap()
    .parse()
    .unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(
        line(r#"feature_store_version_stale{feature="avg_transaction_amount",version="v1"}"#)
            .ends_with(" 0")
    );
    assert!(line("feature_store_compute_queue_depth").ends_with(" 0"));
    assert!(line("feature_store_compute_workers_busy").ends_with(" 0"));
}
