//! A stream's events before their commit, on this replica: what makes an aggregation feature
//! over a table that follows a stream answer with an event within milliseconds of its arrival,
//! instead of after the micro-batch holding it is committed (up to `max_batch_interval_ms`
//! later, then read back from the table).
//!
//! Every replica reads the stream: the committing one as it batches, the others with a reader
//! of their own (`streams::follow`). Each run of messages is checked as the commit checks it
//! (`engine::messages`), and its valid rows are kept here as a `Chunk` until a commit holding
//! them is known. A stream has lanes (a Kafka topic's partitions; a NATS stream is one), each
//! with offsets of its own, so the chunks are kept by lane. The online state of each feature
//! (`online`) takes each lane's chunks after what it holds; when it reads the table's new
//! files, the offsets the stream committed say which of the events it holds from here the
//! files hold too, so none is counted twice.
//!
//! Cost: one copy of the uncommitted rows per table, at most `bound` events over all lanes
//! (4 × `max_batch_events`, at least 100,000); a reader that would go past it waits for a
//! commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use polars::prelude::DataFrame;

/// Offsets of one lane, as the online state keeps them beside each event: one number over
/// all lanes, `lane · 2^48 + offset + 1`, so a lane's offsets after one are one range of it
/// (`lane_range`). Offsets must stay below 2^48 − 1 (Kafka's and NATS's do, by far: 2.8·10^14).
const LANE_BITS: u32 = 48;

/// The numbers `(lo, hi]` of `lane`'s offsets in `(after, upto]` (`upto` `None`: every offset
/// after `after`), as the online state keeps them.
pub fn lane_range(lane: usize, after: i64, upto: Option<i64>) -> (i64, i64) {
    let base = (lane as i64) << LANE_BITS;
    let last = (1 << LANE_BITS) - 1;
    let at = |o: i64| base + o.max(-1).saturating_add(1).min(last);
    (at(after), upto.map_or(base + last, at))
}

/// `lane`'s `offset` as the online state keeps it.
pub fn lane_offset(lane: usize, offset: i64) -> i64 {
    lane_range(lane, offset, None).0
}

/// The valid rows of a run of a lane's messages, in offset order.
pub struct Chunk {
    /// The table's columns.
    pub frame: DataFrame,
    /// Each row's offset.
    pub offsets: Vec<i64>,
    /// The run's last offset (a message of it may have been set aside).
    pub last: i64,
}

/// One table's uncommitted events on this replica.
pub struct TableLive {
    pub raw_table_id: i64,
    /// Each lane's application id in the table's `txn` (which of its offsets are committed).
    pub apps: Vec<String>,
    /// The offset a lane's `txn` stands at when nothing was committed.
    pub nothing: i64,
    /// The stream's generation: a stream set again is followed afresh.
    pub generation: i64,
    bound: usize,
    lanes: Vec<LaneLive>,
    /// Events held over every lane.
    events: AtomicUsize,
    room: tokio::sync::Notify,
    /// Woken at each push: the task that gives new events to the online state waits on it.
    pushed: tokio::sync::Notify,
    /// Whether that task was started.
    taker: AtomicBool,
}

struct LaneLive {
    chunks: Mutex<Chunks>,
    /// `Chunks::upto`, read without the lock by every online answer.
    upto: AtomicI64,
}

struct Chunks {
    /// Every valid event with an offset in `(after, upto]` is in `list`.
    after: i64,
    upto: i64,
    list: VecDeque<Arc<Chunk>>,
}

impl TableLive {
    fn lock(&self, lane: usize) -> Option<(&LaneLive, MutexGuard<'_, Chunks>)> {
        let l = self.lanes.get(lane)?;
        Some((l, l.chunks.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// How many lanes the stream has.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The last offset read of each lane.
    pub fn upto(&self) -> Vec<i64> {
        self.lanes
            .iter()
            .map(|l| l.upto.load(Ordering::Acquire))
            .collect()
    }

    /// Whether some lane was read past `held` (one offset per lane): asked by every online
    /// answer, so it allocates nothing.
    pub fn read_past(&self, held: &[i64]) -> bool {
        self.lanes
            .iter()
            .zip(held)
            .any(|(l, h)| l.upto.load(Ordering::Acquire) > *h)
    }

    /// A reader starts `lane` at offset `from`. When that would leave offsets unread after
    /// what is held, what is held is dropped: the chunks stay gapless.
    pub fn start_at(&self, lane: usize, from: i64) {
        let Some((l, mut c)) = self.lock(lane) else {
            return;
        };
        if from > c.upto + 1 {
            let dropped: usize = c.list.iter().map(|ch| ch.offsets.len()).sum();
            c.list.clear();
            c.after = from - 1;
            c.upto = from - 1;
            l.upto.store(c.upto, Ordering::Release);
            self.events.fetch_sub(dropped, Ordering::AcqRel);
            self.room.notify_waiters();
        }
    }

    /// Add the next run of `lane`'s messages (its valid rows); rows at or before what is held
    /// already (a reader that started again) are left out. Whether the table now holds more
    /// than its bound: a reader that can wait for a commit should (`wait_for_room`).
    pub fn push(&self, lane: usize, chunk: Chunk) -> bool {
        let Some((l, mut c)) = self.lock(lane) else {
            return false;
        };
        if chunk.last > c.upto {
            let last = chunk.last;
            let chunk = match chunk.offsets.iter().position(|&o| o > c.upto) {
                Some(0) => Some(chunk),
                Some(first) => Some(Chunk {
                    frame: chunk.frame.slice(first as i64, chunk.offsets.len() - first),
                    offsets: chunk.offsets[first..].to_vec(),
                    last: chunk.last,
                }),
                None => None,
            };
            if let Some(chunk) = chunk {
                self.events.fetch_add(chunk.offsets.len(), Ordering::AcqRel);
                c.list.push_back(Arc::new(chunk));
            }
            c.upto = last;
            l.upto.store(c.upto, Ordering::Release);
            self.pushed.notify_one();
        }
        drop(c);
        self.events.load(Ordering::Acquire) > self.bound
    }

    /// The table holds `lane`'s rows up to `committed` now: the chunks holding nothing after
    /// it are dropped.
    pub fn trim(&self, lane: usize, committed: i64) {
        let Some((_, mut c)) = self.lock(lane) else {
            return;
        };
        let mut dropped = 0;
        while c.list.front().is_some_and(|ch| ch.last <= committed) {
            if let Some(ch) = c.list.pop_front() {
                dropped += ch.offsets.len();
                c.after = ch.last;
            }
        }
        drop(c);
        if dropped > 0 {
            self.events.fetch_sub(dropped, Ordering::AcqRel);
            self.room.notify_waiters();
        }
    }

    /// `lane`'s chunks holding the events after `after` and the last offset read, when every
    /// such event is still held (`None` when some were dropped: they are committed, and the
    /// table's files hold them). Rows at or before `after` in the first chunk are the
    /// caller's to skip.
    pub fn since(&self, lane: usize, after: i64) -> Option<(Vec<Arc<Chunk>>, i64)> {
        let (_, c) = self.lock(lane)?;
        if after < c.after {
            return None;
        }
        let chunks = c
            .list
            .iter()
            .filter(|ch| ch.last > after)
            .cloned()
            .collect();
        Some((chunks, c.upto))
    }

    /// Whether the caller is the first to ask: it starts the task that waits on `pushed`.
    pub fn start_taker(&self) -> bool {
        !self.taker.swap(true, Ordering::AcqRel)
    }

    /// Wait for the next push (one that came since the last wait counts).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }

    /// Wait until the table holds no more than its bound.
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            if self.events.load(Ordering::Acquire) <= self.bound {
                return;
            }
            notified.await;
        }
    }
}

/// The tables this replica reads a stream of, by raw table id.
#[derive(Default)]
pub struct Live {
    tables: RwLock<HashMap<i64, Arc<TableLive>>>,
}

/// Which stream a table's live events are of: its generation and its lanes.
pub struct Followed<'a> {
    pub generation: i64,
    /// Each lane's application id.
    pub apps: &'a [String],
    /// Each lane's committed offset.
    pub committed: &'a [i64],
    /// The offset a lane's `txn` stands at when nothing was committed.
    pub nothing: i64,
    pub max_batch_events: usize,
}

impl Live {
    pub fn table(&self, raw_table_id: i64) -> Option<Arc<TableLive>> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.get(&raw_table_id).cloned()
    }

    /// The table's live events for the stream `followed` (made at first use; another
    /// generation, or other lanes, replace the ones held), each lane starting after its
    /// committed offset.
    pub fn follow(&self, raw_table_id: i64, followed: Followed<'_>) -> Arc<TableLive> {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        match tables.get(&raw_table_id) {
            Some(t) if t.generation == followed.generation && t.apps == followed.apps => t.clone(),
            _ => {
                let lanes = followed
                    .apps
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let committed = followed
                            .committed
                            .get(i)
                            .copied()
                            .unwrap_or(followed.nothing);
                        LaneLive {
                            chunks: Mutex::new(Chunks {
                                after: committed,
                                upto: committed,
                                list: VecDeque::new(),
                            }),
                            upto: AtomicI64::new(committed),
                        }
                    })
                    .collect();
                let table = Arc::new(TableLive {
                    raw_table_id,
                    apps: followed.apps.to_vec(),
                    nothing: followed.nothing,
                    generation: followed.generation,
                    bound: (4 * followed.max_batch_events).max(100_000),
                    lanes,
                    events: AtomicUsize::new(0),
                    room: tokio::sync::Notify::new(),
                    pushed: tokio::sync::Notify::new(),
                    taker: AtomicBool::new(false),
                });
                if let Some(old) = tables.insert(raw_table_id, table.clone()) {
                    // Its taker wakes, finds it replaced and ends.
                    old.pushed.notify_one();
                }
                table
            }
        }
    }

    /// Stop keeping the table's events (its stream was deleted or set again).
    pub fn stop(&self, raw_table_id: i64, generation: i64) {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if tables
            .get(&raw_table_id)
            .is_some_and(|t| t.generation == generation)
        {
            if let Some(old) = tables.remove(&raw_table_id) {
                old.pushed.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn chunk(offsets: &[i64], last: i64) -> Chunk {
        Chunk {
            frame: df!("v" => offsets).unwrap(),
            offsets: offsets.to_vec(),
            last,
        }
    }

    fn held(live: &TableLive, lane: usize, after: i64) -> Option<Vec<i64>> {
        live.since(lane, after).map(|(chunks, _)| {
            chunks
                .iter()
                .flat_map(|c| c.offsets.iter().copied().filter(|o| *o > after))
                .collect()
        })
    }

    fn follow(live: &Live, generation: i64, apps: &[String], committed: &[i64]) -> Arc<TableLive> {
        live.follow(
            1,
            Followed {
                generation,
                apps,
                committed,
                nothing: 0,
                max_batch_events: 10,
            },
        )
    }

    #[test]
    fn chunks_hold_every_event_after_a_point_until_their_commit() {
        let live = Live::default();
        let apps = vec!["app".to_string()];
        let table = follow(&live, 7, &apps, &[0]);
        assert!(!table.push(0, chunk(&[1, 2, 4], 4)));
        // A reader that started again sends what is held once more: left out.
        table.push(0, chunk(&[2, 4, 5], 6));
        assert_eq!(table.upto(), vec![6]);
        assert_eq!(held(&table, 0, 0), Some(vec![1, 2, 4, 5]));
        assert_eq!(held(&table, 0, 4), Some(vec![5]));
        table.trim(0, 4);
        assert_eq!(held(&table, 0, 4), Some(vec![5]));
        // Events up to 4 are dropped: whoever holds less reads the table instead.
        assert_eq!(held(&table, 0, 3), None);
        // A reader starting past what is held leaves a gap: nothing before it is offered.
        table.start_at(0, 20);
        assert_eq!(held(&table, 0, 6), None);
        assert_eq!(held(&table, 0, 19), Some(vec![]));
        // The same generation is the same table; another one starts afresh.
        assert!(Arc::ptr_eq(&table, &follow(&live, 7, &apps, &[0])));
        assert_eq!(follow(&live, 8, &apps, &[30]).upto(), vec![30]);
        live.stop(1, 7);
        assert!(live.table(1).is_some());
        live.stop(1, 8);
        assert!(live.table(1).is_none());
    }

    #[test]
    fn each_lane_keeps_its_own_offsets_and_other_lanes_are_another_table() {
        let live = Live::default();
        let apps = vec!["p0".to_string(), "p1".to_string()];
        let table = follow(&live, 1, &apps, &[-1, 4]);
        table.push(0, chunk(&[0, 1], 1));
        table.push(1, chunk(&[5, 7], 7));
        assert_eq!(table.upto(), vec![1, 7]);
        assert!(!table.read_past(&[1, 7]));
        assert!(table.read_past(&[1, 5]));
        assert_eq!(held(&table, 0, -1), Some(vec![0, 1]));
        assert_eq!(held(&table, 1, 4), Some(vec![5, 7]));
        // A commit of lane 1 drops only lane 1's chunks.
        table.trim(1, 7);
        assert_eq!(held(&table, 1, 4), None);
        assert_eq!(held(&table, 0, -1), Some(vec![0, 1]));
        // A topic with a partition more is another table.
        let three = vec!["p0".to_string(), "p1".to_string(), "p2".to_string()];
        assert!(!Arc::ptr_eq(&table, &follow(&live, 1, &three, &[1, 7, -1])));
    }

    #[test]
    fn lane_offsets_keep_each_lane_in_a_range_of_its_own() {
        // Kafka's first offset (0) after nothing committed (−1), and a lane's last.
        assert_eq!(lane_range(0, -1, Some(0)), (0, 1));
        assert_eq!(lane_offset(0, 0), 1);
        let (lo, hi) = lane_range(1, 10, None);
        assert!(lo < lane_offset(1, 11) && lane_offset(1, 11) <= hi);
        assert!(lane_offset(0, i64::MAX) <= lane_range(0, 0, None).1);
        assert!(lane_range(0, 0, None).1 < lane_offset(1, -1));
        assert!(hi < lane_offset(2, -1));
    }

    #[test]
    fn a_table_over_its_bound_says_so_until_a_commit_drops_chunks() {
        let live = Live::default();
        let apps = vec!["app".to_string()];
        let table = live.follow(
            1,
            Followed {
                generation: 1,
                apps: &apps,
                committed: &[0],
                nothing: 0,
                max_batch_events: 1,
            },
        );
        let offsets: Vec<i64> = (1..=100_001).collect();
        assert!(table.push(0, chunk(&offsets, 100_001)));
        table.trim(0, 100_001);
        assert!(!table.push(0, chunk(&[100_002], 100_002)));
    }
}
