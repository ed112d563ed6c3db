use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use axum::extract::RawQuery;

use super::error::AppError;
use super::error::Result;
use super::extract::{body_rejection, parse_json, require_json_content_type};
use crate::model::{BatchRequest, BatchResponse, ErrorBody, FeatureVector, VectorQuery};
use crate::service::AppState;
use crate::service::{batch, history, vectors};

/// The single-vector route, which `super::hot_route` also answers before the router.
pub const VECTOR_PATH: &str = "/api/v1/feature-vectors";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(VECTOR_PATH, get(get_vector))
        .route("/api/v1/feature-vectors/batch", post(get_batch))
}

/// Serve one entity's feature vector, by feature name (newest active computed version) or by
/// version id.
#[utoipa::path(get, operation_id = "get_feature_vector", path = "/api/v1/feature-vectors", tag = "serving", params(VectorQuery),
    responses((status = 200, body = FeatureVector), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_vector(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    answer(&state, raw.as_deref().unwrap_or("")).await
}

async fn answer(state: &AppState, raw_query: &str) -> Result<Response> {
    let query = parse_vector_query(raw_query)?;
    let body = match query.as_of {
        // Boxed: the common answer's future stays small (see `service::vectors::get`).
        Some(at) => Box::pin(history::vector_as_of(state, &query, at)).await?,
        None => vectors::get(state, &query).await?,
    };
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/feature-vectors` as a service of its own, for `super::hot_route` to answer
/// before the router: the same answers as `get_vector`, without extractors.
pub fn get_vector_service(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = Infallible,
    Future = Pin<Box<dyn Future<Output = std::result::Result<Response, Infallible>> + Send>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |req: Request| {
        let state = state.clone();
        // Boxed, as the router boxes a route's future: unboxed, every layer above moved the
        // whole handler future (its database paths make it kilobytes), and memcpy grew to
        // 7k instructions a request.
        Box::pin(async move {
            let raw_query = req.uri().query().unwrap_or("");
            Ok(answer(&state, raw_query).await.into_response())
        }) as Pin<Box<dyn Future<Output = _> + Send>>
    })
}

/// Serve many entities x many features in one call: one row per entity, each feature's values
/// (null when missing, listed in `missing`), and the version that served each feature.
#[utoipa::path(post, operation_id = "get_feature_vectors_batch", path = "/api/v1/feature-vectors/batch", tag = "serving", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    // The body read by hand rather than with `extract::Json` (same 415, 413 and 422 answers):
    // `BatchRequest` borrows its entity ids from the body, which `Json` cannot lend.
    require_json_content_type(&headers)?;
    let body = body.map_err(body_rejection)?;
    let req: BatchRequest = parse_json(&body)?;
    let body = batch::get(&state, &req).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// The serving hot path parses its parameters by hand: the generic query extractor
/// (serde_urlencoded behind serde_path_to_error) was ~5% of a cached request's CPU. Any other
/// parameter is a key column's (`user_id=u1`); they are ignored when `entity_id` is given,
/// as they always were.
fn parse_vector_query(raw: &str) -> Result<VectorQuery> {
    let mut entity_id = None;
    let mut feature_name = None;
    let mut feature_version_id = None;
    let mut as_of = None;
    let mut key: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        match name.as_ref() {
            "entity_id" => entity_id = Some(value.into_owned()),
            "feature_name" => feature_name = Some(value.into_owned()),
            "feature_version_id" => {
                feature_version_id = Some(value.parse::<i64>().map_err(|_| {
                    AppError::validation(
                        &["query", "feature_version_id"],
                        format!("Input should be a valid integer, got {value:?}"),
                    )
                })?)
            }
            "as_of" => as_of = Some(parse_instant("as_of", &value)?),
            _ => {
                if key.iter().any(|(k, _)| *k == name) {
                    return Err(AppError::validation(
                        &["query", &name],
                        format!("the key column '{name}' is given twice"),
                    ));
                }
                key.push((name.into_owned(), value.into_owned()));
            }
        }
    }
    if entity_id.is_none() && key.is_empty() {
        return Err(AppError::validation(
            &["query", "entity_id"],
            "Field required: entity_id (or the feature's key columns, each as a parameter)",
        ));
    }
    Ok(VectorQuery {
        entity_id,
        feature_name,
        feature_version_id,
        as_of,
        key,
    })
}

/// An RFC 3339 instant, or a 422 naming the parameter.
pub fn parse_instant(name: &str, value: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            AppError::validation(
                &["query", name],
                format!("{name} must be an RFC 3339 date-time like 2024-01-31T00:00:00Z: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::parse_vector_query;

    #[test]
    fn vector_queries_are_decoded() {
        let q = parse_vector_query("entity_id=a%26b%3Dc&feature_name=f%20x&feature_version_id=7")
            .unwrap();
        assert_eq!(q.entity_id.as_deref(), Some("a&b=c"));
        assert_eq!(q.feature_name.as_deref(), Some("f x"));
        assert_eq!(q.feature_version_id, Some(7));
        assert!(parse_vector_query("feature_name=f").is_err());
        assert!(parse_vector_query("entity_id=a&feature_version_id=x").is_err());
        let q = parse_vector_query("feature_name=f&user_id=u%201&shop=7").unwrap();
        assert_eq!(q.entity_id, None);
        assert_eq!(
            q.key,
            [
                ("user_id".into(), "u 1".into()),
                ("shop".into(), "7".into())
            ]
        );
        assert!(parse_vector_query("feature_name=f&shop=7&shop=8").is_err());
    }
}
