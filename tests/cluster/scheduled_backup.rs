//! Scheduled backups (`[backup]`): the leader writes them into the
//! directory, they rotate to `backup.keep`, every one verifies, an idle
//! cluster writes none, and followers write none.

use crate::support::cluster::{Bootstrap, Cluster, Scratch, request};
use ferrium::store::SnapshotFile;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `(revision, path)` of each backup in `dir`, oldest first.
fn backups(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = ferrium::backup::backups(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let rev = name
                .strip_prefix("ferrium-")
                .and_then(|r| r.split('-').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("a backup name without a revision: {name}"));
            (rev, p)
        })
        .collect();
    out.sort();
    out
}

/// One Prometheus sample of member `id`.
fn metric(c: &Cluster, id: u64, name: &str) -> f64 {
    let accept = [("Accept", "text/plain;version=0.0.4")];
    let r = request(&c.addr(id), "GET", "/metrics", None, &accept, WAIT).expect("metrics");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not among member {id}'s metrics"))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The snapshot a backup file holds, decompressed when it is compressed,
/// and whether it was.
fn open_backup(path: &Path) -> (ferrium::backup::Opened, bool) {
    let opened = ferrium::backup::open(path, path.parent().unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let compressed = opened.compressed_size.is_some();
    (opened, compressed)
}

#[test]
fn scheduled_backups_appear_rotate_and_skip_an_idle_cluster() {
    scheduled_backups(None);
}

#[test]
fn uncompressed_scheduled_backups_are_the_snapshot_files_themselves() {
    scheduled_backups(Some("none"));
}

/// Backups with `backup.compression` left at its default (zstd) or set.
fn scheduled_backups(compression: Option<&str>) {
    let dir = Scratch::new("scheduled-backups");
    let mut extra = format!(
        "[backup]\ndir = \"{}\"\ninterval = \"1s\"\nkeep = 2\n",
        dir.path.display()
    );
    if let Some(c) = compression {
        extra.push_str(&format!("compression = \"{c}\"\n"));
    }
    let compressed = compression != Some("none");
    let c = Cluster::start_in_process("scheduled-backups", 3, Bootstrap::Static, &extra);
    let leader = c.wait_leader(WAIT);

    // Three rounds of writes, each followed by a backup that holds them.
    let mut revisions = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            let r = c.set_retrying(leader, &format!("b{round}-{i}"), "v");
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let applied = c.set_retrying(leader, &format!("last{round}"), "v").json()["revision"]
            .as_u64()
            .expect("a write answers its revision");
        let rev = wait_for(&format!("a backup at revision {applied} or later"), || {
            backups(&dir.path)
                .last()
                .map(|(r, _)| *r)
                .filter(|r| *r >= applied)
        });
        let files = backups(&dir.path);
        assert!(
            files.len() <= 2,
            "more than backup.keep = 2 kept: {files:?}"
        );
        let (_, newest) = files.last().unwrap();
        let name = newest.file_name().unwrap().to_string_lossy().into_owned();
        let suffix = if compressed { ".snap.zst" } else { ".snap" };
        assert!(name.ends_with(suffix), "{name} does not end in {suffix}");
        let (opened, was_compressed) = open_backup(newest);
        assert_eq!(was_compressed, compressed, "{name}");
        let s = opened.file().summary().unwrap();
        if compressed {
            assert!(
                opened.compressed_size.unwrap() < s.size,
                "compression made {name} no smaller than {} bytes",
                s.size
            );
        }
        assert_eq!(
            s.meta.last_log_id.map(|l| l.index()),
            Some(rev),
            "the file name gives the snapshot's revision"
        );
        assert_eq!(
            s.keys,
            11 * (round + 1),
            "the backup holds every key written"
        );
        revisions.push(rev);
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let files = backups(&dir.path);
    assert_eq!(files.len(), 2, "rotated down to backup.keep: {files:?}");
    for (_, f) in &files {
        if !compressed {
            SnapshotFile::open(f)
                .unwrap()
                .verify()
                .expect("every kept backup verifies as it is");
        }
        open_backup(f)
            .0
            .file()
            .verify()
            .expect("every kept backup verifies");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ferrium-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Idle: intervals pass (the leader counts them as skipped) and no new
    // backup appears.
    let skipped = metric(&c, leader, "ferrium_backup_skipped_total");
    wait_for("three idle intervals skipped", || {
        (metric(&c, leader, "ferrium_backup_skipped_total") >= skipped + 3.0).then_some(())
    });
    assert_eq!(backups(&dir.path), files, "an idle cluster wrote a backup");
    assert_eq!(
        metric(&c, leader, "ferrium_backup_last_revision"),
        *revisions.last().unwrap() as f64
    );
    assert!(metric(&c, leader, "ferrium_backup_last_success_timestamp_seconds") > 0.0);
    assert!(metric(&c, leader, "ferrium_backups_total") >= 3.0);
    assert_eq!(metric(&c, leader, "ferrium_backup_failures_total"), 0.0);
    for id in c.ids().into_iter().filter(|id| *id != leader) {
        assert_eq!(
            metric(&c, id, "ferrium_backups_total"),
            0.0,
            "follower {id} took a backup"
        );
    }
}
