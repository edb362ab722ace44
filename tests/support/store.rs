//! Helpers of the store tests: scratch directories, entries, populating and
//! digesting a state machine, and re-running this test binary as a child.

use ferrium::raft::types::Command;
use ferrium::raft::types::TypeConfig;
use ferrium::store::StateMachine;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::Membership;
use openraft::alias::EntryOf;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "ferrium-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// FNV-1a 64 over a sequence of byte strings, each length-prefixed.
pub struct Digest(u64);

impl Digest {
    pub fn new() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    pub fn add(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

pub fn log_id(index: u64) -> LogId<LeaderId<u64, u64>> {
    LogId::new(
        LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

pub fn value_for(i: u64) -> String {
    format!("{i:0>100}")
}

/// Applies a membership entry and then `keys` keys in batches of 1000
/// (one `BatchSet` entry per batch).
pub async fn populate(sm: &mut StateMachine, keys: u64, key_prefix: &str) {
    let mut index = 1;
    let membership = EntryOf::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new_with_defaults(vec![[1u64].into()], [])),
    };
    apply(sm, vec![membership]).await;
    let mut next_key = 0;
    while next_key < keys {
        let end = (next_key + 1000).min(keys);
        let pairs = (next_key..end)
            .map(|i| (format!("{key_prefix}{i:08}"), value_for(i)))
            .collect();
        index += 1;
        let e = EntryOf::<TypeConfig> {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::BatchSet { pairs }),
        };
        apply(sm, vec![e]).await;
        next_key = end;
    }
}

pub async fn apply(sm: &mut StateMachine, entries: Vec<EntryOf<TypeConfig>>) {
    let items: Vec<Result<_, std::io::Error>> =
        entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(futures_util::stream::iter(items))
        .await
        .expect("apply");
}

/// Digest of every key and stored value, read page by page.
pub fn digest(sm: &StateMachine) -> (u64, u64) {
    let mut d = Digest::new();
    let mut count = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, more) = sm.list(b"", after.as_deref(), 10_000).expect("list");
        for (k, v) in &page {
            d.add(k);
            d.add(&v.value);
            d.add(&v.create_revision.to_le_bytes());
            d.add(&v.mod_revision.to_le_bytes());
            d.add(&v.version.to_le_bytes());
            count += 1;
        }
        after = page.last().map(|(k, _)| k.clone());
        if !more {
            return (d.value(), count);
        }
    }
}

/// The name the test harness gives the test function `name` of the module
/// whose `module_path!()` is `module`: the module path without the crate
/// name, then `name` (`crash::crash_child` for `store::crash`). Pass
/// `module_path!()` so that the name follows the module wherever it moves.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// A child process (this test binary re-run for one test) whose stdout
/// lines arrive as they are printed.
pub struct ChildProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

impl ChildProcess {
    /// Runs exactly the test `name` of this binary (its full name, see
    /// [`test_name`]) with `env` set.
    pub fn spawn(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> ChildProcess {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildProcess {
            child,
            lines,
            reader: Some(reader),
            seen: Vec::new(),
        }
    }

    /// Waits until the child prints a line for which `pred` holds and
    /// returns it; `None` if it exits first or `within` passes.
    pub fn wait_for(
        &mut self,
        within: std::time::Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// SIGKILLs the child and returns every line it printed.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader thread");
        }
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest);
        std::mem::take(&mut self.seen)
    }
}

impl Drop for ChildProcess {
    /// A failing test does not leave its child running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
