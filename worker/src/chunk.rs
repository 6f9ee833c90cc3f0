//! Processing one chunk, in the order that makes a crash at any point safe: read the batch and
//! the chunk, run the task off the async runtime, store the results under the chunk's
//! deterministic id, add the counts once (only the delivery that stored the results does), move
//! the batch to its terminal state if this was its last chunk, and only then let the caller
//! XACK. Events are published after each change; they are derived from MongoDB, so a lost one
//! costs a watcher only granularity.
use std::sync::Arc;

use sluice::broker::{Broker, ChunkMessage};
use sluice::convert::{event_of, now_timestamp};
use sluice::model::{BatchState, ItemOutcome, Payload};
use sluice::progress::Progress;
use sluice::store::{BatchRecord, Store};
use sluice::tasks::{Task, TaskRegistry};
use sluice::Error;
use tracing::{debug, info, warn};

/// What a worker needs to process chunks.
#[derive(Debug, Clone)]
pub(crate) struct ChunkContext {
    pub(crate) store: Store,
    pub(crate) progress: Progress,
    pub(crate) broker: Broker,
    pub(crate) registry: TaskRegistry,
    /// This worker's consumer name, recorded with the results it stores.
    pub(crate) consumer: String,
}

impl ChunkContext {
    /// Processes one chunk message and acknowledges it once nothing is left to do (processed
    /// now, processed before, or its batch is gone or finished). On `Err` the message stays
    /// pending for retry.
    pub(crate) async fn process(&self, message: &ChunkMessage) -> Result<(), Error> {
        let to_publish = self.apply(message).await?;
        if let Err(error) = self.broker.ack(&message.entry_id).await {
            warn!(%error, "cannot acknowledge chunk; it will be redelivered and skipped");
        }
        for record in &to_publish {
            self.publish(record).await;
        }
        Ok(())
    }

    /// Does the chunk's work; returns the batch changes still to announce (the counts and, for
    /// the last chunk, the terminal state), which are published after the acknowledgement.
    async fn apply(&self, message: &ChunkMessage) -> Result<Vec<BatchRecord>, Error> {
        let batch_id = message.batch_id.as_str();
        let Some(batch) = self.store.get_batch(batch_id).await? else {
            warn!(
                batch_id,
                chunk = message.chunk_index,
                "chunk of an unknown batch; dropping"
            );
            return Ok(Vec::new());
        };
        if batch.state.is_terminal() {
            debug!(batch_id, chunk = message.chunk_index, state = %batch.state, "batch finished; skipping chunk");
            return Ok(Vec::new());
        }
        if batch.state == BatchState::Queued {
            if let Some(running) = self.progress.mark_running(batch_id).await? {
                self.publish(&running).await;
            }
        }
        let Some(chunk) = self.store.get_chunk(batch_id, message.chunk_index).await? else {
            warn!(
                batch_id,
                chunk = message.chunk_index,
                "chunk missing from mongodb; dropping"
            );
            return Ok(Vec::new());
        };
        let task = self.registry.get(&batch.task);
        let params = batch.params.clone();
        let items = chunk.items.clone();
        let outcomes = tokio::task::spawn_blocking(move || run_items(task, &params, &items))
            .await
            .map_err(|error| {
                Error::Unavailable(format!("task panicked or was cancelled: {error}"))
            })?;
        if !self
            .store
            .insert_result(batch_id, &chunk, &outcomes, &self.consumer)
            .await?
        {
            debug!(
                batch_id,
                chunk = chunk.index,
                "results were already stored by an earlier delivery"
            );
            return Ok(Vec::new());
        }
        let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count() as u64;
        let succeeded = outcomes.len() as u64 - failed;
        let Some(updated) = self
            .progress
            .add_chunk_counts(batch_id, succeeded, failed)
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut to_publish = vec![updated.clone()];
        if updated.counters.chunks_done >= updated.counters.chunks_total {
            if let Some(finished) = self.progress.finish(&updated).await? {
                info!(
                    batch_id,
                    state = %finished.state,
                    succeeded = finished.counters.items_succeeded,
                    failed = finished.counters.items_failed,
                    "batch finished"
                );
                to_publish.push(finished);
            }
        }
        Ok(to_publish)
    }

    async fn publish(&self, record: &BatchRecord) {
        if let Err(error) = self
            .broker
            .publish_event(&event_of(record, now_timestamp()))
            .await
        {
            warn!(batch_id = %record.id, %error, "cannot publish progress event");
        }
    }
}

/// Runs the task over the items on the current (blocking) thread. A task this worker does not
/// offer, or params it rejects, make every item fail with that reason.
fn run_items(task: Option<Arc<dyn Task>>, params: &str, items: &[Payload]) -> Vec<ItemOutcome> {
    let processor = match task {
        None => Err("this worker does not offer the batch's task".to_owned()),
        Some(task) => serde_json::from_str(params)
            .map_err(|error| format!("invalid params: {error}"))
            .and_then(|params| {
                task.processor(&params)
                    .map_err(|error| format!("invalid params: {error}"))
            }),
    };
    match processor {
        Ok(mut processor) => items.iter().map(|item| processor.process(item)).collect(),
        Err(reason) => items.iter().map(|_| Err(reason.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tasks_fail_every_item() {
        let items = vec![Payload::Text("a".into()), Payload::Text("b".into())];
        let outcomes = run_items(None, "{}", &items);
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(Result::is_err));
    }

    #[test]
    fn runs_a_known_task() {
        let task = TaskRegistry::builtin().get("echo");
        let items = vec![Payload::Text("a".into())];
        assert_eq!(
            run_items(task, "{}", &items),
            vec![Ok(Payload::Text("a".into()))]
        );
    }
}
