//! The Redis tier. Every call is bounded by a short timeout; the first failure marks Redis
//! down (logged once), after which requests skip it entirely until a background watchdog sees
//! it answer again (logged once). Nothing on a request path ever waits on a dead Redis for
//! longer than `CALL_TIMEOUT`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::{Lookup, LookupKey, VectorKey};
use crate::served::{Freshness, VersionMeta};
use chrono::{DateTime, Utc};

const CALL_TIMEOUT: Duration = Duration::from_millis(50);
const WATCHDOG_PERIOD: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct RedisTier {
    shared: Arc<Shared>,
}

struct Shared {
    conn: ConnectionManager,
    /// `REDIS_KEY_PREFIX` as configured.
    base: String,
    /// Where this database's entries are; replaced when the database is renamed.
    keys: RwLock<Arc<Keys>>,
    ttl_secs: u64,
    up: AtomicBool,
    /// The highest change counter the replica knows of (shared with the cache).
    known: Arc<AtomicU64>,
    raise: redis::Script,
}

/// Every key starts with `{REDIS_KEY_PREFIX}{database instance}:`: two deployments sharing one
/// Redis (with the default prefix too) never read each other's entries, and a database
/// restored from a backup, which is renamed when that is noticed (`Store::rename_instance`),
/// never reads what was cached before the restore.
struct Keys {
    prefix: String,
    /// The mirrored change counter.
    epoch: String,
}

impl Keys {
    fn new(base: &str, instance: &str) -> Arc<Keys> {
        let prefix = format!("{base}{instance}:");
        Arc::new(Keys {
            epoch: format!("{prefix}changes"),
            prefix,
        })
    }
}

/// Set the epoch to ARGV[1] unless it is already at least that: epochs only move forward, and
/// a replica that knows of a later change repairs a Redis that lost it.
const RAISE_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local wanted = tonumber(ARGV[1])
if current < wanted then
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current
";

impl RedisTier {
    pub fn new(
        url: &str,
        prefix: &str,
        instance: &str,
        ttl: Duration,
        known: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(RedisTier {
            shared: Arc::new(Shared {
                conn,
                base: prefix.to_string(),
                keys: RwLock::new(Keys::new(prefix, instance)),
                ttl_secs: ttl.as_secs().max(1),
                // Unknown until the watchdog's first ping; until then, the database serves.
                up: AtomicBool::new(false),
                known,
                raise: redis::Script::new(RAISE_SCRIPT),
            }),
        })
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    fn mark_down(&self, err: &str) {
        if self.shared.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = err,
                "redis unreachable; serving from the in-process cache and the database"
            );
        }
    }

    fn keys(&self) -> Arc<Keys> {
        self.shared
            .keys
            .read()
            .map_or_else(|p| p.into_inner().clone(), |k| k.clone())
    }

    /// Use the entries of the database now named `instance` from here on.
    pub fn rescope(&self, instance: &str) {
        let keys = Keys::new(&self.shared.base, instance);
        match self.shared.keys.write() {
            Ok(mut held) => *held = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    fn lookup_key(&self, key: &LookupKey) -> String {
        let prefix = &self.keys().prefix;
        match key {
            LookupKey::FeatureName(name) => format!("{prefix}lookup:name:{name}"),
            LookupKey::Version(id) => format!("{prefix}lookup:version:{id}"),
            LookupKey::Label(name, version) => {
                format!("{prefix}lookup:label:{}:{name}@{version}", name.len())
            }
        }
    }

    fn vector_key(&self, key: &VectorKey) -> String {
        format!(
            "{}vector:{}:{}:{}",
            self.keys().prefix,
            key.version_id,
            key.generation,
            key.entity_id
        )
    }

    /// The change counter as Redis holds it, asked even while Redis counts as down (`None`:
    /// not set, or no answer within the request-path bound). For the poller only.
    pub async fn peek_epoch(&self) -> Option<u64> {
        let key = self.keys().epoch.clone();
        let mut conn = self.shared.conn.clone();
        tokio::time::timeout(CALL_TIMEOUT, async move {
            conn.get::<_, Option<u64>>(key).await
        })
        .await
        .ok()?
        .ok()?
    }

    /// Run one command with the request-path time bound; any failure marks Redis down.
    async fn call<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(CALL_TIMEOUT, f(self.shared.conn.clone())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("timed out");
                None
            }
        }
    }

    pub async fn get_vector(&self, key: &VectorKey) -> Option<Bytes> {
        let k = self.vector_key(key);
        let body: Option<Vec<u8>> = self.call(|mut c| async move { c.get(k).await }).await?;
        body.map(Bytes::from)
    }

    pub async fn put_vector(&self, key: &VectorKey, body: &Bytes) {
        let k = self.vector_key(key);
        let ttl = self.shared.ttl_secs;
        let body = body.to_vec();
        let _: Option<()> = self
            .call(|mut c| async move { c.set_ex(k, body, ttl).await })
            .await;
    }

    /// One round trip: the current epoch and the entry, which is valid only under that epoch.
    /// An epoch below what this replica knows is a Redis that lost changes: nothing under it
    /// is served, and it is raised.
    pub async fn lookup(&self, key: &LookupKey) -> Lookup {
        let known = self.shared.known.load(Ordering::Acquire);
        let keys = vec![self.keys().epoch.clone(), self.lookup_key(key)];
        let got: Option<(Option<u64>, Option<String>)> =
            self.call(|mut c| async move { c.mget(keys).await }).await;
        let Some((epoch, entry)) = got else {
            return Lookup {
                hit: None,
                epoch: None,
            };
        };
        let epoch = match epoch {
            Some(epoch) if epoch >= known => epoch,
            _ => {
                self.raise_epoch(known).await;
                return Lookup {
                    hit: None,
                    epoch: None,
                };
            }
        };
        let hit = entry
            .and_then(|e| parse_entry(&e))
            .and_then(|(meta, e)| (e == epoch).then_some(meta));
        Lookup {
            hit,
            epoch: Some(epoch),
        }
    }

    pub async fn put_lookup(&self, key: &LookupKey, meta: VersionMeta, epoch: u64) {
        let k = self.lookup_key(key);
        let micros = |t: Option<DateTime<Utc>>| {
            t.map_or(String::new(), |t| t.timestamp_micros().to_string())
        };
        let v = format!(
            "{}:{}:{}:{}:{}:{}:{}",
            meta.version_id,
            meta.generation,
            epoch,
            meta.entity_count.map_or(-1, |n| n),
            micros(meta.freshness.data_as_of),
            u8::from(meta.freshness.stale),
            micros(meta.computed_at),
        );
        let ttl = self.shared.ttl_secs;
        let _: Option<()> = self
            .call(|mut c| async move { c.set_ex(k, v, ttl).await })
            .await;
    }

    /// Move the epoch up to `change` (never down). Tried twice: the first command after a
    /// Redis restart fails on the old connection while the manager reconnects, and the
    /// change this announces should reach the other replicas at once, not a poll later.
    pub async fn raise_epoch(&self, change: u64) {
        // Down: the watchdog raises it when it answers again.
        if !self.is_up() {
            return;
        }
        for _ in 0..2 {
            let (script, key) = (self.shared.raise.clone(), self.keys().epoch.clone());
            let attempt = self.shared.conn.clone();
            let raised = tokio::time::timeout(CALL_TIMEOUT, async move {
                let mut c = attempt;
                script
                    .key(key)
                    .arg(change)
                    .invoke_async::<u64>(&mut c)
                    .await
            })
            .await;
            match raised {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => self.mark_down(&e.to_string()),
                Err(_) => self.mark_down("timed out"),
            }
        }
    }

    /// Ping while Redis is down; when it answers, raise its epoch to what this replica knows
    /// and serve from it again. Stops when the cache is dropped.
    pub fn spawn_watchdog(&self) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut ever_up = false;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if !shared.up.load(Ordering::Acquire) {
                    let mut conn = shared.conn.clone();
                    let known = shared.known.load(Ordering::Acquire);
                    let ping = async {
                        let _: () = redis::cmd("PING").query_async(&mut conn).await?;
                        let epoch_key = shared
                            .keys
                            .read()
                            .map_or_else(|p| p.into_inner().epoch.clone(), |k| k.epoch.clone());
                        let epoch: u64 = shared
                            .raise
                            .key(epoch_key)
                            .arg(known)
                            .invoke_async(&mut conn)
                            .await?;
                        redis::RedisResult::Ok(epoch)
                    };
                    // An epoch ahead of what this replica knows: either a change this replica
                    // has not polled yet (the next poll catches up) or a database that went
                    // back (the poller renames it). Either way, not served from until then.
                    if let Ok(Ok(epoch)) =
                        tokio::time::timeout(Duration::from_millis(500), ping).await
                    {
                        if epoch > shared.known.load(Ordering::Acquire) {
                            drop(shared);
                            tokio::time::sleep(WATCHDOG_PERIOD).await;
                            continue;
                        }
                        shared.up.store(true, Ordering::Release);
                        if ever_up {
                            tracing::info!("redis reachable again; serving from it");
                        } else {
                            tracing::info!("redis connected");
                        }
                        ever_up = true;
                    }
                }
                drop(shared);
                tokio::time::sleep(WATCHDOG_PERIOD).await;
            }
        });
    }
}

/// `version_id:generation:epoch:entity_count:data_as_of:stale:computed_at` (count -1: never
/// computed; times in microseconds, empty when unknown; stale 0 or 1). An entry in any other
/// form (an older replica's) is a miss.
fn parse_entry(s: &str) -> Option<(VersionMeta, u64)> {
    let mut parts = s.split(':');
    let version_id = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let count: i64 = parts.next()?.parse().ok()?;
    let time = |part: &str| -> Option<Option<DateTime<Utc>>> {
        match part {
            "" => Some(None),
            micros => Some(Some(DateTime::<Utc>::from_timestamp_micros(
                micros.parse().ok()?,
            )?)),
        }
    };
    let data_as_of = time(parts.next()?)?;
    let stale = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let computed_at = time(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        VersionMeta {
            version_id,
            generation,
            entity_count: (count >= 0).then_some(count),
            computed_at,
            freshness: Freshness { data_as_of, stale },
        },
        epoch,
    ))
}
