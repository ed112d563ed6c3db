//! Entities named by two columns against the workaround teams use without them (the two keys
//! concatenated into one text column), on one server in one run:
//!
//! - a cached GET of a feature keyed by (user_id, merchant_id), by its two key parameters,
//!   against a cached GET of a feature keyed by one column (wrk, alternating rounds);
//! - a training set of 1M label rows (Parquet in and out) with the two-key feature and a
//!   one-key feature, against the same set with the concatenated-key feature instead.
//!
//! The targets: the two-key GET at least 0.9 x the one-key req/s; the training set at
//! most 1.2 x the time of the one-key set. Needs wrk (apt-get install wrk).
//!
//! Usage: cargo run --release --example bench_keys -- [--server target/release/feature-store]
//!        [--rounds 3] [--duration 5]
//!        BENCH_SERVER_LOG=path keeps the server's log (where each training set's time went).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const USERS: usize = 10_000;
const MERCHANTS: usize = 100;
/// Merchants each user buys from: 100k (user, merchant) pairs.
const PER_USER: usize = 10;
const STORED_ROWS: usize = 1_000_000;
const LABELS: usize = 1_000_000;
/// Labels fall after every compute: each finds the snapshot in force.
const LABEL_US: i64 = 4_102_444_800_000_000; // 2100-01-01

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

/// `n` (user, merchant) pairs drawn from the stored ones: users, merchants and the
/// concatenated key.
fn pairs(n: usize, seed: &mut u64) -> (Vec<String>, Vec<i64>, Vec<String>) {
    let (mut users, mut merchants, mut joined) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        let user = lcg(seed) as usize % USERS;
        let merchant = (user * 7 + lcg(seed) as usize % PER_USER) % MERCHANTS;
        users.push(format!("u{user}"));
        merchants.push(merchant as i64);
        joined.push(format!("u{user}|{merchant}"));
    }
    (users, merchants, joined)
}

fn stored_rows() -> Result<DataFrame, Error> {
    let mut seed = 7;
    let (users, merchants, joined) = pairs(STORED_ROWS, &mut seed);
    let amounts: Vec<f64> = (0..STORED_ROWS).map(|i| (i % 1000) as f64 / 10.0).collect();
    Ok(DataFrame::new(
        STORED_ROWS,
        vec![
            Column::new("user_id".into(), users),
            Column::new("merchant_id".into(), merchants),
            Column::new("pair_id".into(), joined),
            Column::new("amount".into(), amounts),
        ],
    )?)
}

fn label_rows() -> Result<Vec<u8>, Error> {
    let mut seed = 11;
    let (users, merchants, joined) = pairs(LABELS, &mut seed);
    let mut frame = DataFrame::new(
        LABELS,
        vec![
            Column::new("user_id".into(), users),
            Column::new("merchant_id".into(), merchants),
            Column::new("pair_id".into(), joined),
            Int64Chunked::from_vec("timestamp".into(), vec![LABEL_US; LABELS])
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                .into_column(),
        ],
    )?;
    parquet(&mut frame)
}

async fn training_set(api: &Api, refs: &[&str], body: &[u8]) -> Result<f64, Error> {
    let query: Vec<String> = refs.iter().map(|r| format!("features={r}")).collect();
    let url = format!("{}/api/v1/training-sets?{}", api.base, query.join("&"));
    let started = Instant::now();
    let req = api
        .http
        .post(&url)
        .header("content-type", "application/vnd.apache.parquet")
        .header("accept", "application/vnd.apache.parquet")
        .body(body.to_vec());
    let out = api.send(req, "training set").await?;
    let took = started.elapsed().as_secs_f64();
    let frame = ParquetReader::new(std::io::Cursor::new(out)).finish()?;
    if frame.height() != LABELS {
        return Err(format!("{} rows answered", frame.height()).into());
    }
    Ok(took)
}

/// Requests per second of wrk on `url` (1 thread, 16 connections).
fn wrk(url: &str, duration: u64) -> Result<f64, Error> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d", &format!("{duration}s"), url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || text.contains("Non-2xx") {
        return Err(format!("wrk failed on {url}:\n{text}").into());
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output:\n{text}").into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let server = arg("--server").unwrap_or_else(|| "target/release/feature-store".into());
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let duration: u64 = arg("--duration").and_then(|v| v.parse().ok()).unwrap_or(5);
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
            .stdout(match std::env::var_os("BENCH_SERVER_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .spawn()?,
    );
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let mut up = false;
    for _ in 0..500 {
        if api
            .http
            .get(format!("{}/health", api.base))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !up {
        return Err("the server did not start".into());
    }

    let table = api
        .post(
            "/api/v1/raw-tables",
            &json!({"name": "purchases", "schema_definition": {"user_id": "string",
                "merchant_id": "integer", "pair_id": "string", "amount": "float"}}),
        )
        .await?["id"]
        .as_i64()
        .ok_or("no table id")?;
    let req = api
        .http
        .post(format!("{}/api/v1/raw-tables/{table}/data", api.base))
        .header("content-type", "application/vnd.apache.parquet")
        .body(parquet(&mut stored_rows()?)?);
    api.send(req, "upload").await?;

    let features = [
        (
            "user",
            json!("user_id"),
            "SELECT user_id, SUM(amount) AS spent, COUNT(*) AS n FROM data GROUP BY user_id",
        ),
        (
            "pair",
            json!(["user_id", "merchant_id"]),
            "SELECT user_id, merchant_id, SUM(amount) AS spent, COUNT(*) AS n FROM data GROUP BY user_id, merchant_id",
        ),
        (
            "pair_concat",
            json!("pair_id"),
            "SELECT pair_id, SUM(amount) AS spent, COUNT(*) AS n FROM data GROUP BY pair_id",
        ),
    ];
    let mut compute_s = Vec::new();
    for (name, key, sql) in &features {
        let id = api
            .post(
                "/api/v1/features",
                &json!({"name": name, "raw_table_id": table, "entity_key": key, "computation_logic": sql}),
            )
            .await?["id"]
            .as_i64()
            .ok_or("no feature id")?;
        let started = Instant::now();
        let done = api
            .post(
                &format!("/api/v1/features/{id}/compute"),
                &json!({"version": "v1"}),
            )
            .await?;
        compute_s.push((
            name,
            started.elapsed().as_secs_f64(),
            done["vectors_created"].clone(),
        ));
    }

    let one = format!(
        "{}/api/v1/feature-vectors?feature_name=user&entity_id=u42",
        api.base
    );
    let two = format!(
        "{}/api/v1/feature-vectors?feature_name=pair&user_id=u42&merchant_id={}",
        api.base,
        (42 * 7) % MERCHANTS
    );
    for url in [&one, &two] {
        let status = api.http.get(url).send().await?.status();
        if !status.is_success() {
            return Err(format!("{url}: {status}").into());
        }
    }
    let (mut one_rps, mut two_rps) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        one_rps.push(wrk(&one, duration)?);
        two_rps.push(wrk(&two, duration)?);
    }

    let labels = label_rows()?;
    let (mut native, mut joined) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        native.push(training_set(&api, &["pair", "user"], &labels).await?);
        joined.push(training_set(&api, &["pair_concat", "user"], &labels).await?);
    }

    println!(
        "{STORED_ROWS} stored rows, {USERS} users x {PER_USER} merchants each; {rounds} rounds"
    );
    for (name, secs, vectors) in &compute_s {
        println!("compute {name}: {secs:.2} s, {vectors} vectors");
    }
    println!();
    println!("| case | rounds | median | ratio (target) |");
    println!("|---|---|---|---|");
    let (o, t) = (median(one_rps.clone()), median(two_rps.clone()));
    println!(
        "| cached GET, one key (entity_id) | {} req/s | {o:.0} req/s | |",
        one_rps
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| cached GET, two keys (user_id, merchant_id) | {} req/s | {t:.0} req/s | {:.2} of one key (>= 0.9) |",
        two_rps.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", "),
        t / o
    );
    let (n, j) = (median(native.clone()), median(joined.clone()));
    println!(
        "| training set 1M rows: pair (2 keys) + user | {} s | {n:.2} s | {:.2} of one key (<= 1.2) |",
        native.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", "),
        n / j
    );
    println!(
        "| training set 1M rows: pair_concat (1 key) + user | {} s | {j:.2} s | |",
        joined
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
