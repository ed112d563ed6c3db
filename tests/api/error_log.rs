//! A server error is logged at the default level with its request id and its cause chain, so
//! a 500 a client reports can be traced; the client sees no internals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn a_500_is_logged_with_its_request_id_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broken.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env("PORT", "0")
        .env("REDIS_URL", "")
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start feature-store");
    let (lines, logged) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_line_with = |needle: &str| loop {
        match logged.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    };
    let listening: Value = serde_json::from_str(&next_line_with("listening")).unwrap();
    let addr = listening["fields"]["addr"]
        .as_str()
        .expect("the listening line names its address")
        .to_string();

    // Break the database under the running server: its registry table is gone.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DROP TABLE raw_tables").unwrap();
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/raw-tables"))
        .header("x-request-id", "trace-this-500")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"detail": "Internal Server Error"}));

    let line: Value = serde_json::from_str(&next_line_with("request failed")).unwrap();
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["fields"]["request_id"], "trace-this-500", "{line}");
    assert_eq!(line["fields"]["route"], "/api/v1/raw-tables", "{line}");
    assert_eq!(line["fields"]["method"], "GET", "{line}");
    let cause = line["fields"]["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("no such table: raw_tables"), "{line}");

    // A request that sent no id is logged under the id its answer carries.
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/raw-tables"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let given = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!given.is_empty());
    let line: Value = serde_json::from_str(&next_line_with("request failed")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["fields"]["request_id"], given.as_str(), "{line}");
}
