//! Retries and dead letters: a chunk that fails transiently is retried with backoff, without
//! holding up the worker's other chunks, and succeeds; one that always fails, or always times
//! out, goes to the dead-letter stream after its last attempt with its items recorded as
//! failed, and the batch ends FAILED. The failing task is one of the test's own.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::*;
use mongodb::bson::Document;
use sluice::api::{list_results_response::Outcome, BatchState};
use sluice::model::{ItemOutcome, Payload};
use sluice::tasks::{ItemProcessor, Task, TaskRegistry, Transient};

/// `flaky`: echoes items, except that an item `fail:<name>` fails transiently on its first
/// `failures` attempts (params `{"failures": N}`). Counts every attempt at every item.
#[derive(Clone, Default)]
struct Flaky {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Task for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn description(&self) -> &'static str {
        "fails transiently on items named fail:..., params.failures times"
    }

    fn params_schema(&self) -> &'static str {
        "{}"
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        params
            .get("failures")
            .and_then(serde_json::Value::as_u64)
            .map(|_| ())
            .ok_or_else(|| "failures is required".to_owned())
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        self.validate(params)?;
        let failures = params["failures"].as_u64().unwrap_or_default() as u32;
        Ok(Box::new(FlakyRun {
            attempts: self.attempts.clone(),
            failures,
        }))
    }
}

struct FlakyRun {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    failures: u32,
}

impl ItemProcessor for FlakyRun {
    fn process(&mut self, item: &Payload) -> Result<ItemOutcome, Transient> {
        let Payload::Text(text) = item else {
            return Ok(Ok(item.clone()));
        };
        let mut attempts = self.attempts.lock().expect("not poisoned");
        let made = attempts.entry(text.clone()).or_default();
        *made += 1;
        if text.starts_with("fail:") && *made <= self.failures {
            return Err(Transient(format!("{text} is not reachable yet")));
        }
        Ok(Ok(item.clone()))
    }
}

struct Setup {
    env: TestEnv,
    client: sluice::api::batch_service_client::BatchServiceClient<tonic::transport::Channel>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

/// A server and one single-slot worker that offer `flaky`, with 3 attempts and `backoff`.
async fn setup(name: &str, backoff: Duration, chunk_timeout: Duration) -> Setup {
    let mut env = TestEnv::new(name).await;
    let flaky = Flaky::default();
    let attempts = flaky.attempts.clone();
    let mut registry = TaskRegistry::builtin();
    registry.register(flaky);
    let address = env
        .start_server_with_tasks(env.server_config(), registry.clone())
        .await;
    let mut config = env.worker_config();
    config.concurrency = 1;
    config.max_attempts = 3;
    config.retry_backoff = backoff;
    config.chunk_timeout = chunk_timeout;
    env.start_worker_with_tasks(config, registry);
    let client = env.client(address).await;
    Setup {
        env,
        client,
        attempts,
    }
}

async fn result_documents(env: &TestEnv) -> Vec<Document> {
    env.documents("results").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_without_blocking_other_chunks() {
    let Setup {
        env,
        mut client,
        attempts,
    } = setup(
        "transient",
        Duration::from_millis(300),
        Duration::from_secs(60),
    )
    .await;
    // Chunk 0 fails twice, then succeeds; chunk 1 never fails. One slot: chunk 1 can only be
    // done before chunk 0 if chunk 0's backoff does not hold the slot.
    let items = vec![text("fail:a"), text("b")];
    let batch = create_batch(&mut client, "flaky", r#"{"failures": 2}"#, items, 1).await;
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (2, 0, 2));
    env.assert_one_result_per_item(&batch.id, 2).await;
    assert_eq!(
        attempts.lock().expect("not poisoned").get("fail:a"),
        Some(&3)
    );
    let documents = result_documents(&env).await;
    let attempt_of = |chunk: i64| {
        documents
            .iter()
            .find(|doc| doc.get_i64("chunk_index") == Ok(chunk))
            .and_then(|doc| doc.get_i64("attempt").ok())
    };
    assert_eq!((attempt_of(0), attempt_of(1)), (Some(3), Some(1)));
    let stored_at = |chunk: i64| {
        documents
            .iter()
            .find(|doc| doc.get_i64("chunk_index") == Ok(chunk))
            .and_then(|doc| doc.get_datetime("stored_at").ok().copied())
    };
    assert!(
        stored_at(1) < stored_at(0),
        "the healthy chunk finished while the flaky one waited"
    );
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_always_fails_is_dead_lettered_and_the_batch_fails() {
    let Setup {
        env, mut client, ..
    } = setup(
        "deadletter",
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await;
    let items = vec![text("ok-1"), text("fail:x"), text("ok-2"), text("ok-3")];
    // Chunk 0 is [ok-1, fail:x] and never succeeds; chunk 1 is [ok-2, ok-3].
    let batch = create_batch(&mut client, "flaky", r#"{"failures": 1000}"#, items, 2).await;
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Failed);
    assert_eq!(done_counts(&terminal), (2, 2, 2));
    env.assert_one_result_per_item(&batch.id, 4).await;

    let results = list_results(&mut client, &batch.id).await;
    let expected_error = "gave up after 3 attempts: fail:x is not reachable yet";
    let outcomes: Vec<(u64, Option<Outcome>)> = results
        .into_iter()
        .map(|result| (result.index, result.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (0, Some(Outcome::Error(expected_error.to_owned()))),
            (1, Some(Outcome::Error(expected_error.to_owned()))),
            (2, Some(Outcome::Output(text("ok-2")))),
            (3, Some(Outcome::Output(text("ok-3")))),
        ]
    );
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.get("batch"), Some(&batch.id));
    assert_eq!(letter.get("chunk").map(String::as_str), Some("0"));
    assert_eq!(letter.get("attempts").map(String::as_str), Some("3"));
    assert_eq!(
        letter.get("reason").map(String::as_str),
        Some("fail:x is not reachable yet")
    );
    assert_eq!(env.stream_length().await, 0, "no chunk left on the stream");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_hangs_is_cut_off_and_counts_as_a_failed_attempt() {
    let Setup {
        env, mut client, ..
    } = setup(
        "timeout",
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .await;
    // Each attempt would take 2 s; the timeout cuts it off after 0.3 s, three times.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 1000}"#, json_items(2), 2).await;
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Failed);
    assert_eq!(done_counts(&terminal), (0, 2, 1));
    let outcomes = env.stored_outcomes(&batch.id).await;
    assert_eq!(
        outcomes,
        vec![
            (
                0,
                Err("gave up after 3 attempts: timed out after 0.3s".to_owned())
            ),
            (
                1,
                Err("gave up after 3 attempts: timed out after 0.3s".to_owned())
            ),
        ]
    );
    assert_eq!(env.dead_letters().await.len(), 1);
    env.finish().await;
}
