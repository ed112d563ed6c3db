//! Batch serving: many entities x many features in one call.
//!
//! Each feature reference is resolved once; values come from the in-process values cache and
//! the misses of each version from one database query. The response is assembled as text from
//! the stored JSON, with an explicit marker for what is missing instead of a not-found error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::AppState;
use super::{Result, ServiceError};
use crate::cache::{Cache, EntityHash, LookupKey, Snapshot, VectorRef};
use crate::keys::EntityKey;
use crate::model::BatchRequest;
use crate::offline::OfflineStore;
use crate::served::{Freshness, VersionMeta};
use crate::store::Store;
use serde_json::{Map, Value};

use super::history::{self, History};
use super::lookup;
use super::online::Online;
use super::vectors::{resolve_key, resolve_key_at};

pub const MAX_BATCH_ENTITIES: usize = 10_000;
pub const MAX_BATCH_FEATURES: usize = 100;

/// `,"name":` for a column named `name`, written into one buffer (a `format!` here was 2 % of
/// a 100 × 10 batch).
fn member_json(name: &str) -> Vec<u8> {
    let mut member = Vec::with_capacity(name.len() + 4);
    member.push(b',');
    push_json_str(&mut member, name);
    member.push(b':');
    member
}

enum Source {
    /// The whole version, in memory.
    Snapshot(Arc<Snapshot>),
    /// Values per requested entity (index-aligned with the request), `None` when absent.
    Fetched(Vec<Option<Bytes>>),
    Unresolved,
}

struct Column {
    name: String,
    /// `,"name":`, the column's member of an answer's object: the name is written with its
    /// separators in one copy per value (`member_json` without the comma for the first).
    member_json: Vec<u8>,
    meta: Option<VersionMeta>,
    /// Of the snapshot that served the column (null when unresolved).
    freshness: Option<Freshness>,
    /// An aggregation feature's column: the instant its values hold at.
    evaluated_at: Option<DateTime<Utc>>,
    /// This feature's id of each entity, when the request's `entity_ids` are not (entities
    /// sent as objects of key values).
    ids: Option<Vec<String>>,
    source: Source,
}

impl Column {
    /// The column's name as a JSON string.
    fn name_json(&self) -> &[u8] {
        &self.member_json[1..self.member_json.len() - 1]
    }

    /// Its member prefix: `"name":` first in an object, `,"name":` after another member.
    fn member(&self, first: bool) -> &[u8] {
        &self.member_json[usize::from(first)..]
    }

    /// The values of the entity in `row`, whose id in the request is `entity`, with its hash
    /// when the row took one (once per row, not per column: every snapshot shares one hasher).
    fn value<'a>(
        &'a self,
        row: usize,
        entity: &'a str,
        hash: Option<EntityHash>,
    ) -> Option<&'a [u8]> {
        match &self.source {
            Source::Snapshot(s) => match (&self.ids, hash) {
                (None, Some(hash)) => s.get_hashed(entity, hash),
                (None, None) => s.get(entity),
                (Some(ids), _) => s.get(&ids[row]),
            },
            Source::Fetched(values) => values[row].as_deref(),
            Source::Unresolved => None,
        }
    }
}

pub async fn get(state: &AppState, req: &BatchRequest<'_>) -> Result<Bytes> {
    if req.features.is_empty() {
        return Err(ServiceError::Invalid("features must not be empty".into()));
    }
    if req.features.len() > MAX_BATCH_FEATURES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_BATCH_FEATURES} features per batch"
        )));
    }
    let entities = Entities::of(req)?;
    if entities.len() > MAX_BATCH_ENTITIES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_BATCH_ENTITIES} entities per batch"
        )));
    }

    let parsed = req
        .features
        .iter()
        .map(lookup::reference)
        .collect::<Result<Vec<_>>>()?;
    if req.as_of.is_none() {
        if let Some(columns) = held_columns(&state.cache, &state.online, &parsed, &entities) {
            return Ok(render(&entities, &columns, &[]));
        }
    }
    // Features resolve and load concurrently: a cold batch waits for its slowest version, not
    // for the sum of them.
    let columns = futures::future::try_join_all(
        parsed
            .into_iter()
            .map(|(name, key)| column(state, name, key, &entities, req.as_of)),
    )
    .await?;
    let unresolved: Vec<(String, String)> = columns
        .iter()
        .filter_map(|(c, reason)| reason.clone().map(|r| (c.name.clone(), r)))
        .collect();
    let columns: Vec<Column> = columns.into_iter().map(|(c, _)| c).collect();
    Ok(render(&entities, &columns, &unresolved))
}

/// An entity sent as an object: its key values as text by column, and the object as sent.
type KeyValues<'a> = (Vec<(&'a str, Cow<'a, str>)>, Option<&'a Map<String, Value>>);

/// The request's entities: its `entity_ids`, or its `entities` (objects of key values, or
/// plain ids).
enum Entities<'a> {
    Ids(Vec<&'a str>),
    Sent {
        /// Each entity's id when it came as one (`None` for an object)...
        ids: Vec<Option<&'a str>>,
        /// ...or its key values (empty for an id).
        keys: Vec<KeyValues<'a>>,
    },
}

impl<'a> Entities<'a> {
    fn of(req: &'a BatchRequest<'_>) -> Result<Entities<'a>> {
        let sent = match (&req.entity_ids, &req.entities) {
            (Some(ids), None) => return Ok(Entities::Ids(ids.iter().map(|id| &*id.0).collect())),
            (None, Some(sent)) => sent,
            (None, None) => {
                return Err(ServiceError::Invalid(
                    "give the entities: entity_ids (ids) or entities (objects of key values)"
                        .into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ServiceError::Invalid(
                    "give entity_ids or entities, not both".into(),
                ))
            }
        };
        if sent.len() > MAX_BATCH_ENTITIES {
            return Err(ServiceError::Invalid(format!(
                "at most {MAX_BATCH_ENTITIES} entities per batch"
            )));
        }
        let mut ids = Vec::with_capacity(sent.len());
        let mut keys = Vec::with_capacity(sent.len());
        for (i, entity) in sent.iter().enumerate() {
            match entity {
                Value::String(id) => {
                    ids.push(Some(id.as_str()));
                    keys.push((Vec::new(), None));
                }
                Value::Object(object) => {
                    let mut values = Vec::with_capacity(object.len());
                    for (column, value) in object {
                        let text = match value {
                            Value::String(s) => Cow::Borrowed(s.as_str()),
                            Value::Number(n) if n.is_i64() || n.is_u64() => {
                                Cow::Owned(n.to_string())
                            }
                            _ => {
                                return Err(ServiceError::Invalid(format!(
                                    "entities[{i}].{column} must be text or an integer"
                                )))
                            }
                        };
                        values.push((column.as_str(), text));
                    }
                    ids.push(None);
                    keys.push((values, Some(object)));
                }
                _ => {
                    return Err(ServiceError::Invalid(format!(
                        "entities[{i}] must be an object of key values or an id"
                    )))
                }
            }
        }
        Ok(Entities::Sent { ids, keys })
    }

    fn len(&self) -> usize {
        match self {
            Entities::Ids(ids) => ids.len(),
            Entities::Sent { ids, .. } => ids.len(),
        }
    }

    /// The ids of a feature keyed by `entity_key` (as stored): `None` when they are the
    /// request's `entity_ids` as they are.
    fn ids_for(&self, entity_key: &str, reference: &str) -> Result<Option<Vec<String>>> {
        // A key stored without `[` is one column (`EntityKey::from_stored`): the ids as sent,
        // known without parsing it.
        if matches!(self, Entities::Ids(_)) && !entity_key.starts_with('[') {
            return Ok(None);
        }
        let key = EntityKey::from_stored(entity_key);
        let refused = |why: String| {
            ServiceError::Invalid(format!(
                "Feature '{reference}' is keyed by {}: {why}",
                key.describe()
            ))
        };
        match self {
            Entities::Ids(_) if key.single().is_some() => Ok(None),
            Entities::Ids(_) => Err(refused(
                "send the entities as objects of its key columns (entities)".into(),
            )),
            Entities::Sent { ids, keys } => ids
                .iter()
                .zip(keys)
                .enumerate()
                .map(|(i, (id, (values, _)))| match id {
                    Some(id) if key.single().is_some() => Ok(id.to_string()),
                    Some(_) => Err(refused(format!(
                        "entities[{i}] is an id; send an object of its key columns"
                    ))),
                    None => key
                        .id_of(|column| {
                            values
                                .iter()
                                .find(|(c, _)| *c == column)
                                .map(|(_, v)| v.as_ref())
                        })
                        .map_err(|why| refused(format!("entities[{i}] is {why}"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }
}

/// Every column of a batch (without `as_of`) when each is held now: its lookup under the
/// current epoch and its version whole in memory. `None` when any is not, or is an aggregation
/// feature, or its entities do not fit its key: `column` then finds them all, loading what it
/// must and answering what is wrong. Answering from these without a future per column (and
/// its `try_join_all`) was ~10 % of a 100 × 10 batch's instructions.
fn held_columns(
    cache: &Cache,
    online: &Online,
    parsed: &[(String, LookupKey)],
    entities: &Entities<'_>,
) -> Option<Vec<Column>> {
    parsed
        .iter()
        .map(|(name, key)| {
            if let LookupKey::FeatureName(n) = key {
                if online.holds(n) {
                    return None;
                }
            }
            let meta = cache.lookup_now(key.as_ref())?;
            let ids = entities.ids_for(&meta.entity_key, name).ok()?;
            let snapshot = cache.snapshot_now(&meta)?;
            Some(Column {
                name: name.clone(),
                member_json: member_json(name),
                freshness: Some(meta.freshness),
                meta: Some(meta),
                evaluated_at: None,
                ids,
                source: Source::Snapshot(snapshot),
            })
        })
        .collect()
}

/// One feature's column of the answer, and why it did not resolve (if it did not).
async fn column(
    state: &AppState,
    name: String,
    key: LookupKey,
    entities: &Entities<'_>,
    as_of: Option<DateTime<Utc>>,
) -> Result<(Column, Option<String>)> {
    let by_name = match (&key, as_of) {
        (LookupKey::FeatureName(n), None) => Some(n.clone()),
        _ => None,
    };
    if let Some(n) = by_name.as_deref().filter(|n| state.online.holds(n)) {
        if let Some(column) = online_column(state, &name, n, entities, None).await? {
            return Ok((column, None));
        }
    }
    let resolved = match as_of {
        Some(at) => resolve_key_at(&state.cache, &state.store, key.clone(), at).await,
        None => resolve_key(&state.cache, &state.store, key.clone()).await,
    };
    if let (Err(ServiceError::NotFound(_)), LookupKey::FeatureName(n)) = (&resolved, &key) {
        if let Some(column) = online_column(state, &name, n, entities, as_of).await? {
            return Ok((column, None));
        }
    }
    let (meta, mut reason) = match resolved {
        Ok(meta) => (Some(meta), None),
        Err(ServiceError::NotFound(reason)) => (None, Some(reason)),
        Err(e) => return Err(e),
    };
    let ids = match &meta {
        Some(meta) => entities.ids_for(&meta.entity_key, &name)?,
        None => None,
    };
    // Only the versions read entity by entity need the ids listed.
    let entity_ids = || -> Vec<&str> {
        match (&ids, entities) {
            (Some(ids), _) => ids.iter().map(String::as_str).collect(),
            (None, Entities::Ids(ids)) => ids.clone(),
            (None, Entities::Sent { .. }) => Vec::new(),
        }
    };
    let mut freshness = meta.as_ref().map(|m| m.freshness);
    let source = match (meta.clone(), as_of) {
        (None, _) => Source::Unresolved,
        (Some(meta), Some(at)) => {
            match history::in_force(&state.store, meta.version_id, at).await {
                Ok(snapshot) => {
                    freshness = Some(
                        history::snapshot_freshness(&state.store, meta.version_id, &snapshot)
                            .await?,
                    );
                    Source::Fetched(
                        values_as_of(
                            &state.history,
                            &state.store,
                            &state.offline,
                            snapshot.id,
                            &entity_ids(),
                        )
                        .await?,
                    )
                }
                Err(ServiceError::NotFound(why)) => {
                    reason = Some(why);
                    freshness = None;
                    Source::Unresolved
                }
                Err(e) => return Err(e),
            }
        }
        // Versions that fit the byte cap are held whole in memory; larger ones are read entity
        // by entity.
        (Some(meta), None) => match snapshot(&state.cache, &state.store, meta.clone()).await? {
            Some(snapshot) => Source::Snapshot(snapshot),
            None => Source::Fetched(
                fetch_values(&state.cache, &state.store, meta, &entity_ids()).await?,
            ),
        },
    };
    let member_json = member_json(&name);
    Ok((
        Column {
            name,
            member_json,
            meta,
            freshness,
            evaluated_at: None,
            ids,
            source,
        },
        reason,
    ))
}

/// An aggregation feature's column, computed at this instant or at `as_of`; `None` when
/// `feature` is not one.
async fn online_column(
    state: &AppState,
    name: &str,
    feature: &str,
    sent: &Entities<'_>,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<Column>> {
    let ids = match sent {
        Entities::Ids(_) => None,
        Entities::Sent { .. } => {
            // Answering for no entity loads the feature, which tells its key.
            if super::online::values(state, feature, &[]).await?.is_none() {
                return Ok(None);
            }
            match state.online.entity_key(feature).await {
                Some(key) => sent.ids_for(&key, name)?,
                None => return Ok(None),
            }
        }
    };
    let entities: Vec<&str> = match (&ids, sent) {
        (Some(ids), _) => ids.iter().map(String::as_str).collect(),
        (None, Entities::Ids(ids)) => ids.clone(),
        (None, Entities::Sent { .. }) => Vec::new(),
    };
    let answers = match as_of {
        None => super::online::values(state, feature, &entities).await?,
        Some(at) => super::online::values_at(state, feature, &entities, at).await?,
    };
    let Some(answers) = answers else {
        return Ok(None);
    };
    let evaluated_at = answers.first().map(|a| a.evaluated_at);
    let data_as_of = answers.first().and_then(|a| a.data_as_of);
    Ok(Some(Column {
        name: name.to_string(),
        member_json: member_json(name),
        meta: None,
        freshness: Some(Freshness {
            data_as_of,
            stale: false,
        }),
        evaluated_at,
        ids,
        source: Source::Fetched(
            answers
                .into_iter()
                .map(|a| Some(Bytes::from(a.values)))
                .collect(),
        ),
    }))
}

/// Each requested entity's values in a stored snapshot, `None` when it is not in it.
async fn values_as_of(
    history: &History,
    store: &Store,
    offline: &OfflineStore,
    snapshot_id: i64,
    entity_ids: &[&str],
) -> Result<Vec<Option<Bytes>>> {
    let decoded = history::decoded(history, store, offline, snapshot_id).await?;
    let entity_ids: Vec<String> = entity_ids.iter().map(|e| e.to_string()).collect();
    super::blocking(move || {
        let rows: Vec<Option<u32>> = entity_ids
            .iter()
            .map(|e| decoded.rows.get(e).copied())
            .collect();
        // Each snapshot row once: a batch may name an entity twice.
        let mut unique: Vec<u32> = rows.iter().flatten().copied().collect();
        unique.sort_unstable();
        unique.dedup();
        let idx = polars::prelude::IdxCa::from_vec("idx".into(), unique.clone());
        let frame = decoded.frame.take(&idx).map_err(|e| e.to_string())?;
        let key = frame.columns()[0].name().to_string();
        // In the frame's order, which is `unique`'s (not sorted by key).
        let encoded = crate::engine::result::encode_part(&frame, &key)?;
        let by_row: HashMap<u32, Bytes> = unique
            .into_iter()
            .zip(encoded)
            .map(|(row, v)| (row, Bytes::from(v.values)))
            .collect();
        Ok::<_, String>(
            rows.iter()
                .map(|r| r.and_then(|r| by_row.get(&r).cloned()))
                .collect(),
        )
    })
    .await?
    .map_err(ServiceError::fault)
}

/// The version held whole, or `None` when it is too big for the snapshot cap.
async fn snapshot(
    cache: &Cache,
    store: &Store,
    meta: VersionMeta,
) -> Result<Option<Arc<Snapshot>>> {
    let store = store.clone();
    let generation = meta.generation;
    cache
        .snapshot(meta, async move {
            let rows = store.all_values(generation).await?;
            super::blocking(move || Snapshot::build(&rows)).await
        })
        .await
        .map_err(ServiceError::fault)
}

/// Values of one version for every requested entity: cache first, then one query for the
/// misses.
async fn fetch_values(
    cache: &Cache,
    store: &Store,
    meta: VersionMeta,
    entity_ids: &[&str],
) -> Result<Vec<Option<Bytes>>> {
    let mut values = Vec::with_capacity(entity_ids.len());
    let mut misses: Vec<&str> = Vec::new();
    for &entity in entity_ids {
        let hit = cache.values(VectorRef::of(meta.version_id, meta.generation, entity));
        if hit.is_none() {
            misses.push(entity);
        }
        values.push(hit);
    }
    if misses.is_empty() {
        return Ok(values);
    }
    misses.sort_unstable();
    misses.dedup();
    let mut found: HashMap<String, Bytes> = HashMap::with_capacity(misses.len());
    for (entity, text) in store.get_values_many(meta.generation, &misses).await? {
        let body = Bytes::from(text);
        let key = VectorRef::of(meta.version_id, meta.generation, &entity).to_key();
        cache.put_values(key, body.clone());
        found.insert(entity, body);
    }
    for (slot, entity) in values.iter_mut().zip(entity_ids) {
        if slot.is_none() {
            *slot = found.get(*entity).cloned();
        }
    }
    Ok(values)
}

/// `{"versions":{ref:id|null},"freshness":{ref:{data_as_of,stale}|null},
/// "unresolved":{ref:reason},"results":[{"entity_id":..,"features":{ref:values|null},
/// "missing":[ref..]}]}`
fn render(entities: &Entities<'_>, columns: &[Column], unresolved: &[(String, String)]) -> Bytes {
    let mut out: Vec<u8> = Vec::with_capacity(entities.len() * (32 + 48 * columns.len()) + 256);
    out.extend_from_slice(b"{\"versions\":");
    push_by_reference(&mut out, columns, |c, out| match &c.meta {
        Some(m) => out.extend_from_slice(itoa::Buffer::new().format(m.version_id).as_bytes()),
        None => out.extend_from_slice(b"null"),
    });
    out.extend_from_slice(b",\"freshness\":");
    // One buffer for every column's freshness: written directly, not formatted per column.
    let mut fields = String::with_capacity(96);
    push_by_reference(&mut out, columns, |c, out| match c.freshness {
        Some(f) => {
            fields.clear();
            fields.push('{');
            f.push_json_fields(&mut fields);
            if let Some(at) = c.evaluated_at {
                fields.push_str(",\"evaluated_at\":\"");
                crate::times::push_ts(&mut fields, &at);
                fields.push('"');
            }
            fields.push('}');
            out.extend_from_slice(fields.as_bytes());
        }
        None => out.extend_from_slice(b"null"),
    });
    out.extend_from_slice(b",\"unresolved\":{");
    for (i, (name, reason)) in unresolved.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, name);
        out.push(b':');
        push_json_str(&mut out, reason);
    }
    out.extend_from_slice(b"},\"results\":[");
    let mut missing: Vec<&[u8]> = Vec::with_capacity(columns.len());
    // Hash each row's id only when some column probes a snapshot with it.
    let probes = columns
        .iter()
        .any(|c| c.ids.is_none() && matches!(c.source, Source::Snapshot(_)));
    for row in 0..entities.len() {
        if row > 0 {
            out.push(b',');
        }
        let entity = match entities {
            Entities::Ids(ids) => ids[row],
            Entities::Sent { ids, .. } => ids[row].unwrap_or(""),
        };
        match entities {
            Entities::Sent { keys, .. } if keys[row].1.is_some() => {
                out.extend_from_slice(b"{\"entity\":");
                if serde_json::to_writer(&mut out, &keys[row].1).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            _ => {
                out.extend_from_slice(b"{\"entity_id\":");
                push_json_str(&mut out, entity);
            }
        }
        out.extend_from_slice(b",\"features\":{");
        missing.clear();
        let hash = probes.then(|| EntityHash::of(entity));
        for (i, c) in columns.iter().enumerate() {
            out.extend_from_slice(c.member(i == 0));
            match c.value(row, entity, hash) {
                Some(v) => out.extend_from_slice(v),
                None => {
                    out.extend_from_slice(b"null");
                    missing.push(c.name_json());
                }
            }
        }
        out.extend_from_slice(b"},\"missing\":[");
        for (i, name) in missing.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// `{ref: value, ...}` over the columns, each value written as JSON by `value`.
fn push_by_reference(
    out: &mut Vec<u8>,
    columns: &[Column],
    mut value: impl FnMut(&Column, &mut Vec<u8>),
) {
    out.push(b'{');
    for (i, c) in columns.iter().enumerate() {
        out.extend_from_slice(c.member(i == 0));
        value(c, out);
    }
    out.push(b'}');
}

/// A JSON string literal, escaped in place (no allocation per value).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}
