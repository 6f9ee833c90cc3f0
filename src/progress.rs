//! Changes to a batch's state and counters, serialized per batch, each announced as it happens.
//!
//! MongoDB applies `findAndModify` with `$inc` atomically, but FerretDB (the MongoDB-wire
//! server this project tests against) runs every update as a query, a change in its own memory
//! and a write, with no isolation between concurrent callers: two workers finishing chunks of
//! one batch at once lose one increment, and a cancel can overwrite a worker's update. So every
//! change of a batch holds a short per-batch lock in Redis ([`crate::lock`]), which makes the
//! updates correct on both servers.
//!
//! Recording a chunk — storing its results, counting them, finishing the batch after its last
//! chunk — is one step under that lock. So outside a crash, stored results and counters always
//! agree, a cancelled batch never gains results, and the reconciler's recount (also under the
//! lock) only ever repairs what a dead worker left. The progress event of each change is
//! published while the lock is held, so events reach the servers in sequence order.
use std::future::Future;
use std::time::Duration;

use crate::broker::Broker;
use crate::convert::{event_of, now_timestamp};
use crate::error::{Error, Result};
use crate::lock::RedisLock;
use crate::model::ItemOutcome;
use crate::store::{BatchRecord, CancelOutcome, ResultOrigin, Store, StoredChunk};

/// How long a lock lives if its holder dies while holding it: the longest a batch can stall
/// behind a dead worker.
const LOCK_TTL: Duration = Duration::from_secs(5);
/// How long one locked step may take; it gives up well before the lock could expire under it.
const LOCKED_STEP_LIMIT: Duration = Duration::from_secs(4);
/// How long a caller waits for a lock before reporting the batch unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Serialized, announced batch updates.
#[derive(Debug, Clone)]
pub struct Progress {
    store: Store,
    broker: Broker,
}

/// What [`Progress::record_chunk`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The results are stored and counted; the batch after it (finished, if this was its last
    /// chunk).
    Counted(BatchRecord),
    /// An earlier delivery stored this chunk's results; nothing changed.
    AlreadyStored,
    /// The batch is gone or finished (cancelled while the chunk ran); nothing was stored.
    BatchEnded,
}

impl Progress {
    /// Updates through `store`, locked and announced through `broker`'s Redis.
    pub fn new(store: Store, broker: Broker) -> Self {
        Progress { store, broker }
    }

    /// Moves a QUEUED batch to RUNNING; `None` if it was not QUEUED.
    pub async fn mark_running(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        self.locked(batch_id, async {
            let running = self.store.mark_running(batch_id).await?;
            self.announce_all(running.as_slice()).await;
            Ok(running)
        })
        .await
    }

    /// Stores a chunk's outcomes once, counts them once, and finishes the batch after its last
    /// chunk, as one step under the batch's lock.
    pub async fn record_chunk(
        &self,
        batch_id: &str,
        chunk: &StoredChunk,
        outcomes: &[ItemOutcome],
        origin: &ResultOrigin<'_>,
    ) -> Result<Recorded> {
        self.locked(batch_id, async {
            let Some(batch) = self.store.get_batch(batch_id).await? else {
                return Ok(Recorded::BatchEnded);
            };
            if batch.state.is_terminal() {
                return Ok(Recorded::BatchEnded);
            }
            if !self
                .store
                .insert_result(batch_id, chunk, outcomes, origin)
                .await?
            {
                return Ok(Recorded::AlreadyStored);
            }
            let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count() as u64;
            let succeeded = outcomes.len() as u64 - failed;
            // The generation read under this lock: a count only lands if no recount ran since,
            // which could only happen if this step outlived its lock.
            let counted = self
                .store
                .add_chunk_counts(batch_id, batch.generation, succeeded, failed)
                .await?
                .ok_or_else(|| Error::Unavailable("batch changed under its lock".to_owned()))?;
            let finished = self.finish_if_done(&counted).await?;
            let mut changes = vec![counted.clone()];
            changes.extend(finished.clone());
            self.announce_all(&changes).await;
            Ok(Recorded::Counted(finished.unwrap_or(counted)))
        })
        .await
    }

    /// Repairs a live batch whose counters disagree with its stored results (a worker died
    /// between the two writes), and finishes it if every chunk is done (a worker died between
    /// counting the last chunk and finishing). Checked again under the lock, so a batch that is
    /// merely busy is left alone. Returns the batch as it is after the repair; `None` if it is
    /// no longer live.
    pub async fn repair(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        self.locked(batch_id, async {
            let Some(mut batch) = self.store.get_batch(batch_id).await? else {
                return Ok(None);
            };
            if batch.state.is_terminal() {
                return Ok(None);
            }
            let totals = self.store.result_totals(batch_id).await?;
            let mut changes = Vec::new();
            if totals.chunks_done != batch.counters.chunks_done
                || totals.items_succeeded != batch.counters.items_succeeded
                || totals.items_failed != batch.counters.items_failed
            {
                tracing::warn!(
                    batch_id,
                    stored = totals.chunks_done,
                    counted = batch.counters.chunks_done,
                    "counts differ from the stored results; recounting"
                );
                let Some(recounted) = self.store.set_counts(batch_id, totals).await? else {
                    return Ok(None);
                };
                batch = recounted;
                changes.push(batch.clone());
            }
            if let Some(finished) = self.finish_if_done(&batch).await? {
                tracing::info!(batch_id, state = %finished.state, "finished a stalled batch");
                batch = finished;
                changes.push(batch.clone());
            }
            self.announce_all(&changes).await;
            Ok((!batch.state.is_terminal()).then_some(batch))
        })
        .await
    }

    /// Closes an open batch whose upload is complete with its totals, and finishes it at once
    /// if its workers are already done; `None` if it is no longer open (discarded).
    pub async fn seal(
        &self,
        batch_id: &str,
        items_total: u64,
        chunks_total: u64,
    ) -> Result<Option<BatchRecord>> {
        self.locked(batch_id, async {
            let Some(sealed) = self.store.seal(batch_id, items_total, chunks_total).await? else {
                return Ok(None);
            };
            let finished = self.finish_if_done(&sealed).await?;
            let mut changes = vec![sealed.clone()];
            changes.extend(finished.clone());
            self.announce_all(&changes).await;
            Ok(Some(finished.unwrap_or(sealed)))
        })
        .await
    }

    /// Removes a batch and everything stored for it: the document first, under the lock, so
    /// no worker records another chunk of it; then its chunks and results.
    pub async fn discard(&self, batch_id: &str) -> Result<()> {
        self.locked(batch_id, self.store.delete_batch_document(batch_id))
            .await?;
        self.store.delete_batch_data(batch_id).await
    }

    /// Cancels a live batch.
    pub async fn cancel(&self, batch_id: &str) -> Result<CancelOutcome> {
        self.locked(batch_id, async {
            let outcome = self.store.cancel(batch_id).await?;
            if let CancelOutcome::Cancelled(record) = &outcome {
                self.announce_all(std::slice::from_ref(record)).await;
            }
            Ok(outcome)
        })
        .await
    }

    /// Moves a batch whose every chunk is done to its terminal state (call under its lock).
    async fn finish_if_done(&self, batch: &BatchRecord) -> Result<Option<BatchRecord>> {
        if batch.open || batch.counters.chunks_done < batch.counters.chunks_total {
            return Ok(None);
        }
        self.store.finish(batch).await
    }

    /// Runs `step` holding the batch's lock, for at most [`LOCKED_STEP_LIMIT`].
    async fn locked<T>(&self, batch_id: &str, step: impl Future<Output = Result<T>>) -> Result<T> {
        let key = self.broker.keys().batch_lock(batch_id);
        let lock = RedisLock::acquire(self.broker.client(), &key, LOCK_TTL, LOCK_WAIT).await?;
        let result = tokio::time::timeout(LOCKED_STEP_LIMIT, step).await;
        lock.release().await;
        result.unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "updating batch {batch_id} took too long; retry"
            )))
        })
    }

    /// Publishes the events of changes, in order. A lost event costs watchers only
    /// granularity: servers re-read watched batches from MongoDB.
    async fn announce_all(&self, changes: &[BatchRecord]) {
        for record in changes {
            let event = event_of(record, now_timestamp());
            if let Err(error) = self.broker.publish_event(&event).await {
                tracing::warn!(batch_id = %record.id, %error, "cannot publish progress event");
            }
        }
    }
}
