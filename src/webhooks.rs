//! Webhooks to the operator's backend: the outbox consumer queues a
//! delivery per endpoint for each durable event the endpoint takes (with
//! its cursor, so none is lost or queued twice across a crash), and one
//! task per endpoint delivers them: signed as Standard Webhooks, at least
//! once, in order per entity, retried with backoff and jitter for
//! `webhook_delivery.retry_hours`. Requests never wait for webhooks: a
//! receiver that is down only grows its queue, which is bounded on disk.
//!
//! In a cluster every node queues alike; the node that owns
//! `jobs/webhooks/<id>` delivers, and what it delivered leaves every
//! node's queue through the log.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;

use crate::config::{Webhook as EndpointCfg, WebhookDelivery};
use crate::domain::events::Event;
use crate::domain::webhook::{self as rules, Outcome, State};
use crate::metrics;
use crate::storage::webhooks::{Disabled, Done, Queued, Tries, WebhookBatch};
use crate::storage::{Storage, StorageError, WriteSet};

/// Most bytes of a receiver's answer read (the rest is not waited for).
const MAX_ANSWER_BYTES: usize = 4096;
/// Queued deliveries looked at per pass (the first of each entity's).
const SCAN: usize = 1000;
/// Most attempts per pass (`webhook_delivery.concurrency` of them at once).
const PASS: usize = 64;
/// Pages of [`SCAN`] a pass reads at most, looking for due deliveries.
const SCAN_PAGES: usize = 20;

/// A node that does not deliver (or an endpoint disabled) looks again this often.
const IDLE: Duration = Duration::from_secs(5);

/// What a pass did.
enum Pass {
    /// Nothing was due (or this node does not deliver): wait this long.
    Idle(Duration),
    /// Attempts were made; whether any was answered.
    Sent { delivered: bool },
}

pub struct Endpoint {
    pub id: Arc<str>,
    pub url: String,
    pub events: Vec<String>,
    signer: standardwebhooks::Webhook,
    /// New deliveries were queued.
    wake: Notify,
    /// An operator resent a delivery or enabled the endpoint: try at once,
    /// even while the endpoint is backed off.
    kick: Notify,
}

#[derive(Default, Clone, Copy)]
struct Size {
    count: u64,
    bytes: u64,
}

pub struct Webhooks {
    pub endpoints: Vec<Arc<Endpoint>>,
    cfg: WebhookDelivery,
    storage: Storage,
    duty: crate::node::Duty,
    /// What each endpoint has queued on this node.
    sizes: Mutex<HashMap<Arc<str>, Size>>,
    /// Held while a queued record is rewritten, so the consumer's drops
    /// and a delivery's attempt never write the same record at once.
    queue: tokio::sync::Mutex<()>,
    /// Endpoints whose queue another node changed (cluster mode): their
    /// size is counted again from the disk.
    recount: Mutex<HashSet<Arc<str>>>,
    /// For `https` endpoints: the system's roots and `ca_file`.
    tls: Option<Arc<qrgate_provider::tls::ClientConfig>>,
}

/// What a queued delivery counts toward the bound: one measure everywhere
/// (its key and fields, not the encoded record's exact length, so that
/// what is added and what is taken away always agree).
fn record_bytes(ep: &str, q: &Queued) -> u64 {
    (3 + ep.len() + 9 + q.body.len() + q.ty.len() + q.entity.len() + 96) as u64
}

/// The queue of `ep` on disk, counted.
fn measure(storage: &Storage, ep: &str) -> Result<Size, StorageError> {
    let mut size = Size::default();
    storage.webhook_queue_each(ep, |_, q| size.add(ep, q))?;
    Ok(size)
}

impl Size {
    fn add(&mut self, ep: &str, q: &Queued) {
        self.count += 1;
        self.bytes += record_bytes(ep, q);
    }

    fn remove(&mut self, ep: &str, q: &Queued) {
        self.count = self.count.saturating_sub(1);
        self.bytes = if self.count == 0 {
            0
        } else {
            self.bytes.saturating_sub(record_bytes(ep, q))
        };
    }
}

impl Webhooks {
    pub fn new(
        endpoints: &[EndpointCfg],
        cfg: WebhookDelivery,
        storage: Storage,
        duty: crate::node::Duty,
    ) -> Result<Arc<Webhooks>, String> {
        let mut eps = Vec::with_capacity(endpoints.len());
        let mut sizes = HashMap::new();
        for e in endpoints {
            let signer = standardwebhooks::Webhook::new(&e.secret)
                .map_err(|err| format!("webhooks.{}: secret: {err}", e.id))?;
            let id: Arc<str> = Arc::from(e.id.as_str());
            let size = measure(&storage, &id)
                .map_err(|err| format!("webhooks.{}: reading its queue: {err}", e.id))?;
            sizes.insert(id.clone(), size);
            eps.push(Arc::new(Endpoint {
                id,
                url: e.url.clone(),
                events: e.events.clone(),
                signer,
                wake: Notify::new(),
                kick: Notify::new(),
            }));
        }
        let tls = if endpoints.iter().any(|e| e.url.starts_with("https://")) {
            Some(
                qrgate_provider::tls::client_config(cfg.ca_file.as_deref())
                    .map_err(|e| format!("webhooks over https: {e}"))?,
            )
        } else {
            None
        };
        let hooks = Arc::new(Webhooks {
            endpoints: eps,
            cfg,
            storage,
            duty,
            sizes: Mutex::new(sizes),
            queue: tokio::sync::Mutex::new(()),
            recount: Mutex::default(),
            tls,
        });
        hooks.publish_sizes();
        Ok(hooks)
    }

    pub fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| &*e.id == id)
    }

    /// The deliveries a consumer round's events make (nothing when no
    /// endpoint is configured).
    pub fn prepare(&self, events: &[Event], into: &mut WebhookBatch) {
        if self.endpoints.is_empty() {
            return;
        }
        let now = crate::clock::now();
        for e in events {
            let (ty, body) = match rules::payload(e) {
                Ok(p) => p,
                Err(err) => {
                    tracing::error!(seq = e.seq, error = %err, "an event does not render as a webhook; not sent");
                    continue;
                }
            };
            for ep in &self.endpoints {
                if !rules::wants(&ep.events, &ty) {
                    continue;
                }
                // In a cluster the delivering node may be ahead of this one.
                if self.storage.is_cluster()
                    && self.storage.webhook_is_done(&ep.id, e.seq).unwrap_or(false)
                {
                    continue;
                }
                into.queued.push((
                    ep.id.clone(),
                    e.seq,
                    Queued::new(ty.clone(), rules::entity_of(e), now, body.clone()),
                ));
            }
        }
    }

    /// What the consumer persists for `b`: `b` itself, or past the
    /// queue's bound a copy in which the oldest deliveries of the endpoint
    /// with the most queued are dropped (in the same write). Holds the
    /// queue until the write is done.
    pub async fn bound<'b>(
        &self,
        b: &'b WebhookBatch,
    ) -> (tokio::sync::MutexGuard<'_, ()>, Cow<'b, WebhookBatch>) {
        let guard = self.queue.lock().await;
        if b.queued.is_empty() {
            return (guard, Cow::Borrowed(b));
        }
        let max = self.cfg.max_queue_bytes;
        let mut sizes = match self.sizes.lock() {
            Ok(s) => s.clone(),
            Err(_) => return (guard, Cow::Borrowed(b)),
        };
        for (ep, _, q) in &b.queued {
            sizes.entry(ep.clone()).or_default().add(ep, q);
        }
        let mut over = sizes
            .values()
            .map(|v| v.bytes)
            .sum::<u64>()
            .saturating_sub(max);
        let Some(victim) = sizes
            .iter()
            .max_by_key(|(_, s)| s.bytes)
            .map(|(id, _)| id.clone())
            .filter(|_| over > 0)
        else {
            return (guard, Cow::Borrowed(b));
        };
        // In a cluster the node that delivers for the endpoint drops, for
        // every node (the others follow through the log).
        let clustered = self.storage.is_cluster();
        if clustered && !self.duty.mine(&format!("jobs/webhooks/{victim}")) {
            return (guard, Cow::Borrowed(b));
        }
        let mut out = b.clone();
        out.drops_through_log = clustered;
        let now = crate::clock::now();
        // Oldest first: what is on disk, then what this round queues.
        let mut after = None;
        while over > 0 {
            let page = match self.storage.webhook_queue(&victim, after, SCAN) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(endpoint = %victim, error = %e, "reading the webhook queue to bound it failed");
                    break;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (seq, q) in page {
                if over == 0 {
                    break;
                }
                over = over.saturating_sub(record_bytes(&victim, &q));
                out.dropped
                    .push((victim.clone(), seq, Done::of(q, State::Dropped, now)));
            }
        }
        if over > 0 {
            let mut keep = Vec::with_capacity(out.queued.len());
            for (ep, seq, q) in std::mem::take(&mut out.queued) {
                if over > 0 && ep == victim {
                    over = over.saturating_sub(record_bytes(&ep, &q));
                    out.dropped
                        .push((ep, seq, Done::of(q, State::Dropped, now)));
                } else {
                    keep.push((ep, seq, q));
                }
            }
            out.queued = keep;
        }
        let n = out.dropped.len();
        metrics::WEBHOOKS_DROPPED
            .with_label_values(&[&victim])
            .inc_by(n as u64);
        tracing::error!(endpoint = %victim, dropped = n, max_queue_bytes = self.cfg.max_queue_bytes, "the webhook queue is full: its oldest undelivered deliveries were dropped");
        (guard, Cow::Owned(out))
    }

    /// `written` (what [`bound`](Self::bound) made of `round`) is on
    /// disk: count it and wake the endpoints it queued for.
    pub fn persisted(&self, round: &WebhookBatch, written: &WebhookBatch) {
        if written.is_empty() {
            return;
        }
        let fresh: HashSet<(&str, u64)> = round
            .queued
            .iter()
            .map(|(ep, seq, _)| (&**ep, *seq))
            .collect();
        if let Ok(mut sizes) = self.sizes.lock() {
            for (ep, _, q) in &written.queued {
                sizes.entry(ep.clone()).or_default().add(ep, q);
            }
            // Those dropped from the disk leave it; those of this round
            // were never counted.
            for (ep, _, d) in written
                .dropped
                .iter()
                .filter(|(ep, seq, _)| !fresh.contains(&(&**ep, *seq)))
            {
                sizes
                    .entry(ep.clone())
                    .or_default()
                    .remove(ep, &queued_of(d));
            }
        }
        self.publish_sizes();
        for ep in &self.endpoints {
            if written.queued.iter().any(|(id, _, _)| *id == ep.id) {
                ep.wake.notify_one();
            }
        }
    }

    /// After `written` is on disk (the queue still held). Cluster mode:
    /// its drops go through the log (every node drops the same); and a
    /// delivery the delivering node ended before this node queued it is
    /// done already, so it leaves the count. What was dropped or done
    /// leaves its chunks.
    pub async fn after_persist(&self, written: &WebhookBatch) {
        if written.is_empty() {
            return;
        }
        if written.drops_through_log && !written.dropped.is_empty() {
            let mut w = WriteSet::new();
            for (ep, seq, d) in &written.dropped {
                w.webhook_done(ep, *seq, d);
            }
            if let Err(e) = self.storage.commit(w).await {
                tracing::error!(error = %e, "dropping webhook deliveries at the bound failed; they stay queued");
            }
        }
        let mut ended: HashMap<Arc<str>, Vec<(u64, &Queued)>> = HashMap::new();
        if self.storage.is_cluster() {
            for (ep, seq, q) in &written.queued {
                if self.storage.webhook_is_done(ep, *seq).unwrap_or(false) {
                    ended.entry(ep.clone()).or_default().push((*seq, q));
                }
            }
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            for (ep, list) in &ended {
                let size = sizes.entry(ep.clone()).or_default();
                for (_, q) in list {
                    size.remove(ep, q);
                }
            }
        }
        let mut left: HashMap<&Arc<str>, Vec<u64>> = HashMap::new();
        for (ep, seq, _) in &written.dropped {
            left.entry(ep).or_default().push(*seq);
        }
        for (ep, list) in &ended {
            left.entry(ep)
                .or_default()
                .extend(list.iter().map(|(s, _)| *s));
        }
        for (ep, seqs) in left {
            self.compact(ep, Some(&seqs)).await;
        }
        self.publish_sizes();
    }

    /// Leave what is done out of `ep`'s chunks holding `seqs` (all: `None`).
    async fn compact(&self, ep: &str, seqs: Option<&[u64]>) {
        if let Err(e) = self.storage.webhook_compact(ep, seqs).await {
            tracing::warn!(endpoint = %ep, error = %e, "compacting the webhook queue failed; done deliveries stay in its chunks (skipped) until the next try");
        }
    }

    /// Another node changed `key` (cluster mode): a delivery it ended left
    /// this node's queue too, so that endpoint's size is counted again.
    pub fn remote_change(&self, key: &[u8]) {
        let Some(rest) = key
            .strip_prefix(b"wq/")
            .or_else(|| key.strip_prefix(b"wo/"))
        else {
            return;
        };
        let Some(ep) = rest.split(|b| *b == 0).next() else {
            return;
        };
        if let Some(e) = self.endpoints.iter().find(|e| e.id.as_bytes() == ep) {
            if let Ok(mut r) = self.recount.lock() {
                r.insert(e.id.clone());
            }
        }
    }

    async fn recount(&self, ep: &Arc<str>) -> Result<(), StorageError> {
        let due = self
            .recount
            .lock()
            .map(|mut r| r.remove(ep))
            .unwrap_or(false);
        if !due {
            return Ok(());
        }
        // What the delivering node ended leaves this node's chunks.
        {
            let _g = self.queue.lock().await;
            self.compact(ep, None).await;
        }
        // Counted without holding the queue: the consumer does not wait
        // for a scan, and a count a round behind is corrected next time.
        let size = measure(&self.storage, ep)?;
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.insert(ep.clone(), size);
        }
        self.publish_sizes();
        Ok(())
    }

    fn left_queue(&self, ep: &Arc<str>, q: &Queued) {
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.entry(ep.clone()).or_default().remove(ep, q);
        }
        self.publish_sizes();
    }

    fn publish_sizes(&self) {
        if let Ok(sizes) = self.sizes.lock() {
            for (ep, s) in sizes.iter() {
                metrics::WEBHOOKS_QUEUED
                    .with_label_values(&[ep])
                    .set(s.count as i64);
            }
        }
    }

    /// What `ep` has queued on this node: deliveries and bytes.
    pub fn queued(&self, ep: &str) -> (u64, u64) {
        self.sizes
            .lock()
            .ok()
            .and_then(|s| s.get(ep).map(|s| (s.count, s.bytes)))
            .unwrap_or_default()
    }

    /// Start delivering (one task per endpoint).
    pub fn start(self: &Arc<Self>) {
        for ep in &self.endpoints {
            actix_web::rt::spawn(Arc::clone(self).deliver(Arc::clone(ep)));
        }
    }

    /// An operator sends a delivery again (queued at once, with a new
    /// retry window and the same `webhook-id`).
    pub async fn resend(&self, ep: &Arc<Endpoint>, seq: u64) -> Result<bool, StorageError> {
        let _g = self.queue.lock().await;
        let (queued, done) = self.storage.webhook_delivery(&ep.id, seq)?;
        let now = crate::clock::now();
        let mut q = match (&queued, done) {
            (Some(q), _) => q.clone(),
            (None, Some(d)) => queued_of(&d),
            (None, None) => return Ok(false),
        };
        let was_queued = queued.is_some();
        q.created = now;
        q.tries.next_at = now;
        q.tries.attempts = 0;
        let mut w = WriteSet::new();
        w.webhook_requeued(&ep.id, seq, &q);
        self.storage.commit(w).await?;
        if !was_queued {
            if let Ok(mut sizes) = self.sizes.lock() {
                sizes.entry(ep.id.clone()).or_default().add(&ep.id, &q);
            }
        }
        ep.kick.notify_one();
        Ok(true)
    }

    pub async fn enable(&self, ep: &Arc<Endpoint>) -> Result<(), StorageError> {
        let mut w = WriteSet::new();
        w.webhook_enabled(&ep.id);
        self.storage.commit(w).await?;
        tracing::info!(endpoint = %ep.id, "webhook endpoint enabled");
        ep.kick.notify_one();
        Ok(())
    }

    pub fn disabled(&self, ep: &str) -> Result<Option<Disabled>, StorageError> {
        self.storage.webhook_disabled(ep)
    }

    async fn deliver(self: Arc<Self>, ep: Arc<Endpoint>) {
        let mut connector = awc::Connector::new()
            .timeout(Duration::from_secs(self.cfg.connect_timeout_secs))
            .limit(self.cfg.concurrency);
        if let Some(tls) = &self.tls {
            connector = connector.rustls_0_23(Arc::clone(tls));
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(self.cfg.timeout_secs))
            .disable_redirects()
            .finish();
        let entity = format!("jobs/webhooks/{}", ep.id);
        let mut last_prune = 0i64;
        // What ended before a stop may still sit in chunks.
        {
            let _g = self.queue.lock().await;
            self.compact(&ep.id, None).await;
        }
        // Passes in a row in which every attempt failed: the endpoint as a
        // whole backs off (5 s, doubling to 5 min), so a receiver that is
        // down costs one attempt per backoff, not one per queued entity.
        let mut failing = 0u32;
        loop {
            let wait = match self.pass(&client, &ep, &entity, &mut last_prune).await {
                Ok(Pass::Idle(w)) => w,
                Ok(Pass::Sent { delivered: true }) => {
                    failing = 0;
                    Duration::ZERO
                }
                Ok(Pass::Sent { delivered: false }) => {
                    failing = failing.saturating_add(1);
                    let secs = (rules::FIRST_BACKOFF_SECS as u64) << (failing - 1).min(6);
                    Duration::from_secs(secs.min(300))
                }
                Err(e) => {
                    tracing::warn!(endpoint = %ep.id, error = %e, "webhook delivery pass failed; trying again");
                    IDLE
                }
            };
            if wait.is_zero() {
                continue;
            }
            if failing > 0 {
                // Backed off: only an operator's resend or enable cuts it short.
                if tokio::time::timeout(wait, ep.kick.notified()).await.is_ok() {
                    failing = 0;
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ep.wake.notified() => {}
                    _ = ep.kick.notified() => {}
                }
            }
        }
    }

    /// One pass over `ep`'s queue: attempt what is due (the first queued
    /// delivery of each entity, up to [`PASS`]), record the outcomes in
    /// one write for the attempts and one for what ended.
    async fn pass(
        &self,
        client: &awc::Client,
        ep: &Arc<Endpoint>,
        entity: &str,
        last_prune: &mut i64,
    ) -> Result<Pass, StorageError> {
        self.recount(&ep.id).await?;
        if !self.duty.mine(entity) || self.storage.webhook_disabled(&ep.id)?.is_some() {
            return Ok(Pass::Idle(IDLE));
        }
        let now = crate::clock::now();
        if now - *last_prune >= 3600 {
            *last_prune = now;
            self.prune(ep, now).await?;
        }
        let mut seen = HashSet::new();
        let mut due = Vec::new();
        let mut next = now + IDLE.as_secs() as i64 * 6;
        // Page on past entities that wait (one entity's long backlog must
        // not hide the others), up to a bound per pass.
        let mut after = None;
        'pages: for _ in 0..SCAN_PAGES {
            let page = self.storage.webhook_queue(&ep.id, after, SCAN)?;
            let full = page.len() == SCAN;
            for (seq, q) in page {
                after = Some(seq);
                if !seen.insert(q.entity.clone()) {
                    continue;
                }
                if q.tries.next_at <= now {
                    due.push((seq, q));
                    if due.len() >= PASS {
                        break 'pages;
                    }
                } else {
                    next = next.min(q.tries.next_at);
                }
            }
            if !full {
                break;
            }
        }
        if due.is_empty() {
            return Ok(Pass::Idle(Duration::from_secs(
                (next - now).clamp(1, 30) as u64
            )));
        }
        use futures_util::StreamExt;
        let answers: Vec<_> = futures_util::stream::iter(&due)
            .map(|(seq, q)| attempt(client, ep, *seq, q))
            .buffered(self.cfg.concurrency)
            .collect()
            .await;
        let now = crate::clock::now();
        let _g = self.queue.lock().await;
        let mut done = WriteSet::new();
        let mut tried = Vec::new();
        let mut left = Vec::new();
        let mut ended = Vec::new();
        let mut gone = None;
        let mut delivered = false;
        let mut recorded = 0usize;
        for ((seq, mut q), (status, error)) in due.into_iter().zip(answers) {
            // Dropped at the bound, or resent by an operator, meanwhile:
            // what is on disk now stands.
            if !self.storage.webhook_unchanged(&ep.id, seq, &q)? {
                continue;
            }
            recorded += 1;
            q.tries.attempts += 1;
            q.tries.last_status = status;
            q.tries.last_error = error;
            let result = rules::outcome(status);
            metrics::WEBHOOK_ATTEMPTS
                .with_label_values(&[&ep.id, attempt_label(result)])
                .inc();
            match result {
                Outcome::Delivered => {
                    delivered = true;
                    metrics::WEBHOOKS_DONE
                        .with_label_values(&[&ep.id, "delivered"])
                        .inc();
                    done.webhook_done(&ep.id, seq, &Done::of(q.clone(), State::Delivered, now));
                    ended.push(seq);
                    left.push(q);
                }
                Outcome::Gone => {
                    gone = Some(status.unwrap_or(410));
                    q.tries.next_at = now;
                    tried.push((seq, q));
                }
                Outcome::Retry => {
                    let window = self.cfg.retry_hours as i64 * 3600;
                    let jitter = rand::rng().random::<f64>();
                    match rules::next_attempt(q.created, q.tries.attempts, now, window, jitter) {
                        Some(at) => {
                            q.tries.next_at = at;
                            tried.push((seq, q));
                        }
                        None => {
                            metrics::WEBHOOKS_DONE
                                .with_label_values(&[&ep.id, "failed"])
                                .inc();
                            tracing::error!(endpoint = %ep.id, delivery = %rules::delivery_id(&ep.id, seq), attempts = q.tries.attempts, last_status = ?q.tries.last_status, "a webhook delivery failed for its whole retry window; resend it from the admin routes");
                            done.webhook_done(
                                &ep.id,
                                seq,
                                &Done::of(q.clone(), State::Failed, now),
                            );
                            ended.push(seq);
                            left.push(q);
                        }
                    }
                }
            }
        }
        if let Some(status) = gone {
            tracing::error!(endpoint = %ep.id, status, "the webhook receiver answered 410 Gone: endpoint disabled until POST /v1/admin/webhooks/{}/enable", ep.id);
            metrics::WEBHOOKS_DISABLED
                .with_label_values(&[&ep.id])
                .inc();
            done.webhook_disabled(
                &ep.id,
                &Disabled {
                    at: now,
                    reason: format!("the receiver answered {status} Gone"),
                },
            );
        }
        if !tried.is_empty() {
            self.storage.webhook_attempted(&ep.id, &tried).await?;
        }
        if !done.is_empty() {
            self.storage.commit(done).await?;
            self.compact(&ep.id, Some(&ended)).await;
        }
        for q in &left {
            self.left_queue(&ep.id, q);
        }
        Ok(Pass::Sent {
            // Nothing recorded (all dropped or resent meanwhile): no reason
            // to back off.
            delivered: delivered || gone.is_some() || recorded == 0,
        })
    }

    /// Forget done deliveries older than `keep_days`.
    async fn prune(&self, ep: &Endpoint, now: i64) -> Result<(), StorageError> {
        let cutoff = now - self.cfg.keep_days as i64 * 86_400;
        let mut after = None;
        loop {
            let page = self.storage.webhook_done_list(&ep.id, after, 1000)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(*last);
            let mut w = WriteSet::new();
            for (seq, d) in &page {
                if d.at < cutoff {
                    w.webhook_forgotten(&ep.id, *seq);
                }
            }
            if !w.is_empty() {
                self.storage.commit(w).await?;
            }
        }
    }
}

fn attempt_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Gone => "gone",
        Outcome::Retry => "retry",
    }
}

fn queued_of(d: &Done) -> Queued {
    Queued {
        ty: d.ty.clone(),
        entity: d.entity.clone(),
        created: d.created,
        body: d.body.clone(),
        tries: Tries {
            attempts: d.attempts,
            next_at: d.at,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
        },
    }
}

/// One attempt: the receiver's status, or why there was none.
async fn attempt(
    client: &awc::Client,
    ep: &Endpoint,
    seq: u64,
    q: &Queued,
) -> (Option<u16>, Option<String>) {
    let id = rules::message_id(seq);
    // The receiver checks the timestamp against its own clock: the
    // system's, never the server's (moved in tests).
    let ts = chrono::Utc::now().timestamp();
    let signature = match ep.signer.sign(&id, ts, q.body.as_bytes()) {
        Ok(s) => s,
        Err(e) => return (None, Some(format!("signing: {e}"))),
    };
    let sent = client
        .post(&ep.url)
        .insert_header(("content-type", "application/json"))
        .insert_header(("user-agent", concat!("qrgate/", env!("CARGO_PKG_VERSION"))))
        .insert_header(("webhook-id", id))
        .insert_header(("webhook-timestamp", ts.to_string()))
        .insert_header(("webhook-signature", signature))
        .send_body(q.body.clone())
        .await;
    match sent {
        Ok(mut res) => {
            let status = res.status().as_u16();
            // Read a little of the answer so the connection can be reused;
            // a longer or slow one is not waited for.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), res.body().limit(MAX_ANSWER_BYTES))
                    .await;
            let error = (rules::outcome(Some(status)) != Outcome::Delivered)
                .then(|| format!("answered {status}"));
            (Some(status), error)
        }
        Err(e) => (None, Some(e.to_string().chars().take(200).collect())),
    }
}
