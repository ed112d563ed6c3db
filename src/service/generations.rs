//! Vector generations and snapshot files nobody serves any more, dropped in the background.

use crate::store::Deleted;
use crate::AppState;

/// How long a retired generation is kept before it is dropped: a request that resolved its
/// version just before the publish may still read it.
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Drop generations nobody serves, in the background (after a grace period), a chunk per
/// statement.
pub(crate) fn drop(state: &AppState, generations: Vec<i64>) {
    if generations.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RETIRED_GRACE).await;
        for g in generations {
            if let Err(e) = state.store.drop_generation(g).await {
                tracing::warn!(generation = g, error = %e, "could not drop a generation; the sweep retries");
            }
        }
    });
}

/// What a deleted feature or version left: its vectors and its snapshot files, dropped in the
/// background once the delete has committed.
pub(crate) fn forget(state: &AppState, deleted: Deleted) {
    drop(state, deleted.generations);
    let state = state.clone();
    tokio::spawn(async move {
        for file in deleted.files {
            if let Ok(location) = state.offline.resolve(&file) {
                state.offline.remove_file(&location).await;
            }
        }
    });
}
