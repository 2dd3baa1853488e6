//! The members of one group as its actor keeps them in memory.
//!
//! A resident group holds every membership, and an operator may keep 100k
//! groups of 100 members resident on a small machine (the target: at most
//! 1 GiB). A [`Member`] is 96 bytes with a heap-allocated list of risk
//! reasons; a [`Roster`] keeps the same facts in a 16-byte seat per member:
//! the lineage pair (invitation, inviter), shared by every member who came
//! through the same invitation, is stored once per group and referenced by
//! index, and the risk assessment is packed into bytes (score, reason
//! bits, flags). [`Roster::get`] and [`Roster::members`] give back the full
//! [`Member`], equal to the one inserted. Seats are a sorted vector, not a
//! hash map: 100 members take 3.2 KB instead of 4.2 KB.

use super::group::{JoinRisk, Member, Role};
use super::ids::{InviteId, UserId};
use super::risk::Reason;

/// Lineage of a membership: the invitation and its creator.
type Origin = (Option<InviteId>, Option<UserId>);

const HAS_RISK: u8 = 1;
const CHALLENGED: u8 = 2;
const NEW_ACCOUNT: u8 = 4;

#[derive(Debug, Clone, Copy)]
struct Seat {
    joined_at: i64,
    /// Index into [`Roster::origins`].
    origin: u32,
    role: Role,
    score: u8,
    reasons: u8,
    flags: u8,
}

#[derive(Debug, Default)]
pub struct Roster {
    /// Sorted by user id: a group has at most 500 members (the largest
    /// tier), so a binary search and a short move on insert cost less than
    /// a hash table's empty buckets in memory.
    seats: Vec<(UserId, Seat)>,
    /// Distinct lineages; a group's members come through few invitations,
    /// and there are at most as many as members, so a linear search will do.
    origins: Vec<Origin>,
}

impl Roster {
    pub fn new(members: Vec<Member>) -> Roster {
        let mut r = Roster::default();
        let mut seats = Vec::with_capacity(members.len());
        for m in members {
            seats.push((m.user_id, r.seat(&m)));
        }
        seats.sort_unstable_by_key(|(u, _)| *u);
        seats.dedup_by_key(|(u, _)| *u);
        r.seats = seats;
        r
    }

    pub fn len(&self) -> usize {
        self.seats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    fn find(&self, user: &UserId) -> Result<usize, usize> {
        self.seats.binary_search_by_key(user, |(u, _)| *u)
    }

    pub fn contains(&self, user: &UserId) -> bool {
        self.find(user).is_ok()
    }

    pub fn role(&self, user: &UserId) -> Option<Role> {
        self.find(user).ok().map(|i| self.seats[i].1.role)
    }

    pub fn get(&self, user: &UserId) -> Option<Member> {
        self.find(user)
            .ok()
            .map(|i| self.member(*user, &self.seats[i].1))
    }

    /// Every member's user id and role, by user id.
    pub fn roles(&self) -> impl Iterator<Item = (UserId, Role)> + '_ {
        self.seats.iter().map(|(u, s)| (*u, s.role))
    }

    /// Every member, by user id.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.seats.iter().map(|(u, s)| self.member(*u, s))
    }

    /// The members whose user id lies in `from..=to`, by user id.
    pub fn members_between(&self, from: &UserId, to: &UserId) -> impl Iterator<Item = Member> + '_ {
        let lo = self.seats.partition_point(|(u, _)| u < from);
        let hi = self.seats.partition_point(|(u, _)| u <= to);
        self.seats[lo..hi.max(lo)]
            .iter()
            .map(|(u, s)| self.member(*u, s))
    }

    /// Add or replace `m` (keyed by its user id).
    pub fn insert(&mut self, m: Member) {
        let seat = self.seat(&m);
        match self.find(&m.user_id) {
            Ok(i) => self.seats[i].1 = seat,
            Err(i) => self.seats.insert(i, (m.user_id, seat)),
        }
    }

    pub fn remove(&mut self, user: &UserId) -> Option<Member> {
        let i = self.find(user).ok()?;
        let (u, seat) = self.seats.remove(i);
        Some(self.member(u, &seat))
    }

    /// Change a member's role; false if `user` is not a member.
    pub fn set_role(&mut self, user: &UserId, role: Role) -> bool {
        match self.find(user) {
            Ok(i) => {
                self.seats[i].1.role = role;
                true
            }
            Err(_) => false,
        }
    }

    fn seat(&mut self, m: &Member) -> Seat {
        let origin = self.origin((m.via_invite, m.invited_by));
        let (score, reasons, mut flags) = match &m.risk {
            // Scores are 0 to 100 (risk::assess); a larger one is kept as 255.
            Some(r) => (
                u8::try_from(r.score).unwrap_or(u8::MAX),
                Reason::to_bits(&r.reasons),
                HAS_RISK,
            ),
            None => (0, 0, 0),
        };
        if let Some(r) = &m.risk {
            flags |= if r.challenged { CHALLENGED } else { 0 };
            flags |= if r.new_account { NEW_ACCOUNT } else { 0 };
        }
        Seat {
            joined_at: m.joined_at,
            origin,
            role: m.role,
            score,
            reasons,
            flags,
        }
    }

    fn origin(&mut self, key: Origin) -> u32 {
        if let Some(i) = self.origins.iter().rposition(|o| *o == key) {
            // Lineages grow only with the joins made while resident.
            return u32::try_from(i).unwrap_or(u32::MAX);
        }
        self.origins.push(key);
        u32::try_from(self.origins.len() - 1).unwrap_or(u32::MAX)
    }

    fn member(&self, user: UserId, s: &Seat) -> Member {
        let (via_invite, invited_by) = self
            .origins
            .get(s.origin as usize)
            .copied()
            .unwrap_or((None, None));
        Member {
            user_id: user,
            role: s.role,
            joined_at: s.joined_at,
            via_invite,
            invited_by,
            risk: (s.flags & HAS_RISK != 0).then(|| JoinRisk {
                score: u32::from(s.score),
                reasons: Reason::from_bits(s.reasons),
                challenged: s.flags & CHALLENGED != 0,
                new_account: s.flags & NEW_ACCOUNT != 0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(k: u8, invite: Option<InviteId>, risk: Option<JoinRisk>) -> Member {
        Member {
            user_id: UserId([k; 16]),
            role: if k == 0 { Role::Owner } else { Role::Member },
            joined_at: 1_700_000_000 + i64::from(k),
            via_invite: invite,
            invited_by: invite.map(|_| UserId([0; 16])),
            risk,
        }
    }

    #[test]
    fn a_seat_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Seat>(), 16);
    }

    #[test]
    fn members_come_back_as_inserted() {
        let (i1, i2) = (InviteId([1; 16]), InviteId([2; 16]));
        let risk = JoinRisk {
            score: 73,
            reasons: vec![
                Reason::NewAccount,
                Reason::InviteBurst,
                Reason::SharedDevice,
            ],
            challenged: true,
            new_account: true,
        };
        let quiet = JoinRisk {
            score: 0,
            reasons: vec![],
            challenged: false,
            new_account: false,
        };
        let all = vec![
            member(0, None, None),
            member(1, Some(i1), None),
            member(2, Some(i1), Some(risk)),
            member(3, Some(i2), Some(quiet)),
        ];
        let r = Roster::new(all.clone());
        assert_eq!(r.len(), 4);
        // Two members through i1 share one lineage entry.
        assert_eq!(r.origins.len(), 3);
        for m in &all {
            let got = r.get(&m.user_id);
            assert!(got.as_ref().is_some_and(|g| *g == *m), "{got:?} != {m:?}");
        }
        let mut listed: Vec<Member> = r.members().collect();
        listed.sort_by_key(|m| m.user_id);
        assert!(listed.iter().zip(&all).all(|(a, b)| *a == *b));
    }

    #[test]
    fn insert_replaces_remove_returns_and_roles_change() {
        let mut r = Roster::new(vec![member(0, None, None), member(1, None, None)]);
        let u = UserId([1; 16]);
        assert!(r.set_role(&u, Role::Admin));
        assert_eq!(r.role(&u), Some(Role::Admin));
        assert!(!r.set_role(&UserId([9; 16]), Role::Admin));
        let mut again = member(1, Some(InviteId([5; 16])), None);
        again.role = Role::Member;
        r.insert(again.clone());
        assert_eq!(r.len(), 2);
        assert!(r.get(&u).is_some_and(|m| m == again));
        assert!(r.remove(&u).is_some_and(|m| m == again));
        assert!(!r.contains(&u));
        assert!(r.remove(&u).is_none());
    }

    #[test]
    fn an_out_of_range_score_is_kept_as_255() {
        let risk = JoinRisk {
            score: 1000,
            reasons: vec![Reason::UserJoinBurst],
            challenged: false,
            new_account: false,
        };
        let r = Roster::new(vec![member(4, None, Some(risk))]);
        let got = r.get(&UserId([4; 16])).and_then(|m| m.risk);
        assert_eq!(got.map(|r| r.score), Some(255));
    }
}
