//! A fault-injecting TCP proxy for the peer links of a test cluster.
//!
//! Node B binds its real port and advertises the port of its proxy, so every
//! peer connection to B (Raft RPCs, forwarded writes and read-index calls)
//! passes through the proxy, while test clients talk to B's real port. Each
//! peer request carries `x-ferrium-from: <id>`; the proxy learns the source of
//! a connection from its first request head and then applies the rule of the
//! directed link: requests travel on link A->B, answers on link B->A. That is
//! enough for one-way and two-way partitions, bridges and slow links without
//! root or kernel features.
//!
//! Between TLS peers the header is encrypted, so a proxy made with
//! [`Net::with_tls`] terminates TLS like a load balancer that holds the
//! nodes' keys: it presents node B's own certificate to the caller, requires
//! a client certificate and learns the source from its member name
//! (`node<id>.ferrium.internal`), then calls B with the caller's own
//! certificate. Both ends still verify real certificates: A checks B's
//! server name, B checks that A's certificate names a member.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a directed link does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    /// Bytes are swallowed and the connection held open until its owner
    /// gives up: the sender sees a timeout, never an error.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    Blackhole,
    /// Every chunk waits this long before it is forwarded.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    Delay(Duration),
}

/// The rules of every directed link, shared by all proxies of a cluster.
#[derive(Clone, Default)]
pub struct Net {
    rules: Arc<Mutex<HashMap<(u64, u64), LinkMode>>>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// The folder with `ca.crt` and `node<id>.crt`/`.key` when the peers
    /// speak TLS.
    tls: Option<PathBuf>,
}

impl Net {
    /// Proxies for TLS peers whose certificates (made with the documented
    /// commands) are in `dir`.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn with_tls(dir: PathBuf) -> Net {
        Net {
            tls: Some(dir),
            ..Net::default()
        }
    }

    pub fn mode(&self, from: u64, to: u64) -> LinkMode {
        *self
            .rules
            .lock()
            .expect("rules lock")
            .get(&(from, to))
            .unwrap_or(&LinkMode::Pass)
    }

    /// Sets the rule of the directed link `from -> to`.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn set(&self, from: u64, to: u64, mode: LinkMode) {
        let mut rules = self.rules.lock().expect("rules lock");
        if mode == LinkMode::Pass {
            rules.remove(&(from, to));
        } else {
            rules.insert((from, to), mode);
        }
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for x in a {
            for y in b {
                self.set(*x, *y, LinkMode::Blackhole);
                self.set(*y, *x, LinkMode::Blackhole);
            }
        }
    }

    /// Every link passes again.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn heal(&self) {
        self.rules.lock().expect("rules lock").clear();
    }

    /// Starts the proxy of node `to`, forwarding to `target_port`, on a
    /// port the kernel picks; returns that port. The proxy keeps its
    /// listener until [`Net::shutdown`].
    pub fn spawn_proxy(&self, to: u64, target_port: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy port of a node");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking proxy listener");
        let net = self.clone();
        std::thread::spawn(move || {
            while !net.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let net = net.clone();
                        std::thread::spawn(move || match net.tls.clone() {
                            Some(dir) => net.serve_tls(&dir, down, to, target_port),
                            None => net.serve(down, to, target_port),
                        });
                    }
                    // Nonblocking accept, so that the loop sees `stop`: a
                    // short pause between polls.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        port
    }

    /// Stops accepting and closes every proxied connection.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.open.lock().expect("open lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn track(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            let mut open = self.open.lock().expect("open lock");
            open.retain(|s| s.peer_addr().is_ok());
            open.push(c);
        }
    }

    /// One accepted connection: learn its source, then pump both ways.
    fn serve(&self, mut down: TcpStream, to: u64, target_port: u16) {
        let _ = down.set_nonblocking(false);
        self.track(&down);
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let from = loop {
            match down.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = find(&head, b"\r\n\r\n") {
                break source(&head[..end]);
            }
            if head.len() > 64 * 1024 {
                break 0;
            }
        };
        let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
            let _ = down.shutdown(Shutdown::Both);
            return;
        };
        self.track(&up);
        let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
            return;
        };
        let net = self.clone();
        let back = std::thread::spawn(move || net.pump(up2, down2, to, from, Vec::new()));
        self.pump(down, up, from, to, head);
        let _ = back.join();
    }

    /// Copies `src` to `dst` under the rule of link `from -> to`. Client
    /// connections (no source header) always pass.
    fn pump(&self, mut src: TcpStream, mut dst: TcpStream, from: u64, to: u64, first: Vec<u8>) {
        let mut chunk = first;
        let mut buf = vec![0u8; 64 * 1024];
        let mut held = false;
        // Wake up now and then to see whether a held link has healed: the
        // bytes it swallowed are gone, so the connection is closed then, as
        // a real connection would time out, and the peer reconnects.
        let _ = src.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        loop {
            if !chunk.is_empty() && !held {
                let mode = if from == 0 || to == 0 {
                    LinkMode::Pass
                } else {
                    self.mode(from, to)
                };
                match mode {
                    LinkMode::Pass => {}
                    // The slow link itself.
                    LinkMode::Delay(d) => std::thread::sleep(d),
                    LinkMode::Blackhole => held = true,
                }
                if !held && dst.write_all(&chunk).is_err() {
                    break;
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => chunk = buf[..n].to_vec(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    chunk.clear();
                    if held && !matches!(self.mode(from, to), LinkMode::Blackhole) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = src.shutdown(Shutdown::Both);
        let _ = dst.shutdown(Shutdown::Both);
    }

    /// One accepted TLS connection: handshake as `to`, learn the source
    /// from the caller's certificate, call `to` as the source, then pump
    /// plaintext both ways under the links' rules.
    fn serve_tls(&self, dir: &std::path::Path, mut down: TcpStream, to: u64, target_port: u16) {
        let _ = down.set_nonblocking(false);
        self.track(&down);
        let handshake = Some(Duration::from_secs(10));
        let _ = down.set_read_timeout(handshake);
        let _ = down.set_write_timeout(handshake);
        let Ok(server) = rustls::ServerConnection::new(super::tls::server_config(
            dir,
            "ca.crt",
            &format!("node{to}"),
        )) else {
            return;
        };
        let mut server = rustls::Connection::from(server);
        while server.is_handshaking() {
            if server.complete_io(&mut down).is_err() {
                let _ = down.shutdown(Shutdown::Both);
                return;
            }
        }
        let from = server
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(member_id);
        let Some(from) = from else {
            // Only members call through a proxy; anything else is refused.
            let _ = down.shutdown(Shutdown::Both);
            return;
        };
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", target_port)) else {
            let _ = down.shutdown(Shutdown::Both);
            return;
        };
        self.track(&up);
        let _ = up.set_read_timeout(handshake);
        let _ = up.set_write_timeout(handshake);
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let config = super::tls::client_config(dir, "ca.crt", Some(&format!("node{from}")));
        let Ok(client) = rustls::ClientConnection::new(config, name) else {
            return;
        };
        let mut client = rustls::Connection::from(client);
        while client.is_handshaking() {
            if client.complete_io(&mut up).is_err() {
                let _ = up.shutdown(Shutdown::Both);
                let _ = down.shutdown(Shutdown::Both);
                return;
            }
        }
        let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
            return;
        };
        let down = Arc::new(TlsSide {
            conn: Mutex::new(server),
            sock: down,
        });
        let up = Arc::new(TlsSide {
            conn: Mutex::new(client),
            sock: up,
        });
        let net = self.clone();
        let (d, u) = (down.clone(), up.clone());
        let back = std::thread::spawn(move || net.pump_tls(up2, u, d, to, from));
        self.pump_tls(down2, down, up, from, to);
        let _ = back.join();
    }

    /// Like [`Net::pump`], for the plaintext inside two TLS sessions: what
    /// `src` decrypts from `raw` (its socket) is sent encrypted on `dst`.
    fn pump_tls(
        &self,
        mut raw: TcpStream,
        src: Arc<TlsSide>,
        dst: Arc<TlsSide>,
        from: u64,
        to: u64,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut held = false;
        let _ = raw.set_read_timeout(Some(Duration::from_millis(200)));
        // What the session decrypted during the handshake comes first.
        let mut pending = src.receive(&[]);
        while let Ok((chunk, closed)) = pending {
            if !chunk.is_empty() && !held {
                match self.mode(from, to) {
                    LinkMode::Pass => {}
                    LinkMode::Delay(d) => std::thread::sleep(d),
                    LinkMode::Blackhole => held = true,
                }
                if !held && dst.send(&chunk).is_err() {
                    break;
                }
            }
            if closed || self.stop.load(Ordering::SeqCst) {
                break;
            }
            pending = match raw.read(&mut buf) {
                Ok(0) => break,
                // A held link swallows what it is sent.
                Ok(_) if held => Ok((Vec::new(), false)),
                Ok(n) => src.receive(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if held && !matches!(self.mode(from, to), LinkMode::Blackhole) {
                        break;
                    }
                    Ok((Vec::new(), false))
                }
                Err(_) => break,
            };
        }
        let _ = src.sock.shutdown(Shutdown::Both);
        let _ = dst.sock.shutdown(Shutdown::Both);
    }
}

/// One end of a terminated TLS connection: the session, shared by the two
/// pump threads (each holds the lock only to move bytes, never to wait for
/// the network), and its socket.
struct TlsSide {
    conn: Mutex<rustls::Connection>,
    sock: TcpStream,
}

impl TlsSide {
    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds bytes read from the socket to the session, sends whatever the
    /// session has to say back (e.g. a key update), and returns the
    /// plaintext decrypted so far and whether the peer closed the session.
    fn receive(&self, mut bytes: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
        let mut conn = self.lock();
        let mut out = Vec::new();
        let mut closed = Self::drain(&mut conn, &mut out)?;
        while !bytes.is_empty() && !closed {
            conn.read_tls(&mut bytes)?;
            conn.process_new_packets().map_err(std::io::Error::other)?;
            closed = Self::drain(&mut conn, &mut out)?;
        }
        Self::flush(&mut conn, &self.sock)?;
        Ok((out, closed))
    }

    /// Moves the decrypted plaintext to `out`; true once the peer closed.
    fn drain(conn: &mut rustls::Connection, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts `data` and writes it to the socket.
    fn send(&self, data: &[u8]) -> std::io::Result<()> {
        let mut conn = self.lock();
        conn.writer().write_all(data)?;
        Self::flush(&mut conn, &self.sock)
    }

    fn flush(conn: &mut rustls::Connection, mut sock: &TcpStream) -> std::io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(())
    }
}

/// The member id a peer certificate names (`node<id>.ferrium.internal`).
fn member_id(cert: &rustls::pki_types::CertificateDer<'_>) -> Option<u64> {
    let names = ferrium::auth::certs::CertNames::parse(cert)?;
    names.dns_names().find_map(|n| {
        n.strip_prefix("node")?
            .strip_suffix(".ferrium.internal")?
            .parse()
            .ok()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The sender id in a request head, 0 when there is none (a client).
fn source(head: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-ferrium-from"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}
