//! Crash test: a child process appends entries, saves votes and applies as
//! fast as it can and prints what was acknowledged; the test SIGKILLs it at
//! random moments, reopens the store and checks that nothing acknowledged
//! was lost and that the state machine matches its last-applied index.
//!
//! A SIGKILL leaves the kernel's page cache intact, so it cannot show a
//! missing fsync by itself. The child therefore also watches its WAL syncs
//! at the system-call level ([`wal_syncs`]) and reports every append that
//! was acknowledged before a WAL sync covering it had completed;
//! `unsynced_acknowledgements_are_caught` proves that this check fails a
//! store run with `sync_writes = false`.
//!
//! The child is this test binary itself, re-run for exactly the test
//! `crash_child` with `FERRIUM_CRASH_CHILD` set to the store directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::support::store::ChildProcess;
use crate::support::store::TempDir;
use crate::support::store::test_name;
use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::rng::{Rng, clock_seed};
use ferrium::store;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::RaftLogReader;
use openraft::Vote;
use openraft::alias::EntryOf;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;

/// Counts WAL syncs as the kernel sees them, independently of the log
/// store's own bookkeeping.
///
/// The store test binary defines `fdatasync` and `fsync` itself. The
/// linker binds every call to them in the binary (RocksDB's, which is
/// linked in statically, and std's) to these definitions instead of libc's;
/// they make the system call directly and, when the file is a RocksDB WAL
/// (`*.log`), record what the sync covered. Every test of the binary goes
/// through them; only the child reads the counts.
mod wal_syncs {
    use std::ffi::c_int;
    use std::ffi::c_long;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    /// Appends the child has started writing; it increments this before
    /// each append, so a sync that starts after an append was written
    /// reads a value at least as high as that append's number.
    pub static STARTED: AtomicU64 = AtomicU64::new(0);
    /// The highest value of `STARTED` read at the start of a WAL sync that
    /// then succeeded: every append up to this number is on disk.
    pub static COVERED: AtomicU64 = AtomicU64::new(0);
    /// WAL syncs that succeeded.
    pub static SYNCS: AtomicU64 = AtomicU64::new(0);

    #[cfg(target_arch = "x86_64")]
    const SYS_FSYNC: c_long = 74;
    #[cfg(target_arch = "x86_64")]
    const SYS_FDATASYNC: c_long = 75;
    #[cfg(target_arch = "aarch64")]
    const SYS_FSYNC: c_long = 82;
    #[cfg(target_arch = "aarch64")]
    const SYS_FDATASYNC: c_long = 83;

    unsafe extern "C" {
        fn syscall(number: c_long, ...) -> c_long;
    }

    fn is_wal(fd: c_int) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|p| p.extension().is_some_and(|x| x == "log"))
    }

    fn sync(number: c_long, fd: c_int) -> c_int {
        let wal = is_wal(fd);
        let started = STARTED.load(Ordering::SeqCst);
        // SAFETY: fsync and fdatasync take one file descriptor argument.
        let r = unsafe { syscall(number, fd as c_long) } as c_int;
        if wal && r == 0 {
            COVERED.fetch_max(started, Ordering::SeqCst);
            SYNCS.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn fdatasync(fd: c_int) -> c_int {
        sync(SYS_FDATASYNC, fd)
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn fsync(fd: c_int) -> c_int {
        sync(SYS_FSYNC, fd)
    }
}

/// Resolves when an append is durable.
type AckReceiver = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), std::io::Error>>;

const CHILD_ENV: &str = "FERRIUM_CRASH_CHILD";
/// Set to `1`: the child opens its store with `sync_writes = false`.
const UNSYNCED_ENV: &str = "FERRIUM_CRASH_UNSYNCED";
const KEYS: u64 = 97;
const KILLS: usize = 24;

fn command_for(index: u64) -> Command {
    Command::Set {
        key: format!("k{}", index % KEYS),
        value: format!("v{index}"),
    }
}

fn entry(term: u64, index: u64) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig> {
        log_id: LogId::new(LeaderId { term, node_id: 1 }, index),
        payload: EntryPayload::Normal(command_for(index)),
    }
}

/// The harness's name of [`crash_child`], which the parent runs.
fn child_test() -> String {
    test_name(module_path!(), "crash_child")
}

/// The child: runs until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_main(dir));
}

async fn child_main(dir: String) {
    let opts = store::StoreOptions {
        sync_writes: std::env::var(UNSYNCED_ENV).as_deref() != Ok("1"),
        ..store::StoreOptions::default()
    };
    let (mut log, mut sm) = store::open(dir.as_ref(), &opts).expect("open");
    let state = log.get_log_state().await.expect("log state");
    let mut next = state.last_log_id.map_or(1, |l| l.index() + 1);
    let mut term = log
        .get_log_reader()
        .await
        .read_vote()
        .await
        .expect("vote")
        .map_or(1, |v| v.leader_id().term);
    let acked = Arc::new(AtomicU64::new(next - 1));
    let mut applied = sm
        .applied_state()
        .await
        .expect("applied")
        .0
        .map_or(0, |l| l.index());
    let mut rng = Rng::new(clock_seed());

    // Acknowledgements are printed in order by one task, each after its
    // callback fired: `A <last index> <WAL syncs so far>`, preceded by
    // `U <last index>` when no completed WAL sync covered the append.
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<(u64, u64, AckReceiver)>(32);
    let printer_acked = acked.clone();
    tokio::spawn(async move {
        while let Some((last, append, rx)) = ack_rx.recv().await {
            match rx.await {
                Ok(Ok(())) => {
                    let covered = wal_syncs::COVERED.load(Ordering::SeqCst);
                    if covered < append {
                        println!("U {last} append {append}, WAL synced through append {covered}");
                    }
                    println!("A {last} {}", wal_syncs::SYNCS.load(Ordering::SeqCst));
                    let _ = std::io::stdout().flush();
                    printer_acked.store(last, Ordering::SeqCst);
                }
                other => panic!("append failed: {other:?}"),
            }
        }
    });

    println!("READY");
    let _ = std::io::stdout().flush();
    loop {
        if rng.below(50) == 0 {
            term += 1;
            log.save_vote(&Vote::new(term, 1)).await.expect("save vote");
            println!("V {term}");
            let _ = std::io::stdout().flush();
        }
        let n = 1 + rng.below(8);
        let entries: Vec<_> = (next..next + n).map(|i| entry(term, i)).collect();
        let (tx, rx) = TypeConfig::oneshot();
        let append = wal_syncs::STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        log.append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        next += n;
        ack_tx
            .send((next - 1, append, rx))
            .await
            .expect("printer alive");

        let upto = acked.load(Ordering::SeqCst);
        if upto > applied && rng.below(4) == 0 {
            let mut reader = log.get_log_reader().await;
            let entries = reader
                .try_get_log_entries(applied + 1..=upto)
                .await
                .expect("read log");
            let items: Vec<Result<_, std::io::Error>> =
                entries.into_iter().map(|e| Ok((e, None))).collect();
            sm.apply(futures_util::stream::iter(items))
                .await
                .expect("apply");
            applied = upto;
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("crash").expect("temp dir");
    let mut rng = Rng::new(clock_seed());
    let mut last_acked = 0u64;
    let mut last_vote = 0u64;
    let (mut batches, mut syncs) = (0u64, 0u64);
    let started = Instant::now();

    for round in 0..KILLS {
        let mut child = ChildProcess::spawn(&child_test(), &[(CHILD_ENV, dir.path().as_os_str())]);
        assert!(
            child
                .wait_for(Duration::from_secs(60), |l| l.ends_with("READY"))
                .is_some(),
            "round {round}: child never became ready"
        );
        // Kill it at a random moment of its run.
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        let lines = child.kill();

        let mut round_syncs = 0;
        for line in &lines {
            if let Some(ack) = line.strip_prefix("A ") {
                let (i, s) = ack.split_once(' ').expect("A <index> <syncs>");
                last_acked = last_acked.max(i.parse().expect("ack index"));
                round_syncs = s.parse().expect("sync count");
                batches += 1;
            } else if let Some(t) = line.strip_prefix("V ") {
                last_vote = last_vote.max(t.parse().expect("vote term"));
            }
        }
        syncs += round_syncs;
        let unsynced: Vec<&String> = lines.iter().filter(|l| l.starts_with("U ")).collect();
        assert!(
            unsynced.is_empty(),
            "round {round}: {} appends were acknowledged before a WAL sync covered them, e.g. {}",
            unsynced.len(),
            unsynced[0]
        );
        let applied = check_store(&dir, last_acked, last_vote);
        eprintln!(
            "round {round}: acknowledged up to {last_acked}, vote term {last_vote}, applied {applied}"
        );
    }
    assert!(
        last_acked > 100,
        "the child made too little progress: {last_acked}"
    );
    eprintln!(
        "{KILLS} kills in {:?}: {batches} acknowledged appends, {syncs} WAL syncs",
        started.elapsed()
    );
}

/// The check above is sharp: a store that acknowledges appends without
/// syncing the WAL (`sync_writes = false`) is reported at once.
#[test]
fn unsynced_acknowledgements_are_caught() {
    let dir = TempDir::new("crash-unsynced").expect("temp dir");
    let mut child = ChildProcess::spawn(
        &child_test(),
        &[
            (CHILD_ENV, dir.path().as_os_str()),
            (UNSYNCED_ENV, "1".as_ref()),
        ],
    );
    let caught = child.wait_for(Duration::from_secs(60), |l| l.starts_with("U "));
    let lines = child.kill();
    assert!(
        caught.is_some(),
        "an unsynced store's acknowledgements went unnoticed; the child printed {} lines, the last: {:?}",
        lines.len(),
        lines.last()
    );
    eprintln!("caught: {}", caught.unwrap_or_default());
}

/// Reopens the store and checks it; returns the last applied index.
fn check_store(dir: &TempDir, last_acked: u64, last_vote: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut log, mut sm) =
            store::open(dir.path(), &store::StoreOptions::default()).expect("reopen");
        let mut reader = log.get_log_reader().await;

        let vote = reader.read_vote().await.expect("read vote");
        let term = vote.map_or(0, |v| v.leader_id().term);
        assert!(
            term >= last_vote,
            "vote went back: stored {term}, acknowledged {last_vote}"
        );

        let entries = reader
            .try_get_log_entries(1..=last_acked)
            .await
            .expect("read log");
        assert_eq!(
            entries.len() as u64,
            last_acked,
            "acknowledged entries missing"
        );
        for (i, e) in entries.iter().enumerate() {
            let index = i as u64 + 1;
            assert_eq!(e.log_id.index(), index);
            match &e.payload {
                EntryPayload::Normal(c) => assert_eq!(c, &command_for(index)),
                other => panic!("entry {index}: unexpected payload {other:?}"),
            }
        }

        let applied = sm
            .applied_state()
            .await
            .expect("applied state")
            .0
            .map_or(0, |l| l.index());
        let last_log = log
            .get_log_state()
            .await
            .expect("log state")
            .last_log_id
            .map_or(0, |l| l.index());
        assert!(
            applied <= last_log,
            "applied {applied} beyond the log end {last_log}"
        );
        check_state_machine(&sm, applied);
        applied
    })
}

/// Every key must hold exactly what applying entries `1..=applied` gives.
fn check_state_machine(sm: &store::StateMachine, applied: u64) {
    let mut want = BTreeMap::new();
    for j in 0..KEYS {
        let first = if j == 0 { KEYS } else { j };
        if first > applied {
            continue;
        }
        let last = applied - (applied - first) % KEYS;
        let version = (last - first) / KEYS + 1;
        want.insert(format!("k{j}"), (format!("v{last}"), first, last, version));
    }
    let (got, more) = sm.list(b"", None, 1000).expect("list");
    assert!(!more);
    let got: BTreeMap<_, _> = got
        .into_iter()
        .map(|(k, v)| {
            let text = |b: Vec<u8>| String::from_utf8(b).expect("text");
            (
                text(k),
                (text(v.value), v.create_revision, v.mod_revision, v.version),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "state machine differs from the log prefix 1..={applied}"
    );
}
