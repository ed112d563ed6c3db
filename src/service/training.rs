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
pub use crate::engine::training::{check_row_count, Format};
use crate::model::FeatureRef;
use crate::worker::protocol::{
    AggregatedSource, Job, SnapshotFile, Task, TrainingFeature, TrainingJob,
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
    if request.features.is_empty() {
        return Err(ServiceError::Invalid("features must not be empty".into()));
    }
    if request.features.len() > MAX_FEATURES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_FEATURES} features per training set"
        )));
    }
    if let Some(age) = request.max_age_seconds {
        if age < 0 {
            return Err(ServiceError::Invalid(
                "max_age_seconds must not be negative".into(),
            ));
        }
    }
    let features = resolve(state, &request.features).await?;
    if request.output != Format::Json {
        // The flat table has a column per value: a feature without values has no columns.
        if let Some(f) = features.iter().find(|f| f.unresolved.is_some()) {
            return Err(ServiceError::NotFound(format!(
                "Feature '{}' did not resolve: {}",
                f.reference,
                f.unresolved.as_deref().unwrap_or_default()
            )));
        }
    }
    let job = Job {
        task: Task::Training(TrainingJob {
            input: request.input,
            output: request.output,
            max_age_micros: request.max_age_seconds.map(|s| s.saturating_mul(1_000_000)),
            features,
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
        let meta = match resolve_key(state, key).await {
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
                    uri: super::history::file_uri(state, s)?,
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
    let mut source = super::online::source_of(state, &feature).await?;
    if let Some((pinned, _)) = raw_tables::pin(state, &table).await? {
        source.files = pinned.files;
        source.partitioned = pinned.partitioned;
    }
    Ok(Some((version_id, source)))
}
