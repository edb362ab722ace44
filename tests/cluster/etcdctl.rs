//! Conformance with etcd's own command-line client: the stock `etcdctl` 3.4
//! (Debian's `etcd-client`) runs the same commands, on the same data,
//! against a three-node Ferrium cluster (its gRPC port) and against a real
//! etcd 3.4 member, and what it prints must be the same.
//!
//! Masked before comparing: ids (cluster, member, lease ids and the lock
//! and election keys made from them), Raft terms and indexes, sizes, times,
//! and revisions. Revisions differ by design: a Ferrium revision is the
//! index of the Raft entry that made the change, so entries that change no
//! key (a membership change, a new leader's first entry, the lease clock)
//! leave gaps; revisions still only grow, and every key's create and mod
//! revisions are those of the writes that made them. Each side's own
//! revisions are read from its answers and used in its commands (`--rev`,
//! `compaction`).

use crate::support::cluster::etcd::{Etcd, etcdctl_bin};
use crate::support::cluster::{Bootstrap, Cluster};
use serde_json::Value;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `etcdctl --endpoints=ENDPOINTS ARGS` with `stdin`.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (apt-get install etcd-client)");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("etcdctl finishes");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A long-running etcdctl (watch, lock, elect) whose output goes to a file.
struct Background {
    child: Child,
    out: std::path::PathBuf,
}

impl Background {
    fn start(endpoints: &str, args: &[&str], out: std::path::PathBuf) -> Background {
        let file = std::fs::File::create(&out).expect("output file");
        let child = Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl runs");
        Background { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output holds `text`; the output.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = self.output();
            if o.contains(text) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl never printed {text:?}; it printed {o:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces every run of characters that `is_part` accepts after
/// `prefix` with `mark`.
fn mask_run(s: &str, prefix: &str, is_part: fn(char) -> bool, mark: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let n = rest.find(|c: char| !is_part(c)).unwrap_or(rest.len());
        if n > 0 {
            out.push_str(mark);
        }
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// Hex digits (an id) after `prefix` become `<id>`.
fn mask_after(s: &str, prefix: &str) -> String {
    mask_run(s, prefix, |c| c.is_ascii_hexdigit(), "<id>")
}

/// Decimal digits after `prefix` become `<n>`.
fn mask_number_after(s: &str, prefix: &str) -> String {
    mask_run(s, prefix, |c| c.is_ascii_digit(), "<n>")
}

/// JSON fields whose values differ between two clusters holding the same
/// data (ids, Raft positions, sizes, revisions).
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "revision",
    "raft_term",
    "create_revision",
    "mod_revision",
    "compact_revision",
    "ID",
    "lease",
    "dbSize",
    "dbSizeInUse",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "version",
    "took",
    "name",
    "peerURLs",
    "clientURLs",
    "Endpoint",
    "Took",
];

fn mask_json(v: &mut Value, top: bool) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                // A key's "version" counts its changes: the same on both.
                if MASKED.contains(&k.as_str()) && !(k == "version" && !top && v.is_number()) {
                    *v = Value::String("<masked>".into());
                } else {
                    mask_json(v, false);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| mask_json(v, false)),
        _ => {}
    }
}

/// What is compared of one command's output.
fn normalize(s: &str) -> String {
    // JSON documents, one per line (watch prints one per response).
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    if !lines.is_empty() && lines.iter().all(|l| l.trim_start().starts_with(['{', '['])) {
        let docs: Option<Vec<String>> = lines
            .iter()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).ok()?;
                mask_json(&mut v, true);
                Some(v.to_string())
            })
            .collect();
        if let Some(d) = docs {
            return d.join("\n");
        }
    }
    // A line that is only an id (the lease list).
    let mut s: String = s
        .lines()
        .map(|l| {
            if l.len() == 16 && l.chars().all(|c| c.is_ascii_hexdigit()) {
                "<id>\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if let Some(i) = s.find("member[") {
        if let Some(j) = s[i..].find(']') {
            s.replace_range(i + 7..i + j, "<endpoint>");
        }
    }
    for p in ["lease ", "mylock/", "myelection/", "Member ", "cluster "] {
        s = mask_after(&s, p);
    }
    for p in [
        "\"ClusterID\" : ",
        "\"MemberID\" : ",
        "\"Revision\" : ",
        "\"RaftTerm\" : ",
        "\"CreateRevision\" : ",
        "\"ModRevision\" : ",
        "revision ",
        "remaining(",
        "took = ",
        "TTL(",
        "Throughput is ",
        "took ",
        "Stddev is ",
    ] {
        s = mask_number_after(&s, p);
    }
    s
}

/// A table's column names (their widths follow the contents).
fn table_head(s: &str) -> String {
    s.lines()
        .nth(1)
        .unwrap_or("")
        .split('|')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("|")
}

struct Side {
    name: &'static str,
    endpoints: String,
    dir: std::path::PathBuf,
    /// (step, exit status, what is compared)
    record: Vec<(String, i32, String)>,
}

impl Side {
    fn run(&mut self, step: &str, args: &[&str], stdin: Option<&str>) -> Out {
        let o = etcdctl(&self.endpoints, args, stdin);
        eprintln!(
            "[{}] etcdctl {args:?} -> {}\n{}{}",
            self.name, o.code, o.stdout, o.stderr
        );
        let compared = if o.code == 0 {
            normalize(&o.stdout)
        } else {
            // An error: etcdctl prints "Error: <server text>" last.
            o.stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("Error:"))
                .unwrap_or("")
                .to_string()
        };
        self.record.push((step.to_string(), o.code, compared));
        o
    }

    fn note(&mut self, step: &str, compared: String) {
        self.record.push((step.to_string(), 0, compared));
    }

    fn revision_of(&mut self, step: &str, args: &[&str]) -> i64 {
        let o = self.run(step, args, None);
        let v: Value = serde_json::from_str(&o.stdout).expect("JSON answer");
        v["header"]["revision"].as_i64().expect("a header revision")
    }

    fn background(&self, args: &[&str], file: &str) -> Background {
        Background::start(&self.endpoints, args, self.dir.join(file))
    }
}

const TXN: &str = "value(\"t/a\") = \"1\"\n\nput t/a 2\nput t/b yes\n\nget t/a\n\n";
const TXN_INTERACTIVE: &str = "mod(\"t/a\") > \"0\"\n\nget t/a\nput t/c ok\n\ndel t/a\n\n";

/// The key-value, transaction, watch, lease, lock, election, compaction
/// and maintenance commands, in order, on one side.
fn script(s: &mut Side) {
    // Writes, reads, ranges.
    s.run("put", &["put", "foo", "bar"], None);
    let first = s.revision_of("put -w json", &["put", "foo", "bar2", "-w", "json"]);
    s.run("put fop", &["put", "fop", "x"], None);
    s.run("put fo/1", &["put", "fo/1", "one"], None);
    s.run("put --prev-kv", &["put", "fo/2", "two", "--prev-kv"], None);
    s.run(
        "put --prev-kv again",
        &["put", "fo/2", "deux", "--prev-kv"],
        None,
    );
    s.run("get", &["get", "foo"], None);
    s.run("get missing", &["get", "nope"], None);
    s.run("get --prefix", &["get", "--prefix", "fo"], None);
    s.run("get range", &["get", "fo", "foo"], None);
    s.run("get --from-key", &["get", "--from-key", "fop"], None);
    let rev = first.to_string();
    s.run("get --rev", &["get", "foo", &format!("--rev={rev}")], None);
    s.run(
        "get --rev before",
        &["get", "foo", &format!("--rev={}", first - 1)],
        None,
    );
    s.run(
        "get --keys-only",
        &["get", "--prefix", "fo", "--keys-only"],
        None,
    );
    s.run("get --limit", &["get", "--prefix", "fo", "--limit=2"], None);
    s.run(
        "get --limit -w json",
        &["get", "--prefix", "fo", "--limit=2", "-w", "json"],
        None,
    );
    s.run(
        "get --sort-by",
        &[
            "get",
            "--prefix",
            "fo",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ],
        None,
    );
    s.run(
        "get --print-value-only",
        &["get", "foo", "--print-value-only"],
        None,
    );
    s.run("get -w fields", &["get", "fop", "-w", "fields"], None);
    s.run("get --hex", &["get", "fop", "--hex"], None);
    s.run(
        "get --consistency=s",
        &["get", "fop", "--consistency=s"],
        None,
    );
    // Deletions.
    s.run(
        "del --prefix --prev-kv",
        &["del", "--prefix", "fo/", "--prev-kv"],
        None,
    );
    s.run("del missing", &["del", "nope"], None);
    s.run("del", &["del", "fop"], None);
    // Transactions: both branches, plain and interactive input.
    s.run("put t/a", &["put", "t/a", "1"], None);
    s.run("txn success", &["txn"], Some(TXN));
    s.run("txn failure", &["txn"], Some(TXN));
    s.run("txn -w json", &["txn", "-w", "json"], Some(TXN));
    s.run("txn -i", &["txn", "-i"], Some(TXN_INTERACTIVE));
    s.run("txn -i failure", &["txn", "-i"], Some(TXN_INTERACTIVE));

    // A watch running while keys change, and one replaying from a revision.
    let live = s.background(&["watch", "--prefix", "w/", "--prev-kv"], "watch-live");
    let ready = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            etcdctl(&s.endpoints, &["put", "w/ready", "1"], None);
            if live.output().contains("w/ready") {
                return;
            }
            assert!(Instant::now() < deadline, "the watch never started");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    ready();
    let from = s.revision_of("watch: put w/1", &["put", "w/1", "a", "-w", "json"]);
    s.run("watch: put w/1 again", &["put", "w/1", "b"], None);
    s.run("watch: put w/2", &["put", "w/2", "c"], None);
    s.run("watch: del w/1", &["del", "w/1"], None);
    s.run("watch: put w/end", &["put", "w/end", "done"], None);
    let seen = live.wait_for("w/end\ndone\n");
    // What came after the last readiness event.
    let marker = "w/ready\n1\n";
    let after = &seen[seen.rfind(marker).map_or(0, |i| i + marker.len())..];
    s.note("watch --prefix --prev-kv", after.to_string());
    drop(live);
    let replay = s.background(
        &[
            "watch",
            "--prefix",
            "w/",
            &format!("--rev={from}"),
            "--prev-kv",
        ],
        "watch-rev",
    );
    let replayed = replay.wait_for("w/end\ndone\n");
    s.note("watch --rev --prev-kv", replayed);
    drop(replay);
    let json = s.background(
        &["watch", "w/2", &format!("--rev={from}"), "-w", "json"],
        "watch-json",
    );
    let replayed = json.wait_for("\"Events\"");
    s.note("watch --rev -w json", normalize(&replayed));
    drop(json);

    // Leases.
    let granted = s.run("lease grant", &["lease", "grant", "100"], None);
    let id = granted
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_string();
    s.run(
        "put --lease",
        &["put", "l/k", "v", &format!("--lease={id}")],
        None,
    );
    s.run("lease timetolive", &["lease", "timetolive", &id], None);
    s.run(
        "lease timetolive --keys",
        &["lease", "timetolive", &id, "--keys"],
        None,
    );
    s.run("lease list", &["lease", "list"], None);
    s.run(
        "lease keep-alive --once",
        &["lease", "keep-alive", "--once", &id],
        None,
    );
    s.run("lease revoke", &["lease", "revoke", &id], None);
    s.run(
        "lease timetolive revoked",
        &["lease", "timetolive", &id],
        None,
    );
    s.run("get revoked lease's key", &["get", "l/k"], None);
    s.run("lease revoke missing", &["lease", "revoke", &id], None);

    // Locks and elections.
    s.run(
        "lock -- command",
        &["lock", "mylock", "--", "echo", "held"],
        None,
    );
    let holder = s.background(&["lock", "mylock"], "lock");
    let key = holder.wait_for("\n");
    s.note("lock", normalize(&key));
    drop(holder);
    let leader = s.background(&["elect", "myelection", "p1"], "elect");
    let led = leader.wait_for("p1\n");
    s.note("elect", normalize(&led));
    let observer = s.background(&["elect", "-l", "myelection"], "observe");
    let observed = observer.wait_for("p1\n");
    s.note("elect -l", normalize(&observed));
    drop(observer);
    drop(leader);

    // Compaction: a read below it is refused with etcd's text.
    let now = s.revision_of("get -w json", &["get", "foo", "-w", "json"]);
    s.run("compaction", &["compaction", &now.to_string()], None);
    s.run(
        "get --rev compacted",
        &["get", "foo", &format!("--rev={first}")],
        None,
    );
    s.run(
        "compaction again",
        &["compaction", &first.to_string()],
        None,
    );

    // Maintenance and status.
    let st = s.run(
        "endpoint status -w table",
        &["endpoint", "status", "-w", "table"],
        None,
    );
    s.note("endpoint status table head", table_head(&st.stdout));
    s.run(
        "endpoint status -w json",
        &["endpoint", "status", "-w", "json"],
        None,
    );
    let st = s.run(
        "endpoint status --cluster -w table",
        &["endpoint", "status", "--cluster", "-w", "table"],
        None,
    );
    s.note("endpoint status --cluster head", table_head(&st.stdout));
    s.run("endpoint health", &["endpoint", "health"], None);
    let h = s.run(
        "endpoint health --cluster -w table",
        &["endpoint", "health", "--cluster", "-w", "table"],
        None,
    );
    s.note("endpoint health --cluster head", table_head(&h.stdout));
    let m = s.run(
        "member list -w table",
        &["member", "list", "-w", "table"],
        None,
    );
    s.note("member list head", table_head(&m.stdout));
    s.run(
        "member list -w json",
        &["member", "list", "-w", "json"],
        None,
    );
    s.run("alarm list", &["alarm", "list"], None);
    s.run("defrag", &["defrag"], None);
    let path = s.dir.join("snap.db");
    let saved = s.run(
        "snapshot save",
        &["snapshot", "save", path.to_str().unwrap()],
        None,
    );
    s.note(
        "snapshot save output",
        saved.stdout.replace(path.to_str().unwrap(), "<path>"),
    );
}

/// Compares the two records step by step; every difference is reported.
fn compare(ferrium: &Side, etcd: &Side) {
    // Outputs whose whole text differs by design (tables and lists of
    // members) were recorded as their heads; the full ones are skipped.
    let skip = [
        "endpoint status -w table",
        "endpoint status --cluster -w table",
        "endpoint health --cluster -w table",
        "member list -w table",
        "member list -w json",
        "endpoint health",
        "snapshot save",
        "endpoint status -w json",
    ];
    let mut differences = Vec::new();
    assert_eq!(ferrium.record.len(), etcd.record.len());
    for (f, e) in ferrium.record.iter().zip(&etcd.record) {
        assert_eq!(f.0, e.0);
        if skip.contains(&f.0.as_str()) {
            continue;
        }
        if f.1 != e.1 || f.2 != e.2 {
            differences.push(format!(
                "{}:\n  etcd    ({}): {:?}\n  ferrium ({}): {:?}",
                f.0, e.1, e.2, f.1, f.2
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} commands printed something else than etcd 3.4:\n{}",
        differences.len(),
        ferrium.record.len(),
        differences.join("\n")
    );
}

#[test]
fn etcdctl_prints_what_it_prints_for_etcd() {
    let etcd = Etcd::start("etcdctl");
    let c = Cluster::start_in_process("etcdctl", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    // A follower: requests are forwarded as etcd's members forward them.
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let mut f = Side {
        name: "ferrium",
        endpoints: c.node(follower).grpc_addr(),
        dir: c.scratch.path.clone(),
        record: Vec::new(),
    };
    let mut e = Side {
        name: "etcd",
        endpoints: etcd.client_addr.clone(),
        dir: etcd.scratch.path.clone(),
        record: Vec::new(),
    };
    script(&mut e);
    script(&mut f);
    compare(&f, &e);

    // What differs by design is checked on its own: three members, the
    // cluster's every endpoint answering, a snapshot file that ends with
    // its SHA-256 at a multiple of 512 bytes.
    let members = etcdctl(&f.endpoints, &["member", "list", "-w", "json"], None);
    let v: Value = serde_json::from_str(&members.stdout).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    let health = etcdctl(&f.endpoints, &["endpoint", "health", "--cluster"], None);
    assert_eq!(health.code, 0, "{}", health.stderr);
    let said = format!("{}{}", health.stdout, health.stderr);
    assert_eq!(said.matches("is healthy").count(), 3, "{said}");
    let status = etcdctl(
        &f.endpoints,
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
    );
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let leaders: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, vec![leader; 3], "every member names the leader");
    let snap = std::fs::read(f.dir.join("snap.db")).unwrap();
    assert_eq!(snap.len() % 512, 32);
}

#[test]
fn etcdctl_adds_promotes_and_removes_members() {
    let mut c = Cluster::start_in_process("etcdctl-members", 3, Bootstrap::Static, "");
    c.wait_leader(Duration::from_secs(30));
    let ep = c.node(1).grpc_addr();
    let new = c.add_node();
    let peer = format!("http://{}", c.node(new).http_addr());
    let added = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "newcomer",
            &format!("--peer-urls={peer}"),
            "--learner",
        ],
        None,
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    // etcd's lines: the new id, then the settings for the new member.
    assert!(
        added
            .stdout
            .starts_with(&format!("Member {new:16x} added to cluster ")),
        "{}",
        added.stdout
    );
    assert!(added.stdout.contains("ETCD_NAME=\"newcomer\""));
    assert!(
        added
            .stdout
            .contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
    );
    let list = etcdctl(&ep, &["member", "list"], None);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{new:x}, started")) && l.ends_with("true")),
        "the new member is a learner: {}",
        list.stdout
    );
    let promoted = etcdctl(&ep, &["member", "promote", &format!("{new:x}")], None);
    assert_eq!(promoted.code, 0, "{}", promoted.stderr);
    assert!(
        promoted
            .stdout
            .starts_with(&format!("Member {new:16x} promoted in cluster ")),
        "{}",
        promoted.stdout
    );
    let again = etcdctl(&ep, &["member", "promote", &format!("{new:x}")], None);
    assert_ne!(again.code, 0);
    assert!(
        again
            .stderr
            .contains("etcdserver: can only promote a learner member"),
        "{}",
        again.stderr
    );
    let removed = etcdctl(&ep, &["member", "remove", &format!("{new:x}")], None);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(
        removed
            .stdout
            .starts_with(&format!("Member {new:16x} removed from cluster ")),
        "{}",
        removed.stdout
    );
    let list = etcdctl(&ep, &["member", "list", "-w", "json"], None);
    let v: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{}", list.stdout);
    let unknown = etcdctl(&ep, &["member", "remove", "abcdef"], None);
    assert!(
        unknown.stderr.contains("etcdserver: member not found"),
        "{}",
        unknown.stderr
    );
    // A leadership move, as `etcdctl move-leader` asks for it.
    let leader = c.wait_leader(Duration::from_secs(30));
    let target = c
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id <= 3)
        .unwrap();
    let moved = etcdctl(
        &c.node(leader).grpc_addr(),
        &["move-leader", &format!("{target:x}")],
        None,
    );
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert_eq!(c.leader_seen_by(leader, Duration::from_secs(30)), target);
}

#[test]
fn etcdctl_check_perf_passes_as_it_does_on_etcd() {
    let etcd = Etcd::start("check-perf");
    let c = Cluster::start_in_process("etcdctl-perf", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    let ferrium_ep = c.node(leader).grpc_addr();
    let etcd_ep = etcd.client_addr.clone();
    // Both at once: 60 s each.
    let f = std::thread::spawn(move || etcdctl(&ferrium_ep, &["check", "perf", "--load=s"], None));
    let e = etcdctl(&etcd_ep, &["check", "perf", "--load=s"], None);
    let f = f.join().unwrap();
    // The verdicts follow a progress bar on the same line.
    let verdicts = |o: &Out| -> Vec<String> {
        o.stdout
            .lines()
            .filter_map(|l| l.find("PASS").or_else(|| l.find("FAIL")).map(|i| &l[i..]))
            .map(|l| normalize(l).trim_end().to_string())
            .collect()
    };
    eprintln!("etcd: {:?}\nferrium: {:?}", verdicts(&e), verdicts(&f));
    assert_eq!(f.code, 0, "check perf failed on Ferrium: {}", f.stderr);
    assert!(
        verdicts(&f).last().is_some_and(|l| l == "PASS"),
        "{:?}",
        verdicts(&f)
    );
    // The same lines, whatever the numbers in them.
    let kinds = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|l| {
                l.split(|c: char| c.is_ascii_digit() || c == '<')
                    .next()
                    .unwrap_or("")
                    .replace("FAIL", "PASS")
            })
            .collect()
    };
    assert_eq!(kinds(verdicts(&f)), kinds(verdicts(&e)));
}
