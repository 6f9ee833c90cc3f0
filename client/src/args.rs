//! The command line, as clap types: the global flags (`--server`, `--output`) and one variant
//! per subcommand. Parsing is all this module does; [`crate::run`] acts on the result. Every
//! subcommand's `--help` ends with an example, and the top-level help lists the exit codes.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice::api;

/// The exit codes, as the top-level `--help` lists them.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; for `submit --watch` and `watch`: the batch SUCCEEDED
  1  any other error (bad request, batch not found, unreadable input, ...)
  2  usage error (bad flags or arguments)
  3  the batch FAILED (at least one item has a permanent error)
  4  the batch was CANCELLED
  5  the Sluice server is unreachable or unavailable (retry later)

Examples:
  sluice tasks
  sluice submit --task jq --params '{\"filter\":\".name\"}' --input items.jsonl --watch
  sluice --output json list --state running";

/// `sluice`: submit batches of items to a Sluice server, watch them, and read their results.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The Sluice server's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub server: String,
    /// How records are printed: `text` for people, `json` for one JSON object per line (the
    /// proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines meant for people.
    Text,
    /// One JSON object per line, in the proto3 JSON mapping.
    Json,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Upload a batch from a file of lines (JSON Lines or plain text), one item per line.
    #[command(after_help = "\
Every line of the input is one item, sent as text (the line without its \\n or \\r\\n); only a
final empty line at the end of the file is not an item. Lines must be UTF-8.

Example:
  printf '{\"a\":1}\\n{\"a\":2}\\n' | sluice submit --task jq --params '{\"filter\":\".a\"}' --input - --watch")]
    Submit(SubmitArgs),
    /// Print a batch's events until it finishes; the exit code tells how it ended.
    #[command(after_help = "\
Example:
  sluice watch 0190b6b5-0f6e-7c5e-9a3e-0123456789ab
  sluice watch 0190b6b5-0f6e-7c5e-9a3e-0123456789ab --after 7   # only events after seq 7")]
    Watch(WatchArgs),
    /// Print one batch.
    #[command(after_help = "\
Example:
  sluice get 0190b6b5-0f6e-7c5e-9a3e-0123456789ab")]
    Get(BatchIdArgs),
    /// List batches, newest first.
    #[command(after_help = "\
Example:
  sluice list --state failed --limit 10")]
    List(ListArgs),
    /// Cancel a batch that has not finished (cancelling a cancelled batch is a no-op).
    #[command(after_help = "\
Example:
  sluice cancel 0190b6b5-0f6e-7c5e-9a3e-0123456789ab")]
    Cancel(BatchIdArgs),
    /// Print a batch's results in item order: one line per item, its output or its error.
    #[command(after_help = "\
Text lines are `<index>\\tok\\t<output>`, `<index>\\tbinary\\t<base64>` or
`<index>\\terror\\t<message>`; newlines inside an output are shown as \\n. Use --output json
for the exact outputs.

Example:
  sluice results 0190b6b5-0f6e-7c5e-9a3e-0123456789ab --failed-only")]
    Results(ResultsArgs),
    /// List the tasks the workers offer, with their parameters.
    #[command(after_help = "\
Example:
  sluice tasks")]
    Tasks,
}

/// `sluice submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The task every item goes through (see `sluice tasks`).
    #[arg(long)]
    pub task: String,
    /// The file of items, one per line; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Items per chunk, the unit of work a worker takes (default: the server's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: Option<u32>,
    /// The task's parameters, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// A key that makes retries safe: submitting again with it returns the batch it created.
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
    /// After the upload, print the batch's events until it finishes (exit code as for `watch`).
    #[arg(long)]
    pub watch: bool,
}

/// `sluice watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The batch id.
    pub id: String,
    /// Only print events with a sequence number greater than this (resume a watch).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: u64,
}

/// The commands that take only a batch id.
#[derive(Debug, Clone, Args)]
pub struct BatchIdArgs {
    /// The batch id.
    pub id: String,
}

/// `sluice list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only batches in this state.
    #[arg(long, value_enum, ignore_case = true)]
    pub state: Option<StateFilter>,
    /// At most this many batches (pages are followed until then).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// A batch state, as `list --state` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Accepted, not started.
    Queued,
    /// Being worked on.
    Running,
    /// Every item has an output.
    Succeeded,
    /// Finished, with at least one failed item.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl From<StateFilter> for api::BatchState {
    fn from(state: StateFilter) -> Self {
        match state {
            StateFilter::Queued => api::BatchState::Queued,
            StateFilter::Running => api::BatchState::Running,
            StateFilter::Succeeded => api::BatchState::Succeeded,
            StateFilter::Failed => api::BatchState::Failed,
            StateFilter::Cancelled => api::BatchState::Cancelled,
        }
    }
}

/// `sluice results`.
#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    /// The batch id.
    pub id: String,
    /// Only the items that failed.
    #[arg(long)]
    pub failed_only: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "sluice",
            "get",
            "x",
            "--output",
            "json",
            "--server",
            "http://h:1",
        ])
        .expect("valid command line");
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.server, "http://h:1");
        assert!(matches!(cli.command, Command::Get(BatchIdArgs { id }) if id == "x"));
    }

    #[test]
    fn list_takes_a_state_in_any_case() {
        let cli = Cli::try_parse_from(["sluice", "list", "--state", "FAILED"]).expect("valid");
        let Command::List(list) = cli.command else {
            panic!("not list")
        };
        assert_eq!(list.state, Some(StateFilter::Failed));
        assert_eq!(list.limit, 50);
        assert!(Cli::try_parse_from(["sluice", "list", "--limit", "0"]).is_err());
    }

    #[test]
    fn submit_needs_a_task_and_an_input() {
        assert!(Cli::try_parse_from(["sluice", "submit", "--input", "-"]).is_err());
        let cli = Cli::try_parse_from(["sluice", "submit", "--task", "echo", "--input", "-"])
            .expect("valid");
        let Command::Submit(submit) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(submit.input, PathBuf::from("-"));
        assert!(!submit.watch);
    }
}
