//! The serving cache: encoded vector responses and version lookups.
//!
//! Two tiers: in process always (answers in `bodies`, version lookups in a map, batch snapshots
//! in `snapshots`), and Redis when `REDIS_URL` is set and reachable (shared by every replica).
//! Correctness does not rest on deleting entries at the right moment:
//! - vector entries are keyed by (version, generation, entity); every publish bumps the
//!   version's generation in the database, so a recompute makes old entries unreachable in
//!   every tier and every replica;
//! - lookups (feature name -> newest active version, version -> generation) carry the *epoch*
//!   read before their database query, and an entry whose epoch is not the current one is
//!   ignored. The epoch is the database's change counter (`cache_state.changes`), which every
//!   change to what is served bumps inside its own transaction. Each replica knows the highest
//!   counter it has committed or seen (`known`), and polls the database for it every
//!   `service::changes::POLL_PERIOD`. With Redis, the epoch is mirrored there so a change on
//!   one replica retires lookups on all of them at once; a Redis epoch below `known` (a
//!   restart, a rollback to an older snapshot, a failover, a replica that could not tell it)
//!   is never trusted and is raised back. So Redis only speeds invalidation up: whatever it
//!   does, no replica serves a lookup older than the last change it could have polled.

mod bodies;
mod deadlines;
mod redis_tier;
mod snapshot;
mod snapshots;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache as MokaCache;

/// moka with aHash: SipHash, its default, was ~4% of a cached GET's instructions.
type Moka<K, V> = MokaCache<K, V, ahash::RandomState>;

use crate::metrics::Metrics;
use crate::served::VersionMeta;
use bodies::Bodies;
pub use bodies::{VectorKey, VectorRef};
use redis_tier::RedisTier;
pub use snapshot::{EntityHash, Snapshot};
use snapshots::Snapshots;

/// Upper bound on cached vector bytes (keys and bodies) in process.
const VECTOR_CACHE_BYTES: u64 = 256 * 1024 * 1024;
const LOOKUP_CACHE_ENTRIES: usize = 100_000;
/// Whole versions loaded from the database at once for batch serving: each load holds a
/// version's rows twice while it builds, so a burst of requests naming many versions must not
/// start them all together.
const SNAPSHOT_LOADS: usize = 2;

/// What one entry of a snapshot's index costs at least, besides its bytes: a slot and its
/// control byte.
const SNAPSHOT_SLOT_BYTES: u64 = snapshot::SLOT_BYTES as u64 + 1;

/// Why the cache could not hand out a snapshot it was asked to load.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache is shutting down")]
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupKey {
    /// The newest active, computed version of the feature with this name.
    FeatureName(String),
    /// A version addressed by id.
    Version(i64),
    /// A version addressed by feature name and version label (`name@v2`).
    Label(String, String),
}

/// A `LookupKey` borrowed: what a request names, looked up without copying the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupRef<'a> {
    FeatureName(&'a str),
    Version(i64),
    Label(&'a str, &'a str),
}

impl LookupKey {
    pub fn as_ref(&self) -> LookupRef<'_> {
        match self {
            LookupKey::FeatureName(name) => LookupRef::FeatureName(name),
            LookupKey::Version(id) => LookupRef::Version(*id),
            LookupKey::Label(name, label) => LookupRef::Label(name, label),
        }
    }
}

impl LookupRef<'_> {
    pub fn to_key(self) -> LookupKey {
        match self {
            LookupRef::FeatureName(name) => LookupKey::FeatureName(name.to_string()),
            LookupRef::Version(id) => LookupKey::Version(id),
            LookupRef::Label(name, label) => LookupKey::Label(name.to_string(), label.to_string()),
        }
    }
}

// Both forms hash as the borrowed one: the map finds an owned key by its borrowed form only if
// they hash alike.
impl std::hash::Hash for LookupRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            LookupRef::FeatureName(name) => {
                state.write_u8(0);
                state.write(name.as_bytes());
            }
            LookupRef::Version(id) => {
                state.write_u8(1);
                state.write_i64(*id);
            }
            LookupRef::Label(name, label) => {
                state.write_u8(2);
                // The length first: ("ab", "c") and ("a", "bc") must not hash alike.
                state.write_usize(name.len());
                state.write(name.as_bytes());
                state.write(label.as_bytes());
            }
        }
    }
}

impl std::hash::Hash for LookupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl hashbrown::Equivalent<LookupKey> for LookupRef<'_> {
    fn equivalent(&self, key: &LookupKey) -> bool {
        *self == key.as_ref()
    }
}

/// A lookup result, or the epoch to store a fresh one under (`None`: do not store it).
pub struct Lookup {
    pub hit: Option<VersionMeta>,
    pub epoch: Option<Epoch>,
}

/// What a lookup is held under: the change counter it was read at, and which scope of this
/// cache it was read in. A database restored from a backup counts changes again from a lower
/// number, so after a rescope the counter alone could name two states; the scope tells them
/// apart, so a lookup read just before a rescope is never served after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    changes: u64,
    scope: u64,
}

/// Version lookups, in a plain map rather than moka: every entry carries the epoch it was read
/// under and is checked against the current one on each read, so it needs no expiry and no
/// eviction order, only a bound (the map is emptied when full, and whenever the epoch moves
/// on this replica). moka's bookkeeping on a read (its read-op channel and frequency sketch)
/// was ~1.2k of a cached GET's ~25k instructions (callgrind).
#[derive(Default)]
struct Lookups(RwLock<hashbrown::HashMap<LookupKey, (VersionMeta, Epoch), ahash::RandomState>>);

impl Lookups {
    fn get(&self, key: LookupRef<'_>) -> Option<(VersionMeta, Epoch)> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    fn insert(&self, key: LookupKey, value: (VersionMeta, Epoch)) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= LOOKUP_CACHE_ENTRIES && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, value);
    }

    fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Where the shared tier is and how it is used.
pub struct RedisOptions<'a> {
    /// `REDIS_URL`.
    pub url: &'a str,
    /// `REDIS_KEY_PREFIX`.
    pub prefix: &'a str,
    /// `REDIS_EPOCH_LEASE_MS`: how long a read of the shared epoch is served from without
    /// another, and what each announced change waits before it returns.
    pub epoch_lease: Duration,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whole single-vector responses.
    vectors: Bodies,
    /// Bare `feature_values` objects, for batch responses of versions too large to snapshot.
    values: Bodies,
    /// Whole versions, for batch responses, by (version, generation); weighed in bytes held.
    snapshots: Snapshots,
    /// The byte cap of `snapshots`; a version bigger than this is never held whole.
    snapshot_cap: u64,
    /// (version, generation) found too big for the cap: served entity by entity, never rebuilt.
    too_big: Moka<(i64, i64), ()>,
    snapshot_loads: tokio::sync::Semaphore,
    /// Snapshots built (loaded or warmed), for tests and metrics.
    snapshot_builds: AtomicU64,
    lookups: Lookups,
    /// Rescopes so far (see `Epoch`); raised after each one has switched everything over.
    scope: AtomicU64,
    /// The highest change counter this replica has committed or polled.
    known: Arc<AtomicU64>,
    /// The database's instance name, as last polled: whose entries these are.
    instance: std::sync::RwLock<String>,
    redis: Option<RedisTier>,
    metrics: Metrics,
}

impl Cache {
    /// In-process only; `changes` is the database's change counter now.
    pub fn in_memory(
        ttl: Duration,
        snapshot_cap: u64,
        instance: &str,
        changes: u64,
        metrics: Metrics,
    ) -> Self {
        Self::build(
            ttl,
            snapshot_cap,
            None,
            instance,
            Arc::new(AtomicU64::new(changes)),
            metrics,
        )
    }

    /// Redis shared by every replica, the in-process tier in front of it. Never fails and
    /// never waits on Redis: an unreachable Redis is retried in the background. `instance`
    /// names the database, so its epoch in Redis is its own.
    pub fn with_redis(
        ttl: Duration,
        snapshot_cap: u64,
        redis: RedisOptions<'_>,
        instance: &str,
        changes: u64,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let known = Arc::new(AtomicU64::new(changes));
        let tier = RedisTier::new(
            redis.url,
            redis.prefix,
            instance,
            ttl,
            redis.epoch_lease,
            known.clone(),
        )?;
        let cache = Self::build(ttl, snapshot_cap, Some(tier), instance, known, metrics);
        if let Some(tier) = &cache.inner.redis {
            tier.spawn_watchdog();
            tier.spawn_epoch_reader();
        }
        Ok(cache)
    }

    fn build(
        ttl: Duration,
        snapshot_cap: u64,
        redis: Option<RedisTier>,
        instance: &str,
        known: Arc<AtomicU64>,
        metrics: Metrics,
    ) -> Self {
        let bodies = || Bodies::new(VECTOR_CACHE_BYTES, ttl);
        Cache {
            inner: Arc::new(Inner {
                vectors: bodies(),
                values: bodies(),
                snapshots: Snapshots::new(snapshot_cap, ttl),
                snapshot_cap,
                too_big: MokaCache::builder()
                    .max_capacity(10_000)
                    .time_to_live(ttl)
                    .build_with_hasher(ahash::RandomState::new()),
                snapshot_loads: tokio::sync::Semaphore::new(SNAPSHOT_LOADS),
                snapshot_builds: AtomicU64::new(0),
                lookups: Lookups::default(),
                scope: AtomicU64::new(0),
                known,
                instance: std::sync::RwLock::new(instance.to_string()),
                redis,
                metrics,
            }),
        }
    }

    /// `memory`, `redis`, or `memory (redis unreachable)`.
    pub fn mode(&self) -> &'static str {
        match &self.inner.redis {
            None => "memory",
            Some(r) if r.is_up() => "redis",
            Some(_) => "memory (redis unreachable)",
        }
    }

    /// A single-vector body: as held in process (the answer last given), else as stored in
    /// Redis, which is then held in process too.
    pub async fn vector(&self, key: VectorRef<'_>) -> Option<Bytes> {
        let local = self.inner.vectors.get(key);
        self.inner.metrics.cache_lookup("memory", local.is_some());
        if local.is_some() {
            return local;
        }
        let redis = self.inner.redis.as_ref().filter(|r| r.is_up())?;
        let body = redis.get_vector(key).await;
        self.inner.metrics.cache_lookup("redis", body.is_some());
        let body = body?;
        self.inner.vectors.insert(key.to_key(), body.clone());
        Some(body)
    }

    /// Store a body in every tier: `stored` in Redis, shared by every replica, and `local` in
    /// process (the serving layer holds its answer there, which may add to the stored body
    /// what changes without a new generation).
    pub async fn put_vector(&self, key: VectorKey, stored: Bytes, local: Bytes) {
        if let Some(redis) = &self.inner.redis {
            redis.put_vector(key.as_ref(), &stored).await;
        }
        self.inner.vectors.insert(key, local);
    }

    /// Hold `local` in process in place of what `vector` returned for `key`, for as long as
    /// that was to be held; nothing if it is no longer held (a rescope may have cleared it).
    pub fn hold_vector(&self, key: VectorKey, local: Bytes) {
        self.inner.vectors.replace(key, local);
    }

    /// Batch serving's values: in process only (entries are immutable per generation, so
    /// nothing needs to be shared to stay exact).
    pub fn values(&self, key: VectorRef<'_>) -> Option<Bytes> {
        let hit = self.inner.values.get(key);
        self.inner.metrics.cache_lookup("memory", hit.is_some());
        hit
    }

    pub fn put_values(&self, key: VectorKey, values: Bytes) {
        self.inner.values.insert(key, values);
    }

    /// The snapshot of a published version, loading it once however many requests ask at the
    /// same moment, at most `SNAPSHOT_LOADS` versions at a time. `Ok(None)`: the version is too
    /// big to hold whole (known from an earlier build, which is not repeated); read it entity
    /// by entity.
    pub async fn snapshot<F, E>(
        &self,
        meta: VersionMeta,
        load: F,
    ) -> Result<Option<Arc<Snapshot>>, Arc<E>>
    where
        F: std::future::Future<Output = Result<Option<Snapshot>, E>>,
        E: From<CacheError> + Send + Sync + 'static,
    {
        let key = (meta.version_id, meta.generation);
        if let Some(hit) = self.snapshot_now(&meta) {
            return Ok(Some(hit));
        }
        self.inner.metrics.cache_lookup("snapshot", false);
        // Every entry costs at least its index slot: a version that cannot fit is known
        // without loading it.
        let floor = meta.entity_count.unwrap_or(0).max(0) as u64 * SNAPSHOT_SLOT_BYTES;
        if floor > self.inner.snapshot_cap {
            self.inner.too_big.insert(key, ()).await;
        }
        if self.inner.too_big.contains_key(&key) {
            return Ok(None);
        }
        let inner = &self.inner;
        let loader = match inner.snapshots.get_or_load(key).await {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(loader) => loader,
        };
        // The load before this one may have found it too big.
        if inner.too_big.contains_key(&key) {
            return Ok(None);
        }
        let _slot = inner
            .snapshot_loads
            .acquire()
            .await
            .map_err(|_| Arc::new(E::from(CacheError::Closed)))?;
        let snapshot = load.await.map_err(Arc::new)?;
        inner.snapshot_builds.fetch_add(1, Ordering::Relaxed);
        let Some(snapshot) = snapshot.filter(|s| s.bytes() <= inner.snapshot_cap) else {
            inner.too_big.insert(key, ()).await;
            return Ok(None);
        };
        let snapshot = Arc::new(snapshot);
        if !loader.hold(snapshot.clone()) {
            // Under the cap but more than the map keeps: served to this request and those
            // waiting, then entity by entity, as a version over the cap is.
            inner.too_big.insert(key, ()).await;
        }
        Ok(Some(snapshot))
    }

    /// `snapshot` when it needs no wait: the version held whole now. `None` says only that
    /// `snapshot` must be asked (which counts the miss).
    pub fn snapshot_now(&self, meta: &VersionMeta) -> Option<Arc<Snapshot>> {
        let hit = self
            .inner
            .snapshots
            .get((meta.version_id, meta.generation))?;
        self.inner.metrics.cache_lookup("snapshot", true);
        Some(hit)
    }

    /// Would vectors of these sizes (entity ids and values, `n` of them) fit the snapshot cap?
    /// Checked at publish from what was written; a version that would not is marked, and
    /// served entity by entity without ever being loaded whole.
    pub async fn note_size(&self, meta: VersionMeta, ids_and_values_bytes: u64, n: u64) {
        let estimate = ids_and_values_bytes + n * SNAPSHOT_SLOT_BYTES;
        if estimate > self.inner.snapshot_cap {
            self.inner
                .too_big
                .insert((meta.version_id, meta.generation), ())
                .await;
        }
    }

    /// Forget the snapshot of a generation a publish retired, so no older one is left held.
    pub async fn drop_snapshot(&self, version_id: i64, generation: i64) {
        self.inner.snapshots.remove((version_id, generation));
    }

    /// Snapshots built so far (loaded on a batch miss or warmed at publish).
    pub fn snapshot_builds(&self) -> u64 {
        self.inner.snapshot_builds.load(Ordering::Relaxed)
    }

    /// Versions held whole right now, as (version, generation).
    pub async fn held_snapshots(&self) -> Vec<(i64, i64)> {
        self.inner.snapshots.keys()
    }

    /// Look a version up; on a miss, query the database and call `put_lookup` with the epoch
    /// returned here (read before the query, which is what makes it safe). Lookups are held in
    /// process under the epoch they were read with; with Redis, the epoch is Redis's as read
    /// after this call began, so a change returned on any replica retires them at once.
    pub async fn lookup(&self, key: LookupRef<'_>) -> Lookup {
        let Some(epoch) = self.epoch().await else {
            return Lookup {
                hit: None,
                epoch: None,
            };
        };
        let hit = match self.inner.lookups.get(key) {
            Some((meta, held)) if held == epoch => Some(meta),
            _ => None,
        };
        Lookup {
            hit,
            epoch: Some(epoch),
        }
    }

    /// `lookup` when it needs no wait: the lookup held under the current epoch, if that epoch
    /// is known now (always in process; with Redis, while a read of it is on its lease).
    /// `None` says only that `lookup` must be asked.
    pub fn lookup_now(&self, key: LookupRef<'_>) -> Option<VersionMeta> {
        let scope = self.inner.scope.load(Ordering::Acquire);
        let changes = match &self.inner.redis {
            Some(redis) => redis.epoch_now()?,
            None => self.inner.known.load(Ordering::Acquire),
        };
        match self.inner.lookups.get(key) {
            Some((meta, held)) if held == (Epoch { changes, scope }) => Some(meta),
            _ => None,
        }
    }

    /// A body held in process, as `vector` finds it there; `None` says only that `vector`
    /// must be asked (which counts the miss).
    pub fn vector_now(&self, key: VectorRef<'_>) -> Option<Bytes> {
        let local = self.inner.vectors.get(key)?;
        self.inner.metrics.cache_lookup("memory", true);
        Some(local)
    }

    /// The epoch a read starting now is consistent with: what it reads from the database
    /// after this call holds every change returned before it, on this replica or (with Redis)
    /// any other. `None` when Redis is set but does not answer: nothing read may be held.
    pub async fn epoch(&self) -> Option<Epoch> {
        // The scope before the epoch: a rescope raises it only once the epoch is read anew.
        let scope = self.inner.scope.load(Ordering::Acquire);
        let changes = match &self.inner.redis {
            Some(redis) => redis.epoch().await?,
            None => self.inner.known.load(Ordering::Acquire),
        };
        Some(Epoch { changes, scope })
    }

    pub async fn put_lookup(&self, key: LookupKey, meta: VersionMeta, epoch: Option<Epoch>) {
        let Some(epoch) = epoch else { return };
        // Only what could still be served: from this scope and, without Redis, under the
        // counter still current.
        let current = epoch.scope == self.inner.scope.load(Ordering::Acquire)
            && (self.inner.redis.is_some()
                || epoch.changes == self.inner.known.load(Ordering::Acquire));
        if current {
            self.inner.lookups.insert(key, (meta, epoch));
        }
    }

    /// The database's instance name whose entries this cache holds.
    pub fn instance(&self) -> String {
        self.inner
            .instance
            .read()
            .map_or_else(|p| p.into_inner().clone(), |i| i.clone())
    }

    /// The highest change counter this replica knows of.
    pub fn known(&self) -> u64 {
        self.inner.known.load(Ordering::Acquire)
    }

    /// The change counter as Redis holds it, whether or not Redis is served from (`None`
    /// without Redis, or when it does not answer). Read it before the database's counter:
    /// then Redis ahead of the database means the database went back.
    pub async fn redis_epoch(&self) -> Option<u64> {
        self.inner.redis.as_ref()?.peek_epoch().await
    }

    /// The database is now named `instance` (it went back, or another replica noticed that
    /// it did) at change `changes`: forget everything held and use its own Redis entries.
    pub async fn rescope(&self, instance: &str, changes: u64) {
        match self.inner.instance.write() {
            Ok(mut held) => *held = instance.to_string(),
            Err(poisoned) => *poisoned.into_inner() = instance.to_string(),
        }
        self.inner.known.store(changes, Ordering::Release);
        self.inner.lookups.clear();
        self.inner.vectors.clear();
        self.inner.values.clear();
        self.inner.snapshots.clear();
        self.inner.too_big.invalidate_all();
        if let Some(redis) = &self.inner.redis {
            redis.rescope(instance);
            redis.raise_epoch(changes).await;
        }
        // Last: a lookup that sees the new scope reads the new counter and keys.
        self.inner.scope.fetch_add(1, Ordering::AcqRel);
    }

    /// A change with counter `change` has committed on another replica (the poller calls it).
    /// Lookups read before it stop being served.
    pub async fn advance(&self, change: u64) {
        if !self.know(change) {
            // Nothing new; a Redis that went back is raised by the next lookup or by the
            // watchdog when it reconnects, so idle polls cost no Redis round trip.
            return;
        }
        if let Some(redis) = &self.inner.redis {
            redis.raise_epoch(change).await;
        }
    }

    /// This replica has just committed change `change`: lookups read before it stop being
    /// served here at once, and, once this returns, on every replica that reaches Redis (see
    /// `RedisTier::announce`). Redis is told even when the poller has already seen the change
    /// here: the poller's own raise may not have reached Redis yet.
    pub async fn committed(&self, change: u64) {
        self.know(change);
        if let Some(redis) = &self.inner.redis {
            redis.announce(change).await;
        }
    }

    /// Raise what this replica knows to `change`, dropping the lookups read before it; `false`
    /// when it knew as much already.
    fn know(&self, change: u64) -> bool {
        let before = self.inner.known.fetch_max(change, Ordering::AcqRel);
        if change <= before {
            return false;
        }
        self.inner.lookups.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{LookupKey, LookupRef};

    #[test]
    fn a_borrowed_lookup_hashes_and_compares_as_its_owned_form() {
        let state = ahash::RandomState::new();
        let keys = [
            LookupKey::FeatureName("spend".into()),
            LookupKey::FeatureName(String::new()),
            LookupKey::Version(42),
            LookupKey::Label("spend".into(), "v2".into()),
        ];
        for key in &keys {
            assert_eq!(state.hash_one(key), state.hash_one(key.as_ref()));
            assert!(hashbrown::Equivalent::equivalent(&key.as_ref(), key));
            assert_eq!(&key.as_ref().to_key(), key);
        }
        let split_differently = LookupRef::Label("spen", "dv2");
        assert!(!hashbrown::Equivalent::equivalent(
            &split_differently,
            &keys[3]
        ));
        assert_ne!(
            state.hash_one(split_differently),
            state.hash_one(keys[3].as_ref())
        );
    }
}
