//! Snapshot statistics and drift between snapshots.

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use super::error::Result;
use super::extract::{Path, Query};
use crate::model::{Drift, DriftQuery, ErrorBody, SnapshotStats};
use crate::service::stats;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}/snapshots/{snapshot_id}/stats",
            get(of_snapshot),
        )
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}/stats",
            get(of_newest),
        )
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}/drift",
            get(drift),
        )
}

/// Column statistics of one snapshot, computed when it was published.
#[utoipa::path(get, operation_id = "get_snapshot_stats", path = "/api/v1/features/{feature_id}/versions/{version_id}/snapshots/{snapshot_id}/stats", tag = "statistics",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path), ("snapshot_id" = i64, Path)),
    responses((status = 200, body = SnapshotStats), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn of_snapshot(
    State(state): State<AppState>,
    Path((feature_id, version_id, snapshot_id)): Path<(i64, i64, i64)>,
) -> Result<axum::Json<SnapshotStats>> {
    Ok(axum::Json(
        stats::of_snapshot(&state.stats_parts(), feature_id, version_id, snapshot_id).await?,
    ))
}

/// Column statistics of the snapshot a version serves now (its newest).
#[utoipa::path(get, operation_id = "get_version_stats", path = "/api/v1/features/{feature_id}/versions/{version_id}/stats", tag = "statistics",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)),
    responses((status = 200, body = SnapshotStats), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn of_newest(
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
) -> Result<axum::Json<SnapshotStats>> {
    Ok(axum::Json(
        stats::of_newest(&state.stats_parts(), feature_id, version_id).await?,
    ))
}

/// Drift between two snapshots of a version (default: the newest against the one before):
/// PSI per value column over the base's deciles (numbers) or top 20 categories, with
/// smoothing; 0.1 is worth watching, 0.25 worth acting on.
#[utoipa::path(get, operation_id = "get_version_drift", path = "/api/v1/features/{feature_id}/versions/{version_id}/drift", tag = "statistics",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path), DriftQuery),
    responses((status = 200, body = Drift), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn drift(
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
    Query(q): Query<DriftQuery>,
) -> Result<axum::Json<Drift>> {
    Ok(axum::Json(
        stats::drift(
            &state.stats_parts(),
            feature_id,
            version_id,
            q.base,
            q.target,
        )
        .await?,
    ))
}
