//! The REST API (API.md): thin translations of JSON requests into
//! [`Node`] calls and of [`node::Error`] into statuses and JSON error bodies.

use super::op::{Op, Routes};
use crate::config::Millis;
use crate::http::{Method, Request, Response};
use crate::metrics::{METRICS, Sources};
use crate::node::{self, Node, ReadConsistency};
use crate::raft::types::{Command, Node as NodeInfo};
use crate::store::StoredValue;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

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
        Method::Get,
        "/health",
        Op::Health,
        max_body,
        health,
    );
    let routes = with(routes, n, Method::Get, "/ready", Op::Ready, max_body, ready);
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

/// The JSON error response for a node error.
pub fn error_response(e: &node::Error) -> Response {
    let status = match e {
        node::Error::Invalid(_) => 400,
        node::Error::TooLarge(_) => 413,
        node::Error::NotLeader(_)
        | node::Error::Unavailable(_)
        | node::Error::OutcomeUnknown(_) => 503,
        node::Error::Conflict(_) | node::Error::Precondition(_) => 409,
        node::Error::Internal(_) => 500,
    };
    let code = match e {
        node::Error::Precondition(_) => "conflict",
        other => other.code(),
    };
    let mut body = json!({"error": e.to_string(), "code": code});
    if let node::Error::NotLeader(Some(l)) = e {
        body["leader"] = json!(l.id);
        if let Some(n) = &l.node {
            body["leader_api_addr"] = json!(n.api_addr);
            body["leader_rpc_addr"] = json!(n.rpc_addr);
            body["leader_grpc_addr"] = json!(n.grpc_addr);
        }
    }
    let resp = Response::json(status, &body);
    // An unknown outcome carries no Retry-After: HTTP clients and proxies
    // retry such answers by themselves, and the write may have been applied.
    if status == 503 && !matches!(e, node::Error::OutcomeUnknown(_)) {
        resp.header("retry-after", "1")
    } else {
        resp
    }
}

fn invalid(message: impl std::fmt::Display) -> Response {
    Response::error(400, "invalid_request", message)
}

/// Reads and decodes a JSON body; the error is the response to send.
async fn json_body<T: DeserializeOwned>(
    req: &mut Request,
    max: usize,
    example: &str,
) -> Result<T, Response> {
    let body = req.body_bytes(max).await.map_err(|e| e.to_response())?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid(format!(
            "the request needs a JSON body, e.g. {example}"
        )));
    }
    crate::http::json::from_slice(&body)
        .map_err(|e| invalid(format!("malformed JSON body: {e}; expected e.g. {example}")))
}

fn value_json(key: &str, v: Option<StoredValue>) -> serde_json::Value {
    match v {
        Some(v) => json!({
            "key": key,
            "value": v.value,
            "create_revision": v.create_revision,
            "mod_revision": v.mod_revision,
            "version": v.version,
        }),
        None => json!({"key": key, "value": null}),
    }
}

async fn write(node: Node, mut req: Request, max: usize) -> Response {
    let cmd: Command = match json_body(
        &mut req,
        max,
        r#"{"Set":{"key":"k","value":"v"}} or {"Delete":{"key":"k"}}"#,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    // What the answer echoes, taken before the command moves into the log.
    let echo = match &cmd {
        Command::Set { key, .. } => Some((key.clone(), false)),
        Command::Delete { key } => Some((key.clone(), true)),
        Command::BatchSet { .. } => None,
    };
    match node.write(cmd).await {
        Ok(result) => {
            let mut body = json!({"revision": result.revision});
            match echo {
                Some((key, is_delete)) => {
                    body["key"] = json!(key);
                    if is_delete {
                        body["existed"] = json!(result.existed.unwrap_or(false));
                    }
                }
                None => body["count"] = json!(result.count),
            }
            Response::json(200, &body)
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    key: String,
    #[serde(default)]
    consistency: Option<String>,
}

fn consistency(c: Option<&str>) -> Result<ReadConsistency, Response> {
    let c = c.unwrap_or("");
    ReadConsistency::parse(c).ok_or_else(|| {
        invalid(format!(
            "consistency {c:?} is not one of \"linearizable\", \"lease\", \"stale\""
        ))
    })
}

async fn read(node: Node, mut req: Request, max: usize) -> Response {
    let r: ReadRequest = match json_body(&mut req, max, r#"{"key":"k"}"#).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let c = match consistency(r.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match node.read(&r.key, c).await {
        Ok(v) => Response::json(200, &value_json(&r.key, v)),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    start_after: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

async fn list(node: Node, mut req: Request, max: usize) -> Response {
    let r: ListRequest = match json_body(&mut req, max, r#"{"prefix":"user/","limit":100}"#).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let c = match consistency(r.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match node
        .list(&r.prefix, r.start_after.as_deref(), r.limit.unwrap_or(0), c)
        .await
    {
        Ok((items, has_more)) => {
            let next = if has_more {
                items.last().map(|(k, _)| k.clone())
            } else {
                None
            };
            let keys: Vec<serde_json::Value> = items
                .into_iter()
                .map(|(k, v)| value_json(&k, Some(v)))
                .collect();
            Response::json(
                200,
                &json!({"keys": keys, "has_more": has_more, "next_start_after": next}),
            )
        }
        Err(e) => error_response(&e),
    }
}

async fn health(node: Node, _req: Request, _max: usize) -> Response {
    let healthy = node.is_healthy();
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": "ferrium",
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": node.id(),
    });
    Response::json(if healthy { 200 } else { 503 }, &body)
}

async fn ready(node: Node, _req: Request, _max: usize) -> Response {
    match node.readiness() {
        Ok(()) => Response::json(200, &json!({"status": "ready", "node_id": node.id()})),
        Err(reason) => Response::json(
            503,
            &json!({"status": "not_ready", "error": format!("node {} is not ready: {reason}", node.id()), "code": "unavailable"}),
        ),
    }
}

/// True when the `Accept` header prefers Prometheus text over JSON.
fn wants_prometheus(req: &Request) -> bool {
    let accept = req.header("accept").unwrap_or("");
    accept.contains("text/plain") || accept.contains("openmetrics")
}

fn metrics(node: Node, sources: &Sources, req: Request) -> Response {
    let status = node.status();
    if wants_prometheus(&req) {
        return Response::with_body(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&status, sources),
        );
    }
    Response::json(200, &status)
}

/// Raft status as Prometheus gauges, then every counter and histogram.
fn prometheus_text(s: &node::Status, sources: &Sources) -> String {
    let (mut gauges, counters) = sources.values();
    let is_leader = u64::from(s.current_leader == Some(s.node_id));
    gauges.extend([
        ("ferrium_node_id", "Id of this node.", s.node_id as f64),
        (
            "ferrium_raft_is_leader",
            "1 when this node is the leader.",
            is_leader as f64,
        ),
        (
            "ferrium_raft_has_leader",
            "1 when this node knows a leader.",
            f64::from(u8::from(s.current_leader.is_some())),
        ),
        (
            "ferrium_raft_term",
            "Current Raft term.",
            s.current_term as f64,
        ),
        (
            "ferrium_raft_last_log_index",
            "Index of the last log entry.",
            s.last_log_index.unwrap_or(0) as f64,
        ),
        (
            "ferrium_raft_committed_index",
            "Index of the last committed entry known here.",
            s.committed.unwrap_or(0) as f64,
        ),
        (
            "ferrium_raft_applied_index",
            "Index of the last applied entry.",
            s.last_applied.unwrap_or(0) as f64,
        ),
        (
            "ferrium_raft_snapshot_index",
            "Last index included in the current snapshot.",
            s.snapshot.unwrap_or(0) as f64,
        ),
        (
            "ferrium_raft_voters",
            "Number of voters in the membership.",
            s.membership.voters.len() as f64,
        ),
        (
            "ferrium_raft_learners",
            "Number of learners in the membership.",
            s.membership.learners.len() as f64,
        ),
    ]);
    let mut out = METRICS.render(&gauges, &counters);
    if !s.replication.is_empty() {
        out.push_str("# HELP ferrium_raft_replication_lag_entries Entries a follower is behind the leader.\n");
        out.push_str("# TYPE ferrium_raft_replication_lag_entries gauge\n");
        for (id, r) in &s.replication {
            out.push_str(&format!(
                "ferrium_raft_replication_lag_entries{{peer=\"{id}\"}} {}\n",
                r.lag
            ));
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberSpec {
    rpc_addr: String,
    #[serde(default)]
    api_addr: Option<String>,
    #[serde(default)]
    grpc_addr: Option<String>,
}

impl MemberSpec {
    fn into_node(self) -> NodeInfo {
        NodeInfo {
            api_addr: self.api_addr.unwrap_or_else(|| self.rpc_addr.clone()),
            grpc_addr: self.grpc_addr.unwrap_or_default(),
            rpc_addr: self.rpc_addr,
        }
    }
}

async fn init(node: Node, mut req: Request, max: usize) -> Response {
    let body = match req.body_bytes(max).await {
        Ok(b) => b,
        Err(e) => return e.to_response(),
    };
    let members = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        match crate::http::json::from_slice::<BTreeMap<u64, MemberSpec>>(&body) {
            Ok(m) => Some(m.into_iter().map(|(id, s)| (id, s.into_node())).collect()),
            Err(e) => {
                return invalid(format!(
                    "malformed member map: {e}; expected no body, or e.g. {{\"1\":{{\"rpc_addr\":\"10.0.0.1:8001\",\"api_addr\":\"10.0.0.1:8001\"}}}}"
                ));
            }
        }
    };
    match node.initialize(members).await {
        Ok(()) => Response::json(200, &json!({"status": "initialized"})),
        Err(e) => error_response(&e),
    }
}

async fn is_leader(node: Node, _req: Request, _max: usize) -> Response {
    Response::json(200, &json!({"is_leader": node.is_leader()}))
}

async fn leader(node: Node, _req: Request, _max: usize) -> Response {
    let body = match node.leader() {
        Some(l) => {
            let mut b = json!({"leader": l.id});
            if let Some(n) = l.node {
                b["rpc_addr"] = json!(n.rpc_addr);
                b["api_addr"] = json!(n.api_addr);
                b["grpc_addr"] = json!(n.grpc_addr);
            }
            b
        }
        None => json!({"leader": null}),
    };
    Response::json(200, &body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLearnerRequest {
    node_id: u64,
    rpc_addr: String,
    #[serde(default)]
    api_addr: Option<String>,
    #[serde(default)]
    grpc_addr: Option<String>,
    /// How long to wait for the learner to catch up (default
    /// `network.request_timeout`).
    #[serde(default)]
    timeout: Option<Millis>,
}

async fn add_learner(node: Node, mut req: Request, max: usize) -> Response {
    let r: AddLearnerRequest = match json_body(
        &mut req,
        max,
        r#"{"node_id":2,"rpc_addr":"127.0.0.1:8002","api_addr":"127.0.0.1:8002","timeout":"60s"}"#,
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let info = MemberSpec {
        rpc_addr: r.rpc_addr,
        api_addr: r.api_addr,
        grpc_addr: r.grpc_addr,
    }
    .into_node();
    let timeout = r.timeout.map(Millis::as_duration);
    match node.add_learner(r.node_id, info, timeout).await {
        Ok(()) => Response::json(
            200,
            &json!({"status": "learner added", "node_id": r.node_id}),
        ),
        Err(e) => error_response(&e),
    }
}

async fn change_membership(node: Node, mut req: Request, max: usize) -> Response {
    let voters: BTreeSet<u64> = match json_body(&mut req, max, "[1,2,3]").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match node.change_membership(voters.clone()).await {
        Ok(()) => Response::json(
            200,
            &json!({"status": "membership changed", "voters": voters}),
        ),
        Err(e) => error_response(&e),
    }
}
