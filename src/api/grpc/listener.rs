//! The gRPC listener and the tonic server behind both listeners.

use super::{Edge, HealthApi, KvApi, LockApi, ManagementApi};
use crate::api::proto::health::health_server::HealthServer;
use crate::api::proto::kv::kv_service_server::KvServiceServer;
use crate::api::proto::management::management_service_server::ManagementServiceServer;
use crate::auth::Auth;
use crate::config::Config;
use crate::http::server::{H2_PREFACE, PrefixedIo};
use crate::http::{BoxIo, H2Connection, PeerCert, ServerTls};
use crate::node::Node;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::service::Routes;
use tonic::transport::server::Connected;

/// Connections waiting for the gRPC server to pick them up.
const PENDING_CONNECTIONS: usize = 256;

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
        etcd: crate::api::etcd::EtcdApi,
    ) -> GrpcServer {
        use crate::api::proto::etcd::{etcdserverpb as epb, v3electionpb, v3lockpb};
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
        .add_service(
            crate::api::proto::lock::lock_service_server::LockServiceServer::new(LockApi {
                node: node.clone(),
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        )
        .add_service(
            crate::api::proto::lock::election_service_server::ElectionServiceServer::new(LockApi {
                node: node.clone(),
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        )
        .add_service(HealthServer::new(HealthApi { node }));
        // etcd's services, for etcd's own clients.
        macro_rules! etcd {
            ($routes:expr, $server:path) => {
                $routes.add_service(
                    <$server>::new(etcd.clone())
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max),
                )
            };
        }
        let routes = etcd!(routes, epb::kv_server::KvServer<crate::api::etcd::EtcdApi>);
        let routes = etcd!(
            routes,
            epb::watch_server::WatchServer<crate::api::etcd::EtcdApi>
        );
        let routes = etcd!(
            routes,
            epb::lease_server::LeaseServer<crate::api::etcd::EtcdApi>
        );
        let routes = etcd!(
            routes,
            epb::cluster_server::ClusterServer<crate::api::etcd::EtcdApi>
        );
        let routes = etcd!(
            routes,
            epb::maintenance_server::MaintenanceServer<crate::api::etcd::EtcdApi>
        );
        let routes = etcd!(
            routes,
            v3lockpb::lock_server::LockServer<crate::api::etcd::EtcdApi>
        );
        let routes = etcd!(
            routes,
            v3electionpb::election_server::ElectionServer<crate::api::etcd::EtcdApi>
        );
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
