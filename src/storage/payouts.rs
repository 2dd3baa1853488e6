//! Payouts, account links and the large-transaction report.
//!
//! | prefix | key                                  | value                          |
//! |--------|--------------------------------------|--------------------------------|
//! | `po/`  | payout id                            | [`Payout`]                     |
//! | `pk/`  | user id, blake3(idempotency key)     | payout id                      |
//! | `pt/`  | partner_trade_no                     | payout id                      |
//! | `pu/`  | user id, created_at (i64 BE), payout id | (empty): a user's payouts    |
//! | `pj/`  | next attempt (ms, i64 BE), payout id | (empty): the provider job queue|
//! | `pd/`  | user id, day (`YYYY-MM-DD`)          | [`DayUsage`]                   |
//! | `wl/`  | user id                              | [`Link`] (tokens sealed)       |
//! | `wa/`  | user id                              | automatic payout threshold (fen) |
//! | `lr/`  | day, user id, reference, kind        | [`LargeTransaction`]           |
//! | `rc/`  | bill date                            | reconciliation report (JSON)   |

use serde::{Deserialize, Serialize};

use super::{key, Result, Storage, WriteSet};
use crate::domain::ids::{PayoutId, UserId};
use crate::domain::payout::{DayUsage, Payout};

/// A linked payment account. Tokens are sealed (AES-256-GCM under a key from
/// the data dir's secret), never stored in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub openid: String,
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
    pub linked_at: i64,
    pub refreshed_at: i64,
    /// When an earlier link to another account was replaced by this one:
    /// payouts wait `payouts.relink_cooling_hours` from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relinked_at: Option<i64>,
}

/// One entry of the large-transaction report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LargeTransaction {
    pub day: String,
    pub user_id: UserId,
    /// `single_transfer` (one transfer at or above the threshold) or
    /// `daily_total` (the user's payouts of the day reached it).
    pub kind: String,
    pub amount: u64,
    pub reference: String,
    pub at: i64,
}

fn job_key(at_ms: i64, id: PayoutId) -> Vec<u8> {
    key(b"pj/", &[&at_ms.max(0).to_be_bytes(), id.as_bytes()])
}

/// A browser link flow under way: the user it was started by, until when
/// its `state` may come back (`lk/` blake3(state)); `lku/` marks it used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkState {
    pub user: UserId,
    pub expires_at: i64,
}

impl WriteSet {
    pub fn link_state(&mut self, hash: &[u8; 32], s: &LinkState) {
        self.create_json(key(b"lk/", &[hash]), s);
    }

    /// The state came back: used once (a second use is refused as the
    /// `lku/` record exists), then forgotten.
    pub fn link_state_used(&mut self, hash: &[u8; 32], at: i64) {
        self.create_json(key(b"lku/", &[hash]), &at);
        self.del(key(b"lk/", &[hash]));
    }

    /// A payout's record; moves its job to `next_attempt_at` (or drops it
    /// once final). `previous` is the record as stored before, if any.
    pub fn payout(&mut self, p: &Payout, previous: Option<&Payout>) {
        self.put_json(key(b"po/", &[p.id.as_bytes()]), p);
        if let Some(at) = previous.and_then(|q| q.next_attempt_at) {
            if Some(at) != p.next_attempt_at {
                self.del(job_key(at, p.id));
            }
        }
        if let Some(at) = p.next_attempt_at {
            self.put(job_key(at, p.id), Vec::new());
        }
    }

    /// The indexes of a new payout: by idempotency key, by provider number,
    /// by user.
    pub fn payout_indexes(&mut self, p: &Payout, key_hash: &[u8; 32]) {
        let id = p.id.as_bytes().to_vec();
        self.create_json(key(b"pk/", &[p.user.as_bytes(), key_hash]), &p.id);
        self.put(key(b"pt/", &[p.partner_trade_no.as_bytes()]), id.clone());
        self.put(
            key(
                b"pu/",
                &[
                    p.user.as_bytes(),
                    &p.created_at.to_be_bytes(),
                    p.id.as_bytes(),
                ],
            ),
            Vec::new(),
        );
    }

    pub fn day_usage(&mut self, user: UserId, day: &str, u: &DayUsage) {
        self.put_json(key(b"pd/", &[user.as_bytes(), day.as_bytes()]), u);
    }

    /// The user's automatic payout threshold (None: off).
    pub fn auto_payout(&mut self, user: UserId, threshold: Option<u64>) {
        let k = key(b"wa/", &[user.as_bytes()]);
        match threshold {
            Some(t) => self.put_json(k, &t),
            None => self.del(k),
        }
    }

    pub fn link(&mut self, user: UserId, l: &Link) {
        self.put_json(key(b"wl/", &[user.as_bytes()]), l);
    }

    pub fn large_transaction(&mut self, t: &LargeTransaction) {
        self.put_json(
            key(
                b"lr/",
                &[
                    t.day.as_bytes(),
                    t.user_id.as_bytes(),
                    t.reference.as_bytes(),
                    t.kind.as_bytes(),
                ],
            ),
            t,
        );
    }

    pub fn reconciliation<T: Serialize>(&mut self, date: &str, report: &T) {
        self.put_json(key(b"rc/", &[date.as_bytes()]), report);
    }
}

impl Storage {
    pub fn payout(&self, id: PayoutId) -> Result<Option<Payout>> {
        self.get(key(b"po/", &[id.as_bytes()]))
    }

    pub fn payout_by_key(&self, user: UserId, key_hash: &[u8; 32]) -> Result<Option<PayoutId>> {
        self.get::<PayoutId>(key(b"pk/", &[user.as_bytes(), key_hash]))
    }

    pub fn payout_by_trade_no(&self, partner_trade_no: &str) -> Result<Option<PayoutId>> {
        Ok(self
            .get_id(key(b"pt/", &[partner_trade_no.as_bytes()]))?
            .map(PayoutId))
    }

    /// A user's payouts, newest first.
    pub fn user_payouts(&self, user: UserId, limit: usize) -> Result<Vec<Payout>> {
        let mut out = Vec::new();
        for kv in self
            .inner
            .tree
            .scan_prefix(key(b"pu/", &[user.as_bytes()]))
            .rev()
            .take(limit)
        {
            let (k, _) = kv?;
            let id = super::id16(&k, k.get(k.len().saturating_sub(16)..).unwrap_or_default())?;
            out.extend(self.payout(PayoutId(id))?);
        }
        Ok(out)
    }

    /// Payouts whose next provider call is due at or before `now_ms`.
    pub fn due_payouts(&self, now_ms: i64, limit: usize) -> Result<Vec<PayoutId>> {
        let hi = key(b"pj/", &[&now_ms.max(0).to_be_bytes(), &[0xff; 16]]);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(b"pj/".to_vec()..=hi).take(limit) {
            let (k, _) = kv?;
            let id = super::id16(&k, k.get(11..27).unwrap_or_default())?;
            out.push(PayoutId(id));
        }
        Ok(out)
    }

    /// Every payout not final (for alerts and the stuck list).
    pub fn open_payouts(&self) -> Result<Vec<Payout>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(b"pj/") {
            let (k, _) = kv?;
            let id = super::id16(&k, k.get(11..27).unwrap_or_default())?;
            out.extend(self.payout(PayoutId(id))?);
        }
        Ok(out)
    }

    pub fn all_payouts(&self) -> Result<Vec<Payout>> {
        self.scan(b"po/".to_vec())
    }

    pub fn day_usage(&self, user: UserId, day: &str) -> Result<DayUsage> {
        Ok(self
            .get(key(b"pd/", &[user.as_bytes(), day.as_bytes()]))?
            .unwrap_or_default())
    }

    pub fn auto_payout(&self, user: UserId) -> Result<Option<u64>> {
        self.get(key(b"wa/", &[user.as_bytes()]))
    }

    pub fn link_state(&self, hash: &[u8; 32]) -> Result<Option<LinkState>> {
        self.get(key(b"lk/", &[hash]))
    }

    pub fn link(&self, user: UserId) -> Result<Option<Link>> {
        self.get(key(b"wl/", &[user.as_bytes()]))
    }

    /// Every link (for the token refresher).
    pub fn links(&self) -> Result<Vec<(UserId, Link)>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(b"wl/") {
            let (k, v) = kv?;
            let u = super::id16(&k, k.get(3..19).unwrap_or_default())?;
            out.push((UserId(u), super::dec(&k, &v)?));
        }
        Ok(out)
    }

    /// Large transactions of days `from..=to` (`YYYY-MM-DD`).
    pub fn large_transactions(&self, from: &str, to: &str) -> Result<Vec<LargeTransaction>> {
        let lo = key(b"lr/", &[from.as_bytes()]);
        // Everything under `lr/{to}`: up to the next prefix (the key's
        // binary user id may start with any byte, 0xff included).
        let mut hi = key(b"lr/", &[to.as_bytes()]);
        if let Some(last) = hi.last_mut() {
            *last = last.saturating_add(1);
        }
        self.inner
            .tree
            .range(lo..hi)
            .map(|kv| {
                let (k, v) = kv?;
                super::dec(&k, &v)
            })
            .collect()
    }

    pub fn reconciliation<T: serde::de::DeserializeOwned>(&self, date: &str) -> Result<Option<T>> {
        self.get(key(b"rc/", &[date.as_bytes()]))
    }
}
