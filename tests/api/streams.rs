//! Raw tables that follow a NATS JetStream stream, against the real NATS server
//! (`TEST_NATS_URL`, by default the one on 127.0.0.1:4222 that `.ci/run` starts): every message
//! lands once, bad ones are set aside with their reasons, a SIGKILLed committer's replica takes
//! over without losing or repeating a message.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use polars::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fixtures::sql_feature;
use crate::helpers::{eventually, fresh_database, spawn_app, spawn_app_with, wait_for, TestApp};
use crate::process::{follow, get, post, stream_replicas, Server};
use feature_store::config::{NatsAuth, NatsTls};

use crate::tls::Certificates;

fn nats_url() -> String {
    std::env::var("TEST_NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
}

/// A JetStream stream of this test's own (in memory, gone within the hour), and a publisher.
struct Nats {
    url: String,
    name: String,
    js: jetstream::Context,
}

impl Nats {
    async fn new() -> Nats {
        let url = nats_url();
        let client = async_nats::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("NATS at {url} (TEST_NATS_URL): {e}"));
        let name = format!("FS_{}", uuid::Uuid::new_v4().simple());
        Nats::create(url, client, &name, stream::StorageType::Memory).await
    }

    /// A stream `name` (subjects `name.>`) on the server `client` is connected to, at `url`.
    async fn create(
        url: String,
        client: async_nats::Client,
        name: &str,
        storage: stream::StorageType,
    ) -> Nats {
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{name}.>")],
            storage,
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .expect("create the JetStream stream");
        Nats {
            url,
            name: name.to_string(),
            js,
        }
    }

    fn source(&self, batch_ms: u32) -> Value {
        json!({"type": "nats", "url": self.url, "stream": self.name,
               "subject": format!("{}.tx", self.name), "max_batch_interval_ms": batch_ms})
    }

    /// Publish each payload and wait for the server's acknowledgements.
    async fn publish(&self, payloads: impl IntoIterator<Item = String>) {
        let mut acks = Vec::new();
        for payload in payloads {
            acks.push(
                self.js
                    .publish(format!("{}.tx", self.name), payload.into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("the stream acknowledges the message");
        }
    }
}

/// A transaction message: user `u{seq % 10}`, amount `seq`, group `g` (for counting).
pub(crate) fn tx(seq: i64) -> String {
    json!({"user_id": format!("u{}", seq % 10), "seq": seq, "amount": seq as f64, "grp": "g"})
        .to_string()
}

pub(crate) fn tx_table() -> Value {
    json!({"name": "tx", "schema_definition":
        {"user_id": "string", "seq": "int", "amount": "float", "grp": "string"}})
}

impl TestApp {
    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Make `table` follow `source`; it must be accepted. Returns the answer.
    pub(crate) async fn follow(&self, table: i64, source: &Value) -> Value {
        let (status, body) = self
            .put(&format!("/api/v1/raw-tables/{table}/stream"), source)
            .await;
        assert_eq!(status, StatusCode::OK, "{source} -> {body}");
        body
    }

    /// The stream's state once `done` holds for it (waiting up to a minute).
    pub(crate) async fn stream_once(&self, table: i64, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/raw-tables/{table}/stream");
        let found = wait_for(60, || async {
            let (_, stream) = self.get(&path).await;
            done(&stream).then_some(stream)
        })
        .await;
        match found {
            Some(stream) => stream,
            None => panic!("the stream never got there: {}", self.get(&path).await.1),
        }
    }
}

/// A port nothing listens on now (bound, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The `seq` values the table holds, in order.
pub(crate) async fn seqs(app: &TestApp, table: i64) -> Vec<i64> {
    let (status, preview) = app
        .get(&format!("/api/v1/raw-tables/{table}/data?limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    sorted_seqs(&preview)
}

/// The `seq` values of a table preview's rows, in order.
fn sorted_seqs(preview: &Value) -> Vec<i64> {
    let mut seqs: Vec<i64> = preview["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test]
async fn a_table_follows_a_nats_stream_and_holds_every_message_once_beside_http_ingest() {
    let app = spawn_app().await;
    let nats = Nats::new().await;
    let table = app.create_table(tx_table()).await;
    // Messages published before the table follows the stream are read too.
    nats.publish((1..=50).map(tx)).await;

    let body = app.follow(table, &nats.source(50)).await;
    assert_eq!(body["type"], "nats");
    assert_eq!(body["format"], "json");
    assert_eq!(body["max_batch_events"], 10_000);
    assert_eq!(body["max_batch_interval_ms"], 50);

    nats.publish((51..=100).map(tx)).await;
    app.ingested(
        table,
        json!([{"user_id": "http", "seq": 1000, "amount": 1.0, "grp": "h"}]),
    )
    .await;
    let stream = app
        .stream_once(table, |s| s["partitions"][0]["committed_offset"] == 100)
        .await;
    assert_eq!(stream["status"], "running", "{stream}");
    assert_eq!(stream["events_committed"], 100, "{stream}");
    assert_eq!(stream["rejected"], 0, "{stream}");
    assert_eq!(stream["partitions"][0]["partition"], nats.name.as_str());
    assert!(stream["committer"].is_string(), "{stream}");

    let expected: Vec<i64> = (1..=100).chain([1000]).collect();
    assert_eq!(seqs(&app, table).await, expected);
}

#[tokio::test]
async fn bad_messages_are_set_aside_with_their_reasons_and_the_stream_goes_on() {
    let app = spawn_app().await;
    let nats = Nats::new().await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &nats.source(50)).await;
    nats.publish([
        tx(1),
        "not json".to_string(),
        json!({"user_id": "u1", "seq": 3}).to_string(),
        json!({"user_id": "u1", "seq": 4, "amount": "lots", "grp": "g"}).to_string(),
        tx(5),
    ])
    .await;

    let stream = app
        .stream_once(table, |s| s["partitions"][0]["committed_offset"] == 5)
        .await;
    assert_eq!(stream["rejected"], 3, "{stream}");
    assert_eq!(stream["events_committed"], 2, "{stream}");
    assert_eq!(seqs(&app, table).await, [1, 5]);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("feature_store_stream_rejected_total{raw_table=\"tx\"} 3"),
        "{metrics}"
    );

    // The rejected dataset is a Delta table any engine reads: offset, reason, bytes as sent.
    let offline = &app.state.offline;
    let location = offline
        .resolve(stream["rejected_location"].as_str().expect("location"))
        .expect("a location");
    let pinned = offline.pin_delta(&location).await.expect("a Delta table");
    let mut frames = Vec::new();
    for file in &pinned.files {
        let bytes = std::fs::read(file).expect("a local file");
        frames.push(
            ParquetReader::new(std::io::Cursor::new(bytes))
                .finish()
                .expect("Parquet"),
        );
    }
    let mut rejected = frames.remove(0);
    for f in frames {
        rejected.vstack_mut_owned(f).expect("same columns");
    }
    let rejected = rejected
        .sort(["offset"], Default::default())
        .expect("sorted");
    let offsets: Vec<i64> = rejected
        .column("offset")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(offsets, [2, 3, 4]);
    let reasons: Vec<&str> = rejected
        .column("reason")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|r| r.expect("a reason"))
        .collect();
    assert!(
        reasons[0].starts_with("the message is not valid JSON"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], "Missing required columns: amount, grp");
    assert_eq!(reasons[2], "Column amount should be float, got str");
    let payload = rejected
        .column("payload")
        .unwrap()
        .binary()
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec();
    assert_eq!(payload, b"not json");
}

#[tokio::test]
async fn a_stream_is_refused_with_a_reason_where_it_cannot_work_and_stops_when_deleted() {
    let app = spawn_app().await;
    let nats = Nats::new().await;
    let table = app.create_table(tx_table()).await;
    let path = format!("/api/v1/raw-tables/{table}/stream");
    let no_schema = app.create_table(json!({"name": "loose"})).await;

    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["detail"],
        format!("Raw table with ID {table} does not follow a stream")
    );

    let refusals = [
        (
            json!({"type": "kafka", "brokers": "b:9092", "topic": "t", "partition": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"type": "kafka"}), StatusCode::BAD_REQUEST),
        (
            json!({"type": "kafka", "brokers": "kafka://b:9092", "topic": "t"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "kafka", "brokers": "b:9092", "topic": "t", "stream": "S"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "nats", "stream": "S"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "nats", "url": "nats://u:secret@127.0.0.1:4222", "stream": "S"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "nats", "url": nats.url, "stream": "a.b"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "nats", "url": nats.url, "stream": "S", "format": "avro"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"type": "nats", "url": nats.url, "stream": "S", "max_batch_events": 0}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, expected) in refusals {
        let (status, answer) = app.put(&path, &body).await;
        assert_eq!(status, expected, "{body} -> {answer}");
        assert!(
            answer["detail"].is_string() || answer["detail"].is_array(),
            "{answer}"
        );
        assert!(!answer.to_string().contains("secret"), "{answer}");
    }
    let (status, body) = app
        .put(
            &format!("/api/v1/raw-tables/{no_schema}/stream"),
            &nats.source(50),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("schema_definition"),
        "{body}"
    );
    let (status, _) = app
        .put("/api/v1/raw-tables/999999/stream", &nats.source(50))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // None of the refusals made the table follow anything.
    assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND);

    let (status, _) = app.put(&path, &nats.source(50)).await;
    assert_eq!(status, StatusCode::OK);
    nats.publish([tx(1)]).await;
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 1)
        .await;
    let (status, _) = app.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path).await.0, StatusCode::NOT_FOUND);
    // Following again resumes after what was committed: the first message is not read twice.
    nats.publish([tx(2)]).await;
    let (status, _) = app.put(&path, &nats.source(50)).await;
    assert_eq!(status, StatusCode::OK);
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 2)
        .await;
    assert_eq!(seqs(&app, table).await, [1, 2]);
}

#[tokio::test]
async fn a_broker_that_is_not_there_makes_the_stream_failing_with_the_reason() {
    let app = spawn_app().await;
    let table = app.create_table(tx_table()).await;
    // A port nothing listens on: bound, then released.
    let port = free_port();
    let (status, _) = app
        .put(
            &format!("/api/v1/raw-tables/{table}/stream"),
            &json!({"type": "nats", "url": format!("nats://127.0.0.1:{port}"), "stream": "S"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stream = app.stream_once(table, |s| s["status"] == "failing").await;
    assert!(
        stream["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{stream}"
    );
    // Serving is unaffected.
    assert_eq!(app.get("/api/v1/raw-tables").await.0, StatusCode::OK);
}

/// The stream's committer as one of `servers` (its lease holder names the process id).
pub(crate) fn committer_among(stream: &Value, servers: &[&Server]) -> Option<usize> {
    let holder = stream["committer"].as_str()?;
    servers
        .iter()
        .position(|s| holder.split(':').nth(1) == Some(&s.child.id().to_string()))
}

#[tokio::test]
async fn killing_the_committing_replica_mid_stream_loses_and_repeats_nothing() {
    const MESSAGES: i64 = 3000;
    let (mut servers, _dir) = stream_replicas().await;
    let nats = Nats::new().await;
    let base = servers[0].base.clone();
    let table = tx_table_on(&base).await;
    let mut source = nats.source(20);
    source["max_batch_events"] = json!(100);
    let path = follow(&base, table, &source).await;

    let publisher = {
        let nats = Nats {
            url: nats.url.clone(),
            name: nats.name.clone(),
            js: nats.js.clone(),
        };
        tokio::spawn(async move {
            for chunk in (1..=MESSAGES).collect::<Vec<_>>().chunks(100) {
                nats.publish(chunk.iter().copied().map(tx)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // In the middle of the run: some batches committed, not all.
    let refs: Vec<&Server> = servers.iter().collect();
    let committing = wait_for(60, || async {
        let (_, stream) = get(&base, &path).await;
        let committed = stream["partitions"][0]["committed_offset"]
            .as_i64()
            .unwrap_or(0);
        committer_among(&stream, &refs).filter(|_| committed >= 300)
    })
    .await;
    let committing = committing.expect("the stream never committed a few batches");
    let mut killed = servers.remove(committing);
    killed.kill();
    let survivor = servers.remove(0);
    publisher.await.expect("published");

    let base = survivor.base.clone();
    let done = wait_for(60, || async {
        let (_, stream) = get(&base, &path).await;
        (stream["partitions"][0]["committed_offset"] == MESSAGES).then_some(stream)
    })
    .await;
    let last = match done {
        Some(stream) => stream,
        None => panic!(
            "the survivor never took over: {}",
            get(&base, &path).await.1
        ),
    };
    assert!(
        committer_among(&last, &[&survivor]).is_some(),
        "the survivor commits now: {last}"
    );
    let (_, preview) = get(&base, &format!("/api/v1/raw-tables/{table}/data?limit=1")).await;
    assert_eq!(preview["total_rows"], MESSAGES, "{preview}");

    // Every message once: as many distinct `seq` values as rows.
    let (status, feature) = post(
        &base,
        "/api/v1/features",
        &sql_feature(
            "counts",
            table,
            "grp",
            "SELECT grp, COUNT(*) AS n, COUNT(DISTINCT seq) AS d, MAX(seq) AS top \
             FROM data GROUP BY grp",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    let feature = feature["id"].as_i64().unwrap();
    let (status, body) = post(
        &base,
        &format!("/api/v1/features/{feature}/compute"),
        &json!({"version": "v1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, vector) = get(
        &base,
        "/api/v1/feature-vectors?feature_name=counts&entity_id=g",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vector}");
    assert_eq!(
        vector["feature_values"],
        json!({"n": MESSAGES, "d": MESSAGES, "top": MESSAGES}),
        "{vector}"
    );
}

/// A NATS server of this test's own, with JetStream kept in `dir`, on `port`; killed on drop.
struct OwnNats(std::process::Child);

impl OwnNats {
    /// With `token`, clients must present it; with `tls`, they must speak TLS, trust `ca` and
    /// present a certificate it signed.
    async fn start(
        port: u16,
        dir: &std::path::Path,
        token: Option<&str>,
        tls: Option<&Certificates>,
    ) -> OwnNats {
        let program = ["/usr/sbin/nats-server", "nats-server"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .arg("--version")
                    .output()
                    .is_ok()
            })
            .expect("nats-server is installed (.ci/run installs Debian's)");
        let child = std::process::Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .args(token.map(|t| ["--auth", t]).into_iter().flatten())
            .args(
                tls.map(|c| {
                    [
                        "--tls".to_string(),
                        "--tlscert".to_string(),
                        c.path("broker.pem"),
                        "--tlskey".to_string(),
                        c.path("broker.key"),
                        "--tlsverify".to_string(),
                        "--tlscacert".to_string(),
                        c.path("ca.pem"),
                    ]
                })
                .into_iter()
                .flatten(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        let url = format!("nats://127.0.0.1:{port}");
        let up = wait_for(30, || async {
            let options = match token {
                Some(t) => async_nats::ConnectOptions::with_token(t.to_string()),
                None => async_nats::ConnectOptions::new(),
            };
            let options = match tls {
                Some(c) => tls_client(options, c),
                None => options,
            };
            options
                .connect(&url)
                .await
                .map_err(|e| eprintln!("nats-server on {port}: {e}"))
                .ok()
        })
        .await;
        assert!(up.is_some(), "nats-server on {port} did not come up");
        OwnNats(child)
    }
}

/// `options` speaking TLS: trusting the test's CA, presenting its client certificate.
fn tls_client(options: async_nats::ConnectOptions, c: &Certificates) -> async_nats::ConnectOptions {
    feature_store::app::install_tls_provider();
    options
        .require_tls(true)
        .add_root_certificates(c.path("ca.pem").into())
        .add_client_certificate(c.path("client.pem").into(), c.path("client.key").into())
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_broker_that_goes_away_makes_the_stream_failing_and_it_resumes_when_the_broker_returns() {
    let app = spawn_app().await;
    let store = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let broker = OwnNats::start(port, store.path(), None, None).await;
    // File storage: the stream outlives the server.
    let connect = || async { async_nats::connect(&url).await.expect("connect") };
    let nats = Nats::create(
        url.clone(),
        connect().await,
        "OUTAGE",
        stream::StorageType::File,
    )
    .await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &nats.source(50)).await;
    nats.publish((1..=10).map(tx)).await;
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 10)
        .await;

    drop(broker);
    let failing = app.stream_once(table, |s| s["status"] == "failing").await;
    assert!(
        failing["reason"].as_str().unwrap_or("").contains(&url),
        "{failing}"
    );
    // Serving and HTTP ingest are unaffected meanwhile.
    app.ingested(
        table,
        json!([{"user_id": "http", "seq": 1000, "amount": 1.0, "grp": "h"}]),
    )
    .await;

    let _broker = OwnNats::start(port, store.path(), None, None).await;
    let nats = Nats {
        url: url.clone(),
        name: "OUTAGE".into(),
        js: jetstream::new(connect().await),
    };
    nats.publish((11..=20).map(tx)).await;
    let back = app
        .stream_once(table, |s| {
            s["partitions"][0]["committed_offset"] == 20 && s["status"] == "running"
        })
        .await;
    assert_eq!(back["reason"], Value::Null, "{back}");
    let expected: Vec<i64> = (1..=20).chain([1000]).collect();
    assert_eq!(seqs(&app, table).await, expected);
}

#[tokio::test]
async fn the_nats_credentials_come_from_the_environment_and_never_from_a_request() {
    const TOKEN: &str = "s3cr3t-nats-token";
    let store = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _broker = OwnNats::start(port, store.path(), Some(TOKEN), None).await;
    let client = async_nats::ConnectOptions::with_token(TOKEN.into())
        .connect(&url)
        .await
        .expect("connect with the token");
    let nats = Nats::create(url, client, "AUTH", stream::StorageType::Memory).await;
    nats.publish([tx(1)]).await;

    // Configured with the token (NATS_TOKEN): the stream is read.
    let app = spawn_app_with(|c| c.nats_auth = NatsAuth::Token(TOKEN.into())).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &nats.source(50)).await;
    let stream = app
        .stream_once(table, |s| s["partitions"][0]["committed_offset"] == 1)
        .await;
    assert!(!stream.to_string().contains(TOKEN), "{stream}");

    // Without it, the server refuses, and the stream says so.
    let other = spawn_app().await;
    let table = other.create_table(tx_table()).await;
    other.follow(table, &nats.source(50)).await;
    let failing = other.stream_once(table, |s| s["status"] == "failing").await;
    assert!(
        failing["reason"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("authorization"),
        "{failing}"
    );
}

#[tokio::test]
async fn a_nats_server_that_asks_for_tls_is_read_with_the_services_certificates_and_refused_without(
) {
    let certificates = Certificates::make();
    let store = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("tls://127.0.0.1:{port}");
    let _broker = OwnNats::start(port, store.path(), None, Some(&certificates)).await;
    let client = tls_client(async_nats::ConnectOptions::new(), &certificates)
        .connect(&url)
        .await
        .expect("connect with TLS");
    let nats = Nats::create(url, client, "SECURE", stream::StorageType::Memory).await;
    nats.publish((1..=3).map(tx)).await;

    // Configured with the CA and a client certificate (NATS_TLS_*): the stream is read.
    let app = spawn_app_with(|c| {
        c.nats_tls = NatsTls {
            ca_file: Some(certificates.path("ca.pem")),
            cert_file: Some(certificates.path("client.pem")),
            key_file: Some(certificates.path("client.key")),
        }
    })
    .await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &nats.source(50)).await;
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 3)
        .await;
    assert_eq!(seqs(&app, table).await, [1, 2, 3]);

    // A service that does not trust the server's CA refuses it, and says why.
    let doubting = spawn_app().await;
    let table = doubting.create_table(tx_table()).await;
    doubting.follow(table, &nats.source(50)).await;
    let failing = doubting
        .stream_once(table, |s| s["status"] == "failing")
        .await;
    let reason = failing["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("could not connect to tls://"),
        "{failing}"
    );
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn the_console_shows_a_tables_stream_its_state_and_lag() {
    let app = spawn_app().await;
    let nats = Nats::new().await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &nats.source(50)).await;
    nats.publish((1..=3).map(tx)).await;
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 3)
        .await;

    let (dom, requested) =
        crate::ui::browse_async(app.url(&format!("/ui/raw-tables/{table}"))).await;
    assert!(dom.contains(r#"id="stream""#), "{dom}");
    assert!(dom.contains(r#"data-status="running""#), "{dom}");
    assert!(dom.contains(r#"data-lag="0""#), "{dom}");
    assert!(dom.contains(&nats.name), "{dom}");
    crate::ui::assert_only_this_server(&app.base, &requested);

    // A table that follows no stream shows no stream card (its 404 is expected, not an error).
    let plain = app
        .create_table(json!({"name": "plain", "schema_definition": {"a": "int"}}))
        .await;
    let (dom, _) = crate::ui::browse_async(app.url(&format!("/ui/raw-tables/{plain}"))).await;
    assert!(dom.contains(r#"id="schema""#), "{dom}");
    assert!(!dom.contains(r#"id="stream""#), "{dom}");
}

/// The offsets in a rejected dataset, read as a Delta reader would without a checkpoint: the
/// files its log adds, in order.
fn rejected_offsets(location: &str) -> Vec<i64> {
    let log = std::path::Path::new(location).join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .expect("a Delta log")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let mut offsets = Vec::new();
    for commit in commits {
        for line in std::fs::read_to_string(&commit).expect("a commit").lines() {
            let action: Value = serde_json::from_str(line).expect("an action");
            if let Some(path) = action["add"]["path"].as_str() {
                let bytes =
                    std::fs::read(std::path::Path::new(location).join(path)).expect("a file");
                let frame = ParquetReader::new(std::io::Cursor::new(bytes))
                    .finish()
                    .expect("Parquet");
                offsets.extend(
                    frame
                        .column("offset")
                        .unwrap()
                        .i64()
                        .unwrap()
                        .into_no_null_iter(),
                );
            }
        }
    }
    offsets
}

#[tokio::test]
async fn a_crash_between_the_rejected_commit_and_the_rows_commit_keeps_each_message_once() {
    let (url, _dir) = fresh_database().await;
    // Stopped for good inside the rows' commit, after its rejected messages were committed.
    let mut first = Server::start_with(&url, Some("ingest-before-commit")).await;
    let nats = Nats::new().await;
    let (status, table) = post(&first.base, "/api/v1/raw-tables", &tx_table()).await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let table = table["id"].as_i64().unwrap();
    let path = follow(&first.base, table, &nats.source(50)).await;
    nats.publish([tx(1), "bad".to_string(), tx(3)]).await;
    first.wait_for_failpoint().await;
    let (_, stream) = get(&first.base, &path).await;
    let location = stream["rejected_location"]
        .as_str()
        .expect("location")
        .to_string();
    assert_eq!(
        rejected_offsets(&location),
        [2],
        "the rejected commit landed: {stream}"
    );
    first.kill();

    let second = Server::start(&url).await;
    nats.publish(["worse".to_string(), tx(5)]).await;
    let base = second.base.clone();
    let done = wait_for(60, || async {
        let (_, stream) = get(&base, &path).await;
        (stream["partitions"][0]["committed_offset"] == 5).then_some(stream)
    })
    .await;
    assert!(
        done.is_some(),
        "never committed: {}",
        get(&base, &path).await.1
    );
    let (_, preview) = get(&base, &format!("/api/v1/raw-tables/{table}/data?limit=100")).await;
    assert_eq!(sorted_seqs(&preview), [1, 3, 5], "{preview}");
    assert_eq!(rejected_offsets(&location), [2, 4]);
}

/// A payment event at `ts` (RFC 3339) for `user`, message number `seq`.
pub(crate) fn payment(seq: i64, user: &str, amount: f64, ts: &str) -> String {
    json!({"user_id": user, "seq": seq, "amount": amount, "ts": ts}).to_string()
}

/// A table of payments with an event time, and an aggregation feature over it (a filter, so
/// the filter is applied to events before their commit too).
pub(crate) async fn streamed_spend(app: &TestApp) -> i64 {
    let table = app
        .create_table(json!({"name": "payments", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "seq": "int", "amount": "float",
                "ts": "datetime"}}))
        .await;
    app.create_feature(
        json!({"name": "spend", "raw_table_id": table, "entity_key": "user_id",
        "filter": "amount > 0",
        "aggregations": [
            {"column": "amount", "function": "sum", "windows": ["1d"]},
            {"column": "amount", "function": "count", "windows": ["1d"]},
            {"column": "amount", "function": "last", "windows": ["1d"]}]}),
    )
    .await;
    table
}

/// The online values of `spend` for `user` on `app`.
pub(crate) async fn spend_of(app: &TestApp, user: &str) -> Value {
    let (status, body) = app
        .get(&format!(
            "/api/v1/feature-vectors?feature_name=spend&entity_id={user}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn streamed_events_are_served_on_every_replica_before_their_commit_and_once_after_it() {
    let app = spawn_app().await;
    let replica = crate::helpers::spawn_replica(&app).await;
    let nats = Nats::new().await;
    let table = streamed_spend(&app).await;
    // Both replicas hold the feature's (empty) state before any event arrives.
    for server in [&app, &replica] {
        assert_eq!(
            spend_of(server, "u1").await["feature_values"]["amount_count_1d"],
            0
        );
    }
    // A batch commits at its tenth message: the first six wait for it.
    let mut source = nats.source(60_000);
    source["max_batch_events"] = json!(10);
    app.follow(table, &source).await;
    let now = chrono::Utc::now();
    let at = |secs: i64| (now - chrono::Duration::seconds(secs)).to_rfc3339();
    nats.publish([
        payment(1, "u1", 1.0, &at(50)),
        payment(2, "u1", 2.0, &at(40)),
        payment(3, "u1", 0.0, &at(30)),
        // Late, and tied in time with the next one: `last` is the one published last.
        payment(4, "u1", 4.0, &at(20)),
        payment(5, "u1", 5.0, &at(20)),
        payment(6, "u1", 6.0, &at(60)),
    ])
    .await;
    for server in [&app, &replica] {
        let served = wait_for(30, || async {
            let body = spend_of(server, "u1").await;
            (body["feature_values"]["amount_count_1d"] == 5).then_some(body)
        })
        .await
        .expect("the streamed events are served before their commit");
        assert_eq!(served["feature_values"]["amount_sum_1d"], 18.0);
        assert_eq!(served["feature_values"]["amount_last_1d"], 5.0);
    }
    // Not committed yet: the table holds none of them.
    assert_eq!(seqs(&app, table).await, Vec::<i64>::new());
    let (_, stream) = app.get(&format!("/api/v1/raw-tables/{table}/stream")).await;
    assert!(
        stream["partitions"][0]["committed_offset"].is_null(),
        "{stream}"
    );

    // Four more make the batch: it commits, and each event still counts once.
    nats.publish((7..=10).map(|seq| payment(seq, "u2", 1.0, &at(10))))
        .await;
    app.stream_once(table, |s| s["partitions"][0]["committed_offset"] == 10)
        .await;
    assert_eq!(seqs(&app, table).await, (1..=10).collect::<Vec<_>>());
    each_counts_once_as_a_training_set_says(&app, &replica).await;
}

/// After the commit of `streamed_spend`'s ten payments (six of u1, one filtered out and two
/// tied; four of u2): both replicas count each event once, and what is served equals a
/// recompute from the table at the same instant.
pub(crate) async fn each_counts_once_as_a_training_set_says(app: &TestApp, replica: &TestApp) {
    for server in [app, replica] {
        let u1 = spend_of(server, "u1").await;
        assert_eq!(u1["feature_values"]["amount_count_1d"], 5, "{u1}");
        assert_eq!(u1["feature_values"]["amount_sum_1d"], 18.0, "{u1}");
        let u2 = spend_of(server, "u2").await;
        assert_eq!(u2["feature_values"]["amount_count_1d"], 4, "{u2}");
    }
    let served = spend_of(replica, "u1").await;
    let (status, training) = app
        .post(
            "/api/v1/training-sets",
            &json!({"features": ["spend"], "rows": [
                {"entity_id": "u1", "timestamp": served["evaluated_at"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{training}");
    assert_eq!(
        training["rows"][0]["features"]["spend"],
        served["feature_values"]
    );
}

/// On a server process: the table `tx_table` declares; its id.
pub(crate) async fn tx_table_on(base: &str) -> i64 {
    let (status, table) = post(base, "/api/v1/raw-tables", &tx_table()).await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    table["id"].as_i64().unwrap()
}

/// On a server process: a table of payments and the aggregation feature `spend` over it (sum
/// and count of the amount over a day, by user); the table's id.
pub(crate) async fn spend_table(base: &str) -> i64 {
    let (status, table) = post(
        base,
        "/api/v1/raw-tables",
        &json!({"name": "payments", "event_time_column": "ts", "schema_definition":
            {"user_id": "string", "seq": "int", "amount": "float", "ts": "datetime"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{table}");
    let table = table["id"].as_i64().unwrap();
    let (status, feature) = post(
        base,
        "/api/v1/features",
        &json!({"name": "spend", "raw_table_id": table, "entity_key": "user_id",
            "aggregations": [{"column": "amount", "function": "sum", "windows": ["1d"]},
                             {"column": "amount", "function": "count", "windows": ["1d"]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{feature}");
    table
}

/// `spend`'s count for `user` on the server at `base`.
pub(crate) async fn count_of(base: &str, user: &str) -> Option<i64> {
    let (status, body) = get(
        base,
        &format!("/api/v1/feature-vectors?feature_name=spend&entity_id={user}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["feature_values"]["amount_count_1d"].as_i64()
}

#[tokio::test]
async fn events_served_before_a_killed_committers_commit_count_once_after_the_takeover() {
    let (mut servers, _dir) = stream_replicas().await;
    let nats = Nats::new().await;
    let base = servers[0].base.clone();
    let table = spend_table(&base).await;
    let mut source = nats.source(60_000);
    source["max_batch_events"] = json!(10);
    let path = follow(&base, table, &source).await;

    let ts = chrono::Utc::now().to_rfc3339();
    nats.publish((1..=6).map(|seq| payment(seq, "u1", seq as f64, &ts)))
        .await;
    for server in &servers {
        let served = eventually(30, || async {
            count_of(&server.base, "u1").await == Some(6)
        })
        .await;
        assert!(served, "{} never served the six events", server.base);
    }
    // The committer dies holding them uncommitted; the other replica takes over.
    let refs: Vec<&Server> = servers.iter().collect();
    let (_, stream) = get(&base, &path).await;
    let committing = committer_among(&stream, &refs).expect("a committer");
    servers.remove(committing).kill();
    let survivor = servers.remove(0);
    nats.publish((7..=10).map(|seq| payment(seq, "u2", 1.0, &ts)))
        .await;
    let committed = wait_for(60, || async {
        let (_, stream) = get(&survivor.base, &path).await;
        (stream["partitions"][0]["committed_offset"] == 10).then_some(stream)
    })
    .await;
    assert!(
        committed.is_some(),
        "{}",
        get(&survivor.base, &path).await.1
    );
    let (_, preview) = get(
        &survivor.base,
        &format!("/api/v1/raw-tables/{table}/data?limit=100"),
    )
    .await;
    assert_eq!(sorted_seqs(&preview), (1..=10).collect::<Vec<_>>());
    assert_eq!(count_of(&survivor.base, "u1").await, Some(6));
    assert_eq!(count_of(&survivor.base, "u2").await, Some(4));
}
