//! A JSON array of row objects read straight into the schema's columns: each cell is parsed as
//! it comes and pushed onto its column, and no row is ever held as a map. The same checks and messages as rows parsed whole
//! (`TableSchema::frame_from_rows`), at about three times the speed: one `Map` per row (a
//! `String` and a tree node per key) was most of a bulk JSON upload's time.

use std::fmt;

use polars::prelude::DataFrame;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::schema::TableSchema;

/// Why a body could not become a frame.
#[derive(Debug, PartialEq)]
pub enum JsonRowsError {
    /// Not a JSON array of objects (a 422, in the words the whole-body parse gives).
    Unreadable(String),
    /// Rows that do not fit the schema (a 400).
    Invalid(String),
}

/// Rows from a body whose first non-blank byte is `[`.
pub fn frame_from_json_array(
    schema: &TableSchema,
    body: &[u8],
) -> Result<DataFrame, JsonRowsError> {
    let names: Vec<&str> = schema.column_names().collect();
    let mut columns = Columns {
        names: &names,
        cells: vec![Vec::new(); names.len()],
        present: vec![false; names.len()],
        seen: vec![false; names.len()],
        rows: 0,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = (&mut de)
        .deserialize_seq(RowsVisitor(&mut columns))
        .and_then(|()| de.end());
    if parsed.is_err() {
        return Err(JsonRowsError::Unreadable(
            malformed(body).unwrap_or_else(|| "expected an array of rows".into()),
        ));
    }
    schema
        .frame_from_cells(columns.rows, &columns.cells, &columns.present)
        .map_err(JsonRowsError::Invalid)
}

/// What parsing the body whole says is wrong with it, if anything, so that a malformed body
/// is answered in the same words whichever way it was read, and before anything else is
/// looked at (the table it names, say), as when bodies were parsed whole first.
pub fn malformed(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Err(e) if e.is_data() => Some(format!("Invalid body: {e}")),
        Err(e) => Some(format!("JSON decode error: {e}")),
        Ok(Value::Array(rows)) if rows.iter().any(|r| !r.is_object()) => {
            Some("every row must be a JSON object".into())
        }
        Ok(Value::Array(_)) => None,
        Ok(_) => Some("expected an array of rows".into()),
    }
}

struct Columns<'s> {
    names: &'s [&'s str],
    /// Each column's cells, one a row (null where a row lacks the key).
    cells: Vec<Vec<Value>>,
    /// Whether any row has the column.
    present: Vec<bool>,
    /// Whether the row being read has set the column yet.
    seen: Vec<bool>,
    rows: usize,
}

struct RowsVisitor<'c, 's>(&'c mut Columns<'s>);

impl<'de> Visitor<'de> for RowsVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RowSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct RowSeed<'c, 's>(&'c mut Columns<'s>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let c = self.0;
        c.seen.iter_mut().for_each(|s| *s = false);
        while let Some(column) = map.next_key_seed(KeySeed(c.names))? {
            let Some(i) = column else {
                // Parsed and dropped, not skipped: serde_json's skipping checks less (numbers
                // out of range, lone surrogates, nesting depth) than the whole-body parse did.
                map.next_value::<Value>()?;
                continue;
            };
            let value: Value = map.next_value()?;
            // A key given twice in one row: the last one counts, as in a parsed object.
            if c.seen[i] {
                if let Some(last) = c.cells[i].last_mut() {
                    *last = value;
                }
            } else {
                c.cells[i].push(value);
                c.seen[i] = true;
                c.present[i] = true;
            }
        }
        for (i, seen) in c.seen.iter().enumerate() {
            if !seen {
                c.cells[i].push(Value::Null);
            }
        }
        c.rows += 1;
        Ok(())
    }
}

/// A key, as the index of the column it names (`None`: not a column).
struct KeySeed<'s>(&'s [&'s str]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Map};

    use super::*;

    fn schema() -> TableSchema {
        let def: BTreeMap<String, String> = [
            ("user_id", "string"),
            ("amount", "float"),
            ("n", "integer"),
            ("day", "date"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        TableSchema::from_definition(&def).unwrap()
    }

    /// The same body read whole, as rows were before.
    fn whole(body: &[u8]) -> Result<DataFrame, JsonRowsError> {
        let rows: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            JsonRowsError::Unreadable(if e.is_data() {
                format!("Invalid body: {e}")
            } else {
                format!("JSON decode error: {e}")
            })
        })?;
        let rows: Vec<Map<String, Value>> = rows
            .into_iter()
            .map(|r| match r {
                Value::Object(o) => Ok(o),
                _ => Err(JsonRowsError::Unreadable(
                    "every row must be a JSON object".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        schema()
            .frame_from_rows(&rows)
            .map_err(JsonRowsError::Invalid)
    }

    fn same_as_whole(body: &str) {
        let streamed = frame_from_json_array(&schema(), body.as_bytes());
        let expected = whole(body.as_bytes());
        match (&streamed, &expected) {
            (Ok(a), Ok(b)) => assert!(a.equals_missing(b), "{body}\n{a}\n{b}"),
            _ => assert_eq!(streamed, expected, "{body}"),
        }
    }

    #[test]
    fn rows_read_into_columns_equal_rows_read_whole() {
        for body in [
            json!([{"user_id": "u1", "amount": 1.5, "n": 2, "day": "2024-01-02"},
                   {"user_id": "u2", "amount": 3, "n": null, "day": "2024-01-03", "extra": {"a": [1, 2]}}])
            .to_string(),
            // missing keys are nulls; a key given twice keeps the last
            r#"[{"user_id": "u1", "amount": 1.0, "n": 1, "day": "2024-01-01", "n": 7}, {"user_id": "u2"}]"#
                .to_string(),
            // escaped keys and values
            r#"[{"user_\u0069d": "a\"b", "amount": 2.5, "n": 3, "day": "2024-02-29"}]"#.to_string(),
        ] {
            same_as_whole(&body);
        }
    }

    #[test]
    fn bad_rows_get_the_messages_rows_read_whole_get() {
        for body in [
            "[]",
            r#"[{"user_id": "u1"}]"#,
            r#"[{"user_id": 1, "amount": "x", "n": 1.5, "day": "2024-13-01"}]"#,
            r#"[{"user_id": "u1", "amount": 1, "n": 1, "day": "2024-01-01"}, 3]"#,
            r#"[{"user_id": "u1", "amount": 1, "n": 1, "day": "2024-01-01"}"#,
            r#"[{"user_id": "u1", "amount": 1, "n": 1, "day": "2024-01-01"}] x"#,
            r#"[{"user_id": "u1", "amount": 1e400}]"#,
            // what a key outside the schema holds is checked too
            r#"[{"user_id": "u1", "amount": 1, "n": 1, "day": "2024-01-01", "x": 1e400}]"#,
            r#"[{"user_id": "u1", "amount": 1, "n": 1, "day": "2024-01-01", "x": "\uD800"}]"#,
        ] {
            same_as_whole(body);
        }
    }
}
