//! Where the CLI's records go: standard output, as text for people ([`text`]) or one JSON
//! object per line in the proto3 JSON mapping ([`json`]). Commands hand records to a
//! [`Printer`] and never format anything themselves, so both forms stay in step. Every record
//! printed to standard output is flushed at once, so a `watch` piped into another program
//! shows events live.
//!
//! A followed batch's events go to an [`EventView`]: the printer's lines, or on a terminal a
//! live progress bar ([`bar`]).
use std::io::{self, IsTerminal as _, Write};

use serde_json::Value;
use sluice::api;

use crate::args::OutputFormat;

mod bar;
mod json;
mod text;
mod time;

pub(crate) use bar::ProgressView;

/// How a followed batch is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventDisplay {
    /// A live progress bar (text output on a terminal).
    Bar,
    /// One record per event (a pipe or a file, or `--output json`).
    Lines,
}

impl EventDisplay {
    /// The bar for text on a terminal standard output, lines otherwise.
    pub(crate) fn for_stdout(format: OutputFormat) -> EventDisplay {
        if format == OutputFormat::Text && io::stdout().is_terminal() {
            EventDisplay::Bar
        } else {
            EventDisplay::Lines
        }
    }
}

/// Where a followed batch's events go.
pub(crate) trait EventView {
    /// Shows one event.
    fn event(&mut self, event: &api::BatchEvent) -> io::Result<()>;
    /// Tells the person something on the side (a re-attach) without breaking the display.
    fn notice(&mut self, message: &str);
}

impl<W: Write> EventView for Printer<W> {
    fn event(&mut self, event: &api::BatchEvent) -> io::Result<()> {
        Printer::event(self, event)
    }

    fn notice(&mut self, message: &str) {
        eprintln!("sluice: {message}");
    }
}

/// Prints records in one format.
#[derive(Debug)]
pub(crate) struct Printer<W> {
    format: OutputFormat,
    out: W,
    flush_every_record: bool,
}

impl<W: Write> Printer<W> {
    /// Prints to `out` in `format`, flushing every record (for standard output).
    pub(crate) fn new(format: OutputFormat, out: W) -> Self {
        Printer {
            format,
            out,
            flush_every_record: true,
        }
    }

    /// Prints to `out` in `format`, flushing only at [`Printer::finish`] (for files).
    pub(crate) fn buffered(format: OutputFormat, out: W) -> Self {
        Printer {
            format,
            out,
            flush_every_record: false,
        }
    }

    /// Flushes and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    /// The format records are printed in.
    pub(crate) fn format(&self) -> OutputFormat {
        self.format
    }

    fn record(
        &mut self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Text => writeln!(self.out, "{}", text())?,
            OutputFormat::Json => writeln!(self.out, "{}", json())?,
        }
        if self.flush_every_record {
            self.out.flush()?;
        }
        Ok(())
    }

    /// One event of a batch.
    pub(crate) fn event(&mut self, event: &api::BatchEvent) -> io::Result<()> {
        self.record(|| text::event_line(event), || json::event(event))
    }

    /// The batch an upload created.
    pub(crate) fn submitted(&mut self, batch: &api::Batch) -> io::Result<()> {
        self.record(|| text::submitted_line(batch), || json::batch(batch))
    }

    /// The batch a cancel returned.
    pub(crate) fn cancelled(&mut self, batch: &api::Batch) -> io::Result<()> {
        self.record(|| text::cancelled_line(batch), || json::batch(batch))
    }

    /// One batch, in full.
    pub(crate) fn batch(&mut self, batch: &api::Batch) -> io::Result<()> {
        self.record(|| text::batch_block(batch), || json::batch(batch))
    }

    /// A listing of batches: a table in text (or `(no batches)`), one line per batch in JSON.
    pub(crate) fn batch_list(&mut self, batches: &[api::Batch]) -> io::Result<()> {
        match self.format {
            OutputFormat::Text if batches.is_empty() => self.empty_listing("batches"),
            OutputFormat::Text => self.record(|| text::batch_table(batches), || Value::Null),
            OutputFormat::Json => batches
                .iter()
                .try_for_each(|batch| self.record(String::new, || json::batch(batch))),
        }
    }

    /// Says a listing was empty (text only: in JSON an empty listing is no lines).
    pub(crate) fn empty_listing(&mut self, what: &str) -> io::Result<()> {
        match self.format {
            OutputFormat::Text => {
                writeln!(self.out, "(no {what})")?;
                self.out.flush()
            }
            OutputFormat::Json => Ok(()),
        }
    }

    /// One item's result.
    pub(crate) fn result(&mut self, result: &api::ListResultsResponse) -> io::Result<()> {
        self.record(|| text::result_line(result), || json::result(result))
    }

    /// A health status (`SERVING`, `NOT_SERVING`, ...).
    pub(crate) fn health(&mut self, status: &str) -> io::Result<()> {
        self.record(
            || status.to_owned(),
            || serde_json::json!({ "status": status }),
        )
    }

    /// One task.
    pub(crate) fn task(&mut self, task: &api::TaskInfo) -> io::Result<()> {
        self.record(|| text::task_block(task), || json::task(task))
    }

    /// What was printed (tests).
    #[cfg(test)]
    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_one_json_line() {
        let mut printer = Printer::new(OutputFormat::Json, Vec::new());
        let event = api::BatchEvent {
            batch_id: "b".into(),
            sequence: 1,
            ..Default::default()
        };
        printer.event(&event).expect("printed");
        printer.empty_listing("batches").expect("printed");
        printer.task(&api::TaskInfo::default()).expect("printed");
        let printed = String::from_utf8(printer.into_inner()).expect("UTF-8");
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"batchId":"b","sequence":"1","state":"BATCH_STATE_UNSPECIFIED","counters":{"itemsTotal":"0","itemsSucceeded":"0","itemsFailed":"0","chunksTotal":"0","chunksDone":"0"}}"#
        );
        assert!(lines
            .iter()
            .all(|line| serde_json::from_str::<Value>(line).is_ok()));
    }

    #[test]
    fn text_listings_say_when_they_are_empty() {
        let mut printer = Printer::new(OutputFormat::Text, Vec::new());
        printer.empty_listing("batches").expect("printed");
        assert_eq!(printer.into_inner(), b"(no batches)\n");
    }
}
