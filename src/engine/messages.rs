//! Stream messages as rows: each message is one JSON object, checked against the table's schema
//! as an ingested row is; a message that does not fit is set aside with its reason, never
//! the batch with it.

use bytes::Bytes;
use polars::prelude::*;
use serde_json::{Map, Value};

use super::schema::TableSchema;

/// One message as the source gave it.
#[derive(Debug, Clone)]
pub struct Message {
    pub offset: i64,
    pub payload: Bytes,
}

/// A message set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub offset: i64,
    pub reason: String,
    pub payload: Bytes,
}

/// A batch sorted: the rows of the messages that fit (in message order) with their offsets,
/// and the others.
#[derive(Debug, Default)]
pub struct Sorted {
    pub rows: Option<DataFrame>,
    pub offsets: Vec<i64>,
    pub rejected: Vec<Rejected>,
}

/// Sort `messages` into rows and rejected messages. The common case, every message fits,
/// costs one frame for the batch; only a batch with a bad value checks its rows one by one.
pub fn sort(schema: &TableSchema, messages: &[Message]) -> Result<Sorted, String> {
    let mut rejected = Vec::new();
    let mut fitting: Vec<(&Message, Map<String, Value>)> = Vec::with_capacity(messages.len());
    for message in messages {
        match read(schema, &message.payload) {
            Ok(row) => fitting.push((message, row)),
            Err(reason) => rejected.push(Rejected {
                offset: message.offset,
                reason,
                payload: message.payload.clone(),
            }),
        }
    }
    if fitting.is_empty() {
        return Ok(Sorted {
            rejected,
            ..Sorted::default()
        });
    }
    let (mut offsets, mut rows): (Vec<i64>, Vec<Map<String, Value>>) = fitting
        .iter()
        .map(|(m, row)| (m.offset, row.clone()))
        .unzip();
    let frame = match schema.frame_from_rows(&rows) {
        Ok(frame) => frame,
        Err(_) => {
            (offsets, rows) = (Vec::new(), Vec::new());
            for (message, row) in fitting {
                match schema.frame_from_rows(std::slice::from_ref(&row)) {
                    Ok(_) => {
                        offsets.push(message.offset);
                        rows.push(row);
                    }
                    Err(reason) => rejected.push(Rejected {
                        offset: message.offset,
                        reason,
                        payload: message.payload.clone(),
                    }),
                }
            }
            rejected.sort_by_key(|r| r.offset);
            if rows.is_empty() {
                return Ok(Sorted {
                    rejected,
                    ..Sorted::default()
                });
            }
            // Every row fitted alone, so together they fit: a failure here is no message's
            // fault, and none is set aside for it.
            schema.frame_from_rows(&rows)?
        }
    };
    Ok(Sorted {
        rows: Some(frame),
        offsets,
        rejected,
    })
}

/// One message as a row: a JSON object holding every column of the schema (null where a value
/// is unknown: a key left out is more likely a producer's mistake than a null).
fn read(schema: &TableSchema, payload: &[u8]) -> Result<Map<String, Value>, String> {
    let row = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(row)) => row,
        Ok(_) => return Err("the message is not a JSON object".into()),
        Err(e) => return Err(format!("the message is not valid JSON: {e}")),
    };
    let missing: Vec<&str> = schema
        .column_names()
        .filter(|c| !row.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(format!("Missing required columns: {}", missing.join(", ")));
    }
    Ok(row)
}

/// The rejected messages as rows of the rejected dataset (`offline::create_rejected`).
pub fn rejected_frame(
    partition: &str,
    rejected: &[Rejected],
    received_at_micros: i64,
) -> PolarsResult<DataFrame> {
    let n = rejected.len();
    let payloads: Vec<&[u8]> = rejected.iter().map(|r| r.payload.as_ref()).collect();
    DataFrame::new(
        n,
        vec![
            Column::new("partition".into(), vec![partition; n]),
            Column::new(
                "offset".into(),
                rejected.iter().map(|r| r.offset).collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                rejected
                    .iter()
                    .map(|r| r.reason.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new("payload".into(), payloads),
            Column::new("received_at".into(), vec![received_at_micros; n])
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))?,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        let def = [
            ("user_id".to_string(), "string".to_string()),
            ("amount".to_string(), "float".to_string()),
        ]
        .into();
        TableSchema::from_definition(&def).unwrap()
    }

    fn message(offset: i64, payload: &str) -> Message {
        Message {
            offset,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    #[test]
    fn messages_that_fit_become_rows_in_order() {
        let sorted = sort(
            &schema(),
            &[
                message(1, r#"{"user_id": "a", "amount": 1.5}"#),
                message(2, r#"{"user_id": "b", "amount": null, "extra": 1}"#),
            ],
        )
        .unwrap();
        assert!(sorted.rejected.is_empty());
        let rows = sorted.rows.unwrap();
        assert_eq!(rows.height(), 2);
        let users: Vec<Option<&str>> = rows
            .column("user_id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(users, [Some("a"), Some("b")]);
    }

    #[test]
    fn each_bad_message_is_set_aside_with_its_reason_and_the_rest_are_kept() {
        let sorted = sort(
            &schema(),
            &[
                message(1, r#"{"user_id": "a", "amount": 1}"#),
                message(2, "not json"),
                message(3, r#"{"user_id": "c"}"#),
                message(4, r#"{"user_id": "d", "amount": "x"}"#),
                message(5, r#"[1, 2]"#),
                message(6, r#"{"user_id": "f", "amount": 2}"#),
            ],
        )
        .unwrap();
        assert_eq!(sorted.rows.unwrap().height(), 2);
        assert_eq!(sorted.offsets, [1, 6]);
        let reasons: Vec<(i64, &str)> = sorted
            .rejected
            .iter()
            .map(|r| (r.offset, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4);
        assert_eq!(reasons[0].0, 2);
        assert!(reasons[0].1.starts_with("the message is not valid JSON"));
        assert_eq!(reasons[1], (3, "Missing required columns: amount"));
        assert_eq!(reasons[2], (4, "Column amount should be float, got str"));
        assert_eq!(reasons[3], (5, "the message is not a JSON object"));
        assert_eq!(sorted.rejected[0].payload.as_ref(), b"not json");
    }

    #[test]
    fn a_batch_of_only_bad_messages_has_no_rows() {
        let sorted = sort(&schema(), &[message(7, "{}")]).unwrap();
        assert!(sorted.rows.is_none());
        assert_eq!(sorted.rejected.len(), 1);
    }

    #[test]
    fn the_rejected_frame_keeps_the_bytes_as_they_came() {
        let rejected = [Rejected {
            offset: 9,
            reason: "bad".into(),
            payload: Bytes::from_static(&[0xff, 0x00, 0x7b]),
        }];
        let frame = rejected_frame("TX", &rejected, 1_000_000).unwrap();
        assert_eq!(frame.height(), 1);
        let payload = frame
            .column("payload")
            .unwrap()
            .binary()
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(payload, &[0xff, 0x00, 0x7b]);
    }
}
