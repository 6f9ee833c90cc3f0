//! The reconciler: MongoDB is the source of truth, and this pass makes Redis and the batch
//! counters agree with it again after a loss. For every live batch that has not changed for a
//! whole interval it checks:
//! - counts against stored results: a worker that died between storing a chunk's results and
//!   counting them leaves the batch short; it is recounted from its results;
//! - done but not finished: all chunks counted but the state did not move (the worker died
//!   between the two writes); it is finished now;
//! - chunks no queue holds: neither a stored result nor a reference on the stream or in the
//!   retry set (Redis restarted empty, or a server died between storing a batch and enqueueing
//!   it); they are enqueued again.
//!
//! Every worker runs one; a Redis lock lets one pass run at a time, and every repair is
//! idempotent (results are stored once per chunk, recounts replace counts), so running it in
//! many processes is safe.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mongodb::bson::DateTime;
use sluice::broker::Broker;
use sluice::lock::RedisLock;
use sluice::progress::Progress;
use sluice::store::{BatchRecord, Store};
use sluice::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most batches one pass checks.
const BATCHES_PER_PASS: u32 = 500;

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

    async fn reconcile(&self, mut batch: BatchRecord, queued: &HashSet<u64>) -> Result<(), Error> {
        let stored: HashSet<u64> = self
            .store
            .stored_chunk_tallies(&batch.id)
            .await?
            .into_iter()
            .map(|(chunk_index, _, _)| chunk_index)
            .collect();
        if stored.len() as u64 != batch.counters.chunks_done {
            warn!(
                batch_id = %batch.id,
                stored = stored.len(),
                counted = batch.counters.chunks_done,
                "counts differ from the stored results; recounting"
            );
            match self.progress.recount(&batch.id).await? {
                Some(recounted) => batch = recounted,
                None => return Ok(()),
            }
        }
        if batch.counters.chunks_done >= batch.counters.chunks_total {
            if let Some(finished) = self.progress.finish(&batch).await? {
                info!(batch_id = %batch.id, state = %finished.state, "finished a stalled batch");
            }
            return Ok(());
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
            self.broker.enqueue_chunks(&batch.id, missing).await?;
        }
        Ok(())
    }
}
