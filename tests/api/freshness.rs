//! Freshness: `data_as_of` and `stale` on every answer, scheduled refresh, the jobs log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, seeded, spawn_app_with, spawn_replica_with, test_redis_url, TestApp,
};

/// A short lease, so the scheduler ticks every 250 ms.
async fn app_with_fast_scheduler() -> TestApp {
    spawn_app_with(|c| c.scheduler_lease = Duration::from_secs(1)).await
}

const USER_001: &str =
    "/api/v1/feature-vectors?entity_id=user_001&feature_name=avg_transaction_amount";

async fn vector(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn set_refresh(app: &TestApp, feature: i64, version: i64, every: Value) -> Value {
    let (status, body) = app
        .patch(
            &format!("/api/v1/features/{feature}/versions/{version}"),
            &json!({ "refresh_every_seconds": every }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn snapshot_kinds(app: &TestApp, feature: i64, version: i64) -> Vec<String> {
    let (status, list) = app
        .get(&format!(
            "/api/v1/features/{feature}/versions/{version}/snapshots"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn jobs(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, list) = app.get(&format!("/api/v1/jobs{query}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

/// Wait until the scheduler (whichever of `apps` holds the lease) has looked for due refreshes
/// `passes` more times: anything it would have started by then has started.
async fn scheduler_passes(apps: &[&TestApp], passes: u64) {
    let count = || {
        apps.iter()
            .map(|a| a.state.metrics.scheduler_passes.get())
            .sum::<u64>()
    };
    let start = count();
    let passed = eventually(20, || async { count() >= start + passes }).await;
    assert!(passed, "the scheduler did not look {passes} more times");
}

/// Wait until the scheduler has checked `version` `times` more times (each check records
/// `refresh_checked_at`; one that finds new rows refreshes first).
async fn checked_again(app: &TestApp, feature: i64, version: i64, times: usize) {
    let path = format!("/api/v1/features/{feature}/versions/{version}");
    let mut seen = app.get(&path).await.1["refresh_checked_at"].clone();
    for _ in 0..times {
        let before = seen.clone();
        let changed = eventually(20, || {
            let (path, before) = (&path, &before);
            async move {
                let now = app.get(path).await.1["refresh_checked_at"].clone();
                now != *before && now.is_string()
            }
        })
        .await;
        assert!(changed, "the scheduler stopped checking the version");
        seen = app.get(&path).await.1["refresh_checked_at"].clone();
    }
}

/// user_001's four sample rows sum to 451.5; one more of 1000 makes the average 290.3.
fn more_rows_for_user_001() -> Value {
    one_row_for_user_001(1000.0)
}

fn one_row_for_user_001(amount: f64) -> Value {
    json!([{"user_id": "user_001", "transaction_amount": amount, "transaction_date": "2024-02-01"}])
}

#[tokio::test]
async fn a_served_vector_says_how_fresh_it_is_and_turns_stale_on_ingest() {
    let app = app_with_fast_scheduler().await;
    let (table, feature) = seeded(&app).await;
    let computed = app.compute(feature, "v1").await;
    let fresh = vector(&app, USER_001).await;
    assert_eq!(fresh["stale"], false, "{fresh}");
    let data_as_of = fresh["data_as_of"]
        .as_str()
        .expect("data_as_of")
        .to_string();
    assert!(
        data_as_of.as_str() <= fresh["computed_at"].as_str().unwrap(),
        "{fresh}"
    );
    // The cached answer says the same.
    assert_eq!(vector(&app, USER_001).await, fresh);

    app.ingested(table, more_rows_for_user_001()).await;
    let stale = vector(&app, USER_001).await;
    assert_eq!(stale["stale"], true, "{stale}");
    assert_eq!(stale["data_as_of"], fresh["data_as_of"]);
    assert_eq!(stale["feature_values"], fresh["feature_values"]);

    let (status, batch) = app
        .post(
            "/api/v1/feature-vectors/batch",
            &json!({"entity_ids": ["user_001"], "features": ["avg_transaction_amount", "nope"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        batch["freshness"]["avg_transaction_amount"],
        json!({"data_as_of": data_as_of, "stale": true})
    );
    assert_eq!(batch["freshness"]["nope"], Value::Null);

    let version = computed["feature_version_id"].as_i64().unwrap();
    let (_, shown) = app
        .get(&format!("/api/v1/features/{feature}/versions/{version}"))
        .await;
    assert_eq!(shown["stale"], true, "{shown}");
    assert_eq!(shown["data_as_of"], json!(data_as_of));
    assert_eq!(shown["refresh_every_seconds"], Value::Null);

    // Manual versions stay stale until someone computes: nothing is scheduled.
    scheduler_passes(&[&app], 3).await;
    assert_eq!(vector(&app, USER_001).await["stale"], true);
    assert_eq!(snapshot_kinds(&app, feature, version).await, ["compute"]);

    app.compute(feature, "v1").await;
    let recomputed = vector(&app, USER_001).await;
    assert_eq!(recomputed["stale"], false, "{recomputed}");
    assert!(recomputed["data_as_of"].as_str().unwrap() > data_as_of.as_str());
    assert_eq!(recomputed["feature_values"]["avg_amount"], 290.3);
}

#[tokio::test]
async fn rows_sent_with_the_compute_have_no_data_as_of_and_stored_rows_make_them_stale() {
    let app = app_with_fast_scheduler().await;
    let table = app.register_transactions().await;
    let feature = app.create_avg_feature(table).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v1", "raw_data": crate::helpers::sample_rows()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let served = vector(&app, USER_001).await;
    assert_eq!(served["data_as_of"], Value::Null, "{served}");
    assert_eq!(served["stale"], false);
    app.ingest(table, more_rows_for_user_001()).await;
    assert_eq!(vector(&app, USER_001).await["stale"], true);
}

#[tokio::test]
async fn a_scheduled_version_refreshes_itself_after_new_rows_and_not_without_them() {
    let app = app_with_fast_scheduler().await;
    let (table, feature) = seeded(&app).await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let shown = set_refresh(&app, feature, version, json!(1)).await;
    assert_eq!(shown["refresh_every_seconds"], 1);
    assert!(shown["next_refresh_at"].is_string(), "{shown}");

    // No new rows: checks are recorded, nothing is computed.
    let checked = eventually(5, || async {
        let (_, v) = app
            .get(&format!("/api/v1/features/{feature}/versions/{version}"))
            .await;
        v["refresh_checked_at"].is_string()
    })
    .await;
    assert!(checked, "the scheduler never checked the version");
    checked_again(&app, feature, version, 2).await;
    assert_eq!(snapshot_kinds(&app, feature, version).await, ["compute"]);
    assert!(jobs(&app, "?status=running").await.is_empty());
    assert_eq!(jobs(&app, "").await.len(), 1, "only the compute is a job");

    app.ingest(table, more_rows_for_user_001()).await;
    assert_eq!(vector(&app, USER_001).await["stale"], true);
    let refreshed = eventually(10, || async {
        let v = vector(&app, USER_001).await;
        v["feature_values"]["avg_amount"] == json!(290.3) && v["stale"] == json!(false)
    })
    .await;
    assert!(refreshed, "the new row never reached the served vector");
    assert_eq!(
        snapshot_kinds(&app, feature, version).await,
        ["compute", "refresh"]
    );
    let refreshes = jobs(&app, &format!("?feature_id={feature}")).await;
    assert_eq!(refreshes[0]["kind"], "refresh", "{refreshes:?}");
    assert_eq!(refreshes[0]["status"], "succeeded");
    assert_eq!(refreshes[0]["version_id"], version);
    assert!(refreshes[0]["started_at"].is_string());
    assert!(refreshes[0]["finished_at"].is_string());

    // Back to manual: new rows stay unread.
    let manual = set_refresh(&app, feature, version, Value::Null).await;
    assert_eq!(manual["refresh_every_seconds"], Value::Null);
    assert_eq!(manual["next_refresh_at"], Value::Null);
    app.ingest(table, more_rows_for_user_001()).await;
    scheduler_passes(&[&app], 6).await;
    assert_eq!(vector(&app, USER_001).await["stale"], true);
    assert_eq!(snapshot_kinds(&app, feature, version).await.len(), 2);
}

#[tokio::test]
async fn a_refresh_that_now_fails_is_a_failed_job_and_nothing_else() {
    let app = app_with_fast_scheduler().await;
    let (table, average) = seeded(&app).await;
    // One row per user today; a second row for a user makes a duplicate entity.
    let (status, body) = app
        .post(
            "/api/v1/features",
            &json!({"name": "last_date", "raw_table_id": table, "entity_key": "user_id",
                "computation_logic": "SELECT user_id, transaction_date FROM data WHERE transaction_date = '2024-01-15'"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fragile = body["id"].as_i64().unwrap();
    let fragile_v1 = app.compute(fragile, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let average_v1 = app.compute(average, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let before = vector(
        &app,
        &format!("/api/v1/feature-vectors?entity_id=user_002&feature_version_id={fragile_v1}"),
    )
    .await;

    app.ingest(
        table,
        json!([{"user_id": "user_002", "transaction_amount": 1.0, "transaction_date": "2024-01-15"},
               {"user_id": "user_001", "transaction_amount": 1000.0, "transaction_date": "2024-02-01"}]),
    )
    .await;
    set_refresh(&app, fragile, fragile_v1, json!(1)).await;
    set_refresh(&app, average, average_v1, json!(1)).await;

    let failed = eventually(10, || async {
        !jobs(&app, &format!("?feature_id={fragile}&status=failed"))
            .await
            .is_empty()
    })
    .await;
    assert!(failed, "the failing refresh was never recorded");
    let job = &jobs(&app, &format!("?feature_id={fragile}&status=failed")).await[0];
    assert_eq!(job["kind"], "refresh");
    assert_eq!(job["version_id"], fragile_v1);
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("user_002"), "{error}");

    // The other version refreshed anyway.
    let refreshed = eventually(10, || async {
        vector(&app, USER_001).await["feature_values"]["avg_amount"] == json!(290.3)
    })
    .await;
    assert!(refreshed, "a failing refresh stopped another one");

    // What the failing version serves did not change; it says it is stale, and it backs off.
    let after = vector(
        &app,
        &format!("/api/v1/feature-vectors?entity_id=user_002&feature_version_id={fragile_v1}"),
    )
    .await;
    assert_eq!(after["feature_values"], before["feature_values"]);
    assert_eq!(after["stale"], true);
    assert_eq!(snapshot_kinds(&app, fragile, fragile_v1).await, ["compute"]);
    let (_, shown) = app
        .get(&format!("/api/v1/features/{fragile}/versions/{fragile_v1}"))
        .await;
    assert!(shown["refresh_failures"].as_i64().unwrap() >= 1, "{shown}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("feature_store_refresh_runs_total{result=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("feature_store_refresh_runs_total{result=\"succeeded\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn jobs_list_computes_and_backfills_with_their_outcome_and_filters() {
    let app = app_with_fast_scheduler().await;
    let (_, feature) = seeded(&app).await;
    let version = app.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/features/{feature}/compute"),
            &json!({"version": "v2", "raw_data": [
                {"user_id": "a", "transaction_amount": "not a number", "transaction_date": "d"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let other = app
        .create_feature(
            json!({"name": "dup", "raw_table_id": 1, "entity_key": "user_id",
                "computation_logic": "SELECT user_id, transaction_amount FROM data"}),
        )
        .await;
    let (status, refused) = app
        .post(
            &format!("/api/v1/features/{other}/compute"),
            &json!({"version": "v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let all = jobs(&app, "").await;
    // Bad input never reached a worker, so it is no job; the duplicate entity did.
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0]["feature_id"], other);
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[0]["version_id"], Value::Null);
    assert_eq!(all[0]["error"], refused["detail"]);
    assert_eq!(all[1]["kind"], "compute");
    assert_eq!(all[1]["status"], "succeeded");
    assert_eq!(all[1]["version_id"], version);
    assert_eq!(all[1]["error"], Value::Null);

    assert_eq!(jobs(&app, "?status=failed").await.len(), 1);
    assert_eq!(jobs(&app, &format!("?feature_id={feature}")).await.len(), 1);
    assert_eq!(jobs(&app, "?limit=1").await[0]["id"], all[0]["id"]);
    for bad in ["?status=done", "?limit=0", "?limit=1001"] {
        let (status, body) = app.get(&format!("/api/v1/jobs{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn refresh_periods_are_checked_on_create_and_patch() {
    let app = app_with_fast_scheduler().await;
    let (_, feature) = seeded(&app).await;
    let path = format!("/api/v1/features/{feature}/versions");
    let (status, created) = app
        .post(
            &path,
            &json!({"version": "v1", "refresh_every_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["refresh_every_seconds"], 60);
    for bad in [json!(0), json!(-5), json!(31_536_001)] {
        let (status, body) = app
            .post(
                &path,
                &json!({"version": "v2", "refresh_every_seconds": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let (status, body) = app
            .patch(
                &format!("{path}/{}", created["id"]),
                &json!({"refresh_every_seconds": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, body) = app
        .patch(&format!("{path}/{}", created["id"]), &json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, unchanged) = app.get(&format!("{path}/{}", created["id"])).await;
    assert_eq!(unchanged["refresh_every_seconds"], 60);
    // A status change leaves the period alone.
    let (status, body) = app
        .patch(
            &format!("{path}/{}", created["id"]),
            &json!({"status": "deprecated"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "deprecated");
    assert_eq!(body["refresh_every_seconds"], 60);
}

/// Both replicas schedule; the lease lets one run each refresh. Needs Redis for "both serve it
/// at once"; `.ci/run` runs it with Postgres and Redis.
#[tokio::test]
#[ignore = "needs TEST_REDIS_URL; .ci/run runs it"]
async fn two_replicas_make_exactly_one_snapshot_per_refresh_and_both_serve_it() {
    assert!(test_redis_url().is_some(), "TEST_REDIS_URL is not set");
    let a = app_with_fast_scheduler().await;
    let b = spawn_replica_with(&a, |c| c.scheduler_lease = Duration::from_secs(1)).await;
    let (table, feature) = seeded(&a).await;
    let version = a.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    set_refresh(&a, feature, version, json!(1)).await;
    // Averages of user_001: (451.5 + 1000) / 5, then (1451.5 + 348.5) / 6.
    for (round, added, amount) in [(1, 1000.0, 290.3), (2, 348.5, 300.0)] {
        b.ingest(table, one_row_for_user_001(added)).await;
        for app in [&a, &b] {
            let served = eventually(10, || async {
                let v = vector(app, USER_001).await;
                v["feature_values"]["avg_amount"] == json!(amount) && v["stale"] == json!(false)
            })
            .await;
            assert!(served, "round {round}: a replica never served the refresh");
        }
        // Several more periods pass with nothing new.
        checked_again(&a, feature, version, 2).await;
        let kinds = snapshot_kinds(&b, feature, version).await;
        assert_eq!(kinds.len(), 1 + round, "round {round}: {kinds:?}");
        let refreshes: Vec<Value> = jobs(&a, "")
            .await
            .into_iter()
            .filter(|j| j["kind"] == "refresh")
            .collect();
        assert_eq!(refreshes.len(), round, "{refreshes:?}");
    }
    let leaders: i64 = [&a, &b]
        .iter()
        .map(|app| i64::from(app.state.metrics.scheduler_leader.get() == 1))
        .sum();
    assert_eq!(leaders, 1, "exactly one replica holds the lease");
}

/// How far `text` (an RFC 3339 time) is from this test's clock.
fn off_from_now(text: &Value) -> chrono::Duration {
    let t = chrono::DateTime::parse_from_rfc3339(text.as_str().unwrap_or_else(|| panic!("{text}")))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).abs()
}

#[tokio::test]
async fn a_replica_whose_clock_is_two_hours_behind_changes_nothing() {
    let a = spawn_app_with(|c| c.refresh_scheduler = false).await;
    // The only scheduler, and a compute, on a replica whose own clock reads two hours ago.
    let b = spawn_replica_with(&a, |c| {
        c.scheduler_lease = Duration::from_secs(1);
        c.test_clock_skew_seconds = -7200;
    })
    .await;
    let (table, feature) = seeded(&a).await;
    let version = a.compute(feature, "v1").await["feature_version_id"]
        .as_i64()
        .unwrap();
    a.ingest(table, more_rows_for_user_001()).await;

    // B's compute read more rows than A's: it is the newest, so it is what is served.
    let recomputed = b.compute(feature, "v1").await;
    let off = off_from_now(&recomputed["valid_from"]);
    assert!(
        off < chrono::Duration::minutes(1),
        "valid_from is {off} off"
    );
    let (_, shown) = b
        .get(&format!("/api/v1/features/{feature}/versions/{version}"))
        .await;
    let off = off_from_now(&shown["computed_at"]);
    assert!(
        off < chrono::Duration::minutes(1),
        "computed_at is {off} off"
    );
    for app in [&a, &b] {
        let served = vector(app, USER_001).await;
        assert_eq!(served["feature_values"]["avg_amount"], 290.3, "{served}");
        assert_eq!(served["stale"], false);
    }

    // B's scheduler finds the version due when the database's clock says so.
    set_refresh(&a, feature, version, json!(1)).await;
    a.ingest(table, one_row_for_user_001(348.5)).await;
    let refreshed = eventually(10, || async {
        let v = vector(&a, USER_001).await;
        v["feature_values"]["avg_amount"] == json!(300.0) && v["stale"] == json!(false)
    })
    .await;
    assert!(
        refreshed,
        "the skewed scheduler never refreshed the version"
    );
    for job in jobs(&a, "").await {
        for field in ["created_at", "started_at", "finished_at"] {
            if job[field].is_null() {
                continue; // not there yet
            }
            let off = off_from_now(&job[field]);
            assert!(
                off < chrono::Duration::minutes(1),
                "job {field} is {off} off: {job}"
            );
        }
    }
}
