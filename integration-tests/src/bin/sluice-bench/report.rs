//! From runs to `summary.json` (flat keys, numbers) and the human-readable table, and the
//! `--check` of both: every number the issue asks for is present, finite and above zero.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::latency::{ProgressPhase, SubmitLatency};
use crate::peers::{CeilingRun, CpuCeiling, PeerRun};
use crate::runs::BatchRun;
use crate::Plan;

/// The keys the issue lists, which `--check` requires.
const REQUIRED: [&str; 25] = [
    "w1_items_per_s",
    "w1_items_per_s_by_chunk",
    "celery_per_item_w1_items_per_s",
    "celery_chunked_w1_items_per_s",
    "ratio_vs_celery_per_item_w1",
    "ratio_vs_celery_chunked_w1",
    "store_ceiling_items_per_s",
    "fraction_of_store_ceiling",
    "w1_cpu_s_per_million",
    "celery_chunked_w1_cpu_s_per_million",
    "cpu_ratio_celery_over_sluice_w1",
    "w2_items_per_s",
    "celery_chunked_w2_items_per_s",
    "ratio_vs_celery_chunked_w2",
    "w2_fraction_of_cpu_ceiling",
    "redis_xadd_per_s",
    "w3_submit_p50_ms",
    "w3_submit_p99_ms",
    "w4_progress_p50_ms",
    "w4_progress_p99_ms",
    "w4_progress_p999_ms",
    "w5_server_rss_mb",
    "w5_worker_rss_mb",
    "w5_rss_per_watcher_kb",
    "quick",
];

/// p50, p99 and p99.9 of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) count: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted in place; nearest rank).
    pub(crate) fn of(samples: &mut [f64]) -> Percentiles {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        match samples.is_empty() {
            true => Percentiles::default(),
            false => Percentiles {
                count: samples.len(),
                p50: at(0.5),
                p99: at(0.99),
                p999: at(0.999),
            },
        }
    }
}

/// The median of `values` (0 when there are none).
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() % 2 {
        1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// One W1 repetition at one chunk size: Sluice, chunked Celery and the store ceiling, run one
/// after the other.
#[derive(Debug, Clone)]
pub(crate) struct W1Round {
    pub(crate) sluice: BatchRun,
    pub(crate) celery: PeerRun,
    pub(crate) ceiling: CeilingRun,
}

/// One W2 repetition.
#[derive(Debug, Clone)]
pub(crate) struct W2Round {
    pub(crate) sluice: BatchRun,
    pub(crate) celery: PeerRun,
    pub(crate) cpu: CpuCeiling,
}

/// Everything measured in one invocation.
#[derive(Default)]
pub(crate) struct Results {
    pub(crate) w1: BTreeMap<u32, Vec<W1Round>>,
    pub(crate) celery_per_item: Vec<PeerRun>,
    pub(crate) redis_xadd_per_s: Vec<f64>,
    pub(crate) w2: Vec<W2Round>,
    pub(crate) w3: Option<SubmitLatency>,
    pub(crate) w4: Vec<ProgressPhase>,
    pub(crate) w5_rss_per_watcher_kb: Option<f64>,
}

impl Results {
    /// Sluice's fastest W1 chunk size (by median throughput).
    fn best_chunk(&self) -> Option<u32> {
        self.w1
            .iter()
            .map(|(size, rounds)| (*size, median(rounds.iter().map(|r| r.sluice.items_per_s()))))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(size, _)| size)
    }

    /// The flat summary.
    pub(crate) fn summary(&self, plan: &Plan) -> Map<String, Value> {
        let mut out = Map::new();
        let mut put = |key: &str, value: Value| {
            out.insert(key.to_owned(), value);
        };
        put("quick", json!(plan.quick));
        put("repetitions", json!(plan.repetitions));
        if let Some(best) = self.best_chunk() {
            let rounds = &self.w1[&best];
            let by_chunk = |rate: &dyn Fn(&W1Round) -> f64| -> Value {
                self.w1
                    .iter()
                    .map(|(size, rounds)| {
                        (size.to_string(), json!(median(rounds.iter().map(rate))))
                    })
                    .collect::<Map<_, _>>()
                    .into()
            };
            put("w1_items", json!(plan.w1_items));
            put("w1_best_chunk_size", json!(best));
            put(
                "w1_items_per_s",
                json!(median(rounds.iter().map(|r| r.sluice.items_per_s()))),
            );
            put(
                "w1_items_per_s_by_chunk",
                by_chunk(&|r| r.sluice.items_per_s()),
            );
            put(
                "celery_chunked_w1_items_per_s",
                json!(median(rounds.iter().map(|r| r.celery.items_per_s()))),
            );
            put(
                "celery_chunked_w1_items_per_s_by_chunk",
                by_chunk(&|r| r.celery.items_per_s()),
            );
            put(
                "ratio_vs_celery_chunked_w1",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.items_per_s() / r.celery.items_per_s())
                )),
            );
            put(
                "ratio_vs_celery_chunked_w1_by_chunk",
                by_chunk(&|r| r.sluice.items_per_s() / r.celery.items_per_s()),
            );
            put(
                "store_ceiling_items_per_s",
                json!(median(rounds.iter().map(|r| r.ceiling.items_per_s()))),
            );
            put(
                "store_ceiling_items_per_s_by_chunk",
                by_chunk(&|r| r.ceiling.items_per_s()),
            );
            put(
                "fraction_of_store_ceiling",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.items_per_s() / r.ceiling.items_per_s())
                )),
            );
            put(
                "w1_upload_seconds",
                json!(median(rounds.iter().map(|r| r.sluice.upload_seconds))),
            );
            put(
                "w1_seconds",
                json!(median(rounds.iter().map(|r| r.sluice.seconds))),
            );
            put(
                "w1_cpu_s_per_million",
                json!(median(rounds.iter().map(|r| r.sluice.cpu_s_per_million()))),
            );
            put(
                "w1_ferretdb_cpu_s_per_million",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.cpu.ferretdb / r.sluice.items as f64 * 1e6)
                )),
            );
            put(
                "w1_redis_cpu_s_per_million",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.cpu.redis / r.sluice.items as f64 * 1e6)
                )),
            );
            put(
                "store_ceiling_ferretdb_cpu_s_per_million",
                json!(median(rounds.iter().map(|r| r.ceiling.ferretdb_cpu_s
                    / r.ceiling.items as f64
                    * 1e6))),
            );
            put(
                "celery_chunked_w1_cpu_s_per_million",
                json!(median(rounds.iter().map(|r| r.celery.cpu_s_per_million()))),
            );
            put(
                "cpu_ratio_celery_over_sluice_w1",
                json!(median(rounds.iter().map(
                    |r| r.celery.cpu_s_per_million() / r.sluice.cpu_s_per_million()
                ))),
            );
            let all_runs = self.w1.values().flatten();
            put(
                "w5_server_rss_mb",
                json!(all_runs
                    .clone()
                    .map(|r| r.sluice.server_peak_rss_mb)
                    .fold(0.0, f64::max)),
            );
            put(
                "w5_worker_rss_mb",
                json!(all_runs
                    .map(|r| r.sluice.worker_peak_rss_mb)
                    .fold(0.0, f64::max)),
            );
            if !self.celery_per_item.is_empty() {
                put("celery_per_item_items", json!(plan.celery_per_item_items));
                put(
                    "celery_per_item_w1_items_per_s",
                    json!(median(
                        self.celery_per_item.iter().map(PeerRun::items_per_s)
                    )),
                );
                put(
                    "celery_per_item_w1_cpu_s_per_million",
                    json!(median(
                        self.celery_per_item.iter().map(PeerRun::cpu_s_per_million)
                    )),
                );
                put(
                    "ratio_vs_celery_per_item_w1",
                    json!(median(
                        rounds
                            .iter()
                            .zip(&self.celery_per_item)
                            .map(|(r, c)| r.sluice.items_per_s() / c.items_per_s())
                    )),
                );
            }
        }
        if !self.redis_xadd_per_s.is_empty() {
            put(
                "redis_xadd_per_s",
                json!(median(self.redis_xadd_per_s.iter().copied())),
            );
        }
        if !self.w2.is_empty() {
            let rounds = &self.w2;
            put("w2_items", json!(plan.w2_items));
            put("w2_sha256_rounds", json!(plan.w2_rounds));
            put("celery_w2_items", json!(plan.celery_w2_items));
            put(
                "w2_items_per_s",
                json!(median(rounds.iter().map(|r| r.sluice.items_per_s()))),
            );
            put(
                "celery_chunked_w2_items_per_s",
                json!(median(rounds.iter().map(|r| r.celery.items_per_s()))),
            );
            put(
                "ratio_vs_celery_chunked_w2",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.items_per_s() / r.celery.items_per_s())
                )),
            );
            put(
                "w2_cpu_ceiling_items_per_s",
                json!(median(rounds.iter().map(|r| r.cpu.items_per_s()))),
            );
            put("w2_cores", json!(rounds[0].cpu.cores));
            put(
                "w2_fraction_of_cpu_ceiling",
                json!(median(
                    rounds
                        .iter()
                        .map(|r| r.sluice.items_per_s() / r.cpu.items_per_s())
                )),
            );
            put(
                "w2_cpu_s_per_million",
                json!(median(rounds.iter().map(|r| r.sluice.cpu_s_per_million()))),
            );
            put(
                "celery_chunked_w2_cpu_s_per_million",
                json!(median(rounds.iter().map(|r| r.celery.cpu_s_per_million()))),
            );
        }
        if let Some(w3) = &self.w3 {
            put("w3_batches", json!(w3.batches));
            put("w3_submit_p50_ms", json!(w3.latency_ms.p50));
            put("w3_submit_p99_ms", json!(w3.latency_ms.p99));
        }
        let unstalled = |watchers: usize| {
            self.w4
                .iter()
                .filter(move |phase| phase.watchers == watchers && !phase.stalled_watcher)
        };
        if let Some(most) = self.w4.iter().map(|phase| phase.watchers).max() {
            put("w4_watchers", json!(most));
            put(
                "w4_progress_p50_ms",
                json!(median(unstalled(most).map(|p| p.latency_ms.p50))),
            );
            put(
                "w4_progress_p99_ms",
                json!(median(unstalled(most).map(|p| p.latency_ms.p99))),
            );
            put(
                "w4_progress_p999_ms",
                json!(median(unstalled(most).map(|p| p.latency_ms.p999))),
            );
            let by_watchers: Map<String, Value> = self
                .w4
                .iter()
                .filter(|phase| !phase.stalled_watcher)
                .map(|phase| {
                    (
                        phase.watchers.to_string(),
                        json!(median(unstalled(phase.watchers).map(|p| p.latency_ms.p99))),
                    )
                })
                .collect();
            put("w4_progress_p99_ms_by_watchers", by_watchers.into());
            put(
                "w4_hub_events_skipped",
                json!(self.w4.iter().map(|p| p.hub_events_skipped).sum::<u64>()),
            );
            if let Some(stalled) = self.w4.iter().find(|phase| phase.stalled_watcher) {
                put(
                    "w4_with_stalled_watcher_p99_ms",
                    json!(stalled.latency_ms.p99),
                );
                put(
                    "w4_with_stalled_watcher_rss_growth_kb",
                    json!(stalled.server_rss_growth_kb),
                );
                put(
                    "w4_without_stalled_watcher_rss_growth_kb",
                    json!(median(unstalled(most).map(|p| p.server_rss_growth_kb))),
                );
            }
        }
        if let Some(per_watcher) = self.w5_rss_per_watcher_kb {
            put("w5_watchers", json!(plan.w5_watchers));
            put("w5_rss_per_watcher_kb", json!(per_watcher));
        }
        out
    }

    /// The human-readable table.
    pub(crate) fn table(&self, plan: &Plan, summary: &Map<String, Value>) -> String {
        let number = |key: &str| summary.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Sluice benchmark{}: medians of {} repetitions; ratios are medians of per-repetition ratios (runs alternated)",
            if plan.quick { " (--quick)" } else { "" },
            plan.repetitions
        );
        if !self.w1.is_empty() {
            let _ = writeln!(
                out,
                "\nW1 echo, {} items of ~100 B, 2 workers (items/s; CPU s per million items)",
                plan.w1_items
            );
            let _ = writeln!(
                out,
                "{:>6} {:>10} {:>10} {:>6} {:>10} {:>6} {:>9} {:>9} {:>9}",
                "chunk",
                "sluice",
                "celery",
                "ratio",
                "store max",
                "frac",
                "cpu sluice",
                "cpu celery",
                "cpu store"
            );
            for (size, rounds) in &self.w1 {
                let _ = writeln!(
                    out,
                    "{:>6} {:>10.0} {:>10.0} {:>6.2} {:>10.0} {:>6.2} {:>9.1} {:>9.1} {:>9.1}",
                    size,
                    median(rounds.iter().map(|r| r.sluice.items_per_s())),
                    median(rounds.iter().map(|r| r.celery.items_per_s())),
                    median(
                        rounds
                            .iter()
                            .map(|r| r.sluice.items_per_s() / r.celery.items_per_s())
                    ),
                    median(rounds.iter().map(|r| r.ceiling.items_per_s())),
                    median(
                        rounds
                            .iter()
                            .map(|r| r.sluice.items_per_s() / r.ceiling.items_per_s())
                    ),
                    median(rounds.iter().map(|r| r.sluice.cpu_s_per_million())),
                    median(rounds.iter().map(|r| r.celery.cpu_s_per_million())),
                    median(
                        rounds
                            .iter()
                            .map(|r| r.sluice.cpu.ferretdb / r.sluice.items as f64 * 1e6)
                    ),
                );
            }
            let _ = writeln!(
                out,
                "per-item Celery ({} items): {:.0} items/s, {:.1} CPU s per million; Sluice/that = {:.1}",
                plan.celery_per_item_items,
                number("celery_per_item_w1_items_per_s"),
                number("celery_per_item_w1_cpu_s_per_million"),
                number("ratio_vs_celery_per_item_w1")
            );
            let _ = writeln!(
                out,
                "Redis pipelined XADD ceiling: {:.0}/s",
                number("redis_xadd_per_s")
            );
        }
        if !self.w2.is_empty() {
            let _ = writeln!(
                out,
                "\nW2 sha256 x{} rounds, {} items (Celery: {}): sluice {:.0}/s, celery chunked {:.0}/s (ratio {:.2}), CPU ceiling {:.0}/s (fraction {:.2}); CPU s/M sluice {:.1}, celery {:.1}",
                plan.w2_rounds,
                plan.w2_items,
                plan.celery_w2_items,
                number("w2_items_per_s"),
                number("celery_chunked_w2_items_per_s"),
                number("ratio_vs_celery_chunked_w2"),
                number("w2_cpu_ceiling_items_per_s"),
                number("w2_fraction_of_cpu_ceiling"),
                number("w2_cpu_s_per_million"),
                number("celery_chunked_w2_cpu_s_per_million"),
            );
        }
        if let Some(w3) = &self.w3 {
            let _ = writeln!(out, "\nW3 submit latency, {} batches of {} items from {} clients: p50 {:.1} ms, p99 {:.1} ms", w3.batches, plan.w3_items_per_batch, plan.w3_clients, w3.latency_ms.p50, w3.latency_ms.p99);
        }
        if !self.w4.is_empty() {
            let _ = writeln!(
                out,
                "\nW4 progress latency, publish to receive, ~{:.0} events/s:",
                plan.w4_rate
            );
            for phase in &self.w4 {
                let _ = writeln!(
                    out,
                    "  {:>5} watchers{}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({} deliveries; server RSS {:+.0} KiB; hub skipped {} events; {} watchers missed the last)",
                    phase.watchers,
                    if phase.stalled_watcher { " + 1 stalled" } else { "" },
                    phase.latency_ms.p50,
                    phase.latency_ms.p99,
                    phase.latency_ms.p999,
                    phase.latency_ms.count,
                    phase.server_rss_growth_kb,
                    phase.hub_events_skipped,
                    phase.watchers_missing_end
                );
            }
        }
        if number("w5_server_rss_mb").is_nan() && number("w5_rss_per_watcher_kb").is_nan() {
            return out;
        }
        let _ = writeln!(
            out,
            "\nW5 memory: server peak {:.1} MiB, worker peak {:.1} MiB (during W1); {:.1} KiB per idle watcher ({} watchers)",
            number("w5_server_rss_mb"),
            number("w5_worker_rss_mb"),
            number("w5_rss_per_watcher_kb"),
            plan.w5_watchers
        );
        out
    }
}

/// `--check`: every key the issue lists is present, and every number in it is finite and
/// above zero.
pub(crate) fn check(summary: &Map<String, Value>) -> Result<()> {
    let mut problems = Vec::new();
    for key in REQUIRED {
        match summary.get(key) {
            None => problems.push(format!("{key} is missing")),
            Some(Value::Bool(_)) => {}
            Some(Value::Object(values)) if !values.is_empty() => {
                for (inner, value) in values {
                    if !value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) {
                        problems.push(format!("{key}.{inner} is {value}"));
                    }
                }
            }
            Some(value) => {
                if !value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) {
                    problems.push(format!("{key} is {value}"));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("--check failed: {}", problems.join("; "));
    }
    Ok(())
}
