//! The core pipeline end to end: batches of several sizes through SubmitBatch, checked event by
//! event and item by item in MongoDB.
use integration_tests::*;
use mongodb::bson::Document;
use sluice::api::{self, BatchState};

async fn submit(
    client: &mut sluice::api::batch_service_client::BatchServiceClient<tonic::transport::Channel>,
    task: &str,
    params: &str,
    items: Vec<api::Payload>,
    chunk_size: u32,
) -> Vec<api::BatchEvent> {
    let request = api::SubmitBatchRequest {
        task: task.to_owned(),
        params: params.to_owned(),
        items,
        chunk_size,
        ..Default::default()
    };
    let stream = client
        .submit_batch(request)
        .await
        .expect("submit accepted")
        .into_inner();
    collect_events(stream, |response| response.event).await
}

/// Every stored output of the batch, by item index, read straight from MongoDB.
async fn stored_outputs(env: &TestEnv, batch_id: &str) -> Vec<(u64, Result<String, String>)> {
    let mut outputs = Vec::new();
    for result in env.documents("results").await {
        if result.get_str("batch_id") != Ok(batch_id) {
            continue;
        }
        let first = result.get_i64("first_item").expect("first_item") as u64;
        let outcomes = result.get_array("outcomes").expect("outcomes");
        for (offset, outcome) in outcomes.iter().enumerate() {
            let outcome = outcome.as_document().expect("outcome document");
            outputs.push((first + offset as u64, outcome_text(outcome)));
        }
    }
    outputs.sort_by_key(|(index, _)| *index);
    outputs
}

fn outcome_text(outcome: &Document) -> Result<String, String> {
    match outcome.get_str("o") {
        Ok(output) => Ok(output.to_owned()),
        Err(_) => Err(outcome.get_str("e").expect("output or error").to_owned()),
    }
}

async fn check_echo_batch(
    env: &TestEnv,
    address: std::net::SocketAddr,
    count: usize,
    chunk_size: u32,
) {
    let mut client = env.client(address).await;
    let events = submit(&mut client, "echo", "", json_items(count), chunk_size).await;
    let terminal = check_event_stream(&events);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    let chunks = count.div_ceil(chunk_size as usize) as u64;
    let counters = terminal.counters.expect("counters");
    assert_eq!(
        (
            counters.items_total,
            counters.items_succeeded,
            counters.items_failed
        ),
        (count as u64, count as u64, 0)
    );
    assert_eq!(
        (counters.chunks_total, counters.chunks_done),
        (chunks, chunks)
    );
    let outputs = stored_outputs(env, &terminal.batch_id).await;
    assert_eq!(outputs.len(), count, "exactly one stored result per item");
    for (position, (index, output)) in outputs.iter().enumerate() {
        assert_eq!(
            *index, position as u64,
            "one result per index, none missing or doubled"
        );
        assert_eq!(
            output.as_deref(),
            Ok(format!("{{\"i\":{position}}}").as_str())
        );
    }
    let listed = list_results(&mut client, &terminal.batch_id).await;
    assert_eq!(listed.len(), count);
    assert!(listed
        .iter()
        .enumerate()
        .all(|(i, result)| result.index == i as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_every_shape_succeed_with_exact_results() {
    let mut env = TestEnv::new("shapes").await;
    let address = env.start_server().await;
    env.start_worker(4).await;
    check_echo_batch(&env, address, 1, 100).await;
    check_echo_batch(&env, address, 100, 100).await;
    check_echo_batch(&env, address, 101, 100).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_items_succeed_with_exact_results() {
    let mut env = TestEnv::new("large").await;
    let address = env.start_server().await;
    env.start_worker(4).await;
    env.start_worker(4).await;
    check_echo_batch(&env, address, 20_000, 1_000).await;
    // The last acknowledgements may land just after the terminal event.
    let trimmed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while env.stream_length().await > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    assert!(
        trimmed.await.is_ok(),
        "done chunks are deleted from the stream"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_batch() {
    let mut env = TestEnv::new("share").await;
    let address = env.start_server().await;
    env.start_worker(1).await;
    env.start_worker(1).await;
    let mut client = env.client(address).await;
    // 12 chunks of 4 items that each take 20 ms: neither worker can take them all first.
    let events = submit(&mut client, "sleep", r#"{"ms": 20}"#, json_items(48), 4).await;
    assert_eq!(check_event_stream(&events).state(), BatchState::Succeeded);
    let mut workers: Vec<String> = env
        .documents("results")
        .await
        .iter()
        .map(|result| result.get_str("worker").expect("worker").to_owned())
        .collect();
    assert_eq!(workers.len(), 12);
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 2, "both workers stored results: {workers:?}");
    env.finish().await;
}
