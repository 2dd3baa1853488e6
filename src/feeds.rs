//! The feeds as the server holds them: the outbox consumer numbers each
//! durable event in its feeds (all or nothing per round), keeps what it
//! has not persisted yet in memory, and persists it with its cursor; a
//! crash replays the outbox from that cursor and numbers the same events
//! the same way. Readers (`GET /v1/events`, a resumed WebSocket) see the
//! persisted and the pending events alike, and long-pollers are woken when
//! their feed grows.
//!
//! In cluster mode every node applies the same log in the same order, so
//! each node numbers every feed alike and a client may resume on any node.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::events::Event;
use crate::domain::feed::{feeds_of, Expired, Feed, Head};
use crate::storage::feeds::{FeedBatch, Stored};
use crate::storage::{Storage, StorageError};

/// Heads kept in memory after a persist; beyond, the clean ones are
/// dropped and read again from disk when their feed next grows.
const CACHED_HEADS: usize = 200_000;
/// Most events one read answers.
pub const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct FeedStore {
    inner: Arc<Mutex<Inner>>,
    waiters: Arc<Mutex<HashMap<Feed, Arc<Notify>>>>,
    /// Events one feed keeps at most.
    pub max_events: u64,
    /// Seconds an event is kept.
    pub retention_secs: i64,
}

type Fast = foldhash::fast::RandomState;

#[derive(Default)]
struct Inner {
    feeds: HashMap<Feed, Held, Fast>,
    /// The feeds with something to persist, each once.
    dirty: Vec<Feed>,
    drops: Vec<(Feed, std::ops::Range<u64>)>,
}

/// A feed as the consumer holds it: where it stands, and its events not
/// persisted yet, in seq order.
struct Held {
    head: Head,
    pending: VecDeque<(u64, Stored)>,
    dirty: bool,
}

impl Held {
    fn new(head: Head) -> Held {
        Held {
            head,
            pending: VecDeque::new(),
            dirty: false,
        }
    }

    /// Forget the pending events below `seq`.
    fn forget_below(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|(s, _)| *s < seq) {
            self.pending.pop_front();
        }
    }
}

impl Inner {
    /// Mark `f` (held) as having something to persist.
    fn touch(&mut self, f: Feed) {
        if let Some(h) = self.feeds.get_mut(&f) {
            if !h.dirty {
                h.dirty = true;
                self.dirty.push(f);
            }
        }
    }
}

/// A round's events, rendered, with the feed heads they need.
pub struct Prepared {
    rendered: Vec<(Vec<Feed>, Result<Stored, serde_json::Error>)>,
    loaded: Vec<(Feed, Head)>,
}

/// An event as numbered in its feeds.
pub struct Appended {
    pub stored: Stored,
    pub seqs: Vec<(Feed, u64)>,
}

/// One read of a feed.
pub struct Page {
    pub events: Vec<(u64, Stored)>,
    pub head: Head,
}

#[derive(Debug)]
pub enum ReadError {
    Expired(Expired),
    Storage(StorageError),
}

impl From<StorageError> for ReadError {
    fn from(e: StorageError) -> Self {
        ReadError::Storage(e)
    }
}

impl From<ReadError> for crate::error::ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Expired(x) => crate::error::ApiError::EventsExpired {
                oldest_seq: x.oldest_seq,
            },
            ReadError::Storage(e) => e.into(),
        }
    }
}

/// The JSON body of `e` as feeds keep it: its `type` and fields.
pub fn stored(e: &Event) -> Result<Stored, serde_json::Error> {
    Ok(Stored {
        at: e.at,
        body: Arc::from(serde_json::to_string(&e.kind)?),
    })
}

/// The frame a client gets: `seq`, `feed`, `at`, then the event's fields.
pub fn frame(feed: Feed, seq: u64, s: &Stored) -> String {
    let at = chrono::DateTime::from_timestamp(s.at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let rest = s.body.strip_prefix('{').unwrap_or("}");
    let sep = if rest.starts_with('}') { "" } else { "," };
    format!("{{\"seq\":{seq},\"feed\":\"{feed}\",\"at\":\"{at}\"{sep}{rest}")
}

impl FeedStore {
    pub fn new(cfg: &crate::config::Events) -> FeedStore {
        FeedStore {
            inner: Arc::default(),
            waiters: Arc::default(),
            max_events: cfg.max_per_feed,
            retention_secs: i64::from(cfg.retention_days) * 86_400,
        }
    }

    /// Where `feed` stands for a reader: its last seq, and the oldest it
    /// holds that is younger than the retention time (events the sweep has
    /// not dropped yet are already past for readers).
    pub fn head(&self, storage: &Storage, feed: Feed) -> Result<Head, StorageError> {
        let mut head = self.stored_head(storage, feed)?;
        head.oldest = self.first_unexpired(storage, feed, head)?;
        Ok(head)
    }

    /// Where `feed` stands as numbered: in memory if the consumer holds
    /// it, else on disk.
    fn stored_head(&self, storage: &Storage, feed: Feed) -> Result<Head, StorageError> {
        if let Some(h) = self.lock()?.feeds.get(&feed).map(|h| h.head) {
            return Ok(h);
        }
        storage.feed_head(feed)
    }

    /// The first seq of `head` younger than the retention time (`last + 1`
    /// when none is). A feed's events are in seq order, so in time order:
    /// this reads one chunk unless the sweep is behind.
    fn first_unexpired(
        &self,
        storage: &Storage,
        feed: Feed,
        head: Head,
    ) -> Result<u64, StorageError> {
        let cutoff = crate::clock::now() - self.retention_secs;
        let mut from = head.oldest;
        while from <= head.last {
            let page = self.entries(storage, feed, from, head.last, MAX_LIMIT)?;
            if page.is_empty() {
                break;
            }
            for (seq, s) in &page {
                if s.at >= cutoff {
                    return Ok(*seq);
                }
                from = seq + 1;
            }
        }
        Ok(head.last + 1)
    }

    /// Up to `limit` events of `feed` from `from` through `last`, pending
    /// and persisted alike. Pending first, then the disk: an event
    /// persisted in between is in both (merged by seq), never in neither.
    fn entries(
        &self,
        storage: &Storage,
        feed: Feed,
        from: u64,
        last: u64,
        limit: usize,
    ) -> Result<BTreeMap<u64, Stored>, StorageError> {
        if from > last {
            return Ok(BTreeMap::new());
        }
        let mut events: BTreeMap<u64, Stored> = BTreeMap::new();
        if let Some(h) = self.lock()?.feeds.get(&feed) {
            let start = h.pending.partition_point(|(seq, _)| *seq < from);
            events.extend(
                h.pending
                    .range(start..)
                    .take_while(|(seq, _)| *seq <= last)
                    .take(limit)
                    .map(|(seq, s)| (*seq, s.clone())),
            );
        }
        for (seq, s) in storage.feed_entries(feed, from, limit)? {
            if seq <= last {
                events.entry(seq).or_insert(s);
            }
        }
        Ok(events.into_iter().take(limit).collect())
    }

    /// Read what numbering `events` needs (the heads of their feeds not in
    /// memory) without changing anything, so a failed read leaves the
    /// round untouched (it is retried whole).
    pub fn prepare(&self, storage: &Storage, events: &[Event]) -> Result<Prepared, StorageError> {
        let mut rendered = Vec::with_capacity(events.len());
        let mut missing: Vec<Feed> = Vec::new();
        let mut seen: HashSet<Feed, Fast> = HashSet::default();
        {
            let inner = self.lock()?;
            for e in events {
                let feeds = feeds_of(e);
                for f in &feeds {
                    if !inner.feeds.contains_key(f) && seen.insert(*f) {
                        missing.push(*f);
                    }
                }
                rendered.push((feeds, stored(e)));
            }
        }
        let mut loaded = Vec::with_capacity(missing.len());
        for f in missing {
            loaded.push((f, storage.feed_head(f)?));
        }
        Ok(Prepared { rendered, loaded })
    }

    /// Number the prepared events in their feeds: for each event, what it
    /// reads as and each feed it went to with its seq there (`None`: it
    /// does not render, and goes nowhere, logged).
    pub fn commit(&self, p: Prepared) -> Vec<Option<Appended>> {
        let mut out = Vec::with_capacity(p.rendered.len());
        let Ok(mut inner) = self.inner.lock() else {
            return out;
        };
        for (f, h) in p.loaded {
            inner.feeds.entry(f).or_insert_with(|| Held::new(h));
        }
        for (feeds, s) in p.rendered {
            let s = match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "an event does not render; kept out of its feeds");
                    out.push(None);
                    continue;
                }
            };
            let mut seqs = Vec::with_capacity(feeds.len());
            for f in feeds {
                let Some(held) = inner.feeds.get_mut(&f) else {
                    continue;
                };
                let (seq, dropped) = held.head.push(self.max_events);
                held.forget_below(dropped.end);
                held.pending.push_back((seq, s.clone()));
                if !dropped.is_empty() {
                    inner.drops.push((f, dropped));
                }
                inner.touch(f);
                seqs.push((f, seq));
            }
            out.push(Some(Appended { stored: s, seqs }));
        }
        drop(inner);
        // After the events are in: a long-poller that registers later
        // reads them.
        self.wake(
            out.iter()
                .flatten()
                .flat_map(|a| a.seqs.iter().map(|(f, _)| f)),
        );
        out
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StorageError> {
        self.inner
            .lock()
            .map_err(|_| StorageError::Io("feed state lock poisoned".into()))
    }

    fn wake<'a>(&self, touched: impl Iterator<Item = &'a Feed>) {
        let Ok(w) = self.waiters.lock() else {
            return;
        };
        if w.is_empty() {
            return;
        }
        for f in touched {
            if let Some(n) = w.get(f) {
                n.notify_waiters();
            }
        }
    }

    /// What to persist with the consumer's cursor (nothing changes until
    /// [`persisted`](Self::persisted)).
    pub fn batch(&self) -> FeedBatch {
        let Ok(inner) = self.inner.lock() else {
            return FeedBatch::default();
        };
        let mut b = FeedBatch {
            entries: Vec::new(),
            heads: Vec::with_capacity(inner.dirty.len()),
            drops: inner.drops.clone(),
        };
        for f in &inner.dirty {
            if let Some(h) = inner.feeds.get(f) {
                b.entries
                    .extend(h.pending.iter().map(|(seq, s)| (*f, *seq, s.clone())));
                b.heads.push((*f, h.head));
            }
        }
        b
    }

    /// `b` is on disk: forget what it held (the consumer appends nothing
    /// between [`batch`](Self::batch) and this).
    pub fn persisted(&self, b: &FeedBatch) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        for (f, h) in &b.heads {
            if let Some(held) = inner.feeds.get_mut(f) {
                // Every event of `f` up to `h.last` was in the batch.
                held.forget_below(h.last + 1);
                if held.head == *h {
                    held.dirty = false;
                }
            }
        }
        let feeds = &inner.feeds;
        inner
            .dirty
            .retain(|f| feeds.get(f).is_some_and(|h| h.dirty));
        let n = b.drops.len().min(inner.drops.len());
        inner.drops.drain(..n);
        if inner.feeds.len() > CACHED_HEADS {
            inner.feeds.retain(|_, h| h.dirty);
        }
    }

    /// Events of `feed` after `after` (`None`: from the oldest it holds),
    /// at most `limit`, oldest first.
    pub fn read(
        &self,
        storage: &Storage,
        feed: Feed,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page, ReadError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let head = self.head(storage, feed)?;
        let start = head.start(after).map_err(ReadError::Expired)?;
        let events = self
            .entries(storage, feed, start, head.last, limit)?
            .into_iter()
            .collect();
        Ok(Page { events, head })
    }

    /// A handle that is notified when `feed` grows. Enable the
    /// `notified()` future before reading, then wait on it.
    pub fn waiter(&self, feed: Feed) -> Arc<Notify> {
        match self.waiters.lock() {
            Ok(mut w) => w.entry(feed).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Done waiting: forget the handle once nobody else holds it.
    pub fn release(&self, feed: Feed, n: Arc<Notify>) {
        if let Ok(mut w) = self.waiters.lock() {
            // The map's reference and `n`.
            if Arc::strong_count(&n) <= 2 {
                w.remove(&feed);
            }
        }
    }

    /// Drop the events older than `cutoff` (unix seconds) of up to `n`
    /// feeds after `from`; where to go on, or `None` when every feed was
    /// looked at. What it drops is persisted with the next batch.
    pub fn sweep(
        &self,
        storage: &Storage,
        cutoff: i64,
        from: Option<[u8; 17]>,
        n: usize,
    ) -> Result<Option<[u8; 17]>, StorageError> {
        let feeds = storage.feeds_after(from, n)?;
        let next = (feeds.len() == n)
            .then(|| feeds.last().map(|f| f.key()))
            .flatten();
        for f in feeds {
            let head = self.stored_head(storage, f)?;
            if head.oldest > head.last {
                continue;
            }
            // The feed's events are in seq order, so in time order.
            let mut expired_through = None;
            for (seq, s) in storage.feed_entries(f, head.oldest, 1000)? {
                if s.at >= cutoff {
                    break;
                }
                expired_through = Some(seq);
            }
            let Some(seq) = expired_through else {
                continue;
            };
            let mut inner = self.lock()?;
            let h = inner.feeds.entry(f).or_insert_with(|| Held::new(head));
            let dropped = h.head.drop_through(seq);
            if !dropped.is_empty() {
                h.forget_below(dropped.end);
                inner.drops.push((f, dropped));
                inner.touch(f);
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_seq_feed_and_time_before_the_fields() {
        let s = Stored {
            at: 0,
            body: Arc::from("{\"type\":\"packet_refunded\",\"amount\":5}"),
        };
        let f = frame(Feed::User(crate::domain::ids::UserId([0; 16])), 7, &s);
        let v: serde_json::Value = serde_json::from_str(&f).expect("json");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["feed"], "user");
        assert_eq!(v["at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["type"], "packet_refunded");
        assert_eq!(v["amount"], 5);
        let bare = Stored {
            at: 0,
            body: Arc::from("{}"),
        };
        let v: serde_json::Value = serde_json::from_str(&frame(
            Feed::User(crate::domain::ids::UserId([0; 16])),
            1,
            &bare,
        ))
        .expect("json");
        assert_eq!(v["seq"], 1);
    }
}
