//! Scan codes: create (from the pool), resolve (cached, counted), revoke.
//!
//! [`Codes`] is one process-wide service, built outside the HTTP server
//! factory so that every worker shares its pool, cache and counters. Its
//! background tasks: the pool refill ([`pool`]), the scan flush every
//! second ([`scans`]) and, every minute, forgetting codes that expired or
//! were revoked more than 30 days ago.

pub mod pool;
pub mod scans;

use crate::clock::now;
use actix_web::web;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::Config;
use crate::domain::code::{self, Binding, CodeId, Status, Tally};
use crate::domain::ids::UserId;
use crate::error::ApiError;
use crate::groups::Caller;
use crate::keys::KeyRing;
use crate::metrics;
use crate::storage::{Storage, StorageError, WriteSet};
pub use pool::{Pool, Pooled};
pub use scans::Scans;

/// A user's creations on one business day, as known in memory.
struct Quota {
    day: String,
    count: u32,
    /// Records of earlier days to delete with the next creation.
    stale: Vec<String>,
}

/// A code just created.
pub struct Created {
    pub binding: Arc<Binding>,
    /// The PNG of the QR code of its URL.
    pub png: Bytes,
    pub from_pool: bool,
}

pub struct Codes {
    cfg: crate::config::Codes,
    day_offset_hours: i32,
    storage: Storage,
    tag_key: [u8; 32],
    visitor_key: [u8; 32],
    base_url: String,
    pub pool: Pool,
    cache: quick_cache::sync::Cache<CodeId, Arc<Binding>>,
    scans: Scans,
    quotas: Mutex<HashMap<UserId, Quota>>,
    /// Revocations and forgetting, one at a time (both rewrite bindings).
    rewriting: tokio::sync::Mutex<()>,
}

impl Codes {
    /// Load the pool from storage. Pooled images drawn for another base
    /// URL, and pooled codes somehow bound already, are dropped: the
    /// returned write set, if any, deletes them (give it to
    /// [`start`](Self::start)).
    pub fn open(
        config: &Config,
        storage: Storage,
        keys: &KeyRing,
        base_url: &str,
    ) -> Result<(Arc<Codes>, Option<WriteSet>), StorageError> {
        let cfg = config.codes.clone();
        let pool = Pool::new(
            cfg.pool_size,
            cfg.pool_low_water,
            Duration::from_millis(cfg.refill_idle_ms),
        );
        let same_base = storage.code_pool_base()?.as_deref() == Some(base_url);
        let mut purge = WriteSet::new();
        let mut ready = Vec::new();
        let mut dropped = 0usize;
        for (id, png) in storage.code_pool()? {
            if same_base && !storage.code_exists(&id)? {
                ready.push(Pooled {
                    id,
                    png: Bytes::from(png),
                });
            } else {
                purge.remove_pool_code(&id);
                dropped += 1;
            }
        }
        if !same_base {
            purge.pool_base(base_url);
        }
        if dropped > 0 {
            tracing::info!(
                dropped,
                "scan code pool: dropped codes drawn for another base URL"
            );
        }
        let purge = (dropped > 0 || !same_base).then_some(purge);
        pool.extend(ready);
        let codes = Codes {
            cache: quick_cache::sync::Cache::new(cfg.cache_entries),
            cfg,
            day_offset_hours: config.payouts.day_offset_hours,
            storage,
            tag_key: keys.code_tag_key(),
            visitor_key: keys.visitor_key(),
            base_url: base_url.to_string(),
            pool,
            scans: Scans::default(),
            quotas: Mutex::new(HashMap::new()),
            rewriting: tokio::sync::Mutex::new(()),
        };
        Ok((Arc::new(codes), purge))
    }

    /// Start the background tasks (inside the actix system).
    /// Forgetting old codes runs on the node `duty` names for it.
    pub fn start(self: &Arc<Self>, purge: Option<WriteSet>, duty: crate::node::Duty) {
        let codes = Arc::clone(self);
        actix_web::rt::spawn(async move {
            if let Some(purge) = purge {
                if let Err(e) = codes.storage.commit(purge).await {
                    tracing::error!(error = %e, "scan code pool: cannot drop stale codes");
                }
            }
            codes.refill().await;
        });
        let codes = Arc::clone(self);
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                if let Err(e) = codes.scans.flush(&codes.storage).await {
                    tracing::warn!(error = %e, "scan counts not stored");
                }
                if ticks.is_multiple_of(60) && duty.mine("jobs/codes") {
                    if let Err(e) = codes.forget_due().await {
                        tracing::warn!(error = %e, "forgetting old scan codes failed");
                    }
                }
                ticks += 1;
            }
        });
    }

    pub fn url(&self, code: &str) -> String {
        code::url(&self.base_url, code)
    }

    fn quotas(&self) -> MutexGuard<'_, HashMap<UserId, Quota>> {
        match self.quotas.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The user's quota record for today, loaded from storage if memory
    /// has none for today.
    fn quota<'a>(
        &self,
        quotas: &'a mut HashMap<UserId, Quota>,
        u: UserId,
        day: &str,
    ) -> Result<&'a mut Quota, StorageError> {
        if quotas.get(&u).is_none_or(|q| q.day != day) {
            if quotas.len() >= 100_000 {
                quotas.retain(|_, q| q.day == day);
            }
            let mut count = 0;
            let mut stale = Vec::new();
            for (d, c) in self.storage.code_quota_days(u)? {
                if d == day {
                    count = c;
                } else {
                    stale.push(d);
                }
            }
            quotas.insert(
                u,
                Quota {
                    day: day.to_string(),
                    count,
                    stale,
                },
            );
        }
        quotas
            .get_mut(&u)
            .ok_or_else(|| StorageError::Io("quota record vanished".into()))
    }

    fn quota_exceeded(&self, now: i64) -> ApiError {
        ApiError::CodeQuotaExceeded {
            quota: self.cfg.user_quota_per_day,
            retry_after_secs: code::secs_to_next_day(now, self.day_offset_hours),
        }
    }

    fn day(&self, now: i64) -> String {
        let shifted = now + i64::from(self.day_offset_hours) * 3600;
        chrono::DateTime::from_timestamp(shifted, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    async fn generate_inline(&self) -> Result<Pooled, ApiError> {
        let (key, base, size) = (self.tag_key, self.base_url.clone(), self.cfg.qr_size);
        web::block(move || pool::generate(&key, &base, size))
            .await
            .map_err(|_| ApiError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "QR rendering failed");
                ApiError::Internal
            })
    }

    /// Bind a page and its parameters to a new code: from the pool when it
    /// has one, else drawn now (a pool miss). Users are held to their daily
    /// quota; the operator is not.
    pub async fn create(
        &self,
        who: &Caller,
        page: String,
        params: Value,
        ttl_seconds: Option<u32>,
    ) -> Result<Created, ApiError> {
        code::check_page(&self.cfg.pages, &page).map_err(ApiError::Validation)?;
        let params =
            code::check_params(params, self.cfg.max_params_bytes).map_err(ApiError::Validation)?;
        if let Some(t) = ttl_seconds {
            if !(self.cfg.min_ttl_seconds..=self.cfg.max_ttl_seconds).contains(&t) {
                return Err(ApiError::validation(format!(
                    "ttl_seconds must be between {} and {}",
                    self.cfg.min_ttl_seconds, self.cfg.max_ttl_seconds
                )));
            }
        }
        let user = match who {
            Caller::User(u) => Some(*u),
            Caller::Admin => None,
        };
        let now = now();
        let day = self.day(now);
        // Refuse early, before taking a code; the count is taken below.
        if let Some(u) = user {
            let mut quotas = self.quotas();
            if self.quota(&mut quotas, u, &day)?.count >= self.cfg.user_quota_per_day {
                return Err(self.quota_exceeded(now));
            }
        }
        // A pooled code may have been bound already by another node (cluster
        // mode: every node loads the stored pool at start); its create is
        // then refused and a fresh code is drawn instead.
        let mut taken_elsewhere = false;
        loop {
            let (pooled, from_pool) = match (taken_elsewhere, self.pool.take()) {
                (false, Some(p)) => (p, true),
                _ => (self.generate_inline().await?, false),
            };
            let binding = Binding {
                code: code::encode(&self.tag_key, &pooled.id),
                page: page.clone(),
                params: params.clone(),
                created_at: now,
                expires_at: ttl_seconds.map(|t| now + i64::from(t)),
                creator: user,
                revoked_at: None,
            };
            let mut w = WriteSet::new();
            w.new_code(&pooled.id, &binding, from_pool, binding.forget_at());
            // Counted and submitted under the lock, so a user's counts reach
            // storage in the order they were counted.
            let done = {
                let mut quotas = self.quotas();
                if let Some(u) = user {
                    let refused = match self.quota(&mut quotas, u, &day) {
                        Ok(q) if q.count < self.cfg.user_quota_per_day => {
                            q.count += 1;
                            w.code_quota(u, &day, q.count);
                            for d in q.stale.drain(..) {
                                w.remove_code_quota(u, &d);
                            }
                            None
                        }
                        Ok(_) => Some(self.quota_exceeded(now)),
                        Err(e) => Some(ApiError::from(e)),
                    };
                    if let Some(e) = refused {
                        drop(quotas);
                        if from_pool {
                            self.pool.put_back(pooled);
                        }
                        return Err(e);
                    }
                }
                self.storage.submit(w)
            };
            if let Err(e) = done.await {
                if let Some(u) = user {
                    if let Some(q) = self.quotas().get_mut(&u).filter(|q| q.day == day) {
                        q.count = q.count.saturating_sub(1);
                    }
                }
                if from_pool && matches!(e, StorageError::Exists(_)) {
                    taken_elsewhere = true;
                    continue;
                }
                return Err(e.into());
            }
            metrics::CODE_POOL_TAKES
                .with_label_values(&[if from_pool { "hit" } else { "miss" }])
                .inc();
            metrics::CODES.with_label_values(&["created"]).inc();
            let binding = Arc::new(binding);
            self.cache.insert(pooled.id, Arc::clone(&binding));
            return Ok(Created {
                binding,
                png: pooled.png,
                from_pool,
            });
        }
    }

    /// Find a code's binding, whatever its status. A code whose tag does not
    /// check is refused without a storage read.
    pub async fn lookup(&self, code: &str) -> Result<(CodeId, Arc<Binding>), ApiError> {
        let Ok(id) = code::parse(&self.tag_key, code) else {
            metrics::CODE_LOOKUPS.with_label_values(&["forged"]).inc();
            return Err(ApiError::CodeNotFound);
        };
        match self.cache.get_value_or_guard_async(&id).await {
            Ok(b) => {
                metrics::CODE_LOOKUPS.with_label_values(&["cached"]).inc();
                Ok((id, b))
            }
            Err(guard) => match self.storage.code(&id)? {
                Some(b) => {
                    metrics::CODE_LOOKUPS.with_label_values(&["hit"]).inc();
                    let b = Arc::new(b);
                    // Refused if a revocation replaced the placeholder meanwhile.
                    let _ = guard.insert(Arc::clone(&b));
                    Ok((id, b))
                }
                None => {
                    metrics::CODE_LOOKUPS.with_label_values(&["miss"]).inc();
                    Err(ApiError::CodeNotFound)
                }
            },
        }
    }

    /// A scan: the binding of a live code, counted for `visitor`.
    pub async fn resolve(
        &self,
        code: &str,
        visitor: &[u8; 16],
    ) -> Result<(CodeId, Arc<Binding>), ApiError> {
        let (id, b) = self.lookup(code).await?;
        match b.status(now()) {
            Status::Live => {}
            Status::Expired => return Err(ApiError::CodeExpired),
            Status::Revoked => return Err(ApiError::CodeRevoked),
        }
        if let Err(e) = self.scans.record(&self.storage, &id, visitor) {
            tracing::warn!(error = %e, "scan not counted");
        }
        Ok((id, b))
    }

    /// Scans and unique visitors of a code, unflushed ones included.
    pub fn tally(&self, id: &CodeId) -> Result<Tally, ApiError> {
        Ok(self.scans.tally(&self.storage, id)?)
    }

    /// The cookie value and visitor hash of a request: its `qrv` cookie if it
    /// has a valid one, else one derived from its address and User-Agent
    /// (which the caller then sets: the bool).
    pub fn visitor(
        &self,
        cookie: Option<&str>,
        ip: &str,
        user_agent: &str,
    ) -> (String, bool, [u8; 16]) {
        let (value, set) = match cookie.filter(|c| code::valid_visitor_cookie(c)) {
            Some(c) => (c.to_string(), false),
            None => (
                code::visitor_cookie_for(&self.visitor_key, ip, user_agent),
                true,
            ),
        };
        let hash = code::visitor_hash(&self.visitor_key, &value);
        (value, set, hash)
    }

    /// The operator and the code's creator may manage it.
    pub fn authorize(who: &Caller, b: &Binding) -> Result<(), ApiError> {
        match who {
            Caller::Admin => Ok(()),
            Caller::User(u) if b.creator == Some(*u) => Ok(()),
            Caller::User(_) => Err(ApiError::forbidden(
                "only the code's creator or the admin token may do this",
            )),
        }
    }

    /// Revoke a code (again: nothing changes).
    pub async fn revoke(&self, who: &Caller, code: &str) -> Result<(), ApiError> {
        let _one = self.rewriting.lock().await;
        let (id, b) = self.lookup(code).await?;
        Self::authorize(who, &b)?;
        if b.revoked_at.is_some() {
            return Ok(());
        }
        let mut revoked = (*b).clone();
        revoked.revoked_at = Some(now());
        let mut w = WriteSet::new();
        w.code_update(&id, &revoked, b.forget_at(), revoked.forget_at());
        self.storage.commit(w).await?;
        self.cache.insert(id, Arc::new(revoked));
        metrics::CODES.with_label_values(&["revoked"]).inc();
        Ok(())
    }

    /// Another node changed the record `k` (cluster mode): a binding it
    /// changed leaves the cache.
    pub fn refresh(&self, k: &[u8]) {
        if let Some(id) = k
            .strip_prefix(b"sc/")
            .and_then(|b| <[u8; crate::domain::code::ID_LEN]>::try_from(b).ok())
        {
            self.cache.remove(&CodeId(id));
        }
    }

    /// Store the scans counted so far (also at shutdown).
    pub async fn flush_scans(&self) -> Result<(), StorageError> {
        self.scans.flush(&self.storage).await
    }

    /// Forget codes expired or revoked more than 30 days ago.
    async fn forget_due(&self) -> Result<(), StorageError> {
        let _one = self.rewriting.lock().await;
        let due = self.storage.due_code_forgets(now(), 256)?;
        if due.is_empty() {
            return Ok(());
        }
        let mut w = WriteSet::new();
        for (at, id) in &due {
            w.forget_code(id, *at, &self.storage.code_visitors(id)?);
        }
        self.storage.commit(w).await?;
        for (_, id) in &due {
            self.cache.remove(id);
        }
        metrics::CODES
            .with_label_values(&["forgotten"])
            .inc_by(due.len() as u64);
        Ok(())
    }

    /// Keep the pool between its low-water mark and its size.
    async fn refill(&self) {
        loop {
            self.pool.below_low_water().await;
            metrics::CODE_POOL_REFILLS.inc();
            while self.pool.len() < self.pool.size {
                self.pool.lull().await;
                let n = pool::CHUNK.min(self.pool.size.saturating_sub(self.pool.len()));
                let (key, base, size) = (self.tag_key, self.base_url.clone(), self.cfg.qr_size);
                let made = web::block(move || {
                    let started = std::time::Instant::now();
                    (0..n)
                        .map(|_| pool::generate(&key, &base, size))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|made| (made, started.elapsed()))
                })
                .await;
                let (made, took) = match made {
                    Ok(Ok(made)) => made,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "scan code pool: QR rendering failed");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        break;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        break;
                    }
                };
                let mut w = WriteSet::new();
                for p in &made {
                    w.pool_code(&p.id, &p.png);
                }
                if let Err(e) = self.storage.commit(w).await {
                    tracing::warn!(error = %e, "scan code pool: refill not stored");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    break;
                }
                metrics::CODE_POOL_GENERATED.inc_by(made.len() as u64);
                self.pool.extend(made);
                // At most half of one core: the pool is background work.
                if self.pool.len() < self.pool.size {
                    tokio::time::sleep(took).await;
                }
            }
        }
    }
}
