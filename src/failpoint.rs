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

pub async fn reach(name: &'static str) {
    let armed = ARMED.get_or_init(|| {
        std::env::var("FEATURE_STORE_FAILPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if armed.as_deref() == Some(name) {
        tracing::warn!(
            failpoint = name,
            "failpoint reached; waiting here to be killed"
        );
        std::future::pending::<()>().await;
    }
}
