//! History benchmark: starts feature-store on a fresh SQLite, stores 1M rows over 30 days for
//! 10k entities, times one compute and a backfill of 30 daily snapshots, then times training
//! sets over HTTP, Parquet in and out: 1M and 100k rows against one feature of 10 value
//! columns, and 1M rows against 10 features of one column. Prints one table.
//!
//! Usage: cargo run --release --example bench_history -- [--server target/release/feature-store]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const ENTITIES: usize = 10_000;
const STORED_ROWS: usize = 1_000_000;
const DAYS: i64 = 30;
/// 2024-01-01T00:00:00Z in microseconds.
const START_US: i64 = 1_704_067_200_000_000;
const DAY_US: i64 = 86_400_000_000;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, Error> {
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?.to_vec();
        if !status.is_success() {
            return Err(format!("{what}: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        Ok(serde_json::from_slice(&self.send(req, path).await?)?)
    }
}

/// A simple deterministic generator, so runs compare.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn parquet(frame: &mut DataFrame) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(frame)?;
    Ok(out)
}

fn stored_rows() -> Result<DataFrame, Error> {
    let mut seed = 7;
    let mut users = Vec::with_capacity(STORED_ROWS);
    let mut ts = Vec::with_capacity(STORED_ROWS);
    for i in 0..STORED_ROWS {
        users.push(format!("u{}", i % ENTITIES));
        ts.push(START_US + (lcg(&mut seed) as i64 % (DAYS * DAY_US)));
    }
    let mut columns = vec![
        Column::new("user_id".into(), users),
        Int64Chunked::from_vec("ts".into(), ts)
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
    ];
    for v in 0..10 {
        let values: Vec<f64> = (0..STORED_ROWS)
            .map(|i| ((i * (v + 3)) % 1000) as f64)
            .collect();
        columns.push(Column::new(format!("v{v}").into(), values));
    }
    Ok(DataFrame::new(STORED_ROWS, columns)?)
}

fn label_rows(n: usize) -> Result<Vec<u8>, Error> {
    let mut seed = 11;
    let mut users = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        users.push(format!(
            "u{}",
            lcg(&mut seed) as usize % (ENTITIES + ENTITIES / 10)
        ));
        ts.push(START_US + (lcg(&mut seed) as i64 % ((DAYS + 1) * DAY_US)));
        labels.push((lcg(&mut seed) % 2) as i64);
    }
    let mut frame = DataFrame::new(
        n,
        vec![
            Column::new("entity_id".into(), users),
            Int64Chunked::from_vec("timestamp".into(), ts)
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                .into_column(),
            Column::new("label".into(), labels),
        ],
    )?;
    parquet(&mut frame)
}

/// Median wall time of `runs` training-set calls; also the output's shape.
async fn training_set(
    api: &Api,
    refs: &[String],
    body: &[u8],
    runs: usize,
) -> Result<(f64, usize, usize), Error> {
    let query: Vec<String> = refs.iter().map(|r| format!("features={r}")).collect();
    let url = format!("{}/api/v1/training-sets?{}", api.base, query.join("&"));
    let mut times = Vec::new();
    let mut shape = (0, 0);
    for _ in 0..runs {
        let started = Instant::now();
        let req = api
            .http
            .post(&url)
            .header("content-type", "application/vnd.apache.parquet")
            .header("accept", "application/vnd.apache.parquet")
            .body(body.to_vec());
        let out = api.send(req, "training set").await?;
        times.push(started.elapsed().as_secs_f64());
        let frame = ParquetReader::new(std::io::Cursor::new(out)).finish()?;
        shape = (frame.height(), frame.width());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], shape.0, shape.1))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let server = args
        .windows(2)
        .find(|w| w[0] == "--server")
        .map_or("target/release/feature-store".to_string(), |w| w[1].clone());
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
            .env("MAX_BODY_BYTES", "268435456")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    for _ in 0..300 {
        if api
            .http
            .get(format!("{}/health", api.base))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut schema = serde_json::Map::new();
    schema.insert("user_id".into(), json!("string"));
    schema.insert("ts".into(), json!("datetime"));
    for v in 0..10 {
        schema.insert(format!("v{v}"), json!("float"));
    }
    let table = api
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "events", "event_time_column": "ts", "schema_definition": schema}),
        )
        .await?["id"]
        .as_i64()
        .ok_or("no table id")?;
    let body = parquet(&mut stored_rows()?)?;
    let req = api
        .http
        .post(format!("{}/api/v1/raw-tables/{table}/data", api.base))
        .header("content-type", "application/vnd.apache.parquet")
        .body(body);
    api.send(req, "upload").await?;

    let wide: Vec<String> = (0..10).map(|v| format!("AVG(v{v}) AS f{v}")).collect();
    let wide_sql = format!(
        "SELECT user_id, {} FROM data GROUP BY user_id",
        wide.join(", ")
    );
    let mut features = vec![("wide".to_string(), wide_sql)];
    for v in 0..10 {
        features.push((
            format!("one{v}"),
            format!("SELECT user_id, AVG(v{v}) AS f FROM data GROUP BY user_id"),
        ));
    }
    let end =
        chrono::DateTime::from_timestamp_micros(START_US + (DAYS - 1) * DAY_US).ok_or("time")?;
    let mut compute_s = 0.0;
    let mut backfill_s = 0.0;
    for (i, (name, sql)) in features.iter().enumerate() {
        let id = api
            .post("/api/v1/features", &json!({"name": name, "raw_table_id": table, "entity_key": "user_id", "computation_logic": sql}))
            .await?["id"]
            .as_i64()
            .ok_or("no feature id")?;
        let started = Instant::now();
        let v = api
            .post(
                &format!("/api/v1/features/{id}/compute"),
                &json!({"version": "v1"}),
            )
            .await?;
        if i == 0 {
            compute_s = started.elapsed().as_secs_f64();
        }
        let version = v["feature_version_id"].as_i64().ok_or("no version")?;
        let started = Instant::now();
        api.post(
            &format!("/api/v1/features/{id}/versions/{version}/backfill"),
            &json!({"start": "2024-01-01T00:00:00Z", "end": end.to_rfc3339(), "every_seconds": 86400}),
        )
        .await?;
        if i == 0 {
            backfill_s = started.elapsed().as_secs_f64();
        }
    }

    let million = label_rows(1_000_000)?;
    let hundred_k = label_rows(100_000)?;
    let wide_ref = vec!["wide".to_string()];
    let narrow: Vec<String> = (0..10).map(|v| format!("one{v}")).collect();
    let (t_1m, rows_1m, cols_1m) = training_set(&api, &wide_ref, &million, 3).await?;
    let (t_100k, _, _) = training_set(&api, &wide_ref, &hundred_k, 5).await?;
    let (t_10f, _, cols_10f) = training_set(&api, &narrow, &million, 3).await?;

    println!("| measurement | figure | target |");
    println!("|---|---|---|");
    println!("| compute, 1M stored rows -> 10k vectors x 10 values | {compute_s:.2} s | - |");
    println!("| backfill, 30 daily snapshots over the same rows | {backfill_s:.2} s ({:.1} x the compute) | <= 30 x |", backfill_s / compute_s);
    println!("| training set, 1M rows x 1 feature of 10 columns, Parquet in and out | {t_1m:.3} s ({rows_1m} rows x {cols_1m} columns) | <= 0.5 s |");
    println!("| training set, 100k rows, same feature | {t_100k:.3} s | <= 0.1 s |");
    println!("| training set, 1M rows x 10 features of 1 column | {t_10f:.3} s ({cols_10f} columns) | <= 1 s |");
    Ok(())
}
