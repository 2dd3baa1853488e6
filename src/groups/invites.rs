//! Invitations in the group's actor: creating one (limits, lineage, the
//! signed token) and revoking one.

use super::actor::{Caller, GroupActor};
use crate::clock::now;
use crate::domain::events::EventKind;
use crate::domain::group::{GroupStatus, Invite};
use crate::domain::ids::{InviteId, UserId};
use crate::domain::join::Refusal;
use crate::domain::token::Claims;
use crate::error::ApiError;
use crate::registry::Step;
use crate::storage::WriteSet;

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

message!(CreateInvite -> Invite {
    creator: UserId,
    ttl_seconds: i64,
    max_uses: Option<u32>,
    // Re-share this invitation (lineage): the new one is its child.
    parent: Option<InviteId>,
} => create_invite);
message!(RevokeInvite -> () { caller: Caller, invite_id: InviteId } => revoke_invite);

impl GroupActor {
    fn create_invite(&mut self, m: CreateInvite) -> Step<Invite> {
        self.require_member(Caller::User(m.creator))?;
        if self.group.status == GroupStatus::Banned {
            return Err(Refusal::GroupBanned.into());
        }
        let now = now();
        let cap = self.shared.config.limits.max_live_invites_per_group;
        let live = self
            .invites
            .values()
            .filter(|i| !i.revoked && i.expires_at > now)
            .count();
        if live >= cap {
            return Err(ApiError::TooManyInvites.into());
        }
        let limits = &self.shared.config.limits;
        let made: Vec<i64> = self
            .invites
            .values()
            .filter(|i| i.creator_id == m.creator)
            .map(|i| i.created_at)
            .collect();
        crate::domain::group::may_create_invite(
            self.invites.len(),
            limits.max_stored_invites_per_group,
            &made,
            limits.invites_per_member_per_hour,
            now,
        )
        .map_err(|c| match c {
            crate::domain::group::InviteCap::Stored => ApiError::TooManyStoredInvites,
            crate::domain::group::InviteCap::Rate { retry_after_secs } => ApiError::RateLimited {
                scope: "invitations per member per hour",
                retry_after_secs,
            },
        })?;
        let depth = match m.parent {
            None => 0,
            Some(pid) => {
                let p = self.invites.get(&pid).ok_or_else(|| {
                    ApiError::validation("`parent_id` is not an invitation of this group")
                })?;
                let burned = p.epoch != self.group.epoch;
                if p.revoked || burned || now >= p.expires_at {
                    return Err(ApiError::validation(
                        "`parent_id` names an invitation that is revoked or expired",
                    )
                    .into());
                }
                if p.depth >= crate::domain::group::MAX_INVITE_DEPTH {
                    return Err(ApiError::validation(format!(
                        "invitations may be re-shared at most {} levels deep",
                        crate::domain::group::MAX_INVITE_DEPTH
                    ))
                    .into());
                }
                p.depth + 1
            }
        };
        self.check_invite_creation(now)?;
        let keys = &self.shared.keys;
        let claims = Claims {
            kid: keys.active_kid(),
            invite_id: InviteId::random(),
            group_ref: keys.group_ref(self.id()),
            epoch: self.group.epoch,
            creator_ref: keys.creator_ref(m.creator),
            expires_at: now + m.ttl_seconds,
        };
        let token = keys.sign(claims);
        let tag = crate::domain::token::parse(&token)
            .map_err(|_| ApiError::Internal)?
            .tag(keys.tag_key());
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
            parent_id: m.parent,
            depth,
            stage: crate::domain::risk::Stage::Open,
            stage_changed_at: 0,
            stage_reset_at: 0,
        };
        let mut w = WriteSet::new();
        w.invite(&invite);
        w.invite_index(&invite);
        let reply = self.commit(w, invite.clone());
        self.invites.insert(invite.id, Box::new(invite));
        Ok(reply)
    }

    fn revoke_invite(&mut self, m: RevokeInvite) -> Step<()> {
        let inv = self
            .invites
            .get(&m.invite_id)
            .ok_or(ApiError::InviteNotFound)?;
        self.may_manage(m.caller, inv, "revoke it")?;
        if inv.revoked {
            return self.after_pending_writes(());
        }
        let mut inv = inv.clone();
        inv.revoked = true;
        let mut w = WriteSet::new();
        w.invite(&inv);
        w.event(&self.event(
            vec![],
            EventKind::InviteRevoked {
                group_id: self.id(),
                invite_id: inv.id,
            },
        ));
        let dropped = self.drop_requests_through(&mut w, &[inv.id].into_iter().collect());
        let reply = self.commit(w, ());
        self.invites.insert(inv.id, inv);
        for r in &dropped {
            self.forget_request(r);
        }
        Ok(reply)
    }
}
