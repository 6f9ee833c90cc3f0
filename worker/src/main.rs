//! `sluice-worker`: parses flags, sets up logging and calls [`sluice_worker::run`]. The first
//! SIGTERM or Ctrl-C stops reading and finishes in-flight chunks; a second exits at once.
use anyhow::Context;
use clap::Parser;
use sluice_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    sluice::telemetry::init();
    let shutdown = CancellationToken::new();
    tokio::spawn(sluice::telemetry::shutdown_on_signals(shutdown.clone()));
    sluice_worker::run(config, shutdown)
        .await
        .context("sluice-worker failed")
}
