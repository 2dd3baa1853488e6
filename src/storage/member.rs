//! The stored form of memberships: a fixed binary layout instead of JSON,
//! kept by bucket, [`BUCKETS`] records per group at most (`mb/` group id,
//! bucket), because memberships are most of the database (10M of them for
//! 100k groups) and sled holds a page-table entry and recovery state in
//! memory for every 16 records it stores (its leaves split at 16 items):
//! one record per membership cost 350 MiB of resident memory at start
//! with 10M memberships (BENCHMARKS.md "Memory").
//!
//! A bucket holds the members whose user id's first byte has the bucket's
//! number in its high four bits: a contiguous range of the group's roster
//! (sorted by user id), and since ids are random, about a sixteenth of the
//! group each (about 31 of 500 on average). A join or a removal rewrites its
//! bucket: about 2 KB at 500 members (66 bytes a record at most).
//!
//! Records of one membership each (`m/` group id, user id; binary or JSON),
//! written before the buckets, still read: the group moves them into
//! buckets when it is next activated (`GroupSnapshot::legacy_members`).
//!
//! Bucket layout: `0xB2` (tag and version), then per member its record's
//! length (1 byte) and the record.
//!
//! Member record layout,
//! little-endian: `0xB1` (tag and version; JSON starts with `{`),
//! user id (16), role (1), joined_at (i64, 8), presence flags (1), then the
//! invitation (16) and the inviter (16) if present, then the risk if
//! present: score (u32, 4), reason bits (1), challenged (1), new account
//! (1). 27 bytes without lineage or risk, 59 with lineage, at most 66.

use super::{dec, StorageError};
use crate::domain::group::{JoinRisk, Member, Role};
use crate::domain::ids::{InviteId, UserId};
use crate::domain::risk::Reason;

const TAG: u8 = 0xB1;
const BUCKET_TAG: u8 = 0xB2;

/// Buckets per group.
pub const BUCKETS: u8 = 16;

/// The bucket holding `u`'s membership.
pub(super) fn bucket_of(u: &UserId) -> u8 {
    u.as_bytes()[0] >> 4
}

/// The first and last user id of bucket `b`.
pub(super) fn bucket_range(b: u8) -> (UserId, UserId) {
    let (mut lo, mut hi) = ([0; 16], [0xff; 16]);
    lo[0] = b << 4;
    hi[0] = (b << 4) | 0x0f;
    (UserId(lo), UserId(hi))
}

pub(super) fn encode_bucket(members: impl Iterator<Item = Member>) -> Vec<u8> {
    let mut v = vec![BUCKET_TAG];
    for m in members {
        let r = encode(&m);
        // A record is at most 66 bytes (see above).
        v.push(u8::try_from(r.len()).unwrap_or(u8::MAX));
        v.extend_from_slice(&r);
    }
    v
}

pub(super) fn decode_bucket(k: &[u8], v: &[u8]) -> Result<Vec<Member>, StorageError> {
    let bad = |why: &str| StorageError::Corrupt("mb/".into(), why.into());
    if v.first() != Some(&BUCKET_TAG) {
        return Err(bad("not a member bucket"));
    }
    let mut out = Vec::new();
    let mut at = 1;
    while at < v.len() {
        let n = usize::from(v[at]);
        let record = v
            .get(at + 1..at + 1 + n)
            .ok_or_else(|| bad("short member bucket"))?;
        if record.first() != Some(&TAG) {
            return Err(bad("bad member record in bucket"));
        }
        out.push(decode(k, record)?);
        at += 1 + n;
    }
    Ok(out)
}
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
            assert!(bytes.len() <= 66);
            assert!(decode(b"m/x", &bytes).is_ok_and(|d| d == m));
            let json = serde_json::to_vec(&m).unwrap_or_default();
            assert!(decode(b"m/x", &json).is_ok_and(|d| d == m));
        }
    }

    #[test]
    fn buckets_round_trip_and_cover_every_id_once() {
        let risk = JoinRisk {
            score: 7,
            reasons: vec![Reason::SharedDevice],
            challenged: false,
            new_account: true,
        };
        let members = vec![member(true, Some(risk)), member(false, None)];
        let bytes = encode_bucket(members.clone().into_iter());
        assert!(decode_bucket(b"mb/x", &bytes).is_ok_and(|d| d == members));
        assert!(
            decode_bucket(b"mb/x", &encode_bucket(std::iter::empty())).is_ok_and(|d| d.is_empty())
        );
        for first in 0..=255u8 {
            let mut id = [0x5a; 16];
            id[0] = first;
            let b = bucket_of(&UserId(id));
            let (lo, hi) = bucket_range(b);
            assert!(b < BUCKETS && lo <= UserId(id) && UserId(id) <= hi);
            for other in (0..BUCKETS).filter(|o| *o != b) {
                let (lo, hi) = bucket_range(other);
                assert!(UserId(id) < lo || hi < UserId(id));
            }
        }
    }

    /// Members stored one record each (binary or JSON, before the
    /// buckets) still load, a bucket's copy wins over one, and once the
    /// group's roster is written by bucket and those records dropped,
    /// nothing is left of them.
    #[test]
    fn records_of_one_member_each_read_until_moved_into_buckets() {
        use super::super::{key, WriteSet};
        use crate::domain::group::test_group;
        use crate::domain::ids::GroupId;
        use crate::domain::roster::Roster;

        let (_dir, rt, store) = super::super::test_store();
        let g = GroupId([9; 16]);
        let at = |first: u8, role: Role| Member {
            user_id: UserId([first; 16]),
            role,
            ..member(true, None)
        };
        let (old, moved, newer) = (
            at(0x11, Role::Owner),
            at(0xe0, Role::Member),
            at(0xe0, Role::Admin),
        );
        let legacy = |m: &Member| key(b"m/", &[g.as_bytes(), m.user_id.as_bytes()]);
        let mut w = WriteSet::new();
        w.group(&test_group(g, old.user_id));
        w.put(legacy(&old), encode(&old));
        w.put(legacy(&moved), serde_json::to_vec(&moved).unwrap());
        w.put(
            key(b"mb/", &[g.as_bytes(), &[bucket_of(&newer.user_id)]]),
            encode_bucket([newer.clone()].into_iter()),
        );
        rt.block_on(store.commit(w)).unwrap();

        let snap = store.load_group(g).unwrap().unwrap();
        let mut members = snap.members.clone();
        members.sort_unstable_by_key(|m| m.user_id);
        assert_eq!(members, vec![old.clone(), newer.clone()]);
        assert_eq!(snap.legacy_members.len(), 2);

        let mut w = WriteSet::new();
        w.roster(g, &Roster::new(snap.members));
        w.drop_member_records(g, &snap.legacy_members);
        rt.block_on(store.commit(w)).unwrap();
        let snap = store.load_group(g).unwrap().unwrap();
        assert_eq!(snap.members, vec![old, newer]);
        assert!(snap.legacy_members.is_empty());
        let left = store.inner.tree.scan_prefix(key(b"m/", &[g.as_bytes()]));
        assert_eq!(left.count(), 0);
        let buckets = store.inner.tree.scan_prefix(key(b"mb/", &[g.as_bytes()]));
        assert_eq!(buckets.count(), 2);
    }

    #[test]
    fn damaged_buckets_are_errors_not_panics() {
        let full = encode_bucket([member(true, None), member(false, None)].into_iter());
        // Cut inside a record (a cut between two records is a valid bucket).
        let between = 2 + encode(&member(true, None)).len();
        for n in (0..full.len()).filter(|n| *n != 1 && *n != between) {
            assert!(
                decode_bucket(b"mb/x", &full[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        let mut json = vec![BUCKET_TAG, 2];
        json.extend_from_slice(b"{}");
        assert!(decode_bucket(b"mb/x", &json).is_err());
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
