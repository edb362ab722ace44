//! Wires one node together and runs it: storage, Raft, the HTTP listener
//! (REST, admin and peer routes, HTTP/2 handed to gRPC), the gRPC listener,
//! cluster bootstrap, reload and shutdown. [`start`] returns a
//! [`RunningNode`]; signals are the caller's (`ferrium-server` maps SIGTERM
//! and SIGINT to [`RunningNode::shutdown`], SIGHUP to
//! [`RunningNode::reload`]), so a process may run several nodes.
//!
//! Start-up order matters: the store is opened (and recovered) before Raft
//! starts, the listener is bound before the node bootstraps (peers must be
//! able to reach it during the first election), and on shutdown the node
//! stops taking requests, lets the ones in flight finish, and stops Raft
//! last so that everything acknowledged is on disk.

use crate::api::op::Routes;
use crate::api::{grpc, rest};
use crate::auth::Auth;
use crate::config::{self, CompactionStrategy, Config, LoadedConfig};
use crate::http::{self, Server, ServerConfig};
use crate::metrics;
use crate::node::Node;
use crate::raft::network::{PeerNetwork, rebuild_damaged_snapshots};
use crate::raft::peer::PeerClient;
use crate::raft::rpc;
use crate::raft::types::Node as NodeInfo;
use crate::store::{self, StoreOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// How long a stopping node keeps accepting connections, to refuse them
/// with 503, before it closes its listeners.
const LAME_DUCK: std::time::Duration = std::time::Duration::from_millis(200);

/// Re-reads the configuration the same way it was first read (file,
/// environment, flags) and validates it; used on SIGHUP.
/// Re-reads and validates the configuration (what SIGHUP does).
pub type Reloader = Box<dyn Fn() -> Result<LoadedConfig, Vec<config::ConfigError>> + Send + Sync>;

/// Warns about each file holding a secret (tokens, the cluster secret, the
/// TLS key, a configuration with tokens in it) that other users of this host
/// may read, naming the file and the command that fixes it.
pub fn warn_exposed_files(loaded: &LoadedConfig) {
    use std::os::unix::fs::PermissionsExt;
    let s = &loaded.config.security;
    let mut files: Vec<(&str, &std::path::Path)> = Vec::new();
    for (key, path) in [
        ("security.token_file", &s.token_file),
        ("security.cluster_secret_file", &s.cluster_secret_file),
        ("security.key_file", &s.key_file),
    ] {
        if let Some(p) = path {
            files.push((key, p));
        }
    }
    if let (Some(file), false) = (&loaded.file, s.tokens.is_empty()) {
        files.push(("the configuration file (it holds security.tokens)", file));
    }
    for (what, path) in files {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            log::warn!(
                "{what} {} can be read by every user of this host (mode {mode:03o}); run `chmod 600 {}` (or `chmod 640` with the server's group)",
                path.display(),
                path.display()
            );
        }
    }
}

fn store_options(c: &Config) -> StoreOptions {
    StoreOptions {
        compression: match c.storage.compression {
            config::Compression::None => store::Compression::None,
            config::Compression::Snappy => store::Compression::Snappy,
            config::Compression::Lz4 => store::Compression::Lz4,
            config::Compression::Zstd => store::Compression::Zstd,
        },
        compaction_style: match c.storage.compaction_strategy {
            CompactionStrategy::Level => store::CompactionStyle::Level,
            CompactionStrategy::Universal => store::CompactionStyle::Universal,
        },
        block_cache_bytes: c.storage.block_cache_size.bytes() as usize,
        write_buffer_bytes: c.storage.write_buffer_size.bytes() as usize,
        sync_writes: c.storage.sync_writes,
    }
}

/// openraft's configuration from `[raft]`.
pub fn raft_config(c: &Config) -> Result<openraft::Config, String> {
    let r = &c.raft;
    let rc = openraft::Config {
        cluster_name: c.cluster.name.clone(),
        heartbeat_interval: r.heartbeat_interval.0,
        election_timeout_min: r.election_timeout_min.0,
        election_timeout_max: r.election_timeout_max.0,
        max_payload_entries: r.max_append_entries,
        install_snapshot_timeout: r.snapshot_timeout.0,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_threshold),
        max_in_snapshot_log_to_keep: r.log_retention,
        // openraft uses this only in its blocking `add_learner`, as the lag
        // under which a learner counts as caught up; Ferrium does not use
        // that wait (`Node::add_learner_local` waits for the learner to hold
        // the log up to its own addition). Whether a follower gets a
        // snapshot depends on the purged log, not on this value.
        replication_lag_threshold: r.snapshot_threshold.max(r.log_retention) * 2,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    rc.validate().map_err(|e| {
        format!(
            "the [raft] settings are inconsistent: {e}; check the timeouts in the configuration"
        )
    })
}

fn http_config(c: &Config) -> ServerConfig {
    let n = &c.network;
    ServerConfig {
        max_body: n.max_message_size.bytes(),
        header_timeout: n.header_timeout.as_duration(),
        keep_alive_timeout: n.idle_timeout.as_duration(),
        body_deadline: n.request_timeout.as_duration(),
        max_connections: usize::try_from(n.max_connections).unwrap_or(usize::MAX),
        shutdown_timeout: n.shutdown_timeout.as_duration(),
        ..ServerConfig::default()
    }
}

/// Binds one listener (SO_REUSEADDR is set, as tokio does on Unix, so that
/// a restarted node can bind its port again at once).
async fn bind(addr: &config::Address, key: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr.to_string()).await.map_err(|e| {
        format!("cannot listen on {addr} ({key}): {e}; fix: stop whatever uses the port or choose another address")
    })
}

fn local_addr(listener: &tokio::net::TcpListener, key: &str) -> Result<SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("cannot read the address bound for {key}: {e}"))
}

/// The configuration with the ports the listeners actually bound, which
/// differ from the configured ones only where those were 0. The host stays
/// as written, so a node bound on `localhost:0` advertises `localhost:PORT`.
fn with_bound_ports(cfg: &Config, http: SocketAddr, grpc: SocketAddr) -> Config {
    let mut bound = cfg.clone();
    bound.node.http_addr.port = http.port();
    bound.node.grpc_addr.port = grpc.port();
    bound
}

/// Says who may read and write every key when no client authentication is
/// configured: a warning, naming the addresses, when the node listens beyond
/// loopback.
fn warn_open_access(cfg: &Config, bound: &[SocketAddr], tls: Option<&Tls>) {
    if cfg.security.auth_method != config::AuthMethod::None {
        return;
    }
    let exposed: Vec<String> = bound
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    let who = if tls.is_some_and(|t| t.server.requires_client_cert()) {
        "any client with a certificate from security.ca_file"
    } else {
        "any client that reaches this node"
    };
    if exposed.is_empty() {
        log::info!(
            "security.auth_method = \"none\": {who} on this host may read and write every key"
        );
    } else {
        log::warn!(
            "security.auth_method = \"none\" while listening beyond loopback on {}: {who} may read and write every key; set security.auth_method = \"token\" or \"certificate\" (see CONFIG.md), or bind 127.0.0.1",
            exposed.join(" and ")
        );
    }
}

/// Starts a node from `cfg` (validated): opens the store, starts Raft,
/// binds both listeners (port 0 gets a port from the kernel) and serves
/// until [`RunningNode::shutdown`]. Signals are the caller's business
/// (`ferrium-server` turns SIGTERM into a shutdown and SIGHUP into
/// [`RunningNode::reload`]), so several nodes can run in one process.
pub async fn start(cfg: Config) -> Result<RunningNode, String> {
    let tls = Tls::from_config(&cfg)?;
    // This node's own metrics: several nodes in one process count apart.
    let registry = Arc::new(metrics::Metrics::default());
    let auth = Arc::new(Auth::from_config(
        &cfg.security,
        &cfg.cluster.name,
        registry.clone(),
    )?);
    if auth.signer().is_none() && !cfg.security.enable_mtls {
        log::warn!(
            "no security.cluster_secret_file: peer routes under /raft/ accept any caller; set one on every member"
        );
    }
    let id = cfg.node.id;
    let data_dir = cfg.node.data_dir.clone();
    // Only the server's user may read the data: it is every key and value.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(|e| {
        format!(
            "cannot create data directory {}: {e}; fix: check node.data_dir and its permissions",
            data_dir.display()
        )
    })?;
    let opts = store_options(&cfg);
    if !opts.sync_writes {
        log::warn!(
            "storage.sync_writes = false: acknowledged writes can be lost on power failure or crash; use only for benchmarks and throwaway clusters"
        );
    }
    let (log_store, state_machine) = store::open(&data_dir, &opts)
        .map_err(|e| format!("cannot open the store in {}: {e}", data_dir.display()))?;
    let reader = state_machine.reader();
    let log_handle = log_store.clone();

    let client = http::Client::new(http::ClientConfig {
        connect_timeout: cfg.network.connect_timeout.as_duration(),
        request_timeout: cfg.network.request_timeout.as_duration(),
        tls: tls.as_ref().map(|t| t.client.clone()),
        ..http::ClientConfig::default()
    });
    let peers = PeerClient::new(id, &cfg.cluster.name, auth.signer(), client);
    let network = PeerNetwork::new(peers.clone(), cfg.raft.snapshot_timeout.as_duration());
    let damaged_snapshots = network.damaged_snapshots();
    let raft_cfg = Arc::new(raft_config(&cfg)?);
    let raft = openraft::Raft::new(id, raft_cfg, network, log_store, state_machine)
        .await
        .map_err(|e| format!("cannot start Raft: {e}"))?;
    tokio::spawn(rebuild_damaged_snapshots(raft.clone(), damaged_snapshots));

    // Bound once the store and Raft are up: while the store recovers,
    // connections are refused rather than left waiting in the backlog. With
    // port 0 the kernel picks the port, and the bound address is the one
    // used from now on: advertised (unless node.advertise_*_addr says
    // otherwise) and logged.
    let listener = bind(&cfg.node.http_addr, "node.http_addr").await?;
    let grpc_listener = bind(&cfg.node.grpc_addr, "node.grpc_addr").await?;
    let bound_http = local_addr(&listener, "node.http_addr")?;
    let bound_grpc = local_addr(&grpc_listener, "node.grpc_addr")?;
    let bound = with_bound_ports(&cfg, bound_http, bound_grpc);
    warn_open_access(&cfg, &[bound_http, bound_grpc], tls.as_ref());

    let me = NodeInfo {
        rpc_addr: bound.node.advertised_http_addr().to_string(),
        api_addr: bound.node.advertised_http_addr().to_string(),
        grpc_addr: bound.node.advertised_grpc_addr().to_string(),
    };
    let node = Node::new(
        &bound,
        raft.clone(),
        reader.clone(),
        peers,
        me.clone(),
        registry.clone(),
    );

    reader.watch_hub().set_limits(bound.watch.limits());

    let open_connections = Arc::new(AtomicUsize::new(0));
    let backup = cfg
        .backup
        .settings()
        .map(|s| (s, std::sync::Arc::new(crate::backup::Stats::default())));
    let sources = metrics::Sources {
        metrics: registry.clone(),
        log_store: log_handle,
        open_connections: open_connections.clone(),
        data_dir: data_dir.clone(),
        reader: reader.clone(),
        tls: tls.as_ref().map(|t| t.server.clone()),
        backup: backup.as_ref().map(|(_, stats)| stats.clone()),
    };
    let max_body = usize::try_from(cfg.network.max_message_size.bytes()).unwrap_or(usize::MAX);
    let etcd = crate::api::etcd::EtcdApi::new(node.clone(), data_dir.clone(), tls.is_some());
    let routes = rest::routes(Routes::new(), node.clone(), max_body, sources);
    let routes = crate::api::etcd::gateway::routes(routes, etcd.clone(), max_body);
    let routes = crate::api::ui::routes(routes);
    let (router, ops) = rpc::routes(routes, node.clone(), reader).into_parts();
    let grpc_server = grpc::GrpcServer::new(
        grpc_listener,
        &cfg,
        node.clone(),
        auth.clone(),
        tls.as_ref().map(|t| t.server.clone()),
        etcd,
    );
    let mut server = Server::from_listener(
        listener,
        http_config(&cfg),
        rest::Edge::new(router, ops, auth.clone()),
    )
    .with_connection_counter(open_connections)
    .with_h2_handoff(grpc_server.handoff());
    if let Some(t) = &tls {
        server = server.with_tls(t.server.clone());
    }
    tokio::spawn(metrics::watch_raft(registry, raft.metrics()));
    let retention = cfg.storage.history_retention.as_duration();
    if !retention.is_zero() || cfg.storage.history_max_revisions > 0 {
        let retention = if retention.is_zero() {
            std::time::Duration::from_secs(100 * 365 * 86_400)
        } else {
            retention
        };
        tokio::spawn(
            node.clone()
                .run_retention(retention, cfg.storage.history_max_revisions),
        );
    }
    tokio::spawn(node.clone().run_leases());
    if let Some((settings, stats)) = backup {
        tokio::spawn(crate::backup::run(node.clone(), settings, stats));
    }
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.run());
    let grpc_serving = grpc_server.spawn();
    // The first line is for programs (tests, scripts) that start a node on
    // port 0 and need to know where it listens; its form is documented in
    // CONFIG.md and stays stable.
    log::info!("listening http={bound_http} grpc={bound_grpc}");
    log::info!(
        "node {id} ({}) serving {} and gRPC, advertised as {} (gRPC {}), data in {}",
        cfg.node.display_name(),
        if tls.is_some() { "HTTPS" } else { "HTTP" },
        me.api_addr,
        me.grpc_addr,
        data_dir.display()
    );
    crate::systemd::notify("READY=1");
    bootstrap(&cfg, &node, &me).await;
    Ok(RunningNode {
        node,
        http_addr: bound_http,
        grpc_addr: bound_grpc,
        cfg,
        tls,
        auth,
        raft,
        shutdown,
        serving,
        grpc_serving,
    })
}

/// A started node: its handle, where it listens, and how to stop it.
pub struct RunningNode {
    /// The core the front ends call.
    pub node: Node,
    /// Where the HTTP listener is bound (the port the kernel gave for 0).
    pub http_addr: SocketAddr,
    /// Where the gRPC listener is bound.
    pub grpc_addr: SocketAddr,
    cfg: Config,
    tls: Option<Tls>,
    auth: Arc<Auth>,
    raft: crate::node::FerriumRaft,
    shutdown: http::ShutdownHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    grpc_serving: grpc::RunningGrpc,
}

impl RunningNode {
    /// Applies a re-read configuration: what can change live (the log
    /// level), the certificates and the tokens; names what needs a restart.
    pub fn reload(&mut self, new: Config) {
        apply_reload(&self.cfg, &new);
        self.node.watch_hub().set_limits(new.watch.limits());
        if let Some(tls) = &self.tls {
            tls.reload(&new);
        }
        reload_tokens(&self.auth, &new);
        self.cfg = new;
    }

    /// Stops the node: refuses new requests, hands leadership over, lets
    /// the requests in flight finish for up to `grace`, closes the
    /// listeners and stops Raft last, so that everything acknowledged is
    /// on disk.
    pub async fn shutdown(self, grace: std::time::Duration) {
        let RunningNode {
            node,
            cfg,
            raft,
            shutdown,
            serving,
            grpc_serving,
            ..
        } = self;
        let id = cfg.node.id;
        crate::systemd::notify("STOPPING=1");
        log::info!("shutting down: finishing requests in flight (up to {grace:?})");
        node.begin_shutdown();
        let refusing_since = std::time::Instant::now();
        // A stopping leader hands over first, while its listener still answers
        // its peers, so that the cluster does not wait out an election timeout.
        let hand_over = cfg
            .raft
            .election_timeout_max
            .as_duration()
            .saturating_mul(2)
            .min(grace);
        node.hand_over_leadership(hand_over).await;
        // Keep accepting for a moment, answering 503 "shutting down": clients
        // that are connecting right now get that definite refusal and move to
        // another member, instead of a reset from a closed listener's backlog
        // that they could not tell from a failure after their request ran.
        let lame_duck = LAME_DUCK.min(grace);
        tokio::time::sleep(lame_duck.saturating_sub(refusing_since.elapsed())).await;
        shutdown.shutdown();
        let grpc_stopping = tokio::spawn(grpc_serving.shutdown(grace));
        match serving.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("HTTP listener stopped with an error: {e}"),
            Err(e) => log::warn!("HTTP listener task failed: {e}"),
        }
        let _ = grpc_stopping.await;
        if let Err(e) = raft.shutdown().await {
            log::warn!("Raft did not stop cleanly: {e}");
        }
        log::info!("node {id} stopped");
    }
}

/// The node's TLS: the listeners' configuration and the peer client's.
struct Tls {
    server: Arc<http::ServerTls>,
    client: Arc<http::ClientTls>,
}

impl Tls {
    fn from_config(cfg: &Config) -> Result<Option<Tls>, String> {
        let Some(files) = config::tls_files(&cfg.security) else {
            return Ok(None);
        };
        let ca = files.ca.clone().ok_or(
            "security.enable_tls needs security.ca_file: nodes verify each other's certificates against it",
        )?;
        let server = http::ServerTls::new(files.clone())
            .map_err(|e| format!("{e}; fix the files named in [security]"))?;
        let client = http::ClientTls::new(&ca, Some((&files.cert, &files.key)))
            .map_err(|e| format!("{e}; fix the files named in [security]"))?;
        log::info!(
            "TLS on: certificate {}, CA {}{}",
            files.cert.display(),
            ca.display(),
            if files.require_client_cert {
                "; client certificates required (mTLS)"
            } else {
                ""
            }
        );
        Ok(Some(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        }))
    }

    /// Re-reads the certificate, key and CA files (rotated on disk, or
    /// renamed in the configuration). Connections already open keep their
    /// session; new ones use the new files. On error the running
    /// certificates stay.
    fn reload(&self, cfg: &Config) {
        let Some(files) = config::tls_files(&cfg.security) else {
            log::warn!("security.enable_tls was turned off; that takes effect after a restart");
            return;
        };
        if files.require_client_cert != self.server_requires_client_cert() {
            log::warn!("security.enable_mtls changed; that takes effect after a restart");
        }
        let Some(ca) = files.ca.clone() else {
            log::error!(
                "TLS reload failed: security.ca_file is not set; keeping the running certificates"
            );
            return;
        };
        let result = self
            .server
            .reload(Some(files.clone()))
            .and_then(|()| self.client.reload(&ca, Some((&files.cert, &files.key))));
        match result {
            Ok(()) => log::info!(
                "TLS certificates reloaded from {}; new connections use them",
                files.cert.display()
            ),
            Err(e) => log::error!(
                "TLS reload failed: {e}; keeping the running certificates; fix the files and send SIGHUP again"
            ),
        }
    }

    fn server_requires_client_cert(&self) -> bool {
        self.server.requires_client_cert()
    }
}

/// Static bootstrap: a node listed in `cluster.initial_members` whose store
/// holds no cluster yet initialises one with exactly those members. Every
/// member does the same with the same list; openraft elects one leader.
async fn bootstrap(cfg: &Config, node: &Node, me: &NodeInfo) {
    let members = &cfg.cluster.initial_members;
    if members.is_empty() {
        log::info!(
            "no cluster.initial_members: waiting for POST /init or to be added to a cluster"
        );
        return;
    }
    match node.raft().is_initialized().await {
        Ok(true) => {
            log::info!("store already holds a cluster; initial_members is not used again");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            log::error!("cannot read the Raft state: {e}");
            return;
        }
    }
    let map: BTreeMap<u64, NodeInfo> = members
        .iter()
        .map(|m| {
            let info = if m.id == cfg.node.id {
                me.clone()
            } else {
                NodeInfo {
                    rpc_addr: m.http_addr.to_string(),
                    api_addr: m.http_addr.to_string(),
                    grpc_addr: m
                        .grpc_addr
                        .as_ref()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                }
            };
            (m.id, info)
        })
        .collect();
    let ids: Vec<u64> = map.keys().copied().collect();
    match node.initialize(Some(map)).await {
        Ok(()) => log::info!("initialised a new cluster with members {ids:?}"),
        Err(e) => log::warn!("cluster bootstrap did not initialise: {e}"),
    }
}

/// Re-reads the bearer tokens (`security.tokens` and the token file, which
/// may have changed on disk); on error the running tokens stay.
fn reload_tokens(auth: &Auth, cfg: &Config) {
    match auth.reload_tokens(&cfg.security) {
        Ok(None) => {}
        Ok(Some(n)) => log::info!("bearer tokens re-read: {n} accepted"),
        Err(e) => log::error!(
            "bearer token reload failed: {e}; keeping the running tokens; fix the file and send SIGHUP again"
        ),
    }
}

/// Applies what can change live (the log level; certificates and tokens are
/// re-read on every reload) and names what needs a restart.
fn apply_reload(old: &Config, new: &Config) {
    let changed = changed_keys(old, new);
    if changed.is_empty() {
        log::info!("configuration unchanged");
        return;
    }
    let mut restart = Vec::new();
    for key in &changed {
        match key.as_str() {
            // Re-read on every SIGHUP (see Tls::reload).
            "security.cert_file" | "security.key_file" | "security.ca_file" => {}
            // Re-read on every SIGHUP (see reload_tokens).
            "security.tokens" | "security.token_file" => {}
            // Applied by RunningNode::reload, to what is queued from now on.
            "watch.queue_events" | "watch.queue_bytes" | "watch.max_watchers" => {
                log::warn!("applied {key}");
            }
            "logging.level" => {
                crate::logging::set_level(new.logging.level.to_filter());
                log::warn!(
                    "applied logging.level: {} -> {}",
                    old.logging.level,
                    new.logging.level
                );
            }
            _ => restart.push(key.clone()),
        }
    }
    if !restart.is_empty() {
        log::warn!(
            "changed settings that take effect only after a restart: {}",
            restart.join(", ")
        );
    }
}

/// Key paths (`section.key`) whose values differ.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let flat = |c: &Config| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(c) {
            for (section, v) in sections {
                if let toml::Value::Table(keys) = v {
                    for (k, v) in keys {
                        out.insert(format!("{section}.{k}"), v.to_string());
                    }
                }
            }
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
