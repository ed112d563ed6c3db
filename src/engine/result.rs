//! Turning a compute result frame into feature vectors: one per entity, values as JSON text.
//!
//! Encoding is column by column (one typed loop per column) and rows are assembled as text,
//! so a million-cell result never builds a `serde_json::Value` per cell.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat};
use polars::prelude::*;

use crate::keys::EntityKey;
pub use crate::served::EncodedVector;

#[derive(Debug)]
pub struct EncodedResult {
    pub vectors: Vec<EncodedVector>,
    /// Output column -> type name, the feature version's recorded output schema.
    pub output_schema: BTreeMap<String, String>,
}

pub fn type_name(dtype: &DataType) -> String {
    match dtype {
        DataType::String => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date => "date".into(),
        DataType::Datetime(_, _) => "datetime".into(),
        d if d.is_integer() => "integer".into(),
        d if d.is_float() => "float".into(),
        DataType::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Check the result (has the entity key, one row per entity, no null key, not too many rows)
/// and encode it, in key order.
pub fn encode(
    frame: &DataFrame,
    entity_key: &str,
    max_rows: usize,
) -> Result<EncodedResult, String> {
    let checked = check(frame.clone(), entity_key, max_rows)?;
    Ok(EncodedResult {
        vectors: checked.encode_in_order(0, checked.order.len())?,
        output_schema: checked.output_schema,
    })
}

/// A result that passed the checks: the entity key as text, first (under its own name), then
/// the value columns; and the rows' order by key.
#[derive(Debug)]
pub struct Checked {
    /// As the query returned it: the snapshot file is written so.
    pub frame: DataFrame,
    /// Row numbers in key order: the vectors reach the database in index order (SQLite
    /// inserted 1M keys in random order 8x slower than in order).
    pub order: Vec<IdxSize>,
    pub key_name: String,
    /// Output column -> type name (the key with its type before it became text).
    pub output_schema: BTreeMap<String, String>,
}

impl Checked {
    /// The vectors of rows `start..start + len` in key order. Taking rows a part at a time
    /// keeps the whole result from being copied into key order at once.
    pub fn encode_in_order(&self, start: usize, len: usize) -> Result<Vec<EncodedVector>, String> {
        let end = (start + len).min(self.order.len());
        let indices = IdxCa::from_vec(
            PlSmallStr::from_static("order"),
            self.order[start.min(end)..end].to_vec(),
        );
        let part = self.frame.take(&indices).map_err(|e| e.to_string())?;
        encode_part(&part, &self.key_name)
    }
}

/// Check a result (not too many rows, has the entity key, no null key, one row per entity)
/// without encoding it. `entity_key` is the key as stored (`crate::keys::EntityKey`): one
/// column's text becomes the ids, several columns' values become one tuple id per row, in a
/// column named for the key that takes their place.
pub fn check(frame: DataFrame, entity_key: &str, max_rows: usize) -> Result<Checked, String> {
    if frame.height() > max_rows {
        return Err(format!(
            "the result has {} rows, more than the limit of {max_rows}",
            frame.height()
        ));
    }
    let key = EntityKey::from_stored(entity_key);
    let mut key_columns = Vec::with_capacity(key.columns().len());
    for name in key.columns() {
        let column = frame
            .column(name)
            .map_err(|_| format!("the result has no column '{name}' (the feature's entity_key)"))?;
        if column.null_count() > 0 {
            return Err(format!("the result has a null '{name}'"));
        }
        key_columns.push(column.clone());
    }
    let mut output_schema = BTreeMap::new();
    for column in frame.columns() {
        output_schema.insert(column.name().to_string(), type_name(column.dtype()));
    }
    let id_name = key.id_column();
    let ids = match key.single() {
        Some(_) => key_columns[0]
            .cast(&DataType::String)
            .map_err(|e| e.to_string())?,
        None => tuple_column(&key, &key_columns, frame.height(), IdForm::Stored)?.into_column(),
    };
    let mut columns = Vec::with_capacity(frame.width());
    columns.push(ids.with_name(PlSmallStr::from(id_name.as_str())));
    columns.extend(
        frame
            .columns()
            .iter()
            .filter(|c| !key.columns().iter().any(|k| k == c.name().as_str()))
            .cloned(),
    );
    let frame = DataFrame::new(frame.height(), columns).map_err(|e| e.to_string())?;
    // In key order a duplicate entity sits next to its twin.
    let text = frame
        .column(&id_name)
        .and_then(|c| c.str().cloned())
        .map_err(|e| e.to_string())?;
    let mut order: Vec<(&str, IdxSize)> = text
        .iter()
        .enumerate()
        .map(|(row, key)| (key.unwrap_or_default(), row as IdxSize))
        .collect();
    // Postgres' text cannot hold a NUL byte: refused on both backends, so a feature serves
    // the same ids wherever it is stored.
    if let Some((id, _)) = order.iter().find(|(id, _)| id.contains('\0')) {
        return Err(format!(
            "the result has an entity id with a NUL byte ({id:?}); entity ids are text without one"
        ));
    }
    order.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if let Some(pair) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!(
            "the result has more than one row for entity '{}'; the SQL must return one row per {} (GROUP BY {})",
            pair[0].0,
            match key.single() {
                Some(one) => format!("'{one}'"),
                None => key.describe(),
            },
            key.columns().join(", ")
        ));
    }
    let order = order.into_iter().map(|(_, row)| row).collect();
    Ok(Checked {
        frame,
        order,
        key_name: id_name,
        output_schema,
    })
}

/// A key column's cells as a tuple id takes them.
enum Cells {
    /// Written as digits: no text column is made (a training set's million rows).
    Int(Int64Chunked),
    Text(StringChunked),
}

/// Which text a tuple of key values becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// Its id, as stored and served (`crate::keys::tuple_id`).
    Stored,
    /// Its compact form, for joins inside a worker (`crate::keys::compact_of_id`).
    Compact,
}

/// One tuple id per row (`crate::keys`) from `key`'s columns (declared order, no nulls).
pub(crate) fn tuple_column(
    key: &EntityKey,
    columns: &[Column],
    height: usize,
    form: IdForm,
) -> Result<StringChunked, String> {
    let err = |e: PolarsError| e.to_string();
    let mut cells = Vec::with_capacity(columns.len());
    for column in columns {
        let dtype = column.dtype();
        // Integers that fit an i64 are written as their digits, as a cast to text would.
        let int = dtype.is_integer() && !matches!(dtype, DataType::UInt64);
        cells.push(match int {
            true => Cells::Int(
                column
                    .cast(&DataType::Int64)
                    .and_then(|c| c.i64().cloned())
                    .map_err(err)?
                    .rechunk()
                    .into_owned(),
            ),
            false => Cells::Text(
                column
                    .cast(&DataType::String)
                    .and_then(|c| c.str().cloned())
                    .map_err(err)?
                    .rechunk()
                    .into_owned(),
            ),
        });
    }
    enum Slice<'a> {
        Int(&'a [i64]),
        Text(&'a <StringType as PolarsDataType>::Array),
    }
    let mut slices = Vec::with_capacity(cells.len());
    for cell in &cells {
        let (slice, len) = match cell {
            Cells::Int(ca) => {
                let values = ca.cont_slice().map_err(err)?;
                (Slice::Int(values), values.len())
            }
            Cells::Text(ca) => match ca.downcast_iter().next() {
                Some(array) => (Slice::Text(array), array.len()),
                None => (Slice::Int(&[]), 0),
            },
        };
        if len != height {
            return Err(format!("a key column has {len} rows, not {height}"));
        }
        slices.push(slice);
    }
    let mut ids = StringChunkedBuilder::new(PlSmallStr::from_static("ids"), height);
    let mut digits = itoa::Buffer::new();
    match form {
        IdForm::Stored => {
            let mut writer = crate::keys::TupleWriter::new(key.columns());
            for row in 0..height {
                ids.append_value(writer.write_with(|i, out| match &slices[i] {
                    Slice::Int(values) => {
                        out.push('"');
                        out.push_str(digits.format(values[row]));
                        out.push('"');
                    }
                    Slice::Text(array) => crate::keys::push_json_str(out, array.value(row)),
                }));
            }
        }
        IdForm::Compact => {
            let order = crate::keys::name_order(key.columns());
            let mut buffer = String::new();
            for row in 0..height {
                buffer.clear();
                for i in &order {
                    let value = match &slices[*i] {
                        Slice::Int(values) => digits.format(values[row]),
                        Slice::Text(array) => array.value(row),
                    };
                    crate::keys::push_compact(&mut buffer, value);
                }
                ids.append_value(&buffer);
            }
        }
    }
    Ok(ids.finish())
}

/// Vectors of a checked frame's rows (key first, as text).
pub fn encode_part(frame: &DataFrame, key_name: &str) -> Result<Vec<EncodedVector>, String> {
    let key = frame.column(key_name).map_err(|e| e.to_string())?;
    let key = key.str().map_err(|e| e.to_string())?;
    let mut columns = Vec::with_capacity(frame.width());
    for column in frame
        .columns()
        .iter()
        .filter(|c| c.name().as_str() != key_name)
    {
        let name = serde_json::to_string(column.name().as_str()).map_err(|e| e.to_string())?;
        columns.push((name, encode_cells(column)?));
    }
    Ok(key
        .iter()
        .enumerate()
        .map(|(row, entity)| EncodedVector {
            entity_id: entity.unwrap_or_default().to_string(),
            values: row_object(&columns, row),
        })
        .collect())
}

/// A stored snapshot back as a frame (key column first).
pub fn snapshot_from_ipc(bytes: &[u8]) -> Result<DataFrame, String> {
    IpcReader::new(std::io::Cursor::new(bytes))
        .finish()
        .map_err(|e| e.to_string())
}

/// A frame's rows as JSON objects (for previews; not on a hot path).
pub fn rows_as_json(
    frame: &DataFrame,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
    let columns = frame
        .columns()
        .iter()
        .map(|c| {
            Ok((
                serde_json::to_string(c.name().as_str()).map_err(|e| e.to_string())?,
                encode_cells(c)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    (0..frame.height())
        .map(|row| serde_json::from_str(&row_object(&columns, row)).map_err(|e| e.to_string()))
        .collect()
}

/// One row as a JSON object, from (quoted name, encoded cells) columns.
pub(crate) fn row_object(columns: &[(String, Vec<String>)], row: usize) -> String {
    let mut text = String::with_capacity(16 * columns.len() + 2);
    text.push('{');
    for (i, (name, cells)) in columns.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(name);
        text.push(':');
        text.push_str(&cells[row]);
    }
    text.push('}');
    text
}

fn json_f64(v: f64) -> String {
    // NaN and infinities have no JSON form: they are served as null.
    serde_json::Number::from_f64(v).map_or_else(|| "null".to_string(), |n| n.to_string())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "null".to_string())
}

pub(crate) fn encode_cells(column: &Column) -> Result<Vec<String>, String> {
    let err = |e: PolarsError| e.to_string();
    let null = || "null".to_string();
    let dtype = column.dtype();
    Ok(match dtype {
        DataType::Boolean => column
            .bool()
            .map_err(err)?
            .iter()
            .map(|v| v.map_or_else(null, |b| b.to_string()))
            .collect(),
        d if d.is_integer() => {
            let c = column.cast(&DataType::Int64).map_err(err)?;
            c.i64()
                .map_err(err)?
                .iter()
                .map(|v| v.map_or_else(null, |i| i.to_string()))
                .collect()
        }
        d if d.is_float() => {
            let c = column.cast(&DataType::Float64).map_err(err)?;
            c.f64()
                .map_err(err)?
                .iter()
                .map(|v| v.map_or_else(null, json_f64))
                .collect()
        }
        DataType::Datetime(_, _) => {
            let c = column
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .and_then(|c| c.to_physical_repr().cast(&DataType::Int64))
                .map_err(err)?;
            c.i64()
                .map_err(err)?
                .iter()
                .map(|v| {
                    v.and_then(DateTime::from_timestamp_micros)
                        .map_or_else(null, |t| {
                            json_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                        })
                })
                .collect()
        }
        DataType::Null => vec![null(); column.len()],
        _ => {
            let c = column.cast(&DataType::String).map_err(|_| {
                format!(
                    "the result column '{}' has type {dtype}, which cannot be served",
                    column.name()
                )
            })?;
            c.str()
                .map_err(err)?
                .iter()
                .map(|v| v.map_or_else(null, json_str))
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_keep_their_text_form_and_nan_is_null() {
        let df = df!("id" => [1i64, 2], "x" => [f64::NAN, 2.5], "n" => [Some(1i64), None]).unwrap();
        let out = encode(&df, "id", 10).unwrap();
        assert_eq!(out.vectors[0].entity_id, "1");
        assert_eq!(out.vectors[0].values, r#"{"x":null,"n":1}"#);
        assert_eq!(out.vectors[1].values, r#"{"x":2.5,"n":null}"#);
        assert_eq!(out.output_schema["x"], "float");
        assert_eq!(out.output_schema["id"], "integer");
    }

    #[test]
    fn duplicate_entities_are_refused_naming_one() {
        let df = df!("id" => ["a", "b", "a"], "x" => [1, 2, 3]).unwrap();
        let err = encode(&df, "id", 10).unwrap_err();
        assert!(err.contains("entity 'a'"), "{err}");
    }

    #[test]
    fn a_missing_entity_key_is_refused() {
        let df = df!("x" => [1]).unwrap();
        assert!(encode(&df, "id", 10)
            .unwrap_err()
            .contains("no column 'id'"));
    }

    #[test]
    fn a_result_keyed_by_two_columns_is_one_vector_per_tuple() {
        let df = df!("user_id" => ["u1", "u1", "u2"], "shop" => [7, 8, 7], "v" => [1.0, 2.0, 3.0])
            .unwrap();
        let key = r#"["user_id","shop"]"#;
        let out = encode(&df, key, 10).unwrap();
        let ids: Vec<&str> = out.vectors.iter().map(|v| v.entity_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                r#"{"shop":"7","user_id":"u1"}"#,
                r#"{"shop":"7","user_id":"u2"}"#,
                r#"{"shop":"8","user_id":"u1"}"#
            ]
        );
        assert_eq!(out.vectors[0].values, r#"{"v":1.0}"#);
        assert_eq!(out.output_schema["shop"], "integer");
        let twice = df!("user_id" => ["u1", "u1"], "shop" => [7, 7]).unwrap();
        let refused = encode(&twice, key, 10).unwrap_err();
        assert!(refused.contains("GROUP BY user_id, shop"), "{refused}");
        let columns = [
            twice.column("user_id").unwrap().clone(),
            twice.column("shop").unwrap().clone(),
        ];
        let k = EntityKey::from_stored(key);
        let stored = tuple_column(&k, &columns, 2, IdForm::Stored).unwrap();
        let compact = tuple_column(&k, &columns, 2, IdForm::Compact).unwrap();
        assert_eq!(
            crate::keys::compact_of_id(stored.get(0).unwrap()).as_deref(),
            compact.get(0)
        );
        let null = df!("user_id" => [Some("u1"), None], "shop" => [7, 7]).unwrap();
        assert!(encode(&null, key, 10)
            .unwrap_err()
            .contains("null 'user_id'"));
    }

    #[test]
    fn too_many_rows_are_refused() {
        let df = df!("id" => ["a", "b"]).unwrap();
        assert!(encode(&df, "id", 1)
            .unwrap_err()
            .contains("more than the limit"));
    }
}
