//! Off the request path: the outbox consumer and the WebSocket hub.
//!
//! The consumer wakes after every durable flush, reads the outbox events up to
//! the durable watermark, pushes them to WebSocket subscribers, updates the
//! per-group and per-invitation counters, and records the new cursor together
//! with those counters in one atomic batch (so counters count each event once).

use bytestring::ByteString;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::domain::events::{Event, EventKind};
use crate::domain::feed::Feed;
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::feeds::{Appended, FeedStore};
use crate::metrics;
use crate::storage::{Counters, Storage, StorageError};

/// Close code sent to a WebSocket client that fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Close code sent when the connection's session ended (logout, revoked).
pub const CLOSE_SESSION_ENDED: u16 = 4001;

/// One event as one connection gets it: from which feed, its seq there,
/// and the frame's text (rendered once per feed and shared).
#[derive(Clone, Debug)]
pub struct Frame {
    pub feed: Feed,
    pub seq: u64,
    pub text: ByteString,
}

/// One connection's side of the hub.
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<Frame>,
    /// Set when the hub dropped this connection for being too slow.
    pub slow: Arc<AtomicBool>,
    /// Set when the hub dropped it because its session ended.
    pub ended: Arc<AtomicBool>,
}

struct Conn {
    user: UserId,
    /// The client's address, counted against `websocket.max_per_ip`.
    ip: Option<IpAddr>,
    /// blake3 of the session token it was opened with.
    session: Option<[u8; 32]>,
    tx: mpsc::Sender<Frame>,
    slow: Arc<AtomicBool>,
    ended: Arc<AtomicBool>,
    groups: HashSet<GroupId>,
}

#[derive(Default)]
struct HubInner {
    next: u64,
    conns: HashMap<u64, Conn>,
    by_user: HashMap<UserId, HashSet<u64>>,
    by_group: HashMap<GroupId, HashSet<u64>>,
    by_ip: HashMap<IpAddr, usize>,
}

/// How many WebSocket connections the hub holds at most.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub per_user: usize,
    pub per_ip: usize,
    pub total: usize,
    pub groups_per_connection: usize,
}

impl Caps {
    pub fn of(c: &crate::config::WebSocket) -> Caps {
        Caps {
            per_user: c.max_per_user,
            per_ip: c.max_per_ip,
            total: c.max_connections,
            groups_per_connection: c.max_groups_per_connection,
        }
    }
}

/// Which cap a new connection would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    User,
    Address,
    Server,
}

impl Full {
    pub fn scope(self) -> &'static str {
        match self {
            Full::User => "per user",
            Full::Address => "per address",
            Full::Server => "on this server",
        }
    }
}

/// Whether one more connection fits: the user's, the address's and all
/// open connections against their caps.
pub fn admit(caps: &Caps, user: usize, address: usize, total: usize) -> Result<(), Full> {
    if user >= caps.per_user {
        return Err(Full::User);
    }
    if address >= caps.per_ip {
        return Err(Full::Address);
    }
    if total >= caps.total {
        return Err(Full::Server);
    }
    Ok(())
}

/// Why a subscription was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeRefused {
    TooMany,
    Gone,
}

/// Registry of WebSocket connections by user and by subscribed group.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<HubInner>>,
    queue: usize,
    caps: Caps,
}

impl Hub {
    pub fn new(queue: usize, caps: Caps) -> Hub {
        Hub {
            inner: Arc::new(Mutex::new(HubInner::default())),
            queue,
            caps,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Register a connection of `user` from `ip`, if it fits the caps.
    pub fn connect(
        &self,
        user: UserId,
        session: Option<[u8; 32]>,
        ip: Option<IpAddr>,
    ) -> Result<Subscription, Full> {
        let Ok(mut h) = self.inner.lock() else {
            return Err(Full::Server);
        };
        admit(
            &self.caps,
            h.by_user.get(&user).map_or(0, HashSet::len),
            ip.and_then(|ip| h.by_ip.get(&ip)).copied().unwrap_or(0),
            h.conns.len(),
        )?;
        if let Some(ip) = ip {
            *h.by_ip.entry(ip).or_default() += 1;
        }
        h.next += 1;
        let id = h.next;
        let (tx, rx) = mpsc::channel(self.queue);
        let slow = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        h.conns.insert(
            id,
            Conn {
                user,
                ip,
                session,
                tx,
                slow: Arc::clone(&slow),
                ended: Arc::clone(&ended),
                groups: HashSet::new(),
            },
        );
        h.by_user.entry(user).or_default().insert(id);
        metrics::WS_CONNECTIONS.inc();
        Ok(Subscription {
            id,
            rx,
            slow,
            ended,
        })
    }

    /// Drop the connections whose (user, session) `ended` says ended: each
    /// closes with [`CLOSE_SESSION_ENDED`].
    pub fn end_sessions(&self, ended: impl Fn(UserId, Option<[u8; 32]>) -> bool) {
        let Ok(mut h) = self.inner.lock() else {
            return;
        };
        let gone: Vec<u64> = h
            .conns
            .iter()
            .filter(|(_, c)| ended(c.user, c.session))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(c) = h.conns.get(&id) {
                c.ended.store(true, Ordering::SeqCst);
            }
            remove(&mut h, id);
        }
    }

    /// Subscribe `conn` to `group`'s events, within the cap of groups per
    /// connection (a group it has already counts once).
    pub fn subscribe(&self, conn: u64, group: GroupId) -> Result<(), SubscribeRefused> {
        let Ok(mut h) = self.inner.lock() else {
            return Err(SubscribeRefused::Gone);
        };
        let Some(c) = h.conns.get_mut(&conn) else {
            return Err(SubscribeRefused::Gone);
        };
        if !c.groups.contains(&group) && c.groups.len() >= self.caps.groups_per_connection {
            return Err(SubscribeRefused::TooMany);
        }
        c.groups.insert(group);
        h.by_group.entry(group).or_default().insert(conn);
        Ok(())
    }

    pub fn disconnect(&self, conn: u64) {
        if let Ok(mut h) = self.inner.lock() {
            remove(&mut h, conn);
        }
    }

    /// Queue `e` for every connection of each feed it went to (`a`: its
    /// seq in each); a full queue drops that connection. A connection of
    /// a listed user that also follows the group gets both frames, each
    /// with its own feed and seq.
    pub fn publish(&self, e: &Event, a: &Appended) {
        let Ok(mut h) = self.inner.lock() else {
            return;
        };
        // A blocked member stops hearing the group (they still get this event directly).
        match &e.kind {
            EventKind::MemberBlocked { group_id, user_id }
            | EventKind::MemberRemoved {
                group_id, user_id, ..
            } => unsubscribe_user(&mut h, *group_id, *user_id),
            _ => {}
        }
        let mut slow = Vec::new();
        for (feed, seq) in &a.seqs {
            let conns = match feed {
                Feed::Group(g) => h.by_group.get(g),
                Feed::User(u) => h.by_user.get(u),
            };
            let Some(conns) = conns.filter(|c| !c.is_empty()) else {
                continue; // nobody listens: do not even render it
            };
            // Rendered once per feed; every connection gets a reference-
            // counted clone of the same bytes, sent as they are.
            let frame = Frame {
                feed: *feed,
                seq: *seq,
                text: ByteString::from(crate::feeds::frame(*feed, *seq, &a.stored)),
            };
            for id in conns {
                if let Some(c) = h.conns.get(id) {
                    if c.tx.try_send(frame.clone()).is_err() {
                        slow.push(*id);
                    }
                }
            }
        }
        for id in slow {
            if let Some(c) = h.conns.get(&id) {
                c.slow.store(true, Ordering::SeqCst);
                metrics::WS_DROPPED.inc();
            }
            remove(&mut h, id);
        }
    }
}

fn unsubscribe_user(h: &mut HubInner, g: GroupId, u: UserId) {
    let conns: Vec<u64> = h
        .by_user
        .get(&u)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    for id in conns {
        if let Some(c) = h.conns.get_mut(&id) {
            c.groups.remove(&g);
        }
        if let Some(s) = h.by_group.get_mut(&g) {
            s.remove(&id);
            if s.is_empty() {
                h.by_group.remove(&g);
            }
        }
    }
}

fn remove(h: &mut HubInner, conn: u64) {
    if let Some(c) = h.conns.remove(&conn) {
        metrics::WS_CONNECTIONS.dec();
        if let Some(ip) = c.ip {
            if let Some(n) = h.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    h.by_ip.remove(&ip);
                }
            }
        }
        if let Some(s) = h.by_user.get_mut(&c.user) {
            s.remove(&conn);
            if s.is_empty() {
                h.by_user.remove(&c.user);
            }
        }
        for g in c.groups {
            if let Some(s) = h.by_group.get_mut(&g) {
                s.remove(&conn);
                if s.is_empty() {
                    h.by_group.remove(&g);
                }
            }
        }
    }
}

/// Per-group and per-invitation counters kept by the outbox consumer.
/// Increments are held in memory and persisted with the consumer's cursor
/// (so each event counts exactly once, also across a crash) every
/// [`PERSIST_EVERY`] or as soon as events stop arriving; readers see the
/// unpersisted values too.
#[derive(Clone, Default)]
pub struct CounterStore {
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    groups: HashMap<GroupId, Counters>,
    invites: HashMap<InviteId, Counters>,
    /// Changed since the last persist.
    dirty_groups: HashSet<GroupId>,
    dirty_invites: HashSet<InviteId>,
}

/// Under load counters are persisted this often: the longer, the more
/// increments of one group merge into one write. A crash replays the
/// unpersisted events from the outbox, so nothing is lost or double counted.
/// Counters changed since the last persist: (groups, invitations).
type Dirty = (Vec<(GroupId, Counters)>, Vec<(InviteId, Counters)>);

const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// Counters kept in memory after persisting (a cache of clean values).
const CACHED_COUNTERS: usize = 200_000;
const QUIET: Duration = Duration::from_millis(50);
/// Shortest time between two consumer rounds (adds at most this to push latency).
const ROUND_EVERY: Duration = Duration::from_millis(5);

impl CounterStore {
    pub fn group(&self, storage: &Storage, id: GroupId) -> Result<Counters, StorageError> {
        match self.cached(|p| p.groups.get(&id).cloned()) {
            Some(c) => Ok(c),
            None => storage.group_counters(id),
        }
    }

    pub fn invite(&self, storage: &Storage, id: InviteId) -> Result<Counters, StorageError> {
        match self.cached(|p| p.invites.get(&id).cloned()) {
            Some(c) => Ok(c),
            None => storage.invite_counters(id),
        }
    }

    fn cached(&self, f: impl FnOnce(&Pending) -> Option<Counters>) -> Option<Counters> {
        self.pending.lock().ok().and_then(|p| f(&p))
    }

    /// Count `events`: load the counters they touch first, so a failed read
    /// changes nothing.
    fn apply(&self, storage: &Storage, events: &[Event]) -> Result<(), StorageError> {
        let mut p = self
            .pending
            .lock()
            .map_err(|_| StorageError::Io("counter lock poisoned".into()))?;
        for e in events {
            let (g, i) = touched(&e.kind);
            if let Some(g) = g {
                if let std::collections::hash_map::Entry::Vacant(v) = p.groups.entry(g) {
                    v.insert(storage.group_counters(g)?);
                }
            }
            if let Some(i) = i {
                if let std::collections::hash_map::Entry::Vacant(v) = p.invites.entry(i) {
                    v.insert(storage.invite_counters(i)?);
                }
            }
        }
        for e in events {
            let (g, i) = touched(&e.kind);
            if let Some(g) = g {
                if let Some(c) = p.groups.get_mut(&g) {
                    bump(&e.kind, c);
                    p.dirty_groups.insert(g);
                }
            }
            if let Some(i) = i {
                if let Some(c) = p.invites.get_mut(&i) {
                    bump(&e.kind, c);
                    p.dirty_invites.insert(i);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Dirty {
        match self.pending.lock() {
            Ok(p) => (
                p.dirty_groups
                    .iter()
                    .filter_map(|k| p.groups.get(k).map(|v| (*k, v.clone())))
                    .collect(),
                p.dirty_invites
                    .iter()
                    .filter_map(|k| p.invites.get(k).map(|v| (*k, v.clone())))
                    .collect(),
            ),
            Err(_) => (vec![], vec![]),
        }
    }

    /// After a persist every value is clean; keep them as a cache unless it grew too big.
    fn persisted(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.dirty_groups.clear();
            p.dirty_invites.clear();
            if p.groups.len() + p.invites.len() > CACHED_COUNTERS {
                p.groups.clear();
                p.invites.clear();
            }
        }
    }
}

/// The group and invitation whose counters an event moves.
fn touched(k: &EventKind) -> (Option<GroupId>, Option<InviteId>) {
    match k {
        EventKind::MemberJoined {
            group_id,
            via_invite: Some(i),
            ..
        } => (Some(*group_id), Some(*i)),
        EventKind::JoinRequested {
            group_id,
            via_invite,
            ..
        } => (Some(*group_id), Some(*via_invite)),
        EventKind::JoinApproved { group_id, .. }
        | EventKind::JoinRejected { group_id, .. }
        | EventKind::JoinRequestExpired { group_id, .. }
        | EventKind::JoinRequestDropped { group_id, .. } => (Some(*group_id), None),
        _ => (None, None),
    }
}

fn bump(k: &EventKind, c: &mut Counters) {
    match k {
        EventKind::MemberJoined {
            approved_request, ..
        } => {
            c.joins += 1;
            if approved_request.is_none() {
                c.uses += 1;
            }
        }
        EventKind::JoinRequested { .. } => {
            c.requests += 1;
            c.uses += 1;
        }
        EventKind::JoinApproved { .. } => c.approvals += 1,
        EventKind::JoinRejected { .. } | EventKind::JoinRequestDropped { .. } => c.rejections += 1,
        EventKind::JoinRequestExpired { .. } => c.expirations += 1,
        _ => {}
    }
}

/// Whether the outbox consumer keeps up: when it last failed to move on,
/// since when its failures run without a success, and why.
#[derive(Default)]
pub struct ConsumerHealth {
    failing: Mutex<Option<(Instant, String)>>,
}

/// A consumer failing this long without a success is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

impl ConsumerHealth {
    fn failed(&self, why: String) {
        if let Ok(mut f) = self.failing.lock() {
            match f.as_mut() {
                Some((_, w)) => *w = why,
                None => *f = Some((Instant::now(), why)),
            }
        }
    }

    fn succeeded(&self) {
        if let Ok(mut f) = self.failing.lock() {
            *f = None;
        }
    }

    /// Why the consumer is stuck, if it has failed for [`STUCK_AFTER`].
    pub fn stuck(&self) -> Option<String> {
        self.stuck_for(STUCK_AFTER)
    }

    fn stuck_for(&self, after: Duration) -> Option<String> {
        let f = self.failing.lock().ok()?;
        let (since, why) = f.as_ref()?;
        (since.elapsed() >= after).then(|| {
            format!(
                "the outbox consumer has failed for {} s: {why}",
                since.elapsed().as_secs()
            )
        })
    }
}

/// How often the consumer drops events older than the retention time,
/// and how many feeds it looks at per step (a step rides with a persist,
/// or runs on its own when no event comes for [`IDLE_TICK`]).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const SWEEP_FEEDS_PER_STEP: usize = 1000;
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Where the retention sweep stands: due from `next_at`, going on after
/// the feed `from` (a sweep in progress), or done until `next_at`.
struct Sweep {
    next_at: Instant,
    from: Option<[u8; 17]>,
}

impl Sweep {
    fn due(&self) -> bool {
        Instant::now() >= self.next_at
    }

    /// One step; what it dropped waits for the next persist.
    fn step(&mut self, feeds: &FeedStore, storage: &Storage) {
        let cutoff = crate::clock::now() - feeds.retention_secs;
        match feeds.sweep(storage, cutoff, self.from, SWEEP_FEEDS_PER_STEP) {
            Ok(Some(next)) => self.from = Some(next),
            Ok(None) => {
                self.from = None;
                self.next_at = Instant::now() + SWEEP_EVERY;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping old feed events failed; trying again later");
                self.next_at = Instant::now() + IDLE_TICK * 60;
            }
        }
    }
}

/// Run the outbox consumer until the storage's durable watch closes.
pub async fn run_outbox(
    storage: Storage,
    hub: Hub,
    counters: CounterStore,
    feeds: FeedStore,
    webhooks: Arc<crate::webhooks::Webhooks>,
    health: Arc<ConsumerHealth>,
) {
    let mut durable = storage.durable_seq();
    let mut cursor = match storage.outbox_cursor() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read outbox cursor; outbox consumer not started");
            return;
        }
    };
    // Events up to `seen` are counted (in memory) and pushed; up to `cursor` persisted.
    let mut seen = cursor;
    let mut records: Vec<u64> = Vec::new();
    let mut quarantined: Vec<crate::storage::Quarantined> = Vec::new();
    let mut hooks = crate::storage::webhooks::WebhookBatch::default();
    let mut last_persist = Instant::now();
    let mut last_round = Instant::now();
    // The first sweep at start: a server that was down for long drops
    // what expired meanwhile.
    let mut sweep = Sweep {
        next_at: Instant::now(),
        from: None,
    };
    loop {
        if *durable.borrow() > seen {
            // Under load, gather a few milliseconds of commits per round
            // rather than waking for every one of them.
            let wait = ROUND_EVERY.saturating_sub(last_round.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            last_round = Instant::now();
        }
        let upto = *durable.borrow_and_update();
        if upto > seen {
            // One all-or-nothing count and numbering for the whole round, so
            // a failed read (retried later) never leaves part of the round
            // counted or numbered: both read what they need first.
            let round = storage.outbox_range(seen, upto).and_then(|round| {
                let all: Vec<Event> = round
                    .records
                    .iter()
                    .flat_map(|(_, _, e)| e.iter().cloned())
                    .collect();
                let prepared = feeds.prepare(&storage, &all)?;
                counters.apply(&storage, &all)?;
                Ok((round, all, feeds.commit(prepared)))
            });
            match round {
                Ok((round, all, numbered)) => {
                    for q in &round.quarantined {
                        tracing::error!(seq = q.seq, error = %q.why, "an outbox event does not decode; quarantined (q/), the others go on");
                        metrics::EVENTS_QUARANTINED.inc();
                    }
                    quarantined.extend(round.quarantined);
                    // Numbered (and readable from the feeds) before any
                    // connection hears it: a client resuming from a feed
                    // misses nothing between what it read and what it hears.
                    for (e, a) in all.iter().zip(&numbered) {
                        if let Some(a) = a {
                            hub.publish(e, a);
                        }
                    }
                    for (first, n, _) in round.records {
                        records.push(first);
                        seen = first + n.saturating_sub(1);
                    }
                    seen = seen.max(upto);
                    webhooks.prepare(&all, &mut hooks);
                    health.succeeded();
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox read failed; retrying");
                    health.failed(format!("reading the outbox: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        metrics::OUTBOX_LAG.set(upto.saturating_sub(cursor) as i64);
        let quiet = if seen > cursor && last_persist.elapsed() < PERSIST_EVERY {
            match tokio::time::timeout(QUIET, durable.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => true,
            }
        } else {
            false
        };
        let sweeping = sweep.due() && upto <= seen;
        if (seen > cursor && (quiet || last_persist.elapsed() >= PERSIST_EVERY)) || sweeping {
            if sweep.due() {
                sweep.step(&feeds, &storage);
            }
            let batch = feeds.batch();
            if seen == cursor && batch.is_empty() && quarantined.is_empty() {
                // A sweep step that dropped nothing: nothing to write.
                tokio::task::yield_now().await;
                continue;
            }
            let (g, i) = counters.snapshot();
            let (queue, written) = webhooks.bound(&hooks).await;
            let persisted = storage
                .consume_outbox(crate::storage::Consumed {
                    records: &records,
                    upto: seen,
                    groups: &g,
                    invites: &i,
                    quarantined: &quarantined,
                    feeds: &batch,
                    webhooks: &written,
                })
                .await;
            match persisted {
                Ok(()) => {
                    counters.persisted();
                    feeds.persisted(&batch);
                    webhooks.persisted(&hooks, &written);
                    webhooks.after_persist(&written).await;
                    drop(queue);
                    hooks = Default::default();
                    records.clear();
                    quarantined.clear();
                    cursor = seen;
                    last_persist = Instant::now();
                    health.succeeded();
                }
                Err(e) => {
                    tracing::error!(error = %e, "persisting outbox counters failed; retrying");
                    health.failed(format!("storing the outbox cursor: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            continue;
        }
        // Woken by the next durable round, or by the tick that lets a
        // sweep go on while nothing happens.
        if let Ok(Err(_)) = tokio::time::timeout(IDLE_TICK, durable.changed()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::GroupId;

    fn ev(g: GroupId, users: Vec<UserId>) -> Event {
        Event::for_group(g, users, 0, EventKind::GroupUnbanned { group_id: g })
    }

    /// `e` as numbered in its feeds (every seq 1: the hub only routes).
    fn numbered(e: &Event) -> Appended {
        Appended {
            stored: crate::feeds::stored(e).unwrap(),
            seqs: crate::domain::feed::feeds_of(e)
                .into_iter()
                .map(|f| (f, 1))
                .collect(),
        }
    }

    fn publish(hub: &Hub, e: Event) {
        hub.publish(&e, &numbered(&e));
    }

    #[test]
    fn a_consumer_failing_without_a_success_is_stuck_until_one() {
        let h = ConsumerHealth::default();
        assert!(h.stuck_for(Duration::ZERO).is_none());
        h.failed("disk full".into());
        assert!(h.stuck().is_none(), "not for 30 s yet");
        let why = h.stuck_for(Duration::ZERO).expect("stuck");
        assert!(why.contains("disk full"), "{why}");
        h.succeeded();
        assert!(h.stuck_for(Duration::ZERO).is_none());
    }

    /// An event this release cannot decode (from a newer one, or damaged)
    /// is set aside with a record, and the events after it go on.
    #[test]
    fn an_event_that_does_not_decode_is_quarantined_and_the_rest_go_on() {
        let (_dir, rt, store) = crate::storage::test_store();
        rt.block_on(async {
            let g = GroupId([9; 16]);
            let mut w = crate::storage::WriteSet::new();
            w.event(&ev(g, vec![]));
            w.raw_event(br#"{"kind":"from_a_newer_release","group_id":1}"#);
            w.event(&ev(g, vec![]));
            store.commit(w).await.unwrap();
            let health = Arc::new(ConsumerHealth::default());
            let hub = Hub::new(8, Caps::of(&crate::config::WebSocket::default()));
            let feeds = FeedStore::new(&crate::config::Events::default());
            let consumer = tokio::spawn(run_outbox(
                store.clone(),
                hub,
                CounterStore::default(),
                feeds,
                crate::webhooks::Webhooks::new(
                    &[],
                    Default::default(),
                    store.clone(),
                    Default::default(),
                )
                .unwrap(),
                Arc::clone(&health),
            ));
            let mut done = false;
            for _ in 0..100 {
                if store.outbox_cursor().unwrap() >= 3 {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            consumer.abort();
            assert!(done, "the consumer moved past the bad event");
            let q = store.quarantined_events().unwrap();
            assert_eq!(q.len(), 1, "{q:?}");
            assert_eq!(q[0].seq, 2);
            assert!(q[0].raw.contains("from_a_newer_release"), "{q:?}");
            assert!(health.stuck().is_none());
            // The two that decode are in the group's feed, persisted with
            // the cursor, numbered 1 and 2.
            let feed = crate::domain::feed::Feed::Group(g);
            assert_eq!(
                store.feed_head(feed).unwrap(),
                crate::domain::feed::Head { last: 2, oldest: 1 }
            );
            let seqs: Vec<u64> = store
                .feed_entries(feed, 1, 10)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            assert_eq!(seqs, vec![1, 2]);
        });
    }

    #[test]
    fn connections_fit_their_caps_and_free_them_when_gone() {
        let caps = Caps {
            per_user: 2,
            per_ip: 3,
            total: 4,
            groups_per_connection: 1,
        };
        assert_eq!(admit(&caps, 2, 0, 0), Err(Full::User));
        assert_eq!(admit(&caps, 0, 3, 0), Err(Full::Address));
        assert_eq!(admit(&caps, 0, 0, 4), Err(Full::Server));
        assert_eq!(admit(&caps, 1, 2, 3), Ok(()));
        let hub = Hub::new(2, caps);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (alice, bob) = (UserId([1; 16]), UserId([2; 16]));
        let a1 = hub.connect(alice, None, Some(ip)).unwrap();
        let _a2 = hub.connect(alice, None, Some(ip)).unwrap();
        assert_eq!(hub.connect(alice, None, None).err(), Some(Full::User));
        let _b1 = hub.connect(bob, None, Some(ip)).unwrap();
        assert_eq!(hub.connect(bob, None, Some(ip)).err(), Some(Full::Address));
        let b2 = hub.connect(bob, None, None).unwrap();
        assert_eq!(
            hub.connect(UserId([3; 16]), None, None).err(),
            Some(Full::Server)
        );
        let (g, h) = (GroupId([1; 16]), GroupId([2; 16]));
        assert_eq!(hub.subscribe(b2.id, g), Ok(()));
        assert_eq!(hub.subscribe(b2.id, g), Ok(()), "the same group again");
        assert_eq!(hub.subscribe(b2.id, h), Err(SubscribeRefused::TooMany));
        hub.disconnect(a1.id);
        assert!(
            hub.connect(bob, None, Some(ip)).is_err(),
            "bob is at his cap"
        );
        assert!(
            hub.connect(alice, None, Some(ip)).is_ok(),
            "a slot came free"
        );
    }

    #[test]
    fn routes_by_user_and_group_and_drops_slow_consumers() {
        let hub = Hub::new(2, Caps::of(&crate::config::WebSocket::default()));
        let (g, other) = (GroupId([1; 16]), GroupId([2; 16]));
        let (alice, bob) = (UserId([1; 16]), UserId([2; 16]));
        let mut a = hub.connect(alice, None, None).unwrap();
        let mut b = hub.connect(bob, None, None).unwrap();
        hub.subscribe(b.id, g).unwrap();
        publish(&hub, ev(g, vec![]));
        assert!(a.rx.try_recv().is_err(), "alice is not subscribed to g");
        assert!(b
            .rx
            .try_recv()
            .unwrap()
            .text
            .contains("\"type\":\"group_unbanned\""));
        publish(&hub, ev(other, vec![alice]));
        assert!(
            a.rx.try_recv().is_ok(),
            "direct events reach the user unsubscribed"
        );
        assert!(b.rx.try_recv().is_err());
        // bob stops reading: the third undelivered event overflows his queue of 2
        for _ in 0..3 {
            publish(&hub, ev(g, vec![]));
        }
        assert!(b.slow.load(Ordering::SeqCst), "slow consumer flagged");
        assert!(b.rx.try_recv().is_ok() && b.rx.try_recv().is_ok());
        assert!(
            b.rx.try_recv().is_err(),
            "and disconnected: nothing more is queued"
        );
        publish(&hub, ev(g, vec![bob]));
        assert!(b.rx.try_recv().is_err());
        assert!(!a.slow.load(Ordering::SeqCst));
        hub.disconnect(a.id);
        publish(&hub, ev(other, vec![alice]));
        assert!(a.rx.try_recv().is_err());
    }
}
