//! A `redis-server` of a test's own, to stop, restart and roll back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct RedisServer {
    pub port: u16,
    child: Child,
    /// Where it keeps its snapshot, when started with one.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Keeps nothing on disk.
    pub fn start(port: u16) -> RedisServer {
        Self::launch(port, None)
    }

    /// Loads `dir/dump.rdb` at start if present; `save()` writes it.
    pub fn start_with_snapshot_in(port: u16, dir: &std::path::Path) -> RedisServer {
        Self::launch(port, Some(dir.to_path_buf()))
    }

    fn launch(port: u16, dir: Option<std::path::PathBuf>) -> RedisServer {
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
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        RedisServer { port, child, dir }
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
