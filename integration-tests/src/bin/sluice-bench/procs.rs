//! Real server and worker processes (the release binaries), and what /proc says about any
//! process: CPU seconds and memory are read per process, so Sluice's own cost is measured apart
//! from the stores' and the benchmark client's.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Clock ticks per second for /proc/<pid>/stat times (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;
/// How long a started server gets to report SERVING.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// One running Sluice process, stopped (SIGTERM, then waited for) when dropped.
pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // std can only SIGKILL; a graceful stop goes through kill(1).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of a process, all its threads (from /proc/<pid>/stat).
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, so 12th and 13th after the name.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / TICKS_PER_SECOND)
}

/// Peak resident memory (VmHWM) in MiB.
pub(crate) fn peak_rss_mb(pid: u32) -> Result<f64> {
    status_kb(pid, "VmHWM:").map(|kb| kb / 1024.0)
}

/// Current resident memory (VmRSS) in KiB.
pub(crate) fn rss_kb(pid: u32) -> Result<f64> {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("status value")?
        .parse()?)
}

/// Where the release binaries are and which stores they use.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    pub(crate) bin_dir: PathBuf,
    pub(crate) redis_url: String,
    pub(crate) mongo_url: String,
    pub(crate) log_dir: PathBuf,
}

impl Launcher {
    fn command(&self, binary: &str, namespace: &str, log_name: &str) -> Result<Command> {
        let log = std::fs::File::create(self.log_dir.join(format!("{log_name}.log")))?;
        let mut command = Command::new(self.bin_dir.join(binary));
        command
            .env("SLUICE_REDIS_URL", &self.redis_url)
            .env("SLUICE_MONGO_URL", &self.mongo_url)
            .env("SLUICE_MONGO_DB", namespace)
            .env("SLUICE_KEY_PREFIX", namespace)
            .env("RUST_LOG", "warn")
            .env("SLUICE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(command)
    }

    /// The log file of the server of `namespace`.
    pub(crate) fn server_log(&self, namespace: &str) -> PathBuf {
        self.log_dir.join(format!("{namespace}-server.log"))
    }

    /// Starts a server on a free loopback port and waits until it reports SERVING.
    pub(crate) async fn server(&self, namespace: &str) -> Result<(Proc, SocketAddr)> {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = self
            .command("sluice-server", namespace, &format!("{namespace}-server"))?
            .env("SLUICE_LISTEN", address.to_string())
            .spawn()
            .context("cannot start sluice-server")?;
        let proc = Proc { child };
        wait_for_health(address).await?;
        Ok((proc, address))
    }

    /// Starts worker `index` with `concurrency` chunks in flight.
    pub(crate) fn worker(&self, namespace: &str, index: usize, concurrency: usize) -> Result<Proc> {
        let name = format!("{namespace}-worker-{index}");
        let child = self
            .command("sluice-worker", namespace, &name)?
            .env("SLUICE_CONCURRENCY", concurrency.to_string())
            .env("SLUICE_WORKER_NAME", &name)
            .spawn()
            .context("cannot start sluice-worker")?;
        Ok(Proc { child })
    }
}

async fn wait_for_health(address: SocketAddr) -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{address}"))?;
        if let Ok(channel) = endpoint.connect().await {
            let request = HealthCheckRequest {
                service: "sluice.v1.BatchService".into(),
            };
            if let Ok(response) = HealthClient::new(channel).check(request).await {
                if response.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("server at {address} never became SERVING");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// The directory of the running benchmark binary (the release binaries are beside it).
pub(crate) fn own_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("binary directory")
}
