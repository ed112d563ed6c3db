use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::Either;
use std::future::Ready;

use axum::extract::RawQuery;
use std::borrow::Cow;

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
#[utoipa::path(get, operation_id = "get_feature_vector", path = "/api/v1/feature-vectors", tag = "serving", params(VectorQuery<'_>),
    responses((status = 200, body = FeatureVector), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn get_vector(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    answer(&state, raw.as_deref().unwrap_or("")).await
}

/// The answer held whole in this process, ready without waiting (`vectors::get_held`), or a
/// bad query's error; `None`: `answer` must be awaited.
fn answer_held(state: &AppState, raw_query: &str) -> Option<Response> {
    let query = match parse_vector_query(raw_query) {
        Ok(query) => query,
        Err(e) => return Some(e.into_response()),
    };
    if query.as_of.is_some() {
        return None;
    }
    let answer = vectors::get_held(&state.cache, &state.online, &query)?;
    Some(match answer {
        Ok(body) => json_response(body),
        Err(e) => AppError::from(e).into_response(),
    })
}

async fn answer(state: &AppState, raw_query: &str) -> Result<Response> {
    match answer_held(state, raw_query) {
        Some(held) => Ok(held),
        None => answer_awaited(state, raw_query).await,
    }
}

/// The answer `answer_held` could not give.
async fn answer_awaited(state: &AppState, raw_query: &str) -> Result<Response> {
    let query = parse_vector_query(raw_query)?;
    let body = match query.as_of {
        // Boxed: the common answer's future stays small (see `service::vectors::get`).
        Some(at) => Box::pin(history::vector_as_of(state, &query, at)).await?,
        None => vectors::get(state, &query).await?,
    };
    Ok(json_response(body))
}

/// `GET /api/v1/feature-vectors` as a service of its own, for `super::hot_route` to answer
/// before the router: the same answers as `get_vector`, without extractors.
pub fn get_vector_service(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = Infallible,
    Future = Either<Ready<std::result::Result<Response, Infallible>>, AnswerLater>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |req: Request| {
        let raw_query = req.uri().query().unwrap_or("");
        // An answer held in process is ready now: no handler future to build and move
        // (the futures' moves were ~1.7k of a cached GET's ~17k instructions, callgrind).
        if let Some(held) = answer_held(&state, raw_query) {
            return Either::Left(std::future::ready(Ok(held)));
        }
        let state = state.clone();
        // Boxed, as the router boxes a route's future: unboxed, every layer above moved the
        // whole handler future (its database paths make it kilobytes), and memcpy grew to
        // 7k instructions a request.
        Either::Right(Box::pin(async move {
            let raw_query = req.uri().query().unwrap_or("");
            Ok(answer_awaited(&state, raw_query).await.into_response())
        }) as AnswerLater)
    })
}

/// The single-vector answer that must be awaited (a miss, Redis's epoch off its lease, an
/// aggregation feature, an `as_of`).
pub type AnswerLater =
    Pin<Box<dyn Future<Output = std::result::Result<Response, Infallible>> + Send>>;

/// A JSON answer from ready bytes. Built by hand: the `([(CONTENT_TYPE, "...")], body)` tuple
/// validates and copies the header's text into a new allocation on every answer.
fn json_response(body: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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
    Ok(json_response(body))
}

/// The serving hot path parses its parameters by hand: the generic query extractor
/// (serde_urlencoded behind serde_path_to_error) was ~5% of a cached request's CPU. Any other
/// parameter is a key column's (`user_id=u1`); they are ignored when `entity_id` is given,
/// as they always were.
fn parse_vector_query(raw: &str) -> Result<VectorQuery<'_>> {
    let mut entity_id = None;
    let mut feature_name = None;
    let mut feature_version_id = None;
    let mut as_of = None;
    let mut key: Vec<(String, String)> = Vec::new();
    for (name, value) in query_pairs(raw) {
        match name.as_ref() {
            "entity_id" => entity_id = Some(value),
            "feature_name" => feature_name = Some(value),
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

/// The query's `name=value` pairs, decoded as `form_urlencoded::parse` decodes them, but
/// borrowed from the query when a pair holds nothing to decode (no `%`, no `+`), as a model's
/// requests do: the crate's parser checked and copied every pair, a fifth of the instructions
/// a cached GET spends in its handler (callgrind).
fn query_pairs(raw: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    raw.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        if pair.bytes().any(|b| b == b'%' || b == b'+') {
            if let Some(decoded) = form_urlencoded::parse(pair.as_bytes()).next() {
                return decoded;
            }
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (Cow::Borrowed(name), Cow::Borrowed(value))
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
    use super::{parse_vector_query, query_pairs};
    use std::borrow::Cow;

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

    #[test]
    fn plain_parameters_are_borrowed_and_escaped_ones_decoded() {
        let q = parse_vector_query("entity_id=u1&feature_name=spend").unwrap();
        assert!(matches!(q.entity_id, Some(Cow::Borrowed("u1"))));
        assert!(matches!(q.feature_name, Some(Cow::Borrowed("spend"))));
        let q = parse_vector_query("entity_id=a+b%2Bc&feature_name=f").unwrap();
        assert_eq!(q.entity_id.as_deref(), Some("a b+c"));
    }

    #[test]
    fn query_pairs_decode_as_form_urlencoded_does() {
        // Every string of these pieces up to four long: separators, escapes (whole, cut short
        // and invalid UTF-8), plus signs, and text.
        let pieces = [
            "&", "=", "a", "%41", "%", "%4", "+", "%C3%A9", "%FF", "é", "&&", "==",
        ];
        let mut queries = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = queries
                .iter()
                .flat_map(|q| pieces.iter().map(move |p| format!("{q}{p}")))
                .collect();
            queries.extend(longer);
        }
        for query in &queries {
            let ours: Vec<_> = query_pairs(query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(ours, theirs, "query {query:?}");
        }
    }
}
