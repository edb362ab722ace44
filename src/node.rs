//! The node core: the one service both front ends (REST and gRPC) call.
//!
//! `Node` owns the Raft handle, the state-machine reader and the peer client.
//! It decides where a request is served: writes go through the leader's log
//! (forwarded one hop from a follower), linearizable reads confirm the
//! leader's authority with a quorum (ReadIndex) and wait until the local
//! state machine has applied up to that point, lease reads trust the leader's
//! lease, stale reads read locally. Handlers translate wire formats into
//! these calls and [`Error`] into statuses; no request logic lives in them.
//!
//! A write whose fate is unknown (the leader changed after appending it, or
//! no answer came in time) is reported as [`Error::OutcomeUnknown`], never as
//! success or as a plain failure: the client must not assume either.
//! Outcomes are classified by what is known: a write refused before it was
//! proposed (invalid, too large, no leader, refused by the leader's peer
//! route before it ran) failed definitely; anything that happened after the
//! proposal (a storage failure that stops Raft, a lost or garbled answer, a
//! 5xx from the leader) may have committed, because openraft may already
//! have sent the entry to followers and a new leader can commit it.

pub mod lease;
pub mod members;

use crate::config::{Config, Millis};
use crate::http;
use crate::metrics::Metrics;
use crate::raft::kv::{ApplyError, RangeRequest, RangeResult, Txn, TxnOp, TxnResult};
use crate::raft::peer::{self, PeerClient, Route};
use crate::raft::types::{Command, CommandResult, Node as NodeInfo, TypeConfig};
use crate::store::{StateMachine, StateReader, StoredValue};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::raft::linearizable_read::LinearizerOption;
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Longest wait a client may ask of `/add-learner`.
pub const MAX_LEARNER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Longest a backup (`GET /snapshot`, etcd's `Maintenance.Snapshot`, a
/// scheduled backup) waits for this member to build a snapshot of
/// everything applied, when `network.request_timeout` is shorter.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);

/// Keys returned by a listing when the client asks for no particular number.
pub const DEFAULT_PAGE: usize = 1000;
/// Most keys one listing returns.
pub const MAX_PAGE: usize = 10_000;

/// The Raft handle type used throughout the server.
pub type FerriumRaft = Raft<TypeConfig, StateMachine>;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Confirmed with a quorum (ReadIndex), on any member.
    #[default]
    Linearizable,
    /// Served under the leader's lease; falls back to ReadIndex when stale.
    Lease,
    /// From the local state machine, without any network round trip.
    Stale,
}

impl ReadConsistency {
    pub fn parse(s: &str) -> Option<ReadConsistency> {
        match s {
            "" | "linearizable" => Some(ReadConsistency::Linearizable),
            "lease" => Some(ReadConsistency::Lease),
            "stale" => Some(ReadConsistency::Stale),
            _ => None,
        }
    }
}

/// The leader as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub id: u64,
    pub node: Option<NodeInfo>,
}

/// Why a node call failed. Converted once into an HTTP status or gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// Malformed input: empty key, bad consistency, ... (400).
    Invalid(String),
    /// A key, value or batch over its limit (413).
    TooLarge(String),
    /// This node is not the leader and forwarding is off (503 with the leader).
    NotLeader(Option<LeaderInfo>),
    /// No leader, no quorum, shutting down (503).
    Unavailable(String),
    /// The write may or may not have been applied (503 `outcome_unknown`).
    OutcomeUnknown(String),
    /// Already initialised, conflicting membership change (409).
    Conflict(String),
    /// A precondition does not hold, e.g. an unknown node in a membership change (400/412).
    Precondition(String),
    /// Storage or Raft failed on this node (500).
    Internal(String),
    /// Decided when the entry was applied: a compacted or future revision,
    /// a missing key or lease.
    Apply(ApplyError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::OutcomeUnknown(m)
            | Error::Conflict(m)
            | Error::Precondition(m)
            | Error::Internal(m) => f.write_str(m),
            Error::Apply(e) => e.fmt(f),
            Error::NotLeader(Some(l)) => match &l.node {
                Some(n) => write!(
                    f,
                    "this node is not the leader; send the request to node {} at {}",
                    l.id, n.api_addr
                ),
                None => write!(
                    f,
                    "this node is not the leader; the leader is node {}",
                    l.id
                ),
            },
            Error::NotLeader(None) => {
                f.write_str("this node is not the leader and no leader is known; retry shortly")
            }
        }
    }
}

impl Error {
    /// The machine-readable code used by REST error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid_request",
            Error::TooLarge(_) => "payload_too_large",
            Error::NotLeader(_) | Error::Unavailable(_) => "unavailable",
            Error::OutcomeUnknown(_) => "outcome_unknown",
            Error::Conflict(_) => "conflict",
            Error::Precondition(_) => "failed_precondition",
            Error::Internal(_) => "internal",
            Error::Apply(e) => e.code(),
        }
    }
}

/// The body of the peer route `/raft/add-learner`: `[id, node]`, as every
/// version sends it, or `[id, node, timeout_ms]` when the client gave a
/// timeout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddLearnerRpc {
    WithTimeout(u64, NodeInfo, u64),
    Plain(u64, NodeInfo),
}

impl AddLearnerRpc {
    pub fn new(id: u64, node: NodeInfo, timeout: Option<Duration>) -> AddLearnerRpc {
        match timeout {
            Some(t) => AddLearnerRpc::WithTimeout(
                id,
                node,
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            ),
            None => AddLearnerRpc::Plain(id, node),
        }
    }

    /// The learner's id, its addresses and the wait the client asked for.
    pub fn parts(self) -> (u64, NodeInfo, Option<Duration>) {
        match self {
            AddLearnerRpc::WithTimeout(id, node, ms) => (
                id,
                node,
                Some(Duration::from_millis(ms).min(MAX_LEARNER_WAIT)),
            ),
            AddLearnerRpc::Plain(id, node) => (id, node, None),
        }
    }
}

/// Limits applied to client input before it reaches Raft.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_key: usize,
    pub max_value: usize,
    pub max_batch_bytes: usize,
}

struct Inner {
    id: u64,
    cluster: String,
    raft: FerriumRaft,
    reader: StateReader,
    peers: PeerClient,
    me: NodeInfo,
    /// This node's counters and histograms.
    metrics: Arc<Metrics>,
    forward: bool,
    request_timeout: Duration,
    limits: Limits,
    shutting_down: AtomicBool,
    storage_failed: AtomicBool,
    /// Writes proposed on this node and not answered yet.
    writes_in_flight: AtomicUsize,
    /// A leader that has not heard from a quorum for this long is not
    /// ready; nor is a follower that has not heard from a leader.
    quorum_timeout: Duration,
    /// When this node last accepted entries or a heartbeat from a leader.
    last_leader_contact: std::sync::Mutex<Option<std::time::Instant>>,
    /// How often quiet watches hear from this node.
    watch: crate::watch::Settings,
    /// How leases are run.
    lease: lease::Settings,
    /// The lease clock while this node leads (see [`lease`]).
    lease_clock: tokio::sync::Mutex<Option<lease::LeaderClock>>,
    /// Keep-alives waiting for the leader's next keep-alive entry.
    keep_alives: std::sync::OnceLock<lease::KeepAliveQueue>,
}

/// Counts one write in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The node core. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// Raft status of this node, as `/metrics` and `GetMetrics` report it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node_id: u64,
    pub cluster: String,
    pub state: String,
    pub current_term: u64,
    pub current_leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub committed: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub membership: MembershipStatus,
    /// On the leader: per follower, the last index it has and its lag.
    pub replication: BTreeMap<u64, Replication>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MembershipStatus {
    pub log_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub nodes: BTreeMap<u64, NodeInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Replication {
    pub matched: Option<u64>,
    pub matched_term: Option<u64>,
    pub lag: u64,
}

impl Node {
    pub fn new(
        config: &Config,
        raft: FerriumRaft,
        reader: StateReader,
        peers: PeerClient,
        me: NodeInfo,
        metrics: Arc<Metrics>,
    ) -> Node {
        let max_message = config.network.max_message_size.bytes() as usize;
        Node {
            inner: Arc::new(Inner {
                id: config.node.id,
                cluster: config.cluster.name.clone(),
                raft,
                reader,
                peers,
                me,
                metrics,
                forward: config.network.forward_to_leader,
                request_timeout: config.network.request_timeout.as_duration(),
                limits: Limits {
                    max_key: config.network.max_key_size.bytes() as usize,
                    max_value: config.network.max_value_size.bytes() as usize,
                    max_batch_bytes: max_message,
                },
                shutting_down: AtomicBool::new(false),
                storage_failed: AtomicBool::new(false),
                writes_in_flight: AtomicUsize::new(0),
                // Two leases: a leader (or follower) is cut off, not merely
                // delayed by a busy moment, when that long passes.
                quorum_timeout: config.raft.election_timeout_max.as_duration() * 2,
                last_leader_contact: std::sync::Mutex::new(None),
                watch: crate::watch::Settings {
                    progress_interval: config.watch.progress_interval.as_duration(),
                    keepalive_interval: config.watch.keepalive_interval.as_duration(),
                },
                lease: config.lease.settings(),
                lease_clock: tokio::sync::Mutex::new(None),
                keep_alives: std::sync::OnceLock::new(),
            }),
        }
    }

    /// A watcher of `filter` from `start_revision` (0: from the next
    /// change), served from this member's own applied state.
    pub fn watch(
        &self,
        filter: crate::watch::Filter,
        start_revision: u64,
    ) -> Result<crate::watch::Watcher, Error> {
        if self.is_shutting_down() {
            return Err(Error::Unavailable(
                "the node is shutting down; watch on another member".into(),
            ));
        }
        if filter.key.is_empty() && filter.range_end.is_empty() {
            return Err(Error::Invalid(
                "a watch needs a key (with a range end, a prefix or from_key for a range)".into(),
            ));
        }
        let compact_revision = self.compact_revision();
        if start_revision != 0 && start_revision < compact_revision {
            return Err(Error::Apply(ApplyError::Compacted { compact_revision }));
        }
        let hub = self.inner.reader.watch_hub();
        let history: Arc<dyn crate::watch::History> = Arc::new(self.inner.reader.clone());
        crate::watch::Watcher::create(&hub, history, filter, start_revision)
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// This member's watchers (for the front ends' counters).
    pub fn watch_hub(&self) -> Arc<crate::watch::Hub> {
        self.inner.reader.watch_hub()
    }

    /// How often quiet watches hear from this node.
    pub fn watch_settings(&self) -> crate::watch::Settings {
        self.inner.watch
    }

    /// The compaction point: reads and watches below it are refused.
    pub fn compact_revision(&self) -> u64 {
        self.inner.reader.compact_revision()
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Records that a leader's append (or heartbeat) was just accepted.
    pub fn note_leader_contact(&self) {
        if let Ok(mut t) = self.inner.last_leader_contact.lock() {
            *t = Some(std::time::Instant::now());
        }
    }

    /// The latest Raft metrics of this node.
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// This node's counters and histograms (`/metrics`).
    pub fn registry(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    pub fn raft(&self) -> &FerriumRaft {
        &self.inner.raft
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Marks the node as shutting down: health turns unhealthy, new requests
    /// are refused with 503.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        // Watches end now, each with the revision to go on from elsewhere.
        self.inner.reader.watch_hub().close();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// False once storage has failed or the node is shutting down.
    pub fn is_healthy(&self) -> bool {
        !self.is_shutting_down()
            && !self.inner.storage_failed.load(Ordering::SeqCst)
            && self
                .inner
                .raft
                .metrics()
                .borrow_watched()
                .running_state
                .is_ok()
    }

    fn check_serving(&self) -> Result<(), Error> {
        if self.is_shutting_down() {
            return Err(Error::Unavailable(
                "the node is shutting down; use another member".into(),
            ));
        }
        let stopped = self
            .inner
            .raft
            .metrics()
            .borrow_watched()
            .running_state
            .clone()
            .err();
        if stopped.is_some() || self.inner.storage_failed.load(Ordering::SeqCst) {
            let why = stopped
                .map(|f| fatal_text(&f))
                .unwrap_or_else(|| "a storage operation failed".to_string());
            return Err(Error::Unavailable(format!(
                "Raft has stopped on node {} ({why}); use another member, and restart this one once its log says what failed",
                self.inner.id
            )));
        }
        Ok(())
    }

    /// Checks a key against the limits.
    pub fn check_key(&self, key: &str) -> Result<(), Error> {
        self.check_bytes_key(key.as_bytes())
    }

    fn check_value(&self, value: impl AsRef<[u8]>) -> Result<(), Error> {
        let value = value.as_ref();
        if value.len() > self.inner.limits.max_value {
            return Err(Error::TooLarge(format!(
                "the value is {} bytes; the limit is {} (network.max_value_size)",
                value.len(),
                self.inner.limits.max_value
            )));
        }
        Ok(())
    }

    /// Validates a command before it is proposed.
    pub fn check_command(&self, cmd: &Command) -> Result<(), Error> {
        match cmd {
            Command::Set { key, value } => {
                self.check_key(key)?;
                self.check_value(value)
            }
            Command::Delete { key } => self.check_key(key),
            Command::Txn(t) => self.check_txn(t),
            Command::Compact { revision } => {
                if *revision == 0 {
                    return Err(Error::Invalid(
                        "the compaction revision must be at least 1".into(),
                    ));
                }
                Ok(())
            }
            Command::Tagged { id, command, .. } => {
                if id.is_empty() || id.len() > MAX_REQUEST_ID {
                    return Err(Error::Invalid(format!(
                        "a request id is 1 to {MAX_REQUEST_ID} bytes; this one is {}",
                        id.len()
                    )));
                }
                if matches!(**command, Command::Tagged { .. }) {
                    return Err(Error::Invalid("a request carries one request id".into()));
                }
                self.check_command(command)
            }
            Command::Lease { op, .. } => match op {
                crate::raft::types::LeaseOp::Grant { ttl, .. }
                    if *ttl > crate::store::MAX_TTL_SECS =>
                {
                    Err(Error::Invalid(format!(
                        "a lease TTL of {ttl} s is too large; the most is {} s",
                        crate::store::MAX_TTL_SECS
                    )))
                }
                crate::raft::types::LeaseOp::Expire { ids }
                | crate::raft::types::LeaseOp::KeepAliveMany { ids }
                    if ids.len() > 100_000 =>
                {
                    Err(Error::TooLarge(format!(
                        "a lease operation on {} leases at once",
                        ids.len()
                    )))
                }
                _ => Ok(()),
            },
            Command::BatchSet { pairs } => {
                if pairs.is_empty() {
                    return Err(Error::Invalid("the batch is empty".into()));
                }
                let mut total = 0usize;
                for (k, v) in pairs {
                    self.check_key(k)?;
                    self.check_value(v)?;
                    total += k.len() + v.len();
                }
                if total > self.inner.limits.max_batch_bytes {
                    return Err(Error::TooLarge(format!(
                        "the batch holds {total} bytes; the limit is {} (network.max_message_size)",
                        self.inner.limits.max_batch_bytes
                    )));
                }
                Ok(())
            }
        }
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<LeaderInfo> {
        let watch = self.inner.raft.metrics();
        let m = watch.borrow_watched();
        let id = m.current_leader?;
        let node = m
            .membership_config
            .membership()
            .nodes()
            .find(|(nid, _)| **nid == id)
            .map(|(_, n)| n.clone());
        Some(LeaderInfo { id, node })
    }

    pub fn is_leader(&self) -> bool {
        let watch = self.inner.raft.metrics();
        let m = watch.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// Applies a write through the leader's log.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Error> {
        self.check_serving()?;
        self.check_command(&cmd)?;
        if !self.is_leader() {
            if let Some(leader) = self.leader().filter(|l| l.id != self.inner.id) {
                if !self.inner.forward {
                    return Err(Error::NotLeader(Some(leader)));
                }
                return self.forward_write(&leader, cmd).await;
            }
        }
        match self.submit(cmd.clone()).await {
            Err(Error::NotLeader(Some(leader)))
                if self.inner.forward && leader.id != self.inner.id =>
            {
                self.forward_write(&leader, cmd).await
            }
            other => other,
        }
    }

    /// Forwards a write to the leader with a request id (the client's, or
    /// one this node attaches), so that an answer lost on the way from the
    /// leader (a cut connection, a garbled reply) is asked for again, once,
    /// without the risk of applying the write twice.
    async fn forward_write(
        &self,
        leader: &LeaderInfo,
        cmd: Command,
    ) -> Result<CommandResult, Error> {
        // A keep-alive or a checkpoint applied twice changes nothing more
        // than once: no id, so that they do not fill the table of ids.
        let attached = !matches!(
            cmd,
            Command::Tagged { .. }
                | Command::Lease {
                    op: crate::raft::types::LeaseOp::KeepAlive { .. }
                        | crate::raft::types::LeaseOp::Checkpoint,
                    ..
                }
        );
        let cmd = if attached {
            Command::Tagged {
                id: crate::client::new_request_id().into_bytes(),
                time_ms: 0,
                command: Box::new(cmd),
            }
        } else {
            cmd
        };
        let began = std::time::Instant::now();
        let mut result = self.forward(leader, Route::Write, &cmd).await;
        if matches!(result, Err(Error::OutcomeUnknown(_)))
            && began.elapsed() < self.inner.request_timeout / 2
        {
            // A client's pause before it asks again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = self
                .leader()
                .filter(|l| l.id != self.inner.id)
                .unwrap_or_else(|| leader.clone());
            result = match self.forward(&again, Route::Write, &cmd).await {
                // The first send may have been applied: a refusal of the
                // second (no leader yet, a member that does not lead) says
                // nothing about the first.
                Err(e) if !matches!(e, Error::OutcomeUnknown(_)) => {
                    Err(Error::OutcomeUnknown(format!(
                        "the leader's answer was lost and asking again was refused ({e}); the write may or may not be applied: send it again with the same Idempotency-Key"
                    )))
                }
                other => other,
            };
        }
        result.map(|mut r: CommandResult| {
            // A repeat of an id this node attached is its own business.
            if attached {
                r.repeated = false;
            }
            r
        })
    }

    /// Proposes on this node only (the peer route `/raft/write` calls this:
    /// a forwarded write is never forwarded again). The command is checked
    /// against the limits here too: a peer's copy of the limits may differ,
    /// and an entry over them could never be put in a snapshot.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, Error> {
        self.check_serving()?;
        self.check_command(&cmd)?;
        // Forwarded keep-alives join the leader's next keep-alive entry.
        if let Command::Lease {
            op: crate::raft::types::LeaseOp::KeepAlive { id },
            ..
        } = &cmd
        {
            return self.keep_alive_batched(*id).await;
        }
        self.submit(cmd).await
    }

    /// Hands an already checked command to Raft on this node.
    async fn submit(&self, mut cmd: Command) -> Result<CommandResult, Error> {
        // The proposing leader stamps lease entries with its lease clock.
        if cmd.lease_clock_mut().is_some() {
            let now = self.leader_lease_clock().await?;
            if let Some(clock) = cmd.lease_clock_mut() {
                *clock = now;
            }
        }
        let _in_flight = InFlight::new(&self.inner.writes_in_flight);
        // The proposing leader dates request ids with its own clock.
        if let Command::Tagged { time_ms, .. } = &mut cmd {
            *time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        let fut = self.inner.raft.client_write(cmd);
        let result = match tokio::time::timeout(self.inner.request_timeout, fut).await {
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "no commit within {:?} (network.request_timeout); the write may or may not be applied",
                self.inner.request_timeout
            ))),
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(self.write_error(e)),
        };
        self.inner.metrics.proposal(match &result {
            Ok(_) => "ok",
            Err(Error::NotLeader(_)) => "not_leader",
            Err(Error::Unavailable(_)) => "unavailable",
            Err(Error::OutcomeUnknown(_)) => "outcome_unknown",
            Err(Error::Internal(_)) => "failed",
            Err(_) => "rejected",
        });
        result
    }

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
        match e {
            // Refused before the entry was appended: nothing was applied.
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
                Some(id) => Error::NotLeader(Some(LeaderInfo {
                    id,
                    node: f.leader_node,
                })),
                None if f.reason == openraft::errors::ForwardReason::LeaseExpired => {
                    Error::Unavailable(format!(
                        "node {} leads but has not heard from a quorum within its lease, so it accepts no writes (nothing was applied); check that a majority of the members runs and that they reach each other",
                        self.inner.id
                    ))
                }
                None => Error::Unavailable("no leader is elected; retry shortly".into()),
            },
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::OutcomeUnknown(
                "the leader changed after the write was appended; it may or may not be applied"
                    .into(),
            ),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Error::Conflict(format!("membership change refused: {e}"))
            }
            RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => {
                Error::Precondition(e.to_string())
            }
            // Raft stopped while the write was in flight: its entry may
            // already be on followers, and a new leader may commit it.
            RaftError::Fatal(f) => {
                self.inner.storage_failed.store(true, Ordering::SeqCst);
                Error::OutcomeUnknown(format!(
                    "Raft stopped on node {} while the write was in flight ({}); it may or may not be applied: another member may still commit it",
                    self.inner.id,
                    fatal_text(&f)
                ))
            }
        }
    }

    /// Sends a request to the leader's peer route and decodes its answer.
    async fn forward<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        leader: &LeaderInfo,
        route: Route,
        body: &Req,
    ) -> Result<Resp, Error> {
        self.forward_within(leader, route, body, self.inner.request_timeout)
            .await
    }

    /// [`Node::forward`], waiting up to `timeout` for the answer.
    async fn forward_within<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        leader: &LeaderInfo,
        route: Route,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        let Some(node) = &leader.node else {
            return Err(Error::Unavailable(format!(
                "the leader is node {} but its address is unknown here; retry shortly",
                leader.id
            )));
        };
        self.inner.metrics.forwarded(route.forwarded_label());
        let body = serde_json::to_vec(body).map_err(|e| Error::Internal(format!("encode: {e}")))?;
        let reply = self
            .inner
            .peers
            .call(
                peer::Target {
                    id: leader.id,
                    addr: &node.rpc_addr,
                },
                route,
                "application/json",
                body,
                timeout,
                64 * 1024 * 1024,
            )
            .await;
        let bytes = match reply {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => {
                let body = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
                return Err(leader_refusal(r.status, body.as_ref(), leader.id));
            }
            Err(peer::CallError::BadAddress(m)) => {
                return Err(Error::Unavailable(format!(
                    "cannot reach the leader (node {}): {m}",
                    leader.id
                )));
            }
            Err(peer::CallError::Send(e)) => {
                return Err(forward_failure(&e, leader.id, &node.rpc_addr));
            }
            Err(peer::CallError::Cut { status, .. }) if status != 200 => {
                return Err(leader_refusal(status, None, leader.id));
            }
            Err(peer::CallError::Cut { error, .. }) => {
                return Err(Error::OutcomeUnknown(format!(
                    "the answer of the leader (node {}) was cut off: {error}; the request may or may not have been applied",
                    leader.id
                )));
            }
        };
        let reply: Result<Resp, Error> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::OutcomeUnknown(format!(
                "the answer of the leader (node {}) does not decode ({e}); the request may or may not have been applied",
                leader.id
            ))
        })?;
        reply
    }

    /// Reads one key at the given consistency.
    pub async fn read(
        &self,
        key: &str,
        consistency: ReadConsistency,
    ) -> Result<Option<StoredValue>, Error> {
        self.check_serving()?;
        self.check_key(key)?;
        self.linearize(consistency).await?;
        self.inner
            .reader
            .get_async(key.to_string())
            .await
            .map_err(|e| self.storage_error(e))
    }

    /// Lists up to `limit` keys under a prefix, strictly after
    /// `start_after`; a `limit` of 0 means [`DEFAULT_PAGE`].
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<(Vec<(Vec<u8>, StoredValue)>, bool), Error> {
        self.check_serving()?;
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Error::Invalid(format!(
                    "limit {n} is above the maximum page of {MAX_PAGE}"
                )));
            }
            n => n,
        };
        self.linearize(consistency).await?;
        self.inner
            .reader
            .list_async(prefix.to_string(), start_after.map(str::to_string), limit)
            .await
            .map_err(|e| self.storage_error(e))
    }

    fn storage_error(&self, e: crate::store::Error) -> Error {
        Error::Internal(format!(
            "storage read failed on node {}: {e}",
            self.inner.id
        ))
    }

    /// Waits until a read at `consistency` may be served from the local
    /// state machine.
    async fn linearize(&self, consistency: ReadConsistency) -> Result<(), Error> {
        if consistency == ReadConsistency::Stale {
            return Ok(());
        }
        let deadline = self.inner.request_timeout;
        let local = async {
            if self.is_leader() {
                match self.leader_read_index(consistency).await {
                    Err(Error::NotLeader(_)) => {}
                    other => return other.map(|_| ()),
                }
            }
            let leader = match self.leader() {
                Some(l) if l.id != self.inner.id => l,
                _ => {
                    return Err(Error::Unavailable(
                        "no leader is elected; retry shortly".into(),
                    ));
                }
            };
            if !self.inner.forward {
                return Err(Error::NotLeader(Some(leader)));
            }
            // A read changes nothing: a lost answer is just unavailability.
            let read_log_id: openraft::raft::linearizable_read::ReadLogId<TypeConfig> = self
                .forward(&leader, Route::ReadIndex, &consistency)
                .await
                .map_err(|e| match e {
                    Error::OutcomeUnknown(m) => Error::Unavailable(m),
                    other => other,
                })?;
            let linearizer =
                openraft::raft::linearizable_read::Linearizer::new(leader.id, read_log_id, None);
            match linearizer
                .try_await_ready(&self.inner.raft, Some(deadline))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(Error::Unavailable(format!(
                    "this node did not catch up with the leader within {deadline:?}; retry or read from the leader"
                ))),
                Err(f) => Err(Error::Internal(format!(
                    "Raft stopped on node {} ({}); read from another member",
                    self.inner.id,
                    fatal_text(&f)
                ))),
            }
        };
        match tokio::time::timeout(deadline, local).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "could not confirm the read with the leader within {deadline:?} (network.request_timeout); check that a majority of the members runs and that they reach each other"
            ))),
        }
    }

    /// On the leader: confirms leadership (by quorum or lease) and waits for
    /// the local apply; returns the read log id for followers.
    pub async fn leader_read_index(
        &self,
        consistency: ReadConsistency,
    ) -> Result<openraft::raft::linearizable_read::ReadLogId<TypeConfig>, Error> {
        // A quorum round waits for acknowledgements up to the lease, as
        // openraft does by default, but answers within the request timeout
        // (with the members that did not answer) rather than be cut off.
        let wait = self
            .inner
            .quorum_timeout
            .min(self.inner.request_timeout * 3 / 4);
        let read_index = LinearizerOption::from(ReadPolicy::ReadIndex).with_wait_timeout(wait);
        let first = match consistency {
            ReadConsistency::Lease => LinearizerOption::from(ReadPolicy::LeaseRead),
            _ => read_index.clone(),
        };
        let r = match self.inner.raft.ensure_linearizable(first).await {
            // openraft reports a lease that is not valid (run out, or not
            // yet renewed after followers came back) as a missing quorum,
            // at once: confirm leadership with a quorum round instead.
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)))
                if consistency == ReadConsistency::Lease =>
            {
                self.inner.raft.ensure_linearizable(read_index).await
            }
            other => other,
        };
        match r {
            Ok(id) => Ok(id),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(Error::NotLeader(f.leader_id.map(|id| LeaderInfo {
                    id,
                    node: f.leader_node,
                })))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
                Err(Error::Unavailable(self.no_quorum_text(&q.got)))
            }
            Err(RaftError::Fatal(f)) => Err(Error::Internal(format!(
                "Raft stopped on node {} ({}); read from another member",
                self.inner.id,
                fatal_text(&f)
            ))),
        }
    }

    /// Why the leader could not confirm its leadership, naming the voters
    /// that answered in time (`answered`) and those that did not.
    fn no_quorum_text(&self, answered: &BTreeSet<u64>) -> String {
        let voters = self.membership().voters;
        let (heard, silent): (Vec<u64>, Vec<u64>) =
            voters.iter().partition(|v| answered.contains(v));
        let heard = if heard.is_empty() {
            "no voter answered".to_string()
        } else {
            format!("{} answered", nodes_text(&heard))
        };
        format!(
            "the leader (node {}) cannot confirm it still leads: of the {} voters, {heard} and {} did not answer in time; a majority must run and reach each other: check those nodes and the network between them",
            self.inner.id,
            voters.len(),
            nodes_text(&silent)
        )
    }

    /// Initialises a new cluster: this node alone, or the given members.
    pub async fn initialize(&self, members: Option<BTreeMap<u64, NodeInfo>>) -> Result<(), Error> {
        self.check_serving()?;
        let members = match members {
            Some(m) if !m.is_empty() => m,
            _ => BTreeMap::from([(self.inner.id, self.inner.me.clone())]),
        };
        if !members.contains_key(&self.inner.id) {
            return Err(Error::Invalid(format!(
                "the member map must include this node ({})",
                self.inner.id
            )));
        }
        let initialized = self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if initialized {
            return Err(Error::Conflict(
                "this node is already part of an initialised cluster; use /add-learner to grow it"
                    .into(),
            ));
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(Error::Conflict(
                "this node is already initialised (it holds a vote or log entries); use /add-learner to grow the cluster"
                    .into(),
            )),
            Err(RaftError::APIError(InitializeError::NotInMembers(_))) => Err(Error::Invalid(
                format!(
                    "the member map must include this node ({})",
                    self.inner.id
                ),
            )),
            Err(RaftError::Fatal(f)) => Err(Error::Internal(format!(
                "Raft stopped on node {} ({})",
                self.inner.id,
                fatal_text(&f)
            ))),
        }
    }

    /// Adds a learner and waits until it has caught up: until it holds the
    /// leader's log up to the entry that added it. The wait is bounded by
    /// `timeout`, else by `network.request_timeout`. Forwarded to the leader.
    pub async fn add_learner(
        &self,
        id: u64,
        node: NodeInfo,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.check_serving()?;
        if id == 0 {
            return Err(Error::Invalid("node id 0 is reserved".into()));
        }
        if node.rpc_addr.is_empty() {
            return Err(Error::Invalid("rpc_addr is required".into()));
        }
        if let Some(t) = timeout {
            if t.is_zero() || t > MAX_LEARNER_WAIT {
                return Err(Error::Invalid(format!(
                    "timeout must be above 0 and at most {}h",
                    MAX_LEARNER_WAIT.as_secs() / 3600
                )));
            }
        }
        if let Some(leader) = self.leader().filter(|l| l.id != self.inner.id) {
            if !self.inner.forward {
                return Err(Error::NotLeader(Some(leader)));
            }
            let rpc = AddLearnerRpc::new(id, node, timeout);
            let wait = timeout.unwrap_or(self.inner.request_timeout);
            // The leader waits up to `wait` for the learner, after the
            // membership change itself (bounded by the request timeout).
            return self
                .forward_within(
                    &leader,
                    Route::AddLearner,
                    &rpc,
                    wait + self.inner.request_timeout,
                )
                .await;
        }
        self.add_learner_local(id, node, timeout).await
    }

    /// [`Node::add_learner`] on the leader (the peer route calls this).
    pub async fn add_learner_local(
        &self,
        id: u64,
        node: NodeInfo,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        let existing = self.membership().nodes.get(&id).cloned();
        if let Some(existing) = existing {
            if existing != node {
                return Err(Error::Conflict(format!(
                    "node id {id} is already used by a member at {}; ids are never reused",
                    existing.rpc_addr
                )));
            }
        }
        // Not openraft's blocking wait: it counts a learner as caught up
        // within `replication_lag_threshold` entries, and never gives up.
        let raft = self.inner.raft.clone();
        let added_at = self
            .membership_change(move || {
                let (raft, node) = (raft.clone(), node.clone());
                async move { raft.add_learner(id, node, false).await }
            })
            .await?;
        if id == self.inner.id {
            return Ok(());
        }
        let wait = timeout
            .unwrap_or(self.inner.request_timeout)
            .saturating_sub(started.elapsed());
        let limit = match timeout {
            Some(t) => format!("within the {} asked for", millis(t)),
            None => format!(
                "within {} (network.request_timeout)",
                millis(self.inner.request_timeout)
            ),
        };
        self.wait_for_learner(id, added_at, wait, &limit).await
    }

    /// Waits until the leader's replication to `id` has matched index
    /// `target` (the entry that added it), for at most `wait`.
    async fn wait_for_learner(
        &self,
        id: u64,
        target: u64,
        wait: Duration,
        limit: &str,
    ) -> Result<(), Error> {
        let matched = |m: &openraft::RaftMetrics<TypeConfig>| -> Option<Option<u64>> {
            let r = m.replication.as_ref()?;
            Some(r.get(&id).and_then(|l| l.as_ref().map(|l| l.index)))
        };
        let done = |m: &openraft::RaftMetrics<TypeConfig>| match matched(m) {
            // These metrics predate the entry that added the learner.
            _ if m.membership_config.log_id().as_ref().map(|l| l.index) < Some(target) => false,
            // No longer the leader, or the learner was removed meanwhile.
            None => true,
            Some(_) if m.membership_config.membership().get_node(&id).is_none() => true,
            Some(at) => at.is_some_and(|at| at >= target),
        };
        let waited = self
            .inner
            .raft
            .wait(Some(wait))
            .metrics(done, "the new learner catches up")
            .await;
        match waited {
            Ok(m) => match matched(&m) {
                Some(Some(at)) if at >= target => Ok(()),
                Some(_) => Err(Error::Conflict(format!(
                    "node {id} was removed from the cluster while it was catching up"
                ))),
                None => Err(Error::Unavailable(format!(
                    "node {} stopped leading while node {id} was catching up; node {id} was added as a learner: check `ferriumctl status` before promoting it",
                    self.inner.id
                ))),
            },
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(Error::Unavailable(
                "the node is shutting down; use another member".into(),
            )),
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                let at = matched(&self.metrics()).flatten();
                let has = match at {
                    Some(at) => format!("it has the log up to index {at} of {target}"),
                    None => format!("it has none of the log up to index {target} yet"),
                };
                Err(Error::Unavailable(format!(
                    "node {id} was added as a learner but has not caught up {limit}: {has}. It keeps receiving the log: call /add-learner again to wait again (with a longer \"timeout\" if needed), and promote it only once it has caught up"
                )))
            }
        }
    }

    /// Runs a membership change, retrying while an earlier one (such as the
    /// initial membership right after `/init`) is still being committed, so
    /// that operators can issue the documented steps back to back.
    /// Returns the log index of the membership entry.
    async fn membership_change<F, Fut>(&self, change: F) -> Result<u64, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    openraft::raft::ClientWriteResponse<TypeConfig>,
                    RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
                >,
            >,
    {
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        loop {
            match change().await {
                Ok(resp) => return Ok(resp.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    openraft::error::ChangeMembershipError::InProgress(p),
                ))) => {
                    if tokio::time::Instant::now() >= deadline {
                        let at = p
                            .membership_log_id
                            .map(|l| format!(" (at log index {})", l.index))
                            .unwrap_or_default();
                        return Err(Error::Conflict(format!(
                            "another membership change{at} is still in progress; retry when it has committed"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
    }

    /// Replaces the voter set and waits until the change is committed.
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), Error> {
        self.check_serving()?;
        if voters.is_empty() {
            return Err(Error::Invalid("the voter set is empty".into()));
        }
        if let Some(leader) = self.leader().filter(|l| l.id != self.inner.id) {
            if !self.inner.forward {
                return Err(Error::NotLeader(Some(leader)));
            }
            return self
                .forward(&leader, Route::ChangeMembership, &voters)
                .await;
        }
        self.change_membership_local(voters).await
    }

    pub async fn change_membership_local(&self, voters: BTreeSet<u64>) -> Result<(), Error> {
        let known = self.membership().nodes;
        let unknown: Vec<u64> = voters
            .iter()
            .filter(|id| !known.contains_key(id))
            .copied()
            .collect();
        if !unknown.is_empty() {
            let (are, them) = if unknown.len() == 1 {
                ("is not a member", "it")
            } else {
                ("are not members", "them")
            };
            return Err(Error::Precondition(format!(
                "{} {are}; add {them} first with /add-learner",
                nodes_text(&unknown)
            )));
        }
        let raft = self.inner.raft.clone();
        self.membership_change(move || {
            let (raft, voters) = (raft.clone(), voters.clone());
            async move { raft.change_membership(voters, false).await }
        })
        .await
        .map(|_| ())
    }

    fn membership(&self) -> MembershipStatus {
        let m = self.metrics();
        let mem = m.membership_config.membership();
        MembershipStatus {
            log_index: m.membership_config.log_id().as_ref().map(|l| l.index),
            voters: mem.voter_ids().collect(),
            learners: mem.learner_ids().collect(),
            nodes: mem.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    /// Waits until this member has applied everything committed when asked
    /// (a linearizable read with nothing to read: etcd's linearizable
    /// `MemberList`).
    pub async fn read_barrier(&self) -> Result<(), Error> {
        self.check_serving()?;
        self.linearize(ReadConsistency::Linearizable).await
    }

    /// A snapshot of this member's state that holds everything applied when
    /// asked: builds one unless the newest already does, waiting up to
    /// `network.request_timeout` for it.
    pub async fn fresh_snapshot(&self) -> Result<crate::store::SnapshotFile, Error> {
        self.check_serving()?;
        let applied = self.status().last_applied.unwrap_or(0);
        let has =
            |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.map_or(0, |s| s.index()) >= applied;
        if !has(&self.metrics()) {
            self.inner
                .raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| Error::Unavailable(format!("cannot build a snapshot: {e}")))?;
            // Building one takes about a second per million keys and more on
            // a busy disk: a backup waits for it longer than a request does,
            // since a retry would need a newer one under live writes.
            let wait = self.inner.request_timeout.max(SNAPSHOT_WAIT);
            self.inner
                .raft
                .wait(Some(wait))
                .metrics(has, "a snapshot of everything applied")
                .await
                .map_err(|_| {
                    Error::Unavailable(format!(
                        "no snapshot of revision {applied} was built within {} s; retry, or check the member's disk and log",
                        wait.as_secs()
                    ))
                })?;
        }
        match self.inner.raft.get_snapshot().await {
            Ok(Some(s)) => Ok(s.snapshot),
            Ok(None) => Err(Error::Unavailable(
                "this member has no snapshot yet; retry".into(),
            )),
            Err(e) => Err(Error::Unavailable(format!("cannot read the snapshot: {e}"))),
        }
    }

    /// Moves leadership to voter `target` (etcd's `MoveLeader`): asks
    /// the leader to hand over and waits, up to `network.request_timeout`,
    /// until `target` leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), Error> {
        self.check_serving()?;
        if !self.is_leader() {
            return Err(Error::NotLeader(self.leader()));
        }
        if !self.status().membership.voters.contains(&target) {
            return Err(Error::Invalid(format!(
                "node {target} is not a voter of this cluster; leadership moves only to a voter"
            )));
        }
        if target == self.inner.id {
            return Ok(());
        }
        self.inner
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot hand over leadership: {e}")))?;
        let wait = self.inner.request_timeout;
        self.inner
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader == Some(target), "the new leader")
            .await
            .map(|_| ())
            .map_err(|_| {
                Error::Unavailable(format!(
                    "node {target} did not take over leadership within {} ms; retry",
                    wait.as_millis()
                ))
            })
    }

    /// Asks the node serving at `addr` (`host:port` of its HTTP listener,
    /// `https` when `tls`) for its node id, so that it can be added by
    /// address alone (etcd's `MemberAdd`).
    pub async fn member_id_at(&self, addr: &str, tls: bool) -> Result<u64, Error> {
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/health");
        let reply = self
            .inner
            .peers
            .get(&url, self.inner.request_timeout)
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot reach the new member at {url} to learn its node id: {e}; start it first"
                ))
            })?;
        let id = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("node_id").and_then(|v| v.as_u64()));
        match id {
            Some(id) if id != 0 => Ok(id),
            _ => Err(Error::Unavailable(format!(
                "{url} answered {} without a node id; is a Ferrium node serving there?",
                reply.status
            ))),
        }
    }

    /// On a graceful stop, after [`Node::begin_shutdown`] (which refuses new
    /// writes with a definite 503): lets the writes this leader has already
    /// proposed finish, hands leadership to the most caught-up voter and
    /// waits, up to `timeout`, until another node leads. The cluster then
    /// does not sit an election timeout without a leader, and no write in
    /// flight is cut off. Does nothing on a follower or a single voter.
    pub async fn hand_over_leadership(&self, timeout: Duration) {
        if !self.is_leader() {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while self.inner.writes_in_flight.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let status = self.status();
        let Some(target) = status
            .membership
            .voters
            .iter()
            .filter(|v| **v != self.inner.id)
            .max_by_key(|v| status.replication.get(v).and_then(|r| r.matched))
            .copied()
        else {
            return;
        };
        log::info!("handing leadership to node {target} before stopping");
        if let Err(e) = self.inner.raft.trigger().transfer_leader(target).await {
            log::warn!(
                "cannot hand over leadership: {e}; the others elect a leader after their election timeout"
            );
            return;
        }
        let me = self.inner.id;
        let waited = self
            .inner
            .raft
            .wait(Some(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            ))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another node leads",
            )
            .await;
        match waited {
            Ok(m) => log::info!(
                "node {} leads now (term {})",
                m.current_leader.unwrap_or(target),
                m.current_term
            ),
            Err(_) => log::warn!(
                "no other node took the leadership within {timeout:?}; the others elect one after their election timeout"
            ),
        }
    }

    /// A snapshot of this node's Raft state.
    pub fn status(&self) -> Status {
        let m = self.metrics();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| {
                        let idx = matched.as_ref().map(|l| l.index);
                        (
                            *id,
                            Replication {
                                matched: idx,
                                matched_term: matched.as_ref().map(|l| l.leader_id.term),
                                lag: last.saturating_sub(idx.unwrap_or(0)),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Status {
            node_id: self.inner.id,
            cluster: self.inner.cluster.clone(),
            state: format!("{:?}", m.state),
            current_term: m.current_term,
            current_leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.as_ref().map(|l| l.index),
            committed: m.local_committed.as_ref().map(|l| l.index),
            snapshot: m.snapshot.as_ref().map(|l| l.index),
            purged: m.purged.as_ref().map(|l| l.index),
            membership: self.membership(),
            replication,
        }
    }

    /// True when this node can serve: it knows a leader, is a member, and
    /// has applied what it knows to be committed. Otherwise the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let m = self.metrics();
        if m.current_leader.is_none() {
            return Err("no leader is known".into());
        }
        if m.state == ServerState::Leader
            && m.membership_config.membership().voter_ids().count() > 1
        {
            use openraft::Instant as _;
            let quiet = m.last_quorum_acked.as_ref().map(|t| t.elapsed());
            match quiet {
                Some(d) if d <= self.inner.quorum_timeout => {}
                _ => {
                    return Err(format!(
                        "this leader has not heard from a quorum for over {:?}",
                        self.inner.quorum_timeout
                    ));
                }
            }
        }
        if m.state != ServerState::Leader {
            let last = self.inner.last_leader_contact.lock().ok().and_then(|t| *t);
            match last.map(|t| t.elapsed()) {
                Some(d) if d <= self.inner.quorum_timeout => {}
                Some(d) => return Err(format!("no word from the leader for {d:?}")),
                None => return Err("no word from a leader since this node started".into()),
            }
        }
        let member = m
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == self.inner.id);
        if !member {
            return Err("this node is not part of the cluster configuration".into());
        }
        let committed = m.local_committed.as_ref().map(|l| l.index).unwrap_or(0);
        let applied = m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        if applied < committed {
            return Err(format!("applying: at {applied} of {committed}"));
        }
        Ok(())
    }
}

/// A failed forward: if the leader certainly never got the request it is
/// unavailable, otherwise the outcome is unknown.
fn forward_failure(e: &http::Error, leader: u64, addr: &str) -> Error {
    if e.is_never_sent() {
        Error::Unavailable(format!(
            "cannot reach the leader (node {leader} at {addr}): {e}"
        ))
    } else {
        Error::OutcomeUnknown(format!(
            "lost the connection to the leader (node {leader} at {addr}) during the request: {e}; it may or may not have been applied"
        ))
    }
}

/// A non-200 answer from the leader's peer route. The route answers 200
/// whenever it ran the request, so a 4xx (undecodable, unauthenticated,
/// too large, meant for another node) or a 503 in Ferrium's own form
/// (`"code":"unavailable"`: over the connection limit, before the request
/// was read) means that nothing ran. Any other answer (a 500, a 5xx page of
/// something in between) may come after the request ran.
fn leader_refusal(status: u16, body: Option<&serde_json::Value>, leader: u64) -> Error {
    let code = body.and_then(|b| b["code"].as_str());
    let said = body
        .and_then(|b| b["error"].as_str())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    let refused = (400..500).contains(&status) || (status == 503 && code == Some("unavailable"));
    let message = body.and_then(|b| b["error"].as_str()).map(str::to_string);
    match (status, message) {
        // The command itself was refused by the leader's checks.
        (400, Some(m)) => return Error::Invalid(m),
        (413, Some(m)) => return Error::TooLarge(m),
        _ => {}
    }
    if refused {
        Error::Unavailable(format!(
            "the leader (node {leader}) refused the forwarded request with status {status}{said} before running it; nothing was applied"
        ))
    } else {
        Error::OutcomeUnknown(format!(
            "the leader (node {leader}) answered the forwarded request with status {status}{said}; it may or may not have been applied"
        ))
    }
}

/// Why Raft stopped, in words (openraft's own text shows internal
/// structures).
fn fatal_text(f: &openraft::errors::Fatal<TypeConfig>) -> String {
    use openraft::errors::Fatal;
    match f {
        Fatal::StorageError(e) => match std::error::Error::source(e) {
            Some(cause) => {
                // The boxed cause prints its Rust type first; keep the words.
                let text = cause.to_string();
                let words = match text.split_once(": ") {
                    Some((ty, rest)) if ty.contains("::") && !ty.contains(' ') => rest,
                    _ => text.as_str(),
                };
                format!("a storage operation failed: {words}")
            }
            None => "a storage operation failed".to_string(),
        },
        Fatal::Panicked => "the Raft task panicked".to_string(),
        Fatal::Stopped => "Raft is shut down".to_string(),
    }
}

/// A duration as configuration files write it: "250ms", "30s", "5m".
fn millis(d: Duration) -> Millis {
    Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// "node 2", "nodes 2 and 3", "nodes 1, 2 and 3"; "no node" when empty.
fn nodes_text(ids: &[u64]) -> String {
    let names: Vec<String> = ids.iter().map(u64::to_string).collect();
    match names.as_slice() {
        [] => "no node".to_string(),
        [one] => format!("node {one}"),
        [rest @ .., last] => format!("nodes {} and {last}", rest.join(", ")),
    }
}

/// What every KV v2 answer carries: which cluster and member answered, in
/// which Raft term, reflecting which revision (etcd's `ResponseHeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
    pub revision: u64,
}

/// Longest request id a client may attach to a write.
pub const MAX_REQUEST_ID: usize = 256;
/// Most operations one transaction may hold, nested ones included (etcd's
/// default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A stable 64-bit id for a cluster name (FNV-1a), for answer headers.
pub fn cluster_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Node {
    /// The answer header at `revision`.
    pub fn header(&self, revision: u64) -> Header {
        let term = self.inner.raft.metrics().borrow_watched().current_term;
        Header {
            cluster_id: cluster_id(&self.inner.cluster),
            member_id: self.inner.id,
            raft_term: term,
            revision,
        }
    }

    /// The revision this member has applied up to.
    pub fn applied_revision(&self) -> u64 {
        self.inner.reader.last_applied().map_or(0, |l| l.index())
    }

    /// A write with a client's request id (see [`Command::Tagged`]): a
    /// repeat of an id applied within the window answers the first result.
    pub async fn write_with_id(
        &self,
        cmd: Command,
        request_id: Option<Vec<u8>>,
    ) -> Result<CommandResult, Error> {
        let cmd = match request_id {
            Some(id) => Command::Tagged {
                id,
                time_ms: 0,
                command: Box::new(cmd),
            },
            None => cmd,
        };
        self.write(cmd).await
    }

    /// Runs a transaction through the log; the result, the revision it was
    /// applied at, and whether it is the kept answer of an earlier request
    /// with the same id.
    pub async fn txn(
        &self,
        txn: Txn,
        request_id: Option<Vec<u8>>,
    ) -> Result<(TxnResult, u64, bool), Error> {
        let r = self
            .write_with_id(Command::Txn(Box::new(txn)), request_id)
            .await?;
        if let Some(e) = r.error {
            return Err(Error::Apply(e));
        }
        let (revision, repeated) = (r.revision, r.repeated);
        r.txn.map(|t| (t, revision, repeated)).ok_or_else(|| {
            Error::Internal("the state machine answered a transaction without its result".into())
        })
    }

    /// Forgets history before `revision` on every member; answers the
    /// compaction point.
    pub async fn compact(&self, revision: u64, request_id: Option<Vec<u8>>) -> Result<u64, Error> {
        let r = self
            .write_with_id(Command::Compact { revision }, request_id)
            .await?;
        match r.error {
            Some(e) => Err(Error::Apply(e)),
            None => Ok(r.compact_revision.unwrap_or(revision)),
        }
    }

    /// A range at the current or a past revision, at `consistency`; with
    /// the revision it reflects.
    pub async fn range(
        &self,
        req: RangeRequest,
        consistency: ReadConsistency,
    ) -> Result<(RangeResult, u64), Error> {
        self.check_serving()?;
        self.check_range(&req)?;
        self.linearize(consistency).await?;
        match self.inner.reader.range_async(req).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(Error::Apply(e)),
            Err(e) => Err(self.storage_error(e)),
        }
    }

    fn check_bytes_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::Invalid("the key is empty".into()));
        }
        if key.len() > self.inner.limits.max_key {
            return Err(Error::TooLarge(format!(
                "the key is {} bytes; the limit is {} (network.max_key_size)",
                key.len(),
                self.inner.limits.max_key
            )));
        }
        Ok(())
    }

    fn check_range(&self, r: &RangeRequest) -> Result<(), Error> {
        // A range may start at the empty key (every key: "" with a prefix
        // or from_key); a single key may not be empty.
        if !r.key.is_empty() || r.range_end.is_empty() {
            self.check_bytes_key(&r.key)?;
        }
        if r.range_end.len() > self.inner.limits.max_key {
            return Err(Error::TooLarge(format!(
                "range_end is {} bytes; the limit is {} (network.max_key_size)",
                r.range_end.len(),
                self.inner.limits.max_key
            )));
        }
        Ok(())
    }

    fn check_txn(&self, t: &Txn) -> Result<(), Error> {
        let ops = t.op_count();
        if ops > MAX_TXN_OPS {
            return Err(Error::TooLarge(format!(
                "the transaction holds {ops} operations; the limit is {MAX_TXN_OPS}"
            )));
        }
        let bytes = t.byte_size();
        if bytes > self.inner.limits.max_batch_bytes {
            return Err(Error::TooLarge(format!(
                "the transaction holds {bytes} bytes; the limit is {} (network.max_message_size)",
                self.inner.limits.max_batch_bytes
            )));
        }
        fn each(node: &Node, t: &Txn) -> Result<(), Error> {
            for c in &t.compare {
                node.check_bytes_key(&c.key)?;
                if let crate::raft::kv::CompareTarget::Value(v) = &c.target {
                    node.check_value(v)?;
                }
            }
            for op in t.success.iter().chain(&t.failure) {
                match op {
                    TxnOp::Put(p) => {
                        node.check_bytes_key(&p.key)?;
                        node.check_value(&p.value)?;
                    }
                    TxnOp::DeleteRange(d) => {
                        if !d.key.is_empty() || d.range_end.is_empty() {
                            node.check_bytes_key(&d.key)?;
                        }
                    }
                    TxnOp::Range(r) => node.check_range(r)?,
                    TxnOp::Txn(t) => each(node, t)?,
                }
            }
            Ok(())
        }
        each(self, t)?;
        if let Some(k) = t.duplicate_key() {
            return Err(Error::Invalid(format!(
                "the key {:?} is written twice in one branch of the transaction (put twice, or put and deleted); write it once",
                String::from_utf8_lossy(&k)
            )));
        }
        Ok(())
    }
}

/// How often the leader considers compacting history by retention.
const RETENTION_TICK: Duration = Duration::from_secs(5);

impl Node {
    /// Compacts history by retention while this node leads: to the newest
    /// revision that is at least `retention` old (by the leader's own
    /// samples of its applied revision, so a new leader starts counting
    /// afresh) and to at most `max_revisions` revisions behind the applied
    /// one (0: no bound by count). Runs until the node shuts down; a
    /// compaction that fails is retried at the next tick.
    pub async fn run_retention(self, retention: Duration, max_revisions: u64) {
        let mut samples: std::collections::VecDeque<(std::time::Instant, u64)> =
            std::collections::VecDeque::new();
        loop {
            tokio::time::sleep(RETENTION_TICK).await;
            if self.is_shutting_down() {
                return;
            }
            if !self.is_leader() {
                samples.clear();
                continue;
            }
            let now = std::time::Instant::now();
            let applied = self.applied_revision();
            samples.push_back((now, applied));
            let mut by_time = 0;
            while let Some(&(at, rev)) = samples.front() {
                if now.duration_since(at) < retention {
                    break;
                }
                by_time = rev;
                samples.pop_front();
            }
            // Keep the newest sample that is old enough as the next start.
            if by_time > 0 {
                samples.push_front((now - retention, by_time));
            }
            let by_count = if max_revisions > 0 {
                applied.saturating_sub(max_revisions)
            } else {
                0
            };
            let target = by_time.max(by_count);
            let current = self.inner.reader.compact_revision();
            if target <= current {
                continue;
            }
            // Not for every few revisions: wait for a step worth an entry.
            let step = (max_revisions / 10).clamp(1, 10_000);
            if target - current < step && by_time <= current {
                continue;
            }
            match self.compact(target, None).await {
                Ok(point) => ::log::info!("compacted history to revision {point} (retention)"),
                Err(Error::Apply(ApplyError::Compacted { .. })) => {}
                Err(e) => {
                    ::log::warn!("compacting history to revision {target} failed, will retry: {e}")
                }
            }
        }
    }
}
