//! `sluice watch`, and the second half of `submit --watch`: shows a batch's events until the
//! terminal one, whose state becomes the exit code, as a live progress bar on a terminal or
//! one line per event otherwise ([`crate::output::EventView`]). A watch that breaks (server
//! restart, network blip) re-attaches with `after_sequence` set to the last event shown, so
//! nothing is shown twice or missed, and gives up after a few attempts in a row without
//! progress.
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use sluice::api;
use sluice::convert::is_terminal;

use crate::args::WatchArgs;
use crate::connection::Client;
use crate::failure::{brief, is_transient, Outcome};
use crate::output::{EventDisplay, EventView, Printer, ProgressView};

/// Attempts in a row that may fail before the watch gives up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 5;
/// Wait before the first re-attach; it doubles after each failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// `sluice watch ID`.
pub(crate) async fn run<W: Write>(
    client: &mut Client,
    args: &WatchArgs,
    printer: &mut Printer<W>,
    display: EventDisplay,
) -> anyhow::Result<Outcome> {
    show(client, &args.id, args.after, printer, display).await
}

/// Shows the events of `batch_id` after sequence `after` until the terminal one, as `display`
/// says: a progress bar, or the printer's lines.
pub(crate) async fn show<W: Write>(
    client: &mut Client,
    batch_id: &str,
    after: u64,
    printer: &mut Printer<W>,
    display: EventDisplay,
) -> anyhow::Result<Outcome> {
    match display {
        EventDisplay::Bar => follow(client, batch_id, after, &mut ProgressView::on_stdout()).await,
        EventDisplay::Lines => follow(client, batch_id, after, printer).await,
    }
}

/// Shows the events of `batch_id` after sequence `after` in `view` until the terminal one.
async fn follow(
    client: &mut Client,
    batch_id: &str,
    after: u64,
    view: &mut dyn EventView,
) -> anyhow::Result<Outcome> {
    let mut last_seen = after;
    let mut failed_attempts = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let seen_before = last_seen;
        let error = match attach(client, batch_id, &mut last_seen, view).await {
            Ok(Some(state)) => return Ok(Outcome::Finished(state)),
            Ok(None) => match finished_batch(client, batch_id, last_seen).await {
                Ok(Some(batch)) => {
                    // Its terminal event never arrived (it shared a sequence number with one
                    // already printed); show what the batch ended as, unless this run was told
                    // to print only later events and printed none.
                    if last_seen > after {
                        view.event(&snapshot_event(&batch))?;
                    }
                    return Ok(Outcome::Finished(batch.state()));
                }
                Ok(None) => anyhow::anyhow!("the server ended the watch of batch {batch_id} early"),
                Err(error) if is_transient(&error) => error,
                Err(error) => return Err(error),
            },
            Err(error) if is_transient(&error) => error,
            Err(error) => return Err(error),
        };
        if last_seen > seen_before {
            failed_attempts = 0;
            backoff = FIRST_BACKOFF;
        }
        failed_attempts += 1;
        if failed_attempts >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
            return Err(error);
        }
        view.notice(&format!(
            "watch interrupted ({}); re-attaching after seq={last_seen} in {:.1}s",
            brief(&error),
            backoff.as_secs_f64()
        ));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch call: shows events newer than `last_seen` (and advances it) until the terminal
/// event, whose state it returns, or until the stream ends without one (`None`).
async fn attach(
    client: &mut Client,
    batch_id: &str,
    last_seen: &mut u64,
    view: &mut dyn EventView,
) -> anyhow::Result<Option<api::BatchState>> {
    let request = api::WatchBatchRequest {
        batch_id: batch_id.to_owned(),
        after_sequence: *last_seen,
    };
    let mut events = client.watch_batch(request).await?.into_inner();
    while let Some(response) = events.message().await? {
        let Some(event) = response.event else {
            continue;
        };
        // The server sends only newer events; this keeps a re-attach from ever repeating one.
        if event.sequence <= *last_seen {
            continue;
        }
        view.event(&event)?;
        *last_seen = event.sequence;
        if is_terminal(event.state()) {
            return Ok(Some(event.state()));
        }
    }
    Ok(None)
}

/// After a stream that ended without a terminal event: the batch, if it had already finished
/// at or before `last_seen` (as after `watch --after` its last sequence).
async fn finished_batch(
    client: &mut Client,
    batch_id: &str,
    last_seen: u64,
) -> anyhow::Result<Option<api::Batch>> {
    let request = api::GetBatchRequest {
        batch_id: batch_id.to_owned(),
    };
    let batch = client
        .get_batch(request)
        .await?
        .into_inner()
        .batch
        .context("the server sent no batch")?;
    let finished = is_terminal(batch.state()) && batch.sequence <= last_seen;
    Ok(finished.then_some(batch))
}

/// The event that describes `batch` as it is now.
fn snapshot_event(batch: &api::Batch) -> api::BatchEvent {
    api::BatchEvent {
        batch_id: batch.id.clone(),
        sequence: batch.sequence,
        state: batch.state,
        counters: batch.counters,
        time: batch.updated_at,
    }
}
