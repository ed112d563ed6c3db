//! The worker's side: read one job from stdin, run it, write the reply to stdout, exit.
//!
//! Limits are not enforced here: the server set them on this process before it started, and
//! kills it at the deadline. What this side adds is a readable reason when the engine panics.

use std::io::{self, BufReader, BufWriter};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use super::protocol::{self, FailureKind, Job, Reply, Results};
use crate::engine::{batches, event_time, execute, result, schema::TableSchema, stats};

/// A panic is reported on stderr on one line after this marker, so the server can quote it.
pub const PANIC_MARK: &str = "feature-store worker panic: ";

pub fn main() -> ExitCode {
    panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        eprintln!("{PANIC_MARK}{}", execute::clean_message(&message));
    }));
    let (job, inputs) = match protocol::read_job(&mut BufReader::new(io::stdin().lock())) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("the compute worker could not read its job: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome =
        panic::catch_unwind(AssertUnwindSafe(|| run(&job, inputs))).unwrap_or_else(|payload| {
            Err((
                FailureKind::Sql,
                format!(
                    "the engine crashed: {}",
                    execute::clean_message(&panic_message(&*payload))
                ),
            ))
        });
    let (reply, results) = match outcome {
        Ok(done) => (
            Reply {
                failure: None,
                output_schema: done.output_schema,
                rows: done.rows,
                stats_micros: done.stats_micros,
            },
            done.results,
        ),
        Err(failure) => (
            Reply {
                failure: Some(failure),
                output_schema: Default::default(),
                rows: 0,
                stats_micros: 0,
            },
            None,
        ),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    match protocol::write_reply(&mut out, &reply, results.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the compute worker could not write its reply: {e}");
            ExitCode::from(3)
        }
    }
}

struct Outcome {
    output_schema: std::collections::BTreeMap<String, String>,
    rows: usize,
    results: Option<Results>,
    stats_micros: u64,
}

fn run(job: &Job, inputs: Vec<Vec<u8>>) -> Result<Outcome, (FailureKind, String)> {
    let schema = TableSchema::from_definition(&job.schema).map_err(|e| (FailureKind::Input, e))?;
    let frame = if job.dry_run {
        schema.empty_frame()
    } else {
        batches::decode_all(&inputs, &schema.polars_schema())
            .map_err(|e| (FailureKind::Input, e))?
    };
    drop(inputs);
    let frame = match &job.as_of {
        Some(limit) => event_time::rows_until(frame, &limit.column, limit.micros)
            .map_err(|e| (FailureKind::Input, e))?,
        None => frame,
    };
    let out = execute::run_sql(&job.sql, frame).map_err(|e| (FailureKind::Sql, e))?;
    let encoded = result::encode(&out, &job.entity_key, job.max_rows)
        .map_err(|e| (FailureKind::Result, e))?;
    if job.dry_run {
        return Ok(Outcome {
            output_schema: encoded.output_schema,
            rows: 0,
            results: None,
            stats_micros: 0,
        });
    }
    let vectors = result::vectors_to_ipc(&encoded.vectors).map_err(|e| (FailureKind::Result, e))?;
    let timer = std::time::Instant::now();
    let stats = stats::frame_stats(&out, &job.entity_key)
        .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
        .map_err(|e| (FailureKind::Result, e))?;
    let stats_micros = timer.elapsed().as_micros() as u64;
    let snapshot =
        result::snapshot_to_ipc(out, &job.entity_key).map_err(|e| (FailureKind::Result, e))?;
    Ok(Outcome {
        output_schema: encoded.output_schema,
        rows: encoded.vectors.len(),
        results: Some(Results {
            vectors,
            snapshot,
            stats,
        }),
        stats_micros,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
