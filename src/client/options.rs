//! What a client is told: the endpoints, the timeout, the bearer token and
//! the TLS files, checked once with the words ferriumctl's `--help` uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http::{ClientConfig, ClientTls};

/// The system CA bundle on Debian and Red Hat systems.
const SYSTEM_CA: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// One node to talk to: `host:port` (plain HTTP, or gRPC without TLS), or
/// `https://host:port`. `http://` and a trailing `/` are dropped when parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    /// The endpoint as written, less `http://` and a trailing `/`.
    pub fn parse(text: &str) -> Result<Endpoint, OptionsError> {
        let e = text
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if !e.contains(':') {
            return Err(OptionsError::NoPort(e.to_string()));
        }
        Ok(Endpoint(e.to_string()))
    }

    /// A comma-separated list (`a:1,b:2`); blanks between commas are ignored
    /// and at least one endpoint must remain.
    pub fn parse_list(list: &str) -> Result<Vec<Endpoint>, OptionsError> {
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(OptionsError::NoEndpoints);
        }
        Ok(endpoints)
    }

    /// The endpoint as messages name it: `host:port` or `https://host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the node serves TLS here (`https://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// `host:port`, without the scheme.
    pub fn addr(&self) -> &str {
        self.0.strip_prefix("https://").unwrap_or(&self.0)
    }

    /// The URL of `path` on this endpoint (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        url(&self.0, path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URL of `path` on `endpoint`: `https://` ones as they are, anything
/// else (a configured `host:port`, or a leader's advertised address) over
/// plain HTTP.
pub(crate) fn url(endpoint: &str, path: &str) -> String {
    if endpoint.starts_with("https://") {
        format!("{endpoint}{path}")
    } else {
        format!("http://{endpoint}{path}")
    }
}

/// The files that verify the nodes and, for mTLS, identify this client.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM CA bundle; without it the system bundle is used.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Everything a [`super::RestClient`] or [`super::GrpcClient`] is built from.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Tried in order.
    pub endpoints: Vec<Endpoint>,
    /// How long one endpoint may take: to connect (at most 3 s of it), to
    /// answer, and between two reads of an answer.
    pub timeout: Duration,
    /// Sent as `authorization: Bearer TOKEN`.
    pub token: Option<String>,
    pub tls: TlsOptions,
}

impl ClientOptions {
    /// Options for `endpoints` with ferriumctl's defaults: a 10 s timeout,
    /// no token, the system CA bundle for `https://` endpoints.
    pub fn new(endpoints: Vec<Endpoint>) -> ClientOptions {
        ClientOptions {
            endpoints,
            timeout: Duration::from_secs(10),
            token: None,
            tls: TlsOptions::default(),
        }
    }

    /// The TLS client configuration, offering HTTP/1.1 or (`h2`, for gRPC)
    /// HTTP/2; `None` when no endpoint is `https://` and neither a CA nor a
    /// certificate was given.
    pub fn client_tls(&self, h2: bool) -> Result<Option<Arc<ClientTls>>, OptionsError> {
        let wanted = self.endpoints.iter().any(Endpoint::is_tls);
        let t = &self.tls;
        if !wanted && t.ca.is_none() && t.cert.is_none() {
            return Ok(None);
        }
        let identity = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err(OptionsError::CertWithoutKey),
        };
        let ca = match &t.ca {
            Some(c) => c.clone(),
            None => SYSTEM_CA
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .map(Path::to_path_buf)
                .ok_or(OptionsError::NoSystemCa)?,
        };
        let tls = if h2 {
            ClientTls::new_h2(&ca, identity)
        } else {
            ClientTls::new(&ca, identity)
        };
        tls.map(|t| Some(Arc::new(t))).map_err(OptionsError::Tls)
    }

    /// The HTTP client settings these options imply (TLS included).
    pub fn http_config(&self) -> Result<ClientConfig, OptionsError> {
        Ok(ClientConfig {
            connect_timeout: self.timeout.min(Duration::from_secs(3)),
            request_timeout: self.timeout,
            body_read_timeout: self.timeout,
            tls: self.client_tls(false)?,
            ..ClientConfig::default()
        })
    }
}

/// Options that cannot work. The texts name ferriumctl's flags, which the
/// other tools share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// The endpoint list was empty.
    NoEndpoints,
    /// An endpoint without `:port`.
    NoPort(String),
    /// A certificate without its key or the other way round.
    CertWithoutKey,
    /// No CA given and none of the usual system bundles exists.
    NoSystemCa,
    /// A TLS file could not be read or used; says which and why.
    Tls(String),
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::NoEndpoints => {
                f.write_str("no endpoints: give --endpoints host:port[,host:port...]")
            }
            OptionsError::NoPort(e) => write!(
                f,
                "endpoint {e:?} has no port: write host:port, e.g. 127.0.0.1:8001"
            ),
            OptionsError::CertWithoutKey => f.write_str("--cert and --key go together"),
            OptionsError::NoSystemCa => {
                f.write_str("no system CA bundle found: give --cacert FILE (the cluster's ca.crt)")
            }
            OptionsError::Tls(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for OptionsError {}
