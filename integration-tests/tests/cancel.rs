//! Cancelling a running batch: it ends CANCELLED at once for every watcher, no worker starts a
//! new chunk of it afterwards, its counters say what did finish, and the results stored before
//! the cancel stay readable — exactly those, no more.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::*;
use sluice::api::{self, BatchState};
use sluice::model::Payload;
use sluice::tasks::{ItemProcessor, Task, TaskRegistry};

/// `paced`: waits 100 ms per item and echoes it, noting when each chunk attempt starts.
#[derive(Clone, Default)]
struct Paced {
    starts: Arc<Mutex<Vec<Instant>>>,
}

impl Task for Paced {
    fn name(&self) -> &'static str {
        "paced"
    }

    fn description(&self) -> &'static str {
        "waits 100 ms per item; records chunk starts"
    }

    fn params_schema(&self) -> &'static str {
        "{}"
    }

    fn validate(&self, _params: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    fn processor(&self, _params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        self.starts
            .lock()
            .expect("not poisoned")
            .push(Instant::now());
        Ok(Box::new(|item: &Payload| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(item.clone())
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_ends_at_once_and_starts_no_new_chunk() {
    let mut env = TestEnv::new("cancel").await;
    let paced = Paced::default();
    let starts = paced.starts.clone();
    let mut registry = TaskRegistry::builtin();
    registry.register(paced);
    let address = env
        .start_server_with_tasks(env.server_config(), registry.clone())
        .await;
    let mut config = env.worker_config();
    config.concurrency = 1;
    env.start_worker_with_tasks(config, registry);
    let mut client = env.client(address).await;
    // 20 chunks of 3 items at 100 ms: six seconds of work, cancelled after two chunks.
    let request = api::SubmitBatchRequest {
        task: "paced".into(),
        items: json_items(60),
        chunk_size: Some(3),
        ..Default::default()
    };
    let mut events = client
        .submit_batch(request)
        .await
        .expect("submit")
        .into_inner();
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|event: &api::BatchEvent| done_counts(event).2 < 2)
    {
        let event = events
            .message()
            .await
            .expect("stream")
            .and_then(|response| response.event)
            .expect("an event before the end");
        seen.push(event);
    }
    let batch_id = seen[0].batch_id.clone();

    let cancel_sent = Instant::now();
    let cancelled = client
        .cancel_batch(api::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .batch
        .expect("batch");
    let cancel_returned = Instant::now();
    assert_eq!(cancelled.state(), BatchState::Cancelled);
    seen.extend(collect_events(events, |response| response.event).await);
    let cancel_seen = cancel_sent.elapsed();
    let terminal = check_event_stream(&seen);
    assert_eq!(terminal.state(), BatchState::Cancelled);
    println!("cancel to terminal event: {cancel_seen:?}");
    assert!(
        cancel_seen < Duration::from_secs(1),
        "the watcher saw CANCELLED within a second ({cancel_seen:?})"
    );

    // Let the worker go through the rest of the stream: every remaining chunk is skipped.
    eventually("the stream to drain", BATCH_TIMEOUT, || async {
        (env.stream_length().await == 0).then_some(())
    })
    .await;
    // A chunk whose worker checked the batch a moment before the cancel landed may start a
    // few milliseconds after it (and is stopped at its next item); any later start would be
    // a chunk the worker should have skipped. Chunks take 300 ms, so 100 ms tells them apart.
    let started_later: Vec<_> = starts
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|start| **start > cancel_returned + Duration::from_millis(100))
        .map(|start| start.duration_since(cancel_returned))
        .collect();
    assert!(
        started_later.is_empty(),
        "chunks started after the cancel: {started_later:?}"
    );

    // The counters say what finished; exactly those results are stored and listed.
    let batch = env
        .store
        .get_batch(&batch_id)
        .await
        .expect("read")
        .expect("batch");
    assert_eq!(batch.state, sluice::model::BatchState::Cancelled);
    let done = batch.counters.chunks_done;
    assert!((2..20).contains(&done), "{done} chunks done");
    assert_eq!(batch.counters.items_succeeded, done * 3);
    env.assert_one_result_per_item(&batch_id, done * 3).await;
    assert_eq!(
        list_results(&mut client, &batch_id).await.len() as u64,
        done * 3
    );

    // Cancelling again is a no-op that returns the same batch.
    let again = client
        .cancel_batch(api::CancelBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("cancel is idempotent")
        .into_inner()
        .batch
        .expect("batch");
    assert_eq!(
        (again.state(), again.sequence),
        (BatchState::Cancelled, cancelled.sequence)
    );
    env.finish().await;
}
