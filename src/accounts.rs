//! Accounts: users, their sessions, freezes, identity checks (KYC) and the
//! operator's API keys. This is the only writer of their records: the
//! gateway parses a request, asks here, and maps the answer.
//!
//! What every request asks (is this session live, is this user frozen,
//! whose key is this) is answered from memory: recent sessions in a cache,
//! revocations, freezes and API keys in full (they are few). Each change is
//! durable before memory shows it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::clock::{now, now_ms};
use crate::config::Config;
use crate::domain::group::UserName;
use crate::domain::ids::{random_bytes, UserId};
use crate::domain::session::{self, Session, Verdict};
use crate::error::ApiError;
use crate::storage::{ApiKey, BlacklistEntry, Storage, StorageError, User, WriteSet};

/// Session tokens start with this.
pub const SESSION_PREFIX: &str = "qrs_";
/// API keys start with this.
pub const API_KEY_PREFIX: &str = "qrk_";

/// What a secret token (a session token, an API key) is stored and looked
/// up by: never the token itself.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn poisoned() -> ApiError {
    tracing::error!("accounts lock poisoned");
    ApiError::Internal
}

/// API keys by the hash of the key.
fn index_api_keys(keys: Vec<ApiKey>) -> HashMap<[u8; 32], ApiKey> {
    let mut out = HashMap::new();
    for k in keys {
        match URL_SAFE_NO_PAD.decode(&k.hash) {
            Ok(b) if b.len() == 32 => {
                let mut h = [0u8; 32];
                h.copy_from_slice(&b);
                out.insert(h, k);
            }
            _ => tracing::error!(id = %k.id, "API key record with a bad hash: ignored"),
        }
    }
    out
}

pub struct Accounts {
    storage: Storage,
    lifetime_seconds: i64,
    /// blake3(session token) -> session, for sessions seen recently.
    sessions: quick_cache::sync::Cache<[u8; 32], Session>,
    /// Users whose sessions were revoked, and before when (ms). Filled from
    /// storage when a session is first seen (every session is, after a
    /// start) and by revocations; never evicted, unlike `sessions`.
    revoked: RwLock<HashMap<UserId, i64>>,
    /// Frozen users: they may not join, claim, create packets or codes, or
    /// pay out.
    frozen: RwLock<HashSet<UserId>>,
    /// `packets.blacklist` of the config: frozen whatever storage says.
    frozen_by_config: HashSet<UserId>,
    /// API keys by blake3(key).
    api_keys: RwLock<HashMap<[u8; 32], ApiKey>>,
}

impl Accounts {
    /// Load the freezes and API keys from storage.
    pub fn load(storage: &Storage, config: &Config) -> Result<Accounts, StorageError> {
        let api_keys = index_api_keys(storage.api_keys()?);
        let frozen_by_config: HashSet<UserId> = config
            .packets
            .blacklist
            .iter()
            .filter_map(|u| UserId::parse(u).ok())
            .collect();
        let mut frozen: HashSet<UserId> =
            storage.frozen()?.into_iter().map(|e| e.user_id).collect();
        frozen.extend(frozen_by_config.iter().copied());
        Ok(Accounts {
            storage: storage.clone(),
            lifetime_seconds: config.sessions.lifetime_seconds(),
            sessions: quick_cache::sync::Cache::new(200_000),
            revoked: RwLock::default(),
            frozen: RwLock::new(frozen),
            frozen_by_config,
            api_keys: RwLock::new(api_keys),
        })
    }

    /// Another node changed the record `k` (cluster mode): make memory
    /// agree with storage, which holds the change already.
    pub fn refresh(&self, k: &[u8]) {
        let tail = |prefix: &[u8]| k.strip_prefix(prefix);
        if let Some(h) = tail(b"s/").or_else(|| tail(b"se/")) {
            if let Ok(h) = <[u8; 32]>::try_from(h) {
                self.sessions.remove(&h);
            }
        } else if let Some(u) = tail(b"sr/")
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(UserId)
        {
            match self.storage.sessions_revoked_before(u) {
                Ok(before) => {
                    if let Ok(mut r) = self.revoked.write() {
                        r.insert(u, before);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read a session revocation"),
            }
        } else if let Some(u) = tail(b"kb/")
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(UserId)
        {
            let frozen = self.frozen_by_config.contains(&u)
                || self.storage.is_frozen(u).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read a freeze; treating the user as frozen");
                    true
                });
            if let Ok(mut f) = self.frozen.write() {
                if frozen {
                    f.insert(u);
                } else {
                    f.remove(&u);
                }
            }
        } else if k.starts_with(b"ak/") {
            match self.storage.api_keys() {
                Ok(keys) => {
                    if let Ok(mut m) = self.api_keys.write() {
                        *m = index_api_keys(keys);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the API keys"),
            }
        }
    }

    // ---- users ----

    /// A new user and its first session: (the user, the session token, the session).
    /// Create a user and its first session; `passed` is the challenge the
    /// creation answered (its expiry and tag), used up in the same write.
    pub async fn create_user(
        &self,
        name: UserName,
        passed: Option<(i64, [u8; 16])>,
    ) -> Result<(User, String, Session), ApiError> {
        let user = User {
            id: UserId::random(),
            name: name.into_string(),
            created_at: now(),
            kyc_verified: false,
            real_name: None,
        };
        let (token, hash, session) = self.new_session(user.id);
        let mut w = WriteSet::new();
        w.user_record(&user);
        w.session(&hash, &session);
        if let Some((expires_at, tag)) = passed {
            w.challenge_used(expires_at, &tag);
        }
        match self.storage.commit(w).await {
            Err(crate::storage::StorageError::Exists(_)) if passed.is_some() => {
                return Err(ApiError::Challenge(crate::domain::challenge::Refusal::Used))
            }
            r => r?,
        }
        Ok((user, token, session))
    }

    /// The user `id` names, if anyone has it.
    pub fn exists(&self, id: UserId) -> Result<bool, ApiError> {
        Ok(self.storage.user(id)?.is_some())
    }

    /// Whether `id` is a user: in cluster mode, one this node does not
    /// know yet may have been made through another node a moment ago, so
    /// it first applies what the log holds (a request to the log per
    /// unknown id; when the log does not answer, as far as this node knows).
    pub async fn known(&self, id: UserId) -> Result<bool, ApiError> {
        if self.exists(id)? {
            return Ok(true);
        }
        if !self.storage.is_cluster() {
            return Ok(false);
        }
        if let Err(e) = self.storage.sync_all().await {
            tracing::debug!(error = %e, "cannot catch up with the log");
        }
        self.exists(id)
    }

    /// Record whether `id`'s identity is verified.
    /// Record the operator's identity check: `real_name` is the sealed
    /// name (kept when None and still verified; dropped when not verified).
    pub async fn set_kyc(
        &self,
        id: UserId,
        verified: bool,
        real_name: Option<String>,
    ) -> Result<(), ApiError> {
        let mut user = self.storage.user(id)?.ok_or(ApiError::UserNotFound)?;
        user.kyc_verified = verified;
        if !verified {
            user.real_name = None;
        } else if real_name.is_some() {
            user.real_name = real_name;
        }
        let mut w = WriteSet::new();
        w.user_record(&user);
        self.storage.commit(w).await?;
        Ok(())
    }

    // ---- sessions ----

    fn new_session(&self, user: UserId) -> (String, [u8; 32], Session) {
        let token = format!(
            "{SESSION_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        );
        let hash = token_hash(&token);
        let now_ms = now_ms();
        let s = Session {
            user,
            created_at_ms: now_ms,
            expires_at: Some(now_ms / 1000 + self.lifetime_seconds),
        };
        (token, hash, s)
    }

    /// A new session for an existing user: its token and the session.
    pub async fn issue_session(&self, user: UserId) -> Result<(String, Session), ApiError> {
        let (token, hash, session) = self.new_session(user);
        let mut w = WriteSet::new();
        w.session(&hash, &session);
        self.storage.commit(w).await?;
        Ok((token, session))
    }

    /// The user a session speaks for, if it is live: expired and revoked
    /// sessions answer 401. Slides the session's expiry (a durable write
    /// not awaited, at most once a day per session).
    pub fn session_user(&self, hash: &[u8; 32]) -> Result<UserId, ApiError> {
        let s = match self.sessions.get(hash) {
            Some(s) => s,
            None => {
                let s = self.storage.session(hash)?.ok_or(ApiError::Unauthorized)?;
                let before = self.storage.sessions_revoked_before(s.user)?;
                if before > 0 {
                    self.revoked
                        .write()
                        .map_err(|_| poisoned())?
                        .insert(s.user, before);
                }
                self.sessions.insert(*hash, s);
                s
            }
        };
        let before = self
            .revoked
            .read()
            .map_err(|_| poisoned())?
            .get(&s.user)
            .copied()
            .unwrap_or(0);
        match session::check(&s, now(), self.lifetime_seconds, before) {
            Verdict::Ended => {
                self.sessions.remove(hash);
                Err(ApiError::Unauthorized)
            }
            Verdict::Valid(None) => Ok(s.user),
            Verdict::Valid(Some(expires_at)) => {
                let slid = Session {
                    expires_at: Some(expires_at),
                    ..s
                };
                self.sessions.insert(*hash, slid);
                let mut w = WriteSet::new();
                w.session_expiry(hash, expires_at);
                // Queued now, in order; the request does not wait for it.
                drop(self.storage.submit(w));
                Ok(s.user)
            }
        }
    }

    /// End one session (logout).
    pub async fn end_session(&self, hash: &[u8; 32]) -> Result<(), ApiError> {
        let mut w = WriteSet::new();
        w.end_session(hash);
        self.storage.commit(w).await?;
        self.sessions.remove(hash);
        Ok(())
    }

    /// End every session of `user` created up to now; one issued after
    /// lives.
    pub async fn revoke_sessions(&self, user: UserId) -> Result<(), ApiError> {
        let before = now_ms() + 1;
        let mut w = WriteSet::new();
        w.sessions_revoked(user, before);
        self.storage.commit(w).await?;
        self.revoked
            .write()
            .map_err(|_| poisoned())?
            .insert(user, before);
        Ok(())
    }

    // ---- freezes ----

    pub fn is_frozen(&self, user: UserId) -> Result<bool, ApiError> {
        Ok(self.frozen.read().map_err(|_| poisoned())?.contains(&user))
    }

    /// Freeze `user` for `reason` (at most 200 characters).
    pub async fn freeze(&self, user: UserId, reason: &str) -> Result<BlacklistEntry, ApiError> {
        if reason.chars().count() > 200 {
            return Err(ApiError::validation(
                "reason must be at most 200 characters",
            ));
        }
        let e = BlacklistEntry {
            user_id: user,
            reason: reason.to_string(),
            at: now(),
        };
        let mut w = WriteSet::new();
        w.freeze(&e);
        self.storage.commit(w).await?;
        self.frozen.write().map_err(|_| poisoned())?.insert(user);
        Ok(e)
    }

    /// Unfreeze `user` (one frozen by `packets.blacklist` in the config stays).
    pub async fn unfreeze(&self, user: UserId) -> Result<(), ApiError> {
        let mut w = WriteSet::new();
        w.unfreeze(user);
        self.storage.commit(w).await?;
        if !self.frozen_by_config.contains(&user) {
            self.frozen.write().map_err(|_| poisoned())?.remove(&user);
        }
        Ok(())
    }

    // ---- API keys ----

    /// A new key named `name` with `scopes` (both checked by the caller):
    /// the record and the key, shown once.
    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: Vec<String>,
    ) -> Result<(ApiKey, String), ApiError> {
        let key = format!(
            "{API_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        );
        let k = ApiKey {
            id: format!("ak_{}", URL_SAFE_NO_PAD.encode(random_bytes::<12>())),
            name: name.to_string(),
            scopes,
            hash: URL_SAFE_NO_PAD.encode(token_hash(&key)),
            created_at: now(),
        };
        let mut w = WriteSet::new();
        w.api_key(&k);
        self.storage.commit(w).await?;
        self.api_keys
            .write()
            .map_err(|_| poisoned())?
            .insert(token_hash(&key), k.clone());
        Ok((k, key))
    }

    /// Every live key.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, ApiError> {
        Ok(self
            .api_keys
            .read()
            .map_err(|_| poisoned())?
            .values()
            .cloned()
            .collect())
    }

    /// The live key with this hash.
    pub fn api_key(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, ApiError> {
        Ok(self
            .api_keys
            .read()
            .map_err(|_| poisoned())?
            .get(hash)
            .cloned())
    }

    /// Revoke the key `id`: it answers 401 from now on.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), ApiError> {
        let found = self
            .api_keys
            .read()
            .map_err(|_| poisoned())?
            .iter()
            .find(|(_, k)| k.id == id)
            .map(|(h, k)| (*h, k.clone()));
        let (hash, k) = found.ok_or(ApiError::ApiKeyNotFound)?;
        let mut w = WriteSet::new();
        w.api_key_revoked(&k);
        self.storage.commit(w).await?;
        self.api_keys.write().map_err(|_| poisoned())?.remove(&hash);
        Ok(())
    }
}
