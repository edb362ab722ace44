//! The `watch` workload: `--watchers` watches of single keys (over
//! `--key-space` keys, so each key has `watchers / key-space` of them),
//! spread over `--streams` gRPC `Watch` streams on the first endpoint,
//! while `--conns` writers set those keys (at `--rate` writes per second
//! overall, or as fast as they can). Every value carries the time it was
//! sent, so each event's delivery latency is measured from the write's
//! start to the event's arrival (one clock: the bench's own). Reports
//! events received against events expected, delivery latency percentiles,
//! and the write rate reached. With `--api etcd` (or `--etcd`) the
//! endpoint is watched through etcd's own `Watch` and written with its
//! `Put`, by the same code: an etcd server, or Ferrium's etcd API.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrium::api::proto::etcd::etcdserverpb as etcd;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{SetRequest, WatchCreateRequest, WatchRequest, watch_request};
use ferrium::client::GrpcClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::{Api, Latency, Options, client_options, latency};

#[derive(Serialize)]
pub struct WatchReport {
    workload: &'static str,
    api: Api,
    endpoint: String,
    watchers: usize,
    streams: usize,
    keys: u64,
    writers: usize,
    rate_limit: Option<f64>,
    elapsed_s: f64,
    writes: u64,
    write_errors: u64,
    writes_per_s: f64,
    events_expected: u64,
    events_received: u64,
    events_per_s: f64,
    delivery_latency: Option<Latency>,
    setup_s: f64,
}

impl WatchReport {
    pub fn print(&self) {
        println!(
            "watch over grpc ({} API): {} watchers of {} keys on {} streams, {} writers{}",
            self.api.name(),
            self.watchers,
            self.keys,
            self.streams,
            self.writers,
            self.rate_limit
                .map(|r| format!(" at {r} writes/s"))
                .unwrap_or_default()
        );
        println!("endpoint:    {}", self.endpoint);
        println!("setup:       {:.2} s to create every watch", self.setup_s);
        println!(
            "writes:      {} ok, {} failed in {:.2} s ({:.1}/s)",
            self.writes, self.write_errors, self.elapsed_s, self.writes_per_s
        );
        println!(
            "events:      {} received of {} expected ({:.1}/s)",
            self.events_received, self.events_expected, self.events_per_s
        );
        if let Some(l) = &self.delivery_latency {
            println!(
                "delivery:    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            );
        }
    }
}

fn key(o: &Options, n: u64) -> String {
    let width = o.key_size.saturating_sub(o.key_prefix.len());
    format!("{}{:0width$}", o.key_prefix, n)
}

/// One watch stream's events as the reader sees them, whichever server.
enum Incoming {
    Ferrium(tonic::Streaming<ferrium::api::proto::kv::WatchResponse>),
    Etcd(tonic::Streaming<etcd::WatchResponse>),
}

impl Incoming {
    /// The next answer: whether it confirms a watch, and the values of its
    /// events. `None` when the stream ended.
    async fn next(&mut self) -> Option<(bool, Vec<Vec<u8>>)> {
        match self {
            Incoming::Ferrium(s) => {
                let r = s.message().await.ok()??;
                let values = r.events.into_iter().filter_map(|e| e.kv.map(|kv| kv.value));
                Some((r.created, values.collect()))
            }
            Incoming::Etcd(s) => {
                let r = s.message().await.ok()??;
                let values = r.events.into_iter().filter_map(|e| e.kv.map(|kv| kv.value));
                Some((r.created, values.collect()))
            }
        }
    }
}

/// Opens one watch stream on `channel` with a watch of each of `keys`;
/// the returned sender keeps the stream's request side open.
async fn open(
    etcd_target: bool,
    channel: Channel,
    keys: Vec<String>,
) -> Result<(Incoming, Box<dyn std::any::Any + Send>), String> {
    // The create requests go first: etcd answers the call (its headers)
    // only with its first message, so waiting for the call before sending
    // them would wait forever.
    let room = keys.len() + 16;
    if etcd_target {
        let (tx, rx) = tokio::sync::mpsc::channel::<etcd::WatchRequest>(room);
        for k in keys {
            let create = etcd::WatchCreateRequest {
                key: k.into_bytes(),
                ..etcd::WatchCreateRequest::default()
            };
            let req = etcd::WatchRequest {
                request_union: Some(etcd::watch_request::RequestUnion::CreateRequest(create)),
            };
            tx.send(req)
                .await
                .map_err(|_| "a watch stream closed".to_string())?;
        }
        let mut client = etcd::watch_client::WatchClient::new(channel);
        let incoming = client
            .watch(Receiver(rx))
            .await
            .map_err(|e| format!("etcd Watch: {e}"))?
            .into_inner();
        return Ok((Incoming::Etcd(incoming), Box::new(tx)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(room);
    for k in keys {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: k.into_bytes(),
                    ..WatchCreateRequest::default()
                },
            )),
        };
        tx.send(req)
            .await
            .map_err(|_| "a watch stream closed".to_string())?;
    }
    let mut client = KvServiceClient::new(channel);
    let incoming = client
        .watch(Receiver(rx))
        .await
        .map_err(|e| format!("Watch: {e}"))?
        .into_inner();
    Ok((Incoming::Ferrium(incoming), Box::new(tx)))
}

/// One write of `key`, to Ferrium (`Set`) or to etcd (`Put`).
async fn put(etcd_target: bool, channel: &Channel, key: String, value: String) -> bool {
    if etcd_target {
        let mut kv = etcd::kv_client::KvClient::new(channel.clone());
        let req = etcd::PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            ..etcd::PutRequest::default()
        };
        return kv.put(req).await.is_ok();
    }
    let mut kv = KvServiceClient::new(channel.clone());
    kv.set(SetRequest { key, value }).await.is_ok()
}

pub async fn run(o: Options, watchers: usize, streams: usize) -> Result<WatchReport, String> {
    let etcd_target = o.api == Api::Etcd;
    let endpoint = o.endpoints[0].clone();
    let grpc = GrpcClient::new(&client_options(&o)).map_err(|e| e.to_string())?;
    // Several connections: one HTTP/2 connection carries at most
    // network.max_concurrent_streams streams.
    let connections = streams.div_ceil(128).max(1);
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..connections {
        channels.push(
            grpc.connect_to(&endpoint)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let created = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let setup_began = Instant::now();
    let mut readers = Vec::new();
    for s in 0..streams {
        let mine: Vec<String> = (0..watchers)
            .filter(|w| w % streams == s)
            .map(|w| key(&o, w as u64 % o.key_space))
            .collect();
        let want = mine.len() as u64;
        let channel = channels[s % channels.len()].clone();
        let (mut incoming, tx) = open(etcd_target, channel, mine).await?;
        let (received, latencies, created, stop) = (
            received.clone(),
            latencies.clone(),
            created.clone(),
            stop.clone(),
        );
        readers.push(tokio::spawn(async move {
            let _keep = tx;
            let mut mine_created = 0;
            let mut local = Vec::new();
            while !stop.load(Ordering::Relaxed) || mine_created < want {
                let msg = tokio::select! {
                    m = incoming.next() => m,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stop.load(Ordering::Relaxed) { break } else { continue }
                    }
                };
                let Some((is_created, values)) = msg else {
                    break;
                };
                if is_created {
                    mine_created += 1;
                    created.fetch_add(1, Ordering::Relaxed);
                }
                let now = start.elapsed().as_micros() as u64;
                for value in values {
                    let sent = std::str::from_utf8(&value[..16.min(value.len())])
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        local.push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(local);
        }));
    }
    // Every watch created before the writes start.
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.load(Ordering::Relaxed) < watchers as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {watchers} watches were created within 120 s",
                created.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_began.elapsed().as_secs_f64();

    // The writers.
    let writes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_key: Vec<u64> = (0..o.key_space)
        .map(|k| {
            (0..watchers as u64)
                .filter(|w| w % o.key_space == k)
                .count() as u64
        })
        .collect();
    let expected = Arc::new(AtomicU64::new(0));
    let per_key = Arc::new(per_key);
    let duration = o.duration.unwrap_or(Duration::from_secs(10));
    let began = Instant::now();
    let mut writers = Vec::new();
    for w in 0..o.conns {
        let channel = channels[w % channels.len()].clone();
        let (writes, errors, expected, per_key, o) = (
            writes.clone(),
            errors.clone(),
            expected.clone(),
            per_key.clone(),
            o.clone(),
        );
        writers.push(tokio::spawn(async move {
            let interval = o.rate.map(|r| Duration::from_secs_f64(o.conns as f64 / r));
            let mut n = w as u64;
            let mut next = Instant::now();
            while began.elapsed() < duration {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                let k = n % o.key_space;
                n += o.conns as u64;
                let sent = start.elapsed().as_micros() as u64;
                let mut value = format!("{sent:016}");
                value.push_str(&"v".repeat(o.value_size.saturating_sub(16)));
                if put(etcd_target, &channel, key(&o, k), value).await {
                    writes.fetch_add(1, Ordering::Relaxed);
                    expected.fetch_add(per_key[k as usize], Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in writers {
        w.await.map_err(|e| format!("a writer failed: {e}"))?;
    }
    let elapsed = began.elapsed().as_secs_f64();
    // Events still on their way: wait until every expected one arrived or
    // nothing arrives for two seconds.
    let want = expected.load(Ordering::Relaxed);
    let mut last = received.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while received.load(Ordering::Relaxed) < want && quiet.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    let delivered_in = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    let lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let got = received.load(Ordering::Relaxed);
    Ok(WatchReport {
        workload: "watch",
        api: o.api,
        endpoint: endpoint.to_string(),
        watchers,
        streams,
        keys: o.key_space,
        writers: o.conns,
        rate_limit: o.rate,
        elapsed_s: elapsed,
        writes: writes.load(Ordering::Relaxed),
        write_errors: errors.load(Ordering::Relaxed),
        writes_per_s: writes.load(Ordering::Relaxed) as f64 / elapsed,
        events_expected: want,
        events_received: got,
        events_per_s: got as f64 / delivered_in,
        delivery_latency: latency(lat),
        setup_s,
    })
}

/// An mpsc receiver as a stream of requests.
pub(super) struct Receiver<T>(pub(super) tokio::sync::mpsc::Receiver<T>);

impl<T> futures_util::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
