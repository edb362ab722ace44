//! A data directory written by Ferrium 0.1.0 (before history was kept) opens
//! and keeps working: its keys read as before, its current revision reads
//! from history, older revisions are refused as compacted, and new writes
//! build history from there. The directory is `tests/golden/upgrade/`,
//! made by ferrium-server 0.1.0 (commit 3bf5fbe): a single node that
//! applied `a` = v1, v2, v3 (revisions 2-4), a batch of `user/1`, `user/2`
//! and `gone` (5), the deletion of `gone` (6) and `ü` = `✓` (7).

use crate::support::store::TempDir;
use crate::support::store::log_id;
use ferrium::raft::kv::{ApplyError, RangeRequest};
use ferrium::raft::types::{Command, TypeConfig};
use ferrium::store;
use openraft::EntryPayload;
use openraft::alias::EntryOf;
use openraft::storage::RaftLogStorage;

fn value_at(
    sm: &store::StateMachine,
    key: &str,
    revision: u64,
) -> Result<Option<String>, ApplyError> {
    let req = RangeRequest {
        revision,
        ..RangeRequest::key(key.as_bytes())
    };
    let (r, _) = sm.range(&req).expect("storage")?;
    Ok(r.kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).expect("text")))
}

#[tokio::test]
async fn a_data_directory_of_release_0_1_opens_and_keeps_working() {
    let dir = TempDir::new("upgrade").expect("temp dir");
    let archive = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/upgrade/data-0.1.0.tar.gz"
    );
    let status = std::process::Command::new("tar")
        .args(["-xzf", archive, "-C"])
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xzf {archive}");
    let data = dir.path().join("data");
    let opts = store::StoreOptions::default();

    let (mut log, mut sm) = store::open(&data, &opts).expect("open a 0.1.0 directory");
    assert_eq!(sm.last_applied().map(|l| l.index()), Some(7));
    let a = sm.get("a").expect("get").expect("a exists");
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"v3"[..], 2, 4, 3)
    );
    assert_eq!(sm.get("gone").expect("get"), None);
    assert_eq!(sm.get("ü").expect("get").map(|v| v.value), Some("✓".into()));
    // The log is intact too.
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id.map(|l| l.index), Some(7));

    // History starts at the revision the directory was at.
    assert_eq!(sm.reader().compact_revision(), 7);
    assert_eq!(value_at(&sm, "a", 7), Ok(Some("v3".into())));
    assert_eq!(value_at(&sm, "user/2", 7), Ok(Some("y".into())));
    assert_eq!(
        value_at(&sm, "a", 6),
        Err(ApplyError::Compacted {
            compact_revision: 7
        })
    );

    // New writes add history on top.
    let entry = |index: u64, command: Command| EntryOf::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(command),
    };
    sm.apply_entries(vec![
        entry(
            8,
            Command::Set {
                key: "a".into(),
                value: "v4".into(),
            },
        ),
        entry(
            9,
            Command::Delete {
                key: "user/1".into(),
            },
        ),
    ])
    .await
    .expect("apply");
    assert_eq!(value_at(&sm, "a", 7), Ok(Some("v3".into())));
    assert_eq!(value_at(&sm, "a", 8), Ok(Some("v4".into())));
    assert_eq!(value_at(&sm, "user/1", 8), Ok(Some("x".into())));
    assert_eq!(value_at(&sm, "user/1", 9), Ok(None));
    let a = sm.get("a").expect("get").expect("a");
    assert_eq!(
        (a.create_revision, a.version),
        (2, 4),
        "etcd's counting goes on"
    );

    // The upgrade happens once: reopening keeps what was written since.
    drop((log, sm));
    let (_log, sm) = store::open(&data, &opts).expect("reopen");
    assert_eq!(sm.reader().compact_revision(), 7);
    assert_eq!(value_at(&sm, "a", 7), Ok(Some("v3".into())));
    assert_eq!(value_at(&sm, "user/1", 9), Ok(None));
}
