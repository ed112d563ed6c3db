use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::AppState;
use super::{Result, ServiceError};
use crate::cache::{Cache, Epoch, LookupKey, LookupRef, VectorRef};
use crate::keys::EntityKey;
use crate::model::VectorQuery;
use crate::served::VersionMeta;
use crate::store::Store;

use super::lookup;

/// The entity a single-vector request names: `entity_id` as given, or the id its key
/// parameters make (`crate::keys`), with their names to check against the feature's key.
pub(crate) struct Requested<'a> {
    pub id: Cow<'a, str>,
    /// The key parameters' names; `None` when the request gave `entity_id`.
    pub names: Option<Vec<&'a str>>,
}

impl<'a> Requested<'a> {
    pub fn of(query: &'a VectorQuery<'_>) -> Requested<'a> {
        if let Some(id) = &query.entity_id {
            return Requested {
                id: Cow::Borrowed(id.as_ref()),
                names: None,
            };
        }
        let names = query.key.iter().map(|(k, _)| k.as_str()).collect();
        let id = match query.key.as_slice() {
            [(_, value)] => Cow::Borrowed(value.as_str()),
            pairs => {
                let mut pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Cow::Owned(crate::keys::tuple_id(&mut pairs))
            }
        };
        Requested {
            id,
            names: Some(names),
        }
    }

    /// A 400 when the key parameters are not the feature's key columns (`entity_key` as
    /// stored). A tuple needs no check when it is found: its id holds the names, and every
    /// stored id of a feature keyed by several columns holds exactly those.
    pub fn check(&self, entity_key: &str) -> Result<()> {
        let Some(names) = &self.names else {
            return Ok(());
        };
        if let [one] = names.as_slice() {
            if *one == entity_key {
                return Ok(());
            }
        }
        match EntityKey::from_stored(entity_key).mismatch(names.iter().copied()) {
            Some(why) => Err(ServiceError::Invalid(format!("Key parameters: {why}"))),
            None => Ok(()),
        }
    }

    /// The check a found tuple can skip (see `check`).
    fn check_found(&self, entity_key: &str) -> Result<()> {
        match &self.names {
            Some(names) if names.len() > 1 && entity_key.starts_with('[') => Ok(()),
            _ => self.check(entity_key),
        }
    }
}

/// Serve one entity's vector as ready-to-send JSON bytes.
///
/// The hot path is two in-process cache hits (version lookup, then the encoded body): no
/// database round trip and no JSON encoding.
pub async fn get(state: &AppState, query: &VectorQuery<'_>) -> Result<Bytes> {
    let entity = Requested::of(query);
    let by_name = query
        .feature_name
        .as_deref()
        .filter(|_| query.feature_version_id.is_none());
    // The paths past the cache are boxed: inline, their database futures made this one
    // kilobytes, copied at every `.await` above it on a cached request.
    if let Some(name) = by_name.filter(|n| state.online.holds(n)) {
        if let Some(body) = Box::pin(online(state, name, &entity)).await? {
            return Ok(body);
        }
    }
    let meta = match resolve(&state.cache, &state.store, query).await {
        Ok(meta) => meta,
        // An aggregation feature has no computed version: its values are computed now.
        Err(ServiceError::NotFound(why)) => {
            if let Some(name) = by_name {
                if let Some(body) = Box::pin(online(state, name, &entity)).await? {
                    return Ok(body);
                }
            }
            return Err(ServiceError::NotFound(why));
        }
        Err(e) => return Err(e),
    };
    let key = vector_key(&meta, &entity.id);
    if let Some(held) = state.cache.vector(key).await {
        entity.check_found(&meta.entity_key)?;
        return Ok(answer_from(&state.cache, key, held, meta.freshness.stale));
    }
    Box::pin(load(&state.cache, &state.store, &entity, meta)).await
}

/// `get`'s answer when it is held whole in this process and found without waiting (no
/// database, no Redis, no aggregation feature); `None` when `get` must be asked. What a model
/// asks again and again is answered here, with no future to build, move and box.
pub fn get_held(
    cache: &Cache,
    online: &super::online::Online,
    query: &VectorQuery<'_>,
) -> Option<Result<Bytes>> {
    if query.feature_version_id.is_none() {
        let name = query.feature_name.as_deref()?;
        if online.holds(name) {
            return None;
        }
    }
    let meta = cache.lookup_now(lookup_ref(query).ok()?)?;
    let entity = Requested::of(query);
    let key = vector_key(&meta, &entity.id);
    let held = cache.vector_now(key)?;
    Some(
        entity
            .check_found(&meta.entity_key)
            .map(|()| answer_from(cache, key, held, meta.freshness.stale)),
    )
}

/// The answer from a held body: as it is when it already says `stale` as the version does now
/// (no copy), else with `stale` set, and then held in its place, so that the next answer is
/// the same bytes again (the body came as stored, from Redis, or the table moved on since).
fn answer_from(cache: &Cache, key: VectorRef<'_>, held: Bytes, stale: bool) -> Bytes {
    if held.ends_with(stale_suffix(stale)) {
        return held;
    }
    let answer = with_stale(&held, stale);
    cache.hold_vector(key.to_key(), answer.clone());
    answer
}

fn vector_key<'a>(meta: &VersionMeta, entity: &'a str) -> VectorRef<'a> {
    VectorRef::of(meta.version_id, meta.generation, entity)
}

/// A vector the cache does not hold: read from the database, encoded, and cached.
async fn load(
    cache: &Cache,
    store: &Store,
    entity: &Requested<'_>,
    mut meta: VersionMeta,
) -> Result<Bytes> {
    entity.check(&meta.entity_key)?;
    let mut values = store.get_vector(meta.generation, &entity.id).await?;
    if values.is_none() {
        // A lookup read just before a publish names the generation it replaced, which is
        // dropped soon after: ask the database which generation serves now.
        if let Some(now) = store.version_meta(meta.version_id).await? {
            if now.generation != meta.generation {
                meta = now;
                values = store.get_vector(meta.generation, &entity.id).await?;
            }
        }
    }
    let values = values.ok_or_else(|| {
        ServiceError::NotFound(format!(
            "Feature vector not found for entity '{}'",
            entity.id
        ))
    })?;
    let typed = typed_entity(store, &meta, &entity.id).await?;
    let body = encode(&entity.id, typed.as_deref(), &values, &meta)?;
    let answer = with_stale(&body, meta.freshness.stale);
    cache
        .put_vector(vector_key(&meta, &entity.id).to_key(), body, answer.clone())
        .await;
    Ok(answer)
}

/// An aggregation feature's answer at this instant; `None` when `name` is not one.
async fn online(state: &AppState, name: &str, entity: &Requested<'_>) -> Result<Option<Bytes>> {
    let Some(answers) = super::online::values(state, name, &[&entity.id]).await? else {
        return Ok(None);
    };
    // Answering loaded the feature, so its key is known now.
    if entity.names.is_some() {
        if let Some(key) = state.online.entity_key(name).await {
            entity.check(&key)?;
        }
    }
    answers
        .first()
        .map(|a| super::online::encode(&entity.id, a))
        .transpose()
}

/// A body as stored with `stale` added last, or an answer with its `stale` replaced. The
/// stored body is fixed for a generation; `stale` is not (it turns true on an ingest, with no
/// new generation). So the cache stores bodies without it (a stored body ends with its
/// `data_as_of`, never with a `stale` member), and holds in process the answer last given,
/// which is served as it is while its `stale` still holds: no copy per request.
fn with_stale(body: &Bytes, stale: bool) -> Bytes {
    let suffix = stale_suffix(stale);
    let open = [stale_suffix(false), stale_suffix(true)]
        .iter()
        .find(|old| body.ends_with(old))
        .map_or(body.len().checked_sub(1), |old| {
            Some(body.len() - old.len())
        });
    let Some(open) = open else {
        return body.clone();
    };
    let mut out = Vec::with_capacity(open + suffix.len());
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(suffix);
    Bytes::from(out)
}

/// How an answer ends: its `stale` member, then the closing brace.
fn stale_suffix(stale: bool) -> &'static [u8] {
    if stale {
        b",\"stale\":true}"
    } else {
        b",\"stale\":false}"
    }
}

/// Which version serves this request: `feature_version_id` if given, else the newest active
/// computed version of `feature_name`.
pub(crate) async fn resolve(
    cache: &Cache,
    store: &Store,
    query: &VectorQuery<'_>,
) -> Result<VersionMeta> {
    resolve_ref(cache, store, lookup_ref(query)?).await
}

/// What a single-vector request names, borrowed from it.
fn lookup_ref<'a>(query: &'a VectorQuery<'_>) -> Result<LookupRef<'a>> {
    match (query.feature_version_id, &query.feature_name) {
        (Some(id), _) => Ok(LookupRef::Version(id)),
        (None, Some(name)) => Ok(LookupRef::FeatureName(name.as_ref())),
        (None, None) => Err(ServiceError::Invalid(
            "Either feature_version_id or feature_name must be provided".into(),
        )),
    }
}

/// What a single-vector request names.
pub(crate) fn lookup_key(query: &VectorQuery<'_>) -> Result<LookupKey> {
    lookup_ref(query).map(LookupRef::to_key)
}

/// Resolve a version reference as it resolved at `at`: a feature name names the version that
/// served it then (`Store::served_version_at`), or, when none had served it yet, the one
/// serving it now (whose backfilled history may reach back that far); an id or a label names
/// the same version whenever. The name's answer is not cached: each `at` differs.
pub async fn resolve_key_at(
    cache: &Cache,
    store: &Store,
    key: LookupKey,
    at: DateTime<Utc>,
) -> Result<VersionMeta> {
    if let LookupKey::FeatureName(name) = &key {
        if let Some(meta) = store.served_version_at(name, at).await? {
            return Ok(meta);
        }
    }
    resolve_key(cache, store, key).await
}

/// Resolve a version reference through the lookup cache; `NotFound` with the reason when it does not
/// exist.
pub async fn resolve_key(cache: &Cache, store: &Store, key: LookupKey) -> Result<VersionMeta> {
    let lookup = cache.lookup(key.as_ref()).await;
    if let Some(meta) = lookup.hit {
        return Ok(meta);
    }
    Box::pin(resolve_from_store(cache, store, key, lookup.epoch)).await
}

/// `resolve_key` for a reference borrowed from the request: owned only on a miss.
async fn resolve_ref(cache: &Cache, store: &Store, key: LookupRef<'_>) -> Result<VersionMeta> {
    let lookup = cache.lookup(key).await;
    if let Some(meta) = lookup.hit {
        return Ok(meta);
    }
    Box::pin(resolve_from_store(cache, store, key.to_key(), lookup.epoch)).await
}

/// A lookup the cache does not hold: from the database, then cached under `epoch`.
async fn resolve_from_store(
    cache: &Cache,
    store: &Store,
    key: LookupKey,
    epoch: Option<Epoch>,
) -> Result<VersionMeta> {
    let meta = match &key {
        LookupKey::Version(id) => store
            .version_meta(*id)
            .await?
            .ok_or_else(|| lookup::version_not_found(*id))?,
        LookupKey::FeatureName(name) => match store.latest_served_version(name).await? {
            Some(meta) => meta,
            None if store.feature_exists_by_name(name).await? => {
                return Err(ServiceError::NotFound(format!(
                    "No active computed version found for feature '{name}'"
                )))
            }
            None => {
                return Err(ServiceError::NotFound(format!(
                    "Feature '{name}' not found"
                )))
            }
        },
        LookupKey::Label(name, version) => store
            .version_meta_by_label(name, version)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("Version '{version}' of feature '{name}' not found"))
            })?,
    };
    cache.put_lookup(key, meta.clone(), epoch).await;
    Ok(meta)
}

/// A tuple's key values by column as an answer's `entity` shows them: typed as the version's
/// result typed its key columns (an integer column's values are numbers; the id holds text).
/// `None` for a version keyed by one column. Read on a miss only: the answer is cached.
pub(crate) async fn typed_entity(
    store: &Store,
    meta: &VersionMeta,
    id: &str,
) -> Result<Option<String>> {
    if !meta.entity_key.starts_with('[') {
        return Ok(None);
    }
    let types: std::collections::BTreeMap<String, String> =
        match store.get_version(meta.version_id).await? {
            Some(row) => row
                .output_schema
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            None => Default::default(),
        };
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(id).map_err(ServiceError::fault)?;
    let typed: serde_json::Map<String, serde_json::Value> = values
        .into_iter()
        .map(|(column, value)| {
            let value = match (types.get(&column).map(String::as_str), value) {
                (Some("integer"), serde_json::Value::String(text)) => text
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::String(text)),
                (_, value) => value,
            };
            (column, value)
        })
        .collect();
    Ok(Some(serde_json::Value::Object(typed).to_string()))
}

/// `{"entity_id":..,"feature_values":..,"feature_version_id":..,"computed_at":..,
/// "data_as_of":..}`, with the stored values spliced in as they are (they were encoded once, at
/// compute time), and a tuple's typed `entity` (`typed_entity`) after its id.
fn encode(entity_id: &str, typed: Option<&str>, values: &str, meta: &VersionMeta) -> Result<Bytes> {
    let entity = serde_json::to_string(entity_id).map_err(ServiceError::fault)?;
    let computed_at = meta
        .computed_at
        .ok_or_else(|| ServiceError::fault("a served version without computed_at"))?;
    let mut out = String::with_capacity(values.len() + entity.len() + 128);
    out.push_str("{\"entity_id\":");
    out.push_str(&entity);
    if let Some(typed) = typed {
        out.push_str(",\"entity\":");
        out.push_str(typed);
    }
    out.push_str(",\"feature_values\":");
    out.push_str(values);
    out.push_str(",\"feature_version_id\":");
    out.push_str(itoa::Buffer::new().format(meta.version_id));
    out.push_str(",\"computed_at\":\"");
    crate::times::push_ts(&mut out, &computed_at);
    out.push_str("\",");
    meta.freshness.push_data_as_of(&mut out);
    out.push('}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_added_as_the_last_field() {
        let body = Bytes::from_static(br#"{"a":1,"data_as_of":null}"#);
        assert_eq!(
            with_stale(&body, true),
            Bytes::from_static(br#"{"a":1,"data_as_of":null,"stale":true}"#)
        );
        assert_eq!(
            with_stale(&body, false),
            Bytes::from_static(br#"{"a":1,"data_as_of":null,"stale":false}"#)
        );
    }

    #[test]
    fn an_answer_held_has_its_stale_replaced() {
        let fresh = Bytes::from_static(br#"{"a":1,"data_as_of":null,"stale":false}"#);
        let stale = Bytes::from_static(br#"{"a":1,"data_as_of":null,"stale":true}"#);
        assert_eq!(with_stale(&fresh, true), stale);
        assert_eq!(with_stale(&stale, false), fresh);
        assert_eq!(with_stale(&fresh, false), fresh);
        assert!(fresh.ends_with(stale_suffix(false)) && stale.ends_with(stale_suffix(true)));
    }
}
