//! The watch checker: one watcher per member follows the set workload's
//! keys (`s/`) through the whole run, reconnecting elsewhere from its last
//! revision when its member dies or is removed, and afterwards each stream
//! must hold every acknowledged add, in revision order, with no duplicate
//! and no phantom (a key nobody added, or an add that definitely failed).

use crate::history::Outcome;
use crate::support::cluster::watch::{Change, follow};
use crate::workload::Add;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The watchers of one run.
pub struct Watchers {
    until: Arc<Mutex<Option<u64>>>,
    threads: Vec<(usize, JoinHandle<Vec<Change>>)>,
}

impl Watchers {
    /// One watcher homed on each of `addrs` (the client addresses).
    pub fn start(addrs: Vec<String>) -> Watchers {
        let until = Arc::new(Mutex::new(None));
        let n = addrs.len();
        let shared = Arc::new(Mutex::new(addrs));
        let threads = (0..n)
            .map(|home| {
                let (a, u) = (shared.clone(), until.clone());
                (
                    home,
                    std::thread::spawn(move || follow(a, home, "s/".into(), u)),
                )
            })
            .collect();
        Watchers { until, threads }
    }

    /// Waits until every watcher has reached `revision` (that of a write
    /// made after healing), then checks each stream against the adds.
    pub fn finish(self, revision: u64, adds: &[Add], problems: &mut Vec<String>) -> usize {
        *self.until.lock().unwrap() = Some(revision);
        let mut events = 0;
        for (home, t) in self.threads {
            match t.join() {
                Ok(changes) => {
                    events += changes.len();
                    check(home + 1, &changes, adds, problems);
                }
                Err(e) => problems.push(format!(
                    "the watcher homed on member {}: {}",
                    home + 1,
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        }
        events
    }
}

/// Checks one watcher's stream against the adds of the run.
pub fn check(member: usize, changes: &[Change], adds: &[Add], problems: &mut Vec<String>) {
    let outcome: HashMap<&str, Outcome> =
        adds.iter().map(|a| (a.key.as_str(), a.outcome)).collect();
    let mut seen = BTreeSet::new();
    let mut last = 0;
    for (rev, kind, key, _) in changes {
        if *rev < last {
            problems.push(format!(
                "watcher on member {member}: {key} at revision {rev} came after revision {last}"
            ));
        }
        last = *rev;
        if !seen.insert((*rev, key.as_str())) {
            problems.push(format!(
                "watcher on member {member}: {key} at revision {rev} came twice"
            ));
        }
        if key == "s/final" {
            continue;
        }
        match outcome.get(key.as_str()) {
            None => problems.push(format!(
                "watcher on member {member}: a phantom {kind} of {key} at revision {rev}: no client added it"
            )),
            Some(Outcome::Fail) => problems.push(format!(
                "watcher on member {member}: {key} at revision {rev} was added although the add failed definitely"
            )),
            Some(_) => {}
        }
    }
    let keys: BTreeSet<&str> = changes.iter().map(|c| c.2.as_str()).collect();
    let missing: Vec<&str> = adds
        .iter()
        .filter(|a| a.outcome == Outcome::Ok && !keys.contains(a.key.as_str()))
        .map(|a| a.key.as_str())
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "watcher on member {member} missed {} acknowledged adds, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
}
