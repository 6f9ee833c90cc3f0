//! Batch documents: created last (after their chunks), changed only through single-document
//! atomic updates that match on the batch still being live, and — for counts — on the
//! generation the worker read, so a recount and a late count never both land.
use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::ReturnDocument;

use super::documents::{BatchDoc, IdempotencyDoc};
use super::{is_duplicate_key, BatchRecord, CancelOutcome, Store};
use crate::error::{Error, Result};
use crate::model::{BatchState, Counters};

/// The states in which a batch can still change.
const LIVE_STATES: [&str; 2] = ["queued", "running"];
/// Lookups by `_id` [`Store::get_batches`] keeps in flight.
const LOOKUPS_AT_ONCE: usize = 16;

impl Store {
    /// Creates the batch document. Stored `open`, it stays invisible to clients until it is
    /// sealed; it must exist before any of its chunks is enqueued, so workers find it.
    pub async fn insert_batch(&self, record: &BatchRecord) -> Result<()> {
        self.batches.insert_one(BatchDoc::from(record)).await?;
        Ok(())
    }

    /// Removes a batch document (first, and under the batch's lock: workers then store nothing
    /// more for it).
    pub(crate) async fn delete_batch_document(&self, batch_id: &str) -> Result<()> {
        self.batches.delete_one(doc! { "_id": batch_id }).await?;
        Ok(())
    }

    /// Removes a deleted batch's chunks and results.
    pub(crate) async fn delete_batch_data(&self, batch_id: &str) -> Result<()> {
        self.chunks
            .delete_many(doc! { "batch_id": batch_id })
            .await?;
        self.results
            .delete_many(doc! { "batch_id": batch_id })
            .await?;
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

    /// Several batches at once (missing ids are left out). One `_id` lookup per batch, a few
    /// at a time, rather than one `$in`: FerretDB answers `$in` with a scan of every batch ever
    /// stored, and servers re-read their watched batches every poll interval.
    pub async fn get_batches(&self, batch_ids: &[String]) -> Result<Vec<BatchRecord>> {
        let mut found = Vec::with_capacity(batch_ids.len());
        for group in batch_ids.chunks(LOOKUPS_AT_ONCE) {
            let lookups = group.iter().map(|batch_id| self.get_batch(batch_id));
            found.extend(
                futures::future::try_join_all(lookups)
                    .await?
                    .into_iter()
                    .flatten(),
            );
        }
        Ok(found)
    }

    /// Up to `limit` batches, newest first, optionally in one state, older than `before_id`.
    pub async fn list_batches(
        &self,
        state: Option<BatchState>,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let mut filter = doc! { "open": { "$ne": true } };
        if let Some(state) = state {
            filter.insert("state", state.as_str());
        }
        if let Some(before_id) = before_id {
            filter.insert("_id", doc! { "$lt": before_id });
        }
        self.find_batches(filter, Some(limit)).await
    }

    /// Up to `limit` live (QUEUED or RUNNING) batches that have not changed since `before`:
    /// the ones the reconciler checks for lost chunks and missing counts.
    pub async fn idle_live_batches(
        &self,
        before: DateTime,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let filter = doc! {
            "state": { "$in": LIVE_STATES.to_vec() },
            "updated_at": { "$lt": before },
            "open": { "$ne": true },
        };
        self.find_batches(filter, Some(limit)).await
    }

    /// Up to `limit` batches still open (being uploaded) that were created before `before`:
    /// uploads whose server died midway, for the reconciler to remove.
    pub async fn abandoned_uploads(
        &self,
        before: DateTime,
        limit: u32,
    ) -> Result<Vec<BatchRecord>> {
        let filter = doc! { "open": true, "created_at": { "$lt": before } };
        self.find_batches(filter, Some(limit)).await
    }

    async fn find_batches(&self, filter: Document, limit: Option<u32>) -> Result<Vec<BatchRecord>> {
        let mut find = self.batches.find(filter).sort(doc! { "_id": -1 });
        if let Some(limit) = limit {
            find = find.limit(i64::from(limit));
        }
        let docs: Vec<BatchDoc> = find.await?.try_collect().await?;
        docs.into_iter().map(BatchRecord::try_from).collect()
    }

    /// Moves a live batch to CANCELLED.
    pub(crate) async fn cancel(&self, batch_id: &str) -> Result<CancelOutcome> {
        let now = DateTime::now();
        let update = doc! {
            "$set": { "state": BatchState::Cancelled.as_str(), "updated_at": now, "finished_at": now },
            "$inc": { "sequence": 1 },
        };
        let sealed = doc! { "open": { "$ne": true } };
        if let Some(record) = self.update_live(batch_id, sealed, update).await? {
            return Ok(CancelOutcome::Cancelled(record));
        }
        match self.get_batch(batch_id).await? {
            None => Err(Error::NotFound(batch_id.to_owned())),
            Some(record) if record.open => Err(Error::NotFound(batch_id.to_owned())),
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

    /// Adds one stored chunk's counts to a live batch still at `generation`, atomically, and
    /// returns the batch after the change; `None` if the batch is no longer live (cancelled
    /// meanwhile) or was recounted since (the recount holds this chunk, or the next one will).
    pub(crate) async fn add_chunk_counts(
        &self,
        batch_id: &str,
        generation: u64,
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
        let condition = doc! { "generation": generation as i64 };
        self.update_live(batch_id, condition, update).await
    }

    /// Replaces a live batch's counts with `totals` (from its stored results) and starts a new
    /// generation; `None` if the batch is no longer live.
    pub(crate) async fn set_counts(
        &self,
        batch_id: &str,
        totals: Counters,
    ) -> Result<Option<BatchRecord>> {
        let update = doc! {
            "$set": {
                "items_succeeded": totals.items_succeeded as i64,
                "items_failed": totals.items_failed as i64,
                "chunks_done": totals.chunks_done as i64,
                "updated_at": DateTime::now(),
            },
            "$inc": { "generation": 1_i64, "sequence": 1_i64 },
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
        let condition = doc! {
            "chunks_done": { "$gte": batch.counters.chunks_total as i64 },
            "open": { "$ne": true },
        };
        self.update_live(&batch.id, condition, update).await
    }

    /// Closes an open batch once its upload is complete, with its totals; `None` if it is not
    /// open (it was discarded).
    pub(crate) async fn seal(
        &self,
        batch_id: &str,
        items_total: u64,
        chunks_total: u64,
    ) -> Result<Option<BatchRecord>> {
        let update = doc! {
            "$set": {
                "open": false,
                "items_total": items_total as i64,
                "chunks_total": chunks_total as i64,
                "updated_at": DateTime::now(),
            },
            "$inc": { "sequence": 1_i64 },
        };
        self.update_one_returning(doc! { "_id": batch_id, "open": true }, update)
            .await
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
