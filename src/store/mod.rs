//! Durable storage on RocksDB: the Raft log, the state machine and snapshots.
//!
//! One RocksDB instance with one write-ahead log holds everything, in four
//! column families:
//!
//! - `logs`: big-endian `u64` log index -> log entry in the binary form of
//!   [`crate::raft::codec`] (JSON in logs written by earlier versions);
//! - `meta`: the vote, the committed log id and the last purged log id;
//! - `data`: user keys (behind a generation prefix, see [`state_machine`]) ->
//!   encoded [`StoredValue`];
//! - `sm_meta`: last applied log id, last membership, data generation.
//!
//! Because every write goes through the same WAL, what survives a crash is a
//! prefix of what was written: a synced log append also makes durable every
//! vote, truncation and apply written before it.
//!
//! Snapshot files live next to the database in `snapshots/`.
//!
//! This module knows nothing about HTTP. It must never acknowledge something
//! that is not on disk: when a write or an fsync fails, the error is returned
//! (never a panic) and the log store refuses further appends.

mod log;
mod snapshot;
mod state_machine;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::BlockBasedOptions;
use rocksdb::Cache;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::Options;

/// The largest key a committed command may carry: what a snapshot can hold.
/// Configuration is validated against it, so no entry is ever committed that
/// would make every later snapshot fail.
pub const MAX_KEY_BYTES: u64 = snapshot::MAX_KEY_LEN as u64;
/// The largest value a committed command may carry (a snapshot record holds
/// the value with its revisions).
pub const MAX_VALUE_BYTES: u64 =
    snapshot::MAX_VALUE_LEN as u64 - state_machine::StoredValue::MAX_OVERHEAD as u64;

pub use self::log::FAIL_WAL_SYNC_ENV;
pub use self::log::LogReader;
pub use self::log::LogStore;
pub use self::snapshot::SnapshotFile;
pub use self::snapshot::SnapshotReader;
pub use self::snapshot::SnapshotReceiver;
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

/// Looks a column family up; they are all created by [`open`].
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, Error> {
    db.cf_handle(name)
        .ok_or_else(|| Error::Corrupt(format!("column family `{name}` is missing")))
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

    let cfs = [CF_LOGS, CF_META, CF_DATA, CF_SM_META]
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
