//! etcd's v3 API (README, "etcd compatibility"): the `etcdserverpb`
//! services `KV`, `Watch`, `Lease`, `Cluster` and `Maintenance`, and the
//! `v3lockpb` and `v3electionpb` services, on the gRPC port; and etcd's JSON
//! gateway (`/v3/...`) on the HTTP port ([`gateway`]).
//!
//! Like the Ferrium front ends, these are translations: each call becomes the
//! same [`Node`] call the Ferrium API makes (a `Put` is a one-operation
//! transaction, a `Watch` stream runs through the same watch code as
//! `ferrium.kv.KvService/Watch`, a keep-alive stream through the same
//! renewals). What differs is what an etcd client can tell: etcd's messages
//! and field numbers, signed 64-bit revisions, watch ids from 0, and etcd's
//! error texts, which Go clientv3 turns into typed errors by exact match
//! ([`status`] is the one place that writes them).
//!
//! The rooms: [`kv`] (KV), [`watch`] (Watch), [`lease`] (Lease, Lock,
//! Election), [`cluster`] (Cluster, Maintenance) and [`gateway`] (the same
//! calls as JSON over HTTP/1.1).

pub mod cluster;
pub mod gateway;
pub mod kv;
pub mod lease;
pub mod watch;

use crate::api::proto::etcd::etcdserverpb as epb;
use crate::api::proto::etcd::mvccpb;
use crate::node::{self, Node};
use crate::raft::kv::{ApplyError, KeyValue};
use tonic::Status;
use tonic::metadata::MetadataValue;

/// etcd's API, on a [`Node`]. One value serves every etcd service.
#[derive(Clone)]
pub struct EtcdApi {
    pub(crate) node: Node,
    /// The data directory, whose size `Status` reports as the database's.
    data_dir: std::path::PathBuf,
    /// Whether clients reach this member over TLS (the scheme of the URLs
    /// `MemberList` gives).
    tls: bool,
}

impl EtcdApi {
    pub fn new(node: Node, data_dir: std::path::PathBuf, tls: bool) -> EtcdApi {
        EtcdApi {
            node,
            data_dir,
            tls,
        }
    }
}

/// The texts of etcd's errors that clients match (etcd's `rpctypes`).
pub mod errors {
    pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
    pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
    pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
    pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
    pub const NO_LEADER: &str = "etcdserver: no leader";
    pub const TIMEOUT: &str = "etcdserver: request timed out";
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
    pub const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
    pub const LEARNER_NOT_READY: &str =
        "etcdserver: can only promote a learner member which is in sync with leader";
    pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
}

/// The gRPC status an etcd client expects for a node error: etcd's code and,
/// where etcd has a text for the condition, that text exactly (clients match
/// it); otherwise Ferrium's own message, which says what to do.
pub fn status(e: &node::Error) -> Status {
    use node::Error as E;
    match e {
        E::Apply(a) => {
            let message = a.etcd_message();
            match a {
                ApplyError::Compacted { .. } | ApplyError::FutureRevision { .. } => {
                    Status::out_of_range(message)
                }
                ApplyError::KeyNotFound => Status::invalid_argument(message),
                ApplyError::LeaseNotFound { .. } => Status::not_found(message),
                ApplyError::LeaseExists { .. } => Status::failed_precondition(message),
            }
        }
        E::NotLeader(None) => Status::unavailable(errors::NO_LEADER),
        // A write that may or may not have been applied: etcd's text for
        // it, and Ferrium's marker that the outcome is unknown.
        E::OutcomeUnknown(_) => {
            let mut s = Status::unavailable(errors::TIMEOUT);
            s.metadata_mut().insert(
                crate::api::grpc::OUTCOME_METADATA,
                MetadataValue::from_static("unknown"),
            );
            s
        }
        E::Precondition(m) => {
            // The election texts clients compare with.
            for exact in [crate::lock::NOT_LEADER, crate::lock::NO_LEADER] {
                if m.starts_with(exact) {
                    return Status::failed_precondition(exact);
                }
            }
            Status::failed_precondition(m.clone())
        }
        other => crate::api::grpc::status(other),
    }
}

/// The status of a failed read: a lost answer is just unavailability.
pub fn read_status(e: &node::Error) -> Status {
    match e {
        node::Error::OutcomeUnknown(_) => Status::unavailable(errors::TIMEOUT),
        other => status(other),
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A non-negative etcd integer as Ferrium's unsigned one.
fn unsigned(v: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(v).map_err(|_| Status::invalid_argument(format!("{what} {v} is negative")))
}

/// etcd's answer header.
pub fn header(h: node::Header) -> Option<epb::ResponseHeader> {
    Some(epb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: signed(h.revision),
        raft_term: h.raft_term,
    })
}

/// The header at this member's applied revision.
fn current(node: &Node) -> Option<epb::ResponseHeader> {
    header(node.header(node.applied_revision()))
}

/// A key-value as etcd's `mvccpb.KeyValue`.
pub fn kv_out(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: signed(kv.create_revision),
        mod_revision: signed(kv.mod_revision),
        version: signed(kv.version),
        value: kv.value,
        lease: signed(kv.lease),
    }
}
