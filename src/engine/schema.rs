//! Column types of a raw table and the conversion of JSON rows into a typed polars frame.
//!
//! Validation messages match the original service ("Missing required columns: a, b",
//! "Column x should be float, got str") so clients that parse them keep working.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;
use serde_json::{Map, Value};

/// Longest accepted table or column name (Postgres' identifier limit).
pub const MAX_IDENTIFIER_LEN: usize = 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Integer,
    Float,
    Boolean,
    Date,
    Datetime,
}

/// Every accepted spelling of a column type (matched case-insensitively, surrounding spaces
/// ignored), as the OpenAPI document lists them too.
pub const TYPE_NAMES: &[(&str, ColumnType)] = &[
    ("string", ColumnType::String),
    ("str", ColumnType::String),
    ("text", ColumnType::String),
    ("varchar", ColumnType::String),
    ("integer", ColumnType::Integer),
    ("int", ColumnType::Integer),
    ("int64", ColumnType::Integer),
    ("bigint", ColumnType::Integer),
    ("long", ColumnType::Integer),
    ("float", ColumnType::Float),
    ("double", ColumnType::Float),
    ("float64", ColumnType::Float),
    ("number", ColumnType::Float),
    ("real", ColumnType::Float),
    ("boolean", ColumnType::Boolean),
    ("bool", ColumnType::Boolean),
    ("date", ColumnType::Date),
    ("datetime", ColumnType::Datetime),
    ("timestamp", ColumnType::Datetime),
];

pub const SUPPORTED_TYPES: &str =
    "string, integer (int), float (double), boolean (bool), date, datetime (timestamp)";

impl ColumnType {
    pub fn parse(declared: &str) -> Option<Self> {
        let declared = declared.trim().to_ascii_lowercase();
        TYPE_NAMES
            .iter()
            .find(|(n, _)| *n == declared)
            .map(|(_, t)| *t)
    }

    /// The type's canonical name, as messages and stored definitions write it.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Datetime => "datetime",
        }
    }

    pub fn dtype(self) -> DataType {
        match self {
            ColumnType::String => DataType::String,
            ColumnType::Integer => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date,
            ColumnType::Datetime => DataType::Datetime(TimeUnit::Microseconds, None),
        }
    }
}

/// A plain SQL identifier: a letter or `_`, then letters, digits or `_`; 1 to 63 characters.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER_LEN
}

/// A raw table's validated schema, in column-name order.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    /// (column, type, type as the user declared it)
    columns: Vec<(String, ColumnType, String)>,
}

impl TableSchema {
    /// Validate a `schema_definition` object as registered by a client.
    pub fn from_definition(def: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut columns = Vec::with_capacity(def.len());
        for (name, declared) in def {
            if !is_identifier(name) {
                return Err(format!(
                    "Invalid column name {name:?}: use letters, digits and '_' (starting with a letter or '_'), at most {MAX_IDENTIFIER_LEN} characters"
                ));
            }
            let ty = ColumnType::parse(declared).ok_or_else(|| {
                format!(
                    "Unknown type {declared:?} for column '{name}'; supported types: {SUPPORTED_TYPES}"
                )
            })?;
            columns.push((name.clone(), ty, declared.clone()));
        }
        Ok(TableSchema { columns })
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// (column, type, type as declared), in column-name order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, ColumnType, &str)> {
        self.columns
            .iter()
            .map(|(n, t, d)| (n.as_str(), *t, d.as_str()))
    }

    /// The schema's columns that `present` lacks, sorted, as the "Missing required columns"
    /// message lists them.
    pub fn missing_columns<'a>(&'a self, present: &[&str]) -> Vec<&'a str> {
        self.column_names()
            .filter(|c| !present.contains(c))
            .collect()
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _, _)| n.as_str())
    }

    pub fn polars_schema(&self) -> Schema {
        self.columns
            .iter()
            .map(|(n, t, _)| Field::new(n.as_str().into(), t.dtype()))
            .collect()
    }

    /// A frame with this schema and no rows: what feature registration dry-runs its SQL on.
    pub fn empty_frame(&self) -> DataFrame {
        DataFrame::empty_with_schema(&self.polars_schema())
    }

    /// Check JSON rows against the schema and build a typed frame of them.
    /// A key absent from some rows is null there; a column absent from every row is missing.
    /// Keys that are not in the schema are not stored.
    pub fn frame_from_rows(&self, rows: &[Map<String, Value>]) -> Result<DataFrame, String> {
        self.frame_of(
            rows.len(),
            |i| rows.iter().any(|r| r.contains_key(&self.columns[i].0)),
            |i| {
                let name = self.columns[i].0.as_str();
                rows.iter()
                    .map(move |r| r.get(name).unwrap_or(&Value::Null))
            },
        )
    }

    /// The same checks and frame as `frame_from_rows`, from rows already split into the
    /// schema's columns: `cells[i]` holds column `i`'s value in each of `rows` rows (null where
    /// a row lacks it), `present[i]` whether any row has it (`json_rows` reads them so).
    pub fn frame_from_cells(
        &self,
        rows: usize,
        cells: &[Vec<Value>],
        present: &[bool],
    ) -> Result<DataFrame, String> {
        self.frame_of(rows, |i| present[i], |i| cells[i].iter())
    }

    /// `rows` rows, column `i` present in some row if `present(i)`, its cells `cells(i)`.
    fn frame_of<'v, I>(
        &self,
        rows: usize,
        present: impl Fn(usize) -> bool,
        cells: impl Fn(usize) -> I,
    ) -> Result<DataFrame, String>
    where
        I: Iterator<Item = &'v Value>,
    {
        if rows == 0 {
            return Err("No data provided".into());
        }
        let missing: Vec<&str> = (0..self.columns.len())
            .filter(|i| !present(*i))
            .map(|i| self.columns[i].0.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!("Missing required columns: {}", missing.join(", ")));
        }
        let mut errors = Vec::new();
        let mut columns = Vec::with_capacity(self.columns.len());
        for (i, (name, ty, declared)) in self.columns.iter().enumerate() {
            match build_column(name, *ty, declared, cells(i), rows) {
                Ok(c) => columns.push(c),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        DataFrame::new(rows, columns).map_err(|e| e.to_string())
    }
}

/// Python's name for a JSON value's type, as the original's messages show it.
fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `YYYY-MM-DD` as days since 1970-01-01. The common exact form is read by hand (a bulk CSV
/// holds millions of them and chrono's format parser showed in the ingest profile).
pub(crate) fn parse_date(s: &str) -> Option<i32> {
    let s = s.trim();
    let b = s.as_bytes();
    let date = if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?
    } else {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?
    };
    Some((date - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

/// RFC 3339 with an offset (converted to UTC), or a naive ISO 8601 timestamp taken as UTC.
pub fn parse_datetime_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

fn build_column<'a>(
    name: &str,
    ty: ColumnType,
    declared: &str,
    cells: impl Iterator<Item = &'a Value>,
    len: usize,
) -> Result<Column, String> {
    let wrong = |v: &Value| format!("Column {name} should be {declared}, got {}", python_type(v));
    let unparsable = |s: &str| format!("Column {name} should be {declared}, got str {s:?}");
    let name: PlSmallStr = name.into();
    Ok(match ty {
        ColumnType::String => {
            let mut out: Vec<Option<&str>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.as_str()),
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
        }
        ColumnType::Integer => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => Some(i),
                        None if n.is_u64() => {
                            return Err(format!(
                                "Column {name} value {n} is out of range for {declared}"
                            ))
                        }
                        None => return Err(wrong(v)),
                    },
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
        }
        ColumnType::Float => {
            let mut out: Vec<Option<f64>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => n.as_f64(),
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
        }
        ColumnType::Boolean => {
            let mut out: Vec<Option<bool>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
        }
        ColumnType::Date => {
            let mut out: Vec<Option<i32>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::String(s) => Some(parse_date(s).ok_or_else(|| unparsable(s))?),
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
                .cast(&DataType::Date)
                .map_err(|e| e.to_string())?
        }
        ColumnType::Datetime => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(len);
            for v in cells {
                out.push(match v {
                    Value::Null => None,
                    Value::String(s) => {
                        Some(parse_datetime_micros(s).ok_or_else(|| unparsable(s))?)
                    }
                    other => return Err(wrong(other)),
                });
            }
            Column::new(name, out)
                .cast(&ColumnType::Datetime.dtype())
                .map_err(|e| e.to_string())?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(pairs: &[(&str, &str)]) -> TableSchema {
        let def = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        TableSchema::from_definition(&def).unwrap()
    }

    fn rows(v: Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn identifiers_are_plain_names_only() {
        assert!(is_identifier("user_id"));
        assert!(is_identifier("_x1"));
        for bad in ["", "1abc", "a b", "a\"b", "../x", "a;b", &"x".repeat(64)] {
            assert!(!is_identifier(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_types_are_refused_with_the_supported_list() {
        let def = [("a".to_string(), "blob".to_string())].into();
        let err = TableSchema::from_definition(&def).unwrap_err();
        assert!(err.contains("Unknown type \"blob\""), "{err}");
    }

    #[test]
    fn missing_columns_are_listed_sorted() {
        let s = schema(&[("b", "int"), ("a", "string"), ("c", "float")]);
        let err = s.frame_from_rows(&rows(json!([{"c": 1.0}]))).unwrap_err();
        assert_eq!(err, "Missing required columns: a, b");
    }

    #[test]
    fn wrong_types_name_the_python_type() {
        let s = schema(&[("amount", "float")]);
        let err = s
            .frame_from_rows(&rows(json!([{"amount": "12"}])))
            .unwrap_err();
        assert_eq!(err, "Column amount should be float, got str");
    }

    #[test]
    fn integers_refuse_fractions_and_floats_take_integers() {
        let s = schema(&[("n", "integer"), ("x", "double")]);
        let err = s
            .frame_from_rows(&rows(json!([{"n": 1.5, "x": 1}])))
            .unwrap_err();
        assert_eq!(err, "Column n should be integer, got float");
        let df = s.frame_from_rows(&rows(json!([{"n": 2, "x": 1}]))).unwrap();
        assert_eq!(df.column("x").unwrap().dtype(), &DataType::Float64);
    }

    #[test]
    fn nulls_and_absent_keys_are_null() {
        let s = schema(&[("a", "string"), ("d", "date"), ("t", "timestamp")]);
        let df = s
            .frame_from_rows(&rows(json!([
                {"a": null, "d": "2024-01-15", "t": "2024-01-15T10:00:00Z"},
                {"a": "x"}
            ])))
            .unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.column("d").unwrap().null_count(), 1);
        assert_eq!(df.column("a").unwrap().null_count(), 1);
    }

    #[test]
    fn dates_parse_to_days_since_the_epoch() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("2024-01-15"), Some(19737));
        assert_eq!(parse_date(" 2024-1-15 "), Some(19737));
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("2024-0a-15"), None);
    }

    #[test]
    fn bad_dates_are_refused() {
        let s = schema(&[("d", "date")]);
        let err = s
            .frame_from_rows(&rows(json!([{"d": "2024-13-45"}])))
            .unwrap_err();
        assert!(err.starts_with("Column d should be date, got str"), "{err}");
    }

    #[test]
    fn no_rows_is_no_data() {
        let s = schema(&[("a", "int")]);
        assert_eq!(s.frame_from_rows(&[]).unwrap_err(), "No data provided");
    }
}
