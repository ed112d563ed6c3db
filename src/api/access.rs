//! Who may call what. With API keys configured, a middleware authenticates every /api/v1 call
//! and records the key's role; every handler that changes state takes [`Change`], which admits
//! write keys only and refuses browsers on origins not allowed. So the read/write decision is
//! made by each route's own signature, not by a list of paths.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::AppError;
use crate::auth::Role;
use crate::service::AppState;

/// With API keys configured, every /api/v1 call needs one; its role goes with the request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let headers = req.headers();
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .ok_or_else(|| {
            AppError::Unauthorized(
                "Missing API key: send Authorization: Bearer <key> or X-API-Key".into(),
            )
        })?;
    let role = state
        .config
        .api_keys
        .role_of(presented)
        .ok_or_else(|| AppError::Unauthorized("Invalid API key".into()))?;
    req.extensions_mut().insert(role);
    Ok(next.run(req).await)
}

/// Every request: the host it is addressed to must be one this server answers to (see
/// `host_allowed`), so a web page whose name re-resolves to this server (DNS rebinding) reaches
/// nothing: its requests carry its own name, and the browser counts it as same-origin.
///
/// A tower layer rather than `from_fn`: it runs on every request, and `from_fn` clones the
/// inner service into a boxed future each time (about 2% of a cached GET's CPU).
#[derive(Clone)]
pub struct CheckHostLayer {
    allowed: Arc<[String]>,
}

impl CheckHostLayer {
    pub fn new(allowed: &[String]) -> Self {
        CheckHostLayer {
            allowed: Arc::from(allowed),
        }
    }
}

impl<S> tower::Layer<S> for CheckHostLayer {
    type Service = CheckHost<S>;

    fn layer(&self, inner: S) -> CheckHost<S> {
        CheckHost {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CheckHost<S> {
    inner: S,
    allowed: Arc<[String]>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for CheckHost<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let named = req
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Some(host) = named.filter(|host| !host_allowed(host, &self.allowed)) {
            let refusal = AppError::MisdirectedRequest(format!(
                "This server does not answer to the host {host:?}: it answers to localhost, IP addresses and the names in ALLOWED_HOSTS"
            ));
            return futures::future::Either::Left(std::future::ready(Ok(
                axum::response::IntoResponse::into_response(refusal),
            )));
        }
        futures::future::Either::Right(self.inner.call(req))
    }
}

/// `localhost` (and `*.localhost`), any IP address, and the listed names. An IP address is safe
/// to admit: rebinding needs a name to re-resolve, and a page loaded from an address has that
/// address as its origin.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.');
    // Loopback's address first: every local client names it, and it needs no parse (the
    // parse was ~300 instructions a request, callgrind).
    if name == "127.0.0.1"
        || name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name
            .get(name.len().saturating_sub(".localhost".len())..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
    {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

/// The credentials of `Bearer <token>`; the scheme name is case-insensitive (RFC 9110).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Taken by every handler that changes state: a write key (when keys are configured), and no
/// browser on a foreign origin. A page anywhere on the web can send a simple cross-origin POST
/// to a local instance without a preflight; browsers always name the page's origin then.
pub struct Change;

impl FromRequestParts<AppState> for Change {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        check_origin(
            &parts.headers,
            &parts.uri,
            &state.config.cors_allowed_origins,
        )?;
        if state.config.api_keys.is_enabled() {
            match parts.extensions.get::<Role>() {
                Some(Role::Write) => {}
                Some(Role::Read) => {
                    return Err(AppError::Forbidden(
                        "This API key may only read; changes need a write key".into(),
                    ))
                }
                None => return Err(AppError::Unauthorized("Missing API key".into())),
            }
        }
        Ok(Change)
    }
}

/// No `Origin`: not a browser, or a same-origin GET. Otherwise the origin must be listed, or
/// be the server's own (its Swagger UI), judged by the host the request was sent to.
fn check_origin(headers: &HeaderMap, uri: &Uri, allowed: &[String]) -> Result<(), AppError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    if allowed.contains(&origin) {
        return Ok(());
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if let (Some(authority), Some(host)) = (authority, host) {
        if authority.eq_ignore_ascii_case(host) {
            return Ok(());
        }
    }
    Err(AppError::Forbidden(format!(
        "Changes are not accepted from the web origin {origin:?}; list it in CORS_ALLOWED_ORIGINS to allow it"
    )))
}

/// CORS for the configured origins only; without any, browsers keep the same-origin policy.
pub fn cors(allowed: &[String]) -> Option<CorsLayer> {
    if allowed.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                axum::http::header::RETRY_AFTER,
            ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn hosts_are_localhost_ip_addresses_or_listed_names() {
        let listed = vec!["features.internal".to_string()];
        for ok in [
            "localhost:8000",
            "LOCALHOST",
            "app.localhost:1",
            "127.0.0.1:8000",
            "10.1.2.3",
            "[::1]:8000",
            "features.internal:8000",
            "Features.Internal.",
        ] {
            assert!(host_allowed(ok, &listed), "{ok}");
        }
        for refused in [
            "rebind.example:8000",
            "localhost.evil.com",
            "features.internal.evil",
            "[nope]:1",
        ] {
            assert!(!host_allowed(refused, &listed), "{refused}");
        }
        assert!(host_allowed("anything.example", &["*".to_string()]));
    }

    #[test]
    fn origins_are_judged_against_the_list_and_the_servers_own_host() {
        let uri = Uri::from_static("/api/v1/features");
        let allowed = vec!["https://app.example.com".to_string()];
        let ok = |o: Option<&str>| check_origin(&headers(o, "localhost:8000"), &uri, &allowed);
        assert!(ok(None).is_ok());
        assert!(ok(Some("http://localhost:8000")).is_ok());
        assert!(ok(Some("https://app.example.com")).is_ok());
        assert!(ok(Some("https://evil.example")).is_err());
        assert!(ok(Some("http://localhost:8001")).is_err());
        assert!(ok(Some("null")).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }
}
