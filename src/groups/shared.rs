//! What every group actor needs from the process.

use governor::clock::DefaultClock;
use governor::DefaultKeyedRateLimiter;
use std::sync::Arc;

use crate::config::Config;
use crate::domain::ids::UserId;
use crate::keys::KeyRing;
use crate::storage::Storage;

/// Shared by every group actor.
pub struct Shared {
    pub config: Config,
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub user_limiter: Arc<DefaultKeyedRateLimiter<UserId>>,
    pub clock: DefaultClock,
    pub counters: crate::push::CounterStore,
    /// User-level risk signals (account age, join rate, shared devices).
    pub signals: super::signals::SignalStore,
    /// Which groups' sweeps this node runs (cluster mode: those it owns).
    pub duty: crate::node::Duty,
}
