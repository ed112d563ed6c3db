//! One scheduler across replicas: the lease moves to a survivor when its holder is killed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{eventually, fresh_database, sample_rows, wait_for};
use crate::process::{get, post, seed, Server};

/// Whether the server at `base` says it holds the scheduler lease.
async fn leads(base: &str) -> bool {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .any(|l| l.starts_with("feature_store_scheduler_leader ") && l.ends_with(" 1"))
}

/// Which of `servers` holds the lease, waiting up to 10 s for one to take it.
async fn leader_among(servers: &[&Server]) -> Option<usize> {
    wait_for(10, || async {
        for (i, s) in servers.iter().enumerate() {
            if leads(&s.base).await {
                return Some(i);
            }
        }
        None
    })
    .await
}

#[tokio::test]
async fn killing_the_scheduling_replica_hands_the_lease_over_and_refreshes_go_on() {
    let (url, _dir) = fresh_database().await;
    let env = [("SCHEDULER_LEASE_SECONDS", "1")];
    let mut servers = vec![
        Server::start_env(&url, None, &env).await,
        Server::start_env(&url, None, &env).await,
    ];
    let refs: Vec<&Server> = servers.iter().collect();
    let at = leader_among(&refs)
        .await
        .expect("one replica takes the lease");
    let mut leader = servers.remove(at);
    let survivor = servers.remove(0);
    assert!(!leads(&survivor.base).await, "both replicas hold the lease");

    let base = survivor.base.clone();
    let (status, table) = post(
        &base,
        "/api/v1/raw-tables",
        &json!({"name": "user_transactions", "schema_definition":
            {"user_id": "string", "transaction_amount": "float", "transaction_date": "string"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let table = table["id"].as_i64().unwrap();
    post(
        &base,
        "/api/v1/ingest",
        &json!({"raw_table_id": table, "data": sample_rows()}),
    )
    .await;
    let (_, feature) = post(
        &base,
        "/api/v1/features",
        &json!({"name": "avg", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": "SELECT user_id, AVG(transaction_amount) AS a FROM data GROUP BY user_id"}),
    )
    .await;
    let feature = feature["id"].as_i64().unwrap();

    leader.kill();
    let started = std::time::Instant::now();
    let took_over = eventually(10, || leads(&survivor.base)).await;
    assert!(took_over, "the survivor never took the lease");
    // Expiry (one lease, 1 s) plus one tick (250 ms), with room for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}, more than two lease periods and a tick",
        started.elapsed()
    );

    // The survivor schedules: a version made after the handover, never computed by anyone, is
    // computed by a refresh. (Made before, the old holder could have refreshed it already.)
    let (status, version) = post(
        &base,
        &format!("/api/v1/features/{feature}/versions"),
        &json!({"version": "v1", "refresh_every_seconds": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let path = "/api/v1/feature-vectors?entity_id=user_001&feature_name=avg";
    let served = wait_for(10, || async {
        let (status, body) = get(&base, path).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await
    .expect("the survivor never refreshed the version");
    assert_eq!(served["feature_values"]["a"], 112.875);
    assert_eq!(served["stale"], false);
    // The job is recorded succeeded by the publish that made the vector servable.
    let (_, jobs) = get(&base, "/api/v1/jobs?status=succeeded").await;
    assert_eq!(jobs[0]["kind"], "refresh", "{jobs}");
    assert_eq!(jobs[0]["version_id"], version["id"], "{jobs}");
}

#[tokio::test]
async fn a_job_whose_replica_died_is_marked_failed_by_the_scheduler() {
    let (url, _dir) = fresh_database().await;
    let env = [("SCHEDULER_LEASE_SECONDS", "1")];
    let seeding = Server::start_env(&url, None, &env).await;
    let (_, feature, _) = seed(&seeding.base).await;
    drop(seeding);
    // The compute stops for good inside its publish: its job is running, and will never end.
    let mut dying = Server::start_env(&url, Some("publish-before-commit"), &env).await;
    let base = dying.base.clone();
    let compute = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/features/{feature}/compute"))
            .json(&json!({"version": "v2"}))
            .send()
            .await
    });
    dying.wait_for_failpoint().await;
    dying.kill();
    assert!(
        compute.await.unwrap().is_err(),
        "the killed compute was answered"
    );

    // Nothing in the killed process could record the end: only the survivor's scheduler can.
    let survivor = Server::start_env(&url, None, &env).await;
    let job = wait_for(10, || async {
        let (_, jobs) = get(&survivor.base, "/api/v1/jobs?limit=1").await;
        (jobs[0]["status"] == "failed").then(|| jobs[0].clone())
    })
    .await
    .expect("the abandoned job was never marked failed");
    assert_eq!(job["kind"], "compute");
    assert!(job["error"].as_str().unwrap().contains("replica"), "{job}");
    assert!(job["finished_at"].is_string());
}
