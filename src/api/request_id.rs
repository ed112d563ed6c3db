//! Request ids: a request keeps the `x-request-id` it arrives with, one without gets a random
//! per-process prefix and a counter (unique enough to find a request in the logs, and unlike a
//! UUID per request it costs no system call), and the answer carries the same id back.
//!
//! One layer does both, where tower-http's pair (`SetRequestId` + `PropagateRequestId`) is two
//! layers and an extension inserted into every request: on the serving path every layer counts.
//! For the same reason a made id is not written into the request (its header map, sized for
//! the headers that came, grew for it, and the id was shared between request and answer) unless
//! the per-request span, on at debug level, shows it: it goes only into the answer. So the
//! server-error log, which must name the id, is written here, with the route, method and cause
//! the layers inside leave on the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request, Response};

use super::metrics::Failed;
use crate::metrics::ErrorCause;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct RequestIdLayer {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
    /// Whether a made id is also written into the request, for the layers inside to read.
    into_request: bool,
}

impl RequestIdLayer {
    /// `into_request`: the layers inside read the id from the request (the debug span does).
    pub fn new(into_request: bool) -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        let random = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        RequestIdLayer {
            prefix: format!("{:08x}-", random as u32).into(),
            next: Arc::new(AtomicU64::new(1)),
            into_request,
        }
    }

    fn make(&self) -> Option<HeaderValue> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n);
        let mut id = String::with_capacity(self.prefix.len() + digits.len());
        id.push_str(&self.prefix);
        id.push_str(digits);
        // From a String: the bytes move into the header value, no copy.
        HeaderValue::try_from(id).ok()
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId {
            inner,
            ids: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
    ids: RequestIdLayer,
}

impl<S, B, R> tower::Service<Request<B>> for RequestId<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Propagate<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(sent) => Some(sent.clone()),
            None => self.ids.make().inspect(|made| {
                if self.ids.into_request {
                    req.headers_mut().insert(X_REQUEST_ID.clone(), made.clone());
                }
            }),
        };
        Propagate {
            inner: self.inner.call(req),
            id,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer with the request's id added.
    pub struct Propagate<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for Propagate<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let id = this.id.take();
        if response.status().is_server_error() {
            log_failure(&response, id.as_ref());
        }
        if let Some(id) = id {
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        Poll::Ready(Ok(response))
    }
}

/// A server error, at the default level, with what a client's report can be matched to: the
/// request id, the route and method (`Failed`, left by `super::metrics::Track`), and the
/// cause chain the client was not shown.
fn log_failure<R>(response: &Response<R>, id: Option<&HeaderValue>) {
    let request_id = id.and_then(|v| v.to_str().ok()).unwrap_or("");
    let failed = response.extensions().get::<Failed>();
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map_or("", |c| c.0.as_str());
    tracing::error!(
        method = failed.map_or("", |f| f.method),
        route = failed.map_or("unmatched", |f| f.route),
        status = response.status().as_u16(),
        request_id,
        cause,
        "request failed"
    );
}
