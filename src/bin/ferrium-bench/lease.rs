//! The `lease` workload: grants `--leases` leases of `--lease-ttl` seconds
//! over `--conns` connections, then renews them for `--duration` through
//! `--streams` gRPC keep-alive streams (each stream renewing its share of
//! the leases in turn, with at most `--concurrency` keep-alives in flight),
//! at `--rate` keep-alives per second overall or as fast as answers come.
//! Reports grants per second, keep-alives answered per second and their
//! latency; the leases are revoked at the end. With `--api etcd` (or
//! `--etcd`) the endpoint is driven through etcd's own `Lease` service by
//! the same code: an etcd server, or Ferrium's etcd API.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrium::api::proto::etcd::etcdserverpb as etcd;
use ferrium::api::proto::kv as pb;
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::client::GrpcClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::{Api, Latency, Options, client_options, latency};

#[derive(Serialize)]
pub struct LeaseReport {
    workload: &'static str,
    api: Api,
    endpoint: String,
    leases: usize,
    ttl_s: u64,
    streams: usize,
    in_flight_per_stream: usize,
    rate_limit: Option<f64>,
    grant_s: f64,
    grants_per_s: f64,
    elapsed_s: f64,
    keep_alives: u64,
    keep_alive_errors: u64,
    keep_alives_per_s: f64,
    latency: Option<Latency>,
}

impl LeaseReport {
    pub fn print(&self) {
        println!(
            "lease keep-alives over grpc ({} API): {} leases of {} s on {} streams, {} in flight each{}",
            self.api.name(),
            self.leases,
            self.ttl_s,
            self.streams,
            self.in_flight_per_stream,
            self.rate_limit
                .map(|r| format!(", at {r} keep-alives/s"))
                .unwrap_or_default()
        );
        println!("endpoint:    {}", self.endpoint);
        println!(
            "grants:      {} in {:.2} s ({:.1}/s)",
            self.leases, self.grant_s, self.grants_per_s
        );
        println!(
            "keep-alives: {} answered, {} failed in {:.2} s ({:.1}/s)",
            self.keep_alives, self.keep_alive_errors, self.elapsed_s, self.keep_alives_per_s
        );
        if let Some(l) = &self.latency {
            println!(
                "latency:     p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            );
        }
    }
}

async fn grant(etcd_target: bool, channel: &Channel, ttl: u64) -> Result<i64, String> {
    if etcd_target {
        let mut l = etcd::lease_client::LeaseClient::new(channel.clone());
        let r = l
            .lease_grant(etcd::LeaseGrantRequest {
                ttl: ttl as i64,
                id: 0,
            })
            .await
            .map_err(|e| format!("etcd LeaseGrant: {e}"))?
            .into_inner();
        return Ok(r.id);
    }
    let mut kv = KvServiceClient::new(channel.clone());
    let r = kv
        .lease_grant(pb::LeaseGrantRequest {
            ttl: ttl as i64,
            id: 0,
        })
        .await
        .map_err(|e| format!("LeaseGrant: {e}"))?
        .into_inner();
    Ok(r.id)
}

async fn revoke(etcd_target: bool, channel: &Channel, id: i64) {
    if etcd_target {
        let mut l = etcd::lease_client::LeaseClient::new(channel.clone());
        let _ = l.lease_revoke(etcd::LeaseRevokeRequest { id }).await;
        return;
    }
    let mut kv = KvServiceClient::new(channel.clone());
    let _ = kv.lease_revoke(pb::LeaseRevokeRequest { id }).await;
}

/// The answers of one keep-alive stream: the TTL of each, whichever server.
enum Answers {
    Ferrium(tonic::Streaming<pb::LeaseKeepAliveResponse>),
    Etcd(tonic::Streaming<etcd::LeaseKeepAliveResponse>),
}

impl Answers {
    async fn next(&mut self) -> Option<i64> {
        match self {
            Answers::Ferrium(s) => s.message().await.ok()?.map(|r| r.ttl),
            Answers::Etcd(s) => s.message().await.ok()?.map(|r| r.ttl),
        }
    }
}

/// Opens a keep-alive stream with a first keep-alive of `first` (etcd
/// answers the call only with its first message, so the call cannot be
/// waited for before something is sent); `send` renews one lease on it.
async fn open(
    etcd_target: bool,
    channel: Channel,
    first: i64,
) -> Result<(tokio::sync::mpsc::Sender<i64>, Answers), String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<i64>(1024);
    if etcd_target {
        let (req_tx, req_rx) = tokio::sync::mpsc::channel::<etcd::LeaseKeepAliveRequest>(1024);
        req_tx
            .send(etcd::LeaseKeepAliveRequest { id: first })
            .await
            .map_err(|_| "a keep-alive stream closed".to_string())?;
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                if req_tx
                    .send(etcd::LeaseKeepAliveRequest { id })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut l = etcd::lease_client::LeaseClient::new(channel);
        let answers = l
            .lease_keep_alive(super::watch::Receiver(req_rx))
            .await
            .map_err(|e| format!("etcd LeaseKeepAlive: {e}"))?
            .into_inner();
        return Ok((tx, Answers::Etcd(answers)));
    }
    let (req_tx, req_rx) = tokio::sync::mpsc::channel::<pb::LeaseKeepAliveRequest>(1024);
    req_tx
        .send(pb::LeaseKeepAliveRequest { id: first })
        .await
        .map_err(|_| "a keep-alive stream closed".to_string())?;
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            if req_tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                return;
            }
        }
    });
    let mut kv = KvServiceClient::new(channel);
    let answers = kv
        .lease_keep_alive(super::watch::Receiver(req_rx))
        .await
        .map_err(|e| format!("LeaseKeepAlive: {e}"))?
        .into_inner();
    Ok((tx, Answers::Ferrium(answers)))
}

pub async fn run(o: Options, leases: usize, ttl: u64) -> Result<LeaseReport, String> {
    let etcd_target = o.api == Api::Etcd;
    let endpoint = o.endpoints[0].clone();
    let grpc = GrpcClient::new(&client_options(&o)).map_err(|e| e.to_string())?;
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..o.conns.max(1) {
        channels.push(
            grpc.connect_to(&endpoint)
                .await
                .map_err(|e| e.to_string())?,
        );
    }

    // Grants, spread over the connections.
    let began = Instant::now();
    let ids: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        let n = leases / channels.len() + usize::from(c < leases % channels.len());
        let (channel, ids) = (channel.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let id = grant(etcd_target, &channel, ttl).await?;
                ids.lock().unwrap().push(id);
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let grant_s = began.elapsed().as_secs_f64();
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    // Markers on stderr, for scripts that measure the server meanwhile.
    eprintln!(
        "ferrium-bench: granted {} leases in {grant_s:.2} s; renewing them",
        ids.len()
    );

    // Keep-alives: each stream renews its share in turn.
    let streams = o.streams.clamp(1, ids.len().max(1));
    let window = o.concurrency.max(1);
    let duration = o.duration.unwrap_or(Duration::from_secs(10));
    let per_stream_rate = o.rate.map(|r| r / streams as f64);
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mine: Vec<i64> = ids.iter().skip(s).step_by(streams).copied().collect();
        let channel = channels[s % channels.len()].clone();
        let (answered, failed, latencies) = (answered.clone(), failed.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
            sent.lock().unwrap().push_back(Instant::now());
            let (send, mut answers) = match open(etcd_target, channel, mine[0]).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("ferrium-bench: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            // The first keep-alive holds one of the window's places.
            let slots = Arc::new(tokio::sync::Semaphore::new(window - 1));
            let sender = {
                let (sent, slots) = (sent.clone(), slots.clone());
                tokio::spawn(async move {
                    let mut i = 1usize;
                    let mut next = Instant::now();
                    while Instant::now() < end {
                        if let Some(r) = per_stream_rate {
                            next += Duration::from_secs_f64(1.0 / r);
                            tokio::time::sleep_until(next.into()).await;
                        }
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        permit.forget();
                        sent.lock().unwrap().push_back(Instant::now());
                        if send.send(mine[i % mine.len()]).await.is_err() {
                            return;
                        }
                        i += 1;
                    }
                })
            };
            let mut mine_lat = Vec::new();
            loop {
                let answer =
                    tokio::time::timeout_at((end + Duration::from_secs(5)).into(), answers.next())
                        .await;
                let Ok(Some(ttl)) = answer else { break };
                let at = sent.lock().unwrap().pop_front();
                slots.add_permits(1);
                if ttl > 0 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(at) = at {
                    mine_lat.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                if Instant::now() >= end && sent.lock().unwrap().is_empty() {
                    break;
                }
            }
            sender.abort();
            latencies.lock().unwrap().extend(mine_lat);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64())
        .max(1e-9);
    eprintln!("ferrium-bench: renewed; revoking the leases");
    // Leave nothing behind.
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        let mine: Vec<i64> = ids
            .iter()
            .skip(c)
            .step_by(channels.len())
            .copied()
            .collect();
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            for id in mine {
                revoke(etcd_target, &channel, id).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let keep_alives = answered.load(Ordering::Relaxed);
    Ok(LeaseReport {
        workload: "lease",
        api: o.api,
        endpoint: endpoint.to_string(),
        leases: ids.len(),
        ttl_s: ttl,
        streams,
        in_flight_per_stream: window,
        rate_limit: o.rate,
        grant_s,
        grants_per_s: ids.len() as f64 / grant_s.max(1e-9),
        elapsed_s: elapsed,
        keep_alives,
        keep_alive_errors: failed.load(Ordering::Relaxed),
        keep_alives_per_s: keep_alives as f64 / elapsed,
        latency: latency(std::mem::take(&mut *latencies.lock().unwrap())),
    })
}
