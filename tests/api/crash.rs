//! The server process is killed (SIGKILL) in the middle of a large ingest and of a compute,
//! then restarted on the same database: nothing acknowledged is lost, nothing half-written is
//! visible.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::fresh_database;
use crate::process::{csv_rows, get, post, register_tx_table, seed, Server, FEATURE_SQL};

/// Start the binary with `env`, read its log lines until it says it is listening, stop it.
fn startup_log(env: &[(&str, &str)]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feature-store"));
    cmd.env(
        "DATABASE_URL",
        format!("sqlite:{}/log.db", dir.path().display()),
    )
    .env("PORT", "0")
    .env("REDIS_URL", "")
    .env("RUST_LOG", "info")
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start feature-store");
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let done = line.contains("listening");
            lines.push(line);
            if done {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn json_logs_are_one_object_per_line_and_an_open_public_bind_is_warned_about() {
    let lines = startup_log(&[("LOG_FORMAT", "json"), ("HOST", "0.0.0.0")]);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("API_KEYS is not set")),
        "{lines:?}"
    );
}

#[test]
fn api_keys_are_never_logged() {
    let key = "very-secret-key-0123456789";
    let lines = startup_log(&[("API_KEYS", &format!("{key}:write")), ("HOST", "0.0.0.0")]);
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains(key)), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains("API_KEYS is not set")));
}

/// What a restarted server must show after a write was killed before its COMMIT: exactly the
/// seeded state, and v1 serving its values.
async fn assert_seeded_state_only(base: &str, table: i64, feature: i64, v1: i64) {
    let (_, preview) = get(base, &format!("/api/v1/raw-tables/{table}/data?limit=1")).await;
    assert_eq!(preview["total_rows"], 100_000, "{preview}");
    let (_, versions) = get(base, &format!("/api/v1/features/{feature}/versions")).await;
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["version"], "v1");
    assert_eq!(versions[0]["entity_count"], 50_000);
    let (status, vector) = get(
        base,
        &format!("/api/v1/feature-vectors?entity_id=u7&feature_version_id={v1}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vector["feature_values"], json!({"a": 1.0, "n": 2}));
    let (status, vector) = get(
        base,
        "/api/v1/feature-vectors?entity_id=u49999&feature_name=avg",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vector["feature_version_id"], v1);
}

#[tokio::test]
async fn a_server_killed_inside_an_ingest_transaction_keeps_exactly_the_acknowledged_rows() {
    let (url, _dir) = fresh_database().await;
    let seeding = Server::start(&url).await;
    let (table, feature, v1) = seed(&seeding.base).await;
    drop(seeding);
    let mut server = Server::start_with(&url, Some("ingest-before-commit")).await;
    let base = server.base.clone();

    let big = tokio::spawn({
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/raw-tables/{table}/data"))
                .header("content-type", "text/csv")
                .body(csv_rows(200_000, 2.0))
                .send()
                .await
        }
    });
    server.wait_for_failpoint().await;
    server.kill();
    assert!(
        big.await.unwrap().is_err(),
        "the killed ingest was answered"
    );

    let server = Server::start(&url).await;
    assert_seeded_state_only(&server.base, table, feature, v1).await;
}

#[tokio::test]
async fn a_server_killed_inside_a_publish_transaction_shows_no_part_of_the_new_version() {
    let (url, _dir) = fresh_database().await;
    let seeding = Server::start(&url).await;
    let (table, feature, v1) = seed(&seeding.base).await;
    drop(seeding);
    let mut server = Server::start_with(&url, Some("publish-before-commit")).await;
    let base = server.base.clone();

    // v2 over the stored rows, then (on a new server) a recompute of v1 over other rows:
    // each is killed before its COMMIT.
    let compute = |base: String, body: Value| {
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/features/{feature}/compute"))
                .json(&body)
                .send()
                .await
        })
    };
    let v2 = compute(base, json!({"version": "v2"}));
    server.wait_for_failpoint().await;
    server.kill();
    assert!(
        v2.await.unwrap().is_err(),
        "the killed compute was answered"
    );

    let mut server = Server::start_with(&url, Some("publish-before-commit")).await;
    let recompute = compute(
        server.base.clone(),
        json!({"version": "v1", "raw_data": [
            {"user_id": "u7", "transaction_amount": 9.0, "transaction_date": "d"}]}),
    );
    server.wait_for_failpoint().await;
    server.kill();
    assert!(
        recompute.await.unwrap().is_err(),
        "the killed compute was answered"
    );

    let server = Server::start(&url).await;
    assert_seeded_state_only(&server.base, table, feature, v1).await;
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let (url, _dir) = fresh_database().await;
    // Each request's start is logged (tower_http's on_request, in the request's span).
    let mut server = Server::start_env(
        &url,
        None,
        &[("RUST_LOG", "warn,feature_store=debug,tower_http=debug")],
    )
    .await;
    let base = server.base.clone();
    let table = register_tx_table(&base).await;
    let body = csv_rows(1_000_000, 1.0);
    let in_flight = {
        let base = base.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/raw-tables/{table}/data"))
                .header("content-type", "text/csv")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let ingest_path = format!("/api/v1/raw-tables/{table}/data");
    let started = server
        .wait_for_log(move |l| l.contains("started processing request") && l.contains(&ingest_path))
        .await;
    assert!(started.is_some(), "the server never began the ingest");
    let pid = server.child.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(term.success());
    assert_eq!(
        in_flight.await.unwrap().expect("request answered"),
        StatusCode::OK
    );
    let exit = tokio::task::spawn_blocking(move || {
        let server = &mut server;
        server.child.wait()
    })
    .await
    .unwrap()
    .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
}

/// The environment of a running compute worker of `server`, read from /proc once one has
/// started (its command line names the worker subcommand, so the exec is done).
fn worker_environment(server: &Server) -> Option<Vec<String>> {
    let tasks = format!("/proc/{}/task", server.child.id());
    let children = std::fs::read_dir(&tasks).ok()?.flatten().flat_map(|task| {
        std::fs::read_to_string(task.path().join("children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    for pid in children.collect::<Vec<_>>() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(feature_store::worker::SUBCOMMAND) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        return Some(
            environ
                .split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        );
    }
    None
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn compute_workers_start_with_a_cleared_environment() {
    let (url, _dir) = fresh_database().await;
    let server = Server::start_env(
        &url,
        None,
        &[
            ("AWS_SECRET_ACCESS_KEY", "not-for-workers"),
            ("SOME_TEAM_TOKEN", "not-for-workers"),
        ],
    )
    .await;
    let base = server.base.clone();
    let table = register_tx_table(&base).await;
    let acked = reqwest::Client::new()
        .post(format!("{base}/api/v1/raw-tables/{table}/data"))
        .header("content-type", "text/csv")
        .body(csv_rows(1_000_000, 1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), StatusCode::OK);
    let (_, feature) = post(
        &base,
        "/api/v1/features",
        &json!({"name": "avg", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": FEATURE_SQL}),
    )
    .await;
    let feature = feature["id"].as_i64().unwrap();
    // Each compute runs a worker for a while; look at it while it runs.
    let mut seen = None;
    for _ in 0..5 {
        let compute = {
            let base = base.clone();
            tokio::spawn(async move {
                post(
                    &base,
                    &format!("/api/v1/features/{feature}/compute"),
                    &json!({"version": "v1"}),
                )
                .await
            })
        };
        while !compute.is_finished() && seen.is_none() {
            seen = worker_environment(&server);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(compute.await.unwrap().0, StatusCode::OK);
        if seen.is_some() {
            break;
        }
    }
    let environment = seen.expect("never saw a compute worker running");
    let names: Vec<&str> = environment
        .iter()
        .map(|v| v.split('=').next().unwrap_or(v))
        .collect();
    assert!(names.contains(&"POLARS_MAX_THREADS"), "{names:?}");
    for secret in [
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "SOME_TEAM_TOKEN",
        "RUST_LOG",
    ] {
        assert!(!names.contains(&secret), "a worker got {secret}: {names:?}");
    }
    assert!(
        environment.iter().all(|v| !v.contains("not-for-workers")),
        "{environment:?}"
    );
}
