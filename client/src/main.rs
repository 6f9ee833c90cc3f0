//! The `sluice` binary: parses the command line and hands it to [`sluice_cli::run`] on a
//! single-threaded runtime (a CLI waits on the network; it needs no thread pool).
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = sluice_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(sluice_cli::run(cli));
    // A read of standard input may still be blocked on a terminal; do not wait for it.
    runtime.shutdown_background();
    code
}
