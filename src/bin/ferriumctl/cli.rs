//! The command line: options, the command and its arguments, `--help`.

use std::path::PathBuf;
use std::time::Duration;

use ferrium::client::{ClientOptions, Endpoint, GrpcClient, OptionsError, RestClient, TlsOptions};

use crate::Failure;
use crate::output::Output;

pub const USAGE: &str = "\
Usage: ferriumctl [OPTIONS] COMMAND [ARGS]

Operates a Ferrium cluster over its HTTP API.

Commands:
  put KEY VALUE [--if-mod-rev N] [--lease ID]
                                Set KEY to VALUE (VALUE '-' reads it from stdin);
                                with --if-mod-rev only if KEY's mod revision is N
                                (0: only if KEY does not exist); with --lease
                                attached to lease ID (deleted when it ends)
  get KEY [--consistency C] [--rev N]
                                Print the value of KEY (at revision N); C is
                                linearizable (default), lease or stale
  del KEY                       Delete KEY (deleting a missing key is not an error)
  list PREFIX [--limit N] [--consistency C]
                                Keys starting with PREFIX ('' for all), with values;
                                all of them unless --limit N
  range KEY [END] [--prefix | --from-key] [--rev N] [--limit N] [--keys-only]
        [--count-only] [--sort-by key|version|create|mod|value] [--order ascend|descend]
                                Keys in [KEY, END) (or starting with KEY, or from
                                KEY on), at revision N, key and value on two lines
  txn [FILE] [--json]           Run a transaction read from FILE or stdin: three
                                blocks separated by a blank line (comparisons
                                like mod(k) = 5, value(k) != x; operations
                                when they hold: put K V, del K [END], get K [END];
                                operations otherwise); --json reads the body of
                                POST /txn instead
  compact REV                   Forget history before revision REV
  watch KEY [--prefix] [--rev N] [--prev-kv]
                                Print every change of KEY (or of every key starting
                                with KEY) as it happens, from revision N (default:
                                from now), until interrupted; type, key and value
                                on separate lines (one JSON event per line with
                                -o json); goes on with the next endpoint, without
                                a gap, when its member goes away
  lease grant TTL [--id N]      Grant a lease of TTL seconds (id N, or one the
                                cluster picks)
  lease keep-alive ID [--once]  Renew lease ID every TTL/3 until interrupted
                                (once with --once)
  lease revoke ID               End lease ID now; its keys are deleted
  lease timetolive ID [--keys]  Lease ID's remaining and granted TTL (and keys)
  lease list                    Every lease's id
  lock NAME [--ttl N] [-- COMMAND [ARGS...]]
                                Take lock NAME (waiting for its turn) under a
                                lease of N seconds (default 60) kept alive
                                meanwhile; run COMMAND holding it, with
                                FERRIUM_LOCK_KEY and FERRIUM_LOCK_REV (the
                                fencing token) in its environment, and release
                                it when COMMAND exits (with its exit status);
                                without COMMAND print the key and hold the lock
                                until interrupted
  elect NAME [PROPOSAL] [--ttl N]
                                Campaign in election NAME with PROPOSAL: print
                                the leader key and value once elected and lead
                                until interrupted; without PROPOSAL print each
                                leader (key and value) as leadership changes
  status                        Every member's role, term, indexes and replication lag
  leader                        The current leader's id and address
  member add ID ADDR            Add node ID (listening on ADDR, host:port) as a learner
  member promote ID...          Make learners voters (current voters + IDs)
  member remove ID              Remove node ID from the cluster
  health                        /health of every endpoint
  snapshot save FILE            A backup of every key at one revision (the first
                                endpoint that answers makes it): written to
                                FILE.part, checked, then renamed to FILE
  snapshot status FILE          Check a backup file; its revision, keys, size
                                and SHA-256
  snapshot restore FILE --data-dir DIR --id N --initial-members LIST
                                Make DIR (new or empty) the data directory of
                                member N of a new cluster of LIST
                                (ID=HTTP_ADDR[/GRPC_ADDR],...) holding FILE's
                                data; run it for every member with the same
                                FILE and LIST
  metrics [--prometheus]        One node's /metrics (a table, JSON with -o json,
                                or Prometheus text)
  migrate --from-etcd ENDPOINTS [--prefix P] [--follow] [--state FILE]
          [--overwrite] [--etcd-cacert FILE] [--etcd-cert FILE --etcd-key FILE]
                                Copy a running etcd 3.4+ into this cluster: every
                                key (those starting with P with --prefix) at one
                                etcd revision, and every lease with its id and
                                the TTL it has left; ENDPOINTS are etcd's client
                                URLs (http://host:2379 or host:2379, comma-
                                separated, tried in order). Both sides are
                                spoken to over etcd's gRPC API (--endpoints may
                                be this cluster's HTTP or gRPC addresses). With
                                --follow, then apply etcd's changes as they
                                happen (one line every few seconds says how far)
                                until SIGINT or SIGTERM, and print the revision
                                reached. FILE (default ferrium-migrate-<etcd
                                cluster id>.json here) records how far it got:
                                run the same command again and it goes on from
                                there, or, if etcd compacted that history, copies
                                again writing only what differs. A cluster that
                                already holds keys (under P) is refused without
                                FILE unless --overwrite, which makes them etcd's
                                and deletes those etcd lacks

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
     a server error came after it was sent) after four more tries with the
     same request id: it may or may not have been applied; read the key
     before writing it again
  6  `put --if-mod-rev`, `txn`: the condition did not hold (nothing written
     by the success branch)
  `migrate --follow` exits 0 when stopped by SIGINT or SIGTERM; any run that
  fails or is interrupted before it is done leaves FILE ready for a rerun.

Writes carry a request id (Idempotency-Key): a write whose outcome is
unknown is sent again with the same id, and the cluster applies it once.
";

pub enum Command {
    Put(String, String),
    PutIf(String, String, u64),
    Get(String, String),
    GetAt(crate::txn::RangeArgs),
    Range(crate::txn::RangeArgs),
    Txn {
        file: Option<String>,
        json: bool,
    },
    Compact(u64),
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
    SnapshotSave(String),
    SnapshotStatus(String),
    SnapshotRestore {
        file: String,
        data_dir: String,
        id: u64,
        members: std::collections::BTreeMap<u64, ferrium::raft::types::Node>,
    },
    Metrics {
        prometheus: bool,
    },
    Watch(crate::watch::WatchArgs),
    PutLease(String, String, u64),
    LeaseGrant {
        ttl: u64,
        id: u64,
    },
    LeaseKeepAlive {
        id: u64,
        once: bool,
    },
    LeaseRevoke(u64),
    LeaseTimeToLive {
        id: u64,
        keys: bool,
    },
    LeaseList,
    Lock {
        name: String,
        ttl: u64,
        command: Vec<String>,
    },
    Elect {
        name: String,
        proposal: Option<String>,
        ttl: u64,
    },
    Migrate(Box<crate::migrate::MigrateArgs>),
}

/// Which API the commands go over, with its client.
pub enum Api {
    Rest(RestClient),
    /// `--grpc`.
    Grpc(GrpcClient),
}

pub struct Cli {
    pub output: Output,
    pub api: Api,
    pub command: Command,
}

pub enum Parsed {
    Run(Box<Cli>),
    Help,
    Version,
}

fn usage(e: OptionsError) -> Failure {
    Failure::usage(e.to_string())
}

pub fn parse_cli(args: Vec<std::ffi::OsString>) -> Result<Parsed, Failure> {
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
    let mut flags = Flags::default();
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
            Long("rev") => flags.rev = Some(number(&value(&mut parser, "--rev")?, "--rev")?),
            Long("if-mod-rev") => {
                flags.if_mod_rev = Some(number(
                    &value(&mut parser, "--if-mod-rev")?,
                    "--if-mod-rev",
                )?)
            }
            Long("lease") => {
                flags.lease = Some(lease_id(&value(&mut parser, "--lease")?, "--lease")?)
            }
            Long("id") => flags.id = Some(value(&mut parser, "--id")?),
            Long("data-dir") => flags.data_dir = Some(value(&mut parser, "--data-dir")?),
            Long("initial-members") => {
                flags.initial_members = Some(value(&mut parser, "--initial-members")?);
            }
            Long("ttl") => {
                let v = value(&mut parser, "--ttl")?;
                flags.ttl = Some(v.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(|| {
                    Failure::usage(format!(
                        "--ttl {v:?} is not a number of seconds (1 or more)"
                    ))
                })?);
            }
            Long("once") => flags.once = true,
            Long("keys") => flags.keys = true,
            // `migrate --prefix P` takes a value; elsewhere it is a switch.
            Long("prefix") if words.first().is_some_and(|w| w == "migrate") => {
                flags.migrate_prefix = Some(value(&mut parser, "--prefix")?);
            }
            Long("prefix") => flags.prefix = true,
            Long("from-etcd") => flags.from_etcd = Some(value(&mut parser, "--from-etcd")?),
            Long("follow") => flags.follow = true,
            Long("state") => flags.state = Some(value(&mut parser, "--state")?),
            Long("overwrite") => flags.overwrite = true,
            Long("etcd-cacert") => {
                flags.etcd_tls.ca = Some(value(&mut parser, "--etcd-cacert")?.into())
            }
            Long("etcd-cert") => {
                flags.etcd_tls.cert = Some(value(&mut parser, "--etcd-cert")?.into())
            }
            Long("etcd-key") => flags.etcd_tls.key = Some(value(&mut parser, "--etcd-key")?.into()),
            Long("from-key") => flags.from_key = true,
            Long("prev-kv") => flags.prev_kv = true,
            Long("keys-only") => flags.keys_only = true,
            Long("count-only") => flags.count_only = true,
            Long("json") => flags.json = true,
            Long("sort-by") => {
                let v = value(&mut parser, "--sort-by")?;
                if !matches!(v.as_str(), "key" | "version" | "create" | "mod" | "value") {
                    return Err(Failure::usage(format!(
                        "--sort-by {v:?}: use key, version, create, mod or value"
                    )));
                }
                flags.sort_by = Some(v);
            }
            Long("order") => {
                let v = value(&mut parser, "--order")?;
                if !matches!(v.as_str(), "ascend" | "descend") {
                    return Err(Failure::usage(format!(
                        "--order {v:?}: use ascend or descend"
                    )));
                }
                flags.order = Some(v);
            }
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
    let endpoints =
        Endpoint::parse_list(endpoints.as_deref().unwrap_or("127.0.0.1:8001")).map_err(usage)?;
    let mut command = command(&words, consistency, limit, prometheus, flags)?;
    let options = ClientOptions {
        endpoints,
        timeout,
        token,
        tls: TlsOptions {
            ca: cacert.map(PathBuf::from),
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
        },
    };
    if let Command::Migrate(m) = &mut command {
        m.ferrium = options.clone();
        m.etcd.timeout = timeout;
    }
    let api = match use_grpc {
        true => Api::Grpc(GrpcClient::new(&options).map_err(usage)?),
        false => Api::Rest(RestClient::new(&options).map_err(usage)?),
    };
    Ok(Parsed::Run(Box::new(Cli {
        output,
        api,
        command,
    })))
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

/// The flags of the KV v2 commands.
#[derive(Default)]
struct Flags {
    rev: Option<u64>,
    if_mod_rev: Option<u64>,
    prefix: bool,
    from_key: bool,
    prev_kv: bool,
    keys_only: bool,
    count_only: bool,
    json: bool,
    sort_by: Option<String>,
    order: Option<String>,
    lease: Option<u64>,
    /// `--id`: a lease id, or a member id for `snapshot restore`.
    id: Option<String>,
    data_dir: Option<String>,
    initial_members: Option<String>,
    ttl: Option<u64>,
    once: bool,
    keys: bool,
    /// `migrate`'s flags.
    from_etcd: Option<String>,
    migrate_prefix: Option<String>,
    follow: bool,
    state: Option<String>,
    overwrite: bool,
    etcd_tls: TlsOptions,
}

fn lease_id(v: &str, what: &str) -> Result<u64, Failure> {
    v.parse::<u64>()
        .ok()
        .filter(|id| *id > 0 && i64::try_from(*id).is_ok())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{what} {v:?} is not a lease id (a positive integer)"
            ))
        })
}

fn number(v: &str, flag: &str) -> Result<u64, Failure> {
    v.parse::<u64>()
        .map_err(|_| Failure::usage(format!("{flag} {v:?} is not a revision (0 or more)")))
}

fn command(
    words: &[String],
    consistency: String,
    limit: Option<usize>,
    prometheus: bool,
    flags: Flags,
) -> Result<Command, Failure> {
    let range_args = |key: &str, end: Option<&str>, consistency: String| crate::txn::RangeArgs {
        key: key.to_string(),
        end: end.map(str::to_string),
        prefix: flags.prefix,
        from_key: flags.from_key,
        revision: flags.rev.unwrap_or(0),
        limit,
        keys_only: flags.keys_only,
        count_only: flags.count_only,
        sort_by: flags.sort_by.clone(),
        order: flags.order.clone(),
        consistency,
    };
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    let id = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| Failure::usage(format!("{s:?} is not a node id (a positive integer)")))
    };
    let cmd = match args.as_slice() {
        [] => return Err(Failure::usage("no command given")),
        ["put", key, value] => match (flags.if_mod_rev, flags.lease) {
            (Some(_), Some(_)) => {
                return Err(Failure::usage(
                    "put takes --if-mod-rev or --lease, not both (use txn for both)",
                ));
            }
            (Some(n), None) => Command::PutIf(key.to_string(), value.to_string(), n),
            (None, Some(l)) => Command::PutLease(key.to_string(), value.to_string(), l),
            (None, None) => Command::Put(key.to_string(), value.to_string()),
        },
        ["lease", "grant", ttl] => Command::LeaseGrant {
            ttl: ttl.parse::<u64>().map_err(|_| {
                Failure::usage(format!(
                    "lease grant {ttl:?}: the TTL is a number of seconds"
                ))
            })?,
            id: match &flags.id {
                Some(v) => lease_id(v, "--id")?,
                None => 0,
            },
        },
        ["lease", "keep-alive" | "keepalive", id] => Command::LeaseKeepAlive {
            id: lease_id(id, "lease keep-alive")?,
            once: flags.once,
        },
        ["lease", "revoke", id] => Command::LeaseRevoke(lease_id(id, "lease revoke")?),
        ["lease", "timetolive", id] => Command::LeaseTimeToLive {
            id: lease_id(id, "lease timetolive")?,
            keys: flags.keys,
        },
        ["lease", "list"] => Command::LeaseList,
        ["lock", name, command @ ..] => Command::Lock {
            name: name.to_string(),
            ttl: flags.ttl.unwrap_or(crate::lease::SESSION_TTL),
            command: command.iter().map(|s| s.to_string()).collect(),
        },
        ["elect", name] => Command::Elect {
            name: name.to_string(),
            proposal: None,
            ttl: flags.ttl.unwrap_or(crate::lease::SESSION_TTL),
        },
        ["elect", name, proposal] => Command::Elect {
            name: name.to_string(),
            proposal: Some(proposal.to_string()),
            ttl: flags.ttl.unwrap_or(crate::lease::SESSION_TTL),
        },
        ["get", key] => match flags.rev {
            Some(_) => Command::GetAt(range_args(key, None, consistency)),
            None => Command::Get(key.to_string(), consistency),
        },
        ["range", key] => Command::Range(range_args(key, None, consistency)),
        ["range", key, end] if !flags.prefix && !flags.from_key => {
            Command::Range(range_args(key, Some(end), consistency))
        }
        ["txn"] => Command::Txn {
            file: None,
            json: flags.json,
        },
        ["txn", file] => Command::Txn {
            file: Some(file.to_string()),
            json: flags.json,
        },
        ["compact", rev] => Command::Compact(number(rev, "compact")?),
        ["watch", key] => Command::Watch(crate::watch::WatchArgs {
            key: key.to_string(),
            prefix: flags.prefix,
            revision: flags.rev.unwrap_or(0),
            prev_kv: flags.prev_kv,
        }),
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
        ["snapshot", "save", file] => Command::SnapshotSave(file.to_string()),
        ["snapshot", "status", file] => Command::SnapshotStatus(file.to_string()),
        ["snapshot", "restore", file] => {
            let (Some(data_dir), Some(n), Some(list)) =
                (&flags.data_dir, &flags.id, &flags.initial_members)
            else {
                return Err(Failure::usage(
                    "snapshot restore needs --data-dir DIR, --id N and --initial-members LIST",
                ));
            };
            Command::SnapshotRestore {
                file: file.to_string(),
                data_dir: data_dir.clone(),
                id: id(n)?,
                members: crate::snapshot::parse_members(list)?,
            }
        }
        ["snapshot", ..] => {
            return Err(Failure::usage(
                "snapshot needs: save FILE, status FILE, or restore FILE --data-dir DIR --id N --initial-members LIST",
            ));
        }
        ["metrics"] => Command::Metrics { prometheus },
        ["migrate"] => Command::Migrate(Box::new(migrate_args(&flags)?)),
        [
            cmd @ ("put" | "get" | "del" | "list" | "status" | "leader" | "health" | "metrics"
            | "range" | "txn" | "compact" | "watch" | "lock" | "elect" | "migrate"),
            ..,
        ] => {
            return Err(Failure::usage(format!("wrong arguments for {cmd}")));
        }
        ["lease", ..] => {
            return Err(Failure::usage(
                "lease needs: grant TTL, keep-alive ID, revoke ID, timetolive ID or list",
            ));
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

/// `migrate`'s arguments; the cluster's own options are filled in once
/// parsed.
fn migrate_args(flags: &Flags) -> Result<crate::migrate::MigrateArgs, Failure> {
    let Some(list) = &flags.from_etcd else {
        return Err(Failure::usage(
            "migrate needs --from-etcd ENDPOINTS (etcd's client URLs, e.g. http://127.0.0.1:2379)",
        ));
    };
    let endpoints = Endpoint::parse_list(list).map_err(|e| match e {
        OptionsError::NoPort(ep) => Failure::usage(format!(
            "--from-etcd endpoint {ep:?} has no port: write http://host:port or host:port, e.g. \
             http://127.0.0.1:2379"
        )),
        other => Failure::usage(format!("--from-etcd: {other}")),
    })?;
    Ok(crate::migrate::MigrateArgs {
        etcd: ClientOptions {
            endpoints,
            timeout: Duration::from_secs(10),
            token: None,
            tls: flags.etcd_tls.clone(),
        },
        ferrium: ClientOptions::new(Vec::new()),
        prefix: flags.migrate_prefix.clone().unwrap_or_default(),
        follow: flags.follow,
        state: flags.state.as_ref().map(PathBuf::from),
        overwrite: flags.overwrite,
    })
}
