//! `ferriumctl migrate --from-etcd ENDPOINTS [--prefix P] [--follow]`: copies
//! a running etcd 3.4+ into this cluster, speaking etcd's v3 gRPC API to
//! both (Ferrium serves it on its gRPC and HTTP ports), then with `--follow`
//! applies etcd's changes as they happen until interrupted, so that clients
//! can be moved over at any moment.
//!
//! - **One revision.** The copy reads etcd at one revision R, page by page in
//!   key order, compares each page with what Ferrium holds in the same key
//!   range and writes only what differs, as transactions of at most 128
//!   operations (etcd's and Ferrium's limit), a few at once. A second copy
//!   is therefore cheap.
//! - **Leases keep their etcd ids.** Each is granted with the TTL it has left
//!   in etcd, but at least min(its TTL, 15 s): a lease renewed in etcd just
//!   after it was read must not end in Ferrium before the lease keeper's
//!   next round. The keeper (every 5 s, sooner for short leases) grants the
//!   leases etcd granted, renews in Ferrium the leases etcd renewed and
//!   revokes the ones etcd ended. A key whose lease already ended in etcd is
//!   not written: etcd deletes it at a later revision anyway.
//! - **Following** watches etcd from R+1 and applies each batch of events in
//!   etcd's order: whole etcd revisions per Ferrium transaction (only a
//!   revision of more than 128 keys is split), the last change of a key
//!   when one transaction covers several revisions.
//! - **The state file** records etcd's and Ferrium's cluster ids, the prefix,
//!   the last etcd revision whose changes are all in Ferrium (0 while a copy
//!   runs) and the leases made. A rerun watches from there when etcd still
//!   has that history, else copies again and deletes the keys etcd no longer
//!   has. Applying an event twice is harmless: the end state is etcd's.
//! - **Progress without events.** etcd 3.4 answers a progress request with
//!   its current revision even while the watch still has older events to
//!   send, so such a revision counts as reached only once a later progress
//!   answer, at least 0.9 s after it, came with no event in between.
//! - **Writes** carry a request id (`idempotency-key`), so a transaction
//!   retried after an unknown outcome is applied once. Transient failures
//!   (no leader, a member going away) are retried on the next endpoint with
//!   backoff, a bounded number of times.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrium::api::grpc::kv::IDEMPOTENCY_METADATA;
use ferrium::api::proto::etcd::etcdserverpb as epb;
use ferrium::api::proto::etcd::mvccpb;
use ferrium::client::{ClientOptions, Endpoint, GrpcClient, new_request_id};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};

use epb::kv_client::KvClient;
use epb::lease_client::LeaseClient;
use epb::watch_client::WatchClient;

use crate::output::Output;
use crate::{EXIT_FAILED, EXIT_UNREACHABLE, Failure, Outcome};

/// Keys per range read, halved while an answer is too large for one
/// message.
const PAGE: i64 = 1000;
/// The largest answer this client takes in one message.
const MAX_ANSWER: usize = 64 << 20;
/// Operations per transaction: etcd's default `--max-txn-ops` and Ferrium's.
const MAX_OPS: usize = ferrium::node::MAX_TXN_OPS;
/// Bytes of keys and values per transaction, well under the default 4 MiB
/// message limit of both.
const MAX_TXN_BYTES: usize = 1 << 20;
/// Copy transactions in flight at once.
const IN_FLIGHT: usize = 4;
/// Lease calls in flight at once.
const LEASE_CALLS: usize = 16;
/// Tries of one call after the first, with [`backoff`] between them.
const RETRIES: u32 = 10;
/// The same before a side has answered once: nothing there is more likely
/// a wrong address than a leader election.
const FIRST_RETRIES: u32 = 2;
/// The shortest TTL a lease is granted in Ferrium, unless etcd granted it
/// less (see the module docs).
const LEASE_FLOOR: i64 = 15;
const KEEPER_MAX: Duration = Duration::from_secs(5);
const KEEPER_MIN: Duration = Duration::from_millis(500);
/// How often the state file is rewritten while revisions are applied.
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// How often, while nothing happens, etcd is asked how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a progress answer must go without an event after it.
const QUIET: Duration = Duration::from_millis(900);
/// A watch that hears nothing (not even progress answers) for this long is
/// opened again.
const SILENCE: Duration = Duration::from_secs(30);
/// How often a line says how far `--follow` got.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Events gathered from the stream before they are applied.
const EVENTS_IN_HAND: usize = 1000;

/// What `migrate` was asked to do.
pub struct MigrateArgs {
    /// etcd's client endpoints (`--from-etcd`) and the `--etcd-*` TLS files.
    pub etcd: ClientOptions,
    /// This cluster: `--endpoints` (HTTP or gRPC addresses), the token and
    /// the TLS files.
    pub ferrium: ClientOptions,
    pub prefix: String,
    pub follow: bool,
    pub state: Option<PathBuf>,
    pub overwrite: bool,
}

// ---------------------------------------------------------------------------
// Connections: one side (etcd or Ferrium), its endpoints tried in order.

/// A failed call.
enum CallError {
    /// A definite answer that trying again would not change.
    Refused {
        side: &'static str,
        endpoint: String,
        what: &'static str,
        status: Status,
    },
    /// Tried [`RETRIES`] more times without success: what to tell.
    GaveUp(Failure),
}

impl CallError {
    fn status(&self) -> Option<&Status> {
        match self {
            CallError::Refused { status, .. } => Some(status),
            CallError::GaveUp(_) => None,
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Refused {
                side,
                endpoint,
                what,
                status,
            } => Failure::new(
                EXIT_FAILED,
                format!("{side} at {endpoint} refused {what}: {}", describe(&status)),
            ),
            CallError::GaveUp(f) => f,
        }
    }
}

/// A status as words: its message and its code's name.
fn describe(s: &Status) -> String {
    let m = s.message().trim();
    if m.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{m} ({:?})", s.code())
    }
}

/// Whether trying again (elsewhere, a little later) may succeed.
fn transient(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Unknown
        | Code::Cancelled => true,
        Code::ResourceExhausted => s.message().contains("too many requests"),
        _ => false,
    }
}

fn lease_not_found(s: &Status) -> bool {
    s.code() == Code::NotFound && s.message().contains("lease not found")
}

fn lease_exists(s: &Status) -> bool {
    s.code() == Code::FailedPrecondition && s.message().contains("lease already exists")
}

/// A message over the sender's or the receiver's size limit.
fn too_large(s: &Status) -> bool {
    matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted)
        && s.message().contains("too large")
}

fn compacted(s: &Status) -> bool {
    s.code() == Code::OutOfRange && s.message().contains("compacted")
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(3))
}

/// Why a gRPC connection to `addr` could not be opened: in the words of the
/// operating system when a plain TCP connection fails too.
async fn connect_problem(addr: &str) -> String {
    let tcp = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr));
    match tcp.await {
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer to a TCP connection within 3 s".to_string(),
        Ok(Ok(_)) => "it accepts TCP connections, but the gRPC connection failed (check that \
                      this is its client address, written https:// if it serves TLS)"
            .to_string(),
    }
}

/// Why the last try of a call failed.
enum Last {
    Unreachable(String),
    Failed(String, Status),
}

/// etcd or Ferrium: a gRPC channel to the first endpoint that accepts one,
/// moved to the next endpoint when a call on it fails transiently.
struct Side {
    /// "etcd" or "Ferrium", as messages name it.
    name: &'static str,
    /// The flag that lists its endpoints.
    flag: &'static str,
    client: GrpcClient,
    endpoints: Vec<Endpoint>,
    /// The endpoint in use and its channel, once connected.
    current: Mutex<(usize, Option<Channel>)>,
    /// Whether a call has succeeded yet.
    answered: std::sync::atomic::AtomicBool,
}

impl Side {
    fn new(
        name: &'static str,
        flag: &'static str,
        options: &ClientOptions,
    ) -> Result<Side, Failure> {
        let client =
            GrpcClient::new(options).map_err(|e| Failure::usage(format!("{flag}: {e}")))?;
        Ok(Side {
            name,
            flag,
            client,
            endpoints: options.endpoints.clone(),
            current: Mutex::new((0, None)),
            answered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn is_etcd(&self) -> bool {
        self.name == "etcd"
    }

    /// The channel in use, or one to the first endpoint (from the one in
    /// use on) that accepts a connection; else every endpoint's problem.
    async fn channel(&self) -> Result<(usize, Channel), String> {
        let start = {
            let c = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(ch) = &c.1 {
                return Ok((c.0, ch.clone()));
            }
            c.0
        };
        let mut problems = Vec::new();
        for k in 0..self.endpoints.len() {
            let i = (start + k) % self.endpoints.len();
            match self.client.connect_to(&self.endpoints[i]).await {
                Ok(ch) => {
                    *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                        (i, Some(ch.clone()));
                    return Ok((i, ch));
                }
                Err(e) => {
                    let given = match e {
                        ferrium::client::Error::Unreachable { problems, .. } => problems.join("; "),
                        other => other.to_string(),
                    };
                    // tonic says only "transport error": ask the system why.
                    if given.ends_with("transport error") {
                        let why = connect_problem(self.endpoints[i].addr()).await;
                        problems.push(format!("{}: {why}", self.endpoints[i]));
                    } else {
                        problems.push(given);
                    }
                }
            }
        }
        Err(problems.join("; "))
    }

    /// Endpoint `i` failed: the next call goes to the next one.
    fn failed(&self, i: usize) {
        let mut c = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if c.0 == i {
            *c = ((i + 1) % self.endpoints.len(), None);
        }
    }

    /// `msg` as a request, with the bearer token when there is one.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        self.client.request(msg)
    }

    fn gave_up(&self, what: &str, last: Last, took: Duration) -> Failure {
        let secs = took.as_secs_f64().round();
        match last {
            Last::Unreachable(problems) => Failure::new(
                EXIT_UNREACHABLE,
                format!(
                    "no {} endpoint accepted a connection for {what} in {secs} s ({problems}); \
                     check that {} runs there and that {} lists its client addresses",
                    self.name, self.name, self.flag
                ),
            ),
            Last::Failed(endpoint, s) => {
                let advice = if self.is_etcd() {
                    "check etcd with `etcdctl endpoint status`"
                } else {
                    "check `ferriumctl status`: the cluster may be electing a leader or have \
                     lost its quorum"
                };
                Failure::new(
                    EXIT_FAILED,
                    format!(
                        "{} kept failing {what} for {secs} s (last at {endpoint}: {}); {advice}",
                        self.name,
                        describe(&s)
                    ),
                )
            }
        }
    }

    /// Runs `f` on a channel until it succeeds, fails definitely, or has
    /// failed transiently [`RETRIES`] more times.
    async fn call<T, F, Fut>(&self, what: &'static str, mut f: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let last = match self.channel().await {
                Err(problems) => Last::Unreachable(problems),
                Ok((i, ch)) => match f(ch).await {
                    Ok(r) => {
                        self.answered.store(true, Ordering::Relaxed);
                        return Ok(r.into_inner());
                    }
                    Err(s) if transient(&s) => {
                        self.failed(i);
                        Last::Failed(self.endpoints[i].to_string(), s)
                    }
                    Err(status) => {
                        return Err(CallError::Refused {
                            side: self.name,
                            endpoint: self.endpoints[i].to_string(),
                            what,
                            status,
                        });
                    }
                },
            };
            attempt += 1;
            let retries = if self.answered.load(Ordering::Relaxed) {
                RETRIES
            } else {
                FIRST_RETRIES
            };
            if attempt > retries {
                return Err(CallError::GaveUp(self.gave_up(
                    what,
                    last,
                    started.elapsed(),
                )));
            }
            if attempt == 3 {
                let why = match &last {
                    Last::Unreachable(problems) => problems.clone(),
                    Last::Failed(endpoint, s) => format!("{endpoint}: {}", describe(s)),
                };
                eprintln!(
                    "ferriumctl: {} is not answering {what} ({why}); trying again",
                    self.name
                );
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn range(&self, req: epb::RangeRequest) -> Result<epb::RangeResponse, CallError> {
        self.call("a range read", |ch| {
            let r = self.request(req.clone());
            async move {
                KvClient::new(ch)
                    .max_decoding_message_size(MAX_ANSWER)
                    .range(r)
                    .await
            }
        })
        .await
    }

    /// A page of `req` of at most `*limit` keys; `*limit` is halved while
    /// the answer is too large for one message (large values).
    async fn range_page(
        &self,
        mut req: epb::RangeRequest,
        limit: &mut i64,
    ) -> Result<epb::RangeResponse, CallError> {
        loop {
            req.limit = *limit;
            match self.range(req.clone()).await {
                Err(e) if *limit > 1 && e.status().is_some_and(too_large) => {
                    *limit = (*limit / 2).max(1);
                }
                other => return other,
            }
        }
    }

    /// A transaction, with one request id for all its tries.
    async fn txn(&self, req: epb::TxnRequest) -> Result<epb::TxnResponse, CallError> {
        let id = new_request_id();
        self.call("a transaction", |ch| {
            let mut r = self.request(req.clone());
            if let Ok(v) = id.parse() {
                r.metadata_mut().insert(IDEMPOTENCY_METADATA, v);
            }
            async move { KvClient::new(ch).txn(r).await }
        })
        .await
    }

    /// Lease `id`'s TTL left and granted (and keys); `None` when it does not
    /// exist (etcd answers TTL -1).
    async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<epb::LeaseTimeToLiveResponse>, CallError> {
        let got = self
            .call("a lease TimeToLive", |ch| {
                let r = self.request(epb::LeaseTimeToLiveRequest { id, keys });
                async move { LeaseClient::new(ch).lease_time_to_live(r).await }
            })
            .await;
        match got {
            Ok(r) if r.ttl < 0 => Ok(None),
            Ok(r) => Ok(Some(r)),
            Err(e) if e.status().is_some_and(lease_not_found) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn lease_ids(&self) -> Result<Vec<i64>, CallError> {
        let r = self
            .call("a lease list", |ch| {
                let r = self.request(epb::LeaseLeasesRequest {});
                async move { LeaseClient::new(ch).lease_leases(r).await }
            })
            .await?;
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// Grants lease `id` for `ttl` seconds: the TTL granted, or `None` when
    /// the lease exists already.
    async fn grant(&self, id: i64, ttl: i64) -> Result<Option<i64>, CallError> {
        let rid = new_request_id();
        let got = self
            .call("a lease grant", |ch| {
                let mut r = self.request(epb::LeaseGrantRequest { ttl, id });
                if let Ok(v) = rid.parse() {
                    r.metadata_mut().insert(IDEMPOTENCY_METADATA, v);
                }
                async move { LeaseClient::new(ch).lease_grant(r).await }
            })
            .await;
        match got {
            Ok(r) => Ok(Some(r.ttl)),
            Err(e) if e.status().is_some_and(lease_exists) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Revokes lease `id`; false when it did not exist.
    async fn revoke(&self, id: i64) -> Result<bool, CallError> {
        let rid = new_request_id();
        let got = self
            .call("a lease revoke", |ch| {
                let mut r = self.request(epb::LeaseRevokeRequest { id });
                if let Ok(v) = rid.parse() {
                    r.metadata_mut().insert(IDEMPOTENCY_METADATA, v);
                }
                async move { LeaseClient::new(ch).lease_revoke(r).await }
            })
            .await;
        match got {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_some_and(lease_not_found) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renews each of `ids` once, on one keep-alive stream.
    async fn keep_alive(&self, ids: &[i64]) -> Result<(), CallError> {
        self.call("lease keep-alives", |ch| {
            let requests: Vec<epb::LeaseKeepAliveRequest> = ids
                .iter()
                .map(|&id| epb::LeaseKeepAliveRequest { id })
                .collect();
            let r = self.request(futures_util::stream::iter(requests));
            async move {
                let mut answers = LeaseClient::new(ch).lease_keep_alive(r).await?.into_inner();
                while answers.message().await?.is_some() {}
                Ok::<_, Status>(tonic::Response::new(()))
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// The state file.

/// How far a migration got, kept in the state file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct State {
    /// etcd's cluster id, in hex as etcdctl prints it.
    etcd_cluster_id: String,
    /// Ferrium's cluster id, in hex.
    ferrium_cluster_id: String,
    prefix: String,
    /// The last etcd revision whose changes are all in Ferrium; 0 while a
    /// copy is under way.
    revision: i64,
    /// The etcd leases made in Ferrium.
    #[serde(default)]
    leases: Vec<i64>,
}

impl State {
    fn load(path: &Path) -> Result<Option<State>, Failure> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Failure::new(
                    EXIT_FAILED,
                    format!(
                        "{} is not a migration state file ({e}); pass another --state, or \
                         remove it to start again",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::new(
                EXIT_FAILED,
                format!("cannot read the state file {}: {e}", path.display()),
            )),
        }
    }

    /// Writes the file whole or not at all: a temporary file beside it,
    /// fsynced, renamed over it, and the directory fsynced.
    fn save(&self, path: &Path) -> Result<(), Failure> {
        let write = || -> std::io::Result<()> {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".tmp");
            let tmp = path.with_file_name(name);
            let mut text = serde_json::to_vec_pretty(self)?;
            text.push(b'\n');
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!(
                    "cannot write the state file {}: {e}; check that its directory is writable",
                    path.display()
                ),
            )
        })
    }

    /// Refuses a file from another migration.
    fn check(&self, path: &Path, etcd_id: &str, ferrium_id: &str, prefix: &str) -> Outcome {
        let file = path.display();
        if self.etcd_cluster_id != etcd_id {
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "the state file {file} is for etcd cluster {}, but --from-etcd reaches \
                     cluster {etcd_id}: pass --state with another file to migrate this cluster",
                    self.etcd_cluster_id
                ),
            ));
        }
        if self.prefix != prefix {
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "the state file {file} is for --prefix {:?}, not {prefix:?}: run with \
                     --prefix {:?} to go on with it, or pass --state with another file",
                    self.prefix, self.prefix
                ),
            ));
        }
        if self.ferrium_cluster_id != ferrium_id {
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "the state file {file} records a migration into Ferrium cluster {}, but \
                     --endpoints reach cluster {ferrium_id}: pass --state with another file to \
                     migrate into this cluster",
                    self.ferrium_cluster_id
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// SIGINT and SIGTERM.

/// Set once SIGINT or SIGTERM arrived; a second one ends the process.
#[derive(Clone)]
struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    fn install() -> Result<Stop, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let cannot = |e: std::io::Error| {
            Failure::new(EXIT_FAILED, format!("cannot catch SIGINT and SIGTERM: {e}"))
        };
        let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
        let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
            eprintln!(
                "ferriumctl: stopping once the changes in hand are applied (interrupt again to \
                 stop at once)"
            );
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!(
                "ferriumctl: stopped at once; the state file keeps the last revision it \
                 recorded: run the same command again to go on from there"
            );
            std::process::exit(i32::from(EXIT_FAILED));
        });
        Ok(Stop(rx))
    }

    fn requested(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

// ---------------------------------------------------------------------------
// What goes into Ferrium.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Op {
    fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    fn size(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len() + 16,
            Op::Delete { key } => key.len() + 8,
        }
    }

    fn request(&self) -> epb::RequestOp {
        use epb::request_op::Request;
        let r = match self {
            Op::Put { key, value, lease } => Request::RequestPut(epb::PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: *lease,
                ..epb::PutRequest::default()
            }),
            Op::Delete { key } => Request::RequestDeleteRange(epb::DeleteRangeRequest {
                key: key.clone(),
                ..epb::DeleteRangeRequest::default()
            }),
        };
        epb::RequestOp { request: Some(r) }
    }
}

/// `ops` as transactions of at most [`MAX_OPS`] operations and about
/// [`MAX_TXN_BYTES`] bytes.
fn chunks(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut out = Vec::new();
    let mut cur: Vec<Op> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        if !cur.is_empty() && (cur.len() >= MAX_OPS || bytes + op.size() > MAX_TXN_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += op.size();
        cur.push(op);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A batch of watch events as transactions, in etcd's order: whole
/// revisions per transaction (a revision too large for one is split), and
/// a key's last change when a transaction covers several revisions.
fn plan(events: Vec<mvccpb::Event>) -> Vec<Vec<Op>> {
    let mut revisions: Vec<BTreeMap<Vec<u8>, Op>> = Vec::new();
    let mut last_rev = None;
    for e in events {
        let Some(kv) = e.kv else { continue };
        let op = if e.r#type == mvccpb::event::EventType::Delete as i32 {
            Op::Delete { key: kv.key }
        } else {
            Op::Put {
                key: kv.key,
                value: kv.value,
                lease: kv.lease,
            }
        };
        if last_rev != Some(kv.mod_revision) || revisions.is_empty() {
            revisions.push(BTreeMap::new());
            last_rev = Some(kv.mod_revision);
        }
        if let Some(rev) = revisions.last_mut() {
            rev.insert(op.key().to_vec(), op);
        }
    }
    let mut txns = Vec::new();
    let mut cur: BTreeMap<Vec<u8>, Op> = BTreeMap::new();
    let mut bytes = 0;
    for rev in revisions {
        let rev_bytes: usize = rev.values().map(Op::size).sum();
        let new_keys = rev.keys().filter(|k| !cur.contains_key(*k)).count();
        if !cur.is_empty() && (cur.len() + new_keys > MAX_OPS || bytes + rev_bytes > MAX_TXN_BYTES)
        {
            txns.push(std::mem::take(&mut cur).into_values().collect());
            bytes = 0;
        }
        for (k, op) in rev {
            let full = cur.len() >= MAX_OPS || bytes + op.size() > MAX_TXN_BYTES;
            if !cur.is_empty() && !cur.contains_key(&k) && full {
                txns.push(std::mem::take(&mut cur).into_values().collect());
                bytes = 0;
            }
            bytes += op.size();
            cur.insert(k, op);
        }
    }
    if !cur.is_empty() {
        txns.push(cur.into_values().collect());
    }
    txns
}

/// The TTL to grant in Ferrium for an etcd lease with `remaining` of
/// `granted` seconds left (see the module docs).
fn grant_ttl(remaining: i64, granted: i64) -> i64 {
    remaining
        .max(granted.min(LEASE_FLOOR))
        .clamp(1, ferrium::store::MAX_TTL_SECS as i64)
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// A key for messages: as text when it is UTF-8.
fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

// ---------------------------------------------------------------------------
// The migration.

#[derive(Default)]
struct Counts {
    keys_read: AtomicU64,
    keys_written: AtomicU64,
    keys_unchanged: AtomicU64,
    keys_deleted: AtomicU64,
    /// Ferrium keys under the prefix that etcd lacks, left alone (first
    /// copy without `--overwrite`, which only happens into an empty range).
    keys_left: AtomicU64,
    /// Keys not written because their lease had ended in etcd.
    keys_lease_ended: AtomicU64,
    leases_created: AtomicU64,
    leases_kept: AtomicU64,
    leases_revoked: AtomicU64,
    /// Leases that had ended in Ferrium while etcd kept them: granted again
    /// and their keys copied again.
    leases_regranted: AtomicU64,
    events_applied: AtomicU64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

struct Migration {
    etcd: Side,
    ferrium: Side,
    /// The keys migrated, `[key, range_end)` as etcd writes ranges.
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The etcd leases made in Ferrium, with the TTL Ferrium granted (0
    /// while not known).
    leases: Mutex<BTreeMap<i64, i64>>,
    /// A lock per lease being made, so that the keeper and the copy or the
    /// watch do not both grant it.
    granting: Mutex<BTreeMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    counts: Counts,
    stop: Stop,
}

/// Runs `futures`, at most `n` at once; their results, or the first error.
async fn bounded<T, Fut>(
    futures: impl IntoIterator<Item = Fut>,
    n: usize,
) -> Result<Vec<T>, Failure>
where
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut running = futures_util::stream::iter(futures).buffer_unordered(n);
    let mut out = Vec::new();
    while let Some(r) = running.next().await {
        out.push(r?);
    }
    Ok(out)
}

impl Migration {
    fn leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, i64>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_range(&self, key: &[u8]) -> bool {
        ferrium::raft::kv::in_range(key, &self.key, &self.range_end)
    }

    /// The range `[key, end)` of the migrated keys, at `revision` (0: now).
    fn range_request(&self, key: Vec<u8>, end: Vec<u8>, revision: i64) -> epb::RangeRequest {
        epb::RangeRequest {
            key,
            range_end: end,
            revision,
            limit: PAGE,
            ..epb::RangeRequest::default()
        }
    }

    /// Whether etcd still has its history from `revision` on.
    async fn etcd_has_history(&self, revision: i64) -> Result<bool, Failure> {
        let probe = epb::RangeRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            revision,
            count_only: true,
            ..epb::RangeRequest::default()
        };
        match self.etcd.range(probe).await {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_some_and(compacted) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every key Ferrium holds in `[from, end)`, with value and lease.
    async fn ferrium_keys(
        &self,
        from: &[u8],
        end: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, (Vec<u8>, i64)>, Failure> {
        let mut out = BTreeMap::new();
        let mut from = from.to_vec();
        let mut limit = PAGE;
        loop {
            let r = self
                .ferrium
                .range_page(self.range_request(from, end.to_vec(), 0), &mut limit)
                .await?;
            let next = match r.kvs.last() {
                Some(kv) if r.more => Some(successor(&kv.key)),
                _ => None,
            };
            for kv in r.kvs {
                out.insert(kv.key, (kv.value, kv.lease));
            }
            match next {
                Some(n) => from = n,
                None => return Ok(out),
            }
        }
    }

    /// Writes `ops` as one transaction. A lease Ferrium does not know (it
    /// ended, or the keeper revoked it meanwhile) is looked up in etcd: made
    /// again when etcd still has it, else its keys are deleted instead,
    /// as etcd deletes them.
    async fn write(&self, mut ops: Vec<Op>) -> Outcome {
        let mut rounds = 0;
        loop {
            let req = epb::TxnRequest {
                compare: Vec::new(),
                success: ops.iter().map(Op::request).collect(),
                failure: Vec::new(),
            };
            match self.ferrium.txn(req).await {
                Ok(_) => return Ok(()),
                Err(e) if rounds < 3 && e.status().is_some_and(lease_not_found) => {
                    rounds += 1;
                    self.recheck_leases(&mut ops).await?;
                }
                Err(e) => {
                    let first = ops.first().map(|o| shown(o.key())).unwrap_or_default();
                    let hint = if e.status().is_some_and(too_large) {
                        "; values this large need a larger network.max_message_size on the \
                         Ferrium nodes"
                    } else {
                        ""
                    };
                    let f = Failure::from(e);
                    return Err(Failure::new(
                        f.code,
                        format!(
                            "{} (a transaction of {} operations from key {first:?}){hint}",
                            f.message,
                            ops.len()
                        ),
                    ));
                }
            }
        }
    }

    async fn recheck_leases(&self, ops: &mut [Op]) -> Outcome {
        let ids: BTreeSet<i64> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .collect();
        for id in ids {
            if self.ferrium.time_to_live(id, false).await?.is_some() {
                continue;
            }
            self.leases().remove(&id);
            if self.ensure_lease(id).await? {
                continue;
            }
            for op in ops.iter_mut() {
                if let Op::Put { key, lease, .. } = op
                    && *lease == id
                {
                    *op = Op::Delete {
                        key: std::mem::take(key),
                    };
                    add(&self.counts.keys_lease_ended, 1);
                }
            }
        }
        Ok(())
    }

    /// Makes etcd lease `id` in Ferrium unless done already; false when etcd
    /// no longer has it.
    async fn ensure_lease(&self, id: i64) -> Result<bool, Failure> {
        if self.leases().contains_key(&id) {
            return Ok(true);
        }
        let lock = {
            let mut granting = self.granting.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(granting.entry(id).or_default())
        };
        let made = {
            let _one_at_a_time = lock.lock().await;
            if self.leases().contains_key(&id) {
                Ok(true)
            } else {
                match self.etcd.time_to_live(id, false).await {
                    Ok(Some(t)) => self.adopt(id, &t).await.map(|()| true),
                    Ok(None) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        };
        self.granting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        made
    }

    /// Grants etcd lease `id` (read as `t`) in Ferrium, or keeps the one
    /// there (an earlier run made it), renewed if etcd renewed it since.
    async fn adopt(&self, id: i64, t: &epb::LeaseTimeToLiveResponse) -> Outcome {
        let granted = match self
            .ferrium
            .grant(id, grant_ttl(t.ttl, t.granted_ttl))
            .await?
        {
            Some(granted) => {
                add(&self.counts.leases_created, 1);
                granted
            }
            None => {
                add(&self.counts.leases_kept, 1);
                match self.ferrium.time_to_live(id, false).await? {
                    Some(f) => {
                        if t.ttl > f.ttl + 2 {
                            self.ferrium.keep_alive(&[id]).await?;
                        }
                        f.granted_ttl
                    }
                    // Ended just now: the keeper's next round makes it again.
                    None => 0,
                }
            }
        };
        self.leases().insert(id, granted);
        Ok(())
    }

    /// How often the keeper runs: a third of the shortest TTL granted, from
    /// [`KEEPER_MIN`] to [`KEEPER_MAX`].
    fn keeper_interval(&self) -> Duration {
        let shortest = self.leases().values().copied().filter(|t| *t > 0).min();
        match shortest {
            Some(t) => Duration::from_millis(u64::try_from(t).unwrap_or(0) * 1000 / 3)
                .clamp(KEEPER_MIN, KEEPER_MAX),
            None => KEEPER_MAX,
        }
    }

    /// One round of the lease keeper: etcd's new leases made, ended ones
    /// revoked, renewed ones renewed (see the module docs).
    async fn sync_leases(&self, interval: Duration) -> Outcome {
        let listed: BTreeSet<i64> = self.etcd.lease_ids().await?.into_iter().collect();
        let known: BTreeSet<i64> = self.leases().keys().copied().collect();
        let new: Vec<i64> = listed.difference(&known).copied().collect();
        bounded(
            new.into_iter()
                .map(|id| async move { self.ensure_lease(id).await.map(|_| ()) }),
            LEASE_CALLS,
        )
        .await?;
        let renew = bounded(
            known
                .into_iter()
                .map(|id| async move { self.check_lease(id, interval).await }),
            LEASE_CALLS,
        )
        .await?;
        let renew: Vec<i64> = renew.into_iter().flatten().collect();
        for ids in renew.chunks(1000) {
            self.ferrium.keep_alive(ids).await?;
        }
        Ok(())
    }

    /// Compares lease `id` on both sides; `Some(id)` when Ferrium's should
    /// be renewed.
    async fn check_lease(&self, id: i64, interval: Duration) -> Result<Option<i64>, Failure> {
        let Some(e) = self.etcd.time_to_live(id, false).await? else {
            if self.ferrium.revoke(id).await? {
                add(&self.counts.leases_revoked, 1);
            }
            self.leases().remove(&id);
            return Ok(None);
        };
        let Some(f) = self.ferrium.time_to_live(id, false).await? else {
            // It ended in Ferrium while etcd kept it (no keeper ran, or
            // Ferrium could not be reached in time): its keys went with it.
            self.leases().remove(&id);
            self.adopt(id, &e).await?;
            self.recopy_lease_keys(id).await?;
            add(&self.counts.leases_regranted, 1);
            return Ok(None);
        };
        self.leases().insert(id, f.granted_ttl);
        let near_end = Duration::from_secs(u64::try_from(f.ttl).unwrap_or(0)) <= interval * 2;
        Ok((e.ttl > f.ttl + 2 || near_end).then_some(id))
    }

    /// Copies again, at etcd's current revision, the keys of lease `id`.
    /// Later watch events may be older than what this writes; applying them
    /// in order still ends at etcd's state.
    async fn recopy_lease_keys(&self, id: i64) -> Outcome {
        let Some(t) = self.etcd.time_to_live(id, true).await? else {
            return Ok(());
        };
        let mut ops = Vec::new();
        for key in t.keys.into_iter().filter(|k| self.in_range(k)) {
            let r = self
                .etcd
                .range(epb::RangeRequest {
                    key,
                    ..epb::RangeRequest::default()
                })
                .await?;
            for kv in r.kvs.into_iter().filter(|kv| kv.lease == id) {
                ops.push(Op::Put {
                    key: kv.key,
                    value: kv.value,
                    lease: kv.lease,
                });
            }
        }
        eprintln!(
            "ferriumctl: lease {id:x} had ended in Ferrium while etcd kept it: granted it again \
             and copied its {} keys again",
            ops.len()
        );
        for txn in chunks(ops) {
            self.write(txn).await?;
        }
        Ok(())
    }

    /// What to write for one page of etcd keys, given what Ferrium holds in
    /// the same range.
    async fn diff(
        &self,
        kvs: Vec<mvccpb::KeyValue>,
        mut have: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
        delete_extra: bool,
    ) -> Result<Vec<Op>, Failure> {
        let c = &self.counts;
        let mut ops = Vec::new();
        add(&c.keys_read, kvs.len());
        for kv in kvs {
            let there = have.remove(&kv.key);
            if kv.lease != 0 && !self.ensure_lease(kv.lease).await? {
                add(&c.keys_lease_ended, 1);
                if there.is_some() {
                    ops.push(Op::Delete { key: kv.key });
                }
                continue;
            }
            if there.is_some_and(|(v, l)| v == kv.value && l == kv.lease) {
                add(&c.keys_unchanged, 1);
                continue;
            }
            add(&c.keys_written, 1);
            ops.push(Op::Put {
                key: kv.key,
                value: kv.value,
                lease: kv.lease,
            });
        }
        if delete_extra {
            add(&c.keys_deleted, have.len());
            ops.extend(have.into_keys().map(|key| Op::Delete { key }));
        } else {
            add(&c.keys_left, have.len());
        }
        Ok(ops)
    }

    /// Copies the keys at etcd revision `revision`.
    async fn copy(self: &Arc<Self>, revision: i64, total: i64, delete_extra: bool) -> Outcome {
        let mut progress = Progress::new(total);
        let mut writes = tokio::task::JoinSet::new();
        let mut from = self.key.clone();
        let mut limit = PAGE;
        loop {
            if self.stop.requested() {
                progress.clear();
                return Err(Failure::new(
                    EXIT_FAILED,
                    format!(
                        "interrupted during the copy ({} of {total} keys read): run the same \
                         command again to copy again; keys already in Ferrium are not written \
                         again",
                        get(&self.counts.keys_read)
                    ),
                ));
            }
            let request = self.range_request(from.clone(), self.range_end.clone(), revision);
            let page = match self.etcd.range_page(request, &mut limit).await {
                Ok(p) => p,
                Err(e) if e.status().is_some_and(compacted) => {
                    progress.clear();
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!(
                            "etcd compacted revision {revision} while it was being copied: run \
                             the same command again (it copies only what differs), and if this \
                             repeats lengthen etcd's --auto-compaction-retention for the \
                             migration"
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            let end = match page.kvs.last() {
                Some(kv) if page.more => successor(&kv.key),
                _ => self.range_end.clone(),
            };
            let read = page.kvs.len();
            let have = self.ferrium_keys(&from, &end).await?;
            let ops = self.diff(page.kvs, have, delete_extra).await?;
            for txn in chunks(ops) {
                while writes.len() >= IN_FLIGHT {
                    joined(writes.join_next().await)?;
                }
                let m = Arc::clone(self);
                writes.spawn(async move { m.write(txn).await });
            }
            progress.add(read);
            if !page.more || read == 0 {
                break;
            }
            from = end;
        }
        while !writes.is_empty() {
            joined(writes.join_next().await)?;
        }
        progress.clear();
        Ok(())
    }

    /// Applies one batch of watch events in etcd's order.
    async fn apply(&self, events: Vec<mvccpb::Event>) -> Outcome {
        let n = events.len();
        for txn in plan(events) {
            let mut ops = Vec::with_capacity(txn.len());
            for op in txn {
                let ended = match &op {
                    Op::Put { lease, .. } if *lease != 0 => !self.ensure_lease(*lease).await?,
                    _ => false,
                };
                if ended {
                    add(&self.counts.keys_lease_ended, 1);
                    ops.push(Op::Delete {
                        key: op.key().to_vec(),
                    });
                } else {
                    ops.push(op);
                }
            }
            self.write(ops).await?;
        }
        add(&self.counts.events_applied, n);
        Ok(())
    }

    /// Watches etcd from `state.revision + 1` and applies its changes until
    /// interrupted, or until revision `until` is reached, keeping the state
    /// file up to date; a watch that breaks is opened again (on the next
    /// endpoint) from the revision after the last one applied. True when
    /// interrupted.
    async fn follow(
        &self,
        state: &mut State,
        path: &Path,
        until: Option<i64>,
        report: bool,
    ) -> Result<bool, Failure> {
        let mut f = Following {
            m: self,
            state,
            path,
            until,
            report,
            applied: 0,
            saved: Instant::now(),
            reported: (0, Instant::now()),
            heard: false,
        };
        f.applied = f.state.revision;
        f.reported.0 = f.applied;
        if report {
            eprintln!(
                "following etcd from revision {} until interrupted (Ctrl-C)",
                f.applied + 1
            );
        }
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        loop {
            let why = match f.watch().await? {
                WatchEnd::Reached => return Ok(false),
                WatchEnd::Stopped => return Ok(true),
                WatchEnd::Broke(why) => why,
            };
            f.save()?;
            if std::mem::take(&mut f.heard) {
                failures = 0;
                failing_since = None;
            }
            failures += 1;
            let since = *failing_since.get_or_insert_with(Instant::now);
            if failures > RETRIES {
                return Err(self.etcd.gave_up("the watch", why, since.elapsed()));
            }
            if let Last::Failed(endpoint, s) = &why {
                eprintln!(
                    "ferriumctl: the etcd watch at {endpoint} stopped ({}); watching again from \
                     revision {}",
                    s.message(),
                    f.applied + 1
                );
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

/// How one watch stream ended.
enum WatchEnd {
    /// Revision `until` was reached.
    Reached,
    /// SIGINT or SIGTERM.
    Stopped,
    /// It broke (or could not be opened): open another.
    Broke(Last),
}

/// `--follow` (or the catch-up of a rerun) under way.
struct Following<'a> {
    m: &'a Migration,
    state: &'a mut State,
    path: &'a Path,
    until: Option<i64>,
    /// Whether to print how far it got every few seconds.
    report: bool,
    /// The last etcd revision whose changes are all in Ferrium.
    applied: i64,
    saved: Instant,
    reported: (i64, Instant),
    /// Whether the current stream gave an answer.
    heard: bool,
}

impl Following<'_> {
    fn save(&mut self) -> Outcome {
        self.state.revision = self.applied;
        self.state.leases = self.m.leases().keys().copied().collect();
        self.saved = Instant::now();
        self.state.save(self.path)
    }

    fn reached(&self) -> bool {
        self.until.is_some_and(|u| self.applied >= u)
    }

    /// Opens a watch from the revision after `applied` and applies what it
    /// sends until it ends.
    async fn watch(&mut self) -> Result<WatchEnd, Failure> {
        let m = self.m;
        let mut stop = m.stop.clone();
        if self.reached() || stop.requested() {
            self.save()?;
            return Ok(if self.reached() {
                WatchEnd::Reached
            } else {
                WatchEnd::Stopped
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<epb::WatchRequest>(8);
        let create = epb::WatchCreateRequest {
            key: m.key.clone(),
            range_end: m.range_end.clone(),
            start_revision: self.applied + 1,
            progress_notify: true,
            ..epb::WatchCreateRequest::default()
        };
        let _ = tx.try_send(epb::WatchRequest {
            request_union: Some(epb::watch_request::RequestUnion::CreateRequest(create)),
        });
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let (i, ch) = match m.etcd.channel().await {
            Ok(c) => c,
            Err(problems) => return Ok(WatchEnd::Broke(Last::Unreachable(problems))),
        };
        let endpoint = m.etcd.endpoints[i].to_string();
        let refused = |status: Status| CallError::Refused {
            side: "etcd",
            endpoint: endpoint.clone(),
            what: "the watch",
            status,
        };
        let stream = match WatchClient::new(ch).watch(m.etcd.request(requests)).await {
            Ok(s) => s.into_inner(),
            Err(s) if transient(&s) => {
                m.etcd.failed(i);
                return Ok(WatchEnd::Broke(Last::Failed(endpoint.clone(), s)));
            }
            Err(s) => return Err(refused(s).into()),
        };
        let mut w = Watching {
            stream,
            tx,
            last_heard: Instant::now(),
            last_progress: None,
            event_answers: 0,
            ended: None,
        };
        // Progress requests at least a second apart, never in a burst after
        // a busy spell: the rule in `Watching::handle` counts on it.
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let broke = loop {
            tokio::select! {
                _ = stop.wait() => {
                    self.save()?;
                    return Ok(WatchEnd::Stopped);
                }
                _ = tick.tick() => {
                    if w.last_heard.elapsed() > SILENCE {
                        break Status::unavailable(format!(
                            "etcd sent nothing for {} s",
                            SILENCE.as_secs()
                        ));
                    }
                    w.ask_progress();
                }
                answer = w.stream.message() => match answer {
                    Ok(Some(r)) => {
                        self.heard = true;
                        let batch = w.gather(r);
                        match w.handle(m, batch, &mut self.applied).await {
                            Ok(None) => {}
                            Ok(Some(why)) => break Status::unavailable(why),
                            Err(f) => {
                                self.save()?;
                                return Err(f);
                            }
                        }
                        if self.reached() {
                            self.save()?;
                            return Ok(WatchEnd::Reached);
                        }
                        match w.ended.take() {
                            Some(s) if transient(&s) => break s,
                            Some(s) => {
                                self.save()?;
                                return Err(refused(s).into());
                            }
                            None => {}
                        }
                    }
                    Ok(None) => break Status::unavailable("etcd ended the watch"),
                    Err(s) if transient(&s) => break s,
                    Err(s) => {
                        self.save()?;
                        return Err(refused(s).into());
                    }
                },
            }
            if self.applied != self.state.revision && self.saved.elapsed() >= SAVE_EVERY {
                self.save()?;
            }
            if self.report
                && self.applied != self.reported.0
                && self.reported.1.elapsed() >= REPORT_EVERY
            {
                eprintln!(
                    "following etcd: revision {} reached, {} events applied",
                    self.applied,
                    get(&m.counts.events_applied)
                );
                self.reported = (self.applied, Instant::now());
            }
        };
        m.etcd.failed(i);
        Ok(WatchEnd::Broke(Last::Failed(endpoint, broke)))
    }
}

fn joined(r: Option<Result<Outcome, tokio::task::JoinError>>) -> Outcome {
    match r {
        Some(Ok(outcome)) => outcome,
        Some(Err(e)) => Err(Failure::new(
            EXIT_FAILED,
            format!("a write of the copy stopped unexpectedly: {e}"),
        )),
        None => Ok(()),
    }
}

/// One open etcd watch stream.
struct Watching {
    stream: tonic::Streaming<epb::WatchResponse>,
    tx: tokio::sync::mpsc::Sender<epb::WatchRequest>,
    last_heard: Instant,
    /// The last progress answer: its revision, when it came, and how many
    /// answers with events had come by then.
    last_progress: Option<(i64, Instant, u64)>,
    event_answers: u64,
    /// How the stream ended, when [`Watching::gather`] met its end.
    ended: Option<Status>,
}

impl Watching {
    fn ask_progress(&self) {
        let _ = self.tx.try_send(epb::WatchRequest {
            request_union: Some(epb::watch_request::RequestUnion::ProgressRequest(
                epb::WatchProgressRequest {},
            )),
        });
    }

    /// `first` and the answers that arrived with it, up to
    /// [`EVENTS_IN_HAND`] events; an end of the stream met on the way is
    /// kept in `ended` for after the batch.
    fn gather(&mut self, first: epb::WatchResponse) -> Vec<epb::WatchResponse> {
        self.last_heard = Instant::now();
        let mut events = first.events.len();
        let mut batch = vec![first];
        while events < EVENTS_IN_HAND {
            match self.stream.message().now_or_never() {
                Some(Ok(Some(r))) => {
                    events += r.events.len();
                    batch.push(r);
                }
                Some(Ok(None)) => {
                    self.ended = Some(Status::unavailable("etcd ended the watch"));
                    break;
                }
                Some(Err(s)) => {
                    self.ended = Some(s);
                    break;
                }
                None => break,
            }
        }
        batch
    }

    /// Applies a batch; `Some(why)` when the watch must be opened again.
    async fn handle(
        &mut self,
        m: &Migration,
        batch: Vec<epb::WatchResponse>,
        applied: &mut i64,
    ) -> Result<Option<String>, Failure> {
        let mut events = Vec::new();
        let mut reached = *applied;
        let mut reopen = None;
        for r in batch {
            if r.canceled {
                if r.compact_revision > 0 {
                    m.apply(std::mem::take(&mut events)).await?;
                    *applied = reached;
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!(
                            "etcd compacted its history (to revision {}) before revision {} \
                             could be read, so the watch cannot go on: run the same command \
                             again; it copies again, writing only the keys that differ",
                            r.compact_revision,
                            reached + 1
                        ),
                    ));
                }
                let reason = if r.cancel_reason.is_empty() {
                    "etcd cancelled the watch".to_string()
                } else {
                    format!("etcd cancelled the watch: {}", r.cancel_reason)
                };
                reopen = Some(reason);
                break;
            }
            if !r.events.is_empty() {
                self.event_answers += 1;
                for e in &r.events {
                    if let Some(kv) = &e.kv {
                        reached = reached.max(kv.mod_revision);
                    }
                }
                events.extend(r.events);
                continue;
            }
            if r.created {
                continue;
            }
            // A progress answer. etcd 3.4 may send one with its current
            // revision while older events are still on their way, so the
            // one before it counts, if no event came in between and it is
            // at least QUIET old: progress requests go a second apart, and
            // etcd sends a catching-up watch its events within 100 ms.
            let now = Instant::now();
            let revision = r.header.map_or(0, |h| h.revision);
            if let Some((p, at, seen)) = self.last_progress
                && seen == self.event_answers
                && now.duration_since(at) >= QUIET
            {
                reached = reached.max(p);
            }
            let keep_older = self.last_progress.is_some_and(|(_, at, seen)| {
                seen == self.event_answers && now.duration_since(at) < QUIET
            });
            if !keep_older {
                self.last_progress = Some((revision, now, self.event_answers));
            }
        }
        m.apply(events).await?;
        *applied = reached;
        Ok(reopen)
    }
}

/// The copy's progress line, on a terminal only.
struct Progress {
    tty: bool,
    total: i64,
    done: u64,
    started: Instant,
    shown: Instant,
}

impl Progress {
    fn new(total: i64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            done: 0,
            started: Instant::now(),
            shown: Instant::now(),
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.tty && self.shown.elapsed() >= Duration::from_millis(250) {
            self.shown = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\rcopying: {} of {} keys ({rate:.0} keys/s)   ",
                self.done, self.total
            );
        }
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
}

// ---------------------------------------------------------------------------
// The command.

/// Where a run starts.
enum Plan {
    /// Copy at the current revision; `delete_extra`: delete the Ferrium keys
    /// under the prefix that etcd lacks.
    Copy { delete_extra: bool },
    /// Watch from the state file's revision.
    Resume,
}

pub async fn migrate(output: Output, args: MigrateArgs) -> Outcome {
    let started = Instant::now();
    let stop = Stop::install()?;
    let etcd = Side::new("etcd", "--from-etcd", &args.etcd)?;
    let ferrium = Side::new("Ferrium", "--endpoints", &args.ferrium)?;
    let prefix = args.prefix.as_bytes().to_vec();
    let (key, range_end) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        let end = ferrium::raft::kv::prefix_end(&prefix);
        (prefix, end)
    };
    let m = Arc::new(Migration {
        etcd,
        ferrium,
        key,
        range_end,
        leases: Mutex::new(BTreeMap::new()),
        granting: Mutex::new(BTreeMap::new()),
        counts: Counts::default(),
        stop,
    });
    let count = epb::RangeRequest {
        key: m.key.clone(),
        range_end: m.range_end.clone(),
        count_only: true,
        ..epb::RangeRequest::default()
    };
    let head = m.etcd.range(count.clone()).await?;
    let h = head.header.unwrap_or_default();
    let (etcd_id, revision, total) = (format!("{:x}", h.cluster_id), h.revision, head.count);
    let there = m.ferrium.range(count).await?;
    let ferrium_id = format!("{:x}", there.header.map_or(0, |h| h.cluster_id));
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ferrium-migrate-{etcd_id}.json")));
    let old = State::load(&path)?;
    let plan = match &old {
        Some(s) => {
            s.check(&path, &etcd_id, &ferrium_id, &args.prefix)?;
            if s.revision <= 0 {
                Plan::Copy { delete_extra: true }
            } else if s.revision > revision {
                eprintln!(
                    "ferriumctl: etcd is at revision {revision}, before the state file's {} (was \
                     it restored from a backup?): copying again, writing only what differs",
                    s.revision
                );
                Plan::Copy { delete_extra: true }
            } else if s.revision == revision || m.etcd_has_history(s.revision + 1).await? {
                Plan::Resume
            } else {
                eprintln!(
                    "ferriumctl: etcd no longer has its history after revision {} (compacted): \
                     copying again, writing only what differs",
                    s.revision
                );
                Plan::Copy { delete_extra: true }
            }
        }
        None if there.count > 0 && !args.overwrite => {
            let under = if args.prefix.is_empty() {
                String::new()
            } else {
                format!(" under {:?}", args.prefix)
            };
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "Ferrium already holds {} keys{under} and there is no state file {} from an \
                     earlier migration: migrate into an empty cluster (or choose --prefix), pass \
                     --state with the earlier migration's file, or pass --overwrite to make these \
                     keys etcd's (deleting those etcd does not have)",
                    there.count,
                    path.display()
                ),
            ));
        }
        None => Plan::Copy {
            delete_extra: args.overwrite,
        },
    };
    let mut state = State {
        etcd_cluster_id: etcd_id.clone(),
        ferrium_cluster_id: ferrium_id,
        prefix: args.prefix.clone(),
        revision: match (&plan, &old) {
            (Plan::Resume, Some(s)) => s.revision,
            _ => 0,
        },
        leases: old.map(|s| s.leases).unwrap_or_default(),
    };
    m.leases()
        .extend(state.leases.iter().map(|&id| (id, 0_i64)));
    state.save(&path)?;

    let result = run(&m, &plan, &mut state, &path, revision, total, args.follow).await;
    // The last word on the leases made, whatever happened.
    state.leases = m.leases().keys().copied().collect();
    let saved = state.save(&path);
    let interrupted = match result {
        Ok(i) => i,
        Err(f) => {
            let next = if state.revision > 0 {
                format!(
                    "; the state file {} records revision {}: run the same command again to go \
                     on from there",
                    path.display(),
                    state.revision
                )
            } else if f.message.starts_with("interrupted") {
                String::new()
            } else {
                "; run the same command again to copy again (only what differs is written)"
                    .to_string()
            };
            return Err(Failure::new(f.code, format!("{}{next}", f.message)));
        }
    };
    saved?;

    let c = &m.counts;
    let copied = matches!(plan, Plan::Copy { .. });
    let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let v = json!({
        "etcd_cluster_id": etcd_id,
        "prefix": args.prefix,
        "state_file": path.display().to_string(),
        "copied": copied,
        "copy_revision": if copied { json!(revision) } else { json!(null) },
        "keys_total": if copied { json!(total) } else { json!(null) },
        "keys_read": get(&c.keys_read),
        "keys_written": get(&c.keys_written),
        "keys_unchanged": get(&c.keys_unchanged),
        "keys_deleted": get(&c.keys_deleted),
        "keys_left_alone": get(&c.keys_left),
        "keys_lease_ended": get(&c.keys_lease_ended),
        "leases_created": get(&c.leases_created),
        "leases_kept": get(&c.leases_kept),
        "leases_revoked": get(&c.leases_revoked),
        "leases_regranted": get(&c.leases_regranted),
        "events_applied": get(&c.events_applied),
        "revision": state.revision,
        "interrupted": interrupted,
        "seconds": seconds,
    });
    output.print(&v, || {
        if copied {
            println!(
                "copied etcd revision {revision}: {} keys read, {} written, {} unchanged, {} \
                 deleted, {} skipped (lease ended)",
                get(&c.keys_read),
                get(&c.keys_written),
                get(&c.keys_unchanged),
                get(&c.keys_deleted),
                get(&c.keys_lease_ended)
            );
        } else {
            println!("resumed from the state file: etcd still had the history since then");
        }
        if get(&c.keys_left) > 0 {
            println!(
                "left alone: {} Ferrium keys etcd does not have",
                get(&c.keys_left)
            );
        }
        println!(
            "leases: {} created, {} kept, {} revoked, {} granted again",
            get(&c.leases_created),
            get(&c.leases_kept),
            get(&c.leases_revoked),
            get(&c.leases_regranted)
        );
        println!("events applied: {}", get(&c.events_applied));
        println!(
            "etcd revision reached: {} in {seconds} s (state in {})",
            state.revision,
            path.display()
        );
    });
    if interrupted && !args.follow {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "interrupted at revision {} before etcd's {revision}: run the same command again \
                 to go on from there",
                state.revision
            ),
        ));
    }
    Ok(())
}

/// The copy (or not) and the watch; true when interrupted.
async fn run(
    m: &Arc<Migration>,
    plan: &Plan,
    state: &mut State,
    path: &Path,
    revision: i64,
    total: i64,
    follow: bool,
) -> Result<bool, Failure> {
    // Leases first: every lease a key at `revision` names was granted
    // before it, so it is listed now unless it has ended since.
    m.sync_leases(KEEPER_MAX).await?;
    let keeper = {
        let m = Arc::clone(m);
        tokio::spawn(async move {
            loop {
                let interval = m.keeper_interval();
                tokio::time::sleep(interval).await;
                if let Err(f) = m.sync_leases(interval).await {
                    eprintln!(
                        "ferriumctl: cannot keep the leases in step now ({}); trying again",
                        f.message
                    );
                }
            }
        })
    };
    let result = async {
        if let Plan::Copy { delete_extra } = plan {
            m.copy(revision, total, *delete_extra).await?;
            state.revision = revision;
            state.leases = m.leases().keys().copied().collect();
            state.save(path)?;
        }
        if follow {
            m.follow(state, path, None, true).await
        } else if state.revision < revision {
            m.follow(state, path, Some(revision), false).await
        } else {
            Ok(false)
        }
    }
    .await;
    keeper.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, rev: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.into(),
                value: value.into(),
                mod_revision: rev,
                ..mvccpb::KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    fn del(key: &str, rev: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..mvccpb::KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn a_key_changed_in_several_revisions_ends_as_the_last_change() {
        let txns = plan(vec![
            put("a", "1", 5),
            put("b", "1", 5),
            del("a", 6),
            put("a", "2", 7),
        ]);
        assert_eq!(txns.len(), 1);
        assert_eq!(
            txns[0],
            vec![
                Op::Put {
                    key: b"a".to_vec(),
                    value: b"2".to_vec(),
                    lease: 0
                },
                Op::Put {
                    key: b"b".to_vec(),
                    value: b"1".to_vec(),
                    lease: 0
                },
            ]
        );
    }

    #[test]
    fn revisions_stay_whole_unless_one_is_too_large() {
        // 100 keys at revision 1, 100 at revision 2: two transactions.
        let mut events: Vec<_> = (0..100).map(|i| put(&format!("a{i}"), "v", 1)).collect();
        events.extend((0..100).map(|i| put(&format!("b{i}"), "v", 2)));
        let txns = plan(events);
        assert_eq!(
            txns.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100]
        );
        // 300 keys in one revision: split at 128.
        let txns = plan((0..300).map(|i| put(&format!("k{i:03}"), "v", 3)).collect());
        assert_eq!(
            txns.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
    }

    #[test]
    fn leases_get_at_least_the_floor_unless_granted_less() {
        assert_eq!(grant_ttl(250, 300), 250);
        assert_eq!(grant_ttl(2, 300), LEASE_FLOOR);
        assert_eq!(grant_ttl(1, 4), 4);
        assert_eq!(grant_ttl(0, 0), 1);
    }

    #[test]
    fn the_state_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("ferriumctl-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let path = dir.join("state.json");
        let s = State {
            etcd_cluster_id: "cdf818194e3a8c32".into(),
            ferrium_cluster_id: "1".into(),
            prefix: "app/".into(),
            revision: 42,
            leases: vec![7, 9],
        };
        assert!(s.save(&path).is_ok());
        assert!(matches!(State::load(&path), Ok(Some(ref read)) if *read == s));
        assert!(s.check(&path, "cdf818194e3a8c32", "1", "app/").is_ok());
        let other = s.check(&path, "cdf818194e3a8c32", "1", "other/");
        assert!(other.is_err_and(|f| f.message.contains("--prefix \"app/\"")));
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
