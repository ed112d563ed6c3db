//! The edge's one error type: every failure a client is told of, mapped to HTTP in one place.
//! Below it, services fail with `ServiceError` (in the domain's words) and the store, the data
//! location and Spark with their own errors; `From<ServiceError>` decides each one's status.
//!
//! Bodies follow FastAPI: `{"detail": "<message>"}`; request-validation failures (422) carry a
//! list of `{loc, msg, type}` objects as FastAPI does. Internal error text is logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use crate::offline::OfflineError;
use crate::service::ServiceError;
pub use crate::store::StoreError;

/// What an overloaded answer asks a client to wait before trying again.
const RETRY_AFTER_SECONDS: &str = "2";

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A domain rule refused the request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The addressed resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request was malformed: bad JSON, missing or mistyped fields (422).
    #[error("{msg}")]
    Validation { loc: Vec<String>, msg: String },
    /// The request body is larger than the configured limit (413).
    #[error("Request body too large")]
    PayloadTooLarge,
    /// The body declares a type this endpoint does not read (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No API key, or one that is not configured (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A read-only API key asked for a change (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request names a host this server does not answer to (421): DNS rebinding.
    #[error("{0}")]
    MisdirectedRequest(String),
    /// The database does not answer (503, from /ready).
    #[error("{0}")]
    Unavailable(String),
    /// The route exists but not for this method (405).
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// Too much work is already waiting (503 with Retry-After).
    #[error("{0}")]
    Overloaded(String),
    /// A store failure the service did not word for the client: busy is a 503 (see `From`),
    /// anything else a 500 that keeps its cause for the log.
    #[error("store error")]
    Store(#[source] StoreError),
    /// The data location (DATA_DIR, object storage) failed: a 503 with Retry-After, whose
    /// cause is logged.
    #[error("The data storage is unavailable; retry later")]
    DataStorage(#[source] OfflineError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A fault of ours below the edge, whose cause is logged (500).
    #[error("internal error")]
    Fault(#[source] crate::service::error::Cause),
}

impl From<ServiceError> for AppError {
    /// Each kind's status; the words are the service's (`ServiceError::public_detail`).
    fn from(e: ServiceError) -> Self {
        use crate::spark::SparkError;
        let detail = e.public_detail();
        match e {
            ServiceError::Invalid(_) => AppError::BadRequest(detail),
            ServiceError::NotFound(_) => AppError::NotFound(detail),
            ServiceError::Unreadable(why) => AppError::validation(&["body"], why),
            ServiceError::TooLarge => AppError::PayloadTooLarge,
            ServiceError::Overloaded(_) => AppError::Overloaded(detail),
            ServiceError::Store(StoreError::Busy(cause)) => {
                tracing::warn!(error = %cause, "database overloaded; answering 503");
                AppError::Overloaded(detail)
            }
            ServiceError::Store(StoreError::VersionGone) => AppError::NotFound(detail),
            ServiceError::Store(e) => AppError::Store(e),
            ServiceError::Storage(OfflineError::Invalid(_)) => AppError::BadRequest(detail),
            ServiceError::Storage(e) => AppError::DataStorage(e),
            ServiceError::Spark(SparkError::Unreachable(_)) => AppError::Overloaded(detail),
            ServiceError::Spark(SparkError::Query(_) | SparkError::TimedOut(_)) => {
                AppError::BadRequest(detail)
            }
            ServiceError::Spark(e) => AppError::Fault(Box::new(e)),
            ServiceError::Fault(cause) => AppError::Fault(cause),
        }
    }
}

fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // thiserror's `{0}` display often repeats the source verbatim.
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    chain
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e).into()
    }
}

impl From<OfflineError> for AppError {
    fn from(e: OfflineError) -> Self {
        ServiceError::Storage(e).into()
    }
}

impl AppError {
    pub fn validation(loc: &[&str], msg: impl Into<String>) -> Self {
        AppError::Validation {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        AppError::Internal(err.to_string())
    }

    /// What a client is told: the message, or a generic one for a server-side fault (whose
    /// text stays in the log).
    pub fn public_detail(&self) -> String {
        match self {
            AppError::Store(_) | AppError::Internal(_) | AppError::Fault(_) => {
                "Internal Server Error".into()
            }
            other => other.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            AppError::Unavailable(_) | AppError::Overloaded(_) | AppError::DataStorage(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Store(_) | AppError::Internal(_) | AppError::Fault(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Validation { loc, msg } => {
                json!({ "detail": [{ "loc": loc, "msg": msg, "type": "value_error" }] })
            }
            other => json!({ "detail": other.public_detail() }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status.is_server_error() {
            // Logged by the metrics layer, which knows the request id.
            response
                .extensions_mut()
                .insert(crate::metrics::ErrorCause(cause_chain(&self)));
        }
        if let AppError::Overloaded(_) | AppError::DataStorage(_) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spark::SparkError;

    /// Status, the `detail` a client reads, and the Retry-After header if any.
    async fn answer(e: ServiceError) -> (StatusCode, String, Option<String>) {
        let response = AppError::from(e).into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        (status, body["detail"].to_string(), retry_after)
    }

    #[tokio::test]
    async fn each_kind_of_service_failure_gets_its_status_and_words() {
        let cases = [
            (
                ServiceError::Invalid("no such column".into()),
                StatusCode::BAD_REQUEST,
                "no such column",
            ),
            (
                ServiceError::NotFound("Feature with ID 7 not found".into()),
                StatusCode::NOT_FOUND,
                "Feature with ID 7 not found",
            ),
            (
                ServiceError::Store(StoreError::VersionGone),
                StatusCode::NOT_FOUND,
                "deleted while it was computed",
            ),
            (
                ServiceError::Storage(OfflineError::Invalid("not a Delta table".into())),
                StatusCode::BAD_REQUEST,
                "not a Delta table",
            ),
            (
                ServiceError::Spark(SparkError::Query("UNRESOLVED_COLUMN".into())),
                StatusCode::BAD_REQUEST,
                "The Spark computation failed: UNRESOLVED_COLUMN",
            ),
            (
                ServiceError::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
        ];
        for (error, status, words) in cases {
            let (got, detail, retry_after) = answer(error).await;
            assert_eq!(got, status, "{detail}");
            assert!(detail.contains(words), "{detail} lacks {words}");
            assert_eq!(retry_after, None);
        }
    }

    #[tokio::test]
    async fn overload_is_a_503_with_retry_after_and_a_fault_a_500_that_keeps_its_cause_to_itself() {
        for overloaded in [
            ServiceError::Overloaded("the compute queue is full".into()),
            ServiceError::Store(StoreError::Busy("database is locked".into())),
            ServiceError::Spark(SparkError::Unreachable("connection refused".into())),
            ServiceError::Storage(OfflineError::Storage("bucket unreachable".into())),
        ] {
            let (status, detail, retry_after) = answer(overloaded).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{detail}");
            assert_eq!(retry_after.as_deref(), Some(RETRY_AFTER_SECONDS));
        }
        let fault = ServiceError::fault(std::io::Error::other("/srv/secret/path is unreadable"));
        let response = AppError::from(fault).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cause = response
            .extensions()
            .get::<crate::metrics::ErrorCause>()
            .expect("the cause, for the log")
            .0
            .clone();
        assert!(cause.contains("/srv/secret/path is unreadable"), "{cause}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        assert_eq!(&body[..], br#"{"detail":"Internal Server Error"}"#);
    }
}
