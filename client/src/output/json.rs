//! The proto3 JSON mapping of the records the CLI prints, by hand: lowerCamelCase field names,
//! enums by their full names (`"BATCH_STATE_SUCCEEDED"`), 64-bit integers as strings, 32-bit
//! ones as numbers, bytes as standard base64, timestamps as RFC 3339 in UTC. Fields a script
//! keys on (`id`/`batchId`, `sequence`, `state`, `counters` and every counter) are always
//! present; an unset timestamp, an unset outcome and an empty idempotency key are left out, as
//! the mapping allows.
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sluice::api;

use super::time::rfc3339;

/// A 64-bit integer, as the mapping writes it: a decimal string.
fn uint64(value: u64) -> Value {
    Value::String(value.to_string())
}

/// An enum value: its full name, or the number if this build does not know it.
fn state(value: i32) -> Value {
    match api::BatchState::try_from(value) {
        Ok(state) => Value::String(state.as_str_name().to_owned()),
        Err(_) => Value::from(value),
    }
}

fn insert_time(object: &mut Map<String, Value>, name: &str, time: Option<&prost_types::Timestamp>) {
    if let Some(time) = time {
        object.insert(name.to_owned(), Value::String(rfc3339(time)));
    }
}

/// `Counters`: every counter, zero or not.
pub(crate) fn counters(counters: Option<&api::Counters>) -> Value {
    let counters = counters.copied().unwrap_or_default();
    json!({
        "itemsTotal": uint64(counters.items_total),
        "itemsSucceeded": uint64(counters.items_succeeded),
        "itemsFailed": uint64(counters.items_failed),
        "chunksTotal": uint64(counters.chunks_total),
        "chunksDone": uint64(counters.chunks_done),
    })
}

/// `Batch`.
pub(crate) fn batch(batch: &api::Batch) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::String(batch.id.clone()));
    object.insert("task".into(), Value::String(batch.task.clone()));
    object.insert("params".into(), Value::String(batch.params.clone()));
    object.insert("state".into(), state(batch.state));
    object.insert("counters".into(), counters(batch.counters.as_ref()));
    object.insert("chunkSize".into(), Value::from(batch.chunk_size));
    object.insert("sequence".into(), uint64(batch.sequence));
    insert_time(&mut object, "createdAt", batch.created_at.as_ref());
    insert_time(&mut object, "updatedAt", batch.updated_at.as_ref());
    insert_time(&mut object, "finishedAt", batch.finished_at.as_ref());
    if !batch.idempotency_key.is_empty() {
        object.insert(
            "idempotencyKey".into(),
            Value::String(batch.idempotency_key.clone()),
        );
    }
    Value::Object(object)
}

/// `BatchEvent`.
pub(crate) fn event(event: &api::BatchEvent) -> Value {
    let mut object = Map::new();
    object.insert("batchId".into(), Value::String(event.batch_id.clone()));
    object.insert("sequence".into(), uint64(event.sequence));
    object.insert("state".into(), state(event.state));
    object.insert("counters".into(), counters(event.counters.as_ref()));
    insert_time(&mut object, "time", event.time.as_ref());
    Value::Object(object)
}

/// `Payload`: `{"text": ...}`, `{"binary": "<base64>"}`, or `{}` if neither is set.
pub(crate) fn payload(payload: &api::Payload) -> Value {
    match &payload.kind {
        Some(api::payload::Kind::Text(text)) => json!({ "text": text }),
        Some(api::payload::Kind::Binary(bytes)) => {
            json!({ "binary": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
        None => json!({}),
    }
}

/// `ListResultsResponse`: the index, and the output or the error.
pub(crate) fn result(result: &api::ListResultsResponse) -> Value {
    let mut object = Map::new();
    object.insert("index".into(), uint64(result.index));
    match &result.outcome {
        Some(api::list_results_response::Outcome::Output(output)) => {
            object.insert("output".into(), payload(output));
        }
        Some(api::list_results_response::Outcome::Error(error)) => {
            object.insert("error".into(), Value::String(error.clone()));
        }
        None => {}
    }
    Value::Object(object)
}

/// `TaskInfo`.
pub(crate) fn task(task: &api::TaskInfo) -> Value {
    json!({
        "name": task.name,
        "description": task.description,
        "paramsSchema": task.params_schema,
    })
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn sample_counters() -> api::Counters {
        api::Counters {
            items_total: 3,
            items_succeeded: 2,
            items_failed: 1,
            chunks_total: 1,
            chunks_done: 1,
        }
    }

    #[test]
    fn events_follow_the_proto3_mapping() {
        let event = api::BatchEvent {
            batch_id: "0190b6b5-0f6e-7c5e-9a3e-0123456789ab".into(),
            sequence: 4,
            state: api::BatchState::Failed as i32,
            counters: Some(sample_counters()),
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
        };
        assert_eq!(
            serde_json::to_string(&super::event(&event)).expect("serializable"),
            concat!(
                r#"{"batchId":"0190b6b5-0f6e-7c5e-9a3e-0123456789ab","sequence":"4","#,
                r#""state":"BATCH_STATE_FAILED","counters":{"itemsTotal":"3","itemsSucceeded":"2","#,
                r#""itemsFailed":"1","chunksTotal":"1","chunksDone":"1"},"#,
                r#""time":"2023-11-14T22:13:20.123Z"}"#
            )
        );
    }

    #[test]
    fn batches_keep_key_fields_and_drop_unset_ones() {
        let queued = api::Batch {
            id: "b".into(),
            task: "jq".into(),
            params: r#"{"filter":".a"}"#.into(),
            state: api::BatchState::Queued as i32,
            counters: None,
            chunk_size: 1000,
            sequence: 1,
            created_at: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            updated_at: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            finished_at: None,
            idempotency_key: String::new(),
        };
        let value = batch(&queued);
        assert_eq!(
            value,
            json!({
                "id": "b",
                "task": "jq",
                "params": "{\"filter\":\".a\"}",
                "state": "BATCH_STATE_QUEUED",
                "counters": {"itemsTotal": "0", "itemsSucceeded": "0", "itemsFailed": "0",
                             "chunksTotal": "0", "chunksDone": "0"},
                "chunkSize": 1000,
                "sequence": "1",
                "createdAt": "1970-01-01T00:00:00Z",
                "updatedAt": "1970-01-01T00:00:01Z",
            })
        );
        let finished = api::Batch {
            finished_at: Some(Timestamp {
                seconds: 2,
                nanos: 0,
            }),
            idempotency_key: "k".into(),
            state: 42,
            ..queued
        };
        let value = batch(&finished);
        assert_eq!(value["finishedAt"], "1970-01-01T00:00:02Z");
        assert_eq!(value["idempotencyKey"], "k");
        assert_eq!(
            value["state"], 42,
            "unknown enum values are written as numbers"
        );
    }

    #[test]
    fn results_carry_an_output_or_an_error() {
        use api::list_results_response::Outcome;
        let text = api::ListResultsResponse {
            index: 0,
            outcome: Some(Outcome::Output(api::Payload {
                kind: Some(api::payload::Kind::Text("1".into())),
            })),
        };
        assert_eq!(
            serde_json::to_string(&result(&text)).expect("ok"),
            r#"{"index":"0","output":{"text":"1"}}"#
        );
        let binary = api::ListResultsResponse {
            index: 1,
            outcome: Some(Outcome::Output(api::Payload {
                kind: Some(api::payload::Kind::Binary(b"hello".to_vec())),
            })),
        };
        assert_eq!(
            result(&binary),
            json!({"index": "1", "output": {"binary": "aGVsbG8="}})
        );
        let error = api::ListResultsResponse {
            index: 3,
            outcome: Some(Outcome::Error("not JSON".into())),
        };
        assert_eq!(
            serde_json::to_string(&result(&error)).expect("ok"),
            r#"{"index":"3","error":"not JSON"}"#
        );
        let bare = api::ListResultsResponse {
            index: u64::MAX,
            outcome: None,
        };
        assert_eq!(result(&bare), json!({"index": "18446744073709551615"}));
    }

    #[test]
    fn tasks_use_camel_case() {
        let info = api::TaskInfo {
            name: "echo".into(),
            description: "returns each item".into(),
            params_schema: "{}".into(),
        };
        assert_eq!(
            task(&info),
            json!({"name": "echo", "description": "returns each item", "paramsSchema": "{}"})
        );
    }
}
