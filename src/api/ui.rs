//! The web console at /ui: one page and its script and style, embedded in the binary. The page
//! reads everything through the JSON API, so it shows nothing the caller's key could not read.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::service::AppState;

const PAGE: &str = include_str!("../../assets/ui/index.html");
const SCRIPT: &str = include_str!("../../assets/ui/app.js");
const STYLE: &str = include_str!("../../assets/ui/app.css");

/// Only this server: no script, style, image or request may come from or go anywhere else.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
        .route("/ui/{*path}", get(page))
}

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut response =
        ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, cache)], body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE, "no-cache")
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT, "no-cache")
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE, "no-cache")
}
