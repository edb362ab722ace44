//! `ferrium.management.ManagementService`: init, membership, metrics,
//! health and leader.

use super::status;
use crate::api::proto::management::management_service_server::ManagementService;
use crate::api::proto::management::{
    self as mgmt, AddLearnerRequest, AddLearnerResponse, ChangeMembershipRequest,
    ChangeMembershipResponse, HealthRequest, HealthResponse, InitializeRequest, InitializeResponse,
    LeaderRequest, LeaderResponse, MembershipConfig, MetricsRequest, MetricsResponse,
    ReplicationStatus,
};
use crate::node::Node;
use crate::raft::types::Node as NodeInfo;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

/// `ferrium.management.ManagementService` on a [`Node`].
#[derive(Clone)]
pub struct ManagementApi {
    pub(super) node: Node,
}

fn node_info(n: mgmt::NodeInfo) -> NodeInfo {
    NodeInfo {
        api_addr: if n.api_addr.is_empty() {
            n.rpc_addr.clone()
        } else {
            n.api_addr
        },
        rpc_addr: n.rpc_addr,
        grpc_addr: n.grpc_addr,
    }
}

fn proto_node(n: NodeInfo) -> mgmt::NodeInfo {
    mgmt::NodeInfo {
        rpc_addr: n.rpc_addr,
        api_addr: n.api_addr,
        grpc_addr: n.grpc_addr,
    }
}

#[tonic::async_trait]
impl ManagementService for ManagementApi {
    async fn initialize(
        &self,
        req: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        let members = req.into_inner().members;
        let members = if members.is_empty() {
            None
        } else {
            Some(
                members
                    .into_iter()
                    .map(|(id, n)| (id, node_info(n)))
                    .collect(),
            )
        };
        self.node
            .initialize(members)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(InitializeResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        let r = req.into_inner();
        let info = node_info(mgmt::NodeInfo {
            rpc_addr: r.rpc_addr,
            api_addr: r.api_addr,
            grpc_addr: r.grpc_addr,
        });
        self.node
            .add_learner(r.node_id, info, None)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(AddLearnerResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ChangeMembershipResponse>, Status> {
        let voters: BTreeSet<u64> = req.into_inner().member_ids.into_iter().collect();
        self.node
            .change_membership(voters)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ChangeMembershipResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn get_metrics(
        &self,
        _req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let s = self.node.status();
        let membership = MembershipConfig {
            log_index: s.membership.log_index.unwrap_or(0),
            voters: s.membership.voters,
            learners: s.membership.learners,
            nodes: s
                .membership
                .nodes
                .into_iter()
                .map(|(id, n)| (id, proto_node(n)))
                .collect(),
        };
        let replication = s
            .replication
            .into_iter()
            .map(|(id, r)| {
                let status = ReplicationStatus {
                    term: r.matched_term.unwrap_or(0),
                    index: r.matched.unwrap_or(0),
                    lag: r.lag,
                };
                (id, status)
            })
            .collect();
        Ok(Response::new(MetricsResponse {
            state: s.state,
            current_leader: s.current_leader,
            term: s.current_term,
            last_log_index: s.last_log_index.unwrap_or(0),
            last_applied_index: s.last_applied.unwrap_or(0),
            membership: Some(membership),
            replication,
            error: String::new(),
            node_id: s.node_id,
            committed_index: s.committed.unwrap_or(0),
            snapshot_index: s.snapshot.unwrap_or(0),
            purged_index: s.purged.unwrap_or(0),
        }))
    }

    /// Liveness, as REST's `/health`: `UNAVAILABLE` when the node cannot
    /// serve at all (storage failed, shutting down).
    async fn health_check(
        &self,
        _req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        if !self.node.is_healthy() {
            return Err(Status::unavailable(format!(
                "node {} is unhealthy (storage failed or shutting down)",
                self.node.id()
            )));
        }
        Ok(Response::new(HealthResponse {
            status: "healthy".into(),
            service: "ferrium".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn get_leader(
        &self,
        _req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let leader = self.node.leader();
        Ok(Response::new(LeaderResponse {
            leader_id: leader.as_ref().map(|l| l.id),
            leader_info: leader.and_then(|l| l.node).map(proto_node),
            error: String::new(),
        }))
    }
}
