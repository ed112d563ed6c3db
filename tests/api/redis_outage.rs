//! A Redis that goes away under load: no request fails, and Redis serves again once it is back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{eventually, seeded, spawn_app_with, wait_for_cache_mode};
use crate::redis_server::RedisServer;

/// Needs the `redis-server` binary; `.ci/run` runs it (`--include-ignored`).
#[tokio::test]
#[ignore = "needs redis-server on the PATH; .ci/run runs it"]
async fn serving_survives_redis_stopping_under_load_and_uses_it_again_when_back() {
    let mut redis = RedisServer::start_free();
    let port = redis.port;
    let app = spawn_app_with(|c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis_key_prefix = "outage:".into();
    })
    .await;
    wait_for_cache_mode(&app.state, "redis").await;
    let (_, feature) = seeded(&app).await;
    app.compute(feature, "v1").await;

    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..8 {
        let (client, base) = (app.client.clone(), app.base.clone());
        let (failures, served, slowest) = (failures.clone(), served.clone(), slowest.clone());
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let users = ["user_001", "user_002", "user_003"];
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let url = format!(
                    "{base}/api/v1/feature-vectors?entity_id={}&feature_name=avg_transaction_amount",
                    users[i % 3]
                );
                let started = Instant::now();
                let ok = matches!(client.get(url).send().await, Ok(r) if r.status() == StatusCode::OK);
                let took = started.elapsed();
                if ok {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
                i += 1;
            }
        }));
    }
    // Each phase waits for evidence that it happened under load: answers before the fault,
    // the cache noticing Redis gone, answers while it is gone, Redis taken back, answers after.
    let served_more = |n: usize| {
        let served = served.clone();
        let from = served.load(Ordering::Relaxed);
        async move { eventually(20, || async { served.load(Ordering::Relaxed) >= from + n }).await }
    };
    assert!(served_more(100).await, "no load before the fault");
    redis.stop();
    wait_for_cache_mode(&app.state, "memory (redis unreachable)").await;
    assert!(
        served_more(100).await,
        "nothing served while Redis was away"
    );
    let mut redis = RedisServer::start(port);
    wait_for_cache_mode(&app.state, "redis").await;
    assert!(served_more(100).await, "nothing served once Redis was back");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed while Redis was away"
    );
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}"
    );

    let (status, _) = app
        .get("/api/v1/feature-vectors?entity_id=user_002&feature_name=avg_transaction_amount")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        redis.key_count().await > 0,
        "Redis is not used again after it came back"
    );
    redis.stop();
}
