//! An aggregation feature's events scattered by their entity's hash into partition files on the
//! worker's local disk: a training set over more events than a worker can hold reads the
//! table's files once, then evaluates a group of partitions at a time.
//!
//! Each partition file is a sequence of blobs, each a `u64` length (little-endian) and an Arrow
//! IPC file (uncompressed: the files are read back once, soon, mostly from the page cache, so
//! compressing them would only cost the CPU the scan and the kernels need) of up to a scan
//! batch's share of rows. The directory goes with the `Spilled` that names it.

use std::fs::File;
use std::io::{BufWriter, Cursor, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};

use polars::prelude::*;

/// Partitions the events are scattered into: enough that a pass can be cut near any size
/// (a 100M-event table gives ~1.6M events a partition), few enough that each scan batch's
/// share of a partition is a blob of thousands of rows.
pub const PARTITIONS: usize = 64;

/// Rows per batch the scan hands over to be scattered.
const BATCH_ROWS: usize = 1 << 20;

/// Fixed seeds: the events and the labels of an entity must land in the same partition, and a
/// dataset's row order must not change from one run to the next (of one build: another ahash
/// version may hash differently).
static HASH: ahash::RandomState = ahash::RandomState::with_seeds(
    0x5851_f42d_4c95_7f2d,
    0x1405_7b7e_f767_814f,
    0x2545_f491_4f6c_dd1d,
    0x9e37_79b9_7f4a_7c15,
);

/// The partition of an entity id (its text, as the events' key column holds it).
pub fn partition_of(id: &str) -> usize {
    (HASH.hash_one(id) % PARTITIONS as u64) as usize
}

/// Events written to partition files; the files are removed when this is dropped.
pub struct Spilled {
    dir: PathBuf,
    /// Rows written to each partition.
    pub rows: Vec<u64>,
    /// The events' columns with no rows: what a partition with no events reads as.
    empty: DataFrame,
}

impl Drop for Spilled {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One batch's rows cut by partition: (partition, rows, IPC blob) for each partition it has
/// rows of.
type Pieces = Vec<(usize, usize, Vec<u8>)>;

/// Batches the scan has scattered wait here for the writer (each ~30 MiB at most): enough
/// that the scan rarely waits for the disk, and the memory stays small.
const QUEUED_BATCHES: usize = 2;

/// The spill's directory until the `Spilled` takes it: removed on an error before the spill
/// is complete (an empty path, once taken, is left alone).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `events` with the streaming engine and writes each row to the partition of its key
/// column `key` (as text; rows without a key take part in nothing and are left out). `keyed`
/// turns each batch into the events as evaluated (a tuple key's id column added); `parent` is
/// where the partition files go.
pub fn spill(
    events: LazyFrame,
    key: &str,
    keyed: impl Fn(DataFrame) -> Result<DataFrame, String> + Send + Sync + 'static,
    parent: &Path,
) -> Result<Spilled, String> {
    let err = |e: std::io::Error| format!("the worker's spill files: {e}");
    let schema = events.clone().collect_schema().map_err(|e| e.to_string())?;
    let empty = keyed(DataFrame::empty_with_schema(&schema))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut dir = Dir(parent.join(format!(
        "feature-store-spill-{}-{nanos}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).map_err(err)?;
    let mut files = Vec::with_capacity(PARTITIONS);
    for p in 0..PARTITIONS {
        files.push(BufWriter::new(
            File::create(partition_path(&dir.0, p)).map_err(err)?,
        ));
    }
    // The files are written on a thread of their own, so the scan and the scatter go on
    // while a write waits for the kernel (a 100M-event spill is ~3 GB of dirty pages, and
    // writeback throttles the writer). `None` ends it.
    let (send, receive) = std::sync::mpsc::sync_channel::<Option<Pieces>>(QUEUED_BATCHES);
    let writer = std::thread::spawn(move || -> Result<Vec<u64>, String> {
        let mut rows = vec![0u64; PARTITIONS];
        while let Ok(Some(pieces)) = receive.recv() {
            for (p, n, blob) in pieces {
                let file = &mut files[p];
                file.write_all(&(blob.len() as u64).to_le_bytes())
                    .and_then(|()| file.write_all(&blob))
                    .map_err(err)?;
                rows[p] += n as u64;
            }
        }
        for file in &mut files {
            file.flush().map_err(err)?;
        }
        Ok(rows)
    });
    let sender = send.clone();
    let key = key.to_string();
    let failed = |e: String| PolarsError::ComputeError(e.into());
    let callback = PlanCallback::new(move |batch: DataFrame| {
        let pieces = scatter(keyed(batch).map_err(failed)?, &key).map_err(failed)?;
        // A writer that stopped has its reason, reported once it is joined.
        sender
            .send(Some(pieces))
            .map_err(|_| failed("the spill writer stopped".into()))?;
        // Go on: `true` would stop the scan.
        Ok(false)
    });
    let scanned = events
        // In the scan's order: `evaluate` breaks ties in time by it (`first`, `last`, and the
        // order floats are summed in), as the one-pass answer and the online state do.
        .sink_batches(callback, true, NonZeroUsize::new(BATCH_ROWS))
        .and_then(|sink| sink.collect_with_engine(Engine::Streaming))
        .map_err(|e| super::execute::clean_message(&e.to_string()));
    let _ = send.send(None);
    let written = writer
        .join()
        .map_err(|_| "the spill writer panicked".to_string())
        .and_then(|written| written);
    // The writer's error first: it explains a scan that failed because the writer stopped.
    let rows = written?;
    scanned?;
    Ok(Spilled {
        // Removed by the `Spilled` from now on.
        dir: std::mem::take(&mut dir.0),
        rows,
        empty,
    })
}

fn partition_path(dir: &Path, p: usize) -> PathBuf {
    dir.join(format!("{p:02}.blobs"))
}

/// `batch`'s rows cut by partition, each piece's rows in the batch's order.
fn scatter(batch: DataFrame, key: &str) -> Result<Pieces, String> {
    let err = |e: PolarsError| e.to_string();
    let keys = batch
        .column(key)
        .map_err(|_| format!("the events have no column '{key}'"))?
        .cast(&DataType::String)
        .map_err(err)?;
    let keys = keys.str().map_err(err)?;
    let mut rows: Vec<Vec<IdxSize>> = vec![Vec::new(); PARTITIONS];
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = k {
            rows[partition_of(k)].push(i as IdxSize);
        }
    }
    let mut pieces = Vec::new();
    for (p, rows) in rows.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let n = rows.len();
        let mut piece = batch
            .take(&IdxCa::from_vec(PlSmallStr::EMPTY, rows))
            .map_err(err)?;
        let mut blob = Vec::new();
        IpcWriter::new(&mut blob).finish(&mut piece).map_err(err)?;
        pieces.push((p, n, blob));
    }
    Ok(pieces)
}

impl Spilled {
    /// The events of `partitions`, read back as one frame (each partition's in the order
    /// they were scanned).
    pub fn read(&self, partitions: Range<usize>) -> Result<DataFrame, String> {
        let err = |e: PolarsError| e.to_string();
        let mut frame = self.empty.clone();
        for p in partitions {
            if self.rows[p] == 0 {
                continue;
            }
            let bytes = std::fs::read(partition_path(&self.dir, p))
                .map_err(|e| format!("the worker's spill files: {e}"))?;
            let mut at = 0;
            while at < bytes.len() {
                let len = bytes
                    .get(at..at + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .ok_or("a spill file ends inside a length")? as usize;
                let blob = bytes
                    .get(at + 8..at + 8 + len)
                    .ok_or("a spill file ends inside a blob")?;
                let piece = IpcReader::new(Cursor::new(blob)).finish().map_err(err)?;
                frame.vstack_mut_owned(piece).map_err(err)?;
                at += 8 + len;
            }
        }
        frame.rechunk_mut_par();
        Ok(frame)
    }
}

/// Consecutive partitions evaluated together: each group as large as it can be without going
/// over `max_events` events or `max_labels` labels, unless one partition alone does.
pub fn groups(
    events: &[u64],
    labels: &[u64],
    max_events: u64,
    max_labels: u64,
) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut in_events, mut in_labels) = (0, 0u64, 0u64);
    for (p, &e) in events.iter().enumerate() {
        let l = labels.get(p).copied().unwrap_or(0);
        if p > start && (in_events + e > max_events || in_labels + l > max_labels) {
            groups.push(start..p);
            (start, in_events, in_labels) = (p, 0, 0);
        }
        in_events += e;
        in_labels += l;
    }
    if start < events.len() {
        groups.push(start..events.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> DataFrame {
        let users: Vec<Option<String>> = (0..n)
            .map(|i| (i % 97 != 5).then(|| format!("u{}", i % 1000)))
            .collect();
        df!(
            "user_id" => users,
            "ts" => (0..n as i64).collect::<Vec<_>>(),
            "amount" => (0..n).map(|i| (i % 3 != 0).then_some(i as f64)).collect::<Vec<_>>()
        )
        .unwrap()
    }

    #[test]
    fn every_keyed_event_is_read_back_once_from_its_entitys_partition() {
        let frame = events(50_000);
        let dir = tempfile::tempdir().unwrap();
        let spilled = spill(frame.clone().lazy(), "user_id", Ok, dir.path()).unwrap();
        let keyed = frame
            .column("user_id")
            .unwrap()
            .is_not_null()
            .sum()
            .unwrap() as u64;
        assert_eq!(spilled.rows.iter().sum::<u64>(), keyed);
        assert!(spilled.rows.iter().filter(|&&r| r > 0).count() > PARTITIONS / 2);

        let mut seen = 0;
        for p in 0..PARTITIONS {
            let part = spilled.read(p..p + 1).unwrap();
            assert_eq!(part.height() as u64, spilled.rows[p]);
            seen += part.height();
            let users = part.column("user_id").unwrap().str().unwrap().clone();
            let ts = part.column("ts").unwrap().i64().unwrap().clone();
            let amount = part.column("amount").unwrap().f64().unwrap().clone();
            let mut last = -1;
            for ((u, t), a) in users.iter().zip(ts.iter()).zip(amount.iter()) {
                let (u, t) = (u.unwrap(), t.unwrap());
                assert_eq!(partition_of(u), p, "{u} is in its partition");
                // The original row, whole, in scan order.
                assert_eq!(u, format!("u{}", t % 1000));
                assert_eq!(a, (t % 3 != 0).then_some(t as f64));
                assert!(t > last, "the scan's order is kept");
                last = t;
            }
        }
        assert_eq!(seen as u64, keyed);
        let all = spilled.read(0..PARTITIONS).unwrap();
        assert_eq!(all.height() as u64, keyed);
        assert_eq!(all.get_column_names(), frame.get_column_names());

        let path = spilled.dir.clone();
        assert!(path.exists());
        drop(spilled);
        assert!(!path.exists(), "the partition files go with the spill");
    }

    #[test]
    fn long_keys_are_written_once_not_once_a_partition() {
        // Keys of 40 bytes live in the batch's shared buffers, not in the views: a piece
        // that kept the whole batch's buffers would be written 64 times over.
        let n = 200_000;
        // Distinct and without repeats, so compression cannot hide copies.
        let users: Vec<String> = (0..n as u64)
            .map(|i| {
                let h = HASH.hash_one(i);
                format!("{h:016x}{:016x}{:08x}", h.rotate_left(21) ^ i, h >> 32)
            })
            .collect();
        let frame = df!("user_id" => users, "ts" => (0..n as i64).collect::<Vec<_>>()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spilled = spill(frame.lazy(), "user_id", Ok, dir.path()).unwrap();
        let bytes: u64 = (0..PARTITIONS)
            .map(|p| {
                std::fs::metadata(partition_path(&spilled.dir, p))
                    .unwrap()
                    .len()
            })
            .sum();
        assert!(
            bytes < n as u64 * 80,
            "{bytes} bytes for {n} events of ~56 bytes"
        );
    }

    #[test]
    fn a_spill_of_no_events_reads_as_the_events_columns() {
        let frame = events(10);
        let dir = tempfile::tempdir().unwrap();
        let spilled = spill(
            frame.lazy().filter(col("ts").lt(lit(0i64))),
            "user_id",
            Ok,
            dir.path(),
        )
        .unwrap();
        let read = spilled.read(0..PARTITIONS).unwrap();
        assert_eq!(read.height(), 0);
        assert_eq!(read.get_column_names(), ["user_id", "ts", "amount"]);
    }

    #[test]
    fn groups_stay_within_both_budgets_unless_one_partition_is_over() {
        let events = [5, 5, 5, 20, 1, 1, 0, 0];
        let labels = [1, 1, 1, 1, 9, 1, 0, 0];
        assert_eq!(
            groups(&events, &labels, 10, 10),
            [0..2, 2..3, 3..4, 4..8],
            "a group closes before it would go over either budget"
        );
        assert_eq!(groups(&events, &labels, 1000, 1000), vec![(0..8)]);
        assert_eq!(groups(&[], &[], 10, 10), Vec::<Range<usize>>::new());
    }
}
