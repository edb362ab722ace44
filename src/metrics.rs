//! A node's metrics: counters and latency histograms, rendered in the
//! Prometheus text exposition format (version 0.0.4) by `GET /metrics`.
//! Each node has its own [`Metrics`] (held by its `Node` and `Auth`), so
//! several nodes in one process count separately.
//!
//! Hand-rolled rather than a metrics crate: a few atomics and a mutex-guarded
//! map per labelled family are all Ferrium needs. Label values come from a
//! fixed set (route paths we serve, status codes, outcome names), never from
//! client input, so the number of series stays bounded.
//!
//! Raft events that openraft does not report one by one (elections, leader
//! changes, snapshots, applied entries) are derived by [`watch_raft`] from the
//! stream of Raft metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram.
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// A family of counters keyed by a rendered label set.
#[derive(Default)]
struct CounterFamily(Mutex<BTreeMap<String, u64>>);

impl CounterFamily {
    fn inc(&self, labels: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(labels).or_insert(0) += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(m) = self.0.lock() {
            for (labels, v) in m.iter() {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
}

/// A family of histograms keyed by a rendered label set.
#[derive(Default)]
struct HistogramFamily(Mutex<BTreeMap<String, Histogram>>);

impl HistogramFamily {
    fn observe(&self, labels: String, d: Duration) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(labels).or_default().observe(d.as_secs_f64());
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        if let Ok(m) = self.0.lock() {
            for (labels, h) in m.iter() {
                h.render(out, name, labels);
            }
        }
    }
}

/// All of one node's own counters.
#[derive(Default)]
pub struct Metrics {
    http_requests: CounterFamily,
    http_duration: HistogramFamily,
    grpc_requests: CounterFamily,
    grpc_duration: HistogramFamily,
    proposals: CounterFamily,
    forwarded: CounterFamily,
    auth_denied: CounterFamily,
    snapshot_refused: CounterFamily,
    elections: AtomicU64,
    leader_changes: AtomicU64,
    snapshot_builds: AtomicU64,
    snapshot_installs: AtomicU64,
    applied_entries: AtomicU64,
    lease_keep_alives: AtomicU64,
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// One HTTP request served: `route` is a path we serve or `"other"`.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let route = label(route);
        self.http_requests.inc(format!(
            "route=\"{route}\",method=\"{}\",status=\"{status}\"",
            label(method)
        ));
        self.http_duration
            .observe(format!("route=\"{route}\""), took);
    }

    /// One gRPC call served, with its status code name (e.g. `OK`, `UNAVAILABLE`).
    pub fn grpc_request(&self, method: &str, code: &str, took: Duration) {
        self.grpc_requests.inc(format!(
            "method=\"{}\",code=\"{}\"",
            label(method),
            label(code)
        ));
        self.grpc_duration
            .observe(format!("method=\"{}\"", label(method)), took);
    }

    /// One proposal to the local Raft log and how it ended (`ok`, `not_leader`,
    /// `unavailable`, `outcome_unknown`, `rejected`, `failed`).
    pub fn proposal(&self, outcome: &str) {
        self.proposals
            .inc(format!("outcome=\"{}\"", label(outcome)));
    }

    /// One request forwarded to the leader (`write`, `read_index`, `admin`).
    pub fn forwarded(&self, kind: &str) {
        self.forwarded.inc(format!("kind=\"{}\"", label(kind)));
    }

    /// One request refused by authentication or authorisation.
    pub fn auth_denied(&self, kind: &str) {
        self.auth_denied.inc(format!("kind=\"{}\"", label(kind)));
    }

    /// One snapshot upload refused before it reached Raft, by reason
    /// (`corrupt`, `mismatch`, `stale`, `bad_vote`, `bad_meta`,
    /// `bad_header`, `signature`, `stream`).
    pub fn snapshot_refused(&self, reason: &str) {
        self.snapshot_refused
            .inc(format!("reason=\"{}\"", label(reason)));
    }

    /// One lease keep-alive served by this node.
    pub fn lease_keep_alive(&self) {
        self.lease_keep_alives.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot_installed(&self) {
        self.snapshot_installs.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every counter and histogram. `extra` gauges (name, help,
    /// value) computed at scrape time are written first.
    pub fn render(&self, gauges: &[Sample], counters: &[Sample]) -> String {
        let mut out = String::with_capacity(8 * 1024);
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let plain = [
            (
                "ferrium_raft_elections_total",
                "Elections observed (Raft term changes).",
                &self.elections,
            ),
            (
                "ferrium_raft_leader_changes_total",
                "Times the known leader changed.",
                &self.leader_changes,
            ),
            (
                "ferrium_snapshot_builds_total",
                "Snapshots built by this node.",
                &self.snapshot_builds,
            ),
            (
                "ferrium_snapshot_installs_total",
                "Snapshots received from a leader and installed.",
                &self.snapshot_installs,
            ),
            (
                "ferrium_raft_applied_entries_total",
                "Log entries applied to the state machine.",
                &self.applied_entries,
            ),
            (
                "ferrium_lease_keepalives_total",
                "Lease keep-alives this node served (answered with the lease renewed).",
                &self.lease_keep_alives,
            ),
        ];
        for (name, help, v) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.http_requests.render(
            &mut out,
            "ferrium_http_requests_total",
            "HTTP requests by route, method and status.",
        );
        self.http_duration.render(
            &mut out,
            "ferrium_http_request_duration_seconds",
            "HTTP request latency by route.",
        );
        self.grpc_requests.render(
            &mut out,
            "ferrium_grpc_requests_total",
            "gRPC calls by method and status code.",
        );
        self.grpc_duration.render(
            &mut out,
            "ferrium_grpc_request_duration_seconds",
            "gRPC call latency by method.",
        );
        self.proposals.render(
            &mut out,
            "ferrium_raft_proposals_total",
            "Proposals to the local Raft log by outcome.",
        );
        self.auth_denied.render(
            &mut out,
            "ferrium_auth_denied_total",
            "Requests refused by authentication or authorisation, by kind.",
        );
        self.forwarded.render(
            &mut out,
            "ferrium_forwarded_requests_total",
            "Requests forwarded to the leader by kind.",
        );
        self.snapshot_refused.render(
            &mut out,
            "ferrium_snapshot_refused_total",
            "Snapshot uploads refused before they reached Raft, by reason.",
        );
        out
    }
}

/// Follows the Raft metrics of this node and counts elections, leader
/// changes, snapshot builds and applied entries. Returns when Raft stops.
pub async fn watch_raft(
    metrics: Arc<Metrics>,
    mut rx: openraft::alias::WatchReceiverOf<
        crate::raft::types::TypeConfig,
        openraft::RaftMetrics<crate::raft::types::TypeConfig>,
    >,
) {
    use openraft::async_runtime::WatchReceiver;
    let first = rx.borrow_watched().clone();
    let mut term = first.current_term;
    let mut leader = first.current_leader;
    let mut applied = first.last_applied.as_ref().map_or(0, |l| l.index);
    let mut snapshot = first.snapshot.as_ref().map(|l| l.index);
    let mut installs_seen = metrics.snapshot_installs.load(Ordering::Relaxed);
    while rx.changed().await.is_ok() {
        let m = rx.borrow_watched().clone();
        let m_ = &*metrics;
        if m.current_term != term {
            m_.elections.fetch_add(1, Ordering::Relaxed);
            term = m.current_term;
        }
        if m.current_leader != leader {
            m_.leader_changes.fetch_add(1, Ordering::Relaxed);
            leader = m.current_leader;
        }
        let now_applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        if now_applied > applied {
            m_.applied_entries
                .fetch_add(now_applied - applied, Ordering::Relaxed);
        }
        applied = now_applied;
        let now_snapshot = m.snapshot.as_ref().map(|l| l.index);
        if now_snapshot != snapshot {
            // A snapshot that arrived through install is counted there.
            let installs = m_.snapshot_installs.load(Ordering::Relaxed);
            if installs == installs_seen {
                m_.snapshot_builds.fetch_add(1, Ordering::Relaxed);
            }
            installs_seen = installs;
            snapshot = now_snapshot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.http_request("/write", "POST", 200, Duration::from_millis(3));
        m.http_request("/write", "POST", 200, Duration::from_millis(30));
        m.proposal("ok");
        let text = m.render(&[("ferrium_x", "X.", 1.0)], &[]);
        assert!(text.contains(
            "ferrium_http_requests_total{route=\"/write\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "ferrium_http_request_duration_seconds_bucket{route=\"/write\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("ferrium_http_request_duration_seconds_count{route=\"/write\"} 2"));
        assert!(text.contains("ferrium_raft_proposals_total{outcome=\"ok\"} 1"));
        assert!(text.contains("# TYPE ferrium_x gauge\nferrium_x 1"));
    }
}

/// A value read at scrape time: name, help, value.
pub type Sample = (&'static str, &'static str, f64);

/// Where scrape-time values come from: the log store (WAL syncs), the HTTP
/// server (open connections), the data directory (size on disk) and the
/// state machine (RocksDB memory).
#[derive(Clone)]
pub struct Sources {
    /// The node's counters and histograms.
    pub metrics: Arc<Metrics>,
    pub log_store: crate::store::LogStore,
    pub open_connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub data_dir: std::path::PathBuf,
    pub reader: crate::store::StateReader,
    /// The HTTP listener's TLS, when on.
    pub tls: Option<std::sync::Arc<crate::http::ServerTls>>,
    /// Scheduled backups, when `backup.dir` is set.
    pub backup: Option<std::sync::Arc<crate::backup::Stats>>,
}

impl Sources {
    /// Gauges and counters read at scrape time.
    pub fn values(&self) -> (Vec<Sample>, Vec<Sample>) {
        let mem = self.reader.memory_usage().unwrap_or_default();
        let gauges = vec![
            (
                "ferrium_http_open_connections",
                "HTTP connections being served.",
                self.open_connections.load(Ordering::Relaxed) as f64,
            ),
            (
                "ferrium_storage_disk_bytes",
                "Bytes on disk under the data directory.",
                dir_size(&self.data_dir) as f64,
            ),
            (
                "ferrium_rocksdb_block_cache_bytes",
                "RocksDB block cache usage.",
                mem.block_cache as f64,
            ),
            (
                "ferrium_rocksdb_memtable_bytes",
                "RocksDB memtable usage.",
                mem.memtables as f64,
            ),
            (
                "ferrium_history_compact_revision",
                "Reads below this revision are refused (the compaction point).",
                self.reader.compact_revision() as f64,
            ),
            (
                "ferrium_request_ids",
                "Request ids remembered for exactly-once writes.",
                self.reader.request_ids() as f64,
            ),
            (
                "ferrium_watchers",
                "Watchers this member serves (streams, long polls and gRPC watches).",
                self.reader.watch_hub().watchers() as f64,
            ),
            (
                "ferrium_watch_streams",
                "Open watch streams (REST streams and gRPC Watch calls).",
                self.reader
                    .watch_hub()
                    .stats
                    .streams
                    .load(Ordering::Relaxed) as f64,
            ),
            (
                "ferrium_leases",
                "Live leases.",
                self.reader.leases().len() as f64,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory of this process.",
                resident_bytes() as f64,
            ),
        ];
        let counters = vec![
            (
                "ferrium_wal_syncs_total",
                "Write-ahead log fsyncs (group commits).",
                self.log_store.wal_syncs() as f64,
            ),
            (
                "ferrium_watch_events_sent_total",
                "Events handed to watch clients.",
                self.reader
                    .watch_hub()
                    .stats
                    .events_sent
                    .load(Ordering::Relaxed) as f64,
            ),
            (
                "ferrium_watch_slow_cancellations_total",
                "Watchers cancelled because their client fell behind (they get a resume revision).",
                self.reader.watch_hub().stats.lagged.load(Ordering::Relaxed) as f64,
            ),
            (
                "ferrium_lease_expirations_total",
                "Leases this member applied the end of by expiry (their keys deleted).",
                self.reader.leases_expired() as f64,
            ),
            (
                "ferrium_wal_sync_seconds_total",
                "Total time spent in WAL fsyncs.",
                self.log_store.wal_sync_seconds(),
            ),
        ];
        let mut counters = counters;
        let mut gauges = gauges;
        // Left out, rather than reported as a full disk, when it cannot be
        // read.
        if let Some(fs) = filesystem_space(&self.data_dir) {
            gauges.extend([
                (
                    "ferrium_storage_filesystem_avail_bytes",
                    "Bytes of the data directory's filesystem available to unprivileged users.",
                    fs.avail as f64,
                ),
                (
                    "ferrium_storage_filesystem_size_bytes",
                    "Size of the data directory's filesystem.",
                    fs.size as f64,
                ),
            ]);
        }
        if let Some(b) = &self.backup {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            gauges.extend([
                (
                    "ferrium_backup_last_success_timestamp_seconds",
                    "Unix time of the newest scheduled backup in backup.dir (0: none).",
                    get(&b.last_success),
                ),
                (
                    "ferrium_backup_last_revision",
                    "Revision of the newest scheduled backup in backup.dir.",
                    get(&b.last_revision),
                ),
                (
                    "ferrium_backup_last_size_bytes",
                    "Size of the newest scheduled backup in backup.dir.",
                    get(&b.last_size),
                ),
            ]);
            counters.extend([
                (
                    "ferrium_backups_total",
                    "Scheduled backups this member wrote.",
                    get(&b.taken),
                ),
                (
                    "ferrium_backup_skipped_total",
                    "Scheduled backups this member (as leader) skipped: nothing applied since the newest one.",
                    get(&b.skipped),
                ),
                (
                    "ferrium_backup_failures_total",
                    "Scheduled backups that failed (logged; the next interval tries again).",
                    get(&b.failures),
                ),
            ]);
        }
        if let Some(tls) = &self.tls {
            counters.push((
                "ferrium_tls_handshake_failures_total",
                "TLS handshakes refused on the HTTP port (bad or missing certificate, protocol mismatch, garbage).",
                tls.handshake_failures() as f64,
            ));
            counters.push((
                "ferrium_tls_plaintext_requests_total",
                "Clear-text HTTP requests that reached the TLS port (answered 400).",
                tls.plaintext_requests() as f64,
            ));
        }
        (gauges, counters)
    }
}

/// Total size of the files under `dir` (not following links).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Space on a filesystem, in bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Space {
    /// Available to unprivileged users.
    pub avail: u64,
    /// The filesystem's size.
    pub size: u64,
}

/// Space on the filesystem holding `path` (none when it cannot be read).
pub fn filesystem_space(path: &std::path::Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call,
    // and `st` is a plain C struct that statvfs fills in; it is read only
    // when the call succeeds.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some(Space {
        avail: (st.f_bavail as u64).saturating_mul(unit),
        size: (st.f_blocks as u64).saturating_mul(unit),
    })
}

/// VmRSS of this process in bytes (0 where /proc is not available).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
