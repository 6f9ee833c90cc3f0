//! One watcher's stream: the batch's snapshot first (from MongoDB, or while MongoDB is
//! unreachable the newest event this server has seen), then live events from the hub, ending
//! after the terminal event. A spawned producer feeds a small bounded channel; it ends when the
//! client goes away, and on shutdown it ends the stream with UNAVAILABLE so the client
//! re-attaches elsewhere with `after_sequence`.
use std::sync::Arc;

use sluice::api::BatchEvent;
use sluice::convert::{is_terminal, snapshot_event};
use sluice::store::Store;
use sluice::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::hub::{Hub, Registration};

/// Events buffered per watcher beyond the hub's one-event slot.
const WATCH_BUFFER: usize = 4;

/// What every watch needs.
#[derive(Debug, Clone)]
pub(crate) struct Watches {
    pub(crate) store: Store,
    pub(crate) hub: Arc<Hub>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// A stream of a batch's events.
pub(crate) type EventStream = ReceiverStream<Result<BatchEvent, Status>>;

impl Watches {
    /// Opens a watch of `batch_id` sending events after `after_sequence`.
    pub(crate) async fn open(
        &self,
        batch_id: &str,
        after_sequence: u64,
    ) -> Result<EventStream, Error> {
        let registration = self.hub.register(batch_id);
        let first = match self.store.get_batch(batch_id).await {
            Ok(Some(snapshot)) if !snapshot.open => snapshot_event(&snapshot),
            // Missing, or still being uploaded (clients see a batch once it is sealed).
            Ok(_) => return Err(Error::NotFound(batch_id.to_owned())),
            // MongoDB is unreachable: start from what this server last saw of the batch, if
            // anyone here watches it; live events keep flowing through Redis meanwhile.
            Err(error) if error.is_outage() => self.hub.latest(batch_id).ok_or(error)?,
            Err(error) => return Err(error),
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(produce(
            registration,
            first,
            after_sequence,
            sender,
            shutdown,
        ));
        Ok(ReceiverStream::new(receiver))
    }
}

async fn produce(
    registration: Registration,
    mut current: BatchEvent,
    after_sequence: u64,
    sender: mpsc::Sender<Result<BatchEvent, Status>>,
    shutdown: CancellationToken,
) {
    let mut last_sent = after_sequence;
    loop {
        if current.sequence > last_sent {
            let sequence = current.sequence;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return end_for_shutdown(&sender).await,
                sent = sender.send(Ok(current.clone())) => if sent.is_err() { return },
            }
            last_sent = sequence;
        }
        // The terminal event has the batch's highest sequence: once it is sent (or the client
        // said it had seen it), nothing follows.
        if is_terminal(current.state()) && current.sequence <= last_sent {
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return end_for_shutdown(&sender).await,
            _ = sender.closed() => return,
            event = registration.next_event() => current = event,
        }
    }
}

async fn end_for_shutdown(sender: &mpsc::Sender<Result<BatchEvent, Status>>) {
    let status = Status::unavailable("server shutting down; re-attach with after_sequence");
    // The client may be gone already; a watch ending unread needs no report.
    let _ = sender.try_send(Err(status));
}
