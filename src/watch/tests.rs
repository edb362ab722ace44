//! The hub and its watchers against an in-memory history.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// Every event ever published, and a compaction point.
#[derive(Default)]
struct Memory {
    events: Mutex<Vec<Event>>,
    compact: Mutex<u64>,
}

impl History for Memory {
    fn changes(
        &self,
        filter: &Filter,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Result<(Vec<Event>, u64), u64>, String> {
        let compact = *self.compact.lock().unwrap();
        if from < compact {
            return Ok(Err(compact));
        }
        let all = self.events.lock().unwrap();
        let mut out: Vec<Event> = Vec::new();
        let mut next = to + 1;
        for e in all
            .iter()
            .filter(|e| e.revision >= from && e.revision <= to)
        {
            if out.len() >= max && out.last().map(|l| l.revision) != Some(e.revision) {
                next = e.revision;
                break;
            }
            if filter.wants(e) {
                out.push(e.clone());
            }
        }
        Ok(Ok((out, next)))
    }

    fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, String> {
        let all = self.events.lock().unwrap();
        let last = all
            .iter()
            .rev()
            .find(|e| e.kv.key == key && e.revision <= revision);
        Ok(last
            .filter(|e| e.kind == EventKind::Put)
            .map(|e| e.kv.clone()))
    }
}

struct World {
    hub: Arc<Hub>,
    history: Arc<Memory>,
    revision: u64,
}

impl World {
    fn new(limits: Limits) -> World {
        World {
            hub: Arc::new(Hub::new(limits)),
            history: Arc::new(Memory::default()),
            revision: 0,
        }
    }

    /// One revision putting `keys` (in history first, then published, as
    /// the apply path does).
    fn put(&mut self, keys: &[&str]) -> u64 {
        self.revision += 1;
        let events: Vec<Event> = keys
            .iter()
            .map(|k| Event {
                revision: self.revision,
                kind: EventKind::Put,
                kv: KeyValue {
                    key: k.as_bytes().to_vec(),
                    value: format!("v{}", self.revision).into_bytes(),
                    create_revision: self.revision,
                    mod_revision: self.revision,
                    version: 1,
                    lease: 0,
                },
            })
            .collect();
        self.history.events.lock().unwrap().extend(events.clone());
        self.hub.publish(Some(events), self.revision);
        self.revision
    }

    fn delete(&mut self, key: &str) -> u64 {
        self.revision += 1;
        let e = Event {
            revision: self.revision,
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: self.revision,
                ..KeyValue::default()
            },
        };
        self.history.events.lock().unwrap().push(e.clone());
        self.hub.publish(Some(vec![e]), self.revision);
        self.revision
    }

    fn watch(&self, filter: Filter, from: u64) -> Watcher {
        Watcher::create(&self.hub, self.history.clone(), filter, from).expect("created")
    }
}

fn key(k: &str) -> Filter {
    Filter {
        key: k.as_bytes().to_vec(),
        ..Filter::default()
    }
}

fn prefix(p: &str) -> Filter {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    Filter {
        key: p.as_bytes().to_vec(),
        range_end: end,
        ..Filter::default()
    }
}

/// `(revision, key)` of everything the watcher has now, without waiting
/// for more than a short quiet spell.
async fn drain(w: &mut Watcher) -> (Vec<(u64, String)>, Option<End>) {
    let mut out = Vec::new();
    loop {
        match w.next(Some(Duration::from_millis(50)), 3).await {
            Next::Events(events) => out.extend(
                events
                    .iter()
                    .map(|e| (e.revision, String::from_utf8_lossy(&e.kv.key).into_owned())),
            ),
            Next::Progress(_) => return (out, None),
            Next::End(end) => return (out, Some(end)),
        }
    }
}

#[tokio::test]
async fn a_synced_watcher_gets_what_its_filter_wants_in_order() {
    let mut world = World::new(Limits::default());
    let mut one = world.watch(key("a"), 0);
    let mut range = world.watch(prefix("b/"), 0);
    let mut no_put = world.watch(
        Filter {
            no_put: true,
            ..key("a")
        },
        0,
    );
    world.put(&["a", "b/1"]);
    world.put(&["c"]);
    world.put(&["b/2", "b/3"]);
    let del = world.delete("a");
    assert_eq!(
        drain(&mut one).await.0,
        vec![(1, "a".into()), (4, "a".into())]
    );
    assert_eq!(
        drain(&mut range).await.0,
        vec![(1, "b/1".into()), (3, "b/2".into()), (3, "b/3".into())]
    );
    assert_eq!(drain(&mut no_put).await.0, vec![(del, "a".into())]);
    assert_eq!(
        one.progress(),
        4,
        "every event up to the published revision delivered"
    );
}

#[tokio::test]
async fn a_watch_from_the_past_replays_then_joins_without_gap_or_duplicate() {
    let mut world = World::new(Limits::default());
    for i in 0..50 {
        world.put(&[if i % 2 == 0 { "k/even" } else { "k/odd" }]);
    }
    let mut w = world.watch(prefix("k/"), 10);
    // Writes go on while it catches up a page at a time.
    let mut seen = Vec::new();
    for i in 0..50 {
        if let Next::Events(events) = w.next(Some(Duration::from_millis(50)), 4).await {
            seen.extend(events.iter().map(|e| e.revision));
        }
        world.put(&[if i % 2 == 0 { "k/even" } else { "k/odd" }]);
    }
    let (rest, end) = drain(&mut w).await;
    assert_eq!(end, None);
    seen.extend(rest.iter().map(|(r, _)| *r));
    assert_eq!(seen, (10..=100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_watcher_that_falls_behind_ends_with_its_resume_revision_and_the_resume_misses_nothing() {
    let mut world = World::new(Limits {
        queue_events: 5,
        ..Limits::default()
    });
    let mut slow = world.watch(key("x"), 0);
    for _ in 0..20 {
        world.put(&["x"]);
    }
    let (got, end) = drain(&mut slow).await;
    assert_eq!(got.len(), 5, "what the queue held is delivered");
    assert_eq!(end, Some(End::Lagged { resume_revision: 6 }));
    assert_eq!(world.hub.stats.lagged.load(Ordering::Relaxed), 1);
    drop(slow);
    let mut again = world.watch(key("x"), 6);
    let (got, end) = drain(&mut again).await;
    assert_eq!(end, None);
    assert_eq!(
        got.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        (6..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_revision_is_queued_whole_or_not_at_all() {
    let mut world = World::new(Limits {
        queue_events: 3,
        ..Limits::default()
    });
    let mut w = world.watch(prefix("p/"), 0);
    world.put(&["p/1", "p/2"]);
    world.put(&["p/3", "p/4"]); // does not fit beside the first
    let (got, end) = drain(&mut w).await;
    assert_eq!(got, vec![(1, "p/1".into()), (1, "p/2".into())]);
    assert_eq!(end, Some(End::Lagged { resume_revision: 2 }));
}

#[tokio::test]
async fn a_compacted_start_revision_is_refused_with_the_compaction_point() {
    let mut world = World::new(Limits::default());
    for _ in 0..10 {
        world.put(&["a"]);
    }
    *world.history.compact.lock().unwrap() = 7;
    let mut w = world.watch(key("a"), 3);
    assert!(matches!(
        w.next(None, 10).await,
        Next::End(End::Compacted {
            compact_revision: 7
        })
    ));
    let mut ok = world.watch(key("a"), 7);
    assert_eq!(drain(&mut ok).await.0.len(), 4);
}

#[tokio::test]
async fn a_snapshot_install_sends_synced_watchers_back_to_history() {
    let mut world = World::new(Limits::default());
    let mut w = world.watch(key("a"), 0);
    world.put(&["a"]);
    // Revisions 2..=5 arrive by snapshot: in history, never published.
    for r in 2..=5u64 {
        world.revision = r;
        world.history.events.lock().unwrap().push(Event {
            revision: r,
            kind: EventKind::Put,
            kv: KeyValue {
                key: b"a".to_vec(),
                mod_revision: r,
                ..KeyValue::default()
            },
        });
    }
    world.hub.reset(5);
    world.put(&["a"]);
    let (got, end) = drain(&mut w).await;
    assert_eq!(end, None);
    assert_eq!(
        got.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
}

#[tokio::test]
async fn closing_the_hub_ends_every_watcher_and_refuses_new_ones() {
    let world = World::new(Limits::default());
    let mut w = world.watch(key("a"), 0);
    let hub = world.hub.clone();
    let waiting = tokio::spawn(async move { w.next(None, 10).await });
    tokio::task::yield_now().await;
    hub.close();
    assert!(matches!(waiting.await.unwrap(), Next::End(End::Closed)));
    assert!(Watcher::create(&world.hub, world.history.clone(), key("a"), 0).is_err());
}

#[tokio::test]
async fn the_watcher_limit_holds_and_dropping_frees_a_place() {
    let world = World::new(Limits {
        max_watchers: 2,
        ..Limits::default()
    });
    let a = world.watch(key("a"), 0);
    let _b = world.watch(key("b"), 0);
    assert!(matches!(
        Watcher::create(&world.hub, world.history.clone(), key("c"), 0),
        Err(CreateError::TooMany(2))
    ));
    drop(a);
    assert_eq!(world.hub.watchers(), 1);
    world.watch(key("c"), 0);
}

#[tokio::test]
async fn prev_kv_reads_the_version_before_the_event() {
    let mut world = World::new(Limits::default());
    world.put(&["a"]);
    let w = world.watch(key("a"), 0);
    let r = world.put(&["a"]);
    let prev = w
        .prev_kv(b"a".to_vec(), r)
        .await
        .expect("a previous version");
    assert_eq!(prev.mod_revision, 1);
    assert!(w.prev_kv(b"a".to_vec(), 1).await.is_none());
}

#[tokio::test]
async fn a_batch_published_without_events_is_read_from_history() {
    let mut world = World::new(Limits::default());
    world.put(&["a"]);
    // Joined while a batch that built no events was being applied.
    let mut w = world.watch(key("a"), 0);
    world.revision += 1;
    let r = world.revision;
    world.history.events.lock().unwrap().push(Event {
        revision: r,
        kind: EventKind::Put,
        kv: KeyValue {
            key: b"a".to_vec(),
            mod_revision: r,
            ..KeyValue::default()
        },
    });
    world.hub.publish(None, r);
    world.put(&["a"]);
    let (got, _) = drain(&mut w).await;
    assert_eq!(got.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![2, 3]);
}
