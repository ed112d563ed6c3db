//! What a committed change changed, announced in one place: the caches advance past its change
//! counter at once (lookups read before it stop being served, here and, through Redis or the
//! poller, on other replicas; with Redis, the announcement waits out the epoch lease, so the
//! change is served everywhere once it returns), a deleted feature's online state goes, and what it left behind
//! (vector generations nobody serves, snapshot files nobody reads) is dropped in the background.

use super::AppState;
use crate::offline::OfflineStore;
use crate::store::{Changed, Store};

/// How long a retired generation is kept before it is dropped: a request that resolved its
/// version just before the publish may still read it.
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tell this replica's caches what `changed` changed and drop what it left. Call it right
/// after the commit, inside the same `detached` work, so a request that goes away does not
/// skip it.
pub(crate) async fn announce(state: &AppState, changed: Changed) {
    if let Some(change) = changed.change {
        state.cache.committed(change as u64).await;
    }
    if let Some(feature) = changed.feature_deleted {
        state.online.forget(feature);
    }
    for retired in &changed.retired {
        if let Some(version_id) = retired.version_id {
            state
                .cache
                .drop_snapshot(version_id, retired.generation)
                .await;
        }
    }
    drop_generations(
        &state.store,
        changed.retired.iter().map(|r| r.generation).collect(),
    );
    remove_files(&state.offline, changed.files);
}

/// Drop generations nobody serves, in the background (after a grace period), a chunk per
/// statement. Also for a generation a failed compute wrote and never published.
pub(crate) fn drop_generations(store: &Store, generations: Vec<i64>) {
    if generations.is_empty() {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RETIRED_GRACE).await;
        for g in generations {
            if let Err(e) = store.drop_generation(g).await {
                tracing::warn!(generation = g, error = %e, "could not drop a generation; the sweep retries");
            }
        }
    });
}

/// Remove snapshot files nobody reads, in the background.
fn remove_files(offline: &OfflineStore, files: Vec<String>) {
    if files.is_empty() {
        return;
    }
    let offline = offline.clone();
    tokio::spawn(async move {
        for file in files {
            if let Ok(location) = offline.resolve(&file) {
                offline.remove_file(&location).await;
            }
        }
    });
}
