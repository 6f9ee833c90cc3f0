//! The core pipeline end to end: batches of several sizes through SubmitBatch, checked event by
//! event and item by item in MongoDB.
use integration_tests::*;
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
        chunk_size: Some(chunk_size),
        ..Default::default()
    };
    let stream = client
        .submit_batch(request)
        .await
        .expect("submit accepted")
        .into_inner();
    collect_events(stream, |response| response.event).await
}

/// Runs an echo batch of `count` items and checks it item by item; returns its id.
async fn check_echo_batch(
    env: &TestEnv,
    address: std::net::SocketAddr,
    count: usize,
    chunk_size: u32,
) -> String {
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
    let outputs = env.stored_outcomes(&terminal.batch_id).await;
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
    terminal.batch_id
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
    let batch_id = check_echo_batch(&env, address, 20_000, 1_000).await;
    // The last acknowledgements may land just after the terminal event.
    eventually(
        "done chunks to be deleted from the stream",
        std::time::Duration::from_secs(10),
        || async { (env.stream_length().await == 0).then_some(()) },
    )
    .await;
    // A reader starting in the middle gets the rest, in order, from that item on.
    let mut client = env.client(address).await;
    let request = api::ListResultsRequest {
        batch_id,
        start_index: 12_345,
        ..Default::default()
    };
    let rest: Vec<api::ListResultsResponse> = futures::TryStreamExt::try_collect(
        client
            .list_results(request)
            .await
            .expect("list")
            .into_inner(),
    )
    .await
    .expect("results");
    let indexes: Vec<u64> = rest.iter().map(|result| result.index).collect();
    assert_eq!(indexes, (12_345..20_000).collect::<Vec<u64>>());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_worked_on_while_it_streams_and_seen_once_sealed() {
    let mut env = TestEnv::new("overlap").await;
    let address = env.start_server().await;
    env.start_worker(2).await;
    let mut client = env.client(address).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    sender.send(echo_upload_header(2)).await.expect("send");
    // 10 items: five chunks of 2, the first four stored (and queued) at the first flush.
    sender
        .send(upload_items(json_items(10)))
        .await
        .expect("send");
    let upload = tokio::spawn(async move {
        client
            .upload_batch(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .map(|response| response.into_inner())
    });
    // Workers store results while the client has not finished its upload...
    eventually("a result stored mid-upload", BATCH_TIMEOUT, || async {
        (!env.documents("results").await.is_empty()).then_some(())
    })
    .await;
    // ...yet clients do not see the batch until it is sealed.
    let mut lister = env.client(address).await;
    let listed = lister
        .list_batches(api::ListBatchesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.batches.is_empty(), "{listed:?}");
    let open = env.documents("batches").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].get_bool("open"), Ok(true));
    let batch_id = open[0].get_str("_id").expect("id").to_owned();
    let hidden = lister
        .get_batch(api::GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect_err("an open batch is not visible");
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    sender
        .send(upload_items(json_items(13).split_off(10)))
        .await
        .expect("send");
    drop(sender);
    let accepted = upload
        .await
        .expect("join")
        .expect("upload accepted")
        .batch
        .expect("batch");
    assert_eq!(accepted.id, batch_id);
    let counters = accepted.counters.expect("counters");
    assert_eq!((counters.items_total, counters.chunks_total), (13, 7));
    let terminal = check_event_stream(&watch_to_end(&mut lister, &batch_id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (13, 0, 7));
    env.assert_one_result_per_item(&batch_id, 13).await;
    env.finish().await;
}
