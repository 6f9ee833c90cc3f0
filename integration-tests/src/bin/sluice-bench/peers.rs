//! What Sluice is compared with, measured in the same invocation: the Celery peer (through
//! `dev/peer/celery/run.py`), and the machine's ceilings — the store's raw write rate for
//! Sluice's documents (`sluice-store-ceiling`), Redis's pipelined XADD rate (`redis-benchmark`),
//! and the W2 function's rate in a tight loop on every core.
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sluice::model::Payload;
use tokio::process::Command;

use crate::items::item;
use crate::procs::own_dir;
use crate::runs::Work;
use crate::Bench;

/// Seconds the Celery peer may take for one run.
const CELERY_TIMEOUT_S: u64 = 3_600;
/// Result documents the store ceiling writes at once (two workers, four chunks each).
const CEILING_RESULT_WRITERS: usize = 8;
/// Requests and pipeline depth of the XADD ceiling.
const XADD_REQUESTS: u64 = 200_000;
const XADD_PIPELINE: u64 = 16;
/// How long the single-core loop of the CPU ceiling runs.
const CPU_CEILING_SECONDS: f64 = 2.0;

/// How the Celery peer runs the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CeleryMode {
    PerItem,
    Chunked,
}

/// One run of the Celery peer, as run.py reports it.
#[derive(Debug, Clone)]
pub(crate) struct PeerRun {
    pub(crate) items: u64,
    pub(crate) seconds: f64,
    /// CPU seconds of the Celery worker's processes (main and pool) on the clock.
    pub(crate) cpu_s: f64,
    pub(crate) report: Value,
}

impl PeerRun {
    pub(crate) fn items_per_s(&self) -> f64 {
        self.items as f64 / self.seconds
    }

    pub(crate) fn cpu_s_per_million(&self) -> f64 {
        self.cpu_s / self.items as f64 * 1e6
    }
}

/// Runs the Celery peer on items `0..items`; fails unless run.py verified every output.
pub(crate) async fn celery(
    bench: &Bench,
    mode: CeleryMode,
    work: Work,
    items: u64,
    chunk_size: u32,
) -> Result<PeerRun> {
    let mode_name = match mode {
        CeleryMode::PerItem => "per-item",
        CeleryMode::Chunked => "chunked",
    };
    let mongo_url = if bench.mongo_url.contains('?') {
        bench.mongo_url.clone()
    } else {
        format!(
            "{}/?directConnection=true",
            bench.mongo_url.trim_end_matches('/')
        )
    };
    let mut command = Command::new(&bench.celery_python);
    command.arg(bench.peer_dir.join("run.py"));
    if let Some(pid) = bench.redis_pid {
        command.args(["--redis-pid", &pid.to_string()]);
    }
    if let Some(pid) = bench.ferretdb_pid {
        command.args(["--ferretdb-pid", &pid.to_string()]);
    }
    let output = command
        .args(["--mode", mode_name, "--task", work.task()])
        .args(["--rounds", &work.rounds().to_string()])
        .args(["--items", &items.to_string()])
        .args(["--chunk-size", &chunk_size.to_string()])
        .args(["--mongo-url", &mongo_url])
        .args(["--timeout", &CELERY_TIMEOUT_S.to_string()])
        .env(
            "CELERY_BROKER_URL",
            format!("{}/1", bench.redis_url.trim_end_matches('/')),
        )
        .current_dir(&bench.peer_dir)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run the Celery peer's run.py")?;
    if !output.status.success() {
        bail!(
            "the Celery peer failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report = last_json_line(&output.stdout)?;
    let verified = report["verified"].as_u64().unwrap_or(0);
    ensure!(
        verified == items,
        "the Celery peer verified {verified} of {items} outputs"
    );
    Ok(PeerRun {
        items,
        seconds: number(&report, "seconds")?,
        cpu_s: number(&report, "cpu_s")?,
        report,
    })
}

/// One run of the store ceiling.
#[derive(Debug, Clone)]
pub(crate) struct CeilingRun {
    pub(crate) items: u64,
    pub(crate) seconds: f64,
    pub(crate) ferretdb_cpu_s: f64,
    pub(crate) report: Value,
}

impl CeilingRun {
    pub(crate) fn items_per_s(&self) -> f64 {
        self.items as f64 / self.seconds
    }
}

/// Writes the documents of `items` items in chunks of `chunk_size` with `sluice-store-ceiling`.
pub(crate) async fn store_ceiling(
    bench: &Bench,
    items: u64,
    chunk_size: u32,
) -> Result<CeilingRun> {
    let database = bench.namespace("ceiling");
    let (ferretdb_before, _) = bench.stack_cpu_seconds()?;
    let output = Command::new(own_dir()?.join("sluice-store-ceiling"))
        .args(["--mongo-url", &bench.mongo_url, "--database", &database])
        .args(["--items", &items.to_string()])
        .args(["--chunk-size", &chunk_size.to_string()])
        .args(["--result-writers", &CEILING_RESULT_WRITERS.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run sluice-store-ceiling")?;
    let (ferretdb_after, _) = bench.stack_cpu_seconds()?;
    if !output.status.success() {
        bail!(
            "sluice-store-ceiling failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut report = last_json_line(&output.stdout)?;
    ensure!(
        report["verified"].as_u64() == Some(items),
        "sluice-store-ceiling did not write every item"
    );
    report["ferretdb_cpu_s"] = (ferretdb_after - ferretdb_before).into();
    Ok(CeilingRun {
        items,
        seconds: number(&report, "seconds")?,
        ferretdb_cpu_s: ferretdb_after - ferretdb_before,
        report,
    })
}

/// Redis's raw pipelined XADD rate, with messages shaped like Sluice's chunk messages.
pub(crate) async fn redis_xadd_per_s(bench: &Bench) -> Result<f64> {
    let port = bench
        .redis_url
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok())
        .context("the Redis URL has no port")?;
    let stream = format!("{{{}}}:xadd", bench.namespace("xadd"));
    let output = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-q", "--csv"])
        .args([
            "-n",
            &XADD_REQUESTS.to_string(),
            "-P",
            &XADD_PIPELINE.to_string(),
        ])
        .args([
            "XADD",
            &stream,
            "*",
            "batch",
            "0190f0e0-0000-7000-8000-000000000000",
        ])
        .args(["chunk", "12345"])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run redis-benchmark (Debian's redis-tools)")?;
    let redis = sluice::broker::connect(&bench.redis_url).await?;
    let _: i64 = fred::interfaces::KeysInterface::del(&redis, &stream).await?;
    ensure!(output.status.success(), "redis-benchmark failed");
    // CSV: a header line, then "test","rps",...
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rate = stdout
        .lines()
        .nth(1)
        .and_then(|line| line.rsplit("\",\"").nth(6))
        .and_then(|rps| rps.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("unexpected redis-benchmark output: {stdout}"))?;
    Ok(rate)
}

/// The CPU ceiling of `work`: its single-core rate in a tight loop, and times the cores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuCeiling {
    pub(crate) single_core_items_per_s: f64,
    pub(crate) cores: usize,
}

impl CpuCeiling {
    pub(crate) fn items_per_s(&self) -> f64 {
        self.single_core_items_per_s * self.cores as f64
    }
}

/// Runs the W2 function on one thread over the benchmark's items for a couple of seconds.
pub(crate) async fn cpu_ceiling(work: Work) -> Result<CpuCeiling> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let single_core_items_per_s = tokio::task::spawn_blocking(move || -> Result<f64> {
        let mut processor = work.processor()?;
        let items: Vec<Payload> = (0..1_000).map(|index| Payload::Text(item(index))).collect();
        let started = Instant::now();
        let mut done = 0_u64;
        while started.elapsed() < Duration::from_secs_f64(CPU_CEILING_SECONDS) {
            for item in &items {
                let output = processor.process(item).map_err(anyhow::Error::msg)?;
                std::hint::black_box(output).map_err(anyhow::Error::msg)?;
            }
            done += items.len() as u64;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })
    .await??;
    Ok(CpuCeiling {
        single_core_items_per_s,
        cores,
    })
}

fn last_json_line(stdout: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("no JSON report in: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

fn number(report: &Value, key: &str) -> Result<f64> {
    report[key]
        .as_f64()
        .with_context(|| format!("report has no number {key}: {report}"))
}
