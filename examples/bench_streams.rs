//! Streams benchmark: feature-store on a fresh SQLite follows a NATS JetStream stream (or, with
//! `--kafka`, a Kafka topic of `--partitions` partitions, one by default) while
//! this program publishes RATE transaction messages a second for DURATION seconds over
//! ENTITIES users, into a table with an aggregation feature (sum and count of the amount over
//! 1h by user). It prints:
//!
//! - events published, committed (the table's row count) and rejected: they must be equal, 0;
//! - publish-to-committed latency (p50, p99, max): from each message's publish to the first
//!   `GET .../stream` that shows its offset committed (polled every 5 ms), the moment its
//!   event is in every replica's next answer;
//! - publish-to-served latency (p50, p99, max): every 20 ms the publisher sends one more event
//!   for the entity `probe`; from its publish to the first GET of the aggregation feature
//!   whose count includes it (polled every 2 ms);
//! - the committed rate over the run, and the stream's own events/s;
//! - wrk's cached GET of the aggregation feature during the run (req/s, p99), if wrk is there.
//!
//! The run starts once the stream is `running` and the feature has answered once.
//!
//! Usage: cargo run --release --example bench_streams -- [--server PATH] [--nats nats://...]
//!        [--kafka host:port [--partitions 1]] [--rate 50000] [--duration 60] [--entities 1000000]
//!        [--batch-ms 100]
//! Needs a NATS server with JetStream (`nats-server -js`), or with `--kafka` a Kafka-protocol
//! broker (`tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url
//! tcp://127.0.0.1:9092`, the binary `.ci/run` installs in ~/.cache/feature-store-tansu).

use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The broker's acknowledgement of one message.
type Ack = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Where the benchmark publishes.
#[derive(Clone)]
enum Sink {
    Nats {
        js: Box<jetstream::Context>,
        subject: String,
    },
    Kafka {
        producer: FutureProducer,
        topic: String,
        /// Messages go to the topic's partitions in turn: message i to partition i mod this.
        partitions: i32,
        sent: Arc<std::sync::atomic::AtomicU64>,
    },
}

impl Sink {
    async fn publish(&self, payload: String) -> Result<Ack, Error> {
        match self {
            Sink::Nats { js, subject } => {
                let ack = js.publish(subject.clone(), payload.into()).await?;
                Ok(Box::pin(async move {
                    ack.await?;
                    Ok(())
                }))
            }
            Sink::Kafka {
                producer,
                topic,
                partitions,
                sent,
            } => {
                let i = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let partition = (i % *partitions as u64) as i32;
                let delivery = producer
                    .send_result(
                        FutureRecord::<(), String>::to(topic)
                            .partition(partition)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)?;
                Ok(Box::pin(async move {
                    delivery
                        .await
                        .map_err(|_| "a delivery was cancelled")?
                        .map_err(|(e, _)| e)?;
                    Ok(())
                }))
            }
        }
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or(default.to_string(), |w| w[1].clone())
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let server = arg(&args, "--server", "target/release/feature-store");
    let nats_url = arg(&args, "--nats", "nats://127.0.0.1:4222");
    let kafka = arg(&args, "--kafka", "");
    let partitions: i32 = arg(&args, "--partitions", "1").parse()?;
    let rate: u64 = arg(&args, "--rate", "50000").parse()?;
    let duration: u64 = arg(&args, "--duration", "60").parse()?;
    let entities: u64 = arg(&args, "--entities", "1000000").parse()?;
    let batch_ms: u64 = arg(&args, "--batch-ms", "100").parse()?;

    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = Proc(
        Command::new(&server)
            .env(
                "DATABASE_URL",
                format!("sqlite:{}/bench.db", dir.path().display()),
            )
            .env("PORT", port.to_string())
            .env("REDIS_URL", "")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(std::fs::File::create(
                dir.path().join("server.log"),
            )?))
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                return Err::<Value, Error>(format!("{path}: {status} {body}").into());
            }
            Ok(body)
        }
    };

    let table = call(
        reqwest::Method::POST,
        "/api/v1/raw-tables".into(),
        Some(
            json!({"name": "tx", "event_time_column": "ts", "schema_definition":
            {"user_id": "string", "amount": "float", "ts": "datetime"}}),
        ),
    )
    .await?;
    let table = table["id"].as_i64().ok_or("table id")?;
    call(
        reqwest::Method::POST,
        "/api/v1/features".into(),
        Some(
            json!({"name": "spend", "raw_table_id": table, "entity_key": "user_id",
            "aggregations": [{"column": "amount", "function": "sum", "windows": ["1h"]},
                             {"column": "amount", "function": "count", "windows": ["1h"]}]}),
        ),
    )
    .await?;

    let name = format!("BENCH_{}", uuid::Uuid::new_v4().simple());
    let (sink, source) = if kafka.is_empty() {
        let js = jetstream::new(async_nats::connect(&nats_url).await?);
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::Memory,
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await?;
        let subject = format!("{name}.tx");
        (
            Sink::Nats {
                js: Box::new(js),
                subject,
            },
            json!({"type": "nats", "url": nats_url, "stream": name}),
        )
    } else {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .create()?;
        for made in admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?
        {
            made.map_err(|(topic, e)| format!("topic {topic}: {e}"))?;
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        (
            Sink::Kafka {
                producer,
                topic: name.clone(),
                partitions,
                sent: Arc::default(),
            },
            json!({"type": "kafka", "brokers": kafka, "topic": name}),
        )
    };
    let mut source = source;
    source["max_batch_interval_ms"] = json!(batch_ms);
    source["max_batch_events"] = json!(100000);
    let stream_path = format!("/api/v1/raw-tables/{table}/stream");
    call(reqwest::Method::PUT, stream_path.clone(), Some(source)).await?;
    // How many messages each lane's committed offset covers: NATS sequences start at 1, Kafka
    // offsets at 0.
    let lanes = match &sink {
        Sink::Kafka { partitions, .. } => *partitions as usize,
        Sink::Nats { .. } => 1,
    };
    let covered = |stream: &Value| -> Vec<i64> {
        (0..lanes)
            .map(|lane| {
                let offset = stream["partitions"][lane]["committed_offset"].as_i64();
                match (&sink, offset) {
                    (Sink::Kafka { .. }, Some(o)) => o + 1,
                    (_, o) => o.unwrap_or(0),
                }
            })
            .collect()
    };

    // Warm up: the stream's reader running and the feature's online state built, so the run
    // measures the steady state, not the first second.
    for _ in 0..500 {
        let stream = call(reqwest::Method::GET, stream_path.clone(), None).await?;
        if stream["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call(
        reqwest::Method::GET,
        "/api/v1/feature-vectors?feature_name=spend&entity_id=probe".into(),
        None,
    )
    .await?;

    // The publish instant of each offset (sequence n at index n - 1). Every other 10 ms tick
    // also publishes one probe event.
    let regular = rate * duration;
    let per_tick = (rate / 100).max(1);
    let ticks = regular.div_ceil(per_tick);
    let total = regular + ticks.div_ceil(2);
    let (probe_tx, mut probes) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let published: Arc<Mutex<Vec<Instant>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let publisher = {
        let (sink, published) = (sink.clone(), published.clone());
        tokio::spawn(async move {
            let mut seed = 7u64;
            let start = Instant::now();
            let tick = Duration::from_millis(10);
            let mut sent = 0u64;
            let mut probe = 0u64;
            let mut acks = Vec::new();
            while sent < regular {
                let index = sent / per_tick;
                let due = start + tick * index as u32;
                tokio::time::sleep_until(due.into()).await;
                if index.is_multiple_of(2) {
                    probe += 1;
                    let payload = json!({"user_id": "probe", "amount": 1.0,
                        "ts": chrono::Utc::now().to_rfc3339()})
                    .to_string();
                    acks.push(sink.publish(payload).await?);
                    let at = Instant::now();
                    if let Ok(mut p) = published.lock() {
                        p.push(at);
                    }
                    let _ = probe_tx.send((probe, at));
                }
                for _ in 0..per_tick.min(regular - sent) {
                    let user = lcg(&mut seed) % entities;
                    let amount = (lcg(&mut seed) % 10_000) as f64 / 100.0;
                    let payload = json!({"user_id": format!("u{user}"), "amount": amount,
                        "ts": chrono::Utc::now().to_rfc3339()})
                    .to_string();
                    acks.push(sink.publish(payload).await?);
                    if let Ok(mut p) = published.lock() {
                        p.push(Instant::now());
                    }
                    sent += 1;
                }
                // Well under async-nats's 5,000 acknowledgements in flight: a publish past
                // them waits for one, and none is awaited until here.
                if acks.len() >= 2_000 {
                    for ack in acks.drain(..) {
                        ack.await?;
                    }
                }
            }
            for ack in acks {
                ack.await?;
            }
            if std::env::var("BENCH_DEBUG").is_ok() {
                eprintln!("published {sent} events and {probe} probes");
            }
            Ok::<Duration, Error>(start.elapsed())
        })
    };

    // wrk on the aggregation feature's GET, during the run.
    let wrk = Command::new("wrk")
        .args([
            "-t1",
            "-c16",
            &format!("-d{}s", duration.min(30)),
            "--latency",
        ])
        .arg(format!(
            "{base}/api/v1/feature-vectors?feature_name=spend&entity_id=u1"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok();

    // Each probe: poll its entity's count until it includes the probe.
    let watcher = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let url = format!("{base}/api/v1/feature-vectors?feature_name=spend&entity_id=probe");
            let mut served: Vec<f64> = Vec::new();
            let mut count = 0u64;
            while let Some((k, at)) = probes.recv().await {
                let give_up = Instant::now() + Duration::from_secs(30);
                while count < k && Instant::now() < give_up {
                    let body: Value = http.get(&url).send().await?.json().await?;
                    count = body["feature_values"]["amount_count_1h"]
                        .as_u64()
                        .unwrap_or(0);
                    if count < k {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                let ms = at.elapsed().as_secs_f64() * 1000.0;
                if std::env::var("BENCH_DEBUG").is_ok() && ms > 100.0 {
                    eprintln!("probe {k}: {ms:.0} ms");
                }
                served.push(ms);
            }
            Ok::<Vec<f64>, Error>(served)
        })
    };

    // Poll the committed offset; each newly committed offset's latency is now - its publish.
    let mut latencies: Vec<f64> = Vec::with_capacity(total as usize);
    // Message i went to lane i mod `lanes` as that lane's (i div `lanes`)th.
    let mut seen_in: Vec<i64> = vec![0; lanes];
    let mut seen = 0i64;
    let started = Instant::now();
    let mut last: Value = Value::Null;
    while (seen as u64) < total && started.elapsed() < Duration::from_secs(duration + 120) {
        let stream = call(reqwest::Method::GET, stream_path.clone(), None).await?;
        let committed = covered(&stream);
        let now = Instant::now();
        for (lane, (c, seen_lane)) in committed.iter().zip(seen_in.iter_mut()).enumerate() {
            if *c > *seen_lane {
                if let Ok(p) = published.lock() {
                    for k in *seen_lane..*c {
                        if let Some(at) = p.get(k as usize * lanes + lane) {
                            latencies.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                        }
                    }
                }
                *seen_lane = *c;
            }
        }
        seen = seen_in.iter().sum();
        if std::env::var("BENCH_DEBUG").is_ok() && last != stream {
            eprintln!("{:?} {stream}", started.elapsed());
        }
        last = stream;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let publish_time = publisher.await??;
    // The stream is held in the NATS server's memory for an hour otherwise.
    if let Sink::Nats { js, .. } = &sink {
        let _ = js.delete_stream(&name).await;
    }
    let mut served = watcher.await??;
    served.sort_by(f64::total_cmp);
    let run_time = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let preview = call(
        reqwest::Method::GET,
        format!("/api/v1/raw-tables/{table}/data?limit=1"),
        None,
    )
    .await?;

    let broker = match sink {
        Sink::Nats { .. } => "NATS JetStream",
        Sink::Kafka { partitions, .. } => &format!("Kafka ({partitions} partition(s))"),
    };
    println!("streams benchmark: {broker} -> feature-store (SQLite), {rate} events/s for {duration} s, {entities} entities, batches of {batch_ms} ms");
    println!(
        "published           {total} in {:.1} s ({:.0}/s)",
        publish_time.as_secs_f64(),
        total as f64 / publish_time.as_secs_f64()
    );
    println!(
        "committed rows      {}  (rejected {}, committed offsets {})",
        preview["total_rows"],
        last["rejected"],
        Value::Array(
            (0..lanes)
                .map(|lane| last["partitions"][lane]["committed_offset"].clone())
                .collect()
        )
    );
    println!(
        "committed rate      {:.0}/s over the run; stream's own events/s at the end {}",
        seen as f64 / run_time.as_secs_f64(),
        last["events_per_second"]
    );
    println!(
        "publish->committed  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} events)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!(
        "publish->served     p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} probes)",
        percentile(&served, 0.5),
        percentile(&served, 0.99),
        served.last().copied().unwrap_or(f64::NAN),
        served.len()
    );
    if let Some(wrk) = wrk {
        let out = wrk.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = text
            .lines()
            .find(|l| l.starts_with("Requests/sec"))
            .unwrap_or("")
            .to_string();
        let p99 = text
            .lines()
            .find(|l| l.trim_start().starts_with("99%"))
            .unwrap_or("")
            .trim()
            .to_string();
        println!("aggregation GET during the run (wrk -t1 -c16): {rps}  p99 {p99}");
    }
    Ok(())
}
