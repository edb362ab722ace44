//! Leases over REST: `/lease/grant`, `/lease/keepalive`, `/lease/revoke`,
//! `/lease/timetolive`, `/lease/leases` (the names of etcd's JSON gateway
//! without its `/v3`). Lease ids are JSON numbers; a request may also give
//! one as a decimal string, as etcd's gateway spells 64-bit integers.

use super::errors::{answer, failed, json_body};
use super::kv::consistency;
use super::txn::{Encoding, header_json, replayed, request_id};
use crate::api::base64;
use crate::http::{Request, Response};
use crate::node::Node;
use serde::Deserialize;
use serde_json::json;

/// A 64-bit integer as a JSON number or a decimal string.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(try_from = "serde_json::Value")]
pub(super) struct Int(pub(super) u64);

impl TryFrom<serde_json::Value> for Int {
    type Error = String;

    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        match &v {
            serde_json::Value::Number(n) => n.as_u64().map(Int),
            serde_json::Value::String(s) => s.parse::<u64>().ok().map(Int),
            _ => None,
        }
        .ok_or_else(|| format!("{v} is not a non-negative integer (a number or a decimal string)"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    #[serde(alias = "TTL")]
    ttl: Int,
    #[serde(default, alias = "ID")]
    id: Int,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdBody {
    #[serde(alias = "ID")]
    id: Int,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeToLiveBody {
    #[serde(alias = "ID")]
    id: Int,
    #[serde(default)]
    keys: bool,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LeasesBody {
    #[serde(default)]
    consistency: Option<String>,
}

pub(super) async fn grant(node: Node, req: Request, max: usize) -> Response {
    answer(grant_in(node, req, max).await)
}

async fn grant_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let rid = request_id(&req)?;
    let body: GrantBody = json_body(&mut req, max, r#"{"ttl":10}"#).await?;
    let o = node
        .lease_grant(body.id.0, body.ttl.0, rid)
        .await
        .map_err(failed)?;
    let out = json!({
        "header": header_json(&node.header(o.revision)),
        "id": o.lease.id,
        "ttl": o.lease.ttl,
    });
    Ok(replayed(Response::json(200, &out), o.repeated))
}

pub(super) async fn keep_alive(node: Node, req: Request, max: usize) -> Response {
    answer(keep_alive_in(node, req, max).await)
}

async fn keep_alive_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: IdBody = json_body(&mut req, max, r#"{"id":7}"#).await?;
    let l = node.lease_keep_alive(body.id.0).await.map_err(failed)?;
    let out = json!({
        "header": header_json(&node.header(node.applied_revision())),
        "id": l.id,
        "ttl": l.ttl,
    });
    Ok(Response::json(200, &out))
}

pub(super) async fn revoke(node: Node, req: Request, max: usize) -> Response {
    answer(revoke_in(node, req, max).await)
}

async fn revoke_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let rid = request_id(&req)?;
    let body: IdBody = json_body(&mut req, max, r#"{"id":7}"#).await?;
    let o = node.lease_revoke(body.id.0, rid).await.map_err(failed)?;
    let out = json!({
        "header": header_json(&node.header(o.revision)),
        "id": o.lease.id,
        "deleted": o.deleted,
    });
    Ok(replayed(Response::json(200, &out), o.repeated))
}

pub(super) async fn time_to_live(node: Node, req: Request, max: usize) -> Response {
    answer(time_to_live_in(node, req, max).await)
}

async fn time_to_live_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: TimeToLiveBody = json_body(&mut req, max, r#"{"id":7,"keys":true}"#).await?;
    let enc = Encoding::parse(body.encoding.as_deref())?;
    let c = consistency(body.consistency.as_deref())?;
    let t = node
        .lease_time_to_live(body.id.0, body.keys, c)
        .await
        .map_err(failed)?;
    let mut out = json!({
        "header": header_json(&node.header(node.applied_revision())),
        "id": t.id,
        "ttl": t.ttl,
        "remaining_ms": t.remaining_ms,
        "granted_ttl": t.granted_ttl,
    });
    if body.keys {
        let binary =
            enc == Encoding::Base64 || t.keys.iter().any(|k| std::str::from_utf8(k).is_err());
        let keys: Vec<String> = t
            .keys
            .iter()
            .map(|k| {
                if binary {
                    base64::encode(k)
                } else {
                    String::from_utf8_lossy(k).into_owned()
                }
            })
            .collect();
        out["keys"] = json!(keys);
        if binary {
            out["encoding"] = json!("base64");
        }
    }
    Ok(Response::json(200, &out))
}

pub(super) async fn leases(node: Node, req: Request, max: usize) -> Response {
    answer(leases_in(node, req, max).await)
}

async fn leases_in(node: Node, mut req: Request, max: usize) -> Result<Response, Response> {
    let body: LeasesBody = if *req.method() == crate::http::Method::Get {
        let consistency = super::watch::query_pairs(req.query())?
            .into_iter()
            .find(|(k, _)| k == "consistency")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
        LeasesBody { consistency }
    } else {
        json_body(&mut req, max, r#"{}"#).await?
    };
    let c = consistency(body.consistency.as_deref())?;
    let ids = node.lease_list(c).await.map_err(failed)?;
    let out = json!({
        "header": header_json(&node.header(node.applied_revision())),
        "leases": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
    });
    Ok(Response::json(200, &out))
}
