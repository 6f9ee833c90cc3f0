//! `sluice results` and `sluice tasks`: reading what the service did and what it can do. Both
//! print as they receive, so a large batch's results stream through without being held, to
//! standard output or, for `results --out`, to a file that appears only once it is complete.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice::api;

use crate::args::{OutputFormat, ResultsArgs};
use crate::connection::Client;
use crate::failure::Outcome;
use crate::output::Printer;

/// `sluice results ID`: one line per item, in item order, to standard output or (`--out`) to a
/// JSON Lines file.
pub(crate) async fn results<W: Write>(
    client: &mut Client,
    args: &ResultsArgs,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let request = api::ListResultsRequest {
        batch_id: args.id.clone(),
        failed_only: args.failed_only,
        start_index: 0,
    };
    let mut results = client.list_results(request).await?.into_inner();
    let Some(path) = &args.out else {
        while let Some(result) = results.message().await? {
            printer.result(&result)?;
        }
        return Ok(Outcome::Done);
    };
    let file = PartialFile::create(path)?;
    let mut file_printer = Printer::buffered(OutputFormat::Json, BufWriter::new(file.writer()?));
    let mut written = 0_u64;
    while let Some(result) = results.message().await? {
        file_printer
            .result(&result)
            .with_context(|| format!("cannot write {}", file.partial.display()))?;
        written += 1;
    }
    file_printer
        .finish()
        .with_context(|| format!("cannot write {}", file.partial.display()))?;
    file.complete()?;
    eprintln!(
        "sluice: wrote {written} result{} to {}",
        if written == 1 { "" } else { "s" },
        path.display()
    );
    Ok(Outcome::Done)
}

/// A file written under a temporary name next to its final one and renamed when complete, so
/// that a stream cut short never leaves a file that looks whole. Removed if not completed.
struct PartialFile {
    partial: PathBuf,
    target: PathBuf,
    completed: bool,
}

impl PartialFile {
    fn create(target: &Path) -> anyhow::Result<Self> {
        let name = target
            .file_name()
            .with_context(|| format!("--out {} names no file", target.display()))?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".partial-{}", std::process::id()));
        Ok(PartialFile {
            partial: target.with_file_name(partial_name),
            target: target.to_owned(),
            completed: false,
        })
    }

    fn writer(&self) -> anyhow::Result<File> {
        File::create(&self.partial)
            .with_context(|| format!("cannot create {}", self.partial.display()))
    }

    fn complete(mut self) -> anyhow::Result<()> {
        std::fs::rename(&self.partial, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.partial.display(),
                self.target.display()
            )
        })?;
        self.completed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.completed {
            // Best effort: it may never have been created.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// `sluice tasks`: the tasks the workers offer.
pub(crate) async fn tasks<W: Write>(
    client: &mut Client,
    printer: &mut Printer<W>,
) -> anyhow::Result<Outcome> {
    let tasks = client
        .list_tasks(api::ListTasksRequest {})
        .await?
        .into_inner()
        .tasks;
    if tasks.is_empty() {
        printer.empty_listing("tasks")?;
    }
    for task in &tasks {
        printer.task(task)?;
    }
    Ok(Outcome::Done)
}
