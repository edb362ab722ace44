//! Hostile snapshot traffic against a live three-node cluster: corrupt,
//! truncated, mismatched and stale uploads, forged vote and meta headers, a
//! body that does not match its signature and a broken stream are all
//! refused with a 4xx before Raft sees them, leave no file behind, and leave
//! the node serving. A damaged snapshot file on the leader is never sent:
//! the leader builds a new one and the new member catches up.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, eventually, parse_reply};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// `raft.snapshot_threshold` of these clusters: a snapshot every 20 entries.
const THRESHOLD: u64 = 20;
const RAFT: &str = "snapshot_threshold = 20\nlog_retention = 5\n";

/// A cluster whose peers authenticate with a cluster secret; `raft` is
/// extra TOML for the `[raft]` section.
fn start(name: &str, raft: &str) -> Cluster {
    let dir = std::env::temp_dir().join(format!("ferrium-hostile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let extra = format!(
        "[security]\ncluster_secret_file = \"{}\"\n\n[raft]\n{raft}",
        secret.display()
    );
    Cluster::start_with(name, 3, Bootstrap::Static, &extra)
}

fn status(c: &Cluster, id: u64) -> Value {
    c.call(id, "GET", "/metrics", None).unwrap().json()
}

/// Writes `n` keys through the leader, one entry each.
fn fill(c: &Cluster, leader: u64, prefix: &str, n: usize) {
    for i in 0..n {
        let r = c.set_retrying(leader, &format!("{prefix}/{i:04}"), "v");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn snapshot_dir(c: &Cluster, id: u64) -> PathBuf {
    c.node(id).data_dir.join("snapshots")
}

/// Snapshot files (`snap-*.snap`) and unfinished files (`*.part`) of a node.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(suffix));
    v.sort();
    v
}

/// Waits until `id` is done building snapshots for what it has applied
/// (no build is due) and returns its snapshot file, which then stays.
fn stable_snapshot_file(c: &Cluster, id: u64) -> PathBuf {
    eventually(Duration::from_secs(30), || {
        let s = status(c, id);
        let snap = s["snapshot"].as_u64()?;
        let applied = s["last_applied"].as_u64()?;
        let path = files(&snapshot_dir(c, id), ".snap").pop()?;
        let on_disk = file_meta(&std::fs::read(&path).ok()?)["last_log_id"]["index"].as_u64()?;
        (applied < snap + THRESHOLD && on_disk == snap).then_some(path)
    })
    .unwrap_or_else(|| panic!("node {id} has no settled snapshot: {}", c.log_tail(id)))
}

/// The meta JSON in a snapshot file's header.
fn file_meta(bytes: &[u8]) -> Value {
    assert_eq!(&bytes[..8], b"FERRSNAP");
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[16..16 + len]).unwrap()
}

/// CRC-32C, bit by bit (the snapshot trailer's checksum).
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A well-formed snapshot file (format version 1) holding `records`.
fn snapshot_file(meta: &Value, records: &[(&str, &str)]) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"FERRSNAP");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    for (k, v) in records {
        out.push(1);
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn vote(term: u64, leader: u64, committed: bool) -> String {
    json!({"leader_id": {"term": term, "node_id": leader}, "committed": committed}).to_string()
}

/// The signature header for a request from `from` to `to` with `body`.
fn sign(path: &str, to: u64, from: u64, body: &[u8]) -> String {
    ferrium::auth::PeerSigner::new(SECRET.to_vec(), "test").sign("POST", path, to, from, body)
}

/// One snapshot upload to `to`, signed as `from` over `signed` (the body
/// itself unless a test forges it). Returns status and reply.
#[derive(Clone)]
struct Upload<'a> {
    from: u64,
    vote: String,
    meta: String,
    body: &'a [u8],
    signed: Option<&'a [u8]>,
}

fn upload(c: &Cluster, to: u64, u: &Upload) -> support::cluster::Reply {
    let auth = sign("/raft/snapshot", to, u.from, u.signed.unwrap_or(u.body));
    let head = format!(
        "POST /raft/snapshot HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         x-ferrium-target: {to}\r\nx-ferrium-from: {from}\r\nx-ferrium-cluster: test\r\n\
         x-ferrium-vote: {vote}\r\nx-ferrium-snapshot-meta: {meta}\r\nx-ferrium-auth: {auth}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {len}\r\n\r\n",
        addr = c.addr(to),
        from = u.from,
        vote = u.vote,
        meta = u.meta,
        len = u.body.len()
    );
    let mut s = TcpStream::connect(c.addr(to)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and stop reading) before the whole body is in.
    let _ = s.write_all(u.body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw).unwrap_or_else(|e| panic!("no reply to a snapshot upload: {e}"))
}

/// Asserts a refusal: status, error code, and no file left behind.
fn refused(c: &Cluster, to: u64, u: &Upload, want_status: u16, want_code: &str, case: &str) {
    let r = upload(c, to, u);
    assert_eq!(r.status, want_status, "{case}: {}", r.body);
    assert_eq!(r.json()["code"], want_code, "{case}: {}", r.body);
    let left = files(&snapshot_dir(c, to), ".part");
    assert!(left.is_empty(), "{case}: files left behind: {left:?}");
    let health = c.call(to, "GET", "/health", None).unwrap();
    assert_eq!(
        health.status, 200,
        "{case}: node {to} unhealthy: {}",
        health.body
    );
}

#[test]
fn hostile_snapshot_uploads_are_refused_and_leave_the_node_serving() {
    let c = start("uploads", RAFT);
    let leader = c.wait_leader(Duration::from_secs(30));
    let f = c.ids().into_iter().find(|i| *i != leader).unwrap();
    fill(&c, leader, "a", 40);
    let real = std::fs::read(stable_snapshot_file(&c, leader)).unwrap();
    let real_meta = file_meta(&real);
    // Wait until the follower has applied past the leader's snapshot.
    let snap_index = real_meta["last_log_id"]["index"].as_u64().unwrap();
    eventually(Duration::from_secs(30), || {
        (status(&c, f)["last_applied"].as_u64()? >= snap_index).then_some(())
    })
    .expect("the follower never caught up");
    let s = status(&c, f);
    let term = s["current_term"].as_u64().unwrap();
    let applied = s["last_applied"].as_u64().unwrap();

    // A snapshot far ahead of the follower, from the current leader.
    let future = |index: u64, term: u64| {
        let mut m = real_meta.clone();
        m["last_log_id"] = json!({"leader_id": {"term": term, "node_id": leader}, "index": index});
        m
    };
    let ahead = future(applied + 1_000_000, term);
    let good = snapshot_file(&ahead, &[("forged/a", "\u{1}x"), ("forged/b", "\u{1}y")]);
    let mut corrupt = good.clone();
    let at = corrupt.len() - 20;
    corrupt[at] ^= 0xff;
    let ok_vote = vote(term, leader, true);
    let ahead_json = ahead.to_string();
    let base = Upload {
        from: leader,
        vote: ok_vote.clone(),
        meta: ahead_json.clone(),
        body: &corrupt,
        signed: None,
    };

    refused(&c, f, &base, 400, "corrupt_snapshot", "corrupt file");
    let truncated = &good[..good.len() - 7];
    refused(
        &c,
        f,
        &Upload {
            body: truncated,
            ..base.clone()
        },
        400,
        "corrupt_snapshot",
        "truncated file",
    );
    let other = future(applied + 1_000_001, term).to_string();
    refused(
        &c,
        f,
        &Upload {
            meta: other,
            body: &good,
            ..base.clone()
        },
        400,
        "snapshot_mismatch",
        "meta header names another index than the file",
    );
    let real_meta_json = real_meta.to_string();
    refused(
        &c,
        f,
        &Upload {
            meta: real_meta_json,
            body: &real,
            ..base.clone()
        },
        409,
        "stale_snapshot",
        "snapshot older than what the follower has",
    );
    refused(
        &c,
        f,
        &Upload {
            vote: vote(term.saturating_sub(1), leader, true),
            ..base.clone()
        },
        409,
        "stale_vote",
        "vote of an earlier term",
    );
    refused(
        &c,
        f,
        &Upload {
            from: 9,
            vote: vote(term, 9, true),
            ..base.clone()
        },
        400,
        "bad_vote",
        "leader that is not a member",
    );
    refused(
        &c,
        f,
        &Upload {
            vote: vote(term, leader, false),
            ..base.clone()
        },
        400,
        "bad_vote",
        "vote not granted by a quorum",
    );
    let third = c
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != f)
        .unwrap();
    refused(
        &c,
        f,
        &Upload {
            from: third,
            ..base.clone()
        },
        400,
        "bad_vote",
        "vote of another node than the sender",
    );
    let beyond_vote = future(applied + 1_000_000, term + 5).to_string();
    refused(
        &c,
        f,
        &Upload {
            meta: beyond_vote,
            ..base.clone()
        },
        400,
        "bad_snapshot_meta",
        "snapshot of a later term than the vote",
    );
    refused(
        &c,
        f,
        &Upload {
            meta: "{not json".into(),
            ..base.clone()
        },
        400,
        "invalid_request",
        "meta header that does not parse",
    );
    refused(
        &c,
        f,
        &Upload {
            signed: Some(&good),
            ..base.clone()
        },
        401,
        "unauthenticated",
        "body other than the signed one",
    );

    // A stream that breaks off: the half-received file goes at once.
    let auth = sign("/raft/snapshot", f, leader, &good);
    let head = format!(
        "POST /raft/snapshot HTTP/1.1\r\nHost: x\r\nx-ferrium-target: {f}\r\nx-ferrium-from: {leader}\r\n\
         x-ferrium-cluster: test\r\nx-ferrium-vote: {ok_vote}\r\nx-ferrium-snapshot-meta: {ahead_json}\r\n\
         x-ferrium-auth: {auth}\r\ncontent-length: {}\r\n\r\n",
        good.len()
    );
    let mut s = TcpStream::connect(c.addr(f)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&good[..good.len() / 2]).unwrap();
    drop(s);
    let cleaned = eventually(Duration::from_secs(30), || {
        files(&snapshot_dir(&c, f), ".part")
            .is_empty()
            .then_some(())
    });
    assert!(cleaned.is_some(), "a broken upload left its file behind");

    // The follower still serves and still follows: no forged key, no forged
    // snapshot, new writes arrive.
    let r = c.get(f, "forged/a", "stale").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["value"].is_null(),
        "a forged key was installed: {}",
        r.body
    );
    for snap in files(&snapshot_dir(&c, f), ".snap") {
        let meta = file_meta(&std::fs::read(&snap).unwrap());
        assert!(meta["last_log_id"]["index"].as_u64().unwrap() <= applied + 1000);
    }
    assert_eq!(c.set_retrying(leader, "after", "1").status, 200);
    let seen = eventually(Duration::from_secs(30), || {
        let r = c.get(f, "after", "stale").ok()?;
        (r.json()["value"] == "1").then_some(())
    });
    assert!(
        seen.is_some(),
        "the follower stopped following: {}",
        c.log_tail(f)
    );
    assert_eq!(c.call(f, "GET", "/health", None).unwrap().status, 200);
    let m = support::cluster::request(
        &c.addr(f),
        "GET",
        "/metrics",
        None,
        &[("Accept", "text/plain")],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .contains("ferrium_snapshot_refused_total{reason=\"corrupt\"}"),
        "{}",
        m.body
    );
    assert_eq!(status(&c, f)["state"], "Follower");
}

/// Flips one byte in the middle of `path`, or its first byte (the magic).
fn damage(path: &Path, header: bool) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = if header { 0 } else { bytes.len() / 2 };
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Adds a node as a learner and waits until it has `key`.
fn join_and_catch_up(c: &mut Cluster, leader: u64, key: &str) -> u64 {
    let id = c.add_node();
    let body = json!({"node_id": id, "rpc_addr": c.addr(id), "api_addr": c.addr(id)}).to_string();
    let r = c.call(leader, "POST", "/add-learner", Some(&body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let caught_up = eventually(Duration::from_secs(60), || {
        assert_eq!(
            c.call(id, "GET", "/health", None).ok()?.status,
            200,
            "the new member became unhealthy: {}",
            c.log_tail(id)
        );
        let r = c.get(id, key, "stale").ok()?;
        (r.status == 200).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "node {id} never caught up: {}",
        c.log_tail(id)
    );
    id
}

#[test]
fn a_damaged_snapshot_on_the_leader_is_rebuilt_not_sent() {
    let mut c = start("leader-file", RAFT);
    let leader = c.wait_leader(Duration::from_secs(30));
    fill(&c, leader, "b", 40);
    eventually(Duration::from_secs(30), || {
        (status(&c, leader)["purged"].as_u64()? > 0).then_some(())
    })
    .expect("the leader never purged its log");

    // Damaged records: the file looks fine until it is read to the end.
    damage(&stable_snapshot_file(&c, leader), false);
    join_and_catch_up(&mut c, leader, "b/0039");

    // A damaged header: the file cannot even say what it holds.
    fill(&c, leader, "c", 40);
    damage(&stable_snapshot_file(&c, leader), true);
    join_and_catch_up(&mut c, leader, "c/0039");

    for id in c.ids() {
        let h = c.call(id, "GET", "/health", None).unwrap();
        assert_eq!(h.status, 200, "node {id}: {}", c.log_tail(id));
    }
    let log = std::fs::read_to_string(&c.node(leader).log).unwrap();
    assert!(
        log.contains("damaged"),
        "the leader did not report its damaged snapshot: {}",
        c.log_tail(leader)
    );
}
