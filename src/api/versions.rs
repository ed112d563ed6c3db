use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::access::Change;
use super::error::Result;
use super::extract::{Json, Path};
use crate::model::{ErrorBody, FeatureVersion, VersionCreate, VersionUpdate};
use crate::service::present;
use crate::service::versions;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/features/{feature_id}/versions",
            get(list).post(create),
        )
        .route(
            "/api/v1/features/{feature_id}/versions/{version_id}",
            get(get_one).patch(update).delete(delete),
        )
}

/// Create a version of a feature; it snapshots the feature's SQL and entity key.
#[utoipa::path(post, operation_id = "create_version", path = "/api/v1/features/{feature_id}/versions", tag = "versions",
    params(("feature_id" = i64, Path)), request_body = VersionCreate,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 201, body = FeatureVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    _: Change,
    State(state): State<AppState>,
    Path(feature_id): Path<i64>,
    Json(req): Json<VersionCreate>,
) -> Result<(StatusCode, axum::Json<FeatureVersion>)> {
    let version = versions::create(&state.store, &state.clock, feature_id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(version.into())))
}

/// List a feature's versions, oldest first.
#[utoipa::path(get, operation_id = "list_versions", path = "/api/v1/features/{feature_id}/versions", tag = "versions",
    params(("feature_id" = i64, Path)),
    responses((status = 200, body = Vec<FeatureVersion>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(feature_id): Path<i64>,
) -> Result<axum::Json<Vec<FeatureVersion>>> {
    Ok(axum::Json(present::all(
        versions::list(&state.store, feature_id).await?,
    )))
}

/// Get one version of a feature.
#[utoipa::path(get, operation_id = "get_version", path = "/api/v1/features/{feature_id}/versions/{version_id}", tag = "versions",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)),
    responses((status = 200, body = FeatureVersion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
) -> Result<axum::Json<FeatureVersion>> {
    Ok(axum::Json(
        versions::get(&state.store, feature_id, version_id)
            .await?
            .into(),
    ))
}

/// Change a version's status (active, deprecated, archived) and/or its refresh period.
#[utoipa::path(patch, operation_id = "update_version", path = "/api/v1/features/{feature_id}/versions/{version_id}", tag = "versions",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)), request_body = VersionUpdate,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = FeatureVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    _: Change,
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
    Json(req): Json<VersionUpdate>,
) -> Result<axum::Json<FeatureVersion>> {
    let version = versions::update(&state, feature_id, version_id, req).await?;
    Ok(axum::Json(version.into()))
}

/// Delete a version and its vectors.
#[utoipa::path(delete, operation_id = "delete_version", path = "/api/v1/features/{feature_id}/versions/{version_id}", tag = "versions",
    params(("feature_id" = i64, Path), ("version_id" = i64, Path)),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete(
    _: Change,
    State(state): State<AppState>,
    Path((feature_id, version_id)): Path<(i64, i64)>,
) -> Result<StatusCode> {
    versions::delete(&state, feature_id, version_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
