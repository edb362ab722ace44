//! The HTTP/1.1 server: listener, connection lifecycle, limits, shutdown.
//!
//! One task per connection reads a head, hands the request to the
//! [`Handler`], writes the response and loops (keep-alive, pipelining answered
//! in order, since requests on one connection are served one at a time).
//! Every wait has a bound from [`ServerConfig`]: the time to receive a head
//! (408), the idle time between requests, the idle time of a body read, the
//! time a whole body may take (408; it grows with the bytes received, so a
//! client trickling a byte at a time cannot hold a connection while a large
//! body at a sane rate finishes), how long a response write may stall (a
//! peer that never reads cannot hold us), and the number of connections (a
//! semaphore: one over the limit gets a canned 503 written without blocking,
//! and is closed, so overload never costs memory). A connection handed to
//! HTTP/2 keeps its permit until it closes.
//!
//! When the framing of a connection can no longer be trusted (a parse error, a
//! body not read to its end) the response carries `Connection: close` and the
//! connection is closed after a short lingering read, so that the peer sees the
//! response rather than a reset.
//!
//! Shutdown ([`ShutdownHandle::shutdown`]) closes the listener at once (new
//! connections are refused), closes idle connections, lets requests in flight
//! finish with `Connection: close`, and aborts whatever is left when
//! [`ServerConfig::shutdown_timeout`] expires.
//!
//! A connection that opens with the HTTP/2 preface is handed, with the bytes
//! already read, to the [`H2Handoff`] if one is set (the gRPC service), and
//! closed otherwise.
//!
//! With TLS ([`Server::with_tls`]) every connection starts with a handshake
//! bounded by the header timeout; one that negotiates `h2` with ALPN goes to
//! the hand-off at once, and a clear-text request on the TLS port gets a
//! clear-text 400 saying to use `https://`.

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use super::body::{Body, BodyDeadline, BoxRead, ConnReader, Decoder, Incoming};
use super::encode::{HeadLength, push_hex, status_has_no_body, write_head};
use super::framing::{ChunkedDecoder, Framing};
use super::head::{HeadParser, Limits, Method, Version};
use super::request::{Request, RequestHead};
use super::response::{self, Response};
use super::tls::{BoxIo, PeerCert, ServerTls};
use super::{Error, Handler};

/// The HTTP/2 connection preface (RFC 9113 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bounds and timeouts of the server. Every field has a default fit for a
/// public port; see [`ServerConfig::default`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Longest request line (414 beyond). Default 8 KiB.
    pub max_request_line: usize,
    /// Largest header section (431 beyond). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most header fields (431 beyond). Default 100.
    pub max_headers: usize,
    /// Largest request body unless a route says otherwise (413 beyond).
    /// Default 4 MiB.
    pub max_body: u64,
    /// Time to receive a whole request head once it has started (408).
    /// Default 10 s.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open. Default 60 s.
    pub keep_alive_timeout: Duration,
    /// How long one read of a request body may wait for data. Default 30 s.
    pub body_timeout: Duration,
    /// Time a whole request body has to arrive (408 beyond), from its first
    /// read, before [`ServerConfig::body_min_rate`] adds to it. Default 30 s.
    pub body_deadline: Duration,
    /// Each this many bytes of body received add a second to the body
    /// deadline, so that large bodies sent at a sane rate finish. Default
    /// 16 KiB (a body slower than 16 KiB/s on average runs out of time).
    pub body_min_rate: u64,
    /// How long a response write may make no progress (the peer does not
    /// read). Default 30 s.
    pub write_timeout: Duration,
    /// Most connections served at once, HTTP/2 connections handed off
    /// included (until they close); the next ones get a 503. Default 4096.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight. Default 10 s.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_line: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            body_deadline: Duration::from_secs(30),
            body_min_rate: 16 * 1024,
            write_timeout: Duration::from_secs(30),
            max_connections: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection that opened with the HTTP/2 preface.
pub struct H2Connection {
    /// The connection: TCP, or TLS over TCP.
    pub stream: BoxIo,
    /// Bytes already read from `stream` (the preface, and maybe more); they
    /// must be replayed to the HTTP/2 implementation first.
    pub preface: Vec<u8>,
    pub remote_addr: SocketAddr,
    /// The verified client certificate, on a TLS connection that had one.
    pub peer: Option<Arc<PeerCert>>,
    /// The connection's place under its listener's connection limit, held
    /// until the connection is dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl H2Connection {
    /// The connection as one stream that replays the bytes already read.
    pub fn into_io(self) -> PrefixedIo<BoxIo> {
        PrefixedIo {
            prefix: self.preface,
            pos: 0,
            inner: self.stream,
            peer: self.peer,
            _permit: self.permit,
        }
    }
}

/// Receives HTTP/2 connections; it should spawn or enqueue, not block.
pub type H2Handoff = Arc<dyn Fn(H2Connection) + Send + Sync>;

/// A stream that first yields `prefix`, then reads from `inner`. It holds
/// the connection's permit, so the connection counts against its listener's
/// limit for as long as it lives.
pub struct PrefixedIo<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    peer: Option<Arc<PeerCert>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> PrefixedIo<S> {
    /// The verified client certificate of the connection, if any.
    pub fn peer(&self) -> Option<Arc<PeerCert>> {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.prefix[pos..pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Starts a graceful shutdown of the server it came from.
#[derive(Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Stops accepting, closes idle connections and lets requests in flight
    /// finish (up to [`ServerConfig::shutdown_timeout`]). Returns at once;
    /// [`Server::run`] returns when the shutdown is complete.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// An HTTP/1.1 server bound to a listener.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use ferrium::http::{Method, Request, Response, Router, Server, ServerConfig};
///
/// let router = Router::new().route(Method::Get, "/health", |_req: Request| async {
///     Response::with_body(200, "application/json", r#"{"status":"healthy"}"#)
/// });
/// let server = Server::bind("127.0.0.1:8001", ServerConfig::default(), router).await?;
/// let stop = server.shutdown_handle();
/// let running = tokio::spawn(server.run());
/// // ...
/// stop.shutdown();
/// running.await??;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    h2: Option<H2Handoff>,
    tls: Option<Arc<ServerTls>>,
    shutdown: Arc<watch::Sender<bool>>,
    open_connections: Arc<AtomicUsize>,
}

struct Shared {
    config: ServerConfig,
    limits: Limits,
    handler: Arc<dyn Handler>,
    h2: Option<H2Handoff>,
    tls: Option<Arc<ServerTls>>,
}

impl Server {
    /// Binds a listener on `addr`.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server::from_listener(listener, config, handler))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(
        listener: TcpListener,
        config: ServerConfig,
        handler: impl Handler,
    ) -> Server {
        let (tx, _) = watch::channel(false);
        Server {
            listener,
            config,
            handler: Arc::new(handler),
            h2: None,
            tls: None,
            shutdown: Arc::new(tx),
            open_connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts the HTTP/1.1 connections being served in `counter` (for
    /// metrics) instead of a private one.
    pub fn with_connection_counter(mut self, counter: Arc<AtomicUsize>) -> Server {
        self.open_connections = counter;
        self
    }

    /// Hands connections that open with the HTTP/2 preface to `handoff`.
    pub fn with_h2_handoff(
        mut self,
        handoff: impl Fn(H2Connection) + Send + Sync + 'static,
    ) -> Server {
        self.h2 = Some(Arc::new(handoff));
        self
    }

    /// Serves TLS only, with the (reloadable) configuration of `tls`.
    pub fn with_tls(mut self, tls: Arc<ServerTls>) -> Server {
        self.tls = Some(tls);
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown.clone(),
        }
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called and the shutdown
    /// has completed.
    pub async fn run(self) -> io::Result<()> {
        let Server {
            listener,
            config,
            handler,
            h2,
            tls,
            shutdown,
            open_connections,
        } = self;
        let grace = config.shutdown_timeout;
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let open = open_connections;
        let shared = Arc::new(Shared {
            limits: Limits {
                max_line: config.max_request_line,
                max_header_bytes: config.max_header_bytes,
                max_headers: config.max_headers,
            },
            config,
            handler,
            h2,
            tls,
        });
        let mut stop = shutdown.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            // The permit goes with the connection: dropped when it
                            // closes, or handed to HTTP/2 along with it.
                            let conn = serve_connection(stream, remote, shared.clone(), shutdown.subscribe(), permit);
                            let open = open.clone();
                            open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tasks.spawn(async move {
                                conn.await;
                                open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            });
                        }
                        // A TLS client could not read a clear-text answer.
                        Err(_) if shared.tls.is_some() => drop(stream),
                        Err(_) => refuse_busy(&stream),
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little
                        // instead of spinning on the error.
                        log::warn!("http: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if timeout(grace, drain).await.is_err() {
            log::warn!(
                "http: {} connection(s) still busy after the {grace:?} shutdown deadline; closing them",
                tasks.len()
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        Ok(())
    }
}

/// Resolves when shutdown has started. (A helper so that the watch guard
/// `wait_for` returns never lives in a future that must be `Send`.)
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&s| s).await;
}

/// Writes a 503 to a connection over the limit without waiting, then drops it.
fn refuse_busy(stream: &TcpStream) {
    let out = canned(
        503,
        br#"{"error":"too many connections","code":"unavailable"}"#,
    );
    let _ = stream.try_write(&out);
}

/// A whole JSON response that closes the connection, for answers written
/// before any request is parsed.
fn canned(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let headers = [(
        response::HeaderText::Borrowed("content-type"),
        response::HeaderText::Borrowed("application/json"),
    )];
    write_head(
        &mut out,
        "HTTP/1.1",
        status,
        &headers,
        HeadLength::Known(body.len() as u64),
        Some("close"),
    );
    out.extend_from_slice(body);
    out
}

/// Serves one connection to its end.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = shared.tls.clone() else {
        let split = |s: TcpStream| -> (BoxRead, BoxWrite) {
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        };
        serve_stream(stream, split, remote, shared, shutdown, None, permit).await;
        return;
    };
    let handshake = async {
        if super::tls::looks_like_plain_http(&stream).await {
            tls.count_plaintext();
            return Err(stream);
        }
        let h2_allowed = shared.h2.is_some();
        Ok(tls.accept(stream, h2_allowed, false).await)
    };
    let accepted = tokio::select! {
        r = timeout(shared.config.header_timeout, handshake) => r,
        () = stopped(&mut shutdown) => return,
    };
    let accepted = match accepted {
        Ok(Ok(Ok(a))) => a,
        Ok(Ok(Err(e))) => {
            log::debug!("http: TLS handshake with {remote} failed: {e}");
            return;
        }
        Ok(Err(plain)) => {
            refuse_plaintext(plain, &shared).await;
            return;
        }
        Err(_) => {
            log::debug!("http: TLS handshake with {remote} timed out");
            return;
        }
    };
    let peer = accepted.peer;
    if accepted.h2 {
        let stream = Box::new(accepted.stream);
        hand_off_h2(&shared, stream, Vec::new(), remote, peer, permit);
        return;
    }
    let split = |s| -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(s);
        (Box::new(r), Box::new(w))
    };
    serve_stream(
        accepted.stream,
        split,
        remote,
        shared,
        shutdown,
        peer,
        permit,
    )
    .await;
}

type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Reads the first bytes of `stream`, then hands it to HTTP/2 or serves
/// HTTP/1.1 on it, with the halves `split` makes. `permit` is held until the
/// connection closes, wherever it is served.
async fn serve_stream<S: super::tls::Io>(
    stream: S,
    split: impl FnOnce(S) -> (BoxRead, BoxWrite),
    remote: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    peer: Option<Arc<PeerCert>>,
    permit: OwnedSemaphorePermit,
) {
    let Some((stream, initial)) = read_preface(stream, &shared, &mut shutdown).await else {
        return;
    };
    if initial.starts_with(H2_PREFACE) {
        hand_off_h2(&shared, Box::new(stream), initial, remote, peer, permit);
        return;
    }
    let (r, w) = split(stream);
    Connection::new(shared, remote, shutdown, r, w, initial, peer)
        .serve()
        .await;
}

fn hand_off_h2(
    shared: &Shared,
    stream: BoxIo,
    preface: Vec<u8>,
    remote: SocketAddr,
    peer: Option<Arc<PeerCert>>,
    permit: OwnedSemaphorePermit,
) {
    match &shared.h2 {
        Some(handoff) => (handoff.as_ref())(H2Connection {
            stream,
            preface,
            remote_addr: remote,
            peer,
            permit: Some(permit),
        }),
        None => log::debug!("http: {remote} speaks HTTP/2; no HTTP/2 service, closing"),
    }
}

/// Answers a clear-text request on the TLS port in clear text, the way
/// nginx does, so that the user reads what to change instead of garbage.
async fn refuse_plaintext(mut stream: TcpStream, shared: &Shared) {
    let out = canned(
        400,
        br#"{"error":"this port speaks TLS: use https:// (curl: --cacert CA.pem https://...)","code":"tls_required"}"#,
    );
    let wait = shared.config.write_timeout;
    if timeout(wait, stream.write_all(&out)).await.is_ok() {
        let _ = stream.shutdown().await;
        // Let the request bytes in flight arrive, so that the close does not
        // turn into a reset that destroys the answer.
        let mut sink = [0u8; 4096];
        let deadline = Instant::now() + LINGER;
        while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// How long a connection accepted just before shutdown may take to send its
/// first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Reads the first bytes of a connection: enough to tell the HTTP/2 preface
/// from an HTTP/1 request. `None` when the peer left or sent nothing in time.
async fn read_preface<S: AsyncRead + Unpin>(
    mut stream: S,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(S, Vec<u8>)> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        // A connection accepted before shutdown began may have its first
        // request on the way: it is still read (for a short while) and
        // answered, typically with a 503 that says to use another member,
        // rather than reset, which the client could not tell from a failure
        // after the request was acted on.
        let stopping = *shutdown.borrow();
        let wait = match (len, stopping) {
            (0, false) => shared.config.keep_alive_timeout,
            (0, true) => FIRST_REQUEST_GRACE.min(shared.config.header_timeout),
            _ => shared.config.header_timeout,
        };
        let read = tokio::select! {
            r = timeout(wait, stream.read(&mut buf[len..])) => r,
            () = stopped(shutdown), if len == 0 && !stopping => continue,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => len += n,
        }
        let n = len.min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] || len >= H2_PREFACE.len() {
            buf.truncate(len);
            return Some((stream, buf));
        }
    }
}

/// What reading a request head led to.
enum NextRequest {
    Head(Box<RequestHead>),
    /// The peer left, idled out, or the server is shutting down.
    Close,
    /// The request is unacceptable: answer with this error and close.
    Reject(Error),
}

struct Connection {
    shared: Arc<Shared>,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
    /// The read side; lent to a request body while it streams.
    reader: Option<ConnReader>,
    writer: BoxWrite,
    /// Response bytes not written yet (several when requests are pipelined).
    wbuf: Vec<u8>,
    /// The verified client certificate (TLS with client certificates).
    peer: Option<Arc<PeerCert>>,
}

/// Above this many pending response bytes, write even if more pipelined
/// requests are waiting.
const MAX_PENDING_WRITE: usize = 32 * 1024;

/// How long a closing connection keeps reading (and discarding) what the peer
/// still sends, so that it receives our last response instead of a reset.
const LINGER: Duration = Duration::from_millis(500);

impl Connection {
    fn new(
        shared: Arc<Shared>,
        remote: SocketAddr,
        shutdown: watch::Receiver<bool>,
        reader: BoxRead,
        writer: BoxWrite,
        initial: Vec<u8>,
        peer: Option<Arc<PeerCert>>,
    ) -> Connection {
        Connection {
            shared,
            remote,
            shutdown,
            reader: Some(ConnReader::new(reader, initial)),
            writer,
            wbuf: Vec::with_capacity(4096),
            peer,
        }
    }

    async fn serve(&mut self) {
        let mut parser = HeadParser::request(self.shared.limits);
        loop {
            let head = match self.next_head(&mut parser).await {
                NextRequest::Head(head) => head,
                NextRequest::Close => break,
                NextRequest::Reject(err) => {
                    log::debug!("http: rejecting request from {}: {err}", self.remote);
                    self.reject(&err).await;
                    break;
                }
            };
            match self.serve_request(*head).await {
                Ok(true) => {}
                Ok(false) => {
                    self.close().await;
                    break;
                }
                Err(e) => {
                    log::debug!("http: connection to {} ended: {e}", self.remote);
                    break;
                }
            }
        }
    }

    /// Reads the next request head, waiting as the connection's state allows.
    async fn next_head(&mut self, parser: &mut HeadParser) -> NextRequest {
        parser.reset();
        let mut deadline: Option<Instant> = None;
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return NextRequest::Close;
            };
            if !reader.buffered().is_empty() {
                match parser.parse(reader.buffered()) {
                    Ok(Some((raw, n))) => {
                        reader.consume(n);
                        return match RequestHead::from_raw(raw) {
                            Ok(head) => NextRequest::Head(Box::new(head)),
                            Err(e) => NextRequest::Reject(e),
                        };
                    }
                    Ok(None) => {}
                    Err(e) => return NextRequest::Reject(e.in_request()),
                }
                if deadline.is_none() {
                    deadline = Some(Instant::now() + self.shared.config.header_timeout);
                }
            }
            // More bytes are needed: first send what earlier requests produced.
            if self.flush().await.is_err() {
                return NextRequest::Close;
            }
            let Some(reader) = self.reader.as_mut() else {
                return NextRequest::Close;
            };
            let read = match deadline {
                Some(at) => match timeout_at(at, reader.fill()).await {
                    Ok(r) => r,
                    Err(_) => {
                        return NextRequest::Reject(Error::Timeout(
                            "request head not received in time",
                        ));
                    }
                },
                None => {
                    if *self.shutdown.borrow() {
                        return NextRequest::Close;
                    }
                    let idle = self.shared.config.keep_alive_timeout;
                    tokio::select! {
                        r = timeout(idle, reader.fill()) => match r {
                            Ok(r) => r,
                            Err(_) => return NextRequest::Close,
                        },
                        () = stopped(&mut self.shutdown) => return NextRequest::Close,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return NextRequest::Close,
                Ok(_) => {}
            }
        }
    }

    /// Serves one request whose head has been read. `Ok(true)` when the
    /// connection can carry another request.
    async fn serve_request(&mut self, head: RequestHead) -> io::Result<bool> {
        let limit = self
            .shared
            .handler
            .body_limit(&head.method, head.path())
            .unwrap_or(self.shared.config.max_body);
        if let Framing::Length(n) = head.framing {
            if n > limit {
                self.reject(&Error::BodyTooLarge).await;
                return Ok(false);
            }
        }
        let is_head = head.method == Method::Head;
        let version = head.version;
        let mut keep_alive = head.keep_alive;

        let (body, lent) = match self.request_body(&head, limit).await {
            Ok(b) => b,
            Err(_) => return Ok(false),
        };
        let request = Request::new(head, body, self.remote, self.peer.clone());
        let response = call_handler(self.shared.handler.as_ref(), request).await;

        if let Some(mut returned) = lent {
            // A handler that finished has dropped its request, and with it the
            // body, which handed the read side back synchronously.
            match returned.try_recv() {
                Ok((mut reader, clean)) => {
                    reader.set_idle_timeout(None);
                    reader.set_deadline(None);
                    self.reader = Some(reader);
                    keep_alive &= clean;
                }
                // The handler kept the body past its response (e.g. in a
                // spawned task): the connection cannot be read again.
                Err(_) => keep_alive = false,
            }
        }
        keep_alive &= !response.wants_close() && !*self.shutdown.borrow();
        let kept = self
            .write_response(response, version, is_head, keep_alive)
            .await?;
        Ok(kept)
    }

    /// Builds the request body: in memory when it already arrived, otherwise
    /// streamed from the connection, whose read side is lent to the body and
    /// comes back through the returned receiver.
    async fn request_body(
        &mut self,
        head: &RequestHead,
        limit: u64,
    ) -> io::Result<(Incoming, Option<oneshot::Receiver<(ConnReader, bool)>>)> {
        let decoder = match head.framing {
            Framing::None | Framing::UntilClose => return Ok((Incoming::empty(), None)),
            Framing::Length(n) => {
                // A length that does not fit in memory is streamed (and
                // stopped by the body limit) rather than truncated.
                let whole = usize::try_from(n).ok();
                if let (Some(reader), Some(whole)) = (self.reader.as_mut(), whole) {
                    if let Some(data) = reader.buffered().get(..whole) {
                        let data = data.to_vec();
                        reader.consume(data.len());
                        return Ok((Incoming::full(data), None));
                    }
                }
                Decoder::Length(n)
            }
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::new(
                self.shared.config.max_header_bytes,
                limit,
            )),
        };
        if head.expect_continue {
            self.wbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        // The handler may take a while: earlier responses go out now.
        self.flush().await?;
        let Some(mut reader) = self.reader.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        reader.set_idle_timeout(Some(self.shared.config.body_timeout));
        reader.set_deadline(Some(BodyDeadline {
            base: self.shared.config.body_deadline,
            min_rate: self.shared.config.body_min_rate,
        }));
        let (tx, rx) = oneshot::channel();
        let on_done = Box::new(move |reader: ConnReader, clean: bool| {
            let _ = tx.send((reader, clean));
        });
        Ok((Incoming::stream(reader, decoder, limit, on_done), Some(rx)))
    }

    /// Writes a response. `Ok(true)` when the connection stays open.
    async fn write_response(
        &mut self,
        response: Response,
        version: Version,
        is_head: bool,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (status, headers, body) = response.into_parts();
        let bodiless = is_head || status_has_no_body(status);
        let omit_length = (100..200).contains(&status) || status == 204;
        let connection = |keep_alive: bool| match (keep_alive, version) {
            (false, _) => Some("close"),
            (true, Version::Http10) => Some("keep-alive"),
            (true, Version::Http11) => None,
        };
        match body {
            Body::Empty => {
                let length = if omit_length {
                    HeadLength::Omit
                } else {
                    HeadLength::Known(0)
                };
                write_head(
                    &mut self.wbuf,
                    "HTTP/1.1",
                    status,
                    &headers,
                    length,
                    connection(keep_alive),
                );
            }
            Body::Bytes(bytes) => {
                let length = if omit_length {
                    HeadLength::Omit
                } else {
                    HeadLength::Known(bytes.len() as u64)
                };
                write_head(
                    &mut self.wbuf,
                    "HTTP/1.1",
                    status,
                    &headers,
                    length,
                    connection(keep_alive),
                );
                if !bodiless {
                    self.wbuf.extend_from_slice(&bytes);
                }
            }
            Body::Stream { mut reader, length } => {
                let framing = match (length, version) {
                    _ if omit_length => HeadLength::Omit,
                    (Some(n), _) => HeadLength::Known(n),
                    (None, Version::Http11) => HeadLength::Chunked,
                    (None, Version::Http10) => {
                        keep_alive = false;
                        HeadLength::Omit
                    }
                };
                write_head(
                    &mut self.wbuf,
                    "HTTP/1.1",
                    status,
                    &headers,
                    framing,
                    connection(keep_alive),
                );
                self.flush().await?;
                if !bodiless {
                    let complete = self.send_stream(&mut reader, framing).await?;
                    keep_alive &= complete;
                }
            }
        }
        let more_pipelined = self
            .reader
            .as_ref()
            .is_some_and(|r| !r.buffered().is_empty());
        if !keep_alive || !more_pipelined || self.wbuf.len() > MAX_PENDING_WRITE {
            self.flush().await?;
        }
        Ok(keep_alive)
    }

    /// Copies a streamed body to the socket. `Ok(false)` when the reader
    /// failed or ended early: the response is cut short and the connection
    /// must close.
    async fn send_stream(&mut self, reader: &mut BoxRead, framing: HeadLength) -> io::Result<bool> {
        const CHUNK: usize = 64 * 1024;
        let mut buf = vec![0u8; CHUNK];
        let mut left = match framing {
            HeadLength::Known(n) => Some(n),
            _ => None,
        };
        loop {
            let want = left.map_or(CHUNK, |l| CHUNK.min(usize::try_from(l).unwrap_or(CHUNK)));
            if want == 0 {
                return Ok(true);
            }
            let n = match reader.read(&mut buf[..want]).await {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("http: response body to {} failed: {e}", self.remote);
                    return Ok(false);
                }
            };
            if n == 0 {
                return match framing {
                    HeadLength::Chunked => {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
                        self.flush().await?;
                        Ok(true)
                    }
                    HeadLength::Known(_) => {
                        log::warn!(
                            "http: response body to {} ended before its length",
                            self.remote
                        );
                        Ok(false)
                    }
                    HeadLength::Omit => Ok(false),
                };
            }
            if framing == HeadLength::Chunked {
                push_hex(&mut self.wbuf, n as u64);
                self.wbuf.extend_from_slice(b"\r\n");
                self.wbuf.extend_from_slice(&buf[..n]);
                self.wbuf.extend_from_slice(b"\r\n");
            } else {
                self.wbuf.extend_from_slice(&buf[..n]);
            }
            if let Some(l) = left.as_mut() {
                *l -= n as u64;
            }
            self.flush().await?;
        }
    }

    /// Writes everything pending. Each write must make progress within the
    /// write timeout: a slow reader is served, a stalled one is dropped.
    async fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < self.wbuf.len() {
            let wrote = timeout(
                self.shared.config.write_timeout,
                self.writer.write(&self.wbuf[written..]),
            )
            .await;
            match wrote {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading the response",
                    ));
                }
            }
        }
        self.wbuf.clear();
        // A no-op on TCP; TLS may hold encrypted bytes until flushed.
        match timeout(self.shared.config.write_timeout, self.writer.flush()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading the response",
            )),
        }
    }

    /// Answers an unacceptable request with its JSON error and closes.
    async fn reject(&mut self, err: &Error) {
        let (status, headers, body) = err.to_response().into_parts();
        let len = body.known_length().unwrap_or(0);
        write_head(
            &mut self.wbuf,
            "HTTP/1.1",
            status,
            &headers,
            HeadLength::Known(len),
            Some("close"),
        );
        if let Body::Bytes(b) = body {
            self.wbuf.extend_from_slice(&b);
        }
        if self.flush().await.is_ok() {
            self.close().await;
        }
    }

    /// Closes after the last response: shuts the write side, then briefly
    /// reads and discards what the peer still sends, so that unread request
    /// bytes do not make the kernel answer with a reset that would destroy
    /// the response in flight.
    async fn close(&mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.writer.shutdown().await;
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let deadline = Instant::now() + LINGER;
        let mut discarded = 0usize;
        while discarded < 1024 * 1024 {
            reader.consume(reader.buffered().len());
            match timeout_at(deadline, reader.fill()).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }
}

/// Calls the handler; a panic, whether while building its future or while
/// polling it, becomes a 500 for this request only.
async fn call_handler(handler: &dyn Handler, request: Request) -> Response {
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request))) {
        Ok(f) => f,
        Err(panic) => return panic_response(panic),
    };
    match (CatchUnwind { inner: future }).await {
        Ok(response) => response,
        Err(panic) => panic_response(panic),
    }
}

fn panic_response(panic: Box<dyn Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    log::error!("http: request handler panicked: {message}");
    Response::error(
        500,
        "internal",
        "internal error: the request handler failed",
    )
}

/// Polls a future, catching a panic as an error.
struct CatchUnwind<F> {
    inner: F,
}

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
