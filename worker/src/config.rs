//! The worker's settings: flags, each also an environment variable.
use std::time::Duration;

use clap::Parser;
use sluice::config::ConnectionArgs;

/// `sluice-worker`: runs chunks of batches.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-worker", version, about)]
pub struct WorkerConfig {
    /// Where Redis and MongoDB are.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Chunks processed at once by this worker.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// This worker's consumer name in the group (default: unique per process).
    #[arg(long, env = "SLUICE_WORKER_NAME")]
    pub name: Option<String>,
    /// Seconds in-flight chunks get to finish after a shutdown signal.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
}

impl WorkerConfig {
    /// The consumer name: the configured one, or `worker-<uuid>`.
    pub fn consumer_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::now_v7().simple()))
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    /// Settings for tests: defaults, with the given connections.
    pub fn for_tests(connection: ConnectionArgs) -> Self {
        let mut config = WorkerConfig::parse_from(["sluice-worker"]);
        config.connection = connection;
        config
    }
}
