//! The server's side: admit jobs (a fixed number of workers, a bounded queue), start a worker
//! process per job under OS limits, feed it, read its reply, and kill it at the deadline.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::child::PANIC_MARK;
use super::protocol::{self, FailureKind, Job};
use super::SUBCOMMAND;
use crate::engine::result::{self, EncodedVector};

/// Rust's allocation-failure message: what a worker prints when it hits its memory limit.
const ALLOC_FAILED: &str = "memory allocation of";
/// How much of a worker's stderr is kept to explain a crash.
const STDERR_TAIL: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The binary to start as a worker (this server's own executable).
    pub program: PathBuf,
    /// Workers running at once.
    pub workers: usize,
    /// Jobs that may wait for a worker; past this, 503.
    pub queue: usize,
    /// Polars threads in each worker.
    pub threads: usize,
    pub memory_limit_mb: u64,
    pub timeout: Duration,
    /// A result larger than this (as it crosses the pipe) is refused.
    pub max_result_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("all {workers} compute workers are busy and {queue} computes are already waiting; retry later")]
    Overloaded { workers: usize, queue: usize },
    #[error("the computation exceeded the time limit of {}", seconds(.0))]
    TimedOut(Duration),
    #[error("the computation exceeded the memory limit of {0} MiB")]
    OutOfMemory(u64),
    #[error("the computation's result is larger than the limit of {} MiB", .0 / (1024 * 1024))]
    ResultTooLarge(usize),
    /// The engine refused the job or its result, with the engine's reason.
    #[error("{1}")]
    Refused(FailureKind, String),
    /// The worker died without replying (a panic that aborts, a signal).
    #[error("the compute worker crashed: {0}")]
    Crashed(String),
    /// The server could not start or talk to a worker: a deployment problem, not the job's.
    #[error("could not run a compute worker: {0}")]
    Io(#[source] io::Error),
}

fn seconds(d: &Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[derive(Debug)]
pub struct WorkerOutput {
    /// Output column -> type name.
    pub output_schema: BTreeMap<String, String>,
    /// Empty for a dry run.
    pub vectors: Vec<EncodedVector>,
    /// The typed result as a stored snapshot (`result::snapshot_to_ipc`); empty for a dry run.
    pub snapshot: Vec<u8>,
    /// The snapshot's statistics as JSON (`engine::stats`); `None` for a dry run.
    pub stats: Option<String>,
    /// How long the worker spent on them.
    pub stats_time: std::time::Duration,
}

pub struct ComputePool {
    settings: PoolSettings,
    permits: Semaphore,
    waiting: AtomicUsize,
    /// Process ids of workers started and not yet reaped.
    live: Mutex<HashSet<u32>>,
}

/// Keeps a worker's pid in `live` until the job is over, however it ends.
struct Live<'a>(&'a Mutex<HashSet<u32>>, u32);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.0.lock() {
            live.remove(&self.1);
        }
    }
}

/// A worker slot, held while a job runs.
pub struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
}

/// Counts a job as waiting until it gets a worker or gives up (its request went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ComputePool {
    pub fn new(settings: PoolSettings) -> Self {
        ComputePool {
            permits: Semaphore::new(settings.workers.max(1)),
            waiting: AtomicUsize::new(0),
            live: Mutex::new(HashSet::new()),
            settings,
        }
    }

    /// Workers running right now.
    pub fn running(&self) -> usize {
        self.settings
            .workers
            .max(1)
            .saturating_sub(self.permits.available_permits())
    }

    /// Process ids of the workers running right now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.live
            .lock()
            .map(|live| live.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Computes waiting for a worker right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Run `job` over `batches` (Arrow IPC files of the raw table's columns) in a worker.
    pub async fn run(&self, job: &Job, batches: &[Vec<u8>]) -> Result<WorkerOutput, ComputeError> {
        let admitted = self.admit().await?;
        self.run_admitted(admitted, job, batches).await
    }

    /// Run `job` in the worker slot `_admitted` holds (from `admit`).
    pub async fn run_admitted(
        &self,
        _admitted: Admitted<'_>,
        job: &Job,
        batches: &[Vec<u8>],
    ) -> Result<WorkerOutput, ComputeError> {
        let started = std::time::Instant::now();
        let mut child = self.spawn()?;
        let _live = child.id().map(|pid| {
            if let Ok(mut live) = self.live.lock() {
                live.insert(pid);
            }
            Live(&self.live, pid)
        });
        let deadline = self.settings.timeout;
        let talk = talk(&mut child, job, batches, self.settings.max_result_bytes);
        let (stdout, stderr, status, overflowed) = match tokio::time::timeout(deadline, talk).await
        {
            Ok(done) => done?,
            Err(_) => {
                // Killed, not asked: its memory and cores come back now, not when it is done.
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(ComputeError::TimedOut(deadline));
            }
        };
        let talked = started.elapsed();
        if overflowed {
            return Err(ComputeError::ResultTooLarge(self.settings.max_result_bytes));
        }
        if status.success() {
            if let Ok((reply, results)) = protocol::read_reply(&stdout) {
                if let Some((kind, reason)) = reply.failure {
                    return Err(ComputeError::Refused(kind, reason));
                }
                let (vectors, snapshot, stats) = match results {
                    Some(protocol::Results {
                        vectors,
                        snapshot,
                        stats,
                    }) => {
                        let vectors =
                            tokio::task::spawn_blocking(move || result::vectors_from_ipc(&vectors))
                                .await
                                .map_err(|e| ComputeError::Io(io::Error::other(e)))?
                                .map_err(ComputeError::Crashed)?;
                        let stats = String::from_utf8(stats)
                            .map_err(|e| ComputeError::Crashed(e.to_string()))?;
                        (vectors, snapshot, Some(stats))
                    }
                    None => (Vec::new(), Vec::new(), None),
                };
                tracing::debug!(
                    worker_ms = talked.as_millis() as u64,
                    decode_ms = (started.elapsed() - talked).as_millis() as u64,
                    vectors = vectors.len(),
                    "compute worker finished"
                );
                return Ok(WorkerOutput {
                    output_schema: reply.output_schema,
                    stats_time: std::time::Duration::from_micros(reply.stats_micros),
                    vectors,
                    snapshot,
                    stats,
                });
            }
        }
        Err(self.explain_death(status, &stderr))
    }

    /// Wait for a worker slot in the bounded queue; `Overloaded` at once when it is full.
    pub async fn admit(&self) -> Result<Admitted<'_>, ComputeError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(Admitted { _permit: permit });
        }
        let overloaded = ComputeError::Overloaded {
            workers: self.settings.workers,
            queue: self.settings.queue,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded);
        }
        let _waiting = Waiting(&self.waiting);
        self.permits
            .acquire()
            .await
            .map(|permit| Admitted { _permit: permit })
            .map_err(|_| overloaded)
    }

    fn spawn(&self) -> Result<Child, ComputeError> {
        let s = &self.settings;
        let mut command = Command::new(&s.program);
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("POLARS_MAX_THREADS", s.threads.max(1).to_string())
            .env("RUST_BACKTRACE", "0");
        let memory = s.memory_limit_mb.saturating_mul(1024 * 1024);
        // CPU seconds across all of its threads: only a backstop for a worker whose server
        // died without killing it; the wall-clock deadline above normally comes first.
        let cpu = (s.timeout.as_secs() + 1) * s.threads.max(1) as u64 + 5;
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (setrlimit, setpriority, prctl) on values copied in beforehand.
        unsafe {
            command.pre_exec(move || limit_self(memory, cpu));
        }
        command.spawn().map_err(ComputeError::Io)
    }

    fn explain_death(&self, status: ExitStatus, stderr: &str) -> ComputeError {
        if stderr.contains(ALLOC_FAILED) {
            return ComputeError::OutOfMemory(self.settings.memory_limit_mb);
        }
        if let Some(at) = stderr.find(PANIC_MARK) {
            let message = stderr[at + PANIC_MARK.len()..].lines().next().unwrap_or("");
            return ComputeError::Crashed(format!("the engine panicked: {message}"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                return ComputeError::Crashed(format!("it was stopped by signal {signal}"));
            }
        }
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        ComputeError::Crashed(match last {
            Some(line) => line.chars().take(500).collect(),
            None => format!("it exited with {status}"),
        })
    }
}

/// Write the job, read the reply and stderr, wait for the exit: all at once, so neither side
/// can block the other on a full pipe.
async fn talk(
    child: &mut Child,
    job: &Job,
    batches: &[Vec<u8>],
    max_result: usize,
) -> Result<(Vec<u8>, String, ExitStatus, bool), ComputeError> {
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ComputeError::Io(io::Error::other("worker pipes missing")));
    };
    let prefix = protocol::job_prefix(job, batches.len()).map_err(ComputeError::Io)?;
    let write = async move {
        stdin.write_all(&prefix).await?;
        for batch in batches {
            stdin.write_all(&protocol::blob_prefix(batch.len())).await?;
            stdin.write_all(batch).await?;
        }
        stdin.shutdown().await
    };
    let read = async move {
        // The reply header and framing come on top of the result itself.
        let cap = max_result as u64 + (1 << 20);
        let mut out = Vec::new();
        let read = stdout.take(cap).read_to_end(&mut out).await;
        // Dropping the pipe here makes a worker still writing past the cap fail and exit.
        let overflowed = out.len() as u64 >= cap;
        (read.map(|_| out), overflowed)
    };
    let (written, (read, overflowed), stderr) = tokio::join!(write, read, tail(stderr));
    let status = child.wait().await.map_err(ComputeError::Io)?;
    // A write that failed means the worker stopped reading: it died, and its exit says why.
    let _ = written;
    let stdout = read.map_err(ComputeError::Io)?;
    Ok((stdout, stderr, status, overflowed))
}

/// The last `STDERR_TAIL` bytes a worker printed.
async fn tail(mut stderr: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs in the forked child before exec: the limits the kernel enforces on the worker.
#[cfg(target_os = "linux")]
fn limit_self(memory: u64, cpu_seconds: u64) -> io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct passed by reference and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // RLIMIT_DATA (since Linux 4.7) counts every private writable mapping: the heap, anonymous
    // mmaps (what polars and the allocator use) and thread stacks, but not the mapped binary,
    // so the limit means the memory the query can take.
    set(libc::RLIMIT_DATA, memory)?;
    set(libc::RLIMIT_CPU, cpu_seconds)?;
    // SAFETY: plain system calls on this process with constant arguments.
    unsafe {
        // Serving threads win every contest for a core with a worker.
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        // A worker never outlives the server that started it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    Ok(())
}
