//! The key-value state machine: openraft's `RaftStateMachine` on the `data`
//! and `sm_meta` column families, plus the read API the server calls.
//!
//! The data lives in RocksDB, not in a map in memory, so data sets larger
//! than RAM work and a restart reloads nothing. Each batch of applied entries
//! is one RocksDB write batch carrying the data changes, `last_applied` and
//! the last membership, so the state machine on disk is always exactly the
//! result of applying a prefix of the log. The batch is not synced: the log
//! entries it came from are durable and are applied again after a crash.
//! Responses are sent only after the batch is written.
//!
//! No RocksDB call made for openraft or for an async caller waits on a
//! runtime worker: applies and point reads run there only as long as they
//! need no waiting ([`super::Wait`]), and go to the blocking pool otherwise;
//! listings and the rest always run on the blocking pool.
//!
//! ## Data generations
//!
//! Every data key is stored as `generation (u64, big-endian) ++ user key`;
//! the current generation is a key in `sm_meta`. Installing a snapshot writes
//! the snapshot's keys under the next generation (SST files, ingested
//! atomically), then flips the generation pointer together with `last_applied` and the
//! membership in one synced write, and only then deletes the old generation
//! with a range tombstone. A crash at any point leaves either the old state
//! (pointer not flipped; the half-written generation is deleted at the next
//! open) or the new one (pointer flipped; the old generation is deleted at
//! the next open), never a mix. Reads take the generation under a read lock,
//! so they never observe a generation being deleted.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::mpsc;

use futures_util::Stream;
use futures_util::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use rocksdb::DB;
use rocksdb::ReadOptions;
use rocksdb::WriteBatch;

use super::CF_DATA;
use super::CF_SM_META;
use super::Error;
use super::Wait;
use super::cf;
use super::lease;
use super::lease::LeaseInfo;
use super::lease::LeaseTable;
use super::log::decode;
use super::log::encode;
use super::mvcc;
use super::mvcc::CF_HISTORY;
use super::mvcc::RangeCollector;
use super::off_runtime;
use super::snapshot;
use super::snapshot::SnapshotFile;
use super::snapshot::SnapshotReceiver;
use crate::raft::kv::ApplyError;
use crate::raft::kv::Compare;
use crate::raft::kv::OpResult;
use crate::raft::kv::Put;
use crate::raft::kv::RangeRequest;
use crate::raft::kv::RangeResult;
use crate::raft::kv::Txn;
use crate::raft::kv::TxnOp;
use crate::raft::kv::TxnResult;
use crate::raft::kv::in_range;
use crate::raft::types::Command;
use crate::raft::types::CommandResult;
use crate::raft::types::LeaseAnswer;
use crate::raft::types::LeaseOp;
use crate::raft::types::TypeConfig;

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const KEY_GENERATION: &[u8] = b"data_generation";
pub(crate) const KEY_COMPACT_REVISION: &[u8] = b"compact_revision";
pub(crate) const KEY_ID_COUNT: &[u8] = b"request_id_count";
pub(crate) const KEY_ID_SECOND: &[u8] = b"request_id_second";
pub(crate) const KEY_LEASE_CLOCK: &[u8] = b"lease_clock";
/// The layout of the state machine (absent: before history was kept).
const KEY_FORMAT: &[u8] = b"format";
const FORMAT_HISTORY: u64 = 2;

/// Most entries applied in one write batch. A longer apply (a restart
/// replaying the log, a follower catching up) is written in several batches,
/// each the result of a longer prefix of the log.
const APPLY_CHUNK: usize = 1024;

/// Leading byte of every stored value: the encoding below.
const VALUE_FORMAT_V1: u8 = 1;
const FLAG_EXPIRY: u8 = 1;
const FLAG_LEASE: u8 = 2;

/// A key's value with the metadata etcd keeps for it.
///
/// Revisions are Raft log indexes: `create_revision` is the entry that
/// created the key (since its last deletion), `mod_revision` the entry that
/// last changed it, `version` counts changes since creation (1 for a new key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredValue {
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to; 0 for none.
    pub lease: u64,
    /// Expiry as Unix time in milliseconds; not set by any command yet.
    pub expires_at_ms: Option<u64>,
}

impl StoredValue {
    /// Bytes [`StoredValue::encode`] adds to the value at most.
    pub(crate) const MAX_OVERHEAD: usize = 42;

    /// `[format=1][flags][create u64][mod u64][version u64][expiry u64 if flag][lease u64 if flag][value]`,
    /// integers little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MAX_OVERHEAD + self.value.len());
        out.push(VALUE_FORMAT_V1);
        let mut flags = 0;
        if self.expires_at_ms.is_some() {
            flags |= FLAG_EXPIRY;
        }
        if self.lease != 0 {
            flags |= FLAG_LEASE;
        }
        out.push(flags);
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        if let Some(e) = self.expires_at_ms {
            out.extend_from_slice(&e.to_le_bytes());
        }
        if self.lease != 0 {
            out.extend_from_slice(&self.lease.to_le_bytes());
        }
        out.extend_from_slice(&self.value);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("stored value: {what}"));
        let (&format, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        if format != VALUE_FORMAT_V1 {
            return Err(corrupt(&format!("unknown format version {format}")));
        }
        let (&flags, mut rest) = rest.split_first().ok_or_else(|| corrupt("no flags"))?;
        if flags & !(FLAG_EXPIRY | FLAG_LEASE) != 0 {
            return Err(corrupt(&format!("unknown flags {flags:#04x}")));
        }
        let mut next_u64 = || -> Result<u64, Error> {
            let (head, tail) = rest
                .split_at_checked(8)
                .ok_or_else(|| corrupt("truncated"))?;
            rest = tail;
            let mut b = [0u8; 8];
            b.copy_from_slice(head);
            Ok(u64::from_le_bytes(b))
        };
        let create_revision = next_u64()?;
        let mod_revision = next_u64()?;
        let version = next_u64()?;
        let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
            Some(next_u64()?)
        } else {
            None
        };
        let lease = if flags & FLAG_LEASE != 0 {
            next_u64()?
        } else {
            0
        };
        Ok(StoredValue {
            value: rest.to_vec(),
            create_revision,
            mod_revision,
            version,
            lease,
            expires_at_ms,
        })
    }
}

/// State shared by the state machine, its readers and snapshot builders.
pub(crate) struct Shared {
    pub(crate) db: Arc<DB>,
    /// The current data generation; held for reading during every read.
    pub(crate) generation: RwLock<u64>,
    last_applied: Mutex<Option<LogIdOf<TypeConfig>>>,
    /// Replicated state the apply path keeps in `sm_meta` besides the data:
    /// the compaction point and the request-id table's bookkeeping.
    pub(crate) applied: Mutex<AppliedMeta>,
    pub(crate) snapshot_dir: PathBuf,
    /// Options of the `data` column family, for writing SST files to ingest.
    pub(crate) sst_options: rocksdb::Options,
    /// Serializes renames and clean-ups in `snapshot_dir`.
    pub(crate) snapshot_dir_lock: Mutex<()>,
    /// Wakes the background compaction of history.
    compactor: Mutex<Option<mpsc::Sender<()>>>,
    /// Where the table holds each request id (see [`mvcc::IdIndex`]).
    pub(crate) ids: Mutex<mvcc::IdIndex>,
    /// This member's watchers: each written batch's changes go to them.
    pub(crate) hub: Arc<crate::watch::Hub>,
    /// Every lease (see [`lease`]); changed only after a batch is written.
    pub(crate) leases: Mutex<LeaseTable>,
    /// The lease clock of the last applied entry that moved it, and when
    /// this member applied it (see [`StateReader::lease_clock`]).
    pub(crate) lease_clock_seen: Mutex<(u64, std::time::Instant)>,
    /// Leases ended by expiry since this process started.
    leases_expired: std::sync::atomic::AtomicU64,
}

/// The replicated bookkeeping kept in `sm_meta` next to `last_applied`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppliedMeta {
    /// Reads below this revision are refused.
    pub(crate) compact_revision: u64,
    /// Request ids held.
    pub(crate) id_count: u64,
    /// The log-time second of the last request-id expiry.
    pub(crate) id_second: u64,
    /// The largest lease clock of an applied entry (see [`lease`]).
    pub(crate) lease_clock: u64,
}

impl AppliedMeta {
    pub(crate) fn read(db: &DB, view: Option<&rocksdb::Snapshot<'_>>) -> Result<Self, Error> {
        let sm_meta = cf(db, CF_SM_META)?;
        let get = |key: &[u8]| -> Result<u64, Error> {
            let found = match view {
                Some(v) => v.get_cf(sm_meta, key)?,
                None => db.get_cf(sm_meta, key)?,
            };
            found.map_or(Ok(0), |b| decode_u64(&b))
        };
        Ok(AppliedMeta {
            compact_revision: get(KEY_COMPACT_REVISION)?,
            id_count: get(KEY_ID_COUNT)?,
            id_second: get(KEY_ID_SECOND)?,
            lease_clock: get(KEY_LEASE_CLOCK)?,
        })
    }

    pub(crate) fn write(&self, batch: &mut WriteBatch, sm_meta: &rocksdb::ColumnFamily) {
        batch.put_cf(
            sm_meta,
            KEY_COMPACT_REVISION,
            self.compact_revision.to_be_bytes(),
        );
        batch.put_cf(sm_meta, KEY_ID_COUNT, self.id_count.to_be_bytes());
        batch.put_cf(sm_meta, KEY_ID_SECOND, self.id_second.to_be_bytes());
        batch.put_cf(sm_meta, KEY_LEASE_CLOCK, self.lease_clock.to_be_bytes());
    }

    /// The `sm_meta` records a snapshot carries.
    pub(crate) fn records(&self) -> [(&'static [u8], [u8; 8]); 4] {
        [
            (KEY_COMPACT_REVISION, self.compact_revision.to_be_bytes()),
            (KEY_ID_COUNT, self.id_count.to_be_bytes()),
            (KEY_ID_SECOND, self.id_second.to_be_bytes()),
            (KEY_LEASE_CLOCK, self.lease_clock.to_be_bytes()),
        ]
    }

    /// The inverse of [`AppliedMeta::records`]; unknown keys are refused.
    pub(crate) fn set_record(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let v = decode_u64(value)?;
        match key {
            KEY_COMPACT_REVISION => self.compact_revision = v,
            KEY_ID_COUNT => self.id_count = v,
            KEY_ID_SECOND => self.id_second = v,
            KEY_LEASE_CLOCK => self.lease_clock = v,
            other => {
                return Err(Error::Corrupt(format!(
                    "unknown state-machine record {:?} in snapshot",
                    String::from_utf8_lossy(other)
                )));
            }
        }
        Ok(())
    }
}

impl Shared {
    pub(crate) fn generation(&self) -> Result<u64, Error> {
        self.generation
            .read()
            .map(|g| *g)
            .map_err(|_| Error::Poisoned("generation lock poisoned".into()))
    }

    pub(crate) fn set_last_applied(&self, log_id: Option<LogIdOf<TypeConfig>>) {
        if let Ok(mut l) = self.last_applied.lock() {
            *l = log_id;
        }
    }

    pub(crate) fn applied_meta(&self) -> AppliedMeta {
        self.applied.lock().map(|m| *m).unwrap_or_default()
    }

    pub(crate) fn set_applied_meta(&self, meta: AppliedMeta) {
        let compacted = match self.applied.lock() {
            Ok(mut m) => {
                let moved = m.compact_revision != meta.compact_revision;
                *m = meta;
                moved
            }
            Err(_) => false,
        };
        if compacted {
            self.wake_compactor();
        }
    }

    pub(crate) fn wake_compactor(&self) {
        if let Ok(c) = self.compactor.lock() {
            if let Some(tx) = c.as_ref() {
                let _ = tx.send(());
            }
        }
    }
}

/// A page of keys with their values, and whether more follow.
pub type Page = (Vec<(Vec<u8>, StoredValue)>, bool);

/// The key of `key` in generation `generation` of the `data` column family.
pub(crate) fn data_key(generation: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl Chunk {
    /// Collects a change for the watchers (when anyone watches); a later
    /// change of the same key in the same revision replaces it, as in the
    /// change index.
    fn event(&mut self, revision: u64, seq: u32, key: &[u8], v: Option<&StoredValue>) {
        if !self.watching {
            return;
        }
        let event = match v {
            Some(v) => crate::watch::Event {
                revision,
                kind: crate::watch::EventKind::Put,
                kv: mvcc::key_value(key.to_vec(), v.clone(), false),
            },
            None => crate::watch::Event::deleted(key.to_vec(), revision),
        };
        self.events.insert((revision, seq), event);
    }
}

/// A request id a chunk adds, with the id index's hash of it (the only
/// part hashed again).
#[derive(PartialEq, Eq)]
struct NewId {
    hash: u64,
    id: Vec<u8>,
}

impl std::hash::Hash for NewId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A chunk of entries being applied: its write batch so far, the keys it
/// changed (`None` once deleted), the request ids it applied, how it reads
/// and the data generation it writes.
struct Chunk {
    batch: WriteBatch,
    pending: HashMap<Vec<u8>, Option<Current>>,
    /// Ids this batch adds to the table (with the index's hash of each),
    /// their times and results.
    ids: HashMap<NewId, (u64, CommandResult), mvcc::Unhashed>,
    /// Ids this batch removes from the table, with their times.
    expired: Vec<(Vec<u8>, u64)>,
    /// A buffer for the keys of id records.
    id_key: Vec<u8>,
    /// Whether anyone watched when the chunk began: then its changes are
    /// collected for the watchers, by revision and position.
    watching: bool,
    events: BTreeMap<(u64, u32), crate::watch::Event>,
    /// Leases this batch granted, renewed (`Some`) or ended (`None`).
    leases: HashMap<u64, Option<LeaseInfo>>,
    meta: AppliedMeta,
    read: ReadOptions,
    wait: Wait,
    generation: u64,
    /// Bytes of values written so far, to bound the batch.
    bytes: usize,
}

/// What a write needs to know of a key's current version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    create_revision: u64,
    version: u64,
    lease: u64,
}

/// Most value bytes one write batch holds, beyond its first entry.
const APPLY_CHUNK_BYTES: usize = 64 << 20;

/// Why a transaction changed nothing: a decided outcome, or a storage error.
enum TxnFail {
    Apply(ApplyError),
    Store(Error),
}

impl From<Error> for TxnFail {
    fn from(e: Error) -> Self {
        TxnFail::Store(e)
    }
}

/// A transaction's view: what is stored, under the writes of its earlier
/// operations.
struct TxnView<'a> {
    sm: &'a StateMachine,
    chunk: &'a Chunk,
    overlay: BTreeMap<Vec<u8>, Option<StoredValue>>,
    /// The revision the transaction is applied at.
    index: u64,
}

impl TxnView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<StoredValue>, Error> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        self.sm.stored(self.chunk, key)
    }

    /// The current keys of `[key, range_end)`, in key order.
    fn range(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<(Vec<u8>, StoredValue)>, Error> {
        if range_end.is_empty() {
            return Ok(self
                .get(key)?
                .map(|v| (key.to_vec(), v))
                .into_iter()
                .collect());
        }
        let db = &self.sm.shared.db;
        let generation = self.chunk.generation;
        let mut opts = self.chunk.wait.read_options();
        opts.set_iterate_upper_bound(if range_end == [0] {
            data_key(generation.saturating_add(1), b"")
        } else {
            data_key(generation, range_end)
        });
        let mut it = db.raw_iterator_cf_opt(cf(db, CF_DATA)?, opts);
        it.seek(data_key(generation, key));
        let mut found = BTreeMap::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            found.insert(k[8..].to_vec(), StoredValue::decode(v)?);
            it.next();
        }
        it.status()?;
        for (k, v) in &self.overlay {
            if in_range(k, key, range_end) {
                match v {
                    Some(v) => found.insert(k.clone(), v.clone()),
                    None => found.remove(k),
                };
            }
        }
        Ok(found.into_iter().collect())
    }

    fn holds(&self, c: &Compare) -> Result<bool, Error> {
        if c.range_end.is_empty() {
            let kv = self
                .get(&c.key)?
                .map(|v| mvcc::key_value(c.key.clone(), v, false));
            return Ok(c.holds(kv.as_ref()));
        }
        let kvs = self.range(&c.key, &c.range_end)?;
        if kvs.is_empty() {
            return Ok(c.holds(None));
        }
        Ok(kvs
            .into_iter()
            .all(|(k, v)| c.holds(Some(&mvcc::key_value(k, v, false)))))
    }

    fn eval(&mut self, txn: &Txn) -> Result<TxnResult, TxnFail> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !self.holds(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put(p) => self.put(p)?,
                TxnOp::DeleteRange(d) => {
                    let gone = self.range(&d.key, &d.range_end)?;
                    let deleted = gone.len() as u64;
                    let mut prev_kvs = Vec::new();
                    for (k, v) in gone {
                        self.overlay.insert(k.clone(), None);
                        if d.prev_kv {
                            prev_kvs.push(mvcc::key_value(k, v, false));
                        }
                    }
                    OpResult::DeleteRange { deleted, prev_kvs }
                }
                TxnOp::Range(r) => OpResult::Range(self.read(r)?),
                TxnOp::Txn(t) => OpResult::Txn(self.eval(t)?),
            });
        }
        Ok(TxnResult {
            succeeded,
            responses,
        })
    }

    fn put(&mut self, p: &Put) -> Result<OpResult, TxnFail> {
        let prev = self.get(&p.key)?;
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(TxnFail::Apply(ApplyError::KeyNotFound));
        }
        if p.lease != 0 && !p.ignore_lease && self.sm.lease(self.chunk, p.lease).is_none() {
            return Err(TxnFail::Apply(ApplyError::LeaseNotFound { lease: p.lease }));
        }
        let stored = StoredValue {
            value: match (&prev, p.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => p.value.clone(),
            },
            create_revision: prev.as_ref().map_or(self.index, |v| v.create_revision),
            mod_revision: self.index,
            version: prev.as_ref().map_or(1, |v| v.version.saturating_add(1)),
            lease: match (&prev, p.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => p.lease,
            },
            expires_at_ms: None,
        };
        self.overlay.insert(p.key.clone(), Some(stored));
        Ok(OpResult::Put {
            prev_kv: if p.prev_kv {
                prev.map(|v| mvcc::key_value(p.key.clone(), v, false))
            } else {
                None
            },
        })
    }

    fn read(&self, r: &RangeRequest) -> Result<RangeResult, TxnFail> {
        let mut collect = RangeCollector::new(r);
        if r.revision == 0 {
            for (k, v) in self.range(&r.key, &r.range_end)? {
                collect.push(&k, v);
            }
            return Ok(collect.finish());
        }
        let current = self.index.saturating_sub(1);
        if r.revision > current {
            return Err(TxnFail::Apply(ApplyError::FutureRevision { current }));
        }
        if r.revision < self.chunk.meta.compact_revision {
            return Err(TxnFail::Apply(ApplyError::Compacted {
                compact_revision: self.chunk.meta.compact_revision,
            }));
        }
        let db = &self.sm.shared.db;
        let mut it = db.raw_iterator_cf_opt(cf(db, CF_HISTORY)?, self.chunk.wait.read_options());
        mvcc::range_at(&mut it, self.chunk.generation, r, r.revision, &mut collect)?;
        Ok(collect.finish())
    }
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Loads a verified snapshot file into this (new, empty) state machine
    /// and gives it `membership` instead of the members it was taken with.
    pub(crate) fn restore_from(
        &self,
        file: SnapshotFile,
        meta: &SnapshotMetaOf<TypeConfig>,
        membership: &StoredMembershipOf<TypeConfig>,
    ) -> Result<(), Error> {
        snapshot::install(&self.shared, meta, file)?;
        snapshot::set_members(&self.shared, membership)?;
        Ok(())
    }
}

/// Read access to the state machine for the server: point reads, ranges at
/// any retained revision, prefix listings and the applied position. Cheap to
/// clone.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

/// Watchers read history through the reader: the changes since a
/// revision, and a key's version before an event (`prev_kv`).
impl crate::watch::History for StateReader {
    fn changes(
        &self,
        filter: &crate::watch::Filter,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Result<(Vec<crate::watch::Event>, u64), u64>, String> {
        let read = || -> Result<Result<(Vec<crate::watch::Event>, u64), u64>, Error> {
            let guard = self
                .shared
                .generation
                .read()
                .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
            let compact = self.shared.applied_meta().compact_revision;
            if from < compact {
                return Ok(Err(compact));
            }
            Ok(Ok(mvcc::changes(
                &self.shared.db,
                *guard,
                filter,
                from,
                to,
                max,
            )?))
        };
        read().map_err(|e| e.to_string())
    }

    fn get_at(
        &self,
        key: &[u8],
        revision: u64,
    ) -> Result<Option<crate::raft::kv::KeyValue>, String> {
        let read = || -> Result<Option<crate::raft::kv::KeyValue>, Error> {
            let guard = self
                .shared
                .generation
                .read()
                .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
            let db = &self.shared.db;
            let mut it = db.raw_iterator_cf(cf(db, CF_HISTORY)?);
            Ok(mvcc::get_at(&mut it, *guard, key, revision)?
                .map(|v| mvcc::key_value(key.to_vec(), v, false)))
        };
        read().map_err(|e| e.to_string())
    }
}

/// Builds a snapshot file from one RocksDB snapshot of the state machine.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub(crate) fn open(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        sst_options: rocksdb::Options,
    ) -> Result<Self, Error> {
        let sm_meta = cf(&db, CF_SM_META)?;
        let generation = match db.get_pinned_cf(sm_meta, KEY_GENERATION)? {
            Some(b) => decode_u64(&b)?,
            None => 0,
        };
        let last_applied: Option<LogIdOf<TypeConfig>> =
            match db.get_pinned_cf(sm_meta, KEY_LAST_APPLIED)? {
                Some(b) => Some(decode(&b)?),
                None => None,
            };
        drop_other_generations(&db, generation)?;
        snapshot::remove_temp_files(&snapshot_dir)?;
        upgrade(&db, generation, last_applied.as_ref().map(|l| l.index()))?;
        let applied = AppliedMeta::read(&db, None)?;
        let ids = mvcc::IdIndex::load(&db, generation)?;
        let leases = LeaseTable::load(&db, generation)?;
        let shared = Arc::new(Shared {
            db,
            generation: RwLock::new(generation),
            last_applied: Mutex::new(last_applied),
            applied: Mutex::new(applied),
            snapshot_dir,
            sst_options,
            snapshot_dir_lock: Mutex::new(()),
            compactor: Mutex::new(None),
            ids: Mutex::new(ids),
            hub: Arc::new(crate::watch::Hub::new(crate::watch::Limits::default())),
            leases: Mutex::new(leases),
            lease_clock_seen: Mutex::new((applied.lease_clock, std::time::Instant::now())),
            leases_expired: std::sync::atomic::AtomicU64::new(0),
        });
        shared
            .hub
            .reset(last_applied.as_ref().map_or(0, |l| l.index()));
        start_compactor(&shared);
        Ok(StateMachine { shared })
    }

    /// A read handle for the server.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: self.shared.clone(),
        }
    }

    /// Starts receiving a snapshot sent by a peer into a file next to the
    /// others; hand the finished file to `Raft::install_full_snapshot`.
    pub fn snapshot_receiver(&self) -> Result<SnapshotReceiver, Error> {
        SnapshotReceiver::create(&self.shared.snapshot_dir)
    }

    /// Applies a prefix of `entries` (at least one) as one write batch:
    /// their data changes and history, `last_applied`, the last membership
    /// among them and the replicated bookkeeping; returns each applied
    /// entry's result. With [`Wait::Never`] it fails with nothing written
    /// when a read or the write would have to wait.
    ///
    /// An entry that reads more than single keys (a transaction) or expires
    /// request ids gets a batch of its own, so that what it reads is on disk
    /// and what it decides does not depend on where batches begin.
    fn apply_some(
        &self,
        entries: &[EntryOf<TypeConfig>],
        wait: Wait,
    ) -> Result<Vec<CommandResult>, Error> {
        // Apply and install both take `&mut` on the state machine, so the
        // generation cannot change while this batch is built.
        let generation = match wait {
            Wait::Never => *self
                .shared
                .generation
                .try_read()
                .map_err(|_| Error::WouldBlock)?,
            Wait::Allowed => self.shared.generation()?,
        };
        let meta = self.shared.applied_meta();
        let mut chunk = Chunk {
            batch: WriteBatch::default(),
            pending: HashMap::new(),
            ids: HashMap::default(),
            expired: Vec::new(),
            id_key: Vec::new(),
            watching: self.shared.hub.watching(),
            events: BTreeMap::new(),
            leases: HashMap::new(),
            meta,
            read: wait.read_options(),
            wait,
            generation,
            bytes: 0,
        };
        let mut results = Vec::with_capacity(entries.len().min(APPLY_CHUNK));
        let mut last_applied = None;
        let mut membership = None;

        for entry in entries {
            let log_id = entry.log_id();
            let index = log_id.index();
            let alone = match &entry.payload {
                EntryPayload::Normal(command) => self.needs_own_batch(&chunk, command),
                _ => false,
            };
            if alone && !results.is_empty() {
                break;
            }
            if !results.is_empty() && chunk.bytes >= APPLY_CHUNK_BYTES {
                break;
            }
            let result = match &entry.payload {
                EntryPayload::Normal(command) => self.apply_command(&mut chunk, index, command)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembershipOf::<TypeConfig>::new(
                        Some(log_id),
                        m.clone(),
                    ));
                    CommandResult {
                        revision: index,
                        ..CommandResult::default()
                    }
                }
                EntryPayload::Blank => CommandResult {
                    revision: index,
                    ..CommandResult::default()
                },
            };
            last_applied = Some(log_id);
            results.push(result);
            if alone {
                break;
            }
        }

        let Some(last_applied) = last_applied else {
            return Ok(results);
        };
        let db = &self.shared.db;
        let sm_meta = cf(db, CF_SM_META)?;
        let mut batch = chunk.batch;
        batch.put_cf(sm_meta, KEY_LAST_APPLIED, encode(&last_applied)?);
        if let Some(m) = &membership {
            batch.put_cf(sm_meta, KEY_MEMBERSHIP, encode(m)?);
        }
        if chunk.meta != meta {
            chunk.meta.write(&mut batch, sm_meta);
        }
        db.write_opt(batch, &wait.write_options())?;
        if !chunk.ids.is_empty() || !chunk.expired.is_empty() {
            // The index must stay exact (a missing id would be applied
            // twice), so a panic elsewhere while it was held does not stop
            // its updates: each update leaves it whole.
            let mut index = self
                .shared
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, time) in &chunk.expired {
                let h = index.hash(id);
                index.remove(h, *time);
            }
            for (new, (time, _)) in &chunk.ids {
                index.add(new.hash, *time);
            }
        }
        if !chunk.leases.is_empty() {
            let mut table = self
                .shared
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, info) in chunk.leases.drain() {
                match info {
                    Some(info) => table.insert(id, info),
                    None => table.remove(id),
                }
            }
        }
        let expired: usize = results.iter().map(|r| r.expired.len()).sum();
        if expired > 0 {
            self.shared
                .leases_expired
                .fetch_add(expired as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if chunk.meta.lease_clock != meta.lease_clock {
            *self
                .shared
                .lease_clock_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                (chunk.meta.lease_clock, std::time::Instant::now());
        }
        self.shared.set_last_applied(Some(last_applied));
        if chunk.meta != meta {
            self.shared.set_applied_meta(chunk.meta);
        }
        let events = chunk
            .watching
            .then(|| std::mem::take(&mut chunk.events).into_values().collect());
        self.shared.hub.publish(events, last_applied.index());
        Ok(results)
    }

    /// Applies `entries` in order and returns their results: what openraft's
    /// `apply` does, without the responders (for tools and tests that drive
    /// a state machine without Raft).
    pub async fn apply_entries(
        &mut self,
        mut entries: Vec<EntryOf<TypeConfig>>,
    ) -> Result<Vec<CommandResult>, io::Error> {
        let mut results = Vec::with_capacity(entries.len());
        while results.len() < entries.len() {
            match self.apply_some(&entries[results.len()..], Wait::Never) {
                Ok(done) => results.extend(done),
                Err(e) if e.would_block() => {
                    let applier = StateMachine {
                        shared: self.shared.clone(),
                    };
                    let rest = entries.split_off(results.len());
                    let done = off_runtime(move || {
                        let mut out = Vec::with_capacity(rest.len());
                        while out.len() < rest.len() {
                            out.extend(applier.apply_some(&rest[out.len()..], Wait::Allowed)?);
                        }
                        Ok(out)
                    })
                    .await?;
                    results.extend(done);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(results)
    }

    fn needs_own_batch(&self, chunk: &Chunk, command: &Command) -> bool {
        match command {
            // A transaction reads what is stored (values, ranges, history),
            // which does not hold this batch's writes yet: it joins the
            // batch only when it reads nothing the batch changed.
            Command::Txn(txn) => txn_reads_pending(chunk, txn),
            // They read the keys attached to leases from disk.
            Command::Lease {
                op: LeaseOp::Revoke { .. } | LeaseOp::Expire { .. },
                ..
            } => true,
            Command::Tagged {
                time_ms, command, ..
            } => time_ms / 1000 > chunk.meta.id_second || self.needs_own_batch(chunk, command),
            _ => false,
        }
    }

    fn apply_command(
        &self,
        chunk: &mut Chunk,
        index: u64,
        command: &Command,
    ) -> Result<CommandResult, Error> {
        let mut result = CommandResult {
            revision: index,
            ..CommandResult::default()
        };
        let history = cf(&self.shared.db, CF_HISTORY)?;
        match command {
            Command::Set { key, value } => {
                self.put(chunk, index, 0, key.as_bytes(), value.as_bytes())?;
                result.count = 1;
            }
            Command::Delete { key } => {
                let existed = self.current(chunk, key.as_bytes())?.is_some();
                if existed {
                    self.delete(chunk, index, 0, key.as_bytes())?;
                    result.count = 1;
                }
                result.existed = Some(existed);
            }
            Command::BatchSet { pairs } => {
                result.count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
                let mut seqs: HashMap<&str, u32> = HashMap::new();
                for (key, value) in pairs {
                    let next = seqs.len() as u32;
                    let seq = *seqs.entry(key.as_str()).or_insert(next);
                    self.put(chunk, index, seq, key.as_bytes(), value.as_bytes())?;
                }
            }
            Command::Txn(txn) => {
                let mut view = TxnView {
                    sm: self,
                    chunk,
                    overlay: BTreeMap::new(),
                    index,
                };
                match view.eval(txn) {
                    Ok(r) => {
                        let changes = std::mem::take(&mut view.overlay);
                        result.count = u32::try_from(changes.len()).unwrap_or(u32::MAX);
                        let data = cf(&self.shared.db, CF_DATA)?;
                        for (seq, (key, v)) in changes.into_iter().enumerate() {
                            let before = self.current(chunk, &key)?.map_or(0, |c| c.lease);
                            let after = v.as_ref().map_or(0, |v| v.lease);
                            self.attach(chunk, &key, before, after)?;
                            let dk = data_key(chunk.generation, &key);
                            match &v {
                                Some(v) => {
                                    chunk.bytes += v.value.len();
                                    chunk.batch.put_cf(data, dk, v.encode());
                                }
                                None => chunk.batch.delete_cf(data, dk),
                            }
                            mvcc::record_change(
                                &mut chunk.batch,
                                history,
                                chunk.generation,
                                &key,
                                index,
                                seq as u32,
                                v.as_ref(),
                            );
                            chunk.event(index, seq as u32, &key, v.as_ref());
                            chunk.pending.insert(
                                key,
                                v.map(|v| Current {
                                    create_revision: v.create_revision,
                                    version: v.version,
                                    lease: v.lease,
                                }),
                            );
                        }
                        result.txn = Some(r);
                    }
                    Err(TxnFail::Apply(e)) => result.error = Some(e),
                    Err(TxnFail::Store(e)) => return Err(e),
                }
            }
            Command::Compact { revision } => {
                let current = index.saturating_sub(1);
                if *revision > current {
                    result.error = Some(ApplyError::FutureRevision { current });
                } else if *revision <= chunk.meta.compact_revision {
                    result.error = Some(ApplyError::Compacted {
                        compact_revision: chunk.meta.compact_revision,
                    });
                } else {
                    chunk.meta.compact_revision = *revision;
                }
                result.compact_revision = Some(chunk.meta.compact_revision);
            }
            Command::Tagged {
                id,
                time_ms,
                command,
            } => return self.apply_tagged(chunk, index, id, *time_ms, command),
            Command::Lease { clock_ms, op } => {
                chunk.meta.lease_clock = chunk.meta.lease_clock.max(*clock_ms);
                self.apply_lease(chunk, index, *clock_ms, op, &mut result)?;
            }
        }
        Ok(result)
    }

    /// A lease operation at lease clock `clock`.
    fn apply_lease(
        &self,
        chunk: &mut Chunk,
        index: u64,
        clock: u64,
        op: &LeaseOp,
        result: &mut CommandResult,
    ) -> Result<(), Error> {
        let history = cf(&self.shared.db, CF_HISTORY)?;
        match op {
            LeaseOp::Grant { id, ttl } => {
                let id = if *id == 0 {
                    // Deterministic on every member: the entry's index, or
                    // the next free id after it.
                    let mut id = index.max(1);
                    while self.lease(chunk, id).is_some() {
                        id = id.wrapping_add(1).max(1);
                    }
                    id
                } else if self.lease(chunk, *id).is_some() {
                    result.error = Some(ApplyError::LeaseExists { lease: *id });
                    return Ok(());
                } else {
                    *id
                };
                let info = LeaseInfo::renewed_at(*ttl, clock);
                chunk.batch.put_cf(
                    history,
                    lease::lease_key(chunk.generation, id),
                    info.encode(),
                );
                chunk.leases.insert(id, Some(info));
                result.lease = Some(LeaseAnswer { id, ttl: *ttl });
            }
            LeaseOp::KeepAlive { id } => match self.renew(chunk, *id, clock)? {
                Some(renewed) => result.lease = Some(renewed),
                None => result.error = Some(ApplyError::LeaseNotFound { lease: *id }),
            },
            LeaseOp::KeepAliveMany { ids } => {
                for id in ids {
                    if let Some(renewed) = self.renew(chunk, *id, clock)? {
                        result.renewed.push(renewed);
                    }
                }
            }
            LeaseOp::Revoke { id } => match self.lease(chunk, *id) {
                Some(info) => {
                    let mut seq = 0;
                    result.count = self.end_lease(chunk, index, *id, &mut seq)?;
                    result.lease = Some(LeaseAnswer {
                        id: *id,
                        ttl: info.ttl,
                    });
                }
                None => result.error = Some(ApplyError::LeaseNotFound { lease: *id }),
            },
            LeaseOp::Expire { ids } => {
                let mut seq = 0;
                for id in ids {
                    // Renewed since the leader looked, or already gone:
                    // left alone, so a stale expiry never ends a live lease.
                    if self
                        .lease(chunk, *id)
                        .is_some_and(|info| info.expires_at <= clock)
                    {
                        result.count += self.end_lease(chunk, index, *id, &mut seq)?;
                        result.expired.push(*id);
                    }
                }
            }
            LeaseOp::Checkpoint => {}
        }
        Ok(())
    }

    /// Renews lease `id` to its full TTL from `clock` (never to an earlier
    /// end than it has); `None` when it does not exist.
    fn renew(&self, chunk: &mut Chunk, id: u64, clock: u64) -> Result<Option<LeaseAnswer>, Error> {
        let Some(old) = self.lease(chunk, id) else {
            return Ok(None);
        };
        let mut info = LeaseInfo::renewed_at(old.ttl, clock);
        info.expires_at = info.expires_at.max(old.expires_at);
        chunk.batch.put_cf(
            cf(&self.shared.db, CF_HISTORY)?,
            lease::lease_key(chunk.generation, id),
            info.encode(),
        );
        chunk.leases.insert(id, Some(info));
        Ok(Some(LeaseAnswer { id, ttl: old.ttl }))
    }

    /// Ends lease `id`: deletes its keys at revision `index` (numbered from
    /// `seq` on) and its record; returns how many keys went.
    fn end_lease(
        &self,
        chunk: &mut Chunk,
        index: u64,
        id: u64,
        seq: &mut u32,
    ) -> Result<u32, Error> {
        let db = &self.shared.db;
        let history = cf(db, CF_HISTORY)?;
        // Alone in its batch (see `needs_own_batch`): the attachments on
        // disk are all there are.
        let keys = lease::attached_keys(db, chunk.generation, id, chunk.wait.read_options())?;
        let mut deleted = 0u32;
        for key in keys {
            chunk
                .batch
                .delete_cf(history, lease::attach_key(chunk.generation, id, &key));
            if self.current(chunk, &key)?.is_some_and(|c| c.lease == id) {
                self.delete(chunk, index, *seq, &key)?;
                *seq += 1;
                deleted += 1;
            }
        }
        chunk
            .batch
            .delete_cf(history, lease::lease_key(chunk.generation, id));
        chunk.leases.insert(id, None);
        Ok(deleted)
    }

    /// Lease `id` as the entry being applied sees it: this batch's changes
    /// first, then the table.
    fn lease(&self, chunk: &Chunk, id: u64) -> Option<LeaseInfo> {
        if let Some(l) = chunk.leases.get(&id) {
            return *l;
        }
        self.shared
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
    }

    /// Moves `key` from lease `before` to lease `after` (0: none).
    fn attach(&self, chunk: &mut Chunk, key: &[u8], before: u64, after: u64) -> Result<(), Error> {
        if before == after {
            return Ok(());
        }
        let history = cf(&self.shared.db, CF_HISTORY)?;
        if before != 0 {
            chunk
                .batch
                .delete_cf(history, lease::attach_key(chunk.generation, before, key));
        }
        if after != 0 {
            chunk
                .batch
                .put_cf(history, lease::attach_key(chunk.generation, after, key), []);
        }
        Ok(())
    }

    /// A command with a request id: the kept result of the id when it was
    /// applied before, else the command applied and its result kept.
    fn apply_tagged(
        &self,
        chunk: &mut Chunk,
        index: u64,
        id: &[u8],
        time_ms: u64,
        command: &Command,
    ) -> Result<CommandResult, Error> {
        let db = &self.shared.db;
        let history = cf(db, CF_HISTORY)?;
        if time_ms / 1000 > chunk.meta.id_second {
            // Alone in its batch (see `needs_own_batch`): what it removes
            // is everything on disk older than the window.
            chunk.meta.id_second = time_ms / 1000;
            let expired = mvcc::expire_ids(
                db,
                &mut chunk.batch,
                history,
                chunk.generation,
                time_ms.saturating_sub(mvcc::ID_WINDOW_MS),
                chunk.meta.id_count,
                mvcc::MAX_IDS,
                chunk.wait.read_options(),
            )?;
            chunk.meta.id_count = chunk.meta.id_count.saturating_sub(expired.len() as u64);
            chunk.expired = expired;
        }
        // Where the table may hold the id; nearly always nowhere, and then
        // there is nothing to read.
        let (h, times) = {
            let index = self
                .shared
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let h = index.hash(id);
            (
                h,
                if index.may_hold(h) {
                    index.times(h)
                } else {
                    Vec::new()
                },
            )
        };
        let this = NewId {
            hash: h,
            id: id.to_vec(),
        };
        if let Some((_, first)) = chunk.ids.get(&this) {
            let mut first = first.clone();
            first.repeated = true;
            return Ok(first);
        }
        for time in times {
            let key = mvcc::id_time_key(chunk.generation, time, id);
            if let Some(kept) = db.get_pinned_cf_opt(history, key, &chunk.read)? {
                let mut first = mvcc::decode_kept(&kept)?;
                first.repeated = true;
                return Ok(first);
            }
        }
        let result = self.apply_command(chunk, index, command)?;
        let kept = kept_result(&result)?;
        mvcc::put_id(
            &mut chunk.batch,
            history,
            &mut chunk.id_key,
            chunk.generation,
            id,
            time_ms,
            kept.bytes(),
        );
        // A repeat later in this chunk answers what a later one reads back
        // (a large transaction's result is kept trimmed).
        let first = match &kept {
            mvcc::Kept::Json(json) => mvcc::decode_kept(json)?,
            mvcc::Kept::Short(_) => result.clone(),
        };
        chunk.ids.insert(this, (time_ms, first));
        chunk.meta.id_count += 1;
        Ok(result)
    }

    fn put(
        &self,
        chunk: &mut Chunk,
        index: u64,
        seq: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        let prev = self.current(chunk, key)?;
        self.attach(chunk, key, prev.map_or(0, |c| c.lease), 0)?;
        let stored = StoredValue {
            value: value.to_vec(),
            create_revision: prev.map_or(index, |c| c.create_revision),
            mod_revision: index,
            version: prev.map_or(1, |c| c.version.saturating_add(1)),
            lease: 0,
            expires_at_ms: None,
        };
        let db = &self.shared.db;
        chunk.bytes += value.len();
        chunk.batch.put_cf(
            cf(db, CF_DATA)?,
            data_key(chunk.generation, key),
            stored.encode(),
        );
        mvcc::record_change(
            &mut chunk.batch,
            cf(db, CF_HISTORY)?,
            chunk.generation,
            key,
            index,
            seq,
            Some(&stored),
        );
        chunk.event(index, seq, key, Some(&stored));
        chunk.pending.insert(
            key.to_vec(),
            Some(Current {
                create_revision: stored.create_revision,
                version: stored.version,
                lease: 0,
            }),
        );
        Ok(())
    }

    fn delete(&self, chunk: &mut Chunk, index: u64, seq: u32, key: &[u8]) -> Result<(), Error> {
        let before = self.current(chunk, key)?.map_or(0, |c| c.lease);
        self.attach(chunk, key, before, 0)?;
        let db = &self.shared.db;
        chunk
            .batch
            .delete_cf(cf(db, CF_DATA)?, data_key(chunk.generation, key));
        mvcc::record_change(
            &mut chunk.batch,
            cf(db, CF_HISTORY)?,
            chunk.generation,
            key,
            index,
            seq,
            None,
        );
        chunk.event(index, seq, key, None);
        chunk.pending.insert(key.to_vec(), None);
        Ok(())
    }

    /// What a write needs of `key`'s current version, as seen by the entry
    /// being applied: earlier entries of the same batch first, then the
    /// database.
    fn current(&self, chunk: &Chunk, key: &[u8]) -> Result<Option<Current>, Error> {
        if let Some(p) = chunk.pending.get(key) {
            return Ok(*p);
        }
        Ok(self.stored(chunk, key)?.map(|v| Current {
            create_revision: v.create_revision,
            version: v.version,
            lease: v.lease,
        }))
    }

    /// `key`'s stored version in the database (not the batch being built).
    fn stored(&self, chunk: &Chunk, key: &[u8]) -> Result<Option<StoredValue>, Error> {
        let db = &self.shared.db;
        let key = data_key(chunk.generation, key);
        match db.get_pinned_cf_opt(cf(db, CF_DATA)?, key, &chunk.read)? {
            Some(bytes) => Ok(Some(StoredValue::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Most keys a batch may have changed for a transaction with a range to
/// join it (each range is checked against every changed key).
const RANGE_CHECK_KEYS: usize = 256;

/// Whether `txn` reads or writes a key that `chunk` changed (its current
/// version, or its history): then it must wait for the chunk to be written.
/// Either branch counts, as the comparisons decide only when applied.
fn txn_reads_pending(chunk: &Chunk, txn: &Txn) -> bool {
    if chunk.pending.is_empty() {
        return false;
    }
    let touches = |key: &[u8], range_end: &[u8]| {
        if range_end.is_empty() {
            return chunk.pending.contains_key(key);
        }
        chunk.pending.len() > RANGE_CHECK_KEYS
            || chunk.pending.keys().any(|k| in_range(k, key, range_end))
    };
    fn ops_touch(ops: &[TxnOp], chunk: &Chunk, touches: &dyn Fn(&[u8], &[u8]) -> bool) -> bool {
        ops.iter().any(|op| match op {
            TxnOp::Put(p) => touches(&p.key, &[]),
            TxnOp::DeleteRange(d) => touches(&d.key, &d.range_end),
            // At an older revision too: the history of keys the batch did
            // not change is all on disk.
            TxnOp::Range(r) => touches(&r.key, &r.range_end),
            TxnOp::Txn(t) => txn_reads_pending(chunk, t),
        })
    }
    txn.compare.iter().any(|c| touches(&c.key, &c.range_end))
        || ops_touch(&txn.success, chunk, &touches)
        || ops_touch(&txn.failure, chunk, &touches)
}

/// Largest result kept for a request id as it is; a larger one (a
/// transaction whose ranges read much) is kept without the keys its ranges
/// read (their counts stay), so that the table stays small.
const MAX_KEPT_RESULT: usize = 1 << 20;

fn kept_result(result: &CommandResult) -> Result<mvcc::Kept, Error> {
    let encode = mvcc::encode_kept;
    let encoded = encode(result)?;
    if encoded.bytes().len() <= MAX_KEPT_RESULT {
        return Ok(encoded);
    }
    fn trim(t: &mut TxnResult) {
        for r in &mut t.responses {
            match r {
                OpResult::Range(r) => r.kvs.clear(),
                OpResult::DeleteRange { prev_kvs, .. } => prev_kvs.clear(),
                OpResult::Put { prev_kv } => *prev_kv = None,
                OpResult::Txn(t) => trim(t),
            }
        }
    }
    let mut small = result.clone();
    if let Some(t) = &mut small.txn {
        trim(t);
    }
    encode(&small)
}

/// Brings a data directory written before history existed to the current
/// layout: every key gets a history record at its `mod_revision`, and the
/// compaction point becomes the last applied revision (nothing older was
/// kept). Idempotent, so a crash halfway only repeats it.
fn upgrade(db: &DB, generation: u64, last_applied: Option<u64>) -> Result<(), Error> {
    let sm_meta = cf(db, CF_SM_META)?;
    if let Some(v) = db.get_pinned_cf(sm_meta, KEY_FORMAT)? {
        let v = decode_u64(&v)?;
        if v == FORMAT_HISTORY {
            return Ok(());
        }
        return Err(Error::Corrupt(format!(
            "the state machine has format {v}, newer than this build understands ({FORMAT_HISTORY}); run a newer ferrium-server on this data directory"
        )));
    }
    let data = cf(db, CF_DATA)?;
    let history = cf(db, CF_HISTORY)?;
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(data_key(generation.saturating_add(1), b""));
    let mut it = db.raw_iterator_cf_opt(data, opts);
    it.seek(data_key(generation, b""));
    let mut batch = WriteBatch::default();
    let mut keys: u64 = 0;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let stored = StoredValue::decode(v)?;
        mvcc::record_change(
            &mut batch,
            history,
            generation,
            &k[8..],
            stored.mod_revision,
            keys as u32,
            Some(&stored),
        );
        keys += 1;
        if batch.len() >= 20_000 {
            db.write(std::mem::take(&mut batch))?;
        }
        it.next();
    }
    it.status()?;
    drop(it);
    let meta = AppliedMeta {
        compact_revision: last_applied.unwrap_or(0),
        ..AppliedMeta::default()
    };
    meta.write(&mut batch, sm_meta);
    batch.put_cf(sm_meta, KEY_FORMAT, FORMAT_HISTORY.to_be_bytes());
    let mut synced = rocksdb::WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced)?;
    if keys > 0 || last_applied.is_some() {
        ::log::info!(
            "upgraded the state machine to keep history: {keys} keys; revisions before {} are not available",
            meta.compact_revision
        );
    }
    Ok(())
}

/// Starts the thread that removes compacted history (see [`mvcc`]). It
/// holds only a weak reference and ends when the state machine is dropped.
fn start_compactor(shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::channel::<()>();
    if let Ok(mut c) = shared.compactor.lock() {
        *c = Some(tx);
    }
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("ferrium-compact".into())
        .spawn(move || {
            let mut done: u64 = 0;
            let mut done_generation = u64::MAX;
            loop {
                match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                let Ok(generation) = shared.generation() else {
                    return;
                };
                let compact = shared.applied_meta().compact_revision;
                if generation == done_generation && compact <= done {
                    continue;
                }
                let still = || shared.generation().is_ok_and(|g| g == generation);
                match mvcc::compact_history(&shared.db, generation, compact, &still) {
                    Ok(removed) => {
                        if removed > 0 {
                            ::log::info!(
                                "compaction at revision {compact}: removed {removed} old versions"
                            );
                            // Give the space back now rather than when
                            // RocksDB next compacts those files by itself:
                            // no defragmentation step is ever needed.
                            if let Ok(history) = cf(&shared.db, CF_HISTORY) {
                                shared.db.compact_range_cf(
                                    history,
                                    Some(generation.to_be_bytes()),
                                    generation.checked_add(1).map(u64::to_be_bytes),
                                );
                            }
                            // And the write-ahead log that still holds the
                            // removed versions: it is deleted once no
                            // column family's memtable needs it.
                            for name in [
                                super::CF_META,
                                CF_DATA,
                                CF_HISTORY,
                                CF_SM_META,
                                super::CF_LOGS,
                            ] {
                                if let Ok(family) = cf(&shared.db, name) {
                                    if let Err(e) = shared.db.flush_cf(family) {
                                        ::log::warn!(
                                            "flushing {name} after compaction failed: {e}"
                                        );
                                    }
                                }
                            }
                        }
                        done = compact;
                        done_generation = generation;
                    }
                    Err(e) => ::log::error!(
                        "removing history below revision {compact} failed, will retry: {e}"
                    ),
                }
            }
        });
    if let Err(e) = spawned {
        ::log::error!("cannot start the history compaction thread: {e}; old history is kept");
    }
}

impl StateReader {
    /// Starts receiving a snapshot sent by a peer, as
    /// [`StateMachine::snapshot_receiver`] does; the server's snapshot route
    /// holds a reader because the state machine itself belongs to Raft.
    pub fn snapshot_receiver(&self) -> Result<SnapshotReceiver, Error> {
        SnapshotReceiver::create(&self.shared.snapshot_dir)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Result<Option<StoredValue>, Error> {
        self.get_with(key, Wait::Allowed)
    }

    fn get_with(&self, key: &str, wait: Wait) -> Result<Option<StoredValue>, Error> {
        let guard = match wait {
            Wait::Never => self
                .shared
                .generation
                .try_read()
                .map_err(|_| Error::WouldBlock)?,
            Wait::Allowed => self
                .shared
                .generation
                .read()
                .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?,
        };
        let db = &self.shared.db;
        let key = data_key(*guard, key.as_bytes());
        let found = db.get_pinned_cf_opt(cf(db, CF_DATA)?, key, &wait.read_options())?;
        found.map(|b| StoredValue::decode(&b)).transpose()
    }

    /// Up to `limit` keys starting with `prefix`, in byte order, strictly
    /// after `start_after` when given (for paging). The flag says whether
    /// more keys match after the last one returned.
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, Error> {
        let guard = self
            .shared
            .generation
            .read()
            .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
        let generation = *guard;
        let db = &self.shared.db;
        let full_prefix = data_key(generation, prefix);
        let seek_to = match start_after {
            Some(s) if s >= prefix => data_key(generation, s),
            _ => full_prefix.clone(),
        };
        let mut it = db.raw_iterator_cf(cf(db, CF_DATA)?);
        it.seek(&seek_to);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&full_prefix) {
                break;
            }
            let user_key = &k[8..];
            if start_after.is_some_and(|s| user_key <= s) {
                it.next();
                continue;
            }
            if out.len() >= limit {
                return Ok((out, true));
            }
            out.push((user_key.to_vec(), StoredValue::decode(v)?));
            it.next();
        }
        it.status()?;
        Ok((out, false))
    }

    /// A range at the current or at a past revision, read from one point in
    /// time, with the revision it reflects (the last entry applied then).
    /// A revision below the compaction point or above the current one is
    /// refused with the [`ApplyError`] etcd gives.
    pub fn range(
        &self,
        req: &RangeRequest,
    ) -> Result<Result<(RangeResult, u64), ApplyError>, Error> {
        let guard = self
            .shared
            .generation
            .read()
            .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
        let generation = *guard;
        let db = &self.shared.db;
        let view = db.snapshot();
        let sm_meta = cf(db, CF_SM_META)?;
        let current = match view.get_cf(sm_meta, KEY_LAST_APPLIED)? {
            Some(b) => decode::<LogIdOf<TypeConfig>>(&b)?.index(),
            None => 0,
        };
        let compact = AppliedMeta::read(db, Some(&view))?.compact_revision;
        if req.revision > current {
            return Ok(Err(ApplyError::FutureRevision { current }));
        }
        if req.revision != 0 && req.revision < compact {
            return Ok(Err(ApplyError::Compacted {
                compact_revision: compact,
            }));
        }
        let mut collect = RangeCollector::new(req);
        if req.revision == 0 || req.revision == current {
            let data = cf(db, CF_DATA)?;
            if req.range_end.is_empty() {
                if let Some(b) = view.get_cf(data, data_key(generation, &req.key))? {
                    collect.push(&req.key, StoredValue::decode(&b)?);
                }
            } else {
                let mut opts = ReadOptions::default();
                opts.set_iterate_upper_bound(if req.range_end == [0] {
                    data_key(generation.saturating_add(1), b"")
                } else {
                    data_key(generation, &req.range_end)
                });
                let mut it = view.raw_iterator_cf_opt(data, opts);
                it.seek(data_key(generation, &req.key));
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    collect.push(&k[8..], StoredValue::decode(v)?);
                    it.next();
                }
                it.status()?;
            }
        } else {
            let mut it = view.raw_iterator_cf(cf(db, CF_HISTORY)?);
            mvcc::range_at(&mut it, generation, req, req.revision, &mut collect)?;
        }
        Ok(Ok((collect.finish(), current)))
    }

    /// [`StateReader::range`] on the blocking pool.
    pub async fn range_async(
        &self,
        req: RangeRequest,
    ) -> Result<Result<(RangeResult, u64), ApplyError>, Error> {
        let reader = self.clone();
        off_runtime(move || reader.range(&req)).await
    }

    /// The compaction point: reads below it are refused.
    /// The lease clock as this member knows it: the clock of the last
    /// applied entry that moved it, advanced by the time since this member
    /// applied that entry. Never ahead of the clock of the leader that wrote
    /// the entry (an entry is applied after it was written), which is what
    /// makes it safe for a new leader to go on from (see [`crate::node::lease`]).
    pub fn lease_clock(&self) -> u64 {
        let (clock, seen) = *self
            .shared
            .lease_clock_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.saturating_add(u64::try_from(seen.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Leases this member ended by expiry since it started.
    pub fn leases_expired(&self) -> u64 {
        self.shared
            .leases_expired
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The lease clock of the last applied entry that moved it.
    pub fn applied_lease_clock(&self) -> u64 {
        self.shared.applied_meta().lease_clock
    }

    /// Lease `id`, if it exists.
    pub fn lease(&self, id: u64) -> Option<LeaseInfo> {
        self.leases().get(id)
    }

    /// The table of leases, locked (hold it briefly).
    pub fn leases(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.shared
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keys attached to lease `id`, in key order.
    pub async fn lease_keys(&self, id: u64) -> Result<Vec<Vec<u8>>, Error> {
        let shared = self.shared.clone();
        off_runtime(move || {
            let guard = shared
                .generation
                .read()
                .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
            lease::attached_keys(&shared.db, *guard, id, ReadOptions::default())
        })
        .await
    }

    pub fn compact_revision(&self) -> u64 {
        self.shared.applied_meta().compact_revision
    }

    /// Versions held in history (a scan: for tests and tools, not for
    /// every request).
    pub fn history_versions(&self) -> Result<u64, Error> {
        let generation = self.shared.generation()?;
        let db = &self.shared.db;
        let prefix = mvcc::key_prefix(generation, b"");
        let start = prefix[..9].to_vec();
        let mut it = db.raw_iterator_cf(cf(db, CF_HISTORY)?);
        it.seek(&start);
        let mut n = 0;
        while let Some(k) = it.key() {
            if !k.starts_with(&start) {
                break;
            }
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// This member's watchers.
    pub fn watch_hub(&self) -> Arc<crate::watch::Hub> {
        self.shared.hub.clone()
    }

    /// Request ids currently remembered.
    pub fn request_ids(&self) -> u64 {
        self.shared.applied_meta().id_count
    }

    /// [`StateReader::get`] for async callers, whose runtime worker must not
    /// wait: served here from the memtables and the block cache, else read
    /// on the blocking pool.
    pub async fn get_async(&self, key: String) -> Result<Option<StoredValue>, Error> {
        match self.get_with(&key, Wait::Never) {
            Err(e) if e.would_block() => {
                let reader = self.clone();
                off_runtime(move || reader.get(&key)).await
            }
            done => done,
        }
    }

    /// [`StateReader::list`] on the blocking pool, as [`StateReader::get_async`].
    pub async fn list_async(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> Result<Page, Error> {
        let reader = self.clone();
        off_runtime(move || {
            reader.list(
                prefix.as_bytes(),
                start_after.as_deref().map(str::as_bytes),
                limit,
            )
        })
        .await
    }

    /// The log id of the last entry applied to the state machine.
    pub fn last_applied(&self) -> Option<LogIdOf<TypeConfig>> {
        self.shared.last_applied.lock().ok().and_then(|l| *l)
    }

    /// RocksDB's memory use, summed over the column families (for metrics).
    pub fn memory_usage(&self) -> Result<MemoryUsage, Error> {
        let db = &self.shared.db;
        let mut usage = MemoryUsage::default();
        for name in [
            super::CF_LOGS,
            super::CF_META,
            CF_DATA,
            CF_HISTORY,
            CF_SM_META,
        ] {
            let cf = cf(db, name)?;
            let prop = |p: &str| -> Result<u64, Error> {
                Ok(db.property_int_value_cf(cf, p)?.unwrap_or(0))
            };
            usage.memtables += prop("rocksdb.cur-size-all-mem-tables")?;
            usage.table_readers += prop("rocksdb.estimate-table-readers-mem")?;
            // One cache is shared by all column families.
            usage.block_cache = prop("rocksdb.block-cache-usage")?;
        }
        Ok(usage)
    }
}

/// Bytes held by RocksDB, see [`StateReader::memory_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub block_cache: u64,
    pub memtables: u64,
    pub table_readers: u64,
}

impl StateMachine {
    /// See [`StateReader::get`].
    pub fn get(&self, key: &str) -> Result<Option<StoredValue>, Error> {
        self.reader().get(key)
    }

    /// See [`StateReader::list`].
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, Error> {
        self.reader().list(prefix, start_after, limit)
    }

    /// See [`StateReader::range`].
    pub fn range(
        &self,
        req: &RangeRequest,
    ) -> Result<Result<(RangeResult, u64), ApplyError>, Error> {
        self.reader().range(req)
    }

    /// See [`StateReader::last_applied`].
    pub fn last_applied(&self) -> Option<LogIdOf<TypeConfig>> {
        self.reader().last_applied()
    }
}

/// Deletes data left behind by an install or a switch that crashed halfway.
fn drop_other_generations(db: &DB, generation: u64) -> Result<(), Error> {
    for name in [CF_DATA, CF_HISTORY] {
        let data = cf(db, name)?;
        let current = generation.to_be_bytes();
        let mut it = db.raw_iterator_cf(data);
        it.seek_to_first();
        let older = it.key().is_some_and(|k| k < &current[..]);
        it.status()?;
        let newer = match generation.checked_add(1) {
            Some(next) => {
                it.seek(next.to_be_bytes());
                it.key().is_some()
            }
            None => false,
        };
        it.status()?;
        drop(it);
        if older {
            ::log::info!("removing {name} older than generation {generation}");
            db.delete_range_cf(data, 0u64.to_be_bytes(), current)?;
        }
        if newer {
            ::log::info!(
                "removing {name} of an unfinished snapshot install (generation > {generation})"
            );
            db.delete_range_cf(
                data,
                generation.saturating_add(1).to_be_bytes(),
                u64::MAX.to_be_bytes(),
            )?;
        }
    }
    Ok(())
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, Error> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("want 8 bytes, got {}", bytes.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// Reads `(last_applied, last_membership)` from `sm_meta`.
fn read_applied_state(
    db: &DB,
) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), Error> {
    let sm_meta = cf(db, CF_SM_META)?;
    let last_applied = match db.get_pinned_cf(sm_meta, KEY_LAST_APPLIED)? {
        Some(b) => Some(decode(&b)?),
        None => None,
    };
    let membership = match db.get_pinned_cf(sm_meta, KEY_MEMBERSHIP)? {
        Some(b) => decode(&b)?,
        None => StoredMembershipOf::<TypeConfig>::default(),
    };
    Ok((last_applied, membership))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let shared = self.shared.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || snapshot::build(&shared))
            .await
            .map_err(|e| io::Error::other(format!("snapshot build task failed: {e}")))??;
        Ok(SnapshotOf::<TypeConfig, SnapshotFile> {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let db = self.shared.db.clone();
        Ok(off_runtime(move || read_applied_state(&db)).await?)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // A chunk at a time, each one write batch: applied here when that
        // needs no waiting (the common case: keys in memory, no write
        // stall), else on the blocking pool.
        loop {
            let mut chunk = Vec::new();
            while chunk.len() < APPLY_CHUNK {
                match entries.try_next().await? {
                    Some(item) => chunk.push(item),
                    None => break,
                }
            }
            let more = chunk.len() == APPLY_CHUNK;
            let (entries, responders): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
            let results = self.apply_entries(entries).await?;
            for (responder, result) in responders.into_iter().zip(results) {
                if let Some(r) = responder {
                    r.send(result);
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || snapshot::install(&shared, &meta, snapshot))
            .await
            .map_err(|e| io::Error::other(format!("snapshot install task failed: {e}")))??;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        // Off the runtime: it may have to build a snapshot to replace a damaged one.
        let shared = self.shared.clone();
        let current = off_runtime(move || snapshot::current(&shared)).await?;
        Ok(
            current.map(|(meta, file)| SnapshotOf::<TypeConfig, SnapshotFile> {
                meta,
                snapshot: file,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::StoredValue;

    /// A read that has to wait must not hold a runtime worker. The wait here
    /// is the generation lock, taken for writing by a snapshot install: the
    /// writer waits for readers already inside (a long listing), and new
    /// readers wait behind it. On a runtime with one worker, other tasks
    /// must still run meanwhile.
    #[test]
    fn reads_waiting_for_the_generation_lock_leave_the_runtime_free() {
        use std::sync::mpsc;
        use std::time::Duration;
        const DEADLINE: Duration = Duration::from_secs(20);

        let dir = crate::store::tests::TempDir::new("read-wait");
        let (_log, sm) = super::super::open(dir.path(), &super::super::StoreOptions::default())
            .expect("open store");
        let install = sm.shared.generation.write().expect("generation lock");

        // Each read on a runtime of its own, so that each is checked alone.
        let mut blocked = Vec::new();
        let mut waiting = Vec::new();
        for what in ["read", "listing"] {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let (started_tx, started) = mpsc::channel();
            let (done_tx, done) = mpsc::channel();
            let reader = sm.reader();
            rt.spawn(async move {
                let _ = started_tx.send(());
                let found = match what {
                    "read" => reader.get_async("k".into()).await.map(|_| ()),
                    _ => reader.list_async("k".into(), None, 10).await.map(|_| ()),
                };
                let _ = done_tx.send(found.is_ok());
            });
            started.recv_timeout(DEADLINE).expect("read started");
            let (tx, rx) = mpsc::channel();
            rt.spawn(async move {
                let _ = tx.send(());
            });
            if rx.recv_timeout(DEADLINE).is_err() {
                blocked.push(what);
            }
            waiting.push((what, done, rt));
        }

        drop(install);
        for (what, done, rt) in waiting {
            let ok = done.recv_timeout(DEADLINE).expect("read completes");
            assert!(ok, "{what} succeeds once the lock is free");
            drop(rt);
        }
        assert!(
            blocked.is_empty(),
            "waiting for the generation lock, these held the runtime's only worker: {blocked:?}"
        );
        drop(sm);
    }

    #[test]
    fn stored_value_round_trips_and_rejects_unknown_formats() {
        for (expires_at_ms, lease) in [(None, 0), (Some(1_700_000_000_000), 0), (None, 7)] {
            let v = StoredValue {
                value: "héllo".into(),
                create_revision: 3,
                mod_revision: 9,
                version: 4,
                lease,
                expires_at_ms,
            };
            let bytes = v.encode();
            assert_eq!(bytes[0], 1, "leading format byte");
            assert_eq!(StoredValue::decode(&bytes).expect("decode"), v);
        }
        let mut bytes = StoredValue {
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            ..StoredValue::default()
        }
        .encode();
        assert!(StoredValue::decode(&bytes[..10]).is_err(), "truncated");
        bytes[0] = 2;
        assert!(StoredValue::decode(&bytes).is_err(), "unknown format");
        assert!(StoredValue::decode(&[]).is_err(), "empty");
    }
}
