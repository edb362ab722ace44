//! etcd's `Watch` service. Each stream runs through the same watch code as
//! `ferrium.kv.KvService/Watch` ([`crate::api::grpc::watch::serve`]); this
//! file translates the messages, numbers watches from 0 as etcd does, and
//! keeps to what etcd's clients expect:
//!
//! - a watch cancelled by the client, or ended by a compaction, answers
//!   `canceled` without a reason (clientv3 reads the compaction from
//!   `compact_revision`);
//! - a watch that Ferrium ends so that it can be resumed (its client fell
//!   behind, or this member is shutting down) ends the whole stream with
//!   `UNAVAILABLE`: etcd's clients then open a new stream and watch again
//!   from the revision after the last event they received, missing nothing.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{EtcdApi, header, signed};
use crate::api::proto::etcd::etcdserverpb as epb;
use crate::api::proto::etcd::mvccpb;
use crate::api::proto::kv as pb;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<epb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl epb::watch_server::Watch for EtcdApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<epb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        Ok(Response::new(serve(self, req.into_inner())))
    }
}

/// Serves one etcd watch stream from `incoming` (gRPC, or the gateway's
/// JSON lines).
pub fn serve<S>(api: &EtcdApi, incoming: S) -> WatchStream
where
    S: Stream<Item = Result<epb::WatchRequest, Status>> + Send + Unpin + 'static,
{
    // A client that is done sending keeps its watches (as etcd does): the
    // stream ends when the client goes away, not when it half-closes.
    let requests = incoming
        .map(|r| r.and_then(request_in))
        .chain(futures_util::stream::pending());
    let answers = crate::api::grpc::watch::serve(api.node.clone(), requests, 0);
    // After a stream-ending answer, nothing more.
    let mut ended = false;
    Box::pin(answers.filter_map(move |r| {
        let out = if ended {
            None
        } else {
            let a = r.map(response_out).and_then(|a| a);
            ended = a.is_err();
            Some(a)
        };
        std::future::ready(out)
    }))
}

fn request_in(r: epb::WatchRequest) -> Result<pb::WatchRequest, Status> {
    use epb::watch_create_request::FilterType;
    use epb::watch_request::RequestUnion as E;
    use pb::watch_request::RequestUnion as F;
    let union = match r.request_union {
        Some(E::CreateRequest(c)) => {
            let mut no_put = false;
            let mut no_delete = false;
            for f in &c.filters {
                match FilterType::try_from(*f) {
                    Ok(FilterType::Noput) => no_put = true,
                    Ok(FilterType::Nodelete) => no_delete = true,
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "watch filter {f} is not NOPUT or NODELETE"
                        )));
                    }
                }
            }
            F::CreateRequest(pb::WatchCreateRequest {
                key: c.key,
                range_end: c.range_end,
                start_revision: u64::try_from(c.start_revision).unwrap_or(0),
                progress_notify: c.progress_notify,
                no_put,
                no_delete,
                prev_kv: c.prev_kv,
                watch_id: c.watch_id,
            })
        }
        Some(E::CancelRequest(c)) => F::CancelRequest(pb::WatchCancelRequest {
            watch_id: c.watch_id,
        }),
        Some(E::ProgressRequest(_)) => F::ProgressRequest(pb::WatchProgressRequest {}),
        None => {
            return Err(Status::invalid_argument(
                "a watch request needs one of create_request, cancel_request or progress_request",
            ));
        }
    };
    Ok(pb::WatchRequest {
        request_union: Some(union),
    })
}

fn kv_in(kv: pb::VersionedKeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: signed(kv.create_revision),
        mod_revision: signed(kv.mod_revision),
        version: signed(kv.version),
        value: kv.value,
        lease: signed(kv.lease),
    }
}

fn response_out(r: pb::WatchResponse) -> Result<epb::WatchResponse, Status> {
    let ended = r.canceled && !r.created;
    if ended && r.resume_revision != 0 {
        return Err(Status::unavailable(format!(
            "watch {} ended ({}); watch again from revision {}",
            r.watch_id, r.cancel_reason, r.resume_revision
        )));
    }
    // A refused create keeps its reason; a cancellation or a compaction
    // carries none, as etcd's do.
    let cancel_reason = if ended {
        String::new()
    } else {
        r.cancel_reason
    };
    let h = r.header.map(|h| crate::node::Header {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        raft_term: h.raft_term,
        revision: h.revision,
    });
    Ok(epb::WatchResponse {
        header: h.and_then(header),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: signed(r.compact_revision),
        cancel_reason,
        fragment: false,
        events: r
            .events
            .into_iter()
            .map(|e| mvccpb::Event {
                r#type: match pb::event::EventType::try_from(e.r#type) {
                    Ok(pb::event::EventType::Delete) => mvccpb::event::EventType::Delete as i32,
                    _ => mvccpb::event::EventType::Put as i32,
                },
                kv: e.kv.map(kv_in),
                prev_kv: e.prev_kv.map(kv_in),
            })
            .collect(),
    })
}
