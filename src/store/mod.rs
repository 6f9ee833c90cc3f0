//! MongoDB, the source of truth: batches, their chunks (the items, written before anything is
//! enqueued) and their results (one document per chunk, with deterministic ids so a chunk that
//! is processed twice is stored once).
//!
//! Only what both MongoDB and FerretDB support is used: single-document atomic updates
//! (`findAndModify` with `$inc`/`$set`), unordered `insert_many`, unique `_id`s. No
//! transactions: every multi-document step is ordered so that a crash between two writes leaves
//! a state the next delivery or the reconciler can finish (see docs/reliability.md). Changes to
//! a batch document go through [`crate::progress::Progress`], which serializes them.
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::error::{Error, Result};
use crate::model::{BatchState, Counters, ItemOutcome, NewChunk, Payload};

mod documents;

pub use documents::BatchRecord;
use documents::{
    outcome_from_bson, outcome_to_bson, payload_from_bson, payload_to_bson, BatchDoc, ChunkDoc,
    IdempotencyDoc, ResultDoc,
};

/// How long an operation waits for a reachable server before it fails (and health turns
/// NOT_SERVING).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The states in which a batch can still change.
const LIVE_STATES: [&str; 2] = ["queued", "running"];

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

    /// Creates the secondary indexes (idempotent).
    pub async fn ensure_indexes(&self) -> Result<()> {
        let by_state = IndexModel::builder()
            .keys(doc! { "state": 1, "_id": -1 })
            .options(
                IndexOptions::builder()
                    .name("state_newest_first".to_owned())
                    .build(),
            )
            .build();
        self.batches.create_index(by_state).await?;
        Ok(())
    }

    /// Round-trips a `ping` command.
    pub async fn ping(&self) -> Result<()> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Stores chunks of a batch that is not created yet (the batch document comes last).
    pub async fn insert_chunks(&self, batch_id: &str, chunks: &[NewChunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let docs = chunks.iter().map(|chunk| ChunkDoc {
            id: chunk_id(batch_id, chunk.index),
            batch_id: batch_id.to_owned(),
            index: chunk.index as i64,
            first_item: chunk.first_item as i64,
            items: chunk.items.iter().map(payload_to_bson).collect(),
        });
        self.chunks.insert_many(docs).ordered(false).await?;
        Ok(())
    }

    /// Creates the batch document, which makes the batch visible. Chunks must be stored first.
    pub async fn insert_batch(&self, record: &BatchRecord) -> Result<()> {
        self.batches.insert_one(BatchDoc::from(record)).await?;
        Ok(())
    }

    /// Removes everything stored under a batch id: used when a create or upload fails before
    /// the batch was queued, so a rejected request leaves nothing behind.
    pub async fn delete_batch(&self, batch_id: &str) -> Result<()> {
        self.chunks
            .delete_many(doc! { "batch_id": batch_id })
            .await?;
        self.results
            .delete_many(doc! { "batch_id": batch_id })
            .await?;
        self.batches.delete_one(doc! { "_id": batch_id }).await?;
        Ok(())
    }

    /// Claims an idempotency key for `batch_id`. Returns the batch id that already holds the
    /// key, if another request claimed it first.
    pub async fn claim_idempotency_key(&self, key: &str, batch_id: &str) -> Result<Option<String>> {
        let claim = IdempotencyDoc {
            key: key.to_owned(),
            batch_id: batch_id.to_owned(),
            created_at: DateTime::now(),
        };
        match self.idempotency_keys.insert_one(claim).await {
            Ok(_) => Ok(None),
            Err(error) if is_duplicate_key(&error) => {
                let holder = self.idempotency_keys.find_one(doc! { "_id": key }).await?;
                Ok(holder.map(|doc| doc.batch_id))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Gives up an idempotency key claimed by a create that then failed.
    pub async fn release_idempotency_key(&self, key: &str, batch_id: &str) -> Result<()> {
        self.idempotency_keys
            .delete_one(doc! { "_id": key, "batch_id": batch_id })
            .await?;
        Ok(())
    }

    /// One batch.
    pub async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let doc = self.batches.find_one(doc! { "_id": batch_id }).await?;
        doc.map(BatchRecord::try_from).transpose()
    }

    /// Several batches at once (missing ids are left out).
    pub async fn get_batches(&self, batch_ids: &[String]) -> Result<Vec<BatchRecord>> {
        let cursor = self
            .batches
            .find(doc! { "_id": { "$in": batch_ids } })
            .await?;
        let docs: Vec<BatchDoc> = cursor.try_collect().await?;
        docs.into_iter().map(BatchRecord::try_from).collect()
    }

    /// Up to `limit` batches, newest first, optionally in one state, older than `before_id`.
    pub async fn list_batches(
        &self,
        state: Option<BatchState>,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let mut filter = Document::new();
        if let Some(state) = state {
            filter.insert("state", state.as_str());
        }
        if let Some(before_id) = before_id {
            filter.insert("_id", doc! { "$lt": before_id });
        }
        let cursor = self
            .batches
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(limit as i64)
            .await?;
        let docs: Vec<BatchDoc> = cursor.try_collect().await?;
        docs.into_iter().map(BatchRecord::try_from).collect()
    }

    /// Moves a live batch to CANCELLED.
    pub(crate) async fn cancel(&self, batch_id: &str) -> Result<CancelOutcome> {
        let now = DateTime::now();
        let update = doc! {
            "$set": { "state": BatchState::Cancelled.as_str(), "updated_at": now, "finished_at": now },
            "$inc": { "sequence": 1 },
        };
        if let Some(record) = self.update_live(batch_id, Document::new(), update).await? {
            return Ok(CancelOutcome::Cancelled(record));
        }
        match self.get_batch(batch_id).await? {
            None => Err(Error::NotFound(batch_id.to_owned())),
            Some(record) if record.state == BatchState::Cancelled => {
                Ok(CancelOutcome::AlreadyCancelled(record))
            }
            Some(record) => Err(Error::FailedPrecondition(format!(
                "batch {batch_id} already finished as {}",
                record.state
            ))),
        }
    }

    /// Moves a QUEUED batch to RUNNING; `None` if it was not QUEUED.
    pub(crate) async fn mark_running(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let update = doc! {
            "$set": { "state": BatchState::Running.as_str(), "updated_at": DateTime::now() },
            "$inc": { "sequence": 1 },
        };
        self.update_one_returning(doc! { "_id": batch_id, "state": "queued" }, update)
            .await
    }

    /// A chunk's items.
    pub async fn get_chunk(&self, batch_id: &str, index: u64) -> Result<Option<StoredChunk>> {
        let Some(doc) = self
            .chunks
            .find_one(doc! { "_id": chunk_id(batch_id, index) })
            .await?
        else {
            return Ok(None);
        };
        let items = doc
            .items
            .iter()
            .map(payload_from_bson)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(StoredChunk {
            index: doc.index as u64,
            first_item: doc.first_item as u64,
            items,
        }))
    }

    /// Stores a chunk's outcomes, once, noting which worker made them: `false` if a result for this chunk already exists (an
    /// earlier delivery stored it), in which case nothing changes.
    pub async fn insert_result(
        &self,
        batch_id: &str,
        chunk: &StoredChunk,
        outcomes: &[ItemOutcome],
        worker: &str,
    ) -> Result<bool> {
        let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count() as i64;
        let doc = ResultDoc {
            id: chunk_id(batch_id, chunk.index),
            batch_id: batch_id.to_owned(),
            chunk_index: chunk.index as i64,
            first_item: chunk.first_item as i64,
            succeeded: outcomes.len() as i64 - failed,
            failed,
            worker: worker.to_owned(),
            outcomes: outcomes.iter().map(outcome_to_bson).collect(),
        };
        match self.results.insert_one(doc).await {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Adds one stored chunk's counts to a live batch, atomically, and returns the batch after
    /// the change; `None` if the batch is no longer live (cancelled meanwhile).
    pub(crate) async fn add_chunk_counts(
        &self,
        batch_id: &str,
        succeeded: u64,
        failed: u64,
    ) -> Result<Option<BatchRecord>> {
        let update = doc! {
            "$inc": {
                "items_succeeded": succeeded as i64,
                "items_failed": failed as i64,
                "chunks_done": 1_i64,
                "sequence": 1_i64,
            },
            "$set": { "state": BatchState::Running.as_str(), "updated_at": DateTime::now() },
        };
        self.update_live(batch_id, Document::new(), update).await
    }

    /// Moves a live batch whose every chunk is done to its terminal state (FAILED if any item
    /// failed); `None` if another process already did, or it is not done.
    pub(crate) async fn finish(&self, batch: &BatchRecord) -> Result<Option<BatchRecord>> {
        let state = if batch.counters.items_failed > 0 {
            BatchState::Failed
        } else {
            BatchState::Succeeded
        };
        let now = DateTime::now();
        let update = doc! {
            "$set": { "state": state.as_str(), "updated_at": now, "finished_at": now },
            "$inc": { "sequence": 1 },
        };
        let condition = doc! { "chunks_done": { "$gte": batch.counters.chunks_total as i64 } };
        self.update_live(&batch.id, condition, update).await
    }

    /// The stored results of chunks `chunks` (a range of chunk indexes), in item order; chunks
    /// without a result yet are skipped. Readers page through a batch a few chunks at a time.
    pub async fn chunk_results(
        &self,
        batch_id: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<Vec<ItemResult>> {
        let ids: Vec<String> = chunks.map(|index| chunk_id(batch_id, index)).collect();
        let cursor = self.results.find(doc! { "_id": { "$in": &ids } }).await?;
        let mut docs: Vec<ResultDoc> = cursor.try_collect().await?;
        docs.sort_by_key(|doc| doc.chunk_index);
        let mut results = Vec::new();
        for doc in docs {
            for (offset, stored) in doc.outcomes.iter().enumerate() {
                let index = doc.first_item as u64 + offset as u64;
                results.push(ItemResult {
                    index,
                    outcome: outcome_from_bson(stored)?,
                });
            }
        }
        Ok(results)
    }

    async fn update_live(
        &self,
        batch_id: &str,
        condition: Document,
        update: Document,
    ) -> Result<Option<BatchRecord>> {
        let mut filter = doc! { "_id": batch_id, "state": { "$in": LIVE_STATES.to_vec() } };
        filter.extend(condition);
        self.update_one_returning(filter, update).await
    }

    async fn update_one_returning(
        &self,
        filter: Document,
        update: Document,
    ) -> Result<Option<BatchRecord>> {
        let updated = self
            .batches
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await?;
        updated.map(BatchRecord::try_from).transpose()
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
