//! The join decision: one pure function from what the group knows to an
//! admission or a refusal. The GroupActor gathers the facts, calls [`decide`],
//! then applies its rate limiters and persists the outcome.
//!
//! Order of checks (first failing check wins):
//! 1. the invitation exists in the group and the token is byte-for-byte the
//!    issued one (keyed tag)                                 -> `invalid_token`
//! 2. not expired                                            -> `invite_expired`
//! 3. not revoked                                            -> `invite_revoked`
//! 4. uses left                                              -> `invite_exhausted`
//! 5. group active                                           -> `group_banned`
//! 6. token epoch is the group's (not burned by a past ban)  -> `invite_revoked`
//! 7. not already a member                                   -> `already_member`
//! 8. no pending request                                     -> `request_pending`
//! 9. not blocked by the group                               -> `blocked`
//! 10. a seat is free (members + pending requests < limit)   -> `group_full`
//!
//! then (in the actor) the per-group and per-user rate limits (`rate_limited`),
//! then a grant, or a join request when the group requires approval.

use super::group::{Group, GroupStatus, Invite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InvalidToken,
    Expired,
    Revoked,
    Exhausted,
    GroupBanned,
    AlreadyMember,
    RequestPending,
    Blocked,
    GroupFull,
    /// Not from [`decide`]: the invitation's step-up stage paused it (see `risk`).
    Paused,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "invalid_token",
            Refusal::Expired => "invite_expired",
            Refusal::Revoked => "invite_revoked",
            Refusal::Exhausted => "invite_exhausted",
            Refusal::GroupBanned => "group_banned",
            Refusal::AlreadyMember => "already_member",
            Refusal::RequestPending => "request_pending",
            Refusal::Blocked => "blocked",
            Refusal::GroupFull => "group_full",
            Refusal::Paused => "invite_paused",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "the invitation token is malformed, forged or unknown",
            Refusal::Expired => "the invitation has expired",
            Refusal::Revoked => "the invitation has been revoked",
            Refusal::Exhausted => "the invitation has been used its maximum number of times",
            Refusal::GroupBanned => "the group has been banned",
            Refusal::AlreadyMember => "you are already a member of this group",
            Refusal::RequestPending => "your join request is already waiting for approval",
            Refusal::Blocked => "you have been blocked by this group",
            Refusal::GroupFull => "the group has reached its member limit",
            Refusal::Paused => "this invitation is paused after a wave of suspicious joins; the group's moderators can reset it",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Become a member now.
    Grant,
    /// Enter the approval queue, holding a seat until decided or expired.
    Request,
}

/// Everything the decision depends on.
pub struct Facts<'a> {
    pub now: i64,
    /// The invitation named by the token, if the group has it.
    pub invite: Option<&'a Invite>,
    /// Whether the presented token's keyed tag equals the invitation's.
    pub tag_matches: bool,
    pub token_epoch: u32,
    pub group: &'a Group,
    pub members: u32,
    pub pending: u32,
    pub is_member: bool,
    pub has_pending_request: bool,
    pub is_blocked: bool,
}

/// Seats still free: members and pending requests both hold one.
pub fn free_seats(limit: u32, members: u32, pending: u32) -> u32 {
    limit.saturating_sub(members.saturating_add(pending))
}

pub fn decide(f: &Facts) -> Result<Admission, Refusal> {
    let invite = match f.invite {
        Some(i) if f.tag_matches => i,
        _ => return Err(Refusal::InvalidToken),
    };
    if f.now >= invite.expires_at {
        return Err(Refusal::Expired);
    }
    if invite.revoked {
        return Err(Refusal::Revoked);
    }
    if invite.max_uses.is_some_and(|m| invite.uses >= m) {
        return Err(Refusal::Exhausted);
    }
    if f.group.status == GroupStatus::Banned {
        return Err(Refusal::GroupBanned);
    }
    if f.token_epoch != f.group.epoch || invite.epoch != f.group.epoch {
        return Err(Refusal::Revoked);
    }
    if f.is_member {
        return Err(Refusal::AlreadyMember);
    }
    if f.has_pending_request {
        return Err(Refusal::RequestPending);
    }
    if f.is_blocked {
        return Err(Refusal::Blocked);
    }
    if free_seats(f.group.member_limit, f.members, f.pending) == 0 {
        return Err(Refusal::GroupFull);
    }
    Ok(if f.group.approval_required {
        Admission::Request
    } else {
        Admission::Grant
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::group::GroupStatus;
    use crate::domain::ids::{GroupId, InviteId, UserId};

    fn group() -> Group {
        crate::domain::group::test_group(GroupId([1; 16]), UserId([2; 16]))
    }

    fn invite() -> Invite {
        Invite {
            id: InviteId([3; 16]),
            group_id: GroupId([1; 16]),
            creator_id: UserId([2; 16]),
            created_at: 0,
            expires_at: 1000,
            max_uses: Some(5),
            uses: 0,
            revoked: false,
            epoch: 0,
            tag: [0; 32],
            token: String::new(),
            parent_id: None,
            depth: 0,
            stage: Default::default(),
            stage_changed_at: 0,
            stage_reset_at: 0,
        }
    }

    fn facts<'a>(g: &'a Group, i: &'a Invite) -> Facts<'a> {
        Facts {
            now: 10,
            invite: Some(i),
            tag_matches: true,
            token_epoch: 0,
            group: g,
            members: 1,
            pending: 0,
            is_member: false,
            has_pending_request: false,
            is_blocked: false,
        }
    }

    #[test]
    fn grant_and_request() {
        let (g, i) = (group(), invite());
        assert_eq!(decide(&facts(&g, &i)), Ok(Admission::Grant));
        let mut g2 = group();
        g2.approval_required = true;
        assert_eq!(decide(&facts(&g2, &i)), Ok(Admission::Request));
    }

    /// One row per refusal code, each built from a passing case by changing one fact.
    #[test]
    fn decision_table() {
        type Tweak = fn(&mut Group, &mut Invite, &mut Facts2);
        struct Facts2 {
            now: i64,
            present: bool,
            tag: bool,
            epoch: u32,
            members: u32,
            pending: u32,
            member: bool,
            pending_req: bool,
            blocked: bool,
        }
        let rows: Vec<(&str, Tweak, Refusal)> = vec![
            (
                "unknown invite",
                |_, _, f| f.present = false,
                Refusal::InvalidToken,
            ),
            (
                "forged token",
                |_, _, f| f.tag = false,
                Refusal::InvalidToken,
            ),
            (
                "expired exactly at expiry",
                |_, _, f| f.now = 1000,
                Refusal::Expired,
            ),
            ("expired after", |_, _, f| f.now = 5000, Refusal::Expired),
            ("revoked", |_, i, _| i.revoked = true, Refusal::Revoked),
            ("exhausted", |_, i, _| i.uses = 5, Refusal::Exhausted),
            (
                "banned",
                |g, _, _| g.status = GroupStatus::Banned,
                Refusal::GroupBanned,
            ),
            (
                "burned by past ban",
                |g, _, _| g.epoch = 1,
                Refusal::Revoked,
            ),
            ("old token epoch", |_, _, f| f.epoch = 7, Refusal::Revoked),
            ("member", |_, _, f| f.member = true, Refusal::AlreadyMember),
            (
                "pending",
                |_, _, f| f.pending_req = true,
                Refusal::RequestPending,
            ),
            ("blocked", |_, _, f| f.blocked = true, Refusal::Blocked),
            (
                "full by members",
                |_, _, f| f.members = 100,
                Refusal::GroupFull,
            ),
            (
                "full by reserved seats",
                |_, _, f| {
                    f.members = 60;
                    f.pending = 40
                },
                Refusal::GroupFull,
            ),
            // precedence: expiry beats everything after it
            (
                "expired and banned",
                |g, _, f| {
                    f.now = 2000;
                    g.status = GroupStatus::Banned
                },
                Refusal::Expired,
            ),
            (
                "banned and member",
                |g, _, f| {
                    g.status = GroupStatus::Banned;
                    f.member = true
                },
                Refusal::GroupBanned,
            ),
            (
                "member of a full group",
                |_, _, f| {
                    f.member = true;
                    f.members = 100
                },
                Refusal::AlreadyMember,
            ),
        ];
        for (name, tweak, want) in rows {
            let (mut g, mut i) = (group(), invite());
            let mut f2 = Facts2 {
                now: 10,
                present: true,
                tag: true,
                epoch: 0,
                members: 1,
                pending: 0,
                member: false,
                pending_req: false,
                blocked: false,
            };
            tweak(&mut g, &mut i, &mut f2);
            let f = Facts {
                now: f2.now,
                invite: f2.present.then_some(&i),
                tag_matches: f2.tag,
                token_epoch: f2.epoch,
                group: &g,
                members: f2.members,
                pending: f2.pending,
                is_member: f2.member,
                has_pending_request: f2.pending_req,
                is_blocked: f2.blocked,
            };
            assert_eq!(decide(&f), Err(want), "{name}");
        }
    }

    #[test]
    fn last_seat_is_grantable_and_limits_hold() {
        let (g, i) = (group(), invite());
        let mut f = facts(&g, &i);
        f.members = 99;
        assert_eq!(decide(&f), Ok(Admission::Grant));
        f.members = 98;
        f.pending = 1;
        assert_eq!(decide(&f), Ok(Admission::Grant));
        f.now = 999;
        assert_eq!(decide(&f), Ok(Admission::Grant), "one second before expiry");
        assert_eq!(free_seats(100, 99, 1), 0);
        assert_eq!(free_seats(100, 120, 0), 0, "never underflows");
        assert_eq!(free_seats(500, 250, 50), 200);
    }
}
