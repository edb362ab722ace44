//! Concurrent clients that record what they did.
//!
//! Each client thread sends one request at a time to a random member and
//! records the invocation and completion times. Two workloads run mixed:
//! - registers `r/<n>`: writes of unique values, rare deletes, and reads,
//!   linearizable and `lease` ones alike; checked for linearizability;
//!   some writes are compare-and-swaps (on the value or on the mod revision
//!   the client last read), which the checker models; half of the register
//!   operations go through etcd's API instead (its JSON gateway: `Range`,
//!   `Put`, `DeleteRange`, and compare-and-swap as a `Txn`), into the same
//!   history;
//! - a growing set: every add writes a fresh key `s/<client>/<n>`; at the
//!   end every acknowledged add must be present and every add that failed
//!   definitely must be absent;
//! - counters `c/<n>`: an increment reads the counter and writes it plus
//!   one by compare-and-swap on its mod revision, with a request id; an
//!   unknown outcome is sent again with the same id until it is definite,
//!   so that at the end every counter equals its acknowledged increments.

use super::history::{Kind, Op, Outcome};
use crate::support::cluster::{Cluster, Reply, request, tls};
use ferrium::rng::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client-side deadline; the servers' own `network.request_timeout` is
/// shorter, so most slow writes come back as `outcome_unknown`.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

pub const REGISTERS: u32 = 8;

pub const COUNTERS: u32 = 2;

/// How long an increment whose outcome is unknown is sent again.
const RESOLVE_WITHIN: Duration = Duration::from_secs(30);

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
        self.send_with_id(addr, method, path, body, None, timeout)
    }

    /// [`Api::send`] with an `Idempotency-Key`.
    pub fn send_with_id(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        request_id: Option<&str>,
        timeout: Duration,
    ) -> std::io::Result<Reply> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        if let Some(id) = request_id {
            headers.push(("Idempotency-Key", id));
        }
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

/// One increment of the counter workload: `Ok` applied once, `Fail` not
/// applied, `Unknown` still unresolved after [`RESOLVE_WITHIN`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Increment {
    pub key: String,
    pub outcome: Outcome,
}

/// Everything the clients recorded.
#[derive(Default)]
pub struct Recorded {
    pub ops: Vec<Op>,
    pub adds: Vec<Add>,
    pub increments: Vec<Increment>,
    /// The value and mod revision each client last read of each register,
    /// for its compare-and-swaps.
    seen: std::collections::HashMap<String, (Option<String>, Option<u64>)>,
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
                (400 | 404 | 405 | 409 | 411 | 412 | 413, _) => Outcome::Fail,
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
                let failed = step(
                    &api, &mut rng, client, n, *node, addr, &addrs, clock, &mut mine,
                );
                if failed {
                    // A down member refuses at once; do not spin on it.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let mut out = out.lock().expect("history lock");
            out.ops.extend(mine.ops);
            out.adds.extend(mine.adds);
            out.increments.extend(mine.increments);
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
    addrs: &[(u64, String)],
    clock: Clock,
    out: &mut Recorded,
) -> bool {
    let dice = rng.below(100);
    if dice < 12 {
        let key = format!("s/{client}/{n}");
        let body = serde_json::json!({"Set": {"key": key, "value": "x"}}).to_string();
        let reply = api.send(addr, "POST", "/write", Some(&body), CLIENT_TIMEOUT);
        let outcome = classify(&reply);
        out.adds.push(Add { key, outcome });
        return outcome != Outcome::Ok;
    }
    if dice < 20 {
        let key = format!("c/{}", rng.below(COUNTERS as u64));
        let outcome = increment(api, rng, client, n, addr, addrs, &key);
        out.increments.push(Increment { key, outcome });
        return outcome != Outcome::Ok;
    }
    let key = format!("r/{}", rng.below(REGISTERS as u64));
    if rng.below(2) == 0 {
        return etcd::step(api, rng, dice, client, n, node, addr, &key, clock, out);
    }
    if dice < 60 {
        let consistency = if dice < 38 { "linearizable" } else { "lease" };
        let (op, mod_revision) = read_versioned(api, client, node, addr, &key, consistency, clock);
        let failed = op.outcome != Outcome::Ok;
        if !failed {
            out.seen.insert(key, (op.value.clone(), mod_revision));
        }
        out.ops.push(op);
        return failed;
    }
    if (63..72).contains(&dice) {
        if let Some((expect, mod_revision)) = out.seen.get(&key).cloned() {
            let op = cas(
                api,
                rng,
                client,
                n,
                node,
                addr,
                &key,
                expect,
                mod_revision,
                clock,
            );
            let failed = op.outcome != Outcome::Ok;
            out.ops.push(op);
            return failed;
        }
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
        expect: None,
    });
    outcome != Outcome::Ok
}

/// A compare-and-swap of a fresh value on what the client last read of
/// `key`: on the mod revision when it has one and the dice say so, else on
/// the value (or on absence). A comparison that fails is recorded as the
/// read it is.
#[allow(clippy::too_many_arguments)]
fn cas(
    api: &Api,
    rng: &mut Rng,
    client: u32,
    n: u64,
    node: u64,
    addr: &str,
    key: &str,
    expect: Option<String>,
    mod_revision: Option<u64>,
    clock: Clock,
) -> Op {
    let v = format!("{client}-{n}");
    let mut set = serde_json::json!({"key": key, "value": v});
    match (&expect, mod_revision) {
        (Some(_), Some(m)) if rng.below(2) == 0 => set["if_mod_revision"] = m.into(),
        (Some(x), _) => set["if_value"] = x.clone().into(),
        (None, _) => set["if_version"] = 0.into(),
    }
    let body = serde_json::json!({ "Set": set }).to_string();
    let call = clock.now();
    let reply = api.send(addr, "POST", "/write", Some(&body), CLIENT_TIMEOUT);
    let ret = clock.now();
    if let Ok(r) = &reply {
        if r.status == 412 {
            let current = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .map(|b| b["current"]["value"].as_str().map(str::to_string));
            if let Some(current) = current {
                return Op {
                    client,
                    node,
                    key: key.to_string(),
                    kind: Kind::Read,
                    value: current,
                    call,
                    ret: Some(ret),
                    outcome: Outcome::Ok,
                    expect: None,
                };
            }
        }
    }
    let outcome = classify(&reply);
    Op {
        client,
        node,
        key: key.to_string(),
        kind: Kind::Write,
        value: Some(v),
        call,
        ret: (outcome == Outcome::Ok).then_some(ret),
        outcome,
        expect: Some(expect),
    }
}

/// One increment of counter `key` (see the module docs): `Ok` when it
/// was applied, `Fail` when it was not (the counter moved on, or the
/// cluster refused), `Unknown` when no definite answer came in time.
fn increment(
    api: &Api,
    rng: &mut Rng,
    client: u32,
    n: u64,
    addr: &str,
    addrs: &[(u64, String)],
    key: &str,
) -> Outcome {
    let body = serde_json::json!({"key": key, "consistency": "linearizable"}).to_string();
    let Ok(r) = api.send(addr, "POST", "/read", Some(&body), CLIENT_TIMEOUT) else {
        return Outcome::Fail;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
        return Outcome::Fail;
    };
    if r.status != 200 {
        return Outcome::Fail;
    }
    let current: u64 = v["value"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut set = serde_json::json!({"key": key, "value": (current + 1).to_string()});
    match v["mod_revision"].as_u64() {
        Some(m) => set["if_mod_revision"] = m.into(),
        None => set["if_version"] = 0.into(),
    }
    let write = serde_json::json!({ "Set": set }).to_string();
    let id = format!("inc-{client}-{n}");
    let deadline = Instant::now() + RESOLVE_WITHIN;
    let mut to = addr.to_string();
    loop {
        let reply = api.send_with_id(
            &to,
            "POST",
            "/write",
            Some(&write),
            Some(&id),
            CLIENT_TIMEOUT,
        );
        match &reply {
            // The comparison failed, or the request was refused as it is:
            // definitely not applied.
            Ok(r) if (400..500).contains(&r.status) => return Outcome::Fail,
            _ => {}
        }
        match classify(&reply) {
            Outcome::Ok => return Outcome::Ok,
            // Refused before it was proposed: try again, same id.
            Outcome::Fail | Outcome::Unknown if Instant::now() < deadline => {
                // A client's pause before it sends the same request again.
                std::thread::sleep(Duration::from_millis(100));
                to = addrs[rng.below(addrs.len() as u64) as usize].1.clone();
            }
            Outcome::Fail => return Outcome::Fail,
            Outcome::Unknown => return Outcome::Unknown,
        }
    }
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
    read_versioned(api, client, node, addr, key, consistency, clock).0
}

/// [`read`], with the mod revision of what it read.
pub fn read_versioned(
    api: &Api,
    client: u32,
    node: u64,
    addr: &str,
    key: &str,
    consistency: &str,
    clock: Clock,
) -> (Op, Option<u64>) {
    let body = serde_json::json!({"key": key, "consistency": consistency}).to_string();
    let call = clock.now();
    let reply = api.send(addr, "POST", "/read", Some(&body), CLIENT_TIMEOUT);
    let ret = clock.now();
    let mut outcome = classify(&reply);
    let mut value = None;
    let mut mod_revision = None;
    if outcome == Outcome::Ok {
        match reply
            .as_ref()
            .ok()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        {
            Some(v) => {
                value = v["value"].as_str().map(str::to_string);
                mod_revision = v["mod_revision"].as_u64();
            }
            None => outcome = Outcome::Fail,
        }
    } else {
        // A failed read has no effect: whatever went wrong, it is dropped.
        outcome = Outcome::Fail;
    }
    let op = Op {
        client,
        node,
        key: key.to_string(),
        kind: Kind::Read,
        value,
        call,
        ret: (outcome == Outcome::Ok).then_some(ret),
        outcome,
        expect: None,
    };
    (op, mod_revision)
}

/// The register operations through etcd's API (its JSON gateway on the
/// same HTTP port), recorded in the same history as Ferrium's own.
mod etcd {
    use super::{Api, CLIENT_TIMEOUT, Clock, Recorded};
    use crate::history::{Kind, Op, Outcome};
    use crate::support::cluster::Reply;
    use ferrium::api::base64;
    use ferrium::rng::Rng;
    use serde_json::{Value, json};

    /// How an etcd gateway answer maps to an outcome: a failure is definite
    /// unless etcd's "request timed out" (or Ferrium's unknown-outcome
    /// marker) says the write may have been applied.
    fn classify(reply: &std::io::Result<Reply>) -> Outcome {
        match reply {
            Ok(r) if r.status == 200 => Outcome::Ok,
            Ok(r) => {
                let v = serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null);
                let unknown = r.header("x-ferrium-outcome") == Some("unknown")
                    || v["error"] == "etcdserver: request timed out";
                match v["code"].as_i64() {
                    Some(_) if unknown => Outcome::Unknown,
                    // UNAVAILABLE (no leader, shutting down) and every
                    // refusal of the request as it is: not applied.
                    Some(3 | 5 | 6 | 9 | 11 | 14) => Outcome::Fail,
                    _ => Outcome::Unknown,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        }
    }

    fn post(api: &Api, addr: &str, path: &str, body: Value) -> std::io::Result<Reply> {
        api.send(addr, "POST", path, Some(&body.to_string()), CLIENT_TIMEOUT)
    }

    fn text(v: &Value) -> Option<String> {
        let b = base64::decode(v.as_str()?).ok()?;
        String::from_utf8(b).ok()
    }

    /// The value and mod revision of the first key of a range answer.
    fn first(range: &Value) -> (Option<String>, Option<u64>) {
        let kv = &range["kvs"][0];
        let m = kv["mod_revision"].as_str().and_then(|m| m.parse().ok());
        (
            text(&kv["value"]).or_else(|| kv.is_object().then(String::new)),
            m,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn step(
        api: &Api,
        rng: &mut Rng,
        dice: u64,
        client: u32,
        n: u64,
        node: u64,
        addr: &str,
        key: &str,
        clock: Clock,
        out: &mut Recorded,
    ) -> bool {
        let k = base64::encode(key.as_bytes());
        let op = |kind, value, call, ret: Option<u64>, outcome, expect| Op {
            client,
            node,
            key: key.to_string(),
            kind,
            value,
            call,
            ret,
            outcome,
            expect,
        };
        let call = clock.now();
        let record = if dice < 60 {
            // A linearizable Range.
            let reply = post(api, addr, "/v3/kv/range", json!({"key": k}));
            let ret = clock.now();
            let body = reply
                .as_ref()
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| serde_json::from_str::<Value>(&r.body).ok());
            match body {
                Some(v) => {
                    let (value, m) = first(&v);
                    out.seen.insert(key.to_string(), (value.clone(), m));
                    op(Kind::Read, value, call, Some(ret), Outcome::Ok, None)
                }
                None => op(Kind::Read, None, call, None, Outcome::Fail, None),
            }
        } else if (63..72).contains(&dice) && out.seen.contains_key(key) {
            // Compare-and-swap as a Txn on what this client last read.
            let (expect, m) = out.seen[key].clone();
            let v = format!("{client}-{n}");
            let compare = match (&expect, m) {
                (Some(_), Some(m)) if rng.below(2) == 0 => {
                    json!({"target": "MOD", "key": k, "mod_revision": m.to_string(), "result": "EQUAL"})
                }
                (Some(x), _) => {
                    json!({"target": "VALUE", "key": k, "value": base64::encode(x.as_bytes()), "result": "EQUAL"})
                }
                (None, _) => {
                    json!({"target": "VERSION", "key": k, "version": "0", "result": "EQUAL"})
                }
            };
            let txn = json!({
                "compare": [compare],
                "success": [{"request_put": {"key": k, "value": base64::encode(v.as_bytes())}}],
                "failure": [{"request_range": {"key": k}}],
            });
            let reply = post(api, addr, "/v3/kv/txn", txn);
            let ret = clock.now();
            let outcome = classify(&reply);
            let answer = reply
                .as_ref()
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| serde_json::from_str::<Value>(&r.body).ok());
            match answer {
                // The comparison failed: a read of what is there.
                Some(a) if a["succeeded"] != true => {
                    let (current, _) = first(&a["responses"][0]["response_range"]);
                    op(Kind::Read, current, call, Some(ret), Outcome::Ok, None)
                }
                _ => op(
                    Kind::Write,
                    Some(v),
                    call,
                    (outcome == Outcome::Ok).then_some(ret),
                    outcome,
                    Some(expect),
                ),
            }
        } else {
            let (value, reply) = if dice < 63 {
                (
                    None,
                    post(api, addr, "/v3/kv/deleterange", json!({"key": k})),
                )
            } else {
                let v = format!("{client}-{n}");
                let b = json!({"key": k, "value": base64::encode(v.as_bytes())});
                (Some(v), post(api, addr, "/v3/kv/put", b))
            };
            let outcome = classify(&reply);
            let ret = (outcome == Outcome::Ok).then(|| clock.now());
            op(Kind::Write, value, call, ret, outcome, None)
        };
        let failed = record.outcome != Outcome::Ok;
        out.ops.push(record);
        failed
    }
}
