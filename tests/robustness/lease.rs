//! The lease checker: holders put keys with short leases and keep them
//! alive through any member, each abandoning its lease after a while; a
//! monitor reads the keys linearizably all along. Afterwards:
//!
//! - *safety*: no read saw a key missing before the TTL had passed since
//!   the send of a keep-alive (or of the grant) that was acknowledged;
//! - *liveness*: every abandoned key is gone from the first read that
//!   began after its bound: when its last renewal could have taken
//!   effect (the answer to an acknowledged grant or keep-alive; the send
//!   plus the members' request timeout for one left without an answer),
//!   plus TTL and 1.5 s (the expiry check and a commit), plus, for every
//!   time the cluster could not serve the monitor overlapping that time
//!   (a gap of more than 300 ms between its successful reads: no leader, or
//!   no quorum) or between two reads in different Raft terms (a leader
//!   change the monitor did not notice as a gap), the gap and 1 s (the
//!   lease clock checkpoint and the new leader catching up), as the README
//!   documents the bound per leader change. The expiry is itself an entry,
//!   and "a commit" is measured, not assumed: a prober writes one key all
//!   along, and the bound is at least the acknowledgement of the first
//!   probe write sent after the expiry was due (0.6 s after that point:
//!   the expiry check and scheduling), since the leader commits its log in
//!   order. Reads can go on while commits stall (a leader whose only live
//!   follower is catching up answers read-index rounds), so the reads alone
//!   do not show that.
//!
//! All times are the test process's monotonic clock, which the members on
//! this machine share.

use crate::workload::Api;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The TTL of every lease, in seconds (above a failover, below the faults'
/// length, so that both renewals across faults and expiries happen).
const TTL: u64 = 3;
const HOLDERS: usize = 4;
const EVERY: Duration = Duration::from_millis(400);
/// The members' `network.request_timeout` in these runs (`crate::CONFIG`).
const SERVER_TIMEOUT: Duration = Duration::from_secs(3);

/// One key under a lease, as its holder saw it.
#[derive(Clone, Debug)]
struct Held {
    key: String,
    /// When the put was acknowledged: the key exists from then on.
    put_acked: Instant,
    /// Send times of acknowledged keep-alives, and of the grant.
    acked: Vec<Instant>,
    /// The last keep-alive sent, whatever its outcome.
    last_sent: Instant,
    /// The latest time the last renewal (the grant or a keep-alive) may
    /// have taken effect: when its answer came if it was acknowledged; if
    /// it had no answer, its send plus the servers' request timeout, after
    /// which a member answers an uncommitted write as of unknown outcome.
    renewed_by: Instant,
}

/// One monitor read: when it began and ended, and the keys it saw.
struct Read {
    began: Instant,
    ended: Instant,
    keys: BTreeSet<String>,
    /// The Raft term the answering member was in.
    term: u64,
}

pub struct Leases {
    stop: Arc<AtomicBool>,
    stop_monitor: Arc<AtomicBool>,
    holders: Vec<JoinHandle<Vec<Held>>>,
    monitor: JoinHandle<Vec<Read>>,
    stop_probes: Arc<AtomicBool>,
    prober: JoinHandle<Vec<Probe>>,
}

/// One acknowledged probe write: when the attempt that succeeded was sent
/// and when its answer came.
#[derive(Clone, Copy, Debug)]
struct Probe {
    sent: Instant,
    acked: Instant,
}

/// Longer than this between two reads is a gap.
const GAP: Duration = Duration::from_millis(300);
/// After an expiry is due (TTL after the renewal), by when the leader's
/// expiry check (every 100 ms) has proposed it, with room for scheduling
/// on a loaded machine.
const PROPOSED_WITHIN: Duration = Duration::from_millis(600);

fn any(
    api: &Api,
    addrs: &[String],
    i: &mut usize,
    path: &str,
    body: &Value,
    id: Option<&str>,
) -> Option<Value> {
    let text = body.to_string();
    for _ in 0..addrs.len() {
        *i += 1;
        let addr = &addrs[*i % addrs.len()];
        if let Ok(r) = api.send_with_id(addr, "POST", path, Some(&text), id, Duration::from_secs(1))
        {
            if r.status == 200 {
                return serde_json::from_str(&r.body).ok();
            }
        }
    }
    None
}

impl Leases {
    pub fn start(api: Api, addrs: Vec<String>, seed: u64) -> Leases {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_monitor = Arc::new(AtomicBool::new(false));
        let holders = (0..HOLDERS)
            .map(|h| {
                let (api, addrs, stop) = (api.clone(), addrs.clone(), stop.clone());
                std::thread::spawn(move || hold(api, addrs, stop, h, seed))
            })
            .collect();
        let monitor = {
            let (stop, addrs, api) = (stop_monitor.clone(), addrs.clone(), api.clone());
            std::thread::spawn(move || {
                let mut reads = Vec::new();
                let mut i = 0usize;
                let body = json!({"key": "lease/", "prefix": true, "keys_only": true});
                while !stop.load(Ordering::SeqCst) {
                    let began = Instant::now();
                    if let Some(v) = any(&api, &addrs, &mut i, "/range", &body, None) {
                        let keys = v["kvs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|kv| kv["key"].as_str().map(str::to_string))
                            .collect();
                        let term = v["header"]["raft_term"].as_u64().unwrap_or(0);
                        reads.push(Read {
                            began,
                            ended: Instant::now(),
                            keys,
                            term,
                        });
                    }
                    // Polling the keys.
                    std::thread::sleep(Duration::from_millis(50));
                }
                reads
            })
        };
        // Probe writes, one after another, to the member that answered the
        // last one (another only when it fails), each attempt timed on its
        // own: when commits were slow, not when a member was away.
        let stop_probes = Arc::new(AtomicBool::new(false));
        let prober = {
            let (stop, addrs) = (stop_probes.clone(), addrs.clone());
            std::thread::spawn(move || {
                let mut probes = Vec::new();
                let mut i = 0usize;
                let body = json!({"Set": {"key": "lease-probe", "value": "commit"}}).to_string();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let addr = &addrs[i % addrs.len()];
                    match api.send_with_id(
                        addr,
                        "POST",
                        "/write",
                        Some(&body),
                        None,
                        Duration::from_secs(1),
                    ) {
                        Ok(r) if r.status == 200 => probes.push(Probe {
                            sent,
                            acked: Instant::now(),
                        }),
                        _ => i += 1,
                    }
                    // Polling the commits.
                    std::thread::sleep(Duration::from_millis(50));
                }
                probes
            })
        };
        Leases {
            stop,
            stop_monitor,
            holders,
            monitor,
            stop_probes,
            prober,
        }
    }

    /// Stops the probe writes (the workload's final comparison of the
    /// members needs the keys to hold still).
    pub fn stop_probes(&self) {
        self.stop_probes.store(true, Ordering::SeqCst);
    }

    /// Stops the holders and the monitor, then checks what they recorded
    /// against the bound; returns how many leased keys were checked.
    pub fn finish(self, problems: &mut Vec<String>) -> usize {
        // Already stopped after healing, when the run got that far.
        self.stop_probes();
        // The holders stop keeping their leases alive; the monitor reads on
        // until the last of them is past its bound.
        self.stop.store(true, Ordering::SeqCst);
        let mut held = Vec::new();
        for h in self.holders {
            held.extend(h.join().unwrap_or_default());
        }
        // With the cluster healed, the last bound is TTL and a little away.
        std::thread::sleep(Duration::from_secs(TTL + 4)); // the monitor reads meanwhile
        self.stop_monitor.store(true, Ordering::SeqCst);
        let reads = self.monitor.join().unwrap_or_default();
        let probes = self.prober.join().unwrap_or_default();
        // A leader change may set the lease clock back to its last
        // checkpoint even when the monitor saw no gap (the new leader was
        // elected between two reads): a change of term counts as one.
        let gaps: Vec<(Instant, Instant)> = reads
            .windows(2)
            .filter(|w| w[1].began.duration_since(w[0].ended) > GAP || w[1].term != w[0].term)
            .map(|w| (w[0].ended, w[1].began))
            .collect();
        eprintln!(
            "robustness: lease checker: {} periods without service, {} probe writes",
            gaps.len(),
            probes.len()
        );
        check(&held, &reads, &gaps, &probes, problems);
        held.len()
    }
}

/// One holder: grant, put, keep alive for a while, abandon, again.
fn hold(api: Api, addrs: Vec<String>, stop: Arc<AtomicBool>, h: usize, seed: u64) -> Vec<Held> {
    let mut out = Vec::new();
    let mut i = h;
    let mut n = 0u64;
    let mut rng = ferrium::rng::Rng::new(seed ^ ((h as u64 + 1) * 0x9e37_79b9));
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let grant_sent = Instant::now();
        let gid = format!("grant-{seed}-{h}-{n}");
        let Some(g) = any(
            &api,
            &addrs,
            &mut i,
            "/lease/grant",
            &json!({"ttl": TTL}),
            Some(&gid),
        ) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let granted = Instant::now();
        let Some(lease) = g["id"].as_u64() else {
            continue;
        };
        let key = format!("lease/{h}/{n}");
        let pid = format!("put-{seed}-{h}-{n}");
        let put = json!({"Set": {"key": key, "value": "held", "lease": lease}});
        if any(&api, &addrs, &mut i, "/write", &put, Some(&pid)).is_none() {
            // Not known to exist: not tracked (its lease ends on its own).
            continue;
        }
        let mut held = Held {
            key,
            put_acked: Instant::now(),
            acked: vec![grant_sent],
            last_sent: grant_sent,
            renewed_by: granted,
        };
        let hold_for = Duration::from_millis(rng.range(2_000, 8_000));
        let began = Instant::now();
        while began.elapsed() < hold_for && !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            held.last_sent = sent;
            let text = json!({"id": lease}).to_string();
            i += 1;
            let addr = &addrs[i % addrs.len()];
            match api.send(
                addr,
                "POST",
                "/lease/keepalive",
                Some(&text),
                Duration::from_secs(1),
            ) {
                Ok(r) if r.status == 200 => {
                    held.acked.push(sent);
                    held.renewed_by = Instant::now();
                }
                // The lease ended (keep-alives failed for a TTL): the
                // checker decides whether that was allowed.
                Ok(r) if r.status == 404 => break,
                // It may still be applied, until the member gives up on it.
                _ => held.renewed_by = held.renewed_by.max(sent + SERVER_TIMEOUT),
            }
            std::thread::sleep(EVERY.saturating_sub(sent.elapsed()));
        }
        out.push(held);
    }
    out
}

/// The latest time a key whose last renewal took effect by `last_sent` may
/// still exist, given when the cluster could not serve (`gaps`) and when
/// writes were acknowledged (`probes`).
fn bound(last_sent: Instant, gaps: &[(Instant, Instant)], probes: &[Probe]) -> Instant {
    let slack = Duration::from_millis(1500);
    let mut deadline = last_sent + Duration::from_secs(TTL) + slack;
    let mut counted = vec![false; gaps.len()];
    loop {
        let mut moved = false;
        for (w, (start, end)) in gaps.iter().enumerate() {
            if !counted[w] && *start < deadline && *end > last_sent {
                counted[w] = true;
                deadline += end.duration_since((*start).max(last_sent)) + Duration::from_secs(1);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    // The expiry was proposed by `due`; it is committed once a write the
    // same leader took after it is (a leader change is a gap above).
    let due = deadline - slack + PROPOSED_WITHIN;
    match probes.iter().find(|p| p.sent >= due) {
        Some(p) => deadline.max(p.acked),
        None => deadline,
    }
}

fn check(
    held: &[Held],
    reads: &[Read],
    gaps: &[(Instant, Instant)],
    probes: &[Probe],
    problems: &mut Vec<String>,
) {
    let ttl = Duration::from_secs(TTL);
    for h in held {
        let guaranteed = h.acked.iter().max().map(|s| *s + ttl);
        for r in reads {
            let present = r.keys.contains(&h.key);
            // Safety: missing in a read that ended before an acknowledged
            // keep-alive's TTL had run out.
            if !present && r.began >= h.put_acked {
                if let Some(g) = guaranteed.filter(|g| r.ended < *g) {
                    problems.push(format!(
                        "lease key {} was missing in a read {:?} before its lease could end (an acknowledged keep-alive guaranteed it until {:?} later)",
                        h.key,
                        r.ended.duration_since(h.put_acked),
                        g.duration_since(r.ended)
                    ));
                    break;
                }
            }
        }
        // Liveness: gone from every read that began after its bound.
        let deadline = bound(h.renewed_by, gaps, probes);
        if let Some(r) = reads
            .iter()
            .find(|r| r.began > deadline && r.keys.contains(&h.key))
        {
            problems.push(format!(
                "lease key {} outlived its bound: still there {:?} after its last keep-alive was sent (bound {:?})",
                h.key,
                r.began.duration_since(h.last_sent),
                deadline.duration_since(h.last_sent)
            ));
        }
    }
    // A leased key nobody tracked may exist too, but a tracked one must
    // have been seen at least once, or the monitor saw nothing.
    let seen: BTreeSet<&String> = reads.iter().flat_map(|r| r.keys.iter()).collect();
    let tracked = held.iter().filter(|h| seen.contains(&h.key)).count();
    if !held.is_empty() && tracked == 0 {
        problems.push("the lease monitor never saw a tracked key".into());
    }
}

#[test]
fn the_expiry_bound_waits_for_a_slow_commit_but_not_for_a_fast_one() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let fast = [
        Probe {
            sent: at(3_500),
            acked: at(3_510),
        },
        Probe {
            sent: at(3_700),
            acked: at(3_710),
        },
    ];
    // Renewed at 0: the key may live until TTL and 1.5 s.
    assert_eq!(bound(t0, &[], &fast), at(4_500));
    // The first write sent after the expiry was due took 2 s to commit.
    let slow = [
        Probe {
            sent: at(3_500),
            acked: at(3_510),
        },
        Probe {
            sent: at(3_650),
            acked: at(5_650),
        },
    ];
    assert_eq!(bound(t0, &[], &slow), at(5_650));
    // A write already in flight when the expiry was due says nothing about
    // it (it may be ordered before it); the next one sent does. (Each
    // probe attempt gives up after 1 s, so the prober is never held up
    // longer than that.)
    let early = [
        Probe {
            sent: at(3_300),
            acked: at(4_290),
        },
        Probe {
            sent: at(4_340),
            acked: at(4_900),
        },
    ];
    assert_eq!(bound(t0, &[], &early), at(4_900));
    // A gap (a leader change) moves the deadline, and the probe looked at.
    let gap = [(at(1_000), at(2_000))];
    assert_eq!(bound(t0, &gap, &fast), at(6_500));
}
