//! A brute-force linearizability checker for tiny histories, to check
//! `checker.rs` against: it tries every order of the operations that
//! respects real time, with none of the checker's reductions, on the whole
//! history at once (not key by key).
//!
//! The semantics are the ones `checker.rs` implements:
//! - every key is a register that starts absent; a write sets it (a write
//!   of `None` deletes it), a read observes it (`None`: absent);
//! - a compare-and-swap write takes effect only where the register holds
//!   its expected value;
//! - an operation that completed (`ok`) takes effect exactly once, at some
//!   point between its invocation and its completion;
//! - a write of unknown outcome takes effect at most once, at any point
//!   after its invocation (it has no completion time);
//! - a failed operation, and a read of unknown outcome, never takes effect;
//! - `a` precedes `b` in real time when `a.ret < b.call` (equal times count
//!   as concurrent).

use super::history::{Kind, Op, Outcome};
use ferrium::rng::Rng;
use std::collections::BTreeMap;

/// Whether some order of the history's operations is legal.
pub fn linearizable(ops: &[Op]) -> bool {
    let required: Vec<&Op> = ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    let optional: Vec<&Op> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown && o.kind == Kind::Write)
        .collect();
    // Every subset of the unknown writes may have taken effect.
    (0..1u32 << optional.len()).any(|mask| {
        let mut chosen = required.clone();
        for (i, o) in optional.iter().enumerate() {
            if mask & (1 << i) != 0 {
                chosen.push(o);
            }
        }
        let mut placed = vec![false; chosen.len()];
        some_order(&chosen, &mut placed, &mut BTreeMap::new(), 0)
    })
}

/// Depth-first over every operation that may go next.
fn some_order<'a>(
    ops: &[&'a Op],
    placed: &mut [bool],
    registers: &mut BTreeMap<&'a str, Option<&'a str>>,
    done: usize,
) -> bool {
    if done == ops.len() {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        let op = ops[i];
        // `op` may go next unless an operation not yet placed completed
        // before it was invoked.
        let waits =
            (0..ops.len()).any(|j| !placed[j] && j != i && ops[j].ret.is_some_and(|r| r < op.call));
        if waits {
            continue;
        }
        let key = op.key.as_str();
        let current = registers.get(key).copied().flatten();
        match op.kind {
            Kind::Read => {
                if current != op.value.as_deref() {
                    continue;
                }
                placed[i] = true;
                if some_order(ops, placed, registers, done + 1) {
                    return true;
                }
                placed[i] = false;
            }
            Kind::Write => {
                if op.expect.as_ref().is_some_and(|x| current != x.as_deref()) {
                    continue;
                }
                let before = registers.insert(key, op.value.as_deref());
                placed[i] = true;
                if some_order(ops, placed, registers, done + 1) {
                    return true;
                }
                placed[i] = false;
                match before {
                    Some(v) => registers.insert(key, v),
                    None => registers.remove(key),
                };
            }
        }
    }
    false
}

/// A random small history: up to 7 operations on 1 or 2 keys, with random
/// overlaps (times on a coarse grid, so that equal times occur) and
/// outcomes. Reads mostly return what a simulated register held at a
/// random point of their interval, sometimes any value of the history
/// (or absent), so that both verdicts come up often.
pub fn random_history(rng: &mut Rng) -> Vec<Op> {
    let n = 1 + rng.below(7) as usize;
    let keys = 1 + rng.below(2);
    let mut ops = Vec::new();
    // (linearization point, index) of the operations that take effect.
    let mut effects = Vec::new();
    for i in 0..n {
        let call = rng.below(30);
        let ret = call + rng.below(12);
        let key = format!("r/{}", rng.below(keys));
        let read = rng.below(2) == 0;
        let dice = rng.below(100);
        let outcome = match (read, dice) {
            (true, 0..85) => Outcome::Ok,
            (true, _) => Outcome::Fail,
            (false, 0..55) => Outcome::Ok,
            (false, 55..80) => Outcome::Unknown,
            (false, _) => Outcome::Fail,
        };
        // Reads get their value below; 15 in a hundred writes are deletes.
        let value = (!read && rng.below(100) >= 15).then(|| format!("v{i}"));
        let takes_effect = match outcome {
            Outcome::Ok => true,
            Outcome::Unknown => rng.below(2) == 0,
            Outcome::Fail => false,
        };
        if takes_effect {
            effects.push((call + rng.below(ret - call + 1), i));
        }
        // A third of the writes are compare-and-swaps, expecting absence or
        // the value of an earlier write.
        let expect = (!read && rng.below(3) == 0).then(|| {
            let k = rng.below(i as u64 + 1);
            (k < i as u64).then(|| format!("v{k}"))
        });
        ops.push(Op {
            client: i as u32,
            node: 1,
            key,
            kind: if read { Kind::Read } else { Kind::Write },
            value,
            call,
            ret: (outcome == Outcome::Ok).then_some(ret),
            outcome,
            expect,
        });
    }
    let written: Vec<Option<String>> = ops
        .iter()
        .filter(|o| o.kind == Kind::Write)
        .map(|o| o.value.clone())
        .collect();
    effects.sort();
    let mut registers: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (_, i) in effects {
        let op = &mut ops[i];
        match op.kind {
            Kind::Write => {
                registers.insert(op.key.clone(), op.value.clone());
            }
            Kind::Read => {
                op.value = if rng.below(100) < 65 || written.is_empty() {
                    registers.get(&op.key).cloned().flatten()
                } else {
                    let k = rng.below(written.len() as u64 + 1) as usize;
                    written.get(k).cloned().flatten()
                };
            }
        }
    }
    ops
}

/// A sequential history of a simulated register: `n` operations on 1 or 2
/// keys, none overlapping another, all completed, every read returning what
/// the register holds. Its only legal order is the real-time one.
pub fn sequential_history(rng: &mut Rng, n: usize) -> Vec<Op> {
    let keys = 1 + rng.below(2);
    let mut registers: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut t = 0;
    let mut ops = Vec::new();
    for i in 0..n {
        let key = format!("r/{}", rng.below(keys));
        let call = t + 1 + rng.below(5);
        let ret = call + rng.below(5);
        t = ret;
        let current = registers.get(&key).cloned().flatten();
        let (kind, value, expect) = match rng.below(10) {
            0..5 => (Kind::Read, current, None),
            5 => (Kind::Write, None, None),
            // A compare-and-swap on what the register holds.
            6 => (Kind::Write, Some(format!("v{i}")), Some(current)),
            _ => (Kind::Write, Some(format!("v{i}")), None),
        };
        if kind == Kind::Write {
            registers.insert(key.clone(), value.clone());
        }
        ops.push(Op {
            client: rng.below(4) as u32,
            node: 1,
            key,
            kind,
            value,
            call,
            ret: Some(ret),
            outcome: Outcome::Ok,
            expect,
        });
    }
    ops
}
