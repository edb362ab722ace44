//! The Rust `etcd-client` crate, unchanged, against three Ferrium nodes
//! whose leader is killed (kill -9) in the middle: key-value calls and
//! transactions retried by the client succeed, a watch resumed from the
//! revision after its last event misses nothing and repeats nothing, a
//! lease kept alive through the failure survives it, and locks and
//! elections keep working.

use crate::support::cluster::{Bootstrap, Cluster};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LockOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Calls `f` until it succeeds (as an etcd client's retry loop does),
/// for up to 30 s.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), f()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
            }
            Err(_) if Instant::now() < deadline => eprintln!("{what}: no answer in 5 s; retrying"),
            Ok(Err(e)) => panic!("{what} kept failing for 30 s: {e}"),
            Err(_) => panic!("{what} kept failing for 30 s: no answer"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn etcd_client_crate_works_through_a_leader_kill() {
    let mut c = Cluster::start("etcd-client", 3, Bootstrap::Static);
    let leader = c.wait_leader(Duration::from_secs(30));
    let endpoints: Vec<String> = c.ids().iter().map(|id| c.node(*id).grpc_addr()).collect();
    let survivors: Vec<String> = c
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| c.node(id).grpc_addr())
        .collect();
    let rt = runtime();
    let leader_ep = c.node(leader).grpc_addr();

    // Before the failure: a watch on the leader, a lease kept alive, a lock.
    let (mut kv, mut watch, first_rev, lease, lock_key) = rt.block_on(async {
        let mut kv = Client::connect(&endpoints, None).await.expect("connect");
        let put = kv.put("app/counter", "0", None).await.expect("put");
        let first_rev = put.header().unwrap().revision();
        let mut on_leader = Client::connect([&leader_ep], None).await.expect("connect");
        let watch = on_leader
            .watch(
                "app/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .expect("watch");
        let lease = kv.lease_grant(3, None).await.expect("grant").id();
        kv.put(
            "app/owned",
            "by-lease",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put with lease");
        let lock = kv
            .lock("app-lock", Some(LockOptions::new().with_lease(lease)))
            .await
            .expect("lock");
        (kv, watch, first_rev, lease, lock.key().to_vec())
    });

    // Keep-alives on a survivor, every 500 ms, through the failure. A stream
    // that fails (no leader for a moment) is opened again, as etcd's Go
    // client does.
    let survivor = survivors[0].clone();
    let keeping = rt.spawn(async move {
        let mut client = Client::connect([&survivor], None).await.expect("connect");
        let mut renewed = 0;
        let mut reopened = 0;
        let until = Instant::now() + Duration::from_secs(12);
        let mut stream = None;
        while Instant::now() < until {
            if stream.is_none() {
                match client.lease_keep_alive(lease).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => eprintln!("keep-alive stream: {e}; opening it again"),
                }
            }
            if let Some((keeper, answers)) = stream.as_mut() {
                let answer = match keeper.keep_alive().await {
                    Ok(()) => answers.message().await,
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(Some(a)) => {
                        assert!(a.ttl() > 0, "the lease ended while kept alive");
                        renewed += 1;
                    }
                    other => {
                        eprintln!("keep-alive: {other:?}; opening the stream again");
                        stream = None;
                        reopened += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (renewed, reopened)
    });

    c.kill(leader);

    rt.block_on(async {
        // Compare-and-swap increments, retried by the client until they land.
        for i in 1..=20u32 {
            let prev = (i - 1).to_string();
            let next = i.to_string();
            let r = retrying("txn", || {
                let t = Txn::new()
                    .when([Compare::value(
                        "app/counter",
                        CompareOp::Equal,
                        prev.clone(),
                    )])
                    .and_then([TxnOp::put("app/counter", next.clone(), None)]);
                let mut kv = kv.clone();
                async move { kv.txn(t).await }
            })
            .await;
            if !r.succeeded() {
                // A retry of a transaction that had landed: the value moved on.
                let now = kv.get("app/counter", None).await.expect("get");
                assert_eq!(now.kvs()[0].value_str().unwrap(), next, "a lost increment");
            }
        }
        let got = retrying("get", || {
            let mut kv = kv.clone();
            async move { kv.get("app/", Some(GetOptions::new().with_prefix())).await }
        })
        .await;
        let counter = got
            .kvs()
            .iter()
            .find(|kv| kv.key() == b"app/counter")
            .unwrap();
        assert_eq!(counter.value_str().unwrap(), "20");

        // Calls after the failure go to the survivors (etcd's Go client
        // drops an endpoint it cannot reach; this crate keeps trying it).
        let mut kv = Client::connect(&survivors, None).await.expect("connect");

        // The watch on the killed leader ends; resumed on a survivor from
        // the revision after its last event, it sees every change once.
        let mut seen: Vec<(String, i64)> = Vec::new();
        let mut last = first_rev;
        while let Ok(Ok(Some(r))) =
            tokio::time::timeout(Duration::from_secs(2), watch.message()).await
        {
            for e in r.events() {
                let kv = e.kv().unwrap();
                last = kv.mod_revision();
                seen.push((kv.value_str().unwrap().to_string(), last));
            }
        }
        let mut resumed = Client::connect(&survivors, None).await.expect("connect");
        let mut watch = resumed
            .watch(
                "app/counter",
                Some(WatchOptions::new().with_start_revision(last + 1)),
            )
            .await
            .expect("watch again");
        while seen.last().is_none_or(|(v, _)| v != "20") {
            let r = tokio::time::timeout(Duration::from_secs(10), watch.message())
                .await
                .expect("the resumed watch delivers")
                .expect("watch")
                .expect("open");
            for e in r.events() {
                assert_eq!(e.event_type(), EventType::Put);
                let kv = e.kv().unwrap();
                seen.push((kv.value_str().unwrap().to_string(), kv.mod_revision()));
            }
        }
        let values: Vec<String> = seen
            .iter()
            .filter(|(v, _)| v.parse::<u32>().is_ok())
            .map(|(v, _)| v.clone())
            .collect();
        let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
        assert_eq!(values, expected, "every increment once, in order");

        // The lease lived through the failure: its key and its lock remain.
        let (renewed, reopened) = keeping.await.expect("keep-alives");
        eprintln!("{renewed} keep-alives answered, the stream opened again {reopened} times");
        assert!(renewed >= 10, "{renewed} keep-alives answered");
        let owned = kv.get("app/owned", None).await.expect("get");
        assert_eq!(owned.kvs().len(), 1, "the leased key survived");
        let holder = kv.get(lock_key.clone(), None).await.expect("get");
        assert_eq!(holder.kvs().len(), 1, "the lock is still held");
        let ttl = kv.lease_time_to_live(lease, None).await.expect("ttl");
        assert!(ttl.ttl() > 0);

        // Unlock; an election on the survivors: campaign, leader, proclaim,
        // observe, resign.
        kv.unlock(lock_key).await.expect("unlock");
        let lease2 = kv.lease_grant(10, None).await.expect("grant").id();
        let won = kv
            .campaign("app-election", "first", lease2)
            .await
            .expect("campaign");
        let leader_key = won.leader().expect("a leader key").clone();
        let now = kv.leader("app-election").await.expect("leader");
        assert_eq!(now.kv().unwrap().value_str().unwrap(), "first");
        let mut observe = kv.observe("app-election").await.expect("observe");
        let o = observe.message().await.expect("observe").expect("open");
        assert_eq!(o.kv().unwrap().value_str().unwrap(), "first");
        kv.proclaim(
            "second",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader_key.clone())),
        )
        .await
        .expect("proclaim");
        let o = observe.message().await.expect("observe").expect("open");
        assert_eq!(o.kv().unwrap().value_str().unwrap(), "second");
        kv.resign(Some(
            etcd_client::ResignOptions::new().with_leader(leader_key),
        ))
        .await
        .expect("resign");
        let none = kv.leader("app-election").await;
        assert!(
            none.as_ref()
                .is_err_and(|e| e.to_string().contains("election: no leader")),
            "{none:?}"
        );
        kv.lease_revoke(lease).await.expect("revoke");
        let gone = kv.get("app/owned", None).await.expect("get");
        assert!(gone.kvs().is_empty(), "revoking the lease deletes its key");
        let missing = kv.lease_revoke(lease).await;
        assert!(
            missing.as_ref().is_err_and(|e| e
                .to_string()
                .contains("etcdserver: requested lease not found")),
            "{missing:?}"
        );
    });
}
