//! A compute worker's failure as the client is told it.

use super::ServiceError;
use crate::worker::{ComputeError, FailureKind};

/// Overload is `Overloaded`, a fault on our side a `Fault`, and anything about the job
/// `Invalid` under `prefix`.
pub(crate) fn worker_error(e: ComputeError, prefix: &str) -> ServiceError {
    match e {
        ComputeError::Overloaded { .. } => ServiceError::Overloaded(e.to_string()),
        ComputeError::Io(_) | ComputeError::Refused(FailureKind::Input, _) => {
            ServiceError::fault(e)
        }
        ComputeError::Refused(FailureKind::Request, reason) => ServiceError::Invalid(reason),
        e => ServiceError::Invalid(format!("{prefix}: {e}")),
    }
}
