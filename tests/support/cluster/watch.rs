//! Watching through the harness: a streamed `GET /watch` read line by line,
//! a watcher that follows the cluster across member failures, and a replay
//! of history to compare with.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One change as a watcher reports it: revision, type, key, value.
pub type Change = (u64, String, String, String);

/// A streamed `GET /watch` (HTTP/1.0, so the body is the raw NDJSON until
/// the server closes), read by a thread into a channel of messages.
pub struct WatchStream {
    pub status: u16,
    pub messages: mpsc::Receiver<Value>,
    pub sock: TcpStream,
    /// The body of a refusal.
    pub refusal: String,
}

impl WatchStream {
    pub fn open(addr: &str, query: &str) -> std::io::Result<WatchStream> {
        WatchStream::open_with(addr, query, &[])
    }

    pub fn open_with(
        addr: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<WatchStream> {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut req = format!("GET /watch?{query} HTTP/1.0\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes())?;
        let mut reader = BufReader::new(sock.try_clone()?);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let (tx, rx) = mpsc::channel();
        let mut refusal = String::new();
        if status != 200 {
            reader.read_to_string(&mut refusal)?;
        } else {
            std::thread::spawn(move || {
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    let line = line.strip_prefix("data: ").unwrap_or(&line).to_string();
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        Ok(WatchStream {
            status,
            messages: rx,
            sock,
            refusal,
        })
    }

    pub fn next(&self, within: Duration) -> Option<Value> {
        self.messages.recv_timeout(within).ok()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

pub fn changes_of(msg: &Value) -> Vec<Change> {
    msg["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["kv"]["mod_revision"].as_u64().unwrap_or(0),
                        e["type"].as_str().unwrap_or("").to_string(),
                        e["kv"]["key"].as_str().unwrap_or("").to_string(),
                        e["kv"]["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Everything under `prefix` from revision `from` up to `until`, read in
/// one stream from `addr`.
pub fn replay(addr: &str, prefix: &str, from: u64, until: u64) -> Vec<Change> {
    let s = WatchStream::open(
        addr,
        &format!("key={prefix}&prefix=true&start_revision={from}"),
    )
    .expect("open a watch");
    assert_eq!(s.status, 200, "{}", s.refusal);
    let mut out: Vec<Change> = Vec::new();
    while out.last().is_none_or(|c| c.0 < until) {
        let msg = s
            .next(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the replay stopped at {:?} before {until}", out.last()));
        out.extend(changes_of(&msg));
    }
    out
}

/// A watcher that follows the cluster: it watches `prefix` on member
/// `home` of `addrs` (or, while that one is down, on the next) from the
/// revision after the last change it got, until `until` is set and reached.
/// A member that stays quiet for 3 s after `until` is set without reaching
/// it (one removed from the cluster, whose state no longer moves) is left
/// for the next. Panics on a duplicate or an out-of-order change.
pub fn follow(
    addrs: Arc<Mutex<Vec<String>>>,
    home: usize,
    prefix: String,
    until: Arc<Mutex<Option<u64>>>,
) -> Vec<Change> {
    let mut got: Vec<Change> = Vec::new();
    let mut next = 1u64;
    let mut member = home;
    let reached = |got: &Vec<Change>, until: &Arc<Mutex<Option<u64>>>| {
        until
            .lock()
            .unwrap()
            .is_some_and(|u| got.last().is_some_and(|l| l.0 >= u))
    };
    loop {
        if reached(&got, &until) {
            return got;
        }
        let list = addrs.lock().unwrap().clone();
        let addr = list[member % list.len()].clone();
        let query = format!("key={prefix}&prefix=true&start_revision={next}");
        let s = match WatchStream::open(&addr, &query) {
            Ok(s) if s.status == 200 => s,
            _ => {
                member += 1;
                // A client's pause before it tries the next member.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut quiet_since = Instant::now();
        loop {
            let msg = match s.messages.recv_timeout(Duration::from_millis(500)) {
                Ok(msg) => msg,
                // The member went away: watch again on the next one.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if reached(&got, &until) {
                        return got;
                    }
                    if until.lock().unwrap().is_some()
                        && quiet_since.elapsed() > Duration::from_secs(3)
                    {
                        break;
                    }
                    continue;
                }
            };
            let changes = changes_of(&msg);
            if !changes.is_empty() {
                quiet_since = Instant::now();
            }
            for ch in changes {
                assert!(
                    ch.0 >= next,
                    "a duplicate or out-of-order change {ch:?}: expected revision {next} or later"
                );
                next = ch.0 + 1;
                got.push(ch);
            }
            if msg["canceled"] == true {
                if let Some(r) = msg["resume_revision"].as_u64() {
                    next = next.max(r);
                }
                break;
            }
        }
        member += 1;
    }
}
