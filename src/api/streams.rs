//! A raw table's stream: follow one, see how following goes, stop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;

use super::access::Change;
use super::error::Result;
use super::extract::{Json, Path};
use crate::model::{ErrorBody, StreamResponse, StreamSource};
use crate::service::streams;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/raw-tables/{table_id}/stream",
        put(follow).get(show).delete(stop),
    )
}

/// Make a raw table follow a stream (NATS JetStream), or change the one it follows. Messages
/// are checked as ingested rows are and committed in micro-batches, exactly once; a message
/// that does not fit is set aside in the rejected dataset with its reason. The table's HTTP
/// ingest keeps working beside it.
#[utoipa::path(put, operation_id = "follow_stream", path = "/api/v1/raw-tables/{table_id}/stream", tag = "raw tables",
    params(("table_id" = i64, Path)), request_body = StreamSource,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = StreamResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn follow(
    _: Change,
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
    Json(source): Json<StreamSource>,
) -> Result<axum::Json<StreamResponse>> {
    Ok(axum::Json(
        streams::put(&state.store, &state.offline, &state.clock, table_id, source).await?,
    ))
}

/// The stream a raw table follows: its source, its state (`starting`, `running`, `failing`
/// with the reason, `waiting` for a replica), offsets committed, lag, events/s, rejected.
#[utoipa::path(get, operation_id = "get_stream", path = "/api/v1/raw-tables/{table_id}/stream", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 200, body = StreamResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<axum::Json<StreamResponse>> {
    Ok(axum::Json(
        streams::get(&state.store, &state.offline, &state.clock, table_id).await?,
    ))
}

/// Stop following the stream; what was committed stays in the table.
#[utoipa::path(delete, operation_id = "stop_stream", path = "/api/v1/raw-tables/{table_id}/stream", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop(
    _: Change,
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<StatusCode> {
    streams::delete(&state.store, table_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
