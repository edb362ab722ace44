//! What goes into the Raft log and what comes out of applying it.
//!
//! [`TypeConfig`] binds openraft to Ferrium's types: `u64` node ids, [`Node`]
//! with the advertised addresses, [`Command`] as the log payload and
//! [`CommandResult`] as the answer of the state machine. Commands are stored
//! in the log in the binary form of [`crate::raft::codec`] (give a new
//! variant a new tag there); logs written by earlier versions hold them as
//! JSON and the REST API speaks JSON, so their serde shape is a storage
//! format too: add variants and optional fields, never rename.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

pub use super::kv::ApplyError;
pub use super::kv::Txn;
pub use super::kv::TxnResult;

openraft::declare_raft_types!(
    /// openraft's type configuration for Ferrium.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = Node,
);

/// A cluster member as the others see it: where to reach it.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Address of the peer HTTP listener (Raft RPCs, `/raft/...`).
    pub rpc_addr: String,
    /// Address clients use for the REST API.
    pub api_addr: String,
    /// Address of the gRPC API.
    pub grpc_addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc={} api={} grpc={}",
            self.rpc_addr, self.api_addr, self.grpc_addr
        )
    }
}

/// A change to the key space. One command is one log entry and is applied
/// atomically.
///
/// Serialized externally tagged, as in the REST API:
/// `{"Set":{"key":"a","value":"1"}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create or overwrite one key.
    Set { key: String, value: String },
    /// Remove one key; the result says whether it existed.
    Delete { key: String },
    /// Set several keys in one entry: all or nothing.
    BatchSet { pairs: Vec<(String, String)> },
    /// A transaction on byte keys: comparisons, then one branch.
    Txn(Box<Txn>),
    /// Forget history before `revision`: reads of older revisions fail from
    /// this entry on, on every member.
    Compact { revision: u64 },
    /// A command with a client's request id. The first entry with an id is
    /// applied and its result kept; a later one with the same id is not
    /// applied and answers that result. `time_ms` (Unix milliseconds, set by
    /// the proposing leader) dates the id, so that every member expires the
    /// same ids at the same entry.
    Tagged {
        id: Vec<u8>,
        time_ms: u64,
        command: Box<Command>,
    },
    /// A lease operation. `clock_ms` is the lease clock of the proposing
    /// leader (see [`crate::node::lease`]): every member keeps the largest seen,
    /// and a lease ends only by an entry whose clock has passed its expiry.
    Lease { clock_ms: u64, op: LeaseOp },
}

/// What a [`Command::Lease`] does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Create lease `id` (0: the state machine picks one) for `ttl` seconds.
    Grant { id: u64, ttl: u64 },
    /// End lease `id` now, deleting its keys.
    Revoke { id: u64 },
    /// Renew lease `id` to its full TTL from the entry's clock.
    KeepAlive { id: u64 },
    /// Renew each of `ids` (the leader gathers the keep-alives that arrive
    /// together into one entry); the answer lists those renewed.
    KeepAliveMany { ids: Vec<u64> },
    /// End those of `ids` whose expiry the entry's clock has passed (the
    /// leader's expiry check; a lease renewed since is left alone).
    Expire { ids: Vec<u64> },
    /// Record the leader's clock, so that a new leader goes on from it.
    Checkpoint,
}

impl Command {
    /// The lease clock a leader stamps into this command, if it carries one.
    pub fn lease_clock_mut(&mut self) -> Option<&mut u64> {
        match self {
            Command::Lease { clock_ms, .. } => Some(clock_ms),
            Command::Tagged { command, .. } => command.lease_clock_mut(),
            _ => None,
        }
    }
}

/// A lease as an answer gives it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseAnswer {
    pub id: u64,
    /// The TTL granted, in seconds.
    pub ttl: u64,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Set { key, value } => write!(f, "Set({key}, {} bytes)", value.len()),
            Command::Delete { key } => write!(f, "Delete({key})"),
            Command::BatchSet { pairs } => write!(f, "BatchSet({} pairs)", pairs.len()),
            Command::Txn(t) => write!(
                f,
                "Txn({} comparisons, {} operations)",
                t.compare.len(),
                t.op_count()
            ),
            Command::Compact { revision } => write!(f, "Compact({revision})"),
            Command::Tagged { id, command, .. } => {
                write!(f, "{command} with request id of {} bytes", id.len())
            }
            Command::Lease { op, .. } => match op {
                LeaseOp::Grant { id, ttl } => write!(f, "LeaseGrant({id}, {ttl} s)"),
                LeaseOp::Revoke { id } => write!(f, "LeaseRevoke({id})"),
                LeaseOp::KeepAlive { id } => write!(f, "LeaseKeepAlive({id})"),
                LeaseOp::KeepAliveMany { ids } => {
                    write!(f, "LeaseKeepAlive({} leases)", ids.len())
                }
                LeaseOp::Expire { ids } => write!(f, "LeaseExpire({} leases)", ids.len()),
                LeaseOp::Checkpoint => f.write_str("LeaseCheckpoint"),
            },
        }
    }
}

/// The state machine's answer to one applied entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// The log index of the entry: the revision at which the change became
    /// visible (etcd's `mod_revision` of every key it touched).
    pub revision: u64,
    /// For `Delete`: whether the key existed when the entry was applied.
    /// `None` for other commands.
    pub existed: Option<bool>,
    /// Number of keys written or deleted by the entry.
    pub count: u32,
    /// For `Txn`: the branch that ran and each operation's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnResult>,
    /// Why the entry changed nothing (a compacted revision asked for, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApplyError>,
    /// The compaction point after the entry, for `Compact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<u64>,
    /// For `Tagged`: this is the kept result of an earlier entry with the
    /// same request id, which was not applied again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    /// For lease grants, keep-alives and revokes: the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseAnswer>,
    /// For lease expiries: the leases that ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<u64>,
    /// For a keep-alive of several leases: those renewed (the others do
    /// not exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renewed: Vec<LeaseAnswer>,
}
