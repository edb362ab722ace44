//! Loads keys into anything that serves etcd's v3 gRPC API (etcd itself or
//! Ferrium), the same way for both: `Txn`s of `--txn-ops` puts each, with
//! `--in-flight` of them outstanding (one connection each), until keys
//! `key/0000000000` .. `key/{keys - 1}` (`key/%010d`) are all written with
//! `--value-size`-byte values.
//!
//! `cargo run --example etcd_load -- --endpoint http://127.0.0.1:2379 --keys 1000000`
//!
//! Options (defaults in brackets): `--endpoint URL` [http://127.0.0.1:2379],
//! `--keys N` [1000000], `--txn-ops N` [128: etcd's default `--max-txn-ops`
//! and Ferrium's fixed limit], `--in-flight N` [4], `--value-size N` [100].
//!
//! Progress goes to standard error about every tenth of the keys. The last
//! line on standard output is one for scripts:
//! `loaded keys=N seconds=S keys_per_s=R txn_ops=T in_flight=F revision=REV`.
//! The first failed `Txn` stops the load: its gRPC code and message, as the
//! server gave them, go to standard error, and the exit status is 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrium::api::proto::etcd::etcdserverpb::kv_client::KvClient;
use ferrium::api::proto::etcd::etcdserverpb::{PutRequest, RequestOp, TxnRequest, request_op};
use tonic::transport::{Channel, Endpoint};

struct Options {
    endpoint: String,
    keys: u64,
    txn_ops: u64,
    in_flight: usize,
    value_size: usize,
}

fn parse() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        endpoint: "http://127.0.0.1:2379".to_string(),
        keys: 1_000_000,
        txn_ops: 128,
        in_flight: 4,
        value_size: 100,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("endpoint") => o.endpoint = p.value()?.string()?,
            Long("keys") => o.keys = p.value()?.parse()?,
            Long("txn-ops") => o.txn_ops = p.value()?.parse()?,
            Long("in-flight") => o.in_flight = p.value()?.parse()?,
            Long("value-size") => o.value_size = p.value()?.parse()?,
            Long("help") | Short('h') => {
                println!(
                    "etcd_load [--endpoint URL] [--keys N] [--txn-ops N] [--in-flight N] [--value-size N]"
                );
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if !o.endpoint.contains("://") {
        o.endpoint = format!("http://{}", o.endpoint);
    }
    if o.txn_ops == 0 || o.in_flight == 0 {
        return Err("--txn-ops and --in-flight must be at least 1".into());
    }
    Ok(o)
}

fn key(n: u64) -> Vec<u8> {
    format!("key/{n:010}").into_bytes()
}

/// `value-size` bytes: the key, a space, then dots.
fn value(key: &[u8], size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(key);
    v.push(b' ');
    v.resize(size, b'.');
    v.truncate(size);
    v
}

fn txn(lo: u64, hi: u64, value_size: usize) -> TxnRequest {
    let success = (lo..hi)
        .map(|n| {
            let key = key(n);
            let value = value(&key, value_size);
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })),
            }
        })
        .collect();
    TxnRequest {
        success,
        ..Default::default()
    }
}

/// What stopped a worker, if anything.
struct Failed {
    lo: u64,
    what: String,
}

struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    revision: AtomicU64,
    stop: AtomicBool,
}

async fn worker(
    mut kv: KvClient<Channel>,
    o: Arc<Options>,
    s: Arc<Shared>,
    started: Instant,
) -> Result<(), Failed> {
    let step = o.keys.div_ceil(10).max(1);
    while !s.stop.load(Ordering::Relaxed) {
        let lo = s.next.fetch_add(o.txn_ops, Ordering::Relaxed);
        if lo >= o.keys {
            break;
        }
        let hi = (lo + o.txn_ops).min(o.keys);
        match kv.txn(txn(lo, hi, o.value_size)).await {
            Ok(r) => {
                let r = r.into_inner();
                if !r.succeeded {
                    s.stop.store(true, Ordering::Relaxed);
                    return Err(Failed {
                        lo,
                        what: "the Txn answered succeeded=false".to_string(),
                    });
                }
                if let Some(h) = r.header {
                    s.revision
                        .fetch_max(u64::try_from(h.revision).unwrap_or(0), Ordering::Relaxed);
                }
                let before = s.done.fetch_add(hi - lo, Ordering::Relaxed);
                let after = before + (hi - lo);
                if before / step != after / step && after < o.keys {
                    eprintln!(
                        "etcd_load: {after} of {} keys, {:.1} s",
                        o.keys,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                s.stop.store(true, Ordering::Relaxed);
                return Err(Failed {
                    lo,
                    what: format!("gRPC code {:?}, message {:?}", e.code(), e.message()),
                });
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let o = match parse() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("etcd_load: {e} (see --help)");
            std::process::exit(2);
        }
    };
    let endpoint = match Endpoint::from_shared(o.endpoint.clone()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300)),
        Err(e) => {
            eprintln!("etcd_load: bad --endpoint {:?}: {e}", o.endpoint);
            std::process::exit(2);
        }
    };
    let mut clients = Vec::with_capacity(o.in_flight);
    for _ in 0..o.in_flight {
        match endpoint.connect().await {
            Ok(c) => clients.push(KvClient::new(c).max_decoding_message_size(64 << 20)),
            Err(e) => {
                eprintln!("etcd_load: cannot connect to {}: {e}", o.endpoint);
                std::process::exit(1);
            }
        }
    }
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        revision: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|kv| tokio::spawn(worker(kv, o.clone(), shared.clone(), started)))
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(f)) => failures.push(f),
            Err(e) => failures.push(Failed {
                lo: 0,
                what: format!("a worker failed: {e}"),
            }),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let done = shared.done.load(Ordering::Relaxed);
    if let Some(first) = failures.iter().min_by_key(|f| f.lo) {
        eprintln!(
            "etcd_load: the Txn of keys from key/{:010} failed after {done} of {} keys ({secs:.1} s): {}",
            first.lo, o.keys, first.what
        );
        std::process::exit(1);
    }
    println!(
        "loaded keys={done} seconds={secs:.3} keys_per_s={:.0} txn_ops={} in_flight={} revision={}",
        done as f64 / secs.max(1e-9),
        o.txn_ops,
        o.in_flight,
        shared.revision.load(Ordering::Relaxed)
    );
}
