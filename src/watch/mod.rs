//! Watch: every change, in revision order, from any retained revision, on
//! any member, with bounded memory.
//!
//! The apply path publishes the changes of every batch it wrote to the
//! [`Hub`] of its member (after the write, so that history already holds
//! them). A watcher is either *synced* or *catching up*:
//!
//! - A synced watcher is in the hub's index (by exact key, or in the list of
//!   range watchers) and gets the events that match it pushed into its own
//!   queue by `publish`, whole revisions at a time.
//! - A watcher that starts below the published revision, or that a snapshot
//!   install left behind, reads history ([`crate::store::StateReader::changes`])
//!   a page at a time, at the pace its client takes the events, and joins
//!   the synced set under the hub's lock once it has read up to the
//!   published revision. Because publishing happens under that lock too, the
//!   hand-over has no gap and no duplicate.
//!
//! Memory is bounded per watcher: its queue holds at most
//! [`Limits::queue_events`] events and [`Limits::queue_bytes`] bytes (a
//! single revision larger than that is still queued whole, as it is bounded
//! by the request size limits). A synced watcher whose queue is full leaves
//! the index: it delivers what it holds and ends with
//! [`End::Lagged`], naming the revision to resume from. Nothing is dropped
//! without the watcher being told; nothing is buffered without bound.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::raft::kv::KeyValue;

/// What happened to a key at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Put,
    Delete,
}

/// One change: the key's new version (for a deletion only the key and the
/// revision that deleted it, as etcd reports it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    /// A deletion's event as etcd reports it: the key and the revision
    /// that deleted it.
    pub fn deleted(key: Vec<u8>, revision: u64) -> Event {
        Event {
            revision,
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                mod_revision: revision,
                ..KeyValue::default()
            },
        }
    }

    /// About what the event holds in memory.
    fn size(&self) -> usize {
        self.kv.key.len() + self.kv.value.len() + 64
    }
}

/// Which keys and changes a watcher wants (etcd's `range_end` convention:
/// empty for the key alone, `[0]` for every key from `key` on, otherwise
/// the exclusive end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub no_put: bool,
    pub no_delete: bool,
}

impl Filter {
    pub fn matches_key(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return key == self.key.as_slice();
        }
        key >= self.key.as_slice() && (self.range_end == [0] || key < self.range_end.as_slice())
    }

    /// Whether `e` is for this filter: its key, and its kind not filtered out.
    pub fn wants(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put if self.no_put => false,
            EventKind::Delete if self.no_delete => false,
            _ => self.matches_key(&e.kv.key),
        }
    }
}

/// Per-watcher bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most events queued for one watcher.
    pub queue_events: usize,
    /// Most bytes of events queued for one watcher.
    pub queue_bytes: usize,
    /// Most watchers on this member.
    pub max_watchers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_events: 10_000,
            queue_bytes: 8 << 20,
            max_watchers: 100_000,
        }
    }
}

/// How often quiet watches hear from the server.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// A watch that asked for progress notifications gets one this often
    /// when nothing changes.
    pub progress_interval: Duration,
    /// A REST stream carries a keep-alive this often when quiet.
    pub keepalive_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            progress_interval: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

/// Why a watcher ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its start revision (or the revision it had reached) is below the
    /// compaction point.
    Compacted { compact_revision: u64 },
    /// It fell behind the writes by more than its queue holds; watching
    /// again from `resume_revision` misses nothing.
    Lagged { resume_revision: u64 },
    /// The member is shutting down.
    Closed,
}

impl End {
    /// The operator-facing reason.
    pub fn reason(&self) -> String {
        match self {
            End::Compacted { compact_revision } => format!(
                "the revision to watch from has been compacted (history starts at {compact_revision}); watch again from {compact_revision} or later after reading the current state"
            ),
            End::Lagged { resume_revision } => format!(
                "the watcher fell behind the writes by more than its queue holds (watch.queue_events, watch.queue_bytes); watch again from revision {resume_revision} to miss nothing"
            ),
            End::Closed => {
                "the member is shutting down; watch again on another member from the next revision"
                    .into()
            }
        }
    }
}

/// Counters for metrics.
#[derive(Default)]
pub struct WatchStats {
    pub events_sent: AtomicU64,
    pub lagged: AtomicU64,
    pub streams: AtomicUsize,
}

struct SlotState {
    /// Whole revisions, in order.
    queue: VecDeque<Arc<Event>>,
    bytes: usize,
    synced: bool,
    /// The queue overflowed: events from this revision on were not queued.
    lagged: Option<u64>,
    /// A snapshot install replaced the history under a synced watcher: it
    /// must read history again, from `resync_from` (everything before that
    /// is in its queue or was delivered).
    resync: bool,
    resync_from: u64,
}

struct Slot {
    id: u64,
    filter: Filter,
    /// Events below this revision are not for this watcher.
    from: AtomicU64,
    state: Mutex<SlotState>,
    notify: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct HubState {
    /// The last revision published (applied and written).
    published: u64,
    /// Synced watchers of one key.
    exact: HashMap<Vec<u8>, Vec<Arc<Slot>>>,
    /// Synced watchers of a range.
    ranges: Vec<Arc<Slot>>,
    closed: bool,
}

impl HubState {
    fn unindex(&mut self, slot: &Slot) {
        if slot.filter.range_end.is_empty() {
            if let Some(v) = self.exact.get_mut(&slot.filter.key) {
                v.retain(|s| s.id != slot.id);
                if v.is_empty() {
                    self.exact.remove(&slot.filter.key);
                }
            }
        } else {
            self.ranges.retain(|s| s.id != slot.id);
        }
    }

    fn index(&mut self, slot: Arc<Slot>) {
        if slot.filter.range_end.is_empty() {
            self.exact
                .entry(slot.filter.key.clone())
                .or_default()
                .push(slot);
        } else {
            self.ranges.push(slot);
        }
    }
}

/// The watchers of one member and the changes it publishes to them.
pub struct Hub {
    state: Mutex<HubState>,
    /// Watchers registered (synced or not): when none, `publish` has
    /// nothing to do and the apply path builds no events.
    watchers: AtomicUsize,
    next_id: AtomicU64,
    limits: Mutex<Limits>,
    pub stats: WatchStats,
    closed: Notify,
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        Hub {
            state: Mutex::new(HubState::default()),
            watchers: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits: Mutex::new(limits),
            stats: WatchStats::default(),
            closed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New bounds (a configuration reload); they apply to what is queued
    /// from now on.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// Whether any watcher is registered (the apply path builds events only
    /// then).
    pub fn watching(&self) -> bool {
        self.watchers.load(Ordering::Acquire) > 0
    }

    /// Watchers registered.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// The last revision published.
    pub fn published(&self) -> u64 {
        self.lock().published
    }

    /// Sets the published revision without events: at open, and after a
    /// snapshot install (which also sends every synced watcher back to
    /// history, read from the new state).
    pub fn reset(&self, revision: u64) {
        let mut st = self.lock();
        let resync_from = st.published + 1;
        st.published = st.published.max(revision);
        let mut slots: Vec<Arc<Slot>> = st.exact.drain().flat_map(|(_, v)| v).collect();
        slots.append(&mut st.ranges);
        drop(st);
        for slot in slots {
            let mut s = slot.lock();
            s.synced = false;
            s.resync = true;
            s.resync_from = resync_from;
            drop(s);
            slot.notify.notify_one();
        }
    }

    /// Publishes the changes of revisions up to `revision`, in revision
    /// order (`events` may be empty: the revision still moves). Called by
    /// the apply path after the batch holding them is written. `None`: the
    /// apply path built no events because nobody was watching when the
    /// batch began; a watcher that joined since reads them from history.
    pub fn publish(&self, events: Option<Vec<Event>>, revision: u64) {
        let Some(events) = events else {
            self.reset(revision);
            return;
        };
        let limits = self.limits();
        let mut st = self.lock();
        if !events.is_empty() && (!st.exact.is_empty() || !st.ranges.is_empty()) {
            let mut per_slot: HashMap<u64, (Arc<Slot>, Vec<Arc<Event>>)> = HashMap::new();
            for e in events {
                let e = Arc::new(e);
                let exact = st.exact.get(&e.kv.key).into_iter().flatten();
                for slot in exact.chain(st.ranges.iter()) {
                    if e.revision >= slot.from.load(Ordering::Relaxed) && slot.filter.wants(&e) {
                        per_slot
                            .entry(slot.id)
                            .or_insert_with(|| (slot.clone(), Vec::new()))
                            .1
                            .push(e.clone());
                    }
                }
            }
            for (_, (slot, events)) in per_slot {
                let mut s = slot.lock();
                let overflow = push_revisions(&mut s, events, &limits);
                drop(s);
                if overflow {
                    st.unindex(&slot);
                    self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                }
                slot.notify.notify_one();
            }
        }
        st.published = st.published.max(revision);
    }

    /// Ends every watcher (the member is stopping).
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let slots: Vec<Arc<Slot>> = st
            .exact
            .values()
            .flatten()
            .chain(st.ranges.iter())
            .cloned()
            .collect();
        drop(st);
        for slot in slots {
            slot.notify.notify_one();
        }
        self.closed.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Queues `events` (whole revisions, in order) for a synced watcher;
/// `true` when they did not all fit, which ends its synced life.
fn push_revisions(s: &mut SlotState, events: Vec<Arc<Event>>, limits: &Limits) -> bool {
    let mut i = 0;
    while i < events.len() {
        let rev = events[i].revision;
        let end = events[i..]
            .iter()
            .position(|e| e.revision != rev)
            .map_or(events.len(), |n| i + n);
        let bytes: usize = events[i..end].iter().map(|e| e.size()).sum();
        let fits = s.queue.is_empty()
            || (s.queue.len() + (end - i) <= limits.queue_events
                && s.bytes + bytes <= limits.queue_bytes);
        if !fits {
            s.synced = false;
            s.lagged = Some(rev);
            return true;
        }
        s.queue.extend(events[i..end].iter().cloned());
        s.bytes += bytes;
        i = end;
    }
    false
}

/// Where a watcher reads what came before it joined.
pub trait History: Send + Sync {
    /// Changes from revision `from` to `to` (inclusive) that `filter`
    /// wants, in order, stopping after the revision in which `max` events
    /// are reached; with the revision to read next. The compaction point
    /// when `from` is below it.
    fn changes(
        &self,
        filter: &Filter,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Result<(Vec<Event>, u64), u64>, String>;

    /// The version of `key` visible at `revision` (for `prev_kv`).
    fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, String>;
}

/// What a watcher yields.
#[derive(Debug)]
pub enum Next {
    /// The events of whole revisions, in order.
    Events(Vec<Arc<Event>>),
    /// Nothing changed: every event up to this revision has been delivered.
    Progress(u64),
    /// The watcher ended.
    End(End),
}

/// One watch, from its start revision on.
pub struct Watcher {
    hub: Arc<Hub>,
    history: Arc<dyn History>,
    slot: Arc<Slot>,
    /// The next revision to deliver.
    cursor: u64,
    ended: bool,
}

/// Why a watch could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    TooMany(usize),
    Closed,
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::TooMany(n) => write!(
                f,
                "this member already serves {n} watchers (watch.max_watchers); cancel some or watch on another member"
            ),
            CreateError::Closed => {
                f.write_str("the member is shutting down; watch on another member")
            }
        }
    }
}

impl Watcher {
    /// A watcher of `filter` from `start_revision` (0: from the next
    /// revision published).
    pub fn create(
        hub: &Arc<Hub>,
        history: Arc<dyn History>,
        filter: Filter,
        start_revision: u64,
    ) -> Result<Watcher, CreateError> {
        let limits = hub.limits();
        let registered = hub.watchers.fetch_add(1, Ordering::AcqRel);
        if registered >= limits.max_watchers {
            hub.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(CreateError::TooMany(registered));
        }
        let mut st = hub.lock();
        if st.closed {
            drop(st);
            hub.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(CreateError::Closed);
        }
        let cursor = if start_revision == 0 {
            st.published + 1
        } else {
            start_revision
        };
        let slot = Arc::new(Slot {
            id: hub.next_id.fetch_add(1, Ordering::Relaxed),
            filter,
            from: AtomicU64::new(cursor),
            state: Mutex::new(SlotState {
                queue: VecDeque::new(),
                bytes: 0,
                synced: cursor > st.published,
                lagged: None,
                resync: false,
                resync_from: 0,
            }),
            notify: Notify::new(),
        });
        if cursor > st.published {
            st.index(slot.clone());
        }
        drop(st);
        Ok(Watcher {
            hub: hub.clone(),
            history,
            slot,
            cursor,
            ended: false,
        })
    }

    /// This watcher's id on its member (unique while the member runs).
    pub fn id(&self) -> u64 {
        self.slot.id
    }

    pub fn filter(&self) -> &Filter {
        &self.slot.filter
    }

    /// The next revision it will deliver.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Every event up to the returned revision has been delivered (for a
    /// progress notification asked for by the client).
    pub fn progress(&self) -> u64 {
        let st = self.hub.lock();
        let s = self.slot.lock();
        if s.synced && s.queue.is_empty() {
            st.published
        } else {
            self.cursor.saturating_sub(1)
        }
    }

    /// The next events, waiting for them; `Progress` when `quiet` passes
    /// with nothing to deliver. At most about `max` events at once (whole
    /// revisions).
    pub async fn next(&mut self, quiet: Option<Duration>, max: usize) -> Next {
        if self.ended {
            return Next::End(End::Closed);
        }
        let deadline = quiet.map(|q| tokio::time::Instant::now() + q);
        loop {
            if self.hub.is_closed() {
                return self.end(End::Closed);
            }
            // Catching up from history.
            let synced = {
                let mut s = self.slot.lock();
                if s.resync && s.queue.is_empty() {
                    s.resync = false;
                    self.cursor = self.cursor.max(s.resync_from);
                }
                s.synced || !s.queue.is_empty() || s.lagged.is_some()
            };
            if !synced {
                match self.catch_up(max).await {
                    Ok(Some(events)) => return Next::Events(events),
                    Ok(None) => continue,
                    Err(end) => return self.end(end),
                }
            }
            // Synced: what the queue holds.
            let slot = self.slot.clone();
            let notified = slot.notify.notified();
            {
                let mut s = self.slot.lock();
                if !s.queue.is_empty() {
                    let events = take_revisions(&mut s, max);
                    if let Some(last) = events.last() {
                        self.cursor = last.revision + 1;
                    }
                    return Next::Events(events);
                }
                if let Some(resume) = s.lagged {
                    drop(s);
                    return self.end(End::Lagged {
                        resume_revision: resume,
                    });
                }
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = self.hub.closed.notified() => {}
                        _ = tokio::time::sleep_until(d) => return Next::Progress(self.progress()),
                    }
                }
                None => {
                    tokio::select! {
                        _ = notified => {}
                        _ = self.hub.closed.notified() => {}
                    }
                }
            }
        }
    }

    /// One page of history from the cursor, or `None` after joining the
    /// synced set (or when the page was empty and reading goes on).
    async fn catch_up(&mut self, max: usize) -> Result<Option<Vec<Arc<Event>>>, End> {
        let target = self.hub.published();
        if self.cursor <= target {
            let history = self.history.clone();
            let filter = self.slot.filter.clone();
            let from = self.cursor;
            let read = tokio::task::spawn_blocking(move || {
                history.changes(&filter, from, target, max.max(1))
            })
            .await;
            let page = match read {
                Ok(Ok(Ok(page))) => page,
                Ok(Ok(Err(compact_revision))) => return Err(End::Compacted { compact_revision }),
                Ok(Err(e)) => {
                    log::warn!(
                        "watch: reading history for watcher {} failed: {e}",
                        self.slot.id
                    );
                    return Err(End::Closed);
                }
                Err(e) => {
                    log::warn!(
                        "watch: history task for watcher {} failed: {e}",
                        self.slot.id
                    );
                    return Err(End::Closed);
                }
            };
            let (events, next) = page;
            self.cursor = next.max(self.cursor);
            self.slot.from.store(self.cursor, Ordering::Relaxed);
            if !events.is_empty() {
                return Ok(Some(events.into_iter().map(Arc::new).collect()));
            }
            return Ok(None);
        }
        // Read up to what was published: join, unless more came meanwhile.
        let mut st = self.hub.lock();
        if st.published < self.cursor {
            let mut s = self.slot.lock();
            s.synced = true;
            s.resync = false;
            drop(s);
            self.slot.from.store(self.cursor, Ordering::Relaxed);
            st.index(self.slot.clone());
        }
        Ok(None)
    }

    fn end(&mut self, end: End) -> Next {
        self.ended = true;
        self.hub.lock().unindex(&self.slot);
        Next::End(end)
    }

    /// The version of `key` before `revision`, for `prev_kv`.
    pub async fn prev_kv(&self, key: Vec<u8>, revision: u64) -> Option<KeyValue> {
        let history = self.history.clone();
        let read =
            tokio::task::spawn_blocking(move || history.get_at(&key, revision.saturating_sub(1)))
                .await;
        match read {
            Ok(Ok(kv)) => kv,
            Ok(Err(e)) => {
                log::warn!("watch: reading the previous version failed: {e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Counts events handed to a client.
    pub fn sent(&self, n: usize) {
        self.hub
            .stats
            .events_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.lock().unindex(&self.slot);
        self.hub.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes whole revisions from the queue, at least one, until `max` events.
fn take_revisions(s: &mut SlotState, max: usize) -> Vec<Arc<Event>> {
    let mut out: Vec<Arc<Event>> = Vec::new();
    while let Some(front) = s.queue.front() {
        if out.len() >= max && out.last().map(|l| l.revision) != Some(front.revision) {
            break;
        }
        let Some(e) = s.queue.pop_front() else { break };
        s.bytes = s.bytes.saturating_sub(e.size());
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests;
