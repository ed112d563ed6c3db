//! Aggregation features benchmark. Starts feature-store on a fresh SQLite, stores EVENTS
//! events over ENTITIES users and 90 days (amounts with nulls, times in whole seconds so ties
//! are common), and declares `count`, `sum`, `mean`, `max` of the amount over 1h, 1d, 7d and
//! 30d (16 values a row). Then:
//!
//! 1. a training set of LABELS random rows (half of them at an event's own time), Parquet in
//!    and Parquet out, timed end to end, beside DuckDB's exact window-function query for the
//!    same values over the same Parquet files (events ∪ labels, RANGE frames), run by python3
//!    in the same session; every one of the 16 values of every row is compared with DuckDB's
//!    (floats within 1e-9 of the sum of the window's magnitudes);
//!    then the same labels ingested as a raw table and the training set written as a Parquet
//!    dataset (`POST /api/v1/training-sets/datasets`), timed from call to answer, and its
//!    values compared with DuckDB's the same way;
//! 2. ONLINE online GETs at random entities, each compared with DuckDB's values at its own
//!    `evaluated_at` (events are placed up to now, so the windows cover them);
//! 3. wrk at 16 connections: the aggregation feature's GET against a SQL feature's cached GET
//!    in the same run (req/s and p99).
//!
//! Usage: cargo run --release --example bench_aggregations -- [--server PATH]
//!        [--events 1000000] [--entities 10000] [--labels 100000] [--online 1000]
//!        [--duration 8] [--fresh-rows 100000] [--fresh-rounds 5] [--threads 2]
//! `--threads` is both the workers' `COMPUTE_THREADS` and DuckDB's `threads`, so the two
//! engines get the same cores.
//! With `--online-state`, only what a replica holds to answer the feature online: the
//! events ingested, the first GET, the server's resident memory before and after it, and the
//! bytes the server counts, then the feature's GET against a SQL feature's cached GET with
//! wrk (`online_state` below; needs wrk, not DuckDB).
//! With `--large-dataset`, only the label table's training set written as a dataset, at the
//! issue's 100M × 10M scale, its sampled users' rows checked by brute force (`large_dataset`
//! below; needs neither DuckDB nor wrk).
//! Needs python3 with duckdb and pyarrow (`pip install duckdb pyarrow`) and wrk.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

const DAY_US: i64 = 86_400_000_000;
const FUNCTIONS: [&str; 4] = ["count", "sum", "mean", "max"];

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

fn parquet(frame: &mut DataFrame) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(frame)?;
    Ok(out)
}

async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?.to_vec();
    if !status.is_success() {
        return Err(format!("{what}: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(body)
}

/// The reference: DuckDB's window functions over events ∪ labels, in one process.
const DUCKDB: &str = r#"
import sys, time, duckdb
events, labels, out, threads = sys.argv[1:5]
con = duckdb.connect()
con.execute(f"SET threads TO {int(threads)}")
exprs = []
for name, seconds in [("1h", 3600), ("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400)]:
    # The window is (t - w, t]: the frame starts a microsecond after t - w.
    frame = (f"OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN "
             f"INTERVAL '{seconds * 1000000 - 1} microseconds' PRECEDING AND CURRENT ROW)")
    for fn, agg in [("count", "COUNT(amount)"), ("sum", "SUM(amount)"),
                    ("mean", "AVG(amount)"), ("max", "MAX(amount)")]:
        exprs.append(f"{agg} {frame} AS amount_{fn}_{name}")
query = f"""
WITH u AS (
  SELECT user_id, ts, amount, NULL::BIGINT AS row_no FROM read_parquet('{events}')
  UNION ALL
  SELECT entity_id, timestamp, NULL::DOUBLE, row_no FROM read_parquet('{labels}')
)
SELECT row_no, {', '.join(exprs)} FROM u QUALIFY row_no IS NOT NULL ORDER BY row_no
"""
start = time.time()
con.execute(f"COPY ({query}) TO '{out}' (FORMAT PARQUET)")
print(f"{time.time() - start:.3f}")
"#;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let server = arg(&args, "--server", "target/release/feature-store");
    let events_n: usize = arg(&args, "--events", "1000000").parse()?;
    let entities: usize = arg(&args, "--entities", "10000").parse()?;
    let labels_n: usize = arg(&args, "--labels", "100000").parse()?;
    let online_n: usize = arg(&args, "--online", "1000").parse()?;
    let duration: u64 = arg(&args, "--duration", "8").parse()?;
    let fresh_n: usize = arg(&args, "--fresh-rows", "100000").parse()?;
    let fresh_rounds: usize = arg(&args, "--fresh-rounds", "5").parse()?;
    // Threads for our compute workers (COMPUTE_THREADS) and for DuckDB alike.
    let threads: usize = arg(&args, "--threads", "2").parse()?;
    if args.iter().any(|a| a == "--online-state") {
        return online_state(&server, events_n, entities, threads, duration).await;
    }
    if args.iter().any(|a| a == "--large-dataset") {
        return large_dataset(&server, events_n, entities, labels_n, threads).await;
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("server.log");
    let (_server, _, base) = start_server(
        &server,
        dir.path(),
        &[("COMPUTE_THREADS", threads.to_string())],
    )
    .await?;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        let what = path.to_string();
        async move { Ok::<Value, Error>(serde_json::from_slice(&send(req, &what).await?)?) }
    };

    // Events over the 90 days up to now, in whole seconds.
    let now_us = chrono::Utc::now().timestamp_micros();
    let start_us = (now_us - 90 * DAY_US) / 1_000_000 * 1_000_000;
    let mut seed = 11;
    let mut users = Vec::with_capacity(events_n);
    let mut ts = Vec::with_capacity(events_n);
    let mut amount = Vec::with_capacity(events_n);
    for _ in 0..events_n {
        let (user, at, value) = event(&mut seed, entities, start_us, now_us);
        users.push(user);
        ts.push(at);
        amount.push(value);
    }
    let mut events = events_frame(&users, ts.clone(), &amount)?;
    let table = post(
        "/api/v1/raw-tables",
        json!({"name": "payments", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "ts": "datetime", "amount": "float"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("no table id")?;
    let chunk = 2_000_000;
    let timer = Instant::now();
    for lo in (0..events_n).step_by(chunk) {
        let mut part = events.slice(lo as i64, chunk.min(events_n - lo));
        send(
            http.post(format!("{base}/api/v1/raw-tables/{table}/data"))
                .header("content-type", "application/vnd.apache.parquet")
                .body(parquet(&mut part)?),
            "ingest",
        )
        .await?;
    }
    let ingest_s = timer.elapsed().as_secs_f64();
    post("/api/v1/features", spend(table)).await?;

    // Labels: half at an event's own time, half anywhere in the 90 days.
    let mut label_users = Vec::with_capacity(labels_n);
    let mut label_ts = Vec::with_capacity(labels_n);
    for i in 0..labels_n {
        if i % 2 == 0 {
            let e = lcg(&mut seed) as usize % events_n;
            label_users.push(users[e].clone());
            label_ts.push(ts[e]);
        } else {
            label_users.push(format!("u{}", lcg(&mut seed) as usize % entities));
            label_ts.push(start_us + (lcg(&mut seed) as i64 % (90 * DAY_US)));
        }
    }
    let mut labels = DataFrame::new(
        labels_n,
        vec![
            Column::new("entity_id".into(), &label_users),
            Int64Chunked::from_vec("timestamp".into(), label_ts.clone())
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column(),
            Column::new("row_no".into(), (0..labels_n as i64).collect::<Vec<_>>()),
        ],
    )?;
    let labels_parquet = parquet(&mut labels)?;
    let timer = Instant::now();
    let answer = send(
        http.post(format!("{base}/api/v1/training-sets?features=spend"))
            .header("content-type", "application/vnd.apache.parquet")
            .header("accept", "application/vnd.apache.parquet")
            .body(labels_parquet.clone()),
        "training set",
    )
    .await?;
    let training_s = timer.elapsed().as_secs_f64();
    let ours = ParquetReader::new(std::io::Cursor::new(answer)).finish()?;
    let worker_rss = std::fs::read_to_string(&log)?
        .lines()
        .filter(|l| l.contains("training set gathered"))
        .filter_map(|l| l.split("worker_peak_rss_mib=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);

    // DuckDB over the same files.
    let events_path = dir.path().join("events.parquet");
    let labels_path = dir.path().join("labels.parquet");
    let out_path = dir.path().join("duck.parquet");
    std::fs::write(&events_path, parquet(&mut events)?)?;
    std::fs::write(&labels_path, &labels_parquet)?;
    let script = dir.path().join("duck.py");
    std::fs::write(&script, DUCKDB)?;
    let duckdb = || -> Result<(f64, DataFrame), Error> {
        let duck = Command::new("python3")
            .arg(&script)
            .arg(&events_path)
            .arg(&labels_path)
            .arg(&out_path)
            .arg(threads.to_string())
            .output()?;
        if !duck.status.success() {
            return Err(format!("duckdb: {}", String::from_utf8_lossy(&duck.stderr)).into());
        }
        let seconds: f64 = String::from_utf8_lossy(&duck.stdout).trim().parse()?;
        let reference = ParquetReader::new(std::fs::File::open(&out_path)?).finish()?;
        Ok((seconds, reference))
    };
    let (duck_s, reference) = duckdb()?;
    let mismatches = compare(&ours, &reference, "spend__")?;

    // The same labels as a raw table, the answer written as a Parquet dataset.
    let label_table = post(
        "/api/v1/raw-tables",
        json!({"name": "labels", "schema_definition":
            {"entity_id": "string", "timestamp": "datetime", "row_no": "integer"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("no label table id")?;
    for lo in (0..labels_n).step_by(chunk) {
        let mut part = labels.slice(lo as i64, chunk.min(labels_n - lo));
        send(
            http.post(format!("{base}/api/v1/raw-tables/{label_table}/data"))
                .header("content-type", "application/vnd.apache.parquet")
                .body(parquet(&mut part)?),
            "label ingest",
        )
        .await?;
    }
    let timer = Instant::now();
    let written = post(
        "/api/v1/training-sets/datasets",
        json!({"features": ["spend"], "labels": {"raw_table_id": label_table}}),
    )
    .await?;
    let dataset_s = timer.elapsed().as_secs_f64();
    let mut dataset: Option<DataFrame> = None;
    for file in written["files"].as_array().ok_or("no files")? {
        let path = file.as_str().ok_or("a file is not text")?;
        let part = ParquetReader::new(std::fs::File::open(path)?).finish()?;
        match &mut dataset {
            Some(frame) => {
                frame.vstack_mut(&part)?;
            }
            None => dataset = Some(part),
        }
    }
    let dataset = dataset
        .ok_or("the dataset has no files")?
        .sort(["row_no"], SortMultipleOptions::default())?;
    let dataset_mismatches = if dataset.height() == labels_n {
        compare(&dataset, &reference, "spend__")?
    } else {
        return Err(format!("the dataset has {} rows", dataset.height()).into());
    };
    let server_log = std::fs::read_to_string(&log)?;
    let dataset_line = server_log
        .lines()
        .rfind(|l| l.contains("training set written as a dataset"))
        .unwrap_or("");
    // Where the worker's time went: reading the labels, gathering, writing the files.
    let field = |line: &str, name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let dataset_rss = field(dataset_line, "worker_peak_rss_mib");
    let dataset_steps = format!(
        "read labels {} ms, gather {} ms, write {} ms",
        field(dataset_line, "read_labels_ms"),
        field(dataset_line, "gather_ms"),
        field(dataset_line, "write_ms")
    );

    // Online GETs, each against DuckDB at its own evaluated_at.
    let mut online_checked = 0;
    let mut online_mismatches = 0;
    let mut probes_user = Vec::new();
    let mut probes_at = Vec::new();
    let mut online_values = Vec::new();
    for _ in 0..online_n {
        let user = format!("u{}", lcg(&mut seed) as usize % entities);
        let body = send(
            http.get(format!(
                "{base}/api/v1/feature-vectors?feature_name=spend&entity_id={user}"
            )),
            "online GET",
        )
        .await?;
        let v: Value = serde_json::from_slice(&body)?;
        let at = chrono::DateTime::parse_from_rfc3339(v["evaluated_at"].as_str().unwrap_or(""))?
            .timestamp_micros();
        probes_user.push(user);
        probes_at.push(at);
        online_values.push(v["feature_values"].clone());
    }
    if online_n > 0 {
        let mut probes = DataFrame::new(
            online_n,
            vec![
                Column::new("entity_id".into(), &probes_user),
                Int64Chunked::from_vec("timestamp".into(), probes_at)
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_column(),
                Column::new("row_no".into(), (0..online_n as i64).collect::<Vec<_>>()),
            ],
        )?;
        std::fs::write(&labels_path, parquet(&mut probes)?)?;
        let (_, reference) = duckdb()?;
        let names: Vec<String> = reference
            .get_column_names()
            .iter()
            .filter(|n| n.as_str() != "row_no")
            .map(|n| n.to_string())
            .collect();
        let columns: Vec<Column> = names
            .iter()
            .map(|n| {
                let values: Vec<Option<f64>> = online_values
                    .iter()
                    .map(|v| v[n.as_str()].as_f64())
                    .collect();
                Column::new(format!("spend__{n}").into(), values)
            })
            .collect();
        let online_frame = DataFrame::new(online_n, columns)?;
        online_mismatches = compare(&online_frame, &reference, "spend__")?;
        online_checked = online_n;
    }

    // Serving: the aggregation GET against a computed SQL feature's cached GET, same run.
    post(
        "/api/v1/features",
        json!({"name": "total", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id"}),
    )
    .await?;
    post("/api/v1/features/2/compute", json!({"version": "v1"})).await?;
    let wrk = |feature: &str| wrk(&base, feature, duration);
    let (sql_rps, sql_p99) = wrk("total")?;
    let (agg_rps, agg_p99) = wrk("spend")?;

    // Ingest beside the feature: the same rows into the table the aggregation feature reads
    // (its state is held, from the GETs above) and into a table no feature reads, in turns;
    // after each, the next GET must count the rows of a user that only that batch has.
    let plain = post(
        "/api/v1/raw-tables",
        json!({"name": "payments_plain", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "ts": "datetime", "amount": "float"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("no table id")?;
    const PROBE_ROWS: usize = 10;
    let (mut with_feature, mut without, mut next_get) = (Vec::new(), Vec::new(), Vec::new());
    let mut fresh_counted = 0;
    for round in 0..fresh_rounds {
        let probe = format!("probe{round}");
        let now_us = chrono::Utc::now().timestamp_micros();
        let (mut users, mut ts, mut amount) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..fresh_n.max(PROBE_ROWS) {
            users.push(if i < PROBE_ROWS {
                probe.clone()
            } else {
                format!("u{}", lcg(&mut seed) as usize % entities)
            });
            // Within the last half hour, so every window counts them.
            ts.push(now_us - 1_000_000 - (lcg(&mut seed) as i64 % 1_800) * 1_000_000);
            amount.push(Some((lcg(&mut seed) % 100_000) as f64 / 100.0));
        }
        let mut batch = events_frame(&users, ts, &amount)?;
        let body = parquet(&mut batch)?;
        let mut order = [(plain, false), (table, true)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (target, featured) in order {
            let timer = Instant::now();
            send(
                http.post(format!("{base}/api/v1/raw-tables/{target}/data"))
                    .header("content-type", "application/vnd.apache.parquet")
                    .body(body.clone()),
                "ingest",
            )
            .await?;
            let took = timer.elapsed().as_secs_f64();
            if featured {
                with_feature.push(took);
            } else {
                without.push(took);
            }
        }
        let timer = Instant::now();
        let v: Value = serde_json::from_slice(
            &send(
                http.get(format!(
                    "{base}/api/v1/feature-vectors?feature_name=spend&entity_id={probe}"
                )),
                "the GET after the ingest",
            )
            .await?,
        )?;
        next_get.push(timer.elapsed().as_secs_f64());
        if v["feature_values"]["amount_count_1h"].as_i64() == Some(PROBE_ROWS as i64) {
            fresh_counted += 1;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (with_s, without_s, next_s) = (
        median(&mut with_feature),
        median(&mut without),
        median(&mut next_get),
    );

    println!("events {events_n} over {entities} entities and 90 days; {labels_n} labels; 16 values a row; {threads} threads for the worker and for DuckDB");
    println!("| what | figure |");
    println!("|---|---|");
    println!("| ingest, Parquet in chunks of 2M rows | {ingest_s:.2} s |");
    println!("| training set, Parquet in and out, end to end | {training_s:.2} s |");
    println!("| worker peak RSS | {worker_rss} MiB |");
    println!("| DuckDB window query, same values, same files | {duck_s:.2} s |");
    println!("| DuckDB / ours | {:.2} x |", duck_s / training_s);
    println!(
        "| training set from a label table, written as {} Parquet files (call to answer) | {dataset_s:.2} s |",
        written["files"].as_array().map_or(0, Vec::len)
    );
    println!("| its worker peak RSS | {dataset_rss} MiB |");
    println!("| its worker's steps | {dataset_steps} |");
    println!(
        "| DuckDB / ours, label table in, dataset out | {:.2} x |",
        duck_s / dataset_s
    );
    println!(
        "| dataset values differing from DuckDB's (of {}) | {dataset_mismatches} |",
        labels_n * 16
    );
    println!(
        "| values differing from DuckDB's (of {}) | {mismatches} |",
        labels_n * 16
    );
    println!(
        "| online GETs differing from DuckDB at their evaluated_at (of {} values) | {online_mismatches} |",
        online_checked * 16
    );
    println!("| SQL feature cached GET, wrk -c16 | {sql_rps:.0} req/s, p99 {sql_p99} |");
    println!("| aggregation feature GET, wrk -c16 | {agg_rps:.0} req/s, p99 {agg_p99} |");
    println!(
        "| aggregation / SQL | {:.2} x |",
        agg_rps / sql_rps.max(1.0)
    );
    println!(
        "| ingest of {fresh_n} rows (Parquet), median of {fresh_rounds}: into the feature's table / into a table no feature reads | {:.3} s / {:.3} s = {:.2} x |",
        with_s,
        without_s,
        with_s / without_s.max(1e-9)
    );
    println!(
        "| the GET after each ingest: counted that ingest's rows / took (median) | {fresh_counted} of {fresh_rounds} / {:.1} ms |",
        next_s * 1000.0
    );
    Ok(())
}

/// feature-store on a fresh SQLite in `dir` (its log in `dir/server.log`), with `env` besides
/// the bench's settings, once it answers: the process, its pid and its base URL.
async fn start_server(
    server: &str,
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> Result<(Proc, u32, String), Error> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(server)
        .env("DATABASE_URL", format!("sqlite:{}/bench.db", dir.display()))
        .env("PORT", port.to_string())
        .env("REDIS_URL", "")
        .env("MAX_BODY_BYTES", "268435456")
        // The binary before batched online reads sent a feature's events as one blob.
        .env("COMPUTE_MAX_RESULT_MB", "4096")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(std::fs::File::create(dir.join("server.log"))?))
        .spawn()?;
    let pid = child.id();
    let server = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((server, pid, base))
}

/// Events as the payments table holds them: `(user_id, ts, amount)`, times in microseconds.
fn events_frame(
    users: &[String],
    ts: Vec<i64>,
    amount: &[Option<f64>],
) -> Result<DataFrame, Error> {
    Ok(DataFrame::new(
        users.len(),
        vec![
            Column::new("user_id".into(), users),
            Int64Chunked::from_vec("ts".into(), ts)
                .into_datetime(TimeUnit::Microseconds, None)
                .into_column(),
            Column::new("amount".into(), amount),
        ],
    )?)
}

/// One random event over `entities` users and the 90 days from `start_us`, in whole seconds
/// before `now_us`, its amount missing one time in ten.
fn event(
    seed: &mut u64,
    entities: usize,
    start_us: i64,
    now_us: i64,
) -> (String, i64, Option<f64>) {
    let user = format!("u{}", lcg(seed) as usize % entities);
    let at = start_us + (lcg(seed) as i64 % (90 * 86_400)) * 1_000_000;
    let amount = (!lcg(seed).is_multiple_of(10)).then(|| (lcg(seed) % 100_000) as f64 / 100.0);
    (user, at.min(now_us - 1_000_000), amount)
}

/// The aggregation feature both modes declare: count, sum, mean and max of the amount over
/// 1h, 1d, 7d and 30d.
fn spend(table: i64) -> Value {
    let aggregations: Vec<Value> = FUNCTIONS
        .iter()
        .map(|f| json!({"column": "amount", "function": f, "windows": ["1h", "1d", "7d", "30d"]}))
        .collect();
    json!({"name": "spend", "raw_table_id": table, "entity_key": "user_id",
        "aggregations": aggregations})
}

/// wrk at 16 connections on one entity's GET of `feature`: req/s and p99.
fn wrk(base: &str, feature: &str, duration: u64) -> Result<(f64, String), Error> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{duration}s"), "--latency"])
        .arg(format!(
            "{base}/api/v1/feature-vectors?feature_name={feature}&entity_id=u1"
        ))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    Ok((rps, p99))
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `--online-state`: what a replica holds to answer the feature online over a large table.
/// The events are made and ingested 2M rows at a time (never all in this process); then the
/// replica's first GET, which has a worker read the events a 30-day window can still hold,
/// the server's resident memory before and after it and at its peak, and what the server
/// logs of the events read.
async fn online_state(
    server: &str,
    events_n: usize,
    entities: usize,
    threads: usize,
    duration: u64,
) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("server.log");
    let (_server, pid, base) = start_server(
        server,
        dir.path(),
        &[
            ("AGGREGATION_MAX_HELD_EVENTS", events_n.to_string()),
            // The SQL feature's compute over every event, for the serving comparison.
            ("COMPUTE_TIMEOUT_SECONDS", "600".to_string()),
            ("COMPUTE_THREADS", threads.to_string()),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let created: Value = serde_json::from_slice(
        &send(
            http.post(format!("{base}/api/v1/raw-tables")).json(&json!({
                "name": "payments", "event_time_column": "ts",
                "schema_definition": {"user_id": "string", "ts": "datetime", "amount": "float"}})),
            "table",
        )
        .await?,
    )?;
    let table = created["id"].as_i64().ok_or("no table id")?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let start_us = (now_us - 90 * DAY_US) / 1_000_000 * 1_000_000;
    let mut seed = 11;
    let chunk = 2_000_000;
    let mut held_expected = 0usize;
    let timer = Instant::now();
    for lo in (0..events_n).step_by(chunk) {
        let n = chunk.min(events_n - lo);
        let (mut users, mut ts, mut amount) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let (user, at, value) = event(&mut seed, entities, start_us, now_us);
            // What a replica holds: the events after now - 30 days - its 1-minute margin.
            if at > now_us - 30 * DAY_US - 60_000_000 {
                held_expected += 1;
            }
            users.push(user);
            ts.push(at);
            amount.push(value);
        }
        let mut part = events_frame(&users, ts, &amount)?;
        send(
            http.post(format!("{base}/api/v1/raw-tables/{table}/data"))
                .header("content-type", "application/vnd.apache.parquet")
                .body(parquet(&mut part)?),
            "ingest",
        )
        .await?;
    }
    let made_and_ingested_s = timer.elapsed().as_secs_f64();
    send(
        http.post(format!("{base}/api/v1/features"))
            .json(&spend(table)),
        "feature",
    )
    .await?;
    let get = |user: String| {
        let req = http.get(format!(
            "{base}/api/v1/feature-vectors?feature_name=spend&entity_id={user}"
        ));
        async move { send(req, "GET").await }
    };
    let (rss_before, peak_before) = rss_mib(pid);
    let timer = Instant::now();
    // The server's RSS each second while the first GET reads the events.
    let series = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampled = series.clone();
    let sampling = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(mut s) = sampled.lock() {
                s.push(rss_mib(pid).0);
            }
        }
    });
    get("u1".into()).await?;
    let first_get_s = timer.elapsed().as_secs_f64();
    sampling.abort();
    let series: Vec<String> = series
        .lock()
        .map(|s| s.iter().map(u64::to_string).collect())
        .unwrap_or_default();
    let (rss_after, peak_after) = rss_mib(pid);
    let timer = Instant::now();
    let gets = 1000;
    for _ in 0..gets {
        get(format!("u{}", lcg(&mut seed) as usize % entities)).await?;
    }
    let get_ms = timer.elapsed().as_secs_f64() * 1000.0 / gets as f64;
    let logged = std::fs::read_to_string(&log)?
        .lines()
        .rfind(|l| l.contains("online events read"))
        .unwrap_or("")
        .to_string();
    let field = |name: &str| -> u64 {
        logged
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (read, bytes) = (field("events_read"), field("bytes"));
    // Serving: the aggregation GET against a computed SQL feature's cached GET, same run.
    send(
        http.post(format!("{base}/api/v1/features")).json(&json!({
            "name": "total", "raw_table_id": table, "entity_key": "user_id",
            "computation_logic": "SELECT user_id, SUM(amount) AS total FROM data GROUP BY user_id"})),
        "SQL feature",
    )
    .await?;
    let timer = Instant::now();
    send(
        http.post(format!("{base}/api/v1/features/2/compute"))
            .json(&json!({"version": "v1"})),
        "compute",
    )
    .await?;
    let compute_s = timer.elapsed().as_secs_f64();
    let (sql_rps, sql_p99) = wrk(&base, "total", duration)?;
    let (agg_rps, agg_p99) = wrk(&base, "spend", duration)?;
    println!("online state: {events_n} events over {entities} entities and 90 days; the feature's 16 values (count, sum, mean, max of a float over 1h, 1d, 7d, 30d); {threads} worker threads");
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| events made and ingested (Parquet, 2M rows a request) | {made_and_ingested_s:.1} s |"
    );
    println!("| events after now − 30 d − 1 min, made here | {held_expected} |");
    println!("| the replica's first GET (a worker reads them, the replica holds them) | {first_get_s:.2} s |");
    println!("| events read, as the server logs them | {read} |");
    println!(
        "| bytes held, as the server counts them (`Held::bytes`) | {} MiB ({:.1} B an event) |",
        bytes / (1 << 20),
        bytes as f64 / read.max(1) as f64
    );
    println!(
        "| server RSS before the first GET / after it | {rss_before} / {rss_after} MiB (+{} MiB) |",
        rss_after.saturating_sub(rss_before)
    );
    println!(
        "| server peak RSS before the first GET / after it | {peak_before} / {peak_after} MiB |"
    );
    println!(
        "| server RSS each second of the first GET | {} MiB |",
        series.join(", ")
    );
    println!(
        "| the server's log of the read | {} |",
        logged
            .split("online events read")
            .nth(1)
            .unwrap_or("")
            .trim()
    );
    println!("| {gets} GETs at random users after it, one at a time | {get_ms:.2} ms each |");
    println!("| (the SQL feature's compute over every event) | {compute_s:.1} s |");
    println!("| SQL feature cached GET, wrk -c16 | {sql_rps:.0} req/s, p99 {sql_p99} |");
    println!("| aggregation feature GET, wrk -c16 | {agg_rps:.0} req/s, p99 {agg_p99} |");
    println!(
        "| aggregation / SQL | {:.2} x |",
        agg_rps / sql_rps.max(1.0)
    );
    Ok(())
}

/// Values of `ours` (columns `{prefix}{name}`) that differ from `reference`'s, row by row:
/// counts exactly, floats within 1e-9 of the window's scale.
fn compare(ours: &DataFrame, reference: &DataFrame, prefix: &str) -> Result<usize, Error> {
    let mut bad = 0;
    for name in reference.get_column_names() {
        if name.as_str() == "row_no" {
            continue;
        }
        let theirs = reference.column(name)?.cast(&DataType::Float64)?;
        let mine = ours
            .column(&format!("{prefix}{name}"))?
            .cast(&DataType::Float64)?;
        let scale = reference
            .column(
                &name
                    .replace("_max_", "_sum_")
                    .replace("_mean_", "_sum_")
                    .replace("_count_", "_sum_"),
            )?
            .cast(&DataType::Float64)?;
        for ((a, b), s) in mine
            .f64()?
            .iter()
            .zip(theirs.f64()?.iter())
            .zip(scale.f64()?.iter())
        {
            // DuckDB's COUNT over an empty frame is 0, ours too; SUM, AVG, MAX are null.
            let same = match (a, b) {
                (Some(a), Some(b)) => {
                    (a - b).abs() <= 1e-9 * s.unwrap_or(0.0).abs().max(b.abs()).max(1.0)
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                if bad < 5 {
                    eprintln!("{name}: ours {a:?}, DuckDB {b:?}");
                }
                bad += 1;
            }
        }
    }
    Ok(bad)
}

/// `--large-dataset`: the training set of a label table written as a Parquet dataset at the
/// issue's scale (EVENTS events over ENTITIES users and 90 days, LABELS labels, half of them
/// at an event's own time), timed from the call to its answer, with the worker's peak RSS and
/// steps from the server's log. DuckDB is not run at this size: every row of the users whose
/// number is a multiple of 997 is compared with a brute-force evaluation of their events,
/// which the bench keeps.
async fn large_dataset(
    server: &str,
    events_n: usize,
    entities: usize,
    labels_n: usize,
    threads: usize,
) -> Result<(), Error> {
    const SAMPLED: usize = 997;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("server.log");
    let (_server, _, base) = start_server(
        server,
        dir.path(),
        &[
            ("COMPUTE_TIMEOUT_SECONDS", "600".to_string()),
            ("COMPUTE_THREADS", threads.to_string()),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).json(&body);
        let what = path.to_string();
        async move { Ok::<Value, Error>(serde_json::from_slice(&send(req, &what).await?)?) }
    };
    let table = post(
        "/api/v1/raw-tables",
        json!({"name": "payments", "event_time_column": "ts",
            "schema_definition": {"user_id": "string", "ts": "datetime", "amount": "float"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("no table id")?;
    let label_table = post(
        "/api/v1/raw-tables",
        json!({"name": "labels", "schema_definition":
            {"entity_id": "string", "timestamp": "datetime", "row_no": "integer"}}),
    )
    .await?["id"]
        .as_i64()
        .ok_or("no label table id")?;
    let ingest = |table: i64, mut frame: DataFrame| {
        let req = parquet(&mut frame).map(|body| {
            http.post(format!("{base}/api/v1/raw-tables/{table}/data"))
                .header("content-type", "application/vnd.apache.parquet")
                .body(body)
        });
        async move { send(req?, "ingest").await }
    };
    let now_us = chrono::Utc::now().timestamp_micros();
    let start_us = (now_us - 90 * DAY_US) / 1_000_000 * 1_000_000;
    let mut seed = 11;
    let chunk = 2_000_000;
    // The sampled users' events: user number -> (time, amount).
    let mut kept: std::collections::HashMap<usize, Vec<(i64, Option<f64>)>> = Default::default();
    let labels_per_chunk = labels_n.div_ceil(events_n.div_ceil(chunk).max(1));
    let (mut label_users, mut label_ts) = (Vec::new(), Vec::new());
    let timer = Instant::now();
    for lo in (0..events_n).step_by(chunk) {
        let n = chunk.min(events_n - lo);
        let (mut users, mut ts, mut amount) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let (user, at, value) = event(&mut seed, entities, start_us, now_us);
            let number: usize = user[1..].parse()?;
            if number.is_multiple_of(SAMPLED) {
                kept.entry(number).or_default().push((at, value));
            }
            users.push(user);
            ts.push(at);
            amount.push(value);
        }
        for i in 0..labels_per_chunk.min(labels_n - label_users.len()) {
            if i % 2 == 0 {
                let e = lcg(&mut seed) as usize % n;
                label_users.push(users[e].clone());
                label_ts.push(ts[e]);
            } else {
                label_users.push(format!("u{}", lcg(&mut seed) as usize % entities));
                label_ts.push(start_us + (lcg(&mut seed) as i64 % (90 * DAY_US)));
            }
        }
        let part = events_frame(&users, ts, &amount)?;
        ingest(table, part).await?;
    }
    let events_s = timer.elapsed().as_secs_f64();
    let timer = Instant::now();
    let labels_n = label_users.len();
    for lo in (0..labels_n).step_by(chunk) {
        let hi = (lo + chunk).min(labels_n);
        let part = DataFrame::new(
            hi - lo,
            vec![
                Column::new("entity_id".into(), &label_users[lo..hi]),
                Int64Chunked::from_vec("timestamp".into(), label_ts[lo..hi].to_vec())
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_column(),
                Column::new("row_no".into(), (lo as i64..hi as i64).collect::<Vec<_>>()),
            ],
        )?;
        ingest(label_table, part).await?;
    }
    let labels_s = timer.elapsed().as_secs_f64();
    post("/api/v1/features", spend(table)).await?;
    println!(
        "{events_n} events over {entities} users and 90 days (ingested in {events_s:.1} s), \
         {labels_n} labels (ingested in {labels_s:.1} s), {threads} compute thread(s)"
    );

    let timer = Instant::now();
    let written = post(
        "/api/v1/training-sets/datasets",
        json!({"features": ["spend"], "labels": {"raw_table_id": label_table}}),
    )
    .await?;
    let dataset_s = timer.elapsed().as_secs_f64();
    let server_log = std::fs::read_to_string(&log)?;
    let line = server_log
        .lines()
        .rfind(|l| l.contains("training set written as a dataset"))
        .unwrap_or("");
    let field = |name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let files = written["files"].as_array().ok_or("no files")?;
    println!(
        "dataset: {dataset_s:.2} s, {} rows in {} files; worker peak RSS {} MiB; \
         read labels {} ms, spill {} ms, gather (spill included) {} ms, write {} ms",
        written["rows"],
        files.len(),
        field("worker_peak_rss_mib"),
        field("read_labels_ms"),
        field("spill_ms"),
        field("gather_ms"),
        field("write_ms"),
    );

    // The sampled users' rows against brute force over their kept events.
    for events in kept.values_mut() {
        events.sort_by_key(|e| e.0);
    }
    let mut ours: Option<DataFrame> = None;
    for file in files {
        let path = file.as_str().ok_or("a file is not text")?;
        let part = ParquetReader::new(std::fs::File::open(path)?).finish()?;
        let sampled: BooleanChunked = part
            .column("entity_id")?
            .str()?
            .iter()
            .map(|u| {
                u.and_then(|u| u[1..].parse::<usize>().ok())
                    .is_some_and(|n| n.is_multiple_of(SAMPLED))
            })
            .collect();
        let part = part.filter(&sampled)?;
        match &mut ours {
            Some(frame) => {
                frame.vstack_mut(&part)?;
            }
            None => ours = Some(part),
        }
    }
    let ours = ours.ok_or("the dataset has no files")?;
    let sampled_labels = label_users
        .iter()
        .filter(|u| {
            u[1..]
                .parse::<usize>()
                .is_ok_and(|n| n.is_multiple_of(SAMPLED))
        })
        .count();
    if ours.height() != sampled_labels || written["rows"].as_u64() != Some(labels_n as u64) {
        return Err(format!(
            "the dataset has {} rows ({} of sampled users) for {labels_n} labels ({sampled_labels} of sampled users)",
            written["rows"],
            ours.height()
        )
        .into());
    }
    let users: Vec<usize> = ours
        .column("entity_id")?
        .str()?
        .iter()
        .map(|u| u.and_then(|u| u[1..].parse().ok()).unwrap_or(usize::MAX))
        .collect();
    let at: Vec<i64> = ours
        .column("timestamp")?
        // Microseconds, as every training set writes it.
        .to_physical_repr()
        .i64()?
        .iter()
        .map(|t| t.unwrap_or(i64::MIN))
        .collect();
    let mut reference: Vec<Column> = vec![Column::new(
        "row_no".into(),
        (0..ours.height() as i64).collect::<Vec<_>>(),
    )];
    for (window, seconds) in [
        ("1h", 3_600i64),
        ("1d", 86_400),
        ("7d", 604_800),
        ("30d", 2_592_000),
    ] {
        let (mut count, mut sum, mut mean, mut max) = (vec![], vec![], vec![], vec![]);
        for (user, &t) in users.iter().zip(&at) {
            let events = kept.get(user).map_or(&[][..], Vec::as_slice);
            let lo = events.partition_point(|e| e.0 <= t - seconds * 1_000_000);
            let hi = events.partition_point(|e| e.0 <= t);
            let values: Vec<f64> = events[lo..hi].iter().filter_map(|e| e.1).collect();
            let total: f64 = values.iter().sum();
            count.push(Some(values.len() as f64));
            sum.push((!values.is_empty()).then_some(total));
            mean.push((!values.is_empty()).then(|| total / values.len() as f64));
            max.push(values.iter().copied().reduce(f64::max));
        }
        for (name, values) in [("count", count), ("sum", sum), ("mean", mean), ("max", max)] {
            reference.push(Column::new(
                format!("amount_{name}_{window}").into(),
                values,
            ));
        }
    }
    let reference = DataFrame::new(ours.height(), reference)?;
    let mismatches = compare(&ours, &reference, "spend__")?;
    println!(
        "checked: {} rows of the sampled users ({} users with events), {} values, {mismatches} \
         differ from brute force",
        ours.height(),
        kept.len(),
        ours.height() * 16
    );
    Ok(())
}
