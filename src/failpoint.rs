//! Crash-test hooks. With `FEATURE_STORE_FAILPOINT=<name>` the server stops for good at that
//! point, after logging that it got there, so a test can kill it exactly there (inside a
//! write's transaction) instead of after a guessed sleep. Unset, a hook is one comparison.
//!
//! Written here rather than with the `fail` crate: its pause blocks a runtime thread and it
//! reports through `log`, while this waits as a future and logs through `tracing`.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Where the hooks are: inside the transaction, after the write and before COMMIT.
pub const INGEST_BEFORE_COMMIT: &str = "ingest-before-commit";
pub const PUBLISH_BEFORE_COMMIT: &str = "publish-before-commit";

/// In a compute worker (given this one variable of the server's environment): after writing a
/// part of a training set's dataset, the worker exits as if it had crashed.
pub const DATASET_AFTER_A_PART: &str = "dataset-after-a-part";

pub async fn reach(name: &'static str) {
    if armed(name) {
        tracing::warn!(
            failpoint = name,
            "failpoint reached; waiting here to be killed"
        );
        std::future::pending::<()>().await;
    }
}

/// Whether the hook `name` is the armed one: for processes that cannot wait as a future (a
/// compute worker), which then stop in their own way.
pub fn armed(name: &str) -> bool {
    let armed = ARMED.get_or_init(|| {
        std::env::var("FEATURE_STORE_FAILPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    armed.as_deref() == Some(name)
}
