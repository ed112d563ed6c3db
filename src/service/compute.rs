use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::AppState;
use super::{Result, ServiceError};
use crate::model::{BackfillRequest, ComputeResponse, Engine};
use crate::offline::Pinned;
use crate::served::VersionMeta;
use crate::store::{
    DataMark, JobKind, PublishRequest, Published, RawTableRow, SnapshotKind, SnapshotRow,
    StoreError,
};
use crate::times::format_ts;
use crate::worker::{
    ComputeError, ComputeJob, EventTimeLimit, FailureKind, Input, Job, Running, Task,
};

use super::jobs::Tracked;
use super::{blocking, check_label, raw_tables, MAX_VERSION_LEN};
use super::{changed, failures, lookup};

/// Compute a version of a feature and publish its vectors.
///
/// The version is created (active) only when the compute succeeds; an existing version is
/// recomputed with the SQL it snapshotted at creation. `rows` empty means the rows ingested
/// into the raw table: the worker scans the files of its newest version. With `as_of`, only
/// rows whose event time is at or before it count, and the snapshot is valid from `as_of`
/// (served only if no newer one exists). Publishing serves the new vectors in one small
/// transaction, then the cache moves on, so every reader sees the new set as soon as this
/// returns.
pub async fn compute(
    state: &AppState,
    feature_id: i64,
    version: &str,
    rows: Vec<Map<String, Value>>,
    as_of: Option<DateTime<Utc>>,
) -> Result<ComputeResponse> {
    check_label("version", version, MAX_VERSION_LEN)?;
    let started = std::time::Instant::now();
    let feature = lookup::feature(state, feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(state, feature.raw_table_id).await?;
    let (existing, logic, entity_key) = match state.store.find_version(feature_id, version).await? {
        Some(v) => (Some(v.id), v.computation_logic, v.entity_key),
        None => (None, feature.computation_logic, feature.entity_key),
    };
    let target = Target {
        feature_id,
        version: version.to_string(),
        existing,
        logic,
        entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    if target.engine == Engine::Spark {
        super::spark::cluster(state)?;
        if !rows.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "Feature {feature_id} is computed on Spark, which reads its raw table's stored \
                 rows; ingest the rows, then compute without raw_data"
            )));
        }
    }
    let event_time = match as_of {
        Some(at) => Some(event_time_limit(&table, at, state.clock.now())?),
        None => None,
    };
    let source = if rows.is_empty() {
        Source::Table(&table)
    } else {
        // Body rows are checked here (they are the client's input, not SQL) and handed to the
        // worker as one Arrow IPC file.
        let schema = raw_tables::schema_of(&table)?;
        let encoded = blocking(move || {
            let mut frame = schema
                .frame_from_rows(&rows)
                .map_err(|e| ServiceError::Invalid(format!("Invalid raw data: {e}")))?;
            crate::engine::batches::encode(&mut frame).map_err(ServiceError::fault)
        })
        .await??;
        Source::Piped(encoded)
    };
    let job = Tracked::queue(state, JobKind::Compute, feature_id, existing, version).await?;
    let made = run_and_publish(
        state,
        &target,
        Run {
            table: &table,
            source,
            as_of: event_time,
            kind: SnapshotKind::Compute,
        },
        &job,
        true,
    )
    .await;
    if made.is_err() {
        job.finish(&made, None).await;
    }
    let made = made?;
    state
        .metrics
        .compute_seconds
        .get_or_create(&crate::metrics::EngineLabels {
            engine: target.engine.as_str(),
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        feature_id,
        version,
        version_id = made.published.version_id,
        snapshot_id = made.published.snapshot_id,
        served = made.published.served,
        vectors = made.vectors,
        queued_ms = made.queued.as_millis() as u64,
        worker_ms = made.worker.as_millis() as u64,
        query_ms = made.query.as_millis() as u64,
        check_ms = made.check.as_millis() as u64,
        stats_ms = made.stats.as_millis() as u64,
        snapshot_ms = made.snapshot.as_millis() as u64,
        publish_ms = made.publish.as_millis() as u64,
        vectors_wait_ms = made.written.waited.as_millis() as u64,
        vectors_write_ms = made.written.wrote.as_millis() as u64,
        worker_peak_rss_mib = made.peak_rss_kib / 1024,
        "published feature version"
    );
    Ok(ComputeResponse {
        feature_version_id: made.published.version_id,
        vectors_created: made.vectors,
        entities_processed: made.vectors,
        snapshot_id: made.published.snapshot_id,
        valid_from: format_ts(&made.valid_from),
    })
}

/// Make one snapshot per step from `start` to `end` inclusive, each over the rows whose event
/// time is at or before the step, in the compute workers. Every step reads the same table
/// version (pinned once: a file list, not the rows). A step older than the served snapshot is
/// kept as history only.
pub async fn backfill(
    state: &AppState,
    feature_id: i64,
    version_id: i64,
    req: &BackfillRequest,
) -> Result<Vec<SnapshotRow>> {
    let steps = backfill_steps(req, state.clock.now())?;
    let version = lookup::version(state, feature_id, version_id).await?;
    let feature = lookup::feature(state, feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(state, feature.raw_table_id).await?;
    // Checked before any work: every step needs the event time.
    event_time_limit(&table, req.end, state.clock.now())?;
    let target = Target {
        feature_id,
        existing: Some(version.id),
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    let pinned = pinned_rows(state, &table).await?;
    let job = Tracked::queue(
        state,
        JobKind::Backfill,
        feature_id,
        Some(version_id),
        &target.version,
    )
    .await?;
    let mut made = Vec::with_capacity(steps.len());
    let last = steps.len().saturating_sub(1);
    for (i, at) in steps.into_iter().enumerate() {
        let step = match event_time_limit(&table, at, state.clock.now()) {
            Ok(limit) => {
                let run = Run {
                    table: &table,
                    source: Source::Pinned(pinned.clone()),
                    as_of: Some(limit),
                    kind: SnapshotKind::Backfill,
                };
                run_and_publish(state, &target, run, &job, i == last).await
            }
            Err(e) => Err(e),
        };
        match step {
            Ok(step) => made.push(step.published.snapshot_id),
            Err(e) => {
                let failed = Err(ServiceError::Invalid(format!(
                    "step {} of the backfill failed after {} snapshots: {}",
                    made.len() + 1,
                    made.len(),
                    e.public_detail()
                )));
                job.finish::<()>(&failed, None).await;
                return Err(e);
            }
        }
    }
    let listed = state.store.list_snapshots(version_id).await?;
    Ok(listed
        .into_iter()
        .filter(|s| made.contains(&s.id))
        .collect())
}

/// At most this many snapshots per backfill.
pub const MAX_BACKFILL_STEPS: i64 = 1000;

/// `now`: on the database's clock.
fn backfill_steps(req: &BackfillRequest, now: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>> {
    if req.every_seconds < 1 {
        return Err(ServiceError::Invalid(
            "every_seconds must be at least 1".into(),
        ));
    }
    if req.end < req.start {
        return Err(ServiceError::Invalid("end must not be before start".into()));
    }
    if req.end > now {
        return Err(ServiceError::Invalid(
            "end must not be in the future".into(),
        ));
    }
    let span = (req.end - req.start).num_seconds();
    let count = span / req.every_seconds + 1;
    if count > MAX_BACKFILL_STEPS {
        return Err(ServiceError::Invalid(format!(
            "the backfill has {count} steps; at most {MAX_BACKFILL_STEPS} are allowed"
        )));
    }
    Ok((0..count)
        .map(|i| req.start + chrono::Duration::seconds(i * req.every_seconds))
        .collect())
}

/// What a compute runs and where it publishes.
struct Target {
    feature_id: i64,
    version: String,
    /// The version's id when the work began, if it existed: a publish never brings back a
    /// version deleted meanwhile.
    existing: Option<i64>,
    logic: String,
    entity_key: String,
    engine: Engine,
}

struct Made {
    published: Published,
    valid_from: DateTime<Utc>,
    vectors: usize,
    /// Waiting for a worker.
    queued: std::time::Duration,
    /// From the worker's start to its reply: the query, the checks, statistics, the snapshot.
    worker: std::time::Duration,
    query: std::time::Duration,
    stats: std::time::Duration,
    snapshot: std::time::Duration,
    /// From the reply to the publish's commit: the vectors written, then served.
    publish: std::time::Duration,
    written: Written,
    /// Of `query`: checking and sorting the result.
    check: std::time::Duration,
    peak_rss_kib: u64,
}

/// The `as_of` limit of a compute over `table`, or why there can be none.
fn event_time_limit(
    table: &RawTableRow,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<EventTimeLimit> {
    let column = table.event_time_column.clone().ok_or_else(|| {
        ServiceError::Invalid(format!(
            "as_of needs an event time: raw table '{}' has no event_time_column",
            table.name
        ))
    })?;
    if at > now {
        return Err(ServiceError::Invalid(
            "as_of must not be in the future".into(),
        ));
    }
    Ok(EventTimeLimit {
        column,
        micros: at.timestamp_micros(),
    })
}

/// The newest version of a table and its files; `Invalid` when it holds no rows yet.
async fn pinned_rows(state: &AppState, table: &RawTableRow) -> Result<(Pinned, DataMark)> {
    raw_tables::pin(state, table).await?.ok_or_else(|| {
        ServiceError::Invalid(format!(
            "Invalid raw data: No data provided, and raw table '{}' has no ingested rows",
            table.name
        ))
    })
}

/// What a refresh did.
pub enum Refreshed {
    /// The raw table has no version the served snapshot did not read.
    NothingNew,
    Published {
        snapshot_id: i64,
    },
}

/// Recompute a version from its table's newest version if the served snapshot did not read
/// it, and publish the result as a `refresh` snapshot.
pub async fn refresh(state: &AppState, version_id: i64) -> Result<Refreshed> {
    let version = state
        .store
        .get_version(version_id)
        .await?
        .ok_or_else(|| lookup::version_not_found(version_id))?;
    let feature = lookup::feature(state, version.feature_id).await?;
    refuse_aggregations(&feature)?;
    let table = lookup::table(state, feature.raw_table_id).await?;
    let Some(pinned) = raw_tables::pin(state, &table).await? else {
        return Ok(Refreshed::NothingNew);
    };
    if version
        .data_version
        .is_some_and(|read| read >= pinned.1.version)
    {
        return Ok(Refreshed::NothingNew);
    }
    let target = Target {
        feature_id: feature.id,
        existing: Some(version_id),
        version: version.version,
        logic: version.computation_logic,
        entity_key: version.entity_key,
        engine: Engine::from_stored(&feature.engine),
    };
    let job = Tracked::queue(
        state,
        JobKind::Refresh,
        feature.id,
        Some(version_id),
        &target.version,
    )
    .await?;
    let run = Run {
        table: &table,
        source: Source::Pinned(pinned),
        as_of: None,
        kind: SnapshotKind::Refresh,
    };
    let made = run_and_publish(state, &target, run, &job, true).await;
    if made.is_err() {
        job.finish(&made, None).await;
    }
    Ok(Refreshed::Published {
        snapshot_id: made?.published.snapshot_id,
    })
}

/// Where a run's rows come from.
enum Source<'a> {
    /// Rows sent with the request, as an Arrow IPC file.
    Piped(Vec<u8>),
    /// The table's newest version, pinned once a worker is free.
    Table(&'a RawTableRow),
    /// A version pinned already (a backfill's steps, a refresh).
    Pinned((Pinned, DataMark)),
}

/// What one worker run computes over, and what kind of snapshot it makes.
struct Run<'a> {
    table: &'a RawTableRow,
    source: Source<'a>,
    as_of: Option<EventTimeLimit>,
    kind: SnapshotKind,
}

/// Run in a worker and publish. The worker slot comes first and the input after (a queued job
/// holds no data). `job` is marked running once a worker takes it, and when `finishes`,
/// succeeded by the publish's own transaction, even if the client has gone.
async fn run_and_publish(
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
        Engine::Spark => Some(on_spark(state, run.table, &mut task).await?),
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
    let publish = {
        let state = state.clone();
        let feature_id = target.feature_id;
        let version = target.version.clone();
        let existing = target.existing;
        let logic = target.logic.clone();
        let entity_key = target.entity_key.clone();
        let tracked = tracked.clone();
        let kind = run.kind;
        async move {
            // Removed once the worker has read it and the publish is done, whatever the outcome.
            let _spark_result = spark_result;
            let output_schema =
                serde_json::to_string(&reply.output_schema).map_err(ServiceError::fault)?;
            let generation = match may_serve {
                true => Some(
                    state
                        .store
                        .begin_generation(Some(tracked.id()), state.clock.now())
                        .await?,
                ),
                false => None,
            };
            let written = write_vectors(&state, generation, running).await;
            let published = match written {
                Ok(written) => {
                    let computed_at = state.clock.now();
                    let valid_from = valid_from_as_of.unwrap_or(computed_at);
                    state
                        .store
                        .publish(&PublishRequest {
                            feature_id,
                            version: &version,
                            existing,
                            computation_logic: &logic,
                            entity_key: &entity_key,
                            output_schema: &output_schema,
                            computed_at,
                            entity_count: reply.rows as i64,
                            generation,
                            valid_from,
                            kind,
                            location: &location,
                            data,
                            stats: reply.stats.as_deref(),
                            job: finishes.then(|| tracked.id()),
                        })
                        .await
                        .map(|p| (p, valid_from, written))
                        .map_err(|e| match e {
                            StoreError::StillReferenced => lookup::feature_not_found(feature_id),
                            StoreError::VersionGone => ServiceError::NotFound(format!(
                                "Version '{version}' was deleted while it was computed; nothing was published"
                            )),
                            e => e.into(),
                        })
                }
                Err(e) => Err(e),
            };
            let (published, valid_from, written) = match published {
                Ok(done) => done,
                Err(e) => {
                    abandon(&state, generation, &location);
                    return Err(e);
                }
            };
            changed::announce(&state, published.changed()).await;
            if finishes {
                tracked.finished_by_publish();
            }
            if published.served {
                // Batch serving loads a version whole on first use; one too big for its cap is
                // known now, from what was written, and never loaded.
                let meta = VersionMeta {
                    version_id: published.version_id,
                    generation: published.generation,
                    entity_count: Some(reply.rows as i64),
                    computed_at: None,
                    freshness: Default::default(),
                };
                state
                    .cache
                    .note_size(meta, written.bytes, reply.rows as u64)
                    .await;
            }
            Ok((published, valid_from, written))
        }
    };
    let publish_started = std::time::Instant::now();
    let (published, valid_from, written) = super::detached(publish).await?;
    let publish_time = publish_started.elapsed();
    if published.served {
        super::stats::refresh_drift_gauge(state, target.feature_id, published.version_id);
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

/// Run `task`'s SQL on Spark over its input files and point the task at the result: a
/// worker then reads it as it is (`SELECT * FROM data`), with no `as_of` (Spark applied it).
async fn on_spark(
    state: &AppState,
    table: &RawTableRow,
    task: &mut ComputeJob,
) -> Result<super::spark::ResultDir> {
    let spark = super::spark::cluster(state)?;
    super::spark::usable_for(state, table)?;
    let Input::Files { files, partitioned } = &task.input else {
        return Err(ServiceError::Invalid(
            "A feature computed on Spark reads its raw table's stored rows; rows sent with the \
             compute are computed with the polars engine only"
                .into(),
        ));
    };
    if *partitioned {
        return Err(ServiceError::Invalid(format!(
            "Raw table '{}' is a partitioned dataset, which the engine 'spark' does not read here",
            table.name
        )));
    }
    crate::engine::sql_guard::check(&task.sql)
        .map_err(|e| ServiceError::Invalid(format!("Feature computation failed: {e}")))?;
    let dir = super::spark::ResultDir::new(state)?;
    let started = std::time::Instant::now();
    let files = crate::spark::compute(
        spark,
        crate::spark::Run {
            files,
            event_time: task.as_of.as_ref().map(|l| (l.column.as_str(), l.micros)),
            sql: &task.sql,
            output: dir.path(),
        },
        state.config.compute_timeout,
    )
    .await?;
    tracing::info!(
        table = %table.name,
        files = files.len(),
        spark_ms = started.elapsed().as_millis() as u64,
        "Spark computed a feature's result"
    );
    task.sql = format!("SELECT * FROM {}", crate::engine::sql_guard::DATA_TABLE);
    task.input = Input::Result { files };
    task.as_of = None;
    task.input_rows = 0;
    Ok(dir)
}

/// An aggregation feature has no snapshots to compute: its values are evaluated from the
/// raw table's events at the instant each is asked for.
fn refuse_aggregations(feature: &crate::store::FeatureRow) -> Result<()> {
    if feature.declaration.is_none() {
        return Ok(());
    }
    Err(ServiceError::Invalid(format!(
        "Feature '{}' declares aggregations: its values are computed from raw table {}'s \
         events at the instant each is asked for (a request, a training row), so there is no \
         snapshot to compute",
        feature.name, feature.raw_table_id
    )))
}

fn files_of(pinned: Pinned) -> Input {
    Input::Files {
        files: pinned.files,
        partitioned: pinned.partitioned,
    }
}

/// What writing a generation's vectors took.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    /// Bytes of entity ids and values.
    bytes: u64,
    /// Waiting for the worker's chunks, and writing them to the database.
    waited: std::time::Duration,
    wrote: std::time::Duration,
}

/// Write the worker's vectors under `generation` as they arrive, a chunk at a time, then wait
/// for the worker to exit. Without a generation there are none to write.
async fn write_vectors(
    state: &AppState,
    generation: Option<i64>,
    mut running: Running,
) -> Result<Written> {
    let Some(generation) = generation else {
        running.finish().await.map_err(compute_failed)?;
        return Ok(Written::default());
    };
    let mut writer = state.store.vector_writer(generation).await?;
    let mut written = Written::default();
    loop {
        let waiting = std::time::Instant::now();
        let next = running.next_chunk().await;
        written.waited += waiting.elapsed();
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(compute_failed(e));
            }
        };
        // The framing (two u32 lengths a row) is all that is not ids and values.
        written.bytes += (chunk.bytes.len() as u64).saturating_sub(8 * u64::from(chunk.rows));
        let writing = std::time::Instant::now();
        let stored = writer.write(chunk).await;
        written.wrote += writing.elapsed();
        if let Err(e) = stored {
            writer.abort().await;
            return Err(e.into());
        }
    }
    let writing = std::time::Instant::now();
    writer.finish().await?;
    written.wrote += writing.elapsed();
    running.finish().await.map_err(compute_failed)?;
    Ok(written)
}

/// A publish that failed after its worker replied: its vectors and snapshot file are nobody's.
fn abandon(state: &AppState, generation: Option<i64>, location: &str) {
    let state = state.clone();
    let location = location.to_string();
    tokio::spawn(async move {
        if let Some(g) = generation {
            if let Err(e) = state.store.retire_generation(g).await {
                tracing::warn!(generation = g, error = %e, "could not retire a generation");
            }
        }
        if let Ok(file) = state.offline.resolve(&location) {
            state.offline.remove_file(&file).await;
        }
        if let Some(g) = generation {
            changed::drop_generations(&state, vec![g]);
        }
    });
}

/// A worker's refusal in the words compute has always used.
fn compute_failed(e: ComputeError) -> ServiceError {
    match e {
        ComputeError::Refused(FailureKind::Result, reason) => {
            ServiceError::Invalid(format!("Invalid feature result: {reason}"))
        }
        e => failures::worker_error(e, "Feature computation failed"),
    }
}
