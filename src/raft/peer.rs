//! The peer wire contract: the routes under `/raft/`, the headers every peer
//! request carries, and [`PeerClient`], the one place that builds, signs
//! and sends such a request.
//!
//! A peer request is `POST /raft/<route>` to the target's advertised HTTP
//! address. It names the target (`x-ferrium-target`), the sender
//! (`x-ferrium-from`) and the cluster (`x-ferrium-cluster`), so that a node
//! answering at a reused address, or a node of another cluster, refuses it
//! (421) instead of acting on a message not meant for it. With a cluster
//! secret it is signed (`x-ferrium-auth`, see [`crate::auth::PeerSigner`])
//! over the method, path, target, sender, cluster and the SHA-256 of the
//! body. The receiving side is [`crate::raft::rpc`]; the senders are the
//! Raft network ([`crate::raft::network`]) and the forwarding of client
//! requests to the leader ([`crate::node`]).
//!
//! Transport failures keep their kind ([`http::Error::is_never_sent`],
//! [`http::Error::is_connection_lost`], [`http::Error::is_timeout`]): each
//! caller maps them onto what it reports (openraft's error types, or a
//! client's `unavailable` / `outcome_unknown`), never by matching texts.

use crate::auth::{BodyDigest, PeerSigner, body_digest};
use crate::http::{self, ClientRequest, ClientResponse, Method};
use std::sync::Arc;
use std::time::Duration;

/// Every peer route starts with this.
pub const PREFIX: &str = "/raft/";

/// Header naming the node a peer request is meant for.
pub const TARGET_HEADER: &str = "x-ferrium-target";
/// Header naming the cluster of the sender.
pub const CLUSTER_HEADER: &str = "x-ferrium-cluster";
/// Header naming the sending node.
pub const FROM_HEADER: &str = "x-ferrium-from";
/// Header carrying the signature of a request (with a cluster secret).
pub const AUTH_HEADER: &str = "x-ferrium-auth";
/// Header carrying the leader's vote with a snapshot.
pub const VOTE_HEADER: &str = "x-ferrium-vote";
/// Header carrying the snapshot's metadata.
pub const SNAPSHOT_META_HEADER: &str = "x-ferrium-snapshot-meta";

/// The peer routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Raft AppendEntries (and heartbeats).
    Append,
    /// Raft RequestVote.
    Vote,
    /// Raft pre-vote.
    PreVote,
    /// Leadership transfer.
    TransferLeader,
    /// A streamed snapshot.
    Snapshot,
    /// A client write forwarded to the leader.
    Write,
    /// A read index for a follower's linearizable read.
    ReadIndex,
    /// A forwarded add-learner.
    AddLearner,
    /// A forwarded membership change.
    ChangeMembership,
    /// What a member says of itself (the console's cluster view).
    Status,
}

impl Route {
    /// Every route, in the order they are registered.
    pub const ALL: [Route; 10] = [
        Route::Append,
        Route::Vote,
        Route::PreVote,
        Route::TransferLeader,
        Route::Snapshot,
        Route::Write,
        Route::ReadIndex,
        Route::AddLearner,
        Route::ChangeMembership,
        Route::Status,
    ];

    /// The request path.
    pub const fn path(self) -> &'static str {
        match self {
            Route::Append => "/raft/append",
            Route::Vote => "/raft/vote",
            Route::PreVote => "/raft/pre-vote",
            Route::TransferLeader => "/raft/transfer-leader",
            Route::Snapshot => "/raft/snapshot",
            Route::Write => "/raft/write",
            Route::ReadIndex => "/raft/read-index",
            Route::AddLearner => "/raft/add-learner",
            Route::ChangeMembership => "/raft/change-membership",
            Route::Status => "/raft/status",
        }
    }

    /// The label of `ferrium_forwarded_requests_total` for a request that
    /// forwards a client's request to the leader.
    pub const fn forwarded_label(self) -> &'static str {
        match self {
            Route::Write => "write",
            Route::ReadIndex => "read_index",
            _ => "admin",
        }
    }
}

/// The node a request is for: its id and advertised address.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub id: u64,
    pub addr: &'a str,
}

/// Why a peer request got no complete answer.
#[derive(Debug)]
pub enum CallError {
    /// The target's address does not make a URL.
    BadAddress(String),
    /// Sending failed, or no answer came (see the error's kind).
    Send(http::Error),
    /// The answer's head arrived with `status`, its body did not.
    Cut { status: u16, error: http::Error },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::BadAddress(m) => f.write_str(m),
            CallError::Send(e) => write!(f, "{e}"),
            CallError::Cut { status, error } => {
                write!(f, "the answer ({status}) was cut off: {error}")
            }
        }
    }
}

/// A complete answer from a peer.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends requests to peers as node `id` of `cluster`: routing headers and,
/// with a cluster secret, a signature on each. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    id: u64,
    cluster: String,
    signer: Option<Arc<PeerSigner>>,
    http: http::Client,
}

impl PeerClient {
    pub fn new(
        id: u64,
        cluster: &str,
        signer: Option<Arc<PeerSigner>>,
        http: http::Client,
    ) -> PeerClient {
        PeerClient {
            id,
            cluster: cluster.to_string(),
            signer,
            http,
        }
    }

    /// The same sender over its own connection pool (so that, say,
    /// snapshot transfers never queue behind heartbeats).
    pub fn separate_pool(&self) -> PeerClient {
        PeerClient {
            http: self.http.separate_pool(),
            ..self.clone()
        }
    }

    /// A plain `GET` of `url` with this client's connections and TLS (no
    /// routing headers): to ask a node that is not a member yet who it is.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Reply, CallError> {
        let req = ClientRequest::new(Method::Get, url)
            .map_err(|e| CallError::BadAddress(format!("bad address {url}: {e}")))?
            .timeout(timeout);
        let resp = self.http.send(req).await.map_err(CallError::Send)?;
        let status = resp.status();
        match resp.collect(64 * 1024).await {
            Ok(body) => Ok(Reply { status, body }),
            Err(error) => Err(CallError::Cut { status, error }),
        }
    }

    /// The id of the sending node.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A request for `route` on `target`, with the routing
    /// headers, signed over the body whose SHA-256 is `digest`. The caller
    /// adds the body, its content type and a timeout.
    pub fn request(
        &self,
        target: Target<'_>,
        route: Route,
        digest: &BodyDigest,
    ) -> Result<ClientRequest, CallError> {
        let Target { id: target, addr } = target;
        let path = route.path();
        let req = ClientRequest::new(Method::Post, &format!("{addr}{path}"))
            .map_err(|e| CallError::BadAddress(format!("bad peer address {addr}: {e}")))?;
        let req = req
            .header(TARGET_HEADER, target.to_string())
            .header(FROM_HEADER, self.id.to_string())
            .header(CLUSTER_HEADER, self.cluster.clone());
        Ok(match &self.signer {
            Some(signer) => req.header(
                AUTH_HEADER,
                signer.sign_digest("POST", path, target, self.id, digest),
            ),
            None => req,
        })
    }

    /// Sends a request built by [`PeerClient::request`] (a streamed body).
    pub async fn send(&self, req: ClientRequest) -> Result<ClientResponse, http::Error> {
        self.http.send(req).await
    }

    /// One request with a body in memory, and its whole answer (at most
    /// `max_answer` bytes).
    pub async fn call(
        &self,
        target: Target<'_>,
        route: Route,
        content_type: &'static str,
        body: Vec<u8>,
        timeout: Duration,
        max_answer: usize,
    ) -> Result<Reply, CallError> {
        let req = self
            .request(target, route, &body_digest(&body))?
            .header("content-type", content_type)
            .body(body)
            .timeout(timeout);
        let resp = self.http.send(req).await.map_err(CallError::Send)?;
        let status = resp.status();
        match resp.collect(max_answer).await {
            Ok(body) => Ok(Reply { status, body }),
            Err(error) => Err(CallError::Cut { status, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_under_the_peer_prefix_and_distinct() {
        let paths: std::collections::BTreeSet<_> = Route::ALL.iter().map(|r| r.path()).collect();
        assert_eq!(paths.len(), Route::ALL.len());
        assert!(paths.iter().all(|p| p.starts_with(PREFIX)));
    }

    const TO_2: Target<'static> = Target {
        id: 2,
        addr: "http://127.0.0.1:1",
    };

    #[test]
    fn a_request_names_target_sender_and_cluster_and_is_signed_with_a_secret() {
        let http = http::Client::new(http::ClientConfig::default());
        let plain = PeerClient::new(1, "prod", None, http.clone());
        let req = plain
            .request(TO_2, Route::Vote, &body_digest(b"{}"))
            .expect("a request");
        assert_eq!(req.header_value(TARGET_HEADER), Some("2"));
        assert_eq!(req.header_value(FROM_HEADER), Some("1"));
        assert_eq!(req.header_value(CLUSTER_HEADER), Some("prod"));
        assert_eq!(req.header_value(AUTH_HEADER), None);
        let signer = Arc::new(PeerSigner::new(b"secret".to_vec(), "prod"));
        let signed = PeerClient::new(1, "prod", Some(signer), http);
        let req = signed
            .request(TO_2, Route::Vote, &body_digest(b"{}"))
            .expect("a request");
        assert!(
            req.header_value(AUTH_HEADER)
                .is_some_and(|v| v.contains("mac="))
        );
        assert!(matches!(
            signed.request(
                Target {
                    id: 2,
                    addr: "not a url"
                },
                Route::Vote,
                &body_digest(b"")
            ),
            Err(CallError::BadAddress(_))
        ));
    }
}
