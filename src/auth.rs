//! Who may call what: bearer tokens or client certificates with roles for
//! clients; a member certificate (mTLS) or a cluster secret for peers.
//!
//! Roles nest: `read` (reads, lists, leader, metrics, health), `write`
//! (plus writes), `admin` (plus init and membership). Peer routes under
//! `/raft/` accept only members: with mTLS, a connection whose verified
//! certificate carries one of `security.peer_names`; with a cluster secret,
//! a request signed with it. The secret itself never travels: each request
//! carries `HMAC-SHA256(secret, method, path, target, sender, cluster,
//! timestamp)`, and requests whose timestamp is more than five minutes off
//! are refused. With certificate authentication a client's role comes from
//! the names of its verified certificate, each matched by its kind
//! ([`certs`]). Bearer tokens ([`tokens`]) are kept as digests and re-read
//! from the token file on SIGHUP.
//!
//! Failures answer 401 (with `WWW-Authenticate`) or 403 and say nothing an
//! attacker could use; each is counted in the metrics and logged at most
//! once a second. Tokens and the secret are never logged or printed.

pub mod certs;
pub mod tokens;

use crate::config::{AuthMethod, Role, SecurityConfig};
use crate::http::{Method, PeerCert, Request, Response};
use crate::metrics::METRICS;
use certs::{CertName, CertNames};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokens::Tokens;

/// Header carrying a peer request's signature: `t=<unix ms>,mac=<hex>`.
pub const PEER_AUTH_HEADER: &str = "x-ferrium-auth";

/// Largest clock difference accepted on a signed peer request.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// Signs peer requests with the cluster secret.
pub struct PeerSigner {
    secret: Vec<u8>,
    cluster: String,
}

impl PeerSigner {
    pub fn new(secret: Vec<u8>, cluster: &str) -> PeerSigner {
        PeerSigner {
            secret,
            cluster: cluster.to_string(),
        }
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        target: &str,
        from: &str,
        ts: u64,
    ) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        for part in [method, path, target, from, &self.cluster, &ts.to_string()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Some(mac)
    }

    /// The header value for a request from `from` to `target`.
    pub fn sign(&self, method: &str, path: &str, target: u64, from: u64) -> String {
        let ts = now_ms();
        let hex = self
            .mac(method, path, &target.to_string(), &from.to_string(), ts)
            .map(|m| to_hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        format!("t={ts},mac={hex}")
    }

    /// Checks a signed request; constant-time comparison of the MAC.
    fn verify(&self, req: &Request) -> bool {
        let Some(value) = req.header(PEER_AUTH_HEADER) else {
            return false;
        };
        let mut ts = None;
        let mut mac_hex = None;
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => ts = v.parse::<u64>().ok(),
                Some(("mac", v)) => mac_hex = from_hex(v),
                _ => {}
            }
        }
        let (Some(ts), Some(given)) = (ts, mac_hex) else {
            return false;
        };
        if now_ms().abs_diff(ts) > MAX_SKEW.as_millis() as u64 {
            return false;
        }
        let target = req
            .header(crate::raft::network::TARGET_HEADER)
            .unwrap_or("");
        let from = req.header(crate::raft::network::FROM_HEADER).unwrap_or("");
        match self.mac(req.method().as_str(), req.path(), target, from, ts) {
            Some(mac) => mac.verify_slice(&given).is_ok(),
            None => false,
        }
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
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Role(Role),
    Peer,
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
    pub fn from_config(s: &SecurityConfig, cluster: &str) -> Result<Auth, String> {
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
        })
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

    /// What `method path` needs under this policy.
    pub fn needs(&self, method: &Method, path: &str) -> Needs {
        if path.starts_with("/raft/") {
            return if self.peers.is_some() || self.mtls {
                Needs::Peer
            } else {
                Needs::Nothing
            };
        }
        if self.method == AuthMethod::None {
            return Needs::Nothing;
        }
        match path {
            "/health" | "/ready" if self.open_health => Needs::Nothing,
            "/write" => Needs::Role(Role::Write),
            "/init" | "/add-learner" | "/change-membership" => Needs::Role(Role::Admin),
            _ if matches!(method, Method::Get | Method::Head)
                || path == "/read"
                || path == "/list" =>
            {
                Needs::Role(Role::Read)
            }
            _ => Needs::Role(Role::Admin),
        }
    }

    /// Lets the request through or answers 401/403.
    pub fn check(&self, req: &Request) -> Result<(), Response> {
        match self.needs(req.method(), req.path()) {
            Needs::Nothing => Ok(()),
            Needs::Peer => {
                let ok = self.is_member(req.peer_cert())
                    || self.peers.as_ref().is_some_and(|p| p.verify(req));
                if ok {
                    return Ok(());
                }
                self.denied("peer", req);
                Err(Response::error(
                    401,
                    "unauthenticated",
                    "peer routes accept only cluster members",
                ))
            }
            Needs::Role(needed) => {
                let Some(role) = self.client_role(req.header("authorization"), req.peer_cert())
                else {
                    self.denied("unauthenticated", req);
                    return Err(self.unauthenticated());
                };
                if rank(role) >= rank(needed) {
                    return Ok(());
                }
                self.denied("forbidden", req);
                Err(Response::error(
                    403,
                    "permission_denied",
                    "this role does not allow the request",
                ))
            }
        }
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

    /// Checks a gRPC call by its path (`/package.Service/Method`) and its
    /// `authorization` metadata.
    pub fn check_grpc(
        &self,
        path: &str,
        authorization: Option<&str>,
        cert: Option<&PeerCert>,
    ) -> Result<(), tonic::Status> {
        if self.method == AuthMethod::None {
            return Ok(());
        }
        let method = path.rsplit('/').next().unwrap_or("");
        let needed = match (path.starts_with("/grpc.health.v1."), method) {
            (true, _) | (_, "HealthCheck") if self.open_health => return Ok(()),
            (_, "Set" | "Delete" | "BatchSet") => Role::Write,
            (_, "Initialize" | "AddLearner" | "ChangeMembership") => Role::Admin,
            (
                _,
                "Get" | "ListKeys" | "Exists" | "GetMetrics" | "GetLeader" | "HealthCheck"
                | "Check" | "Watch",
            ) => Role::Read,
            _ => Role::Admin,
        };
        let Some(role) = self.client_role(authorization, cert) else {
            METRICS.auth_denied("unauthenticated");
            self.log_denial("unauthenticated", "gRPC", path);
            return Err(tonic::Status::unauthenticated(
                if self.method == AuthMethod::Certificate {
                    "this client certificate has no role on this cluster"
                } else {
                    "a valid bearer token is required in the authorization metadata"
                },
            ));
        };
        if rank(role) >= rank(needed) {
            return Ok(());
        }
        METRICS.auth_denied("forbidden");
        self.log_denial("forbidden", "gRPC", path);
        Err(tonic::Status::permission_denied(
            "this role does not allow the call",
        ))
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
        METRICS.auth_denied(kind);
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
    fn hex_round_trip() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("abc"), None);
    }
}
