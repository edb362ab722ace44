//! `ferriumctl watch KEY [--prefix] [--rev N] [--prev-kv]`: prints every
//! change as it happens, until interrupted. When its member goes away (a
//! crash, a restart, a watcher that fell behind) it watches again on the
//! next endpoint from the revision after the last one it printed, so the
//! output has no gap and no duplicate.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::output::Output;
use crate::{Ctl, EXIT_FAILED, EXIT_UNREACHABLE, Failure, Outcome};

pub struct WatchArgs {
    pub key: String,
    pub prefix: bool,
    pub revision: u64,
    pub prev_kv: bool,
}

/// How long a stream may be silent: the server sends a keep-alive well
/// within it (watch.keepalive_interval, at most 60 s).
const SILENCE: Duration = Duration::from_secs(120);
/// Rounds over every endpoint without one stream opening before giving up.
const ROUNDS: u32 = 5;

pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints one event; returns its revision.
fn print_event(output: Output, e: &Value) -> u64 {
    let kv = &e["kv"];
    let revision = kv["mod_revision"].as_u64().unwrap_or(0);
    match output {
        Output::Json => println!("{e}"),
        Output::Table => {
            println!("{}", e["type"].as_str().unwrap_or("?"));
            println!("{}", kv["key"].as_str().unwrap_or(""));
            if e["type"] == "PUT" {
                println!("{}", kv["value"].as_str().unwrap_or(""));
            }
            if let Some(prev) = e.get("prev_kv") {
                println!("{}", prev["value"].as_str().unwrap_or(""));
            }
        }
    }
    revision
}

pub async fn watch(ctl: &Ctl, args: WatchArgs) -> Outcome {
    let endpoints = ctl.client.endpoints().to_vec();
    // The next revision to print; 0 until the first stream says where
    // "now" is.
    let mut next = args.revision;
    let mut failed_rounds = 0u32;
    let mut i = 0usize;
    let mut problems: Vec<String> = Vec::new();
    loop {
        let endpoint = endpoints[i % endpoints.len()].to_string();
        i += 1;
        let mut path = format!("/watch?key={}&format=ndjson", percent(&args.key));
        if args.prefix {
            path.push_str("&prefix=true");
        }
        if args.prev_kv {
            path.push_str("&prev_kv=true");
        }
        if next > 0 {
            path.push_str(&format!("&start_revision={next}"));
        }
        let resp = match ctl.client.open_stream(&endpoint, &path, SILENCE).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{endpoint}: {e}"));
                if i % endpoints.len() == 0 {
                    failed_rounds += 1;
                    if failed_rounds >= ROUNDS {
                        return Err(Failure::new(
                            EXIT_UNREACHABLE,
                            format!("no endpoint could be reached: {}", problems.join("; ")),
                        ));
                    }
                    // A pause before the next round over the endpoints.
                    tokio::time::sleep(Duration::from_millis(200 << failed_rounds.min(4))).await;
                }
                continue;
            }
        };
        let status = resp.status();
        if status != 200 {
            let body = resp.collect(1 << 20).await.unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let message = v["error"].as_str().map_or_else(
                || String::from_utf8_lossy(&body).trim().to_string(),
                str::to_string,
            );
            if status == 503 {
                problems.push(format!("{endpoint}: {message}"));
                continue;
            }
            return Err(Failure::new(EXIT_FAILED, format!("{endpoint}: {message}")));
        }
        failed_rounds = 0;
        problems.clear();
        let mut lines = tokio::io::BufReader::new(resp.into_body()).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(l)) => l,
                // The stream ended or broke: watch again elsewhere.
                Ok(None) | Err(_) => break,
            };
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if msg["created"] == true && next == 0 {
                next = msg["start_revision"].as_u64().unwrap_or(0);
            }
            if let Some(events) = msg["events"].as_array() {
                for e in events {
                    let rev = print_event(ctl.output, e);
                    next = next.max(rev + 1);
                }
            }
            if msg["canceled"] == true {
                if let Some(c) = msg["compact_revision"].as_u64() {
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!(
                            "revision {next} has been compacted (history starts at {c}); watch again with --rev {c} or later"
                        ),
                    ));
                }
                if let Some(r) = msg["resume_revision"].as_u64() {
                    next = next.max(r);
                }
                break;
            }
        }
    }
}
