//! The serving cache: encoded vector responses and version lookups.
//!
//! Two tiers: an in-process moka cache always, and Redis when `REDIS_URL` is set and reachable
//! (shared by every replica). Correctness does not rest on deleting entries at the right
//! moment:
//! - vector entries are keyed by (version, generation, entity); every publish bumps the
//!   version's generation in the database, so a recompute makes old entries unreachable in
//!   every tier and every replica;
//! - lookups (feature name -> newest active version, version -> generation) carry the cache
//!   *epoch* read before their database query; every change to versions bumps the epoch after
//!   its commit, and an entry whose epoch is not the current one is ignored. With Redis the
//!   epoch lives in Redis, so a change on one replica retires lookups on all of them; while
//!   Redis is unreachable lookups are not cached at all and go to the database, which is the
//!   truth every replica shares.

mod redis_tier;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache as Moka;

use crate::metrics::Metrics;
use crate::store::VersionMeta;
use redis_tier::RedisTier;
pub use snapshot::Snapshot;

/// Upper bound on cached vector bytes (keys and bodies) in process.
const VECTOR_CACHE_BYTES: u64 = 256 * 1024 * 1024;
const LOOKUP_CACHE_ENTRIES: u64 = 100_000;
/// Upper bound on bytes of whole versions held for batch serving.
const SNAPSHOT_CACHE_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct VectorKey {
    pub version_id: i64,
    pub generation: i64,
    pub entity_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum LookupKey {
    /// The newest active, computed version of the feature with this name.
    FeatureName(String),
    /// A version addressed by id.
    Version(i64),
    /// A version addressed by feature name and version label (`name@v2`).
    Label(String, String),
}

/// A lookup result, or the epoch to store a fresh one under (`None`: do not store it).
pub struct Lookup {
    pub hit: Option<VersionMeta>,
    pub epoch: Option<u64>,
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whole single-vector responses.
    vectors: Moka<VectorKey, Bytes>,
    /// Bare `feature_values` objects, for batch responses of versions too large to snapshot.
    values: Moka<VectorKey, Bytes>,
    /// Whole versions, for batch responses, by (version, generation).
    snapshots: Moka<(i64, i64), Arc<Snapshot>>,
    lookups: Moka<LookupKey, (VersionMeta, u64)>,
    epoch: AtomicU64,
    redis: Option<RedisTier>,
    metrics: Metrics,
}

impl Cache {
    /// In-process only.
    pub fn in_memory(ttl: Duration, metrics: Metrics) -> Self {
        Self::build(ttl, None, metrics)
    }

    /// Redis shared by every replica, moka in front of it. Never fails and never waits on
    /// Redis: an unreachable Redis is retried in the background.
    pub fn with_redis(
        ttl: Duration,
        url: &str,
        prefix: &str,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let tier = RedisTier::new(url, prefix, ttl)?;
        let cache = Self::build(ttl, Some(tier), metrics);
        if let Some(tier) = &cache.inner.redis {
            tier.spawn_watchdog();
        }
        Ok(cache)
    }

    fn build(ttl: Duration, redis: Option<RedisTier>, metrics: Metrics) -> Self {
        let bodies = || {
            Moka::builder()
                .max_capacity(VECTOR_CACHE_BYTES)
                .weigher(|k: &VectorKey, v: &Bytes| {
                    (k.entity_id.len() + v.len() + 32)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        };
        let lookups = Moka::builder()
            .max_capacity(LOOKUP_CACHE_ENTRIES)
            .time_to_live(ttl)
            .build();
        Cache {
            inner: Arc::new(Inner {
                vectors: bodies(),
                values: bodies(),
                snapshots: Moka::builder()
                    .max_capacity(SNAPSHOT_CACHE_BYTES)
                    .weigher(|_, s: &Arc<Snapshot>| s.weight())
                    .time_to_live(ttl)
                    .build(),
                lookups,
                epoch: AtomicU64::new(0),
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

    pub async fn vector(&self, key: &VectorKey) -> Option<Bytes> {
        let local = self.inner.vectors.get(key).await;
        self.inner.metrics.cache_lookup("memory", local.is_some());
        if local.is_some() {
            return local;
        }
        let redis = self.inner.redis.as_ref().filter(|r| r.is_up())?;
        let body = redis.get_vector(key).await;
        self.inner.metrics.cache_lookup("redis", body.is_some());
        let body = body?;
        self.inner.vectors.insert(key.clone(), body.clone()).await;
        Some(body)
    }

    pub async fn put_vector(&self, key: VectorKey, body: Bytes) {
        if let Some(redis) = &self.inner.redis {
            redis.put_vector(&key, &body).await;
        }
        self.inner.vectors.insert(key, body).await;
    }

    /// Batch serving's values: in process only (entries are immutable per generation, so
    /// nothing needs to be shared to stay exact).
    pub async fn values(&self, key: &VectorKey) -> Option<Bytes> {
        let hit = self.inner.values.get(key).await;
        self.inner.metrics.cache_lookup("memory", hit.is_some());
        hit
    }

    pub async fn put_values(&self, key: VectorKey, values: Bytes) {
        self.inner.values.insert(key, values).await;
    }

    /// The snapshot of a published version, loading it once however many requests ask at the
    /// same moment.
    pub async fn snapshot<F>(
        &self,
        meta: VersionMeta,
        load: F,
    ) -> Result<Arc<Snapshot>, Arc<crate::error::AppError>>
    where
        F: std::future::Future<Output = Result<Arc<Snapshot>, crate::error::AppError>>,
    {
        let key = (meta.version_id, meta.generation);
        if let Some(hit) = self.inner.snapshots.get(&key).await {
            self.inner.metrics.cache_lookup("snapshot", true);
            return Ok(hit);
        }
        self.inner.metrics.cache_lookup("snapshot", false);
        self.inner.snapshots.try_get_with(key, load).await
    }

    /// Hold a just-published version for batch serving, so it is warm from its first request.
    pub async fn put_snapshot(&self, meta: VersionMeta, snapshot: Snapshot) {
        self.inner
            .snapshots
            .insert((meta.version_id, meta.generation), Arc::new(snapshot))
            .await;
    }

    /// Look a version up; on a miss, query the database and call `put_lookup` with the epoch
    /// returned here (read before the query, which is what makes it safe).
    pub async fn lookup(&self, key: &LookupKey) -> Lookup {
        match &self.inner.redis {
            Some(redis) => redis.lookup(key).await,
            None => {
                let epoch = self.inner.epoch.load(Ordering::Acquire);
                let hit = match self.inner.lookups.get(key).await {
                    Some((meta, e)) if e == epoch => Some(meta),
                    _ => None,
                };
                Lookup {
                    hit,
                    epoch: Some(epoch),
                }
            }
        }
    }

    pub async fn put_lookup(&self, key: LookupKey, meta: VersionMeta, epoch: Option<u64>) {
        let Some(epoch) = epoch else { return };
        match &self.inner.redis {
            Some(redis) => redis.put_lookup(&key, meta, epoch).await,
            None => {
                if epoch == self.inner.epoch.load(Ordering::Acquire) {
                    self.inner.lookups.insert(key, (meta, epoch)).await;
                }
            }
        }
    }

    /// Call after a change to versions (publish, status, delete) has committed.
    pub async fn versions_changed(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.lookups.invalidate_all();
        if let Some(redis) = &self.inner.redis {
            redis.bump_epoch().await;
        }
    }
}
