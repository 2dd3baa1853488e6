//! The stored form of a membership (`m/` records): a fixed binary layout
//! instead of JSON, because memberships are most of the database (10M of
//! them for 100k groups) and sled's memory grows with the size of its files
//! (BENCHMARKS.md "Memory"). JSON records written before it still read.
//!
//! Layout, little-endian: `0xB1` (tag and version; JSON starts with `{`),
//! user id (16), role (1), joined_at (i64, 8), presence flags (1), then the
//! invitation (16) and the inviter (16) if present, then the risk if
//! present: score (u32, 4), reason bits (1), challenged (1), new account
//! (1). 43 bytes without lineage or risk, at most 82.

use super::{dec, StorageError};
use crate::domain::group::{JoinRisk, Member, Role};
use crate::domain::ids::{InviteId, UserId};
use crate::domain::risk::Reason;

const TAG: u8 = 0xB1;
const VIA: u8 = 1;
const BY: u8 = 2;
const RISK: u8 = 4;

pub(super) fn encode(m: &Member) -> Vec<u8> {
    let mut v = Vec::with_capacity(82);
    v.push(TAG);
    v.extend_from_slice(m.user_id.as_bytes());
    v.push(match m.role {
        Role::Owner => 0,
        Role::Admin => 1,
        Role::Member => 2,
    });
    v.extend_from_slice(&m.joined_at.to_le_bytes());
    let flags = (if m.via_invite.is_some() { VIA } else { 0 })
        | (if m.invited_by.is_some() { BY } else { 0 })
        | (if m.risk.is_some() { RISK } else { 0 });
    v.push(flags);
    if let Some(i) = m.via_invite {
        v.extend_from_slice(i.as_bytes());
    }
    if let Some(u) = m.invited_by {
        v.extend_from_slice(u.as_bytes());
    }
    if let Some(r) = &m.risk {
        v.extend_from_slice(&r.score.to_le_bytes());
        v.push(Reason::to_bits(&r.reasons));
        v.push(u8::from(r.challenged));
        v.push(u8::from(r.new_account));
    }
    v
}

pub(super) fn decode(k: &[u8], v: &[u8]) -> Result<Member, StorageError> {
    if v.first() != Some(&TAG) {
        return dec(k, v); // written before the binary layout
    }
    let bad =
        |why: &str| StorageError::Corrupt(String::from_utf8_lossy(&k[..2]).into(), why.into());
    let mut r = Reader { v, at: 1 };
    let user_id = UserId(r.array().ok_or_else(|| bad("short member record"))?);
    let role = match r.byte() {
        Some(0) => Role::Owner,
        Some(1) => Role::Admin,
        Some(2) => Role::Member,
        _ => return Err(bad("bad role in member record")),
    };
    let joined_at = i64::from_le_bytes(r.array().ok_or_else(|| bad("short member record"))?);
    let flags = r.byte().ok_or_else(|| bad("short member record"))?;
    let short = || bad("short member record");
    let via_invite = match flags & VIA {
        0 => None,
        _ => Some(InviteId(r.array().ok_or_else(short)?)),
    };
    let invited_by = match flags & BY {
        0 => None,
        _ => Some(UserId(r.array().ok_or_else(short)?)),
    };
    let risk = match flags & RISK {
        0 => None,
        _ => Some(JoinRisk {
            score: u32::from_le_bytes(r.array().ok_or_else(short)?),
            reasons: Reason::from_bits(r.byte().ok_or_else(short)?),
            challenged: r.byte().ok_or_else(short)? != 0,
            new_account: r.byte().ok_or_else(short)? != 0,
        }),
    };
    if r.at != v.len() {
        return Err(bad("trailing bytes in member record"));
    }
    Ok(Member {
        user_id,
        role,
        joined_at,
        via_invite,
        invited_by,
        risk,
    })
}

struct Reader<'a> {
    v: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.v.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.v.get(self.at..self.at + N)?;
        self.at += N;
        s.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(lineage: bool, risk: Option<JoinRisk>) -> Member {
        Member {
            user_id: UserId([3; 16]),
            role: Role::Admin,
            joined_at: -5 + 1_764_979_200,
            via_invite: lineage.then_some(InviteId([4; 16])),
            invited_by: lineage.then_some(UserId([5; 16])),
            risk,
        }
    }

    #[test]
    fn members_round_trip_and_json_records_still_read() {
        let risk = JoinRisk {
            score: 61,
            reasons: vec![Reason::NewAccount, Reason::InviteFailures],
            challenged: true,
            new_account: true,
        };
        for m in [
            member(false, None),
            member(true, None),
            member(true, Some(risk)),
        ] {
            let bytes = encode(&m);
            assert!(bytes.len() <= 82);
            assert!(decode(b"m/x", &bytes).is_ok_and(|d| d == m));
            let json = serde_json::to_vec(&m).unwrap_or_default();
            assert!(decode(b"m/x", &json).is_ok_and(|d| d == m));
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let full = encode(&member(true, None));
        for n in 0..full.len() {
            assert!(decode(b"m/x", &full[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut trailing = full.clone();
        trailing.push(0);
        assert!(decode(b"m/x", &trailing).is_err());
        let mut role = full;
        role[17] = 9;
        assert!(decode(b"m/x", &role).is_err());
    }
}
