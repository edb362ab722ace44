//! Leases in the state machine: grant, keys attached by puts, keep-alive,
//! expiry only once the entry's clock has passed it, revoke, and all of it
//! across a snapshot install and a reopen.

use crate::support::store::TempDir;
use crate::support::store::log_id;
use ferrium::raft::kv::{ApplyError, Put, RangeRequest, Txn, TxnOp};
use ferrium::raft::types::{Command, CommandResult, LeaseAnswer, LeaseOp, TypeConfig};
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

fn lease(index: u64, clock_ms: u64, op: LeaseOp) -> EntryOf<TypeConfig> {
    normal(index, Command::Lease { clock_ms, op })
}

fn put(index: u64, key: &str, lease: u64) -> EntryOf<TypeConfig> {
    normal(
        index,
        Command::Txn(Box::new(Txn::ops(vec![TxnOp::Put(Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Put::default()
        })]))),
    )
}

async fn run(sm: &mut StateMachine, entries: Vec<EntryOf<TypeConfig>>) -> Vec<CommandResult> {
    sm.apply_entries(entries).await.expect("apply")
}

/// The keys under `prefix` with their leases.
fn keys(sm: &StateMachine, prefix: &str) -> Vec<(String, u64)> {
    let (r, _) = sm
        .range(&RangeRequest::prefix(prefix.as_bytes()))
        .expect("storage")
        .expect("range");
    r.kvs
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
        .collect()
}

#[tokio::test]
async fn leases_hold_keys_until_revoked_or_expired_by_the_clock() {
    let dir = TempDir::new("lease-sm").expect("temp dir");
    let dst_dir = TempDir::new("lease-sm-dst").expect("temp dir");
    let opts = store::StoreOptions::default();
    let (log, mut sm) = store::open(dir.path(), &opts).expect("open");

    // Grants: a chosen id, one the state machine picks (the entry's index),
    // and a chosen id that exists already.
    let r = run(
        &mut sm,
        vec![
            lease(1, 1_000, LeaseOp::Grant { id: 100, ttl: 2 }),
            lease(2, 1_000, LeaseOp::Grant { id: 0, ttl: 5 }),
            lease(3, 1_000, LeaseOp::Grant { id: 100, ttl: 9 }),
        ],
    )
    .await;
    assert_eq!(r[0].lease, Some(LeaseAnswer { id: 100, ttl: 2 }));
    assert_eq!(r[1].lease, Some(LeaseAnswer { id: 2, ttl: 5 }));
    assert_eq!(r[2].error, Some(ApplyError::LeaseExists { lease: 100 }));
    assert_eq!(sm.reader().lease(100).map(|l| l.expires_at), Some(3_000));

    // Puts attach keys; a put naming no lease detaches; an unknown lease is
    // refused and writes nothing.
    let r = run(
        &mut sm,
        vec![
            put(4, "a/1", 100),
            put(5, "a/2", 100),
            put(6, "a/3", 2),
            put(7, "a/4", 100),
            put(8, "a/4", 0),
            put(9, "a/5", 77),
        ],
    )
    .await;
    assert_eq!(r[5].error, Some(ApplyError::LeaseNotFound { lease: 77 }));
    assert_eq!(
        keys(&sm, "a/"),
        vec![
            ("a/1".into(), 100),
            ("a/2".into(), 100),
            ("a/3".into(), 2),
            ("a/4".into(), 0)
        ]
    );

    // An expiry whose clock has not reached the lease's end changes
    // nothing; a keep-alive moves the end; a plain delete detaches.
    let r = run(
        &mut sm,
        vec![
            lease(10, 2_999, LeaseOp::Expire { ids: vec![100] }),
            lease(11, 2_500, LeaseOp::KeepAlive { id: 100 }),
            lease(12, 4_000, LeaseOp::Expire { ids: vec![100] }),
            normal(13, Command::Delete { key: "a/2".into() }),
            lease(14, 4_600, LeaseOp::KeepAlive { id: 55 }),
        ],
    )
    .await;
    assert!(r[0].expired.is_empty());
    assert_eq!(r[1].lease, Some(LeaseAnswer { id: 100, ttl: 2 }));
    assert!(r[2].expired.is_empty(), "renewed to 4500 at clock 2500");
    assert_eq!(r[4].error, Some(ApplyError::LeaseNotFound { lease: 55 }));
    assert_eq!(sm.reader().lease(100).map(|l| l.expires_at), Some(4_500));
    assert_eq!(sm.reader().applied_lease_clock(), 4_600);
    // Several keep-alives in one entry: each lease that exists is renewed
    // (a lease renewed to an earlier end keeps its later one).
    let r = run(
        &mut sm,
        vec![lease(
            15,
            2_000,
            LeaseOp::KeepAliveMany {
                ids: vec![2, 55, 100],
            },
        )],
    )
    .await;
    assert_eq!(
        r[0].renewed,
        vec![
            LeaseAnswer { id: 2, ttl: 5 },
            LeaseAnswer { id: 100, ttl: 2 }
        ]
    );
    assert_eq!(sm.reader().lease(2).map(|l| l.expires_at), Some(7_000));
    assert_eq!(sm.reader().lease(100).map(|l| l.expires_at), Some(4_500));

    // A snapshot carries the leases, their keys and the clock.
    let mut builder = sm.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    let (_dst_log, mut dst) = store::open(dst_dir.path(), &opts).expect("open dst");
    let copy = store::SnapshotFile::open(snap.snapshot.path()).expect("open file");
    dst.install_snapshot(&snap.meta, copy)
        .await
        .expect("install");
    assert_eq!(dst.reader().leases().all(), sm.reader().leases().all());
    assert_eq!(dst.reader().applied_lease_clock(), 4_600);
    assert!(dst.reader().lease_clock() >= 4_600);

    // Expiry past the end ends the lease: its remaining key goes at the
    // entry's revision, on both copies alike.
    for m in [&mut sm, &mut dst] {
        let r = run(
            m,
            vec![lease(16, 4_500, LeaseOp::Expire { ids: vec![100] })],
        )
        .await;
        assert_eq!(r[0].expired, vec![100]);
        assert_eq!(r[0].count, 1, "a/1 (a/2 was deleted, a/4 detached)");
        assert_eq!(m.reader().lease(100), None);
        assert_eq!(keys(m, "a/"), vec![("a/3".into(), 2), ("a/4".into(), 0)]);
        let (r, _) = m
            .range(&RangeRequest::key("a/1"))
            .expect("storage")
            .expect("range");
        assert!(r.kvs.is_empty());
        assert_eq!(
            m.reader().lease_keys(2).await.expect("keys"),
            vec![b"a/3".to_vec()]
        );
    }

    // A revoke ends a lease whatever the clock; revoking it again is refused.
    let r = run(
        &mut sm,
        vec![
            lease(17, 4_600, LeaseOp::Revoke { id: 2 }),
            lease(18, 4_600, LeaseOp::Revoke { id: 2 }),
        ],
    )
    .await;
    assert_eq!(r[0].lease, Some(LeaseAnswer { id: 2, ttl: 5 }));
    assert_eq!(r[0].count, 1);
    assert_eq!(r[1].error, Some(ApplyError::LeaseNotFound { lease: 2 }));
    assert_eq!(keys(&sm, "a/"), vec![("a/4".into(), 0)]);

    // A lease granted now survives a reopen, with the clock.
    run(
        &mut sm,
        vec![lease(19, 5_000, LeaseOp::Grant { id: 7, ttl: 30 })],
    )
    .await;
    drop((log, sm, builder));
    let (_log, sm) = store::open(dir.path(), &opts).expect("reopen");
    assert_eq!(sm.reader().lease(7).map(|l| l.expires_at), Some(35_000));
    assert_eq!(sm.reader().leases().len(), 1);
    assert_eq!(sm.reader().applied_lease_clock(), 5_000);
}
