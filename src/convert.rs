//! Conversions between the model and the generated API, in one place: the server's handlers,
//! the workers' events and the CLI all go through these.
use mongodb::bson::DateTime;

use crate::api;
use crate::model::{BatchState, Counters, Payload};
use crate::store::BatchRecord;

impl From<BatchState> for api::BatchState {
    fn from(state: BatchState) -> Self {
        match state {
            BatchState::Queued => api::BatchState::Queued,
            BatchState::Running => api::BatchState::Running,
            BatchState::Succeeded => api::BatchState::Succeeded,
            BatchState::Failed => api::BatchState::Failed,
            BatchState::Cancelled => api::BatchState::Cancelled,
        }
    }
}

/// The model state for an API state; `None` for UNSPECIFIED.
pub fn state_from_api(state: api::BatchState) -> Option<BatchState> {
    match state {
        api::BatchState::Unspecified => None,
        api::BatchState::Queued => Some(BatchState::Queued),
        api::BatchState::Running => Some(BatchState::Running),
        api::BatchState::Succeeded => Some(BatchState::Succeeded),
        api::BatchState::Failed => Some(BatchState::Failed),
        api::BatchState::Cancelled => Some(BatchState::Cancelled),
    }
}

/// Whether an API state is terminal.
pub fn is_terminal(state: api::BatchState) -> bool {
    state_from_api(state).is_some_and(BatchState::is_terminal)
}

impl From<Counters> for api::Counters {
    fn from(counters: Counters) -> Self {
        api::Counters {
            items_total: counters.items_total,
            items_succeeded: counters.items_succeeded,
            items_failed: counters.items_failed,
            chunks_total: counters.chunks_total,
            chunks_done: counters.chunks_done,
        }
    }
}

impl From<Payload> for api::Payload {
    fn from(payload: Payload) -> Self {
        let kind = match payload {
            Payload::Text(text) => api::payload::Kind::Text(text),
            Payload::Binary(bytes) => api::payload::Kind::Binary(bytes),
        };
        api::Payload { kind: Some(kind) }
    }
}

/// The model payload of an API payload; `None` if neither form is set.
pub fn payload_from_api(payload: api::Payload) -> Option<Payload> {
    match payload.kind? {
        api::payload::Kind::Text(text) => Some(Payload::Text(text)),
        api::payload::Kind::Binary(bytes) => Some(Payload::Binary(bytes)),
    }
}

/// A BSON time as a protobuf timestamp.
pub fn timestamp(time: DateTime) -> prost_types::Timestamp {
    let millis = time.timestamp_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The current time as a protobuf timestamp (microsecond precision, for latency measurement).
pub fn now_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

impl From<&BatchRecord> for api::Batch {
    fn from(record: &BatchRecord) -> Self {
        api::Batch {
            id: record.id.clone(),
            task: record.task.clone(),
            params: record.params.clone(),
            state: api::BatchState::from(record.state) as i32,
            counters: Some(record.counters.into()),
            chunk_size: record.chunk_size,
            sequence: record.sequence,
            created_at: Some(timestamp(record.created_at)),
            updated_at: Some(timestamp(record.updated_at)),
            finished_at: record.finished_at.map(timestamp),
            idempotency_key: record.idempotency_key.clone().unwrap_or_default(),
        }
    }
}

/// The event that describes a batch as it is now, stamped `time`.
pub fn event_of(record: &BatchRecord, time: prost_types::Timestamp) -> api::BatchEvent {
    api::BatchEvent {
        batch_id: record.id.clone(),
        sequence: record.sequence,
        state: api::BatchState::from(record.state) as i32,
        counters: Some(record.counters.into()),
        time: Some(time),
    }
}

/// A batch's snapshot event, stamped with its last change.
pub fn snapshot_event(record: &BatchRecord) -> api::BatchEvent {
    event_of(record, timestamp(record.updated_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_milliseconds() {
        let ts = timestamp(DateTime::from_millis(1_700_000_000_123));
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
        let before_epoch = timestamp(DateTime::from_millis(-1));
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
    }

    #[test]
    fn states_map_both_ways() {
        for state in [
            BatchState::Queued,
            BatchState::Cancelled,
            BatchState::Failed,
        ] {
            assert_eq!(state_from_api(api::BatchState::from(state)), Some(state));
        }
        assert!(is_terminal(api::BatchState::Succeeded));
        assert!(!is_terminal(api::BatchState::Running));
        assert!(!is_terminal(api::BatchState::Unspecified));
    }
}
