//! The gRPC API against real `ferrium-server` processes, through tonic's
//! generated clients: every RPC on the leader and on a follower, the error
//! codes, atomic batches, paging while writes continue, no quorum, health,
//! and all of it both on the gRPC port and on the HTTP port (HTTP/2 hand-off).

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, eventually};
use ferrium::api::proto::health::HealthCheckRequest;
use ferrium::api::proto::health::health_check_response::ServingStatus;
use ferrium::api::proto::health::health_client::HealthClient;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{
    BatchSetRequest, DeleteRequest, ExistsRequest, GetRequest, KeyValue, ListKeysRequest,
    SetRequest,
};
use ferrium::api::proto::management::management_service_client::ManagementServiceClient;
use ferrium::api::proto::management::{
    AddLearnerRequest, ChangeMembershipRequest, HealthRequest, InitializeRequest, LeaderRequest,
    MetricsRequest,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Retries a call answered UNAVAILABLE (no leader for a moment: an election
/// on a loaded machine), as a client would; anything else is returned.
macro_rules! retry {
    ($call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match $call.await {
                Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                    // A client's pause before it asks again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}

/// Which listener a client connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// `node.grpc_addr`.
    Grpc,
    /// `node.http_addr`: HTTP/2 handed over to the gRPC service.
    Http,
}

const PORTS: [Port; 2] = [Port::Grpc, Port::Http];

fn addr(c: &Cluster, id: u64, port: Port) -> String {
    match port {
        Port::Grpc => c.node(id).grpc_addr(),
        Port::Http => c.addr(id),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

async fn kv(addr: &str) -> KvServiceClient<Channel> {
    KvServiceClient::new(channel(addr).await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

async fn mgmt(addr: &str) -> ManagementServiceClient<Channel> {
    ManagementServiceClient::new(channel(addr).await)
}

async fn health(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut h = HealthClient::new(channel(addr).await);
    let mut req = Request::new(HealthCheckRequest {
        service: service.into(),
    });
    req.set_timeout(Duration::from_secs(1));
    let r = h.check(req).await?.into_inner();
    Ok(ServingStatus::try_from(r.status).expect("known status"))
}

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str, consistency: &str) -> GetRequest {
    GetRequest {
        key: key.into(),
        consistency: consistency.into(),
    }
}

fn list(prefix: &str, limit: u32, start_after: &str, consistency: &str) -> ListKeysRequest {
    ListKeysRequest {
        prefix: prefix.into(),
        limit,
        start_after: start_after.into(),
        consistency: consistency.into(),
    }
}

fn batch(pairs: impl IntoIterator<Item = (String, String)>) -> BatchSetRequest {
    BatchSetRequest {
        pairs: pairs
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn assert_no_panics(c: &Cluster) {
    for id in c.ids() {
        let log = std::fs::read_to_string(&c.node(id).log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "node {id} panicked:\n{}",
            c.log_tail(id)
        );
    }
}

/// Set, Get (three consistencies), Exists, BatchSet, ListKeys, Delete.
async fn kv_round_trip(addr: &str, p: &str) {
    let mut c = kv(addr).await;
    let a = format!("{p}/a");
    let s = retry!(c.set(set(&a, "1"))).unwrap().into_inner();
    assert!(s.success && s.revision > 0, "{s:?}");
    for consistency in ["", "linearizable", "lease", "stale"] {
        let g = retry!(c.get(get(&a, consistency))).unwrap().into_inner();
        assert!(g.found, "{consistency}: {g:?}");
        assert_eq!((g.key.as_str(), g.value.as_str()), (a.as_str(), "1"));
        assert_eq!(
            (g.create_revision, g.mod_revision, g.version),
            (s.revision, s.revision, 1)
        );
    }
    let missing = retry!(c.get(get(&format!("{p}/none"), "")))
        .unwrap()
        .into_inner();
    assert!(!missing.found && missing.value.is_empty());
    let e = |key: String| ExistsRequest {
        key,
        consistency: String::new(),
    };
    assert!(retry!(c.exists(e(a.clone()))).unwrap().into_inner().exists);
    assert!(
        !retry!(c.exists(e(format!("{p}/none"))))
            .unwrap()
            .into_inner()
            .exists
    );

    let pairs = (1..=3).map(|i| (format!("{p}/b{i}"), format!("v{i}")));
    let b = retry!(c.batch_set(batch(pairs.clone())))
        .unwrap()
        .into_inner();
    assert!(
        b.success && b.count == 3 && b.revision > s.revision,
        "{b:?}"
    );

    let prefix = format!("{p}/");
    let all = retry!(c.list_keys(list(&prefix, 0, "", "")))
        .unwrap()
        .into_inner();
    let want: Vec<String> = ["a", "b1", "b2", "b3"]
        .iter()
        .map(|k| format!("{p}/{k}"))
        .collect();
    assert_eq!(all.keys, want);
    assert!(!all.has_more && all.next_start_after.is_empty());
    let page1 = retry!(c.list_keys(list(&prefix, 2, "", "stale")))
        .unwrap()
        .into_inner();
    assert_eq!(page1.keys, want[..2]);
    assert!(page1.has_more);
    assert_eq!(page1.next_start_after, want[1]);
    let page2 = retry!(c.list_keys(list(&prefix, 2, &page1.next_start_after, "lease")))
        .unwrap()
        .into_inner();
    assert_eq!(page2.keys, want[2..]);
    assert!(!page2.has_more);

    let d = retry!(c.delete(DeleteRequest { key: a.clone() }))
        .unwrap()
        .into_inner();
    assert!(d.success && d.existed && d.revision > b.revision, "{d:?}");
    let d2 = retry!(c.delete(DeleteRequest { key: a.clone() }))
        .unwrap()
        .into_inner();
    assert!(d2.success && !d2.existed, "{d2:?}");
    assert!(!retry!(c.get(get(&a, ""))).unwrap().into_inner().found);
}

/// GetMetrics, HealthCheck, GetLeader and grpc.health.v1 on a healthy node.
async fn management_reads(c: &Cluster, id: u64, leader: u64, port: Port) {
    let a = addr(c, id, port);
    let mut m = mgmt(&a).await;
    let metrics = m.get_metrics(MetricsRequest {}).await.unwrap().into_inner();
    assert_eq!(metrics.node_id, id);
    assert_eq!(metrics.current_leader, Some(leader));
    assert_eq!(
        metrics.state,
        if id == leader { "Leader" } else { "Follower" }
    );
    assert!(
        metrics.term > 0 && metrics.last_log_index > 0,
        "{metrics:?}"
    );
    assert!(
        metrics.last_applied_index > 0 && metrics.committed_index > 0,
        "{metrics:?}"
    );
    let membership = metrics.membership.clone().expect("membership");
    assert_eq!(membership.voters, vec![1, 2, 3]);
    assert_eq!(membership.nodes.len(), 3);
    assert_eq!(membership.nodes[&id].grpc_addr, c.node(id).grpc_addr());
    if id == leader {
        let followers: BTreeSet<u64> = metrics.replication.keys().copied().collect();
        assert!(followers.len() >= 2, "{:?}", metrics.replication);
        // A follower whose replication stream was just rebuilt reports no
        // match for a moment; a quorum has matched something.
        let matched = metrics
            .replication
            .values()
            .filter(|r| r.index > 0 && r.term > 0);
        assert!(matched.count() >= 2, "{:?}", metrics.replication);
        assert!(
            metrics
                .replication
                .values()
                .all(|r| r.index <= metrics.last_log_index),
            "{metrics:?}"
        );
    } else {
        assert!(metrics.replication.is_empty());
    }

    let h = m.health_check(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (h.status.as_str(), h.service.as_str()),
        ("healthy", "ferrium")
    );
    assert!(!h.version.is_empty());

    let l = m.get_leader(LeaderRequest {}).await.unwrap().into_inner();
    assert_eq!(l.leader_id, Some(leader));
    let info = l.leader_info.expect("leader addresses");
    assert_eq!(info.grpc_addr, c.node(leader).grpc_addr());
    assert_eq!(info.api_addr, c.addr(leader));

    for service in [
        "",
        "ferrium.kv.KvService",
        "ferrium.management.ManagementService",
    ] {
        assert_eq!(health(&a, service).await.unwrap(), ServingStatus::Serving);
    }
    assert_eq!(code(health(&a, "no.such.Service").await), Code::NotFound);
}

/// Each documented error code, on a healthy cluster.
async fn error_paths(addr: &str) {
    let mut c = kv(addr).await;
    let mut m = mgmt(addr).await;
    assert_eq!(code(c.set(set("", "v")).await), Code::InvalidArgument);
    assert_eq!(code(c.get(get("", "")).await), Code::InvalidArgument);
    assert_eq!(
        code(c.delete(DeleteRequest { key: "".into() }).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.get(get("k", "eventual")).await),
        Code::InvalidArgument
    );
    assert_eq!(code(c.batch_set(batch([])).await), Code::InvalidArgument);
    let empty_in_batch = batch([
        ("ok".to_string(), "v".to_string()),
        (String::new(), "v".into()),
    ]);
    assert_eq!(
        code(c.batch_set(empty_in_batch).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.list_keys(list("", 20_000, "", "")).await),
        Code::InvalidArgument
    );
    // Over network.max_value_size (1 MiB), under max_message_size (4 MiB).
    let big = "x".repeat(1536 * 1024);
    assert_eq!(code(c.set(set("big", &big)).await), Code::ResourceExhausted);
    // Over network.max_message_size: tonic refuses to decode it.
    let huge = "x".repeat(5 * 1024 * 1024);
    assert_eq!(
        code(c.set(set("huge", &huge)).await),
        Code::ResourceExhausted
    );
    // The key survives neither.
    assert!(!retry!(c.get(get("big", ""))).unwrap().into_inner().found);

    let init = m.initialize(InitializeRequest::default()).await;
    assert_eq!(code(init), Code::AlreadyExists);
    let unknown = ChangeMembershipRequest {
        member_ids: vec![1, 2, 3, 99],
    };
    assert_eq!(
        code(m.change_membership(unknown).await),
        Code::FailedPrecondition
    );
    let none = ChangeMembershipRequest { member_ids: vec![] };
    assert_eq!(code(m.change_membership(none).await), Code::InvalidArgument);
}

#[test]
fn every_rpc_on_leader_and_follower_through_both_ports() {
    let mut c = Cluster::start_in_process("grpc-rpcs", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let rt = runtime();
    for port in PORTS {
        for (role, id) in [("leader", leader), ("follower", follower)] {
            let a = addr(&c, id, port);
            let started = Instant::now();
            rt.block_on(kv_round_trip(&a, &format!("{port:?}-{role}")));
            rt.block_on(management_reads(&c, id, leader, port));
            rt.block_on(error_paths(&a));
            eprintln!(
                "{port:?} port, {role} (node {id}): every RPC in {:?}",
                started.elapsed()
            );
        }
    }

    // AddLearner through a follower (forwarded), ChangeMembership through
    // the leader's HTTP port, and back.
    let new = c.add_node();
    let learner = AddLearnerRequest {
        node_id: new,
        rpc_addr: c.addr(new),
        api_addr: c.addr(new),
        grpc_addr: c.node(new).grpc_addr(),
    };
    let follower_grpc = addr(&c, follower, Port::Grpc);
    let leader_http = addr(&c, leader, Port::Http);
    rt.block_on(async {
        let r = mgmt(&follower_grpc)
            .await
            .add_learner(learner)
            .await
            .unwrap()
            .into_inner();
        assert!(r.success, "{r:?}");
        let mut m = mgmt(&leader_http).await;
        let grow = ChangeMembershipRequest {
            member_ids: vec![1, 2, 3, new],
        };
        assert!(
            m.change_membership(grow)
                .await
                .unwrap()
                .into_inner()
                .success
        );
        let voters = m.get_metrics(MetricsRequest {}).await.unwrap().into_inner();
        assert_eq!(voters.membership.unwrap().voters, vec![1, 2, 3, new]);
        let shrink = ChangeMembershipRequest {
            member_ids: vec![1, 2, 3],
        };
        assert!(
            m.change_membership(shrink)
                .await
                .unwrap()
                .into_inner()
                .success
        );
        // The new node serves what was written before it joined.
        let mut k = kv(&addr(&c, new, Port::Grpc)).await;
        let g = retry!(k.get(get("Grpc-leader/b1", "stale")))
            .unwrap()
            .into_inner();
        assert_eq!(g.value, "v1");
    });
    assert_no_panics(&c);
}

#[test]
fn initialize_through_grpc_then_again() {
    let c = Cluster::start_in_process("grpc-init", 1, Bootstrap::Manual, "");
    let rt = runtime();
    rt.block_on(async {
        let mut m = mgmt(&addr(&c, 1, Port::Grpc)).await;
        let r = m
            .initialize(InitializeRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(r.success);
    });
    c.wait_leader(Duration::from_secs(30));
    rt.block_on(async {
        // The second attempt, on the HTTP port this time.
        let mut m = mgmt(&addr(&c, 1, Port::Http)).await;
        let again = m.initialize(InitializeRequest::default()).await;
        assert_eq!(code(again), Code::AlreadyExists);
        let mut k = kv(&addr(&c, 1, Port::Grpc)).await;
        assert!(
            retry!(k.set(set("after-init", "1")))
                .unwrap()
                .into_inner()
                .success
        );
    });
    assert_no_panics(&c);
}

/// Writes five batches of 1,000 keys while listers on other members count
/// the keys under the prefix: every count is a whole number of batches.
async fn batch_is_atomic(writer: String, listers: Vec<(String, &'static str)>, prefix: String) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (a, consistency) in listers {
        let stop = stop.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = kv(&a).await;
            let mut seen = BTreeSet::new();
            let mut lists = 0;
            while !stop.load(Ordering::SeqCst) || lists == 0 {
                let r = retry!(c.list_keys(list(&prefix, 10_000, "", consistency))).unwrap();
                let n = r.into_inner().keys.len();
                assert_eq!(
                    n % 1000,
                    0,
                    "{a} ({consistency}) saw {n} keys: a partial batch"
                );
                seen.insert(n);
                lists += 1;
            }
            (a, consistency, lists, seen)
        }));
    }
    let mut c = kv(&writer).await;
    for round in 0..5 {
        let pairs = (0..1000).map(|i| (format!("{prefix}{round}/{i:04}"), format!("v{i}")));
        let r = retry!(c.batch_set(batch(pairs.clone())))
            .unwrap()
            .into_inner();
        assert_eq!(r.count, 1000);
        // Paced, so that the listers run between batches and see the
        // counts in between, not only the first and the last.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let (a, consistency, lists, seen) = t.await.unwrap();
        eprintln!("batch atomicity: {a} ({consistency}) listed {lists} times, counts {seen:?}");
    }
    let all = retry!(c.list_keys(list(&prefix, 10_000, "", "")))
        .unwrap()
        .into_inner();
    assert_eq!(all.keys.len(), 5000);
}

/// Loads 10,000 keys under `prefix`, then pages through them 250 at a time
/// while another client adds, overwrites and deletes keys under the same
/// prefix: every original key appears exactly once, in order.
async fn paging_while_writing(loader: String, pager: String, consistency: &str, prefix: String) {
    let mut c = kv(&loader).await;
    for b in 0..10 {
        let pairs = (b * 1000..(b + 1) * 1000).map(|i| (format!("{prefix}{i:05}"), "v".into()));
        retry!(c.batch_set(batch(pairs.clone()))).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let prefix = prefix.clone();
        let loader = loader.clone();
        tokio::spawn(async move {
            let mut c = kv(&loader).await;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let i = (n * 7919) % 10_000;
                // A new key between two originals, an overwrite, a delete.
                retry!(c.set(set(&format!("{prefix}{i:05}-new"), "n"))).unwrap();
                retry!(c.set(set(&format!("{prefix}{i:05}"), &format!("w{n}")))).unwrap();
                if n % 2 == 0 {
                    let key = format!("{prefix}{:05}-new", (n * 31) % 10_000);
                    retry!(c.delete(DeleteRequest { key: key.clone() })).unwrap();
                }
                n += 1;
            }
            n
        })
    };
    let mut p = kv(&pager).await;
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = retry!(p.list_keys(list(&prefix, 250, &cursor, consistency)))
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(r.keys);
        if !r.has_more {
            assert!(r.next_start_after.is_empty());
            break;
        }
        assert_eq!(Some(&r.next_start_after), seen.last());
        cursor = r.next_start_after;
        // Give the writer room between pages.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "a key repeated or out of order"
    );
    let originals: BTreeSet<String> = (0..10_000).map(|i| format!("{prefix}{i:05}")).collect();
    let listed: BTreeSet<String> = seen
        .iter()
        .filter(|k| !k.ends_with("-new"))
        .cloned()
        .collect();
    let missed: Vec<&String> = originals.difference(&listed).take(5).collect();
    assert!(missed.is_empty(), "keys missed: {missed:?}");
    assert_eq!(listed.len(), 10_000);
    eprintln!(
        "paging on {pager} ({consistency}): {} keys in {pages} pages in {:?}, {writes} write rounds meanwhile",
        seen.len(),
        started.elapsed()
    );
    assert!(writes > 0, "the writer never ran");
}

#[test]
fn atomic_batches_and_paging_under_writes_through_both_ports() {
    let c = Cluster::start_in_process("grpc-batch", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    let followers: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let rt = runtime();
    for port in PORTS {
        let listers = vec![
            (addr(&c, leader, port), "linearizable"),
            (addr(&c, followers[0], port), "stale"),
            (addr(&c, followers[1], port), "linearizable"),
        ];
        let started = Instant::now();
        rt.block_on(batch_is_atomic(
            addr(&c, followers[0], port),
            listers,
            format!("batch-{port:?}/"),
        ));
        eprintln!("{port:?} port: atomic batches in {:?}", started.elapsed());
    }
    rt.block_on(paging_while_writing(
        addr(&c, leader, Port::Grpc),
        addr(&c, followers[0], Port::Grpc),
        "linearizable",
        "page-grpc/".into(),
    ));
    rt.block_on(paging_while_writing(
        addr(&c, followers[1], Port::Http),
        addr(&c, leader, Port::Http),
        "",
        "page-http/".into(),
    ));
    assert_no_panics(&c);
}

#[test]
fn no_quorum_deadlines_and_health() {
    let mut c = Cluster::start_with(
        "grpc-quorum",
        3,
        Bootstrap::Static,
        "[network]\nrequest_timeout = \"2s\"\n",
    );
    let leader = c.wait_leader(Duration::from_secs(30));
    let rt = runtime();
    for id in c.ids() {
        for port in PORTS {
            let a = addr(&c, id, port);
            let serving = eventually(Duration::from_secs(30), || {
                let s = rt.block_on(health(&a, "")).ok()?;
                (s == ServingStatus::Serving).then_some(())
            });
            assert!(serving.is_some(), "node {id} ({port:?} port) never SERVING");
        }
    }
    let lonely = c.ids().into_iter().find(|i| *i != leader).unwrap();
    rt.block_on(async {
        let mut k = kv(&addr(&c, lonely, Port::Grpc)).await;
        retry!(k.set(set("before", "1"))).unwrap();
        // Applied here before the others go.
        assert!(retry!(k.get(get("before", ""))).unwrap().into_inner().found);
    });
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != lonely).collect();
    for id in &others {
        c.pause(*id);
    }

    for port in PORTS {
        let a = addr(&c, lonely, port);
        let started = Instant::now();
        let cut_off = eventually(Duration::from_secs(30), || {
            let s = rt.block_on(health(&a, "")).ok()?;
            (s == ServingStatus::NotServing).then_some(())
        });
        assert!(
            cut_off.is_some(),
            "{port:?} port: still SERVING without a quorum"
        );
        eprintln!("{port:?} port: NOT_SERVING after {:?}", started.elapsed());
        rt.block_on(async {
            let mut k = kv(&a).await;
            // The client's deadline (300 ms), shorter than the server's
            // own (network.request_timeout, 2 s, which would answer
            // UNAVAILABLE): DEADLINE_EXCEEDED shows the server kept it.
            let mut req = Request::new(get("before", "linearizable"));
            req.set_timeout(Duration::from_millis(300));
            let t = Instant::now();
            assert_eq!(code(k.get(req).await), Code::DeadlineExceeded);
            eprintln!("{port:?} port: DEADLINE_EXCEEDED after {:?}", t.elapsed());
            let mut req = Request::new(set("during", "1"));
            req.set_timeout(Duration::from_millis(300));
            assert_eq!(code(k.set(req).await), Code::DeadlineExceeded);
            // No deadline: the server gives up after network.request_timeout.
            let t = Instant::now();
            assert_eq!(code(k.get(get("before", "")).await), Code::Unavailable);
            eprintln!(
                "{port:?} port: linearizable read UNAVAILABLE after {:?}",
                t.elapsed()
            );
            let w = k.set(set("during", "2")).await.unwrap_err();
            let outcome = w
                .metadata()
                .get("x-ferrium-outcome")
                .map(|v| v.to_str().unwrap());
            match w.code() {
                Code::DeadlineExceeded => assert_eq!(outcome, Some("unknown"), "{w:?}"),
                Code::Unavailable => assert_eq!(outcome, None, "{w:?}"),
                other => panic!("a write without quorum answered {other:?}: {w:?}"),
            }
            eprintln!(
                "{port:?} port: write without quorum: {:?} {:?}",
                w.code(),
                w.message()
            );
            // Stale reads need no quorum.
            let g = retry!(k.get(get("before", "stale"))).unwrap().into_inner();
            assert_eq!(g.value, "1");
        });
    }

    for id in &others {
        c.resume(*id);
    }
    let a = addr(&c, lonely, Port::Grpc);
    let back = eventually(Duration::from_secs(30), || {
        let s = rt.block_on(health(&a, "")).ok()?;
        (s == ServingStatus::Serving).then_some(())
    });
    assert!(
        back.is_some(),
        "node {lonely} not SERVING after the quorum came back"
    );

    // Shutting down: a Watch sees NOT_SERVING, then the stream ends and the
    // node exits.
    let pid = c.node(lonely).pid().expect("running");
    let http = addr(&c, lonely, Port::Http);
    rt.block_on(async {
        let mut h = HealthClient::new(channel(&http).await);
        let mut stream = h
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        // The first answer may still be NOT_SERVING while the node catches up.
        let serving = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(m) = stream.message().await.unwrap() {
                if m.status == ServingStatus::Serving as i32 {
                    return;
                }
            }
            panic!("the Watch stream ended before SERVING");
        });
        serving
            .await
            .expect("the Watch stream never said SERVING within a minute");
        support::cluster::signal(pid, "TERM");
        let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the Watch stream sent no status after SIGTERM");
        let next = next.unwrap().expect("a status before the stream ends");
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        let end = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream ends during shutdown");
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    });
    let exited = eventually(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&c.node(lonely).log).ok()?;
        log.contains(&format!("node {lonely} stopped"))
            .then_some(())
    });
    assert!(
        exited.is_some(),
        "node {lonely} did not stop: {}",
        c.log_tail(lonely)
    );
    assert_no_panics(&c);
}

#[test]
fn follower_without_forwarding_names_the_leader() {
    let c = Cluster::start_in_process(
        "grpc-noforward",
        3,
        Bootstrap::Static,
        "[network]\nforward_to_leader = false\n",
    );
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let rt = runtime();
    for port in PORTS {
        rt.block_on(async {
            let mut k = kv(&addr(&c, follower, port)).await;
            let s = k.set(set("k", "v")).await.unwrap_err();
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            let named = s
                .metadata()
                .get("x-ferrium-leader")
                .map(|v| v.to_str().unwrap());
            let want = format!("{leader}@{}", c.node(leader).grpc_addr());
            assert_eq!(named, Some(want.as_str()), "{s:?}");
            // The leader itself serves it.
            let mut l = kv(&addr(&c, leader, port)).await;
            assert!(retry!(l.set(set("k", "v"))).unwrap().into_inner().success);
        });
    }
    assert_no_panics(&c);
}

/// HTTP/2 spoken frame by frame, for clients tonic would never be: one that
/// opens more streams than it was allowed, one that never answers a ping.
mod h2raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const REFUSED_STREAM: u32 = 0x7;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Frame> {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream,
            payload,
        })
    }

    /// The preface and an empty SETTINGS frame.
    pub fn hello() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// Connects, says hello, reads the server's SETTINGS and acknowledges
    /// them; returns the stream and the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS, if it set one.
    pub fn open(addr: &str) -> (TcpStream, Option<u32>) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&hello()).expect("write preface");
        loop {
            let f = read_frame(&mut s).expect("the server's SETTINGS");
            if f.kind != SETTINGS || f.flags & ACK != 0 {
                continue;
            }
            let limit = f.payload.chunks(6).find_map(|p| {
                (u16::from_be_bytes([p[0], p[1]]) == MAX_CONCURRENT_STREAMS)
                    .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
            });
            s.write_all(&frame(SETTINGS, ACK, 0, &[])).expect("ack");
            return (s, limit);
        }
    }

    /// A HEADERS block (HPACK literals, no indexing) opening a gRPC call
    /// to `path` that never sends its message.
    pub fn call(path: &str) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "ferrium"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            block.push(0x00);
            block.push(u8::try_from(name.len()).unwrap());
            block.extend_from_slice(name.as_bytes());
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }
}

/// Acceptance: more HTTP/2 connections on the HTTP port than
/// `network.max_connections` leave the next plain request answered 503, and
/// the node serves again once they close; the gRPC port has the same bound.
#[test]
fn http2_connections_count_against_max_connections() {
    use std::io::Write;
    let c = Cluster::start_with(
        "grpc-conn-limit",
        1,
        Bootstrap::Static,
        "[network]\nmax_connections = 8\n",
    );
    let http_addr = c.addr(1);
    let open_h2 = || {
        let mut s = std::net::TcpStream::connect(&http_addr).expect("connect");
        s.write_all(&h2raw::hello()).expect("preface");
        s
    };
    let mut held: Vec<std::net::TcpStream> = (0..10).map(|_| open_h2()).collect();
    // The harness's own connections from start-up may still hold a slot for
    // a moment; each time a plain request is still served, one more HTTP/2
    // connection is opened and held (if they did not count, none would ever
    // fill the limit).
    let refused = eventually(Duration::from_secs(30), || {
        let r = support::cluster::http(&http_addr, "GET", "/health", None).ok()?;
        if r.status == 503 {
            return Some(r);
        }
        if held.len() < 40 {
            held.push(open_h2());
        }
        None
    });
    let refused = refused.expect("a plain request was served beside 10 HTTP/2 connections");
    assert!(
        refused.body.contains("too many connections"),
        "{}",
        refused.body
    );
    drop(held);
    let served = eventually(Duration::from_secs(30), || {
        let r = support::cluster::http(&http_addr, "GET", "/health", None).ok()?;
        (r.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "the node did not serve again after the HTTP/2 connections closed"
    );

    // The gRPC port: 8 connections are served, the 9th is closed unanswered.
    let grpc_addr = c.node(1).grpc_addr();
    let held: Vec<_> = (0..8).map(|_| h2raw::open(&grpc_addr).0).collect();
    let mut ninth = std::net::TcpStream::connect(&grpc_addr).expect("connect");
    ninth.write_all(&h2raw::hello()).expect("preface");
    assert!(
        support::cluster::closed_within(&mut ninth, Duration::from_secs(30)),
        "a 9th connection to the gRPC port was kept"
    );
    drop(held);
    let rt = runtime();
    rt.block_on(async {
        let served = eventually_async(|| async {
            let mut client = kv(&grpc_addr).await;
            client.get(get("k", "")).await.ok()
        })
        .await;
        assert!(served.is_some(), "the gRPC port did not serve again");
    });
    assert_no_panics(&c);
}

/// Polls `f` for up to 30 s.
async fn eventually_async<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        // Polling, until the deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Acceptance: 1,000 streams on one connection; the server advertises its
/// limit and refuses every stream past it, on both ports, and serves on.
#[test]
fn streams_past_the_advertised_limit_are_refused() {
    use std::io::Write;
    let c = Cluster::start_in_process("grpc-streams", 1, Bootstrap::Static, "");
    const LIMIT: u32 = 256;
    for port in PORTS {
        let (mut s, advertised) = h2raw::open(&addr(&c, 1, port));
        assert_eq!(
            advertised,
            Some(LIMIT),
            "{port:?}: SETTINGS_MAX_CONCURRENT_STREAMS"
        );
        // Calls that never send their message: each holds its stream open.
        let call = h2raw::call("/ferrium.kv.KvService/Get");
        let mut out = Vec::new();
        for i in 0..1000u32 {
            out.extend(h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_HEADERS,
                2 * i + 1,
                &call,
            ));
        }
        s.write_all(&out).expect("write 1,000 HEADERS");
        let mut refused = BTreeSet::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while refused.len() < (1000 - LIMIT) as usize {
            let f = match h2raw::read_frame(&mut s) {
                Ok(f) => f,
                Err(e) => panic!("{port:?}: after {} refusals: {e}", refused.len()),
            };
            assert_ne!(
                f.kind,
                h2raw::GOAWAY,
                "{port:?}: the server gave up on the connection"
            );
            if f.kind == h2raw::RST_STREAM {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                assert_eq!(code, h2raw::REFUSED_STREAM, "{port:?}: stream {}", f.stream);
                refused.insert(f.stream);
            }
        }
        // Exactly the streams past the limit.
        let first_refused = 2 * LIMIT + 1;
        assert_eq!(refused.first(), Some(&first_refused), "{port:?}");
        assert_eq!(refused.len(), (1000 - LIMIT) as usize, "{port:?}");
        drop(s);
    }
    let rt = runtime();
    rt.block_on(async {
        for port in PORTS {
            let mut client = kv(&addr(&c, 1, port)).await;
            retry!(client.set(set("after-streams", "ok"))).unwrap();
        }
    });
    assert_eq!(
        support::cluster::http(&c.addr(1), "GET", "/health", None)
            .unwrap()
            .status,
        200
    );
    assert_no_panics(&c);
}

/// Acceptance: an HTTP/2 client that sends nothing, or stops answering
/// pings, is disconnected rather than held forever.
#[test]
fn silent_http2_clients_are_disconnected() {
    use std::io::Write;
    let c = Cluster::start_with(
        "grpc-silent",
        1,
        Bootstrap::Static,
        "[network]\nheader_timeout = \"1s\"\nhttp2_keepalive_interval = \"1s\"\nhttp2_keepalive_timeout = \"1s\"\n",
    );
    let within = Duration::from_secs(20);
    // Connected to the gRPC port, never a byte: no preface in time.
    let mut mute = std::net::TcpStream::connect(c.node(1).grpc_addr()).expect("connect");
    assert!(
        support::cluster::closed_within(&mut mute, within),
        "a mute client kept the gRPC port"
    );
    // Half a preface.
    let mut half = std::net::TcpStream::connect(c.node(1).grpc_addr()).expect("connect");
    half.write_all(&h2raw::PREFACE[..10]).expect("write");
    assert!(
        support::cluster::closed_within(&mut half, within),
        "half a preface kept the gRPC port"
    );
    // A whole preface, then no answer to the server's pings: on both ports.
    for port in PORTS {
        let mut gone = std::net::TcpStream::connect(addr(&c, 1, port)).expect("connect");
        gone.write_all(&h2raw::hello()).expect("write");
        assert!(
            support::cluster::closed_within(&mut gone, within),
            "{port:?}: a client that never answers pings was kept"
        );
    }
    let rt = runtime();
    rt.block_on(async {
        for port in PORTS {
            let mut client = kv(&addr(&c, 1, port)).await;
            retry!(client.set(set("after-silence", "ok"))).unwrap();
        }
    });
    assert_no_panics(&c);
}
