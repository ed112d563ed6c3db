//! Request ids: a request keeps the `x-request-id` it arrives with, one without gets a random
//! per-process prefix and a counter (unique enough to find a request in the logs, and unlike a
//! UUID per request it costs no system call), and the answer carries the same id back.
//!
//! One layer does both, where tower-http's pair (`SetRequestId` + `PropagateRequestId`) is two
//! layers and an extension inserted into every request: on the serving path every layer counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request, Response};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct RequestIdLayer {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIdLayer {
    pub fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        let random = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        RequestIdLayer {
            prefix: format!("{:08x}-", random as u32).into(),
            next: Arc::new(AtomicU64::new(1)),
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
                req.headers_mut().insert(X_REQUEST_ID.clone(), made.clone());
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
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        Poll::Ready(Ok(response))
    }
}
