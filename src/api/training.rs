//! Training sets: labelled rows in (JSON, CSV or Parquet), point-in-time feature values out
//! (JSON, CSV or Parquet, by `Accept`).

use std::io::Cursor;

use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::extract::{body_rejection, parse_json};
use crate::engine::schema::parse_datetime_micros;
use crate::error::{AppError, Result};
use crate::model::{ErrorBody, FeatureRef, TrainingSetRequest};
use crate::service::training::{self, Extra, Rows};
use crate::AppState;

/// Rows per training set.
pub const MAX_ROWS: usize = 5_000_000;

const PARQUET: &str = "application/vnd.apache.parquet";

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/training-sets", post(build))
}

#[derive(Deserialize)]
struct JsonBody {
    features: Vec<FeatureRef>,
    rows: Vec<Map<String, Value>>,
    #[serde(default)]
    max_age_seconds: Option<i64>,
}

/// Point-in-time correct feature values for labelled rows: for each row and feature, the
/// values of the feature version's snapshot with the greatest `valid_from` at or before the
/// row's `timestamp`; null before any snapshot, when the entity is not in it, or when it is
/// older than the row by more than `max_age_seconds`. One output row per input row, in order.
/// CSV or Parquet rows go with `features` (repeated) and `max_age_seconds` in the query.
#[utoipa::path(post, operation_id = "build_training_set", path = "/api/v1/training-sets", tag = "history",
    params(
        ("features" = Option<Vec<String>>, Query, description = "With a CSV or Parquet body: the feature references (repeat the parameter; all digits means a version id)"),
        ("max_age_seconds" = Option<i64>, Query, minimum = 0, description = "With a CSV or Parquet body")),
    request_body(description = "JSON {features, rows, max_age_seconds}, or rows as text/csv or application/vnd.apache.parquet with entity_id and timestamp columns",
        content((TrainingSetRequest = "application/json"), (String = "text/csv"), (crate::model::BinaryFile = "application/vnd.apache.parquet"))),
    responses((status = 200, description = "JSON {versions, unresolved, rows}; or, with Accept text/csv or application/vnd.apache.parquet, a flat table: entity_id, timestamp, the other input columns, then <ref>__<column>"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn build(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response> {
    let body = body.map_err(body_rejection)?;
    // Checked whatever the body: a malformed parameter is never ignored.
    let (query_features, query_max_age) = query_params(query.as_deref().unwrap_or(""))?;
    let (features, rows, max_age) = match essence(&headers, CONTENT_TYPE).as_str() {
        "" | "application/json" => {
            let req: JsonBody = parse_json(&body)?;
            let rows = crate::service::blocking(move || json_rows(req.rows)).await??;
            (req.features, rows, req.max_age_seconds.or(query_max_age))
        }
        kind @ ("text/csv" | PARQUET) => {
            let (features, max_age) = (query_features, query_max_age);
            let csv = kind == "text/csv";
            let rows = crate::service::blocking(move || frame_rows(&body, csv)).await??;
            (features, rows, max_age)
        }
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Unsupported Content-Type '{other}': send application/json, text/csv or {PARQUET}"
            )))
        }
    };
    let columns = training::build(&state, &features, &rows, max_age).await?;
    match essence(&headers, ACCEPT).as_str() {
        "text/csv" => {
            let bytes = crate::service::blocking(move || {
                let mut frame = training::to_frame(&rows, columns)?;
                let mut out = Vec::new();
                CsvWriter::new(&mut out)
                    .finish(&mut frame)
                    .map_err(AppError::internal)?;
                Ok::<_, AppError>(out)
            })
            .await??;
            Ok(([(CONTENT_TYPE, "text/csv")], bytes).into_response())
        }
        PARQUET => {
            let bytes = crate::service::blocking(move || {
                let mut frame = training::to_frame(&rows, columns)?;
                let mut out = Vec::new();
                ParquetWriter::new(&mut out)
                    .finish(&mut frame)
                    .map_err(AppError::internal)?;
                Ok::<_, AppError>(out)
            })
            .await??;
            Ok(([(CONTENT_TYPE, PARQUET)], bytes).into_response())
        }
        _ => {
            let text =
                crate::service::blocking(move || training::to_json(&rows, &columns)).await??;
            Ok(([(CONTENT_TYPE, "application/json")], text).into_response())
        }
    }
}

fn essence(headers: &HeaderMap, name: axum::http::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split([';', ','])
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn query_params(raw: &str) -> Result<(Vec<FeatureRef>, Option<i64>)> {
    let mut features = Vec::new();
    let mut max_age = None;
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "features" => features.push(match value.parse::<i64>() {
                Ok(id) => FeatureRef::Id(id),
                Err(_) => FeatureRef::Name(value.into_owned()),
            }),
            "max_age_seconds" => {
                max_age = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|v| *v >= 0)
                        .ok_or_else(|| {
                            AppError::validation(
                                &["query", "max_age_seconds"],
                                format!("Input should be a non-negative integer, got {value:?}"),
                            )
                        })?,
                )
            }
            _ => {}
        }
    }
    Ok((features, max_age))
}

/// The JSON answer puts each row's values under `features`, beside the row's own columns.
fn reserved_features() -> AppError {
    AppError::BadRequest(
        "the rows have a column named 'features', which the answer uses for the feature values; rename it".into(),
    )
}

fn too_many(n: usize) -> Result<()> {
    if n > MAX_ROWS {
        return Err(AppError::BadRequest(format!(
            "the training set has {n} rows; at most {MAX_ROWS} are allowed"
        )));
    }
    if n == 0 {
        return Err(AppError::BadRequest("rows must not be empty".into()));
    }
    Ok(())
}

fn json_rows(rows: Vec<Map<String, Value>>) -> Result<Rows> {
    too_many(rows.len())?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut micros = Vec::with_capacity(rows.len());
    let mut extra = Vec::with_capacity(rows.len());
    for (i, mut row) in rows.into_iter().enumerate() {
        let id = match row.remove("entity_id") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(AppError::BadRequest(format!(
                    "rows[{i}]: entity_id must be a string"
                )))
            }
        };
        let ts = match row.remove("timestamp") {
            Some(Value::String(s)) => parse_datetime_micros(&s),
            _ => None,
        }
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "rows[{i}]: timestamp must be an RFC 3339 date-time like 2024-01-31T00:00:00Z"
            ))
        })?;
        if row.contains_key("features") {
            return Err(reserved_features());
        }
        ids.push(id);
        micros.push(ts);
        extra.push(row);
    }
    Ok(Rows {
        entity: StringChunked::from_iter_values("entity_id".into(), ids.iter().map(String::as_str)),
        micros,
        extra: Extra::Json(extra),
    })
}

fn frame_rows(body: &[u8], csv: bool) -> Result<Rows> {
    let frame = if csv {
        CsvReadOptions::default()
            .with_has_header(true)
            .into_reader_with_file_handle(Cursor::new(body))
            .finish()
            .map_err(|e| AppError::BadRequest(format!("CSV does not parse: {e}")))?
    } else {
        ParquetReader::new(Cursor::new(body))
            .finish()
            .map_err(|e| AppError::BadRequest(format!("Parquet does not parse: {e}")))?
    };
    too_many(frame.height())?;
    if frame.column("features").is_ok() {
        return Err(reserved_features());
    }
    let column = |name: &str| {
        frame
            .column(name)
            .map_err(|_| AppError::BadRequest(format!("the rows have no '{name}' column")))
    };
    let entity = column("entity_id")?
        .cast(&DataType::String)
        .map_err(|e| AppError::BadRequest(format!("entity_id: {e}")))?;
    if entity.null_count() > 0 {
        return Err(AppError::BadRequest("entity_id must not be null".into()));
    }
    let entity = entity.str().map_err(AppError::internal)?.clone();
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
        .map_err(AppError::internal)?;
    Ok(Rows {
        entity,
        micros,
        extra: Extra::Frame(extra),
    })
}

/// A timestamp column as microseconds: datetimes of any unit, dates (their midnight), or text
/// parsed as JSON rows' are.
fn timestamps(c: &Column) -> Result<Vec<i64>> {
    let bad = |i: usize| {
        AppError::BadRequest(format!(
            "row {i}: timestamp must be a date-time like 2024-01-31T00:00:00Z"
        ))
    };
    match c.dtype() {
        DataType::Datetime(_, _) => {
            let us = c
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .and_then(|c| c.to_physical_repr().cast(&DataType::Int64))
                .map_err(AppError::internal)?;
            let us = us.i64().map_err(AppError::internal)?;
            us.iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| bad(i)))
                .collect()
        }
        DataType::Date => {
            let days = c.to_physical_repr();
            let days = days.i32().map_err(AppError::internal)?;
            days.iter()
                .enumerate()
                .map(|(i, v)| v.map(|d| d as i64 * 86_400_000_000).ok_or_else(|| bad(i)))
                .collect()
        }
        DataType::String => c
            .str()
            .map_err(AppError::internal)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.and_then(parse_datetime_micros).ok_or_else(|| bad(i)))
            .collect(),
        other => Err(AppError::BadRequest(format!(
            "timestamp is {other}; send a datetime, a date or RFC 3339 text"
        ))),
    }
}
