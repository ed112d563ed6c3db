//! The route models call at volume, answered before the router.
//!
//! Going through axum's router cost a cached `GET /api/v1/feature-vectors` ~3k of its ~28k
//! instructions in user space (callgrind: the route match, the `MatchedPath` and URL-parameter
//! extensions, whose map is allocated per request, and a boxed clone of the route's service).
//! `HotRoute` sends that one method and path straight to its service and everything else to
//! the router. The route stays in the router too, which answers it when API keys are
//! configured (authentication is a route layer there) and for `HEAD`, and documents it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures::future::Either;

#[derive(Clone)]
pub struct HotRoute<H, R> {
    path: &'static str,
    /// `None`: every request goes to the router.
    hot: Option<H>,
    rest: R,
}

impl<H, R> HotRoute<H, R> {
    pub fn new(path: &'static str, hot: Option<H>, rest: R) -> Self {
        HotRoute { path, hot, rest }
    }
}

impl<H, R> tower::Service<Request> for HotRoute<H, R>
where
    H: tower::Service<Request, Response = Response, Error = Infallible>,
    R: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<H::Future, R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if let Some(hot) = &mut self.hot {
            std::task::ready!(hot.poll_ready(cx))?;
        }
        self.rest.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match &mut self.hot {
            Some(hot) if req.method() == Method::GET && req.uri().path() == self.path => {
                Either::Left(hot.call(req))
            }
            _ => Either::Right(self.rest.call(req)),
        }
    }
}
