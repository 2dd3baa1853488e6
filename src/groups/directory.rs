//! The directory of group actors: activates a GroupActor on first use
//! (rebuilding it from storage), routes messages to it, and forgets it when it
//! passivates itself after an idle timeout.
//!
//! The map is sharded behind plain mutexes (held only for a lookup or an
//! activation, never across an await) rather than being an actor itself, so
//! routing a request costs no extra mailbox round trip. Actors are spread over
//! a fixed pool of arbiters (threads) by group id.

use actix::prelude::*;
use governor::DefaultKeyedRateLimiter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::actor::{Fail, GroupActor};
use crate::config::Config;
use crate::domain::events::{Event, EventKind};
use crate::domain::group::{Group, GroupStatus, Member, Role};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::error::ApiError;
use crate::keys::KeyRing;
use crate::storage::{Storage, WriteSet};

const SHARDS: usize = 64;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What every group actor needs from the process.
pub struct Shared {
    pub config: Config,
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub user_limiter: Arc<DefaultKeyedRateLimiter<UserId>>,
}

type Slot = (u64, Addr<GroupActor>);

pub struct DirInner {
    shards: Vec<Mutex<HashMap<GroupId, Slot>>>,
    arbiters: Vec<ArbiterHandle>,
    next_gen: AtomicU64,
}

impl DirInner {
    fn shard(&self, id: GroupId) -> &Mutex<HashMap<GroupId, Slot>> {
        &self.shards[id.0[0] as usize % SHARDS]
    }

    /// Remove the entry for `id` if it is still generation `gen`.
    pub(super) fn forget(&self, id: GroupId, gen: u64) {
        if let Ok(mut map) = self.shard(id).lock() {
            if map.get(&id).is_some_and(|(g, _)| *g == gen) {
                map.remove(&id);
            }
        }
    }
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<DirInner>,
    shared: Arc<Shared>,
}

impl Directory {
    /// Start `arbiters` threads for the actors. Call outside the HttpServer
    /// factory so all workers share one directory.
    pub fn new(shared: Arc<Shared>, arbiters: usize) -> Directory {
        let arbiters = (0..arbiters.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        Directory {
            inner: Arc::new(DirInner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                arbiters,
                next_gen: AtomicU64::new(1),
            }),
            shared,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Address of the group's actor, activating it if needed.
    fn addr(&self, id: GroupId) -> Result<Addr<GroupActor>, ApiError> {
        let mut map = self
            .inner
            .shard(id)
            .lock()
            .map_err(|_| ApiError::Internal)?;
        if let Some((_, a)) = map.get(&id) {
            if a.connected() {
                return Ok(a.clone());
            }
        }
        let snap = self
            .shared
            .storage
            .load_group(id)?
            .ok_or(ApiError::GroupNotFound)?;
        let gen = self.inner.next_gen.fetch_add(1, Ordering::Relaxed);
        let actor = GroupActor::new(snap, gen, Arc::clone(&self.inner), Arc::clone(&self.shared));
        let arb = &self.inner.arbiters[id.0[1] as usize % self.inner.arbiters.len()];
        let addr = GroupActor::start_in_arbiter(arb, move |_| actor);
        map.insert(id, (gen, addr.clone()));
        Ok(addr)
    }

    /// Send `msg` to the group's actor; retried if the actor was passivating.
    pub async fn call<M, R>(&self, id: GroupId, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Result<R, Fail>> + Clone + Send + 'static,
        GroupActor: Handler<M>,
        R: Send + 'static,
    {
        for _ in 0..4 {
            let addr = self.addr(id)?;
            match addr.send(msg.clone()).timeout(SEND_TIMEOUT).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Fail::Api(e))) => return Err(e),
                Ok(Err(Fail::Retired)) | Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(ApiError::Overloaded),
            }
        }
        Err(ApiError::Overloaded)
    }

    pub fn resident(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    // ---- lookups that find the group first ----

    pub fn group_by_ref(&self, r: &[u8; 8]) -> Result<Option<GroupId>, ApiError> {
        Ok(self.shared.storage.group_by_ref(r)?)
    }

    pub fn group_by_invite(&self, i: InviteId) -> Result<GroupId, ApiError> {
        self.shared
            .storage
            .group_by_invite(i)?
            .ok_or(ApiError::InviteNotFound)
    }

    /// Create a group with `owner` as its owner and first member. Not an actor
    /// message: nobody else can address the group before this returns.
    pub async fn create_group(
        &self,
        owner: UserId,
        name: String,
        description: String,
        member_limit: u32,
        approval_required: bool,
    ) -> Result<Group, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let keys = &self.shared.keys;
        // 64-bit references: a collision is astronomically unlikely, but a
        // reference must name exactly one group, so draw again if it happens.
        let (id, gref) = loop {
            let id = GroupId::random();
            let r = keys.group_ref(id);
            if self.shared.storage.group_by_ref(&r)?.is_none() {
                break (id, r);
            }
        };
        let group = Group {
            id,
            name,
            description,
            owner_id: owner,
            member_limit,
            approval_required,
            status: GroupStatus::Active,
            epoch: 0,
            ban_reason: None,
            created_at: now,
            join_rate_per_minute: None,
        };
        let mut w = WriteSet::new();
        w.group(&group)?;
        w.group_ref(&gref, id);
        w.member(
            id,
            &Member {
                user_id: owner,
                role: Role::Owner,
                joined_at: now,
                via_invite: None,
                invited_by: None,
            },
        )?;
        w.event(Event::for_group(
            id,
            vec![],
            now,
            EventKind::MemberJoined {
                group_id: id,
                user_id: owner,
                via_invite: None,
            },
        ));
        self.shared.storage.commit(w).await?;
        Ok(group)
    }
}
