//! The Redis tier. Every call is bounded by a short timeout; the first failure marks Redis
//! down (logged once), after which requests skip it entirely until a background watchdog sees
//! it answer again (logged once). Nothing on a request path ever waits on a dead Redis for
//! longer than `CALL_TIMEOUT`.
//!
//! Redis holds the shared epoch and encoded vectors. A lookup needs the epoch as it is *after*
//! the request arrived (a change returned on another replica just before must be seen), but
//! not a round trip of its own: requests share reads of the epoch (`EpochReads`), each one
//! waiting for the first read that started after it arrived. Under load one read answers
//! every request that arrived while the previous one was in flight, so Redis sees one GET a
//! round trip instead of one per request; the lookups themselves stay in process.
//!
//! A read of the epoch is also held on a *lease* (`REDIS_EPOCH_LEASE_MS`): for that long after
//! the read was sent, requests take its answer without waiting for a new one, and a replica
//! that announces a change waits out a lease after Redis confirmed it before returning. Any
//! read that saw the epoch before the change was sent before the change reached Redis, so its
//! lease has run out by the time the change returns: a request arriving anywhere after that
//! still waits for a read that sees it. Reads are then a few a lease, whatever the load, and
//! each write pays one lease.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::{watch, Notify};

use super::VectorRef;

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
    epoch_reads: EpochReads,
    /// How long a read of the epoch is taken without a new one (see the module comment).
    lease: Duration,
}

/// Reads of the epoch key shared by the requests waiting for one (see the module comment).
struct EpochReads {
    /// Reads started so far. A request that saw `n` here on arrival takes the answer of read
    /// `n + 1` or later: that one was sent after it arrived.
    started: AtomicU64,
    /// The newest finished read.
    done: watch::Sender<EpochRead>,
    /// Wakes the reader task; a permit is kept if it is busy, so it reads once more.
    wake: Notify,
}

/// One finished read of the epoch key.
#[derive(Clone, Copy)]
struct EpochRead {
    /// Its number (see `EpochReads::started`).
    number: u64,
    /// What it saw (`None`: no answer; `Some(None)`: the key is not set).
    seen: Option<Option<u64>>,
    /// When it was sent: its lease runs from here, before Redis could have answered it.
    sent: Instant,
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
        lease: Duration,
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
                epoch_reads: EpochReads {
                    started: AtomicU64::new(0),
                    done: watch::channel(EpochRead {
                        number: 0,
                        seen: None,
                        sent: Instant::now(),
                    })
                    .0,
                    wake: Notify::new(),
                },
                lease,
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

    fn vector_key(&self, key: VectorRef<'_>) -> String {
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

    pub async fn get_vector(&self, key: VectorRef<'_>) -> Option<Bytes> {
        let k = self.vector_key(key);
        let body: Option<Vec<u8>> = self.call(|mut c| async move { c.get(k).await }).await?;
        body.map(Bytes::from)
    }

    pub async fn put_vector(&self, key: VectorRef<'_>, body: &Bytes) {
        let k = self.vector_key(key);
        let ttl = self.shared.ttl_secs;
        let body = body.to_vec();
        let _: Option<()> = self
            .call(|mut c| async move { c.set_ex(k, body, ttl).await })
            .await;
    }

    /// The epoch as Redis holds it after this call began, as far as any replica can have
    /// announced a change: from a read still on its lease (sent less than a lease ago), else
    /// from a read shared with the other requests waiting at the same moment. `None` (serve
    /// nothing from a cache): Redis is down or did not answer, or its epoch is below what this
    /// replica knows, which is a Redis that lost changes and is raised back.
    pub async fn epoch(&self) -> Option<u64> {
        if !self.is_up() {
            return None;
        }
        let known = self.shared.known.load(Ordering::Acquire);
        let reads = &self.shared.epoch_reads;
        if let Some(epoch) = self.leased(known) {
            return Some(epoch);
        }
        let mut done = reads.done.subscribe();
        let arrived = reads.started.load(Ordering::SeqCst);
        reads.wake.notify_one();
        let wait = async {
            loop {
                let read = *done.borrow_and_update();
                if read.number > arrived {
                    return read.seen;
                }
                if done.changed().await.is_err() {
                    return None;
                }
            }
        };
        // Two reads at most: the one in flight on arrival, then ours.
        let seen = tokio::time::timeout(2 * CALL_TIMEOUT, wait)
            .await
            .ok()
            .flatten()?;
        match seen {
            Some(epoch) if epoch >= known => Some(epoch),
            _ => {
                self.raise_epoch(known).await;
                None
            }
        }
    }

    /// The epoch if it is known without waiting: Redis is up and a read is on its lease.
    pub fn epoch_now(&self) -> Option<u64> {
        if !self.is_up() {
            return None;
        }
        self.leased(self.shared.known.load(Ordering::Acquire))
    }

    /// The newest read's epoch if its lease still runs and it is not below what this replica
    /// knows (a change this replica made or polled since is never served around). Past half
    /// its lease, the reader is woken to read again, so that under load requests rarely wait.
    fn leased(&self, known: u64) -> Option<u64> {
        let reads = &self.shared.epoch_reads;
        let read = *reads.done.borrow();
        let Some(Some(epoch)) = read.seen else {
            return None;
        };
        // Taken after the request arrived, so a lease that ran out before it is never used.
        let age = Instant::now().saturating_duration_since(read.sent);
        if age >= self.shared.lease || epoch < known {
            return None;
        }
        if age * 2 >= self.shared.lease {
            reads.wake.notify_one();
        }
        Some(epoch)
    }

    /// Read the epoch whenever a request waits for it, one read at a time: every request that
    /// arrives while a read is in flight shares the next one. (Pipelining up to four reads,
    /// so that a request waits one round trip rather than up to two, served fewer cached GETs
    /// a second, 0.57 of the in-process figure instead of 0.65: on two cores the extra reads
    /// cost more CPU, here and in Redis, than the waiting did.) Stops when the cache is
    /// dropped.
    pub fn spawn_epoch_reader(&self) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let tier = RedisTier { shared };
                let reads = &tier.shared.epoch_reads;
                // A bounded wait, so that a dropped cache ends this task.
                let woken = tokio::time::timeout(WATCHDOG_PERIOD, reads.wake.notified()).await;
                if woken.is_err() {
                    continue;
                }
                let number = reads.started.fetch_add(1, Ordering::SeqCst) + 1;
                let key = tier.keys().epoch.clone();
                let sent = Instant::now();
                let seen = tier
                    .call(|mut c| async move { c.get::<_, Option<u64>>(key).await })
                    .await;
                reads.done.send_replace(EpochRead { number, seen, sent });
            }
        });
    }

    /// Move the epoch up to `change` (never down); `true` once Redis confirmed it. Tried
    /// twice: the first command after a Redis restart fails on the old connection while the
    /// manager reconnects, and the change this announces should reach the other replicas at
    /// once, not a poll later.
    pub async fn raise_epoch(&self, change: u64) -> bool {
        // Down: the watchdog raises it when it answers again.
        if !self.is_up() {
            return false;
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
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => self.mark_down(&e.to_string()),
                Err(_) => self.mark_down("timed out"),
            }
        }
        false
    }

    /// Announce change `change`, committed by this replica: raise the epoch, then wait out the
    /// lease of every read that could have seen it before (a tenth more, for clocks that run
    /// at slightly different rates on other machines), so a request arriving on any replica
    /// after this returns sees it. Without Redis confirming, the other replicas see it on
    /// their next poll of the database instead, and nothing is waited for.
    pub async fn announce(&self, change: u64) {
        if self.raise_epoch(change).await && !self.shared.lease.is_zero() {
            tokio::time::sleep(self.shared.lease + self.shared.lease / 10).await;
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
