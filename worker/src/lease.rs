//! A chunk's lease: while a worker works on a message, the message stays pending under its
//! consumer name, and other workers reclaim it only once it has been idle for the visibility
//! timeout. Heartbeats reset that idle time, so a slow but alive worker keeps its chunk; a
//! worker that finds on a heartbeat that another worker took the message stops working on it.
use std::future::Future;

use tracing::warn;

use crate::chunk::ChunkContext;

/// Runs `work` while extending the lease on `entry_id` every heartbeat interval. Returns the
/// work's result, or `lost` as soon as a heartbeat finds the lease taken (the work is dropped
/// then, before it stored anything it has not stored yet).
pub(crate) async fn hold<T>(
    context: &ChunkContext,
    entry_id: &str,
    work: impl Future<Output = T>,
    lost: T,
) -> T {
    let Some(interval) = context.config.heartbeat() else {
        return work.await;
    };
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            _ = heartbeat.tick() => {
                match context.broker.extend_lease(&context.consumer, entry_id).await {
                    Ok(true) => {}
                    Ok(false) => return lost,
                    // Redis is unreachable: keep working. The lease may lapse meanwhile, which
                    // the check before storing the results notices.
                    Err(error) => warn!(%error, "cannot extend the chunk's lease"),
                }
            }
        }
    }
}
