//! Bad input on every REST route gets the right 4xx status and a JSON error
//! body `{"error": ..., "code": ...}`; nothing is a 500, nothing panics.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, http};
use serde_json::json;

fn expect(c: &Cluster, method: &str, path: &str, body: Option<&str>, status: u16, code: &str) {
    let r = http(&c.addr(1), method, path, body).unwrap();
    assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.body);
    let j = r.json();
    assert_eq!(
        j["code"],
        json!(code),
        "{method} {path} {body:?}: {}",
        r.body
    );
    assert!(
        j["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        r.body
    );
}

#[test]
fn every_route_rejects_bad_input_with_the_right_status() {
    let extra =
        "[network]\nmax_key_size = 64\nmax_value_size = 1024\nmax_message_size = \"64KiB\"\n";
    let c = Cluster::start_with("rest-input", 1, Bootstrap::Static, extra);

    // /write
    for body in [
        "",
        "{",
        "[]",
        "null",
        r#"{"Set":{"key":"k"}}"#,
        r#"{"Set":{"key":1,"value":"v"}}"#,
        r#"{"Set":{"key":"k","value":2}}"#,
        r#"{"Put":{"key":"k","value":"v"}}"#,
        r#"{"Set":{"key":"","value":"v"}}"#,
        r#"{"Delete":{}}"#,
        r#"{"Delete":{"key":""}}"#,
        r#"{"BatchSet":{"pairs":[]}}"#,
        r#"{"BatchSet":{"pairs":[["a"]]}}"#,
        "\u{0}\u{1}binary",
    ] {
        expect(&c, "POST", "/write", Some(body), 400, "invalid_request");
    }
    let long_key = "k".repeat(65);
    expect(
        &c,
        "POST",
        "/write",
        Some(&json!({"Set": {"key": long_key, "value": "v"}}).to_string()),
        413,
        "payload_too_large",
    );
    let big_value = "v".repeat(1025);
    expect(
        &c,
        "POST",
        "/write",
        Some(&json!({"Set": {"key": "k", "value": big_value}}).to_string()),
        413,
        "payload_too_large",
    );
    let huge = "v".repeat(70 * 1024);
    expect(
        &c,
        "POST",
        "/write",
        Some(&json!({"Set": {"key": "k", "value": huge}}).to_string()),
        413,
        "payload_too_large",
    );

    // /read
    for body in [
        "",
        "{}",
        r#"{"key":5}"#,
        r#"{"key":""}"#,
        r#"{"key":"k","consistency":"eventual"}"#,
        r#"{"key":"k","consistency":7}"#,
        r#"{"key":"k","extra":true}"#,
        "not json",
    ] {
        expect(&c, "POST", "/read", Some(body), 400, "invalid_request");
    }
    expect(
        &c,
        "POST",
        "/read",
        Some(&json!({"key": "k".repeat(65)}).to_string()),
        413,
        "payload_too_large",
    );

    // /list
    expect(
        &c,
        "POST",
        "/list",
        Some(r#"{"limit":"ten"}"#),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/list",
        Some(r#"{"limit":1000000}"#),
        400,
        "invalid_request",
    );

    // Admin routes.
    expect(&c, "POST", "/init", Some("{bad"), 400, "invalid_request");
    expect(&c, "POST", "/init", None, 409, "conflict");
    expect(
        &c,
        "POST",
        "/add-learner",
        Some(r#"{"node_id":"two"}"#),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/add-learner",
        Some(r#"{"rpc_addr":"127.0.0.1:1"}"#),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/add-learner",
        Some(r#"{"node_id":0,"rpc_addr":"127.0.0.1:1"}"#),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/change-membership",
        Some("[]"),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/change-membership",
        Some(r#"["a"]"#),
        400,
        "invalid_request",
    );
    expect(
        &c,
        "POST",
        "/change-membership",
        Some("[1,99]"),
        409,
        "conflict",
    );

    // Wrong methods and unknown routes.
    for (method, path) in [
        ("GET", "/write"),
        ("GET", "/read"),
        ("PUT", "/init"),
        ("POST", "/health"),
        ("DELETE", "/leader"),
        ("POST", "/metrics"),
    ] {
        let r = http(&c.addr(1), method, path, None).unwrap();
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert!(r.header("allow").is_some(), "{method} {path} lacks Allow");
        assert_eq!(r.json()["code"], json!("method_not_allowed"));
    }
    expect(&c, "GET", "/nope", None, 404, "not_found");

    // Peer routes refuse requests without peer headers.
    let r = http(&c.addr(1), "POST", "/raft/append", Some("{}")).unwrap();
    assert_eq!(r.status, 421, "{}", r.body);

    // Still healthy and serving.
    let r = c.set(1, "after", "ok").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(&c.addr(1), "GET", "/health", None).unwrap();
    assert_eq!(r.status, 200);
    let log = std::fs::read_to_string(&c.node(1).log).unwrap();
    assert!(!log.contains("panicked"), "a handler panicked: {log}");
}

#[test]
fn readme_examples_work_against_a_single_node() {
    let c = Cluster::start("readme", 1, Bootstrap::Static);
    let a = c.addr(1);
    let r = http(
        &a,
        "POST",
        "/write",
        Some(r#"{"Set":{"key":"mykey","value":"myvalue"}}"#),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(&a, "POST", "/read", Some(r#"{"key":"mykey"}"#)).unwrap();
    assert_eq!(r.json()["value"], json!("myvalue"));
    let r = http(&a, "POST", "/write", Some(r#"{"Delete":{"key":"mykey"}}"#)).unwrap();
    assert_eq!(r.json()["existed"], json!(true));
    let r = http(&a, "GET", "/health", None).unwrap();
    assert_eq!(r.json()["status"], json!("healthy"));
    let r = http(&a, "GET", "/leader", None).unwrap();
    assert_eq!(r.json()["leader"], json!(1));
    let r = http(&a, "GET", "/is-leader", None).unwrap();
    assert_eq!(r.json()["is_leader"], json!(true));
    let r = http(&a, "GET", "/metrics", None).unwrap();
    assert_eq!(r.json()["state"], json!("Leader"));
    // Ready once the write just made has been applied (a moment at most).
    let ready = support::cluster::eventually(std::time::Duration::from_secs(30), || {
        (http(&a, "GET", "/ready", None).ok()?.status == 200).then_some(())
    });
    assert!(ready.is_some(), "node never became ready");
}

/// serde reads a struct from an array of its field values; the API must
/// not: an array where an object is expected is a client's mistake.
#[test]
fn json_arrays_where_objects_are_expected_get_400_on_every_route() {
    let c = Cluster::start("rest-arrays", 1, Bootstrap::Static);
    let a = c.addr(1);
    for (path, body) in [
        ("/read", r#"["k"]"#),
        ("/read", r#"["k","stale"]"#),
        ("/list", r#"["",10]"#),
        ("/write", r#"{"Set":["k","v"]}"#),
        ("/write", r#"{"Delete":["k"]}"#),
        ("/init", r#"{"1":["127.0.0.1:1"]}"#),
    ] {
        expect(&c, "POST", path, Some(body), 400, "invalid_request");
        let r = http(&a, "POST", path, Some(body)).unwrap();
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("array") && e.contains("object")),
            "{path} {body}: {}",
            r.body
        );
    }
    let r = http(&a, "POST", "/read", Some(r#"{"key":"k"}"#)).unwrap();
    assert_eq!(r.json()["value"], json!(null), "{}", r.body);

    // Peer routes decode their messages by the same rule.
    let peer = [("x-ferrium-target", "1"), ("x-ferrium-cluster", "test")];
    let t = std::time::Duration::from_secs(15);
    let r = support::cluster::request(
        &a,
        "POST",
        "/raft/write",
        Some(r#"{"Set":["pk","v"]}"#),
        &peer,
        t,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], json!("invalid_request"));
    let r = http(&a, "POST", "/read", Some(r#"{"key":"pk"}"#)).unwrap();
    assert_eq!(r.json()["value"], json!(null), "{}", r.body);

    // Bodies that are arrays by design still are.
    let r = http(&a, "POST", "/change-membership", Some("[1]")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = support::cluster::request(&a, "POST", "/raft/change-membership", Some("[1]"), &peer, t)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("Ok").is_some(), "{}", r.body);
    let r = c.set(1, "after", "ok").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}
