//! A group as storage holds it: what its actor is rebuilt from (the group,
//! members by bucket, invitations, requests, blocks), the lookups that find
//! a group first, the outbox's counters, and the index of requests due to
//! expire.

use super::*;

/// Everything a GroupActor needs to rebuild itself.
pub struct GroupSnapshot {
    pub group: Group,
    pub members: Vec<Member>,
    /// Members stored one record each (before the buckets): the actor
    /// moves them into buckets.
    pub legacy_members: Vec<UserId>,
    pub invites: Vec<Invite>,
    pub requests: Vec<JoinRequest>,
    pub blocks: Vec<UserId>,
    /// Listed for the operator by its join reputation.
    pub suspect: Option<Suspect>,
}

/// Counters derived from the outbox (per group and per invitation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    /// Invitations only: admissions through it (direct joins and join requests).
    #[serde(default)]
    pub uses: u64,
    pub joins: u64,
    pub requests: u64,
    pub approvals: u64,
    pub rejections: u64,
    pub expirations: u64,
}

impl Storage {
    pub fn group_by_ref(&self, r: &[u8; 8]) -> Result<Option<GroupId>> {
        Ok(self.get_id(key(b"gr/", &[r]))?.map(GroupId))
    }

    pub fn group_by_invite(&self, i: InviteId) -> Result<Option<GroupId>> {
        Ok(self.get_id(key(b"ii/", &[i.as_bytes()]))?.map(GroupId))
    }

    pub fn load_group(&self, id: GroupId) -> Result<Option<GroupSnapshot>> {
        let Some(group) = self.get::<Group>(key(b"g/", &[id.as_bytes()]))? else {
            return Ok(None);
        };
        let g = id.as_bytes();
        let blocks = self
            .inner
            .tree
            .scan_prefix(key(b"b/", &[g]))
            .map(|kv| {
                let (k, _) = kv?;
                id16(&k, &k[k.len() - 16..]).map(UserId)
            })
            .collect::<Result<Vec<_>>>()?;
        let (members, legacy_members) = self.members_of(id)?;
        Ok(Some(GroupSnapshot {
            suspect: self.suspect_of(id)?,
            group,
            members,
            legacy_members,
            invites: self.scan(key(b"i/", &[g]))?,
            requests: self.scan(key(b"r/", &[g]))?,
            blocks,
        }))
    }

    /// The members of `g` from its buckets, then those only in records of
    /// one member each (written before the buckets; a bucket's copy is
    /// newer), whose user ids come second.
    fn members_of(&self, g: GroupId) -> Result<(Vec<Member>, Vec<UserId>)> {
        let mut members = Vec::new();
        for kv in self.inner.tree.scan_prefix(key(b"mb/", &[g.as_bytes()])) {
            let (k, v) = kv?;
            members.extend(member::decode_bucket(&k, &v)?);
        }
        members.sort_unstable_by_key(|m| m.user_id);
        let in_buckets = members.len();
        let mut legacy = Vec::new();
        for kv in self.inner.tree.scan_prefix(key(b"m/", &[g.as_bytes()])) {
            let (k, v) = kv?;
            let m = member::decode(&k, &v)?;
            legacy.push(m.user_id);
            let newer = members[..in_buckets]
                .binary_search_by_key(&m.user_id, |b| b.user_id)
                .is_ok();
            if !newer {
                members.push(m);
            }
        }
        Ok((members, legacy))
    }

    /// How many records start with `prefix` (for tests that look at the
    /// stored form).
    #[doc(hidden)]
    pub fn count_prefix(&self, prefix: &[u8]) -> usize {
        self.inner.tree.scan_prefix(prefix).count()
    }

    pub fn group_counters(&self, id: GroupId) -> Result<Counters> {
        Ok(self.get(key(b"cg/", &[id.as_bytes()]))?.unwrap_or_default())
    }

    pub fn invite_counters(&self, id: InviteId) -> Result<Counters> {
        Ok(self.get(key(b"ci/", &[id.as_bytes()]))?.unwrap_or_default())
    }

    /// Groups with join requests that expire at or before `now`.
    pub fn groups_with_due_requests(&self, now: i64, limit: usize) -> Result<Vec<GroupId>> {
        let hi = key(b"rx/", &[&now.max(0).to_be_bytes(), &[0xff; 32]]);
        let mut out: Vec<GroupId> = Vec::new();
        for kv in self.inner.tree.range(b"rx/".to_vec()..=hi) {
            let (k, _) = kv?;
            let g = GroupId(id16(&k, k.get(11..27).unwrap_or_default())?);
            if out.last() != Some(&g) && !out.contains(&g) {
                out.push(g);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
