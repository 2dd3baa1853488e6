//! Event feeds: where each event is kept for the people who were not
//! connected when it happened, and the numbering clients resume from.
//!
//! Every event addressed to users goes to each of their user feeds; every
//! event of a group goes to the group's feed (not copied into members'
//! feeds). Each feed numbers its events 1, 2, 3, ... (`seq`); it keeps the
//! latest `max` of them, and events younger than the retention time.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::events::Event;
use super::ids::{GroupId, UserId};

/// One feed: a user's or a group's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Feed {
    User(UserId),
    Group(GroupId),
}

impl Feed {
    /// 17 bytes: `u` or `g`, then the id.
    pub fn key(&self) -> [u8; 17] {
        let mut k = [0u8; 17];
        let (tag, id) = match self {
            Feed::User(u) => (b'u', u.as_bytes()),
            Feed::Group(g) => (b'g', g.as_bytes()),
        };
        k[0] = tag;
        k[1..].copy_from_slice(id);
        k
    }

    pub fn from_key(k: &[u8]) -> Option<Feed> {
        let id: [u8; 16] = k.get(1..17)?.try_into().ok()?;
        match k.first()? {
            b'u' => Some(Feed::User(UserId(id))),
            b'g' => Some(Feed::Group(GroupId(id))),
            _ => None,
        }
    }
}

/// What frames name: `user`, or `group:<id>`.
impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feed::User(_) => f.write_str("user"),
            Feed::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// The feeds an event goes to: its group's first, then each listed user's
/// (once each).
pub fn feeds_of(e: &Event) -> Vec<Feed> {
    let mut out = Vec::with_capacity(1 + e.users.len());
    if let Some(g) = e.group {
        out.push(Feed::Group(g));
    }
    for u in &e.users {
        let f = Feed::User(*u);
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// Where a feed stands: its last seq, and the first it still holds
/// (`last + 1` when it holds none).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Head {
    pub last: u64,
    pub oldest: u64,
}

impl Default for Head {
    fn default() -> Self {
        Head { last: 0, oldest: 1 }
    }
}

/// `after` asks for events the feed no longer holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expired {
    /// The oldest seq the feed still holds.
    pub oldest_seq: u64,
}

impl Head {
    /// Number the next event; when the feed then holds more than `max`,
    /// the seqs that drop out of it.
    pub fn push(&mut self, max: u64) -> (u64, std::ops::Range<u64>) {
        self.last += 1;
        let first = self.oldest;
        let keep_from = self.last.saturating_sub(max.max(1)) + 1;
        self.oldest = self.oldest.max(keep_from);
        (self.last, first..self.oldest)
    }

    /// Drop every event up to and including `seq` (they are too old).
    pub fn drop_through(&mut self, seq: u64) -> std::ops::Range<u64> {
        let first = self.oldest;
        self.oldest = self.oldest.max(seq.min(self.last) + 1);
        first..self.oldest
    }

    /// The first seq to answer for a reader that has seen up to `after`
    /// (`None`: from the oldest held). Refused when events after `after`
    /// were dropped already.
    pub fn start(&self, after: Option<u64>) -> Result<u64, Expired> {
        match after {
            None => Ok(self.oldest),
            Some(a) if a.saturating_add(1) < self.oldest => Err(Expired {
                oldest_seq: self.oldest,
            }),
            Some(a) => Ok(a.saturating_add(1)),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.last.to_be_bytes());
        b[8..].copy_from_slice(&self.oldest.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Head> {
        let last = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let oldest = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Head { last, oldest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventKind;

    #[test]
    fn a_feed_numbers_from_one_and_keeps_the_latest_max() {
        let mut h = Head::default();
        assert_eq!(h.start(None), Ok(1));
        assert_eq!(h.start(Some(0)), Ok(1));
        assert_eq!(h.push(3), (1, 1..1));
        assert_eq!(h.push(3), (2, 1..1));
        assert_eq!(h.push(3), (3, 1..1));
        assert_eq!(h.push(3), (4, 1..2));
        assert_eq!(h, Head { last: 4, oldest: 2 });
        assert_eq!(h.start(None), Ok(2));
        assert_eq!(h.start(Some(1)), Ok(2));
        assert_eq!(h.start(Some(0)), Err(Expired { oldest_seq: 2 }));
        // A reader ahead of the feed (another node applied more) gets nothing yet.
        assert_eq!(h.start(Some(9)), Ok(10));
        assert_eq!(Head::from_bytes(&h.to_bytes()), Some(h));
    }

    #[test]
    fn dropping_by_age_never_passes_the_last_event() {
        let mut h = Head::default();
        for _ in 0..5 {
            h.push(100);
        }
        assert_eq!(h.drop_through(2), 1..3);
        assert_eq!(h.drop_through(1), 3..3);
        assert_eq!(h.drop_through(99), 3..6);
        assert_eq!(h, Head { last: 5, oldest: 6 });
        assert_eq!(h.start(Some(5)), Ok(6));
        assert_eq!(h.start(Some(4)), Err(Expired { oldest_seq: 6 }));
        assert_eq!(h.push(100), (6, 6..6));
    }

    #[test]
    fn an_event_goes_to_its_group_and_each_user_once() {
        let (g, a, b) = (GroupId([1; 16]), UserId([2; 16]), UserId([3; 16]));
        let e = Event::for_group(
            g,
            vec![a, b, a],
            0,
            EventKind::GroupUnbanned { group_id: g },
        );
        assert_eq!(
            feeds_of(&e),
            vec![Feed::Group(g), Feed::User(a), Feed::User(b)]
        );
        for f in feeds_of(&e) {
            assert_eq!(Feed::from_key(&f.key()), Some(f));
        }
        assert_eq!(Feed::User(a).to_string(), "user");
        assert!(Feed::Group(g).to_string().starts_with("group:g_"));
    }
}
