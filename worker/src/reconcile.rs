//! The reconciler: MongoDB is the source of truth, and this pass makes Redis and the batch
//! counters agree with it again after a loss. For every live batch that has not changed for a
//! whole interval it checks:
//! - counts against stored results: a worker that died between storing a chunk's results and
//!   counting them leaves the batch short; it is recounted from its results;
//! - done but not finished: all chunks counted but the state did not move (the worker died
//!   between the two writes); it is finished now;
//! - chunks no queue holds: neither a stored result nor a reference on the stream or in the
//!   retry set (Redis restarted empty, or a server died between storing a chunk and enqueueing
//!   it); they are enqueued again;
//! - uploads abandoned while open (their server died before sealing them) an hour after they
//!   started: they are removed, as a failed upload would have been.
//!
//! A batch that is merely waiting for workers is left alone without reading its results: while
//! a queue holds at least as many of its chunks as it has chunks left to do, none can be lost,
//! and a chunk stored but never counted still has its message pending. Reading every waiting
//! batch's results made each pass cost (waiting batches) × (stored results) on FerretDB, which
//! cannot use an index for `{batch_id}`: a backlog of a thousand small batches kept both cores
//! busy.
//!
//! Every worker runs one; a Redis lock lets one pass run at a time, and every repair is
//! idempotent (results are stored once per chunk, recounts replace counts), so running it in
//! many processes is safe.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mongodb::bson::DateTime;
use sluice::broker::{Broker, QueuedChunk};
use sluice::lock::RedisLock;
use sluice::model::Counters;
use sluice::progress::Progress;
use sluice::store::{BatchRecord, Store};
use sluice::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Most batches one pass checks.
const BATCHES_PER_PASS: u32 = 500;
/// An upload still open this long after it started was abandoned by its server.
const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(3600);

/// What one reconciler needs.
#[derive(Debug, Clone)]
pub(crate) struct Reconciler {
    pub(crate) store: Store,
    pub(crate) broker: Broker,
    pub(crate) progress: Progress,
    pub(crate) interval: Duration,
}

impl Reconciler {
    /// Runs a pass every interval (with jitter, so workers started together spread out) until
    /// `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            let pause = self.interval.mul_f64(0.75 + 0.5 * fastrand::f64());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            if let Err(error) = self.locked_pass().await {
                warn!(%error, "reconciler pass failed; trying again next interval");
            }
        }
    }

    /// One pass, if no other process is running one.
    pub(crate) async fn locked_pass(&self) -> Result<(), Error> {
        let key = self.broker.keys().reconcile_lock();
        // Held at most a few intervals: a holder that dies blocks the next passes no longer.
        let ttl = self.interval.saturating_mul(3).max(Duration::from_secs(10));
        let Some(lock) = RedisLock::try_acquire(self.broker.client(), &key, ttl).await? else {
            debug!("another reconciler pass is running");
            return Ok(());
        };
        let result = self.pass().await;
        lock.release().await;
        result
    }

    async fn pass(&self) -> Result<(), Error> {
        self.remove_abandoned_uploads().await?;
        let idle_since = DateTime::from_millis(
            DateTime::now().timestamp_millis() - self.interval.as_millis() as i64,
        );
        let batches = self
            .store
            .idle_live_batches(idle_since, BATCHES_PER_PASS)
            .await?;
        if batches.is_empty() {
            return Ok(());
        }
        let mut queued: HashMap<String, HashSet<u64>> = HashMap::new();
        for (batch_id, chunk_index) in self.broker.queued_references().await? {
            queued.entry(batch_id).or_default().insert(chunk_index);
        }
        for batch in batches {
            let held = queued.remove(&batch.id).unwrap_or_default();
            self.reconcile(batch, &held).await?;
        }
        Ok(())
    }

    /// Removes batches still open long after they were created: uploads whose server died
    /// before it could seal or discard them.
    async fn remove_abandoned_uploads(&self) -> Result<(), Error> {
        let created_before = DateTime::from_millis(
            DateTime::now().timestamp_millis() - ABANDONED_UPLOAD_AGE.as_millis() as i64,
        );
        for batch in self
            .store
            .abandoned_uploads(created_before, BATCHES_PER_PASS)
            .await?
        {
            warn!(batch_id = %batch.id, "removing an upload abandoned before it was sealed");
            self.progress.discard(&batch.id).await?;
            if let Some(key) = &batch.idempotency_key {
                self.store.release_idempotency_key(key, &batch.id).await?;
            }
        }
        Ok(())
    }

    async fn reconcile(&self, mut batch: BatchRecord, queued: &HashSet<u64>) -> Result<(), Error> {
        if merely_waiting(&batch.counters, queued.len()) {
            return Ok(());
        }
        let stored: HashSet<u64> = self
            .store
            .stored_chunk_tallies(&batch.id)
            .await?
            .into_iter()
            .map(|(chunk_index, _, _)| chunk_index)
            .collect();
        if stored.len() as u64 != batch.counters.chunks_done
            || batch.counters.chunks_done >= batch.counters.chunks_total
        {
            // Looked at without the lock, the batch may just be busy; repair() checks again
            // under it and changes only what a dead worker left.
            match self.progress.repair(&batch.id).await? {
                Some(repaired) => batch = repaired,
                None => return Ok(()),
            }
            if batch.counters.chunks_done >= batch.counters.chunks_total {
                return Ok(());
            }
        }
        let missing: Vec<u64> = (0..batch.counters.chunks_total)
            .filter(|index| !stored.contains(index) && !queued.contains(index))
            .collect();
        if !missing.is_empty() {
            warn!(
                batch_id = %batch.id,
                chunks = missing.len(),
                "chunks without a result are on no queue; enqueueing them again"
            );
            let references: Vec<QueuedChunk> = missing
                .into_iter()
                .map(|index| QueuedChunk {
                    index,
                    inline: None,
                })
                .collect();
            self.broker.enqueue_chunks(&batch.id, &references).await?;
        }
        Ok(())
    }
}

/// Whether a live batch with `counters` and `queued` chunks on the stream or the retry set has
/// every chunk it still needs on a queue, so there is nothing to repair yet.
fn merely_waiting(counters: &Counters, queued: usize) -> bool {
    let outstanding = counters.chunks_total.saturating_sub(counters.chunks_done);
    outstanding > 0 && queued as u64 >= outstanding
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(chunks_total: u64, chunks_done: u64) -> Counters {
        Counters {
            chunks_total,
            chunks_done,
            ..Counters::default()
        }
    }

    #[test]
    fn a_batch_with_every_chunk_left_on_a_queue_is_merely_waiting() {
        assert!(merely_waiting(&counters(10, 0), 10));
        assert!(merely_waiting(&counters(10, 7), 3));
        // Chunks done but not yet acknowledged are still on the stream.
        assert!(merely_waiting(&counters(10, 7), 5));
    }

    #[test]
    fn a_batch_missing_a_chunk_from_the_queues_or_done_is_checked() {
        assert!(
            !merely_waiting(&counters(10, 0), 9),
            "a chunk is on no queue"
        );
        assert!(
            !merely_waiting(&counters(10, 7), 2),
            "a chunk is on no queue"
        );
        assert!(
            !merely_waiting(&counters(10, 10), 0),
            "done but not finished"
        );
        assert!(
            !merely_waiting(&counters(10, 10), 2),
            "done but not finished"
        );
    }
}
