//! The GroupActor: single writer of one group's state (membership, admins,
//! blocks, invitations, approval queue, rate limiter).
//!
//! Every mutating handler follows one pattern: decide on the current state,
//! build the [`WriteSet`] of the change, submit it to storage (which fixes its
//! order), apply the same change to memory, and answer with a future that
//! resolves once the write set is durable (group commit). The actor keeps
//! serving its mailbox while flushes are in flight. If a write set fails, the
//! actor is poisoned: it retires at its next message and the group is rebuilt
//! from storage, so memory never stays ahead of what was stored.

use crate::clock::now;
use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::analytics::{minute, Analytics};
use super::shared::Shared;
use crate::domain::events::{Event, EventKind};
use crate::domain::group::{Group, Invite, JoinRequest, Member, Role};
use crate::domain::ids::{GroupId, InviteId, RequestId, UserId};
use crate::domain::join::{Admission, Refusal};
use crate::domain::roster::Roster;
use crate::domain::token::Claims;
use crate::error::ApiError;
use crate::registry::{done, Fail, Life, Pending, Resident, Step};
use crate::storage::{Counters, GroupSnapshot, WriteSet};

/// Invitations expired this long ago are dropped (a join with one then answers `invalid_token`).
const EXPIRED_INVITE_RETENTION: i64 = 30 * 24 * 3600;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    User(UserId),
    Admin,
}

impl Caller {
    pub(super) fn user(self) -> Option<UserId> {
        match self {
            Caller::User(u) => Some(u),
            Caller::Admin => None,
        }
    }
}

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Self {
        Fail::Api(r.into())
    }
}

pub(super) fn limiter(
    per_minute: u32,
    clock: &governor::clock::DefaultClock,
) -> DefaultDirectRateLimiter {
    // One shared clock: creating one per limiter costs a CPUID probe.
    RateLimiter::direct_with_clock(
        Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN)),
        clock.clone(),
    )
}

pub struct GroupActor {
    pub(super) life: Life<GroupActor>,
    pub(super) shared: Arc<Shared>,
    pub(super) group: Group,
    pub(super) members: Roster,
    pub(super) invites: HashMap<InviteId, Box<Invite>>,
    pub(super) requests: HashMap<RequestId, JoinRequest>,
    pub(super) pending_by_user: HashMap<UserId, RequestId>,
    pub(super) blocks: HashSet<UserId>,
    pub(super) limiter: DefaultDirectRateLimiter,
    /// Earliest expiry among pending requests (i64::MAX when none), so the
    /// per-message expiry check is O(1) until something is due.
    pub(super) next_expiry: i64,
    /// Per-minute counts of the group and its invitations.
    pub(super) analytics: Analytics,
    /// Tags of challenges passed here, until they expire (storage keeps
    /// them too; memory covers the answers whose join is still in flight).
    pub(super) used_challenges: HashMap<[u8; 16], i64>,
    /// Listed for the operator by its join reputation.
    pub(super) suspect: Option<crate::storage::Suspect>,
    /// When an operator last cleared the listing (attempts before it no
    /// longer count towards the reputation).
    pub(super) flag_cleared_at: i64,
    /// Who attempted and who was flagged through which invitation, in the
    /// window (so retries do not count again).
    pub(super) seen: HashMap<(InviteId, UserId), super::analytics::Seen>,
    /// A flush of the analytics is scheduled.
    pub(super) flush_scheduled: bool,
    analytics_pruned: bool,
}

impl GroupActor {
    fn new(mut snap: GroupSnapshot, life: Life<GroupActor>, shared: Arc<Shared>) -> Self {
        let legacy = std::mem::take(&mut snap.legacy_members);
        let rate = snap
            .group
            .join_rate_per_minute
            .unwrap_or(shared.config.limits.group_joins_per_minute);
        let next_expiry = snap
            .requests
            .iter()
            .map(|r| r.expires_at)
            .min()
            .unwrap_or(i64::MAX);
        let actor = GroupActor {
            life,
            limiter: limiter(rate, &shared.clock),
            analytics: Analytics::new(snap.group.id, shared.config.risk.window_minutes + 1),
            used_challenges: HashMap::new(),
            flag_cleared_at: snap
                .suspect
                .as_ref()
                .and_then(|s| s.cleared_at)
                .unwrap_or(0),
            suspect: snap.suspect.filter(|s| s.cleared_at.is_none()),
            seen: HashMap::new(),
            flush_scheduled: false,
            analytics_pruned: false,
            pending_by_user: snap.requests.iter().map(|r| (r.user_id, r.id)).collect(),
            group: snap.group,
            members: Roster::new(snap.members),
            invites: snap
                .invites
                .into_iter()
                .map(|i| (i.id, Box::new(i)))
                .collect(),
            requests: snap.requests.into_iter().map(|r| (r.id, r)).collect(),
            blocks: snap.blocks.into_iter().collect(),
            next_expiry,
            shared,
        };
        if !legacy.is_empty() {
            // Members stored one record each, before the buckets: store
            // them by bucket (until this is durable, both are read, and a
            // bucket's copy wins).
            let mut w = WriteSet::new();
            w.roster(actor.id(), &actor.members);
            w.drop_member_records(actor.id(), &legacy);
            actor.background(w);
        }
        actor
    }

    pub(super) fn id(&self) -> GroupId {
        self.group.id
    }

    pub(super) fn role(&self, c: Caller) -> Option<Role> {
        match c {
            Caller::Admin => Some(Role::Owner),
            Caller::User(u) => self.members.role(&u),
        }
    }

    pub(super) fn require_member(&self, c: Caller) -> Result<Role, ApiError> {
        self.role(c)
            .ok_or_else(|| ApiError::forbidden("only members of this group may do this"))
    }

    pub(super) fn require_moderator(&self, c: Caller) -> Result<Role, ApiError> {
        match self.role(c) {
            Some(r) if r.moderates() => Ok(r),
            _ => Err(ApiError::forbidden(
                "only the group's owner or admins may do this",
            )),
        }
    }

    /// Whether `c` may manage invitation `inv` (revoke it, burn its
    /// branch): its creator while still a member, the group's owner or
    /// admins, or an operator. `what` names the action in the refusal.
    pub(super) fn may_manage(&self, c: Caller, inv: &Invite, what: &str) -> Result<(), ApiError> {
        let is_creator = c
            .user()
            .is_some_and(|u| inv.creator_id == u && self.members.contains(&u));
        if is_creator || self.role(c).is_some_and(Role::moderates) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "only the invitation's creator, the group's owner or admins, or an operator may {what}"
        )))
    }

    pub(super) fn require_owner(&self, c: Caller, what: &str) -> Result<(), ApiError> {
        match self.role(c) {
            Some(Role::Owner) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "only the group's owner may {what}"
            ))),
        }
    }

    /// Submit `w` now (its place in the commit order is fixed here) and answer
    /// with `value` once it is durable.
    pub(super) fn commit<T: Send + 'static>(&self, mut w: WriteSet, value: T) -> Pending<T> {
        w.fence(self.life.fence());
        let durable = self
            .shared
            .storage
            .submit_tracked(w, Some(Arc::clone(&self.life.writes)));
        Box::pin(async move {
            durable.await?;
            Ok(value)
        })
    }

    /// Answer `value` once everything this actor submitted before is durable
    /// (for requests that change nothing because an earlier one already did).
    pub(super) fn after_pending_writes<T: Send + 'static>(&self, value: T) -> Step<T> {
        Ok(self.commit(WriteSet::new(), value))
    }

    pub(super) fn event(&self, users: Vec<UserId>, kind: EventKind) -> Event {
        Event::for_group(self.id(), users, now(), kind)
    }

    pub(super) fn moderators(&self) -> impl Iterator<Item = UserId> + '_ {
        self.members
            .roles()
            .filter(|(_, r)| r.moderates())
            .map(|(u, _)| u)
    }

    /// Drop the pending requests that came through `invites` (revoked, or
    /// their branch burned) into `w`, each with an event to its requester
    /// and the group's feed; returns them, to forget once `w` is committed.
    pub(super) fn drop_requests_through(
        &self,
        w: &mut WriteSet,
        invites: &std::collections::HashSet<InviteId>,
    ) -> Vec<JoinRequest> {
        let dropped: Vec<JoinRequest> = self
            .requests
            .values()
            .filter(|r| invites.contains(&r.invite_id))
            .cloned()
            .collect();
        for r in &dropped {
            w.remove_request(self.id(), r);
            w.event(&self.event(
                vec![r.user_id],
                EventKind::JoinRequestDropped {
                    group_id: self.id(),
                    request_id: r.id,
                    user_id: r.user_id,
                    invite_id: r.invite_id,
                },
            ));
        }
        dropped
    }

    pub(super) fn forget_request(&mut self, r: &JoinRequest) {
        self.requests.remove(&r.id);
        self.pending_by_user.remove(&r.user_id);
        self.next_expiry = self
            .requests
            .values()
            .map(|r| r.expires_at)
            .min()
            .unwrap_or(i64::MAX);
    }

    /// Drop join requests whose time ran out, releasing their seats.
    fn expire(&mut self, now: i64) {
        if now < self.next_expiry {
            return;
        }
        let expired: Vec<JoinRequest> = self
            .requests
            .values()
            .filter(|r| r.expires_at <= now)
            .cloned()
            .collect();
        let mut w = WriteSet::new();
        for r in &expired {
            w.remove_request(self.id(), r);
            w.event(&self.event(
                vec![r.user_id],
                EventKind::JoinRequestExpired {
                    group_id: self.id(),
                    request_id: r.id,
                    user_id: r.user_id,
                },
            ));
        }
        self.background(w);
        for r in &expired {
            self.forget_request(r);
        }
    }

    /// Forget invitations that expired long ago (bounded memory per group).
    fn prune_invites(&mut self, now: i64) {
        let stale: Vec<Invite> = self
            .invites
            .values()
            .filter(|i| i.expires_at + EXPIRED_INVITE_RETENTION <= now)
            .map(|i| (**i).clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut w = WriteSet::new();
        for i in &stale {
            w.remove_invite(i);
            self.invites.remove(&i.id);
        }
        self.background(w);
    }

    /// Submit a write nobody waits on. It is queued at once (dropping the
    /// future does not cancel it) and the tracker keeps the actor resident
    /// until it is durable.
    pub(super) fn background(&self, w: WriteSet) {
        drop(self.commit(w, ()));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now();
        self.expire(now);
        self.prune_invites(now);
        self.used_challenges.retain(|_, exp| *exp > now);
        self.prune_seen(now);
        self.prune_analytics(now);
        // Counts are written before the actor may be passivated (a write
        // in flight keeps it resident until the next tick).
        self.flush_analytics(true);
        let idle = Duration::from_secs(self.shared.config.actors.idle_timeout_seconds);
        self.life.tick(ctx, idle);
    }

    /// Once per activation: drop analytics older than the retention.
    fn prune_analytics(&mut self, now: i64) {
        if std::mem::replace(&mut self.analytics_pruned, true) {
            return;
        }
        let days = self.shared.config.risk.analytics_retention_days;
        let before = minute(now).saturating_sub(days.saturating_mul(24 * 60));
        match self
            .shared
            .storage
            .stale_analytics(self.id(), before, 10_000)
        {
            Ok(stale) if !stale.is_empty() => {
                let mut w = WriteSet::new();
                for (scope, m) in stale {
                    w.remove_analytics(self.id(), scope, m);
                }
                self.background(w);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(group = %self.id(), error = %e, "analytics pruning skipped"),
        }
    }

    /// Run first in every handler (after `life.touch`): settle due requests.
    pub(super) fn catch_up(&mut self, ctx: &mut Context<Self>) {
        self.expire(now());
        // Whatever this message counts is written within a second.
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(super::analytics::FLUSH_EVERY, |a, _| {
                a.flush_scheduled = false;
                a.flush_analytics(true);
            });
        }
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Life::started(
            ctx,
            self.shared.config.actors.idle_timeout_seconds,
            Self::tick,
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Best effort when stopped from outside (a shutdown): queue what was
        // counted (a passivation flushed already, in `tick`).
        if self.analytics.is_dirty() {
            drop(self.shared.storage.submit(self.analytics.take(now())));
        }
        self.life.stopped();
    }
}

impl Resident for GroupActor {
    type Id = GroupId;
    type Snapshot = GroupSnapshot;
    type Env = Shared;
    const KIND: &'static str = "group";

    fn storage(env: &Shared) -> &crate::storage::Storage {
        &env.storage
    }

    fn metrics() -> &'static crate::metrics::ActorMetrics {
        &crate::metrics::GROUP_ACTORS
    }

    fn load(env: &Shared, id: GroupId) -> Result<GroupSnapshot, ApiError> {
        env.storage.load_group(id)?.ok_or(ApiError::GroupNotFound)
    }

    fn activate(snap: GroupSnapshot, life: Life<Self>, env: Arc<Shared>) -> Self {
        GroupActor::new(snap, life, env)
    }

    fn spread(id: &GroupId) -> (u8, u8) {
        (id.0[0], id.0[1])
    }
}

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

// ---------------- reads ----------------

#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub group: Group,
    pub member_count: u32,
    pub pending_count: u32,
    pub my_role: Option<Role>,
    /// Counters, shown to moderators only.
    pub counters: Option<Counters>,
}

message!(GetGroup -> GroupInfo { caller: Caller } => get_group);
message!(ListMembers -> Vec<Member> { caller: Caller } => list_members);
message!(IsMember -> bool { user: UserId } => is_member);
message!(GetInvite -> (Invite, Group) { caller: Caller, invite_id: InviteId } => get_invite);
message!(ListRequests -> Vec<JoinRequest> { caller: Caller } => list_requests);
// Sent by the directory's sweeper when a join request of this group is due to expire.
message!(Sweep -> () {} => sweep);
message!(Preview -> InvitePreview { claims: Claims, tag: [u8; 32] } => preview);

/// What a landing page shows about an invitation before anyone joins: the
/// group, and whether a newcomer could join through it now (the join
/// decision for a user who is not a member, has no request and is not blocked).
#[derive(Debug, Clone)]
pub struct InvitePreview {
    pub group: Group,
    pub member_count: u32,
    /// When the group shows them: up to 9 members, the owner and then the
    /// earliest (the page shows their initials).
    pub members: Vec<UserId>,
    pub expires_at: i64,
    pub admission: Result<Admission, crate::domain::join::Refusal>,
}

impl GroupActor {
    fn get_group(&mut self, m: GetGroup) -> Step<GroupInfo> {
        // Counters are an extra for moderators: the group is still shown
        // (from memory) when they cannot be read.
        let counters = if self.role(m.caller).is_some_and(Role::moderates) {
            match self.shared.counters.group(&self.shared.storage, self.id()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(group = %self.id(), error = %e, "group counters unreadable");
                    None
                }
            }
        } else {
            None
        };
        done(GroupInfo {
            group: self.group.clone(),
            member_count: self.members.len() as u32,
            pending_count: self.requests.len() as u32,
            my_role: m.caller.user().and_then(|u| self.members.role(&u)),
            counters,
        })
    }

    fn preview(&mut self, m: Preview) -> Step<InvitePreview> {
        let now = now();
        let tag_ok = self.tag_ok(&m.claims, &m.tag);
        let mut admission = self.admission(m.claims.invite_id, m.claims.epoch, tag_ok, None, now);
        if tag_ok {
            self.count_scan(m.claims.invite_id, now);
            let paused = self
                .invites
                .get(&m.claims.invite_id)
                .is_some_and(|i| i.stage == crate::domain::risk::Stage::Paused);
            if admission.is_ok()
                && paused
                && self.shared.config.risk.mode == crate::domain::risk::Mode::Enforce
            {
                admission = Err(Refusal::Paused);
            }
        }
        let members = if self.group.preview_members {
            // The owner first, then by arrival.
            let mut all: Vec<(bool, i64, UserId)> = self
                .members
                .members()
                .map(|m| (m.role != Role::Owner, m.joined_at, m.user_id))
                .collect();
            all.sort_unstable();
            all.into_iter().take(9).map(|(_, _, u)| u).collect()
        } else {
            vec![]
        };
        done(InvitePreview {
            group: self.group.clone(),
            member_count: self.members.len() as u32,
            members,
            expires_at: self
                .invites
                .get(&m.claims.invite_id)
                .map_or(0, |i| i.expires_at),
            admission,
        })
    }

    fn list_members(&mut self, m: ListMembers) -> Step<Vec<Member>> {
        self.require_member(m.caller)?;
        let mut v: Vec<Member> = self.members.members().collect();
        v.sort_by_key(|m| (m.joined_at, m.user_id));
        done(v)
    }

    fn is_member(&mut self, m: IsMember) -> Step<bool> {
        done(self.members.contains(&m.user))
    }

    fn get_invite(&mut self, m: GetInvite) -> Step<(Invite, Group)> {
        self.require_member(m.caller)?;
        let i = self
            .invites
            .get(&m.invite_id)
            .ok_or(ApiError::InviteNotFound)?;
        done(((**i).clone(), self.group.clone()))
    }

    fn list_requests(&mut self, m: ListRequests) -> Step<Vec<JoinRequest>> {
        self.require_moderator(m.caller)?;
        let mut v: Vec<JoinRequest> = self.requests.values().cloned().collect();
        v.sort_by_key(|r| (r.created_at, r.id));
        done(v)
    }

    /// `touch` already expired what was due.
    fn sweep(&mut self, _: Sweep) -> Step<()> {
        done(())
    }
}
