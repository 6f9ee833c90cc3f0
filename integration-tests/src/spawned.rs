//! Sluice servers and workers as real processes — the binaries `cargo build --workspace --bins`
//! made (dev/test builds them before the tests) — for faults an in-process task cannot stand
//! in for: SIGKILL takes a process's in-flight chunks and open connections with it, SIGTERM
//! exercises the binary's own shutdown. Each is killed when dropped; its log (stderr) is kept
//! under the system temp directory.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::eventually;

/// A running `sluice-server` or `sluice-worker`.
pub struct Spawned {
    child: Child,
    /// The server's address (workers have none).
    pub address: Option<SocketAddr>,
    /// Its stderr.
    pub log: PathBuf,
}

/// The path of a workspace binary next to the running test's profile directory.
pub fn binary(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run cargo build --workspace --bins",
        binary.display()
    );
    binary
}

impl Spawned {
    /// Starts `name` with `env` (on top of the inherited environment), logging to a file
    /// named after `label`.
    pub fn start(name: &str, label: &str, env: &[(String, String)]) -> Spawned {
        let log_dir = std::env::temp_dir().join("sluice-test-logs");
        std::fs::create_dir_all(&log_dir).expect("log directory");
        let log = log_dir.join(format!("{label}.log"));
        let child = Command::new(binary(name))
            .envs(
                env.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|error| panic!("{name} starts: {error}"));
        Spawned {
            child,
            address: None,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, like a crash or an OOM kill, and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "SIGTERM delivered to {}", self.pid());
    }

    /// Waits up to `timeout` for it to exit; its exit status.
    pub async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("the process to exit", timeout, || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    /// Its log so far, for assertions on what it reported.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
