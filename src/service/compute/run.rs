//! A compute's first half: a worker slot, then its input (rows sent with the request, or a
//! pinned table version's files), the job for the worker (on Spark, the cluster's result as its
//! input), and the worker started; then the publish (`publish.rs`), detached from the request.

use chrono::{DateTime, Utc};

use super::publish::Publication;
use super::{compute_failed, spark, Made, Target};
use crate::model::Engine;
use crate::offline::Pinned;
use crate::service::jobs::Tracked;
use crate::service::{detached, raw_tables, AppState, Result, ServiceError};
use crate::store::{DataMark, RawTableRow, SnapshotKind};
use crate::worker::{ComputeJob, EventTimeLimit, Input, Job, Task};

/// Where a run's rows come from.
pub(super) enum Source<'a> {
    /// Rows sent with the request, as an Arrow IPC file.
    Piped(Vec<u8>),
    /// The table's newest version, pinned once a worker is free.
    Table(&'a RawTableRow),
    /// A version pinned already (a backfill's steps, a refresh).
    Pinned((Pinned, DataMark)),
}

/// What one worker run computes over, and what kind of snapshot it makes.
pub(super) struct Run<'a> {
    pub table: &'a RawTableRow,
    pub source: Source<'a>,
    pub as_of: Option<EventTimeLimit>,
    pub kind: SnapshotKind,
}

/// Run in a worker and publish. The worker slot comes first and the input after (a queued job
/// holds no data). `job` is marked running once a worker takes it, and when `finishes`,
/// succeeded by the publish's own transaction, even if the client has gone.
pub(super) async fn run_and_publish(
    state: &AppState,
    target: &Target,
    run: Run<'_>,
    tracked: &Tracked,
    finishes: bool,
) -> Result<Made> {
    let started = std::time::Instant::now();
    let admitted = state.compute.admit().await.map_err(compute_failed)?;
    let queued = started.elapsed();
    tracked.running().await;
    let (input, piped, data) = match run.source {
        Source::Piped(rows) => (Input::Piped, Some(rows), None),
        Source::Table(table) => {
            let (pinned, mark) = pinned_rows(state, table).await?;
            (files_of(pinned), None, Some(mark))
        }
        Source::Pinned((pinned, mark)) => (files_of(pinned), None, Some(mark)),
    };
    let valid_from_as_of = run
        .as_of
        .as_ref()
        .and_then(|l| DateTime::<Utc>::from_timestamp_micros(l.micros));
    // An as-of result leaves out rows ingested before it whose event time is later: it never
    // reflects the table's version, so it records none, and a version served from it is stale
    // (and refreshed) until a live compute.
    let data = data.filter(|_| valid_from_as_of.is_none());
    // A result older than what is served can only be history: its vectors are not written.
    let may_serve = match valid_from_as_of {
        Some(at) => state
            .store
            .newest_valid_from(target.feature_id, &target.version)
            .await?
            .is_none_or(|newest| at >= newest),
        None => true,
    };
    let location = state.offline.new_snapshot_path(target.feature_id);
    let input_rows = match &piped {
        Some(_) => 0,
        None => state.store.stored_row_count(run.table.id).await?.max(0) as u64,
    };
    let mut task = ComputeJob {
        sql: target.logic.clone(),
        entity_key: target.entity_key.clone(),
        max_rows: state.config.compute_max_rows,
        schema: raw_tables::definition_of(run.table)?,
        dry_run: false,
        input,
        as_of: run.as_of,
        snapshot: Some(state.offline.root().join(&location).uri()),
        vectors: may_serve,
        input_rows,
    };
    // Spark runs the SQL and writes its result; the worker then reads that result as its
    // input, with the checks, the snapshot and the vectors of any compute.
    let spark_result = match target.engine {
        Engine::Polars => None,
        Engine::Spark => Some(
            spark::on_spark(
                &state.spark,
                &state.offline,
                state.config.compute_timeout,
                run.table,
                &mut task,
            )
            .await?,
        ),
    };
    let job = Job {
        task: Task::Compute(task),
        storage: state.offline.options().clone(),
    };
    let running = state
        .compute
        .start(admitted, &job, piped.as_deref())
        .await
        .map_err(compute_failed)?;
    let worker = started.elapsed() - queued;
    let reply = running.reply().clone();

    // Publishing and announcing it finish even if the client goes away meanwhile.
    let publish = Publication {
        state: state.clone(),
        feature_id: target.feature_id,
        version: target.version.clone(),
        existing: target.existing,
        logic: target.logic.clone(),
        entity_key: target.entity_key.clone(),
        tracked: tracked.clone(),
        kind: run.kind,
        spark_result,
        reply: reply.clone(),
        may_serve,
        valid_from_as_of,
        location,
        data,
        finishes,
    };
    let publish_started = std::time::Instant::now();
    let (published, valid_from, written) = detached(publish.run(running)).await?;
    let publish_time = publish_started.elapsed();
    if published.served {
        crate::service::stats::refresh_drift_gauge(
            state.stats_parts(),
            target.feature_id,
            published.version_id,
        );
    }
    let micros = std::time::Duration::from_micros;
    Ok(Made {
        published,
        valid_from,
        vectors: reply.rows,
        queued,
        worker,
        query: micros(reply.query_micros),
        stats: micros(reply.stats_micros),
        snapshot: micros(reply.snapshot_micros),
        publish: publish_time,
        written,
        check: micros(reply.check_micros),
        peak_rss_kib: reply.peak_rss_kib,
    })
}

/// The newest version of a table and its files; `Invalid` when it holds no rows yet.
pub(super) async fn pinned_rows(
    state: &AppState,
    table: &RawTableRow,
) -> Result<(Pinned, DataMark)> {
    raw_tables::pin(state, table).await?.ok_or_else(|| {
        ServiceError::Invalid(format!(
            "Invalid raw data: No data provided, and raw table '{}' has no ingested rows",
            table.name
        ))
    })
}

/// The worker's input: a pinned version's files.
fn files_of(pinned: Pinned) -> Input {
    Input::Files {
        files: pinned.files,
        partitioned: pinned.partitioned,
    }
}
