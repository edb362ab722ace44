//! Snapshot build and install of a large store, with peak memory.
//!
//! `cargo run --example snapshot_bench [keys, default 1000000]`
//!
//! Fills a store with `keys` keys of 100-byte values, builds a snapshot,
//! streams it in 64 KiB chunks into a second, empty store, installs it, and
//! reopens both. Peak resident memory is the kernel's high-water mark
//! (`VmHWM` in /proc/self/status) for the whole process, printed after each
//! phase.

use std::io::Read;
use std::time::Instant;

use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::store;
use ferrium::store::StateMachine;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::RaftSnapshotBuilder;
use openraft::alias::EntryOf;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;

fn vm_line(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(name)).map(str::to_owned))
        .unwrap_or_default()
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn log_id(index: u64) -> LogId<LeaderId<u64, u64>> {
    LogId::new(
        LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

async fn apply(sm: &mut StateMachine, e: EntryOf<TypeConfig>) {
    let items: Vec<Result<_, std::io::Error>> = vec![Ok((e, None))];
    sm.apply(futures_util::stream::iter(items))
        .await
        .expect("apply");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::temp_dir().join(format!("ferrium-snapshot-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let opts = store::StoreOptions::default();
    println!("options: {opts:?}");

    let (src_log, mut src) = store::open(&base.join("src"), &opts).expect("open source");
    let t = Instant::now();
    let membership = EntryOf::<TypeConfig> {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new_with_defaults(vec![[1u64].into()], [])),
    };
    apply(&mut src, membership).await;
    let mut index = 1;
    let mut next = 0;
    while next < keys {
        let end = (next + 1000).min(keys);
        let pairs = (next..end)
            .map(|i| (format!("key{i:010}"), format!("{i:0>100}")))
            .collect();
        index += 1;
        let e = EntryOf::<TypeConfig> {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::BatchSet { pairs }),
        };
        apply(&mut src, e).await;
        next = end;
    }
    println!(
        "populate {keys} keys: {:>8.2?}   VmHWM {}",
        t.elapsed(),
        vm_hwm()
    );

    let t = Instant::now();
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let size = snap.snapshot.size().expect("size");
    println!(
        "build:   {:>8.2?}   {} MiB   VmHWM {}",
        t.elapsed(),
        size >> 20,
        vm_hwm()
    );

    let (dst_log, mut dst) = store::open(&base.join("dst"), &opts).expect("open destination");
    let t = Instant::now();
    let mut reader = snap.snapshot.reader().expect("reader");
    let mut receiver = dst.snapshot_receiver().expect("receiver");
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        receiver.write(&buf[..n]).expect("write");
    }
    let received = receiver.finish().expect("finish");
    println!("stream:  {:>8.2?}   VmHWM {}", t.elapsed(), vm_hwm());

    let t = Instant::now();
    dst.install_snapshot(&snap.meta, received)
        .await
        .expect("install");
    println!("install: {:>8.2?}   VmHWM {}", t.elapsed(), vm_hwm());
    println!(
        "  rocksdb after install: source {:?}",
        src.reader().memory_usage().expect("usage")
    );
    println!(
        "  rocksdb after install: destination {:?}",
        dst.reader().memory_usage().expect("usage")
    );
    println!("  {}", vm_line("VmRSS"));

    drop((src_log, src, dst_log, dst));
    let t = Instant::now();
    let (_l, dst) = store::open(&base.join("dst"), &opts).expect("reopen");
    println!(
        "reopen:  {:>8.2?}   last applied {:?}   VmHWM {}",
        t.elapsed(),
        dst.last_applied().map(|l| l.index()),
        vm_hwm()
    );
    let (page, _) = dst.list(b"", None, 1).expect("list");
    println!(
        "first key after install: {:?}",
        page.first().map(|(k, _)| String::from_utf8_lossy(k))
    );
    println!("peak resident memory (VmHWM): {}", vm_hwm());
    drop((_l, dst));
    let _ = std::fs::remove_dir_all(&base);
}
