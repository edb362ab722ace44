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

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;

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
use super::log::decode;
use super::log::encode;
use super::off_runtime;
use super::snapshot;
use super::snapshot::SnapshotFile;
use super::snapshot::SnapshotReceiver;
use crate::raft::types::Command;
use crate::raft::types::CommandResult;
use crate::raft::types::TypeConfig;

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const KEY_GENERATION: &[u8] = b"data_generation";

/// Most entries applied in one write batch. A longer apply (a restart
/// replaying the log, a follower catching up) is written in several batches,
/// each the result of a longer prefix of the log.
const APPLY_CHUNK: usize = 1024;

/// Leading byte of every stored value: the encoding below.
const VALUE_FORMAT_V1: u8 = 1;
const FLAG_EXPIRY: u8 = 1;

/// A key's value with the metadata etcd keeps for it.
///
/// Revisions are Raft log indexes: `create_revision` is the entry that
/// created the key (since its last deletion), `mod_revision` the entry that
/// last changed it, `version` counts changes since creation (1 for a new key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue {
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// Expiry as Unix time in milliseconds; not set by any command yet.
    pub expires_at_ms: Option<u64>,
}

impl StoredValue {
    /// Bytes [`StoredValue::encode`] adds to the value at most.
    pub(crate) const MAX_OVERHEAD: usize = 34;

    /// `[format=1][flags][create u64][mod u64][version u64][expiry u64 if flag][value]`,
    /// integers little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MAX_OVERHEAD + self.value.len());
        out.push(VALUE_FORMAT_V1);
        out.push(if self.expires_at_ms.is_some() {
            FLAG_EXPIRY
        } else {
            0
        });
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        if let Some(e) = self.expires_at_ms {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(self.value.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("stored value: {what}"));
        let (&format, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        if format != VALUE_FORMAT_V1 {
            return Err(corrupt(&format!("unknown format version {format}")));
        }
        let (&flags, mut rest) = rest.split_first().ok_or_else(|| corrupt("no flags"))?;
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
        let value = String::from_utf8(rest.to_vec()).map_err(|_| corrupt("value is not UTF-8"))?;
        Ok(StoredValue {
            value,
            create_revision,
            mod_revision,
            version,
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
    pub(crate) snapshot_dir: PathBuf,
    /// Options of the `data` column family, for writing SST files to ingest.
    pub(crate) sst_options: rocksdb::Options,
    /// Serializes renames and clean-ups in `snapshot_dir`.
    pub(crate) snapshot_dir_lock: Mutex<()>,
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
}

/// The key of `key` in generation `generation` of the `data` column family.
pub(crate) fn data_key(generation: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A chunk of entries being applied: its write batch so far, the keys it
/// changed (`(create_revision, version)`, `None` once deleted), how it reads
/// and the data generation it writes.
struct Chunk {
    batch: WriteBatch,
    pending: HashMap<String, Option<(u64, u64)>>,
    read: ReadOptions,
    generation: u64,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Read access to the state machine for the server: point reads, prefix
/// listings and the applied position. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
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
        let last_applied = match db.get_pinned_cf(sm_meta, KEY_LAST_APPLIED)? {
            Some(b) => Some(decode(&b)?),
            None => None,
        };
        drop_other_generations(&db, generation)?;
        snapshot::remove_temp_files(&snapshot_dir)?;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                generation: RwLock::new(generation),
                last_applied: Mutex::new(last_applied),
                snapshot_dir,
                sst_options,
                snapshot_dir_lock: Mutex::new(()),
            }),
        })
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

    /// Applies entries as one write batch (their data changes,
    /// `last_applied` and the last membership among them) and returns each
    /// entry's result. With [`Wait::Never`] it fails with nothing written
    /// when a read or the write would have to wait.
    fn apply_chunk(
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
        let mut chunk = Chunk {
            batch: WriteBatch::default(),
            pending: HashMap::new(),
            read: wait.read_options(),
            generation,
        };
        let mut results = Vec::with_capacity(entries.len());
        let mut last_applied = None;
        let mut membership = None;

        for entry in entries {
            let log_id = entry.log_id();
            let index = log_id.index();
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
        db.write_opt(batch, &wait.write_options())?;
        self.shared.set_last_applied(Some(last_applied));
        Ok(results)
    }

    fn apply_command(
        &self,
        chunk: &mut Chunk,
        index: u64,
        command: &Command,
    ) -> Result<CommandResult, Error> {
        let mut result = CommandResult {
            revision: index,
            existed: None,
            count: 0,
        };
        match command {
            Command::Set { key, value } => {
                self.put(chunk, index, key, value)?;
                result.count = 1;
            }
            Command::Delete { key } => {
                let existed = self.current(chunk, key)?.is_some();
                if existed {
                    chunk.batch.delete_cf(
                        cf(&self.shared.db, CF_DATA)?,
                        data_key(chunk.generation, key.as_bytes()),
                    );
                    result.count = 1;
                }
                chunk.pending.insert(key.clone(), None);
                result.existed = Some(existed);
            }
            Command::BatchSet { pairs } => {
                result.count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
                for (key, value) in pairs {
                    self.put(chunk, index, key, value)?;
                }
            }
        }
        Ok(result)
    }

    fn put(&self, chunk: &mut Chunk, index: u64, key: &str, value: &str) -> Result<(), Error> {
        let prev = self.current(chunk, key)?;
        let stored = StoredValue {
            value: value.to_string(),
            create_revision: prev.map_or(index, |(create, _)| create),
            mod_revision: index,
            version: prev.map_or(1, |(_, version)| version.saturating_add(1)),
            expires_at_ms: None,
        };
        chunk.batch.put_cf(
            cf(&self.shared.db, CF_DATA)?,
            data_key(chunk.generation, key.as_bytes()),
            stored.encode(),
        );
        chunk.pending.insert(
            key.to_string(),
            Some((stored.create_revision, stored.version)),
        );
        Ok(())
    }

    /// `(create_revision, version)` of `key` as seen by the entry being
    /// applied: earlier entries of the same batch first, then the database.
    fn current(&self, chunk: &Chunk, key: &str) -> Result<Option<(u64, u64)>, Error> {
        if let Some(p) = chunk.pending.get(key) {
            return Ok(*p);
        }
        let db = &self.shared.db;
        let key = data_key(chunk.generation, key.as_bytes());
        match db.get_pinned_cf_opt(cf(db, CF_DATA)?, key, &chunk.read)? {
            Some(bytes) => {
                let v = StoredValue::decode(&bytes)?;
                Ok(Some((v.create_revision, v.version)))
            }
            None => Ok(None),
        }
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
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, StoredValue)>, bool), Error> {
        let guard = self
            .shared
            .generation
            .read()
            .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
        let generation = *guard;
        let db = &self.shared.db;
        let full_prefix = data_key(generation, prefix.as_bytes());
        let seek_to = match start_after {
            Some(s) if s.as_bytes() >= prefix.as_bytes() => data_key(generation, s.as_bytes()),
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
            if start_after.is_some_and(|s| user_key <= s.as_bytes()) {
                it.next();
                continue;
            }
            if out.len() >= limit {
                return Ok((out, true));
            }
            let key = String::from_utf8(user_key.to_vec())
                .map_err(|_| Error::Corrupt("stored key is not UTF-8".into()))?;
            out.push((key, StoredValue::decode(v)?));
            it.next();
        }
        it.status()?;
        Ok((out, false))
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
    ) -> Result<(Vec<(String, StoredValue)>, bool), Error> {
        let reader = self.clone();
        off_runtime(move || reader.list(&prefix, start_after.as_deref(), limit)).await
    }

    /// The log id of the last entry applied to the state machine.
    pub fn last_applied(&self) -> Option<LogIdOf<TypeConfig>> {
        self.shared.last_applied.lock().ok().and_then(|l| *l)
    }

    /// RocksDB's memory use, summed over the column families (for metrics).
    pub fn memory_usage(&self) -> Result<MemoryUsage, Error> {
        let db = &self.shared.db;
        let mut usage = MemoryUsage::default();
        for name in [super::CF_LOGS, super::CF_META, CF_DATA, CF_SM_META] {
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
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, StoredValue)>, bool), Error> {
        self.reader().list(prefix, start_after, limit)
    }

    /// See [`StateReader::last_applied`].
    pub fn last_applied(&self) -> Option<LogIdOf<TypeConfig>> {
        self.reader().last_applied()
    }
}

/// Deletes data left behind by an install or a switch that crashed halfway.
fn drop_other_generations(db: &DB, generation: u64) -> Result<(), Error> {
    let data = cf(db, CF_DATA)?;
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
        ::log::info!("removing data older than generation {generation}");
        db.delete_range_cf(data, 0u64.to_be_bytes(), current)?;
    }
    if newer {
        ::log::info!("removing data of an unfinished snapshot install (generation > {generation})");
        db.delete_range_cf(
            data,
            generation.saturating_add(1).to_be_bytes(),
            u64::MAX.to_be_bytes(),
        )?;
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
            let results = match self.apply_chunk(&entries, Wait::Never) {
                Err(e) if e.would_block() => {
                    let applier = StateMachine {
                        shared: self.shared.clone(),
                    };
                    off_runtime(move || applier.apply_chunk(&entries, Wait::Allowed)).await?
                }
                done => done?,
            };
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
        for expires_at_ms in [None, Some(1_700_000_000_000)] {
            let v = StoredValue {
                value: "héllo".into(),
                create_revision: 3,
                mod_revision: 9,
                version: 4,
                expires_at_ms,
            };
            let bytes = v.encode();
            assert_eq!(bytes[0], 1, "leading format byte");
            assert_eq!(StoredValue::decode(&bytes).expect("decode"), v);
        }
        let mut bytes = StoredValue {
            value: String::new(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            expires_at_ms: None,
        }
        .encode();
        assert!(StoredValue::decode(&bytes[..10]).is_err(), "truncated");
        bytes[0] = 2;
        assert!(StoredValue::decode(&bytes).is_err(), "unknown format");
        assert!(StoredValue::decode(&[]).is_err(), "empty");
    }
}
