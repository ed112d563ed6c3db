//! Spark benchmark: one table of N rows `(user_id string, amount float, n integer)` over E
//! entities, the same feature registered twice (engine `polars` and engine `spark`), each
//! computed, times printed side by side with Spark's job overhead (the same on a 1-row table);
//! every entity's vector compared across the engines (batch serving, 1,000 at a time); and a
//! cached GET's latency while the Spark compute runs.
//!
//! Needs a Spark Connect server (`tools/spark/cluster.sh start DIR` starts one on
//! 127.0.0.1:15002). Usage:
//!   cargo run --release --example bench_spark -- --server <target>/release/feature-store
//!        [--spark sc://127.0.0.1:15002] [--rows 10000000] [--entities 1000000]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SQL: &str = "SELECT user_id, SUM(amount) AS total, COUNT(*) AS cnt, MAX(n) AS max_n \
                   FROM data GROUP BY user_id";
const BODY_ROWS: usize = 2_000_000;
const BATCH: usize = 1_000;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rows `start..start + n` as one Parquet body, entities scattered.
fn body(start: usize, n: usize, entities: usize) -> Result<Vec<u8>, Error> {
    let mut seed = start as u64 + 17;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let users: Vec<String> = (start..start + n)
        .map(|i| format!("u{}", i.wrapping_mul(7919) % entities))
        .collect();
    let amounts: Vec<f64> = (0..n).map(|_| (next() % 100_000) as f64 / 100.0).collect();
    let counts: Vec<i64> = (0..n).map(|_| (next() % 1000) as i64).collect();
    let mut frame = df!("user_id" => users, "amount" => amounts, "n" => counts)?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(&mut frame)?;
    Ok(out)
}

fn flag(name: &str, default: &str) -> String {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Equal, numbers within a relative 1e-9 (the engines sum in different orders).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = flag("--server", "");
    if server.is_empty() {
        return Err("--server <path to feature-store> is required".into());
    }
    let spark = flag("--spark", "sc://127.0.0.1:15002");
    let rows: usize = flag("--rows", "10000000").parse()?;
    let entities: usize = flag("--entities", "1000000").parse()?;

    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&server)
        .env(
            "DATABASE_URL",
            format!("sqlite:{}/bench.db", dir.path().display()),
        )
        .env("DATA_DIR", dir.path().join("data"))
        .env("PORT", "0")
        .env("REDIS_URL", "")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
        .env("SPARK_CONNECT_URL", &spark)
        .env("COMPUTE_TIMEOUT_SECONDS", "1800")
        .env("MAX_BODY_BYTES", "268435456")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let _server = Proc(child);
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines.next().ok_or("the server exited")??;
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().ok_or("no addr")?.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let post = |path: String, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body: Value = resp.json().await?;
            if !status.is_success() {
                return Err::<Value, Error>(format!("{status}: {body}").into());
            }
            Ok(body)
        }
    };
    let schema = json!({"user_id": "string", "amount": "float", "n": "integer"});
    let table = post(
        "/api/v1/raw-tables".into(),
        json!({"name": "events", "schema_definition": schema}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("table id")?;
    let tiny = post(
        "/api/v1/raw-tables".into(),
        json!({"name": "tiny", "schema_definition": schema}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("table id")?;
    let mut start = 0;
    while start < rows {
        let n = BODY_ROWS.min(rows - start);
        let bytes = tokio::task::spawn_blocking(move || body(start, n, entities)).await??;
        let resp = http
            .post(format!("{base}/api/v1/raw-tables/{table}/data"))
            .header("content-type", "application/vnd.apache.parquet")
            .body(bytes)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("ingest: {}", resp.text().await?).into());
        }
        start += n;
    }
    let tiny_rows = http
        .post(format!("{base}/api/v1/ingest"))
        .json(&json!({"raw_table_id": tiny, "data": [{"user_id": "u0", "amount": 1.0, "n": 1}]}))
        .send()
        .await?;
    if !tiny_rows.status().is_success() {
        return Err(format!("tiny ingest: {}", tiny_rows.text().await?).into());
    }

    let mut ids = Vec::new();
    for (name, table, engine) in [
        ("spend_polars", table, "polars"),
        ("spend_spark", table, "spark"),
        ("tiny_polars", tiny, "polars"),
        ("tiny_spark", tiny, "spark"),
    ] {
        let made = post(
            "/api/v1/features".into(),
            json!({"name": name, "raw_table_id": table, "entity_key": "user_id",
                   "computation_logic": SQL, "engine": engine}),
        )
        .await?;
        ids.push((name, made["id"].as_i64().ok_or("feature id")?));
    }
    let compute = |id: i64| {
        let post = &post;
        async move {
            let started = Instant::now();
            post(
                format!("/api/v1/features/{id}/compute"),
                json!({"version": "v1"}),
            )
            .await?;
            Ok::<_, Error>(started.elapsed())
        }
    };
    // Overhead first: the first Spark job also starts the executors.
    let warmup = compute(ids[3].1).await?;
    let tiny_polars = compute(ids[2].1).await?;
    let tiny_spark = {
        let started = Instant::now();
        post(
            format!("/api/v1/features/{}/compute", ids[3].1),
            json!({"version": "v2"}),
        )
        .await?;
        started.elapsed()
    };
    let polars = compute(ids[0].1).await?;

    // A cached GET of the polars feature, over and over while Spark computes.
    let url = format!("{base}/api/v1/feature-vectors?entity_id=u1&feature_name=spend_polars");
    http.get(&url).send().await?;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (http, url, done) = (http.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let mut took = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                if http.get(&url).send().await.is_ok() {
                    took.push(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took
        })
    };
    let spark_time = compute(ids[1].1).await?;
    done.store(true, Ordering::Relaxed);
    let mut took = reader.await?;
    took.sort();

    // Every entity's vector, both engines.
    let mut differ = 0usize;
    let mut compared = 0usize;
    let mut first = None;
    for chunk in (0..entities).collect::<Vec<_>>().chunks(BATCH) {
        let entity_ids: Vec<String> = chunk.iter().map(|i| format!("u{i}")).collect();
        let answer = post(
            "/api/v1/feature-vectors/batch".into(),
            json!({"entity_ids": entity_ids, "features": ["spend_polars", "spend_spark"]}),
        )
        .await?;
        for result in answer["results"].as_array().ok_or("results")? {
            let f = &result["features"];
            compared += 1;
            if !same(&f["spend_polars"], &f["spend_spark"]) {
                differ += 1;
                first.get_or_insert_with(|| result.clone());
            }
        }
    }

    println!("rows {rows}, entities {entities}, Spark at {spark} (this machine's local cluster)");
    println!(
        "compute, polars workers      {:>8.2} s",
        polars.as_secs_f64()
    );
    println!(
        "compute, Spark               {:>8.2} s",
        spark_time.as_secs_f64()
    );
    println!(
        "1-row table: polars {:.2} s, Spark {:.2} s (first Spark job, starting executors: {:.2} s)",
        tiny_polars.as_secs_f64(),
        tiny_spark.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "vectors compared: {compared}, differing: {differ}{}",
        first.map(|f| format!(" (first: {f})")).unwrap_or_default()
    );
    println!(
        "cached GET during the Spark compute: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
