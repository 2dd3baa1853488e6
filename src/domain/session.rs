//! Sessions: who a bearer token speaks for, until when, and whether it was
//! revoked. Rules only; the record lives in storage (`s/`), the cache in
//! the gateway.

use crate::domain::ids::UserId;

const DAY: i64 = 86_400;

/// A session as stored (the token itself is never kept, only its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    /// Milliseconds since the epoch (a revocation at a millisecond ends the
    /// sessions created before it, not one issued right after).
    pub created_at_ms: i64,
    /// Seconds since the epoch; `None` for sessions from before expiry
    /// existed (they get one at their next use).
    pub expires_at: Option<i64>,
}

/// What a request with this session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid; when `Some`, the expiry slides to this (one durable write).
    Valid(Option<i64>),
    /// Past its expiry, or created before its user's sessions were revoked.
    Ended,
}

/// Check `s` at `now` (seconds) for a lifetime of `lifetime` seconds, its
/// user's sessions revoked before `not_before_ms`. The expiry slides to
/// `now + lifetime`, but moves at most once a day, so that a request pays a
/// durable write for it at most once a day per session.
pub fn check(s: &Session, now: i64, lifetime: i64, not_before_ms: i64) -> Verdict {
    if s.created_at_ms < not_before_ms {
        return Verdict::Ended;
    }
    match s.expires_at {
        Some(at) if now >= at => Verdict::Ended,
        Some(at) if at - now > lifetime - DAY.min(lifetime / 2) => Verdict::Valid(None),
        _ => Verdict::Valid(Some(now + lifetime)),
    }
}

/// The stored form: user (16) | created_at_ms (i64 BE) | expires_at (i64
/// BE). Records from before expiry are the user id alone.
pub fn encode(s: &Session) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(s.user.as_bytes());
    v.extend_from_slice(&s.created_at_ms.to_be_bytes());
    v.extend_from_slice(&s.expires_at.unwrap_or(0).to_be_bytes());
    v
}

pub fn decode(b: &[u8]) -> Option<Session> {
    let user = UserId(b.get(..16)?.try_into().ok()?);
    if b.len() == 16 {
        return Some(Session {
            user,
            created_at_ms: 0,
            expires_at: None,
        });
    }
    if b.len() != 32 {
        return None;
    }
    let i = |r: std::ops::Range<usize>| -> Option<i64> {
        Some(i64::from_be_bytes(b.get(r)?.try_into().ok()?))
    };
    Some(Session {
        user,
        created_at_ms: i(16..24)?,
        expires_at: Some(i(24..32)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: i64 = 30 * DAY;

    fn session(created_ms: i64, expires: Option<i64>) -> Session {
        Session {
            user: UserId([1; 16]),
            created_at_ms: created_ms,
            expires_at: expires,
        }
    }

    #[test]
    fn expiry_slides_at_most_once_a_day_and_ends() {
        let t = 1_800_000_000;
        let s = session(t * 1000, Some(t + LIFE));
        assert_eq!(check(&s, t, LIFE, 0), Verdict::Valid(None));
        assert_eq!(
            check(&s, t + DAY - 1, LIFE, 0),
            Verdict::Valid(None),
            "not within a day"
        );
        assert_eq!(
            check(&s, t + DAY + 1, LIFE, 0),
            Verdict::Valid(Some(t + DAY + 1 + LIFE))
        );
        assert_eq!(check(&s, t + LIFE, LIFE, 0), Verdict::Ended);
        assert_eq!(check(&s, t + LIFE + 5, LIFE, 0), Verdict::Ended);
        // A short lifetime slides at half of it.
        let s = session(0, Some(t + 3600));
        assert_eq!(check(&s, t + 1000, 3600, 0), Verdict::Valid(None));
        assert_eq!(check(&s, t + 2000, 3600, 0), Verdict::Valid(Some(t + 5600)));
    }

    #[test]
    fn revocation_ends_sessions_created_before_it_only() {
        let s = session(5_000, Some(i64::MAX));
        assert_eq!(check(&s, 10, LIFE, 5_001), Verdict::Ended);
        assert_eq!(check(&s, 10, LIFE, 5_000), Verdict::Valid(None));
    }

    #[test]
    fn records_round_trip_and_old_ones_get_an_expiry_at_first_use() {
        let s = session(123_456, Some(789));
        assert_eq!(decode(&encode(&s)), Some(s));
        let old = decode(&[1; 16]).unwrap();
        assert_eq!(old.expires_at, None);
        assert_eq!(check(&old, 100, LIFE, 0), Verdict::Valid(Some(100 + LIFE)));
        assert_eq!(
            check(&old, 100, LIFE, 1),
            Verdict::Ended,
            "revocation ends them too"
        );
        assert_eq!(decode(&[1; 20]), None);
    }
}
