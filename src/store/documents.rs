//! The shapes stored in MongoDB, and their conversion to the model. Kept apart so the layout
//! (field names, integer widths, how payloads are encoded) is visible in one place. Payloads
//! are stored as BSON strings or binary, never as documents built from user keys, which keeps
//! every user value legal for both MongoDB and FerretDB.
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{BatchState, Counters, ItemOutcome, Payload};

/// A batch as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// The batch id (UUID v7 text).
    pub id: String,
    /// The task name.
    pub task: String,
    /// The task params as JSON text.
    pub params: String,
    /// Its state.
    pub state: BatchState,
    /// Its counters.
    pub counters: Counters,
    /// Items per chunk.
    pub chunk_size: u32,
    /// The sequence number of its latest event.
    pub sequence: u64,
    /// When it was accepted.
    pub created_at: DateTime,
    /// When it last changed.
    pub updated_at: DateTime,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime>,
    /// The idempotency key it was created with.
    pub idempotency_key: Option<String>,
    /// Bumped each time the reconciler recounts the batch from its results; a worker's count
    /// made against an older generation is refused (the recount already holds it, or the next
    /// one will), so no chunk is ever counted twice.
    pub generation: u64,
    /// Still being uploaded: workers may process its chunks already, but clients do not see it
    /// and it cannot finish until it is sealed with its totals.
    pub open: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BatchDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) task: String,
    pub(super) params: String,
    pub(super) state: String,
    pub(super) chunk_size: i64,
    pub(super) items_total: i64,
    pub(super) items_succeeded: i64,
    pub(super) items_failed: i64,
    pub(super) chunks_total: i64,
    pub(super) chunks_done: i64,
    pub(super) sequence: i64,
    pub(super) created_at: DateTime,
    pub(super) updated_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) finished_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
    #[serde(default)]
    pub(super) generation: i64,
    #[serde(default)]
    pub(super) open: bool,
}

impl From<&BatchRecord> for BatchDoc {
    fn from(record: &BatchRecord) -> Self {
        BatchDoc {
            id: record.id.clone(),
            task: record.task.clone(),
            params: record.params.clone(),
            state: record.state.as_str().to_owned(),
            chunk_size: i64::from(record.chunk_size),
            items_total: record.counters.items_total as i64,
            items_succeeded: record.counters.items_succeeded as i64,
            items_failed: record.counters.items_failed as i64,
            chunks_total: record.counters.chunks_total as i64,
            chunks_done: record.counters.chunks_done as i64,
            sequence: record.sequence as i64,
            created_at: record.created_at,
            updated_at: record.updated_at,
            finished_at: record.finished_at,
            idempotency_key: record.idempotency_key.clone(),
            generation: record.generation as i64,
            open: record.open,
        }
    }
}

impl TryFrom<BatchDoc> for BatchRecord {
    type Error = Error;

    fn try_from(doc: BatchDoc) -> Result<Self> {
        let counters = Counters::from(&doc);
        Ok(BatchRecord {
            state: doc.state.parse()?,
            counters,
            chunk_size: u32::try_from(doc.chunk_size).map_err(|_| Error::Corrupt {
                what: "batch chunk_size",
                detail: doc.chunk_size.to_string(),
            })?,
            sequence: doc.sequence as u64,
            id: doc.id,
            task: doc.task,
            params: doc.params,
            created_at: doc.created_at,
            updated_at: doc.updated_at,
            finished_at: doc.finished_at,
            idempotency_key: doc.idempotency_key,
            generation: doc.generation as u64,
            open: doc.open,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChunkDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) batch_id: String,
    pub(super) index: i64,
    pub(super) first_item: i64,
    pub(super) items: Vec<Bson>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ResultDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) batch_id: String,
    pub(super) chunk_index: i64,
    pub(super) first_item: i64,
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    /// The consumer name of the worker that stored it (for operators and tests).
    pub(super) worker: String,
    /// Which attempt at the chunk made it, from 1.
    pub(super) attempt: i64,
    /// When that attempt started.
    pub(super) started_at: DateTime,
    /// When it was stored.
    pub(super) stored_at: DateTime,
    /// One per item: `{o: <payload>}` for an output, `{e: "<message>"}` for an error.
    pub(super) outcomes: Vec<Document>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IdempotencyDoc {
    #[serde(rename = "_id")]
    pub(super) key: String,
    pub(super) batch_id: String,
    pub(super) created_at: DateTime,
}

pub(super) fn payload_to_bson(payload: &Payload) -> Bson {
    match payload {
        Payload::Text(text) => Bson::String(text.clone()),
        Payload::Binary(bytes) => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: bytes.clone(),
        }),
    }
}

pub(super) fn payload_from_bson(value: &Bson) -> Result<Payload> {
    match value {
        Bson::String(text) => Ok(Payload::Text(text.clone())),
        Bson::Binary(binary) => Ok(Payload::Binary(binary.bytes.clone())),
        other => Err(Error::Corrupt {
            what: "payload",
            detail: format!("{:?}", other.element_type()),
        }),
    }
}

pub(super) fn outcome_to_bson(outcome: &ItemOutcome) -> Document {
    match outcome {
        Ok(payload) => doc! { "o": payload_to_bson(payload) },
        Err(message) => doc! { "e": message.as_str() },
    }
}

pub(super) fn outcome_from_bson(stored: &Document) -> Result<ItemOutcome> {
    if let Some(output) = stored.get("o") {
        return Ok(Ok(payload_from_bson(output)?));
    }
    match stored.get_str("e") {
        Ok(message) => Ok(Err(message.to_owned())),
        Err(_) => Err(Error::Corrupt {
            what: "result",
            detail: format!("{stored}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        let outcomes: Vec<ItemOutcome> = vec![
            Ok(Payload::Text("a".to_owned())),
            Ok(Payload::Binary(vec![0, 255])),
            Err("bad item".to_owned()),
        ];
        for outcome in outcomes {
            let stored = outcome_to_bson(&outcome);
            assert_eq!(outcome_from_bson(&stored).ok(), Some(outcome));
        }
    }
}
