//! `ferrium.kv.KvService`: sets, gets, deletes, batches and listings.

use super::{consistency, read_status, status};
use crate::api::proto::kv::kv_service_server::KvService;
use crate::api::proto::kv::{
    BatchSetRequest, BatchSetResponse, DeleteRequest, DeleteResponse, ExistsRequest,
    ExistsResponse, GetRequest, GetResponse, ListKeysRequest, ListKeysResponse, SetRequest,
    SetResponse,
};
use crate::node::Node;
use crate::raft::types::Command;
use tonic::{Request, Response, Status};

/// `ferrium.kv.KvService` on a [`Node`].
#[derive(Clone)]
pub struct KvApi {
    pub(super) node: Node,
}

#[tonic::async_trait]
impl KvService for KvApi {
    async fn set(&self, req: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let SetRequest { key, value } = req.into_inner();
        let result = self
            .node
            .write(Command::Set { key, value })
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
                value: v.value,
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
        let key = req.into_inner().key;
        let result = self
            .node
            .write(Command::Delete { key })
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
        let pairs = req
            .into_inner()
            .pairs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        let result = self
            .node
            .write(Command::BatchSet { pairs })
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
        let next_start_after = match (has_more, items.last()) {
            (true, Some((k, _))) => k.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListKeysResponse {
            keys: items.into_iter().map(|(k, _)| k).collect(),
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
}
