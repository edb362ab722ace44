//! Durable storage on RocksDB: the Raft log, the state machine and snapshots.
//!
//! One RocksDB instance with one write-ahead log holds everything, in five
//! column families:
//!
//! - `logs`: big-endian `u64` log index -> log entry in the binary form of
//!   [`crate::raft::codec`] (JSON in logs written by earlier versions);
//! - `meta`: the vote, the committed log id and the last purged log id;
//! - `data`: user keys (behind a generation prefix, see [`state_machine`]) ->
//!   encoded [`StoredValue`];
//! - `history`: every version of every key since the compaction point, the
//!   changes of each revision, the applied request ids (see [`mvcc`]), and
//!   the leases with the keys attached to each (see [`lease`]);
//! - `sm_meta`: last applied log id, last membership, data generation,
//!   compaction point, lease clock, layout version.
//!
//! Because every write goes through the same WAL, what survives a crash is a
//! prefix of what was written: a synced log append also makes durable every
//! vote, truncation and apply written before it.
//!
//! Snapshot files live next to the database in `snapshots/`.
//!
//! This module knows nothing about HTTP. It must never acknowledge something
//! that is not on disk: when a write or an fsync fails, the error is returned
//! (never a panic) and the log store refuses further appends. Nor must it
//! make a tokio worker wait on the disk (see [`Wait`]).

mod lease;
mod log;
mod mvcc;
mod snapshot;
mod state_machine;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::raft::types::TypeConfig;

use rocksdb::BlockBasedOptions;
use rocksdb::Cache;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::Options;

/// The largest key a committed command may carry: what a snapshot can hold.
/// Configuration is validated against it, so no entry is ever committed that
/// would make every later snapshot fail.
pub const MAX_KEY_BYTES: u64 = snapshot::MAX_KEY_LEN as u64;
/// The largest value a committed command may carry: 64 MiB less the 34
/// bytes of revisions stored with it (as in every earlier release). A
/// snapshot record holds a little more ([`snapshot`]'s limit), room for a
/// lease id and for kept request results.
pub const MAX_VALUE_BYTES: u64 = (64 << 20) - 34;

pub use self::lease::LeaseInfo;
pub use self::lease::LeaseTable;
pub use self::lease::MAX_TTL_SECS;
pub use self::log::FAIL_WAL_SYNC_ENV;
pub use self::log::LogReader;
pub use self::log::LogStore;
pub use self::mvcc::ID_WINDOW_MS;
pub use self::mvcc::MAX_IDS;
pub use self::snapshot::SnapshotFile;
pub use self::snapshot::SnapshotReader;
pub use self::snapshot::SnapshotReceiver;
pub use self::snapshot::Summary;
/// The snapshot file format this build writes (and the newest it reads).
pub const SNAPSHOT_FORMAT_VERSION: u32 = self::snapshot::FORMAT_VERSION;
pub use self::state_machine::MemoryUsage;
pub use self::state_machine::SnapshotBuilder;
pub use self::state_machine::StateMachine;
pub use self::state_machine::StateReader;
pub use self::state_machine::StoredValue;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_DATA: &str = "data";
pub(crate) const CF_SM_META: &str = "sm_meta";

/// Block compression of the SST files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

/// RocksDB compaction style.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompactionStyle {
    #[default]
    Level,
    Universal,
}

/// RocksDB settings, taken from the `[storage]` configuration section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub compression: Compression,
    pub compaction_style: CompactionStyle,
    /// Shared LRU block cache for all column families.
    pub block_cache_bytes: usize,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// `false` turns every fsync off (votes and log appends): fast, and a
    /// power loss can lose acknowledged writes. For benchmarks only.
    pub sync_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compression: Compression::default(),
            compaction_style: CompactionStyle::default(),
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
            sync_writes: true,
        }
    }
}

/// What can go wrong in the store.
#[derive(Debug)]
pub enum Error {
    /// RocksDB refused a read or a write.
    Rocks(rocksdb::Error),
    /// A file operation (snapshot files, directories) failed.
    Io(io::Error),
    /// Bytes on disk do not decode: the store or a snapshot file is damaged
    /// or was written by an incompatible version.
    Corrupt(String),
    /// An earlier fsync or write failed; the log store no longer acknowledges
    /// anything until the process is restarted and recovers from disk.
    Poisoned(String),
    /// A call made with [`Wait::Never`] would have had to wait; it has had
    /// no effect and is made again where it may wait.
    WouldBlock,
}

impl Error {
    /// Whether a call made with [`Wait::Never`] failed only because it
    /// would have had to wait (RocksDB answers `Incomplete` then).
    pub(crate) fn would_block(&self) -> bool {
        match self {
            Error::WouldBlock => true,
            Error::Rocks(e) => e.kind() == rocksdb::ErrorKind::Incomplete,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rocks(e) => write!(f, "rocksdb: {e}"),
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Corrupt(msg) => write!(f, "corrupt data: {msg}"),
            Error::Poisoned(msg) => write!(
                f,
                "storage failed earlier and stopped acknowledging writes ({msg}); restart the node"
            ),
            Error::WouldBlock => write!(f, "a storage call would have had to wait"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rocks(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Rocks(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Corrupt(_) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Whether a storage call may wait: on the disk, on a RocksDB write stall,
/// on a lock held by a slow call.
///
/// A RocksDB call can block for as long as a write stall or a compaction
/// lasts. On a runtime worker that would also stall every task queued behind
/// it there: heartbeats, peer RPCs, client requests. So the hot calls
/// (appends, applies, point reads) first run on the worker with
/// [`Wait::Never`], where RocksDB refuses to wait (`no_slowdown` on writes,
/// the block-cache tier on reads) and locks are only tried; only when that
/// fails with [`Error::WouldBlock`] do they run again with [`Wait::Allowed`]
/// on the blocking pool ([`off_runtime`]). The hop to the pool costs more
/// than a memtable write or a cached read, so it is paid only when needed.
/// What an inline write still does on the worker is the memtable insert, the
/// WAL `write()` into the page cache and, once per full memtable, the switch
/// to a new one; the WAL fsync is the flusher thread's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Never,
    Allowed,
}

impl Wait {
    /// Write options for an unsynced write in this mode.
    pub(crate) fn write_options(self) -> rocksdb::WriteOptions {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_no_slowdown(self == Wait::Never);
        opts
    }

    /// Read options for this mode.
    pub(crate) fn read_options(self) -> rocksdb::ReadOptions {
        let mut opts = rocksdb::ReadOptions::default();
        if self == Wait::Never {
            opts.set_read_tier(rocksdb::ReadTier::BlockCache);
        }
        opts
    }
}

/// Runs a RocksDB call (a write, an fsync, a scan) on tokio's blocking pool
/// and waits for it without holding a runtime worker. Outside a tokio
/// runtime `f` simply runs here.
pub(crate) async fn off_runtime<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::Io(io::Error::other(format!("storage task failed: {e}"))))?,
        Err(_) => f(),
    }
}

/// Looks a column family up; they are all created by [`open`].
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, Error> {
    db.cf_handle(name)
        .ok_or_else(|| Error::Corrupt(format!("column family `{name}` is missing")))
}

/// What [`restore`] made.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    /// The revision (log index) the data is at; the new cluster's first
    /// write gets the next one.
    pub revision: u64,
    pub keys: u64,
}

/// Makes `dir` the data directory of member `id` of a new cluster of
/// `members`, holding what the snapshot file `file` holds: every member of
/// the new cluster restores the same file. The data keeps its revisions,
/// leases and history; the members start as a cluster that has not elected
/// a leader yet (its `cluster.initial_members` is not used again). Refuses a
/// `dir` that exists and is not empty, and a file that does not verify.
pub async fn restore(
    file: &Path,
    dir: &Path,
    id: u64,
    members: std::collections::BTreeMap<u64, crate::raft::types::Node>,
    opts: &StoreOptions,
) -> Result<Restored, Error> {
    use openraft::alias::VoteOf;
    use openraft::storage::RaftLogStorage;
    if !members.contains_key(&id) {
        return Err(Error::Corrupt(format!(
            "member {id} is not among the new members {:?}",
            members.keys().collect::<Vec<_>>()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not empty; restore only into a new directory",
                        dir.display()
                    ),
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io(e)),
    }
    let snapshot = SnapshotFile::open(file)?;
    let summary = snapshot.summary()?;
    let Some(last) = summary.meta.last_log_id else {
        return Err(Error::Corrupt(format!(
            "snapshot file {} holds no applied entry: nothing to restore",
            file.display()
        )));
    };
    let voters: std::collections::BTreeSet<u64> = members.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], members)
        .map_err(|e| Error::Corrupt(format!("the new members are not valid: {e}")))?;
    let stored = openraft::alias::StoredMembershipOf::<TypeConfig>::new(Some(last), membership);
    let (mut log, sm) = open(dir, opts)?;
    let meta = summary.meta.clone();
    tokio::task::spawn_blocking(move || sm.restore_from(snapshot, &meta, &stored))
        .await
        .map_err(|e| Error::Io(io::Error::other(format!("the restore task failed: {e}"))))??;
    // The log starts after the snapshot, and this member has seen its term:
    // the new cluster's first election is in a later term, and its first
    // entry comes after the snapshot's.
    let term = last.leader_id.term;
    log.save_vote(&VoteOf::<TypeConfig>::new(term, id))
        .await
        .map_err(Error::Io)?;
    log.purge(last).await.map_err(Error::Io)?;
    Ok(Restored {
        revision: last.index(),
        keys: summary.keys,
    })
}

/// Opens (or creates) the store under `dir`: the database in `dir/db`,
/// snapshot files in `dir/snapshots`.
///
/// Opening reads only metadata (the last applied position and the data
/// generation), never the key space, so it takes the same time for ten keys
/// and for ten million.
pub fn open(dir: &Path, opts: &StoreOptions) -> Result<(LogStore, StateMachine), Error> {
    let db_dir = dir.join("db");
    let snapshot_dir = dir.join("snapshots");
    std::fs::create_dir_all(&db_dir)?;
    std::fs::create_dir_all(&snapshot_dir)?;

    let cache = Cache::new_lru_cache(opts.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);

    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    cf_opts.set_write_buffer_size(opts.write_buffer_bytes);
    cf_opts.set_compression_type(match opts.compression {
        Compression::None => rocksdb::DBCompressionType::None,
        Compression::Snappy => rocksdb::DBCompressionType::Snappy,
        Compression::Lz4 => rocksdb::DBCompressionType::Lz4,
        Compression::Zstd => rocksdb::DBCompressionType::Zstd,
    });
    cf_opts.set_compaction_style(match opts.compaction_style {
        CompactionStyle::Level => rocksdb::DBCompactionStyle::Level,
        CompactionStyle::Universal => rocksdb::DBCompactionStyle::Universal,
    });

    let mut db_opts = cf_opts.clone();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    // Memory: all memtables together stay under two write buffers, the
    // block cache under its size; nothing else grows with the data.
    db_opts.set_db_write_buffer_size(2 * opts.write_buffer_bytes);
    // Bound WAL replay at start-up: column families holding old WAL data are
    // flushed once the WALs exceed this.
    db_opts.set_max_total_wal_size(4 * opts.write_buffer_bytes as u64);

    let cfs = [CF_LOGS, CF_META, CF_DATA, mvcc::CF_HISTORY, CF_SM_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
    let db = DB::open_cf_descriptors(&db_opts, &db_dir, cfs)?;

    if !opts.sync_writes {
        ::log::warn!(
            "storage.sync_writes = false: votes and log entries are NOT fsynced; \
             a power loss or kernel crash can lose acknowledged writes and break \
             Raft safety. Use this only for benchmarks and throwaway clusters."
        );
    }

    let db = Arc::new(db);
    let log_store = LogStore::new(db.clone(), opts.sync_writes)?;
    let state_machine = StateMachine::open(db, snapshot_dir, cf_opts)?;
    Ok((log_store, state_machine))
}

#[cfg(test)]
pub(crate) mod tests {
    //! A storage call that has to wait (here: for a RocksDB write stall)
    //! must not hold a runtime worker: on a runtime with one worker, other
    //! tasks (heartbeats, peer RPCs, requests) still run meanwhile.

    use std::sync::mpsc;
    use std::time::Duration;

    use openraft::EntryPayload;
    use openraft::RaftLogReader;
    use openraft::alias::EntryOf;
    use openraft::alias::LogIdOf;
    use openraft::alias::VoteOf;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::IOFlushed;
    use openraft::storage::RaftLogStorage;
    use openraft::storage::RaftStateMachine;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::raft::types::Command;
    use crate::raft::types::TypeConfig;

    /// Generous bound for something that takes microseconds.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A fresh directory under the system temp dir, removed when dropped
    /// (also when the test fails).
    pub(crate) struct TempDir(std::path::PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> Self {
            let path = std::env::temp_dir().join(format!("ferrium-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entry(index: u64, key: &str) -> EntryOf<TypeConfig> {
        EntryOf::<TypeConfig> {
            log_id: LogIdOf::<TypeConfig>::new(
                LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Normal(Command::Set {
                key: key.into(),
                value: "v".into(),
            }),
        }
    }

    /// RocksDB's flushes and compactions stopped (the thread pools of its
    /// default environment, shared by every database of the process, set
    /// to no threads) until dropped.
    struct BackgroundWorkStopped(rocksdb::Env);

    impl BackgroundWorkStopped {
        fn new() -> Self {
            let mut env = rocksdb::Env::new().expect("rocksdb default env");
            env.set_background_threads(0);
            env.set_high_priority_background_threads(0);
            BackgroundWorkStopped(env)
        }
    }

    impl Drop for BackgroundWorkStopped {
        fn drop(&mut self) {
            self.0.set_background_threads(1);
            self.0.set_high_priority_background_threads(1);
        }
    }

    /// Writes to `db` until RocksDB stops writes: its memtables are full and
    /// cannot be flushed while background work is stopped.
    fn fill_until_write_stall(db: &DB) {
        let value = vec![b'x'; 1024];
        let mut no_wait = rocksdb::WriteOptions::default();
        no_wait.set_no_slowdown(true);
        for i in 0..100_000u32 {
            let key = format!("fill-{i:08}");
            match db.put_cf_opt(cf(db, CF_DATA).expect("data cf"), key, &value, &no_wait) {
                Ok(()) => {}
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => return,
                Err(e) => panic!("fill write failed: {e}"),
            }
        }
        panic!("no write stall after 100,000 writes");
    }

    /// A runtime with one worker: a storage call that blocks it stops
    /// every other task.
    fn one_worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Whether a task spawned on `rt` runs.
    fn runs_other_tasks(rt: &tokio::runtime::Runtime) -> bool {
        let (tx, rx) = mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(DEADLINE).is_ok()
    }

    /// Spawns `call` on `rt` and returns once it has started (it is then
    /// inside the storage call, or past it: it does not yield before).
    fn start<F>(rt: &tokio::runtime::Runtime, call: F) -> mpsc::Receiver<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (started_tx, started) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        rt.spawn(async move {
            let _ = started_tx.send(());
            call.await;
            let _ = done_tx.send(());
        });
        started.recv_timeout(DEADLINE).expect("task started");
        done
    }

    #[test]
    fn storage_calls_in_a_write_stall_leave_the_runtime_free() {
        let dir = TempDir::new("stall");
        let opts = StoreOptions {
            write_buffer_bytes: 64 << 10,
            ..StoreOptions::default()
        };
        let (log, sm) = open(dir.path(), &opts).expect("open store");
        let stopped = BackgroundWorkStopped::new();
        fill_until_write_stall(&log.db_for_tests());

        // Each call on a runtime of its own, so that each is checked alone.
        let mut blocked = Vec::new();
        let mut waiting = Vec::new();

        let rt_append = one_worker_runtime();
        let (flushed_tx, flushed) = TypeConfig::oneshot();
        let mut appender = log.clone();
        let appended = start(&rt_append, async move {
            let callback = IOFlushed::signal(flushed_tx);
            appender
                .append([entry(1, "a")], callback)
                .await
                .expect("append");
        });
        if !runs_other_tasks(&rt_append) {
            blocked.push("append");
        }
        waiting.push(("append", appended));

        let rt_vote = one_worker_runtime();
        let mut voter = log.clone();
        let voted = start(&rt_vote, async move {
            voter
                .save_vote(&VoteOf::<TypeConfig>::new_committed(1, 1))
                .await
                .expect("save vote");
        });
        if !runs_other_tasks(&rt_vote) {
            blocked.push("vote");
        }
        waiting.push(("vote", voted));

        let rt_apply = one_worker_runtime();
        let mut applier = sm;
        let applied = start(&rt_apply, async move {
            let items = vec![Ok((entry(1, "a"), None))];
            applier
                .apply(futures_util::stream::iter(items))
                .await
                .expect("apply");
        });
        if !runs_other_tasks(&rt_apply) {
            blocked.push("apply");
        }
        waiting.push(("apply", applied));

        // Flushes run again: the stall ends and every call completes.
        drop(stopped);
        for (what, done) in waiting {
            done.recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("{what} completes once the stall ends"));
        }
        assert!(
            blocked.is_empty(),
            "waiting for a write stall, these held the runtime's only worker: {blocked:?}"
        );
        let flushed = rt_append
            .block_on(async { tokio::time::timeout(DEADLINE, flushed).await })
            .expect("append flushed in time")
            .expect("flush callback");
        assert!(flushed.is_ok(), "append flushed: {flushed:?}");
        let mut reader = rt_append.block_on(log.clone().get_log_reader());
        let entries = rt_append
            .block_on(reader.try_get_log_entries(1..2))
            .expect("read log");
        assert_eq!(entries.len(), 1);

        drop((rt_append, rt_vote, rt_apply));
        drop(log);
    }
}
