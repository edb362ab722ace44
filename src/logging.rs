//! Logging set-up: `log` records written by `env_logger`, as human text
//! (coloured only on a terminal) or as one JSON object per line.
//!
//! The level can change at run time ([`set_level`], used on SIGHUP): the
//! logger is built permissive and `log::set_max_level` does the filtering,
//! unless `RUST_LOG` gave per-module filters, which then stay in force.

use crate::config::LogFormat;
use std::io::Write;
use std::path::PathBuf;

/// What the logger needs to know.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: log::LevelFilter,
    /// `RUST_LOG`-style filters that take the place of `level` when set.
    pub filters: Option<String>,
    pub format: LogFormat,
    pub colors: bool,
    pub file: Option<PathBuf>,
    pub node_id: u64,
}

/// Installs the global logger. Fails if the log file cannot be opened.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let mut builder = env_logger::Builder::new();
    match &settings.filters {
        Some(filters) => {
            builder.parse_filters(filters);
        }
        None => {
            builder.filter_level(log::LevelFilter::Trace);
        }
    }
    let style = if settings.colors && settings.file.is_none() {
        env_logger::WriteStyle::Auto
    } else {
        env_logger::WriteStyle::Never
    };
    builder.write_style(style);
    if let Some(path) = &settings.file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                format!(
                    "cannot open log file {}: {e}; fix: create its directory and let the server's user write to it, or unset logging.file_path",
                    path.display()
                )
            })?;
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    let node_id = settings.node_id;
    match settings.format {
        LogFormat::Json => builder.format(move |buf, record| {
            let line = serde_json::json!({
                "timestamp": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
                "node_id": node_id,
            });
            writeln!(buf, "{line}")
        }),
        LogFormat::Text => builder.format(move |buf, record| {
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "{} {style}{:<5}{style:#} node={} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                node_id,
                record.target(),
                record.args()
            )
        }),
    };
    let logger = builder.build();
    let max = if settings.filters.is_some() {
        logger.filter()
    } else {
        settings.level
    };
    log::set_boxed_logger(Box::new(logger))
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    log::set_max_level(max);
    Ok(())
}

/// Changes the level at run time.
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}
