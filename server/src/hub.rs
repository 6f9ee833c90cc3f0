//! The fan-out of progress events: ONE Redis subscriber connection per server process feeds
//! every watcher in it. Each watcher owns a small bounded queue: a watcher that keeps up gets
//! every event in order; one that falls behind loses its oldest queued events (counters are
//! cumulative, so the newer ones carry everything), which bounds its memory and never drops
//! the terminal event, the newest of all.
//!
//! Pub/Sub loses what is published while the subscriber is reconnecting, so after a
//! reconnect, and every poll interval anyway, the hub re-reads the snapshots of the watched
//! batches from MongoDB and offers them like events. It also keeps the newest event of every
//! watched batch, so a new watch can start from it while MongoDB is unreachable.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface};
use sluice::api::BatchEvent;
use sluice::convert::snapshot_event;
use sluice::store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Events a watcher's queue holds before its oldest are dropped.
const WATCHER_QUEUE: usize = 16;

/// The in-process registry of watchers, by batch id.
#[derive(Debug)]
pub(crate) struct Hub {
    store: Store,
    watched: Mutex<HashMap<String, Watched>>,
}

/// The watchers of one batch, and its newest event seen.
#[derive(Debug, Default)]
struct Watched {
    slots: Vec<Arc<Slot>>,
    latest: Option<BatchEvent>,
}

/// One watcher's mailbox.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    queue: Mutex<Queue>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<BatchEvent>,
    /// The highest sequence ever queued: older or repeated events are ignored.
    newest: u64,
}

impl Slot {
    fn offer(&self, event: &BatchEvent) {
        let mut queue = lock(&self.queue);
        if event.sequence <= queue.newest {
            return;
        }
        queue.newest = event.sequence;
        queue.events.push_back(event.clone());
        if queue.events.len() > WATCHER_QUEUE {
            queue.events.pop_front();
        }
        drop(queue);
        self.notify.notify_one();
    }
}

/// A watcher's registration; dropping it leaves the hub.
#[derive(Debug)]
pub(crate) struct Registration {
    hub: Arc<Hub>,
    batch_id: String,
    slot: Arc<Slot>,
}

impl Registration {
    /// Waits for the next event newer than every event offered before it.
    pub(crate) async fn next_event(&self) -> BatchEvent {
        loop {
            if let Some(event) = lock(&self.slot.queue).events.pop_front() {
                return event;
            }
            self.slot.notify.notified().await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut watched = lock(&self.hub.watched);
        if let Some(batch) = watched.get_mut(&self.batch_id) {
            batch.slots.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
            if batch.slots.is_empty() {
                watched.remove(&self.batch_id);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their data half-updated (each critical
    // section is a single assignment, push or pop), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub(crate) fn new(store: Store) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            watched: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a watcher of `batch_id`. Register before reading the snapshot, so no event
    /// published in between is missed.
    pub(crate) fn register(self: &Arc<Self>, batch_id: &str) -> Registration {
        let slot = Arc::new(Slot::default());
        lock(&self.watched)
            .entry(batch_id.to_owned())
            .or_default()
            .slots
            .push(slot.clone());
        Registration {
            hub: self.clone(),
            batch_id: batch_id.to_owned(),
            slot,
        }
    }

    /// Offers an event to every watcher of its batch.
    pub(crate) fn deliver(&self, event: &BatchEvent) {
        let slots = {
            let mut watched = lock(&self.watched);
            let Some(batch) = watched.get_mut(&event.batch_id) else {
                return;
            };
            if batch
                .latest
                .as_ref()
                .is_none_or(|latest| event.sequence > latest.sequence)
            {
                batch.latest = Some(event.clone());
            }
            batch.slots.clone()
        };
        for slot in slots {
            slot.offer(event);
        }
    }

    /// The newest event seen of a batch someone in this process watches.
    pub(crate) fn latest(&self, batch_id: &str) -> Option<BatchEvent> {
        lock(&self.watched)
            .get(batch_id)
            .and_then(|batch| batch.latest.clone())
    }

    /// Number of watchers registered.
    pub(crate) fn watcher_count(&self) -> usize {
        lock(&self.watched)
            .values()
            .map(|batch| batch.slots.len())
            .sum()
    }

    /// Re-reads every watched batch and offers its snapshot.
    async fn refresh(&self) {
        let batch_ids: Vec<String> = lock(&self.watched).keys().cloned().collect();
        if batch_ids.is_empty() {
            return;
        }
        for group in batch_ids.chunks(500) {
            match self.store.get_batches(group).await {
                Ok(records) => records
                    .iter()
                    .for_each(|record| self.deliver(&snapshot_event(record))),
                Err(error) => warn!(%error, "cannot refresh watched batches"),
            }
        }
    }

    /// Pumps events from the subscriber into the watchers until `shutdown`.
    ///
    /// Refreshes run beside the receive loop, never in it: a refresh waits on MongoDB, and a
    /// receive loop waiting with it would let the subscriber's channel overflow, which asks for
    /// another refresh. Requests made while a refresh runs are coalesced into one more.
    pub(crate) async fn run(
        self: Arc<Self>,
        subscriber: SubscriberClient,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let refresh_wanted = Notify::new();
        let receive = async {
            let mut messages = subscriber.message_rx();
            let mut reconnects = subscriber.reconnect_rx();
            let mut poll = tokio::time::interval(poll_interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    message = messages.recv() => match message {
                        Ok(message) => match message.value.as_bytes().map(sluice::broker::decode_event) {
                            Some(Ok(event)) => self.deliver(&event),
                            Some(Err(error)) => warn!(%error, "ignoring undecodable event"),
                            None => warn!("ignoring event that is not bytes"),
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                            warn!(skipped, "event receiver lagged; refreshing watched batches");
                            refresh_wanted.notify_one();
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    reconnected = reconnects.recv() => {
                        debug!(?reconnected, "subscriber reconnected; refreshing watched batches");
                        refresh_wanted.notify_one();
                    }
                    _ = poll.tick() => refresh_wanted.notify_one(),
                }
            }
        };
        let refresh = async {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = refresh_wanted.notified() => self.refresh().await,
                }
            }
        };
        tokio::join!(receive, refresh);
        if let Err(error) = subscriber.quit().await {
            debug!(%error, "subscriber quit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64) -> BatchEvent {
        BatchEvent {
            batch_id: "b".into(),
            sequence,
            ..Default::default()
        }
    }

    #[test]
    fn a_watcher_that_keeps_up_gets_every_event_in_order() {
        let slot = Slot::default();
        for sequence in [1, 2, 2, 1, 3] {
            slot.offer(&event(sequence));
        }
        let queued: Vec<u64> = lock(&slot.queue)
            .events
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(queued, vec![1, 2, 3]);
    }

    #[test]
    fn a_watcher_that_falls_behind_keeps_the_newest_events() {
        let slot = Slot::default();
        let last = WATCHER_QUEUE as u64 + 10;
        for sequence in 1..=last {
            slot.offer(&event(sequence));
        }
        let queue = lock(&slot.queue);
        assert_eq!(queue.events.len(), WATCHER_QUEUE);
        assert_eq!(queue.events.back().map(|e| e.sequence), Some(last));
        assert_eq!(
            queue.events.front().map(|e| e.sequence),
            Some(last - WATCHER_QUEUE as u64 + 1)
        );
    }
}
