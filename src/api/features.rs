use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::access::Change;
use super::error::Result;
use super::extract::{Json, Path};
use crate::model::{ErrorBody, Feature, FeatureCreate};
use crate::service::features;
use crate::service::present;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/features", get(list).post(create))
        .route("/api/v1/features/{feature_id}", get(get_one).delete(delete))
}

/// Define a feature: SQL over the raw table `data`, keyed by `entity_key`.
#[utoipa::path(post, operation_id = "create_feature", path = "/api/v1/features", tag = "features", request_body = FeatureCreate,
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 201, body = Feature), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, description = "All compute workers are busy and the queue is full; retry after Retry-After seconds", body = ErrorBody)))]
pub async fn create(
    _: Change,
    State(state): State<AppState>,
    Json(req): Json<FeatureCreate>,
) -> Result<(StatusCode, axum::Json<Feature>)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(features::create(&state, req).await?.into()),
    ))
}

/// List features, oldest first.
#[utoipa::path(get, operation_id = "list_features", path = "/api/v1/features", tag = "features",
    responses((status = 200, body = Vec<Feature>)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<Feature>>> {
    Ok(axum::Json(present::all(
        features::list(&state.store).await?,
    )))
}

/// Get a feature.
#[utoipa::path(get, operation_id = "get_feature", path = "/api/v1/features/{feature_id}", tag = "features",
    params(("feature_id" = i64, Path)),
    responses((status = 200, body = Feature), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(feature_id): Path<i64>,
) -> Result<axum::Json<Feature>> {
    Ok(axum::Json(
        features::get(&state.store, feature_id).await?.into(),
    ))
}

/// Delete a feature with its versions and vectors.
#[utoipa::path(delete, operation_id = "delete_feature", path = "/api/v1/features/{feature_id}", tag = "features",
    params(("feature_id" = i64, Path)),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete(
    _: Change,
    State(state): State<AppState>,
    Path(feature_id): Path<i64>,
) -> Result<StatusCode> {
    features::delete(&state, feature_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
