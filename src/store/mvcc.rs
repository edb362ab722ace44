//! History: every change by revision, point-in-time reads, compaction, and
//! the table of applied request ids. All of it lives in the `history`
//! column family, behind the same data generation prefix as `data` (so a
//! snapshot install replaces it with the same pointer switch).
//!
//! ## Layout (after the 8-byte big-endian generation)
//!
//! ```text
//! 'k' escaped(key) 00 00 rev(u64 BE)  -> stored value, or [0] for a deletion
//! 'e' rev(u64 BE) seq(u32 BE)         -> key        (the changes of a revision, in order)
//! 'i' request id                      -> time_ms(u64 LE) result(JSON)
//! 't' time_ms(u64 BE) request id      -> empty      (ids by age, for expiry)
//! ```
//!
//! Keys are escaped (`00` becomes `00 ff`) and terminated by `00 00`, which
//! keeps key order and makes every key's records contiguous and sorted by
//! revision. The `data` column family keeps the current value of each key
//! for fast current reads; `history` keeps every version since the
//! compaction point, so a read at revision `r` is one reverse seek per key.
//!
//! ## Compaction
//!
//! `Compact { revision: c }` is a log entry: from it on every member refuses
//! reads below `c` (the compaction point is in `sm_meta`, written with the
//! entry). What no read can reach any more is removed afterwards, in the
//! background, member by member: for every key the versions older than its
//! newest version at or below `c`, and that version too when it is a
//! deletion older than `c`; and the change index below `c`. When that
//! happens does not change any answer, so members need not agree on it;
//! snapshots leave such versions out as they are written.
//!
//! ## Request ids
//!
//! A tagged entry's id and result are kept for [`ID_WINDOW_MS`] of log time
//! (the time the leader wrote into the entry) and at most about [`MAX_IDS`]
//! ids. Expiry runs in the entry whose time first passes a whole second, in
//! a write batch of its own, so every member expires the same ids at the
//! same entry.

use std::collections::BTreeMap;

use rocksdb::DB;
use rocksdb::DBAccess;
use rocksdb::DBRawIteratorWithThreadMode;
use rocksdb::ReadOptions;
use rocksdb::WriteBatch;

use super::Error;
use super::state_machine::StoredValue;
use crate::raft::kv::KeyValue;
use crate::raft::kv::RangeRequest;
use crate::raft::kv::RangeResult;
use crate::raft::kv::SortOrder;
use crate::raft::kv::SortTarget;

pub(crate) const CF_HISTORY: &str = "history";

const SPACE_KEY: u8 = b'k';
const SPACE_EVENT: u8 = b'e';
const SPACE_ID: u8 = b'i';
const SPACE_ID_TIME: u8 = b't';

/// How long a request id is remembered, in log time.
pub const ID_WINDOW_MS: u64 = 10 * 60 * 1000;
/// About how many request ids are remembered at most (the oldest go first;
/// the table may exceed it by the ids of one second).
pub const MAX_IDS: u64 = 1_000_000;

const TOMBSTONE: u8 = 0;

/// `gen ++ space`.
fn space(generation: u64, space: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + 32);
    k.extend_from_slice(&generation.to_be_bytes());
    k.push(space);
    k
}

/// The prefix of every history record of `key`.
pub(crate) fn key_prefix(generation: u64, key: &[u8]) -> Vec<u8> {
    let mut k = space(generation, SPACE_KEY);
    escape_into(&mut k, key);
    k
}

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The history record of `key` at `revision`.
pub(crate) fn version_key(generation: u64, key: &[u8], revision: u64) -> Vec<u8> {
    let mut k = key_prefix(generation, key);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// Splits a `k` record's key (without the generation) into user key and
/// revision.
fn split_version_key(k: &[u8]) -> Result<(Vec<u8>, u64), Error> {
    let corrupt = || Error::Corrupt("history key does not decode".into());
    let body = k.get(9..).ok_or_else(corrupt)?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    loop {
        match (body.get(i), body.get(i + 1)) {
            (Some(0), Some(0)) => break,
            (Some(0), Some(0xff)) => {
                key.push(0);
                i += 2;
            }
            (Some(&b), _) => {
                key.push(b);
                i += 1;
            }
            (None, _) => return Err(corrupt()),
        }
    }
    let rev: [u8; 8] = body
        .get(i + 2..)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok((key, u64::from_be_bytes(rev)))
}

fn event_key(generation: u64, revision: u64, seq: u32) -> Vec<u8> {
    let mut k = space(generation, SPACE_EVENT);
    k.extend_from_slice(&revision.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn id_key(generation: u64, id: &[u8]) -> Vec<u8> {
    let mut k = space(generation, SPACE_ID);
    k.extend_from_slice(id);
    k
}

fn id_time_key(generation: u64, time_ms: u64, id: &[u8]) -> Vec<u8> {
    let mut k = space(generation, SPACE_ID_TIME);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Adds the history of one change to `batch`: the version record and the
/// change index entry. `value` is `None` for a deletion.
pub(crate) fn record_change(
    batch: &mut WriteBatch,
    history: &rocksdb::ColumnFamily,
    generation: u64,
    key: &[u8],
    revision: u64,
    seq: u32,
    value: Option<&StoredValue>,
) {
    let record = match value {
        Some(v) => v.encode(),
        None => vec![TOMBSTONE],
    };
    batch.put_cf(history, version_key(generation, key, revision), record);
    batch.put_cf(history, event_key(generation, revision, seq), key);
}

fn decode_record(bytes: &[u8]) -> Result<Option<StoredValue>, Error> {
    match bytes.first() {
        Some(&TOMBSTONE) => Ok(None),
        _ => StoredValue::decode(bytes).map(Some),
    }
}

/// The version of `key` visible at `revision`, from any RocksDB view.
pub(crate) fn get_at<D: DBAccess>(
    it: &mut DBRawIteratorWithThreadMode<'_, D>,
    generation: u64,
    key: &[u8],
    revision: u64,
) -> Result<Option<StoredValue>, Error> {
    let prefix = key_prefix(generation, key);
    it.seek_for_prev(version_key(generation, key, revision));
    let found = match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.starts_with(&prefix) && k.len() == prefix.len() + 8 => {
            decode_record(v)?
        }
        _ => None,
    };
    it.status()?;
    Ok(found)
}

/// A stored value as a [`KeyValue`] of `key`.
pub(crate) fn key_value(key: Vec<u8>, v: StoredValue, keys_only: bool) -> KeyValue {
    KeyValue {
        key,
        value: if keys_only { Vec::new() } else { v.value },
        create_revision: v.create_revision,
        mod_revision: v.mod_revision,
        version: v.version,
        lease: v.lease,
    }
}

/// Collects a range's result from `(key, value)` pairs in key order.
pub(crate) struct RangeCollector<'a> {
    req: &'a RangeRequest,
    pub(crate) result: RangeResult,
    /// Stop collecting values once this many are held (key order only).
    stop_at: Option<usize>,
}

impl<'a> RangeCollector<'a> {
    pub(crate) fn new(req: &'a RangeRequest) -> Self {
        let stop_at = (req.limit > 0 && req.in_key_order()).then_some(req.limit as usize);
        RangeCollector {
            req,
            result: RangeResult::default(),
            stop_at,
        }
    }

    pub(crate) fn push(&mut self, key: &[u8], v: StoredValue) {
        self.result.count += 1;
        if self.req.count_only {
            return;
        }
        let r = self.req;
        if (r.min_mod_revision > 0 && v.mod_revision < r.min_mod_revision)
            || (r.max_mod_revision > 0 && v.mod_revision > r.max_mod_revision)
            || (r.min_create_revision > 0 && v.create_revision < r.min_create_revision)
            || (r.max_create_revision > 0 && v.create_revision > r.max_create_revision)
        {
            return;
        }
        if let Some(n) = self.stop_at {
            if self.result.kvs.len() >= n {
                self.result.more = true;
                return;
            }
        }
        // Values go after sorting: a sort by value needs them.
        self.result.kvs.push(key_value(key.to_vec(), v, false));
    }

    pub(crate) fn finish(mut self) -> RangeResult {
        let r = self.req;
        let kvs = &mut self.result.kvs;
        let by = |a: &KeyValue, b: &KeyValue| match r.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version).then(a.key.cmp(&b.key)),
            SortTarget::Create => a
                .create_revision
                .cmp(&b.create_revision)
                .then(a.key.cmp(&b.key)),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision).then(a.key.cmp(&b.key)),
            SortTarget::Value => a.value.cmp(&b.value).then(a.key.cmp(&b.key)),
        };
        match r.sort_order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by(by),
            SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
        }
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            self.result.more = true;
        }
        if r.keys_only {
            for kv in kvs.iter_mut() {
                kv.value = Vec::new();
            }
        }
        self.result
    }
}

/// Feeds the versions of every key of `req`'s range visible at `revision`
/// to `collect`, from the history.
pub(crate) fn range_at<D: DBAccess>(
    it: &mut DBRawIteratorWithThreadMode<'_, D>,
    generation: u64,
    req: &RangeRequest,
    revision: u64,
    collect: &mut RangeCollector<'_>,
) -> Result<(), Error> {
    if req.range_end.is_empty() {
        if let Some(v) = get_at(it, generation, &req.key, revision)? {
            collect.push(&req.key, v);
        }
        return Ok(());
    }
    let space_end = space(generation, SPACE_KEY + 1);
    let end = if req.range_end == [0] {
        space_end
    } else {
        key_prefix(generation, &req.range_end)
    };
    it.seek(key_prefix(generation, &req.key));
    // The newest version at or below `revision` of the key being read.
    let mut current: Option<(Vec<u8>, Option<StoredValue>)> = None;
    while let Some(k) = it.key() {
        if k >= end.as_slice() {
            break;
        }
        let (key, rev) = split_version_key(k)?;
        if current.as_ref().is_some_and(|(ck, _)| *ck != key) {
            if let Some((ck, Some(v))) = current.take() {
                collect.push(&ck, v);
            }
        }
        if rev <= revision {
            let v = decode_record(it.value().unwrap_or_default())?;
            current = Some((key, v));
        } else if current.is_none() {
            current = Some((key, None));
        }
        it.next();
    }
    it.status()?;
    if let Some((ck, Some(v))) = current {
        collect.push(&ck, v);
    }
    Ok(())
}

/// A request id's kept result, if the id is remembered.
pub(crate) fn id_result(stored: &[u8]) -> Result<(u64, Vec<u8>), Error> {
    let (time, result) = stored
        .split_at_checked(8)
        .ok_or_else(|| Error::Corrupt("request id record is truncated".into()))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(time);
    Ok((u64::from_le_bytes(b), result.to_vec()))
}

/// Adds a request id with its result to `batch`.
pub(crate) fn put_id(
    batch: &mut WriteBatch,
    history: &rocksdb::ColumnFamily,
    generation: u64,
    id: &[u8],
    time_ms: u64,
    result: &[u8],
) {
    let mut record = Vec::with_capacity(8 + result.len());
    record.extend_from_slice(&time_ms.to_le_bytes());
    record.extend_from_slice(result);
    batch.put_cf(history, id_key(generation, id), record);
    batch.put_cf(history, id_time_key(generation, time_ms, id), []);
}

/// Where a snapshot record goes: its key (without the generation) and value.
pub(crate) type Emit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// Adds to `batch` the removal of the ids older than `cutoff_ms`, and of the
/// oldest ones beyond `keep` when `count` ids are held. Returns the ids that
/// go.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of one apply step it works on"
)]
pub(crate) fn expire_ids(
    db: &DB,
    batch: &mut WriteBatch,
    history: &rocksdb::ColumnFamily,
    generation: u64,
    cutoff_ms: u64,
    count: u64,
    keep: u64,
    read: ReadOptions,
) -> Result<Vec<Vec<u8>>, Error> {
    let start = space(generation, SPACE_ID_TIME);
    let end = space(generation, SPACE_ID_TIME + 1);
    let mut it = db.raw_iterator_cf_opt(history, read);
    it.seek(&start);
    let mut removed = 0u64;
    let mut ids = Vec::new();
    while let Some(k) = it.key() {
        if k >= end.as_slice() || k.len() < 17 {
            break;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&k[9..17]);
        let over = count.saturating_sub(removed) > keep;
        if u64::from_be_bytes(t) >= cutoff_ms && !over {
            break;
        }
        batch.delete_cf(history, k);
        batch.delete_cf(history, id_key(generation, &k[17..]));
        ids.push(k[17..].to_vec());
        removed += 1;
        it.next();
    }
    it.status()?;
    Ok(ids)
}

/// The hashes of the request ids held, so that a new id (nearly every one)
/// is known to be new without a read. A hash present may be another id's:
/// then the table itself is read. Rebuilt from the table at open and after
/// a snapshot install; changed only after the batch that changes the table
/// is written.
#[derive(Default)]
pub(crate) struct IdFilter {
    counts: std::collections::HashMap<u64, u32>,
}

impl IdFilter {
    pub(crate) fn hash(id: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// Every id of the table of `generation`.
    pub(crate) fn load(db: &DB, generation: u64) -> Result<IdFilter, Error> {
        let history = super::cf(db, CF_HISTORY)?;
        let start = space(generation, SPACE_ID_TIME);
        let end = space(generation, SPACE_ID_TIME + 1);
        let mut it = db.raw_iterator_cf(history);
        it.seek(&start);
        let mut f = IdFilter::default();
        while let Some(k) = it.key() {
            if k >= end.as_slice() || k.len() < 17 {
                break;
            }
            f.add(&k[17..]);
            it.next();
        }
        it.status()?;
        Ok(f)
    }

    pub(crate) fn may_hold(&self, id: &[u8]) -> bool {
        self.counts.contains_key(&Self::hash(id))
    }

    pub(crate) fn add(&mut self, id: &[u8]) {
        *self.counts.entry(Self::hash(id)).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, id: &[u8]) {
        let h = Self::hash(id);
        if let Some(n) = self.counts.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&h);
            }
        }
    }
}

/// Writes, in batches, the removal of what no read can reach below the
/// compaction point `compact` (see the module docs), working through the
/// change index from its start. Returns the number of records removed.
pub(crate) fn compact_history(
    db: &DB,
    generation: u64,
    compact: u64,
    still_current: &dyn Fn() -> bool,
) -> Result<u64, Error> {
    let history = super::cf(db, CF_HISTORY)?;
    let start = space(generation, SPACE_EVENT);
    let stop = event_key(generation, compact, 0);
    let mut removed = 0u64;
    loop {
        if !still_current() {
            return Ok(removed);
        }
        // One pass: up to 1024 changes of the index, each key handled once.
        let view = db.snapshot();
        let mut events = view.raw_iterator_cf(history);
        events.seek(&start);
        let mut keys = BTreeMap::new();
        let mut last_event = None;
        while let Some(k) = events.key() {
            if k >= stop.as_slice() || keys.len() >= 1024 {
                break;
            }
            keys.insert(events.value().unwrap_or_default().to_vec(), ());
            last_event = Some(k.to_vec());
            events.next();
        }
        events.status()?;
        drop(events);
        let Some(last_event) = last_event else {
            return Ok(removed);
        };
        let mut batch = WriteBatch::default();
        let mut versions = view.raw_iterator_cf(history);
        for key in keys.keys() {
            let prefix = key_prefix(generation, key);
            versions.seek(&prefix);
            // Versions at or below `compact`, oldest first.
            let mut below: Vec<(Vec<u8>, bool)> = Vec::new();
            while let Some(k) = versions.key() {
                if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                    break;
                }
                let mut rev = [0u8; 8];
                rev.copy_from_slice(&k[prefix.len()..]);
                if u64::from_be_bytes(rev) > compact {
                    break;
                }
                let tomb = versions
                    .value()
                    .is_some_and(|v| v.first() == Some(&TOMBSTONE));
                below.push((k.to_vec(), tomb && u64::from_be_bytes(rev) < compact));
                versions.next();
            }
            versions.status()?;
            if let Some((newest, newest_is_old_tomb)) = below.pop() {
                if newest_is_old_tomb {
                    batch.delete_cf(history, newest);
                    removed += 1;
                }
            }
            for (k, _) in below {
                batch.delete_cf(history, k);
                removed += 1;
            }
        }
        drop(versions);
        // The index entries handled, up to and including the last one.
        let mut end = last_event;
        end.push(0);
        batch.delete_range_cf(history, &start, &end);
        drop(view);
        if !still_current() {
            return Ok(removed);
        }
        db.write(batch)?;
    }
}

/// Whether a history record written into a snapshot is still reachable at
/// the compaction point `compact`: the key-record stream is grouped by key,
/// so the caller passes each key's records in order and this keeps, per
/// key, every version above `compact` and the newest at or below it (unless
/// it is an old deletion).
pub(crate) struct SnapshotFilter {
    compact: u64,
    /// The newest record at or below the compaction point of the key being
    /// read, held back until it is known to be the newest.
    held: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl SnapshotFilter {
    pub(crate) fn new(compact: u64) -> Self {
        SnapshotFilter {
            compact,
            held: None,
        }
    }

    /// Feeds one record (`k` with its generation); calls `emit` with the
    /// records to write (without their generation).
    pub(crate) fn feed(&mut self, k: &[u8], v: &[u8], emit: &mut Emit<'_>) -> Result<(), Error> {
        // Records are written without their 8-byte generation.
        let g = 8;
        match k.get(g) {
            Some(&SPACE_KEY) => {
                let (key, rev) = split_version_key(k)?;
                if self.held.as_ref().is_some_and(|(hk, _, _)| *hk != key) {
                    self.flush(emit)?;
                }
                if rev <= self.compact {
                    // A newer version at or below the point replaces it.
                    self.held = Some((key, k[g..].to_vec(), v.to_vec()));
                    return Ok(());
                }
                self.flush(emit)?;
                emit(&k[g..], v)
            }
            Some(&SPACE_EVENT) => {
                self.flush(emit)?;
                let below = k
                    .get(g + 1..g + 9)
                    .and_then(|r| <[u8; 8]>::try_from(r).ok())
                    .is_some_and(|r| u64::from_be_bytes(r) < self.compact);
                if below {
                    return Ok(());
                }
                emit(&k[g..], v)
            }
            _ => {
                self.flush(emit)?;
                emit(&k[g..], v)
            }
        }
    }

    /// Writes the held record, if it is not an old deletion.
    pub(crate) fn flush(&mut self, emit: &mut Emit<'_>) -> Result<(), Error> {
        if let Some((_, k, v)) = self.held.take() {
            let rev = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|r| <[u8; 8]>::try_from(r).ok())
                .map_or(0, u64::from_be_bytes);
            if !(v.first() == Some(&TOMBSTONE) && rev < self.compact) {
                emit(&k, &v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_keep_their_order_and_split_back() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"a\x01",
            b"b",
            b"\xff",
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(|k| version_key(3, k, 7)).collect();
        let sorted = encoded.clone();
        encoded.sort();
        assert_eq!(encoded, sorted, "escaping keeps key order");
        for k in keys {
            let (key, rev) = split_version_key(&version_key(3, k, 7)).expect("splits");
            assert_eq!((key.as_slice(), rev), (k, 7));
        }
        // All versions of a key sort before the next key.
        assert!(version_key(1, b"a", u64::MAX) < version_key(1, b"a\x00", 0));
    }
}
