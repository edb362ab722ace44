//! The gRPC API (API.md): `ferrium.kv.KvService`,
//! `ferrium.management.ManagementService` and the standard
//! `grpc.health.v1.Health`, served by tonic. Like [`super::rest`], the
//! handlers only translate protobuf messages into [`Node`] calls and
//! [`node::Error`] into a [`Status`] ([`status`] is the one place that does
//! it); no request logic lives here.
//!
//! One tonic server takes connections from two places: the dedicated gRPC
//! listener (`node.grpc_addr`), and the HTTP listener, which hands over every
//! connection that opens with the HTTP/2 preface (so one port can serve both
//! protocols). Both arrive on one channel as [`PrefixedIo`] streams.
//!
//! Limits: each connection holds a place under `network.max_connections` of
//! the listener it came through until it closes; a connection to the gRPC
//! port must finish its TLS handshake and send the HTTP/2 preface within
//! `network.header_timeout`; at most `network.max_concurrent_streams` calls
//! run on one connection (the client is told in SETTINGS, and streams beyond
//! it are refused); every connection is pinged every
//! `network.http2_keepalive_interval` and closed when a ping goes unanswered
//! for `network.http2_keepalive_timeout`.
//!
//! Deadlines: the client's `grpc-timeout` is enforced by [`Edge`], which
//! answers `DEADLINE_EXCEEDED` just before it passes (tonic's own timeout
//! layer would answer `CANCELLED`, and the client's timer would win). For a
//! write, `DEADLINE_EXCEEDED` means what gRPC says it means: the change may
//! or may not have been applied. The same code reports a write whose outcome
//! is unknown for any other reason, with `x-ferrium-outcome: unknown`.

use crate::api::op;
use crate::api::proto::health::health_check_response::ServingStatus;
use crate::api::proto::health::health_server::{Health, HealthServer};
use crate::api::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::api::proto::kv::kv_service_server::{KvService, KvServiceServer};
use crate::api::proto::kv::{
    BatchSetRequest, BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest,
    ExistsResponse, GetRequest, GetResponse, ListKeysRequest, ListKeysResponse, SetRequest,
    SetResponse,
};
use crate::api::proto::management::management_service_server::{
    ManagementService, ManagementServiceServer,
};
use crate::api::proto::management::{
    self as mgmt, AddLearnerRequest, AddLearnerResponse, ChangeMembershipRequest,
    ChangeMembershipResponse, HealthRequest, HealthResponse, InitializeRequest, InitializeResponse,
    LeaderRequest, LeaderResponse, MembershipConfig, MetricsRequest, MetricsResponse,
    ReplicationStatus,
};
use crate::auth::Auth;
use crate::config::Config;
use crate::http::server::{H2_PREFACE, PrefixedIo};
use crate::http::{BoxIo, H2Connection, PeerCert, ServerTls};
use crate::node::{self, Node, ReadConsistency};
use crate::raft::types::{Command, Node as NodeInfo};
use futures_util::Stream;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataValue;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status};

/// How long a health check may spend confirming that a quorum answers.
/// Below the 1 s default timeout of `grpc_health_probe` and Kubernetes.
const HEALTH_PROBE: Duration = Duration::from_millis(800);

/// How often `Health/Watch` re-evaluates the serving status.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Connections waiting for the gRPC server to pick them up.
const PENDING_CONNECTIONS: usize = 256;

/// The metadata key that names the leader when this node will not forward.
pub const LEADER_METADATA: &str = "x-ferrium-leader";

/// The metadata key set on a write whose outcome is unknown.
pub const OUTCOME_METADATA: &str = "x-ferrium-outcome";

/// The gRPC status for a node error. The one translation of [`node::Error`]
/// into gRPC codes.
pub fn status(e: &node::Error) -> Status {
    let message = e.to_string();
    match e {
        node::Error::Invalid(_) => Status::invalid_argument(message),
        node::Error::TooLarge(_) => Status::resource_exhausted(message),
        node::Error::NotLeader(leader) => {
            let mut s = Status::unavailable(message);
            if let Some(l) = leader {
                // "2@10.0.0.2:9001": the leader's id and gRPC address.
                let value = match &l.node {
                    Some(n) if !n.grpc_addr.is_empty() => format!("{}@{}", l.id, n.grpc_addr),
                    _ => l.id.to_string(),
                };
                if let Ok(v) = MetadataValue::try_from(value) {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
            }
            s
        }
        node::Error::Unavailable(_) => Status::unavailable(message),
        node::Error::OutcomeUnknown(_) => {
            let mut s = Status::deadline_exceeded(message);
            s.metadata_mut()
                .insert(OUTCOME_METADATA, MetadataValue::from_static("unknown"));
            s
        }
        node::Error::Conflict(_) => Status::already_exists(message),
        node::Error::Precondition(_) => Status::failed_precondition(message),
        node::Error::Internal(_) => Status::internal(message),
    }
}

/// The status for a failed read. A read changes nothing, so a lost answer
/// from the leader (an "unknown outcome" to the node) is just unavailability.
fn read_status(e: &node::Error) -> Status {
    match e {
        node::Error::OutcomeUnknown(m) => Status::unavailable(m.clone()),
        other => status(other),
    }
}

fn consistency(c: &str) -> Result<ReadConsistency, Status> {
    ReadConsistency::parse(c).ok_or_else(|| {
        Status::invalid_argument(format!(
            "consistency {c:?} is not one of \"linearizable\", \"lease\", \"stale\""
        ))
    })
}

/// `ferrium.kv.KvService` on a [`Node`].
#[derive(Clone)]
pub struct KvApi {
    node: Node,
}

#[tonic::async_trait]
impl KvService for KvApi {
    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let SetRequest { key, value } = req.into_inner();
        let result = self
            .node
            .write(Command::Set { key, value })
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(SetResponse {
            success: true,
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let value = self
            .node
            .read(&r.key, c)
            .await
            .map_err(|e| read_status(&e))?;
        let resp = match value {
            Some(v) => GetResponse {
                key: r.key,
                value: v.value,
                found: true,
                error: String::new(),
                create_revision: v.create_revision,
                mod_revision: v.mod_revision,
                version: v.version,
            },
            None => GetResponse {
                key: r.key,
                ..GetResponse::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let key = req.into_inner().key;
        let result = self
            .node
            .write(Command::Delete { key })
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(DeleteResponse {
            success: true,
            existed: result.existed.unwrap_or(false),
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn batch_set(
        &self,
        req: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let pairs = req
            .into_inner()
            .pairs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let result = self
            .node
            .write(Command::BatchSet { pairs })
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(BatchSetResponse {
            success: true,
            count: result.count,
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let start_after = Some(r.start_after.as_str()).filter(|s| !s.is_empty());
        let (items, has_more) = self
            .node
            .list(&r.prefix, start_after, r.limit as usize, c)
            .await
            .map_err(|e| read_status(&e))?;
        let next_start_after = match (has_more, items.last()) {
            (true, Some((k, _))) => k.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListKeysResponse {
            keys: items.into_iter().map(|(k, _)| k).collect(),
            has_more,
            error: String::new(),
            next_start_after,
        }))
    }

    async fn exists(
        &self,
        req: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let value = self
            .node
            .read(&r.key, c)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(ExistsResponse {
            exists: value.is_some(),
            error: String::new(),
        }))
    }
}

/// `ferrium.management.ManagementService` on a [`Node`].
#[derive(Clone)]
pub struct ManagementApi {
    node: Node,
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

/// The services `grpc.health.v1.Health` knows by name; "" is the server.
const HEALTH_SERVICES: &[&str] = &[
    "",
    "ferrium.kv.KvService",
    "ferrium.management.ManagementService",
];

/// `grpc.health.v1.Health`: SERVING when this node is healthy, knows a
/// leader, has applied what it knows to be committed, and a linearizable
/// read confirms within [`HEALTH_PROBE`] that a quorum answers. A node cut off
/// from its quorum, or shutting down, is NOT_SERVING. Every service reports
/// the node's status: they all stand or fall with it.
#[derive(Clone)]
pub struct HealthApi {
    node: Node,
}

/// The client's deadline, put into request extensions by [`Edge`].
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

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

/// What every call goes through before and after its service:
///
/// - The client's `grpc-timeout` is enforced: the call is answered
///   `DEADLINE_EXCEEDED` a little before the deadline ([`deadline_margin`]),
///   so that the answer reaches the client before its own timer fires (a
///   client that gives up by itself reports a bare `CANCELLED` or a local
///   `DEADLINE_EXCEEDED` without the server's message). The deadline is left
///   in the request extensions ([`Deadline`]).
/// - Access is checked against the tokens and roles of [`Auth`], and every
///   call is counted by method and status code in the metrics.
/// - A message over `network.max_message_size` is answered
///   `RESOURCE_EXHAUSTED`, as the gRPC status code table says; tonic's codec
///   reports it as `OUT_OF_RANGE`, a code no Ferrium handler uses.

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    auth: Arc<Auth>,
}

/// How long before the client's deadline the server answers: a tenth of
/// the timeout, at most 50 ms.
fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(50))
}

impl<S, B> Service<http::Request<B>> for Edge<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let cert = req
            .extensions()
            .get::<ConnectionPeer>()
            .and_then(|p| p.0.as_deref());
        let (op, label) = op::grpc_op(req.uri().path());
        if let Err(status) = self
            .auth
            .check_grpc(op, req.uri().path(), authorization, cert)
        {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // Taken before tonic's own timer starts, so that ours fires first.
        let deadline = grpc_timeout(req.headers())
            .map(|t| Instant::now() + t.saturating_sub(deadline_margin(t)));
        if let Some(d) = deadline {
            req.extensions_mut().insert(Deadline(d));
        }
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match deadline {
                None => fut.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, fut).await {
                    Ok(r) => r,
                    Err(_) => Ok(Status::deadline_exceeded(
                        "the deadline passed before the request completed; a write may or may not have been applied",
                    )
                    .into_http()),
                },
            };
            let resp = resp.map(oversize_is_resource_exhausted);
            if let Ok(r) = &resp {
                // Errors carry their status in the headers; a success puts it
                // in the trailers, after this point.
                let code = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32);
                crate::metrics::METRICS.grpc_request(
                    label,
                    &format!("{code:?}"),
                    started.elapsed(),
                );
            }
            resp
        })
    }
}

/// Rewrites tonic's `OUT_OF_RANGE` for an oversize message (an error answer
/// carries its status in the headers) into `RESOURCE_EXHAUSTED`.
fn oversize_is_resource_exhausted(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let out_of_range = (Code::OutOfRange as i32).to_string();
    if resp.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(out_of_range.as_bytes()) {
        let code = (Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = http::HeaderValue::from_str(&code) {
            resp.headers_mut().insert("grpc-status", v);
        }
    }
    resp
}

/// Parses `grpc-timeout` ("100m", "5S", ...: at most 8 digits and a unit).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Opens TLS connections for a tonic client: TCP to `addr`, then our rustls
/// client (offering `h2`: see [`crate::http::ClientTls::new_h2`]), which
/// verifies the server's certificate for `host`. Used with
/// `Endpoint::connect_with_connector` by ferriumctl and the tests.
#[derive(Clone)]
pub struct TlsConnector {
    pub tls: Arc<crate::http::ClientTls>,
    pub host: String,
    pub addr: String,
}

impl TlsConnector {
    /// A connector to `addr` (`host:port`, the host also naming the
    /// certificate to expect).
    pub fn new(tls: Arc<crate::http::ClientTls>, addr: &str) -> TlsConnector {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        TlsConnector {
            tls,
            host,
            addr: addr.to_string(),
        }
    }
}

type TlsIo = hyper_util::rt::TokioIo<BoxIo>;

impl Service<http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = BoxFuture<TlsIo, std::io::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.addr).await?;
            let _ = tcp.set_nodelay(true);
            let io = this.tls.connect(&this.host, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(io))
        })
    }
}

/// The verified client certificate of a gRPC connection, which tonic puts
/// in every request's extensions (certificate authentication reads it).
#[derive(Clone)]
pub struct ConnectionPeer(pub Option<Arc<PeerCert>>);

impl Connected for PrefixedIo<BoxIo> {
    type ConnectInfo = ConnectionPeer;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionPeer(self.peer())
    }
}

/// The bounds of the gRPC server, from `[network]`.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_connections: usize,
    handshake_timeout: Duration,
    max_concurrent_streams: u32,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
}

impl Limits {
    fn from_config(cfg: &Config) -> Limits {
        let n = &cfg.network;
        Limits {
            max_connections: usize::try_from(n.max_connections).unwrap_or(usize::MAX),
            handshake_timeout: n.header_timeout.as_duration(),
            max_concurrent_streams: n.max_concurrent_streams,
            keepalive_interval: n.http2_keepalive_interval.as_duration(),
            keepalive_timeout: n.http2_keepalive_timeout.as_duration(),
        }
    }
}

/// The gRPC server of one node: bound, not yet serving.
pub struct GrpcServer {
    auth: Arc<Auth>,
    tls: Option<Arc<ServerTls>>,
    limits: Limits,
    listener: TcpListener,
    routes: Routes,
    sender: mpsc::Sender<PrefixedIo<BoxIo>>,
    receiver: mpsc::Receiver<PrefixedIo<BoxIo>>,
}

/// A running gRPC server; [`RunningGrpc::shutdown`] stops it.
pub struct RunningGrpc {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// The gRPC server on `listener` (bound to `node.grpc_addr`), with the
    /// message size limit of `network.max_message_size`. With `tls`, the
    /// listener serves only TLS with ALPN `h2`.
    pub fn new(
        listener: TcpListener,
        cfg: &Config,
        node: Node,
        auth: Arc<Auth>,
        tls: Option<Arc<ServerTls>>,
    ) -> GrpcServer {
        let max = usize::try_from(cfg.network.max_message_size.bytes()).unwrap_or(usize::MAX);
        let routes = Routes::new(
            KvServiceServer::new(KvApi { node: node.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ManagementServiceServer::new(ManagementApi { node: node.clone() })
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(HealthServer::new(HealthApi { node }));
        let (sender, receiver) = mpsc::channel(PENDING_CONNECTIONS);
        GrpcServer {
            auth,
            tls,
            limits: Limits::from_config(cfg),
            listener,
            routes,
            sender,
            receiver,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What the HTTP listener calls with a connection that opened with the
    /// HTTP/2 preface: it joins the gRPC connections.
    pub fn handoff(&self) -> impl Fn(H2Connection) + Send + Sync + 'static {
        let sender = self.sender.clone();
        move |conn: H2Connection| {
            let remote = conn.remote_addr;
            if sender.try_send(conn.into_io()).is_err() {
                log::warn!("grpc: too many connections waiting; closing the one from {remote}");
            }
        }
    }

    /// Starts accepting and serving.
    pub fn spawn(self) -> RunningGrpc {
        let (stop, stopped) = watch::channel(false);
        let GrpcServer {
            auth,
            tls,
            limits,
            listener,
            routes,
            sender,
            receiver,
        } = self;
        tokio::spawn(accept(listener, tls, limits, sender, stopped.clone()));
        let incoming = futures_util::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|io| (Ok::<_, std::io::Error>(io), rx))
        });
        let mut stopped = stopped;
        let signal = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let svc = Edge {
            auth,
            inner: routes.prepare(),
        };
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(limits.max_concurrent_streams)
                .http2_keepalive_interval(Some(limits.keepalive_interval))
                .http2_keepalive_timeout(Some(limits.keepalive_timeout))
                .serve_with_incoming_shutdown(svc, incoming, signal)
                .await;
            if let Err(e) = served {
                log::warn!("grpc: the server stopped with an error: {e}");
            }
        });
        RunningGrpc { stop, task }
    }
}

/// Accepts connections on the gRPC listener until told to stop; closing the
/// listener refuses new ones. A connection over `network.max_connections`
/// is closed at once.
async fn accept(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: Limits,
    sender: mpsc::Sender<PrefixedIo<BoxIo>>,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, remote_addr)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    log::debug!(
                        "grpc: closing the connection from {remote_addr}: network.max_connections reached"
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Handshakes run beside the accept loop: a slow or silent
                // client cannot hold up the others.
                let sender = sender.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let started = handshake(stream, remote_addr, tls, limits.handshake_timeout);
                    if let Some(mut conn) = started.await {
                        conn.permit = Some(permit);
                        let _ = sender.send(conn.into_io()).await;
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("grpc: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Takes a new connection as far as its HTTP/2 preface (after the TLS
/// handshake, with TLS), all within `limit`: the HTTP/2 implementation would
/// wait for a silent client forever. `None` when the client failed, spoke
/// something else or was too slow.
async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    limit: Duration,
) -> Option<H2Connection> {
    let started = async {
        let (mut io, peer): (BoxIo, _) = match tls {
            None => (Box::new(stream), None),
            Some(tls) => {
                let accepted = tls
                    .accept(stream, true, true)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                (Box::new(accepted.stream), accepted.peer)
            }
        };
        let mut preface = vec![0u8; H2_PREFACE.len()];
        io.read_exact(&mut preface)
            .await
            .map_err(|e| format!("no HTTP/2 connection preface: {e}"))?;
        if preface != H2_PREFACE {
            return Err("not HTTP/2: the connection did not open with its preface".to_string());
        }
        Ok((io, preface, peer))
    };
    match tokio::time::timeout(limit, started).await {
        Ok(Ok((stream, preface, peer))) => Some(H2Connection {
            stream,
            preface,
            remote_addr: remote,
            peer,
            permit: None,
        }),
        Ok(Err(e)) => {
            log::debug!("grpc: closing the connection from {remote}: {e}");
            None
        }
        Err(_) => {
            log::debug!(
                "grpc: closing the connection from {remote}: no TLS handshake and HTTP/2 preface within network.header_timeout"
            );
            None
        }
    }
}

impl RunningGrpc {
    /// Stops taking connections, lets calls in flight finish (up to
    /// `grace`), then drops whatever is left.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            log::warn!("grpc: calls still running after {grace:?}; closing them");
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", "123456789m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    #[test]
    fn answers_before_the_client_gives_up() {
        assert_eq!(
            deadline_margin(Duration::from_millis(300)),
            Duration::from_millis(30)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn oversize_messages_are_resource_exhausted() {
        let resp = Status::out_of_range("too large").into_http();
        let resp = oversize_is_resource_exhausted(resp);
        assert_eq!(resp.headers()["grpc-status"], "8");
        let resp = oversize_is_resource_exhausted(Status::not_found("x").into_http());
        assert_eq!(resp.headers()["grpc-status"], "5");
    }

    #[test]
    fn node_errors_map_to_codes() {
        use tonic::Code;
        let leader = node::LeaderInfo {
            id: 2,
            node: Some(NodeInfo {
                rpc_addr: "h:8002".into(),
                api_addr: "h:8002".into(),
                grpc_addr: "h:9002".into(),
            }),
        };
        let s = status(&node::Error::NotLeader(Some(leader)));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata().get(LEADER_METADATA).unwrap().to_str().unwrap(),
            "2@h:9002"
        );
        let cases = [
            (node::Error::Invalid("x".into()), Code::InvalidArgument),
            (node::Error::TooLarge("x".into()), Code::ResourceExhausted),
            (node::Error::Unavailable("x".into()), Code::Unavailable),
            (
                node::Error::OutcomeUnknown("x".into()),
                Code::DeadlineExceeded,
            ),
            (node::Error::Conflict("x".into()), Code::AlreadyExists),
            (
                node::Error::Precondition("x".into()),
                Code::FailedPrecondition,
            ),
            (node::Error::Internal("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(status(&e).code(), code, "{e:?}");
        }
        let lost = node::Error::OutcomeUnknown("x".into());
        assert_eq!(read_status(&lost).code(), Code::Unavailable);
    }
}
