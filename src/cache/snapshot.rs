//! A whole published version held in memory for batch serving: every entity's values in one
//! text buffer, indexed by entity id. Keyed by (version, generation), so it never goes stale.

use std::sync::OnceLock;

use hashbrown::HashTable;

/// One hasher for every snapshot in the process, so a batch hashes each entity id once and
/// probes every feature's snapshot with that hash (`EntityHash`): hashing per feature was ~6 %
/// of a 100 × 10 batch's instructions. aHash rather than SipHash: SipHash was ~9 % of batch
/// CPU, and the index is built from our own stored ids, not hostile input. Seeded at random
/// once per process.
fn hasher() -> &'static ahash::RandomState {
    static STATE: OnceLock<ahash::RandomState> = OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new)
}

/// An entity id's hash under the snapshots' shared hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityHash(u64);

impl EntityHash {
    #[inline]
    pub fn of(entity: &str) -> EntityHash {
        EntityHash(hasher().hash_one(entity))
    }
}

/// Where one entity is in the text: its id from `start` to `values`, then its values up to
/// `end` (offsets, not lengths: a probe adds nothing to slice them).
#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    values: u32,
    end: u32,
}

/// An index slot: one `Entry`. What an entry costs at least besides its bytes is this and
/// its control byte (`cache::SNAPSHOT_SLOT_BYTES`).
pub const SLOT_BYTES: usize = std::mem::size_of::<Entry>();

pub struct Snapshot {
    /// Each entity's id followed by its values, entity after entity: a probe compares the id
    /// and copies the values from the same place. With the ids in boxes of their own, a
    /// probe of a snapshot too big for the CPU's caches took one more miss, for the box.
    text: String,
    index: HashTable<Entry>,
}

impl Snapshot {
    /// From (entity, values JSON) pairs. Returns `None` if the ids and values do not fit the
    /// 4 GiB a snapshot can address. A repeated entity keeps its last values, as a map would.
    pub fn build<E: AsRef<str>, V: AsRef<str>>(rows: &[(E, V)]) -> Option<Snapshot> {
        let total: usize = rows
            .iter()
            .map(|(e, v)| e.as_ref().len() + v.as_ref().len())
            .sum();
        u32::try_from(total).ok()?;
        let mut text = String::with_capacity(total);
        let mut index: HashTable<Entry> = HashTable::with_capacity(rows.len());
        for (entity, values) in rows {
            let (entity, values) = (entity.as_ref(), values.as_ref());
            let start = text.len() as u32;
            text.push_str(entity);
            let values_at = text.len() as u32;
            text.push_str(values);
            let entry = Entry {
                start,
                values: values_at,
                end: text.len() as u32,
            };
            let hash = EntityHash::of(entity).0;
            let bytes = text.as_bytes();
            match index.find_mut(hash, |e| id_of(bytes, e) == entity.as_bytes()) {
                Some(slot) => *slot = entry,
                None => {
                    // Ids were pushed whole as `str`, so each reads back as one.
                    let rehash = |e: &Entry| {
                        EntityHash::of(std::str::from_utf8(id_of(bytes, e)).unwrap_or_default()).0
                    };
                    index.insert_unique(hash, entry, rehash);
                }
            }
        }
        Some(Snapshot { text, index })
    }

    #[inline]
    pub fn get(&self, entity: &str) -> Option<&[u8]> {
        self.get_hashed(entity, EntityHash::of(entity))
    }

    /// As `get`, with the entity's hash already taken (`EntityHash::of(entity)`). Inline: a
    /// batch calls it once per value from another module, and whether the compiler inlined it
    /// there moved a 100 × 10 batch by ~30k instructions (~9 %) between two builds. Bytes,
    /// not `str`: the answer is bytes, and slicing the text as `str` checked both ends for a
    /// character boundary on every value (~8k instructions of a 100 × 10 batch).
    #[inline]
    pub fn get_hashed(&self, entity: &str, hash: EntityHash) -> Option<&[u8]> {
        let bytes = self.text.as_bytes();
        self.index
            .find(hash.0, |e| id_of(bytes, e) == entity.as_bytes())
            .map(|e| &bytes[e.values as usize..e.end as usize])
    }

    /// Bytes held: the text buffer's capacity (ids and values) and the index's table (one
    /// slot and one control byte per bucket, empty buckets included).
    pub fn bytes(&self) -> u64 {
        (std::mem::size_of::<Self>()
            + self.text.capacity()
            + self.index.capacity() * (SLOT_BYTES + 1)) as u64
    }
}

#[inline]
fn id_of<'t>(text: &'t [u8], e: &Entry) -> &'t [u8] {
    &text[e.start as usize..e.values as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_short_ids_by_their_index_slots_too() {
        let rows: Vec<(String, String)> = (0..10_000)
            .map(|i| (format!("{i}"), "{\"v\":1}".to_string()))
            .collect();
        let snapshot = Snapshot::build(&rows).unwrap();
        let text: usize = rows.iter().map(|(_, v)| v.len()).sum();
        let ids: usize = rows.iter().map(|(e, _)| e.len()).sum();
        // Each entry costs a slot and a control byte besides its bytes: short ids are mostly
        // overhead.
        assert!(snapshot.bytes() as usize >= text + ids + 10_000 * (SLOT_BYTES + 1));
        assert_eq!(snapshot.get("42"), Some(&b"{\"v\":1}"[..]));
    }

    #[test]
    fn an_entity_is_found_by_its_hash_taken_once_and_a_repeated_entity_keeps_its_last_values() {
        let rows = [
            ("u1", "{\"v\":1}"),
            ("u2", "{\"v\":2}"),
            ("u1", "{\"v\":3}"),
        ];
        let first = Snapshot::build(&rows).unwrap();
        let second = Snapshot::build(&rows[1..]).unwrap();
        let hash = EntityHash::of("u2");
        assert_eq!(first.get_hashed("u2", hash), Some(&b"{\"v\":2}"[..]));
        assert_eq!(second.get_hashed("u2", hash), Some(&b"{\"v\":2}"[..]));
        assert_eq!(first.get("u1"), Some(&b"{\"v\":3}"[..]));
        assert_eq!(first.get_hashed("u3", EntityHash::of("u3")), None);
    }
}
