//! openraft's storage conformance suite against the RocksDB store.

use crate::support;
use crate::support::store::TempDir;
use ferrium::raft::types::TypeConfig;
use ferrium::store;
use ferrium::store::LogStore;
use ferrium::store::StateMachine;
use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new("suite")
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let (log, sm) = store::open(dir.path(), &store::StoreOptions::default())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("storage suite");
}

/// With `sync_writes = false` appends still complete, without any fsync.
#[tokio::test]
async fn unsynced_store_acknowledges_without_syncing() {
    use openraft::EntryPayload;
    use openraft::alias::EntryOf;
    use openraft::storage::IOFlushed;
    use openraft::storage::RaftLogStorage;

    let dir = TempDir::new("nosync").expect("temp dir");
    let opts = store::StoreOptions {
        sync_writes: false,
        ..store::StoreOptions::default()
    };
    let (mut log, _sm) = store::open(dir.path(), &opts).expect("open");
    for index in 1..=10 {
        let entry = EntryOf::<TypeConfig> {
            log_id: support::store::log_id(index),
            payload: EntryPayload::Blank,
        };
        let (tx, rx) = TypeConfig::oneshot();
        log.append([entry], IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("callback").expect("acknowledged");
    }
    assert_eq!(log.wal_syncs(), 0);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(support::store::log_id(10)));
}
