//! Sluice's worker as a library: [`run`] reads chunk messages from the Redis consumer group,
//! keeps up to `concurrency` chunks in flight, and acknowledges each only after its results
//! are stored (see [`chunk`] for the order of writes). The binary and the integration tests
//! both call it.
use std::sync::Arc;
use std::time::Duration;

use sluice::broker::Broker;
use sluice::keys::Keys;
use sluice::store::Store;
use sluice::tasks::TaskRegistry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

mod chunk;
mod config;

pub use config::WorkerConfig;

/// How long one XREADGROUP waits for new chunks; also bounds how long shutdown waits for the
/// read in progress (a read is never abandoned midway, so no delivered chunk is dropped).
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause after Redis fails before reading again.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Connecting to or preparing Redis or MongoDB failed.
    #[error(transparent)]
    Sluice(#[from] sluice::Error),
}

/// Processes chunks until `shutdown` is cancelled, then stops reading and gives in-flight
/// chunks the grace period to finish; unfinished ones stay pending in Redis for another worker.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let connection = &config.connection;
    let store = Store::connect(&connection.mongo_url, &connection.mongo_db).await?;
    let keys = Keys::new(&connection.key_prefix);
    let broker = Broker::connect_reader(&connection.redis_url, keys).await?;
    broker.ensure_group().await?;
    let consumer = config.consumer_name();
    let context = chunk::ChunkContext {
        progress: sluice::progress::Progress::new(store.clone(), broker.clone()),
        store,
        broker: broker.clone(),
        registry: TaskRegistry::builtin(),
        consumer: consumer.clone(),
    };
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let tasks = TaskTracker::new();
    info!(%consumer, concurrency = config.concurrency, "sluice-worker reading chunks");

    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let messages = match broker
            .read_chunks(&consumer, permits.len() as u64, READ_BLOCK)
            .await
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
            let context = context.clone();
            let span = tracing::info_span!("chunk", batch_id = %message.batch_id, chunk = message.chunk_index);
            tasks.spawn(
                async move {
                    let _permit = permit;
                    if let Err(error) = context.process(&message).await {
                        warn!(%error, "chunk failed; left pending for retry");
                    }
                }
                .instrument(span),
            );
        }
    }
    tasks.close();
    info!(
        in_flight = tasks.len(),
        "stopping; waiting for in-flight chunks"
    );
    if tokio::time::timeout(config.grace(), tasks.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = tasks.len(),
            "grace period over; unfinished chunks stay pending"
        );
    }
    info!("sluice-worker stopped");
    Ok(())
}
