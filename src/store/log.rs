//! The Raft log and vote: openraft's `RaftLogStorage` on the `logs` and
//! `meta` column families.
//!
//! Durability is the point of this module. A vote is written with a synced
//! write before `save_vote` returns. An append is written as one unsynced
//! write batch (so it is readable at once) and its completion callback is
//! handed to the one group-commit flusher thread: the flusher takes every
//! callback queued so far, syncs the WAL once (`flush_wal(true)`) and only
//! then completes them. Many concurrent appends therefore share one fsync, and
//! no entry is acknowledged before it is durable.
//!
//! Entries are stored in the compact binary form of [`crate::raft::codec`]
//! (entries written as JSON by older versions are still read). The newest
//! entries are also kept decoded in memory ([`EntryCache`]): right after an
//! append, openraft reads them back once per follower to replicate them and
//! once more to apply them, and serving those reads from memory saves a
//! RocksDB scan and a decode each time. The cache always holds a suffix of
//! the log (appends, truncations and purges change it under the same lock as
//! RocksDB), so a read it can serve returns exactly what RocksDB would.
//!
//! No RocksDB call waits on a tokio worker, so a write stall or a slow fsync
//! delays only the storage call, not the heartbeats and requests sharing the
//! runtime: log writes are tried on the worker with RocksDB told not to wait
//! and are made on the blocking pool only if it would have ([`super::Wait`]);
//! the vote (synced) and reads the cache cannot serve always run there.
//!
//! A failed write or fsync poisons the store: the failing callbacks complete
//! with an error and every later append is refused, because after a failed
//! fsync the kernel may have dropped the dirty pages and retrying would lie.
//!
//! For tests only, [`FAIL_WAL_SYNC_ENV`] arms a failpoint that makes WAL
//! syncs fail on demand, so that the handling of a storage failure can be
//! exercised on a real process.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use rocksdb::DB;
use rocksdb::WriteBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CF_LOGS;
use super::CF_META;
use super::Error;
use super::Wait;
use super::cf;
use super::off_runtime;
use crate::raft::codec;
use crate::raft::types::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type Callback = IOFlushed<TypeConfig>;
/// A log entry with the size of its encoded form.
type CachedEntry = (EntryOf<TypeConfig>, usize);

/// TEST ONLY. When this environment variable names a file at start-up, every
/// WAL sync fails while that file exists, exactly as a failed fsync would
/// (the store is poisoned). The integration tests use it to inject a disk
/// failure on one member. Never set it in production: its long name and the
/// warning logged at start-up are there so that it is not set by accident.
pub const FAIL_WAL_SYNC_ENV: &str = "FERRIUM_TEST_ONLY_FAIL_WAL_SYNC_WHEN_EXISTS";

/// The armed failpoint of [`FAIL_WAL_SYNC_ENV`], if any.
fn wal_sync_failpoint() -> Option<std::path::PathBuf> {
    let path = std::env::var_os(FAIL_WAL_SYNC_ENV)?;
    ::log::warn!(
        "{FAIL_WAL_SYNC_ENV} is set (a test-only failpoint): WAL syncs will fail while {} exists; unset it outside tests",
        std::path::Path::new(&path).display()
    );
    Some(path.into())
}

/// Most entries kept decoded in memory.
const CACHE_ENTRIES: usize = 8192;
/// Most bytes (encoded size) of entries kept decoded in memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The Raft log store. Cheap to clone: clones share the database, the entry
/// cache and the flusher thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    cache: Arc<Mutex<EntryCache>>,
    flusher: Arc<Flusher>,
    sync_writes: bool,
}

/// Reads log entries and the vote; handed to openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
    cache: Arc<Mutex<EntryCache>>,
}

/// The newest log entries, decoded: a contiguous suffix of the log, or
/// nothing. Bounded by [`CACHE_ENTRIES`] and [`CACHE_BYTES`]; the oldest
/// entries are dropped first.
#[derive(Default)]
struct EntryCache {
    /// Entries with their encoded sizes, by increasing index.
    entries: VecDeque<(EntryOf<TypeConfig>, usize)>,
    bytes: usize,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.index())
    }

    /// Adds an entry just written to the log.
    fn push(&mut self, entry: EntryOf<TypeConfig>, size: usize) {
        let index = entry.index();
        if let Some(last) = self.last_index() {
            if index <= last {
                self.truncate_from(index);
            } else if index != last + 1 {
                self.clear();
            }
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Drops the entries at `index` and after.
    fn truncate_from(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Drops the entries up to and including `index`.
    fn purge_to(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries in `start..end`, if the cache holds all of them that the
    /// log holds; `None` when the log must be read.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<EntryOf<TypeConfig>>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        if start < first || start > last {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let stop = end.map_or(last + 1, |e| e.min(last + 1));
        let count = usize::try_from(stop.saturating_sub(start)).ok()?;
        Some(
            self.entries
                .range(from..)
                .take(count)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The sending side of the group-commit flusher. Dropping the last one ends
/// the thread after it has completed what is queued.
struct Flusher {
    tx: Option<mpsc::Sender<Callback>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<FlusherState>,
}

impl Drop for Flusher {
    /// Waits for the thread, so that the database is closed when the last
    /// handle is gone and can be reopened at once.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct FlusherState {
    poisoned: AtomicBool,
    poison_reason: Mutex<String>,
    wal_syncs: AtomicU64,
    /// Total time spent in WAL syncs, in nanoseconds.
    wal_sync_nanos: AtomicU64,
}

impl FlusherState {
    fn poison(&self, reason: String) {
        ::log::error!("log store stops acknowledging writes: {reason}");
        if let Ok(mut r) = self.poison_reason.lock() {
            *r = reason;
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), Error> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = self
            .poison_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        Err(Error::Poisoned(reason))
    }
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, sync_writes: bool) -> Result<Self, Error> {
        cf(&db, CF_LOGS)?;
        cf(&db, CF_META)?;
        let state = Arc::new(FlusherState {
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(String::new()),
            wal_syncs: AtomicU64::new(0),
            wal_sync_nanos: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<Callback>();
        let thread_db = db.clone();
        let thread_state = state.clone();
        let failpoint = wal_sync_failpoint();
        let thread = std::thread::Builder::new()
            .name("ferrium-wal-flusher".into())
            .spawn(move || run_flusher(thread_db, rx, thread_state, sync_writes, failpoint))?;
        Ok(LogStore {
            db,
            cache: Arc::new(Mutex::new(EntryCache::default())),
            flusher: Arc::new(Flusher {
                tx: Some(tx),
                thread: Some(thread),
                state,
            }),
            sync_writes,
        })
    }

    /// Number of WAL syncs the flusher performed (each may cover many
    /// appends). Votes are synced separately and not counted here.
    pub fn wal_syncs(&self) -> u64 {
        self.flusher.state.wal_syncs.load(Ordering::Relaxed)
    }

    /// Total seconds spent syncing the WAL since the store was opened.
    pub fn wal_sync_seconds(&self) -> f64 {
        self.flusher.state.wal_sync_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    #[cfg(test)]
    pub(crate) fn db_for_tests(&self) -> Arc<DB> {
        self.db.clone()
    }

    fn reader(&self) -> LogReader {
        LogReader {
            db: self.db.clone(),
            cache: self.cache.clone(),
        }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        self.write_with(batch, sync, Wait::Allowed)
    }

    fn write_with(&self, batch: WriteBatch, sync: bool, wait: Wait) -> Result<(), Error> {
        let mut opts = wait.write_options();
        opts.set_sync(sync && self.sync_writes);
        self.db.write_opt(batch, &opts).map_err(|e| {
            let e = Error::Rocks(e);
            if !e.would_block() {
                self.flusher.state.poison(format!("write failed: {e}"));
            }
            e
        })
    }

    /// Writes `batch` unsynced and then brings the cache in line with
    /// `update`, under the cache lock: RocksDB and the cache change together,
    /// so a reader never sees one without the other.
    ///
    /// The write is tried on the caller's thread first, with RocksDB told
    /// not to wait; only if it would have (a write stall) is it made on the
    /// blocking pool. Holding the cache lock here is safe: openraft makes
    /// one log write at a time, and readers hold the lock only to copy
    /// entries out.
    async fn write_logs<F>(&self, batch: WriteBatch, update: F) -> Result<(), Error>
    where
        F: FnOnce(&mut EntryCache, &Result<(), Error>) + Send + 'static,
    {
        {
            let mut cache = self.lock_cache();
            let done = self.write_with(WriteBatch::from_data(batch.data()), false, Wait::Never);
            if !done.as_ref().is_err_and(Error::would_block) {
                update(&mut cache, &done);
                return done;
            }
        }
        let store = self.clone();
        off_runtime(move || {
            let mut cache = store.lock_cache();
            let done = store.write(batch, false);
            update(&mut cache, &done);
            done
        })
        .await
    }

    /// The write batch of `entries` and the entries with their encoded sizes.
    fn encode_entries<I>(&self, entries: I) -> Result<(WriteBatch, Vec<CachedEntry>), Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>>,
    {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        let mut encoded = Vec::new();
        let mut buf = Vec::with_capacity(256);
        for entry in entries {
            buf.clear();
            codec::encode_entry(&entry, &mut buf)
                .map_err(|e| Error::Corrupt(format!("cannot encode log entry: {e}")))?;
            batch.put_cf(logs, entry.index().to_be_bytes(), &buf);
            encoded.push((entry, buf.len()));
        }
        Ok((batch, encoded))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        lock(&self.cache)
    }
}

/// Locks the entry cache. A panic while it was held may have left it half
/// updated, so it is emptied then (the log is read from RocksDB instead).
fn lock(cache: &Mutex<EntryCache>) -> std::sync::MutexGuard<'_, EntryCache> {
    cache.lock().unwrap_or_else(|poisoned| {
        cache.clear_poison();
        let mut guard = poisoned.into_inner();
        guard.clear();
        guard
    })
}

fn decode_entry(bytes: &[u8]) -> Result<EntryOf<TypeConfig>, Error> {
    codec::decode_entry(bytes).map_err(|e| Error::Corrupt(format!("log entry: {e}")))
}

/// Runs `f`, adding its duration to `nanos`.
fn timed<T>(f: impl FnOnce() -> T, nanos: &AtomicU64) -> T {
    let start = std::time::Instant::now();
    let r = f();
    let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    nanos.fetch_add(spent, Ordering::Relaxed);
    r
}

/// Syncs the WAL, unless the test-only failpoint says this sync fails.
fn sync_wal(db: &DB, failpoint: Option<&std::path::Path>) -> Result<(), Error> {
    if failpoint.is_some_and(|p| p.exists()) {
        return Err(Error::Io(io::Error::other(format!(
            "injected by the test-only failpoint {FAIL_WAL_SYNC_ENV}"
        ))));
    }
    db.flush_wal(true).map_err(Error::Rocks)
}

/// The flusher loop: block for one callback, take everything else queued,
/// sync once, complete them all.
fn run_flusher(
    db: Arc<DB>,
    rx: mpsc::Receiver<Callback>,
    state: Arc<FlusherState>,
    sync: bool,
    failpoint: Option<std::path::PathBuf>,
) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        pending.extend(rx.try_iter());

        let result = match state.check() {
            Err(e) => Err(e),
            Ok(()) if !sync => Ok(()),
            Ok(()) => match timed(
                || sync_wal(&db, failpoint.as_deref()),
                &state.wal_sync_nanos,
            ) {
                Ok(()) => {
                    state.wal_syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    state.poison(format!("WAL fsync failed: {e}"));
                    Err(e)
                }
            },
        };
        for callback in pending.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            callback.io_completed(r);
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let db = self.db.clone();
        Ok(off_runtime(move || log_state(&db)).await?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let vote = encode(vote)?;
        let store = self.clone();
        off_runtime(move || {
            store.flusher.state.check()?;
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(&store.db, CF_META)?, KEY_VOTE, vote);
            store.write(batch, true)
        })
        .await?;
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let meta = cf(&self.db, CF_META)?;
        let mut batch = WriteBatch::default();
        match committed {
            Some(c) => batch.put_cf(meta, KEY_COMMITTED, encode(&c)?),
            None => batch.delete_cf(meta, KEY_COMMITTED),
        }
        self.write_logs(batch, |_, _| {}).await?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        let db = self.db.clone();
        Ok(off_runtime(move || read_meta(&db, KEY_COMMITTED)).await?)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.flusher.state.check()?;
        let (batch, encoded) = self.encode_entries(entries)?;
        self.write_logs(batch, |cache, done| {
            if done.is_ok() {
                for (entry, size) in encoded {
                    cache.push(entry, size);
                }
            }
        })
        .await?;
        self.flusher
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("log flusher is shut down"))?
            .send(callback)
            .map_err(|_| io::Error::other("log flusher thread is gone"))?;
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index().saturating_add(1));
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS)?,
            from.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        self.write_logs(batch, move |cache, done| match done {
            Ok(()) => cache.truncate_from(from),
            Err(_) => cache.clear(),
        })
        .await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        // One batch: the purge marker and the deletion land together, so the
        // log never has a hole below its first entry.
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_LAST_PURGED, encode(&log_id)?);
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS)?,
            0u64.to_be_bytes(),
            log_id.index().saturating_add(1).to_be_bytes(),
        );
        let upto = log_id.index();
        self.write_logs(batch, move |cache, _| cache.purge_to(upto))
            .await?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        // The newest entries come from memory without leaving the runtime,
        // unless a log write holds the cache (it may be in a write stall).
        if let Ok(cache) = self.cache.try_lock()
            && let Some(cached) = cache.get(start, end)
        {
            return Ok(cached);
        }
        let reader = self.clone();
        Ok(off_runtime(move || reader.read_entries(start, end)).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        let db = self.db.clone();
        Ok(off_runtime(move || read_meta(&db, KEY_VOTE)).await?)
    }
}

impl LogReader {
    /// The entries in `start..end`, from the cache or else from RocksDB.
    fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<EntryOf<TypeConfig>>, Error> {
        if let Some(cached) = lock(&self.cache).get(start, end) {
            return Ok(cached);
        }
        let logs = cf(&self.db, CF_LOGS)?;
        let mut it = self.db.raw_iterator_cf(logs);
        it.seek(start.to_be_bytes());
        let mut entries = Vec::new();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let index = decode_index(key)?;
            if end.is_some_and(|e| index >= e) {
                break;
            }
            entries.push(decode_entry(value)?);
            it.next();
        }
        it.status()?;
        Ok(entries)
    }
}

/// The last purged and the last present log id.
fn log_state(db: &DB) -> Result<LogState<TypeConfig>, Error> {
    let last_purged: Option<LogIdOf<TypeConfig>> = read_meta(db, KEY_LAST_PURGED)?;
    let logs = cf(db, CF_LOGS)?;
    let mut it = db.raw_iterator_cf(logs);
    it.seek_to_last();
    let last = match it.value() {
        Some(bytes) => Some(decode_entry(bytes)?.log_id()),
        None => {
            it.status()?;
            None
        }
    };
    Ok(LogState {
        last_log_id: last.or(last_purged),
        last_purged_log_id: last_purged,
    })
}

fn read_meta<T: DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, Error> {
    match db.get_pinned_cf(cf(db, CF_META)?, key)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn decode_index(key: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt(format!("log key of {} bytes, want 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("cannot encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("cannot decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Command;
    use openraft::EntryPayload;
    use openraft::impls::leader_id_adv::LeaderId;

    fn entry(index: u64) -> EntryOf<TypeConfig> {
        EntryOf::<TypeConfig> {
            log_id: LogIdOf::<TypeConfig>::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Normal(Command::Delete {
                key: index.to_string(),
            }),
        }
    }

    fn indexes(entries: Option<Vec<EntryOf<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn cache_serves_only_a_suffix_it_holds() {
        let mut cache = EntryCache::default();
        assert_eq!(indexes(cache.get(0, None)), None);
        for i in 5..10 {
            cache.push(entry(i), 10);
        }
        assert_eq!(
            indexes(cache.get(4, None)),
            None,
            "before the cache: read the log"
        );
        assert_eq!(indexes(cache.get(10, None)), None);
        assert_eq!(indexes(cache.get(5, Some(7))), Some(vec![5, 6]));
        assert_eq!(indexes(cache.get(8, Some(100))), Some(vec![8, 9]));

        cache.truncate_from(8);
        assert_eq!(indexes(cache.get(6, None)), Some(vec![6, 7]));
        cache.push(entry(8), 10);
        assert_eq!(indexes(cache.get(7, None)), Some(vec![7, 8]));

        // Overwriting an index drops it and everything after it.
        cache.push(entry(6), 10);
        assert_eq!(indexes(cache.get(5, None)), Some(vec![5, 6]));

        // A gap restarts the cache.
        cache.push(entry(20), 10);
        assert_eq!(indexes(cache.get(5, None)), None);
        assert_eq!(indexes(cache.get(20, None)), Some(vec![20]));

        cache.purge_to(20);
        assert_eq!(indexes(cache.get(20, None)), None);
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn cache_is_bounded() {
        let mut cache = EntryCache::default();
        for i in 0..(CACHE_ENTRIES as u64 + 10) {
            cache.push(entry(i), 1);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        assert_eq!(cache.first_index(), Some(10));
        cache.push(entry(CACHE_ENTRIES as u64 + 10), CACHE_BYTES);
        assert_eq!(
            cache.entries.len(),
            1,
            "one large entry pushes out the rest"
        );
    }
}
