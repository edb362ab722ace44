//! Scheduled backups (`[backup]`): every `backup.interval` the leader writes
//! a snapshot of everything applied into `backup.dir` as
//! `ferrium-<revision>-<unix seconds>.snap` (the format `GET /snapshot`
//! streams, which `ferriumctl snapshot status` and `restore` read), unless
//! nothing was applied since the newest backup there. A backup is written
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

/// The revision in a backup file's name, if it is one of ours.
fn revision_of(name: &str) -> Option<u64> {
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
    tokio::task::spawn_blocking(move || write(&file, &dir, keep))
        .await
        .map_err(|e| format!("the backup task failed: {e}"))?
}

fn write(file: &SnapshotFile, dir: &Path, keep: usize) -> Result<(u64, u64), String> {
    let meta = file.read_meta().map_err(|e| e.to_string())?;
    let revision = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("{PREFIX}{revision:020}-{secs}{SUFFIX}");
    let part = dir.join(format!("{name}.part"));
    let to = dir.join(&name);
    let copied = (|| -> io::Result<u64> {
        let mut out = std::fs::File::create(&part)?;
        let size = io::copy(&mut file.reader()?, &mut out)?;
        out.sync_all()?;
        Ok(size)
    })();
    let size = match copied {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(format!("cannot write {}: {e}", part.display()));
        }
    };
    let check = SnapshotFile::open(&part)
        .map_err(|e| e.to_string())
        .and_then(|f| f.verify().map_err(|e| e.to_string()));
    if let Err(e) = check {
        let _ = std::fs::remove_file(&part);
        return Err(format!("the copy does not verify: {e}"));
    }
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
