//! Concurrent clients that record what they did.
//!
//! Each client thread sends one request at a time to a random member and
//! records the invocation and completion times. Two workloads run mixed:
//! - registers `r/<n>`: writes of unique values, rare deletes, and reads,
//!   linearizable and `lease` ones alike; checked for linearizability;
//! - a growing set: every add writes a fresh key `s/<client>/<n>`; at the
//!   end every acknowledged add must be present and every add that failed
//!   definitely must be absent.

use super::history::{Kind, Op, Outcome};
use super::rng::Rng;
use crate::common::{Cluster, Reply, request, tls};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client-side deadline; the servers' own `network.request_timeout` is
/// shorter, so most slow writes come back as `outcome_unknown`.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

pub const REGISTERS: u32 = 8;

/// How clients reach a cluster's API: plain HTTP, with the harness's
/// bearer token when it has one, over TLS with its client certificate when
/// the cluster speaks TLS.
#[derive(Clone, Default)]
pub struct Api {
    pub token: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Api {
    /// What the harness of `c` uses for its own requests.
    pub fn of(c: &Cluster) -> Api {
        Api {
            token: c.token.clone(),
            tls: c.tls.clone(),
        }
    }

    /// One request on a fresh connection.
    pub fn send(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        match &self.tls {
            Some(config) => {
                tls::request(addr, config.clone(), method, path, body, &headers, timeout)
            }
            None => request(addr, method, path, body, &headers, timeout),
        }
    }
}

/// One add of the set workload.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Add {
    pub key: String,
    pub outcome: Outcome,
}

/// Everything the clients recorded.
#[derive(Default)]
pub struct Recorded {
    pub ops: Vec<Op>,
    pub adds: Vec<Add>,
}

/// The shared clock of a run.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// How a reply maps to an outcome.
pub fn classify(reply: &std::io::Result<Reply>) -> Outcome {
    match reply {
        Ok(r) if r.status == 200 => Outcome::Ok,
        Ok(r) => {
            let code = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            match (r.status, code.as_deref()) {
                (503, Some("unavailable")) => Outcome::Fail,
                (400 | 404 | 405 | 409 | 411 | 413, _) => Outcome::Fail,
                _ => Outcome::Unknown,
            }
        }
        // Refused before a byte was sent: definitely not applied.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Fail,
        Err(_) => Outcome::Unknown,
    }
}

/// Runs `clients` threads against `addrs` (id, address) until `stop`.
pub fn run(
    api: Api,
    seed: u64,
    clients: u32,
    addrs: Vec<(u64, String)>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Recorded {
    let out = Arc::new(Mutex::new(Recorded::default()));
    let mut threads = Vec::new();
    for client in 0..clients {
        let addrs = addrs.clone();
        let api = api.clone();
        let stop = stop.clone();
        let out = out.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng =
                Rng::new(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)));
            let mut mine = Recorded::default();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let (node, addr) = &addrs[rng.below(addrs.len() as u64) as usize];
                let failed = step(&api, &mut rng, client, n, *node, addr, clock, &mut mine);
                if failed {
                    // A down member refuses at once; do not spin on it.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let mut out = out.lock().expect("history lock");
            out.ops.extend(mine.ops);
            out.adds.extend(mine.adds);
        }));
    }
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let mut rec = std::mem::take(&mut *out.lock().expect("history lock"));
    rec.ops.sort_by_key(|o| o.call);
    rec
}

#[allow(clippy::too_many_arguments)]
fn step(
    api: &Api,
    rng: &mut Rng,
    client: u32,
    n: u64,
    node: u64,
    addr: &str,
    clock: Clock,
    out: &mut Recorded,
) -> bool {
    let dice = rng.below(100);
    if dice < 15 {
        let key = format!("s/{client}/{n}");
        let body = serde_json::json!({"Set": {"key": key, "value": "x"}}).to_string();
        let reply = api.send(addr, "POST", "/write", Some(&body), CLIENT_TIMEOUT);
        let outcome = classify(&reply);
        out.adds.push(Add { key, outcome });
        return outcome != Outcome::Ok;
    }
    let key = format!("r/{}", rng.below(REGISTERS as u64));
    if dice < 60 {
        let consistency = if dice < 38 { "linearizable" } else { "lease" };
        let op = read(api, client, node, addr, &key, consistency, clock);
        let failed = op.outcome != Outcome::Ok;
        out.ops.push(op);
        return failed;
    }
    let (value, body) = if dice < 63 {
        (None, serde_json::json!({"Delete": {"key": key}}))
    } else {
        let v = format!("{client}-{n}");
        let body = serde_json::json!({"Set": {"key": key, "value": v}});
        (Some(v), body)
    };
    let call = clock.now();
    let reply = api.send(
        addr,
        "POST",
        "/write",
        Some(&body.to_string()),
        CLIENT_TIMEOUT,
    );
    let outcome = classify(&reply);
    let ret = (outcome == Outcome::Ok).then(|| clock.now());
    out.ops.push(Op {
        client,
        node,
        key,
        kind: Kind::Write,
        value,
        call,
        ret,
        outcome,
    });
    outcome != Outcome::Ok
}

/// A read at `consistency` (`linearizable` or `lease`: both must be
/// linearizable), recorded.
pub fn read(
    api: &Api,
    client: u32,
    node: u64,
    addr: &str,
    key: &str,
    consistency: &str,
    clock: Clock,
) -> Op {
    let body = serde_json::json!({"key": key, "consistency": consistency}).to_string();
    let call = clock.now();
    let reply = api.send(addr, "POST", "/read", Some(&body), CLIENT_TIMEOUT);
    let ret = clock.now();
    let mut outcome = classify(&reply);
    let mut value = None;
    if outcome == Outcome::Ok {
        match reply
            .as_ref()
            .ok()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        {
            Some(v) => value = v["value"].as_str().map(str::to_string),
            None => outcome = Outcome::Fail,
        }
    } else {
        // A failed read has no effect: whatever went wrong, it is dropped.
        outcome = Outcome::Fail;
    }
    Op {
        client,
        node,
        key: key.to_string(),
        kind: Kind::Read,
        value,
        call,
        ret: (outcome == Outcome::Ok).then_some(ret),
        outcome,
    }
}
