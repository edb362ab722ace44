//! The gRPC API (README, "gRPC API"): `ferrium.kv.KvService`,
//! `ferrium.management.ManagementService` and the standard
//! `grpc.health.v1.Health`, served by tonic. Like [`super::rest`], the
//! handlers only translate protobuf messages into [`Node`] calls and
//! [`node::Error`] into a [`Status`] ([`status`] is the one place that does
//! it); no request logic lives here.
//!
//! The rooms: [`kv`], [`management`] and [`health`] hold one service each
//! ([`watch`] and [`lease`] the streams and lease calls of `kv`, and the
//! `ferrium.lock` services);
//! [`edge`] is what every call goes through (deadlines, the oversize
//! rewrite, the access check by [`super::op`], metrics); [`listener`] takes
//! connections from both listeners and runs the tonic server.
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

pub mod edge;
pub mod health;
pub mod kv;
pub mod lease;
pub mod listener;
pub mod management;
pub mod watch;

pub use edge::{Deadline, Edge};
pub use health::HealthApi;
pub use kv::KvApi;
pub use lease::LockApi;
pub use listener::{ConnectionPeer, GrpcServer, RunningGrpc};
pub use management::ManagementApi;

use crate::node::{self, ReadConsistency};
use tonic::Status;
use tonic::metadata::MetadataValue;

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
        // etcd's codes for the same conditions.
        node::Error::Apply(a) => match a {
            crate::raft::kv::ApplyError::Compacted { .. }
            | crate::raft::kv::ApplyError::FutureRevision { .. } => Status::out_of_range(message),
            crate::raft::kv::ApplyError::KeyNotFound => Status::invalid_argument(message),
            crate::raft::kv::ApplyError::LeaseNotFound { .. } => Status::not_found(message),
            crate::raft::kv::ApplyError::LeaseExists { .. } => Status::failed_precondition(message),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Node as NodeInfo;

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
