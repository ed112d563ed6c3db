//! The worker's side: read one job from stdin, run it, write the reply to stdout, exit.
//!
//! Limits are not enforced here: the server set them on this process before it started, and
//! kills it at the deadline. What this side adds is a readable reason when the engine panics.

use std::io::{self, BufReader, BufWriter, Write};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use polars::prelude::*;

use std::collections::HashMap;
use std::sync::Arc;

use super::protocol::{
    self, AggregatedSource, ChunkWriter, ComputeJob, DatasetWritten, DriftJob, EventsJob,
    FailureKind, FramedWriter, Input, Job, LabelTable, PreviewJob, Reply, StatsJob, Task,
    TrainingFeature, TrainingJob,
};
use crate::engine::history::{self as point_in_time, Indexed};
use crate::engine::result::IdForm;
use crate::engine::training::{self, FeatureColumns, MAX_CELLS};
use crate::engine::{
    aggregations, drift, execute, result, scan, schema::TableSchema, spill, stats,
};
use crate::keys::EntityKey;
use crate::offline::{self, Location};

/// A panic is reported on stderr on one line after this marker, so the server can quote it.
pub const PANIC_MARK: &str = "feature-store worker panic: ";

/// Rows per vector chunk: the server writes each to the database in its own step.
const CHUNK_ROWS: usize = 20_000;

type Failure = (FailureKind, String);

pub fn main() -> ExitCode {
    panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        eprintln!("{PANIC_MARK}{}", execute::clean_message(&message));
    }));
    let (job, piped) = match protocol::read_job(&mut BufReader::new(io::stdin().lock())) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("the compute worker could not read its job: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&job, piped, &mut out)))
        .unwrap_or_else(|payload| {
            Err(Stage::Before((
                FailureKind::Sql,
                format!(
                    "the engine crashed: {}",
                    execute::clean_message(&panic_message(&*payload))
                ),
            )))
        });
    let written = match outcome {
        Ok(()) => out.flush(),
        Err(Stage::Before(failure)) => {
            let reply = Reply {
                failure: Some(failure),
                ..Reply::default()
            };
            protocol::write_header(&mut out, &reply).and_then(|()| out.flush())
        }
        Err(Stage::Streaming(e)) => Err(e),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the compute worker could not write its reply: {e}");
            ExitCode::from(3)
        }
    }
}

/// A failure before the reply was written is answered with a reply; once vectors stream, the
/// pipe is all there is, and the worker just stops.
enum Stage {
    Before(Failure),
    Streaming(io::Error),
}

impl From<Failure> for Stage {
    fn from(f: Failure) -> Self {
        Stage::Before(f)
    }
}

fn run(job: &Job, piped: Option<Vec<u8>>, out: &mut impl Write) -> Result<(), Stage> {
    match &job.task {
        Task::Compute(c) => compute(c, job, piped, out),
        Task::Preview(p) => preview(p, job, piped, out),
        Task::Training(t) => training_set(t, job, piped, out),
        Task::Drift(d) => drift_of(d, job, out),
        Task::Stats(st) => stats_of(st, job, out),
        Task::Events(e) => events_of(e, job, out),
    }
}

/// The rows a job reads, as a lazy frame with the table's declared columns.
fn input_frame(
    input: &Input,
    schema: &TableSchema,
    storage: &std::collections::BTreeMap<String, String>,
    piped: Option<Vec<u8>>,
    until: Option<(&str, i64)>,
) -> Result<LazyFrame, Failure> {
    let input_failed = |e: String| (FailureKind::Input, e);
    match input {
        Input::Empty => scan::rows_until(schema.empty_frame().lazy(), until).map_err(input_failed),
        Input::Piped => {
            let bytes = piped.ok_or_else(|| input_failed("the piped rows are missing".into()))?;
            let frame = IpcReader::new(std::io::Cursor::new(bytes))
                .finish()
                .map_err(|e| input_failed(e.to_string()))?;
            scan::rows_until(frame.lazy(), until).map_err(input_failed)
        }
        Input::Files { files, partitioned } => {
            scan::scan_files(files, storage, *partitioned, schema, until).map_err(input_failed)
        }
        Input::Result { files } => scan::scan_result(files, storage).map_err(input_failed),
    }
}

/// Groups a streaming group-by keeps in its table before it starts holding rows of keys that
/// did not fit ("cold" rows, which then cost memory in proportion to the input, not to the
/// groups): polars' default is 4,096. Sized from the input instead, up to this many.
const MAX_HOT_GROUPS: u64 = 1 << 22;

/// The group table for `rows` input rows: a power of two at least polars' default. A table of
/// 4M groups costs about 30 MiB a thread up front, so small inputs get small ones.
fn hot_groups(rows: u64) -> u64 {
    rows.clamp(4096, MAX_HOT_GROUPS).next_power_of_two()
}

fn compute(
    task: &ComputeJob,
    job: &Job,
    piped: Option<Vec<u8>>,
    out: &mut impl Write,
) -> Result<(), Stage> {
    let started = Instant::now();
    // Read by polars when it builds the group-by; this process has no other threads yet.
    // Measured on 100M rows over 1M entities: 7.3 GiB and 34 s with the default table, 1.4 GiB
    // and 25 s with 4M groups.
    std::env::set_var(
        "POLARS_HOT_TABLE_SIZE",
        hot_groups(task.input_rows).to_string(),
    );
    let schema = TableSchema::from_definition(&task.schema).map_err(|e| (FailureKind::Input, e))?;
    let input = if task.dry_run {
        Input::Empty
    } else {
        task.input.clone()
    };
    let until = task.as_of.as_ref().map(|l| (l.column.as_str(), l.micros));
    let data = input_frame(&input, &schema, &job.storage, piped, until)?;
    let frame = execute::run_sql_streaming(&task.sql, data).map_err(|e| (FailureKind::Sql, e))?;
    let checking = Instant::now();
    let checked = result::check(frame, &task.entity_key, task.max_rows)
        .map_err(|e| (FailureKind::Result, e))?;
    let mut reply = Reply {
        output_schema: checked.output_schema.clone(),
        query_micros: started.elapsed().as_micros() as u64,
        check_micros: checking.elapsed().as_micros() as u64,
        ..Reply::default()
    };
    if task.dry_run {
        protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
        return Ok(());
    }
    let timer = Instant::now();
    let stats = stats::frame_stats(&checked.frame, &checked.key_name)
        .and_then(|s| serde_json::to_string(&s).map_err(|e| e.to_string()))
        .map_err(|e| (FailureKind::Result, e))?;
    reply.stats_micros = timer.elapsed().as_micros() as u64;
    reply.stats = Some(stats);
    reply.rows = checked.frame.height();
    if let Some(target) = &task.snapshot {
        let timer = Instant::now();
        let mut snapshot = checked.frame.clone();
        let bytes = offline::write_parquet(&mut snapshot).map_err(|e| (FailureKind::Output, e))?;
        reply.snapshot_bytes = bytes.len() as u64;
        put_file(target, bytes, &job.storage).map_err(|e| (FailureKind::Output, e))?;
        reply.snapshot_micros = timer.elapsed().as_micros() as u64;
    }
    reply.vectors = task.vectors;
    reply.peak_rss_kib = peak_rss_kib();
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    if task.vectors {
        stream_vectors(&checked, out).map_err(Stage::Streaming)?;
    }
    Ok(())
}

/// Encode the vectors a chunk at a time and write each as it is ready, so neither side holds
/// the whole encoded result.
fn stream_vectors(checked: &result::Checked, out: &mut impl Write) -> io::Result<()> {
    let mut chunk = ChunkWriter::default();
    let height = checked.frame.height();
    let mut start = 0;
    while start < height {
        let len = CHUNK_ROWS.min(height - start);
        let encoded = checked
            .encode_in_order(start, len)
            .map_err(io::Error::other)?;
        for v in &encoded {
            chunk.push(&v.entity_id, &v.values);
        }
        chunk.flush_to(out)?;
        start += len;
    }
    ChunkWriter::write_end(out)
}

/// Write a file where the server said: a local path or an `s3://` key.
fn put_file(
    target: &str,
    bytes: Vec<u8>,
    storage: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    let location = Location::parse(target).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(offline::put_file(&location, bytes.into(), storage))
        .map_err(|e| e.to_string())
}

fn preview(
    task: &PreviewJob,
    job: &Job,
    piped: Option<Vec<u8>>,
    out: &mut impl Write,
) -> Result<(), Stage> {
    let schema = TableSchema::from_definition(&task.schema).map_err(|e| (FailureKind::Input, e))?;
    let frame = input_frame(&task.input, &schema, &job.storage, piped, None)?
        .limit(task.limit as IdxSize)
        .collect()
        .map_err(|e| (FailureKind::Input, execute::clean_message(&e.to_string())))?;
    let rows = result::rows_as_json(&frame).map_err(|e| (FailureKind::Input, e))?;
    let json = serde_json::to_vec(&rows).map_err(|e| (FailureKind::Input, e.to_string()))?;
    let reply = Reply {
        rows: frame.height(),
        payload: true,
        ..Reply::default()
    };
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    protocol::write_blob(out, &json).map_err(Stage::Streaming)
}

/// Snapshot files read during one job, by URI: a training set that names one version twice,
/// or two versions sharing files, reads each once.
struct Snapshots<'a> {
    storage: &'a std::collections::BTreeMap<String, String>,
    runtime: Option<tokio::runtime::Runtime>,
    read: HashMap<String, Arc<Indexed>>,
}

impl<'a> Snapshots<'a> {
    fn new(storage: &'a std::collections::BTreeMap<String, String>) -> Self {
        Snapshots {
            storage,
            runtime: None,
            read: HashMap::new(),
        }
    }

    fn get(&mut self, uri: &str) -> Result<Arc<Indexed>, Failure> {
        if let Some(hit) = self.read.get(uri) {
            return Ok(hit.clone());
        }
        let failed = |e: String| {
            (
                FailureKind::Input,
                format!("a snapshot file is unreadable: {e}"),
            )
        };
        let location = Location::parse(uri).map_err(|e| failed(e.to_string()))?;
        if self.runtime.is_none() {
            self.runtime = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| failed(e.to_string()))?,
            );
        }
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| failed("no runtime".into()))?;
        let frame = runtime
            .block_on(offline::read_snapshot(&location, self.storage))
            .map_err(|e| failed(e.to_string()))?;
        let indexed = Arc::new(Indexed::for_join(frame).map_err(failed)?);
        self.read.insert(uri.to_string(), indexed.clone());
        Ok(indexed)
    }
}

fn training_set(
    task: &TrainingJob,
    job: &Job,
    piped: Option<Vec<u8>>,
    out: &mut impl Write,
) -> Result<(), Stage> {
    let refused = |e: String| (FailureKind::Request, e);
    let started = Instant::now();
    let mut text_columns: Vec<String> = Vec::new();
    for feature in &task.features {
        let key = match (&feature.aggregated, &feature.entity_key) {
            (Some(source), _) => &source.entity_key,
            (None, Some(key)) => key,
            (None, None) => continue,
        };
        text_columns.extend(EntityKey::from_stored(key).columns().iter().cloned());
    }
    let rows = match &task.labels {
        Some(labels) => label_rows(labels, &job.storage)?,
        None => {
            let body =
                piped.ok_or_else(|| (FailureKind::Input, "the rows are missing".to_string()))?;
            training::parse_rows(&body, task.input, &text_columns).map_err(refused)?
        }
    };
    let mut tally = Tally {
        parsing: started.elapsed(),
        ..Tally::default()
    };
    if let (Some(dir), Some(key)) = (&task.dataset, passes_key(task)) {
        return dataset_in_passes(task, job, &rows, key, dir, tally, out);
    }
    let mut snapshots = Snapshots::new(&job.storage);
    let mut columns = Vec::with_capacity(task.features.len());
    for feature in &task.features {
        if let Some(source) = feature
            .aggregated
            .as_ref()
            .filter(|_| feature.unresolved.is_none())
        {
            tally.count_cells(rows.micros.len(), source.outputs.len())?;
            let timer = Instant::now();
            let values = aggregated_values(source, &rows, &job.storage)?;
            tally.gathering += timer.elapsed();
            columns.push(aggregated_columns(feature, values));
            continue;
        }
        columns.push(snapshot_columns(
            task,
            feature,
            &rows,
            &mut snapshots,
            &mut tally,
        )?);
    }
    drop(snapshots);
    if let Some(dataset) = &task.dataset {
        let timer = Instant::now();
        let mut files = DatasetFiles::new(dataset, &job.storage)?;
        files.write(&rows, columns)?;
        tally.writing = timer.elapsed();
        return reply_written(out, &files.written(), &tally);
    }
    let reply = Reply {
        rows: rows.micros.len(),
        stream: true,
        query_micros: tally.parsing.as_micros() as u64,
        snapshot_micros: tally.reading.as_micros() as u64,
        check_micros: tally.gathering.as_micros() as u64,
        peak_rss_kib: peak_rss_kib(),
        ..Reply::default()
    };
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    let mut framed = FramedWriter::new(out);
    training::write_answer(&mut framed, task.output, &rows, columns)
        .map_err(|e| Stage::Streaming(io::Error::other(e)))?;
    framed.finish().map_err(Stage::Streaming)?;
    Ok(())
}

/// Where a training set's time went, and the cells it has counted against `MAX_CELLS`.
#[derive(Default)]
struct Tally {
    cells: u64,
    /// Parsing the rows or reading the label table.
    parsing: std::time::Duration,
    /// Reading snapshot files.
    reading: std::time::Duration,
    /// Gathering values (for a dataset in passes, the spill included).
    gathering: std::time::Duration,
    /// Of the gathering: scanning aggregation features' events into partition files.
    spilling: std::time::Duration,
    /// Writing a dataset's files.
    writing: std::time::Duration,
}

impl Tally {
    /// Counts `rows` × `width` more cells; past `MAX_CELLS` the training set is refused.
    fn count_cells(&mut self, rows: usize, width: usize) -> Result<(), Failure> {
        self.cells += rows as u64 * width as u64;
        match self.cells > MAX_CELLS {
            true => Err(too_many_cells(rows, self.cells)),
            false => Ok(()),
        }
    }
}

/// An aggregation feature's answer: a value set for every row.
fn aggregated_columns(feature: &TrainingFeature, values: DataFrame) -> FeatureColumns {
    FeatureColumns {
        reference: feature.reference.clone(),
        version_id: feature.version_id,
        unresolved: None,
        present: vec![true; values.height()],
        values: Some(values),
    }
}

/// A SQL feature's values at each row's time from the snapshot in force then (or why the
/// feature did not resolve).
fn snapshot_columns(
    task: &TrainingJob,
    feature: &TrainingFeature,
    rows: &training::Rows,
    snapshots: &mut Snapshots,
    tally: &mut Tally,
) -> Result<FeatureColumns, Failure> {
    if let Some(reason) = &feature.unresolved {
        return Ok(FeatureColumns {
            reference: feature.reference.clone(),
            version_id: feature.version_id,
            unresolved: Some(reason.clone()),
            values: None,
            present: Vec::new(),
        });
    }
    let valid_from: Vec<i64> = feature
        .snapshots
        .iter()
        .map(|s| s.valid_from_micros)
        .collect();
    let positions =
        point_in_time::snapshot_positions(&rows.micros, &valid_from, task.max_age_micros);
    let needed = point_in_time::needed(&positions, feature.snapshots.len());
    let timer = Instant::now();
    let mut read = Vec::with_capacity(needed.len());
    for (file, needed) in feature.snapshots.iter().zip(needed) {
        read.push(match needed {
            true => Some(snapshots.get(&file.uri)?),
            false => None,
        });
    }
    tally.reading += timer.elapsed();
    let width = read
        .last()
        .and_then(|r| r.as_ref())
        .map_or(0, |r| r.value_columns());
    tally.count_cells(rows.micros.len(), width)?;
    let timer = Instant::now();
    let views: Vec<_> = read.iter().map(|r| r.as_ref().map(|r| r.view())).collect();
    let ids = rows
        .ids(feature.entity_key.as_deref(), IdForm::Compact)
        .map_err(|e| (FailureKind::Request, e))?;
    let (values, present) =
        point_in_time::gather(&ids, &positions, &views).map_err(|e| (FailureKind::Input, e))?;
    tally.gathering += timer.elapsed();
    Ok(FeatureColumns {
        reference: feature.reference.clone(),
        version_id: feature.version_id,
        unresolved: None,
        values: Some(values),
        present,
    })
}

/// The key a dataset is evaluated in passes by: the one entity key (as stored) of all its
/// aggregation features. `None` (one pass, every event held at once) when it has none, or
/// when they are keyed differently: a partition of one key's entities holds any of
/// another's.
fn passes_key(task: &TrainingJob) -> Option<&str> {
    if task.pass_events == 0 {
        return None;
    }
    let mut keys = task
        .features
        .iter()
        .filter(|f| f.unresolved.is_none())
        .filter_map(|f| f.aggregated.as_ref())
        .map(|source| source.entity_key.as_str());
    let first = keys.next()?;
    keys.all(|k| k == first).then_some(first)
}

/// What one feature contributes to each pass of a dataset.
enum InPasses<'a> {
    /// Computed for every row at once (a SQL feature's snapshot values, or why it did not
    /// resolve); each pass takes its rows.
    Whole(FeatureColumns),
    /// An aggregation feature's events, in partition files.
    Spilled(&'a TrainingFeature, &'a AggregatedSource, spill::Spilled),
}

/// A training set written as a dataset whose aggregation features' events are read once into
/// partition files by their entity's hash (`engine::spill`), then evaluated a group of
/// partitions at a time (at most `pass_events` events, or `PASS_LABELS` labels, unless one
/// partition alone has more), each pass's rows written before the next is read. The worker
/// holds the labels, the SQL features' values for every row, one pass's events and one
/// pass's aggregation values, not every event. The rows come
/// grouped by pass, in the label table's order within each (with one pass, its order).
fn dataset_in_passes(
    task: &TrainingJob,
    job: &Job,
    rows: &training::Rows,
    key: &str,
    dir: &str,
    mut tally: Tally,
    out: &mut impl Write,
) -> Result<(), Stage> {
    let n = rows.micros.len();
    let ids = rows
        .ids(Some(key), IdForm::Stored)
        .map_err(|e| (FailureKind::Request, e))?;
    let partition_of_row: Vec<u8> = ids
        .iter()
        .map(|id| id.map_or(0, spill::partition_of) as u8)
        .collect();
    let mut labels = vec![0u64; spill::PARTITIONS];
    for &p in &partition_of_row {
        labels[p as usize] += 1;
    }

    let latest = rows.micros.iter().copied().max().unwrap_or(i64::MIN);
    let mut snapshots = Snapshots::new(&job.storage);
    let mut features = Vec::with_capacity(task.features.len());
    for feature in &task.features {
        match feature
            .aggregated
            .as_ref()
            .filter(|_| feature.unresolved.is_none())
        {
            Some(source) => {
                tally.count_cells(n, source.outputs.len())?;
                let timer = Instant::now();
                let spilled = spilled_events(source, &job.storage, latest)?;
                tally.spilling += timer.elapsed();
                features.push(InPasses::Spilled(feature, source, spilled));
            }
            None => features.push(InPasses::Whole(snapshot_columns(
                task,
                feature,
                rows,
                &mut snapshots,
                &mut tally,
            )?)),
        }
    }
    drop(snapshots);
    tally.gathering += tally.spilling;

    let mut events = vec![0u64; spill::PARTITIONS];
    for feature in &features {
        if let InPasses::Spilled(_, _, spilled) = feature {
            for (total, rows) in events.iter_mut().zip(&spilled.rows) {
                *total += rows;
            }
        }
    }
    let mut files = DatasetFiles::new(dir, &job.storage)?;
    for pass in spill::groups(&events, &labels, task.pass_events, PASS_LABELS) {
        let timer = Instant::now();
        let in_pass: Vec<IdxSize> = (0..n)
            .filter(|&i| pass.contains(&(partition_of_row[i] as usize)))
            .map(|i| i as IdxSize)
            .collect();
        if in_pass.is_empty() {
            continue;
        }
        let taken = IdxCa::from_vec(PlSmallStr::EMPTY, in_pass.clone());
        let pass_rows = rows.take(&in_pass).map_err(|e| (FailureKind::Input, e))?;
        let pass_ids = ids
            .take(&taken)
            .map_err(|e| (FailureKind::Input, e.to_string()))?;
        let mut columns = Vec::with_capacity(features.len());
        for feature in &features {
            columns.push(match feature {
                InPasses::Whole(whole) => {
                    whole.take(&in_pass).map_err(|e| (FailureKind::Input, e))?
                }
                InPasses::Spilled(feature, source, spilled) => {
                    let events = spilled
                        .read(pass.clone())
                        .map_err(|e| (FailureKind::Input, e))?;
                    let values = aggregations::evaluate(
                        &events,
                        &source.entity_key,
                        &source.event_time,
                        &source.outputs,
                        &pass_ids,
                        &pass_rows.micros,
                        threads(),
                    )
                    .map_err(|e| (FailureKind::Input, e))?;
                    aggregated_columns(feature, values)
                }
            });
        }
        tally.gathering += timer.elapsed();
        let timer = Instant::now();
        files.write(&pass_rows, columns)?;
        tally.writing += timer.elapsed();
    }
    reply_written(out, &files.written(), &tally)
}

/// Labels evaluated in one pass of a dataset at most (unless one partition alone has more):
/// the pass's values are held until its files are written (16 values a label: ~300 MiB).
const PASS_LABELS: u64 = 2_000_000;

/// An aggregation feature's events (kept by the filter, at or before `latest`) scanned once
/// into partition files on the worker's disk.
fn spilled_events(
    source: &AggregatedSource,
    storage: &std::collections::BTreeMap<String, String>,
    latest: i64,
) -> Result<spill::Spilled, Failure> {
    let events = aggregated_plan(source, storage, |frame| {
        scan::rows_until(frame, Some((&source.event_time, latest)))
    })?;
    let key = source.entity_key.clone();
    spill::spill(
        events,
        &source.entity_key,
        move |batch| aggregations::keyed_events(batch, &key),
        &std::env::temp_dir(),
    )
    .map_err(|e| (FailureKind::Input, e))
}

fn reply_written(
    out: &mut impl Write,
    written: &DatasetWritten,
    tally: &Tally,
) -> Result<(), Stage> {
    let payload = serde_json::to_vec(written).map_err(|e| (FailureKind::Output, e.to_string()))?;
    let reply = Reply {
        rows: written.rows,
        payload: true,
        query_micros: tally.parsing.as_micros() as u64,
        snapshot_micros: tally.reading.as_micros() as u64,
        check_micros: tally.gathering.as_micros() as u64,
        spill_micros: tally.spilling.as_micros() as u64,
        stats_micros: tally.writing.as_micros() as u64,
        peak_rss_kib: peak_rss_kib(),
        ..Reply::default()
    };
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    protocol::write_blob(out, &payload).map_err(Stage::Streaming)
}

/// A label table's rows, read whole with the streaming engine (only a table's own columns: the
/// declared schema).
fn label_rows(
    labels: &LabelTable,
    storage: &std::collections::BTreeMap<String, String>,
) -> Result<training::Rows, Failure> {
    let input = |e: String| (FailureKind::Input, e);
    let schema = TableSchema::from_definition(&labels.schema).map_err(input)?;
    let frame = scan::scan_files(&labels.files, storage, labels.partitioned, &schema, None)
        .and_then(|frame| {
            frame
                .collect_with_engine(Engine::Streaming)
                .map(|r| r.unwrap_single())
                .map_err(|e| e.to_string())
        })
        .map_err(input)?;
    training::table_rows(frame, &labels.time_column).map_err(|e| (FailureKind::Request, e))
}

/// A dataset's Parquet files as they are written: `DATASET_PART_ROWS` rows each at most,
/// `part-00000.parquet` onwards, under one directory.
struct DatasetFiles<'a> {
    dir: Location,
    storage: &'a std::collections::BTreeMap<String, String>,
    runtime: tokio::runtime::Runtime,
    files: Vec<String>,
    rows: usize,
}

impl<'a> DatasetFiles<'a> {
    fn new(
        dir: &str,
        storage: &'a std::collections::BTreeMap<String, String>,
    ) -> Result<Self, Failure> {
        let output = |e: String| (FailureKind::Output, e);
        Ok(DatasetFiles {
            dir: Location::parse(dir).map_err(|e| output(e.to_string()))?,
            storage,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| output(e.to_string()))?,
            files: Vec::new(),
            rows: 0,
        })
    }

    /// `rows` and their features' values, as the next files.
    fn write(
        &mut self,
        rows: &training::Rows,
        columns: Vec<FeatureColumns>,
    ) -> Result<(), Failure> {
        let output = |e: String| (FailureKind::Output, e);
        let frame = training::to_frame(rows, columns).map_err(|e| (FailureKind::Request, e))?;
        let mut start = 0;
        while start < frame.height() {
            let mut part = frame.slice(start as i64, training::DATASET_PART_ROWS);
            let bytes = offline::write_parquet(&mut part).map_err(output)?;
            let location = self
                .dir
                .join(&format!("part-{:05}.parquet", self.files.len()));
            self.runtime
                .block_on(offline::put_file(&location, bytes.into(), self.storage))
                .map_err(|e| output(e.to_string()))?;
            self.files.push(location.uri());
            start += training::DATASET_PART_ROWS;
            if crate::failpoint::armed(crate::failpoint::DATASET_AFTER_A_PART) {
                eprintln!(
                    "failpoint {}: exiting",
                    crate::failpoint::DATASET_AFTER_A_PART
                );
                std::process::exit(70);
            }
        }
        self.rows += frame.height();
        Ok(())
    }

    fn written(self) -> DatasetWritten {
        DatasetWritten {
            files: self.files,
            rows: self.rows,
        }
    }
}

fn too_many_cells(rows: usize, cells: u64) -> Failure {
    (
        FailureKind::Request,
        format!(
            "the training set would have {rows} rows × more than {} feature columns, over the limit of {MAX_CELLS} values; ask for fewer rows or features",
            cells / rows.max(1) as u64
        ),
    )
}

/// An aggregation feature's values at each row's timestamp: the table version's events (kept
/// by the filter, at or before the latest row) read with the streaming engine, then the exact
/// window kernels.
fn aggregated_values(
    source: &AggregatedSource,
    rows: &training::Rows,
    storage: &std::collections::BTreeMap<String, String>,
) -> Result<DataFrame, Failure> {
    let latest = rows.micros.iter().copied().max().unwrap_or(i64::MIN);
    let ids = rows
        .ids(Some(&source.entity_key), IdForm::Stored)
        .map_err(|e| (FailureKind::Request, e))?;
    let events = aggregated_events(source, storage, |frame| {
        scan::rows_until(frame, Some((&source.event_time, latest)))
    })?;
    aggregations::evaluate(
        &events,
        &source.entity_key,
        &source.event_time,
        &source.outputs,
        &ids,
        &rows.micros,
        threads(),
    )
    .map_err(|e| (FailureKind::Input, e))
}

/// This worker's share of cores: what the pool set `POLARS_MAX_THREADS` to, so the window
/// kernels use as many threads as polars does.
fn threads() -> usize {
    std::env::var("POLARS_MAX_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The events of `source`'s files that `within` and the filter keep: the key, the event time
/// and the aggregated columns, read with the streaming engine.
fn aggregated_events(
    source: &AggregatedSource,
    storage: &std::collections::BTreeMap<String, String>,
    within: impl FnOnce(LazyFrame) -> Result<LazyFrame, String>,
) -> Result<DataFrame, Failure> {
    let plan = aggregated_plan(source, storage, within)?;
    aggregations::collect_events(plan, &source.entity_key, Engine::Streaming)
        .map_err(selection_failed)
}

/// An aggregation feature's events as a plan: its table scanned, bounded by `within`, kept by
/// its filter, only the columns it reads.
fn aggregated_plan(
    source: &AggregatedSource,
    storage: &std::collections::BTreeMap<String, String>,
    within: impl FnOnce(LazyFrame) -> Result<LazyFrame, String>,
) -> Result<LazyFrame, Failure> {
    let input = |e: String| (FailureKind::Input, e);
    let schema = TableSchema::from_definition(&source.schema).map_err(input)?;
    let events = scan::scan_files(&source.files, storage, source.partitioned, &schema, None)
        .and_then(within)
        .map_err(input)?;
    let query = aggregations::EventsQuery {
        entity_key: &source.entity_key,
        event_time: &source.event_time,
        filter: source.filter.as_deref(),
        outputs: &source.outputs,
    };
    aggregations::events_plan(events, &query, None).map_err(selection_failed)
}

/// A filter that does not run is the feature's SQL at fault; anything else, its input.
fn selection_failed(e: aggregations::SelectError) -> Failure {
    match e {
        aggregations::SelectError::Filter(e) => (FailureKind::Sql, e),
        aggregations::SelectError::Input(e) => (FailureKind::Input, e),
    }
}

/// Rows of the events sent in one blob: the server adds a batch to what it holds before it
/// reads the next, so it never holds more than one batch of the answer besides the events.
const EVENTS_BATCH_ROWS: usize = 1 << 18;

/// The events a replica holds for an aggregation feature's online answers, grouped by key,
/// each key's in time order, ties as ingested, as Arrow IPC blobs of `EVENTS_BATCH_ROWS`
/// rows ended by an empty blob.
fn events_of(task: &EventsJob, job: &Job, out: &mut impl Write) -> Result<(), Stage> {
    let source = &task.source;
    let events = aggregated_events(source, &job.storage, |frame| {
        scan::rows_after(frame, &source.event_time, task.after_micros)
    })?;
    let order = aggregations::entity_order(&events, &source.entity_key, &source.event_time)
        .map_err(|e| (FailureKind::Result, e))?;
    let rows = order.as_ref().map_or(events.height(), Vec::len);
    let reply = Reply {
        rows,
        peak_rss_kib: peak_rss_kib(),
        ..Reply::default()
    };
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    for lo in (0..rows).step_by(EVENTS_BATCH_ROWS) {
        let hi = (lo + EVENTS_BATCH_ROWS).min(rows);
        // Taken a batch at a time: the events are not held twice.
        let batch = match &order {
            Some(order) => events.take(&IdxCa::from_vec(PlSmallStr::EMPTY, order[lo..hi].to_vec())),
            None => Ok(events.slice(lo as i64, hi - lo)),
        };
        let ipc = batch
            .map_err(|e| e.to_string())
            .and_then(|mut batch| crate::engine::batches::encode(&mut batch))
            .map_err(|e| Stage::Streaming(io::Error::other(e)))?;
        protocol::write_blob(out, &ipc).map_err(Stage::Streaming)?;
    }
    protocol::write_blob(out, &[]).map_err(Stage::Streaming)?;
    out.flush().map_err(Stage::Streaming)
}

fn drift_of(task: &DriftJob, job: &Job, out: &mut impl Write) -> Result<(), Stage> {
    let mut snapshots = Snapshots::new(&job.storage);
    let base = snapshots.get(&task.base)?;
    let target = snapshots.get(&task.target)?;
    let columns = drift::frame_drift(&base.frame, &target.frame)
        .and_then(|c| serde_json::to_vec(&c).map_err(|e| e.to_string()))
        .map_err(|e| (FailureKind::Result, e))?;
    reply_with_payload(out, &columns)
}

fn stats_of(task: &StatsJob, job: &Job, out: &mut impl Write) -> Result<(), Stage> {
    let snapshot = Snapshots::new(&job.storage).get(&task.snapshot)?;
    let key = snapshot
        .frame
        .columns()
        .first()
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let columns = stats::frame_stats(&snapshot.frame, &key)
        .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
        .map_err(|e| (FailureKind::Result, e))?;
    reply_with_payload(out, &columns)
}

fn reply_with_payload(out: &mut impl Write, payload: &[u8]) -> Result<(), Stage> {
    let reply = Reply {
        payload: true,
        peak_rss_kib: peak_rss_kib(),
        ..Reply::default()
    };
    protocol::write_header(out, &reply).map_err(Stage::Streaming)?;
    protocol::write_blob(out, payload).map_err(Stage::Streaming)
}

/// This process's peak resident memory so far, in KiB (0 where /proc does not say).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_group_table_grows_with_the_input_within_bounds() {
        assert_eq!(super::hot_groups(0), 4096);
        assert_eq!(super::hot_groups(5_000), 8192);
        assert_eq!(super::hot_groups(100_000_000), 1 << 22);
    }
}
