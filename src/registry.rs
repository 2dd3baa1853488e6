//! Resident actors: one actix actor per entity (a group, a wallet), activated
//! on first use from storage, addressed through a [`Registry`], and forgotten
//! when it passivates itself after an idle timeout.
//!
//! The registry's map is sharded behind plain mutexes (held only for a lookup
//! or an activation, never across an await) rather than being an actor
//! itself, so routing a request costs no extra mailbox round trip. Actors are
//! spread over a shared pool of arbiters (threads) by id.
//!
//! Every message answers a [`Step`]: the actor decides on its thread and
//! returns a future the caller awaits on its own thread (typically "this
//! write set is durable"), so the actor keeps serving its mailbox meanwhile.

use actix::prelude::*;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::metrics;
use crate::storage::{Fence, Storage, Tracker};

const SHARDS: usize = 64;
/// How long a request may wait for room in an actor's mailbox before `overloaded`.
const ROOM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for an actor whose write failed to settle
/// before `storage_unavailable`.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Cluster mode: how often a request is asked again after another node's
/// write to its entity refused it.
const CLUSTER_TRIES: usize = 24;

/// Failure of a message: an API error, or "this actor was passivated, ask the
/// registry again" (nothing was applied).
#[derive(Debug)]
pub enum Fail {
    Api(ApiError),
    Retired,
    /// A write of this actor failed while others were still in flight: it
    /// retires once they settle, so ask again in a moment (nothing was
    /// applied).
    Settling,
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl From<crate::storage::StorageError> for Fail {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            // Another writer owns the entity now (cluster mode): nothing
            // was applied, and a fresh activation answers.
            crate::storage::StorageError::Fenced(_) => Fail::Retired,
            e => Fail::Api(e.into()),
        }
    }
}

/// The answer to a message: decided inside the actor, then awaited by the
/// caller on its own thread (a write's durability), so the reply does not
/// travel back through the actor's thread.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, Fail>> + Send>>;
pub type Step<T> = Result<Pending<T>, Fail>;

/// A step that is already decided and needs no write.
pub fn done<T: Send + 'static>(v: T) -> Step<T> {
    Ok(Box::pin(std::future::ready(Ok(v))))
}

/// The arbiters (threads) every kind of resident actor runs on: threads of
/// their own, or (see [`Arbiters::on_http_workers`]) the HTTP workers'.
#[derive(Clone)]
pub struct Arbiters {
    own: Arc<Vec<ArbiterHandle>>,
    /// The HTTP workers' arbiters, by thread, as they registered.
    workers: Option<Arc<std::sync::RwLock<Vec<WorkerArbiter>>>>,
}

type WorkerArbiter = (std::thread::ThreadId, ArbiterHandle);

impl Arbiters {
    /// Start `n` arbiter threads (at least one).
    pub fn start(n: usize) -> Arbiters {
        Arbiters {
            own: Arc::new((0..n.max(1)).map(|_| Arbiter::new().handle()).collect()),
            workers: None,
        }
    }

    /// Host actors on the HTTP workers' threads once they register
    /// ([`Arbiters::register_current`]); the own threads serve until then
    /// and whenever a worker has stopped. A request handled on the worker
    /// that hosts its actor then needs no wake-up of another thread there
    /// and back (BENCHMARKS.md, viral burst).
    pub fn on_http_workers(mut self) -> Arbiters {
        self.workers = Some(Arc::default());
        self
    }

    /// Offer the current thread's arbiter (call on each HTTP worker as it
    /// starts); a no-op unless [`Arbiters::on_http_workers`], off an
    /// arbiter, or for a thread already offered.
    pub fn register_current(&self) {
        let (Some(workers), Some(handle)) = (&self.workers, Arbiter::try_current()) else {
            return;
        };
        let id = std::thread::current().id();
        if let Ok(mut w) = workers.write() {
            if !w.iter().any(|(t, _)| *t == id) {
                w.push((id, handle));
            }
        }
    }

    fn pick(&self, spread: usize) -> ArbiterHandle {
        if let Some(workers) = &self.workers {
            if let Ok(w) = workers.read() {
                if !w.is_empty() {
                    let h = &w[spread % w.len()].1;
                    // A stopped worker (shutting down) takes no actor.
                    if h.spawn(std::future::ready(())) {
                        return h.clone();
                    }
                }
            }
        }
        self.own[spread % self.own.len()].clone()
    }
}

/// An entity kind whose actors live in a [`Registry`].
pub trait Resident: Actor<Context = Context<Self>> + Send {
    /// Names the kind of entity (with the id, the entity a fence guards).
    const KIND: &'static str;
    type Id: Copy + Eq + Hash + Send + Sync + std::fmt::Display + 'static;
    /// What the actor is rebuilt from.
    type Snapshot: Send + 'static;
    /// What every actor of this kind shares (config, storage, ...).
    type Env: Send + Sync + 'static;

    /// Read the entity from storage; an error if it does not exist.
    fn load(env: &Self::Env, id: Self::Id) -> Result<Self::Snapshot, ApiError>;

    /// The storage the actor writes to (its writes carry a [`Fence`]).
    fn storage(env: &Self::Env) -> &Storage;

    /// The life-cycle metrics of this kind of actor.
    fn metrics() -> &'static metrics::ActorMetrics;

    /// Build the actor from its snapshot. It keeps `life` and calls its
    /// methods (see [`Life`]).
    fn activate(snap: Self::Snapshot, life: Life<Self>, env: Arc<Self::Env>) -> Self;

    /// Two well-mixed bytes of the id, to pick a shard and an arbiter.
    fn spread(id: &Self::Id) -> (u8, u8);
}

/// A resident actor: its generation, address, and the permits that bound its
/// mailbox (actix's own bound does not hold for freshly cloned addresses).
struct Slot<A: Resident> {
    gen: u64,
    addr: Addr<A>,
    room: Arc<tokio::sync::Semaphore>,
    /// The activation's fence and writes, to tell (cluster mode) whether
    /// another node wrote the entity since.
    fence: Fence,
    writes: Arc<Tracker>,
}

impl<A: Resident> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot {
            gen: self.gen,
            addr: self.addr.clone(),
            room: Arc::clone(&self.room),
            fence: self.fence.clone(),
            writes: Arc::clone(&self.writes),
        }
    }
}

struct Shard<A: Resident> {
    slots: HashMap<A::Id, Slot<A>>,
    /// Counts retirements, so an activation can tell whether one happened
    /// while it was reading storage.
    retirements: u64,
}

impl<A: Resident> Shard<A> {
    fn live(&self, id: A::Id) -> Option<Slot<A>> {
        self.slots.get(&id).filter(|s| s.addr.connected()).cloned()
    }
}

struct Map<A: Resident> {
    shards: Vec<Mutex<Shard<A>>>,
    next_gen: AtomicU64,
}

impl<A: Resident> Map<A> {
    fn shard(&self, id: A::Id) -> &Mutex<Shard<A>> {
        &self.shards[A::spread(&id).0 as usize % SHARDS]
    }

    /// Remove the entry for `id` if it is still generation `gen`.
    fn forget(&self, id: A::Id, gen: u64) {
        if let Ok(mut shard) = self.shard(id).lock() {
            if shard.slots.get(&id).is_some_and(|s| s.gen == gen) {
                shard.slots.remove(&id);
                shard.retirements += 1;
            }
        }
    }
}

/// The life cycle every resident actor shares: which activation it is,
/// whether it retired, when it was last used, and its writes in flight. The
/// actor calls [`Life::touch`] first in every handler, [`Life::tick`] on a
/// timer and [`Life::stopped`] from `Actor::stopped`.
pub struct Life<A: Resident> {
    map: Arc<Map<A>>,
    id: A::Id,
    gen: u64,
    last_active: Instant,
    retired: bool,
    /// Write sets not yet durable (the actor stays resident until 0), and
    /// whether one failed (memory may then be ahead of storage).
    pub writes: Arc<Tracker>,
    /// This activation owns its entity since this journal position.
    fence: Fence,
}

impl<A: Resident> Life<A> {
    /// The entity this actor is.
    pub fn id(&self) -> A::Id {
        self.id
    }

    /// For every write set of this activation: refused if another writer
    /// wrote the entity after this activation read it.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Refuse if retired; a failed write retires the actor (once earlier
    /// writes settled) so the entity is rebuilt from storage and memory never
    /// stays ahead of what was stored. Notes activity.
    pub fn touch(&mut self, ctx: &mut Context<A>) -> Result<(), Fail> {
        if !self.retired && self.writes.failed() {
            if self.writes.in_flight() > 0 {
                return Err(Fail::Settling);
            }
            tracing::warn!(id = %self.id, "a write failed; rebuilding from storage");
            self.retire(ctx);
        }
        if self.retired {
            return Err(Fail::Retired);
        }
        self.last_active = Instant::now();
        Ok(())
    }

    /// Passivate if idle for `idle` with nothing in flight.
    pub fn tick(&mut self, ctx: &mut Context<A>, idle: Duration) {
        if !self.retired && self.last_active.elapsed() >= idle && self.writes.in_flight() == 0 {
            self.retire(ctx);
            A::metrics().passivations.inc();
        }
    }

    fn retire(&mut self, ctx: &mut Context<A>) {
        self.map.forget(self.id, self.gen);
        self.retired = true;
        ctx.stop();
    }

    /// Start the idle timer; call from `Actor::started`.
    pub fn started(ctx: &mut Context<A>, idle_seconds: u64, tick: fn(&mut A, &mut Context<A>)) {
        A::metrics().resident.inc();
        A::metrics().activations.inc();
        let every = Duration::from_secs(idle_seconds.max(1).div_ceil(2).clamp(1, 30));
        ctx.run_interval(every, tick);
    }

    /// A stop not caused by retirement (e.g. system shutdown) must also leave
    /// the registry, so nobody keeps sending to a dead mailbox.
    pub fn stopped(&mut self) {
        A::metrics().resident.dec();
        if !self.retired {
            self.map.forget(self.id, self.gen);
        }
    }
}

/// Finds, activates and addresses the resident actors of one kind.
pub struct Registry<A: Resident> {
    map: Arc<Map<A>>,
    arbiters: Arbiters,
    env: Arc<A::Env>,
    mailbox: usize,
}

impl<A: Resident> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Registry {
            map: Arc::clone(&self.map),
            arbiters: self.arbiters.clone(),
            env: Arc::clone(&self.env),
            mailbox: self.mailbox,
        }
    }
}

impl<A: Resident> Registry<A> {
    pub fn new(env: Arc<A::Env>, arbiters: Arbiters, mailbox: usize) -> Self {
        Registry {
            map: Arc::new(Map {
                shards: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(Shard {
                            slots: HashMap::new(),
                            retirements: 0,
                        })
                    })
                    .collect(),
                next_gen: AtomicU64::new(1),
            }),
            arbiters,
            env,
            mailbox: mailbox.max(1),
        }
    }

    pub fn env(&self) -> &Arc<A::Env> {
        &self.env
    }

    /// The entity's actor, activating it if needed.
    /// Whether an actor of `id` is running.
    fn is_live(&self, id: A::Id) -> bool {
        self.map
            .shard(id)
            .lock()
            .is_ok_and(|m| m.live(id).is_some())
    }

    fn slot(&self, id: A::Id) -> Result<Slot<A>, ApiError> {
        let shard = self.map.shard(id);
        let lock = || shard.lock().map_err(|_| ApiError::Internal);
        // The storage read happens outside the shard lock, so other entities
        // of the shard are not held up by it. If an actor of this entity
        // retired meanwhile (it may have written after our read), read again.
        let (snap, since, mut map) = loop {
            let retirements = {
                let map = lock()?;
                if let Some(s) = map.live(id) {
                    return Ok(s);
                }
                map.retirements
            };
            let since = A::storage(&self.env).position();
            let snap = A::load(&self.env, id)?;
            let map = lock()?;
            if let Some(s) = map.live(id) {
                return Ok(s); // activated by someone else meanwhile
            }
            if map.retirements == retirements {
                break (snap, since, map);
            }
        };
        let gen = self.map.next_gen.fetch_add(1, Ordering::Relaxed);
        let life = Life {
            map: Arc::clone(&self.map),
            id,
            gen,
            last_active: Instant::now(),
            retired: false,
            writes: Arc::default(),
            fence: Fence::new(&format!("{}/{id}", A::KIND), since),
        };
        let (fence, writes) = (life.fence.clone(), Arc::clone(&life.writes));
        let actor = A::activate(snap, life, Arc::clone(&self.env));
        let arb = self.arbiters.pick(A::spread(&id).1 as usize);
        let slot = Slot {
            gen,
            addr: A::start_in_arbiter(&arb, move |_| actor),
            room: Arc::new(tokio::sync::Semaphore::new(self.mailbox)),
            fence,
            writes,
        };
        map.slots.insert(id, slot.clone());
        Ok(slot)
    }

    /// Send `msg` to the entity's actor and await its answer. Waits for room
    /// in the actor's bounded mailbox (503 `overloaded` after 10 s); retried
    /// on a fresh activation if the actor was retiring, and again after a
    /// moment while a failed write of the actor settles (up to 2 s, then 503
    /// `storage_unavailable`): either way it applied nothing.
    pub async fn call<M, R>(&self, id: A::Id, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Step<R>> + Clone + Send + 'static,
        A: Handler<M>,
        R: Send + 'static,
    {
        let settle_by = Instant::now() + SETTLE_TIMEOUT;
        let storage = A::storage(&self.env);
        let mut retired = 0;
        // Cluster mode: another node may write the entity between our
        // catching up and our write; each retry starts from its write.
        let tries = if storage.is_cluster() {
            CLUSTER_TRIES
        } else {
            4
        };
        while retired < tries {
            if retired > 0 && storage.is_cluster() {
                let jitter = u64::from(crate::domain::ids::random_bytes::<1>()[0] % 8);
                tokio::time::sleep(Duration::from_millis(1 + jitter * retired.min(8) as u64)).await;
            }
            if storage.is_cluster() {
                let entity = format!("{}/{id}", A::KIND);
                // Another node wrote this entity: apply its write first,
                // and rebuild an actor that read before it.
                storage.catch_up(&entity).await.map_err(ApiError::from)?;
                // An actor about to start reads every entry the log holds
                // for its entity, also those this node has not applied yet.
                if !self.is_live(id) {
                    storage.sync_entity(&entity).await.map_err(ApiError::from)?;
                }
            }
            let slot = self.slot(id)?;
            if storage.is_cluster() && slot.fence.is_stale_in(storage, &slot.writes) {
                metrics::LOG_STALE_ACTORS.inc();
                slot.writes.fail();
            }
            let answer = {
                let _room = tokio::time::timeout(ROOM_TIMEOUT, slot.room.acquire())
                    .await
                    .map_err(|_| ApiError::Overloaded)?
                    .map_err(|_| ApiError::Internal)?;
                slot.addr.send(msg.clone()).await
            };
            match answer {
                // The actor decided; wait for durability here, not on its thread.
                Ok(Ok(pending)) => match pending.await {
                    Ok(v) => return Ok(v),
                    Err(Fail::Api(e)) => return Err(e),
                    // Refused by another writer: nothing applied; ask a
                    // fresh activation.
                    Err(Fail::Retired) => retired += 1,
                    Err(Fail::Settling) => return Err(ApiError::Internal),
                },
                Ok(Err(Fail::Api(e))) => return Err(e),
                Ok(Err(Fail::Retired)) | Err(MailboxError::Closed) => retired += 1,
                // Its writes in flight land within a commit round or two.
                Ok(Err(Fail::Settling)) if Instant::now() < settle_by => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Ok(Err(Fail::Settling)) => return Err(ApiError::StorageUnavailable),
                Err(MailboxError::Timeout) => return Err(ApiError::Overloaded),
            }
        }
        if retired > 0 && storage.is_cluster() {
            return Err(ApiError::StorageUnavailable);
        }
        Err(ApiError::Overloaded)
    }
}

/// Declares a message `$name` answered by `$actor::$method` after
/// `self.life.touch(ctx)` (and `self.$pre()` if given).
#[macro_export]
macro_rules! resident_message {
    ($actor:ty, $pre:ident; $name:ident -> $ret:ty { $($field:ident : $ty:ty),* $(,)? } => $method:ident) => {
        #[derive(Debug, Clone)]
        pub struct $name { $(pub $field: $ty),* }
        impl actix::Message for $name { type Result = $crate::registry::Step<$ret>; }
        impl actix::Handler<$name> for $actor {
            type Result = $crate::registry::Step<$ret>;
            fn handle(&mut self, m: $name, ctx: &mut actix::Context<Self>) -> Self::Result {
                self.life.touch(ctx)?;
                self.$pre(ctx);
                self.$method(m)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread an arbiter runs on.
    async fn thread_of(h: &ArbiterHandle) -> std::thread::ThreadId {
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(h.spawn(async move {
            let _ = tx.send(std::thread::current().id());
        }));
        rx.await.expect("the arbiter ran the task")
    }

    /// Actors go to the own threads until a worker registers, then to the
    /// workers (each registered once), and back to the own threads when a
    /// worker has stopped; without `on_http_workers` registering is a no-op.
    #[actix_web::test]
    async fn actors_follow_the_registered_workers_and_fall_back() {
        let plain = Arbiters::start(1);
        let arbiters = Arbiters::start(1).on_http_workers();
        let own = thread_of(&arbiters.pick(0)).await;

        let worker = Arbiter::new();
        for a in [&arbiters, &plain, &arbiters] {
            let a = a.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            assert!(worker.spawn(async move {
                a.register_current();
                let _ = tx.send(());
            }));
            rx.await.expect("registered");
        }
        let worker_thread = thread_of(&worker.handle()).await;
        assert_ne!(own, worker_thread);
        for spread in 0..4 {
            assert_eq!(thread_of(&arbiters.pick(spread)).await, worker_thread);
            assert_ne!(thread_of(&plain.pick(spread)).await, worker_thread);
        }
        assert_eq!(
            arbiters
                .workers
                .as_ref()
                .map(|w| w.read().map(|w| w.len()).ok()),
            Some(Some(1))
        );

        worker.stop();
        worker.join().expect("the worker stopped");
        assert_eq!(thread_of(&arbiters.pick(0)).await, own);
    }
}
