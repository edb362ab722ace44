//! REST calls: one request to one endpoint, and a call with fail-over that
//! decides, from what happened, whether the next endpoint may be tried.

use serde_json::{Value, json};

use super::error::{Api, Error};
use super::options::{ClientOptions, Endpoint, OptionsError, url};
use crate::http::{self, ClientRequest, Method};

/// Largest answer accepted (a page of 10 000 keys with large values).
const MAX_BODY: usize = 256 << 20;

/// Whether a call may be sent again after it may have been carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read, or a change that does the same when repeated (adding a
    /// learner, setting the voters): moves on after any 503 and after a
    /// connection that failed.
    Repeatable,
    /// A key write: never sent to a second endpoint after anything that may
    /// have applied it.
    Write,
}

/// One request, to send to one endpoint or with fail-over.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: &'static str,
    /// Sent as `application/json`.
    pub body: Option<Value>,
    pub kind: Kind,
    /// An `Accept` header (`text/plain` for Prometheus metrics).
    pub accept: Option<&'static str>,
    /// Sent as `Idempotency-Key`: the server applies the write once however
    /// often it is sent, so [`RestClient::call`] sends it again after an
    /// unknown outcome.
    pub request_id: Option<String>,
    /// How long to wait for the answer instead of the client's timeout
    /// (a lock or a campaign waits for its turn).
    pub timeout: Option<std::time::Duration>,
}

impl Call {
    /// `GET path`, a read.
    pub fn get(path: &'static str) -> Call {
        Call {
            method: Method::Get,
            path,
            body: None,
            kind: Kind::Repeatable,
            accept: None,
            request_id: None,
            timeout: None,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: &'static str, body: Value, kind: Kind) -> Call {
        Call {
            method: Method::Post,
            path,
            body: Some(body),
            kind,
            accept: None,
            request_id: None,
            timeout: None,
        }
    }

    /// This call waiting up to `wait` for its answer.
    pub fn waiting(mut self, wait: std::time::Duration) -> Call {
        self.timeout = Some(wait);
        self
    }

    /// This call with a fresh request id (see [`new_request_id`]).
    pub fn once(mut self) -> Call {
        self.request_id = Some(new_request_id());
        self
    }
}

/// A request id unlikely to be chosen twice: 128 random bits in hex.
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rng = crate::rng::Rng::new(crate::rng::clock_seed() ^ n.rotate_left(32));
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// How often a call with a request id is sent again after an unknown
/// outcome, and the first pause between two sends (doubled each time).
const UNKNOWN_RETRIES: u32 = 4;
const UNKNOWN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// An answer from one node: who answered, the status and the JSON body (a
/// body that is not JSON becomes `{"error": text, "code": "bad_response"}`).
#[derive(Clone, Debug)]
pub struct Reply {
    pub endpoint: String,
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The JSON `code` of an error answer, or `""`.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The JSON `error` of an error answer, or the whole body.
    pub fn message(&self) -> String {
        self.body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string())
    }

    /// This answer as [`Error::Refused`].
    fn refused(self) -> Error {
        let message = self.message();
        Error::Refused {
            code: self.code().to_string(),
            endpoint: self.endpoint,
            status: self.status,
            message,
            body: self.body,
        }
    }

    /// The `error (code)` text of this answer.
    fn error_text(&self) -> String {
        Error::error_text(&self.message(), self.code())
    }
}

/// Why one endpoint gave no answer worth returning.
enum Attempt {
    /// Try the next endpoint, or the leader's address when the node gave it.
    /// `reached`: the node answered (it is up, it just cannot serve now).
    Skip {
        problem: String,
        reached: bool,
        leader: Option<String>,
    },
    /// Stop with this error: anything else could apply a write twice.
    Stop(Error),
}

/// A REST client for a list of endpoints, over one pooled HTTP client.
#[derive(Clone)]
pub struct RestClient {
    http: http::Client,
    options: ClientOptions,
    authorization: Option<String>,
}

impl RestClient {
    /// A client for `options`; reads the TLS files now.
    pub fn new(options: &ClientOptions) -> Result<RestClient, OptionsError> {
        Ok(RestClient {
            http: http::Client::new(options.http_config()?),
            options: options.clone(),
            authorization: options.token.as_ref().map(|t| format!("Bearer {t}")),
        })
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.options.endpoints
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Sends `call` to `endpoint` (`host:port`, `https://host:port`) and
    /// returns the status and the body, whatever they are: no fail-over.
    pub async fn request_one(
        &self,
        endpoint: &str,
        call: &Call,
    ) -> Result<(u16, Vec<u8>), http::Error> {
        let mut req = ClientRequest::new(call.method.clone(), &url(endpoint, call.path))?
            .timeout(call.timeout.unwrap_or(self.options.timeout));
        if let Some(a) = call.accept {
            req = req.header("accept", a);
        }
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth.clone());
        }
        if let Some(id) = &call.request_id {
            req = req.header("idempotency-key", id.clone());
        }
        if let Some(b) = &call.body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = self.http.send(req).await?;
        let status = resp.status();
        let bytes = resp.collect(MAX_BODY).await?;
        Ok((status, bytes))
    }

    /// Opens `GET path` (a path with its query) on `endpoint` and returns
    /// the answer with its body still to be read, for streamed answers such
    /// as watches; reading the body waits at most `silence` for each part.
    pub async fn open_stream(
        &self,
        endpoint: &str,
        path: &str,
        silence: std::time::Duration,
    ) -> Result<http::ClientResponse, http::Error> {
        let mut config = self
            .options
            .http_config()
            .map_err(|e| http::Error::InvalidUrl(e.to_string()))?;
        // The member may first have to build its snapshot before it answers.
        config.request_timeout = config.request_timeout.max(silence);
        config.body_read_timeout = silence;
        let client = http::Client::new(config);
        let mut req = ClientRequest::new(http::Method::Get, &url(endpoint, path))?;
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth.clone());
        }
        client.send(req).await
    }

    /// `call` to one endpoint, classified: an answer, a reason to move on,
    /// or a reason to stop.
    async fn attempt(&self, endpoint: &str, call: &Call) -> Result<Reply, Attempt> {
        let write = call.kind == Kind::Write;
        let (status, bytes) = match self.request_one(endpoint, call).await {
            Ok(r) => r,
            Err(e) if write && !e.is_never_sent() => {
                return Err(Attempt::Stop(Error::OutcomeUnknown {
                    endpoint: endpoint.to_string(),
                    status: None,
                    message: format!("the connection failed after the request was sent ({e})"),
                }));
            }
            Err(e) => {
                return Err(Attempt::Skip {
                    problem: format!("{endpoint}: {e}"),
                    reached: false,
                    leader: None,
                });
            }
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            json!({"error": String::from_utf8_lossy(&bytes).trim().to_string(), "code": "bad_response"})
        });
        let reply = Reply {
            endpoint: endpoint.to_string(),
            status,
            body,
        };
        let refused = status == 503 && reply.code() == "unavailable";
        if write && status >= 500 && !refused {
            return Err(Attempt::Stop(Error::OutcomeUnknown {
                endpoint: reply.endpoint.clone(),
                status: Some(status),
                message: reply.error_text(),
            }));
        }
        if status == 503 {
            if reply.code() == "outcome_unknown" {
                return Err(Attempt::Stop(Error::OutcomeUnknown {
                    endpoint: reply.endpoint.clone(),
                    status: None,
                    message: reply.error_text(),
                }));
            }
            return Err(Attempt::Skip {
                problem: format!("{endpoint}: {}", reply.error_text()),
                reached: true,
                leader: reply.body["leader_api_addr"].as_str().map(str::to_string),
            });
        }
        Ok(reply)
    }

    /// Sends `call` to the first endpoint that answers, in order:
    ///
    /// - one that cannot be connected to, or answers 503 without having
    ///   started the request (`unavailable`: no leader, shutting down, too
    ///   many connections) is skipped; a read also moves on after any other
    ///   503;
    /// - a 503 naming `leader_api_addr` (a node that will not forward) sends
    ///   the call there next;
    /// - a write stops at anything that may have applied it: a connection
    ///   that failed after the request was sent, a server error other than
    ///   503 `unavailable`, or 503 `outcome_unknown`
    ///   ([`Error::OutcomeUnknown`]);
    /// - any other answer is returned as it is, whatever its status.
    ///
    /// A call with a request id is sent again, up to four times with a
    /// growing pause, after an unknown outcome: the server applies it once.
    pub async fn call(&self, call: &Call) -> Result<Reply, Error> {
        let mut pause = UNKNOWN_BACKOFF;
        let mut retries = 0;
        loop {
            match self.call_once(call).await {
                Err(e)
                    if e.is_outcome_unknown()
                        && call.request_id.is_some()
                        && retries < UNKNOWN_RETRIES =>
                {
                    retries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    /// One pass over the endpoints (see [`RestClient::call`]).
    async fn call_once(&self, call: &Call) -> Result<Reply, Error> {
        let mut tried: Vec<String> = Vec::new();
        let mut queue: Vec<String> = self
            .options
            .endpoints
            .iter()
            .rev()
            .map(|e| e.as_str().to_string())
            .collect();
        let mut problems = Vec::new();
        let mut reached_any = false;
        // An unknown outcome met on the way, for a call with a request id.
        let mut unknown = None;
        while let Some(endpoint) = queue.pop() {
            if tried.contains(&endpoint) {
                continue;
            }
            tried.push(endpoint.clone());
            match self.attempt(&endpoint, call).await {
                Ok(reply) => return Ok(reply),
                // With a request id the write is applied once however often
                // it is sent: another endpoint may take it.
                Err(Attempt::Stop(e)) if e.is_outcome_unknown() && call.request_id.is_some() => {
                    problems.push(e.to_string());
                    unknown = Some(e);
                }
                Err(Attempt::Stop(e)) => return Err(e),
                Err(Attempt::Skip {
                    problem,
                    reached,
                    leader,
                }) => {
                    problems.push(problem);
                    reached_any |= reached;
                    if let Some(l) = leader {
                        queue.push(l);
                    }
                }
            }
        }
        if let Some(e) = unknown {
            return Err(e);
        }
        Err(if reached_any {
            Error::Unavailable { problems }
        } else {
            Error::Unreachable {
                api: Api::Rest,
                problems,
            }
        })
    }

    /// [`RestClient::call`], with a non-2xx answer as [`Error::Refused`].
    pub async fn call_ok(&self, call: &Call) -> Result<Reply, Error> {
        let reply = self.call(call).await?;
        ok(reply)
    }

    /// `call` to `endpoint` alone, classified like one step of
    /// [`RestClient::call`]; a non-2xx answer is [`Error::Refused`], a reason
    /// to move on [`Error::Unreachable`] or [`Error::Unavailable`].
    pub async fn call_one(&self, endpoint: &str, call: &Call) -> Result<Reply, Error> {
        match self.attempt(endpoint, call).await {
            Ok(reply) => ok(reply),
            Err(Attempt::Stop(e)) => Err(e),
            Err(Attempt::Skip {
                problem,
                reached: true,
                ..
            }) => Err(Error::Unavailable {
                problems: vec![problem],
            }),
            Err(Attempt::Skip { problem, .. }) => Err(Error::Unreachable {
                api: Api::Rest,
                problems: vec![problem],
            }),
        }
    }
}

fn ok(reply: Reply) -> Result<Reply, Error> {
    if (200..300).contains(&reply.status) {
        Ok(reply)
    } else {
        Err(reply.refused())
    }
}
