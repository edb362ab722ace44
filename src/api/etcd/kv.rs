//! etcd's `KV` service: `Range`, `Put`, `DeleteRange`, `Txn` and `Compact`.
//! A `Put` or a `DeleteRange` is a transaction of one operation, so it has
//! the same semantics (and request ids) as one sent through `Txn`.

use super::{EtcdApi, errors, header, kv_out, read_status, signed, status, unsigned};
use crate::api::grpc::kv::request_id;
use crate::api::proto::etcd::etcdserverpb as epb;
use crate::node::{MAX_TXN_OPS, Node, ReadConsistency};
use crate::raft::codec::MAX_NESTING;
use crate::raft::kv;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl epb::kv_server::Kv for EtcdApi {
    async fn range(
        &self,
        req: Request<epb::RangeRequest>,
    ) -> Result<Response<epb::RangeResponse>, Status> {
        let r = req.into_inner();
        let consistency = if r.serializable {
            ReadConsistency::Stale
        } else {
            ReadConsistency::Linearizable
        };
        let (result, revision) = self
            .node
            .range(range_in(r)?, consistency)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(range_out(
            result,
            header(self.node.header(revision)),
        )))
    }

    async fn put(
        &self,
        req: Request<epb::PutRequest>,
    ) -> Result<Response<epb::PutResponse>, Status> {
        let id = request_id(&req)?;
        let p = req.into_inner();
        let op = epb::RequestOp {
            request: Some(epb::request_op::Request::RequestPut(p)),
        };
        let (mut r, revision) = one(&self.node, op, id).await?;
        let prev_kv = match r.pop() {
            Some(kv::OpResult::Put { prev_kv }) => prev_kv.map(kv_out),
            _ => None,
        };
        Ok(Response::new(epb::PutResponse {
            header: header(self.node.header(revision)),
            prev_kv,
        }))
    }

    async fn delete_range(
        &self,
        req: Request<epb::DeleteRangeRequest>,
    ) -> Result<Response<epb::DeleteRangeResponse>, Status> {
        let id = request_id(&req)?;
        let d = req.into_inner();
        let op = epb::RequestOp {
            request: Some(epb::request_op::Request::RequestDeleteRange(d)),
        };
        let (mut r, revision) = one(&self.node, op, id).await?;
        let (deleted, prev_kvs) = match r.pop() {
            Some(kv::OpResult::DeleteRange { deleted, prev_kvs }) => (deleted, prev_kvs),
            _ => (0, Vec::new()),
        };
        Ok(Response::new(epb::DeleteRangeResponse {
            header: header(self.node.header(revision)),
            deleted: signed(deleted),
            prev_kvs: prev_kvs.into_iter().map(kv_out).collect(),
        }))
    }

    async fn txn(
        &self,
        req: Request<epb::TxnRequest>,
    ) -> Result<Response<epb::TxnResponse>, Status> {
        let id = request_id(&req)?;
        let txn = txn_in(req.into_inner(), 0)?;
        check(&txn)?;
        let (result, revision, _) = self.node.txn(txn, id).await.map_err(|e| status(&e))?;
        Ok(Response::new(txn_out(
            result,
            header(self.node.header(revision)),
        )))
    }

    async fn compact(
        &self,
        req: Request<epb::CompactionRequest>,
    ) -> Result<Response<epb::CompactionResponse>, Status> {
        let id = request_id(&req)?;
        let revision = unsigned(req.into_inner().revision, "revision")?;
        self.node
            .compact(revision, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(epb::CompactionResponse {
            header: header(self.node.header(self.node.applied_revision())),
        }))
    }
}

/// Runs one operation as a transaction; its result and revision.
async fn one(
    node: &Node,
    op: epb::RequestOp,
    id: Option<Vec<u8>>,
) -> Result<(Vec<kv::OpResult>, u64), Status> {
    let txn = kv::Txn {
        compare: Vec::new(),
        success: ops_in(vec![op], 0)?,
        failure: Vec::new(),
    };
    let (result, revision, _) = node.txn(txn, id).await.map_err(|e| status(&e))?;
    Ok((result.responses, revision))
}

/// etcd's own checks, with its texts, before the node's.
fn check(t: &kv::Txn) -> Result<(), Status> {
    if t.op_count() > MAX_TXN_OPS {
        return Err(Status::invalid_argument(errors::TOO_MANY_OPS));
    }
    if t.duplicate_key().is_some() {
        return Err(Status::invalid_argument(errors::DUPLICATE_KEY));
    }
    Ok(())
}

fn key_given(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(errors::EMPTY_KEY));
    }
    Ok(())
}

pub(super) fn range_in(r: epb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    use epb::range_request::{SortOrder, SortTarget};
    key_given(&r.key)?;
    let sort_order = match SortOrder::try_from(r.sort_order) {
        Ok(SortOrder::None) => kv::SortOrder::None,
        Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
        Ok(SortOrder::Descend) => kv::SortOrder::Descend,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "sort_order {} is not NONE, ASCEND or DESCEND",
                r.sort_order
            )));
        }
    };
    let sort_target = match SortTarget::try_from(r.sort_target) {
        Ok(SortTarget::Key) => kv::SortTarget::Key,
        Ok(SortTarget::Version) => kv::SortTarget::Version,
        Ok(SortTarget::Create) => kv::SortTarget::Create,
        Ok(SortTarget::Mod) => kv::SortTarget::Mod,
        Ok(SortTarget::Value) => kv::SortTarget::Value,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "sort_target {} is not KEY, VERSION, CREATE, MOD or VALUE",
                r.sort_target
            )));
        }
    };
    // etcd reads a negative limit or revision as none.
    let positive = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: positive(r.limit),
        revision: positive(r.revision),
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: positive(r.min_mod_revision),
        max_mod_revision: positive(r.max_mod_revision),
        min_create_revision: positive(r.min_create_revision),
        max_create_revision: positive(r.max_create_revision),
    })
}

pub(super) fn range_out(r: kv::RangeResult, h: Option<epb::ResponseHeader>) -> epb::RangeResponse {
    epb::RangeResponse {
        header: h,
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: signed(r.count),
    }
}

fn txn_in(t: epb::TxnRequest, depth: usize) -> Result<kv::Txn, Status> {
    use epb::compare::{CompareResult, CompareTarget, TargetUnion};
    if depth > MAX_NESTING / 2 {
        return Err(Status::invalid_argument(
            "transactions are nested too deeply",
        ));
    }
    let mut compare = Vec::with_capacity(t.compare.len());
    for c in t.compare {
        key_given(&c.key)?;
        let op = match CompareResult::try_from(c.result) {
            Ok(CompareResult::Equal) => kv::CompareOp::Equal,
            Ok(CompareResult::NotEqual) => kv::CompareOp::NotEqual,
            Ok(CompareResult::Less) => kv::CompareOp::Less,
            Ok(CompareResult::Greater) => kv::CompareOp::Greater,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "compare result {} is not EQUAL, GREATER, LESS or NOT_EQUAL",
                    c.result
                )));
            }
        };
        // etcd compares a missing operand as zero (or the empty value).
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let target = match (CompareTarget::try_from(c.target), c.target_union) {
            (Ok(CompareTarget::Version), Some(TargetUnion::Version(v))) => {
                kv::CompareTarget::Version(n(v))
            }
            (Ok(CompareTarget::Version), None) => kv::CompareTarget::Version(0),
            (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v))) => {
                kv::CompareTarget::CreateRevision(n(v))
            }
            (Ok(CompareTarget::Create), None) => kv::CompareTarget::CreateRevision(0),
            (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v))) => {
                kv::CompareTarget::ModRevision(n(v))
            }
            (Ok(CompareTarget::Mod), None) => kv::CompareTarget::ModRevision(0),
            (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => kv::CompareTarget::Value(v),
            (Ok(CompareTarget::Value), None) => kv::CompareTarget::Value(Vec::new()),
            (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => {
                kv::CompareTarget::Lease(n(v))
            }
            (Ok(CompareTarget::Lease), None) => kv::CompareTarget::Lease(0),
            (Ok(t), Some(_)) => {
                return Err(Status::invalid_argument(format!(
                    "a comparison on {} carries the operand of another target",
                    t.as_str_name()
                )));
            }
            (Err(_), _) => {
                return Err(Status::invalid_argument(format!(
                    "compare target {} is not VERSION, CREATE, MOD, VALUE or LEASE",
                    c.target
                )));
            }
        };
        compare.push(kv::Compare {
            key: c.key,
            range_end: c.range_end,
            op,
            target,
        });
    }
    Ok(kv::Txn {
        compare,
        success: ops_in(t.success, depth)?,
        failure: ops_in(t.failure, depth)?,
    })
}

fn ops_in(list: Vec<epb::RequestOp>, depth: usize) -> Result<Vec<kv::TxnOp>, Status> {
    use epb::request_op::Request as R;
    list.into_iter()
        .map(|o| match o.request {
            Some(R::RequestRange(r)) => Ok(kv::TxnOp::Range(range_in(r)?)),
            Some(R::RequestPut(p)) => {
                key_given(&p.key)?;
                Ok(kv::TxnOp::Put(kv::Put {
                    key: p.key,
                    value: p.value,
                    lease: unsigned(p.lease, "lease")?,
                    prev_kv: p.prev_kv,
                    ignore_value: p.ignore_value,
                    ignore_lease: p.ignore_lease,
                }))
            }
            Some(R::RequestDeleteRange(d)) => {
                key_given(&d.key)?;
                Ok(kv::TxnOp::DeleteRange(kv::DeleteRange {
                    key: d.key,
                    range_end: d.range_end,
                    prev_kv: d.prev_kv,
                }))
            }
            Some(R::RequestTxn(t)) => Ok(kv::TxnOp::Txn(Box::new(txn_in(t, depth + 1)?))),
            None => Err(Status::invalid_argument("a transaction operation is empty")),
        })
        .collect()
}

fn txn_out(t: kv::TxnResult, h: Option<epb::ResponseHeader>) -> epb::TxnResponse {
    use epb::response_op::Response as R;
    // The answers inside carry only the revision (as etcd's do).
    let inner = h.map(|h| epb::ResponseHeader {
        revision: h.revision,
        ..epb::ResponseHeader::default()
    });
    let h_outer = h;
    let h = inner;
    let responses = t
        .responses
        .into_iter()
        .map(|o| epb::ResponseOp {
            response: Some(match o {
                kv::OpResult::Put { prev_kv } => R::ResponsePut(epb::PutResponse {
                    header: h,
                    prev_kv: prev_kv.map(kv_out),
                }),
                kv::OpResult::DeleteRange { deleted, prev_kvs } => {
                    R::ResponseDeleteRange(epb::DeleteRangeResponse {
                        header: h,
                        deleted: signed(deleted),
                        prev_kvs: prev_kvs.into_iter().map(kv_out).collect(),
                    })
                }
                kv::OpResult::Range(r) => R::ResponseRange(range_out(r, h)),
                kv::OpResult::Txn(t) => R::ResponseTxn(txn_out(t, h)),
            }),
        })
        .collect();
    epb::TxnResponse {
        header: h_outer,
        succeeded: t.succeeded,
        responses,
    }
}
