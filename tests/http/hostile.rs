//! Hostile and malformed requests against a live server on a loopback port.
//! Each must get the right status (and a closed connection) or a clean close,
//! and the server must keep answering normal requests throughout.

use crate::support;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::http::{TestServer, exchange_reply, read_to_close, status_of};

/// What a hostile request must lead to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// This status, then the server closes the connection.
    Status(u16),
    /// The server closes without a response.
    Close,
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let s = |v: &str| v.as_bytes().to_vec();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    let long_header = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    let many_headers: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /hello HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n");
    let endless_header = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX: {}",
        "c".repeat(10_000)
    );
    vec![
        (
            "CL and TE",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "TE then CL",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "conflicting CL headers",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
            Status(400),
        ),
        (
            "conflicting CL list",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            Status(400),
        ),
        (
            "negative CL",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
            Status(400),
        ),
        (
            "huge CL",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Status(400),
        ),
        (
            "plus-signed CL",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
            Status(400),
        ),
        (
            "hex CL",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello"),
            Status(400),
        ),
        (
            "CL over the body limit",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\nxx"),
            Status(413),
        ),
        (
            "unknown TE",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Status(400),
        ),
        (
            "chunked not last",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Status(400),
        ),
        (
            "chunked twice",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "TE look-alike",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            Status(400),
        ),
        (
            "TE in HTTP/1.0",
            s("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Status(400),
        ),
        (
            "obs-fold",
            s("GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n"),
            Status(400),
        ),
        (
            "space before colon",
            s("GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\n"),
            Status(400),
        ),
        (
            "header without colon",
            s("GET /hello HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n"),
            Status(400),
        ),
        (
            "bare LF line ends",
            s("GET /hello HTTP/1.1\nHost: t\n\n"),
            Status(400),
        ),
        (
            "bare CR in header",
            s("GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\rX-B: b\r\n\r\n"),
            Status(400),
        ),
        (
            "NUL in header value",
            s("GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n"),
            Status(400),
        ),
        (
            "non-ASCII target",
            b"GET /h\xc3\xa9llo HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "non-ASCII method",
            b"G\xc9T /hello HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "invalid method token",
            s("GE(T /hello HTTP/1.1\r\nHost: t\r\n\r\n"),
            Status(400),
        ),
        (
            "double space in request line",
            s("GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n"),
            Status(400),
        ),
        (
            "fragment in target",
            s("GET /hello#x HTTP/1.1\r\nHost: t\r\n\r\n"),
            Status(400),
        ),
        (
            "relative target",
            s("GET hello HTTP/1.1\r\nHost: t\r\n\r\n"),
            Status(400),
        ),
        ("request line too long", s(&long_target), Status(414)),
        ("header too large", s(&long_header), Status(431)),
        ("too many headers", s(&many_headers), Status(431)),
        ("endless header line", s(&endless_header), Status(431)),
        (
            "HTTP/2.0 request line",
            s("GET /hello HTTP/2.0\r\nHost: t\r\n\r\n"),
            Status(505),
        ),
        (
            "garbage version",
            s("GET /hello HTTP/x.y\r\nHost: t\r\n\r\n"),
            Status(400),
        ),
        ("HTTP/0.9 style", s("GET /hello\r\n\r\n"), Status(400)),
        (
            "missing Host",
            s("GET /hello HTTP/1.1\r\n\r\n"),
            Status(400),
        ),
        (
            "two Host headers",
            s("GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Status(400),
        ),
        (
            "unknown Expect",
            s("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx"),
            Status(417),
        ),
        (
            "too many empty lines",
            s(&format!(
                "{}GET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
                "\r\n".repeat(20)
            )),
            Status(400),
        ),
        (
            "binary garbage",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, b'\r', b'\n',
            ],
            Status(400),
        ),
        (
            "bad chunk size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "negative chunk size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "chunk size overflow",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "huge chunk size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\nhello",
            ),
            Status(413),
        ),
        (
            "chunk longer than its size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "bare LF after chunk size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "space in chunk size",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "obs-fold in trailer",
            s(
                "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n",
            ),
            Status(400),
        ),
        (
            "chunked body over the limit",
            {
                let mut v =
                    s("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
                for _ in 0..20 {
                    v.extend_from_slice(b"10000\r\n");
                    v.extend_from_slice(&[b'z'; 0x10000]);
                    v.extend_from_slice(b"\r\n");
                }
                v
            },
            Status(413),
        ),
        (
            "HTTP/2 preface without a gRPC service",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec(),
            Close,
        ),
        ("truncated head", s("GET /hello HTTP/1.1\r\nHo"), Close),
        (
            "Host with a space",
            s("GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with a tab",
            s("GET /hello HTTP/1.1\r\nHost: a\tb\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with a slash",
            s("GET /hello HTTP/1.1\r\nHost: evil.example/x\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with user info",
            s("GET /hello HTTP/1.1\r\nHost: user@t\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with two ports",
            s("GET /hello HTTP/1.1\r\nHost: t:80:81\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with a letter in the port",
            s("GET /hello HTTP/1.1\r\nHost: t:8o\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with an unclosed IP literal",
            s("GET /hello HTTP/1.1\r\nHost: [::1\r\n\r\n"),
            Status(400),
        ),
        (
            "Host with non-ASCII bytes",
            b"GET /hello HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "Host with quotes and angle brackets",
            s("GET /hello HTTP/1.1\r\nHost: \"<t>\"\r\n\r\n"),
            Status(400),
        ),
        (
            "chunk extensions far larger than the data",
            {
                // 1-byte chunks, each with a 1000-byte extension: every line
                // is under the per-line cap, the body as a whole is not.
                let mut v =
                    s("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
                let ext = format!(";e={}", "x".repeat(998));
                for _ in 0..40 {
                    v.extend_from_slice(format!("1{ext}\r\nz\r\n").as_bytes());
                }
                v.extend_from_slice(b"0\r\n\r\n");
                v
            },
            Status(400),
        ),
        (
            "body never completes",
            s("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort"),
            Status(408),
        ),
    ]
}

#[test]
fn hostile_requests_get_the_right_answer_and_the_server_survives() {
    let server = TestServer::start();
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, request, expect) in &cases {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(4))).ok();
        // A half-close says "no more bytes" so that truncated cases end
        // promptly; the server must still answer or close.
        let _ = s.write_all(request);
        if *expect == Expect::Close {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let reply = read_to_close(&mut s);
        let got = status_of(&reply.bytes);
        let ok = match expect {
            Expect::Status(code) => {
                got == Some(*code)
                    && reply.closed
                    && String::from_utf8_lossy(&reply.bytes).contains("\"code\":")
            }
            Expect::Close => reply.bytes.is_empty() && reply.closed,
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {expect:?}, got {got:?} (closed: {}) {:?}",
                reply.closed,
                String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(200)])
            ));
        }
        server.assert_healthy();
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn routing_errors_and_panics_answer_json_and_keep_the_connection() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(4))).ok();
    let requests = b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
        DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n\
        GET /panic HTTP/1.1\r\nHost: t\r\n\r\n\
        GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    s.write_all(requests).expect("write");
    let reply = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&reply.bytes);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["404", "405", "500", "200"], "{text}");
    assert!(text.contains("\"code\":\"not_found\""));
    assert!(text.contains("\"code\":\"method_not_allowed\""));
    assert!(text.to_ascii_lowercase().contains("allow: get, head\r\n"));
    assert!(text.contains("\"code\":\"internal\""));
    assert!(reply.closed);
}

#[test]
fn slowloris_trickle_gets_408() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90))).ok();
    let started = Instant::now();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
        .expect("write");
    // One header byte every 100 ms for a minute: every read makes progress
    // (no idle timeout fires) but the head never completes, so only the
    // head deadline (1 s in the test config) can end it before the trickle
    // stops.
    let mut trickle = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
            if trickle.write_all(b"X").is_err() {
                return true;
            }
        }
        false
    });
    let reply = read_to_close(&mut s);
    eprintln!("408 after {:?}", started.elapsed());
    assert_eq!(
        status_of(&reply.bytes),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert!(reply.closed);
    drop(s);
    assert!(
        writer.join().expect("trickle thread"),
        "the connection took the whole trickle: the head deadline never ended it"
    );
    server.assert_healthy();
}

#[test]
fn a_body_trickled_just_inside_the_idle_timeout_gets_408() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        .expect("write");
    // One body byte every 600 ms, inside the 1 s idle timeout of a body
    // read: every read makes progress, and the body would take a minute.
    // The body deadline (2 s in the test config) must end it.
    let mut trickle = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(600));
            if trickle.write_all(b"x").is_err() {
                break;
            }
        }
    });
    let reply = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    assert!(reply.closed, "the connection is still open: {text:?}");
    assert_eq!(status_of(&reply.bytes), Some(408), "{text:?}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text:?}");
    drop(s);
    let _ = writer.join();
    server.assert_healthy();
}

#[test]
fn a_large_body_at_a_steady_rate_outlasts_the_base_deadline() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    // 192 KiB in 24 pieces of 8 KiB every 150 ms: about 3.6 s in all, past
    // the 2 s base deadline, at 53 KiB/s, well above the 16 KiB/s floor.
    let body = support::http::pattern(192 * 1024);
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("write head");
    for piece in body.chunks(8 * 1024) {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(piece).expect("write body");
    }
    let reply = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    assert_eq!(status_of(&reply.bytes), Some(200), "{text:?}");
    assert!(
        text.contains(&format!("\"len\":{}", body.len())),
        "{text:?}"
    );
}

#[test]
fn idle_connections_are_closed() {
    let server = TestServer::start_with(support::http::quick_idle_config());
    let reply = exchange_reply(server.addr, b"");
    assert!(reply.closed && reply.bytes.is_empty());
    // Also after a first request on a keep-alive connection.
    let reply = exchange_reply(server.addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(reply.closed);
    assert_eq!(status_of(&reply.bytes), Some(200));
    server.assert_healthy();
}

#[test]
fn a_client_that_never_reads_is_dropped() {
    // One connection at a time: while the server holds the stalled one, any
    // other is refused with 503, so the first one served shows that the
    // server has let the stalled connection go.
    let mut config = support::http::test_config();
    config.max_connections = 1;
    let server = TestServer::start_with(config);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    // Pipeline requests for 4 MiB answers and never read: the server's writes
    // stall, its write deadline (1 s) passes and it must close, not wait.
    for _ in 0..16 {
        if s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .is_err()
        {
            break;
        }
    }
    let served = support::http::eventually(Duration::from_secs(60), || {
        let reply = exchange_reply(
            server.addr,
            b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        (status_of(&reply.bytes) == Some(200)).then_some(())
    });
    assert!(
        served.is_some(),
        "the server never let go of a connection whose client does not read"
    );
    // The 200 above is the health check: with one connection allowed, a
    // second probe could race the server's release of the first one.
    // The connection is gone on the server side: reading drains what was
    // buffered and then sees the close (or a reset).
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let reply = read_to_close(&mut s);
    assert!(reply.closed, "server kept a stalled connection open");
}

#[test]
fn connections_over_the_limit_get_503() {
    let mut config = support::http::test_config();
    config.max_connections = 4;
    let server = TestServer::start_with(config);
    // Four connections, each with a request in flight, until released.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            s
        })
        .collect();
    server.wait_until_in_flight(4);
    let hello = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let reply = exchange_reply(server.addr, hello);
    assert_eq!(
        status_of(&reply.bytes),
        Some(503),
        "{:?}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert!(reply.closed);
    server.release(4);
    drop(held);
    let served = support::http::eventually(Duration::from_secs(30), || {
        (status_of(&exchange_reply(server.addr, hello).bytes) == Some(200)).then_some(())
    });
    assert!(
        served.is_some(),
        "the server did not serve again after the held connections closed"
    );
    server.assert_healthy();
}

#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(4))).ok();
    // Five requests in one write: bodies by length and chunked, an HTTP/1.0
    // keep-alive request, a HEAD, then a close.
    let requests = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst\
        POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3;x=y\r\nond\r\n0\r\nTrailer-A: 1\r\n\r\n\
        GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
        HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfifth";
    s.write_all(requests).expect("write");
    let reply = read_to_close(&mut s);
    assert!(reply.closed);
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split_once("\r\n\r\n").map_or("", |(_, body)| body))
        .collect();
    assert_eq!(
        bodies,
        ["first", "second", support::http::HELLO, "", "fifth"],
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection: keep-alive"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 5);
}
