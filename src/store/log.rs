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
//! A failed write or fsync poisons the store: the failing callbacks complete
//! with an error and every later append is refused, because after a failed
//! fsync the kernel may have dropped the dirty pages and retrying would lie.

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
use rocksdb::WriteOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CF_LOGS;
use super::CF_META;
use super::Error;
use super::cf;
use crate::raft::types::TypeConfig;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type Callback = IOFlushed<TypeConfig>;

/// The Raft log store. Cheap to clone: clones share the database and the
/// flusher thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: Arc<Flusher>,
    sync_writes: bool,
}

/// Reads log entries and the vote; handed to openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
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
        let thread = std::thread::Builder::new()
            .name("ferrium-wal-flusher".into())
            .spawn(move || run_flusher(thread_db, rx, thread_state, sync_writes))?;
        Ok(LogStore {
            db,
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

    fn reader(&self) -> LogReader {
        LogReader {
            db: self.db.clone(),
        }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync && self.sync_writes);
        self.db.write_opt(batch, &opts).map_err(|e| {
            self.flusher.state.poison(format!("write failed: {e}"));
            Error::Rocks(e)
        })
    }

    fn append_entries<I>(&self, entries: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>>,
    {
        self.flusher.state.check()?;
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(logs, entry.index().to_be_bytes(), encode(&entry)?);
        }
        self.write(batch, false)
    }
}

/// Runs `f`, adding its duration to `nanos`.
fn timed<T>(f: impl FnOnce() -> T, nanos: &AtomicU64) -> T {
    let start = std::time::Instant::now();
    let r = f();
    let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    nanos.fetch_add(spent, Ordering::Relaxed);
    r
}

/// The flusher loop: block for one callback, take everything else queued,
/// sync once, complete them all.
fn run_flusher(db: Arc<DB>, rx: mpsc::Receiver<Callback>, state: Arc<FlusherState>, sync: bool) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        pending.extend(rx.try_iter());

        let result = match state.check() {
            Err(e) => Err(e),
            Ok(()) if !sync => Ok(()),
            Ok(()) => match timed(|| db.flush_wal(true), &state.wal_sync_nanos) {
                Ok(()) => {
                    state.wal_syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    state.poison(format!("WAL fsync failed: {e}"));
                    Err(Error::Rocks(e))
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
        let last_purged: Option<LogIdOf<TypeConfig>> = read_meta(&self.db, KEY_LAST_PURGED)?;
        let logs = cf(&self.db, CF_LOGS)?;
        let mut it = self.db.raw_iterator_cf(logs);
        it.seek_to_last();
        let last = match it.value() {
            Some(bytes) => Some(decode::<EntryOf<TypeConfig>>(bytes)?.log_id()),
            None => {
                it.status().map_err(Error::from)?;
                None
            }
        };
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.flusher.state.check()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_VOTE, encode(vote)?);
        self.write(batch, true)?;
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
        self.write(batch, false)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(read_meta(&self.db, KEY_COMMITTED)?)
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
        self.append_entries(entries)?;
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
        self.write(batch, false)?;
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
        self.write(batch, false)?;
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
        let mut entries = Vec::new();
        if end.is_some_and(|e| e <= start) {
            return Ok(entries);
        }
        let logs = cf(&self.db, CF_LOGS)?;
        let mut it = self.db.raw_iterator_cf(logs);
        it.seek(start.to_be_bytes());
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let index = decode_index(key)?;
            if end.is_some_and(|e| index >= e) {
                break;
            }
            entries.push(decode(value)?);
            it.next();
        }
        it.status().map_err(Error::from)?;
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(read_meta(&self.db, KEY_VOTE)?)
    }
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
