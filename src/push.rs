//! Off the request path: the outbox consumer and the WebSocket hub.
//!
//! The consumer wakes after every durable flush, reads the outbox events up to
//! the durable watermark, pushes them to WebSocket subscribers, updates the
//! per-group and per-invitation counters, and records the new cursor together
//! with those counters in one atomic batch (so counters count each event once).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use crate::domain::events::{Event, EventKind};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::metrics;
use crate::storage::{Counters, Storage, StorageError};

/// Close code sent to a WebSocket client that fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// One connection's side of the hub.
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<Arc<str>>,
    /// Set when the hub dropped this connection for being too slow.
    pub slow: Arc<AtomicBool>,
}

struct Conn {
    user: UserId,
    tx: mpsc::Sender<Arc<str>>,
    slow: Arc<AtomicBool>,
    groups: HashSet<GroupId>,
}

#[derive(Default)]
struct HubInner {
    next: u64,
    conns: HashMap<u64, Conn>,
    by_user: HashMap<UserId, HashSet<u64>>,
    by_group: HashMap<GroupId, HashSet<u64>>,
}

/// Registry of WebSocket connections by user and by subscribed group.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<HubInner>>,
    queue: usize,
}

impl Hub {
    pub fn new(queue: usize) -> Hub {
        Hub {
            inner: Arc::new(Mutex::new(HubInner::default())),
            queue,
        }
    }

    pub fn connect(&self, user: UserId) -> Option<Subscription> {
        let mut h = self.inner.lock().ok()?;
        h.next += 1;
        let id = h.next;
        let (tx, rx) = mpsc::channel(self.queue);
        let slow = Arc::new(AtomicBool::new(false));
        h.conns.insert(
            id,
            Conn {
                user,
                tx,
                slow: Arc::clone(&slow),
                groups: HashSet::new(),
            },
        );
        h.by_user.entry(user).or_default().insert(id);
        metrics::WS_CONNECTIONS.inc();
        Some(Subscription { id, rx, slow })
    }

    pub fn subscribe(&self, conn: u64, group: GroupId) {
        if let Ok(mut h) = self.inner.lock() {
            if let Some(c) = h.conns.get_mut(&conn) {
                c.groups.insert(group);
                h.by_group.entry(group).or_default().insert(conn);
            }
        }
    }

    pub fn disconnect(&self, conn: u64) {
        if let Ok(mut h) = self.inner.lock() {
            remove(&mut h, conn);
        }
    }

    /// Queue `e` for every recipient; a full queue drops that connection.
    pub fn publish(&self, e: &Event) {
        let Ok(text) = render(e) else {
            return;
        };
        let text: Arc<str> = text.into();
        let Ok(mut h) = self.inner.lock() else {
            return;
        };
        // A blocked member stops hearing the group (they still get this event directly).
        if let EventKind::MemberBlocked { group_id, user_id } = &e.kind {
            unsubscribe_user(&mut h, *group_id, *user_id);
        }
        let mut to: HashSet<u64> = HashSet::new();
        if let Some(g) = e.group {
            if let Some(s) = h.by_group.get(&g) {
                to.extend(s);
            }
        }
        for u in &e.users {
            if let Some(s) = h.by_user.get(u) {
                to.extend(s);
            }
        }
        let mut slow = Vec::new();
        for id in to {
            if let Some(c) = h.conns.get(&id) {
                if c.tx.try_send(Arc::clone(&text)).is_err() {
                    slow.push(id);
                }
            }
        }
        for id in slow {
            if let Some(c) = h.conns.get(&id) {
                c.slow.store(true, Ordering::SeqCst);
            }
            metrics::WS_DROPPED.inc();
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

/// The JSON pushed to clients: the event's fields with `type`, `seq`, `at`.
pub fn render(e: &Event) -> Result<String, serde_json::Error> {
    let mut v = serde_json::to_value(&e.kind)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("seq".into(), e.seq.into());
        let at = chrono::DateTime::from_timestamp(e.at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        o.insert("at".into(), at.into());
    }
    serde_json::to_string(&v)
}

/// Which counters an event moves (read from storage once per id and round).
fn count(
    e: &Event,
    groups: &mut HashMap<GroupId, Counters>,
    invites: &mut HashMap<InviteId, Counters>,
    storage: &Storage,
) -> Result<(), StorageError> {
    fn bump<K: std::hash::Hash + Eq + Copy>(
        map: &mut HashMap<K, Counters>,
        id: K,
        load: impl FnOnce(K) -> Result<Counters, StorageError>,
        f: fn(&mut Counters),
    ) -> Result<(), StorageError> {
        if !map.contains_key(&id) {
            map.insert(id, load(id)?);
        }
        if let Some(c) = map.get_mut(&id) {
            f(c);
        }
        Ok(())
    }
    let g = |id| storage.group_counters(id);
    match &e.kind {
        EventKind::MemberJoined {
            group_id,
            via_invite: Some(i),
            ..
        } => {
            bump(groups, *group_id, g, |c| c.joins += 1)?;
            bump(
                invites,
                *i,
                |id| storage.invite_counters(id),
                |c| c.joins += 1,
            )?;
        }
        EventKind::JoinRequested {
            group_id,
            via_invite,
            ..
        } => {
            bump(groups, *group_id, g, |c| c.requests += 1)?;
            bump(
                invites,
                *via_invite,
                |id| storage.invite_counters(id),
                |c| c.requests += 1,
            )?;
        }
        EventKind::JoinApproved { group_id, .. } => {
            bump(groups, *group_id, g, |c| c.approvals += 1)?
        }
        EventKind::JoinRejected { group_id, .. } => {
            bump(groups, *group_id, g, |c| c.rejections += 1)?
        }
        EventKind::JoinRequestExpired { group_id, .. } => {
            bump(groups, *group_id, g, |c| c.expirations += 1)?
        }
        _ => {}
    }
    Ok(())
}

/// One consumer round: publish and count events `cursor < seq <= upto`, then
/// record counters and cursor atomically.
async fn consume(storage: &Storage, hub: &Hub, cursor: u64, upto: u64) -> Result<(), StorageError> {
    let events = storage.outbox_range(cursor, upto)?;
    let mut groups = HashMap::new();
    let mut invites = HashMap::new();
    for e in &events {
        count(e, &mut groups, &mut invites, storage)?;
    }
    let g: Vec<_> = groups.into_iter().collect();
    let i: Vec<_> = invites.into_iter().collect();
    storage.consume_outbox(cursor, upto, &g, &i).await?;
    // Published after the counters are stored, so a retried round does not
    // push the same events twice.
    for e in &events {
        hub.publish(e);
    }
    Ok(())
}

/// Run the outbox consumer until the storage's durable watch closes.
pub async fn run_outbox(storage: Storage, hub: Hub) {
    let mut durable = storage.durable_seq();
    let mut cursor = match storage.outbox_cursor() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read outbox cursor; outbox consumer not started");
            return;
        }
    };
    loop {
        let upto = *durable.borrow_and_update();
        if upto > cursor {
            match consume(&storage, &hub, cursor, upto).await {
                Ok(()) => cursor = upto,
                Err(e) => {
                    tracing::error!(error = %e, "outbox round failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        metrics::OUTBOX_LAG.set(durable.borrow().saturating_sub(cursor) as i64);
        if durable.changed().await.is_err() {
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

    #[test]
    fn routes_by_user_and_group_and_drops_slow_consumers() {
        let hub = Hub::new(2);
        let (g, other) = (GroupId([1; 16]), GroupId([2; 16]));
        let (alice, bob) = (UserId([1; 16]), UserId([2; 16]));
        let mut a = hub.connect(alice).unwrap();
        let mut b = hub.connect(bob).unwrap();
        hub.subscribe(b.id, g);
        hub.publish(&ev(g, vec![]));
        assert!(a.rx.try_recv().is_err(), "alice is not subscribed to g");
        assert!(b
            .rx
            .try_recv()
            .unwrap()
            .contains("\"type\":\"group_unbanned\""));
        hub.publish(&ev(other, vec![alice]));
        assert!(
            a.rx.try_recv().is_ok(),
            "direct events reach the user unsubscribed"
        );
        assert!(b.rx.try_recv().is_err());
        // bob stops reading: the third undelivered event overflows his queue of 2
        for _ in 0..3 {
            hub.publish(&ev(g, vec![]));
        }
        assert!(b.slow.load(Ordering::SeqCst), "slow consumer flagged");
        assert!(b.rx.try_recv().is_ok() && b.rx.try_recv().is_ok());
        assert!(
            b.rx.try_recv().is_err(),
            "and disconnected: nothing more is queued"
        );
        hub.publish(&ev(g, vec![bob]));
        assert!(b.rx.try_recv().is_err());
        assert!(!a.slow.load(Ordering::SeqCst));
        hub.disconnect(a.id);
        hub.publish(&ev(other, vec![alice]));
        assert!(a.rx.try_recv().is_err());
    }
}
