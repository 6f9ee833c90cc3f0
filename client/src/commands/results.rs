//! `sluice results` and `sluice tasks`: reading what the service did and what it can do. Both
//! print as they receive, so a large batch's results stream through without being held.
use std::io::Write;

use sluice::api;

use crate::args::ResultsArgs;
use crate::connection::Client;
use crate::failure::Outcome;
use crate::output::Printer;

/// `sluice results ID`: one line per item, in item order.
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
    while let Some(result) = results.message().await? {
        printer.result(&result)?;
    }
    Ok(Outcome::Done)
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
