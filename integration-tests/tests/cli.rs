//! The `sluice` binary against a live server: what a person at a terminal sees, and the exit
//! codes scripts rely on. The binary is the one `cargo build --workspace --bins` made (dev/test
//! builds it before the tests run).
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use integration_tests::*;

fn sluice_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join("sluice");
    assert!(
        binary.exists(),
        "{} is missing: run cargo build --workspace --bins",
        binary.display()
    );
    binary
}

/// Runs `sluice` with `args` against `server`, feeding `stdin`.
async fn sluice(server: &str, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(sluice_binary());
    command.env("SLUICE_SERVER", server).args(args);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("sluice exits")
    })
    .await
    .expect("join")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

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
    let watched = sluice(&server, &["watch", &id], "").await;
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    assert!(String::from_utf8_lossy(&watched.stdout).contains("SUCCEEDED"));
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
    let stderr = String::from_utf8_lossy(&bad_task.stderr);
    assert!(
        stderr.contains("invalid request: task: unknown task \"nope\""),
        "{stderr}"
    );
    assert_nothing_enqueued(&env).await;

    let unknown = sluice(&server, &["get", &uuid::Uuid::now_v7().to_string()], "").await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));

    // A port nothing listens on: exit 5, naming the address and how to start a server.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let nowhere = format!("http://{free}");
    let unreachable = sluice(&nowhere, &["tasks"], "").await;
    assert_eq!(unreachable.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains(&nowhere) && stderr.contains("sluice-server"),
        "{stderr}"
    );

    let usage = sluice(&server, &["submit"], "").await;
    assert_eq!(usage.status.code(), Some(2));
    env.finish().await;
}

async fn assert_nothing_enqueued(env: &TestEnv) {
    assert!(env.documents("batches").await.is_empty());
    assert_eq!(env.stream_length().await, 0);
}
