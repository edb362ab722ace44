//! Who may call what: bearer tokens or client certificates with roles for
//! clients; a member certificate (mTLS) or a cluster secret for peers.
//!
//! Roles nest: `read` (reads, lists, leader, metrics, health), `write`
//! (plus writes), `admin` (plus init and membership). Each REST route and
//! gRPC method is registered with its operation ([`crate::api::op::Op`]),
//! which says what it needs; [`Auth::allows`] is the one decision. Peer routes under
//! `/raft/` accept only members: with mTLS, a connection whose verified
//! certificate carries one of `security.peer_names`; with a cluster secret,
//! a request signed with it. The secret itself never travels: each request
//! carries `HMAC-SHA256(secret, method, path, target, sender, cluster,
//! timestamp, nonce, SHA-256 of the body)`. Requests whose timestamp is more
//! than five minutes off are refused, and so is a second request with the
//! same sender, timestamp and nonce (see [`ReplayCache`]). The header only
//! names the body's digest; the peer routes check the body they read against
//! it ([`check_body`]) and refuse a mismatch with 401, a streamed snapshot
//! once it has been received and before it is installed. With certificate
//! authentication a client's role comes from the names of its verified
//! certificate, each matched by its kind ([`certs`]). Bearer tokens
//! ([`tokens`]) are kept as digests and re-read from the token file on SIGHUP.
//!
//! Failures answer 401 (with `WWW-Authenticate`) or 403 and say nothing an
//! attacker could use; each is counted in the metrics and logged at most
//! once a second. Tokens and the secret are never logged or printed.

pub mod certs;
pub mod tokens;

use crate::api::op::{Op, Required};
use crate::config::{AuthMethod, Role, SecurityConfig};
use crate::http::{Method, PeerCert, Request, Response};
use crate::metrics::Metrics;
use crate::raft::peer::AUTH_HEADER as PEER_AUTH_HEADER;
use certs::{CertName, CertNames};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokens::Tokens;

// The signature header holds
// `t=<unix ms>,n=<nonce hex>,d=<body SHA-256 hex>,mac=<hex>`.

/// Largest clock difference accepted on a signed peer request.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// Most signed requests remembered against replay (about 50 bytes each).
const MAX_REMEMBERED: usize = 100_000;

/// SHA-256 of a request body, as a signature names it.
pub type BodyDigest = [u8; 32];

/// The digest of a whole body.
pub fn body_digest(body: &[u8]) -> BodyDigest {
    Sha256::digest(body).into()
}

/// Signs peer requests with the cluster secret, and verifies them.
pub struct PeerSigner {
    secret: Vec<u8>,
    cluster: String,
    /// Random per process, so that nonces of a restarted sender never repeat
    /// those of its previous run.
    nonce_prefix: u64,
    nonce_counter: AtomicU64,
    replay: Mutex<ReplayCache>,
}

/// The parts of a signature header.
struct Signature {
    ts: u64,
    nonce: u128,
    digest: BodyDigest,
    mac: Vec<u8>,
}

impl Signature {
    fn parse(value: &str) -> Option<Signature> {
        let (mut ts, mut nonce, mut digest, mut mac) = (None, None, None, None);
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => ts = v.parse::<u64>().ok(),
                Some(("n", v)) if v.len() == 32 => nonce = u128::from_str_radix(v, 16).ok(),
                Some(("d", v)) => digest = from_hex(v).and_then(|d| d.try_into().ok()),
                Some(("mac", v)) => mac = from_hex(v),
                _ => {}
            }
        }
        Some(Signature {
            ts: ts?,
            nonce: nonce?,
            digest: digest?,
            mac: mac?,
        })
    }
}

/// Why a peer signature was refused (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Missing, malformed, too old or made with another secret.
    Invalid,
    /// Valid, but already seen (or older than what is still remembered).
    Replay,
}

impl PeerSigner {
    pub fn new(secret: Vec<u8>, cluster: &str) -> PeerSigner {
        PeerSigner {
            secret,
            cluster: cluster.to_string(),
            nonce_prefix: random_u64(),
            nonce_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayCache::new(now_ms())),
        }
    }

    /// The MAC of a request: `route` is its method, path, target and sender.
    fn mac(
        &self,
        route: [&str; 4],
        ts: u64,
        nonce: u128,
        digest: &BodyDigest,
    ) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        let (ts, nonce, digest) = (ts.to_string(), format!("{nonce:032x}"), to_hex(digest));
        let [method, path, target, from] = route;
        for part in [
            method,
            path,
            target,
            from,
            &self.cluster,
            &ts,
            &nonce,
            &digest,
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Some(mac)
    }

    /// The header value for a request from `from` to `target` whose body is
    /// `body`.
    pub fn sign(&self, method: &str, path: &str, target: u64, from: u64, body: &[u8]) -> String {
        self.sign_digest(method, path, target, from, &body_digest(body))
    }

    /// Like [`PeerSigner::sign`], for a body streamed later whose digest is
    /// known up front (a snapshot file).
    pub fn sign_digest(
        &self,
        method: &str,
        path: &str,
        target: u64,
        from: u64,
        digest: &BodyDigest,
    ) -> String {
        let ts = now_ms();
        let counter = self.nonce_counter.fetch_add(1, Ordering::Relaxed);
        let nonce = (u128::from(self.nonce_prefix) << 64) | u128::from(counter);
        let (target, from) = (target.to_string(), from.to_string());
        let hex = self
            .mac([method, path, &target, &from], ts, nonce, digest)
            .map(|m| to_hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        format!("t={ts},n={nonce:032x},d={},mac={hex}", to_hex(digest))
    }

    /// Checks a signed request's header: fresh, made with our secret
    /// (constant-time comparison of the MAC), and not seen before. The body
    /// is checked against the digest by the route that reads it.
    fn verify(&self, req: &Request) -> Result<(), Refusal> {
        let sig = req
            .header(PEER_AUTH_HEADER)
            .and_then(Signature::parse)
            .ok_or(Refusal::Invalid)?;
        let now = now_ms();
        if now.abs_diff(sig.ts) > MAX_SKEW.as_millis() as u64 {
            return Err(Refusal::Invalid);
        }
        let target = req.header(crate::raft::peer::TARGET_HEADER).unwrap_or("");
        let from_text = req.header(crate::raft::peer::FROM_HEADER).unwrap_or("");
        let from = from_text.parse::<u64>().map_err(|_| Refusal::Invalid)?;
        let mac = self
            .mac(
                [req.method().as_str(), req.path(), target, from_text],
                sig.ts,
                sig.nonce,
                &sig.digest,
            )
            .ok_or(Refusal::Invalid)?;
        mac.verify_slice(&sig.mac).map_err(|_| Refusal::Invalid)?;
        // Only a verified signature is remembered: nobody without the
        // secret can fill the cache.
        let mut replay = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        if replay.admit(now, sig.ts, from, sig.nonce) {
            Ok(())
        } else {
            Err(Refusal::Replay)
        }
    }
}

/// The body digest a signed request names, if it carries a signature.
pub fn signed_digest(req: &Request) -> Option<BodyDigest> {
    Signature::parse(req.header(PEER_AUTH_HEADER)?).map(|s| s.digest)
}

/// Refuses (401) a signed request whose body is not the one its signature
/// covers. Requests without a signature (mTLS peers, or no peer
/// authentication) pass: nothing to check against.
pub fn check_body(req: &Request, digest: &BodyDigest, metrics: &Metrics) -> Result<(), Response> {
    match signed_digest(req) {
        Some(signed) if signed != *digest => {
            metrics.auth_denied("peer_body");
            Err(Response::error(
                401,
                "unauthenticated",
                "the request body is not the one its peer signature covers",
            ))
        }
        _ => Ok(()),
    }
}

/// The signed peer requests seen recently, to refuse a second delivery.
///
/// A nonce cache rather than a per-sender counter: requests from one sender
/// travel over several pooled connections (heartbeats, replication,
/// snapshots, forwarded client requests) and arrive out of order, which a
/// strict counter would refuse. An entry is needed only while its timestamp
/// is within the clock window, since older ones are refused anyway, so the
/// cache normally holds the last ten minutes. Memory has a hard bound
/// ([`MAX_REMEMBERED`]): beyond it the oldest entries are forgotten and the
/// floor rises past them, so nothing older than the floor is accepted and a
/// forgotten request still cannot come back. At start-up the floor is the
/// start time: a request signed before this process started cannot be
/// replayed to it after a restart.
struct ReplayCache {
    /// Requests with an earlier timestamp are refused.
    floor: u64,
    /// (timestamp, sender, nonce), oldest first.
    seen: BTreeSet<(u64, u64, u128)>,
}

impl ReplayCache {
    fn new(floor: u64) -> ReplayCache {
        ReplayCache {
            floor,
            seen: BTreeSet::new(),
        }
    }

    /// Records a request signed at `ts`; false if it was seen before or is
    /// older than what is still remembered.
    fn admit(&mut self, now: u64, ts: u64, from: u64, nonce: u128) -> bool {
        self.floor = self
            .floor
            .max(now.saturating_sub(MAX_SKEW.as_millis() as u64));
        while self.seen.first().is_some_and(|e| e.0 < self.floor) {
            self.seen.pop_first();
        }
        if ts < self.floor || !self.seen.insert((ts, from, nonce)) {
            return false;
        }
        while self.seen.len() > MAX_REMEMBERED {
            if let Some((oldest, _, _)) = self.seen.pop_first() {
                self.floor = oldest.saturating_add(1);
            }
        }
        true
    }
}

/// 64 random bits from the operating system (through rustls' provider),
/// or the clock if that fails.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
    {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The access policy of one node.
pub struct Auth {
    method: AuthMethod,
    /// Replaced as a whole when the token file is re-read.
    tokens: RwLock<Arc<Tokens>>,
    cert_roles: Vec<(CertName, Role)>,
    /// mTLS is on: member certificates authenticate peers.
    mtls: bool,
    peer_names: Vec<CertName>,
    open_health: bool,
    peers: Option<Arc<PeerSigner>>,
    last_log_second: AtomicU64,
    /// The node's metrics, where refusals are counted.
    metrics: Arc<Metrics>,
}

/// Who is calling, as far as a request shows it.
#[derive(Clone, Copy, Default)]
pub struct Identity<'a> {
    /// The `Authorization` header or metadata.
    pub authorization: Option<&'a str>,
    /// The verified client certificate of the connection.
    pub cert: Option<&'a PeerCert>,
    /// The HTTP request, whose peer signature may prove membership.
    pub signed: Option<&'a Request>,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No valid credential for a client operation (401).
    Unauthenticated,
    /// A credential whose role is too low (403).
    Forbidden,
    /// A peer operation from a non-member or a replayed signature (401);
    /// the text is the metrics label.
    NotMember(&'static str),
}

impl Denial {
    /// The label counted in `ferrium_auth_denied_total`.
    fn kind(self) -> &'static str {
        match self {
            Denial::Unauthenticated => "unauthenticated",
            Denial::Forbidden => "forbidden",
            Denial::NotMember(kind) => kind,
        }
    }
}

fn rank(r: Role) -> u8 {
    match r {
        Role::Read => 1,
        Role::Write => 2,
        Role::Admin => 3,
    }
}

impl Auth {
    /// Builds the policy from `[security]`, reading the token and secret
    /// files. Errors name the file and the fix.
    pub fn from_config(
        s: &SecurityConfig,
        cluster: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Auth, String> {
        let tokens = load_tokens(s.auth_method, s)?;
        let peer_names = s
            .peer_names
            .iter()
            .map(|n| CertName::peer_name(n).map_err(|e| format!("security.peer_names: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let cert_roles = s
            .cert_roles
            .iter()
            .map(|c| {
                CertName::role_name(&c.name)
                    .map(|name| (name, c.role))
                    .map_err(|e| format!("security.cert_roles: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let peers = match &s.cluster_secret_file {
            Some(path) => {
                let secret = std::fs::read(path).map_err(|e| {
                    format!(
                        "cannot read security.cluster_secret_file {}: {e}",
                        path.display()
                    )
                })?;
                let secret: Vec<u8> = secret.trim_ascii().to_vec();
                if secret.len() < 16 {
                    return Err(format!(
                        "the cluster secret in {} is shorter than 16 bytes; create one with `openssl rand -hex 32 > FILE`",
                        path.display()
                    ));
                }
                Some(Arc::new(PeerSigner::new(secret, cluster)))
            }
            None => None,
        };
        Ok(Auth {
            method: s.auth_method,
            tokens: RwLock::new(Arc::new(tokens)),
            cert_roles,
            mtls: s.enable_tls && s.enable_mtls,
            peer_names,
            open_health: s.open_health,
            peers,
            last_log_second: AtomicU64::new(0),
            metrics,
        })
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads `security.tokens` and the token file again (SIGHUP) and
    /// replaces the tokens in force; on error they stay. Returns how many
    /// tokens are now accepted, or `None` when this node does not use
    /// tokens (the method itself changes only with a restart).
    pub fn reload_tokens(&self, s: &SecurityConfig) -> Result<Option<usize>, String> {
        if self.method != AuthMethod::Token {
            return Ok(None);
        }
        let fresh = load_tokens(self.method, s)?;
        let count = fresh.len();
        match self.tokens.write() {
            Ok(mut t) => *t = Arc::new(fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
        }
        Ok(Some(count))
    }

    fn tokens(&self) -> Arc<Tokens> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A signer for this node's own peer requests, when a secret is set.
    pub fn signer(&self) -> Option<Arc<PeerSigner>> {
        self.peers.clone()
    }

    /// Whether `who` may ask for `op`; `reads` says whether the request
    /// is read-only by its method ([`Op::required`]).
    pub fn allows(&self, op: Op, reads: bool, who: &Identity<'_>) -> Result<(), Denial> {
        let needed = match op.required(reads) {
            Required::Peer => {
                if self.peers.is_none() && !self.mtls {
                    return Ok(());
                }
                if self.is_member(who.cert) {
                    return Ok(());
                }
                let verdict = match (&self.peers, who.signed) {
                    (Some(p), Some(req)) => p.verify(req),
                    _ => Err(Refusal::Invalid),
                };
                return match verdict {
                    Ok(()) => Ok(()),
                    Err(Refusal::Invalid) => Err(Denial::NotMember("peer")),
                    Err(Refusal::Replay) => Err(Denial::NotMember("peer_replay")),
                };
            }
            Required::Nothing => return Ok(()),
            _ if self.method == AuthMethod::None => return Ok(()),
            Required::Health(_) if self.open_health => return Ok(()),
            Required::Health(role) | Required::Role(role) => role,
        };
        let role = self
            .client_role(who.authorization, who.cert)
            .ok_or(Denial::Unauthenticated)?;
        if rank(role) >= rank(needed) {
            Ok(())
        } else {
            Err(Denial::Forbidden)
        }
    }

    /// Lets an HTTP request for `op` through or answers 401/403.
    pub fn check(&self, op: Op, req: &Request) -> Result<(), Response> {
        let who = Identity {
            authorization: req.header("authorization"),
            cert: req.peer_cert(),
            signed: Some(req),
        };
        let reads = matches!(req.method(), Method::Get | Method::Head);
        let denial = match self.allows(op, reads, &who) {
            Ok(()) => return Ok(()),
            Err(d) => d,
        };
        self.denied(denial.kind(), req);
        Err(match denial {
            Denial::Unauthenticated => self.unauthenticated(),
            Denial::Forbidden => Response::error(
                403,
                "permission_denied",
                "this role does not allow the request",
            ),
            Denial::NotMember(_) => Response::error(
                401,
                "unauthenticated",
                "peer routes accept only cluster members",
            ),
        })
    }

    fn unauthenticated(&self) -> Response {
        if self.method == AuthMethod::Certificate {
            return Response::error(
                401,
                "unauthenticated",
                "this client certificate has no role on this cluster",
            );
        }
        Response::error(
            401,
            "unauthenticated",
            "a valid bearer token is required: send Authorization: Bearer TOKEN",
        )
        .header("www-authenticate", "Bearer realm=\"ferrium\"")
    }

    /// Whether a verified certificate names a cluster member.
    fn is_member(&self, cert: Option<&PeerCert>) -> bool {
        if !self.mtls {
            return false;
        }
        let Some(names) = cert.and_then(|c| CertNames::parse(c.der())) else {
            return false;
        };
        self.peer_names.iter().any(|name| names.has(name))
    }

    /// The highest role any name of a verified client certificate has.
    /// Member certificates act for clients when requests are forwarded, so
    /// they have every role.
    pub fn cert_role(&self, cert: Option<&PeerCert>) -> Option<Role> {
        let cert = cert?;
        if self.is_member(Some(cert)) {
            return Some(Role::Admin);
        }
        let names = CertNames::parse(cert.der())?;
        self.cert_roles
            .iter()
            .filter(|(name, _)| names.has(name))
            .map(|(_, role)| *role)
            .max_by_key(|r| rank(*r))
    }

    /// Lets a gRPC call for `op` (at `path`, for the log) through or
    /// answers `UNAUTHENTICATED`/`PERMISSION_DENIED`.
    pub fn check_grpc(
        &self,
        op: Op,
        path: &str,
        authorization: Option<&str>,
        cert: Option<&PeerCert>,
    ) -> Result<(), tonic::Status> {
        let who = Identity {
            authorization,
            cert,
            signed: None,
        };
        // Every registered method is a call of its own operation; an
        // unknown one is refused as the most privileged call would be.
        let denial = match self.allows(op, op != Op::Unrouted, &who) {
            Ok(()) => return Ok(()),
            Err(d) => d,
        };
        self.metrics.auth_denied(denial.kind());
        self.log_denial(denial.kind(), "gRPC", path);
        Err(match denial {
            Denial::Forbidden => {
                tonic::Status::permission_denied("this role does not allow the call")
            }
            _ => tonic::Status::unauthenticated(if self.method == AuthMethod::Certificate {
                "this client certificate has no role on this cluster"
            } else {
                "a valid bearer token is required in the authorization metadata"
            }),
        })
    }

    /// The role a client proves under this node's method: its bearer token
    /// (`Authorization` header or metadata), or its verified certificate.
    fn client_role(&self, authorization: Option<&str>, cert: Option<&PeerCert>) -> Option<Role> {
        match self.method {
            AuthMethod::Certificate => self.cert_role(cert),
            _ => authorization.and_then(|h| self.role_of(h)),
        }
    }

    /// The role of the bearer token in an `Authorization` value, comparing
    /// every configured token in constant time.
    pub fn role_of(&self, header: &str) -> Option<Role> {
        let (scheme, token) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.tokens().role_of(token.trim())
    }

    fn denied(&self, kind: &str, req: &Request) {
        self.metrics.auth_denied(kind);
        let from = req.remote_addr().to_string();
        self.log_denial(
            kind,
            req.method().as_str(),
            &format!("{} from {from}", req.path()),
        );
    }

    /// Logs a refusal, at most once a second.
    fn log_denial(&self, kind: &str, method: &str, what: &str) {
        let second = now_ms() / 1000;
        if self.last_log_second.swap(second, Ordering::Relaxed) != second {
            log::warn!("refused a request ({kind}) for {method} {what}");
        }
    }
}

/// The tokens of `[security]` when tokens authenticate clients; none
/// otherwise. The error lists every unusable entry.
fn load_tokens(method: AuthMethod, s: &SecurityConfig) -> Result<Tokens, String> {
    if method != AuthMethod::Token {
        return Ok(Tokens::default());
    }
    Tokens::load(s).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_a_second_delivery_and_stays_bounded() {
        let start = 1_000_000_000;
        let mut c = ReplayCache::new(start);
        assert!(!c.admit(start, start - 1, 1, 7), "signed before start-up");
        assert!(c.admit(start, start + 5, 1, 7));
        assert!(!c.admit(start, start + 5, 1, 7), "replay");
        assert!(c.admit(start, start + 5, 2, 7), "same nonce, other sender");
        assert!(c.admit(start, start + 3, 1, 8), "out of order is fine");
        // Entries leave once the clock window has passed them.
        let later = start + MAX_SKEW.as_millis() as u64 + 10;
        assert!(c.admit(later, later, 1, 9));
        assert_eq!(c.seen.len(), 1);
        // Past the bound the oldest go, and the floor rises above them.
        for i in 0..MAX_REMEMBERED as u64 + 10 {
            assert!(c.admit(later, later + 1 + i, 3, u128::from(i)));
        }
        assert_eq!(c.seen.len(), MAX_REMEMBERED);
        assert!(!c.admit(later, later + 1, 3, 0), "forgotten, still refused");
    }

    #[test]
    fn signature_header_round_trips() {
        let signer = PeerSigner::new(b"0123456789abcdef".to_vec(), "c");
        let a = signer.sign("POST", "/raft/vote", 2, 1, b"{}");
        let b = signer.sign("POST", "/raft/vote", 2, 1, b"{}");
        let (sa, sb) = (Signature::parse(&a).unwrap(), Signature::parse(&b).unwrap());
        assert_ne!(sa.nonce, sb.nonce, "every request has its own nonce");
        assert_eq!(sa.digest, body_digest(b"{}"));
        let mac = signer
            .mac(
                ["POST", "/raft/vote", "2", "1"],
                sa.ts,
                sa.nonce,
                &sa.digest,
            )
            .unwrap();
        assert!(mac.verify_slice(&sa.mac).is_ok());
        let other = signer
            .mac(
                ["POST", "/raft/vote", "2", "1"],
                sa.ts,
                sa.nonce,
                &body_digest(b"[]"),
            )
            .unwrap();
        assert!(other.verify_slice(&sa.mac).is_err(), "the digest is signed");
        assert!(Signature::parse("t=1,mac=00").is_none());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("abc"), None);
    }
}
