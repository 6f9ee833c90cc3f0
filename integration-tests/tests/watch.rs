//! Watching: a watcher attached mid-batch, one attached after the end, and one on a second
//! server instance all see the same terminal state, with strictly increasing sequences.
use integration_tests::*;
use sluice::api::{self, BatchState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_anywhere_see_the_same_terminal_event() {
    let mut env = TestEnv::new("watch").await;
    let first_server = env.start_server().await;
    let second_server = env.start_server().await;
    env.start_worker(2).await;
    let mut client = env.client(first_server).await;
    // 10 chunks of 2 items at 25 ms each: long enough to attach mid-batch.
    let request = api::CreateBatchRequest {
        task: "sleep".into(),
        params: r#"{"ms": 25}"#.into(),
        items: json_items(20),
        chunk_size: Some(2),
        ..Default::default()
    };
    let batch = client
        .create_batch(request)
        .await
        .expect("created")
        .into_inner()
        .batch
        .expect("batch");
    // Workers start while the items are stored, so it may be running already, not finished.
    assert!(
        matches!(batch.state(), BatchState::Queued | BatchState::Running),
        "{batch:?}"
    );

    let watch = |after_sequence| api::WatchBatchRequest {
        batch_id: batch.id.clone(),
        after_sequence,
    };
    let on_first = client
        .watch_batch(watch(0))
        .await
        .expect("watch")
        .into_inner();
    let mut other = env.client(second_server).await;
    let on_second = other
        .watch_batch(watch(0))
        .await
        .expect("watch")
        .into_inner();
    let (first_events, second_events) = tokio::join!(
        collect_events(on_first, |response| response.event),
        collect_events(on_second, |response| response.event),
    );
    let first_terminal = check_event_stream(&first_events);
    let second_terminal = check_event_stream(&second_events);
    assert_eq!(first_terminal.state(), BatchState::Succeeded);
    assert_eq!(
        first_terminal, second_terminal,
        "both servers end on the same event"
    );
    assert!(
        first_events.len() > 2,
        "live progress arrived, not only snapshots: {first_events:?}"
    );
    assert!(
        second_events.len() > 2,
        "the second server relayed live events too"
    );

    // Attached after the end: the terminal snapshot alone, then the stream ends.
    let late = client
        .watch_batch(watch(0))
        .await
        .expect("watch")
        .into_inner();
    let late_events = collect_events(late, |response| response.event).await;
    assert_eq!(late_events.len(), 1);
    assert_eq!(late_events[0].sequence, first_terminal.sequence);
    assert_eq!(late_events[0].state(), BatchState::Succeeded);
    assert_eq!(late_events[0].counters, first_terminal.counters);

    // Resuming after the terminal sequence: nothing more to send.
    let resumed = client
        .watch_batch(watch(first_terminal.sequence))
        .await
        .expect("watch");
    assert!(collect_events(resumed.into_inner(), |r| r.event)
        .await
        .is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_attached_mid_batch_resumes_after_its_sequence() {
    let mut env = TestEnv::new("midwatch").await;
    let address = env.start_server().await;
    env.start_worker(1).await;
    let mut client = env.client(address).await;
    let request = api::SubmitBatchRequest {
        task: "sleep".into(),
        params: r#"{"ms": 20}"#.into(),
        items: json_items(12),
        chunk_size: Some(2),
        ..Default::default()
    };
    let mut submitted = client
        .submit_batch(request)
        .await
        .expect("submit")
        .into_inner();
    // Read until the batch is RUNNING with at least one chunk done, then attach a second watcher.
    let mut seen = Vec::new();
    while let Some(response) = submitted.message().await.expect("stream") {
        let event = response.event.expect("event");
        let progressed = event.counters.as_ref().is_some_and(|c| c.chunks_done > 0);
        seen.push(event);
        if progressed {
            break;
        }
    }
    let last = seen.last().cloned().expect("an event");
    assert!(
        !sluice::convert::is_terminal(last.state()),
        "attached before the end"
    );
    let request = api::WatchBatchRequest {
        batch_id: last.batch_id.clone(),
        after_sequence: last.sequence,
    };
    let mid = client
        .watch_batch(request)
        .await
        .expect("watch")
        .into_inner();
    let (rest_of_submit, mid_events) = tokio::join!(
        collect_events(submitted, |response| response.event),
        collect_events(mid, |response| response.event),
    );
    assert!(
        mid_events
            .iter()
            .all(|event| event.sequence > last.sequence),
        "no event replayed"
    );
    let mid_terminal = check_event_stream(&mid_events);
    seen.extend(rest_of_submit);
    let submit_terminal = check_event_stream(&seen);
    assert_eq!(mid_terminal, submit_terminal);
    let counters = mid_terminal.counters.expect("counters");
    assert_eq!((counters.items_succeeded, counters.chunks_done), (12, 6));
    env.finish().await;
}
