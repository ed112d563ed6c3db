use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::error::{AppError, Result};
use crate::model::{ErrorBody, Health, Readiness};
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// Readiness: the database answers and the data location holds every table the database
/// registers (checked at most every few seconds); reports the database backend and the cache mode
/// (`memory`, `redis`, or `memory (redis unreachable)`).
#[utoipa::path(get, operation_id = "ready", path = "/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>> {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return Err(AppError::Unavailable("Database unavailable".into()));
    }
    if let Err(reason) = state
        .ready
        .data_location(&state.offline, &state.store)
        .await
    {
        return Err(AppError::Unavailable(reason));
    }
    Ok(Json(Readiness {
        status: "ready",
        database: state.store.backend(),
        cache: state.cache.mode(),
    }))
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, operation_id = "health", path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "healthy" })
}
