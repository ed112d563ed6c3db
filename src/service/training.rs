//! Point-in-time correct training sets: for each labelled row (entity, timestamp) and each
//! feature, the values of the feature version's snapshot in force at the row's timestamp.

use std::sync::Arc;

use polars::prelude::*;
use serde_json::{Map, Value};

use crate::engine::history::{gather, snapshot_positions};
use crate::engine::result::{encode_cells, row_object};
use crate::error::{AppError, Result};
use crate::model::FeatureRef;
use crate::store::SnapshotRow;
use crate::AppState;

use super::history::{self, Decoded};
use super::vectors::resolve_key;

/// The labelled rows: entity, timestamp, and the other columns as they came.
pub struct Rows {
    pub entity: StringChunked,
    pub micros: Vec<i64>,
    pub extra: Extra,
}

/// The rows' other columns: JSON objects (a JSON upload) or a frame (CSV, Parquet).
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

pub const MAX_FEATURES: usize = 100;

pub async fn build(
    state: &AppState,
    features: &[FeatureRef],
    rows: &Rows,
    max_age_seconds: Option<i64>,
) -> Result<Vec<FeatureColumns>> {
    if features.is_empty() {
        return Err(AppError::BadRequest("features must not be empty".into()));
    }
    if features.len() > MAX_FEATURES {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_FEATURES} features per training set"
        )));
    }
    if let Some(age) = max_age_seconds {
        if age < 0 {
            return Err(AppError::BadRequest(
                "max_age_seconds must not be negative".into(),
            ));
        }
    }
    let max_age = max_age_seconds.map(|s| s.saturating_mul(1_000_000));
    let mut out = Vec::with_capacity(features.len());
    for feature in features {
        let (reference, key) = feature.parse()?;
        let meta = match resolve_key(state, key).await {
            Ok(meta) => meta,
            Err(AppError::NotFound(reason)) => {
                out.push(FeatureColumns {
                    reference,
                    version_id: None,
                    unresolved: Some(reason),
                    values: None,
                    present: Vec::new(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let snapshots = state.store.list_snapshots(meta.version_id).await?;
        if snapshots.is_empty() {
            out.push(FeatureColumns {
                reference,
                version_id: Some(meta.version_id),
                unresolved: Some(format!(
                    "Feature version {} has no snapshots; compute it to start its history",
                    meta.version_id
                )),
                values: None,
                present: Vec::new(),
            });
            continue;
        }
        let (values, present) = columns_of(state, &snapshots, rows, max_age).await?;
        out.push(FeatureColumns {
            reference,
            version_id: Some(meta.version_id),
            unresolved: None,
            values: Some(values),
            present,
        });
    }
    Ok(out)
}

/// Load only the snapshots some row resolves to (and the newest, for the columns), then gather.
async fn columns_of(
    state: &AppState,
    snapshots: &[SnapshotRow],
    rows: &Rows,
    max_age: Option<i64>,
) -> Result<(DataFrame, Vec<bool>)> {
    let valid_from: Vec<i64> = snapshots
        .iter()
        .map(|s| s.valid_from.timestamp_micros())
        .collect();
    let positions = snapshot_positions(&rows.micros, &valid_from, max_age);
    let mut needed = vec![false; snapshots.len()];
    for p in positions.iter().flatten() {
        needed[*p as usize] = true;
    }
    if let Some(last) = needed.last_mut() {
        *last = true;
    }
    let mut decoded: Vec<Option<Arc<Decoded>>> = Vec::with_capacity(snapshots.len());
    for (snapshot, needed) in snapshots.iter().zip(needed) {
        decoded.push(match needed {
            true => Some(history::decoded(state, snapshot.id).await?),
            false => None,
        });
    }
    let entity = rows.entity.clone();
    super::blocking(move || {
        let views: Vec<_> = decoded
            .iter()
            .map(|d| d.as_ref().map(|d| d.view()))
            .collect();
        gather(&entity, &positions, &views)
    })
    .await?
    .map_err(AppError::internal)
}

/// The JSON answer: one object per input row, in input order.
pub fn to_json(rows: &Rows, features: &[FeatureColumns]) -> Result<String> {
    let n = rows.micros.len();
    let mut encoded = Vec::with_capacity(features.len());
    for f in features {
        encoded.push(match &f.values {
            Some(frame) => encode_frame(frame)?,
            None => Vec::new(),
        });
    }
    // A CSV or Parquet upload's other columns come back as sent in the JSON answer too.
    let extra_columns = match &rows.extra {
        Extra::Frame(frame) => encode_frame(frame)?,
        Extra::Json(_) => Vec::new(),
    };
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
    let names: Vec<String> = features
        .iter()
        .map(|f| serde_json::to_string(&f.reference).unwrap_or_default())
        .collect();
    let mut out = String::with_capacity(64 * n * (1 + features.len()));
    out.push_str(r#"{"versions":"#);
    out.push_str(&Value::Object(versions).to_string());
    out.push_str(r#","unresolved":"#);
    out.push_str(&Value::Object(unresolved).to_string());
    out.push_str(r#","rows":["#);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"entity_id":"#);
        out.push_str(&serde_json::to_string(rows.entity.get(i).unwrap_or("")).unwrap_or_default());
        out.push_str(r#","timestamp":""#);
        out.push_str(&timestamp_text(rows.micros[i]));
        out.push('"');
        match &rows.extra {
            Extra::Json(extra) => {
                for (k, v) in &extra[i] {
                    out.push(',');
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    out.push_str(&v.to_string());
                }
            }
            Extra::Frame(_) => {
                for (name, cells) in &extra_columns {
                    out.push(',');
                    out.push_str(name);
                    out.push(':');
                    out.push_str(&cells[i]);
                }
            }
        }
        out.push_str(r#","features":{"#);
        for (j, f) in features.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&names[j]);
            out.push(':');
            if f.present.get(i).copied().unwrap_or(false) {
                out.push_str(&row_object(&encoded[j], i));
            } else {
                out.push_str("null");
            }
        }
        out.push_str("}}");
    }
    out.push_str("]}");
    Ok(out)
}

/// Each column as (quoted name, JSON text per row).
fn encode_frame(frame: &DataFrame) -> Result<Vec<(String, Vec<String>)>> {
    frame
        .columns()
        .iter()
        .map(|c| {
            let name = serde_json::to_string(c.name().as_str()).map_err(|e| e.to_string())?;
            Ok((name, encode_cells(c)?))
        })
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(AppError::internal)
}

/// The flat table: entity_id, timestamp, the other input columns, then `<ref>__<column>`.
pub fn to_frame(rows: &Rows, features: Vec<FeatureColumns>) -> Result<DataFrame> {
    let n = rows.micros.len();
    let mut columns: Vec<Column> = Vec::new();
    columns.push(
        rows.entity
            .clone()
            .with_name("entity_id".into())
            .into_column(),
    );
    let ts = Int64Chunked::from_vec("timestamp".into(), rows.micros.clone())
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    columns.push(ts.into_column());
    match &rows.extra {
        Extra::Frame(frame) => columns.extend(frame.columns().iter().cloned()),
        Extra::Json(extra) => columns.extend(json_columns(extra, n)?),
    }
    for f in features {
        let Some(values) = f.values else {
            return Err(AppError::NotFound(format!(
                "Feature '{}' did not resolve: {}",
                f.reference,
                f.unresolved.unwrap_or_default()
            )));
        };
        for c in values.columns() {
            let name = format!("{}__{}", f.reference, c.name());
            columns.push(c.clone().with_name(name.into()));
        }
    }
    DataFrame::new(n, columns).map_err(|e| AppError::BadRequest(e.to_string()))
}

fn timestamp_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| crate::model::format_ts(&t))
        .unwrap_or_default()
}

/// The JSON rows' other columns as typed columns: numbers, booleans and strings as such,
/// anything else as JSON text.
fn json_columns(extra: &[Map<String, Value>], n: usize) -> Result<Vec<Column>> {
    let mut names: Vec<&String> = Vec::new();
    for row in extra {
        for k in row.keys() {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let values: Vec<&Value> = extra
            .iter()
            .map(|r| r.get(name).unwrap_or(&Value::Null))
            .collect();
        let kinds = |f: fn(&Value) -> bool| values.iter().all(|v| v.is_null() || f(v));
        let column = if kinds(|v| v.is_i64()) {
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
        };
        debug_assert_eq!(column.len(), n);
        columns.push(column);
    }
    Ok(columns)
}
