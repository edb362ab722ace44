//! Locks and elections over REST (see [`crate::lock`]): `/lock`,
//! `/unlock`, `/election/campaign`, `/election/proclaim`,
//! `/election/leader`, `/election/resign` and the stream
//! `GET /election/observe`. Names, keys and values follow the byte
//! convention of every route (text, or base64 with `"encoding":"base64"`).

use super::errors::{error_response, json_body};
use super::kv::consistency;
use super::lease::Int;
use super::txn::{Encoding, header_json, kv_json};
use crate::http::{Request, Response};
use crate::lock::{self, Held};
use crate::node::Node;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockBody {
    name: String,
    lease: Int,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockBody {
    key: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignBody {
    name: String,
    lease: Int,
    #[serde(default)]
    value: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// A leader as `campaign` answers it and `proclaim` and `resign` take it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderBody {
    name: String,
    key: String,
    rev: Int,
    lease: Int,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProclaimBody {
    leader: LeaderBody,
    #[serde(default)]
    value: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResignBody {
    leader: LeaderBody,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

fn held(body: &LeaderBody, enc: Encoding) -> Result<Held, Response> {
    Ok(Held {
        name: enc.bytes("name", &body.name)?,
        key: enc.bytes("key", &body.key)?,
        revision: body.rev.0,
        lease: body.lease.0,
        header_revision: 0,
    })
}

fn held_json(h: &Held, enc: Encoding) -> Value {
    let text = |b: &[u8]| match enc {
        Encoding::Base64 => json!(crate::api::base64::encode(b)),
        Encoding::Text => json!(String::from_utf8_lossy(b)),
    };
    json!({"name": text(&h.name), "key": text(&h.key), "rev": h.revision, "lease": h.lease})
}

pub(super) async fn lock(node: Node, mut req: Request, max: usize) -> Response {
    let body: LockBody = match json_body(&mut req, max, r#"{"name":"jobs","lease":7}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let name = match enc.bytes("name", &body.name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match lock::lock(&node, &name, body.lease.0).await {
        Ok(h) => {
            let mut out = held_json(&h, enc);
            out["header"] = header_json(&node.header(h.header_revision));
            Response::json(200, &out)
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn unlock(node: Node, mut req: Request, max: usize) -> Response {
    let body: UnlockBody = match json_body(&mut req, max, r#"{"key":"jobs/7"}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let key = match enc.bytes("key", &body.key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match lock::unlock(&node, &key).await {
        Ok(revision) => {
            Response::json(200, &json!({"header": header_json(&node.header(revision))}))
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn campaign(node: Node, mut req: Request, max: usize) -> Response {
    let body: CampaignBody = match json_body(
        &mut req,
        max,
        r#"{"name":"leader","lease":7,"value":"host-a"}"#,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (name, value) = match (
        enc.bytes("name", &body.name),
        enc.bytes("value", &body.value),
    ) {
        (Ok(n), Ok(v)) => (n, v),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match lock::campaign(&node, &name, body.lease.0, &value).await {
        Ok(h) => Response::json(
            200,
            &json!({
                "header": header_json(&node.header(h.header_revision)),
                "leader": held_json(&h, enc),
            }),
        ),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn proclaim(node: Node, mut req: Request, max: usize) -> Response {
    let body: ProclaimBody = match json_body(
        &mut req,
        max,
        r#"{"leader":{"name":"leader","key":"leader/7","rev":12,"lease":7},"value":"host-b"}"#,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (leader, value) = match (held(&body.leader, enc), enc.bytes("value", &body.value)) {
        (Ok(l), Ok(v)) => (l, v),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match lock::proclaim(&node, &leader, &value).await {
        Ok(revision) => {
            Response::json(200, &json!({"header": header_json(&node.header(revision))}))
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn resign(node: Node, mut req: Request, max: usize) -> Response {
    let body: ResignBody = match json_body(
        &mut req,
        max,
        r#"{"leader":{"name":"leader","key":"leader/7","rev":12,"lease":7}}"#,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let leader = match held(&body.leader, enc) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match lock::resign(&node, &leader).await {
        Ok(revision) => {
            Response::json(200, &json!({"header": header_json(&node.header(revision))}))
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn leader(node: Node, mut req: Request, max: usize) -> Response {
    let body: NameBody = match json_body(&mut req, max, r#"{"name":"leader"}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let c = match consistency(body.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let name = match enc.bytes("name", &body.name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match lock::leader(&node, &name, c).await {
        Ok((kv, revision)) => Response::json(
            200,
            &json!({"header": header_json(&node.header(revision)), "kv": kv_json(&kv, enc)}),
        ),
        Err(e) => error_response(&e),
    }
}

/// `GET /election/observe?name=N`: one JSON line per leader (and per
/// proclaimed value), starting with the current one, until the client
/// goes or the member stops; the last line then says `canceled`.
pub(super) async fn observe(node: Node, req: Request, _max: usize) -> Response {
    let pairs = match super::watch::query_pairs(req.query()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut name = None;
    let mut enc = Encoding::Text;
    for (k, v) in pairs {
        match k.as_str() {
            "name" => name = Some(v),
            "encoding" => {
                enc = match Encoding::parse(Some(&String::from_utf8_lossy(&v))) {
                    Ok(e) => e,
                    Err(r) => return r,
                }
            }
            other => {
                return super::errors::invalid(format!(
                    "unknown parameter {other:?}; /election/observe takes name and encoding"
                ));
            }
        }
    }
    let Some(name) = name else {
        return super::errors::invalid("/election/observe needs name=NAME");
    };
    let name = match enc {
        Encoding::Text => name,
        Encoding::Base64 => match crate::api::base64::decode(&String::from_utf8_lossy(&name)) {
            Ok(n) => n,
            Err(e) => return super::errors::invalid(format!("name is not base64: {e}")),
        },
    };
    let mut observer = match lock::Observer::new(&node, &name) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let quiet = node.watch_settings().keepalive_interval;
    tokio::spawn(async move {
        loop {
            let line = match observer.next(quiet).await {
                Ok(Some(kv)) => json!({
                    "header": header_json(&node.header(node.applied_revision())),
                    "kv": kv_json(&kv, enc),
                }),
                // A keep-alive line, so proxies keep the stream open and a
                // client that went away is noticed.
                Ok(None) => json!({"header": header_json(&node.header(node.applied_revision()))}),
                Err(e) => {
                    let line = json!({"canceled": true, "error": e.to_string(), "code": e.code()});
                    let mut out = serde_json::to_vec(&line).unwrap_or_default();
                    out.push(b'\n');
                    let _ = tx.write_all(&out).await;
                    break;
                }
            };
            let mut out = serde_json::to_vec(&line).unwrap_or_default();
            out.push(b'\n');
            if tx.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = tx.shutdown().await;
    });
    Response::stream(200, "application/x-ndjson", rx)
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
}
