//! `ferrium.kv.KvService/Watch`: a bidirectional stream carrying any number
//! of watches, each created, cancelled and asked for progress on its own,
//! as etcd's `Watch` does.
//!
//! Each watch runs as a task that takes events from its [`Watcher`] and
//! sends them into the stream's one outgoing queue. The queue is bounded:
//! a client that stops reading stops those tasks, so their watchers' own
//! queues fill and end with a resume revision; the server never buffers
//! without bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::kv::{header, kv_out};
use crate::api::proto::kv as pb;
use crate::node::{self, Node};
use crate::raft::kv::ApplyError;
use crate::watch::{End, Event, EventKind, Filter, Next, Watcher};

/// Most events in one response (whole revisions).
const MAX_EVENTS: usize = 1000;
/// Responses waiting for the client, per stream.
const OUTGOING: usize = 64;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Serves one `Watch` stream.
pub async fn watch(
    node: Node,
    req: Request<Streaming<pb::WatchRequest>>,
) -> Result<Response<WatchStream>, Status> {
    Ok(Response::new(serve(node, req.into_inner(), 1)))
}

/// Serves the watch requests of `incoming` and answers on the returned
/// stream; watches the client does not number get ids from `first_id` on.
/// The etcd API runs its streams through this too (etcd numbers from 0).
pub(crate) fn serve<S>(node: Node, mut incoming: S, first_id: i64) -> WatchStream
where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
{
    use futures_util::StreamExt;
    let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(OUTGOING);
    let hub = node.watch_hub();
    tokio::spawn(async move {
        hub.stats.streams.fetch_add(1, Ordering::Relaxed);
        let mut watches: HashMap<i64, (tokio::task::JoinHandle<()>, mpsc::Sender<()>)> =
            HashMap::new();
        let mut next_id: i64 = first_id;
        loop {
            let msg = tokio::select! {
                m = incoming.next() => m,
                () = tx.closed() => break,
            };
            let req = match msg {
                Some(Ok(r)) => r,
                None => break,
                Some(Err(e)) => {
                    log::debug!("watch: stream from a client ended: {e}");
                    break;
                }
            };
            watches.retain(|_, (task, _)| !task.is_finished());
            match req.request_union {
                Some(pb::watch_request::RequestUnion::CreateRequest(c)) => {
                    let id = if c.watch_id > 0 {
                        c.watch_id
                    } else {
                        while watches.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    };
                    if watches.contains_key(&id) {
                        let _ = tx
                            .send(Ok(refused(
                                &node,
                                id,
                                format!("watch id {id} is already in use on this stream"),
                            )))
                            .await;
                        continue;
                    }
                    match create(&node, id, c, tx.clone()).await {
                        Ok(Some(w)) => {
                            watches.insert(id, w);
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            let _ = tx.send(Ok(refused(&node, id, reason))).await;
                        }
                    }
                }
                Some(pb::watch_request::RequestUnion::CancelRequest(c)) => {
                    if let Some((task, _)) = watches.remove(&c.watch_id) {
                        task.abort();
                        let _ = task.await;
                        let _ = tx
                            .send(Ok(pb::WatchResponse {
                                header: header(node.header(node.applied_revision())),
                                watch_id: c.watch_id,
                                canceled: true,
                                cancel_reason: "canceled by the client".into(),
                                ..pb::WatchResponse::default()
                            }))
                            .await;
                    }
                }
                Some(pb::watch_request::RequestUnion::ProgressRequest(_)) => {
                    for (_, progress) in watches.values() {
                        let _ = progress.try_send(());
                    }
                }
                None => {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "a watch request needs one of create_request, cancel_request or progress_request",
                        )))
                        .await;
                    break;
                }
            }
        }
        for (_, (task, _)) in watches {
            task.abort();
        }
        hub.stats.streams.fetch_sub(1, Ordering::Relaxed);
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Result<pb::WatchResponse, Status>>) -> WatchStream {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn refused(node: &Node, id: i64, reason: String) -> pb::WatchResponse {
    pb::WatchResponse {
        header: header(node.header(node.applied_revision())),
        watch_id: id,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..pb::WatchResponse::default()
    }
}

/// Starts one watch: its task and the handle that asks it for progress
/// (`None` when it was refused with an answer already sent).
async fn create(
    node: &Node,
    id: i64,
    c: pb::WatchCreateRequest,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> Result<Option<(tokio::task::JoinHandle<()>, mpsc::Sender<()>)>, String> {
    let filter = Filter {
        key: c.key,
        range_end: c.range_end,
        no_put: c.no_put,
        no_delete: c.no_delete,
    };
    let mut w = match node.watch(filter, c.start_revision) {
        Ok(w) => w,
        Err(node::Error::Apply(ApplyError::Compacted { compact_revision })) => {
            let _ = tx
                .send(Ok(pb::WatchResponse {
                    header: header(node.header(node.applied_revision())),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    compact_revision,
                    cancel_reason: End::Compacted { compact_revision }.reason(),
                    ..pb::WatchResponse::default()
                }))
                .await;
            // The answer is sent; nothing runs.
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let created = pb::WatchResponse {
        header: header(node.header(node.applied_revision())),
        watch_id: id,
        created: true,
        ..pb::WatchResponse::default()
    };
    if tx.send(Ok(created)).await.is_err() {
        return Err("the client went away".into());
    }
    let (progress_tx, mut progress_rx) = mpsc::channel::<()>(1);
    let node = node.clone();
    let settings = node.watch_settings();
    let quiet = c.progress_notify.then_some(settings.progress_interval);
    let prev_kv = c.prev_kv;
    let task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                n = w.next(quiet, MAX_EVENTS) => n,
                Some(()) = progress_rx.recv() => Next::Progress(w.progress()),
            };
            let resp = match next {
                Next::Events(events) => {
                    let last = events.last().map_or(0, |e| e.revision);
                    let mut out = Vec::with_capacity(events.len());
                    for e in &events {
                        out.push(event_out(&w, e, prev_kv).await);
                    }
                    w.sent(out.len());
                    pb::WatchResponse {
                        header: header(node.header(node.applied_revision().max(last))),
                        watch_id: id,
                        events: out,
                        ..pb::WatchResponse::default()
                    }
                }
                Next::Progress(rev) => pb::WatchResponse {
                    header: header(node.header(rev)),
                    watch_id: id,
                    progress_notify: true,
                    ..pb::WatchResponse::default()
                },
                Next::End(end) => {
                    let mut r = pb::WatchResponse {
                        header: header(node.header(node.applied_revision())),
                        watch_id: id,
                        canceled: true,
                        cancel_reason: end.reason(),
                        ..pb::WatchResponse::default()
                    };
                    match end {
                        End::Compacted { compact_revision } => {
                            r.compact_revision = compact_revision
                        }
                        End::Lagged { resume_revision } => r.resume_revision = resume_revision,
                        End::Closed => r.resume_revision = w.cursor(),
                    }
                    let _ = tx.send(Ok(r)).await;
                    return;
                }
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    });
    Ok(Some((task, progress_tx)))
}

async fn event_out(w: &Watcher, e: &Arc<Event>, prev_kv: bool) -> pb::Event {
    let prev = if prev_kv {
        w.prev_kv(e.kv.key.clone(), e.revision).await.map(kv_out)
    } else {
        None
    };
    pb::Event {
        r#type: match e.kind {
            EventKind::Put => pb::event::EventType::Put as i32,
            EventKind::Delete => pb::event::EventType::Delete as i32,
        },
        kv: Some(kv_out(e.kv.clone())),
        prev_kv: prev,
    }
}
