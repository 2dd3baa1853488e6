//! A join in the group's actor: the join through a scanned invitation and
//! the answer to its challenge. The actor gathers the facts (the group, the
//! invitation, the caller), [`join::plan`] decides in one place, asking
//! this file for the costly facts when it needs them (the user's and the
//! group's join rates, the risk score, the invitation's step-up: [`Asked`]),
//! and this file applies the plan: admit, queue for approval, challenge,
//! or refuse, with the per-minute counts and the group's reputation.

use std::sync::Arc;

use super::actor::GroupActor;
use super::analytics::{minute, Seen};
use super::signals::UserSignals;
use crate::clock::now;
use crate::domain::challenge::{self, Challenge, Offer, Subject};
use crate::domain::events::EventKind;
use crate::domain::group::{Invite, JoinRequest, JoinRisk, Member, Role};
use crate::domain::ids::{random_bytes, InviteId, RequestId, UserId};
use crate::domain::join::{self, Admission, Facts, Plan, Quota, Refusal};
use crate::domain::risk::{self, Bucket, Mode, Policy, Reason, Stage};
use crate::domain::token::Claims;
use crate::error::{retry_after_secs, ApiError};
use crate::metrics;
use crate::registry::{Fail, Pending, Step};
use crate::storage::{Scope, Suspect, WriteSet};

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    Pending(RequestId),
}

message!(Join -> JoinOutcome {
    user: UserId,
    claims: Claims,
    tag: [u8; 32],
    // User-level risk signals (None when risk scoring is off).
    signals: Option<UserSignals>,
    // The user's join quota as counted by the node that holds it (cluster
    // mode, when that is another node); None: this node counts it.
    user_quota: Option<Result<(), u64>>,
} => join);

message!(AnswerChallenge -> JoinOutcome {
    user: UserId,
    challenge: Challenge,
    tag: [u8; 16],
    // Whether the answer solves it (checked by the gateway: proof of work or captcha).
    passed: bool,
} => answer_challenge);

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
    /// The user's join quota counted elsewhere (see [`Join`]).
    pub user_quota: Option<Result<(), u64>>,
}

impl GroupActor {
    fn policy(&self) -> &Policy {
        &self.shared.config.risk
    }

    /// Count in the invitation's bucket and the group's.
    pub(super) fn count(&mut self, invite: InviteId, now: i64, f: impl Fn(&mut Bucket)) {
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
        let checked = self.admission(e.invite_id, e.token_epoch, e.tag_ok, Some(user), now);
        // What an attempt adds to the invitation's signals must not be
        // inflatable by one caller: only tokens that are the issued ones,
        // not the caller's own state (already a member, a request pending),
        // once per user and minute; an answer was counted when its
        // challenge was issued.
        let counted = !answering
            && e.tag_ok
            && self.invites.contains_key(&e.invite_id)
            && !matches!(
                checked,
                Err(Refusal::AlreadyMember | Refusal::RequestPending)
            )
            && self.first_attempt(e.invite_id, user, now);
        let known = counted.then_some(e.invite_id);
        if counted {
            self.count(e.invite_id, now, |b| b.attempts += 1);
        }
        let invite = self.invites.get(&e.invite_id).cloned();
        let attempt = join::Attempt {
            checked,
            stage: invite.as_ref().map_or(Stage::Open, |i| i.stage),
            answering,
        };
        let shared = Arc::clone(&self.shared);
        let mut asked = Asked {
            actor: self,
            user,
            invite,
            signals,
            solved: e.solved.as_ref().map(|(_, _, r)| r.clone()),
            user_quota: e.user_quota,
            now,
            listed: None,
            stepped: None,
        };
        let plan = join::plan(&attempt, &shared.config.risk, &mut asked);
        // A refusal that stepped the invitation up (or listed the group)
        // answers once that is on disk: the later write is durable only
        // after the earlier one, and a join's own write comes after both.
        let stored = asked.stepped.take().or(asked.listed.take());
        let invite = asked.invite.take();
        let (admission, risk, mut invite) = match (plan, invite) {
            (Plan::Refuse(r), _) => {
                self.refused(known, r.code(), now);
                return after(stored, r.into());
            }
            (Plan::Throttle(quota, retry_after_secs), _) => {
                let scope = match quota {
                    Quota::User => "joins by this user",
                    Quota::Group => "joins into this group",
                };
                self.refused(known, "rate_limited", now);
                let err = ApiError::RateLimited {
                    scope,
                    retry_after_secs,
                };
                return after(stored, err);
            }
            (Plan::Challenge(risk), Some(invite)) => {
                let offer = self.issue_challenge(user, &invite, risk.as_ref(), now);
                self.count(invite.id, now, |b| b.challenges_issued += 1);
                metrics::CHALLENGES
                    .with_label_values(&[self.policy().challenge.kind.as_str(), "issued"])
                    .inc();
                return after(stored, ApiError::ChallengeRequired(Box::new(offer)));
            }
            (Plan::Admit(admission, risk), Some(invite)) => (admission, risk, invite),
            // The plan admits or challenges only an invitation the group has.
            (Plan::Challenge(_) | Plan::Admit(..), None) => return Err(ApiError::Internal.into()),
        };
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
                // For the group's feed: the joiner has the answer.
                w.event(&self.event(
                    vec![],
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
                // For the moderators and the group's feed: the applicant
                // has the answer.
                w.event(&self.event(
                    self.moderators().collect(),
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
            user_recent_joins: s.recent,
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

    pub(super) fn stage_event(
        &self,
        invite: &Invite,
        flagged: u64,
    ) -> crate::domain::events::Event {
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
            subject: Subject::Join {
                group: self.id(),
                invite: invite.id,
                epoch: self.group.epoch,
            },
            user,
            issued_at: now,
            expires_at: now + p.ttl_seconds,
            salt: random_bytes(),
            score: risk.map_or(0, |r| u8::try_from(r.score).unwrap_or(u8::MAX)),
            reasons: risk.map_or(0, |r| {
                Reason::to_bits(&r.reasons) | if r.new_account { 0x80 } else { 0 }
            }),
        };
        c.offer(self.shared.keys.challenge_key(), p)
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
        let kind = c.kind.as_str();
        let refuse = |r: challenge::Refusal| {
            metrics::CHALLENGES
                .with_label_values(&[kind, r.code()])
                .inc();
            Err(ApiError::from(r).into())
        };
        let (invite_id, token_epoch) = match c.subject {
            Subject::Join {
                group,
                invite,
                epoch,
            } if group == self.id() => (invite, epoch),
            _ => return refuse(challenge::Refusal::Invalid),
        };
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
            self.count(invite_id, now, |b| b.challenges_failed += 1);
            self.flush_analytics(false);
            return refuse(challenge::Refusal::Failed);
        }
        let out = self.admit(
            m.user,
            Entry {
                invite_id,
                token_epoch,
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
                user_quota: None,
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

    /// The join decision for `user` through invitation `invite_id`
    /// (`None`: a newcomer, as a landing page asks before anyone joins).
    pub(super) fn admission(
        &self,
        invite_id: InviteId,
        token_epoch: u32,
        tag_ok: bool,
        user: Option<UserId>,
        now: i64,
    ) -> Result<Admission, Refusal> {
        join::decide(&Facts {
            now,
            invite: self.invites.get(&invite_id).map(Box::as_ref),
            tag_matches: tag_ok,
            token_epoch,
            group: &self.group,
            members: self.members.len() as u32,
            pending: self.requests.len() as u32,
            is_member: user.is_some_and(|u| self.members.contains(&u)),
            has_pending_request: user.is_some_and(|u| self.pending_by_user.contains_key(&u)),
            is_blocked: user.is_some_and(|u| self.blocks.contains(&u)),
        })
    }

    /// Whether a token's keyed tag is the one issued for its invitation.
    pub(super) fn tag_ok(&self, claims: &Claims, tag: &[u8; 32]) -> bool {
        // blake3::Hash comparison is constant-time.
        self.invites
            .get(&claims.invite_id)
            .is_some_and(|i| blake3::Hash::from(i.tag) == blake3::Hash::from(*tag))
    }

    fn join(&mut self, m: Join) -> Step<JoinOutcome> {
        let entry = Entry {
            invite_id: m.claims.invite_id,
            token_epoch: m.claims.epoch,
            tag_ok: self.tag_ok(&m.claims, &m.tag),
            solved: None,
            user_quota: m.user_quota,
        };
        self.admit(m.user, entry, m.signals, now())
    }
}

/// The answer to a refused attempt, once `stored` (a step-up or a listing
/// the attempt caused) is on disk.
fn after(stored: Option<Pending<()>>, err: ApiError) -> Step<JoinOutcome> {
    match stored {
        Some(durable) => Ok(Box::pin(async move {
            durable.await?;
            Err(Fail::Api(err))
        })),
        None => Err(err.into()),
    }
}

/// The group actor answering [`join::plan`]'s questions for one attempt,
/// keeping the writes they caused.
struct Asked<'a> {
    actor: &'a mut GroupActor,
    user: UserId,
    /// The attempt's invitation as it will be stored (a step-up changes it).
    invite: Option<Box<Invite>>,
    signals: Option<UserSignals>,
    /// For an answer: the risk of the attempt its challenge interrupted.
    solved: Option<JoinRisk>,
    user_quota: Option<Result<(), u64>>,
    now: i64,
    listed: Option<Pending<()>>,
    stepped: Option<Pending<()>>,
}

impl join::Inputs for Asked<'_> {
    fn user_quota(&mut self) -> Result<(), u64> {
        if let Some(counted) = self.user_quota {
            return counted;
        }
        self.actor.shared.count_user_join(&self.user)
    }

    fn risk(&mut self) -> Option<JoinRisk> {
        if let Some(d) = self.signals.and_then(|s| s.device) {
            self.actor.shared.signals.note_device(d, self.user);
        }
        if let Some(r) = &self.solved {
            return Some(r.clone());
        }
        let (signals, invite) = (self.signals?, self.invite.as_deref()?);
        let (risk, listed) = self.actor.score(invite, self.user, signals, self.now);
        self.listed = listed;
        Some(risk)
    }

    fn step_up(&mut self) -> Stage {
        let Some(invite) = self.invite.as_deref_mut() else {
            return Stage::Open;
        };
        let (stage, stepped) = self.actor.step_up(invite, self.now);
        self.stepped = stepped;
        stage
    }

    fn queue_full(&mut self) -> bool {
        let Some(invite) = self.invite.as_deref() else {
            return false;
        };
        let cap = self
            .actor
            .shared
            .config
            .limits
            .max_pending_requests_per_invite;
        let waiting = self
            .actor
            .requests
            .values()
            .filter(|r| r.invite_id == invite.id)
            .count();
        waiting >= cap
    }

    fn group_quota(&mut self) -> Result<(), u64> {
        let actor = &self.actor;
        actor
            .limiter
            .check()
            .map_err(|nu| retry_after_secs(&nu, &actor.shared.clock))
    }
}

impl JoinRisk {
    /// Kept with the membership when there is something to say.
    fn worth_keeping(&self) -> bool {
        self.score > 0 || self.challenged || self.new_account
    }
}
