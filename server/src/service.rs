//! The `sluice.v1.BatchService` implementation: a thin adapter that decodes requests, calls the
//! batch and watch layers, and converts errors through `From<sluice::Error> for Status`.
use std::pin::Pin;

use futures::{Stream, StreamExt};
use sluice::api::batch_service_server::BatchService;
use sluice::api::{self, upload_batch_request::Content};
use sluice::convert::state_from_api;
use sluice::store::Store;
use sluice::Error;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::batches::{Batches, Header};
use crate::watch::Watches;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Largest page ListBatches returns.
const MAX_PAGE_SIZE: u32 = 1_000;
/// Page size when a request gives none.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) batches: Batches,
    pub(crate) watches: Watches,
    pub(crate) max_message_bytes: usize,
}

impl Service {
    fn store(&self) -> &Store {
        &self.batches.store
    }

    fn check_size(&self, message: &impl prost::Message) -> Result<(), Error> {
        let size = message.encoded_len();
        if size > self.max_message_bytes {
            return Err(Error::invalid(
                "request",
                format!(
                    "{size} bytes is over the limit of {} bytes; use UploadBatch",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Creates a batch from a whole request (SubmitBatch and CreateBatch share this).
    async fn create(
        &self,
        mut request: api::CreateBatchRequest,
    ) -> Result<sluice::store::BatchRecord, Error> {
        self.check_size(&request)?;
        let items = std::mem::take(&mut request.items);
        let header = Header {
            task: request.task,
            params: request.params,
            chunk_size: request.chunk_size,
            idempotency_key: request.idempotency_key,
        };
        let record = self.batches.create(header, items).await?;
        tracing::Span::current().record("batch_id", record.id.as_str());
        Ok(record)
    }

    /// A batch clients may see: not one still being uploaded.
    async fn get_record(&self, batch_id: &str) -> Result<sluice::store::BatchRecord, Error> {
        let batch_id = parse_batch_id(batch_id)?;
        self.store()
            .get_batch(&batch_id)
            .await?
            .filter(|record| !record.open)
            .ok_or(Error::NotFound(batch_id))
    }
}

/// SubmitBatchRequest and CreateBatchRequest carry the same fields under the same numbers.
fn same_fields(request: api::SubmitBatchRequest) -> api::CreateBatchRequest {
    api::CreateBatchRequest {
        task: request.task,
        params: request.params,
        items: request.items,
        chunk_size: request.chunk_size,
        idempotency_key: request.idempotency_key,
    }
}

/// Checks a batch id (a UUID) and returns its canonical form.
fn parse_batch_id(batch_id: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(batch_id)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            Error::invalid(
                "batch_id",
                format!("{batch_id:?} is not a batch id (a UUID)"),
            )
        })
}

fn decode_state(state: i32) -> Result<Option<sluice::model::BatchState>, Error> {
    api::BatchState::try_from(state)
        .map(state_from_api)
        .map_err(|_| Error::invalid("state", format!("{state} is not a BatchState")))
}

/// Page tokens are the id of the last batch of the previous page, marked with a version.
const PAGE_TOKEN_PREFIX: &str = "v1:";

fn decode_page_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a token this server issued");
    let id = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
    parse_batch_id(id).map(Some).map_err(|_| invalid())
}

fn stream_of<U: Send + 'static>(
    events: crate::watch::EventStream,
    wrap: impl Fn(api::BatchEvent) -> U + Send + 'static,
) -> ResponseStream<U> {
    Box::pin(events.map(move |event| event.map(&wrap)))
}

#[tonic::async_trait]
impl BatchService for Service {
    type SubmitBatchStream = ResponseStream<api::SubmitBatchResponse>;
    type WatchBatchStream = ResponseStream<api::WatchBatchResponse>;
    type ListResultsStream = ResponseStream<api::ListResultsResponse>;

    #[instrument(skip_all, fields(task = %request.get_ref().task, batch_id))]
    async fn submit_batch(
        &self,
        request: Request<api::SubmitBatchRequest>,
    ) -> Result<Response<Self::SubmitBatchStream>, Status> {
        let record = self.create(same_fields(request.into_inner())).await?;
        let events = self.watches.open(&record.id, 0).await?;
        Ok(Response::new(stream_of(events, |event| {
            api::SubmitBatchResponse { event: Some(event) }
        })))
    }

    #[instrument(skip_all, fields(task = %request.get_ref().task, batch_id))]
    async fn create_batch(
        &self,
        request: Request<api::CreateBatchRequest>,
    ) -> Result<Response<api::CreateBatchResponse>, Status> {
        let record = self.create(request.into_inner()).await?;
        Ok(Response::new(api::CreateBatchResponse {
            batch: Some((&record).into()),
        }))
    }

    #[instrument(skip_all, fields(batch_id))]
    async fn upload_batch(
        &self,
        request: Request<Streaming<api::UploadBatchRequest>>,
    ) -> Result<Response<api::UploadBatchResponse>, Status> {
        let mut messages = request.into_inner();
        let first = messages.next().await.ok_or_else(|| {
            Status::from(Error::invalid(
                "header",
                "the stream must start with a header",
            ))
        })??;
        let Some(Content::Header(header)) = first.content else {
            return Err(Error::invalid("header", "the first message must carry the header").into());
        };
        let pieces = messages.map(|message| match message {
            Ok(api::UploadBatchRequest {
                content: Some(Content::Items(piece)),
            }) => Ok(piece.items),
            Ok(_) => Err(Error::invalid(
                "items",
                "every message after the first must carry items",
            )),
            Err(status) => Err(Error::Unavailable(format!(
                "upload stream failed: {}",
                status.message()
            ))),
        });
        let header = Header {
            task: header.task,
            params: header.params,
            chunk_size: header.chunk_size,
            idempotency_key: header.idempotency_key,
        };
        let (client, answerer) = crate::presence::pair();
        let record = answerer
            .answer_while(self.batches.upload(header, pieces, client))
            .await?;
        tracing::Span::current().record("batch_id", record.id.as_str());
        Ok(Response::new(api::UploadBatchResponse {
            batch: Some((&record).into()),
        }))
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn watch_batch(
        &self,
        request: Request<api::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let request = request.into_inner();
        let batch_id = parse_batch_id(&request.batch_id)?;
        let events = self.watches.open(&batch_id, request.after_sequence).await?;
        Ok(Response::new(stream_of(events, |event| {
            api::WatchBatchResponse { event: Some(event) }
        })))
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn get_batch(
        &self,
        request: Request<api::GetBatchRequest>,
    ) -> Result<Response<api::GetBatchResponse>, Status> {
        let record = self.get_record(&request.get_ref().batch_id).await?;
        Ok(Response::new(api::GetBatchResponse {
            batch: Some((&record).into()),
        }))
    }

    #[instrument(skip_all)]
    async fn list_batches(
        &self,
        request: Request<api::ListBatchesRequest>,
    ) -> Result<Response<api::ListBatchesResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("{size} is over the limit of {MAX_PAGE_SIZE}"),
                )
                .into());
            }
            size => size,
        };
        let state = decode_state(request.state)?;
        let before = decode_page_token(&request.page_token)?;
        let records = self
            .store()
            .list_batches(state, before.as_deref(), page_size + 1)
            .await?;
        let has_more = records.len() > page_size as usize;
        let page: Vec<_> = records.into_iter().take(page_size as usize).collect();
        let next_page_token = match page.last() {
            Some(last) if has_more => format!("{PAGE_TOKEN_PREFIX}{}", last.id),
            _ => String::new(),
        };
        Ok(Response::new(api::ListBatchesResponse {
            batches: page.iter().map(api::Batch::from).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn cancel_batch(
        &self,
        request: Request<api::CancelBatchRequest>,
    ) -> Result<Response<api::CancelBatchResponse>, Status> {
        let batch_id = parse_batch_id(&request.get_ref().batch_id)?;
        let record = match self.batches.progress.cancel(&batch_id).await? {
            sluice::store::CancelOutcome::Cancelled(record) => {
                tracing::info!("batch cancelled");
                record
            }
            sluice::store::CancelOutcome::AlreadyCancelled(record) => record,
        };
        Ok(Response::new(api::CancelBatchResponse {
            batch: Some((&record).into()),
        }))
    }

    #[instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn list_results(
        &self,
        request: Request<api::ListResultsRequest>,
    ) -> Result<Response<Self::ListResultsStream>, Status> {
        let request = request.into_inner();
        let record = self.get_record(&request.batch_id).await?;
        let results = crate::results::stream(
            self.store().clone(),
            record,
            request,
            &self.watches.tasks,
            self.watches.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(Box::pin(results)))
    }

    #[instrument(skip_all)]
    async fn list_tasks(
        &self,
        _request: Request<api::ListTasksRequest>,
    ) -> Result<Response<api::ListTasksResponse>, Status> {
        let tasks = self
            .batches
            .registry
            .iter()
            .map(|task| api::TaskInfo {
                name: task.name().to_owned(),
                description: task.description().to_owned(),
                params_schema: task.params_schema().to_owned(),
            })
            .collect();
        Ok(Response::new(api::ListTasksResponse { tasks }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn batch_ids_must_be_uuids() {
        let id = "0190b6b5-0f6e-7c5e-9a3e-0123456789ab";
        assert_eq!(parse_batch_id(id).ok().as_deref(), Some(id));
        assert_eq!(parse_batch_id(&id.to_uppercase()).ok().as_deref(), Some(id));
        assert!(parse_batch_id("nope").is_err());
    }

    #[test]
    fn page_tokens_are_checked() {
        assert_eq!(decode_page_token("").ok(), Some(None));
        let id = "0190b6b5-0f6e-7c5e-9a3e-0123456789ab";
        assert_eq!(
            decode_page_token(&format!("v1:{id}")).ok(),
            Some(Some(id.to_owned()))
        );
        assert!(decode_page_token(id).is_err());
        assert!(decode_page_token("v1:tampered").is_err());
    }

    #[test]
    fn unknown_states_are_rejected() {
        assert!(decode_state(99).is_err());
        assert_eq!(decode_state(0).ok(), Some(None));
    }

    #[test]
    fn message_size_counts_the_encoding() {
        let request = api::CreateBatchRequest {
            task: "echo".into(),
            ..Default::default()
        };
        assert_eq!(request.encoded_len(), 6);
    }
}
