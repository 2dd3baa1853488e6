//! The WalletActor: single writer of one holder's accounts (a user's wallet,
//! or, for the one system holder, the revenue, merchant and clearing
//! accounts), through its [`LedgerCore`], and of what else the holder owns:
//! a user's payouts and account link (`payouts.rs`), and the packets a user
//! or the system holder funds (`packets.rs`). A red packet's escrow has an
//! actor of its own ([`super::PacketActor`]).

use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use super::ledger_core::{ledger_handlers, LedgerActor, LedgerCore, LedgerSnapshot};
use super::memory::{PayoutMemory, SendMemory};
use super::Shared;
use crate::domain::ledger::Holder;
use crate::error::ApiError;
use crate::registry::{Life, Resident};

/// The system holder applies its inbox this often.
const SYSTEM_DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What a WalletActor is rebuilt from.
pub struct Snapshot {
    ledger: LedgerSnapshot,
    auto_payout: Option<u64>,
}

pub struct WalletActor {
    pub(super) life: Life<WalletActor>,
    pub(super) env: Arc<Shared>,
    pub(super) ledger: LedgerCore,
    /// Payout state of this activation (see [`super::payouts`]).
    pub(super) payouts: PayoutMemory,
    /// Packets this holder funded recently, and its daily packet total.
    pub(super) sends: SendMemory,
}

impl WalletActor {
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.forget_applied(ctx);
        if self.ledger.holder() != Holder::System {
            let idle = Duration::from_secs(self.env.config.actors.idle_timeout_seconds);
            self.life.tick(ctx, idle);
        }
    }
}

impl LedgerActor for WalletActor {
    fn ledger(&self) -> &LedgerCore {
        &self.ledger
    }

    fn ledger_mut(&mut self) -> &mut LedgerCore {
        &mut self.ledger
    }

    fn life(&self) -> &Life<Self> {
        &self.life
    }

    fn life_mut(&mut self) -> &mut Life<Self> {
        &mut self.life
    }

    fn env(&self) -> &Arc<Shared> {
        &self.env
    }

    fn forget_before(&mut self, gen: u64) {
        self.payouts.forget_before(gen);
        self.sends.forget_before(gen);
    }

    fn credited(&mut self) {
        self.maybe_auto_payout();
    }
}

impl Actor for WalletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Life::started(ctx, self.env.config.actors.idle_timeout_seconds, Self::tick);
        if self.ledger.holder() == Holder::System {
            // On the node that runs the system holder's jobs only: in a
            // cluster, its actor may be active on several nodes.
            let entity = super::holder_entity(Holder::System);
            ctx.run_interval(SYSTEM_DRAIN_EVERY, move |act, ctx| {
                if act.env.duty.mine(&entity) {
                    act.drain(ctx)
                }
            });
        } else {
            if self.ledger.inbox_waiting() {
                self.drain(ctx);
            }
            // A crash between a credit and its automatic payout left it
            // unmade: the threshold is checked again at every activation.
            if matches!(self.ledger.holder(), Holder::User(_)) {
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
        let auto_payout = match h {
            Holder::User(u) => env.storage.auto_payout(u)?,
            Holder::System => None,
            Holder::Packet(p) => {
                tracing::error!(packet = %p, "a packet routed to the wallet actors");
                return Err(ApiError::Internal);
            }
        };
        Ok(Snapshot {
            ledger: LedgerSnapshot::load(&env.storage, h)?,
            auto_payout,
        })
    }

    fn activate(snap: Snapshot, life: Life<Self>, env: Arc<Shared>) -> Self {
        let holder = life.id();
        WalletActor {
            ledger: LedgerCore::new(holder, env.storage.clone(), snap.ledger),
            life,
            env,
            payouts: PayoutMemory::with_auto(snap.auto_payout),
            sends: SendMemory::default(),
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

ledger_handlers!(WalletActor);

#[macro_export]
#[doc(hidden)]
macro_rules! wallet_message {
    ($($t:tt)*) => { $crate::resident_message!($crate::wallets::WalletActor, catch_up; $($t)*); };
}
