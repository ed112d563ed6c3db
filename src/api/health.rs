use axum::routing::get;
use axum::{Json, Router};

use crate::model::Health;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "healthy" })
}
