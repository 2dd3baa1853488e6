//! Event feeds on disk. `fe/` (feed, first seq) holds a chunk of a
//! feed's consecutive events (those one persist brought, at most
//! [`CHUNK_EVENTS`] or [`CHUNK_BYTES`] each), so a busy feed costs a
//! record per chunk, not per event. `fh/` (feed) holds where the feed
//! stands, written only when its oldest event moves (events dropped): its
//! last seq is the greater of the stored one and the last chunk's, so an
//! event costs no head write.
//! Written only by the outbox consumer, with its cursor (see `push.rs` and
//! `feeds.rs`).

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
/// moved (stored only where events dropped out), and the seqs that dropped
/// out of their feeds.
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
}

/// Most events in one chunk, and most bytes (well under sled's threshold
/// for values kept apart).
const CHUNK_EVENTS: usize = 64;
const CHUNK_BYTES: usize = 8 * 1024;

fn chunk_key(f: Feed, first: u64) -> Vec<u8> {
    key(b"fe/", &[&f.key(), &first.to_be_bytes()])
}

fn first_of(k: &[u8]) -> Option<u64> {
    k.get(20..28)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

/// A chunk: (u64 BE seq, u32 BE length, the stored event) for each event.
fn encode_chunk(events: &[(u64, &Stored)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (seq, s) in events {
        let e = s.encode();
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&(e.len() as u32).to_be_bytes());
        v.extend_from_slice(&e);
    }
    v
}

/// The events of a chunk; `None` if it does not decode.
fn decode_chunk(mut b: &[u8]) -> Option<Vec<(u64, Stored)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let seq = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        let s = Stored::decode(b.get(12..12 + len)?)?;
        out.push((seq, s));
        b = b.get(12 + len..)?;
    }
    Some(out)
}

impl Storage {
    /// Put `b` in `w`: the new events in chunks, the heads that moved, and
    /// the chunks every event of which dropped out of its feed.
    pub(super) fn write_feeds(&self, b: &FeedBatch, w: &mut WriteSet) -> Result<()> {
        let mut i = 0;
        while i < b.entries.len() {
            let (feed, first, _) = &b.entries[i];
            let mut chunk: Vec<(u64, &Stored)> = Vec::new();
            let mut bytes = 0;
            while let Some((f, seq, s)) = b.entries.get(i) {
                let next = first + chunk.len() as u64;
                if f != feed
                    || *seq != next
                    || chunk.len() == CHUNK_EVENTS
                    || (bytes > 0 && bytes + s.body.len() > CHUNK_BYTES)
                {
                    break;
                }
                bytes += s.body.len();
                chunk.push((*seq, s));
                i += 1;
            }
            w.put(chunk_key(*feed, *first), encode_chunk(&chunk));
        }
        // A head is stored where its oldest moved; its last seq is the last
        // chunk's otherwise.
        for (f, h) in &b.heads {
            if b.drops.iter().any(|(d, _)| d == f) {
                w.put(key(b"fh/", &[&f.key()]), h.to_bytes().to_vec());
            }
        }
        for (f, range) in &b.drops {
            // A chunk goes once all of it is below the range's end; one that
            // straddles it stays (reads skip what is below the oldest).
            let chunks: Vec<(u64, Vec<u8>)> = self
                .inner
                .tree
                .range(chunk_key(*f, 0)..chunk_key(*f, range.end))
                .map(|kv| kv.map(|(k, v)| (first_of(&k).unwrap_or(0), v.to_vec())))
                .collect::<Result<_>>()?;
            for (first, v) in chunks {
                let last = decode_chunk(&v)
                    .and_then(|e| e.last().map(|(s, _)| *s))
                    .unwrap_or(first);
                if last < range.end {
                    w.del(chunk_key(*f, first));
                }
            }
        }
        Ok(())
    }

    /// Where `feed` stands on disk (a feed never written: empty, at 0).
    pub fn feed_head(&self, feed: Feed) -> Result<Head> {
        let k = key(b"fh/", &[&feed.key()]);
        let mut head = match self.inner.tree.get(&k)? {
            None => Head::default(),
            Some(v) => Head::from_bytes(&v).ok_or_else(|| {
                StorageError::Corrupt(String::from_utf8_lossy(&k).into(), "bad feed head".into())
            })?,
        };
        // The last chunk ends where the feed stands, unless it was all
        // dropped (then the stored head says).
        if let Some((ck, v)) = self
            .inner
            .tree
            .range(chunk_key(feed, 0)..=chunk_key(feed, u64::MAX))
            .next_back()
            .transpose()?
        {
            let last = match decode_chunk(&v).and_then(|e| e.last().map(|(s, _)| *s)) {
                Some(last) => last,
                // A chunk that does not decode (readers skip it): past the
                // most it can hold, so no seq is given twice.
                None => {
                    tracing::error!(key = %String::from_utf8_lossy(&ck), "a feed chunk does not decode");
                    first_of(&ck).unwrap_or(0) + CHUNK_EVENTS as u64 - 1
                }
            };
            head.last = head.last.max(last);
        }
        Ok(head)
    }

    /// Up to `limit` events of `feed` from seq `from` on, in order. A
    /// chunk that does not decode is left out (logged): a reader skips it
    /// rather than stop at it.
    pub fn feed_entries(&self, feed: Feed, from: u64, limit: usize) -> Result<Vec<(u64, Stored)>> {
        // The chunk holding `from` starts at or before it.
        let start = match self
            .inner
            .tree
            .range(chunk_key(feed, 0)..=chunk_key(feed, from))
            .next_back()
            .transpose()?
        {
            Some((k, _)) => std::ops::Bound::Included(k.to_vec()),
            None => std::ops::Bound::Included(chunk_key(feed, from)),
        };
        let hi = std::ops::Bound::Included(chunk_key(feed, u64::MAX));
        let mut out = Vec::new();
        for kv in self.inner.tree.range((start, hi)) {
            let (k, v) = kv?;
            match decode_chunk(&v) {
                Some(events) => out.extend(events.into_iter().filter(|(seq, _)| *seq >= from)),
                None => {
                    tracing::error!(%feed, first = ?first_of(&k), "a feed chunk does not decode; skipped")
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Up to `limit` feeds holding events, after the feed `after` (its
    /// key), in key order: for the sweep that drops events older than the
    /// retention time. One seek per feed.
    pub fn feeds_after(&self, after: Option<[u8; 17]>, limit: usize) -> Result<Vec<Feed>> {
        let mut out = Vec::new();
        let mut from = match after {
            Some(k) => std::ops::Bound::Excluded(key(b"fe/", &[&k, &u64::MAX.to_be_bytes()])),
            None => std::ops::Bound::Included(b"fe/".to_vec()),
        };
        let hi = std::ops::Bound::Excluded(b"fe0".to_vec());
        while out.len() < limit {
            let Some(kv) = self.inner.tree.range((from, hi.clone())).next() else {
                break;
            };
            let (k, _) = kv?;
            let Some(f) = k.get(3..20).and_then(Feed::from_key) else {
                break;
            };
            out.push(f);
            from = std::ops::Bound::Excluded(chunk_key(f, u64::MAX));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_store;

    #[test]
    fn a_chunk_reads_back() {
        let a = Stored {
            at: 1,
            body: Arc::from("{\"type\":\"a\"}"),
        };
        let b = Stored {
            at: 2,
            body: Arc::from("{}"),
        };
        let c = encode_chunk(&[(7, &a), (8, &b)]);
        assert_eq!(decode_chunk(&c), Some(vec![(7, a), (8, b)]));
        assert_eq!(decode_chunk(&c[..c.len() - 1]), None);
        assert_eq!(decode_chunk(&[]), Some(vec![]));
    }

    /// Heads are stored only where events dropped out; elsewhere the last
    /// chunk says where the feed stands.
    #[test]
    fn a_head_is_the_last_chunk_unless_events_dropped() {
        let (_dir, rt, store) = test_store();
        let f = Feed::Group(crate::domain::ids::GroupId([7; 16]));
        let ev = |n: u64| Stored {
            at: n as i64,
            body: Arc::from(format!("{{\"n\":{n}}}")),
        };
        let write = |b: &FeedBatch| {
            let mut w = WriteSet::new();
            store.write_feeds(b, &mut w).expect("feeds");
            rt.block_on(store.submit(w)).expect("write");
        };
        assert_eq!(store.feed_head(f).expect("head"), Head::default());
        // Two rounds, 1..=3 then 4..=5: no head record, the chunks tell.
        for round in [1..=3u64, 4..=5] {
            write(&FeedBatch {
                entries: round.clone().map(|n| (f, n, ev(n))).collect(),
                heads: vec![(
                    f,
                    Head {
                        last: *round.end(),
                        oldest: 1,
                    },
                )],
                drops: vec![],
            });
        }
        assert!(store
            .inner
            .tree
            .get(key(b"fh/", &[&f.key()]))
            .expect("get")
            .is_none());
        assert_eq!(
            store.feed_head(f).expect("head"),
            Head { last: 5, oldest: 1 }
        );
        // Everything up to 5 drops out: the head is stored, the chunks go,
        // and the seqs go on from it.
        write(&FeedBatch {
            entries: vec![],
            heads: vec![(f, Head { last: 5, oldest: 6 })],
            drops: vec![(f, 1..6)],
        });
        assert_eq!(store.feed_entries(f, 1, 10).expect("entries"), vec![]);
        assert_eq!(
            store.feed_head(f).expect("head"),
            Head { last: 5, oldest: 6 }
        );
        write(&FeedBatch {
            entries: vec![(f, 6, ev(6))],
            heads: vec![(f, Head { last: 6, oldest: 6 })],
            drops: vec![],
        });
        assert_eq!(
            store.feed_head(f).expect("head"),
            Head { last: 6, oldest: 6 }
        );
    }

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
