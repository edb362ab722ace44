//! Liveness, readiness and metrics: `/health`, `/ready`, `/metrics`.

use crate::http::{Request, Response};
use crate::metrics::Sources;
use crate::node::{self, Node};
use serde_json::json;

pub(super) async fn health(node: Node, _req: Request, _max: usize) -> Response {
    let healthy = node.is_healthy();
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": "ferrium",
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": node.id(),
    });
    Response::json(if healthy { 200 } else { 503 }, &body)
}

pub(super) async fn ready(node: Node, _req: Request, _max: usize) -> Response {
    match node.readiness() {
        Ok(()) => Response::json(200, &json!({"status": "ready", "node_id": node.id()})),
        Err(reason) => Response::json(
            503,
            &json!({"status": "not_ready", "error": format!("node {} is not ready: {reason}", node.id()), "code": "unavailable"}),
        ),
    }
}

/// True when the `Accept` header prefers Prometheus text over JSON.
pub(super) fn wants_prometheus(req: &Request) -> bool {
    let accept = req.header("accept").unwrap_or("");
    accept.contains("text/plain") || accept.contains("openmetrics")
}

pub(super) fn metrics(node: Node, sources: &Sources, req: Request) -> Response {
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
pub(super) fn prometheus_text(s: &node::Status, sources: &Sources) -> String {
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
    let mut out = sources.metrics.render(&gauges, &counters);
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
    out.push_str("# HELP ferrium_build_info The version of this node's binary (always 1).\n");
    out.push_str("# TYPE ferrium_build_info gauge\n");
    out.push_str(&format!(
        "ferrium_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    out
}
