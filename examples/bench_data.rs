//! Data-plane benchmark: ingest N rows of `(user_id string, amount float, n integer)` over E
//! entities as Parquet bodies, compute `SUM/COUNT/MAX ... GROUP BY user_id`, and measure, side
//! by side in one run, polars' own streaming engine over the same Parquet files (in a fresh
//! process, same thread count): the same SQL, its result written as Parquet. Also the publish
//! of the vectors, what a small ingest into another table and the scheduler's lease renewal
//! did meanwhile, the worker's peak RSS and the serving process's RSS during the compute.
//!
//! Usage: cargo run --release --example bench_data -- --server <target>/release/feature-store
//!        [--rows 10000000] [--entities 1000000] [--threads 2] [--runs 2]
//!        [--database postgres://postgres@127.0.0.1:5432/postgres]   (a fresh database through it,
//!        dropped at the end; default: a fresh SQLite)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polars::prelude::*;
use polars::sql::SQLContext;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SQL: &str = "SELECT user_id, SUM(amount) AS total, COUNT(*) AS cnt, MAX(n) AS max_n \
                   FROM data GROUP BY user_id";
/// Rows per uploaded Parquet body: well within the default MAX_BODY_BYTES (64 MiB).
const BODY_ROWS: usize = 2_000_000;

struct Args {
    server: String,
    rows: usize,
    entities: usize,
    threads: Option<usize>,
    runs: usize,
    database: Option<String>,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        server: String::new(),
        rows: 10_000_000,
        entities: 1_000_000,
        threads: None,
        runs: 2,
        database: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => out.server = value,
            "--rows" => out.rows = value.parse()?,
            "--entities" => out.entities = value.parse()?,
            "--threads" => out.threads = Some(value.parse()?),
            "--runs" => out.runs = value.parse()?,
            "--database" => out.database = Some(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if out.server.is_empty() {
        return Err("--server <path to feature-store> is required".into());
    }
    Ok(out)
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// One Parquet body of rows `start..start + n`; entities scattered, not in order.
fn body(start: usize, n: usize, entities: usize) -> Result<Vec<u8>, Error> {
    let mut seed = start as u64 + 17;
    let mut users = Vec::with_capacity(n);
    let mut amounts = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    for i in start..start + n {
        users.push(format!("u{}", (i.wrapping_mul(7919)) % entities));
        amounts.push((lcg(&mut seed) % 100_000) as f64 / 100.0);
        counts.push((lcg(&mut seed) % 1000) as i64);
    }
    let mut frame = df!("user_id" => users, "amount" => amounts, "n" => counts)?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(&mut frame)?;
    Ok(out)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// polars alone, in this process (started fresh by `--polars-baseline`): scan the files with
/// the streaming engine, run the SQL, write the result as Parquet. Prints JSON.
fn polars_baseline(list: &str, out: &str) -> Result<(), Error> {
    let files: Vec<PlRefPath> = std::fs::read_to_string(list)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(PlRefPath::new)
        .collect();
    let started = Instant::now();
    let scan = LazyFrame::scan_parquet_files(
        files.into(),
        ScanArgsParquet {
            glob: false,
            ..Default::default()
        },
    )?;
    let mut ctx = SQLContext::new();
    ctx.register("data", scan);
    let mut result = ctx
        .execute(SQL)?
        .collect_with_engine(Engine::Streaming)?
        .unwrap_single();
    let file = std::fs::File::create(out)?;
    ParquetWriter::new(file).finish(&mut result)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"secs": secs, "rows": result.height(), "peak_rss_mib": rss_kib(std::process::id(), "VmHWM:") / 1024})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--polars-baseline") {
        return polars_baseline(&argv[2], &argv[3]);
    }
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let made = format!("fs_bench_{}", std::process::id());
    let database = match &args.database {
        Some(url) => {
            use sqlx::{Connection, Executor};
            let name = &made;
            let mut admin = sqlx::PgConnection::connect(url).await?;
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await?;
            // The same server and options, the new database's name as the path.
            let mut url = url::Url::parse(url)?;
            url.set_path(name);
            url.to_string()
        }
        None => format!("sqlite:{}/bench.db", dir.path().display()),
    };
    let data_dir = dir.path().join("data");
    let mut cmd = Command::new(&args.server);
    cmd.env("DATABASE_URL", &database)
        .env("DATA_DIR", &data_dir)
        .env("PORT", port.to_string())
        .env("REDIS_URL", "")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
        .env("SCHEDULER_LEASE_SECONDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(threads) = args.threads {
        cmd.env("COMPUTE_THREADS", threads.to_string());
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let log: Arc<Mutex<Vec<Value>>> = Arc::default();
    if let Some(out) = child.stdout.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let (Ok(v), Ok(mut log)) = (serde_json::from_str::<Value>(&line), log.lock()) {
                    log.push(v);
                }
            }
        });
    }
    let server = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |path: &str, body: Value| {
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
    let table = post(
        "/api/v1/raw-tables",
        json!({"name": "events", "schema_definition": {"user_id": "string", "amount": "float", "n": "integer"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("table id")?;
    let side = post(
        "/api/v1/raw-tables",
        json!({"name": "side", "schema_definition": {"k": "string", "v": "float"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("side table id")?;

    // Ingest, timing only the uploads.
    let mut ingest_secs = 0.0;
    let mut bodies_bytes = 0usize;
    let mut start = 0;
    while start < args.rows {
        let n = BODY_ROWS.min(args.rows - start);
        let bytes = tokio::task::spawn_blocking({
            let entities = args.entities;
            move || body(start, n, entities)
        })
        .await??;
        bodies_bytes += bytes.len();
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/raw-tables/{table}/data"))
            .header("content-type", "application/vnd.apache.parquet")
            .body(bytes)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("ingest: {}", resp.text().await?).into());
        }
        ingest_secs += started.elapsed().as_secs_f64();
        start += n;
    }
    let feature = post(
        "/api/v1/features",
        json!({"name": "spend", "raw_table_id": table, "entity_key": "user_id", "computation_logic": SQL}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("feature id")?;

    // The files polars reads: every data file of the table (appends only, so all are live).
    let mut files = Vec::new();
    let found = walkdir::WalkDir::new(data_dir.join("raw_tables"))
        .into_iter()
        .flatten();
    for entry in found
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
    {
        let in_log = entry.components().any(|c| c.as_os_str() == "_delta_log");
        if entry.extension().is_some_and(|e| e == "parquet") && !in_log {
            files.push(entry.display().to_string());
        }
    }
    let list = dir.path().join("files.txt");
    std::fs::write(&list, files.join("\n"))?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });

    println!(
        "rows {} ({} entities) in {} files, {} threads for the worker and for polars",
        args.rows,
        args.entities,
        files.len(),
        threads
    );
    println!(
        "ingest: {:.2} s for {:.0} MB of Parquet bodies, {:.2}M rows/s",
        ingest_secs,
        bodies_bytes as f64 / 1e6,
        args.rows as f64 / ingest_secs / 1e6
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>12} {:>10} {:>10}",
        "run",
        "polars s",
        "peak MiB",
        "ours s",
        "query ms",
        "snapshot",
        "publish",
        "worker",
        "server RSS",
        "side max",
        "side fail"
    );
    for run in 0..args.runs {
        let out = dir.path().join("polars-result.parquet");
        let baseline = Command::new(std::env::current_exe()?)
            .arg("--polars-baseline")
            .arg(&list)
            .arg(&out)
            .env("POLARS_MAX_THREADS", threads.to_string())
            .output()?;
        if !baseline.status.success() {
            return Err(String::from_utf8_lossy(&baseline.stderr)
                .into_owned()
                .into());
        }
        let baseline: Value = serde_json::from_slice(&baseline.stdout)?;

        // Meanwhile: the server's RSS, and a small ingest into another table every 100 ms.
        let rss_start = rss_kib(pid, "VmRSS:");
        let rss_max = Arc::new(AtomicU64::new(rss_start));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (rss_max, done) = (rss_max.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Acquire) {
                    rss_max.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::AcqRel);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let side_writer = {
            let (done, http, base) = (done.clone(), http.clone(), base.clone());
            tokio::spawn(async move {
                let (mut worst, mut failures, mut i) = (0f64, 0usize, 0);
                while !done.load(Ordering::Acquire) {
                    let started = Instant::now();
                    let ok = http
                        .post(format!("{base}/api/v1/ingest"))
                        .json(&json!({"raw_table_id": side, "data": [{"k": format!("k{i}"), "v": 1.0}]}))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    worst = worst.max(started.elapsed().as_secs_f64());
                    failures += usize::from(!ok);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (worst, failures)
            })
        };
        let started = Instant::now();
        let computed = post(
            &format!("/api/v1/features/{feature}/compute"),
            json!({"version": "v1"}),
        )
        .await?;
        let ours = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Release);
        let _ = watcher.await;
        let (worst, failures) = side_writer.await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = log
            .lock()
            .map_err(|_| "log")?
            .iter()
            .rev()
            .find(|l| l["fields"]["message"] == "published feature version")
            .cloned()
            .unwrap_or(Value::Null);
        let f = &line["fields"];
        println!(
            "{:<10} {:>9.2} {:>9} {:>9.2} {:>9} {:>10} {:>9} {:>9} {:>12} {:>10.3} {:>10}",
            format!("#{} ({})", run + 1, computed["vectors_created"]),
            baseline["secs"].as_f64().unwrap_or(0.0),
            baseline["peak_rss_mib"],
            ours,
            f["query_ms"],
            f["snapshot_ms"],
            f["publish_ms"],
            format!("{} MiB", f["worker_peak_rss_mib"]),
            format!(
                "+{:.1} MiB",
                (rss_max.load(Ordering::Acquire) as f64 - rss_start as f64) / 1024.0
            ),
            worst,
            failures
        );
        println!(
            "           worker {} ms (query {}, of it checks {}; stats {}; snapshot {} ms), \
             queued {} ms; publish: waiting for vectors {} ms, writing them {} ms; \
             ours / polars = {:.2} (worker only: {:.2})",
            f["worker_ms"],
            f["query_ms"],
            f["check_ms"],
            f["stats_ms"],
            f["snapshot_ms"],
            f["queued_ms"],
            f["vectors_wait_ms"],
            f["vectors_write_ms"],
            ours / baseline["secs"].as_f64().unwrap_or(f64::NAN),
            f["worker_ms"].as_f64().unwrap_or(f64::NAN)
                / 1000.0
                / baseline["secs"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let lease_failures = log
        .lock()
        .map_err(|_| "log")?
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("could not renew the scheduler lease"))
        })
        .count();
    println!("scheduler lease renewals that failed during the run: {lease_failures}");
    drop(server);
    if let Some(url) = &args.database {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::PgConnection::connect(url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {made} WITH (FORCE)").as_str())
            .await?;
    }
    Ok(())
}
