//! Snapshot files: building one from a point-in-time view of the state
//! machine, verifying one, and installing one atomically.
//!
//! File format (version 2), all integers little-endian:
//!
//! ```text
//! magic "FERRSNAP" | format version u32 | meta length u32 | meta (JSON)
//! { tag u8 | key length u32 | key | value length u32 | value }*
//! 0x00 | record count u64
//! CRC-32C u32 of every byte before it
//! ```
//!
//! Tag 1 is a key with its stored value (`data`), tag 2 a record of the
//! `history` column family (versions, the change index, request ids, leases
//! and their keys; see the mvcc and lease modules), tag 3 a replicated
//! `sm_meta` value (the compaction point, the request-id bookkeeping, the
//! lease clock). Records of each tag come in key
//! order, tag 1 first. Versions that no read can reach at the compaction
//! point are left out. Version 1 files hold tag 1 only; installing one gives
//! every key a history record at its `mod_revision` and puts the compaction
//! point at the snapshot's index.
//!
//! Records are copied verbatim (stored values carry their own format byte).
//! A file is written as `*.part`, fsynced, renamed to `snap-<index>-<n>.snap`
//! and the directory fsynced; older snapshot files are then deleted. Only
//! the newest file is kept, and it is what `get_current_snapshot` returns.
//!
//! Memory is bounded by buffers, never by the number of keys: building
//! streams a RocksDB iterator into the file through a 256 KiB buffer;
//! installing first reads the whole file to check its checksum and
//! structure, then streams the records into SST files of about 64 MiB of
//! keys and values (an SST writer holds one file's index and filter, a few
//! MiB) that RocksDB
//! ingests in one atomic step, bypassing the memtables. Only a file that
//! passes verification is applied, under a new data generation that becomes
//! visible with one synced pointer switch (see the
//! state machine module). A damaged file is rejected and changes nothing.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::StoredMembershipOf;
use rocksdb::IngestExternalFileOptions;
use rocksdb::ReadOptions;
use rocksdb::SstFileWriter;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use sha2::Digest;
use sha2::Sha256;

use super::CF_DATA;
use super::CF_SM_META;
use super::Error;
use super::cf;
use super::log::decode;
use super::log::encode;
use super::mvcc;
use super::mvcc::CF_HISTORY;
use super::mvcc::SnapshotFilter;
use super::state_machine::AppliedMeta;
use super::state_machine::KEY_GENERATION;
use super::state_machine::KEY_LAST_APPLIED;
use super::state_machine::KEY_MEMBERSHIP;
use super::state_machine::Shared;
use super::state_machine::StoredValue;
use super::state_machine::data_key;
use super::state_machine::decode_u64;
use crate::raft::types::TypeConfig;

const MAGIC: &[u8; 8] = b"FERRSNAP";
/// The format this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
const TAG_RECORD: u8 = 1;
const TAG_HISTORY: u8 = 2;
const TAG_SM_META: u8 = 3;
/// Longest `history` record key: an escaped key (at most twice as long) and
/// 19 bytes of space, terminator and revision.
const MAX_HISTORY_KEY_LEN: u32 = 2 * MAX_KEY_LEN + 32;
const TAG_END: u8 = 0;
const MAX_META_LEN: u32 = 16 << 20;
/// Largest key a snapshot record holds; `network.max_key_size` may not exceed it.
pub(crate) const MAX_KEY_LEN: u32 = 1 << 20;
/// Largest stored value (the value and its revisions) a snapshot record holds.
pub(crate) const MAX_VALUE_LEN: u32 = (64 << 20) + (4 << 10);
const IO_BUFFER: usize = 256 << 10;
/// Installing writes SST files of about this many uncompressed bytes; the
/// writer holds one file's index and filter (about 12 bytes per key) in
/// memory.
const SST_FILE_BYTES: u64 = 64 << 20;

type Meta = SnapshotMetaOf<TypeConfig>;

/// A finished snapshot file: openraft's `SnapshotData` for Ferrium.
///
/// Holds the file open, so it stays readable (for streaming to a peer) even
/// after a newer snapshot has replaced it in the directory.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: File,
}

impl SnapshotFile {
    /// Opens an existing snapshot file (no verification yet).
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = File::open(&path)?;
        Ok(SnapshotFile { path, file })
    }

    /// Where the file was when it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes, e.g. for a `Content-Length` header.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// A reader over the whole file from its start, independent of other
    /// readers of the same file.
    pub fn reader(&self) -> io::Result<SnapshotReader> {
        Ok(SnapshotReader {
            file: self.file.try_clone()?,
            pos: 0,
        })
    }

    /// The format version in the file header.
    fn format_version(&self) -> Result<u32, Error> {
        let mut r = CrcReader::new(BufReader::new(self.reader()?));
        read_header_version(&mut r)
            .map(|(_, v)| v)
            .map_err(|e| self.context(e))
    }

    /// The snapshot's meta from the file header, without reading the records.
    pub fn read_meta(&self) -> Result<Meta, Error> {
        let mut r = CrcReader::new(BufReader::new(self.reader()?));
        read_header(&mut r).map_err(|e| self.context(e))
    }

    /// Reads the whole file and checks magic, version, structure and
    /// checksum. Returns the meta it describes.
    pub fn verify(&self) -> Result<Meta, Error> {
        self.for_each_record(|_, _, _| Ok(()))
    }

    /// Like [`SnapshotFile::verify`], and also returns the SHA-256 of the
    /// whole file (what a peer signature covers when the file is sent), in
    /// the same single read.
    pub fn verify_with_digest(&self) -> Result<(Meta, [u8; 32]), Error> {
        let mut hashing = HashingReader {
            inner: self.reader()?,
            sha: Sha256::new(),
        };
        let meta = {
            let mut r = CrcReader::new(BufReader::with_capacity(IO_BUFFER, &mut hashing));
            read_body(&mut r, &mut |_, _, _| Ok(())).map_err(|e| self.context(e))?
        };
        Ok((meta, hashing.sha.finalize().into()))
    }

    /// A second handle on the same file (not its path, which a newer
    /// snapshot may have replaced), positioned at its start, for streaming
    /// the bytes that were verified.
    pub fn reopen(&self) -> io::Result<File> {
        let mut f = self.file.try_clone()?;
        f.seek(io::SeekFrom::Start(0))?;
        Ok(f)
    }

    /// Calls `f` with every record (tag, key, value) in file order, then
    /// checks the checksum. Records seen before an error are not undone.
    fn for_each_record(
        &self,
        mut f: impl FnMut(u8, &[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<Meta, Error> {
        let mut r = CrcReader::new(BufReader::with_capacity(IO_BUFFER, self.reader()?));
        read_body(&mut r, &mut f).map_err(|e| self.context(e))
    }

    fn context(&self, e: Error) -> Error {
        match e {
            Error::Corrupt(msg) => {
                Error::Corrupt(format!("snapshot file {}: {msg}", self.path.display()))
            }
            other => other,
        }
    }
}

/// What a snapshot file holds, as `ferriumctl snapshot status` shows it.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The Raft position and the members it was taken at.
    pub meta: Meta,
    pub format_version: u32,
    /// Keys (current values) in it.
    pub keys: u64,
    /// Records of every kind (keys, history, state-machine values).
    pub records: u64,
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

impl SnapshotFile {
    /// Reads the whole file, checking it as [`SnapshotFile::verify`] does,
    /// and says what it holds.
    pub fn summary(&self) -> Result<Summary, Error> {
        let format_version = self.format_version()?;
        let size = self.size()?;
        let mut hashing = HashingReader {
            inner: self.reader()?,
            sha: Sha256::new(),
        };
        let (mut keys, mut records) = (0u64, 0u64);
        let meta = {
            let mut r = CrcReader::new(BufReader::with_capacity(IO_BUFFER, &mut hashing));
            let meta = read_body(&mut r, &mut |tag, _, _| {
                records += 1;
                keys += u64::from(tag == TAG_RECORD);
                Ok(())
            })
            .map_err(|e| self.context(e))?;
            let mut rest = [0u8; 1];
            if r.inner.read(&mut rest)? != 0 {
                return Err(self.context(Error::Corrupt(
                    "bytes follow the checksum: this is not a file Ferrium wrote, or two files were joined".into(),
                )));
            }
            meta
        };
        Ok(Summary {
            meta,
            format_version,
            keys,
            records,
            size,
            sha256: hashing.sha.finalize().into(),
        })
    }
}

/// Passes reads through, hashing every byte.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// Sequential reader over a [`SnapshotFile`] with its own position.
pub struct SnapshotReader {
    file: File,
    pos: u64,
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Receives a snapshot streamed by a peer into a temporary file, computing
/// the SHA-256 of what it receives. Dropped before [`finish`], it deletes
/// the file.
///
/// [`finish`]: SnapshotReceiver::finish
pub struct SnapshotReceiver {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    sha: Sha256,
}

impl SnapshotReceiver {
    pub(crate) fn create(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(format!("recv-{}.part", unique()));
        let out = BufWriter::with_capacity(IO_BUFFER, File::create(&path)?);
        Ok(SnapshotReceiver {
            path,
            out: Some(out),
            sha: Sha256::new(),
        })
    }

    /// Appends the next chunk of the stream.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(out) => {
                out.write_all(chunk)?;
                self.sha.update(chunk);
                Ok(())
            }
            None => Err(io::Error::other("snapshot receiver already finished")),
        }
    }

    /// Makes the received bytes durable and returns the file, ready for
    /// `install_snapshot` (which verifies it).
    pub fn finish(self) -> io::Result<SnapshotFile> {
        self.finish_with_digest().map(|(file, _)| file)
    }

    /// Like [`SnapshotReceiver::finish`], and also returns the SHA-256 of
    /// the received bytes. The caller now owns the file: it is a `*.part`
    /// file that a restart removes, and that the caller deletes when it
    /// does not install it.
    pub fn finish_with_digest(mut self) -> io::Result<(SnapshotFile, [u8; 32])> {
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("snapshot receiver already finished"))?;
        let digest: [u8; 32] = std::mem::take(&mut self.sha).finalize().into();
        let done = (|| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            SnapshotFile::open(&self.path)
        })();
        match done {
            Ok(file) => Ok((file, digest)),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Builds a snapshot of the state machine from one RocksDB snapshot: the
/// data and `sm_meta` are read at the same point in time.
pub(crate) fn build(shared: &Shared) -> Result<(Meta, SnapshotFile), Error> {
    let db = &shared.db;
    let view = db.snapshot();
    let sm_meta = cf(db, CF_SM_META)?;
    let generation = match view.get_pinned_cf(sm_meta, KEY_GENERATION)? {
        Some(b) => decode_u64(&b)?,
        None => 0,
    };
    let last_log_id: Option<LogIdOf<TypeConfig>> =
        match view.get_pinned_cf(sm_meta, KEY_LAST_APPLIED)? {
            Some(b) => Some(decode(&b)?),
            None => None,
        };
    let last_membership = match view.get_pinned_cf(sm_meta, KEY_MEMBERSHIP)? {
        Some(b) => decode(&b)?,
        None => StoredMembershipOf::<TypeConfig>::default(),
    };
    let meta = Meta {
        last_log_id,
        last_membership,
    };

    let tmp = shared.snapshot_dir.join(format!("build-{}.part", unique()));
    let result = (|| -> Result<(), Error> {
        let mut w = CrcWriter::new(BufWriter::with_capacity(IO_BUFFER, File::create(&tmp)?));
        write_header(&mut w, &meta)?;

        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_iterate_lower_bound(generation.to_be_bytes().to_vec());
        if let Some(next) = generation.checked_add(1) {
            opts.set_iterate_upper_bound(next.to_be_bytes().to_vec());
        }
        let mut it = view.raw_iterator_cf_opt(cf(db, CF_DATA)?, opts);
        it.seek_to_first();
        let mut count: u64 = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            write_record(&mut w, TAG_RECORD, &k[8..], v)?;
            count += 1;
            it.next();
        }
        it.status()?;
        drop(it);

        let applied = AppliedMeta::read(db, Some(&view))?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_iterate_lower_bound(generation.to_be_bytes().to_vec());
        if let Some(next) = generation.checked_add(1) {
            opts.set_iterate_upper_bound(next.to_be_bytes().to_vec());
        }
        let mut it = view.raw_iterator_cf_opt(cf(db, CF_HISTORY)?, opts);
        it.seek_to_first();
        let mut filter = SnapshotFilter::new(applied.compact_revision);
        let mut emit = |k: &[u8], v: &[u8]| -> Result<(), Error> {
            write_record(&mut w, TAG_HISTORY, k, v)?;
            count += 1;
            Ok(())
        };
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            filter.feed(k, v, &mut emit)?;
            it.next();
        }
        it.status()?;
        filter.flush(&mut emit)?;
        for (k, v) in applied.records() {
            write_record(&mut w, TAG_SM_META, k, &v)?;
            count += 1;
        }
        w.write_all(&[TAG_END])?;
        w.write_all(&count.to_le_bytes())?;
        let crc = w.crc.finish();
        let mut out = w.inner;
        out.write_all(&crc.to_le_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let file = publish(shared, &tmp, &meta)?;
    ::log::info!(
        "built snapshot {} at {}",
        file.path.display(),
        meta.last_log_id.as_ref().map_or(0, |l| l.index())
    );
    Ok((meta, file))
}

/// Gives an installed snapshot new members (a restore into a new cluster):
/// records them at the snapshot's position and builds the snapshot again,
/// so that what a later member receives names them too.
pub(crate) fn set_members(
    shared: &Shared,
    membership: &StoredMembershipOf<TypeConfig>,
) -> Result<(Meta, SnapshotFile), Error> {
    let db = &shared.db;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_SM_META)?, KEY_MEMBERSHIP, encode(membership)?);
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced)?;
    build(shared)
}

/// SST files of bounded size for one column family, written in key order.
struct SstFiles<'a> {
    shared: &'a Shared,
    writer: Option<SstFileWriter<'a>>,
    /// `SstFileWriter::file_size` is only known after `finish`, so count.
    in_file: u64,
    files: &'a mut Vec<PathBuf>,
}

impl<'a> SstFiles<'a> {
    fn new(shared: &'a Shared, files: &'a mut Vec<PathBuf>) -> Self {
        SstFiles {
            shared,
            writer: None,
            in_file: 0,
            files,
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => {
                let path = self
                    .shared
                    .snapshot_dir
                    .join(format!("ingest-{}.part", unique()));
                let w = SstFileWriter::create(&self.shared.sst_options);
                w.open(&path)?;
                self.files.push(path);
                self.writer.insert(w)
            }
        };
        w.put(key, value)?;
        self.in_file += (key.len() + value.len()) as u64;
        if self.in_file >= SST_FILE_BYTES {
            w.finish()?;
            self.writer = None;
            self.in_file = 0;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), Error> {
        if let Some(w) = &mut self.writer {
            w.finish()?;
        }
        Ok(())
    }
}

/// What a snapshot file holds besides the data, read while loading it.
#[derive(Default)]
struct Loaded {
    applied: AppliedMeta,
    /// Whether the file carried history (format 2) or only keys (format 1).
    history: bool,
}

/// Writes the records of `file` as keys of `generation` into SST files of
/// bounded size in the snapshot directory, one set for `data` and one for
/// `history`; their paths are pushed to `data_files` and `history_files` as
/// they are created, so the caller can remove them whatever happens.
fn load_sst_files(
    shared: &Shared,
    file: &SnapshotFile,
    generation: u64,
    data_files: &mut Vec<PathBuf>,
    history_files: &mut Vec<PathBuf>,
) -> Result<Loaded, Error> {
    let mut data = SstFiles::new(shared, data_files);
    let mut history = SstFiles::new(shared, history_files);
    let mut loaded = Loaded::default();
    let version = file.format_version()?;
    let prefix = generation.to_be_bytes();
    let mut key = Vec::new();
    file.for_each_record(|tag, k, v| {
        match tag {
            TAG_RECORD => {
                data.put(&data_key(generation, k), v)?;
                if version == 1 {
                    // No history in the file: every key's current version
                    // starts it (the compaction point is the snapshot's).
                    let stored = StoredValue::decode(v)?;
                    history.put(&mvcc::version_key(generation, k, stored.mod_revision), v)?;
                }
            }
            TAG_HISTORY => {
                loaded.history = true;
                key.clear();
                key.extend_from_slice(&prefix);
                key.extend_from_slice(k);
                history.put(&key, v)?;
            }
            _ => loaded.applied.set_record(k, v)?,
        }
        Ok(())
    })?;
    data.finish()?;
    history.finish()?;
    Ok(loaded)
}

/// Verifies `file`, then replaces the state machine's data with its content
/// atomically, and keeps the file as the current snapshot.
pub(crate) fn install(shared: &Shared, meta: &Meta, file: SnapshotFile) -> Result<(), Error> {
    let result = install_data(shared, meta, &file);
    if let Err(e) = result {
        ::log::error!(
            "snapshot install from {} failed, state unchanged: {e}",
            file.path.display()
        );
        if file.path.extension().is_some_and(|x| x == "part") {
            let _ = std::fs::remove_file(&file.path);
        }
        return Err(e);
    }
    let published = publish(shared, &file.path, meta)?;
    ::log::info!(
        "installed snapshot {} at {}",
        published.path.display(),
        meta.last_log_id.as_ref().map_or(0, |l| l.index())
    );
    Ok(())
}

fn install_data(shared: &Shared, meta: &Meta, file: &SnapshotFile) -> Result<(), Error> {
    let in_file = file.verify()?;
    if in_file != *meta {
        return Err(Error::Corrupt(format!(
            "snapshot file {} holds {in_file}, but {meta} was to be installed",
            file.path.display()
        )));
    }

    let db = &shared.db;
    let data = cf(db, CF_DATA)?;
    let history = cf(db, CF_HISTORY)?;
    let old = shared.generation()?;
    let new = old
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt("data generation overflow".into()))?;

    // Bulk load of the new generation: the records (sorted, as the snapshot
    // was written in key order) go into SST files that are ingested, one
    // column family at a time; invisible until the pointer switch.
    let mut data_files = Vec::new();
    let mut history_files = Vec::new();
    let loaded =
        load_sst_files(shared, file, new, &mut data_files, &mut history_files).and_then(|loaded| {
            for (family, files) in [(data, &data_files), (history, &history_files)] {
                if files.is_empty() {
                    continue;
                }
                let mut ingest = IngestExternalFileOptions::default();
                ingest.set_move_files(true);
                db.ingest_external_file_cf_opts(family, &ingest, files.clone())?;
            }
            Ok(loaded)
        });
    for f in data_files.iter().chain(&history_files) {
        let _ = std::fs::remove_file(f);
    }
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            // Not switched to: drop anything loaded (open() would do it too).
            for family in [data, history] {
                let _ = db.delete_range_cf(
                    family,
                    new.to_be_bytes(),
                    new.saturating_add(1).to_be_bytes(),
                );
            }
            return Err(e);
        }
    };
    let mut applied = loaded.applied;
    if !loaded.history {
        applied.compact_revision = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    }

    // The switch: one synced write.
    let sm_meta = cf(db, CF_SM_META)?;
    let mut switch = WriteBatch::default();
    switch.put_cf(sm_meta, KEY_GENERATION, new.to_be_bytes());
    match &meta.last_log_id {
        Some(l) => switch.put_cf(sm_meta, KEY_LAST_APPLIED, encode(l)?),
        None => switch.delete_cf(sm_meta, KEY_LAST_APPLIED),
    }
    switch.put_cf(sm_meta, KEY_MEMBERSHIP, encode(&meta.last_membership)?);
    applied.write(&mut switch, sm_meta);
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(switch, &synced)?;
    {
        let mut g = shared
            .generation
            .write()
            .map_err(|_| Error::Poisoned("generation lock poisoned".into()))?;
        *g = new;
    }
    shared.set_last_applied(meta.last_log_id);
    shared.set_applied_meta(applied);
    // Watchers read what the snapshot brought from its history.
    shared
        .hub
        .reset(meta.last_log_id.as_ref().map_or(0, |l| l.index()));
    let ids = super::mvcc::IdIndex::load(db, new)?;
    *shared
        .ids
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = ids;
    let leases = super::lease::LeaseTable::load(db, new)?;
    *shared
        .leases
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = leases;
    *shared
        .lease_clock_seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        (applied.lease_clock, std::time::Instant::now());
    shared.wake_compactor();

    // Readers now use `new`; the old generation can go.
    db.delete_range_cf(data, 0u64.to_be_bytes(), new.to_be_bytes())?;
    db.delete_range_cf(history, 0u64.to_be_bytes(), new.to_be_bytes())?;
    Ok(())
}

/// The newest snapshot file in the directory, if any.
///
/// A file whose header is damaged is replaced by a new snapshot built from
/// the state machine: answering "no snapshot" would stop a leader that needs
/// one for a follower (openraft treats that as a storage failure), while the
/// data the file was made from is intact in the database.
pub(crate) fn current(shared: &Shared) -> Result<Option<(Meta, SnapshotFile)>, Error> {
    let newest = {
        let _guard = shared.snapshot_dir_lock.lock();
        snapshot_files(&shared.snapshot_dir)?.pop()
    };
    let Some(path) = newest else {
        return Ok(None);
    };
    let file = SnapshotFile::open(&path)?;
    match file.read_meta() {
        Ok(meta) => Ok(Some((meta, file))),
        Err(Error::Corrupt(e)) => {
            ::log::error!(
                "{e}; deleting the damaged file and building a new snapshot from the state machine"
            );
            drop(file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            build(shared).map(Some)
        }
        Err(e) => Err(e),
    }
}

/// Removes `*.part` files left by a crash during a build or a receive.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "part") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Moves a complete, fsynced file to its final name, fsyncs the directory
/// and deletes every snapshot file older than the newest one.
fn publish(shared: &Shared, from: &Path, meta: &Meta) -> Result<SnapshotFile, Error> {
    let index_key = meta
        .last_log_id
        .as_ref()
        .map_or(0, |l| l.index().saturating_add(1));
    let name = format!("snap-{index_key:020}-{:020}.snap", unique());
    let to = shared.snapshot_dir.join(name);
    let _guard = shared.snapshot_dir_lock.lock();
    if from.parent() == Some(shared.snapshot_dir.as_path()) {
        std::fs::rename(from, &to)?;
    } else {
        // A file handed in from elsewhere stays where it is; keep a copy.
        let tmp = shared.snapshot_dir.join(format!("copy-{}.part", unique()));
        std::fs::copy(from, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &to)?;
    }
    let file = SnapshotFile::open(&to)?;
    File::open(&shared.snapshot_dir)?.sync_all()?;
    let mut files = snapshot_files(&shared.snapshot_dir)?;
    files.pop();
    for old in files {
        std::fs::remove_file(&old)?;
    }
    Ok(file)
}

/// `snap-*.snap` files, oldest first (names sort by index, then creation).
fn snapshot_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_snap = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap-") && n.ends_with(".snap"));
        if is_snap {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A name component that is unique in this directory: time plus a counter.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{nanos:020}{:06}",
        COUNTER.fetch_add(1, Ordering::Relaxed) % 1_000_000
    )
}

fn write_header(w: &mut impl Write, meta: &Meta) -> Result<(), Error> {
    let meta_bytes = encode(meta)?;
    let meta_len = u32::try_from(meta_bytes.len())
        .ok()
        .filter(|l| *l <= MAX_META_LEN)
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "snapshot meta of {} bytes is too large",
                meta_bytes.len()
            ))
        })?;
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.write_all(&meta_len.to_le_bytes())?;
    w.write_all(&meta_bytes)?;
    Ok(())
}

/// Writes one record; refuses what the reader would refuse, so that no
/// snapshot is built that cannot be installed.
fn write_record(w: &mut impl Write, tag: u8, key: &[u8], value: &[u8]) -> Result<(), Error> {
    let max_key = if tag == TAG_HISTORY {
        MAX_HISTORY_KEY_LEN
    } else {
        MAX_KEY_LEN
    };
    let too_long = |what: &str, len: usize, max: u32| {
        Error::Corrupt(format!(
            "{what} of {len} bytes exceeds the snapshot limit of {max} bytes (key starts {:?})",
            String::from_utf8_lossy(&key[..key.len().min(64)])
        ))
    };
    let key_len = u32::try_from(key.len())
        .ok()
        .filter(|l| *l <= max_key)
        .ok_or_else(|| too_long("key", key.len(), max_key))?;
    let value_len = u32::try_from(value.len())
        .ok()
        .filter(|l| *l <= MAX_VALUE_LEN)
        .ok_or_else(|| too_long("value", value.len(), MAX_VALUE_LEN))?;
    w.write_all(&[tag])?;
    w.write_all(&key_len.to_le_bytes())?;
    w.write_all(key)?;
    w.write_all(&value_len.to_le_bytes())?;
    w.write_all(value)?;
    Ok(())
}

fn read_header<R: Read>(r: &mut CrcReader<R>) -> Result<Meta, Error> {
    read_header_version(r).map(|(meta, _)| meta)
}

/// The meta and the format version of a file.
fn read_header_version<R: Read>(r: &mut CrcReader<R>) -> Result<(Meta, u32), Error> {
    let mut magic = [0u8; 8];
    read_exact(r, &mut magic)?;
    if &magic != MAGIC {
        return Err(Error::Corrupt(
            "not a Ferrium snapshot file (bad magic)".into(),
        ));
    }
    let version = read_u32(r)?;
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::Corrupt(format!(
            "snapshot format version {version} is not supported (this build reads versions 1 to {FORMAT_VERSION})"
        )));
    }
    let meta_len = read_u32(r)?;
    if meta_len > MAX_META_LEN {
        return Err(Error::Corrupt(format!(
            "meta length {meta_len} is implausible"
        )));
    }
    let mut meta = vec![0u8; meta_len as usize];
    read_exact(r, &mut meta)?;
    let meta = decode(&meta).map_err(|e| Error::Corrupt(format!("bad meta: {e}")))?;
    Ok((meta, version))
}

fn read_body<R: Read>(
    r: &mut CrcReader<R>,
    f: &mut impl FnMut(u8, &[u8], &[u8]) -> Result<(), Error>,
) -> Result<Meta, Error> {
    let (meta, version) = read_header_version(r)?;
    let mut key = Vec::new();
    let mut value = Vec::new();
    let mut count: u64 = 0;
    // Tags never go back: data, then history, then state-machine values.
    let mut last_tag = TAG_RECORD;
    loop {
        let mut tag = [0u8; 1];
        read_exact(r, &mut tag)?;
        let tag = tag[0];
        let max_key = match tag {
            TAG_END => break,
            TAG_RECORD => MAX_KEY_LEN,
            TAG_HISTORY if version >= 2 => MAX_HISTORY_KEY_LEN,
            TAG_SM_META if version >= 2 => 64,
            other => {
                return Err(Error::Corrupt(format!(
                    "unknown record tag {other} after {count} records"
                )));
            }
        };
        if tag < last_tag {
            return Err(Error::Corrupt(format!(
                "record of kind {tag} after one of kind {last_tag}"
            )));
        }
        last_tag = tag;
        read_chunk(r, &mut key, max_key)?;
        read_chunk(r, &mut value, MAX_VALUE_LEN)?;
        f(tag, &key, &value)?;
        count += 1;
    }
    let mut b = [0u8; 8];
    read_exact(r, &mut b)?;
    let declared = u64::from_le_bytes(b);
    if declared != count {
        return Err(Error::Corrupt(format!(
            "{count} records, but the trailer says {declared}"
        )));
    }
    let computed = r.crc.finish();
    let mut b = [0u8; 4];
    r.inner.read_exact(&mut b).map_err(eof_as_truncated)?;
    let stored = u32::from_le_bytes(b);
    if stored != computed {
        return Err(Error::Corrupt(format!(
            "checksum mismatch (file says {stored:08x}, content gives {computed:08x})"
        )));
    }
    // What `etcdctl snapshot save` adds to the stream of etcd's
    // Maintenance.Snapshot (which Ferrium serves as this file zero-padded
    // to a multiple of 512 bytes, then the SHA-256 of what precedes it) is
    // accepted, so that etcd users' backup scripts make restorable files:
    // zeros, then 32 bytes. The content is already checked by its CRC.
    let mut tail = Vec::new();
    (&mut r.inner).take(512 + 32).read_to_end(&mut tail)?;
    let etcd_padding = tail.len() >= 32
        && tail.len() - 32 < 512
        && tail[..tail.len() - 32].iter().all(|b| *b == 0);
    if !tail.is_empty() && !etcd_padding {
        return Err(Error::Corrupt("trailing bytes after the checksum".into()));
    }
    Ok(meta)
}

fn read_chunk<R: Read>(r: &mut CrcReader<R>, buf: &mut Vec<u8>, max: u32) -> Result<(), Error> {
    let len = read_u32(r)?;
    if len > max {
        return Err(Error::Corrupt(format!("record length {len} exceeds {max}")));
    }
    buf.resize(len as usize, 0);
    read_exact(r, buf)
}

fn read_u32<R: Read>(r: &mut CrcReader<R>) -> Result<u32, Error> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_exact<R: Read>(r: &mut CrcReader<R>, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(eof_as_truncated)
}

fn eof_as_truncated(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Corrupt("file is truncated".into())
    } else {
        Error::Io(e)
    }
}

struct CrcReader<R> {
    inner: R,
    crc: Crc32c,
}

impl<R> CrcReader<R> {
    fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: Crc32c::new(),
        }
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

struct CrcWriter<W> {
    inner: W,
    crc: Crc32c,
}

impl<W> CrcWriter<W> {
    fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: Crc32c::new(),
        }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// CRC-32C (Castagnoli), table-driven, slicing by 8 bytes.
struct Crc32c {
    state: u32,
}

const CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

impl Crc32c {
    fn new() -> Self {
        Crc32c { state: !0 }
    }

    fn update(&mut self, mut data: &[u8]) {
        let t = &CRC_TABLES;
        let mut c = self.state;
        while data.len() >= 8 {
            let lo = c ^ u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][data[4] as usize]
                ^ t[2][data[5] as usize]
                ^ t[1][data[6] as usize]
                ^ t[0][data[7] as usize];
            data = &data[8..];
        }
        for &b in data {
            c = (c >> 8) ^ t[0][((c ^ b as u32) & 0xff) as usize];
        }
        self.state = c;
    }

    fn finish(&self) -> u32 {
        !self.state
    }
}

#[cfg(test)]
mod tests {
    use super::Crc32c;

    #[test]
    fn crc32c_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
        let mut c = Crc32c::new();
        for chunk in b"The quick brown fox jumps over the lazy dog".chunks(5) {
            c.update(chunk);
        }
        assert_eq!(c.finish(), 0x2262_0404);
    }
}
