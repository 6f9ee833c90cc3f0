//! The reconciler's repairs, on states a crash between two writes leaves behind: a chunk whose
//! results were stored but never counted (the worker died in between, and its message is gone)
//! is recounted from the stored results, and the batch, done but never finished, is finished;
//! an upload whose server died before sealing it is removed.
use std::time::Duration;

use fred::interfaces::StreamsInterface;
use integration_tests::*;
use mongodb::bson::DateTime;
use sluice::api::BatchState;
use sluice::model::{NewChunk, Payload};
use sluice::store::{BatchRecord, ResultOrigin};

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

/// What a server that died in the middle of an upload leaves: an open batch document, some of
/// its chunks and its idempotency key. An hour later the reconciler removes all of it (as the
/// server would have, had the upload failed), and leaves a younger open upload alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_while_open_is_removed_after_an_hour() {
    let mut env = TestEnv::new("abandoned").await;
    let two_hours_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 7_200_000);
    let open_batch = |id: &str, created_at: DateTime, key: Option<&str>| BatchRecord {
        id: id.to_owned(),
        task: "echo".to_owned(),
        params: String::new(),
        state: sluice::model::BatchState::Queued,
        counters: Default::default(),
        chunk_size: 2,
        sequence: 1,
        created_at,
        updated_at: created_at,
        finished_at: None,
        idempotency_key: key.map(str::to_owned),
        generation: 0,
        open: true,
    };
    let abandoned = open_batch("abandoned-upload", two_hours_ago, Some("key-1"));
    let streaming = open_batch("streaming-upload", DateTime::now(), None);
    for batch in [&abandoned, &streaming] {
        env.store.insert_batch(batch).await.expect("insert batch");
    }
    let chunks: Vec<NewChunk> = (0..2)
        .map(|index| NewChunk {
            index,
            first_item: index * 2,
            items: vec![Payload::Text("{}".into()); 2],
        })
        .collect();
    for batch in [&abandoned, &streaming] {
        env.store
            .insert_chunks(&batch.id, &chunks)
            .await
            .expect("insert chunks");
    }
    let claimed = env
        .store
        .claim_idempotency_key("key-1", &abandoned.id)
        .await
        .expect("claim");
    assert_eq!(claimed, None);

    let mut config = env.worker_config();
    config.reconcile_interval = Duration::from_millis(300);
    env.start_worker_with(config);
    let batch_ids = |docs: Vec<mongodb::bson::Document>, field: &str| -> Vec<String> {
        let mut ids: Vec<String> = docs
            .iter()
            .map(|doc| doc.get_str(field).expect("id").to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    // The batch document goes first, then its chunks, then its key: wait for the last.
    eventually("the released key", Duration::from_secs(20), || async {
        env.documents("idempotency_keys")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        batch_ids(env.documents("batches").await, "_id"),
        ["streaming-upload"],
        "the abandoned upload is removed, the live upload kept"
    );
    assert_eq!(
        batch_ids(env.documents("chunks").await, "batch_id"),
        ["streaming-upload"],
        "the abandoned upload's chunks are removed, the live upload's kept"
    );
    env.finish().await;
}
