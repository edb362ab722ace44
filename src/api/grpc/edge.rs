//! What every gRPC call goes through before and after its service.

use super::listener::ConnectionPeer;
use crate::api::op;
use crate::auth::Auth;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Code, Status};

/// The client's deadline, put into request extensions by [`Edge`].
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);
/// What every call goes through before and after its service:
///
/// - The client's `grpc-timeout` is enforced: the call is answered
///   `DEADLINE_EXCEEDED` a little before the deadline ([`deadline_margin`]),
///   so that the answer reaches the client before its own timer fires (a
///   client that gives up by itself reports a bare `CANCELLED` or a local
///   `DEADLINE_EXCEEDED` without the server's message). The deadline is left
///   in the request extensions ([`Deadline`]).
/// - Access is checked against the tokens and roles of [`Auth`], and every
///   call is counted by method and status code in the metrics.
/// - A message over `network.max_message_size` is answered
///   `RESOURCE_EXHAUSTED`, as the gRPC status code table says; tonic's codec
///   reports it as `OUT_OF_RANGE`, a code no Ferrium handler uses.
#[derive(Clone)]
pub struct Edge<S> {
    pub(super) inner: S,
    pub(super) auth: Arc<Auth>,
}

/// How long before the client's deadline the server answers: a tenth of
/// the timeout, at most 50 ms.
fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(50))
}

impl<S, B> Service<http::Request<B>> for Edge<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let cert = req
            .extensions()
            .get::<ConnectionPeer>()
            .and_then(|p| p.0.as_deref());
        let (op, label) = op::grpc_op(req.uri().path());
        if let Err(status) = self
            .auth
            .check_grpc(op, req.uri().path(), authorization, cert)
        {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // Taken before tonic's own timer starts, so that ours fires first.
        let deadline = grpc_timeout(req.headers())
            .map(|t| Instant::now() + t.saturating_sub(deadline_margin(t)));
        if let Some(d) = deadline {
            req.extensions_mut().insert(Deadline(d));
        }
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.auth.metrics().clone();
        Box::pin(async move {
            let resp = match deadline {
                None => fut.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, fut).await {
                    Ok(r) => r,
                    Err(_) => Ok(Status::deadline_exceeded(
                        "the deadline passed before the request completed; a write may or may not have been applied",
                    )
                    .into_http()),
                },
            };
            let resp = resp.map(oversize_is_resource_exhausted);
            if let Ok(r) = &resp {
                // Errors carry their status in the headers; a success puts it
                // in the trailers, after this point.
                let code = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32);
                metrics.grpc_request(label, &format!("{code:?}"), started.elapsed());
            }
            resp
        })
    }
}

/// Rewrites tonic's `OUT_OF_RANGE` for an oversize message (an error answer
/// carries its status in the headers) into `RESOURCE_EXHAUSTED`. Only that
/// one: a compacted or future revision is `OUT_OF_RANGE` too (as in etcd),
/// and stays so.
fn oversize_is_resource_exhausted(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let out_of_range = (Code::OutOfRange as i32).to_string();
    let oversize = resp.headers().get("grpc-message").is_some_and(|m| {
        // Percent-encoded on the wire (tonic encodes spaces too).
        m.to_str()
            .is_ok_and(|m| m.replace("%20", " ").contains("length too large"))
    });
    if oversize
        && resp.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(out_of_range.as_bytes())
    {
        let code = (Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = http::HeaderValue::from_str(&code) {
            resp.headers_mut().insert("grpc-status", v);
        }
    }
    resp
}

/// Parses `grpc-timeout` ("100m", "5S", ...: at most 8 digits and a unit).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", "123456789m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    #[test]
    fn answers_before_the_client_gives_up() {
        assert_eq!(
            deadline_margin(Duration::from_millis(300)),
            Duration::from_millis(30)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn oversize_messages_are_resource_exhausted() {
        let resp = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        )
        .into_http();
        let resp = oversize_is_resource_exhausted(resp);
        assert_eq!(resp.headers()["grpc-status"], "8");
        // A compacted revision is OUT_OF_RANGE, as etcd answers it.
        let compacted =
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        let resp = oversize_is_resource_exhausted(compacted.into_http());
        assert_eq!(resp.headers()["grpc-status"], "11");
        let resp = oversize_is_resource_exhausted(Status::not_found("x").into_http());
        assert_eq!(resp.headers()["grpc-status"], "5");
    }
}
