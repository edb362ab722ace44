//! Writes, reads and listings: `/write` (with its compare-and-swap form),
//! `/read`, `/list`.

use super::errors::{error_response, invalid, json_body, value_json};
use super::txn::{Encoding, header_json, kv_json, replayed, request_id};
use crate::http::{Request, Response};
use crate::node::{Node, ReadConsistency};
use crate::raft::kv::{
    Compare, CompareOp, CompareTarget, DeleteRange, OpResult, Put, RangeRequest, Txn, TxnOp,
};
use crate::raft::types::Command;
use serde::Deserialize;
use serde_json::json;

/// The body of `/write`: the original commands, where `Set` and `Delete`
/// may carry a condition (compare-and-swap) and `"encoding": "base64"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum WriteBody {
    Set(SetBody),
    Delete(SetBody),
    BatchSet { pairs: Vec<(String, String)> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    key: String,
    /// Required for `Set`, refused for `Delete`.
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    if_version: Option<u64>,
    #[serde(default)]
    if_mod_revision: Option<u64>,
    #[serde(default)]
    if_create_revision: Option<u64>,
    #[serde(default)]
    if_value: Option<String>,
    /// For `Set`: attach the key to this lease (deleted when it ends).
    #[serde(default)]
    lease: Option<u64>,
}

impl SetBody {
    fn conditions(&self, key: &[u8], enc: Encoding) -> Result<Vec<Compare>, Response> {
        let mut out = Vec::new();
        let mut add = |target| {
            out.push(Compare {
                key: key.to_vec(),
                range_end: Vec::new(),
                op: CompareOp::Equal,
                target,
            })
        };
        if let Some(v) = self.if_version {
            add(CompareTarget::Version(v));
        }
        if let Some(v) = self.if_mod_revision {
            add(CompareTarget::ModRevision(v));
        }
        if let Some(v) = self.if_create_revision {
            add(CompareTarget::CreateRevision(v));
        }
        if let Some(v) = &self.if_value {
            add(CompareTarget::Value(enc.bytes("if_value", v)?));
        }
        Ok(out)
    }
}

pub(super) async fn write(node: Node, mut req: Request, max: usize) -> Response {
    let id = match request_id(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: WriteBody = match json_body(
        &mut req,
        max,
        r#"{"Set":{"key":"k","value":"v"}} or {"Delete":{"key":"k"}}"#,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (set, is_delete) = match body {
        WriteBody::BatchSet { pairs } => {
            return match node.write_with_id(Command::BatchSet { pairs }, id).await {
                Ok(result) => replayed(
                    Response::json(
                        200,
                        &json!({"revision": result.revision, "count": result.count}),
                    ),
                    result.repeated,
                ),
                Err(e) => error_response(&e),
            };
        }
        WriteBody::Set(s) => (s, false),
        WriteBody::Delete(s) => (s, true),
    };
    let enc = match Encoding::parse(set.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if is_delete && set.lease.is_some() {
        return invalid("a Delete takes no lease");
    }
    let lease = set.lease.unwrap_or(0);
    let value = match (&set.value, is_delete) {
        (Some(_), true) => return invalid("a Delete takes no value"),
        (None, false) => return invalid("a Set needs a value"),
        (Some(v), false) => match enc.bytes("value", v) {
            Ok(v) => v,
            Err(r) => return r,
        },
        (None, true) => Vec::new(),
    };
    let key = match enc.bytes("key", &set.key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let conditions = match set.conditions(&key, enc) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if conditions.is_empty() && enc == Encoding::Text && lease == 0 {
        // The original form: the original command and answer.
        let cmd = if is_delete {
            Command::Delete {
                key: set.key.clone(),
            }
        } else {
            Command::Set {
                key: set.key.clone(),
                value: set.value.clone().unwrap_or_default(),
            }
        };
        return match node.write_with_id(cmd, id).await {
            Ok(result) => {
                let mut body = json!({"revision": result.revision, "key": set.key});
                if is_delete {
                    body["existed"] = json!(result.existed.unwrap_or(false));
                }
                replayed(Response::json(200, &body), result.repeated)
            }
            Err(e) => error_response(&e),
        };
    }
    let op = if is_delete {
        TxnOp::DeleteRange(DeleteRange {
            key: key.clone(),
            range_end: Vec::new(),
            prev_kv: false,
        })
    } else {
        TxnOp::Put(Put {
            key: key.clone(),
            value,
            lease,
            ..Put::default()
        })
    };
    let txn = Txn {
        compare: conditions,
        success: vec![op],
        failure: vec![TxnOp::Range(RangeRequest::key(key))],
    };
    match node.txn(txn, id).await {
        Ok((result, revision, repeated)) if result.succeeded => {
            let mut body = json!({"revision": revision, "key": set.key});
            if is_delete {
                let deleted = matches!(
                    result.responses.first(),
                    Some(OpResult::DeleteRange { deleted, .. }) if *deleted > 0
                );
                body["existed"] = json!(deleted);
            }
            replayed(Response::json(200, &body), repeated)
        }
        Ok((result, revision, repeated)) => {
            let current = match result.responses.first() {
                Some(OpResult::Range(r)) => r.kvs.first().map(|kv| kv_json(kv, enc)),
                _ => None,
            };
            replayed(
                Response::json(
                    412,
                    &json!({
                        "error": "the condition does not hold; nothing was written (current holds the key as it is)",
                        "code": "compare_failed",
                        "current": current,
                        "header": header_json(&node.header(revision)),
                    }),
                ),
                repeated,
            )
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    key: String,
    #[serde(default)]
    consistency: Option<String>,
}

pub(super) fn consistency(c: Option<&str>) -> Result<ReadConsistency, Response> {
    let c = c.unwrap_or("");
    ReadConsistency::parse(c).ok_or_else(|| {
        invalid(format!(
            "consistency {c:?} is not one of \"linearizable\", \"lease\", \"stale\""
        ))
    })
}

pub(super) async fn read(node: Node, mut req: Request, max: usize) -> Response {
    let r: ReadRequest = match json_body(&mut req, max, r#"{"key":"k"}"#).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let c = match consistency(r.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match node.read(&r.key, c).await {
        Ok(v) => Response::json(200, &value_json(r.key.as_bytes(), v)),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    start_after: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

pub(super) async fn list(node: Node, mut req: Request, max: usize) -> Response {
    let r: ListRequest = match json_body(&mut req, max, r#"{"prefix":"user/","limit":100}"#).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let c = match consistency(r.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match node
        .list(&r.prefix, r.start_after.as_deref(), r.limit.unwrap_or(0), c)
        .await
    {
        Ok((items, has_more)) => {
            let next = if has_more {
                items
                    .last()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            } else {
                None
            };
            let keys: Vec<serde_json::Value> = items
                .into_iter()
                .map(|(k, v)| value_json(&k, Some(v)))
                .collect();
            Response::json(
                200,
                &json!({"keys": keys, "has_more": has_more, "next_start_after": next}),
            )
        }
        Err(e) => error_response(&e),
    }
}
