//! A compute worker's failure as the client is told it.

use crate::error::AppError;
use crate::worker::{ComputeError, FailureKind};

/// Overload is a 503, a server-side fault a 500, and anything about the job a 400 under
/// `prefix`.
pub(crate) fn worker_error(e: ComputeError, prefix: &str) -> AppError {
    match e {
        ComputeError::Overloaded { .. } => AppError::Overloaded(e.to_string()),
        ComputeError::Io(_) | ComputeError::Refused(FailureKind::Input, _) => AppError::internal(e),
        ComputeError::Refused(FailureKind::Request, reason) => AppError::BadRequest(reason),
        e => AppError::BadRequest(format!("{prefix}: {e}")),
    }
}
