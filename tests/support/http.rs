//! A test server for the HTTP tests: a small router on a loopback port, run
//! on its own runtime thread so that tests may block (spawn curl, read raw
//! sockets) without stalling it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrium::http::{
    Body, Method, Request, Response, Router, Server, ServerConfig, ShutdownHandle,
};
use tokio::io::AsyncReadExt;

pub const HELLO: &str = r#"{"status":"healthy","service":"ferrium"}"#;

/// The limit of the `/upload` route, which streams its body.
pub const UPLOAD_LIMIT: u64 = 64 * 1024 * 1024;

/// FNV-1a, to check that streamed bodies arrive intact.
pub fn fnv(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Deterministic test bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// The requests in flight of the shutdown tests: `/held` answers once the
/// test releases it, `/forever` never does.
pub struct InFlight {
    /// Requests that reached the handler of `/held` or `/forever`.
    started: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            started: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

pub fn router(in_flight: Arc<InFlight>) -> Router {
    let forever = in_flight.clone();
    Router::new()
        .route(Method::Get, "/hello", |_req: Request| async {
            Response::with_body(200, "application/json", HELLO)
        })
        .route(Method::Post, "/echo", |mut req: Request| async move {
            match req.body_bytes(1024 * 1024).await {
                Ok(body) => Response::with_body(200, "application/octet-stream", body),
                Err(e) => e.to_response(),
            }
        })
        .route_with_body_limit(
            Method::Post,
            "/upload",
            UPLOAD_LIMIT,
            |mut req: Request| async move {
                // Streams the body through a small buffer: never holds it whole.
                let mut buf = vec![0u8; 32 * 1024];
                let (mut len, mut hash) = (0u64, FNV_START);
                loop {
                    match req.body_mut().read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            len += n as u64;
                            hash = fnv(&buf[..n], hash);
                        }
                        Err(e) => return ferrium::http::Error::from(e).to_response(),
                    }
                }
                Response::json(
                    200,
                    &serde_json::json!({ "len": len, "fnv": hash.to_string() }),
                )
            },
        )
        .post("/json", |mut req: Request| async move {
            match req.json::<serde_json::Value>(1024).await {
                Ok(v) => Response::json(200, &serde_json::json!({ "got": v })),
                Err(resp) => resp,
            }
        })
        .route(Method::Get, "/stream", |req: Request| async move {
            let n: usize = req
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(100_000);
            Response::stream(
                200,
                "application/octet-stream",
                std::io::Cursor::new(pattern(n)),
            )
        })
        .route(Method::Get, "/sized-stream", |_req: Request| async move {
            let data = pattern(300_000);
            let mut r = Response::new(200);
            r.set_body(Body::sized_stream(std::io::Cursor::new(data), 300_000));
            r
        })
        .route(Method::Get, "/big", |_req: Request| async {
            Response::with_body(200, "application/octet-stream", vec![b'x'; 4 * 1024 * 1024])
        })
        .route(Method::Get, "/panic", |_req: Request| async {
            if std::hint::black_box(true) {
                panic!("deliberate test panic");
            }
            Response::new(200)
        })
        .route(Method::Get, "/held", move |_req: Request| {
            let in_flight = in_flight.clone();
            in_flight.started.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Ok(permit) = in_flight.release.acquire().await {
                    permit.forget();
                }
                Response::with_body(200, "text/plain", "held done")
            }
        })
        .route(Method::Get, "/forever", move |_req: Request| {
            forever.started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Response>()
        })
        .route(Method::Get, "/close", |_req: Request| async {
            Response::with_body(200, "text/plain", "bye").header("connection", "close")
        })
}

/// Tight limits so that hostile cases fail fast.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        max_request_line: 1024,
        max_header_bytes: 4096,
        max_headers: 32,
        max_body: 1024 * 1024,
        header_timeout: Duration::from_millis(1000),
        keep_alive_timeout: Duration::from_millis(3000),
        body_timeout: Duration::from_millis(1000),
        body_deadline: Duration::from_millis(2000),
        body_min_rate: 16 * 1024,
        write_timeout: Duration::from_millis(1000),
        max_connections: 256,
        shutdown_timeout: Duration::from_millis(1500),
    }
}

/// The test limits with a short keep-alive timeout.
pub fn quick_idle_config() -> ServerConfig {
    ServerConfig {
        keep_alive_timeout: Duration::from_millis(500),
        ..test_config()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: ShutdownHandle,
    in_flight: Arc<InFlight>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(test_config())
    }

    pub fn start_with(config: ServerConfig) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let in_flight = Arc::new(InFlight::default());
        let routes = router(in_flight.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let server = Server::bind("127.0.0.1:0", config, routes).await?;
                tx.send((server.local_addr()?, server.shutdown_handle()))
                    .map_err(|_| std::io::Error::other("test harness gone"))?;
                server.run().await
            })
        });
        let (addr, stop) = rx.recv().expect("test server failed to start");
        TestServer {
            addr,
            stop,
            in_flight,
            thread: Some(thread),
        }
    }

    /// Waits until `n` requests have reached the handler of `/held` or
    /// `/forever`: they are in flight.
    pub fn wait_until_in_flight(&self, n: usize) {
        let started = eventually(Duration::from_secs(30), || {
            (self.in_flight.started.load(Ordering::SeqCst) >= n).then_some(())
        });
        assert!(
            started.is_some(),
            "the requests in flight never reached their handler"
        );
    }

    /// Lets `n` requests to `/held` answer.
    pub fn release(&self, n: usize) {
        self.in_flight.release.add_permits(n);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shuts down and waits; returns how long `run` took to return.
    pub fn shutdown(&mut self) -> Duration {
        let started = std::time::Instant::now();
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join()
                .expect("server thread panicked")
                .expect("server failed");
        }
        started.elapsed()
    }

    /// A plain keep-alive GET /hello on a new connection: the server is fine.
    pub fn assert_healthy(&self) {
        let resp = exchange(
            self.addr,
            b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(
            resp.starts_with(b"HTTP/1.1 200 OK\r\n") && resp.ends_with(HELLO.as_bytes()),
            "server unhealthy: {:?}",
            String::from_utf8_lossy(&resp)
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.shutdown();
        }
    }
}

/// What came back on a connection.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// The server closed the connection (as opposed to our read timing out).
    pub closed: bool,
}

/// Sends `request` on a new connection and reads until the server closes
/// (or 4 s pass).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    exchange_reply(addr, request).bytes
}

pub fn exchange_reply(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(4))).ok();
    let _ = s.write_all(request);
    read_to_close(&mut s)
}

pub fn read_to_close(s: &mut TcpStream) -> Reply {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                return Reply {
                    bytes,
                    closed: true,
                };
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => {
                let closed = !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                return Reply { bytes, closed };
            }
        }
    }
}

pub use super::wait::eventually;

/// The status code of the first response in `resp`, if any.
pub fn status_of(resp: &[u8]) -> Option<u16> {
    let line = resp.split(|&b| b == b'\n').next()?;
    let code = line.get(9..12)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}
