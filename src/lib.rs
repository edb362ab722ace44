//! Ferrium: a replicated, strongly consistent key-value server.
//!
//! Module map (request flow from the outside in):
//!
//! - [`api`]: where requests enter: the operations and their roles ([`api::op`]),
//!   the REST and gRPC front ends side by side, etcd's v3 API, the console's
//!   static files ([`api::ui`]), and the generated protobuf types.
//! - [`auth`]: bearer tokens and certificate names with roles for clients, member
//!   certificates and the cluster secret for peers.
//! - [`client`]: the other side: a REST and gRPC client for a cluster, with
//!   endpoint fail-over that never sends a write twice; ferriumctl and
//!   ferrium-bench are built on it.
//! - [`config`]: the TOML schema, its defaults, search paths, `FERRIUM_*` and
//!   command-line overrides, and validation. Everything else receives typed,
//!   already-validated settings.
//! - [`lock`]: locks and elections built on leases, transactions and watches
//!   (etcd's `v3lock` and `v3election`), with fencing by revision.
//! - [`logging`]: `log` + `env_logger` set-up, text or JSON lines.
//! - [`http`]: our own HTTP/1.1 server and pooled client. Knows nothing about
//!   Raft or keys.
//! - [`metrics`]: counters and histograms in the Prometheus text format.
//! - [`node`]: the core every front end calls: writes, reads at a
//!   consistency level, leases and the leader's lease clock
//!   ([`node::lease`]), membership, status and the cluster view
//!   ([`node::members`]), forwarding to the leader.
//! - [`raft`]: the openraft type configuration, the commands that go into the
//!   log, and the peer network over [`http`].
//! - [`rng`]: a small seeded pseudo-random generator for the tests and
//!   `ferrium-bench`; not used by the server, not for secrets.
//! - [`server`]: wires storage, Raft and listeners; signals and shutdown.
//! - [`store`]: openraft's log storage and state machine on one RocksDB
//!   instance, plus snapshot files. Knows nothing about HTTP.
//! - [`systemd`]: `READY=1`/`STOPPING=1` notifications to systemd through
//!   `$NOTIFY_SOCKET` (a no-op outside systemd).
//! - [`watch`]: the watchers of a member: the apply path publishes each
//!   batch's changes to them, a watcher that starts in the past reads
//!   history first; bounded queues, resume revisions.

pub mod api;
pub mod auth;
pub mod backup;
pub mod client;
pub mod config;
pub mod http;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod rng;
pub mod server;
pub mod store;
pub mod systemd;
pub mod watch;
