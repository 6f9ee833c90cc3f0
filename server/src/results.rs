//! `ListResults`: a batch's stored results streamed in item order, read from MongoDB a few
//! chunks at a time so a million-item batch never sits in the server's memory. A reader that
//! starts at an item seeks straight to the chunk holding it.
use sluice::api;
use sluice::store::{BatchRecord, Store};
use sluice::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

/// Chunks read per MongoDB query while streaming results.
const CHUNKS_PER_READ: u64 = 8;
/// Results buffered ahead of a slow reader.
const RESULTS_BUFFER: usize = 64;

/// The stream ListResults answers with.
pub(crate) type ResultStream = ReceiverStream<Result<api::ListResultsResponse, Status>>;

/// Streams `batch`'s results from item `request.start_index` on (only failed ones if asked),
/// from a task tracked by `tasks` that ends with the client, or with UNAVAILABLE on shutdown.
pub(crate) async fn stream(
    store: Store,
    batch: BatchRecord,
    request: api::ListResultsRequest,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<ResultStream, Error> {
    let first_chunk = match request.start_index {
        0 => 0,
        item => store
            .chunk_holding_item(&batch.id, item)
            .await?
            .unwrap_or(0),
    };
    let (sender, receiver) = mpsc::channel(RESULTS_BUFFER);
    tasks.spawn(async move {
        let mut next = first_chunk;
        while next < batch.counters.chunks_total {
            let end = (next + CHUNKS_PER_READ).min(batch.counters.chunks_total);
            let results = match store.chunk_results(&batch.id, next..end).await {
                Ok(results) => results,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(error))).await;
                    return;
                }
            };
            let wanted = results.into_iter().filter(|result| {
                result.index >= request.start_index
                    && !(request.failed_only && result.outcome.is_ok())
            });
            for result in wanted {
                let outcome = match result.outcome {
                    Ok(output) => api::list_results_response::Outcome::Output(output.into()),
                    Err(error) => api::list_results_response::Outcome::Error(error),
                };
                let response = api::ListResultsResponse {
                    index: result.index,
                    outcome: Some(outcome),
                };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // A stream cut short must not look complete to the client.
                        let status = Status::unavailable("server shutting down; retry with start_index");
                        let _ = sender.try_send(Err(status));
                        return;
                    }
                    sent = sender.send(Ok(response)) => if sent.is_err() { return },
                }
            }
            next = end;
        }
    });
    Ok(ReceiverStream::new(receiver))
}
