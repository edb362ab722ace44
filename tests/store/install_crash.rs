//! Snapshot install under SIGKILL: a child process installs two snapshots
//! alternately, forever, saying `STARTED <path>` before and `INSTALLED
//! <path>` after each install; the test waits until an install has started,
//! kills the child a random moment later (within the time a whole install
//! took), and checks after each reopen that the store holds exactly one of
//! the two states, never a mix, and the new one when the install had
//! finished. It also checks that the kills really landed inside installs and
//! that both states were seen, so a run that only ever killed between
//! installs, or always found the same state, fails.
//!
//! The child is this test binary itself, re-run for exactly the test
//! `install_child` with `FERRIUM_INSTALL_CHILD` set to the store directory.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command as Process;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use crate::support::store::TempDir;
use crate::support::store::digest;
use crate::support::store::populate;
use crate::support::store::test_name;
use ferrium::rng::{Rng, clock_seed};
use ferrium::store;
use ferrium::store::SnapshotFile;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

const CHILD_ENV: &str = "FERRIUM_INSTALL_CHILD";
const SNAP_A_ENV: &str = "FERRIUM_INSTALL_SNAP_A";
const SNAP_B_ENV: &str = "FERRIUM_INSTALL_SNAP_B";
const KILLS: usize = 20;
/// How long the child may take to say it is ready, or to start or finish
/// an install, before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

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
            println!("STARTED {path}");
            let _ = std::io::stdout().flush();
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
    let mut rng = Rng::new(clock_seed());
    let (mut saw_a, mut saw_b, mut mid_install) = (0, 0, 0);
    for round in 0..KILLS {
        let mut child = Process::new(&exe)
            .args([
                "--exact",
                &test_name(module_path!(), "install_child"),
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
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let mut lines: Vec<String> = Vec::new();
        let mut next_line = |what: &str| -> (Instant, String) {
            let (at, line) = rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
                panic!("round {round}: the child did not {what} within {PATIENCE:?}")
            });
            lines.push(line.clone());
            (at, line)
        };
        while !next_line("become ready").1.ends_with("READY") {}

        // Installs 1, 2, 3 are of A, B, A. Kill during the second (B over
        // A) in even rounds and the third (A over B) in odd ones: whether
        // the kill lands before or after the install's commit point, both
        // states turn up over the rounds.
        let target = 2 + round % 2;
        let mut started = 0;
        let mut last_start = Instant::now();
        let mut full_install = None;
        loop {
            let (at, line) = next_line("start or finish an install");
            if line.starts_with("STARTED ") {
                started += 1;
                last_start = at;
                if started == target {
                    break;
                }
            } else if line.starts_with("INSTALLED ") {
                full_install.get_or_insert(at - last_start);
            }
        }
        // A random moment within the time the first install took.
        let took = full_install.expect("an install completed before the target one");
        let window = (took.as_micros() as u64 * 3 / 4).max(1);
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        reader.join().expect("reader thread");
        lines.extend(rx.try_iter().map(|(_, l)| l));
        // The last thing the child said: an install had started and not
        // finished (the kill landed inside it), or one had finished.
        let last = lines.last().cloned().unwrap_or_default();
        let finished = last
            .strip_prefix("INSTALLED ")
            .map(|p| if p == path_str(&a) { "A" } else { "B" });
        if finished.is_none() {
            mid_install += 1;
        }

        let (_log, mut sm) =
            store::open(&store_dir, &store::StoreOptions::default()).expect("reopen");
        let d = digest(&sm);
        let applied = format!("{:?}", sm.applied_state().await.expect("applied"));
        let holds = if d == digest_a {
            assert_eq!(applied, applied_a, "round {round}: data of A, metadata not");
            saw_a += 1;
            "A"
        } else if d == digest_b {
            assert_eq!(applied, applied_b, "round {round}: data of B, metadata not");
            saw_b += 1;
            "B"
        } else {
            panic!(
                "round {round}: the store holds neither snapshot ({} keys)",
                d.1
            );
        };
        if let Some(done) = finished {
            assert_eq!(
                holds, done,
                "round {round}: the install of {done} had finished before the kill, yet the store holds {holds}"
            );
        }
        eprintln!(
            "round {round}: killed {} (a whole install took {took:?}); store holds {holds}",
            match finished {
                None => "during an install".to_string(),
                Some(done) => format!("after the install of {done} had finished"),
            }
        );
    }
    eprintln!(
        "after {KILLS} kills ({mid_install} during an install): state A {saw_a} times, state B {saw_b} times"
    );
    assert!(
        mid_install >= KILLS / 4,
        "only {mid_install} of {KILLS} kills landed while an install was in progress; the test did not test interrupted installs"
    );
    assert!(
        saw_a > 0 && saw_b > 0,
        "after {KILLS} kills the store always held the same state (A {saw_a} times, B {saw_b} times): one of the two outcomes of an interrupted install was never seen"
    );
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
