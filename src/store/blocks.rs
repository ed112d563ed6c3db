//! Postgres keeps a generation's vectors in blocks: one row per run of neighbouring entity ids
//! (`feature_vector_blocks`, keyed by the generation and the block's first id), not one row per
//! entity. Postgres pays for every row and index entry it inserts: 1M vectors written one row
//! each took psql's own COPY 1.40-1.53 s here, the same bytes in blocks of 16 0.42-0.46 s
//! (docs/performance.md). A point read finds the one block whose first id is the greatest at
//! or below the id asked for (one index probe) and looks through its few entries.
//!
//! A block's `entries` are, per entity in id order: the id's length (u32, big-endian), its
//! bytes, the values' length, their bytes (JSON text). Migration `0015` writes each older row
//! as a block of one in the same format.

use super::error::Result;
use super::StoreError;

/// A block is cut before its first id and entries would pass this many bytes (or it would
/// pass 32 entries), so a block of small vectors stays a row Postgres stores inline and
/// uncompressed (its TOAST threshold is ~2 kB a row); a vector bigger than that is a block of
/// its own, stored as Postgres stores any large value (out of line, compressed).
const BLOCK_BYTES: usize = 1_600;
const BLOCK_ENTRIES: usize = 32;

/// Rows of the binary COPY format (`FORMAT binary`): the header, then tuples, then the trailer.
pub(super) const COPY_HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub(super) const COPY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// A block tuple's bytes besides its first id and entries: the field count, the generation
/// with its length, and two lengths.
pub(super) const TUPLE_HEAD: usize = 2 + 4 + 8 + 4 + 4;
/// An entry's bytes besides its id and values: two lengths.
pub(super) const ENTRY_HEAD: usize = 8;

/// Packs rows, which must come in strictly increasing id order (byte order, as the `"C"`
/// collation compares), into block tuples of the binary COPY format: a point read trusts that
/// every id in a block sorts before the next block's first id.
#[derive(Debug)]
pub struct Packer {
    generation: i64,
    first: String,
    entries: Vec<u8>,
    count: usize,
    /// The last id packed, for the order check across chunks.
    last: Option<String>,
}

impl Packer {
    pub fn new(generation: i64) -> Self {
        Packer {
            generation,
            first: String::new(),
            entries: Vec::with_capacity(BLOCK_BYTES + 256),
            count: 0,
            last: None,
        }
    }

    /// Add a row; a block that is full goes to `out` first. A row out of order is refused
    /// and nothing of it is packed.
    pub fn push(&mut self, id: &str, values: &str, out: &mut Vec<u8>) -> Result<()> {
        if let Some(last) = &self.last {
            if id.as_bytes() <= last.as_bytes() {
                return Err(StoreError::Invalid(format!(
                    "vectors must come in increasing id order: '{id}' came after '{last}'"
                )));
            }
        }
        let (id_len, values_len) = (length(id)?, length(values)?);
        let size = ENTRY_HEAD + id.len() + values.len();
        if self.count > 0
            && (self.first.len() + self.entries.len() + size > BLOCK_BYTES
                || self.count == BLOCK_ENTRIES)
        {
            self.flush(out)?;
        }
        if self.count == 0 {
            self.first.clear();
            self.first.push_str(id);
        }
        self.entries.extend_from_slice(&id_len.to_be_bytes());
        self.entries.extend_from_slice(id.as_bytes());
        self.entries.extend_from_slice(&values_len.to_be_bytes());
        self.entries.extend_from_slice(values.as_bytes());
        self.count += 1;
        match &mut self.last {
            Some(last) => {
                last.clear();
                last.push_str(id);
            }
            None => self.last = Some(id.to_string()),
        }
        Ok(())
    }

    /// The block being filled, if any, to `out` as one tuple.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let (first_len, entries_len) = (length(&self.first)?, length_of(self.entries.len())?);
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&(first_len as i32).to_be_bytes());
        out.extend_from_slice(self.first.as_bytes());
        out.extend_from_slice(&(entries_len as i32).to_be_bytes());
        out.extend_from_slice(&self.entries);
        self.entries.clear();
        self.count = 0;
        Ok(())
    }
}

/// A length as a field can hold it (COPY's are i32, so the same bound serves the entries').
fn length(text: &str) -> Result<u32> {
    length_of(text.len())
}

fn length_of(len: usize) -> Result<u32> {
    i32::try_from(len)
        .map(|n| n as u32)
        .map_err(|_| StoreError::Invalid(format!("a value of {len} bytes")))
}

/// A block's (id, values) entries, in id order. A block that does not read as written (cut
/// short, not UTF-8) is an error, not a shorter answer.
pub(super) fn entries(block: &[u8]) -> impl Iterator<Item = Result<(&str, &str)>> {
    let mut rest = block;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = field(&mut rest).and_then(|id| Ok((id, field(&mut rest)?)));
        if entry.is_err() {
            rest = &[];
        }
        Some(entry)
    })
}

/// The values stored for `id` in a block, if it holds them. Entries before it are skipped
/// by their lengths, unread.
pub(super) fn find<'a>(block: &'a [u8], id: &str) -> Result<Option<&'a str>> {
    let mut rest = block;
    while !rest.is_empty() {
        let entry_id = bytes(&mut rest)?;
        let values = bytes(&mut rest)?;
        match entry_id.cmp(id.as_bytes()) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return text(values).map(Some),
            std::cmp::Ordering::Greater => break,
        }
    }
    Ok(None)
}

/// One length-prefixed text off the front of `rest`.
fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a str> {
    bytes(rest).and_then(text)
}

/// One length-prefixed run of bytes off the front of `rest`.
fn bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    let broken = || StoreError::Invalid("a stored vector block is cut short".into());
    let (head, tail) = rest.split_first_chunk::<4>().ok_or_else(broken)?;
    let len = u32::from_be_bytes(*head) as usize;
    if tail.len() < len {
        return Err(broken());
    }
    let (taken, tail) = tail.split_at(len);
    *rest = tail;
    Ok(taken)
}

fn text(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|_| StoreError::Invalid("a stored vector block is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tuples of a COPY body (no header or trailer) read back: (first id, entries).
    fn tuples(mut body: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !body.is_empty() {
            let take = |body: &mut &[u8], n: usize| {
                let (head, tail) = body.split_at(n);
                *body = tail;
                head.to_vec()
            };
            assert_eq!(take(&mut body, 2), 3i16.to_be_bytes());
            assert_eq!(take(&mut body, 4), 8i32.to_be_bytes());
            assert_eq!(take(&mut body, 8), 7i64.to_be_bytes());
            let len = i32::from_be_bytes(take(&mut body, 4).try_into().unwrap()) as usize;
            let first = String::from_utf8(take(&mut body, len)).unwrap();
            let len = i32::from_be_bytes(take(&mut body, 4).try_into().unwrap()) as usize;
            out.push((first, take(&mut body, len)));
        }
        out
    }

    /// The greatest first id at or below `id`, as the point read's index probe picks it.
    fn block_for<'a>(blocks: &'a [(String, Vec<u8>)], id: &str) -> Option<&'a [u8]> {
        blocks
            .iter()
            .rev()
            .find(|(first, _)| first.as_bytes() <= id.as_bytes())
            .map(|(_, entries)| entries.as_slice())
    }

    #[test]
    fn every_packed_vector_is_found_in_the_block_a_point_read_picks_and_absent_ids_are_not() {
        // Ids of mixed lengths and scripts, values of mixed sizes (one past a block's bytes).
        let mut ids: Vec<String> = (0..2_000u32)
            .map(|i| match i % 4 {
                0 => format!("u{}", i.wrapping_mul(7919) % 100_000),
                1 => format!("ü{i}"),
                2 => format!("{i}\t{i}"),
                _ => format!("user_{i:07}"),
            })
            .collect();
        ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        ids.dedup();
        let values = |i: usize| match i % 97 {
            0 => format!("{{\"big\":\"{}\"}}", "x".repeat(3 * BLOCK_BYTES)),
            _ => format!("{{\"n\":{i},\"s\":\"{}\"}}", "v".repeat(i % 50)),
        };
        let mut packer = Packer::new(7);
        let mut body = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            packer.push(id, &values(i), &mut body).expect("in order");
        }
        packer.flush(&mut body).expect("flushed");
        let blocks = tuples(&body);

        assert!(blocks.len() > ids.len() / BLOCK_ENTRIES, "{}", blocks.len());
        let mut read_back = Vec::new();
        for (first, entries) in &blocks {
            let inside: Vec<(&str, &str)> = super::entries(entries).map(|e| e.unwrap()).collect();
            assert_eq!(inside[0].0, first, "a block starts with its first id");
            assert!(inside.len() <= BLOCK_ENTRIES);
            assert!(
                inside.len() == 1 || entries.len() <= BLOCK_BYTES,
                "{}",
                entries.len()
            );
            read_back.extend(inside.iter().map(|(i, v)| (i.to_string(), v.to_string())));
        }
        let written: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), values(i)))
            .collect();
        assert_eq!(read_back, written, "every vector once, in order");

        for (id, values) in &written {
            let block = block_for(&blocks, id).expect("a block at or below every written id");
            assert_eq!(find(block, id).unwrap(), Some(values.as_str()), "{id}");
            for absent in [format!("{id}\0"), format!("{id}~")] {
                if ids
                    .binary_search_by(|i| i.as_bytes().cmp(absent.as_bytes()))
                    .is_err()
                {
                    let block = block_for(&blocks, &absent).expect("a block");
                    assert_eq!(find(block, &absent).unwrap(), None, "{absent:?}");
                }
            }
        }
        assert!(
            block_for(&blocks, "").is_none(),
            "nothing sorts before the first id"
        );
    }

    #[test]
    fn a_row_out_of_id_order_or_repeated_is_refused_and_a_broken_block_is_an_error() {
        let mut packer = Packer::new(7);
        let mut body = Vec::new();
        packer.push("u2", "{}", &mut body).expect("first");
        for wrong in ["u2", "u10", "u1"] {
            let refused = packer.push(wrong, "{}", &mut body);
            assert!(
                matches!(&refused, Err(StoreError::Invalid(why)) if why.contains("increasing id order")),
                "{wrong}: {refused:?}"
            );
        }
        packer.push("u3", "{}", &mut body).expect("in order again");
        packer.flush(&mut body).expect("flushed");
        let blocks = tuples(&body);
        assert_eq!(blocks.len(), 1);
        let ids: Vec<&str> = entries(&blocks[0].1).map(|e| e.unwrap().0).collect();
        assert_eq!(ids, ["u2", "u3"], "the refused rows left nothing behind");

        let cut = &blocks[0].1[..blocks[0].1.len() - 1];
        assert!(matches!(find(cut, "u3"), Err(StoreError::Invalid(_))));
        // The first entry's values (after its id's length, "u2" and the values' length).
        let mut not_text = blocks[0].1.clone();
        not_text[10] = 0xff;
        assert!(matches!(find(&not_text, "u2"), Err(StoreError::Invalid(_))));
        assert!(entries(&not_text).any(|e| e.is_err()));
    }
}
