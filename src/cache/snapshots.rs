//! Whole versions held for batch serving, by (version, generation), bounded in bytes and age.
//!
//! quick_cache rather than moka, for the reason `bodies` gives: a batch asks for each of its
//! columns' snapshot on every request (ten moka `get`s were ~17k instructions of a 100 × 10
//! batch), and a hit here is a read lock and a probe that needs no `.await`, so a batch whose
//! columns are all held is answered without a future per column. quick_cache's placeholder
//! guard keeps what moka's `try_get_with` gave: one load of a version however many ask at once.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::Weighter;

use super::deadlines::Deadlines;
use super::snapshot::Snapshot;

/// A version's (id, generation).
pub type SnapshotKey = (i64, i64);

/// A snapshot and the instant (milliseconds from the map's start) from which it is no longer
/// served.
#[derive(Clone)]
struct Held {
    snapshot: Arc<Snapshot>,
    until: u64,
}

/// What an entry costs: the snapshot's bytes and a fixed overhead for the slot.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<SnapshotKey, Held> for Weight {
    fn weight(&self, _key: &SnapshotKey, held: &Held) -> u64 {
        held.snapshot.bytes().saturating_add(64)
    }
}

type Map = quick_cache::sync::Cache<
    SnapshotKey,
    Held,
    Weight,
    ahash::RandomState,
    quick_cache::sync::DefaultLifecycle<SnapshotKey, Held>,
>;

type Guard<'a> = quick_cache::sync::PlaceholderGuard<
    'a,
    SnapshotKey,
    Held,
    Weight,
    ahash::RandomState,
    quick_cache::sync::DefaultLifecycle<SnapshotKey, Held>,
>;

/// Snapshots bounded in bytes and in age.
pub struct Snapshots {
    map: Map,
    deadlines: Deadlines,
    /// The largest entry the map keeps (`HOT_ALLOCATION` of its bytes).
    admits: u64,
}

/// quick_cache's share of the bytes for entries it keeps (its default, named so that `admits`
/// follows it): an entry weighing more is handed to those waiting for it, then let go.
const HOT_ALLOCATION: f64 = 0.97;

/// The right to load a snapshot nobody holds: others asking for it wait until it is held or
/// this is dropped (then one of them loads it).
pub struct Loader<'a> {
    guard: Guard<'a>,
    until: u64,
    admits: u64,
}

impl Loader<'_> {
    /// Hold the loaded snapshot (and hand it to those waiting). `false` when it is too heavy
    /// for the map ever to keep: quick_cache keeps an entry only up to its hot share of the
    /// bytes, so a snapshot just under the cap is served to the waiters but not kept. A
    /// placeholder cleared meanwhile (a rescope) also leaves it unkept, but says nothing of
    /// its size: the next request loads it again.
    pub fn hold(self, snapshot: Arc<Snapshot>) -> bool {
        let held = Held {
            snapshot,
            until: self.until,
        };
        let fits = Weight.weight(&(0, 0), &held) <= self.admits;
        let _ = self.guard.insert(held);
        fits
    }
}

impl Snapshots {
    /// `max_bytes` in all; each snapshot served for `ttl` after it was loaded.
    pub fn new(max_bytes: u64, ttl: Duration) -> Snapshots {
        // One shard: quick_cache bounds each shard by its share of the bytes, and one
        // snapshot may be most of the cap. The lock is taken for reading on a hit.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(64)
            .weight_capacity(max_bytes)
            .hot_allocation(HOT_ALLOCATION)
            .shards(1)
            .build()
            .expect("both capacities are set");
        Snapshots {
            map: Map::with_options(
                options,
                Weight,
                ahash::RandomState::new(),
                Default::default(),
            ),
            deadlines: Deadlines::new(ttl),
            admits: (max_bytes as f64 * HOT_ALLOCATION) as u64,
        }
    }

    /// The snapshot held for `key`, if it is and has not expired.
    pub fn get(&self, key: SnapshotKey) -> Option<Arc<Snapshot>> {
        let held = self.map.get(&key)?;
        self.fresh(key, held)
    }

    fn fresh(&self, key: SnapshotKey, held: Held) -> Option<Arc<Snapshot>> {
        let now = self.deadlines.now();
        if held.until > now {
            return Some(held.snapshot);
        }
        // Only if still expired: a snapshot loaded meanwhile stays.
        self.map.remove_if(&key, |held| held.until <= now);
        None
    }

    /// The snapshot held for `key`, waiting for a load of it under way; or, when nobody
    /// holds or loads it, the right to load it.
    pub async fn get_or_load(&self, key: SnapshotKey) -> Result<Arc<Snapshot>, Loader<'_>> {
        loop {
            match self.map.get_value_or_guard_async(&key).await {
                Ok(held) => {
                    if let Some(snapshot) = self.fresh(key, held) {
                        return Ok(snapshot);
                    }
                }
                Err(guard) => {
                    return Err(Loader {
                        guard,
                        until: self.deadlines.for_one_put_now(),
                        admits: self.admits,
                    })
                }
            }
        }
    }

    pub fn remove(&self, key: SnapshotKey) {
        self.map.remove(&key);
    }

    pub fn clear(&self) {
        self.map.clear();
    }

    /// The keys held and not expired.
    pub fn keys(&self) -> Vec<SnapshotKey> {
        let now = self.deadlines.now();
        self.map
            .iter()
            .filter(|(_, held)| held.until > now)
            .map(|(key, _)| key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(values: &str) -> Arc<Snapshot> {
        Arc::new(Snapshot::build(&[("u1", values)]).expect("fits"))
    }

    #[tokio::test]
    async fn a_loaded_snapshot_is_held_and_those_waiting_for_it_get_it_without_loading() {
        let held = Snapshots::new(1 << 20, Duration::from_secs(60));
        let Err(loader) = held.get_or_load((1, 1)).await else {
            panic!("nothing was held yet");
        };
        let waiting = held.get_or_load((1, 1));
        let stored = snapshot("{\"v\":1}");
        let (got, _) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            assert!(loader.hold(stored.clone()));
        });
        let Ok(got) = got else {
            panic!("the waiter was asked to load again");
        };
        assert!(Arc::ptr_eq(&got, &stored));
        assert!(held.get((1, 1)).is_some_and(|s| Arc::ptr_eq(&s, &stored)));
        assert_eq!(held.keys(), vec![(1, 1)]);
        held.remove((1, 1));
        assert!(held.get((1, 1)).is_none());
    }

    #[tokio::test]
    async fn a_dropped_load_lets_the_next_caller_load() {
        let held = Snapshots::new(1 << 20, Duration::from_secs(60));
        let Err(loader) = held.get_or_load((1, 1)).await else {
            panic!("nothing was held yet");
        };
        drop(loader);
        assert!(held.get_or_load((1, 1)).await.is_err());
    }

    #[tokio::test]
    async fn an_expired_snapshot_is_not_served() {
        let held = Snapshots::new(1 << 20, Duration::ZERO);
        let Err(loader) = held.get_or_load((1, 1)).await else {
            panic!("nothing was held yet");
        };
        assert!(loader.hold(snapshot("{\"v\":1}")));
        assert!(held.get((1, 1)).is_none());
        assert!(held.keys().is_empty());
        assert!(held.get_or_load((1, 1)).await.is_err(), "loaded anew");
    }

    #[tokio::test]
    async fn a_load_whose_place_was_cleared_meanwhile_is_not_kept_nor_called_too_big() {
        let held = Snapshots::new(1 << 20, Duration::from_secs(60));
        let Err(loader) = held.get_or_load((1, 1)).await else {
            panic!("nothing was held yet");
        };
        held.clear();
        assert!(loader.hold(snapshot("{\"v\":1}")), "it fits");
        assert!(held.get((1, 1)).is_none());
    }

    #[tokio::test]
    async fn a_snapshot_beyond_the_bytes_is_handed_over_but_not_kept() {
        let held = Snapshots::new(100, Duration::from_secs(60));
        let big = snapshot(&"x".repeat(200));
        let Err(loader) = held.get_or_load((1, 1)).await else {
            panic!("nothing was held yet");
        };
        assert!(!loader.hold(big));
        assert!(held.get((1, 1)).is_none());
    }
}
