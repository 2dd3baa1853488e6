//! Per-minute analytics of one group and its invitations, owned by the
//! group's actor (the only writer of its buckets).
//!
//! Counting never waits for the disk: buckets are changed in memory and the
//! changed ones are written in the background at most once a second (and
//! before the actor is passivated). A `kill -9` loses at most the last
//! second or so of counts; no acknowledged write depends on them. The recent
//! window of each scope is loaded from storage on its first use, so an
//! invitation's signals survive passivation and restarts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::domain::ids::GroupId;
use crate::domain::risk::Bucket;
use crate::storage::{Scope, Storage, WriteSet};

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub fn minute(now: i64) -> u32 {
    u32::try_from(now.max(0) / 60).unwrap_or(u32::MAX)
}

/// A user's recent attempts through one invitation: the minute of the last
/// counted attempt, and the minute they were last counted as flagged.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub minute: u32,
    pub flagged: Option<u32>,
}

pub struct Analytics {
    group: GroupId,
    /// Minutes kept in memory behind the current one.
    keep: u32,
    buckets: HashMap<(Scope, u32), Bucket>,
    loaded: HashSet<Scope>,
    dirty: HashSet<(Scope, u32)>,
    last_flush: Instant,
}

impl Analytics {
    pub fn new(group: GroupId, keep_minutes: u32) -> Self {
        Analytics {
            group,
            keep: keep_minutes.max(1),
            buckets: HashMap::new(),
            loaded: HashSet::new(),
            dirty: HashSet::new(),
            last_flush: Instant::now(),
        }
    }

    fn ensure(&mut self, storage: &Storage, scope: Scope, now_min: u32) {
        if !self.loaded.insert(scope) {
            return;
        }
        match storage.analytics_since(self.group, scope, now_min.saturating_sub(self.keep)) {
            Ok(stored) => {
                for (m, b) in stored {
                    // Memory is newer for any minute it already holds.
                    self.buckets.entry((scope, m)).or_insert(b);
                }
            }
            // Counting must not fail a join: start from zero, say so.
            Err(e) => tracing::warn!(group = %self.group, error = %e, "analytics unreadable"),
        }
    }

    /// Change the bucket of `scope` for the minute of `now`.
    pub fn bump(&mut self, storage: &Storage, scope: Scope, now: i64, f: impl FnOnce(&mut Bucket)) {
        let m = minute(now);
        self.ensure(storage, scope, m);
        f(self.buckets.entry((scope, m)).or_default());
        self.dirty.insert((scope, m));
    }

    /// The sum of the last `minutes` minutes of `scope` (the current one
    /// included), counting only minutes after `after_minute`.
    pub fn window(
        &mut self,
        storage: &Storage,
        scope: Scope,
        now: i64,
        minutes: u32,
        after_minute: Option<u32>,
    ) -> Bucket {
        let m = minute(now);
        self.ensure(storage, scope, m);
        let from = m.saturating_sub(minutes.saturating_sub(1));
        let from = after_minute.map_or(from, |a| from.max(a.saturating_add(1)));
        let mut sum = Bucket::default();
        for x in from..=m {
            if let Some(b) = self.buckets.get(&(scope, x)) {
                sum.add(b);
            }
        }
        sum
    }

    /// The current minute's bucket of `scope`.
    pub fn current(&mut self, storage: &Storage, scope: Scope, now: i64) -> Bucket {
        let m = minute(now);
        self.ensure(storage, scope, m);
        self.buckets.get(&(scope, m)).cloned().unwrap_or_default()
    }

    /// Every minute of `scope` from `from_minute` on: storage overlaid with
    /// what memory holds (which is newer).
    pub fn series(
        &self,
        storage: &Storage,
        scope: Scope,
        from_minute: u32,
    ) -> Result<Vec<(u32, Bucket)>, crate::storage::StorageError> {
        let mut all: std::collections::BTreeMap<u32, Bucket> = storage
            .analytics_since(self.group, scope, from_minute)?
            .into_iter()
            .collect();
        for ((s, m), b) in &self.buckets {
            if *s == scope && *m >= from_minute {
                all.insert(*m, b.clone());
            }
        }
        Ok(all.into_iter().collect())
    }

    pub fn due(&self) -> bool {
        !self.dirty.is_empty() && self.last_flush.elapsed() >= FLUSH_EVERY
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The write set of every changed bucket; forgets minutes too old to matter.
    pub fn take(&mut self, now: i64) -> WriteSet {
        let mut w = WriteSet::new();
        for (s, m) in self.dirty.drain() {
            if let Some(b) = self.buckets.get(&(s, m)) {
                w.analytics(self.group, s, m, b);
            }
        }
        self.last_flush = Instant::now();
        let oldest = minute(now).saturating_sub(self.keep);
        self.buckets.retain(|(_, m), _| *m >= oldest);
        w
    }
}
