//! Feature SQL runs in worker processes, never in the serving process.
//!
//! A worker is this same binary started as `feature-store compute-worker`. The server (`pool`)
//! starts one per job with OS-enforced limits (address-space data limit, CPU time, a lower
//! scheduling priority, death with its parent) and an empty environment, and sends it the job:
//! the SQL and the files of one table version (or, for rows sent in a request, those rows as
//! Arrow IPC). The worker scans the files itself, writes the result as a snapshot file, and
//! streams the vectors back in chunks, which the server writes to the database as they come.
//! At the deadline the worker is killed, so its memory and cores come back at once; a worker
//! that crashes is an answer about that job, not about the server.
//!
//! Everything else whose size a user's data decides runs the same way: a training set (the
//! request body is piped in, the answer streams out through the server to the client), drift
//! between two snapshots, and statistics of a snapshot made before they were kept.

pub mod child;
pub mod pool;
pub mod protocol;

pub use pool::{Admitted, ComputeError, ComputePool, PoolSettings, Running};
pub use protocol::{ComputeJob, EventTimeLimit, FailureKind, Input, Job, PreviewJob, Reply, Task};

/// The subcommand that turns this binary into a compute worker.
pub const SUBCOMMAND: &str = "compute-worker";
