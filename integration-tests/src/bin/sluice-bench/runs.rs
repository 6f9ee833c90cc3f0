//! Sluice's throughput runs (W1, W2): a fresh server and two workers on a namespace of their
//! own (MongoDB database and Redis key prefix), one batch uploaded and watched to its terminal
//! event on the clock, then every output checked in MongoDB off the clock.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fred::interfaces::ClientLike;
use fred::types::CustomCommand;
use sluice::model::{ItemOutcome, Payload};
use sluice::store::Store;
use sluice::tasks::TaskRegistry;

use crate::client::{connect, upload, verify_outputs, watch_to_end};
use crate::items::item;
use crate::procs::{cpu_seconds, peak_rss_mb, Proc};
use crate::Bench;

/// Workers per run, as the W1 and W2 ask.
const WORKERS: usize = 2;
/// Chunks each worker keeps in flight (the worker's default).
const WORKER_CONCURRENCY: usize = 4;
/// How long one batch may take before the run fails.
const BATCH_TIMEOUT: Duration = Duration::from_secs(3_600);
/// How long workers get to join the consumer group.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Every this many items, a W2 output is recomputed and compared (the others are checked for
/// shape only, so verifying does not cost a second W2).
const SHA256_SAMPLE_EVERY: u64 = 997;

/// The per-item work of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work {
    /// W1: `echo`.
    Echo,
    /// W2: `sha256` with `rounds` chained rounds.
    Sha256 { rounds: u64 },
}

impl Work {
    pub(crate) fn task(self) -> &'static str {
        match self {
            Work::Echo => "echo",
            Work::Sha256 { .. } => "sha256",
        }
    }

    pub(crate) fn rounds(self) -> u64 {
        match self {
            Work::Echo => 1,
            Work::Sha256 { rounds } => rounds,
        }
    }

    pub(crate) fn params(self) -> String {
        match self {
            Work::Echo => "{}".to_owned(),
            Work::Sha256 { rounds } => format!("{{\"rounds\":{rounds}}}"),
        }
    }

    /// The per-item function exactly as a worker runs it (the task registry's processor).
    pub(crate) fn processor(self) -> Result<Box<dyn sluice::tasks::ItemProcessor>> {
        let task = TaskRegistry::builtin()
            .get(self.task())
            .context("task is not registered")?;
        let params = serde_json::from_str(&self.params())?;
        task.processor(&params)
            .map_err(|error| anyhow::anyhow!("params: {error}"))
    }

    /// Whether `outcome` is item `index`'s correct output.
    pub(crate) fn check(self, index: u64, outcome: &ItemOutcome) -> bool {
        let Ok(Payload::Text(output)) = outcome else {
            return false;
        };
        match self {
            Work::Echo => *output == item(index),
            Work::Sha256 { .. } => {
                let shaped =
                    output.len() == 64 && output.bytes().all(|byte| byte.is_ascii_hexdigit());
                if !shaped || !index.is_multiple_of(SHA256_SAMPLE_EVERY) {
                    return shaped;
                }
                self.processor()
                    .map(|mut processor| {
                        processor.process(&Payload::Text(item(index))) == Ok(outcome.clone())
                    })
                    .unwrap_or(false)
            }
        }
    }
}

/// One Sluice throughput run.
#[derive(Debug, Clone)]
pub(crate) struct BatchRun {
    pub(crate) items: u64,
    pub(crate) chunk_size: u32,
    /// First byte of the upload to the terminal event.
    pub(crate) seconds: f64,
    /// First byte of the upload to the upload's response (the batch stored and enqueued).
    pub(crate) upload_seconds: f64,
    pub(crate) cpu: CpuUse,
    pub(crate) server_peak_rss_mb: f64,
    /// The larger of the workers' peaks.
    pub(crate) worker_peak_rss_mb: f64,
}

impl BatchRun {
    pub(crate) fn items_per_s(&self) -> f64 {
        self.items as f64 / self.seconds
    }

    /// CPU seconds of Sluice's own processes (server and workers) per million items.
    pub(crate) fn cpu_s_per_million(&self) -> f64 {
        (self.cpu.server + self.cpu.workers) / self.items as f64 * 1e6
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "items": self.items,
            "chunk_size": self.chunk_size,
            "seconds": self.seconds,
            "upload_seconds": self.upload_seconds,
            "items_per_s": self.items_per_s(),
            "cpu_s_per_million": self.cpu_s_per_million(),
            "cpu_s": self.cpu.to_json(),
            "server_peak_rss_mb": self.server_peak_rss_mb,
            "worker_peak_rss_mb": self.worker_peak_rss_mb,
            "verified": self.items,
        })
    }
}

/// CPU seconds spent during a run, per kind of process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    pub(crate) server: f64,
    pub(crate) workers: f64,
    pub(crate) ferretdb: f64,
    pub(crate) redis: f64,
    /// The benchmark process itself (the gRPC client).
    pub(crate) client: f64,
}

impl CpuUse {
    fn sample(bench: &Bench, server: &Proc, workers: &[Proc]) -> Result<CpuUse> {
        let (ferretdb, redis) = bench.stack_cpu_seconds()?;
        Ok(CpuUse {
            server: cpu_seconds(server.pid())?,
            workers: workers
                .iter()
                .map(|worker| cpu_seconds(worker.pid()))
                .sum::<Result<f64>>()?,
            ferretdb,
            redis,
            client: cpu_seconds(std::process::id())?,
        })
    }

    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            server: self.server - before.server,
            workers: self.workers - before.workers,
            ferretdb: self.ferretdb - before.ferretdb,
            redis: self.redis - before.redis,
            client: self.client - before.client,
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "server": self.server, "workers": self.workers, "ferretdb": self.ferretdb,
            "redis": self.redis, "client": self.client,
        })
    }
}

/// Runs `items` items of `work` through a fresh Sluice in chunks of `chunk_size`.
pub(crate) async fn sluice_batch(
    bench: &Bench,
    work: Work,
    items: u64,
    chunk_size: u32,
) -> Result<BatchRun> {
    let namespace = bench.namespace(work.task());
    let (server, address, workers) = start_pipeline(bench, &namespace).await?;
    let mut client = connect(address).await?;

    let before = CpuUse::sample(bench, &server, &workers)?;
    let started = Instant::now();
    let batch = upload(&mut client, work.task(), &work.params(), chunk_size, items).await?;
    let upload_seconds = started.elapsed().as_secs_f64();
    watch_to_end(&mut client, &batch.id, BATCH_TIMEOUT).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuUse::sample(bench, &server, &workers)?.since(before);

    let server_peak_rss_mb = peak_rss_mb(server.pid())?;
    let worker_peak_rss_mb = workers
        .iter()
        .map(|worker| peak_rss_mb(worker.pid()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(0.0, f64::max);
    drop(workers);
    drop(server);

    let store = Store::connect(&bench.mongo_url, &namespace).await?;
    verify_outputs(&store, &[(batch.id, items)], |index, outcome| {
        work.check(index, outcome)
    })
    .await?;
    store.database().drop().await?;
    Ok(BatchRun {
        items,
        chunk_size,
        seconds,
        upload_seconds,
        cpu,
        server_peak_rss_mb,
        worker_peak_rss_mb,
    })
}

/// Starts a server and [`WORKERS`] workers on `namespace`, and waits until the server is
/// SERVING and the workers read chunks.
pub(crate) async fn start_pipeline(
    bench: &Bench,
    namespace: &str,
) -> Result<(Proc, SocketAddr, Vec<Proc>)> {
    let (server, address) = bench.launcher.server(namespace).await?;
    let workers = (0..WORKERS)
        .map(|index| bench.launcher.worker(namespace, index, WORKER_CONCURRENCY))
        .collect::<Result<Vec<_>>>()?;
    wait_for_workers(bench, WORKERS).await?;
    Ok((server, address, workers))
}

/// Waits until `count` workers block in XREADGROUP, so no run starts before its workers. Redis
/// 7.0 adds a consumer to the group only once it is delivered a message, so the readiness
/// signal is the connections whose last command is XREADGROUP; the benchmark's Redis serves
/// only the run at hand, so those are this run's workers.
async fn wait_for_workers(bench: &Bench, count: usize) -> Result<()> {
    let redis = sluice::broker::connect(&bench.redis_url).await?;
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let command = CustomCommand::new_static("CLIENT", None::<u16>, false);
        let clients: String = redis.custom(command, vec!["LIST"]).await?;
        let reading = clients
            .lines()
            .filter(|line| line.contains(" cmd=xreadgroup "))
            .count();
        if reading >= count {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{count} workers did not start reading chunks within {JOIN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
