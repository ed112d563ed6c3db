//! Snapshot history of a version: the list, and backfills that add to it.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

use super::access::Change;
use super::error::Result;
use super::extract::{Json, Path};
use crate::model::{BackfillRequest, ErrorBody, Snapshot};
use crate::service::present;
use crate::service::AppState;
use crate::service::{compute, history};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}/snapshots",
            get(list),
        )
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}/backfill",
            post(backfill),
        )
}

/// A version's snapshots, oldest first: every publish keeps its whole vector set, valid from
/// its publish time (a live compute) or its `as_of` (an as-of compute or a backfill step).
#[utoipa::path(get, operation_id = "list_snapshots", path = "/api/v1/features/{feature_id}/versions/{version_id}/snapshots", tag = "history",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)),
    responses((status = 200, body = Vec<Snapshot>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
) -> Result<axum::Json<Vec<Snapshot>>> {
    Ok(axum::Json(present::all(
        history::list(&state.store, feature_id, version_id).await?,
    )))
}

/// Make one snapshot per step from `start` to `end` inclusive (at most 1,000 steps), each over
/// the stored rows whose event time is at or before the step, in the compute workers. Steps
/// older than the served snapshot only add history; serving never goes back in time.
#[utoipa::path(post, operation_id = "backfill_version", path = "/api/v1/features/{feature_id}/versions/{version_id}/backfill", tag = "history",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)), request_body = BackfillRequest,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = Vec<Snapshot>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn backfill(
    _: Change,
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
    Json(req): Json<BackfillRequest>,
) -> Result<axum::Json<Vec<Snapshot>>> {
    Ok(axum::Json(present::all(
        compute::backfill(&state, feature_id, version_id, &req).await?,
    )))
}
