//! Real `ferrium-server` processes (and `ferriumctl`) through the shared
//! cluster harness: replication and failover, the gRPC API, authentication,
//! TLS, configuration, operations, hostile peer traffic, the systemd start-up
//! contract, the deployment examples and the wire-format replay.

mod auth;
mod backup;
mod cluster;
mod config;
mod console;
mod ctl;
mod deploy_examples;
mod etcd_client;
mod etcd_gateway;
mod etcdctl;
mod grpc;
mod kv2;
mod lease;
mod migrate;
mod ops;
mod peer_hostile;
mod scheduled_backup;
mod systemd_notify;
mod tls;
mod watch;
mod wire_replay;

/// The parts of the shared test support (`tests/support/`) these tests use.
#[path = "../support"]
mod support {
    pub mod cluster;
    mod wait;
}
