//! Wallets: the ledger's holders as actors, routing of transfers to the
//! holder that must authorise them, the timeout sweeper of pending
//! transfers, earnings, payouts, red packets, and the books check.
//!
//! Two kinds of actor hold accounts, each with its own registry, and both
//! run the same ledger executor ([`ledger_core`]): a [`WalletActor`] per
//! user plus one for the system holder, and a [`PacketActor`] per red packet
//! (its escrow). [`Wallets`] sends whatever is addressed to a
//! `Holder::Packet` to the packets' registry and the rest to the wallets'.

pub mod actor;
pub mod ledger_core;
pub mod memory;
pub mod packet_actor;
pub mod packets;
pub mod payouts;
pub mod reconcile;
pub mod runner;

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::domain::books::{self, CheckReport};
use crate::domain::ids::{TransferId, UserId};
use crate::domain::ledger::{self, Account, AccountId, Holder, Kind, Reason, Spec};
use crate::error::ApiError;
use crate::registry::{Arbiters, Registry, Step};
use crate::storage::{DayAnchor, Storage};
use actix::{Handler, Message};
pub use actor::WalletActor;
use governor::clock::DefaultClock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
pub use ledger_core::Executed;
use ledger_core::{Drain, Execute, ExpireDue, GetAccount};
pub use packet_actor::{Claimed, PacketActor, PacketState};
pub use packets::Created;
pub use payouts::Requested;
use payouts::{PayoutProgress, RefreshLink, RequestPayout, SetAutoPayout, SetLink};
use std::num::NonZeroU32;

use crate::domain::ids::PayoutId;
use crate::domain::payout::{Answer, Payout};
use crate::storage::Link;

/// What every wallet and packet actor shares.
pub struct Shared {
    pub config: Config,
    pub storage: Storage,
    /// Claims per user and minute (`packets.claims_per_minute_per_user`).
    claims: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
    /// Which holders' jobs this node runs (cluster mode: those it owns).
    pub duty: crate::node::Duty,
}

impl Shared {
    pub fn new(config: Config, storage: Storage) -> Shared {
        let clock = DefaultClock::default();
        let per_minute =
            NonZeroU32::new(config.packets.claims_per_minute_per_user).unwrap_or(NonZeroU32::MIN);
        Shared {
            claims: RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone()),
            clock,
            config,
            storage,
            duty: Default::default(),
        }
    }

    /// Count one claim of `user` against this node's limiter of a user's
    /// claims per minute: Ok, or the seconds to wait.
    pub fn count_claim(&self, user: &UserId) -> Result<(), u64> {
        self.claims
            .check_key(user)
            .map_err(|nu| crate::error::retry_after_secs(&nu, &self.clock))
    }

    pub fn with_duty(mut self, duty: crate::node::Duty) -> Shared {
        self.duty = duty;
        self
    }
}

/// The entity a holder's jobs belong to (its actor's fence names it).
pub fn holder_entity(h: Holder) -> String {
    match h {
        Holder::Packet(p) => format!("packet/{p}"),
        Holder::User(_) | Holder::System => format!("wallet/{h}"),
    }
}

/// The books check's answer: the report and the journal's day anchors.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BooksCheck {
    #[serde(flatten)]
    pub report: CheckReport,
    pub journal_days: Vec<DayAnchor>,
}

#[derive(Clone)]
pub struct Wallets {
    wallet_actors: Registry<WalletActor>,
    packet_actors: Registry<PacketActor>,
}

impl Wallets {
    /// Call inside the actix system but outside the HttpServer factory.
    /// Starts the sweeper that expires pending transfers at their timeout.
    pub fn new(shared: Arc<Shared>, arbiters: Arbiters) -> Wallets {
        let mailbox = shared.config.actors.mailbox;
        let w = Wallets {
            wallet_actors: Registry::new(Arc::clone(&shared), arbiters.clone(), mailbox),
            packet_actors: Registry::new(shared, arbiters, mailbox),
        };
        actix::spawn(w.clone().sweep_timeouts());
        // The system holder applies its inbox on a timer; wake it now so
        // postings left from before a restart are applied.
        let sys = w.clone();
        actix::spawn(async move {
            if let Err(e) = sys.wallet_actors.call(Holder::System, Drain {}).await {
                tracing::error!(error = %e, "cannot start the system wallet actor");
            }
        });
        w
    }

    pub fn shared(&self) -> &Shared {
        self.wallet_actors.env()
    }

    fn storage(&self) -> &Storage {
        &self.shared().storage
    }

    /// Send `msg` to the actor of `holder`: a packet's, or a wallet's.
    async fn call_holder<M, R>(&self, holder: Holder, msg: M) -> Result<R, ApiError>
    where
        M: Message<Result = Step<R>> + Clone + Send + 'static,
        WalletActor: Handler<M>,
        PacketActor: Handler<M>,
        R: Send + 'static,
    {
        match holder {
            Holder::Packet(p) => self.packet_actors.call(p, msg).await,
            Holder::User(_) | Holder::System => self.wallet_actors.call(holder, msg).await,
        }
    }

    async fn sweep_timeouts(self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            every.tick().await;
            ticks += 1;
            // The claim limiter keeps a key until told to forget idle ones.
            if ticks.is_multiple_of(60) {
                self.shared().claims.retain_recent();
            }
            let now = crate::clock::now();
            let duty = &self.shared().duty;
            // The system holder applies its inbox on its own timer; this
            // wakes it again if it retired (e.g. after a failed write).
            if duty.mine(&holder_entity(Holder::System)) {
                if let Err(e) = self.wallet_actors.call(Holder::System, Drain {}).await {
                    tracing::warn!(error = %e, "system wallet actor unavailable");
                }
            }
            match self.storage().due_pending(now, 1000) {
                Ok(due) => {
                    let due = due
                        .into_iter()
                        .filter(|(h, _)| duty.mine(&holder_entity(*h)));
                    for (holder, id) in due {
                        if let Err(e) = self.call_holder(holder, ExpireDue { id }).await {
                            tracing::warn!(transfer = %id, error = %e, "pending transfer expiry failed");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "timeout sweep: storage read failed"),
            }
            self.close_due_packets(now).await;
        }
    }

    /// Run a transfer in the actor of the holder that must authorise it.
    pub async fn execute(&self, spec: Spec) -> Result<Executed, ApiError> {
        let holder = ledger::executor(&spec.debit, &spec.credit);
        self.call_holder(holder, Execute { spec }).await
    }

    /// A transfer as stored (durable state; a transfer being written is not
    /// visible until its write set landed).
    pub fn transfer(&self, id: TransferId) -> Result<Option<ledger::Transfer>, ApiError> {
        Ok(self.storage().transfer(id)?)
    }

    pub async fn account(&self, id: AccountId) -> Result<Account, ApiError> {
        self.call_holder(id.holder(), GetAccount { id }).await
    }

    /// Credit `user` for an earning event, from the kind's revenue account.
    /// Idempotent on `event_id`: the transfer id derives from it.
    pub async fn earn(
        &self,
        event_id: &str,
        user: UserId,
        kind: &str,
        amount: u64,
    ) -> Result<Executed, ApiError> {
        self.execute(Spec {
            id: TransferId::derive("earning", &[event_id.as_bytes()]),
            debit: AccountId::Revenue(kind.to_string()),
            credit: AccountId::Wallet(user),
            amount,
            kind: Kind::Single,
            reason: Reason::Earning,
            user_data: event_id.to_string(),
        })
        .await
    }

    /// Ask for a payout of `amount` for `user`. `key` is the client's
    /// Idempotency-Key; `request_hash` tells a retry from a reused key.
    pub async fn request_payout(
        &self,
        user: UserId,
        key: String,
        request_hash: [u8; 32],
        amount: u64,
    ) -> Result<Requested, ApiError> {
        self.wallet_actors
            .call(
                Holder::User(user),
                RequestPayout {
                    key,
                    request_hash,
                    amount,
                    automatic: false,
                },
            )
            .await
    }

    /// Report what the provider said about a payout (or that asking failed).
    pub async fn payout_progress(
        &self,
        p: &Payout,
        answer: Option<Answer>,
        error: Option<String>,
        called: bool,
    ) -> Result<Payout, ApiError> {
        self.wallet_actors
            .call(
                Holder::User(p.user),
                PayoutProgress {
                    id: p.id,
                    answer,
                    error,
                    called,
                },
            )
            .await
    }

    pub async fn set_auto_payout(
        &self,
        user: UserId,
        threshold: Option<u64>,
    ) -> Result<(), ApiError> {
        self.wallet_actors
            .call(Holder::User(user), SetAutoPayout { threshold })
            .await
    }

    /// Store refreshed tokens unless the user re-linked since `linked_at`;
    /// whether they were stored.
    pub async fn refresh_link(
        &self,
        user: UserId,
        linked_at: i64,
        link: Link,
    ) -> Result<bool, ApiError> {
        self.wallet_actors
            .call(Holder::User(user), RefreshLink { linked_at, link })
            .await
    }

    pub async fn set_link(&self, user: UserId, link: Link) -> Result<(), ApiError> {
        self.wallet_actors
            .call(Holder::User(user), SetLink { link })
            .await
    }

    pub fn payout(&self, id: PayoutId) -> Result<Option<Payout>, ApiError> {
        Ok(self.storage().payout(id)?)
    }

    /// Verify the books (see [`books::check`]) and the journal's hash chain.
    /// Reads the whole ledger while commits wait: an operator's tool.
    pub async fn check(&self) -> Result<BooksCheck, ApiError> {
        let storage = self.storage().clone();
        let books = actix_web::web::block(move || storage.ledger_books())
            .await
            .map_err(|_| ApiError::Internal)??;
        let mut report = books::check(&books::Books {
            accounts: &books.accounts,
            entries: &books.entries,
            journal: &books.journal,
            in_flight: &books.in_flight,
        });
        report
            .findings
            .extend(books.chain_findings.iter().map(ToString::to_string));
        Ok(BooksCheck {
            report,
            journal_days: books.anchors,
        })
    }
}

#[cfg(test)]
mod tests;
