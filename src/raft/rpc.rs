//! Peer-facing routes under `/raft/` on the HTTP listener: the Raft protocol
//! (append, vote, pre-vote, snapshot) and the node-to-node services built on
//! it (forwarded writes, read index for follower reads, forwarded membership
//! changes).
//!
//! These are not a client API. Every request must name this node's id and
//! cluster in its headers; a mismatch is refused with 421 so that a message
//! for a node that used to live at this address is never acted upon.
//! Answers are `200 {"Ok": ...}` or `200 {"Err": ...}`. Requests are JSON,
//! except that AppendEntries may also come in the binary form of
//! [`crate::raft::codec`] (by its content type), which is what this version
//! sends.

use crate::http::{Method, Request, Response, Router};
use crate::node::{AddLearnerRpc, Node, ReadConsistency};
use crate::raft::codec;
use crate::raft::network::{CLUSTER_HEADER, SNAPSHOT_META_HEADER, TARGET_HEADER, VOTE_HEADER};
use crate::raft::types::{Command, TypeConfig};
use crate::store::StateReader;
use openraft::Snapshot;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use tokio::io::AsyncReadExt;

/// Largest Raft message body (a batch of entries); snapshots are streamed.
const MAX_RPC_BODY: u64 = 256 * 1024 * 1024;
/// Largest snapshot accepted.
const MAX_SNAPSHOT: u64 = 1 << 40;

/// Adds the peer routes to `router`.
pub fn routes(router: Router, node: Node, reader: StateReader) -> Router {
    let router = route(
        router,
        &node,
        "/raft/append",
        decode_append,
        |n, rpc: AppendEntriesRequest<TypeConfig>| async move {
            let r = n
                .raft()
                .append_entries(rpc)
                .await
                .map_err(|e| e.to_string());
            if r.as_ref().is_ok_and(|resp| resp.is_success()) {
                n.note_leader_contact();
            }
            r
        },
    );
    let router = json_route(
        router,
        &node,
        "/raft/vote",
        |n, rpc: VoteRequest<TypeConfig>| async move {
            n.raft().vote(rpc).await.map_err(|e| e.to_string())
        },
    );
    let router = json_route(
        router,
        &node,
        "/raft/pre-vote",
        |n, rpc: VoteRequest<TypeConfig>| async move {
            n.raft().pre_vote(rpc).await.map_err(|e| e.to_string())
        },
    );
    let router = json_route(router, &node, "/raft/write", |n, cmd: Command| async move {
        n.propose(cmd).await
    });
    let router = json_route(
        router,
        &node,
        "/raft/read-index",
        |n, c: ReadConsistency| async move { n.leader_read_index(c).await },
    );
    let router = json_route(
        router,
        &node,
        "/raft/add-learner",
        |n, rpc: AddLearnerRpc| async move {
            let (id, info, timeout) = rpc.parts();
            n.add_learner_local(id, info, timeout).await
        },
    );
    let router = json_route(
        router,
        &node,
        "/raft/change-membership",
        |n, voters: BTreeSet<u64>| async move { n.change_membership_local(voters).await },
    );
    router.route_with_body_limit(Method::Post, "/raft/snapshot", MAX_SNAPSHOT, move |req| {
        let n = node.clone();
        let reader = reader.clone();
        async move { snapshot(&n, &reader, req).await }
    })
}

/// Decodes a request body, given its content type.
type Decode<Req> = fn(Option<&str>, &[u8]) -> Result<Req, String>;

/// Routes `POST path` to `f` through [`peer`]: JSON in, JSON out.
fn json_route<Req, Out, F, Fut>(router: Router, node: &Node, path: &str, f: F) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
    F: Fn(Node, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Out> + Send + 'static,
{
    route(router, node, path, decode_json, f)
}

/// Routes `POST path` to `f` through [`peer`], decoding with `decode`.
fn route<Req, Out, F, Fut>(
    router: Router,
    node: &Node,
    path: &str,
    decode: Decode<Req>,
    f: F,
) -> Router
where
    Req: Send + 'static,
    Out: Serialize + Send + 'static,
    F: Fn(Node, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Out> + Send + 'static,
{
    let node = node.clone();
    router.route_with_body_limit(Method::Post, path, MAX_RPC_BODY, move |req| {
        let n = node.clone();
        async move { peer(&n, req, decode, f).await }
    })
}

fn decode_json<Req: DeserializeOwned>(_: Option<&str>, body: &[u8]) -> Result<Req, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// AppendEntries in the binary form, or JSON as older versions send it.
fn decode_append(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<AppendEntriesRequest<TypeConfig>, String> {
    if content_type.is_some_and(|t| t.starts_with(codec::APPEND_CONTENT_TYPE)) {
        return codec::decode_append(body).map_err(|e| e.to_string());
    }
    decode_json(content_type, body)
}

/// Refuses a request meant for another node or cluster.
fn check_peer(node: &Node, req: &Request) -> Result<(), Response> {
    let target = req
        .header(TARGET_HEADER)
        .and_then(|t| t.parse::<u64>().ok());
    if target != Some(node.id()) {
        return Err(Response::error(
            421,
            "wrong_node",
            format!(
                "this is node {} but the request is for node {}; the peer's membership has a stale address",
                node.id(),
                req.header(TARGET_HEADER).unwrap_or("(none)")
            ),
        ));
    }
    if req.header(CLUSTER_HEADER) != Some(node.cluster()) {
        return Err(Response::error(
            421,
            "wrong_cluster",
            format!(
                "this node belongs to cluster {:?}, the request to {:?}; check cluster.name",
                node.cluster(),
                req.header(CLUSTER_HEADER).unwrap_or("")
            ),
        ));
    }
    Ok(())
}

/// Decodes a peer request, runs `f`, encodes its result as JSON.
async fn peer<Req, Out, F, Fut>(
    node: &Node,
    mut req: Request,
    decode: Decode<Req>,
    f: F,
) -> Response
where
    Out: Serialize,
    F: FnOnce(Node, Req) -> Fut,
    Fut: std::future::Future<Output = Out>,
{
    if let Err(r) = check_peer(node, &req) {
        return r;
    }
    let body = match req.body_bytes(MAX_RPC_BODY as usize).await {
        Ok(b) => b,
        Err(e) => return e.to_response(),
    };
    let rpc: Req = match decode(req.header("content-type"), &body) {
        Ok(r) => r,
        Err(e) => {
            return Response::error(
                400,
                "invalid_request",
                format!("undecodable peer message: {e}"),
            );
        }
    };
    let result = f(node.clone(), rpc).await;
    Response::json(200, &result)
}

/// Receives a streamed snapshot into a file, then installs it.
async fn snapshot(node: &Node, reader: &StateReader, mut req: Request) -> Response {
    if let Err(r) = check_peer(node, &req) {
        return r;
    }
    let vote: VoteOf<TypeConfig> = match req.header(VOTE_HEADER).map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => return Response::error(400, "invalid_request", "missing or bad vote header"),
    };
    let meta: SnapshotMetaOf<TypeConfig> =
        match req.header(SNAPSHOT_META_HEADER).map(serde_json::from_str) {
            Some(Ok(m)) => m,
            _ => {
                return Response::error(
                    400,
                    "invalid_request",
                    "missing or bad snapshot meta header",
                );
            }
        };
    let mut receiver = match reader.snapshot_receiver() {
        Ok(r) => r,
        Err(e) => {
            return Response::error(
                500,
                "internal",
                format!("cannot create a snapshot file: {e}"),
            );
        }
    };
    // File writes and the final fsync run on the blocking pool, not on the
    // runtime threads that serve every other request.
    let mut body = req.take_body();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match body.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Response::error(
                    400,
                    "invalid_request",
                    format!("snapshot stream broken: {e}"),
                );
            }
        };
        let written = tokio::task::spawn_blocking(move || {
            let r = receiver.write(&buf[..n]);
            (receiver, buf, r)
        })
        .await;
        match written {
            Ok((r, b, Ok(()))) => (receiver, buf) = (r, b),
            Ok((_, _, Err(e))) => {
                return Response::error(
                    500,
                    "internal",
                    format!("cannot write the snapshot file: {e}"),
                );
            }
            Err(e) => {
                return Response::error(500, "internal", format!("snapshot writer failed: {e}"));
            }
        }
    }
    let file = match tokio::task::spawn_blocking(move || receiver.finish()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            return Response::error(
                500,
                "internal",
                format!("cannot finish the snapshot file: {e}"),
            );
        }
        Err(e) => {
            return Response::error(500, "internal", format!("snapshot writer failed: {e}"));
        }
    };
    let snapshot = Snapshot {
        meta,
        snapshot: file,
    };
    crate::metrics::METRICS.snapshot_installed();
    let result = node
        .raft()
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| e.to_string());
    Response::json(200, &result)
}
