//! A compute that runs past its time limit is cut off with a JSON error, and serving keeps
//! answering meanwhile.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn a_heavy_compute_is_cut_off_while_other_requests_keep_answering() {
    let app = spawn_app_with(|c| c.compute_timeout = Duration::from_millis(100)).await;
    let (_, table) = app
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "t", "schema_definition": {"k": "integer", "v": "float"}}),
        )
        .await;
    let table = table["id"].as_i64().unwrap();
    let mut csv = String::from("k,v\n");
    for i in 0..2_000_000 {
        csv.push_str(&format!("{},{}\n", i % 100_003, i));
    }
    let resp = app
        .client
        .post(app.url(&format!("/api/v1/raw-tables/{table}/data")))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Linear but long work over 2M stored rows (no CTE, so polars runs it on its rayon pool,
    // where a lost result channel once aborted the process), well past this app's 100 ms limit.
    let (status, feature) = app
        .post(
            "/api/v1/features",
            &json!({"name": "heavy", "raw_table_id": table, "entity_key": "k",
                    "computation_logic": "SELECT k, SUM(v * 1.5) AS s, COUNT(DISTINCT v) AS d, \
                     MEDIAN(v) AS m FROM data GROUP BY k ORDER BY s"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");

    let compute = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/features/{}/compute", feature["id"]));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client
                .post(url)
                .json(&json!({"version": "v1"}))
                .send()
                .await
                .unwrap();
            (
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    let mut slowest = Duration::ZERO;
    while !compute.is_finished() {
        let started = Instant::now();
        assert_eq!(app.get("/health").await.0, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body, took) = compute.await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("time limit"),
        "{body}"
    );
    eprintln!("compute answered in {took:?}; slowest /health meanwhile {slowest:?}");
    assert!(took < Duration::from_secs(10), "the compute ran {took:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "serving stalled {slowest:?}"
    );
    let (_, versions) = app
        .get(&format!("/api/v1/features/{}/versions", feature["id"]))
        .await;
    assert_eq!(versions, json!([]));
    // The cancelled query's engine thread reports in when its current operator ends; the
    // process must still be there afterwards (it once aborted on a dropped result channel).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.get("/health").await.0, StatusCode::OK);
}
