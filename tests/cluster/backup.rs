//! Backup and restore with `ferriumctl snapshot`: a backup taken while 16
//! writers run restores into a new three-member cluster that holds exactly
//! what the source held at the backup's revision, and a damaged or
//! truncated backup file (plain or zstd-compressed) is refused by `snapshot
//! status` and `snapshot restore` with a message that says so; a file
//! `etcdctl snapshot save` made from Ferrium restores too.

use crate::ctl::{Run, ferriumctl as ctl};
use crate::support::cluster::{Bootstrap, Cluster, Scratch, request};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u64 = 16;
const WAIT: Duration = Duration::from_secs(60);

/// Every key with its value, revisions, version and lease, as etcd's JSON
/// gateway lists them from member `addr` (at `revision`, or the latest),
/// with the revision the answer was read at.
fn listing(addr: &str, revision: Option<u64>) -> (Vec<Value>, u64) {
    let mut body = json!({"key": "AA==", "range_end": "AA=="});
    if let Some(r) = revision {
        body["revision"] = json!(r.to_string());
    }
    let r = request(
        addr,
        "POST",
        "/v3/kv/range",
        Some(&body.to_string()),
        &[],
        WAIT,
    )
    .expect("a range over every key");
    assert_eq!(r.status, 200, "range: {}", r.body);
    let v = r.json();
    assert!(
        v["more"].as_bool() != Some(true),
        "the listing was cut short: {v}"
    );
    let at = v["header"]["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a header revision");
    (v["kvs"].as_array().cloned().unwrap_or_default(), at)
}

fn digest(kvs: &[Value]) -> String {
    let mut h = Sha256::new();
    for kv in kvs {
        h.update(kv.to_string().as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs 16 writers against the members at `addrs` until `stop`, counting
/// acknowledged writes in `acked`.
fn writers(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let addrs = addrs.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let addr = &addrs[(n as usize + w as usize) % addrs.len()];
                    // Keys are overwritten, so history builds up too; one in
                    // ten writes deletes instead.
                    let key = format!("w/{w:02}/{:03}", n % 40);
                    let op = if n % 10 == 0 {
                        json!({"Delete": {"key": key}})
                    } else {
                        json!({"Set": {"key": key, "value": format!("{w}-{n}")}})
                    };
                    let r = request(addr, "POST", "/write", Some(&op.to_string()), &[], WAIT);
                    if matches!(r, Ok(ref r) if r.status == 200) {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ID=HTTP/GRPC,...` for `ferriumctl snapshot restore --initial-members`.
fn members_of(c: &Cluster) -> String {
    c.ids()
        .into_iter()
        .map(|id| {
            let n = c.node(id);
            format!("{id}={}/{}", n.advertised_addr(), n.grpc_addr())
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn restore_into(file: &Path, c: &Cluster, id: u64) -> Run {
    ctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        c.node(id).data_dir.to_str().unwrap(),
        "--id",
        &id.to_string(),
        "--initial-members",
        &members_of(c),
    ])
}

/// `ferriumctl snapshot restore FILE` into `dir` for a one-member cluster.
fn restore_alone(file: &Path, dir: &Path) -> Run {
    ctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--id",
        "1",
        "--initial-members",
        "1=127.0.0.1:1",
    ])
}

#[test]
fn a_backup_taken_under_writers_restores_into_a_new_cluster_equal_at_its_revision() {
    let src = Cluster::start_in_process("backup-src", 3, Bootstrap::Static, "");
    let addrs: Vec<String> = src.ids().into_iter().map(|id| src.addr(id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let threads = writers(addrs.clone(), stop.clone(), acked.clone());
    wait_until("2000 acknowledged writes", || {
        acked.load(Ordering::SeqCst) >= 2000
    });

    // The backup, from a follower, while the writers run.
    let leader = src.wait_leader(WAIT);
    let follower = src.ids().into_iter().find(|i| *i != leader).unwrap();
    let scratch = Scratch::new("backup-files");
    let file = scratch.path.join("backup.fsnap");
    let before = acked.load(Ordering::SeqCst);
    let saved = ctl(&[
        "--endpoints",
        &src.addr(follower),
        "snapshot",
        "save",
        file.to_str().unwrap(),
    ]);
    assert_eq!(saved.code, 0, "snapshot save failed: {}", saved.stderr);
    // Writers were still being acknowledged around the backup.
    wait_until("more writes after the backup", || {
        acked.load(Ordering::SeqCst) >= before + 500
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a writer");
    }
    assert!(
        !scratch.path.join("backup.fsnap.part").exists(),
        "the temporary file was left behind"
    );

    let status = ctl(&["-o", "json", "snapshot", "status", file.to_str().unwrap()]);
    assert_eq!(status.code, 0, "snapshot status failed: {}", status.stderr);
    let s: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let revision = s["revision"].as_u64().expect("a revision");
    let (latest, latest_rev) = listing(&src.addr(leader), None);
    assert!(
        latest_rev > revision,
        "the writers went on after the backup (revision {revision}, now {latest_rev})"
    );
    let (at_backup, _) = listing(&src.addr(leader), Some(revision));
    assert_eq!(
        s["keys"].as_u64(),
        Some(at_backup.len() as u64),
        "status counts {} keys, the source held {} at revision {revision}",
        s["keys"],
        at_backup.len()
    );
    assert!(
        at_backup.len() > 100,
        "too few keys to compare: {}",
        at_backup.len()
    );
    assert_ne!(
        digest(&at_backup),
        digest(&latest),
        "the source did not change after the backup: the test would prove nothing"
    );

    // Every member of a new cluster restores the same file.
    let restored = Cluster::start_prepared("backup-dst", 3, "", |c| {
        for id in c.ids() {
            let r = restore_into(&file, c, id);
            assert_eq!(r.code, 0, "restore of member {id} failed: {}", r.stderr);
            assert!(
                r.stdout.contains(&format!("revision {revision}")),
                "restore did not report revision {revision}: {}",
                r.stdout
            );
        }
    });
    for id in restored.ids() {
        // Linearizable reads through every member: each has the data.
        let (kvs, at) = listing(&restored.addr(id), None);
        assert!(at >= revision, "member {id} answers at revision {at}");
        assert_eq!(
            digest(&kvs),
            digest(&at_backup),
            "member {id} of the restored cluster differs from the source at revision {revision}"
        );
    }
    // History up to the backup came along, and the new cluster writes on
    // after it.
    let (old, _) = listing(&restored.addr(1), Some(revision));
    assert_eq!(digest(&old), digest(&at_backup));
    let w = restored.set_retrying(1, "after-restore", "x");
    assert_eq!(w.status, 200, "a write to the restored cluster: {}", w.body);
    let (_, now) = listing(&restored.addr(1), None);
    assert!(
        now > revision,
        "the new write is at {now}, not after {revision}"
    );
}

#[test]
fn a_damaged_or_truncated_backup_is_refused_by_status_and_restore() {
    let src = Cluster::start_in_process("backup-damage", 1, Bootstrap::Static, "");
    for i in 0..300 {
        let r = src.set_retrying(1, &format!("k/{i:04}"), &"v".repeat(200));
        assert_eq!(r.status, 200);
    }
    let scratch = Scratch::new("backup-damage-files");
    let good = scratch.path.join("good.fsnap");
    let saved = ctl(&[
        "--endpoints",
        &src.addr(1),
        "snapshot",
        "save",
        good.to_str().unwrap(),
    ]);
    assert_eq!(saved.code, 0, "snapshot save failed: {}", saved.stderr);
    let bytes = std::fs::read(&good).expect("the backup");
    assert!(bytes.len() > 10_000, "a backup of {} bytes", bytes.len());

    let truncated = scratch.path.join("truncated.fsnap");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut flipped_bytes = bytes.clone();
    let middle = bytes.len() / 2;
    flipped_bytes[middle] ^= 0x40;
    let flipped = scratch.path.join("flipped.fsnap");
    std::fs::write(&flipped, &flipped_bytes).unwrap();
    let empty = scratch.path.join("empty.fsnap");
    std::fs::write(&empty, b"").unwrap();
    // A scheduled backup's zstd compression, whole and truncated.
    let zst_bytes = zstd::stream::encode_all(&bytes[..], 3).unwrap();
    let zst = scratch.path.join("good.snap.zst");
    std::fs::write(&zst, &zst_bytes).unwrap();
    let zst_truncated = scratch.path.join("truncated.snap.zst");
    std::fs::write(&zst_truncated, &zst_bytes[..zst_bytes.len() / 2]).unwrap();

    let good_status = ctl(&["snapshot", "status", good.to_str().unwrap()]);
    assert_eq!(good_status.code, 0, "{}", good_status.stderr);
    let zst_status = ctl(&["-o", "json", "snapshot", "status", zst.to_str().unwrap()]);
    assert_eq!(zst_status.code, 0, "{}", zst_status.stderr);
    let z: Value = serde_json::from_str(&zst_status.stdout).unwrap();
    assert_eq!(z["compression"], "zstd");
    assert_eq!(z["size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(z["file_size"].as_u64(), Some(zst_bytes.len() as u64));
    let zst_dir = scratch.path.join("restored-zst");
    let r = restore_alone(&zst, &zst_dir);
    assert_eq!(r.code, 0, "restore of a compressed backup: {}", r.stderr);
    assert!(r.stdout.contains("300 keys"), "{}", r.stdout);

    for bad in [&truncated, &flipped, &empty, &zst_truncated] {
        let name = bad.display().to_string();
        let st = ctl(&["snapshot", "status", &name]);
        assert_ne!(st.code, 0, "status accepted {name}: {}", st.stdout);
        assert!(
            st.stderr.contains(&name) && !st.stderr.contains("Error {"),
            "status's refusal does not name the file in words: {}",
            st.stderr
        );
        let dir = scratch.path.join(format!(
            "restored-{}",
            bad.file_stem().unwrap().to_string_lossy()
        ));
        let r = restore_alone(Path::new(&name), &dir);
        assert_ne!(r.code, 0, "restore accepted {name}: {}", r.stdout);
        assert!(
            r.stderr.contains(&name) && !r.stderr.contains("Error {"),
            "restore's refusal does not name the file in words: {}",
            r.stderr
        );
        // Nothing a node could start from was left behind.
        let leftover = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert!(
            !dir.join("CURRENT").exists(),
            "restore of {name} left a database in {} ({leftover} entries)",
            dir.display()
        );
    }
    // No decompressed temporary file was left beside the backups.
    let temps: Vec<_> = std::fs::read_dir(&scratch.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferrium-decompressed"))
        .collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");

    // Restoring refuses a directory that already holds something.
    let full = scratch.path.join("occupied");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let r = restore_alone(&good, &full);
    assert_ne!(r.code, 0, "restore overwrote a non-empty directory");
    assert!(
        r.stderr.contains("not empty"),
        "the refusal does not say why: {}",
        r.stderr
    );
}

/// `etcdctl snapshot save` against Ferrium (etcd's Maintenance.Snapshot)
/// makes a file `ferriumctl snapshot status` and `restore` accept: an etcd
/// user's backup script goes on working.
#[test]
fn a_backup_saved_by_etcdctl_restores() {
    let src = Cluster::start_in_process("backup-etcdctl", 1, Bootstrap::Static, "");
    for i in 0..50 {
        let r = src.set_retrying(1, &format!("e/{i:02}"), "value");
        assert_eq!(r.status, 200);
    }
    let scratch = Scratch::new("backup-etcdctl-files");
    let file = scratch.path.join("etcdctl.db");
    let out = Command::new(crate::support::cluster::etcd::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", src.node(1).grpc_addr()))
        .args(["snapshot", "save", file.to_str().unwrap()])
        .output()
        .expect("run etcdctl (Debian package etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = ctl(&["-o", "json", "snapshot", "status", file.to_str().unwrap()]);
    assert_eq!(st.code, 0, "status of etcdctl's file: {}", st.stderr);
    let v: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["keys"].as_u64(), Some(50), "{v}");
    let dir = scratch.path.join("restored");
    let r = restore_alone(&file, &dir);
    assert_eq!(r.code, 0, "restore of etcdctl's file: {}", r.stderr);
    // Anything else after the checksum is still refused.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(1);
    let bad = scratch.path.join("extra.db");
    std::fs::write(&bad, &bytes).unwrap();
    let st = ctl(&["snapshot", "status", bad.to_str().unwrap()]);
    assert_ne!(st.code, 0, "a byte after etcdctl's checksum was accepted");
}
