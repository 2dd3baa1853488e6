//! Event feeds on disk: `fe/` (feed, seq) holds one event, `fh/` (feed)
//! where the feed stands. Written only by the outbox consumer, with its
//! cursor (see `push.rs` and `feeds.rs`).

use super::*;
use crate::domain::feed::{Feed, Head};

/// One event as a feed keeps it: when it happened and its JSON body (the
/// event's `type` and fields, without `seq`, `feed` or `at`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub at: i64,
    pub body: Arc<str>,
}

impl Stored {
    /// 8 bytes of `at` (i64 BE), then the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.body.len());
        v.extend_from_slice(&self.at.to_be_bytes());
        v.extend_from_slice(self.body.as_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<Stored> {
        let at = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let body = std::str::from_utf8(b.get(8..)?).ok()?;
        Some(Stored {
            at,
            body: Arc::from(body),
        })
    }
}

/// What the consumer writes with its cursor: new events, the heads that
/// moved, and the seqs that dropped out of their feeds.
#[derive(Default)]
pub struct FeedBatch {
    pub entries: Vec<(Feed, u64, Stored)>,
    pub heads: Vec<(Feed, Head)>,
    pub drops: Vec<(Feed, std::ops::Range<u64>)>,
}

impl FeedBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.heads.is_empty() && self.drops.is_empty()
    }

    pub(super) fn write(&self, w: &mut WriteSet) {
        for (f, seq, s) in &self.entries {
            w.put(entry_key(*f, *seq), s.encode());
        }
        for (f, range) in &self.drops {
            for seq in range.clone() {
                w.del(entry_key(*f, seq));
            }
        }
        for (f, h) in &self.heads {
            w.put(key(b"fh/", &[&f.key()]), h.to_bytes().to_vec());
        }
    }
}

fn entry_key(f: Feed, seq: u64) -> Vec<u8> {
    key(b"fe/", &[&f.key(), &seq.to_be_bytes()])
}

impl Storage {
    /// Where `feed` stands on disk (a feed never written: empty, at 0).
    pub fn feed_head(&self, feed: Feed) -> Result<Head> {
        let k = key(b"fh/", &[&feed.key()]);
        match self.inner.tree.get(&k)? {
            None => Ok(Head::default()),
            Some(v) => Head::from_bytes(&v).ok_or_else(|| {
                StorageError::Corrupt(String::from_utf8_lossy(&k).into(), "bad feed head".into())
            }),
        }
    }

    /// Up to `limit` events of `feed` from seq `from` on, in order. An
    /// event that does not decode is left out (logged): a reader skips it
    /// rather than stop at it.
    pub fn feed_entries(&self, feed: Feed, from: u64, limit: usize) -> Result<Vec<(u64, Stored)>> {
        let lo = entry_key(feed, from);
        let hi = entry_key(feed, u64::MAX);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(lo..=hi).take(limit) {
            let (k, v) = kv?;
            let Some(seq) = k.get(20..28).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
                continue;
            };
            let seq = u64::from_be_bytes(seq);
            match Stored::decode(&v) {
                Some(s) => out.push((seq, s)),
                None => tracing::error!(%feed, seq, "a feed event does not decode; skipped"),
            }
        }
        Ok(out)
    }

    /// Up to `limit` feed heads after `after` (a feed's key), in key order:
    /// for the sweep that drops events older than the retention time.
    pub fn feed_heads(&self, after: Option<[u8; 17]>, limit: usize) -> Result<Vec<(Feed, Head)>> {
        let lo = match after {
            Some(k) => std::ops::Bound::Excluded(key(b"fh/", &[&k])),
            None => std::ops::Bound::Included(b"fh/".to_vec()),
        };
        let hi = std::ops::Bound::Excluded(b"fh0".to_vec());
        let mut out = Vec::new();
        for kv in self.inner.tree.range((lo, hi)).take(limit) {
            let (k, v) = kv?;
            if let (Some(f), Some(h)) = (k.get(3..).and_then(Feed::from_key), Head::from_bytes(&v))
            {
                out.push((f, h));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_reads_back() {
        let s = Stored {
            at: 1_700_000_000,
            body: Arc::from("{\"type\":\"x\",\"ü\":1}"),
        };
        assert_eq!(Stored::decode(&s.encode()), Some(s));
        assert_eq!(Stored::decode(b"short"), None);
    }
}
