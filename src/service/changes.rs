//! Telling this replica about changes committed by others: the database's change counter,
//! polled. This is what bounds staleness when Redis cannot be trusted (or is not used).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::AppState;

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
            // Redis first: an epoch read before the database's counter can only be at or
            // below it, unless the database went back.
            let redis_epoch = shared.cache.redis_epoch().await;
            match shared.store.change_state().await {
                Ok(now) => {
                    follow(&shared, now, redis_epoch).await;
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

/// Bring this replica's caches up to the database's change state.
///
/// A counter below what this replica or Redis has seen is a database restored from a backup
/// (or reset): what was cached may name versions it no longer has, or ids it will hand out
/// again. The database is renamed then, by the first replica to notice, and every replica
/// moves to the new name's (empty) entries on its next poll.
async fn follow(shared: &super::Shared, now: crate::store::ChangeState, redis_epoch: Option<u64>) {
    let changes = now.changes.max(0) as u64;
    if now.instance != shared.cache.instance() {
        tracing::info!(instance = %now.instance, "the database was renamed; caches start over");
        shared.cache.rescope(&now.instance, changes).await;
        shared.offline.rename_instance(&now.instance);
        return;
    }
    let seen = shared.cache.known().max(redis_epoch.unwrap_or(0));
    if changes >= seen {
        shared.cache.advance(changes).await;
        return;
    }
    tracing::warn!(
        database = changes,
        cached = seen,
        "the database's change counter went back (restored from a backup?); renaming it so \
         nothing cached before is served"
    );
    let renamed = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    match shared.store.rename_instance(&now.instance, &renamed).await {
        Ok(state) => {
            shared
                .cache
                .rescope(&state.instance, state.changes.max(0) as u64)
                .await;
            shared.offline.rename_instance(&state.instance);
        }
        Err(e) => tracing::warn!(error = %e, "could not rename the database; retrying"),
    }
}

/// Re-measure this replica's offset from the database's clock until the app is dropped.
pub fn spawn_calibrator(state: &AppState) {
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::clock::CALIBRATION_PERIOD).await;
            let Some(shared) = weak.upgrade() else { return };
            if let Err(e) = shared.clock.calibrate(&shared.store).await {
                tracing::warn!(error = %e, "could not read the database's clock; keeping the last offset");
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
