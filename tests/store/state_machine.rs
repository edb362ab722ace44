//! The state machine's semantics: revisions and versions as etcd defines
//! them, deletes, atomic batches, and paged prefix listings.

use crate::support;
use crate::support::store::TempDir;
use crate::support::store::log_id;
use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::store;
use ferrium::store::StoredValue;
use openraft::EntryPayload;
use openraft::alias::EntryOf;
use openraft::storage::RaftStateMachine;

fn set(index: u64, key: &str, value: &str) -> EntryOf<TypeConfig> {
    normal(
        index,
        Command::Set {
            key: key.into(),
            value: value.into(),
        },
    )
}

fn normal(index: u64, command: Command) -> EntryOf<TypeConfig> {
    EntryOf::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(command),
    }
}

fn stored(value: &str, create: u64, modified: u64, version: u64) -> Option<StoredValue> {
    Some(StoredValue {
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        ..StoredValue::default()
    })
}

#[tokio::test]
async fn revisions_versions_and_deletes() {
    let dir = TempDir::new("sm").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");

    support::store::apply(&mut sm, vec![set(1, "k", "a")]).await;
    assert_eq!(sm.get("k").expect("get"), stored("a", 1, 1, 1));

    // Several entries in one applied batch see each other's effects.
    support::store::apply(
        &mut sm,
        vec![
            set(2, "k", "b"),
            set(3, "k", "c"),
            normal(4, Command::Delete { key: "k".into() }),
            set(5, "k", "d"),
            normal(
                6,
                Command::BatchSet {
                    pairs: vec![
                        ("x".into(), "1".into()),
                        ("x".into(), "2".into()),
                        ("y".into(), "3".into()),
                    ],
                },
            ),
        ],
    )
    .await;
    assert_eq!(
        sm.get("k").expect("get"),
        stored("d", 5, 5, 1),
        "re-created after delete"
    );
    assert_eq!(
        sm.get("x").expect("get"),
        stored("2", 6, 6, 2),
        "last pair of a batch wins"
    );
    assert_eq!(sm.get("y").expect("get"), stored("3", 6, 6, 1));
    assert_eq!(sm.last_applied(), Some(log_id(6)));

    support::store::apply(
        &mut sm,
        vec![normal(7, Command::Delete { key: "nope".into() })],
    )
    .await;
    assert_eq!(sm.get("nope").expect("get"), None);
    assert_eq!(
        sm.applied_state().await.expect("applied").0,
        Some(log_id(7))
    );

    // Everything survives a reopen.
    drop((_log, sm));
    let (_log, sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("reopen");
    assert_eq!(sm.get("k").expect("get"), stored("d", 5, 5, 1));
    assert_eq!(sm.last_applied(), Some(log_id(7)));
}

#[tokio::test]
async fn list_pages_through_a_prefix() {
    let dir = TempDir::new("sm-list").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");
    let pairs = ["a", "app/1", "app/2", "app/3", "apple", "b"]
        .iter()
        .map(|k| (k.to_string(), format!("v-{k}")))
        .collect();
    support::store::apply(&mut sm, vec![normal(1, Command::BatchSet { pairs })]).await;

    let keys = |page: &[(Vec<u8>, StoredValue)]| {
        page.iter()
            .map(|(k, _)| String::from_utf8(k.clone()).expect("text key"))
            .collect::<Vec<_>>()
    };

    let (page, more) = sm.list(b"app/", None, 2).expect("list");
    assert_eq!(
        (keys(&page), more),
        (vec!["app/1".to_string(), "app/2".into()], true)
    );
    let (page, more) = sm.list(b"app/", Some(b"app/2"), 2).expect("list");
    assert_eq!((keys(&page), more), (vec!["app/3".to_string()], false));
    let (page, more) = sm.list(b"app", None, 10).expect("list");
    assert_eq!(keys(&page), vec!["app/1", "app/2", "app/3", "apple"]);
    assert!(!more);
    let (page, more) = sm.list(b"", Some(b"apple"), 10).expect("list");
    assert_eq!((keys(&page), more), (vec!["b".to_string()], false));
    let (page, more) = sm.list(b"app/", Some(b"a"), 1).expect("list");
    assert_eq!((keys(&page), more), (vec!["app/1".to_string()], true));
    let (page, more) = sm.list(b"zzz", None, 10).expect("list");
    assert!(page.is_empty() && !more);
    assert_eq!(page.len(), 0);
    let (page, _) = sm.list(b"b", None, 10).expect("list");
    assert_eq!(page[0].1.value, b"v-b");
}
