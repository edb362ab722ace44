//! The fail-over and classification rules against stand-in nodes that answer
//! canned responses, and the gRPC classification against a closed port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What a stand-in node does with each request, in turn (the last repeats).
#[derive(Clone)]
enum Canned {
    Answer(u16, String),
    /// Read the request, then close the connection without answering.
    Close,
}

/// A stand-in node and the requests it received (`METHOD PATH`, body).
struct Fake {
    addr: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

/// A stand-in node's listener, bound before it is told what to answer (so
/// that answers can name other nodes' addresses).
struct Bound {
    listener: TcpListener,
    addr: String,
}

impl Bound {
    async fn new() -> Bound {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        Bound { listener, addr }
    }

    fn serve(self, replies: Vec<Canned>) -> Fake {
        let Bound { listener, addr } = self;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut conn, _)) = listener.accept().await {
                let Some((line, body)) = read_request(&mut conn).await else {
                    continue;
                };
                log.lock().unwrap().push((line, body));
                let reply = replies[n.min(replies.len() - 1)].clone();
                n += 1;
                if let Canned::Answer(status, body) = reply {
                    let text = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(text.as_bytes()).await;
                }
            }
        });
        Fake { addr, seen }
    }
}

impl Fake {
    async fn start(replies: Vec<Canned>) -> Fake {
        Bound::new().await.serve(replies)
    }

    fn answering(status: u16, body: serde_json::Value) -> impl Future<Output = Fake> {
        Fake::start(vec![Canned::Answer(status, body.to_string())])
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn bodies(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.1.clone())
            .collect()
    }
}

/// The request line and the body of one request on `conn`.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len = text[..end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if seen.len() >= end + 4 + len {
            let line = text.lines().next().unwrap_or_default();
            let mut line = line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string();
            // The request id, when one was sent, for tests of retries.
            if let Some(id) = text[..end].lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("idempotency-key")
                    .then(|| value.trim().to_string())
            }) {
                line.push_str(&format!(" idempotency-key: {id}"));
            }
            return Some((line, text[end + 4..end + 4 + len].to_string()));
        }
    }
}

/// An address nothing listens on: connections to it are refused.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A `Set` sent without a request id: a write that must never be sent twice.
async fn plain_put(c: &RestClient) -> Result<Reply, Error> {
    let call = Call::post(
        "/write",
        json!({"Set": {"key": "k", "value": "v"}}),
        Kind::Write,
    );
    c.call_ok(&call).await
}

fn client(endpoints: &[&str]) -> RestClient {
    let list = endpoints
        .iter()
        .map(|e| Endpoint::parse(e).expect("endpoint"))
        .collect();
    let mut options = ClientOptions::new(list);
    options.timeout = Duration::from_secs(5);
    RestClient::new(&options).expect("client")
}

fn unavailable() -> serde_json::Value {
    json!({"error": "no leader is elected; retry shortly", "code": "unavailable"})
}

fn written() -> serde_json::Value {
    json!({"key": "k", "revision": 7})
}

#[tokio::test]
async fn a_503_unavailable_sends_a_write_to_the_next_endpoint() {
    let refuses = Fake::answering(503, unavailable()).await;
    let serves = Fake::answering(200, written()).await;
    let c = client(&[&refuses.addr, &serves.addr]);
    let a = c.put("k", "v").await.expect("the second endpoint serves");
    assert_eq!(a.endpoint, serves.addr);
    assert_eq!(a.value.revision, 7);
    assert_eq!((refuses.hits(), serves.hits()), (1, 1));
}

#[tokio::test]
async fn a_503_outcome_unknown_stops_a_write() {
    let unknown = json!({"error": "the leader changed", "code": "outcome_unknown"});
    let maybe = Fake::answering(503, unknown).await;
    let next = Fake::answering(200, written()).await;
    let c = client(&[&maybe.addr, &next.addr]);
    let e = plain_put(&c).await.expect_err("the outcome is unknown");
    assert!(
        matches!(&e, Error::OutcomeUnknown { endpoint, status: Some(503), .. } if *endpoint == maybe.addr),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{} answered 503: the leader changed (outcome_unknown); the write may or may not have been \
             applied: read the key before retrying",
            maybe.addr
        )
    );
    assert_eq!(next.hits(), 0, "the write went to a second endpoint");
}

#[tokio::test]
async fn a_server_error_stops_a_write_but_is_a_refusal_for_a_read() {
    let internal = json!({"error": "Raft stopped", "code": "internal"});
    let failing = Fake::answering(500, internal).await;
    let next = Fake::answering(200, written()).await;
    let c = client(&[&failing.addr, &next.addr]);

    let e = plain_put(&c).await.expect_err("the outcome is unknown");
    assert!(
        matches!(
            e,
            Error::OutcomeUnknown {
                status: Some(500),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("answered 500: Raft stopped (internal)"),
        "{e}"
    );

    let e = c
        .get("k", "stale")
        .await
        .expect_err("a read's 500 is an answer");
    match &e {
        Error::Refused {
            status,
            code,
            message,
            ..
        } => assert_eq!(
            (*status, code.as_str(), message.as_str()),
            (500, "internal", "Raft stopped")
        ),
        other => panic!("a read's 500 must be a refusal, not {other}"),
    }
    assert_eq!(
        e.to_string(),
        format!("{} answered 500: Raft stopped (internal)", failing.addr)
    );
    assert_eq!(next.hits(), 0);
}

#[tokio::test]
async fn a_read_moves_on_after_any_503_a_write_only_after_unavailable() {
    let html = "<html>Service Unavailable</html>".to_string();
    let proxy = Fake::start(vec![Canned::Answer(503, html)]).await;
    let next = Fake::answering(200, json!({"key": "k", "value": "v"})).await;
    let c = client(&[&proxy.addr, &next.addr]);
    let a = c.get("k", "linearizable").await.expect("a read moves on");
    assert_eq!(a.value.value.as_deref(), Some("v"));
    assert_eq!(next.hits(), 1);

    let e = plain_put(&c)
        .await
        .expect_err("a proxy's 503 may follow a write");
    assert!(
        matches!(
            e,
            Error::OutcomeUnknown {
                status: Some(503),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(next.hits(), 1, "the write went to a second endpoint");
}

#[tokio::test]
async fn a_refused_connection_is_skipped_and_none_reached_is_unreachable() {
    let dead = closed_port();
    let serves = Fake::answering(200, written()).await;
    let c = client(&[&dead, &serves.addr]);
    c.put("k", "v").await.expect("the dead endpoint is skipped");

    let other = closed_port();
    let e = client(&[&dead, &other])
        .put("k", "v")
        .await
        .expect_err("nothing runs");
    match &e {
        Error::Unreachable {
            api: Api::Rest,
            problems,
        } => {
            assert_eq!(problems.len(), 2);
            assert!(
                problems[0].starts_with(&format!("{dead}: cannot connect")),
                "{e}"
            );
        }
        other => panic!("expected Unreachable, got {other}"),
    }
    assert!(e.to_string().contains("--endpoints"), "{e}");
}

#[tokio::test]
async fn reached_but_unable_to_serve_is_unavailable() {
    let a = Fake::answering(503, unavailable()).await;
    let dead = closed_port();
    let e = client(&[&a.addr, &dead])
        .get("k", "stale")
        .await
        .expect_err("no leader");
    assert!(
        matches!(&e, Error::Unavailable { problems } if problems.len() == 2),
        "{e}"
    );
    assert!(e.to_string().contains("retry shortly"), "{e}");
}

#[tokio::test]
async fn a_connection_lost_after_sending_stops_a_write_but_not_a_read() {
    let hangs_up = Fake::start(vec![Canned::Close]).await;
    let next = Fake::answering(200, written()).await;
    let c = client(&[&hangs_up.addr, &next.addr]);
    // A write without a request id.
    let call = Call::post(
        "/write",
        json!({"Set": {"key": "k", "value": "v"}}),
        Kind::Write,
    );
    let e = c.call(&call).await.expect_err("the write may have arrived");
    assert!(
        matches!(e, Error::OutcomeUnknown { status: None, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("the connection failed after the request was sent"),
        "{e}"
    );
    assert_eq!(next.hits(), 0);

    c.metrics().await.expect("a read moves on");
    assert_eq!((hangs_up.hits(), next.hits()), (2, 1));
}

#[tokio::test]
async fn a_write_with_a_request_id_moves_on_and_keeps_its_id() {
    let hangs_up = Fake::start(vec![Canned::Close]).await;
    let next = Fake::answering(200, written()).await;
    let c = client(&[&hangs_up.addr, &next.addr]);
    c.put("k", "v").await.expect("the next endpoint takes it");
    assert_eq!((hangs_up.hits(), next.hits()), (1, 1));
    let ids: Vec<String> = [&hangs_up, &next]
        .iter()
        .map(|f| f.seen.lock().unwrap()[0].0.clone())
        .collect();
    assert_eq!(ids[0], ids[1], "the same request id both times: {ids:?}");
    assert!(ids[0].contains("idempotency-key: "), "{ids:?}");

    // Every endpoint failing after the send: the outcome stays unknown,
    // after the retries, and nothing says it failed.
    let c = client(&[&hangs_up.addr]);
    let e = c.put("k", "v").await.expect_err("never answered");
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e}");
    assert_eq!(hangs_up.hits(), 1 + 5, "the first pass and four retries");
}

#[tokio::test]
async fn a_not_leader_answer_sends_the_call_to_the_leader() {
    let leader = Fake::answering(200, written()).await;
    let follower = Fake::answering(
        503,
        json!({"error": "not the leader", "code": "unavailable", "leader": 2,
               "leader_api_addr": leader.addr}),
    )
    .await;
    let a = client(&[&follower.addr])
        .put("k", "v")
        .await
        .expect("followed");
    assert_eq!(a.endpoint, leader.addr);
    assert_eq!((follower.hits(), leader.hits()), (1, 1));

    // Two nodes that name each other: each is asked once.
    let (a, b) = (Bound::new().await, Bound::new().await);
    let names = |other: &str| {
        let body = json!({"error": "not the leader", "code": "unavailable",
                          "leader_api_addr": other});
        vec![Canned::Answer(503, body.to_string())]
    };
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let a = a.serve(names(&b_addr));
    let b = b.serve(names(&a_addr));
    let e = client(&[&a.addr])
        .get("k", "stale")
        .await
        .expect_err("nobody serves");
    assert!(
        matches!(&e, Error::Unavailable { problems } if problems.len() == 2),
        "{e}"
    );
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn the_bodies_sent_are_the_documented_json() {
    let n = Fake::start(vec![
        Canned::Answer(200, written().to_string()),
        Canned::Answer(
            200,
            json!({"key": "k", "revision": 8, "existed": true}).to_string(),
        ),
        Canned::Answer(200, json!({"key": "k", "value": null}).to_string()),
        Canned::Answer(200, json!({"keys": [], "has_more": false}).to_string()),
        Canned::Answer(200, json!({"status": "ok"}).to_string()),
    ])
    .await;
    let c = client(&[&n.addr]);
    c.put("k", "v\"1").await.expect("put");
    assert!(c.delete("k").await.expect("delete").value.existed);
    assert_eq!(c.get("k", "lease").await.expect("get").value.value, None);
    c.list_page("p/", 10, Some("p/1"), "stale")
        .await
        .expect("list");
    c.change_membership(&[3, 1].into_iter().collect())
        .await
        .expect("voters");
    assert_eq!(
        n.bodies(),
        [
            r#"{"Set":{"key":"k","value":"v\"1"}}"#,
            r#"{"Delete":{"key":"k"}}"#,
            r#"{"consistency":"lease","key":"k"}"#,
            r#"{"consistency":"stale","limit":10,"prefix":"p/","start_after":"p/1"}"#,
            "[1,3]",
        ]
    );
}

#[tokio::test]
async fn leader_is_none_until_one_is_known() {
    let n = Fake::start(vec![
        Canned::Answer(200, json!({"leader": null}).to_string()),
        Canned::Answer(200, json!({"leader": 2}).to_string()),
        Canned::Answer(
            200,
            json!({"leader": 2, "api_addr": "10.0.0.2:8001", "rpc_addr": "10.0.0.2:8001",
                   "grpc_addr": "10.0.0.2:9001"})
            .to_string(),
        ),
    ])
    .await;
    let c = client(&[&n.addr]);
    assert_eq!(c.leader().await.expect("answer").value, None);
    let l = c
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    assert_eq!((l.id, l.api_addr.as_deref()), (2, Some("10.0.0.2:8001")));
    assert_eq!(n.hits(), 3, "waited through a leader without an address");

    let none = Fake::answering(200, json!({"leader": null})).await;
    let e = client(&[&none.addr])
        .wait_for_leader(Duration::from_millis(300))
        .await
        .expect_err("no leader");
    assert!(matches!(e, Error::NoLeader { .. }), "{e}");
}

#[tokio::test]
async fn a_2xx_that_is_not_the_answer_asked_for_is_a_bad_answer() {
    let n = Fake::answering(200, json!({"unexpected": true})).await;
    let e = client(&[&n.addr])
        .put("k", "v")
        .await
        .expect_err("no revision");
    assert!(matches!(e, Error::BadAnswer { .. }), "{e}");
}

#[test]
fn endpoints_are_parsed_with_ferriumctls_words() {
    let list = Endpoint::parse_list(" http://a:1/, ,https://b:2").expect("valid");
    assert_eq!(list[0].as_str(), "a:1");
    assert_eq!(list[0].url("/x"), "http://a:1/x");
    assert!(list[1].is_tls());
    assert_eq!(
        (list[1].addr(), list[1].url("/x").as_str()),
        ("b:2", "https://b:2/x")
    );
    assert_eq!(
        Endpoint::parse_list("a:1,nohost").unwrap_err().to_string(),
        "endpoint \"nohost\" has no port: write host:port, e.g. 127.0.0.1:8001"
    );
    assert_eq!(
        Endpoint::parse_list(" , ").unwrap_err(),
        OptionsError::NoEndpoints
    );
    let mut o = ClientOptions::new(list);
    o.tls.cert = Some("client.crt".into());
    assert_eq!(
        o.client_tls(false).unwrap_err(),
        OptionsError::CertWithoutKey
    );
}

mod grpc_status {
    use super::*;
    use crate::api::proto::health::HealthCheckRequest;
    use crate::api::proto::health::health_client::HealthClient;
    use tonic::transport::Channel;

    #[tokio::test]
    async fn no_endpoint_accepting_a_connection_is_unreachable() {
        let dead = closed_port();
        let options = ClientOptions::new(vec![Endpoint::parse(&dead).expect("endpoint")]);
        let e = GrpcClient::new(&options)
            .expect("client")
            .connect()
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&e, Error::Unreachable { api: Api::Grpc, problems } if problems.len() == 1),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("no endpoint accepted a gRPC connection"),
            "{e}"
        );
    }

    /// A call on a channel whose connection cannot be (re)opened: tonic
    /// answers UNAVAILABLE with its `ConnectError` in the source chain.
    #[tokio::test]
    async fn a_refused_connection_is_unreachable_by_type() {
        let dead = closed_port();
        let channel = Channel::from_shared(format!("http://{dead}"))
            .expect("uri")
            .connect_lazy();
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect_err("nothing listens");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(grpc::is_connect_failure(&status), "{status:?}");
        let e = grpc::classify(&dead, status);
        assert!(
            matches!(e, Error::Unreachable { api: Api::Grpc, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_status_is_classified_by_type_and_metadata_not_by_its_text() {
        // The words a connect failure would use, but no connect error behind.
        let said = tonic::Status::unavailable("error trying to connect: connection refused");
        assert!(!grpc::is_connect_failure(&said));
        let e = grpc::classify("n1:9001", said);
        assert!(
            matches!(
                e,
                Error::GrpcRefused {
                    code: tonic::Code::Unavailable,
                    ..
                }
            ),
            "{e}"
        );

        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut()
            .insert("x-ferrium-leader", "2@10.0.0.2:9001".parse().unwrap());
        let e = grpc::classify("n1:9001", s);
        assert_eq!(
            e.to_string(),
            "n1:9001: Unavailable: not the leader (leader: 2@10.0.0.2:9001)"
        );

        let mut s = tonic::Status::deadline_exceeded("no commit in time");
        s.metadata_mut()
            .insert("x-ferrium-outcome", "unknown".parse().unwrap());
        let e = grpc::classify("n1:9001", s);
        assert!(e.is_outcome_unknown(), "{e}");
        assert!(
            e.to_string().ends_with("read the key before retrying"),
            "{e}"
        );
    }
}
