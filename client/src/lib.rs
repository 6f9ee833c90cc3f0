//! The `sluice` command line as a library: [`run`] takes parsed arguments ([`Cli`]), talks to
//! a Sluice server over gRPC and returns the process's exit code. The binary only parses and
//! calls it.
//!
//! Flow: `submit` streams an input file to `UploadBatch` ([`input`] reads lines, JSON Lines or
//! CSV rows and groups them), `watch` follows `WatchBatch`, the other commands are one call
//! each ([`commands`]). Records go through one printer ([`output`], text or proto3 JSON), and
//! a followed batch through a live progress bar on a terminal; errors and batch outcomes
//! become exit codes and stderr messages in one place ([`failure`]).
use std::io::Write;
use std::process::ExitCode;

pub mod args;
mod commands;
mod connection;
mod failure;
mod input;
mod output;

pub use args::Cli;
use args::Command;
use commands::{batches, health, results, submit, watch};
use failure::Outcome;
use output::{EventDisplay, Printer};

/// Runs one command line and returns the exit code (documented in `sluice --help`). Errors are
/// reported on stderr as one line for a person.
pub async fn run(cli: Cli) -> ExitCode {
    let server = connection::normalize(&cli.server);
    let mut printer = Printer::new(cli.output, std::io::stdout());
    let display = EventDisplay::for_stdout(cli.output);
    match execute(&cli.command, &server, &mut printer, display).await {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(error) => {
            let failure = failure::describe(&error, &server);
            if let Some(message) = failure.message {
                eprintln!("sluice: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}

async fn execute<W: Write>(
    command: &Command,
    server: &str,
    printer: &mut Printer<W>,
    display: EventDisplay,
) -> anyhow::Result<Outcome> {
    use connection::connect;
    match command {
        Command::Submit(args) => {
            // The input is opened first, so a typo in its name costs no connection.
            let input = input::Input::open(&args.input).await?;
            let client = &mut connect(server).await?;
            submit::run(client, args, input, printer, display).await
        }
        Command::Watch(args) => {
            watch::run(&mut connect(server).await?, args, printer, display).await
        }
        Command::Get(args) => batches::get(&mut connect(server).await?, args, printer).await,
        Command::List(args) => batches::list(&mut connect(server).await?, args, printer).await,
        Command::Cancel(args) => batches::cancel(&mut connect(server).await?, args, printer).await,
        Command::Results(args) => {
            results::results(&mut connect(server).await?, args, printer).await
        }
        Command::Tasks => results::tasks(&mut connect(server).await?, printer).await,
        Command::Health => {
            health::health(connection::connect_channel(server).await?, printer).await
        }
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "sluice", &mut std::io::stdout());
            Ok(Outcome::Done)
        }
    }
}
