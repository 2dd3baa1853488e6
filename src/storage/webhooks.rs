//! Webhook deliveries on disk.
//!
//! - `wq/` endpoint `\0` first seq: a chunk of deliveries one outbox
//!   consumer round queued for the endpoint (a JSON array, LZ4-compressed,
//!   of at most [`CHUNK_ITEMS`] deliveries or [`CHUNK_BYTES`] of bodies),
//!   so a busy endpoint costs a record per chunk, not per event, and a
//!   fraction of its bodies' bytes. Written with the
//!   consumer's cursor, on every node alike; never rewritten but to leave
//!   out deliveries done (compaction, on each node by itself). A chunk
//!   holds seqs from its first up to the next chunk's first.
//! - `wq/` endpoint `\0` seq `r`: one delivery an operator sent again
//!   ([`Queued`], JSON), apart from the chunks so that every node writes
//!   the same key; it stands for that seq over any chunk's.
//! - `wt/` endpoint `\0` seq: the attempts of a queued delivery
//!   ([`Tries`]), kept by the node that delivers (on that node only;
//!   another that takes over starts its count again).
//! - `wo/` endpoint `\0` seq: a delivery done ([`Done`]: delivered,
//!   failed, dropped), listed for `webhook_delivery.keep_days`. Written
//!   through the journal (the log, in a cluster), with the removal of its
//!   `r` and `wt/` records: a queued delivery with a `wo/` record is done,
//!   whichever chunk still holds it.
//! - `we/` endpoint: the endpoint is disabled ([`Disabled`]: its receiver
//!   answered 410) until an operator enables it.
//!
//! Records stay small, well under sled's threshold for values kept apart.

use serde_json::value::RawValue;

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
    #[serde(flatten)]
    pub tries: Tries,
}

impl Queued {
    /// A delivery queued at `created`, due at once.
    pub fn new(ty: String, entity: String, created: i64, body: String) -> Queued {
        Queued {
            ty,
            entity,
            created,
            body,
            tries: Tries {
                attempts: 0,
                next_at: created,
                last_status: None,
                last_error: None,
            },
        }
    }
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
            attempts: q.tries.attempts,
            at,
            last_status: q.tries.last_status,
            last_error: q.tries.last_error,
        }
    }
}

/// Where a queued delivery's attempts stand.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tries {
    pub attempts: u32,
    /// When the next attempt is due (unix seconds).
    pub next_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A delivery as a chunk keeps it: what a first attempt needs.
#[derive(Serialize, Deserialize)]
struct Item<'a> {
    seq: u64,
    #[serde(borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    entity: std::borrow::Cow<'a, str>,
    created: i64,
    /// The body as JSON in the chunk's JSON, not a string in it.
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Why an endpoint is disabled, and since when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    pub at: i64,
    pub reason: String,
}

/// Most deliveries in one chunk, and most bytes of their bodies.
const CHUNK_ITEMS: usize = 64;
const CHUNK_BYTES: usize = 16 * 1024;

/// The first byte of a compressed chunk (LZ4 of the JSON array; a JSON
/// record starts with `[` or `{`).
const COMPRESSED: u8 = b'Z';

/// Most bytes a chunk's JSON may unpack to (its bodies are at most
/// [`CHUNK_BYTES`] but for one, which is an event's).
const MAX_CHUNK_JSON: usize = 1 << 20;

/// The suffix of a delivery sent again after its seq (see the module).
const RESENT: u8 = b'r';

fn delivery_key(prefix: &[u8], endpoint: &str, seq: u64) -> Vec<u8> {
    key(prefix, &[endpoint.as_bytes(), b"\0", &seq.to_be_bytes()])
}

fn resent_key(endpoint: &str, seq: u64) -> Vec<u8> {
    let mut k = delivery_key(b"wq/", endpoint, seq);
    k.push(RESENT);
    k
}

fn endpoint_prefix(prefix: &[u8], endpoint: &str) -> Vec<u8> {
    key(prefix, &[endpoint.as_bytes(), b"\0"])
}

/// The seq a key of `endpoint`'s ends with, and whether it is a resent
/// delivery's.
fn seq_of(prefix: &[u8], endpoint: &str, k: &[u8]) -> Option<(u64, bool)> {
    let tail = k.get(prefix.len() + endpoint.len() + 1..)?;
    let seq = u64::from_be_bytes(tail.get(..8)?.try_into().ok()?);
    match tail.get(8..)? {
        [] => Some((seq, false)),
        [RESENT] => Some((seq, true)),
        _ => None,
    }
}

/// A chunk's deliveries, encoded.
fn encode_chunk(items: &[(u64, &Queued)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(items.iter().map(|(_, q)| q.body.len() + 64).sum());
    out.push(b'[');
    for (i, (seq, q)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let body = RawValue::from_string(q.body.clone())
            .map_err(|e| StorageError::Io(format!("a webhook body is not JSON: {e}")))?;
        serde_json::to_writer(
            &mut out,
            &Item {
                seq: *seq,
                ty: q.ty.as_str().into(),
                entity: q.entity.as_str().into(),
                created: q.created,
                body: &body,
            },
        )
        .map_err(|e| StorageError::Io(format!("encode: {e}")))?;
    }
    out.push(b']');
    // Bodies of one round repeat their names and most of their ids:
    // compressed, a chunk is a fraction of the JSON.
    let mut v = vec![COMPRESSED];
    v.extend_from_slice(&lz4_flex::compress_prepend_size(&out));
    Ok(v)
}

/// The deliveries a `wq/` record holds: a chunk's, a resent one's, or
/// (written by an earlier release) one delivery's record, which is read
/// as a chunk of one.
fn decode_queued(k: &[u8], seq: u64, v: &[u8]) -> Result<Vec<(u64, Queued)>> {
    if v.first() == Some(&b'{') {
        return Ok(vec![(seq, dec(k, v)?)]);
    }
    let corrupt = |e: String| StorageError::Corrupt(commit::printable_key(k), e);
    let json = match v.split_first() {
        Some((&COMPRESSED, packed)) => {
            // The length it unpacks to, checked before anything is made
            // that large.
            let len = packed
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .filter(|n| *n <= MAX_CHUNK_JSON)
                .ok_or_else(|| {
                    corrupt("a compressed chunk's length is missing or too large".into())
                })?;
            let json =
                lz4_flex::decompress(&packed[4..], len).map_err(|e| corrupt(e.to_string()))?;
            std::borrow::Cow::Owned(json)
        }
        _ => std::borrow::Cow::Borrowed(v),
    };
    let items: Vec<Item> = serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
    Ok(items
        .into_iter()
        .map(|i| {
            (
                i.seq,
                Queued::new(
                    i.ty.into_owned(),
                    i.entity.into_owned(),
                    i.created,
                    i.body.get().to_string(),
                ),
            )
        })
        .collect())
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
    /// The round's deliveries in chunks (consecutive ones of an endpoint),
    /// and its drops.
    pub(super) fn webhook_batch(&mut self, b: &WebhookBatch) {
        let mut i = 0;
        while let Some((ep, first, _)) = b.queued.get(i) {
            let mut chunk: Vec<(u64, &Queued)> = Vec::new();
            let mut bytes = 0;
            while let Some((e, seq, q)) = b.queued.get(i) {
                if e != ep
                    || chunk.len() == CHUNK_ITEMS
                    || (bytes > 0 && bytes + q.body.len() > CHUNK_BYTES)
                {
                    break;
                }
                bytes += q.body.len();
                chunk.push((*seq, q));
                i += 1;
            }
            match encode_chunk(&chunk) {
                Ok(v) => self.put(delivery_key(b"wq/", ep, *first), v),
                Err(e) => self.error = Some(e),
            }
        }
        if !b.drops_through_log {
            for (ep, seq, d) in &b.dropped {
                self.webhook_done(ep, *seq, d);
            }
        }
    }

    /// A delivery is done: it leaves the queue and is listed as `d`.
    pub fn webhook_done(&mut self, endpoint: &str, seq: u64, d: &Done) {
        self.del(resent_key(endpoint, seq));
        self.del(delivery_key(b"wt/", endpoint, seq));
        self.put_json(delivery_key(b"wo/", endpoint, seq), d);
    }

    /// A delivery sent again (done or still queued): queued as `q`.
    pub fn webhook_requeued(&mut self, endpoint: &str, seq: u64, q: &Queued) {
        self.del(delivery_key(b"wo/", endpoint, seq));
        self.del(delivery_key(b"wt/", endpoint, seq));
        self.put_json(resent_key(endpoint, seq), q);
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
    /// that delivers).
    pub async fn webhook_attempted(&self, endpoint: &str, tried: &[(u64, Queued)]) -> Result<()> {
        let mut w = WriteSet::new();
        w.local();
        for (seq, q) in tried {
            w.put_json(delivery_key(b"wt/", endpoint, *seq), &q.tries);
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
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut found: BTreeMap<u64, Queued> = BTreeMap::new();
        for kv in self.webhook_records(endpoint, from)? {
            let (k, v) = kv?;
            let Some((first, resent)) = seq_of(b"wq/", endpoint, &k) else {
                continue;
            };
            // Past the n-th found, nothing later comes before it.
            if found.len() >= n && found.keys().nth(n - 1).is_some_and(|last| first > *last) {
                break;
            }
            let items = match decode_queued(&k, first, &v) {
                Ok(items) => items,
                // Written by a newer release, or damaged: left where it
                // is (and listed nowhere) rather than stall the endpoint.
                Err(e) => {
                    tracing::error!(endpoint, first, error = %e, "a webhook delivery record does not decode; skipped");
                    continue;
                }
            };
            for (seq, q) in items {
                // A resent delivery stands over its chunk's, which is
                // done or stale.
                if seq >= from && (resent || !self.webhook_is_done(endpoint, seq)?) {
                    found.insert(seq, q);
                }
            }
        }
        let mut out = Vec::with_capacity(n.min(found.len()));
        for (seq, mut q) in found.into_iter().take(n) {
            self.with_tries(endpoint, seq, &mut q)?;
            out.push((seq, q));
        }
        Ok(out)
    }

    /// `endpoint`'s `wq/` records from the chunk that holds `from` on.
    fn webhook_records(&self, endpoint: &str, from: u64) -> Result<kv::Merged> {
        let covering = self.webhook_chunk_of(endpoint, from)?;
        let lo = delivery_key(b"wq/", endpoint, covering.unwrap_or(from));
        Ok(self.inner.tree.range(lo..resent_key(endpoint, u64::MAX)))
    }

    /// The first seq of the chunk of `endpoint` that would hold `seq`.
    fn webhook_chunk_of(&self, endpoint: &str, seq: u64) -> Result<Option<u64>> {
        self.inner
            .tree
            .range(delivery_key(b"wq/", endpoint, 0)..=delivery_key(b"wq/", endpoint, seq))
            .rev()
            .find_map(|kv| match kv {
                Ok((k, _)) => match seq_of(b"wq/", endpoint, &k) {
                    Some((first, false)) => Some(Ok(first)),
                    _ => None,
                },
                Err(e) => Some(Err(e)),
            })
            .transpose()
    }

    /// `q` with the attempts this node recorded.
    fn with_tries(&self, endpoint: &str, seq: u64, q: &mut Queued) -> Result<()> {
        let k = delivery_key(b"wt/", endpoint, seq);
        if let Some(v) = self.inner.tree.get(&k)? {
            q.tries = dec(&k, &v)?;
        }
        Ok(())
    }

    /// Up to `n` done deliveries of `endpoint` after `after`, oldest first.
    pub fn webhook_done_list(
        &self,
        endpoint: &str,
        after: Option<u64>,
        n: usize,
    ) -> Result<Vec<(u64, Done)>> {
        let lo = match after {
            Some(a) => delivery_key(b"wo/", endpoint, a.saturating_add(1)),
            None => endpoint_prefix(b"wo/", endpoint),
        };
        let hi = delivery_key(b"wo/", endpoint, u64::MAX);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(lo..=hi) {
            if out.len() >= n {
                break;
            }
            let (k, v) = kv?;
            let Some((seq, _)) = seq_of(b"wo/", endpoint, &k) else {
                continue;
            };
            match dec(&k, &v) {
                Ok(d) => out.push((seq, d)),
                Err(e) => {
                    tracing::error!(endpoint, seq, error = %e, "a done webhook delivery record does not decode; skipped")
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
        let dk = delivery_key(b"wo/", endpoint, seq);
        let done: Option<Done> = self
            .inner
            .tree
            .get(&dk)?
            .map(|v| dec(&dk, &v))
            .transpose()?;
        let queued = match &done {
            Some(_) => None,
            None => self
                .webhook_queue(endpoint, seq.checked_sub(1), 1)?
                .pop()
                .filter(|(s, _)| *s == seq)
                .map(|(_, q)| q),
        };
        Ok((queued, done))
    }

    /// Whether queued delivery `seq` still stands as `q` was read: not
    /// done, not sent again, no attempt recorded since. (Reads the records
    /// that change, not the chunk, which does not.)
    pub fn webhook_unchanged(&self, endpoint: &str, seq: u64, q: &Queued) -> Result<bool> {
        if self.webhook_is_done(endpoint, seq)? {
            return Ok(false);
        }
        let rk = resent_key(endpoint, seq);
        let mut now = match self.inner.tree.get(&rk)? {
            Some(v) => dec::<Queued>(&rk, &v)?,
            None => Queued::new(String::new(), String::new(), q.created, String::new()),
        };
        self.with_tries(endpoint, seq, &mut now)?;
        Ok(now.created == q.created && now.tries.attempts == q.tries.attempts)
    }

    /// Whether a delivery is done (in a cluster the delivering node may be
    /// ahead of this one: the consumer does not queue it again).
    pub fn webhook_is_done(&self, endpoint: &str, seq: u64) -> Result<bool> {
        self.inner
            .tree
            .contains_key(delivery_key(b"wo/", endpoint, seq))
    }

    pub fn webhook_disabled(&self, endpoint: &str) -> Result<Option<Disabled>> {
        let k = key(b"we/", &[endpoint.as_bytes()]);
        match self.inner.tree.get(&k)? {
            Some(v) => Ok(Some(dec(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Every queued delivery of `endpoint`, oldest first (a scan: at
    /// start, and to count the queue again).
    pub fn webhook_queue_each(
        &self,
        endpoint: &str,
        mut f: impl FnMut(u64, &Queued),
    ) -> Result<()> {
        let mut after = None;
        loop {
            let page = self.webhook_queue(endpoint, after, 1000)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(*last);
            for (seq, q) in &page {
                f(*seq, q);
            }
        }
    }

    /// Leave done deliveries out of the chunks of `endpoint` that hold
    /// `seqs` (all its chunks: `None`), on this node only; a chunk they
    /// all left is deleted. Answers how many chunks changed.
    pub async fn webhook_compact(&self, endpoint: &str, seqs: Option<&[u64]>) -> Result<usize> {
        let mut w = WriteSet::new();
        w.local();
        let mut changed = 0;
        let mut compact = |k: &[u8], v: &[u8]| -> Result<()> {
            let Some((first, false)) = seq_of(b"wq/", endpoint, k) else {
                return Ok(());
            };
            let Ok(items) = decode_queued(k, first, v) else {
                return Ok(());
            };
            let mut keep = Vec::with_capacity(items.len());
            for (seq, q) in &items {
                if !self.webhook_is_done(endpoint, *seq)? {
                    keep.push((*seq, q));
                }
            }
            if keep.len() < items.len() {
                changed += 1;
                if keep.is_empty() {
                    w.del(k.to_vec());
                } else {
                    w.put(k.to_vec(), encode_chunk(&keep)?);
                }
            }
            Ok(())
        };
        match seqs {
            None => {
                for kv in self
                    .inner
                    .tree
                    .scan_prefix(endpoint_prefix(b"wq/", endpoint))
                {
                    let (k, v) = kv?;
                    compact(&k, &v)?;
                }
            }
            Some(seqs) => {
                let mut chunks = Vec::new();
                for seq in seqs {
                    if let Some(first) = self.webhook_chunk_of(endpoint, *seq)? {
                        chunks.push(first);
                    }
                }
                chunks.sort_unstable();
                chunks.dedup();
                for first in chunks {
                    let k = delivery_key(b"wq/", endpoint, first);
                    if let Some(v) = self.inner.tree.get(&k)? {
                        compact(&k, &v)?;
                    }
                }
            }
        }
        if changed > 0 {
            self.submit(w).await?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_endpoint_then_seq_and_a_resent_one_after_its_chunk() {
        let a = delivery_key(b"wq/", "crm", 2);
        let r = resent_key("crm", 2);
        let b = delivery_key(b"wq/", "crm", 256);
        let c = delivery_key(b"wq/", "crm-2", 1);
        assert!(a < r && r < b && b < c);
        assert_eq!(seq_of(b"wq/", "crm", &b), Some((256, false)));
        assert_eq!(seq_of(b"wq/", "crm", &r), Some((2, true)));
        assert!(b.starts_with(&endpoint_prefix(b"wq/", "crm")));
        assert!(!c.starts_with(&endpoint_prefix(b"wq/", "crm")));
    }

    fn queued(body: &str) -> Queued {
        Queued::new("member_joined".into(), "group/g".into(), 7, body.into())
    }

    #[test]
    fn a_chunk_keeps_bodies_as_they_were_and_an_old_record_reads_as_one() {
        let (a, b) = (queued(r#"{"type":"x","data":{"n":"é\"q"}}"#), queued("{}"));
        let v = encode_chunk(&[(3, &a), (9, &b)]).expect("encode");
        let k = delivery_key(b"wq/", "crm", 3);
        assert_eq!(
            decode_queued(&k, 3, &v).expect("decode"),
            vec![(3, a.clone()), (9, b)]
        );
        let old = serde_json::to_vec(&a).expect("json");
        assert_eq!(decode_queued(&k, 3, &old).expect("decode"), vec![(3, a)]);
        assert!(encode_chunk(&[(1, &queued("not json"))]).is_err());
        // A damaged chunk is refused, never unpacked to what it claims.
        let mut huge = vec![COMPRESSED];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&v[5..]);
        assert!(decode_queued(&k, 3, &huge).is_err());
        assert!(decode_queued(&k, 3, &v[..v.len() - 3]).is_err());
    }

    fn seqs(q: &[(u64, Queued)]) -> Vec<u64> {
        q.iter().map(|(s, _)| *s).collect()
    }

    /// The queue read through chunks, a resent delivery, attempts and
    /// done records, paged, and compacted.
    #[test]
    fn the_queue_reads_through_chunks_resends_and_what_is_done() {
        let (_dir, rt, store) = test_store();
        let ep: Arc<str> = Arc::from("crm");
        let q = |s: u64| (ep.clone(), s, queued(&format!("{{\"n\":{s}}}")));
        // Two consumer rounds: 1..=100 (chunks of 64 and 36), then 150..=159.
        for round in [(1..=100).collect::<Vec<u64>>(), (150..=159).collect()] {
            let mut w = WriteSet::new();
            w.webhook_batch(&WebhookBatch {
                queued: round.into_iter().map(q).collect(),
                ..Default::default()
            });
            rt.block_on(store.submit(w)).expect("queue");
        }
        let all = store.webhook_queue("crm", None, 1000).expect("read");
        let want: Vec<u64> = (1..=100).chain(150..=159).collect();
        assert_eq!(seqs(&all), want);
        assert_eq!(all[69].1.body, "{\"n\":70}");
        // Pages meet exactly, inside a chunk and across chunks.
        let mut paged = Vec::new();
        let mut after = None;
        while let Some(last) = {
            let page = store.webhook_queue("crm", after, 7).expect("page");
            paged.extend(seqs(&page));
            page.last().map(|(s, _)| *s)
        } {
            after = Some(last);
        }
        assert_eq!(paged, want);

        let before_all = store.webhook_queue("crm", None, 1000).expect("read");
        // 2 and 70 delivered, 5 tried once, 80 sent again with a new window.
        let mut w = WriteSet::new();
        for s in [2, 70] {
            w.webhook_done("crm", s, &Done::of(queued("{}"), State::Delivered, 9));
        }
        let mut again = queued("{\"again\":80}");
        again.created = 50;
        w.webhook_requeued("crm", 80, &again);
        rt.block_on(store.commit(w)).expect("done");
        let mut tried = queued("{}");
        tried.tries.attempts = 1;
        tried.tries.next_at = 99;
        tried.tries.last_status = Some(503);
        rt.block_on(store.webhook_attempted("crm", &[(5, tried)]))
            .expect("tried");
        let all = store.webhook_queue("crm", None, 1000).expect("read");
        let want: Vec<u64> = want.into_iter().filter(|s| ![2, 70].contains(s)).collect();
        assert_eq!(seqs(&all), want);
        let five = &all.iter().find(|(s, _)| *s == 5).expect("5").1;
        assert_eq!(
            (
                five.tries.attempts,
                five.tries.next_at,
                five.tries.last_status
            ),
            (1, 99, Some(503))
        );
        let stale = |s: u64| {
            let (_, q) = before_all
                .iter()
                .find(|(x, _)| *x == s)
                .expect("read before");
            !store.webhook_unchanged("crm", s, q).expect("unchanged")
        };
        // Done, tried, resent: each is no longer as read; the rest is.
        assert!(stale(2) && stale(5) && stale(80) && !stale(6));
        assert!(store.webhook_unchanged("crm", 5, five).expect("unchanged"));
        let (queued80, done80) = store.webhook_delivery("crm", 80).expect("80");
        assert_eq!((queued80.map(|q| q.created), done80), (Some(50), None));
        let (queued2, done2) = store.webhook_delivery("crm", 2).expect("2");
        assert!(queued2.is_none() && done2.is_some());
        assert_eq!(
            store.webhook_queue("crm", Some(79), 1).expect("page")[0].0,
            80
        );

        // 80 delivered after its resend; compaction leaves the chunks
        // without what is done, and the queue reads the same.
        let mut w = WriteSet::new();
        w.webhook_done("crm", 80, &Done::of(again, State::Delivered, 9));
        rt.block_on(store.commit(w)).expect("done");
        let before = seqs(&store.webhook_queue("crm", None, 1000).expect("read"));
        assert!(!before.contains(&80));
        assert_eq!(
            rt.block_on(store.webhook_compact("crm", None))
                .expect("compact"),
            2
        );
        assert_eq!(
            rt.block_on(store.webhook_compact("crm", None))
                .expect("compact"),
            0
        );
        assert_eq!(
            seqs(&store.webhook_queue("crm", None, 1000).expect("read")),
            before
        );
        // A chunk all of whose deliveries are done goes.
        let mut w = WriteSet::new();
        for s in 150..=159 {
            w.webhook_done("crm", s, &Done::of(queued("{}"), State::Dropped, 9));
        }
        rt.block_on(store.commit(w)).expect("done");
        assert_eq!(
            rt.block_on(store.webhook_compact("crm", Some(&[150, 155])))
                .expect("compact"),
            1
        );
        assert!(store
            .inner
            .tree
            .get(delivery_key(b"wq/", "crm", 150))
            .expect("get")
            .is_none());
        assert_eq!(
            store.webhook_queue("crm", Some(100), 10).expect("read"),
            vec![]
        );
    }
}
