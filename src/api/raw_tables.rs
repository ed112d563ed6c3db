use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::extract::{Json, Path, Query};
use crate::error::Result;
use crate::model::{ErrorBody, PreviewQuery, RawTable, RawTableCreate, RawTablePreview};
use crate::service::raw_tables;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/raw-tables", get(list).post(create))
        .route("/raw-tables/{table_id}", get(get_one).delete(delete))
        .route("/raw-tables/{table_id}/data", get(preview))
}

/// Register a raw table.
#[utoipa::path(post, path = "/api/v1/raw-tables", tag = "raw tables", request_body = RawTableCreate,
    responses((status = 201, body = RawTable), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<RawTableCreate>,
) -> Result<(StatusCode, axum::Json<RawTable>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(raw_tables::create(&state, req).await?),
    ))
}

/// List raw tables, oldest first.
#[utoipa::path(get, path = "/api/v1/raw-tables", tag = "raw tables",
    responses((status = 200, body = Vec<RawTable>)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<RawTable>>> {
    Ok(axum::Json(raw_tables::list(&state).await?))
}

/// Get a raw table.
#[utoipa::path(get, path = "/api/v1/raw-tables/{table_id}", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 200, body = RawTable), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<axum::Json<RawTable>> {
    Ok(axum::Json(raw_tables::get(&state, table_id).await?))
}

/// Delete a raw table and its stored rows; refused while a feature reads it.
#[utoipa::path(delete, path = "/api/v1/raw-tables/{table_id}", tag = "raw tables",
    params(("table_id" = i64, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(table_id): Path<i64>,
) -> Result<StatusCode> {
    raw_tables::delete(&state, table_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Preview the rows stored in a raw table, in ingest order.
#[utoipa::path(get, path = "/api/v1/raw-tables/{table_id}/data", tag = "raw tables",
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
