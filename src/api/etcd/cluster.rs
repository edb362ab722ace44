//! etcd's `Cluster` and `Maintenance` services on Ferrium's membership and
//! status.
//!
//! Members: an etcd member id is the Ferrium node id; a member's peer URL is
//! its HTTP listener (`rpc_addr`), its client URL its gRPC address
//! (`host:port`, no scheme: see `members` below). Adding a
//! member differs from etcd in one way a client can tell: the new node must
//! already be running (with its own `node.id`), because Ferrium learns the
//! id from it and starts replicating at once; the answer then lists it as a
//! learner that has caught up (or as a voter).

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::{EtcdApi, current, errors, header, read_status, signed, status};
use crate::api::proto::etcd::etcdserverpb as epb;
use crate::node::{Error, ReadConsistency};
use crate::raft::types::Node as NodeInfo;

/// The etcd API version Ferrium speaks (what `Status` reports as the
/// member's version: etcd's clients compare it to decide what to send).
pub const ETCD_VERSION: &str = "3.4.0";

impl EtcdApi {
    fn url(&self, addr: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    fn members(&self) -> Vec<epb::Member> {
        let m = self.node.status().membership;
        m.nodes
            .iter()
            .map(|(id, n)| {
                let client = if n.grpc_addr.is_empty() {
                    &n.api_addr
                } else {
                    &n.grpc_addr
                };
                epb::Member {
                    id: *id,
                    name: format!("ferrium-{id}"),
                    peer_ur_ls: vec![self.url(&n.rpc_addr)],
                    // host:port without a scheme: Go clients given a URL
                    // dial it with the whole URL as the HTTP/2 authority,
                    // which etcd's server lets through and an HTTP/2 server
                    // that checks its input refuses.
                    client_ur_ls: vec![client.clone()],
                    is_learner: !m.voters.contains(id),
                }
            })
            .collect()
    }

    fn voters(&self) -> std::collections::BTreeSet<u64> {
        self.node.status().membership.voters.into_iter().collect()
    }

    fn known(&self, id: u64) -> Result<(), Status> {
        if self.node.status().membership.nodes.contains_key(&id) {
            Ok(())
        } else {
            Err(Status::not_found(errors::MEMBER_NOT_FOUND))
        }
    }
}

/// `host:port` of a member URL.
fn address(url: &str) -> Result<String, Status> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let addr = rest.trim_end_matches('/');
    if addr.is_empty() || addr.contains('/') {
        return Err(Status::invalid_argument(format!(
            "peer URL {url:?} is not http://host:port of the new member's HTTP listener"
        )));
    }
    Ok(addr.to_string())
}

#[tonic::async_trait]
impl epb::cluster_server::Cluster for EtcdApi {
    async fn member_add(
        &self,
        req: Request<epb::MemberAddRequest>,
    ) -> Result<Response<epb::MemberAddResponse>, Status> {
        let r = req.into_inner();
        let [url] = r.peer_ur_ls.as_slice() else {
            return Err(Status::invalid_argument(
                "give the new member's one peer URL: http://host:port of its HTTP listener",
            ));
        };
        let addr = address(url)?;
        let id = self
            .node
            .member_id_at(&addr, self.tls)
            .await
            .map_err(|e| status(&e))?;
        if self.node.status().membership.nodes.contains_key(&id) {
            return Err(Status::failed_precondition(format!(
                "etcdserver: member ID already exist (node {id} at {addr} is a member)"
            )));
        }
        let info = NodeInfo {
            rpc_addr: addr.clone(),
            api_addr: addr.clone(),
            grpc_addr: String::new(),
        };
        self.node
            .add_learner(id, info, None)
            .await
            .map_err(|e| status(&e))?;
        if !r.is_learner {
            let mut voters = self.voters();
            voters.insert(id);
            self.node
                .change_membership(voters)
                .await
                .map_err(|e| status(&e))?;
        }
        let members = self.members();
        let member = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(epb::MemberAddResponse {
            header: current(&self.node),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<epb::MemberRemoveRequest>,
    ) -> Result<Response<epb::MemberRemoveResponse>, Status> {
        let id = req.into_inner().id;
        self.known(id)?;
        let mut voters = self.voters();
        voters.remove(&id);
        if voters.is_empty() {
            return Err(Status::failed_precondition(
                "cannot remove the last voter; a cluster needs at least one",
            ));
        }
        self.node
            .change_membership(voters)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::MemberRemoveResponse {
            header: current(&self.node),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        _req: Request<epb::MemberUpdateRequest>,
    ) -> Result<Response<epb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "Ferrium does not change a member's addresses in place; remove the member, then add it at its new address",
        ))
    }

    async fn member_list(
        &self,
        req: Request<epb::MemberListRequest>,
    ) -> Result<Response<epb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.node
                .read_barrier()
                .await
                .map_err(|e| read_status(&e))?;
        }
        Ok(Response::new(epb::MemberListResponse {
            header: current(&self.node),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<epb::MemberPromoteRequest>,
    ) -> Result<Response<epb::MemberPromoteResponse>, Status> {
        let id = req.into_inner().id;
        self.known(id)?;
        let mut voters = self.voters();
        if voters.contains(&id) {
            return Err(Status::failed_precondition(errors::MEMBER_NOT_LEARNER));
        }
        voters.insert(id);
        self.node
            .change_membership(voters)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::MemberPromoteResponse {
            header: current(&self.node),
            members: self.members(),
        }))
    }
}

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<epb::SnapshotResponse, Status>> + Send>>;

/// A 32-bit FNV-1a hash, fed piece by piece.
struct Fnv(u32);

impl Fnv {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

#[tonic::async_trait]
impl epb::maintenance_server::Maintenance for EtcdApi {
    async fn alarm(
        &self,
        req: Request<epb::AlarmRequest>,
    ) -> Result<Response<epb::AlarmResponse>, Status> {
        use epb::alarm_request::AlarmAction;
        match AlarmAction::try_from(req.into_inner().action) {
            // Ferrium raises no alarms: it has no space quota to run out of,
            // and a storage failure stops the member (its health says so).
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {
                // No header, as etcd 3.4 answers.
                Ok(Response::new(epb::AlarmResponse {
                    header: None,
                    alarms: Vec::new(),
                }))
            }
            Ok(AlarmAction::Activate) => Err(Status::unimplemented(
                "Ferrium raises no alarms and clients cannot raise one",
            )),
            Err(_) => Err(Status::invalid_argument(
                "alarm action is not GET, ACTIVATE or DEACTIVATE",
            )),
        }
    }

    async fn status(
        &self,
        _req: Request<epb::StatusRequest>,
    ) -> Result<Response<epb::StatusResponse>, Status> {
        let s = self.node.status();
        // A walk of the data directory: off the runtime's workers.
        let dir = self.data_dir.clone();
        let size = tokio::task::spawn_blocking(move || crate::metrics::dir_size(&dir))
            .await
            .unwrap_or(0);
        let db = i64::try_from(size).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if let Err(reason) = self.node.readiness() {
            errors.push(reason);
        }
        Ok(Response::new(epb::StatusResponse {
            header: current(&self.node),
            version: ETCD_VERSION.into(),
            db_size: db,
            leader: s.current_leader.unwrap_or(0),
            raft_index: s.last_log_index.unwrap_or(0),
            raft_term: s.current_term,
            raft_applied_index: s.last_applied.unwrap_or(0),
            errors,
            db_size_in_use: db,
            is_learner: s.membership.learners.contains(&s.node_id),
            storage_version: String::new(),
            db_size_quota: 0,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<epb::DefragmentRequest>,
    ) -> Result<Response<epb::DefragmentResponse>, Status> {
        // RocksDB compacts in the background: there is nothing to defragment.
        // No header, as etcd 3.4 answers.
        Ok(Response::new(epb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        _req: Request<epb::HashRequest>,
    ) -> Result<Response<epb::HashResponse>, Status> {
        Err(Status::unimplemented(
            "Hash hashes etcd's own database file; use HashKV, which compares members' keys",
        ))
    }

    async fn hash_kv(
        &self,
        req: Request<epb::HashKvRequest>,
    ) -> Result<Response<epb::HashKvResponse>, Status> {
        let revision = u64::try_from(req.into_inner().revision).unwrap_or(0);
        // Every key at the revision, from this member's own state: equal
        // hashes at one revision mean equal data.
        let range = crate::raft::kv::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..crate::raft::kv::RangeRequest::default()
        };
        let (r, at) = self
            .node
            .range(range, ReadConsistency::Stale)
            .await
            .map_err(|e| read_status(&e))?;
        let mut h = Fnv(0x811c_9dc5);
        for kv in &r.kvs {
            h.feed(&(kv.key.len() as u64).to_be_bytes());
            h.feed(&kv.key);
            h.feed(&(kv.value.len() as u64).to_be_bytes());
            h.feed(&kv.value);
            for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
                h.feed(&n.to_be_bytes());
            }
        }
        Ok(Response::new(epb::HashKvResponse {
            header: header(self.node.header(at)),
            hash: h.0,
            compact_revision: signed(self.node.compact_revision()),
            hash_revision: signed(at),
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<epb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        // Ferrium's own snapshot file (the one Raft sends to a new member),
        // not etcd's bbolt database. As etcd does, the stream ends with the
        // SHA-256 of what precedes it, which etcdctl looks for at a
        // multiple of 512 bytes; zeros pad the file to one.
        let file = self.node.fresh_snapshot().await.map_err(|e| status(&e))?;
        let size = file
            .size()
            .map_err(|e| Status::internal(format!("cannot read the snapshot file: {e}")))?;
        let reader = file
            .reader()
            .map_err(|e| Status::internal(format!("cannot read the snapshot file: {e}")))?;
        let pad = (512 - size % 512) % 512;
        let total = size + pad + 32;
        let head = current(&self.node);
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            use std::io::Read;
            let mut reader = reader;
            let mut digest = sha2::Sha256::new();
            let mut sent: u64 = 0;
            let send = |blob: Vec<u8>, sent: u64| {
                tx.blocking_send(Ok(epb::SnapshotResponse {
                    header: head,
                    remaining_bytes: total.saturating_sub(sent),
                    blob,
                    version: String::new(),
                }))
                .is_ok()
            };
            loop {
                let mut blob = vec![0u8; SNAPSHOT_CHUNK];
                let n = match reader.read(&mut blob) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "cannot read the snapshot file: {e}"
                        ))));
                        return;
                    }
                };
                if n == 0 || sent >= size {
                    break;
                }
                blob.truncate(n);
                digest.update(&blob);
                sent += n as u64;
                if !send(blob, sent) {
                    return;
                }
            }
            let mut tail = vec![0u8; usize::try_from(pad).unwrap_or(0)];
            digest.update(&tail);
            tail.extend_from_slice(&digest.finalize());
            let _ = send(tail, total);
        });
        let out: SnapshotStream =
            Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        Ok(Response::new(out))
    }

    async fn move_leader(
        &self,
        req: Request<epb::MoveLeaderRequest>,
    ) -> Result<Response<epb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        match self.node.move_leader(target).await {
            Ok(()) => Ok(Response::new(epb::MoveLeaderResponse {
                header: current(&self.node),
            })),
            Err(Error::Invalid(_)) => {
                Err(Status::failed_precondition(errors::BAD_LEADER_TRANSFEREE))
            }
            Err(Error::NotLeader(_)) => Err(Status::failed_precondition("etcdserver: not leader")),
            Err(e) => Err(status(&e)),
        }
    }
}

/// Bytes per `Snapshot` message.
const SNAPSHOT_CHUNK: usize = 1 << 20;
