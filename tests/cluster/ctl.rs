//! `ferriumctl` against real clusters: every subcommand, both output
//! formats, endpoint fail-over and the exit statuses `--help` documents.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, ReservedPort, reserve_port};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

const CTL: &str = env!("CARGO_BIN_EXE_ferriumctl");

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs `ferriumctl --endpoints ENDPOINTS ARGS...`.
fn ctl(endpoints: &str, args: &[&str]) -> Run {
    let mut all = vec!["--endpoints", endpoints, "--timeout", "5"];
    all.extend_from_slice(args);
    ferriumctl(&all)
}

/// Runs `ferriumctl ARGS...` (without `FERRIUM_ENDPOINTS`), printing what
/// it printed.
pub(crate) fn ferriumctl(args: &[&str]) -> Run {
    let out = Command::new(CTL)
        .env_remove("FERRIUM_ENDPOINTS")
        .args(args)
        .output()
        .expect("run ferriumctl");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "ferriumctl {args:?} -> {}\n{}{}",
        run.code, run.stdout, run.stderr
    );
    run
}

fn ok(endpoints: &str, args: &[&str]) -> Run {
    let r = ctl(endpoints, args);
    assert_eq!(r.code, 0, "ferriumctl {args:?} failed: {}", r.stderr);
    r
}

/// A port nothing listens on (connections are refused), reserved while the
/// guard lives; its address is `.addr()`.
fn dead() -> ReservedPort {
    reserve_port()
}

/// A stand-in node that answers every request with `status` and `body`, or
/// with status 0 reads the request and closes the connection unanswered.
fn fake_node(status: u16, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body its Content-Length announces.
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            if status == 0 {
                continue;
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn key_value_commands_status_health_and_fail_over() {
    let mut c = Cluster::start("ctl-kv", 3, Bootstrap::Static);
    let leader = c.wait_leader(Duration::from_secs(30));
    // The first endpoint is down on purpose: every command must fail over.
    let dead = dead();
    let eps = format!("{},{},{},{}", dead.addr(), c.addr(1), c.addr(2), c.addr(3));

    let put = ok(&eps, &["put", "app/a", "one"]);
    assert!(put.stdout.starts_with("OK revision "), "{}", put.stdout);
    let put = ok(&eps, &["--output", "json", "put", "app/b", "two"]);
    assert!(put.json()["revision"].as_u64().is_some());
    ok(&eps, &["put", "other", "x"]);

    assert_eq!(ok(&eps, &["get", "app/a"]).stdout, "one\n");
    for c in ["linearizable", "lease", "stale"] {
        let r = ok(&eps, &["-o", "json", "get", "app/b", "--consistency", c]);
        assert_eq!(r.json()["value"], "two");
    }
    let missing = ctl(&eps, &["get", "nope"]);
    assert_eq!(missing.code, 4, "a missing key exits 4");
    assert!(missing.stderr.contains("not found"));

    assert_eq!(
        ok(&eps, &["list", "app/"]).stdout,
        "app/a\tone\napp/b\ttwo\n"
    );
    let page = ok(&eps, &["-o", "json", "list", "app/", "--limit", "1"]).json();
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    assert_eq!(ok(&eps, &["list", ""]).stdout.lines().count(), 3);

    assert!(
        ok(&eps, &["del", "app/a"])
            .stdout
            .starts_with("deleted app/a")
    );
    let again = ok(&eps, &["-o", "json", "del", "app/a"]).json();
    assert_eq!(again["existed"], false);
    assert_eq!(ctl(&eps, &["get", "app/a"]).code, 4);

    let l = ok(&eps, &["leader"]);
    assert_eq!(l.stdout, format!("{leader}\t{}\n", c.addr(leader)));
    assert_eq!(ok(&eps, &["-o", "json", "leader"]).json()["leader"], leader);

    // status: one row per member, the leader marked, nobody lagging for long.
    let table = ok(&eps, &["status"]).stdout;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().contains("APPLIED"));
    let status = support::cluster::eventually(Duration::from_secs(30), || {
        let s = ok(&eps, &["-o", "json", "status"]).json();
        let rows = s["members"].as_array()?.clone();
        rows.iter().all(|r| r["lag"] == 0).then_some(rows)
    })
    .expect("followers catch up");
    assert_eq!(status.len(), 3);
    let roles: Vec<&str> = status.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert!(status.iter().all(|r| r["membership"] == "voter"));

    let all = format!("{},{},{}", c.addr(1), c.addr(2), c.addr(3));
    let health = ok(&all, &["health"]);
    assert_eq!(
        health.stdout.matches("healthy").count(),
        3,
        "{}",
        health.stdout
    );
    let metrics = ok(&eps, &["-o", "json", "metrics"]).json();
    assert_eq!(metrics["membership"]["voters"].as_array().unwrap().len(), 3);
    let table = ok(&eps, &["metrics"]).stdout;
    assert!(table.contains("membership.voters"), "{table}");
    let prom = ok(&eps, &["metrics", "--prometheus"]).stdout;
    assert!(prom.contains("# TYPE ferrium_raft_term gauge"), "{prom}");

    // FERRIUM_ENDPOINTS is used when --endpoints is not given.
    let out = Command::new(CTL)
        .env("FERRIUM_ENDPOINTS", &eps)
        .args(["get", "app/b"])
        .output()
        .expect("run ferriumctl");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\n");

    // A member down: reads and writes go on through the others; status and
    // health report it and exit 1.
    let down = if leader == 1 { 2 } else { 1 };
    c.kill(down);
    let first_down = format!("{},{},{}", c.addr(down), c.addr(1 + down % 3), all);
    ok(&first_down, &["put", "after", "kill"]);
    assert_eq!(ok(&first_down, &["get", "after"]).stdout, "kill\n");
    let s = ctl(&first_down, &["-o", "json", "status"]);
    assert_eq!(s.code, 1);
    let rows = s.json()["members"].as_array().unwrap().clone();
    let row = rows.iter().find(|r| r["id"] == down).unwrap();
    assert_eq!(row["role"], "unreachable");
    assert!(s.stderr.contains("did not answer"));
    let h = ctl(&all, &["health"]);
    assert_eq!(h.code, 1);
    assert!(h.stdout.contains("unreachable"), "{}", h.stdout);

    // Nothing reachable: exit 3, with advice.
    let nowhere = ctl(&format!("{},{}", dead.addr(), c.addr(down)), &["get", "k"]);
    assert_eq!(nowhere.code, 3);
    assert!(nowhere.stderr.contains("--endpoints"), "{}", nowhere.stderr);
    assert_eq!(ctl(&c.addr(down), &["health"]).code, 3);
}

#[test]
fn usage_errors_exit_2() {
    let dead = dead();
    let ep = dead.addr();
    for args in [
        &["frobnicate"][..],
        &[],
        &["put", "only-key"],
        &["get", "k", "--consistency", "eventual"],
        &["--output", "yaml", "status"],
        &["member", "add", "zero", "127.0.0.1:1"],
        &["member", "promote"],
        &["list", "p", "--limit", "many"],
        &["list", "p", "--limit", "0"],
    ] {
        let r = ctl(&ep, args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains("--help"), "{}", r.stderr);
    }
    let help = ok(&ep, &["--help"]).stdout;
    assert!(help.contains("Exit status:"));
    assert!(ok(&ep, &["--version"]).stdout.starts_with("ferriumctl "));
}

#[test]
fn member_add_promote_remove() {
    let mut c = Cluster::start("ctl-members", 1, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    let new = c.add_node();
    let dead = dead();
    let eps = format!("{},{}", dead.addr(), c.addr(1));
    let new_id = new.to_string();
    let new_addr = c.addr(new);

    let add = ok(&eps, &["member", "add", &new_id, &new_addr]);
    assert!(add.stdout.contains("learner"), "{}", add.stdout);
    let s = ok(&eps, &["-o", "json", "status"]).json();
    let row = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == new)
        .cloned()
        .unwrap();
    assert_eq!(row["membership"], "learner");

    let promote = ok(&eps, &["member", "promote", &new_id]);
    assert_eq!(promote.stdout, format!("voters are now 1, {new}\n"));
    let voters = ok(&eps, &["-o", "json", "metrics"]).json()["membership"]["voters"].clone();
    assert_eq!(voters, serde_json::json!([1, new]));

    let unknown = ctl(&eps, &["member", "promote", "99"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("member add 99"),
        "{}",
        unknown.stderr
    );

    let remove = ok(&eps, &["member", "remove", &new_id]);
    assert_eq!(remove.stdout, "voters are now 1\n");
    let m = ok(&eps, &["-o", "json", "metrics"]).json();
    assert_eq!(m["membership"]["voters"], serde_json::json!([1]));
    assert_eq!(ctl(&eps, &["member", "remove", "1"]).code, 1);
}

/// The version of `key` on node 1 (how many times it was written).
fn version_of(c: &Cluster, key: &str) -> u64 {
    let r = c.get(1, key, "linearizable").expect("read");
    r.json()["version"].as_u64().unwrap_or(0)
}

#[test]
fn not_leader_redirect_and_unknown_outcome() {
    let c = Cluster::start("ctl-redirect", 1, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    // A node with forwarding off names the leader: ferriumctl goes there.
    let refuses = fake_node(
        503,
        serde_json::json!({"error": "node 9 is not the leader", "code": "unavailable",
            "leader": 1, "leader_api_addr": c.addr(1)})
        .to_string(),
    );
    ok(&refuses, &["put", "redirected", "yes"]);
    assert_eq!(ok(&c.addr(1), &["get", "redirected"]).stdout, "yes\n");

    // An unknown outcome is retried with the same request id, on the next
    // endpoint: the write lands once.
    let unknown = fake_node(
        503,
        serde_json::json!({"error": "leader changed after the entry was appended",
            "code": "outcome_unknown"})
        .to_string(),
    );
    ok(&format!("{unknown},{}", c.addr(1)), &["put", "maybe", "x"]);
    assert_eq!(version_of(&c, "maybe"), 1, "applied once");
    // With no endpoint that can answer, the outcome stays unknown: exit 5.
    let r = ctl(&unknown, &["put", "never", "x"]);
    assert_eq!(r.code, 5);
    assert!(
        r.stderr.contains("read the key before retrying"),
        "{}",
        r.stderr
    );
    assert_eq!(ctl(&c.addr(1), &["get", "never"]).code, 4);

    // A connection lost after a write was sent: the same. A read is simply
    // tried on the next endpoint.
    let drops = fake_node(0, String::new());
    let both = format!("{drops},{}", c.addr(1));
    ok(&both, &["put", "dropped", "x"]);
    assert_eq!(version_of(&c, "dropped"), 1, "applied once");
    assert_eq!(ctl(&drops, &["put", "never", "x"]).code, 5);
    assert_eq!(ctl(&both, &["get", "never"]).code, 4);
    assert_eq!(ok(&both, &["get", "redirected"]).stdout, "yes\n");

    // Any other error answer is exit 1 with the server's message.
    let conflict = fake_node(
        409,
        serde_json::json!({"error": "node id 2 is already used", "code": "conflict"}).to_string(),
    );
    let r = ctl(&conflict, &["member", "add", "2", "127.0.0.1:1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already used (conflict)"), "{}", r.stderr);
}

#[test]
fn a_write_moves_to_the_next_endpoint_only_after_a_definite_refusal() {
    let c = Cluster::start("ctl-definite", 1, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    // Refused before anything was proposed: the next endpoint is tried.
    for body in [
        serde_json::json!({"error": "no leader is elected; retry shortly", "code": "unavailable"}),
        serde_json::json!({"error": "too many connections", "code": "unavailable"}),
    ] {
        let refuses = fake_node(503, body.to_string());
        ok(
            &format!("{refuses},{}", c.addr(1)),
            &["put", "refused", "then-ok"],
        );
    }
    assert_eq!(ok(&c.addr(1), &["get", "refused"]).stdout, "then-ok\n");

    // Anything else may have been applied: sent again only with the same
    // request id, which the cluster applies once.
    let internal = serde_json::json!({"error": "Raft stopped", "code": "internal"}).to_string();
    let answers = [
        (503, "<html>Service Unavailable</html>".to_string()),
        (
            503,
            serde_json::json!({"error": "?", "code": "something_else"}).to_string(),
        ),
        (500, internal),
        (502, "bad gateway".to_string()),
        (504, "gateway timeout".to_string()),
    ];
    for (i, (status, body)) in answers.into_iter().enumerate() {
        let maybe = fake_node(status, body.clone());
        let key = format!("maybe-{i}");
        let r = ctl(&format!("{maybe},{}", c.addr(1)), &["put", &key, "x"]);
        assert_eq!(r.code, 0, "a write answered {status} {body}: {}", r.stderr);
        assert_eq!(
            version_of(&c, &key),
            1,
            "applied once after {status} {body}"
        );
        let r = ctl(&maybe, &["put", &key, "y"]);
        assert_eq!(r.code, 5, "only {status} {body}: {}", r.stderr);
        assert!(
            r.stderr.contains("read the key before retrying"),
            "{}",
            r.stderr
        );
    }
    // A read is safe to repeat: any 503 moves it on.
    let broken = fake_node(503, "<html>Service Unavailable</html>".to_string());
    assert_eq!(
        ok(&format!("{broken},{}", c.addr(1)), &["get", "refused"]).stdout,
        "then-ok\n"
    );
}

#[test]
fn grpc_key_value_commands() {
    let c = Cluster::start("ctl-grpc", 3, Bootstrap::Static);
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    // A dead endpoint first, then a follower's gRPC port; then an HTTP port.
    let dead = dead();
    for target in [c.node(follower).grpc_addr(), c.addr(follower)] {
        let eps = format!("{},{target}", dead.addr());
        let r = ok(&eps, &["--grpc", "put", "g-key", "g-value"]);
        assert!(r.stdout.starts_with("OK revision"), "{}", r.stdout);
        let r = ok(&eps, &["--grpc", "get", "g-key"]);
        assert_eq!(r.stdout.trim(), "g-value");
        let r = ok(&eps, &["--grpc", "-o", "json", "list", "g-"]);
        assert_eq!(r.json()["keys"], serde_json::json!(["g-key"]));
        let r = ok(&eps, &["--grpc", "leader"]);
        assert!(r.stdout.starts_with(&leader.to_string()), "{}", r.stdout);
        let r = ok(&eps, &["--grpc", "health"]);
        assert!(r.stdout.contains("SERVING"));
        let r = ok(&eps, &["--grpc", "del", "g-key"]);
        assert!(r.stdout.starts_with("deleted g-key"), "{}", r.stdout);
        assert_eq!(ctl(&eps, &["--grpc", "get", "g-key"]).code, 4);
        assert_eq!(ctl(&eps, &["--grpc", "put", "", "x"]).code, 1);
        assert_eq!(ctl(&eps, &["--grpc", "status"]).code, 2);
    }
    assert_eq!(ctl(&dead.addr(), &["--grpc", "get", "k"]).code, 3);
}

#[test]
fn lease_lock_and_elect_commands() {
    let c = Cluster::start_in_process("ctl-lease", 1, Bootstrap::Static, "");
    c.wait_leader(Duration::from_secs(30));
    let ep = c.addr(1);
    let g = ok(&ep, &["-o", "json", "lease", "grant", "30"]).json();
    let id = g["id"].as_u64().expect("an id").to_string();
    let r = ok(&ep, &["lease", "grant", "20", "--id", "777"]);
    assert_eq!(r.stdout.trim(), "lease 777 granted with TTL(20s)");
    ok(&ep, &["put", "svc/a", "1", "--lease", &id]);
    let r = ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        r.stdout
            .starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("attached keys([svc/a])"), "{}", r.stdout);
    let r = ok(&ep, &["lease", "keep-alive", &id, "--once"]);
    assert_eq!(
        r.stdout.trim(),
        format!("lease {id} keepalived with TTL(30)")
    );
    let r = ok(&ep, &["lease", "list"]);
    assert!(r.stdout.starts_with("found 2 leases"), "{}", r.stdout);
    assert_eq!(
        ok(&ep, &["lease", "revoke", &id]).stdout.trim(),
        format!("lease {id} revoked")
    );
    assert_eq!(
        ctl(&ep, &["get", "svc/a"]).code,
        4,
        "the key went with its lease"
    );
    let r = ctl(&ep, &["lease", "keep-alive", &id, "--once"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("lease {id} expired or revoked")),
        "{}",
        r.stderr
    );
    let r = ctl(&ep, &["put", "k", "v", "--lease", "123456"]);
    assert_eq!(r.code, 1, "{}", r.stderr);

    // `lock NAME -- COMMAND`: the command runs holding the lock, with the
    // fencing token; two at once run one after the other, each with a
    // larger token, and the command's exit status is lock's.
    let script = "echo start $FERRIUM_LOCK_REV; sleep 0.5; echo end $FERRIUM_LOCK_REV";
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ok(&ep, &["lock", "jobs", "--", "sh", "-c", script]));
        let b = s.spawn(|| ok(&ep, &["lock", "jobs", "--", "sh", "-c", script]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let rev = |r: &Run| -> u64 {
        let first: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(first.len(), 2, "{}", r.stdout);
        let start = first[0].strip_prefix("start ").unwrap();
        assert_eq!(first[1], format!("end {start}"));
        start.parse().unwrap()
    };
    assert_ne!(rev(&a), rev(&b), "each holder has its own fencing token");
    let r = ctl(&ep, &["lock", "jobs", "--", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    // Nothing is left locked: the sessions' leases were revoked.
    let r = ok(&ep, &["-o", "json", "range", "jobs/", "--prefix"]);
    assert_eq!(r.json()["count"], 0, "{}", r.stdout);

    // `elect NAME PROPOSAL` leads until interrupted; `elect NAME` prints the
    // leader.
    let mut leader = Command::new(CTL)
        .args(["--endpoints", &ep, "elect", "sched", "host-a"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ferriumctl elect");
    let mut out = leader.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while seen.lines().count() < 2 {
        let n = out.read(&mut buf).expect("read elect's output");
        assert!(n > 0, "elect ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let lines: Vec<&str> = seen.lines().collect();
    assert!(lines[0].starts_with("sched/"), "{seen}");
    assert_eq!(lines[1], "host-a");
    let mut observer = Command::new(CTL)
        .args(["--endpoints", &ep, "elect", "sched"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ferriumctl elect");
    let mut out = observer.stdout.take().unwrap();
    let mut seen = String::new();
    while seen.lines().count() < 2 {
        let n = out.read(&mut buf).expect("read elect's output");
        assert!(n > 0, "observing ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(seen.lines().nth(1), Some("host-a"), "{seen}");
    support::cluster::signal(leader.id(), "INT");
    let status = leader.wait().expect("elect exits");
    assert!(status.success(), "elect exits 0 on an interrupt: {status}");
    let _ = observer.kill();
    let _ = observer.wait();
    let r = ok(&ep, &["-o", "json", "range", "sched/", "--prefix"]);
    assert_eq!(r.json()["count"], 0, "resigned: {}", r.stdout);
}
