//! TLS for the listeners and the client: rustls configurations built from PEM
//! files, replaced as a whole on reload, and the verified certificate a
//! client presented. What the names in that certificate mean is for `auth`
//! to decide; this module never reads them.
//!
//! Both sides use rustls with the ring provider and its safe defaults: TLS 1.3
//! and TLS 1.2 with forward-secret AEAD suites only. A reload builds new
//! configurations from the files and swaps them in; connections already
//! established keep the session they negotiated, new ones get the new
//! certificate. A reload that fails (a missing or mismatched file) keeps the
//! running configuration.
//!
//! On a port that serves both HTTP/1.1 and HTTP/2 (the HTTP listener, which
//! hands gRPC over), the protocol is chosen from the ClientHello: a client
//! that offers `http/1.1` (curl, browsers, our own client) gets HTTP/1.1, one
//! that offers only `h2` (gRPC clients) gets HTTP/2. Selecting `h2` for curl
//! just because it also offers it would make it speak HTTP/2 to the REST API.
//!
//! A request in clear text on a TLS port is answered with a clear-text 400
//! that says to use `https://`, as nginx does, rather than a TLS alert the
//! user cannot read.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Something a connection can run over: a TCP stream or a TLS stream on one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection of either kind.
pub type BoxIo = Box<dyn Io>;

/// The files TLS is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle: verifies servers we connect to and, with
    /// `require_client_cert`, the certificates clients present.
    pub ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `ca` (mTLS).
    pub require_client_cert: bool,
}

/// The leaf certificate a client presented, verified against the CA during
/// the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    der: CertificateDer<'static>,
}

impl PeerCert {
    pub fn new(der: CertificateDer<'static>) -> PeerCert {
        PeerCert { der }
    }

    /// The certificate, DER-encoded.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "cannot read a PEM private key from {}: {e}; expected PKCS#8, PKCS#1 or SEC1 (-----BEGIN PRIVATE KEY-----)",
            path.display()
        )
    })
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA bundle")? {
        roots.add(cert).map_err(|e| {
            format!(
                "CA bundle {}: a certificate is not usable as a trust anchor: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// The server configurations of one certificate: one per ALPN choice.
struct ServerConfigs {
    http1: Arc<ServerConfig>,
    h2: Arc<ServerConfig>,
}

fn server_configs(files: &TlsFiles) -> Result<ServerConfigs, String> {
    let certs = read_certs(&files.cert, "certificate")?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let builder = if files.require_client_cert {
        let ca = files
            .ca
            .as_deref()
            .ok_or("client certificates are required but no CA bundle is set")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(read_roots(ca)?, provider())
            .build()
            .map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut base = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "certificate {} and key {} do not form a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    base.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    let http1 = Arc::new(base.clone());
    base.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(ServerConfigs {
        http1,
        h2: Arc::new(base),
    })
}

/// The client configuration: servers verified against `ca`, and our own
/// certificate presented when servers ask for one (mTLS between peers).
fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[u8],
) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(read_roots(ca)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert, "certificate")?, read_key(key)?)
            .map_err(|e| {
                format!(
                    "certificate {} and key {} do not form a usable pair: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// What a TLS handshake on a listener led to.
pub struct Accepted {
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// HTTP/2 was negotiated with ALPN.
    pub h2: bool,
    /// The verified client certificate, when one was presented.
    pub peer: Option<Arc<PeerCert>>,
}

/// The server side: the current configurations, replaced on reload.
pub struct ServerTls {
    files: RwLock<TlsFiles>,
    current: RwLock<Arc<ServerConfigs>>,
    handshake_failures: AtomicU64,
    plaintext_requests: AtomicU64,
}

impl ServerTls {
    /// Loads the files; the error names the file and what is wrong with it.
    pub fn new(files: TlsFiles) -> Result<ServerTls, String> {
        let configs = server_configs(&files)?;
        Ok(ServerTls {
            files: RwLock::new(files),
            current: RwLock::new(Arc::new(configs)),
            handshake_failures: AtomicU64::new(0),
            plaintext_requests: AtomicU64::new(0),
        })
    }

    /// Reads the files again (they may have changed on disk, or `files`
    /// names new ones). New connections use the result; on error the
    /// running configuration stays. Whether client certificates are
    /// required does not change.
    pub fn reload(&self, files: Option<TlsFiles>) -> Result<(), String> {
        let required = self.requires_client_cert();
        let mut files = match files {
            Some(f) => f,
            None => self.files.read().map_err(|_| "lock poisoned")?.clone(),
        };
        files.require_client_cert = required;
        let configs = server_configs(&files)?;
        *self.current.write().map_err(|_| "lock poisoned")? = Arc::new(configs);
        *self.files.write().map_err(|_| "lock poisoned")? = files;
        Ok(())
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn requires_client_cert(&self) -> bool {
        match self.files.read() {
            Ok(f) => f.require_client_cert,
            Err(poisoned) => poisoned.into_inner().require_client_cert,
        }
    }

    fn configs(&self) -> Arc<ServerConfigs> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Handshakes that failed (bad certificate, garbage, protocol mismatch).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Clear-text requests that reached the TLS port.
    pub fn plaintext_requests(&self) -> u64 {
        self.plaintext_requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_plaintext(&self) {
        self.plaintext_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the server handshake. With `h2_allowed`, a client offering only
    /// `h2` gets HTTP/2; with `h2_only` (the gRPC port) every client does.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        h2_allowed: bool,
        h2_only: bool,
    ) -> io::Result<Accepted> {
        let result = self.handshake(tcp, h2_allowed, h2_only).await;
        if result.is_err() {
            self.handshake_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        h2_allowed: bool,
        h2_only: bool,
    ) -> io::Result<Accepted> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
        let configs = self.configs();
        let wants_h2 = h2_only
            || (h2_allowed
                && start.client_hello().alpn().is_some_and(|offers| {
                    let offers: Vec<&[u8]> = offers.collect();
                    offers.contains(&ALPN_H2) && !offers.contains(&ALPN_HTTP11)
                }));
        let config = if wants_h2 {
            configs.h2.clone()
        } else {
            configs.http1.clone()
        };
        let stream = start.into_stream(config).await?;
        let (_, session) = stream.get_ref();
        let h2 = session.alpn_protocol() == Some(ALPN_H2);
        let peer = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::new(PeerCert::new(leaf.clone().into_owned())));
        Ok(Accepted { stream, h2, peer })
    }
}

/// The client side: the current configuration, replaced on reload.
pub struct ClientTls {
    current: RwLock<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Verifies servers against the PEM bundle `ca`; presents the
    /// certificate and key of `identity`, if given, to servers that ask.
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, String> {
        Ok(ClientTls {
            current: RwLock::new(Arc::new(client_config(ca, identity, ALPN_HTTP11)?)),
        })
    }

    /// Like [`ClientTls::new`], offering HTTP/2 in ALPN (for gRPC clients).
    pub fn new_h2(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, String> {
        Ok(ClientTls {
            current: RwLock::new(Arc::new(client_config(ca, identity, ALPN_H2)?)),
        })
    }

    /// Reads the files again; on error the running configuration stays.
    pub fn reload(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<(), String> {
        let config = client_config(ca, identity, ALPN_HTTP11)?;
        *self.current.write().map_err(|_| "lock poisoned")? = Arc::new(config);
        Ok(())
    }

    /// Connects TLS over `tcp` to `host` (a DNS name or an IP address; the
    /// server's certificate must name it).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<BoxIo> {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "not a valid TLS server name")
            })?,
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Box::new(stream))
    }
}

/// Whether the first bytes waiting on `tcp` look like a clear-text HTTP
/// request rather than a TLS record (which starts with 0x16).
pub async fn looks_like_plain_http(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tcp.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Opens TLS connections for a tonic client: TCP to `addr`, then our rustls
/// client (offering `h2`: see [`ClientTls::new_h2`]), which
/// verifies the server's certificate for `host`. Used with
/// `Endpoint::connect_with_connector` by [`crate::client::GrpcClient`] and the tests.
#[derive(Clone)]
pub struct TlsConnector {
    pub tls: Arc<ClientTls>,
    pub host: String,
    pub addr: String,
}

impl TlsConnector {
    /// A connector to `addr` (`host:port`, the host also naming the
    /// certificate to expect).
    pub fn new(tls: Arc<ClientTls>, addr: &str) -> TlsConnector {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        TlsConnector {
            tls,
            host,
            addr: addr.to_string(),
        }
    }
}

type TlsIo = hyper_util::rt::TokioIo<BoxIo>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = tonic::codegen::BoxFuture<TlsIo, std::io::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.addr).await?;
            let _ = tcp.set_nodelay(true);
            let io = this.tls.connect(&this.host, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(io))
        })
    }
}
