//! A server SIGKILLed under its watchers: a client re-attaches to another server with
//! `after_sequence` and sees no event twice and no progress lost (the first event after the
//! re-attach is the batch's current snapshot, with cumulative counters), ending with the true
//! terminal event; the `sluice` CLI does the same by itself, saying so on stderr.
use std::process::Stdio;
use std::time::Duration;

use integration_tests::spawned::binary;
use integration_tests::*;
use sluice::api::{self, BatchState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_re_attaches_to_another_server_without_gap_or_duplicate() {
    let mut env = TestEnv::new("serverkill").await;
    let doomed = env.spawn_server(None, &[]).await;
    let standby = env.spawn_server(None, &[]).await;
    env.start_worker(1).await;
    let doomed_address = doomed.address.expect("server address");
    let mut client = env.client(doomed_address).await;
    // 20 chunks of 2 items at 60 ms: events keep coming for a couple of seconds.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 60}"#, json_items(40), 2).await;
    let request = api::WatchBatchRequest {
        batch_id: batch.id.clone(),
        after_sequence: 0,
    };
    let mut stream = client
        .watch_batch(request)
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = stream
            .message()
            .await
            .expect("stream is healthy")
            .and_then(|response| response.event)
            .expect("an event");
        seen.push(event);
    }
    doomed.kill();
    // The stream breaks (or ends without a terminal event): the watch has to move.
    while let Ok(Some(response)) = stream.message().await {
        seen.extend(response.event);
    }
    let last_seen = seen.last().map(|event| event.sequence).expect("events");
    assert!(!sluice::convert::is_terminal(
        seen.last().expect("events").state()
    ));

    let mut other = env.client(standby.address.expect("server address")).await;
    let request = api::WatchBatchRequest {
        batch_id: batch.id.clone(),
        after_sequence: last_seen,
    };
    let resumed = other
        .watch_batch(request)
        .await
        .expect("re-attach")
        .into_inner();
    let after = collect_events(resumed, |response| response.event).await;
    assert!(
        after
            .first()
            .is_some_and(|event| event.sequence > last_seen),
        "nothing repeated: {after:?}"
    );
    seen.extend(after);
    let terminal = check_event_stream(&seen);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (40, 0, 20));
    let stored = env
        .store
        .get_batch(&batch.id)
        .await
        .expect("read")
        .expect("batch");
    assert_eq!(
        terminal.sequence, stored.sequence,
        "the true terminal event"
    );
    env.assert_one_result_per_item(&batch.id, 40).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_re_attaches_by_itself_after_a_server_restart() {
    let mut env = TestEnv::new("cliwatch").await;
    let first = env.spawn_server(None, &[]).await;
    let address = first.address.expect("server address");
    env.start_worker(1).await;
    let mut client = env.client(address).await;
    // 15 chunks of 2 items at 100 ms: about three seconds of events.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 100}"#, json_items(30), 2).await;
    let watcher = tokio::process::Command::new(binary("sluice"))
        .env("SLUICE_SERVER", format!("http://{address}"))
        .args(["--output", "json", "watch", &batch.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    eventually("the batch to make progress", BATCH_TIMEOUT, || async {
        let stored = env.documents("results").await.len();
        (stored >= 2).then_some(())
    })
    .await;
    first.kill();
    // A new server on the same address, as a restart behind a fixed address would give.
    let _second = env.spawn_server(Some(address), &[]).await;

    let output = tokio::time::timeout(BATCH_TIMEOUT, watcher.wait_with_output())
        .await
        .expect("the watch ends")
        .expect("sluice exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("re-attaching after seq="),
        "stderr: {stderr}"
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    let sequences: Vec<u64> = events
        .iter()
        .map(|event| {
            event["sequence"]
                .as_str()
                .and_then(|sequence| sequence.parse().ok())
                .expect("sequence")
        })
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "no event printed twice: {sequences:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last["state"], "BATCH_STATE_SUCCEEDED");
    assert_eq!(last["counters"]["itemsSucceeded"], "30");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_server_turns_not_serving_then_ends_streams_retryably() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut env = TestEnv::new("serverterm").await;
    let mut server = env
        .spawn_server(None, &[("SLUICE_SHUTDOWN_GRACE", "20")])
        .await;
    let address = server.address.expect("server address");
    env.start_worker(1).await;
    let mut client = env.client(address).await;
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 200}"#, json_items(20), 2).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "sluice.v1.BatchService".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let status = |message: Option<tonic_health::pb::HealthCheckResponse>| {
        message.map(|response| response.status)
    };
    assert_eq!(
        status(health.message().await.expect("health")),
        Some(ServingStatus::Serving as i32)
    );
    let mut watch = client
        .watch_batch(api::WatchBatchRequest {
            batch_id: batch.id.clone(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("snapshot").expect("an event");

    let stopping = tokio::time::Instant::now();
    server.terminate();
    assert_eq!(
        status(health.message().await.expect("health")),
        Some(ServingStatus::NotServing as i32)
    );
    let not_serving_at = tokio::time::Instant::now();
    drop(health);
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended as if the batch had finished"),
            Err(status) => break status,
        }
    };
    let stream_ended_at = tokio::time::Instant::now();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(not_serving_at <= stream_ended_at);
    let exit = server.exit_status(Duration::from_secs(25)).await;
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "drained before the grace ran out"
    );
    env.finish().await;
}
