//! `sluice submit`: streams the input file to `UploadBatch` as it is read (in the format
//! `--format` or the file's extension names), then prints the batch, or with `--watch` follows
//! it to the end. The reader task and the call run side by side; whichever finishes first
//! decides what happens to the other (see [`upload`]).
use std::io::Write;

use anyhow::Context as _;
use sluice::api;

use crate::args::{InputFormat, OutputFormat, SubmitArgs};
use crate::commands::watch;
use crate::connection::Client;
use crate::failure::Outcome;
use crate::input::{self, FeedError, Input};
use crate::output::{EventDisplay, Printer};

/// `sluice submit`.
pub(crate) async fn run<W: Write>(
    client: &mut Client,
    args: &SubmitArgs,
    input: Input,
    printer: &mut Printer<W>,
    display: EventDisplay,
) -> anyhow::Result<Outcome> {
    let format = InputFormat::resolve(args.format, &args.input);
    let header = api::UploadHeader {
        task: args.task.clone(),
        params: args.params.clone().unwrap_or_default(),
        chunk_size: args.chunk_size,
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
    };
    let batch = upload(client, header, input, format).await?;
    // With --watch, JSON output is the events only: one kind of record per stream.
    if !args.watch || printer.format() == OutputFormat::Text {
        printer.submitted(&batch)?;
    }
    if !args.watch {
        return Ok(Outcome::Done);
    }
    watch::show(client, &batch.id, 0, printer, display).await
}

/// Uploads `input` as a batch with `header`. If the server answers first, its answer stands
/// (an error, unless the input was complete) and the reader is stopped. If the reader fails
/// first, the call is dropped unfinished, so the server discards the partial batch.
async fn upload(
    client: &mut Client,
    header: api::UploadHeader,
    input: Input,
    format: InputFormat,
) -> anyhow::Result<api::Batch> {
    let (sender, receiver) = input::channel();
    let mut reader = tokio::spawn(input::feed(input, format, header, sender));
    let call = client.upload_batch(input::request_stream(receiver));
    tokio::pin!(call);
    let response = tokio::select! {
        response = &mut call => {
            reader.abort();
            // Joined only to leave no task behind; an aborted reader has nothing to report.
            let _ = (&mut reader).await;
            response?
        }
        read = &mut reader => match read.context("the input reader stopped")? {
            Ok(_) | Err(FeedError::UploadClosed) => call.await?,
            // Returning drops the call without ending its request stream: nothing is queued.
            Err(FeedError::Input(error)) => {
                return Err(error.context("upload abandoned, nothing was submitted"));
            }
        },
    };
    response
        .into_inner()
        .batch
        .context("the server sent no batch")
}
