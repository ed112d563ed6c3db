use axum::extract::State;
use axum::routing::post;
use axum::Router;

use super::access::Change;
use super::error::Result;
use super::extract::Json;
use crate::model::{ErrorBody, IngestRequest, IngestResponse};
use crate::service::ingest;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/ingest", post(ingest_rows))
}

/// Ingest JSON rows into a raw table; they are validated against its schema and stored.
#[utoipa::path(post, operation_id = "ingest_rows", path = "/api/v1/ingest", tag = "ingest", request_body = IngestRequest,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = IngestResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn ingest_rows(
    _: Change,
    State(state): State<AppState>,
    Json(req): Json<IngestRequest>,
) -> Result<axum::Json<IngestResponse>> {
    Ok(axum::Json(
        ingest::ingest(&state, req.raw_table_id, req.data).await?,
    ))
}
