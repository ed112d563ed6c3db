//! One clock for every replica: the database's. Each replica measures how far its own clock is
//! from the database's (at start and every `CALIBRATION_PERIOD`) and reads the time as its own
//! plus that offset. A decision that crosses replicas (when a compute's snapshot becomes valid,
//! when a job counts as abandoned, when a refresh is due, what retention prunes) then agrees
//! across them, whatever their clocks say.
//!
//! Measured like NTP does: the database's time is taken to be halfway through the round trip
//! that read it, and of a few reads the quickest is kept. An offset within the round trip's
//! uncertainty (and SQLite's millisecond resolution) is no offset: replicas whose clocks agree
//! are never nudged by measurement noise.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError};

/// How often a replica re-measures its offset from the database's clock.
pub const CALIBRATION_PERIOD: Duration = Duration::from_secs(30);
/// Reads of the database's clock per measurement; the quickest round trip wins.
const SAMPLES: usize = 3;
/// What a measurement cannot tell from zero beyond half its round trip: SQLite's resolution.
const RESOLUTION_MICROS: i64 = 1_000;

pub struct Clock {
    /// The test-only skew (`FEATURE_STORE_TEST_CLOCK_SKEW_SECONDS`), in microseconds.
    skew: i64,
    /// The database's clock minus this process's, as last measured.
    offset: AtomicI64,
    /// The latest time handed out: times never go backwards within a process, even when a
    /// new measurement moves the offset back.
    last: AtomicI64,
}

impl Clock {
    pub fn new(test_skew_seconds: i64) -> Self {
        Clock {
            skew: test_skew_seconds.saturating_mul(1_000_000),
            offset: AtomicI64::new(0),
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// Now, on the database's clock, to the microsecond (what both databases keep, so what a
    /// write returns equals what a later read returns).
    pub fn now(&self) -> DateTime<Utc> {
        let t = self.local_micros() + self.offset.load(Ordering::Relaxed);
        let t = t.max(self.last.fetch_max(t, Ordering::Relaxed));
        DateTime::from_timestamp_micros(t).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The database's clock minus this process's, in microseconds, as last measured.
    pub fn offset_micros(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Measure the offset from the database's clock and use it from now on.
    pub async fn calibrate(&self, store: &Store) -> Result<(), StoreError> {
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..SAMPLES {
            let sent = self.local_micros();
            let database = store.database_micros().await?;
            let received = self.local_micros();
            let trip = received - sent;
            let offset = database - (sent + trip / 2);
            if best.is_none_or(|(t, _)| trip < t) {
                best = Some((trip, offset));
            }
        }
        if let Some((trip, offset)) = best {
            let offset = if offset.abs() <= trip / 2 + RESOLUTION_MICROS {
                0
            } else {
                offset
            };
            let before = self.offset.swap(offset, Ordering::Relaxed);
            if (before - offset).abs() > RESOLUTION_MICROS {
                tracing::info!(
                    offset_ms = offset / 1000,
                    "this replica's clock differs from the database's; using the database's"
                );
            }
        }
        Ok(())
    }

    fn local_micros(&self) -> i64 {
        Utc::now().timestamp_micros() + self.skew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_never_go_backwards_when_the_offset_moves_back() {
        let clock = Clock::new(0);
        clock.offset.store(60_000_000, Ordering::Relaxed);
        let ahead = clock.now();
        clock.offset.store(0, Ordering::Relaxed);
        assert!(clock.now() >= ahead);
    }

    #[test]
    fn a_skewed_clock_reads_off_until_calibrated() {
        let clock = Clock::new(3600);
        let off = clock.now() - Utc::now();
        assert!(off > chrono::Duration::seconds(3590), "{off}");
    }

    #[tokio::test]
    async fn calibration_brings_a_skewed_clock_back_to_the_databases() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}/clock.db", dir.path().display());
        let store = Store::connect(&url, Duration::from_secs(5))
            .await
            .expect("store");
        let clock = Clock::new(-3600);
        clock.calibrate(&store).await.expect("calibrate");
        let off = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(off < 50, "{off} ms off after calibration");
        assert!((clock.offset_micros() - 3_600_000_000).abs() < 50_000);
    }
}
