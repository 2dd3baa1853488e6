//! Anti-abuse records: per-minute analytics, passed challenges, former
//! members (lineage that survives removals), and suspect groups.
//!
//! | prefix | key                                        | value                     |
//! |--------|--------------------------------------------|---------------------------|
//! | `an/`  | group id, scope (0, or 1 + invite id), minute (u32 BE) | [`Bucket`] (written by the group's actor only) |
//! | `cu/`  | expires at (i64 BE), challenge tag (16)    | (empty): a passed challenge, kept until it expires |
//! | `mx/`  | group id, invite id, user id               | [`FormerMember`]: the last departure of a user who came through that invitation |
//! | `gq/`  | group id                                   | [`Suspect`]               |

use serde::{Deserialize, Serialize};

use super::{dec, key, Result, Storage, WriteSet};
use crate::domain::group::FormerMember;
use crate::domain::ids::{GroupId, InviteId};
use crate::domain::risk::Bucket;

/// Whose counts a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Group,
    Invite(InviteId),
}

fn scope_key(g: GroupId, s: Scope) -> Vec<u8> {
    match s {
        Scope::Group => key(b"an/", &[g.as_bytes(), &[0]]),
        Scope::Invite(i) => key(b"an/", &[g.as_bytes(), &[1], i.as_bytes()]),
    }
}

fn bucket_key(g: GroupId, s: Scope, minute: u32) -> Vec<u8> {
    let mut k = scope_key(g, s);
    k.extend_from_slice(&minute.to_be_bytes());
    k
}

fn used_key(expires_at: i64, tag: &[u8; 16]) -> Vec<u8> {
    key(b"cu/", &[&expires_at.max(0).to_be_bytes(), tag])
}

/// A group whose recent joins were mostly flagged, listed for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suspect {
    pub group_id: GroupId,
    /// Unix seconds when it was listed.
    pub since: i64,
    /// The window that listed it.
    pub attempts: u64,
    pub flagged: u64,
    /// Set when an operator cleared the listing: the record stays so that
    /// the attempts before it no longer count, also after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<i64>,
}

impl WriteSet {
    pub fn analytics(&mut self, g: GroupId, s: Scope, minute: u32, b: &Bucket) {
        self.put_json(bucket_key(g, s, minute), b);
    }

    pub fn remove_analytics(&mut self, g: GroupId, s: Scope, minute: u32) {
        self.del(bucket_key(g, s, minute));
    }

    /// A passed challenge: refused whole if it was passed before.
    pub fn challenge_used(&mut self, expires_at: i64, tag: &[u8; 16]) {
        self.creates.push(used_key(expires_at, tag));
        self.put(used_key(expires_at, tag), Vec::new());
    }

    /// Keep a departed member's lineage (members who came through an
    /// invitation; one record per user and invitation, the last departure).
    pub fn former_member(&mut self, g: GroupId, f: &FormerMember) {
        if let Some(i) = f.member.via_invite {
            self.put_json(
                key(
                    b"mx/",
                    &[g.as_bytes(), i.as_bytes(), f.member.user_id.as_bytes()],
                ),
                f,
            );
        }
    }

    pub fn suspect(&mut self, s: &Suspect) {
        self.put_json(key(b"gq/", &[s.group_id.as_bytes()]), s);
    }
}

impl Storage {
    /// The stored buckets of one scope from minute `from` on, oldest first.
    pub fn analytics_since(&self, g: GroupId, s: Scope, from: u32) -> Result<Vec<(u32, Bucket)>> {
        let start = bucket_key(g, s, from);
        let mut end = scope_key(g, s);
        end.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut out = Vec::new();
        for kv in self.inner.tree.range(start..=end) {
            let (k, v) = kv?;
            let mut m = [0u8; 4];
            m.copy_from_slice(&k[k.len() - 4..]);
            out.push((u32::from_be_bytes(m), dec(&k, &v)?));
        }
        Ok(out)
    }

    /// Bucket keys of a group older than minute `before` (for pruning), at
    /// most `limit` keys looked at.
    pub fn stale_analytics(
        &self,
        g: GroupId,
        before: u32,
        limit: usize,
    ) -> Result<Vec<(Scope, u32)>> {
        let mut out = Vec::new();
        for kv in self
            .inner
            .tree
            .scan_prefix(key(b"an/", &[g.as_bytes()]))
            .take(limit)
        {
            let (k, _) = kv?;
            let rest = &k[3 + 16..];
            let (scope, m) = match rest.len() {
                5 => (Scope::Group, &rest[1..]),
                21 => {
                    let mut i = [0u8; 16];
                    i.copy_from_slice(&rest[1..17]);
                    (Scope::Invite(InviteId(i)), &rest[17..])
                }
                _ => continue,
            };
            let mut b = [0u8; 4];
            b.copy_from_slice(m);
            let minute = u32::from_be_bytes(b);
            if minute < before {
                out.push((scope, minute));
            }
        }
        Ok(out)
    }

    pub fn challenge_was_used(&self, expires_at: i64, tag: &[u8; 16]) -> Result<bool> {
        self.inner.tree.contains_key(used_key(expires_at, tag))
    }

    /// A write set forgetting passed challenges that expired before `now`
    /// (they cannot be answered again anyway), at most `limit` of them.
    pub fn stale_used_challenges(&self, now: i64, limit: usize) -> Result<WriteSet> {
        let end = key(b"cu/", &[&now.max(0).to_be_bytes()]);
        let mut w = WriteSet::new();
        for kv in self.inner.tree.range(b"cu/".to_vec()..end).take(limit) {
            let (k, _) = kv?;
            w.del(k.to_vec());
        }
        Ok(w)
    }

    /// Former members who came through invitation `i` of group `g`.
    pub fn former_members(&self, g: GroupId, i: InviteId) -> Result<Vec<FormerMember>> {
        self.scan(key(b"mx/", &[g.as_bytes(), i.as_bytes()]))
    }

    pub fn suspect_of(&self, g: GroupId) -> Result<Option<Suspect>> {
        self.get(key(b"gq/", &[g.as_bytes()]))
    }

    /// The groups listed now (not cleared).
    pub fn suspects(&self) -> Result<Vec<Suspect>> {
        let all: Vec<Suspect> = self.scan(b"gq/".to_vec())?;
        Ok(all.into_iter().filter(|s| s.cleared_at.is_none()).collect())
    }
}
