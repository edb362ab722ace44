//! What every REST and peer request on the HTTP listener goes through:
//! the access check of its operation, then its handler, counted and timed.

use crate::api::op::RestOps;
use crate::auth::Auth;
use crate::http::{self, Router};
use std::sync::Arc;
use std::time::Instant;

/// Checks access, then counts every request by route, method and status,
/// and times it.
pub struct Edge {
    router: Arc<Router>,
    ops: RestOps,
    auth: Arc<Auth>,
}

impl Edge {
    pub fn new(router: Arc<Router>, ops: RestOps, auth: Arc<Auth>) -> Edge {
        Edge { router, ops, auth }
    }
}

impl http::Handler for Edge {
    fn call(&self, req: http::Request) -> http::BoxFuture<http::Response> {
        if let Err(denied) = self.auth.check(self.ops.of(req.path()), &req) {
            return Box::pin(async move { denied });
        }
        let route = if self.router.has_path(req.path()) {
            req.path().to_string()
        } else {
            "other".to_string()
        };
        let method = req.method().as_str().to_string();
        let start = Instant::now();
        let fut = self.router.call(req);
        let metrics = self.auth.metrics().clone();
        Box::pin(async move {
            let resp = fut.await;
            metrics.http_request(&route, &method, resp.status(), start.elapsed());
            log::debug!("http: method {route} -> {}", resp.status());
            resp
        })
    }

    fn body_limit(&self, method: &http::Method, path: &str) -> Option<u64> {
        self.router.body_limit(method, path)
    }
}
