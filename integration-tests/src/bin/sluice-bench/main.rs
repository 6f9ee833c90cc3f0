//! `sluice-bench`: the benchmark of issue 3 (see docs/benchmarks.md). `dev/bench` starts the
//! stack, builds the release binaries and the Celery peer's virtualenv, then runs this binary,
//! which drives real `sluice-server` and `sluice-worker` processes, the Celery peer and the
//! ceilings, alternating them run by run, and writes `summary.json`, `summary.txt` and
//! `runs.jsonl` (every run's raw numbers) to `--out-dir`.
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

mod client;
mod items;
mod latency;
mod peers;
mod procs;
mod report;
mod runs;

use peers::CeleryMode;
use report::{Results, W1Round, W2Round};
use runs::Work;

/// The workloads, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Throughput, store-bound (with chunked and per-item Celery, the store and XADD ceilings).
    W1,
    /// Throughput, CPU-bound (with chunked Celery and the CPU ceiling).
    W2,
    /// Submit latency.
    W3,
    /// Progress latency.
    W4,
    /// Memory per idle watcher.
    W5,
}

/// Sluice's benchmark: W1 to W5 side by side with a Celery peer and the machine's ceilings.
/// Run it through `dev/bench`, which starts the stack and passes the flags it needs.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench")]
struct Args {
    /// Smaller inputs and fewer repetitions.
    #[arg(long)]
    quick: bool,
    /// Fail unless every summary number is present and above zero (every output count is
    /// verified in every run regardless).
    #[arg(long)]
    check: bool,
    /// Repetitions of each throughput comparison (default 3, or 2 with --quick).
    #[arg(long)]
    repetitions: Option<usize>,
    /// W1's items per run (default 1,000,000, or 20,000 with --quick).
    #[arg(long)]
    w1_items: Option<u64>,
    /// W1's chunk sizes (default 100,1000,5000).
    #[arg(long, value_delimiter = ',')]
    chunk_sizes: Vec<u32>,
    /// Run only these workloads (comma-separated); the summary then lacks the others.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Redis URL.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis_url: String,
    /// MongoDB URL.
    #[arg(long, env = "SLUICE_MONGO_URL")]
    mongo_url: String,
    /// Process id of redis-server (its CPU is reported apart).
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Process id of FerretDB (its CPU is reported apart).
    #[arg(long)]
    ferretdb_pid: Option<u32>,
    /// The Celery peer's Python (from dev/peer/celery/setup).
    #[arg(long)]
    celery_python: PathBuf,
    /// The Celery peer's directory (dev/peer/celery).
    #[arg(long)]
    peer_dir: PathBuf,
    /// Where the summary, the runs and the logs go.
    #[arg(long)]
    out_dir: PathBuf,
}

/// Sizes of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) repetitions: usize,
    pub(crate) w1_items: u64,
    pub(crate) chunk_sizes: Vec<u32>,
    pub(crate) celery_per_item_items: u64,
    pub(crate) w2_items: u64,
    pub(crate) w2_rounds: u64,
    /// The chunked Celery peer's W2 input: smaller, as it is an order of magnitude slower.
    pub(crate) celery_w2_items: u64,
    pub(crate) w2_chunk_size: u32,
    pub(crate) w3_batches: usize,
    pub(crate) w3_items_per_batch: u64,
    pub(crate) w3_clients: usize,
    pub(crate) w4_watchers: Vec<usize>,
    pub(crate) w4_seconds: f64,
    pub(crate) w4_rate: f64,
    pub(crate) w5_watchers: usize,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        let quick = args.quick;
        let chunk_sizes = match args.chunk_sizes.is_empty() {
            true => vec![100, 1_000, 5_000],
            false => args.chunk_sizes.clone(),
        };
        Plan {
            quick,
            repetitions: args.repetitions.unwrap_or(if quick { 2 } else { 3 }).max(1),
            w1_items: args
                .w1_items
                .unwrap_or(if quick { 20_000 } else { 1_000_000 }),
            chunk_sizes,
            celery_per_item_items: if quick { 1_000 } else { 10_000 },
            w2_items: if quick { 4_000 } else { 200_000 },
            w2_rounds: 10_000,
            celery_w2_items: if quick { 500 } else { 20_000 },
            w2_chunk_size: 1_000,
            w3_batches: if quick { 20 } else { 1_000 },
            w3_items_per_batch: 1_000,
            w3_clients: 20,
            w4_watchers: vec![1, 100, 1_000],
            w4_seconds: if quick { 2.0 } else { 8.0 },
            w4_rate: 1_000.0,
            w5_watchers: if quick { 1_000 } else { 10_000 },
        }
    }
}

/// What every workload shares.
pub(crate) struct Bench {
    pub(crate) launcher: procs::Launcher,
    pub(crate) redis_url: String,
    pub(crate) mongo_url: String,
    pub(crate) celery_python: PathBuf,
    pub(crate) peer_dir: PathBuf,
    pub(crate) redis_pid: Option<u32>,
    pub(crate) ferretdb_pid: Option<u32>,
    run_id: String,
    namespaces: AtomicUsize,
    runs: Mutex<std::fs::File>,
    started: std::time::Instant,
}

impl Bench {
    /// A fresh name for a run's MongoDB database and Redis key prefix.
    pub(crate) fn namespace(&self, label: &str) -> String {
        let number = self.namespaces.fetch_add(1, Ordering::Relaxed) + 1;
        format!("bench_{}_{label}_{number}", self.run_id)
    }

    /// CPU seconds so far of FerretDB and of Redis (0 for one whose pid is unknown).
    pub(crate) fn stack_cpu_seconds(&self) -> Result<(f64, f64)> {
        let of = |pid: Option<u32>| pid.map_or(Ok(0.0), procs::cpu_seconds);
        Ok((of(self.ferretdb_pid)?, of(self.redis_pid)?))
    }

    /// Appends one run's raw numbers to runs.jsonl and tells the terminal.
    fn record(&self, workload: &str, what: &str, details: serde_json::Value) -> Result<()> {
        let at_s = self.started.elapsed().as_secs_f64();
        let line = serde_json::json!({ "workload": workload, "run": what, "at_s": at_s, "details": details });
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(runs, "{line}")?;
        let rate = details
            .get("items_per_s")
            .and_then(serde_json::Value::as_f64)
            .map(|rate| format!(": {rate:.0} items/s"))
            .unwrap_or_default();
        eprintln!("sluice-bench: [{at_s:.0} s] {workload} {what}{rate}");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args);
    let log_dir = args.out_dir.join("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let bench = Bench {
        launcher: procs::Launcher {
            bin_dir: procs::own_dir()?,
            redis_url: args.redis_url.clone(),
            mongo_url: args.mongo_url.clone(),
            log_dir,
        },
        redis_url: args.redis_url.clone(),
        mongo_url: args.mongo_url.clone(),
        celery_python: args.celery_python.clone(),
        peer_dir: std::fs::canonicalize(&args.peer_dir)
            .with_context(|| format!("no Celery peer at {}", args.peer_dir.display()))?,
        redis_pid: args.redis_pid,
        ferretdb_pid: args.ferretdb_pid,
        run_id: uuid::Uuid::now_v7().simple().to_string()[26..].to_owned(),
        namespaces: AtomicUsize::new(0),
        runs: Mutex::new(std::fs::File::create(args.out_dir.join("runs.jsonl"))?),
        started: std::time::Instant::now(),
    };
    let wants = |workload| args.only.is_empty() || args.only.contains(&workload);
    let mut results = Results::default();
    if wants(Workload::W1) {
        throughput_w1(&bench, &plan, &mut results).await?;
    }
    if wants(Workload::W2) {
        throughput_w2(&bench, &plan, &mut results).await?;
    }
    if wants(Workload::W3) {
        let w3 = latency::submit_latency(
            &bench,
            plan.w3_batches,
            plan.w3_items_per_batch,
            plan.w3_clients,
        )
        .await?;
        bench.record("w3", "submit latency", serde_json::json!({"p50_ms": w3.latency_ms.p50, "p99_ms": w3.latency_ms.p99, "batches": w3.batches}))?;
        results.w3 = Some(w3);
    }
    if wants(Workload::W4) {
        progress_w4(&bench, &plan, &mut results).await?;
    }
    if wants(Workload::W5) {
        let per_watcher = latency::memory_per_watcher(&bench, plan.w5_watchers).await?;
        bench.record(
            "w5",
            "memory per watcher",
            serde_json::json!({"kb": per_watcher, "watchers": plan.w5_watchers}),
        )?;
        results.w5_rss_per_watcher_kb = Some(per_watcher);
    }

    let summary = results.summary(&plan);
    let table = results.table(&plan, &summary);
    std::fs::write(
        args.out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    std::fs::write(args.out_dir.join("summary.txt"), &table)?;
    println!("{table}");
    println!("wrote {}", args.out_dir.join("summary.json").display());
    if args.check {
        report::check(&summary)?;
        println!("--check: every number present and above zero; every output count verified");
    }
    Ok(())
}

/// W1: per repetition and chunk size, Sluice, chunked Celery and the store ceiling, in an
/// order that rotates each repetition; then per-item Celery and the XADD ceiling.
async fn throughput_w1(bench: &Bench, plan: &Plan, results: &mut Results) -> Result<()> {
    let items = plan.w1_items;
    for repetition in 0..plan.repetitions {
        for &chunk_size in &plan.chunk_sizes {
            let what = |name: &str| format!("{name} chunk {chunk_size} rep {}", repetition + 1);
            let (mut sluice, mut celery, mut ceiling) = (None, None, None);
            for step in 0..3 {
                match (step + repetition) % 3 {
                    0 => {
                        let run = runs::sluice_batch(bench, Work::Echo, items, chunk_size).await?;
                        bench.record("w1", &what("sluice"), run.to_json())?;
                        sluice = Some(run);
                    }
                    1 => {
                        let run = peers::celery(
                            bench,
                            CeleryMode::Chunked,
                            Work::Echo,
                            items,
                            chunk_size,
                        )
                        .await?;
                        bench.record("w1", &what("celery-chunked"), run.report.clone())?;
                        celery = Some(run);
                    }
                    _ => {
                        let run = peers::store_ceiling(bench, items, chunk_size).await?;
                        bench.record("w1", &what("store-ceiling"), run.report.clone())?;
                        ceiling = Some(run);
                    }
                }
            }
            let (Some(sluice), Some(celery), Some(ceiling)) = (sluice, celery, ceiling) else {
                unreachable!("each of the three steps ran once");
            };
            results.w1.entry(chunk_size).or_default().push(W1Round {
                sluice,
                celery,
                ceiling,
            });
        }
        let per_item = peers::celery(
            bench,
            CeleryMode::PerItem,
            Work::Echo,
            plan.celery_per_item_items,
            1,
        )
        .await?;
        bench.record(
            "w1",
            &format!("celery-per-item rep {}", repetition + 1),
            per_item.report.clone(),
        )?;
        results.celery_per_item.push(per_item);
        let xadd = peers::redis_xadd_per_s(bench).await?;
        bench.record(
            "ceiling",
            "redis xadd",
            serde_json::json!({ "per_s": xadd }),
        )?;
        results.redis_xadd_per_s.push(xadd);
    }
    Ok(())
}

/// W2: per repetition, Sluice, chunked Celery and the CPU ceiling, in a rotating order.
async fn throughput_w2(bench: &Bench, plan: &Plan, results: &mut Results) -> Result<()> {
    let work = Work::Sha256 {
        rounds: plan.w2_rounds,
    };
    for repetition in 0..plan.repetitions {
        let what = |name: &str| format!("{name} rep {}", repetition + 1);
        let (mut sluice, mut celery, mut cpu) = (None, None, None);
        for step in 0..3 {
            match (step + repetition) % 3 {
                0 => {
                    let run =
                        runs::sluice_batch(bench, work, plan.w2_items, plan.w2_chunk_size).await?;
                    bench.record("w2", &what("sluice"), run.to_json())?;
                    sluice = Some(run);
                }
                1 => {
                    let run = peers::celery(
                        bench,
                        CeleryMode::Chunked,
                        work,
                        plan.celery_w2_items,
                        plan.w2_chunk_size,
                    )
                    .await?;
                    bench.record("w2", &what("celery-chunked"), run.report.clone())?;
                    celery = Some(run);
                }
                _ => {
                    let ceiling = peers::cpu_ceiling(work).await?;
                    let details = serde_json::json!({
                        "single_core_items_per_s": ceiling.single_core_items_per_s,
                        "cores": ceiling.cores,
                        "items_per_s": ceiling.items_per_s(),
                    });
                    bench.record("w2", &what("cpu-ceiling"), details)?;
                    cpu = Some(ceiling);
                }
            }
        }
        let (Some(sluice), Some(celery), Some(cpu)) = (sluice, celery, cpu) else {
            unreachable!("each of the three steps ran once");
        };
        results.w2.push(W2Round {
            sluice,
            celery,
            cpu,
        });
    }
    Ok(())
}

/// W4: one phase per watcher count, then the largest count with a stalled watcher and once
/// more without (so the stalled phase sits between two it is compared with).
async fn progress_w4(bench: &Bench, plan: &Plan, results: &mut Results) -> Result<()> {
    let mut progress = latency::ProgressBench::start(bench).await?;
    let most = plan.w4_watchers.iter().copied().max().unwrap_or(1);
    let phases = plan
        .w4_watchers
        .iter()
        .map(|watchers| (*watchers, false))
        .chain([(most, true), (most, false)]);
    for (watchers, stalled) in phases {
        let phase = progress
            .phase(watchers, stalled, plan.w4_seconds, plan.w4_rate)
            .await?;
        let details = serde_json::json!({
            "watchers": phase.watchers,
            "stalled_watcher": phase.stalled_watcher,
            "events_published": phase.events_published,
            "deliveries": phase.latency_ms.count,
            "p50_ms": phase.latency_ms.p50,
            "p99_ms": phase.latency_ms.p99,
            "p999_ms": phase.latency_ms.p999,
            "server_rss_growth_kb": phase.server_rss_growth_kb,
        });
        let details = serde_json::json!({
            "watchers_missing_end": phase.watchers_missing_end,
            "hub_events_skipped": phase.hub_events_skipped,
            "phase": details,
        });
        bench.record(
            "w4",
            &format!(
                "{watchers} watchers{}",
                if stalled { " + stalled" } else { "" }
            ),
            details,
        )?;
        results.w4.push(phase);
    }
    progress.finish().await
}
