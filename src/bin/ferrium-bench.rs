//! `ferrium-bench`: a load generator for a Ferrium cluster, in the spirit of
//! etcd's `benchmark` tool.
//!
//! Workloads: `put` (one `Set` per request), `get` (a read at a chosen
//! consistency), `mixed` (reads and puts in a given ratio), `batch`
//! (`BatchSet` of N keys per request) and `cas` (compare-and-swap: each
//! connection task owns a key and sets it on the mod revision its last
//! write got, as a lock holder or a config updater does). With
//! `--request-ids` every write carries a fresh request id
//! (`Idempotency-Key`, or the `idempotency-key` metadata entry) and a write
//! whose outcome is unknown is sent again with the same id. Requests go over the REST API with
//! Ferrium's own HTTP/1.1 client, or over gRPC.
//!
//! With `--api etcd` (gRPC only) the same workloads speak etcd's v3 API
//! instead of Ferrium's `KvService`: `Put`, `Range` (`serializable` for
//! stale reads), a `Txn` comparing the mod revision for `cas` and a `Txn`
//! of puts for `batch`, so that one client drives Ferrium's etcd API and
//! an etcd server alike; `watch` and `lease` then use etcd's `Watch`, `Put`
//! and `Lease` services.
//!
//! Each connection is driven by its own task (and, for gRPC, by `--concurrency`
//! tasks sharing it). In closed-loop mode a task sends its next request as soon
//! as the previous one is answered. With `--rate` requests are scheduled at
//! fixed intervals and latency is measured from the scheduled start, so a
//! stalled server shows up in the percentiles instead of being hidden by the
//! client waiting (coordinated omission).
//!
//! Latencies are kept exactly (one `u32` of microseconds per request) and
//! sorted at the end: a few megabytes for millions of requests.

#[path = "ferrium-bench/lease.rs"]
mod lease;
#[path = "ferrium-bench/watch.rs"]
mod watch;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrium::api::proto::etcd::etcdserverpb as etcd;
use ferrium::api::proto::kv as pb;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{BatchSetRequest, GetRequest, KeyValue, SetRequest};
use ferrium::client::{ClientOptions, Endpoint, GrpcClient, RestClient};
use ferrium::http::{Client, ClientConfig, ClientRequest, Method};
use ferrium::rng::Rng;
use serde::Serialize;
use tonic::transport::Channel;

const USAGE: &str = "\
Usage: ferrium-bench [OPTIONS] <put|get|mixed|batch|cas|watch|lease>

Workloads:
  put      one Set per request (etcd API: one Put)
  get      one read per request (see --consistency; etcd API: one Range
           of one key)
  mixed    reads and puts, --read-ratio of them reads
  batch    one BatchSet of --batch-size keys per request (etcd API: one Txn
           of --batch-size puts, at most 128, etcd's default --max-txn-ops;
           sequential keys only, as a Txn may not put one key twice)
  cas      compare-and-swap: each connection task sets its own key on the
           mod revision its previous write got (a Set with if_mod_revision
           over HTTP, a Txn over gRPC; its first write on version 0)
  watch    --watchers watches of single keys (over --key-space keys) on
           --streams gRPC Watch streams of the first endpoint, while --conns
           writers set those keys (at --rate writes/s overall, or as fast as
           they can) for --duration (default 10 s): events received against
           expected and delivery latency (write sent to event received);
           gRPC only (etcd API: etcd's Watch and Put)
  lease    grants --leases leases of --lease-ttl seconds over --conns
           connections, then renews them for --duration through --streams
           gRPC keep-alive streams (--concurrency in flight on each, at
           --rate keep-alives/s overall or as fast as they are answered):
           grants/s, keep-alives/s and their latency; revokes them after;
           gRPC only (etcd API: etcd's Lease service)

Options:
  --endpoints LIST      comma-separated host:port list [default: 127.0.0.1:8001]
                        (HTTP port for --protocol http, gRPC port for grpc);
                        connections are spread over them round-robin
  --leader              ask the endpoints for the leader (waiting up to 10 s
                        for one) and send everything to the leader's API
                        address (HTTP only)
  --protocol P          http | grpc [default: http]
  --api A               ferrium | etcd [default: ferrium]: which gRPC API to
                        speak; etcd: etcd's v3 KV, Watch and Lease services,
                        as served by etcd or by Ferrium's gRPC port (needs
                        --protocol grpc; --consistency linearizable or stale)
  -c, --conns N         connections [default: 16]
  --concurrency N       requests in flight per connection (gRPC only) [default: 1]
  -n, --total N         stop after N requests [default: 10000 unless --duration]
  -d, --duration SECS   stop after SECS seconds (decimals allowed)
  --rate R              at most R requests per second overall (open loop,
                        latency from the scheduled start); default closed loop
  --key-size N          key length in bytes [default: 16]
  --value-size N        value length in bytes [default: 100]
  --key-space N         number of distinct keys for uniform keys and for
                        reads [default: 100000]
  --key-dist D          sequential | uniform [default: sequential]
  --key-prefix S        prefix of every key [default: bench-]
  --consistency C       linearizable | lease | stale [default: linearizable]
                        (etcd API: stale is a serializable Range)
  --read-ratio F        fraction of reads in `mixed` [default: 0.9]
  --batch-size N        keys per BatchSet in `batch` [default: 100]
  --threads N           client runtime threads [default: number of CPUs]
  --timeout SECS        per-request timeout [default: 30]
  --seed N              seed for uniform keys, the mix and the keys of `cas`
                        [default: 1]
  --request-ids         give every write a fresh request id and send a write
                        whose outcome is unknown again with the same id
                        (up to 4 times); over gRPC the id is the
                        idempotency-key metadata entry, which Ferrium honours
                        on both APIs and etcd ignores
  --watchers N          watches in `watch` [default: 10000]
  --streams N           gRPC Watch streams they share in `watch` [default: 200]
  --leases N            leases in `lease` [default: 10000]
  --lease-ttl SECS      their TTL in `lease` [default: 60]
  --etcd                the same as --api etcd
  --json                print the result as one JSON object
  -h, --help            print this help

Examples:
  ferrium-bench --leader -c 64 -d 10 put
  ferrium-bench -c 64 -d 10 --consistency stale get
  ferrium-bench --leader -c 8 -n 1000 --batch-size 1000 batch   # load 1M keys
  ferrium-bench --protocol grpc --endpoints 127.0.0.1:9001 --key-space 1000 \\
      --rate 1000 -c 16 -d 30 watch                              # 10,000 watchers
  ferrium-bench --protocol grpc --endpoints 127.0.0.1:9001 --streams 16 \\
      --concurrency 64 -d 10 lease                               # keep-alives/s
  ferrium-bench --protocol grpc --api etcd --endpoints 127.0.0.1:2379 \\
      -c 16 --concurrency 4 -d 10 put                            # etcd's Put, 64 clients
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Workload {
    Put,
    Get,
    Mixed,
    Batch,
    Cas,
    Watch,
    Lease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Http,
    Grpc,
}

/// Which gRPC API the requests speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Api {
    /// Ferrium's own `KvService`.
    Ferrium,
    /// etcd's v3 API (`etcdserverpb`), of an etcd server or of Ferrium.
    Etcd,
}

impl Api {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Api::Ferrium => "ferrium",
            Api::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum KeyDist {
    Sequential,
    Uniform,
}

#[derive(Clone, Debug)]
struct Options {
    workload: Workload,
    protocol: Protocol,
    endpoints: Vec<Endpoint>,
    leader: bool,
    conns: usize,
    concurrency: usize,
    total: Option<u64>,
    duration: Option<Duration>,
    rate: Option<f64>,
    key_size: usize,
    value_size: usize,
    key_space: u64,
    key_dist: KeyDist,
    key_prefix: String,
    consistency: String,
    read_ratio: f64,
    batch_size: usize,
    threads: usize,
    timeout: Duration,
    seed: u64,
    json: bool,
    request_ids: bool,
    watchers: usize,
    streams: usize,
    api: Api,
    leases: usize,
    lease_ttl: u64,
}

fn parse_args() -> Result<Option<Options>, String> {
    parse(lexopt::Parser::from_env())
}

/// The options of a command line (`None`: print the help).
fn parse(mut parser: lexopt::Parser) -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut o = Options {
        workload: Workload::Put,
        protocol: Protocol::Http,
        endpoints: Endpoint::parse_list("127.0.0.1:8001").map_err(|e| e.to_string())?,
        leader: false,
        conns: 16,
        concurrency: 1,
        total: None,
        duration: None,
        rate: None,
        key_size: 16,
        value_size: 100,
        key_space: 100_000,
        key_dist: KeyDist::Sequential,
        key_prefix: "bench-".to_string(),
        consistency: "linearizable".to_string(),
        read_ratio: 0.9,
        batch_size: 100,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        timeout: Duration::from_secs(30),
        seed: 1,
        json: false,
        request_ids: false,
        watchers: 10_000,
        streams: 200,
        api: Api::Ferrium,
        leases: 10_000,
        lease_ttl: 60,
    };
    let mut workload = None;
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("endpoints") => {
                let v = parser.value().map_err(err)?.string().map_err(err)?;
                o.endpoints = Endpoint::parse_list(&v).map_err(|e| e.to_string())?;
            }
            Long("leader") => o.leader = true,
            Long("protocol") => {
                o.protocol = match parser.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "http" => Protocol::Http,
                    "grpc" => Protocol::Grpc,
                    p => return Err(format!("--protocol {p:?}: expected http or grpc")),
                }
            }
            Short('c') | Long("conns") => {
                o.conns = parser.value().map_err(err)?.parse().map_err(err)?
            }
            Long("concurrency") => {
                o.concurrency = parser.value().map_err(err)?.parse().map_err(err)?
            }
            Short('n') | Long("total") => {
                o.total = Some(parser.value().map_err(err)?.parse().map_err(err)?)
            }
            Short('d') | Long("duration") => {
                let s: f64 = parser.value().map_err(err)?.parse().map_err(err)?;
                o.duration = Some(seconds(s, "--duration")?);
            }
            Long("rate") => o.rate = Some(parser.value().map_err(err)?.parse().map_err(err)?),
            Long("key-size") => o.key_size = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("value-size") => {
                o.value_size = parser.value().map_err(err)?.parse().map_err(err)?
            }
            Long("key-space") => o.key_space = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("key-dist") => {
                o.key_dist = match parser.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "sequential" => KeyDist::Sequential,
                    "uniform" => KeyDist::Uniform,
                    d => return Err(format!("--key-dist {d:?}: expected sequential or uniform")),
                }
            }
            Long("key-prefix") => {
                o.key_prefix = parser.value().map_err(err)?.string().map_err(err)?
            }
            Long("consistency") => {
                let c = parser.value().map_err(err)?.string().map_err(err)?;
                if !matches!(c.as_str(), "linearizable" | "lease" | "stale") {
                    return Err(format!(
                        "--consistency {c:?}: expected linearizable, lease or stale"
                    ));
                }
                o.consistency = c;
            }
            Long("read-ratio") => {
                o.read_ratio = parser.value().map_err(err)?.parse().map_err(err)?
            }
            Long("batch-size") => {
                o.batch_size = parser.value().map_err(err)?.parse().map_err(err)?
            }
            Long("threads") => o.threads = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("timeout") => {
                let s: f64 = parser.value().map_err(err)?.parse().map_err(err)?;
                o.timeout = seconds(s, "--timeout")?;
            }
            Long("seed") => o.seed = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("json") => o.json = true,
            Long("request-ids") => o.request_ids = true,
            Long("leases") => o.leases = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("lease-ttl") => o.lease_ttl = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("watchers") => o.watchers = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("streams") => o.streams = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("api") => {
                o.api = match parser.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "ferrium" => Api::Ferrium,
                    "etcd" => Api::Etcd,
                    a => return Err(format!("--api {a:?}: expected ferrium or etcd")),
                }
            }
            Long("etcd") => o.api = Api::Etcd,
            Value(v) if workload.is_none() => {
                workload = Some(match v.string().map_err(err)?.as_str() {
                    "put" => Workload::Put,
                    "get" => Workload::Get,
                    "mixed" => Workload::Mixed,
                    "batch" => Workload::Batch,
                    "cas" => Workload::Cas,
                    "watch" => Workload::Watch,
                    "lease" => Workload::Lease,
                    w => {
                        return Err(format!(
                            "unknown workload {w:?}: expected put, get, mixed, batch, cas, watch or lease"
                        ));
                    }
                });
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    o.workload = workload.ok_or("missing workload: put, get, mixed, batch, cas, watch or lease")?;
    validate(&mut o)?;
    Ok(Some(o))
}

fn seconds(s: f64, flag: &str) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("{flag} must be a positive number of seconds"))
    }
}

fn validate(o: &mut Options) -> Result<(), String> {
    if o.conns == 0 || o.concurrency == 0 || o.threads == 0 || o.batch_size == 0 || o.key_space == 0
    {
        return Err(
            "--conns, --concurrency, --threads, --batch-size and --key-space must be at least 1"
                .into(),
        );
    }
    if o.protocol == Protocol::Http && o.concurrency != 1 {
        return Err("--concurrency applies to gRPC; HTTP/1.1 carries one request at a time per connection (raise --conns)".into());
    }
    if o.api == Api::Etcd {
        if o.protocol != Protocol::Grpc {
            return Err("--api etcd runs over gRPC: pass --protocol grpc and gRPC endpoints (etcd's client port, Ferrium's gRPC port)".into());
        }
        if o.consistency == "lease" {
            return Err("etcd's Range has no lease reads: pass --consistency linearizable or stale (a serializable Range)".into());
        }
        if o.workload == Workload::Batch {
            if o.batch_size > ETCD_MAX_TXN_OPS {
                return Err(format!(
                    "--api etcd sends a batch as one Txn, and etcd takes at most {ETCD_MAX_TXN_OPS} operations in one by default: pass --batch-size {ETCD_MAX_TXN_OPS} or less"
                ));
            }
            if o.key_dist != KeyDist::Sequential {
                return Err("--api etcd sends a batch as one Txn, which may not put one key twice: use --key-dist sequential".into());
            }
        }
    }
    if o.leader && o.protocol != Protocol::Http {
        return Err(
            "--leader works with --protocol http; pass the leader's gRPC address in --endpoints"
                .into(),
        );
    }
    if o.workload == Workload::Lease {
        if o.protocol != Protocol::Grpc {
            return Err("lease runs over gRPC: pass --protocol grpc and gRPC endpoints".into());
        }
        if o.leases == 0 || o.lease_ttl == 0 {
            return Err("--leases and --lease-ttl must be at least 1".into());
        }
    }
    if o.workload == Workload::Watch {
        if o.protocol != Protocol::Grpc {
            return Err("watch runs over gRPC: pass --protocol grpc and gRPC endpoints".into());
        }
        if o.watchers == 0 || o.streams == 0 || o.streams > o.watchers {
            return Err(
                "--watchers and --streams must be at least 1, and --streams at most --watchers"
                    .into(),
            );
        }
        if o.duration.is_none() {
            o.duration = Some(Duration::from_secs(10));
        }
    }
    if !(0.0..=1.0).contains(&o.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    if let Some(r) = o.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number".into());
        }
    }
    if o.total.is_none() && o.duration.is_none() {
        o.total = Some(10_000);
    }
    Ok(())
}

/// Operations etcd accepts in one `Txn` by default (`--max-txn-ops`), as
/// many as Ferrium does.
const ETCD_MAX_TXN_OPS: usize = 128;

/// Everything a worker needs to build requests.
struct Plan {
    opts: Options,
    value: String,
    /// Request numbers handed out so far (each worker claims the next one).
    issued: AtomicU64,
    /// Sequential key numbers handed out so far.
    next_key: AtomicU64,
    stop: AtomicBool,
    start: Instant,
}

impl Plan {
    fn key(&self, n: u64) -> String {
        let width = self
            .opts
            .key_size
            .saturating_sub(self.opts.key_prefix.len());
        format!("{}{:0width$}", self.opts.key_prefix, n)
    }

    /// A key to write: the next unused one, or a random one.
    fn write_key(&self, rng: &mut Rng) -> String {
        match self.opts.key_dist {
            KeyDist::Sequential => self.key(self.next_key.fetch_add(1, Ordering::Relaxed)),
            KeyDist::Uniform => self.key(rng.below(self.opts.key_space)),
        }
    }

    /// A key to read: cycles through the key space, or a random one in it.
    fn read_key(&self, op: u64, rng: &mut Rng) -> String {
        match self.opts.key_dist {
            KeyDist::Sequential => self.key(op % self.opts.key_space),
            KeyDist::Uniform => self.key(rng.below(self.opts.key_space)),
        }
    }

    /// Claims the next request number, or `None` when the run is over. With a
    /// rate limit, also the instant the request is scheduled for.
    fn claim(&self) -> Option<(u64, Option<Instant>)> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let op = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.opts.total.is_some_and(|t| op >= t) {
            return None;
        }
        let at = self
            .opts
            .rate
            .map(|r| self.start + Duration::from_secs_f64(op as f64 / r));
        if let (Some(d), Some(at)) = (self.opts.duration, at) {
            if at >= self.start + d {
                return None;
            }
        }
        Some((op, at))
    }
}

/// One request to send.
enum Op {
    Put {
        key: String,
    },
    Get {
        key: String,
    },
    Batch {
        keys: Vec<String>,
    },
    /// Set `key` if its mod revision is `expect` (`None`: if it is absent).
    Cas {
        key: String,
        expect: Option<u64>,
    },
}

impl Op {
    fn keys(&self) -> u64 {
        match self {
            Op::Batch { keys } => keys.len() as u64,
            _ => 1,
        }
    }

    fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }
}

fn next_op(plan: &Plan, op: u64, rng: &mut Rng) -> Op {
    match plan.opts.workload {
        Workload::Put => Op::Put {
            key: plan.write_key(rng),
        },
        Workload::Get => Op::Get {
            key: plan.read_key(op, rng),
        },
        Workload::Mixed if rng.chance(plan.opts.read_ratio) => Op::Get {
            key: plan.read_key(op, rng),
        },
        Workload::Mixed => Op::Put {
            key: plan.write_key(rng),
        },
        Workload::Batch => Op::Batch {
            keys: (0..plan.opts.batch_size)
                .map(|_| plan.write_key(rng))
                .collect(),
        },
        // Built by the worker, which knows its key's revision (`watch`
        // and `lease` run in their own modules).
        Workload::Cas | Workload::Watch | Workload::Lease => Op::Get {
            key: plan.read_key(op, rng),
        },
    }
}

/// What a request answered that the next one needs: the revision a write
/// got, or the current mod revision a failed compare-and-swap reported.
#[derive(Default)]
struct Answered {
    revision: Option<u64>,
    /// A compare-and-swap that did not hold.
    compare_failed: bool,
}

/// A connection to one endpoint, over either protocol (and, over gRPC,
/// speaking either API).
#[derive(Clone)]
enum Conn {
    Http { client: Client, base: String },
    Grpc(KvServiceClient<Channel>),
    Etcd(etcd::kv_client::KvClient<Channel>),
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// Sends of one write with a request id after an unknown outcome.
const UNKNOWN_RETRIES: u32 = 4;

impl Conn {
    async fn send(&mut self, op: &Op, plan: &Plan) -> Result<Answered, String> {
        let id = (plan.opts.request_ids && !op.is_read()).then(ferrium::client::new_request_id);
        let mut tries = 0;
        loop {
            let r = match self {
                Conn::Http { client, base } => {
                    http_send(client, base, op, plan, id.as_deref()).await
                }
                Conn::Grpc(kv) => grpc_send(kv, op, plan, id.as_deref()).await,
                Conn::Etcd(kv) => etcd_send(kv, op, plan, id.as_deref()).await,
            };
            match r {
                Err(e) if id.is_some() && tries < UNKNOWN_RETRIES && is_unknown(&e) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50 << tries)).await;
                }
                other => return other,
            }
        }
    }
}

/// Whether an error leaves a write's outcome unknown.
fn is_unknown(e: &str) -> bool {
    e.starts_with("transport")
        || e.contains("outcome_unknown")
        || e.contains("DeadlineExceeded")
        || (e.starts_with("HTTP 5") && !e.ends_with("unavailable"))
}

async fn http_send(
    client: &Client,
    base: &str,
    op: &Op,
    plan: &Plan,
    id: Option<&str>,
) -> Result<Answered, String> {
    let value = json_str(&plan.value);
    let (path, body) = match op {
        Op::Cas { key, expect } => (
            "/write",
            match expect {
                Some(rev) => format!(
                    r#"{{"Set":{{"key":{},"value":{value},"if_mod_revision":{rev}}}}}"#,
                    json_str(key)
                ),
                None => format!(
                    r#"{{"Set":{{"key":{},"value":{value},"if_version":0}}}}"#,
                    json_str(key)
                ),
            },
        ),
        Op::Put { key } => (
            "/write",
            format!(r#"{{"Set":{{"key":{},"value":{value}}}}}"#, json_str(key)),
        ),
        Op::Get { key } => (
            "/read",
            format!(
                r#"{{"key":{},"consistency":"{}"}}"#,
                json_str(key),
                plan.opts.consistency
            ),
        ),
        Op::Batch { keys } => {
            let mut b = String::with_capacity(
                keys.len() * (plan.value.len() + plan.opts.key_size + 8) + 32,
            );
            b.push_str(r#"{"BatchSet":{"pairs":["#);
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                b.push('[');
                b.push_str(&json_str(k));
                b.push(',');
                b.push_str(&value);
                b.push(']');
            }
            b.push_str("]}}");
            ("/write", b)
        }
    };
    let mut req = ClientRequest::new(Method::Post, &format!("{base}{path}"))
        .map_err(|e| e.to_string())?
        .header("content-type", "application/json")
        .timeout(plan.opts.timeout);
    if let Some(id) = id {
        req = req.header("idempotency-key", id.to_string());
    }
    let req = req.body(body);
    let resp = client
        .send(req)
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    // Read the body to the end so the connection is reused.
    let body = resp
        .collect(1 << 20)
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let cas = matches!(op, Op::Cas { .. });
    if status == 200 {
        if !cas {
            return Ok(Answered::default());
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Ok(Answered {
            revision: v["revision"].as_u64(),
            compare_failed: false,
        });
    }
    let v = serde_json::from_slice::<serde_json::Value>(&body).ok();
    if cas && status == 412 {
        return Ok(Answered {
            revision: v
                .as_ref()
                .and_then(|v| v["current"]["mod_revision"].as_u64()),
            compare_failed: true,
        });
    }
    let code = v
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
        .unwrap_or_default();
    Err(format!("HTTP {status} {code}").trim_end().to_string())
}

/// A gRPC request with the `idempotency-key` metadata entry when `id` is set.
fn with_id<T>(msg: T, id: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(v) = id.and_then(|id| tonic::metadata::MetadataValue::try_from(id).ok()) {
        r.metadata_mut().insert("idempotency-key", v);
    }
    r
}

/// A failed gRPC call as an error kind of the report.
fn grpc_error(s: tonic::Status) -> String {
    format!("gRPC {:?}", s.code())
}

/// A revision between the bench's `u64` and a message's own integer type
/// (etcd's are `i64`); one out of range becomes 0, which no write has.
fn revision<T: TryFrom<u64> + Default>(r: u64) -> T {
    T::try_from(r).unwrap_or_default()
}

/// A revision a message reported, as the bench keeps it.
fn reported<T: TryInto<u64>>(r: T) -> Option<u64> {
    r.try_into().ok()
}

/// The compare-and-swap of `key` as a `Txn` of either API (`$pb`: the
/// module of its messages, which Ferrium's API shares with etcd's but for
/// the integer types): put the value if the key's mod revision is `expect`
/// (if the key is absent: on version 0), else read the key for its current
/// mod revision.
macro_rules! cas_txn {
    ($pb:ident, $key:expr, $expect:expr, $value:expr) => {{
        use $pb::{compare, request_op};
        let (target, union) = match $expect {
            Some(rev) => (
                compare::CompareTarget::Mod,
                compare::TargetUnion::ModRevision(revision(rev)),
            ),
            None => (
                compare::CompareTarget::Version,
                compare::TargetUnion::Version(0),
            ),
        };
        let key: Vec<u8> = $key.as_bytes().to_vec();
        $pb::TxnRequest {
            compare: vec![$pb::Compare {
                result: compare::CompareResult::Equal as i32,
                target: target as i32,
                key: key.clone(),
                target_union: Some(union),
                range_end: Vec::new(),
            }],
            success: vec![$pb::RequestOp {
                request: Some(request_op::Request::RequestPut($pb::PutRequest {
                    key: key.clone(),
                    value: $value.as_bytes().to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![$pb::RequestOp {
                request: Some(request_op::Request::RequestRange($pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        }
    }};
}

/// What the answer `$t` to a [`cas_txn!`] of `$pb` tells the next one: the
/// revision of the write, or the key's current mod revision when the
/// compare did not hold.
macro_rules! cas_answered {
    ($pb:ident, $t:expr) => {{
        let t = $t;
        let current = match t.responses.first().and_then(|r| r.response.as_ref()) {
            Some($pb::response_op::Response::ResponseRange(r)) => {
                r.kvs.first().and_then(|kv| reported(kv.mod_revision))
            }
            _ => None,
        };
        Answered {
            revision: if t.succeeded {
                t.header.and_then(|h| reported(h.revision))
            } else {
                current
            },
            compare_failed: !t.succeeded,
        }
    }};
}

async fn grpc_send(
    kv: &mut KvServiceClient<Channel>,
    op: &Op,
    plan: &Plan,
    id: Option<&str>,
) -> Result<Answered, String> {
    match op {
        Op::Put { key } => {
            let req = SetRequest {
                key: key.clone(),
                value: plan.value.clone(),
            };
            kv.set(with_id(req, id)).await.map_err(grpc_error)?;
        }
        Op::Cas { key, expect } => {
            let txn = cas_txn!(pb, key, *expect, plan.value);
            let t = kv.txn(with_id(txn, id)).await.map_err(grpc_error)?;
            return Ok(cas_answered!(pb, t.into_inner()));
        }
        Op::Get { key } => {
            let req = GetRequest {
                key: key.clone(),
                consistency: plan.opts.consistency.clone(),
            };
            kv.get(req).await.map_err(grpc_error)?;
        }
        Op::Batch { keys } => {
            let pairs = keys
                .iter()
                .map(|k| KeyValue {
                    key: k.clone(),
                    value: plan.value.clone(),
                })
                .collect();
            kv.batch_set(with_id(BatchSetRequest { pairs }, id))
                .await
                .map_err(grpc_error)?;
        }
    }
    Ok(Answered::default())
}

/// The same requests in etcd's v3 API: `Put`, a `Range` of one key
/// (serializable for `--consistency stale`), and `Txn`s for compare-and-swap
/// and for a batch (one `Txn` of its puts).
async fn etcd_send(
    kv: &mut etcd::kv_client::KvClient<Channel>,
    op: &Op,
    plan: &Plan,
    id: Option<&str>,
) -> Result<Answered, String> {
    let put = |key: &str| etcd::PutRequest {
        key: key.as_bytes().to_vec(),
        value: plan.value.as_bytes().to_vec(),
        ..Default::default()
    };
    match op {
        Op::Put { key } => {
            kv.put(with_id(put(key), id)).await.map_err(grpc_error)?;
        }
        Op::Cas { key, expect } => {
            let txn = cas_txn!(etcd, key, *expect, plan.value);
            let t = kv.txn(with_id(txn, id)).await.map_err(grpc_error)?;
            return Ok(cas_answered!(etcd, t.into_inner()));
        }
        Op::Get { key } => {
            let req = etcd::RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: plan.opts.consistency == "stale",
                ..Default::default()
            };
            kv.range(req).await.map_err(grpc_error)?;
        }
        Op::Batch { keys } => {
            let success = keys
                .iter()
                .map(|k| etcd::RequestOp {
                    request: Some(etcd::request_op::Request::RequestPut(put(k))),
                })
                .collect();
            let txn = etcd::TxnRequest {
                success,
                ..Default::default()
            };
            kv.txn(with_id(txn, id)).await.map_err(grpc_error)?;
        }
    }
    Ok(Answered::default())
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    read_latencies_us: Vec<u32>,
    keys: u64,
    errors: BTreeMap<String, u64>,
}

async fn worker(plan: Arc<Plan>, mut conn: Conn, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    // `cas`: this task's own key and the mod revision it last saw.
    let cas_key = plan.key(seed);
    let mut cas_rev: Option<u64> = None;
    while let Some((n, at)) = plan.claim() {
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
        }
        let op = match plan.opts.workload {
            Workload::Cas => Op::Cas {
                key: cas_key.clone(),
                expect: cas_rev,
            },
            _ => next_op(&plan, n, &mut rng),
        };
        let began = at.unwrap_or_else(Instant::now);
        let outcome = conn.send(&op, &plan).await;
        let us = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
        let outcome = match outcome {
            Ok(a) if matches!(op, Op::Cas { .. }) => {
                cas_rev = a.revision.or(cas_rev);
                if a.compare_failed {
                    Err("compare failed (the key moved on)".to_string())
                } else {
                    Ok(())
                }
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tally.keys += op.keys();
                if plan.opts.workload == Workload::Mixed && op.is_read() {
                    tally.read_latencies_us.push(us);
                } else {
                    tally.latencies_us.push(us);
                }
            }
            Err(e) => {
                *tally.errors.entry(e).or_default() += 1;
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

#[derive(Serialize)]
pub(crate) struct Latency {
    count: usize,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn latency(mut v: Vec<u32>) -> Option<Latency> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    let sum: u64 = v.iter().map(|&x| u64::from(x)).sum();
    Some(Latency {
        count: v.len(),
        mean_ms: sum as f64 / v.len() as f64 / 1000.0,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: v[v.len() - 1] as f64 / 1000.0,
    })
}

#[derive(Serialize)]
struct Report {
    workload: Workload,
    request_ids: bool,
    protocol: Protocol,
    api: Api,
    endpoints: Vec<String>,
    connections: usize,
    concurrency: usize,
    consistency: Option<String>,
    read_ratio: Option<f64>,
    batch_size: Option<usize>,
    key_size: usize,
    value_size: usize,
    key_dist: KeyDist,
    rate_limit: Option<f64>,
    elapsed_s: f64,
    requests: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    requests_per_s: f64,
    keys_per_s: f64,
    /// Latency of every successful request (of the writes in `mixed`).
    latency: Option<Latency>,
    /// Latency of the reads in `mixed`.
    read_latency: Option<Latency>,
}

impl Report {
    fn text(&self) -> String {
        let what = match self.workload {
            Workload::Put => "put".to_string(),
            Workload::Get => format!("get ({})", self.consistency.as_deref().unwrap_or("")),
            Workload::Mixed => format!(
                "mixed ({:.0}% {} reads)",
                self.read_ratio.unwrap_or(0.0) * 100.0,
                self.consistency.as_deref().unwrap_or("")
            ),
            Workload::Batch => format!("batch ({} keys per request)", self.batch_size.unwrap_or(0)),
            Workload::Cas => "cas (compare-and-swap on the mod revision)".to_string(),
            Workload::Watch => "watch".to_string(),
            Workload::Lease => "lease".to_string(),
        };
        let what = if self.request_ids {
            format!("{what} with request ids")
        } else {
            what
        };
        let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_lowercase();
        let api = match self.api {
            Api::Ferrium => "",
            Api::Etcd => " (etcd API)",
        };
        let mut lines = vec![
            format!(
                "{what} over {}{api}, {} connections x {} in flight, {}-byte keys, {}-byte values, {} keys",
                lower(&self.protocol),
                self.connections,
                self.concurrency,
                self.key_size,
                self.value_size,
                lower(&self.key_dist)
            ),
            format!("endpoints:   {}", self.endpoints.join(", ")),
            format!(
                "requests:    {} ok, {} failed in {:.2} s",
                self.requests, self.errors, self.elapsed_s
            ),
        ];
        for (kind, n) in &self.error_kinds {
            lines.push(format!("  error {kind}: {n}"));
        }
        let mut throughput = format!("throughput:  {:.1} req/s", self.requests_per_s);
        if self.workload == Workload::Batch {
            throughput.push_str(&format!(", {:.1} keys/s", self.keys_per_s));
        }
        lines.push(throughput);
        let row = |name: &str, l: &Latency| {
            format!(
                "{name:<13}p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            )
        };
        let (first, second) = if self.workload == Workload::Mixed {
            ("writes:", "reads:")
        } else {
            ("latency:", "")
        };
        lines.extend(self.latency.as_ref().map(|l| row(first, l)));
        lines.extend(self.read_latency.as_ref().map(|l| row(second, l)));
        lines.push(String::new());
        lines.join("\n")
    }
}

/// The client options for the bench's endpoints: its timeout, no token.
fn client_options(o: &Options) -> ClientOptions {
    ClientOptions {
        timeout: o.timeout,
        ..ClientOptions::new(o.endpoints.clone())
    }
}

/// The leader's API address, through the client's leader discovery.
async fn leader_endpoint(o: &Options) -> Result<Endpoint, String> {
    let client = RestClient::new(&client_options(o)).map_err(|e| e.to_string())?;
    let leader = client
        .wait_for_leader(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let addr = leader.api_addr.unwrap_or_default();
    Endpoint::parse(&addr).map_err(|e| format!("the leader's API address: {e}"))
}

/// What opens the bench's connections.
enum Connector {
    /// One pooled client per connection, each keeping one connection.
    Http(ClientConfig),
    /// gRPC channels, for clients of the given API.
    Grpc(GrpcClient, Api),
}

impl Connector {
    fn new(o: &Options) -> Result<Connector, String> {
        let options = client_options(o);
        let connector = match o.protocol {
            Protocol::Http => Connector::Http(ClientConfig {
                max_idle_per_host: 1,
                ..options.http_config().map_err(|e| e.to_string())?
            }),
            Protocol::Grpc => {
                Connector::Grpc(GrpcClient::new(&options).map_err(|e| e.to_string())?, o.api)
            }
        };
        Ok(connector)
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Conn, String> {
        match self {
            Connector::Http(config) => Ok(Conn::Http {
                client: Client::new(config.clone()),
                base: endpoint.url(""),
            }),
            Connector::Grpc(grpc, api) => {
                let channel = grpc.connect_to(endpoint).await.map_err(|e| e.to_string())?;
                Ok(match api {
                    Api::Ferrium => Conn::Grpc(KvServiceClient::new(channel)),
                    Api::Etcd => Conn::Etcd(etcd::kv_client::KvClient::new(channel)),
                })
            }
        }
    }
}

async fn run(mut o: Options) -> Result<Report, String> {
    if o.leader {
        o.endpoints = vec![leader_endpoint(&o).await?];
    }
    let connector = Connector::new(&o)?;
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        conns.push(
            connector
                .connect(&o.endpoints[i % o.endpoints.len()])
                .await?,
        );
    }
    let plan = Arc::new(Plan {
        value: "v".repeat(o.value_size),
        opts: o.clone(),
        issued: AtomicU64::new(0),
        next_key: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    });
    let mut tasks = Vec::new();
    let mut seed = Rng::new(o.seed);
    for conn in &conns {
        for _ in 0..o.concurrency {
            tasks.push(tokio::spawn(worker(
                plan.clone(),
                conn.clone(),
                seed.next_u64(),
            )));
        }
    }
    if let Some(d) = o.duration {
        let plan = plan.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            plan.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.map_err(|e| format!("worker failed: {e}"))?;
        all.latencies_us.extend(t.latencies_us);
        all.read_latencies_us.extend(t.read_latencies_us);
        all.keys += t.keys;
        for (k, n) in t.errors {
            *all.errors.entry(k).or_default() += n;
        }
    }
    let elapsed = plan.start.elapsed().as_secs_f64();
    let requests = (all.latencies_us.len() + all.read_latencies_us.len()) as u64;
    let errors = all.errors.values().sum();
    let is = |w: Workload| o.workload == w;
    Ok(Report {
        request_ids: o.request_ids,
        workload: o.workload,
        protocol: o.protocol,
        api: o.api,
        endpoints: o.endpoints.iter().map(Endpoint::to_string).collect(),
        connections: o.conns,
        concurrency: o.concurrency,
        consistency: (is(Workload::Get) || is(Workload::Mixed)).then(|| o.consistency.clone()),
        read_ratio: is(Workload::Mixed).then_some(o.read_ratio),
        batch_size: is(Workload::Batch).then_some(o.batch_size),
        key_size: o.key_size,
        value_size: o.value_size,
        key_dist: o.key_dist,
        rate_limit: o.rate,
        elapsed_s: elapsed,
        requests,
        errors,
        error_kinds: all.errors,
        requests_per_s: requests as f64 / elapsed,
        keys_per_s: all.keys as f64 / elapsed,
        latency: latency(all.latencies_us),
        read_latency: latency(all.read_latencies_us),
    })
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ferrium-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrium-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = opts.json;
    if opts.workload == Workload::Lease {
        let (leases, ttl) = (opts.leases, opts.lease_ttl);
        let r = runtime.block_on(lease::run(opts, leases, ttl));
        return report(r, json, lease::LeaseReport::print);
    }
    if opts.workload == Workload::Watch {
        let (watchers, streams) = (opts.watchers, opts.streams);
        let r = runtime.block_on(watch::run(opts, watchers, streams));
        return report(r, json, watch::WatchReport::print);
    }
    match runtime.block_on(run(opts)) {
        Ok(report) => {
            let out = if json {
                serde_json::to_string_pretty(&report).expect("the report serialises") + "\n"
            } else {
                report.text()
            };
            // A closed pipe (`| head`) is not worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
            if report.requests == 0 {
                eprintln!("ferrium-bench: no request succeeded");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrium-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a workload's report (as JSON with `--json`), or its error.
fn report<R: Serialize>(r: Result<R, String>, json: bool, print: fn(&R)) -> ExitCode {
    match r {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serialises")
                );
            } else {
                print(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrium-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            workload: Workload::Put,
            protocol: Protocol::Http,
            endpoints: Endpoint::parse_list("127.0.0.1:8001").unwrap(),
            leader: false,
            conns: 4,
            concurrency: 1,
            total: None,
            duration: None,
            rate: None,
            key_size: 16,
            value_size: 100,
            key_space: 10,
            key_dist: KeyDist::Sequential,
            key_prefix: "bench-".into(),
            consistency: "linearizable".into(),
            read_ratio: 0.5,
            batch_size: 3,
            threads: 1,
            timeout: Duration::from_secs(1),
            seed: 1,
            json: false,
            request_ids: false,
            watchers: 10_000,
            streams: 200,
            api: Api::Ferrium,
            leases: 10_000,
            lease_ttl: 60,
        }
    }

    fn plan(o: Options) -> Plan {
        Plan {
            value: "v".repeat(o.value_size),
            opts: o,
            issued: AtomicU64::new(0),
            next_key: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            start: Instant::now(),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = latency((1..=1000).rev().map(|ms| ms * 1000).collect()).expect("non-empty");
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p90_ms, 900.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert!(latency(Vec::new()).is_none());
    }

    #[test]
    fn keys_are_padded_to_the_key_size() {
        let p = plan(options());
        assert_eq!(p.key(42), "bench-0000000042");
        assert_eq!(p.key(42).len(), 16);
        let mut rng = Rng::new(1);
        assert_eq!(p.write_key(&mut rng), "bench-0000000000");
        assert_eq!(p.write_key(&mut rng), "bench-0000000001");
        assert_eq!(p.read_key(12, &mut rng), "bench-0000000002");
    }

    #[test]
    fn a_total_bounds_the_requests_handed_out() {
        let p = plan(Options {
            total: Some(3),
            ..options()
        });
        let claimed: Vec<u64> = std::iter::from_fn(|| p.claim().map(|(n, _)| n)).collect();
        assert_eq!(claimed, vec![0, 1, 2]);
    }

    #[test]
    fn batches_carry_batch_size_distinct_keys() {
        let p = plan(Options {
            workload: Workload::Batch,
            ..options()
        });
        match next_op(&p, 0, &mut Rng::new(1)) {
            Op::Batch { keys } => assert_eq!(keys.len(), 3),
            _ => panic!("batch workload must produce batches"),
        }
    }

    #[test]
    fn validation_rejects_http_concurrency_and_bad_ratios() {
        let mut o = Options {
            concurrency: 2,
            ..options()
        };
        assert!(validate(&mut o).is_err());
        let mut o = Options {
            read_ratio: 1.5,
            ..options()
        };
        assert!(validate(&mut o).is_err());
        let mut o = options();
        validate(&mut o).expect("defaults are valid");
        assert_eq!(o.total, Some(10_000));
    }

    fn parsed(args: &[&str]) -> Result<Options, String> {
        parse(lexopt::Parser::from_args(args.iter().copied()))
            .map(|o| o.expect("not a request for help"))
    }

    #[test]
    fn the_etcd_api_is_chosen_by_api_or_etcd_and_needs_grpc() {
        assert_eq!(parsed(&["put"]).unwrap().api, Api::Ferrium);
        let grpc = ["--protocol", "grpc"];
        let o = parsed(&[&grpc[..], &["--api", "etcd", "put"]].concat()).unwrap();
        assert_eq!(o.api, Api::Etcd);
        let o = parsed(&[&grpc[..], &["--etcd", "cas"]].concat()).unwrap();
        assert_eq!(o.api, Api::Etcd);
        let o = parsed(&[&grpc[..], &["--api", "ferrium", "put"]].concat()).unwrap();
        assert_eq!(o.api, Api::Ferrium);
        // HTTP, by default or asked for, has no etcd API here.
        for args in [
            &["--api", "etcd", "put"][..],
            &["--protocol", "http", "--etcd", "get"],
        ] {
            let e = parsed(args).unwrap_err();
            assert!(e.contains("pass --protocol grpc"), "{e}");
        }
        let e = parsed(&["--api", "v2", "put"]).unwrap_err();
        assert!(e.contains("expected ferrium or etcd"), "{e}");
    }

    #[test]
    fn the_etcd_api_reads_linearizable_or_serializable() {
        let etcd = ["--protocol", "grpc", "--api", "etcd"];
        for c in ["linearizable", "stale"] {
            let o = parsed(&[&etcd[..], &["--consistency", c, "get"]].concat()).unwrap();
            assert_eq!(o.consistency, c);
        }
        let e = parsed(&[&etcd[..], &["--consistency", "lease", "mixed"]].concat()).unwrap_err();
        assert!(e.contains("--consistency linearizable or stale"), "{e}");
        // Ferrium's own API keeps its lease reads.
        parsed(&["--protocol", "grpc", "--consistency", "lease", "get"]).unwrap();
    }

    #[test]
    fn an_etcd_batch_is_one_txn_that_etcd_accepts() {
        let etcd = ["--protocol", "grpc", "--api", "etcd"];
        let o = parsed(&[&etcd[..], &["--batch-size", "128", "batch"]].concat()).unwrap();
        assert_eq!(o.batch_size, 128);
        let e = parsed(&[&etcd[..], &["--batch-size", "129", "batch"]].concat()).unwrap_err();
        assert!(e.contains("--batch-size 128 or less"), "{e}");
        let e = parsed(&[&etcd[..], &["--key-dist", "uniform", "batch"]].concat()).unwrap_err();
        assert!(e.contains("--key-dist sequential"), "{e}");
        // Ferrium's BatchSet has neither limit.
        parsed(&["--batch-size", "1000", "--key-dist", "uniform", "batch"]).unwrap();
    }

    #[test]
    fn cas_txns_compare_the_mod_revision_in_either_api() {
        use etcd::compare::{CompareTarget, TargetUnion};
        let t = cas_txn!(etcd, "k", Some(7u64), "v");
        assert_eq!(t.compare.len(), 1);
        assert_eq!(t.compare[0].key, b"k");
        assert_eq!(t.compare[0].target, CompareTarget::Mod as i32);
        assert_eq!(t.compare[0].target_union, Some(TargetUnion::ModRevision(7)));
        match &t.success[..] {
            [
                etcd::RequestOp {
                    request: Some(etcd::request_op::Request::RequestPut(p)),
                },
            ] => assert_eq!((&p.key[..], &p.value[..]), (&b"k"[..], &b"v"[..])),
            _ => panic!("the success branch must be one put"),
        }
        assert!(matches!(
            &t.failure[..],
            [etcd::RequestOp {
                request: Some(etcd::request_op::Request::RequestRange(_)),
            }]
        ));
        // The first write: on the key being absent.
        let t = cas_txn!(etcd, "k", None::<u64>, "v");
        assert_eq!(t.compare[0].target, CompareTarget::Version as i32);
        assert_eq!(t.compare[0].target_union, Some(TargetUnion::Version(0)));
        // Ferrium's own messages, the same shape.
        let t = cas_txn!(pb, "k", Some(7u64), "v");
        assert_eq!(
            t.compare[0].target_union,
            Some(pb::compare::TargetUnion::ModRevision(7))
        );
    }

    #[test]
    fn cas_answers_carry_the_revision_the_next_compare_expects() {
        let header = |revision| {
            Some(etcd::ResponseHeader {
                revision,
                ..Default::default()
            })
        };
        let a = cas_answered!(
            etcd,
            etcd::TxnResponse {
                header: header(12),
                succeeded: true,
                responses: Vec::new(),
            }
        );
        assert_eq!((a.revision, a.compare_failed), (Some(12), false));
        // A compare that did not hold: the key's mod revision as read.
        let range = etcd::RangeResponse {
            kvs: vec![ferrium::api::proto::etcd::mvccpb::KeyValue {
                mod_revision: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = cas_answered!(
            etcd,
            etcd::TxnResponse {
                header: header(15),
                succeeded: false,
                responses: vec![etcd::ResponseOp {
                    response: Some(etcd::response_op::Response::ResponseRange(range)),
                }],
            }
        );
        assert_eq!((a.revision, a.compare_failed), (Some(9), true));
    }
}
