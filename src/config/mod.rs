//! Configuration: the schema, its defaults, loading and validation.
//!
//! The schema is the set of structs below plus [`KEYS`], the table that
//! documents every key (type and one-line effect). The table drives
//! `--generate-config`, unknown-key detection (with "did you mean"), the
//! `FERRIUM_*` environment overrides and the test that keeps CONFIG.md
//! complete, so a key cannot exist in one place and be missing from another.
//!
//! Everything outside this module receives a [`Config`] that has already been
//! loaded ([`load`]) and checked ([`validate`]); nothing else parses settings.

mod load;
mod types;
mod validate;

pub use load::{
    CliOverrides, ConfigError, LoadedConfig, SEARCH_PATHS, env_name, generate_config, load,
    render_effective, search_paths, suggest,
};
pub use types::{Address, ByteSize, Millis};
pub use validate::{tls_files, validate, validate_data_dir};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The whole configuration; every section and key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
    pub raft: RaftConfig,
    pub logging: LoggingConfig,
    pub cluster: ClusterConfig,
    pub security: SecurityConfig,
    pub watch: WatchConfig,
    pub lease: LeaseConfig,
    pub backup: BackupConfig,
}

/// `[node]`: who this node is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub http_addr: Address,
    pub grpc_addr: Address,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_http_addr: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_grpc_addr: Option<Address>,
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            name: None,
            http_addr: Address::new("127.0.0.1", 8001),
            grpc_addr: Address::new("127.0.0.1", 9001),
            advertise_http_addr: None,
            advertise_grpc_addr: None,
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl NodeConfig {
    /// The name used in logs and status: `name`, or `ferrium-<id>`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("ferrium-{}", self.id),
        }
    }

    /// The HTTP address peers and clients are told to use.
    pub fn advertised_http_addr(&self) -> Address {
        self.advertise_http_addr
            .clone()
            .unwrap_or_else(|| self.http_addr.clone())
    }

    /// The gRPC address peers and clients are told to use.
    pub fn advertised_grpc_addr(&self) -> Address {
        self.advertise_grpc_addr
            .clone()
            .unwrap_or_else(|| self.grpc_addr.clone())
    }
}

/// `[network]`: timeouts and request bounds for HTTP, gRPC and peer traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub request_timeout: Millis,
    pub connect_timeout: Millis,
    pub header_timeout: Millis,
    pub idle_timeout: Millis,
    pub shutdown_timeout: Millis,
    pub max_message_size: ByteSize,
    pub max_key_size: ByteSize,
    pub max_value_size: ByteSize,
    pub max_connections: u32,
    pub max_concurrent_streams: u32,
    pub http2_keepalive_interval: Millis,
    pub http2_keepalive_timeout: Millis,
    pub forward_to_leader: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            request_timeout: Millis(30_000),
            connect_timeout: Millis(3_000),
            header_timeout: Millis(10_000),
            idle_timeout: Millis(60_000),
            shutdown_timeout: Millis(10_000),
            max_message_size: ByteSize(4 * 1024 * 1024),
            max_key_size: ByteSize(8 * 1024),
            max_value_size: ByteSize(1024 * 1024),
            max_connections: 10_000,
            max_concurrent_streams: 256,
            http2_keepalive_interval: Millis(30_000),
            http2_keepalive_timeout: Millis(10_000),
            forward_to_leader: true,
        }
    }
}

/// RocksDB block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Snappy,
    Lz4,
    Zstd,
}

/// RocksDB compaction style. FIFO is not offered: it deletes live keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionStrategy {
    Level,
    Universal,
}

/// `[storage]`: RocksDB tuning and durability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub compression: Compression,
    pub compaction_strategy: CompactionStrategy,
    pub sync_writes: bool,
    #[serde(with = "types::mebibytes")]
    pub block_cache_size: ByteSize,
    #[serde(with = "types::mebibytes")]
    pub write_buffer_size: ByteSize,
    pub history_retention: Millis,
    pub history_max_revisions: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            compression: Compression::Lz4,
            compaction_strategy: CompactionStrategy::Level,
            sync_writes: true,
            block_cache_size: ByteSize(64 * 1024 * 1024),
            write_buffer_size: ByteSize(64 * 1024 * 1024),
            history_retention: Millis(3_600_000),
            history_max_revisions: 1_000_000,
        }
    }
}

/// `[watch]`: the bounds of watchers and how often quiet ones hear from
/// the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    pub queue_events: u64,
    pub queue_bytes: ByteSize,
    pub max_watchers: u64,
    pub progress_interval: Millis,
    pub keepalive_interval: Millis,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            queue_events: 10_000,
            queue_bytes: ByteSize(8 * 1024 * 1024),
            max_watchers: 100_000,
            progress_interval: Millis(10_000),
            keepalive_interval: Millis(15_000),
        }
    }
}

/// `[backup]`: scheduled backups, off unless `dir` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    pub dir: Option<PathBuf>,
    pub interval: Millis,
    pub keep: u64,
    pub compression: BackupCompression,
}

/// How scheduled backups are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupCompression {
    None,
    Zstd,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: None,
            interval: Millis(3_600_000),
            keep: 24,
            compression: BackupCompression::Zstd,
        }
    }
}

impl BackupConfig {
    /// What the node runs, when backups are on.
    pub fn settings(&self) -> Option<crate::backup::Settings> {
        self.dir.as_ref().map(|dir| crate::backup::Settings {
            dir: dir.clone(),
            interval: self.interval.as_duration(),
            keep: usize::try_from(self.keep).unwrap_or(usize::MAX),
            compress: self.compression == BackupCompression::Zstd,
        })
    }
}

/// `[lease]`: how the leader runs leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    pub check_interval: Millis,
    pub checkpoint_interval: Millis,
    pub min_ttl: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            check_interval: Millis(100),
            checkpoint_interval: Millis(500),
            min_ttl: 2,
        }
    }
}

impl LeaseConfig {
    /// The node's lease settings.
    pub fn settings(&self) -> crate::node::lease::Settings {
        crate::node::lease::Settings {
            check_interval: self.check_interval.as_duration(),
            checkpoint_interval: self.checkpoint_interval.as_duration(),
            min_ttl: self.min_ttl,
        }
    }
}

impl WatchConfig {
    /// The per-watcher bounds these settings give.
    pub fn limits(&self) -> crate::watch::Limits {
        crate::watch::Limits {
            queue_events: usize::try_from(self.queue_events).unwrap_or(usize::MAX),
            queue_bytes: usize::try_from(self.queue_bytes.bytes()).unwrap_or(usize::MAX),
            max_watchers: usize::try_from(self.max_watchers).unwrap_or(usize::MAX),
        }
    }
}

/// `[raft]`: consensus timing, batching and snapshot policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_interval: Millis,
    pub election_timeout_min: Millis,
    pub election_timeout_max: Millis,
    pub max_append_entries: u64,
    pub snapshot_threshold: u64,
    pub log_retention: u64,
    pub snapshot_timeout: Millis,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            // Failover after a leader dies takes about two election
            // timeouts (see CONFIG.md): 400-800 ms makes it as quick as
            // etcd's defaults, and the 800 ms lease still rides out a
            // leader's fsync hiccups.
            heartbeat_interval: Millis(100),
            election_timeout_min: Millis(400),
            election_timeout_max: Millis(800),
            max_append_entries: 300,
            snapshot_threshold: 100_000,
            log_retention: 1_000,
            snapshot_timeout: Millis(120_000),
        }
    }
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const NAMES: &'static [&'static str] = &["off", "error", "warn", "info", "debug", "trace"];

    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        };
        f.write_str(name)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    pub enable_colors: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
            enable_colors: true,
            file_path: None,
        }
    }
}

/// One member of the initial cluster (static bootstrap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub http_addr: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<Address>,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    pub initial_members: Vec<Member>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "ferrium".to_string(),
            initial_members: Vec::new(),
        }
    }
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    None,
    Token,
    Certificate,
}

/// What an authenticated client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

/// A bearer token and its role. The token is never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub token: String,
    pub role: Role,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub enable_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub enable_mtls: bool,
    pub auth_method: AuthMethod,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cert_roles: Vec<CertRole>,
    pub open_health: bool,
}

/// One `[[security.cert_roles]]` entry: a certificate name and its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRole {
    pub name: String,
    pub role: Role,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enable_tls: false,
            cert_file: None,
            key_file: None,
            ca_file: None,
            enable_mtls: false,
            auth_method: AuthMethod::None,
            tokens: Vec::new(),
            token_file: None,
            cluster_secret_file: None,
            peer_names: Vec::new(),
            cert_roles: Vec::new(),
            open_health: true,
        }
    }
}

/// The documentation of one key: where it lives, its type and what it does.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// `section.key`, or `section.array[].field` for fields of array tables.
    pub path: &'static str,
    /// Type as shown to operators.
    pub ty: KeyType,
    /// One line: the effect of the key.
    pub doc: &'static str,
}

/// The value type of a key, which also decides how an environment variable or
/// command-line value for it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Integer,
    Boolean,
    String,
    Path,
    Address,
    Duration,
    Size,
    /// An integer counts MiB; strings carry their unit.
    SizeMiB,
    Enum(&'static [&'static str]),
    /// An array of strings; comma-separated in an environment variable.
    StringList,
    ArrayOfTables,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Integer => f.write_str("integer"),
            KeyType::Boolean => f.write_str("boolean"),
            KeyType::String => f.write_str("string"),
            KeyType::Path => f.write_str("path"),
            KeyType::Address => f.write_str("address (host:port)"),
            KeyType::Duration => f.write_str("duration (integer ms or \"250ms\", \"2s\", \"1m\")"),
            KeyType::Size => f.write_str("size (integer bytes or \"64KiB\", \"4MiB\")"),
            KeyType::SizeMiB => f.write_str("size (integer MiB or \"64MiB\", \"1GiB\")"),
            KeyType::Enum(values) => write!(f, "one of {}", values.join(", ")),
            KeyType::StringList => {
                f.write_str("array of strings (comma-separated in the environment)")
            }
            KeyType::ArrayOfTables => f.write_str("array of tables"),
        }
    }
}

/// Every key of the schema. Order is the order of `--generate-config`.
pub const KEYS: &[KeyDoc] = &[
    // [node]
    KeyDoc {
        path: "node.id",
        ty: KeyType::Integer,
        doc: "Unique, never reused, non-zero id of this node in its cluster.",
    },
    KeyDoc {
        path: "node.name",
        ty: KeyType::String,
        doc: "Human name used in logs and status output (default ferrium-<id>).",
    },
    KeyDoc {
        path: "node.http_addr",
        ty: KeyType::Address,
        doc: "Address the HTTP listener (REST API, admin and Raft peer routes) binds to; port 0 lets the kernel pick a free port, which the node logs and advertises.",
    },
    KeyDoc {
        path: "node.grpc_addr",
        ty: KeyType::Address,
        doc: "Address the gRPC listener binds to; port 0 lets the kernel pick a free port, which the node logs and advertises.",
    },
    KeyDoc {
        path: "node.advertise_http_addr",
        ty: KeyType::Address,
        doc: "HTTP address peers and clients are told to use (default http_addr, with the port actually bound when that is 0; required when binding 0.0.0.0; never port 0).",
    },
    KeyDoc {
        path: "node.advertise_grpc_addr",
        ty: KeyType::Address,
        doc: "gRPC address clients are told to use (default grpc_addr, with the port actually bound when that is 0; required when binding 0.0.0.0; never port 0).",
    },
    KeyDoc {
        path: "node.data_dir",
        ty: KeyType::Path,
        doc: "Directory holding the RocksDB store and snapshots; created if missing, must be writable.",
    },
    // [network]
    KeyDoc {
        path: "network.request_timeout",
        ty: KeyType::Duration,
        doc: "Longest a client request may wait for its answer, including forwarding to the leader; also the time a request body has to arrive, plus 1 s per 16 KiB received (then 408), and how long /add-learner waits for the learner to catch up; a write not committed within it is outcome_unknown.",
    },
    KeyDoc {
        path: "network.connect_timeout",
        ty: KeyType::Duration,
        doc: "Longest to wait for a TCP connection to a peer or to the leader.",
    },
    KeyDoc {
        path: "network.header_timeout",
        ty: KeyType::Duration,
        doc: "Longest a client may take to send the request line and headers (then 408); also bounds the TLS handshake and the HTTP/2 connection preface on both listeners.",
    },
    KeyDoc {
        path: "network.idle_timeout",
        ty: KeyType::Duration,
        doc: "Idle time after which a keep-alive HTTP connection is closed.",
    },
    KeyDoc {
        path: "network.shutdown_timeout",
        ty: KeyType::Duration,
        doc: "On SIGTERM, longest to wait for requests in flight before exiting.",
    },
    KeyDoc {
        path: "network.max_message_size",
        ty: KeyType::Size,
        doc: "Largest HTTP request body and gRPC message accepted (then 413 / RESOURCE_EXHAUSTED); at most 128MiB.",
    },
    KeyDoc {
        path: "network.max_key_size",
        ty: KeyType::Size,
        doc: "Largest key accepted, in bytes of UTF-8; at most 1MiB, what a snapshot holds.",
    },
    KeyDoc {
        path: "network.max_value_size",
        ty: KeyType::Size,
        doc: "Largest value accepted, in bytes of UTF-8; at most 64MiB less 34 bytes, what a snapshot holds.",
    },
    KeyDoc {
        path: "network.max_connections",
        ty: KeyType::Integer,
        doc: "Most concurrent connections on each listener (HTTP, with the HTTP/2 connections it hands to gRPC, and gRPC); further ones get a 503 (HTTP) or are closed (gRPC).",
    },
    KeyDoc {
        path: "network.max_concurrent_streams",
        ty: KeyType::Integer,
        doc: "Most gRPC calls (HTTP/2 streams) open at once on one connection; clients are told the limit and streams beyond it are refused (REFUSED_STREAM).",
    },
    KeyDoc {
        path: "network.http2_keepalive_interval",
        ty: KeyType::Duration,
        doc: "How often the node pings each HTTP/2 (gRPC) connection, to find clients that are gone.",
    },
    KeyDoc {
        path: "network.http2_keepalive_timeout",
        ty: KeyType::Duration,
        doc: "How long a ping may go unanswered before the HTTP/2 connection is closed.",
    },
    KeyDoc {
        path: "network.forward_to_leader",
        ty: KeyType::Boolean,
        doc: "Forward writes and linearizable reads from followers to the leader; false answers 503 with the leader's address.",
    },
    // [storage]
    KeyDoc {
        path: "storage.compression",
        ty: KeyType::Enum(&["none", "snappy", "lz4", "zstd"]),
        doc: "Block compression of RocksDB data files.",
    },
    KeyDoc {
        path: "storage.compaction_strategy",
        ty: KeyType::Enum(&["level", "universal"]),
        doc: "RocksDB compaction style: level (less space) or universal (less write amplification).",
    },
    KeyDoc {
        path: "storage.sync_writes",
        ty: KeyType::Boolean,
        doc: "fsync the write-ahead log before acknowledging; false risks losing acknowledged writes on power loss.",
    },
    KeyDoc {
        path: "storage.block_cache_size",
        ty: KeyType::SizeMiB,
        doc: "RocksDB block cache shared by all column families.",
    },
    KeyDoc {
        path: "storage.write_buffer_size",
        ty: KeyType::SizeMiB,
        doc: "RocksDB memtable size per column family before it is flushed to disk.",
    },
    KeyDoc {
        path: "storage.history_retention",
        ty: KeyType::Duration,
        doc: "Keep old revisions this long; the leader compacts older history (0 keeps it until history_max_revisions or an explicit compaction).",
    },
    KeyDoc {
        path: "storage.history_max_revisions",
        ty: KeyType::Integer,
        doc: "Keep at most this many revisions of history behind the newest (0: no bound by count).",
    },
    // [watch]
    KeyDoc {
        path: "watch.queue_events",
        ty: KeyType::Integer,
        doc: "Most events queued for one watcher; one whose client falls further behind is cancelled with the revision to resume from.",
    },
    KeyDoc {
        path: "watch.queue_bytes",
        ty: KeyType::Size,
        doc: "Most bytes of events queued for one watcher (same rule as queue_events).",
    },
    KeyDoc {
        path: "watch.max_watchers",
        ty: KeyType::Integer,
        doc: "Most watchers this member serves at once (streams, long polls and gRPC watches together); more are refused with 503.",
    },
    KeyDoc {
        path: "watch.progress_interval",
        ty: KeyType::Duration,
        doc: "How often a quiet watch that asked for progress_notify gets a progress message.",
    },
    KeyDoc {
        path: "watch.keepalive_interval",
        ty: KeyType::Duration,
        doc: "How often a quiet REST watch stream carries a keep-alive (1s to 60s).",
    },
    // [lease]
    KeyDoc {
        path: "lease.check_interval",
        ty: KeyType::Duration,
        doc: "How often the leader looks for expired leases (a lease ends at most this much after its TTL, plus a commit).",
    },
    KeyDoc {
        path: "lease.checkpoint_interval",
        ty: KeyType::Duration,
        doc: "Longest the leader goes without writing the lease clock into the log while leases exist; bounds how late a lease may end after a leader change.",
    },
    KeyDoc {
        path: "lease.min_ttl",
        ty: KeyType::Integer,
        doc: "Shortest lease TTL in seconds; shorter grants get it (a lease should outlive a leader failover).",
    },
    // [backup]
    KeyDoc {
        path: "backup.dir",
        ty: KeyType::Path,
        doc: "Directory of scheduled backups, written by the leader (unset: none); not inside node.data_dir.",
    },
    KeyDoc {
        path: "backup.interval",
        ty: KeyType::Duration,
        doc: "Time between two scheduled backups; an interval with nothing applied is skipped (1s to 31 days).",
    },
    KeyDoc {
        path: "backup.keep",
        ty: KeyType::Integer,
        doc: "How many scheduled backups to keep; older ones are deleted.",
    },
    KeyDoc {
        path: "backup.compression",
        ty: KeyType::Enum(&["zstd", "none"]),
        doc: "How scheduled backups are compressed: zstd (files end in .snap.zst) or none (.snap).",
    },
    // [raft]
    KeyDoc {
        path: "raft.heartbeat_interval",
        ty: KeyType::Duration,
        doc: "Interval of leader heartbeats; must be at most half of election_timeout_min.",
    },
    KeyDoc {
        path: "raft.election_timeout_min",
        ty: KeyType::Duration,
        doc: "Shortest time without a heartbeat before a follower starts an election.",
    },
    KeyDoc {
        path: "raft.election_timeout_max",
        ty: KeyType::Duration,
        doc: "Longest such time; each follower picks at random between min and max.",
    },
    KeyDoc {
        path: "raft.max_append_entries",
        ty: KeyType::Integer,
        doc: "Most log entries sent to a follower in one append request.",
    },
    KeyDoc {
        path: "raft.snapshot_threshold",
        ty: KeyType::Integer,
        doc: "Build a snapshot after this many log entries since the last one.",
    },
    KeyDoc {
        path: "raft.log_retention",
        ty: KeyType::Integer,
        doc: "Log entries kept behind a snapshot so that slow followers catch up without one.",
    },
    KeyDoc {
        path: "raft.snapshot_timeout",
        ty: KeyType::Duration,
        doc: "Longest a snapshot transfer to a follower may take.",
    },
    // [logging]
    KeyDoc {
        path: "logging.level",
        ty: KeyType::Enum(LogLevel::NAMES),
        doc: "Log verbosity; RUST_LOG and --log-level override it.",
    },
    KeyDoc {
        path: "logging.format",
        ty: KeyType::Enum(&["text", "json"]),
        doc: "text for people, json for one object per line (timestamp, level, target, message, node id).",
    },
    KeyDoc {
        path: "logging.enable_colors",
        ty: KeyType::Boolean,
        doc: "Colour text logs when writing to a terminal (never in files or pipes).",
    },
    KeyDoc {
        path: "logging.file_path",
        ty: KeyType::Path,
        doc: "Append logs to this file instead of standard error.",
    },
    // [cluster]
    KeyDoc {
        path: "cluster.name",
        ty: KeyType::String,
        doc: "Name of the cluster; peers with a different name are refused.",
    },
    KeyDoc {
        path: "cluster.initial_members",
        ty: KeyType::ArrayOfTables,
        doc: "Static bootstrap: every node started with the same list forms the cluster; empty waits for POST /init or to be added.",
    },
    KeyDoc {
        path: "cluster.initial_members[].id",
        ty: KeyType::Integer,
        doc: "Node id of the member.",
    },
    KeyDoc {
        path: "cluster.initial_members[].http_addr",
        ty: KeyType::Address,
        doc: "Advertised HTTP address of the member.",
    },
    KeyDoc {
        path: "cluster.initial_members[].grpc_addr",
        ty: KeyType::Address,
        doc: "Advertised gRPC address of the member (optional).",
    },
    // [security]
    KeyDoc {
        path: "security.enable_tls",
        ty: KeyType::Boolean,
        doc: "Serve HTTP and gRPC over TLS and use TLS to reach peers.",
    },
    KeyDoc {
        path: "security.cert_file",
        ty: KeyType::Path,
        doc: "PEM certificate chain of this node (required with TLS).",
    },
    KeyDoc {
        path: "security.key_file",
        ty: KeyType::Path,
        doc: "PEM private key of this node (required with TLS).",
    },
    KeyDoc {
        path: "security.ca_file",
        ty: KeyType::Path,
        doc: "PEM CA bundle: nodes verify each other against it, and with mTLS client certificates too (required with TLS).",
    },
    KeyDoc {
        path: "security.enable_mtls",
        ty: KeyType::Boolean,
        doc: "Require a certificate signed by ca_file from every client and peer.",
    },
    KeyDoc {
        path: "security.auth_method",
        ty: KeyType::Enum(&["none", "token", "certificate"]),
        doc: "How clients authenticate: none, bearer token, or client certificate.",
    },
    KeyDoc {
        path: "security.tokens",
        ty: KeyType::ArrayOfTables,
        doc: "Bearer tokens with their role (auth_method = \"token\").",
    },
    KeyDoc {
        path: "security.tokens[].token",
        ty: KeyType::String,
        doc: "The secret bearer token (16 characters or more), or sha256: and the 64 hex digits of its SHA-256 digest; never logged or printed.",
    },
    KeyDoc {
        path: "security.tokens[].role",
        ty: KeyType::Enum(&["read", "write", "admin"]),
        doc: "What the token may do.",
    },
    KeyDoc {
        path: "security.token_file",
        ty: KeyType::Path,
        doc: "File with one \"TOKEN ROLE\" pair per line (TOKEN as in tokens[].token), read in addition to tokens and again on SIGHUP.",
    },
    KeyDoc {
        path: "security.cluster_secret_file",
        ty: KeyType::Path,
        doc: "File holding the secret peers prove with an HMAC when mTLS is off.",
    },
    KeyDoc {
        path: "security.peer_names",
        ty: KeyType::StringList,
        doc: "With mTLS: the DNS subject alternative names (or uri:URI for URI ones) that identify cluster members' certificates; only they may call /raft/ routes.",
    },
    KeyDoc {
        path: "security.cert_roles",
        ty: KeyType::ArrayOfTables,
        doc: "Client certificate names with their role (auth_method = \"certificate\").",
    },
    KeyDoc {
        path: "security.cert_roles[].name",
        ty: KeyType::String,
        doc: "A client certificate name with its kind: cn:NAME (subject common name), dns:NAME, uri:URI or ip:ADDRESS (subject alternative names).",
    },
    KeyDoc {
        path: "security.cert_roles[].role",
        ty: KeyType::Enum(&["read", "write", "admin"]),
        doc: "What a certificate with that name may do.",
    },
    KeyDoc {
        path: "security.open_health",
        ty: KeyType::Boolean,
        doc: "Leave /health and /ready open to unauthenticated load balancers.",
    },
];

/// Keys the original Ferrium documented but this one does not implement, with
/// what to use instead. Loading a file that sets one fails with that hint.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "node.description",
        "remove it; use node.name to label a node",
    ),
    ("network.keep_alive_interval", "use network.idle_timeout"),
    (
        "network.max_retries",
        "remove it; Raft retries replication itself and clients retry with their own policy",
    ),
    (
        "network.retry_delay",
        "remove it; Raft retries replication itself",
    ),
    (
        "network.enable_compression",
        "remove it; peer traffic is not compressed (use storage.compression for data files)",
    ),
    (
        "storage.enable_compression",
        "use storage.compression = \"none\", \"snappy\", \"lz4\" or \"zstd\"",
    ),
    (
        "storage.max_log_size",
        "use raft.snapshot_threshold and raft.log_retention to bound the Raft log",
    ),
    ("storage.log_retention_count", "use raft.log_retention"),
    (
        "storage.enable_wal",
        "remove it; the write-ahead log is always on (use storage.sync_writes)",
    ),
    (
        "raft.enable_auto_compaction",
        "remove it; the log is compacted after every snapshot (see raft.snapshot_threshold)",
    ),
    ("raft.compaction_threshold", "use raft.snapshot_threshold"),
    (
        "raft.max_inflight_requests",
        "remove it; replication is pipelined automatically",
    ),
    ("raft.snapshot_policy", "use raft.snapshot_threshold"),
    ("logging.structured", "use logging.format = \"json\""),
    (
        "logging.max_file_size",
        "remove it; rotate logging.file_path with logrotate (copytruncate)",
    ),
    (
        "logging.max_files",
        "remove it; rotate logging.file_path with logrotate (copytruncate)",
    ),
    (
        "cluster.expected_size",
        "remove it; list the members in cluster.initial_members",
    ),
    (
        "cluster.peers",
        "use cluster.initial_members = [{ id = 2, http_addr = \"host:8001\" }, ...]",
    ),
    (
        "cluster.discovery",
        "remove it; list the members in cluster.initial_members",
    ),
];

/// Looks up the documentation of a key path (`section.key`).
pub fn key_doc(path: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.path == path)
}
