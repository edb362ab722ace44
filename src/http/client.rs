//! A pooled HTTP/1.1 client for peer RPCs, forwarding to the leader and
//! the tools' client ([`crate::client`]).
//!
//! Each [`Client`] keeps idle keep-alive connections per `host:port` and reuses
//! the most recent one first. A pooled connection can have been closed by the
//! server since its last use (idle timeout, restart); when that is found out
//! before any response byte arrives, an idempotent request with a replayable
//! body is retried once on a fresh connection, transparently. Everything else
//! is reported to the caller, who knows whether a retry is safe.
//!
//! A connection goes back to the pool only when its response body has been
//! read to the end, so the caller streams (or collects) the body and the pool
//! never holds a connection with unread bytes. Callers that must not queue
//! behind each other (Raft heartbeats behind a snapshot upload) use separate
//! pools: [`Client::separate_pool`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::Error;
use super::body::{Body, ConnReader, Decoder, Incoming};
use super::encode::{header_is_safe, is_framing_header, push_hex, push_u64};
use super::framing::{ChunkedDecoder, Framing, response_framing};
use super::head::{
    HeadError, HeadKind, HeadParser, Headers, Limits, Method, RawHead, Version, check_status_line,
};
use super::response::HeaderText;
use super::tls::ClientTls;

/// How long to look for an early answer after the server stopped taking a
/// request body.
const EARLY_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Client timeouts and pool bounds.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Time to establish a TCP connection. Default 3 s.
    pub connect_timeout: Duration,
    /// Time from sending a request to receiving the response head, unless
    /// the request sets its own. Default 30 s.
    pub request_timeout: Duration,
    /// How long one read of a response body may wait for data. Default 30 s.
    pub body_read_timeout: Duration,
    /// Pooled connections idle longer than this are not reused. Keep it below
    /// the servers' keep-alive timeout. Default 30 s.
    pub idle_timeout: Duration,
    /// Most idle connections kept per host. Default 32.
    pub max_idle_per_host: usize,
    /// Largest response head accepted. Default 64 KiB.
    pub max_response_head: usize,
    /// TLS: used for `https://` URLs and for bare `host:port` ones. Without
    /// it, `https://` URLs are refused.
    pub tls: Option<Arc<ClientTls>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 32,
            max_response_head: 64 * 1024,
            tls: None,
        }
    }
}

/// An HTTP/1.1 client with a keep-alive pool. Cloning shares the pool.
///
/// ```no_run
/// # async fn example() -> Result<(), ferrium::http::Error> {
/// use ferrium::http::{Client, ClientConfig, ClientRequest, Method};
///
/// let client = Client::new(ClientConfig::default());
/// let resp = client.get("http://127.0.0.1:8001/health").await?;
/// let body = resp.collect(1 << 20).await?;
///
/// let req = ClientRequest::new(Method::Post, "http://node2:8001/write")?
///     .header("content-type", "application/json")
///     .body(r#"{"Set":{"key":"k","value":"v"}}"#);
/// let resp = client.send(req).await?;
/// assert_eq!(resp.status(), 200);
///
/// // Snapshots go through their own pool so heartbeats never wait behind them.
/// let snapshots = client.separate_pool();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    pool: Mutex<HashMap<String, Vec<IdleConn>>>,
}

type Writer = Box<dyn AsyncWrite + Unpin + Send>;

struct IdleConn {
    reader: ConnReader,
    writer: Writer,
    since: Instant,
}

/// The scheme a URL named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    /// A bare `host:port`: TLS when the client has it.
    Default,
}

/// A request to send: method, URL, extra headers, body, optional timeout.
pub struct ClientRequest {
    method: Method,
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
    headers: Vec<(HeaderText, HeaderText)>,
    body: Body,
    timeout: Option<Duration>,
}

impl ClientRequest {
    /// A request for `url`: `http://host[:port][/path][?query]`, the same
    /// with `https://`, or without a scheme (peers are known by
    /// `host:port`; the client then uses TLS if it has it).
    pub fn new(method: Method, url: &str) -> Result<ClientRequest, Error> {
        let invalid = || Error::InvalidUrl(url.to_string());
        let (scheme, rest) = match url.find("://") {
            Some(i) if url[..i].eq_ignore_ascii_case("http") => (Scheme::Http, &url[i + 3..]),
            Some(i) if url[..i].eq_ignore_ascii_case("https") => (Scheme::Https, &url[i + 3..]),
            Some(_) => return Err(invalid()),
            None => (Scheme::Default, url),
        };
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path.as_bytes().first() {
            None => "/".to_string(),
            Some(b'?') => format!("/{path}"),
            Some(_) => path.to_string(),
        };
        if path.bytes().any(|b| !(b'!'..=b'~').contains(&b)) || path.contains('#') {
            return Err(invalid());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(invalid)?;
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(invalid)?,
            };
            (format!("[{}]", &v6[..end]), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| invalid())?),
                None => (authority.to_string(), default_port),
            }
        };
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
                })
        };
        if !host_ok(&host) {
            return Err(invalid());
        }
        Ok(ClientRequest {
            method,
            scheme,
            host,
            port,
            path,
            headers: Vec::new(),
            body: Body::Empty,
            timeout: None,
        })
    }

    /// Adds a header field. `Host` and the framing fields are the client's to set.
    pub fn header(
        mut self,
        name: impl Into<HeaderText>,
        value: impl Into<HeaderText>,
    ) -> ClientRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header field called `name` set on this
    /// request (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Sets the body: bytes, or [`Body::stream`] / [`Body::sized_stream`].
    pub fn body(mut self, body: impl Into<Body>) -> ClientRequest {
        self.body = body.into();
        self
    }

    /// Overrides [`ClientConfig::request_timeout`] for this request (e.g. a
    /// large streamed upload).
    pub fn timeout(mut self, t: Duration) -> ClientRequest {
        self.timeout = Some(t);
        self
    }

    fn pool_key(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// A response: status, headers and a body to stream or collect.
#[derive(Debug)]
pub struct ClientResponse {
    status: u16,
    version: Version,
    headers: Headers,
    body: Incoming,
}

impl ClientResponse {
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body, to read as a stream (it implements `AsyncRead`).
    pub fn body_mut(&mut self) -> &mut Incoming {
        &mut self.body
    }

    pub fn into_body(self) -> Incoming {
        self.body
    }

    /// Reads the whole body; more than `max` bytes is [`Error::BodyTooLarge`].
    pub async fn collect(self, max: usize) -> Result<Vec<u8>, Error> {
        self.body.collect(max).await
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                config,
                pool: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A client with the same settings and a pool of its own.
    pub fn separate_pool(&self) -> Client {
        Client::new(self.inner.config.clone())
    }

    /// The number of idle pooled connections (all hosts).
    pub fn idle_connections(&self) -> usize {
        self.inner
            .pool
            .lock()
            .map(|p| p.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<ClientResponse, Error> {
        self.send(ClientRequest::new(Method::Get, url)?).await
    }

    /// `POST url` with a body of the given content type.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: impl Into<Body>,
    ) -> Result<ClientResponse, Error> {
        let req = ClientRequest::new(Method::Post, url)?
            .header("content-type", content_type)
            .body(body);
        self.send(req).await
    }

    /// Sends a request and returns once the response head has arrived.
    pub async fn send(&self, mut req: ClientRequest) -> Result<ClientResponse, Error> {
        let limit = req.timeout.unwrap_or(self.inner.config.request_timeout);
        match timeout(limit, self.exchange(&mut req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout("no response in time")),
        }
    }

    /// Whether `req` goes over TLS; an `https://` URL without TLS set up is
    /// an error rather than a silent downgrade.
    fn use_tls(&self, req: &ClientRequest) -> Result<Option<Arc<ClientTls>>, Error> {
        match (req.scheme, &self.inner.config.tls) {
            (Scheme::Http, _) | (Scheme::Default, None) => Ok(None),
            (Scheme::Https | Scheme::Default, Some(tls)) => Ok(Some(tls.clone())),
            (Scheme::Https, None) => Err(Error::InvalidUrl(format!(
                "https://{}:{} (this client has no TLS configuration)",
                req.host, req.port
            ))),
        }
    }

    async fn exchange(&self, req: &mut ClientRequest) -> Result<ClientResponse, Error> {
        let tls = self.use_tls(req)?;
        let key = req.pool_key(tls.is_some());
        let replayable = req.method.is_idempotent() && !matches!(req.body, Body::Stream { .. });
        if let Some(conn) = self.checkout(&key) {
            match self.exchange_on(conn, req, &key).await {
                Err(e) if replayable && e.is_connection_lost() => {
                    log::debug!(
                        "http client: pooled connection to {key} was closed ({e}); retrying once"
                    );
                }
                other => return other,
            }
        }
        let conn = self
            .connect(req.connect_host().to_string(), req.port, tls)
            .await?;
        self.exchange_on(conn, req, &key).await
    }

    /// Takes the most recently used live connection to `key` from the pool.
    fn checkout(&self, key: &str) -> Option<IdleConn> {
        let mut pool = self.inner.pool.lock().ok()?;
        let idle = pool.get_mut(key)?;
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < self.inner.config.idle_timeout && !is_closed(&mut conn.reader)
            {
                return Some(conn);
            }
        }
        None
    }

    /// Takes the host by value so that the request (whose body need not be
    /// `Sync`) is not borrowed across the await: client futures stay `Send`.
    async fn connect(
        &self,
        host: String,
        port: u16,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<IdleConn, Error> {
        let connect = async {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            let _ = stream.set_nodelay(true);
            let Some(tls) = tls else {
                let (r, w) = stream.into_split();
                return Ok::<_, std::io::Error>(IdleConn {
                    reader: ConnReader::new(Box::new(r), Vec::new()),
                    writer: Box::new(w),
                    since: Instant::now(),
                });
            };
            let io = tls.connect(&host, stream).await?;
            let (r, w) = tokio::io::split(io);
            Ok(IdleConn {
                reader: ConnReader::new(Box::new(r), Vec::new()),
                writer: Box::new(w),
                since: Instant::now(),
            })
        };
        match timeout(self.inner.config.connect_timeout, connect).await {
            Ok(conn) => conn.map_err(Error::Connect),
            Err(_) => Err(Error::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection within {} ms",
                    self.inner.config.connect_timeout.as_millis()
                ),
            ))),
        }
    }

    /// Sends `req` on `conn` and reads the response head.
    async fn exchange_on(
        &self,
        mut conn: IdleConn,
        req: &mut ClientRequest,
        key: &str,
    ) -> Result<ClientResponse, Error> {
        let (raw, version, status, early) = match self.write_request(&mut conn.writer, req).await {
            Ok(()) => {
                let (raw, version, status) = self.read_head(&mut conn.reader).await?;
                (raw, version, status, false)
            }
            // The server may have answered before taking the whole body (a
            // 413, say) and closed: its answer says more than a broken pipe.
            Err(write_error) => {
                match timeout(EARLY_ANSWER_WAIT, self.read_head(&mut conn.reader)).await {
                    Ok(Ok((raw, version, status))) => (raw, version, status, true),
                    _ => return Err(write_error),
                }
            }
        };
        let headers = raw.headers;
        let framing = response_framing(&req.method, status, &headers)?;
        let keep_alive = match version {
            Version::Http11 => !headers.has_token("connection", "close"),
            Version::Http10 => headers.has_token("connection", "keep-alive"),
        } && framing != Framing::UntilClose
            && !early;

        let decoder = match framing {
            Framing::None => {
                if keep_alive {
                    self.checkin(key, conn.reader, conn.writer);
                }
                return Ok(ClientResponse {
                    status,
                    version,
                    headers,
                    body: Incoming::empty(),
                });
            }
            Framing::Length(n) => {
                // A small body that arrived with its head: the connection can
                // go back to the pool before the caller even reads it.
                let whole = usize::try_from(n).ok();
                if let Some(data) = whole.and_then(|n| conn.reader.buffered().get(..n)) {
                    let data = data.to_vec();
                    conn.reader.consume(data.len());
                    if keep_alive {
                        self.checkin(key, conn.reader, conn.writer);
                    }
                    return Ok(ClientResponse {
                        status,
                        version,
                        headers,
                        body: Incoming::full(data),
                    });
                }
                Decoder::Length(n)
            }
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::new(
                self.inner.config.max_response_head,
                u64::MAX,
            )),
            Framing::UntilClose => Decoder::UntilClose,
        };
        conn.reader
            .set_idle_timeout(Some(self.inner.config.body_read_timeout));
        let inner = Arc::downgrade(&self.inner);
        let key = key.to_string();
        let writer = conn.writer;
        let on_done = Box::new(move |mut reader: ConnReader, clean: bool| {
            if clean && keep_alive {
                if let Some(inner) = inner.upgrade() {
                    reader.set_idle_timeout(None);
                    Client { inner }.checkin(&key, reader, writer);
                }
            }
        });
        Ok(ClientResponse {
            status,
            version,
            headers,
            body: Incoming::stream(conn.reader, decoder, u64::MAX, on_done),
        })
    }

    /// Reads a response head, skipping interim (1xx) responses.
    async fn read_head(&self, reader: &mut ConnReader) -> Result<(RawHead, Version, u16), Error> {
        let limits = Limits {
            max_line: 8 * 1024,
            max_header_bytes: self.inner.config.max_response_head,
            max_headers: 256,
        };
        let mut parser = HeadParser::new(HeadKind::Response, limits);
        loop {
            let parsed = if reader.buffered().is_empty() {
                None
            } else {
                parser
                    .parse(reader.buffered())
                    .map_err(HeadError::in_response)?
            };
            let Some((raw, n)) = parsed else {
                if reader.fill().await? == 0 {
                    return Err(Error::Closed);
                }
                continue;
            };
            reader.consume(n);
            let (version, status) =
                check_status_line(raw.first_line()).map_err(HeadError::in_response)?;
            if status == 101 {
                return Err(Error::BadResponse("unexpected protocol switch"));
            }
            if (100..200).contains(&status) {
                parser.reset();
                continue;
            }
            return Ok((raw, version, status));
        }
    }

    /// Returns a connection whose last response was read to its end.
    fn checkin(&self, key: &str, reader: ConnReader, writer: Writer) {
        if !reader.buffered().is_empty() {
            return; // The server sent more than its response: not trustworthy.
        }
        let Ok(mut pool) = self.inner.pool.lock() else {
            return;
        };
        let idle = pool.entry(key.to_string()).or_default();
        if idle.len() < self.inner.config.max_idle_per_host {
            idle.push(IdleConn {
                reader,
                writer,
                since: Instant::now(),
            });
        }
    }

    async fn write_request(&self, w: &mut Writer, req: &mut ClientRequest) -> Result<(), Error> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(req.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(req.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(req.host.as_bytes());
        if req.port != 80 {
            out.push(b':');
            push_u64(&mut out, u64::from(req.port));
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &req.headers {
            if is_framing_header(name)
                || name.eq_ignore_ascii_case("host")
                || !header_is_safe(name, value)
            {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let chunked = req.body.known_length().is_none();
        match req.body.known_length() {
            Some(0) if !matches!(req.method, Method::Post | Method::Put | Method::Patch) => {}
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                push_u64(&mut out, n);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        match &mut req.body {
            Body::Empty => w.write_all(&out).await?,
            Body::Bytes(b) => {
                if b.len() <= 64 * 1024 {
                    out.extend_from_slice(b);
                    w.write_all(&out).await?;
                } else {
                    w.write_all(&out).await?;
                    w.write_all(b).await?;
                }
            }
            Body::Stream { reader, length } => {
                w.write_all(&out).await?;
                let mut left = *length;
                let mut buf = vec![0u8; 64 * 1024];
                let mut frame = Vec::with_capacity(buf.len() + 16);
                loop {
                    let want = left.map_or(buf.len(), |l| {
                        buf.len().min(usize::try_from(l).unwrap_or(usize::MAX))
                    });
                    if want == 0 {
                        break;
                    }
                    let n = reader.read(&mut buf[..want]).await?;
                    if n == 0 {
                        if left.is_some() {
                            return Err(Error::Io(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "request body ended before its length",
                            )));
                        }
                        break;
                    }
                    if chunked {
                        frame.clear();
                        push_hex(&mut frame, n as u64);
                        frame.extend_from_slice(b"\r\n");
                        frame.extend_from_slice(&buf[..n]);
                        frame.extend_from_slice(b"\r\n");
                        w.write_all(&frame).await?;
                    } else {
                        w.write_all(&buf[..n]).await?;
                    }
                    if let Some(l) = left.as_mut() {
                        *l -= n as u64;
                    }
                }
                if chunked {
                    w.write_all(b"0\r\n\r\n").await?;
                }
            }
        }
        // A no-op on TCP; TLS may hold encrypted bytes until flushed.
        w.flush().await?;
        Ok(())
    }
}

/// Whether a pooled connection is known to be unusable: the server closed it,
/// reset it, or sent bytes nobody asked for. Checked without waiting.
fn is_closed(reader: &mut ConnReader) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    !matches!(reader.poll_fill(&mut cx), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> Option<(String, u16, String)> {
        ClientRequest::new(Method::Get, url)
            .ok()
            .map(|r| (r.host, r.port, r.path))
    }

    #[tokio::test]
    async fn only_a_request_that_never_left_is_never_sent() {
        let client = Client::new(ClientConfig::default());
        // A port held by a socket that never listens: refused at connect.
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        held.bind(&any.into()).expect("bind");
        let addr = held
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound address");
        let refused = client
            .get(&format!("http://{addr}/x"))
            .await
            .expect_err("nothing listens");
        assert!(refused.is_never_sent(), "{refused}");
        // A server that takes the request and closes: it may have run it.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut conn, _)) = server.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            }
        });
        let cut = client
            .get(&format!("http://{addr}/x"))
            .await
            .expect_err("the server closes without answering");
        assert!(!cut.is_never_sent(), "{cut}");
        assert!(
            !Error::Timeout("no response in time").is_never_sent()
                && Error::InvalidUrl("x".into()).is_never_sent()
        );
    }

    #[test]
    fn urls_with_and_without_scheme() {
        let p = |h: &str, port, path: &str| Some((h.to_string(), port, path.to_string()));
        assert_eq!(
            parts("http://127.0.0.1:8001/write"),
            p("127.0.0.1", 8001, "/write")
        );
        assert_eq!(
            parts("HTTP://node-2.example/a?b=c"),
            p("node-2.example", 80, "/a?b=c")
        );
        assert_eq!(parts("node3:8001"), p("node3", 8001, "/"));
        assert_eq!(parts("node3:8001?x"), p("node3", 8001, "/?x"));
        assert_eq!(
            parts("http://[::1]:9000/raft/vote"),
            p("[::1]", 9000, "/raft/vote")
        );
        assert_eq!(parts("[fe80::1]/"), p("[fe80::1]", 80, "/"));
        assert_eq!(parts("https://a/x"), p("a", 443, "/x"));
        assert_eq!(parts("HTTPS://a:8443"), p("a", 8443, "/"));
        for bad in [
            "https:///",
            "ftp://a/",
            "http://a:99999/",
            "http://a:x/",
            "http:///x",
            "http://a b/",
            "http://a/b c",
            "http://a/\r\nX: y",
            "http://[::1/",
            "http://a/#frag",
        ] {
            assert!(parts(bad).is_none(), "{bad} was accepted");
        }
    }
}
