//! gRPC-side helpers every test uses: items, event-stream reading and its invariants, results,
//! health, and polling for a condition with a deadline (never a fixed sleep).
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::TryStreamExt;
use sluice::api::batch_service_client::BatchServiceClient;
use sluice::api::{self, BatchEvent};
use tonic::transport::Channel;

use crate::{BATCH_TIMEOUT, READY_TIMEOUT};

/// Polls `check` every `interval` until it returns `Some`, failing the test with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Polling interval of a readiness loop, not a readiness wait.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the server reports SERVING.
pub async fn wait_until_serving(address: SocketAddr) {
    wait_for_health(
        address,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
}

/// Text items `{"i": 0}`, `{"i": 1}`, ...
pub fn json_items(count: usize) -> Vec<api::Payload> {
    (0..count)
        .map(|i| text(&format!("{{\"i\":{i}}}")))
        .collect()
}

/// A text payload.
pub fn text(value: &str) -> api::Payload {
    api::Payload {
        kind: Some(api::payload::Kind::Text(value.to_owned())),
    }
}

/// The first message of an `echo` upload in chunks of `chunk_size`.
pub fn echo_upload_header(chunk_size: u32) -> api::UploadBatchRequest {
    api::UploadBatchRequest {
        content: Some(api::upload_batch_request::Content::Header(
            api::UploadHeader {
                task: "echo".into(),
                chunk_size: Some(chunk_size),
                ..Default::default()
            },
        )),
    }
}

/// A later message of an upload, carrying `items`.
pub fn upload_items(items: Vec<api::Payload>) -> api::UploadBatchRequest {
    api::UploadBatchRequest {
        content: Some(api::upload_batch_request::Content::Items(
            api::UploadItems { items },
        )),
    }
}

/// Reads an event stream to its end (with the batch timeout), returning every event.
pub async fn collect_events<T>(
    stream: tonic::Streaming<T>,
    event_of: impl Fn(T) -> Option<BatchEvent>,
) -> Vec<BatchEvent> {
    let collect = async {
        let mut stream = stream;
        let mut events = Vec::new();
        while let Some(message) = stream.message().await.expect("stream ends without error") {
            events.push(event_of(message).expect("every message carries an event"));
        }
        events
    };
    tokio::time::timeout(BATCH_TIMEOUT, collect)
        .await
        .expect("batch finished in time")
}

/// Checks the event stream invariants: sequences strictly increase, only the last event is
/// terminal, and it is the last one. Returns the terminal event.
pub fn check_event_stream(events: &[BatchEvent]) -> BatchEvent {
    assert!(!events.is_empty(), "no events");
    for pair in events.windows(2) {
        assert!(
            pair[0].sequence < pair[1].sequence,
            "sequence not increasing: {pair:?}"
        );
        assert!(
            !sluice::convert::is_terminal(pair[0].state()),
            "terminal event before the last: {pair:?}"
        );
    }
    let last = events.last().cloned().expect("non-empty");
    assert!(
        sluice::convert::is_terminal(last.state()),
        "last event is not terminal: {last:?}"
    );
    last
}

/// Reads every result of a batch through ListResults.
pub async fn list_results(
    client: &mut BatchServiceClient<Channel>,
    batch_id: &str,
) -> Vec<api::ListResultsResponse> {
    let request = api::ListResultsRequest {
        batch_id: batch_id.to_owned(),
        ..Default::default()
    };
    let stream = client
        .list_results(request)
        .await
        .expect("list results")
        .into_inner();
    stream.try_collect().await.expect("results stream")
}

/// The server's health status for the Sluice service.
pub async fn health_status(address: SocketAddr) -> Option<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = Channel::from_shared(format!("http://{address}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: "sluice.v1.BatchService".to_owned(),
    };
    let response = HealthClient::new(channel).check(request).await.ok()?;
    Some(response.into_inner().status)
}

/// Waits until the server's health status is `status`.
pub async fn wait_for_health(
    address: SocketAddr,
    status: tonic_health::pb::health_check_response::ServingStatus,
) {
    let what = format!("health {status:?} at {address}");
    eventually(&what, READY_TIMEOUT, || async {
        (health_status(address).await == Some(status as i32)).then_some(())
    })
    .await;
}

/// Creates a batch (CreateBatch) and returns it.
pub async fn create_batch(
    client: &mut BatchServiceClient<Channel>,
    task: &str,
    params: &str,
    items: Vec<api::Payload>,
    chunk_size: u32,
) -> api::Batch {
    let request = api::CreateBatchRequest {
        task: task.to_owned(),
        params: params.to_owned(),
        items,
        chunk_size: Some(chunk_size),
        ..Default::default()
    };
    client
        .create_batch(request)
        .await
        .expect("batch accepted")
        .into_inner()
        .batch
        .expect("the response carries the batch")
}

/// Watches a batch from its snapshot to its terminal event; returns every event.
pub async fn watch_to_end(
    client: &mut BatchServiceClient<Channel>,
    batch_id: &str,
) -> Vec<BatchEvent> {
    let request = api::WatchBatchRequest {
        batch_id: batch_id.to_owned(),
        after_sequence: 0,
    };
    let stream = client
        .watch_batch(request)
        .await
        .expect("watch accepted")
        .into_inner();
    collect_events(stream, |response| response.event).await
}

/// The counters of an event, as (items succeeded, items failed, chunks done).
pub fn done_counts(event: &BatchEvent) -> (u64, u64, u64) {
    let counters = event.counters.unwrap_or_default();
    (
        counters.items_succeeded,
        counters.items_failed,
        counters.chunks_done,
    )
}
