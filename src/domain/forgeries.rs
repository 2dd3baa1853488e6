//! What the server keeps of provider notifications it refused, and the
//! nonces of those it accepted (to refuse a replay).
//!
//! A flood of forged notifications must not wash out the evidence: the
//! first one since the start is kept whatever follows, the latest few
//! beside it, and every one is counted by reason.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// One refused notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    pub at: String,
    pub peer: String,
    pub reason: String,
}

/// How many of the latest refusals are kept beside the first.
pub const LATEST: usize = 20;

#[derive(Default)]
pub struct Forgeries {
    first: Option<Rejection>,
    latest: VecDeque<Rejection>,
    total: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

/// [`Forgeries`] as the alerts route shows them.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ForgeriesView {
    /// The first refused notification since the server started.
    pub first: Option<Rejection>,
    /// Refused notifications since the start, and by reason (`signature`,
    /// `unreadable`, `rate_limited`, `replay`).
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

impl Forgeries {
    /// Count a refusal of `reason`; keep it if it is the first or among the latest.
    pub fn record(&mut self, r: Rejection, reason: &'static str) {
        self.total += 1;
        *self.by_reason.entry(reason).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(r.clone());
        }
        if self.latest.len() == LATEST {
            self.latest.pop_front();
        }
        self.latest.push_back(r);
    }

    /// Count a refusal that keeps no record (one refused unread, a replay).
    pub fn count(&mut self, reason: &'static str) {
        self.total += 1;
        *self.by_reason.entry(reason).or_default() += 1;
    }

    pub fn latest(&self) -> Vec<Rejection> {
        self.latest.iter().cloned().collect()
    }

    pub fn view(&self) -> ForgeriesView {
        ForgeriesView {
            first: self.first.clone(),
            total: self.total,
            by_reason: self
                .by_reason
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

/// Nonces of accepted notifications, each for `window` seconds: the
/// provider signs every delivery with a fresh nonce and a timestamp, and
/// one older than the window is refused for its timestamp already, so a
/// nonce seen again within it is a replay of a captured request.
pub struct Nonces {
    window: i64,
    cap: usize,
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl Nonces {
    pub fn new(window: i64, cap: usize) -> Nonces {
        Nonces {
            window,
            cap,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `nonce` is new at `now` (unix seconds); it is remembered.
    pub fn first_use(&mut self, nonce: &str, now: i64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if *at > now - self.window && self.order.len() < self.cap {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_string(), now);
        self.order.push_back((now, nonce.to_string()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u32) -> Rejection {
        Rejection {
            at: format!("t{n}"),
            peer: "10.0.0.1".into(),
            reason: format!("forged {n}"),
        }
    }

    #[test]
    fn a_flood_keeps_the_first_and_counts_everything() {
        let mut f = Forgeries::default();
        for n in 0..1000 {
            f.record(r(n), "signature");
        }
        f.count("rate_limited");
        let v = f.view();
        assert_eq!(v.first, Some(r(0)));
        assert_eq!(v.total, 1001);
        assert_eq!(v.by_reason["signature"], 1000);
        assert_eq!(v.by_reason["rate_limited"], 1);
        let latest = f.latest();
        assert_eq!(latest.len(), LATEST);
        assert_eq!(latest.last(), Some(&r(999)));
    }

    #[test]
    fn a_nonce_is_accepted_once_within_its_window() {
        let mut n = Nonces::new(300, 3);
        assert!(n.first_use("a", 1000));
        assert!(!n.first_use("a", 1100), "a replay");
        assert!(n.first_use("b", 1100));
        assert!(n.first_use("a", 1301), "the window passed");
        // At the cap the oldest is forgotten first.
        assert!(n.first_use("c", 1302));
        assert!(n.first_use("d", 1302));
        assert!(n.seen.len() <= 3);
    }
}
