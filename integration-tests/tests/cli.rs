//! The `sluice` binary against a live server: what it prints, and the exit codes scripts rely
//! on. The binary is the one `cargo build --workspace --bins` made (dev/test builds it before
//! the tests run). Input formats are in `cli_input.rs`, the terminal (progress bar,
//! completions, help) in `cli_terminal.rs`.
use integration_tests::*;

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_and_results_from_the_command_line() {
    let mut env = TestEnv::new("cli").await;
    let address = env.start_server().await;
    env.start_worker(2).await;
    let server = format!("http://{address}");
    let input = "{\"a\":1}\n{\"a\":2}\nnot json\n{\"a\":4}\n";
    let params = r#"{"filter": ".a * 10"}"#;
    let args = [
        "--output",
        "json",
        "submit",
        "--task",
        "jq",
        "--params",
        params,
        "--input",
        "-",
        "--chunk-size",
        "2",
        "--watch",
    ];
    let output = sluice(&server, &args, input).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "a FAILED batch exits 3: {output:?}"
    );
    let events = json_lines(&output);
    let last = events.last().expect("events");
    assert_eq!(last["state"], "BATCH_STATE_FAILED");
    assert_eq!(last["counters"]["itemsTotal"], "4");
    assert_eq!(last["counters"]["itemsFailed"], "1");
    let sequences: Vec<u64> = events
        .iter()
        .map(|event| {
            event["sequence"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("sequence")
        })
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );
    let batch_id = last["batchId"].as_str().expect("batch id").to_owned();

    let results = sluice(&server, &["--output", "json", "results", &batch_id], "").await;
    assert_eq!(results.status.code(), Some(0));
    let lines = json_lines(&results);
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        serde_json::json!({"index": "0", "output": {"text": "10"}})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"index": "1", "output": {"text": "20"}})
    );
    assert_eq!(lines[2]["index"], "2");
    assert!(lines[2]["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("item is not valid JSON")));
    assert_eq!(
        lines[3],
        serde_json::json!({"index": "3", "output": {"text": "40"}})
    );

    // Fire and forget, then watch: a SUCCEEDED batch exits 0.
    let created = sluice(
        &server,
        &[
            "--output", "json", "submit", "--task", "echo", "--input", "-",
        ],
        "x\ny\n",
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let batch = json_lines(&created).pop().expect("the batch");
    let id = batch["id"].as_str().expect("id").to_owned();
    assert_eq!(batch["counters"]["itemsTotal"], "2");
    // Text to a pipe: one line per event, no progress bar.
    let watched = sluice(&server, &["watch", &id], "").await;
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    let lines = stdout(&watched);
    assert!(
        lines.lines().all(|line| line.starts_with("seq=")),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .last()
            .is_some_and(|line| line.ends_with("state=SUCCEEDED items=2/2 failed=0 chunks=1/1")),
        "{lines}"
    );
    let got = sluice(&server, &["--output", "json", "get", &id], "").await;
    assert_eq!(json_lines(&got)[0]["state"], "BATCH_STATE_SUCCEEDED");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_speak_to_a_person_with_distinct_exit_codes() {
    let mut env = TestEnv::new("clierr").await;
    let address = env.start_server().await;
    let server = format!("http://{address}");
    let bad_task = sluice(
        &server,
        &["submit", "--task", "nope", "--input", "-"],
        "x\n",
    )
    .await;
    assert_eq!(bad_task.status.code(), Some(1));
    let message = stderr(&bad_task);
    assert!(
        message.starts_with("sluice: invalid request: task: unknown task \"nope\""),
        "{message}"
    );
    assert_nothing_enqueued(&env).await;

    let unknown = sluice(&server, &["get", &uuid::Uuid::now_v7().to_string()], "").await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).ends_with(" not found\n"), "{unknown:?}");

    // An invalid argument names the server's field and limit.
    let too_big = sluice(
        &server,
        &[
            "submit",
            "--task",
            "echo",
            "--input",
            "-",
            "--chunk-size",
            "20000",
        ],
        "x\n",
    )
    .await;
    assert_eq!(too_big.status.code(), Some(1));
    assert_eq!(
        stderr(&too_big),
        "sluice: invalid request: chunk_size: 20000 is over the limit of 10000\n"
    );
    let not_an_id = sluice(&server, &["get", "nope"], "").await;
    assert_eq!(not_an_id.status.code(), Some(1));
    assert_eq!(
        stderr(&not_an_id),
        "sluice: invalid request: batch_id: \"nope\" is not a batch id (a UUID)\n"
    );
    assert_nothing_enqueued(&env).await;

    // A port nothing listens on: exit 5, naming the address and how to start a server, in one
    // line and no backtrace.
    let nowhere = nowhere();
    for args in [&["tasks"][..], &["health"], &["list"]] {
        let unreachable = sluice(&nowhere, args, "").await;
        assert_eq!(unreachable.status.code(), Some(5), "{args:?}");
        let message = stderr(&unreachable);
        assert!(
            message.starts_with(&format!(
                "sluice: cannot reach the Sluice server at {nowhere} ("
            )) && message.ends_with(
                "Start one with dev/stack up and sluice-server, or set SLUICE_SERVER.\n"
            ),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
    }

    let usage = sluice(&server, &["submit"], "").await;
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("--task <TASK>"), "{usage:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_makes_watch_exit_4_and_list_is_a_table() {
    // No worker: batches stay QUEUED until cancelled, so every count below is exact.
    let mut env = TestEnv::new("clicancel").await;
    let address = env.start_server().await;
    let server = format!("http://{address}");
    let submit = [
        "--output", "json", "submit", "--task", "echo", "--input", "-",
    ];
    let first = submitted_id(&sluice(&server, &submit, "a\nb\nc\n").await);
    let second = submitted_id(&sluice(&server, &submit, "d\n").await);

    let cancelled = sluice(&server, &["cancel", &first], "").await;
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    assert_eq!(
        stdout(&cancelled),
        format!("batch {first} cancelled: 0/3 items had finished\n")
    );
    let again = sluice(&server, &["cancel", &first], "").await;
    assert_eq!(again.status.code(), Some(0), "cancelling twice is a no-op");

    let watched = sluice(&server, &["watch", &first], "").await;
    assert_eq!(watched.status.code(), Some(4), "CANCELLED exits 4");
    assert!(stdout(&watched).contains("state=CANCELLED items=0/3"));

    let got = sluice(&server, &["get", &first], "").await;
    let block = stdout(&got);
    assert!(block.contains("\nstate     CANCELLED\n"), "{block}");
    assert!(
        block.contains("\nitems     0/3 done, 0 failed\n"),
        "{block}"
    );

    let table = stdout(&sluice(&server, &["list"], "").await);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("ID ") && rows[0].ends_with("  TASK  DONE  FAILED  CREATED"),
        "{table}"
    );
    assert!(rows[1].starts_with(&format!("{second}  QUEUED     echo   0/1       0  ")));
    assert!(rows[2].starts_with(&format!("{first}  CANCELLED  echo   0/3       0  ")));

    let only_cancelled = stdout(&sluice(&server, &["list", "--state", "cancelled"], "").await);
    assert_eq!(only_cancelled.lines().count(), 2, "{only_cancelled}");
    assert!(only_cancelled.contains(&first) && !only_cancelled.contains(&second));
    let newest = stdout(&sluice(&server, &["list", "--limit", "1"], "").await);
    assert_eq!(newest.lines().count(), 2, "{newest}");
    assert!(newest.contains(&second));
    let succeeded = sluice(&server, &["list", "--state", "succeeded"], "").await;
    assert_eq!(stdout(&succeeded), "(no batches)\n");
    let json = json_lines(&sluice(&server, &["--output", "json", "list"], "").await);
    let ids: Vec<&str> = json
        .iter()
        .filter_map(|batch| batch["id"].as_str())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving() {
    let mut env = TestEnv::new("clihealth").await;
    let address = env.start_server().await;
    let server = format!("http://{address}");
    let text = sluice(&server, &["health"], "").await;
    assert_eq!(text.status.code(), Some(0));
    assert_eq!(stdout(&text), "SERVING\n");
    let json = sluice(&server, &["--output", "json", "health"], "").await;
    assert_eq!(
        json_lines(&json),
        [serde_json::json!({"status": "SERVING"})]
    );
    env.finish().await;
}

async fn assert_nothing_enqueued(env: &TestEnv) {
    assert!(env.documents("batches").await.is_empty());
    assert_eq!(env.stream_length().await, 0);
}
