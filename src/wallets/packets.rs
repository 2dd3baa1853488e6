//! Red packets: how the wallet actors and the packets' own actors share
//! them, creation in the funder's actor, and the [`Wallets`] calls.
//!
//! - **Creation** runs in the funder's [`WalletActor`] (the sender's wallet;
//!   the system holder for a merchant's campaign packet): the limits, the
//!   daily total, the idempotency key and the ledger hold (a pending
//!   transfer funder -> `escrow:rp_…` of the total plus any referral budget,
//!   without a timeout) land in one write set with the packet record.
//! - **Claims** run in the packet's own actor ([`super::PacketActor`], holder
//!   `rp_…`, the single writer of its escrow account): it decides the share
//!   ([`packet::decide_claim`]) and writes the claim record, the transfer
//!   escrow -> claimant (and a referral bonus, if any) and the events in one
//!   write set. A claim is a create: a second claim of the same user is
//!   refused by the committer even if memory were wrong.
//! - **Settlement** ([`Wallets::close_packet`]): once the packet is empty or
//!   expired, its actor names the sum paid out (after every claim so far is
//!   durable); the funder's actor posts the hold for exactly that sum, which
//!   releases the rest to the funder in the same transfer; the packet's actor
//!   then records the packet closed and reveals its seed. Every step is
//!   idempotent, and `kx/` keeps packets to settle across restarts.
//!
//! The hold has no ledger timeout on purpose: a timeout would release the
//! whole hold, including shares already paid from the escrow.

use super::actor::WalletActor;
use super::ledger_core::LedgerActor;
use super::packet_actor::{BeginClose, ClaimShare, Claimed, FinishClose, GetPacket, PacketState};
use super::Wallets;
use crate::domain::ids::PacketId;
use crate::domain::ledger::{AccountId, Holder, Kind, Reason, Spec};
use crate::domain::packet::{self, ClaimAsk, Packet};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{Fail, Step};
use crate::storage::{KeyRecord, WriteSet};
use crate::wallet_message as message;

/// The answer to [`CreatePacket`]: the packet, and whether this call made it.
#[derive(Debug, Clone)]
pub struct Created {
    pub packet: Packet,
    pub fresh: bool,
}

impl WalletActor {
    fn packet_usage(&mut self, day: &str) -> Result<u64, Fail> {
        if let Some((d, u)) = &self.sends.usage {
            if d == day {
                return Ok(*u);
            }
        }
        let u = self
            .env
            .storage
            .packet_day_usage(self.ledger.holder(), day)?;
        self.sends.usage = Some((day.to_string(), u));
        Ok(u)
    }

    fn create_packet(&mut self, m: CreatePacket) -> Step<Created> {
        let p = m.packet;
        let funder = self.ledger.holder();
        if p.funder.holder() != funder {
            tracing::error!(packet = %p.id, holder = %funder, "packet routed to the wrong funder");
            return Err(ApiError::Internal.into());
        }
        let existing = match self.sends.by_key.get(&m.key_hash) {
            Some((_, old, hash)) => Some((old.clone(), hash.clone())),
            None => match self.env.storage.packet_by_key(funder, &m.key_hash)? {
                Some(k) => {
                    let old = self
                        .env
                        .storage
                        .packet(k.packet)?
                        .ok_or(ApiError::Internal)?;
                    Some((old, k.request_hash))
                }
                None => None,
            },
        };
        if let Some((old, hash)) = existing {
            if hash != m.request_hash {
                return Err(ApiError::IdempotencyKeyReused.into());
            }
            // Answered once the original is durable (it may be in flight).
            return Ok(self.commit(
                WriteSet::new(),
                Created {
                    packet: old,
                    fresh: false,
                },
            ));
        }
        let cfg = &self.env.config;
        let day = cfg.payouts.day_of(p.created_at);
        let mut limits = cfg.packets.limits();
        // A user's daily total; campaign packets spend a merchant's budget.
        let daily = matches!(funder, Holder::User(_));
        let used = if daily {
            self.packet_usage(&day)?
        } else {
            limits.daily_max_fen = u64::MAX;
            0
        };
        packet::check(p.total, p.count, p.mode, used, &limits)?;
        let hold = Spec {
            id: p.hold,
            debit: p.funder.clone(),
            credit: AccountId::Escrow(p.id),
            amount: p.held(),
            kind: Kind::Pending { timeout_seconds: 0 },
            reason: Reason::Packet,
            user_data: p.id.to_string(),
        };
        let mut w = WriteSet::new();
        let staged = self.ledger.stage(&hold, &mut w)?;
        w.new_packet(&p);
        w.packet_key(
            funder,
            &m.key_hash,
            &KeyRecord {
                packet: p.id,
                request_hash: m.request_hash.clone(),
            },
        );
        if daily {
            w.packet_day_usage(funder, &day, used + p.total);
        }
        let answer = self.commit(
            w,
            Created {
                packet: p.clone(),
                fresh: true,
            },
        );
        self.ledger.adopt(staged);
        if daily {
            self.sends.usage = Some((day, used + p.total));
        }
        self.sends
            .by_key
            .insert(m.key_hash, (self.ledger.gen(), p, m.request_hash));
        metrics::PACKETS.with_label_values(&["created"]).inc();
        Ok(answer)
    }
}

message!(CreatePacket -> Created { key_hash: [u8; 32], request_hash: String, packet: Packet } => create_packet);

impl Wallets {
    /// Create a packet: hold its money and store it (in the funder's actor).
    pub async fn create_packet(
        &self,
        key_hash: [u8; 32],
        request_hash: String,
        packet: Packet,
    ) -> Result<Created, ApiError> {
        self.wallet_actors
            .call(
                packet.funder.holder(),
                CreatePacket {
                    key_hash,
                    request_hash,
                    packet,
                },
            )
            .await
    }

    /// Claim a share; settles the packet in the background if this was the last.
    pub async fn claim_packet(&self, id: PacketId, ask: ClaimAsk) -> Result<Claimed, ApiError> {
        let c = self.packet_actors.call(id, ClaimShare { ask }).await?;
        if c.left == 0 {
            let me = self.clone();
            actix::spawn(async move {
                if let Err(e) = me.close_packet(id).await {
                    tracing::warn!(packet = %id, error = %e, "settling an empty packet failed; the sweeper retries");
                }
            });
        }
        Ok(c)
    }

    /// A packet's state with the claims `from..from + limit` (in claim
    /// order) and `viewer`'s own claim; `open` counts a view.
    pub async fn packet(
        &self,
        id: PacketId,
        open: bool,
        claims: std::ops::Range<usize>,
        viewer: Option<crate::domain::ids::UserId>,
    ) -> Result<PacketState, ApiError> {
        let msg = GetPacket {
            open,
            claims_from: claims.start,
            claims_limit: claims.len(),
            viewer,
        };
        self.packet_actors.call(id, msg).await
    }

    /// Settle a packet that is empty or expired: post its hold for what was
    /// paid (the rest goes back to the funder), then mark it closed. Safe to
    /// repeat; whether it was due.
    pub async fn close_packet(&self, id: PacketId) -> Result<bool, ApiError> {
        let Some(spec) = self.packet_actors.call(id, BeginClose {}).await? else {
            return Ok(false);
        };
        self.execute(spec).await?;
        // Counted once durable, where it was closed: an attempt refused
        // (another writer closed it first) is not a close.
        if self.packet_actors.call(id, FinishClose {}).await? {
            crate::metrics::PACKETS.with_label_values(&["closed"]).inc();
        }
        Ok(true)
    }

    /// Settle every packet due by `now`.
    pub(super) async fn close_due_packets(&self, now: i64) {
        match self.storage().due_packets(now, 1000) {
            Ok(due) => {
                let duty = &self.shared().duty;
                for (_, id) in due {
                    if !duty.mine(&format!("packet/{id}")) {
                        continue;
                    }
                    if let Err(e) = self.close_packet(id).await {
                        tracing::warn!(packet = %id, error = %e, "settling a packet failed; retrying later");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "packet sweep: storage read failed"),
        }
    }
}
