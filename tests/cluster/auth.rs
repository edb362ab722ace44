//! Token authentication with roles over REST, and peer routes that accept
//! only requests signed with the cluster secret.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, request};
use std::time::Duration;

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn start(name: &str) -> Cluster {
    let dir = std::env::temp_dir().join(format!("ferrium-auth-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# token role\n{READ} read\n{WRITE} write\n"),
    )
    .unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let extra = format!(
        "[security]\nauth_method = \"token\"\ntoken_file = \"{}\"\ntokens = [{{ token = \"{ADMIN}\", role = \"admin\" }}]\ncluster_secret_file = \"{}\"\n",
        tokens.display(),
        secret.display()
    );
    Cluster::start_full(name, 3, Bootstrap::Static, &extra, Some(ADMIN))
}

fn call(
    c: &Cluster,
    id: u64,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> support::cluster::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(
        &c.addr(id),
        method,
        path,
        body,
        &headers,
        Duration::from_secs(15),
    )
    .unwrap()
}

#[test]
fn roles_allow_what_they_may_and_refuse_the_rest() {
    let c = start("roles");
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let write = r#"{"Set":{"key":"k","value":"v"}}"#;
    let read = r#"{"key":"k"}"#;

    // Writes through a follower are forwarded with the cluster secret.
    assert_eq!(
        call(&c, follower, "POST", "/write", Some(write), Some(WRITE)).status,
        200
    );
    assert_eq!(
        call(&c, follower, "POST", "/write", Some(write), Some(ADMIN)).status,
        200
    );
    let r = call(&c, follower, "POST", "/write", Some(write), Some(READ));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "permission_denied");

    for token in [READ, WRITE, ADMIN] {
        let r = call(&c, follower, "POST", "/read", Some(read), Some(token));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["value"], "v");
        assert_eq!(
            call(&c, follower, "GET", "/metrics", None, Some(token)).status,
            200
        );
        assert_eq!(
            call(&c, follower, "GET", "/leader", None, Some(token)).status,
            200
        );
    }
    for token in [READ, WRITE] {
        let r = call(
            &c,
            leader,
            "POST",
            "/change-membership",
            Some("[1,2,3]"),
            Some(token),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(
            call(&c, leader, "POST", "/init", None, Some(token)).status,
            403
        );
    }
    let r = call(
        &c,
        leader,
        "POST",
        "/change-membership",
        Some("[1,2,3]"),
        Some(ADMIN),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Missing or wrong token: 401 with WWW-Authenticate, nothing else said.
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let r = call(&c, leader, "POST", "/read", Some(read), token);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["code"], "unauthenticated");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
    }
    let r = request(
        &c.addr(leader),
        "POST",
        "/read",
        Some(read),
        &[("Authorization", &format!("Basic {READ}"))],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 401);

    // Health and readiness stay open for load balancers (open_health = true).
    assert_eq!(call(&c, leader, "GET", "/health", None, None).status, 200);

    // Denials are counted.
    let m = call(&c, leader, "GET", "/metrics", None, Some(READ));
    assert_eq!(m.status, 200);
    let prom = request(
        &c.addr(leader),
        "GET",
        "/metrics",
        None,
        &[
            ("Authorization", &format!("Bearer {READ}")),
            ("Accept", "text/plain"),
        ],
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        prom.body
            .contains("ferrium_auth_denied_total{kind=\"unauthenticated\"}"),
        "{}",
        prom.body
    );
    assert!(
        prom.body
            .contains("ferrium_auth_denied_total{kind=\"forbidden\"}")
    );

    // No token appears in any log or in the metrics.
    for id in c.ids() {
        let log = std::fs::read_to_string(&c.node(id).log).unwrap();
        for t in [READ, WRITE, ADMIN] {
            assert!(!log.contains(t), "node {id}'s log contains a token");
        }
    }
    for t in [READ, WRITE, ADMIN] {
        assert!(!prom.body.contains(t) && !m.body.contains(t));
    }
}

/// A peer request to `path` on `to`, as node 2 of cluster "test", with one
/// extra header; returns the status.
fn peer_call(c: &Cluster, to: u64, path: &str, body: &str, extra: (&str, &str)) -> u16 {
    let target = to.to_string();
    let headers = [
        ("x-ferrium-target", target.as_str()),
        ("x-ferrium-from", "2"),
        ("x-ferrium-cluster", "test"),
        extra,
    ];
    let r = request(
        &c.addr(to),
        "POST",
        path,
        Some(body),
        &headers,
        Duration::from_secs(5),
    )
    .unwrap();
    r.status
}

#[test]
fn peer_routes_refuse_unsigned_and_wrongly_signed_requests() {
    let c = start("peers");
    let leader = c.wait_leader(Duration::from_secs(30));
    let write = r#"{"Set":{"key":"forged","value":"x"}}"#;
    let signed = |secret: &[u8], path: &str| {
        ferrium::auth::PeerSigner::new(secret.to_vec(), "test").sign(
            "POST",
            path,
            leader,
            2,
            write.as_bytes(),
        )
    };

    // No credentials at all, even with an admin token.
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(
        peer_call(&c, leader, "/raft/write", write, ("Authorization", &admin)),
        401
    );
    // A signature made with another secret.
    let forged = signed(b"another-secret-0123456789abcdef", "/raft/write");
    assert_eq!(
        peer_call(
            &c,
            leader,
            "/raft/write",
            write,
            ("x-ferrium-auth", &forged)
        ),
        401
    );
    // Garbage in the header.
    assert_eq!(
        peer_call(
            &c,
            leader,
            "/raft/vote",
            "{}",
            ("x-ferrium-auth", "t=1,mac=zz")
        ),
        401
    );
    // A signature for another route.
    let other = signed(b"0123456789abcdef0123456789abcdef", "/raft/vote");
    assert_eq!(
        peer_call(&c, leader, "/raft/write", write, ("x-ferrium-auth", &other)),
        401
    );
    // The right secret is accepted (the route then does its job).
    let good = signed(b"0123456789abcdef0123456789abcdef", "/raft/write");
    assert_eq!(
        peer_call(&c, leader, "/raft/write", write, ("x-ferrium-auth", &good)),
        200
    );
    let r = c.get(leader, "forged", "linearizable").unwrap();
    assert_eq!(r.json()["value"], "x");
}

#[test]
fn peer_signatures_cover_the_body_and_cannot_be_replayed() {
    let c = start("replay");
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    let sign = |secret: &[u8], body: &str| {
        ferrium::auth::PeerSigner::new(secret.to_vec(), "test").sign(
            "POST",
            "/raft/write",
            leader,
            2,
            body.as_bytes(),
        )
    };
    let write = |key: &str| format!(r#"{{"Set":{{"key":"{key}","value":"x"}}}}"#);
    let secret = b"0123456789abcdef0123456789abcdef";

    // The signature of one body does not cover another.
    let sig = sign(secret, &write("signed"));
    let r = peer_call(
        &c,
        leader,
        "/raft/write",
        &write("swapped"),
        ("x-ferrium-auth", &sig),
    );
    assert_eq!(r, 401);
    let r = c.get(leader, "swapped", "linearizable").unwrap();
    assert!(r.json()["value"].is_null(), "the swapped body was applied");

    // The same request twice: the second one is a replay.
    let sig = sign(secret, &write("once"));
    let r = peer_call(
        &c,
        leader,
        "/raft/write",
        &write("once"),
        ("x-ferrium-auth", &sig),
    );
    assert_eq!(r, 200);
    let r = peer_call(
        &c,
        leader,
        "/raft/write",
        &write("once"),
        ("x-ferrium-auth", &sig),
    );
    assert_eq!(r, 401);

    // A signature made with another cluster secret.
    let forged = sign(b"another-secret-0123456789abcdef", &write("forged"));
    let r = peer_call(
        &c,
        leader,
        "/raft/write",
        &write("forged"),
        ("x-ferrium-auth", &forged),
    );
    assert_eq!(r, 401);

    // The refusals are counted, and the cluster's own signed traffic
    // (replication, forwarded writes) still flows.
    let prom = request(
        &c.addr(leader),
        "GET",
        "/metrics",
        None,
        &[
            ("Authorization", &format!("Bearer {READ}")),
            ("Accept", "text/plain"),
        ],
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        prom.body
            .contains("ferrium_auth_denied_total{kind=\"peer_replay\"} 1"),
        "{}",
        prom.body
    );
    for i in 0..20 {
        let body = format!(r#"{{"Set":{{"key":"fwd{i}","value":"v"}}}}"#);
        let r = call(&c, follower, "POST", "/write", Some(&body), Some(WRITE));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = call(
        &c,
        follower,
        "POST",
        "/read",
        Some(r#"{"key":"fwd19"}"#),
        Some(READ),
    );
    assert_eq!(r.json()["value"], "v");
}

#[test]
fn ferriumctl_sends_its_token() {
    let c = start("ctl");
    let endpoints = c
        .ids()
        .iter()
        .map(|i| c.addr(*i))
        .collect::<Vec<_>>()
        .join(",");
    let ctl = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferriumctl"));
        cmd.arg("--endpoints")
            .arg(&endpoints)
            .args(args)
            .env_remove("FERRIUM_TOKEN");
        if let Some(t) = token {
            cmd.env("FERRIUM_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = ctl(&["put", "ctl-key", "ctl-value"], Some(WRITE));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--token", READ, "get", "ctl-key"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ctl-value"));
    let out = ctl(&["put", "ctl-key", "x"], Some(READ));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["get", "ctl-key"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("token") || err.contains("401"), "{err}");
}

/// A gRPC request carrying `Bearer token` when one is given.
fn with<T>(token: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().expect("valid metadata");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

#[test]
fn grpc_calls_need_a_token_with_the_right_role() {
    use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
    use ferrium::api::proto::kv::{GetRequest, SetRequest};
    use ferrium::api::proto::management::ChangeMembershipRequest;
    use ferrium::api::proto::management::management_service_client::ManagementServiceClient;
    use tonic::Code;

    let c = start("grpc");
    let leader = c.wait_leader(Duration::from_secs(30));
    let grpc = c.node(leader).grpc_addr();
    let http_port = c.addr(leader);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        for addr in [grpc, http_port] {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut kv = KvServiceClient::new(channel.clone());
            let set = SetRequest {
                key: "g".into(),
                value: "1".into(),
            };
            assert_eq!(
                kv.set(with(None, set.clone())).await.unwrap_err().code(),
                Code::Unauthenticated
            );
            assert_eq!(
                kv.set(with(Some("nope-0123456789abcdef"), set.clone()))
                    .await
                    .unwrap_err()
                    .code(),
                Code::Unauthenticated
            );
            assert_eq!(
                kv.set(with(Some(READ), set.clone()))
                    .await
                    .unwrap_err()
                    .code(),
                Code::PermissionDenied
            );
            kv.set(with(Some(WRITE), set.clone())).await.unwrap();
            let get = GetRequest {
                key: "g".into(),
                ..Default::default()
            };
            let got = kv
                .get(with(Some(READ), get.clone()))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.value, "1");
            assert_eq!(
                kv.get(with(None, get)).await.unwrap_err().code(),
                Code::Unauthenticated
            );
            let mut mgmt = ManagementServiceClient::new(channel);
            let change = ChangeMembershipRequest {
                member_ids: vec![1, 2, 3],
            };
            assert_eq!(
                mgmt.change_membership(with(Some(WRITE), change.clone()))
                    .await
                    .unwrap_err()
                    .code(),
                Code::PermissionDenied
            );
            mgmt.change_membership(with(Some(ADMIN), change))
                .await
                .unwrap();
        }
    });
}

/// A one-node cluster whose token file holds `lines`; the harness uses the
/// admin token from the configuration. Returns the cluster and the file.
fn start_with_token_file(name: &str, lines: &str) -> (Cluster, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferrium-auth-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, lines).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let extra = format!(
        "[security]\nauth_method = \"token\"\ntoken_file = \"{}\"\ntokens = [{{ token = \"{ADMIN}\", role = \"admin\" }}]\ncluster_secret_file = \"{}\"\n",
        tokens.display(),
        secret.display()
    );
    let c = Cluster::start_full(name, 1, Bootstrap::Static, &extra, Some(ADMIN));
    (c, tokens)
}

fn read_status(c: &Cluster, token: &str) -> u16 {
    call(c, 1, "POST", "/read", Some(r#"{"key":"k"}"#), Some(token)).status
}

#[test]
fn sighup_rereads_the_token_file() {
    const ADDED: &str = "added-token-0123456789abcdef";
    let (c, file) = start_with_token_file("reload", &format!("{READ} read\n{WRITE} write\n"));
    assert_eq!(read_status(&c, WRITE), 200);
    assert_eq!(read_status(&c, ADDED), 401);

    // WRITE is revoked, ADDED is issued.
    std::fs::write(&file, format!("{READ} read\n{ADDED} write\n")).unwrap();
    support::cluster::signal(c.node(1).pid().unwrap(), "HUP");
    let accepted = support::cluster::eventually(Duration::from_secs(30), || {
        (read_status(&c, ADDED) == 200).then_some(())
    });
    assert!(
        accepted.is_some(),
        "a token added to the file is refused after SIGHUP: {}",
        c.log_tail(1)
    );
    let r = call(&c, 1, "POST", "/read", Some(r#"{"key":"k"}"#), Some(WRITE));
    assert_eq!(r.status, 401, "a removed token still works: {}", r.body);
    assert_eq!(read_status(&c, READ), 200);
    assert_eq!(read_status(&c, ADMIN), 200);

    // A file that no longer loads keeps the tokens in force.
    std::fs::write(&file, format!("{READ} read\nshort write\n")).unwrap();
    support::cluster::signal(c.node(1).pid().unwrap(), "HUP");
    let refused = support::cluster::eventually(Duration::from_secs(30), || {
        c.log_tail(1)
            .contains("keeping the running configuration")
            .then_some(())
    });
    assert!(refused.is_some(), "{}", c.log_tail(1));
    assert_eq!(read_status(&c, ADDED), 200);
    let log = std::fs::read_to_string(&c.node(1).log).unwrap();
    for t in [READ, WRITE, ADMIN, ADDED] {
        assert!(!log.contains(t), "the log contains a token");
    }
}

#[test]
fn a_token_stored_as_its_digest_is_accepted() {
    const STORED: &str = "digest-token-0123456789abcdef";
    // The command CONFIG.md gives for making a digest entry.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("printf 'sha256:%s write\\n' \"$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1)\"")
        .env("TOKEN", STORED)
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(!line.contains(STORED));
    let (c, _) = start_with_token_file("digest", &format!("{READ} read\n{line}"));
    assert_eq!(read_status(&c, STORED), 200);
    let w = call(
        &c,
        1,
        "POST",
        "/write",
        Some(r#"{"Set":{"key":"k","value":"v"}}"#),
        Some(STORED),
    );
    assert_eq!(w.status, 200, "{}", w.body);
    // The digest itself is not a token.
    let digest = line.split_whitespace().next().unwrap();
    assert_eq!(read_status(&c, digest), 401);
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(read_status(&c, hex), 401);
    assert_eq!(read_status(&c, READ), 200);
}

#[test]
fn head_is_a_read() {
    let (c, _) = start_with_token_file("head", &format!("{READ} read\n"));
    for path in ["/leader", "/metrics", "/health"] {
        let r = call(&c, 1, "HEAD", path, None, Some(READ));
        assert_eq!(r.status, 200, "HEAD {path} with a read token: {}", r.status);
        assert!(r.body.is_empty());
    }
    let r = call(&c, 1, "HEAD", "/leader", None, None);
    assert_eq!(r.status, 401);
}

#[test]
fn ferriumctl_reads_its_token_from_a_file() {
    let (c, _) = start_with_token_file("ctl-file", &format!("{READ} read\n{WRITE} write\n"));
    let dir = c.scratch.path.clone();
    let token_file = dir.join("ctl-token");
    std::fs::write(&token_file, format!("{WRITE}\n")).unwrap();
    let ctl = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferriumctl"));
        cmd.arg("--endpoints")
            .arg(c.addr(1))
            .args(args)
            .env_remove("FERRIUM_TOKEN")
            .env_remove("FERRIUM_TOKEN_FILE");
        for a in cmd.get_args() {
            assert!(!a.to_string_lossy().contains(WRITE), "the token is in argv");
        }
        cmd.output().unwrap()
    };
    let file = token_file.to_str().unwrap();
    let out = ctl(&["--token-file", file, "put", "f-key", "f-value"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["--token-file", file, "get", "f-key"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f-value");

    // A missing or empty file is a usage error that names the file.
    let missing = dir.join("no-such-token");
    let out = ctl(&["--token-file", missing.to_str().unwrap(), "get", "f-key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-token"));
    std::fs::write(&token_file, "\n").unwrap();
    let out = ctl(&["--token-file", file, "get", "f-key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    // Both ways at once is ambiguous.
    std::fs::write(&token_file, format!("{WRITE}\n")).unwrap();
    let out = ctl(&["--token", READ, "--token-file", file, "get", "f-key"]);
    assert_eq!(out.status.code(), Some(2));
}
