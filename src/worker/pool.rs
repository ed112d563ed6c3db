//! The server's side: admit jobs (a fixed number of workers, a bounded queue), start a worker
//! process per job under OS limits with a cleared environment, send it the job, read its reply
//! and stream its vectors, and kill it at the deadline.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::child::PANIC_MARK;
use tokio_util::codec::FramedRead;

use super::protocol::{self, FailureKind, Frames, Job, Next, Reply, VectorChunk};
use super::SUBCOMMAND;

/// Rust's allocation-failure message: what a worker prints when it hits its memory limit.
const ALLOC_FAILED: &str = "memory allocation of";
/// How much of a worker's stderr is kept to explain a crash.
const STDERR_TAIL: usize = 16 * 1024;
/// Largest vector chunk a worker may send (it sends about 20,000 rows per chunk).
const MAX_CHUNK_BYTES: u64 = 256 << 20;

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
    /// Vectors larger than this in all (as they cross the pipe) are refused.
    pub max_result_bytes: usize,
    /// Where each worker's own temporary directory is made.
    pub scratch: PathBuf,
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
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Cheap to clone: every clone is the same pool.
#[derive(Clone)]
pub struct ComputePool(Arc<Inner>);

struct Inner {
    settings: PoolSettings,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Process ids of workers started and not yet reaped.
    live: Mutex<HashSet<u32>>,
}

/// A worker slot, held while a job runs (and while its vectors are published).
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Counts a job as waiting until it gets a worker or gives up (its request went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A worker that has replied and may still be sending vectors. Dropping it kills the worker.
pub struct Running {
    pool: ComputePool,
    child: Child,
    pid: Option<u32>,
    stdout: FramedRead<ChildStdout, Frames>,
    stderr: Option<JoinHandle<String>>,
    reply: Reply,
    /// Vector bytes read so far, against `max_result_bytes`.
    received: u64,
    _admitted: Admitted,
    /// Dropped after the worker is killed (`Drop` below runs first).
    _scratch: Scratch,
}

/// A worker's own temporary directory (its `TMPDIR`: a dataset's partition files), removed
/// when the worker is done, also when it was killed at the deadline or crashed and could not
/// remove what it wrote. `None` when it could not be made: the worker then gets the server's
/// (only a dataset's spill needs one, and it says so if that fails too).
struct Scratch(Option<std::path::PathBuf>);

/// What a worker's scratch directory is called: `SCRATCH_PREFIX<server pid>-<n>`.
const SCRATCH_PREFIX: &str = "feature-store-worker-";

impl Scratch {
    fn new(parent: &std::path::Path) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = parent.join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Scratch(Some(dir)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "a compute worker's temporary directory could not be made; it uses the server's");
                Scratch(None)
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        // Gigabytes of partition files may be there: not on a runtime thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || std::fs::remove_dir_all(dir));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Scratch directories under `parent` left by a server that is gone (killed while a worker
/// spilled), removed when a pool starts: a directory of a live process is left alone, and so
/// is one changed within `settled` (a server in another PID namespace sharing this `TMPDIR`
/// looks gone from here, but its worker's directory cannot outlive that worker's deadline).
#[cfg(target_os = "linux")]
fn remove_orphaned_scratch(parent: &std::path::Path, settled: Duration) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|at| at.elapsed().map_or(true, |age| age < settled))
            .unwrap_or(true);
        if !recent && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let (Some(pid), Ok(mut live)) = (self.pid, self.pool.0.live.lock()) {
            live.remove(&pid);
        }
    }
}

impl ComputePool {
    pub fn new(settings: PoolSettings) -> Self {
        #[cfg(target_os = "linux")]
        remove_orphaned_scratch(
            &settings.scratch,
            settings.timeout.max(Duration::from_secs(3600)),
        );
        ComputePool(Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.workers.max(1))),
            waiting: AtomicUsize::new(0),
            live: Mutex::new(HashSet::new()),
            settings,
        }))
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.0.settings
    }

    /// Workers running right now.
    pub fn running(&self) -> usize {
        self.0
            .settings
            .workers
            .max(1)
            .saturating_sub(self.0.permits.available_permits())
    }

    /// Process ids of the workers running right now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.0
            .live
            .lock()
            .map(|live| live.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Computes waiting for a worker right now.
    pub fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::Acquire)
    }

    /// Wait for a worker slot in the bounded queue; `Overloaded` at once when it is full.
    pub async fn admit(&self) -> Result<Admitted, ComputeError> {
        let permits = self.0.permits.clone();
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Ok(Admitted { _permit: permit });
        }
        let overloaded = ComputeError::Overloaded {
            workers: self.0.settings.workers,
            queue: self.0.settings.queue,
        };
        if self.0.waiting.fetch_add(1, Ordering::AcqRel) >= self.0.settings.queue {
            self.0.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded);
        }
        let _waiting = Waiting(&self.0.waiting);
        permits
            .acquire_owned()
            .await
            .map(|permit| Admitted { _permit: permit })
            .map_err(|_| overloaded)
    }

    /// Admit, run `job` and read its whole reply and payload (jobs that send no vectors:
    /// dry runs, previews, history-only snapshots).
    pub async fn run(
        &self,
        job: &Job,
        piped: Option<&[u8]>,
    ) -> Result<(Reply, Option<Vec<u8>>), ComputeError> {
        let admitted = self.admit().await?;
        let mut running = self.start(admitted, job, piped).await?;
        let payload = running.payload().await?;
        let reply = running.reply.clone();
        running.finish().await?;
        Ok((reply, payload))
    }

    /// Start `job` in the slot `admitted` holds and wait for its reply, within the time limit.
    /// A refusal or a crash comes back as the error; a success as a `Running` worker, from
    /// which vectors may still be read.
    pub async fn start(
        &self,
        admitted: Admitted,
        job: &Job,
        piped: Option<&[u8]>,
    ) -> Result<Running, ComputeError> {
        let scratch = Scratch::new(&self.0.settings.scratch);
        let mut child = self.spawn(&scratch)?;
        let pid = child.id();
        if let (Some(pid), Ok(mut live)) = (pid, self.0.live.lock()) {
            live.insert(pid);
        }
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ComputeError::Io(io::Error::other("worker pipes missing")));
        };
        #[cfg(target_os = "linux")]
        {
            widen_pipe(&stdin);
            widen_pipe(&stdout);
        }
        let mut running = Running {
            pool: self.clone(),
            child,
            pid,
            stdout: FramedRead::with_capacity(stdout, Frames::default(), 1 << 20),
            stderr: Some(tokio::spawn(tail(stderr))),
            reply: Reply::default(),
            received: 0,
            _admitted: admitted,
            _scratch: scratch,
        };
        let message =
            protocol::job_prefix(job, piped.map(<[u8]>::len)).map_err(ComputeError::Io)?;
        let deadline = self.0.settings.timeout;
        let talk = async {
            // A write that fails means the worker stopped reading: it died, and its exit (or
            // its reply) says why. Piped rows go from the caller's buffer, not a copy.
            let write = async move {
                if stdin.write_all(&message).await.is_ok() {
                    if let Some(piped) = piped {
                        let _ = stdin.write_all(piped).await;
                    }
                }
                let _ = stdin.shutdown().await;
            };
            let (_, reply) = tokio::join!(write, read_reply(&mut running.stdout));
            reply
        };
        let reply = match tokio::time::timeout(deadline, talk).await {
            Ok(reply) => reply,
            Err(_) => {
                // Killed and reaped before the answer: its memory and cores are back when the
                // client hears of the limit, and no zombie is left for the reaper to find.
                let _ = running.child.kill().await;
                return Err(ComputeError::TimedOut(deadline));
            }
        };
        match reply {
            Ok(reply) => {
                if let Some((kind, reason)) = reply.failure {
                    let _ = running.child.wait().await;
                    return Err(ComputeError::Refused(kind, reason));
                }
                running.reply = reply;
                Ok(running)
            }
            Err(_) => Err(running.died().await),
        }
    }

    fn spawn(&self, scratch: &Scratch) -> Result<Child, ComputeError> {
        let s = &self.0.settings;
        let mut command = Command::new(&s.program);
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // A worker gets nothing of the server's environment (database URL, API keys,
            // credentials): its job says all it needs.
            .env_clear()
            .env("POLARS_MAX_THREADS", s.threads.max(1).to_string())
            .env(crate::alloc::WORKER_ALLOCATOR_VARIABLE, "1")
            .env("RUST_BACKTRACE", "0");
        // Its own temporary directory, or the server's when that could not be made.
        match &scratch.0 {
            Some(dir) => command.env("TMPDIR", dir),
            None => command.env("TMPDIR", std::env::temp_dir()),
        };
        // The crash-test hook (`crate::failpoint`), so a test can stop a worker at a point.
        for kept in ["PATH", "LANG", "FEATURE_STORE_FAILPOINT"] {
            if let Some(value) = std::env::var_os(kept) {
                command.env(kept, value);
            }
        }
        let memory = s.memory_limit_mb.saturating_mul(1024 * 1024);
        // CPU seconds across all of its threads: only a backstop for a worker whose server
        // died without killing it; the wall-clock deadline normally comes first.
        let cpu = (s.timeout.as_secs() + 1) * s.threads.max(1) as u64 * 2 + 5;
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
            return ComputeError::OutOfMemory(self.0.settings.memory_limit_mb);
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

impl Running {
    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// The next chunk of vectors, or `None` after the last. Each chunk must arrive within the
    /// time limit; a worker that stalls is killed.
    pub async fn next_chunk(&mut self) -> Result<Option<VectorChunk>, ComputeError> {
        let max = self.pool.0.settings.max_result_bytes as u64;
        let room = MAX_CHUNK_BYTES.min(max.saturating_sub(self.received));
        let frame = self.read(Next::Chunk, room as usize).await?;
        let chunk = match VectorChunk::from_frame(frame) {
            Ok(chunk) => chunk,
            Err(_) => return Err(self.died().await),
        };
        self.received += chunk.bytes.len() as u64;
        Ok((chunk.rows > 0 || !chunk.bytes.is_empty()).then_some(chunk))
    }

    /// The next frame of the byte stream that follows the reply (a training set's answer), or
    /// `None` after the last. Each frame must arrive within the time limit.
    pub async fn next_frame(&mut self) -> Result<Option<bytes::Bytes>, ComputeError> {
        // A worker never sends a longer frame: one is a broken worker, not a large result.
        let frame = match self.read(Next::Blob, protocol::STREAM_FRAME_BYTES).await {
            Err(ComputeError::ResultTooLarge(_)) => return Err(self.died().await),
            read => read?,
        };
        Ok((!frame.is_empty()).then(|| frame.freeze()))
    }

    /// The next of the blobs that follow the reply one after another (an aggregation
    /// feature's events, a batch each), or `None` after the empty one that ends them. Each
    /// is at most the result limit and must arrive within the time limit.
    pub async fn next_blob(&mut self) -> Result<Option<bytes::BytesMut>, ComputeError> {
        let cap = self.pool.0.settings.max_result_bytes;
        let blob = self.read(Next::Blob, cap).await?;
        Ok((!blob.is_empty()).then_some(blob))
    }

    /// The payload blob that follows the reply, when it says there is one.
    pub async fn payload(&mut self) -> Result<Option<Vec<u8>>, ComputeError> {
        if !self.reply.payload {
            return Ok(None);
        }
        let cap = self.pool.0.settings.max_result_bytes;
        Ok(Some(self.read(Next::Blob, cap).await?.to_vec()))
    }

    /// The next frame, of at most `max` bytes, within the time limit: the one reader of a
    /// worker's output after its reply. A frame over `max` is a result too large (the worker
    /// is dropped, so killed, by the caller); an early end or a broken frame, a dead worker.
    async fn read(&mut self, next: Next, max: usize) -> Result<bytes::BytesMut, ComputeError> {
        let deadline = self.pool.0.settings.timeout;
        self.stdout.decoder_mut().expect(next, max);
        match tokio::time::timeout(deadline, self.stdout.next()).await {
            Err(_) => Err(ComputeError::TimedOut(deadline)),
            Ok(Some(Ok(frame))) => Ok(frame),
            Ok(Some(Err(e))) if protocol::is_too_long(&e) => Err(ComputeError::ResultTooLarge(
                self.pool.0.settings.max_result_bytes,
            )),
            Ok(Some(Err(_))) | Ok(None) => Err(self.died().await),
        }
    }

    /// Stop the worker before it has sent everything, and wait until it is gone: its memory
    /// and its slot are back before the caller answers.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Wait for the worker to exit once everything was read.
    pub async fn finish(mut self) -> Result<(), ComputeError> {
        let status = self.child.wait().await.map_err(ComputeError::Io)?;
        if status.success() {
            return Ok(());
        }
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        Err(self.pool.explain_death(status, &stderr))
    }

    /// Why the worker stopped talking: its exit status and what it printed.
    async fn died(&mut self) -> ComputeError {
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => return ComputeError::Io(e),
        };
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        self.pool.explain_death(status, &stderr)
    }
}

async fn read_reply(stdout: &mut FramedRead<ChildStdout, Frames>) -> io::Result<Reply> {
    stdout
        .decoder_mut()
        .expect(Next::Reply, protocol::MAX_HEADER_BYTES as usize);
    let frame = stdout
        .next()
        .await
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no reply"))??;
    serde_json::from_slice(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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

/// Bytes a pipe to or from a worker holds (Linux's default is 64 KiB, and 1 MiB is the most an
/// unprivileged process may ask for by default).
#[cfg(target_os = "linux")]
const PIPE_BYTES: libc::c_int = 1 << 20;

/// A training set's rows go into a worker and its answer (about 100 MB for 1M rows × 12
/// columns) comes out through these pipes, and each time one fills, its writer sleeps until the
/// reader has run: with 1 MiB instead of 64 KiB, 16 × fewer such switches on two cores. Best
/// effort: where the system refuses the size, the pipe keeps the default.
#[cfg(target_os = "linux")]
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor this process owns, with an integer argument.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_pool_starting_removes_the_scratch_of_servers_that_are_gone_and_keeps_live_ones() {
        let parent = tempfile::tempdir().unwrap();
        // Past Linux's largest pid (2^22): no process has it.
        let gone = parent.path().join(format!("{SCRATCH_PREFIX}99999999-3"));
        let live = parent
            .path()
            .join(format!("{SCRATCH_PREFIX}{}-0", std::process::id()));
        let other = parent.path().join("feature-store-spill-99999999-1");
        for dir in [&gone, &live, &other] {
            std::fs::create_dir_all(dir.join("inner")).unwrap();
            std::fs::write(dir.join("inner").join("00.blobs"), b"x").unwrap();
        }
        remove_orphaned_scratch(parent.path(), Duration::from_secs(3600));
        assert!(
            gone.exists(),
            "one changed within the hour is kept: its server may be alive elsewhere"
        );
        remove_orphaned_scratch(parent.path(), Duration::ZERO);
        assert!(!gone.exists(), "a dead server's scratch is removed");
        assert!(live.exists(), "a live server's scratch is kept");
        assert!(
            other.exists(),
            "what is not a worker's scratch is left alone"
        );
    }

    #[test]
    fn a_scratch_directory_goes_when_it_is_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(parent.path());
        let dir = scratch.0.clone().expect("made");
        std::fs::write(dir.join("part"), b"x").unwrap();
        drop(scratch);
        assert!(!dir.exists());
    }
}
