use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::extract::{Json, Query};
use crate::error::Result;
use crate::model::{BatchRequest, BatchResponse, ErrorBody, FeatureVector, VectorQuery};
use crate::service::{batch, vectors};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/feature-vectors", get(get_vector))
        .route("/api/v1/feature-vectors/batch", post(get_batch))
}

/// Serve one entity's feature vector, by feature name (newest active computed version) or by
/// version id.
#[utoipa::path(get, path = "/api/v1/feature-vectors", tag = "serving", params(VectorQuery),
    responses((status = 200, body = FeatureVector), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_vector(
    State(state): State<AppState>,
    Query(query): Query<VectorQuery>,
) -> Result<Response> {
    let body = vectors::get(&state, &query).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Serve many entities x many features in one call: one row per entity, each feature's values
/// (null when missing, listed in `missing`), and the version that served each feature.
#[utoipa::path(post, path = "/api/v1/feature-vectors/batch", tag = "serving", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_batch(
    State(state): State<AppState>,
    Json(req): Json<BatchRequest>,
) -> Result<Response> {
    let body = batch::get(&state, &req).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}
