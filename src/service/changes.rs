//! Telling this replica about changes committed by others: the database's change counter,
//! polled. This is what bounds staleness when Redis cannot be trusted (or is not used).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::AppState;

/// How often each replica reads the change counter: the bound on how long a change committed
/// elsewhere can go unseen here when Redis did not carry it.
pub const POLL_PERIOD: Duration = Duration::from_millis(250);

/// Poll until the app is dropped. A failed read is logged once per outage and retried.
pub fn spawn_poller(state: &AppState) {
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            match shared.store.change_state().await {
                Ok(now) => {
                    shared.cache.advance(now.changes.max(0) as u64).await;
                    if failing {
                        tracing::info!("change counter readable again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "could not read the change counter; retrying");
                        failing = true;
                    }
                }
            }
        }
    });
}

/// How often SQLite's write-ahead log is copied into the database file.
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(1);

/// Checkpoint SQLite's log in the background until the app is dropped (nothing on Postgres):
/// a large publish leaves a long log, and copying it inside some later request's commit
/// would hold SQLite's one writer meanwhile.
pub fn spawn_checkpointer(state: &AppState) {
    if state.store.backend() != "sqlite" {
        return;
    }
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(CHECKPOINT_PERIOD).await;
            let Some(shared) = weak.upgrade() else { return };
            match shared.store.checkpoint().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "could not checkpoint the SQLite log; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}
