//! Ferrium's own HTTP/1.1 server and pooled client.
//!
//! The REST API and the Raft peer traffic both ride on this module, so it faces
//! curl, load balancers, scanners and hostile input on a public port while
//! carrying every replicated byte between peers. It owns:
//!
//! - [`head`]: message heads in either direction: the incremental parser
//!   (request and status lines, header fields, the smuggling defences), the
//!   method, version and header types, and a typed [`head::HeadError`] that
//!   each side turns into its own error;
//! - [`framing`]: body lengths (`Content-Length`, chunked, until close) for
//!   requests and responses, and the chunked decoder;
//! - [`encode`]: writing heads: status lines, framing headers, numbers and
//!   the cached `Date`;
//! - [`request`]: a request head checked for meaning (target, `Host`,
//!   keep-alive, `Expect`) and the [`Request`] a handler sees;
//! - [`body`]: message bodies, outgoing ([`Body`]: bytes or a stream) and
//!   incoming ([`Incoming`]: streamed from the socket, or collected with a limit);
//! - [`response`]: the [`Response`] a handler returns;
//! - [`json`]: strict JSON decoding of request bodies (no array for an object);
//! - [`router`]: exact path and method matching, 404 and 405 with `Allow`;
//! - [`server`]: the listener, connection lifecycle, limits, graceful shutdown and
//!   the HTTP/2 preface hand-off;
//! - [`client`]: a keep-alive connection pool per host for peers and tools;
//! - [`tls`]: rustls configurations for both sides, reloadable, ALPN choice,
//!   and the verified certificate a client presented.
//!
//! It never knows about Raft, keys, nodes or who may call what (the names in
//! a client's certificate are read by `auth`): it could be lifted out as its
//! own crate. Framework crates (hyper, axum) are deliberately not used: the
//! parser's strictness, the limits and the streaming of snapshot bodies are
//! ours to decide (README, "Hostile input"). The one exception is
//! [`TlsConnector`], which adapts our TLS client to tonic's.
//!
//! In short: build a [`Router`] of `async fn(Request) -> Response` handlers,
//! give it to [`Server::bind`], keep a [`ShutdownHandle`], and `run` the
//! server; errors are responses ([`Response::error`], [`Error::to_response`]).
//! Request bodies stream through `AsyncRead` on [`Request::body_mut`] or are
//! collected with a limit ([`Request::body_bytes`], [`Request::json`]);
//! responses carry bytes or a stream ([`Body`]). Peers talk through a
//! [`Client`], one per traffic class when they must not queue behind each
//! other ([`Client::separate_pool`]).

pub mod body;
pub mod client;
pub mod encode;
pub mod framing;
pub mod head;
pub mod json;
pub mod request;
pub mod response;
pub mod router;
pub mod server;
pub mod tls;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;

pub use body::{Body, Incoming};
pub use client::{Client, ClientConfig, ClientRequest, ClientResponse};
pub use request::{Headers, Method, Request, Version};
pub use response::Response;
pub use router::Router;
pub use server::{H2Connection, H2Handoff, Server, ServerConfig, ShutdownHandle};
pub use tls::{BoxIo, ClientTls, PeerCert, ServerTls, TlsConnector, TlsFiles};

/// A boxed, sendable future: what a [`Handler`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something that answers requests: a [`Router`], or any
/// `Fn(Request) -> impl Future<Output = Response>`.
///
/// A handler never fails: errors are responses (see [`Response::error`] and
/// [`Error::to_response`]). A panic inside a handler is caught by the server and
/// becomes a 500 for that request only.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: Request) -> BoxFuture<Response>;

    /// The largest request body this handler accepts for `method` and `path`,
    /// when it differs from the server's [`ServerConfig::max_body`] (the Raft
    /// snapshot route takes far more than a REST call). Asked before the body is
    /// read so that an oversized `Content-Length` gets its 413 at once, and
    /// before `100 Continue` is sent.
    fn body_limit(&self, _method: &Method, _path: &str) -> Option<u64> {
        None
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<Response> {
        Box::pin(self(req))
    }
}

/// Everything that can go wrong in this layer, on either side of a connection.
#[derive(Debug)]
pub enum Error {
    /// The peer sent a message we cannot trust (400 on the server side).
    BadRequest(&'static str),
    /// The request line is longer than allowed (414).
    UriTooLong,
    /// The header section is too large or has too many fields (431).
    HeadersTooLarge,
    /// The body is larger than allowed (413).
    BodyTooLarge,
    /// An `Expect` value other than `100-continue` (417).
    ExpectationFailed,
    /// An HTTP version other than 1.0 and 1.1 (505).
    VersionNotSupported,
    /// A deadline passed; says which one (408 on the server side).
    Timeout(&'static str),
    /// The peer closed the connection before a complete message.
    Closed,
    /// A server answered with something that is not a valid HTTP/1.x response.
    BadResponse(&'static str),
    /// A URL the client cannot use.
    InvalidUrl(String),
    /// An I/O error on the socket.
    Io(io::Error),
    /// A client could not open a connection (name lookup, TCP connect, TLS
    /// handshake, or the connect timeout): the request was never sent.
    Connect(io::Error),
}

impl Error {
    /// The status a server answers with when this error ends a request.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::UriTooLong => 414,
            Error::HeadersTooLarge => 431,
            Error::BodyTooLarge => 413,
            Error::ExpectationFailed => 417,
            Error::VersionNotSupported => 505,
            Error::Timeout(_) => 408,
            Error::Closed | Error::Io(_) => 400,
            Error::BadResponse(_) | Error::Connect(_) => 502,
            Error::InvalidUrl(_) => 400,
        }
    }

    /// The machine-readable `code` of the JSON error body (README, "REST API").
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::Closed | Error::Io(_) | Error::InvalidUrl(_) => {
                "invalid_request"
            }
            Error::UriTooLong => "uri_too_long",
            Error::HeadersTooLarge => "headers_too_large",
            Error::BodyTooLarge => "payload_too_large",
            Error::ExpectationFailed => "expectation_failed",
            Error::VersionNotSupported => "version_not_supported",
            Error::Timeout(_) => "request_timeout",
            Error::BadResponse(_) | Error::Connect(_) => "bad_gateway",
        }
    }

    /// The JSON error response for this error.
    pub fn to_response(&self) -> Response {
        Response::error(self.status(), self.code(), self)
    }

    /// Whether the request certainly never left this machine: no connection
    /// could be opened, or the URL was unusable. Only then may a write be
    /// sent elsewhere without risking that it is applied twice.
    pub fn is_never_sent(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::InvalidUrl(_))
    }

    /// Whether a deadline passed: the request's own, or the connect timeout.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Connect(e) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Whether this error means a connection could not be used at all (closed,
    /// reset), as opposed to a protocol or timeout failure.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Closed => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::UriTooLong => f.write_str("request line too long"),
            Error::HeadersTooLarge => f.write_str("request header fields too large"),
            Error::BodyTooLarge => f.write_str("body too large"),
            Error::ExpectationFailed => f.write_str("unsupported Expect value"),
            Error::VersionNotSupported => f.write_str("HTTP version not supported"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Closed => f.write_str("connection closed before a complete message"),
            Error::BadResponse(why) => write!(f, "invalid HTTP response: {why}"),
            Error::InvalidUrl(url) => write!(f, "invalid URL {url:?}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Connect(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    /// Unwraps an [`Error`] that travelled through an `io::Error` (body reads
    /// report framing and limit violations that way).
    fn from(e: io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(err) = inner.downcast::<Error>() {
                    return *err;
                }
            }
            return Error::BadRequest("body error");
        }
        if e.kind() == io::ErrorKind::TimedOut {
            return Error::Timeout("read");
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return Error::Closed;
        }
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
