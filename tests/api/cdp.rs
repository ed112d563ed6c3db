//! Driving headless chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! commands on the child's fd 3, answers and events on its fd 4, each JSON message ended by a
//! NUL byte), so a test can type into a page and read what it shows. No websocket, no driver.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends close on exec (the child gets copies at 3 and 4, see `launch`).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Start chromium with no page open.
    pub fn launch() -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().expect("temp dir");
        let (commands_read, commands_write) = pipe();
        let (answers_read, answers_write) = pipe();
        let (theirs_in, theirs_out) = (commands_read.as_raw_fd(), answers_write.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. Copies go
        // above 10 first, so placing one at 3 cannot overwrite the other.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(theirs_in, libc::F_DUPFD, 10);
                let b = libc::fcntl(theirs_out, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("run chromium (apt-get install chromium)");
        drop((commands_read, answers_write));
        // A browser that stops answering is killed, so a read from it ends instead of hanging.
        let pid = child.id() as libc::pid_t;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            // SAFETY: kill has no memory effects; at worst the process is already gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        Browser {
            child,
            to: File::from(commands_write),
            from: BufReader::new(File::from(answers_read)),
            next: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Send a command (to the attached page, once there is one) and return its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut message = json!({"id": self.next, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut raw = Vec::new();
            let n = self
                .from
                .read_until(0, &mut raw)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed its pipe");
            raw.pop();
            let answer: Value = serde_json::from_slice(&raw).expect("a JSON message");
            if answer["id"] == json!(self.next) {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Open `url` in a new page and talk to that page from now on.
    pub fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = attached["sessionId"].as_str().map(str::to_string);
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Evaluate `condition` every 50 ms until it is true; false after 15 s.
    pub fn wait_for(&mut self, condition: &str) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if self.eval(condition) == json!(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
