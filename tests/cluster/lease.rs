//! Leases, locks and elections through a three-node cluster of real
//! processes: a lease ends a short, bounded time after its keep-alives stop,
//! at one revision on every member; it survives leader changes while kept
//! alive; it still ends under elections every 1.5 s (where a lease that a
//! new leader restarts at its full TTL would live for ever); a lock keeps a
//! plain counter exact through kills and pauses, with the holder's revision
//! as a fencing token.

use crate::support::cluster::{Bootstrap, Cluster, eventually, http_with_timeout, request};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Quicker elections than the defaults, so that leader changes fit the
/// tests' time; the lease rules do not depend on them.
const FAST_RAFT: &str = "[raft]\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"250ms\"\nelection_timeout_max = \"500ms\"\n";

/// `POST path` with `body` to the first of `addrs` (from `start` on) that
/// answers in `timeout`; the status and JSON of that answer.
fn post_any(
    addrs: &[String],
    start: usize,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Option<(u16, Value)> {
    let text = body.to_string();
    for i in 0..addrs.len() {
        let addr = &addrs[(start + i) % addrs.len()];
        if let Ok(r) = http_with_timeout(addr, "POST", path, Some(&text), timeout) {
            if r.status == 503 {
                continue;
            }
            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            return Some((r.status, v));
        }
    }
    None
}

/// The same, retried until an answer other than 503 comes.
fn post_retrying(addrs: &[String], path: &str, body: &Value) -> (u16, Value) {
    let mut start = 0;
    eventually(Duration::from_secs(30), || {
        start += 1;
        post_any(addrs, start, path, body, Duration::from_secs(2))
    })
    .unwrap_or_else(|| panic!("{path}: no member answered within 30 s"))
}

fn addrs(c: &Cluster) -> Vec<String> {
    c.ids().iter().map(|&id| c.addr(id)).collect()
}

fn grant(addrs: &[String], ttl: u64) -> u64 {
    let (status, v) = post_retrying(addrs, "/lease/grant", &json!({"ttl": ttl}));
    assert_eq!(status, 200, "grant: {v}");
    assert_eq!(v["ttl"], ttl);
    v["id"].as_u64().expect("a lease id")
}

fn put_with_lease(addrs: &[String], key: &str, lease: u64) -> u64 {
    let body = json!({"Set": {"key": key, "value": "here", "lease": lease}});
    let (status, v) = post_retrying(addrs, "/write", &body);
    assert_eq!(status, 200, "put {key}: {v}");
    v["revision"].as_u64().expect("a revision")
}

/// Whether `key` exists, read linearizably on node `addr`.
fn exists(addr: &str, key: &str) -> Option<bool> {
    let body = json!({"key": key}).to_string();
    let r = http_with_timeout(addr, "POST", "/range", Some(&body), Duration::from_secs(2)).ok()?;
    (r.status == 200).then(|| r.json()["count"].as_u64() == Some(1))
}

/// The revision of the first change of `key` after `after`, as member
/// `addr` reports it (a long poll on its own history).
fn next_change(addr: &str, key: &str, after: u64) -> (u64, String) {
    let path = format!("/watch?key={key}&index={after}&wait=20s");
    let r = http_with_timeout(addr, "GET", &path, None, Duration::from_secs(25))
        .unwrap_or_else(|e| panic!("long poll on {addr}: {e}"));
    assert_eq!(r.status, 200, "long poll on {addr}: {}", r.body);
    let v = r.json();
    let e = &v["events"][0];
    (
        e["kv"]["mod_revision"].as_u64().expect("an event"),
        e["type"].as_str().unwrap_or("").to_string(),
    )
}

/// Keeps `lease` alive every `every` through any member until `stop`;
/// records when the last acknowledged keep-alive was sent and whether any
/// was refused as not found.
fn keep_alive(
    addrs: Vec<String>,
    lease: u64,
    every: Duration,
    stop: Arc<AtomicBool>,
    last_sent: Arc<Mutex<Instant>>,
    lost: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut acks = 0;
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            i += 1;
            match post_any(
                &addrs,
                i,
                "/lease/keepalive",
                &json!({"id": lease}),
                Duration::from_millis(300),
            ) {
                Some((200, _)) => {
                    acks += 1;
                    *last_sent.lock().unwrap() = sent;
                }
                Some((404, _)) => lost.store(true, Ordering::SeqCst),
                _ => {}
            }
            std::thread::sleep(every.saturating_sub(sent.elapsed()));
        }
        acks
    })
}

/// Pauses the leader until the others elect another one, then resumes it;
/// answers the new leader.
fn force_leader_change(c: &Mutex<Cluster>) -> u64 {
    let old = c.lock().unwrap().wait_leader(Duration::from_secs(20));
    c.lock().unwrap().pause(old);
    let new = eventually(Duration::from_secs(20), || {
        c.lock().unwrap().current_leader().filter(|l| *l != old)
    })
    .expect("a new leader while the old one is paused");
    c.lock().unwrap().resume(old);
    new
}

#[test]
fn a_lease_ends_soon_after_its_keep_alives_stop_at_one_revision_on_every_member() {
    let c = Cluster::start("lease-expiry", 3, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    let addrs = addrs(&c);
    let lease = grant(&addrs, 2);
    let put_rev = put_with_lease(&addrs, "svc/one", lease);
    // A plain key next to it stays.
    assert_eq!(c.set_retrying(2, "svc/plain", "stays").status, 200);
    let (stop, lost) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let last_sent = Arc::new(Mutex::new(Instant::now()));
    let keeper = keep_alive(
        addrs.clone(),
        lease,
        Duration::from_millis(500),
        stop.clone(),
        last_sent.clone(),
        lost.clone(),
    );
    // Alive for 3 s, past its TTL, while kept alive.
    std::thread::sleep(Duration::from_secs(3)); // the keep-alives run meanwhile
    assert_eq!(exists(&addrs[0], "svc/one"), Some(true));
    stop.store(true, Ordering::SeqCst);
    let acks = keeper.join().unwrap();
    assert!(acks >= 4, "only {acks} keep-alives were acknowledged");
    assert!(!lost.load(Ordering::SeqCst));
    let last = *last_sent.lock().unwrap();
    let gone_at = eventually(Duration::from_secs(10), || {
        (exists(&addrs[1], "svc/one") == Some(false)).then(Instant::now)
    })
    .expect("the key still exists 10 s after its keep-alives stopped");
    let after = gone_at.duration_since(last);
    println!("lease of 2 s: key gone {after:?} after the last keep-alive was sent");
    // Safety: never before the TTL since the last acknowledged keep-alive.
    assert!(after >= Duration::from_secs(2), "gone after {after:?}");
    // The documented bound: TTL + lease.check_interval + a commit.
    assert!(after < Duration::from_millis(3_000), "gone after {after:?}");
    // Every member deleted it at the same revision.
    let revs: Vec<(u64, String)> = addrs
        .iter()
        .map(|a| next_change(a, "svc/one", put_rev))
        .collect();
    assert!(
        revs.iter().all(|r| r == &revs[0] && r.1 == "DELETE"),
        "{revs:?}"
    );
    assert_eq!(exists(&addrs[2], "svc/plain"), Some(true));
    let (status, v) = post_retrying(&addrs, "/lease/timetolive", &json!({"id": lease}));
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("lease_not_found")),
        "{v}"
    );
    // Every member counted the expiry and the leader's keep-alives.
    let text = request(
        &addrs[0],
        "GET",
        "/metrics",
        None,
        &[("Accept", "text/plain")],
        Duration::from_secs(5),
    )
    .unwrap()
    .body;
    assert!(text.contains("ferrium_lease_expirations_total 1"), "{text}");
    assert!(text.contains("\nferrium_leases 0"), "{text}");
}

#[test]
fn a_lease_kept_alive_survives_thirty_seconds_and_two_leader_changes() {
    let c = Cluster::start_with("lease-survives", 3, Bootstrap::Static, FAST_RAFT);
    c.wait_leader(Duration::from_secs(30));
    let addrs = addrs(&c);
    let lease = grant(&addrs, 2);
    put_with_lease(&addrs, "svc/kept", lease);
    let (stop, lost) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let last_sent = Arc::new(Mutex::new(Instant::now()));
    let keeper = keep_alive(
        addrs.clone(),
        lease,
        Duration::from_millis(300),
        stop.clone(),
        last_sent.clone(),
        lost.clone(),
    );
    let c = Mutex::new(c);
    let began = Instant::now();
    let first = c.lock().unwrap().wait_leader(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(8)); // kept alive meanwhile
    let second = force_leader_change(&c);
    std::thread::sleep(Duration::from_secs(8)); // kept alive meanwhile
    let third = force_leader_change(&c);
    assert!(
        first != second && second != third,
        "{first} {second} {third}"
    );
    std::thread::sleep(Duration::from_secs(30).saturating_sub(began.elapsed()));
    assert!(
        !lost.load(Ordering::SeqCst),
        "a keep-alive found the lease gone"
    );
    for a in &addrs {
        assert_eq!(
            eventually(Duration::from_secs(10), || exists(a, "svc/kept")),
            Some(true),
            "on {a}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let acks = keeper.join().unwrap();
    println!("30 s, leaders {first} -> {second} -> {third}: {acks} keep-alives acknowledged");
}

#[test]
fn a_lease_without_keep_alives_ends_within_its_bound_under_elections_every_one_and_a_half_seconds()
{
    let c = Cluster::start_with("lease-flapping", 3, Bootstrap::Static, FAST_RAFT);
    c.wait_leader(Duration::from_secs(30));
    let addrs = addrs(&c);
    let lease = grant(&addrs, 5);
    put_with_lease(&addrs, "svc/flap", lease);
    // The last acknowledged keep-alive, then none.
    let sent = Instant::now();
    let (status, v) = post_retrying(&addrs, "/lease/keepalive", &json!({"id": lease}));
    assert_eq!(status, 200, "{v}");
    // A reader on every member notes when the key is first seen gone.
    let gone: Arc<Mutex<Option<Instant>>> = Arc::default();
    let readers: Vec<_> = addrs
        .iter()
        .map(|a| {
            let (a, gone) = (a.clone(), gone.clone());
            std::thread::spawn(move || {
                while gone.lock().unwrap().is_none() && sent.elapsed() < Duration::from_secs(20) {
                    if exists(&a, "svc/flap") == Some(false) {
                        gone.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    // Polling the key.
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    let c = Mutex::new(c);
    let mut changes = 0;
    while gone.lock().unwrap().is_none() {
        let round = Instant::now();
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the key outlived 20 s of elections"
        );
        force_leader_change(&c);
        changes += 1;
        // One election every 1.5 s.
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(round.elapsed()));
    }
    for r in readers {
        r.join().unwrap();
    }
    let gone_at = gone.lock().unwrap().expect("seen gone");
    let after = gone_at.duration_since(sent);
    println!(
        "lease of 5 s under an election every 1.5 s (etcd 3.4 would restart it at 5 s on each): gone {after:?} after its last keep-alive, {changes} leader changes"
    );
    assert!(after >= Duration::from_secs(5), "gone after {after:?}");
    // The documented bound: TTL + check_interval, and per leader change at
    // most lease.checkpoint_interval (500 ms) plus the time without a
    // leader (here at most about 2 election timeouts, 1 s).
    let bound =
        Duration::from_millis(5_000 + 100 + 200) + changes as u32 * Duration::from_millis(1_500);
    assert!(
        after <= bound,
        "gone after {after:?}, the bound for {changes} changes is {bound:?}"
    );
}

/// One client of the lock test: its session lease, kept alive.
struct Session {
    lease: u64,
    stop: Arc<AtomicBool>,
    keeper: std::thread::JoinHandle<u64>,
}

#[test]
fn a_lock_keeps_a_plain_counter_exact_through_kills_and_pauses() {
    const CLIENTS: u64 = 8;
    const EACH: u64 = 200;
    let c = Cluster::start("lock-counter", 3, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    let addrs = addrs(&c);
    assert_eq!(c.set_retrying(1, "counter", "0").status, 200);
    let done = Arc::new(AtomicBool::new(false));
    let fenced = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (addrs, fenced) = (addrs.clone(), fenced.clone());
            std::thread::spawn(move || {
                let mut session = None::<Session>;
                let mut written = 0;
                let mut tokens = Vec::new();
                while written < EACH {
                    let s = session.get_or_insert_with(|| {
                        let lease = grant(&addrs, 5);
                        let stop = Arc::new(AtomicBool::new(false));
                        let keeper = keep_alive(
                            addrs.clone(),
                            lease,
                            Duration::from_millis(1000),
                            stop.clone(),
                            Arc::new(Mutex::new(Instant::now())),
                            Arc::new(AtomicBool::new(false)),
                        );
                        Session { lease, stop, keeper }
                    });
                    let start = (n as usize + written as usize) % addrs.len();
                    let lock = post_any(&addrs, start, "/lock", &json!({"name": "counter-lock", "lease": s.lease}), Duration::from_secs(20));
                    let Some((200, held)) = lock else {
                        if let Some((404, _)) = lock {
                            // The session's lease ended: a new one.
                            let s = session.take().unwrap();
                            s.stop.store(true, Ordering::SeqCst);
                            let _ = s.keeper.join();
                        }
                        continue;
                    };
                    let key = held["key"].as_str().unwrap().to_string();
                    let token = held["rev"].as_u64().unwrap();
                    // A plain read of the counter...
                    let (status, read) = post_retrying(&addrs, "/range", &json!({"key": "counter"}));
                    assert_eq!(status, 200, "{read}");
                    let value: u64 = read["kvs"][0]["value"].as_str().unwrap().parse().unwrap();
                    // ...and a plain write of value + 1, fenced by the token:
                    // applied only while this holder's key still exists.
                    let txn = json!({
                        "compare": [{"key": key, "target": "create_revision", "result": "=", "create_revision": token}],
                        "success": [{"put": {"key": "counter", "value": (value + 1).to_string()}}],
                        "failure": [],
                    });
                    let id = format!("inc-{n}-{written}-{token}");
                    let body = txn.to_string();
                    let r = eventually(Duration::from_secs(30), || {
                        addrs.iter().find_map(|a| {
                            let r = request(a, "POST", "/txn", Some(&body), &[("Idempotency-Key", &id)], Duration::from_secs(3)).ok()?;
                            (r.status == 200).then(|| r.json())
                        })
                    })
                    .expect("the counter write never got an answer");
                    if r["succeeded"] == json!(true) {
                        written += 1;
                        tokens.push(token);
                    } else {
                        // The holder's lease ended while it held the lock:
                        // the fence refused its write; it counts again.
                        fenced.fetch_add(1, Ordering::SeqCst);
                    }
                    post_retrying(&addrs, "/unlock", &json!({"key": key}));
                }
                if let Some(s) = session {
                    s.stop.store(true, Ordering::SeqCst);
                    let _ = s.keeper.join();
                    post_retrying(&addrs, "/lease/revoke", &json!({"id": s.lease}));
                }
                tokens
            })
        })
        .collect();
    // The nemesis: a member killed and restarted, or paused and resumed,
    // every couple of seconds while the clients run.
    let nemesis = {
        let done = done.clone();
        let c = Arc::new(Mutex::new(c));
        let c2 = c.clone();
        let handle = std::thread::spawn(move || {
            let mut round = 0u64;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1500)); // between faults
                let victim = 1 + round % 3;
                if round % 2 == 0 {
                    c2.lock().unwrap().kill(victim);
                    std::thread::sleep(Duration::from_millis(800)); // the fault lasts
                    c2.lock().unwrap().restart(victim);
                } else {
                    c2.lock().unwrap().pause(victim);
                    std::thread::sleep(Duration::from_millis(800)); // the fault lasts
                    c2.lock().unwrap().resume(victim);
                }
                round += 1;
            }
            round
        });
        (handle, c)
    };
    let mut tokens: Vec<u64> = Vec::new();
    for h in clients {
        tokens.extend(h.join().unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let faults = nemesis.0.join().unwrap();
    let c = nemesis.1;
    let c = c.lock().unwrap();
    c.wait_leader(Duration::from_secs(30));
    let (status, read) = post_retrying(&addrs, "/range", &json!({"key": "counter"}));
    assert_eq!(status, 200);
    let final_value: u64 = read["kvs"][0]["value"].as_str().unwrap().parse().unwrap();
    // Every increment applied once: the value and the tokens (one holder
    // per token, each token larger than the one before it).
    tokens.sort_unstable();
    let unique = {
        let mut t = tokens.clone();
        t.dedup();
        t.len()
    };
    println!(
        "{} increments under the lock, {faults} faults, {} writes refused by the fence",
        tokens.len(),
        fenced.load(Ordering::SeqCst)
    );
    assert_eq!(final_value, CLIENTS * EACH);
    assert_eq!(unique, tokens.len(), "two increments under one token");
    // The counter's history: 1, 2, ..., 1600, each value written once.
    let version = read["kvs"][0]["version"].as_u64().unwrap();
    assert_eq!(version, CLIENTS * EACH + 1, "one write per increment");
}

#[test]
fn leases_locks_and_elections_over_grpc() {
    use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
    use ferrium::api::proto::kv::{
        LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
        LeaseTimeToLiveRequest, PutRequest, RequestOp, TxnRequest, request_op,
    };
    use ferrium::api::proto::lock::election_service_client::ElectionServiceClient;
    use ferrium::api::proto::lock::lock_service_client::LockServiceClient;
    use ferrium::api::proto::lock::{
        CampaignRequest, LeaderRequest, LockRequest, ProclaimRequest, ResignRequest, UnlockRequest,
    };
    let c = Cluster::start_in_process("lease-grpc", 1, Bootstrap::Static, "");
    c.wait_leader(Duration::from_secs(30));
    let addr = c.node(1).grpc_addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let mut kv = KvServiceClient::new(channel.clone());
        let g = kv
            .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
            .await
            .expect("grant")
            .into_inner();
        assert_eq!(g.ttl, 30);
        let lease = g.id;
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"g/a".to_vec(),
                value: b"1".to_vec(),
                lease: lease as u64,
                ..PutRequest::default()
            })),
        };
        let t = kv
            .txn(TxnRequest {
                success: vec![put],
                ..TxnRequest::default()
            })
            .await
            .expect("txn")
            .into_inner();
        assert!(t.succeeded);
        // One answer per keep-alive, in order; an unknown lease answers 0.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(LeaseKeepAliveRequest { id: lease }).await.unwrap();
        tx.send(LeaseKeepAliveRequest { id: 987_654 })
            .await
            .unwrap();
        drop(tx);
        let stream = futures_util::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        });
        let mut answers = kv
            .lease_keep_alive(stream)
            .await
            .expect("keep-alive")
            .into_inner();
        let first = answers.message().await.unwrap().unwrap();
        let second = answers.message().await.unwrap().unwrap();
        assert_eq!((first.id, first.ttl), (lease, 30));
        assert_eq!((second.id, second.ttl), (987_654, 0));
        let ttl = kv
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
                ..LeaseTimeToLiveRequest::default()
            })
            .await
            .expect("ttl")
            .into_inner();
        assert_eq!(ttl.granted_ttl, 30);
        assert!(ttl.ttl > 25 && ttl.ttl <= 30, "{}", ttl.ttl);
        assert_eq!(ttl.keys, vec![b"g/a".to_vec()]);
        let all = kv
            .lease_leases(LeaseLeasesRequest::default())
            .await
            .expect("leases")
            .into_inner();
        assert_eq!(
            all.leases.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![lease]
        );

        // A lock, with its revision as the fencing token.
        let mut locks = LockServiceClient::new(channel.clone());
        let held = locks
            .lock(LockRequest {
                name: b"jobs".to_vec(),
                lease,
            })
            .await
            .expect("lock")
            .into_inner();
        assert_eq!(held.key, format!("jobs/{lease:x}").into_bytes());
        assert!(held.rev > 0);
        locks
            .unlock(UnlockRequest { key: held.key })
            .await
            .expect("unlock");

        // An election: campaign, leader, proclaim, observe, resign.
        let mut e = ElectionServiceClient::new(channel.clone());
        let won = e
            .campaign(CampaignRequest {
                name: b"sched".to_vec(),
                lease,
                value: b"a".to_vec(),
            })
            .await
            .expect("campaign")
            .into_inner();
        let leader = won.leader.expect("a leader key");
        let mut observe = e
            .observe(LeaderRequest {
                name: b"sched".to_vec(),
            })
            .await
            .expect("observe")
            .into_inner();
        let seen = observe.message().await.unwrap().unwrap();
        assert_eq!(seen.kv.unwrap().value, b"a");
        e.proclaim(ProclaimRequest {
            leader: Some(leader.clone()),
            value: b"b".to_vec(),
        })
        .await
        .expect("proclaim");
        let seen = observe.message().await.unwrap().unwrap();
        assert_eq!(seen.kv.unwrap().value, b"b");
        let now = e
            .leader(LeaderRequest {
                name: b"sched".to_vec(),
            })
            .await
            .expect("leader")
            .into_inner();
        assert_eq!(now.kv.unwrap().key, leader.key);
        e.resign(ResignRequest {
            leader: Some(leader.clone()),
        })
        .await
        .expect("resign");
        let gone = e
            .leader(LeaderRequest {
                name: b"sched".to_vec(),
            })
            .await
            .expect_err("no leader after the resignation");
        assert_eq!(gone.code(), tonic::Code::FailedPrecondition);
        assert!(
            gone.message().contains("election: no leader"),
            "{}",
            gone.message()
        );
        // Proclaiming after resigning is refused with etcd's words.
        let refused = e
            .proclaim(ProclaimRequest {
                leader: Some(leader),
                value: b"c".to_vec(),
            })
            .await
            .expect_err("not the leader");
        assert!(
            refused.message().contains("election: not leader"),
            "{}",
            refused.message()
        );

        // Revoking deletes the lease's keys.
        let r = kv
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(r.deleted, 1);
        let missing = kv
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: lease,
                ..LeaseTimeToLiveRequest::default()
            })
            .await
            .expect_err("revoked");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(
            missing.message().contains("does not exist"),
            "{}",
            missing.message()
        );
    });
}
