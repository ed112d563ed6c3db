//! Request ids for requests that arrive without `x-request-id`: a random per-process prefix and
//! a counter. Unique enough to find a request in the logs, and unlike a UUID per request it
//! costs no system call on the serving path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{HeaderValue, Request};
use tower_http::request_id::RequestId;

#[derive(Clone)]
pub struct MakeRequestId {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl MakeRequestId {
    pub fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        let random = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        MakeRequestId {
            prefix: format!("{:08x}", random as u32).into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}
