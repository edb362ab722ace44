//! Replicated-server behaviour with real `ferrium-server` processes: writes
//! on any member, linearizable reads everywhere, leader failure, full
//! restarts, snapshot catch-up of a late learner, membership changes under
//! load, and repeated kill -9 under load.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, eventually, http};
use ferrium::rng::{Rng, clock_seed};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn value_of(reply: &support::cluster::Reply) -> Option<String> {
    reply.json()["value"].as_str().map(str::to_string)
}

#[test]
fn write_on_any_member_is_readable_linearizably_on_every_member() {
    let c = Cluster::start("any-member", 3, Bootstrap::Static);
    for id in c.ids() {
        let r = c.set(id, &format!("k{id}"), &format!("v{id}")).unwrap();
        assert_eq!(r.status, 200, "write via node {id}: {}", r.body);
        assert!(r.json()["revision"].as_u64().unwrap() > 0);
    }
    for reader in c.ids() {
        for writer in c.ids() {
            let r = c
                .get(reader, &format!("k{writer}"), "linearizable")
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(
                value_of(&r).as_deref(),
                Some(format!("v{writer}").as_str()),
                "node {reader}"
            );
        }
    }
    // Lease and stale reads, a missing key, delete.
    let leader = c.wait_leader(Duration::from_secs(30));
    let r = c.get(leader, "k1", "lease").unwrap();
    assert_eq!(value_of(&r).as_deref(), Some("v1"));
    let r = c.get(leader, "missing", "linearizable").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json()["value"].is_null());
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let r = http(
        &c.addr(follower),
        "POST",
        "/write",
        Some(r#"{"Delete":{"key":"k1"}}"#),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["existed"], json!(true));
    let r = http(
        &c.addr(follower),
        "POST",
        "/write",
        Some(r#"{"Delete":{"key":"k1"}}"#),
    )
    .unwrap();
    assert_eq!(r.json()["existed"], json!(false));
    let stale = eventually(Duration::from_secs(30), || {
        let r = c.get(follower, "k1", "stale").ok()?;
        r.json()["value"].is_null().then_some(())
    });
    assert!(
        stale.is_some(),
        "the delete never reached node {follower}'s state machine"
    );
}

#[test]
fn leader_kill_elects_a_new_leader_and_loses_nothing() {
    let mut c = Cluster::start("leader-kill", 3, Bootstrap::Static);
    let mut acked = BTreeMap::new();
    for i in 0..200 {
        let id = c.ids()[i % 3];
        let r = c.set_retrying(id, &format!("key-{i}"), &format!("val-{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.insert(format!("key-{i}"), format!("val-{i}"));
    }
    let old = c.wait_leader(Duration::from_secs(30));
    c.kill(old);
    let t0 = Instant::now();
    let new = c.wait_leader(Duration::from_secs(60));
    eprintln!("new leader {new} after {:?}", t0.elapsed());
    assert_ne!(new, old);
    for i in 200..300 {
        let id = c.running_ids()[i % 2];
        let r = c.set_retrying(id, &format!("key-{i}"), &format!("val-{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        acked.insert(format!("key-{i}"), format!("val-{i}"));
    }
    c.restart(old);
    for (k, v) in &acked {
        for id in c.ids() {
            let r = c.get(id, k, "linearizable").unwrap();
            assert_eq!(
                value_of(&r).as_deref(),
                Some(v.as_str()),
                "node {id} key {k}: {}",
                r.body
            );
        }
    }
}

#[test]
fn stopping_and_restarting_every_node_keeps_every_key() {
    let mut c = Cluster::start("full-restart", 3, Bootstrap::Static);
    for i in 0..300 {
        let r = c
            .set(c.ids()[i % 3], &format!("p-{i}"), &format!("{i}"))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for id in c.ids() {
        assert_eq!(
            c.stop(id),
            Some(0),
            "node {id} did not exit cleanly: {}",
            c.log_tail(id)
        );
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_leader(Duration::from_secs(30));
    for i in 0..300 {
        for id in c.ids() {
            let r = c.get_retrying(id, &format!("p-{i}"), "linearizable");
            assert_eq!(value_of(&r), Some(format!("{i}")), "node {id}: {}", r.body);
        }
    }
}

fn rss_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn late_learner_catches_up_through_a_streamed_snapshot() {
    let extra = "[raft]\nsnapshot_threshold = 50\nlog_retention = 10\n";
    let mut c = Cluster::start_with("learner-snapshot", 3, Bootstrap::Static, extra);
    let leader = c.wait_leader(Duration::from_secs(30));
    let value = "x".repeat(100);
    let t0 = Instant::now();
    for batch in 0..200 {
        let pairs: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("bulk/{:06}", batch * 1000 + i), value.clone()))
            .collect();
        let body = json!({"BatchSet": {"pairs": pairs}}).to_string();
        let r = http(&c.addr(leader), "POST", "/write", Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    println!("200,000 keys written in {:?}", t0.elapsed());
    let m = http(&c.addr(leader), "GET", "/metrics", None)
        .unwrap()
        .json();
    assert!(
        m["snapshot"].as_u64().unwrap_or(0) > 0,
        "no snapshot was built: {m}"
    );
    assert!(
        m["purged"].as_u64().unwrap_or(0) > 0,
        "the log was never purged: {m}"
    );
    let before = rss_peak_kib(c.node(leader).pid().unwrap());

    let id = c.add_node();
    let body = json!({"node_id": id, "rpc_addr": c.addr(id), "api_addr": c.addr(id)}).to_string();
    let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let caught_up = eventually(Duration::from_secs(60), || {
        let r = c.get(id, "bulk/199999", "stale").ok()?;
        value_of(&r).filter(|v| *v == value)
    });
    assert!(
        caught_up.is_some(),
        "learner never caught up: {}",
        c.log_tail(id)
    );
    let log = std::fs::read_to_string(&c.node(id).log).unwrap();
    assert!(
        log.contains("snapshot"),
        "the learner did not install a snapshot: {}",
        c.log_tail(id)
    );
    for k in ["bulk/000000", "bulk/123456", "bulk/199999"] {
        let r = c.get(id, k, "stale").unwrap();
        assert_eq!(value_of(&r).as_deref(), Some(value.as_str()));
    }
    let r = http(
        &c.addr(id),
        "POST",
        "/list",
        Some(r#"{"prefix":"bulk/","limit":10000,"consistency":"stale"}"#),
    )
    .unwrap();
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 10000);
    let after = rss_peak_kib(c.node(leader).pid().unwrap());
    println!("leader peak RSS: {before} KiB before the transfer, {after} KiB after");
    assert!(
        after < before + 100 * 1024,
        "sending the snapshot grew the leader's peak memory by {} KiB",
        after - before
    );
}

/// Writes from a background thread until stopped; records which keys got a
/// 200 and which failed in a way that says "may have happened".
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    definite_failures: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Arc<Mutex<Vec<String>>>, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let definite_failures = Arc::new(AtomicU64::new(0));
        let (s, a, f, p) = (
            stop.clone(),
            acked.clone(),
            definite_failures.clone(),
            prefix.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let targets = addrs.lock().unwrap().clone();
                let addr = &targets[(i as usize) % targets.len()];
                let key = format!("{p}-{i}");
                let body = json!({"Set": {"key": key, "value": i.to_string()}}).to_string();
                match support::cluster::http_with_timeout(
                    addr,
                    "POST",
                    "/write",
                    Some(&body),
                    Duration::from_secs(10),
                ) {
                    Ok(r) if r.status == 200 => {
                        a.lock().unwrap().insert(key, i.to_string());
                    }
                    Ok(r) => {
                        let code = r.json()["code"].as_str().unwrap_or("").to_string();
                        if code != "outcome_unknown" && code != "unavailable" {
                            f.fetch_add(1, Ordering::SeqCst);
                            eprintln!("write {key} failed definitely: {} {}", r.status, r.body);
                        }
                    }
                    Err(_) => {}
                }
                i += 1;
            }
        });
        Load {
            stop,
            acked,
            definite_failures,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more writes than now have been acknowledged; fails
    /// the test, naming `when`, if that takes more than a minute.
    fn wait_for_acks(&self, n: usize, when: &str) {
        let target = self.acked.lock().unwrap().len() + n;
        let reached = eventually(Duration::from_secs(60), || {
            (self.acked.lock().unwrap().len() >= target).then_some(())
        });
        assert!(
            reached.is_some(),
            "the load got no {n} writes acknowledged {when} within a minute"
        );
    }

    fn finish(mut self) -> (BTreeMap<String, String>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.definite_failures.load(Ordering::SeqCst))
    }
}

/// Every acknowledged key is present with its value on every running node.
/// One linearizable read per node first brings its state machine up to the
/// leader's commit point; the full listing after it is then complete.
fn assert_all_present(c: &Cluster, acked: &BTreeMap<String, String>) {
    for id in c.running_ids() {
        let r = c.get_retrying(id, "any-key", "linearizable");
        assert_eq!(r.status, 200, "node {id}: {}", r.body);
        let mut found = BTreeMap::new();
        let mut start_after: Option<String> = None;
        loop {
            let body = json!({"prefix": "", "limit": 10000, "start_after": start_after, "consistency": "stale"}).to_string();
            let r = http(&c.addr(id), "POST", "/list", Some(&body)).unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.json();
            for item in page["keys"].as_array().unwrap() {
                found.insert(
                    item["key"].as_str().unwrap().to_string(),
                    item["value"].as_str().unwrap().to_string(),
                );
            }
            if page["has_more"] != json!(true) {
                break;
            }
            start_after = page["next_start_after"].as_str().map(str::to_string);
        }
        for (k, v) in acked {
            assert_eq!(
                found.get(k),
                Some(v),
                "node {id} lost acknowledged write {k}"
            );
        }
    }
}

#[test]
fn membership_three_to_five_to_three_under_write_load() {
    let mut c = Cluster::start("membership", 3, Bootstrap::Static);
    let addrs = Arc::new(Mutex::new(
        c.ids().iter().map(|i| c.addr(*i)).collect::<Vec<_>>(),
    ));
    let load = Load::start(addrs.clone(), "m");
    load.wait_for_acks(20, "before the membership changes");
    let new: Vec<u64> = (0..2).map(|_| c.add_node()).collect();
    for id in &new {
        let leader = c.leader_seen_by(1, Duration::from_secs(30));
        let body =
            json!({"node_id": id, "rpc_addr": c.addr(*id), "api_addr": c.addr(*id)}).to_string();
        let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = http(
        &c.addr(1),
        "POST",
        "/change-membership",
        Some("[1,2,3,4,5]"),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // The change is committed on the leader; node 4 sees it with the next
    // append it receives.
    let five = eventually(Duration::from_secs(30), || {
        let m = http(&c.addr(4), "GET", "/metrics", None).ok()?.json();
        (m["membership"]["voters"].as_array()?.len() == 5).then_some(())
    });
    assert!(
        five.is_some(),
        "node 4 never saw five voters: {}",
        c.log_tail(4)
    );
    load.wait_for_acks(20, "with five voters");
    let r = http(&c.addr(4), "POST", "/change-membership", Some("[1,2,3]")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    load.wait_for_acks(20, "after going back to three voters");
    let (acked, failures) = load.finish();
    assert_eq!(
        failures, 0,
        "writes failed other than unavailable/outcome_unknown"
    );
    let voters = eventually(Duration::from_secs(30), || {
        let m = http(&c.addr(1), "GET", "/metrics", None).ok()?.json();
        (m["membership"]["voters"] == json!([1, 2, 3])).then_some(())
    });
    assert!(voters.is_some());
    for id in new {
        c.kill(id);
    }
    assert_all_present(&c, &acked);
}

#[test]
fn twenty_kill_nine_cycles_under_load_lose_no_acknowledged_write() {
    let mut c = Cluster::start("kill-cycles", 3, Bootstrap::Static);
    let addrs = Arc::new(Mutex::new(
        c.ids().iter().map(|i| c.addr(*i)).collect::<Vec<_>>(),
    ));
    let load = Load::start(addrs, "kc");
    let seed: u64 = std::env::var("FERRIUM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(clock_seed);
    println!("kill-cycle seed {seed} (set FERRIUM_TEST_SEED to repeat)");
    let mut rng = Rng::new(seed);
    for cycle in 0..20 {
        let victim = *rng.pick(&c.ids());
        // The schedule: a random stretch of load between kills, and the
        // victim stays down a moment before it restarts.
        std::thread::sleep(Duration::from_millis(rng.range(150, 450)));
        c.kill(victim);
        std::thread::sleep(Duration::from_millis(200));
        c.restart(victim);
        println!("cycle {cycle}: killed and restarted node {victim}");
    }
    c.wait_leader(Duration::from_secs(60));
    load.wait_for_acks(20, "after the last restart");
    let (acked, _) = load.finish();
    println!("{} acknowledged writes", acked.len());
    assert_all_present(&c, &acked);
}

#[test]
fn manual_flow_init_add_learner_twice_change_membership() {
    let c = Cluster::start("manual", 3, Bootstrap::Manual);
    // Nothing is initialised: no leader anywhere, writes are unavailable.
    let r = http(&c.addr(1), "GET", "/leader", None).unwrap();
    assert!(r.json()["leader"].is_null(), "{}", r.body);
    let r = c.set(2, "k", "v").unwrap();
    assert_eq!(r.status, 503, "{}", r.body);

    let r = http(&c.addr(1), "POST", "/init", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], json!("initialized"));
    let leader = eventually(Duration::from_secs(30), || {
        http(&c.addr(1), "GET", "/leader", None).ok()?.json()["leader"].as_u64()
    });
    assert_eq!(leader, Some(1));
    let r = http(&c.addr(1), "POST", "/init", None).unwrap();
    assert_eq!(r.status, 409, "initialising twice: {}", r.body);

    for id in [2, 3] {
        let body =
            json!({"node_id": id, "rpc_addr": c.addr(id), "api_addr": c.addr(id)}).to_string();
        let r = http(&c.addr(1), "POST", "/add-learner", Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A reused id with another address is refused.
    let body =
        json!({"node_id": 2, "rpc_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:1"}).to_string();
    let r = http(&c.addr(1), "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);

    let r = http(&c.addr(1), "POST", "/change-membership", Some("[1,2,3]")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.set(3, "k", "v").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for id in c.ids() {
        let r = c.get(id, "k", "linearizable").unwrap();
        assert_eq!(value_of(&r).as_deref(), Some("v"));
        let m = http(&c.addr(id), "GET", "/metrics", None).unwrap().json();
        assert_eq!(m["membership"]["voters"], json!([1, 2, 3]), "{m}");
    }
}

/// Every entry the limits let in can be replicated and put in a snapshot:
/// the largest key and value the configuration allows survive a backlog
/// larger than one peer request may carry, several snapshots and a restart
/// of every node; a write over the limits sent straight to the peer route
/// `/raft/write` (which used to propose it unchecked) is refused with 413.
#[test]
fn largest_allowed_entries_replicate_snapshot_and_restart() {
    const MAX_VALUE: usize = 64 * 1024 * 1024 - 34;
    let extra = format!(
        "[network]\nmax_message_size = \"128MiB\"\nmax_key_size = \"1MiB\"\nmax_value_size = {MAX_VALUE}\nrequest_timeout = \"110s\"\n\n[raft]\nsnapshot_threshold = 4\nheartbeat_interval = \"250ms\"\nelection_timeout_min = \"3s\"\nelection_timeout_max = \"6s\"\n"
    );
    // Writing and replicating a 64 MiB entry keeps a node busy for a while on
    // a loaded machine: election timeouts sized for such values, as CONFIG.md
    // advises, so that the test is about sizes and not about elections.
    let mut c = Cluster::start_with("largest-entries", 3, Bootstrap::Static, &extra);
    let long = Duration::from_secs(120);
    let put = |c: &Cluster, id: u64, key: &str, value: &str| {
        let body = json!({"Set": {"key": key, "value": value}}).to_string();
        let r = support::cluster::request(&c.addr(id), "POST", "/write", Some(&body), &[], long)
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "write of {key}: {}",
            &r.body[..r.body.len().min(300)]
        );
    };
    let leader = c.wait_leader(Duration::from_secs(30));
    let big_key = "k".repeat(1024 * 1024);
    put(&c, leader, &big_key, "small");
    put(&c, leader, "big-value-0", &"v".repeat(MAX_VALUE));

    // A follower misses five of the largest values (more than the 256 MiB one
    // peer request may carry), then must catch up from the log.
    let lagging = c.ids().into_iter().find(|i| *i != leader).unwrap();
    c.kill(lagging);
    for i in 1..=5 {
        put(
            &c,
            leader,
            &format!("big-value-{i}"),
            &"v".repeat(MAX_VALUE),
        );
    }
    put(&c, leader, "after-backlog", "done");
    c.restart(lagging);
    let caught_up = eventually(Duration::from_secs(180), || {
        let r = c.get(lagging, "after-backlog", "stale").ok()?;
        (value_of(&r).as_deref() == Some("done")).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "node {lagging} never caught up with a backlog of large entries:\n{}",
        c.log_tail(lagging)
    );

    // Every node built snapshots holding these entries; restart them all.
    let snapshot_of = |c: &Cluster, id: u64| -> u64 {
        c.call(id, "GET", "/metrics", None)
            .ok()
            .and_then(|r| {
                r.json()["snapshot"]["index"]
                    .as_u64()
                    .or(r.json()["snapshot"].as_u64())
            })
            .unwrap_or(0)
    };
    let last = c.call(leader, "GET", "/metrics", None).unwrap().json()["last_log_index"]
        .as_u64()
        .unwrap();
    for id in c.ids() {
        let built = eventually(long, || (snapshot_of(&c, id) + 4 > last).then_some(()));
        assert!(
            built.is_some(),
            "node {id} has no snapshot near index {last} (it has {}):\n{}",
            snapshot_of(&c, id),
            c.log_tail(id)
        );
    }
    for id in c.ids() {
        c.kill(id);
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_leader(Duration::from_secs(30));
    for id in c.ids() {
        let r = support::cluster::request(
            &c.addr(id),
            "POST",
            "/read",
            Some(&json!({"key": "big-value-5", "consistency": "linearizable"}).to_string()),
            &[],
            long,
        )
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "node {id}: {}",
            &r.body[..r.body.len().min(300)]
        );
        assert_eq!(value_of(&r).map(|v| v.len()), Some(MAX_VALUE), "node {id}");
        let r = c.get(id, &big_key, "stale").unwrap();
        assert_eq!(value_of(&r).as_deref(), Some("small"), "node {id}");
        let h = c.call(id, "GET", "/health", None).unwrap();
        assert_eq!(
            h.status, 200,
            "node {id} unhealthy after restart: {}",
            h.body
        );
    }

    // The peer route checks what it proposes.
    let leader = c.wait_leader(Duration::from_secs(30));
    let target = leader.to_string();
    let headers = [
        ("x-ferrium-target", target.as_str()),
        ("x-ferrium-from", "2"),
        ("x-ferrium-cluster", "test"),
    ];
    let oversize = json!({"Set": {"key": "k".repeat(1024 * 1024 + 1), "value": "x"}}).to_string();
    let r = support::cluster::request(
        &c.addr(leader),
        "POST",
        "/raft/write",
        Some(&oversize),
        &headers,
        long,
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.json()["code"], json!("payload_too_large"));
    let r = c
        .get(leader, &"k".repeat(1024 * 1024), "linearizable")
        .unwrap();
    assert_eq!(r.status, 200);
}

/// A rolling restart: each member in turn is stopped with SIGTERM (the
/// leader hands its leadership over first), restarted and waited for until
/// ready, while a writer on every member keeps writing. A client that retries
/// only definite refusals (503 `unavailable`, a refused connection) loses no
/// write and never sees an unknown outcome.
#[test]
fn rolling_restart_under_load_fails_no_write() {
    let mut c = Cluster::start("rolling", 3, Bootstrap::Static);
    let addrs: Vec<String> = c.ids().iter().map(|id| c.addr(*id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..addrs.len() {
        let (addrs, stop, acked, failed) =
            (addrs.clone(), stop.clone(), acked.clone(), failed.clone());
        writers.push(std::thread::spawn(move || {
            let mut member = w;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("roll-{w}-{i}");
                let body = json!({"Set": {"key": key, "value": i.to_string()}}).to_string();
                let r = support::cluster::request(
                    &addrs[member],
                    "POST",
                    "/write",
                    Some(&body),
                    &[],
                    Duration::from_secs(10),
                );
                match r {
                    Ok(r) if r.status == 200 => {
                        acked.lock().unwrap().insert(key, i.to_string());
                        i += 1;
                    }
                    // A client's back-off before it tries the next member.
                    Ok(r) if r.status == 503 && r.json()["code"] == json!("unavailable") => {
                        member = (member + 1) % addrs.len();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        member = (member + 1) % addrs.len();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("{key} via {}: {other:?}", addrs[member]));
                        i += 1;
                    }
                }
            }
        }));
    }
    let wait_for_writes = |n: usize| {
        let target = acked.lock().unwrap().len() + n;
        eventually(Duration::from_secs(30), || {
            (acked.lock().unwrap().len() >= target).then_some(())
        })
        .expect("writes keep succeeding");
    };
    wait_for_writes(20);
    for id in c.ids() {
        let was_leader = c.current_leader() == Some(id);
        let code = c.stop(id);
        assert_eq!(
            code,
            Some(0),
            "node {id} did not stop cleanly:\n{}",
            c.log_tail(id)
        );
        if was_leader {
            // The leader handed over before it exited: another member leads
            // already, with no election timeout to sit out.
            let leading = c.ids().into_iter().filter(|x| *x != id).find(|x| {
                c.call(*x, "GET", "/is-leader", None)
                    .is_ok_and(|r| r.json()["is_leader"] == json!(true))
            });
            assert!(
                leading.is_some(),
                "no member leads right after leader {id} stopped:\n{}",
                c.log_tail(id)
            );
        }
        c.restart(id);
        let ready = eventually(Duration::from_secs(30), || {
            (c.call(id, "GET", "/ready", None).ok()?.status == 200).then_some(())
        });
        assert!(
            ready.is_some(),
            "node {id} not ready after restart:\n{}",
            c.log_tail(id)
        );
        wait_for_writes(20);
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} writes failed: {:#?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    let acked = acked.lock().unwrap();
    assert_all_present(&c, &acked);
}

/// The test-only failpoint of the log store (see `src/store/log.rs`): WAL
/// syncs fail while the file it names exists.
const FAIL_WAL_SYNC: &str = "FERRIUM_TEST_ONLY_FAIL_WAL_SYNC_WHEN_EXISTS";

/// Fails when an error text looks like a Rust `Debug` dump of internal
/// structures (`Node { rpc_addr: .. }`, `Some(..)`, `LogId { .. }`, `[2, 3]`)
/// rather than words.
fn assert_words(what: &str, r: &support::cluster::Reply) {
    let text = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| r.body.clone());
    eprintln!("{what}: {} {text}", r.status);
    for dump in [
        "{", "}", "[", "]", "Some(", "None", "_addr:", "_id:", "LogId", "Vote", "\"\"",
    ] {
        assert!(
            !text.contains(dump),
            "{what}: the error text contains {dump:?}, a Debug dump: {text}"
        );
    }
}

/// The answer's status and error code.
fn status_code(r: &support::cluster::Reply) -> (u16, String) {
    let code = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (r.status, code)
}

#[test]
fn a_wal_failure_on_the_leader_is_an_unknown_outcome_never_internal() {
    let c = Cluster::start_env(
        "wal-failure",
        3,
        "",
        &[(FAIL_WAL_SYNC, "{dir}/fail-wal-sync-{id}")],
    );
    let leader = c.wait_leader(Duration::from_secs(30));
    assert_eq!(c.set_retrying(leader, "before", "1").status, 200);

    // The leader's disk fails while it holds the write: the entry may
    // already be on the followers, and a new leader may commit it.
    std::fs::write(c.scratch.path.join(format!("fail-wal-sync-{leader}")), "").unwrap();
    let r = c.set(leader, "during", "2").unwrap();
    assert_eq!(
        status_code(&r),
        (503, "outcome_unknown".to_string()),
        "{}",
        r.body
    );
    assert_eq!(
        r.header("retry-after"),
        None,
        "an unknown outcome must not invite an automatic retry"
    );
    assert_words("write during a WAL failure", &r);

    // Later writes to that node were never proposed: a definite refusal.
    let r = c.set(leader, "after", "3").unwrap();
    assert_eq!(
        status_code(&r),
        (503, "unavailable".to_string()),
        "{}",
        r.body
    );
    assert_words("write to a node whose Raft stopped", &r);

    // The others elect a new leader and carry on.
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let r = c.set_retrying(others[0], "later", "4");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// What the stand-in leader of [`fake_leader`] does with a request.
#[derive(Clone)]
enum FakeAnswer {
    /// A whole answer with this status and body.
    Whole(u16, String),
    /// A head promising 100 bytes of body, a few of them, then a close.
    CutMidBody(u16),
    /// Reads the request and closes the connection without an answer.
    Close,
}

/// A stand-in for a leader's peer port: reads each request whole, then
/// answers as `answer` says at that moment.
fn fake_leader(answer: Arc<Mutex<FakeAnswer>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let answer = answer.lock().unwrap().clone();
            let out = match answer {
                FakeAnswer::Whole(status, body) => format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ),
                FakeAnswer::CutMidBody(status) => format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"Ok\":"
                ),
                FakeAnswer::Close => String::new(),
            };
            let _ = conn.write_all(out.as_bytes());
        }
    });
    addr
}

#[test]
fn a_forwarded_write_is_unknown_unless_the_leader_refused_it_before_running_it() {
    // Node 1 leads alone but tells its peers that its peer port is a
    // stand-in; node 2, a learner, forwards its writes there.
    let c = Cluster::start("forward-outcome", 2, Bootstrap::Manual);
    let answer = Arc::new(Mutex::new(FakeAnswer::Close));
    let fake = fake_leader(answer.clone());
    let members = json!({"1": {"rpc_addr": fake, "api_addr": c.addr(1)}}).to_string();
    let r = http(&c.addr(1), "POST", "/init", Some(&members)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    c.leader_seen_by(1, Duration::from_secs(30));
    let body = json!({"node_id": 2, "rpc_addr": c.addr(2), "api_addr": c.addr(2)}).to_string();
    let r = http(&c.addr(1), "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.leader_seen_by(2, Duration::from_secs(30)), 1);

    let internal = json!({"error": "boom", "code": "internal"}).to_string();
    let may_have_run = [
        ("500", FakeAnswer::Whole(500, internal)),
        ("502", FakeAnswer::Whole(502, "bad gateway".into())),
        (
            "a 503 that is not a refusal",
            FakeAnswer::Whole(503, "<html>busy</html>".into()),
        ),
        ("an answer cut mid-body", FakeAnswer::CutMidBody(200)),
        ("a 500 cut mid-body", FakeAnswer::CutMidBody(500)),
        ("no answer", FakeAnswer::Close),
    ];
    for (what, a) in may_have_run {
        *answer.lock().unwrap() = a;
        let r = c.set(2, "k", "v").unwrap();
        assert_eq!(
            status_code(&r),
            (503, "outcome_unknown".to_string()),
            "leader answered {what}: {}",
            r.body
        );
        assert_eq!(r.header("retry-after"), None, "leader answered {what}");
        assert_words(what, &r);
    }

    let refused = |code: &str| json!({"error": "refused", "code": code}).to_string();
    // A command the leader's own checks refuse keeps its status (the client
    // must not retry it); any other refusal is a definite 503.
    let never_ran = [
        (
            "400",
            FakeAnswer::Whole(400, refused("invalid_request")),
            400,
            "invalid_request",
        ),
        (
            "401",
            FakeAnswer::Whole(401, refused("unauthorized")),
            503,
            "unavailable",
        ),
        (
            "403",
            FakeAnswer::Whole(403, refused("forbidden")),
            503,
            "unavailable",
        ),
        (
            "413",
            FakeAnswer::Whole(413, refused("payload_too_large")),
            413,
            "payload_too_large",
        ),
        (
            "421",
            FakeAnswer::Whole(421, refused("wrong_node")),
            503,
            "unavailable",
        ),
        (
            "a busy 503",
            FakeAnswer::Whole(503, refused("unavailable")),
            503,
            "unavailable",
        ),
    ];
    for (what, a, status, code) in never_ran {
        *answer.lock().unwrap() = a;
        let r = c.set(2, "k", "v").unwrap();
        assert_eq!(
            status_code(&r),
            (status, code.to_string()),
            "leader answered {what}: {}",
            r.body
        );
        assert_words(what, &r);
    }
}

#[test]
fn a_lease_read_as_the_followers_resume_from_a_long_pause_succeeds() {
    // The leader's lease is its raft.election_timeout_max (1.1 s here). The
    // followers get election timers of 3 s, so that a pause longer than the
    // lease ends before they would start an election: they come back as
    // followers of the same leader.
    let short = "[raft]\nelection_timeout_min = 1000\nelection_timeout_max = 1100\n";
    let long = "[raft]\nelection_timeout_min = 3000\nelection_timeout_max = 3100\n";
    let mut c = Cluster::start_with("lease-resume", 3, Bootstrap::Static, short);
    let leader = c.wait_leader(Duration::from_secs(30));
    let followers: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        let path = c.node(*f).config.clone();
        let text = std::fs::read_to_string(&path).unwrap().replace(short, long);
        std::fs::write(&path, text).unwrap();
        c.restart(*f);
        assert_eq!(c.leader_seen_by(*f, Duration::from_secs(30)), leader);
    }
    assert_eq!(c.wait_leader(Duration::from_secs(30)), leader);
    assert_eq!(c.set_retrying(leader, "k", "v").status, 200);
    for f in &followers {
        c.pause(*f);
    }
    // The lease has run out once the leader reports that it has not heard
    // from a quorum for that long.
    let expired = eventually(Duration::from_secs(30), || {
        (c.call(leader, "GET", "/ready", None).ok()?.status == 503).then_some(())
    });
    assert!(expired.is_some(), "the leader's lease never ran out");

    // The read reaches the leader before any follower has answered again:
    // the lease is not valid, so it must fall back to ReadIndex.
    let addr = c.addr(leader);
    let read = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/read",
            Some(r#"{"key":"k","consistency":"lease"}"#),
        )
    });
    for f in &followers {
        c.resume(*f);
    }
    let r = read.join().unwrap().unwrap();
    assert_eq!(
        r.status, 200,
        "lease read as the followers resume: {}",
        r.body
    );
    assert_eq!(value_of(&r).as_deref(), Some("v"));
    let r = c.get(leader, "k", "lease").unwrap();
    assert_eq!(value_of(&r).as_deref(), Some("v"), "{}", r.body);
}

#[test]
fn failure_answers_say_what_went_wrong_in_words() {
    let extra = "[network]\nrequest_timeout = 2000\n";
    let mut c = Cluster::start_with("error-words", 3, Bootstrap::Static, extra);
    let leader = c.wait_leader(Duration::from_secs(30));
    assert_eq!(c.set_retrying(leader, "k", "v").status, 200);

    // Membership mistakes.
    let r = http(
        &c.addr(leader),
        "POST",
        "/change-membership",
        Some("[1,2,3,7,8]"),
    )
    .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_words("promoting unknown nodes", &r);
    let body = json!({"node_id": 2, "rpc_addr": "127.0.0.1:1"}).to_string();
    let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_words("reusing a member's id", &r);

    // No quorum: both followers stopped.
    let followers: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        c.pause(*f);
    }
    let expired = eventually(Duration::from_secs(30), || {
        (c.call(leader, "GET", "/ready", None).ok()?.status == 503).then_some(())
    });
    assert!(
        expired.is_some(),
        "the leader never noticed the lost quorum"
    );
    for consistency in ["linearizable", "lease"] {
        let r = c.get(leader, "k", consistency).unwrap();
        assert_eq!(
            status_code(&r),
            (503, "unavailable".to_string()),
            "{}",
            r.body
        );
        assert_words(&format!("{consistency} read without a quorum"), &r);
        let text = r.json()["error"].as_str().unwrap().to_string();
        let numbers: Vec<&str> = text.split(|ch: char| !ch.is_ascii_digit()).collect();
        for f in &followers {
            assert!(
                text.contains("did not answer") && numbers.contains(&f.to_string().as_str()),
                "the answer should name node {f} among those that did not answer: {text}"
            );
        }
    }
    let r = c.set(leader, "k", "w").unwrap();
    assert_eq!(status_code(&r).0, 503, "{}", r.body);
    assert_words("write without a quorum", &r);
    for f in &followers {
        c.resume(*f);
    }
}

/// `GET /metrics` of node `id`, as JSON.
fn metrics(c: &Cluster, id: u64) -> serde_json::Value {
    http(&c.addr(id), "GET", "/metrics", None).unwrap().json()
}

#[test]
fn add_learner_returns_once_the_learner_has_the_log_and_promoting_it_stalls_no_write() {
    // A write that stalls longer than an election timeout fails: the
    // request timeout is set to it.
    let extra = "[network]\nrequest_timeout = 2000\n\n[storage]\nsync_writes = false\n";
    let mut c = Cluster::start_with("learner-wait", 1, Bootstrap::Static, extra);
    let leader = c.wait_leader(Duration::from_secs(30));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let addr = c.addr(leader);
            std::thread::spawn(move || {
                for i in 0..2500 {
                    let body = json!({"Set": {"key": format!("bulk/{w}/{i}"), "value": "x"}});
                    let r = http(&addr, "POST", "/write", Some(&body.to_string())).unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let last = metrics(&c, leader)["last_log_index"].as_u64().unwrap();
    assert!(last >= 20_000, "only {last} entries");

    // The learner starts 20,000 entries behind. A 503 means it has not
    // caught up within the request timeout yet; asking again waits again.
    let id = c.add_node();
    let body = json!({"node_id": id, "rpc_addr": c.addr(id), "api_addr": c.addr(id)}).to_string();
    let added = eventually(Duration::from_secs(120), || {
        let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).unwrap();
        match r.status {
            200 => Some(()),
            503 => {
                assert_words("a learner that has not caught up", &r);
                None
            }
            _ => panic!("/add-learner: {} {}", r.status, r.body),
        }
    });
    assert!(added.is_some(), "the learner never caught up");
    let m = metrics(&c, leader);
    let matched = m["replication"][id.to_string()]["matched"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        matched >= last,
        "/add-learner returned with the learner at index {matched}, the leader at {last}: {m}"
    );

    // Promote it under write load: no write waits past an election timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.addr(leader);
    let s = stop.clone();
    let load = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let mut i = 0;
        while !s.load(Ordering::SeqCst) || i < 50 {
            let body = json!({"Set": {"key": format!("promote/{i}"), "value": "x"}});
            let r = http(&addr, "POST", "/write", Some(&body.to_string())).unwrap();
            answers.push((r.status, r.body));
            i += 1;
        }
        answers
    });
    let voters = format!("[{leader},{id}]");
    let r = http(&c.addr(leader), "POST", "/change-membership", Some(&voters)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    stop.store(true, Ordering::SeqCst);
    let answers = load.join().unwrap();
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "writes failed around the promotion: {failed:?}"
    );

    // A learner that cannot catch up in the time given gets a clear 503.
    let late = c.add_node();
    let body = json!({"node_id": late, "rpc_addr": c.addr(late), "api_addr": c.addr(late),
        "timeout": "1ms"})
    .to_string();
    let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(
        status_code(&r),
        (503, "unavailable".to_string()),
        "{}",
        r.body
    );
    assert_words("a learner that has not caught up", &r);
    let text = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        text.contains(&format!("node {late}")) && text.contains("caught up"),
        "{text}"
    );
}
