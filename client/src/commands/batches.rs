//! `sluice get`, `sluice list` and `sluice cancel`: the unary calls about batches. `list`
//! follows page tokens itself, so `--limit` is the only size a person has to think about.
use std::io::Write;

use anyhow::Context as _;
use sluice::api;

use crate::args::{BatchIdArgs, ListArgs};
use crate::connection::Client;
use crate::failure::Outcome;
use crate::output::Printer;

/// The largest page the server returns.
const MAX_PAGE_SIZE: u32 = 1_000;

/// `sluice get ID`: prints the batch (exit 0 whatever its state).
pub(crate) async fn get<W: Write>(
    client: &mut Client,
    args: &BatchIdArgs,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let request = api::GetBatchRequest {
        batch_id: args.id.clone(),
    };
    let batch = client
        .get_batch(request)
        .await?
        .into_inner()
        .batch
        .context("the server sent no batch")?;
    printer.batch(&batch)?;
    Ok(Outcome::Done)
}

/// `sluice list`: prints up to `--limit` batches, newest first (a table in text: the whole
/// listing is read before it is printed, so the columns align; `--limit` bounds it).
pub(crate) async fn list<W: Write>(
    client: &mut Client,
    args: &ListArgs,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let state = args
        .state
        .map_or(api::BatchState::Unspecified, api::BatchState::from);
    let limit = args.limit as usize;
    let mut batches = Vec::new();
    let mut page_token = String::new();
    while batches.len() < limit {
        let remaining = (limit - batches.len()) as u32;
        let request = api::ListBatchesRequest {
            page_size: remaining.min(MAX_PAGE_SIZE),
            page_token,
            state: state as i32,
        };
        let page = client.list_batches(request).await?.into_inner();
        let page_was_empty = page.batches.is_empty();
        batches.extend(page.batches.into_iter().take(limit - batches.len()));
        // An empty page ends the listing even if it came with a token: no endless loop.
        if page.next_page_token.is_empty() || page_was_empty {
            break;
        }
        page_token = page.next_page_token;
    }
    printer.batch_list(&batches)?;
    Ok(Outcome::Done)
}

/// `sluice cancel ID`: cancels the batch and prints it.
pub(crate) async fn cancel<W: Write>(
    client: &mut Client,
    args: &BatchIdArgs,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let request = api::CancelBatchRequest {
        batch_id: args.id.clone(),
    };
    let batch = client
        .cancel_batch(request)
        .await?
        .into_inner()
        .batch
        .context("the server sent no batch")?;
    printer.cancelled(&batch)?;
    Ok(Outcome::Done)
}
