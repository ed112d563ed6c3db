//! A `redis-server` of a test's own, to stop, restart and roll back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port to try: whatever the system would hand out now. It may be taken by the time a
/// server binds it, so every caller checks that its own server got it (`RedisServer::start_free`).
fn candidate_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port")
}

/// A Redis URL nothing answers on: port 1 is privileged and unused here, so connections are
/// refused at once.
pub const UNREACHABLE_REDIS: &str = "redis://127.0.0.1:1";

pub struct RedisServer {
    pub port: u16,
    child: Child,
    /// Where it keeps its snapshot, when started with one.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// On a port of its own; keeps nothing on disk.
    pub fn start_free() -> RedisServer {
        Self::launch_free(None)
    }

    /// On a port of its own; loads `dir/dump.rdb` at start if present, `save()` writes it.
    pub fn start_free_with_snapshot_in(dir: &std::path::Path) -> RedisServer {
        Self::launch_free(Some(dir.to_path_buf()))
    }

    /// Again on `port` (a restart, as the replicas know it); keeps nothing on disk.
    pub fn start(port: u16) -> RedisServer {
        Self::launch(port, None).expect("redis-server could not take its port back")
    }

    /// Again on `port`, from `dir/dump.rdb`.
    pub fn start_with_snapshot_in(port: u16, dir: &std::path::Path) -> RedisServer {
        Self::launch(port, Some(dir.to_path_buf()))
            .expect("redis-server could not take its port back")
    }

    /// A port that another process took between the pick and the bind makes redis-server exit;
    /// then another port is tried.
    fn launch_free(dir: Option<std::path::PathBuf>) -> RedisServer {
        for _ in 0..20 {
            if let Some(server) = Self::launch(candidate_port(), dir.clone()) {
                return server;
            }
        }
        panic!("redis-server found no free port in 20 tries");
    }

    /// `None` when redis-server exited (its port was taken) instead of answering.
    fn launch(port: u16, dir: Option<std::path::PathBuf>) -> Option<RedisServer> {
        let mut args = vec![
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        if let Some(dir) = &dir {
            args.extend(["--dir".into(), dir.display().to_string()]);
            args.extend(["--dbfilename".into(), "dump.rdb".into()]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let mut server = RedisServer { port, child, dir };
        for _ in 0..500 {
            if matches!(server.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            // Up, and ours: whoever answers on the port names its process.
            if server.answering_pid() == Some(server.child.id()) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        server.stop();
        None
    }

    /// The process id of the Redis answering on this port, if one does.
    fn answering_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Write the snapshot now (what a Redis with persistence does on its own schedule).
    pub async fn save(&self) {
        assert!(self.dir.is_some(), "started without a snapshot dir");
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn key_count(&self) -> i64 {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
