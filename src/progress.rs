//! Changes to a batch's state and counters, serialized per batch, each announced as it happens.
//!
//! MongoDB applies `findAndModify` with `$inc` atomically, but FerretDB (the MongoDB-wire
//! server this project tests against) runs it as a read, a change in its own memory and a
//! write, with no isolation between concurrent callers: two workers finishing chunks of one
//! batch at once lose one increment, and a cancel can overwrite a worker's update. So every
//! read-modify-write of a batch document holds a short per-batch lock in Redis (`SET NX PX`,
//! released by a compare-and-delete script, [`crate::lock`]), which makes the updates correct on both servers.
//! The lock expires on its own if its holder dies.
//!
//! The progress event of each change is published while the lock is still held, so events
//! reach the servers in sequence order and a watcher that keeps up sees every one of them.
use std::time::Duration;

use crate::broker::Broker;
use crate::convert::{event_of, now_timestamp};
use crate::error::Result;
use crate::lock::RedisLock;
use crate::store::{BatchRecord, CancelOutcome, Store};

/// How long a lock lives if its holder dies while holding it; far longer than the one update
/// it guards, which the store's own timeouts bound.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a caller waits for a lock before reporting the batch unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Serialized, announced batch updates.
#[derive(Debug, Clone)]
pub struct Progress {
    store: Store,
    broker: Broker,
}

impl Progress {
    /// Updates through `store`, locked and announced through `broker`'s Redis.
    pub fn new(store: Store, broker: Broker) -> Self {
        Progress { store, broker }
    }

    /// Moves a QUEUED batch to RUNNING; `None` if it was not QUEUED.
    pub async fn mark_running(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        self.locked(batch_id, self.store.mark_running(batch_id))
            .await
    }

    /// Adds one stored chunk's counts to a batch still at `generation`; `None` if the batch is
    /// no longer live or was recounted since.
    pub async fn add_chunk_counts(
        &self,
        batch_id: &str,
        generation: u64,
        succeeded: u64,
        failed: u64,
    ) -> Result<Option<BatchRecord>> {
        let update = self
            .store
            .add_chunk_counts(batch_id, generation, succeeded, failed);
        self.locked(batch_id, update).await
    }

    /// Moves a batch whose chunks are all done to its terminal state; `None` if it is not
    /// done or another process finished it.
    pub async fn finish(&self, batch: &BatchRecord) -> Result<Option<BatchRecord>> {
        self.locked(&batch.id, self.store.finish(batch)).await
    }

    /// Recounts a live batch from its stored results (the reconciler's repair for a worker
    /// that died between storing a chunk's results and counting them); `None` if the batch is
    /// no longer live. The totals are read under the lock, so no count lands in between.
    pub async fn recount(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let recount = async {
            let totals = self.store.result_totals(batch_id).await?;
            self.store.set_counts(batch_id, totals).await
        };
        self.locked(batch_id, recount).await
    }

    /// Cancels a live batch.
    pub async fn cancel(&self, batch_id: &str) -> Result<CancelOutcome> {
        let lock = self.lock(batch_id).await?;
        let changed = self.store.cancel(batch_id).await;
        if let Ok(CancelOutcome::Cancelled(record)) = &changed {
            self.announce(record).await;
        }
        lock.release().await;
        changed
    }

    /// Runs `update` under the batch's lock and announces the batch it returns.
    async fn locked(
        &self,
        batch_id: &str,
        update: impl std::future::Future<Output = Result<Option<BatchRecord>>>,
    ) -> Result<Option<BatchRecord>> {
        let lock = self.lock(batch_id).await?;
        let changed = update.await;
        if let Ok(Some(record)) = &changed {
            self.announce(record).await;
        }
        lock.release().await;
        changed
    }

    /// Publishes the event of a change. A lost event costs watchers only granularity: servers
    /// re-read watched batches from MongoDB.
    async fn announce(&self, record: &BatchRecord) {
        let event = event_of(record, now_timestamp());
        if let Err(error) = self.broker.publish_event(&event).await {
            tracing::warn!(batch_id = %record.id, %error, "cannot publish progress event");
        }
    }

    async fn lock(&self, batch_id: &str) -> Result<RedisLock> {
        let key = self.broker.keys().batch_lock(batch_id);
        RedisLock::acquire(self.broker.client(), &key, LOCK_TTL, LOCK_WAIT).await
    }
}
