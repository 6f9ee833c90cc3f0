//! Redis: the chunk stream workers read through a consumer group, the retry set and dead-letter
//! stream around it, and the Pub/Sub channel that carries progress events from workers to
//! servers. Redis only carries references and events; every chunk's items live in MongoDB, so
//! Redis memory stays bounded by the number of chunks waiting, whatever their size.
//!
//! A chunk reference lives in exactly one place at a time: on the stream (new, or pending with
//! one consumer while it works, its lease), in the retry set (waiting out a backoff), or, after
//! its last attempt, on the capped dead-letter stream. The moves between them are Lua scripts
//! ([`scripts`]), so they are atomic whatever else runs.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use prost::Message as _;

use crate::api::{self, BatchEvent};
use crate::convert::payload_from_api;
use crate::error::{Error, Result};
use crate::keys::{Keys, WORKER_GROUP};
use crate::model::Payload;

mod reply;
mod scripts;

use reply::{FIELD_BATCH, FIELD_CHUNK, FIELD_FIRST_ITEM, FIELD_ITEMS};

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

/// A chunk to enqueue: always its index (the chunk itself is in MongoDB), and for a small chunk
/// while the stream is short, its items too, so the worker need not read them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedChunk {
    /// The chunk's index in the batch.
    pub index: u64,
    /// The chunk's items, carried on the message.
    pub inline: Option<InlineChunk>,
}

/// A chunk's items carried on its stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineChunk {
    /// The batch position of the chunk's first item.
    pub first_item: u64,
    /// The items.
    pub items: Vec<Payload>,
}

impl InlineChunk {
    /// The items as the message carries them: an `UploadItems` protobuf message.
    fn encode(&self) -> Vec<u8> {
        let items = self.items.iter().cloned().map(api::Payload::from).collect();
        api::UploadItems { items }.encode_to_vec()
    }

    /// Reads items as [`InlineChunk::encode`] wrote them.
    fn decode(first_item: u64, bytes: &[u8]) -> Result<Self> {
        let corrupt = |detail: String| Error::Corrupt {
            what: "inline chunk",
            detail,
        };
        let decoded =
            api::UploadItems::decode(bytes).map_err(|error| corrupt(error.to_string()))?;
        let items = decoded
            .items
            .into_iter()
            .map(|item| {
                payload_from_api(item).ok_or_else(|| corrupt("an item without a payload".into()))
            })
            .collect::<Result<_>>()?;
        Ok(InlineChunk { first_item, items })
    }
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
    /// Attempts at this chunk that failed before this message was queued (retries).
    pub failed_attempts: u32,
    /// How many times this message was delivered, this delivery included (more than 1 after a
    /// worker died or timed out holding it and another reclaimed it).
    pub deliveries: u64,
    /// The chunk's items, when the message carries them.
    pub inline: Option<InlineChunk>,
}

impl ChunkMessage {
    /// Which attempt at the chunk this delivery is, from 1: every earlier failure, and every
    /// earlier delivery of this message (each one ended with its worker gone), counts as one.
    pub fn attempt(&self) -> u64 {
        u64::from(self.failed_attempts) + self.deliveries.max(1)
    }
}

/// A chunk that failed its last attempt, as the dead-letter stream records it.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The chunk's message (acknowledged and deleted from the chunk stream in the same step).
    pub message: &'a ChunkMessage,
    /// Why its last attempt failed.
    pub reason: &'a str,
    /// The consumer that gave up on it.
    pub consumer: &'a str,
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

/// Now, in Unix milliseconds (the retry set's scores).
fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
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

    /// Adds one message per chunk, pipelined: a reference to the chunk in MongoDB, carrying its
    /// items too when the caller inlines them (see [`QueuedChunk`]). Returns the entry ids.
    pub async fn enqueue_chunks(
        &self,
        batch_id: &str,
        chunks: &[QueuedChunk],
    ) -> Result<Vec<String>> {
        let stream = self.keys.chunk_stream();
        let mut entry_ids = Vec::with_capacity(chunks.len());
        for group in chunks.chunks(ENQUEUE_PIPELINE_DEPTH) {
            let pipeline = self.client.pipeline();
            for chunk in group {
                let mut fields: Vec<(&str, Value)> = vec![
                    (FIELD_BATCH, batch_id.into()),
                    (FIELD_CHUNK, chunk.index.to_string().into()),
                ];
                if let Some(inline) = &chunk.inline {
                    fields.push((FIELD_FIRST_ITEM, inline.first_item.to_string().into()));
                    fields.push((FIELD_ITEMS, Value::Bytes(inline.encode().into())));
                }
                let _: () = pipeline.xadd(&stream, false, None, "*", fields).await?;
            }
            let added: Vec<String> = pipeline.all().await?;
            entry_ids.extend(added);
        }
        Ok(entry_ids)
    }

    /// Withdraws messages added for a batch that was then rejected, so it leaves nothing
    /// behind in Redis either (a worker that already took one finds no batch and drops it).
    pub async fn withdraw(&self, entry_ids: &[String]) -> Result<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let stream = self.keys.chunk_stream();
        for group in entry_ids.chunks(ENQUEUE_PIPELINE_DEPTH) {
            let pipeline = self.client.pipeline();
            let _: () = pipeline.xack(&stream, WORKER_GROUP, group.to_vec()).await?;
            let _: () = pipeline.xdel(&stream, group.to_vec()).await?;
            let _: Vec<Value> = pipeline.all().await?;
        }
        Ok(())
    }

    /// The number of entries on the chunk stream (waiting or pending): how far the workers are
    /// behind, which bounds how much the server inlines.
    pub async fn backlog(&self) -> Result<u64> {
        Ok(self.client.xlen(self.keys.chunk_stream()).await?)
    }

    /// Reads up to `count` new chunk messages for `consumer`, waiting at most `block` for one
    /// to arrive (`None`: answer at once).
    pub async fn read_chunks(
        &self,
        consumer: &str,
        count: u64,
        block: Option<Duration>,
    ) -> Result<Vec<ChunkMessage>> {
        let reply: Value = self
            .reader
            .xreadgroup(
                WORKER_GROUP,
                consumer,
                Some(count),
                block.map(|block| block.as_millis().max(1) as u64),
                false,
                self.keys.chunk_stream(),
                ">",
            )
            .await?;
        reply::parse_read_reply(reply)
    }

    /// Takes over up to `count` messages whose lease expired (pending for longer than
    /// `visibility_timeout` with no heartbeat), scanning the pending list from `cursor`.
    /// Returns the cursor to pass next time (`0-0` once the scan wrapped around) and the
    /// messages, each with its delivery count.
    pub async fn reclaim(
        &self,
        consumer: &str,
        visibility_timeout: Duration,
        cursor: &str,
        count: u64,
    ) -> Result<(String, Vec<ChunkMessage>)> {
        let reply: Value = self
            .client
            .eval(
                scripts::RECLAIM,
                vec![self.keys.chunk_stream()],
                vec![
                    WORKER_GROUP.to_owned(),
                    consumer.to_owned(),
                    visibility_timeout.as_millis().to_string(),
                    cursor.to_owned(),
                    count.max(1).to_string(),
                ],
            )
            .await?;
        reply::parse_reclaim_reply(reply)
    }

    /// Extends `consumer`'s lease on a message it is working on; `false` if it lost the lease
    /// (another consumer reclaimed the message) or the message is no longer pending.
    pub async fn extend_lease(&self, consumer: &str, entry_id: &str) -> Result<bool> {
        let extended: i64 = self
            .client
            .eval(
                scripts::EXTEND_LEASE,
                vec![self.keys.chunk_stream()],
                vec![WORKER_GROUP, consumer, entry_id],
            )
            .await?;
        Ok(extended == 1)
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

    /// Moves a message `consumer` holds to the retry set, due after `delay`, counting this
    /// attempt as failed. `false` (and nothing changes) if the consumer lost the lease.
    pub async fn retry_later(
        &self,
        consumer: &str,
        message: &ChunkMessage,
        delay: Duration,
    ) -> Result<bool> {
        let due = unix_millis(SystemTime::now() + delay);
        let member = format!(
            "{}|{}|{}",
            message.batch_id,
            message.chunk_index,
            message.attempt()
        );
        let moved: i64 = self
            .client
            .eval(
                scripts::RETRY_LATER,
                vec![self.keys.chunk_stream(), self.keys.retry_set()],
                vec![
                    WORKER_GROUP.to_owned(),
                    consumer.to_owned(),
                    message.entry_id.clone(),
                    due.to_string(),
                    member,
                ],
            )
            .await?;
        Ok(moved == 1)
    }

    /// Moves up to `limit` retries that are due back onto the stream; returns how many moved.
    /// Safe to call from every worker at once.
    pub async fn promote_due_retries(&self, limit: u64) -> Result<u64> {
        let moved: u64 = self
            .client
            .eval(
                scripts::PROMOTE_DUE,
                vec![self.keys.retry_set(), self.keys.chunk_stream()],
                vec![unix_millis(SystemTime::now()), limit.max(1)],
            )
            .await?;
        Ok(moved)
    }

    /// Records a chunk on the dead-letter stream (capped near `max_length` entries) and
    /// acknowledges its message, in one step.
    pub async fn dead_letter(&self, letter: DeadLetter<'_>, max_length: u64) -> Result<()> {
        let message = letter.message;
        let _: i64 = self
            .client
            .eval(
                scripts::DEAD_LETTER,
                vec![self.keys.chunk_stream(), self.keys.dead_letter_stream()],
                vec![
                    WORKER_GROUP.to_owned(),
                    message.entry_id.clone(),
                    max_length.max(1).to_string(),
                    message.batch_id.clone(),
                    message.chunk_index.to_string(),
                    message.attempt().to_string(),
                    letter.reason.to_owned(),
                    letter.consumer.to_owned(),
                    unix_millis(SystemTime::now()).to_string(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every `(batch id, chunk index)` Redis holds a reference to — waiting on the stream,
    /// pending with a worker, or in the retry set — read atomically.
    pub async fn queued_references(&self) -> Result<Vec<(String, u64)>> {
        let references: Vec<String> = self
            .client
            .eval(
                scripts::QUEUED_REFERENCES,
                vec![self.keys.chunk_stream(), self.keys.retry_set()],
                Vec::<String>::new(),
            )
            .await?;
        Ok(references
            .iter()
            .filter_map(|reference| reply::parse_reference(reference))
            .collect())
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

/// Decodes a progress event received on the channel.
pub fn decode_event(bytes: &[u8]) -> Result<BatchEvent> {
    BatchEvent::decode(bytes).map_err(|error| Error::Corrupt {
        what: "event",
        detail: error.to_string(),
    })
}
