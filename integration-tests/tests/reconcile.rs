//! The reconciler's repairs, on states a crash between two writes leaves behind: a chunk whose
//! results were stored but never counted (the worker died in between, and its message is gone)
//! is recounted from the stored results, and the batch, done but never finished, is finished.
use std::time::Duration;

use fred::interfaces::StreamsInterface;
use integration_tests::*;
use mongodb::bson::DateTime;
use sluice::api::BatchState;
use sluice::store::ResultOrigin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_worker_died_between_two_writes_is_recounted_and_finished() {
    let mut env = TestEnv::new("recount").await;
    let address = env.start_server().await;
    let mut client = env.client(address).await;
    let batch = create_batch(&mut client, "echo", "", json_items(4), 2).await;

    // What a worker that died right after storing chunk 1's results leaves: the results, no
    // count, and (its message acknowledged by nobody, then lost with Redis) no message.
    let chunk = env
        .store
        .get_chunk(&batch.id, 1)
        .await
        .expect("read")
        .expect("chunk 1");
    let outcomes: Vec<_> = chunk.items.iter().cloned().map(Ok).collect();
    let origin = ResultOrigin {
        worker: "crashed-worker",
        attempt: 1,
        started_at: DateTime::now(),
    };
    let stored = env
        .store
        .insert_result(&batch.id, &chunk, &outcomes, &origin)
        .await
        .expect("insert");
    assert!(stored);
    let redis = env.redis().await;
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis
        .xrange(env.keys().chunk_stream(), "-", "+", None)
        .await
        .expect("xrange");
    let chunk_1_entry = entries
        .iter()
        .find(|(_, fields)| fields.get("chunk").map(String::as_str) == Some("1"))
        .map(|(id, _)| id.clone())
        .expect("chunk 1 is on the stream");
    let _: u64 = redis
        .xdel(env.keys().chunk_stream(), chunk_1_entry)
        .await
        .expect("xdel");

    let mut config = env.worker_config();
    config.reconcile_interval = Duration::from_millis(300);
    env.start_worker_with(config);
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (4, 0, 2));
    env.assert_one_result_per_item(&batch.id, 4).await;
    let workers: Vec<String> = env
        .documents("results")
        .await
        .iter()
        .map(|doc| doc.get_str("worker").expect("worker").to_owned())
        .collect();
    assert!(
        workers.contains(&"crashed-worker".to_owned()),
        "chunk 1 was not run again: {workers:?}"
    );
    let record = env
        .store
        .get_batch(&batch.id)
        .await
        .expect("read")
        .expect("batch");
    assert_eq!(record.generation, 1, "counted once, by a recount");
    env.finish().await;
}
