//! Extractors whose rejections are the app's error type, so malformed input always gets a
//! FastAPI-shaped JSON 4xx instead of axum's plain-text rejections.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::AppError;

/// A JSON body. A missing Content-Type is read as JSON (as FastAPI does); any other type is
/// refused with 415.
pub struct Json<T>(pub T);

pub fn body_rejection(rejection: BytesRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::validation(&["body"], rejection.body_text())
    }
}

/// Refuse bodies that declare a non-JSON type.
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = mime.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType(format!(
            "Unsupported Content-Type '{essence}': send application/json"
        )))
    }
}

pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::validation(
            &["body"],
            "Field required: the body is empty",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = if e.is_data() {
            format!("Invalid body: {e}")
        } else {
            format!("JSON decode error: {e}")
        };
        AppError::validation(&["body"], msg)
    })
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

/// Path parameters; a non-integer id is a 422.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| AppError::validation(&["path"], e.body_text()))
    }
}

/// Query parameters; missing or mistyped ones are a 422.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| AppError::validation(&["query"], e.body_text()))
    }
}
