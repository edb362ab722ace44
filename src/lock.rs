//! Locks and elections on leases, transactions and watches, as etcd's
//! `v3lock` and `v3election` services build them, on the same [`Node`]
//! calls as every other request (nothing here is a second implementation
//! of a semantics).
//!
//! A contender for `NAME` puts the key `NAME/<lease id in hex>` with its
//! lease, if that key does not exist yet, and takes its `create_revision`
//! as its place in the queue. It holds the lock (or leads the election)
//! once no key under `NAME/` has a smaller create revision: it waits for
//! the deletion of the one just before it, then looks again. So the queue
//! is fair (first come, first served by revision), and a holder whose
//! lease ends loses its key and its place at that revision on every member.
//!
//! The holder's `create_revision` is its **fencing token**: it grows with
//! each new holder, so a resource that remembers the largest token it has
//! seen can refuse a late write from an earlier holder, and a write made
//! in a transaction that compares the lock key's create revision to the
//! token applies only while the lock is still held.

use std::time::Duration;

use crate::node::{Error, Node, ReadConsistency};
use crate::raft::kv::{
    ApplyError, Compare, CompareOp, CompareTarget, DeleteRange, KeyValue, OpResult, Put,
    RangeRequest, SortOrder, SortTarget, Txn, TxnOp, prefix_end,
};
use crate::watch::{Filter, Next};

/// A lock held, or an election led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The lock's (or election's) name.
    pub name: Vec<u8>,
    /// The holder's key: `NAME/<lease id in hex>`.
    pub key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub revision: u64,
    pub lease: u64,
    /// The revision the answer reflects.
    pub header_revision: u64,
}

/// The text of etcd's `ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// The text of etcd's `ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";

fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The key of the contender with `lease` for `name`.
pub fn contender_key(name: &[u8], lease: u64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

fn check(name: &[u8], lease: u64) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Invalid("the name is empty".into()));
    }
    if lease == 0 {
        return Err(Error::Invalid(
            "a lock or a campaign needs a lease (grant one and keep it alive): its key goes when the lease ends".into(),
        ));
    }
    Ok(())
}

/// The oldest contender of `name` (the holder).
fn first(name: &[u8]) -> RangeRequest {
    let p = prefix(name);
    RangeRequest {
        range_end: prefix_end(&p),
        key: p,
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::default()
    }
}

fn kvs(r: Option<&OpResult>) -> &[KeyValue] {
    match r {
        Some(OpResult::Range(r)) => &r.kvs,
        _ => &[],
    }
}

/// Joins the queue of `name` with `lease` (putting `value` when the key is
/// new; `proclaim` also puts it when the key exists with another value);
/// answers the key, its create revision and the holder then.
async fn enqueue(
    node: &Node,
    name: &[u8],
    lease: u64,
    value: &[u8],
    proclaim: bool,
) -> Result<(Vec<u8>, u64, Option<KeyValue>), Error> {
    check(name, lease)?;
    let key = contender_key(name, lease);
    let txn = Txn {
        compare: vec![Compare {
            key: key.clone(),
            range_end: Vec::new(),
            op: CompareOp::Equal,
            target: CompareTarget::CreateRevision(0),
        }],
        success: vec![
            TxnOp::Put(Put {
                key: key.clone(),
                value: value.to_vec(),
                lease,
                ..Put::default()
            }),
            TxnOp::Range(first(name)),
        ],
        failure: vec![
            TxnOp::Range(RangeRequest::key(key.clone())),
            TxnOp::Range(first(name)),
        ],
    };
    // Repeating it is harmless (the key exists then), so no request id.
    let (r, revision, _) = node.txn(txn, None).await?;
    let holder = kvs(r.responses.get(1)).first().cloned();
    if r.succeeded {
        return Ok((key, revision, holder));
    }
    let Some(mine) = kvs(r.responses.first()).first().cloned() else {
        return Err(Error::Internal(
            "the contender key existed but its read came back empty".into(),
        ));
    };
    if proclaim && mine.value != value {
        let held = Held {
            name: name.to_vec(),
            key: key.clone(),
            revision: mine.create_revision,
            lease,
            header_revision: revision,
        };
        proclaim_value(node, &held, value).await?;
    }
    Ok((key, mine.create_revision, holder))
}

/// Waits until no key under `name/` has a create revision below `mine`.
async fn wait_turn(node: &Node, name: &[u8], mine: u64) -> Result<(), Error> {
    let p = prefix(name);
    loop {
        let before = RangeRequest {
            range_end: prefix_end(&p),
            key: p.clone(),
            limit: 1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Create,
            max_create_revision: mine.saturating_sub(1).max(1),
            ..RangeRequest::default()
        };
        let (r, read_at) = node.range(before, ReadConsistency::Linearizable).await?;
        let Some(prev) = r.kvs.into_iter().find(|kv| kv.create_revision < mine) else {
            return Ok(());
        };
        wait_deleted(node, &prev.key, read_at + 1).await?;
    }
}

/// Waits for the deletion of `key` at or after revision `from`.
async fn wait_deleted(node: &Node, key: &[u8], from: u64) -> Result<(), Error> {
    let filter = Filter {
        key: key.to_vec(),
        range_end: Vec::new(),
        no_put: true,
        no_delete: false,
    };
    let mut w = match node.watch(filter, from) {
        Ok(w) => w,
        // Compacted past it meanwhile: look again from now.
        Err(Error::Apply(ApplyError::Compacted { .. })) => return Ok(()),
        Err(e) => return Err(e),
    };
    loop {
        match w.next(Some(Duration::from_secs(60)), 16).await {
            Next::Events(events) if !events.is_empty() => return Ok(()),
            Next::Events(_) | Next::Progress(_) => {}
            Next::End(crate::watch::End::Compacted { .. }) => return Ok(()),
            Next::End(end) => {
                return Err(Error::Unavailable(format!(
                    "waiting for the lock stopped: {}; try again (on another member if this one is shutting down)",
                    end.reason()
                )));
            }
        }
    }
}

/// Waits until `key` (created at `revision`) is the oldest contender of
/// `name`, then checks it still exists.
async fn acquire(
    node: &Node,
    name: &[u8],
    lease: u64,
    key: Vec<u8>,
    revision: u64,
    holder: Option<KeyValue>,
) -> Result<Held, Error> {
    if holder.as_ref().map(|h| h.create_revision) != Some(revision) {
        wait_turn(node, name, revision).await?;
    }
    // The lease may have ended while waiting; then the key went with it.
    let (r, read_at) = node
        .range(
            RangeRequest::key(key.clone()),
            ReadConsistency::Linearizable,
        )
        .await?;
    if r.kvs.first().map(|kv| kv.create_revision) != Some(revision) {
        return Err(Error::Apply(ApplyError::LeaseNotFound { lease }));
    }
    Ok(Held {
        name: name.to_vec(),
        key,
        revision,
        lease,
        header_revision: read_at,
    })
}

/// Takes the lock `name` for `lease`, waiting for its turn.
pub async fn lock(node: &Node, name: &[u8], lease: u64) -> Result<Held, Error> {
    let (key, revision, holder) = enqueue(node, name, lease, b"", false).await?;
    acquire(node, name, lease, key, revision, holder).await
}

/// Releases a lock (or resigns an election) by deleting its key; answers
/// the revision.
pub async fn unlock(node: &Node, key: &[u8]) -> Result<u64, Error> {
    if key.is_empty() {
        return Err(Error::Invalid("the lock key is empty".into()));
    }
    let txn = Txn::ops(vec![TxnOp::DeleteRange(DeleteRange {
        key: key.to_vec(),
        range_end: Vec::new(),
        prev_kv: false,
    })]);
    let (_, revision, _) = node.txn(txn, None).await?;
    Ok(revision)
}

/// Campaigns in election `name` with `lease`, proposing `value`; answers
/// once this contender leads.
pub async fn campaign(node: &Node, name: &[u8], lease: u64, value: &[u8]) -> Result<Held, Error> {
    let (key, revision, holder) = enqueue(node, name, lease, value, true).await?;
    acquire(node, name, lease, key, revision, holder).await
}

/// The comparison that holds while `leader` still holds its key (the
/// fence of every write it makes as leader).
fn still_holds(leader: &Held) -> Compare {
    Compare {
        key: leader.key.clone(),
        range_end: Vec::new(),
        op: CompareOp::Equal,
        target: CompareTarget::CreateRevision(leader.revision),
    }
}

async fn proclaim_value(node: &Node, leader: &Held, value: &[u8]) -> Result<u64, Error> {
    let txn = Txn {
        compare: vec![still_holds(leader)],
        success: vec![TxnOp::Put(Put {
            key: leader.key.clone(),
            value: value.to_vec(),
            lease: leader.lease,
            ..Put::default()
        })],
        failure: Vec::new(),
    };
    let (r, revision, _) = node.txn(txn, None).await?;
    if !r.succeeded {
        return Err(Error::Precondition(format!(
            "{NOT_LEADER}: the key {} no longer exists at revision {} (its lease ended or it resigned)",
            String::from_utf8_lossy(&leader.key),
            leader.revision
        )));
    }
    Ok(revision)
}

/// The leader of `name` announces `value`; refused when it no longer leads.
pub async fn proclaim(node: &Node, leader: &Held, value: &[u8]) -> Result<u64, Error> {
    proclaim_value(node, leader, value).await
}

/// The leader of `name` resigns (deletes its key if it still leads).
pub async fn resign(node: &Node, leader: &Held) -> Result<u64, Error> {
    let txn = Txn {
        compare: vec![still_holds(leader)],
        success: vec![TxnOp::DeleteRange(DeleteRange {
            key: leader.key.clone(),
            range_end: Vec::new(),
            prev_kv: false,
        })],
        failure: Vec::new(),
    };
    let (_, revision, _) = node.txn(txn, None).await?;
    Ok(revision)
}

/// The current leader of `name` (its key and value), with the revision read.
pub async fn leader(
    node: &Node,
    name: &[u8],
    consistency: ReadConsistency,
) -> Result<(KeyValue, u64), Error> {
    if name.is_empty() {
        return Err(Error::Invalid("the name is empty".into()));
    }
    let (r, revision) = node.range(first(name), consistency).await?;
    match r.kvs.into_iter().next() {
        Some(kv) => Ok((kv, revision)),
        None => Err(Error::Precondition(format!(
            "{NO_LEADER}: nobody campaigns in {:?}",
            String::from_utf8_lossy(name)
        ))),
    }
}

/// Follows the leaders of election `name`: each call to
/// [`Observer::next`] answers the leader's key as it changes (a new leader,
/// or a proclaimed value), starting with the current one.
pub struct Observer {
    node: Node,
    name: Vec<u8>,
    last: Option<KeyValue>,
    watcher: Option<crate::watch::Watcher>,
}

impl Observer {
    pub fn new(node: &Node, name: &[u8]) -> Result<Observer, Error> {
        if name.is_empty() {
            return Err(Error::Invalid("the name is empty".into()));
        }
        Ok(Observer {
            node: node.clone(),
            name: name.to_vec(),
            last: None,
            watcher: None,
        })
    }

    /// The next leader (or leader value) different from the last answered;
    /// `None` when `quiet` passes without one (so a stream can show it is
    /// alive).
    pub async fn next(&mut self, quiet: Duration) -> Result<Option<KeyValue>, Error> {
        loop {
            let current = match leader(&self.node, &self.name, ReadConsistency::Linearizable).await
            {
                Ok((kv, revision)) => Some((kv, revision)),
                Err(Error::Precondition(_)) => None,
                Err(e) => return Err(e),
            };
            let from = match &current {
                Some((kv, revision)) => {
                    let changed = self
                        .last
                        .as_ref()
                        .is_none_or(|l| l.key != kv.key || l.mod_revision != kv.mod_revision);
                    if changed {
                        self.last = Some(kv.clone());
                        self.watcher = None;
                        return Ok(Some(kv.clone()));
                    }
                    revision + 1
                }
                None => self.node.applied_revision() + 1,
            };
            // Wait for any change under the name, then look again.
            if self.watcher.is_none() {
                let p = prefix(&self.name);
                let filter = Filter {
                    range_end: prefix_end(&p),
                    key: p,
                    no_put: false,
                    no_delete: false,
                };
                self.watcher = Some(self.node.watch(filter, from)?);
            }
            let Some(w) = self.watcher.as_mut() else {
                continue;
            };
            match w.next(Some(quiet), 64).await {
                Next::Events(_) => {}
                Next::Progress(_) => return Ok(None),
                Next::End(end) => {
                    self.watcher = None;
                    if !matches!(end, crate::watch::End::Compacted { .. }) {
                        return Err(Error::Unavailable(format!(
                            "observing stopped: {}; observe again (on another member if this one is shutting down)",
                            end.reason()
                        )));
                    }
                }
            }
        }
    }
}
