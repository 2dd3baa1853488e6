//! The directory of groups: the registry of group actors plus the lookups
//! that find a group first (by reference or invitation), group creation, and
//! the expiry sweeper.

use std::sync::Arc;
use std::time::Duration;

use super::actor::{GroupActor, Sweep};
use super::shared::Shared;
use crate::domain::events::{Event, EventKind};
use crate::domain::group::{Description, Group, GroupName, GroupStatus, Member, MemberLimit, Role};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::domain::roster::Roster;
use crate::error::ApiError;
use crate::registry::{Arbiters, Registry, Step};
use crate::storage::WriteSet;

/// Cached id mappings (group ref -> group, invitation -> group); they never change.
const MAPPING_CACHE: usize = 200_000;

#[derive(Clone)]
pub struct Directory {
    actors: Registry<GroupActor>,
    by_ref: Arc<quick_cache::sync::Cache<[u8; 8], GroupId>>,
    by_invite: Arc<quick_cache::sync::Cache<InviteId, GroupId>>,
}

impl Directory {
    /// Call inside the actix system but outside the HttpServer factory, so
    /// all workers share one directory. Starts the expiry sweeper.
    pub fn new(shared: Arc<Shared>, arbiters: Arbiters) -> Directory {
        let mailbox = shared.config.actors.mailbox;
        let dir = Directory {
            actors: Registry::new(shared, arbiters, mailbox),
            by_ref: Arc::new(quick_cache::sync::Cache::new(MAPPING_CACHE)),
            by_invite: Arc::new(quick_cache::sync::Cache::new(MAPPING_CACHE)),
        };
        actix::spawn(dir.clone().sweep_expiries());
        dir
    }

    /// Join requests expire even in groups nobody touches: once a second, wake
    /// the groups whose requests are due (activating them if passivated).
    async fn sweep_expiries(self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let now = crate::clock::now();
            match self.shared().storage.groups_with_due_requests(now, 1000) {
                Ok(groups) => {
                    let duty = &self.shared().duty;
                    for g in groups
                        .into_iter()
                        .filter(|g| duty.mine(&format!("group/{g}")))
                    {
                        if let Err(e) = self.call(g, Sweep {}).await {
                            tracing::warn!(group = %g, error = %e, "expiry sweep failed");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "expiry sweep: storage read failed"),
            }
            // Passed challenges are remembered only until they expire.
            let storage = &self.shared().storage;
            if !self.shared().duty.mine("jobs/challenges") {
                continue;
            }
            match storage.stale_used_challenges(now, 1000) {
                Ok(w) if !w.is_empty() => {
                    if let Err(e) = storage.commit(w).await {
                        tracing::warn!(error = %e, "pruning passed challenges failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning passed challenges: read failed"),
            }
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        self.actors.env()
    }

    /// Send `msg` to the group's actor and await its answer (see [`Registry::call`]).
    pub async fn call<M, R>(&self, id: GroupId, msg: M) -> Result<R, ApiError>
    where
        M: actix::Message<Result = Step<R>> + Clone + Send + 'static,
        GroupActor: actix::Handler<M>,
        R: Send + 'static,
    {
        self.actors.call(id, msg).await
    }

    // ---- lookups that find the group first ----

    pub fn group_by_ref(&self, r: &[u8; 8]) -> Result<Option<GroupId>, ApiError> {
        if let Some(g) = self.by_ref.get(r) {
            return Ok(Some(g));
        }
        let g = self.shared().storage.group_by_ref(r)?;
        if let Some(g) = g {
            self.by_ref.insert(*r, g);
        }
        Ok(g)
    }

    /// The group an invitation token names. In cluster mode a group made
    /// through another node a moment ago may not be applied here yet: for
    /// a token whose signature holds (a forged one costs no request to the
    /// log), this node first applies what the log holds, then looks again.
    pub async fn group_of_token(
        &self,
        parsed: &crate::domain::token::Parsed,
    ) -> Result<Option<GroupId>, ApiError> {
        let r = &parsed.claims.group_ref;
        if let Some(g) = self.group_by_ref(r)? {
            return Ok(Some(g));
        }
        let shared = self.shared();
        if !shared.storage.is_cluster()
            || parsed.verify(|kid| shared.keys.verifying_key(kid)).is_err()
        {
            return Ok(None);
        }
        if let Err(e) = shared.storage.sync_all().await {
            tracing::debug!(error = %e, "cannot catch up with the log");
        }
        self.group_by_ref(r)
    }

    pub fn group_by_invite(&self, i: InviteId) -> Result<GroupId, ApiError> {
        if let Some(g) = self.by_invite.get(&i) {
            return Ok(g);
        }
        let g = self
            .shared()
            .storage
            .group_by_invite(i)?
            .ok_or(ApiError::InviteNotFound)?;
        self.by_invite.insert(i, g);
        Ok(g)
    }

    /// Create a group with `owner` as its owner and first member. Not an actor
    /// message: nobody else can address the group before this returns.
    pub async fn create_group(
        &self,
        owner: UserId,
        name: GroupName,
        description: Description,
        member_limit: MemberLimit,
        approval_required: bool,
    ) -> Result<Group, ApiError> {
        let now = crate::clock::now();
        let keys = &self.shared().keys;
        // 64-bit references: a collision is astronomically unlikely, but a
        // reference must name exactly one group, so draw again if it happens.
        let (id, gref) = loop {
            let id = GroupId::random();
            let r = keys.group_ref(id);
            if self.shared().storage.group_by_ref(&r)?.is_none() {
                break (id, r);
            }
        };
        let group = Group {
            id,
            name: name.into_string(),
            description: description.into_string(),
            owner_id: owner,
            member_limit: member_limit.get(),
            approval_required,
            status: GroupStatus::Active,
            epoch: 0,
            ban_reason: None,
            created_at: now,
            join_rate_per_minute: None,
            avatar: None,
            preview_members: false,
        };
        let mut w = WriteSet::new();
        w.group(&group);
        w.group_ref(&gref, id);
        let roster = Roster::new(vec![Member {
            user_id: owner,
            role: Role::Owner,
            joined_at: now,
            via_invite: None,
            invited_by: None,
            risk: None,
        }]);
        w.membership(id, &roster, owner);
        w.event(&Event::for_group(
            id,
            vec![],
            now,
            EventKind::MemberJoined {
                group_id: id,
                user_id: owner,
                via_invite: None,
                approved_request: None,
            },
        ));
        self.shared().storage.commit(w).await?;
        Ok(group)
    }
}
