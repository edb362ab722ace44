//! The systemd unit's start-up contract without systemd as PID 1: run
//! `ferrium-server` with the unit's `ExecStart` command line and the packaged
//! configuration (ports and data directory moved to scratch), with
//! `NOTIFY_SOCKET` pointing at a datagram socket this test owns, exactly as
//! systemd would for `Type=notify`. `READY=1` must arrive once the node
//! serves HTTP, and `STOPPING=1` when SIGTERM starts the shutdown.

use crate::support::cluster::{Scratch, http, reserve_port, server_bin, signal};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/ferrium.service"
));
const PACKAGED_CONFIG: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/ferrium.toml"));

fn unit_value<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn unit_declares_notify_service_with_sandbox() {
    assert_eq!(unit_value("Type"), ["notify"]);
    assert_eq!(
        unit_value("ExecStart"),
        ["/usr/bin/ferrium-server --config /etc/ferrium/config.toml"]
    );
    assert_eq!(unit_value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(unit_value("User"), ["ferrium"]);
    assert_eq!(unit_value("StateDirectory"), ["ferrium"]);
    assert_eq!(unit_value("ProtectSystem"), ["strict"]);
    assert_eq!(unit_value("NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_value("Restart"), ["on-failure"]);
    assert!(PACKAGED_CONFIG.contains("data_dir = \"/var/lib/ferrium\""));
    assert!(
        unit_value("ReadWritePaths").contains(&"/var/lib/ferrium"),
        "the data directory must stay writable under ProtectSystem=strict"
    );
}

#[test]
fn server_started_like_the_unit_notifies_ready_and_stopping() {
    let scratch = Scratch::new("notify");
    let (http_port, grpc_port) = (reserve_port(), reserve_port());
    let (http_addr, grpc_addr) = (http_port.addr(), grpc_port.addr());
    let data_dir = scratch.path.join("state");
    let config = scratch.path.join("config.toml");
    let text = PACKAGED_CONFIG
        .replace("127.0.0.1:8001", &http_addr)
        .replace("127.0.0.1:9001", &grpc_addr)
        .replace("/var/lib/ferrium", data_dir.to_str().expect("utf-8 path"));
    std::fs::write(&config, text).expect("write config");

    let socket_path = scratch.path.join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");

    // ExecStart, with the binary under test and the scratch configuration.
    let exec = unit_value("ExecStart")[0];
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/ferrium-server"));
    let args: Vec<String> = words
        .map(|w| match w {
            "/etc/ferrium/config.toml" => config.display().to_string(),
            other => other.to_string(),
        })
        .collect();
    let log = std::fs::File::create(scratch.path.join("server.log")).expect("log file");
    let mut child = Command::new(server_bin())
        .args(&args)
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn ferrium-server");

    let mut buf = [0u8; 256];
    let started = Instant::now();
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1");
    eprintln!("READY=1 after {:?}", started.elapsed());
    // Ready means serving: the first request succeeds without retrying.
    let health = http(&http_addr, "GET", "/health", None).expect("health after READY=1");
    assert_eq!(health.status, 200);

    // The signal handlers are in place before READY=1: a service manager
    // may stop the unit the moment it is ready, and SIGTERM must then drain
    // and exit 0 rather than kill the process with the default action.
    signal(child.id(), "TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferrium-server did not exit within 30 s of SIGTERM");
        }
        // Polling: the server is still draining.
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean shutdown exits 0, got {status}");
}
