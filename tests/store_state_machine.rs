//! The state machine's semantics: revisions and versions as etcd defines
//! them, deletes, atomic batches, and paged prefix listings.

mod store_support;

use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::store;
use ferrium::store::StoredValue;
use openraft::EntryPayload;
use openraft::alias::EntryOf;
use openraft::storage::RaftStateMachine;
use store_support::TempDir;
use store_support::log_id;

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
        expires_at_ms: None,
    })
}

#[tokio::test]
async fn revisions_versions_and_deletes() {
    let dir = TempDir::new("sm").expect("temp dir");
    let (_log, mut sm) = store::open(dir.path(), &store::StoreOptions::default()).expect("open");

    store_support::apply(&mut sm, vec![set(1, "k", "a")]).await;
    assert_eq!(sm.get("k").expect("get"), stored("a", 1, 1, 1));

    // Several entries in one applied batch see each other's effects.
    store_support::apply(
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

    store_support::apply(
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
    store_support::apply(&mut sm, vec![normal(1, Command::BatchSet { pairs })]).await;

    let keys =
        |page: &[(String, StoredValue)]| page.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();

    let (page, more) = sm.list("app/", None, 2).expect("list");
    assert_eq!(
        (keys(&page), more),
        (vec!["app/1".to_string(), "app/2".into()], true)
    );
    let (page, more) = sm.list("app/", Some("app/2"), 2).expect("list");
    assert_eq!((keys(&page), more), (vec!["app/3".to_string()], false));
    let (page, more) = sm.list("app", None, 10).expect("list");
    assert_eq!(keys(&page), vec!["app/1", "app/2", "app/3", "apple"]);
    assert!(!more);
    let (page, more) = sm.list("", Some("apple"), 10).expect("list");
    assert_eq!((keys(&page), more), (vec!["b".to_string()], false));
    let (page, more) = sm.list("app/", Some("a"), 1).expect("list");
    assert_eq!((keys(&page), more), (vec!["app/1".to_string()], true));
    let (page, more) = sm.list("zzz", None, 10).expect("list");
    assert!(page.is_empty() && !more);
    assert_eq!(page.len(), 0);
    let (page, _) = sm.list("b", None, 10).expect("list");
    assert_eq!(page[0].1.value, "v-b");
}
