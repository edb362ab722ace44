//! The [`Response`] a handler returns, and how a response head is written.
//!
//! The server owns the framing headers: it writes `Date`, `Content-Length` (or
//! `Transfer-Encoding: chunked` for a stream of unknown length) and
//! `Connection` itself and drops any a handler set, so a handler can never
//! produce a response whose framing disagrees with its body. Heads are
//! serialised into a reused buffer; the `Date` value is formatted once a second
//! per thread.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Display;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::body::Body;

/// A header name or value: usually a static string, so that building a
/// response does not allocate.
pub type HeaderText = Cow<'static, str>;

/// A response: status, extra header fields and a body.
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(HeaderText, HeaderText)>,
    body: Body,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// A response with a body of the given content type.
    pub fn with_body(status: u16, content_type: &'static str, body: impl Into<Body>) -> Response {
        Response {
            status,
            headers: vec![(Cow::Borrowed("content-type"), Cow::Borrowed(content_type))],
            body: body.into(),
        }
    }

    /// A JSON response. A value that cannot be serialised becomes a 500.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::with_body(status, "application/json", body),
            Err(e) => Response::error(500, "internal", format!("cannot encode response: {e}")),
        }
    }

    /// The JSON error body of API.md: `{"error":"...","code":"..."}`.
    pub fn error(status: u16, code: &str, message: impl Display) -> Response {
        // Written by hand to keep API.md's field order (serde_json sorts keys).
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
        let body = format!(
            "{{\"error\":{},\"code\":{}}}",
            quote(&message.to_string()),
            quote(code)
        );
        Response::with_body(status, "application/json", body)
    }

    /// A streamed body of unknown length, sent chunked (HTTP/1.1) or until
    /// close (HTTP/1.0).
    pub fn stream(
        status: u16,
        content_type: &'static str,
        reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    ) -> Response {
        Response::with_body(status, content_type, Body::stream(reader))
    }

    /// Adds a header field. `Content-Length`, `Transfer-Encoding`, `Date` and
    /// `Connection` are the server's to set and are ignored here, except
    /// `Connection: close`, which makes the server close after this response.
    pub fn header(mut self, name: impl Into<HeaderText>, value: impl Into<HeaderText>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn set_body(&mut self, body: impl Into<Body>) {
        self.body = body.into();
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn headers(&self) -> &[(HeaderText, HeaderText)] {
        &self.headers
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    pub(crate) fn into_parts(self) -> (u16, Vec<(HeaderText, HeaderText)>, Body) {
        (self.status, self.headers, self.body)
    }

    /// Whether the handler asked for the connection to be closed.
    pub(crate) fn wants_close(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Whether a response with this status never has a body (RFC 9110 6.4.1).
pub(crate) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Whether a handler-set header is one the server writes itself.
pub(crate) fn is_framing_header(name: &str) -> bool {
    ["content-length", "transfer-encoding", "date", "connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// How the body length is announced in a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadLength {
    Known(u64),
    Chunked,
    /// Neither (HTTP/1.0 stream until close, or a body-less status).
    Omit,
}

/// Appends a response head to `out`.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    version: &str,
    status: u16,
    headers: &[(HeaderText, HeaderText)],
    length: HeadLength,
    connection: Option<&str>,
) {
    out.extend_from_slice(version.as_bytes());
    out.push(b' ');
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    match length {
        HeadLength::Known(n) => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        HeadLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        HeadLength::Omit => {}
    }
    if let Some(c) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if is_framing_header(name) || !header_is_safe(name, value) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A header with CR or LF in it would let a handler (or whoever fed it the
/// value) inject fields or a second response; such fields are dropped.
pub(crate) fn header_is_safe(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Appends the decimal form of `n` without allocating.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the hexadecimal form of `n` (a chunk size).
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0u8; 29])) };
}

/// Calls `f` with the current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            cached.1 = format_date(now);
            cached.0 = now;
        }
        f(&cached.1)
    })
}

fn format_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);

    let mut out = [0u8; 29];
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(day as u64));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    let y = year.clamp(0, 9999) as u64;
    out[12..14].copy_from_slice(&two(y / 100));
    out[14..16].copy_from_slice(&two(y % 100));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(h));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(m));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(s));
    out[25..].copy_from_slice(b" GMT");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_json_in_api_order() {
        let r = Response::error(400, "invalid_request", "bad \"key\"\n");
        let Body::Bytes(b) = r.body() else {
            panic!("not bytes")
        };
        assert_eq!(
            &b[..],
            br#"{"error":"bad \"key\"\n","code":"invalid_request"}"#
        );
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&format_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_date(1_709_210_096),
            b"Thu, 29 Feb 2024 12:34:56 GMT"
        );
    }

    #[test]
    fn heads_have_date_and_length_and_drop_framing_headers() {
        let mut out = Vec::new();
        let headers = vec![
            (
                Cow::Borrowed("content-type"),
                Cow::Borrowed("application/json"),
            ),
            (Cow::Borrowed("Content-Length"), Cow::Borrowed("999")),
            (Cow::Borrowed("x-evil"), Cow::Borrowed("a\r\nset-cookie: b")),
        ];
        write_head(
            &mut out,
            "HTTP/1.1",
            200,
            &headers,
            HeadLength::Known(12),
            None,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "));
        assert!(text.contains("\r\ncontent-length: 12\r\n"));
        assert!(!text.contains("999"));
        assert!(!text.contains("evil"));
        assert!(text.ends_with("content-type: application/json\r\n\r\n"));
    }
}
