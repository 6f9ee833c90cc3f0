//! The latency and memory workloads: W3 (submit latency under 20 concurrent clients), W4
//! (progress latency, publish to receive, with 1 to 1,000 watchers and one that stops reading)
//! and W5's memory per idle watcher.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use sluice::api::batch_service_client::BatchServiceClient;
use sluice::api::{self, BatchEvent};
use sluice::broker::Broker;
use sluice::keys::Keys;
use sluice::store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::client::{
    age_ms, connect, connect_endpoint, endpoint, text, verify_outputs, watch_to_end,
};
use crate::items::item;
use crate::procs::rss_kb;
use crate::report::Percentiles;
use crate::runs::{start_pipeline, Work};
use crate::Bench;

/// Watch streams per HTTP/2 connection (the server allows 200 concurrent streams on one).
const STREAMS_PER_CONNECTION: usize = 100;
/// Watches opened at once while a phase sets up.
const OPEN_CONCURRENCY: usize = 100;
/// Batches the watchers of W4 and W5 spread over.
const WATCHED_BATCHES: usize = 100;
/// Flow-control window of the watcher that stops reading: room for about a dozen events, so
/// the server feels its backpressure within the first second.
const STALLED_WINDOW_BYTES: u32 = 1_024;
/// Marks the last event of a W4 phase (in `counters.items_total`): readers stop on it.
const END_MARKER: u64 = u64::MAX;
/// How long after its publishing ends a phase waits for every watcher's last event; the
/// hub can drop events when it lags, so a watcher may never see it.
const END_WAIT: Duration = Duration::from_secs(5);
/// How long one W3 batch may take to finish.
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// W3's result.
#[derive(Debug, Clone)]
pub(crate) struct SubmitLatency {
    pub(crate) batches: usize,
    pub(crate) latency_ms: Percentiles,
}

/// W3: `batches` CreateBatch calls of `items_per_batch` items from `clients` concurrent
/// clients, each timed until the batch is accepted and persisted; with two workers running,
/// then every batch watched to its end and its outputs verified.
pub(crate) async fn submit_latency(
    bench: &Bench,
    batches: usize,
    items_per_batch: u64,
    clients: usize,
) -> Result<SubmitLatency> {
    let namespace = bench.namespace("w3");
    let (server, address, workers) = start_pipeline(bench, &namespace).await?;

    let items: Arc<Vec<api::Payload>> = Arc::new(
        (0..items_per_batch)
            .map(|index| text(item(index)))
            .collect(),
    );
    let claimed = Arc::new(AtomicUsize::new(0));
    let mut submitters = JoinSet::new();
    for _ in 0..clients {
        let mut client = connect(address).await?;
        let (items, claimed) = (items.clone(), claimed.clone());
        submitters.spawn(async move {
            let mut latencies = Vec::new();
            let mut ids = Vec::new();
            while claimed.fetch_add(1, Ordering::Relaxed) < batches {
                let request = api::CreateBatchRequest {
                    task: "echo".into(),
                    params: "{}".into(),
                    items: items.as_ref().clone(),
                    ..Default::default()
                };
                let started = Instant::now();
                let response = client.create_batch(request).await?.into_inner();
                latencies.push(started.elapsed().as_secs_f64() * 1e3);
                ids.push(response.batch.context("CreateBatch returned no batch")?.id);
            }
            anyhow::Ok((latencies, ids))
        });
    }
    let mut latencies = Vec::new();
    let mut ids = Vec::new();
    while let Some(joined) = submitters.join_next().await {
        let (client_latencies, client_ids) = joined??;
        latencies.extend(client_latencies);
        ids.extend(client_ids);
    }
    ensure!(
        ids.len() == batches,
        "{} of {batches} batches created",
        ids.len()
    );

    let mut client = connect(address).await?;
    let store = Store::connect(&bench.mongo_url, &namespace).await?;
    for id in &ids {
        watch_to_end(&mut client, id, BATCH_TIMEOUT).await?;
    }
    let expected: Vec<(String, u64)> = ids.into_iter().map(|id| (id, items_per_batch)).collect();
    verify_outputs(&store, &expected, |index, outcome| {
        Work::Echo.check(index, outcome)
    })
    .await?;
    drop(workers);
    drop(server);
    store.database().drop().await?;
    Ok(SubmitLatency {
        batches,
        latency_ms: Percentiles::of(&mut latencies),
    })
}

/// One W4 phase's result.
#[derive(Debug, Clone)]
pub(crate) struct ProgressPhase {
    pub(crate) watchers: usize,
    pub(crate) stalled_watcher: bool,
    pub(crate) events_published: u64,
    pub(crate) latency_ms: Percentiles,
    /// The server's resident memory at the end of publishing minus at its start.
    pub(crate) server_rss_growth_kb: f64,
    /// Watchers whose stream did not carry their batch's last event within [`END_WAIT`].
    pub(crate) watchers_missing_end: usize,
    /// Events the server's hub skipped because its Redis subscriber's receiver lagged (its
    /// "event receiver lagged" warnings).
    pub(crate) hub_events_skipped: u64,
}

/// W4's phases, on one server.
pub(crate) struct ProgressBench {
    _server: crate::procs::Proc,
    server_pid: u32,
    address: SocketAddr,
    broker: Broker,
    batch_ids: Vec<String>,
    sequence: u64,
    namespace: String,
    server_log: std::path::PathBuf,
    mongo_url: String,
}

impl ProgressBench {
    /// A server without workers, and the batches the phases publish events for (stored, so
    /// watches of them are real; they stay QUEUED).
    pub(crate) async fn start(bench: &Bench) -> Result<ProgressBench> {
        let namespace = bench.namespace("w4");
        let (server, address) = bench.launcher.server(&namespace).await?;
        let broker = Broker::new(
            sluice::broker::connect(&bench.redis_url).await?,
            Keys::new(&namespace),
        );
        let batch_ids = create_batches(address, WATCHED_BATCHES).await?;
        Ok(ProgressBench {
            server_pid: server.pid(),
            _server: server,
            address,
            broker,
            batch_ids,
            // Above every stored batch's sequence, so the hub passes every event on.
            sequence: 1_000,
            server_log: bench.launcher.server_log(&namespace),
            namespace,
            mongo_url: bench.mongo_url.clone(),
        })
    }

    /// Drops the phases' database.
    pub(crate) async fn finish(self) -> Result<()> {
        let store = Store::connect(&self.mongo_url, &self.namespace).await?;
        store.database().drop().await?;
        Ok(())
    }

    /// Opens `watchers` watches (spread over up to 100 batches, 100 streams per connection),
    /// plus one on its own connection that stops reading after its snapshot if
    /// `stalled_watcher`; then publishes `rate` events a second for `seconds` through
    /// `Broker::publish_event` (the code workers publish with), round robin over the watched
    /// batches, and measures each event's age when a watcher receives it.
    pub(crate) async fn phase(
        &mut self,
        watchers: usize,
        stalled_watcher: bool,
        seconds: f64,
        rate: f64,
    ) -> Result<ProgressPhase> {
        let batch_ids = self.batch_ids[..watchers.clamp(1, WATCHED_BATCHES)].to_vec();
        let streams = open_watches(self.address, &batch_ids, watchers).await?;
        let stalled = match stalled_watcher {
            true => {
                let endpoint = endpoint(self.address)?
                    .initial_stream_window_size(Some(STALLED_WINDOW_BYTES))
                    .initial_connection_window_size(Some(STALLED_WINDOW_BYTES));
                let mut client = connect_endpoint(endpoint).await?;
                Some(open_watch(&mut client, &batch_ids[0]).await?)
            }
            false => None,
        };
        let stop = CancellationToken::new();
        let mut readers = JoinSet::new();
        for stream in streams {
            readers.spawn(read_ages(stream, stop.clone()));
        }
        let log_start = std::fs::metadata(&self.server_log).map_or(0, |meta| meta.len());

        let rss_before = rss_kb(self.server_pid)?;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let mut published = 0_u64;
        while Instant::now() < deadline {
            ticker.tick().await;
            let batch_id = &batch_ids[published as usize % batch_ids.len()];
            self.publish(batch_id, 0).await?;
            published += 1;
        }
        let rss_after = rss_kb(self.server_pid)?;
        // The end markers go out at the same pace, so they are no burst of their own.
        for batch_id in &batch_ids {
            ticker.tick().await;
            self.publish(batch_id, END_MARKER).await?;
        }

        let mut ages = Vec::new();
        let mut missed_end = 0;
        let end_wait = tokio::time::sleep(END_WAIT);
        tokio::pin!(end_wait);
        loop {
            tokio::select! {
                joined = readers.join_next() => match joined {
                    None => break,
                    Some(joined) => {
                        let (reader_ages, ended) = joined??;
                        ages.extend(reader_ages);
                        missed_end += usize::from(!ended);
                    }
                },
                _ = &mut end_wait, if !stop.is_cancelled() => stop.cancel(),
            }
        }
        drop(stalled);
        ensure!(!ages.is_empty(), "no watcher received an event");
        let hub_events_skipped = skipped_in_log(&self.server_log, log_start)?;
        Ok(ProgressPhase {
            watchers,
            stalled_watcher,
            events_published: published,
            latency_ms: Percentiles::of(&mut ages),
            server_rss_growth_kb: rss_after - rss_before,
            watchers_missing_end: missed_end,
            hub_events_skipped,
        })
    }

    async fn publish(&mut self, batch_id: &str, items_total: u64) -> Result<()> {
        self.sequence += 1;
        let event = BatchEvent {
            batch_id: batch_id.to_owned(),
            sequence: self.sequence,
            state: api::BatchState::Running as i32,
            counters: Some(api::Counters {
                items_total,
                chunks_total: 1,
                ..Default::default()
            }),
            time: Some(sluice::convert::now_timestamp()),
        };
        self.broker.publish_event(&event).await?;
        Ok(())
    }
}

/// W5's watcher memory: the server's resident memory with `watchers` idle WatchBatch streams
/// open (each has received its snapshot) minus without, per watcher, in KiB.
pub(crate) async fn memory_per_watcher(bench: &Bench, watchers: usize) -> Result<f64> {
    let namespace = bench.namespace("w5");
    let (server, address) = bench.launcher.server(&namespace).await?;
    let batch_ids = create_batches(address, WATCHED_BATCHES).await?;
    // One connection's worth first, so what is measured is the watchers, not first-use costs.
    drop(open_watches(address, &batch_ids, STREAMS_PER_CONNECTION).await?);
    let before = rss_kb(server.pid())?;
    let streams = open_watches(address, &batch_ids, watchers).await?;
    let after = rss_kb(server.pid())?;
    drop(streams);
    drop(server);
    Store::connect(&bench.mongo_url, &namespace)
        .await?
        .database()
        .drop()
        .await?;
    Ok((after - before) / watchers as f64)
}

async fn create_batches(address: SocketAddr, count: usize) -> Result<Vec<String>> {
    let mut client = connect(address).await?;
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let request = api::CreateBatchRequest {
            task: "echo".into(),
            params: "{}".into(),
            items: vec![text(item(index as u64))],
            ..Default::default()
        };
        let batch = client.create_batch(request).await?.into_inner().batch;
        ids.push(batch.context("CreateBatch returned no batch")?.id);
    }
    Ok(ids)
}

/// Opens `watchers` watches over `batch_ids` (round robin), `STREAMS_PER_CONNECTION` per
/// connection, each past its snapshot.
async fn open_watches(
    address: SocketAddr,
    batch_ids: &[String],
    watchers: usize,
) -> Result<Vec<Streaming<api::WatchBatchResponse>>> {
    let mut clients = Vec::new();
    for _ in 0..watchers.div_ceil(STREAMS_PER_CONNECTION) {
        clients.push(connect(address).await?);
    }
    futures::stream::iter(0..watchers)
        .map(|index| {
            let mut client = clients[index / STREAMS_PER_CONNECTION].clone();
            let batch_id = batch_ids[index % batch_ids.len()].clone();
            async move { open_watch(&mut client, &batch_id).await }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await
}

async fn open_watch(
    client: &mut BatchServiceClient<Channel>,
    batch_id: &str,
) -> Result<Streaming<api::WatchBatchResponse>> {
    let request = api::WatchBatchRequest {
        batch_id: batch_id.to_owned(),
        after_sequence: 0,
    };
    let mut stream = client.watch_batch(request).await?.into_inner();
    stream
        .message()
        .await?
        .context("the watch ended before its snapshot")?;
    Ok(stream)
}

/// Reads a watch until the end marker or `stop`, returning each event's age on arrival and
/// whether the end marker came.
async fn read_ages(
    mut stream: Streaming<api::WatchBatchResponse>,
    stop: CancellationToken,
) -> Result<(Vec<f64>, bool)> {
    let mut ages = Vec::new();
    loop {
        let response = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok((ages, false)),
            response = stream.message() => response?,
        };
        let Some(response) = response else {
            anyhow::bail!("the watch ended before the end marker");
        };
        let Some(event) = response.event else {
            continue;
        };
        let age = age_ms(&event);
        if event
            .counters
            .is_some_and(|counters| counters.items_total == END_MARKER)
        {
            return Ok((ages, true));
        }
        ages.extend(age);
    }
}

/// Sums the `skipped` counts of the hub's "event receiver lagged" warnings written to the
/// server's JSON log after byte `from`.
fn skipped_in_log(log: &std::path::Path, from: u64) -> Result<u64> {
    let text = std::fs::read(log)?;
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    let skipped = String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("lagged"))
        })
        .filter_map(|entry| entry["fields"]["skipped"].as_u64())
        .sum();
    Ok(skipped)
}
