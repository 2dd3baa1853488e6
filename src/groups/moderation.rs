//! Moderation in the group's actor: the lineage of who came through which
//! invitation (and re-shared branches), analytics, resetting a stepped-up
//! invitation, burning a branch, removing members (the lineage is kept),
//! and clearing the group's flag.

use std::collections::HashSet;

use super::actor::{Caller, GroupActor};
use super::analytics::minute;
use crate::clock::now;
use crate::domain::events::EventKind;
use crate::domain::group::{Departure, FormerMember, Invite, JoinRisk, Role};
use crate::domain::ids::{InviteId, UserId};
use crate::domain::risk::{Bucket, Stage};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{done, Step};
use crate::storage::{Scope, WriteSet};

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(GroupActor, catch_up; $($t)*); };
}

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
        self.may_manage(m.caller, root, "burn its branch")?;
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
        let dropped = self.drop_requests_through(&mut w, &ids.iter().copied().collect());
        let reply = self.commit(w, ids);
        for i in burned {
            self.invites.insert(i.id, Box::new(i));
        }
        for r in &dropped {
            self.forget_request(r);
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
            return Err(ApiError::CannotRemoveOwner.into());
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
