//! Online answers of aggregation features, exact at the instant of the request.
//!
//! Each replica holds, per aggregation feature it has been asked for, the events that a window
//! ending now or later can still hold (`engine::held`), read from the raw table by a worker.
//! Before answering, a request checks the change epoch the cache serves under (every ingest
//! moves it, on every replica, before it is acknowledged); when it moved, the table's newest
//! version is read from the database, and the files added since the held version are read by
//! a worker and added. So an acknowledged ingest is in the next answer on every replica, as
//! the read-your-writes contract of SQL features says, and a restarted replica or a new one
//! builds what it holds from the table: nothing is lost or counted twice, since what is held
//! is exactly the files it has read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::AppState;
use super::{blocking, lookup, raw_tables, Result, ServiceError};
use crate::cache::Epoch;
use crate::engine::aggregations::{self, Output, Requested};
use crate::engine::held::Held;
use crate::engine::schema::TableSchema;
use crate::engine::training::Format;
use crate::model::{Aggregation, Declaration};
use crate::store::FeatureRow;
use crate::worker::protocol::{
    AggregatedSource, EventsJob, Job, Task, TrainingFeature, TrainingJob,
};

/// Events this much older than the longest window are kept too, so a clock read a little
/// behind another replica's never asks for an event already dropped.
const MARGIN_MICROS: i64 = 60_000_000;

/// What this replica holds, by feature name.
#[derive(Default)]
pub struct Online {
    features: RwLock<HashMap<String, Arc<FeatureHeld>>>,
    /// Whether `features` ever held one: until then a SQL feature's request pays one load
    /// instead of a lock.
    any: std::sync::atomic::AtomicBool,
}

struct FeatureHeld {
    feature_id: i64,
    table_id: i64,
    /// One catch-up at a time; answers read `state` meanwhile.
    refresh: tokio::sync::Mutex<()>,
    state: tokio::sync::RwLock<State>,
}

struct State {
    held: Held,
    source: AggregatedSource,
    /// The table's files already read into `held`.
    files: HashSet<String>,
    /// The table version those files make, and when it was recorded.
    version: i64,
    data_as_of: Option<DateTime<Utc>>,
    /// The epoch under which the table was last found at `version`.
    checked: Option<Epoch>,
}

/// An online answer: the values at `evaluated_at`.
pub struct Answer {
    pub values: String,
    pub evaluated_at: DateTime<Utc>,
    pub data_as_of: Option<DateTime<Utc>>,
}

impl Online {
    fn get(&self, name: &str) -> Option<Arc<FeatureHeld>> {
        self.features.read().map_or_else(
            |p| p.into_inner().get(name).cloned(),
            |m| m.get(name).cloned(),
        )
    }

    /// Whether `name` is an aggregation feature this replica holds events for: its requests
    /// go straight to `values`, without a version lookup.
    pub fn holds(&self, name: &str) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.features.read().map_or_else(
            |p| p.into_inner().contains_key(name),
            |m| m.contains_key(name),
        )
    }

    /// The key column of aggregation feature `name`, when this replica holds it.
    pub async fn entity_key(&self, name: &str) -> Option<String> {
        let held = self.get(name)?;
        let key = held.state.read().await.source.entity_key.clone();
        Some(key)
    }

    fn put(&self, name: &str, held: Option<Arc<FeatureHeld>>) {
        let mut map = match self.features.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match held {
            Some(h) => {
                self.any.store(true, std::sync::atomic::Ordering::Relaxed);
                map.insert(name.to_string(), h)
            }
            None => map.remove(name),
        };
    }

    /// Drop what is held for feature `id` (deleted here; other replicas drop theirs when next
    /// asked for its name).
    pub fn forget(&self, id: i64) {
        let mut map = match self.features.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, h| h.feature_id != id);
    }

    /// Events held by this replica, over every feature.
    async fn total_events(&self) -> usize {
        let all: Vec<Arc<FeatureHeld>> = match self.features.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        let mut n = 0;
        for f in all {
            n += f.state.read().await.held.events();
        }
        n
    }
}

/// The values of aggregation feature `name` for each entity at this instant; `None` when
/// `name` is not an aggregation feature (the caller answers as for any other name).
pub async fn values(
    state: &AppState,
    name: &str,
    entities: &[&str],
) -> Result<Option<Vec<Answer>>> {
    let epoch = state.cache.epoch().await;
    let held = match state.online.get(name) {
        Some(h) if epoch.is_some() && h.state.read().await.checked == epoch => h,
        _ => match refresh(state, name, epoch).await? {
            Some(h) => h,
            None => return Ok(None),
        },
    };
    let now = state.clock.now();
    let at = now.timestamp_micros();
    let s = held.state.read().await;
    Ok(Some(
        entities
            .iter()
            .map(|e| Answer {
                values: s.held.values_at(e, at),
                evaluated_at: now,
                data_as_of: s.data_as_of,
            })
            .collect(),
    ))
}

/// Bring what is held for `name` up to the table's newest version (building it on first
/// use); `None` when `name` is not an aggregation feature.
async fn refresh(
    state: &AppState,
    name: &str,
    epoch: Option<Epoch>,
) -> Result<Option<Arc<FeatureHeld>>> {
    let Some(feature) = state.store.feature_by_name(name).await? else {
        state.online.put(name, None);
        return Ok(None);
    };
    if feature.declaration.is_none() {
        state.online.put(name, None);
        return Ok(None);
    }
    let held = match state.online.get(name) {
        // A feature deleted and registered again under the name is another feature.
        Some(h) if h.feature_id == feature.id => h,
        _ => {
            let source = source_of(state, &feature).await?;
            let fresh = Arc::new(FeatureHeld {
                feature_id: feature.id,
                table_id: feature.raw_table_id,
                refresh: tokio::sync::Mutex::new(()),
                state: tokio::sync::RwLock::new(State {
                    held: Held::new(source.outputs.clone()),
                    source,
                    files: HashSet::new(),
                    version: -1,
                    data_as_of: None,
                    checked: None,
                }),
            });
            state.online.put(name, Some(fresh.clone()));
            fresh
        }
    };
    let one = held.clone();
    let _one = one.refresh.lock().await;
    if epoch.is_some() && held.state.read().await.checked == epoch {
        return Ok(Some(held));
    }
    let table = lookup::table(state, held.table_id).await?;
    let newest = state.store.newest_table_version(table.id).await?;
    let (known, data_as_of) = newest.map_or((0, None), |v| (v.version, Some(v.created_at)));
    let (version, horizon) = {
        let s = held.state.read().await;
        (s.version, s.held.horizon())
    };
    let after = state.clock.now().timestamp_micros() - horizon - MARGIN_MICROS;
    if known > version {
        if let Some((pinned, _)) = raw_tables::pin(state, &table).await? {
            let new_files: Vec<String> = {
                let s = held.state.read().await;
                pinned
                    .files
                    .iter()
                    .filter(|f| !s.files.contains(*f))
                    .cloned()
                    .collect()
            };
            if !new_files.is_empty() {
                read_events(state, &held, &new_files, pinned.partitioned, after).await?;
            }
            let mut s = held.state.write().await;
            s.files.extend(new_files);
            s.version = pinned.version;
        }
    }
    let mut s = held.state.write().await;
    s.held.prune(after);
    s.data_as_of = data_as_of.or(s.data_as_of);
    s.checked = epoch;
    drop(s);
    Ok(Some(held))
}

/// Read `files`' events after `after` in a worker and add them to what is held.
async fn read_events(
    state: &AppState,
    held: &FeatureHeld,
    files: &[String],
    partitioned: bool,
    after: i64,
) -> Result<()> {
    let mut source = held.state.read().await.source.clone();
    source.files = files.to_vec();
    source.partitioned = partitioned;
    let (key, time) = (source.entity_key.clone(), source.event_time.clone());
    let job = Job {
        task: Task::Events(EventsJob {
            source,
            after_micros: after,
        }),
        storage: state.offline.options().clone(),
    };
    let (_, payload) = state
        .compute
        .run(&job, None)
        .await
        .map_err(|e| super::failures::worker_error(e, "Reading the feature's events failed"))?;
    let payload = payload.unwrap_or_default();
    let frame = blocking(move || {
        use polars::prelude::{IpcReader, SerReader};
        IpcReader::new(std::io::Cursor::new(payload))
            .finish()
            .map_err(|e| e.to_string())
    })
    .await?
    .map_err(ServiceError::fault)?;
    // Past the limit a feature's events are not loaded and its online answers are refused
    // (its training sets are not limited by this).
    let held_now = state.online.total_events().await;
    let limit = state.config.aggregation_max_held_events;
    if held_now + frame.height() > limit {
        return Err(ServiceError::Invalid(format!(
            "Serving this feature online would hold {} events on this replica, over \
             AGGREGATION_MAX_HELD_EVENTS ({limit}); its training sets are not limited by this",
            held_now + frame.height()
        )));
    }
    let mut s = held.state.write().await;
    s.held.add(&frame, &key, &time).map_err(ServiceError::fault)
}

/// The output columns of declared aggregations over a table of `schema`, or what is wrong
/// with them.
pub(crate) fn plan(
    aggregations: &[Aggregation],
    schema: &TableSchema,
) -> std::result::Result<Vec<Output>, String> {
    let requested: Vec<Requested> = aggregations
        .iter()
        .map(|a| Requested {
            column: &a.column,
            function: &a.function,
            q: a.q,
            windows: &a.windows,
        })
        .collect();
    aggregations::plan(&requested, schema)
}

/// Where the feature's events are and what is computed from them (the files are filled in
/// per read).
pub(crate) async fn source_of(state: &AppState, feature: &FeatureRow) -> Result<AggregatedSource> {
    let declaration: Declaration =
        serde_json::from_str(feature.declaration.as_deref().unwrap_or(""))
            .map_err(ServiceError::fault)?;
    let table = lookup::table(state, feature.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    // Checked at registration against the same schema (tables' schemas do not change).
    let outputs = plan(&declaration.aggregations, &schema).map_err(ServiceError::fault)?;
    let event_time = table.event_time_column.clone().ok_or_else(|| {
        ServiceError::fault("an aggregation feature's table without an event time column")
    })?;
    Ok(AggregatedSource {
        files: Vec::new(),
        partitioned: false,
        schema: raw_tables::definition_of(&table)?,
        entity_key: feature.entity_key.clone(),
        event_time,
        filter: declaration.filter,
        outputs,
    })
}

/// A single-vector answer: `{"entity_id", "feature_values", "feature_version_id": null,
/// "computed_at" and "evaluated_at" (the instant the values hold at), "data_as_of", "stale":
/// false}`. Such values are never stale: they are computed at the request.
pub fn encode(entity: &str, answer: &Answer) -> Result<bytes::Bytes> {
    let at = crate::times::format_ts(&answer.evaluated_at);
    let mut out = String::with_capacity(answer.values.len() + entity.len() + 160);
    out.push_str("{\"entity_id\":");
    out.push_str(&serde_json::to_string(entity).map_err(ServiceError::fault)?);
    out.push_str(",\"feature_values\":");
    out.push_str(&answer.values);
    out.push_str(",\"feature_version_id\":null,\"computed_at\":\"");
    out.push_str(&at);
    out.push_str("\",\"evaluated_at\":\"");
    out.push_str(&at);
    out.push_str("\",");
    out.push_str(
        &crate::served::Freshness {
            data_as_of: answer.data_as_of,
            stale: false,
        }
        .json_fields(),
    );
    out.push('}');
    Ok(bytes::Bytes::from(out))
}

/// The values of aggregation feature `name` for each entity at a past instant `at` (`as_of`),
/// computed as a training set's rows at `at` would be, in a worker over the table's current
/// version; `None` when `name` is not an aggregation feature.
pub async fn values_at(
    state: &AppState,
    name: &str,
    entities: &[&str],
    at: DateTime<Utc>,
) -> Result<Option<Vec<Answer>>> {
    let Some(feature) = state.store.feature_by_name(name).await? else {
        return Ok(None);
    };
    if feature.declaration.is_none() {
        return Ok(None);
    }
    let table = lookup::table(state, feature.raw_table_id).await?;
    let mut source = source_of(state, &feature).await?;
    let newest = state.store.newest_table_version(table.id).await?;
    if let Some((pinned, _)) = raw_tables::pin(state, &table).await? {
        source.files = pinned.files;
        source.partitioned = pinned.partitioned;
    }
    let timestamp = crate::times::format_ts(&at);
    let rows: Vec<serde_json::Value> = entities
        .iter()
        .map(|e| serde_json::json!({"entity_id": e, "timestamp": timestamp}))
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({ "rows": rows })).map_err(ServiceError::fault)?;
    let job = Job {
        task: Task::Training(TrainingJob {
            input: Format::Json,
            output: Format::Json,
            max_age_micros: None,
            features: vec![TrainingFeature {
                reference: name.to_string(),
                version_id: None,
                unresolved: None,
                entity_key: None,
                snapshots: Vec::new(),
                aggregated: Some(source),
            }],
        }),
        storage: state.offline.options().clone(),
    };
    let failed = |e| super::failures::worker_error(e, "Computing the values failed");
    let admitted = state.compute.admit().await.map_err(failed)?;
    let mut running = state
        .compute
        .start(admitted, &job, Some(&body))
        .await
        .map_err(failed)?;
    let mut answer = Vec::new();
    while let Some(frame) = running.next_frame().await.map_err(failed)? {
        answer.extend_from_slice(&frame);
    }
    running.finish().await.map_err(failed)?;
    let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(ServiceError::fault)?;
    let data_as_of = newest.map(|v| v.created_at);
    Ok(Some(
        (0..entities.len())
            .map(|i| Answer {
                values: answer["rows"][i]["features"][name].to_string(),
                evaluated_at: at,
                data_as_of,
            })
            .collect(),
    ))
}
