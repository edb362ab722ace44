//! Wire compatibility: a fixed, ordered list of requests replayed against a
//! real one-node cluster, the answers normalized and compared with the
//! transcripts recorded in `tests/golden/wire/`.
//!
//! - REST and the peer routes under `/raft/` are sent and read as raw
//!   HTTP/1.1 bytes, so the status line, every header (name, value, order)
//!   and the body are compared byte for byte, and so is whether the server
//!   closed the connection.
//! - gRPC goes through tonic's generated clients: per call the status code,
//!   message and details, the response metadata (sorted) and the decoded
//!   answer (its `Debug` form), on the gRPC port and on the HTTP port (which
//!   hands HTTP/2 connections to the same service).
//! - Two more clusters repeat the access decisions with token
//!   authentication and a cluster secret (peer requests signed with it),
//!   once with `security.open_health` on (the default) and once off.
//!
//! `FERRIUM_WIRE_RECORD=1` writes the transcripts instead of comparing them
//! (set `FERRIUM_SERVER_BIN` to record another build's answers, e.g. a
//! release whose wire format is the reference); without it a missing
//! transcript fails the test. A difference is reported per request: its
//! title, the first differing line, as recorded and as answered now; the
//! whole new transcript is written to the temporary directory.
//!
//! Normalization ([`Transcript::norm`], [`Transcript::response`]) replaces
//! only what differs from run to run whatever the version: the node's
//! ports and its scratch directory (new on every run), the value of the
//! `Date` header, a `Content-Length` whose body held one of those (checked
//! against the body first), and the Prometheus sample values that depend
//! on timing ([`prometheus_values`]: sizes, durations, fsync counts, and
//! the request counts of routes polled while the node starts; names,
//! labels, HELP and TYPE lines and every other value are kept). Signed peer
//! requests are recorded by what they are, not by their bytes, as each
//! carries a fresh timestamp and nonce. Everything a client could see
//! change between versions is compared.
//!
//! The transcripts were first recorded from 38b071f (before the front ends
//! moved into `src/api/{rest,grpc}` and access went through one list of
//! operations) and the current build answered every REST and peer request
//! byte for byte alike. gRPC differed in 14 of 170 calls, all to methods no
//! service registers: 38b071f decided access by the method name alone, so
//! `/other.Service/Get` was treated as `Get` (read role, then
//! `UNIMPLEMENTED`, counted as `method="Get"`); now an unknown path is
//! unknown (admin role, counted as `method="other"`). The gRPC transcripts
//! were re-recorded with that one change.

use crate::support::cluster::{Bootstrap, Cluster, Scratch};
use ferrium::api::proto::health::HealthCheckRequest;
use ferrium::api::proto::health::health_client::HealthClient;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{
    BatchSetRequest, DeleteRequest, ExistsRequest, GetRequest, KeyValue, ListKeysRequest,
    SetRequest,
};
use ferrium::api::proto::management::management_service_client::ManagementServiceClient;
use ferrium::api::proto::management::{
    AddLearnerRequest, ChangeMembershipRequest, HealthRequest, HealthResponse, InitializeRequest,
    LeaderRequest, MetricsRequest, NodeInfo,
};
use ferrium::auth::PeerSigner;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::transport::Channel;

const READ: &str = "wire-read-token-0123456789abcdef";
const WRITE: &str = "wire-write-token-0123456789abcdef";
const ADMIN: &str = "wire-admin-token-0123456789abcdef";
const SECRET: &str = "wire-cluster-secret-0123456789abcdef";

/// How long any one read from a node may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn recording() -> bool {
    std::env::var("FERRIUM_WIRE_RECORD").is_ok_and(|v| v == "1")
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/wire")
        .join(format!("{name}.txt"))
}

// ---------------------------------------------------------------------------
// Transcripts: what was sent and answered, normalized, compared or recorded.

/// The record of one scenario: numbered cases, each the request sent and
/// the answer received.
struct Transcript {
    name: &'static str,
    /// The node's HTTP address, where requests go.
    addr: String,
    text: String,
    cases: usize,
    /// Run-specific byte strings and their placeholders, longest first.
    subs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The node's ports: none may be left in the transcript.
    ports: Vec<u16>,
}

impl Transcript {
    fn new(name: &'static str, c: &Cluster, dirs: &[&Path]) -> Transcript {
        let mut subs = Vec::new();
        let mut ports = Vec::new();
        // Directories first: they are longer and hold no address.
        for dir in std::iter::once(c.scratch.path.as_path()).chain(dirs.iter().copied()) {
            subs.push((dir.display().to_string().into_bytes(), b"<dir>".to_vec()));
        }
        for n in &c.nodes {
            // New ports on every run, from the kernel.
            subs.push((n.http_addr().into_bytes(), b"<http>".to_vec()));
            subs.push((n.grpc_addr().into_bytes(), b"<grpc>".to_vec()));
            ports.extend([n.http_port, n.grpc_port]);
        }
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Wire transcript `{name}` of tests/wire_replay.rs: each case is a request (>) and\n\
             # the node's answer; HTTP bytes (<) escaped (\\r \\n \\t \\\\ \\xNN). Placeholders: <http> and\n\
             # <grpc> for the node's addresses, <dir> for its scratch directory, <date> for the\n\
             # Date header; see the file's documentation for the rest."
        );
        Transcript {
            name,
            addr: c.addr(1),
            text,
            cases: 0,
            subs,
            ports,
        }
    }

    fn case(&mut self, title: &str) {
        self.cases += 1;
        let _ = writeln!(self.text, "\n=== {:03} {title}", self.cases);
    }

    fn norm(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (from, to) in &self.subs {
            out = replace_bytes(&out, from, to);
        }
        out
    }

    fn note(&mut self, line: &str) {
        let line = self.norm(line.as_bytes());
        self.text.push_str(&String::from_utf8_lossy(&line));
        self.text.push('\n');
    }

    /// Records raw bytes, escaped, each line prefixed.
    fn bytes(&mut self, prefix: &str, bytes: &[u8]) {
        let normalized = self.norm(bytes);
        self.text.push_str(&render(prefix, &normalized));
    }

    /// Records a request; a large one by its start and length.
    fn request(&mut self, bytes: &[u8]) {
        const SHOWN: usize = 300;
        if bytes.len() > 4 * SHOWN {
            self.bytes("> ", &bytes[..SHOWN]);
            self.note(&format!("> ... ({} bytes in all)", bytes.len()));
        } else {
            self.bytes("> ", bytes);
        }
    }

    /// Records one complete HTTP response (head and body as received).
    fn response(&mut self, raw: &[u8], prometheus: bool) {
        let Some(head_end) = find(raw, b"\r\n\r\n").map(|i| i + 4) else {
            self.bytes("< ", raw);
            return;
        };
        let (head, body) = raw.split_at(head_end);
        let mut new_body = self.norm(body);
        if prometheus {
            new_body = prometheus_values(&new_body);
        }
        let body_changed = new_body != body;
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for line in split_crlf(&head[..head_end - 4]) {
            let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
            if name.eq_ignore_ascii_case(b"date") {
                // The time of the answer.
                lines.push([name, b": <date>"].concat());
            } else if name.eq_ignore_ascii_case(b"content-length") && body_changed {
                // The body held a run-specific address or a sample value;
                // the length is checked against the body as sent instead.
                let value = String::from_utf8_lossy(&line[name.len() + 1..])
                    .trim()
                    .to_string();
                assert_eq!(
                    value,
                    body.len().to_string(),
                    "{}: Content-Length is not the length of the body",
                    self.name
                );
                lines.push([name, b": <length of the body>"].concat());
            } else {
                lines.push(line.to_vec());
            }
        }
        let mut new_head = lines.join(&b"\r\n"[..]);
        new_head.extend_from_slice(b"\r\n\r\n");
        self.bytes("< ", &new_head);
        let rendered = render("< ", &new_body);
        self.text.push_str(&rendered);
    }

    /// Records every response in `all` (read until the server closed),
    /// then any bytes that are not a complete response, then the close.
    fn responses_until_close(&mut self, all: &[u8], head_request: bool, prometheus: bool) {
        let mut rest = all;
        while let Some(n) = response_len(rest, head_request, true) {
            if n == 0 {
                break;
            }
            self.response(&rest[..n], prometheus);
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            self.note("--- bytes that are not a complete response:");
            self.bytes("< ", rest);
        }
        self.note("--- the server closed the connection");
    }

    /// One request on a fresh connection, read until the server closes it.
    fn exchange(&mut self, title: &str, request: &[u8]) {
        self.exchange_with(title, request, false, false);
    }

    /// `POST path` with a JSON body, on a fresh connection.
    fn post(&mut self, title: &str, path: &str, body: &str) {
        let request = post(&self.addr, path, body);
        self.exchange(title, &request);
    }

    /// `GET path`, on a fresh connection.
    fn get(&mut self, title: &str, path: &str) {
        let request = get(&self.addr, path);
        self.exchange(title, &request);
    }

    fn exchange_with(&mut self, title: &str, request: &[u8], head_request: bool, prometheus: bool) {
        self.case(title);
        let mut conn = Conn::open(&self.addr);
        conn.send(request);
        self.request(request);
        let all = conn.until_close();
        self.responses_until_close(&all, head_request, prometheus);
    }

    /// Compares with the golden file (the error says how they differ), or
    /// writes it when recording.
    fn finish(self) -> Result<(), String> {
        for port in &self.ports {
            assert!(
                !self.text.contains(&format!(":{port}")),
                "{}: port {port} is left in the transcript; normalize it:\n{}",
                self.name,
                self.text
            );
        }
        let path = golden_path(self.name);
        if recording() {
            std::fs::create_dir_all(path.parent().expect("golden directory")).unwrap();
            std::fs::write(&path, &self.text).unwrap();
            eprintln!(
                "wire_replay: FERRIUM_WIRE_RECORD=1: recorded {} cases in {} (nothing compared)",
                self.cases,
                path.display()
            );
            return Ok(());
        }
        let expected = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the recorded transcript {} ({e}); record it with \
                 FERRIUM_WIRE_RECORD=1 (and FERRIUM_SERVER_BIN set to the reference binary)",
                path.display()
            )
        })?;
        if expected == self.text {
            return Ok(());
        }
        let actual_path = std::env::temp_dir().join(format!(
            "ferrium-wire-{}-{}.txt",
            self.name,
            std::process::id()
        ));
        let _ = std::fs::write(&actual_path, &self.text);
        Err(format!(
            "{}: answers differ from {}\n{}\nthe whole new transcript is in {}",
            self.name,
            path.display(),
            differences(&expected, &self.text),
            actual_path.display()
        ))
    }
}

/// Fails with every transcript that did not match, not only the first.
fn all_match(results: impl IntoIterator<Item = Result<(), String>>) {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cases of a transcript: (title line, lines).
fn split_cases(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut cases: Vec<(String, Vec<&str>)> = vec![("(preamble)".to_string(), Vec::new())];
    for line in text.lines() {
        if line.starts_with("=== ") {
            cases.push((line.to_string(), Vec::new()));
        } else if let Some(last) = cases.last_mut() {
            last.1.push(line);
        }
    }
    cases
}

/// Every case that differs: its title, the first differing line, as
/// recorded and as answered now.
fn differences(expected: &str, actual: &str) -> String {
    let old = split_cases(expected);
    let new = split_cases(actual);
    let mut out = String::new();
    let mut count = 0;
    for i in 0..old.len().max(new.len()) {
        let (o, n) = (old.get(i), new.get(i));
        match (o, n) {
            (Some(o), Some(n)) if o == n => {}
            (Some(o), Some(n)) if o.0 != n.0 => {
                count += 1;
                let _ = writeln!(
                    out,
                    "case {i}: the request list differs\n  recorded: {}\n  now:      {}",
                    o.0, n.0
                );
            }
            (Some(o), Some(n)) => {
                count += 1;
                let at = (0..o.1.len().max(n.1.len()))
                    .find(|&j| o.1.get(j) != n.1.get(j))
                    .unwrap_or(0);
                let end = "(end of the case)";
                let _ = writeln!(
                    out,
                    "{}\n  line {} of the case:\n  recorded: {}\n  now:      {}",
                    o.0,
                    at + 1,
                    o.1.get(at).copied().unwrap_or(end),
                    n.1.get(at).copied().unwrap_or(end)
                );
            }
            (Some(o), None) => {
                count += 1;
                let _ = writeln!(out, "{}: recorded, but not answered now", o.0);
            }
            (None, Some(n)) => {
                count += 1;
                let _ = writeln!(out, "{}: answered now, but not recorded", n.0);
            }
            (None, None) => {}
        }
    }
    format!("{count} case(s) differ:\n{out}")
}

/// Escapes bytes for a transcript: printable ASCII as is, `\r`, `\n`,
/// `\t`, `\\` and `\xNN` otherwise; a new transcript line after each `\n`.
fn render(prefix: &str, bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for &b in bytes {
        match b {
            b'\n' => {
                line.push_str("\\n");
                out.push_str(prefix);
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            b'\\' => line.push_str("\\\\"),
            0x20..=0x7e => line.push(b as char),
            _ => {
                let _ = write!(line, "\\x{b:02x}");
            }
        }
    }
    if !line.is_empty() {
        out.push_str(prefix);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Prometheus families whose values follow from the requests of a
/// transcript alone: Raft state and counts of entries, elections,
/// snapshots, refusals and requests.
const STABLE_FAMILIES: &[&str] = &[
    "ferrium_node_id",
    "ferrium_raft_is_leader",
    "ferrium_raft_has_leader",
    "ferrium_raft_term",
    "ferrium_raft_last_log_index",
    "ferrium_raft_committed_index",
    "ferrium_raft_applied_index",
    "ferrium_raft_snapshot_index",
    "ferrium_raft_voters",
    "ferrium_raft_learners",
    "ferrium_raft_replication_lag_entries",
    "ferrium_raft_elections_total",
    "ferrium_raft_leader_changes_total",
    "ferrium_raft_applied_entries_total",
    "ferrium_raft_proposals_total",
    "ferrium_snapshot_builds_total",
    "ferrium_snapshot_installs_total",
    "ferrium_snapshot_refused_total",
    "ferrium_auth_denied_total",
    "ferrium_forwarded_requests_total",
    "ferrium_grpc_requests_total",
    "ferrium_http_requests_total",
];

/// Routes the harness polls while the node starts (`/health`, `/leader`)
/// or the test polls until the node has settled (`/metrics`): how many of
/// those requests there were depends on timing.
const POLLED_ROUTES: &[&str] = &[
    "route=\"/health\"",
    "route=\"/leader\"",
    "route=\"/metrics\"",
];

/// The Prometheus text with the sample values that depend on timing
/// replaced by `<n>`: sizes (disk, memory, caches), open connections,
/// fsync counts (group commit batches by timing), every duration and
/// histogram, and the request counts of [`POLLED_ROUTES`]. Names, labels,
/// HELP and TYPE lines and the values of [`STABLE_FAMILIES`] are kept.
fn prometheus_values(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let (content, end) = match line.strip_suffix('\n') {
            Some(c) => (c, "\n"),
            None => (line, ""),
        };
        match content.rsplit_once(' ') {
            Some((series, _)) if !content.starts_with('#') && !stable_series(series) => {
                out.push_str(series);
                out.push_str(" <n>");
            }
            _ => out.push_str(content),
        }
        out.push_str(end);
    }
    out.into_bytes()
}

fn stable_series(series: &str) -> bool {
    let family = series.split('{').next().unwrap_or(series);
    STABLE_FAMILIES.contains(&family) && !POLLED_ROUTES.iter().any(|r| series.contains(r))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn split_crlf(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = find(rest, b"\r\n") {
        out.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    out.push(rest);
    out
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1.

/// The length of the first complete response in `buf`, if it is complete
/// (`at_eof`: the connection has ended, so a body without a length ends
/// here).
fn response_len(buf: &[u8], head_request: bool, at_eof: bool) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let lines = split_crlf(&buf[..head_end - 4]);
    let status: u16 = std::str::from_utf8(lines[0])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let header = |name: &str| {
        lines[1..].iter().find_map(|l| {
            let (n, v) = std::str::from_utf8(l).ok()?.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if (100..200).contains(&status) || status == 204 || status == 304 || head_request {
        return Some(head_end);
    }
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut pos = head_end;
        loop {
            let eol = pos + find(&buf[pos..], b"\r\n")?;
            let size_text = std::str::from_utf8(&buf[pos..eol]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = eol + 2;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let eol = pos + find(&buf[pos..], b"\r\n")?;
                    let empty = eol == pos;
                    pos = eol + 2;
                    if empty {
                        return Some(pos);
                    }
                }
            }
            pos += size + 2;
            if pos > buf.len() {
                return None;
            }
        }
    }
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (buf.len() >= head_end + n).then_some(head_end + n);
    }
    at_eof.then_some(buf.len())
}

/// A client connection that sends bytes and reads answers as they come.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send the request");
    }

    /// Tells the server that nothing more comes.
    fn close_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the answer: {e}"),
        }
    }

    /// The next complete response (what there is, if the server closes).
    fn response(&mut self, head_request: bool) -> Vec<u8> {
        loop {
            if let Some(n) = response_len(&self.buf, head_request, self.eof) {
                return self.buf.drain(..n).collect();
            }
            if self.eof {
                return std::mem::take(&mut self.buf);
            }
            self.fill();
        }
    }

    /// Everything until the server closes the connection.
    fn until_close(&mut self) -> Vec<u8> {
        while !self.eof {
            self.fill();
        }
        std::mem::take(&mut self.buf)
    }
}

/// A request with `Connection: close` and, with a body, a JSON content
/// type and its length.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    http_conn(addr, method, path, headers, body, true)
}

fn http_conn(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        out.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

fn get(addr: &str, path: &str) -> Vec<u8> {
    http(addr, "GET", path, &[], None)
}

fn post(addr: &str, path: &str, body: &str) -> Vec<u8> {
    http(addr, "POST", path, &[], Some(body.as_bytes()))
}

/// A request written out, `{host}` standing for the node's address.
fn raw(addr: &str, text: &str) -> Vec<u8> {
    text.replace("{host}", addr).into_bytes()
}

/// Waits until the node's Raft metrics show everything it logged applied,
/// so that answers that report them do not depend on when the metrics
/// caught up with the last write.
fn wait_settled(c: &Cluster) {
    let settled = crate::support::cluster::eventually(IO_TIMEOUT, || {
        let r = c.call(1, "GET", "/metrics", None).ok()?;
        let m: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let last = &m["last_log_index"];
        (r.status == 200
            && !last.is_null()
            && m["last_applied"] == *last
            && m["committed"] == *last)
            .then_some(())
    });
    assert!(settled.is_some(), "the node's metrics never settled");
}

// ---------------------------------------------------------------------------
// REST.

#[test]
fn rest_answers_are_the_recorded_ones() {
    let c = Cluster::start_in_process("wire-rest", 1, Bootstrap::Static, "");
    let a = c.addr(1);
    let a = a.as_str();
    let mut t = Transcript::new("rest", &c, &[]);

    // Writes, as README's REST API section documents them.
    t.post("write: Set", "/write", r#"{"Set":{"key":"a","value":"1"}}"#);
    t.post(
        "write: Set another key",
        "/write",
        r#"{"Set":{"key":"b","value":"2"}}"#,
    );
    t.post(
        "write: Set overwrites, a non-ASCII value",
        "/write",
        "{\"Set\":{\"key\":\"a\",\"value\":\"\u{fc} \u{2713}\"}}",
    );
    t.post(
        "write: Delete an existing key",
        "/write",
        r#"{"Delete":{"key":"b"}}"#,
    );
    t.post(
        "write: Delete a missing key",
        "/write",
        r#"{"Delete":{"key":"b"}}"#,
    );
    t.post(
        "write: BatchSet",
        "/write",
        r#"{"BatchSet":{"pairs":[["user/1","x"],["user/2","y"],["user/3","z"]]}}"#,
    );
    t.post(
        "write: BatchSet with no pairs",
        "/write",
        r#"{"BatchSet":{"pairs":[]}}"#,
    );
    t.post(
        "write: BatchSet with an empty key",
        "/write",
        r#"{"BatchSet":{"pairs":[["","x"]]}}"#,
    );
    t.post(
        "write: Set with an empty key",
        "/write",
        r#"{"Set":{"key":"","value":"v"}}"#,
    );
    let long_key = format!(
        r#"{{"Set":{{"key":"{}","value":"v"}}}}"#,
        "k".repeat(8 * 1024 + 1)
    );
    t.post("write: key over max_key_size", "/write", &long_key);
    let long_value = format!(
        r#"{{"Set":{{"key":"big","value":"{}"}}}}"#,
        "v".repeat(1024 * 1024 + 1)
    );
    t.post("write: value over max_value_size", "/write", &long_value);
    t.post(
        "write: unknown command",
        "/write",
        r#"{"Put":{"key":"k","value":"v"}}"#,
    );
    t.post(
        "write: unknown field",
        "/write",
        r#"{"Set":{"key":"k","value":"v","ttl":5}}"#,
    );
    t.post(
        "write: fields as an array",
        "/write",
        r#"{"Set":["k","v"]}"#,
    );
    t.post(
        "write: value of the wrong type",
        "/write",
        r#"{"Set":{"key":"k","value":1}}"#,
    );
    t.post("write: malformed JSON", "/write", r#"{"Set":"#);
    t.post(
        "write: data after the JSON value",
        "/write",
        r#"{"Set":{"key":"k","value":"v"}} x"#,
    );
    t.post("write: a JSON array", "/write", r#"[1,2]"#);
    t.post("write: empty body", "/write", "");
    t.post("write: whitespace body", "/write", " \r\n ");
    t.exchange(
        "write: body that is not UTF-8",
        &http(
            a,
            "POST",
            "/write",
            &[],
            Some(b"{\"Set\":{\"key\":\"\xff\",\"value\":\"v\"}}"),
        ),
    );
    t.post(
        "write: a lone surrogate escape",
        "/write",
        r#"{"Set":{"key":"\ud800","value":"v"}}"#,
    );

    // Reads at each consistency, present and missing.
    for consistency in [None, Some("linearizable"), Some("lease"), Some("stale")] {
        let body = match consistency {
            None => r#"{"key":"a"}"#.to_string(),
            Some(c) => format!(r#"{{"key":"a","consistency":"{c}"}}"#),
        };
        let title = format!(
            "read: present key, consistency {}",
            consistency.unwrap_or("(default)")
        );
        t.exchange(&title, &post(a, "/read", &body));
    }
    for consistency in ["linearizable", "lease", "stale"] {
        let body = format!(r#"{{"key":"missing","consistency":"{consistency}"}}"#);
        t.exchange(
            &format!("read: missing key, consistency {consistency}"),
            &post(a, "/read", &body),
        );
    }
    t.post("read: a key of a batch", "/read", r#"{"key":"user/2"}"#);
    t.post(
        "read: unknown consistency",
        "/read",
        r#"{"key":"a","consistency":"eventual"}"#,
    );
    t.post("read: empty key", "/read", r#"{"key":""}"#);
    t.post("read: no key", "/read", r#"{}"#);
    t.post("read: unknown field", "/read", r#"{"key":"a","rev":1}"#);
    t.post("read: an array for the object", "/read", r#"["a"]"#);
    let long_read = format!(r#"{{"key":"{}"}}"#, "k".repeat(8 * 1024 + 1));
    t.post("read: key over max_key_size", "/read", &long_read);

    // Listings.
    t.post("list: everything", "/list", r#"{}"#);
    t.post("list: prefix", "/list", r#"{"prefix":"user/"}"#);
    t.post(
        "list: prefix and limit",
        "/list",
        r#"{"prefix":"user/","limit":2}"#,
    );
    t.post(
        "list: the next page with start_after",
        "/list",
        r#"{"prefix":"user/","limit":2,"start_after":"user/2"}"#,
    );
    t.post("list: limit 0", "/list", r#"{"limit":0}"#);
    t.post(
        "list: stale",
        "/list",
        r#"{"prefix":"user/","consistency":"stale"}"#,
    );
    t.post("list: no match", "/list", r#"{"prefix":"zzz"}"#);
    t.post("list: limit over 10,000", "/list", r#"{"limit":10001}"#);
    t.post(
        "list: unknown consistency",
        "/list",
        r#"{"consistency":"x"}"#,
    );
    t.post("list: negative limit", "/list", r#"{"limit":-1}"#);
    t.post("list: empty body", "/list", "");

    // Cluster state and management.
    t.get("GET /leader", "/leader");
    t.get("GET /is-leader", "/is-leader");
    t.get("GET /health", "/health");
    wait_settled(&c);
    t.get("GET /ready", "/ready");
    t.get("GET /metrics (JSON)", "/metrics");
    t.exchange_with(
        "GET /metrics with Accept: text/plain",
        &http(a, "GET", "/metrics", &[("Accept", "text/plain")], None),
        false,
        true,
    );
    t.exchange_with(
        "GET /metrics with Accept: application/openmetrics-text",
        &http(
            a,
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text")],
            None,
        ),
        false,
        true,
    );
    t.post("POST /init with no body, initialised already", "/init", "");
    t.post(
        "POST /init with members, initialised already",
        "/init",
        r#"{"1":{"rpc_addr":"10.0.0.1:8001","api_addr":"10.0.0.1:8001"}}"#,
    );
    t.post("POST /init malformed", "/init", r#"{"1":"x"}"#);
    t.post(
        "POST /add-learner malformed",
        "/add-learner",
        r#"{"node_id":"two"}"#,
    );
    t.post(
        "POST /add-learner node id 0",
        "/add-learner",
        r#"{"node_id":0,"rpc_addr":"10.0.0.2:8001"}"#,
    );
    t.post(
        "POST /add-learner no rpc_addr",
        "/add-learner",
        r#"{"node_id":2,"rpc_addr":""}"#,
    );
    t.post(
        "POST /add-learner timeout 0",
        "/add-learner",
        r#"{"node_id":2,"rpc_addr":"10.0.0.2:8001","timeout":"0s"}"#,
    );
    t.post(
        "POST /add-learner bad timeout",
        "/add-learner",
        r#"{"node_id":2,"rpc_addr":"10.0.0.2:8001","timeout":"soon"}"#,
    );
    t.post(
        "POST /add-learner an id in use at another address",
        "/add-learner",
        r#"{"node_id":1,"rpc_addr":"10.0.0.9:8001"}"#,
    );
    t.post("POST /change-membership empty", "/change-membership", "[]");
    t.post(
        "POST /change-membership unknown node",
        "/change-membership",
        "[1,7]",
    );
    t.post(
        "POST /change-membership an object",
        "/change-membership",
        r#"{"voters":[1]}"#,
    );

    // Routing.
    t.get("GET of an unknown path", "/nope");
    t.post("POST /health (wrong method)", "/health", "");
    t.get("GET /write (wrong method)", "/write");
    t.exchange(
        "PUT /read (wrong method)",
        &http(a, "PUT", "/read", &[], Some(br#"{"key":"a"}"#)),
    );
    t.exchange(
        "DELETE /leader (wrong method)",
        &http(a, "DELETE", "/leader", &[], None),
    );
    t.exchange_with(
        "HEAD /health",
        &http(a, "HEAD", "/health", &[], None),
        true,
        false,
    );
    t.exchange_with(
        "HEAD /write",
        &http(a, "HEAD", "/write", &[], None),
        true,
        false,
    );
    t.get("GET with a query string", "/health?verbose=1");
    t.exchange(
        "GET in absolute form",
        &raw(
            a,
            "GET http://{host}/is-leader HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        ),
    );
    t.exchange(
        "OPTIONS *",
        &raw(
            a,
            "OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        ),
    );
    t.exchange(
        "a lowercase method",
        &raw(
            a,
            "get /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        ),
    );
    t.exchange("a gRPC call in HTTP/1.1",
        &raw(
            a,
            "POST /ferrium.kv.KvService/Get HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0",
        ),
    );

    // Bodies and framing.
    t.exchange("body over the limit (Content-Length, head only)",
        &raw(a, "POST /write HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 4194305\r\n\r\n"),
    );
    t.exchange("chunked body",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"Set\":{\r\n16;ext=1\r\n\"key\":\"c\",\"value\":\"3\"}\r\n1\r\n}\r\n0\r\n\r\n",
        ),
    );
    t.exchange("chunked body with a trailer",
        &raw(
            a,
            "POST /read HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nB\r\n{\"key\":\"c\"}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        ),
    );
    t.exchange(
        "chunked body with a bad size",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
    );
    t.exchange(
        "chunked body over the limit (size line only)",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n400001\r\n",
        ),
    );
    t.exchange("Content-Length and Transfer-Encoding",
        &raw(a, "POST /write HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"),
    );
    t.exchange(
        "Transfer-Encoding gzip",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
    );
    t.exchange("conflicting Content-Length values",
        &raw(a, "POST /write HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    );
    t.exchange(
        "invalid Content-Length",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n",
        ),
    );
    t.exchange("repeated equal Content-Length values",
        &raw(
            a,
            "POST /read HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 11, 11\r\n\r\n{\"key\":\"a\"}",
        ),
    );

    // A body without Content-Length is no body: the handler sees none, and
    // what follows is the start of a next request that never completes.
    t.case("POST with a body but no Content-Length, then the client closes");
    let req = raw(
        a,
        "POST /write HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\r\n{\"Set\":{\"key\":\"k\",\"value\":\"v\"}}",
    );
    let mut conn = Conn::open(a);
    conn.send(&req);
    conn.close_write();
    t.request(&req);
    t.note("--- the client closes its side");
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);

    // Expect: 100-continue, the body sent once the server asked for it.
    t.case("Expect: 100-continue");
    let body = br#"{"Set":{"key":"d","value":"4"}}"#;
    let head = format!(
        "POST /write HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = Conn::open(a);
    conn.send(head.as_bytes());
    t.request(head.as_bytes());
    let interim = conn.response(false);
    t.response(&interim, false);
    conn.send(body);
    t.request(body);
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);

    t.exchange(
        "Expect with another value",
        &raw(
            a,
            "POST /write HTTP/1.1\r\nHost: {host}\r\nExpect: later\r\nContent-Length: 2\r\n\r\n{}",
        ),
    );

    // Connections.
    t.case("keep-alive: three requests on one connection, the last with Connection: close");
    let mut conn = Conn::open(a);
    for (path, close) in [("/health", false), ("/leader", false), ("/is-leader", true)] {
        let req = http_conn(a, "GET", path, &[], None, close);
        conn.send(&req);
        t.request(&req);
        if close {
            let all = conn.until_close();
            t.responses_until_close(&all, false, false);
        } else {
            let r = conn.response(false);
            t.response(&r, false);
        }
    }
    t.case("keep-alive: a POST, then a GET with Connection: close");
    let mut conn = Conn::open(a);
    let first = http_conn(a, "POST", "/read", &[], Some(br#"{"key":"a"}"#), false);
    conn.send(&first);
    t.request(&first);
    let r = conn.response(false);
    t.response(&r, false);
    let second = get(a, "/is-leader");
    conn.send(&second);
    t.request(&second);
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);

    let mut pipelined = http_conn(a, "GET", "/is-leader", &[], None, false);
    pipelined.extend(http_conn(
        a,
        "POST",
        "/read",
        &[],
        Some(br#"{"key":"missing"}"#),
        false,
    ));
    pipelined.extend(get(a, "/leader"));
    t.exchange("pipelined: three requests in one write", &pipelined);
    let mut then_bad = http_conn(a, "GET", "/is-leader", &[], None, false);
    then_bad.extend(b"G(T / HTTP/1.1\r\n\r\n");
    t.exchange("pipelined: a request, then a malformed one", &then_bad);

    t.exchange(
        "HTTP/1.0 without Host",
        &raw(a, "GET /is-leader HTTP/1.0\r\n\r\n"),
    );
    t.case("HTTP/1.0 with Connection: keep-alive, then a second request");
    let mut conn = Conn::open(a);
    let first = raw(
        a,
        "GET /is-leader HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    conn.send(&first);
    t.request(&first);
    let r = conn.response(false);
    t.response(&r, false);
    let second = raw(a, "GET /health HTTP/1.0\r\n\r\n");
    conn.send(&second);
    t.request(&second);
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);

    // Malformed heads.
    t.exchange(
        "HTTP/1.1 without Host",
        &raw(a, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"),
    );
    t.exchange(
        "two Host headers",
        &raw(
            a,
            "GET /health HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n",
        ),
    );
    t.exchange(
        "an invalid Host",
        &raw(a, "GET /health HTTP/1.1\r\nHost: a b\r\n\r\n"),
    );
    t.exchange(
        "HTTP/2.0 in the request line",
        &raw(a, "GET /health HTTP/2.0\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "HTTP/1.2 in the request line",
        &raw(a, "GET /health HTTP/1.2\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "an invalid version",
        &raw(a, "GET /health FOO\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "an invalid method",
        &raw(a, "G(T /health HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "a target that is not a path",
        &raw(a, "GET health HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "an asterisk target for GET",
        &raw(a, "GET * HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "a fragment in the target",
        &raw(a, "GET /health#x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    t.exchange(
        "a bare LF in the head",
        &raw(a, "GET /health HTTP/1.1\r\nHost: {host}\nX: y\r\n\r\n"),
    );
    t.exchange(
        "obsolete line folding",
        &raw(
            a,
            "GET /health HTTP/1.1\r\nHost: {host}\r\nX: a\r\n b\r\n\r\n",
        ),
    );
    t.exchange(
        "a header without a colon",
        &raw(a, "GET /health HTTP/1.1\r\nHost: {host}\r\nNoColon\r\n\r\n"),
    );
    t.exchange(
        "empty lines before the request",
        &raw(
            a,
            "\r\n\r\nGET /is-leader HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        ),
    );
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: {{host}}\r\n\r\n",
        "a".repeat(9000)
    );
    t.exchange("a request line over 8 KiB", &raw(a, &long_target));
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: {{host}}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    t.exchange("a header section over 16 KiB", &raw(a, &big_header));
    let mut many = "GET /health HTTP/1.1\r\nHost: {host}\r\n".to_string();
    for i in 0..101 {
        let _ = write!(many, "X-{i}: y\r\n");
    }
    many.push_str("\r\n");
    t.exchange("101 header fields", &raw(a, &many));

    // Last, as it appends a membership entry: the same voters again.
    t.post(
        "POST /change-membership to the current voters",
        "/change-membership",
        "[1]",
    );
    t.get("GET /leader after it", "/leader");

    all_match([t.finish()]);
}

// ---------------------------------------------------------------------------
// Peer routes on the HTTP port.

/// A vote from node 2 in term 0, older than any this node has seen.
const OLD_VOTE: &str =
    r#"{"vote":{"leader_id":{"term":0,"node_id":2},"committed":false},"last_log_id":null}"#;
/// AppendEntries from node 2 as the leader of term 0.
const OLD_APPEND: &str = r#"{"vote":{"leader_id":{"term":0,"node_id":2},"committed":true},"prev_log_id":null,"leader_commit":null,"entries":[]}"#;

/// A peer request from node 2 to node `target` of `cluster`, with
/// `content_type` and `body`, and `extra` headers.
fn peer_request(
    addr: &str,
    path: &str,
    target: &str,
    cluster: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nx-ferrium-target: {target}\r\nx-ferrium-from: 2\r\nx-ferrium-cluster: {cluster}\r\n"
    );
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn peer(addr: &str, path: &str, body: &str) -> Vec<u8> {
    peer_request(
        addr,
        path,
        "1",
        "test",
        "application/json",
        &[],
        body.as_bytes(),
    )
}

#[test]
fn peer_answers_are_the_recorded_ones() {
    let c = Cluster::start_in_process("wire-peer", 1, Bootstrap::Static, "");
    let a = c.addr(1);
    let a = a.as_str();
    let mut t = Transcript::new("peer", &c, &[]);
    wait_settled(&c);

    t.exchange(
        "vote with no peer headers",
        &post(a, "/raft/vote", OLD_VOTE),
    );
    t.exchange(
        "vote for another node (x-ferrium-target 2)",
        &peer_request(
            a,
            "/raft/vote",
            "2",
            "test",
            "application/json",
            &[],
            OLD_VOTE.as_bytes(),
        ),
    );
    t.exchange(
        "vote with a target that is not a number",
        &peer_request(
            a,
            "/raft/vote",
            "one",
            "test",
            "application/json",
            &[],
            OLD_VOTE.as_bytes(),
        ),
    );
    t.exchange(
        "vote for another cluster",
        &peer_request(
            a,
            "/raft/vote",
            "1",
            "other",
            "application/json",
            &[],
            OLD_VOTE.as_bytes(),
        ),
    );
    t.exchange("vote of an older term", &peer(a, "/raft/vote", OLD_VOTE));
    t.exchange(
        "pre-vote of an older term",
        &peer(a, "/raft/pre-vote", OLD_VOTE),
    );
    t.exchange(
        "vote, malformed JSON",
        &peer(a, "/raft/vote", r#"{"vote":"#),
    );
    t.exchange("vote as an array", &peer(a, "/raft/vote", r#"[1,2]"#));
    t.exchange("vote, empty body", &peer(a, "/raft/vote", ""));
    t.exchange(
        "append (JSON) of an older term",
        &peer(a, "/raft/append", OLD_APPEND),
    );
    t.exchange(
        "append, garbage in the binary form",
        &peer_request(
            a,
            "/raft/append",
            "1",
            "test",
            "application/x-ferrium-append",
            &[],
            b"\x00\xffgarbage\x01\x02",
        ),
    );
    t.exchange(
        "append, empty binary body",
        &peer_request(
            a,
            "/raft/append",
            "1",
            "test",
            "application/x-ferrium-append",
            &[],
            b"",
        ),
    );
    t.exchange("append, malformed JSON", &peer(a, "/raft/append", "{"));
    t.exchange("transfer-leader with an old vote",
        &peer(
            a,
            "/raft/transfer-leader",
            r#"{"from_leader":{"leader_id":{"term":0,"node_id":2},"committed":true},"to_node_id":1,"last_log_id":null}"#,
        ),
    );
    t.exchange(
        "forwarded write",
        &peer(a, "/raft/write", r#"{"Set":{"key":"fwd","value":"1"}}"#),
    );
    t.exchange(
        "forwarded write with an empty key",
        &peer(a, "/raft/write", r#"{"Set":{"key":"","value":"1"}}"#),
    );
    let long_key = format!(
        r#"{{"Set":{{"key":"{}","value":"v"}}}}"#,
        "k".repeat(8 * 1024 + 1)
    );
    t.exchange(
        "forwarded write with a key over the limit",
        &peer(a, "/raft/write", &long_key),
    );
    t.exchange(
        "forwarded write, unknown command",
        &peer(a, "/raft/write", r#"{"Put":{}}"#),
    );
    wait_settled(&c);
    t.exchange(
        "read-index, linearizable",
        &peer(a, "/raft/read-index", r#""linearizable""#),
    );
    t.exchange(
        "read-index, lease",
        &peer(a, "/raft/read-index", r#""lease""#),
    );
    t.exchange(
        "read-index, unknown consistency",
        &peer(a, "/raft/read-index", r#""eventual""#),
    );
    t.exchange(
        "forwarded change-membership, empty",
        &peer(a, "/raft/change-membership", "[]"),
    );
    t.exchange(
        "forwarded change-membership, unknown node",
        &peer(a, "/raft/change-membership", "[1,7]"),
    );
    t.exchange(
        "forwarded add-learner, malformed",
        &peer(a, "/raft/add-learner", r#"{"x":1}"#),
    );
    t.exchange(
        "snapshot without the vote header",
        &peer(a, "/raft/snapshot", ""),
    );
    let uncommitted = [
        (
            "x-ferrium-vote",
            r#"{"leader_id":{"term":5,"node_id":2},"committed":false}"#,
        ),
        (
            "x-ferrium-snapshot-meta",
            r#"{"last_log_id":null,"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}"#,
        ),
    ];
    t.exchange(
        "snapshot with a vote not granted by a quorum",
        &peer_request(
            a,
            "/raft/snapshot",
            "1",
            "test",
            "application/octet-stream",
            &uncommitted,
            b"",
        ),
    );
    let bad_meta = [
        (
            "x-ferrium-vote",
            r#"{"leader_id":{"term":5,"node_id":2},"committed":true}"#,
        ),
        ("x-ferrium-snapshot-meta", "not json"),
    ];
    t.exchange(
        "snapshot with a bad meta header",
        &peer_request(
            a,
            "/raft/snapshot",
            "1",
            "test",
            "application/octet-stream",
            &bad_meta,
            b"",
        ),
    );
    let stranger = [
        (
            "x-ferrium-vote",
            r#"{"leader_id":{"term":5,"node_id":2},"committed":true}"#,
        ),
        (
            "x-ferrium-snapshot-meta",
            r#"{"last_log_id":{"leader_id":{"term":5,"node_id":2},"index":100},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}"#,
        ),
    ];
    t.exchange(
        "snapshot from a node that is not a member",
        &peer_request(
            a,
            "/raft/snapshot",
            "1",
            "test",
            "application/octet-stream",
            &stranger,
            b"",
        ),
    );
    t.exchange("unknown peer path", &peer(a, "/raft/nope", "{}"));
    t.exchange(
        "GET of a peer route",
        &http(a, "GET", "/raft/vote", &[], None),
    );
    t.exchange("append over the peer body limit (head only)",
        &raw(
            a,
            "POST /raft/append HTTP/1.1\r\nHost: {host}\r\nx-ferrium-target: 1\r\nx-ferrium-cluster: test\r\nContent-Length: 268435457\r\n\r\n",
        ),
    );
    t.exchange("vote over the peer body limit (head only)",
        &raw(
            a,
            "POST /raft/vote HTTP/1.1\r\nHost: {host}\r\nx-ferrium-target: 1\r\nx-ferrium-cluster: test\r\nContent-Length: 268435457\r\n\r\n",
        ),
    );
    t.exchange("a body over the client limit but under the peer limit (head only)",
        &raw(
            a,
            "POST /raft/nope HTTP/1.1\r\nHost: {host}\r\nx-ferrium-target: 1\r\nx-ferrium-cluster: test\r\nContent-Length: 4194305\r\n\r\n",
        ),
    );
    t.post("GET /list after the forwarded write", "/list", "{}");

    all_match([t.finish()]);
}

// ---------------------------------------------------------------------------
// gRPC.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(IO_TIMEOUT)
        .timeout(IO_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A request carrying `token` as a bearer token, if any.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ASCII token"),
        );
    }
    req
}

/// Metadata sorted by name, without `date` (the time of the answer).
fn metadata_lines(md: &MetadataMap) -> Vec<String> {
    let mut lines: Vec<String> = md
        .iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => (k.as_str() != "date").then(|| {
                format!(
                    "{}: {}",
                    k.as_str(),
                    v.to_str().unwrap_or("(not printable)")
                )
            }),
            KeyAndValueRef::Binary(k, v) => Some(format!("{}: {:?}", k.as_str(), v)),
        })
        .collect();
    lines.sort();
    lines
}

impl Transcript {
    fn grpc_metadata(&mut self, md: &MetadataMap) {
        for line in metadata_lines(md) {
            self.note(&format!("metadata {line}"));
        }
    }

    fn grpc_status(&mut self, s: &tonic::Status) {
        self.note(&format!("code {:?}", s.code()));
        self.note(&format!("message {:?}", s.message()));
        if !s.details().is_empty() {
            self.note(&format!("details {:?}", s.details()));
        }
        self.grpc_metadata(s.metadata());
    }

    /// Records the answer of a unary call.
    fn grpc<T: std::fmt::Debug>(
        &mut self,
        title: &str,
        request: &str,
        r: Result<tonic::Response<T>, tonic::Status>,
    ) {
        self.case(title);
        const SHOWN: usize = 200;
        if request.len() > 2 * SHOWN {
            let cut = (0..=SHOWN)
                .rev()
                .find(|&i| request.is_char_boundary(i))
                .unwrap_or(0);
            self.note(&format!(
                "> {}... ({} bytes in all)",
                &request[..cut],
                request.len()
            ));
        } else {
            self.note(&format!("> {request}"));
        }
        match r {
            Ok(resp) => {
                self.note("code Ok");
                self.grpc_metadata(resp.metadata());
                self.note(&format!("{:#?}", resp.get_ref()));
            }
            Err(s) => self.grpc_status(&s),
        }
    }

    /// Records a Watch stream: its first message, or all of it when
    /// `to_end` (the stream then ends by itself), and its trailers.
    async fn grpc_watch(
        &mut self,
        title: &str,
        request: HealthCheckRequest,
        client: &mut HealthClient<Channel>,
        token: Option<&str>,
        to_end: bool,
    ) {
        self.case(title);
        self.note(&format!("> {request:?}"));
        let resp = match client.watch(with_token(request, token)).await {
            Ok(r) => r,
            Err(s) => return self.grpc_status(&s),
        };
        self.note("code Ok");
        self.grpc_metadata(resp.metadata());
        let mut stream = resp.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(m)) => self.note(&format!("message {m:?}")),
                Ok(None) => {
                    self.note("--- end of stream");
                    match stream.trailers().await {
                        Ok(Some(md)) => self.grpc_metadata(&md),
                        Ok(None) => self.note("no trailers"),
                        Err(s) => self.grpc_status(&s),
                    }
                    break;
                }
                Err(s) => {
                    self.grpc_status(&s);
                    break;
                }
            }
            if !to_end {
                break;
            }
        }
    }
}

/// A unary call to any path (a method no service has, say), with an empty
/// message.
async fn raw_unary(
    ch: &Channel,
    path: &'static str,
    token: Option<&str>,
) -> Result<tonic::Response<HealthResponse>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<HealthRequest, HealthResponse>::default();
    grpc.unary(
        with_token(HealthRequest {}, token),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
}

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: value.into(),
    }
}

fn get_req(key: &str, consistency: &str) -> GetRequest {
    GetRequest {
        key: key.into(),
        consistency: consistency.into(),
    }
}

fn list_req(prefix: &str, limit: u32, start_after: &str, consistency: &str) -> ListKeysRequest {
    ListKeysRequest {
        prefix: prefix.into(),
        limit,
        start_after: start_after.into(),
        consistency: consistency.into(),
    }
}

fn pairs(kv: &[(&str, &str)]) -> BatchSetRequest {
    BatchSetRequest {
        pairs: kv
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

/// Every KvService, ManagementService and Health call, good and bad,
/// through the channel `ch`; `p` prefixes the keys.
async fn grpc_calls(t: &mut Transcript, ch: &Channel, c: &Cluster) {
    let mut kv = KvServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut mgmt = ManagementServiceClient::new(ch.clone());
    let mut health = HealthClient::new(ch.clone());

    macro_rules! call {
        ($title:expr, $client:ident . $method:ident ($req:expr)) => {{
            let req = $req;
            let shown = format!("{req:?}");
            let r = $client.$method(req).await;
            t.grpc($title, &shown, r);
        }};
    }

    call!("Set", kv.set(set("a", "1")));
    call!("Set another key", kv.set(set("b", "2")));
    call!(
        "Set overwrites, non-ASCII value",
        kv.set(set("a", "\u{fc} \u{2713}"))
    );
    call!("Set with an empty key", kv.set(set("", "v")));
    call!(
        "Set with a key over max_key_size",
        kv.set(set(&"k".repeat(8 * 1024 + 1), "v"))
    );
    call!(
        "Set with a value over max_value_size",
        kv.set(set("big", &"v".repeat(1024 * 1024 + 1)))
    );
    {
        let r = kv.set(set("huge", &"v".repeat(5 << 20))).await;
        t.grpc(
            "Set with a message over max_message_size",
            "SetRequest { key: \"huge\", value: 5 MiB of \"v\" }",
            r,
        );
    }
    call!(
        "Delete an existing key",
        kv.delete(DeleteRequest { key: "b".into() })
    );
    call!(
        "Delete a missing key",
        kv.delete(DeleteRequest { key: "b".into() })
    );
    call!(
        "Delete with an empty key",
        kv.delete(DeleteRequest { key: String::new() })
    );
    call!(
        "BatchSet",
        kv.batch_set(pairs(&[("user/1", "x"), ("user/2", "y"), ("user/3", "z")]))
    );
    call!("BatchSet with no pairs", kv.batch_set(pairs(&[])));
    call!(
        "BatchSet with an empty key",
        kv.batch_set(pairs(&[("", "x")]))
    );
    for consistency in ["", "linearizable", "lease", "stale"] {
        call!(
            &format!("Get a present key, consistency {consistency:?}"),
            kv.get(get_req("a", consistency))
        );
    }
    for consistency in ["linearizable", "lease", "stale"] {
        call!(
            &format!("Get a missing key, consistency {consistency:?}"),
            kv.get(get_req("missing", consistency))
        );
    }
    call!("Get, unknown consistency", kv.get(get_req("a", "eventual")));
    call!("Get with an empty key", kv.get(get_req("", "")));
    call!(
        "Get with a key over max_key_size",
        kv.get(get_req(&"k".repeat(8 * 1024 + 1), ""))
    );
    call!(
        "Exists, present",
        kv.exists(ExistsRequest {
            key: "a".into(),
            consistency: String::new()
        })
    );
    call!(
        "Exists, missing",
        kv.exists(ExistsRequest {
            key: "missing".into(),
            consistency: "stale".into()
        })
    );
    call!(
        "Exists, unknown consistency",
        kv.exists(ExistsRequest {
            key: "a".into(),
            consistency: "x".into()
        })
    );
    call!(
        "ListKeys, everything",
        kv.list_keys(list_req("", 0, "", ""))
    );
    call!(
        "ListKeys, prefix",
        kv.list_keys(list_req("user/", 0, "", ""))
    );
    call!(
        "ListKeys, prefix and limit",
        kv.list_keys(list_req("user/", 2, "", ""))
    );
    call!(
        "ListKeys, the next page",
        kv.list_keys(list_req("user/", 2, "user/2", ""))
    );
    call!(
        "ListKeys, stale",
        kv.list_keys(list_req("user/", 0, "", "stale"))
    );
    call!(
        "ListKeys, no match",
        kv.list_keys(list_req("zzz", 0, "", ""))
    );
    call!(
        "ListKeys, limit over 10,000",
        kv.list_keys(list_req("", 10_001, "", ""))
    );
    call!(
        "ListKeys, unknown consistency",
        kv.list_keys(list_req("", 0, "", "x"))
    );

    call!(
        "Initialize, initialised already",
        mgmt.initialize(InitializeRequest::default())
    );
    {
        let mut members = std::collections::HashMap::new();
        members.insert(
            1,
            NodeInfo {
                rpc_addr: "10.0.0.1:8001".into(),
                api_addr: String::new(),
                grpc_addr: String::new(),
            },
        );
        call!(
            "Initialize with members, initialised already",
            mgmt.initialize(InitializeRequest { members })
        );
    }
    call!(
        "AddLearner node id 0",
        mgmt.add_learner(AddLearnerRequest {
            node_id: 0,
            rpc_addr: "10.0.0.2:8001".into(),
            ..Default::default()
        })
    );
    call!(
        "AddLearner without rpc_addr",
        mgmt.add_learner(AddLearnerRequest {
            node_id: 2,
            ..Default::default()
        })
    );
    call!(
        "AddLearner an id in use at another address",
        mgmt.add_learner(AddLearnerRequest {
            node_id: 1,
            rpc_addr: "10.0.0.9:8001".into(),
            ..Default::default()
        })
    );
    call!(
        "ChangeMembership, empty",
        mgmt.change_membership(ChangeMembershipRequest { member_ids: vec![] })
    );
    call!(
        "ChangeMembership, unknown node",
        mgmt.change_membership(ChangeMembershipRequest {
            member_ids: vec![1, 7]
        })
    );
    call!("HealthCheck", mgmt.health_check(HealthRequest {}));
    call!("GetLeader", mgmt.get_leader(LeaderRequest {}));
    wait_settled(c);
    call!("GetMetrics", mgmt.get_metrics(MetricsRequest {}));

    for service in [
        "",
        "ferrium.kv.KvService",
        "ferrium.management.ManagementService",
        "nope",
    ] {
        call!(
            &format!("Health/Check {service:?}"),
            health.check(HealthCheckRequest {
                service: service.into()
            })
        );
    }
    t.grpc_watch(
        "Health/Watch \"\" (first message)",
        HealthCheckRequest {
            service: String::new(),
        },
        &mut health,
        None,
        false,
    )
    .await;
    t.grpc_watch(
        "Health/Watch \"nope\" (to its end)",
        HealthCheckRequest {
            service: "nope".into(),
        },
        &mut health,
        None,
        true,
    )
    .await;

    for path in [
        "/ferrium.kv.KvService/Nope",
        "/other.Service/Get",
        "/grpc.health.v1.Health/Nope",
    ] {
        let r = raw_unary(ch, path, None).await;
        t.grpc(&format!("unknown method {path}"), path, r);
    }

    // Last, as it appends a membership entry: the same voters again.
    call!(
        "ChangeMembership to the current voters",
        mgmt.change_membership(ChangeMembershipRequest {
            member_ids: vec![1]
        })
    );
    call!("GetLeader after it", mgmt.get_leader(LeaderRequest {}));
}

#[test]
fn grpc_answers_are_the_recorded_ones() {
    let c = Cluster::start_in_process("wire-grpc", 1, Bootstrap::Static, "");
    let mut t = Transcript::new("grpc", &c, &[]);
    let rt = runtime();
    rt.block_on(async {
        let ch = channel(&c.node(1).grpc_addr()).await;
        grpc_calls(&mut t, &ch, &c).await;

        // The HTTP port hands HTTP/2 connections to the same service.
        let ch = channel(&c.addr(1)).await;
        let mut kv = KvServiceClient::new(ch.clone());
        let mut mgmt = ManagementServiceClient::new(ch.clone());
        let mut health = HealthClient::new(ch.clone());
        let r = kv.get(get_req("a", "")).await;
        t.grpc("HTTP port: Get", &format!("{:?}", get_req("a", "")), r);
        let r = kv.set(set("via-http", "1")).await;
        t.grpc("HTTP port: Set", &format!("{:?}", set("via-http", "1")), r);
        let r = kv.get(get_req("a", "bogus")).await;
        t.grpc(
            "HTTP port: Get, unknown consistency",
            &format!("{:?}", get_req("a", "bogus")),
            r,
        );
        let r = mgmt.get_leader(LeaderRequest {}).await;
        t.grpc(
            "HTTP port: GetLeader",
            &format!("{:?}", LeaderRequest {}),
            r,
        );
        let r = mgmt.initialize(InitializeRequest::default()).await;
        t.grpc(
            "HTTP port: Initialize",
            &format!("{:?}", InitializeRequest::default()),
            r,
        );
        let check = HealthCheckRequest {
            service: String::new(),
        };
        let r = health.check(check.clone()).await;
        t.grpc("HTTP port: Health/Check", &format!("{:?}", check), r);
        let r = raw_unary(&ch, "/ferrium.kv.KvService/Nope", None).await;
        t.grpc("HTTP port: unknown method", "/ferrium.kv.KvService/Nope", r);
    });
    // What the calls left in the metrics: gRPC requests by method and code.
    wait_settled(&c);
    let metrics = http(
        &c.addr(1),
        "GET",
        "/metrics",
        &[("Accept", "text/plain")],
        None,
    );
    t.exchange_with(
        "REST: GET /metrics as text, after the calls",
        &metrics,
        false,
        true,
    );
    all_match([t.finish()]);
}

// ---------------------------------------------------------------------------
// Token authentication and the cluster secret.

/// A one-node cluster with tokens of each role and a cluster secret (in
/// `dir`), `extra` added to `[security]`.
fn secure_cluster(name: &str, dir: &Scratch, extra: &str) -> Cluster {
    let secret = dir.path.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = format!(
        "[security]\nauth_method = \"token\"\ncluster_secret_file = \"{}\"\ntokens = [\n  {{ token = \"{READ}\", role = \"read\" }},\n  {{ token = \"{WRITE}\", role = \"write\" }},\n  {{ token = \"{ADMIN}\", role = \"admin\" }},\n]\n{extra}",
        secret.display()
    );
    Cluster::start_full(name, 1, Bootstrap::Static, &config, Some(ADMIN))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A REST request with `Authorization: Bearer token`.
fn authed(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Vec<u8> {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(addr, method, path, &headers, body.map(str::as_bytes))
}

/// The REST access decisions of every role on every kind of route.
fn secure_rest(t: &mut Transcript, a: &str) {
    let write = r#"{"Set":{"key":"k","value":"v"}}"#;
    let read = r#"{"key":"k"}"#;
    let tokens: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("an unknown token", Some("not-a-token-0123456789abcdef")),
        ("read", Some(READ)),
        ("write", Some(WRITE)),
        ("admin", Some(ADMIN)),
    ];
    let routes: [(&str, &str, Option<&str>); 11] = [
        ("POST", "/write", Some(write)),
        ("POST", "/read", Some(read)),
        ("POST", "/list", Some("{}")),
        ("GET", "/leader", None),
        ("GET", "/is-leader", None),
        ("GET", "/health", None),
        ("GET", "/ready", None),
        ("POST", "/init", Some("")),
        ("POST", "/change-membership", Some("[]")),
        ("GET", "/nope", None),
        ("POST", "/nope", Some("{}")),
    ];
    for (method, path, body) in routes {
        for (who, token) in tokens {
            t.exchange(
                &format!("{method} {path}, {who}"),
                &authed(a, method, path, token, body),
            );
        }
    }
    for (who, token) in [
        ("no token", None),
        ("read", Some(READ)),
        ("admin", Some(ADMIN)),
    ] {
        t.exchange_with(
            &format!("GET /metrics as text, {who}"),
            &{
                let auth = token.map(bearer);
                let mut headers: Vec<(&str, &str)> = vec![("Accept", "text/plain")];
                headers.extend(auth.iter().map(|x| ("Authorization", x.as_str())));
                http(a, "GET", "/metrics", &headers, None)
            },
            false,
            true,
        );
    }
    for (who, token) in [
        ("no token", None),
        ("read", Some(READ)),
        ("admin", Some(ADMIN)),
    ] {
        t.exchange(
            &format!("POST /metrics, {who}"),
            &authed(a, "POST", "/metrics", token, Some("")),
        );
        t.exchange(
            &format!("POST /health, {who}"),
            &authed(a, "POST", "/health", token, Some("")),
        );
        t.exchange(
            &format!("DELETE /leader, {who}"),
            &authed(a, "DELETE", "/leader", token, None),
        );
        t.exchange_with(
            &format!("HEAD /ready, {who}"),
            &authed(a, "HEAD", "/ready", token, None),
            true,
            false,
        );
        t.exchange_with(
            &format!("HEAD /is-leader, {who}"),
            &authed(a, "HEAD", "/is-leader", token, None),
            true,
            false,
        );
    }
    t.exchange(
        "POST /write with Basic credentials",
        &http(
            a,
            "POST",
            "/write",
            &[("Authorization", "Basic d3JpdGU6d3JpdGU=")],
            Some(write.as_bytes()),
        ),
    );
    t.exchange(
        "POST /write with a lowercase bearer scheme",
        &http(
            a,
            "POST",
            "/write",
            &[("Authorization", &format!("bearer {WRITE}"))],
            Some(write.as_bytes()),
        ),
    );
    t.exchange(
        "peer route with an admin token",
        &authed(a, "POST", "/raft/vote", Some(ADMIN), Some(OLD_VOTE)),
    );
}

/// Peer requests signed with the cluster secret, and ones that are not.
fn secure_peer(t: &mut Transcript, a: &str) {
    let signer = PeerSigner::new(SECRET.as_bytes().to_vec(), "test");
    let stranger = PeerSigner::new(b"another-secret-0123456789abcdef".to_vec(), "test");
    let signed = |signer: &PeerSigner, path: &str, signed_path: &str, target: u64, body: &[u8]| {
        let sig = signer.sign("POST", signed_path, target, 2, body);
        peer_request(
            a,
            path,
            &target.to_string(),
            "test",
            "application/json",
            &[("x-ferrium-auth", &sig)],
            body,
        )
    };
    let vote = OLD_VOTE.as_bytes();

    t.exchange("vote, unsigned", &peer(a, "/raft/vote", OLD_VOTE));
    let first = signed(&signer, "/raft/vote", "/raft/vote", 1, vote);
    // The signature is not part of the answer: the request is shown
    // without it, as it differs on every run.
    t.case("vote, signed");
    t.note("> (a signed vote of an older term, as in \"vote of an older term\" of the peer transcript)");
    let mut conn = Conn::open(a);
    conn.send(&first);
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);
    t.case("the same signed vote again (a replay)");
    t.note("> (the bytes of the previous request)");
    let mut conn = Conn::open(a);
    conn.send(&first);
    let all = conn.until_close();
    t.responses_until_close(&all, false, false);

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "signed pre-vote",
            signed(&signer, "/raft/pre-vote", "/raft/pre-vote", 1, vote),
        ),
        (
            "signed for another path",
            signed(&signer, "/raft/vote", "/raft/pre-vote", 1, vote),
        ),
        (
            "signed with another secret",
            signed(&stranger, "/raft/vote", "/raft/vote", 1, vote),
        ),
        (
            "signed for node 2 (x-ferrium-target 2)",
            signed(&signer, "/raft/vote", "/raft/vote", 2, vote),
        ),
    ];
    {
        let sig = signer.sign("POST", "/raft/vote", 1, 2, b"{}");
        cases.push((
            "signed over another body",
            peer_request(
                a,
                "/raft/vote",
                "1",
                "test",
                "application/json",
                &[("x-ferrium-auth", &sig)],
                vote,
            ),
        ));
    }
    cases.push((
        "a malformed signature",
        peer_request(
            a,
            "/raft/vote",
            "1",
            "test",
            "application/json",
            &[("x-ferrium-auth", "t=1,n=2,d=3,mac=4")],
            vote,
        ),
    ));
    {
        let sig = signer.sign("POST", "/raft/vote", 1, 2, vote);
        let old = format!("t=1000{}", &sig[sig.find(',').unwrap()..]);
        cases.push((
            "a signature with a timestamp from 1970",
            peer_request(
                a,
                "/raft/vote",
                "1",
                "test",
                "application/json",
                &[("x-ferrium-auth", &old)],
                vote,
            ),
        ));
    }
    cases.push((
        "signed append of an older term",
        signed(
            &signer,
            "/raft/append",
            "/raft/append",
            1,
            OLD_APPEND.as_bytes(),
        ),
    ));
    cases.push((
        "signed forwarded write",
        signed(
            &signer,
            "/raft/write",
            "/raft/write",
            1,
            br#"{"Set":{"key":"fwd","value":"1"}}"#,
        ),
    ));
    cases.push((
        "signed read-index",
        signed(
            &signer,
            "/raft/read-index",
            "/raft/read-index",
            1,
            br#""stale""#,
        ),
    ));
    cases.push((
        "signed, unknown peer path",
        signed(&signer, "/raft/nope", "/raft/nope", 1, b"{}"),
    ));
    cases.push(("unsigned, unknown peer path", peer(a, "/raft/nope", "{}")));
    cases.push((
        "signed snapshot without headers",
        signed(&signer, "/raft/snapshot", "/raft/snapshot", 1, b""),
    ));
    for (title, bytes) in cases {
        t.case(title);
        t.note("> (signed request; the signature differs on every run)");
        let mut conn = Conn::open(a);
        conn.send(&bytes);
        let all = conn.until_close();
        t.responses_until_close(&all, false, false);
    }
}

/// The gRPC access decisions of every role on every method.
async fn secure_grpc(t: &mut Transcript, ch: &Channel) {
    let mut kv = KvServiceClient::new(ch.clone());
    let mut mgmt = ManagementServiceClient::new(ch.clone());
    let mut health = HealthClient::new(ch.clone());
    let tokens: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("an unknown token", Some("not-a-token-0123456789abcdef")),
        ("read", Some(READ)),
        ("write", Some(WRITE)),
        ("admin", Some(ADMIN)),
    ];
    for (who, token) in tokens {
        let r = kv.set(with_token(set("k", "v"), token)).await;
        t.grpc(&format!("Set, {who}"), &format!("{:?}", set("k", "v")), r);
        let r = kv.get(with_token(get_req("k", ""), token)).await;
        t.grpc(
            &format!("Get, {who}"),
            &format!("{:?}", get_req("k", "")),
            r,
        );
        let r = kv
            .exists(with_token(
                ExistsRequest {
                    key: "k".into(),
                    consistency: String::new(),
                },
                token,
            ))
            .await;
        t.grpc(&format!("Exists, {who}"), &format!("{:?}", "k"), r);
        let r = kv
            .delete(with_token(DeleteRequest { key: "gone".into() }, token))
            .await;
        t.grpc(&format!("Delete, {who}"), &format!("{:?}", "gone"), r);
        let r = kv.batch_set(with_token(pairs(&[("b", "1")]), token)).await;
        t.grpc(
            &format!("BatchSet, {who}"),
            &format!("{:?}", pairs(&[("b", "1")])),
            r,
        );
        let r = kv
            .list_keys(with_token(list_req("", 0, "", ""), token))
            .await;
        t.grpc(
            &format!("ListKeys, {who}"),
            &format!("{:?}", list_req("", 0, "", "")),
            r,
        );
        let r = mgmt
            .initialize(with_token(InitializeRequest::default(), token))
            .await;
        t.grpc(
            &format!("Initialize, {who}"),
            &format!("{:?}", InitializeRequest::default()),
            r,
        );
        let r = mgmt
            .add_learner(with_token(AddLearnerRequest::default(), token))
            .await;
        t.grpc(
            &format!("AddLearner, {who}"),
            &format!("{:?}", AddLearnerRequest::default()),
            r,
        );
        let r = mgmt
            .change_membership(with_token(ChangeMembershipRequest::default(), token))
            .await;
        t.grpc(
            &format!("ChangeMembership, {who}"),
            &format!("{:?}", ChangeMembershipRequest::default()),
            r,
        );
        let r = mgmt.health_check(with_token(HealthRequest {}, token)).await;
        t.grpc(
            &format!("HealthCheck, {who}"),
            &format!("{:?}", HealthRequest {}),
            r,
        );
        let r = mgmt.get_leader(with_token(LeaderRequest {}, token)).await;
        t.grpc(
            &format!("GetLeader, {who}"),
            &format!("{:?}", LeaderRequest {}),
            r,
        );
        let r = mgmt.get_metrics(with_token(MetricsRequest {}, token)).await;
        // Only whether it was allowed: the metrics themselves are in the
        // grpc transcript.
        t.grpc(
            &format!("GetMetrics, {who}"),
            &format!("{:?}", MetricsRequest {}),
            r.map(|resp| resp.map(|m| m.state)),
        );
        let check = HealthCheckRequest {
            service: String::new(),
        };
        let r = health.check(with_token(check.clone(), token)).await;
        t.grpc(&format!("Health/Check, {who}"), &format!("{:?}", check), r);
        t.grpc_watch(
            &format!("Health/Watch, {who}"),
            check,
            &mut health,
            token,
            false,
        )
        .await;
        for path in [
            "/ferrium.kv.KvService/Nope",
            "/ferrium.kv.KvService/HealthCheck",
            "/other.Service/Get",
            "/grpc.health.v1.Health/Nope",
        ] {
            let r = raw_unary(ch, path, token).await;
            t.grpc(&format!("unknown method {path}, {who}"), path, r);
        }
    }
}

#[test]
fn secured_answers_are_the_recorded_ones() {
    let dir = Scratch::new("wire-secret");
    // security.open_health is left at its default (on).
    let c = secure_cluster("wire-secure", &dir, "");
    let a = c.addr(1);
    let a = a.as_str();

    let mut t = Transcript::new("secure-rest", &c, &[&dir.path]);
    secure_rest(&mut t, a);
    let rest = t.finish();

    let mut t = Transcript::new("secure-peer", &c, &[&dir.path]);
    secure_peer(&mut t, a);
    let peer = t.finish();

    let mut t = Transcript::new("secure-grpc", &c, &[&dir.path]);
    runtime().block_on(async {
        let ch = channel(&c.node(1).grpc_addr()).await;
        secure_grpc(&mut t, &ch).await;
    });
    // What the calls left in the metrics: refusals by kind, gRPC requests
    // by method and code.
    wait_settled(&c);
    let auth = bearer(ADMIN);
    let metrics = http(
        a,
        "GET",
        "/metrics",
        &[("Accept", "text/plain"), ("Authorization", &auth)],
        None,
    );
    t.exchange_with(
        "REST: GET /metrics as text, after the calls",
        &metrics,
        false,
        true,
    );
    all_match([rest, peer, t.finish()]);
}

#[test]
fn closed_health_answers_are_the_recorded_ones() {
    let dir = Scratch::new("wire-closed");
    let c = secure_cluster("wire-closed", &dir, "open_health = false\n");
    let a = c.addr(1);
    let a = a.as_str();
    let mut t = Transcript::new("closed-health", &c, &[&dir.path]);
    for (who, token) in [
        ("no token", None),
        ("read", Some(READ)),
        ("admin", Some(ADMIN)),
    ] {
        t.exchange(
            &format!("GET /health, {who}"),
            &authed(a, "GET", "/health", token, None),
        );
        t.exchange(
            &format!("GET /ready, {who}"),
            &authed(a, "GET", "/ready", token, None),
        );
        t.exchange_with(
            &format!("HEAD /health, {who}"),
            &authed(a, "HEAD", "/health", token, None),
            true,
            false,
        );
        t.exchange(
            &format!("POST /health, {who}"),
            &authed(a, "POST", "/health", token, Some("")),
        );
        t.exchange(
            &format!("POST /ready, {who}"),
            &authed(a, "POST", "/ready", token, Some("")),
        );
    }
    runtime().block_on(async {
        let ch = channel(&c.node(1).grpc_addr()).await;
        let mut mgmt = ManagementServiceClient::new(ch.clone());
        let mut health = HealthClient::new(ch.clone());
        for (who, token) in [
            ("no token", None),
            ("read", Some(READ)),
            ("admin", Some(ADMIN)),
        ] {
            let r = mgmt.health_check(with_token(HealthRequest {}, token)).await;
            t.grpc(
                &format!("HealthCheck, {who}"),
                &format!("{:?}", HealthRequest {}),
                r,
            );
            let check = HealthCheckRequest {
                service: String::new(),
            };
            let r = health.check(with_token(check.clone(), token)).await;
            t.grpc(&format!("Health/Check, {who}"), &format!("{:?}", check), r);
            t.grpc_watch(
                &format!("Health/Watch, {who}"),
                check,
                &mut health,
                token,
                false,
            )
            .await;
            for path in [
                "/grpc.health.v1.Health/Nope",
                "/ferrium.kv.KvService/HealthCheck",
                "/other.Service/Get",
            ] {
                let r = raw_unary(&ch, path, token).await;
                t.grpc(&format!("unknown method {path}, {who}"), path, r);
            }
        }
    });
    all_match([t.finish()]);
}
