use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::access::Change;
use super::error::{AppError, Result};
use super::extract::{body_rejection, parse_json, require_json_content_type, Path, Query};
use crate::model::{ComputeQuery, ComputeRequest, ComputeResponse, ErrorBody};
use crate::service::compute;
use crate::service::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/features/{feature_id}/compute", post(compute))
}

/// Both of the original's request forms: `{version, raw_data}` (its code) or a bare array of
/// rows with `?version=` (its README). No body or no rows: compute over the ingested rows.
/// The version, the rows and `as_of` of a compute request.
type Parsed = (String, Vec<Map<String, Value>>, Option<DateTime<Utc>>);

fn parse_request(query: ComputeQuery, body: &[u8]) -> Result<Parsed> {
    // Checked even when the body's version wins: a malformed parameter is never ignored.
    if let Some(version) = &query.version {
        crate::service::check_label("version", version, crate::service::MAX_VERSION_LEN)?;
    }
    let mut as_of = query.as_of;
    let (version, rows) = if body.iter().all(u8::is_ascii_whitespace) {
        (query.version, Vec::new())
    } else {
        match parse_json::<Value>(body)? {
            Value::Array(items) => {
                let rows = items
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(row) => Ok(row),
                        _ => Err(AppError::validation(
                            &["body"],
                            "every row of raw data must be a JSON object",
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                (query.version, rows)
            }
            object @ Value::Object(_) => {
                let req: ComputeRequest = serde_json::from_value(object)
                    .map_err(|e| AppError::validation(&["body"], format!("Invalid body: {e}")))?;
                as_of = req.as_of.or(as_of);
                (
                    req.version.or(query.version),
                    req.raw_data.unwrap_or_default(),
                )
            }
            Value::Null => (query.version, Vec::new()),
            _ => {
                return Err(AppError::validation(
                    &["body"],
                    "expected an object {version, raw_data} or an array of rows",
                ))
            }
        }
    };
    let version = version.ok_or_else(|| {
        AppError::validation(
            &["query", "version"],
            "Field required: version (in the body or ?version=)",
        )
    })?;
    Ok((version, rows, as_of))
}

/// Compute a version of a feature and publish its vectors.
#[utoipa::path(post, operation_id = "compute_version", path = "/api/v1/features/{feature_id}/compute", tag = "versions",
    params(("feature_id" = i64, Path), ComputeQuery),
    request_body(content = Option<crate::model::ComputeBody>, description = "`{version, raw_data}`, or a bare array of rows with `?version=`; no rows means the rows ingested into the raw table"),
    responses((status = 403, description = "A read-only API key, or a browser on an origin not allowed", body = ErrorBody), (status = 200, body = ComputeResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, description = "All compute workers are busy and the queue is full; retry after Retry-After seconds", body = ErrorBody)))]
pub async fn compute(
    _: Change,
    State(state): State<AppState>,
    Path(feature_id): Path<i64>,
    Query(query): Query<ComputeQuery>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ComputeResponse>> {
    require_json_content_type(&headers)?;
    let body = body.map_err(body_rejection)?;
    let (version, rows, as_of) = parse_request(query, &body)?;
    Ok(axum::Json(
        compute::compute(&state, feature_id, &version, rows, as_of).await?,
    ))
}
