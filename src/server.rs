//! Wires one node together and runs it: storage, Raft, the HTTP listener
//! (REST, admin and peer routes, HTTP/2 handed to gRPC), the gRPC listener,
//! cluster bootstrap, signals and shutdown.
//!
//! Start-up order matters: the store is opened (and recovered) before Raft
//! starts, the listener is bound before the node bootstraps (peers must be
//! able to reach it during the first election), and on SIGTERM/SIGINT the
//! node stops taking requests, lets the ones in flight finish, and stops
//! Raft last so that everything acknowledged is on disk.

use crate::api::{grpc, rest};
use crate::config::{self, CompactionStrategy, Config, LoadedConfig};
use crate::http::{self, Router, Server, ServerConfig};
use crate::node::Node;
use crate::raft::network::PeerNetwork;
use crate::raft::rpc;
use crate::raft::types::Node as NodeInfo;
use crate::store::{self, StoreOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs the node until SIGTERM or SIGINT; returns an operator-facing message
/// on failure.
pub fn run(loaded: LoadedConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferrium")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(serve(loaded.config))
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
        // A follower further behind than this is sent a snapshot.
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
        max_connections: n.max_connections as usize,
        shutdown_timeout: n.shutdown_timeout.as_duration(),
        ..ServerConfig::default()
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    if cfg.security.enable_tls || cfg.security.auth_method != config::AuthMethod::None {
        return Err(
            "security.enable_tls and security.auth_method are not served by this build; \
             remove them from the configuration (or run a build with TLS support)"
                .to_string(),
        );
    }
    let id = cfg.node.id;
    let data_dir = cfg.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| {
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

    let client = http::Client::new(http::ClientConfig {
        connect_timeout: cfg.network.connect_timeout.as_duration(),
        request_timeout: cfg.network.request_timeout.as_duration(),
        ..http::ClientConfig::default()
    });
    let network = PeerNetwork::new(
        id,
        &cfg.cluster.name,
        client.clone(),
        cfg.raft.snapshot_timeout.as_duration(),
    );
    let raft_cfg = Arc::new(raft_config(&cfg)?);
    let raft = openraft::Raft::new(id, raft_cfg, network, log_store, state_machine)
        .await
        .map_err(|e| format!("cannot start Raft: {e}"))?;

    let me = NodeInfo {
        rpc_addr: cfg.node.advertised_http_addr().to_string(),
        api_addr: cfg.node.advertised_http_addr().to_string(),
        grpc_addr: cfg.node.advertised_grpc_addr().to_string(),
    };
    let node = Node::new(&cfg, raft.clone(), reader.clone(), client, me.clone());

    let http_addr = cfg.node.http_addr.to_string();
    let listener = tokio::net::TcpListener::bind(&http_addr).await.map_err(|e| {
        format!("cannot listen on {http_addr} (node.http_addr): {e}; fix: stop whatever uses the port or choose another address")
    })?;
    let router = rest::routes(
        Router::new(),
        node.clone(),
        cfg.network.max_message_size.bytes() as usize,
    );
    let router = rpc::routes(router, node.clone(), reader);
    let grpc_server = grpc::GrpcServer::bind(&cfg, node.clone()).await?;
    let server = Server::from_listener(listener, http_config(&cfg), router)
        .with_h2_handoff(grpc_server.handoff());
    let shutdown = server.shutdown_handle();
    let serving = tokio::spawn(server.run());
    let grpc_serving = grpc_server.spawn();
    log::info!(
        "node {} ({}) serving HTTP on {http_addr} (advertised {}), data in {}",
        id,
        cfg.node.display_name(),
        me.api_addr,
        data_dir.display()
    );
    log::info!("node {id} serving gRPC on {}", cfg.node.grpc_addr);

    bootstrap(&cfg, &node, &me).await;

    wait_for_signal().await;
    log::info!(
        "shutting down: finishing requests in flight (up to {:?})",
        cfg.network.shutdown_timeout.as_duration()
    );
    node.begin_shutdown();
    shutdown.shutdown();
    let grpc_stopping =
        tokio::spawn(grpc_serving.shutdown(cfg.network.shutdown_timeout.as_duration()));
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
    Ok(())
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

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => log::info!("received SIGTERM"),
        _ = int.recv() => log::info!("received SIGINT"),
    }
}
