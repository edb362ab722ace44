//! Peer-facing routes under `/raft/` on the HTTP listener: the Raft protocol
//! (append, vote, pre-vote, snapshot, leadership transfer) and the node-to-node services built on
//! it (forwarded writes, read index for follower reads, forwarded membership
//! changes).
//!
//! These are not a client API. Every request must name this node's id and
//! cluster in its headers; a mismatch is refused with 421 so that a message
//! for a node that used to live at this address is never acted upon.
//! A signed request's body must be the one its signature covers (401
//! otherwise); a snapshot is checked in full before openraft sees it (see
//! `snapshot`), and one that is refused leaves no file behind.
//! Answers are `200 {"Ok": ...}` or `200 {"Err": ...}`. Requests are JSON,
//! except that AppendEntries may also come in the binary form of
//! [`crate::raft::codec`] (by its content type), which is what this version
//! sends.

use crate::api::op::{Op, Routes};
use crate::http::{Method, Request, Response};
use crate::node::{self, AddLearnerRpc, Node, ReadConsistency};
use crate::raft::codec;
use crate::raft::peer::{
    self, CLUSTER_HEADER, FROM_HEADER, Route, SNAPSHOT_META_HEADER, TARGET_HEADER, VOTE_HEADER,
};
use crate::raft::types::{Command, TypeConfig};
use crate::store::{SnapshotFile, StateReader};
use openraft::Snapshot;
use openraft::alias::{LogIdOf, SnapshotMetaOf, VoteOf};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Largest Raft message body (a batch of entries); snapshots are streamed.
const MAX_RPC_BODY: u64 = 256 * 1024 * 1024;
/// Largest snapshot accepted.
const MAX_SNAPSHOT: u64 = 1 << 40;

/// Adds the peer routes to `router`.
pub fn routes(router: Routes, node: Node, reader: StateReader) -> Routes {
    let router = router.prefix(peer::PREFIX, Op::Peer);
    let router = route(
        router,
        &node,
        Route::Append.path(),
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
        Route::Vote.path(),
        |n, rpc: VoteRequest<TypeConfig>| async move {
            n.raft().vote(rpc).await.map_err(|e| e.to_string())
        },
    );
    let router = json_route(
        router,
        &node,
        Route::PreVote.path(),
        |n, rpc: VoteRequest<TypeConfig>| async move {
            n.raft().pre_vote(rpc).await.map_err(|e| e.to_string())
        },
    );
    let router = json_route(
        router,
        &node,
        Route::TransferLeader.path(),
        |n, rpc: TransferLeaderRequest<TypeConfig>| async move {
            n.raft()
                .handle_transfer_leader(rpc)
                .await
                .map_err(|e| e.to_string())
        },
    );
    let router = json_route(
        router,
        &node,
        Route::Write.path(),
        |n, cmd: Command| async move { n.propose(cmd).await },
    );
    let router = json_route(
        router,
        &node,
        Route::ReadIndex.path(),
        |n, c: ReadConsistency| async move { n.leader_read_index(c).await },
    );
    let router = json_route(
        router,
        &node,
        Route::AddLearner.path(),
        |n, rpc: AddLearnerRpc| async move {
            let (id, info, timeout) = rpc.parts();
            n.add_learner_local(id, info, timeout).await
        },
    );
    let router = json_route(
        router,
        &node,
        Route::ChangeMembership.path(),
        |n, voters: BTreeSet<u64>| async move { n.change_membership_local(voters).await },
    );
    let router = json_route(
        router,
        &node,
        Route::Status.path(),
        |n, (): ()| async move { Ok::<_, String>(n.member_self()) },
    );
    router.route_with_body_limit(
        Method::Post,
        Route::Snapshot.path(),
        Op::Peer,
        MAX_SNAPSHOT,
        move |req| {
            let n = node.clone();
            let reader = reader.clone();
            async move { snapshot(&n, &reader, req).await }
        },
    )
}

/// Decodes a request body, given its content type.
type Decode<Req> = fn(Option<&str>, &[u8]) -> Result<Req, String>;

/// Routes `POST path` to `f` through [`peer`]: JSON in, JSON out.
fn json_route<Req, Out, F, Fut>(router: Routes, node: &Node, path: &str, f: F) -> Routes
where
    Req: DeserializeOwned + Send + 'static,
    Out: PeerReply + Send + 'static,
    F: Fn(Node, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Out> + Send + 'static,
{
    route(router, node, path, decode_json, f)
}

/// Routes `POST path` to `f` through [`peer`], decoding with `decode`.
fn route<Req, Out, F, Fut>(
    router: Routes,
    node: &Node,
    path: &str,
    decode: Decode<Req>,
    f: F,
) -> Routes
where
    Req: Send + 'static,
    Out: PeerReply + Send + 'static,
    F: Fn(Node, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Out> + Send + 'static,
{
    let node = node.clone();
    router.route_with_body_limit(Method::Post, path, Op::Peer, MAX_RPC_BODY, move |req| {
        let n = node.clone();
        async move { peer(&n, req, decode, f).await }
    })
}

/// Strict JSON: an array where the message has an object is refused.
fn decode_json<Req: DeserializeOwned>(_: Option<&str>, body: &[u8]) -> Result<Req, String> {
    crate::http::json::from_slice(body).map_err(|e| e.to_string())
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

/// What a peer route answers: `200 {"Ok": ..}` or `200 {"Err": ..}` for
/// whatever Raft or the node decided, and a 4xx status for a request refused
/// before anything was proposed (so that a forwarding node knows the
/// refusal is definite).
trait PeerReply {
    fn into_response(self) -> Response;
}

impl<T: Serialize> PeerReply for Result<T, String> {
    fn into_response(self) -> Response {
        Response::json(200, &self)
    }
}

impl<T: Serialize> PeerReply for Result<T, node::Error> {
    fn into_response(self) -> Response {
        match &self {
            Err(e @ node::Error::Invalid(_)) => Response::error(400, e.code(), e.to_string()),
            Err(e @ node::Error::TooLarge(_)) => Response::error(413, e.code(), e.to_string()),
            _ => Response::json(200, &self),
        }
    }
}

/// Decodes a peer request, runs `f`, encodes its result.
async fn peer<Req, Out, F, Fut>(
    node: &Node,
    mut req: Request,
    decode: Decode<Req>,
    f: F,
) -> Response
where
    Out: PeerReply,
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
    if let Err(r) = crate::auth::check_body(&req, &crate::auth::body_digest(&body), node.registry())
    {
        return r;
    }
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
    f(node.clone(), rpc).await.into_response()
}

/// A snapshot upload refused before openraft sees it.
struct Refusal {
    status: u16,
    code: &'static str,
    /// The `ferrium_snapshot_refused_total` label.
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, reason: &'static str, message: String) -> Refusal {
        Refusal {
            status,
            code,
            reason,
            message,
        }
    }

    fn bad_header(message: &str) -> Refusal {
        Refusal::new(400, "invalid_request", "bad_header", message.to_string())
    }

    fn bad_vote(message: String) -> Refusal {
        Refusal::new(400, "bad_vote", "bad_vote", message)
    }

    fn bad_meta(message: String) -> Refusal {
        Refusal::new(400, "bad_snapshot_meta", "bad_meta", message)
    }

    /// Counts and logs the refusal and answers it. A 409 (the sender is
    /// behind, not necessarily hostile) carries this node's vote, which the
    /// sender hands to openraft as the answer to its snapshot.
    fn response(self, node: &Node, from: Option<u64>) -> Response {
        node.registry().snapshot_refused(self.reason);
        let from = from.map_or_else(|| "an unnamed node".to_string(), |f| format!("node {f}"));
        ::log::warn!("refused a snapshot from {from}: {}", self.message);
        if self.status == 409 {
            let body = serde_json::json!({
                "error": self.message,
                "code": self.code,
                "vote": node.metrics().vote,
            });
            return Response::json(409, &body);
        }
        Response::error(self.status, self.code, self.message)
    }
}

/// A log position in words, for error messages.
fn position(log_id: Option<&LogIdOf<TypeConfig>>) -> String {
    match log_id {
        Some(l) => format!("index {} of term {}", l.index, l.leader_id.term),
        None => "the start of the log".to_string(),
    }
}

/// Checks what the headers of a snapshot upload claim against each other
/// and against this node's Raft state, so that openraft is never handed a
/// snapshot it would treat as a storage failure or a broken invariant
/// (both stop Raft on this node).
///
/// The vote is the sender's claim to lead. A vote of a higher term is a
/// legitimate Raft message from an authenticated peer (a new leader), so
/// only what cannot be true is refused: a vote not granted by a quorum, a
/// vote for another node than the sender, for this node, or for a node that
/// is not a member, a vote older than this node's, and a snapshot that ends
/// in a later term than the vote, that is older than what this node has, or
/// that contradicts what this node knows to be committed.
fn check_upload(
    node: &Node,
    from: Option<u64>,
    vote: &VoteOf<TypeConfig>,
    meta: &SnapshotMetaOf<TypeConfig>,
) -> Result<(), Refusal> {
    let m = node.metrics();
    let leader = vote.leader_id.node_id;
    let term = vote.leader_id.term;
    if !vote.committed {
        return Err(Refusal::bad_vote(format!(
            "the vote of node {leader} in term {term} was not granted by a quorum; only an established leader sends snapshots"
        )));
    }
    if from != Some(leader) {
        return Err(Refusal::bad_vote(format!(
            "the vote names node {leader} as the leader, but the snapshot comes from {}",
            from.map_or_else(|| "an unnamed node".to_string(), |f| format!("node {f}"))
        )));
    }
    if leader == node.id() {
        return Err(Refusal::bad_vote(format!(
            "the vote names this node ({leader}) as the leader of term {term}"
        )));
    }
    let member = m.membership_config.membership().get_node(&leader).is_some()
        || meta
            .last_membership
            .membership()
            .get_node(&leader)
            .is_some();
    if !member {
        return Err(Refusal::bad_vote(format!(
            "node {leader} is not a member of this cluster and cannot lead it"
        )));
    }
    // Votes are only partially ordered: an incomparable one is not newer.
    let newer_or_same = matches!(
        vote.partial_cmp(&m.vote),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    );
    if !newer_or_same {
        return Err(Refusal::new(
            409,
            "stale_vote",
            "stale",
            format!(
                "the sender's vote is for node {leader} in term {term}, but this node has seen term {}; the sender is no longer the leader",
                m.vote.leader_id.term
            ),
        ));
    }
    let Some(last) = meta.last_log_id.as_ref() else {
        return Err(Refusal::bad_meta(
            "the snapshot meta names no log position; a snapshot sent to a follower always has one"
                .into(),
        ));
    };
    if last.leader_id > vote.leader_id {
        return Err(Refusal::bad_meta(format!(
            "the snapshot ends at {}, after the term {term} of the leader that sends it",
            position(Some(last))
        )));
    }
    if meta.last_membership.log_id().as_ref() > Some(last) {
        return Err(Refusal::bad_meta(format!(
            "the snapshot's membership is from {}, after the snapshot's end at {}",
            position(meta.last_membership.log_id().as_ref()),
            position(Some(last))
        )));
    }
    // What this node has: all committed, so equal in every healthy member.
    let have = [&m.local_committed, &m.last_applied, &m.snapshot]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.index);
    let Some(have) = have else {
        return Ok(());
    };
    let contradiction = || {
        Refusal::bad_meta(format!(
            "the snapshot ends at {}, which contradicts {} that this node knows to be committed",
            position(Some(last)),
            position(Some(have))
        ))
    };
    if last.index <= have.index {
        if last.leader_id > have.leader_id {
            return Err(contradiction());
        }
        return Err(Refusal::new(
            409,
            "stale_snapshot",
            "stale",
            format!(
                "the snapshot ends at {}, but this node already has everything up to {}",
                position(Some(last)),
                position(Some(have))
            ),
        ));
    }
    // Terms never decrease along the log.
    if last.leader_id < have.leader_id {
        return Err(contradiction());
    }
    Ok(())
}

/// The vote and meta headers of a snapshot upload.
fn upload_headers(
    req: &Request,
) -> Result<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>), Refusal> {
    let vote = match req.header(VOTE_HEADER).map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => {
            return Err(Refusal::bad_header(
                "missing or bad vote header: x-ferrium-vote must hold the sender's vote as JSON",
            ));
        }
    };
    let meta = match req.header(SNAPSHOT_META_HEADER).map(serde_json::from_str) {
        Some(Ok(m)) => m,
        _ => {
            return Err(Refusal::bad_header(
                "missing or bad snapshot meta header: x-ferrium-snapshot-meta must hold the snapshot's meta as JSON",
            ));
        }
    };
    Ok((vote, meta))
}

/// Deletes a received snapshot file when dropped. When the snapshot was
/// installed the file has been moved into place and there is nothing to
/// delete; when it was refused, or openraft declined it, it goes at once.
struct Discard(PathBuf);

impl Drop for Discard {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => ::log::warn!(
                "cannot delete the received snapshot file {}: {e}; it is removed at the next start",
                self.0.display()
            ),
            _ => {}
        }
    }
}

/// Streams the request body into a new file; returns it with the SHA-256
/// of its bytes. A broken stream deletes the file.
async fn receive(
    reader: &StateReader,
    req: &mut Request,
    metrics: &crate::metrics::Metrics,
) -> Result<(SnapshotFile, [u8; 32]), Response> {
    let mut receiver = reader.snapshot_receiver().map_err(|e| {
        Response::error(
            500,
            "internal",
            format!("cannot create a snapshot file: {e}"),
        )
    })?;
    // File writes and the final fsync run on the blocking pool, not on the
    // runtime threads that serve every other request.
    let mut body = req.take_body();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match body.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                metrics.snapshot_refused("stream");
                return Err(Response::error(
                    400,
                    "invalid_request",
                    format!("snapshot stream broken: {e}"),
                ));
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
                return Err(Response::error(
                    500,
                    "internal",
                    format!("cannot write the snapshot file: {e}"),
                ));
            }
            Err(e) => {
                return Err(Response::error(
                    500,
                    "internal",
                    format!("snapshot writer failed: {e}"),
                ));
            }
        }
    }
    match tokio::task::spawn_blocking(move || receiver.finish_with_digest()).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(Response::error(
            500,
            "internal",
            format!("cannot finish the snapshot file: {e}"),
        )),
        Err(e) => Err(Response::error(
            500,
            "internal",
            format!("snapshot writer failed: {e}"),
        )),
    }
}

/// Receives a streamed snapshot into a file and installs it, after checking
/// the headers ([`check_upload`]), the body against its signature, the
/// file's format and checksum, and that the file holds what the meta header
/// says. Every refusal answers 4xx and deletes the received file at once.
async fn snapshot(node: &Node, reader: &StateReader, mut req: Request) -> Response {
    if let Err(r) = check_peer(node, &req) {
        return r;
    }
    let from = req.header(FROM_HEADER).and_then(|f| f.parse::<u64>().ok());
    let (vote, meta) = match upload_headers(&req) {
        Ok(h) => h,
        Err(refusal) => return refusal.response(node, from),
    };
    if let Err(refusal) = check_upload(node, from, &vote, &meta) {
        if refusal.status == 409 {
            // Possibly an honest leader that is behind: let it finish
            // sending so that it reads the answer. Nothing is stored.
            let _ = req.take_body().discard().await;
        }
        return refusal.response(node, from);
    }
    let (file, digest) = match receive(reader, &mut req, node.registry()).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let discard = Discard(file.path().to_path_buf());
    if let Err(r) = crate::auth::check_body(&req, &digest, node.registry()) {
        node.registry().snapshot_refused("signature");
        return r;
    }
    let checked = tokio::task::spawn_blocking(move || {
        let r = file.verify();
        (file, r)
    })
    .await;
    let file = match checked {
        Ok((file, Ok(in_file))) if in_file == meta => file,
        Ok((_, Ok(in_file))) => {
            return Refusal::new(
                400,
                "snapshot_mismatch",
                "mismatch",
                format!(
                    "the meta header says the snapshot ends at {}, but the file ends at {}; the sender's snapshot is inconsistent",
                    position(meta.last_log_id.as_ref()),
                    position(in_file.last_log_id.as_ref())
                ),
            )
            .response(node, from);
        }
        Ok((_, Err(e))) => {
            return Refusal::new(
                400,
                "corrupt_snapshot",
                "corrupt",
                format!(
                    "the received snapshot is damaged ({e}); the sender should build a new one"
                ),
            )
            .response(node, from);
        }
        Err(e) => {
            return Response::error(500, "internal", format!("snapshot check failed: {e}"));
        }
    };
    // Receiving took a while: check again against what this node has now.
    if let Err(refusal) = check_upload(node, from, &vote, &meta) {
        return refusal.response(node, from);
    }
    node.registry().snapshot_installed();
    // In a task of its own, so that an install is never abandoned half-way
    // when this request goes away; the received file is deleted when it
    // ends, unless installing moved it into place.
    let raft = node.raft().clone();
    let install = tokio::spawn(async move {
        let _discard = discard;
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| e.to_string())
    });
    let result = install
        .await
        .unwrap_or_else(|e| Err(format!("snapshot install task failed: {e}")));
    Response::json(200, &result)
}
