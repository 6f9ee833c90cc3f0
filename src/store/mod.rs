//! MongoDB, the source of truth: batches, their chunks (the items, written before anything is
//! enqueued) and their results (one document per chunk, with deterministic ids so a chunk that
//! is processed twice is stored once).
//!
//! Only what both MongoDB and FerretDB support is used: single-document atomic updates
//! (`findAndModify` with `$inc`/`$set`), unordered `insert_many`, unique `_id`s, projections.
//! No transactions: every multi-document step is ordered so that a crash between
//! two writes leaves a state the next delivery or the reconciler can finish (see
//! docs/reliability.md). Changes to a batch document go through [`crate::progress::Progress`],
//! which serializes them.
use std::time::Duration;

use mongodb::bson::{doc, DateTime};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::error::Result;
use crate::model::{Counters, ItemOutcome, Payload};

mod batches;
mod chunks;
mod documents;
mod results;

pub use documents::BatchRecord;
use documents::{BatchDoc, ChunkDoc, IdempotencyDoc, ResultDoc};

/// How long an operation waits for a reachable server before it fails (and health turns
/// NOT_SERVING).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// Handle on Sluice's MongoDB database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    batches: Collection<BatchDoc>,
    chunks: Collection<ChunkDoc>,
    results: Collection<ResultDoc>,
    idempotency_keys: Collection<IdempotencyDoc>,
}

/// A chunk's items, as a worker reads them.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    /// The chunk's position in its batch.
    pub index: u64,
    /// The batch position of its first item.
    pub first_item: u64,
    /// Its items.
    pub items: Vec<Payload>,
}

/// One item's stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    /// The item's position in the batch.
    pub index: u64,
    /// Its output or error.
    pub outcome: ItemOutcome,
}

/// Who made a chunk's results, stored with them for operators and tests.
#[derive(Debug, Clone)]
pub struct ResultOrigin<'a> {
    /// The worker's consumer name.
    pub worker: &'a str,
    /// Which attempt at the chunk made them, from 1.
    pub attempt: u64,
    /// When that attempt started.
    pub started_at: DateTime,
}

/// What [`Store::cancel`] did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The batch moved to CANCELLED now.
    Cancelled(BatchRecord),
    /// It was already CANCELLED.
    AlreadyCancelled(BatchRecord),
}

/// The chunk id, shared by a chunk and its result: sortable, unique per batch.
pub fn chunk_id(batch_id: &str, index: u64) -> String {
    format!("{batch_id}:{index:010}")
}

impl Store {
    /// Connects to `url` (for example `mongodb://127.0.0.1:27017`) and uses `database`.
    pub async fn connect(url: &str, database: &str) -> Result<Store> {
        let mut options = ClientOptions::parse(url).await?;
        options.app_name = Some("sluice".to_owned());
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        let client = Client::with_options(options)?;
        Ok(Store::new(client.database(database)))
    }

    /// Uses an already connected database.
    pub fn new(database: Database) -> Store {
        Store {
            batches: database.collection("batches"),
            chunks: database.collection("chunks"),
            results: database.collection("results"),
            idempotency_keys: database.collection("idempotency_keys"),
            database,
        }
    }

    /// The database, for tests and tools that inspect what is stored.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the secondary indexes (idempotent): batches by state, newest first (ListBatches
    /// and the reconciler), and chunks and results by batch (clean-up, recounts, and seeking to
    /// an item's result).
    pub async fn ensure_indexes(&self) -> Result<()> {
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let by_state = IndexModel::builder()
            .keys(doc! { "state": 1, "_id": -1 })
            .options(named("state_newest_first"))
            .build();
        self.batches.create_index(by_state).await?;
        let chunks_by_batch = IndexModel::builder()
            .keys(doc! { "batch_id": 1 })
            .options(named("by_batch"))
            .build();
        self.chunks.create_index(chunks_by_batch).await?;
        let results_by_item = IndexModel::builder()
            .keys(doc! { "batch_id": 1, "first_item": 1 })
            .options(named("by_batch_and_item"))
            .build();
        self.results.create_index(results_by_item).await?;
        Ok(())
    }

    /// Round-trips a `ping` command.
    pub async fn ping(&self) -> Result<()> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }
}

/// Whether a write failed only because the `_id` exists (E11000).
fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    const DUPLICATE_KEY: i32 = 11000;
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write_error)) => {
            write_error.code == DUPLICATE_KEY
        }
        ErrorKind::InsertMany(insert_many) => insert_many
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY)),
        ErrorKind::Command(command_error) => command_error.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Counters as stored (for [`BatchRecord`] conversions).
impl From<&BatchDoc> for Counters {
    fn from(doc: &BatchDoc) -> Self {
        Counters {
            items_total: doc.items_total as u64,
            items_succeeded: doc.items_succeeded as u64,
            items_failed: doc.items_failed as u64,
            chunks_total: doc.chunks_total as u64,
            chunks_done: doc.chunks_done as u64,
        }
    }
}
