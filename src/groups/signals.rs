//! What the gateway knows about a joining or claiming user across all
//! groups and packets: the age of the account, the user's recent join
//! attempts and claims, and how many accounts were seen with the client's
//! device id. Kept in memory, bounded and
//! approximate: a restart forgets the rates (the stored analytics of each
//! invitation are not affected).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::domain::ids::UserId;
use crate::domain::risk::Policy;
use crate::storage::{Storage, StorageError};

const SHARDS: usize = 16;
/// Users tracked per shard before old entries are dropped.
const USERS_PER_SHARD: usize = 65_536;
/// Devices tracked per shard, and accounts remembered per device.
const DEVICES_PER_SHARD: usize = 16_384;
const ACCOUNTS_PER_DEVICE: usize = 64;
const ACCOUNT_AGE_CACHE: usize = 200_000;

/// The user-level signals of one join attempt or claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSignals {
    pub account_age_seconds: i64,
    /// Attempts of the same kind (joins, or claims) in the user window,
    /// this one included.
    pub recent: u32,
    /// Distinct accounts seen with the device id, this one included (0
    /// when none was sent).
    pub device_accounts: u32,
    /// The device's keyed hash, noted by the group once the attempt passed
    /// the user's rate limit ([`SignalStore::note_device`]).
    pub device: Option<[u8; 16]>,
}

/// Two fixed windows give a sliding estimate of the attempts in the last
/// `window` seconds.
#[derive(Clone, Copy)]
struct Recent {
    start: i64,
    current: u32,
    previous: u32,
}

impl Recent {
    fn hit(&mut self, now: i64, window: i64) -> u32 {
        let elapsed = now - self.start;
        if elapsed >= 2 * window {
            *self = Recent {
                start: now,
                current: 0,
                previous: 0,
            };
        } else if elapsed >= window {
            self.previous = self.current;
            self.current = 0;
            self.start += window;
        }
        self.current = self.current.saturating_add(1);
        let into = (now - self.start).clamp(0, window) as f64 / window as f64;
        self.current + (f64::from(self.previous) * (1.0 - into)).round() as u32
    }
}

/// Which of the user's attempts a signal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Join,
    Claim,
}

type Rates = Vec<Mutex<HashMap<UserId, Recent>>>;

pub struct SignalStore {
    created_at: quick_cache::sync::Cache<UserId, i64>,
    joins: Rates,
    claims: Rates,
    devices: Vec<Mutex<HashMap<[u8; 16], Vec<UserId>>>>,
}

impl Default for SignalStore {
    fn default() -> Self {
        SignalStore {
            created_at: quick_cache::sync::Cache::new(ACCOUNT_AGE_CACHE),
            joins: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            claims: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            devices: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl SignalStore {
    /// Record a join attempt or a claim by `user` (from `device`, a keyed
    /// hash of the client's device id) and answer its signals.
    pub fn observe(
        &self,
        storage: &Storage,
        user: UserId,
        device: Option<[u8; 16]>,
        activity: Activity,
        now: i64,
        p: &Policy,
    ) -> Result<UserSignals, StorageError> {
        let account_age_seconds = self.account_age(storage, user, now)?;
        let window = p.user_window_seconds.max(1);
        let rates = match activity {
            Activity::Join => &self.joins,
            Activity::Claim => &self.claims,
        };
        let recent = {
            let mut shard = lock(&rates[usize::from(user.0[0]) % SHARDS]);
            if shard.len() >= USERS_PER_SHARD && !shard.contains_key(&user) {
                shard.retain(|_, r| now - r.start < 2 * window);
                if shard.len() >= USERS_PER_SHARD {
                    shard.clear();
                }
            }
            shard
                .entry(user)
                .or_insert(Recent {
                    start: now,
                    current: 0,
                    previous: 0,
                })
                .hit(now, window)
        };
        // Read only: the device is noted once the attempt passed the user's
        // rate limit, so a caller cannot flood the table for free.
        let device_accounts = match device {
            None => 0,
            Some(d) => {
                let shard = lock(&self.devices[usize::from(d[0]) % SHARDS]);
                let users = shard.get(&d);
                let known = users.is_some_and(|u| u.contains(&user));
                (users.map_or(0, Vec::len) + usize::from(!known)) as u32
            }
        };
        Ok(UserSignals {
            account_age_seconds,
            recent,
            device_accounts,
            device,
        })
    }

    /// How old `user`'s account is (cached; an unknown user cannot hold a
    /// session, so it counts as brand new).
    pub fn account_age(
        &self,
        storage: &Storage,
        user: UserId,
        now: i64,
    ) -> Result<i64, StorageError> {
        let created = match self.created_at.get(&user) {
            Some(c) => c,
            None => {
                let c = storage.user(user)?.map_or(now, |u| u.created_at);
                self.created_at.insert(user, c);
                c
            }
        };
        Ok(now - created)
    }

    /// Remember that `user` joins or claims from `device`. A full shard first drops
    /// the devices seen with a single account (what a flood of made-up ids
    /// creates), keeping the shared ones that matter.
    pub fn note_device(&self, device: [u8; 16], user: UserId) {
        let mut shard = lock(&self.devices[usize::from(device[0]) % SHARDS]);
        if shard.len() >= DEVICES_PER_SHARD && !shard.contains_key(&device) {
            shard.retain(|_, users| users.len() > 1);
            if shard.len() >= DEVICES_PER_SHARD {
                shard.clear();
            }
        }
        let users = shard.entry(device).or_default();
        if !users.contains(&user) && users.len() < ACCOUNTS_PER_DEVICE {
            users.push(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_estimate() {
        let mut r = Recent {
            start: 0,
            current: 0,
            previous: 0,
        };
        for _ in 0..10 {
            r.hit(1, 60);
        }
        assert_eq!(r.hit(59, 60), 11);
        // half-way into the next window, half of the previous one counts
        assert_eq!(r.hit(90, 60), 1 + 6);
        // two windows later, everything is forgotten
        assert_eq!(r.hit(400, 60), 1);
    }
}
