//! Leases over REST: `/lease/grant`, `/lease/keepalive`, `/lease/revoke`,
//! `/lease/timetolive`, `/lease/leases` (the names of etcd's JSON gateway
//! without its `/v3`). Lease ids are JSON numbers; a request may also give
//! one as a decimal string, as etcd's gateway spells 64-bit integers.

use super::errors::{error_response, json_body};
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

pub(super) async fn grant(node: Node, mut req: Request, max: usize) -> Response {
    let rid = match request_id(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: GrantBody = match json_body(&mut req, max, r#"{"ttl":10}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match node.lease_grant(body.id.0, body.ttl.0, rid).await {
        Ok(o) => replayed(
            Response::json(
                200,
                &json!({
                    "header": header_json(&node.header(o.revision)),
                    "id": o.lease.id,
                    "ttl": o.lease.ttl,
                }),
            ),
            o.repeated,
        ),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn keep_alive(node: Node, mut req: Request, max: usize) -> Response {
    let body: IdBody = match json_body(&mut req, max, r#"{"id":7}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match node.lease_keep_alive(body.id.0).await {
        Ok(l) => Response::json(
            200,
            &json!({
                "header": header_json(&node.header(node.applied_revision())),
                "id": l.id,
                "ttl": l.ttl,
            }),
        ),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn revoke(node: Node, mut req: Request, max: usize) -> Response {
    let rid = match request_id(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: IdBody = match json_body(&mut req, max, r#"{"id":7}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match node.lease_revoke(body.id.0, rid).await {
        Ok(o) => replayed(
            Response::json(
                200,
                &json!({
                    "header": header_json(&node.header(o.revision)),
                    "id": o.lease.id,
                    "deleted": o.deleted,
                }),
            ),
            o.repeated,
        ),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn time_to_live(node: Node, mut req: Request, max: usize) -> Response {
    let body: TimeToLiveBody = match json_body(&mut req, max, r#"{"id":7,"keys":true}"#).await {
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
    match node.lease_time_to_live(body.id.0, body.keys, c).await {
        Ok(t) => {
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
            let mut out = json!({
                "header": header_json(&node.header(node.applied_revision())),
                "id": t.id,
                "ttl": t.ttl,
                "remaining_ms": t.remaining_ms,
                "granted_ttl": t.granted_ttl,
            });
            if body.keys {
                out["keys"] = json!(keys);
                if binary {
                    out["encoding"] = json!("base64");
                }
            }
            Response::json(200, &out)
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn leases(node: Node, mut req: Request, max: usize) -> Response {
    let body: LeasesBody = if *req.method() == crate::http::Method::Get {
        let pairs = match super::watch::query_pairs(req.query()) {
            Ok(p) => p,
            Err(r) => return r,
        };
        LeasesBody {
            consistency: pairs
                .into_iter()
                .find(|(k, _)| k == "consistency")
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()),
        }
    } else {
        match json_body(&mut req, max, r#"{}"#).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let c = match consistency(body.consistency.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match node.lease_list(c).await {
        Ok(ids) => Response::json(
            200,
            &json!({
                "header": header_json(&node.header(node.applied_revision())),
                "leases": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => error_response(&e),
    }
}
