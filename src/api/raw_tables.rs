use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;

use super::access::Change;
use super::error::{AppError, Result};
use super::extract::{body_rejection, parse_json, Json, Path, Query};
use crate::model::{
    ErrorBody, IngestResponse, PreviewQuery, RawTable, RawTableCreate, RawTablePreview,
};
use crate::service::ingest::{self, Upload};
use crate::service::present;
use crate::service::raw_tables;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/raw-tables", get(list).post(create))
        .route("/api/v1/raw-tables/{table_id}", get(get_one).delete(delete))
        .route(
            "/api/v1/raw-tables/{table_id}/data",
            get(preview).post(upload),
        )
}

/// Register a raw table.
#[utoipa::path(post, operation_id = "create_raw_table", path = "/api/v1/raw-tables", tag = "raw tables", request_body = RawTableCreate,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 201, body = RawTable), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    _: Change,
    State(state): State<AppState>,
    Json(req): Json<RawTableCreate>,
) -> Result<(StatusCode, axum::Json<RawTable>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(
            raw_tables::create(&state.store, &state.offline, &state.clock, req)
                .await?
                .into(),
        ),
    ))
}

/// List raw tables, oldest first.
#[utoipa::path(get, operation_id = "list_raw_tables", path = "/api/v1/raw-tables", tag = "raw tables",
    responses((status = 200, body = Vec<RawTable>)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<RawTable>>> {
    Ok(axum::Json(present::all(
        raw_tables::list(&state.store).await?,
    )))
}

/// Get a raw table.
#[utoipa::path(get, operation_id = "get_raw_table", path = "/api/v1/raw-tables/{table_id}", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 200, body = RawTable), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<axum::Json<RawTable>> {
    Ok(axum::Json(
        raw_tables::get(&state.store, table_id).await?.into(),
    ))
}

/// Delete a raw table and its stored rows; refused while a feature reads it.
#[utoipa::path(delete, operation_id = "delete_raw_table", path = "/api/v1/raw-tables/{table_id}", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete(
    _: Change,
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<StatusCode> {
    raw_tables::delete(&state.store, &state.offline, table_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Preview the rows stored in a raw table, in ingest order.
#[utoipa::path(get, operation_id = "preview_raw_table", path = "/api/v1/raw-tables/{table_id}/data", tag = "raw tables",
    params(("table_id" = i64, Path), PreviewQuery),
    responses((status = 200, body = RawTablePreview), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
    Query(q): Query<PreviewQuery>,
) -> Result<axum::Json<RawTablePreview>> {
    Ok(axum::Json(
        raw_tables::preview(&state, table_id, q.limit).await?,
    ))
}

const UPLOAD_TYPES: &str =
    "application/json, application/x-ndjson, text/csv or application/vnd.apache.parquet";

/// JSON rows as an array, or the /ingest body's `{"data": [...]}`.
fn json_rows(body: &[u8]) -> Result<Upload> {
    let rows = match parse_json::<Value>(body)? {
        Value::Array(rows) => rows,
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(AppError::validation(
                    &["body", "data"],
                    "Field required: data (an array of rows)",
                ))
            }
        },
        _ => return Err(AppError::validation(&["body"], "expected an array of rows")),
    };
    rows.into_iter()
        .map(|r| match r {
            Value::Object(row) => Ok(row),
            _ => Err(AppError::validation(
                &["body"],
                "every row must be a JSON object",
            )),
        })
        .collect::<Result<Vec<_>>>()
        .map(Upload::Rows)
}

/// Upload rows in bulk: JSON, NDJSON (parsed as it streams in), CSV with a header row, or
/// Parquet, chosen by Content-Type. Validated against the schema exactly like /ingest; a batch
/// with any invalid row stores nothing.
#[utoipa::path(post, operation_id = "upload_rows", path = "/api/v1/raw-tables/{table_id}/data", tag = "ingest",
    params(("table_id" = i64, Path)),
    request_body(description = "Rows as application/json (array), application/x-ndjson, text/csv (header row) or application/vnd.apache.parquet",
        content((Vec<Object> = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"), (crate::model::BinaryFile = "application/vnd.apache.parquet"))),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = IngestResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    _: Change,
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
    req: Request<Body>,
) -> Result<axum::Json<IngestResponse>> {
    let mime = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let upload = match mime.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => {
            let limit = state.config.max_body_bytes;
            let stream = req.into_body().into_data_stream();
            return Ok(axum::Json(
                ingest::ingest_ndjson(&state, table_id, stream, limit).await?,
            ));
        }
        "application/json" => {
            let body = read_body(req, &state).await?;
            // An array of rows is read straight into columns; `{"data": [...]}` and what is
            // neither are parsed whole (their errors are worded there).
            match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => Upload::JsonArray(body),
                _ => json_rows(&body)?,
            }
        }
        "text/csv" | "application/csv" => Upload::Csv(read_body(req, &state).await?),
        "application/vnd.apache.parquet" | "application/x-parquet" | "application/parquet" => {
            Upload::Parquet(read_body(req, &state).await?)
        }
        "" => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Content-Type required: {UPLOAD_TYPES}"
            )))
        }
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Unsupported Content-Type '{other}': send {UPLOAD_TYPES}"
            )))
        }
    };
    Ok(axum::Json(
        ingest::ingest_upload(&state, table_id, upload).await?,
    ))
}

async fn read_body(req: Request<Body>, state: &AppState) -> Result<Bytes> {
    Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)
}
