//! The benchmark's gRPC client side: streamed uploads of generated items, watching a batch to
//! its end, and checking that every item has exactly one stored result.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use sluice::api::batch_service_client::BatchServiceClient;
use sluice::api::upload_batch_request::Content;
use sluice::api::{self, BatchEvent};
use sluice::model::{BatchState, ItemOutcome, Payload};
use sluice::store::Store;
use tonic::transport::{Channel, Endpoint};

use crate::items::item;

/// Items per UploadBatch message (about 100 KB).
const ITEMS_PER_MESSAGE: u64 = 1_000;

/// A connection to the server at `address`.
pub(crate) async fn connect(address: SocketAddr) -> Result<BatchServiceClient<Channel>> {
    connect_endpoint(endpoint(address)?).await
}

/// The endpoint of the server at `address`, to tune before connecting.
pub(crate) fn endpoint(address: SocketAddr) -> Result<Endpoint> {
    Ok(Channel::from_shared(format!("http://{address}"))?)
}

/// A connection through `endpoint`.
pub(crate) async fn connect_endpoint(endpoint: Endpoint) -> Result<BatchServiceClient<Channel>> {
    let channel = endpoint.connect().await?;
    Ok(BatchServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// A text payload.
pub(crate) fn text(value: String) -> api::Payload {
    api::Payload {
        kind: Some(api::payload::Kind::Text(value)),
    }
}

/// Uploads items `0..count` as one batch, generating them while the stream is sent.
pub(crate) async fn upload(
    client: &mut BatchServiceClient<Channel>,
    task: &str,
    params: &str,
    chunk_size: u32,
    count: u64,
) -> Result<api::Batch> {
    let header = api::UploadBatchRequest {
        content: Some(Content::Header(api::UploadHeader {
            task: task.into(),
            params: params.into(),
            chunk_size: Some(chunk_size),
            ..Default::default()
        })),
    };
    let pieces = (0..count)
        .step_by(ITEMS_PER_MESSAGE as usize)
        .map(move |start| {
            let items = (start..(start + ITEMS_PER_MESSAGE).min(count))
                .map(|index| text(item(index)))
                .collect();
            api::UploadBatchRequest {
                content: Some(Content::Items(api::UploadItems { items })),
            }
        });
    let messages = futures::stream::iter(std::iter::once(header).chain(pieces));
    let response = client.upload_batch(messages).await?.into_inner();
    response.batch.context("upload returned no batch")
}

/// Watches a batch until its terminal event, which it returns.
pub(crate) async fn watch_to_end(
    client: &mut BatchServiceClient<Channel>,
    batch_id: &str,
    timeout: Duration,
) -> Result<BatchEvent> {
    let request = api::WatchBatchRequest {
        batch_id: batch_id.into(),
        after_sequence: 0,
    };
    let mut stream = client.watch_batch(request).await?.into_inner();
    let read = async {
        let mut last = None;
        while let Some(message) = stream.next().await {
            last = message?.event;
        }
        last.context("the watch ended without an event")
    };
    let last = tokio::time::timeout(timeout, read)
        .await
        .with_context(|| format!("batch {batch_id} did not finish within {timeout:?}"))??;
    if last.state() != api::BatchState::Succeeded {
        bail!("batch {batch_id} ended as {:?}", last.state());
    }
    Ok(last)
}

/// Checks that every batch of `batches` (id, item count) SUCCEEDED with all its items, and
/// that every item has exactly one stored result, which `expected(item index, outcome)` accepts.
/// Returns the items verified.
///
/// It reads the run's private database in ONE pass over `results` (any filter and any order):
/// FerretDB on SQLite scans the whole collection for every query, `_id` lookups and `$in`
/// included, so reading chunk by chunk would cost a scan per chunk. The result documents are
/// read raw, in the layout docs/architecture.md describes.
pub(crate) async fn verify_outputs(
    store: &Store,
    batches: &[(String, u64)],
    expected: impl Fn(u64, &ItemOutcome) -> bool,
) -> Result<u64> {
    let ids: Vec<String> = batches.iter().map(|(id, _)| id.clone()).collect();
    let mut records = HashMap::new();
    for group in ids.chunks(500) {
        for record in store.get_batches(group).await? {
            records.insert(record.id.clone(), record);
        }
    }
    // Per batch: which items have a result, and which chunks.
    let mut seen: HashMap<&str, (Vec<bool>, Vec<bool>)> = HashMap::new();
    for (id, items) in batches {
        let batch = records
            .get(id)
            .with_context(|| format!("batch {id} is not stored"))?;
        ensure!(
            batch.state == BatchState::Succeeded
                && batch.counters.items_total == *items
                && batch.counters.items_succeeded == *items,
            "batch {id} is {} with counters {:?}, expected {items} items succeeded",
            batch.state,
            batch.counters
        );
        let chunks = batch.counters.chunks_total as usize;
        seen.insert(id, (vec![false; *items as usize], vec![false; chunks]));
    }
    let mut verified = 0_u64;
    let mut cursor = store
        .database()
        .collection::<Document>("results")
        .find(doc! {})
        // FerretDB fills a reply with up to 101 documents whatever their size, and a result
        // document of a 5,000-item chunk is about 600 KB: a default batch exceeds the driver's
        // 48 MB message limit. Sixteen stay under 10 MB.
        .batch_size(16)
        .await?;
    while let Some(result) = cursor.try_next().await? {
        let batch_id = result.get_str("batch_id")?;
        let Some((items_seen, chunks_seen)) = seen.get_mut(batch_id) else {
            bail!("a result of batch {batch_id}, which the run did not create");
        };
        let chunk = usize::try_from(result.get_i64("chunk_index")?)?;
        ensure!(
            chunk < chunks_seen.len() && !chunks_seen[chunk],
            "batch {batch_id}: chunk {chunk} has a second result or does not exist"
        );
        chunks_seen[chunk] = true;
        let first_item = u64::try_from(result.get_i64("first_item")?)?;
        for (offset, stored) in result.get_array("outcomes")?.iter().enumerate() {
            let index = first_item + offset as u64;
            let slot = items_seen.get_mut(index as usize).with_context(|| {
                format!("batch {batch_id}: a result for item {index}, past its end")
            })?;
            ensure!(!*slot, "batch {batch_id}: item {index} has two results");
            *slot = true;
            let outcome = stored_outcome(stored)
                .with_context(|| format!("batch {batch_id}: item {index}: {stored}"))?;
            ensure!(
                expected(index, &outcome),
                "batch {batch_id}: item {index} has an unexpected output {outcome:?}"
            );
            verified += 1;
        }
    }
    for (batch_id, (items_seen, _)) in &seen {
        let missing = items_seen.iter().filter(|seen| !**seen).count();
        ensure!(
            missing == 0,
            "batch {batch_id}: {missing} items have no stored result"
        );
    }
    Ok(verified)
}

/// An outcome as stored: `{o: <string or binary>}` or `{e: <message>}`.
fn stored_outcome(stored: &Bson) -> Result<ItemOutcome> {
    let stored = stored.as_document().context("outcome is not a document")?;
    match (stored.get("o"), stored.get_str("e")) {
        (Some(Bson::String(text)), _) => Ok(Ok(Payload::Text(text.clone()))),
        (Some(Bson::Binary(binary)), _) => Ok(Ok(Payload::Binary(binary.bytes.clone()))),
        (None, Ok(message)) => Ok(Err(message.to_owned())),
        _ => bail!("neither an output nor an error"),
    }
}

/// Milliseconds from an event's timestamp to now (one machine, one clock).
pub(crate) fn age_ms(event: &BatchEvent) -> Option<f64> {
    let time = event.time.as_ref()?;
    let sent = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(time.seconds).ok()?)
        + Duration::from_nanos(u64::try_from(time.nanos).ok()?);
    let age = SystemTime::now().duration_since(sent).unwrap_or_default();
    Some(age.as_secs_f64() * 1e3)
}
