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
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadCount(_) => "packet_bad_count",
            Refusal::BelowShareMinimum { .. } => "packet_share_below_minimum",
            Refusal::AboveMaximum(_) => "packet_above_maximum",
            Refusal::NotDivisible { .. } => "packet_not_divisible",
            Refusal::DailyAmount { .. } => "daily_packet_limit",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Refusal::DailyAmount { .. } => 409,
            _ => 422,
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
        for r in [Refusal::BadCount(1), Refusal::AboveMaximum(1)] {
            assert!(r.code().starts_with("packet_") && r.status() == 422);
        }
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
