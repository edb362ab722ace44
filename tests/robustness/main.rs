//! Robustness: real clusters under injected faults, every history checked.
//!
//! Each schedule starts a cluster whose peer links run through
//! fault-injecting proxies, runs concurrent clients against every member
//! while a nemesis kills, pauses, partitions and reconfigures nodes, then
//! heals everything and checks:
//! 1. the register history is linearizable (per key, Wing-Gong search);
//! 2. every acknowledged add of the set workload is present, and no add
//!    that failed definitely is;
//! 3. every member holds the same data (digest of a full listing);
//! 4. one watcher per member, following the set workload's keys through
//!    the whole run (reconnecting elsewhere from its last revision), got
//!    every acknowledged add, in revision order, with no duplicate and no
//!    phantom (schedules with open peers; see `watch.rs`);
//! 5. in the `lease` schedule, holders keep keys alive under short leases
//!    and abandon them: no key disappears while an acknowledged keep-alive
//!    still guarantees it, and none outlives its documented bound (see
//!    `lease.rs`);
//! 6. the run tested something: enough operations succeeded (overall, and
//!    of the register operations through each API: Ferrium's REST, etcd's
//!    JSON gateway, etcd's gRPC), faults were injected, and a schedule
//!    that drew the membership fault changed the membership for real.
//!
//! Two schedules run with authenticated peers: one signs peer requests
//! with the cluster secret (clients send a bearer token), one uses mTLS
//! between peers and for clients; both go through the same proxies.
//!
//! The checker itself is tested on golden histories, against a brute-force
//! reference on thousands of random small histories, and on mutated
//! linearizable histories that must fail.
//!
//! `make test` runs the short version: fixed seeds plus one random seed
//! (printed; `FERRIUM_TEST_SEED` replays it). `FERRIUM_SOAK_SECS=1800` runs
//! the same schedules back to back for that long. `FERRIUM_ROBUST_ONLY=name`
//! runs one schedule. A failing run keeps its history and the nodes' logs
//! in a folder whose path is printed.

mod checker;
mod history;
mod lease;
mod nemesis;
mod reference;
mod watch;
mod workload;

/// The parts of the shared test support (`tests/support/`) these tests use.
#[path = "../support"]
mod support {
    #[allow(
        dead_code,
        reason = "these tests need proxied clusters and part of the rest; tests/cluster uses the whole harness"
    )]
    pub mod cluster;
    mod wait;
}

use crate::support::cluster::Cluster;
use checker::Verdict;
use ferrium::rng::Rng;
use history::{History, Kind, Op, Outcome};
use nemesis::{Fault, Schedule, Security};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use workload::{Api, Clock};

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

fn test_seed() -> u64 {
    env_u64("FERRIUM_TEST_SEED").unwrap_or_else(ferrium::rng::clock_seed)
}

/// The checker agrees with the brute-force reference on thousands of
/// random small histories, and both verdicts come up often.
#[test]
fn checker_agrees_with_brute_force_reference() {
    const HISTORIES: usize = 10_000;
    let seed = test_seed();
    eprintln!("checker cross-check: seed {seed} (replay with FERRIUM_TEST_SEED={seed})");
    let mut rng = Rng::new(seed);
    let (mut yes, mut no) = (0, 0);
    for i in 0..HISTORIES {
        let ops = reference::random_history(&mut rng);
        let expected = reference::linearizable(&ops);
        let verdict = checker::check(&ops);
        let got = match &verdict {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            Verdict::Inconclusive { key } => {
                panic!("history {i} (seed {seed}): the checker ran out of budget on key {key}")
            }
        };
        if got != expected {
            let text = serde_json::to_string_pretty(&ops).expect("a history serialises");
            panic!(
                "history {i} (seed {seed}): the checker says {}, the brute-force reference says {}:\n{text}",
                if got {
                    "linearizable"
                } else {
                    "not linearizable"
                },
                if expected {
                    "linearizable"
                } else {
                    "not linearizable"
                },
            );
        }
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    eprintln!(
        "checker cross-check: {HISTORIES} random histories, {yes} linearizable, {no} not, checker and reference agree on all"
    );
    assert!(
        yes >= HISTORIES / 10 && no >= HISTORIES / 10,
        "the random histories were too one-sided to test both verdicts ({yes} linearizable, {no} not)"
    );
}

/// Linearizable histories whose reads are changed so that no order can
/// explain them must be reported: a sequential history (its only legal
/// order is the real-time one) with one read changed to any other value,
/// and the golden linearizable histories with one read changed to a value
/// nobody wrote.
#[test]
fn checker_catches_mutated_reads() {
    let seed = test_seed();
    eprintln!("checker mutations: seed {seed} (replay with FERRIUM_TEST_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut mutants = 0;
    for h in 0..300 {
        let ops = reference::sequential_history(&mut rng, 2 + h % 9);
        assert_eq!(
            checker::check(&ops),
            Verdict::Linearizable,
            "a sequential register history (seed {seed}, history {h}) was refused"
        );
        let mut values: Vec<Option<String>> = ops
            .iter()
            .filter(|o| o.kind == Kind::Write)
            .map(|o| o.value.clone())
            .collect();
        values.push(None);
        values.push(Some("never-written".to_string()));
        for (i, op) in ops.iter().enumerate() {
            // A compare-and-swap that expected anything else cannot have
            // taken effect where it did.
            if let Some(expect) = &op.expect {
                for v in values.iter().filter(|v| *v != expect) {
                    let mut mutant = ops.clone();
                    mutant[i].expect = Some(v.clone());
                    assert!(
                        matches!(checker::check(&mutant), Verdict::Violation { .. }),
                        "seed {seed}, history {h}: CAS {i} expected {v:?} instead of {expect:?} in a sequential history, and the checker did not object"
                    );
                    mutants += 1;
                }
            }
            if op.kind != Kind::Read {
                continue;
            }
            for v in values.iter().filter(|v| **v != op.value) {
                let mut mutant = ops.clone();
                mutant[i].value = v.clone();
                assert!(
                    matches!(checker::check(&mutant), Verdict::Violation { .. }),
                    "seed {seed}, history {h}: operation {i} read {v:?} instead of {:?} in a sequential history, and the checker did not object:\n{}",
                    op.value,
                    serde_json::to_string_pretty(&mutant).expect("serialise")
                );
                mutants += 1;
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for name in [
        "linearizable-concurrent.json",
        "linearizable-sequential.json",
        "concurrent-readers-agree.json",
    ] {
        let h = History::load(&dir.join(name));
        for (i, op) in h.ops.iter().enumerate() {
            if op.kind != Kind::Read || op.outcome != Outcome::Ok {
                continue;
            }
            let mut mutant = h.ops.clone();
            mutant[i].value = Some("never-written".to_string());
            assert!(
                matches!(checker::check(&mutant), Verdict::Violation { .. }),
                "{name}: operation {i} read a value nobody wrote, and the checker did not object"
            );
            mutants += 1;
        }
    }
    eprintln!("checker mutations: {mutants} mutated histories, all reported");
    assert!(mutants >= 500, "only {mutants} mutations were tried");
}

fn schedules(random_seed: u64) -> Vec<Schedule> {
    use Fault::*;
    let plain = |name, nodes, faults: Vec<Fault>, seed| Schedule {
        name,
        nodes,
        faults,
        seed,
        security: Security::Open,
        short: false,
    };
    vec![
        plain("kill", 3, vec![Kill], 101),
        plain("pause", 3, vec![Pause], 202),
        plain("pause-leader", 3, vec![PauseLeader], 252),
        plain(
            "partition-leader",
            3,
            vec![IsolateLeader, LeaderDeaf, Slow],
            303,
        ),
        plain(
            "partition-split",
            5,
            vec![Split, Bridge, IsolateLeader],
            404,
        ),
        plain("membership", 3, vec![Membership], 505),
        // Keys with leases kept alive through kills, pauses and partitions
        // (the lease checker runs in this schedule).
        Schedule {
            name: "lease",
            nodes: 3,
            faults: vec![Kill, Pause, PauseLeader, IsolateLeader, Split],
            seed: 808,
            security: Security::Open,
            short: true,
        },
        Schedule {
            name: "secret",
            nodes: 3,
            faults: vec![Kill, Pause, IsolateLeader, Split, Membership],
            seed: 606,
            security: Security::Secret,
            short: true,
        },
        // Three nodes: the documented commands make three certificates.
        // With this seed the first fault drawn is a membership change.
        Schedule {
            name: "mtls",
            nodes: 3,
            faults: vec![Kill, PauseLeader, IsolateLeader, LeaderDeaf, Membership],
            seed: 717,
            security: Security::Mtls,
            short: true,
        },
        plain("mix", 5, nemesis::ALL.to_vec(), random_seed),
    ]
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn nemesis_schedules() {
    let random_seed = test_seed();
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
                let secs = if s.short { secs * 3 / 5 } else { secs };
                total.add(run_schedule(s, Duration::from_secs(secs)));
            }
        }
        Some(soak) => {
            let end = started + Duration::from_secs(soak);
            let mut rng = Rng::new(random_seed);
            let mut i = 0;
            while Instant::now() + Duration::from_secs(30) < end {
                let mut s = selected[i % selected.len()].clone();
                s.seed = rng.next_u64();
                let left = end.saturating_duration_since(Instant::now());
                total.add(run_schedule(&s, left.min(Duration::from_secs(180))));
                i += 1;
            }
        }
    }
    let sum = total.sum();
    eprintln!(
        "robustness: {} runs, {} schedules, {} operations recorded ({} register ops, {} set adds; {} ok, {} failed, {} unknown; register ops by API: {}), {} faults injected, {} membership changes, 0 anomalies, {:.0}s",
        sum.runs,
        total.by_name.len(),
        sum.ops + sum.adds,
        sum.ops,
        sum.adds,
        sum.ok,
        sum.fail,
        sum.unknown,
        sum.apis(),
        sum.faults,
        sum.membership_changes,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{}", total.table());
    if only.is_none() && soak.is_none() {
        assert_eq!(
            total.by_name.len(),
            all.len(),
            "every schedule should have run"
        );
        assert!(
            sum.ops + sum.adds >= 20_000,
            "the short suite should record at least 20,000 operations, got {}",
            sum.ops + sum.adds
        );
    }
}

/// What the runs of each schedule did, by schedule name.
#[derive(Default)]
struct Totals {
    by_name: BTreeMap<String, Sum>,
}

#[derive(Default, Clone)]
struct Sum {
    runs: usize,
    ops: usize,
    adds: usize,
    ok: usize,
    fail: usize,
    unknown: usize,
    /// The register operations by the API they went through.
    by_api: workload::ByApi,
    faults: usize,
    membership_changes: usize,
}

impl Sum {
    fn add(&mut self, r: &Sum) {
        self.runs += r.runs;
        self.ops += r.ops;
        self.adds += r.adds;
        self.ok += r.ok;
        self.fail += r.fail;
        self.unknown += r.unknown;
        self.by_api.add(r.by_api);
        self.faults += r.faults;
        self.membership_changes += r.membership_changes;
    }

    /// The register operations by API, in words.
    fn apis(&self) -> String {
        let a = &self.by_api;
        let one = |c: workload::Count, name: &str| {
            format!("{} {name} ({} ok, {} unknown)", c.ops, c.ok, c.unknown)
        };
        format!(
            "{}, {}, {}",
            one(a.rest, "REST"),
            one(a.gateway, "etcd gateway"),
            one(a.grpc, "etcd gRPC")
        )
    }
}

impl Totals {
    fn add(&mut self, r: RunStats) {
        self.by_name.entry(r.name).or_default().add(&r.sum);
    }

    fn sum(&self) -> Sum {
        let mut all = Sum::default();
        for s in self.by_name.values() {
            all.add(s);
        }
        all
    }

    /// One line per schedule: runs, operations, outcomes, register
    /// operations by API (Ferrium's REST, etcd's gateway, etcd's gRPC),
    /// faults and membership changes.
    fn table(&self) -> String {
        let mut out = format!(
            "robustness: per schedule\n{:<18} {:>5} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>11}\n",
            "schedule",
            "runs",
            "operations",
            "ok",
            "failed",
            "unknown",
            "rest",
            "gateway",
            "grpc",
            "faults",
            "membership"
        );
        let mut row = |name: &str, s: &Sum| {
            out.push_str(&format!(
                "{:<18} {:>5} {:>10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>11}\n",
                name,
                s.runs,
                s.ops + s.adds,
                s.ok,
                s.fail,
                s.unknown,
                s.by_api.rest.ops,
                s.by_api.gateway.ops,
                s.by_api.grpc.ops,
                s.faults,
                s.membership_changes
            ));
        };
        for (name, s) in &self.by_name {
            row(name, s);
        }
        row("total", &self.sum());
        out
    }
}

struct RunStats {
    name: String,
    sum: Sum,
}

/// Secrets, certificates and the client settings of a schedule's cluster.
fn start_cluster(s: &Schedule) -> Cluster {
    let name = format!("robust-{}", s.name);
    match s.security {
        Security::Open => Cluster::start_proxied(&name, s.nodes, CONFIG),
        Security::Secret => {
            let scratch = support::cluster::Scratch::new(&name);
            let mut rng = Rng::new(s.seed ^ 0x005e_c2e7);
            let hex = |rng: &mut Rng| format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
            let secret_file = scratch.path.join("cluster-secret");
            std::fs::write(
                &secret_file,
                format!("{}{}\n", hex(&mut rng), hex(&mut rng)),
            )
            .expect("write the cluster secret");
            keep_private(&secret_file);
            let token = hex(&mut rng);
            let extra = format!(
                "{CONFIG}\n[security]\nauth_method = \"token\"\ntokens = [{{ token = \"{token}\", role = \"admin\" }}]\ncluster_secret_file = \"{}\"\n",
                secret_file.display()
            );
            Cluster::start_proxied_secure(scratch, s.nodes, &extra, Some(&token), None)
        }
        Security::Mtls => {
            let scratch = support::cluster::Scratch::new(&name);
            support::cluster::tls::run_in(
                &scratch.path,
                &support::cluster::tls::documented_setup(),
            );
            let d = scratch.path.display();
            let extra = format!(
                "{CONFIG}\n[security]\nenable_tls = true\nenable_mtls = true\ncert_file = \"{d}/node{{id}}.crt\"\nkey_file = \"{d}/node{{id}}.key\"\nca_file = \"{d}/ca.crt\"\npeer_names = [\"node1.ferrium.internal\", \"node2.ferrium.internal\", \"node3.ferrium.internal\"]\nauth_method = \"certificate\"\ncert_roles = [{{ name = \"cn:ops@example.com\", role = \"admin\" }}]\n"
            );
            let client =
                support::cluster::tls::client_config(&scratch.path, "ca.crt", Some("client"));
            Cluster::start_proxied_secure(scratch, s.nodes, &extra, None, Some(client))
        }
    }
}

fn keep_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 the cluster secret");
}

/// Below this share of operations with a definite success a run is
/// considered not to have tested the cluster. Healthy runs stay far above
/// it: faults are held 1-4 s at a time and one at a time, so most
/// operations are acknowledged (86 to 100 in a hundred per schedule in the
/// short suite, 88 over a 30-minute soak); a cluster that was down or
/// refused every client (bad credentials, no leader after a fault) for
/// most of the run ends below it.
const MIN_OK_SHARE: f64 = 0.40;

/// The checks that a run exercised what it was meant to: returns the
/// problems, in words.
fn check_the_run_tested_something(
    s: &Schedule,
    stats: &Sum,
    nemesis: &nemesis::Report,
) -> Vec<String> {
    let mut problems = Vec::new();
    let total = stats.ops + stats.adds;
    if stats.ok == 0 {
        problems.push(format!(
            "no operation succeeded in schedule {}: the cluster was down or refused every client throughout ({total} operations, {} failed, {} unknown)",
            s.name, stats.fail, stats.unknown
        ));
    } else if (stats.ok as f64) < MIN_OK_SHARE * total as f64 {
        problems.push(format!(
            "only {} of {total} operations succeeded in schedule {} (less than {:.0} in a hundred): the cluster was unavailable most of the run",
            stats.ok,
            s.name,
            MIN_OK_SHARE * 100.0
        ));
    }
    // Each API the register workload uses must have been tested too: a
    // client that cannot reach one (bad TLS settings, a missing token)
    // would leave its share of the history empty of successes.
    let a = &stats.by_api;
    for (count, name) in [
        (a.rest, "Ferrium's REST API"),
        (a.gateway, "etcd's JSON gateway"),
        (a.grpc, "etcd's gRPC API"),
    ] {
        if (count.ok as f64) < MIN_OK_SHARE * count.ops as f64 || count.ok == 0 {
            problems.push(format!(
                "only {} of {} register operations through {name} succeeded in schedule {}",
                count.ok, count.ops, s.name
            ));
        }
    }
    if nemesis.faults.is_empty() {
        problems.push(format!(
            "the nemesis injected no fault in schedule {}",
            s.name
        ));
    }
    if s.faults == [Fault::Membership] && nemesis.membership_faults == 0 {
        problems.push(format!(
            "schedule {} never drew its membership fault",
            s.name
        ));
    }
    if nemesis.membership_faults > 0 && nemesis.removed == 0 {
        problems.push(format!(
            "schedule {} tried to remove a voter {} times and the cluster never confirmed a removal",
            s.name, nemesis.membership_faults
        ));
    }
    for id in &nemesis.not_re_added {
        problems.push(format!(
            "node {id} could not be added back after its removal in schedule {}",
            s.name
        ));
    }
    problems
}

/// One schedule: cluster, clients and nemesis for `length`, then checks.
fn run_schedule(s: &Schedule, length: Duration) -> RunStats {
    eprintln!(
        "robustness: schedule {} ({} nodes, {:?} peers, faults {:?}, seed {}) for {:?}",
        s.name, s.nodes, s.security, s.faults, s.seed, length
    );
    let began = Instant::now();
    let mut c = start_cluster(s);
    let api = Api::of(&c);
    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<(u64, String)> = c.ids().into_iter().map(|id| (id, c.addr(id))).collect();
    let grpc_addrs: BTreeMap<u64, String> = c
        .ids()
        .into_iter()
        .map(|id| (id, c.node(id).grpc_addr()))
        .collect();
    // The watch checker needs plain HTTP to the members (the schedules
    // with a cluster secret or mTLS run without it).
    let watchers = (s.security == Security::Open)
        .then(|| watch::Watchers::start(addrs.iter().map(|(_, a)| a.clone()).collect()));
    let leases = (s.name == "lease").then(|| {
        lease::Leases::start(
            api.clone(),
            addrs.iter().map(|(_, a)| a.clone()).collect(),
            s.seed,
        )
    });
    let clients = {
        let stop = stop.clone();
        let seed = s.seed;
        let api = api.clone();
        std::thread::spawn(move || {
            workload::run(api, seed, CLIENTS, addrs, grpc_addrs, clock, stop)
        })
    };
    let mut rng = Rng::new(s.seed);
    let report = nemesis::run(&mut c, &mut rng, &s.faults, Instant::now() + length);
    stop.store(true, Ordering::SeqCst);
    let mut rec = clients.join().expect("the clients panicked");
    nemesis::heal_all(&mut c);
    c.wait_leader(Duration::from_secs(60));
    if let Some(l) = &leases {
        l.stop_probes();
    }

    // Counted before the final reads, which are not part of the workload.
    let count = |o: Outcome| {
        rec.ops.iter().filter(|x| x.outcome == o).count()
            + rec.adds.iter().filter(|x| x.outcome == o).count()
    };
    let sum = Sum {
        runs: 1,
        ops: rec.ops.len(),
        adds: rec.adds.len(),
        ok: count(Outcome::Ok),
        fail: count(Outcome::Fail),
        unknown: count(Outcome::Unknown),
        by_api: rec.by_api,
        faults: report.faults.len(),
        membership_changes: report.removed + report.re_added,
    };
    let mut problems = check_the_run_tested_something(s, &sum, &report);
    final_reads(&c, &api, clock, &mut rec.ops, &mut problems);
    let listing = compare_members(&c, &api, &mut problems);
    check_adds(&rec.adds, &listing, &mut problems);
    let mut watch_events = 0;
    if let Some(w) = watchers {
        // A last add after healing: every watcher must get this far.
        let body = serde_json::json!({"Set": {"key": "s/final", "value": "x"}}).to_string();
        let leader = c.wait_leader(Duration::from_secs(60));
        match api.send(
            &c.addr(leader),
            "POST",
            "/write",
            Some(&body),
            Duration::from_secs(15),
        ) {
            Ok(r) if r.status == 200 => {
                let revision = r.json()["revision"].as_u64().unwrap_or(0);
                watch_events = w.finish(revision, &rec.adds, &mut problems);
            }
            other => problems.push(format!(
                "the last add for the watch checker failed after healing: {other:?}"
            )),
        }
    }
    let leased = leases.map_or(0, |l| l.finish(&mut problems));
    check_counters(&rec.increments, &listing, &mut problems);
    match checker::check(&rec.ops) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, detail } => {
            problems.push(format!("not linearizable on key {key}:\n{detail}"))
        }
        Verdict::Inconclusive { key } => problems.push(format!(
            "linearizability check of key {key} ran out of budget"
        )),
    }

    eprintln!(
        "robustness: schedule {} seed {}: {} operations ({} register ops + {} adds; {} ok, {} failed, {} unknown; register ops by API: {}), {} faults injected, {} membership changes succeeded ({} removals of {} tried, {} re-adds), {} watch events checked, {} leased keys checked, {:.0}s",
        s.name,
        s.seed,
        sum.ops + sum.adds,
        sum.ops,
        sum.adds,
        sum.ok,
        sum.fail,
        sum.unknown,
        sum.apis(),
        sum.faults,
        sum.membership_changes,
        report.removed,
        report.membership_faults,
        report.re_added,
        watch_events,
        leased,
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
        let _ = std::fs::write(dir.join("faults.txt"), report.faults.join("\n"));
        let _ = std::fs::write(dir.join("problems.txt"), problems.join("\n\n"));
        panic!(
            "schedule {} (seed {}) failed; history, faults and node logs in {}:\n{}",
            s.name,
            s.seed,
            dir.display(),
            problems.join("\n\n")
        );
    }
    RunStats {
        name: s.name.to_string(),
        sum,
    }
}

/// A linearizable read of every register on every member, appended to the
/// history: a write lost by any member shows up here.
fn final_reads(
    c: &Cluster,
    api: &Api,
    clock: Clock,
    ops: &mut Vec<Op>,
    problems: &mut Vec<String>,
) {
    for id in c.ids() {
        for k in 0..workload::REGISTERS {
            let key = format!("r/{k}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let op = workload::read(
                    api,
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
fn compare_members(c: &Cluster, api: &Api, problems: &mut Vec<String>) -> Listing {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut digests = BTreeMap::new();
        let mut first = None;
        for id in c.ids() {
            let _ = api.send(
                &c.addr(id),
                "POST",
                "/read",
                Some(r#"{"key":"r/0","consistency":"linearizable"}"#),
                Duration::from_secs(10),
            );
            let listing = list_all(api, &c.addr(id));
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

fn list_all(api: &Api, addr: &str) -> Listing {
    let mut out = Listing::new();
    let mut after: Option<String> = None;
    loop {
        let body = serde_json::json!({
            "prefix": "", "limit": 1000, "start_after": after, "consistency": "stale"
        })
        .to_string();
        let Ok(r) = api.send(addr, "POST", "/list", Some(&body), Duration::from_secs(10)) else {
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

/// Every counter equals the increments acknowledged on it: each was sent
/// with a request id until its outcome was definite, so none was applied
/// twice and none that was reported failed was applied. An increment still
/// unresolved at the end (none expected) widens the allowed range.
fn check_counters(incs: &[workload::Increment], listing: &Listing, problems: &mut Vec<String>) {
    for k in 0..workload::COUNTERS {
        let key = format!("c/{k}");
        let of = |o: Outcome| {
            incs.iter()
                .filter(|i| i.key == key && i.outcome == o)
                .count() as u64
        };
        let (acked, failed, unresolved) =
            (of(Outcome::Ok), of(Outcome::Fail), of(Outcome::Unknown));
        let value: u64 = listing
            .get(&key)
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or(0);
        eprintln!(
            "robustness: counter {key} = {value}: {acked} acknowledged increments, {failed} not applied, {unresolved} unresolved"
        );
        if value < acked || value > acked + unresolved {
            problems.push(format!(
                "counter {key} is {value}, but {acked} increments were acknowledged ({unresolved} unresolved): an increment was lost or applied twice"
            ));
        }
        if unresolved > 0 {
            problems.push(format!(
                "{unresolved} increments of {key} had no definite outcome after being sent again with their request id for {:?}",
                Duration::from_secs(30)
            ));
        }
    }
}

/// The proxies really cut links: an isolated leader is replaced, a write
/// through it fails or stays unknown, and after healing the cluster
/// converges.
#[test]
fn proxy_isolates_the_leader() {
    isolate_the_leader(Cluster::start_proxied("robust-proxy", 3, CONFIG));
}

/// The same through proxies between authenticated peers: signed requests
/// (the proxy reads the source from the request head) and mTLS (the proxy
/// terminates TLS and knows the source by its certificate).
#[test]
fn proxy_isolates_the_leader_between_authenticated_peers() {
    for security in [Security::Secret, Security::Mtls] {
        let s = Schedule {
            name: "proxy-auth",
            nodes: 3,
            faults: Vec::new(),
            seed: 1,
            security,
            short: true,
        };
        isolate_the_leader(start_cluster(&s));
    }
}

fn isolate_the_leader(c: Cluster) {
    let old = c.wait_leader(Duration::from_secs(30));
    let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != old).collect();
    c.net().partition(&[old], &others);
    let new = support::cluster::eventually(Duration::from_secs(20), || {
        let l = c.leader_seen_by(others[0], Duration::from_secs(5));
        (l != old && c.leader_seen_by(others[1], Duration::from_secs(5)) == l).then_some(l)
    })
    .expect("the majority elects a new leader");
    let through_old = c.set(old, "p", "lost?");
    assert!(
        through_old.as_ref().map_or(true, |r| r.status != 200),
        "a write through the isolated leader succeeded: {through_old:?}"
    );
    let kept = c.set_retrying(new, "p", "kept");
    assert_eq!(
        kept.status, 200,
        "a write through the new leader: {}",
        kept.body
    );
    c.net().heal();
    let seen = support::cluster::eventually(Duration::from_secs(30), || {
        let r = c.get(old, "p", "linearizable").ok()?;
        (r.status == 200).then(|| r.json()["value"].clone())
    });
    assert_eq!(seen, Some(serde_json::json!("kept")));
}
