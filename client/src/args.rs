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
  sluice --output json list --state running
  source <(sluice completions bash)";

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
    /// Upload a batch from a file (JSON Lines, plain lines or CSV), streamed as it is read.
    #[command(after_help = "\
Formats (--format, else from the extension: .jsonl/.ndjson are jsonl, .csv is csv, anything
else and standard input are lines):
  lines  every line is one item, sent as text (without its \\n or \\r\\n)
  jsonl  the same, but every line must be valid JSON (checked before anything is sent)
  csv    the first row names the columns; every later row is one item, a JSON object
         of column name to value (all strings), e.g. {\"id\":\"7\",\"text\":\"hi\"}
Only a final empty line at the end of the file is not an item. Input must be UTF-8. An input
that cannot be read to its end submits nothing.

With --watch, a terminal shows a live progress bar (items done/total, items/s, ETA, failed,
state); otherwise, or with --output json, one line per event.

Examples:
  printf '{\"a\":1}\\n{\"a\":2}\\n' | sluice submit --task jq --params '{\"filter\":\".a\"}' --input - --watch
  sluice submit --task jq --params '{\"filter\":\".text\"}' --input reviews.csv --chunk-size 500")]
    Submit(SubmitArgs),
    /// Follow a batch until it finishes (progress bar on a terminal, else one line per event).
    #[command(after_help = "\
The exit code tells how the batch ended: 0 SUCCEEDED, 3 FAILED, 4 CANCELLED.

Example:
  sluice watch 0190b6b5-0f6e-7c5e-9a3e-0123456789ab
  sluice watch 0190b6b5-0f6e-7c5e-9a3e-0123456789ab --after 7   # only events after seq 7")]
    Watch(WatchArgs),
    /// Print one batch: its state and counters.
    #[command(after_help = "\
Example:
  sluice get 0190b6b5-0f6e-7c5e-9a3e-0123456789ab")]
    Get(BatchIdArgs),
    /// List batches, newest first, as a table.
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
With --out FILE, or --output json, every result is one JSON object per line (JSON Lines):
{\"index\":\"0\",\"output\":{\"text\":\"...\"}} or {\"index\":\"3\",\"error\":\"...\"}. The file
appears only once every result is in it.
Otherwise the lines are `<index>\\tok\\t<output>`, `<index>\\tbinary\\t<base64>` or
`<index>\\terror\\t<message>`, with newlines inside an output shown as \\n.

Examples:
  sluice results 0190b6b5-0f6e-7c5e-9a3e-0123456789ab --failed-only
  sluice results 0190b6b5-0f6e-7c5e-9a3e-0123456789ab --out results.jsonl")]
    Results(ResultsArgs),
    /// List the tasks the workers offer, with their parameters.
    #[command(after_help = "\
Example:
  sluice tasks")]
    Tasks,
    /// Check that the server is up and SERVING (Redis and MongoDB reachable).
    #[command(after_help = "\
Exit code 0 when SERVING, 5 when the server is unreachable or not serving.

Examples:
  sluice health
  until sluice health; do sleep 1; done    # wait for a server that is starting")]
    Health,
    /// Print a shell completion script (needs no server).
    #[command(after_help = "\
Examples:
  source <(sluice completions bash)                      # this bash session
  sluice completions bash > ~/.local/share/bash-completion/completions/sluice
  sluice completions zsh > \"${fpath[1]}/_sluice\"
  sluice completions fish > ~/.config/fish/completions/sluice.fish")]
    Completions(CompletionsArgs),
}

/// `sluice submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The task every item goes through (see `sluice tasks`).
    #[arg(long)]
    pub task: String,
    /// The file of items; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// How the input is read (default: from the file's extension, else lines).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
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

/// How `submit` turns its input into items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// JSON Lines: one JSON value per line, checked.
    Jsonl,
    /// Plain text: one item per line, as it is.
    Lines,
    /// CSV with a header row: one JSON object per row.
    Csv,
}

impl InputFormat {
    /// The format `--format` gives, else the one `path`'s extension implies: `.jsonl` and
    /// `.ndjson` are JSON Lines, `.csv` is CSV, anything else (and standard input) is lines.
    pub fn resolve(given: Option<InputFormat>, path: &std::path::Path) -> InputFormat {
        if let Some(format) = given {
            return format;
        }
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("jsonl" | "ndjson") => InputFormat::Jsonl,
            Some("csv") => InputFormat::Csv,
            _ => InputFormat::Lines,
        }
    }
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
    /// Write the results to FILE as JSON Lines instead of printing them.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `sluice completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
        assert_eq!(submit.format, None);
        assert!(!submit.watch);
    }

    #[test]
    fn the_input_format_comes_from_the_flag_or_the_extension() {
        use std::path::Path;
        let resolve = |given, path: &str| InputFormat::resolve(given, Path::new(path));
        assert_eq!(resolve(None, "items.jsonl"), InputFormat::Jsonl);
        assert_eq!(resolve(None, "dir.v2/items.NDJSON"), InputFormat::Jsonl);
        assert_eq!(resolve(None, "rows.csv"), InputFormat::Csv);
        assert_eq!(resolve(None, "notes.txt"), InputFormat::Lines);
        assert_eq!(resolve(None, "items.json"), InputFormat::Lines);
        assert_eq!(resolve(None, "-"), InputFormat::Lines);
        assert_eq!(resolve(Some(InputFormat::Csv), "-"), InputFormat::Csv);
        assert_eq!(
            resolve(Some(InputFormat::Lines), "items.jsonl"),
            InputFormat::Lines
        );
    }

    #[test]
    fn every_command_has_an_example() {
        let command = Cli::command();
        for subcommand in command.get_subcommands() {
            let after = subcommand
                .get_after_help()
                .map(|help| help.to_string())
                .unwrap_or_default();
            assert!(
                after.contains("Example") && after.contains("sluice "),
                "`sluice {} --help` has no example",
                subcommand.get_name()
            );
        }
    }
}
