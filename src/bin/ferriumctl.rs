//! `ferriumctl`: the operator's command-line client, over the REST API.
//!
//! Every command goes to the first endpoint that answers: an endpoint that
//! refuses the connection, times out connecting, or answers 503 without
//! having started the request (no leader, shutting down) is skipped and the
//! next one tried. A node that answers "not leader" with the leader's
//! address sends the request there. A write moves on only after such a
//! definite refusal (a 503 with code `unavailable`); any other server error
//! (`outcome_unknown`, a 500, a proxy's 502/503/504) may come after the write
//! was applied, so it is never retried: it is reported with its own exit
//! status.

use ferrium::http::{Client, ClientConfig, ClientRequest, ClientTls, Method};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
Usage: ferriumctl [OPTIONS] COMMAND [ARGS]

Operates a Ferrium cluster over its HTTP API.

Commands:
  put KEY VALUE                 Set KEY to VALUE (VALUE '-' reads it from stdin)
  get KEY [--consistency C]     Print the value of KEY; C is linearizable (default),
                                lease or stale
  del KEY                       Delete KEY (deleting a missing key is not an error)
  list PREFIX [--limit N] [--consistency C]
                                Keys starting with PREFIX ('' for all), with values;
                                all of them unless --limit N
  status                        Every member's role, term, indexes and replication lag
  leader                        The current leader's id and address
  member add ID ADDR            Add node ID (listening on ADDR, host:port) as a learner
  member promote ID...          Make learners voters (current voters + IDs)
  member remove ID              Remove node ID from the cluster
  health                        /health of every endpoint
  metrics [--prometheus]        One node's /metrics (a table, JSON with -o json,
                                or Prometheus text)

Options:
  -e, --endpoints LIST   Comma-separated host:port list, tried in order
                         (default: $FERRIUM_ENDPOINTS, else 127.0.0.1:8001);
                         https://host:port for nodes that serve TLS
  -o, --output FORMAT    table (default, for people) or json (for scripts)
  -t, --timeout SECS     Give up on one endpoint after SECS seconds (default 10)
      --grpc             Use the gRPC API (endpoints are then the nodes' gRPC
                         addresses, or their HTTP addresses, which accept gRPC
                         too); for put, get, del, list, leader and health
      --token TOKEN      Bearer token when the cluster requires one
                         (default: $FERRIUM_TOKEN)
      --token-file FILE  Read the bearer token from FILE (the token alone),
                         which keeps it out of the process list
      --cacert FILE      PEM CA bundle that verifies https:// endpoints
                         (with --grpc too: https://host:grpc-port)
                         (default: the system bundle)
      --cert FILE        PEM client certificate, for clusters with mTLS
      --key FILE         PEM private key of --cert
  -h, --help             Print this help
  -V, --version          Print the version

Exit status:
  0  success
  1  the cluster answered with an error (no quorum, conflict, invalid request,
     an unhealthy or unreachable member in `health`/`status`, no leader)
  2  usage error (unknown command or option, missing argument)
  3  no endpoint could be reached
  4  `get`: the key does not exist
  5  a write's outcome is unknown (the leader changed after accepting it, or
     a server error came after it was sent): it may or may not have been
     applied; read the key before retrying
";

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;
const EXIT_OUTCOME_UNKNOWN: u8 = 5;

/// Largest response body accepted (a page of 10 000 keys with large values).
const MAX_BODY: usize = 256 << 20;
/// Keys fetched per `/list` request.
const PAGE: usize = 1000;

/// A failure, with the exit status it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new(
            EXIT_USAGE,
            format!("{}; see ferriumctl --help", message.into()),
        )
    }
}

type Outcome = Result<(), Failure>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

enum Command {
    Put(String, String),
    Get(String, String),
    Del(String),
    List {
        prefix: String,
        limit: Option<usize>,
        consistency: String,
    },
    Status,
    Leader,
    MemberAdd(u64, String),
    MemberPromote(Vec<u64>),
    MemberRemove(u64),
    Health,
    Metrics {
        prometheus: bool,
    },
}

struct Cli {
    endpoints: Vec<String>,
    output: Output,
    timeout: Duration,
    token: Option<String>,
    grpc: bool,
    tls: Option<Arc<ClientTls>>,
    /// The same TLS settings offering HTTP/2, for `--grpc`.
    grpc_tls: Option<Arc<ClientTls>>,
    command: Command,
}

/// The system CA bundle on Debian and Red Hat systems.
const SYSTEM_CA: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// TLS settings from --cacert/--cert/--key, when any endpoint is https://
/// or a file was given.
fn client_tls(
    endpoints: &[String],
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    grpc: bool,
) -> Result<Option<Arc<ClientTls>>, Failure> {
    let wanted = endpoints.iter().any(|e| e.starts_with("https://"));
    if !wanted && cacert.is_none() && cert.is_none() {
        return Ok(None);
    }
    let identity = match (&cert, &key) {
        (Some(c), Some(k)) => Some((Path::new(c.as_str()), Path::new(k.as_str()))),
        (None, None) => None,
        _ => return Err(Failure::usage("--cert and --key go together")),
    };
    let ca = match &cacert {
        Some(c) => c.clone(),
        None => SYSTEM_CA
            .iter()
            .find(|p| Path::new(p).is_file())
            .map(|p| p.to_string())
            .ok_or_else(|| {
                Failure::usage(
                    "no system CA bundle found: give --cacert FILE (the cluster's ca.crt)",
                )
            })?,
    };
    let tls = if grpc {
        ClientTls::new_h2(Path::new(&ca), identity)
    } else {
        ClientTls::new(Path::new(&ca), identity)
    };
    tls.map(|t| Some(Arc::new(t))).map_err(Failure::usage)
}

enum Parsed {
    Run(Cli),
    Help,
    Version,
}

fn parse_cli(args: Vec<std::ffi::OsString>) -> Result<Parsed, Failure> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut endpoints = std::env::var("FERRIUM_ENDPOINTS").ok();
    let env_token = std::env::var("FERRIUM_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (mut token, mut token_file) = (None, None);
    let mut output = Output::Table;
    let mut timeout = Duration::from_secs(10);
    let mut consistency = "linearizable".to_string();
    let mut limit = None;
    let mut prometheus = false;
    let mut words: Vec<String> = Vec::new();
    let mut use_grpc = false;
    let (mut cacert, mut cert, mut key) = (None, None, None);
    let value = |parser: &mut lexopt::Parser, flag: &str| -> Result<String, Failure> {
        parser
            .value()
            .map_err(|_| Failure::usage(format!("{flag} needs a value")))?
            .into_string()
            .map_err(|_| Failure::usage(format!("the value of {flag} is not valid UTF-8")))
    };
    while let Some(arg) = parser.next().map_err(|e| Failure::usage(e.to_string()))? {
        match arg {
            Short('e') | Long("endpoints") => endpoints = Some(value(&mut parser, "--endpoints")?),
            Short('o') | Long("output") => {
                output = match value(&mut parser, "--output")?.as_str() {
                    "table" => Output::Table,
                    "json" => Output::Json,
                    other => {
                        return Err(Failure::usage(format!(
                            "--output {other:?}: use table or json"
                        )));
                    }
                }
            }
            Short('t') | Long("timeout") => {
                let v = value(&mut parser, "--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        Failure::usage(format!("--timeout {v:?} is not a number of seconds"))
                    })?;
                timeout = Duration::from_secs_f64(secs);
            }
            Long("consistency") => {
                let v = value(&mut parser, "--consistency")?;
                if !matches!(v.as_str(), "linearizable" | "lease" | "stale") {
                    return Err(Failure::usage(format!(
                        "--consistency {v:?}: use linearizable, lease or stale"
                    )));
                }
                consistency = v;
            }
            Long("limit") => {
                let v = value(&mut parser, "--limit")?;
                limit = Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Failure::usage(format!("--limit {v:?} is not a number of keys (1 or more)"))
                })?);
            }
            Long("prometheus") => prometheus = true,
            Long("token") => token = Some(value(&mut parser, "--token")?),
            Long("token-file") => token_file = Some(value(&mut parser, "--token-file")?),
            Long("grpc") => use_grpc = true,
            Long("cacert") => cacert = Some(value(&mut parser, "--cacert")?),
            Long("cert") => cert = Some(value(&mut parser, "--cert")?),
            Long("key") => key = Some(value(&mut parser, "--key")?),
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Value(v) => words.push(
                v.into_string()
                    .map_err(|_| Failure::usage("arguments must be valid UTF-8"))?,
            ),
            other => return Err(Failure::usage(other.unexpected().to_string())),
        }
    }
    let token = match (token, token_file) {
        (Some(_), Some(_)) => {
            return Err(Failure::usage(
                "--token and --token-file both give a token; use one of them",
            ));
        }
        (Some(t), None) => Some(t),
        (None, Some(file)) => Some(read_token_file(&file)?),
        (None, None) => env_token,
    };
    let endpoints = parse_endpoints(endpoints.as_deref().unwrap_or("127.0.0.1:8001"))?;
    let command = command(&words, consistency, limit, prometheus)?;
    let tls = client_tls(&endpoints, cacert.clone(), cert.clone(), key.clone(), false)?;
    let grpc_tls = match use_grpc {
        true => client_tls(&endpoints, cacert, cert, key, true)?,
        false => None,
    };
    Ok(Parsed::Run(Cli {
        endpoints,
        output,
        timeout,
        token,
        grpc: use_grpc,
        tls,
        grpc_tls,
        command,
    }))
}

/// The token in `file`: its only word, surrounding whitespace ignored.
/// Errors name the file, never what it holds.
fn read_token_file(file: &str) -> Result<String, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::usage(format!("cannot read --token-file {file}: {e}")))?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(token), None) => Ok(token.to_string()),
        (None, _) => Err(Failure::usage(format!(
            "--token-file {file} is empty; write the bearer token into it"
        ))),
        (Some(_), Some(_)) => Err(Failure::usage(format!(
            "--token-file {file} holds more than one word; it must hold the bearer token alone"
        ))),
    }
}

/// A JSON value as a table cell: `-` for null, strings without quotes.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_endpoints(list: &str) -> Result<Vec<String>, Failure> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| e.trim_start_matches("http://").trim_end_matches('/'))
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::usage(
            "no endpoints: give --endpoints host:port[,host:port...]",
        ));
    }
    if let Some(bad) = endpoints.iter().find(|e| !e.contains(':')) {
        return Err(Failure::usage(format!(
            "endpoint {bad:?} has no port: write host:port, e.g. 127.0.0.1:8001"
        )));
    }
    Ok(endpoints)
}

fn command(
    words: &[String],
    consistency: String,
    limit: Option<usize>,
    prometheus: bool,
) -> Result<Command, Failure> {
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let id = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| Failure::usage(format!("{s:?} is not a node id (a positive integer)")))
    };
    let cmd = match args.as_slice() {
        [] => return Err(Failure::usage("no command given")),
        ["put", key, value] => Command::Put(key.to_string(), value.to_string()),
        ["get", key] => Command::Get(key.to_string(), consistency),
        ["del", key] => Command::Del(key.to_string()),
        ["list", prefix] => Command::List {
            prefix: prefix.to_string(),
            limit,
            consistency,
        },
        ["list"] => Command::List {
            prefix: String::new(),
            limit,
            consistency,
        },
        ["status"] => Command::Status,
        ["leader"] => Command::Leader,
        ["member", "add", n, addr] => Command::MemberAdd(id(n)?, addr.to_string()),
        ["member", "promote", ids @ ..] if !ids.is_empty() => {
            Command::MemberPromote(ids.iter().map(|s| id(s)).collect::<Result<_, _>>()?)
        }
        ["member", "remove", n] => Command::MemberRemove(id(n)?),
        ["health"] => Command::Health,
        ["metrics"] => Command::Metrics { prometheus },
        [
            cmd @ ("put" | "get" | "del" | "list" | "status" | "leader" | "health" | "metrics"),
            ..,
        ] => {
            return Err(Failure::usage(format!("wrong arguments for {cmd}")));
        }
        ["member", ..] => {
            return Err(Failure::usage(
                "member needs: add ID ADDR, promote ID..., or remove ID",
            ));
        }
        [other, ..] => return Err(Failure::usage(format!("unknown command {other:?}"))),
    };
    Ok(cmd)
}

fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args_os().skip(1).collect()) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("ferriumctl {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(f) => return fail(f),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(Failure::new(EXIT_FAILED, format!("cannot start: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    eprintln!("ferriumctl: {}", f.message);
    ExitCode::from(f.code)
}

/// The connection to the cluster: the endpoints and one HTTP client.
struct Ctl {
    client: Client,
    endpoints: Vec<String>,
    output: Output,
    timeout: Duration,
    authorization: Option<String>,
}

/// An answer from one node.
struct Answer {
    endpoint: String,
    status: u16,
    body: Value,
}

/// Why one endpoint did not give an answer worth returning.
enum Attempt {
    /// Could not connect (`reached` false) or the node cannot serve now: try
    /// the next endpoint, or the leader's address when the node gave it.
    Skip {
        problem: String,
        reached: bool,
        leader: Option<String>,
    },
    /// Stop here with this failure (e.g. a write's outcome is unknown).
    Stop(Failure),
}

impl Ctl {
    fn new(cli: &Cli) -> Ctl {
        Ctl {
            client: Client::new(ClientConfig {
                connect_timeout: cli.timeout.min(Duration::from_secs(3)),
                request_timeout: cli.timeout,
                body_read_timeout: cli.timeout,
                tls: cli.tls.clone(),
                ..ClientConfig::default()
            }),
            endpoints: cli.endpoints.clone(),
            output: cli.output,
            timeout: cli.timeout,
            authorization: cli.token.as_ref().map(|t| format!("Bearer {t}")),
        }
    }

    /// One request to one endpoint, without fail-over.
    async fn call_one(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: Option<&'static str>,
    ) -> Result<(u16, Vec<u8>), ferrium::http::Error> {
        let url = if endpoint.starts_with("https://") {
            format!("{endpoint}{path}")
        } else {
            format!("http://{endpoint}{path}")
        };
        let mut req = ClientRequest::new(method, &url)?.timeout(self.timeout);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth.clone());
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = self.client.send(req).await?;
        let status = resp.status();
        let bytes = resp.collect(MAX_BODY).await?;
        Ok((status, bytes))
    }

    async fn try_endpoint(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        write: bool,
    ) -> Result<Answer, Attempt> {
        let (status, bytes) = match self.call_one(endpoint, method, path, body, None).await {
            Ok(r) => r,
            Err(e) => {
                if write && !e.is_never_sent() {
                    return Err(Attempt::Stop(Failure::new(
                        EXIT_OUTCOME_UNKNOWN,
                        format!(
                            "{endpoint}: the connection failed after the request was sent ({e}); \
                             the write may or may not have been applied: read the key before retrying"
                        ),
                    )));
                }
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
        let code = body["code"].as_str().unwrap_or("");
        let refused = status == 503 && code == "unavailable";
        if write && status >= 500 && !refused {
            return Err(Attempt::Stop(Failure::new(
                EXIT_OUTCOME_UNKNOWN,
                format!(
                    "{endpoint} answered {status}: {}; the write may or may not have been applied: read the key before retrying",
                    error_text(&body)
                ),
            )));
        }
        if status == 503 {
            if code == "outcome_unknown" {
                return Err(Attempt::Stop(Failure::new(
                    EXIT_OUTCOME_UNKNOWN,
                    format!(
                        "{endpoint}: {}; the write may or may not have been applied: read the key before retrying",
                        error_text(&body)
                    ),
                )));
            }
            return Err(Attempt::Skip {
                problem: format!("{endpoint}: {}", error_text(&body)),
                reached: true,
                leader: body["leader_api_addr"].as_str().map(str::to_string),
            });
        }
        Ok(Answer {
            endpoint: endpoint.to_string(),
            status,
            body,
        })
    }

    /// Sends to the first endpoint that answers; follows a "not leader"
    /// answer to the leader's address once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        write: bool,
    ) -> Result<Answer, Failure> {
        let mut tried: Vec<String> = Vec::new();
        let mut queue: Vec<String> = self.endpoints.iter().rev().cloned().collect();
        let mut problems = Vec::new();
        let mut reached_any = false;
        while let Some(endpoint) = queue.pop() {
            if tried.contains(&endpoint) {
                continue;
            }
            tried.push(endpoint.clone());
            match self
                .try_endpoint(&endpoint, method.clone(), path, body, write)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Stop(f)) => return Err(f),
                Err(Attempt::Skip {
                    problem,
                    reached,
                    leader,
                }) => {
                    problems.push(problem);
                    reached_any |= reached;
                    // A node that will not forward says where the leader is.
                    if let Some(l) = leader {
                        queue.push(l);
                    }
                }
            }
        }
        let reached_none = !reached_any;
        let code = if reached_none {
            EXIT_UNREACHABLE
        } else {
            EXIT_FAILED
        };
        let advice = if reached_none {
            "check that ferrium-server runs there (systemctl status ferrium) and that \
             --endpoints or FERRIUM_ENDPOINTS lists the nodes' HTTP addresses"
        } else {
            "the cluster may be electing a leader or have lost its quorum: \
             retry shortly, and check `ferriumctl status`"
        };
        Err(Failure::new(
            code,
            format!(
                "no endpoint could serve the request ({}); {advice}",
                problems.join("; ")
            ),
        ))
    }

    /// [`Ctl::call`], turning a non-2xx answer into a failure.
    async fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        write: bool,
    ) -> Result<Answer, Failure> {
        let answer = self.call(method, path, body, write).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} answered {}: {}",
                answer.endpoint,
                answer.status,
                error_text(&answer.body)
            ),
        ))
    }

    fn print_json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }
}

fn error_text(body: &Value) -> String {
    let msg = body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    match body["code"].as_str() {
        Some(code) if !code.is_empty() => format!("{msg} ({code})"),
        _ => msg,
    }
}

async fn run(cli: Cli) -> Outcome {
    if cli.grpc {
        return grpc::run(&cli).await;
    }
    let ctl = Ctl::new(&cli);
    match cli.command {
        Command::Put(key, value) => put(&ctl, key, value).await,
        Command::Get(key, c) => get(&ctl, key, c).await,
        Command::Del(key) => del(&ctl, key).await,
        Command::List {
            prefix,
            limit,
            consistency,
        } => list(&ctl, prefix, limit, consistency).await,
        Command::Status => status(&ctl).await,
        Command::Leader => leader(&ctl).await,
        Command::MemberAdd(id, addr) => member_add(&ctl, id, addr).await,
        Command::MemberPromote(ids) => member_promote(&ctl, ids).await,
        Command::MemberRemove(id) => member_remove(&ctl, id).await,
        Command::Health => health(&ctl).await,
        Command::Metrics { prometheus } => metrics(&ctl, prometheus).await,
    }
}

async fn put(ctl: &Ctl, key: String, value: String) -> Outcome {
    let value = if value == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
            Failure::new(
                EXIT_FAILED,
                format!("cannot read the value from stdin: {e}"),
            )
        })?;
        s
    } else {
        value
    };
    let body = json!({"Set": {"key": key, "value": value}});
    let a = ctl
        .call_ok(Method::Post, "/write", Some(&body), true)
        .await?;
    match ctl.output {
        Output::Json => ctl.print_json(&a.body),
        Output::Table => println!("OK revision {}", a.body["revision"]),
    }
    Ok(())
}

async fn get(ctl: &Ctl, key: String, consistency: String) -> Outcome {
    let body = json!({"key": key, "consistency": consistency});
    let a = ctl
        .call_ok(Method::Post, "/read", Some(&body), false)
        .await?;
    let found = !a.body["value"].is_null();
    match ctl.output {
        Output::Json => ctl.print_json(&a.body),
        Output::Table if found => println!("{}", a.body["value"].as_str().unwrap_or_default()),
        Output::Table => {}
    }
    if !found {
        return Err(Failure::new(
            EXIT_NOT_FOUND,
            format!("key {key:?} not found"),
        ));
    }
    Ok(())
}

async fn del(ctl: &Ctl, key: String) -> Outcome {
    let body = json!({"Delete": {"key": key}});
    let a = ctl
        .call_ok(Method::Post, "/write", Some(&body), true)
        .await?;
    match ctl.output {
        Output::Json => ctl.print_json(&a.body),
        Output::Table if a.body["existed"] == json!(true) => {
            println!("deleted {key} (revision {})", a.body["revision"])
        }
        Output::Table => println!("{key} did not exist (revision {})", a.body["revision"]),
    }
    Ok(())
}

async fn list(ctl: &Ctl, prefix: String, limit: Option<usize>, consistency: String) -> Outcome {
    let mut keys: Vec<Value> = Vec::new();
    let mut start_after: Option<String> = None;
    let mut has_more;
    loop {
        let want = match limit {
            Some(l) => (l - keys.len()).min(PAGE),
            None => PAGE,
        };
        let mut req = json!({"prefix": prefix, "limit": want, "consistency": consistency});
        if let Some(s) = &start_after {
            req["start_after"] = json!(s);
        }
        let a = ctl
            .call_ok(Method::Post, "/list", Some(&req), false)
            .await?;
        let page = a.body["keys"].as_array().cloned().unwrap_or_default();
        keys.extend(page);
        has_more = a.body["has_more"] == json!(true);
        start_after = a.body["next_start_after"].as_str().map(str::to_string);
        let full = limit.is_some_and(|l| keys.len() >= l);
        if !has_more || full || start_after.is_none() {
            break;
        }
    }
    match ctl.output {
        Output::Json => ctl.print_json(&json!({"keys": keys, "has_more": has_more})),
        Output::Table => {
            for k in &keys {
                println!(
                    "{}\t{}",
                    k["key"].as_str().unwrap_or_default(),
                    k["value"].as_str().unwrap_or_default()
                );
            }
            if has_more {
                eprintln!("ferriumctl: more keys follow; raise --limit to see them");
            }
        }
    }
    Ok(())
}

async fn leader(ctl: &Ctl) -> Outcome {
    let a = ctl.call_ok(Method::Get, "/leader", None, false).await?;
    if ctl.output == Output::Json {
        ctl.print_json(&a.body);
    }
    let Some(id) = a.body["leader"].as_u64() else {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} knows no leader: the cluster is electing one or has lost its quorum; \
                 check `ferriumctl status`",
                a.endpoint
            ),
        ));
    };
    if ctl.output == Output::Table {
        match a.body["api_addr"].as_str() {
            Some(addr) => println!("{id}\t{addr}"),
            None => println!("{id}"),
        }
    }
    Ok(())
}

/// The metrics of the node that answers first; the leader's when it can be
/// reached, because only the leader knows replication lag and a committed
/// membership.
async fn leader_metrics(ctl: &Ctl) -> Result<Answer, Failure> {
    let first = ctl.call_ok(Method::Get, "/metrics", None, false).await?;
    let Some(leader) = first.body["current_leader"].as_u64() else {
        return Ok(first);
    };
    if first.body["node_id"].as_u64() == Some(leader) {
        return Ok(first);
    }
    let addr = first.body["membership"]["nodes"][leader.to_string()]["api_addr"]
        .as_str()
        .map(str::to_string);
    if let Some(addr) = addr {
        if let Ok(a) = ctl
            .try_endpoint(&addr, Method::Get, "/metrics", None, false)
            .await
        {
            if a.status == 200 {
                return Ok(a);
            }
        }
    }
    Ok(first)
}

fn ids_of(v: &Value) -> BTreeSet<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

async fn status(ctl: &Ctl) -> Outcome {
    let leader = leader_metrics(ctl).await?;
    let m = &leader.body;
    let voters = ids_of(&m["membership"]["voters"]);
    let learners = ids_of(&m["membership"]["learners"]);
    let nodes = m["membership"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut unreachable = 0;
    for (id_text, info) in &nodes {
        let id: u64 = id_text.parse().unwrap_or(0);
        let addr = info["api_addr"].as_str().unwrap_or_default().to_string();
        let metrics = if m["node_id"].as_u64() == Some(id) {
            Some(m.clone())
        } else {
            match ctl
                .try_endpoint(&addr, Method::Get, "/metrics", None, false)
                .await
            {
                Ok(a) if a.status == 200 => Some(a.body),
                _ => None,
            }
        };
        let membership = if voters.contains(&id) {
            "voter"
        } else if learners.contains(&id) {
            "learner"
        } else {
            "unknown"
        };
        let lag = if m["current_leader"].as_u64() == Some(id) {
            json!(0)
        } else {
            m["replication"][id_text]["lag"].clone()
        };
        let row = match metrics {
            Some(n) => json!({
                "id": id,
                "address": addr,
                "membership": membership,
                "role": n["state"].as_str().unwrap_or("?").to_ascii_lowercase(),
                "term": n["current_term"],
                "leader": n["current_leader"],
                "last_log_index": n["last_log_index"],
                "committed": n["committed"],
                "applied": n["last_applied"],
                "lag": lag,
                "reachable": true,
            }),
            None => {
                unreachable += 1;
                json!({"id": id, "address": addr, "membership": membership, "role": "unreachable",
                       "lag": lag, "reachable": false})
            }
        };
        rows.push(row);
    }
    match ctl.output {
        Output::Json => ctl.print_json(&json!({"members": rows})),
        Output::Table => {
            let header = [
                "ID",
                "ADDRESS",
                "MEMBER",
                "ROLE",
                "TERM",
                "LEADER",
                "LAST LOG",
                "COMMITTED",
                "APPLIED",
                "LAG",
            ];
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    [
                        "id",
                        "address",
                        "membership",
                        "role",
                        "term",
                        "leader",
                        "last_log_index",
                        "committed",
                        "applied",
                        "lag",
                    ]
                    .iter()
                    .map(|k| cell(&r[*k]))
                    .collect()
                })
                .collect();
            print_table(&header, &table);
        }
    }
    if unreachable > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{unreachable} member(s) did not answer; check those hosts \
                 (systemctl status ferrium, journalctl -u ferrium)"
            ),
        ));
    }
    Ok(())
}

/// `{"a":{"b":1}}` as rows `a.b  1`; arrays of scalars stay on one row.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Null => rows.push(vec![prefix.to_string(), "-".to_string()]),
        Value::String(s) => rows.push(vec![prefix.to_string(), s.clone()]),
        other => rows.push(vec![prefix.to_string(), other.to_string()]),
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

async fn member_add(ctl: &Ctl, id: u64, addr: String) -> Outcome {
    // The leader waits for the learner to catch up; it must answer (a clear
    // 503 if the learner is still behind) before this client gives up.
    let wait = ctl
        .timeout
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    let body = json!({"node_id": id, "rpc_addr": addr, "api_addr": addr,
        "timeout": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)});
    let a = ctl
        .call_ok(Method::Post, "/add-learner", Some(&body), false)
        .await?;
    match ctl.output {
        Output::Json => ctl.print_json(&a.body),
        Output::Table => println!(
            "node {id} ({addr}) added as a learner and caught up; \
             make it a voter with: ferriumctl member promote {id}"
        ),
    }
    Ok(())
}

async fn change_voters(ctl: &Ctl, voters: &BTreeSet<u64>) -> Outcome {
    let body = json!(voters);
    let a = ctl
        .call_ok(Method::Post, "/change-membership", Some(&body), false)
        .await?;
    match ctl.output {
        Output::Json => ctl.print_json(&a.body),
        Output::Table => {
            let list: Vec<String> = voters.iter().map(u64::to_string).collect();
            println!("voters are now {}", list.join(", "))
        }
    }
    Ok(())
}

async fn member_promote(ctl: &Ctl, ids: Vec<u64>) -> Outcome {
    let m = leader_metrics(ctl).await?.body;
    let known: BTreeSet<u64> = m["membership"]["nodes"]
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(missing) = ids.iter().find(|id| !known.contains(id)) {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "node {missing} is not a member; add it first with: ferriumctl member add {missing} HOST:PORT"
            ),
        ));
    }
    let mut voters = ids_of(&m["membership"]["voters"]);
    voters.extend(ids);
    change_voters(ctl, &voters).await
}

async fn member_remove(ctl: &Ctl, id: u64) -> Outcome {
    let m = leader_metrics(ctl).await?.body;
    let mut voters = ids_of(&m["membership"]["voters"]);
    let learners = ids_of(&m["membership"]["learners"]);
    if !voters.remove(&id) && !learners.contains(&id) {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "node {id} is not a member (voters {:?}, learners {:?}); see ferriumctl status",
                ids_of(&m["membership"]["voters"]),
                learners
            ),
        ));
    }
    if voters.is_empty() {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("node {id} is the last voter; a cluster cannot remove its only voter"),
        ));
    }
    change_voters(ctl, &voters).await
}

async fn health(ctl: &Ctl) -> Outcome {
    let mut rows = Vec::new();
    let mut bad = 0;
    let mut unreachable = 0;
    for e in &ctl.endpoints {
        let row = match ctl.call_one(e, Method::Get, "/health", None, None).await {
            Ok((status, bytes)) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if status != 200 {
                    bad += 1;
                }
                json!({
                    "endpoint": e,
                    "healthy": status == 200,
                    "status": body["status"].as_str().unwrap_or(if status == 200 { "healthy" } else { "unhealthy" }),
                    "node_id": body["node_id"],
                    "version": body["version"],
                })
            }
            Err(err) => {
                unreachable += 1;
                json!({"endpoint": e, "healthy": false, "status": "unreachable", "error": err.to_string()})
            }
        };
        rows.push(row);
    }
    match ctl.output {
        Output::Json => ctl.print_json(&json!({"endpoints": rows})),
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut status = cell(&r["status"]);
                    if let Some(e) = r["error"].as_str() {
                        status = format!("{status} ({e})");
                    }
                    vec![
                        cell(&r["endpoint"]),
                        cell(&r["node_id"]),
                        cell(&r["version"]),
                        status,
                    ]
                })
                .collect();
            print_table(&["ENDPOINT", "NODE", "VERSION", "HEALTH"], &table);
        }
    }
    if unreachable == ctl.endpoints.len() {
        return Err(Failure::new(
            EXIT_UNREACHABLE,
            "no endpoint answered; check that ferrium-server runs there (systemctl status ferrium)",
        ));
    }
    if bad + unreachable > 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "{} of {} endpoint(s) unhealthy or unreachable; see journalctl -u ferrium on those hosts",
                bad + unreachable,
                ctl.endpoints.len()
            ),
        ));
    }
    Ok(())
}

async fn metrics(ctl: &Ctl, prometheus: bool) -> Outcome {
    if !prometheus {
        let a = ctl.call_ok(Method::Get, "/metrics", None, false).await?;
        match ctl.output {
            Output::Json => ctl.print_json(&a.body),
            Output::Table => {
                let mut rows = Vec::new();
                flatten("", &a.body, &mut rows);
                print_table(&["METRIC", "VALUE"], &rows);
            }
        }
        return Ok(());
    }
    let mut problems = Vec::new();
    for e in &ctl.endpoints {
        match ctl
            .call_one(e, Method::Get, "/metrics", None, Some("text/plain"))
            .await
        {
            Ok((200, bytes)) => {
                print!("{}", String::from_utf8_lossy(&bytes));
                return Ok(());
            }
            Ok((status, _)) => problems.push(format!("{e}: status {status}")),
            Err(err) => problems.push(format!("{e}: {err}")),
        }
    }
    Err(Failure::new(
        EXIT_UNREACHABLE,
        format!(
            "no endpoint served /metrics ({}); check --endpoints and that the nodes run",
            problems.join("; ")
        ),
    ))
}

/// The key-value commands over the gRPC API (`--grpc`).
mod grpc {
    use super::{
        Cli, Command, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OUTCOME_UNKNOWN, EXIT_UNREACHABLE,
        EXIT_USAGE, Failure, Outcome, Output,
    };
    use ferrium::api::proto::health::HealthCheckRequest;
    use ferrium::api::proto::health::health_client::HealthClient;
    use ferrium::api::proto::kv::kv_service_client::KvServiceClient;
    use ferrium::api::proto::kv::{DeleteRequest, GetRequest, ListKeysRequest, SetRequest};
    use ferrium::api::proto::management::LeaderRequest;
    use ferrium::api::proto::management::management_service_client::ManagementServiceClient;
    use ferrium::http::TlsConnector;
    use serde_json::json;
    use tonic::transport::Channel;
    use tonic::{Code, Status};

    /// A connected channel to the first endpoint that accepts one.
    async fn connect(cli: &Cli) -> Result<(String, Channel), Failure> {
        let mut errors = Vec::new();
        for e in &cli.endpoints {
            let (addr, tls) = match (e.strip_prefix("https://"), &cli.grpc_tls) {
                (Some(addr), Some(tls)) => (addr, Some(tls.clone())),
                _ => (e.as_str(), None),
            };
            let Ok(endpoint) = Channel::from_shared(format!("http://{addr}")) else {
                errors.push(format!("{e}: not a valid address"));
                continue;
            };
            let endpoint = endpoint.connect_timeout(cli.timeout).timeout(cli.timeout);
            let connected = match tls {
                Some(tls) => {
                    endpoint
                        .connect_with_connector(TlsConnector::new(tls, addr))
                        .await
                }
                None => endpoint.connect().await,
            };
            match connected {
                Ok(ch) => return Ok((e.clone(), ch)),
                Err(err) => errors.push(format!("{e}: {err}")),
            }
        }
        Err(Failure::new(
            EXIT_UNREACHABLE,
            format!(
                "no endpoint accepted a gRPC connection ({}); check --endpoints and that the nodes run",
                errors.join("; ")
            ),
        ))
    }

    fn request<T>(cli: &Cli, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &cli.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                req.metadata_mut().insert("authorization", v);
            }
        }
        req
    }

    /// Maps a gRPC status onto the documented exit codes.
    fn failure(endpoint: &str, s: Status) -> Failure {
        let unknown = s
            .metadata()
            .get("x-ferrium-outcome")
            .is_some_and(|v| v == "unknown");
        let code = if unknown {
            EXIT_OUTCOME_UNKNOWN
        } else if s.code() == Code::Unavailable && s.message().contains("connect") {
            EXIT_UNREACHABLE
        } else {
            EXIT_FAILED
        };
        let mut msg = format!("{endpoint}: {:?}: {}", s.code(), s.message());
        if let Some(l) = s
            .metadata()
            .get("x-ferrium-leader")
            .and_then(|v| v.to_str().ok())
        {
            msg.push_str(&format!(" (leader: {l})"));
        }
        if unknown {
            msg.push_str(
                "; the write may or may not have been applied: read the key before retrying",
            );
        }
        Failure::new(code, msg)
    }

    fn print(cli: &Cli, v: serde_json::Value, table: impl FnOnce()) {
        match cli.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            Output::Table => table(),
        }
    }

    pub async fn run(cli: &Cli) -> Outcome {
        let (endpoint, channel) = connect(cli).await?;
        let mut kv = KvServiceClient::new(channel.clone());
        match &cli.command {
            Command::Put(key, value) => {
                let r = kv
                    .set(request(
                        cli,
                        SetRequest {
                            key: key.clone(),
                            value: value.clone(),
                        },
                    ))
                    .await
                    .map_err(|s| failure(&endpoint, s))?
                    .into_inner();
                print(cli, json!({"key": key, "revision": r.revision}), || {
                    println!("OK revision {}", r.revision)
                });
            }
            Command::Get(key, consistency) => {
                let msg = GetRequest {
                    key: key.clone(),
                    consistency: consistency.clone(),
                };
                let r = kv
                    .get(request(cli, msg))
                    .await
                    .map_err(|s| failure(&endpoint, s))?
                    .into_inner();
                let value = if r.found { json!(r.value) } else { json!(null) };
                print(
                    cli,
                    json!({"key": key, "value": value, "mod_revision": r.mod_revision}),
                    || {
                        if r.found {
                            println!("{}", r.value)
                        }
                    },
                );
                if !r.found {
                    return Err(Failure::new(
                        EXIT_NOT_FOUND,
                        format!("key {key:?} not found"),
                    ));
                }
            }
            Command::Del(key) => {
                let r = kv
                    .delete(request(cli, DeleteRequest { key: key.clone() }))
                    .await
                    .map_err(|s| failure(&endpoint, s))?
                    .into_inner();
                print(
                    cli,
                    json!({"key": key, "existed": r.existed, "revision": r.revision}),
                    || {
                        if r.existed {
                            println!("deleted {key} (revision {})", r.revision)
                        } else {
                            println!("{key} did not exist (revision {})", r.revision)
                        }
                    },
                );
            }
            Command::List {
                prefix,
                limit,
                consistency,
            } => {
                let mut keys = Vec::new();
                let mut start_after = String::new();
                loop {
                    let want = limit.map_or(1000, |l| (l - keys.len()).min(1000)) as u32;
                    let msg = ListKeysRequest {
                        prefix: prefix.clone(),
                        limit: want,
                        start_after: start_after.clone(),
                        consistency: consistency.clone(),
                    };
                    let r = kv
                        .list_keys(request(cli, msg))
                        .await
                        .map_err(|s| failure(&endpoint, s))?
                        .into_inner();
                    keys.extend(r.keys);
                    let full = limit.is_some_and(|l| keys.len() >= l);
                    if !r.has_more || full || r.next_start_after.is_empty() {
                        break;
                    }
                    start_after = r.next_start_after;
                }
                print(cli, json!({"keys": keys}), || {
                    for k in &keys {
                        println!("{k}");
                    }
                });
            }
            Command::Leader => {
                let mut m = ManagementServiceClient::new(channel);
                let r = m
                    .get_leader(request(cli, LeaderRequest {}))
                    .await
                    .map_err(|s| failure(&endpoint, s))?
                    .into_inner();
                let Some(id) = r.leader_id else {
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!("{endpoint} knows no leader; retry shortly"),
                    ));
                };
                let addr = r.leader_info.map(|n| n.grpc_addr).unwrap_or_default();
                print(cli, json!({"leader": id, "grpc_addr": addr}), || {
                    println!("{id}\t{addr}")
                });
            }
            Command::Health => {
                let mut h = HealthClient::new(channel);
                let r = h
                    .check(request(
                        cli,
                        HealthCheckRequest {
                            service: String::new(),
                        },
                    ))
                    .await
                    .map_err(|s| failure(&endpoint, s))?
                    .into_inner();
                let serving = r.status == 1;
                let status = if serving { "SERVING" } else { "NOT_SERVING" };
                print(cli, json!({"endpoint": endpoint, "status": status}), || {
                    println!("{endpoint}\t{status}")
                });
                if !serving {
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!("{endpoint} is not serving"),
                    ));
                }
            }
            _ => {
                return Err(Failure::new(
                    EXIT_USAGE,
                    "this command is not available with --grpc; run it without --grpc (HTTP)",
                ));
            }
        }
        Ok(())
    }
}
