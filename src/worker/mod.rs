//! Feature SQL runs in worker processes, never in the serving process.
//!
//! A worker is this same binary started as `feature-store compute-worker`. The server (`pool`)
//! starts one per job with OS-enforced limits (address-space data limit, CPU time, a lower
//! scheduling priority, death with its parent), writes the job and its input rows as Arrow IPC
//! to the worker's stdin and reads the reply and result as Arrow IPC from its stdout. At the
//! deadline the worker is killed, so its memory and cores come back at once; a worker that
//! crashes is an answer about that job, not about the server.

pub mod child;
pub mod pool;
pub mod protocol;

pub use pool::{Admitted, ComputeError, ComputePool, PoolSettings, WorkerOutput};
pub use protocol::{EventTimeLimit, FailureKind, Job};

/// The subcommand that turns this binary into a compute worker.
pub const SUBCOMMAND: &str = "compute-worker";
