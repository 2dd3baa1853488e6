//! The GroupActor's anti-abuse side: the join path with risk scoring,
//! per-invitation step-up and challenges; lineage (who came through which
//! invitation, re-shared branches, burning a branch); member removal that
//! keeps the lineage; analytics; and the group's reputation.
//!
//! The rules are in `domain::risk` and `domain::challenge`; this file
//! gathers the facts, applies the outcome and records it.

use std::collections::HashSet;
use std::sync::Arc;

use super::actor::{Caller, GroupActor, JoinOutcome};
use super::analytics::minute;
use super::signals::UserSignals;
use crate::domain::challenge::{self, Challenge, Offer};
use crate::domain::events::EventKind;
use crate::domain::group::{Departure, FormerMember, Invite, JoinRequest, JoinRisk, Member, Role};
use crate::domain::ids::{random_bytes, InviteId, RequestId, UserId};
use crate::domain::join::{Admission, Refusal};
use crate::domain::risk::{self, Bucket, ChallengeKind, Gate, Mode, Policy, Reason, Stage};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{done, Fail, Pending, Step};
use crate::storage::{Scope, Suspect, WriteSet};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A user's recent attempts through one invitation: the minute of the last
/// counted attempt, and the minute they were last counted as flagged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    minute: u32,
    flagged: Option<u32>,
}

/// How a join attempt names its invitation.
pub(super) struct Entry {
    pub invite_id: InviteId,
    pub token_epoch: u32,
    /// The token's keyed tag matched (or a challenge this server issued for
    /// the invitation vouches for it).
    pub tag_ok: bool,
    /// The attempt answers a solved challenge: its tag, its expiry, and
    /// the assessment of the attempt it interrupted.
    pub solved: Option<([u8; 16], i64, JoinRisk)>,
}

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

message!(AnswerChallenge -> JoinOutcome {
    user: UserId,
    challenge: Challenge,
    tag: [u8; 16],
    // Whether the answer solves it (checked by the gateway: proof of work or captcha).
    passed: bool,
} => answer_challenge);
message!(ListJoins -> JoinPage {
    caller: Caller,
    invite_id: InviteId,
    branch: bool,
    offset: usize,
    limit: usize,
} => list_joins);
message!(GetAnalytics -> Analytics { caller: Caller, invite_id: Option<InviteId>, minutes: u32 } => get_analytics);
message!(ResetInvite -> Invite { caller: Caller, invite_id: InviteId } => reset_invite);
message!(BurnBranch -> Vec<InviteId> { caller: Caller, invite_id: InviteId } => burn_branch);
message!(RemoveMember -> () { caller: Caller, user: UserId } => remove_member);
message!(ClearFlag -> () {} => clear_flag);

/// One join through an invitation, as its lineage shows it.
#[derive(Debug, Clone)]
pub struct JoinTrace {
    pub user_id: UserId,
    pub via_invite: InviteId,
    pub invited_by: Option<UserId>,
    /// `member`, `pending`, `removed`, `blocked` or `left`.
    pub status: &'static str,
    pub at: i64,
    pub left_at: Option<i64>,
    pub risk: Option<JoinRisk>,
}

/// One page of a lineage listing, oldest first.
#[derive(Debug, Clone)]
pub struct JoinPage {
    pub joins: Vec<JoinTrace>,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
}

/// Totals over the asked window and the per-minute series.
#[derive(Debug, Clone)]
pub struct Analytics {
    pub totals: Bucket,
    pub series: Vec<(u32, Bucket)>,
    pub stage: Option<Stage>,
}

impl GroupActor {
    fn policy(&self) -> &Policy {
        &self.shared.config.risk
    }

    /// Count in the invitation's bucket and the group's.
    fn count(&mut self, invite: InviteId, now: i64, f: impl Fn(&mut Bucket)) {
        let shared = Arc::clone(&self.shared);
        self.analytics
            .bump(&shared.storage, Scope::Invite(invite), now, &f);
        self.analytics.bump(&shared.storage, Scope::Group, now, &f);
    }

    fn refused(&mut self, invite: Option<InviteId>, code: &'static str, now: i64) {
        if let Some(i) = invite {
            self.count(i, now, |b| b.refuse(code));
        }
    }

    /// Write changed analytics (at most once a second unless `force`).
    pub(super) fn flush_analytics(&mut self, force: bool) {
        if (force && self.analytics.is_dirty()) || self.analytics.due() {
            let w = self.analytics.take(now());
            self.background(w);
        }
    }

    /// A landing page checked a token of this group.
    pub(super) fn count_scan(&mut self, invite: InviteId, now: i64) {
        if self.invites.contains_key(&invite) {
            self.count(invite, now, |b| b.scans += 1);
            metrics::INVITE_SCANS.inc();
            self.flush_analytics(false);
        }
    }

    /// The one join path: `POST /v1/join` and challenge answers.
    pub(super) fn admit(
        &mut self,
        user: UserId,
        e: Entry,
        signals: Option<UserSignals>,
        now: i64,
    ) -> Step<JoinOutcome> {
        let result = self.admit_inner(user, &e, signals, now);
        self.flush_analytics(false);
        result
    }

    fn admit_inner(
        &mut self,
        user: UserId,
        e: &Entry,
        signals: Option<UserSignals>,
        now: i64,
    ) -> Step<JoinOutcome> {
        let answering = e.solved.is_some();
        let admission = self.admission(e.invite_id, e.token_epoch, e.tag_ok, Some(user), now);
        // What an attempt adds to the invitation's signals must not be
        // inflatable by one caller: only tokens that are the issued ones,
        // not the caller's own state (already a member, a request pending),
        // once per user and minute; an answer was counted when its
        // challenge was issued.
        let counted = !answering
            && e.tag_ok
            && self.invites.contains_key(&e.invite_id)
            && !matches!(
                admission,
                Err(Refusal::AlreadyMember | Refusal::RequestPending)
            )
            && self.first_attempt(e.invite_id, user, now);
        let known = counted.then_some(e.invite_id);
        if counted {
            self.count(e.invite_id, now, |b| b.attempts += 1);
        }
        let mut admission = match admission {
            Ok(a) => a,
            Err(r) => {
                self.refused(known, r.code(), now);
                return Err(r.into());
            }
        };
        let mut invite = self
            .invites
            .get(&e.invite_id)
            .cloned()
            .ok_or(ApiError::Internal)?;
        // Rate limits come last among the checks: a refused join costs
        // nothing. The user's own limit first, so one user cannot use up a
        // group's quota; the group's after the challenge, so challenged
        // attempts do not use it either.
        let clock = &self.shared.clock;
        if let Err(nu) = self.shared.user_limiter.check_key(&user) {
            let err = ApiError::rate_limited("joins by this user", &nu, clock);
            self.refused(known, "rate_limited", now);
            return Err(err.into());
        }
        if let Some(d) = signals.and_then(|s| s.device) {
            self.shared.signals.note_device(d, user);
        }
        let (risk, listed) = match (&e.solved, signals) {
            (Some((_, _, r)), _) => (Some(r.clone()), None),
            (None, Some(s)) => {
                let (r, listed) = self.score(&invite, user, s, now);
                (Some(r), listed)
            }
            (None, None) => (None, None),
        };
        let flagged = !answering
            && risk
                .as_ref()
                .is_some_and(|r| r.score >= self.policy().flag_score);
        let (stage, stepped) = if flagged {
            self.step_up(&mut invite, now)
        } else {
            (invite.stage, None)
        };
        // A refusal that stepped the invitation up (or listed the group)
        // answers once that is on disk: the later write is durable only
        // after the earlier one, and a join's own write comes after both.
        let stored = stepped.or(listed);
        let refuse_after = |err: ApiError| -> Step<JoinOutcome> {
            match stored {
                Some(durable) => Ok(Box::pin(async move {
                    durable.await?;
                    Err(Fail::Api(err))
                })),
                None => Err(err.into()),
            }
        };
        match risk::gate(self.policy().mode, stage, flagged, answering) {
            Gate::Paused => {
                self.refused(known, "invite_paused", now);
                return refuse_after(Refusal::Paused.into());
            }
            Gate::Challenge => {
                let offer = self.issue_challenge(user, &invite, risk.as_ref(), now);
                self.count(invite.id, now, |b| b.challenges_issued += 1);
                metrics::CHALLENGES
                    .with_label_values(&[kind_label(self.policy().challenge.kind), "issued"])
                    .inc();
                return refuse_after(ApiError::ChallengeRequired(Box::new(offer)));
            }
            Gate::Approval => admission = Admission::Request,
            Gate::Pass => {}
        }
        if let Err(nu) = self.limiter.check() {
            let err = ApiError::rate_limited("joins into this group", &nu, &self.shared.clock);
            self.refused(known, "rate_limited", now);
            return Err(err.into());
        }
        invite.uses += 1;
        let gid = self.id();
        let mut w = WriteSet::new();
        // Only a limited invitation needs its exact use count stored with the
        // join (it decides `invite_exhausted`); an unlimited one's count is
        // kept by the outbox consumer, which saves a write on every join.
        if invite.max_uses.is_some() {
            w.invite(&invite);
        }
        if let Some((tag, expires_at, _)) = &e.solved {
            let (tag, expires_at) = (*tag, *expires_at);
            w.challenge_used(expires_at, &tag);
            self.used_challenges.insert(tag, expires_at);
        }
        let new_account = risk.as_ref().is_some_and(|r| r.new_account);
        let reply = match admission {
            Admission::Grant => {
                let member = Member {
                    user_id: user,
                    role: Role::Member,
                    joined_at: now,
                    via_invite: Some(invite.id),
                    invited_by: Some(invite.creator_id),
                    risk: risk.filter(JoinRisk::worth_keeping),
                };
                self.members.insert(member);
                w.membership(gid, &self.members, user);
                w.event(&self.event(
                    vec![user],
                    EventKind::MemberJoined {
                        group_id: gid,
                        user_id: user,
                        via_invite: Some(invite.id),
                        approved_request: None,
                    },
                ));
                let reply = self.commit(w, JoinOutcome::Joined);
                self.count(invite.id, now, |b| {
                    b.joins += 1;
                    b.new_accounts += u64::from(new_account);
                });
                reply
            }
            Admission::Request => {
                let req = JoinRequest {
                    id: RequestId::random(),
                    user_id: user,
                    invite_id: invite.id,
                    invited_by: invite.creator_id,
                    created_at: now,
                    expires_at: now + self.shared.config.limits.join_request_ttl_seconds,
                    risk: risk.filter(JoinRisk::worth_keeping),
                };
                w.request(gid, &req);
                let mut notify = vec![user];
                notify.extend(self.moderators());
                w.event(&self.event(
                    notify,
                    EventKind::JoinRequested {
                        group_id: gid,
                        request_id: req.id,
                        user_id: user,
                        via_invite: invite.id,
                    },
                ));
                let reply = self.commit(w, JoinOutcome::Pending(req.id));
                self.next_expiry = self.next_expiry.min(req.expires_at);
                self.pending_by_user.insert(user, req.id);
                self.requests.insert(req.id, req);
                self.count(invite.id, now, |b| {
                    b.requests += 1;
                    b.new_accounts += u64::from(new_account);
                });
                reply
            }
        };
        if answering {
            self.count(invite.id, now, |b| b.challenges_passed += 1);
        }
        self.invites.insert(invite.id, invite);
        Ok(reply)
    }

    /// Whether this is `user`'s first attempt through `invite` this minute.
    fn first_attempt(&mut self, invite: InviteId, user: UserId, now: i64) -> bool {
        let m = minute(now);
        let seen = self.seen.entry((invite, user)).or_insert(Seen {
            minute: m.wrapping_sub(1),
            flagged: None,
        });
        std::mem::replace(&mut seen.minute, m) != m
    }

    /// Whether `user` was not yet flagged through `invite` in the window
    /// (the step-up ladder counts flagged users, not their retries).
    fn first_flag(&mut self, invite: InviteId, user: UserId, now: i64) -> bool {
        let (m, w) = (minute(now), self.policy().window_minutes);
        let seen = self.seen.entry((invite, user)).or_insert(Seen {
            minute: m,
            flagged: None,
        });
        match seen.flagged {
            Some(f) if m < f.saturating_add(w) => false,
            _ => {
                seen.flagged = Some(m);
                true
            }
        }
    }

    /// Forget attempts older than the window.
    pub(super) fn prune_seen(&mut self, now: i64) {
        let (m, w) = (minute(now), self.policy().window_minutes);
        self.seen.retain(|_, s| {
            s.minute.saturating_add(w) > m || s.flagged.is_some_and(|f| f.saturating_add(w) > m)
        });
    }

    /// Score one attempt (not an answer: its challenge carries the score of
    /// the attempt it interrupted); the first flag of a user in the window
    /// is counted.
    fn score(
        &mut self,
        invite: &Invite,
        user: UserId,
        s: UserSignals,
        now: i64,
    ) -> (JoinRisk, Option<Pending<()>>) {
        let shared = Arc::clone(&self.shared);
        let p = &shared.config.risk;
        let scope = Scope::Invite(invite.id);
        let window = self
            .analytics
            .window(&shared.storage, scope, now, p.window_minutes, None);
        let signals = risk::Signals {
            account_age_seconds: s.account_age_seconds,
            user_recent_joins: s.recent_joins,
            device_accounts: s.device_accounts,
            invite_last_minute: self.analytics.current(&shared.storage, scope, now).attempts,
            invite_window: window,
        };
        let a = risk::assess(&signals, p);
        let flagged = a.flagged(p);
        metrics::JOIN_RISK.observe(f64::from(a.score));
        let mut listed = None;
        if flagged {
            metrics::JOINS_FLAGGED.inc();
            if self.first_flag(invite.id, user, now) {
                self.count(invite.id, now, |b| b.flagged += 1);
                listed = self.check_reputation(now);
            }
        }
        let risk = JoinRisk {
            score: a.score,
            reasons: a.reasons,
            challenged: false,
            new_account: s.account_age_seconds < p.new_account_seconds,
        };
        (risk, listed)
    }

    /// Move the invitation up the step-up ladder if its flagged attempts
    /// call for it: the stage, and the write storing and announcing a
    /// change (durable when the future resolves).
    fn step_up(&mut self, invite: &mut Invite, now: i64) -> (Stage, Option<Pending<()>>) {
        let shared = Arc::clone(&self.shared);
        let p = &shared.config.risk;
        let after = (invite.stage_reset_at > 0).then(|| minute(invite.stage_reset_at));
        let flagged = self
            .analytics
            .window(
                &shared.storage,
                Scope::Invite(invite.id),
                now,
                p.window_minutes,
                after,
            )
            .flagged;
        let next = risk::escalate(invite.stage, flagged, p);
        if next == invite.stage || p.mode != Mode::Enforce {
            return (invite.stage, None);
        }
        invite.stage = next;
        invite.stage_changed_at = now;
        metrics::INVITE_STAGES
            .with_label_values(&[next.as_str()])
            .inc();
        tracing::warn!(group = %self.id(), invite = %invite.id, stage = next.as_str(), flagged, "invitation stepped up");
        let mut w = WriteSet::new();
        w.invite(invite);
        w.event(&self.stage_event(invite, flagged));
        let durable = self.commit(w, ());
        self.invites.insert(invite.id, Box::new(invite.clone()));
        (next, Some(durable))
    }

    fn stage_event(&self, invite: &Invite, flagged: u64) -> crate::domain::events::Event {
        crate::domain::events::Event::for_users(
            self.moderators().collect(),
            now(),
            EventKind::InviteStageChanged {
                group_id: self.id(),
                invite_id: invite.id,
                stage: invite.stage,
                flagged,
            },
        )
    }

    fn issue_challenge(
        &self,
        user: UserId,
        invite: &Invite,
        risk: Option<&JoinRisk>,
        now: i64,
    ) -> Offer {
        let p = &self.policy().challenge;
        let c = Challenge {
            kind: p.kind,
            bits: p.pow_bits,
            group: self.id(),
            invite: invite.id,
            user,
            epoch: self.group.epoch,
            issued_at: now,
            expires_at: now + p.ttl_seconds,
            salt: random_bytes(),
            score: risk.map_or(0, |r| u8::try_from(r.score).unwrap_or(u8::MAX)),
            reasons: risk.map_or(0, |r| {
                Reason::to_bits(&r.reasons) | if r.new_account { 0x80 } else { 0 }
            }),
        };
        let (id, _) = c.seal(self.shared.keys.challenge_key());
        Offer {
            answer_url: format!("/v1/challenges/{id}"),
            id,
            kind: p.kind,
            pow_bits: (p.kind == ChallengeKind::Pow).then_some(p.pow_bits),
            site_key: match p.kind {
                ChallengeKind::Captcha => p.captcha.as_ref().map(|c| c.site_key.clone()),
                ChallengeKind::Pow => None,
            },
            expires_at: rfc3339(c.expires_at),
        }
    }

    /// List the group for the operator once most of its recent attempts
    /// are flagged (the write, when it does).
    fn check_reputation(&mut self, now: i64) -> Option<Pending<()>> {
        if self.suspect.is_some() || self.policy().mode == Mode::Off {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        let p = &shared.config.risk;
        let after = (self.flag_cleared_at > 0).then(|| minute(self.flag_cleared_at));
        let w = self
            .analytics
            .window(&shared.storage, Scope::Group, now, p.window_minutes, after);
        if !risk::suspect(&w, p) {
            return None;
        }
        let s = Suspect {
            group_id: self.id(),
            since: now,
            attempts: w.attempts,
            flagged: w.flagged,
            cleared_at: None,
        };
        tracing::warn!(group = %self.id(), attempts = w.attempts, flagged = w.flagged, "group flagged for review");
        metrics::GROUPS_FLAGGED.inc();
        let mut ws = WriteSet::new();
        ws.suspect(&s);
        ws.event(&crate::domain::events::Event::for_users(
            vec![],
            now,
            EventKind::GroupFlagged {
                group_id: self.id(),
                attempts: w.attempts,
                flagged: w.flagged,
            },
        ));
        let durable = self.commit(ws, ());
        self.suspect = Some(s);
        Some(durable)
    }

    /// Invitation creation in a flagged group is limited (enforce mode),
    /// counted from the stored invitations so that a restart does not
    /// reset the allowance.
    pub(super) fn check_invite_creation(&self, now: i64) -> Result<(), ApiError> {
        if self.suspect.is_none() || self.policy().mode != Mode::Enforce {
            return Ok(());
        }
        let hour_ago = now - 3600;
        let recent: Vec<i64> = self
            .invites
            .values()
            .map(|i| i.created_at)
            .filter(|t| *t > hour_ago)
            .collect();
        if recent.len() < self.policy().suspect_invites_per_hour as usize {
            return Ok(());
        }
        let oldest = recent.iter().min().copied().unwrap_or(now);
        Err(ApiError::RateLimited {
            scope: "invitations of a group flagged for suspicious joins",
            retry_after_secs: u64::try_from(oldest + 3600 - now).unwrap_or(1).max(1),
        })
    }

    fn answer_challenge(&mut self, m: AnswerChallenge) -> Step<JoinOutcome> {
        let now = now();
        let c = &m.challenge;
        let kind = kind_label(c.kind);
        let refuse = |r: challenge::Refusal| {
            metrics::CHALLENGES
                .with_label_values(&[kind, r.code()])
                .inc();
            Err(ApiError::from(r).into())
        };
        if c.group != self.id() {
            return refuse(challenge::Refusal::Invalid);
        }
        if let Err(r) = c.admits(m.user, now) {
            return refuse(r);
        }
        let used = self.used_challenges.contains_key(&m.tag)
            || self
                .shared
                .storage
                .challenge_was_used(c.expires_at, &m.tag)?;
        if used {
            return refuse(challenge::Refusal::Used);
        }
        if !m.passed {
            self.count(c.invite, now, |b| b.challenges_failed += 1);
            self.flush_analytics(false);
            return refuse(challenge::Refusal::Failed);
        }
        let out = self.admit(
            m.user,
            Entry {
                invite_id: c.invite,
                token_epoch: c.epoch,
                tag_ok: true,
                solved: Some((
                    m.tag,
                    c.expires_at,
                    JoinRisk {
                        score: u32::from(c.score),
                        reasons: Reason::from_bits(c.reasons & 0x7f),
                        challenged: true,
                        new_account: c.reasons & 0x80 != 0,
                    },
                )),
            },
            None,
            now,
        );
        if out.is_ok() {
            metrics::CHALLENGES
                .with_label_values(&[kind, "passed"])
                .inc();
        }
        out
    }

    /// The caller may read the lineage and analytics of `invite` (`None`:
    /// the group's): moderators, operators, and an invitation's creator.
    /// Answers whether the caller moderates (creators see less).
    fn may_inspect(&self, caller: Caller, invite: Option<&Invite>) -> Result<bool, ApiError> {
        let moderates = self.role(caller).is_some_and(Role::moderates);
        let creator = match (caller, invite) {
            (Caller::User(u), Some(i)) => i.creator_id == u && self.members.contains(&u),
            _ => false,
        };
        if moderates || creator {
            Ok(moderates)
        } else {
            Err(ApiError::forbidden(
                "only the group's owner or admins, the invitation's creator, or an operator may see this",
            ))
        }
    }

    /// `root` and every invitation re-shared from it, at any depth.
    fn branch(&self, root: InviteId) -> HashSet<InviteId> {
        let mut set = HashSet::from([root]);
        // Children are few and shallow (depth <= MAX_INVITE_DEPTH): repeat
        // until no invitation joins the set.
        loop {
            let before = set.len();
            for i in self.invites.values() {
                if i.parent_id.is_some_and(|p| set.contains(&p)) {
                    set.insert(i.id);
                }
            }
            if set.len() == before {
                return set;
            }
        }
    }

    fn list_joins(&mut self, m: ListJoins) -> Step<JoinPage> {
        let inv = self
            .invites
            .get(&m.invite_id)
            .ok_or(ApiError::InviteNotFound)?;
        let moderates = self.may_inspect(m.caller, Some(inv))?;
        let via: HashSet<InviteId> = if m.branch {
            self.branch(m.invite_id)
        } else {
            HashSet::from([m.invite_id])
        };
        let mut out: Vec<JoinTrace> = Vec::new();
        for x in self.members.members() {
            if let Some(i) = x.via_invite.filter(|i| via.contains(i)) {
                out.push(JoinTrace {
                    user_id: x.user_id,
                    via_invite: i,
                    invited_by: x.invited_by,
                    status: "member",
                    at: x.joined_at,
                    left_at: None,
                    risk: x.risk.clone(),
                });
            }
        }
        for r in self
            .requests
            .values()
            .filter(|r| via.contains(&r.invite_id))
        {
            out.push(JoinTrace {
                user_id: r.user_id,
                via_invite: r.invite_id,
                invited_by: Some(r.invited_by),
                status: "pending",
                at: r.created_at,
                left_at: None,
                risk: r.risk.clone(),
            });
        }
        let mut former = Vec::new();
        for i in &via {
            former.extend(self.shared.storage.former_members(self.id(), *i)?);
        }
        for f in former {
            if let Some(i) = f.member.via_invite.filter(|i| via.contains(i)) {
                out.push(JoinTrace {
                    user_id: f.member.user_id,
                    via_invite: i,
                    invited_by: f.member.invited_by,
                    status: match f.how {
                        Departure::Removed => "removed",
                        Departure::Blocked => "blocked",
                        Departure::Left => "left",
                    },
                    at: f.member.joined_at,
                    left_at: Some(f.left_at),
                    risk: f.member.risk,
                });
            }
        }
        out.sort_by_key(|t| (t.at, t.user_id));
        if !moderates {
            // An invitation's creator sees who came through it, not how
            // they were scored or why they left.
            for t in &mut out {
                t.risk = None;
                if matches!(t.status, "removed" | "blocked" | "left") {
                    t.status = "former";
                }
            }
        }
        let total = out.len();
        let joins: Vec<JoinTrace> = out.into_iter().skip(m.offset).take(m.limit).collect();
        let end = m.offset.saturating_add(joins.len());
        done(JoinPage {
            joins,
            next_offset: (end < total).then_some(end),
        })
    }

    fn get_analytics(&mut self, m: GetAnalytics) -> Step<Analytics> {
        let inv = match m.invite_id {
            Some(i) => Some(&**self.invites.get(&i).ok_or(ApiError::InviteNotFound)?),
            None => None,
        };
        self.may_inspect(m.caller, inv)?;
        let stage = inv.map(|i| i.stage);
        let scope = m.invite_id.map_or(Scope::Group, Scope::Invite);
        let from = minute(now()).saturating_sub(m.minutes.saturating_sub(1));
        let series = self.analytics.series(&self.shared.storage, scope, from)?;
        let mut totals = Bucket::default();
        for (_, b) in &series {
            totals.add(b);
        }
        done(Analytics {
            totals,
            series,
            stage,
        })
    }

    fn reset_invite(&mut self, m: ResetInvite) -> Step<Invite> {
        self.require_moderator(m.caller)?;
        let mut inv = self
            .invites
            .get(&m.invite_id)
            .cloned()
            .ok_or(ApiError::InviteNotFound)?;
        let now = now();
        inv.stage = Stage::Open;
        inv.stage_changed_at = now;
        inv.stage_reset_at = now;
        let mut w = WriteSet::new();
        w.invite(&inv);
        w.event(&self.stage_event(&inv, 0));
        metrics::INVITE_STAGES.with_label_values(&["reset"]).inc();
        let reply = self.commit(w, (*inv).clone());
        self.invites.insert(inv.id, inv);
        Ok(reply)
    }

    fn burn_branch(&mut self, m: BurnBranch) -> Step<Vec<InviteId>> {
        let root = self
            .invites
            .get(&m.invite_id)
            .ok_or(ApiError::InviteNotFound)?;
        let is_creator = m
            .caller
            .user()
            .is_some_and(|u| root.creator_id == u && self.members.contains(&u));
        if !is_creator && !self.role(m.caller).is_some_and(Role::moderates) {
            return Err(ApiError::forbidden(
                "only the invitation's creator, the group's owner or admins, or an operator may burn its branch",
            )
            .into());
        }
        let mut burned: Vec<Invite> = self
            .branch(m.invite_id)
            .into_iter()
            .filter_map(|i| self.invites.get(&i).map(Box::as_ref))
            .filter(|i| !i.revoked)
            .cloned()
            .collect();
        burned.sort_by_key(|i| (i.depth, i.created_at, i.id));
        let mut w = WriteSet::new();
        for i in &mut burned {
            i.revoked = true;
            w.invite(i);
            w.event(&self.event(
                vec![],
                EventKind::InviteRevoked {
                    group_id: self.id(),
                    invite_id: i.id,
                },
            ));
        }
        let ids: Vec<InviteId> = burned.iter().map(|i| i.id).collect();
        let reply = self.commit(w, ids);
        for i in burned {
            self.invites.insert(i.id, Box::new(i));
        }
        Ok(reply)
    }

    /// A membership ends: the member record goes, a former-member record
    /// keeps the lineage, and a removal counts against the invitation it
    /// came through (the "later removed" signal).
    pub(super) fn depart(
        &mut self,
        w: &mut WriteSet,
        user: UserId,
        how: Departure,
        by: Option<UserId>,
        now: i64,
    ) {
        let Some(member) = self.members.remove(&user) else {
            return;
        };
        w.membership(self.id(), &self.members, user);
        let via = member.via_invite;
        w.former_member(
            self.id(),
            &FormerMember {
                member,
                left_at: now,
                how,
                by,
            },
        );
        if let (Some(i), false) = (via, how == Departure::Left) {
            if self.invites.contains_key(&i) {
                self.count(i, now, |b| b.removed += 1);
            }
        }
    }

    fn remove_member(&mut self, m: RemoveMember) -> Step<()> {
        let target = self
            .members
            .role(&m.user)
            .ok_or_else(|| ApiError::validation("that user is not a member of this group"))?;
        let leaving = m.caller.user() == Some(m.user);
        if target == Role::Owner {
            return Err(ApiError::Conflict("cannot_remove_owner").into());
        }
        if !leaving {
            let my_role = self.require_moderator(m.caller)?;
            if my_role == Role::Admin && target == Role::Admin && m.caller != Caller::Admin {
                return Err(ApiError::forbidden("only the owner may remove a group admin").into());
            }
        }
        let now = now();
        let how = if leaving {
            Departure::Left
        } else {
            Departure::Removed
        };
        let mut w = WriteSet::new();
        w.event(&self.event(
            vec![m.user],
            EventKind::MemberRemoved {
                group_id: self.id(),
                user_id: m.user,
                by: m.caller.user(),
                left: leaving,
            },
        ));
        self.depart(&mut w, m.user, how, m.caller.user(), now);
        let reply = self.commit(w, ());
        self.flush_analytics(false);
        Ok(reply)
    }

    fn clear_flag(&mut self, _: ClearFlag) -> Step<()> {
        let Some(mut s) = self.suspect.take() else {
            return self.after_pending_writes(());
        };
        let now = now();
        s.cleared_at = Some(now);
        let mut w = WriteSet::new();
        w.suspect(&s);
        let reply = self.commit(w, ());
        self.flag_cleared_at = now;
        Ok(reply)
    }
}

impl JoinRisk {
    /// Kept with the membership when there is something to say.
    fn worth_keeping(&self) -> bool {
        self.score > 0 || self.challenged || self.new_account
    }
}

fn kind_label(k: ChallengeKind) -> &'static str {
    match k {
        ChallengeKind::Pow => "pow",
        ChallengeKind::Captcha => "captcha",
    }
}
