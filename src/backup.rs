//! Scheduled backups (`[backup]`): every `backup.interval` the leader writes
//! a snapshot of everything applied into `backup.dir` as
//! `ferrium-<revision>-<unix seconds>.snap` (the format `GET /snapshot`
//! streams, which `ferriumctl snapshot status` and `restore` read), or
//! `.snap.zst` when compressed with zstd (which both read too, see
//! [`open`]), unless nothing was applied since the newest backup there. A backup is written
//! as a `.part` file, fsynced, checked, renamed and the directory fsynced;
//! then all but the newest `backup.keep` are deleted. Followers take none,
//! so a cluster writes one backup per interval wherever its leader is; a
//! failure is logged and counted and the next interval tries again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::node::Node;
use crate::store::SnapshotFile;

/// `[backup]` as the node runs it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub interval: Duration,
    pub keep: usize,
    /// zstd-compress each file (`backup.compression = "zstd"`).
    pub compress: bool,
}

/// What the metrics say of scheduled backups.
#[derive(Debug, Default)]
pub struct Stats {
    /// Unix seconds of the newest backup in the directory (0: none yet).
    pub last_success: AtomicU64,
    pub last_revision: AtomicU64,
    pub last_size: AtomicU64,
    pub taken: AtomicU64,
    /// Intervals skipped because nothing was applied since the newest backup.
    pub skipped: AtomicU64,
    pub failures: AtomicU64,
}

const PREFIX: &str = "ferrium-";
const SUFFIX: &str = ".snap";
/// Added to [`SUFFIX`] for a compressed backup.
const ZSTD_SUFFIX: &str = ".zst";
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's default level: about 300 MB/s on one core, most of the gain of
/// the higher levels for text-like values.
const ZSTD_LEVEL: i32 = 3;

/// The revision in a backup file's name, if it is one of ours.
fn revision_of(name: &str) -> Option<u64> {
    let name = name.strip_suffix(ZSTD_SUFFIX).unwrap_or(name);
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (rev, secs) = rest.split_once('-')?;
    secs.parse::<u64>().ok()?;
    rev.parse().ok()
}

/// Backup files in `dir`, oldest first (names sort by revision).
pub fn backups(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(revision_of)
            .is_some()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs until shutdown.
pub async fn run(node: Node, settings: Settings, stats: std::sync::Arc<Stats>) {
    if let Err(e) = std::fs::create_dir_all(&settings.dir) {
        log::error!(
            "backup.dir {}: cannot create it ({e}); no scheduled backups will be taken until the node is restarted with a usable directory",
            settings.dir.display()
        );
        return;
    }
    // Leftovers of a backup cut short, and where the newest one is.
    let mut newest = 0;
    if let Ok(entries) = std::fs::read_dir(&settings.dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(PREFIX) && name.ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
            newest = newest.max(revision_of(&name).unwrap_or(0));
        }
    }
    // The metrics start from the newest backup already there.
    if let Some(last) = backups(&settings.dir).ok().and_then(|mut f| f.pop())
        && let Ok(m) = std::fs::metadata(&last)
    {
        let secs = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        stats.last_success.store(secs, Ordering::Relaxed);
        stats.last_revision.store(newest, Ordering::Relaxed);
        stats.last_size.store(m.len(), Ordering::Relaxed);
    }
    loop {
        tokio::time::sleep(settings.interval).await;
        if node.is_shutting_down() {
            return;
        }
        if !node.is_leader() {
            continue;
        }
        if node.applied_revision() <= newest {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match take(&node, &settings).await {
            Ok((revision, size)) => {
                newest = revision;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                stats.last_success.store(now, Ordering::Relaxed);
                stats.last_revision.store(revision, Ordering::Relaxed);
                stats.last_size.store(size, Ordering::Relaxed);
                stats.taken.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "backup of revision {revision} ({size} bytes) written to {}",
                    settings.dir.display()
                );
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "scheduled backup into {} failed: {e}; the next try is in {} s",
                    settings.dir.display(),
                    settings.interval.as_secs()
                );
            }
        }
    }
}

/// Writes one backup and prunes old ones: its revision and size.
async fn take(node: &Node, settings: &Settings) -> Result<(u64, u64), String> {
    let file = node.fresh_snapshot().await.map_err(|e| e.to_string())?;
    let dir = settings.dir.clone();
    let keep = settings.keep;
    let compress = settings.compress;
    tokio::task::spawn_blocking(move || write(&file, &dir, keep, compress))
        .await
        .map_err(|e| format!("the backup task failed: {e}"))?
}

fn write(
    file: &SnapshotFile,
    dir: &Path,
    keep: usize,
    compress: bool,
) -> Result<(u64, u64), String> {
    let meta = file.read_meta().map_err(|e| e.to_string())?;
    let revision = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let zst = if compress { ZSTD_SUFFIX } else { "" };
    let name = format!("{PREFIX}{revision:020}-{secs}{SUFFIX}{zst}");
    let part = dir.join(format!("{name}.part"));
    let to = dir.join(&name);
    let written = if compress {
        write_compressed(file, &part)
    } else {
        write_plain(file, &part)
    };
    let size = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(format!("cannot write {}: {e}", part.display()));
        }
    };
    std::fs::rename(&part, &to).map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync {}: {e}", dir.display()))?;
    let files = backups(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let extra = files.len().saturating_sub(keep);
    for old in &files[..extra] {
        if let Err(e) = std::fs::remove_file(old) {
            log::warn!("cannot delete the old backup {}: {e}", old.display());
        }
    }
    Ok((revision, size))
}

/// Copies `file` to `part`, fsyncs it and checks the copy: its size.
fn write_plain(file: &SnapshotFile, part: &Path) -> io::Result<u64> {
    let mut out = std::fs::File::create(part)?;
    let size = io::copy(&mut file.reader()?, &mut out)?;
    out.sync_all()?;
    SnapshotFile::open(part)?
        .verify()
        .map_err(|e| io::Error::other(format!("the copy does not verify: {e}")))?;
    Ok(size)
}

/// Checks `file`, writes it zstd-compressed to `part`, fsyncs it and checks
/// that it decompresses to the same bytes: its compressed size.
fn write_compressed(file: &SnapshotFile, part: &Path) -> io::Result<u64> {
    let (_, digest) = file
        .verify_with_digest()
        .map_err(|e| io::Error::other(format!("the snapshot does not verify: {e}")))?;
    let out = std::fs::File::create(part)?;
    let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    let copied = io::copy(&mut file.reader()?, &mut encoder)?;
    let out = encoder.finish()?;
    out.sync_all()?;
    let size = out.metadata()?.len();
    let mut decoder = zstd::stream::read::Decoder::new(std::fs::File::open(part)?)?;
    let mut check = Sha256Writer::default();
    let decoded = io::copy(&mut decoder, &mut check)?;
    if decoded != copied || check.finish() != digest {
        return Err(io::Error::other(
            "the compressed copy does not decompress to the snapshot",
        ));
    }
    Ok(size)
}

/// A sink that hashes what is written to it.
#[derive(Default)]
struct Sha256Writer(sha2::Sha256);

impl Sha256Writer {
    fn finish(self) -> [u8; 32] {
        use sha2::Digest;
        self.0.finalize().into()
    }
}

impl io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A backup file opened for reading: a snapshot file as it is, or, for a
/// zstd-compressed one (told by its first bytes, not its name), the
/// snapshot it holds decompressed into a temporary file that is deleted
/// when this is dropped.
pub struct Opened {
    file: SnapshotFile,
    temp: Option<PathBuf>,
    /// The compressed file's size, when it was compressed.
    pub compressed_size: Option<u64>,
}

impl Opened {
    pub fn file(&self) -> &SnapshotFile {
        &self.file
    }

    /// The temporary file that holds the decompressed snapshot, if any.
    pub fn decompressed_into(&self) -> Option<&Path> {
        self.temp.as_deref()
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Opens the backup file `path`; a compressed one is decompressed into a
/// temporary file in `scratch` (which needs room for the whole snapshot).
/// Nothing is verified yet beyond zstd's own frame checks.
pub fn open(path: &Path, scratch: &Path) -> io::Result<Opened> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let n = io::Read::read(&mut f, &mut magic)?;
    if n < magic.len() || magic != ZSTD_MAGIC {
        return Ok(Opened {
            file: SnapshotFile::open(path)?,
            temp: None,
            compressed_size: None,
        });
    }
    let compressed_size = f.metadata()?.len();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = scratch.join(format!(
        ".ferrium-decompressed-{}-{nanos}.snap",
        std::process::id()
    ));
    let decompressed = (|| -> io::Result<()> {
        let mut decoder = zstd::stream::read::Decoder::new(std::fs::File::open(path)?)?;
        let mut out = std::fs::File::create(&temp)?;
        io::copy(&mut decoder, &mut out).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("it is zstd-compressed and does not decompress ({e})"),
            )
        })?;
        Ok(())
    })();
    if let Err(e) = decompressed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Opened {
        file: SnapshotFile::open(&temp)?,
        temp: Some(temp),
        compressed_size: Some(compressed_size),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn backup_names_give_their_revision() {
        assert_eq!(
            super::revision_of("ferrium-00000000000000000042-1764800000.snap"),
            Some(42)
        );
        assert_eq!(super::revision_of("ferrium-42.snap"), None);
        assert_eq!(super::revision_of("ferrium-1-2.snap.part"), None);
        assert_eq!(super::revision_of("other-1-2.snap"), None);
    }
}
