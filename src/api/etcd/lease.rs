//! etcd's `Lease` service, and the `v3lockpb.Lock` and
//! `v3electionpb.Election` services, on the same lease, lock and election
//! code as Ferrium's own calls ([`crate::node::lease`], [`crate::lock`]).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{EtcdApi, current, header, kv_out, read_status, signed, status, unsigned};
use crate::api::grpc::kv::request_id;
use crate::api::proto::etcd::etcdserverpb as epb;
use crate::api::proto::etcd::v3electionpb as elpb;
use crate::api::proto::etcd::v3lockpb as lpb;
use crate::lock::{self, Held};
use crate::node::ReadConsistency;
use crate::raft::kv::ApplyError;

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<epb::LeaseKeepAliveResponse, Status>> + Send>>;
pub type ObserveStream = Pin<Box<dyn Stream<Item = Result<elpb::LeaderResponse, Status>> + Send>>;

/// Renews each lease asked for on `ids` (gRPC, or the gateway's JSON lines).
pub fn keep_alive<S>(api: &EtcdApi, ids: S) -> KeepAliveStream
where
    S: Stream<Item = Result<i64, Status>> + Send + Unpin + 'static,
{
    let answers = crate::api::grpc::lease::renew_each(api.node.clone(), ids);
    Box::pin(answers.map(|r| {
        r.map(|r| epb::LeaseKeepAliveResponse {
            header: header(r.header),
            id: r.id,
            ttl: r.ttl,
        })
    }))
}

#[tonic::async_trait]
impl epb::lease_server::Lease for EtcdApi {
    async fn lease_grant(
        &self,
        req: Request<epb::LeaseGrantRequest>,
    ) -> Result<Response<epb::LeaseGrantResponse>, Status> {
        let id = request_id(&req)?;
        let r = req.into_inner();
        let o = self
            .node
            .lease_grant(unsigned(r.id, "lease id")?, unsigned(r.ttl, "TTL")?, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseGrantResponse {
            header: header(self.node.header(o.revision)),
            id: signed(o.lease.id),
            ttl: signed(o.lease.ttl),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<epb::LeaseRevokeRequest>,
    ) -> Result<Response<epb::LeaseRevokeResponse>, Status> {
        let id = request_id(&req)?;
        let lease = unsigned(req.into_inner().id, "lease id")?;
        let o = self
            .node
            .lease_revoke(lease, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::LeaseRevokeResponse {
            header: header(self.node.header(o.revision)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<epb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let ids = req.into_inner().map(|r| r.map(|r| r.id));
        Ok(Response::new(keep_alive(self, ids)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<epb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<epb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let lease = unsigned(r.id, "lease id")?;
        match self
            .node
            .lease_time_to_live(lease, r.keys, ReadConsistency::Linearizable)
            .await
        {
            Ok(t) => Ok(Response::new(epb::LeaseTimeToLiveResponse {
                header: current(&self.node),
                id: r.id,
                ttl: t.ttl,
                granted_ttl: signed(t.granted_ttl),
                keys: t.keys,
            })),
            // etcd answers an unknown lease with TTL -1, not an error.
            Err(crate::node::Error::Apply(ApplyError::LeaseNotFound { .. })) => {
                Ok(Response::new(epb::LeaseTimeToLiveResponse {
                    header: current(&self.node),
                    id: r.id,
                    ttl: -1,
                    ..epb::LeaseTimeToLiveResponse::default()
                }))
            }
            Err(e) => Err(read_status(&e)),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<epb::LeaseLeasesRequest>,
    ) -> Result<Response<epb::LeaseLeasesResponse>, Status> {
        let ids = self
            .node
            .lease_list(ReadConsistency::Linearizable)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(epb::LeaseLeasesResponse {
            header: current(&self.node),
            leases: ids
                .into_iter()
                .map(|id| epb::LeaseStatus { id: signed(id) })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for EtcdApi {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = req.into_inner();
        let h = lock::lock(&self.node, &r.name, unsigned(r.lease, "lease")?)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(lpb::LockResponse {
            header: header(self.node.header(h.header_revision)),
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

fn held_out(h: &Held) -> elpb::LeaderKey {
    elpb::LeaderKey {
        name: h.name.clone(),
        key: h.key.clone(),
        rev: signed(h.revision),
        lease: signed(h.lease),
    }
}

fn held_in(l: Option<elpb::LeaderKey>) -> Result<Held, Status> {
    let l = l.ok_or_else(|| Status::invalid_argument("the request names no leader"))?;
    Ok(Held {
        name: l.name,
        key: l.key,
        revision: unsigned(l.rev, "rev")?,
        lease: unsigned(l.lease, "lease")?,
        header_revision: 0,
    })
}

#[tonic::async_trait]
impl elpb::election_server::Election for EtcdApi {
    async fn campaign(
        &self,
        req: Request<elpb::CampaignRequest>,
    ) -> Result<Response<elpb::CampaignResponse>, Status> {
        let r = req.into_inner();
        let h = lock::campaign(&self.node, &r.name, unsigned(r.lease, "lease")?, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(elpb::CampaignResponse {
            header: header(self.node.header(h.header_revision)),
            leader: Some(held_out(&h)),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<elpb::ProclaimRequest>,
    ) -> Result<Response<elpb::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let leader = held_in(r.leader)?;
        let revision = lock::proclaim(&self.node, &leader, &r.value)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(elpb::ProclaimResponse {
            header: header(self.node.header(revision)),
        }))
    }

    async fn leader(
        &self,
        req: Request<elpb::LeaderRequest>,
    ) -> Result<Response<elpb::LeaderResponse>, Status> {
        let r = req.into_inner();
        let (kv, revision) = lock::leader(&self.node, &r.name, ReadConsistency::Linearizable)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(elpb::LeaderResponse {
            header: header(self.node.header(revision)),
            kv: Some(kv_out(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<elpb::LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let r = req.into_inner();
        let node = self.node.clone();
        let leaders =
            crate::api::grpc::lease::leaders(&self.node, &r.name).map_err(|e| status(&e))?;
        let out: ObserveStream = Box::pin(leaders.map(move |a| {
            a.map(|kv| elpb::LeaderResponse {
                header: current(&node),
                kv: Some(kv_out(kv)),
            })
            .map_err(|e| status(&e))
        }));
        Ok(Response::new(out))
    }

    async fn resign(
        &self,
        req: Request<elpb::ResignRequest>,
    ) -> Result<Response<elpb::ResignResponse>, Status> {
        let leader = held_in(req.into_inner().leader)?;
        let revision = lock::resign(&self.node, &leader)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(elpb::ResignResponse {
            header: header(self.node.header(revision)),
        }))
    }
}
