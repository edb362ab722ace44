//! The REST API (README, "REST API"): thin translations of JSON requests into
//! [`Node`] calls and of [`node::Error`] into statuses and JSON error bodies.
//!
//! The rooms mirror the gRPC front end ([`super::grpc`]): [`kv`],
//! [`management`], [`health`], [`txn`], [`watch`], [`lease`], [`lock`] and [`snapshot`] hold the handlers, [`errors`] the one
//! error translation, and [`edge`] what every request goes through (the
//! access check by [`super::op`], metrics). This file registers each
//! route with its operation.

pub mod edge;
pub mod errors;
pub mod health;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod management;
pub mod snapshot;
pub mod txn;
pub mod watch;

pub use edge::Edge;
pub use errors::error_response;

use super::op::{Op, Routes};
use crate::http::{Method, Request, Response};
use crate::metrics::Sources;
use crate::node::Node;
use health::{health, metrics, ready};
use kv::{list, read, write};
use management::{add_learner, change_membership, cluster_status, init, is_leader, leader};

/// Adds the client routes to `routes`, each with its operation.
pub fn routes(routes: Routes, node: Node, max_body: usize, sources: Sources) -> Routes {
    let metrics_node = node.clone();
    let routes = routes.route(Method::Get, "/metrics", Op::Metrics, move |req: Request| {
        let response = metrics(metrics_node.clone(), &sources, req);
        async move { response }
    });
    let n = &node;
    let routes = with(
        routes,
        n,
        Method::Post,
        "/write",
        Op::Write,
        max_body,
        write,
    );
    let routes = with(routes, n, Method::Post, "/read", Op::Read, max_body, read);
    let routes = with(routes, n, Method::Post, "/list", Op::List, max_body, list);
    let routes = with(
        routes,
        n,
        Method::Post,
        "/range",
        Op::Range,
        max_body,
        txn::range,
    );
    let routes = with(routes, n, Method::Post, "/txn", Op::Txn, max_body, txn::txn);
    let routes = with(
        routes,
        n,
        Method::Post,
        "/compact",
        Op::Compact,
        max_body,
        txn::compact,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lease/grant",
        Op::Lease,
        max_body,
        lease::grant,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lease/keepalive",
        Op::Lease,
        max_body,
        lease::keep_alive,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lease/revoke",
        Op::Lease,
        max_body,
        lease::revoke,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lease/timetolive",
        Op::LeaseRead,
        max_body,
        lease::time_to_live,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lease/leases",
        Op::LeaseRead,
        max_body,
        lease::leases,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/lease/leases",
        Op::LeaseRead,
        max_body,
        lease::leases,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/lock",
        Op::Lock,
        max_body,
        lock::lock,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/unlock",
        Op::Lock,
        max_body,
        lock::unlock,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/election/campaign",
        Op::Lock,
        max_body,
        lock::campaign,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/election/proclaim",
        Op::Lock,
        max_body,
        lock::proclaim,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/election/resign",
        Op::Lock,
        max_body,
        lock::resign,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/election/leader",
        Op::LeaseRead,
        max_body,
        lock::leader,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/election/observe",
        Op::LeaseRead,
        max_body,
        lock::observe,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/watch",
        Op::Watch,
        max_body,
        watch::watch,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/health",
        Op::Health,
        max_body,
        health,
    );
    let routes = with(routes, n, Method::Get, "/ready", Op::Ready, max_body, ready);
    let routes = with(
        routes,
        n,
        Method::Get,
        "/snapshot",
        Op::Maintenance,
        max_body,
        snapshot::snapshot,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/cluster/status",
        Op::Status,
        max_body,
        cluster_status,
    );
    let routes = with(routes, n, Method::Post, "/init", Op::Init, max_body, init);
    let routes = with(
        routes,
        n,
        Method::Get,
        "/is-leader",
        Op::IsLeader,
        max_body,
        is_leader,
    );
    let routes = with(
        routes,
        n,
        Method::Get,
        "/leader",
        Op::Leader,
        max_body,
        leader,
    );
    let routes = with(
        routes,
        n,
        Method::Post,
        "/add-learner",
        Op::AddLearner,
        max_body,
        add_learner,
    );
    with(
        routes,
        n,
        Method::Post,
        "/change-membership",
        Op::ChangeMembership,
        max_body,
        change_membership,
    )
}

fn with<F, Fut>(
    routes: Routes,
    node: &Node,
    method: Method,
    path: &str,
    op: Op,
    max_body: usize,
    f: F,
) -> Routes
where
    F: Fn(Node, Request, usize) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let node = node.clone();
    routes.route(method, path, op, move |req: Request| {
        let node = node.clone();
        f(node, req, max_body)
    })
}
