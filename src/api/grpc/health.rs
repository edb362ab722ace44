//! `grpc.health.v1.Health`: the standard health checking protocol.

use super::Deadline;
use crate::api::proto::health::health_check_response::ServingStatus;
use crate::api::proto::health::health_server::Health;
use crate::api::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::node::{self, Node, ReadConsistency};
use futures_util::Stream;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// How long a health check may spend confirming that a quorum answers.
/// Below the 1 s default timeout of `grpc_health_probe` and Kubernetes.
const HEALTH_PROBE: Duration = Duration::from_millis(800);

/// How often `Health/Watch` re-evaluates the serving status.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The services `grpc.health.v1.Health` knows by name; "" is the server.
const HEALTH_SERVICES: &[&str] = &[
    "",
    "ferrium.kv.KvService",
    "ferrium.lock.LockService",
    "ferrium.lock.ElectionService",
    "ferrium.management.ManagementService",
];

/// `grpc.health.v1.Health`: SERVING when this node is healthy, knows a
/// leader, has applied what it knows to be committed, and a linearizable
/// read confirms within [`HEALTH_PROBE`] that a quorum answers. A node cut off
/// from its quorum, or shutting down, is NOT_SERVING. Every service reports
/// the node's status: they all stand or fall with it.
#[derive(Clone)]
pub struct HealthApi {
    pub(super) node: Node,
}

impl HealthApi {
    async fn serving(&self, budget: Duration) -> ServingStatus {
        if !self.node.is_healthy() || self.node.readiness().is_err() {
            return ServingStatus::NotServing;
        }
        let probe = self.node.list("", None, 1, ReadConsistency::Linearizable);
        match tokio::time::timeout(budget, probe).await {
            Ok(Ok(_)) => ServingStatus::Serving,
            // Forwarding is off: the leader is known, which is all a
            // follower can check without asking it.
            Ok(Err(node::Error::NotLeader(Some(_)))) => ServingStatus::Serving,
            Ok(Err(_)) | Err(_) => ServingStatus::NotServing,
        }
    }
}

fn known_service(name: &str) -> Result<(), Status> {
    if HEALTH_SERVICES.contains(&name) {
        Ok(())
    } else {
        Err(Status::not_found(format!("unknown service {name:?}")))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // Answer NOT_SERVING before the client gives up, not after.
        let budget = match req.extensions().get::<Deadline>() {
            Some(Deadline(d)) => {
                HEALTH_PROBE.min(d.saturating_duration_since(Instant::now()) * 4 / 5)
            }
            None => HEALTH_PROBE,
        };
        known_service(&req.get_ref().service)?;
        let status = self.serving(budget).await;
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    /// Sends the status at once and then on every change. Ends after
    /// reporting NOT_SERVING for shutdown, so that it never holds up a
    /// graceful shutdown.
    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        if known_service(&req.get_ref().service).is_err() {
            let once = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown as i32,
            };
            let stream = futures_util::stream::iter([Ok(once)]);
            return Ok(Response::new(Box::pin(stream)));
        }
        let api = self.clone();
        let stream = futures_util::stream::unfold(
            (api, None::<ServingStatus>, false),
            |(api, last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if last.is_some() {
                        tokio::time::sleep(WATCH_INTERVAL).await;
                    }
                    let now = api.serving(HEALTH_PROBE).await;
                    let ending = api.node.is_shutting_down();
                    if Some(now) != last || ending {
                        let item = Ok(HealthCheckResponse { status: now as i32 });
                        return Some((item, (api, Some(now), ending)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
