//! The batch model every process shares: states, counters, payloads, and the rules a new batch
//! must satisfy before anything is written ([`Limits`], [`BatchSpec::validate`]).
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::tasks::TaskRegistry;

/// Where a batch is in its life; the last three are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchState {
    /// Accepted and persisted; no worker has started on it.
    Queued,
    /// A worker has started on it.
    Running,
    /// Every item has an output.
    Succeeded,
    /// Every item has a result and at least one is a permanent error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl BatchState {
    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchState::Succeeded | BatchState::Failed | BatchState::Cancelled
        )
    }

    /// The name stored in MongoDB.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Queued => "queued",
            BatchState::Running => "running",
            BatchState::Succeeded => "succeeded",
            BatchState::Failed => "failed",
            BatchState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BatchState {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "queued" => BatchState::Queued,
            "running" => BatchState::Running,
            "succeeded" => BatchState::Succeeded,
            "failed" => BatchState::Failed,
            "cancelled" => BatchState::Cancelled,
            other => {
                return Err(Error::Corrupt {
                    what: "batch state",
                    detail: other.to_owned(),
                });
            }
        })
    }
}

/// Cumulative totals of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Items in the batch.
    pub items_total: u64,
    /// Items with an output.
    pub items_succeeded: u64,
    /// Items with a permanent error.
    pub items_failed: u64,
    /// Chunks the batch was split into.
    pub chunks_total: u64,
    /// Chunks whose results are stored.
    pub chunks_done: u64,
}

/// One item or output: text or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 text.
    Text(String),
    /// Arbitrary bytes.
    Binary(Vec<u8>),
}

impl Payload {
    /// Size in bytes, as the item limits count it.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's bytes, whatever its form.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(text) => text.as_bytes(),
            Payload::Binary(bytes) => bytes,
        }
    }
}

/// What one item became: an output, or a permanent error.
pub type ItemOutcome = std::result::Result<Payload, String>;

/// The limits a new batch is checked against (server flags).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most items in one batch.
    pub max_items_per_batch: u64,
    /// Most bytes in one item.
    pub max_item_bytes: usize,
    /// Largest chunk size a request may ask for.
    pub max_chunk_size: u32,
    /// Chunk size used when a request says 0.
    pub default_chunk_size: u32,
    /// Most bytes of items in one chunk: a chunk closes early rather than pass it, which keeps
    /// every stored chunk well under MongoDB's 16 MiB document limit.
    pub max_chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items_per_batch: 10_000_000,
            max_item_bytes: 1 << 20,
            max_chunk_size: 10_000,
            default_chunk_size: 1_000,
            max_chunk_bytes: 8 << 20,
        }
    }
}

/// A batch's description, without its items: what the header of every submit path carries.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    /// The task name.
    pub task: String,
    /// The task's parameters, parsed; always a JSON object.
    pub params: serde_json::Value,
    /// Items per chunk, resolved against the limits (never 0).
    pub chunk_size: u32,
    /// Optional idempotency key.
    pub idempotency_key: Option<String>,
}

impl BatchSpec {
    /// Checks the header fields of a new batch and resolves its defaults. `params` is the
    /// request's JSON text (empty means `{}`).
    pub fn validate(
        task: &str,
        params: &str,
        chunk_size: Option<u32>,
        idempotency_key: &str,
        limits: &Limits,
        registry: &TaskRegistry,
    ) -> Result<BatchSpec> {
        let Some(task_impl) = registry.get(task) else {
            let known = registry.names().collect::<Vec<_>>().join(", ");
            return Err(Error::invalid(
                "task",
                format!("unknown task {task:?} (known: {known})"),
            ));
        };
        let params_value: serde_json::Value = if params.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(params)
                .map_err(|error| Error::invalid("params", format!("not valid JSON: {error}")))?
        };
        if !params_value.is_object() {
            return Err(Error::invalid("params", "must be a JSON object"));
        }
        task_impl
            .validate(&params_value)
            .map_err(|message| Error::invalid("params", message))?;
        let chunk_size = match chunk_size {
            None => limits.default_chunk_size,
            Some(0) => {
                return Err(Error::invalid(
                    "chunk_size",
                    format!(
                        "must be at least 1 (leave it unset for the default of {})",
                        limits.default_chunk_size
                    ),
                ));
            }
            Some(size) if size > limits.max_chunk_size => {
                return Err(Error::invalid(
                    "chunk_size",
                    format!("{size} is over the limit of {}", limits.max_chunk_size),
                ));
            }
            Some(size) => size,
        };
        const MAX_KEY_BYTES: usize = 256;
        if idempotency_key.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(
                "idempotency_key",
                format!(
                    "{} bytes is over the limit of {MAX_KEY_BYTES}",
                    idempotency_key.len()
                ),
            ));
        }
        Ok(BatchSpec {
            task: task.to_owned(),
            params: params_value,
            chunk_size,
            idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_owned()),
        })
    }
}

/// Checks one item against the limits; `index` is its position in the batch.
pub fn validate_item(index: u64, item: &Payload, limits: &Limits) -> Result<()> {
    if item.len() > limits.max_item_bytes {
        return Err(Error::invalid(
            format!("items[{index}]"),
            format!(
                "{} bytes is over the limit of {} bytes",
                item.len(),
                limits.max_item_bytes
            ),
        ));
    }
    Ok(())
}

/// Splits a stream of items into chunks of at most `chunk_size` items and `max_chunk_bytes`
/// bytes (a single item larger than that still gets a chunk of its own). Chunks are handed out
/// as they fill, so an upload never holds more than one chunk.
#[derive(Debug)]
pub struct Chunker {
    chunk_size: usize,
    max_chunk_bytes: usize,
    current: Vec<Payload>,
    current_bytes: usize,
    next_first_item: u64,
    next_index: u64,
}

/// A chunk ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    /// Position of the chunk in the batch, from 0.
    pub index: u64,
    /// Position in the batch of the chunk's first item.
    pub first_item: u64,
    /// The chunk's items.
    pub items: Vec<Payload>,
}

impl Chunker {
    /// A chunker for `chunk_size` items and `max_chunk_bytes` bytes per chunk.
    pub fn new(chunk_size: u32, max_chunk_bytes: usize) -> Self {
        Chunker {
            chunk_size: chunk_size.max(1) as usize,
            max_chunk_bytes,
            current: Vec::new(),
            current_bytes: 0,
            next_first_item: 0,
            next_index: 0,
        }
    }

    /// Adds an item; returns the chunk it closed, if any.
    pub fn push(&mut self, item: Payload) -> Option<NewChunk> {
        let closed =
            if !self.current.is_empty() && self.current_bytes + item.len() > self.max_chunk_bytes {
                self.take()
            } else {
                None
            };
        self.current_bytes += item.len();
        self.current.push(item);
        if closed.is_none() && self.current.len() >= self.chunk_size {
            return self.take();
        }
        closed
    }

    /// Closes the last, partly filled chunk, if there is one.
    pub fn finish(&mut self) -> Option<NewChunk> {
        self.take()
    }

    /// Items pushed so far.
    pub fn items_seen(&self) -> u64 {
        self.next_first_item + self.current.len() as u64
    }

    /// Chunks handed out so far.
    pub fn chunks_closed(&self) -> u64 {
        self.next_index
    }

    fn take(&mut self) -> Option<NewChunk> {
        if self.current.is_empty() {
            return None;
        }
        let items = std::mem::take(&mut self.current);
        let chunk = NewChunk {
            index: self.next_index,
            first_item: self.next_first_item,
            items,
        };
        self.next_index += 1;
        self.next_first_item += chunk.items.len() as u64;
        self.current_bytes = 0;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Payload {
        Payload::Text(value.to_owned())
    }

    fn chunk_all(chunker: &mut Chunker, items: Vec<Payload>) -> Vec<NewChunk> {
        let mut chunks: Vec<NewChunk> = items.into_iter().filter_map(|i| chunker.push(i)).collect();
        chunks.extend(chunker.finish());
        chunks
    }

    #[test]
    fn chunks_by_count_with_a_short_last_chunk() {
        let mut chunker = Chunker::new(2, 1 << 20);
        let chunks = chunk_all(&mut chunker, vec![text("a"), text("b"), text("c")]);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            (chunks[0].index, chunks[0].first_item, chunks[0].items.len()),
            (0, 0, 2)
        );
        assert_eq!(
            (chunks[1].index, chunks[1].first_item, chunks[1].items.len()),
            (1, 2, 1)
        );
        assert_eq!(chunker.items_seen(), 3);
    }

    #[test]
    fn exact_multiple_leaves_no_empty_chunk() {
        let mut chunker = Chunker::new(2, 1 << 20);
        let chunks = chunk_all(&mut chunker, vec![text("a"), text("b")]);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunker.chunks_closed(), 1);
    }

    #[test]
    fn closes_early_on_bytes() {
        let mut chunker = Chunker::new(100, 5);
        let chunks = chunk_all(
            &mut chunker,
            vec![text("aaa"), text("bbb"), text("cccccccc")],
        );
        let sizes: Vec<usize> = chunks.iter().map(|c| c.items.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert_eq!(chunks[2].first_item, 2);
    }

    #[test]
    fn state_names_round_trip() {
        for state in [
            BatchState::Queued,
            BatchState::Running,
            BatchState::Succeeded,
            BatchState::Failed,
            BatchState::Cancelled,
        ] {
            assert_eq!(state.as_str().parse::<BatchState>().ok(), Some(state));
        }
        assert!("bogus".parse::<BatchState>().is_err());
    }

    #[test]
    fn item_over_the_limit_names_its_index() {
        let limits = Limits {
            max_item_bytes: 3,
            ..Limits::default()
        };
        let error = validate_item(7, &text("abcd"), &limits)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("items[7]: 4 bytes is over the limit of 3 bytes")
        );
    }
}
