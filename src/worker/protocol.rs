//! What crosses the pipes between the server and a compute worker.
//!
//! Job (stdin): `u32 LE length` + job JSON; then, for piped input, `u64 LE length` + an Arrow
//! IPC file of the rows (rows sent in a request). Stored data is never piped: the job names
//! the files of one table version and the worker scans them itself.
//!
//! Reply (stdout): `u32 LE length` + reply JSON. On success it may be followed by a payload
//! blob (`u64 LE length` + bytes: a preview's rows as JSON) or by vector chunks, each `u32 LE
//! rows` + `u64 LE length` + the rows, every row `u32 LE length` + entity id, then `u32 LE
//! length` + values (the JSON object text that is served); a chunk of 0 rows and 0 bytes ends
//! them.
//! The server writes each chunk to the database as it arrives, so a result is never held
//! whole by the server. A training set's answer follows its reply as frames of `u64 LE length`
//! + bytes, an empty one last. The server reads all of it through `Frames`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LengthDelimitedCodecError};

pub use crate::engine::training::Format;

/// Headers larger than this are refused: a corrupt length must not become a huge allocation.
pub const MAX_HEADER_BYTES: u32 = 16 << 20;

/// One unit of work for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub task: Task,
    /// How to reach object storage (`aws_endpoint_url`, ...): passed here, not inherited,
    /// since a worker starts with an empty environment.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Compute(ComputeJob),
    /// The first rows of a table version.
    Preview(PreviewJob),
    /// A point-in-time training set over snapshot files; the request body is piped.
    Training(TrainingJob),
    /// Drift between two snapshot files.
    Drift(DriftJob),
    /// Column statistics of one snapshot file.
    Stats(StatsJob),
    /// An aggregation feature's events after an instant, for the serving process to hold.
    Events(EventsJob),
}

/// Read `source`'s files (kept by its filter) and send back the events after `after_micros`
/// as an Arrow IPC payload: the key, the event time and the aggregated columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsJob {
    pub source: AggregatedSource,
    pub after_micros: i64,
}

/// Run a feature's SQL over one input and check its result is one row per entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeJob {
    pub sql: String,
    pub entity_key: String,
    /// Results with more rows are refused.
    pub max_rows: usize,
    /// The raw table's `schema_definition`: column -> declared type.
    pub schema: BTreeMap<String, String>,
    /// Run over an empty frame of `schema` and check the result's shape; write nothing.
    pub dry_run: bool,
    pub input: Input,
    /// Only rows whose event time is at or before this instant go into the SQL.
    #[serde(default)]
    pub as_of: Option<EventTimeLimit>,
    /// Where to write the result as the snapshot (a path or an `s3://` URI).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Send the vectors back (not when the result will only be kept as history).
    #[serde(default)]
    pub vectors: bool,
    /// Rows in the input, as the table's versions count them: what sizes the group-by's
    /// table of groups.
    #[serde(default)]
    pub input_rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewJob {
    pub input: Input,
    pub schema: BTreeMap<String, String>,
    pub limit: usize,
}

/// Build a training set: the rows come piped (the request body, as sent), the answer goes back
/// as a byte stream in `output`'s format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingJob {
    pub input: Format,
    pub output: Format,
    /// Values older than the row by more than this (microseconds) are null.
    #[serde(default)]
    pub max_age_micros: Option<i64>,
    pub features: Vec<TrainingFeature>,
    /// The rows are a raw table's (its pinned files), not the piped body.
    #[serde(default)]
    pub labels: Option<LabelTable>,
    /// Write the answer as Parquet files under this directory (a local path or an `s3://`
    /// prefix) and reply with a `DatasetWritten` payload, instead of streaming it back.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Of a dataset: the events of its aggregation features evaluated in one pass (the rest
    /// wait in partition files on the worker's disk); 0: all in one pass, as for a streamed
    /// answer.
    #[serde(default)]
    pub pass_events: u64,
}

/// A raw table whose rows are a training set's labelled rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelTable {
    /// The Parquet files of the table version current when the request started.
    pub files: Vec<String>,
    #[serde(default)]
    pub partitioned: bool,
    /// The raw table's `schema_definition`.
    pub schema: BTreeMap<String, String>,
    /// The column holding each row's time; the answer names it `timestamp`.
    pub time_column: String,
}

/// What a training set written as a dataset holds: its files (full URIs) and rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetWritten {
    pub files: Vec<String>,
    pub rows: usize,
}

/// One referenced feature: its version's snapshots, or why it did not resolve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingFeature {
    pub reference: String,
    #[serde(default)]
    pub version_id: Option<i64>,
    #[serde(default)]
    pub unresolved: Option<String>,
    /// The version's key as stored (`crate::keys`): which of the rows' columns name its
    /// entities. `None`: their `entity_id`.
    #[serde(default)]
    pub entity_key: Option<String>,
    /// In serving order (by `valid_from`, then id).
    #[serde(default)]
    pub snapshots: Vec<SnapshotFile>,
    /// An aggregation feature: evaluated from its table's events, not from snapshots.
    #[serde(default)]
    pub aggregated: Option<AggregatedSource>,
}

/// Where an aggregation feature's events are and what to compute from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AggregatedSource {
    /// The Parquet files of the table version current when the request started.
    pub files: Vec<String>,
    #[serde(default)]
    pub partitioned: bool,
    /// The raw table's `schema_definition`.
    pub schema: BTreeMap<String, String>,
    pub entity_key: String,
    pub event_time: String,
    #[serde(default)]
    pub filter: Option<String>,
    pub outputs: Vec<crate::engine::aggregations::Output>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub valid_from_micros: i64,
    /// A path or an `s3://` URI.
    pub uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftJob {
    pub base: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsJob {
    pub snapshot: String,
}

/// Where a job's rows come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Input {
    /// No rows: an empty frame of the schema.
    Empty,
    /// An Arrow IPC file follows the job on stdin.
    Piped,
    /// The Parquet files of one table version.
    Files {
        files: Vec<String>,
        /// Partition values are in the paths (`col=value/`).
        #[serde(default)]
        partitioned: bool,
    },
    /// A result computed elsewhere (by Spark), as Parquet files: read with the columns and
    /// types they hold, for the checks, the snapshot and the vectors.
    Result { files: Vec<String> },
}

/// An `as_of` compute: the raw table's event-time column and the instant, in microseconds
/// since the Unix epoch (UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventTimeLimit {
    pub column: String,
    pub micros: i64,
}

/// Which step refused the job, so the server can word its answer as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input could not be read (a server-side problem).
    Input,
    /// The SQL was refused or failed in the engine.
    Sql,
    /// The SQL ran but its result is not one row per entity with the key present.
    Result,
    /// The result could not be written where it belongs.
    Output,
    /// The request's own rows or parameters are wrong (a training set's body): the reason is
    /// the client's answer as it stands.
    Request,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// `None` on success.
    pub failure: Option<(FailureKind, String)>,
    /// Output column -> type name.
    #[serde(default)]
    pub output_schema: BTreeMap<String, String>,
    /// Rows in the result (entities; 0 for a dry run).
    #[serde(default)]
    pub rows: usize,
    /// The snapshot's column statistics as JSON (`engine::stats`).
    #[serde(default)]
    pub stats: Option<String>,
    /// Bytes of the snapshot file written.
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Where the time went, in microseconds: the query (scan and SQL), the checks and sort,
    /// the statistics, writing the snapshot. A training set: parsing the rows or reading the
    /// label table (query), gathering (check), reading snapshot files (snapshot), writing the
    /// dataset's files (stats).
    #[serde(default)]
    pub query_micros: u64,
    /// Of the query's time: checking the result (one row per entity) and sorting it by key.
    #[serde(default)]
    pub check_micros: u64,
    #[serde(default)]
    pub stats_micros: u64,
    #[serde(default)]
    pub snapshot_micros: u64,
    /// A dataset's training set: scanning its aggregation features' events into partition
    /// files (of `check_micros`, the gathering).
    #[serde(default)]
    pub spill_micros: u64,
    /// The worker's peak resident memory when it replied (Linux `VmHWM`), in KiB.
    #[serde(default)]
    pub peak_rss_kib: u64,
    /// Vector chunks follow.
    #[serde(default)]
    pub vectors: bool,
    /// One payload blob follows.
    #[serde(default)]
    pub payload: bool,
    /// A byte stream follows (`FramedWriter`): a training set's answer.
    #[serde(default)]
    pub stream: bool,
}

pub fn write_job(out: &mut impl Write, job: &Job, piped: Option<&[u8]>) -> io::Result<()> {
    out.write_all(&job_prefix(job, piped.map(<[u8]>::len))?)?;
    if let Some(piped) = piped {
        out.write_all(piped)?;
    }
    out.flush()
}

/// What goes on stdin before piped rows: the job, and the rows' length when there are some.
/// A caller that holds the rows writes them after it, from its own buffer.
pub fn job_prefix(job: &Job, piped_len: Option<usize>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_header(&mut out, job)?;
    if let Some(len) = piped_len {
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    Ok(out)
}

/// The job and, when its input is piped, the rows.
pub fn read_job(input: &mut impl Read) -> io::Result<(Job, Option<Vec<u8>>)> {
    let job: Job = read_header(input)?;
    let piped = match &job.task {
        Task::Compute(ComputeJob {
            input: Input::Piped,
            ..
        })
        | Task::Preview(PreviewJob {
            input: Input::Piped,
            ..
        })
        | Task::Training(TrainingJob { labels: None, .. }) => Some(read_blob(input)?),
        _ => None,
    };
    Ok((job, piped))
}

pub fn write_header(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)
}

pub fn read_header<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<T> {
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

pub fn write_blob(out: &mut impl Write, blob: &[u8]) -> io::Result<()> {
    out.write_all(&(blob.len() as u64).to_le_bytes())?;
    out.write_all(blob)
}

pub fn read_blob(input: &mut impl Read) -> io::Result<Vec<u8>> {
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

/// Largest frame of a byte stream: what a writer buffers before it sends.
pub const STREAM_FRAME_BYTES: usize = 1 << 20;

/// A byte stream cut into frames (`u64 LE length` + bytes; a frame of 0 bytes ends it), so
/// the reader can pass each on as it arrives and tell a whole stream from a cut one.
pub struct FramedWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> FramedWriter<W> {
    pub fn new(out: W) -> Self {
        FramedWriter {
            out,
            buf: Vec::with_capacity(STREAM_FRAME_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_blob(&mut self.out, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Send what is buffered and the end mark.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.out.write_all(&0u64.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FramedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = STREAM_FRAME_BYTES - self.buf.len();
        let taken = data.len().min(room);
        self.buf.extend_from_slice(&data[..taken]);
        if self.buf.len() >= STREAM_FRAME_BYTES {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Vector rows framed for one chunk, as the worker builds it.
#[derive(Debug, Default)]
pub struct ChunkWriter {
    rows: u32,
    bytes: Vec<u8>,
}

impl ChunkWriter {
    pub fn push(&mut self, entity_id: &str, values: &str) {
        self.bytes
            .extend_from_slice(&(entity_id.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(entity_id.as_bytes());
        self.bytes
            .extend_from_slice(&(values.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(values.as_bytes());
        self.rows += 1;
    }

    pub fn rows(&self) -> u32 {
        self.rows
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Write the chunk and start a new one.
    pub fn flush_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.rows.to_le_bytes())?;
        out.write_all(&(self.bytes.len() as u64).to_le_bytes())?;
        out.write_all(&self.bytes)?;
        self.rows = 0;
        self.bytes.clear();
        Ok(())
    }

    /// The chunk that ends the vectors.
    pub fn write_end(out: &mut impl Write) -> io::Result<()> {
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&0u64.to_le_bytes())
    }
}

/// What the server expects next on a worker's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The reply: `u32 LE length` + JSON.
    Reply,
    /// A vector chunk: `u32 LE rows` + `u64 LE length` + the rows.
    Chunk,
    /// A payload blob or a frame of a streamed answer: `u64 LE length` + bytes.
    Blob,
}

/// The server's reader of a worker's stdout. Every frame above is length-prefixed, so
/// tokio-util's `LengthDelimitedCodec` cuts each one (one codec per layout), and nothing here
/// counts bytes by hand; `expect` says which layout comes next and the longest it may be.
pub struct Frames {
    next: Next,
    reply: LengthDelimitedCodec,
    chunk: LengthDelimitedCodec,
    blob: LengthDelimitedCodec,
}

/// The bytes before a chunk's rows: its row count and its length.
const CHUNK_HEAD: usize = 12;

impl Default for Frames {
    fn default() -> Self {
        let mut builder = LengthDelimitedCodec::builder();
        builder.little_endian();
        Frames {
            next: Next::Reply,
            reply: builder
                .clone()
                .length_field_length(4)
                .max_frame_length(MAX_HEADER_BYTES as usize)
                .new_codec(),
            // The row count before the length is kept in the frame (num_skip 0, the head
            // added to the length) for `VectorChunk::from_frame` to read.
            chunk: builder
                .clone()
                .length_field_offset(4)
                .length_field_length(8)
                .length_adjustment(CHUNK_HEAD as isize)
                .num_skip(0)
                .new_codec(),
            blob: builder.clone().length_field_length(8).new_codec(),
        }
    }
}

impl Frames {
    /// The next frame is a `next`, of at most `max` bytes (past it, the read fails and
    /// `is_too_long` says so, before the frame is read).
    pub fn expect(&mut self, next: Next, max: usize) {
        self.next = next;
        self.codec().set_max_frame_length(max);
    }

    fn codec(&mut self) -> &mut LengthDelimitedCodec {
        match self.next {
            Next::Reply => &mut self.reply,
            Next::Chunk => &mut self.chunk,
            Next::Blob => &mut self.blob,
        }
    }
}

impl Decoder for Frames {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        self.codec().decode(src)
    }
}

/// Whether a read failed on a frame longer than `Frames::expect` allowed (not a broken pipe).
pub fn is_too_long(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

/// One chunk of vectors as the server reads it: rows parsed lazily from the framed bytes.
#[derive(Debug, Clone)]
pub struct VectorChunk {
    pub rows: u32,
    pub bytes: Bytes,
}

impl VectorChunk {
    /// A chunk frame as `Frames` cut it (its head still on).
    pub fn from_frame(frame: BytesMut) -> io::Result<VectorChunk> {
        if frame.len() < CHUNK_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a vector chunk shorter than its head",
            ));
        }
        let mut frame = frame.freeze();
        let rows = frame.get_u32_le();
        frame.advance(CHUNK_HEAD - 4);
        Ok(VectorChunk { rows, bytes: frame })
    }

    /// (entity id, values) of each row; `Err` if the framing or the text is broken.
    pub fn iter(&self) -> impl Iterator<Item = Result<(&str, &str), String>> {
        let mut rest: &[u8] = &self.bytes;
        let mut left = self.rows;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut take = || -> Result<&str, String> {
                if rest.len() < 4 {
                    return Err("a vector chunk ended early".into());
                }
                let (len, tail) = rest.split_at(4);
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if tail.len() < len {
                    return Err("a vector chunk ended early".into());
                }
                let (text, tail) = tail.split_at(len);
                rest = tail;
                std::str::from_utf8(text).map_err(|e| e.to_string())
            };
            Some(take().and_then(|id| take().map(|values| (id, values))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_piped_rows_round_trips() {
        let job = Job {
            task: Task::Compute(ComputeJob {
                sql: "SELECT k FROM data".into(),
                entity_key: "k".into(),
                max_rows: 10,
                schema: BTreeMap::from([("k".to_string(), "string".to_string())]),
                dry_run: false,
                input: Input::Piped,
                as_of: None,
                snapshot: None,
                vectors: true,
                input_rows: 0,
            }),
            storage: BTreeMap::new(),
        };
        let mut buf = Vec::new();
        write_job(&mut buf, &job, Some(&[1, 2, 3])).unwrap();
        let (back, piped) = read_job(&mut buf.as_slice()).unwrap();
        assert!(matches!(back.task, Task::Compute(c) if c.sql == "SELECT k FROM data"));
        assert_eq!(piped, Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_framed_stream_reads_back_whole_and_ends_with_an_empty_frame() {
        let data: Vec<u8> = (0..(STREAM_FRAME_BYTES * 2 + 10))
            .map(|i| i as u8)
            .collect();
        let mut writer = FramedWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let framed = writer.finish().unwrap();
        let mut input = framed.as_slice();
        let mut back = Vec::new();
        loop {
            let frame = read_blob(&mut input).unwrap();
            if frame.is_empty() {
                break;
            }
            assert!(frame.len() <= STREAM_FRAME_BYTES);
            back.extend(frame);
        }
        assert_eq!(back, data);
        assert!(input.is_empty());
    }

    #[test]
    fn frames_cut_a_reply_chunks_and_a_blob_and_refuse_one_too_long_before_reading_it() {
        let mut wire = Vec::new();
        write_header(&mut wire, &serde_json::json!({"ok": true})).unwrap();
        let mut chunk = ChunkWriter::default();
        chunk.push("u1", "{}");
        chunk.flush_to(&mut wire).unwrap();
        ChunkWriter::write_end(&mut wire).unwrap();
        write_blob(&mut wire, b"abc").unwrap();
        write_blob(&mut wire, b"abcd").unwrap();
        let mut src = BytesMut::from(&wire[..]);
        let mut frames = Frames::default();

        frames.expect(Next::Reply, 1024);
        assert_eq!(
            frames.decode(&mut src).unwrap().unwrap(),
            br#"{"ok":true}"#[..]
        );
        frames.expect(Next::Chunk, 1024);
        let read = VectorChunk::from_frame(frames.decode(&mut src).unwrap().unwrap()).unwrap();
        let rows: Vec<_> = read.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows, [("u1", "{}")]);
        let end = VectorChunk::from_frame(frames.decode(&mut src).unwrap().unwrap()).unwrap();
        assert_eq!((end.rows, end.bytes.len()), (0, 0));
        frames.expect(Next::Blob, 3);
        assert_eq!(frames.decode(&mut src).unwrap().unwrap(), b"abc"[..]);
        let refused = frames.decode(&mut src).unwrap_err();
        assert!(is_too_long(&refused), "{refused}");
    }

    #[test]
    fn vector_chunks_frame_rows_and_a_broken_one_is_an_error() {
        let mut chunk = ChunkWriter::default();
        chunk.push("u1", r#"{"a":1}"#);
        chunk.push("é", "{}");
        let mut out = Vec::new();
        chunk.flush_to(&mut out).unwrap();
        let rows = u32::from_le_bytes(out[..4].try_into().unwrap());
        let read = VectorChunk::from_frame(BytesMut::from(&out[..])).unwrap();
        assert_eq!(read.rows, rows);
        let pairs: Vec<_> = read.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(pairs, [("u1", r#"{"a":1}"#), ("é", "{}")]);
        let broken = VectorChunk {
            rows,
            bytes: Bytes::copy_from_slice(&out[12..out.len() - 1]),
        };
        assert!(broken.iter().any(|r| r.is_err()));
    }
}
