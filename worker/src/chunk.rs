//! One delivery of one chunk, in the order that makes a crash at any point safe: read the batch
//! and the chunk, run the task ([`crate::execute`]), check the lease is still ours, store the
//! results under the chunk's deterministic id, add the counts once (only the delivery that
//! stored the results does, and only against the batch generation it read), move the batch to
//! its terminal state if this was its last chunk, and only then acknowledge the message.
//!
//! While it works the worker holds the message's lease, extending it with heartbeats
//! ([`crate::lease`]). A MongoDB or Redis outage is waited out holding the lease, without
//! spending an attempt; any other failure spends one: the chunk goes to the retry set with a
//! backoff, or, after the last attempt, to the dead-letter stream with its items recorded as
//! failed, so the batch still finishes.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::DateTime;
use sluice::broker::{Broker, ChunkMessage, DeadLetter};
use sluice::model::ItemOutcome;
use sluice::progress::{Progress, Recorded};
use sluice::store::{BatchRecord, ResultOrigin, Store, StoredChunk};
use sluice::tasks::TaskRegistry;
use sluice::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::execute::{run_chunk, Run};
use crate::retry::retry_delay;
use crate::WorkerConfig;

/// First pause while MongoDB or Redis is unreachable; it doubles up to [`OUTAGE_MAX_PAUSE`].
const OUTAGE_FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between tries during an outage.
const OUTAGE_MAX_PAUSE: Duration = Duration::from_secs(5);

/// What a worker needs to process chunks.
#[derive(Debug, Clone)]
pub(crate) struct ChunkContext {
    pub(crate) store: Store,
    pub(crate) progress: Progress,
    pub(crate) broker: Broker,
    pub(crate) registry: TaskRegistry,
    /// This worker's consumer name, recorded with the results it stores.
    pub(crate) consumer: String,
    pub(crate) config: Arc<WorkerConfig>,
    /// Set when the worker shuts down: outage waits give up and leave their chunk pending.
    pub(crate) shutdown: CancellationToken,
}

/// How one delivery of a chunk ended.
#[derive(Debug)]
enum Ending {
    /// Nothing is left to do with this message (done now, done before, or its batch is gone
    /// or finished): acknowledge it.
    Done,
    /// Another worker reclaimed the message: it is theirs now.
    LeaseLost,
    /// The attempt failed for a reason that may pass.
    Failed(String),
    /// The worker is shutting down while a store is unreachable: leave the message pending,
    /// another worker reclaims it.
    Abandoned,
}

/// An outage outlasted the worker, or an operation failed outright.
enum Stop {
    ShuttingDown,
    Failed(Error),
}

impl ChunkContext {
    /// Processes one delivery of a chunk message, from start to its acknowledgement (or its
    /// move to the retry set or dead-letter stream).
    pub(crate) async fn process(&self, message: ChunkMessage) {
        let attempt = message.attempt();
        let max_attempts = u64::from(self.config.max_attempts);
        if attempt > max_attempts {
            // Every earlier delivery ended with its worker gone (a crash, a lost lease), maybe
            // because this very chunk kills workers: do not run it again.
            let reason = format!(
                "{} deliveries ended without a result (worker stopped or lost its lease)",
                attempt - 1
            );
            return self.give_up(&message, attempt - 1, &reason).await;
        }
        let work = self.attempt(&message, attempt);
        match crate::lease::hold(self, &message.entry_id, work, Ending::LeaseLost).await {
            Ending::Done => self.acknowledge(&message).await,
            Ending::LeaseLost => info!("another worker reclaimed the chunk; leaving it to them"),
            Ending::Abandoned => info!("shutting down during an outage; chunk left pending"),
            Ending::Failed(reason) if attempt < max_attempts => {
                let jitter = fastrand::f64();
                let delay = retry_delay(
                    attempt,
                    self.config.retry_backoff,
                    self.config.retry_backoff_max,
                    jitter,
                );
                match self
                    .broker
                    .retry_later(&self.consumer, &message, delay)
                    .await
                {
                    Ok(true) => warn!(
                        attempt,
                        %reason,
                        retry_in_s = delay.as_secs_f64(),
                        "chunk attempt failed; retrying later"
                    ),
                    Ok(false) => info!("chunk attempt failed, and another worker has it now"),
                    Err(error) => warn!(
                        attempt,
                        %reason,
                        %error,
                        "chunk attempt failed and cannot be scheduled; it is reclaimed after the visibility timeout"
                    ),
                }
            }
            Ending::Failed(reason) => self.give_up(&message, attempt, &reason).await,
        }
    }

    /// One attempt, waiting out outages.
    async fn attempt(&self, message: &ChunkMessage, attempt: u64) -> Ending {
        let started_at = DateTime::now();
        // The task's outcomes survive an outage during the writes, so it is not run twice.
        let mut outcomes = None;
        let mut pause = OUTAGE_FIRST_PAUSE;
        loop {
            match self
                .try_attempt(message, attempt, started_at, &mut outcomes)
                .await
            {
                Ok(ending) => return ending,
                Err(error) if error.is_outage() => {
                    warn!(%error, "store unreachable; holding the chunk and trying again");
                    if self.pause(pause).await.is_err() {
                        return Ending::Abandoned;
                    }
                    pause = (pause * 2).min(OUTAGE_MAX_PAUSE);
                }
                Err(error) => return Ending::Failed(error.to_string()),
            }
        }
    }

    async fn try_attempt(
        &self,
        message: &ChunkMessage,
        attempt: u64,
        started_at: DateTime,
        outcomes: &mut Option<Vec<ItemOutcome>>,
    ) -> Result<Ending, Error> {
        let Some((batch, chunk)) = self.load(message).await? else {
            return Ok(Ending::Done);
        };
        if outcomes.is_none() {
            let run = run_chunk(
                self.registry.get(&batch.task),
                batch.params.clone(),
                chunk.items.clone(),
                self.config.chunk_timeout,
                &self.store,
                &batch.id,
            )
            .await;
            match run {
                Run::Finished(finished) => *outcomes = Some(finished),
                Run::Cancelled => {
                    debug!("batch cancelled while the chunk ran; nothing recorded");
                    return Ok(Ending::Done);
                }
                Run::Failed(reason) => return Ok(Ending::Failed(reason)),
            }
        }
        // Another worker may have reclaimed the chunk while this one was slow: then its results
        // are theirs to store. (Storing them anyway would still be safe: the first insert
        // wins.) A Redis error here is no reason to throw the work away.
        if let Ok(false) = self
            .broker
            .extend_lease(&self.consumer, &message.entry_id)
            .await
        {
            return Ok(Ending::LeaseLost);
        }
        let origin = ResultOrigin {
            worker: &self.consumer,
            attempt,
            started_at,
        };
        let stored = outcomes.as_deref().unwrap_or_default();
        self.record(&batch, &chunk, stored, &origin).await?;
        Ok(Ending::Done)
    }

    /// The message's batch and chunk; `None` if there is nothing to do (the batch is gone or
    /// finished, or the chunk is missing). A QUEUED batch becomes RUNNING here.
    async fn load(
        &self,
        message: &ChunkMessage,
    ) -> Result<Option<(BatchRecord, StoredChunk)>, Error> {
        let batch_id = message.batch_id.as_str();
        let Some(batch) = self.store.get_batch(batch_id).await? else {
            warn!("chunk of an unknown batch; dropping it");
            return Ok(None);
        };
        if batch.state.is_terminal() {
            debug!(state = %batch.state, "batch finished; skipping the chunk");
            return Ok(None);
        }
        // Small chunks travel with their items; others are read from MongoDB.
        let chunk = match &message.inline {
            Some(inline) => StoredChunk {
                index: message.chunk_index,
                first_item: inline.first_item,
                items: inline.items.clone(),
            },
            None => match self.store.get_chunk(batch_id, message.chunk_index).await? {
                Some(chunk) => chunk,
                None => {
                    warn!("chunk missing from mongodb; dropping it");
                    return Ok(None);
                }
            },
        };
        if batch.state == sluice::model::BatchState::Queued {
            self.progress.mark_running(batch_id).await?;
        }
        Ok(Some((batch, chunk)))
    }

    /// Stores a chunk's outcomes once, counts them once, and finishes the batch after its last
    /// chunk (one locked step, [`Progress::record_chunk`]).
    async fn record(
        &self,
        batch: &BatchRecord,
        chunk: &StoredChunk,
        outcomes: &[ItemOutcome],
        origin: &ResultOrigin<'_>,
    ) -> Result<(), Error> {
        match self
            .progress
            .record_chunk(&batch.id, chunk, outcomes, origin)
            .await?
        {
            Recorded::Counted(updated) if updated.state.is_terminal() => info!(
                state = %updated.state,
                succeeded = updated.counters.items_succeeded,
                failed = updated.counters.items_failed,
                "batch finished"
            ),
            Recorded::Counted(_) => {}
            Recorded::AlreadyStored => debug!("results were already stored by an earlier delivery"),
            Recorded::BatchEnded => debug!("batch ended while the chunk ran; nothing recorded"),
        }
        Ok(())
    }

    /// After the last attempt: records every item of the chunk as failed with `reason`, so the
    /// batch can finish (FAILED), then moves the message to the dead-letter stream.
    async fn give_up(&self, message: &ChunkMessage, attempts: u64, reason: &str) {
        let item_error = format!("gave up after {attempts} attempts: {reason}");
        let recorded = self
            .patiently(|| async {
                let Some((batch, chunk)) = self.load(message).await? else {
                    return Ok(());
                };
                let outcomes: Vec<ItemOutcome> = chunk
                    .items
                    .iter()
                    .map(|_| Err(item_error.clone()))
                    .collect();
                let origin = ResultOrigin {
                    worker: &self.consumer,
                    attempt: attempts,
                    started_at: DateTime::now(),
                };
                self.record(&batch, &chunk, &outcomes, &origin).await
            })
            .await;
        match recorded {
            Ok(()) => {}
            Err(Stop::ShuttingDown) => return info!("shutting down; chunk left pending"),
            Err(Stop::Failed(error)) => {
                // Left pending: the next delivery tries to record the failure again.
                return warn!(%error, "cannot record the chunk's failure; leaving it pending");
            }
        }
        let letter = DeadLetter {
            message,
            reason,
            consumer: &self.consumer,
        };
        match self
            .broker
            .dead_letter(letter, self.config.dead_letter_max)
            .await
        {
            Ok(()) => warn!(
                attempts,
                reason, "chunk failed its last attempt; dead-lettered"
            ),
            Err(error) => warn!(%error, "cannot dead-letter the chunk; its failure is recorded"),
        }
    }

    /// Acknowledges a message whose work is done. If that fails the message is delivered again
    /// later and skipped then, its results being stored.
    async fn acknowledge(&self, message: &ChunkMessage) {
        if let Err(error) = self.broker.ack(&message.entry_id).await {
            warn!(%error, "cannot acknowledge chunk; it will be redelivered and skipped");
        }
    }

    /// Runs `operation` until it succeeds or fails for a reason other than an outage, pausing
    /// longer after each outage; gives up when the worker shuts down.
    async fn patiently<T, F, Fut>(&self, mut operation: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut pause = OUTAGE_FIRST_PAUSE;
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_outage() => {
                    warn!(%error, "store unreachable; trying again");
                    self.pause(pause).await.map_err(|()| Stop::ShuttingDown)?;
                    pause = (pause * 2).min(OUTAGE_MAX_PAUSE);
                }
                Err(error) => return Err(Stop::Failed(error)),
            }
        }
    }

    /// Sleeps `pause`, or returns `Err` at once if the worker is shutting down.
    async fn pause(&self, pause: Duration) -> Result<(), ()> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(()),
            _ = tokio::time::sleep(pause) => Ok(()),
        }
    }
}
