//! One list of what a caller can ask of a node, whichever front end it
//! comes through, and who may ask it.
//!
//! Every REST route and every gRPC method is registered with its [`Op`]
//! ([`Routes::route`] for HTTP, [`grpc_op`] for gRPC); access control asks
//! the operation what it needs ([`Op::required`]) and
//! [`crate::auth::Auth::allows`] decides. No path or method name is matched
//! anywhere else to decide who may call what.

use crate::config::Role;
use crate::http::{Handler, Method, Router};
use std::collections::HashMap;
use std::sync::Arc;

/// An operation a caller can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set, delete or batch (REST `/write`, gRPC `Set`, `Delete`, `BatchSet`).
    Write,
    /// Read one key (REST `/read`, gRPC `Get`, `Exists`).
    Read,
    /// List keys (REST `/list`, gRPC `ListKeys`).
    List,
    /// A range at any retained revision (REST `/range`, gRPC `Range`).
    Range,
    /// A transaction (REST `/txn`, gRPC `Txn`).
    Txn,
    /// Forget old history (REST `/compact`, gRPC `Compact`).
    Compact,
    /// Follow changes (REST `/watch`, gRPC `Watch`).
    Watch,
    /// Grant, keep alive or revoke a lease (REST `/lease/grant`,
    /// `/lease/keepalive`, `/lease/revoke`; gRPC `LeaseGrant`,
    /// `LeaseKeepAlive`, `LeaseRevoke`).
    Lease,
    /// Read leases (REST `/lease/timetolive`, `/lease/leases`; gRPC
    /// `LeaseTimeToLive`, `LeaseLeases`).
    LeaseRead,
    /// Locks and elections (REST `/lock`, `/unlock`, `/election/...`; gRPC
    /// `ferrium.lock`): they write keys.
    Lock,
    /// List the members (etcd's `MemberList`).
    Members,
    /// A member's status or the hash of its keys (etcd's `Status`,
    /// `HashKV`).
    Status,
    /// etcd's maintenance calls that only an administrator makes: alarms,
    /// `Defragment`, `Snapshot` (every key; REST `GET /snapshot` too),
    /// `MoveLeader`, `Hash`.
    Maintenance,
    /// Liveness (REST `/health`, gRPC `HealthCheck` and `grpc.health.v1`).
    Health,
    /// Readiness (REST `/ready`).
    Ready,
    /// The metrics (REST `/metrics`, gRPC `GetMetrics`).
    Metrics,
    /// Whether this node leads (REST `/is-leader`).
    IsLeader,
    /// Who leads (REST `/leader`, gRPC `GetLeader`).
    Leader,
    /// Start a new cluster (REST `/init`, gRPC `Initialize`).
    Init,
    /// Add a learner (REST `/add-learner`, gRPC `AddLearner`).
    AddLearner,
    /// Change the voters (REST `/change-membership`, gRPC `ChangeMembership`).
    ChangeMembership,
    /// The console's page, script and styles (`/ui`): static files with no
    /// data in them; everything they show comes from calls that need a role.
    Console,
    /// A peer-to-peer call: Raft RPCs, forwarded writes and reads, snapshots
    /// (the routes under `/raft/`).
    Peer,
    /// Nothing registered answers this path or method (the front end then
    /// answers 404, 405 or `UNIMPLEMENTED`).
    Unrouted,
}

/// What a caller must prove for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// A client with at least this role.
    Role(Role),
    /// Nothing when `security.open_health` is on, else a client with this role.
    Health(Role),
    /// A cluster member (mTLS member certificate or cluster-secret signature),
    /// when peers are authenticated at all.
    Peer,
    /// Nothing: a static file anyone may load.
    Nothing,
}

impl Op {
    /// What a caller must prove. `reads` says whether the request is a
    /// read-only one by its method (HTTP `GET` or `HEAD`; every gRPC call
    /// of a registered method): operations that have no role of their own
    /// need `read` then and `admin` otherwise, so an unknown method on a
    /// known path is refused as the most privileged call would be.
    pub fn required(self, reads: bool) -> Required {
        let by_method = if reads { Role::Read } else { Role::Admin };
        match self {
            Op::Write | Op::Txn | Op::Lease | Op::Lock => Required::Role(Role::Write),
            Op::Read
            | Op::List
            | Op::Range
            | Op::Watch
            | Op::LeaseRead
            | Op::Members
            | Op::Status => Required::Role(Role::Read),
            Op::Init | Op::AddLearner | Op::ChangeMembership | Op::Compact | Op::Maintenance => {
                Required::Role(Role::Admin)
            }
            Op::Health | Op::Ready => Required::Health(by_method),
            Op::Metrics | Op::IsLeader | Op::Leader | Op::Unrouted => Required::Role(by_method),
            Op::Peer => Required::Peer,
            Op::Console => Required::Nothing,
        }
    }
}

/// The operations of the HTTP listener's routes, by path.
#[derive(Debug, Default, Clone)]
pub struct RestOps {
    by_path: HashMap<String, Op>,
    /// Unregistered paths under a prefix (`/raft/`) keep the prefix's
    /// operation, so an unknown peer path is still refused to non-members.
    by_prefix: Vec<(String, Op)>,
}

impl RestOps {
    /// The operation of a request for `path`.
    pub fn of(&self, path: &str) -> Op {
        if let Some(op) = self.by_path.get(path) {
            return *op;
        }
        self.by_prefix
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or(Op::Unrouted, |(_, op)| *op)
    }
}

/// A [`Router`] being built together with the operation of each route.
#[derive(Default)]
pub struct Routes {
    router: Router,
    ops: RestOps,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Routes `method path` to `handler` as operation `op`.
    pub fn route(self, method: Method, path: &str, op: Op, handler: impl Handler) -> Routes {
        self.add(path, op, |r| r.route(method, path, handler))
    }

    /// Like [`Routes::route`], with its own request-body limit.
    pub fn route_with_body_limit(
        self,
        method: Method,
        path: &str,
        op: Op,
        max_body: u64,
        handler: impl Handler,
    ) -> Routes {
        self.add(path, op, |r| {
            r.route_with_body_limit(method, path, max_body, handler)
        })
    }

    /// Every unregistered path under `prefix` is operation `op`.
    pub fn prefix(mut self, prefix: &str, op: Op) -> Routes {
        self.ops.by_prefix.push((prefix.to_string(), op));
        self
    }

    fn add(mut self, path: &str, op: Op, register: impl FnOnce(Router) -> Router) -> Routes {
        if let Some(before) = self.ops.by_path.insert(path.to_string(), op) {
            assert_eq!(before, op, "{path} is registered as two operations");
        }
        self.router = register(self.router);
        self
    }

    /// The router and the operations of its routes.
    pub fn into_parts(self) -> (Arc<Router>, RestOps) {
        (Arc::new(self.router), self.ops)
    }
}

/// The gRPC methods served, by full path, with their operation and the
/// label their metrics carry.
const GRPC_METHODS: &[(&str, Op, &str)] = &[
    ("/ferrium.kv.KvService/Set", Op::Write, "Set"),
    ("/ferrium.kv.KvService/Get", Op::Read, "Get"),
    ("/ferrium.kv.KvService/Delete", Op::Write, "Delete"),
    ("/ferrium.kv.KvService/BatchSet", Op::Write, "BatchSet"),
    ("/ferrium.kv.KvService/ListKeys", Op::List, "ListKeys"),
    ("/ferrium.kv.KvService/Exists", Op::Read, "Exists"),
    ("/ferrium.kv.KvService/Range", Op::Range, "Range"),
    ("/ferrium.kv.KvService/Txn", Op::Txn, "Txn"),
    ("/ferrium.kv.KvService/Compact", Op::Compact, "Compact"),
    ("/ferrium.kv.KvService/Watch", Op::Watch, "Watch"),
    ("/ferrium.kv.KvService/LeaseGrant", Op::Lease, "LeaseGrant"),
    (
        "/ferrium.kv.KvService/LeaseRevoke",
        Op::Lease,
        "LeaseRevoke",
    ),
    (
        "/ferrium.kv.KvService/LeaseKeepAlive",
        Op::Lease,
        "LeaseKeepAlive",
    ),
    (
        "/ferrium.kv.KvService/LeaseTimeToLive",
        Op::LeaseRead,
        "LeaseTimeToLive",
    ),
    (
        "/ferrium.kv.KvService/LeaseLeases",
        Op::LeaseRead,
        "LeaseLeases",
    ),
    ("/ferrium.lock.LockService/Lock", Op::Lock, "Lock"),
    ("/ferrium.lock.LockService/Unlock", Op::Lock, "Unlock"),
    (
        "/ferrium.lock.ElectionService/Campaign",
        Op::Lock,
        "Campaign",
    ),
    (
        "/ferrium.lock.ElectionService/Proclaim",
        Op::Lock,
        "Proclaim",
    ),
    (
        "/ferrium.lock.ElectionService/Leader",
        Op::LeaseRead,
        "Leader",
    ),
    (
        "/ferrium.lock.ElectionService/Observe",
        Op::LeaseRead,
        "Observe",
    ),
    ("/ferrium.lock.ElectionService/Resign", Op::Lock, "Resign"),
    (
        "/ferrium.management.ManagementService/Initialize",
        Op::Init,
        "Initialize",
    ),
    (
        "/ferrium.management.ManagementService/AddLearner",
        Op::AddLearner,
        "AddLearner",
    ),
    (
        "/ferrium.management.ManagementService/ChangeMembership",
        Op::ChangeMembership,
        "ChangeMembership",
    ),
    (
        "/ferrium.management.ManagementService/GetMetrics",
        Op::Metrics,
        "GetMetrics",
    ),
    (
        "/ferrium.management.ManagementService/HealthCheck",
        Op::Health,
        "HealthCheck",
    ),
    (
        "/ferrium.management.ManagementService/GetLeader",
        Op::Leader,
        "GetLeader",
    ),
    ("/grpc.health.v1.Health/Check", Op::Health, "Check"),
    ("/grpc.health.v1.Health/Watch", Op::Health, "Watch"),
];

/// etcd's v3 methods: the gRPC path, the JSON gateway's path (`None`
/// where etcd's gateway has none), the operation, and the metrics label.
pub const ETCD_METHODS: &[(&str, Option<&str>, Op, &str)] = &[
    (
        "/etcdserverpb.KV/Range",
        Some("/v3/kv/range"),
        Op::Range,
        "etcd.Range",
    ),
    (
        "/etcdserverpb.KV/Put",
        Some("/v3/kv/put"),
        Op::Write,
        "etcd.Put",
    ),
    (
        "/etcdserverpb.KV/DeleteRange",
        Some("/v3/kv/deleterange"),
        Op::Write,
        "etcd.DeleteRange",
    ),
    (
        "/etcdserverpb.KV/Txn",
        Some("/v3/kv/txn"),
        Op::Txn,
        "etcd.Txn",
    ),
    (
        "/etcdserverpb.KV/Compact",
        Some("/v3/kv/compaction"),
        Op::Compact,
        "etcd.Compact",
    ),
    (
        "/etcdserverpb.Watch/Watch",
        Some("/v3/watch"),
        Op::Watch,
        "etcd.Watch",
    ),
    (
        "/etcdserverpb.Lease/LeaseGrant",
        Some("/v3/lease/grant"),
        Op::Lease,
        "etcd.LeaseGrant",
    ),
    (
        "/etcdserverpb.Lease/LeaseRevoke",
        Some("/v3/lease/revoke"),
        Op::Lease,
        "etcd.LeaseRevoke",
    ),
    (
        "/etcdserverpb.Lease/LeaseKeepAlive",
        Some("/v3/lease/keepalive"),
        Op::Lease,
        "etcd.LeaseKeepAlive",
    ),
    (
        "/etcdserverpb.Lease/LeaseTimeToLive",
        Some("/v3/lease/timetolive"),
        Op::LeaseRead,
        "etcd.LeaseTimeToLive",
    ),
    (
        "/etcdserverpb.Lease/LeaseLeases",
        Some("/v3/lease/leases"),
        Op::LeaseRead,
        "etcd.LeaseLeases",
    ),
    (
        "/etcdserverpb.Cluster/MemberAdd",
        Some("/v3/cluster/member/add"),
        Op::AddLearner,
        "etcd.MemberAdd",
    ),
    (
        "/etcdserverpb.Cluster/MemberRemove",
        Some("/v3/cluster/member/remove"),
        Op::ChangeMembership,
        "etcd.MemberRemove",
    ),
    (
        "/etcdserverpb.Cluster/MemberUpdate",
        Some("/v3/cluster/member/update"),
        Op::ChangeMembership,
        "etcd.MemberUpdate",
    ),
    (
        "/etcdserverpb.Cluster/MemberList",
        Some("/v3/cluster/member/list"),
        Op::Members,
        "etcd.MemberList",
    ),
    (
        "/etcdserverpb.Cluster/MemberPromote",
        Some("/v3/cluster/member/promote"),
        Op::ChangeMembership,
        "etcd.MemberPromote",
    ),
    (
        "/etcdserverpb.Maintenance/Alarm",
        Some("/v3/maintenance/alarm"),
        Op::Maintenance,
        "etcd.Alarm",
    ),
    (
        "/etcdserverpb.Maintenance/Status",
        Some("/v3/maintenance/status"),
        Op::Status,
        "etcd.Status",
    ),
    (
        "/etcdserverpb.Maintenance/Defragment",
        Some("/v3/maintenance/defragment"),
        Op::Maintenance,
        "etcd.Defragment",
    ),
    (
        "/etcdserverpb.Maintenance/Hash",
        Some("/v3/maintenance/hash"),
        Op::Maintenance,
        "etcd.Hash",
    ),
    (
        "/etcdserverpb.Maintenance/HashKV",
        Some("/v3/maintenance/hashkv"),
        Op::Status,
        "etcd.HashKV",
    ),
    (
        "/etcdserverpb.Maintenance/Snapshot",
        Some("/v3/maintenance/snapshot"),
        Op::Maintenance,
        "etcd.Snapshot",
    ),
    (
        "/etcdserverpb.Maintenance/MoveLeader",
        Some("/v3/maintenance/transfer-leadership"),
        Op::Maintenance,
        "etcd.MoveLeader",
    ),
    (
        "/v3lockpb.Lock/Lock",
        Some("/v3/lock/lock"),
        Op::Lock,
        "etcd.Lock",
    ),
    (
        "/v3lockpb.Lock/Unlock",
        Some("/v3/lock/unlock"),
        Op::Lock,
        "etcd.Unlock",
    ),
    (
        "/v3electionpb.Election/Campaign",
        Some("/v3/election/campaign"),
        Op::Lock,
        "etcd.Campaign",
    ),
    (
        "/v3electionpb.Election/Proclaim",
        Some("/v3/election/proclaim"),
        Op::Lock,
        "etcd.Proclaim",
    ),
    (
        "/v3electionpb.Election/Leader",
        Some("/v3/election/leader"),
        Op::LeaseRead,
        "etcd.Leader",
    ),
    (
        "/v3electionpb.Election/Observe",
        Some("/v3/election/observe"),
        Op::LeaseRead,
        "etcd.Observe",
    ),
    (
        "/v3electionpb.Election/Resign",
        Some("/v3/election/resign"),
        Op::Lock,
        "etcd.Resign",
    ),
];

/// The operation of a gRPC call by its path (`/package.Service/Method`) and
/// the label of its metrics (`other` for an unknown method, so that clients
/// cannot grow the number of series).
pub fn grpc_op(path: &str) -> (Op, &'static str) {
    GRPC_METHODS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, op, label)| (*op, *label))
        .or_else(|| {
            ETCD_METHODS
                .iter()
                .find(|(p, _, _, _)| *p == path)
                .map(|(_, _, op, label)| (*op, *label))
        })
        .unwrap_or((Op::Unrouted, "other"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_needs_what_the_documented_roles_say() {
        assert_eq!(Op::Write.required(false), Required::Role(Role::Write));
        assert_eq!(Op::Read.required(false), Required::Role(Role::Read));
        assert_eq!(Op::Init.required(false), Required::Role(Role::Admin));
        assert_eq!(Op::Leader.required(true), Required::Role(Role::Read));
        assert_eq!(Op::Unrouted.required(false), Required::Role(Role::Admin));
        assert_eq!(Op::Health.required(true), Required::Health(Role::Read));
        assert_eq!(Op::Peer.required(true), Required::Peer);
    }

    #[test]
    fn grpc_paths_name_their_service() {
        assert_eq!(grpc_op("/ferrium.kv.KvService/Set"), (Op::Write, "Set"));
        assert_eq!(
            grpc_op("/grpc.health.v1.Health/Check"),
            (Op::Health, "Check")
        );
        assert_eq!(grpc_op("/other.Service/Set"), (Op::Unrouted, "other"));
    }

    #[test]
    fn unregistered_paths_under_a_prefix_keep_its_operation() {
        let (_, ops) = Routes::new()
            .route(Method::Post, "/write", Op::Write, |_req| async {
                crate::http::Response::json(200, &serde_json::json!({}))
            })
            .prefix("/raft/", Op::Peer)
            .into_parts();
        assert_eq!(ops.of("/write"), Op::Write);
        assert_eq!(ops.of("/raft/nothing"), Op::Peer);
        assert_eq!(ops.of("/nothing"), Op::Unrouted);
    }
}
