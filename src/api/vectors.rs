use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::extract::Query;
use crate::error::Result;
use crate::model::{ErrorBody, FeatureVector, VectorQuery};
use crate::service::vectors;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/feature-vectors", get(get_vector))
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
