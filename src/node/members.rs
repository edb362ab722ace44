//! The cluster as one member sees it, for the console (`GET /cluster/status`):
//! every member of the configuration with what it says of itself, asked over
//! the peer route `/raft/status`, and whether it answered at all.
//!
//! A member that does not answer within the timeout is shown as unreachable
//! with the reason; the view never waits longer than that for the slowest
//! member, so a dead follower cannot stall the page.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Node;
use crate::raft::peer::{self, Route};

/// What a member says of itself (the answer of `/raft/status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberSelf {
    pub id: u64,
    /// openraft's server state: `Leader`, `Follower`, `Candidate`, `Learner`.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub version: String,
    /// Whether it can serve ([`Node::readiness`]).
    pub ready: bool,
    /// Why not, when it cannot.
    pub not_ready: Option<String>,
    /// On the leader: entries each follower is behind.
    #[serde(default)]
    pub lags: std::collections::BTreeMap<u64, u64>,
}

/// One member in the cluster view.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u64,
    /// `voter` or `learner`, by the configuration.
    pub role: &'static str,
    pub api_addr: String,
    pub grpc_addr: String,
    pub reachable: bool,
    /// On the leader's view: entries this member is behind.
    pub lag: Option<u64>,
    /// Why it is unreachable.
    pub error: Option<String>,
    #[serde(flatten)]
    pub said: SelfFields,
}

/// The fields of [`MemberSelf`] shown for a member that answered (or
/// nulls for one that did not, so every member has the same keys).
#[derive(Debug, Clone, Serialize, Default)]
pub struct SelfFields {
    pub state: Option<String>,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub version: Option<String>,
    pub ready: Option<bool>,
    pub not_ready: Option<String>,
}

impl From<MemberSelf> for SelfFields {
    fn from(m: MemberSelf) -> SelfFields {
        SelfFields {
            state: Some(m.state),
            term: Some(m.term),
            leader: m.leader,
            last_log_index: m.last_log_index,
            committed: m.committed,
            applied: m.applied,
            version: Some(m.version),
            ready: Some(m.ready),
            not_ready: m.not_ready,
        }
    }
}

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub served_by: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberView>,
}

impl Node {
    /// This member's own state, as `/raft/status` answers it.
    pub fn member_self(&self) -> MemberSelf {
        let s = self.status();
        let readiness = self.readiness();
        let lags = self.leader_lags(&s);
        MemberSelf {
            id: s.node_id,
            state: s.state,
            term: s.current_term,
            leader: s.current_leader,
            last_log_index: s.last_log_index,
            committed: s.committed,
            applied: s.last_applied,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: readiness.is_ok(),
            not_ready: readiness.err(),
            lags,
        }
    }

    /// Every member of the configuration and what it says of itself, each
    /// asked in parallel and given up on after `timeout`.
    pub async fn cluster_view(&self, timeout: Duration) -> ClusterView {
        let status = self.status();
        let asks = status.membership.nodes.iter().map(|(id, info)| async move {
            let said = if *id == self.inner.id {
                Ok(self.member_self())
            } else {
                self.ask_status(*id, &info.rpc_addr, timeout).await
            };
            (*id, info, said)
        });
        let answers = futures_util::future::join_all(asks).await;
        // How far behind each member is, as the leader counts it (a
        // follower does not track the others): the newest leader's, should
        // an old one still think it leads.
        let lags = answers
            .iter()
            .filter_map(|(_, _, said)| match said {
                Ok(m) if m.leader == Some(m.id) => Some(m),
                _ => None,
            })
            .max_by_key(|m| m.term)
            .map(|m| m.lags.clone())
            .unwrap_or_default();
        let members = answers
            .into_iter()
            .map(|(id, info, said)| {
                let role = if status.membership.voters.contains(&id) {
                    "voter"
                } else {
                    "learner"
                };
                let (reachable, error, said) = match said {
                    Ok(m) => (true, None, SelfFields::from(m)),
                    Err(e) => (false, Some(e), SelfFields::default()),
                };
                MemberView {
                    id,
                    role,
                    api_addr: info.api_addr.clone(),
                    grpc_addr: info.grpc_addr.clone(),
                    reachable,
                    lag: lags.get(&id).copied(),
                    error,
                    said,
                }
            })
            .collect();
        ClusterView {
            cluster: status.cluster.clone(),
            served_by: status.node_id,
            leader: status.current_leader,
            term: status.current_term,
            members,
        }
    }

    /// Entries each member is behind this node, when it leads (none
    /// otherwise).
    fn leader_lags(&self, status: &super::Status) -> std::collections::BTreeMap<u64, u64> {
        if status.current_leader != Some(status.node_id) {
            return Default::default();
        }
        let mut lags: std::collections::BTreeMap<u64, u64> = status
            .replication
            .iter()
            .map(|(id, r)| (*id, r.lag))
            .collect();
        lags.insert(status.node_id, 0);
        lags
    }

    /// Asks member `id` at `addr` for its own state, giving up after
    /// `timeout` whether the answer's head or its body is late.
    async fn ask_status(
        &self,
        id: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<MemberSelf, String> {
        match tokio::time::timeout(timeout, self.ask_status_once(id, addr, timeout)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer from {addr} within {} ms",
                timeout.as_millis()
            )),
        }
    }

    async fn ask_status_once(
        &self,
        id: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<MemberSelf, String> {
        let reply = self
            .inner
            .peers
            .call(
                peer::Target { id, addr },
                Route::Status,
                "application/json",
                b"null".to_vec(),
                timeout,
                64 * 1024,
            )
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(peer::CallError::Send(e)) if e.is_timeout() => {
                return Err(format!(
                    "no answer from {addr} within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("cannot reach {addr}: {e}")),
        };
        if reply.status != 200 {
            let said = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|b| b["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| "no reason given".into());
            return Err(format!("{addr} answered {}: {said}", reply.status));
        }
        match serde_json::from_slice::<Result<MemberSelf, String>>(&reply.body) {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(format!("{addr} could not say: {e}")),
            Err(e) => Err(format!(
                "{addr} gave an answer that does not decode ({e}); is it an older version?"
            )),
        }
    }
}
