//! Locks and elections over REST (see [`crate::lock`]): `/lock`,
//! `/unlock`, `/election/campaign`, `/election/proclaim`,
//! `/election/leader`, `/election/resign` and the stream
//! `GET /election/observe`. Names, keys and values follow the byte
//! convention of every route (text, or base64 with `"encoding":"base64"`).

use super::errors::{answer, failed, invalid, json_body};
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

/// An answer that is only a header at `revision`.
fn header_only(node: &Node, revision: u64) -> Response {
    Response::json(200, &json!({"header": header_json(&node.header(revision))}))
}

pub(super) async fn lock(node: Node, req: Request, max: usize) -> Response {
    answer(lock_in(node, req, max).await)
}

async fn lock_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: LockBody = json_body(&mut req, max, r#"{"name":"jobs","lease":7}"#).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let name = enc.bytes("name", &body.name)?;
    let h = lock::lock(&node, &name, body.lease.0)
        .await
        .map_err(failed)?;
    let mut out = held_json(&h, enc);
    out["header"] = header_json(&node.header(h.header_revision));
    Ok(Response::json(200, &out))
}

pub(super) async fn unlock(node: Node, req: Request, max: usize) -> Response {
    answer(unlock_in(node, req, max).await)
}

async fn unlock_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: UnlockBody = json_body(&mut req, max, r#"{"key":"jobs/7"}"#).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let key = enc.bytes("key", &body.key)?;
    let revision = lock::unlock(&node, &key).await.map_err(failed)?;
    Ok(header_only(&node, revision))
}

pub(super) async fn campaign(node: Node, req: Request, max: usize) -> Response {
    answer(campaign_in(node, req, max).await)
}

async fn campaign_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let example = r#"{"name":"leader","lease":7,"value":"host-a"}"#;
    let body: CampaignBody = json_body(&mut req, max, example).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let name = enc.bytes("name", &body.name)?;
    let value = enc.bytes("value", &body.value)?;
    let h = lock::campaign(&node, &name, body.lease.0, &value)
        .await
        .map_err(failed)?;
    Ok(Response::json(
        200,
        &json!({
            "header": header_json(&node.header(h.header_revision)),
            "leader": held_json(&h, enc),
        }),
    ))
}

pub(super) async fn proclaim(node: Node, req: Request, max: usize) -> Response {
    answer(proclaim_in(node, req, max).await)
}

async fn proclaim_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let example =
        r#"{"leader":{"name":"leader","key":"leader/7","rev":12,"lease":7},"value":"host-b"}"#;
    let body: ProclaimBody = json_body(&mut req, max, example).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let leader = held(&body.leader, enc)?;
    let value = enc.bytes("value", &body.value)?;
    let revision = lock::proclaim(&node, &leader, &value)
        .await
        .map_err(failed)?;
    Ok(header_only(&node, revision))
}

pub(super) async fn resign(node: Node, req: Request, max: usize) -> Response {
    answer(resign_in(node, req, max).await)
}

async fn resign_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let example = r#"{"leader":{"name":"leader","key":"leader/7","rev":12,"lease":7}}"#;
    let body: ResignBody = json_body(&mut req, max, example).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let leader = held(&body.leader, enc)?;
    let revision = lock::resign(&node, &leader).await.map_err(failed)?;
    Ok(header_only(&node, revision))
}

pub(super) async fn leader(node: Node, req: Request, max: usize) -> Response {
    answer(leader_in(node, req, max).await)
}

async fn leader_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: NameBody = json_body(&mut req, max, r#"{"name":"leader"}"#).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let c = consistency(body.consistency.as_deref())?;
    let name = enc.bytes("name", &body.name)?;
    let (kv, revision) = lock::leader(&node, &name, c).await.map_err(failed)?;
    Ok(Response::json(
        200,
        &json!({"header": header_json(&node.header(revision)), "kv": kv_json(&kv, enc)}),
    ))
}

/// `GET /election/observe?name=N`: one JSON line per leader (and per
/// proclaimed value), starting with the current one, until the client
/// goes or the member stops; the last line then says `canceled`.
pub(super) async fn observe(node: Node, req: Request, max: usize) -> Response {
    answer(observe_in(node, req, max).await)
}

async fn observe_in(node: Node, req: Request, _max: usize) -> Result<Response, Response> {
    let mut name = None;
    let mut enc = Encoding::Text;
    for (k, v) in super::watch::query_pairs(req.query())? {
        match k.as_str() {
            "name" => name = Some(v),
            "encoding" => enc = Encoding::parse(Some(&String::from_utf8_lossy(&v)))?,
            other => {
                return Err(invalid(format!(
                    "unknown parameter {other:?}; /election/observe takes name and encoding"
                )));
            }
        }
    }
    let name = name.ok_or_else(|| invalid("/election/observe needs name=NAME"))?;
    let name = match enc {
        Encoding::Text => name,
        Encoding::Base64 => crate::api::base64::decode(&String::from_utf8_lossy(&name))
            .map_err(|e| invalid(format!("name is not base64: {e}")))?,
    };
    let mut observer = lock::Observer::new(&node, &name).map_err(failed)?;
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
    Ok(Response::stream(200, "application/x-ndjson", rx)
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no"))
}
