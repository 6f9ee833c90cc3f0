//! Parsing of the stream replies the broker reads, by hand: fred's generic map conversion
//! flattens one-element arrays, which loses the entry of a single-entry reply. Kept apart from
//! the commands so the wire shapes are tested on their own.
use fred::prelude::Value;

use super::{ChunkMessage, InlineChunk};
use crate::error::{Error, Result};

/// Stream message field holding the batch id.
pub(super) const FIELD_BATCH: &str = "batch";
/// Stream message field holding the chunk index.
pub(super) const FIELD_CHUNK: &str = "chunk";
/// Stream message field holding how many attempts at the chunk already failed (absent: 0).
pub(super) const FIELD_ATTEMPTS: &str = "attempts";
/// Stream message field holding the batch position of an inline chunk's first item.
pub(super) const FIELD_FIRST_ITEM: &str = "first";
/// Stream message field holding an inline chunk's items (absent: read them from MongoDB).
pub(super) const FIELD_ITEMS: &str = "items";

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "stream reply",
        detail: detail.into(),
    }
}

/// Parses an XREADGROUP reply. A nil reply (the block timed out) holds no messages. RESP2
/// answers `[[stream, entries]]`, RESP3 `{stream: entries}`. Every message read this way is on
/// its first delivery.
pub(super) fn parse_read_reply(reply: Value) -> Result<Vec<ChunkMessage>> {
    let per_stream: Vec<Value> = match reply {
        Value::Null => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.remove(1)),
                _ => Err(corrupt("stream is not a [name, entries] pair")),
            })
            .collect::<Result<_>>()?,
        Value::Map(streams) => streams.inner().into_values().collect(),
        _ => return Err(corrupt("reply is neither an array nor a map")),
    };
    let mut messages = Vec::new();
    for entries in per_stream {
        let Value::Array(entries) = entries else {
            return Err(corrupt("entries are not an array"));
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                return Err(corrupt("entry is not an [id, fields] pair"));
            };
            let [id, fields]: [Value; 2] = entry
                .try_into()
                .map_err(|_| corrupt("entry is not an [id, fields] pair"))?;
            messages.push(parse_entry(id, fields, 1)?);
        }
    }
    Ok(messages)
}

/// Parses the reclaim script's reply: `[next cursor, [[id, fields, deliveries], ...]]`.
pub(super) fn parse_reclaim_reply(reply: Value) -> Result<(String, Vec<ChunkMessage>)> {
    let Value::Array(parts) = reply else {
        return Err(corrupt("reclaim reply is not an array"));
    };
    let [cursor, entries]: [Value; 2] = parts
        .try_into()
        .map_err(|_| corrupt("reclaim reply is not [cursor, entries]"))?;
    let cursor = cursor
        .into_string()
        .ok_or_else(|| corrupt("reclaim cursor"))?;
    let entries = match entries {
        Value::Array(entries) => entries,
        Value::Null => Vec::new(),
        _ => return Err(corrupt("reclaimed entries are not an array")),
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return Err(corrupt("reclaimed entry is not an array"));
        };
        let [id, fields, deliveries]: [Value; 3] = entry
            .try_into()
            .map_err(|_| corrupt("reclaimed entry is not [id, fields, deliveries]"))?;
        let deliveries = deliveries
            .as_u64()
            .ok_or_else(|| corrupt("delivery count"))?;
        messages.push(parse_entry(id, fields, deliveries)?);
    }
    Ok((cursor, messages))
}

/// Builds a message from an entry's id and flat `[field, value, ...]` list.
fn parse_entry(id: Value, fields: Value, deliveries: u64) -> Result<ChunkMessage> {
    let entry_id = id.into_string().ok_or_else(|| corrupt("entry id"))?;
    let fields: Vec<Value> = match fields {
        Value::Array(flat) => flat,
        // A claimed entry that was deleted meanwhile has no fields.
        Value::Null => Vec::new(),
        _ => return Err(corrupt("fields are not an array")),
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0].as_str().as_deref() == Some(name))
            .map(|pair| &pair[1])
    };
    let text =
        |name: &str| field(name).and_then(|value| value.as_str().map(|text| text.into_owned()));
    let invalid = |detail: String| Error::Corrupt {
        what: "chunk message",
        detail,
    };
    let number = |name: &str| -> Result<Option<u64>> {
        text(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| invalid(format!("{entry_id} has an invalid {name}")))
            })
            .transpose()
    };
    let batch_id =
        text(FIELD_BATCH).ok_or_else(|| invalid(format!("{entry_id} has no {FIELD_BATCH}")))?;
    let chunk_index =
        number(FIELD_CHUNK)?.ok_or_else(|| invalid(format!("{entry_id} has no {FIELD_CHUNK}")))?;
    let failed_attempts = number(FIELD_ATTEMPTS)?.unwrap_or(0);
    let failed_attempts = u32::try_from(failed_attempts)
        .map_err(|_| invalid(format!("{entry_id} has an invalid {FIELD_ATTEMPTS}")))?;
    let inline = match (number(FIELD_FIRST_ITEM)?, field(FIELD_ITEMS)) {
        (Some(first_item), Some(items)) => {
            let bytes = items
                .as_bytes()
                .ok_or_else(|| invalid(format!("{entry_id} has invalid {FIELD_ITEMS}")))?;
            Some(InlineChunk::decode(first_item, bytes)?)
        }
        _ => None,
    };
    Ok(ChunkMessage {
        entry_id,
        batch_id,
        chunk_index,
        failed_attempts,
        deliveries,
        inline,
    })
}

/// Parses a `<batch id>|<chunk index>[|...]` reference.
pub(super) fn parse_reference(reference: &str) -> Option<(String, u64)> {
    let mut parts = reference.split('|');
    let batch_id = parts.next()?;
    let chunk_index = parts.next()?.parse().ok()?;
    Some((batch_id.to_owned(), chunk_index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(value: &str) -> Value {
        Value::String(value.into())
    }

    fn fields(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(name, value)| [bulk(name), bulk(value)])
                .collect(),
        )
    }

    fn entry(id: &str, batch: &str, chunk: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            fields(&[("batch", batch), ("chunk", chunk)]),
        ])
    }

    #[test]
    fn parses_single_and_multi_entry_replies() {
        let single = Value::Array(vec![Value::Array(vec![
            bulk("{p}:chunks"),
            Value::Array(vec![entry("1-0", "b1", "7")]),
        ])]);
        let expected = ChunkMessage {
            entry_id: "1-0".into(),
            batch_id: "b1".into(),
            chunk_index: 7,
            failed_attempts: 0,
            deliveries: 1,
            inline: None,
        };
        assert_eq!(parse_read_reply(single).ok(), Some(vec![expected]));
        let double = Value::Array(vec![Value::Array(vec![
            bulk("{p}:chunks"),
            Value::Array(vec![entry("1-0", "b1", "0"), entry("1-1", "b1", "1")]),
        ])]);
        assert_eq!(parse_read_reply(double).map(|m| m.len()).ok(), Some(2));
        assert_eq!(parse_read_reply(Value::Null).ok(), Some(Vec::new()));
    }

    #[test]
    fn reads_failed_attempts_and_deliveries_of_reclaimed_entries() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("2-0"),
                fields(&[("batch", "b"), ("chunk", "3"), ("attempts", "2")]),
                Value::Integer(4),
            ])]),
        ]);
        let (cursor, messages) = parse_reclaim_reply(reply).expect("valid reply");
        assert_eq!(cursor, "5-0");
        assert_eq!(
            messages
                .iter()
                .map(|m| (m.chunk_index, m.failed_attempts, m.deliveries))
                .collect::<Vec<_>>(),
            vec![(3, 2, 4)]
        );
    }

    #[test]
    fn reads_the_items_an_inline_chunk_carries() {
        let inline = InlineChunk {
            first_item: 40,
            items: vec![
                crate::model::Payload::Text("a".into()),
                crate::model::Payload::Binary(vec![0, 255]),
            ],
        };
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![
                bulk("batch"),
                bulk("b"),
                bulk("chunk"),
                bulk("20"),
                bulk("first"),
                bulk("40"),
                bulk("items"),
                Value::Bytes(inline.encode().into()),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry]),
        ])]);
        let messages = parse_read_reply(reply).expect("valid reply");
        assert_eq!(messages[0].inline, Some(inline));
        assert_eq!(messages[0].chunk_index, 20);
    }

    #[test]
    fn rejects_messages_without_their_fields() {
        let missing_chunk = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                fields(&[("batch", "b1")]),
            ])]),
        ])]);
        assert!(parse_read_reply(missing_chunk).is_err());
    }

    #[test]
    fn references_name_a_batch_and_a_chunk() {
        assert_eq!(parse_reference("b|4|2"), Some(("b".to_owned(), 4)));
        assert_eq!(parse_reference("b|4"), Some(("b".to_owned(), 4)));
        assert_eq!(parse_reference("b"), None);
        assert_eq!(parse_reference("b|x"), None);
    }
}
