//! Red packet rules: what a packet may be, how it splits, and how anyone can
//! check a lucky split afterwards. Plain functions; the packet actor and
//! routes build on them.
//!
//! **Fixed** packets split evenly: `total` must be a multiple of `count`.
//!
//! **Lucky** packets use the double-mean method, decided at claim time: with
//! `R` fen and `N` shares left and `m` the minimum share, the next share is
//! `m + r`, where `r` is uniform in `0 ..= 2 * (R - m * N) / N` (twice the
//! mean of what is left above the minimums). Every later share can still
//! get its minimum, no share is ever 0, and the last claimant takes the
//! remainder.
//!
//! **Verifiable.** At creation the server draws a 32-byte seed and shows only
//! its commitment, `blake3(seed)`. The `r` of claim `i` (from 0) is
//! `u64_le(blake3_keyed(seed, "qrgate packet share" || i as u64 BE)[..8]) mod (cap + 1)`.
//! After the packet closes the seed is revealed: anyone checks
//! `blake3(seed) == commitment` and recomputes every share with [`shares`].
//! The modulo bias is at most `(cap + 1) / 2^64`: under 2^-38 for totals
//! below 2^24 fen (167,772 yuan).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ids::{PacketId, TransferId, UserId};
use super::ledger::AccountId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Fixed,
    Lucky,
}

/// Limits from config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Smallest share, in fen (at least 1).
    pub min_share_fen: u64,
    /// Largest packet total, in fen (default 20,000 = 200 yuan).
    pub max_total_fen: u64,
    pub max_shares: u32,
    /// A sender's packets per business day, in fen.
    pub daily_max_fen: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a packet needs at least 1 share and at most {0}")]
    BadCount(u32),
    #[error("each share must be at least {min} fen: {total} fen cannot make {count} shares")]
    BelowShareMinimum { min: u64, total: u64, count: u32 },
    #[error("a packet may hold at most {0} fen")]
    AboveMaximum(u64),
    #[error("a fixed packet's total must divide evenly: {total} fen is not a multiple of {count} shares")]
    NotDivisible { total: u64, count: u32 },
    #[error(
        "this packet would exceed the daily packet total of {limit} fen ({used} fen used today)"
    )]
    DailyAmount { limit: u64, used: u64 },
    // ---- claims ----
    #[error("red packet not found")]
    NotFound,
    #[error("this red packet has expired")]
    Expired,
    #[error("every share of this red packet has been claimed")]
    Empty,
    #[error("you have already claimed a share of this red packet")]
    AlreadyClaimed,
    #[error("this red packet can only be claimed within {radius_m} m of its location; send `lat` and `lon` from there")]
    OutsideGeofence { radius_m: u32 },
    #[error(
        "claims on this red packet are paused for {retry_after_secs} s: too many claims too fast"
    )]
    Paused { retry_after_secs: u64 },
    #[error("solve the challenge before claiming a share of this campaign packet")]
    ChallengeRequired,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadCount(_) => "packet_bad_count",
            Refusal::BelowShareMinimum { .. } => "packet_share_below_minimum",
            Refusal::AboveMaximum(_) => "packet_above_maximum",
            Refusal::NotDivisible { .. } => "packet_not_divisible",
            Refusal::DailyAmount { .. } => "daily_packet_limit",
            Refusal::NotFound => "packet_not_found",
            Refusal::Expired => "packet_expired",
            Refusal::Empty => "packet_empty",
            Refusal::AlreadyClaimed => "already_claimed",
            Refusal::OutsideGeofence { .. } => "outside_geofence",
            Refusal::Paused { .. } => "packet_paused",
            Refusal::ChallengeRequired => "challenge_required",
        }
    }

    /// Seconds a client should wait before retrying, where that helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Paused { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

/// Check a new packet against the limits, in this order: share count,
/// maximum total, minimum share, divisibility (fixed), the sender's daily
/// total. Balance is checked by the ledger when the total is held.
pub fn check(
    total: u64,
    count: u32,
    mode: Mode,
    used_today: u64,
    l: &Limits,
) -> Result<(), Refusal> {
    if count == 0 || count > l.max_shares {
        return Err(Refusal::BadCount(l.max_shares));
    }
    if total > l.max_total_fen {
        return Err(Refusal::AboveMaximum(l.max_total_fen));
    }
    if total < l.min_share_fen.saturating_mul(u64::from(count)) {
        return Err(Refusal::BelowShareMinimum {
            min: l.min_share_fen,
            total,
            count,
        });
    }
    if mode == Mode::Fixed && !total.is_multiple_of(u64::from(count)) {
        return Err(Refusal::NotDivisible { total, count });
    }
    if used_today.saturating_add(total) > l.daily_max_fen {
        return Err(Refusal::DailyAmount {
            limit: l.daily_max_fen,
            used: used_today,
        });
    }
    Ok(())
}

/// The public commitment to a split seed.
pub fn commitment(seed: &[u8; 32]) -> String {
    blake3::hash(seed).to_hex().to_string()
}

/// Whether a revealed seed is the one committed to.
pub fn verify_reveal(seed: &[u8; 32], commitment_hex: &str) -> bool {
    commitment(seed) == commitment_hex.to_ascii_lowercase()
}

fn draw(seed: &[u8; 32], index: u32) -> u64 {
    let mut h = blake3::Hasher::new_keyed(seed);
    h.update(b"qrgate packet share");
    h.update(&u64::from(index).to_be_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The share of claim `index` (from 0), given what is left before it:
/// `remaining` fen over `left` shares (`left >= 1`, `remaining >= min * left`).
pub fn share(mode: Mode, seed: &[u8; 32], index: u32, remaining: u64, left: u32, min: u64) -> u64 {
    let left64 = u64::from(left.max(1));
    match mode {
        Mode::Fixed => remaining / left64,
        Mode::Lucky if left <= 1 => remaining,
        Mode::Lucky => {
            let spare = remaining.saturating_sub(min.saturating_mul(left64));
            let cap = spare.saturating_mul(2) / left64;
            min + draw(seed, index) % (cap + 1)
        }
    }
}

/// Every share of a packet, in claim order: what a verifier recomputes from
/// the revealed seed.
pub fn shares(mode: Mode, seed: &[u8; 32], total: u64, count: u32, min: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(count as usize);
    let mut remaining = total;
    for i in 0..count {
        let s = share(mode, seed, i, remaining, count - i, min);
        out.push(s);
        remaining -= s;
    }
    out
}

/// A campaign packet's referral bonus: a claimant whose own share link
/// brings a new claimant gets `bonus_fen`, paid from `budget_fen`, which is
/// held with the packet and never exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Referral {
    pub bonus_fen: u64,
    pub budget_fen: u64,
}

/// A red packet as stored. Created in one write set with the ledger hold that
/// funds it; rewritten only when it closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Packet {
    pub id: PacketId,
    /// Whose money it is: `wallet:u_…`, or `merchant:<name>` for campaigns.
    pub funder: AccountId,
    /// The user who sent it (None for campaign packets made by the operator).
    pub sender: Option<UserId>,
    /// Campaign packets are advertising and are labelled so.
    pub merchant: Option<String>,
    pub total: u64,
    pub count: u32,
    pub mode: Mode,
    pub min_share: u64,
    pub message: String,
    pub theme: Option<String>,
    pub utm: BTreeMap<String, String>,
    pub geofence: Option<Geofence>,
    pub referral: Option<Referral>,
    /// Hex of the 32-byte split seed; shown only once the packet is closed.
    pub seed: String,
    /// `blake3(seed)`, shown from the start.
    pub commitment: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The pending transfer funder -> escrow holding `held()` fen.
    pub hold: TransferId,
    /// Set once the packet closed and its hold was settled.
    pub closed: Option<Closed>,
}

/// How a packet ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub at: i64,
    /// Paid to claimants (shares) and referrers (bonuses).
    pub claimed: u64,
    pub bonuses: u64,
    /// Released back to the funder.
    pub refunded: u64,
}

impl Packet {
    /// What the hold reserves: the total plus any referral budget.
    pub fn held(&self) -> u64 {
        self.total + self.referral.map_or(0, |r| r.budget_fen)
    }

    pub fn seed_bytes(&self) -> Option<[u8; 32]> {
        parse_seed(&self.seed)
    }
}

/// A seed from its 64 hex digits.
pub fn parse_seed(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex of a seed, as stored.
pub fn seed_hex(seed: &[u8; 32]) -> String {
    seed.iter().map(|b| format!("{b:02x}")).collect()
}

/// One claim as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub user: UserId,
    /// Position in claim order, from 0 (the index the split uses).
    pub index: u32,
    pub amount: u64,
    pub at: i64,
    /// Whose share link brought this claimant (campaign packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<UserId>,
    /// The bonus paid to `referrer` for this claim.
    #[serde(default)]
    pub bonus: u64,
}

/// A packet's claims so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub claims: u32,
    pub claimed: u64,
    pub bonuses: u64,
}

impl Tally {
    pub fn add(&mut self, c: &Claim) {
        self.claims += 1;
        self.claimed += c.amount;
        self.bonuses += c.bonus;
    }
}

/// What a claim pays: the share, and the referrer's bonus (0 if none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payout {
    pub index: u32,
    pub amount: u64,
    pub bonus: u64,
}

/// Who claims, from where, through whose link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClaimAsk {
    pub user: UserId,
    pub at: Option<(f64, f64)>,
    pub referrer: Option<UserId>,
    /// The claimant looks like a farmed account (see
    /// `risk::claim_needs_challenge`) and solved no challenge for this claim.
    pub challenge_due: bool,
    /// The claimant's account is old enough to earn its referrer a bonus.
    pub earns_referral: bool,
}

/// Decide a claim, in this order: already claimed, empty, closed or expired,
/// geofence, a challenge due on a campaign packet (personal packets go to
/// people the sender knows). `claimed(u)` tells whether `u` has a share of
/// this packet; a referral bonus is paid when the referrer has one, is not
/// the claimant, the claimant's account is old enough, and the budget still
/// covers it.
pub fn decide_claim(
    p: &Packet,
    t: &Tally,
    ask: &ClaimAsk,
    claimed: impl Fn(&UserId) -> bool,
    now: i64,
) -> Result<Payout, Refusal> {
    if claimed(&ask.user) {
        return Err(Refusal::AlreadyClaimed);
    }
    if t.claims >= p.count {
        return Err(Refusal::Empty);
    }
    if p.closed.is_some() || now >= p.expires_at {
        return Err(Refusal::Expired);
    }
    if let Some(g) = &p.geofence {
        if !ask.at.is_some_and(|(lat, lon)| g.contains(lat, lon)) {
            return Err(Refusal::OutsideGeofence {
                radius_m: g.radius_m.round() as u32,
            });
        }
    }
    if ask.challenge_due && p.merchant.is_some() {
        return Err(Refusal::ChallengeRequired);
    }
    let seed = p.seed_bytes().unwrap_or([0; 32]);
    let amount = share(
        p.mode,
        &seed,
        t.claims,
        p.total - t.claimed,
        p.count - t.claims,
        p.min_share,
    );
    let bonus = match (p.referral, ask.referrer) {
        (Some(r), Some(by))
            if by != ask.user
                && ask.earns_referral
                && claimed(&by)
                && t.bonuses + r.bonus_fen <= r.budget_fen =>
        {
            r.bonus_fen
        }
        _ => 0,
    };
    Ok(Payout {
        index: t.claims,
        amount,
        bonus,
    })
}

/// The per-packet circuit breaker: more than `limit` claim attempts within one
/// second pauses claims for `pause_ms`. `limit` 0 turns it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    window_start_ms: i64,
    in_window: u32,
    pub paused_until_ms: i64,
}

/// What the breaker says about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// This attempt tripped it: report the pause.
    Tripped {
        retry_after_secs: u64,
    },
    Paused {
        retry_after_secs: u64,
    },
}

impl Breaker {
    pub fn admit(&mut self, now_ms: i64, limit: u32, pause_ms: i64) -> Gate {
        let secs = |until: i64| ((until - now_ms).max(0) as u64).div_ceil(1000).max(1);
        if now_ms < self.paused_until_ms {
            return Gate::Paused {
                retry_after_secs: secs(self.paused_until_ms),
            };
        }
        if limit == 0 {
            return Gate::Open;
        }
        if now_ms - self.window_start_ms >= 1000 {
            self.window_start_ms = now_ms;
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > limit {
            self.paused_until_ms = now_ms + pause_ms;
            self.in_window = 0;
            return Gate::Tripped {
                retry_after_secs: secs(self.paused_until_ms),
            };
        }
        Gate::Open
    }
}

/// UTM parameters a packet may carry for campaign tracking.
pub const UTM_KEYS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];

fn url_safe(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The shown fields of a new packet: the message (at most `max_chars`
/// characters, no control characters), the theme and UTM values (1 to 64 of
/// `A-Za-z0-9-_.~`, so they go on the landing URL as they are), and only
/// the known UTM keys. `Err` explains what is wrong.
pub fn check_presentation(
    message: &str,
    max_chars: usize,
    theme: Option<&str>,
    utm: &BTreeMap<String, String>,
) -> Result<(), String> {
    if message.chars().count() > max_chars {
        return Err(format!("message must be at most {max_chars} characters"));
    }
    super::group::refuse_hidden("message", message)?;
    if theme.is_some_and(|t| !url_safe(t, 64)) {
        return Err("theme must be 1 to 64 of A-Z, a-z, 0-9, -, _, . and ~".into());
    }
    for (k, v) in utm {
        if !UTM_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "utm: unknown key `{k}` (allowed: {})",
                UTM_KEYS.join(", ")
            ));
        }
        if !url_safe(v, 64) {
            return Err(format!(
                "utm.{k} must be 1 to 64 of A-Z, a-z, 0-9, -, _, . and ~"
            ));
        }
    }
    Ok(())
}

/// The landing URL a packet's QR code holds: `{base}/p/{id}` with its theme
/// and UTM parameters, so campaign tracking sees where a scan came from.
pub fn landing_url(base: &str, p: &Packet) -> String {
    let mut url = format!("{base}/p/{}", p.id);
    let mut sep = '?';
    for (k, v) in p
        .theme
        .as_ref()
        .map(|t| ("theme", t))
        .into_iter()
        .chain(p.utm.iter().map(|(k, v)| (k.as_str(), v)))
    {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(v);
        sep = '&';
    }
    url
}

/// Check a closed packet against its revealed seed: the seed matches the
/// commitment shown from the start, and every claim, in claim order, is the
/// share the split gives at its position. What an outside verifier runs.
pub fn verify_claims(
    mode: Mode,
    seed: &[u8; 32],
    commitment_hex: &str,
    total: u64,
    count: u32,
    min: u64,
    claimed: &[u64],
) -> Result<(), String> {
    if !verify_reveal(seed, commitment_hex) {
        return Err("the revealed seed does not match the commitment".into());
    }
    if claimed.len() > count as usize {
        return Err(format!(
            "{} claims listed for {count} shares",
            claimed.len()
        ));
    }
    let expected = shares(mode, seed, total, count, min);
    for (i, (got, want)) in claimed.iter().zip(expected).enumerate() {
        if *got != want {
            return Err(format!("claim {i} was {got} fen; the split gives {want}"));
        }
    }
    Ok(())
}

/// A geofence: centre and radius.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Geofence {
    pub lat: f64,
    pub lon: f64,
    /// Metres, 10 to 100,000.
    pub radius_m: f64,
}

/// A valid latitude/longitude pair.
pub fn valid_point(lat: f64, lon: f64) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
}

impl Geofence {
    pub fn valid(&self) -> bool {
        valid_point(self.lat, self.lon)
            && self.radius_m.is_finite()
            && (10.0..=100_000.0).contains(&self.radius_m)
    }

    /// Great-circle (haversine) distance test.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if !valid_point(lat, lon) {
            return false;
        }
        const EARTH_M: f64 = 6_371_008.8;
        let (p1, p2) = (self.lat.to_radians(), lat.to_radians());
        let dp = p2 - p1;
        let dl = (lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        let d = 2.0 * EARTH_M * a.sqrt().min(1.0).asin();
        d <= self.radius_m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            min_share_fen: 1,
            max_total_fen: 20_000,
            max_shares: 1000,
            daily_max_fen: 50_000,
        }
    }

    fn seed(n: u64) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn creation_checks_in_order() {
        let l = limits();
        assert_eq!(
            check(100, 0, Mode::Lucky, 0, &l),
            Err(Refusal::BadCount(1000))
        );
        assert_eq!(
            check(5000, 1001, Mode::Lucky, 0, &l),
            Err(Refusal::BadCount(1000))
        );
        assert_eq!(
            check(20_001, 10, Mode::Lucky, 0, &l),
            Err(Refusal::AboveMaximum(20_000))
        );
        assert_eq!(
            check(9, 10, Mode::Lucky, 0, &l),
            Err(Refusal::BelowShareMinimum {
                min: 1,
                total: 9,
                count: 10
            })
        );
        assert_eq!(check(10, 10, Mode::Lucky, 0, &l), Ok(()), "1 fen each");
        assert_eq!(
            check(101, 10, Mode::Fixed, 0, &l),
            Err(Refusal::NotDivisible {
                total: 101,
                count: 10
            })
        );
        assert_eq!(check(100, 10, Mode::Fixed, 0, &l), Ok(()));
        assert_eq!(
            check(101, 10, Mode::Lucky, 0, &l),
            Ok(()),
            "lucky needs no divisibility"
        );
        assert_eq!(
            check(100, 10, Mode::Lucky, 49_901, &l),
            Err(Refusal::DailyAmount {
                limit: 50_000,
                used: 49_901
            })
        );
        assert_eq!(
            check(100, 10, Mode::Lucky, 49_900, &l),
            Ok(()),
            "exactly the daily total"
        );
    }

    #[test]
    fn lucky_splits_sum_to_the_total_and_respect_the_minimum() {
        for n in 0..2000u64 {
            let s = seed(n);
            let count = 1 + (n % 50) as u32;
            let min = 1 + n % 3;
            let total = min * u64::from(count) + (n * 37) % 5000;
            let v = shares(Mode::Lucky, &s, total, count, min);
            assert_eq!(v.len(), count as usize);
            assert_eq!(v.iter().sum::<u64>(), total, "seed {n}");
            assert!(v.iter().all(|x| *x >= min), "seed {n}: {v:?}");
        }
    }

    #[test]
    fn edge_cases() {
        let s = seed(7);
        // count == total: every share is exactly 1.
        assert_eq!(shares(Mode::Lucky, &s, 5, 5, 1), vec![1; 5]);
        // 1 fen above the minimums for 2 shares: 1+2 or 2+1.
        for n in 0..200 {
            let v = shares(Mode::Lucky, &seed(n), 3, 2, 1);
            assert!(v == vec![1, 2] || v == vec![2, 1], "{v:?}");
        }
        // One share takes everything.
        assert_eq!(shares(Mode::Lucky, &s, 777, 1, 1), vec![777]);
        // Fixed: equal shares.
        assert_eq!(shares(Mode::Fixed, &s, 100, 4, 1), vec![25; 4]);
    }

    #[test]
    fn lucky_distribution_is_sane_over_many_seeds() {
        // 10 shares of 1,000 fen: each position averages about 100 fen, and
        // no share exceeds twice the mean of what was left before it.
        let (total, count, runs) = (1000u64, 10u32, 4000u64);
        let mut sums = vec![0u64; count as usize];
        for n in 0..runs {
            let v = shares(Mode::Lucky, &seed(n), total, count, 1);
            let mut remaining = total;
            for (i, x) in v.iter().enumerate() {
                let left = u64::from(count) - i as u64;
                if left > 1 {
                    assert!(
                        *x <= 1 + 2 * (remaining - left) / left,
                        "seed {n} share {i}"
                    );
                }
                remaining -= x;
                sums[i] += x;
            }
        }
        for (i, s) in sums.iter().enumerate() {
            let mean = *s as f64 / runs as f64;
            assert!((85.0..=115.0).contains(&mean), "position {i}: mean {mean}");
        }
    }

    #[test]
    fn a_revealed_seed_lets_anyone_recompute_the_split() {
        let s = seed(42);
        let c = commitment(&s);
        assert_eq!(c.len(), 64);
        assert!(verify_reveal(&s, &c));
        assert!(verify_reveal(&s, &c.to_uppercase()));
        assert!(!verify_reveal(&seed(43), &c));
        // Claim by claim (as the server does) equals all at once (as a verifier does).
        let (total, count) = (2000u64, 7u32);
        let mut remaining = total;
        let mut live = Vec::new();
        for i in 0..count {
            let x = share(Mode::Lucky, &s, i, remaining, count - i, 1);
            remaining -= x;
            live.push(x);
        }
        assert_eq!(live, shares(Mode::Lucky, &s, total, count, 1));
        assert_ne!(live, shares(Mode::Lucky, &seed(43), total, count, 1));
        // The verifier: all claims, or the first few of a packet that expired.
        assert_eq!(
            verify_claims(Mode::Lucky, &s, &c, total, count, 1, &live),
            Ok(())
        );
        assert_eq!(
            verify_claims(Mode::Lucky, &s, &c, total, count, 1, &live[..3]),
            Ok(())
        );
        let mut wrong = live.clone();
        wrong[2] += 1;
        assert!(verify_claims(Mode::Lucky, &s, &c, total, count, 1, &wrong).is_err());
        assert!(verify_claims(Mode::Lucky, &seed(43), &c, total, count, 1, &live).is_err());
    }

    fn packet(total: u64, count: u32, mode: Mode) -> Packet {
        let s = seed(1);
        Packet {
            id: PacketId([1; 16]),
            funder: AccountId::Wallet(UserId([9; 16])),
            sender: Some(UserId([9; 16])),
            merchant: None,
            total,
            count,
            mode,
            min_share: 1,
            message: String::new(),
            theme: None,
            utm: BTreeMap::new(),
            geofence: None,
            referral: None,
            seed: seed_hex(&s),
            commitment: commitment(&s),
            created_at: 0,
            expires_at: 100,
            hold: TransferId([2; 16]),
            closed: None,
        }
    }

    fn ask(n: u8) -> ClaimAsk {
        ClaimAsk {
            user: UserId([n; 16]),
            at: None,
            referrer: None,
            challenge_due: false,
            earns_referral: true,
        }
    }

    #[test]
    fn claims_pay_the_split_and_refuse_in_order() {
        let p = packet(1000, 3, Mode::Lucky);
        assert_eq!(p.seed_bytes(), Some(seed(1)));
        let mut t = Tally::default();
        let mut got = Vec::new();
        let mut claimed = std::collections::HashSet::new();
        for n in 0..3u8 {
            let pay = decide_claim(&p, &t, &ask(n), |u| claimed.contains(u), 10).unwrap();
            assert_eq!(pay.index, u32::from(n));
            claimed.insert(UserId([n; 16]));
            t.add(&Claim {
                user: UserId([n; 16]),
                index: pay.index,
                amount: pay.amount,
                at: 10,
                referrer: None,
                bonus: 0,
            });
            got.push(pay.amount);
        }
        assert_eq!(got, shares(Mode::Lucky, &seed(1), 1000, 3, 1));
        let has = |u: &UserId| claimed.contains(u);
        assert_eq!(
            decide_claim(&p, &t, &ask(0), has, 10),
            Err(Refusal::AlreadyClaimed),
            "already claimed comes first"
        );
        assert_eq!(decide_claim(&p, &t, &ask(7), has, 10), Err(Refusal::Empty));
        assert_eq!(
            decide_claim(&p, &Tally::default(), &ask(7), has, 100),
            Err(Refusal::Expired),
            "at expires_at"
        );
        let mut fenced = p.clone();
        fenced.geofence = Some(Geofence {
            lat: 39.9055,
            lon: 116.3976,
            radius_m: 500.0,
        });
        let far = ClaimAsk {
            at: Some((31.23, 121.47)),
            ..ask(7)
        };
        let near = ClaimAsk {
            at: Some((39.906, 116.398)),
            ..ask(7)
        };
        let none = Tally::default();
        assert!(matches!(
            decide_claim(&fenced, &none, &far, has, 10),
            Err(Refusal::OutsideGeofence { .. })
        ));
        assert!(matches!(
            decide_claim(&fenced, &none, &ask(7), has, 10),
            Err(Refusal::OutsideGeofence { .. })
        ));
        assert!(decide_claim(&fenced, &none, &near, has, 10).is_ok());
    }

    #[test]
    fn referral_bonus_needs_a_claimed_referrer_and_stays_within_budget() {
        let mut p = packet(100, 10, Mode::Fixed);
        p.referral = Some(Referral {
            bonus_fen: 5,
            budget_fen: 12,
        });
        let a = UserId([1; 16]);
        let has_a = |u: &UserId| *u == a;
        let via = |n: u8, by: UserId| ClaimAsk {
            referrer: Some(by),
            ..ask(n)
        };
        let mut t = Tally::default();
        let pay = decide_claim(&p, &t, &via(2, a), has_a, 1).unwrap();
        assert_eq!((pay.amount, pay.bonus), (10, 5));
        // A referrer who has not claimed earns nothing; nor does self-referral.
        let pay = decide_claim(&p, &t, &via(2, UserId([3; 16])), has_a, 1).unwrap();
        assert_eq!(pay.bonus, 0);
        let pay = decide_claim(&p, &t, &via(1, a), |_| false, 1).unwrap();
        assert_eq!(pay.bonus, 0, "self-referral");
        // A claimant too new to earn a bonus still gets its share.
        let fresh = ClaimAsk {
            earns_referral: false,
            ..via(2, a)
        };
        let pay = decide_claim(&p, &t, &fresh, has_a, 1).unwrap();
        assert_eq!((pay.amount, pay.bonus), (10, 0));
        // Budget 12 covers two bonuses of 5, not a third.
        t.bonuses = 10;
        let pay = decide_claim(&p, &t, &via(4, a), has_a, 1).unwrap();
        assert_eq!(pay.bonus, 0);
        assert_eq!(p.held(), 112);
    }

    #[test]
    fn a_challenge_is_due_on_campaign_packets_only_and_after_the_other_refusals() {
        let personal = packet(100, 1, Mode::Fixed);
        let campaign = Packet {
            merchant: Some("shop".into()),
            ..packet(100, 1, Mode::Fixed)
        };
        let risky = ClaimAsk {
            challenge_due: true,
            ..ask(2)
        };
        let none = Tally::default();
        assert!(decide_claim(&personal, &none, &risky, |_| false, 1).is_ok());
        assert!(matches!(
            decide_claim(&campaign, &none, &risky, |_| false, 1),
            Err(Refusal::ChallengeRequired)
        ));
        assert!(decide_claim(&campaign, &none, &ask(2), |_| false, 1).is_ok());
        // nobody is asked to solve anything for a share that is not there
        let full = Tally {
            claims: 1,
            ..Tally::default()
        };
        assert!(matches!(
            decide_claim(&campaign, &full, &risky, |_| false, 1),
            Err(Refusal::Empty)
        ));
    }

    #[test]
    fn presentation_and_landing_url() {
        let mut utm = BTreeMap::new();
        utm.insert("utm_source".to_string(), "poster".to_string());
        assert_eq!(
            check_presentation("Happy new year", 200, Some("spring"), &utm),
            Ok(())
        );
        assert!(check_presentation(&"x".repeat(201), 200, None, &utm).is_err());
        assert!(check_presentation("bell\u{7}", 200, None, &utm).is_err());
        assert!(check_presentation("", 200, Some("a b"), &utm).is_err());
        let mut bad = utm.clone();
        bad.insert("utm_evil".into(), "x".into());
        assert!(check_presentation("", 200, None, &bad).is_err());
        bad = utm.clone();
        bad.insert("utm_medium".into(), "a&b=c".into());
        assert!(check_presentation("", 200, None, &bad).is_err());
        let mut p = packet(100, 1, Mode::Fixed);
        assert_eq!(landing_url("http://h", &p), format!("http://h/p/{}", p.id));
        p.theme = Some("spring".into());
        p.utm = utm;
        assert_eq!(
            landing_url("http://h", &p),
            format!("http://h/p/{}?theme=spring&utm_source=poster", p.id)
        );
    }

    #[test]
    fn breaker_trips_pauses_and_reopens() {
        let mut b = Breaker::default();
        for i in 0..3 {
            assert_eq!(b.admit(1000 + i, 3, 5000), Gate::Open);
        }
        assert_eq!(
            b.admit(1010, 3, 5000),
            Gate::Tripped {
                retry_after_secs: 5
            }
        );
        assert_eq!(
            b.admit(5100, 3, 5000),
            Gate::Paused {
                retry_after_secs: 1
            }
        );
        assert_eq!(b.admit(6010, 3, 5000), Gate::Open, "pause over");
        // A new second starts a new window.
        for i in 0..3 {
            assert_eq!(b.admit(7100 + i, 3, 5000), Gate::Open);
        }
        assert_eq!(b.admit(8200, 3, 5000), Gate::Open);
        let mut off = Breaker::default();
        assert!((0..10_000).all(|i| off.admit(i, 0, 5000) == Gate::Open));
    }

    #[test]
    fn geofence() {
        // Around Tiananmen Square, 500 m.
        let g = Geofence {
            lat: 39.9055,
            lon: 116.3976,
            radius_m: 500.0,
        };
        assert!(g.valid());
        assert!(g.contains(39.9055, 116.3976));
        assert!(g.contains(39.9090, 116.3976), "about 390 m north");
        assert!(!g.contains(39.9110, 116.3976), "about 610 m north");
        assert!(!g.contains(f64::NAN, 116.0));
        assert!(!g.contains(91.0, 0.0));
        assert!(!Geofence {
            lat: 0.0,
            lon: 0.0,
            radius_m: 5.0
        }
        .valid());
        assert!(!Geofence {
            lat: 0.0,
            lon: 181.0,
            radius_m: 50.0
        }
        .valid());
    }
}
