//! The ledger executor every holder's actor runs: a wallet's
//! ([`super::WalletActor`]: a user, or the system holder) and a red
//! packet's ([`super::PacketActor`], the single writer of its escrow).
//!
//! A transfer runs in the actor of the holder that must authorise it
//! ([`ledger::executor`]). That actor decides it ([`ledger::decide`]) and
//! submits one write set holding the transfer, its journal record (both
//! postings), its own account(s) and entries, and, for an account of another
//! holder, an inbox item. The other holder's actor applies its inbox later in
//! one write set per batch ([`LedgerActor::drain`]); the books check counts
//! inbox items as postings in flight.
//!
//! [`LedgerCore`] is the holder's ledger state and the decisions on it;
//! [`LedgerActor`] is what an actor owning one implements to get its writes,
//! its inbox drain and the ledger messages ([`Execute`], [`Drain`],
//! [`GetAccount`], [`ExpireDue`]), whose handlers
//! `ledger_handlers!` declares for each actor type.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

use super::Shared;
use crate::clock::now;
use crate::domain::ids::TransferId;
use crate::domain::ledger::{
    self, Account, AccountId, Entry, Holder, JournalRecord, Kind, Spec, Status, Transfer,
};
use crate::error::ApiError;
use crate::registry::{done, Fail, Life, Pending, Resident, Step};
use crate::storage::{InboxItem, Storage, WriteSet};

/// Most inbox items applied in one write set.
const DRAIN_BATCH: usize = 4096;

impl From<ledger::TransferError> for Fail {
    fn from(e: ledger::TransferError) -> Self {
        Fail::Api(e.into())
    }
}

/// The result of [`Execute`]: the transfer as recorded, and whether this
/// call made it (false: it existed with the same fields).
#[derive(Debug, Clone)]
pub struct Executed {
    pub transfer: Transfer,
    pub fresh: bool,
}

/// A decided transfer whose records are in a write set, not yet in memory.
pub struct Staged {
    pub decision: ledger::Decision,
    accounts: Vec<Account>,
}

/// What a holder's ledger state is rebuilt from.
pub struct LedgerSnapshot {
    accounts: Vec<Account>,
    inbox: Vec<InboxItem>,
}

impl LedgerSnapshot {
    pub fn load(storage: &Storage, h: Holder) -> Result<Self, ApiError> {
        let (accounts, inbox) = storage.load_holder(h)?;
        Ok(LedgerSnapshot { accounts, inbox })
    }
}

/// One holder's ledger as its actor keeps it: the single writer's view of
/// its accounts, the transfers it wrote that storage may not have applied
/// yet, and the inbox it is applying.
pub struct LedgerCore {
    holder: Holder,
    storage: Storage,
    accounts: HashMap<AccountId, Account>,
    /// Transfers this activation wrote (new or with a new status), found here
    /// before the committer has applied them. Cleared when nothing is in flight.
    recent: HashMap<TransferId, (u64, Transfer)>,
    /// Generation of entries put in the caches; a barrier lets the tick
    /// forget the older ones even while writes keep flowing.
    gen: u64,
    /// Inbox items read but not applied yet.
    inbox: Vec<InboxItem>,
    /// A drain's write set is in flight: the inbox is not read again before
    /// it lands, so no item is applied twice.
    draining: bool,
}

impl LedgerCore {
    pub fn new(holder: Holder, storage: Storage, snap: LedgerSnapshot) -> Self {
        LedgerCore {
            holder,
            storage,
            accounts: snap
                .accounts
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
            recent: HashMap::new(),
            gen: 0,
            inbox: snap.inbox,
            draining: false,
        }
    }

    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// The generation records written now belong to (see
    /// [`LedgerActor::forget_before`]).
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// Whether inbox items were read and wait to be applied.
    pub fn inbox_waiting(&self) -> bool {
        !self.inbox.is_empty()
    }

    pub fn find(&self, id: TransferId) -> Result<Option<Transfer>, Fail> {
        if let Some((_, t)) = self.recent.get(&id) {
            return Ok(Some(t.clone()));
        }
        Ok(self.storage.transfer(id)?)
    }

    /// The account as this actor sees it: its own, or (for the other side's
    /// flags) a fresh view of another holder's.
    pub fn view(&self, id: &AccountId) -> Account {
        self.accounts
            .get(id)
            .cloned()
            .unwrap_or_else(|| Account::open(id.clone()))
    }

    /// Decide a new transfer (its id is not taken) and add its records to
    /// `w`: the transfer, its journal record, this holder's accounts and
    /// entries, the other holder's inbox item. Changes no memory: call
    /// [`adopt`](Self::adopt) once `w` is submitted.
    pub fn stage(&self, spec: &Spec, w: &mut WriteSet) -> Result<Staged, Fail> {
        if ledger::executor(&spec.debit, &spec.credit) != self.holder {
            tracing::error!(transfer = %spec.id, holder = %self.holder, "transfer routed to the wrong holder");
            return Err(ApiError::Internal.into());
        }
        let pending = match spec.kind {
            Kind::Post { pending_id } | Kind::Void { pending_id } | Kind::Expire { pending_id } => {
                self.find(pending_id)?
            }
            Kind::Single | Kind::Pending { .. } => None,
        };
        let d = ledger::decide(spec, &self.view(&spec.debit), pending.as_ref(), now())?;
        let mut accounts = Vec::with_capacity(2);
        let mut parts = WriteSet::new();
        for (id, posting) in [(&spec.debit, d.debit), (&spec.credit, d.credit())] {
            if id.holder() == self.holder {
                let mut a = self.view(id);
                a.apply(&posting)?;
                parts.account(&a);
                if id.keeps_entries() {
                    parts.entry(&Entry::of(&d.transfer, &a, posting));
                }
                accounts.push(a);
            } else {
                parts.inbox(&InboxItem::of(&d.transfer, id, posting));
            }
        }
        w.new_transfer(&d.transfer);
        w.pending_timeout(&d.transfer, self.holder);
        if let Some(r) = &d.resolved {
            w.transfer_status(r, self.holder);
        }
        w.journal(&JournalRecord {
            transfer: d.transfer.clone(),
            debit: d.debit,
            credit: d.credit(),
        });
        w.append(parts);
        Ok(Staged {
            decision: d,
            accounts,
        })
    }

    /// Take a staged transfer into memory (its write set was submitted).
    pub fn adopt(&mut self, s: Staged) {
        for a in s.accounts {
            self.accounts.insert(a.id.clone(), a);
        }
        let d = s.decision;
        self.recent
            .insert(d.transfer.spec.id, (self.gen, d.transfer));
        if let Some(r) = d.resolved {
            self.recent.insert(r.spec.id, (self.gen, r));
        }
    }

    /// The next batch of the inbox as one write set, taken into memory: the
    /// caller submits it at once and calls [`drained`](Self::drained) when
    /// it landed. None while a batch is in flight or when the inbox is empty.
    fn next_batch(&mut self) -> Option<WriteSet> {
        if self.draining {
            return None;
        }
        if self.inbox.is_empty() {
            match self.storage.inbox(self.holder) {
                Ok(items) => self.inbox = items,
                Err(e) => {
                    tracing::error!(holder = %self.holder, error = %e, "cannot read the inbox");
                    return None;
                }
            }
        }
        if self.inbox.is_empty() {
            return None;
        }
        let take = self.inbox.len().min(DRAIN_BATCH);
        let items: Vec<InboxItem> = self.inbox.drain(..take).collect();
        let mut w = WriteSet::new();
        let mut changed: HashMap<AccountId, Account> = HashMap::new();
        for item in &items {
            let mut a = changed
                .remove(&item.account)
                .unwrap_or_else(|| self.view(&item.account));
            if let Err(e) = a.apply(&item.posting) {
                // Cannot happen below MAX_AMOUNT; keep the item for the check to report.
                tracing::error!(account = %a.id, transfer = %item.transfer_id, error = %e, "inbox posting not applicable");
                changed.insert(a.id.clone(), a);
                continue;
            }
            if let Some(t) = &item.transfer {
                w.entry(&Entry::of(t, &a, item.posting));
            }
            w.inbox_done(item);
            changed.insert(a.id.clone(), a);
        }
        for a in changed.values() {
            w.account(a);
        }
        self.accounts.extend(changed);
        self.draining = true;
        Some(w)
    }

    /// The batch from [`next_batch`](Self::next_batch) landed (or failed):
    /// the inbox may be read again.
    fn drained(&mut self) {
        self.draining = false;
    }

    /// Open a new generation; the one returned is complete once everything
    /// submitted so far is durable. None when nothing is remembered.
    fn barrier(&mut self) -> Option<u64> {
        if self.recent.is_empty() {
            return None;
        }
        let gen = self.gen;
        self.gen += 1;
        Some(gen)
    }

    /// Storage has every transfer of generation `gen` and before.
    fn forget_through(&mut self, gen: u64) {
        self.recent.retain(|_, (g, _)| *g > gen);
    }
}

/// An actor that owns a [`LedgerCore`]: the single writer of one holder's
/// accounts. The provided methods are the ledger's writes and messages; the
/// actor supplies access to its parts and two hooks.
pub trait LedgerActor: Resident<Env = Shared> {
    fn ledger(&self) -> &LedgerCore;
    fn ledger_mut(&mut self) -> &mut LedgerCore;
    fn life(&self) -> &Life<Self>;
    fn life_mut(&mut self) -> &mut Life<Self>;
    fn env(&self) -> &Arc<Shared>;

    /// Storage has applied every record of a generation below `gen`
    /// (`u64::MAX`: every record): drop the actor's own copies of them.
    fn forget_before(&mut self, _gen: u64) {}

    /// A transfer this actor ran credited the holder's own wallet.
    fn credited(&mut self) {}

    /// Submit `w` as this activation (fenced, tracked); `value` once durable.
    fn commit<T: Send + 'static>(&self, mut w: WriteSet, value: T) -> Pending<T> {
        w.fence(self.life().fence());
        let durable = self
            .env()
            .storage
            .submit_tracked(w, Some(Arc::clone(&self.life().writes)));
        Box::pin(async move {
            durable.await?;
            Ok(value)
        })
    }

    /// Run first in every handler (after `life.touch`): a user's or a
    /// packet's actor applies its inbox (credits from claims, settlements),
    /// so what it answers includes every posting made durable for it. The
    /// system holder applies its inbox on a timer instead.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        if self.ledger().holder() != Holder::System {
            self.drain(ctx);
        }
    }

    /// Apply the inbox: the postings other holders journalled for our
    /// accounts. One write set per batch; the next read waits for it to land.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.ledger().draining || self.life_mut().touch(ctx).is_err() {
            return;
        }
        let Some(w) = self.ledger_mut().next_batch() else {
            return;
        };
        let durable = self.commit(w, ());
        ctx.spawn(durable.into_actor(self).map(|r, act: &mut Self, _| {
            act.ledger_mut().drained();
            if let Err(Fail::Api(e)) = r {
                tracing::error!(holder = %act.ledger().holder(), error = %e, "inbox drain failed");
            }
        }));
    }

    /// From the tick: forget the records storage has applied. Idle, that is
    /// all of them; busy, those written before a barrier once it is durable.
    fn forget_applied(&mut self, ctx: &mut Context<Self>) {
        if self.life().writes.in_flight() == 0 {
            self.ledger_mut().forget_through(u64::MAX);
            self.forget_before(u64::MAX);
        } else if let Some(gen) = self.ledger_mut().barrier() {
            let durable = self.commit(WriteSet::new(), ());
            ctx.spawn(durable.into_actor(self).map(move |r, act: &mut Self, _| {
                if r.is_ok() {
                    act.ledger_mut().forget_through(gen);
                    act.forget_before(gen + 1);
                }
            }));
        }
    }

    fn execute(&mut self, m: Execute) -> Step<Executed> {
        let spec = m.spec;
        if let Some(t) = self.ledger().find(spec.id)? {
            ledger::compare(&t.spec, &spec)?;
            // A retry is answered once the original is durable (it may
            // still be in flight, or be refused).
            return Ok(self.commit(
                WriteSet::new(),
                Executed {
                    transfer: t,
                    fresh: false,
                },
            ));
        }
        let mut w = WriteSet::new();
        let staged = self.ledger().stage(&spec, &mut w)?;
        let answer = self.commit(
            w,
            Executed {
                transfer: staged.decision.transfer.clone(),
                fresh: true,
            },
        );
        let credited = matches!(&spec.credit, AccountId::Wallet(_))
            && spec.credit.holder() == self.ledger().holder();
        self.ledger_mut().adopt(staged);
        if credited {
            self.credited();
        }
        Ok(answer)
    }

    fn get_account(&mut self, m: GetAccount) -> Step<Account> {
        if m.id.holder() != self.ledger().holder() {
            return Err(ApiError::Internal.into());
        }
        done(self.ledger().view(&m.id))
    }

    /// Resolve a pending transfer that reached its timeout (sent by the sweeper).
    fn expire_due(&mut self, m: ExpireDue) -> Step<()> {
        let Some(p) = self.ledger().find(m.id)? else {
            return done(());
        };
        if p.status != Status::Pending {
            // Resolved already: drop its stale timeout entry so the sweeper
            // does not keep finding it.
            let mut w = WriteSet::new();
            w.transfer_status(&p, self.ledger().holder());
            return Ok(self.commit(w, ()));
        }
        if p.expires_at.is_none_or(|t| now() < t) {
            return done(());
        }
        let spec = Spec {
            id: TransferId::derive("expire", &[p.spec.id.as_bytes()]),
            debit: p.spec.debit.clone(),
            credit: p.spec.credit.clone(),
            amount: 0,
            kind: Kind::Expire {
                pending_id: p.spec.id,
            },
            reason: p.spec.reason,
            user_data: String::new(),
        };
        let step = self.execute(Execute { spec })?;
        Ok(Box::pin(async move { step.await.map(|_| ()) }))
    }
}

/// Run a ledger message: refused if the actor retired, after the inbox
/// caught up (see [`LedgerActor::catch_up`]).
pub fn handle<A: LedgerActor, R>(
    a: &mut A,
    ctx: &mut Context<A>,
    run: impl FnOnce(&mut A) -> Step<R>,
) -> Step<R> {
    a.life_mut().touch(ctx)?;
    a.catch_up(ctx);
    run(a)
}

macro_rules! ledger_message {
    ($name:ident -> $ret:ty { $($field:ident : $ty:ty),* }) => {
        #[derive(Debug, Clone)]
        pub struct $name { $(pub $field: $ty),* }
        impl Message for $name { type Result = Step<$ret>; }
    };
}

ledger_message!(Execute -> Executed { spec: Spec });
ledger_message!(GetAccount -> Account { id: AccountId });
ledger_message!(ExpireDue -> () { id: TransferId });
// Apply the inbox now.
ledger_message!(Drain -> () {});

/// Declares the handlers of the ledger messages for an actor type that
/// implements [`LedgerActor`].
macro_rules! ledger_handlers {
    ($actor:ty) => {
        $crate::wallets::ledger_core::ledger_handlers!(@one $actor, Execute, execute);
        $crate::wallets::ledger_core::ledger_handlers!(@one $actor, GetAccount, get_account);
        $crate::wallets::ledger_core::ledger_handlers!(@one $actor, ExpireDue, expire_due);
        impl actix::Handler<$crate::wallets::ledger_core::Drain> for $actor {
            type Result = $crate::registry::Step<()>;
            fn handle(
                &mut self,
                _: $crate::wallets::ledger_core::Drain,
                ctx: &mut actix::Context<Self>,
            ) -> Self::Result {
                use $crate::wallets::ledger_core::LedgerActor;
                self.life_mut().touch(ctx)?;
                self.drain(ctx);
                $crate::registry::done(())
            }
        }
    };
    (@one $actor:ty, $msg:ident, $method:ident) => {
        impl actix::Handler<$crate::wallets::ledger_core::$msg> for $actor {
            type Result = <$crate::wallets::ledger_core::$msg as actix::Message>::Result;
            fn handle(
                &mut self,
                m: $crate::wallets::ledger_core::$msg,
                ctx: &mut actix::Context<Self>,
            ) -> Self::Result {
                $crate::wallets::ledger_core::handle(self, ctx, |a| {
                    $crate::wallets::ledger_core::LedgerActor::$method(a, m)
                })
            }
        }
    };
}
pub(crate) use ledger_handlers;
