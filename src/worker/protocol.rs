//! What crosses the pipe between the server and a compute worker.
//!
//! Job (stdin): `u32 LE length` + job JSON, `u32 LE count`, then `count` input batches, each
//! `u64 LE length` + an Arrow IPC file (the raw table's columns; stored batches are passed on
//! as they are stored). Reply (stdout): `u32 LE length` + reply JSON, then, on success, the
//! vectors as one Arrow IPC file (`entity_id`, `values`: the JSON object text that is served),
//! then the typed result columns as an LZ4 Arrow IPC file (the snapshot that is stored), each
//! `u64 LE length` first. Only the small headers are JSON; rows never are.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Headers larger than this are refused: both sides write small ones, and a corrupt length
/// must not become a huge allocation.
const MAX_HEADER_BYTES: u32 = 1 << 20;

/// One unit of work for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub sql: String,
    pub entity_key: String,
    /// Results with more rows are refused.
    pub max_rows: usize,
    /// The raw table's `schema_definition`: column -> declared type.
    pub schema: BTreeMap<String, String>,
    /// Run over an empty frame of `schema` and check the result's shape; send no vectors.
    pub dry_run: bool,
    /// Only rows whose event time is at or before this instant go into the SQL.
    #[serde(default)]
    pub as_of: Option<EventTimeLimit>,
}

/// An `as_of` compute: the raw table's event-time column and the instant, in microseconds
/// since the Unix epoch (UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventTimeLimit {
    pub column: String,
    pub micros: i64,
}

/// What a successful job sends back besides its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    /// `entity_id`, `values` (JSON text), uncompressed: it is decoded once, at once.
    pub vectors: Vec<u8>,
    /// The typed result columns, LZ4-compressed: stored as the snapshot as it is.
    pub snapshot: Vec<u8>,
    /// The snapshot's column statistics as JSON (`engine::stats`), stored with it.
    pub stats: Vec<u8>,
}

/// Which step refused the job, so the server can word its answer as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input batches could not be read (a server-side problem).
    Input,
    /// The SQL was refused or failed in the engine.
    Sql,
    /// The SQL ran but its result is not one row per entity with the key present.
    Result,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// `None` on success.
    pub failure: Option<(FailureKind, String)>,
    /// Output column -> type name.
    #[serde(default)]
    pub output_schema: BTreeMap<String, String>,
    /// Vectors in the result (0 for a dry run).
    #[serde(default)]
    pub rows: usize,
    /// Time spent on the snapshot's statistics, in microseconds (part of the worker's time).
    #[serde(default)]
    pub stats_micros: u64,
}

/// The job header and the framing of its batches, without the batch bytes themselves, so the
/// server can stream stored batches without copying them into one buffer.
pub fn job_prefix(job: &Job, batch_count: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    write_header(&mut buf, job)?;
    buf.extend_from_slice(&(batch_count as u32).to_le_bytes());
    Ok(buf)
}

pub fn blob_prefix(len: usize) -> [u8; 8] {
    (len as u64).to_le_bytes()
}

pub fn read_job(input: &mut impl Read) -> io::Result<(Job, Vec<Vec<u8>>)> {
    let job: Job = read_header(input)?;
    let count = read_u32(input)? as usize;
    let mut batches = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        batches.push(read_blob(input)?);
    }
    Ok((job, batches))
}

pub fn write_reply(
    out: &mut impl Write,
    reply: &Reply,
    results: Option<&Results>,
) -> io::Result<()> {
    write_header(out, reply)?;
    if let Some(results) = results {
        write_blob(out, &results.vectors)?;
        write_blob(out, &results.snapshot)?;
        write_blob(out, &results.stats)?;
    }
    out.flush()
}

/// Parse a worker's whole stdout. `Err` means the worker died before finishing its reply.
pub fn read_reply(mut bytes: &[u8]) -> io::Result<(Reply, Option<Results>)> {
    let reply: Reply = read_header(&mut bytes)?;
    let results = if reply.failure.is_none() && !bytes.is_empty() {
        Some(Results {
            vectors: read_blob(&mut bytes)?,
            snapshot: read_blob(&mut bytes)?,
            stats: read_blob(&mut bytes)?,
        })
    } else {
        None
    };
    Ok((reply, results))
}

fn write_header(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)
}

fn read_header<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<T> {
    let len = read_u32(input)?;
    if len > MAX_HEADER_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a header of {len} bytes"),
        ));
    }
    let mut buf = vec![0; len as usize];
    input.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn write_blob(out: &mut impl Write, blob: &[u8]) -> io::Result<()> {
    out.write_all(&blob_prefix(blob.len()))?;
    out.write_all(blob)
}

fn read_blob(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0; 8];
    input.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    let mut buf = Vec::new();
    let read = input.take(len).read_to_end(&mut buf)?;
    if read as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a blob ended early",
        ));
    }
    Ok(buf)
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_and_a_reply_round_trip() {
        let job = Job {
            sql: "SELECT k FROM data".into(),
            entity_key: "k".into(),
            max_rows: 10,
            schema: BTreeMap::from([("k".to_string(), "string".to_string())]),
            dry_run: false,
            as_of: None,
        };
        // Framed as the server streams it: the prefix, then each batch after its length.
        let mut buf = job_prefix(&job, 2).unwrap();
        for batch in [vec![1u8, 2, 3], vec![]] {
            buf.extend_from_slice(&blob_prefix(batch.len()));
            buf.extend_from_slice(&batch);
        }
        let (back, batches) = read_job(&mut buf.as_slice()).unwrap();
        assert_eq!(back.sql, job.sql);
        assert_eq!(batches, vec![vec![1, 2, 3], vec![]]);

        let reply = Reply {
            failure: None,
            output_schema: BTreeMap::new(),
            rows: 1,
            stats_micros: 0,
        };
        let mut out = Vec::new();
        let results = Results {
            vectors: vec![9, 9],
            snapshot: vec![7],
            stats: b"{}".to_vec(),
        };
        write_reply(&mut out, &reply, Some(&results)).unwrap();
        let (back, read) = read_reply(&out).unwrap();
        assert_eq!(back.rows, 1);
        assert_eq!(read, Some(results));
    }

    #[test]
    fn a_truncated_reply_is_an_error() {
        let reply = Reply {
            failure: None,
            output_schema: BTreeMap::new(),
            rows: 1,
            stats_micros: 0,
        };
        let mut out = Vec::new();
        let results = Results {
            vectors: vec![9; 100],
            snapshot: vec![7; 10],
            stats: vec![1; 5],
        };
        write_reply(&mut out, &reply, Some(&results)).unwrap();
        assert!(read_reply(&out[..out.len() - 10]).is_err());
        assert!(read_reply(&out[..3]).is_err());
    }
}
