//! The stores going away mid-batch, for real: Redis killed and restarted empty (every queued
//! and pending chunk reference lost), and FerretDB killed for several seconds and started again
//! on its data. Batches still complete with exact counts and exactly one result per item; while
//! MongoDB is down the server refuses new batches with UNAVAILABLE and writes nothing.
use std::time::Duration;

use integration_tests::*;
use sluice::api::{self, BatchState};
use tonic_health::pb::health_check_response::ServingStatus;

/// How long FerretDB stays down: several seconds, longer than a driver's server selection.
const STORE_OUTAGE: Duration = Duration::from_secs(5);

/// A server and two workers (short leases, a reconciler every second) in `env`.
async fn start_pipeline(env: &mut TestEnv) -> std::net::SocketAddr {
    let address = env.start_server().await;
    for _ in 0..2 {
        let mut config = env.worker_config();
        config.concurrency = 2;
        config.visibility_timeout = Duration::from_secs(2);
        config.reconcile_interval = Duration::from_secs(1);
        env.start_worker_with(config);
    }
    address
}

/// Submits 40 chunks of 5 items at 40 ms (about 200 ms a chunk) and returns the open event
/// stream with the batch id, once at least `done` chunks are stored.
async fn submit_and_wait_for_progress(
    env: &TestEnv,
    address: std::net::SocketAddr,
    done: usize,
) -> (tonic::Streaming<api::SubmitBatchResponse>, String) {
    let mut client = env.client(address).await;
    let request = api::SubmitBatchRequest {
        task: "sleep".into(),
        params: r#"{"ms": 40}"#.into(),
        items: json_items(200),
        chunk_size: Some(5),
        ..Default::default()
    };
    let mut events = client
        .submit_batch(request)
        .await
        .expect("submit accepted")
        .into_inner();
    let first = events
        .message()
        .await
        .expect("stream")
        .and_then(|response| response.event)
        .expect("a first event");
    eventually("chunks to be stored", BATCH_TIMEOUT, || async {
        (env.documents("results").await.len() >= done).then_some(())
    })
    .await;
    (events, first.batch_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_when_redis_restarts_empty_mid_batch() {
    let mut redis = PrivateRedis::start().await;
    let mut env = TestEnv::on("redisloss", Some(redis.url()), None).await;
    let address = start_pipeline(&mut env).await;
    let (events, batch_id) = submit_and_wait_for_progress(&env, address, 5).await;

    redis.kill();
    redis.restart().await;

    let terminal = check_event_stream(&collect_events(events, |response| response.event).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (200, 0, 40));
    env.assert_one_result_per_item(&batch_id, 200).await;
    let batch = env
        .store
        .get_batch(&batch_id)
        .await
        .expect("read")
        .expect("batch");
    assert_eq!(batch.counters.items_succeeded, 200);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_when_mongodb_goes_away_for_seconds() {
    let mut ferret = PrivateFerret::start().await;
    let mut env = TestEnv::on("mongoloss", None, Some(ferret.url())).await;
    let address = start_pipeline(&mut env).await;
    let (events, batch_id) = submit_and_wait_for_progress(&env, address, 5).await;

    ferret.kill();
    let outage = tokio::time::Instant::now();
    wait_for_health(address, ServingStatus::NotServing).await;
    let mut client = env.client(address).await;
    let refused = client
        .create_batch(api::CreateBatchRequest {
            task: "echo".into(),
            items: json_items(3),
            ..Default::default()
        })
        .await
        .expect_err("no batch is accepted while MongoDB is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Keep it down for the rest of the outage, then bring it back on the same data.
    tokio::time::sleep_until(outage + STORE_OUTAGE).await;
    ferret.restart().await;
    wait_for_health(address, ServingStatus::Serving).await;

    let terminal = check_event_stream(&collect_events(events, |response| response.event).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (200, 0, 40));
    env.assert_one_result_per_item(&batch_id, 200).await;
    let batches = env.documents("batches").await;
    assert_eq!(batches.len(), 1, "the refused batch left nothing behind");
    env.finish().await;
}
