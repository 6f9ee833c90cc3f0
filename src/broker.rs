//! Redis: the chunk stream workers read through a consumer group, and the Pub/Sub channel that
//! carries progress events from workers to servers. Redis only carries references and events;
//! every chunk's items live in MongoDB, so Redis memory stays bounded by the number of chunks
//! waiting, whatever their size.
use std::time::Duration;

use fred::prelude::*;
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
    /// A connection of its own for blocking reads: a client multiplexes its commands over one
    /// connection, so an XREADGROUP waiting a second would hold up every ack and publish.
    reader: Client,
    keys: Keys,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("keys", &self.keys).finish()
    }
}

impl Broker {
    /// Uses a connected client, for callers that never read chunks (the server).
    pub fn new(client: Client, keys: Keys) -> Self {
        Broker {
            reader: client.clone(),
            client,
            keys,
        }
    }

    /// Connects the two clients a chunk reader needs (commands, and blocking reads).
    pub async fn connect_reader(url: &str, keys: Keys) -> Result<Self> {
        let client = connect(url).await?;
        let reader = connect(url).await?;
        Ok(Broker {
            client,
            reader,
            keys,
        })
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
        let created: std::result::Result<String, _> = self
            .client
            .xgroup_create(self.keys.chunk_stream(), WORKER_GROUP, "0", true)
            .await;
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
                let fields = vec![
                    (FIELD_BATCH, batch_id.to_owned()),
                    (FIELD_CHUNK, index.to_string()),
                ];
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
        let reply: Value = self
            .reader
            .xreadgroup(
                WORKER_GROUP,
                consumer,
                Some(count),
                Some(block.as_millis() as u64),
                false,
                self.keys.chunk_stream(),
                ">",
            )
            .await?;
        parse_read_reply(reply)
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
        let _: i64 = self
            .client
            .publish(self.keys.event_channel(), bytes)
            .await?;
        Ok(())
    }
}

/// Parses an XREADGROUP reply by hand: fred's generic map conversion flattens one-element
/// arrays, which loses the entry of a single-entry reply. A nil reply (the block timed out)
/// holds no messages. RESP2 answers `[[stream, entries]]`, RESP3 `{stream: entries}`.
fn parse_read_reply(reply: Value) -> Result<Vec<ChunkMessage>> {
    let corrupt = |detail: &str| Error::Corrupt {
        what: "stream reply",
        detail: detail.to_owned(),
    };
    let per_stream: Vec<Value> = match reply {
        Value::Null => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.remove(1)),
                _ => Err(corrupt("stream is not a [name, entries] pair")),
            })
            .collect::<Result<_>>()?,
        Value::Map(streams) => streams.inner().into_values().collect(),
        _ => return Err(corrupt("reply is neither an array nor a map")),
    };
    let mut messages = Vec::new();
    for entries in per_stream {
        let Value::Array(entries) = entries else {
            return Err(corrupt("entries are not an array"));
        };
        for entry in entries {
            let Value::Array(mut entry) = entry else {
                return Err(corrupt("entry is not an [id, fields] pair"));
            };
            if entry.len() != 2 {
                return Err(corrupt("entry is not an [id, fields] pair"));
            }
            let fields = entry.remove(1);
            let entry_id = entry
                .remove(0)
                .into_string()
                .ok_or_else(|| corrupt("entry id"))?;
            let fields = match fields {
                Value::Array(flat) => flat.into_iter().filter_map(Value::into_string).collect(),
                // A claimed entry that was deleted meanwhile has no fields.
                Value::Null => Vec::new(),
                _ => return Err(corrupt("fields are not an array")),
            };
            messages.push(parse_chunk_message(entry_id, &fields)?);
        }
    }
    Ok(messages)
}

/// Builds a message from an entry's flat `[field, value, ...]` list.
fn parse_chunk_message(entry_id: String, fields: &[String]) -> Result<ChunkMessage> {
    let corrupt = |detail: String| Error::Corrupt {
        what: "chunk message",
        detail,
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0] == name)
            .map(|pair| pair[1].as_str())
    };
    let batch_id = field(FIELD_BATCH)
        .ok_or_else(|| corrupt(format!("{entry_id} has no {FIELD_BATCH}")))?
        .to_owned();
    let chunk_index = field(FIELD_CHUNK)
        .and_then(|index| index.parse().ok())
        .ok_or_else(|| corrupt(format!("{entry_id} has no valid {FIELD_CHUNK}")))?;
    Ok(ChunkMessage {
        entry_id,
        batch_id,
        chunk_index,
    })
}

/// Decodes a progress event received on the channel.
pub fn decode_event(bytes: &[u8]) -> Result<BatchEvent> {
    BatchEvent::decode(bytes).map_err(|error| Error::Corrupt {
        what: "event",
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(value: &str) -> Value {
        Value::String(value.into())
    }

    fn entry(id: &str, batch: &str, chunk: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("batch"), bulk(batch), bulk("chunk"), bulk(chunk)]),
        ])
    }

    #[test]
    fn parses_single_and_multi_entry_replies() {
        let single = Value::Array(vec![Value::Array(vec![
            bulk("{p}:chunks"),
            Value::Array(vec![entry("1-0", "b1", "7")]),
        ])]);
        let expected = ChunkMessage {
            entry_id: "1-0".into(),
            batch_id: "b1".into(),
            chunk_index: 7,
        };
        assert_eq!(parse_read_reply(single).ok(), Some(vec![expected]));
        let double = Value::Array(vec![Value::Array(vec![
            bulk("{p}:chunks"),
            Value::Array(vec![entry("1-0", "b1", "0"), entry("1-1", "b1", "1")]),
        ])]);
        assert_eq!(parse_read_reply(double).map(|m| m.len()).ok(), Some(2));
        assert_eq!(parse_read_reply(Value::Null).ok(), Some(Vec::new()));
    }

    #[test]
    fn rejects_messages_without_their_fields() {
        let fields = vec!["batch".to_owned(), "b1".to_owned()];
        assert!(parse_chunk_message("1-0".to_owned(), &fields).is_err());
    }
}
