//! Benchmark driver (run it through `bench/run.sh`): starts feature-store on a fresh SQLite,
//! loads synthetic data, times ingest and compute over HTTP, drives serving load with wrk next
//! to a minimal axum handler (the ceiling), and prints one table.
//!
//! Last, it measures isolation: cached GETs on a second server while feature SQL is killed at
//! its memory and time limits in compute workers, and that server's RSS meanwhile.
//!
//! Options: --server BIN --ceiling BIN --scripts DIR [--duration SECS] [--rows N] [--entities N]
//!          [--only isolation|serving] [--redis URL] [--baseline BIN [--rounds N]]
//!          [--database postgres://...]
//!
//! `--database URL` puts each server's metadata and vectors in a fresh Postgres database made
//! through that URL (dropped after), instead of a fresh SQLite file: the uncached GET and the
//! batch then read Postgres.
//!
//! `--redis URL` adds a case: cached GETs on a second replica over the same database that has
//! `REDIS_URL` set, beside the in-process figure.
//!
//! `--baseline BIN[,BIN...]` compares binaries on the serving path: it runs the serving cases
//! (no ingest timings, no isolation) for each baseline and for `--server` in turn, `--rounds`
//! times over (default 2), then prints every run and each case's ratio to the ceiling side by
//! side. Use it for any change near the serving path (docs/performance.md).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const CONNECTIONS: u32 = 16;
const THREADS: u32 = 2;
const FEATURES: usize = 10;
const UNCACHED_SECS: u64 = 4;

struct Opts {
    server: String,
    ceiling: String,
    scripts: String,
    duration: u64,
    rows: usize,
    entities: usize,
    only_isolation: bool,
    only_serving: bool,
    redis: Option<String>,
    baseline: Option<String>,
    rounds: usize,
    database: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        server: "target/release/feature-store".into(),
        ceiling: "target/release/examples/bench_ceiling".into(),
        scripts: "bench".into(),
        duration: 10,
        rows: 1_000_000,
        entities: 100_000,
        only_isolation: false,
        only_serving: false,
        redis: None,
        baseline: None,
        rounds: 2,
        database: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--server" => o.server = value,
            "--ceiling" => o.ceiling = value,
            "--scripts" => o.scripts = value,
            "--duration" => o.duration = value.parse().unwrap_or(o.duration),
            "--rows" => o.rows = value.parse().unwrap_or(o.rows),
            "--entities" => o.entities = value.parse().unwrap_or(o.entities),
            "--redis" => o.redis = Some(value).filter(|v| !v.is_empty()),
            "--baseline" => o.baseline = Some(value),
            "--rounds" => o.rounds = value.parse().unwrap_or(o.rounds).max(1),
            "--database" => o.database = Some(value).filter(|v| !v.is_empty()),
            "--only" => {
                o.only_isolation = value == "isolation";
                o.only_serving = value == "serving";
            }
            other => eprintln!("ignoring unknown option {other}"),
        }
    }
    o
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18000)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn wait_up(url: &str) -> Result<(), Error> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("{url} did not come up").into())
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {body}").into());
        }
        Ok(body)
    }

    async fn upload(&self, table: i64, content_type: &str, body: Vec<u8>) -> Result<Value, Error> {
        let resp = self
            .http
            .post(format!("{}/api/v1/raw-tables/{table}/data", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            return Err(format!("upload: {status} {body}").into());
        }
        Ok(body)
    }

    async fn table(&self, name: &str) -> Result<i64, Error> {
        let t = self
            .post(
                "/api/v1/raw-tables",
                &json!({"name": name, "schema_definition": {
                    "row_id": "integer", "user_id": "string", "amount": "float", "qty": "integer", "day": "date"}}),
            )
            .await?;
        t["id"].as_i64().ok_or_else(|| "no id".into())
    }
}

/// Synthetic rows: entity `u{i % entities}`, deterministic amounts.
fn frame(rows: usize, entities: usize) -> DataFrame {
    let row_id: Vec<i64> = (0..rows as i64).collect();
    let users: Vec<String> = (0..rows).map(|i| format!("u{}", i % entities)).collect();
    let amount: Vec<f64> = (0..rows)
        .map(|i| ((i * 7919) % 10_000) as f64 / 10.0)
        .collect();
    let qty: Vec<i64> = (0..rows).map(|i| (i % 13) as i64).collect();
    let day: Vec<String> = (0..rows)
        .map(|i| format!("2024-01-{:02}", i % 28 + 1))
        .collect();
    df!("row_id" => row_id, "user_id" => users, "amount" => amount, "qty" => qty, "day" => day)
        .expect("frame")
}

fn json_rows(rows: usize, entities: usize) -> Vec<Value> {
    (0..rows)
        .map(|i| {
            json!({"row_id": i, "user_id": format!("u{}", i % entities), "amount": ((i * 7919) % 10_000) as f64 / 10.0,
                   "qty": (i % 13) as i64, "day": format!("2024-01-{:02}", i % 28 + 1)})
        })
        .collect()
}

#[derive(Default, Clone)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The serving process's CPU time per request (user + system), in microseconds: steadier
    /// than req/s on a machine whose speed moves, and blind to what wrk costs.
    cpu_us: f64,
}

/// A process's CPU time so far (user + system), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which may hold spaces: utime and stime are the
            // 14th and 15th fields of the line, the 12th and 13th after ")".
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / USER_HZ)
        })
        .unwrap_or(f64::NAN)
}

/// Clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI we run on).
const USER_HZ: f64 = 100.0;

/// `wrk` against a server, with the server's CPU time per request.
fn wrk_on(
    pid: u32,
    url: &str,
    duration: u64,
    script: Option<(&str, Vec<String>)>,
) -> Result<Load, Error> {
    let before = cpu_secs(pid);
    let mut load = wrk(url, duration, script)?;
    let total = load.rps * duration as f64;
    load.cpu_us = (cpu_secs(pid) - before) * 1e6 / total;
    Ok(load)
}

fn parse_ms(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, duration: u64, script: Option<(&str, Vec<String>)>) -> Result<Load, Error> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &THREADS.to_string(),
        "-c",
        &CONNECTIONS.to_string(),
        "-d",
        &format!("{duration}s"),
        "--latency",
    ]);
    if let Some((path, _)) = &script {
        cmd.args(["-s", path]);
    }
    cmd.arg(url);
    if let Some((_, args)) = &script {
        cmd.arg("--");
        cmd.args(args);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains("unexpected status") || !out.status.success() {
        return Err(format!(
            "wrk failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut load = Load::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["Requests/sec:", v] => load.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => load.p50_ms = parse_ms(v),
            ["99%", v] => load.p99_ms = parse_ms(v),
            _ => {}
        }
    }
    Ok(load)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let o = opts();
    if let Some(baseline) = &o.baseline {
        return compare(&o, baseline).await;
    }
    if !o.only_isolation {
        serving_and_compute(&o, &o.server, false).await?.print();
    }
    if o.only_serving {
        return Ok(());
    }
    isolation(&o).await
}

/// Where a run's servers keep their metadata and vectors: a SQLite file in `dir`, or a fresh
/// Postgres database made through `--database` (dropped when this is).
struct Database {
    url: String,
    dir: std::path::PathBuf,
    /// (admin URL, database name) of a Postgres database to drop.
    made: Option<(String, String)>,
}

impl Database {
    async fn fresh(o: &Opts, dir: &std::path::Path) -> Result<Self, Error> {
        let Some(admin) = &o.database else {
            return Ok(Database {
                url: format!("sqlite:{}/bench.db", dir.display()),
                dir: dir.to_path_buf(),
                made: None,
            });
        };
        use sqlx::{Connection, Executor};
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("fs_bench_{}_{n}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        // The same server and options, the new database's name as the path.
        let mut url = url::Url::parse(admin)?;
        url.set_path(&name);
        Ok(Database {
            url: url.to_string(),
            dir: dir.to_path_buf(),
            made: Some((admin.clone(), name)),
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.made.take() {
            // The servers are gone by now; psql is on any machine that runs Postgres.
            let dropped = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .status();
            if !dropped.is_ok_and(|s| s.success()) {
                eprintln!("could not drop the bench database {name}");
            }
        }
    }
}

fn start_server(
    program: &str,
    database: &Database,
    port: u16,
    env: &[(&str, &str)],
) -> Result<Proc, Error> {
    let mut cmd = Command::new(program);
    cmd.env("DATABASE_URL", &database.url)
        .env("DATA_DIR", database.dir.join("data"))
        .env("PORT", port.to_string())
        .env("REDIS_URL", "")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc(cmd.spawn()?))
}

/// Cached GETs on a server whose compute workers are being killed at their limits, against
/// the same GETs with no compute running; and the server's own RSS meanwhile.
async fn isolation(o: &Opts) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let database = Database::fresh(o, dir.path()).await?;
    let port = free_port();
    let server = start_server(
        &o.server,
        &database,
        port,
        &[
            ("COMPUTE_MEMORY_LIMIT_MB", "512"),
            ("COMPUTE_TIMEOUT_SECONDS", "2"),
        ],
    )?;
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&format!("{base}/health")).await?;
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    println!("isolation: 2M stored rows, a served feature, and two hostile ones");
    let events = api.table("events").await?;
    let mut df = frame(2_000_000, 100_000);
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).finish(&mut df)?;
    api.upload(events, "text/csv", csv).await?;
    let feature = |name: &str, sql: &str| {
        let body = json!({"name": name, "raw_table_id": events, "entity_key": "user_id",
                          "computation_logic": sql});
        let api = &api;
        async move {
            api.post("/api/v1/features", &body)
                .await
                .map(|f| f["id"].clone())
        }
    };
    let served = feature(
        "served",
        "SELECT user_id, AVG(amount) AS v FROM data GROUP BY user_id",
    )
    .await?;
    let pad = feature(
        "pad",
        "SELECT user_id, MAX(RPAD(user_id, 2000000000, 'x')) AS p FROM data GROUP BY user_id",
    )
    .await?;
    let slow = feature(
        "slow",
        "SELECT user_id, SUM(amount * 1.5) AS s, COUNT(DISTINCT row_id) AS d, MEDIAN(amount) AS m, \
         STDDEV(amount) AS sd FROM data GROUP BY user_id ORDER BY s",
    )
    .await?;
    api.post(
        &format!("/api/v1/features/{served}/compute"),
        &json!({"version": "v1"}),
    )
    .await?;
    let script = format!("{}/serve_cycle.lua", o.scripts);
    let args = vec![
        "10000".to_string(),
        THREADS.to_string(),
        "served".to_string(),
        "u".to_string(),
    ];
    wrk(&base, 2, Some((script.as_str(), args.clone())))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.0.id();
    let rss_before = rss_mib(pid);
    let quiet = wrk(&base, o.duration, Some((script.as_str(), args.clone())))?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = {
        let (http, base, stop) = (api.http.clone(), base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut outcomes: Vec<String> = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = if i % 2 == 0 { &pad } else { &slow };
                i += 1;
                let resp = http
                    .post(format!("{base}/api/v1/features/{id}/compute"))
                    .json(&json!({"version": "v1"}))
                    .send()
                    .await;
                let outcome = match resp {
                    Ok(r) => {
                        let status = r.status();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        format!("{status} {}", body["detail"].as_str().unwrap_or(""))
                    }
                    Err(e) => format!("error {e}"),
                };
                outcomes.push(outcome);
            }
            outcomes
        })
    };
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0.0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        })
    };
    // Let the first hostile compute get going before the measured load starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = tokio::task::spawn_blocking({
        let (base, script, duration) = (base.clone(), script.clone(), o.duration);
        move || wrk(&base, duration, Some((script.as_str(), args))).map_err(|e| e.to_string())
    })
    .await??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = hostile.await?;
    let rss_max = sampler.await?;
    drop(server);

    println!();
    println!("| cached GET by name | req/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!(
        "| no compute running | {:.0} | {:.2} | {:.2} |",
        quiet.rps, quiet.p50_ms, quiet.p99_ms
    );
    println!(
        "| workers killed at their memory / time limits meanwhile | {:.0} | {:.2} | {:.2} |",
        busy.rps, busy.p50_ms, busy.p99_ms
    );
    println!();
    println!(
        "server RSS: {rss_before:.1} MiB before, at most {rss_max:.1} MiB while workers were killed (+{:.1} MiB)",
        rss_max - rss_before
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for outcome in &outcomes {
        *counts.entry(outcome.as_str()).or_default() += 1;
    }
    println!("hostile computes answered:");
    for (outcome, n) in counts {
        println!("  {n} x {outcome}");
    }
    Ok(())
}

/// What one run of the serving cases measured.
struct Serving {
    ceiling: Load,
    cached: Load,
    uncached: Load,
    batch: Load,
    /// Cached GETs on a replica with `REDIS_URL` set (with `--redis`).
    redis_cached: Option<Load>,
    results: Vec<(String, String)>,
    idle_rss: f64,
    loaded_rss: f64,
}

impl Serving {
    fn cases(&self) -> Vec<(&'static str, &Load)> {
        let mut cases = vec![
            ("minimal axum handler (ceiling)", &self.ceiling),
            ("one cached vector (GET by name)", &self.cached),
            (
                "one uncached vector (each entity once, from the database)",
                &self.uncached,
            ),
            ("batch 100 entities x 10 features", &self.batch),
        ];
        if let Some(redis) = &self.redis_cached {
            cases.push(("one cached vector, REDIS_URL set (second replica)", redis));
        }
        cases
    }

    fn print(&self) {
        println!();
        println!("| case | req/s | p50 ms | p99 ms | req/s vs ceiling | p99 vs ceiling | server CPU µs/request |");
        println!("|---|---|---|---|---|---|---|");
        for (name, l) in self.cases() {
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                l.rps,
                l.p50_ms,
                l.p99_ms,
                l.rps / self.ceiling.rps,
                l.p99_ms / self.ceiling.p99_ms,
                l.cpu_us
            );
        }
        if let Some(redis) = &self.redis_cached {
            println!(
                "\ncached GET with REDIS_URL set: {:.2} x the in-process figure",
                redis.rps / self.cached.rps
            );
        }
        println!();
        println!("| measure | value |");
        println!("|---|---|");
        for (k, v) in &self.results {
            println!("| {k} | {v} |");
        }
        println!("| batch entity vectors/s | {:.0} |", self.batch.rps * 100.0);
        println!("| idle RSS | {:.1} MiB |", self.idle_rss);
        println!("| loaded RSS | {:.1} MiB |", self.loaded_rss);
    }
}

/// The serving cases for two binaries, alternately, `rounds` times each; then every run and the
/// ratios side by side.
async fn compare(o: &Opts, baselines: &str) -> Result<(), Error> {
    let mut binaries: Vec<&str> = baselines.split(',').filter(|b| !b.is_empty()).collect();
    binaries.push(o.server.as_str());
    // Runs are labelled by file name (by path when two names are the same); the last binary
    // is the candidate.
    let name = |b: &str| -> String {
        std::path::Path::new(b)
            .file_name()
            .map_or_else(|| b.to_string(), |n| n.to_string_lossy().into_owned())
    };
    let by_path = binaries
        .iter()
        .any(|a| binaries.iter().filter(|b| name(b) == name(a)).count() > 1);
    let label = |b: &str| if by_path { b.to_string() } else { name(b) };
    let mut runs: Vec<(String, Serving)> = Vec::new();
    for round in 0..o.rounds {
        for binary in &binaries {
            println!("round {}: {binary}", round + 1);
            runs.push((label(binary), serving_and_compute(o, binary, true).await?));
        }
    }
    println!();
    for binary in &binaries {
        println!("{}: {binary}", label(binary));
    }
    println!();
    let redis = o.redis.is_some();
    print!("| run | ceiling req/s | cached GET req/s (x ceiling), p99 | uncached GET req/s (x ceiling) | batch 100 x 10 req/s (x ceiling), p99 |");
    println!(
        "{}",
        if redis {
            " cached GET, REDIS_URL set (x in-process) |"
        } else {
            ""
        }
    );
    println!("|---|---|---|---|---|{}", if redis { "---|" } else { "" });
    for (label, s) in &runs {
        let x = |l: &Load| l.rps / s.ceiling.rps;
        print!(
            "| {label} | {:.0} | {:.0} ({:.2}), {:.2} ms | {:.0} ({:.2}) | {:.0} ({:.3}), {:.2} ms |",
            s.ceiling.rps,
            s.cached.rps,
            x(&s.cached),
            s.cached.p99_ms,
            s.uncached.rps,
            x(&s.uncached),
            s.batch.rps,
            x(&s.batch),
            s.batch.p99_ms,
        );
        match &s.redis_cached {
            Some(r) => println!(" {:.0} ({:.2}) |", r.rps, r.rps / s.cached.rps),
            None => println!(),
        }
    }
    // Each case's ratio to its own run's ceiling, as the median over rounds: compare these,
    // not absolute figures, since this machine's speed moves between runs.
    let median = |label: &str, f: &dyn Fn(&Serving) -> f64| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|r| r.0 == label)
            .map(|r| f(&r.1))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let mid = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        }
    };
    type Figure = Box<dyn Fn(&Serving) -> f64>;
    let mut rows: Vec<(&str, Figure)> = vec![
        (
            "cached GET x ceiling",
            Box::new(|s: &Serving| s.cached.rps / s.ceiling.rps),
        ),
        (
            "cached GET p99 x ceiling p99",
            Box::new(|s: &Serving| s.cached.p99_ms / s.ceiling.p99_ms),
        ),
        (
            "uncached GET x ceiling",
            Box::new(|s: &Serving| s.uncached.rps / s.ceiling.rps),
        ),
        (
            "batch 100 x 10 x ceiling",
            Box::new(|s: &Serving| s.batch.rps / s.ceiling.rps),
        ),
        (
            "ceiling: server CPU µs/request",
            Box::new(|s: &Serving| s.ceiling.cpu_us),
        ),
        (
            "cached GET: server CPU µs/request",
            Box::new(|s: &Serving| s.cached.cpu_us),
        ),
        (
            "uncached GET: server CPU µs/request",
            Box::new(|s: &Serving| s.uncached.cpu_us),
        ),
        (
            "batch: server CPU µs/request",
            Box::new(|s: &Serving| s.batch.cpu_us),
        ),
    ];
    if redis {
        rows.push((
            "cached GET with Redis x in-process",
            Box::new(|s: &Serving| {
                s.redis_cached.as_ref().map_or(f64::NAN, |r| r.rps) / s.cached.rps
            }),
        ));
    }
    let labels: Vec<String> = binaries.iter().map(|b| label(b)).collect();
    let candidate = labels.last().cloned().unwrap_or_default();
    println!();
    print!("| median over rounds |");
    for l in &labels {
        print!(" {l} |");
    }
    for l in &labels[..labels.len() - 1] {
        print!(" {candidate} / {l} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(2 * labels.len() - 1));
    for (name, f) in &rows {
        let values: Vec<f64> = labels.iter().map(|l| median(l, f.as_ref())).collect();
        print!("| {name} |");
        for v in &values {
            print!(" {v:.3} |");
        }
        let last = values[values.len() - 1];
        for v in &values[..values.len() - 1] {
            print!(" {:.2} |", last / v);
        }
        println!();
    }
    Ok(())
}

/// Load rows, compute the features, and measure each serving case against the ceiling.
/// `quick` skips the ingest timings and the compute of rows sent in a body.
async fn serving_and_compute(o: &Opts, server_bin: &str, quick: bool) -> Result<Serving, Error> {
    let dir = tempfile::tempdir()?;
    let database = Database::fresh(o, dir.path()).await?;
    let port = free_port();
    let server = start_server(server_bin, &database, port, &[])?;
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&format!("{base}/health")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_mib(server.0.id());
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let mut results: Vec<(String, String)> = Vec::new();
    let mut note = |k: &str, v: String| {
        println!("  {k}: {v}");
        results.push((k.to_string(), v));
    };

    println!("loading {} rows over {} entities", o.rows, o.entities);
    // Ingest: each format three times into a scratch table (the median is reported: the first
    // upload into a fresh process also pays for first-touch page faults), then once into the
    // table every feature reads.
    let mut df = frame(o.rows, o.entities);
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv).finish(&mut df)?;
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut df)?;
    let json_n = 200_000.min(o.rows);
    let json_rows_body = json_rows(json_n, o.entities);
    let timed: &[(&str, &str, Vec<u8>, usize)] = &[
        ("ingest CSV", "text/csv", csv.clone(), o.rows),
        (
            "ingest Parquet",
            "application/vnd.apache.parquet",
            parquet.clone(),
            o.rows,
        ),
        (
            "ingest JSON",
            "application/json",
            serde_json::to_vec(&json_rows_body)?,
            json_n,
        ),
    ];
    for (label, content_type, body, rows) in timed.iter().filter(|_| !quick) {
        let (content_type, rows) = (*content_type, *rows);
        let scratch = api
            .table(&format!(
                "scratch_{}",
                label.replace(' ', "_").to_lowercase()
            ))
            .await?;
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            api.upload(scratch, content_type, body.to_vec()).await?;
            times.push(t.elapsed().as_secs_f64());
        }
        let first = times[0];
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[1];
        note(
            label,
            format!(
                "{:.0} rows/s median of 3 ({rows} rows in {median:.2} s; first upload {first:.2} s)",
                rows as f64 / median
            ),
        );
    }
    let events = api.table("events").await?;
    api.upload(events, "text/csv", csv).await?;
    let json_table = api.table("events_json").await?;
    api.upload(
        json_table,
        "application/json",
        serde_json::to_vec(&json_rows_body)?,
    )
    .await?;

    // Features over the stored rows.
    let aggregates = [
        "AVG(amount)",
        "SUM(amount)",
        "COUNT(*)",
        "MAX(amount)",
        "MIN(amount)",
        "SUM(qty)",
        "AVG(qty)",
        "MAX(qty)",
        "MIN(qty)",
        "COUNT(DISTINCT day)",
    ];
    let mut feature_ids = Vec::new();
    let mut registrations = Vec::new();
    for (i, agg) in aggregates.iter().enumerate().take(FEATURES) {
        let t = Instant::now();
        let f = api
            .post(
                "/api/v1/features",
                &json!({"name": format!("f{i}"), "raw_table_id": events, "entity_key": "user_id",
                        "computation_logic": format!("SELECT user_id, {agg} AS v FROM data GROUP BY user_id")}),
            )
            .await?;
        registrations.push(t.elapsed().as_secs_f64() * 1000.0);
        feature_ids.push(f["id"].as_i64().ok_or("no id")?);
    }
    registrations.sort_by(|a, b| a.total_cmp(b));
    note(
        "register a feature (dry run in a worker)",
        format!(
            "{:.1} ms median of {} ({:.1}-{:.1} ms)",
            registrations[registrations.len() / 2],
            registrations.len(),
            registrations[0],
            registrations[registrations.len() - 1]
        ),
    );
    let t = Instant::now();
    let r = api
        .post(
            &format!("/api/v1/features/{}/compute", feature_ids[0]),
            &json!({"version": "v1"}),
        )
        .await?;
    let secs = t.elapsed().as_secs_f64();
    note(
        "compute stored rows",
        format!(
            "{secs:.2} s ({} rows -> {} vectors, published)",
            o.rows, r["vectors_created"]
        ),
    );
    for id in &feature_ids[1..] {
        api.post(
            &format!("/api/v1/features/{id}/compute"),
            &json!({"version": "v1"}),
        )
        .await?;
    }
    if !quick {
        compute_in_body(&api, json_table, o.rows, o.entities, &mut note).await?;
    }

    // Serving: the ceiling first, then each case under the same load.
    let sample = api
        .http
        .get(format!(
            "{base}/api/v1/feature-vectors?entity_id=u1&feature_name=f0"
        ))
        .send()
        .await?
        .bytes()
        .await?;
    let ceiling_port = free_port();
    let ceiling_proc = Proc(
        Command::new(&o.ceiling)
            .args([ceiling_port.to_string(), sample.len().to_string()])
            .spawn()?,
    );
    wait_up(&format!("http://127.0.0.1:{ceiling_port}/v")).await?;
    let script = |name: &str| format!("{}/{name}", o.scripts);
    let entities = o.entities.to_string();
    let threads = THREADS.to_string();

    let ceiling = wrk_on(
        ceiling_proc.0.id(),
        &format!("http://127.0.0.1:{ceiling_port}/v"),
        o.duration,
        None,
    )?;
    let serve_script = script("serve_cycle.lua");
    let cycle = |entities: &str, feature: &str, prefix: &str| {
        Some((
            serve_script.as_str(),
            vec![
                entities.to_string(),
                threads.clone(),
                feature.to_string(),
                prefix.to_string(),
            ],
        ))
    };
    wrk(&base, 2, cycle("10000", "f0", "u"))?; // warm 10k entities
    let pid = server.0.id();
    let cached = wrk_on(pid, &base, o.duration, cycle("10000", "f0", "u"))?;

    // One vector per stored row: each request reads an entity nobody read before (a run of
    // UNCACHED_SECS stays below one request per row at this machine's ceiling).
    api.post(
        "/api/v1/features",
        &json!({"name": "by_row", "raw_table_id": events, "entity_key": "row_id",
                "computation_logic": "SELECT row_id, amount AS v FROM data"}),
    )
    .await
    .and(Ok(()))?;
    let by_row = api
        .http
        .get(format!("{base}/api/v1/features"))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let by_row_id = by_row
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "by_row"))
        .and_then(|f| f["id"].as_i64())
        .ok_or("by_row feature missing")?;
    api.post(
        &format!("/api/v1/features/{by_row_id}/compute"),
        &json!({"version": "v1"}),
    )
    .await?;
    let uncached = wrk_on(
        pid,
        &base,
        UNCACHED_SECS,
        cycle(&o.rows.to_string(), "by_row", ""),
    )?;

    let names: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
    let batch_args = vec![entities.clone(), names.join(",")];
    let batch_script = script("batch.lua");
    // Warm: one request that returns only when every version it reads is in memory.
    let warm: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    api.post(
        "/api/v1/feature-vectors/batch",
        &json!({"entity_ids": warm, "features": names}),
    )
    .await?;
    wrk(&base, 2, Some((batch_script.as_str(), batch_args.clone())))?;
    let batch = wrk_on(
        pid,
        &base,
        o.duration,
        Some((batch_script.as_str(), batch_args)),
    )?;
    let loaded_rss = rss_mib(server.0.id());

    // The same cached GETs on a second replica over this database, with REDIS_URL set.
    let redis_cached = match &o.redis {
        Some(url) => {
            let replica_port = free_port();
            let replica_proc =
                start_server(server_bin, &database, replica_port, &[("REDIS_URL", url)])?;
            let replica = format!("http://127.0.0.1:{replica_port}");
            wait_up(&format!("{replica}/health")).await?;
            wrk(&replica, 2, cycle("10000", "f0", "u"))?;
            Some(wrk_on(
                replica_proc.0.id(),
                &replica,
                o.duration,
                cycle("10000", "f0", "u"),
            )?)
        }
        None => None,
    };
    drop(server);
    Ok(Serving {
        ceiling,
        cached,
        uncached,
        batch,
        redis_cached,
        results,
        idle_rss,
        loaded_rss,
    })
}

/// Time a compute whose 100k rows come in the request body.
async fn compute_in_body(
    api: &Api,
    json_table: i64,
    rows: usize,
    entities: usize,
    note: &mut impl FnMut(&str, String),
) -> Result<(), Error> {
    let base = &api.base;
    let body_rows = json_rows(100_000.min(rows), entities / 10);
    let body_feature = api
        .post(
            "/api/v1/features",
            &json!({"name": "body_avg", "raw_table_id": json_table, "entity_key": "user_id",
                    "computation_logic": "SELECT user_id, AVG(amount) AS v FROM data GROUP BY user_id"}),
        )
        .await?;
    let body = serde_json::to_vec(&json!({"version": "v1", "raw_data": body_rows}))?;
    let t = Instant::now();
    let resp = api
        .http
        .post(format!(
            "{base}/api/v1/features/{}/compute",
            body_feature["id"]
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("body compute: {}", resp.text().await?).into());
    }
    let secs = t.elapsed().as_secs_f64();
    note("compute rows in body", format!("{secs:.3} s (100000 rows)"));
    Ok(())
}
