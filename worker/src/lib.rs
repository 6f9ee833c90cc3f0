//! Sluice's worker as a library: [`run`] takes chunk messages from the Redis consumer group —
//! new ones, and ones whose lease expired on a dead or stuck worker — keeps up to
//! `concurrency` of them in flight, and acknowledges each only once its results are stored
//! ([`chunk`] holds the order of writes). Beside the read loop run the retry promoter
//! ([`retry`]) and the reconciler ([`reconcile`]). The binary and the integration tests both
//! call it.
use std::sync::Arc;
use std::time::Duration;

use sluice::broker::{Broker, ChunkMessage};
use sluice::keys::Keys;
use sluice::store::Store;
use sluice::tasks::TaskRegistry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

mod chunk;
mod config;
mod execute;
mod lease;
mod reconcile;
mod retry;

pub use config::WorkerConfig;

/// How long one XREADGROUP waits for new chunks; also bounds how long shutdown waits for the
/// read in progress (a read is never abandoned midway, so no delivered chunk is dropped).
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause after Redis fails before reading again.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The pending-list scan for expired leases restarts from the beginning at most this often,
/// and at least every half visibility timeout.
const LONGEST_RECLAIM_PAUSE: Duration = Duration::from_secs(5);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Connecting to or preparing Redis or MongoDB failed.
    #[error(transparent)]
    Sluice(#[from] sluice::Error),
}

/// Processes chunks of the built-in tasks until `shutdown` is cancelled, then stops reading and
/// gives in-flight chunks the grace period to finish; unfinished ones stay pending in Redis
/// for another worker.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    run_with_tasks(config, TaskRegistry::builtin(), shutdown).await
}

/// [`run`], with the tasks of `registry` (tests add tasks of their own).
pub async fn run_with_tasks(
    config: WorkerConfig,
    registry: TaskRegistry,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let connection = &config.connection;
    let store = Store::connect(&connection.mongo_url, &connection.mongo_db).await?;
    store.ensure_indexes().await?;
    let keys = Keys::new(&connection.key_prefix);
    let broker = Broker::connect_reader(&connection.redis_url, keys).await?;
    broker.ensure_group().await?;
    let consumer = config.consumer_name();
    let progress = sluice::progress::Progress::new(store.clone(), broker.clone());
    let config = Arc::new(config);
    let context = chunk::ChunkContext {
        store: store.clone(),
        progress: progress.clone(),
        broker: broker.clone(),
        registry,
        consumer: consumer.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
    };

    let tasks = TaskTracker::new();
    tasks.spawn(retry::promote_due_retries(broker.clone(), shutdown.clone()));
    if !config.reconcile_interval.is_zero() {
        let reconciler = reconcile::Reconciler {
            store,
            broker: broker.clone(),
            progress,
            interval: config.reconcile_interval,
        };
        tasks.spawn(reconciler.run(shutdown.clone()));
    }
    info!(
        %consumer,
        concurrency = config.concurrency,
        visibility_timeout_s = config.visibility_timeout.as_secs_f64(),
        "sluice-worker reading chunks"
    );

    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut reclaimer = Reclaimer::new(config.visibility_timeout);
    while let Some(permits) = free_slots(&slots, &shutdown).await {
        let messages = match take_messages(&broker, &consumer, &mut reclaimer, permits.len()).await
        {
            Ok(messages) => messages,
            Err(error) => {
                warn!(%error, "cannot read chunks; retrying");
                // A Redis that restarted empty has lost the consumer group too.
                if error.to_string().contains("NOGROUP") {
                    if let Err(error) = broker.ensure_group().await {
                        warn!(%error, "cannot recreate the consumer group");
                    }
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(READ_RETRY_PAUSE) => continue,
                }
            }
        };
        for (message, permit) in messages.into_iter().zip(permits) {
            spawn_chunk(&tasks, &context, message, permit);
        }
    }
    tasks.close();
    info!(
        in_flight = tasks.len(),
        "stopping; waiting for in-flight chunks"
    );
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = tasks.len(),
            "grace period over; unfinished chunks stay pending for another worker"
        );
    }
    info!("sluice-worker stopped");
    Ok(())
}

/// Waits for at least one free slot and takes every free one; `None` on shutdown.
async fn free_slots(
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        permit = slots.clone().acquire_owned() => permit.ok()?,
    };
    let mut permits = vec![first];
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        permits.push(permit);
    }
    Some(permits)
}

/// Up to `wanted` messages: expired leases first (when a scan is due), then new messages,
/// waiting for new ones only when nothing was reclaimed.
async fn take_messages(
    broker: &Broker,
    consumer: &str,
    reclaimer: &mut Reclaimer,
    wanted: usize,
) -> Result<Vec<ChunkMessage>, sluice::Error> {
    let mut messages = reclaimer.reclaim(broker, consumer, wanted).await?;
    let still_wanted = wanted - messages.len();
    if still_wanted > 0 {
        let block = messages.is_empty().then_some(READ_BLOCK);
        messages.extend(
            broker
                .read_chunks(consumer, still_wanted as u64, block)
                .await?,
        );
    }
    Ok(messages)
}

fn spawn_chunk(
    tasks: &TaskTracker,
    context: &chunk::ChunkContext,
    message: ChunkMessage,
    permit: OwnedSemaphorePermit,
) {
    let context = context.clone();
    let span = tracing::info_span!(
        "chunk",
        batch_id = %message.batch_id,
        chunk = message.chunk_index,
        attempt = message.attempt()
    );
    tasks.spawn(
        async move {
            let _permit = permit;
            context.process(message).await;
        }
        .instrument(span),
    );
}

/// Scans the pending list for expired leases, a piece per read, carrying the XAUTOCLAIM cursor
/// forward so no part of the list is left unscanned; a new scan starts at most every half
/// visibility timeout.
struct Reclaimer {
    visibility_timeout: Duration,
    cursor: String,
    next_scan: tokio::time::Instant,
    pause: Duration,
}

impl Reclaimer {
    fn new(visibility_timeout: Duration) -> Self {
        Reclaimer {
            visibility_timeout,
            cursor: "0-0".to_owned(),
            next_scan: tokio::time::Instant::now(),
            pause: (visibility_timeout / 2)
                .clamp(Duration::from_millis(100), LONGEST_RECLAIM_PAUSE),
        }
    }

    async fn reclaim(
        &mut self,
        broker: &Broker,
        consumer: &str,
        wanted: usize,
    ) -> Result<Vec<ChunkMessage>, sluice::Error> {
        if tokio::time::Instant::now() < self.next_scan {
            return Ok(Vec::new());
        }
        let (cursor, messages) = broker
            .reclaim(
                consumer,
                self.visibility_timeout,
                &self.cursor,
                wanted as u64,
            )
            .await?;
        if !messages.is_empty() {
            info!(
                count = messages.len(),
                "reclaimed chunks whose lease expired"
            );
        }
        // "0-0": the scan reached the end of the pending list; the next one starts over later.
        if cursor == "0-0" {
            self.next_scan = tokio::time::Instant::now() + self.pause;
        }
        self.cursor = cursor;
        Ok(messages)
    }
}
