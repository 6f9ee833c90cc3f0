//! The `--output text` forms of the CLI's records: short lines meant for people, one record per
//! line where a record can fit on one (events, list entries, results), a small aligned block
//! for a whole batch. Scripts should use `--output json`; these lines may change.
use base64::Engine as _;
use sluice::api;

use super::time::rfc3339;

/// A state's short name (`SUCCEEDED`), or `UNKNOWN(n)` for a value this build does not know.
pub(crate) fn state_name(state: i32) -> String {
    match api::BatchState::try_from(state) {
        Ok(state) => state
            .as_str_name()
            .trim_start_matches("BATCH_STATE_")
            .to_owned(),
        Err(_) => format!("UNKNOWN({state})"),
    }
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `seq=4 state=RUNNING items=1500/3000 failed=2 chunks=2/3`: `items` counts the items that
/// have a result (an output or an error) out of all of them.
pub(crate) fn event_line(event: &api::BatchEvent) -> String {
    let counters = event.counters.unwrap_or_default();
    format!(
        "seq={} state={} items={}/{} failed={} chunks={}/{}",
        event.sequence,
        state_name(event.state),
        counters.items_succeeded + counters.items_failed,
        counters.items_total,
        counters.items_failed,
        counters.chunks_done,
        counters.chunks_total,
    )
}

/// `batch <id> accepted: 3 items in 1 chunk`, after an upload. (Workers start during the
/// upload, so by now the batch may be queued, running, or even done; `watch` shows which.)
pub(crate) fn submitted_line(batch: &api::Batch) -> String {
    let counters = batch.counters.unwrap_or_default();
    format!(
        "batch {} accepted: {} in {}",
        batch.id,
        plural(counters.items_total, "item"),
        plural(counters.chunks_total, "chunk"),
    )
}

/// `batch <id> cancelled: 1500/3000 items had finished`, after a cancel.
pub(crate) fn cancelled_line(batch: &api::Batch) -> String {
    let counters = batch.counters.unwrap_or_default();
    format!(
        "batch {} {}: {}/{} items had finished",
        batch.id,
        state_name(batch.state).to_lowercase(),
        counters.items_succeeded + counters.items_failed,
        counters.items_total,
    )
}

/// A whole batch, one `field  value` per line.
pub(crate) fn batch_block(batch: &api::Batch) -> String {
    let counters = batch.counters.unwrap_or_default();
    let mut rows = vec![
        ("batch", batch.id.clone()),
        ("task", batch.task.clone()),
        ("params", batch.params.clone()),
        ("state", state_name(batch.state)),
        (
            "items",
            format!(
                "{}/{} done, {} failed",
                counters.items_succeeded + counters.items_failed,
                counters.items_total,
                counters.items_failed
            ),
        ),
        (
            "chunks",
            format!(
                "{}/{} done, {} per chunk",
                counters.chunks_done,
                counters.chunks_total,
                plural(u64::from(batch.chunk_size), "item")
            ),
        ),
        ("sequence", batch.sequence.to_string()),
    ];
    let times = [
        ("created", &batch.created_at),
        ("updated", &batch.updated_at),
        ("finished", &batch.finished_at),
    ];
    for (name, time) in times {
        if let Some(time) = time {
            rows.push((name, rfc3339(time)));
        }
    }
    if !batch.idempotency_key.is_empty() {
        rows.push(("idempotency key", batch.idempotency_key.clone()));
    }
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(name, value)| format!("{name:width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A listing of batches as a table: a header row, then one aligned row per batch (id, state,
/// task, items done out of all, failed items, creation time).
pub(crate) fn batch_table(batches: &[api::Batch]) -> String {
    const HEADER: [&str; 6] = ["ID", "STATE", "TASK", "DONE", "FAILED", "CREATED"];
    let rows: Vec<[String; 6]> = batches
        .iter()
        .map(|batch| {
            let counters = batch.counters.unwrap_or_default();
            [
                batch.id.clone(),
                state_name(batch.state),
                batch.task.clone(),
                format!(
                    "{}/{}",
                    counters.items_succeeded + counters.items_failed,
                    counters.items_total
                ),
                counters.items_failed.to_string(),
                batch.created_at.as_ref().map(rfc3339).unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = HEADER.map(str::to_owned);
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| match column {
                    // Counts align right, words left.
                    3 | 4 => format!("{cell:>width$}"),
                    _ => format!("{cell:<width$}"),
                })
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Newlines shown as `\n` (and carriage returns as `\r`), so one result stays one line.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

/// `<index>\tok\t<output>`, `<index>\tbinary\t<base64>` or `<index>\terror\t<message>`.
pub(crate) fn result_line(result: &api::ListResultsResponse) -> String {
    use api::list_results_response::Outcome;
    let index = result.index;
    match &result.outcome {
        Some(Outcome::Output(api::Payload {
            kind: Some(api::payload::Kind::Text(text)),
        })) => {
            format!("{index}\tok\t{}", one_line(text))
        }
        Some(Outcome::Output(api::Payload {
            kind: Some(api::payload::Kind::Binary(bytes)),
        })) => {
            format!(
                "{index}\tbinary\t{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
        Some(Outcome::Output(api::Payload { kind: None })) => format!("{index}\tok\t"),
        Some(Outcome::Error(error)) => format!("{index}\terror\t{}", one_line(error)),
        None => format!("{index}\tnone\t"),
    }
}

/// A task: its name and description, then its parameters' schema.
pub(crate) fn task_block(task: &api::TaskInfo) -> String {
    format!(
        "{}: {}\n    params: {}",
        task.name, task.description, task.params_schema
    )
}

#[cfg(test)]
mod tests {
    use api::list_results_response::Outcome;
    use prost_types::Timestamp;

    use super::*;

    fn counters() -> api::Counters {
        api::Counters {
            items_total: 3000,
            items_succeeded: 1498,
            items_failed: 2,
            chunks_total: 3,
            chunks_done: 1,
        }
    }

    #[test]
    fn events_fit_on_a_line() {
        let event = api::BatchEvent {
            batch_id: "b".into(),
            sequence: 4,
            state: api::BatchState::Running as i32,
            counters: Some(counters()),
            time: None,
        };
        assert_eq!(
            event_line(&event),
            "seq=4 state=RUNNING items=1500/3000 failed=2 chunks=1/3"
        );
        assert_eq!(state_name(9), "UNKNOWN(9)");
    }

    #[test]
    fn batches_read_as_sentences_and_blocks() {
        let batch = api::Batch {
            id: "b".into(),
            task: "jq".into(),
            params: "{}".into(),
            state: api::BatchState::Queued as i32,
            counters: Some(api::Counters {
                items_total: 1,
                chunks_total: 1,
                ..Default::default()
            }),
            chunk_size: 1000,
            sequence: 1,
            created_at: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            submitted_line(&batch),
            "batch b accepted: 1 item in 1 chunk"
        );
        assert_eq!(
            batch_block(&batch),
            "batch     b\ntask      jq\nparams    {}\nstate     QUEUED\n\
             items     0/1 done, 0 failed\nchunks    0/1 done, 1000 items per chunk\n\
             sequence  1\ncreated   1970-01-01T00:00:00Z"
        );
        let failed = api::Batch {
            id: "0190b6b5-0f6e-7c5e-9a3e-0123456789ab".into(),
            task: "wordcount".into(),
            state: api::BatchState::Failed as i32,
            counters: Some(counters()),
            created_at: None,
            ..batch.clone()
        };
        assert_eq!(
            batch_table(&[batch.clone(), failed]),
            "ID                                    STATE   TASK            DONE  FAILED  CREATED\n\
             b                                     QUEUED  jq               0/1       0  1970-01-01T00:00:00Z\n\
             0190b6b5-0f6e-7c5e-9a3e-0123456789ab  FAILED  wordcount  1500/3000       2"
        );
        let cancelled = api::Batch {
            state: api::BatchState::Cancelled as i32,
            counters: Some(counters()),
            ..batch
        };
        assert_eq!(
            cancelled_line(&cancelled),
            "batch b cancelled: 1500/3000 items had finished"
        );
    }

    #[test]
    fn results_stay_on_one_line() {
        let output = |kind| api::ListResultsResponse {
            index: 7,
            outcome: Some(Outcome::Output(api::Payload { kind: Some(kind) })),
        };
        assert_eq!(
            result_line(&output(api::payload::Kind::Text("1\n2".into()))),
            "7\tok\t1\\n2"
        );
        assert_eq!(
            result_line(&output(api::payload::Kind::Binary(vec![0, 1]))),
            "7\tbinary\tAAE="
        );
        let error = api::ListResultsResponse {
            index: 8,
            outcome: Some(Outcome::Error("bad".into())),
        };
        assert_eq!(result_line(&error), "8\terror\tbad");
    }
}
