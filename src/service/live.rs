//! A stream's events before their commit, on this replica: what makes an aggregation feature
//! over a table that follows a stream answer with an event within milliseconds of its arrival,
//! instead of after the micro-batch holding it is committed (up to `max_batch_interval_ms`
//! later, then read back from the table).
//!
//! Every replica reads the stream: the committing one as it batches, the others with a reader
//! of their own (`streams::follow`). Each run of messages is checked as the commit checks it
//! (`engine::messages`), and its valid rows are kept here as a `Chunk` until a commit holding
//! them is known. The online state of each feature (`online`) takes the chunks after what it
//! holds; when it reads the table's new files, a file a stream committed names the offsets it
//! holds (`offline::stream_range`), so the events it already holds from here are not counted
//! twice.
//!
//! Cost: one copy of the uncommitted rows per table, at most `bound` events (4 ×
//! `max_batch_events`, at least 100,000); a reader that would go past it waits for a commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use polars::prelude::DataFrame;

/// The valid rows of a run of a stream's messages, in offset order.
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
    /// The stream's application id in the table's `txn` (which offsets are committed).
    pub app: String,
    /// The stream's generation: a stream set again is followed afresh.
    pub generation: i64,
    bound: usize,
    chunks: Mutex<Chunks>,
    /// `Chunks::upto`, read without the lock by every online answer.
    upto: AtomicI64,
    room: tokio::sync::Notify,
    /// Woken at each push: the task that gives new events to the online state waits on it.
    pushed: tokio::sync::Notify,
    /// Whether that task was started.
    taker: AtomicBool,
}

struct Chunks {
    /// Every valid event with an offset in `(after, upto]` is in `list`.
    after: i64,
    upto: i64,
    list: VecDeque<Arc<Chunk>>,
    events: usize,
}

impl TableLive {
    fn lock(&self) -> MutexGuard<'_, Chunks> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last offset read.
    pub fn upto(&self) -> i64 {
        self.upto.load(Ordering::Acquire)
    }

    /// A reader starts at offset `from`. When that would leave offsets unread after what is
    /// held, what is held is dropped: the chunks stay gapless.
    pub fn start_at(&self, from: i64) {
        let mut c = self.lock();
        if from > c.upto + 1 {
            c.list.clear();
            c.events = 0;
            c.after = from - 1;
            c.upto = from - 1;
            self.upto.store(c.upto, Ordering::Release);
            self.room.notify_waiters();
        }
    }

    /// Add the next run of messages (its valid rows); rows at or before what is held already
    /// (a reader that started again) are left out. Whether the table now holds more than
    /// its bound: a reader that can wait for a commit should (`wait_for_room`).
    pub fn push(&self, chunk: Chunk) -> bool {
        let mut c = self.lock();
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
                c.events += chunk.offsets.len();
                c.list.push_back(Arc::new(chunk));
            }
            c.upto = last;
            self.upto.store(c.upto, Ordering::Release);
            self.pushed.notify_one();
        }
        c.events > self.bound
    }

    /// The table holds the stream's rows up to `committed` now: the chunks holding nothing
    /// after it are dropped.
    pub fn trim(&self, committed: i64) {
        let mut c = self.lock();
        let mut dropped = false;
        while c.list.front().is_some_and(|ch| ch.last <= committed) {
            if let Some(ch) = c.list.pop_front() {
                c.events -= ch.offsets.len();
                c.after = ch.last;
                dropped = true;
            }
        }
        drop(c);
        if dropped {
            self.room.notify_waiters();
        }
    }

    /// The chunks holding the events after `after` and the last offset read, when every such
    /// event is still held (`None` when some were dropped: they are committed, and the
    /// table's files hold them). Rows at or before `after` in the first chunk are the
    /// caller's to skip.
    pub fn since(&self, after: i64) -> Option<(Vec<Arc<Chunk>>, i64)> {
        let c = self.lock();
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
            if self.lock().events <= self.bound {
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

impl Live {
    pub fn table(&self, raw_table_id: i64) -> Option<Arc<TableLive>> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.get(&raw_table_id).cloned()
    }

    /// The table's live events for the stream's `generation` (made at first use; a newer
    /// generation replaces an older one's), starting after offset `committed`.
    pub fn follow(
        &self,
        raw_table_id: i64,
        app: &str,
        generation: i64,
        max_batch_events: usize,
        committed: i64,
    ) -> Arc<TableLive> {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        match tables.get(&raw_table_id) {
            Some(t) if t.generation == generation && t.app == app => t.clone(),
            _ => {
                let table = Arc::new(TableLive {
                    raw_table_id,
                    app: app.to_string(),
                    generation,
                    bound: (4 * max_batch_events).max(100_000),
                    chunks: Mutex::new(Chunks {
                        after: committed,
                        upto: committed,
                        list: VecDeque::new(),
                        events: 0,
                    }),
                    upto: AtomicI64::new(committed),
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

    fn held(live: &TableLive, after: i64) -> Option<Vec<i64>> {
        live.since(after).map(|(chunks, _)| {
            chunks
                .iter()
                .flat_map(|c| c.offsets.iter().copied().filter(|o| *o > after))
                .collect()
        })
    }

    #[test]
    fn chunks_hold_every_event_after_a_point_until_their_commit() {
        let live = Live::default();
        let table = live.follow(1, "app", 7, 10, 0);
        assert!(!table.push(chunk(&[1, 2, 4], 4)));
        // A reader that started again sends what is held once more: left out.
        table.push(chunk(&[2, 4, 5], 6));
        assert_eq!(table.upto(), 6);
        assert_eq!(held(&table, 0), Some(vec![1, 2, 4, 5]));
        assert_eq!(held(&table, 4), Some(vec![5]));
        table.trim(4);
        assert_eq!(held(&table, 4), Some(vec![5]));
        // Events up to 4 are dropped: whoever holds less reads the table instead.
        assert_eq!(held(&table, 3), None);
        // A reader starting past what is held leaves a gap: nothing before it is offered.
        table.start_at(20);
        assert_eq!(held(&table, 6), None);
        assert_eq!(held(&table, 19), Some(vec![]));
        // The same generation is the same table; another one starts afresh.
        assert!(Arc::ptr_eq(&table, &live.follow(1, "app", 7, 10, 0)));
        assert_eq!(live.follow(1, "app", 8, 10, 30).upto(), 30);
        live.stop(1, 7);
        assert!(live.table(1).is_some());
        live.stop(1, 8);
        assert!(live.table(1).is_none());
    }

    #[test]
    fn a_table_over_its_bound_says_so_until_a_commit_drops_chunks() {
        let live = Live::default();
        let table = live.follow(1, "app", 1, 1, 0);
        let offsets: Vec<i64> = (1..=100_001).collect();
        assert!(table.push(chunk(&offsets, 100_001)));
        table.trim(100_001);
        assert!(!table.push(chunk(&[100_002], 100_002)));
    }
}
