//! The one translation of [`node::Error`] into statuses and JSON error
//! bodies, and the JSON request-body helpers every route uses.

use crate::http::{Request, Response};
use crate::node;
use crate::store::StoredValue;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The JSON error response for a node error.
pub fn error_response(e: &node::Error) -> Response {
    let status = match e {
        node::Error::Invalid(_) => 400,
        node::Error::TooLarge(_) => 413,
        node::Error::NotLeader(_)
        | node::Error::Unavailable(_)
        | node::Error::OutcomeUnknown(_) => 503,
        node::Error::Conflict(_) | node::Error::Precondition(_) => 409,
        node::Error::Internal(_) => 500,
        node::Error::Apply(a) => match a {
            crate::raft::kv::ApplyError::Compacted { .. } => 410,
            crate::raft::kv::ApplyError::FutureRevision { .. } => 400,
            crate::raft::kv::ApplyError::KeyNotFound => 400,
            crate::raft::kv::ApplyError::LeaseNotFound { .. } => 404,
            crate::raft::kv::ApplyError::LeaseExists { .. } => 409,
        },
    };
    let code = match e {
        node::Error::Precondition(_) => "conflict",
        other => other.code(),
    };
    let mut body = json!({"error": e.to_string(), "code": code});
    if let node::Error::Apply(crate::raft::kv::ApplyError::Compacted { compact_revision }) = e {
        body["compact_revision"] = json!(compact_revision);
    }
    if let node::Error::NotLeader(Some(l)) = e {
        body["leader"] = json!(l.id);
        if let Some(n) = &l.node {
            body["leader_api_addr"] = json!(n.api_addr);
            body["leader_rpc_addr"] = json!(n.rpc_addr);
            body["leader_grpc_addr"] = json!(n.grpc_addr);
        }
    }
    let resp = Response::json(status, &body);
    // An unknown outcome carries no Retry-After: HTTP clients and proxies
    // retry such answers by themselves, and the write may have been applied.
    if status == 503 && !matches!(e, node::Error::OutcomeUnknown(_)) {
        resp.header("retry-after", "1")
    } else {
        resp
    }
}

/// The answer of a handler written with `?`: the response, or the error
/// response it stopped at.
pub(super) fn answer(r: Result<Response, Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

/// [`error_response`] by value, for `map_err`.
pub(super) fn failed(e: node::Error) -> Response {
    error_response(&e)
}

pub(super) fn invalid(message: impl std::fmt::Display) -> Response {
    Response::error(400, "invalid_request", message)
}

/// Reads and decodes a JSON body; the error is the response to send.
pub(super) async fn json_body<T: DeserializeOwned>(
    req: &mut Request,
    max: usize,
    example: &str,
) -> Result<T, Response> {
    let body = req.body_bytes(max).await.map_err(|e| e.to_response())?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid(format!(
            "the request needs a JSON body, e.g. {example}"
        )));
    }
    crate::http::json::from_slice(&body)
        .map_err(|e| invalid(format!("malformed JSON body: {e}; expected e.g. {example}")))
}

/// A key in the answers of `/read` and `/list`: text, or base64 with
/// `"encoding": "base64"` when the key or the value is not UTF-8.
pub(super) fn value_json(key: &[u8], v: Option<StoredValue>) -> serde_json::Value {
    let text_key = std::str::from_utf8(key).ok();
    match v {
        Some(v) => match (text_key, std::str::from_utf8(&v.value).ok()) {
            (Some(k), Some(value)) => json!({
                "key": k,
                "value": value,
                "create_revision": v.create_revision,
                "mod_revision": v.mod_revision,
                "version": v.version,
            }),
            _ => json!({
                "key": crate::api::base64::encode(key),
                "value": crate::api::base64::encode(&v.value),
                "create_revision": v.create_revision,
                "mod_revision": v.mod_revision,
                "version": v.version,
                "encoding": "base64",
            }),
        },
        None => match text_key {
            Some(k) => json!({"key": k, "value": null}),
            None => {
                json!({"key": crate::api::base64::encode(key), "value": null, "encoding": "base64"})
            }
        },
    }
}
