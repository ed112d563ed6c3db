//! Point-in-time training sets as a worker builds them: the labelled rows parsed from the
//! request body, each feature's snapshot in force at each row gathered, and the answer
//! written (JSON, CSV, Parquet or an Arrow IPC file) a block of rows at a time as it is encoded.

use std::io::{Cursor, Write};
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::result::{encode_cells, row_object, IdForm};
use super::schema::parse_datetime_micros;
use crate::keys::EntityKey;

/// Rows per training set.
pub const MAX_ROWS: usize = 5_000_000;

/// Cells in the answer's feature columns (rows × value columns of every feature): past this a
/// training set is refused before it is gathered, whatever the worker's memory limit.
pub const MAX_CELLS: u64 = 200_000_000;

/// Rows per training set whose rows come from a raw table and whose answer is written as a
/// dataset: neither passes through a request or a response, so the worker's memory limit and
/// `MAX_CELLS` bound it rather than a body's size.
pub const MAX_TABLE_ROWS: usize = 50_000_000;

/// Rows per Parquet file of a training set written as a dataset.
pub const DATASET_PART_ROWS: usize = 1_000_000;

/// Rows encoded at a time for the JSON answer.
const JSON_BLOCK_ROWS: usize = 8192;

/// How rows arrive and how the answer leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Csv,
    Parquet,
    /// An Arrow IPC file: what a DataFrame client reads without decoding (pyarrow maps its
    /// buffers as they are), and what the worker writes without encoding.
    Arrow,
}

/// The labelled rows: entity, timestamp, and the other columns as they came (a feature's
/// key columns among them, by name).
pub struct Rows {
    /// The `entity_id` column, when the rows have one.
    pub entity: Option<StringChunked>,
    pub micros: Vec<i64>,
    pub extra: Extra,
}

/// The rows' other columns: JSON objects (a JSON upload) or a frame (CSV, Parquet, Arrow).
pub enum Extra {
    Json(Vec<Map<String, Value>>),
    Frame(DataFrame),
}

/// One feature's answer: which version, and per row its values (or why none).
pub struct FeatureColumns {
    pub reference: String,
    pub version_id: Option<i64>,
    pub unresolved: Option<String>,
    /// The value columns, one row per input row; `None` when unresolved.
    pub values: Option<DataFrame>,
    /// Whether each row found a value set (its entity in the snapshot in force).
    pub present: Vec<bool>,
}

impl FeatureColumns {
    /// The answer for the rows at `indices` (row numbers, in the order given).
    pub fn take(&self, indices: &[IdxSize]) -> Result<FeatureColumns, String> {
        let values = match &self.values {
            Some(values) => Some(
                values
                    .take(&IdxCa::from_vec(PlSmallStr::EMPTY, indices.to_vec()))
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok(FeatureColumns {
            reference: self.reference.clone(),
            version_id: self.version_id,
            unresolved: self.unresolved.clone(),
            values,
            present: match self.present.is_empty() {
                true => Vec::new(),
                false => indices.iter().map(|&i| self.present[i as usize]).collect(),
            },
        })
    }
}

/// The JSON answer puts each row's values under `features`, beside the row's own columns.
fn reserved_features() -> String {
    "the rows have a column named 'features', which the answer uses for the feature values; rename it".into()
}

/// Refuse an empty or oversized set of rows.
pub fn check_row_count(n: usize) -> Result<(), String> {
    check_rows_within(n, MAX_ROWS)
}

fn check_rows_within(n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!(
            "the training set has {n} rows; at most {max} are allowed"
        ));
    }
    if n == 0 {
        return Err("rows must not be empty".into());
    }
    Ok(())
}

impl Rows {
    /// Each row's id for a feature keyed by `entity_key` (as stored, `crate::keys`; `None`:
    /// by `entity_id`). A feature keyed by one column takes `entity_id` when the rows have
    /// it, else the column of its name; by several, the tuple of its columns in `form`: the
    /// compact one `super::history::Indexed::for_join` indexes snapshots by, or the stored
    /// one an aggregation feature's events are keyed by.
    pub fn ids(&self, entity_key: Option<&str>, form: IdForm) -> Result<StringChunked, String> {
        let key = EntityKey::from_stored(entity_key.unwrap_or("entity_id"));
        if let (Some(entity), Some(_)) = (&self.entity, key.single()) {
            return Ok(entity.clone());
        }
        if let Some(one) = key.single() {
            return self
                .text_column(one)
                .map_err(|why| match self.has_column(one) {
                    true => why,
                    false => format!("the rows have no 'entity_id' column, nor '{one}'"),
                });
        }
        let mut columns = Vec::with_capacity(key.columns().len());
        for name in key.columns() {
            columns.push(
                self.key_column(name).map_err(|why| {
                    format!("{why} (a feature here is keyed by {})", key.describe())
                })?,
            );
        }
        super::result::tuple_column(&key, &columns, self.micros.len(), form)
    }

    /// The rows at `indices` (row numbers, in the order given).
    pub fn take(&self, indices: &[IdxSize]) -> Result<Rows, String> {
        let at = IdxCa::from_vec(PlSmallStr::EMPTY, indices.to_vec());
        let err = |e: PolarsError| e.to_string();
        Ok(Rows {
            entity: match &self.entity {
                Some(entity) => Some(entity.take(&at).map_err(err)?),
                None => None,
            },
            micros: indices.iter().map(|&i| self.micros[i as usize]).collect(),
            extra: match &self.extra {
                Extra::Frame(frame) => Extra::Frame(frame.take(&at).map_err(err)?),
                Extra::Json(rows) => {
                    Extra::Json(indices.iter().map(|&i| rows[i as usize].clone()).collect())
                }
            },
        })
    }

    fn has_column(&self, name: &str) -> bool {
        match &self.extra {
            Extra::Frame(frame) => frame.column(name).is_ok(),
            Extra::Json(rows) => rows.first().is_some_and(|r| r.contains_key(name)),
        }
    }

    /// One of the other columns as text, with no nulls: a key column.
    fn text_column(&self, name: &str) -> Result<StringChunked, String> {
        let column = self.key_column(name)?;
        let text = column
            .cast(&DataType::String)
            .map_err(|e| format!("{name}: {e}"))?;
        text.str().cloned().map_err(|e| e.to_string())
    }

    /// One of the other columns, with no nulls: a key column (JSON rows' values as text).
    fn key_column(&self, name: &str) -> Result<Column, String> {
        match &self.extra {
            Extra::Frame(frame) => {
                let column = frame
                    .column(name)
                    .map_err(|_| format!("the rows have no '{name}' column"))?;
                if column.null_count() > 0 {
                    return Err(format!("{name} must not be null"));
                }
                Ok(column.clone())
            }
            Extra::Json(rows) => {
                let mut text = Vec::with_capacity(rows.len());
                for (i, row) in rows.iter().enumerate() {
                    text.push(match row.get(name) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                        Some(_) => {
                            return Err(format!("rows[{i}]: {name} must be text or an integer"))
                        }
                        None => return Err(format!("rows[{i}] has no '{name}'")),
                    });
                }
                Ok(
                    StringChunked::from_iter_values(name.into(), text.iter().map(String::as_str))
                        .into_column(),
                )
            }
        }
    }
}

/// The rows of a request body. Every error is the client's, worded for them. `text_columns`
/// (the features' key columns) are read as text from CSV, so that "00123" stays "00123".
pub fn parse_rows(body: &[u8], format: Format, text_columns: &[String]) -> Result<Rows, String> {
    match format {
        Format::Json => {
            #[derive(Deserialize)]
            struct Body {
                rows: Vec<Map<String, Value>>,
            }
            let body: Body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            json_rows(body.rows)
        }
        Format::Csv => frame_rows_of_body(
            CsvReadOptions::default()
                .with_has_header(true)
                // Ids are text: "00123" must not become the number 123.
                .with_schema_overwrite(Some(Arc::new(Schema::from_iter(
                    std::iter::once("entity_id")
                        .chain(text_columns.iter().map(String::as_str))
                        .map(|name| Field::new(name.into(), DataType::String)),
                ))))
                .into_reader_with_file_handle(Cursor::new(body))
                .finish()
                .map_err(|e| format!("CSV does not parse: {e}"))?,
        ),
        Format::Parquet => frame_rows_of_body(
            ParquetReader::new(Cursor::new(body))
                .finish()
                .map_err(|e| format!("Parquet does not parse: {e}"))?,
        ),
        Format::Arrow => frame_rows_of_body(
            IpcReader::new(Cursor::new(body))
                .finish()
                .map_err(|e| format!("the Arrow IPC file does not parse: {e}"))?,
        ),
    }
}

fn frame_rows_of_body(frame: DataFrame) -> Result<Rows, String> {
    frame_rows(frame, MAX_ROWS)
}

fn json_rows(rows: Vec<Map<String, Value>>) -> Result<Rows, String> {
    check_row_count(rows.len())?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut micros = Vec::with_capacity(rows.len());
    let mut extra = Vec::with_capacity(rows.len());
    for (i, mut row) in rows.into_iter().enumerate() {
        let id = match row.remove("entity_id") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            None if i == 0 || ids.is_empty() => None,
            None => {
                return Err(format!(
                    "rows[{i}] has no entity_id, which the first row has"
                ))
            }
            _ => return Err(format!("rows[{i}]: entity_id must be a string")),
        };
        if i > 0 && id.is_some() && ids.is_empty() {
            return Err(format!(
                "rows[{i}] has an entity_id, which the first row has not"
            ));
        }
        let ts = match row.remove("timestamp") {
            Some(Value::String(s)) => parse_datetime_micros(&s),
            _ => None,
        }
        .ok_or_else(|| {
            format!("rows[{i}]: timestamp must be an RFC 3339 date-time like 2024-01-31T00:00:00Z")
        })?;
        if row.contains_key("features") {
            return Err(reserved_features());
        }
        ids.extend(id);
        micros.push(ts);
        extra.push(row);
    }
    Ok(Rows {
        entity: (!ids.is_empty()).then(|| {
            StringChunked::from_iter_values("entity_id".into(), ids.iter().map(String::as_str))
        }),
        micros,
        extra: Extra::Json(extra),
    })
}

/// The rows of a label table, read whole: `time_column` is each row's timestamp (and is
/// called `timestamp` in the answer).
pub fn table_rows(mut frame: DataFrame, time_column: &str) -> Result<Rows, String> {
    if frame.height() == 0 {
        return Err("the label table has no rows".into());
    }
    if time_column != "timestamp" {
        if frame.column("timestamp").is_ok() {
            return Err(format!(
                "the label table has a 'timestamp' column beside its time column '{time_column}'"
            ));
        }
        frame
            .rename(time_column, "timestamp".into())
            .map_err(|_| format!("the label table has no '{time_column}' column"))?;
    }
    frame_rows(frame, MAX_TABLE_ROWS)
}

fn frame_rows(frame: DataFrame, max_rows: usize) -> Result<Rows, String> {
    check_rows_within(frame.height(), max_rows)?;
    if frame.column("features").is_ok() {
        return Err(reserved_features());
    }
    let column = |name: &str| {
        frame
            .column(name)
            .map_err(|_| format!("the rows have no '{name}' column"))
    };
    let entity = match frame.column("entity_id") {
        Ok(entity) => {
            let entity = entity
                .cast(&DataType::String)
                .map_err(|e| format!("entity_id: {e}"))?;
            if entity.null_count() > 0 {
                return Err("entity_id must not be null".into());
            }
            Some(entity.str().map_err(|e| e.to_string())?.clone())
        }
        // The features' key columns name the entities.
        Err(_) => None,
    };
    let micros = timestamps(column("timestamp")?)?;
    let extra = frame
        .select(
            frame
                .get_column_names()
                .into_iter()
                .filter(|n| n.as_str() != "entity_id" && n.as_str() != "timestamp")
                .cloned()
                .collect::<Vec<_>>(),
        )
        .map_err(|e| e.to_string())?;
    Ok(Rows {
        entity,
        micros,
        extra: Extra::Frame(extra),
    })
}

/// A timestamp column as microseconds: datetimes of any unit, dates (their midnight), or text
/// parsed as JSON rows' are.
fn timestamps(c: &Column) -> Result<Vec<i64>, String> {
    let bad =
        |i: usize| format!("row {i}: timestamp must be a date-time like 2024-01-31T00:00:00Z");
    let err = |e: PolarsError| e.to_string();
    match c.dtype() {
        DataType::Datetime(_, _) => {
            let us = c
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .and_then(|c| c.to_physical_repr().cast(&DataType::Int64))
                .map_err(err)?;
            let us = us.i64().map_err(err)?;
            us.iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| bad(i)))
                .collect()
        }
        DataType::Date => {
            let days = c.to_physical_repr();
            let days = days.i32().map_err(err)?;
            days.iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d as i64 * 86_400_000_000).ok_or_else(|| bad(i)))
                .collect()
        }
        DataType::String => c
            .str()
            .map_err(err)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.and_then(parse_datetime_micros).ok_or_else(|| bad(i)))
            .collect(),
        other => Err(format!(
            "timestamp is {other}; send a datetime, a date or RFC 3339 text"
        )),
    }
}

/// Write the answer: the JSON form, or the flat table as CSV, Parquet or an Arrow IPC file.
pub fn write_answer(
    out: &mut impl Write,
    format: Format,
    rows: &Rows,
    features: Vec<FeatureColumns>,
) -> Result<(), String> {
    match format {
        Format::Json => write_json(out, rows, &features),
        Format::Csv => {
            let mut frame = to_frame(rows, features)?;
            CsvWriter::new(out)
                .finish(&mut frame)
                .map_err(|e| e.to_string())
        }
        Format::Parquet => {
            let mut frame = to_frame(rows, features)?;
            // LZ4: the answer is read once, right away, and writing it is what the client
            // waits for (bench_history, 1M rows x 13 columns: 0.31 s a call with zstd, 0.24 s).
            ParquetWriter::new(out)
                .with_compression(ParquetCompression::Lz4Raw)
                .finish(&mut frame)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Format::Arrow => {
            let mut frame = to_frame(rows, features)?;
            // Uncompressed, and in the oldest layout (large strings rather than string views), so
            // that any Arrow reader takes it and nothing is encoded on either side: 1M rows x 12
            // columns go over loopback faster than LZ4 encodes them.
            IpcWriter::new(out)
                .with_compat_level(CompatLevel::oldest())
                .finish(&mut frame)
                .map_err(|e| e.to_string())
        }
    }
}

/// The JSON answer: one object per input row, in input order, encoded a block at a time.
fn write_json(
    out: &mut impl Write,
    rows: &Rows,
    features: &[FeatureColumns],
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut versions = Map::new();
    let mut unresolved = Map::new();
    for f in features {
        versions.insert(
            f.reference.clone(),
            f.version_id.map_or(Value::Null, Value::from),
        );
        if let Some(reason) = &f.unresolved {
            unresolved.insert(f.reference.clone(), Value::from(reason.clone()));
        }
    }
    let names = features
        .iter()
        .map(|f| serde_json::to_string(&f.reference))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    write!(
        out,
        r#"{{"versions":{},"unresolved":{},"rows":["#,
        Value::Object(versions),
        Value::Object(unresolved)
    )
    .map_err(io)?;
    let n = rows.micros.len();
    let mut text = String::new();
    for start in (0..n).step_by(JSON_BLOCK_ROWS) {
        let len = JSON_BLOCK_ROWS.min(n - start);
        let encoded = features
            .iter()
            .map(|f| match &f.values {
                Some(frame) => encode_frame(&frame.slice(start as i64, len)),
                None => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A CSV, Parquet or Arrow upload's other columns come back as sent in the JSON answer too.
        let extra_columns = match &rows.extra {
            Extra::Frame(frame) => encode_frame(&frame.slice(start as i64, len))?,
            Extra::Json(_) => Vec::new(),
        };
        text.clear();
        for i in start..start + len {
            if i > 0 {
                text.push(',');
            }
            text.push('{');
            if let Some(entity) = &rows.entity {
                text.push_str(r#""entity_id":"#);
                text.push_str(
                    &serde_json::to_string(entity.get(i).unwrap_or(""))
                        .map_err(|e| e.to_string())?,
                );
                text.push(',');
            }
            text.push_str(r#""timestamp":""#);
            text.push_str(&timestamp_text(rows.micros[i]));
            text.push('"');
            match &rows.extra {
                Extra::Json(extra) => {
                    for (k, v) in &extra[i] {
                        text.push(',');
                        text.push_str(&serde_json::to_string(k).map_err(|e| e.to_string())?);
                        text.push(':');
                        text.push_str(&v.to_string());
                    }
                }
                Extra::Frame(_) => {
                    for (name, cells) in &extra_columns {
                        text.push(',');
                        text.push_str(name);
                        text.push(':');
                        text.push_str(&cells[i - start]);
                    }
                }
            }
            text.push_str(r#","features":{"#);
            for (j, f) in features.iter().enumerate() {
                if j > 0 {
                    text.push(',');
                }
                text.push_str(&names[j]);
                text.push(':');
                if f.present.get(i).copied().unwrap_or(false) {
                    text.push_str(&row_object(&encoded[j], i - start));
                } else {
                    text.push_str("null");
                }
            }
            text.push_str("}}");
        }
        out.write_all(text.as_bytes()).map_err(io)?;
    }
    out.write_all(b"]}").map_err(io)
}

/// Each column as (quoted name, JSON text per row).
fn encode_frame(frame: &DataFrame) -> Result<Vec<(String, Vec<String>)>, String> {
    frame
        .columns()
        .iter()
        .map(|c| {
            let name = serde_json::to_string(c.name().as_str()).map_err(|e| e.to_string())?;
            Ok((name, encode_cells(c)?))
        })
        .collect()
}

/// The flat table: entity_id (when sent), timestamp, the other input columns (key columns
/// among them), then `<ref>__<column>`.
pub fn to_frame(rows: &Rows, features: Vec<FeatureColumns>) -> Result<DataFrame, String> {
    let n = rows.micros.len();
    let mut columns: Vec<Column> = Vec::new();
    if let Some(entity) = &rows.entity {
        columns.push(entity.clone().with_name("entity_id".into()).into_column());
    }
    let ts = Int64Chunked::from_vec("timestamp".into(), rows.micros.clone())
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    columns.push(ts.into_column());
    match &rows.extra {
        Extra::Frame(frame) => columns.extend(frame.columns().iter().cloned()),
        Extra::Json(extra) => columns.extend(json_columns(extra)),
    }
    for f in features {
        let Some(values) = f.values else {
            return Err(format!(
                "Feature '{}' did not resolve: {}",
                f.reference,
                f.unresolved.unwrap_or_default()
            ));
        };
        for c in values.columns() {
            let name = format!("{}__{}", f.reference, c.name());
            columns.push(c.clone().with_name(name.into()));
        }
    }
    DataFrame::new(n, columns).map_err(|e| e.to_string())
}

fn timestamp_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| crate::times::format_ts(&t))
        .unwrap_or_default()
}

/// The JSON rows' other columns as typed columns: numbers, booleans and strings as such,
/// anything else as JSON text.
fn json_columns(extra: &[Map<String, Value>]) -> Vec<Column> {
    let mut names: Vec<&String> = Vec::new();
    for row in extra {
        for k in row.keys() {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let values: Vec<&Value> = extra
                .iter()
                .map(|r| r.get(name).unwrap_or(&Value::Null))
                .collect();
            let kinds = |f: fn(&Value) -> bool| values.iter().all(|v| v.is_null() || f(v));
            if kinds(|v| v.is_i64()) {
                Column::new(
                    name.into(),
                    values.iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
                )
            } else if kinds(Value::is_number) {
                Column::new(
                    name.into(),
                    values.iter().map(|v| v.as_f64()).collect::<Vec<_>>(),
                )
            } else if kinds(Value::is_boolean) {
                Column::new(
                    name.into(),
                    values.iter().map(|v| v.as_bool()).collect::<Vec<_>>(),
                )
            } else {
                let text: Vec<Option<String>> = values
                    .iter()
                    .map(|v| match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect();
                Column::new(name.into(), text)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_keep_their_other_columns_and_refuse_a_features_column() {
        let body = br#"{"features":["f"],"rows":[{"entity_id":"u1","timestamp":"2024-01-02T00:00:00Z","label":1}]}"#;
        let rows = parse_rows(body, Format::Json, &[]).unwrap();
        assert_eq!(rows.micros, [1_704_153_600_000_000]);
        assert!(matches!(&rows.extra, Extra::Json(e) if e[0]["label"] == 1));
        let bad =
            br#"{"rows":[{"entity_id":"u1","timestamp":"2024-01-02T00:00:00Z","features":1}]}"#;
        let refused = parse_rows(bad, Format::Json, &[]).err().unwrap_or_default();
        assert!(refused.contains("'features'"), "{refused}");
    }

    #[test]
    fn a_label_tables_time_column_becomes_the_rows_timestamp() {
        let frame = || {
            df!("entity_id" => ["u1", "u2"], "seen" => ["2024-01-02T00:00:00Z", "2024-01-03"],
                "label" => [1i64, 0])
            .unwrap()
        };
        let rows = table_rows(frame(), "seen").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.micros, [1_704_153_600_000_000, 1_704_240_000_000_000]);
        assert!(matches!(&rows.extra, Extra::Frame(f)
            if f.get_column_names() == ["label"]));
        let missing = table_rows(frame(), "when").err().unwrap_or_default();
        assert!(missing.contains("'when'"), "{missing}");
        let both = frame()
            .hstack(&[Column::new("timestamp".into(), ["x", "y"])])
            .unwrap();
        let refused = table_rows(both, "seen").err().unwrap_or_default();
        assert!(refused.contains("'timestamp'"), "{refused}");
        let empty = table_rows(frame().slice(0, 0), "seen")
            .err()
            .unwrap_or_default();
        assert!(empty.contains("no rows"), "{empty}");
    }

    #[test]
    fn rows_name_their_entities_by_each_features_key_columns() {
        let key = r#"["user_id","shop"]"#;
        let json = br#"{"rows":[{"user_id":"u1","shop":7,"timestamp":"2024-01-02T00:00:00Z"}]}"#;
        let rows = parse_rows(json, Format::Json, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(rows.entity.is_none());
        // Tuples in the compact form a snapshot is indexed by for the join.
        let ids = rows.ids(Some(key), IdForm::Compact).unwrap();
        let id = crate::keys::compact_of_id(r#"{"shop":"7","user_id":"u1"}"#);
        assert_eq!(ids.get(0), id.as_deref());
        assert_eq!(
            rows.ids(Some("user_id"), IdForm::Compact).unwrap().get(0),
            Some("u1")
        );
        let missing = rows.ids(Some("merchant_id"), IdForm::Compact).unwrap_err();
        assert!(missing.contains("nor 'merchant_id'"), "{missing}");
        let missing = rows
            .ids(Some(r#"["user_id","merchant_id"]"#), IdForm::Compact)
            .unwrap_err();
        assert!(missing.contains("'merchant_id'"), "{missing}");

        let csv = b"user_id,shop,timestamp\n007,0042,2024-01-02T00:00:00Z\n";
        let shop = ["shop".to_string()];
        let rows = parse_rows(csv, Format::Csv, &shop).unwrap_or_else(|e| panic!("{e}"));
        let ids = rows.ids(Some(key), IdForm::Compact).unwrap();
        let id = crate::keys::compact_of_id(r#"{"shop":"0042","user_id":"7"}"#);
        assert_eq!(ids.get(0), id.as_deref());
    }

    #[test]
    fn csv_ids_stay_text_with_their_leading_zeros() {
        let rows = parse_rows(
            b"entity_id,timestamp\n00123,2024-01-02T00:00:00Z\n",
            Format::Csv,
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows.ids(None, IdForm::Compact).unwrap().get(0),
            Some("00123")
        );
    }

    #[test]
    fn timestamps_without_an_offset_are_utc_in_every_format() {
        let noon = 1_704_196_800_000_000; // 2024-01-02T12:00:00Z
        let json = br#"{"rows":[{"entity_id":"u1","timestamp":"2024-01-02T12:00:00"},
            {"entity_id":"u2","timestamp":"2024-01-02T13:00:00+01:00"}]}"#;
        let rows = parse_rows(json, Format::Json, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.micros, [noon, noon]);
        let csv = b"entity_id,timestamp\nu1,2024-01-02T12:00:00\nu2,2024-01-02 12:00:00\n";
        let rows = parse_rows(csv, Format::Csv, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.micros, [noon, noon]);

        let naive = Int64Chunked::from_vec("timestamp".into(), vec![noon])
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column();
        let zoned = Int64Chunked::from_vec("timestamp".into(), vec![noon])
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column();
        for ts in [naive, zoned] {
            let mut frame =
                DataFrame::new(1, vec![Column::new("entity_id".into(), [123_i64]), ts]).unwrap();
            let mut parquet = Vec::new();
            ParquetWriter::new(&mut parquet).finish(&mut frame).unwrap();
            let rows = parse_rows(&parquet, Format::Parquet, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rows.micros, [noon]);
            assert_eq!(rows.ids(None, IdForm::Compact).unwrap().get(0), Some("123"));
        }
    }

    #[test]
    fn the_json_answer_is_the_same_across_block_boundaries() {
        let n = JSON_BLOCK_ROWS + 3;
        let rows = Rows {
            entity: Some(StringChunked::from_iter_values(
                "entity_id".into(),
                (0..n).map(|i| format!("u{i}")),
            )),
            micros: vec![0; n],
            extra: Extra::Json(vec![Map::new(); n]),
        };
        let values = df!("v" => (0..n as i64).collect::<Vec<_>>()).unwrap();
        let features = vec![FeatureColumns {
            reference: "f".into(),
            version_id: Some(1),
            unresolved: None,
            values: Some(values),
            present: (0..n).map(|i| i % 2 == 0).collect(),
        }];
        let mut out = Vec::new();
        write_answer(&mut out, Format::Json, &rows, features).unwrap();
        let answer: Value = serde_json::from_slice(&out).unwrap();
        let last = &answer["rows"][n - 1];
        assert_eq!(last["entity_id"], format!("u{}", n - 1));
        assert_eq!(last["features"]["f"]["v"], (n - 1) as i64);
        assert_eq!(answer["rows"][n - 2]["features"]["f"], Value::Null);
        assert_eq!(answer["versions"]["f"], 1);
    }
}
