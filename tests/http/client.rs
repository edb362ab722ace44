//! The pooled client against the server, and the server's graceful shutdown.

use crate::support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::http::{FNV_START, HELLO, TestServer, fnv, pattern};
use ferrium::http::{Body, Client, ClientConfig, ClientRequest, Error, Method, ServerConfig};
use tokio::io::AsyncReadExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn client_reuses_connections_and_streams_bodies() {
    let server = TestServer::start();
    runtime().block_on(async {
        let client = Client::new(ClientConfig::default());
        for _ in 0..3 {
            let resp = client.get(&server.url("/hello")).await.expect("get");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.collect(1024).await.expect("body"), HELLO.as_bytes());
        }
        assert_eq!(
            client.idle_connections(),
            1,
            "keep-alive connection not pooled"
        );

        // Host names work, not only addresses.
        let url = format!("http://localhost:{}/hello", server.addr.port());
        assert_eq!(client.get(&url).await.expect("get by name").status(), 200);

        let resp = client
            .post(&server.url("/json"), "application/json", r#"{"a":1}"#)
            .await
            .expect("post");
        assert_eq!(
            resp.collect(1024).await.expect("body"),
            br#"{"got":{"a":1}}"#
        );
        let resp = client
            .post(&server.url("/json"), "application/json", "{nope")
            .await
            .expect("post");
        assert_eq!(resp.status(), 400);
        let resp = client
            .post(&server.url("/echo"), "text/plain", "hello")
            .await
            .expect("post");
        assert_eq!(resp.collect(1024).await.expect("body"), b"hello");

        // A streamed upload of unknown length (chunked) and of known length.
        let data = pattern(3 * 1024 * 1024 + 17);
        let want = format!(
            r#"{{"fnv":"{}","len":{}}}"#,
            fnv(&data, FNV_START),
            data.len()
        );
        let req = ClientRequest::new(Method::Post, &server.url("/upload"))
            .expect("url")
            .body(Body::stream(std::io::Cursor::new(data.clone())));
        let resp = client.send(req).await.expect("chunked upload");
        assert_eq!(resp.collect(1024).await.expect("body"), want.as_bytes());
        let req = ClientRequest::new(Method::Post, &server.url("/upload"))
            .expect("url")
            .body(Body::sized_stream(
                std::io::Cursor::new(data.clone()),
                data.len() as u64,
            ));
        let resp = client.send(req).await.expect("sized upload");
        assert_eq!(resp.collect(1024).await.expect("body"), want.as_bytes());

        // A streamed (chunked) download, read piece by piece.
        let mut resp = client
            .get(&server.url("/stream?n=1000000"))
            .await
            .expect("get");
        let mut got = Vec::new();
        let mut buf = [0u8; 10_000];
        loop {
            let n = resp.body_mut().read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, pattern(1_000_000));
        drop(resp);
        // One connection per host name: 127.0.0.1 and localhost.
        assert_eq!(client.idle_connections(), 2);

        // Limits on collect.
        let resp = client.get(&server.url("/big")).await.expect("get");
        assert!(matches!(resp.collect(1024).await, Err(Error::BodyTooLarge)));

        // A separate pool shares nothing.
        let other = client.separate_pool();
        assert_eq!(other.idle_connections(), 0);
        assert_eq!(
            other
                .get(&server.url("/hello"))
                .await
                .expect("get")
                .status(),
            200
        );
        assert_eq!(other.idle_connections(), 1);
    });
}

#[test]
fn client_gets_the_early_answer_to_an_oversized_upload() {
    let server = TestServer::start();
    runtime().block_on(async {
        let client = Client::new(ClientConfig::default());
        let big = pattern(8 * 1024 * 1024);
        // Known length: refused from the head alone.
        let req = ClientRequest::new(Method::Post, &server.url("/echo"))
            .expect("url")
            .body(Body::sized_stream(
                std::io::Cursor::new(big.clone()),
                big.len() as u64,
            ));
        let resp = client
            .send(req)
            .await
            .expect("an answer, not a broken pipe");
        assert_eq!(resp.status(), 413);
        // Chunked: refused once the handler has read past its limit.
        let req = ClientRequest::new(Method::Post, &server.url("/echo"))
            .expect("url")
            .body(Body::stream(std::io::Cursor::new(big)));
        let resp = client
            .send(req)
            .await
            .expect("an answer, not a broken pipe");
        assert_eq!(resp.status(), 413);
    });
    server.assert_healthy();
}

#[test]
fn client_retries_once_when_a_pooled_connection_was_closed() {
    // A server that answers one request per connection and then closes
    // without saying so: the pooled connection is dead on its next use.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let served = std::thread::spawn(move || {
        let mut count = 0;
        for stream in listener.incoming().take(3) {
            let mut s = stream.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            count += 1;
            drop(s);
            let _ = closed_tx.send(());
        }
        count
    });
    runtime().block_on(async {
        let client = Client::new(ClientConfig::default());
        let url = format!("http://{addr}/");
        for _ in 0..3 {
            let resp = client.get(&url).await.expect("get");
            assert_eq!(resp.collect(16).await.expect("body"), b"ok");
            // The pooled connection is closed before its next use.
            tokio::time::timeout(Duration::from_secs(30), closed.recv())
                .await
                .expect("the server never closed the connection");
        }
    });
    assert_eq!(served.join().expect("server thread"), 3);
}

#[test]
fn client_timeouts() {
    // Accepts, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime().block_on(async {
        let client = Client::new(ClientConfig {
            request_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        });
        // Without its own timeout the request would wait for ever: the
        // outer one only keeps a broken client from hanging the test.
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            client.get(&format!("http://{addr}/")),
        )
        .await
        .expect("the client's request_timeout never fired");
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        eprintln!("request timed out after {:?}", started.elapsed());
        assert!(matches!(
            client.get("https://x/").await,
            Err(Error::InvalidUrl(_))
        ));
        assert!(matches!(
            client.get("http://a b/").await,
            Err(Error::InvalidUrl(_))
        ));
    });
    drop(listener);
}

#[test]
fn graceful_shutdown_finishes_in_flight_and_refuses_new() {
    // A shutdown deadline far longer than the test needs: the request in
    // flight is released by the test, never cut off.
    let mut server = TestServer::start_with(ServerConfig {
        shutdown_timeout: Duration::from_secs(60),
        ..support::http::test_config()
    });
    let addr = server.addr;
    // A request in flight, answered when the test releases it, when
    // shutdown starts.
    let in_flight = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set timeout");
        s.write_all(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        support::http::read_to_close(&mut s).bytes
    });
    // An idle keep-alive connection (its answer read), which shutdown
    // should close at once.
    let mut idle = std::net::TcpStream::connect(addr).expect("connect");
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    read_answer(&mut idle, HELLO);
    server.wait_until_in_flight(1);

    let stop = server.stop.clone();
    let stopper = std::thread::spawn(move || {
        stop.shutdown();
    });
    let refused = support::http::eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    });
    assert!(
        refused.is_some(),
        "new connections were still accepted during shutdown"
    );
    assert!(
        !in_flight.is_finished(),
        "the request in flight ended before it was released"
    );
    server.release(1);
    let took = server.shutdown();
    stopper.join().expect("stopper");

    let reply = in_flight.join().expect("client thread");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.ends_with("held done"));
    let idle_reply = support::http::read_to_close(&mut idle);
    assert!(idle_reply.closed);
    eprintln!("shutdown took {took:?}");
}

/// Reads from `s` until the answer so far ends with `body`.
fn read_answer(s: &mut std::net::TcpStream, body: &str) {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(body.as_bytes()) {
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "the connection closed before the answer: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer on the connection: {e}"),
        }
    }
}

#[test]
fn shutdown_aborts_requests_that_outlive_the_deadline() {
    let mut server = TestServer::start();
    let addr = server.addr;
    let stuck = std::thread::spawn(move || {
        support::http::exchange_reply(addr, b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
    });
    server.wait_until_in_flight(1);
    // The handler never finishes: shutdown returns only because it aborts
    // the request at its deadline (1.5 s in the test config), and not
    // before it (a lower bound, which a slow machine cannot break).
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(server.shutdown());
    });
    let took = done
        .recv_timeout(Duration::from_secs(60))
        .expect("shutdown never returned: the request in flight was not aborted");
    eprintln!("shutdown took {took:?}");
    assert!(
        took >= Duration::from_millis(1400),
        "shutdown aborted a request in flight after {took:?}, before its 1.5 s deadline"
    );
    let reply = stuck.join().expect("client thread");
    assert!(reply.closed && reply.bytes.is_empty());
}

#[test]
fn http2_preface_is_handed_off_with_the_bytes_already_read() {
    use ferrium::http::{H2Connection, Router, Server};
    use tokio::io::AsyncWriteExt;

    runtime().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<H2Connection>();
        let server = Server::bind("127.0.0.1:0", support::http::test_config(), Router::new())
            .await
            .expect("bind")
            .with_h2_handoff(move |conn| {
                let _ = tx.send(conn);
            });
        let addr = server.local_addr().expect("addr");
        let stop = server.shutdown_handle();
        let running = tokio::spawn(server.run());

        let mut peer = tokio::net::TcpStream::connect(addr).await.expect("connect");
        peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("write");
        let conn = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("no hand-off")
            .expect("channel");
        assert!(
            conn.preface
                .starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        );
        // The hand-off stream replays what was read, then continues live.
        let mut io = conn.into_io();
        let mut first = [0u8; 33];
        io.read_exact(&mut first)
            .await
            .expect("replayed preface and frame");
        assert_eq!(&first[..24], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        io.write_all(b"pong").await.expect("write back");
        let mut pong = [0u8; 4];
        peer.read_exact(&mut pong).await.expect("read");
        assert_eq!(&pong, b"pong");

        // Plain HTTP/1.1 on the same port still works.
        let client = Client::new(ClientConfig::default());
        let resp = client
            .get(&format!("http://{addr}/none"))
            .await
            .expect("get");
        assert_eq!(resp.status(), 404);

        stop.shutdown();
        running.await.expect("join").expect("run");
    });
}
