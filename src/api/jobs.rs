//! The jobs log: computes, backfills and scheduled refreshes.

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use super::error::Result;
use super::extract::Query;
use crate::model::{ErrorBody, Job, JobsQuery};
use crate::service::jobs;
use crate::service::present;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/jobs", get(list))
}

/// Computes, backfills and scheduled refreshes, newest first: when each was queued, started
/// and finished, and why it failed.
#[utoipa::path(get, operation_id = "list_jobs", path = "/api/v1/jobs", tag = "jobs",
    params(JobsQuery),
    responses((status = 200, body = Vec<Job>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> Result<axum::Json<Vec<Job>>> {
    Ok(axum::Json(present::all(
        jobs::list(&state.store, &q).await?,
    )))
}
