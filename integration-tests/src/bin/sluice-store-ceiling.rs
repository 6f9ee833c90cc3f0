//! `sluice-store-ceiling`: the store's raw write rate for exactly the documents Sluice writes
//! per item, with the same driver and no Redis, no gRPC, no batch document and no counter
//! updates. It writes a batch's items as `chunks` documents, `insert_many` of four chunks at a
//! time from one writer (what the server does while a batch streams in), then one `results`
//! document per chunk holding every item's outcome, eight writers at once (two workers with
//! four chunks in flight each). Both go through `sluice::store::Store` (`insert_chunks`,
//! `insert_result`), so the layout is Sluice's by construction. Prints one JSON line, then
//! drops its database.
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use sluice::model::{Chunker, ItemOutcome, Limits, NewChunk, Payload};
use sluice::store::{ResultOrigin, Store, StoredChunk};

#[path = "sluice-bench/items.rs"]
mod items;

/// Chunks per `insert_many`, as the server writes them (`CHUNKS_PER_WRITE` in server/src/batches.rs).
const CHUNKS_PER_WRITE: usize = 4;

/// Flags.
#[derive(Debug, Parser)]
#[command(name = "sluice-store-ceiling", about)]
struct Args {
    /// MongoDB URL.
    #[arg(long)]
    mongo_url: String,
    /// A database of its own, dropped at the end.
    #[arg(long)]
    database: String,
    /// Items to write.
    #[arg(long)]
    items: u64,
    /// Items per chunk.
    #[arg(long)]
    chunk_size: u32,
    /// Result documents written at once.
    #[arg(long, default_value_t = 8)]
    result_writers: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let store = Store::connect(&args.mongo_url, &args.database).await?;
    store.ping().await.context("mongodb is not reachable")?;
    let batch_id = uuid::Uuid::now_v7().to_string();

    // Everything to write is built before the clock starts.
    let chunks = chunks_of(args.items, args.chunk_size);
    let results: Vec<(StoredChunk, Vec<ItemOutcome>)> = chunks
        .iter()
        .map(|chunk| {
            let stored = StoredChunk {
                index: chunk.index,
                first_item: chunk.first_item,
                items: chunk.items.clone(),
            };
            let outcomes = chunk.items.iter().cloned().map(Ok).collect();
            (stored, outcomes)
        })
        .collect();

    let started = Instant::now();
    for group in chunks.chunks(CHUNKS_PER_WRITE) {
        store.insert_chunks(&batch_id, group).await?;
    }
    let chunk_seconds = started.elapsed().as_secs_f64();
    let result_started = Instant::now();
    let origin = ResultOrigin {
        worker: "store-ceiling",
        attempt: 1,
        started_at: mongodb::bson::DateTime::now(),
    };
    futures::stream::iter(&results)
        .map(|(chunk, outcomes)| store.insert_result(&batch_id, chunk, outcomes, &origin))
        .buffer_unordered(args.result_writers.max(1))
        .try_for_each(|stored| async move {
            match stored {
                true => Ok(()),
                false => Err(sluice::Error::Unavailable(
                    "a result was stored twice".into(),
                )),
            }
        })
        .await?;
    let result_seconds = result_started.elapsed().as_secs_f64();
    let seconds = started.elapsed().as_secs_f64();

    let database = store.database();
    let filter = doc! { "batch_id": &batch_id };
    let stored_chunks = database
        .collection::<Document>("chunks")
        .count_documents(filter.clone())
        .await?;
    let stored_results = database
        .collection::<Document>("results")
        .count_documents(filter)
        .await?;
    let expected = chunks.len() as u64;
    if stored_chunks != expected || stored_results != expected {
        bail!("stored {stored_chunks} chunks and {stored_results} results, expected {expected} of each");
    }
    database.drop().await?;
    let report = serde_json::json!({
        "items": args.items,
        "chunk_size": args.chunk_size,
        "chunks": expected,
        "seconds": seconds,
        "chunk_write_seconds": chunk_seconds,
        "result_write_seconds": result_seconds,
        "items_per_s": args.items as f64 / seconds,
        "verified": args.items,
    });
    println!("{report}");
    Ok(())
}

/// The batch's chunks, cut by the server's own chunker.
fn chunks_of(items: u64, chunk_size: u32) -> Vec<NewChunk> {
    let mut chunker = Chunker::new(chunk_size, Limits::default().max_chunk_bytes);
    let mut chunks: Vec<NewChunk> = (0..items)
        .filter_map(|index| chunker.push(Payload::Text(items::item(index))))
        .collect();
    chunks.extend(chunker.finish());
    chunks
}
