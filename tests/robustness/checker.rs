//! A linearizability checker for register histories, in the style of
//! Wing & Gong with Lowe's memoization (the algorithm behind Porcupine and
//! Knossos).
//!
//! The history is split by key (registers are independent, so a history is
//! linearizable iff each key's sub-history is), then a depth-first search
//! looks for a total order that respects real time and the register's
//! sequential behaviour. A state of the search is the set of operations
//! already linearized plus the register's value; states seen before are not
//! searched again. Two reductions keep the search small and are exact:
//! a read that may go next and matches the current value is placed at once
//! (placing it later never helps), and a write of unknown outcome whose
//! value nobody read and no compare-and-swap expected is dropped (such a
//! write can always be left out).

use super::history::{Kind, Op, Outcome};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Upper bound on search states per key before giving up.
const MAX_STATES: usize = 2_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The key's history has no valid order; `detail` names the operations
    /// the search could not place.
    Violation {
        key: String,
        detail: String,
    },
    /// The search ran out of budget on this key.
    Inconclusive {
        key: String,
    },
}

/// Checks every key of a history.
pub fn check(ops: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut inconclusive = None;
    for (key, ops) in by_key {
        match check_key(key, &ops) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive { key } => inconclusive = Some(Verdict::Inconclusive { key }),
            v => return v,
        }
    }
    inconclusive.unwrap_or(Verdict::Linearizable)
}

/// One operation as the search sees it.
struct Entry {
    call: u64,
    /// `u64::MAX` for a write of unknown outcome.
    ret: u64,
    write: bool,
    /// Interned value; 0 is "absent".
    value: u32,
    /// A compare-and-swap: the value the register must hold before it.
    expect: Option<u32>,
    /// Must be linearized (completed operations); unknown writes need not.
    required: bool,
    index: usize,
}

fn check_key(key: &str, ops: &[&Op]) -> Verdict {
    // Values some operation depends on: read by a completed read, or
    // expected by a compare-and-swap.
    let read_values: HashSet<Option<&str>> = ops
        .iter()
        .filter(|o| o.kind == Kind::Read && o.outcome == Outcome::Ok)
        .map(|o| o.value.as_deref())
        .chain(
            ops.iter()
                .filter_map(|o| o.expect.as_ref().map(|x| x.as_deref())),
        )
        .collect();
    let mut intern: HashMap<Option<&str>, u32> = HashMap::new();
    intern.insert(None, 0);
    let mut entries = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let keep = match (op.kind.clone(), op.outcome) {
            (_, Outcome::Fail) => false,
            (Kind::Read, Outcome::Ok) => true,
            (Kind::Read, Outcome::Unknown) => false,
            (Kind::Write, Outcome::Ok) => true,
            (Kind::Write, Outcome::Unknown) => read_values.contains(&op.value.as_deref()),
        };
        if !keep {
            continue;
        }
        let next = intern.len() as u32;
        let value = *intern.entry(op.value.as_deref()).or_insert(next);
        let expect = op.expect.as_ref().map(|x| {
            let next = intern.len() as u32;
            *intern.entry(x.as_deref()).or_insert(next)
        });
        let ret = match op.outcome {
            Outcome::Ok => op.ret.expect("a completed operation has a completion time"),
            _ => u64::MAX,
        };
        entries.push(Entry {
            call: op.call,
            ret,
            write: op.kind == Kind::Write,
            value,
            expect,
            required: op.outcome == Outcome::Ok,
            index,
        });
    }
    entries.sort_by_key(|e| e.call);
    let search = Search { entries: &entries };
    match search.run() {
        Ok(()) => Verdict::Linearizable,
        Err(None) => Verdict::Inconclusive {
            key: key.to_string(),
        },
        Err(Some(stuck)) => {
            let lines: Vec<String> = stuck
                .iter()
                .take(5)
                .map(|i| explain(ops, ops[entries[*i].index]))
                .collect();
            Verdict::Violation {
                key: key.to_string(),
                detail: lines.join("\n"),
            }
        }
    }
}

/// An operation that could not be placed, with the writes that explain
/// why: the last ones completed before it started, and the one whose value
/// it read.
fn explain(ops: &[&Op], stuck: &Op) -> String {
    let show = |o: &Op| {
        let ret = o.ret.map_or("?".to_string(), |r| r.to_string());
        format!(
            "  {:?} {:?} {:?} client {} node {} [{} .. {}] {:?}",
            o.kind, o.key, o.value, o.client, o.node, o.call, ret, o.outcome
        )
    };
    let mut before: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| o.kind == Kind::Write && o.outcome == Outcome::Ok)
        .filter(|o| o.ret.is_some_and(|r| r < stuck.call))
        .collect();
    before.sort_by_key(|o| o.ret);
    let mut out = vec![format!("cannot place:\n{}", show(stuck))];
    out.push("last writes completed before it started:".to_string());
    for o in &before[before.len().saturating_sub(3)..] {
        out.push(show(o));
    }
    if stuck.kind == Kind::Read {
        out.push("writes of the value it read:".to_string());
        for o in ops
            .iter()
            .filter(|o| o.kind == Kind::Write && o.value == stuck.value)
        {
            out.push(show(o));
        }
    }
    out.join("\n")
}

struct Search<'a> {
    entries: &'a [Entry],
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct State {
    done: Vec<u64>,
    value: u32,
}

impl State {
    fn has(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }
    fn mark(&mut self, i: usize) {
        self.done[i / 64] |= 1 << (i % 64);
    }
}

impl Search<'_> {
    /// `Err(None)`: out of budget; `Err(Some(ops))`: no order exists, and
    /// `ops` are the operations pending at the deepest point reached.
    fn run(&self) -> Result<(), Option<Vec<usize>>> {
        let n = self.entries.len();
        let start = State {
            done: vec![0; n.div_ceil(64).max(1)],
            value: 0,
        };
        let mut seen: HashSet<State> = HashSet::new();
        let mut stack = vec![start];
        let mut deepest = (0usize, Vec::new());
        while let Some(mut state) = stack.pop() {
            self.place_reads(&mut state);
            if !seen.insert(state.clone()) {
                continue;
            }
            if seen.len() > MAX_STATES {
                return Err(None);
            }
            let (eligible, complete) = self.eligible(&state);
            if complete {
                return Ok(());
            }
            let depth = state.done.iter().map(|w| w.count_ones() as usize).sum();
            if depth >= deepest.0 {
                deepest = (depth, eligible.clone());
            }
            for i in eligible.into_iter().rev() {
                let e = &self.entries[i];
                if !e.write || e.expect.is_some_and(|x| x != state.value) {
                    continue;
                }
                let mut next = state.clone();
                next.mark(i);
                next.value = e.value;
                stack.push(next);
            }
        }
        Err(Some(deepest.1))
    }

    /// Linearizes every read that may go next and sees the current value.
    fn place_reads(&self, state: &mut State) {
        loop {
            let (eligible, _) = self.eligible(state);
            let mut placed = false;
            for i in eligible {
                let e = &self.entries[i];
                if !e.write && e.value == state.value {
                    state.mark(i);
                    placed = true;
                }
            }
            if !placed {
                return;
            }
        }
    }

    /// Operations that may be linearized next (invoked before every pending
    /// operation's completion), and whether every required one is done.
    fn eligible(&self, state: &State) -> (Vec<usize>, bool) {
        let mut min_ret = u64::MAX;
        let mut complete = true;
        for (i, e) in self.entries.iter().enumerate() {
            if !state.has(i) && e.required {
                complete = false;
                min_ret = min_ret.min(e.ret);
            }
        }
        if complete {
            return (Vec::new(), true);
        }
        let eligible = self
            .entries
            .iter()
            .enumerate()
            .take_while(|(_, e)| e.call <= min_ret)
            .filter(|(i, _)| !state.has(*i))
            .map(|(i, _)| i)
            .collect();
        (eligible, false)
    }
}
