//! The worker's settings: flags, each also an environment variable. Durations are in seconds
//! (fractions allowed).
use std::time::Duration;

use clap::Parser;
use sluice::config::{parse_seconds, ConnectionArgs};

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
    /// This worker's consumer name in the group (default: unique per process). A worker
    /// restarted under the same name takes back what it held once its lease expires.
    #[arg(long, env = "SLUICE_WORKER_NAME")]
    pub name: Option<String>,
    /// Seconds in-flight chunks get to finish after a shutdown signal.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value = "30", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,
    /// Seconds a chunk's lease lasts without a heartbeat: a chunk whose worker died is
    /// reclaimed by another worker after this long.
    #[arg(long, env = "SLUICE_VISIBILITY_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub visibility_timeout: Duration,
    /// Seconds between heartbeats that extend the lease of a chunk in progress (default: a
    /// third of the visibility timeout). 0 turns heartbeats off, which only fault tests want.
    #[arg(long, env = "SLUICE_HEARTBEAT_INTERVAL", value_parser = parse_seconds)]
    pub heartbeat_interval: Option<Duration>,
    /// Attempts at a chunk before it goes to the dead-letter stream and its items are recorded
    /// as failed. A worker crash, a lost lease, a timeout and a transient task failure each
    /// spend one; waiting out a MongoDB outage does not.
    #[arg(long, env = "SLUICE_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Seconds before the first retry of a failed chunk; each later retry waits twice as long
    /// (with jitter), up to --retry-backoff-max.
    #[arg(long, env = "SLUICE_RETRY_BACKOFF", default_value = "1", value_parser = parse_seconds)]
    pub retry_backoff: Duration,
    /// Longest wait before a retry, in seconds.
    #[arg(long, env = "SLUICE_RETRY_BACKOFF_MAX", default_value = "60", value_parser = parse_seconds)]
    pub retry_backoff_max: Duration,
    /// Seconds one attempt at a chunk may run before it is cut off (at the next item boundary)
    /// and counted as failed.
    #[arg(long, env = "SLUICE_CHUNK_TIMEOUT", default_value = "300", value_parser = parse_seconds)]
    pub chunk_timeout: Duration,
    /// Seconds between reconciler passes, which re-enqueue chunks no Redis queue holds (after
    /// Redis lost its data) and finish batches whose last update was lost. 0 turns it off.
    #[arg(long, env = "SLUICE_RECONCILE_INTERVAL", default_value = "10", value_parser = parse_seconds)]
    pub reconcile_interval: Duration,
    /// About how many entries the dead-letter stream keeps (older ones are trimmed).
    #[arg(long, env = "SLUICE_DEAD_LETTER_MAX", default_value_t = 10_000)]
    pub dead_letter_max: u64,
}

impl WorkerConfig {
    /// The consumer name: the configured one, or `worker-<uuid>`.
    pub fn consumer_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::now_v7().simple()))
    }

    /// How often leases are extended; `None` when heartbeats are off.
    pub fn heartbeat(&self) -> Option<Duration> {
        let interval = self
            .heartbeat_interval
            .unwrap_or(self.visibility_timeout / 3);
        (!interval.is_zero()).then_some(interval)
    }

    /// Settings for tests: defaults, with the given connections.
    pub fn for_tests(connection: ConnectionArgs) -> Self {
        let mut config = WorkerConfig::parse_from(["sluice-worker"]);
        config.connection = connection;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_default_to_a_third_of_the_lease() {
        let config = WorkerConfig::parse_from(["sluice-worker", "--visibility-timeout", "3"]);
        assert_eq!(config.heartbeat(), Some(Duration::from_secs(1)));
        let off = WorkerConfig::parse_from(["sluice-worker", "--heartbeat-interval", "0"]);
        assert_eq!(off.heartbeat(), None);
        assert!(WorkerConfig::try_parse_from(["sluice-worker", "--max-attempts", "0"]).is_err());
    }
}
