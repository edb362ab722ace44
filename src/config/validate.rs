//! Validation: everything the server relies on, checked before any port is
//! bound, each problem reported once with the key, its origin and the fix.

use super::load::{ConfigError, LoadedConfig};
use super::{Address, AuthMethod, ByteSize, Config};
use std::path::Path;

/// Largest `network.max_message_size`: one log entry holds at most one
/// message, and an entry must fit a peer's AppendEntries body (256 MiB) with
/// room to spare.
pub const MAX_MESSAGE_BYTES: u64 = 128 << 20;

/// Checks a loaded configuration; an empty result means the server can start.
pub fn validate(loaded: &LoadedConfig) -> Vec<ConfigError> {
    let mut v = Validator {
        loaded,
        errors: Vec::new(),
    };
    v.node(&loaded.config);
    v.network(&loaded.config);
    v.raft(&loaded.config);
    v.logging(&loaded.config);
    v.cluster(&loaded.config);
    v.security(&loaded.config);
    v.watch(&loaded.config);
    v.lease(&loaded.config);
    v.backup(&loaded.config);
    v.errors
}

struct Validator<'a> {
    loaded: &'a LoadedConfig,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn fail(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(ConfigError {
            origin: self.loaded.origin_of(key),
            key: Some(key.to_string()),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn node(&mut self, c: &Config) {
        let n = &c.node;
        if n.id == 0 {
            self.fail(
                "node.id",
                "node id 0 is reserved",
                "give every node a distinct id from 1 upwards",
            );
        }
        if n.http_addr.port != 0
            && n.http_addr.port == n.grpc_addr.port
            && hosts_overlap(&n.http_addr, &n.grpc_addr)
        {
            self.fail(
                "node.grpc_addr",
                format!(
                    "binds the same address as node.http_addr ({} and {})",
                    n.http_addr, n.grpc_addr
                ),
                "use a different port for gRPC, e.g. 9001",
            );
        }
        if n.http_addr.is_unspecified() && n.advertise_http_addr.is_none() {
            self.fail(
                "node.advertise_http_addr",
                format!(
                    "node.http_addr binds {} but no address to advertise is set",
                    n.http_addr
                ),
                "set node.advertise_http_addr to the address peers and clients reach this node at",
            );
        }
        if n.grpc_addr.is_unspecified() && n.advertise_grpc_addr.is_none() {
            self.fail(
                "node.advertise_grpc_addr",
                format!(
                    "node.grpc_addr binds {} but no address to advertise is set",
                    n.grpc_addr
                ),
                "set node.advertise_grpc_addr to the address clients reach this node at",
            );
        }
        for (key, addr) in [
            ("node.advertise_http_addr", &n.advertise_http_addr),
            ("node.advertise_grpc_addr", &n.advertise_grpc_addr),
        ] {
            if let Some(addr) = addr {
                if addr.is_unspecified() {
                    self.fail(
                        key,
                        format!("{addr} cannot be advertised: nobody can connect to it"),
                        "advertise a routable address or host name of this node",
                    );
                }
                if addr.port == 0 {
                    self.fail(
                        key,
                        format!("{addr} cannot be advertised: nobody listens on port 0"),
                        "advertise the port this node is reached at, or leave the key unset to advertise the port the listener is given",
                    );
                }
            }
        }
        if let Err(e) = validate_data_dir(&n.data_dir) {
            self.fail("node.data_dir", e.0, e.1);
        }
    }

    fn network(&mut self, c: &Config) {
        let n = &c.network;
        for (key, value) in [
            ("network.request_timeout", n.request_timeout),
            ("network.connect_timeout", n.connect_timeout),
            ("network.header_timeout", n.header_timeout),
            ("network.idle_timeout", n.idle_timeout),
            (
                "network.http2_keepalive_interval",
                n.http2_keepalive_interval,
            ),
            ("network.http2_keepalive_timeout", n.http2_keepalive_timeout),
        ] {
            if value.0 == 0 {
                self.fail(
                    key,
                    "a timeout of 0 would fail every request",
                    "set it above 0, e.g. \"5s\"",
                );
            }
        }
        if n.max_message_size.0 < 1024 {
            self.fail(
                "network.max_message_size",
                format!("{} is too small for any request", n.max_message_size),
                "set it to at least 1KiB (default 4MiB)",
            );
        }
        if n.max_message_size.0 > MAX_MESSAGE_BYTES {
            self.fail(
                "network.max_message_size",
                format!(
                    "{} is above the largest message a peer accepts in one Raft request ({})",
                    n.max_message_size,
                    ByteSize(MAX_MESSAGE_BYTES)
                ),
                "lower it to at most 128MiB (default 4MiB)",
            );
        }
        if n.max_key_size.0 > crate::store::MAX_KEY_BYTES {
            self.fail(
                "network.max_key_size",
                format!(
                    "{} is above the largest key a snapshot can hold ({})",
                    n.max_key_size,
                    ByteSize(crate::store::MAX_KEY_BYTES)
                ),
                "lower it to at most 1MiB (default 8KiB)",
            );
        }
        if n.max_value_size.0 > crate::store::MAX_VALUE_BYTES {
            self.fail(
                "network.max_value_size",
                format!(
                    "{} is above the largest value a snapshot can hold ({} bytes)",
                    n.max_value_size,
                    crate::store::MAX_VALUE_BYTES
                ),
                format!(
                    "lower it to at most {} bytes, just under 64MiB (default 1MiB)",
                    crate::store::MAX_VALUE_BYTES
                ),
            );
        }
        if n.max_key_size.0 == 0 || n.max_value_size.0 == 0 {
            self.fail(
                "network.max_key_size",
                "key and value limits must be above 0",
                "remove the key to use the default",
            );
        }
        if n.max_key_size.0 + n.max_value_size.0 > n.max_message_size.0 {
            self.fail(
                "network.max_value_size",
                format!(
                    "a key of {} and a value of {} do not fit in network.max_message_size ({})",
                    n.max_key_size, n.max_value_size, n.max_message_size
                ),
                "raise network.max_message_size or lower the key and value limits",
            );
        }
        if n.max_connections == 0 {
            self.fail(
                "network.max_connections",
                "0 connections would refuse every client",
                "set it above 0 (default 10000)",
            );
        }
        if n.max_concurrent_streams == 0 {
            self.fail(
                "network.max_concurrent_streams",
                "0 streams would refuse every gRPC call",
                "set it above 0 (default 256)",
            );
        }
    }

    fn backup(&mut self, c: &Config) {
        let b = &c.backup;
        if !(1_000..=31 * 86_400_000).contains(&b.interval.0) {
            self.fail(
                "backup.interval",
                format!("{} is outside 1s to 31 days", b.interval),
                "set it between 1s and 31 days (default 1h)",
            );
        }
        if b.keep == 0 {
            self.fail(
                "backup.keep",
                "keeping 0 backups would delete each one as it is written",
                "set it to at least 1 (default 24)",
            );
        }
        if let Some(dir) = &b.dir {
            if dir.as_os_str().is_empty() {
                self.fail(
                    "backup.dir",
                    "the directory is empty",
                    "name a directory, or leave backup.dir out to take no scheduled backups",
                );
            } else if dir.starts_with(&c.node.data_dir) {
                self.fail(
                    "backup.dir",
                    format!(
                        "{} is inside node.data_dir ({}): a lost data directory would take its backups with it",
                        dir.display(),
                        c.node.data_dir.display()
                    ),
                    "put backups on another disk or at least outside node.data_dir",
                );
            }
        }
    }

    fn lease(&mut self, c: &Config) {
        let l = &c.lease;
        if !(10..=10_000).contains(&l.check_interval.0) {
            self.fail(
                "lease.check_interval",
                format!("{} is outside 10ms to 10s", l.check_interval),
                "set it between 10ms and 10s (default 100ms)",
            );
        }
        if l.checkpoint_interval.0 < l.check_interval.0 || l.checkpoint_interval.0 > 60_000 {
            self.fail(
                "lease.checkpoint_interval",
                format!(
                    "{} is outside lease.check_interval ({}) to 60s",
                    l.checkpoint_interval, l.check_interval
                ),
                "set it between lease.check_interval and 60s (default 500ms)",
            );
        }
        if !(1..=3600).contains(&l.min_ttl) {
            self.fail(
                "lease.min_ttl",
                format!("{} s is outside 1 s to 3600 s", l.min_ttl),
                "set it between 1 and 3600 seconds (default 2)",
            );
        }
    }

    fn watch(&mut self, c: &Config) {
        let w = &c.watch;
        if w.queue_events == 0 {
            self.fail(
                "watch.queue_events",
                "a queue of 0 events would cancel every watcher at its first change",
                "set it to at least 1 (default 10000)",
            );
        }
        if w.queue_bytes.0 < 1024 {
            self.fail(
                "watch.queue_bytes",
                format!("{} is too small to hold an event", w.queue_bytes),
                "set it to at least 1KiB (default 8MiB)",
            );
        }
        if w.max_watchers == 0 {
            self.fail(
                "watch.max_watchers",
                "0 would refuse every watch",
                "set it to at least 1 (default 100000)",
            );
        }
        if w.progress_interval.0 < 100 {
            self.fail(
                "watch.progress_interval",
                format!("{} is below 100ms", w.progress_interval),
                "set it to 100ms or more (default 10s)",
            );
        }
        if !(1_000..=60_000).contains(&w.keepalive_interval.0) {
            self.fail(
                "watch.keepalive_interval",
                format!(
                    "{} is outside 1s to 60s: clients such as ferriumctl give up on a stream silent for 2 minutes",
                    w.keepalive_interval
                ),
                "set it between 1s and 60s (default 15s)",
            );
        }
    }

    fn raft(&mut self, c: &Config) {
        let r = &c.raft;
        if r.heartbeat_interval.0 == 0 {
            self.fail(
                "raft.heartbeat_interval",
                "must be above 0",
                "use e.g. \"150ms\"",
            );
        }
        if r.election_timeout_min.0 < 2 * r.heartbeat_interval.0 {
            self.fail(
                "raft.election_timeout_min",
                format!(
                    "{} is below twice raft.heartbeat_interval ({}): followers would start elections between heartbeats",
                    r.election_timeout_min, r.heartbeat_interval
                ),
                format!(
                    "raise election_timeout_min to at least {}ms or lower heartbeat_interval",
                    2 * r.heartbeat_interval.0
                ),
            );
        }
        if r.election_timeout_max <= r.election_timeout_min {
            self.fail(
                "raft.election_timeout_max",
                format!(
                    "{} is not above raft.election_timeout_min ({})",
                    r.election_timeout_max, r.election_timeout_min
                ),
                "set election_timeout_max above election_timeout_min, e.g. twice it",
            );
        }
        if r.max_append_entries == 0 {
            self.fail(
                "raft.max_append_entries",
                "must be above 0",
                "remove it to use the default (300)",
            );
        }
        if r.snapshot_threshold == 0 {
            self.fail(
                "raft.snapshot_threshold",
                "must be above 0",
                "remove it to use the default (100000)",
            );
        }
        if r.snapshot_timeout.0 < 1000 {
            self.fail(
                "raft.snapshot_timeout",
                "below 1s no snapshot transfer can finish",
                "set it to minutes, e.g. \"2m\"",
            );
        }
    }

    fn logging(&mut self, c: &Config) {
        if let Some(path) = &c.logging.file_path {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                self.fail(
                    "logging.file_path",
                    format!("the directory of {} does not exist", path.display()),
                    format!("create {} or choose another path", dir.display()),
                );
            } else if path.is_dir() {
                self.fail(
                    "logging.file_path",
                    format!("{} is a directory", path.display()),
                    "name a file",
                );
            }
        }
    }

    fn cluster(&mut self, c: &Config) {
        if c.cluster.name.is_empty() {
            self.fail(
                "cluster.name",
                "is empty",
                "name the cluster, e.g. \"ferrium\"",
            );
        }
        let members = &c.cluster.initial_members;
        if members.is_empty() {
            return;
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in members {
            if m.id == 0 {
                self.fail(
                    "cluster.initial_members",
                    "member id 0 is reserved",
                    "number members from 1",
                );
            }
            if !seen.insert(m.id) {
                self.fail(
                    "cluster.initial_members",
                    format!("node id {} is listed twice", m.id),
                    "give every member a distinct id",
                );
            }
            if m.http_addr.is_unspecified() {
                self.fail(
                    "cluster.initial_members",
                    format!("member {} has the unroutable address {}", m.id, m.http_addr),
                    "list each member's advertised address",
                );
            }
            for addr in std::iter::once(&m.http_addr).chain(&m.grpc_addr) {
                if addr.port == 0 {
                    self.fail(
                        "cluster.initial_members",
                        format!(
                            "member {} has the address {addr}: nobody listens on port 0",
                            m.id
                        ),
                        "list the port each member listens on",
                    );
                }
            }
        }
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                if a.http_addr == b.http_addr {
                    self.fail(
                        "cluster.initial_members",
                        format!(
                            "members {} and {} share the address {}",
                            a.id, b.id, a.http_addr
                        ),
                        "give every member its own address",
                    );
                }
            }
        }
        match members.iter().find(|m| m.id == c.node.id) {
            None => self.fail(
                "cluster.initial_members",
                format!("this node (node.id = {}) is not in the list", c.node.id),
                "add this node to initial_members, or remove initial_members and add the node with POST /add-learner",
            ),
            Some(_) if c.node.advertised_http_addr().port == 0 => self.fail(
                "cluster.initial_members",
                format!(
                    "this node binds {} and so learns its port only when it starts, but its entry must name that port",
                    c.node.http_addr
                ),
                "give node.http_addr a fixed port, or set node.advertise_http_addr to the address peers reach this node at",
            ),
            Some(me) if me.http_addr != c.node.advertised_http_addr() => self.fail(
                "cluster.initial_members",
                format!(
                    "this node's entry says {} but it advertises {}",
                    me.http_addr,
                    c.node.advertised_http_addr()
                ),
                "make the entry match node.advertise_http_addr (or node.http_addr)",
            ),
            Some(_) => {}
        }
    }

    fn security(&mut self, c: &Config) {
        let s = &c.security;
        if s.enable_tls {
            for (key, file) in [
                ("security.cert_file", &s.cert_file),
                ("security.key_file", &s.key_file),
                ("security.ca_file", &s.ca_file),
            ] {
                self.required_file(key, file.as_deref(), "TLS is on (security.enable_tls): nodes verify each other's certificates against ca_file");
            }
            if let Some(files) = tls_files(s) {
                if files.cert.is_file()
                    && files.key.is_file()
                    && files.ca.as_ref().is_some_and(|c| c.is_file())
                {
                    if let Err(e) = crate::http::ServerTls::new(files.clone()) {
                        self.fail(
                            "security.cert_file",
                            &e,
                            "check the PEM files named in [security]",
                        );
                    } else if let Err(e) = crate::http::ClientTls::new(
                        files.ca.as_deref().unwrap_or(&files.cert),
                        Some((&files.cert, &files.key)),
                    ) {
                        self.fail(
                            "security.ca_file",
                            &e,
                            "check the PEM files named in [security]",
                        );
                    }
                }
            }
        }
        if s.enable_mtls {
            if !s.enable_tls {
                self.fail(
                    "security.enable_mtls",
                    "mTLS needs TLS",
                    "set security.enable_tls = true",
                );
            }
            self.required_file(
                "security.ca_file",
                s.ca_file.as_deref(),
                "mTLS is on (security.enable_mtls)",
            );
            if s.peer_names.is_empty() && s.cluster_secret_file.is_none() {
                self.fail(
                    "security.peer_names",
                    "mTLS is on but nothing tells a member's certificate from a client's, so peer routes (/raft/...) would refuse every member",
                    "list the names in your nodes' certificates, e.g. peer_names = [\"node1.ferrium.internal\", \"node2.ferrium.internal\", \"node3.ferrium.internal\"], or set security.cluster_secret_file",
                );
            }
        } else if let Some(ca) = &s.ca_file {
            self.required_file("security.ca_file", Some(ca), "it is set");
        }
        match s.auth_method {
            AuthMethod::None => {}
            AuthMethod::Token => {
                if s.cluster_secret_file.is_none() && !s.enable_mtls {
                    self.fail(
                        "security.cluster_secret_file",
                        "token authentication is on but peer routes (/raft/...) would accept any caller",
                        "create a secret with `openssl rand -hex 32 > /etc/ferrium/cluster-secret`, give every member the same file and set security.cluster_secret_file",
                    );
                }
                if s.tokens.is_empty() && s.token_file.is_none() {
                    self.fail(
                        "security.auth_method",
                        "token authentication is on but no token is configured",
                        "add security.tokens or security.token_file",
                    );
                }
                // Inline tokens and the token file, line by line, as the
                // server will read them.
                if let Err(errors) = crate::auth::tokens::Tokens::load(s) {
                    for e in errors {
                        self.fail(e.key, e.message, e.fix);
                    }
                }
            }
            AuthMethod::Certificate => {
                if !s.enable_mtls {
                    self.fail(
                        "security.auth_method",
                        "certificate authentication needs client certificates",
                        "set security.enable_mtls = true",
                    );
                }
                if s.cert_roles.is_empty() {
                    self.fail(
                        "security.cert_roles",
                        "certificate authentication is on but no certificate name has a role, so every client would be refused",
                        "add entries such as cert_roles = [{ name = \"cn:ops@example.com\", role = \"admin\" }]",
                    );
                }
            }
        }
        if let Some(f) = s.token_file.as_deref() {
            // With token authentication the file was read above.
            if s.auth_method != AuthMethod::Token {
                self.required_file("security.token_file", Some(f), "it is set");
            }
        }
        for name in &s.peer_names {
            if let Err(e) = crate::auth::certs::CertName::peer_name(name) {
                self.fail("security.peer_names", e.message, e.fix);
            }
        }
        for entry in &s.cert_roles {
            if let Err(e) = crate::auth::certs::CertName::role_name(&entry.name) {
                self.fail("security.cert_roles", e.message, e.fix);
            }
        }
        if let Some(f) = &s.cluster_secret_file {
            self.required_file("security.cluster_secret_file", Some(f), "it is set");
        }
    }

    fn required_file(&mut self, key: &str, file: Option<&Path>, because: &str) {
        let Some(path) = file else {
            self.fail(
                key,
                format!("is required because {because}"),
                format!("set {key} to a PEM file"),
            );
            return;
        };
        if let Err(e) = std::fs::File::open(path) {
            self.fail(
                key,
                format!("cannot read {}: {e}", path.display()),
                "check the path and that the server's user may read it",
            );
        }
    }
}

/// True when two bind addresses would collide on the same port.
fn hosts_overlap(a: &Address, b: &Address) -> bool {
    a.host == b.host || a.is_unspecified() || b.is_unspecified()
}

/// Checks that the data directory exists and is writable, or can be created.
/// Returns the problem and its fix.
pub fn validate_data_dir(dir: &Path) -> Result<(), (String, String)> {
    let fix = "choose a directory the server's user can write, or fix its ownership (e.g. chown ferrium:ferrium DIR)";
    if dir.as_os_str().is_empty() {
        return Err((
            "is empty".to_string(),
            "set it, e.g. \"./data\"".to_string(),
        ));
    }
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err((
            format!(
                "{} cannot be used: {} is not a directory",
                dir.display(),
                existing.display()
            ),
            fix.to_string(),
        ));
    }
    let probe = existing.join(format!(".ferrium-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err((
            format!("{} is not writable: {e}", existing.display()),
            fix.to_string(),
        )),
    }
}

/// The TLS files of `[security]`, when TLS is on and the files are named.
pub fn tls_files(s: &crate::config::SecurityConfig) -> Option<crate::http::TlsFiles> {
    if !s.enable_tls {
        return None;
    }
    Some(crate::http::TlsFiles {
        cert: s.cert_file.clone()?,
        key: s.key_file.clone()?,
        ca: s.ca_file.clone(),
        require_client_cert: s.enable_mtls,
    })
}
