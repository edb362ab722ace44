//! Leases on the node: grant, keep-alive, revoke, time-to-live, list, and
//! the leader's lease clock with its expiry loop.
//!
//! ## The lease clock
//!
//! A lease's expiry is a point on one replicated clock, the *lease clock*
//! (milliseconds), not on any member's wall clock. Only a leader advances
//! it: it stamps its current reading into every lease entry it proposes
//! (grant, keep-alive, revoke, expiry, checkpoint), and every member keeps
//! the largest reading it has applied (`lease_clock` in `sm_meta`). A
//! leader reads the clock as `base + (time since it took the clock)`, with
//! its monotonic clock; it takes the clock once per term, after it has
//! applied every entry of earlier terms (a ReadIndex round), as `base` =
//! the clock of the last applied lease entry plus the time since this
//! member applied that entry.
//!
//! **Safety** (a lease never ends before its TTL has passed since the last
//! acknowledged keep-alive): a keep-alive is acknowledged only once its
//! entry, stamped `c`, is committed, and sets the expiry to `c + TTL`; the
//! leader that stamped it reached `c` no earlier than when it received the
//! keep-alive. Any later leader has that entry and takes the clock no
//! higher than the real time that passed since: an entry is applied after
//! it was written, so "the clock of the last applied entry plus the time
//! since it was applied" never runs ahead of real time elapsed. Expiry is
//! itself an entry, applied only to leases whose expiry its stamp has
//! passed, so a deposed leader's late expiry cannot end a lease that was
//! renewed meanwhile. (Like etcd's, this assumes the members' monotonic
//! clocks run at nearly the same rate; they need not agree on the time.)
//!
//! **Liveness** (no lease lives forever under changing leaders): a new
//! leader does not restart leases at their full TTL, it goes on from the
//! replicated clock. When no lease entry is written for
//! `lease.checkpoint_interval`, the leader writes a checkpoint entry, so the
//! clock a new leader finds is at most that old when the old leader goes.
//! A lease whose keep-alives stopped therefore ends at most
//! `TTL + lease.check_interval + commit` after its last keep-alive while one
//! leader stays, and each leader change can add at most the time from the
//! last checkpoint before it until the new leader applies it (at most
//! `lease.checkpoint_interval` plus the time without a leader).

use std::time::Duration;
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;

use super::Error;
use super::Node;
use super::ReadConsistency;
use crate::raft::kv::ApplyError;
use crate::raft::types::Command;
use crate::raft::types::LeaseAnswer;
use crate::raft::types::LeaseOp;
use crate::store::MAX_TTL_SECS;

/// Most leases one expiry entry ends.
const MAX_EXPIRE_PER_ENTRY: usize = 1000;
/// Most keep-alives one keep-alive entry carries.
const MAX_KEEP_ALIVE_BATCH: usize = 4096;
/// Keep-alive entries proposed and not yet answered, at most.
const KEEP_ALIVE_ENTRIES_IN_FLIGHT: usize = 8;

/// A keep-alive waiting for its entry, and where its answer goes.
type Pending = (
    u64,
    tokio::sync::oneshot::Sender<Result<crate::raft::types::CommandResult, Error>>,
);

/// The queue of keep-alives the leader gathers into entries.
pub(super) type KeepAliveQueue = tokio::sync::mpsc::Sender<Pending>;

/// How leases are run, from `[lease]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often the leader looks for expired leases.
    pub check_interval: Duration,
    /// The longest the leader goes without a lease entry while leases exist.
    pub checkpoint_interval: Duration,
    /// The shortest TTL granted, in seconds (shorter requests get it).
    pub min_ttl: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            check_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_millis(500),
            min_ttl: 1,
        }
    }
}

/// The leader's reading of the lease clock: `base` at `at`, for `term`.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeaderClock {
    term: u64,
    base: u64,
    at: Instant,
}

impl LeaderClock {
    fn now(&self) -> u64 {
        self.base
            .saturating_add(u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// What a grant or a revoke did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOutcome {
    pub lease: LeaseAnswer,
    /// The revision of the entry.
    pub revision: u64,
    /// Keys deleted (a revoke).
    pub deleted: u32,
    /// The kept answer of an earlier request with the same request id.
    pub repeated: bool,
}

/// A lease's remaining time as a member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    pub id: u64,
    /// Seconds left (rounded down, as etcd answers).
    pub ttl: i64,
    /// Milliseconds left.
    pub remaining_ms: u64,
    /// The TTL granted, in seconds.
    pub granted_ttl: u64,
    /// The keys attached, when asked for.
    pub keys: Vec<Vec<u8>>,
}

impl Node {
    /// The lease settings.
    pub fn lease_settings(&self) -> Settings {
        self.inner.lease
    }

    /// The lease clock on this node as leader (see the module docs); takes
    /// it first when this term has no reading yet. `NotLeader` elsewhere.
    pub(super) async fn leader_lease_clock(&self) -> Result<u64, Error> {
        let term = {
            let watch = self.inner.raft.metrics();
            let m = watch.borrow_watched();
            if m.state != openraft::ServerState::Leader || m.current_leader != Some(self.inner.id) {
                return Err(Error::NotLeader(self.leader()));
            }
            m.current_term
        };
        let mut clock = self.inner.lease_clock.lock().await;
        if let Some(c) = clock.as_ref().filter(|c| c.term == term) {
            return Ok(c.now());
        }
        // Every entry of earlier terms applied: the clock they carry is in.
        self.leader_read_index(ReadConsistency::Linearizable)
            .await?;
        let still = {
            let watch = self.inner.raft.metrics();
            let m = watch.borrow_watched();
            m.current_term == term && m.state == openraft::ServerState::Leader
        };
        if !still {
            return Err(Error::NotLeader(self.leader()));
        }
        let c = LeaderClock {
            term,
            base: self.inner.reader.lease_clock(),
            at: Instant::now(),
        };
        ::log::info!(
            "node {} leads term {term}: lease clock goes on from {} ms ({} leases)",
            self.inner.id,
            c.base,
            self.inner.reader.leases().len()
        );
        *clock = Some(c);
        Ok(c.base)
    }

    /// The lease clock as this member knows it: the leader's own reading
    /// on the leader, else the estimate from the last applied lease entry.
    async fn lease_clock_here(&self) -> u64 {
        if let Some(c) = self.inner.lease_clock.lock().await.as_ref() {
            if self.is_leader() && self.inner.raft.metrics().borrow_watched().current_term == c.term
            {
                return c.now();
            }
        }
        self.inner.reader.lease_clock()
    }

    fn lease_answer(r: crate::raft::types::CommandResult) -> Result<LeaseOutcome, Error> {
        if let Some(e) = r.error {
            return Err(Error::Apply(e));
        }
        let (revision, deleted, repeated) = (r.revision, r.count, r.repeated);
        r.lease
            .map(|lease| LeaseOutcome {
                lease,
                revision,
                deleted,
                repeated,
            })
            .ok_or_else(|| {
                Error::Internal(
                    "the state machine answered a lease operation without the lease".into(),
                )
            })
    }

    /// Grants a lease of `ttl` seconds (raised to `lease.min_ttl`); `id` 0
    /// lets the cluster choose. Answers the lease and the revision.
    pub async fn lease_grant(
        &self,
        id: u64,
        ttl: u64,
        request_id: Option<Vec<u8>>,
    ) -> Result<LeaseOutcome, Error> {
        if ttl > MAX_TTL_SECS {
            return Err(Error::Invalid(format!(
                "a lease TTL of {ttl} s is too large; the most is {MAX_TTL_SECS} s"
            )));
        }
        if i64::try_from(id).is_err() {
            return Err(Error::Invalid(format!(
                "lease id {id} is out of range: ids are positive 64-bit signed integers"
            )));
        }
        let ttl = ttl.max(self.inner.lease.min_ttl);
        let cmd = Command::Lease {
            clock_ms: 0,
            op: LeaseOp::Grant { id, ttl },
        };
        Self::lease_answer(self.write_with_id(cmd, request_id).await?)
    }

    /// Renews lease `id` to its full TTL; answers the TTL granted. On the
    /// leader the keep-alive joins the next keep-alive entry; a follower
    /// forwards it to the leader, where it does the same.
    pub async fn lease_keep_alive(&self, id: u64) -> Result<LeaseAnswer, Error> {
        let cmd = Command::Lease {
            clock_ms: 0,
            op: LeaseOp::KeepAlive { id },
        };
        let r = if self.is_leader() {
            self.check_serving()?;
            match self.keep_alive_batched(id).await {
                Err(Error::NotLeader(_)) => self.write(cmd).await,
                other => other,
            }
        } else {
            self.write(cmd).await
        };
        if r.as_ref().is_ok_and(|r| r.error.is_none()) {
            self.inner.metrics.lease_keep_alive();
        }
        Self::lease_answer(r?).map(|o| o.lease)
    }

    /// Ends lease `id` now and deletes its keys.
    pub async fn lease_revoke(
        &self,
        id: u64,
        request_id: Option<Vec<u8>>,
    ) -> Result<LeaseOutcome, Error> {
        let cmd = Command::Lease {
            clock_ms: 0,
            op: LeaseOp::Revoke { id },
        };
        Self::lease_answer(self.write_with_id(cmd, request_id).await?)
    }

    /// How long lease `id` has left, read at `consistency` (with its keys
    /// when `keys`).
    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
        consistency: ReadConsistency,
    ) -> Result<TimeToLive, Error> {
        self.check_serving()?;
        self.linearize(consistency).await?;
        let Some(info) = self.inner.reader.lease(id) else {
            return Err(Error::Apply(ApplyError::LeaseNotFound { lease: id }));
        };
        let now = self.lease_clock_here().await;
        let remaining_ms = info.expires_at.saturating_sub(now);
        let keys = if keys {
            self.inner
                .reader
                .lease_keys(id)
                .await
                .map_err(|e| self.storage_error(e))?
        } else {
            Vec::new()
        };
        Ok(TimeToLive {
            id,
            ttl: i64::try_from(remaining_ms / 1000).unwrap_or(i64::MAX),
            remaining_ms,
            granted_ttl: info.ttl,
            keys,
        })
    }

    /// Every lease, by id, read at `consistency`.
    pub async fn lease_list(&self, consistency: ReadConsistency) -> Result<Vec<u64>, Error> {
        self.check_serving()?;
        self.linearize(consistency).await?;
        Ok(self
            .inner
            .reader
            .leases()
            .all()
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Renews lease `id` in this leader's next keep-alive entry: every
    /// keep-alive that arrives while earlier entries are being committed
    /// goes into one entry, up to [`MAX_KEEP_ALIVE_BATCH`], with at most
    /// [`KEEP_ALIVE_ENTRIES_IN_FLIGHT`] entries proposed at once. The
    /// answer is the one a keep-alive entry of its own would have had.
    pub(super) async fn keep_alive_batched(
        &self,
        id: u64,
    ) -> Result<crate::raft::types::CommandResult, Error> {
        let queue = self
            .inner
            .keep_alives
            .get_or_init(|| self.start_keep_alive_batcher())
            .clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.send((id, tx)).await.map_err(|_| {
            Error::Unavailable("the node is shutting down; send the keep-alive again".into())
        })?;
        rx.await.map_err(|_| {
            Error::Unavailable("the node is shutting down; send the keep-alive again".into())
        })?
    }

    /// The task that gathers keep-alives into entries. It holds the node
    /// only while it proposes, so it ends when the node is dropped.
    fn start_keep_alive_batcher(&self) -> KeepAliveQueue {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(MAX_KEEP_ALIVE_BATCH * 4);
        let weak = std::sync::Arc::downgrade(&self.inner);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(KEEP_ALIVE_ENTRIES_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < MAX_KEEP_ALIVE_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                let node = Node { inner };
                tokio::spawn(async move {
                    let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
                    let cmd = Command::Lease {
                        clock_ms: 0,
                        op: LeaseOp::KeepAliveMany { ids },
                    };
                    let r = node.submit(cmd).await;
                    for (id, answer) in batch {
                        let one = r.clone().map(|r| {
                            let mut single = crate::raft::types::CommandResult {
                                revision: r.revision,
                                ..Default::default()
                            };
                            match r.renewed.iter().find(|l| l.id == id) {
                                Some(l) => single.lease = Some(l.clone()),
                                None => {
                                    single.error = Some(ApplyError::LeaseNotFound { lease: id })
                                }
                            }
                            single
                        });
                        let _ = answer.send(one);
                    }
                    drop(slot);
                });
            }
        });
        tx
    }

    /// Leases this member holds.
    pub fn lease_count(&self) -> usize {
        self.inner.reader.leases().len()
    }

    /// While this node leads: ends expired leases (through the log) and
    /// writes a checkpoint of the lease clock when no lease entry was
    /// written for `lease.checkpoint_interval`. Runs until shutdown.
    pub async fn run_leases(self) {
        let settings = self.inner.lease;
        let checkpoint_ms = u64::try_from(settings.checkpoint_interval.as_millis()).unwrap_or(500);
        let mut last_failure: Option<Instant> = None;
        loop {
            tokio::time::sleep(settings.check_interval).await;
            if self.is_shutting_down() {
                return;
            }
            if !self.is_leader() {
                continue;
            }
            let Ok(clock) = self.leader_lease_clock().await else {
                continue;
            };
            let (expired, any) = {
                let table = self.inner.reader.leases();
                (
                    table.expired(clock, MAX_EXPIRE_PER_ENTRY),
                    !table.is_empty(),
                )
            };
            let op = if !expired.is_empty() {
                LeaseOp::Expire { ids: expired }
            } else if any
                && clock.saturating_sub(self.inner.reader.applied_lease_clock()) >= checkpoint_ms
            {
                LeaseOp::Checkpoint
            } else {
                continue;
            };
            let what = match &op {
                LeaseOp::Expire { ids } => format!("ending {} expired leases", ids.len()),
                _ => "a lease clock checkpoint".to_string(),
            };
            let cmd = Command::Lease { clock_ms: 0, op };
            match self.submit(cmd).await {
                Ok(r) => {
                    if !r.expired.is_empty() {
                        ::log::info!(
                            "leases ended by expiry at revision {}: {} ({} keys deleted)",
                            r.revision,
                            ids_text(&r.expired),
                            r.count
                        );
                    }
                }
                Err(Error::NotLeader(_)) => {}
                Err(e) => {
                    // Once every few seconds at most: a leader without a
                    // quorum fails this every tick.
                    if last_failure.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        ::log::warn!("{what} failed, will retry: {e}");
                        last_failure = Some(Instant::now());
                    }
                }
            }
        }
    }
}

fn ids_text(ids: &[u64]) -> String {
    let mut s = ids
        .iter()
        .take(10)
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > 10 {
        s.push_str(&format!(" and {} more", ids.len() - 10));
    }
    s
}
