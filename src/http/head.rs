//! Message heads, in either direction: the incremental parser, the method,
//! version and header types, and the checks of single lines.
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
//! LF), no whitespace before a field's colon, no obsolete line folding.
//!
//! Its errors ([`HeadError`]) say what is wrong without taking a side; the
//! server turns them into the status it answers with
//! ([`HeadError::in_request`]), the client into a bad-response error
//! ([`HeadError::in_response`]). Framing (lengths, chunked) is checked in
//! [`super::framing`], the meaning of a request head in [`super::request`].

use std::ops::Range;

use super::Error;

/// What is wrong with a message head, whichever side sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The syntax is broken; says how.
    Malformed(&'static str),
    /// The request or status line is longer than allowed.
    FirstLineTooLong,
    /// The header section is too large or has too many fields.
    SectionTooLarge,
    /// An HTTP version other than 1.0 and 1.1.
    UnsupportedVersion,
}

impl HeadError {
    /// The error a server answers a request head with (400, 414, 431, 505).
    pub fn in_request(self) -> Error {
        match self {
            HeadError::Malformed(why) => Error::BadRequest(why),
            HeadError::FirstLineTooLong => Error::UriTooLong,
            HeadError::SectionTooLarge => Error::HeadersTooLarge,
            HeadError::UnsupportedVersion => Error::VersionNotSupported,
        }
    }

    /// The error a client reports for a response head it cannot use.
    pub fn in_response(self) -> Error {
        Error::BadResponse(match self {
            HeadError::Malformed(why) => why,
            HeadError::FirstLineTooLong => "status line too long",
            HeadError::SectionTooLarge => "response header section too large",
            HeadError::UnsupportedVersion => "unsupported HTTP version in status line",
        })
    }
}

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
    pub(crate) fn from_token(token: &[u8]) -> Method {
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
    pub(crate) raw: Vec<u8>,
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
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(RawHead, usize)>, HeadError> {
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
    fn check_partial(&self, buf: &[u8]) -> Result<(), HeadError> {
        let pending = buf.len() - self.line_start;
        match self.first_line {
            // Leading empty lines or the first line: a lone pending CR may
            // still be an empty line, anything longer is the first line.
            None => {
                if pending > self.limits.max_line + 1 {
                    return Err(HeadError::FirstLineTooLong);
                }
            }
            Some(ref first) => {
                let header_start = first.end + 2;
                if buf.len() - header_start > self.limits.max_header_bytes + 2 {
                    return Err(HeadError::SectionTooLarge);
                }
            }
        }
        Ok(())
    }

    /// Handles one line ending at the LF at `lf`.
    fn line(&mut self, buf: &[u8], lf: usize) -> Result<Option<(RawHead, usize)>, HeadError> {
        let start = self.line_start;
        self.line_start = lf + 1;
        let Some(first) = self.first_line.clone() else {
            return self.first(buf, start, lf).map(|()| None);
        };
        let header_start = first.end + 2;
        let empty = lf == start + 1 && buf[start] == b'\r';
        if !empty && lf + 1 - header_start > self.limits.max_header_bytes {
            return Err(HeadError::SectionTooLarge);
        }
        if lf == start || buf[lf - 1] != b'\r' {
            return Err(HeadError::Malformed("bare LF in header section"));
        }
        if empty {
            return Ok(Some(self.finish(buf, lf + 1)));
        }
        if self.fields.len() >= self.limits.max_headers {
            return Err(HeadError::SectionTooLarge);
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
    fn first(&mut self, buf: &[u8], start: usize, lf: usize) -> Result<(), HeadError> {
        if self.first_start.is_none() {
            if lf == start + 1 && buf[start] == b'\r' {
                if lf + 1 > 2 * MAX_LEADING_EMPTY_LINES {
                    return Err(HeadError::Malformed("too many empty lines before request"));
                }
                return Ok(());
            }
            self.first_start = Some(start);
        }
        if lf - start > self.limits.max_line + 1 {
            return Err(HeadError::FirstLineTooLong);
        }
        if lf == start || buf[lf - 1] != b'\r' {
            return Err(HeadError::Malformed("bare LF in first line"));
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
pub(crate) fn check_field(line: &[u8]) -> Result<(Range<usize>, Range<usize>), HeadError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HeadError::Malformed("obsolete line folding"));
    }
    let Some(colon) = line.iter().position(|&b| !is_tchar(b)) else {
        return Err(HeadError::Malformed("header field without colon"));
    };
    if line[colon] != b':' {
        return Err(HeadError::Malformed("invalid character in header name"));
    }
    if colon == 0 {
        return Err(HeadError::Malformed("empty header name"));
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
        return Err(HeadError::Malformed("invalid character in header value"));
    }
    Ok((0..colon, v_start..v_end))
}

/// The parts of a request line, as ranges of the line.
pub(crate) struct RequestLine {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub version: Version,
}

pub(crate) fn check_request_line(line: &[u8]) -> Result<RequestLine, HeadError> {
    let method_end = line
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(line.len());
    if method_end == 0 || line.get(method_end) != Some(&b' ') {
        return Err(HeadError::Malformed("invalid method"));
    }
    let t_start = method_end + 1;
    let t_len = line[t_start..]
        .iter()
        .position(|&b| !(b'!'..=b'~').contains(&b))
        .unwrap_or(line.len() - t_start);
    let t_end = t_start + t_len;
    if t_len == 0 || line.get(t_end) != Some(&b' ') {
        return Err(HeadError::Malformed("invalid request target"));
    }
    let version = parse_version(&line[t_end + 1..])?;
    Ok(RequestLine {
        method: 0..method_end,
        target: t_start..t_end,
        version,
    })
}

fn parse_version(v: &[u8]) -> Result<Version, HeadError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(HeadError::UnsupportedVersion)
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            Err(HeadError::UnsupportedVersion)
        }
        _ => Err(HeadError::Malformed("invalid HTTP version")),
    }
}

/// A status line, e.g. `HTTP/1.1 200 OK`: version and code.
pub(crate) fn check_status_line(line: &[u8]) -> Result<(Version, u16), HeadError> {
    let bad = HeadError::Malformed("invalid status line");
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
