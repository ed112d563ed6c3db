//! A feature-store server as its own process, for tests that kill it or run several: start
//! it on a database (learning its address from its `listening` log line), wait for log lines,
//! SIGKILL it; plain HTTP helpers for it; and a seeded table, feature and version.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use tempfile::TempDir;

use crate::helpers::{data_dir_for, fresh_database};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// Its log lines (stdout), as they come.
    log: Option<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    pub(crate) async fn start(database_url: &str) -> Server {
        Server::start_with(database_url, None).await
    }

    /// `failpoint`: where the server stops for good (`src/failpoint.rs`), logging that it did.
    pub(crate) async fn start_with(database_url: &str, failpoint: Option<&str>) -> Server {
        Server::start_env(database_url, failpoint, &[]).await
    }

    /// As `start_with`, with more environment variables. The server binds port 0 and the
    /// test learns the port from its `listening` line: no port is picked, released and hoped
    /// to stay free.
    pub(crate) async fn start_env(
        database_url: &str,
        failpoint: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        use std::io::{BufRead, BufReader};
        let data_dir = data_dir_for(database_url)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut child = Command::new(env!("CARGO_BIN_EXE_feature-store"))
            .env("DATABASE_URL", database_url)
            .env("DATA_DIR", data_dir)
            .env("PORT", "0")
            .env("REDIS_URL", "")
            .env("RUST_LOG", "warn,feature_store=info")
            .env("FEATURE_STORE_FAILPOINT", failpoint.unwrap_or(""))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start feature-store");
        let (tx, log) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // Owned by `Server` at once, so its Drop kills and reaps it on every path.
        let mut server = Server {
            child,
            base: String::new(),
            log: Some(log),
        };
        let line = server
            .wait_for_log(|l| l.contains("listening"))
            .await
            .expect("feature-store did not start");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("the listening line names its address")
            .to_string();
        server.base = format!("http://{addr}");
        server
    }

    /// Wait (at most a minute) for a log line that `wanted` accepts; the lines before it are
    /// passed over. `None` if the server's log ended or went quiet first.
    pub(crate) async fn wait_for_log(
        &mut self,
        wanted: impl Fn(&str) -> bool + Send + 'static,
    ) -> Option<String> {
        let log = self
            .log
            .take()
            .expect("the server's log is read by one waiter at a time");
        let (log, found) = tokio::task::spawn_blocking(move || {
            while let Ok(line) = log.recv_timeout(Duration::from_secs(60)) {
                if wanted(&line) {
                    return (log, Some(line));
                }
            }
            (log, None)
        })
        .await
        .unwrap();
        self.log = Some(log);
        found
    }

    /// Wait until the server logs that it reached its failpoint: proof that the write began
    /// and has not committed.
    pub(crate) async fn wait_for_failpoint(&mut self) {
        let found = self.wait_for_log(|l| l.contains("failpoint reached")).await;
        assert!(found.is_some(), "the server never reached its failpoint");
    }

    /// SIGKILL: no shutdown, no lease given back.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two server processes over one fresh database, each stream's lease lasting a second, so a
/// killed committer's streams are taken over within about two. The directory (the second
/// value) must live as long as the servers.
pub(crate) async fn stream_replicas() -> (Vec<Server>, Option<Arc<TempDir>>) {
    let (url, dir) = fresh_database().await;
    let env = [("STREAM_LEASE_SECONDS", "1")];
    let servers = vec![
        Server::start_env(&url, None, &env).await,
        Server::start_env(&url, None, &env).await,
    ];
    (servers, dir)
}

pub(crate) async fn post(base: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Make raw table `table` follow `source` on the server at `base`; the stream's path.
pub(crate) async fn follow(base: &str, table: i64, source: &Value) -> String {
    let path = format!("/api/v1/raw-tables/{table}/stream");
    let resp = reqwest::Client::new()
        .put(format!("{base}{path}"))
        .json(source)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK, "{source}");
    path
}

pub(crate) async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    let resp = reqwest::get(format!("{base}{path}")).await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn register_tx_table(base: &str) -> i64 {
    let (_, table) = post(
        base,
        "/api/v1/raw-tables",
        &json!({"name": "tx", "schema_definition":
        {"user_id": "string", "transaction_amount": "float", "transaction_date": "string"}}),
    )
    .await;
    table["id"].as_i64().expect("table id")
}

pub(crate) fn csv_rows(n: usize, amount: f64) -> String {
    let mut csv = String::from("user_id,transaction_amount,transaction_date\n");
    for i in 0..n {
        csv.push_str(&format!("u{},{amount},2024-01-01\n", i % 50_000));
    }
    csv
}

pub(crate) const FEATURE_SQL: &str =
    "SELECT user_id, AVG(transaction_amount) AS a, COUNT(*) AS n FROM data GROUP BY user_id";

/// A table with 100k acknowledged rows (50k users, amount 1.0) and `avg` computed as v1.
pub(crate) async fn seed(base: &str) -> (i64, i64, i64) {
    let table = register_tx_table(base).await;
    let acked = reqwest::Client::new()
        .post(format!("{base}/api/v1/raw-tables/{table}/data"))
        .header("content-type", "text/csv")
        .body(csv_rows(100_000, 1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), StatusCode::OK);
    let (_, feature) = post(
        base,
        "/api/v1/features",
        &json!({"name": "avg", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": FEATURE_SQL}),
    )
    .await;
    let feature = feature["id"].as_i64().unwrap();
    let (status, v1) = post(
        base,
        &format!("/api/v1/features/{feature}/compute"),
        &json!({"version": "v1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    (table, feature, v1["feature_version_id"].as_i64().unwrap())
}
