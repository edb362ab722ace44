//! Cluster management: `/init`, `/leader`, `/is-leader`, `/add-learner`,
//! `/change-membership`.

use super::errors::{error_response, invalid, json_body};
use crate::config::Millis;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::raft::types::Node as NodeInfo;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

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

pub(super) async fn init(node: Node, mut req: Request, max: usize) -> Response {
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

/// How long the cluster view waits for each member.
const MEMBER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Every member and what it says of itself (the console's cluster view).
pub(super) async fn cluster_status(node: Node, _req: Request, _max: usize) -> Response {
    Response::json(200, &node.cluster_view(MEMBER_STATUS_TIMEOUT).await)
}

pub(super) async fn is_leader(node: Node, _req: Request, _max: usize) -> Response {
    Response::json(200, &json!({"is_leader": node.is_leader()}))
}

pub(super) async fn leader(node: Node, _req: Request, _max: usize) -> Response {
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

pub(super) async fn add_learner(node: Node, mut req: Request, max: usize) -> Response {
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

pub(super) async fn change_membership(node: Node, mut req: Request, max: usize) -> Response {
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
