//! The [`Response`] a handler returns, and how a response head is written.
//!
//! The server owns the framing headers: it writes `Date`, `Content-Length` (or
//! `Transfer-Encoding: chunked` for a stream of unknown length) and
//! `Connection` itself and drops any a handler set, so a handler can never
//! produce a response whose framing disagrees with its body. Heads are
//! serialised into a reused buffer; the `Date` value is formatted once a second
//! per thread.

use std::borrow::Cow;
use std::fmt::Display;

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

    /// The JSON error body of the REST API (README, "REST API"): `{"error":"...","code":"..."}`.
    pub fn error(status: u16, code: &str, message: impl Display) -> Response {
        // Written by hand to keep the documented field order (serde_json sorts keys).
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
}
