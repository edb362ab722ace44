//! The KV v2 model: byte keys and values with their revisions, ranges,
//! comparisons, transactions and what applying them answers.
//!
//! These types are log payloads (inside [`super::types::Command::Txn`]) and
//! results of the state machine, so their binary form in
//! [`crate::raft::codec`] is a storage format. They follow etcd's v3
//! `RangeRequest`, `Compare`, `RequestOp` and `ResponseOp` closely, so that
//! the etcd API is a translation and not a second implementation.
//!
//! Ranges are etcd's: `range_end` empty means the key alone; `[0]` means
//! every key from `key` on; anything else is the end, exclusive, of
//! `[key, range_end)`. A prefix `p` is `[p, successor(p))` ([`prefix_end`]).

use serde::Deserialize;
use serde::Serialize;

/// A key with its value and the metadata etcd keeps for it. Revisions are
/// Raft log indexes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: u64,
    /// The revision of the last change.
    pub mod_revision: u64,
    /// Changes since creation: 1 for a new key.
    pub version: u64,
    /// The lease the key is attached to; 0 for none.
    pub lease: u64,
}

/// How a range's result is ordered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, ascending (as stored).
    #[default]
    None,
    Ascend,
    Descend,
}

/// What a range's result is ordered by.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of one key or a range of keys, at the current or a past revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// See the module docs; empty for the key alone.
    pub range_end: Vec<u8>,
    /// Most keys returned; 0 for no limit.
    pub limit: u64,
    /// The revision to read at; 0 for the current one.
    pub revision: u64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Leave values out.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only keys whose mod or create revision is in these bounds
    /// (0: no bound).
    pub min_mod_revision: u64,
    pub max_mod_revision: u64,
    pub min_create_revision: u64,
    pub max_create_revision: u64,
}

impl RangeRequest {
    /// A read of one key at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        }
    }

    /// A read of every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..RangeRequest::default()
        }
    }

    /// Whether the result is in key order, so that a limit can stop the scan.
    pub(crate) fn in_key_order(&self) -> bool {
        matches!(
            (self.sort_order, self.sort_target),
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key)
        ) && self.min_mod_revision == 0
            && self.max_mod_revision == 0
            && self.min_create_revision == 0
            && self.max_create_revision == 0
    }
}

/// The answer to a [`RangeRequest`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// How many keys the range holds at the revision read (before the limit
    /// and the revision filters, as etcd counts).
    pub count: u64,
}

/// The `range_end` of the prefix `key`: the smallest key greater than every
/// key starting with `key` (`[0]`, every key, when there is none).
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether `k` falls in the range `[key, range_end)` as etcd defines it.
pub fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return k == key;
    }
    k >= key && (range_end == [0] || k < range_end)
}

/// What a comparison looks at, with the operand.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(Vec<u8>),
    Lease(u64),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One condition of a transaction, on a key or on every key of a range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// Whether `kv` (`None`: the key does not exist) satisfies the
    /// comparison. As in etcd, a missing key has version, revisions and
    /// lease 0, and a comparison on the value of a missing key fails.
    pub fn holds(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let zero = KeyValue::default();
        let ord: Ordering = match (&self.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(n), kv) => kv.unwrap_or(&zero).version.cmp(n),
            (CompareTarget::CreateRevision(n), kv) => kv.unwrap_or(&zero).create_revision.cmp(n),
            (CompareTarget::ModRevision(n), kv) => kv.unwrap_or(&zero).mod_revision.cmp(n),
            (CompareTarget::Lease(n), kv) => kv.unwrap_or(&zero).lease.cmp(n),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Less => ord == Ordering::Less,
            CompareOp::Greater => ord == Ordering::Greater,
        }
    }
}

/// Create or overwrite one key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// 0 for none.
    pub lease: u64,
    /// Return the key as it was before.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// Delete one key or a range.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRange {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Return the deleted keys.
    pub prev_kv: bool,
}

/// One operation of a transaction branch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put(Put),
    DeleteRange(DeleteRange),
    Range(RangeRequest),
    Txn(Box<Txn>),
}

/// Comparisons, then the operations of the branch that holds; one log entry,
/// applied atomically. Later operations see the writes of earlier ones.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// A transaction that runs `ops` unconditionally.
    pub fn ops(ops: Vec<TxnOp>) -> Txn {
        Txn {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }

    /// Operations in both branches, nested ones included.
    pub fn op_count(&self) -> usize {
        self.success
            .iter()
            .chain(&self.failure)
            .map(|op| match op {
                TxnOp::Txn(t) => 1 + t.op_count(),
                _ => 1,
            })
            .sum()
    }

    /// Bytes of keys, values and operands it carries.
    pub fn byte_size(&self) -> usize {
        fn op(o: &TxnOp) -> usize {
            match o {
                TxnOp::Put(p) => p.key.len() + p.value.len(),
                TxnOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
                TxnOp::Range(r) => r.key.len() + r.range_end.len(),
                TxnOp::Txn(t) => t.byte_size(),
            }
        }
        let compares: usize = self
            .compare
            .iter()
            .map(|c| {
                c.key.len()
                    + c.range_end.len()
                    + match &c.target {
                        CompareTarget::Value(v) => v.len(),
                        _ => 8,
                    }
            })
            .sum();
        compares
            + self
                .success
                .iter()
                .chain(&self.failure)
                .map(op)
                .sum::<usize>()
    }

    /// etcd's rule: within one branch a key is put at most once and not
    /// both put and deleted (the order of such writes would be a trap).
    /// Returns the offending key.
    pub fn duplicate_key(&self) -> Option<Vec<u8>> {
        /// The keys a branch puts and the ranges it deletes.
        type Writes = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);
        fn branch(ops: &[TxnOp]) -> Result<Writes, Vec<u8>> {
            let mut puts: Vec<Vec<u8>> = Vec::new();
            let mut dels: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for op in ops {
                match op {
                    TxnOp::Put(p) => {
                        if puts.contains(&p.key) {
                            return Err(p.key.clone());
                        }
                        puts.push(p.key.clone());
                    }
                    TxnOp::DeleteRange(d) => dels.push((d.key.clone(), d.range_end.clone())),
                    TxnOp::Range(_) => {}
                    TxnOp::Txn(t) => {
                        // Only one nested branch runs: each is checked on
                        // its own, and both against this level.
                        let (sp, sd) = branch(&t.success)?;
                        let (fp, fd) = branch(&t.failure)?;
                        for k in sp.iter().chain(&fp) {
                            if puts.contains(k) {
                                return Err(k.clone());
                            }
                        }
                        let mut nested: Vec<Vec<u8>> = sp;
                        for k in fp {
                            if !nested.contains(&k) {
                                nested.push(k);
                            }
                        }
                        puts.extend(nested);
                        dels.extend(sd);
                        dels.extend(fd);
                    }
                }
            }
            for k in &puts {
                if dels.iter().any(|(s, e)| in_range(k, s, e)) {
                    return Err(k.clone());
                }
            }
            Ok((puts, dels))
        }
        branch(&self.success)
            .and_then(|_| branch(&self.failure))
            .err()
    }
}

/// The answer to one [`TxnOp`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Put {
        prev_kv: Option<KeyValue>,
    },
    DeleteRange {
        deleted: u64,
        prev_kvs: Vec<KeyValue>,
    },
    Range(RangeResult),
    Txn(TxnResult),
}

/// The answer to a [`Txn`]: which branch ran and what each operation of it
/// answered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    pub responses: Vec<OpResult>,
}

/// Why an entry changed nothing: decided at apply time, the same on every
/// member. The codes are stable; etcd's messages are in [`ApplyError::etcd_message`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// A revision older than the compaction point was asked for.
    Compacted { compact_revision: u64 },
    /// A revision newer than the entry's own was asked for.
    FutureRevision { current: u64 },
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// A lease that does not exist.
    LeaseNotFound { lease: u64 },
    /// A grant of an id that is already a lease.
    LeaseExists { lease: u64 },
}

impl ApplyError {
    /// A short code for error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ApplyError::Compacted { .. } => "compacted",
            ApplyError::FutureRevision { .. } => "future_revision",
            ApplyError::KeyNotFound => "key_not_found",
            ApplyError::LeaseNotFound { .. } => "lease_not_found",
            ApplyError::LeaseExists { .. } => "lease_exists",
        }
    }

    /// The message etcd gives for the same condition (clients match it).
    pub fn etcd_message(&self) -> &'static str {
        match self {
            ApplyError::Compacted { .. } => {
                "etcdserver: mvcc: required revision has been compacted"
            }
            ApplyError::FutureRevision { .. } => {
                "etcdserver: mvcc: required revision is a future revision"
            }
            ApplyError::KeyNotFound => "etcdserver: key not found",
            ApplyError::LeaseNotFound { .. } => "etcdserver: requested lease not found",
            ApplyError::LeaseExists { .. } => "etcdserver: lease already exists",
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Compacted { compact_revision } => write!(
                f,
                "revision {compact_revision} is the oldest kept: history before it has been compacted; read at {compact_revision} or later"
            ),
            ApplyError::FutureRevision { current } => write!(
                f,
                "the revision asked for is newer than the current revision {current}"
            ),
            ApplyError::KeyNotFound => f.write_str(
                "ignore_value or ignore_lease was given for a key that does not exist; put it with a value first",
            ),
            ApplyError::LeaseNotFound { lease } => write!(
                f,
                "lease {lease} does not exist (it expired, was revoked or was never granted); grant a lease first"
            ),
            ApplyError::LeaseExists { lease } => write!(
                f,
                "lease {lease} already exists; grant with another id, or with id 0 to have one chosen"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
        assert!(in_range(b"ab", b"a", b"b"));
        assert!(!in_range(b"b", b"a", b"b"));
        assert!(in_range(b"zzz", b"a", &[0]));
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
    }

    #[test]
    fn comparisons_treat_a_missing_key_as_etcd_does() {
        let c = |op, target| Compare {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            op,
            target,
        };
        assert!(c(CompareOp::Equal, CompareTarget::Version(0)).holds(None));
        assert!(c(CompareOp::Equal, CompareTarget::ModRevision(0)).holds(None));
        assert!(!c(CompareOp::Equal, CompareTarget::Value(Vec::new())).holds(None));
        assert!(!c(CompareOp::NotEqual, CompareTarget::Value(b"x".to_vec())).holds(None));
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"b".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            lease: 0,
        };
        assert!(c(CompareOp::Greater, CompareTarget::Value(b"a".to_vec())).holds(Some(&kv)));
        assert!(c(CompareOp::Less, CompareTarget::ModRevision(6)).holds(Some(&kv)));
        assert!(c(CompareOp::NotEqual, CompareTarget::CreateRevision(4)).holds(Some(&kv)));
    }

    #[test]
    fn duplicate_keys_in_a_branch_are_found() {
        let put = |k: &[u8]| {
            TxnOp::Put(Put {
                key: k.to_vec(),
                ..Put::default()
            })
        };
        let del = |k: &[u8], e: &[u8]| {
            TxnOp::DeleteRange(DeleteRange {
                key: k.to_vec(),
                range_end: e.to_vec(),
                prev_kv: false,
            })
        };
        assert_eq!(Txn::ops(vec![put(b"a"), put(b"b")]).duplicate_key(), None);
        assert_eq!(
            Txn::ops(vec![put(b"a"), put(b"a")]).duplicate_key(),
            Some(b"a".to_vec())
        );
        assert_eq!(
            Txn::ops(vec![put(b"ab"), del(b"a", b"b")]).duplicate_key(),
            Some(b"ab".to_vec())
        );
        // The two branches of a nested transaction never both run.
        let nested = Txn {
            compare: Vec::new(),
            success: vec![put(b"x")],
            failure: vec![put(b"x")],
        };
        assert_eq!(
            Txn::ops(vec![TxnOp::Txn(Box::new(nested.clone()))]).duplicate_key(),
            None
        );
        assert_eq!(
            Txn::ops(vec![put(b"x"), TxnOp::Txn(Box::new(nested))]).duplicate_key(),
            Some(b"x".to_vec())
        );
        // Success and failure of the top level are separate too.
        let t = Txn {
            compare: Vec::new(),
            success: vec![put(b"a")],
            failure: vec![put(b"a")],
        };
        assert_eq!(t.duplicate_key(), None);
    }
}
