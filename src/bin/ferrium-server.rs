//! `ferrium-server`: parses the command line, loads and validates the
//! configuration, sets up logging and runs the node.
//!
//! Exit status: 0 on a clean shutdown, 1 when the server fails at run time,
//! 2 for usage and configuration errors (reported before any port is bound).

use ferrium::config::LoadedConfig;
use ferrium::config::{self, CliOverrides, LogFormat, LogLevel};
use ferrium::server::{Reloader, RunningNode};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: ferrium-server [OPTIONS]

Runs one Ferrium node: a replicated, strongly consistent key-value server.

Options:
  -c, --config FILE            Configuration file (default: first of the search paths)
      --id N                   Node id (node.id)
      --http-addr HOST:PORT    HTTP listener address (node.http_addr)
      --grpc-addr HOST:PORT    gRPC listener address (node.grpc_addr)
      --data-dir DIR           Data directory (node.data_dir)
      --log-level LEVEL        off, error, warn, info, debug or trace (logging.level)
      --log-format FORMAT      text or json (logging.format); --format is accepted too
      --generate-config FILE   Write a file with every key and its default, then exit
      --validate-config        Check the configuration, print the effective one, exit
      --list-config-paths      List the configuration search paths, marking those that exist
  -h, --help                   Print this help
  -V, --version                Print the version

Precedence: built-in defaults < configuration file < FERRIUM_* environment
variables (e.g. FERRIUM_NODE_ID=2) < command-line flags.
";

enum Action {
    Run,
    Validate,
    Generate(PathBuf),
    ListPaths,
    Help,
    Version,
}

struct Cli {
    action: Action,
    config: Option<PathBuf>,
    overrides: CliOverrides,
}

fn parse_cli() -> Result<Cli, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut cli = Cli {
        action: Action::Run,
        config: None,
        overrides: CliOverrides::default(),
    };
    let value = |parser: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        let v = parser
            .value()
            .map_err(|_| format!("{flag} needs a value; see --help"))?;
        v.into_string()
            .map_err(|_| format!("the value of {flag} is not valid UTF-8"))
    };
    while let Some(arg) = parser.next().map_err(|e| format!("{e}; see --help"))? {
        match arg {
            Short('c') | Long("config") => {
                cli.config = Some(value(&mut parser, "--config")?.into())
            }
            Long("id") => {
                let v = value(&mut parser, "--id")?;
                cli.overrides.set("node.id", v, "--id");
            }
            Long("http-addr") => {
                let v = value(&mut parser, "--http-addr")?;
                cli.overrides.set("node.http_addr", v, "--http-addr");
            }
            Long("grpc-addr") => {
                let v = value(&mut parser, "--grpc-addr")?;
                cli.overrides.set("node.grpc_addr", v, "--grpc-addr");
            }
            Long("data-dir") => {
                let v = value(&mut parser, "--data-dir")?;
                cli.overrides.set("node.data_dir", v, "--data-dir");
            }
            Long("log-level") => {
                let v = value(&mut parser, "--log-level")?;
                let level = LogLevel::parse(&v).ok_or_else(|| {
                    format!(
                        "--log-level: \"{v}\" is not a level; use one of {}",
                        LogLevel::NAMES.join(", ")
                    )
                })?;
                cli.overrides
                    .set("logging.level", level.to_string(), "--log-level");
            }
            Long("log-format") | Long("format") => {
                let v = value(&mut parser, "--log-format")?;
                if LogFormat::parse(&v).is_none() {
                    return Err(format!(
                        "--log-format: \"{v}\" is not a format; use text or json"
                    ));
                }
                cli.overrides.set("logging.format", v, "--log-format");
            }
            Long("generate-config") => {
                cli.action = Action::Generate(value(&mut parser, "--generate-config")?.into())
            }
            Long("validate-config") => cli.action = Action::Validate,
            Long("list-config-paths") => cli.action = Action::ListPaths,
            Short('h') | Long("help") => cli.action = Action::Help,
            Short('V') | Long("version") => cli.action = Action::Version,
            other => return Err(format!("{}; see --help", other.unexpected())),
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("ferrium-server: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.action {
        Action::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Action::Version => {
            println!(
                "ferrium-server {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("FERRIUM_BUILD_PROFILE")
            );
            ExitCode::SUCCESS
        }
        Action::ListPaths => {
            println!("Configuration search paths, in order (used when --config is not given):");
            let mut chosen = false;
            for (path, exists) in config::search_paths() {
                let mark = match (exists, chosen) {
                    (true, false) => {
                        chosen = true;
                        "[exists, would be loaded]"
                    }
                    (true, true) => "[exists]",
                    (false, _) => "[missing]",
                };
                println!("  {:<40} {mark}", path.display());
            }
            if !chosen {
                println!("None exists: the server would run on built-in defaults.");
            }
            ExitCode::SUCCESS
        }
        Action::Generate(path) => generate(&path),
        Action::Validate => match load_valid(&cli) {
            Ok(loaded) => {
                print!("{}", config::render_effective(&loaded.config));
                eprintln!(
                    "ferrium-server: {}: configuration is valid",
                    source_name(&loaded)
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Action::Run => match load_valid(&cli) {
            Ok(loaded) => run(loaded, &cli),
            Err(code) => code,
        },
    }
}

fn source_name(loaded: &config::LoadedConfig) -> String {
    match &loaded.file {
        Some(f) => f.display().to_string(),
        None => "built-in defaults".to_string(),
    }
}

fn generate(path: &PathBuf) -> ExitCode {
    if path.exists() {
        eprintln!(
            "ferrium-server: {} already exists; remove it first or choose another file name",
            path.display()
        );
        return ExitCode::from(2);
    }
    match std::fs::write(path, config::generate_config()) {
        Ok(()) => {
            eprintln!("ferrium-server: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrium-server: cannot write {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn load_valid(cli: &Cli) -> Result<config::LoadedConfig, ExitCode> {
    let report = |errors: Vec<config::ConfigError>| {
        for e in &errors {
            eprintln!("ferrium-server: configuration error: {e}");
        }
        eprintln!(
            "ferrium-server: {} configuration problem(s); nothing was started",
            errors.len()
        );
        ExitCode::from(2)
    };
    let loaded =
        config::load(cli.config.as_deref(), std::env::vars(), &cli.overrides).map_err(report)?;
    for w in &loaded.warnings {
        eprintln!("ferrium-server: warning: {w}");
    }
    let errors = config::validate(&loaded);
    if !errors.is_empty() {
        return Err(report(errors));
    }
    Ok(loaded)
}

fn run(loaded: config::LoadedConfig, cli: &Cli) -> ExitCode {
    let cfg = &loaded.config;
    let level_from_flag = cli
        .overrides
        .values
        .iter()
        .any(|(k, _, _)| *k == "logging.level");
    let filters = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() && !level_from_flag => Some(f),
        _ => None,
    };
    let settings = ferrium::logging::LogSettings {
        level: cfg.logging.level.to_filter(),
        filters,
        format: cfg.logging.format,
        colors: cfg.logging.enable_colors,
        file: cfg.logging.file_path.clone(),
        node_id: cfg.node.id,
    };
    if let Err(e) = ferrium::logging::init(&settings) {
        eprintln!("ferrium-server: {e}");
        return ExitCode::from(2);
    }
    match &loaded.file {
        Some(f) => log::info!("loaded configuration from {}", f.display()),
        None => log::info!("no configuration file found; running on built-in defaults"),
    }
    let file = loaded.file.clone();
    let overrides = cli.overrides.clone();
    let reload: ferrium::server::Reloader = Box::new(move || {
        let loaded = config::load(file.as_deref(), std::env::vars(), &overrides)?;
        let errors = config::validate(&loaded);
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors)
        }
    });
    match serve(loaded, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("ferrium-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// The signals the server acts on, installed once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some(Signals { term, int, hup }),
            _ => None,
        }
    }
}

/// Runs the node until SIGTERM or SIGINT; returns an operator-facing message
/// on failure. SIGHUP re-reads the configuration with `reload`.
fn serve(loaded: LoadedConfig, reload: Reloader) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferrium")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    ferrium::server::warn_exposed_files(&loaded);
    runtime.block_on(async move {
        // Handlers go in before the node starts, and so before READY=1 (a
        // service manager may stop the unit as soon as it is ready) and
        // before bootstrap: an early SIGTERM still drains instead of
        // killing the process.
        let signals = Signals::install();
        let grace = loaded.config.network.shutdown_timeout.as_duration();
        let mut node = ferrium::server::start(loaded.config).await?;
        wait_for_shutdown(signals, &reload, &mut node).await;
        node.shutdown(grace).await;
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT, handling SIGHUP (configuration reload) in
/// the meantime.
async fn wait_for_shutdown(signals: Option<Signals>, reload: &Reloader, node: &mut RunningNode) {
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
    }) = signals
    else {
        log::error!("cannot install signal handlers; stop the node with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("received SIGTERM"); return; }
            _ = int.recv() => { log::info!("received SIGINT"); return; }
            _ = hup.recv() => {
                log::info!("received SIGHUP: reloading the configuration");
                match reload() {
                    Ok(loaded) => node.reload(loaded.config),
                    Err(errors) => {
                        for e in &errors {
                            log::error!("configuration reload failed: {e}");
                        }
                        log::error!("keeping the running configuration; fix the file and send SIGHUP again");
                    }
                }
            }
        }
    }
}
