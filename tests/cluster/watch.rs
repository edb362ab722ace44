//! Watch through a cluster: watchers on every member see exactly the
//! committed sequence while members are killed and paused, a watcher whose
//! member dies goes on elsewhere with no gap and no duplicate, a slow
//! watcher is cancelled with a resume revision that loses nothing, a
//! compacted start revision is refused with the compaction point, and the
//! transports (NDJSON, event stream, long poll, gRPC, ferriumctl) say the
//! same thing.

use crate::support::cluster::watch::{Change, WatchStream, changes_of, follow, replay};
use crate::support::cluster::{Bootstrap, Cluster, eventually, http, http_with_timeout, request};
use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
use ferrium::api::proto::kv::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, watch_request,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write(c: &Cluster, id: u64, key: &str, value: &str) -> u64 {
    let r = c.set_retrying(id, key, value);
    assert_eq!(r.status, 200, "write {key}: {}", r.body);
    r.json()["revision"].as_u64().expect("a revision")
}

#[test]
fn watchers_on_every_member_see_exactly_the_committed_sequence_through_kills_and_pauses() {
    let c = Cluster::start("watch-faults", 3, Bootstrap::Static);
    c.wait_leader(Duration::from_secs(30));
    let addrs = Arc::new(Mutex::new(
        c.ids().iter().map(|&id| c.addr(id)).collect::<Vec<_>>(),
    ));
    let until = Arc::new(Mutex::new(None));
    let followers: Vec<_> = (0..3)
        .map(|home| {
            let (a, u) = (addrs.clone(), until.clone());
            std::thread::spawn(move || follow(a, home, "w/".into(), u))
        })
        .collect();
    let c = Arc::new(Mutex::new(c));
    let acked: Arc<Mutex<Vec<(u64, String, String)>>> = Arc::default();
    let writers: Vec<_> = (1..=3u64)
        .map(|t| {
            let (addrs, acked) = (addrs.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0..120usize {
                    let key = format!("w/{t}/{}", i % 17);
                    let value = format!("{t}-{i}");
                    let body = json!({"Set": {"key": key, "value": value}}).to_string();
                    // Any member: followers forward to the leader.
                    let addr = {
                        let list = addrs.lock().unwrap();
                        list[(i + t as usize) % list.len()].clone()
                    };
                    match http_with_timeout(
                        &addr,
                        "POST",
                        "/write",
                        Some(&body),
                        Duration::from_secs(3),
                    ) {
                        Ok(r) if r.status == 200 => {
                            let rev = r.json()["revision"].as_u64().unwrap();
                            acked.lock().unwrap().push((rev, key, value));
                        }
                        // Refused or unknown: a client's pause, and on.
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();
    // Faults while they write: a follower killed and restarted, another
    // paused and resumed.
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(700)); // let writes flow between faults
        let (victim, sleeper) = {
            let c = c.lock().unwrap();
            let leader = c.current_leader().unwrap_or(1);
            let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
            (
                others[round % others.len()],
                others[(round + 1) % others.len()],
            )
        };
        c.lock().unwrap().kill(victim);
        c.lock().unwrap().pause(sleeper);
        std::thread::sleep(Duration::from_millis(700)); // the fault lasts
        c.lock().unwrap().resume(sleeper);
        c.lock().unwrap().restart(victim);
        let addr = c.lock().unwrap().addr(victim);
        addrs.lock().unwrap()[(victim - 1) as usize] = addr;
    }
    for w in writers {
        w.join().expect("a writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} writes were acknowledged",
        acked.len()
    );
    let last = acked.iter().map(|a| a.0).max().unwrap();
    *until.lock().unwrap() = Some(last);
    let seen: Vec<Vec<Change>> = followers
        .into_iter()
        .map(|f| f.join().expect("a watcher"))
        .collect();
    let leader = c.lock().unwrap().wait_leader(Duration::from_secs(30));
    let history = replay(&c.lock().unwrap().addr(leader), "w/", 1, last);
    for (member, got) in seen.iter().enumerate() {
        let got: Vec<&Change> = got.iter().filter(|ch| ch.0 <= last).collect();
        let want: Vec<&Change> = history.iter().collect();
        assert_eq!(
            got,
            want,
            "watcher homed on member {} differs from history",
            member + 1
        );
    }
    for (rev, key, value) in &acked {
        assert!(
            history
                .iter()
                .any(|h| h.0 == *rev && &h.2 == key && &h.3 == value),
            "acknowledged write {key}={value} at {rev} is not in the history"
        );
    }
}

fn metric(addr: &str, name: &str) -> f64 {
    let r = request(
        addr,
        "GET",
        "/metrics",
        None,
        &[("Accept", "text/plain")],
        Duration::from_secs(15),
    )
    .expect("metrics");
    r.body
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A client that reads a watch stream (HTTP/1.0, NDJSON) 4 KiB at a time,
/// pausing 10 ms between reads until `fast` is set; returns the revisions
/// it got and the resume revision of the cancellation that ends it.
fn slow_reader(addr: &str, query: &str, fast: Arc<AtomicBool>) -> (Vec<u64>, u64) {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(sock, "GET /watch?{query} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut head_done = false;
    let mut got = Vec::new();
    loop {
        let n = sock
            .read(&mut chunk)
            .expect("the stream goes on until cancelled");
        assert!(n > 0, "the stream ended before it was cancelled");
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(
                buf.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buf)
            );
            buf.drain(..end + 4);
            head_done = true;
        }
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let msg: Value = serde_json::from_slice(&line).expect("a JSON line");
            got.extend(changes_of(&msg).iter().map(|c| c.0));
            if msg["canceled"] == true {
                return (
                    got,
                    msg["resume_revision"].as_u64().expect("a resume revision"),
                );
            }
        }
        if !fast.load(Ordering::SeqCst) {
            // The slow client's pace.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_slow_watcher_is_cancelled_with_a_resume_revision_and_resuming_yields_the_rest() {
    let c = Cluster::start_in_process(
        "watch-slow",
        1,
        Bootstrap::Static,
        "[watch]\nqueue_events = 16\n",
    );
    let id = c.wait_leader(Duration::from_secs(30));
    let addr = c.addr(id);
    let first = write(&c, id, "s/first", "x");
    // A client that reads about 400 KB/s while the writes go on faster (a
    // client that stops reading altogether is disconnected by the server's
    // write timeout instead); it reads fast once the server cancelled it.
    let fast = Arc::new(AtomicBool::new(false));
    let reader = {
        let (fast, addr) = (fast.clone(), addr.clone());
        let query = format!("key=s/&prefix=true&start_revision={first}");
        std::thread::spawn(move || slow_reader(&addr, &query, fast))
    };
    let value = "v".repeat(4096);
    let mut revisions = vec![first];
    let cancelled = eventually(Duration::from_secs(120), || {
        for i in 0..50 {
            revisions.push(write(&c, id, &format!("s/{}", i % 7), &value));
        }
        (metric(&addr, "ferrium_watch_slow_cancellations_total") >= 1.0).then_some(())
    });
    fast.store(true, Ordering::SeqCst);
    assert!(
        cancelled.is_some(),
        "the watcher was never cancelled after {} writes",
        revisions.len()
    );
    let (mut got, resume) = reader.join().expect("the reader");
    assert!(resume > first && resume <= *revisions.last().unwrap());
    let last = *revisions.last().unwrap();
    got.extend(replay(&addr, "s/", resume, last).iter().map(|c| c.0));
    assert_eq!(
        got, revisions,
        "before and after the resume: every revision once, in order"
    );
}

#[test]
fn a_watch_from_a_compacted_revision_gets_the_compaction_point_on_rest_and_grpc() {
    let c = Cluster::start_in_process("watch-compacted", 1, Bootstrap::Static, "");
    let id = c.wait_leader(Duration::from_secs(30));
    let addr = c.addr(id);
    let mut last = 0;
    for i in 0..5 {
        last = write(&c, id, "a", &i.to_string());
    }
    let r = c
        .call(
            id,
            "POST",
            "/compact",
            Some(&json!({"revision": last - 1}).to_string()),
        )
        .expect("compact");
    assert_eq!(r.status, 200, "{}", r.body);
    let s = WatchStream::open(&addr, "key=a&start_revision=1").expect("open");
    assert_eq!(s.status, 410, "{}", s.refusal);
    let body: Value = serde_json::from_str(&s.refusal).expect("JSON");
    assert_eq!(body["compact_revision"], json!(last - 1));
    assert!(
        body["error"].as_str().unwrap().contains("compacted"),
        "{body}"
    );
    // From the compaction point on, the history is there.
    let ok = replay(&addr, "a", last - 1, last);
    assert_eq!(
        ok.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![last - 1, last]
    );

    let grpc = c.node(id).grpc_addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut kv = KvServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create(1, b"a", b"", 1, false)).await.unwrap();
        let mut out = kv
            .watch(tokio_stream(rx))
            .await
            .expect("watch")
            .into_inner();
        let r = out.message().await.expect("a message").expect("an answer");
        assert!(r.created && r.canceled, "{r:?}");
        assert_eq!(r.compact_revision, last - 1);
        assert!(r.cancel_reason.contains("compacted"), "{}", r.cancel_reason);
    });
}

fn create(id: i64, key: &[u8], range_end: &[u8], start: u64, prev_kv: bool) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                start_revision: start,
                prev_kv,
                watch_id: id,
                ..WatchCreateRequest::default()
            },
        )),
    }
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures_util::Stream<Item = WatchRequest> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn several_grpc_watches_share_a_stream_and_are_cancelled_and_asked_for_progress_alone() {
    let c = Cluster::start_in_process("watch-grpc", 1, Bootstrap::Static, "");
    let id = c.wait_leader(Duration::from_secs(30));
    let grpc = c.node(id).grpc_addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut kv = KvServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(create(1, b"a", b"", 0, false)).await.unwrap();
        tx.send(create(2, b"p/", b"p0", 0, true)).await.unwrap();
        let mut out = kv
            .watch(tokio_stream(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut created = Vec::new();
        for _ in 0..2 {
            let r = out.message().await.unwrap().unwrap();
            assert!(r.created && !r.canceled, "{r:?}");
            created.push(r.watch_id);
        }
        created.sort();
        assert_eq!(created, vec![1, 2]);
        let put = |k: &str, v: &str| {
            let r = http(
                &c.addr(id),
                "POST",
                "/write",
                Some(&json!({"Set": {"key": k, "value": v}}).to_string()),
            )
            .unwrap();
            assert_eq!(r.status, 200);
            r.json()["revision"].as_u64().unwrap()
        };
        let ra = put("a", "1");
        let r1 = put("p/1", "x");
        let r2 = put("p/1", "y");
        let mut for_a = Vec::new();
        let mut for_p = Vec::new();
        while for_a.is_empty() || for_p.len() < 2 {
            let r = out.message().await.unwrap().unwrap();
            for e in r.events {
                let kv = e.kv.unwrap();
                if r.watch_id == 1 {
                    for_a.push(kv.mod_revision);
                } else {
                    for_p.push((kv.mod_revision, kv.value, e.prev_kv.map(|p| p.value)));
                }
            }
        }
        assert_eq!(for_a, vec![ra]);
        assert_eq!(
            for_p,
            vec![
                (r1, b"x".to_vec(), None),
                (r2, b"y".to_vec(), Some(b"x".to_vec()))
            ]
        );
        tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CancelRequest(
                WatchCancelRequest { watch_id: 1 },
            )),
        })
        .await
        .unwrap();
        let r = out.message().await.unwrap().unwrap();
        assert!(r.canceled && r.watch_id == 1, "{r:?}");
        let after = put("a", "2");
        tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        })
        .await
        .unwrap();
        let r = out.message().await.unwrap().unwrap();
        assert!(
            r.progress_notify && r.watch_id == 2,
            "only the live watch answers: {r:?}"
        );
        assert!(r.header.unwrap().revision >= after);
    });
}

#[test]
fn an_event_stream_resumes_by_last_event_id_and_a_long_poll_answers_after_its_index() {
    let c = Cluster::start_in_process("watch-sse", 1, Bootstrap::Static, "");
    let id = c.wait_leader(Duration::from_secs(30));
    let addr = c.addr(id);
    let r1 = write(&c, id, "e/1", "one");
    let r2 = write(&c, id, "e/2", "two");
    // An event stream from r1: its ids are the revisions.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /watch?key=e/&prefix=true&start_revision={r1} HTTP/1.0\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut ids = Vec::new();
    let mut revisions = Vec::new();
    let mut line = String::new();
    let mut content_type = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while revisions.last() != Some(&r2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no event for {r2} within 30 s: {revisions:?}"
        );
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(t) = line.to_ascii_lowercase().strip_prefix("content-type: ") {
            content_type = t.trim().to_string();
        }
        if let Some(id) = line.strip_prefix("id: ") {
            ids.push(id.trim().parse::<u64>().unwrap());
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data.trim()).expect("data is JSON");
            revisions.extend(changes_of(&v).iter().map(|c| c.0));
        }
    }
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(revisions, vec![r1, r2]);
    // Each message's id is the last revision it carries.
    assert_eq!(ids.last(), Some(&r2));
    // Reconnecting with Last-Event-ID r1 starts after it.
    let again = WatchStream::open_with(
        &addr,
        "key=e/&prefix=true&format=sse",
        &[("Last-Event-ID", &r1.to_string())],
    )
    .unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got.extend(changes_of(
            &again.next(Duration::from_secs(30)).expect("a message"),
        ));
    }
    assert_eq!(got[0].0, r2);

    // A long poll after r2 waits for the next change.
    let poller = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            http(
                &addr,
                "GET",
                &format!("/watch?key=e/&prefix=true&index={r2}&wait=20s"),
                None,
            )
            .unwrap()
        })
    };
    // The poll is open when a watcher is registered.
    let registered = eventually(Duration::from_secs(10), || {
        (metric(&addr, "ferrium_watchers") >= 2.0).then_some(())
    });
    assert!(registered.is_some());
    let r3 = write(&c, id, "e/3", "three");
    let answer = poller.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v = answer.json();
    assert_eq!(
        changes_of(&v).iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![r3]
    );
    assert_eq!(v["index"], json!(r3));
    assert_eq!(
        answer.header("x-ferrium-index"),
        Some(r3.to_string().as_str())
    );
    // With nothing new, the poll ends at its wait with its index.
    let quiet = http(
        &addr,
        "GET",
        &format!("/watch?key=e/&prefix=true&index={r3}&wait=200ms"),
        None,
    )
    .unwrap();
    assert_eq!(quiet.status, 200);
    assert_eq!(quiet.json()["events"], json!([]));
    assert!(quiet.json()["index"].as_u64().unwrap() >= r3);
    // Bad input is a 400 that says what is wrong.
    let bad = http(&addr, "GET", "/watch?key=e/&wait=soon", None).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("wait"), "{}", bad.body);
    let bad = http(&addr, "GET", "/watch?prefix=true", None).unwrap();
    assert_eq!(bad.status, 400);
    let bad = http(&addr, "GET", "/watch?key=a&colour=red", None).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("colour"), "{}", bad.body);
}

#[test]
fn ferriumctl_watch_prints_every_change_and_goes_on_elsewhere_when_its_member_dies() {
    use std::process::{Command, Stdio};
    let mut c = Cluster::start("watch-ctl", 3, Bootstrap::Static);
    let leader = c.wait_leader(Duration::from_secs(30));
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let others: Vec<String> = c
        .ids()
        .into_iter()
        .filter(|&i| i != follower)
        .map(|i| c.addr(i))
        .collect();
    let endpoints = format!("{},{}", c.addr(follower), others.join(","));
    let mut ctl = Command::new(env!("CARGO_BIN_EXE_ferriumctl"))
        .env_remove("FERRIUM_ENDPOINTS")
        .args([
            "--endpoints",
            &endpoints,
            "-o",
            "json",
            "watch",
            "cw/",
            "--prefix",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferriumctl watch");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let out = ctl.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    // The watch is registered on the follower before the first write.
    let started = eventually(Duration::from_secs(20), || {
        (metric(&c.addr(follower), "ferrium_watchers") >= 1.0).then_some(())
    });
    assert!(started.is_some(), "ferriumctl watch did not start");
    let r1 = write(&c, leader, "cw/1", "one");
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the first event");
    assert_eq!(first["kv"]["key"], "cw/1");
    assert_eq!(first["kv"]["mod_revision"], json!(r1));
    // Its member dies; writes go on; it goes on elsewhere with no gap.
    c.kill(follower);
    let r2 = write(&c, leader, "cw/2", "two");
    let r3 = write(&c, leader, "cw/3", "three");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("only {seen:?} after the member died"));
        seen.push(e["kv"]["mod_revision"].as_u64().unwrap());
    }
    assert_eq!(seen, vec![r2, r3]);
    let _ = ctl.kill();
    let _ = ctl.wait();
}
