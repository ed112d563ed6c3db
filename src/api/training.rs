//! Training sets: labelled rows in (JSON, CSV, Parquet or an Arrow IPC file), point-in-time
//! feature values out (the same four, by `Accept`).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use super::access::Change;
use super::error::{AppError, Result};
use super::extract::{body_rejection, parse_json, Json};
use crate::model::{
    ErrorBody, FeatureRef, TrainingDataset, TrainingDatasetRequest, TrainingSetRequest,
};
use crate::service::training::{self, check_row_count, DatasetRequest, Format};
use crate::service::AppState;

const PARQUET: &str = "application/vnd.apache.parquet";
const ARROW: &str = "application/vnd.apache.arrow.file";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/training-sets", post(build))
        .route("/api/v1/training-sets/datasets", post(write_dataset))
}

/// Point-in-time correct feature values for labelled rows: for each row and feature, the
/// values of the feature version's snapshot with the greatest `valid_from` at or before the
/// row's `timestamp`; null before any snapshot, when the entity is not in it, or when it is
/// older than the row by more than `max_age_seconds`. One output row per input row, in order.
/// A feature referenced more than once is answered once. The set is built in a compute worker
/// under its memory and time limits (a 400 names the limit it exceeded) and streams back.
/// CSV, Parquet or Arrow rows go with `features` (repeated) and `max_age_seconds` in the query.
#[utoipa::path(post, operation_id = "build_training_set", path = "/api/v1/training-sets", tag = "history",
    params(
        ("features" = Option<Vec<String>>, Query, description = "With a CSV, Parquet or Arrow body: the feature references (repeat the parameter; all digits means a version id)"),
        ("max_age_seconds" = Option<i64>, Query, minimum = 0, description = "With a CSV, Parquet or Arrow body")),
    request_body(description = "JSON {features, rows, max_age_seconds}, or rows as text/csv, application/vnd.apache.parquet or application/vnd.apache.arrow.file (an Arrow IPC file) with entity_id (or each feature's key columns by name) and timestamp columns",
        content((TrainingSetRequest = "application/json"), (String = "text/csv"), (crate::model::BinaryFile = "application/vnd.apache.parquet"), (crate::model::BinaryFile = "application/vnd.apache.arrow.file"))),
    responses((status = 200, description = "JSON {versions, unresolved, rows}; or, with Accept text/csv, application/vnd.apache.parquet or application/vnd.apache.arrow.file, a flat table: entity_id (when sent), timestamp, the other input columns (key columns among them), then <ref>__<column>"),
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
    let (features, max_age_seconds, input) = match essence(&headers, CONTENT_TYPE).as_str() {
        "" | "application/json" => {
            // The rows are only checked for shape here; the worker reads them.
            let head: JsonHead = parse_json(&body)?;
            check_row_count(head.rows.0).map_err(AppError::BadRequest)?;
            (
                head.features,
                head.max_age_seconds.or(query_max_age),
                Format::Json,
            )
        }
        "text/csv" => (query_features, query_max_age, Format::Csv),
        PARQUET => (query_features, query_max_age, Format::Parquet),
        ARROW => (query_features, query_max_age, Format::Arrow),
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Unsupported Content-Type '{other}': send application/json, text/csv, {PARQUET} \
                 or {ARROW}"
            )))
        }
    };
    let (output, content_type) = match essence(&headers, ACCEPT).as_str() {
        "text/csv" => (Format::Csv, "text/csv"),
        PARQUET => (Format::Parquet, PARQUET),
        ARROW => (Format::Arrow, ARROW),
        _ => (Format::Json, "application/json"),
    };
    let answer = training::start(
        &state,
        training::Request {
            features,
            max_age_seconds,
            body,
            input,
            output,
        },
    )
    .await?;
    Ok(([(CONTENT_TYPE, content_type)], Body::from_stream(answer)).into_response())
}

/// A training set too big for a request body or a response: the labelled rows are a raw
/// table's (the version current when the request starts), and the answer is written as
/// Parquet files (a million rows each) under a new directory of the data location, which the
/// answer names. Values are as `POST /api/v1/training-sets` gives them; every feature must
/// resolve. Built in a compute worker under its limits; the call returns when the files are
/// written. It stores files, so it takes a write key.
#[utoipa::path(post, operation_id = "write_training_dataset", path = "/api/v1/training-sets/datasets", tag = "history",
    request_body = TrainingDatasetRequest,
    responses((status = 201, body = TrainingDataset),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn write_dataset(
    State(state): State<AppState>,
    _: Change,
    Json(request): Json<TrainingDatasetRequest>,
) -> Result<(StatusCode, axum::Json<TrainingDataset>)> {
    let written = training::write_dataset(
        &state,
        DatasetRequest {
            features: request.features,
            max_age_seconds: request.max_age_seconds,
            labels_raw_table_id: request.labels.raw_table_id,
            time_column: request.labels.time_column,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(written)))
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

/// A JSON body's features and parameters; the rows only counted, each checked to be an object.
#[derive(Deserialize)]
struct JsonHead {
    features: Vec<FeatureRef>,
    rows: RowCount,
    #[serde(default)]
    max_age_seconds: Option<i64>,
}

/// An array of JSON objects, counted without being kept.
struct RowCount(usize);

impl<'de> Deserialize<'de> for RowCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Count;
        impl<'de> serde::de::Visitor<'de> for Count {
            type Value = RowCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of objects")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RowCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<AnyObject>()?.is_some() {
                    n += 1;
                }
                Ok(RowCount(n))
            }
        }
        d.deserialize_seq(Count)
    }
}

/// A JSON object whose entries are skipped.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Skip;
        impl<'de> serde::de::Visitor<'de> for Skip {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<AnyObject, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(Skip)
    }
}
