//! Encoded bodies by (version, generation, entity): the in-process tier of single-vector
//! answers and of batch values.
//!
//! quick_cache rather than moka: a hit is a shard's read lock, one probe and a reference bit,
//! where moka's `get` also pinned an epoch, queued a read record for its eviction policy and
//! replayed those records into its frequency sketch and LRU deques. Entries never change (a
//! generation's body is fixed), so none of moka's features beyond a byte bound and an age
//! limit were used, and the age limit is a deadline kept beside each body. A hit is looked up
//! by `VectorRef`, which borrows the entity id: no key is allocated to ask.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::Equivalent;

use super::deadlines::Deadlines;

/// A cached body's key. Entries are immutable: a publish bumps the generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorKey {
    pub version_id: i64,
    pub generation: i64,
    pub entity_id: String,
}

/// A `VectorKey` borrowed, to look one up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorRef<'a> {
    pub version_id: i64,
    pub generation: i64,
    pub entity_id: &'a str,
}

impl VectorKey {
    pub fn as_ref(&self) -> VectorRef<'_> {
        VectorRef {
            version_id: self.version_id,
            generation: self.generation,
            entity_id: &self.entity_id,
        }
    }
}

impl<'a> VectorRef<'a> {
    pub fn of(version_id: i64, generation: i64, entity_id: &'a str) -> VectorRef<'a> {
        VectorRef {
            version_id,
            generation,
            entity_id,
        }
    }

    pub fn to_key(self) -> VectorKey {
        VectorKey {
            version_id: self.version_id,
            generation: self.generation,
            entity_id: self.entity_id.to_string(),
        }
    }
}

// One hash for both forms, written once: the map finds an owned key by its borrowed form only
// if they hash alike.
fn hash_parts<H: Hasher>(version_id: i64, generation: i64, entity_id: &str, state: &mut H) {
    state.write_i64(version_id);
    state.write_i64(generation);
    state.write(entity_id.as_bytes());
}

impl Hash for VectorKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.version_id, self.generation, &self.entity_id, state);
    }
}

impl Hash for VectorRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.version_id, self.generation, self.entity_id, state);
    }
}

impl Equivalent<VectorKey> for VectorRef<'_> {
    fn equivalent(&self, key: &VectorKey) -> bool {
        self.version_id == key.version_id
            && self.generation == key.generation
            && self.entity_id == key.entity_id
    }
}

/// A body and the instant (milliseconds from the cache's start) from which it is no longer
/// served.
#[derive(Clone)]
struct Held {
    body: Bytes,
    until: u64,
}

/// What an entry costs: its id, its body and a fixed overhead for the slot.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<VectorKey, Held> for Weight {
    fn weight(&self, key: &VectorKey, held: &Held) -> u64 {
        (key.entity_id.len() + held.body.len() + 64) as u64
    }
}

type Map = quick_cache::sync::Cache<
    VectorKey,
    Held,
    Weight,
    ahash::RandomState,
    quick_cache::sync::DefaultLifecycle<VectorKey, Held>,
>;

/// Shards of the map, each bounded by its share of the bytes: fixed rather than quick_cache's
/// default of four per core, which on a large machine would make each share too small to
/// hold a large body at all.
const SHARDS: usize = 16;

/// Bodies bounded in bytes (keys and bodies) and in age.
pub struct Bodies {
    map: Map,
    deadlines: Deadlines,
}

impl Bodies {
    /// `max_bytes` in all; each body served for `ttl` after it was first put.
    pub fn new(max_bytes: u64, ttl: Duration) -> Bodies {
        // For quick_cache's sizing of the keys it remembers after evicting them; a few
        // hundred bytes is a typical answer.
        let estimated_items = usize::try_from(max_bytes / 512)
            .unwrap_or(usize::MAX)
            .max(16);
        // At start, not per request; `build` fails only on a capacity left unset.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(max_bytes)
            .shards(SHARDS)
            .build()
            .expect("both capacities are set");
        Bodies {
            map: Map::with_options(
                options,
                Weight,
                ahash::RandomState::new(),
                Default::default(),
            ),
            deadlines: Deadlines::new(ttl),
        }
    }

    pub fn get(&self, key: VectorRef<'_>) -> Option<Bytes> {
        let held = self.map.get(&key)?;
        let now = self.deadlines.now();
        if held.until > now {
            return Some(held.body);
        }
        // Only if still expired: a fresh body put meanwhile stays.
        self.map.remove_if(&key, |held| held.until <= now);
        None
    }

    pub fn insert(&self, key: VectorKey, body: Bytes) {
        let until = self.deadlines.for_one_put_now();
        self.map.insert(key, Held { body, until });
    }

    /// Hold `body` in place of the body held for `key`, until the time that one had: a body
    /// no longer held (evicted, expired, or cleared by a rescope) is not put back.
    pub fn replace(&self, key: VectorKey, body: Bytes) {
        let Some(old) = self.map.peek(&key.as_ref()) else {
            return;
        };
        let _ = self.map.replace(
            key,
            Held {
                body,
                until: old.until,
            },
            false,
        );
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(entity: &str) -> VectorKey {
        VectorKey {
            version_id: 7,
            generation: 3,
            entity_id: entity.to_string(),
        }
    }

    #[test]
    fn a_borrowed_key_hashes_and_compares_as_its_owned_form() {
        let state = ahash::RandomState::new();
        for entity in ["", "u1", "a longer id with spaces", "é"] {
            let owned = key(entity);
            assert_eq!(state.hash_one(&owned), state.hash_one(owned.as_ref()));
            assert!(owned.as_ref().equivalent(&owned));
        }
        assert!(!key("u1").as_ref().equivalent(&key("u2")));
        let u1 = key("u1");
        let other_generation = VectorRef {
            generation: 4,
            ..u1.as_ref()
        };
        assert!(!other_generation.equivalent(&u1));
    }

    #[test]
    fn a_body_put_is_found_by_its_borrowed_key_until_cleared() {
        let bodies = Bodies::new(1 << 20, Duration::from_secs(60));
        bodies.insert(key("u1"), Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(
            bodies.get(key("u1").as_ref()).as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(bodies.get(key("u2").as_ref()), None);
        assert!(bodies.map.weight() > 0);
        bodies.clear();
        assert_eq!(bodies.get(key("u1").as_ref()), None);
    }

    #[test]
    fn bodies_past_their_age_are_not_served() {
        let bodies = Bodies::new(1 << 20, Duration::from_secs(60));
        bodies.map.insert(
            key("old"),
            Held {
                body: Bytes::from_static(b"{}"),
                until: bodies.deadlines.now(),
            },
        );
        assert_eq!(bodies.get(key("old").as_ref()), None);
        assert_eq!(bodies.map.len(), 0, "an expired body is dropped when found");
    }

    #[test]
    fn a_replaced_body_keeps_its_deadline_and_an_absent_one_is_not_put_back() {
        let bodies = Bodies::new(1 << 20, Duration::from_secs(60));
        bodies.insert(key("u1"), Bytes::from_static(b"{\"stale\":false}"));
        let until = bodies.map.peek(&key("u1").as_ref()).map(|h| h.until);
        bodies.replace(key("u1"), Bytes::from_static(b"{\"stale\":true}"));
        assert_eq!(
            bodies.get(key("u1").as_ref()).as_deref(),
            Some(&b"{\"stale\":true}"[..])
        );
        assert_eq!(bodies.map.peek(&key("u1").as_ref()).map(|h| h.until), until);
        bodies.clear();
        bodies.replace(key("u1"), Bytes::from_static(b"{}"));
        assert_eq!(bodies.get(key("u1").as_ref()), None);
    }

    #[test]
    fn the_byte_bound_holds() {
        let bodies = Bodies::new(64 * 1024, Duration::from_secs(60));
        let body = Bytes::from(vec![b'x'; 1000]);
        for i in 0..1000 {
            bodies.insert(key(&format!("u{i}")), body.clone());
        }
        assert!(
            bodies.map.weight() <= 64 * 1024,
            "held {} bytes",
            bodies.map.weight()
        );
        assert!(bodies.map.len() > 10, "it still holds what fits");
    }
}
