//! Message bodies: what we send ([`Body`]) and what we receive ([`Incoming`]).
//!
//! An incoming body is either already in memory (small bodies that arrived with
//! their head) or streamed straight from the connection: the connection's read
//! side is lent to the [`Incoming`] and handed back when the body has been read
//! to its end or dropped. That is what lets a Raft snapshot of hundreds of MB
//! flow to disk through a fixed buffer, and lets the same connection carry the
//! next request afterwards. Bodies are framed by length, by the chunked coding
//! (decoded here, trailers checked and dropped) or, for responses only, by the
//! connection closing.

use std::borrow::Cow;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Sleep;

use super::Error;
use super::framing::ChunkedDecoder;

/// A boxed byte source.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// How much the read buffer asks the socket for at once.
const READ_CHUNK: usize = 16 * 1024;

/// An outgoing body: a response from the server or a request from the client.
pub enum Body {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Bytes in memory, sent with `Content-Length`.
    Bytes(Cow<'static, [u8]>),
    /// Bytes produced by a reader: with a known `length` they are sent with
    /// `Content-Length` (the reader must produce exactly that many), otherwise
    /// with the chunked coding.
    Stream {
        reader: BoxRead,
        length: Option<u64>,
    },
}

impl Body {
    pub fn empty() -> Body {
        Body::Empty
    }

    /// A streamed body of unknown length (sent chunked).
    pub fn stream(reader: impl AsyncRead + Send + Unpin + 'static) -> Body {
        Body::Stream {
            reader: Box::new(reader),
            length: None,
        }
    }

    /// A streamed body of known length (sent with `Content-Length`).
    pub fn sized_stream(reader: impl AsyncRead + Send + Unpin + 'static, length: u64) -> Body {
        Body::Stream {
            reader: Box::new(reader),
            length: Some(length),
        }
    }

    /// The length, when known without reading.
    pub fn known_length(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Stream { length, .. } => *length,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::Stream { length, .. } => write!(f, "Body::Stream({length:?})"),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::Bytes(Cow::Owned(v))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Bytes(Cow::Owned(s.into_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Body {
        Body::Bytes(Cow::Borrowed(b))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::Bytes(Cow::Borrowed(s.as_bytes()))
    }
}

/// The read side of a connection with its buffer. Lent to an [`Incoming`]
/// while a body streams.
pub(crate) struct ConnReader {
    io: BoxRead,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How long one read may wait for data while a body streams.
    idle_timeout: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
    /// The time a whole body has to arrive, while one streams.
    deadline: Option<DeadlineState>,
}

/// A total deadline for receiving a body: `base` from the first read, plus
/// one second for every `min_rate` bytes received. A client that trickles
/// a byte just inside the idle timeout cannot hold a connection forever,
/// while a large body (a Raft snapshot) sent at any sane rate keeps
/// earning time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyDeadline {
    pub(crate) base: Duration,
    /// Bytes per second; 0 means the deadline never grows.
    pub(crate) min_rate: u64,
}

struct DeadlineState {
    limit: BodyDeadline,
    started: Option<tokio::time::Instant>,
    received: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl DeadlineState {
    fn at(&mut self) -> tokio::time::Instant {
        let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
        let earned = match self.limit.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(self.received.saturating_mul(1000) / rate),
        };
        started + self.limit.base + earned
    }
}

fn body_timed_out() -> io::Error {
    Error::Timeout("request body not received in time").into()
}

impl ConnReader {
    /// Wraps `io`; `initial` holds bytes already read from it.
    pub(crate) fn new(io: BoxRead, initial: Vec<u8>) -> ConnReader {
        let end = initial.len();
        ConnReader {
            io,
            buf: initial,
            start: 0,
            end,
            idle_timeout: None,
            idle: None,
            deadline: None,
        }
    }

    pub(crate) fn set_idle_timeout(&mut self, t: Option<Duration>) {
        self.idle_timeout = t;
        self.idle = None;
    }

    /// Starts (or, with `None`, ends) a total deadline for the body about to
    /// be read; it runs from the first read that needs the socket.
    pub(crate) fn set_deadline(&mut self, d: Option<BodyDeadline>) {
        self.deadline = d.map(|limit| DeadlineState {
            limit,
            started: None,
            received: 0,
            sleep: None,
        });
    }

    /// The received bytes not consumed yet.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from the socket into the buffer; `Ok(0)` is end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            let grown = (self.end + READ_CHUNK).max(self.buf.len());
            self.buf.resize(grown, 0);
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.end += n;
                self.idle = None;
                if let Some(d) = self.deadline.as_mut() {
                    d.received = d.received.saturating_add(n as u64);
                    d.sleep = None;
                    if n > 0 && tokio::time::Instant::now() > d.at() {
                        return Poll::Ready(Err(body_timed_out()));
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(d) = self.deadline.as_mut() {
                    let at = d.at();
                    let sleep = d
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        d.sleep = None;
                        return Poll::Ready(Err(body_timed_out()));
                    }
                }
                if let Some(limit) = self.idle_timeout {
                    let sleep = self
                        .idle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        self.idle = None;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no data received in time",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }

    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// How the rest of a streamed body is delimited.
#[derive(Debug)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Called once with the connection's read side when a streamed body ends
/// (`true`: read to its end, the connection may carry another message) or is
/// dropped early or fails (`false`).
pub(crate) type OnDone = Box<dyn FnOnce(ConnReader, bool) + Send>;

/// A received body: a request body on the server, a response body on the client.
///
/// Read it as a stream through `AsyncRead` (e.g. `tokio::io::copy` into a
/// file), or all at once with [`Incoming::collect`].
pub struct Incoming {
    kind: Kind,
}

enum Kind {
    Empty,
    Full { data: Vec<u8>, pos: usize },
    Stream(Box<Stream>),
}

struct Stream {
    conn: Option<ConnReader>,
    decoder: Decoder,
    limit: u64,
    received: u64,
    on_done: Option<OnDone>,
}

impl Incoming {
    /// A body with no bytes.
    pub fn empty() -> Incoming {
        Incoming { kind: Kind::Empty }
    }

    pub(crate) fn full(data: Vec<u8>) -> Incoming {
        if data.is_empty() {
            return Incoming::empty();
        }
        Incoming {
            kind: Kind::Full { data, pos: 0 },
        }
    }

    /// A body streamed from `conn`; at most `limit` decoded bytes are accepted.
    pub(crate) fn stream(
        conn: ConnReader,
        decoder: Decoder,
        limit: u64,
        on_done: OnDone,
    ) -> Incoming {
        Incoming {
            kind: Kind::Stream(Box::new(Stream {
                conn: Some(conn),
                decoder,
                limit,
                received: 0,
                on_done: Some(on_done),
            })),
        }
    }

    /// The body's length when it is known in advance.
    pub fn length_hint(&self) -> Option<u64> {
        match &self.kind {
            Kind::Empty => Some(0),
            Kind::Full { data, pos } => Some((data.len() - pos) as u64),
            Kind::Stream(s) => match s.decoder {
                Decoder::Length(n) => Some(n),
                Decoder::Done => Some(0),
                _ => None,
            },
        }
    }

    /// Reads the whole body into memory; more than `max` bytes is
    /// [`Error::BodyTooLarge`] (the rest is not read).
    pub async fn collect(mut self, max: usize) -> Result<Vec<u8>, Error> {
        if let Kind::Full { data, pos } = &mut self.kind {
            if data.len() - *pos > max {
                return Err(Error::BodyTooLarge);
            }
            let mut data = std::mem::take(data);
            data.drain(..*pos);
            return Ok(data);
        }
        if self.length_hint().is_some_and(|n| n > max as u64) {
            return Err(Error::BodyTooLarge);
        }
        let hint = self.length_hint().and_then(|n| usize::try_from(n).ok());
        let mut out = Vec::with_capacity(hint.unwrap_or(0));
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.read(&mut chunk).await?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > max {
                return Err(Error::BodyTooLarge);
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads and discards the rest of the body.
    pub async fn discard(mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 8192];
        while self.read(&mut chunk).await? > 0 {}
        Ok(())
    }
}

impl Stream {
    fn finish(&mut self, clean: bool) {
        if let (Some(conn), Some(on_done)) = (self.conn.take(), self.on_done.take()) {
            on_done(conn, clean);
        }
    }

    fn fail(&mut self, e: Error) -> io::Error {
        self.decoder = Decoder::Done;
        self.finish(false);
        e.into()
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if matches!(self.decoder, Decoder::Done) {
                self.finish(true);
                return Poll::Ready(Ok(()));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let input = conn.buffered();
            if !input.is_empty() {
                let (used, written) = match &mut self.decoder {
                    Decoder::Length(remaining) => {
                        let n = input
                            .len()
                            .min(out.remaining())
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        out.put_slice(&input[..n]);
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            self.decoder = Decoder::Done;
                        }
                        (n, n)
                    }
                    Decoder::UntilClose => {
                        let n = input.len().min(out.remaining());
                        out.put_slice(&input[..n]);
                        (n, n)
                    }
                    Decoder::Chunked(d) => {
                        let room = out.initialize_unfilled();
                        match d.decode(input, room) {
                            Ok((used, written)) => {
                                out.advance(written);
                                if d.is_done() {
                                    self.decoder = Decoder::Done;
                                }
                                (used, written)
                            }
                            Err(e) => return Poll::Ready(Err(self.fail(e))),
                        }
                    }
                    Decoder::Done => (0, 0),
                };
                if let Some(conn) = self.conn.as_mut() {
                    conn.consume(used);
                }
                self.received += written as u64;
                if self.received > self.limit {
                    return Poll::Ready(Err(self.fail(Error::BodyTooLarge)));
                }
                if written > 0 {
                    if matches!(self.decoder, Decoder::Done) {
                        self.finish(true);
                    }
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    if matches!(self.decoder, Decoder::UntilClose) {
                        self.decoder = Decoder::Done;
                        self.finish(false);
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(self.fail(Error::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    let e = Error::from(e);
                    return Poll::Ready(Err(self.fail(e)));
                }
            }
        }
    }
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(Ok(())),
            Kind::Full { data, pos } => {
                let n = (data.len() - *pos).min(out.remaining());
                out.put_slice(&data[*pos..*pos + n]);
                *pos += n;
                Poll::Ready(Ok(()))
            }
            Kind::Stream(s) => s.poll_read(cx, out),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Kind::Stream(s) = &mut self.kind {
            let clean = matches!(s.decoder, Decoder::Done);
            s.finish(clean);
        }
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Incoming(length {:?})", self.length_hint())
    }
}
