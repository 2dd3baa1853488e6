//! Decisions in the group's actor: a moderator approving or rejecting a
//! join request, blocking, naming admins, the owner's settings, and the
//! operator's ban.

use super::actor::{limiter, Caller, GroupActor};
use crate::clock::now;
use crate::domain::events::EventKind;
use crate::domain::group::{BanReason, Description, Group, GroupStatus, JoinRequest, Member, Role};
use crate::domain::ids::{InviteId, RequestId, UserId};
use crate::domain::join::Refusal;
use crate::error::ApiError;
use crate::registry::{done, Step};
use crate::storage::WriteSet;

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

message!(Decide -> UserId { caller: Caller, request_id: RequestId, approve: bool } => decide);
message!(RejectMany -> Rejected { caller: Caller, pick: Pick } => reject_many);
// An avatar upload: who may is checked before the image is decoded.
message!(MayModerate -> () { caller: Caller } => may_moderate);
message!(SetAvatar -> () { caller: Caller, jpeg: Option<bytes::Bytes> } => set_avatar);
message!(Block -> () { caller: Caller, user: UserId, known_user: bool } => block);
message!(SetAdmin -> () { caller: Caller, user: UserId, admin: bool } => set_admin);
message!(UpdateSettings -> Group {
    caller: Caller,
    description: Option<Description>,
    approval_required: Option<bool>,
    join_rate_per_minute: Option<u32>,
    preview_members: Option<bool>,
} => update_settings);
// Operator moderation: ban (burns every invitation by bumping the epoch) or unban.
message!(SetBanned -> Group { banned: bool, reason: BanReason } => set_banned);

/// Which pending requests a bulk rejection takes.
#[derive(Debug, Clone)]
pub enum Pick {
    /// These (unknown or already decided ones are reported, not refused).
    Ids(Vec<RequestId>),
    /// The oldest of those that came through this invitation.
    ViaInvite(InviteId),
}

/// Requests one bulk rejection takes at most (one write).
pub const MAX_BULK: usize = 500;

/// What a bulk rejection did.
pub struct Rejected {
    /// (request, requester), oldest first.
    pub rejected: Vec<(RequestId, UserId)>,
    /// Ids that named no pending request.
    pub not_found: Vec<RequestId>,
    /// Requests through the invitation still pending (`ViaInvite` only).
    pub remaining: usize,
}

impl GroupActor {
    /// Reject many pending requests in one write: each requester hears
    /// `join_rejected`, and their seats come free.
    fn reject_many(&mut self, m: RejectMany) -> Step<Rejected> {
        self.require_moderator(m.caller)?;
        let (mut picked, not_found) = match m.pick {
            Pick::Ids(ids) => {
                let (found, missing): (Vec<RequestId>, Vec<RequestId>) =
                    ids.into_iter().partition(|r| self.requests.contains_key(r));
                let picked: Vec<JoinRequest> = found
                    .iter()
                    .filter_map(|r| self.requests.get(r).cloned())
                    .collect();
                (picked, missing)
            }
            Pick::ViaInvite(iid) => {
                if !self.invites.contains_key(&iid) {
                    return Err(ApiError::InviteNotFound.into());
                }
                let picked: Vec<JoinRequest> = self
                    .requests
                    .values()
                    .filter(|r| r.invite_id == iid)
                    .cloned()
                    .collect();
                (picked, vec![])
            }
        };
        picked.sort_by_key(|r| (r.created_at, r.id.0));
        picked.dedup_by_key(|r| r.id);
        let remaining = picked.len().saturating_sub(MAX_BULK);
        picked.truncate(MAX_BULK);
        let gid = self.id();
        let by = m.caller.user();
        let mut w = WriteSet::new();
        for r in &picked {
            w.remove_request(gid, r);
            w.event(&self.rejected(r, by));
        }
        let answer = Rejected {
            rejected: picked.iter().map(|r| (r.id, r.user_id)).collect(),
            not_found,
            remaining,
        };
        let reply = self.commit(w, answer);
        for r in &picked {
            self.forget_request(r);
        }
        Ok(reply)
    }

    /// `join_rejected` for `r`'s requester, rejected by `by`.
    fn rejected(&self, r: &JoinRequest, by: Option<UserId>) -> crate::domain::events::Event {
        self.event(
            vec![r.user_id],
            EventKind::JoinRejected {
                group_id: self.id(),
                request_id: r.id,
                user_id: r.user_id,
                decided_by: by,
            },
        )
    }

    fn may_moderate(&mut self, m: MayModerate) -> Step<()> {
        self.require_moderator(m.caller)?;
        done(())
    }

    /// Store, replace or remove the group's avatar (owner, admins,
    /// operators); the group record names it in the same write.
    fn set_avatar(&mut self, m: SetAvatar) -> Step<()> {
        self.require_moderator(m.caller)?;
        let new = m.jpeg.as_deref().map(crate::storage::avatars::reference);
        if self.group.avatar == new {
            return self.after_pending_writes(());
        }
        let mut g = self.group.clone();
        let mut w = WriteSet::new();
        w.avatar(g.id, m.jpeg.as_deref(), g.avatar.as_ref());
        g.avatar = new;
        w.group(&g);
        let reply = self.commit(w, ());
        self.group = g;
        Ok(reply)
    }

    fn decide(&mut self, m: Decide) -> Step<UserId> {
        self.require_moderator(m.caller)?;
        let req = self
            .requests
            .get(&m.request_id)
            .cloned()
            .ok_or(ApiError::RequestNotFound)?;
        if m.approve && self.group.status == GroupStatus::Banned {
            return Err(Refusal::GroupBanned.into());
        }
        let gid = self.id();
        let mut w = WriteSet::new();
        w.remove_request(gid, &req);
        let member = Member {
            user_id: req.user_id,
            role: Role::Member,
            joined_at: now(),
            via_invite: Some(req.invite_id),
            invited_by: Some(req.invited_by),
            risk: req.risk.clone(),
        };
        let (r, u, by) = (req.id, req.user_id, m.caller.user());
        if m.approve {
            // The seat was reserved by the request: approval cannot overfill.
            self.members.insert(member);
            w.membership(gid, &self.members, u);
            w.event(&self.event(
                vec![u],
                EventKind::JoinApproved {
                    group_id: gid,
                    request_id: r,
                    user_id: u,
                    decided_by: by,
                },
            ));
            w.event(&self.event(
                vec![],
                EventKind::MemberJoined {
                    group_id: gid,
                    user_id: u,
                    via_invite: Some(req.invite_id),
                    approved_request: Some(r),
                },
            ));
        } else {
            w.event(&self.rejected(&req, by));
        }
        let reply = self.commit(w, u);
        self.forget_request(&req);
        Ok(reply)
    }

    fn block(&mut self, m: Block) -> Step<()> {
        let my_role = self.require_moderator(m.caller)?;
        if !m.known_user {
            return Err(ApiError::UserNotFound.into());
        }
        if m.user == self.group.owner_id {
            return Err(ApiError::CannotBlockOwner.into());
        }
        if m.caller.user() == Some(m.user) {
            return Err(ApiError::validation("you cannot block yourself").into());
        }
        let target_is_admin = self.members.role(&m.user).is_some_and(|r| r == Role::Admin);
        if my_role == Role::Admin && target_is_admin && m.caller != Caller::Admin {
            return Err(ApiError::forbidden("only the owner may block a group admin").into());
        }
        if self.blocks.contains(&m.user) {
            return self.after_pending_writes(());
        }
        let gid = self.id();
        let mut w = WriteSet::new();
        let now = now();
        w.block(gid, m.user, now);
        // Blocking removes the member (keeping the lineage) and drops a pending request.
        self.depart(
            &mut w,
            m.user,
            crate::domain::group::Departure::Blocked,
            m.caller.user(),
            now,
        );
        let pending = self
            .pending_by_user
            .get(&m.user)
            .and_then(|rid| self.requests.get(rid))
            .cloned();
        if let Some(req) = &pending {
            w.remove_request(gid, req);
        }
        w.event(&self.event(
            vec![m.user],
            EventKind::MemberBlocked {
                group_id: gid,
                user_id: m.user,
            },
        ));
        let reply = self.commit(w, ());
        self.blocks.insert(m.user);
        if let Some(req) = pending {
            self.forget_request(&req);
        }
        Ok(reply)
    }

    fn set_admin(&mut self, m: SetAdmin) -> Step<()> {
        self.require_owner(m.caller, "appoint or remove admins")?;
        let role = self
            .members
            .role(&m.user)
            .ok_or_else(|| ApiError::validation("that user is not a member of this group"))?;
        if role == Role::Owner {
            return Err(ApiError::validation("the owner's role cannot change").into());
        }
        self.members
            .set_role(&m.user, if m.admin { Role::Admin } else { Role::Member });
        let mut w = WriteSet::new();
        w.membership(self.id(), &self.members, m.user);
        Ok(self.commit(w, ()))
    }

    fn update_settings(&mut self, m: UpdateSettings) -> Step<Group> {
        self.require_owner(m.caller, "change its settings")?;
        let max = self.shared.config.limits.group_joins_per_minute_max;
        if let Some(r) = m.join_rate_per_minute {
            if r == 0 || r > max {
                return Err(ApiError::validation(format!(
                    "`join_rate_per_minute` must be between 1 and {max}"
                ))
                .into());
            }
        }
        let mut g = self.group.clone();
        if let Some(d) = m.description {
            g.description = d.into_string();
        }
        if let Some(a) = m.approval_required {
            g.approval_required = a;
        }
        if m.join_rate_per_minute.is_some() {
            g.join_rate_per_minute = m.join_rate_per_minute;
        }
        if let Some(p) = m.preview_members {
            g.preview_members = p;
        }
        let mut w = WriteSet::new();
        w.group(&g);
        let reply = self.commit(w, g.clone());
        if let Some(r) = m.join_rate_per_minute {
            self.limiter = limiter(r, &self.shared.clock);
        }
        self.group = g;
        Ok(reply)
    }

    fn set_banned(&mut self, m: SetBanned) -> Step<Group> {
        if (self.group.status == GroupStatus::Banned) == m.banned {
            return self.after_pending_writes(self.group.clone());
        }
        let mut g = self.group.clone();
        let kind = if m.banned {
            g.status = GroupStatus::Banned;
            g.epoch = g.epoch.wrapping_add(1);
            let reason = m.reason.into_string();
            g.ban_reason = Some(reason.clone());
            EventKind::GroupBanned {
                group_id: g.id,
                reason,
            }
        } else {
            g.status = GroupStatus::Active;
            g.ban_reason = None;
            EventKind::GroupUnbanned { group_id: g.id }
        };
        let mut w = WriteSet::new();
        w.group(&g);
        // Pending joiners learn that their request will not be decided.
        let notify = if m.banned {
            self.pending_by_user.keys().copied().collect()
        } else {
            vec![]
        };
        w.event(&self.event(notify, kind));
        let reply = self.commit(w, g.clone());
        self.group = g;
        Ok(reply)
    }
}
