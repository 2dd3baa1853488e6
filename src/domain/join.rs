//! The join decision, in one place and in order: [`plan`] takes what the
//! group knows of the invitation and the caller ([`decide`]'s facts) and
//! asks for the costly facts (a rate-limit token, a risk score, a step-up)
//! only when the decision reaches them, so a refused join costs nothing it
//! did not need. It returns the plan: refuse (with the reason), throttle,
//! challenge, or admit (as a member or as a join request). The group actor
//! gathers the facts, answers the questions and applies the plan.
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
//! 11. the user's own join rate                              -> `rate_limited`
//! 12. the attempt's risk; a flagged one may step the invitation up, and the
//!     stage gates the join (see `risk::gate`)   -> `invite_paused`, `challenge_required`
//! 13. an attempt that would wait for approval: room in the invitation's
//!     queue of pending requests                 -> `too_many_pending_requests`
//! 14. the group's join rate (after the challenge, so challenged attempts
//!     do not use it)                                        -> `rate_limited`
//!
//! then a grant, or a join request when the group (or the invitation's
//! stage) requires approval.

use super::group::{Group, GroupStatus, Invite, JoinRisk};
use super::risk::{self, Gate, Policy, Stage};

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
    /// Not from [`decide`]: the attempt would wait for approval, and the
    /// invitation already holds as many waiting requests as it may.
    QueueFull,
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
            Refusal::QueueFull => "too_many_pending_requests",
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
            Refusal::QueueFull => "as many join requests through this invitation are waiting as it may hold; try again once the group's moderators have answered them",
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

/// Whose join rate refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    User,
    Group,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Refused by the rules, or paused by the invitation's stage.
    Refuse(Refusal),
    /// Refused by a join rate: retry after this many seconds.
    Throttle(Quota, u64),
    /// Answer `challenge_required`, carrying the attempt's risk.
    Challenge(Option<JoinRisk>),
    /// Admit as a member or as a join request, with the risk to keep.
    Admit(Admission, Option<JoinRisk>),
}

/// The facts [`plan`] asks for only when it needs them: each costs
/// something (a rate-limit token, a score that is counted, a stored step).
pub trait Inputs {
    /// Take one join from the user's own quota (`Err`: seconds to wait).
    fn user_quota(&mut self) -> Result<(), u64>;
    /// The attempt's risk (`None`: scoring is off). For an answer to a
    /// challenge, the risk of the attempt it interrupted.
    fn risk(&mut self) -> Option<JoinRisk>;
    /// The invitation's stage after a flagged attempt (it may step up).
    fn step_up(&mut self) -> Stage;
    /// Whether the invitation already holds as many pending requests as it may.
    fn queue_full(&mut self) -> bool;
    /// Take one join from the group's quota (`Err`: seconds to wait).
    fn group_quota(&mut self) -> Result<(), u64>;
}

/// One attempt as [`plan`] sees it.
pub struct Attempt {
    /// [`decide`]'s answer on the invitation and the caller.
    pub checked: Result<Admission, Refusal>,
    /// The invitation's stage before this attempt.
    pub stage: Stage,
    /// The attempt answers a challenge the caller solved.
    pub answering: bool,
}

/// The whole join decision, in the order of the module's table.
pub fn plan(a: &Attempt, p: &Policy, inputs: &mut impl Inputs) -> Plan {
    let mut admission = match a.checked {
        Ok(admission) => admission,
        Err(r) => return Plan::Refuse(r),
    };
    // The user's own limit first, so one user cannot use up a group's quota.
    if let Err(wait) = inputs.user_quota() {
        return Plan::Throttle(Quota::User, wait);
    }
    let risk = inputs.risk();
    // An answer was scored (and counted) when its challenge was issued.
    let flagged = !a.answering && risk.as_ref().is_some_and(|r| r.score >= p.flag_score);
    let stage = if flagged { inputs.step_up() } else { a.stage };
    match risk::gate(p.mode, stage, flagged, a.answering) {
        Gate::Paused => return Plan::Refuse(Refusal::Paused),
        Gate::Challenge => return Plan::Challenge(risk),
        Gate::Approval => admission = Admission::Request,
        Gate::Pass => {}
    }
    if admission == Admission::Request && inputs.queue_full() {
        return Plan::Refuse(Refusal::QueueFull);
    }
    if let Err(wait) = inputs.group_quota() {
        return Plan::Throttle(Quota::Group, wait);
    }
    Plan::Admit(admission, risk)
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

    /// Answers [`plan`]'s questions from fixed values and records which
    /// were asked.
    #[derive(Default)]
    struct Fake {
        user_wait: Option<u64>,
        group_wait: Option<u64>,
        score: Option<u32>,
        stepped_to: Option<Stage>,
        queue_full: bool,
        asked: Vec<&'static str>,
    }

    impl Inputs for Fake {
        fn user_quota(&mut self) -> Result<(), u64> {
            self.asked.push("user");
            self.user_wait.map_or(Ok(()), Err)
        }
        fn risk(&mut self) -> Option<JoinRisk> {
            self.asked.push("risk");
            self.score.map(|score| JoinRisk {
                score,
                reasons: vec![],
                challenged: false,
                new_account: false,
            })
        }
        fn step_up(&mut self) -> Stage {
            self.asked.push("step_up");
            self.stepped_to.unwrap_or(Stage::Open)
        }
        fn queue_full(&mut self) -> bool {
            self.asked.push("queue");
            self.queue_full
        }
        fn group_quota(&mut self) -> Result<(), u64> {
            self.asked.push("group");
            self.group_wait.map_or(Ok(()), Err)
        }
    }

    fn attempt(checked: Result<Admission, Refusal>, stage: Stage, answering: bool) -> Attempt {
        Attempt {
            checked,
            stage,
            answering,
        }
    }

    fn risk_of(score: u32) -> Option<JoinRisk> {
        Some(JoinRisk {
            score,
            reasons: vec![],
            challenged: false,
            new_account: false,
        })
    }

    #[test]
    fn a_refused_attempt_asks_for_nothing() {
        let mut f = Fake::default();
        let a = attempt(Err(Refusal::GroupFull), Stage::Open, false);
        assert_eq!(
            plan(&a, &Policy::default(), &mut f),
            Plan::Refuse(Refusal::GroupFull)
        );
        assert!(f.asked.is_empty());
    }

    #[test]
    fn the_users_own_rate_comes_before_scoring() {
        let mut f = Fake {
            user_wait: Some(7),
            score: Some(99),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Grant), Stage::Open, false);
        assert_eq!(
            plan(&a, &Policy::default(), &mut f),
            Plan::Throttle(Quota::User, 7)
        );
        assert_eq!(f.asked, ["user"]);
    }

    #[test]
    fn a_flagged_attempt_steps_up_and_is_challenged_without_using_the_groups_rate() {
        let p = Policy::default();
        let mut f = Fake {
            score: Some(p.flag_score),
            group_wait: Some(3),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Grant), Stage::Open, false);
        assert_eq!(plan(&a, &p, &mut f), Plan::Challenge(risk_of(p.flag_score)));
        assert_eq!(f.asked, ["user", "risk", "step_up"]);
    }

    #[test]
    fn an_attempt_below_the_flag_is_admitted_through_the_groups_rate() {
        let p = Policy::default();
        let mut f = Fake {
            score: Some(p.flag_score - 1),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Grant), Stage::Open, false);
        assert_eq!(
            plan(&a, &p, &mut f),
            Plan::Admit(Admission::Grant, risk_of(p.flag_score - 1))
        );
        assert_eq!(f.asked, ["user", "risk", "group"]);
        f.group_wait = Some(2);
        f.asked.clear();
        assert_eq!(plan(&a, &p, &mut f), Plan::Throttle(Quota::Group, 2));
    }

    #[test]
    fn a_request_needs_room_in_the_invitations_queue_a_grant_does_not() {
        let p = Policy::default();
        let mut f = Fake {
            score: Some(0),
            queue_full: true,
            group_wait: Some(5),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Request), Stage::Open, false);
        assert_eq!(plan(&a, &p, &mut f), Plan::Refuse(Refusal::QueueFull));
        assert_eq!(
            f.asked,
            ["user", "risk", "queue"],
            "the group's rate is not used"
        );
        f.asked.clear();
        f.group_wait = None;
        let a = attempt(Ok(Admission::Grant), Stage::Open, false);
        assert_eq!(
            plan(&a, &p, &mut f),
            Plan::Admit(Admission::Grant, risk_of(0))
        );
        assert!(!f.asked.contains(&"queue"));
        // the approval stage turns a grant into a request: the queue counts
        let a = attempt(Ok(Admission::Grant), Stage::Approval, true);
        assert_eq!(plan(&a, &p, &mut f), Plan::Refuse(Refusal::QueueFull));
    }

    #[test]
    fn an_answer_is_not_flagged_again_and_an_approval_stage_queues_it() {
        let p = Policy::default();
        let mut f = Fake {
            score: Some(100),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Grant), Stage::Challenge, true);
        assert_eq!(
            plan(&a, &p, &mut f),
            Plan::Admit(Admission::Grant, risk_of(100))
        );
        assert!(!f.asked.contains(&"step_up"));
        let a = attempt(Ok(Admission::Grant), Stage::Approval, true);
        assert_eq!(
            plan(&a, &p, &mut f),
            Plan::Admit(Admission::Request, risk_of(100))
        );
    }

    #[test]
    fn a_step_to_paused_refuses_and_observe_mode_never_gates() {
        let mut p = Policy::default();
        let mut f = Fake {
            score: Some(100),
            stepped_to: Some(Stage::Paused),
            ..Fake::default()
        };
        let a = attempt(Ok(Admission::Grant), Stage::Open, false);
        assert_eq!(plan(&a, &p, &mut f), Plan::Refuse(Refusal::Paused));
        p.mode = risk::Mode::Observe;
        f.asked.clear();
        assert_eq!(
            plan(&a, &p, &mut f),
            Plan::Admit(Admission::Grant, risk_of(100))
        );
        assert_eq!(f.asked, ["user", "risk", "step_up", "group"]);
    }
}
