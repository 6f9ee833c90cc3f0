//! Creating batches: validate the header, store the batch document open (invisible to
//! clients), then as items stream in, store each few chunks and enqueue one stream message per
//! chunk, so workers start while the upload goes on; finally seal the batch with its totals,
//! which makes it visible. A request that fails at any step leaves nothing behind; a retried
//! request with the same idempotency key gets the batch the first one created.
use futures::{Stream, StreamExt};
use mongodb::bson::DateTime;
use sluice::api;
use sluice::broker::{Broker, InlineChunk, QueuedChunk};
use sluice::convert::payload_from_api;
use sluice::model::{
    validate_item, BatchSpec, BatchState, Chunker, Counters, Limits, NewChunk, Payload,
};
use sluice::store::{BatchRecord, Store};
use sluice::tasks::TaskRegistry;
use sluice::Error;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::presence::Asker;

/// Chunks written to MongoDB per `insert_many` while a batch streams in.
const CHUNKS_PER_WRITE: usize = 4;
/// Largest chunk (bytes of items) whose items also travel on its stream message, so the worker
/// does not read them back from MongoDB. Larger chunks travel as references only.
const INLINE_CHUNK_BYTES: usize = 1 << 20;
/// Chunks travel as references only while more than this many messages wait on the stream:
/// Redis holds at most about this many inline chunks (64 MiB of items), however large the
/// batch and however far behind the workers are.
const INLINE_BACKLOG: u64 = 64;

/// The batch header fields, as every submit path receives them.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) task: String,
    pub(crate) params: String,
    pub(crate) chunk_size: Option<u32>,
    pub(crate) idempotency_key: String,
}

/// The batch-creating side of the service.
#[derive(Debug, Clone)]
pub(crate) struct Batches {
    pub(crate) store: Store,
    pub(crate) broker: Broker,
    pub(crate) progress: sluice::progress::Progress,
    pub(crate) registry: TaskRegistry,
    pub(crate) limits: Limits,
    /// Where creates run (see [`Batches::detached`]), so shutdown waits for them.
    pub(crate) tasks: TaskTracker,
}

/// A batch being written.
struct Draft {
    id: String,
    spec: BatchSpec,
    chunker: Chunker,
    pending: Vec<NewChunk>,
    /// The stream entries added so far, withdrawn if the batch is rejected.
    enqueued: Vec<String>,
}

impl Batches {
    /// Creates a batch from a whole list of items.
    pub(crate) async fn create(
        &self,
        header: Header,
        items: Vec<api::Payload>,
    ) -> Result<BatchRecord, Error> {
        let batches = self.clone();
        self.detached(async move { batches.create_here(&header, items).await })
            .await
    }

    /// Creates a batch from an upload stream whose header was already read; the batch is
    /// sealed only if `client` confirms the stream's end was not a cancellation.
    pub(crate) async fn upload<S>(
        &self,
        header: Header,
        pieces: S,
        client: Asker,
    ) -> Result<BatchRecord, Error>
    where
        S: Stream<Item = Result<Vec<api::Payload>, Error>> + Unpin + Send + 'static,
    {
        let batches = self.clone();
        self.detached(async move { batches.upload_here(&header, pieces, client).await })
            .await
    }

    /// Runs a create to its end on a task of its own. A client that cancels its call (HTTP/2
    /// RST_STREAM) makes the server drop the call's handler at its next await; a create dropped
    /// between two writes would leave an open batch and enqueued chunks behind. On its own task
    /// the create runs on: an upload sees the reset stream as an error and removes what it
    /// wrote, and a whole-request create completes, as one whose answer was lost would.
    async fn detached<F>(&self, create: F) -> Result<BatchRecord, Error>
    where
        F: std::future::Future<Output = Result<BatchRecord, Error>> + Send + 'static,
    {
        self.tasks
            .spawn(create.in_current_span())
            .await
            .unwrap_or_else(|error| {
                Err(Error::Unavailable(format!(
                    "the batch could not be created ({error}); retry"
                )))
            })
    }

    async fn create_here(
        &self,
        header: &Header,
        items: Vec<api::Payload>,
    ) -> Result<BatchRecord, Error> {
        let spec = self.validate_header(header)?;
        if items.is_empty() {
            return Err(Error::invalid("items", "must not be empty"));
        }
        if items.len() as u64 > self.limits.max_items_per_batch {
            return Err(self.too_many_items(items.len() as u64));
        }
        let items = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| self.item(index as u64, item))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(spec, futures::stream::iter(items.into_iter().map(Ok)), None)
            .await
    }

    async fn upload_here<S>(
        &self,
        header: &Header,
        pieces: S,
        client: Asker,
    ) -> Result<BatchRecord, Error>
    where
        S: Stream<Item = Result<Vec<api::Payload>, Error>> + Unpin,
    {
        let spec = self.validate_header(header)?;
        let mut next_index = 0_u64;
        let items = pieces
            .map(|piece| piece.map(|items| futures::stream::iter(items.into_iter().map(Ok))))
            .map(|piece| match piece {
                Ok(items) => items.left_stream(),
                Err(error) => futures::stream::once(async move { Err(error) }).right_stream(),
            })
            .flatten()
            .map(move |item| {
                let index = next_index;
                next_index += 1;
                item.and_then(|item| self.item(index, item))
            });
        self.write(spec, Box::pin(items), Some(client)).await
    }

    fn validate_header(&self, header: &Header) -> Result<BatchSpec, Error> {
        BatchSpec::validate(
            &header.task,
            &header.params,
            header.chunk_size,
            &header.idempotency_key,
            &self.limits,
            &self.registry,
        )
    }

    fn item(&self, index: u64, item: api::Payload) -> Result<sluice::model::Payload, Error> {
        let payload = payload_from_api(item).ok_or_else(|| {
            Error::invalid(format!("items[{index}]"), "has neither text nor binary set")
        })?;
        validate_item(index, &payload, &self.limits)?;
        Ok(payload)
    }

    fn too_many_items(&self, count: u64) -> Error {
        Error::invalid(
            "items",
            format!(
                "{count} items is over the limit of {}",
                self.limits.max_items_per_batch
            ),
        )
    }

    /// Writes a validated batch whose items arrive as a stream.
    async fn write<S>(
        &self,
        spec: BatchSpec,
        items: S,
        client: Option<Asker>,
    ) -> Result<BatchRecord, Error>
    where
        S: Stream<Item = Result<sluice::model::Payload, Error>> + Unpin,
    {
        let id = uuid::Uuid::now_v7().to_string();
        if let Some(key) = &spec.idempotency_key {
            if let Some(existing) = self.store.claim_idempotency_key(key, &id).await? {
                return self.existing_for_key(&existing).await;
            }
        }
        let now = DateTime::now();
        let opened = BatchRecord {
            id: id.clone(),
            task: spec.task.clone(),
            params: spec.params.to_string(),
            state: BatchState::Queued,
            counters: Counters::default(),
            chunk_size: spec.chunk_size,
            sequence: 1,
            created_at: now,
            updated_at: now,
            finished_at: None,
            idempotency_key: spec.idempotency_key.clone(),
            generation: 0,
            open: true,
        };
        let chunker = Chunker::new(spec.chunk_size, self.limits.max_chunk_bytes);
        let mut draft = Draft {
            id,
            spec,
            chunker,
            pending: Vec::new(),
            enqueued: Vec::new(),
        };
        // The batch document comes first, open: workers start on each chunk as soon as it is
        // stored, while clients see the batch only once it is sealed with its totals.
        let written = match self.store.insert_batch(&opened).await {
            Ok(()) => self.fill(&mut draft, items, client).await,
            Err(error) => Err(error),
        };
        if written.is_err() {
            self.discard(&draft).await;
        }
        written
    }

    async fn fill<S>(
        &self,
        draft: &mut Draft,
        mut items: S,
        client: Option<Asker>,
    ) -> Result<BatchRecord, Error>
    where
        S: Stream<Item = Result<sluice::model::Payload, Error>> + Unpin,
    {
        while let Some(item) = items.next().await {
            let item = item?;
            if draft.chunker.items_seen() >= self.limits.max_items_per_batch {
                return Err(self.too_many_items(draft.chunker.items_seen() + 1));
            }
            if let Some(chunk) = draft.chunker.push(item) {
                draft.pending.push(chunk);
                if draft.pending.len() >= CHUNKS_PER_WRITE {
                    self.flush(draft).await?;
                }
            }
        }
        if draft.chunker.items_seen() == 0 {
            return Err(Error::invalid("items", "must not be empty"));
        }
        draft.pending.extend(draft.chunker.finish());
        self.flush(draft).await?;
        if let Some(client) = client {
            if !client.client_is_there().await {
                return Err(Error::Unavailable(
                    "the client cancelled the upload; nothing was accepted".to_owned(),
                ));
            }
        }
        let sealed = self
            .progress
            .seal(
                &draft.id,
                draft.chunker.items_seen(),
                draft.chunker.chunks_closed(),
            )
            .await?
            .ok_or_else(|| {
                Error::Unavailable("the batch was removed while it was uploaded; retry".to_owned())
            })?;
        info!(
            batch_id = %sealed.id,
            task = %sealed.task,
            items = sealed.counters.items_total,
            chunks = sealed.counters.chunks_total,
            state = %sealed.state,
            "batch accepted"
        );
        Ok(sealed)
    }

    /// Stores the chunks cut so far, then enqueues them: MongoDB holds every chunk before its
    /// message exists. Small chunks travel with their items while the stream is short (see
    /// [`INLINE_CHUNK_BYTES`]).
    async fn flush(&self, draft: &mut Draft) -> Result<(), Error> {
        let chunks = std::mem::take(&mut draft.pending);
        if chunks.is_empty() {
            return Ok(());
        }
        self.store.insert_chunks(&draft.id, &chunks).await?;
        let inline = self.broker.backlog().await? < INLINE_BACKLOG;
        let queued: Vec<QueuedChunk> = chunks
            .into_iter()
            .map(|chunk| {
                let bytes: usize = chunk.items.iter().map(Payload::len).sum();
                let carried = inline && bytes <= INLINE_CHUNK_BYTES;
                QueuedChunk {
                    index: chunk.index,
                    inline: carried.then_some(InlineChunk {
                        first_item: chunk.first_item,
                        items: chunk.items,
                    }),
                }
            })
            .collect();
        let entry_ids = self.broker.enqueue_chunks(&draft.id, &queued).await?;
        draft.enqueued.extend(entry_ids);
        Ok(())
    }

    /// Removes what a failed create wrote: its stream messages, the open batch (so workers stop
    /// on it), its chunks and any results, and the idempotency key. Best effort: if MongoDB is
    /// down too, the reconciler removes the abandoned upload later.
    async fn discard(&self, draft: &Draft) {
        if let Err(error) = self.broker.withdraw(&draft.enqueued).await {
            warn!(batch_id = %draft.id, %error, "cannot withdraw a rejected batch's messages");
        }
        if let Err(error) = self.progress.discard(&draft.id).await {
            warn!(batch_id = %draft.id, %error, "cannot remove a rejected batch");
        }
        if let Some(key) = &draft.spec.idempotency_key {
            if let Err(error) = self.store.release_idempotency_key(key, &draft.id).await {
                warn!(batch_id = %draft.id, %error, "cannot release an idempotency key");
            }
        }
    }

    async fn existing_for_key(&self, batch_id: &str) -> Result<BatchRecord, Error> {
        match self.store.get_batch(batch_id).await? {
            Some(record) if !record.open => {
                info!(batch_id, "idempotency key matched an existing batch");
                Ok(record)
            }
            _ => Err(Error::Unavailable(
                "a batch with this idempotency_key is still being created; retry".to_owned(),
            )),
        }
    }
}
