//! The server's settings: flags, each also an environment variable.
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sluice::config::ConnectionArgs;
use sluice::model::Limits;

/// `sluice-server`: Sluice's gRPC server.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-server", version, about)]
pub struct ServerConfig {
    /// Where Redis and MongoDB are.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Most items in one batch.
    #[arg(long, env = "SLUICE_MAX_ITEMS", default_value_t = 10_000_000)]
    pub max_items: u64,
    /// Most bytes in one item.
    #[arg(long, env = "SLUICE_MAX_ITEM_BYTES", default_value_t = 1 << 20)]
    pub max_item_bytes: usize,
    /// Largest chunk size a request may ask for.
    #[arg(long, env = "SLUICE_MAX_CHUNK_SIZE", default_value_t = 10_000)]
    pub max_chunk_size: u32,
    /// Chunk size for requests that give none.
    #[arg(long, env = "SLUICE_DEFAULT_CHUNK_SIZE", default_value_t = 1_000)]
    pub default_chunk_size: u32,
    /// Largest request message, in bytes (SubmitBatch/CreateBatch, or one UploadBatch message).
    #[arg(long, env = "SLUICE_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// How often, in milliseconds, watched batches are re-read from MongoDB, in case a Pub/Sub
    /// event was lost.
    #[arg(long, env = "SLUICE_WATCH_POLL_MS", default_value_t = 2_000)]
    pub watch_poll_ms: u64,
    /// Seconds open streams get to finish after a shutdown signal.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
}

impl ServerConfig {
    /// The batch limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_items_per_batch: self.max_items,
            max_item_bytes: self.max_item_bytes,
            max_chunk_size: self.max_chunk_size,
            default_chunk_size: self.default_chunk_size,
            ..Limits::default()
        }
    }

    /// The watch poll interval.
    pub fn watch_poll_interval(&self) -> Duration {
        Duration::from_millis(self.watch_poll_ms.max(10))
    }

    /// Settings for tests: defaults, with the given connections.
    pub fn for_tests(connection: ConnectionArgs) -> Self {
        let mut config = ServerConfig::parse_from(["sluice-server"]);
        config.connection = connection;
        config
    }
}
