//! Redis: the chunk stream workers read through a consumer group, and the Pub/Sub channel that
//! carries progress events from workers to servers. Redis only carries references and events;
//! every chunk's items live in MongoDB, so Redis memory stays bounded by the number of chunks
//! waiting, whatever their size.
use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XReadResponse;
use prost::Message as _;

use crate::api::BatchEvent;
use crate::error::{Error, Result};
use crate::keys::{Keys, WORKER_GROUP};

/// Stream message field holding the batch id.
const FIELD_BATCH: &str = "batch";
/// Stream message field holding the chunk index.
const FIELD_CHUNK: &str = "chunk";
/// How many XADDs go to Redis in one pipeline.
const ENQUEUE_PIPELINE_DEPTH: usize = 256;

/// Builds a Redis client for `url` that reconnects forever with capped exponential backoff.
pub fn redis_builder(url: &str) -> Result<Builder> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .with_connection_config(|connection| {
            connection.connection_timeout = Duration::from_secs(3);
            connection.internal_command_timeout = Duration::from_secs(3);
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = Duration::from_secs(10);
        });
    Ok(builder)
}

/// Connects a command client to `url` and waits for the first connection.
pub async fn connect(url: &str) -> Result<Client> {
    let client = redis_builder(url)?.build()?;
    client.init().await?;
    Ok(client)
}

/// A chunk reference as it travels on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMessage {
    /// The stream entry id (for XACK).
    pub entry_id: String,
    /// The batch id.
    pub batch_id: String,
    /// The chunk's index in the batch.
    pub chunk_index: u64,
}

/// The Redis side of the pipeline, for one key prefix.
#[derive(Clone)]
pub struct Broker {
    client: Client,
    keys: Keys,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("keys", &self.keys).finish()
    }
}

impl Broker {
    /// Uses a connected client.
    pub fn new(client: Client, keys: Keys) -> Self {
        Broker { client, keys }
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Round-trips a PING.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.client.ping(None).await?;
        Ok(())
    }

    /// Creates the stream and its consumer group if they do not exist.
    pub async fn ensure_group(&self) -> Result<()> {
        let created: std::result::Result<String, _> =
            self.client.xgroup_create(self.keys.chunk_stream(), WORKER_GROUP, "0", true).await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if error.details().starts_with("BUSYGROUP") => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Adds one message per chunk, pipelined.
    pub async fn enqueue_chunks(
        &self,
        batch_id: &str,
        chunk_indexes: impl IntoIterator<Item = u64>,
    ) -> Result<()> {
        let stream = self.keys.chunk_stream();
        let indexes: Vec<u64> = chunk_indexes.into_iter().collect();
        for group in indexes.chunks(ENQUEUE_PIPELINE_DEPTH) {
            let pipeline = self.client.pipeline();
            for index in group {
                let fields = vec![(FIELD_BATCH, batch_id.to_owned()), (FIELD_CHUNK, index.to_string())];
                let _: () = pipeline.xadd(&stream, false, None, "*", fields).await?;
            }
            let _: Vec<Value> = pipeline.all().await?;
        }
        Ok(())
    }

    /// Reads up to `count` new chunk messages for `consumer`, waiting at most `block`.
    pub async fn read_chunks(
        &self,
        consumer: &str,
        count: u64,
        block: Duration,
    ) -> Result<Vec<ChunkMessage>> {
        // A timed-out block answers nil, which converts to an empty map.
        let response: XReadResponse<String, String, String, String> = self
            .client
            .xreadgroup_map(
                WORKER_GROUP,
                consumer,
                Some(count),
                Some(block.as_millis() as u64),
                false,
                self.keys.chunk_stream(),
                ">",
            )
            .await?;
        let mut messages = Vec::new();
        for (_stream, entries) in response {
            for (entry_id, fields) in entries {
                messages.push(parse_chunk_message(entry_id, &fields)?);
            }
        }
        Ok(messages)
    }

    /// Acknowledges a chunk message and deletes it from the stream, so a done chunk takes no
    /// Redis memory.
    pub async fn ack(&self, entry_id: &str) -> Result<()> {
        let stream = self.keys.chunk_stream();
        let pipeline = self.client.pipeline();
        let _: () = pipeline.xack(&stream, WORKER_GROUP, entry_id).await?;
        let _: () = pipeline.xdel(&stream, entry_id).await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Publishes a progress event to every server.
    pub async fn publish_event(&self, event: &BatchEvent) -> Result<()> {
        let bytes = event.encode_to_vec();
        let _: i64 = self.client.publish(self.keys.event_channel(), bytes).await?;
        Ok(())
    }
}

fn parse_chunk_message(
    entry_id: String,
    fields: &std::collections::HashMap<String, String>,
) -> Result<ChunkMessage> {
    let corrupt = |detail: String| Error::Corrupt { what: "chunk message", detail };
    let batch_id = fields
        .get(FIELD_BATCH)
        .ok_or_else(|| corrupt(format!("{entry_id} has no {FIELD_BATCH}")))?
        .clone();
    let chunk_index = fields
        .get(FIELD_CHUNK)
        .and_then(|index| index.parse().ok())
        .ok_or_else(|| corrupt(format!("{entry_id} has no valid {FIELD_CHUNK}")))?;
    Ok(ChunkMessage { entry_id, batch_id, chunk_index })
}

/// Decodes a progress event received on the channel.
pub fn decode_event(bytes: &[u8]) -> Result<BatchEvent> {
    BatchEvent::decode(bytes)
        .map_err(|error| Error::Corrupt { what: "event", detail: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunk_messages() {
        let fields = [("batch", "b1"), ("chunk", "7")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let message = parse_chunk_message("1-0".to_owned(), &fields).ok();
        assert_eq!(
            message,
            Some(ChunkMessage { entry_id: "1-0".into(), batch_id: "b1".into(), chunk_index: 7 })
        );
        let missing = [("batch".to_owned(), "b1".to_owned())].into_iter().collect();
        assert!(parse_chunk_message("1-0".to_owned(), &missing).is_err());
    }
}
