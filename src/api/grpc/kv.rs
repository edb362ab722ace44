//! `ferrium.kv.KvService`: sets, gets, deletes, batches and listings, and
//! the KV v2 calls on bytes: ranges at a revision, transactions, compaction.

use super::{consistency, read_status, status};
use crate::api::proto::kv as pb;
use crate::api::proto::kv::kv_service_server::KvService;
use crate::api::proto::kv::{
    BatchSetRequest, BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest,
    ExistsResponse, GetRequest, GetResponse, ListKeysRequest, ListKeysResponse, SetRequest,
    SetResponse,
};
use crate::node::{self, Node};
use crate::raft::kv;
use crate::raft::types::Command;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// `ferrium.kv.KvService` on a [`Node`].
#[derive(Clone)]
pub struct KvApi {
    pub(super) node: Node,
}

#[tonic::async_trait]
impl KvService for KvApi {
    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let id = request_id(&req)?;
        let SetRequest { key, value } = req.into_inner();
        let result = self
            .node
            .write_with_id(Command::Set { key, value }, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(SetResponse {
            success: true,
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let value = self
            .node
            .read(&r.key, c)
            .await
            .map_err(|e| read_status(&e))?;
        let resp = match value {
            Some(v) => GetResponse {
                key: r.key,
                value: String::from_utf8_lossy(&v.value).into_owned(),
                found: true,
                error: String::new(),
                create_revision: v.create_revision,
                mod_revision: v.mod_revision,
                version: v.version,
            },
            None => GetResponse {
                key: r.key,
                ..GetResponse::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let id = request_id(&req)?;
        let key = req.into_inner().key;
        let result = self
            .node
            .write_with_id(Command::Delete { key }, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(DeleteResponse {
            success: true,
            existed: result.existed.unwrap_or(false),
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn batch_set(
        &self,
        req: Request<BatchSetRequest>,
    ) -> Result<Response<BatchSetResponse>, Status> {
        let id = request_id(&req)?;
        let pairs = req
            .into_inner()
            .pairs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let result = self
            .node
            .write_with_id(Command::BatchSet { pairs }, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(BatchSetResponse {
            success: true,
            count: result.count,
            error: String::new(),
            revision: result.revision,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let start_after = Some(r.start_after.as_str()).filter(|s| !s.is_empty());
        let (items, has_more) = self
            .node
            .list(&r.prefix, start_after, r.limit as usize, c)
            .await
            .map_err(|e| read_status(&e))?;
        // The original messages hold text; Range serves binary keys.
        let next_start_after = match (has_more, items.last()) {
            (true, Some((k, _))) => String::from_utf8_lossy(k).into_owned(),
            _ => String::new(),
        };
        Ok(Response::new(ListKeysResponse {
            keys: items
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect(),
            has_more,
            error: String::new(),
            next_start_after,
        }))
    }

    async fn exists(
        &self,
        req: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let value = self
            .node
            .read(&r.key, c)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(ExistsResponse {
            exists: value.is_some(),
            error: String::new(),
        }))
    }

    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = req.into_inner();
        let c = consistency(&r.consistency)?;
        let (result, revision) = self
            .node
            .range(range_in(r)?, c)
            .await
            .map_err(|e| read_status(&e))?;
        Ok(Response::new(range_out(
            result,
            header(self.node.header(revision)),
        )))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let id = request_id(&req)?;
        let txn = txn_in(req.into_inner(), 0)?;
        let (result, revision, repeated) = self.node.txn(txn, id).await.map_err(|e| status(&e))?;
        Ok(answer(
            txn_out(result, header(self.node.header(revision))),
            repeated,
        ))
    }

    type WatchStream = super::watch::WatchStream;

    async fn watch(
        &self,
        req: Request<tonic::Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        super::watch::watch(self.node.clone(), req).await
    }

    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let id = request_id(&req)?;
        super::lease::grant(&self.node, id, req.into_inner()).await
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request_id(&req)?;
        super::lease::revoke(&self.node, id, req.into_inner()).await
    }

    type LeaseKeepAliveStream = super::lease::KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        super::lease::keep_alive(self.node.clone(), req).await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        super::lease::time_to_live(&self.node, req.into_inner()).await
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        super::lease::leases(&self.node, req.into_inner()).await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let id = request_id(&req)?;
        let revision = req.into_inner().revision;
        let point = self
            .node
            .compact(revision, id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::CompactResponse {
            header: header(self.node.header(self.node.applied_revision())),
            compact_revision: point,
        }))
    }
}

/// The metadata entry naming a write's request id.
pub const IDEMPOTENCY_METADATA: &str = "idempotency-key";
/// Set on the answer that is the kept one of an earlier request with the
/// same id.
pub const REPLAYED_METADATA: &str = "idempotent-replayed";

pub(crate) fn request_id<T>(req: &Request<T>) -> Result<Option<Vec<u8>>, Status> {
    match req.metadata().get(IDEMPOTENCY_METADATA) {
        None => Ok(None),
        Some(v) => {
            let b = v.as_bytes();
            if b.is_empty() || b.len() > node::MAX_REQUEST_ID {
                return Err(Status::invalid_argument(format!(
                    "the idempotency-key metadata is 1 to {} bytes; this one is {}",
                    node::MAX_REQUEST_ID,
                    b.len()
                )));
            }
            Ok(Some(b.to_vec()))
        }
    }
}

fn answer<T>(message: T, repeated: bool) -> Response<T> {
    let mut r = Response::new(message);
    if repeated {
        mark_replayed(&mut r);
    }
    r
}

/// Says on `r` that it is the kept answer of an earlier request.
pub(super) fn mark_replayed<T>(r: &mut Response<T>) {
    r.metadata_mut()
        .insert(REPLAYED_METADATA, MetadataValue::from_static("true"));
}

pub(super) fn header(h: node::Header) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub(super) fn kv_out(kv: kv::KeyValue) -> pb::VersionedKeyValue {
    pb::VersionedKeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn range_in(r: pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    use pb::range_request::{SortOrder, SortTarget};
    Ok(kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match SortOrder::try_from(r.sort_order) {
            Ok(SortOrder::None) => kv::SortOrder::None,
            Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
            Ok(SortOrder::Descend) => kv::SortOrder::Descend,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "sort_order {} is not NONE, ASCEND or DESCEND",
                    r.sort_order
                )));
            }
        },
        sort_target: match SortTarget::try_from(r.sort_target) {
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
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

fn range_out(r: kv::RangeResult, h: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header: h,
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: r.count,
    }
}

fn txn_in(t: pb::TxnRequest, depth: usize) -> Result<kv::Txn, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    if depth > crate::raft::codec::MAX_NESTING / 2 {
        return Err(Status::invalid_argument(
            "transactions are nested too deeply",
        ));
    }
    let mut compare = Vec::with_capacity(t.compare.len());
    for c in t.compare {
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
        let target = match (CompareTarget::try_from(c.target), c.target_union) {
            (Ok(CompareTarget::Version), Some(TargetUnion::Version(n))) => {
                kv::CompareTarget::Version(n)
            }
            (Ok(CompareTarget::Version), None) => kv::CompareTarget::Version(0),
            (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(n))) => {
                kv::CompareTarget::CreateRevision(n)
            }
            (Ok(CompareTarget::Create), None) => kv::CompareTarget::CreateRevision(0),
            (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(n))) => {
                kv::CompareTarget::ModRevision(n)
            }
            (Ok(CompareTarget::Mod), None) => kv::CompareTarget::ModRevision(0),
            (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => kv::CompareTarget::Value(v),
            (Ok(CompareTarget::Value), None) => kv::CompareTarget::Value(Vec::new()),
            (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(n))) => kv::CompareTarget::Lease(n),
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
    let ops = |list: Vec<pb::RequestOp>| -> Result<Vec<kv::TxnOp>, Status> {
        use pb::request_op::Request as R;
        list.into_iter()
            .map(|o| match o.request {
                Some(R::RequestRange(r)) => {
                    if !r.consistency.is_empty() {
                        return Err(Status::invalid_argument(
                            "a range inside a transaction reads at the transaction's revision; leave consistency empty",
                        ));
                    }
                    Ok(kv::TxnOp::Range(range_in(r)?))
                }
                Some(R::RequestPut(p)) => Ok(kv::TxnOp::Put(kv::Put {
                    key: p.key,
                    value: p.value,
                    lease: p.lease,
                    prev_kv: p.prev_kv,
                    ignore_value: p.ignore_value,
                    ignore_lease: p.ignore_lease,
                })),
                Some(R::RequestDeleteRange(d)) => Ok(kv::TxnOp::DeleteRange(kv::DeleteRange {
                    key: d.key,
                    range_end: d.range_end,
                    prev_kv: d.prev_kv,
                })),
                Some(R::RequestTxn(t)) => Ok(kv::TxnOp::Txn(Box::new(txn_in(t, depth + 1)?))),
                None => Err(Status::invalid_argument("a transaction operation is empty")),
            })
            .collect()
    };
    Ok(kv::Txn {
        compare,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

fn txn_out(t: kv::TxnResult, h: Option<pb::ResponseHeader>) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    pb::TxnResponse {
        header: h,
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|o| pb::ResponseOp {
                response: Some(match o {
                    kv::OpResult::Put { prev_kv } => R::ResponsePut(pb::PutResponse {
                        prev_kv: prev_kv.map(kv_out),
                    }),
                    kv::OpResult::DeleteRange { deleted, prev_kvs } => {
                        R::ResponseDeleteRange(pb::DeleteRangeResponse {
                            deleted,
                            prev_kvs: prev_kvs.into_iter().map(kv_out).collect(),
                        })
                    }
                    kv::OpResult::Range(r) => R::ResponseRange(range_out(r, None)),
                    kv::OpResult::Txn(t) => R::ResponseTxn(txn_out(t, None)),
                }),
            })
            .collect(),
    }
}
