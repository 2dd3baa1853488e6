//! The PacketActor: single writer of one red packet (holder `rp_…`): its
//! record, claims, opens counter and circuit breaker, and its escrow account
//! through its [`LedgerCore`]. Claims, reads and the two steps of settlement
//! run here; creation runs in the funder's [`super::WalletActor`] (see
//! `packets.rs` for the whole life of a packet).

use actix::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::ledger_core::{ledger_handlers, LedgerActor, LedgerCore, LedgerSnapshot};
use super::Shared;
use crate::clock::{now, now_ms};
use crate::domain::events::{Event, EventKind};
use crate::domain::ids::{PacketId, TransferId, UserId};
use crate::domain::ledger::{AccountId, Holder, Kind, Reason, Spec};
use crate::domain::packet::{self, Breaker, Claim, ClaimAsk, Closed, Gate, Packet, Refusal, Tally};
use crate::error::ApiError;
use crate::metrics;
use crate::registry::{done, Fail, Life, Resident, Step};
use crate::storage::{PacketRecords, WriteSet};

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Self {
        Fail::Api(r.into())
    }
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
    /// The viewer's own claim, if the viewer claimed a share.
    pub own: Option<Claim>,
}

/// A packet as its actor keeps it.
struct PacketMemory {
    packet: Packet,
    claims: Vec<Claim>,
    by_user: HashSet<UserId>,
    tally: Tally,
    breaker: Breaker,
    opens: u64,
    opens_stored: u64,
    /// When its settlement is due: its expiry, or when it emptied.
    close_at: i64,
}

impl PacketMemory {
    fn new(r: PacketRecords) -> Self {
        let mut tally = Tally::default();
        for c in &r.claims {
            tally.add(c);
        }
        let close_at = match r.claims.last() {
            Some(c) if tally.claims >= r.packet.count => c.at,
            _ => r.packet.expires_at,
        };
        PacketMemory {
            by_user: r.claims.iter().map(|c| c.user).collect(),
            claims: r.claims,
            tally,
            breaker: Breaker::default(),
            opens: r.opens,
            opens_stored: r.opens,
            close_at,
            packet: r.packet,
        }
    }
}

/// What a PacketActor is rebuilt from.
pub struct Snapshot {
    ledger: LedgerSnapshot,
    packet: PacketRecords,
}

pub struct PacketActor {
    life: Life<PacketActor>,
    env: Arc<Shared>,
    id: PacketId,
    ledger: LedgerCore,
    mem: PacketMemory,
}

fn event(to: Vec<UserId>, at: i64, kind: EventKind) -> Event {
    Event::for_users(to, at, kind)
}

impl PacketActor {
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.store_opens();
        self.forget_applied(ctx);
        let idle = Duration::from_secs(self.env.config.actors.idle_timeout_seconds);
        self.life.tick(ctx, idle);
    }

    fn claim_share(&mut self, m: ClaimShare) -> Step<Claimed> {
        let pid = self.id;
        let cfg = &self.env.config.packets;
        let (limit, pause_ms) = (
            cfg.breaker_claims_per_second,
            i64::from(cfg.breaker_pause_seconds) * 1000,
        );
        let now_ms = now_ms();
        let now = now_ms.div_euclid(1000);
        let mem = &mut self.mem;
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
        // For the sender's feed: the claimant has the answer.
        w.event(&event(
            sender.into_iter().collect(),
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
        let mem = &mut self.mem;
        mem.tally.add(&claim);
        mem.by_user.insert(user);
        mem.claims.push(claim);
        if emptied.is_some() {
            mem.close_at = now;
        }
        // Counted once durable: a claim whose write fails is not one.
        Ok(Box::pin(async move {
            let claimed = answer.await?;
            metrics::PACKETS.with_label_values(&["claimed"]).inc();
            Ok(claimed)
        }))
    }

    fn get_packet(&mut self, m: GetPacket) -> Step<PacketState> {
        let mem = &mut self.mem;
        if m.open {
            mem.opens += 1;
        }
        let from = m.claims_from.min(mem.claims.len());
        let to = from.saturating_add(m.claims_limit).min(mem.claims.len());
        let own = m
            .viewer
            .filter(|u| mem.by_user.contains(u))
            .and_then(|u| mem.claims.iter().find(|c| c.user == u).cloned());
        done(PacketState {
            own,
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
        let pid = self.id;
        let mem = &self.mem;
        let p = &mem.packet;
        if p.closed.is_some() || (mem.tally.claims < p.count && now() < p.expires_at) {
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
    /// True when this call closed it (false: it was closed already).
    fn finish_close(&mut self, _: FinishClose) -> Step<bool> {
        let pid = self.id;
        let now = now();
        let mem = &mut self.mem;
        if mem.packet.closed.is_some() {
            return done(false);
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
        Ok(self.commit(w, true))
    }

    /// Store the opens counter if it moved (from the tick; a count, not an
    /// acknowledged write, so nobody waits for it).
    fn store_opens(&mut self) {
        if self.mem.opens != self.mem.opens_stored {
            let mut w = WriteSet::new();
            w.packet_opens(self.id, self.mem.opens);
            self.mem.opens_stored = self.mem.opens;
            drop(self.commit(w, ()));
        }
    }
}

impl LedgerActor for PacketActor {
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
}

impl Actor for PacketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Life::started(ctx, self.env.config.actors.idle_timeout_seconds, Self::tick);
        if self.ledger.inbox_waiting() {
            self.drain(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.life.stopped();
    }
}

impl Resident for PacketActor {
    type Id = PacketId;
    type Snapshot = Snapshot;
    type Env = Shared;
    const KIND: &'static str = "packet";

    fn storage(env: &Shared) -> &crate::storage::Storage {
        &env.storage
    }

    fn metrics() -> &'static crate::metrics::ActorMetrics {
        &crate::metrics::PACKET_ACTORS
    }

    fn load(env: &Shared, id: PacketId) -> Result<Snapshot, ApiError> {
        let packet = env.storage.load_packet(id)?.ok_or(Refusal::NotFound)?;
        Ok(Snapshot {
            ledger: LedgerSnapshot::load(&env.storage, Holder::Packet(id))?,
            packet,
        })
    }

    fn activate(snap: Snapshot, life: Life<Self>, env: Arc<Shared>) -> Self {
        let id = life.id();
        PacketActor {
            ledger: LedgerCore::new(Holder::Packet(id), env.storage.clone(), snap.ledger),
            mem: PacketMemory::new(snap.packet),
            id,
            life,
            env,
        }
    }

    fn spread(p: &PacketId) -> (u8, u8) {
        (p.0[0], p.0[1])
    }
}

ledger_handlers!(PacketActor);

macro_rules! message {
    ($($t:tt)*) => { $crate::resident_message!(PacketActor, catch_up; $($t)*); };
}

message!(ClaimShare -> Claimed { ask: ClaimAsk } => claim_share);
message!(GetPacket -> PacketState { open: bool, claims_from: usize, claims_limit: usize, viewer: Option<UserId> } => get_packet);
message!(BeginClose -> Option<Spec> {} => begin_close);
message!(FinishClose -> bool {} => finish_close);
