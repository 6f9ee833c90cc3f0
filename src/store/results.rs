//! Results: one document per chunk, whose `_id` is the chunk's, so however many times a chunk
//! is processed its outcomes are stored once (the first insert wins, later ones are duplicate
//! keys). They are the record the batch counters are derived from: a recount sums them.
use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};

use super::documents::{outcome_from_bson, outcome_to_bson, ResultDoc};
use super::{chunk_id, is_duplicate_key, ItemResult, ResultOrigin, Store, StoredChunk};
use crate::error::{Error, Result};
use crate::model::{Counters, ItemOutcome};

impl Store {
    /// Stores a chunk's outcomes, once: `false` if a result for this chunk already exists (an
    /// earlier delivery stored it), in which case nothing changes.
    pub async fn insert_result(
        &self,
        batch_id: &str,
        chunk: &StoredChunk,
        outcomes: &[ItemOutcome],
        origin: &ResultOrigin<'_>,
    ) -> Result<bool> {
        let failed = outcomes.iter().filter(|outcome| outcome.is_err()).count() as i64;
        let doc = ResultDoc {
            id: chunk_id(batch_id, chunk.index),
            batch_id: batch_id.to_owned(),
            chunk_index: chunk.index as i64,
            first_item: chunk.first_item as i64,
            succeeded: outcomes.len() as i64 - failed,
            failed,
            worker: origin.worker.to_owned(),
            attempt: origin.attempt as i64,
            started_at: origin.started_at,
            stored_at: DateTime::now(),
            outcomes: outcomes.iter().map(outcome_to_bson).collect(),
        };
        match self.results.insert_one(doc).await {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The stored results of chunks `chunks` (a range of chunk indexes), in item order; chunks
    /// without a result yet are skipped. Readers page through a batch a few chunks at a time.
    pub async fn chunk_results(
        &self,
        batch_id: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<Vec<ItemResult>> {
        // One lookup by `_id` per chunk, side by side, rather than one `$in`: FerretDB answers
        // `$in` with a scan of the whole collection (a 200,000-item batch took 67 s to list),
        // while an `_id` equality uses the index on both servers.
        let lookups = chunks.map(|index| async move {
            self.results
                .find_one(doc! { "_id": chunk_id(batch_id, index) })
                .await
        });
        let docs = futures::future::try_join_all(lookups).await?;
        let mut results = Vec::new();
        for doc in docs.into_iter().flatten() {
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

    /// The index of the chunk holding item `item_index`, found through the results stored so
    /// far (a chunk's first item is only known once it is stored): where a reader that starts
    /// at that item begins. `None` if no stored chunk starts at or before it.
    pub async fn chunk_holding_item(&self, batch_id: &str, item_index: u64) -> Result<Option<u64>> {
        // The projection leaves out fields a ResultDoc requires, so read plain documents.
        let found = self
            .results
            .clone_with_type::<Document>()
            .find_one(doc! { "batch_id": batch_id, "first_item": { "$lte": item_index as i64 } })
            .sort(doc! { "first_item": -1 })
            .projection(doc! { "_id": 0, "chunk_index": 1 })
            .await?;
        Ok(found
            .and_then(|doc| doc.get_i64("chunk_index").ok())
            .map(|index| index as u64))
    }

    /// What each stored result of a batch counts: `(chunk index, items succeeded, items
    /// failed)`, read with a projection (never the outcomes themselves).
    pub async fn stored_chunk_tallies(&self, batch_id: &str) -> Result<Vec<(u64, u64, u64)>> {
        let cursor = self
            .results
            .clone_with_type::<Document>()
            .find(doc! { "batch_id": batch_id })
            .projection(doc! { "_id": 0, "chunk_index": 1, "succeeded": 1, "failed": 1 })
            .await?;
        let docs: Vec<Document> = cursor.try_collect().await?;
        docs.iter()
            .map(|doc| {
                let field = |name: &str| {
                    doc.get_i64(name)
                        .map(|value| value as u64)
                        .map_err(|_| Error::Corrupt {
                            what: "result",
                            detail: format!("no {name} in {doc}"),
                        })
                };
                Ok((field("chunk_index")?, field("succeeded")?, field("failed")?))
            })
            .collect()
    }

    /// A batch's counters as its stored results add them up (`items_total` and
    /// `chunks_total` are the batch's own and are left at 0 here). Summed here rather than
    /// with `$group`, whose `$sum` of a field FerretDB answers with 0.
    pub async fn result_totals(&self, batch_id: &str) -> Result<Counters> {
        let tallies = self.stored_chunk_tallies(batch_id).await?;
        Ok(Counters {
            items_succeeded: tallies.iter().map(|(_, succeeded, _)| succeeded).sum(),
            items_failed: tallies.iter().map(|(_, _, failed)| failed).sum(),
            chunks_done: tallies.len() as u64,
            ..Counters::default()
        })
    }
}
