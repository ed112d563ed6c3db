//! One error type for the whole service, mapped to HTTP in one place.
//!
//! Bodies follow FastAPI: `{"detail": "<message>"}`; request-validation failures (422) carry a
//! list of `{loc, msg, type}` objects as FastAPI does. Internal error text is logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use crate::offline::OfflineError;
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
}

impl From<crate::spark::SparkError> for AppError {
    fn from(e: crate::spark::SparkError) -> Self {
        use crate::spark::SparkError;
        match e {
            SparkError::Unreachable(_) => AppError::Overloaded(format!("{e}; retry later")),
            SparkError::Query(why) => {
                AppError::BadRequest(format!("The Spark computation failed: {why}"))
            }
            SparkError::TimedOut(_) => {
                AppError::BadRequest(format!("The Spark computation failed: {e}"))
            }
            SparkError::Protocol(_) | SparkError::Output(_) => AppError::internal(e),
        }
    }
}

/// Why a request failed on the server's side: the error and each of its sources, for the log.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

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
        if let StoreError::Busy(cause) = &e {
            tracing::warn!(error = %cause, "database overloaded; answering 503");
            AppError::Overloaded("The database is busy; retry later".into())
        } else if let StoreError::VersionGone = e {
            AppError::NotFound(e.to_string())
        } else {
            AppError::Store(e)
        }
    }
}

impl From<OfflineError> for AppError {
    fn from(e: OfflineError) -> Self {
        match e {
            OfflineError::Invalid(reason) => AppError::BadRequest(reason),
            e => AppError::DataStorage(e),
        }
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
            AppError::Store(_) | AppError::Internal(_) => "Internal Server Error".into(),
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
            AppError::Store(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
                .insert(ErrorCause(cause_chain(&self)));
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
