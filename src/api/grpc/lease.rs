//! Leases on `ferrium.kv.KvService` (`LeaseGrant`, `LeaseRevoke`, the
//! `LeaseKeepAlive` stream, `LeaseTimeToLive`, `LeaseLeases`), and the
//! `ferrium.lock` services `LockService` and `ElectionService` (see
//! [`crate::lock`]).

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::kv::{header, kv_out};
use super::{consistency, read_status, status};
use crate::api::proto::kv as pb;
use crate::api::proto::lock as lpb;
use crate::lock::{self, Held};
use crate::node::{self, Node};
use crate::raft::kv::{ApplyError, KeyValue};

/// The answers of one `LeaseKeepAlive` call.
pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

/// The answers of one `Observe` call.
pub type ObserveStream = Pin<Box<dyn Stream<Item = Result<lpb::LeaderResponse, Status>> + Send>>;

fn id(v: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(v)
        .map_err(|_| Status::invalid_argument(format!("{what} {v} is negative; ids are positive")))
}

pub(super) async fn grant(
    node: &Node,
    request_id: Option<Vec<u8>>,
    r: pb::LeaseGrantRequest,
) -> Result<Response<pb::LeaseGrantResponse>, Status> {
    let ttl = u64::try_from(r.ttl)
        .map_err(|_| Status::invalid_argument(format!("a lease TTL of {} s is negative", r.ttl)))?;
    let o = node
        .lease_grant(id(r.id, "lease id")?, ttl, request_id)
        .await
        .map_err(|e| status(&e))?;
    let mut resp = Response::new(pb::LeaseGrantResponse {
        header: header(node.header(o.revision)),
        id: i64::try_from(o.lease.id).unwrap_or(i64::MAX),
        ttl: i64::try_from(o.lease.ttl).unwrap_or(i64::MAX),
    });
    if o.repeated {
        super::kv::mark_replayed(&mut resp);
    }
    Ok(resp)
}

pub(super) async fn revoke(
    node: &Node,
    request_id: Option<Vec<u8>>,
    r: pb::LeaseRevokeRequest,
) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
    let o = node
        .lease_revoke(id(r.id, "lease id")?, request_id)
        .await
        .map_err(|e| status(&e))?;
    let mut resp = Response::new(pb::LeaseRevokeResponse {
        header: header(node.header(o.revision)),
        deleted: u64::from(o.deleted),
    });
    if o.repeated {
        super::kv::mark_replayed(&mut resp);
    }
    Ok(resp)
}

/// Keep-alives one stream has in progress at most: more wait in the
/// stream (HTTP/2 flow control holds the client back).
const KEEP_ALIVES_IN_PROGRESS: usize = 256;

/// One renewal's answer: the lease and its TTL in seconds, 0 when the lease
/// does not exist (as etcd answers), and the header to send with it.
pub(crate) struct Renewed {
    pub id: i64,
    pub ttl: i64,
    pub header: node::Header,
}

/// One keep-alive's answer: a lease that does not exist answers `ttl` 0;
/// any other failure is a status that ends the stream.
async fn keep_alive_one(node: Node, id: i64) -> Result<Renewed, Status> {
    let lease = u64::try_from(id).map_err(|_| {
        Status::invalid_argument(format!("lease id {id} is negative; ids are positive"))
    })?;
    let ttl = match node.lease_keep_alive(lease).await {
        Ok(l) => i64::try_from(l.ttl).unwrap_or(i64::MAX),
        Err(node::Error::Apply(ApplyError::LeaseNotFound { .. })) => 0,
        Err(e) => return Err(status(&e)),
    };
    Ok(Renewed {
        id,
        ttl,
        header: node.header(node.applied_revision()),
    })
}

pub(super) async fn keep_alive(
    node: Node,
    req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
) -> Result<Response<KeepAliveStream>, Status> {
    use futures_util::StreamExt;
    let ids = req.into_inner().map(|r| r.map(|r| r.id));
    let answers = renew_each(node, ids).map(|r| {
        r.map(|r| pb::LeaseKeepAliveResponse {
            header: header(r.header),
            id: r.id,
            ttl: r.ttl,
        })
    });
    Ok(Response::new(Box::pin(answers)))
}

/// Renews each lease asked for on `inbound` and answers in the order asked;
/// up to [`KEEP_ALIVES_IN_PROGRESS`] keep-alives of one stream are in
/// progress at once (so they share the leader's keep-alive entries). The
/// answers end after the last request's, or with the first failure. Both
/// `LeaseKeepAlive` calls (Ferrium's and etcd's) run through this.
pub(crate) fn renew_each<S>(
    node: Node,
    mut inbound: S,
) -> Pin<Box<dyn Stream<Item = Result<Renewed, Status>> + Send>>
where
    S: Stream<Item = Result<i64, Status>> + Send + Unpin + 'static,
{
    use futures_util::StreamExt;
    let (tx, mut rx) = mpsc::channel::<Result<Renewed, Status>>(16);
    tokio::spawn(async move {
        let mut in_progress = futures_util::stream::FuturesOrdered::new();
        let mut open = true;
        loop {
            tokio::select! {
                r = inbound.next(), if open && in_progress.len() < KEEP_ALIVES_IN_PROGRESS => {
                    match r {
                        Some(Ok(id)) => in_progress.push_back(keep_alive_one(node.clone(), id)),
                        None | Some(Err(_)) => open = false,
                    }
                }
                Some(answer) = in_progress.next(), if !in_progress.is_empty() => {
                    let end = answer.is_err();
                    if tx.send(answer).await.is_err() || end {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

pub(super) async fn time_to_live(
    node: &Node,
    r: pb::LeaseTimeToLiveRequest,
) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
    let c = consistency(&r.consistency)?;
    let t = node
        .lease_time_to_live(id(r.id, "lease id")?, r.keys, c)
        .await
        .map_err(|e| read_status(&e))?;
    Ok(Response::new(pb::LeaseTimeToLiveResponse {
        header: header(node.header(node.applied_revision())),
        id: r.id,
        ttl: t.ttl,
        granted_ttl: i64::try_from(t.granted_ttl).unwrap_or(i64::MAX),
        keys: t.keys,
        remaining_ms: t.remaining_ms,
    }))
}

pub(super) async fn leases(
    node: &Node,
    r: pb::LeaseLeasesRequest,
) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
    let c = consistency(&r.consistency)?;
    let ids = node.lease_list(c).await.map_err(|e| read_status(&e))?;
    Ok(Response::new(pb::LeaseLeasesResponse {
        header: header(node.header(node.applied_revision())),
        leases: ids
            .into_iter()
            .map(|id| pb::LeaseStatus {
                id: i64::try_from(id).unwrap_or(i64::MAX),
            })
            .collect(),
    }))
}

/// The leaders of an election as they change ([`leaders`]).
pub(crate) type Leaders = Pin<Box<dyn Stream<Item = Result<KeyValue, node::Error>> + Send>>;

/// The leaders of election `name` as they change, starting with the
/// current one; ends after the first failure. Both `Observe` calls
/// (Ferrium's and etcd's) run through this.
pub(crate) fn leaders(node: &Node, name: &[u8]) -> Result<Leaders, node::Error> {
    let mut observer = lock::Observer::new(node, name)?;
    let (tx, mut rx) = mpsc::channel::<Result<KeyValue, node::Error>>(4);
    let quiet = node.watch_settings().keepalive_interval;
    tokio::spawn(async move {
        loop {
            let answer = tokio::select! {
                a = observer.next(quiet) => a,
                () = tx.closed() => return,
            };
            let msg = match answer {
                Ok(Some(kv)) => Ok(kv),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            let end = msg.is_err();
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Box::pin(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })))
}

/// `ferrium.lock.LockService` and `ferrium.lock.ElectionService` on a
/// [`Node`].
#[derive(Clone)]
pub struct LockApi {
    pub(super) node: Node,
}

fn held_pb(h: &Held) -> lpb::LeaderKey {
    lpb::LeaderKey {
        name: h.name.clone(),
        key: h.key.clone(),
        rev: i64::try_from(h.revision).unwrap_or(i64::MAX),
        lease: i64::try_from(h.lease).unwrap_or(i64::MAX),
    }
}

fn held_in(l: Option<lpb::LeaderKey>) -> Result<Held, Status> {
    let l = l.ok_or_else(|| Status::invalid_argument("the request names no leader"))?;
    Ok(Held {
        name: l.name,
        key: l.key,
        revision: id(l.rev, "rev")?,
        lease: id(l.lease, "lease")?,
        header_revision: 0,
    })
}

#[tonic::async_trait]
impl lpb::lock_service_server::LockService for LockApi {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = req.into_inner();
        let h = lock::lock(&self.node, &r.name, id(r.lease, "lease")?)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::LockResponse {
            header: header(self.node.header(h.header_revision)),
            rev: i64::try_from(h.revision).unwrap_or(i64::MAX),
            key: h.key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let revision = lock::unlock(&self.node, &req.into_inner().key)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::UnlockResponse {
            header: header(self.node.header(revision)),
        }))
    }
}

#[tonic::async_trait]
impl lpb::election_service_server::ElectionService for LockApi {
    async fn campaign(
        &self,
        req: Request<lpb::CampaignRequest>,
    ) -> Result<Response<lpb::CampaignResponse>, Status> {
        let r = req.into_inner();
        let h = lock::campaign(&self.node, &r.name, id(r.lease, "lease")?, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::CampaignResponse {
            header: header(self.node.header(h.header_revision)),
            leader: Some(held_pb(&h)),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<lpb::ProclaimRequest>,
    ) -> Result<Response<lpb::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let leader = held_in(r.leader)?;
        let revision = lock::proclaim(&self.node, &leader, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::ProclaimResponse {
            header: header(self.node.header(revision)),
        }))
    }

    async fn leader(
        &self,
        req: Request<lpb::LeaderRequest>,
    ) -> Result<Response<lpb::LeaderResponse>, Status> {
        let r = req.into_inner();
        let (kv, revision) = lock::leader(&self.node, &r.name, node::ReadConsistency::Linearizable)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(lpb::LeaderResponse {
            header: header(self.node.header(revision)),
            kv: Some(kv_out(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<lpb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let r = req.into_inner();
        let node = self.node.clone();
        let leaders = leaders(&self.node, &r.name).map_err(|e| status(&e))?;
        let out: ObserveStream = Box::pin(futures_util::StreamExt::map(leaders, move |a| {
            a.map(|kv| lpb::LeaderResponse {
                header: header(node.header(node.applied_revision())),
                kv: Some(kv_out(kv)),
            })
            .map_err(|e| status(&e))
        }));
        Ok(Response::new(out))
    }

    async fn resign(
        &self,
        req: Request<lpb::ResignRequest>,
    ) -> Result<Response<lpb::ResignResponse>, Status> {
        let leader = held_in(req.into_inner().leader)?;
        let revision = lock::resign(&self.node, &leader)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::ResignResponse {
            header: header(self.node.header(revision)),
        }))
    }
}
