//! Crash test: a child process appends entries, saves votes and applies as
//! fast as it can and prints what was acknowledged; the test SIGKILLs it at
//! random moments, reopens the store and checks that nothing acknowledged
//! was lost and that the state machine matches its last-applied index.
//!
//! The child is this test binary itself, re-run with `FERRIUM_CRASH_CHILD`
//! set to the store directory.

mod store_support;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::process::Command as Process;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
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
use store_support::Rng;
use store_support::TempDir;

/// Resolves when an append is durable.
type AckReceiver = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), std::io::Error>>;

const CHILD_ENV: &str = "FERRIUM_CRASH_CHILD";
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
    let (mut log, mut sm) =
        store::open(dir.as_ref(), &store::StoreOptions::default()).expect("open");
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
    let mut rng = Rng::seeded();

    // Acknowledgements are printed in order by one task, each after its
    // callback fired.
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<(u64, AckReceiver)>(32);
    let printer_acked = acked.clone();
    tokio::spawn(async move {
        while let Some((last, rx)) = ack_rx.recv().await {
            match rx.await {
                Ok(Ok(())) => {
                    println!("A {last}");
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
        log.append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        next += n;
        ack_tx.send((next - 1, rx)).await.expect("printer alive");

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
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng::seeded();
    let mut last_acked = 0u64;
    let mut last_vote = 0u64;
    let started = Instant::now();

    for round in 0..KILLS {
        let mut child = Process::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
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
        // Let it open the store, then run for a random while.
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        child.kill().expect("SIGKILL child");
        let _ = child.wait();
        let lines = lines.join().expect("reader thread");

        assert!(
            lines.iter().any(|l| l.ends_with("READY")),
            "round {round}: child never became ready"
        );
        for line in &lines {
            if let Some(i) = line.strip_prefix("A ") {
                last_acked = last_acked.max(i.parse().expect("ack index"));
            } else if let Some(t) = line.strip_prefix("V ") {
                last_vote = last_vote.max(t.parse().expect("vote term"));
            }
        }
        let applied = check_store(&dir, last_acked, last_vote);
        eprintln!(
            "round {round}: acknowledged up to {last_acked}, vote term {last_vote}, applied {applied}"
        );
    }
    assert!(
        last_acked > 100,
        "the child made too little progress: {last_acked}"
    );
    eprintln!("{KILLS} kills in {:?}", started.elapsed());
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
    let (got, more) = sm.list("", None, 1000).expect("list");
    assert!(!more);
    let got: BTreeMap<_, _> = got
        .into_iter()
        .map(|(k, v)| (k, (v.value, v.create_revision, v.mod_revision, v.version)))
        .collect();
    assert_eq!(
        got, want,
        "state machine differs from the log prefix 1..={applied}"
    );
}
