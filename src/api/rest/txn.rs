//! KV v2 over REST: `/range`, `/txn`, `/compact`, the compare-and-swap form
//! of `/write`, and request ids (`Idempotency-Key`).
//!
//! Bytes follow one convention on every route: key, value and range fields
//! are JSON strings holding UTF-8 text, unless the request object says
//! `"encoding": "base64"`, in which case they hold base64 and the answer's
//! byte fields are base64 too. In a text answer, a key-value whose key or
//! value is not UTF-8 is given in base64 and says `"encoding": "base64"`.
//!
//! Every answer carries `header`: `cluster_id` (a string: it may exceed
//! what a JavaScript number holds), `member_id`, `raft_term`, `revision`.

use super::errors::{error_response, invalid, json_body};
use super::kv::consistency;
use crate::api::base64;
use crate::http::{Request, Response};
use crate::node::{self, Header, Node};
use crate::raft::kv::{
    Compare, CompareOp, CompareTarget, DeleteRange, KeyValue, OpResult, Put, RangeRequest,
    RangeResult, SortOrder, SortTarget, Txn, TxnOp, TxnResult, prefix_end,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The request header naming a request id (as Stripe and the IETF draft
/// spell it).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header saying the answer is the kept one of an earlier
/// request with the same id.
pub const REPLAYED: &str = "idempotent-replayed";

/// How a request's byte fields are spelled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Text,
    Base64,
}

impl Encoding {
    pub(super) fn parse(e: Option<&str>) -> Result<Encoding, Response> {
        match e {
            None | Some("" | "utf-8" | "utf8" | "text") => Ok(Encoding::Text),
            Some("base64") => Ok(Encoding::Base64),
            Some(other) => Err(invalid(format!(
                "encoding {other:?} is not \"utf-8\" or \"base64\""
            ))),
        }
    }

    pub(super) fn bytes(self, field: &str, s: &str) -> Result<Vec<u8>, Response> {
        match self {
            Encoding::Text => Ok(s.as_bytes().to_vec()),
            Encoding::Base64 => {
                base64::decode(s).map_err(|e| invalid(format!("{field} is not base64: {e}")))
            }
        }
    }

    fn text(self, b: &[u8]) -> Value {
        match self {
            Encoding::Base64 => json!(base64::encode(b)),
            Encoding::Text => json!(String::from_utf8_lossy(b)),
        }
    }
}

/// A key-value in an answer, by the convention of the module docs.
pub(super) fn kv_json(kv: &KeyValue, enc: Encoding) -> Value {
    let binary = std::str::from_utf8(&kv.key).is_err() || std::str::from_utf8(&kv.value).is_err();
    let enc = if binary { Encoding::Base64 } else { enc };
    let mut v = json!({
        "key": enc.text(&kv.key),
        "value": enc.text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    });
    if binary {
        v["encoding"] = json!("base64");
    }
    v
}

pub(super) fn header_json(h: &Header) -> Value {
    json!({
        "cluster_id": h.cluster_id.to_string(),
        "member_id": h.member_id,
        "raft_term": h.raft_term,
        "revision": h.revision,
    })
}

/// The request id of a request, if it names one.
pub(super) fn request_id(req: &Request) -> Result<Option<Vec<u8>>, Response> {
    match req.header(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(id) if id.is_empty() || id.len() > node::MAX_REQUEST_ID => Err(invalid(format!(
            "the Idempotency-Key header is 1 to {} bytes; this one is {}",
            node::MAX_REQUEST_ID,
            id.len()
        ))),
        Some(id) => Ok(Some(id.as_bytes().to_vec())),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeBody {
    key: String,
    #[serde(default)]
    range_end: Option<String>,
    /// Every key starting with `key`.
    #[serde(default)]
    prefix: bool,
    /// Every key from `key` on.
    #[serde(default)]
    from_key: bool,
    #[serde(default)]
    limit: u64,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    sort_order: Option<String>,
    #[serde(default)]
    sort_target: Option<String>,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    count_only: bool,
    #[serde(default)]
    min_mod_revision: u64,
    #[serde(default)]
    max_mod_revision: u64,
    #[serde(default)]
    min_create_revision: u64,
    #[serde(default)]
    max_create_revision: u64,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
}

/// `range_end` from the three ways of giving one.
fn range_end(
    enc: Encoding,
    key: &[u8],
    range_end: Option<&str>,
    prefix: bool,
    from_key: bool,
) -> Result<Vec<u8>, Response> {
    match (range_end, prefix, from_key) {
        (Some(e), false, false) => enc.bytes("range_end", e),
        (None, true, false) => Ok(prefix_end(key)),
        (None, false, true) => Ok(vec![0]),
        (None, false, false) => Ok(Vec::new()),
        _ => Err(invalid(
            "give at most one of range_end, prefix and from_key",
        )),
    }
}

impl RangeBody {
    fn request(&self, outer: Encoding) -> Result<RangeRequest, Response> {
        let enc = match &self.encoding {
            Some(e) => Encoding::parse(Some(e))?,
            None => outer,
        };
        let key = enc.bytes("key", &self.key)?;
        let range_end = range_end(
            enc,
            &key,
            self.range_end.as_deref(),
            self.prefix,
            self.from_key,
        )?;
        Ok(RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order: match self.sort_order.as_deref() {
                None | Some("none") => SortOrder::None,
                Some("ascend") => SortOrder::Ascend,
                Some("descend") => SortOrder::Descend,
                Some(o) => {
                    return Err(invalid(format!(
                        "sort_order {o:?} is not \"none\", \"ascend\" or \"descend\""
                    )));
                }
            },
            sort_target: match self.sort_target.as_deref() {
                None | Some("key") => SortTarget::Key,
                Some("version") => SortTarget::Version,
                Some("create" | "create_revision") => SortTarget::Create,
                Some("mod" | "mod_revision") => SortTarget::Mod,
                Some("value") => SortTarget::Value,
                Some(t) => {
                    return Err(invalid(format!(
                        "sort_target {t:?} is not \"key\", \"version\", \"create_revision\", \"mod_revision\" or \"value\""
                    )));
                }
            },
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        })
    }
}

fn range_json(r: &RangeResult, enc: Encoding) -> Value {
    json!({
        "kvs": r.kvs.iter().map(|kv| kv_json(kv, enc)).collect::<Vec<_>>(),
        "more": r.more,
        "count": r.count,
    })
}

/// `POST /range`.
pub(super) async fn range(node: Node, mut req: Request, max: usize) -> Response {
    let body: RangeBody = match json_body(&mut req, max, r#"{"key":"user/","prefix":true}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let enc = match Encoding::parse(body.encoding.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (request, c) = match (body.request(enc), consistency(body.consistency.as_deref())) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match node.range(request, c).await {
        Ok((result, revision)) => {
            let mut out = range_json(&result, enc);
            out["header"] = header_json(&node.header(revision));
            Response::json(200, &out)
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    from_key: bool,
    target: String,
    #[serde(alias = "op")]
    result: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    create_revision: Option<u64>,
    #[serde(default)]
    mod_revision: Option<u64>,
    #[serde(default)]
    lease: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    lease: u64,
    #[serde(default)]
    prev_kv: bool,
    #[serde(default)]
    ignore_value: bool,
    #[serde(default)]
    ignore_lease: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    key: String,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    from_key: bool,
    #[serde(default)]
    prev_kv: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "snake_case")]
enum OpBody {
    Put(PutBody),
    DeleteRange(DeleteBody),
    Range(RangeBody),
    Txn(TxnBody),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
    #[serde(default)]
    encoding: Option<String>,
}

impl TxnBody {
    fn txn(&self, outer: Encoding, depth: usize) -> Result<Txn, Response> {
        if depth > crate::raft::codec::MAX_NESTING / 2 {
            return Err(invalid("transactions are nested too deeply"));
        }
        let enc = match &self.encoding {
            Some(e) => Encoding::parse(Some(e))?,
            None => outer,
        };
        let mut compare = Vec::with_capacity(self.compare.len());
        for c in &self.compare {
            compare.push(c.compare(enc)?);
        }
        let ops = |list: &[OpBody]| -> Result<Vec<TxnOp>, Response> {
            list.iter().map(|o| o.op(enc, depth)).collect()
        };
        Ok(Txn {
            compare,
            success: ops(&self.success)?,
            failure: ops(&self.failure)?,
        })
    }
}

impl CompareBody {
    fn compare(&self, enc: Encoding) -> Result<Compare, Response> {
        let key = enc.bytes("compare key", &self.key)?;
        let range_end = range_end(
            enc,
            &key,
            self.range_end.as_deref(),
            self.prefix,
            self.from_key,
        )?;
        let op = match self.result.as_str() {
            "=" | "==" | "equal" => CompareOp::Equal,
            "!=" | "not_equal" => CompareOp::NotEqual,
            "<" | "less" => CompareOp::Less,
            ">" | "greater" => CompareOp::Greater,
            other => {
                return Err(invalid(format!(
                    "comparison {other:?} is not one of \"=\", \"!=\", \"<\", \">\""
                )));
            }
        };
        let need = |v: Option<u64>, name: &str| {
            v.ok_or_else(|| {
                invalid(format!(
                    "a comparison on {name} needs the field \"{name}\" with the number to compare with"
                ))
            })
        };
        let target = match self.target.as_str() {
            "value" => {
                CompareTarget::Value(enc.bytes(
                    "compare value",
                    self.value.as_deref().ok_or_else(|| {
                        invalid("a comparison on value needs the field \"value\"")
                    })?,
                )?)
            }
            "version" => CompareTarget::Version(need(self.version, "version")?),
            "create_revision" | "create" => {
                CompareTarget::CreateRevision(need(self.create_revision, "create_revision")?)
            }
            "mod_revision" | "mod" => {
                CompareTarget::ModRevision(need(self.mod_revision, "mod_revision")?)
            }
            "lease" => CompareTarget::Lease(need(self.lease, "lease")?),
            other => {
                return Err(invalid(format!(
                    "compare target {other:?} is not one of \"value\", \"version\", \"create_revision\", \"mod_revision\", \"lease\""
                )));
            }
        };
        Ok(Compare {
            key,
            range_end,
            op,
            target,
        })
    }
}

impl OpBody {
    fn op(&self, enc: Encoding, depth: usize) -> Result<TxnOp, Response> {
        Ok(match self {
            OpBody::Put(p) => TxnOp::Put(Put {
                key: enc.bytes("key", &p.key)?,
                value: enc.bytes("value", &p.value)?,
                lease: p.lease,
                prev_kv: p.prev_kv,
                ignore_value: p.ignore_value,
                ignore_lease: p.ignore_lease,
            }),
            OpBody::DeleteRange(d) => {
                let key = enc.bytes("key", &d.key)?;
                TxnOp::DeleteRange(DeleteRange {
                    range_end: range_end(enc, &key, d.range_end.as_deref(), d.prefix, d.from_key)?,
                    key,
                    prev_kv: d.prev_kv,
                })
            }
            OpBody::Range(r) => {
                if r.consistency.is_some() {
                    return Err(invalid(
                        "a range inside a transaction reads at the transaction's revision; leave out consistency",
                    ));
                }
                TxnOp::Range(r.request(enc)?)
            }
            OpBody::Txn(t) => TxnOp::Txn(Box::new(t.txn(enc, depth + 1)?)),
        })
    }
}

fn txn_json(r: &TxnResult, enc: Encoding) -> Value {
    let responses: Vec<Value> = r
        .responses
        .iter()
        .map(|o| match o {
            OpResult::Put { prev_kv } => json!({"put": {
                "prev_kv": prev_kv.as_ref().map(|kv| kv_json(kv, enc)),
            }}),
            OpResult::DeleteRange { deleted, prev_kvs } => json!({"delete_range": {
                "deleted": deleted,
                "prev_kvs": prev_kvs.iter().map(|kv| kv_json(kv, enc)).collect::<Vec<_>>(),
            }}),
            OpResult::Range(r) => json!({"range": range_json(r, enc)}),
            OpResult::Txn(t) => json!({"txn": txn_json(t, enc)}),
        })
        .collect();
    json!({"succeeded": r.succeeded, "responses": responses})
}

/// `POST /txn`.
pub(super) async fn txn(node: Node, mut req: Request, max: usize) -> Response {
    let id = match request_id(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: TxnBody = match json_body(
        &mut req,
        max,
        r#"{"compare":[{"key":"k","target":"version","result":"=","version":0}],"success":[{"put":{"key":"k","value":"v"}}]}"#,
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
    let txn = match body.txn(enc, 0) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match node.txn(txn, id).await {
        Ok((result, revision, repeated)) => {
            let mut out = txn_json(&result, enc);
            out["header"] = header_json(&node.header(revision));
            replayed(Response::json(200, &out), repeated)
        }
        Err(e) => error_response(&e),
    }
}

/// Marks the kept answer of an earlier request with the same id.
pub(super) fn replayed(r: Response, repeated: bool) -> Response {
    if repeated {
        r.header(REPLAYED, "true")
    } else {
        r
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBody {
    revision: u64,
}

/// `POST /compact`.
pub(super) async fn compact(node: Node, mut req: Request, max: usize) -> Response {
    let id = match request_id(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: CompactBody = match json_body(&mut req, max, r#"{"revision":1000}"#).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match node.compact(body.revision, id).await {
        Ok(point) => Response::json(
            200,
            &json!({
                "header": header_json(&node.header(node.applied_revision())),
                "compact_revision": point,
            }),
        ),
        Err(e) => error_response(&e),
    }
}
