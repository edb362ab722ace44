//! Operations: Prometheus metrics that parse and move, readiness that
//! follows the quorum, and SIGHUP configuration reload.

use crate::support;
use crate::support::cluster::{Bootstrap, Cluster, eventually, http, signal};
use std::collections::BTreeMap;
use std::time::Duration;

/// A strict parser for the Prometheus text exposition format (0.0.4):
/// every sample line must be `name{labels} value`, every family must be
/// announced by `# TYPE` before its samples, names and label names must be
/// valid, and histogram buckets must be cumulative. Returns samples keyed by
/// `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let ty = parts.next().unwrap_or("");
            assert!(valid_name(name), "line {i}: bad metric name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "line {i}: bad type {ty:?}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "line {i}: {name} typed twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {i}: no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {i}: bad value {v:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "line {i}: bad name {name:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("line {i}: bad label block {labels:?}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("line {i}: bad label {pair:?}"));
                assert!(valid_name(k), "line {i}: bad label name {k:?}");
                assert!(!v.contains('\n'));
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "line {i}: sample {name} before its # TYPE"
        );
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        samples.insert(series.to_string(), value);
    }
    // Histogram buckets are cumulative and end with +Inf == _count.
    for (series, v) in &samples {
        if series.contains("_bucket{") && series.contains("le=\"+Inf\"") {
            let count_series = series
                .replace("_bucket{", "_count{")
                .replace(",le=\"+Inf\"", "")
                .replace("{le=\"+Inf\"}", "");
            let count_series = count_series.replace("{}", "");
            if let Some(c) = samples.get(&count_series) {
                assert_eq!(v, c, "{series} != {count_series}");
            }
        }
    }
    samples
}

fn scrape(c: &Cluster, id: u64) -> BTreeMap<String, f64> {
    let addr = c.addr(id);
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(sock).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain;version=0.0.4;q=0.9,*/*;q=0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        panic!("unexpected chunked metrics")
    } else {
        body.to_string()
    };
    parse_prometheus(&body)
}

#[test]
fn prometheus_metrics_parse_and_counters_move() {
    let c = Cluster::start("metrics", 3, Bootstrap::Static);
    let leader = c.wait_leader(Duration::from_secs(30));
    let before = scrape(&c, leader);
    let writes = "ferrium_http_requests_total{route=\"/write\",method=\"POST\",status=\"200\"}";
    let n0 = before.get(writes).copied().unwrap_or(0.0);
    for i in 0..25 {
        assert_eq!(c.set(leader, &format!("m{i}"), "v").unwrap().status, 200);
    }
    let after = scrape(&c, leader);
    assert_eq!(after[writes], n0 + 25.0, "write counter did not move by 25");
    assert!(after["ferrium_raft_proposals_total{outcome=\"ok\"}"] >= 25.0);
    assert!(
        after["ferrium_wal_syncs_total"]
            > before
                .get("ferrium_wal_syncs_total")
                .copied()
                .unwrap_or(0.0)
    );
    assert!(after["ferrium_raft_applied_entries_total"] >= 25.0);
    assert_eq!(after["ferrium_raft_is_leader"], 1.0);
    assert!(after["ferrium_http_request_duration_seconds_count{route=\"/write\"}"] >= 25.0);
    assert!(after["process_resident_memory_bytes"] > 0.0);
    assert!(after["ferrium_storage_disk_bytes"] > 0.0);
    assert!(after.contains_key("ferrium_raft_replication_lag_entries{peer=\"1\"}"));

    // Writes through a follower are counted as forwarded there.
    let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
    assert_eq!(c.set(follower, "fw", "v").unwrap().status, 200);
    let f = scrape(&c, follower);
    assert!(f["ferrium_forwarded_requests_total{kind=\"write\"}"] >= 1.0);
    // JSON stays the default.
    let j = http(&c.addr(leader), "GET", "/metrics", None).unwrap();
    assert_eq!(j.json()["node_id"].as_u64(), Some(leader));
}

#[test]
fn ready_follows_the_quorum() {
    let mut c = Cluster::start("ready", 3, Bootstrap::Static);
    for id in c.ids() {
        let ok = eventually(Duration::from_secs(30), || {
            (http(&c.addr(id), "GET", "/ready", None).ok()?.status == 200).then_some(())
        });
        assert!(ok.is_some(), "node {id} never became ready");
    }
    // Cut node 1 off from its quorum by pausing the two others.
    c.pause(2);
    c.pause(3);
    let r = eventually(Duration::from_secs(30), || {
        let r = http(&c.addr(1), "GET", "/ready", None).ok()?;
        (r.status == 503).then_some(r)
    });
    let r = r.expect("node 1 stayed ready without a quorum");
    assert_eq!(r.json()["code"], serde_json::json!("unavailable"));
    println!("not ready: {}", r.body);
    c.resume(2);
    c.resume(3);
    let ok = eventually(Duration::from_secs(30), || {
        (http(&c.addr(1), "GET", "/ready", None).ok()?.status == 200).then_some(())
    });
    assert!(
        ok.is_some(),
        "node 1 did not become ready again after rejoining"
    );
}

#[test]
fn sighup_reloads_the_log_level_and_survives_a_bad_file() {
    let c = Cluster::start("sighup", 1, Bootstrap::Static);
    let node = c.node(1);
    let pid = node.pid().unwrap();
    let log = || std::fs::read_to_string(&node.log).unwrap();
    assert_eq!(
        http(&c.addr(1), "GET", "/health", None).unwrap().status,
        200
    );
    assert!(!log().contains("DEBUG"), "debug lines before the reload");

    let original = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        original.replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    signal(pid, "HUP");
    let applied = eventually(Duration::from_secs(30), || {
        log()
            .contains("applied logging.level: info -> debug")
            .then_some(())
    });
    assert!(applied.is_some(), "reload not applied: {}", c.log_tail(1));
    assert_eq!(
        http(&c.addr(1), "GET", "/health", None).unwrap().status,
        200
    );
    let debug = eventually(Duration::from_secs(30), || {
        log().contains("DEBUG").then_some(())
    });
    assert!(
        debug.is_some(),
        "no debug line after the reload: {}",
        c.log_tail(1)
    );

    // A broken file: the node keeps running on the old settings and says why.
    std::fs::write(&node.config, format!("{original}\n[raft]\nheartbeat = 5\n")).unwrap();
    signal(pid, "HUP");
    let refused = eventually(Duration::from_secs(30), || {
        log()
            .contains("keeping the running configuration")
            .then_some(())
    });
    assert!(refused.is_some(), "{}", c.log_tail(1));
    assert!(
        log().contains("raft.heartbeat"),
        "the reason is not logged: {}",
        c.log_tail(1)
    );
    assert_eq!(c.set(1, "still", "serving").unwrap().status, 200);

    // A change that needs a restart is named as such.
    std::fs::write(
        &node.config,
        original.replace("level = \"info\"", "level = \"debug\"")
            + "\n[raft]\nsnapshot_threshold = 777\n",
    )
    .unwrap();
    signal(pid, "HUP");
    let named = eventually(Duration::from_secs(30), || {
        log()
            .contains("only after a restart: raft.snapshot_threshold")
            .then_some(())
    });
    assert!(named.is_some(), "{}", c.log_tail(1));
}

/// Safe defaults on the way to production: the data directory is created
/// for the server's user only (0700), a secret file other users can read is
/// named with the `chmod` that fixes it, and listening beyond loopback with
/// no client authentication is a warning that names the address.
#[test]
fn start_up_warns_about_exposed_secrets_and_open_listeners() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = support::cluster::Scratch::new("safe-defaults");
    let http_port = support::cluster::reserve_port();
    let grpc_port = support::cluster::reserve_port();
    let (port, grpc) = (http_port.port(), grpc_port.port());
    let data_dir = scratch.path.join("fresh/data");
    let secret = scratch.path.join("cluster-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = scratch.path.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\nhttp_addr = \"0.0.0.0:{port}\"\nadvertise_http_addr = \"127.0.0.1:{port}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\ndata_dir = \"{}\"\n\n[logging]\nenable_colors = false\n\n[cluster]\nname = \"test\"\ninitial_members = [{{ id = 1, http_addr = \"127.0.0.1:{port}\", grpc_addr = \"127.0.0.1:{grpc}\" }}]\n\n[security]\ncluster_secret_file = \"{}\"\n",
            data_dir.display(),
            secret.display()
        ),
    )
    .unwrap();
    let log_path = scratch.path.join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(support::cluster::server_bin())
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), || {
        (http(&addr, "GET", "/health", None).ok()?.status == 200).then_some(())
    });
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "the node never served: {text}");

    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    let chmod = format!("chmod 600 {}", secret.display());
    assert!(
        text.contains("security.cluster_secret_file") && text.contains(&chmod),
        "no warning naming the secret file and `{chmod}`: {text}"
    );
    assert!(
        text.contains(&format!("0.0.0.0:{port}")) && text.contains("auth_method = \"none\""),
        "no warning naming the open listener: {text}"
    );
}

/// The harness's port reservation ([`support::cluster::reserve_port`]): while it is
/// held, a plain bind of the port fails, a listener that sets SO_REUSEADDR
/// (as the node's do: tokio sets it on Unix) binds and serves, and once that
/// listener is gone a connection is refused, as on a closed port.
#[test]
fn a_reserved_port_is_kept_from_other_binds_but_a_node_can_listen_on_it() {
    use socket2::{Domain, Socket, Type};
    let reserved = support::cluster::reserve_port();
    let addr: std::net::SocketAddr = reserved.addr().parse().expect("a socket address");

    let plain = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let err = plain
        .bind(&addr.into())
        .expect_err("a bind without SO_REUSEADDR took the reserved port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("a SO_REUSEADDR listener binds the reserved port");
        let client = tokio::net::TcpStream::connect(addr);
        let (connected, accepted) = tokio::join!(client, listener.accept());
        connected.expect("connect to the listener");
        accepted.expect("accept");
    });
    let refused = std::net::TcpStream::connect(addr).expect_err("connected to a closed listener");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

/// The addresses in the `listening http=... grpc=...` line of a node's log.
fn reported_addrs(log: &std::path::Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(" listening http="))?;
    let fields = line.split_once(" listening ")?.1;
    let mut http = None;
    let mut grpc = None;
    for field in fields.split_whitespace() {
        match field.split_once('=') {
            Some(("http", a)) => http = Some(a.to_string()),
            Some(("grpc", a)) => grpc = Some(a.to_string()),
            _ => {}
        }
    }
    Some((http?, grpc?))
}

/// `--http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0`: the kernel picks both
/// ports, the node reports them in its log and advertises them, and serves
/// writes and reads (REST) and gRPC on them.
#[test]
fn a_node_on_port_zero_reports_and_advertises_the_ports_it_got() {
    use ferrium::api::proto::health::HealthCheckRequest;
    use ferrium::api::proto::health::health_check_response::ServingStatus;
    use ferrium::api::proto::health::health_client::HealthClient;
    use ferrium::api::proto::kv::GetRequest;
    use ferrium::api::proto::kv::kv_service_client::KvServiceClient;

    let scratch = support::cluster::Scratch::new("port-zero");
    let config = scratch.path.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\ndata_dir = \"{}\"\n\n[logging]\nlevel = \"info\"\nenable_colors = false\n\n[cluster]\nname = \"test\"\n",
            scratch.path.join("data").display()
        ),
    )
    .unwrap();
    let log_path = scratch.path.join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(support::cluster::server_bin())
        .args(["--config", support::cluster::path_str(&config)])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _node = KillOnDrop(child);
    let (http_addr, grpc_addr) = eventually(Duration::from_secs(60), || reported_addrs(&log_path))
        .unwrap_or_else(|| {
            panic!(
                "the node never logged where it listens: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
    for addr in [&http_addr, &grpc_addr] {
        let a: std::net::SocketAddr = addr.parse().expect("a socket address");
        assert!(a.ip().is_loopback() && a.port() != 0, "{addr}");
    }
    assert_ne!(http_addr, grpc_addr);

    let r = http(&http_addr, "POST", "/init", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let leader = eventually(Duration::from_secs(60), || {
        let r = http(&http_addr, "GET", "/leader", None).ok()?;
        r.json()["leader"].as_u64().is_some().then(|| r.json())
    })
    .expect("the node never became leader of its one-node cluster");
    // What the node tells peers and clients is the bound address.
    assert_eq!(leader["api_addr"], serde_json::json!(http_addr), "{leader}");
    assert_eq!(
        leader["grpc_addr"],
        serde_json::json!(grpc_addr),
        "{leader}"
    );

    let write = r#"{"Set":{"key":"zero","value":"picked by the kernel"}}"#;
    let w = eventually(Duration::from_secs(60), || {
        let r = http(&http_addr, "POST", "/write", Some(write)).ok()?;
        (r.status == 200).then_some(r)
    })
    .expect("the write was never acknowledged");
    assert!(w.json()["revision"].as_u64().is_some(), "{}", w.body);
    let r = http(
        &http_addr,
        "POST",
        "/read",
        Some(r#"{"key":"zero","consistency":"linearizable"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["value"], serde_json::json!("picked by the kernel"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("endpoint")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {grpc_addr}: {e}"));
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        let got = KvServiceClient::new(channel)
            .get(GetRequest {
                key: "zero".into(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        assert!(got.found);
        assert_eq!(got.value, "picked by the kernel");
    });
}

/// Kills the child process when the test ends, passing or failing.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
