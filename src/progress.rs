//! Changes to a batch's state and counters, serialized per batch.
//!
//! MongoDB applies `findAndModify` with `$inc` atomically, but FerretDB (the MongoDB-wire
//! server this project tests against) runs it as a read, a change in its own memory and a
//! write, with no isolation between concurrent callers: two workers finishing chunks of one
//! batch at once lose one increment, and a cancel can overwrite a worker's update. So every
//! read-modify-write of a batch document holds a short per-batch lock in Redis (`SET NX PX`,
//! released by a compare-and-delete script), which makes the updates correct on both servers.
//! The lock expires on its own if its holder dies.
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::store::{BatchRecord, CancelOutcome, Store};

/// How long a lock lives if its holder dies while holding it; far longer than the one update
/// it guards, which the store's own timeouts bound.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a caller waits for a lock before reporting the batch unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Pause between attempts to take a held lock.
const LOCK_RETRY: Duration = Duration::from_millis(2);

/// Deletes the lock only if this holder still owns it.
const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Serialized batch updates.
#[derive(Debug, Clone)]
pub struct Progress {
    store: Store,
    broker: Broker,
}

impl Progress {
    /// Updates through `store`, locked in `broker`'s Redis.
    pub fn new(store: Store, broker: Broker) -> Self {
        Progress { store, broker }
    }

    /// Moves a QUEUED batch to RUNNING; `None` if it was not QUEUED.
    pub async fn mark_running(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let lock = self.lock(batch_id).await?;
        let changed = self.store.mark_running(batch_id).await;
        lock.release().await;
        changed
    }

    /// Adds one stored chunk's counts; `None` if the batch is no longer live.
    pub async fn add_chunk_counts(
        &self,
        batch_id: &str,
        succeeded: u64,
        failed: u64,
    ) -> Result<Option<BatchRecord>> {
        let lock = self.lock(batch_id).await?;
        let changed = self
            .store
            .add_chunk_counts(batch_id, succeeded, failed)
            .await;
        lock.release().await;
        changed
    }

    /// Moves a batch whose chunks are all done to its terminal state; `None` if it is not
    /// done or another process finished it.
    pub async fn finish(&self, batch: &BatchRecord) -> Result<Option<BatchRecord>> {
        let lock = self.lock(&batch.id).await?;
        let changed = self.store.finish(batch).await;
        lock.release().await;
        changed
    }

    /// Cancels a live batch.
    pub async fn cancel(&self, batch_id: &str) -> Result<CancelOutcome> {
        let lock = self.lock(batch_id).await?;
        let changed = self.store.cancel(batch_id).await;
        lock.release().await;
        changed
    }

    async fn lock(&self, batch_id: &str) -> Result<BatchLock<'_>> {
        let key = self.broker.keys().batch_lock(batch_id);
        let token = uuid::Uuid::now_v7().simple().to_string();
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let taken: Option<String> = self
                .broker
                .client()
                .set(
                    &key,
                    token.as_str(),
                    Some(Expiration::PX(LOCK_TTL.as_millis() as i64)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if taken.is_some() {
                return Ok(BatchLock {
                    broker: &self.broker,
                    key,
                    token,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "batch {batch_id} is busy; retry"
                )));
            }
            // Backoff between attempts at a lock held for one short update.
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }
}

/// A held batch lock. Released explicitly (release is async); if a caller drops it without
/// releasing, it expires after [`LOCK_TTL`].
#[must_use]
struct BatchLock<'a> {
    broker: &'a Broker,
    key: String,
    token: String,
}

impl BatchLock<'_> {
    async fn release(self) {
        let released: std::result::Result<i64, _> = self
            .broker
            .client()
            .eval(
                RELEASE_SCRIPT,
                vec![self.key.clone()],
                vec![self.token.clone()],
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(key = %self.key, %error, "cannot release batch lock; it will expire");
        }
    }
}
