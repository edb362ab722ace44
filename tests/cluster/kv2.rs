//! KV v2 through a cluster: compare-and-swap under concurrent writers,
//! reads at past revisions around compaction, binary keys and values
//! through REST, gRPC and a snapshot install, and exactly-once writes when
//! the answer to a write is lost.

use crate::support::cluster::{Bootstrap, Cluster, eventually, http, request};
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{
    PutRequest, RangeRequest, RequestOp, TxnRequest, request_op, response_op,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn post(c: &Cluster, id: u64, path: &str, body: &Value) -> (u16, Value) {
    let r = c
        .call(id, "POST", path, Some(&body.to_string()))
        .unwrap_or_else(|e| panic!("{path} on node {id}: {e}"));
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// A `POST` with an `Idempotency-Key`, with the whole reply.
fn post_with_id(
    addr: &str,
    path: &str,
    body: &Value,
    id: &str,
) -> std::io::Result<crate::support::cluster::Reply> {
    request(
        addr,
        "POST",
        path,
        Some(&body.to_string()),
        &[("Idempotency-Key", id)],
        Duration::from_secs(15),
    )
}

fn b64(b: &[u8]) -> String {
    ferrium::api::base64::encode(b)
}

#[test]
fn a_counter_incremented_by_cas_from_16_clients_ends_at_the_successes() {
    let c = Arc::new(Cluster::start_in_process(
        "kv2-cas",
        3,
        Bootstrap::Static,
        "",
    ));
    let leader = c.wait_leader(Duration::from_secs(30));
    let (s, _) = post(
        &c,
        leader,
        "/write",
        &json!({"Set": {"key": "counter", "value": "0"}}),
    );
    assert_eq!(s, 200);
    let successes = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for client in 0..16u64 {
        let (c, successes, conflicts) = (c.clone(), successes.clone(), conflicts.clone());
        threads.push(std::thread::spawn(move || {
            let node = client % 3 + 1;
            let mut applied = Vec::new();
            for attempt in 0..15 {
                let (s, r) = post(&c, node, "/range", &json!({"key": "counter"}));
                assert_eq!(s, 200, "{r}");
                let kv = &r["kvs"][0];
                let n: u64 = kv["value"]
                    .as_str()
                    .expect("value")
                    .parse()
                    .expect("number");
                let rev = kv["mod_revision"].as_u64().expect("mod revision");
                let body = json!({"Set": {"key": "counter", "value": (n + 1).to_string(),
                    "if_mod_revision": rev}});
                // One request id per attempt, sent again while the outcome
                // is unknown or the cluster is briefly unavailable.
                let id = format!("cas-{client}-{attempt}");
                let reply = eventually(Duration::from_secs(20), || {
                    let r = post_with_id(&c.addr(node), "/write", &body, &id).ok()?;
                    (r.status != 503).then_some(r)
                })
                .expect("an answer");
                match reply.status {
                    200 => {
                        successes.fetch_add(1, Ordering::SeqCst);
                        applied.push((reply.json()["revision"].as_u64().expect("rev"), n + 1));
                    }
                    412 => {
                        assert_eq!(reply.json()["code"], "compare_failed");
                        conflicts.fetch_add(1, Ordering::SeqCst);
                    }
                    s => panic!("CAS answered {s}: {}", reply.body),
                }
            }
            applied
        }));
    }
    let mut applied: Vec<(u64, u64)> = Vec::new();
    for t in threads {
        applied.extend(t.join().expect("client thread"));
    }
    let n = successes.load(Ordering::SeqCst);
    println!(
        "{n} successful CAS, {} conflicts",
        conflicts.load(Ordering::SeqCst)
    );
    assert!(n > 0);
    for id in 1..=3 {
        let (s, r) = post(&c, id, "/range", &json!({"key": "counter"}));
        assert_eq!(s, 200);
        assert_eq!(r["kvs"][0]["value"], json!(n.to_string()), "on node {id}");
        assert_eq!(
            r["kvs"][0]["version"],
            json!(n + 1),
            "one version per success"
        );
    }
    // Every success is in history at its revision with the value it wrote.
    applied.sort();
    for (rev, value) in &applied {
        let (s, r) = post(&c, 2, "/range", &json!({"key": "counter", "revision": rev}));
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["kvs"][0]["value"], json!(value.to_string()), "at {rev}");
    }
    let values: Vec<u64> = applied.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values,
        (1..=n).collect::<Vec<_>>(),
        "each success added one, in order"
    );
}

#[test]
fn reads_at_past_revisions_before_and_after_compaction() {
    let c = Cluster::start_in_process("kv2-history", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    let mut revs = Vec::new();
    for i in 1..=5 {
        let (s, r) = post(
            &c,
            leader,
            "/write",
            &json!({"Set": {"key": "k", "value": format!("v{i}")}}),
        );
        assert_eq!(s, 200, "{r}");
        revs.push(r["revision"].as_u64().expect("revision"));
    }
    for (i, rev) in revs.iter().enumerate() {
        for id in 1..=3 {
            let (s, r) = post(&c, id, "/range", &json!({"key": "k", "revision": rev}));
            assert_eq!(s, 200, "{r}");
            assert_eq!(r["kvs"][0]["value"], json!(format!("v{}", i + 1)));
            assert_eq!(
                r["header"]["revision"].as_u64().map(|h| h >= *rev),
                Some(true)
            );
        }
    }
    let (s, r) = post(&c, 2, "/compact", &json!({"revision": revs[2]}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["compact_revision"], json!(revs[2]));
    for id in 1..=3 {
        let (s, r) = post(&c, id, "/range", &json!({"key": "k", "revision": revs[1]}));
        assert_eq!(s, 410, "node {id}: {r}");
        assert_eq!(r["code"], "compacted");
        assert_eq!(r["compact_revision"], json!(revs[2]));
        assert!(
            r["error"]
                .as_str()
                .unwrap_or("")
                .contains(&revs[2].to_string()),
            "{r}"
        );
        let (s, r) = post(&c, id, "/range", &json!({"key": "k", "revision": revs[2]}));
        assert_eq!((s, r["kvs"][0]["value"].clone()), (200, json!("v3")));
    }
    let (s, r) = post(&c, leader, "/compact", &json!({"revision": revs[1]}));
    assert_eq!((s, r["code"].clone()), (410, json!("compacted")), "{r}");
    let (s, r) = post(
        &c,
        leader,
        "/range",
        &json!({"key": "k", "revision": 1_000_000}),
    );
    assert_eq!(
        (s, r["code"].clone()),
        (400, json!("future_revision")),
        "{r}"
    );
    // A transaction's compare-and-swap on /txn, with the previous value.
    let txn = json!({
        "compare": [{"key": "k", "target": "mod_revision", "result": "=", "mod_revision": revs[4]}],
        "success": [{"put": {"key": "k", "value": "v6", "prev_kv": true}}],
        "failure": [{"range": {"key": "k"}}],
    });
    let (s, r) = post(&c, 3, "/txn", &txn);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["succeeded"], json!(true));
    assert_eq!(r["responses"][0]["put"]["prev_kv"]["value"], json!("v5"));
    let (s, r) = post(&c, 3, "/txn", &txn);
    assert_eq!((s, r["succeeded"].clone()), (200, json!(false)));
    assert_eq!(r["responses"][0]["range"]["kvs"][0]["value"], json!("v6"));
}

#[test]
fn binary_keys_and_values_through_rest_grpc_restart_and_snapshot_install() {
    let extra = "[raft]\nsnapshot_threshold = 50\nlog_retention = 10\n";
    let mut c = Cluster::start_with("kv2-binary", 3, Bootstrap::Static, extra);
    let leader = c.wait_leader(Duration::from_secs(30));
    let key = [0u8, 0xff, b'k', 0];
    let value = [0xfeu8, 0, 1, 2, 0xc3];
    // REST: base64 on /write and on /range.
    let (s, r) = post(
        &c,
        leader,
        "/write",
        &json!({"Set": {"key": b64(&key), "value": b64(&value), "encoding": "base64"}}),
    );
    assert_eq!(s, 200, "{r}");
    let first = r["revision"].as_u64().expect("revision");
    // gRPC: bytes in a transaction.
    let grpc_key = [b'g', 0, 0x80];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let grpc_addr = c.node(leader).grpc_addr();
    rt.block_on(async {
        let mut kv = KvServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .expect("connect");
        let t = kv
            .txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: grpc_key.to_vec(),
                        value: value.to_vec(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await
            .expect("txn")
            .into_inner();
        assert!(t.succeeded);
        assert!(matches!(
            t.responses[0].response,
            Some(response_op::Response::ResponsePut(_))
        ));
        let r = kv
            .range(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(r.kvs[0].value, value, "the REST write read over gRPC");
        assert_eq!(r.header.expect("header").member_id, leader);
    });
    // A text answer gives binary data in base64 and says so.
    let (s, r) = post(&c, leader, "/range", &json!({"key": "g", "prefix": true}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["kvs"][0]["encoding"], json!("base64"));
    assert_eq!(r["kvs"][0]["key"], json!(b64(&grpc_key)));
    assert_eq!(r["kvs"][0]["value"], json!(b64(&value)));

    // Enough writes for snapshots and a purged log, then a new member that
    // can only catch up by installing one.
    let (s, _) = post(
        &c,
        leader,
        "/write",
        &json!({"Set": {"key": b64(&key), "value": b64(b"second"), "encoding": "base64"}}),
    );
    assert_eq!(s, 200);
    for i in 0..120 {
        let (s, _) = post(
            &c,
            leader,
            "/write",
            &json!({"Set": {"key": format!("fill/{i}"), "value": "x"}}),
        );
        assert_eq!(s, 200);
    }
    let id = c.add_node();
    let body = json!({"node_id": id, "rpc_addr": c.addr(id), "api_addr": c.addr(id)}).to_string();
    let r = http(&c.addr(leader), "POST", "/add-learner", Some(&body)).expect("add learner");
    assert_eq!(r.status, 200, "{}", r.body);
    let log = eventually(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&c.node(id).log).ok()?;
        log.contains("installed snapshot").then_some(log)
    });
    assert!(
        log.is_some(),
        "the learner installed no snapshot: {}",
        c.log_tail(id)
    );
    let check = |c: &Cluster, node: u64| {
        let at = |rev: u64| json!({"key": b64(&key), "encoding": "base64", "revision": rev, "consistency": "stale"});
        let (s, r) = post(c, node, "/range", &at(first));
        assert_eq!(s, 200, "node {node}: {r}");
        assert_eq!(
            r["kvs"][0]["value"],
            json!(b64(&value)),
            "node {node}: the first version"
        );
        let (s, r) = post(c, node, "/range", &at(0));
        assert_eq!(s, 200);
        assert_eq!(
            r["kvs"][0]["value"],
            json!(b64(b"second")),
            "node {node}: the current one"
        );
        assert_eq!(r["kvs"][0]["version"], json!(2));
    };
    eventually(Duration::from_secs(30), || {
        let (s, r) = post(
            &c,
            id,
            "/range",
            &json!({"key": "fill/119", "consistency": "stale"}),
        );
        (s == 200 && r["count"] == json!(1)).then_some(())
    })
    .expect("the learner caught up");
    check(&c, id);

    // A compaction point survives a restart of every kind of member.
    let (s, r) = post(&c, leader, "/compact", &json!({"revision": first}));
    assert_eq!(s, 200, "{r}");
    let follower = c
        .ids()
        .into_iter()
        .find(|n| *n != leader && *n != id)
        .expect("a follower");
    for node in [follower, id] {
        c.restart(node);
        c.wait_http(node, Duration::from_secs(30));
        eventually(Duration::from_secs(30), || {
            let (s, r) = post(
                &c,
                node,
                "/range",
                &json!({"key": "k", "revision": first - 1, "consistency": "stale"}),
            );
            (s == 410 && r["compact_revision"] == json!(first)).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "node {node} lost its compaction point: {}",
                c.log_tail(node)
            )
        });
        check(&c, node);
    }
}

#[test]
fn a_write_whose_answer_is_lost_is_applied_once_when_retried_with_its_id() {
    let c = Cluster::start_proxied("kv2-once", 3, "[network]\nrequest_timeout = \"2s\"\n");
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c
        .ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    // The write goes through a follower, which forwards it; the leader's
    // answer to the follower is swallowed after the leader appended (and
    // committed, with the third member) the entry.
    c.net().set(
        leader,
        follower,
        crate::support::cluster::proxy::LinkMode::Blackhole,
    );
    let body = json!({"Set": {"key": "once", "value": "1"}});
    let first = post_with_id(&c.addr(follower), "/write", &body, "the-one-id").expect("answer");
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.json()["code"], "outcome_unknown", "{}", first.body);
    // It was applied: the leader has it.
    let applied = eventually(Duration::from_secs(10), || {
        let r = c.get(leader, "once", "linearizable").ok()?;
        r.json()["mod_revision"].as_u64()
    })
    .expect("the leader applied the first attempt");
    c.net().heal();
    // The retry with the same id answers the first result, applies nothing.
    let retry = eventually(Duration::from_secs(20), || {
        let r = post_with_id(&c.addr(follower), "/write", &body, "the-one-id").ok()?;
        (r.status == 200).then_some(r)
    })
    .expect("the retry is answered");
    assert_eq!(retry.json()["revision"], json!(applied), "the first result");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let r = c.get(leader, "once", "linearizable").expect("read").json();
    assert_eq!(r["version"], json!(1), "applied once: {r}");
    // A new id is a new write.
    let again = post_with_id(&c.addr(leader), "/write", &body, "another-id").expect("answer");
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), None);
    let r = c.get(leader, "once", "linearizable").expect("read").json();
    assert_eq!(r["version"], json!(2));
}
