//! Faults, and schedules that inject them from a seeded PRNG.
//!
//! A schedule alternates: quiet for a moment, inject one fault, hold it,
//! heal it. Each fault heals itself fully (restart, resume, heal links,
//! restore membership), so the run ends with a whole cluster.

use super::workload::Api;
use crate::support::cluster::Cluster;
use crate::support::cluster::proxy::LinkMode;
use ferrium::rng::Rng;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a node (the leader half of the time), restart it later.
    Kill,
    /// SIGSTOP a node (the leader half of the time), SIGCONT it later.
    Pause,
    /// SIGSTOP the leader, for less or more than its lease, SIGCONT it
    /// later: `lease` reads must not trust a lease that ran out meanwhile.
    PauseLeader,
    /// Cut the leader off from every other node, both ways.
    IsolateLeader,
    /// The leader's messages to the others are lost; it still hears them.
    LeaderDeaf,
    /// Split the members into a random majority and minority.
    Split,
    /// Two halves that only one node in the middle can reach (5 nodes).
    Bridge,
    /// Slow every peer link by tens to hundreds of milliseconds.
    Slow,
    /// Remove a voter (the leader half of the time) and add it back later.
    Membership,
}

pub const ALL: &[Fault] = &[
    Fault::Kill,
    Fault::Pause,
    Fault::PauseLeader,
    Fault::IsolateLeader,
    Fault::LeaderDeaf,
    Fault::Split,
    Fault::Bridge,
    Fault::Slow,
    Fault::Membership,
];

/// How the members authenticate each other (and clients them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// No authentication.
    Open,
    /// Peer requests signed with `security.cluster_secret_file`; clients
    /// send a bearer token.
    Secret,
    /// TLS with client certificates everywhere; peers are known by
    /// `security.peer_names`, clients by `security.cert_roles`.
    Mtls,
}

/// A named schedule: cluster size, the faults it draws from, and how its
/// members authenticate.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: &'static str,
    pub nodes: u64,
    pub faults: Vec<Fault>,
    pub seed: u64,
    pub security: Security,
    /// Runs for 3/5 of the usual length in the short suite.
    pub short: bool,
}

/// What the nemesis did.
#[derive(Default)]
pub struct Report {
    /// One line per fault injected.
    pub faults: Vec<String>,
    /// How many times the Membership fault was drawn.
    pub membership_faults: usize,
    /// Voters removed, as the cluster confirmed (200).
    pub removed: usize,
    /// Removed voters added back, as the cluster confirmed.
    pub re_added: usize,
    /// Nodes that could not be added back.
    pub not_re_added: Vec<u64>,
}

/// What has to be undone when a fault ends.
enum Undo {
    Restart(u64),
    Resume(u64),
    HealNet,
    /// Add the node back; `true` when its removal was confirmed.
    ReAdd(u64, bool),
}

/// Injects faults until `deadline`; returns what it did.
pub fn run(c: &mut Cluster, rng: &mut Rng, faults: &[Fault], deadline: Instant) -> Report {
    let mut report = Report::default();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.range(500, 2000)));
        if Instant::now() >= deadline {
            break;
        }
        let fault = *rng.pick(faults);
        let (undo, what) = inject(c, rng, fault);
        eprintln!("[nemesis] {what}");
        report.faults.push(what);
        if let Undo::ReAdd(_, removed) = undo {
            report.membership_faults += 1;
            report.removed += usize::from(removed);
        }
        std::thread::sleep(Duration::from_millis(rng.range(1000, 4000)));
        heal(c, undo, &mut report);
    }
    report
}

fn leader_or_random(c: &Cluster, rng: &mut Rng) -> u64 {
    let ids = c.ids();
    if rng.below(2) == 0 {
        if let Some(l) = c.current_leader() {
            return l;
        }
    }
    *rng.pick(&ids)
}

fn inject(c: &mut Cluster, rng: &mut Rng, fault: Fault) -> (Undo, String) {
    let ids = c.ids();
    match fault {
        Fault::Kill => {
            let id = leader_or_random(c, rng);
            c.kill(id);
            (Undo::Restart(id), format!("kill -9 node {id}"))
        }
        Fault::Pause => {
            let id = leader_or_random(c, rng);
            c.pause(id);
            (Undo::Resume(id), format!("SIGSTOP node {id}"))
        }
        Fault::PauseLeader => {
            let id = c.current_leader().unwrap_or_else(|| *rng.pick(&ids));
            c.pause(id);
            (Undo::Resume(id), format!("SIGSTOP leader {id}"))
        }
        Fault::IsolateLeader => {
            let l = c.current_leader().unwrap_or_else(|| *rng.pick(&ids));
            let others: Vec<u64> = ids.iter().copied().filter(|i| *i != l).collect();
            c.net().partition(&[l], &others);
            (Undo::HealNet, format!("isolate leader {l}"))
        }
        Fault::LeaderDeaf => {
            let l = c.current_leader().unwrap_or_else(|| *rng.pick(&ids));
            for o in ids.iter().filter(|i| **i != l) {
                c.net().set(l, *o, LinkMode::Blackhole);
            }
            (Undo::HealNet, format!("one-way: leader {l} cannot send"))
        }
        Fault::Split => {
            let mut shuffled = ids.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let minority = shuffled.len() / 2;
            let (a, b) = shuffled.split_at(minority);
            c.net().partition(a, b);
            (Undo::HealNet, format!("split {a:?} | {b:?}"))
        }
        Fault::Bridge => {
            let mut shuffled = ids.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mid = shuffled[0];
            let rest = &shuffled[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            c.net().partition(a, b);
            (Undo::HealNet, format!("bridge {a:?} <-> {mid} <-> {b:?}"))
        }
        Fault::Slow => {
            for a in &ids {
                for b in &ids {
                    if a != b {
                        let d = Duration::from_millis(rng.range(20, 300));
                        c.net().set(*a, *b, LinkMode::Delay(d));
                    }
                }
            }
            (Undo::HealNet, "slow peer links (20-300 ms)".to_string())
        }
        Fault::Membership => {
            let id = leader_or_random(c, rng);
            let voters: Vec<u64> = ids.iter().copied().filter(|i| *i != id).collect();
            // Right after an earlier fault healed the cluster may still be
            // electing a leader: try again for a few seconds, so that the
            // fault is really injected.
            let deadline = Instant::now() + Duration::from_secs(10);
            let (via, r) = loop {
                let via = *rng.pick(&voters);
                let r = change_membership(c, via, &voters);
                if r.starts_with("200") || Instant::now() > deadline {
                    break (via, r);
                }
                std::thread::sleep(Duration::from_millis(300));
            };
            (
                Undo::ReAdd(id, r.starts_with("200")),
                format!("remove node {id} (via {via}): {r}"),
            )
        }
    }
}

fn heal(c: &mut Cluster, undo: Undo, report: &mut Report) {
    match undo {
        Undo::Restart(id) => c.restart(id),
        Undo::Resume(id) => c.resume(id),
        Undo::HealNet => c.net().heal(),
        Undo::ReAdd(id, removed) => {
            if re_add(c, id) {
                report.re_added += usize::from(removed);
            } else {
                report.not_re_added.push(id);
            }
        }
    }
}

fn change_membership(c: &Cluster, via: u64, voters: &[u64]) -> String {
    let body = serde_json::to_string(voters).expect("ids serialise");
    match Api::of(c).send(
        &c.addr(via),
        "POST",
        "/change-membership",
        Some(&body),
        Duration::from_secs(15),
    ) {
        Ok(r) => format!("{} {}", r.status, r.body.trim()),
        Err(e) => format!("error {e}"),
    }
}

/// Adds `id` back as a learner, then as a voter; retries for a while.
/// False when the cluster did not confirm it within a minute.
pub fn re_add(c: &Cluster, id: u64) -> bool {
    let node = c.node(id);
    let learner = serde_json::json!({
        "node_id": id,
        "rpc_addr": node.advertised_addr(),
        "api_addr": node.advertised_addr(),
        "grpc_addr": node.grpc_addr(),
    })
    .to_string();
    let all = c.ids();
    let others: Vec<u64> = all.iter().copied().filter(|i| *i != id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    while Instant::now() < deadline {
        let via = others[attempt % others.len()];
        attempt += 1;
        let added = Api::of(c).send(
            &c.addr(via),
            "POST",
            "/add-learner",
            Some(&learner),
            Duration::from_secs(15),
        );
        let ok = matches!(&added, Ok(r) if r.status == 200);
        if ok && change_membership(c, via, &all).starts_with("200") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("[nemesis] could not add node {id} back within 60s");
    false
}

/// Heals everything a run may have left behind.
pub fn heal_all(c: &mut Cluster) {
    if let Some(net) = &c.net {
        net.heal();
    }
    for id in c.ids() {
        if !c.node(id).is_running() {
            c.restart(id);
        } else if !c.running_ids().contains(&id) {
            c.resume(id);
        }
    }
}
