//! Redis and FerretDB servers of a test's own, on free loopback ports, for fault tests that stop
//! and restart them (the shared ones from `dev/stack` must stay up for the other tests). The
//! binaries are the ones `dev/stack` installed. Each is killed when dropped.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{eventually, READY_TIMEOUT};

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Sends SIGKILL to `child` and reaps it.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A Redis of a test's own. Killed when dropped.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` (installed by dev/stack) on a free port and waits for PONG.
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (empty: no persistence) on the same port, and waits for PONG.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by dev/stack) starts");
        self.child = Some(child);
        let port = self.port;
        eventually(
            "private redis to answer PING",
            READY_TIMEOUT,
            || async move { answers_ping(port).await.then_some(()) },
        )
        .await;
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answers_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut reply = [0_u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut reply).await.is_ok()
        && &reply == b"+PONG\r\n"
}

/// A FerretDB (SQLite backend) of a test's own, whose data survives a stop and start, like a
/// MongoDB server that goes away for a while. Killed, and its data removed, when dropped.
pub struct PrivateFerret {
    /// Its port.
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
}

impl PrivateFerret {
    /// Starts FerretDB (built by dev/stack) on a free port with an empty data directory.
    pub async fn start() -> PrivateFerret {
        let data =
            std::env::temp_dir().join(format!("sluice-ferret-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(data.join("sqlite")).expect("data directory");
        let mut ferret = PrivateFerret {
            port: free_port(),
            data,
            child: None,
        };
        ferret.restart().await;
        ferret
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and data, and waits until it answers a ping.
    pub async fn restart(&mut self) {
        let child = Command::new(ferret_binary())
            .arg("--handler=sqlite")
            .arg(format!(
                "--sqlite-url=file:{}/",
                self.data.join("sqlite").display()
            ))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--state-dir={}", self.data.display()))
            .args(["--debug-addr=-", "--telemetry=disable", "--log-level=error"])
            .env("DO_NOT_TRACK", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferretdb (built by dev/stack) starts");
        self.child = Some(child);
        let url = self.url();
        eventually("private ferretdb to answer a ping", READY_TIMEOUT, || {
            let url = url.clone();
            async move {
                let store = sluice::store::Store::connect(&url, "ping").await.ok()?;
                store.ping().await.ok()
            }
        })
        .await;
    }

    /// Kills it (SIGKILL); its data stays for the next start.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for PrivateFerret {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Where dev/stack builds FerretDB (its `ferret_dir`).
fn ferret_binary() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let binary = cache.join("ferretdb-v1.24.2-idfix2/bin/ferretdb");
    assert!(
        binary.exists(),
        "{} is missing: run dev/stack up",
        binary.display()
    );
    binary
}
