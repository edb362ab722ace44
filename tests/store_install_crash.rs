//! Snapshot install under SIGKILL: a child process installs two snapshots
//! alternately, forever; the test kills it at random moments and checks
//! after each reopen that the store holds exactly one of the two states,
//! never a mix.
//!
//! The child is this test binary itself, re-run with
//! `FERRIUM_INSTALL_CHILD` set to the store directory.

mod store_support;

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command as Process;
use std::process::Stdio;
use std::time::Duration;

use ferrium::store;
use ferrium::store::SnapshotFile;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use store_support::Rng;
use store_support::TempDir;
use store_support::digest;
use store_support::populate;

const CHILD_ENV: &str = "FERRIUM_INSTALL_CHILD";
const SNAP_A_ENV: &str = "FERRIUM_INSTALL_SNAP_A";
const SNAP_B_ENV: &str = "FERRIUM_INSTALL_SNAP_B";
const KILLS: usize = 20;

/// The child: installs A, B, A, B, ... until killed.
#[test]
fn install_child() {
    let (Ok(dir), Ok(a), Ok(b)) = (
        std::env::var(CHILD_ENV),
        std::env::var(SNAP_A_ENV),
        std::env::var(SNAP_B_ENV),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_log, mut sm) =
            store::open(dir.as_ref(), &store::StoreOptions::default()).expect("open");
        println!("READY");
        let _ = std::io::stdout().flush();
        for path in [a, b].iter().cycle() {
            let file = SnapshotFile::open(path).expect("open snapshot");
            let meta = file.read_meta().expect("meta");
            sm.install_snapshot(&meta, file).await.expect("install");
            println!("INSTALLED {path}");
            let _ = std::io::stdout().flush();
        }
    });
}

/// Builds a snapshot of `keys` keys named `prefix*` in its own store and
/// returns (file path, digest of that state, applied state).
async fn make_snapshot(
    work: &TempDir,
    name: &str,
    keys: u64,
    prefix: &str,
) -> (PathBuf, (u64, u64), String) {
    let dir = work.path().join(name);
    let (_log, mut sm) = store::open(&dir, &store::StoreOptions::default()).expect("open");
    populate(&mut sm, keys, prefix).await;
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let path = work.path().join(format!("{name}.snap"));
    std::fs::copy(snap.snapshot.path(), &path).expect("copy snapshot");
    let applied = format!("{:?}", sm.applied_state().await.expect("applied"));
    (path, digest(&sm), applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_install_is_atomic_under_sigkill() {
    let work = TempDir::new("install-crash").expect("temp dir");
    let (a, digest_a, applied_a) = make_snapshot(&work, "a", 20_000, "a").await;
    let (b, digest_b, applied_b) = make_snapshot(&work, "b", 30_000, "b").await;
    let store_dir = work.path().join("store");

    // The store starts with state A.
    {
        let (_log, mut sm) =
            store::open(&store_dir, &store::StoreOptions::default()).expect("open");
        let file = SnapshotFile::open(&a).expect("open a");
        let meta = file.read_meta().expect("meta");
        sm.install_snapshot(&meta, file).await.expect("install a");
    }

    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng::seeded();
    let (mut saw_a, mut saw_b) = (0, 0);
    for round in 0..KILLS {
        let mut child = Process::new(&exe)
            .args([
                "--exact",
                "install_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &store_dir)
            .env(SNAP_A_ENV, &a)
            .env(SNAP_B_ENV, &b)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        let lines = lines.join().expect("reader thread");
        let installs = lines.iter().filter(|l| l.contains("INSTALLED")).count();
        assert!(
            lines.iter().any(|l| l.ends_with("READY")),
            "round {round}: child never became ready"
        );

        let (_log, mut sm) =
            store::open(&store_dir, &store::StoreOptions::default()).expect("reopen");
        let d = digest(&sm);
        let applied = format!("{:?}", sm.applied_state().await.expect("applied"));
        if d == digest_a {
            assert_eq!(applied, applied_a, "round {round}: data of A, metadata not");
            saw_a += 1;
        } else if d == digest_b {
            assert_eq!(applied, applied_b, "round {round}: data of B, metadata not");
            saw_b += 1;
        } else {
            panic!(
                "round {round}: the store holds neither snapshot ({} keys)",
                d.1
            );
        }
        eprintln!(
            "round {round}: {installs} installs completed before the kill; store holds {}",
            if d == digest_a { "A" } else { "B" }
        );
    }
    eprintln!("after {KILLS} kills: state A {saw_a} times, state B {saw_b} times");
}
