//! `ferriumctl`: the operator's command-line client, over the REST API (or
//! gRPC with `--grpc`), built on [`ferrium::client`].
//!
//! Every command goes to the first endpoint that answers: an endpoint that
//! refuses the connection, times out connecting, or answers 503 without
//! having started the request (no leader, shutting down) is skipped and the
//! next one tried. A node that answers "not leader" with the leader's
//! address sends the request there. A write moves on only after such a
//! definite refusal (a 503 with code `unavailable`); any other server error
//! (`outcome_unknown`, a 500, a proxy's 502/503/504) may come after the write
//! was applied, so it is sent again only with the same request id, which the
//! cluster applies once; if the outcome is still unknown after that, it is
//! reported with its own exit status. Those rules live in [`ferrium::client::RestClient::call`]; this
//! binary parses the command line ([`cli`]), runs one command ([`kv`],
//! [`txn`], [`lease`], [`members`], [`status`], [`health`], [`watch`], [`snapshot`], [`grpc`],
//! [`migrate`]) and prints the answer ([`output`]).

mod cli;
mod grpc;
mod health;
mod kv;
mod lease;
mod members;
mod migrate;
mod output;
mod snapshot;
mod status;
mod txn;
mod watch;

use std::process::ExitCode;

use ferrium::client::{self, RestClient};

use cli::{Api, Cli, Command, Parsed, USAGE};
use output::Output;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;
pub const EXIT_OUTCOME_UNKNOWN: u8 = 5;
pub const EXIT_COMPARE_FAILED: u8 = 6;

/// A failure, with the exit status it maps to.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(
            EXIT_USAGE,
            format!("{}; see ferriumctl --help", message.into()),
        )
    }
}

impl From<client::Error> for Failure {
    /// The exit status `--help` documents for each kind of failure.
    fn from(e: client::Error) -> Failure {
        let code = match e {
            client::Error::Unreachable { .. } => EXIT_UNREACHABLE,
            client::Error::OutcomeUnknown { .. } => EXIT_OUTCOME_UNKNOWN,
            _ => EXIT_FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

/// A REST command's connection to the cluster and how to print.
pub struct Ctl {
    pub client: RestClient,
    pub output: Output,
}

fn main() -> ExitCode {
    let cli = match cli::parse_cli(std::env::args_os().skip(1).collect()) {
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

async fn run(cli: Box<Cli>) -> Outcome {
    // Commands on local files only, and migrate (over etcd's gRPC API).
    match cli.command {
        Command::SnapshotStatus(file) => return snapshot::status(cli.output, file).await,
        Command::SnapshotRestore {
            file,
            data_dir,
            id,
            members,
        } => return snapshot::restore(cli.output, file, data_dir, id, members).await,
        Command::Migrate(args) => return migrate::migrate(cli.output, *args).await,
        _ => {}
    }
    let client = match cli.api {
        Api::Grpc(g) => return grpc::run(&g, cli.output, &cli.command).await,
        Api::Rest(client) => client,
    };
    let ctl = Ctl {
        client,
        output: cli.output,
    };
    match cli.command {
        Command::Put(key, value) => kv::put(&ctl, key, value).await,
        Command::PutIf(key, value, rev) => txn::put_if(&ctl, key, value, rev).await,
        Command::GetAt(args) => txn::get_at(&ctl, args).await,
        Command::Range(args) => txn::range(&ctl, args).await,
        Command::Txn { file, json } => txn::txn(&ctl, file, json).await,
        Command::Compact(rev) => txn::compact(&ctl, rev).await,
        Command::Get(key, c) => kv::get(&ctl, key, c).await,
        Command::Del(key) => kv::del(&ctl, key).await,
        Command::List {
            prefix,
            limit,
            consistency,
        } => kv::list(&ctl, prefix, limit, consistency).await,
        Command::Status => status::status(&ctl).await,
        Command::Leader => status::leader(&ctl).await,
        Command::MemberAdd(id, addr) => members::add(&ctl, id, addr).await,
        Command::MemberPromote(ids) => members::promote(&ctl, ids).await,
        Command::MemberRemove(id) => members::remove(&ctl, id).await,
        Command::Health => health::health(&ctl).await,
        Command::SnapshotSave(file) => snapshot::save(&ctl, file).await,
        Command::SnapshotStatus(_) | Command::SnapshotRestore { .. } | Command::Migrate(_) => {
            Ok(())
        }
        Command::Metrics { prometheus } => health::metrics(&ctl, prometheus).await,
        Command::Watch(args) => watch::watch(&ctl, args).await,
        Command::PutLease(key, value, l) => lease::put(&ctl, key, value, l).await,
        Command::LeaseGrant { ttl, id } => lease::grant(&ctl, ttl, id).await,
        Command::LeaseKeepAlive { id, once } => lease::keep_alive(&ctl, id, once).await,
        Command::LeaseRevoke(id) => lease::revoke(&ctl, id).await,
        Command::LeaseTimeToLive { id, keys } => lease::time_to_live(&ctl, id, keys).await,
        Command::LeaseList => lease::list(&ctl).await,
        Command::Lock { name, ttl, command } => lease::lock(&ctl, name, ttl, command).await,
        Command::Elect {
            name,
            proposal,
            ttl,
        } => lease::elect(&ctl, name, proposal, ttl).await,
    }
}
