//! The fan-out of progress events: ONE Redis subscriber connection per server process feeds
//! every watcher in it. Each watcher owns a one-event slot that keeps only the newest event
//! (counters are cumulative, so older ones add nothing), which bounds a slow watcher's memory
//! and never drops the terminal event, the newest of all.
//!
//! Pub/Sub loses what is published while the subscriber is reconnecting, so after a
//! reconnect, and every poll interval anyway, the hub re-reads the snapshots of the watched
//! batches from MongoDB and offers them like events.
use std::collections::HashMap;
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

/// The in-process registry of watchers, by batch id.
#[derive(Debug)]
pub(crate) struct Hub {
    store: Store,
    watchers: Mutex<HashMap<String, Vec<Arc<Slot>>>>,
}

/// One watcher's mailbox.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    latest: Mutex<Option<BatchEvent>>,
    notify: Notify,
}

impl Slot {
    fn offer(&self, event: &BatchEvent) {
        let mut latest = lock(&self.latest);
        if latest
            .as_ref()
            .is_none_or(|held| event.sequence > held.sequence)
        {
            *latest = Some(event.clone());
            drop(latest);
            self.notify.notify_one();
        }
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
    /// Waits for the next event newer than anything offered before it was taken.
    pub(crate) async fn next_event(&self) -> BatchEvent {
        loop {
            if let Some(event) = lock(&self.slot.latest).take() {
                return event;
            }
            self.slot.notify.notified().await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut watchers = lock(&self.hub.watchers);
        if let Some(slots) = watchers.get_mut(&self.batch_id) {
            slots.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
            if slots.is_empty() {
                watchers.remove(&self.batch_id);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their data half-updated (each critical
    // section is a single assignment or push), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub(crate) fn new(store: Store) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            watchers: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a watcher of `batch_id`. Register before reading the snapshot, so no event
    /// published in between is missed.
    pub(crate) fn register(self: &Arc<Self>, batch_id: &str) -> Registration {
        let slot = Arc::new(Slot::default());
        lock(&self.watchers)
            .entry(batch_id.to_owned())
            .or_default()
            .push(slot.clone());
        Registration {
            hub: self.clone(),
            batch_id: batch_id.to_owned(),
            slot,
        }
    }

    /// Offers an event to every watcher of its batch.
    pub(crate) fn deliver(&self, event: &BatchEvent) {
        let slots = lock(&self.watchers)
            .get(&event.batch_id)
            .cloned()
            .unwrap_or_default();
        for slot in slots {
            slot.offer(event);
        }
    }

    /// Number of watchers registered.
    pub(crate) fn watcher_count(&self) -> usize {
        lock(&self.watchers).values().map(Vec::len).sum()
    }

    /// Re-reads every watched batch and offers its snapshot.
    async fn refresh(&self) {
        let batch_ids: Vec<String> = lock(&self.watchers).keys().cloned().collect();
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
    pub(crate) async fn run(
        self: Arc<Self>,
        subscriber: SubscriberClient,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) {
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
                        self.refresh().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                reconnected = reconnects.recv() => {
                    debug!(?reconnected, "subscriber reconnected; refreshing watched batches");
                    self.refresh().await;
                }
                _ = poll.tick() => self.refresh().await,
            }
        }
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
    fn slot_keeps_only_the_newest_event() {
        let slot = Slot::default();
        slot.offer(&event(3));
        slot.offer(&event(2));
        slot.offer(&event(5));
        slot.offer(&event(4));
        assert_eq!(lock(&slot.latest).take().map(|e| e.sequence), Some(5));
    }
}
