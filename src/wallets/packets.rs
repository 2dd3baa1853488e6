//! Red packets in the wallet actors.
//!
//! - **Creation** runs in the funder's actor (the sender's wallet; the system
//!   holder for a merchant's campaign packet): the limits, the daily total,
//!   the idempotency key and the ledger hold (a pending transfer
//!   funder -> `escrow:rp_…` of the total plus any referral budget, without a
//!   timeout) land in one write set with the packet record.
//! - **Claims** run in the packet's own actor (holder `rp_…`, the single
//!   writer of its escrow account): it decides the share
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
use super::Wallets;
use crate::clock::{now, now_ms};
use crate::domain::events::{Event, EventKind};
use crate::domain::ids::{PacketId, TransferId, UserId};
use crate::domain::ledger::{AccountId, Holder, Kind, Reason, Spec};
use crate::domain::packet::{self, Claim, ClaimAsk, Closed, Gate, Packet, Refusal, Tally};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{done, Fail, Step};
use crate::storage::{KeyRecord, WriteSet};
use crate::wallet_message as message;

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Self {
        Fail::Api(r.into())
    }
}

/// The answer to [`CreatePacket`]: the packet, and whether this call made it.
#[derive(Debug, Clone)]
pub struct Created {
    pub packet: Packet,
    pub fresh: bool,
}

/// The answer to [`ClaimShare`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub claim: Claim,
    /// Shares left after this one.
    pub left: u32,
}

/// A packet as its actor sees it now.
#[derive(Debug, Clone)]
pub struct PacketState {
    pub packet: Packet,
    /// The claims asked for (a page, in claim order).
    pub claims: Vec<Claim>,
    pub tally: Tally,
    pub opens: u64,
    /// Claims paused by the circuit breaker until then (unix ms; 0: never).
    pub paused_until_ms: i64,
}

fn event(to: Vec<UserId>, at: i64, kind: EventKind) -> Event {
    Event::for_users(to, at, kind)
}

impl WalletActor {
    fn packet_id(&self) -> Result<PacketId, Fail> {
        match self.ledger.holder() {
            Holder::Packet(p) => Ok(p),
            _ => Err(ApiError::Internal.into()),
        }
    }

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

    fn claim_share(&mut self, m: ClaimShare) -> Step<Claimed> {
        let pid = self.packet_id()?;
        let cfg = &self.env.config.packets;
        let (limit, pause_ms) = (
            cfg.breaker_claims_per_second,
            i64::from(cfg.breaker_pause_seconds) * 1000,
        );
        let now_ms = now_ms();
        let now = now_ms.div_euclid(1000);
        let mem = self.packet.as_mut().ok_or(Refusal::NotFound)?;
        match mem.breaker.admit(now_ms, limit, pause_ms) {
            Gate::Open => {}
            Gate::Paused { retry_after_secs } => {
                metrics::PACKETS.with_label_values(&["claim_paused"]).inc();
                return Err(Refusal::Paused { retry_after_secs }.into());
            }
            Gate::Tripped { retry_after_secs } => {
                tracing::warn!(packet = %pid, retry_after_secs, "too many claims: the circuit breaker paused this packet");
                metrics::PACKETS
                    .with_label_values(&["breaker_tripped"])
                    .inc();
                if let Some(s) = mem.packet.sender {
                    let mut w = WriteSet::new();
                    w.event(&event(
                        vec![s],
                        now,
                        EventKind::PacketPaused {
                            packet_id: pid,
                            retry_after_secs,
                        },
                    ));
                    // A notice only: nobody waits for it.
                    drop(self.env.storage.submit(w));
                }
                return Err(Refusal::Paused { retry_after_secs }.into());
            }
        }
        let by_user = &mem.by_user;
        let pay = packet::decide_claim(
            &mem.packet,
            &mem.tally,
            &m.ask,
            |u| by_user.contains(u),
            now,
        )?;
        let user = m.ask.user;
        let claim = Claim {
            user,
            index: pay.index,
            amount: pay.amount,
            at: now,
            referrer: m.ask.referrer.filter(|_| pay.bonus > 0),
            bonus: pay.bonus,
        };
        let left = mem.packet.count - pay.index - 1;
        let (sender, total) = (mem.packet.sender, mem.packet.total);
        let emptied = (left == 0).then(|| mem.packet.clone());

        let mut w = WriteSet::new();
        let share = Spec {
            id: TransferId::derive("packet claim", &[pid.as_bytes(), user.as_bytes()]),
            debit: AccountId::Escrow(pid),
            credit: AccountId::Wallet(user),
            amount: pay.amount,
            kind: Kind::Single,
            reason: Reason::PacketClaim,
            user_data: pid.to_string(),
        };
        let staged = self.ledger.stage(&share, &mut w)?;
        self.ledger.adopt(staged);
        if let (Some(referrer), true) = (claim.referrer, pay.bonus > 0) {
            let bonus = Spec {
                id: TransferId::derive("packet referral", &[pid.as_bytes(), user.as_bytes()]),
                debit: AccountId::Escrow(pid),
                credit: AccountId::Wallet(referrer),
                amount: pay.bonus,
                kind: Kind::Single,
                reason: Reason::Referral,
                user_data: pid.to_string(),
            };
            match self.ledger.stage(&bonus, &mut w) {
                Ok(s) => self.ledger.adopt(s),
                Err(e) => {
                    // The share is in memory but will not be written:
                    // rebuild from storage before anything else.
                    self.life.writes.fail();
                    return Err(e);
                }
            }
        }
        w.claim(pid, &claim);
        let mut to = vec![user];
        to.extend(sender.filter(|s| *s != user));
        w.event(&event(
            to,
            now,
            EventKind::PacketClaimed {
                packet_id: pid,
                user_id: user,
                amount: pay.amount,
                left,
                referrer: claim.referrer,
                bonus: pay.bonus,
            },
        ));
        if let Some(p) = &emptied {
            w.packet_close_at(p, now);
            if let Some(s) = sender {
                w.event(&event(
                    vec![s],
                    now,
                    EventKind::PacketEmpty {
                        packet_id: pid,
                        claimed: total,
                    },
                ));
            }
        }
        let answer = self.commit(
            w,
            Claimed {
                claim: claim.clone(),
                left,
            },
        );
        if let Some(mem) = self.packet.as_mut() {
            mem.tally.add(&claim);
            mem.by_user.insert(user);
            mem.claims.push(claim);
            if emptied.is_some() {
                mem.close_at = now;
            }
        }
        metrics::PACKETS.with_label_values(&["claimed"]).inc();
        Ok(answer)
    }

    fn get_packet(&mut self, m: GetPacket) -> Step<PacketState> {
        let mem = self.packet.as_mut().ok_or(Refusal::NotFound)?;
        if m.open {
            mem.opens += 1;
        }
        let from = m.claims_from.min(mem.claims.len());
        let to = from.saturating_add(m.claims_limit).min(mem.claims.len());
        done(PacketState {
            packet: mem.packet.clone(),
            claims: mem.claims[from..to].to_vec(),
            tally: mem.tally,
            opens: mem.opens,
            paused_until_ms: mem.breaker.paused_until_ms,
        })
    }

    /// If the packet is due (empty or expired) and not closed: the transfer
    /// that settles its hold, answered once every claim so far is durable.
    fn begin_close(&mut self, _: BeginClose) -> Step<Option<Spec>> {
        let pid = self.packet_id()?;
        let now = now();
        let mem = self.packet.as_ref().ok_or(Refusal::NotFound)?;
        let p = &mem.packet;
        if p.closed.is_some() || (mem.tally.claims < p.count && now < p.expires_at) {
            return done(None);
        }
        let paid = mem.tally.claimed + mem.tally.bonuses;
        let spec = Spec {
            id: TransferId::derive("packet close", &[pid.as_bytes()]),
            debit: p.funder.clone(),
            credit: AccountId::Escrow(pid),
            // Posting exactly what was paid releases the rest to the funder.
            amount: paid,
            kind: if paid == 0 {
                Kind::Void { pending_id: p.hold }
            } else {
                Kind::Post { pending_id: p.hold }
            },
            reason: Reason::PacketRefund,
            user_data: pid.to_string(),
        };
        Ok(self.commit(WriteSet::new(), Some(spec)))
    }

    /// The hold is settled: record the packet closed, reveal its seed.
    fn finish_close(&mut self, _: FinishClose) -> Step<()> {
        let pid = self.packet_id()?;
        let now = now();
        let mem = self.packet.as_mut().ok_or(Refusal::NotFound)?;
        if mem.packet.closed.is_some() {
            return done(());
        }
        let t = mem.tally;
        let refunded = mem.packet.held().saturating_sub(t.claimed + t.bonuses);
        let mut p = mem.packet.clone();
        p.closed = Some(Closed {
            at: now,
            claimed: t.claimed,
            bonuses: t.bonuses,
            refunded,
        });
        let mut w = WriteSet::new();
        w.packet_closed(&p, mem.close_at);
        w.packet_opens(pid, mem.opens);
        if let (Some(s), true) = (p.sender, refunded > 0) {
            w.event(&event(
                vec![s],
                now,
                EventKind::PacketRefunded {
                    packet_id: pid,
                    amount: refunded,
                },
            ));
        }
        mem.opens_stored = mem.opens;
        mem.packet = p;
        metrics::PACKETS.with_label_values(&["closed"]).inc();
        Ok(self.commit(w, ()))
    }

    /// Store the opens counter if it moved (from the tick; a count, not an
    /// acknowledged write, so nobody waits for it).
    pub(super) fn store_opens(&mut self) {
        let Holder::Packet(pid) = self.ledger.holder() else {
            return;
        };
        if let Some(mem) = self.packet.as_mut() {
            if mem.opens != mem.opens_stored {
                let mut w = WriteSet::new();
                w.packet_opens(pid, mem.opens);
                mem.opens_stored = mem.opens;
                drop(self.commit(w, ()));
            }
        }
    }
}

message!(CreatePacket -> Created { key_hash: [u8; 32], request_hash: String, packet: Packet } => create_packet);
message!(ClaimShare -> Claimed { ask: ClaimAsk } => claim_share);
message!(GetPacket -> PacketState { open: bool, claims_from: usize, claims_limit: usize } => get_packet);
message!(BeginClose -> Option<Spec> {} => begin_close);
message!(FinishClose -> () {} => finish_close);

impl Wallets {
    /// Create a packet: hold its money and store it (in the funder's actor).
    pub async fn create_packet(
        &self,
        key_hash: [u8; 32],
        request_hash: String,
        packet: Packet,
    ) -> Result<Created, ApiError> {
        self.actors
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
        let c = self
            .actors
            .call(Holder::Packet(id), ClaimShare { ask })
            .await?;
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
    /// order); `open` counts a view.
    pub async fn packet(
        &self,
        id: PacketId,
        open: bool,
        claims: std::ops::Range<usize>,
    ) -> Result<PacketState, ApiError> {
        let msg = GetPacket {
            open,
            claims_from: claims.start,
            claims_limit: claims.len(),
        };
        self.actors.call(Holder::Packet(id), msg).await
    }

    /// Settle a packet that is empty or expired: post its hold for what was
    /// paid (the rest goes back to the funder), then mark it closed. Safe to
    /// repeat; whether it was due.
    pub async fn close_packet(&self, id: PacketId) -> Result<bool, ApiError> {
        let Some(spec) = self.actors.call(Holder::Packet(id), BeginClose {}).await? else {
            return Ok(false);
        };
        self.execute(spec).await?;
        self.actors.call(Holder::Packet(id), FinishClose {}).await?;
        Ok(true)
    }

    /// Settle every packet due by `now`.
    pub(super) async fn close_due_packets(&self, now: i64) {
        match self.storage().due_packets(now, 1000) {
            Ok(due) => {
                for (_, id) in due {
                    if let Err(e) = self.close_packet(id).await {
                        tracing::warn!(packet = %id, error = %e, "settling a packet failed; retrying later");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "packet sweep: storage read failed"),
        }
    }
}
