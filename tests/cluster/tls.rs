//! TLS and mTLS end to end: a three-node cluster whose peers and clients
//! all use certificates made with the `openssl` commands CONFIG.md
//! documents; certificate roles over REST and gRPC; handshakes that must be
//! refused (expired, foreign CA, clear text, garbage) while the node keeps
//! serving; certificate rotation on SIGHUP with a keep-alive connection open.

use crate::support;
use crate::support::cluster::tls::{TlsConn, client_config, documented_setup, run_in};
use crate::support::cluster::{Bootstrap, Cluster, Scratch, eventually, signal};
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{GetRequest, SetRequest};
use ferrium::http::TlsConnector;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
/// How long to wait for something that should happen.
const WAIT: Duration = Duration::from_secs(30);

/// Makes a client certificate named `cn`, signed by `ca` (a file stem in
/// `dir`), valid for `days` (negative: already expired).
fn client_cert(dir: &Path, name: &str, cn: &str, ca: &str, days: i32) {
    run_in(
        dir,
        &format!(
            "printf 'extendedKeyUsage=clientAuth\\n' > {name}.ext
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout {name}.key -out {name}.csr -subj '/CN={cn}' 2>/dev/null
             openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
               -days {days} -extfile {name}.ext -out {name}.crt 2>/dev/null"
        ),
    );
}

/// The `[security]` section of node `{id}` for certificates in `dir`.
fn tls_config(dir: &Path, auth: &str) -> String {
    let d = dir.display();
    format!(
        "[security]
enable_tls = true
enable_mtls = true
cert_file = \"{d}/node{{id}}.crt\"
key_file = \"{d}/node{{id}}.key\"
ca_file = \"{d}/ca.crt\"
peer_names = [\"node1.ferrium.internal\", \"node2.ferrium.internal\", \"node3.ferrium.internal\"]
{auth}"
    )
}

const CERT_ROLES: &str = "auth_method = \"certificate\"
cert_roles = [{ name = \"cn:ops@example.com\", role = \"admin\" }, { name = \"cn:reader.example.com\", role = \"read\" }]
";

fn https(
    addr: &str,
    dir: &Path,
    identity: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<support::cluster::Reply> {
    let config = client_config(dir, "ca.crt", identity);
    support::cluster::tls::request(addr, config, method, path, body, &[], T)
}

/// A node whose certificates were made with the documented commands, plus
/// the extra client certificates the tests use.
fn pki(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    run_in(&scratch.path, &documented_setup());
    client_cert(&scratch.path, "reader", "reader.example.com", "ca", 30);
    client_cert(&scratch.path, "stranger", "stranger.example.com", "ca", 30);
    scratch
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC channel over TLS (ALPN `h2`) presenting `identity`'s certificate.
async fn grpc_channel(addr: &str, dir: &Path, identity: &str) -> tonic::transport::Channel {
    let tls = ferrium::http::ClientTls::new_h2(
        &dir.join("ca.crt"),
        Some((
            &dir.join(format!("{identity}.crt")),
            &dir.join(format!("{identity}.key")),
        )),
    )
    .unwrap();
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(TlsConnector::new(Arc::new(tls), addr))
        .await
        .unwrap_or_else(|e| panic!("gRPC over TLS to {addr}: {e}"))
}

/// Acceptance 1 and 2, and certificate roles over REST and gRPC.
#[test]
fn mtls_cluster_replicates_forwards_and_admits_only_certificates_it_should() {
    let scratch = pki("tls-cluster");
    let dir = scratch.path.clone();
    let extra = tls_config(&dir, CERT_ROLES);
    let client = client_config(&dir, "ca.crt", Some("client"));
    let c = Cluster::start_tls(scratch, 3, &extra, client);
    let leader = c.wait_leader(WAIT);
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();

    // Replication and forwarding: a write through a follower.
    let r = c.set_retrying(follower, "greeting", "hello");
    assert_eq!(r.status, 200, "{}", r.body);
    for id in c.ids() {
        let r = c.get_retrying(id, "greeting", "linearizable");
        assert_eq!(r.json()["value"], "hello", "node {id}: {}", r.body);
        let seen = eventually(WAIT, || {
            let r = c.get(id, "greeting", "stale").ok()?;
            (r.json()["value"] == "hello").then_some(())
        });
        assert!(seen.is_some(), "stale read on node {id}");
    }

    let addr = c.addr(follower);
    // No client certificate: refused at the handshake.
    let err = https(&addr, &dir, None, "GET", "/health", None);
    assert!(err.is_err(), "no certificate was accepted: {err:?}");
    // Clear text to the TLS port: a readable 400.
    let plain = support::cluster::http(&addr, "GET", "/health", None).unwrap();
    assert_eq!(plain.status, 400);
    assert!(plain.body.contains("https://"), "{}", plain.body);

    // curl, as users run it.
    if Path::new("/usr/bin/curl").exists() {
        let curl = |cert: bool| {
            let mut cmd = std::process::Command::new("curl");
            cmd.current_dir(&dir)
                .args(["-sS", "--max-time", "10", "--cacert", "ca.crt"]);
            if cert {
                cmd.args(["--cert", "client.crt", "--key", "client.key"]);
            }
            cmd.arg(format!("https://{addr}/leader")).output().unwrap()
        };
        let ok = curl(true);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
        assert_eq!(v["leader"], leader);
        assert!(
            !curl(false).status.success(),
            "curl without a certificate got in"
        );
    }

    // Roles from certificate names.
    let write = r#"{"Set":{"key":"k","value":"v"}}"#;
    let r = https(&addr, &dir, Some("reader"), "POST", "/write", Some(write)).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let r = https(
        &addr,
        &dir,
        Some("reader"),
        "POST",
        "/read",
        Some(r#"{"key":"greeting"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = https(&addr, &dir, Some("stranger"), "GET", "/leader", None).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = https(&addr, &dir, Some("client"), "POST", "/write", Some(write)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Peer routes: a client certificate is not a member's.
    let vote =
        r#"{"vote":{"leader_id":{"term":99,"node_id":2},"committed":false},"last_log_id":null}"#;
    for who in ["client", "reader", "stranger"] {
        let r = https(&addr, &dir, Some(who), "POST", "/raft/vote", Some(vote)).unwrap();
        assert_eq!(r.status, 401, "{who}: {}", r.body);
    }
    let r = https(
        &addr,
        &dir,
        Some("node2"),
        "POST",
        "/raft/read-index",
        Some("{}"),
    )
    .unwrap();
    assert_ne!(
        r.status, 401,
        "a member's certificate was refused: {}",
        r.body
    );

    // ferriumctl over TLS, REST and gRPC.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferriumctl"))
            .current_dir(&dir)
            .args([
                "--cacert",
                "ca.crt",
                "--cert",
                "client.crt",
                "--key",
                "client.key",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ferriumctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let rest = format!("https://{addr}");
    let grpc = format!("https://{}", c.node(follower).grpc_addr());
    ctl(&["--endpoints", &rest, "put", "ctl-key", "over-rest"]);
    assert_eq!(
        ctl(&["--endpoints", &grpc, "--grpc", "get", "ctl-key"]),
        "over-rest"
    );
    ctl(&[
        "--endpoints",
        &grpc,
        "--grpc",
        "put",
        "ctl-key",
        "over-grpc",
    ]);
    assert_eq!(ctl(&["--endpoints", &rest, "get", "ctl-key"]), "over-grpc");

    // gRPC over TLS, on the gRPC port and on the HTTP port (ALPN h2).
    let rt = runtime();
    for grpc_addr in [c.node(follower).grpc_addr(), addr.clone()] {
        rt.block_on(async {
            let mut admin = KvServiceClient::new(grpc_channel(&grpc_addr, &dir, "client").await);
            let set = SetRequest {
                key: "g".into(),
                value: "1".into(),
            };
            admin
                .set(set.clone())
                .await
                .unwrap_or_else(|e| panic!("{grpc_addr}: {e}"));
            let mut reader = KvServiceClient::new(grpc_channel(&grpc_addr, &dir, "reader").await);
            let got = reader
                .get(GetRequest {
                    key: "g".into(),
                    consistency: "linearizable".into(),
                })
                .await
                .unwrap();
            assert_eq!(got.into_inner().value, "1");
            let denied = reader.set(set.clone()).await.unwrap_err();
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            let mut stranger =
                KvServiceClient::new(grpc_channel(&grpc_addr, &dir, "stranger").await);
            let denied = stranger.set(set).await.unwrap_err();
            assert_eq!(denied.code(), tonic::Code::Unauthenticated);
        });
    }
}

/// Reads what the server sends until it closes (or 5 s pass).
fn drain(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Acceptance 4: bad handshakes are refused cleanly and the node serves on.
#[test]
fn bad_handshakes_are_refused_and_the_node_keeps_serving() {
    let scratch = pki("tls-bad");
    let dir = scratch.path.clone();
    client_cert(&dir, "expired", "ops@example.com", "ca", -1);
    run_in(
        &dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout other-ca.key -out other-ca.crt -days 30 -subj '/CN=Other CA' 2>/dev/null",
    );
    client_cert(&dir, "foreign", "ops@example.com", "other-ca", 30);
    let extra = tls_config(&dir, CERT_ROLES);
    let c = Cluster::start_tls(
        scratch,
        1,
        &extra,
        client_config(&dir, "ca.crt", Some("client")),
    );
    let addr = c.addr(1);
    let serves = || {
        let r = https(&addr, &dir, Some("client"), "GET", "/health", None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    };
    serves();

    for who in ["expired", "foreign"] {
        let r = https(&addr, &dir, Some(who), "GET", "/health", None);
        assert!(r.is_err(), "{who} certificate was accepted: {r:?}");
        serves();
    }

    // A client that does not trust the node's CA gives up on its own.
    let wrong_trust = client_config(&dir, "other-ca.crt", Some("client"));
    assert!(
        support::cluster::tls::request(&addr, wrong_trust, "GET", "/health", None, &[], T).is_err()
    );
    serves();

    // Clear text.
    let r = support::cluster::http(&addr, "GET", "/health", None).unwrap();
    assert_eq!(r.status, 400);
    serves();

    // A garbage ClientHello: a TLS record header, then noise.
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    hello.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    s.write_all(&hello).unwrap();
    let answer = drain(s);
    assert!(answer.len() < 64, "answered garbage with {answer:?}");
    serves();

    // A client that connects and says nothing does not hold anyone up.
    let _silent = TcpStream::connect(&addr).unwrap();
    serves();

    // The gRPC port refuses clear text too.
    let mut s = TcpStream::connect(c.node(1).grpc_addr()).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    assert!(drain(s).len() < 64);
    serves();

    let failures: f64 = https_text_metrics(&addr, &dir)
        .lines()
        .find_map(|l| l.strip_prefix("ferrium_tls_handshake_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("handshake failure counter");
    assert!(failures >= 4.0, "counted {failures} failed handshakes");

    // TLS to a clear-text port: refused, and that node serves on.
    let plain = Cluster::start("tls-to-plain", 1, Bootstrap::Static);
    let r = https(&plain.addr(1), &dir, Some("client"), "GET", "/health", None);
    assert!(
        r.is_err(),
        "a TLS client got an answer from a clear-text port"
    );
    assert_eq!(
        support::cluster::http(&plain.addr(1), "GET", "/health", None)
            .unwrap()
            .status,
        200
    );
}

fn https_text_metrics(addr: &str, dir: &Path) -> String {
    let config = client_config(dir, "ca.crt", Some("client"));
    support::cluster::tls::request(
        addr,
        config,
        "GET",
        "/metrics",
        None,
        &[("Accept", "text/plain")],
        T,
    )
    .unwrap()
    .body
}

/// Acceptance 5: rotated certificates are used by new connections after
/// SIGHUP; an open keep-alive connection keeps working. A broken rotation
/// keeps the running certificate.
#[test]
fn sighup_rotates_certificates_without_dropping_connections() {
    let scratch = pki("tls-rotate");
    let dir = scratch.path.clone();
    let extra = tls_config(&dir, CERT_ROLES);
    let client = client_config(&dir, "ca.crt", Some("client"));
    let c = Cluster::start_tls(scratch, 1, &extra, client.clone());
    let addr = c.addr(1);

    let mut kept = TlsConn::open(&addr, client.clone(), T).unwrap();
    assert_eq!(kept.send("GET", "/health", None, &[]).unwrap().status, 200);
    assert!(
        kept.server_names()
            .contains(&"node1.ferrium.internal".to_string())
    );

    // A new certificate for node 1, with one more name, moved into place.
    run_in(
        &dir,
        "printf 'subjectAltName=DNS:rotated.ferrium.internal,DNS:node1.ferrium.internal,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > new.ext
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout new.key -out new.csr -subj '/CN=node1.ferrium.internal' 2>/dev/null
         openssl x509 -req -in new.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
           -days 30 -extfile new.ext -out new.crt 2>/dev/null
         mv new.key node1.key && mv new.crt node1.crt",
    );
    signal(c.node(1).pid().unwrap(), "HUP");
    let rotated = eventually(WAIT, || {
        let conn = TlsConn::open(&addr, client.clone(), T).ok()?;
        conn.server_names()
            .contains(&"rotated.ferrium.internal".to_string())
            .then_some(())
    });
    assert!(
        rotated.is_some(),
        "new connections still get the old certificate"
    );
    // The connection opened before the rotation still works.
    assert_eq!(kept.send("GET", "/health", None, &[]).unwrap().status, 200);
    let r = kept
        .send(
            "POST",
            "/write",
            Some(r#"{"Set":{"key":"a","value":"b"}}"#),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(c.log_tail(1).contains("TLS certificates reloaded"));

    // A broken file: the reload fails, the running certificate stays.
    std::fs::write(dir.join("node1.crt"), "not a certificate\n").unwrap();
    signal(c.node(1).pid().unwrap(), "HUP");
    // (Validation of the reloaded configuration catches it, naming the file.)
    let logged = eventually(WAIT, || {
        let log = c.log_tail(1);
        (log.contains("holds no PEM certificate") && log.contains("keeping the running"))
            .then_some(())
    });
    assert!(logged.is_some(), "{}", c.log_tail(1));
    let conn = TlsConn::open(&addr, client, T).unwrap();
    assert!(
        conn.server_names()
            .contains(&"rotated.ferrium.internal".to_string())
    );
    assert_eq!(kept.send("GET", "/health", None, &[]).unwrap().status, 200);
}

/// Makes a client certificate `name` for subject `/CN={cn}` with the
/// subject alternative names `san` (openssl syntax, e.g. `URI:x,DNS:y`;
/// empty for none), signed by the test CA.
fn cert_with_names(dir: &Path, name: &str, cn: &str, san: &str) {
    let san = if san.is_empty() {
        String::new()
    } else {
        format!("subjectAltName={san}\\n")
    };
    run_in(
        dir,
        &format!(
            "printf '{san}extendedKeyUsage=clientAuth\\n' > {name}.ext
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout {name}.key -out {name}.csr -subj '/CN={cn}' 2>/dev/null
             openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
               -days 30 -extfile {name}.ext -out {name}.crt 2>/dev/null"
        ),
    );
}

const VOTE: &str =
    r#"{"vote":{"leader_id":{"term":99,"node_id":2},"committed":false},"last_log_id":null}"#;

/// Members are recognised by a DNS subject alternative name (or a URI one
/// when configured as `uri:`), never by an e-mail SAN, a URI SAN or a
/// common name that happens to spell a member's name.
#[test]
fn only_dns_or_configured_uri_names_make_a_member() {
    let scratch = pki("tls-peer-kinds");
    let dir = scratch.path.clone();
    cert_with_names(&dir, "uri-twin", "intruder", "URI:node2.ferrium.internal");
    cert_with_names(
        &dir,
        "mail-twin",
        "intruder",
        "email:node2.ferrium.internal",
    );
    cert_with_names(&dir, "cn-twin", "node2.ferrium.internal", "");
    cert_with_names(&dir, "ip-twin", "intruder", "IP:127.0.0.1");
    cert_with_names(
        &dir,
        "spiffe",
        "anything",
        "URI:spiffe://ferrium.internal/node/4",
    );
    let d = dir.display();
    let extra = format!(
        "[security]
enable_tls = true
enable_mtls = true
cert_file = \"{d}/node{{id}}.crt\"
key_file = \"{d}/node{{id}}.key\"
ca_file = \"{d}/ca.crt\"
peer_names = [\"node1.ferrium.internal\", \"node2.ferrium.internal\", \"dns:node3.ferrium.internal\", \"uri:spiffe://ferrium.internal/node/4\"]
auth_method = \"none\"
"
    );
    let client = client_config(&dir, "ca.crt", Some("client"));
    let c = Cluster::start_tls(scratch, 1, &extra, client);
    let addr = c.addr(1);
    for who in ["uri-twin", "mail-twin", "cn-twin", "ip-twin", "client"] {
        let r = https(&addr, &dir, Some(who), "POST", "/raft/vote", Some(VOTE)).unwrap();
        assert_eq!(r.status, 401, "{who} was taken for a member: {}", r.body);
        // They are clients all the same (auth_method = "none").
        let r = https(&addr, &dir, Some(who), "GET", "/leader", None).unwrap();
        assert_eq!(r.status, 200, "{who}: {}", r.body);
    }
    for who in ["node2", "node3", "spiffe"] {
        let r = https(
            &addr,
            &dir,
            Some(who),
            "POST",
            "/raft/read-index",
            Some("{}"),
        )
        .unwrap();
        assert_ne!(r.status, 401, "{who} was refused as a member: {}", r.body);
    }
}

/// A role mapping names the kind of name it means: `cn:` matches only the
/// subject common name, `dns:` only a DNS SAN, `uri:` only a URI SAN.
#[test]
fn role_mappings_match_only_the_kind_they_name() {
    let scratch = pki("tls-role-kinds");
    let dir = scratch.path.clone();
    cert_with_names(&dir, "dns-reader", "someone", "DNS:reader.example.com");
    cert_with_names(&dir, "app", "someone", "URI:spiffe://ferrium.internal/app");
    cert_with_names(&dir, "mail-ops", "someone", "email:ops@example.com");
    cert_with_names(&dir, "dns-ops", "someone", "DNS:ops.example.com");
    let roles = "auth_method = \"certificate\"
cert_roles = [
  { name = \"cn:ops@example.com\", role = \"admin\" },
  { name = \"dns:reader.example.com\", role = \"read\" },
  { name = \"uri:spiffe://ferrium.internal/app\", role = \"write\" },
  { name = \"cn:ops.example.com\", role = \"admin\" },
]
";
    let extra = tls_config(&dir, roles);
    // The harness acts as a member, which has every role.
    let c = Cluster::start_tls(
        scratch,
        1,
        &extra,
        client_config(&dir, "ca.crt", Some("node2")),
    );
    let addr = c.addr(1);
    let write = r#"{"Set":{"key":"k","value":"v"}}"#;
    let read = r#"{"key":"k"}"#;
    let status = |who: &str, path: &str, body: &str| {
        let r = https(&addr, &dir, Some(who), "POST", path, Some(body)).unwrap();
        (r.status, r.body)
    };
    // cn: → the subject common name of client.crt (CN=ops@example.com).
    assert_eq!(status("client", "/change-membership", "[1]").0, 200);
    // dns: → a DNS SAN; the same text as a CN does not count.
    assert_eq!(status("dns-reader", "/read", read).0, 200);
    assert_eq!(status("dns-reader", "/write", write).0, 403);
    let (s, body) = status("reader", "/read", read);
    assert_eq!(s, 401, "CN=reader.example.com matched dns:: {body}");
    // uri: → a URI SAN.
    assert_eq!(status("app", "/write", write).0, 200);
    assert_eq!(status("app", "/change-membership", "[1]").0, 403);
    // An e-mail SAN or a DNS SAN spelling a cn: entry gets nothing.
    for who in ["mail-ops", "dns-ops", "stranger"] {
        let (s, body) = status(who, "/read", read);
        assert_eq!(s, 401, "{who}: {body}");
    }
}

/// Acceptance: a TLS handshake that never finishes is closed within
/// `network.header_timeout` on both listeners, and so is a gRPC client that
/// finishes it but never sends the HTTP/2 preface.
#[test]
fn unfinished_handshakes_are_closed_within_the_handshake_timeout() {
    let scratch = pki("tls-slow-handshake");
    let dir = scratch.path.clone();
    let extra = format!(
        "[network]\nheader_timeout = \"1s\"\n\n{}",
        tls_config(&dir, CERT_ROLES)
    );
    let c = Cluster::start_tls(
        scratch,
        1,
        &extra,
        client_config(&dir, "ca.crt", Some("client")),
    );
    // Several times the 1 s timeout: generous, but well short of forever.
    let within = Duration::from_secs(8);
    let addrs = [("HTTP", c.addr(1)), ("gRPC", c.node(1).grpc_addr())];
    for (port, addr) in &addrs {
        let mut silent = TcpStream::connect(addr).unwrap();
        assert!(
            support::cluster::closed_within(&mut silent, within),
            "{port} port kept a client that never started its handshake"
        );
        // A record header announcing a 512-byte ClientHello, and 40 bytes of it.
        let mut half = TcpStream::connect(addr).unwrap();
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        hello.extend([7u8; 29]);
        half.write_all(&hello).unwrap();
        assert!(
            support::cluster::closed_within(&mut half, within),
            "{port} port kept a client that sent half a ClientHello"
        );
    }

    // The gRPC port: the handshake completes, then nothing.
    let mut config = (*client_config(&dir, "ca.crt", Some("client"))).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let grpc_addr = c.node(1).grpc_addr();
    let tcp = TcpStream::connect(&grpc_addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap().into(),
    );
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    let closed = loop {
        if std::time::Instant::now() > deadline {
            break false;
        }
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        match tls.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "the gRPC port kept a TLS client that never sent the HTTP/2 preface"
    );

    let r = https(&c.addr(1), &dir, Some("client"), "GET", "/health", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}
