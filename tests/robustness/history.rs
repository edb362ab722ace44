//! A recorded history: one entry per operation a client invoked, with the
//! real time of its invocation and of its completion.
//!
//! Times are nanoseconds since the start of the run, taken from one
//! monotonic clock shared by all client threads, so `a.ret < b.call` means
//! `a` finished before `b` started. An operation whose outcome is unknown
//! (timeout, dropped connection, `outcome_unknown`) has no completion time:
//! it may take effect at any point after its invocation, or never.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// What an operation did to one register key (a compare-and-swap is a
/// `Write` with [`Op::expect`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Set the key to `value` (`None`: delete it).
    Write,
    /// Observed `value` (`None`: the key was absent).
    Read,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Definitely not applied (e.g. 503 `unavailable`, connection refused).
    Fail,
    /// May or may not have been applied.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    /// The node the client sent the request to.
    #[serde(default)]
    pub node: u64,
    pub key: String,
    pub kind: Kind,
    pub value: Option<String>,
    pub call: u64,
    /// Completion time; `None` while pending or when the outcome is unknown.
    pub ret: Option<u64>,
    pub outcome: Outcome,
    /// For a compare-and-swap write: the value the key must hold for the
    /// write to take effect (`Some(None)`: the key must be absent). A CAS
    /// whose comparison failed is recorded as the read it is: the server
    /// answers the current value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Option<String>>,
}

/// A whole history, as saved next to a failing run's logs and as stored in
/// `tests/golden/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub description: String,
    /// The verdict a golden history must get (`true`: linearizable).
    #[serde(default)]
    pub expect_linearizable: Option<bool>,
    pub ops: Vec<Op>,
}

impl History {
    pub fn load(path: &Path) -> History {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }

    pub fn save(&self, path: &Path) {
        let text = serde_json::to_string_pretty(self).expect("a history serialises");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
