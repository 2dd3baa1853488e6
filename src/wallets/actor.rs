//! The WalletActor: single writer of one holder's accounts (a user's wallet,
//! or, for the one system holder, the revenue and clearing accounts).
//!
//! A transfer runs in the actor of the holder that must authorise it
//! ([`ledger::executor`]). That actor decides it ([`ledger::decide`]) and
//! submits one write set holding the transfer, its journal record (both
//! postings), its own account(s) and entries, and, for an account of another
//! holder, an inbox item. The other holder's actor applies its inbox later in
//! one write set per batch ([`WalletActor::drain`]); the books check counts
//! inbox items as postings in flight.

use crate::clock::now;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::domain::ids::TransferId;
use crate::domain::ledger::{
    self, Account, AccountId, Entry, Holder, JournalRecord, Kind, Spec, Status, Transfer,
};
use crate::error::ApiError;
use crate::registry::{done, Fail, Life, Pending, Resident, Step};
use crate::storage::{InboxItem, WriteSet};

/// The system holder applies its inbox this often.
const SYSTEM_DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Most inbox items applied in one write set.
const DRAIN_BATCH: usize = 4096;

impl From<ledger::TransferError> for Fail {
    fn from(e: ledger::TransferError) -> Self {
        Fail::Api(e.into())
    }
}

/// What a WalletActor is rebuilt from.
pub struct Snapshot {
    accounts: Vec<Account>,
    inbox: Vec<InboxItem>,
    auto_payout: Option<u64>,
    packet: Option<crate::storage::PacketRecords>,
}

pub struct WalletActor {
    pub(super) life: Life<WalletActor>,
    pub(super) env: Arc<Shared>,
    pub(super) holder: Holder,
    accounts: HashMap<AccountId, Account>,
    /// Transfers this activation wrote (new or with a new status), found here
    /// before the committer has applied them. Cleared when nothing is in flight.
    recent: HashMap<TransferId, (u64, Transfer)>,
    /// Generation of entries put in the caches; a barrier lets the tick
    /// forget the older ones even while writes keep flowing.
    pub(super) gen: u64,
    /// Inbox items read but not applied yet.
    inbox: Vec<InboxItem>,
    /// Payout state of this activation (see [`super::payouts`]).
    pub(super) payouts: super::memory::PayoutMemory,
    /// For a packet's holder: the packet, its claims and breaker.
    pub(super) packet: Option<super::memory::PacketMemory>,
    /// Packets this holder funded recently, and its daily packet total.
    pub(super) sends: super::memory::SendMemory,
    /// A drain's write set is in flight: the inbox is not read again before
    /// it lands, so no item is applied twice.
    draining: bool,
}

/// A decided transfer whose records are in a write set, not yet in memory.
pub(super) struct Staged {
    pub(super) decision: ledger::Decision,
    accounts: Vec<Account>,
}

/// The result of [`Execute`]: the transfer as recorded, and whether this
/// call made it (false: it existed with the same fields).
#[derive(Debug, Clone)]
pub struct Executed {
    pub transfer: Transfer,
    pub fresh: bool,
}

impl WalletActor {
    pub(super) fn commit<T: Send + 'static>(&self, mut w: WriteSet, value: T) -> Pending<T> {
        w.fence(self.life.fence());
        let durable = self
            .env
            .storage
            .submit_tracked(w, Some(Arc::clone(&self.life.writes)));
        Box::pin(async move {
            durable.await?;
            Ok(value)
        })
    }

    pub(super) fn now(&self) -> i64 {
        now()
    }

    pub(super) fn find(&self, id: TransferId) -> Result<Option<Transfer>, Fail> {
        if let Some((_, t)) = self.recent.get(&id) {
            return Ok(Some(t.clone()));
        }
        Ok(self.env.storage.transfer(id)?)
    }

    /// The account as this actor sees it: its own, or (for the other side's
    /// flags) a fresh view of another holder's.
    pub(super) fn view(&self, id: &AccountId) -> Account {
        self.accounts
            .get(id)
            .cloned()
            .unwrap_or_else(|| Account::open(id.clone()))
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.store_opens();
        if self.life.writes.in_flight() == 0 {
            self.recent.clear();
            self.payouts.forget_before(u64::MAX);
            self.sends.forget_before(u64::MAX);
        } else if !self.recent.is_empty() {
            // Busy: once everything submitted so far is durable, storage has
            // the entries of this generation and before.
            let gen = self.gen;
            self.gen += 1;
            let durable = self.commit(WriteSet::new(), ());
            ctx.spawn(durable.into_actor(self).map(move |r, act, _| {
                if r.is_ok() {
                    act.recent.retain(|_, (g, _)| *g > gen);
                    act.payouts.forget_before(gen + 1);
                    act.sends.forget_before(gen + 1);
                }
            }));
        }
        let idle = Duration::from_secs(self.env.config.actors.idle_timeout_seconds);
        if self.holder != Holder::System {
            self.life.tick(ctx, idle);
        }
    }

    /// Run first in every handler (after `life.touch`): a user's or a
    /// packet's actor applies its inbox (credits from claims, settlements),
    /// so what it answers includes every posting made durable for it. The
    /// system holder applies its inbox on a timer instead.
    pub(super) fn catch_up(&mut self, ctx: &mut Context<Self>) {
        if self.holder != Holder::System {
            self.drain(ctx);
        }
    }

    /// Apply the inbox: the postings other holders journalled for our
    /// accounts. One write set per batch; the next read waits for it to land.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.life.touch(ctx).is_err() {
            return;
        }
        if self.inbox.is_empty() {
            match self.env.storage.inbox(self.holder) {
                Ok(items) => self.inbox = items,
                Err(e) => {
                    tracing::error!(holder = %self.holder, error = %e, "cannot read the inbox");
                    return;
                }
            }
        }
        if self.inbox.is_empty() {
            return;
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
        let durable = self.commit(w, ());
        self.accounts.extend(changed);
        self.draining = true;
        ctx.spawn(durable.into_actor(self).map(|r, act, _| {
            act.draining = false;
            if let Err(Fail::Api(e)) = r {
                tracing::error!(holder = %act.holder, error = %e, "inbox drain failed");
            }
        }));
    }

    fn execute(&mut self, m: Execute) -> Step<Executed> {
        let spec = m.spec;
        if let Some(t) = self.find(spec.id)? {
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
        let staged = self.stage(&spec, &mut w)?;
        let answer = self.commit(
            w,
            Executed {
                transfer: staged.decision.transfer.clone(),
                fresh: true,
            },
        );
        let credited =
            matches!(&spec.credit, AccountId::Wallet(_)) && spec.credit.holder() == self.holder;
        self.adopt(staged);
        if credited {
            self.maybe_auto_payout();
        }
        Ok(answer)
    }

    /// Decide a new transfer (its id is not taken) and add its records to
    /// `w`: the transfer, its journal record, this holder's accounts and
    /// entries, the other holder's inbox item. Changes no memory: call
    /// [`adopt`](Self::adopt) once `w` is submitted.
    pub(super) fn stage(&self, spec: &Spec, w: &mut WriteSet) -> Result<Staged, Fail> {
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
    pub(super) fn adopt(&mut self, s: Staged) {
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

    fn get_account(&mut self, m: GetAccount) -> Step<Account> {
        if m.id.holder() != self.holder {
            return Err(ApiError::Internal.into());
        }
        done(self.view(&m.id))
    }

    fn get_transfer(&mut self, m: GetTransfer) -> Step<Option<Transfer>> {
        done(self.find(m.id)?)
    }

    /// Resolve a pending transfer that reached its timeout (sent by the sweeper).
    fn expire_due(&mut self, m: ExpireDue) -> Step<()> {
        let Some(p) = self.find(m.id)? else {
            return done(());
        };
        if p.status != Status::Pending {
            // Resolved already: drop its stale timeout entry so the sweeper
            // does not keep finding it.
            let mut w = WriteSet::new();
            w.transfer_status(&p, self.holder);
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

impl Actor for WalletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Life::started(ctx, self.env.config.actors.idle_timeout_seconds, Self::tick);
        if self.holder == Holder::System {
            ctx.run_interval(SYSTEM_DRAIN_EVERY, |act, ctx| act.drain(ctx));
        } else {
            if !self.inbox.is_empty() {
                self.drain(ctx);
            }
            // A crash between a credit and its automatic payout left it
            // unmade: the threshold is checked again at every activation.
            if matches!(self.holder, Holder::User(_)) {
                self.maybe_auto_payout();
            }
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.life.stopped();
    }
}

impl Resident for WalletActor {
    type Id = Holder;
    type Snapshot = Snapshot;
    type Env = Shared;
    const KIND: &'static str = "wallet";

    fn storage(env: &Shared) -> &crate::storage::Storage {
        &env.storage
    }

    fn metrics() -> &'static crate::metrics::ActorMetrics {
        &crate::metrics::WALLET_ACTORS
    }

    fn load(env: &Shared, h: Holder) -> Result<Snapshot, ApiError> {
        let (accounts, inbox) = env.storage.load_holder(h)?;
        let auto_payout = match h {
            Holder::User(u) => env.storage.auto_payout(u)?,
            Holder::System | Holder::Packet(_) => None,
        };
        let packet = match h {
            Holder::Packet(p) => Some(
                env.storage
                    .load_packet(p)?
                    .ok_or(crate::domain::packet::Refusal::NotFound)?,
            ),
            Holder::User(_) | Holder::System => None,
        };
        Ok(Snapshot {
            accounts,
            inbox,
            auto_payout,
            packet,
        })
    }

    fn activate(snap: Snapshot, life: Life<Self>, env: Arc<Shared>) -> Self {
        let holder = life.id();
        WalletActor {
            life,
            env,
            holder,
            accounts: snap
                .accounts
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
            recent: HashMap::new(),
            gen: 0,
            inbox: snap.inbox,
            draining: false,
            payouts: super::memory::PayoutMemory::with_auto(snap.auto_payout),
            packet: snap.packet.map(super::memory::PacketMemory::new),
            sends: super::memory::SendMemory::default(),
        }
    }

    fn spread(h: &Holder) -> (u8, u8) {
        match h {
            Holder::User(u) => (u.0[0], u.0[1]),
            Holder::System => (0, 0),
            Holder::Packet(p) => (p.0[0], p.0[1]),
        }
    }
}

#[macro_export]
#[doc(hidden)]
macro_rules! wallet_message {
    ($($t:tt)*) => { $crate::resident_message!($crate::wallets::WalletActor, catch_up; $($t)*); };
}
use wallet_message as message;

message!(Execute -> Executed { spec: Spec } => execute);
message!(GetAccount -> Account { id: AccountId } => get_account);
message!(GetTransfer -> Option<Transfer> { id: TransferId } => get_transfer);
message!(ExpireDue -> () { id: TransferId } => expire_due);

/// Apply the inbox now.
#[derive(Debug, Clone)]
pub struct Drain;

impl Message for Drain {
    type Result = Step<()>;
}

impl Handler<Drain> for WalletActor {
    type Result = Step<()>;
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Step<()> {
        self.life.touch(ctx)?;
        self.drain(ctx);
        done(())
    }
}
