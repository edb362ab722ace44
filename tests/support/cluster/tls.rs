//! TLS for the harness: certificates made with the `openssl` commands that
//! CONFIG.md documents (run exactly as written there), and blocking HTTPS
//! requests over rustls.

use super::{Reply, parse_reply, request_text};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The shell block of CONFIG.md that follows the `<!-- tls-setup -->` mark.
pub fn documented_setup() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CONFIG.md"))
        .expect("read CONFIG.md");
    let after = doc
        .split_once("<!-- tls-setup -->")
        .expect("CONFIG.md has a <!-- tls-setup --> mark")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a ```sh block follows the mark")
        .1;
    block
        .split_once("```")
        .expect("the block is closed")
        .0
        .to_string()
}

/// Runs `script` with bash in `dir`, failing the test with its output.
pub fn run_in(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\nstdout: {}\nstderr: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts `dir/ca.crt` and, with `identity = Some("client")`,
/// presents `dir/client.crt` with `dir/client.key`.
pub fn client_config(dir: &Path, ca: &str, identity: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join(ca)).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(name) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
                .expect("client cert")
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server that presents `dir/<identity>.crt` and requires a client
/// certificate signed by `dir/<ca>` (HTTP/1.1 only, as the nodes' peer
/// client speaks it).
pub fn server_config(dir: &Path, ca: &str, identity: &str) -> Arc<ServerConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join(ca)).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join(format!("{identity}.crt")))
        .expect("server cert")
        .map(|c| c.expect("a certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{identity}.key"))).expect("key");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One TLS connection, kept open across requests.
pub struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    addr: String,
}

impl TlsConn {
    /// Connects and completes the handshake (an error when the server
    /// refuses it).
    pub fn open(addr: &str, config: Arc<ClientConfig>, timeout: Duration) -> std::io::Result<Self> {
        let sock: std::net::SocketAddr = addr.parse().expect("socket address");
        let tcp = TcpStream::connect_timeout(&sock, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let name = ServerName::IpAddress(sock.ip().into());
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        // TLS 1.3 servers check the client certificate after the client
        // thinks the handshake is done; a refusal arrives with the first
        // read, which the caller's first request sees.
        Ok(TlsConn {
            stream,
            addr: addr.to_string(),
        })
    }

    /// The DNS names in the server's certificate.
    pub fn server_names(&self) -> Vec<String> {
        let chain = self.stream.conn.peer_certificates().expect("server cert");
        let names = ferrium::auth::certs::CertNames::parse(&chain[0]).expect("a certificate");
        names.dns_names().map(str::to_string).collect()
    }

    /// Sends a keep-alive request and reads exactly its response.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        let text = request_text(&self.addr, method, path, body, headers, false);
        self.stream.write_all(text.as_bytes())?;
        self.stream.flush()?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    return parse_reply(&raw);
                }
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&buf[..n]);
        }
    }
}

/// One HTTPS request on a fresh connection (`Connection: close`).
pub fn request(
    addr: &str,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let mut conn = TlsConn::open(addr, config, timeout)?;
    conn.send(method, path, body, headers)
}
