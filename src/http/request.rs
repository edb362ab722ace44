//! The incremental message-head parser and the [`Request`] a handler sees.
//!
//! [`HeadParser`] is fed the bytes received so far, as often as new ones
//! arrive, and answers "need more", "complete (and this many bytes long)" or an
//! error. Every line is checked as soon as its LF arrives, so garbage gets its 400
//! at once instead of waiting for a timeout, and the limits (414, 431) are
//! enforced on partial input, so a peer can never make us buffer more than the
//! configured head size. The result is the same however the input is split.
//!
//! The parser is strict where leniency has been exploited for request smuggling
//! (RFC 9112 sections 2.2, 5, 6 and 11.2): lines end in CRLF only (no bare CR or
//! LF), no whitespace before a field's colon, no obsolete line folding, one
//! framing only (`Content-Length` or `Transfer-Encoding: chunked`, never both),
//! no conflicting lengths, no transfer coding other than `chunked`.
//!
//! A request with neither `Content-Length` nor `Transfer-Encoding` has an
//! empty body (RFC 9112 6.3), so `curl -X POST` without data is valid and a 411
//! is never needed at this layer.

use std::net::SocketAddr;
use std::ops::Range;

use super::Error;
use super::body::Incoming;
use super::response::Response;

/// A request method. The common ones are variants so that matching is cheap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    /// Any other syntactically valid method token.
    Other(String),
}

impl Method {
    /// Parses a method token (already checked to be a `token`).
    fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            other => Method::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// The method as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
            Method::Other(s) => s,
        }
    }

    /// Idempotent methods (RFC 9110 9.2.2) may be retried after a connection
    /// turned out to be dead before any response arrived.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The header fields of a received message, kept in the bytes they arrived in.
///
/// Names compare case-insensitively. Values are bytes (obs-text is legal);
/// [`Headers::get`] returns them as `str` when they are UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    raw: Vec<u8>,
    fields: Vec<Field>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.name.0 as usize..self.name.1 as usize]
    }
    fn value<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.value.0 as usize..self.value.1 as usize]
    }
}

impl Headers {
    /// The first value of `name`, if present and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name(&self.raw).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value(&self.raw))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name(&self.raw).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| f.value(&self.raw))
    }

    /// Every field as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(move |f| {
            // Names are tokens, which are ASCII.
            let name = std::str::from_utf8(f.name(&self.raw)).unwrap_or("");
            (name, f.value(&self.raw))
        })
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether the comma-separated list in any `name` field has `token`
    /// (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// Limits on a message head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request or status line, without its CRLF (else 414).
    pub max_line: usize,
    /// Largest header section, field lines with their CRLFs (else 431).
    pub max_header_bytes: usize,
    /// Most header fields (else 431).
    pub max_headers: usize,
}

/// A parsed message head: the first line, then the fields, all in `headers.raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHead {
    /// The first line without its CRLF, as a range of `headers.raw`.
    pub(crate) first_line: Range<usize>,
    pub(crate) headers: Headers,
}

impl RawHead {
    pub(crate) fn first_line(&self) -> &[u8] {
        &self.headers.raw[self.first_line.clone()]
    }
}

/// Which kind of first line to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadKind {
    Request,
    Response,
}

/// How many empty lines may precede a request line (RFC 9112 2.2: robust
/// servers ignore at least one, which some clients send after a body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// The incremental head parser. Feed it the whole buffer received so far each
/// time; it remembers how far it has checked.
#[derive(Debug)]
pub struct HeadParser {
    kind: HeadKind,
    limits: Limits,
    /// Every LF before this offset has been processed.
    pos: usize,
    /// Start of the line being received.
    line_start: usize,
    /// Start of the first line, once the leading empty lines are skipped.
    first_start: Option<usize>,
    /// The first line (without CRLF), once complete.
    first_line: Option<Range<usize>>,
    fields: Vec<Field>,
}

impl HeadParser {
    /// A parser for request heads.
    pub fn request(limits: Limits) -> HeadParser {
        HeadParser::new(HeadKind::Request, limits)
    }

    pub(crate) fn new(kind: HeadKind, limits: Limits) -> HeadParser {
        HeadParser {
            kind,
            limits,
            pos: 0,
            line_start: 0,
            first_start: None,
            first_line: None,
            fields: Vec::new(),
        }
    }

    /// Forgets a previous message; the next call starts at offset 0 again.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.line_start = 0;
        self.first_start = None;
        self.first_line = None;
        self.fields.clear();
    }

    /// Parses `buf`, the bytes received so far (a prefix of the same stream on
    /// every call until the head is complete). Returns `Ok(None)` when more
    /// input is needed, or the head and the number of bytes it took. After an
    /// error or a complete head, call [`HeadParser::reset`] before reusing.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(RawHead, usize)>, Error> {
        while let Some(off) = buf[self.pos..].iter().position(|&b| b == b'\n') {
            let lf = self.pos + off;
            self.pos = lf + 1;
            if let Some(done) = self.line(buf, lf)? {
                return Ok(Some(done));
            }
        }
        self.check_partial(buf)?;
        Ok(None)
    }

    /// Checks the bytes after the last LF against the limits.
    fn check_partial(&self, buf: &[u8]) -> Result<(), Error> {
        let pending = buf.len() - self.line_start;
        match self.first_line {
            // Leading empty lines or the first line: a lone pending CR may
            // still be an empty line, anything longer is the first line.
            None => {
                if pending > self.limits.max_line + 1 {
                    return Err(self.line_too_long());
                }
            }
            Some(ref first) => {
                let header_start = first.end + 2;
                if buf.len() - header_start > self.limits.max_header_bytes + 2 {
                    return Err(Error::HeadersTooLarge);
                }
            }
        }
        Ok(())
    }

    fn line_too_long(&self) -> Error {
        match self.kind {
            HeadKind::Request => Error::UriTooLong,
            HeadKind::Response => Error::BadResponse("status line too long"),
        }
    }

    /// Handles one line ending at the LF at `lf`.
    fn line(&mut self, buf: &[u8], lf: usize) -> Result<Option<(RawHead, usize)>, Error> {
        let start = self.line_start;
        self.line_start = lf + 1;
        let Some(first) = self.first_line.clone() else {
            return self.first(buf, start, lf).map(|()| None);
        };
        let header_start = first.end + 2;
        let empty = lf == start + 1 && buf[start] == b'\r';
        if !empty && lf + 1 - header_start > self.limits.max_header_bytes {
            return Err(Error::HeadersTooLarge);
        }
        if lf == start || buf[lf - 1] != b'\r' {
            return Err(Error::BadRequest("bare LF in header section"));
        }
        if empty {
            return Ok(Some(self.finish(buf, lf + 1)));
        }
        if self.fields.len() >= self.limits.max_headers {
            return Err(Error::HeadersTooLarge);
        }
        let (name, value) = check_field(&buf[start..lf - 1])?;
        let at = |r: Range<usize>| ((start + r.start) as u32, (start + r.end) as u32);
        self.fields.push(Field {
            name: at(name),
            value: at(value),
        });
        Ok(None)
    }

    /// Handles a line before the header section: an empty line to skip, or the
    /// request or status line.
    fn first(&mut self, buf: &[u8], start: usize, lf: usize) -> Result<(), Error> {
        if self.first_start.is_none() {
            if lf == start + 1 && buf[start] == b'\r' {
                if lf + 1 > 2 * MAX_LEADING_EMPTY_LINES {
                    return Err(Error::BadRequest("too many empty lines before request"));
                }
                return Ok(());
            }
            self.first_start = Some(start);
        }
        if lf - start > self.limits.max_line + 1 {
            return Err(self.line_too_long());
        }
        if lf == start || buf[lf - 1] != b'\r' {
            return Err(Error::BadRequest("bare LF in first line"));
        }
        let line = &buf[start..lf - 1];
        match self.kind {
            HeadKind::Request => check_request_line(line).map(|_| ())?,
            HeadKind::Response => check_status_line(line).map(|_| ())?,
        }
        self.first_line = Some(start..lf - 1);
        Ok(())
    }

    fn finish(&mut self, buf: &[u8], end: usize) -> (RawHead, usize) {
        let first = self.first_line.clone().unwrap_or(0..0);
        let head = RawHead {
            first_line: first,
            headers: Headers {
                raw: buf[..end].to_vec(),
                fields: std::mem::take(&mut self.fields),
            },
        };
        (head, end)
    }
}

/// `tchar` of RFC 9110 5.6.2.
fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Checks one field line (without CRLF); returns the name and value ranges.
pub(crate) fn check_field(line: &[u8]) -> Result<(Range<usize>, Range<usize>), Error> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Error::BadRequest("obsolete line folding"));
    }
    let Some(colon) = line.iter().position(|&b| !is_tchar(b)) else {
        return Err(Error::BadRequest("header field without colon"));
    };
    if line[colon] != b':' {
        return Err(Error::BadRequest("invalid character in header name"));
    }
    if colon == 0 {
        return Err(Error::BadRequest("empty header name"));
    }
    let mut v_start = colon + 1;
    let mut v_end = line.len();
    while v_start < v_end && matches!(line[v_start], b' ' | b'\t') {
        v_start += 1;
    }
    while v_end > v_start && matches!(line[v_end - 1], b' ' | b'\t') {
        v_end -= 1;
    }
    let valid = line[v_start..v_end]
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
    if !valid {
        return Err(Error::BadRequest("invalid character in header value"));
    }
    Ok((0..colon, v_start..v_end))
}

/// The parts of a request line, as ranges of the line.
pub(crate) struct RequestLine {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub version: Version,
}

fn check_request_line(line: &[u8]) -> Result<RequestLine, Error> {
    let method_end = line
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(line.len());
    if method_end == 0 || line.get(method_end) != Some(&b' ') {
        return Err(Error::BadRequest("invalid method"));
    }
    let t_start = method_end + 1;
    let t_len = line[t_start..]
        .iter()
        .position(|&b| !(b'!'..=b'~').contains(&b))
        .unwrap_or(line.len() - t_start);
    let t_end = t_start + t_len;
    if t_len == 0 || line.get(t_end) != Some(&b' ') {
        return Err(Error::BadRequest("invalid request target"));
    }
    let version = parse_version(&line[t_end + 1..])?;
    Ok(RequestLine {
        method: 0..method_end,
        target: t_start..t_end,
        version,
    })
}

fn parse_version(v: &[u8]) -> Result<Version, Error> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(Error::VersionNotSupported)
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            Err(Error::VersionNotSupported)
        }
        _ => Err(Error::BadRequest("invalid HTTP version")),
    }
}

/// A status line, e.g. `HTTP/1.1 200 OK`: version and code.
pub(crate) fn check_status_line(line: &[u8]) -> Result<(Version, u16), Error> {
    let bad = Error::BadResponse("invalid status line");
    if line.len() < 12 || line[8] != b' ' {
        return Err(bad);
    }
    let version = match &line[..8] {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        _ => return Err(bad),
    };
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || (line.len() > 12 && line[12] != b' ') {
        return Err(bad);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=999).contains(&status) {
        return Err(bad);
    }
    Ok((version, status))
}

/// Whether a `Host` value is `uri-host [ ":" port ]` (RFC 9112 3.2, RFC
/// 3986 3.2.2): a reg-name (unreserved, sub-delims, percent-encoded bytes),
/// an IPv4 address (a reg-name too) or a bracketed IP literal, then an
/// optional port of digits. An empty value is allowed (RFC 9110 7.2).
pub(crate) fn is_valid_host(v: &[u8]) -> bool {
    let is_unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let is_sub_delim = |b: u8| {
        matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
    };
    let (host_ok, rest) = if let Some(literal) = v.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &literal[..close];
        // IPv6 (hex digits, colons, dots of an embedded IPv4, a `%25` zone
        // id of RFC 6874) or IPvFuture.
        let ok = !inside.is_empty()
            && inside
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'%');
        (ok, &literal[close + 1..])
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..end];
        let mut ok = true;
        let mut i = 0;
        while i < name.len() {
            let b = name[i];
            if b == b'%' {
                let hex = |j: usize| name.get(j).is_some_and(u8::is_ascii_hexdigit);
                ok &= hex(i + 1) && hex(i + 2);
                i += 3;
                continue;
            }
            ok &= is_unreserved(b) || is_sub_delim(b);
            i += 1;
        }
        (ok, &v[end..])
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// Parses a `Content-Length` value list: one or more identical decimal numbers.
pub(crate) fn content_length_of(headers: &Headers) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in headers.get_all("content-length") {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadRequest("invalid Content-Length"));
            }
            let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => {
                    return Err(Error::BadRequest("conflicting Content-Length values"));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether `Transfer-Encoding` is present, and if so, that it is exactly
/// `chunked`: any other coding (or `chunked` twice) makes the framing unknowable.
fn transfer_encoding_chunked(headers: &Headers) -> Result<bool, Error> {
    let mut codings = 0;
    let mut chunked_last = false;
    for value in headers.get_all("transfer-encoding") {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() {
                continue;
            }
            codings += 1;
            chunked_last = item.eq_ignore_ascii_case(b"chunked");
        }
    }
    match (codings, chunked_last) {
        (0, _) => {
            if headers.get_all("transfer-encoding").next().is_some() {
                return Err(Error::BadRequest("empty Transfer-Encoding"));
            }
            Ok(false)
        }
        (1, true) => Ok(true),
        _ => Err(Error::BadRequest("unsupported Transfer-Encoding")),
    }
}

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
        let rl = check_request_line(raw.first_line())?;
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
    use crate::http::body::ChunkedDecoder;

    const DEFAULT_MAX_TRAILER: usize = 8 * 1024;

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

    fn outcome(r: Result<Option<(RawHead, usize)>, Error>) -> Outcome {
        match r {
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

    fn decode_pieces(
        input: &[u8],
        cuts: &[usize],
        out_size: usize,
    ) -> Result<(Vec<u8>, usize), String> {
        let mut d = ChunkedDecoder::new(DEFAULT_MAX_TRAILER, 1 << 20);
        let mut body = Vec::new();
        let mut out = vec![0u8; out_size];
        let mut consumed = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for end in bounds {
            while consumed < end && !d.is_done() {
                let (used, written) = d
                    .decode(&input[consumed..end], &mut out)
                    .map_err(|e| format!("{e:?}"))?;
                body.extend_from_slice(&out[..written]);
                consumed += used;
                if used == 0 && written == 0 {
                    break;
                }
            }
        }
        Ok((body, consumed))
    }

    #[test]
    fn chunked_bodies_split_at_every_byte_decode_identically() {
        let samples: [&[u8]; 6] = [
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
            b"A\r\n0123456789\r\n0\r\nTrailer: yes\r\n\r\n",
            b"5\r\nhel",
            b"5\nhello\r\n0\r\n\r\n",
            b"zz\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
        ];
        for sample in samples {
            let whole = decode_pieces(sample, &[], 1024);
            for cut in 0..=sample.len() {
                assert_eq!(decode_pieces(sample, &[cut], 3), whole, "cut {cut}");
            }
        }
        assert_eq!(
            decode_pieces(samples[0], &[], 64),
            Ok((b"hello world".to_vec(), samples[0].len() - 4))
        );
    }

    /// A small xorshift generator: deterministic from its seed, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
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

    fn mutate(rng: &mut XorShift, base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                1 if !v.is_empty() => {
                    let end = (at + rng.below(8)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                2 => {
                    let s = INTERESTING[rng.below(INTERESTING.len())];
                    v.splice(at..at, s.iter().copied());
                }
                3 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    let b = v[i];
                    v.splice(at..at, std::iter::repeat_n(b, rng.below(300)));
                }
                4 => v.truncate(at),
                _ => v.insert(at, rng.next() as u8),
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
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        let result = std::panic::catch_unwind(|| fuzz(seed, 100_000));
        if let Err(panic) = result {
            eprintln!("fuzz failed; rerun with FERRIUM_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }

    fn fuzz(seed: u64, rounds: usize) {
        let started = std::time::Instant::now();
        let mut rng = XorShift(seed);
        let bases = samples();
        let (mut heads, mut errors, mut incomplete, mut chunked) = (0, 0, 0, 0);
        for round in 0..rounds {
            let base = &bases[rng.below(bases.len())];
            let input = mutate(&mut rng, base);
            let whole = parse_whole(&input);
            if round % 8 == 0 {
                let cut = rng.below(input.len() + 1);
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
                    let cut = rng.below(body.len() + 1);
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
