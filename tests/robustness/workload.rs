//! Concurrent clients that record what they did.
//!
//! Each client thread sends one request at a time to a random member and
//! records the invocation and completion times. Two workloads run mixed:
//! - registers `r/<n>`: writes of unique values, rare deletes, and reads,
//!   linearizable and `lease` ones alike; checked for linearizability;
//!   some writes are compare-and-swaps (on the value or on the mod revision
//!   the client last read), which the checker models; half of the register
//!   operations go through etcd's API instead (`Range`, `Put`,
//!   `DeleteRange`, and compare-and-swap as a `Txn`), into the same
//!   history: half of those through its JSON gateway on the HTTP port, half
//!   through its gRPC service `etcdserverpb.KV` on the gRPC port (each
//!   client thread with its own tokio runtime and one channel per member;
//!   every request's raw outcome is recorded, nothing is retried);
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
use std::collections::BTreeMap;
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

/// The API a register operation went through.
#[derive(Clone, Copy)]
pub enum Via {
    /// Ferrium's own (`/read`, `/write`).
    Rest,
    /// etcd's JSON gateway (`/v3/kv/...`).
    Gateway,
    /// etcd's gRPC service `etcdserverpb.KV`.
    Grpc,
}

/// How many operations went through one API, how many of them succeeded
/// and how many have an unknown outcome.
#[derive(Clone, Copy, Default)]
pub struct Count {
    pub ops: usize,
    pub ok: usize,
    pub unknown: usize,
}

impl Count {
    pub fn add(&mut self, other: Count) {
        self.ops += other.ops;
        self.ok += other.ok;
        self.unknown += other.unknown;
    }
}

/// The register operations of a run by the API they went through.
#[derive(Clone, Copy, Default)]
pub struct ByApi {
    pub rest: Count,
    pub gateway: Count,
    pub grpc: Count,
}

impl ByApi {
    fn record(&mut self, via: Via, outcome: Outcome) {
        let count = match via {
            Via::Rest => &mut self.rest,
            Via::Gateway => &mut self.gateway,
            Via::Grpc => &mut self.grpc,
        };
        count.ops += 1;
        count.ok += usize::from(outcome == Outcome::Ok);
        count.unknown += usize::from(outcome == Outcome::Unknown);
    }

    pub fn add(&mut self, other: ByApi) {
        self.rest.add(other.rest);
        self.gateway.add(other.gateway);
        self.grpc.add(other.grpc);
    }
}

/// Everything the clients recorded.
#[derive(Default)]
pub struct Recorded {
    pub ops: Vec<Op>,
    pub adds: Vec<Add>,
    pub increments: Vec<Increment>,
    /// The register operations in `ops` by API.
    pub by_api: ByApi,
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

/// Runs `clients` threads against `addrs` (id, HTTP address; `grpc_addrs`
/// has the same members' gRPC addresses) until `stop`.
pub fn run(
    api: Api,
    seed: u64,
    clients: u32,
    addrs: Vec<(u64, String)>,
    grpc_addrs: BTreeMap<u64, String>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Recorded {
    let out = Arc::new(Mutex::new(Recorded::default()));
    let mut threads = Vec::new();
    for client in 0..clients {
        let addrs = addrs.clone();
        let grpc_addrs = grpc_addrs.clone();
        let api = api.clone();
        let stop = stop.clone();
        let out = out.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng =
                Rng::new(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)));
            let mut grpc = grpc::Grpc::new(&api, grpc_addrs);
            let mut mine = Recorded::default();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let (node, addr) = &addrs[rng.below(addrs.len() as u64) as usize];
                let failed = step(
                    &api, &mut grpc, &mut rng, client, n, *node, addr, &addrs, clock, &mut mine,
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
            out.by_api.add(mine.by_api);
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
    grpc: &mut grpc::Grpc,
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
    let via = match rng.below(4) {
        0 => Via::Gateway,
        1 => Via::Grpc,
        _ => Via::Rest,
    };
    // Every branch below records exactly one register operation.
    let failed = match via {
        Via::Gateway => etcd::step(api, rng, dice, client, n, node, addr, &key, clock, out),
        Via::Grpc => grpc::step(grpc, rng, dice, client, n, node, &key, clock, out),
        Via::Rest => register_step(api, rng, dice, client, n, node, addr, key, clock, out),
    };
    let outcome = out.ops.last().map_or(Outcome::Fail, |o| o.outcome);
    out.by_api.record(via, outcome);
    failed
}

/// One register operation through Ferrium's own API: a read, a
/// compare-and-swap, a write or a delete.
#[allow(clippy::too_many_arguments)]
fn register_step(
    api: &Api,
    rng: &mut Rng,
    dice: u64,
    client: u32,
    n: u64,
    node: u64,
    addr: &str,
    key: String,
    clock: Clock,
    out: &mut Recorded,
) -> bool {
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

/// The register operations through etcd's gRPC API (`etcdserverpb.KV` on
/// each member's gRPC port, with the library's own tonic stubs), recorded
/// in the same history: the same operations as [`etcd`], and each
/// request's raw outcome, with nothing retried.
mod grpc {
    use super::{Api, CLIENT_TIMEOUT, Clock, Recorded};
    use crate::history::{Kind, Op, Outcome};
    use ferrium::api::proto::etcd::etcdserverpb as epb;
    use ferrium::rng::Rng;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;
    use std::time::Duration;
    use tonic::codegen::http::Uri;
    use tonic::metadata::{AsciiMetadataValue, MetadataValue};
    use tonic::transport::{Channel, Endpoint};
    use tonic::{Code, Status};

    type KvClient = epb::kv_client::KvClient<Channel>;

    /// How long a channel may take to open its connection (TCP, and TLS
    /// when the cluster speaks it): well within [`CLIENT_TIMEOUT`], so that
    /// a member that cannot take a connection (paused mid-handshake) is a
    /// definite failure rather than the client's timeout.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

    /// One client thread's side of etcd's gRPC API: its own current-thread
    /// runtime and one channel per member, made when first needed and made
    /// again after a transport failure.
    pub struct Grpc {
        runtime: tokio::runtime::Runtime,
        /// Member id -> gRPC address.
        addrs: BTreeMap<u64, String>,
        /// The harness's TLS client settings with ALPN `h2`, for a cluster
        /// that speaks TLS (its gRPC listener serves only `h2`).
        tls: Option<Arc<rustls::ClientConfig>>,
        /// `Bearer <token>`, sent as `authorization` metadata.
        authorization: Option<AsciiMetadataValue>,
        channels: HashMap<u64, Channel>,
    }

    impl Grpc {
        /// The gRPC side of a client of `api`'s cluster, whose members
        /// serve gRPC at `addrs`.
        pub fn new(api: &Api, addrs: BTreeMap<u64, String>) -> Grpc {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for a client thread");
            let tls = api.tls.as_ref().map(|config| {
                let mut config = (**config).clone();
                config.alpn_protocols = vec![b"h2".to_vec()];
                Arc::new(config)
            });
            let authorization = api.token.as_ref().map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .expect("the harness's token is valid metadata")
            });
            Grpc {
                runtime,
                addrs,
                tls,
                authorization,
                channels: HashMap::new(),
            }
        }

        /// The channel to member `node`, made if there is none: lazily, so
        /// that a connection that cannot be made fails the first request
        /// sent on it, before that request is written.
        fn channel(&mut self, node: u64) -> Channel {
            if let Some(c) = self.channels.get(&node) {
                return c.clone();
            }
            let addr = self.addrs[&node].clone();
            let connector = Connector {
                addr: addr.clone(),
                tls: self.tls.clone(),
            };
            // The channel's worker task is spawned on this runtime.
            let _in_runtime = self.runtime.enter();
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .expect("a member's gRPC address makes a URI")
                .connect_with_connector_lazy(connector);
            self.channels.insert(node, channel.clone());
            channel
        }

        /// Sends one request to member `node` with a deadline of
        /// [`CLIENT_TIMEOUT`] and waits for its answer; a failure is the
        /// outcome to record (see [`classify`]). After a failure the server
        /// did not answer, the channel is dropped and the next request to
        /// `node` makes a new one.
        fn call<M, R, F>(
            &mut self,
            node: u64,
            message: M,
            send: impl FnOnce(KvClient, tonic::Request<M>) -> F,
        ) -> Result<R, Outcome>
        where
            F: Future<Output = Result<tonic::Response<R>, Status>>,
        {
            let client = KvClient::new(self.channel(node));
            let mut request = tonic::Request::new(message);
            // `grpc-timeout`: the server answers DEADLINE_EXCEEDED just
            // before it passes; the client's own timer covers a server that
            // cannot answer at all (paused, cut off).
            request.set_timeout(CLIENT_TIMEOUT);
            if let Some(a) = &self.authorization {
                request.metadata_mut().insert("authorization", a.clone());
            }
            let answer = self.runtime.block_on(async {
                tokio::time::timeout(CLIENT_TIMEOUT, send(client, request)).await
            });
            let (outcome, answered) = match answer {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) => (classify(&status), from_server(&status)),
                // Sent, and no answer in time: it may still be applied.
                Err(_) => (Outcome::Unknown, false),
            };
            if !answered {
                self.channels.remove(&node);
            }
            Err(outcome)
        }
    }

    /// A channel's connection could not be made (TCP connect or TLS
    /// handshake failed or took over [`CONNECT_TIMEOUT`]): the request
    /// waiting for it was never written.
    #[derive(Debug)]
    struct NotConnected(std::io::Error);

    impl std::fmt::Display for NotConnected {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "no connection: {}", self.0)
        }
    }

    impl std::error::Error for NotConnected {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A connection's byte stream, plain or TLS.
    trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

    /// Opens a channel's connection to one member, failing with
    /// [`NotConnected`].
    #[derive(Clone)]
    struct Connector {
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    }

    impl Connector {
        async fn open(self) -> std::io::Result<Box<dyn Io>> {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = self.tls else {
                return Ok(Box::new(tcp));
            };
            let ip = self
                .addr
                .parse::<std::net::SocketAddr>()
                .map_err(std::io::Error::other)?
                .ip();
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(Box::new(tls))
        }
    }

    impl tonic::codegen::Service<Uri> for Connector {
        type Response = hyper_util::rt::TokioIo<Box<dyn Io>>;
        type Error = NotConnected;
        type Future = tonic::codegen::BoxFuture<Self::Response, NotConnected>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), NotConnected>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let open = self.clone().open();
            Box::pin(async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
                    Ok(Ok(io)) => Ok(hyper_util::rt::TokioIo::new(io)),
                    Ok(Err(e)) => Err(NotConnected(e)),
                    Err(_) => Err(NotConnected(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the connection was not made in time",
                    ))),
                }
            })
        }
    }

    /// Whether `status` is the server's answer: tonic parses it from the
    /// response's `grpc-status` with no error source, and keeps the
    /// response headers (the server's `content-type: application/grpc`)
    /// as its metadata. A status tonic makes of a transport error (reset
    /// or closed connection, keep-alive timeout, HTTP/2 error, no
    /// connection) carries that error as its source.
    fn from_server(status: &Status) -> bool {
        std::error::Error::source(status).is_none()
            && status
                .metadata()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"))
    }

    /// Whether the call failed because its connection could not be made.
    fn never_sent(status: &Status) -> bool {
        let mut cause = std::error::Error::source(status);
        while let Some(e) = cause {
            if e.is::<NotConnected>() {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// How a failed call maps to an outcome, as the gateway's answers do
    /// in [`super::etcd`] (the gateway calls the same handlers, so the
    /// server's codes are the same):
    /// - no connection could be made ([`never_sent`]): the request was
    ///   never written, so it was not applied;
    /// - a status the client made of a transport error once the request
    ///   may have gone out (not [`from_server`]) says nothing of what the
    ///   server did: unknown;
    /// - the server's etcd text "request timed out", or Ferrium's
    ///   `x-ferrium-outcome: unknown` metadata: a write that may or may not
    ///   have been applied (`OutcomeUnknown` in `src/api/etcd/mod.rs`
    ///   `status` answers UNAVAILABLE with both);
    /// - DEADLINE_EXCEEDED: the deadline passed in the server's `Edge`
    ///   (`src/api/grpc/edge.rs`) with the write maybe under way: unknown;
    /// - any other UNAVAILABLE: refused before anything was proposed (no
    ///   leader, a leader without its quorum lease, the leader unreachable
    ///   before the request was sent or refusing it unread, shutting down:
    ///   `Node::write_error`, `forward_failure` and `leader_refusal` in
    ///   `src/node.rs` make an unknown outcome `OutcomeUnknown` instead);
    /// - INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
    ///   OUT_OF_RANGE: the request refused as it is, before it was
    ///   proposed or as an apply error that changes nothing;
    /// - anything else (INTERNAL, RESOURCE_EXHAUSTED, UNAUTHENTICATED,
    ///   ...): unknown, as the gateway's classification takes it.
    fn classify(status: &Status) -> Outcome {
        if never_sent(status) {
            return Outcome::Fail;
        }
        if !from_server(status) {
            return Outcome::Unknown;
        }
        let unknown = status
            .metadata()
            .get("x-ferrium-outcome")
            .is_some_and(|v| v == "unknown")
            || status.message() == "etcdserver: request timed out";
        match status.code() {
            _ if unknown => Outcome::Unknown,
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unavailable => Outcome::Fail,
            _ => Outcome::Unknown,
        }
    }

    /// The value and mod revision of the first key of a range answer.
    fn first(range: &epb::RangeResponse) -> (Option<String>, Option<u64>) {
        match range.kvs.first() {
            Some(kv) => (
                Some(String::from_utf8_lossy(&kv.value).into_owned()),
                u64::try_from(kv.mod_revision).ok(),
            ),
            None => (None, None),
        }
    }

    /// One register operation on `key` through member `node`, as
    /// [`super::etcd::step`] does it through the gateway.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        grpc: &mut Grpc,
        rng: &mut Rng,
        dice: u64,
        client: u32,
        n: u64,
        node: u64,
        key: &str,
        clock: Clock,
        out: &mut Recorded,
    ) -> bool {
        let k = key.as_bytes().to_vec();
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
            let range = epb::RangeRequest {
                key: k,
                ..Default::default()
            };
            let reply = grpc.call(node, range, |mut c, r| async move { c.range(r).await });
            let ret = clock.now();
            match reply {
                Ok(r) => {
                    let (value, m) = first(&r);
                    out.seen.insert(key.to_string(), (value.clone(), m));
                    op(Kind::Read, value, call, Some(ret), Outcome::Ok, None)
                }
                // A failed read has no effect.
                Err(_) => op(Kind::Read, None, call, None, Outcome::Fail, None),
            }
        } else if (63..72).contains(&dice) && out.seen.contains_key(key) {
            // Compare-and-swap as a Txn on what this client last read.
            use epb::compare::{CompareResult, CompareTarget, TargetUnion};
            let (expect, m) = out.seen[key].clone();
            let v = format!("{client}-{n}");
            let (target, operand) = match (&expect, m) {
                (Some(_), Some(m)) if rng.below(2) == 0 => (
                    CompareTarget::Mod,
                    TargetUnion::ModRevision(i64::try_from(m).unwrap_or(i64::MAX)),
                ),
                (Some(x), _) => (
                    CompareTarget::Value,
                    TargetUnion::Value(x.as_bytes().to_vec()),
                ),
                (None, _) => (CompareTarget::Version, TargetUnion::Version(0)),
            };
            let request = |r| epb::RequestOp { request: Some(r) };
            let txn = epb::TxnRequest {
                compare: vec![epb::Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: k.clone(),
                    target_union: Some(operand),
                    ..Default::default()
                }],
                success: vec![request(epb::request_op::Request::RequestPut(
                    epb::PutRequest {
                        key: k.clone(),
                        value: v.clone().into_bytes(),
                        ..Default::default()
                    },
                ))],
                failure: vec![request(epb::request_op::Request::RequestRange(
                    epb::RangeRequest {
                        key: k,
                        ..Default::default()
                    },
                ))],
            };
            let reply = grpc.call(node, txn, |mut c, r| async move { c.txn(r).await });
            let ret = clock.now();
            match reply {
                // The comparison failed: a read of what is there.
                Ok(a) if !a.succeeded => {
                    let current = match a.responses.first().and_then(|r| r.response.as_ref()) {
                        Some(epb::response_op::Response::ResponseRange(r)) => first(r).0,
                        _ => None,
                    };
                    op(Kind::Read, current, call, Some(ret), Outcome::Ok, None)
                }
                Ok(_) => op(
                    Kind::Write,
                    Some(v),
                    call,
                    Some(ret),
                    Outcome::Ok,
                    Some(expect),
                ),
                Err(outcome) => op(Kind::Write, Some(v), call, None, outcome, Some(expect)),
            }
        } else {
            let (value, reply) = if dice < 63 {
                let delete = epb::DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                };
                let reply = grpc.call(
                    node,
                    delete,
                    |mut c, r| async move { c.delete_range(r).await },
                );
                (None, reply.map(drop))
            } else {
                let v = format!("{client}-{n}");
                let put = epb::PutRequest {
                    key: k,
                    value: v.clone().into_bytes(),
                    ..Default::default()
                };
                let reply = grpc.call(node, put, |mut c, r| async move { c.put(r).await });
                (Some(v), reply.map(drop))
            };
            let outcome = reply.err().unwrap_or(Outcome::Ok);
            let ret = (outcome == Outcome::Ok).then(|| clock.now());
            op(Kind::Write, value, call, ret, outcome, None)
        };
        let failed = record.outcome != Outcome::Ok;
        out.ops.push(record);
        failed
    }

    /// The premises of [`classify`] hold for this client: the server's
    /// answers are told from the client's own statuses, a request to a
    /// member that is down fails before it is sent, and one to a member
    /// that takes the connection but does not answer (paused) is unknown.
    #[test]
    fn grpc_outcomes_follow_what_the_server_said() {
        use crate::support::cluster::Cluster;
        let mut c = Cluster::start_proxied("robust-grpc", 3, crate::CONFIG);
        let leader = c.wait_leader(Duration::from_secs(30));
        let addrs = c
            .ids()
            .into_iter()
            .map(|id| (id, c.node(id).grpc_addr()))
            .collect();
        let mut g = Grpc::new(&Api::of(&c), addrs);
        let put = |v: &str| epb::PutRequest {
            key: b"r/probe".to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        };
        let reply = g.call(leader, put("1"), |mut c, r| async move { c.put(r).await });
        assert!(reply.is_ok(), "a put through the leader failed");
        let range = epb::RangeRequest {
            key: b"r/probe".to_vec(),
            ..Default::default()
        };
        let read = g.call(leader, range, |mut c, r| async move { c.range(r).await });
        assert_eq!(read.ok().map(|r| first(&r).0), Some(Some("1".to_string())));

        // A refusal by the server (no key): the server's, and definite.
        let channel = g.channel(leader);
        let refused = g.runtime.block_on(async {
            KvClient::new(channel)
                .range(epb::RangeRequest::default())
                .await
        });
        let status = refused.expect_err("a range without a key is refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            from_server(&status),
            "the refusal was not told as the server's"
        );
        assert_eq!(classify(&status), Outcome::Fail);

        // A member that is down: the request was never sent.
        let down = c
            .ids()
            .into_iter()
            .find(|i| *i != leader)
            .expect("a follower");
        c.kill(down);
        let channel = g.channel(down);
        let status = g
            .runtime
            .block_on(async { KvClient::new(channel).put(put("2")).await })
            .expect_err("a put through a killed member");
        assert!(
            never_sent(&status),
            "a refused connection was not recognised"
        );
        assert!(!from_server(&status));
        assert_eq!(classify(&status), Outcome::Fail);

        // A member that takes the connection and never answers: the write
        // may be applied when it resumes.
        let paused = c
            .ids()
            .into_iter()
            .find(|i| *i != leader && *i != down)
            .expect("another follower");
        c.pause(paused);
        let reply = g.call(paused, put("3"), |mut c, r| async move { c.put(r).await });
        c.resume(paused);
        assert_eq!(reply.err(), Some(Outcome::Unknown));
    }
}
