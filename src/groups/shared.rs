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

impl Shared {
    /// Count one join of `user` against this node's limiter of a user's
    /// joins per minute: Ok, or the seconds to wait.
    pub fn count_user_join(&self, user: &UserId) -> Result<(), u64> {
        self.user_limiter
            .check_key(user)
            .map_err(|nu| crate::error::retry_after_secs(&nu, &self.clock))
    }
}
