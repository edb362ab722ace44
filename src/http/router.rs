//! Exact-path, exact-method routing.
//!
//! Ferrium's API is a short fixed list of paths, so a hash map from path to its
//! methods is all the routing needed: no patterns, no precedence rules to get
//! wrong. An unknown path is a 404 `not_found`; a known path with another method
//! is a 405 `method_not_allowed` with an `Allow` header. `HEAD` is answered by
//! the `GET` handler when no `HEAD` route exists (the server drops the body).

use std::collections::HashMap;
use std::sync::Arc;

use super::request::{Method, Request};
use super::response::Response;
use super::{BoxFuture, Handler};

struct Route {
    method: Method,
    handler: Arc<dyn Handler>,
    body_limit: Option<u64>,
}

#[derive(Default)]
struct PathRoutes {
    routes: Vec<Route>,
    /// The `Allow` header value, kept up to date as routes are added.
    allow: String,
}

/// A table of routes: build it once, then give it to the server.
///
/// ```
/// use ferrium::http::{Method, Request, Response, Router};
///
/// let router = Router::new()
///     .route(Method::Get, "/health", |_req: Request| async {
///         Response::json(200, &serde_json::json!({"status": "healthy"}))
///     })
///     .route(Method::Post, "/echo", |mut req: Request| async move {
///         match req.body_bytes(1 << 20).await {
///             Ok(body) => Response::with_body(200, "application/octet-stream", body),
///             Err(e) => e.to_response(),
///         }
///     });
/// ```
#[derive(Default)]
pub struct Router {
    paths: HashMap<String, PathRoutes>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Routes `method` on `path` to `handler`. A later route for the same
    /// method and path replaces the earlier one.
    pub fn route(self, method: Method, path: &str, handler: impl Handler) -> Router {
        self.add(method, path, Arc::new(handler), None)
    }

    /// `GET path` (and `HEAD path`) to `handler`.
    /// True when some route serves `path` (whatever the method).
    pub fn has_path(&self, path: &str) -> bool {
        self.paths.contains_key(path)
    }

    pub fn get(self, path: &str, handler: impl Handler) -> Router {
        self.route(Method::Get, path, handler)
    }

    /// `POST path` to `handler`.
    pub fn post(self, path: &str, handler: impl Handler) -> Router {
        self.route(Method::Post, path, handler)
    }

    /// Like [`Router::route`], accepting request bodies up to `max_body` bytes
    /// instead of the server's default (e.g. a snapshot upload).
    pub fn route_with_body_limit(
        self,
        method: Method,
        path: &str,
        max_body: u64,
        handler: impl Handler,
    ) -> Router {
        self.add(method, path, Arc::new(handler), Some(max_body))
    }

    fn add(
        mut self,
        method: Method,
        path: &str,
        handler: Arc<dyn Handler>,
        body_limit: Option<u64>,
    ) -> Router {
        let entry = self.paths.entry(path.to_string()).or_default();
        entry.routes.retain(|r| r.method != method);
        entry.routes.push(Route {
            method,
            handler,
            body_limit,
        });
        let mut allow: Vec<&str> = entry.routes.iter().map(|r| r.method.as_str()).collect();
        if entry.routes.iter().any(|r| r.method == Method::Get)
            && !entry.routes.iter().any(|r| r.method == Method::Head)
        {
            allow.push("HEAD");
        }
        entry.allow = allow.join(", ");
        self
    }

    fn find(&self, method: &Method, path: &str) -> Result<&Route, Option<&str>> {
        let Some(entry) = self.paths.get(path) else {
            return Err(None);
        };
        let found = entry
            .routes
            .iter()
            .find(|r| r.method == *method)
            .or_else(|| {
                if *method == Method::Head {
                    entry.routes.iter().find(|r| r.method == Method::Get)
                } else {
                    None
                }
            });
        found.ok_or(Some(entry.allow.as_str()))
    }
}

impl Handler for Router {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        match self.find(req.method(), req.path()) {
            Ok(route) => route.handler.call(req),
            Err(None) => {
                let resp =
                    Response::error(404, "not_found", format!("no route for {}", req.path()));
                Box::pin(std::future::ready(resp))
            }
            Err(Some(allow)) => {
                let resp = Response::error(
                    405,
                    "method_not_allowed",
                    format!("{} does not allow {}", req.path(), req.method()),
                )
                .header("allow", allow.to_string());
                Box::pin(std::future::ready(resp))
            }
        }
    }

    fn body_limit(&self, method: &Method, path: &str) -> Option<u64> {
        self.find(method, path).ok().and_then(|r| r.body_limit)
    }
}
