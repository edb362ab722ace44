//! Writes, reads and listings: `/write`, `/read`, `/list`.

use super::errors::{error_response, invalid, json_body, value_json};
use crate::http::{Request, Response};
use crate::node::{Node, ReadConsistency};
use crate::raft::types::Command;
use serde::Deserialize;
use serde_json::json;

pub(super) async fn write(node: Node, mut req: Request, max: usize) -> Response {
    let cmd: Command = match json_body(
        &mut req,
        max,
        r#"{"Set":{"key":"k","value":"v"}} or {"Delete":{"key":"k"}}"#,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    // What the answer echoes, taken before the command moves into the log.
    let echo = match &cmd {
        Command::Set { key, .. } => Some((key.clone(), false)),
        Command::Delete { key } => Some((key.clone(), true)),
        Command::BatchSet { .. } => None,
    };
    match node.write(cmd).await {
        Ok(result) => {
            let mut body = json!({"revision": result.revision});
            match echo {
                Some((key, is_delete)) => {
                    body["key"] = json!(key);
                    if is_delete {
                        body["existed"] = json!(result.existed.unwrap_or(false));
                    }
                }
                None => body["count"] = json!(result.count),
            }
            Response::json(200, &body)
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
        Ok(v) => Response::json(200, &value_json(&r.key, v)),
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
                items.last().map(|(k, _)| k.clone())
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
