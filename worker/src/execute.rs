//! Running a task over one chunk's items: on a blocking thread (CPU-bound tasks must not stall
//! the async runtime), cut off at the next item boundary when the attempt times out or the
//! batch is cancelled meanwhile. A stopped run records nothing: a chunk's results are stored
//! whole or not at all.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::model::{ItemOutcome, Payload};
use sluice::store::Store;
use sluice::tasks::{Task, Transient};
use tracing::debug;

/// How often a running chunk checks whether its batch was cancelled.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How a run over a chunk ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Run {
    /// Every item has an outcome.
    Finished(Vec<ItemOutcome>),
    /// The batch was cancelled while the chunk ran.
    Cancelled,
    /// The attempt failed and may succeed later: a transient task failure, a timeout, a panic.
    Failed(String),
}

/// Runs `task` with `params` over `items`, for at most `timeout`, stopping early if the batch
/// `batch_id` stops being live.
pub(crate) async fn run_chunk(
    task: Option<Arc<dyn Task>>,
    params: String,
    items: Vec<Payload>,
    timeout: Duration,
    store: &Store,
    batch_id: &str,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let mut handle =
        tokio::task::spawn_blocking(move || run_items(task, &params, &items, &stop_flag));
    // Whatever ends this function, the blocking run stops at its next item boundary.
    let _stop_on_return = StopOnDrop(stop);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut cancel_check = tokio::time::interval_at(
        tokio::time::Instant::now() + CANCEL_CHECK_INTERVAL,
        CANCEL_CHECK_INTERVAL,
    );
    loop {
        tokio::select! {
            biased;
            joined = &mut handle => {
                return match joined {
                    Ok(Ok(outcomes)) => Run::Finished(outcomes),
                    Ok(Err(Stopped::Transient(Transient(reason)))) => Run::Failed(reason),
                    // Only this function sets the flag, and it has not returned yet.
                    Ok(Err(Stopped::Early)) => Run::Failed("stopped early".to_owned()),
                    Err(error) if error.is_panic() => Run::Failed("the task panicked".to_owned()),
                    Err(error) => Run::Failed(format!("the task did not finish: {error}")),
                };
            }
            _ = &mut deadline => {
                return Run::Failed(format!("timed out after {:.1}s", timeout.as_secs_f64()));
            }
            _ = cancel_check.tick() => {
                match store.get_batch(batch_id).await {
                    Ok(Some(batch)) if !batch.state.is_terminal() => {}
                    Ok(_) => return Run::Cancelled,
                    // MongoDB unreachable: keep working; the result write will wait it out.
                    Err(error) => debug!(%error, "cannot check the batch's state"),
                }
            }
        }
    }
}

/// Sets the stop flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why a run stopped before its last item.
#[derive(Debug)]
enum Stopped {
    /// The task reported a transient failure.
    Transient(Transient),
    /// The stop flag was set.
    Early,
}

/// Runs the task over the items on the current (blocking) thread, checking `stop` before each
/// item. A task this worker does not offer, or params it rejects, make every item fail with
/// that reason.
fn run_items(
    task: Option<Arc<dyn Task>>,
    params: &str,
    items: &[Payload],
    stop: &AtomicBool,
) -> Result<Vec<ItemOutcome>, Stopped> {
    let processor = match task {
        None => Err("this worker does not offer the batch's task".to_owned()),
        Some(task) => serde_json::from_str(params)
            .map_err(|error| format!("invalid params: {error}"))
            .and_then(|params| {
                task.processor(&params)
                    .map_err(|error| format!("invalid params: {error}"))
            }),
    };
    let mut processor = match processor {
        Ok(processor) => processor,
        Err(reason) => return Ok(items.iter().map(|_| Err(reason.clone())).collect()),
    };
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        if stop.load(Ordering::Relaxed) {
            return Err(Stopped::Early);
        }
        outcomes.push(processor.process(item).map_err(Stopped::Transient)?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use sluice::tasks::TaskRegistry;

    use super::*;

    fn items(values: &[&str]) -> Vec<Payload> {
        values.iter().map(|v| Payload::Text((*v).into())).collect()
    }

    #[test]
    fn unknown_tasks_fail_every_item() {
        let stop = AtomicBool::new(false);
        let outcomes = run_items(None, "{}", &items(&["a", "b"]), &stop).expect("runs");
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(Result::is_err));
    }

    #[test]
    fn runs_a_known_task() {
        let stop = AtomicBool::new(false);
        let task = TaskRegistry::builtin().get("echo");
        let outcomes = run_items(task, "{}", &items(&["a"]), &stop).expect("runs");
        assert_eq!(outcomes, vec![Ok(Payload::Text("a".into()))]);
    }

    #[test]
    fn a_set_stop_flag_ends_the_run_before_the_next_item() {
        let stop = AtomicBool::new(true);
        let task = TaskRegistry::builtin().get("echo");
        let stopped = run_items(task, "{}", &items(&["a"]), &stop);
        assert!(matches!(stopped, Err(Stopped::Early)));
    }
}
