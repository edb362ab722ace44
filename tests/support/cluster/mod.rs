//! The shared cluster harness: starts real `ferrium-server` processes on
//! loopback ports, talks to them over HTTP/1.1 (plain, or TLS for clusters
//! started with [`Cluster::start_tls`]), and injects faults (kill -9,
//! SIGSTOP/SIGCONT, restart).
//!
//! Each cluster lives in its own scratch directory (configs, data, logs).
//! When a test fails the directory is kept and its path printed, so the
//! nodes' logs can be read.

pub mod etcd;
pub mod inproc;
pub mod proxy;
pub mod tls;
pub mod watch;

use proxy::Net;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_ferrium-server");

/// The server binary: `FERRIUM_SERVER_BIN` if set (to test an installed or
/// copied binary), else the one cargo built for this test run.
pub fn server_bin() -> String {
    std::env::var("FERRIUM_SERVER_BIN").unwrap_or_else(|_| SERVER.to_string())
}

/// A loopback port the kernel assigned, reserved for as long as this guard
/// lives: a TCP socket with SO_REUSEADDR bound to `127.0.0.1:0` and never
/// listening. While it exists Linux hands the port to no other `bind` to
/// port 0 and never picks it as the source port of an outgoing connection,
/// so parallel tests cannot collide on it; a node process can still bind and
/// listen on it, because its listeners set SO_REUSEADDR too (as tokio and
/// std do on Unix). A connection to the port when no node listens is
/// refused, as it would be on a closed port.
pub struct ReservedPort {
    port: u16,
    _socket: socket2::Socket,
}

impl ReservedPort {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Reserves a loopback port; see [`ReservedPort`].
pub fn reserve_port() -> ReservedPort {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .expect("a TCP socket can be created");
    socket
        .set_reuse_address(true)
        .expect("SO_REUSEADDR can be set");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket
        .bind(&any.into())
        .expect("the kernel assigns a loopback port");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a bound socket has a port");
    ReservedPort {
        port,
        _socket: socket,
    }
}

/// A scratch directory, removed unless the test is failing.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ferrium-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: logs and data kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Reply> {
    http_with_timeout(addr, method, path, body, Duration::from_secs(15))
}

pub fn http_with_timeout(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Reply> {
    request(addr, method, path, body, &[], timeout)
}

/// One HTTP/1.1 request with extra headers on a fresh connection.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request_text(addr, method, path, body, headers, true).as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_reply(&raw)
}

/// The bytes of one request (`Connection: close` when `close`).
pub fn request_text(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    close: bool,
) -> String {
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

pub fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty reply"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// How a test cluster forms.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// Every node lists all members in `cluster.initial_members`.
    Static,
    /// No initial members: nodes wait for `/init` or `/add-learner`.
    Manual,
}

/// One `ferrium-server` process and its files.
pub struct NodeProc {
    pub id: u64,
    pub http_port: u16,
    pub grpc_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The port of this node's fault-injecting proxy, which peers are told
    /// to use, when the cluster was started with [`Cluster::start_proxied`].
    pub proxy_port: Option<u16>,
    child: Option<Child>,
    /// The node when it runs inside the test process.
    inproc: Option<inproc::InProcess>,
    paused: bool,
    /// The node's ports, held for the cluster's lifetime so that no other
    /// test takes one while the node is down.
    _ports: [ReservedPort; 2],
}

impl NodeProc {
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The address peers reach this node at: its proxy when it has one.
    pub fn advertised_addr(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port.unwrap_or(self.http_port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some() || self.inproc.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A set of nodes started from one scratch directory.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub scratch: Scratch,
    pub extra_config: String,
    /// Bearer token the harness sends with its own requests, if any.
    pub token: Option<String>,
    /// The peer-link rules when every node sits behind a proxy.
    pub net: Option<Net>,
    /// TLS settings the harness's own requests use, for TLS clusters.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Environment variables every node is started with; a value may say
    /// `{id}` for the node's id (e.g. a per-node test-only failpoint).
    pub env: Vec<(String, String)>,
    /// Nodes run inside the test process ([`Cluster::start_in_process`]).
    pub in_process: bool,
}

impl Cluster {
    /// Starts `n` nodes with ids 1..=n and waits for a leader when
    /// `bootstrap` is [`Bootstrap::Static`].
    pub fn start(name: &str, n: u64, bootstrap: Bootstrap) -> Cluster {
        Cluster::start_with(name, n, bootstrap, "")
    }

    /// Like [`Cluster::start_with`], with the nodes inside the test process
    /// (`ferrium::server::start`, see [`inproc`]): for tests where a
    /// separate process is not the point. Such nodes cannot be killed,
    /// paused or signalled, and log to nowhere; [`Cluster::stop`] and
    /// [`Cluster::restart`] shut them down cleanly.
    pub fn start_in_process(name: &str, n: u64, bootstrap: Bootstrap, extra: &str) -> Cluster {
        let mut c = Cluster::empty(Scratch::new(name), extra, None, None, None, &[]);
        c.in_process = true;
        c.boot(n, bootstrap)
    }

    /// `n` in-process nodes (ids 1..=n) whose data directories `prepare`
    /// makes before any node starts (e.g. `ferriumctl snapshot restore`
    /// into each [`NodeProc::data_dir`], with the members' addresses known):
    /// no `cluster.initial_members`, so the cluster is what the directories
    /// hold. Waits for a leader.
    #[allow(dead_code, reason = "only the backup tests restore clusters")]
    pub fn start_prepared(
        name: &str,
        n: u64,
        extra: &str,
        prepare: impl FnOnce(&Cluster),
    ) -> Cluster {
        let mut c = Cluster::empty(Scratch::new(name), extra, None, None, None, &[]);
        c.in_process = true;
        for id in 1..=n {
            c.push_node(id);
        }
        prepare(&c);
        for id in 1..=n {
            c.write_config(id, &[]);
            c.spawn(id);
        }
        for id in 1..=n {
            c.wait_http(id, Duration::from_secs(30));
        }
        c.wait_leader(Duration::from_secs(30));
        c
    }

    /// Like [`Cluster::start`], with extra TOML appended to every config
    /// (e.g. `"[raft]\nsnapshot_threshold = 500\n"`).
    pub fn start_with(name: &str, n: u64, bootstrap: Bootstrap, extra: &str) -> Cluster {
        Cluster::start_inner(name, n, bootstrap, extra, None, false)
    }

    /// Like [`Cluster::start_with`]; the harness authenticates with `token`.
    pub fn start_full(
        name: &str,
        n: u64,
        bootstrap: Bootstrap,
        extra: &str,
        token: Option<&str>,
    ) -> Cluster {
        Cluster::start_inner(name, n, bootstrap, extra, token, false)
    }

    /// Like [`Cluster::start_with`] (static bootstrap), with every node
    /// behind a fault-injecting proxy: peers talk through the proxies, test
    /// clients to the real ports, and [`Cluster::net`] controls the links.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn start_proxied(name: &str, n: u64, extra: &str) -> Cluster {
        Cluster::start_inner(name, n, Bootstrap::Static, extra, None, true)
    }

    /// Like [`Cluster::start_proxied`], with authenticated peers, in
    /// `scratch`: the harness sends `token` (for token authentication, with
    /// the cluster secret set in `extra`), or speaks TLS with `tls` to an
    /// mTLS cluster whose certificates are in `scratch`; the proxies then
    /// terminate TLS with the nodes' own certificates ([`Net::with_tls`]).
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn start_proxied_secure(
        scratch: Scratch,
        n: u64,
        extra: &str,
        token: Option<&str>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Cluster {
        let net = match tls {
            Some(_) => Net::with_tls(scratch.path.clone()),
            None => Net::default(),
        };
        Cluster::start_in_net(
            scratch,
            n,
            Bootstrap::Static,
            extra,
            token,
            Some(net),
            tls,
            &[],
        )
    }

    /// Like [`Cluster::start_with`] (static bootstrap), with `env` set for
    /// every node process (`{id}` in a value is the node's id, `{dir}` the
    /// scratch directory).
    pub fn start_env(name: &str, n: u64, extra: &str, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_in(
            Scratch::new(name),
            n,
            Bootstrap::Static,
            extra,
            None,
            false,
            None,
            env,
        )
    }

    /// A TLS cluster (static bootstrap) in the scratch directory `scratch`
    /// (where the certificates are); `extra` may say `{id}` for the node's
    /// id (e.g. `cert_file = "node{id}.crt"`). The harness's own requests
    /// use `client`.
    pub fn start_tls(
        scratch: Scratch,
        n: u64,
        extra: &str,
        client: std::sync::Arc<rustls::ClientConfig>,
    ) -> Cluster {
        Cluster::start_in(
            scratch,
            n,
            Bootstrap::Static,
            extra,
            None,
            false,
            Some(client),
            &[],
        )
    }

    fn start_inner(
        name: &str,
        n: u64,
        bootstrap: Bootstrap,
        extra: &str,
        token: Option<&str>,
        proxied: bool,
    ) -> Cluster {
        Cluster::start_in(
            Scratch::new(name),
            n,
            bootstrap,
            extra,
            token,
            proxied,
            None,
            &[],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_in(
        scratch: Scratch,
        n: u64,
        bootstrap: Bootstrap,
        extra: &str,
        token: Option<&str>,
        proxied: bool,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        env: &[(&str, &str)],
    ) -> Cluster {
        let net = proxied.then(Net::default);
        Cluster::start_in_net(scratch, n, bootstrap, extra, token, net, tls, env)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_in_net(
        scratch: Scratch,
        n: u64,
        bootstrap: Bootstrap,
        extra: &str,
        token: Option<&str>,
        net: Option<Net>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        env: &[(&str, &str)],
    ) -> Cluster {
        Cluster::empty(scratch, extra, token, net, tls, env).boot(n, bootstrap)
    }

    /// A cluster with no nodes yet.
    fn empty(
        scratch: Scratch,
        extra: &str,
        token: Option<&str>,
        net: Option<Net>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = scratch.path.display().to_string();
        Cluster {
            nodes: Vec::new(),
            scratch,
            extra_config: extra.to_string(),
            token: token.map(str::to_string),
            net,
            tls,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.replace("{dir}", &dir)))
                .collect(),
            in_process: false,
        }
    }

    /// Starts nodes 1..=n and waits for them (and for a leader when
    /// `bootstrap` is [`Bootstrap::Static`]).
    fn boot(mut self, n: u64, bootstrap: Bootstrap) -> Cluster {
        for id in 1..=n {
            self.push_node(id);
        }
        let members: Vec<u64> = if bootstrap == Bootstrap::Static {
            (1..=n).collect()
        } else {
            Vec::new()
        };
        for id in 1..=n {
            self.write_config(id, &members);
            self.spawn(id);
        }
        for id in 1..=n {
            self.wait_http(id, Duration::from_secs(30));
        }
        if bootstrap == Bootstrap::Static {
            self.wait_leader(Duration::from_secs(30));
        }
        self
    }

    /// Allocates ports and files for node `id` (and starts its proxy).
    fn push_node(&mut self, id: u64) {
        let http = reserve_port();
        let grpc = reserve_port();
        let proxy_port = self
            .net
            .as_ref()
            .map(|net| net.spawn_proxy(id, http.port()));
        self.nodes.push(NodeProc {
            id,
            http_port: http.port(),
            grpc_port: grpc.port(),
            config: self.scratch.path.join(format!("node{id}.toml")),
            data_dir: self.scratch.path.join(format!("data{id}")),
            log: self.scratch.path.join(format!("node{id}.log")),
            proxy_port,
            child: None,
            inproc: None,
            paused: false,
            _ports: [http, grpc],
        });
    }

    /// The peer-link rules; panics when the cluster has no proxies.
    #[allow(
        dead_code,
        reason = "link faults: only the robustness tests inject them"
    )]
    pub fn net(&self) -> &Net {
        self.net
            .as_ref()
            .expect("the cluster was started with start_proxied")
    }

    /// Adds a node process (not yet a member) and returns its id.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.push_node(id);
        self.write_config(id, &[]);
        self.spawn(id);
        self.wait_http(id, Duration::from_secs(30));
        id
    }

    fn write_config(&self, id: u64, members: &[u64]) {
        let node = self.node(id);
        let mut text = format!(
            "[node]\nid = {id}\nhttp_addr = \"{}\"\nadvertise_http_addr = \"{}\"\ngrpc_addr = \"{}\"\ndata_dir = \"{}\"\n\n[logging]\nlevel = \"info\"\nenable_colors = false\n\n[cluster]\nname = \"test\"\n",
            node.http_addr(),
            node.advertised_addr(),
            node.grpc_addr(),
            node.data_dir.display()
        );
        if !members.is_empty() {
            text.push_str("initial_members = [\n");
            for m in members {
                let peer = self.node(*m);
                text.push_str(&format!(
                    "  {{ id = {m}, http_addr = \"{}\", grpc_addr = \"{}\" }},\n",
                    peer.advertised_addr(),
                    peer.grpc_addr()
                ));
            }
            text.push_str("]\n");
        }
        text.push('\n');
        text.push_str(&self.extra_config.replace("{id}", &id.to_string()));
        std::fs::write(&node.config, text).expect("write node config");
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn addr(&self, id: u64) -> String {
        self.node(id).http_addr()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    fn spawn(&mut self, id: u64) {
        if self.in_process {
            assert!(
                self.env.is_empty(),
                "environment variables need node processes, not in-process nodes"
            );
            let node = inproc::InProcess::start(&self.node(id).config);
            self.node_mut(id).inproc = Some(node);
            return;
        }
        let node = self.node(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(server_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("FERRIUM_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v.replace("{id}", &id.to_string()));
        }
        let child = cmd
            .arg("--config")
            .arg(&node.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .expect("spawn ferrium-server");
        let node = self.node_mut(id);
        node.child = Some(child);
        node.paused = false;
    }

    /// Waits until the node answers `/health` at all.
    pub fn wait_http(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.call(id, "GET", "/health", None).is_ok() {
                return;
            }
            // Polling: the node is still starting.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "node {id} did not answer HTTP within {timeout:?}; log: {}",
            self.log_tail(id)
        );
    }

    /// The leader id as seen by a majority of running nodes, once they agree.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.current_leader() {
                return l;
            }
            // Polling: an election may be under way.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no leader within {timeout:?}");
    }

    /// The leader as node `id` sees it, waiting until it knows one.
    pub fn leader_seen_by(&self, id: u64, timeout: Duration) -> u64 {
        eventually(timeout, || {
            let r = self.call(id, "GET", "/leader", None).ok()?;
            r.json()["leader"].as_u64()
        })
        .unwrap_or_else(|| panic!("node {id} knows no leader after {timeout:?}"))
    }

    /// The leader all running nodes agree on, if they do and it is running.
    pub fn current_leader(&self) -> Option<u64> {
        let running = self.running_ids();
        let mut seen = None;
        for id in &running {
            let r = self.call(*id, "GET", "/leader", None).ok()?;
            let leader = r.json()["leader"].as_u64()?;
            match seen {
                None => seen = Some(leader),
                Some(l) if l != leader => return None,
                _ => {}
            }
        }
        seen.filter(|l| running.contains(l))
    }

    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        assert!(
            node.inproc.is_none(),
            "in-process nodes cannot be killed: start the cluster with node processes"
        );
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self, id: u64) -> Option<i32> {
        let node = self.node_mut(id);
        if let Some(inproc) = node.inproc.take() {
            inproc.stop(Duration::from_secs(10));
            return Some(0);
        }
        let mut child = node.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            // Polling: the node is still draining.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self, id: u64) {
        if self.in_process {
            self.stop(id);
        } else if self.node(id).is_running() {
            self.kill(id);
        }
        self.spawn(id);
        self.wait_http(id, Duration::from_secs(30));
    }

    pub fn pause(&mut self, id: u64) {
        assert!(!self.in_process, "in-process nodes cannot be paused");
        if let Some(pid) = self.node(id).pid() {
            signal(pid, "STOP");
            self.node_mut(id).paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        if let Some(pid) = self.node(id).pid() {
            signal(pid, "CONT");
            self.node_mut(id).paused = false;
        }
    }

    pub fn log_tail(&self, id: u64) -> String {
        if self.in_process {
            return format!("(node {id} runs in the test process and has no log file)");
        }
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `POST /write` with a Set.
    pub fn set(&self, id: u64, key: &str, value: &str) -> std::io::Result<Reply> {
        let body = serde_json::json!({"Set": {"key": key, "value": value}}).to_string();
        self.call(id, "POST", "/write", Some(&body))
    }

    /// `POST /write` with a Set, retried for up to 10 s while the answer is
    /// 503 or the connection fails (an election in progress). Setting the
    /// same value again is harmless, so a retry after an unknown outcome is
    /// too. Returns the final answer.
    pub fn set_retrying(&self, id: u64, key: &str, value: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.set(id, key, value) {
                Ok(r) if r.status != 503 || Instant::now() > deadline => return r,
                Err(e) if Instant::now() > deadline => panic!("write {key} via node {id}: {e}"),
                // A client's pause before it tries again.
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `POST /read`, retried for up to 10 s while the answer is 503 or the
    /// connection fails.
    pub fn get_retrying(&self, id: u64, key: &str, consistency: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.get(id, key, consistency) {
                Ok(r) if r.status != 503 || Instant::now() > deadline => return r,
                Err(e) if Instant::now() > deadline => panic!("read {key} via node {id}: {e}"),
                // A client's pause before it tries again.
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `POST /read` with a consistency level.
    pub fn get(&self, id: u64, key: &str, consistency: &str) -> std::io::Result<Reply> {
        let body = serde_json::json!({"key": key, "consistency": consistency}).to_string();
        self.call(id, "POST", "/read", Some(&body))
    }

    /// A request to node `id`, with the harness token when one is set.
    pub fn call(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Reply> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        if let Some(tls) = &self.tls {
            return tls::request(
                &self.addr(id),
                tls.clone(),
                method,
                path,
                body,
                &headers,
                Duration::from_secs(15),
            );
        }
        request(
            &self.addr(id),
            method,
            path,
            body,
            &headers,
            Duration::from_secs(15),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.ids();
        for id in ids {
            if self.node(id).paused {
                self.resume(id);
            }
            match self.node_mut(id).inproc.take() {
                Some(inproc) => inproc.stop(Duration::ZERO),
                None => self.kill(id),
            }
        }
        if let Some(net) = &self.net {
            net.shutdown();
        }
    }
}

/// Sends a signal by name with kill(1), which every test host has.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

pub use super::wait::eventually;

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Reads (and discards) until the server closes the connection; false when
/// `within` passes first.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if s.set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
        {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}
