//! What a wallet actor remembers besides its accounts: its packet (when the
//! actor is a packet's), the packets it created and the payouts it made that
//! storage may not have applied yet. `packets.rs` and `payouts.rs` act on
//! these; `actor.rs` holds them.

use std::collections::{HashMap, HashSet};

use crate::domain::ids::{PayoutId, UserId};
use crate::domain::packet::{Breaker, Claim, Packet, Tally};
use crate::domain::payout::{DayUsage, Payout};
use crate::storage::PacketRecords;

/// A packet as its actor keeps it.
pub struct PacketMemory {
    pub(super) packet: Packet,
    pub(super) claims: Vec<Claim>,
    pub(super) by_user: HashSet<UserId>,
    pub(super) tally: Tally,
    pub(super) breaker: Breaker,
    pub(super) opens: u64,
    pub(super) opens_stored: u64,
    /// When its settlement is due: its expiry, or when it emptied.
    pub(super) close_at: i64,
}

impl PacketMemory {
    pub fn new(r: PacketRecords) -> Self {
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

/// Packets a funder's actor created and storage may not have yet, and the
/// funder's daily total.
#[derive(Default)]
pub struct SendMemory {
    pub(super) by_key: HashMap<[u8; 32], (u64, Packet, String)>,
    pub(super) usage: Option<(String, u64)>,
}

impl SendMemory {
    /// Storage has every record of a generation below `gen`.
    pub fn forget_before(&mut self, gen: u64) {
        self.by_key.retain(|_, (g, _, _)| *g >= gen);
    }
}

/// Payout state of one activation: records written but maybe not applied
/// yet (found here first), and today's usage (this actor is its only writer).
#[derive(Default)]
pub struct PayoutMemory {
    pub(super) recent: HashMap<PayoutId, (u64, Payout)>,
    pub(super) by_key: HashMap<[u8; 32], (u64, PayoutId)>,
    pub(super) usage: Option<(String, DayUsage)>,
    /// The user's automatic payout threshold, if they opted in.
    pub(super) auto: Option<u64>,
}

impl PayoutMemory {
    pub fn with_auto(auto: Option<u64>) -> Self {
        PayoutMemory {
            auto,
            ..Default::default()
        }
    }

    /// Storage has every entry of a generation below `gen`.
    pub fn forget_before(&mut self, gen: u64) {
        self.recent.retain(|_, (g, _)| *g >= gen);
        self.by_key.retain(|_, (g, _)| *g >= gen);
    }
}
