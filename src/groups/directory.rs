//! The directory of group actors: activates a GroupActor on first use
//! (rebuilding it from storage), routes messages to it, and forgets it when it
//! passivates itself after an idle timeout.
//!
//! The map is sharded behind plain mutexes (held only for a lookup or an
//! activation, never across an await) rather than being an actor itself, so
//! routing a request costs no extra mailbox round trip. Actors are spread over
//! a fixed pool of arbiters (threads) by group id.

use actix::prelude::*;
use governor::clock::DefaultClock;
use governor::DefaultKeyedRateLimiter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::actor::{Fail, GroupActor, Step, Sweep};
use crate::config::Config;
use crate::domain::events::{Event, EventKind};
use crate::domain::group::{Group, GroupStatus, Member, Role};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::error::ApiError;
use crate::keys::KeyRing;
use crate::storage::{Storage, WriteSet};

const SHARDS: usize = 64;
/// How long a request may wait for room in a group's mailbox before `overloaded`.
const ROOM_TIMEOUT: Duration = Duration::from_secs(10);
/// Cached id mappings (group ref -> group, invitation -> group); they never change.
const MAPPING_CACHE: usize = 200_000;

/// What every group actor needs from the process.
pub struct Shared {
    pub config: Config,
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub user_limiter: Arc<DefaultKeyedRateLimiter<UserId>>,
    pub clock: DefaultClock,
    pub counters: crate::push::CounterStore,
}

/// A resident actor: its generation, address, and the permits that bound its
/// mailbox (actix's own bound does not hold for freshly cloned addresses).
#[derive(Clone)]
struct Slot {
    gen: u64,
    addr: Addr<GroupActor>,
    room: Arc<tokio::sync::Semaphore>,
}

pub struct DirInner {
    shards: Vec<Mutex<Shard>>,
    arbiters: Vec<ArbiterHandle>,
    next_gen: AtomicU64,
}

impl DirInner {
    fn shard(&self, id: GroupId) -> &Mutex<Shard> {
        &self.shards[id.0[0] as usize % SHARDS]
    }

    /// Remove the entry for `id` if it is still generation `gen`.
    pub(super) fn forget(&self, id: GroupId, gen: u64) {
        if let Ok(mut shard) = self.shard(id).lock() {
            if shard.slots.get(&id).is_some_and(|s| s.gen == gen) {
                shard.slots.remove(&id);
                shard.retirements += 1;
            }
        }
    }
}

#[derive(Default)]
struct Shard {
    slots: HashMap<GroupId, Slot>,
    /// Counts retirements, so an activation can tell whether one happened
    /// while it was reading storage.
    retirements: u64,
}

impl Shard {
    fn live(&self, id: GroupId) -> Option<Slot> {
        self.slots.get(&id).filter(|s| s.addr.connected()).cloned()
    }
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<DirInner>,
    shared: Arc<Shared>,
    by_ref: Arc<quick_cache::sync::Cache<[u8; 8], GroupId>>,
    by_invite: Arc<quick_cache::sync::Cache<InviteId, GroupId>>,
}

impl Directory {
    /// Start `arbiters` threads for the actors. Call outside the HttpServer
    /// factory so all workers share one directory.
    /// Start `arbiters` threads for the actors and the expiry sweeper. Call
    /// inside the actix system but outside the HttpServer factory, so all
    /// workers share one directory.
    pub fn new(shared: Arc<Shared>, arbiters: usize) -> Directory {
        let arbiters = (0..arbiters.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        let dir = Directory {
            inner: Arc::new(DirInner {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                arbiters,
                next_gen: AtomicU64::new(1),
            }),
            shared,
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
            let now = chrono::Utc::now().timestamp();
            match self.shared.storage.groups_with_due_requests(now, 1000) {
                Ok(groups) => {
                    for g in groups {
                        if let Err(e) = self.call(g, Sweep {}).await {
                            tracing::warn!(group = %g, error = %e, "expiry sweep failed");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "expiry sweep: storage read failed"),
            }
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The group's actor, activating it if needed.
    fn slot(&self, id: GroupId) -> Result<Slot, ApiError> {
        let shard = self.inner.shard(id);
        let lock = || shard.lock().map_err(|_| ApiError::Internal);
        // The storage read happens outside the shard lock, so other groups of
        // the shard are not held up by it. If an actor of this group retired
        // meanwhile (it may have written after our read), read again.
        let (snap, mut map) = loop {
            let retirements = {
                let map = lock()?;
                if let Some(s) = map.live(id) {
                    return Ok(s);
                }
                map.retirements
            };
            let snap = self
                .shared
                .storage
                .load_group(id)?
                .ok_or(ApiError::GroupNotFound)?;
            let map = lock()?;
            if let Some(s) = map.live(id) {
                return Ok(s); // activated by someone else meanwhile
            }
            if map.retirements == retirements {
                break (snap, map);
            }
        };
        let gen = self.inner.next_gen.fetch_add(1, Ordering::Relaxed);
        let actor = GroupActor::new(snap, gen, Arc::clone(&self.inner), Arc::clone(&self.shared));
        let arb = &self.inner.arbiters[id.0[1] as usize % self.inner.arbiters.len()];
        let slot = Slot {
            gen,
            addr: GroupActor::start_in_arbiter(arb, move |_| actor),
            room: Arc::new(tokio::sync::Semaphore::new(
                self.shared.config.actors.mailbox,
            )),
        };
        map.slots.insert(id, slot.clone());
        Ok(slot)
    }

    /// Send `msg` to the group's actor and await its answer. Waits for room in
    /// the actor's bounded mailbox (503 `overloaded` after 10 s); retried on a
    /// fresh activation if the actor was retiring (it then applied nothing).
    pub async fn call<M, R>(&self, id: GroupId, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Step<R>> + Clone + Send + 'static,
        GroupActor: Handler<M>,
        R: Send + 'static,
    {
        for _ in 0..4 {
            let slot = self.slot(id)?;
            let answer = {
                let _room = tokio::time::timeout(ROOM_TIMEOUT, slot.room.acquire())
                    .await
                    .map_err(|_| ApiError::Overloaded)?
                    .map_err(|_| ApiError::Internal)?;
                slot.addr.send(msg.clone()).await
            };
            match answer {
                // The actor decided; wait for durability here, not on its thread.
                Ok(Ok(pending)) => {
                    return pending.await.map_err(|f| match f {
                        Fail::Api(e) => e,
                        Fail::Retired => ApiError::Internal,
                    })
                }
                Ok(Err(Fail::Api(e))) => return Err(e),
                Ok(Err(Fail::Retired)) | Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(ApiError::Overloaded),
            }
        }
        Err(ApiError::Overloaded)
    }

    // ---- lookups that find the group first ----

    pub fn group_by_ref(&self, r: &[u8; 8]) -> Result<Option<GroupId>, ApiError> {
        if let Some(g) = self.by_ref.get(r) {
            return Ok(Some(g));
        }
        let g = self.shared.storage.group_by_ref(r)?;
        if let Some(g) = g {
            self.by_ref.insert(*r, g);
        }
        Ok(g)
    }

    pub fn group_by_invite(&self, i: InviteId) -> Result<GroupId, ApiError> {
        if let Some(g) = self.by_invite.get(&i) {
            return Ok(g);
        }
        let g = self
            .shared
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
        w.group(&group);
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
        );
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
        self.shared.storage.commit(w).await?;
        Ok(group)
    }
}
