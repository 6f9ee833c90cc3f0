//! Running the real `sluice` binary from the CLI tests: the one `cargo build --workspace
//! --bins` made (dev/test builds it before the tests run), with `SLUICE_SERVER` set, fed a
//! standard input, its status and output captured.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The `sluice` binary next to the test binary's profile directory.
pub(crate) fn sluice_binary() -> PathBuf {
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
pub(crate) async fn sluice(server: &str, args: &[&str], stdin: &str) -> Output {
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

/// Standard output, as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error, as text.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Standard output, one JSON value per line.
pub(crate) fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

/// The id of the batch a `--output json submit` (without --watch) printed.
pub(crate) fn submitted_id(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "submit failed: {output:?}");
    let batch = json_lines(output).pop().expect("the batch");
    batch["id"].as_str().expect("id").to_owned()
}

/// A port nothing listens on, as a server URL.
pub(crate) fn nowhere() -> String {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    format!("http://{free}")
}
