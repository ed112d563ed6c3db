//! Scheduled refresh: one scheduler across replicas, chosen by a lease in the database.
//!
//! Every replica runs this loop. Each tick it tries to take or renew the lease (one UPDATE
//! that only the holder, or anyone once the lease expired, can win); only the holder looks for
//! due versions. A holder that dies stops renewing, and another replica takes the lease on its
//! first tick after expiry: within one lease period plus one tick. A due refresh is claimed by
//! moving its next time forward in one conditional UPDATE before it runs, so even two
//! schedulers (a holder stalled past its lease) never run one due refresh twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::{AppState, Shared};
use crate::store::DueRefresh;

use super::compute::{self, Refreshed};

/// Back-off after failures never waits longer than this (or the period, if longer).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often the scheduler looks for new versions of external datasets (commits to an
/// external Delta table, a changed Parquet listing), so their versions show as stale.
const EXTERNAL_POLL: Duration = Duration::from_secs(10);

/// A name for this process as a lease holder: unique across replicas and restarts.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}:{}:{nanos:x}", std::process::id())
}

/// Run the scheduler loop until the app is dropped (when `REFRESH_SCHEDULER` is on).
pub fn spawn(state: &AppState) {
    if !state.config.refresh_scheduler {
        return;
    }
    let weak = Arc::downgrade(&state.0);
    let lease = state.config.scheduler_lease;
    let tick = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    tokio::spawn(async move {
        let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut leader = false;
        let mut observed = tokio::time::Instant::now();
        let mut observing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::time::sleep(tick).await;
            let Some(shared) = weak.upgrade() else { return };
            let state = AppState(shared);
            let held = state
                .store
                .hold_lease(&state.scheduler_id, lease, state.clock.now())
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not renew the scheduler lease");
                    false
                });
            if held != leader {
                tracing::info!(holder = %state.scheduler_id, leader = held, "scheduler lease changed hands");
                leader = held;
            }
            state.metrics.scheduler_leader.set(i64::from(held));
            while tasks.try_join_next().is_some() {}
            if !leader {
                continue;
            }
            super::jobs::fail_abandoned(&state.store, &state.clock, state.config.scheduler_lease)
                .await;
            if observed.elapsed() >= EXTERNAL_POLL
                && observing.as_ref().is_none_or(|t| t.is_finished())
            {
                observed = tokio::time::Instant::now();
                let state = state.clone();
                observing = Some(tokio::spawn(async move { observe_external(&state).await }));
            }
            let free = state.config.compute_workers.saturating_sub(tasks.len());
            if free == 0 {
                continue;
            }
            let due = match state
                .store
                .due_refreshes(state.clock.now(), free as i64 * 2)
                .await
            {
                Ok(due) => {
                    state.metrics.scheduler_passes.inc();
                    due
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read due refreshes");
                    continue;
                }
            };
            for d in due {
                if tasks.len() >= state.config.compute_workers {
                    break;
                }
                if running.lock().map_or(true, |r| r.contains(&d.version_id)) {
                    continue;
                }
                let now = state.clock.now();
                let next = now + chrono::Duration::seconds(d.refresh_every_seconds);
                match state.store.claim_refresh(d.version_id, now, next).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim a due refresh");
                        continue;
                    }
                }
                if let Ok(mut r) = running.lock() {
                    r.insert(d.version_id);
                }
                let (state, running) = (state.clone(), running.clone());
                tasks.spawn(async move {
                    refresh_one(&state, &d).await;
                    if let Ok(mut r) = running.lock() {
                        r.remove(&d.version_id);
                    }
                });
            }
        }
    });
}

/// Record the versions external datasets have gained since they were last read.
async fn observe_external(state: &AppState) {
    let tables = match state.store.list_raw_tables().await {
        Ok(tables) => tables,
        Err(e) => {
            tracing::warn!(error = %e, "could not list raw tables");
            return;
        }
    };
    for table in tables.iter().filter(|t| t.source_format.is_some()) {
        if let Err(e) = super::raw_tables::pin(state, table).await {
            tracing::warn!(table = %table.name, error = %e, "could not look at an external dataset");
        }
    }
}

/// Refresh one version and record the outcome; a failure backs off and touches nothing else.
async fn refresh_one(state: &AppState, due: &DueRefresh) {
    let outcome = compute::refresh(state, due.version_id).await;
    let result = match &outcome {
        Ok(Refreshed::NothingNew) => "nothing_new",
        Ok(Refreshed::Published { .. }) => "succeeded",
        Err(_) => "failed",
    };
    state.metrics.refresh_run(result);
    let recorded = match outcome {
        Ok(done) => {
            if let Refreshed::Published { snapshot_id } = done {
                tracing::info!(
                    feature_id = due.feature_id,
                    version = %due.version,
                    snapshot_id,
                    "refreshed feature version"
                );
            }
            state
                .store
                .refresh_checked(due.version_id, state.clock.now())
                .await
        }
        Err(e) => {
            let wait = backoff(due.refresh_every_seconds, due.refresh_failures + 1);
            tracing::warn!(
                feature_id = due.feature_id,
                version = %due.version,
                error = %e.public_detail(),
                retry_in_seconds = wait.as_secs(),
                "scheduled refresh failed"
            );
            let retry_at = state.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
            state.store.refresh_failed(due.version_id, retry_at).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record a refresh");
    }
}

/// The wait after `failures` failures in a row: the period doubled each time, at most an hour
/// (or the period, when that is longer).
fn backoff(period_seconds: i64, failures: i32) -> Duration {
    let period = Duration::from_secs(period_seconds.max(1) as u64);
    let doubled = period.saturating_mul(1u32 << failures.clamp(0, 20));
    doubled.min(MAX_BACKOFF.max(period))
}

/// Give the lease up at shutdown, so another replica takes over at once.
pub async fn release(shared: &Shared) {
    if let Err(e) = shared.store.release_lease(&shared.scheduler_id).await {
        tracing::warn!(error = %e, "could not release the scheduler lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_the_period_up_to_an_hour() {
        assert_eq!(backoff(10, 1), Duration::from_secs(20));
        assert_eq!(backoff(10, 3), Duration::from_secs(80));
        assert_eq!(backoff(10, 40), Duration::from_secs(3600));
        assert_eq!(backoff(7200, 2), Duration::from_secs(7200));
    }
}
