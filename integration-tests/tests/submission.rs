//! Many clients at once, and retried submissions: 50 batches from 50 concurrent clients on two
//! workers all complete with exact counts; a create retried with the same idempotency key
//! returns the batch the first one made instead of a second one.
use integration_tests::*;
use sluice::api::{self, BatchState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_batches_all_complete_with_exact_counts() {
    let mut env = TestEnv::new("fifty").await;
    let address = env.start_server().await;
    env.start_worker(4).await;
    env.start_worker(4).await;
    let clients = (0..50).map(|client_index| {
        let env = &env;
        async move {
            let mut client = env.client(address).await;
            // Each client sends its own items, so a result landing in the wrong batch shows.
            let items: Vec<api::Payload> = (0..100)
                .map(|item| text(&format!("client-{client_index}-item-{item}")))
                .collect();
            let request = api::SubmitBatchRequest {
                task: "echo".into(),
                items,
                chunk_size: Some(10),
                ..Default::default()
            };
            let stream = client
                .submit_batch(request)
                .await
                .expect("submit accepted")
                .into_inner();
            let events = collect_events(stream, |response| response.event).await;
            (client_index, check_event_stream(&events))
        }
    });
    let finished = futures::future::join_all(clients).await;
    assert_eq!(finished.len(), 50);
    for (client_index, terminal) in finished {
        assert_eq!(terminal.state(), BatchState::Succeeded);
        assert_eq!(done_counts(&terminal), (100, 0, 10));
        let outcomes = env.stored_outcomes(&terminal.batch_id).await;
        let expected: Vec<(u64, Result<String, String>)> = (0..100)
            .map(|item| (item, Ok(format!("client-{client_index}-item-{item}"))))
            .collect();
        assert_eq!(outcomes, expected, "batch of client {client_index}");
    }
    assert_eq!(env.documents("batches").await.len(), 50);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_with_the_same_key_returns_the_first_batch() {
    let mut env = TestEnv::new("idempotent").await;
    let address = env.start_server().await;
    let mut client = env.client(address).await;
    let create = |key: &str| api::CreateBatchRequest {
        task: "echo".into(),
        items: json_items(5),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let first = client
        .create_batch(create("order-42"))
        .await
        .expect("created")
        .into_inner()
        .batch
        .expect("batch");
    let retried = client
        .create_batch(create("order-42"))
        .await
        .expect("retry answered")
        .into_inner()
        .batch
        .expect("batch");
    assert_eq!(retried.id, first.id);
    assert_eq!(retried.idempotency_key, "order-42");
    // SubmitBatch with the same key streams the existing batch's events.
    let submit = api::SubmitBatchRequest {
        task: "echo".into(),
        items: json_items(5),
        idempotency_key: "order-42".into(),
        ..Default::default()
    };
    let mut stream = client
        .submit_batch(submit)
        .await
        .expect("submit retry")
        .into_inner();
    let snapshot = stream
        .message()
        .await
        .expect("stream")
        .and_then(|response| response.event)
        .expect("an event");
    assert_eq!(snapshot.batch_id, first.id);
    drop(stream);
    let other = client
        .create_batch(create("order-43"))
        .await
        .expect("created")
        .into_inner()
        .batch
        .expect("batch");
    assert_ne!(other.id, first.id);
    assert_eq!(env.documents("batches").await.len(), 2);
    assert_eq!(env.stream_length().await, 2, "one chunk enqueued per batch");
    env.finish().await;
}
