//! Webhook deliveries on disk.
//!
//! - `wq/` endpoint `\0` seq: a delivery not yet done ([`Queued`]). The
//!   outbox consumer writes it with its cursor (on every node alike, as it
//!   numbers feeds); the node that delivers for the endpoint records its
//!   attempts there (on that node only).
//! - `wo/` endpoint `\0` seq: a delivery done ([`Done`]: delivered, failed,
//!   dropped), written with the removal of its `wq/` record through the
//!   journal (the log, in a cluster: every node then forgets it), listed
//!   for `webhook_delivery.keep_days`.
//! - `we/` endpoint: the endpoint is disabled ([`Disabled`]: its receiver
//!   answered 410) until an operator enables it.
//!
//! Records stay small (a body is one event), well under sled's threshold
//! for values kept apart.

use super::*;
use crate::domain::webhook::State;

/// A delivery waiting for an attempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Queued {
    /// The event type.
    pub ty: String,
    /// What its order is kept within (see `domain::webhook::entity_of`).
    pub entity: String,
    /// When it was queued (unix seconds): its retry window starts here.
    pub created: i64,
    /// The JSON body it sends.
    pub body: String,
    pub attempts: u32,
    /// When the next attempt is due (unix seconds).
    pub next_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A delivery done.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Done {
    pub state: State,
    pub ty: String,
    pub entity: String,
    pub created: i64,
    pub body: String,
    pub attempts: u32,
    /// When it ended (unix seconds).
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Done {
    pub fn of(q: Queued, state: State, at: i64) -> Done {
        Done {
            state,
            ty: q.ty,
            entity: q.entity,
            created: q.created,
            body: q.body,
            attempts: q.attempts,
            at,
            last_status: q.last_status,
            last_error: q.last_error,
        }
    }
}

/// Why an endpoint is disabled, and since when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    pub at: i64,
    pub reason: String,
}

fn delivery_key(prefix: &[u8], endpoint: &str, seq: u64) -> Vec<u8> {
    key(prefix, &[endpoint.as_bytes(), b"\0", &seq.to_be_bytes()])
}

fn endpoint_prefix(prefix: &[u8], endpoint: &str) -> Vec<u8> {
    key(prefix, &[endpoint.as_bytes(), b"\0"])
}

/// The seq a delivery key ends with.
fn seq_of(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// What the outbox consumer writes about webhooks with its cursor: the
/// deliveries its round queued, and those dropped at the queue's bound.
#[derive(Default, Clone)]
pub struct WebhookBatch {
    pub queued: Vec<(Arc<str>, u64, Queued)>,
    pub dropped: Vec<(Arc<str>, u64, Done)>,
    /// Cluster mode: the drops go through the log after this node's write
    /// (so every node drops the same), not in it.
    pub drops_through_log: bool,
}

impl WebhookBatch {
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.dropped.is_empty()
    }
}

impl WriteSet {
    pub(super) fn webhook_batch(&mut self, b: &WebhookBatch) {
        for (ep, seq, q) in &b.queued {
            self.webhook_queued(ep, *seq, q);
        }
        if !b.drops_through_log {
            for (ep, seq, d) in &b.dropped {
                self.webhook_done(ep, *seq, d);
            }
        }
    }

    /// Queue a delivery (the outbox consumer, with its cursor).
    pub fn webhook_queued(&mut self, endpoint: &str, seq: u64, q: &Queued) {
        self.put_json(delivery_key(b"wq/", endpoint, seq), q);
    }

    /// A delivery is done: it leaves the queue and is listed as `d`.
    pub fn webhook_done(&mut self, endpoint: &str, seq: u64, d: &Done) {
        self.del(delivery_key(b"wq/", endpoint, seq));
        self.put_json(delivery_key(b"wo/", endpoint, seq), d);
    }

    /// A done delivery sent again: back in the queue.
    pub fn webhook_requeued(&mut self, endpoint: &str, seq: u64, q: &Queued) {
        self.del(delivery_key(b"wo/", endpoint, seq));
        self.put_json(delivery_key(b"wq/", endpoint, seq), q);
    }

    /// A done delivery past `keep_days`.
    pub fn webhook_forgotten(&mut self, endpoint: &str, seq: u64) {
        self.del(delivery_key(b"wo/", endpoint, seq));
    }

    pub fn webhook_disabled(&mut self, endpoint: &str, d: &Disabled) {
        self.put_json(key(b"we/", &[endpoint.as_bytes()]), d);
    }

    pub fn webhook_enabled(&mut self, endpoint: &str) {
        self.del(key(b"we/", &[endpoint.as_bytes()]));
    }
}

impl Storage {
    /// Record attempts of queued deliveries on this node only (the node
    /// that delivers; another that takes over starts its count again).
    pub async fn webhook_attempted(&self, endpoint: &str, tried: &[(u64, Queued)]) -> Result<()> {
        let mut w = WriteSet::new();
        w.local();
        for (seq, q) in tried {
            w.webhook_queued(endpoint, *seq, q);
        }
        self.submit(w).await
    }

    /// Up to `n` queued deliveries of `endpoint` after `after`, oldest first.
    pub fn webhook_queue(
        &self,
        endpoint: &str,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, Queued)>> {
        self.webhook_range(b"wq/", endpoint, after, n)
    }

    /// Up to `n` done deliveries of `endpoint` after `after`, oldest first.
    pub fn webhook_done_list(
        &self,
        endpoint: &str,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, Done)>> {
        self.webhook_range(b"wo/", endpoint, after, n)
    }

    fn webhook_range<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        endpoint: &str,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, T)>> {
        let lo = match after {
            Some(a) => delivery_key(prefix, endpoint, a.saturating_add(1)),
            None => endpoint_prefix(prefix, endpoint),
        };
        let hi = delivery_key(prefix, endpoint, u64::MAX);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(lo..=hi) {
            if out.len() >= n {
                break;
            }
            let (k, v) = kv?;
            let Some(seq) = seq_of(&k) else { continue };
            match dec(&k, &v) {
                Ok(d) => out.push((seq, d)),
                // Written by a newer release, or damaged: left where it is
                // (and listed nowhere) rather than stall the endpoint.
                Err(e) => {
                    tracing::error!(endpoint, seq, error = %e, "a webhook delivery record does not decode; skipped")
                }
            }
        }
        Ok(out)
    }

    /// One delivery, queued or done.
    pub fn webhook_delivery(
        &self,
        endpoint: &str,
        seq: u64,
    ) -> Result<(Option<Queued>, Option<Done>)> {
        let (qk, dk) = (
            delivery_key(b"wq/", endpoint, seq),
            delivery_key(b"wo/", endpoint, seq),
        );
        let q = self
            .inner
            .tree
            .get(&qk)?
            .map(|v| dec(&qk, &v))
            .transpose()?;
        let d = self
            .inner
            .tree
            .get(&dk)?
            .map(|v| dec(&dk, &v))
            .transpose()?;
        Ok((q, d))
    }

    /// Whether a delivery is done already (the consumer does not queue it
    /// again: in a cluster, the delivering node may be ahead of this one).
    pub fn webhook_is_done(&self, endpoint: &str, seq: u64) -> Result<bool> {
        Ok(self
            .inner
            .tree
            .get(delivery_key(b"wo/", endpoint, seq))?
            .is_some())
    }

    pub fn webhook_disabled(&self, endpoint: &str) -> Result<Option<Disabled>> {
        let k = key(b"we/", &[endpoint.as_bytes()]);
        match self.inner.tree.get(&k)? {
            Some(v) => Ok(Some(dec(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Every queued delivery of `endpoint` that decodes, oldest first (a
    /// scan: at start, and to count the queue again).
    pub fn webhook_queue_each(
        &self,
        endpoint: &str,
        mut f: impl FnMut(u64, &Queued),
    ) -> Result<()> {
        for kv in self
            .inner
            .tree
            .scan_prefix(endpoint_prefix(b"wq/", endpoint))
        {
            let (k, v) = kv?;
            if let (Some(seq), Ok(q)) = (seq_of(&k), dec::<Queued>(&k, &v)) {
                f(seq, &q);
            }
        }
        Ok(())
    }

    /// Forget queued deliveries on this node only: in a cluster, those the
    /// delivering node ended before this node queued them.
    pub async fn webhook_forget_queued(&self, endpoint: &str, seqs: &[u64]) -> Result<()> {
        let mut w = WriteSet::new();
        w.local();
        for seq in seqs {
            w.del(delivery_key(b"wq/", endpoint, *seq));
        }
        self.submit(w).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_endpoint_then_seq() {
        let a = delivery_key(b"wq/", "crm", 2);
        let b = delivery_key(b"wq/", "crm", 256);
        let c = delivery_key(b"wq/", "crm-2", 1);
        assert!(a < b && b < c);
        assert_eq!(seq_of(&b), Some(256));
        assert!(b.starts_with(&endpoint_prefix(b"wq/", "crm")));
        assert!(!c.starts_with(&endpoint_prefix(b"wq/", "crm")));
    }
}
