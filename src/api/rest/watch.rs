//! `GET /watch`: the changes of a key, a prefix or a range, from any
//! retained revision, streamed (NDJSON, or `text/event-stream` for a
//! browser's `EventSource`) or as a long poll (`index` and `wait`).
//!
//! Query parameters: `key` (required), one of `range_end`, `prefix=true`,
//! `from_key=true`; `encoding=base64` for the byte fields; `start_revision`;
//! `prev_kv`, `no_put`, `no_delete`, `progress_notify`; `format=sse` or
//! `format=ndjson` (else by the `Accept` header). With `index=N` and/or
//! `wait=30s` it is a long poll: one JSON answer with the changes after
//! revision `N` (after the current one without `index`), as soon as there
//! is at least one or when `wait` (at most 10 minutes) passes with none;
//! its `index` is the revision to ask from next.
//!
//! Every streamed message is one JSON object: first `created` (with the
//! header at the start), then `events` (whole revisions, in order),
//! `progress_notify` (nothing changed up to the header's revision: sent when
//! asked, and as the keep-alive of an NDJSON stream), and last `canceled`
//! with a `cancel_reason` and, when watching again can miss nothing, the
//! `resume_revision` (or the `compact_revision` history now starts at). An
//! event stream carries the same objects as `data:`, each revision as its
//! `id:` (so `EventSource` resumes after a reconnect by `Last-Event-ID`) and
//! `: keep-alive` comments when quiet.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::errors::{error_response, invalid};
use super::txn::{Encoding, header_json, kv_json};
use crate::http::{Request, Response};
use crate::node::{self, Node};
use crate::raft::kv::{ApplyError, prefix_end};
use crate::watch::{End, Event, Filter, Next, Watcher};

/// Most events in one streamed message or long-poll answer (whole
/// revisions, so one revision may exceed it).
const MAX_EVENTS: usize = 1000;
/// The longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How much of a stream waits in memory for the connection.
const STREAM_BUFFER: usize = 64 * 1024;

struct Query {
    filter: Filter,
    enc: Encoding,
    start_revision: u64,
    prev_kv: bool,
    progress_notify: bool,
    sse: bool,
    /// The long-poll form: the revision to answer changes after, and how
    /// long to wait for one.
    poll: Option<(Option<u64>, Duration)>,
}

/// Percent-decodes one query component (`+` is a space).
fn decode_component(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?} has a % not followed by two hex digits"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The query's `name=value` pairs, decoded.
pub(super) fn query_pairs(q: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, Response> {
    let mut out = Vec::new();
    for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name = decode_component(name).map_err(invalid)?;
        let name =
            String::from_utf8(name).map_err(|_| invalid("a query parameter name is not UTF-8"))?;
        let value = decode_component(value).map_err(invalid)?;
        out.push((name, value));
    }
    Ok(out)
}

fn flag(name: &str, v: &[u8]) -> Result<bool, Response> {
    match v {
        b"" | b"true" | b"1" => Ok(true),
        b"false" | b"0" => Ok(false),
        _ => Err(invalid(format!(
            "{name} is true or false, not {:?}",
            String::from_utf8_lossy(v)
        ))),
    }
}

fn number(name: &str, v: &[u8]) -> Result<u64, Response> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            invalid(format!(
                "{name} is a non-negative integer, not {:?}",
                String::from_utf8_lossy(v)
            ))
        })
}

/// `30s`, `500ms`, `2m` or plain seconds.
fn duration(v: &[u8]) -> Result<Duration, Response> {
    let s = std::str::from_utf8(v).unwrap_or("");
    let bad = || {
        invalid(format!(
            "wait is a duration such as 30s, 500ms or 2m, not {:?}",
            String::from_utf8_lossy(v)
        ))
    };
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    Ok(d.min(MAX_WAIT))
}

fn parse(req: &Request) -> Result<Query, Response> {
    let pairs = query_pairs(req.query())?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    for (name, _) in &pairs {
        if ![
            "key",
            "range_end",
            "prefix",
            "from_key",
            "encoding",
            "start_revision",
            "prev_kv",
            "no_put",
            "no_delete",
            "progress_notify",
            "format",
            "index",
            "wait",
        ]
        .contains(&name.as_str())
        {
            return Err(invalid(format!(
                "unknown query parameter {name:?}; see the README's watch section"
            )));
        }
    }
    let enc = Encoding::parse(
        get("encoding")
            .map(|e| std::str::from_utf8(e).unwrap_or("?"))
            .filter(|e| !e.is_empty()),
    )?;
    let text = |name: &str, v: &[u8]| -> Result<Vec<u8>, Response> {
        match enc {
            Encoding::Text => Ok(v.to_vec()),
            Encoding::Base64 => enc.bytes(
                name,
                std::str::from_utf8(v).map_err(|_| invalid(format!("{name} is not base64")))?,
            ),
        }
    };
    let Some(key) = get("key") else {
        return Err(invalid(
            "give the key to watch: /watch?key=K (with prefix=true for every key under K)",
        ));
    };
    let key = text("key", key)?;
    let prefix = get("prefix")
        .map(|v| flag("prefix", v))
        .transpose()?
        .unwrap_or(false);
    let from_key = get("from_key")
        .map(|v| flag("from_key", v))
        .transpose()?
        .unwrap_or(false);
    let range_end = match (get("range_end"), prefix, from_key) {
        (Some(e), false, false) => text("range_end", e)?,
        (None, true, false) => prefix_end(&key),
        (None, false, true) => vec![0],
        (None, false, false) => Vec::new(),
        _ => {
            return Err(invalid(
                "give at most one of range_end, prefix and from_key",
            ));
        }
    };
    let b = |name: &str| -> Result<bool, Response> {
        get(name)
            .map(|v| flag(name, v))
            .transpose()
            .map(|v| v.unwrap_or(false))
    };
    let mut start_revision = get("start_revision")
        .map(|v| number("start_revision", v))
        .transpose()?
        .unwrap_or(0);
    let sse = match get("format") {
        Some(b"sse") => true,
        Some(b"ndjson") => false,
        Some(f) => {
            return Err(invalid(format!(
                "format is sse or ndjson, not {:?}",
                String::from_utf8_lossy(f)
            )));
        }
        None => req
            .header("accept")
            .is_some_and(|a| a.contains("text/event-stream")),
    };
    if sse {
        // An EventSource reconnecting names the last revision it got.
        if let Some(last) = req
            .header("last-event-id")
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            start_revision = last + 1;
        }
    }
    let index = get("index").map(|v| number("index", v)).transpose()?;
    let wait = get("wait").map(duration).transpose()?;
    let poll = match (index, wait) {
        (None, None) => None,
        (index, wait) => Some((index, wait.unwrap_or(Duration::from_secs(300)))),
    };
    if poll.is_some() && get("start_revision").is_some() {
        return Err(invalid(
            "a long poll starts after its index: give index or start_revision, not both",
        ));
    }
    Ok(Query {
        filter: Filter {
            key,
            range_end,
            no_put: b("no_put")?,
            no_delete: b("no_delete")?,
        },
        enc,
        start_revision,
        prev_kv: b("prev_kv")?,
        progress_notify: b("progress_notify")?,
        sse,
        poll,
    })
}

pub(super) async fn watch(node: Node, req: Request, _max: usize) -> Response {
    let q = match parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let start = match q.poll {
        Some((Some(index), _)) => index + 1,
        Some((None, _)) => 0,
        None => q.start_revision,
    };
    let watcher = match node.watch(q.filter.clone(), start) {
        Ok(w) => w,
        Err(e) => return error_response(&e),
    };
    match q.poll {
        Some((_, wait)) => long_poll(node, watcher, &q, wait).await,
        None => stream(node, watcher, q),
    }
}

/// One event as JSON, with its previous version when asked.
async fn event_json(w: &Watcher, e: &Event, q: &Query) -> Value {
    let mut v = json!({
        "type": e.kind,
        "kv": kv_json(&e.kv, q.enc),
    });
    if q.prev_kv {
        if let Some(prev) = w.prev_kv(e.kv.key.clone(), e.revision).await {
            v["prev_kv"] = kv_json(&prev, q.enc);
        }
    }
    v
}

async fn events_json(w: &Watcher, events: &[std::sync::Arc<Event>], q: &Query) -> Vec<Value> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        out.push(event_json(w, e, q).await);
    }
    out
}

async fn long_poll(node: Node, mut w: Watcher, q: &Query, wait: Duration) -> Response {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let next = tokio::time::timeout(left, w.next(None, MAX_EVENTS)).await;
        let (events, index) = match next {
            Err(_) => (Vec::new(), w.progress()),
            Ok(Next::Progress(_)) => continue,
            Ok(Next::Events(events)) => {
                let index = events.last().map_or(0, |e| e.revision);
                (events, index)
            }
            Ok(Next::End(End::Compacted { compact_revision })) => {
                return error_response(&node::Error::Apply(ApplyError::Compacted {
                    compact_revision,
                }));
            }
            Ok(Next::End(End::Lagged { resume_revision })) => {
                (Vec::new(), resume_revision.saturating_sub(1))
            }
            Ok(Next::End(End::Closed)) => {
                return error_response(&node::Error::Unavailable(End::Closed.reason()));
            }
        };
        w.sent(events.len());
        let header = node.header(node.applied_revision().max(index));
        let body = json!({
            "header": header_json(&header),
            "index": index,
            "events": events_json(&w, &events, q).await,
        });
        return Response::json(200, &body).header("x-ferrium-index", index.to_string());
    }
}

/// One streamed message in the stream's framing.
fn frame(sse: bool, kind: &str, id: Option<u64>, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let body = serde_json::to_vec(v).unwrap_or_default();
    if sse {
        if let Some(id) = id {
            out.extend_from_slice(format!("id: {id}\n").as_bytes());
        }
        out.extend_from_slice(format!("event: {kind}\ndata: ").as_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
    } else {
        out.extend_from_slice(&body);
        out.push(b'\n');
    }
    out
}

fn stream(node: Node, mut w: Watcher, q: Query) -> Response {
    let (mut tx, rx) = tokio::io::duplex(STREAM_BUFFER);
    let settings = node.watch_settings();
    let quiet = if q.progress_notify {
        settings.progress_interval.min(settings.keepalive_interval)
    } else {
        settings.keepalive_interval
    };
    let hub = node.watch_hub();
    let sse = q.sse;
    tokio::spawn(async move {
        hub.stats
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = w.id();
        let created = json!({
            "header": header_json(&node.header(node.applied_revision())),
            "watch_id": id,
            "created": true,
            "start_revision": w.cursor(),
        });
        let mut ok = tx
            .write_all(&frame(q.sse, "created", None, &created))
            .await
            .is_ok();
        let mut last_progress = tokio::time::Instant::now();
        while ok {
            let out = match w.next(Some(quiet), MAX_EVENTS).await {
                Next::Events(events) => {
                    let last = events.last().map_or(0, |e| e.revision);
                    let v = json!({
                        "header": header_json(&node.header(node.applied_revision().max(last))),
                        "watch_id": id,
                        "events": events_json(&w, &events, &q).await,
                    });
                    w.sent(events.len());
                    frame(q.sse, "events", Some(last), &v)
                }
                Next::Progress(rev) => {
                    let due =
                        q.progress_notify && last_progress.elapsed() >= settings.progress_interval;
                    if q.sse && !due {
                        b": keep-alive\n\n".to_vec()
                    } else {
                        last_progress = tokio::time::Instant::now();
                        let v = json!({
                            "header": header_json(&node.header(rev)),
                            "watch_id": id,
                            "progress_notify": true,
                        });
                        frame(q.sse, "progress", None, &v)
                    }
                }
                Next::End(end) => {
                    let mut v = json!({
                        "header": header_json(&node.header(node.applied_revision())),
                        "watch_id": id,
                        "canceled": true,
                        "cancel_reason": end.reason(),
                    });
                    match end {
                        End::Compacted { compact_revision } => {
                            v["compact_revision"] = json!(compact_revision)
                        }
                        End::Lagged { resume_revision } => {
                            v["resume_revision"] = json!(resume_revision)
                        }
                        End::Closed => v["resume_revision"] = json!(w.cursor()),
                    }
                    let _ = tx.write_all(&frame(q.sse, "canceled", None, &v)).await;
                    break;
                }
            };
            ok = tx.write_all(&out).await.is_ok();
        }
        let _ = tx.shutdown().await;
        hub.stats
            .streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Response::stream(200, content_type, rx)
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_decode() {
        let Ok(pairs) = query_pairs(Some("key=a%2Fb+c&prefix&x=%00")) else {
            panic!("the query parses");
        };
        assert_eq!(pairs[0], ("key".into(), b"a/b c".to_vec()));
        assert_eq!(pairs[1], ("prefix".into(), Vec::new()));
        assert_eq!(pairs[2], ("x".into(), vec![0]));
        assert!(query_pairs(Some("key=%zz")).is_err());
        assert!(query_pairs(Some("key=%4")).is_err());
    }

    #[test]
    fn waits_parse_and_are_capped() {
        assert_eq!(duration(b"30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(duration(b"250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(duration(b"2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(duration(b"7").ok(), Some(Duration::from_secs(7)));
        assert_eq!(duration(b"1000m").ok(), Some(MAX_WAIT));
        assert!(duration(b"soon").is_err());
        assert!(duration(b"5h").is_err());
    }
}
