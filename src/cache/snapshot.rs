//! A whole published version held in memory for batch serving: every entity's values in one
//! text buffer, indexed by entity id. Keyed by (version, generation), so it never goes stale.

use std::collections::HashMap;
use std::ops::Range;

/// ahash rather than SipHash: batch serving hashes a thousand entity ids per request and SipHash
/// was ~9% of its CPU. The index is built from our own stored ids, not hostile input.
pub struct Snapshot {
    text: String,
    index: HashMap<Box<str>, Range<u32>, ahash::RandomState>,
}

impl Snapshot {
    /// From (entity, values JSON) pairs. Returns `None` if the values do not fit the 4 GiB a
    /// snapshot can address.
    pub fn build<E: AsRef<str>, V: AsRef<str>>(rows: &[(E, V)]) -> Option<Snapshot> {
        let total: usize = rows.iter().map(|(_, v)| v.as_ref().len()).sum();
        u32::try_from(total).ok()?;
        let mut text = String::with_capacity(total);
        let mut index = HashMap::with_capacity_and_hasher(rows.len(), ahash::RandomState::new());
        for (entity, values) in rows {
            let start = text.len() as u32;
            text.push_str(values.as_ref());
            index.insert(Box::from(entity.as_ref()), start..text.len() as u32);
        }
        Some(Snapshot { text, index })
    }

    pub fn get(&self, entity: &str) -> Option<&str> {
        self.index
            .get(entity)
            .map(|r| &self.text[r.start as usize..r.end as usize])
    }

    /// Bytes held: the text buffer's capacity, every key's bytes, and the index's table (one
    /// slot and one control byte per bucket, empty buckets included).
    pub fn bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(Box<str>, Range<u32>)>() + 1;
        let keys: usize = self.index.keys().map(|k| k.len()).sum();
        (std::mem::size_of::<Self>() + self.text.capacity() + keys + self.index.capacity() * slot)
            as u64
    }
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
        // Each entry costs a 24-byte slot besides its bytes: short ids are mostly overhead.
        assert!(snapshot.bytes() as usize >= text + ids + 10_000 * 25);
        assert_eq!(snapshot.get("42"), Some("{\"v\":1}"));
    }
}
