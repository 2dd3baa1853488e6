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
use crate::storage::{Counters, Storage};

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

/// Which counters an event moves.
fn count(
    e: &Event,
    groups: &mut HashMap<GroupId, Counters>,
    invites: &mut HashMap<InviteId, Counters>,
    storage: &Storage,
) {
    let mut g = |id: GroupId, f: fn(&mut Counters)| {
        if let std::collections::hash_map::Entry::Vacant(v) = groups.entry(id) {
            v.insert(storage.group_counters(id).unwrap_or_default());
        }
        if let Some(c) = groups.get_mut(&id) {
            f(c);
        }
    };
    let mut inv = |id: InviteId, f: fn(&mut Counters)| {
        if let std::collections::hash_map::Entry::Vacant(v) = invites.entry(id) {
            v.insert(storage.invite_counters(id).unwrap_or_default());
        }
        if let Some(c) = invites.get_mut(&id) {
            f(c);
        }
    };
    match &e.kind {
        EventKind::MemberJoined {
            group_id,
            via_invite: Some(i),
            ..
        } => {
            g(*group_id, |c| c.joins += 1);
            inv(*i, |c| c.joins += 1);
        }
        EventKind::JoinRequested {
            group_id,
            via_invite,
            ..
        } => {
            g(*group_id, |c| c.requests += 1);
            inv(*via_invite, |c| c.requests += 1);
        }
        EventKind::JoinApproved { group_id, .. } => g(*group_id, |c| c.approvals += 1),
        EventKind::JoinRejected { group_id, .. } => g(*group_id, |c| c.rejections += 1),
        EventKind::JoinRequestExpired { group_id, .. } => g(*group_id, |c| c.expirations += 1),
        _ => {}
    }
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
        metrics::OUTBOX_LAG.set(upto.saturating_sub(cursor) as i64);
        if upto > cursor {
            match storage.outbox_range(cursor, upto) {
                Ok(events) => {
                    let mut groups = HashMap::new();
                    let mut invites = HashMap::new();
                    for e in &events {
                        hub.publish(e);
                        count(e, &mut groups, &mut invites, &storage);
                    }
                    let g: Vec<_> = groups.into_iter().collect();
                    let i: Vec<_> = invites.into_iter().collect();
                    match storage.consume_outbox(cursor, upto, &g, &i) {
                        Ok(()) => cursor = upto,
                        Err(e) => tracing::error!(error = %e, "outbox consume failed; will retry"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "outbox read failed; will retry"),
            }
            metrics::OUTBOX_LAG.set(upto.saturating_sub(cursor) as i64);
            if cursor < upto {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        }
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
