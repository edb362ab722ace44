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
//! 't' time_ms(u64 BE) request id      -> kept result (ids by age)
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
//!
//! One record per id, keyed by time first so that expiry is a scan from the
//! start of the space. A lookup by id needs the id's time: [`IdIndex`], in
//! memory, maps each id's hash to the times of the ids with that hash, so a
//! new id (nearly every one) is known to be new without a read, and a held
//! one is one point read. The result is kept in a short binary form for the
//! answers of plain writes (revision, count, existed) and as JSON otherwise
//! (see [`encode_kept`]).

use std::collections::BTreeMap;
use std::collections::HashMap;

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
use crate::raft::types::CommandResult;

pub(crate) const CF_HISTORY: &str = "history";

const SPACE_KEY: u8 = b'k';
const SPACE_EVENT: u8 = b'e';
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

pub(crate) fn id_time_key(generation: u64, time_ms: u64, id: &[u8]) -> Vec<u8> {
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
/// Adds a request id with its kept result to `batch`.
pub(crate) fn put_id(
    batch: &mut WriteBatch,
    history: &rocksdb::ColumnFamily,
    key: &mut Vec<u8>,
    generation: u64,
    id: &[u8],
    time_ms: u64,
    kept: &[u8],
) {
    key.clear();
    key.extend_from_slice(&generation.to_be_bytes());
    key.push(SPACE_ID_TIME);
    key.extend_from_slice(&time_ms.to_be_bytes());
    key.extend_from_slice(id);
    batch.put_cf(history, &key[..], kept);
}

/// The first byte of a kept result in the short form; a JSON one starts
/// with `{`.
const KEPT_SHORT: u8 = 1;

/// A kept result as stored (see [`encode_kept`]).
pub(crate) enum Kept {
    Short([u8; 14]),
    Json(Vec<u8>),
}

impl Kept {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Kept::Short(b) => b,
            Kept::Json(v) => v,
        }
    }
}

/// The kept form of a result: for the answer of a plain write (no
/// transaction, error, compaction point or lease) `01 revision(u64 LE)
/// count(u32 LE) existed(u8: 0 none, 1 false, 2 true)`, 14 bytes; otherwise
/// its JSON.
pub(crate) fn encode_kept(result: &CommandResult) -> Result<Kept, Error> {
    if result.txn.is_none()
        && result.error.is_none()
        && result.compact_revision.is_none()
        && result.lease.is_none()
        && result.expired.is_empty()
        && result.renewed.is_empty()
    {
        let mut out = [0u8; 14];
        out[0] = KEPT_SHORT;
        out[1..9].copy_from_slice(&result.revision.to_le_bytes());
        out[9..13].copy_from_slice(&result.count.to_le_bytes());
        out[13] = match result.existed {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        return Ok(Kept::Short(out));
    }
    serde_json::to_vec(result)
        .map(Kept::Json)
        .map_err(|e| Error::Corrupt(format!("result does not encode: {e}")))
}

/// The result [`encode_kept`] kept.
pub(crate) fn decode_kept(kept: &[u8]) -> Result<CommandResult, Error> {
    if kept.first() == Some(&KEPT_SHORT) {
        let corrupt = || Error::Corrupt("the kept result of a request id is truncated".into());
        let revision: [u8; 8] = kept
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let count: [u8; 4] = kept
            .get(9..13)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let existed = match kept.get(13).ok_or_else(corrupt)? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            b => {
                return Err(Error::Corrupt(format!(
                    "the kept result of a request id has an unknown existed flag {b}"
                )));
            }
        };
        return Ok(CommandResult {
            revision: u64::from_le_bytes(revision),
            count: u32::from_le_bytes(count),
            existed,
            ..CommandResult::default()
        });
    }
    serde_json::from_slice(kept).map_err(|e| {
        Error::Corrupt(format!(
            "the kept result of a request id does not decode: {e}"
        ))
    })
}

/// The changes of revisions `from..=to` whose key `filter` wants, in
/// revision order (each revision's in the order it made them), from the
/// change index: stops after the revision in which `max` events are
/// reached. Returns them with the revision to read next. The caller checks
/// the compaction point first: below it the index is being removed.
pub(crate) fn changes(
    db: &DB,
    generation: u64,
    filter: &crate::watch::Filter,
    from: u64,
    to: u64,
    max: usize,
) -> Result<(Vec<crate::watch::Event>, u64), Error> {
    use crate::watch::{Event, EventKind};
    let history = super::cf(db, CF_HISTORY)?;
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(event_key(generation, to.saturating_add(1), 0));
    let mut it = db.raw_iterator_cf_opt(history, opts);
    let mut versions = db.raw_iterator_cf(history);
    it.seek(event_key(generation, from, 0));
    let mut out: Vec<Event> = Vec::new();
    let mut next = to.saturating_add(1);
    while let (Some(k), Some(key)) = (it.key(), it.value()) {
        if k.len() != 21 {
            return Err(Error::Corrupt("a change index key is not 21 bytes".into()));
        }
        let mut r = [0u8; 8];
        r.copy_from_slice(&k[9..17]);
        let revision = u64::from_be_bytes(r);
        if out.len() >= max && out.last().is_some_and(|l| l.revision != revision) {
            next = revision;
            break;
        }
        if filter.matches_key(key) {
            versions.seek(version_key(generation, key, revision));
            let record = match (versions.key(), versions.value()) {
                (Some(vk), Some(v)) if vk == version_key(generation, key, revision).as_slice() => {
                    decode_record(v)?
                }
                _ => {
                    versions.status()?;
                    return Err(Error::Corrupt(format!(
                        "the change index names revision {revision} of a key with no such version"
                    )));
                }
            };
            let event = match record {
                Some(v) => Event {
                    revision,
                    kind: EventKind::Put,
                    kv: key_value(key.to_vec(), v, false),
                },
                None => Event::deleted(key.to_vec(), revision),
            };
            if filter.wants(&event) {
                out.push(event);
            }
        }
        it.next();
    }
    it.status()?;
    Ok((out, next))
}

/// Where a snapshot record goes: its key (without the generation) and value.
pub(crate) type Emit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// Adds to `batch` the removal of the ids older than `cutoff_ms`, and of the
/// oldest ones beyond `keep` when `count` ids are held. Returns the ids that
/// go, with their times.
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
) -> Result<Vec<(Vec<u8>, u64)>, Error> {
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
        let time = u64::from_be_bytes(t);
        let over = count.saturating_sub(removed) > keep;
        if time >= cutoff_ms && !over {
            break;
        }
        batch.delete_cf(history, k);
        ids.push((k[17..].to_vec(), time));
        removed += 1;
        it.next();
    }
    it.status()?;
    Ok(ids)
}

/// The request ids held, by hash: for each hash the times of the ids with
/// that hash (nearly always one), so that a new id is known to be new
/// without a read and a held one is found with one point read of its
/// record. The hash is keyed per process, so ids chosen to collide cannot
/// be made to. Rebuilt from the table at open and after a snapshot install;
/// changed only after the batch that changes the table is written, and
/// exact: every id of the table is in it.
pub(crate) struct IdIndex {
    keys: std::collections::hash_map::RandomState,
    times: HashMap<u64, u64, Unhashed>,
    /// The further times of hashes held more than once.
    more: HashMap<u64, Vec<u64>, Unhashed>,
}

/// The maps of [`IdIndex`] are keyed by a hash already: used as it is.
pub(crate) type Unhashed = std::hash::BuildHasherDefault<AsIs>;

/// A hasher for keys that are hashes.
#[derive(Default)]
pub(crate) struct AsIs(u64);

impl std::hash::Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex {
            keys: std::collections::hash_map::RandomState::new(),
            times: HashMap::default(),
            more: HashMap::default(),
        }
    }
}

impl IdIndex {
    /// The hash every other call takes (computed once per id).
    pub(crate) fn hash(&self, id: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(id)
    }

    /// Every id of the table of `generation`.
    pub(crate) fn load(db: &DB, generation: u64) -> Result<IdIndex, Error> {
        let history = super::cf(db, CF_HISTORY)?;
        let start = space(generation, SPACE_ID_TIME);
        let end = space(generation, SPACE_ID_TIME + 1);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        let mut it = db.raw_iterator_cf_opt(history, opts);
        it.seek(&start);
        let mut index = IdIndex::default();
        while let Some(k) = it.key() {
            if k.len() < 17 {
                return Err(Error::Corrupt(
                    "a request id record's key is truncated".into(),
                ));
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&k[9..17]);
            let h = index.hash(&k[17..]);
            index.add(h, u64::from_be_bytes(t));
            it.next();
        }
        it.status()?;
        Ok(index)
    }

    /// Whether an id with hash `h` may be held (nearly always not).
    pub(crate) fn may_hold(&self, h: u64) -> bool {
        self.times.contains_key(&h)
    }

    /// The times at which an id with hash `h` was kept: where its record
    /// may be. Empty for an id not held.
    pub(crate) fn times(&self, h: u64) -> Vec<u64> {
        let Some(&first) = self.times.get(&h) else {
            return Vec::new();
        };
        let mut out = vec![first];
        if let Some(more) = self.more.get(&h) {
            out.extend_from_slice(more);
        }
        out
    }

    pub(crate) fn add(&mut self, h: u64, time_ms: u64) {
        match self.times.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(time_ms);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(h).or_default().push(time_ms)
            }
        }
    }

    pub(crate) fn remove(&mut self, h: u64, time_ms: u64) {
        let Some(first) = self.times.get_mut(&h) else {
            return;
        };
        let more = self.more.get_mut(&h);
        if *first == time_ms {
            match more.and_then(|m| m.pop()) {
                Some(next) => *first = next,
                None => {
                    self.times.remove(&h);
                }
            }
        } else if let Some(m) = more {
            if let Some(i) = m.iter().position(|&t| t == time_ms) {
                m.swap_remove(i);
            }
        }
        if self.more.get(&h).is_some_and(|m| m.is_empty()) {
            self.more.remove(&h);
        }
    }

    /// Ids held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.times.len() + self.more.values().map(Vec::len).sum::<usize>()
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

    #[test]
    fn the_id_index_keeps_every_time_of_a_hash() {
        let mut index = IdIndex::default();
        let (a, b) = (index.hash(b"a"), index.hash(b"b"));
        assert_ne!(a, b);
        assert!(index.times(a).is_empty() && !index.may_hold(a));
        index.add(a, 5);
        index.add(b, 6);
        assert_eq!(index.times(a), vec![5]);
        assert!(index.may_hold(a));
        // Ids whose hashes collide: forced by adding the same hash twice.
        index.add(a, 7);
        let mut t = index.times(a);
        t.sort();
        assert_eq!(t, vec![5, 7]);
        assert_eq!(index.len(), 3);
        index.remove(a, 5);
        assert_eq!(index.times(a), vec![7]);
        index.remove(a, 9); // not held: nothing changes
        assert_eq!(index.times(a), vec![7]);
        index.remove(a, 7);
        assert!(index.times(a).is_empty());
        assert_eq!(index.times(b), vec![6]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn kept_results_decode_as_they_were() {
        let plain = [None, Some(false), Some(true)].map(|existed| CommandResult {
            revision: 0x0102_0304_0506_0708,
            existed,
            count: 3,
            ..CommandResult::default()
        });
        for r in plain {
            let kept = encode_kept(&r).expect("encodes");
            assert_eq!(kept.bytes().len(), 14, "the short form");
            assert_eq!(decode_kept(kept.bytes()).expect("decodes"), r);
        }
        let compact = CommandResult {
            revision: 9,
            compact_revision: Some(4),
            ..CommandResult::default()
        };
        let kept = encode_kept(&compact).expect("encodes");
        assert_eq!(kept.bytes().first(), Some(&b'{'), "JSON for the rest");
        assert_eq!(decode_kept(kept.bytes()).expect("decodes"), compact);
        assert!(decode_kept(&[KEPT_SHORT, 1, 2]).is_err(), "truncated");
        assert!(decode_kept(b"{not json").is_err());
    }
}
