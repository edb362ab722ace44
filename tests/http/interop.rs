//! Interoperability with real clients: curl (keep-alive, HTTP/1.0, a 5 MiB
//! upload with `Expect: 100-continue`, chunked upload, streamed download,
//! HEAD), Python's `http.client`, and `wrk` keep-alive load.

use std::process::Command;
use std::time::Instant;

use crate::support::http::{FNV_START, HELLO, TestServer, fnv, pattern};

fn tool_available(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("spawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_keep_alive_http10_head_and_streams() {
    if !tool_available("curl") {
        eprintln!("curl not installed; skipping");
        return;
    }
    let server = TestServer::start();
    // Two URLs on one command line share a keep-alive connection.
    let (ok, out, err) =
        run(Command::new("curl").args(["-sS", "-v", &server.url("/hello"), &server.url("/hello")]));
    assert!(ok, "{err}");
    assert_eq!(out, format!("{HELLO}{HELLO}"));
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );

    let (ok, out, err) =
        run(Command::new("curl").args(["-sS", "--http1.0", "-i", &server.url("/hello")]));
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(out.ends_with(HELLO));

    let (ok, out, err) = run(Command::new("curl").args(["-sS", "-I", &server.url("/hello")]));
    assert!(ok, "{err}");
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("content-length: {}", HELLO.len())),
        "{out}"
    );
    assert!(lower.contains("date: "), "{out}");

    let out = Command::new("curl")
        .args(["-sS", &server.url("/stream?n=1000000")])
        .output()
        .expect("curl");
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 1_000_000);
    assert!(out.stdout == pattern(1_000_000));

    let out = Command::new("curl")
        .args(["-sS", &server.url("/sized-stream")])
        .output()
        .expect("curl");
    assert!(out.status.success());
    assert!(out.stdout == pattern(300_000));

    let (ok, out, _) =
        run(Command::new("curl").args(["-sS", "-i", "-X", "PUT", &server.url("/hello")]));
    assert!(ok);
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}

#[test]
fn curl_uploads_5_mib_with_expect_100_continue_and_chunked() {
    if !tool_available("curl") {
        eprintln!("curl not installed; skipping");
        return;
    }
    let server = TestServer::start();
    let dir = std::env::temp_dir().join(format!("ferrium-http-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("5mib.bin");
    let data = pattern(5 * 1024 * 1024);
    std::fs::write(&file, &data).expect("write file");
    let want = format!(
        r#"{{"fnv":"{}","len":{}}}"#,
        fnv(&data, FNV_START),
        data.len()
    );
    let at_file = format!("@{}", file.display());

    // curl sends `Expect: 100-continue` for a body this size and waits for the
    // interim answer (up to 20 s; then it would send the body anyway): the
    // 100 in its trace is the server's answer.
    let started = Instant::now();
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "-v",
        "--expect100-timeout",
        "20",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &at_file,
        &server.url("/upload"),
    ]));
    assert!(ok, "{err}");
    assert_eq!(out, want);
    assert!(err.contains("HTTP/1.1 100 Continue"), "{err}");
    eprintln!(
        "upload with Expect: 100-continue took {:?}",
        started.elapsed()
    );

    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at_file,
        &server.url("/upload"),
    ]));
    assert!(ok, "{err}");
    assert_eq!(out, want);

    // Over the default limit of /echo: 413 without reading the body.
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "-i",
        "--data-binary",
        &at_file,
        &server.url("/echo"),
    ]));
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn python_http_client() {
    if !tool_available("python3") {
        eprintln!("python3 not installed; skipping");
        return;
    }
    let server = TestServer::start();
    let script = r#"
import http.client, json, sys
host, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection(host, port, timeout=5)
for _ in range(3):
    c.request("GET", "/hello")
    r = c.getresponse()
    assert r.status == 200, r.status
    assert json.loads(r.read())["status"] == "healthy"
sock = c.sock
c.request("POST", "/echo", body=b"ping" * 1000, headers={"Content-Type": "application/octet-stream"})
r = c.getresponse()
assert r.status == 200 and r.read() == b"ping" * 1000
c.request("GET", "/stream?n=70000")
r = c.getresponse()
assert r.getheader("Transfer-Encoding") == "chunked"
assert len(r.read()) == 70000
def gen():
    for i in range(10):
        yield b"x" * 1000
c.request("POST", "/upload", body=gen(), encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
r = c.getresponse()
assert json.loads(r.read())["len"] == 10000
c.request("GET", "/missing")
r = c.getresponse()
assert r.status == 404 and json.loads(r.read())["code"] == "not_found"
assert c.sock is sock, "connection was not kept alive"
c.request("HEAD", "/hello")
r = c.getresponse()
assert r.status == 200 and r.read() == b""
print("ok")
"#;
    let (ok, out, err) = run(Command::new("python3").args([
        "-c",
        script,
        &server.addr.ip().to_string(),
        &server.addr.port().to_string(),
    ]));
    assert!(ok, "python failed: {out}{err}");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn wrk_keep_alive_load() {
    if Command::new("wrk").arg("-v").output().is_err() {
        eprintln!("wrk not installed; skipping");
        return;
    }
    let server = TestServer::start();
    let (_, out, err) =
        run(Command::new("wrk").args(["-t2", "-c32", "-d2s", &server.url("/hello")]));
    let rps: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wrk result: {out}{err}"));
    eprintln!("wrk against the test server (dev build): {rps:.0} req/s");
    assert!(rps > 1000.0, "{out}");
    assert!(!out.contains("Non-2xx"), "{out}");
    assert!(!out.contains("Socket errors"), "{out}");
    server.assert_healthy();
}
