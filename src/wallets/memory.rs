//! What a wallet actor remembers besides its accounts: the packets it
//! funded and the payouts it made that storage may not have applied yet.
//! `packets.rs` and `payouts.rs` act on these; `actor.rs` holds them.

use std::collections::HashMap;

use crate::domain::ids::PayoutId;
use crate::domain::packet::Packet;
use crate::domain::payout::{DayUsage, Payout};

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
