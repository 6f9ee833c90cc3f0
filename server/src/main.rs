//! `sluice-server`: parses flags, sets up logging, binds the listener and calls
//! [`sluice_server::run`]. The first SIGTERM or Ctrl-C drains gracefully; a second exits at
//! once.
use anyhow::Context;
use clap::Parser;
use sluice_server::ServerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServerConfig::parse();
    sluice::telemetry::init();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(sluice::telemetry::shutdown_on_signals(shutdown.clone()));
    sluice_server::run(config, listener, shutdown)
        .await
        .context("sluice-server failed")
}
