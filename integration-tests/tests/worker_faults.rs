//! Workers that die, hang or are stopped: a SIGKILLed worker's chunks are reclaimed by another
//! after the visibility timeout; a slow worker keeps its chunk while its heartbeats run and
//! loses it without them; a SIGTERMed worker finishes what it holds within its grace period,
//! exits 0, and leaves what it cannot finish for another worker. Every batch ends with exactly
//! one stored result per item.
use std::time::{Duration, Instant};

use integration_tests::*;
use mongodb::bson::Document;
use sluice::api::BatchState;

/// Result documents of the test's batches, as (chunk index, worker, attempt).
async fn result_origins(env: &TestEnv) -> Vec<(i64, String, i64)> {
    env.documents("results")
        .await
        .iter()
        .map(|result: &Document| {
            (
                result.get_i64("chunk_index").expect("chunk_index"),
                result.get_str("worker").expect("worker").to_owned(),
                result.get_i64("attempt").expect("attempt"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_chunks_are_reclaimed_and_stored_once() {
    let mut env = TestEnv::new("sigkill").await;
    let address = env.start_server().await;
    let settings = [
        ("SLUICE_VISIBILITY_TIMEOUT", "2"),
        ("SLUICE_CONCURRENCY", "2"),
    ];
    let victim = env.spawn_worker("victim", &settings);
    let _survivor = env.spawn_worker("survivor", &settings);
    let mut client = env.client(address).await;
    // 30 chunks of 2 items at 100 ms each: several seconds of work for two workers.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 100}"#, json_items(60), 2).await;

    // Kill the victim while it holds chunks, after it has stored at least one.
    eventually(
        "the victim to store a result and hold chunks",
        BATCH_TIMEOUT,
        || async {
            let stored_by_victim = result_origins(&env)
                .await
                .iter()
                .any(|(_, worker, _)| worker == "victim");
            (stored_by_victim && env.pending_for("victim").await > 0).then_some(())
        },
    )
    .await;
    let held_when_killed = env.pending_for("victim").await;
    victim.kill();

    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (60, 0, 30));
    env.assert_one_result_per_item(&batch.id, 60).await;
    let outcomes = env.stored_outcomes(&batch.id).await;
    for (index, output) in &outcomes {
        assert_eq!(output.as_deref(), Ok(format!("{{\"i\":{index}}}").as_str()));
    }
    // The chunks the victim held were taken over: stored by the survivor on a later attempt.
    let reclaimed: Vec<_> = result_origins(&env)
        .await
        .into_iter()
        .filter(|(_, _, attempt)| *attempt >= 2)
        .collect();
    assert!(
        held_when_killed > 0 && !reclaimed.is_empty(),
        "held {held_when_killed}, reclaimed {reclaimed:?}"
    );
    assert!(reclaimed.iter().all(|(_, worker, _)| worker == "survivor"));
    env.finish().await;
}

/// Runs one chunk that takes longer than the visibility timeout on a worker named "slow"
/// (heartbeats on or off), with a second worker "other" watching for expired leases; returns
/// who stored the chunk's result, and on which attempt.
async fn slow_chunk_outcome(name: &str, heartbeats: bool) -> (String, i64) {
    let mut env = TestEnv::new(name).await;
    let address = env.start_server().await;
    let defaults = env.worker_config();
    let lease = |worker: &str| {
        let mut config = defaults.clone();
        config.name = Some(worker.to_owned());
        config.concurrency = 1;
        config.visibility_timeout = Duration::from_secs(1);
        config
    };
    let mut slow = lease("slow");
    if !heartbeats {
        slow.heartbeat_interval = Some(Duration::ZERO);
    }
    env.start_worker_with(slow);
    let mut client = env.client(address).await;
    // One chunk of 6 items at 400 ms: 2.4 s, well past the 1 s lease.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 400}"#, json_items(6), 6).await;
    eventually(
        "the slow worker to take the chunk",
        BATCH_TIMEOUT,
        || async { (env.pending_for("slow").await == 1).then_some(()) },
    )
    .await;
    let other = lease("other");
    env.start_worker_with(other);

    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (6, 0, 1));
    env.assert_one_result_per_item(&batch.id, 6).await;
    let origins = result_origins(&env).await;
    assert_eq!(origins.len(), 1, "one result document: {origins:?}");
    let (_, worker, attempt) = origins.into_iter().next().expect("one result");
    env.finish().await;
    (worker, attempt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_with_heartbeats_keeps_its_chunk() {
    assert_eq!(
        slow_chunk_outcome("heartbeat", true).await,
        ("slow".to_owned(), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_without_heartbeats_loses_its_chunk() {
    assert_eq!(
        slow_chunk_outcome("noheartbeat", false).await,
        ("other".to_owned(), 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_worker_finishes_its_chunks_and_exits_zero() {
    let mut env = TestEnv::new("sigterm").await;
    let address = env.start_server().await;
    let settings = [("SLUICE_SHUTDOWN_GRACE", "20"), ("SLUICE_CONCURRENCY", "2")];
    let mut leaving = env.spawn_worker("leaving", &settings);
    let mut client = env.client(address).await;
    // 12 chunks of 2 items at 150 ms.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 150}"#, json_items(24), 2).await;
    eventually("the worker to hold chunks", BATCH_TIMEOUT, || async {
        (env.pending_for("leaving").await > 0).then_some(())
    })
    .await;
    let stopping = Instant::now();
    leaving.terminate();
    let status = leaving.exit_status(Duration::from_secs(25)).await;
    let took = stopping.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(20),
        "exited within the grace period ({took:?})"
    );
    assert!(leaving.log_text().contains("waiting for in-flight chunks"));
    // It finished what it held: nothing of it is pending, and its results are stored.
    assert_eq!(env.pending_for("leaving").await, 0);
    assert!(result_origins(&env)
        .await
        .iter()
        .any(|(_, worker, _)| worker == "leaving"));

    // Another worker takes the rest; the batch completes.
    env.start_worker(2).await;
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (24, 0, 12));
    env.assert_one_result_per_item(&batch.id, 24).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_unfinished_at_the_end_of_the_grace_period_is_left_for_another_worker() {
    let mut env = TestEnv::new("grace").await;
    let address = env.start_server().await;
    let settings = [
        ("SLUICE_SHUTDOWN_GRACE", "0.5"),
        ("SLUICE_VISIBILITY_TIMEOUT", "1"),
        ("SLUICE_CONCURRENCY", "1"),
    ];
    let mut leaving = env.spawn_worker("leaving", &settings);
    let mut client = env.client(address).await;
    // One chunk of 5 items at 500 ms: it cannot finish within half a second.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 500}"#, json_items(5), 5).await;
    eventually("the worker to hold the chunk", BATCH_TIMEOUT, || async {
        (env.pending_for("leaving").await == 1).then_some(())
    })
    .await;
    leaving.terminate();
    let status = leaving.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        env.documents("results").await.is_empty(),
        "nothing half-recorded"
    );
    assert_eq!(
        env.pending_for("leaving").await,
        1,
        "the chunk is still pending, for reclaim"
    );

    let mut other = env.worker_config();
    other.name = Some("other".to_owned());
    other.visibility_timeout = Duration::from_secs(1);
    env.start_worker_with(other);
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(done_counts(&terminal), (5, 0, 1));
    env.assert_one_result_per_item(&batch.id, 5).await;
    assert_eq!(result_origins(&env).await, vec![(0, "other".to_owned(), 2)]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_a_draining_worker_at_once() {
    let mut env = TestEnv::new("twosignals").await;
    let address = env.start_server().await;
    let settings = [("SLUICE_SHUTDOWN_GRACE", "30"), ("SLUICE_CONCURRENCY", "1")];
    let mut leaving = env.spawn_worker("leaving", &settings);
    let mut client = env.client(address).await;
    // One chunk of 10 items at 1 s: the drain would wait ten seconds.
    create_batch(&mut client, "sleep", r#"{"ms": 1000}"#, json_items(10), 10).await;
    eventually("the worker to hold the chunk", BATCH_TIMEOUT, || async {
        (env.pending_for("leaving").await == 1).then_some(())
    })
    .await;
    leaving.terminate();
    eventually("the worker to start draining", READY_TIMEOUT, || async {
        leaving
            .log_text()
            .contains("waiting for in-flight chunks")
            .then_some(())
    })
    .await;
    let second = Instant::now();
    leaving.terminate();
    let status = leaving.exit_status(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(130), "exit status {status:?}");
    assert!(second.elapsed() < Duration::from_secs(5));
    assert!(
        env.documents("results").await.is_empty(),
        "nothing recorded"
    );
    assert_eq!(env.pending_for("leaving").await, 1, "left for reclaim");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_kills_its_workers_is_dead_lettered_after_the_attempt_limit() {
    let mut env = TestEnv::new("poison").await;
    let address = env.start_server().await;
    let settings = [
        ("SLUICE_VISIBILITY_TIMEOUT", "1"),
        ("SLUICE_MAX_ATTEMPTS", "2"),
        ("SLUICE_CONCURRENCY", "1"),
    ];
    let mut client = env.client(address).await;
    // One chunk of 10 items at 1 s, and every worker that takes it dies.
    let batch = create_batch(&mut client, "sleep", r#"{"ms": 1000}"#, json_items(10), 10).await;
    for name in ["first", "second"] {
        let worker = env.spawn_worker(name, &settings);
        eventually("the worker to take the chunk", BATCH_TIMEOUT, || async {
            (env.pending_for(name).await == 1).then_some(())
        })
        .await;
        worker.kill();
    }
    // Two deliveries ended with a dead worker: the third is not run, it is dead-lettered.
    let _third = env.spawn_worker("third", &settings);
    let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
    assert_eq!(terminal.state(), BatchState::Failed);
    assert_eq!(done_counts(&terminal), (0, 10, 1));
    let reason = "2 deliveries ended without a result (worker stopped or lost its lease)";
    let outcomes = env.stored_outcomes(&batch.id).await;
    assert_eq!(outcomes.len(), 10);
    assert!(outcomes
        .iter()
        .all(|(_, outcome)| outcome == &Err(format!("gave up after 2 attempts: {reason}"))));
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].get("reason").map(String::as_str), Some(reason));
    assert_eq!(letters[0].get("worker").map(String::as_str), Some("third"));
    env.finish().await;
}
