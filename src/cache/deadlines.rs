//! The age limit of what the in-process tier holds: each entry keeps the instant it stops
//! being served, in milliseconds from the holder's start (a `u64` beside the entry, compared
//! on a hit, rather than a timer or an eviction pass).

use std::time::{Duration, Instant};

pub struct Deadlines {
    started: Instant,
    ttl_ms: u64,
}

impl Deadlines {
    /// Entries served for `ttl` after they are put.
    pub fn new(ttl: Duration) -> Deadlines {
        Deadlines {
            started: Instant::now(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Now, in milliseconds from the start. Inline: a cached GET asks it once.
    #[inline]
    pub fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The deadline of an entry put now.
    #[inline]
    pub fn for_one_put_now(&self) -> u64 {
        self.now().saturating_add(self.ttl_ms)
    }
}
