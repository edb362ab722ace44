//! KV v2 in the state machine: history and reads at past revisions, ranges
//! with their options, transactions, compaction, request ids, and all of it
//! across a reopen and a snapshot install.

use crate::support::store::TempDir;
use crate::support::store::apply;
use crate::support::store::log_id;
use ferrium::raft::kv::{
    ApplyError, Compare, CompareOp, CompareTarget, DeleteRange, KeyValue, OpResult, Put,
    RangeRequest, SortOrder, SortTarget, Txn, TxnOp,
};
use ferrium::raft::types::{Command, CommandResult, TypeConfig};
use ferrium::store;
use ferrium::store::StateMachine;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use openraft::alias::EntryOf;
use openraft::storage::RaftStateMachine;

fn normal(index: u64, command: Command) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(command),
    }
}

fn set(index: u64, key: &str, value: &str) -> EntryOf<TypeConfig> {
    normal(
        index,
        Command::Set {
            key: key.into(),
            value: value.into(),
        },
    )
}

/// Applies entries and returns their results.
async fn run(sm: &mut StateMachine, entries: Vec<EntryOf<TypeConfig>>) -> Vec<CommandResult> {
    sm.apply_entries(entries).await.expect("apply")
}

fn range(sm: &StateMachine, req: RangeRequest) -> Result<Vec<(String, String, u64)>, ApplyError> {
    let (r, _) = sm.range(&req).expect("storage")?;
    Ok(r.kvs.into_iter().map(triple).collect())
}

fn triple(kv: KeyValue) -> (String, String, u64) {
    (
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
        kv.mod_revision,
    )
}

fn at(key: &str, revision: u64) -> RangeRequest {
    RangeRequest {
        revision,
        ..RangeRequest::key(key.as_bytes())
    }
}

fn prefix_at(prefix: &str, revision: u64) -> RangeRequest {
    RangeRequest {
        revision,
        ..RangeRequest::prefix(prefix.as_bytes())
    }
}

fn owned(v: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    v.iter()
        .map(|(k, v, r)| (k.to_string(), v.to_string(), *r))
        .collect()
}

fn cas(key: &str, mod_revision: u64, value: &str) -> Txn {
    Txn {
        compare: vec![Compare {
            key: key.into(),
            range_end: Vec::new(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(mod_revision),
        }],
        success: vec![TxnOp::Put(Put {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ..Put::default()
        })],
        failure: vec![TxnOp::Range(RangeRequest::key(key.as_bytes()))],
    }
}

#[tokio::test]
async fn history_answers_reads_at_every_revision() {
    let dir = TempDir::new("mvcc-history").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");
    apply(
        &mut sm,
        vec![
            set(1, "a", "1"),
            set(2, "b", "1"),
            set(3, "a", "2"),
            normal(4, Command::Delete { key: "b".into() }),
            set(5, "a\0x", "bin"),
            set(6, "b", "again"),
        ],
    )
    .await;
    assert_eq!(range(&sm, at("a", 1)), Ok(owned(&[("a", "1", 1)])));
    assert_eq!(range(&sm, at("a", 2)), Ok(owned(&[("a", "1", 1)])));
    assert_eq!(range(&sm, at("a", 3)), Ok(owned(&[("a", "2", 3)])));
    assert_eq!(range(&sm, at("b", 3)), Ok(owned(&[("b", "1", 2)])));
    assert_eq!(range(&sm, at("b", 4)), Ok(vec![]), "deleted at 4");
    assert_eq!(range(&sm, at("b", 6)), Ok(owned(&[("b", "again", 6)])));
    assert_eq!(
        range(&sm, prefix_at("a", 4)),
        Ok(owned(&[("a", "2", 3)])),
        "a key containing a zero byte sorts after its prefix and is not there yet"
    );
    assert_eq!(
        range(&sm, prefix_at("a", 5)),
        Ok(owned(&[("a", "2", 3), ("a\0x", "bin", 5)]))
    );
    assert_eq!(
        range(&sm, prefix_at("", 3)),
        Ok(owned(&[("a", "2", 3), ("b", "1", 2)])),
        "the empty prefix is every key"
    );
    assert_eq!(
        range(&sm, at("a", 7)),
        Err(ApplyError::FutureRevision { current: 6 })
    );
    // The current revision reads the same from history and from the data.
    assert_eq!(range(&sm, prefix_at("", 6)), range(&sm, prefix_at("", 0)));
}

#[tokio::test]
async fn range_options_are_etcds() {
    let dir = TempDir::new("mvcc-range").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");
    apply(
        &mut sm,
        vec![
            set(1, "k1", "c"),
            set(2, "k2", "a"),
            set(3, "k3", "b"),
            set(4, "k2", "z"),
            set(5, "l", "x"),
        ],
    )
    .await;
    let base = RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..RangeRequest::default()
    };
    let (r, rev) = sm.range(&base).expect("storage").expect("range");
    assert_eq!((r.count, r.more, rev), (3, false, 5));
    let limited = RangeRequest {
        limit: 2,
        ..base.clone()
    };
    let (r, _) = sm.range(&limited).expect("storage").expect("range");
    assert_eq!(
        (r.kvs.len(), r.more, r.count),
        (2, true, 3),
        "count is the whole range"
    );
    let by_mod_desc = RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        limit: 2,
        ..base.clone()
    };
    let (r, _) = sm.range(&by_mod_desc).expect("storage").expect("range");
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"k2".to_vec(), b"k3".to_vec()]);
    assert!(r.more);
    let by_value = RangeRequest {
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Value,
        keys_only: true,
        ..base.clone()
    };
    let (r, _) = sm.range(&by_value).expect("storage").expect("range");
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"k3".to_vec(), b"k1".to_vec(), b"k2".to_vec()]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()), "keys only");
    let count_only = RangeRequest {
        count_only: true,
        ..base.clone()
    };
    let (r, _) = sm.range(&count_only).expect("storage").expect("range");
    assert_eq!((r.kvs.len(), r.count), (0, 3));
    let from_key = RangeRequest {
        key: b"k3".to_vec(),
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let (r, _) = sm.range(&from_key).expect("storage").expect("range");
    assert_eq!(r.count, 2, "k3 and l");
    let min_mod = RangeRequest {
        min_mod_revision: 3,
        ..base
    };
    let (r, _) = sm.range(&min_mod).expect("storage").expect("range");
    assert_eq!(r.kvs.len(), 2, "k3 at 3 and k2 at 4");
}

#[tokio::test]
async fn transactions_compare_branch_and_apply_atomically() {
    let dir = TempDir::new("mvcc-txn").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");
    apply(&mut sm, vec![set(1, "k", "v1")]).await;

    // CAS on the right revision wins and answers the previous value.
    let r = run(
        &mut sm,
        vec![normal(2, Command::Txn(Box::new(cas("k", 1, "v2"))))],
    )
    .await;
    let t = r[0].txn.clone().expect("txn result");
    assert!(t.succeeded);
    match &t.responses[0] {
        OpResult::Put { prev_kv: Some(kv) } => assert_eq!(kv.value, b"v1"),
        other => panic!("put answer: {other:?}"),
    }
    // CAS on a stale revision loses and reads the current value.
    let r = run(
        &mut sm,
        vec![normal(3, Command::Txn(Box::new(cas("k", 1, "v3"))))],
    )
    .await;
    let t = r[0].txn.clone().expect("txn result");
    assert!(!t.succeeded);
    match &t.responses[0] {
        OpResult::Range(r) => assert_eq!(triple(r.kvs[0].clone()), ("k".into(), "v2".into(), 2)),
        other => panic!("range answer: {other:?}"),
    }
    assert_eq!(range(&sm, at("k", 0)), Ok(owned(&[("k", "v2", 2)])));

    // Later operations see earlier ones; a nested transaction sees both.
    let nested = Txn {
        compare: vec![Compare {
            key: b"n".to_vec(),
            range_end: Vec::new(),
            op: CompareOp::Equal,
            target: CompareTarget::Value(b"1".to_vec()),
        }],
        success: vec![TxnOp::DeleteRange(DeleteRange {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            prev_kv: true,
        })],
        failure: vec![],
    };
    let t = Txn::ops(vec![
        TxnOp::Put(Put {
            key: b"n".to_vec(),
            value: b"1".to_vec(),
            ..Put::default()
        }),
        TxnOp::Range(RangeRequest::prefix(b"".to_vec())),
        TxnOp::Txn(Box::new(nested)),
    ]);
    let r = run(&mut sm, vec![normal(4, Command::Txn(Box::new(t)))]).await;
    let t = r[0].txn.clone().expect("txn result");
    match &t.responses[1] {
        OpResult::Range(r) => assert_eq!(r.count, 2, "k and the n just put"),
        other => panic!("{other:?}"),
    }
    match &t.responses[2] {
        OpResult::Txn(inner) => {
            assert!(inner.succeeded, "the nested compare sees n = 1");
            assert!(matches!(
                &inner.responses[0],
                OpResult::DeleteRange { deleted: 1, .. }
            ));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(range(&sm, at("k", 0)), Ok(vec![]));
    assert_eq!(range(&sm, at("k", 3)), Ok(owned(&[("k", "v2", 2)])));
    assert_eq!(range(&sm, at("n", 0)), Ok(owned(&[("n", "1", 4)])));

    // An error in a branch changes nothing at all.
    let t = Txn::ops(vec![
        TxnOp::Put(Put {
            key: b"x".to_vec(),
            value: b"1".to_vec(),
            ..Put::default()
        }),
        TxnOp::Put(Put {
            key: b"missing".to_vec(),
            ignore_value: true,
            ..Put::default()
        }),
    ]);
    let r = run(
        &mut sm,
        vec![normal(5, Command::Txn(Box::new(t))), set(6, "after", "1")],
    )
    .await;
    assert_eq!(r[0].error, Some(ApplyError::KeyNotFound));
    assert_eq!(range(&sm, at("x", 0)), Ok(vec![]));
    assert_eq!(range(&sm, at("after", 0)), Ok(owned(&[("after", "1", 6)])));
    // A range at a future revision inside a transaction is refused.
    let t = Txn::ops(vec![TxnOp::Range(at("k", 7))]);
    let r = run(&mut sm, vec![normal(7, Command::Txn(Box::new(t)))]).await;
    assert_eq!(r[0].error, Some(ApplyError::FutureRevision { current: 6 }));
}

#[tokio::test]
async fn compaction_refuses_old_reads_removes_old_versions_and_survives() {
    let dir = TempDir::new("mvcc-compact").expect("temp dir");
    let dst_dir = TempDir::new("mvcc-compact-dst").expect("temp dir");
    let opts = store::StoreOptions::default();
    let (log, mut sm) = store::open(dir.path(), &opts).expect("open");
    let mut entries = Vec::new();
    for i in 1..=100u64 {
        entries.push(set(i, &format!("k{}", i % 10), &format!("v{i}")));
    }
    entries.push(normal(101, Command::Delete { key: "k0".into() }));
    apply(&mut sm, entries).await;
    let before = range(&sm, prefix_at("k", 60)).expect("read at 60");
    assert_eq!(before.len(), 10);

    let r = run(
        &mut sm,
        vec![
            normal(102, Command::Compact { revision: 60 }),
            normal(103, Command::Compact { revision: 50 }),
            normal(104, Command::Compact { revision: 500 }),
        ],
    )
    .await;
    assert_eq!(r[0].compact_revision, Some(60));
    assert_eq!(r[0].error, None);
    assert_eq!(
        r[1].error,
        Some(ApplyError::Compacted {
            compact_revision: 60
        })
    );
    assert_eq!(
        r[2].error,
        Some(ApplyError::FutureRevision { current: 103 })
    );
    assert_eq!(
        range(&sm, prefix_at("k", 59)),
        Err(ApplyError::Compacted {
            compact_revision: 60
        })
    );
    // What is at or above the compaction point reads as before, whenever
    // the background removal runs.
    assert_eq!(range(&sm, prefix_at("k", 60)).expect("at 60"), before);
    // 100 versions: once what no read reaches is removed, the newest of
    // each key at or below 60, the 40 above it and the deletion remain.
    // The removal runs in the background and may already have finished, so
    // only its end state is checked: never fewer than what reads still reach.
    let versions = || sm.reader().history_versions().expect("count");
    assert!(
        versions() >= 51,
        "versions removed that reads at 60 still reach"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while versions() != 51 && std::time::Instant::now() < deadline {
        // Polling the background removal.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(versions(), 51, "versions left after compaction at 60");
    assert_eq!(range(&sm, prefix_at("k", 60)).expect("at 60"), before);
    assert_eq!(range(&sm, prefix_at("k", 95)).expect("at 95").len(), 10);
    assert_eq!(range(&sm, prefix_at("k", 101)).expect("at 101").len(), 9);

    // A snapshot carries history and compaction point to another member.
    let mut builder = sm.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    let (_dst_log, mut dst) = store::open(dst_dir.path(), &opts).expect("open dst");
    let copy = ferrium::store::SnapshotFile::open(snap.snapshot.path()).expect("open file");
    dst.install_snapshot(&snap.meta, copy)
        .await
        .expect("install");
    for rev in [60, 75, 100, 104] {
        assert_eq!(
            range(&dst, prefix_at("k", rev)),
            range(&sm, prefix_at("k", rev)),
            "installed copy at {rev}"
        );
    }
    assert_eq!(
        range(&dst, prefix_at("k", 59)),
        Err(ApplyError::Compacted {
            compact_revision: 60
        })
    );

    // And so does a reopen.
    drop((log, sm, builder));
    // The background removal may still hold the database for a moment after
    // its last step (the range compaction and flushes that give the space
    // back): the reopen waits for it to let go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (_log, sm) = loop {
        match store::open(dir.path(), &opts) {
            Ok(opened) => break opened,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                // Polling until the removal thread drops its handle.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    assert_eq!(range(&sm, prefix_at("k", 60)).expect("at 60"), before);
    assert_eq!(
        range(&sm, prefix_at("k", 10)),
        Err(ApplyError::Compacted {
            compact_revision: 60
        })
    );
}

fn tagged(index: u64, id: &str, time_ms: u64, command: Command) -> EntryOf<TypeConfig> {
    normal(
        index,
        Command::Tagged {
            id: id.as_bytes().to_vec(),
            time_ms,
            command: Box::new(command),
        },
    )
}

#[tokio::test]
async fn a_repeated_request_id_answers_the_first_result_without_applying() {
    let dir = TempDir::new("mvcc-ids").expect("temp dir");
    let opts = store::StoreOptions::default();
    let (log, mut sm) = store::open(dir.path(), &opts).expect("open");
    let t0 = 1_700_000_000_000u64;
    let incr = |index: u64, id: &str, expect: u64, time: u64| {
        tagged(
            index,
            id,
            time,
            Command::Txn(Box::new(cas("counter", expect, &index.to_string()))),
        )
    };
    // The first and a repeat in the same applied batch, and one later.
    let r = run(
        &mut sm,
        vec![
            set(1, "counter", "0"),
            incr(2, "a", 1, t0),
            incr(3, "a", 1, t0),
            incr(4, "b", 2, t0 + 10),
        ],
    )
    .await;
    assert!(!r[1].repeated && r[2].repeated && !r[3].repeated);
    assert_eq!(r[1].revision, 2);
    assert_eq!(r[2].revision, 2, "the repeat answers the first revision");
    assert_eq!(r[2].txn, r[1].txn);
    assert!(
        r[3].txn.as_ref().expect("b").succeeded,
        "b saw a applied once"
    );
    let r = run(&mut sm, vec![incr(5, "a", 1, t0 + 20)]).await;
    assert!(r[0].repeated, "a repeat in a later batch");
    assert_eq!(
        range(&sm, at("counter", 0)),
        Ok(owned(&[("counter", "4", 4)]))
    );

    // Kept across a reopen; forgotten once the window has passed.
    drop((log, sm));
    let (_log, mut sm) = store::open(dir.path(), &opts).expect("reopen");
    let r = run(&mut sm, vec![incr(6, "b", 2, t0 + 30)]).await;
    assert!(r[0].repeated);
    let later = t0 + store::ID_WINDOW_MS + 5_000;
    let r = run(
        &mut sm,
        vec![
            tagged(
                7,
                "c",
                later,
                Command::Set {
                    key: "x".into(),
                    value: "1".into(),
                },
            ),
            incr(8, "a", 1, later),
        ],
    )
    .await;
    assert!(!r[0].repeated);
    assert!(!r[1].repeated, "a is forgotten after the window");
    assert!(
        !r[1].txn.as_ref().expect("a").succeeded,
        "and applied: its compare fails now"
    );
    assert_eq!(sm.reader().request_ids(), 2, "c and the new a");
}

/// A random entry over a few keys, so that entries of one batch often read
/// what earlier ones wrote: sets, deletes, compactions and transactions
/// comparing, writing and reading keys, prefixes and older revisions.
fn random_entry(rng: &mut ferrium::rng::Rng, index: u64) -> EntryOf<TypeConfig> {
    let key = |rng: &mut ferrium::rng::Rng| format!("k{}", rng.below(5));
    let op = |rng: &mut ferrium::rng::Rng| match rng.below(5) {
        0 | 1 => TxnOp::Put(Put {
            key: key(rng).into_bytes(),
            value: format!("t{index}").into_bytes(),
            prev_kv: rng.chance(0.5),
            ..Put::default()
        }),
        2 => TxnOp::DeleteRange(DeleteRange {
            key: key(rng).into_bytes(),
            range_end: Vec::new(),
            prev_kv: true,
        }),
        3 => TxnOp::Range(RangeRequest::prefix(b"k".to_vec())),
        _ => TxnOp::Range(RangeRequest {
            revision: rng.range(1, index.max(2)),
            ..RangeRequest::key(key(rng).into_bytes())
        }),
    };
    let command = match rng.below(40) {
        0 => Command::Compact {
            revision: rng.range(1, index.max(2)) / 2,
        },
        1..=10 => Command::Set {
            key: key(rng),
            value: format!("s{index}"),
        },
        11..=20 => Command::Delete { key: key(rng) },
        _ => Command::Txn(Box::new(Txn {
            compare: vec![Compare {
                key: key(rng).into_bytes(),
                range_end: Vec::new(),
                op: CompareOp::Greater,
                target: CompareTarget::Version(rng.below(3)),
            }],
            success: (0..rng.range(1, 3)).map(|_| op(rng)).collect(),
            failure: (0..rng.range(1, 3)).map(|_| op(rng)).collect(),
        })),
    };
    normal(index, command)
}

/// Transactions share a write batch with the entries around them unless
/// they read what the batch changed: applying many entries in one call
/// answers exactly what applying them one at a time does, and leaves the
/// same data and history.
#[tokio::test]
async fn entries_applied_together_answer_as_applied_one_by_one() {
    let seed = ferrium::rng::clock_seed();
    let mut rng = ferrium::rng::Rng::new(seed);
    let entries: Vec<_> = (1..=600).map(|i| random_entry(&mut rng, i)).collect();
    let dir_a = TempDir::new("mvcc-batch-a").expect("temp dir");
    let dir_b = TempDir::new("mvcc-batch-b").expect("temp dir");
    let (_la, mut together) =
        store::open(dir_a.path(), &store::StoreOptions::default()).expect("open");
    let (_lb, mut alone) =
        store::open(dir_b.path(), &store::StoreOptions::default()).expect("open");
    let batched = run(&mut together, entries.clone()).await;
    let mut single = Vec::new();
    for e in entries {
        single.extend(run(&mut alone, vec![e]).await);
    }
    for (i, (a, b)) in batched.iter().zip(&single).enumerate() {
        assert_eq!(a, b, "entry {} (seed {seed})", i + 1);
    }
    assert_eq!(batched.len(), single.len());
    for revision in (1..=600).step_by(7).chain([0]) {
        assert_eq!(
            range(&together, prefix_at("k", revision)),
            range(&alone, prefix_at("k", revision)),
            "keys at revision {revision} (seed {seed})"
        );
    }
}
