//! Snapshots end to end: a million keys built, streamed and installed into an
//! empty store; damaged files rejected without touching the store; reopening
//! a large store reads its metadata, not its keys.

use std::io::Read;
use std::time::Instant;

use crate::support::store::TempDir;
use crate::support::store::digest;
use crate::support::store::log_id;
use crate::support::store::populate;
use ferrium::store;
use ferrium::store::SnapshotFile;
use ferrium::store::StateMachine;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

/// Streams a snapshot file into a peer's receiver, 64 KiB at a time, as the
/// HTTP transfer does.
fn transfer(file: &SnapshotFile, to: &StateMachine) -> SnapshotFile {
    let mut reader = file.reader().expect("reader");
    let mut receiver = to.snapshot_receiver().expect("receiver");
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf).expect("read snapshot");
        if n == 0 {
            break;
        }
        receiver.write(&buf[..n]).expect("receive");
    }
    receiver.finish().expect("finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_keys_build_transfer_install_and_reopen_without_a_key_scan() {
    const KEYS: u64 = 1_000_000;
    let src_dir = TempDir::new("snap-src").expect("temp dir");
    let dst_dir = TempDir::new("snap-dst").expect("temp dir");
    let opts = store::StoreOptions::default();

    let (_log, mut src) = store::open(src_dir.path(), &opts).expect("open source");
    let t = Instant::now();
    populate(&mut src, KEYS, "key").await;
    eprintln!("populated {KEYS} keys in {:?}", t.elapsed());
    let (src_digest, src_count) = digest(&src);
    assert_eq!(src_count, KEYS);

    let t = Instant::now();
    let mut builder = src.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    eprintln!(
        "built snapshot of {} bytes in {:?}",
        snap.snapshot.size().expect("size"),
        t.elapsed()
    );
    assert_eq!(snap.meta.last_log_id, Some(log_id(1 + KEYS / 1000)));

    // Reopen the source: metadata only, no key scan.
    drop((_log, src, builder));
    let t = Instant::now();
    let (_log, mut src) = store::open(src_dir.path(), &opts).expect("reopen source");
    let reopen = t.elapsed();
    // Reading every key would pull ~140 MiB through the block cache and
    // fill it to its 64 MiB limit.
    let cached = src
        .reader()
        .memory_usage()
        .expect("memory usage")
        .block_cache;
    eprintln!("reopened a {KEYS}-key store in {reopen:?}, block cache holds {cached} bytes");
    assert!(
        cached < 8 << 20,
        "reopening read {cached} bytes of blocks: it scanned the keys"
    );
    assert_eq!(
        src.applied_state().await.expect("applied").0,
        snap.meta.last_log_id
    );

    let (_dst_log, mut dst) = store::open(dst_dir.path(), &opts).expect("open destination");
    let t = Instant::now();
    let received = transfer(&snap.snapshot, &dst);
    eprintln!("transferred in {:?}", t.elapsed());
    let t = Instant::now();
    dst.install_snapshot(&snap.meta, received)
        .await
        .expect("install");
    eprintln!("installed in {:?}", t.elapsed());

    let (dst_digest, dst_count) = digest(&dst);
    assert_eq!(
        (dst_digest, dst_count),
        (src_digest, src_count),
        "installed data differs"
    );
    let (applied, membership) = dst.applied_state().await.expect("applied");
    assert_eq!(applied, snap.meta.last_log_id);
    assert_eq!(membership, snap.meta.last_membership);
    let current = dst
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    assert_eq!(current.meta, snap.meta);
    let _ = src.get_current_snapshot().await.expect("source snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshot_files_are_rejected_and_change_nothing() {
    let src_dir = TempDir::new("dmg-src").expect("temp dir");
    let dst_dir = TempDir::new("dmg-dst").expect("temp dir");
    let work = TempDir::new("dmg-files").expect("temp dir");
    let opts = store::StoreOptions::default();

    let (_l1, mut src) = store::open(src_dir.path(), &opts).expect("open source");
    populate(&mut src, 3000, "new").await;
    let snap = src
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let good = std::fs::read(snap.snapshot.path()).expect("read snapshot");

    let (_l2, mut dst) = store::open(dst_dir.path(), &opts).expect("open destination");
    populate(&mut dst, 10, "old").await;
    let before = digest(&dst);
    let applied_before = dst.applied_state().await.expect("applied");

    let mut flipped_value = good.clone();
    let at = good.len() - 20; // inside the last record's value
    flipped_value[at] ^= 0x40;
    let mut flipped_middle = good.clone();
    flipped_middle[good.len() / 2] ^= 0x01;
    let truncated = good[..good.len() * 2 / 3].to_vec();
    let mut other_version = good.clone();
    other_version[8..12].copy_from_slice(&3u32.to_le_bytes());

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped-value", flipped_value, "checksum mismatch"),
        ("flipped-middle", flipped_middle, ""),
        ("truncated", truncated, "truncated"),
        (
            "other-version",
            other_version,
            "format version 3 is not supported",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).expect("write damaged file");
        let file = SnapshotFile::open(&path).expect("open damaged file");
        let err = dst
            .install_snapshot(&snap.meta, file)
            .await
            .expect_err("damaged snapshot must be rejected");
        eprintln!("{name}: {err}");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{name}: {err}");
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert_eq!(digest(&dst), before, "{name}: data changed");
        assert_eq!(dst.applied_state().await.expect("applied"), applied_before);
    }

    // The intact file still installs.
    let file = transfer(&snap.snapshot, &dst);
    dst.install_snapshot(&snap.meta, file)
        .await
        .expect("install good file");
    assert_eq!(digest(&dst), digest(&src));
}
