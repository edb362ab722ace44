//! etcd's JSON gateway: the same requests, as a curl user or a gateway
//! client (Python's etcd3gw) sends them, to a real etcd 3.4 and to three
//! Ferrium nodes; statuses and bodies must match, with the values that
//! differ between two clusters masked (ids, Raft terms, revisions).

use crate::support::cluster::etcd::Etcd;
use crate::support::cluster::{Bootstrap, Cluster, request, request_text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Fields whose values differ between two clusters with the same data.
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "revision",
    "create_revision",
    "mod_revision",
    "compact_revision",
    "ID",
    "lease",
];

fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if MASKED.contains(&k.as_str()) {
                    *v = json!("<masked>");
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Side {
    addr: String,
    record: Vec<(String, u16, Value)>,
}

impl Side {
    fn post(&mut self, path: &str, body: Value) -> Value {
        let r = request(
            &self.addr,
            "POST",
            path,
            Some(&body.to_string()),
            &[("Content-Type", "application/json")],
            Duration::from_secs(15),
        )
        .expect("the gateway answers");
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {:?}", r.body));
        let mut masked = v.clone();
        mask(&mut masked);
        self.record
            .push((format!("{path} {body}"), r.status, masked));
        v
    }

    /// A streamed call: sends `body`, reads `lines` answer lines.
    fn stream(&mut self, path: &str, body: &str, lines: usize, during: impl FnOnce(&mut Side)) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let text = request_text(
            &self.addr,
            "POST",
            path,
            Some(body),
            &[("Content-Type", "application/json")],
            false,
        );
        s.write_all(text.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        // The head, up to the empty line.
        let mut status = 0;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).expect("the head");
            if status == 0 {
                status = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
            if l == "\r\n" {
                break;
            }
        }
        during(self);
        let mut got = Vec::new();
        while got.len() < lines {
            // Chunked: a size line, then the data.
            let mut size = String::new();
            r.read_line(&mut size).expect("a chunk");
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            assert!(n > 0, "the stream ended after {} lines", got.len());
            let mut data = vec![0u8; n + 2];
            std::io::Read::read_exact(&mut r, &mut data).unwrap();
            let text = String::from_utf8_lossy(&data[..n]).to_string();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let mut v: Value = serde_json::from_str(line).expect("a JSON line");
                mask(&mut v);
                got.push(v);
            }
        }
        self.record
            .push((format!("{path} {body}"), status, Value::Array(got)));
    }
}

fn script(s: &mut Side) {
    let (key, bar) = (b64("foo"), b64("bar"));
    s.post("/v3/kv/put", json!({"key": key, "value": bar}));
    let put = s.post(
        "/v3/kv/put",
        json!({"key": b64("fop"), "value": b64("x"), "prev_kv": true}),
    );
    let first: i64 = put["header"]["revision"].as_str().unwrap().parse().unwrap();
    s.post(
        "/v3/kv/put",
        json!({"key": b64("fop"), "value": b64("y"), "prev_kv": true}),
    );
    s.post("/v3/kv/range", json!({"key": key}));
    s.post("/v3/kv/range", json!({"key": b64("nope")}));
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fo"), "range_end": b64("fp")}),
    );
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fo"), "range_end": b64("fp"), "limit": 1}),
    );
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fo"), "range_end": b64("fp"), "count_only": true}),
    );
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fo"), "range_end": b64("fp"), "keys_only": true, "sort_order": "DESCEND"}),
    );
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fop"), "revision": first.to_string()}),
    );
    s.post(
        "/v3/kv/range",
        json!({"key": b64("fop"), "serializable": true}),
    );
    // Bad input: etcd's error body and status.
    s.post("/v3/kv/range", json!({"key": ""}));
    s.post("/v3/kv/put", json!({"value": bar}));
    s.post(
        "/v3/kv/put",
        json!({"key": key, "value": bar, "lease": "12345"}),
    );
    // Transactions.
    let cas = |v: &str| {
        json!({
            "compare": [{"target": "VALUE", "key": b64("foo"), "value": b64(v), "result": "EQUAL"}],
            "success": [{"request_put": {"key": b64("foo"), "value": b64("baz")}}],
            "failure": [{"request_range": {"key": b64("foo")}}],
        })
    };
    s.post("/v3/kv/txn", cas("bar"));
    s.post("/v3/kv/txn", cas("bar"));
    s.post(
        "/v3/kv/txn",
        json!({"compare": [{"target": "CREATE", "key": b64("nope"), "create_revision": "0", "result": "EQUAL"}],
               "success": [{"request_delete_range": {"key": b64("fop"), "prev_kv": true}}]}),
    );
    s.post(
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": key, "value": bar}}, {"request_put": {"key": key, "value": bar}}]}),
    );
    // Deletions.
    s.post("/v3/kv/put", json!({"key": b64("d/1"), "value": bar}));
    s.post("/v3/kv/put", json!({"key": b64("d/2"), "value": bar}));
    s.post(
        "/v3/kv/deleterange",
        json!({"key": b64("d/"), "range_end": b64("d0"), "prev_kv": true}),
    );
    s.post("/v3/kv/deleterange", json!({"key": b64("nope")}));
    // Leases.
    let lease = s.post("/v3/lease/grant", json!({"TTL": "100"}));
    let id = lease["ID"].as_str().unwrap().to_string();
    s.post(
        "/v3/kv/put",
        json!({"key": b64("l/k"), "value": bar, "lease": id}),
    );
    s.post("/v3/lease/timetolive", json!({"ID": id, "keys": true}));
    s.post("/v3/lease/leases", json!({}));
    s.stream(
        "/v3/lease/keepalive",
        &json!({"ID": id}).to_string(),
        1,
        |_| {},
    );
    s.post("/v3/lease/revoke", json!({"ID": id}));
    s.post("/v3/lease/revoke", json!({"ID": id}));
    s.post("/v3/lease/timetolive", json!({"ID": id}));
    s.post("/v3/kv/range", json!({"key": b64("l/k")}));
    // A watch: created, then the event of a put made while it runs.
    let watch = json!({"create_request": {"key": b64("w"), "prev_kv": true}}).to_string();
    s.stream("/v3/watch", &watch, 2, |s| {
        s.post("/v3/kv/put", json!({"key": b64("w"), "value": b64("1")}));
    });
    let from = json!({"create_request": {"key": b64("w"), "start_revision": first.to_string()}})
        .to_string();
    s.stream("/v3/watch", &from, 2, |_| {});
    // Compaction, and a read below it.
    let now = s.post("/v3/kv/range", json!({"key": key}));
    let now = now["header"]["revision"].as_str().unwrap().to_string();
    s.post("/v3/kv/compaction", json!({"revision": now}));
    s.post(
        "/v3/kv/range",
        json!({"key": key, "revision": first.to_string()}),
    );
    s.post("/v3/kv/compaction", json!({"revision": first.to_string()}));
    // Maintenance.
    s.post("/v3/maintenance/alarm", json!({"action": "GET"}));
    s.post("/v3/maintenance/defragment", json!({}));
}

#[test]
fn the_json_gateway_answers_as_etcds_does() {
    let etcd = Etcd::start("gateway");
    let c = Cluster::start_in_process("etcd-gateway", 3, Bootstrap::Static, "");
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let mut e = Side {
        addr: etcd.client_addr.clone(),
        record: Vec::new(),
    };
    let mut f = Side {
        addr: c.addr(follower),
        record: Vec::new(),
    };
    script(&mut e);
    script(&mut f);
    let mut differences = Vec::new();
    for (a, b) in e.record.iter().zip(&f.record) {
        if a.1 != b.1 || a.2 != b.2 {
            differences.push(format!(
                "{}\n  etcd    {} {}\n  ferrium {} {}",
                a.0, a.1, a.2, b.1, b.2
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} gateway calls answered otherwise than etcd 3.4:\n{}",
        differences.len(),
        e.record.len(),
        differences.join("\n")
    );
    // Answers whose values differ by design: the same fields.
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let es = e.post("/v3/maintenance/status", json!({}));
    let fs = f.post("/v3/maintenance/status", json!({}));
    for k in [
        "header",
        "version",
        "dbSize",
        "leader",
        "raftIndex",
        "raftTerm",
    ] {
        assert!(keys(&fs).contains(&k.to_string()), "status lacks {k}: {fs}");
        assert!(keys(&es).contains(&k.to_string()));
    }
    let fm = f.post("/v3/cluster/member/list", json!({}));
    assert_eq!(fm["members"].as_array().unwrap().len(), 3, "{fm}");
    let em = e.post("/v3/cluster/member/list", json!({}));
    assert_eq!(
        keys(&fm["members"][0]),
        keys(&em["members"][0]),
        "member fields"
    );
}
