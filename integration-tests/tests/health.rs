//! Health follows the stores: SERVING while Redis and MongoDB answer, NOT_SERVING while Redis
//! is down, SERVING again once it is back; reflection lists the service.
use integration_tests::*;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_while_redis_is_down() {
    let mut redis = PrivateRedis::start().await;
    let mut env = TestEnv::new("health").await;
    env.connection.redis_url = redis.url();
    let address = env.start_server().await;
    assert_eq!(
        health_status(address).await,
        Some(ServingStatus::Serving as i32)
    );

    redis.kill();
    wait_for_health(address, ServingStatus::NotServing).await;
    redis.restart().await;
    wait_for_health(address, ServingStatus::Serving).await;

    // The server works again after the outage: a batch is accepted and queued.
    let mut client = env.client(address).await;
    let request = sluice::api::CreateBatchRequest {
        task: "echo".into(),
        items: json_items(3),
        ..Default::default()
    };
    let batch = client
        .create_batch(request)
        .await
        .expect("accepted after the outage");
    assert_eq!(
        batch
            .into_inner()
            .batch
            .and_then(|b| b.counters)
            .map(|c| c.items_total),
        Some(3)
    );
    env.finish().await;
}
