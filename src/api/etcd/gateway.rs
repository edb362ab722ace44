//! etcd's JSON gateway on the HTTP port: `POST /v3/...` with the proto3
//! JSON mapping of etcd's messages (bytes in base64, 64-bit integers as
//! strings, enum names, etcd's field names; fields at their default value
//! left out), as etcd's own gateway answers.
//!
//! Every route calls the same method the gRPC service serves, so the
//! gateway has no semantics of its own. Streams follow etcd's gateway: the
//! request body of `/v3/watch` and `/v3/lease/keepalive` is a sequence of
//! JSON requests (one is enough), and the answer is a chunked sequence of
//! `{"result": ...}` lines, ending with `{"error": ...}` if the stream
//! fails. A `/v3/watch` stream lasts until the client closes it; a
//! keep-alive stream ends after the answer to the last request.
//!
//! Errors have etcd's body, `{"error": text, "code": grpc code, "message":
//! text}`, and the HTTP status etcd's gateway gives for the gRPC code.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

use super::EtcdApi;
use crate::api::op::{ETCD_METHODS, Op, Routes};
use crate::api::proto::etcd::etcdserverpb as epb;
use crate::api::proto::etcd::v3electionpb as elpb;
use crate::api::proto::etcd::v3lockpb as lpb;
use crate::http::{Incoming, Method, Request, Response};

/// The HTTP status etcd's gateway answers for a gRPC code.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// etcd's error body for a failed call.
fn error(s: &Status) -> Response {
    let body = serde_json::json!({
        "error": s.message(),
        "code": s.code() as i32,
        "message": s.message(),
    });
    let mut r = Response::json(http_status(s.code()), &body);
    if let Some(v) = s.metadata().get(crate::api::grpc::OUTCOME_METADATA) {
        if let Ok(v) = v.to_str() {
            r = r.header("x-ferrium-outcome", v.to_string());
        }
    }
    r
}

/// One line of a failed stream, as etcd's gateway writes it.
fn stream_error(s: &Status) -> Vec<u8> {
    let status = http_status(s.code());
    let mut line = serde_json::to_vec(&serde_json::json!({
        "error": {
            "grpc_code": s.code() as i32,
            "http_code": status,
            "message": s.message(),
            "http_status": crate::http::response::reason(status),
        }
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Status::invalid_argument(format!(
            "the request body is not valid JSON for this call: {e}"
        ))
    })
}

fn encode<T: Serialize>(answer: Result<tonic::Response<T>, Status>) -> Response {
    match answer {
        Ok(r) => Response::json(200, r.get_ref()),
        Err(s) => error(&s),
    }
}

/// A gRPC request carrying the HTTP request's idempotency key, if any.
fn grpc_request<T>(message: T, key: Option<&str>) -> Result<tonic::Request<T>, Status> {
    let mut r = tonic::Request::new(message);
    if let Some(k) = key {
        let v = tonic::metadata::MetadataValue::try_from(k).map_err(|_| {
            Status::invalid_argument("the Idempotency-Key header is not valid text")
        })?;
        r.metadata_mut()
            .insert(crate::api::grpc::kv::IDEMPOTENCY_METADATA, v);
    }
    Ok(r)
}

/// Adds every gateway route to `routes`, each with its operation, and
/// etcd's `GET /version`, by which gateway clients (etcd3gw) choose the API
/// path.
pub fn routes(mut routes: Routes, api: EtcdApi, max_body: usize) -> Routes {
    routes = routes.route(Method::Get, "/version", Op::Health, |_req: Request| async {
        Response::json(
            200,
            &serde_json::json!({
                "etcdserver": super::cluster::ETCD_VERSION,
                "etcdcluster": super::cluster::ETCD_VERSION,
                "ferrium": env!("CARGO_PKG_VERSION"),
            }),
        )
    });
    let aliases = ALIASES.iter().filter_map(|(alias, path)| {
        ETCD_METHODS
            .iter()
            .find(|m| m.1 == Some(*path))
            .map(|m| (alias, m.2))
    });
    let paths = ETCD_METHODS
        .iter()
        .filter_map(|(_, path, op, _)| path.as_ref().map(|p| (p, *op)))
        .chain(aliases);
    for (path, op) in paths {
        let api = api.clone();
        routes = routes.route(Method::Post, path, op, move |req: Request| {
            let api = api.clone();
            async move { serve(api, req, max_body).await }
        });
    }
    routes
}

/// The second paths etcd's gateway serves the lease calls on (older
/// clients, etcd3gw among them, use them).
const ALIASES: &[(&str, &str)] = &[
    ("/v3/kv/lease/revoke", "/v3/lease/revoke"),
    ("/v3/kv/lease/timetolive", "/v3/lease/timetolive"),
    ("/v3/kv/lease/leases", "/v3/lease/leases"),
];

macro_rules! unary {
    ($api:expr, $body:expr, $key:expr, $service:path, $method:ident) => {{
        let request = match decode($body).and_then(|m| grpc_request(m, $key)) {
            Ok(r) => r,
            Err(s) => return error(&s),
        };
        encode(<EtcdApi as $service>::$method(&$api, request).await)
    }};
}

async fn serve(api: EtcdApi, mut req: Request, max_body: usize) -> Response {
    use elpb::election_server::Election;
    use epb::cluster_server::Cluster;
    use epb::kv_server::Kv;
    use epb::lease_server::Lease;
    use epb::maintenance_server::Maintenance;
    use lpb::lock_server::Lock;
    let mut path = req.path().to_string();
    if let Some((_, p)) = ALIASES.iter().find(|(a, _)| *a == path) {
        path = (*p).to_string();
    }
    match path.as_str() {
        "/v3/watch" => {
            let requests = json_lines::<epb::WatchRequest>(req.take_body(), max_body);
            return stream_out(super::watch::serve(&api, requests));
        }
        "/v3/lease/keepalive" => {
            let ids = json_lines::<epb::LeaseKeepAliveRequest>(req.take_body(), max_body)
                .map(|r| r.map(|r| r.id));
            return stream_out(super::lease::keep_alive(&api, ids));
        }
        _ => {}
    }
    let key = req
        .header(crate::api::rest::txn::IDEMPOTENCY_KEY)
        .map(str::to_string);
    let key = key.as_deref();
    let body = match req.body_bytes(max_body).await {
        Ok(b) => b,
        Err(e) => return e.to_response(),
    };
    let b = body.as_slice();
    match path.as_str() {
        "/v3/kv/range" => unary!(api, b, key, Kv, range),
        "/v3/kv/put" => unary!(api, b, key, Kv, put),
        "/v3/kv/deleterange" => unary!(api, b, key, Kv, delete_range),
        "/v3/kv/txn" => unary!(api, b, key, Kv, txn),
        "/v3/kv/compaction" => unary!(api, b, key, Kv, compact),
        "/v3/lease/grant" => unary!(api, b, key, Lease, lease_grant),
        "/v3/lease/revoke" => unary!(api, b, key, Lease, lease_revoke),
        "/v3/lease/timetolive" => unary!(api, b, key, Lease, lease_time_to_live),
        "/v3/lease/leases" => unary!(api, b, key, Lease, lease_leases),
        "/v3/cluster/member/add" => unary!(api, b, key, Cluster, member_add),
        "/v3/cluster/member/remove" => unary!(api, b, key, Cluster, member_remove),
        "/v3/cluster/member/update" => unary!(api, b, key, Cluster, member_update),
        "/v3/cluster/member/list" => unary!(api, b, key, Cluster, member_list),
        "/v3/cluster/member/promote" => unary!(api, b, key, Cluster, member_promote),
        "/v3/maintenance/alarm" => unary!(api, b, key, Maintenance, alarm),
        "/v3/maintenance/status" => unary!(api, b, key, Maintenance, status),
        "/v3/maintenance/defragment" => unary!(api, b, key, Maintenance, defragment),
        "/v3/maintenance/hash" => unary!(api, b, key, Maintenance, hash),
        "/v3/maintenance/hashkv" => unary!(api, b, key, Maintenance, hash_kv),
        "/v3/maintenance/transfer-leadership" => unary!(api, b, key, Maintenance, move_leader),
        "/v3/lock/lock" => unary!(api, b, key, Lock, lock),
        "/v3/lock/unlock" => unary!(api, b, key, Lock, unlock),
        "/v3/election/campaign" => unary!(api, b, key, Election, campaign),
        "/v3/election/proclaim" => unary!(api, b, key, Election, proclaim),
        "/v3/election/leader" => unary!(api, b, key, Election, leader),
        "/v3/election/resign" => unary!(api, b, key, Election, resign),
        "/v3/election/observe" => {
            let request = match decode::<elpb::LeaderRequest>(b).and_then(|m| grpc_request(m, key))
            {
                Ok(r) => r,
                Err(s) => return error(&s),
            };
            match api.observe(request).await {
                Ok(s) => stream_out(s.into_inner()),
                Err(s) => error(&s),
            }
        }
        "/v3/maintenance/snapshot" => match api
            .snapshot(tonic::Request::new(epb::SnapshotRequest {}))
            .await
        {
            Ok(s) => stream_out(s.into_inner()),
            Err(s) => error(&s),
        },
        _ => error(&Status::not_found(format!(
            "{path} is not a route of etcd's gateway"
        ))),
    }
}

/// Bytes of JSON text one streamed request may take.
const MAX_LINE: usize = 1 << 20;

/// The JSON values of a streamed request body, parsed as they arrive (with
/// or without newlines between them).
fn json_lines<T>(
    mut body: Incoming,
    max_body: usize,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: DeserializeOwned + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<T, Status>>(4);
    let limit = max_body.min(MAX_LINE);
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match body.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::invalid_argument(format!(
                            "cannot read the request body: {e}"
                        ))))
                        .await;
                    return;
                }
            };
            buf.extend_from_slice(&chunk[..n]);
            // Every complete value so far.
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<T>();
            let mut done = 0;
            let mut failed = None;
            while let Some(v) = values.next() {
                match v {
                    Ok(v) => {
                        done = values.byte_offset();
                        if tx.send(Ok(v)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_eof() => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                let _ = tx
                    .send(Err(Status::invalid_argument(format!(
                        "a streamed request is not valid JSON for this call: {e}"
                    ))))
                    .await;
                return;
            }
            buf.drain(..done);
            if n == 0 {
                if !buf.iter().all(u8::is_ascii_whitespace) {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "the request body ends inside a JSON value",
                        )))
                        .await;
                }
                return;
            }
            if buf.len() > limit {
                let _ = tx
                    .send(Err(Status::invalid_argument(format!(
                        "a streamed request is over {limit} bytes"
                    ))))
                    .await;
                return;
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// A streamed answer: one `{"result": ...}` line per message.
fn stream_out<T, S>(mut answers: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        while let Some(a) = answers.next().await {
            let line = match &a {
                Ok(m) => {
                    let mut l =
                        serde_json::to_vec(&serde_json::json!({ "result": m })).unwrap_or_default();
                    l.push(b'\n');
                    l
                }
                Err(s) => stream_error(s),
            };
            if tx.write_all(&line).await.is_err() || a.is_err() {
                break;
            }
        }
        let _ = tx.shutdown().await;
    });
    Response::stream(200, "application/json", rx)
}
