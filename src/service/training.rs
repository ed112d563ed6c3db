//! Point-in-time correct training sets: for each labelled row (entity, timestamp) and each
//! feature, the values of the feature version's snapshot in force at the row's timestamp.
//!
//! The server resolves the references (metadata) and hands a worker the snapshot files and
//! the request body; the worker parses, gathers and encodes under its limits, and its answer
//! streams through to the client. The server never holds the rows or the answer.

use std::collections::HashSet;

use bytes::Bytes;

use super::AppState;
use super::{Result, ServiceError};
use crate::cache::LookupKey;
use crate::engine::schema::ColumnType;
pub use crate::engine::training::{check_row_count, Format};
use crate::model::{FeatureRef, LabelsRead, TrainingDataset};
use crate::worker::protocol::{
    AggregatedSource, DatasetWritten, Job, LabelTable, SnapshotFile, Task, TrainingFeature,
    TrainingJob,
};
use crate::worker::Running;

use super::vectors::resolve_key;
use super::{failures, lookup, raw_tables};
use failures::worker_error;

pub const MAX_FEATURES: usize = 100;

/// The request as the server checked it; the rows are still the body as sent.
pub struct Request {
    pub features: Vec<FeatureRef>,
    pub max_age_seconds: Option<i64>,
    pub body: Bytes,
    pub input: Format,
    pub output: Format,
}

/// The answer's bytes as the worker sends them. A worker that fails midway ends the stream
/// with an error, so the client sees a cut response, never a short one that looks whole.
pub type Answer = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send>,
>;

/// Resolve the features, then start the worker that builds the answer. A refusal (bad rows,
/// a memory or time limit) comes back as the error, before any of the answer; on success the
/// answer streams from the worker.
pub async fn start(state: &AppState, request: Request) -> Result<Answer> {
    let running = start_worker(state, request).await?;
    Ok(Box::pin(answer_stream(running)))
}

fn answer_stream(
    running: Running,
) -> impl futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    futures::stream::unfold(Some(running), |running| async move {
        let mut running = running?;
        match running.next_frame().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(running))),
            Ok(None) => match running.finish().await {
                Ok(()) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "a training set's worker failed while answering");
                Some((Err(std::io::Error::other(e)), None))
            }
        }
    })
}

async fn start_worker(state: &AppState, request: Request) -> Result<Running> {
    check_features(&request.features, request.max_age_seconds)?;
    let features = resolve(state, &request.features).await?;
    if request.output != Format::Json {
        every_resolved(&features)?;
    }
    let job = Job {
        task: Task::Training(TrainingJob {
            input: request.input,
            output: request.output,
            max_age_micros: request.max_age_seconds.map(|s| s.saturating_mul(1_000_000)),
            features,
            labels: None,
            dataset: None,
            pass_events: 0,
        }),
        storage: state.offline.options().clone(),
    };
    let failed = |e| worker_error(e, "The training set failed");
    let started = std::time::Instant::now();
    let admitted = state.compute.admit().await.map_err(failed)?;
    let queued = started.elapsed();
    let running = state
        .compute
        .start(admitted, &job, Some(&request.body))
        .await
        .map_err(failed)?;
    let reply = running.reply();
    tracing::info!(
        rows = reply.rows,
        queued_ms = queued.as_millis() as u64,
        until_reply_ms = (started.elapsed() - queued).as_millis() as u64,
        parse_ms = reply.query_micros / 1000,
        read_snapshots_ms = reply.snapshot_micros / 1000,
        gather_ms = reply.check_micros / 1000,
        worker_peak_rss_mib = reply.peak_rss_kib / 1024,
        "training set gathered; streaming the answer"
    );
    Ok(running)
}

/// A training set whose labelled rows are a raw table's and whose answer is written as Parquet
/// files in the data location: for label sets too big for a request body or a response.
pub struct DatasetRequest {
    pub features: Vec<FeatureRef>,
    pub max_age_seconds: Option<i64>,
    pub labels_raw_table_id: i64,
    /// The label table's column holding each row's time; by default its `timestamp` column,
    /// else its event time column.
    pub time_column: Option<String>,
}

/// Build the training set of `request` in a worker, which writes it under a new directory of
/// the data location; answers where, and which versions of the features and the label table
/// it read. Every feature must resolve (the files have a column per value).
pub async fn write_dataset(state: &AppState, request: DatasetRequest) -> Result<TrainingDataset> {
    check_features(&request.features, request.max_age_seconds)?;
    let table = lookup::table(&state.store, request.labels_raw_table_id).await?;
    let definition = raw_tables::definition_of(&table)?;
    let time_column = match request.time_column {
        Some(column) => column,
        None if definition.contains_key("timestamp") => "timestamp".to_string(),
        None => table.event_time_column.clone().ok_or_else(|| {
            ServiceError::Invalid(format!(
                "The label table '{}' has no 'timestamp' column and no event time column: name \
                 the column holding each row's time in labels.time_column",
                table.name
            ))
        })?,
    };
    if time_column != "timestamp" && definition.contains_key("timestamp") {
        return Err(ServiceError::Invalid(format!(
            "The label table '{}' has a 'timestamp' column besides the time column \
             '{time_column}', and the files name each row's time 'timestamp'",
            table.name
        )));
    }
    let declared = definition.get(&time_column).map(|t| ColumnType::parse(t));
    match declared {
        Some(Some(ColumnType::Datetime | ColumnType::Date | ColumnType::String)) => {}
        Some(_) => {
            return Err(ServiceError::Invalid(format!(
                "The label table's time column '{time_column}' is {}; a datetime, a date or \
                 RFC 3339 text is needed",
                definition[&time_column]
            )))
        }
        None => {
            return Err(ServiceError::Invalid(format!(
                "The label table '{}' has no column '{time_column}'",
                table.name
            )))
        }
    }
    let features = resolve(state, &request.features).await?;
    every_resolved(&features)?;
    let Some((pinned, _)) = raw_tables::pin(state, &table).await? else {
        return Err(ServiceError::Invalid(format!(
            "The label table '{}' has no rows",
            table.name
        )));
    };
    let versions = features
        .iter()
        .map(|f| (f.reference.clone(), f.version_id))
        .collect();
    let dir = state
        .offline
        .resolve(&state.offline.new_training_set_path())?;
    let job = Job {
        task: Task::Training(TrainingJob {
            input: Format::Parquet,
            output: Format::Parquet,
            max_age_micros: request.max_age_seconds.map(|s| s.saturating_mul(1_000_000)),
            features,
            labels: Some(LabelTable {
                files: pinned.files,
                partitioned: pinned.partitioned,
                schema: definition,
                time_column,
            }),
            dataset: Some(dir.uri()),
            pass_events: state.config.aggregation_pass_events,
        }),
        storage: state.offline.options().clone(),
    };
    let started = std::time::Instant::now();
    let ran = state
        .compute
        .run(&job, None)
        .await
        .map_err(|e| worker_error(e, "The training set failed"))
        .and_then(|(reply, payload)| {
            let written: DatasetWritten = payload
                .as_deref()
                .ok_or_else(|| ServiceError::fault("the worker sent no answer"))
                .and_then(|p| serde_json::from_slice(p).map_err(ServiceError::fault))?;
            Ok((reply, written))
        });
    let (reply, written) = match ran {
        Ok(done) => done,
        Err(e) => {
            // A worker that failed while writing may have left parts that nothing names.
            state.offline.remove_dir(&dir).await;
            return Err(e);
        }
    };
    tracing::info!(
        rows = written.rows,
        files = written.files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        read_labels_ms = reply.query_micros / 1000,
        gather_ms = reply.check_micros / 1000,
        spill_ms = reply.spill_micros / 1000,
        write_ms = reply.stats_micros / 1000,
        worker_peak_rss_mib = reply.peak_rss_kib / 1024,
        "training set written as a dataset"
    );
    Ok(TrainingDataset {
        uri: dir.uri(),
        files: written.files,
        rows: written.rows,
        labels: LabelsRead {
            raw_table_id: table.id,
            version: pinned.version,
        },
        versions,
    })
}

fn check_features(features: &[FeatureRef], max_age_seconds: Option<i64>) -> Result<()> {
    if features.is_empty() {
        return Err(ServiceError::Invalid("features must not be empty".into()));
    }
    if features.len() > MAX_FEATURES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_FEATURES} features per training set"
        )));
    }
    if max_age_seconds.is_some_and(|age| age < 0) {
        return Err(ServiceError::Invalid(
            "max_age_seconds must not be negative".into(),
        ));
    }
    Ok(())
}

/// The flat table has a column per value: a feature without values has no columns.
fn every_resolved(features: &[TrainingFeature]) -> Result<()> {
    match features.iter().find(|f| f.unresolved.is_some()) {
        Some(f) => Err(ServiceError::NotFound(format!(
            "Feature '{}' did not resolve: {}",
            f.reference,
            f.unresolved.as_deref().unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// Each distinct reference once, in the order first given, with its version's snapshot files
/// or why it did not resolve.
async fn resolve(state: &AppState, refs: &[FeatureRef]) -> Result<Vec<TrainingFeature>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for feature in refs {
        let (reference, key) = lookup::reference(feature)?;
        if !seen.insert(reference.clone()) {
            continue;
        }
        if let Some((version_id, source)) = aggregated(state, &key).await? {
            out.push(TrainingFeature {
                reference,
                version_id,
                unresolved: None,
                entity_key: None,
                snapshots: Vec::new(),
                aggregated: Some(source),
            });
            continue;
        }
        let meta = match resolve_key(&state.cache, &state.store, key).await {
            Ok(meta) => meta,
            Err(ServiceError::NotFound(reason)) => {
                out.push(TrainingFeature {
                    reference,
                    version_id: None,
                    unresolved: Some(reason),
                    entity_key: None,
                    snapshots: Vec::new(),
                    aggregated: None,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let snapshots = state.store.list_snapshots(meta.version_id).await?;
        if snapshots.is_empty() {
            out.push(TrainingFeature {
                reference,
                version_id: Some(meta.version_id),
                unresolved: Some(format!(
                    "Feature version {} has no snapshots; compute it to start its history",
                    meta.version_id
                )),
                entity_key: None,
                snapshots: Vec::new(),
                aggregated: None,
            });
            continue;
        }
        let files = snapshots
            .iter()
            .map(|s| {
                Ok(SnapshotFile {
                    valid_from_micros: s.valid_from.timestamp_micros(),
                    uri: super::history::file_uri(&state.offline, s)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(TrainingFeature {
            reference,
            version_id: Some(meta.version_id),
            unresolved: None,
            entity_key: Some(meta.entity_key.to_string()),
            snapshots: files,
            aggregated: None,
        });
    }
    Ok(out)
}

/// When the reference is to an aggregation feature (by name, or one of its versions): the
/// version it names (none by name: such a feature is evaluated from its table, not from a
/// version) and its events, as the table version current now holds them. `None` for a SQL
/// feature or a reference that does not resolve (`resolve_key` words that).
async fn aggregated(
    state: &AppState,
    key: &LookupKey,
) -> Result<Option<(Option<i64>, AggregatedSource)>> {
    let (feature, version_id) = match key {
        LookupKey::FeatureName(name) => match state.store.feature_by_name(name).await? {
            Some(f) => (f, None),
            None => return Ok(None),
        },
        LookupKey::Label(name, version) => {
            let Some(f) = state.store.feature_by_name(name).await? else {
                return Ok(None);
            };
            match state.store.find_version(f.id, version).await? {
                Some(v) => (f, Some(v.id)),
                None => return Ok(None),
            }
        }
        LookupKey::Version(id) => {
            let Some(v) = state.store.get_version(*id).await? else {
                return Ok(None);
            };
            match state.store.get_feature(v.feature_id).await? {
                Some(f) => (f, Some(v.id)),
                None => return Ok(None),
            }
        }
    };
    if feature.declaration.is_none() {
        return Ok(None);
    }
    let table = lookup::table(&state.store, feature.raw_table_id).await?;
    let mut source = super::online::source_of(&state.store, &feature).await?;
    if let Some((pinned, _)) = raw_tables::pin(state, &table).await? {
        source.files = pinned.files;
        source.partitioned = pinned.partitioned;
    }
    Ok(Some((version_id, source)))
}
