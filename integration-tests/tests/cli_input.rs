//! `sluice submit`'s input formats and `sluice results --out`, with the real binary against a
//! live server and worker: what each format turns into items, what a bad input leaves behind
//! (nothing), and the JSON Lines file a person gets.
use std::path::{Path, PathBuf};

use integration_tests::*;

mod cli_support;
use cli_support::*;

/// A directory of the test's own under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write input");
        path.display().to_string()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read scratch dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sluice --output json submit ... --watch`: the exit code and the terminal event.
async fn submit_and_watch(server: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut full = vec!["--output", "json", "submit"];
    full.extend_from_slice(args);
    full.push("--watch");
    let output = sluice(server, &full, "").await;
    let last = json_lines(&output).pop().unwrap_or_default();
    (output.status.code(), last)
}

/// The text outputs of a batch's results, in item order (`null` for a failed item).
async fn output_texts(server: &str, batch_id: &str) -> Vec<serde_json::Value> {
    json_lines(&sluice(server, &["--output", "json", "results", batch_id], "").await)
        .iter()
        .map(|result| result["output"]["text"].clone())
        .collect()
}

fn batch_id(event: &serde_json::Value) -> String {
    event["batchId"].as_str().expect("batch id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_become_json_objects_and_json_lines_are_checked() {
    let mut env = TestEnv::new("cliinput").await;
    let address = env.start_server().await;
    env.start_worker(2).await;
    let server = format!("http://{address}");
    let scratch = Scratch::new("input");

    // CSV: the header names the fields; quoted commas and newlines stay inside their field.
    let csv = scratch.file(
        "reviews.csv",
        "id,text\r\n1,great\r\n2,\"fine, mostly\"\r\n3,\"two\nlines\"\r\n",
    );
    let filter = r#"{"filter": "{id, text}"}"#;
    let (code, last) = submit_and_watch(
        &server,
        &["--task", "jq", "--params", filter, "--input", &csv],
    )
    .await;
    assert_eq!(code, Some(0), "{last}");
    assert_eq!(last["state"], "BATCH_STATE_SUCCEEDED");
    assert_eq!(last["counters"]["itemsTotal"], "3");
    assert_eq!(
        output_texts(&server, &batch_id(&last)).await,
        [
            r#"{"id":"1","text":"great"}"#,
            r#"{"id":"2","text":"fine, mostly"}"#,
            r#"{"id":"3","text":"two\nlines"}"#,
        ]
    );

    // JSON Lines: a line that is not JSON stops the upload before anything is queued.
    let jsonl = scratch.file("items.jsonl", "{\"a\":1}\n{\"a\":2}\n{a:3}\n");
    let rejected = sluice(
        &server,
        &[
            "submit",
            "--task",
            "jq",
            "--params",
            r#"{"filter": ".a"}"#,
            "--input",
            &jsonl,
        ],
        "",
    )
    .await;
    assert_eq!(rejected.status.code(), Some(1), "{rejected:?}");
    let message = stderr(&rejected);
    assert!(
        message.starts_with(&format!(
            "sluice: upload abandoned, nothing was submitted: line 3 of {jsonl} is not JSON ("
        )) && message.ends_with("use --format lines to send lines as they are\n"),
        "{message}"
    );
    let listed = sluice(&server, &["--output", "json", "list"], "").await;
    assert_eq!(json_lines(&listed).len(), 1, "only the CSV batch exists");

    // The same file as plain lines: three items, the third fails in the task instead (exit 3).
    let (code, last) = submit_and_watch(
        &server,
        &[
            "--task",
            "jq",
            "--params",
            r#"{"filter": ".a"}"#,
            "--input",
            &jsonl,
            "--format",
            "lines",
        ],
    )
    .await;
    assert_eq!(code, Some(3), "{last}");
    assert_eq!(last["counters"]["itemsTotal"], "3");
    assert_eq!(last["counters"]["itemsFailed"], "1");

    // Plain text by extension, from a file: one item per line, blank lines included.
    let text = scratch.file("lines.txt", "to be\n\nor not\n");
    let (code, last) = submit_and_watch(&server, &["--task", "wordcount", "--input", &text]).await;
    assert_eq!(code, Some(0), "{last}");
    assert_eq!(
        output_texts(&server, &batch_id(&last)).await,
        [r#"{"be":1,"to":1}"#, "{}", r#"{"not":1,"or":1}"#]
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_out_writes_a_complete_json_lines_file() {
    let mut env = TestEnv::new("cliout").await;
    let address = env.start_server().await;
    env.start_worker(1).await;
    let server = format!("http://{address}");
    let scratch = Scratch::new("out");
    let input = scratch.file("items.txt", "{\"a\":1}\nnot json\n{\"a\":3}\n");
    let (code, last) = submit_and_watch(
        &server,
        &[
            "--task",
            "jq",
            "--params",
            r#"{"filter": ".a"}"#,
            "--input",
            &input,
        ],
    )
    .await;
    assert_eq!(code, Some(3));
    let id = batch_id(&last);

    let out = scratch.path("results.jsonl");
    let out_arg = out.display().to_string();
    let written = sluice(&server, &["results", &id, "--out", &out_arg], "").await;
    assert_eq!(written.status.code(), Some(0), "{written:?}");
    assert_eq!(stdout(&written), "");
    assert_eq!(
        stderr(&written),
        format!("sluice: wrote 3 results to {out_arg}\n")
    );
    let file = std::fs::read_to_string(&out).expect("results file");
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 3, "{file}");
    assert_eq!(lines[0], r#"{"index":"0","output":{"text":"1"}}"#);
    assert!(
        lines[1].starts_with(r#"{"index":"1","error":"item is not valid JSON"#),
        "{file}"
    );
    assert_eq!(lines[2], r#"{"index":"2","output":{"text":"3"}}"#);

    let failed = scratch.path("failed.jsonl");
    let failed_arg = failed.display().to_string();
    let only_failed = sluice(
        &server,
        &["results", &id, "--failed-only", "--out", &failed_arg],
        "",
    )
    .await;
    assert_eq!(only_failed.status.code(), Some(0));
    let file = std::fs::read_to_string(&failed).expect("failed file");
    assert_eq!(file.lines().count(), 1);
    assert!(file.starts_with(r#"{"index":"1","error":"#), "{file}");

    // An unknown batch: an error, and no file at all (nor a partial one).
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = sluice(
        &server,
        &[
            "results",
            &unknown,
            "--out",
            &scratch.path("none.jsonl").display().to_string(),
        ],
        "",
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        format!("sluice: batch {unknown} not found\n")
    );
    assert_eq!(
        scratch.names(),
        ["failed.jsonl", "items.txt", "results.jsonl"],
        "no partial files are left"
    );
    assert!(Path::new(&out).exists());
    env.finish().await;
}
