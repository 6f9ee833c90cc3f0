//! What a person at a terminal sees: the live progress bar of `submit --watch` and `watch`,
//! drawn in a real pseudo-terminal and read back from it (not assumed from the code), the
//! shell completions as bash really completes them, and `--help` everywhere.
use std::process::Command;
use std::time::Duration;

use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession;
use expectrl::{Expect as _, Regex, Session};
use integration_tests::*;

mod cli_support;
use cli_support::*;

/// How long the pty test waits for each expected drawing.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// `sluice` with `args` in a fresh pseudo-terminal, 120 columns wide.
fn sluice_in_terminal(server: &str, args: &[&str]) -> OsSession {
    let mut command = Command::new(sluice_binary());
    command
        .args(args)
        .env("SLUICE_SERVER", server)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    let mut session = Session::spawn(command).expect("sluice starts in a pty");
    session
        .get_process_mut()
        .set_window_size(120, 30)
        .expect("pty size");
    session.set_expect_timeout(Some(EXPECT_TIMEOUT));
    session
}

fn exit_code(session: &OsSession) -> Option<i32> {
    match session.get_process().wait().expect("sluice exits") {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    }
}

/// The text a regex matched.
fn matched(captures: &expectrl::Captures) -> String {
    String::from_utf8_lossy(captures.get(0).unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_draws_a_live_progress_bar_on_a_terminal() {
    let mut env = TestEnv::new("clibar").await;
    let address = env.start_server().await;
    env.start_worker(1).await;
    let server = format!("http://{address}");
    // 40 items of 100 ms in chunks of 4, one chunk at a time: about 4 s of visible progress.
    let input = std::env::temp_dir().join(format!("sluice-bar-{}.txt", uuid::Uuid::now_v7()));
    let items: String = (0..40).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, items).expect("write input");
    let input_arg = input.display().to_string();
    let server_for_pty = server.clone();
    let (mid_run, finished, code) = tokio::task::spawn_blocking(move || {
        let mut session = sluice_in_terminal(
            &server_for_pty,
            &[
                "submit", "--task", "sleep", "--params", r#"{"ms": 100}"#, "--chunk-size", "4",
                "--input", &input_arg, "--watch",
            ],
        );
        session
            .expect(Regex(r"accepted: 40 items in 10 chunks"))
            .expect("the submitted line");
        // A frame drawn mid-run: some but not all items done, a rate and an ETA.
        let mid_run = session
            .expect(Regex(
                r"RUNNING +\[[=> ]{28}\] ([1-9]|[1-3][0-9])/40 items  0 failed  [0-9.]+ items/s  ETA [0-9]+[smh]",
            ))
            .expect("a mid-run frame of the bar");
        let finished = session
            .expect(Regex(
                r"SUCCEEDED \[={28}\] 40/40 items  0 failed  [0-9.]+ items/s  in [0-9]+s",
            ))
            .expect("the final frame of the bar");
        session.expect(expectrl::Eof).expect("sluice ends");
        let code = exit_code(&session);
        (matched(&mid_run), matched(&finished), code)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "a SUCCEEDED batch exits 0");
    let done: u32 = mid_run
        .split_once("] ")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|count| count.parse().ok())
        .expect("a count");
    assert!((1..40).contains(&done), "{mid_run}");
    assert!(finished.starts_with("SUCCEEDED [="), "{finished}");

    // `watch` of the finished batch draws the same bar, already complete, and exits 0.
    let batch_id = {
        let listed = sluice(&server, &["--output", "json", "list", "--limit", "1"], "").await;
        json_lines(&listed)[0]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let server_for_pty = server.clone();
    let (frame, code) = tokio::task::spawn_blocking(move || {
        let mut session = sluice_in_terminal(&server_for_pty, &["watch", &batch_id]);
        let frame = session
            .expect(Regex(r"SUCCEEDED \[={28}\] 40/40 items  0 failed"))
            .expect("the bar of a finished batch");
        session.expect(expectrl::Eof).expect("sluice ends");
        (matched(&frame), exit_code(&session))
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{frame}");
    let _ = std::fs::remove_file(&input);
    env.finish().await;
}

#[tokio::test]
async fn bash_completes_commands_and_flags() {
    let script = sluice(&nowhere(), &["completions", "bash"], "").await;
    assert_eq!(script.status.code(), Some(0), "needs no server: {script:?}");
    // Load the script into a real bash and ask it what `sluice su<TAB>` and
    // `sluice results x --f<TAB>` complete to.
    let complete = |words: &str, current: usize| {
        format!(
            "source /dev/stdin; COMP_WORDS=({words}); COMP_CWORD={current}; \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _sluice sluice \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
    };
    let run_bash = |program: String| {
        let script = script.stdout.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut child = Command::new("bash")
                    .args(["--noprofile", "--norc", "-c", &program])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("bash starts");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(&script)
                    .expect("feed the script");
                let output = child.wait_with_output().expect("bash exits");
                assert!(output.status.success(), "{output:?}");
                String::from_utf8_lossy(&output.stdout).into_owned()
            })
            .await
            .expect("join")
        }
    };
    let commands = run_bash(complete("sluice su", 1)).await;
    assert_eq!(commands.lines().collect::<Vec<_>>(), ["submit"]);
    let flags = run_bash(complete("sluice results x --f", 3)).await;
    assert_eq!(flags.lines().collect::<Vec<_>>(), ["--failed-only"]);

    for shell in ["zsh", "fish"] {
        let other = sluice(&nowhere(), &["completions", shell], "").await;
        assert_eq!(other.status.code(), Some(0));
        let script = stdout(&other);
        assert!(
            script.contains("submit") && script.contains("failed-only"),
            "{shell}: {script}"
        );
    }
    let unknown = sluice(&nowhere(), &["completions", "tcsh"], "").await;
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[tokio::test]
async fn every_command_has_help_with_an_example() {
    let commands = [
        "submit",
        "watch",
        "get",
        "list",
        "cancel",
        "results",
        "tasks",
        "health",
        "completions",
    ];
    for command in commands {
        let help = sluice(&nowhere(), &[command, "--help"], "").await;
        assert_eq!(help.status.code(), Some(0), "{command}");
        let text = stdout(&help);
        assert!(text.contains("Usage: sluice"), "{command}: {text}");
        assert!(
            text.contains("Example") && text.contains(&format!("  sluice {command}"))
                || command == "completions" && text.contains("sluice completions"),
            "`sluice {command} --help` shows no example: {text}"
        );
    }
    let top = stdout(&sluice(&nowhere(), &["--help"], "").await);
    for line in [
        "  3  the batch FAILED",
        "  4  the batch was CANCELLED",
        "  5  the Sluice server",
    ] {
        assert!(top.contains(line), "{top}");
    }
}
