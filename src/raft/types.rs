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
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Set { key, value } => write!(f, "Set({key}, {} bytes)", value.len()),
            Command::Delete { key } => write!(f, "Delete({key})"),
            Command::BatchSet { pairs } => write!(f, "BatchSet({} pairs)", pairs.len()),
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
}
