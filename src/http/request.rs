//! The [`RequestHead`] (a parsed head checked for meaning: target, `Host`,
//! framing, keep-alive, `Expect`) and the [`Request`] a handler sees.
//!
//! The syntax of the head is checked in [`super::head`], its body framing in
//! [`super::framing`].

use std::net::SocketAddr;
use std::ops::Range;

use super::Error;
use super::body::Incoming;
use super::framing::{Framing, content_length_of, transfer_encoding_chunked};
use super::head::{HeadError, RawHead, check_request_line, is_valid_host, trim_ows};
pub use super::head::{Headers, Method, Version};
use super::response::Response;

/// A request head, checked for meaning as well as syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    /// The request target as sent.
    target: Range<usize>,
    /// The path part of the target (for absolute-form, without scheme and host).
    path: Range<usize>,
    query: Option<Range<usize>>,
    pub headers: Headers,
    pub framing: Framing,
    /// Whether the client wants the connection kept open afterwards.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
}

impl RequestHead {
    /// Checks the meaning of a syntactically valid request head.
    pub fn from_raw(raw: RawHead) -> Result<RequestHead, Error> {
        let line_start = raw.first_line.start;
        let rl = check_request_line(raw.first_line()).map_err(HeadError::in_request)?;
        let headers = raw.headers;
        let at = |r: Range<usize>| line_start + r.start..line_start + r.end;
        let method = Method::from_token(&headers.raw[at(rl.method.clone())]);
        let target = at(rl.target);
        let (path, query) = split_target(&headers.raw, target.clone(), &method)?;

        let host_count = headers.get_all("host").count();
        if host_count > 1 || (host_count == 0 && rl.version == Version::Http11) {
            return Err(Error::BadRequest("exactly one Host header is required"));
        }
        if headers.get_bytes("host").is_some_and(|h| !is_valid_host(h)) {
            return Err(Error::BadRequest(
                "invalid Host header: expected host[:port], e.g. Host: 10.0.0.1:8001",
            ));
        }

        let chunked = transfer_encoding_chunked(&headers)?;
        let length = content_length_of(&headers)?;
        let framing = match (chunked, length) {
            (true, Some(_)) => {
                return Err(Error::BadRequest(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            (true, None) if rl.version == Version::Http10 => {
                return Err(Error::BadRequest(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            (true, None) => Framing::Chunked,
            (false, Some(0)) | (false, None) => Framing::None,
            (false, Some(n)) => Framing::Length(n),
        };

        let keep_alive = match rl.version {
            Version::Http11 => !headers.has_token("connection", "close"),
            Version::Http10 => {
                headers.has_token("connection", "keep-alive")
                    && !headers.has_token("connection", "close")
            }
        };

        let mut expect_continue = false;
        if let Some(expect) = headers.get_bytes("expect") {
            if headers.get_all("expect").count() > 1
                || !trim_ows(expect).eq_ignore_ascii_case(b"100-continue")
            {
                return Err(Error::ExpectationFailed);
            }
            expect_continue = rl.version == Version::Http11;
        }

        Ok(RequestHead {
            method,
            version: rl.version,
            target,
            path,
            query,
            headers,
            framing,
            keep_alive,
            expect_continue,
        })
    }

    fn str_at(&self, r: &Range<usize>) -> &str {
        // The target is checked to be visible ASCII.
        std::str::from_utf8(&self.headers.raw[r.clone()]).unwrap_or("")
    }

    /// The path, e.g. `/write` (not percent-decoded).
    pub fn path(&self) -> &str {
        self.str_at(&self.path)
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_ref().map(|q| self.str_at(q))
    }

    /// The request target exactly as sent.
    pub fn target(&self) -> &str {
        self.str_at(&self.target)
    }
}

/// Splits a request target into path and query; accepts origin-form
/// (`/p?q`), absolute-form (`http://host/p?q`) and `*` for OPTIONS.
fn split_target(
    raw: &[u8],
    target: Range<usize>,
    method: &Method,
) -> Result<(Range<usize>, Option<Range<usize>>), Error> {
    let t = &raw[target.clone()];
    if t == b"*" {
        if *method != Method::Options {
            return Err(Error::BadRequest("asterisk target outside OPTIONS"));
        }
        return Ok((target, None));
    }
    if t.contains(&b'#') {
        return Err(Error::BadRequest("fragment in request target"));
    }
    let mut start = target.start;
    if t.first() != Some(&b'/') {
        let lower = |p: &[u8]| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p);
        let scheme = if lower(b"http://") {
            7
        } else if lower(b"https://") {
            8
        } else {
            return Err(Error::BadRequest("invalid request target"));
        };
        match t[scheme..].iter().position(|&b| b == b'/' || b == b'?') {
            Some(p) if t[scheme + p] == b'/' => start = target.start + scheme + p,
            // `http://host` or `http://host?q`: the path is empty; use "*"-less root.
            _ => return Err(Error::BadRequest("absolute target without path")),
        }
    }
    let rest = &raw[start..target.end];
    match rest.iter().position(|&b| b == b'?') {
        Some(q) => Ok((start..start + q, Some(start + q + 1..target.end))),
        None => Ok((start..target.end, None)),
    }
}

/// A request as a handler sees it: the head, the body (streamed or already
/// buffered) and the peer's address.
pub struct Request {
    head: RequestHead,
    body: Incoming,
    remote_addr: SocketAddr,
    peer: Option<std::sync::Arc<super::PeerCert>>,
}

impl Request {
    pub(crate) fn new(
        head: RequestHead,
        body: Incoming,
        remote_addr: SocketAddr,
        peer: Option<std::sync::Arc<super::PeerCert>>,
    ) -> Request {
        Request {
            head,
            body,
            remote_addr,
            peer,
        }
    }

    /// The verified client certificate of the connection (TLS with client
    /// certificates), if one was presented.
    pub fn peer_cert(&self) -> Option<&super::PeerCert> {
        self.peer.as_deref()
    }

    pub fn method(&self) -> &Method {
        &self.head.method
    }

    pub fn path(&self) -> &str {
        self.head.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.head.query()
    }

    pub fn target(&self) -> &str {
        self.head.target()
    }

    pub fn version(&self) -> Version {
        self.head.version
    }

    pub fn headers(&self) -> &Headers {
        &self.head.headers
    }

    /// The first value of header `name`, if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name)
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The body, to read as a stream (it implements `AsyncRead`).
    pub fn body_mut(&mut self) -> &mut Incoming {
        &mut self.body
    }

    /// Takes the body out, leaving an empty one.
    pub fn take_body(&mut self) -> Incoming {
        std::mem::replace(&mut self.body, Incoming::empty())
    }

    /// Reads the whole body into memory, failing with
    /// [`Error::BodyTooLarge`] beyond `max` bytes.
    pub async fn body_bytes(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        self.take_body().collect(max).await
    }

    /// Reads the body (at most `max` bytes) and parses it as JSON (strictly:
    /// see [`super::json`]). The error is the response to send: 413
    /// `payload_too_large`, or 400 `invalid_request` saying what is wrong
    /// with the JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &mut self,
        max: usize,
    ) -> Result<T, Response> {
        let body = self.body_bytes(max).await.map_err(|e| e.to_response())?;
        super::json::from_slice(&body)
            .map_err(|e| Response::error(400, "invalid_request", format!("invalid JSON body: {e}")))
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.head.method)
            .field("target", &self.head.target())
            .field("version", &self.head.version)
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::framing::tests::decode_pieces;
    use crate::http::head::{HeadParser, Limits};
    use crate::rng::Rng;

    const LIMITS: Limits = Limits {
        max_line: 256,
        max_header_bytes: 512,
        max_headers: 16,
    };

    /// The outcome of parsing, comparable across runs.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Incomplete,
        Head(Box<RequestHead>, usize),
        Error(String),
    }

    fn outcome(r: Result<Option<(RawHead, usize)>, HeadError>) -> Outcome {
        match r.map_err(HeadError::in_request) {
            Ok(None) => Outcome::Incomplete,
            Ok(Some((raw, n))) => match RequestHead::from_raw(raw) {
                Ok(h) => Outcome::Head(Box::new(h), n),
                Err(e) => Outcome::Error(format!("{e:?}")),
            },
            Err(e) => Outcome::Error(format!("{e:?}")),
        }
    }

    fn parse_whole(input: &[u8]) -> Outcome {
        outcome(HeadParser::request(LIMITS).parse(input))
    }

    /// Feeds `input` in pieces ending at each of `cuts`, then the whole.
    fn parse_pieces(input: &[u8], cuts: &[usize]) -> Outcome {
        let mut p = HeadParser::request(LIMITS);
        for &cut in cuts {
            match p.parse(&input[..cut]) {
                Ok(None) => {}
                other => return outcome(other),
            }
        }
        outcome(p.parse(input))
    }

    fn samples() -> Vec<Vec<u8>> {
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(600)
        );
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(300));
        let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        [
            &b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"[..],
            b"GET /health?verbose=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
            b"\r\n\r\nPOST /write HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://h:1/abs?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9 \t\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            long_header.as_bytes(),
            long_line.as_bytes(),
            many.as_bytes(),
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect()
    }

    #[test]
    fn host_values_follow_rfc_9112() {
        for ok in [
            "a",
            "example.com",
            "example.com:8001",
            "10.0.0.1:8001",
            "[::1]",
            "[::1]:8001",
            "[fe80::1%25eth0]",
            "xn--caf-dma.example",
            "a%2Db",
            "host:",
            "",
        ] {
            assert!(is_valid_host(ok.as_bytes()), "{ok:?} refused");
        }
        for bad in [
            "a b",
            "a\tb",
            "exa/mple",
            "user@host",
            "host:80:81",
            "host:8o",
            "[::1",
            "[]",
            "[::1]x",
            "a%zz",
            "a%2",
            "caf\u{e9}",
            "a\\b",
            "a\"b",
            "<a>",
            "a?b",
            "a#b",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} accepted");
        }
    }

    #[test]
    fn sample_heads_parse_as_expected() {
        let r = parse_whole(b"GET /health?verbose=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        let Outcome::Head(h, n) = r else {
            panic!("not a head")
        };
        assert_eq!(n, 43);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/health");
        assert_eq!(h.query(), Some("verbose=1"));
        assert!(h.keep_alive);
        let Outcome::Head(h, _) =
            parse_whole(b"GET http://h:1/abs?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(h.path(), "/abs");
        assert!(!h.keep_alive);
        let Outcome::Head(h, _) = parse_whole(&samples()[3]) else {
            panic!()
        };
        assert_eq!(h.framing, Framing::Chunked);
        assert!(matches!(
            parse_whole(b"GET / HTTP/1.1\nHost: a\n\n"),
            Outcome::Error(_)
        ));
        assert_eq!(
            parse_whole(b"GET / HTTP/2.0\r\n"),
            Outcome::Error("VersionNotSupported".into())
        );
        assert_eq!(
            parse_whole(&samples()[21]),
            Outcome::Error("HeadersTooLarge".into())
        );
        assert_eq!(
            parse_whole(&samples()[22]),
            Outcome::Error("UriTooLong".into())
        );
        assert_eq!(
            parse_whole(&samples()[23]),
            Outcome::Error("HeadersTooLarge".into())
        );
    }

    #[test]
    fn split_at_every_byte_parses_identically() {
        for sample in samples() {
            let whole = parse_whole(&sample);
            for cut in 0..=sample.len() {
                assert_eq!(
                    parse_pieces(&sample, &[cut]),
                    whole,
                    "split at {cut} of {:?}",
                    String::from_utf8_lossy(&sample)
                );
            }
            let every: Vec<usize> = (0..=sample.len()).collect();
            assert_eq!(parse_pieces(&sample, &every), whole);
        }
    }

    const INTERESTING: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"\t",
        b":",
        b"\0",
        b"\x7f",
        b"\xff",
        b"chunked",
        b"Content-Length: ",
        b"Transfer-Encoding: ",
        b"-1",
        b"99999999999999999999",
        b"ffffffffffffffffff",
        b"0\r\n\r\n",
        b";",
        b"HTTP/1.1",
        b"Expect: 100-continue\r\n",
    ];

    fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..1 + rng.index(4) {
            let at = rng.index(v.len() + 1);
            match rng.index(6) {
                0 if !v.is_empty() => {
                    let i = rng.index(v.len());
                    v[i] = rng.next_u64() as u8;
                }
                1 if !v.is_empty() => {
                    let end = (at + rng.index(8)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                2 => {
                    let s = INTERESTING[rng.index(INTERESTING.len())];
                    v.splice(at..at, s.iter().copied());
                }
                3 if !v.is_empty() => {
                    let i = rng.index(v.len());
                    let b = v[i];
                    v.splice(at..at, std::iter::repeat_n(b, rng.index(300)));
                }
                4 => v.truncate(at),
                _ => v.insert(at, rng.next_u64() as u8),
            }
        }
        v
    }

    /// 100,000 mutated requests through the head parser and, when it accepts a
    /// chunked head, the chunked decoder: no panic, no hang, and a split feed
    /// agrees with a whole one. Seed from FERRIUM_FUZZ_SEED or the clock.
    #[test]
    fn mutated_requests_never_panic_or_hang() {
        let seed = std::env::var("FERRIUM_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(crate::rng::clock_seed);
        let result = std::panic::catch_unwind(|| fuzz(seed, 100_000));
        if let Err(panic) = result {
            eprintln!("fuzz failed; rerun with FERRIUM_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }

    fn fuzz(seed: u64, rounds: usize) {
        let started = std::time::Instant::now();
        let mut rng = Rng::new(seed);
        let bases = samples();
        let (mut heads, mut errors, mut incomplete, mut chunked) = (0, 0, 0, 0);
        for round in 0..rounds {
            let base = &bases[rng.index(bases.len())];
            let input = mutate(&mut rng, base);
            let whole = parse_whole(&input);
            if round % 8 == 0 {
                let cut = rng.index(input.len() + 1);
                assert_eq!(
                    parse_pieces(&input, &[cut]),
                    whole,
                    "seed {seed} round {round}"
                );
            }
            match &whole {
                Outcome::Head(..) => heads += 1,
                Outcome::Error(_) => errors += 1,
                Outcome::Incomplete => incomplete += 1,
            }
            if let Outcome::Head(head, n) = whole {
                if head.framing == Framing::Chunked {
                    chunked += 1;
                    let body = &input[n..];
                    let whole = decode_pieces(body, &[], 64);
                    let cut = rng.index(body.len() + 1);
                    assert_eq!(
                        decode_pieces(body, &[cut], 7),
                        whole,
                        "seed {seed} round {round}"
                    );
                }
            }
        }
        eprintln!(
            "fuzz seed {seed}: {rounds} requests in {:?}: {heads} heads ({chunked} chunked), \
             {errors} errors, {incomplete} incomplete",
            started.elapsed()
        );
    }
}
