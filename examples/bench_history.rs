//! History benchmark: starts feature-store on a fresh SQLite, stores 1M rows over 30 days for
//! 10k entities, times one compute and a backfill of 30 daily snapshots, then times training
//! sets over HTTP, Parquet in and out: 1M and 100k rows against one feature of 10 value
//! columns, and 1M rows against 10 features of one column. Then what the serving process
//! holds meanwhile: its RSS (sampled every 10 ms) during training sets, a drift request and 16
//! computes queued at once, and the big request (1M CSV rows, one feature referenced 100 times)
//! with a client reading a cached vector throughout (its p99). Prints one table.
//!
//! Usage: cargo run --release --example bench_history -- [--server target/release/feature-store]
//!        [--cgroup-mb 4096]  (the server and its workers in a cgroup v1 memory group of that
//!        size, as in a container; needs a writable /sys/fs/cgroup/memory)
//!        BENCH_SERVER_LOG=path keeps the server's log (where each training set's time went).

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

/// The resident memory of process `pid` now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Run `work` while sampling the server's RSS every 10 ms: (its result, RSS before, peak).
async fn with_rss<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64, u64) {
    let before = rss_kib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak.max(rss_kib(pid))
        })
    };
    let out = work.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0);
    (out, before, peak)
}

fn growth_mib(before: u64, peak: u64) -> f64 {
    peak.saturating_sub(before) as f64 / 1024.0
}

/// Put `pid` (and the workers it starts later) in a fresh cgroup v1 memory group of `mb` MiB.
fn confine(pid: u32, mb: u64) -> Result<std::path::PathBuf, Error> {
    let group =
        std::path::PathBuf::from(format!("/sys/fs/cgroup/memory/feature-store-bench-{pid}"));
    std::fs::create_dir_all(&group)?;
    std::fs::write(group.join("memory.limit_in_bytes"), (mb << 20).to_string())?;
    std::fs::write(group.join("cgroup.procs"), pid.to_string())?;
    Ok(group)
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
    let cgroup_mb: Option<u64> = args
        .windows(2)
        .find(|w| w[0] == "--cgroup-mb")
        .and_then(|w| w[1].parse().ok());
    let server_proc = Proc(
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
    let pid = server_proc.0.id();
    let group = match cgroup_mb {
        Some(mb) => Some(confine(pid, mb)?),
        None => None,
    };
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
    let (mut wide_id, mut wide_version) = (0, 0);
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
        if i == 0 {
            (wide_id, wide_version) = (id, version);
        }
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
    let ((t_1m, rows_1m, cols_1m), rss0, rss_training) = {
        let (out, before, peak) = with_rss(pid, training_set(&api, &wide_ref, &million, 3)).await;
        (out?, before, peak)
    };
    let (t_100k, _, _) = training_set(&api, &wide_ref, &hundred_k, 5).await?;
    let (t_10f, _, cols_10f) = training_set(&api, &narrow, &million, 3).await?;

    // Drift between the first and the last backfilled snapshot: not kept, so computed.
    let snapshots: Value = {
        let req = api.http.get(format!(
            "{}/api/v1/features/{wide_id}/versions/{wide_version}/snapshots",
            api.base
        ));
        serde_json::from_slice(&api.send(req, "snapshots").await?)?
    };
    let list = snapshots.as_array().ok_or("no snapshots")?;
    let (first, last) = (&list[0]["id"], &list[list.len() - 2]["id"]);
    let drift_url = format!(
        "{}/api/v1/features/{wide_id}/versions/{wide_version}/drift?base={first}&target={last}",
        api.base
    );
    let (drift, rss1, rss_drift) = with_rss(pid, async {
        let started = Instant::now();
        api.send(api.http.get(&drift_url), "drift").await?;
        Ok::<_, Error>(started.elapsed().as_secs_f64())
    })
    .await;
    let t_drift = drift?;

    // 16 computes at once: one runs per worker, the rest wait in the queue.
    let (computes, rss2, rss_computes) = with_rss(pid, async {
        let started = Instant::now();
        let (path, body) = (
            format!("/api/v1/features/{wide_id}/compute"),
            json!({"version": "v1"}),
        );
        let runs = (0..16).map(|_| api.post(&path, &body));
        let answers = futures::future::join_all(runs).await;
        let ok = answers.iter().filter(|a| a.is_ok()).count();
        (ok, started.elapsed().as_secs_f64())
    })
    .await;

    // The big request: 1M CSV rows, "wide" referenced 100 times, with a model reading one
    // cached vector throughout.
    let mut csv = String::from("entity_id,timestamp,label\n");
    let mut seed = 5;
    for _ in 0..1_000_000 {
        csv.push_str(&format!(
            "u{},2024-01-{:02}T00:00:00Z,{}\n",
            lcg(&mut seed) as usize % ENTITIES,
            1 + lcg(&mut seed) % 28,
            lcg(&mut seed) % 2
        ));
    }
    let query = vec!["features=wide"; 100].join("&");
    let vector_url = format!(
        "{}/api/v1/feature-vectors?entity_id=u1&feature_name=wide",
        api.base
    );
    api.send(api.http.get(&vector_url), "vector").await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (http, url, stop) = (api.http.clone(), vector_url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut took = Vec::new();
            let mut failed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        took.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took.sort_by(f64::total_cmp);
            let p99 = took.get(took.len() * 99 / 100).copied().unwrap_or(f64::NAN);
            (p99, took.len(), failed)
        })
    };
    let (big, rss3, rss_big) = with_rss(pid, async {
        let started = Instant::now();
        let resp = api
            .http
            .post(format!("{}/api/v1/training-sets?{query}", api.base))
            .header("content-type", "text/csv")
            .header("accept", "text/csv")
            .body(csv)
            .send()
            .await;
        let status = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.map(|b| b.len()).unwrap_or(0);
                format!("{status}, {:.0} MB", bytes as f64 / 1e6)
            }
            Err(e) => format!("failed: {e}"),
        };
        (status, started.elapsed().as_secs_f64())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (p99, reads, failed_reads) = reader.await?;
    let alive = api
        .http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());

    println!("| measurement | figure | target |");
    println!("|---|---|---|");
    println!("| compute, 1M stored rows -> 10k vectors x 10 values | {compute_s:.2} s | - |");
    println!("| backfill, 30 daily snapshots over the same rows | {backfill_s:.2} s ({:.1} x the compute) | <= 30 x |", backfill_s / compute_s);
    println!("| training set, 1M rows x 1 feature of 10 columns, Parquet in and out | {t_1m:.3} s ({rows_1m} rows x {cols_1m} columns) | <= 0.15 s |");
    println!("| training set, 100k rows, same feature | {t_100k:.3} s | <= 0.03 s |");
    println!("| training set, 1M rows x 10 features of 1 column | {t_10f:.3} s ({cols_10f} columns) | <= 1 s |");
    println!(
        "| drift, first vs last backfilled snapshot (computed in a worker) | {t_drift:.3} s | - |"
    );
    println!("| server RSS growth: training sets (1M rows, 3 runs) | {:.0} MiB (from {:.0} MiB) | <= 100 MiB |", growth_mib(rss0, rss_training), rss0 as f64 / 1024.0);
    println!(
        "| server RSS growth: drift request | {:.0} MiB | <= 100 MiB |",
        growth_mib(rss1, rss_drift)
    );
    println!("| server RSS growth: 16 computes queued at once ({} of 16 succeeded, {:.1} s) | {:.0} MiB | <= 100 MiB |", computes.0, computes.1, growth_mib(rss2, rss_computes));
    println!("| big request: 1M CSV rows x 100 references of 10 columns{} | {} in {:.1} s; server RSS +{:.0} MiB | answered or 4xx |", group.as_ref().map_or(String::new(), |_| format!(", server in a {} MiB cgroup", cgroup_mb.unwrap_or(0))), big.0, big.1, growth_mib(rss3, rss_big));
    println!("| cached GET while it ran: p99 ({reads} reads, {failed_reads} failed) | {p99:.2} ms | < 10 ms |");
    println!("| server alive afterwards | {alive} | true |");
    drop(server_proc);
    if let Some(group) = group {
        // The group can be removed once the kernel has seen its last process exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&group).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
