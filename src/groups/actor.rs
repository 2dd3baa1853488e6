//! The GroupActor: single writer of one group's state (membership, admins,
//! blocks, invitations, approval queue, rate limiter).
//!
//! Every mutating handler follows one pattern: decide on the current state,
//! build the [`WriteSet`] of the new records, apply it to storage, then apply
//! the same change to memory, and answer only after [`Storage::sync`] (group
//! commit). The durability wait runs outside the actor (`ResponseFuture`), so
//! the actor keeps serving its mailbox while flushes are in flight.

use actix::prelude::*;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::directory::{DirInner, Shared};
use crate::domain::events::{Event, EventKind};
use crate::domain::group::{Group, GroupStatus, Invite, JoinRequest, Member, Role};
use crate::domain::ids::{GroupId, InviteId, RequestId, UserId};
use crate::domain::join::{self, Admission, Facts};
use crate::domain::token::Claims;
use crate::error::ApiError;
use crate::metrics;
use crate::storage::{Counters, GroupSnapshot, WriteSet};

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    User(UserId),
    Admin,
}

/// Failure of a message: an API error, or "this actor was passivated, ask the
/// directory again".
#[derive(Debug)]
pub enum Fail {
    Api(ApiError),
    Retired,
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl From<crate::storage::StorageError> for Fail {
    fn from(e: crate::storage::StorageError) -> Self {
        Fail::Api(e.into())
    }
}

pub type Reply<T> = ResponseFuture<Result<T, Fail>>;

fn ready<T: 'static>(r: Result<T, Fail>) -> Reply<T> {
    Box::pin(std::future::ready(r))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_minute(
        NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
    ))
}

pub struct GroupActor {
    gen: u64,
    dir: Arc<DirInner>,
    shared: Arc<Shared>,
    group: Group,
    members: HashMap<UserId, Member>,
    invites: HashMap<InviteId, Invite>,
    requests: HashMap<RequestId, JoinRequest>,
    pending_by_user: HashMap<UserId, RequestId>,
    blocks: HashSet<UserId>,
    limiter: DefaultDirectRateLimiter,
    /// Earliest expiry among pending requests (i64::MAX when none), so the
    /// per-message expiry check is O(1) until something is due.
    next_expiry: i64,
    last_active: Instant,
    retired: bool,
}

impl GroupActor {
    pub(super) fn new(
        snap: GroupSnapshot,
        gen: u64,
        dir: Arc<DirInner>,
        shared: Arc<Shared>,
    ) -> Self {
        let rate = snap
            .group
            .join_rate_per_minute
            .unwrap_or(shared.config.limits.group_joins_per_minute);
        let pending_by_user = snap.requests.iter().map(|r| (r.user_id, r.id)).collect();
        let next_expiry = snap
            .requests
            .iter()
            .map(|r| r.expires_at)
            .min()
            .unwrap_or(i64::MAX);
        GroupActor {
            gen,
            dir,
            limiter: limiter(rate),
            group: snap.group,
            members: snap.members.into_iter().map(|m| (m.user_id, m)).collect(),
            invites: snap.invites.into_iter().map(|i| (i.id, i)).collect(),
            requests: snap.requests.into_iter().map(|r| (r.id, r)).collect(),
            pending_by_user,
            next_expiry,
            blocks: snap.blocks.into_iter().collect(),
            shared,
            last_active: Instant::now(),
            retired: false,
        }
    }

    fn id(&self) -> GroupId {
        self.group.id
    }

    fn role(&self, c: Caller) -> Option<Role> {
        match c {
            Caller::Admin => Some(Role::Owner),
            Caller::User(u) => self.members.get(&u).map(|m| m.role),
        }
    }

    fn require_member(&self, c: Caller) -> Result<Role, ApiError> {
        self.role(c)
            .ok_or_else(|| ApiError::forbidden("only members of this group may do this"))
    }

    fn require_moderator(&self, c: Caller) -> Result<Role, ApiError> {
        match self.role(c) {
            Some(r) if r.moderates() => Ok(r),
            _ => Err(ApiError::forbidden(
                "only the group's owner or admins may do this",
            )),
        }
    }

    /// Apply `w` to storage now and answer with `value` once it is durable.
    fn commit<T: 'static>(&self, w: WriteSet, value: T) -> Reply<T> {
        let storage = self.shared.storage.clone();
        if let Err(e) = storage.write(w) {
            return ready(Err(e.into()));
        }
        Box::pin(async move {
            storage.sync().await?;
            Ok(value)
        })
    }

    fn event(&self, users: Vec<UserId>, kind: EventKind) -> Event {
        Event::for_group(self.id(), users, now(), kind)
    }

    /// Drop join requests whose time ran out, releasing their seats.
    fn expire_requests(&mut self, now: i64) {
        if now < self.next_expiry {
            return;
        }
        let expired: Vec<JoinRequest> = self
            .requests
            .values()
            .filter(|r| r.expires_at <= now)
            .cloned()
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut w = WriteSet::new();
        for r in &expired {
            w.remove_request(self.id(), r.id);
            w.event(self.event(
                vec![r.user_id],
                EventKind::JoinRequestExpired {
                    group_id: self.id(),
                    request_id: r.id,
                    user_id: r.user_id,
                },
            ));
        }
        match self.shared.storage.write(w) {
            Ok(()) => {
                for r in expired {
                    self.requests.remove(&r.id);
                    self.pending_by_user.remove(&r.user_id);
                }
                self.next_expiry = self
                    .requests
                    .values()
                    .map(|r| r.expires_at)
                    .min()
                    .unwrap_or(i64::MAX);
                // Nobody waits on this: the next flush makes it durable.
                let storage = self.shared.storage.clone();
                actix::spawn(async move {
                    let _ = storage.sync().await;
                });
            }
            Err(e) => {
                tracing::error!(group = %self.id(), error = %e, "expiring join requests failed")
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.expire_requests(now());
        let idle = Duration::from_secs(self.shared.config.actors.idle_timeout_seconds);
        if self.last_active.elapsed() >= idle {
            self.dir.forget(self.id(), self.gen);
            self.retired = true;
            metrics::ACTOR_PASSIVATIONS.inc();
            ctx.stop();
        }
    }

    /// Common preamble of every handler: refuse if retired, note activity.
    fn touch(&mut self) -> Result<(), Fail> {
        if self.retired {
            return Err(Fail::Retired);
        }
        self.last_active = Instant::now();
        self.expire_requests(now());
        Ok(())
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::ACTORS_RESIDENT.inc();
        metrics::ACTOR_ACTIVATIONS.inc();
        ctx.set_mailbox_capacity(self.shared.config.actors.mailbox);
        let idle = self.shared.config.actors.idle_timeout_seconds.max(1);
        let every = Duration::from_secs(idle.div_ceil(2).clamp(1, 30));
        ctx.run_interval(every, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::ACTORS_RESIDENT.dec();
        // A stop not caused by passivation (e.g. system shutdown) must also
        // leave the directory, so nobody keeps sending to a dead mailbox.
        if !self.retired {
            self.dir.forget(self.id(), self.gen);
        }
    }
}

macro_rules! message {
    ($name:ident -> $ret:ty { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone)]
        pub struct $name { $(pub $field: $ty),* }
        impl Message for $name { type Result = Result<$ret, Fail>; }
    };
}

// ---------------- join ----------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    Pending(RequestId),
}

message!(Join -> JoinOutcome { user: UserId, claims: Claims, tag: [u8; 32] });

impl Handler<Join> for GroupActor {
    type Result = Reply<JoinOutcome>;

    fn handle(&mut self, m: Join, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        let now = now();
        let invite = self.invites.get(&m.claims.invite_id);
        let facts = Facts {
            now,
            invite,
            // blake3::Hash comparison is constant-time.
            tag_matches: invite
                .is_some_and(|i| blake3::Hash::from(i.tag) == blake3::Hash::from(m.tag)),
            token_epoch: m.claims.epoch,
            group: &self.group,
            members: self.members.len() as u32,
            pending: self.requests.len() as u32,
            is_member: self.members.contains_key(&m.user),
            has_pending_request: self.pending_by_user.contains_key(&m.user),
            is_blocked: self.blocks.contains(&m.user),
        };
        let admission = match join::decide(&facts) {
            Ok(a) => a,
            Err(r) => return ready(Err(ApiError::from(r).into())),
        };
        // Rate limits come last among the checks: a refused join costs nothing.
        let clock = DefaultClock::default();
        if let Err(nu) = self.limiter.check() {
            return ready(Err(ApiError::RateLimited {
                scope: "joins into this group",
                retry_after_secs: nu.wait_time_from(clock.now()).as_secs() + 1,
            }
            .into()));
        }
        if let Err(nu) = self.shared.user_limiter.check_key(&m.user) {
            return ready(Err(ApiError::RateLimited {
                scope: "joins by this user",
                retry_after_secs: nu.wait_time_from(clock.now()).as_secs() + 1,
            }
            .into()));
        }
        let Some(mut invite) = invite.cloned() else {
            return ready(Err(ApiError::Internal.into()));
        };
        invite.uses += 1;
        let gid = self.id();
        let mut w = WriteSet::new();
        if let Err(e) = w.invite(&invite) {
            return ready(Err(e.into()));
        }
        match admission {
            Admission::Grant => {
                let member = Member {
                    user_id: m.user,
                    role: Role::Member,
                    joined_at: now,
                    via_invite: Some(invite.id),
                    invited_by: Some(invite.creator_id),
                };
                if let Err(e) = w.member(gid, &member) {
                    return ready(Err(e.into()));
                }
                w.event(self.event(
                    vec![m.user],
                    EventKind::MemberJoined {
                        group_id: gid,
                        user_id: m.user,
                        via_invite: Some(invite.id),
                    },
                ));
                let reply = self.commit(w, JoinOutcome::Joined);
                self.members.insert(m.user, member);
                self.invites.insert(invite.id, invite);
                reply
            }
            Admission::Request => {
                let req = JoinRequest {
                    id: RequestId::random(),
                    user_id: m.user,
                    invite_id: invite.id,
                    invited_by: invite.creator_id,
                    created_at: now,
                    expires_at: now + self.shared.config.limits.join_request_ttl_seconds,
                };
                if let Err(e) = w.request(gid, &req) {
                    return ready(Err(e.into()));
                }
                let mut notify: Vec<UserId> = vec![m.user];
                notify.extend(self.moderators());
                w.event(self.event(
                    notify,
                    EventKind::JoinRequested {
                        group_id: gid,
                        request_id: req.id,
                        user_id: m.user,
                        via_invite: invite.id,
                    },
                ));
                let reply = self.commit(w, JoinOutcome::Pending(req.id));
                self.next_expiry = self.next_expiry.min(req.expires_at);
                self.pending_by_user.insert(m.user, req.id);
                self.requests.insert(req.id, req);
                self.invites.insert(invite.id, invite);
                reply
            }
        }
    }
}

impl GroupActor {
    fn moderators(&self) -> impl Iterator<Item = UserId> + '_ {
        self.members
            .values()
            .filter(|m| m.role.moderates())
            .map(|m| m.user_id)
    }
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

message!(GetGroup -> GroupInfo { caller: Caller });

impl Handler<GetGroup> for GroupActor {
    type Result = Reply<GroupInfo>;

    fn handle(&mut self, m: GetGroup, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        let my_role = match m.caller {
            Caller::Admin => None,
            Caller::User(u) => self.members.get(&u).map(|x| x.role),
        };
        let counters = if self.role(m.caller).is_some_and(Role::moderates) {
            match self.shared.storage.group_counters(self.id()) {
                Ok(c) => Some(c),
                Err(e) => return ready(Err(e.into())),
            }
        } else {
            None
        };
        ready(Ok(GroupInfo {
            group: self.group.clone(),
            member_count: self.members.len() as u32,
            pending_count: self.requests.len() as u32,
            my_role,
            counters,
        }))
    }
}

message!(ListMembers -> Vec<Member> { caller: Caller });

impl Handler<ListMembers> for GroupActor {
    type Result = Reply<Vec<Member>>;

    fn handle(&mut self, m: ListMembers, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if let Err(e) = self.require_member(m.caller) {
            return ready(Err(e.into()));
        }
        let mut v: Vec<Member> = self.members.values().cloned().collect();
        v.sort_by_key(|m| (m.joined_at, m.user_id));
        ready(Ok(v))
    }
}

message!(IsMember -> bool { user: UserId });

impl Handler<IsMember> for GroupActor {
    type Result = Reply<bool>;

    fn handle(&mut self, m: IsMember, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        ready(Ok(self.members.contains_key(&m.user)))
    }
}

// ---------------- invitations ----------------

message!(CreateInvite -> Invite { creator: UserId, ttl_seconds: i64, max_uses: Option<u32> });

impl Handler<CreateInvite> for GroupActor {
    type Result = Reply<Invite>;

    fn handle(&mut self, m: CreateInvite, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if let Err(e) = self.require_member(Caller::User(m.creator)) {
            return ready(Err(e.into()));
        }
        if self.group.status == GroupStatus::Banned {
            return ready(Err(ApiError::from(join::Refusal::GroupBanned).into()));
        }
        let keys = &self.shared.keys;
        let now = now();
        let claims = Claims {
            kid: keys.active_kid(),
            invite_id: InviteId::random(),
            group_ref: keys.group_ref(self.id()),
            epoch: self.group.epoch,
            creator_ref: keys.creator_ref(m.creator),
            expires_at: now + m.ttl_seconds,
        };
        let token = keys.sign(claims);
        let tag = match crate::domain::token::parse(&token) {
            Ok(p) => p.tag(keys.tag_key()),
            Err(_) => return ready(Err(ApiError::Internal.into())),
        };
        let invite = Invite {
            id: claims.invite_id,
            group_id: self.id(),
            creator_id: m.creator,
            created_at: now,
            expires_at: claims.expires_at,
            max_uses: m.max_uses,
            uses: 0,
            revoked: false,
            epoch: self.group.epoch,
            tag,
            token,
        };
        let mut w = WriteSet::new();
        if let Err(e) = w.invite(&invite) {
            return ready(Err(e.into()));
        }
        let reply = self.commit(w, invite.clone());
        self.invites.insert(invite.id, invite);
        reply
    }
}

// Read one invitation (members of the group, operators).
message!(GetInvite -> (Invite, Group) { caller: Caller, invite_id: InviteId });

impl Handler<GetInvite> for GroupActor {
    type Result = Reply<(Invite, Group)>;

    fn handle(&mut self, m: GetInvite, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if let Err(e) = self.require_member(m.caller) {
            return ready(Err(e.into()));
        }
        match self.invites.get(&m.invite_id) {
            Some(i) => ready(Ok((i.clone(), self.group.clone()))),
            None => ready(Err(ApiError::InviteNotFound.into())),
        }
    }
}

message!(RevokeInvite -> () { caller: Caller, invite_id: InviteId });

impl Handler<RevokeInvite> for GroupActor {
    type Result = Reply<()>;

    fn handle(&mut self, m: RevokeInvite, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        let Some(inv) = self.invites.get(&m.invite_id) else {
            return ready(Err(ApiError::InviteNotFound.into()));
        };
        let allowed = match m.caller {
            Caller::Admin => true,
            Caller::User(u) => {
                inv.creator_id == u && self.members.contains_key(&u)
                    || self.role(m.caller).is_some_and(Role::moderates)
            }
        };
        if !allowed {
            return ready(Err(ApiError::forbidden(
                "only the invitation's creator, the group's owner or admins, or an operator may revoke it",
            )
            .into()));
        }
        if inv.revoked {
            return ready(Ok(()));
        }
        let mut inv = inv.clone();
        inv.revoked = true;
        let mut w = WriteSet::new();
        if let Err(e) = w.invite(&inv) {
            return ready(Err(e.into()));
        }
        w.event(self.event(
            vec![],
            EventKind::InviteRevoked {
                group_id: self.id(),
                invite_id: inv.id,
            },
        ));
        let reply = self.commit(w, ());
        self.invites.insert(inv.id, inv);
        reply
    }
}

// ---------------- approvals ----------------

message!(ListRequests -> Vec<JoinRequest> { caller: Caller });

impl Handler<ListRequests> for GroupActor {
    type Result = Reply<Vec<JoinRequest>>;

    fn handle(&mut self, m: ListRequests, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if let Err(e) = self.require_moderator(m.caller) {
            return ready(Err(e.into()));
        }
        let mut v: Vec<JoinRequest> = self.requests.values().cloned().collect();
        v.sort_by_key(|r| (r.created_at, r.id));
        ready(Ok(v))
    }
}

message!(Decide -> UserId { caller: Caller, request_id: RequestId, approve: bool });

impl Handler<Decide> for GroupActor {
    type Result = Reply<UserId>;

    fn handle(&mut self, m: Decide, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if let Err(e) = self.require_moderator(m.caller) {
            return ready(Err(e.into()));
        }
        let Some(req) = self.requests.get(&m.request_id).cloned() else {
            return ready(Err(ApiError::RequestNotPending.into()));
        };
        if m.approve && self.group.status == GroupStatus::Banned {
            return ready(Err(ApiError::from(join::Refusal::GroupBanned).into()));
        }
        let gid = self.id();
        let mut w = WriteSet::new();
        w.remove_request(gid, req.id);
        let member = Member {
            user_id: req.user_id,
            role: Role::Member,
            joined_at: now(),
            via_invite: Some(req.invite_id),
            invited_by: Some(req.invited_by),
        };
        let kind = if m.approve {
            if let Err(e) = w.member(gid, &member) {
                return ready(Err(e.into()));
            }
            EventKind::JoinApproved {
                group_id: gid,
                request_id: req.id,
                user_id: req.user_id,
                decided_by: match m.caller {
                    Caller::User(u) => Some(u),
                    Caller::Admin => None,
                },
            }
        } else {
            EventKind::JoinRejected {
                group_id: gid,
                request_id: req.id,
                user_id: req.user_id,
                decided_by: match m.caller {
                    Caller::User(u) => Some(u),
                    Caller::Admin => None,
                },
            }
        };
        w.event(self.event(vec![req.user_id], kind));
        if m.approve {
            w.event(self.event(
                vec![],
                EventKind::MemberJoined {
                    group_id: gid,
                    user_id: req.user_id,
                    via_invite: Some(req.invite_id),
                },
            ));
        }
        let reply = self.commit(w, req.user_id);
        self.requests.remove(&req.id);
        self.pending_by_user.remove(&req.user_id);
        if m.approve {
            // The seat was reserved by the request: approval cannot overfill.
            self.members.insert(req.user_id, member);
        }
        reply
    }
}

// ---------------- moderation ----------------

message!(Block -> () { caller: Caller, user: UserId });

impl Handler<Block> for GroupActor {
    type Result = Reply<()>;

    fn handle(&mut self, m: Block, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        let my_role = match self.require_moderator(m.caller) {
            Ok(r) => r,
            Err(e) => return ready(Err(e.into())),
        };
        if m.user == self.group.owner_id {
            return ready(Err(ApiError::Conflict("cannot_block_owner").into()));
        }
        if let Caller::User(u) = m.caller {
            if u == m.user {
                return ready(Err(ApiError::validation("you cannot block yourself").into()));
            }
        }
        if my_role == Role::Admin
            && self
                .members
                .get(&m.user)
                .is_some_and(|x| x.role == Role::Admin)
        {
            return ready(Err(ApiError::forbidden(
                "only the owner may block a group admin",
            )
            .into()));
        }
        if self.blocks.contains(&m.user) {
            return ready(Ok(()));
        }
        let gid = self.id();
        let mut w = WriteSet::new();
        w.block(gid, m.user, now());
        // Blocking removes the member and drops a pending request.
        let was_member = self.members.contains_key(&m.user);
        if was_member {
            w.remove_member(gid, m.user);
        }
        let pending = self.pending_by_user.get(&m.user).copied();
        if let Some(rid) = pending {
            w.remove_request(gid, rid);
        }
        w.event(self.event(
            vec![m.user],
            EventKind::MemberBlocked {
                group_id: gid,
                user_id: m.user,
            },
        ));
        let reply = self.commit(w, ());
        self.blocks.insert(m.user);
        self.members.remove(&m.user);
        if let Some(rid) = pending {
            self.requests.remove(&rid);
            self.pending_by_user.remove(&m.user);
        }
        reply
    }
}

message!(SetAdmin -> () { caller: Caller, user: UserId, admin: bool });

impl Handler<SetAdmin> for GroupActor {
    type Result = Reply<()>;

    fn handle(&mut self, m: SetAdmin, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if self.role(m.caller) != Some(Role::Owner) {
            return ready(Err(ApiError::forbidden(
                "only the group's owner may appoint or remove admins",
            )
            .into()));
        }
        let Some(member) = self.members.get(&m.user) else {
            return ready(Err(ApiError::validation(
                "that user is not a member of this group",
            )
            .into()));
        };
        if member.role == Role::Owner {
            return ready(Err(
                ApiError::validation("the owner's role cannot change").into()
            ));
        }
        let mut member = member.clone();
        member.role = if m.admin { Role::Admin } else { Role::Member };
        let mut w = WriteSet::new();
        if let Err(e) = w.member(self.id(), &member) {
            return ready(Err(e.into()));
        }
        let reply = self.commit(w, ());
        self.members.insert(m.user, member);
        reply
    }
}

message!(UpdateSettings -> Group {
    caller: Caller,
    description: Option<String>,
    approval_required: Option<bool>,
    join_rate_per_minute: Option<u32>,
});

impl Handler<UpdateSettings> for GroupActor {
    type Result = Reply<Group>;

    fn handle(&mut self, m: UpdateSettings, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        if self.role(m.caller) != Some(Role::Owner) {
            return ready(Err(ApiError::forbidden(
                "only the group's owner may change its settings",
            )
            .into()));
        }
        let max = self.shared.config.limits.group_joins_per_minute_max;
        if let Some(r) = m.join_rate_per_minute {
            if r == 0 || r > max {
                return ready(Err(ApiError::validation(format!(
                    "`join_rate_per_minute` must be between 1 and {max}"
                ))
                .into()));
            }
        }
        let mut g = self.group.clone();
        if let Some(d) = m.description {
            g.description = d;
        }
        if let Some(a) = m.approval_required {
            g.approval_required = a;
        }
        if m.join_rate_per_minute.is_some() {
            g.join_rate_per_minute = m.join_rate_per_minute;
        }
        let mut w = WriteSet::new();
        if let Err(e) = w.group(&g) {
            return ready(Err(e.into()));
        }
        let reply = self.commit(w, g.clone());
        if let Some(r) = m.join_rate_per_minute {
            self.limiter = limiter(r);
        }
        self.group = g;
        reply
    }
}

// Operator moderation: ban (burns every invitation by bumping the epoch) or unban.
message!(SetBanned -> Group { banned: bool, reason: String });

impl Handler<SetBanned> for GroupActor {
    type Result = Reply<Group>;

    fn handle(&mut self, m: SetBanned, _: &mut Context<Self>) -> Self::Result {
        if let Err(f) = self.touch() {
            return ready(Err(f));
        }
        let banned_now = self.group.status == GroupStatus::Banned;
        if banned_now == m.banned {
            return ready(Ok(self.group.clone()));
        }
        let mut g = self.group.clone();
        let kind = if m.banned {
            g.status = GroupStatus::Banned;
            g.epoch = g.epoch.wrapping_add(1);
            g.ban_reason = Some(m.reason.clone());
            EventKind::GroupBanned {
                group_id: g.id,
                reason: m.reason,
            }
        } else {
            g.status = GroupStatus::Active;
            g.ban_reason = None;
            EventKind::GroupUnbanned { group_id: g.id }
        };
        let mut w = WriteSet::new();
        if let Err(e) = w.group(&g) {
            return ready(Err(e.into()));
        }
        let mut notify: Vec<UserId> = Vec::new();
        if m.banned {
            // Pending joiners learn that their request will not be decided.
            notify.extend(self.pending_by_user.keys().copied());
        }
        w.event(self.event(notify, kind));
        let reply = self.commit(w, g.clone());
        self.group = g;
        reply
    }
}
