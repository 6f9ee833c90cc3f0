//! Chunks: a batch's items, split as the server received them, written before the batch
//! document exists and before anything is enqueued, so every queued reference points at stored
//! items and the reconciler can re-enqueue any chunk from MongoDB alone.
use mongodb::bson::doc;

use super::documents::{payload_from_bson, payload_to_bson, ChunkDoc};
use super::{chunk_id, Store, StoredChunk};
use crate::error::Result;
use crate::model::NewChunk;

impl Store {
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
}
