//! Robustness: real clusters under injected faults, every history checked.
//!
//! Each schedule starts a cluster whose peer links run through
//! fault-injecting proxies, runs concurrent clients against every member
//! while a nemesis kills, pauses, partitions and reconfigures nodes, then
//! heals everything and checks:
//! 1. the register history is linearizable (per key, Wing-Gong search);
//! 2. every acknowledged add of the set workload is present, and no add
//!    that failed definitely is;
//! 3. every member holds the same data (digest of a full listing).
//!
//! `make test` runs the short version: fixed seeds plus one random seed
//! (printed; `FERRIUM_TEST_SEED` replays it). `FERRIUM_SOAK_SECS=1800` runs
//! the same schedules back to back for that long. `FERRIUM_ROBUST_ONLY=name`
//! runs one schedule. A failing run keeps its history and the nodes' logs
//! in a folder whose path is printed.

#[path = "robustness/checker.rs"]
mod checker;
mod common;
#[path = "robustness/history.rs"]
mod history;
#[path = "robustness/nemesis.rs"]
mod nemesis;
#[path = "robustness/rng.rs"]
mod rng;
#[path = "robustness/workload.rs"]
mod workload;

use checker::Verdict;
use common::{Cluster, http_with_timeout};
use history::{History, Op, Outcome};
use nemesis::{Fault, Schedule};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use workload::Clock;

/// Small timeouts so that faults show up as errors within seconds, and a
/// low snapshot threshold so that lagging nodes catch up by snapshot.
const CONFIG: &str =
    "[network]\nrequest_timeout = 3000\n\n[raft]\nsnapshot_threshold = 2000\nlog_retention = 500\n";

const CLIENTS: u32 = 6;

#[test]
fn golden_histories_get_their_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let h = History::load(&path);
        let expect = h
            .expect_linearizable
            .unwrap_or_else(|| panic!("{} has no expected verdict", path.display()));
        let verdict = checker::check(&h.ops);
        let got = verdict == Verdict::Linearizable;
        assert!(
            !matches!(verdict, Verdict::Inconclusive { .. }),
            "{}: inconclusive",
            path.display()
        );
        assert_eq!(
            got,
            expect,
            "{} ({}): got {verdict:?}",
            path.display(),
            h.description
        );
        eprintln!("golden {}: {verdict:?} as expected", path.display());
        checked += 1;
    }
    assert!(checked >= 4, "expected at least 4 golden histories");
}

fn schedules(random_seed: u64) -> Vec<Schedule> {
    use Fault::*;
    vec![
        Schedule {
            name: "kill",
            nodes: 3,
            faults: vec![Kill],
            seed: 101,
        },
        Schedule {
            name: "pause",
            nodes: 3,
            faults: vec![Pause],
            seed: 202,
        },
        Schedule {
            name: "pause-leader",
            nodes: 3,
            faults: vec![PauseLeader],
            seed: 252,
        },
        Schedule {
            name: "partition-leader",
            nodes: 3,
            faults: vec![IsolateLeader, LeaderDeaf, Slow],
            seed: 303,
        },
        Schedule {
            name: "partition-split",
            nodes: 5,
            faults: vec![Split, Bridge, IsolateLeader],
            seed: 404,
        },
        Schedule {
            name: "membership",
            nodes: 3,
            faults: vec![Membership],
            seed: 505,
        },
        Schedule {
            name: "mix",
            nodes: 5,
            faults: nemesis::ALL.to_vec(),
            seed: random_seed,
        },
    ]
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn nemesis_schedules() {
    let random_seed = env_u64("FERRIUM_TEST_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
    });
    eprintln!(
        "robustness: random seed {random_seed} (replay with FERRIUM_TEST_SEED={random_seed})"
    );
    let only = std::env::var("FERRIUM_ROBUST_ONLY").ok();
    let all = schedules(random_seed);
    let selected: Vec<Schedule> = all
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
        .cloned()
        .collect();
    assert!(!selected.is_empty(), "no schedule named {only:?}");
    let soak = env_u64("FERRIUM_SOAK_SECS");
    let started = Instant::now();
    let mut total = Totals::default();
    match soak {
        None => {
            let secs = env_u64("FERRIUM_ROBUST_SECS").unwrap_or(25);
            for s in &selected {
                total.add(run_schedule(s, Duration::from_secs(secs)));
            }
        }
        Some(soak) => {
            let end = started + Duration::from_secs(soak);
            let mut rng = Rng::new(random_seed);
            let mut i = 0;
            while Instant::now() + Duration::from_secs(30) < end {
                let mut s = selected[i % selected.len()].clone();
                s.seed = rng.next();
                let left = end.saturating_duration_since(Instant::now());
                total.add(run_schedule(&s, left.min(Duration::from_secs(180))));
                i += 1;
            }
        }
    }
    eprintln!(
        "robustness: {} runs, {} schedules, {} operations recorded ({} register ops, {} set adds; {} ok, {} failed, {} unknown), {} faults injected, 0 anomalies, {:.0}s",
        total.runs,
        total.names.len(),
        total.ops + total.adds,
        total.ops,
        total.adds,
        total.ok,
        total.fail,
        total.unknown,
        total.faults,
        started.elapsed().as_secs_f64()
    );
    if only.is_none() && soak.is_none() {
        assert!(total.names.len() >= 6, "at least 6 distinct schedules");
        assert!(
            total.ops + total.adds >= 20_000,
            "the short suite should record at least 20,000 operations, got {}",
            total.ops + total.adds
        );
    }
}

#[derive(Default)]
struct Totals {
    runs: usize,
    names: BTreeSet<String>,
    ops: usize,
    adds: usize,
    ok: usize,
    fail: usize,
    unknown: usize,
    faults: usize,
}

impl Totals {
    fn add(&mut self, r: RunStats) {
        self.runs += 1;
        self.names.insert(r.name);
        self.ops += r.ops;
        self.adds += r.adds;
        self.ok += r.ok;
        self.fail += r.fail;
        self.unknown += r.unknown;
        self.faults += r.faults;
    }
}

struct RunStats {
    name: String,
    ops: usize,
    adds: usize,
    ok: usize,
    fail: usize,
    unknown: usize,
    faults: usize,
}

/// One schedule: cluster, clients and nemesis for `length`, then checks.
fn run_schedule(s: &Schedule, length: Duration) -> RunStats {
    eprintln!(
        "robustness: schedule {} ({} nodes, faults {:?}, seed {}) for {:?}",
        s.name, s.nodes, s.faults, s.seed, length
    );
    let began = Instant::now();
    let mut c = Cluster::start_proxied(&format!("robust-{}", s.name), s.nodes, CONFIG);
    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<(u64, String)> = c.ids().into_iter().map(|id| (id, c.addr(id))).collect();
    let clients = {
        let stop = stop.clone();
        let seed = s.seed;
        std::thread::spawn(move || workload::run(seed, CLIENTS, addrs, clock, stop))
    };
    let mut rng = Rng::new(s.seed);
    let faults = nemesis::run(&mut c, &mut rng, &s.faults, Instant::now() + length);
    stop.store(true, Ordering::SeqCst);
    let mut rec = clients.join().expect("the clients panicked");
    nemesis::heal_all(&mut c);
    c.wait_leader(Duration::from_secs(60));

    let mut problems = Vec::new();
    final_reads(&c, clock, &mut rec.ops, &mut problems);
    let listing = compare_members(&c, &mut problems);
    check_adds(&rec.adds, &listing, &mut problems);
    match checker::check(&rec.ops) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, detail } => {
            problems.push(format!("not linearizable on key {key}:\n{detail}"))
        }
        Verdict::Inconclusive { key } => problems.push(format!(
            "linearizability check of key {key} ran out of budget"
        )),
    }

    let count = |o: Outcome| {
        rec.ops.iter().filter(|x| x.outcome == o).count()
            + rec.adds.iter().filter(|x| x.outcome == o).count()
    };
    let stats = RunStats {
        name: s.name.to_string(),
        ops: rec.ops.len(),
        adds: rec.adds.len(),
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        faults: faults.len(),
    };
    eprintln!(
        "robustness: schedule {} seed {}: {} register ops + {} adds ({} ok, {} failed, {} unknown), {} faults, {:.0}s",
        s.name,
        s.seed,
        stats.ops,
        stats.adds,
        stats.ok,
        stats.fail,
        stats.unknown,
        stats.faults,
        began.elapsed().as_secs_f64()
    );
    if !problems.is_empty() {
        let dir = &c.scratch.path;
        History {
            description: format!("schedule {} seed {}", s.name, s.seed),
            expect_linearizable: None,
            ops: rec.ops.clone(),
        }
        .save(&dir.join("history.json"));
        let adds = serde_json::to_string_pretty(&rec.adds).expect("adds serialise");
        let _ = std::fs::write(dir.join("adds.json"), adds);
        let _ = std::fs::write(dir.join("faults.txt"), faults.join("\n"));
        let _ = std::fs::write(dir.join("problems.txt"), problems.join("\n\n"));
        panic!(
            "schedule {} (seed {}) failed; history, faults and node logs in {}:\n{}",
            s.name,
            s.seed,
            dir.display(),
            problems.join("\n\n")
        );
    }
    stats
}

/// A linearizable read of every register on every member, appended to the
/// history: a write lost by any member shows up here.
fn final_reads(c: &Cluster, clock: Clock, ops: &mut Vec<Op>, problems: &mut Vec<String>) {
    for id in c.ids() {
        for k in 0..workload::REGISTERS {
            let key = format!("r/{k}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let op = workload::read(
                    1000 + id as u32,
                    id,
                    &c.addr(id),
                    &key,
                    "linearizable",
                    clock,
                );
                if op.outcome == Outcome::Ok {
                    ops.push(op);
                    break;
                }
                if Instant::now() > deadline {
                    problems.push(format!(
                        "node {id} could not serve a linearizable read of {key} after healing"
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Every member's full data: `key -> (value, mod_revision)`.
type Listing = BTreeMap<String, (String, u64)>;

/// After a linearizable read on a member (so it has applied everything
/// committed), lists its data with stale reads; all members must agree.
/// Returns the first member's listing.
fn compare_members(c: &Cluster, problems: &mut Vec<String>) -> Listing {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut digests = BTreeMap::new();
        let mut first = None;
        for id in c.ids() {
            let _ = http_with_timeout(
                &c.addr(id),
                "POST",
                "/read",
                Some(r#"{"key":"r/0","consistency":"linearizable"}"#),
                Duration::from_secs(10),
            );
            let listing = list_all(&c.addr(id));
            let mut h = std::collections::hash_map::DefaultHasher::new();
            listing.hash(&mut h);
            digests.insert(id, (h.finish(), listing.len()));
            first.get_or_insert(listing);
        }
        let distinct: BTreeSet<u64> = digests.values().map(|d| d.0).collect();
        if distinct.len() == 1 {
            eprintln!("robustness: all members agree: {digests:x?}");
            return first.unwrap_or_default();
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "members differ after healing (digest, keys): {digests:x?}"
            ));
            return first.unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn list_all(addr: &str) -> Listing {
    let mut out = Listing::new();
    let mut after: Option<String> = None;
    loop {
        let body = serde_json::json!({
            "prefix": "", "limit": 1000, "start_after": after, "consistency": "stale"
        })
        .to_string();
        let Ok(r) = http_with_timeout(addr, "POST", "/list", Some(&body), Duration::from_secs(10))
        else {
            return out;
        };
        if r.status != 200 {
            return out;
        }
        let v = r.json();
        for item in v["keys"].as_array().into_iter().flatten() {
            let key = item["key"].as_str().unwrap_or_default().to_string();
            let value = item["value"].as_str().unwrap_or_default().to_string();
            let rev = item["mod_revision"].as_u64().unwrap_or(0);
            out.insert(key, (value, rev));
        }
        match v["next_start_after"].as_str() {
            Some(n) if v["has_more"].as_bool() == Some(true) => after = Some(n.to_string()),
            _ => return out,
        }
    }
}

fn check_adds(adds: &[workload::Add], listing: &Listing, problems: &mut Vec<String>) {
    let lost: Vec<&str> = adds
        .iter()
        .filter(|a| a.outcome == Outcome::Ok && !listing.contains_key(&a.key))
        .map(|a| a.key.as_str())
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged adds are missing, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    let phantom: Vec<&str> = adds
        .iter()
        .filter(|a| a.outcome == Outcome::Fail && listing.contains_key(&a.key))
        .map(|a| a.key.as_str())
        .collect();
    if !phantom.is_empty() {
        problems.push(format!(
            "{} adds reported as definitely failed are present, e.g. {:?}",
            phantom.len(),
            &phantom[..phantom.len().min(10)]
        ));
    }
    let attempted: BTreeSet<&str> = adds.iter().map(|a| a.key.as_str()).collect();
    let unknown: Vec<&String> = listing
        .keys()
        .filter(|k| k.starts_with("s/") && !attempted.contains(k.as_str()))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("keys nobody wrote are present: {unknown:?}"));
    }
}

/// The proxies really cut links: an isolated leader is replaced, a write
/// through it fails or stays unknown, and after healing the cluster
/// converges.
#[test]
fn proxy_isolates_the_leader() {
    let c = Cluster::start_proxied("robust-proxy", 3, CONFIG);
    let old = c.wait_leader(Duration::from_secs(30));
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != old).collect();
    c.net().partition(&[old], &others);
    let new = common::eventually(Duration::from_secs(20), || {
        let l = c.leader_seen_by(others[0], Duration::from_secs(5));
        (l != old && c.leader_seen_by(others[1], Duration::from_secs(5)) == l).then_some(l)
    })
    .expect("the majority elects a new leader");
    let through_old = c.set(old, "p", "lost?");
    assert!(
        through_old.as_ref().map_or(true, |r| r.status != 200),
        "a write through the isolated leader succeeded: {through_old:?}"
    );
    assert_eq!(c.set(new, "p", "kept").expect("write").status, 200);
    c.net().heal();
    let seen = common::eventually(Duration::from_secs(30), || {
        let r = c.get(old, "p", "linearizable").ok()?;
        (r.status == 200).then(|| r.json()["value"].clone())
    });
    assert_eq!(seen, Some(serde_json::json!("kept")));
}
