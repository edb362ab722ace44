//! Log append throughput with synced writes: 1 appender, then 64 concurrent
//! appenders, and how many WAL syncs the group-commit flusher needed.
//!
//! `cargo run --example append_bench [seconds per phase, default 5]`
//!
//! Each appender appends one entry (a `Set` with a 100-byte value), waits for
//! its durability callback, and repeats.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::store;
use ferrium::store::LogStore;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::alias::EntryOf;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;

fn entry(index: u64) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig> {
        log_id: LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ),
        payload: EntryPayload::Normal(Command::Set {
            key: format!("key{}", index % 10_000),
            value: "x".repeat(100),
        }),
    }
}

/// Runs `appenders` tasks for `duration`; returns (appends, WAL syncs).
async fn phase(
    log: &LogStore,
    next: &Arc<AtomicU64>,
    appenders: usize,
    duration: Duration,
) -> (u64, u64) {
    let syncs_before = log.wal_syncs();
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let mut log = log.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = TypeConfig::oneshot();
                log.append([entry(index)], IOFlushed::signal(tx))
                    .await
                    .expect("append");
                rx.await.expect("callback").expect("durable");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("appender task");
    }
    (total, log.wal_syncs() - syncs_before)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("ferrium-append-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = store::StoreOptions::default();
    assert!(opts.sync_writes, "the benchmark measures synced appends");
    let (log, _sm) = store::open(&dir, &opts).expect("open store");
    let next = Arc::new(AtomicU64::new(1));
    let duration = Duration::from_secs(secs);

    let (n1, s1) = phase(&log, &next, 1, duration).await;
    let rate1 = n1 as f64 / duration.as_secs_f64();
    println!(
        "1 appender:   {n1:>8} appends in {secs}s = {rate1:>9.0} appends/s, {s1:>6} WAL syncs"
    );

    let (n64, s64) = phase(&log, &next, 64, duration).await;
    let rate64 = n64 as f64 / duration.as_secs_f64();
    println!(
        "64 appenders: {n64:>8} appends in {secs}s = {rate64:>9.0} appends/s, {s64:>6} WAL syncs ({:.1} appends per sync)",
        n64 as f64 / s64.max(1) as f64
    );
    println!("speed-up 64 vs 1: {:.1}x", rate64 / rate1.max(1e-9));

    drop(log);
    drop(_sm);
    let _ = std::fs::remove_dir_all(&dir);
}
