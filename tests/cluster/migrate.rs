//! `ferriumctl migrate --from-etcd`, as a real process, from a real etcd 3.4
//! into in-process Ferrium nodes.
//!
//! - Following live writes: 100,000 keys and keys on leases (long ones, one
//!   kept alive, short ones that end during the run) are copied while
//!   writers put, delete and grant in etcd; once the writers stop and the
//!   state file reaches etcd's revision, SIGINT ends the run with status 0
//!   and both hold the same keys, values and lease ids, and the same leases
//!   with about the same time left.
//! - Reruns: a second run applies only what changed, from etcd's history,
//!   or, once etcd compacted it, by copying again and writing only the
//!   differences; no lease is made twice; a state file of another migration
//!   and a cluster that already holds keys are refused.

use crate::support::cluster::etcd::Etcd;
use crate::support::cluster::{Bootstrap, Cluster, eventually, signal};
use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const CTL: &str = env!("CARGO_BIN_EXE_ferriumctl");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn connect(addr: &str) -> Client {
    Client::connect([addr], None)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Puts `n` keys `{prefix}{i:06}`, 128 to a transaction (etcd's default
/// limit), eight transactions at once.
async fn load(client: &Client, prefix: &str, n: usize) {
    let chunks: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(<[usize]>::to_vec)
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for group in chunks.chunks(chunks.len().div_ceil(8).max(1)) {
        let group = group.to_vec();
        let mut c = client.clone();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            for chunk in group {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|i| {
                        TxnOp::put(
                            format!("{prefix}{i:06}"),
                            format!("value-{i}-{}", "x".repeat(24)),
                            None,
                        )
                    })
                    .collect();
                c.txn(Txn::new().and_then(ops)).await.expect("load txn");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a load task");
    }
}

/// Every key (key, value, lease), in key order, from an etcd API.
async fn listing(addr: &str) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut c = connect(addr).await;
    let mut out = Vec::new();
    let mut from = vec![0u8];
    loop {
        let r = c
            .get(
                from.clone(),
                Some(GetOptions::new().with_range(vec![0u8]).with_limit(1000)),
            )
            .await
            .unwrap_or_else(|e| panic!("list {addr}: {e}"));
        for kv in r.kvs() {
            out.push((kv.key().to_vec(), kv.value().to_vec(), kv.lease()));
        }
        match r.kvs().last() {
            Some(kv) if r.more() => {
                from = kv.key().to_vec();
                from.push(0);
            }
            _ => return out,
        }
    }
}

/// A digest of a listing, and where two listings first differ.
fn digest(l: &[(Vec<u8>, Vec<u8>, i64)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v, lease) in l {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
        h.update(lease.to_be_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_same(etcd: &str, ferrium: &str, rt: &tokio::runtime::Runtime) {
    let (a, b) = rt.block_on(async { (listing(etcd).await, listing(ferrium).await) });
    let first = a.iter().zip(&b).find(|(x, y)| x != y).map(|(x, y)| {
        format!(
            "etcd has {:?} (lease {}), Ferrium {:?} (lease {})",
            String::from_utf8_lossy(&x.0),
            x.2,
            String::from_utf8_lossy(&y.0),
            y.2
        )
    });
    assert_eq!(
        (a.len(), digest(&a)),
        (b.len(), digest(&b)),
        "etcd and Ferrium differ; first difference: {first:?}"
    );
}

async fn lease_ids(addr: &str) -> BTreeSet<i64> {
    let mut c = connect(addr).await;
    let r = c.leases().await.expect("lease list");
    r.leases().iter().map(|l| l.id()).collect()
}

async fn revision(addr: &str) -> i64 {
    let mut c = connect(addr).await;
    let r = c.get("\0", None).await.expect("a read");
    r.header().expect("a header").revision()
}

/// The revision the state file records (0 before it exists or while the
/// copy runs).
fn state_revision(path: &Path) -> i64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["revision"].as_i64())
        .unwrap_or(0)
}

fn migrate_command(ferrium: &str, etcd: &str, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(CTL);
    cmd.env_remove("FERRIUM_ENDPOINTS")
        .args(["--endpoints", ferrium, "-o", "json", "migrate"])
        .args(["--from-etcd", &format!("http://{etcd}")])
        .arg("--state")
        .arg(state)
        .args(extra);
    cmd
}

/// Runs `ferriumctl migrate` to its end: exit status, JSON summary, stderr.
fn migrate(ferrium: &str, etcd: &str, state: &Path, extra: &[&str]) -> (i32, Value, String) {
    let out = migrate_command(ferrium, etcd, state, extra)
        .output()
        .expect("run ferriumctl migrate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "ferriumctl migrate {extra:?} -> {:?}\n{stdout}{stderr}",
        out.status.code()
    );
    let summary = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

/// A background `ferriumctl migrate --follow`, its output in files.
struct Follower {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Follower {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Panics, with what it printed, if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "ferriumctl migrate --follow exited ({status}): {}",
                self.stderr()
            );
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Long-lived writers on etcd: puts, deletes, puts on a long lease and on
/// short leases they grant (TTL 3 s, left to end). Each counts its writes.
fn start_writers(
    rt: &tokio::runtime::Runtime,
    etcd: &str,
    long_lease: i64,
    stop: &Arc<AtomicBool>,
    writes: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|w| {
            let (stop, writes, etcd) = (stop.clone(), writes.clone(), etcd.to_string());
            rt.spawn(async move {
                let mut c = connect(&etcd).await;
                let mut short = 0;
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("live/{w}/{}", i % 300);
                    match i % 10 {
                        0 => {
                            short = c.lease_grant(3, None).await.expect("grant").id();
                            let opts = PutOptions::new().with_lease(short);
                            c.put(format!("short/{w}/{i}"), "s", Some(opts))
                                .await
                                .expect("put on a short lease");
                        }
                        1 | 2 => {
                            c.delete(format!("live/{w}/{}", (i * 7) % 300), None)
                                .await
                                .expect("delete");
                        }
                        3 => {
                            let opts = PutOptions::new().with_lease(long_lease);
                            c.put(key, format!("l{i}"), Some(opts))
                                .await
                                .expect("put on the long lease");
                        }
                        4 => {
                            // A short lease may have ended already: etcd then
                            // refuses, as it should.
                            let opts = PutOptions::new().with_lease(short);
                            let _ = c.put(format!("short/{w}/x{i}"), "s", Some(opts)).await;
                        }
                        5 => {
                            // Two keys in one revision.
                            let txn = Txn::new().and_then([
                                TxnOp::put(key.clone(), format!("t{i}"), None),
                                TxnOp::put(format!("{key}/pair"), format!("t{i}"), None),
                            ]);
                            c.txn(txn).await.expect("txn");
                        }
                        _ => {
                            c.put(key, format!("v{i}"), None).await.expect("put");
                        }
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect()
}

#[test]
fn migrate_follows_live_etcd_writes_until_cut_over() {
    let etcd = Etcd::start("migrate-follow");
    let mut c = Cluster::start_in_process("migrate-follow", 3, Bootstrap::Static, "");
    let ferrium: Vec<String> = c.ids().iter().map(|id| c.addr(*id)).collect();
    let ferrium_grpc = c.node(c.ids()[0]).grpc_addr();
    let e = etcd.client_addr.clone();
    let rt = runtime();

    // 100,000 keys, and keys on three leases: one kept alive, one left to
    // run down from 300 s, one of 4 s that ends during the migration.
    let (kept, idle) = rt.block_on(async {
        let client = connect(&e).await;
        load(&client, "bulk/", 100_000).await;
        let mut c = client.clone();
        let kept = c.lease_grant(300, None).await.expect("grant").id();
        let idle = c.lease_grant(300, None).await.expect("grant").id();
        let brief = c.lease_grant(4, None).await.expect("grant").id();
        for (name, lease) in [("kept", kept), ("idle", idle), ("brief", brief)] {
            for i in 0..20 {
                let opts = PutOptions::new().with_lease(lease);
                c.put(format!("lease/{name}/{i}"), "on a lease", Some(opts))
                    .await
                    .expect("put on a lease");
            }
        }
        (kept, idle)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let keeping = {
        let (stop, e) = (stop.clone(), e.clone());
        rt.spawn(async move {
            let mut c = connect(&e).await;
            let (mut keeper, mut answers) = c.lease_keep_alive(kept).await.expect("keep-alive");
            while !stop.load(Ordering::Relaxed) {
                keeper.keep_alive().await.expect("keep-alive");
                answers.message().await.expect("keep-alive answer");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let writes = Arc::new(AtomicU64::new(0));
    let writers = start_writers(&rt, &e, idle, &stop, &writes);

    let state = c.scratch.path.join("migrate-state.json");
    let stdout = c.scratch.path.join("migrate.out");
    let stderr = c.scratch.path.join("migrate.err");
    let mut follower = Follower {
        child: migrate_command(&ferrium.join(","), &e, &state, &["--follow"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start ferriumctl migrate --follow"),
        stdout,
        stderr,
    };

    // The copy ends (the state file records its revision), then the
    // follower keeps up with the writers for a while.
    let copied = eventually(Duration::from_secs(180), || {
        follower.assert_running();
        Some(state_revision(&state)).filter(|r| *r > 0)
    })
    .unwrap_or_else(|| panic!("the copy did not finish: {}", follower.stderr()));
    let written = writes.load(Ordering::Relaxed);
    let target = rt.block_on(revision(&e));
    eventually(Duration::from_secs(120), || {
        follower.assert_running();
        let more = writes.load(Ordering::Relaxed) >= written + 500;
        (more && state_revision(&state) >= target).then_some(())
    })
    .unwrap_or_else(|| panic!("the follower did not keep up: {}", follower.stderr()));
    assert!(target > copied, "etcd moved on during the copy");

    // A leader change under the follower: the Ferrium leader stops, the
    // writes go on reaching Ferrium through the other two, and it comes back.
    let leader = c.wait_leader(Duration::from_secs(30));
    c.stop(leader);
    let written = writes.load(Ordering::Relaxed);
    let target = rt.block_on(revision(&e));
    eventually(Duration::from_secs(120), || {
        follower.assert_running();
        let more = writes.load(Ordering::Relaxed) >= written + 300;
        (more && state_revision(&state) >= target).then_some(())
    })
    .unwrap_or_else(|| panic!("the follower did not go on: {}", follower.stderr()));
    c.restart(leader);
    c.wait_leader(Duration::from_secs(30));

    // Cut-over: no more writes to etcd. Once the short leases have ended
    // in etcd and the follower has reached etcd's revision, with the same
    // leases on both sides, it is stopped.
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            w.await.expect("a writer");
        }
        keeping.await.expect("the keep-alive task");
    });
    let wanted = BTreeSet::from([kept, idle]);
    eventually(Duration::from_secs(60), || {
        (rt.block_on(lease_ids(&e)) == wanted).then_some(())
    })
    .expect("the short leases end in etcd");
    let reached = eventually(Duration::from_secs(60), || {
        follower.assert_running();
        let now = rt.block_on(revision(&e));
        let same_leases = rt.block_on(lease_ids(&ferrium_grpc)) == wanted;
        (same_leases && state_revision(&state) == now).then_some(now)
    })
    .unwrap_or_else(|| {
        panic!(
            "the follower did not reach etcd's revision with etcd's leases: {}",
            follower.stderr()
        )
    });
    let pid = follower.child.id();
    signal(pid, "INT");
    let status = eventually(Duration::from_secs(30), || {
        follower.child.try_wait().ok().flatten()
    })
    .expect("ferriumctl migrate stops after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", follower.stderr());
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&follower.stdout).expect("the summary"))
            .unwrap_or_else(|e| panic!("the summary is not JSON ({e}): {}", follower.stderr()));
    eprintln!(
        "ferriumctl migrate --follow printed:\n{summary}\n{}",
        follower.stderr()
    );
    assert_eq!(summary["revision"], reached, "{summary}");
    assert_eq!(summary["copied"], true, "{summary}");
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(
        summary["keys_written"].as_u64() >= Some(100_000),
        "{summary}"
    );
    assert!(summary["leases_created"].as_u64() >= Some(3), "{summary}");
    assert!(summary["events_applied"].as_u64() > Some(0), "{summary}");

    assert_same(&e, &ferrium_grpc, &rt);
    // Leases: the same ids, about the same time left. A lease etcd renews
    // is renewed in Ferrium at the keeper's next round (at most 5 s), once
    // etcd has 2 s more than Ferrium; one nobody renews runs down alike.
    rt.block_on(async {
        let mut ec = connect(&e).await;
        let mut fc = connect(&ferrium_grpc).await;
        for id in wanted {
            let a = ec
                .lease_time_to_live(id, None)
                .await
                .expect("etcd TTL")
                .ttl();
            let b = fc
                .lease_time_to_live(id, None)
                .await
                .expect("Ferrium TTL")
                .ttl();
            assert!(
                (a - b).abs() <= 10,
                "lease {id:x}: {a} s left in etcd, {b} s in Ferrium"
            );
        }
    });
}

#[test]
fn migrate_again_applies_only_the_differences() {
    let etcd = Etcd::start("migrate-rerun");
    let c = Cluster::start_in_process("migrate-rerun", 1, Bootstrap::Static, "");
    let ferrium = c.addr(1);
    let ferrium_grpc = c.node(1).grpc_addr();
    let e = etcd.client_addr.clone();
    let rt = runtime();
    let state = c.scratch.path.join("state.json");
    let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));

    let first = rt.block_on(async {
        let client = connect(&e).await;
        load(&client, "k/", 2000).await;
        let mut c = client.clone();
        let lease = c.lease_grant(300, None).await.expect("grant").id();
        for i in 0..10 {
            let opts = PutOptions::new().with_lease(lease);
            c.put(format!("leased/{i}"), "x", Some(opts))
                .await
                .expect("put");
        }
        lease
    });

    // The first run copies everything.
    let (code, s, err) = migrate(&ferrium, &e, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["copied"], true);
    assert_eq!(num(&s, "keys_written"), 2010);
    assert_eq!(num(&s, "leases_created"), 1);
    assert_eq!(s["revision"], rt.block_on(revision(&e)));
    assert_same(&e, &ferrium_grpc, &rt);

    // Nothing changed: nothing to do.
    let (code, s, err) = migrate(&ferrium, &e, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["copied"], false);
    assert_eq!(num(&s, "keys_written") + num(&s, "events_applied"), 0);
    assert_eq!(num(&s, "leases_created"), 0);

    // More writes: read back from etcd's history, 46 events.
    let second = rt.block_on(async {
        let mut c = connect(&e).await;
        for i in 0..30 {
            c.put(format!("k/{i:06}"), "changed", None)
                .await
                .expect("put");
        }
        for i in 100..110 {
            c.delete(format!("k/{i:06}"), None).await.expect("delete");
        }
        let lease = c.lease_grant(300, None).await.expect("grant").id();
        for i in 0..5 {
            let opts = PutOptions::new().with_lease(lease);
            c.put(format!("new/{i}"), "y", Some(opts))
                .await
                .expect("put");
        }
        let opts = PutOptions::new().with_lease(first);
        c.put("k/000500", "now leased", Some(opts))
            .await
            .expect("put");
        lease
    });
    let (code, s, err) = migrate(&ferrium, &e, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["copied"], false, "{s}");
    assert_eq!(num(&s, "events_applied"), 46, "{s}");
    assert_eq!(num(&s, "leases_created"), 1, "{s}");
    assert_eq!(s["revision"], rt.block_on(revision(&e)));
    assert_same(&e, &ferrium_grpc, &rt);
    let both = BTreeSet::from([first, second]);
    assert_eq!(rt.block_on(lease_ids(&ferrium_grpc)), both);

    // More writes, then etcd compacts that history: copied again, and only
    // the 20 changed keys are written and the 5 deleted ones deleted.
    rt.block_on(async {
        let mut c = connect(&e).await;
        for i in 1000..1020 {
            c.put(format!("k/{i:06}"), "changed again", None)
                .await
                .expect("put");
        }
        for i in 1500..1505 {
            c.delete(format!("k/{i:06}"), None).await.expect("delete");
        }
        let now = revision(&e).await;
        c.compact(now, None).await.expect("compact");
    });
    let (code, s, err) = migrate(&ferrium, &e, &state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("compacted"), "{err}");
    assert_eq!(s["copied"], true, "{s}");
    assert_eq!(num(&s, "keys_written"), 20, "{s}");
    assert_eq!(num(&s, "keys_deleted"), 5, "{s}");
    assert_eq!(num(&s, "leases_created"), 0, "{s}");
    assert_same(&e, &ferrium_grpc, &rt);
    assert_eq!(rt.block_on(lease_ids(&ferrium_grpc)), both);

    // Another migration's state file, or none for a cluster that holds
    // keys: refused, saying what to do.
    let (code, _, err) = migrate(&ferrium, &e, &state, &["--prefix", "k/"]);
    assert_eq!(code, 1);
    assert!(err.contains("--prefix \"\""), "{err}");
    let fresh = c.scratch.path.join("fresh.json");
    let (code, _, err) = migrate(&ferrium, &e, &fresh, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--overwrite"), "{err}");
}
