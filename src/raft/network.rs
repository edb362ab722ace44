//! The Raft peer network: openraft's `RaftNetworkV2` over our HTTP client.
//!
//! Every RPC is a peer request of [`crate::raft::peer`] (routing headers,
//! signature) with a JSON body (AppendEntries: the compact binary form of
//! [`crate::raft::codec`]; a peer of an older version that refuses it is sent
//! JSON from then on). Heartbeats, log replication and snapshots use
//! separate connection pools, so a snapshot transfer never delays a
//! heartbeat.
//!
//! Failures are reported the way openraft expects: a peer that cannot be
//! reached is `Unreachable` (openraft backs off), a deadline is `Timeout`.
//!
//! A snapshot is read in full before it is sent: its format and checksum
//! are verified and its SHA-256 goes into the request's signature. A
//! damaged file is never sent; a new snapshot is built instead (see
//! [`rebuild_damaged_snapshots`]). A follower that declines a snapshot it
//! does not need answers 409 with its vote, which is handed to openraft as
//! the answer it would have given itself.

use crate::http::{self, Body};
use crate::raft::codec;
use crate::raft::peer::{self, PeerClient, Route, SNAPSHOT_META_HEADER, Target, VOTE_HEADER};
use crate::raft::types::{Node, TypeConfig};
use crate::store::SnapshotFile;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Bytes of entries one AppendEntries request carries at most (a single
/// larger entry goes alone); well under the 256 MiB a peer accepts.
const APPEND_BUDGET: usize = 32 * 1024 * 1024;

/// Bytes of entries above which AppendEntries to a peer not known to be up
/// is preceded by an empty one. Reading, encoding and signing a large batch
/// takes a good part of a second of CPU; a leader retrying it several times
/// a second to a follower that is down starves its own clients.
const PROBE_ABOVE: usize = 1024 * 1024;

/// Largest peer response accepted (append responses are tiny).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Creates one [`PeerConnection`] per target, sharing connection pools.
#[derive(Clone)]
pub struct PeerNetwork {
    replication: PeerClient,
    heartbeat: PeerClient,
    snapshot: PeerClient,
    snapshot_timeout: Duration,
    /// Raised when a snapshot file fails its check before sending.
    rebuild: Arc<Notify>,
}

/// Whether a peer must be sent AppendEntries as JSON (it is of an older
/// version that refused the binary form); learnt once per connection.
type JsonAppend = Arc<AtomicBool>;

impl PeerNetwork {
    pub fn new(client: PeerClient, snapshot_timeout: Duration) -> PeerNetwork {
        PeerNetwork {
            heartbeat: client.separate_pool(),
            snapshot: client.separate_pool(),
            replication: client,
            snapshot_timeout,
            rebuild: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever a snapshot file turned out to be damaged while
    /// being prepared for a peer; hand it to [`rebuild_damaged_snapshots`].
    pub fn damaged_snapshots(&self) -> Arc<Notify> {
        self.rebuild.clone()
    }

    fn connection(&self, target: u64, node: &Node, client: &PeerClient) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.rpc_addr.clone(),
            client: client.clone(),
            snapshot: self.snapshot.clone(),
            snapshot_timeout: self.snapshot_timeout,
            json_append: JsonAppend::default(),
            rebuild: self.rebuild.clone(),
            answered: AtomicBool::new(false),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &Node) -> PeerConnection {
        let client = self.replication.clone();
        self.connection(target, node, &client)
    }

    async fn new_heartbeat_client(&mut self, target: u64, node: &Node) -> PeerConnection {
        let client = self.heartbeat.clone();
        self.connection(target, node, &client)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &Node) -> PeerConnection {
        let client = self.snapshot.clone();
        self.connection(target, node, &client)
    }
}

/// The channel to one peer.
pub struct PeerConnection {
    target: u64,
    addr: String,
    client: PeerClient,
    snapshot: PeerClient,
    snapshot_timeout: Duration,
    json_append: JsonAppend,
    rebuild: Arc<Notify>,
    /// Whether the last exchange with the peer got an answer: until one
    /// does, large AppendEntries are probed first (see [`PROBE_ABOVE`]).
    answered: AtomicBool,
}

/// Why a peer call failed, before it is mapped onto openraft's error types.
enum CallError {
    /// Not connected or refused: the peer never saw the request.
    Unreachable(String),
    /// The deadline passed.
    Timeout,
    /// Anything else on the wire.
    Network(String),
}

impl PeerConnection {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        route: Route,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body =
            serde_json::to_vec(body).map_err(|e| CallError::Network(format!("encode: {e}")))?;
        let (status, bytes) = self
            .exchange(route, "application/json", body, timeout)
            .await?;
        decode_reply(status, &bytes, self.target, &self.addr)
    }

    /// Sends AppendEntries in the binary form, or as JSON to a peer that
    /// refused it (an older version answers 400 to a body it cannot parse).
    ///
    /// A request carries at most [`APPEND_BUDGET`] bytes of entries (and at
    /// least one entry): openraft batches by count, and a batch of large
    /// entries could otherwise exceed what the peer accepts, be refused and
    /// be retried, unchanged, forever. The entries left out are reported as
    /// not sent yet (`PartialSuccess`), and openraft sends them next.
    async fn append(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, CallError> {
        if !self.answered.load(Ordering::Relaxed) && !rpc.entries.is_empty() {
            let size: usize = rpc.entries.iter().map(codec::encoded_len).sum();
            if size > PROBE_ABOVE {
                match self.probe(rpc, timeout).await? {
                    AppendEntriesResponse::Success => {}
                    // The follower's log does not match, or a newer term:
                    // the answer to the probe is the answer to the request.
                    other => return Ok(other),
                }
            }
        }
        let (body, sent) = codec::encode_append(rpc, APPEND_BUDGET)
            .map_err(|e| CallError::Network(format!("encode: {e}")))?;
        let reply = if self.json_append.load(Ordering::Relaxed) {
            self.append_json(rpc, sent, timeout).await?
        } else {
            let (status, bytes) = self
                .exchange(Route::Append, codec::APPEND_CONTENT_TYPE, body, timeout)
                .await?;
            if status != 400 && status != 415 {
                decode_reply(status, &bytes, self.target, &self.addr)?
            } else {
                ::log::warn!(
                    "node {} at {} refused a binary AppendEntries (status {status}); sending it JSON",
                    self.target,
                    self.addr
                );
                self.json_append.store(true, Ordering::Relaxed);
                self.append_json(rpc, sent, timeout).await?
            }
        };
        Ok(match reply {
            AppendEntriesResponse::Success if sent < rpc.entries.len() => {
                AppendEntriesResponse::PartialSuccess(Some(rpc.entries[sent - 1].log_id))
            }
            other => other,
        })
    }

    /// AppendEntries with `rpc`'s previous log id and none of its entries:
    /// whether the peer is up and its log matches, for a few bytes. Its
    /// commit index is at most the previous log id, as for any request
    /// (a follower never commits past what it was sent).
    async fn probe(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, CallError> {
        let prev = rpc.prev_log_id;
        let empty = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: prev,
            entries: Vec::new(),
            leader_commit: match (rpc.leader_commit, prev) {
                (Some(c), Some(p)) => Some(if c.index > p.index { p } else { c }),
                _ => None,
            },
        };
        let (body, _) = codec::encode_append(&empty, APPEND_BUDGET)
            .map_err(|e| CallError::Network(format!("encode: {e}")))?;
        if self.json_append.load(Ordering::Relaxed) {
            return self.call(Route::Append, &empty, timeout).await;
        }
        let (status, bytes) = self
            .exchange(Route::Append, codec::APPEND_CONTENT_TYPE, body, timeout)
            .await?;
        if status == 400 || status == 415 {
            // An older peer: the request itself finds out and switches.
            return Ok(AppendEntriesResponse::Success);
        }
        decode_reply(status, &bytes, self.target, &self.addr)
    }

    /// AppendEntries as JSON, with the first `sent` entries of `rpc`.
    async fn append_json(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        sent: usize,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, CallError> {
        if sent == rpc.entries.len() {
            return self.call(Route::Append, rpc, timeout).await;
        }
        let last = rpc.entries[sent - 1].log_id;
        let part = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            entries: rpc.entries[..sent].to_vec(),
            // Never commit past what is sent (see codec::encode_append).
            leader_commit: rpc
                .leader_commit
                .map(|c| if c.index > last.index { last } else { c }),
        };
        self.call(Route::Append, &part, timeout).await
    }

    fn peer(&self) -> Target<'_> {
        Target {
            id: self.target,
            addr: &self.addr,
        }
    }

    /// One request and its whole answer: status and body.
    async fn exchange(
        &self,
        route: Route,
        content_type: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let call = self.client.call(
            self.peer(),
            route,
            content_type,
            body,
            timeout,
            MAX_RESPONSE,
        );
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Ok((reply.status, reply.body)),
            Ok(Err(e)) => Err(call_error(e)),
            Err(_) => Err(CallError::Timeout),
        };
        self.answered.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    fn rpc_error(&self, e: CallError, action: RPCTypes, timeout: Duration) -> RPCError<TypeConfig> {
        match e {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.client.id(),
                target: self.target,
                timeout,
            }),
            CallError::Network(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }
}

/// Turns a peer's answer into the decoded value or an error. Peers answer
/// 200 with `{"Ok": ...}` or `{"Err": "..."}`; anything else is a refusal.
fn decode_reply<Resp: DeserializeOwned>(
    status: u16,
    bytes: &[u8],
    target: u64,
    addr: &str,
) -> Result<Resp, CallError> {
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        return Err(CallError::Unreachable(format!(
            "node {target} at {addr} refused the request with status {status}: {text}"
        )));
    }
    let reply: Result<Resp, String> = serde_json::from_slice(bytes)
        .map_err(|e| CallError::Network(format!("undecodable reply from node {target}: {e}")))?;
    reply.map_err(|e| {
        CallError::Unreachable(format!("node {target} could not serve the request: {e}"))
    })
}

/// Connection-level failures mean the peer is unreachable; others are
/// network errors that openraft retries at once.
fn classify(e: &http::Error) -> CallError {
    if e.is_timeout() {
        CallError::Timeout
    } else if e.is_never_sent() || e.is_connection_lost() || matches!(e, http::Error::Io(_)) {
        CallError::Unreachable(e.to_string())
    } else {
        CallError::Network(e.to_string())
    }
}

fn call_error(e: peer::CallError) -> CallError {
    match e {
        peer::CallError::BadAddress(m) => CallError::Unreachable(m),
        peer::CallError::Send(e) | peer::CallError::Cut { error: e, .. } => classify(&e),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotFile;

    /// Waits between attempts to reach a peer that is down: 200 ms, doubling
    /// up to 2 s. Each attempt makes the leader read the entries to send from
    /// its log, which for large entries is far from free; a follower that
    /// comes back is caught up at most 2 s later.
    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new((0..).map(|n: u32| {
            Duration::from_millis(200 << n.min(4)).min(Duration::from_secs(2))
        })))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        self.append(&rpc, ttl)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::AppendEntries, ttl))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        self.call(Route::Vote, &rpc, ttl)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::Vote, ttl))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        self.call(Route::PreVote, &rpc, ttl)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::Vote, ttl))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        self.call(Route::TransferLeader, &req, ttl)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::TransferLeader, ttl))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable = |m: String| StreamingError::Unreachable(Unreachable::from_string(m));
        // The whole file is read once before it is sent: a damaged file is
        // never streamed, and the signature covers the SHA-256 of exactly
        // the bytes that follow.
        let meta = snapshot.meta;
        let file = snapshot.snapshot;
        let checked = tokio::task::spawn_blocking(move || {
            let r = file.verify_with_digest();
            (file, r)
        })
        .await;
        let (file, digest) = match checked {
            Ok((file, Ok((in_file, digest)))) if in_file == meta => (file, digest),
            Ok((file, Ok((in_file, _)))) => {
                return Err(self.damaged_snapshot(
                    &file,
                    format!("it holds {in_file}, but {meta} was to be sent"),
                ));
            }
            Ok((file, Err(e))) => return Err(self.damaged_snapshot(&file, e.to_string())),
            Err(e) => return Err(unreachable(format!("snapshot check task failed: {e}"))),
        };
        let size = file
            .size()
            .map_err(|e| unreachable(format!("snapshot file: {e}")))?;
        let body = file
            .reopen()
            .map(tokio::fs::File::from_std)
            .map_err(|e| unreachable(format!("open snapshot file: {e}")))?;
        let vote_json = serde_json::to_string(&vote).map_err(|e| unreachable(e.to_string()))?;
        let meta_json = serde_json::to_string(&meta).map_err(|e| unreachable(e.to_string()))?;
        let req = self
            .client
            .request(self.peer(), Route::Snapshot, &digest)
            .map_err(|_| unreachable(format!("bad peer address {}", self.addr)))?
            .header(VOTE_HEADER, vote_json)
            .header(SNAPSHOT_META_HEADER, meta_json)
            .header("content-type", "application/octet-stream")
            .body(Body::sized_stream(body, size))
            .timeout(self.snapshot_timeout);
        let client = self.snapshot.clone();
        let target = self.target;
        let addr = self.addr.clone();
        let transfer = async move {
            let resp = client.send(req).await.map_err(|e| classify(&e))?;
            let status = resp.status();
            let bytes = resp.collect(MAX_RESPONSE).await.map_err(|e| classify(&e))?;
            if let Some(vote) = declined_snapshot(status, &bytes) {
                return Ok(SnapshotResponse { vote });
            }
            decode_reply::<SnapshotResponse<TypeConfig>>(status, &bytes, target, &addr)
        };
        let timeout = self.snapshot_timeout;
        let timed_out = StreamingError::Timeout(Timeout {
            action: RPCTypes::InstallSnapshot,
            id: self.client.id(),
            target: self.target,
            timeout,
        });
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(timeout, transfer) => match r {
                Err(_) | Ok(Err(CallError::Timeout)) => Err(timed_out),
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(CallError::Unreachable(m))) => Err(unreachable(m)),
                Ok(Err(CallError::Network(m))) => Err(StreamingError::Network(NetworkError::from_string(m))),
            },
        }
    }
}

impl PeerConnection {
    /// Reports a snapshot file that failed its check before sending and asks
    /// for a new snapshot. The error is `Unreachable`, never a storage error
    /// (which would stop Raft on this node): openraft backs off, and its next
    /// attempt picks up the new file.
    fn damaged_snapshot(&self, file: &SnapshotFile, why: String) -> StreamingError<TypeConfig> {
        ::log::error!(
            "not sending snapshot {} to node {}: the file is damaged ({why}); building a new snapshot from the state machine",
            file.path().display(),
            self.target
        );
        self.rebuild.notify_one();
        StreamingError::Unreachable(Unreachable::from_string(format!(
            "the snapshot file {} is damaged; a new snapshot is being built",
            file.path().display()
        )))
    }
}

/// The follower's vote when it declined a snapshot it does not need (409
/// `stale_snapshot`: it already has everything the snapshot holds) or that
/// comes from a leader of an earlier term (409 `stale_vote`). Openraft
/// expects the same answer it gives when it ignores such a snapshot itself:
/// the follower's vote, from which the leader learns of a newer term or
/// carries on with log replication.
fn declined_snapshot(status: u16, bytes: &[u8]) -> Option<VoteOf<TypeConfig>> {
    #[derive(serde::Deserialize)]
    struct Declined {
        code: String,
        vote: VoteOf<TypeConfig>,
    }
    if status != 409 {
        return None;
    }
    let d: Declined = serde_json::from_slice(bytes).ok()?;
    matches!(d.code.as_str(), "stale_snapshot" | "stale_vote").then_some(d.vote)
}

/// Builds a new snapshot each time a damaged one was found while sending
/// ([`PeerNetwork::damaged_snapshots`]): the state machine is intact, and
/// the new file replaces the damaged one. Returns when Raft stops.
pub async fn rebuild_damaged_snapshots(raft: crate::node::FerriumRaft, signal: Arc<Notify>) {
    loop {
        signal.notified().await;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::declined_snapshot;

    #[test]
    fn a_declined_snapshot_answers_with_the_followers_vote() {
        let body = br#"{"code":"stale_snapshot","error":"old","vote":{"leader_id":{"term":3,"node_id":2},"committed":true}}"#;
        let vote = declined_snapshot(409, body).expect("a declined snapshot");
        assert_eq!((vote.leader_id.term, vote.leader_id.node_id), (3, 2));
        assert!(vote.committed);
        let stale_vote = body.to_vec();
        let stale_vote = String::from_utf8(stale_vote)
            .unwrap()
            .replace("stale_snapshot", "stale_vote");
        assert!(declined_snapshot(409, stale_vote.as_bytes()).is_some());
        // Any other refusal stays an error.
        let other = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("stale_snapshot", "corrupt_snapshot");
        assert!(declined_snapshot(409, other.as_bytes()).is_none());
        assert!(declined_snapshot(400, body).is_none());
        assert!(declined_snapshot(409, b"not json").is_none());
    }
}
