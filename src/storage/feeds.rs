//! Event feeds on disk. `fe/` (feed, first seq) holds a chunk of a
//! feed's consecutive events (at most [`CHUNK_EVENTS`], from its key's seq
//! on, and about [`CHUNK_BYTES`]), so a busy feed costs a record per
//! chunk, not per event. `fh/` (feed) holds where the feed stands, written
//! only when its oldest event moves (events dropped): its last seq is the
//! greater of the stored one and the last chunk's, so an event costs no
//! head write.
//!
//! The outbox consumer writes each persist's events as new chunks, with
//! its cursor (see `push.rs` and `feeds.rs`). The checkpoint does not copy
//! those into sled one by one: it appends them to the feed's last chunk
//! in sled until that is full ([`ChunkMerge`]), and deletes the chunks
//! whose every event dropped out, so a feed costs sled one record per
//! checkpoint rather than one per persist. Chunks in key order hold
//! ascending seqs; between a checkpoint's merge and the drop of its frozen
//! records an event can be in two chunks, so readers skip a seq they gave.

use super::*;
use crate::domain::feed::{Feed, Head};
use sled::IVec;

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
fn decode_chunk(b: &[u8]) -> Option<Vec<(u64, Stored)>> {
    raw_chunk(b)?
        .into_iter()
        .map(|(seq, e)| Some((seq, Stored::decode(e)?)))
        .collect()
}

/// The events of a chunk as encoded ([`Stored::encode`]); `None` if it
/// does not decode.
fn raw_chunk(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let seq = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        let e = b.get(12..12 + len)?;
        if e.len() < 8 {
            return None;
        }
        out.push((seq, e));
        b = b.get(12 + len..)?;
    }
    Some(out)
}

/// The last seq the chunk `v` at key `k` holds. One that does not decode
/// (readers skip it) counts as holding the most its key allows, so no seq
/// is given twice and nothing above it is taken for dropped.
fn chunk_last(k: &[u8], v: &[u8]) -> u64 {
    let first = first_of(k).unwrap_or(0);
    match raw_chunk(v) {
        Some(events) => events.last().map_or(first, |(s, _)| *s),
        None => {
            tracing::error!(key = %String::from_utf8_lossy(k), "a feed chunk does not decode");
            first + CHUNK_EVENTS as u64 - 1
        }
    }
}

/// Where the checkpoint's records go: a put (`Some`) or a delete.
pub(super) type Put<'a> = dyn FnMut(&[u8], Option<IVec>) -> Result<()> + 'a;

/// What the checkpoint writes to sled for the feed chunks of its frozen
/// overlay: each feed's new events appended to its last chunk in sled
/// while that has room, then in new chunks; and, for a feed whose oldest
/// event moved (a head among the frozen records), its chunks whose every
/// event dropped out deleted.
///
/// Replay after a crash can bring events sled already holds (a checkpoint
/// cut short before its mark): only seqs past the last chunk's are taken,
/// so merging twice changes nothing.
#[derive(Default)]
pub(super) struct ChunkMerge {
    /// New chunks (key, value) by feed key, in key order.
    chunks: BTreeMap<[u8; 17], Vec<(Vec<u8>, IVec)>>,
    /// The oldest seq of the feeds whose head was stored.
    oldest: BTreeMap<[u8; 17], u64>,
}

impl ChunkMerge {
    /// Look at a frozen record: a new chunk is taken (true: it is not
    /// written as is); a head is noted and written as is.
    pub(super) fn take(&mut self, k: &[u8], v: Option<&IVec>) -> bool {
        if let Some(f) = k.strip_prefix(b"fh/") {
            if let (Ok(f), Some(h)) = (<[u8; 17]>::try_from(f), v.and_then(|v| Head::from_bytes(v)))
            {
                self.oldest.insert(f, h.oldest);
            }
            return false;
        }
        let (Some(v), Some(rest)) = (v, k.strip_prefix(b"fe/")) else {
            return false;
        };
        let Ok(f) = <[u8; 17]>::try_from(&rest[..rest.len().min(17)]) else {
            return false;
        };
        if rest.len() != 25 {
            return false;
        }
        self.chunks
            .entry(f)
            .or_default()
            .push((k.to_vec(), v.clone()));
        true
    }

    /// Write what was taken, reading each feed's chunks from `tree`.
    pub(super) fn finish(self, tree: &sled::Tree, put: &mut Put<'_>) -> Result<()> {
        let ChunkMerge { mut chunks, oldest } = self;
        let mut feeds: Vec<[u8; 17]> = chunks.keys().chain(oldest.keys()).copied().collect();
        feeds.sort_unstable();
        feeds.dedup();
        for f in feeds {
            let lo = key(b"fe/", &[&f, &0u64.to_be_bytes()]);
            let hi = key(b"fe/", &[&f, &u64::MAX.to_be_bytes()]);
            let oldest = oldest.get(&f).copied().unwrap_or(0);
            // Seqs up to `floor` are in sled already (or dropped).
            let mut floor = oldest.saturating_sub(1);
            if oldest > 0 {
                let below = key(b"fe/", &[&f, &oldest.to_be_bytes()]);
                for kv in tree.range(lo.clone()..below) {
                    let (k, v) = kv?;
                    if chunk_last(&k, &v) < oldest {
                        put(&k, None)?;
                    }
                }
            }
            let base = tree.range(lo..=hi).next_back().transpose()?;
            let mut cur: Option<Chunk> = None;
            if let Some((k, v)) = &base {
                let first = first_of(k).unwrap_or(0);
                match raw_chunk(v) {
                    Some(events) => {
                        let last = events.last().map_or(first.saturating_sub(1), |(s, _)| *s);
                        floor = floor.max(last);
                        // Not one whose events all dropped out (deleted above).
                        if last >= oldest {
                            let events = events.into_iter().map(|(s, e)| (s, e.to_vec()));
                            cur = Some(Chunk::of(first, events));
                        }
                    }
                    // One that does not decode stays as it is (readers skip
                    // it); what comes after goes into new chunks.
                    None => floor = floor.max(first),
                }
            }
            for (k, v) in chunks.remove(&f).unwrap_or_default() {
                let Some(events) = raw_chunk(&v) else {
                    tracing::error!(key = %String::from_utf8_lossy(&k), "a feed chunk does not decode; kept as it is");
                    put(&k, Some(v.clone()))?;
                    continue;
                };
                for (seq, e) in events {
                    if seq <= floor {
                        continue;
                    }
                    floor = seq;
                    if cur.as_ref().is_some_and(|c| !c.takes(seq, e.len())) {
                        if let Some(c) = cur.take() {
                            c.write(&f, put)?;
                        }
                    }
                    cur.get_or_insert_with(|| Chunk::of(seq, std::iter::empty()))
                        .push(seq, e.to_vec());
                }
            }
            if let Some(c) = cur {
                c.write(&f, put)?;
            }
        }
        Ok(())
    }
}

/// A chunk being merged: its key's seq, its events, whether it changed.
struct Chunk {
    first: u64,
    events: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    changed: bool,
}

impl Chunk {
    fn of(first: u64, events: impl Iterator<Item = (u64, Vec<u8>)>) -> Chunk {
        let events: Vec<_> = events.collect();
        Chunk {
            first,
            bytes: events.iter().map(|(_, e)| e.len()).sum(),
            events,
            changed: false,
        }
    }

    /// Whether the event `seq` of `len` bytes fits (an empty chunk takes
    /// one event of any size).
    fn takes(&self, seq: u64, len: usize) -> bool {
        self.events.len() < CHUNK_EVENTS
            && seq < self.first + CHUNK_EVENTS as u64
            && (self.bytes == 0 || self.bytes + len <= CHUNK_BYTES)
    }

    fn push(&mut self, seq: u64, e: Vec<u8>) {
        self.bytes += e.len();
        self.events.push((seq, e));
        self.changed = true;
    }

    fn write(self, f: &[u8; 17], put: &mut Put<'_>) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut v = Vec::with_capacity(self.bytes + 12 * self.events.len());
        for (seq, e) in &self.events {
            v.extend_from_slice(&seq.to_be_bytes());
            v.extend_from_slice(&(e.len() as u32).to_be_bytes());
            v.extend_from_slice(e);
        }
        put(
            &key(b"fe/", &[f, &self.first.to_be_bytes()]),
            Some(IVec::from(v)),
        )
    }
}

impl Storage {
    /// Put `b` in `w`: the new events in chunks and the heads that moved.
    pub(super) fn write_feeds(b: &FeedBatch, w: &mut WriteSet) {
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
        // Chunks whose events all dropped out go at the checkpoint, which
        // sees every chunk of the feed (`ChunkMerge`).
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
            head.last = head.last.max(chunk_last(&ck, &v));
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
        // The next seq to give: an event in two chunks (see the module doc)
        // is given once.
        let mut next = from;
        for kv in self.inner.tree.range((start, hi)) {
            let (k, v) = kv?;
            match decode_chunk(&v) {
                Some(events) => {
                    for (seq, s) in events {
                        if seq >= next {
                            next = seq + 1;
                            out.push((seq, s));
                        }
                    }
                }
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
            Storage::write_feeds(b, &mut w);
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
        // Everything up to 5 drops out: the head is stored, the chunks go
        // at the checkpoint, and the seqs go on from it.
        write(&FeedBatch {
            entries: vec![],
            heads: vec![(f, Head { last: 5, oldest: 6 })],
            drops: vec![(f, 1..6)],
        });
        store.checkpoint().expect("checkpoint");
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

    fn ev(n: u64) -> Stored {
        Stored {
            at: n as i64,
            body: Arc::from(format!("{{\"n\":{n}}}")),
        }
    }

    /// The chunks of `f` in sled: (key's seq, the seqs it holds).
    fn in_sled(store: &Storage, f: Feed) -> Vec<(u64, Vec<u64>)> {
        let sled = store.inner.tree.sled.get().expect("sled");
        sled.tree
            .range(chunk_key(f, 0)..=chunk_key(f, u64::MAX))
            .map(|kv| {
                let (k, v) = kv.expect("read");
                let seqs = raw_chunk(&v)
                    .expect("chunk")
                    .iter()
                    .map(|(s, _)| *s)
                    .collect();
                (first_of(&k).expect("key"), seqs)
            })
            .collect()
    }

    /// Persists bring small chunks; the checkpoint appends them to the
    /// feed's last chunk in sled until it is full, deletes the chunks
    /// whose every event dropped out, and merging again changes nothing.
    #[test]
    fn the_checkpoint_appends_chunks_to_the_last_one_and_deletes_dropped_ones() {
        let (_dir, rt, store) = test_store();
        let f = Feed::Group(crate::domain::ids::GroupId([9; 16]));
        let other = Feed::User(crate::domain::ids::UserId([9; 16]));
        let write = |entries: Vec<(Feed, u64, Stored)>, heads: Vec<(Feed, Head)>, drops| {
            let mut w = WriteSet::new();
            let b = FeedBatch {
                entries,
                heads,
                drops,
            };
            Storage::write_feeds(&b, &mut w);
            rt.block_on(store.submit(w)).expect("write");
        };
        let seqs = |from: u64| -> Vec<u64> {
            store
                .feed_entries(f, from, 1000)
                .expect("entries")
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        for round in [1..=3u64, 4..=5] {
            write(round.map(|n| (f, n, ev(n))).collect(), vec![], vec![]);
        }
        write(vec![(other, 1, ev(1))], vec![], vec![]);
        store.checkpoint().expect("checkpoint");
        assert_eq!(in_sled(&store, f), vec![(1, (1..=5).collect())]);
        assert_eq!(in_sled(&store, other), vec![(1, vec![1])]);
        // 6..=70 in two persists: the first chunk fills at 64, the rest
        // starts a chunk of its own.
        for round in [6..=30u64, 31..=70] {
            write(round.map(|n| (f, n, ev(n))).collect(), vec![], vec![]);
        }
        assert_eq!(seqs(1), (1..=70).collect::<Vec<_>>());
        store.checkpoint().expect("checkpoint");
        assert_eq!(
            in_sled(&store, f),
            vec![(1, (1..=64).collect()), (65, (65..=70).collect())]
        );
        assert_eq!(seqs(1), (1..=70).collect::<Vec<_>>());
        assert_eq!(store.feed_head(f).expect("head").last, 70);
        // A replayed persist (a checkpoint cut short before its mark) brings
        // what sled holds again: nothing changes.
        let mut merge = ChunkMerge::default();
        let replayed = encode_chunk(
            &(31..=70)
                .map(|n| (n, ev(n)))
                .collect::<Vec<_>>()
                .iter()
                .map(|(n, s)| (*n, s))
                .collect::<Vec<_>>(),
        );
        assert!(merge.take(&chunk_key(f, 31), Some(&IVec::from(replayed))));
        let mut puts = Vec::new();
        let sled = store.inner.tree.sled.get().expect("sled");
        merge
            .finish(&sled.tree, &mut |k, v| {
                puts.push((k.to_vec(), v));
                Ok(())
            })
            .expect("merge");
        drop(sled);
        assert!(puts.is_empty(), "a replay rewrote {} chunks", puts.len());
        // 1..=66 drop out: the first chunk goes, the second stays (67..).
        write(
            vec![(f, 71, ev(71))],
            vec![(
                f,
                Head {
                    last: 71,
                    oldest: 67,
                },
            )],
            vec![(f, 1..67)],
        );
        store.checkpoint().expect("checkpoint");
        assert_eq!(in_sled(&store, f), vec![(65, (65..=71).collect())]);
        assert_eq!(seqs(67), (67..=71).collect::<Vec<_>>());
        assert_eq!(
            store.feed_head(f).expect("head"),
            Head {
                last: 71,
                oldest: 67
            }
        );
        assert_eq!(in_sled(&store, other), vec![(1, vec![1])]);
    }

    /// An event in two chunks (between a checkpoint's merge and the drop
    /// of its frozen records) is read once.
    #[test]
    fn an_event_in_two_chunks_is_read_once() {
        let (_dir, rt, store) = test_store();
        let f = Feed::Group(crate::domain::ids::GroupId([5; 16]));
        let chunk = |seqs: std::ops::RangeInclusive<u64>| {
            let events: Vec<(u64, Stored)> = seqs.map(|n| (n, ev(n))).collect();
            encode_chunk(&events.iter().map(|(n, s)| (*n, s)).collect::<Vec<_>>())
        };
        let mut w = WriteSet::new();
        w.put(chunk_key(f, 1), chunk(1..=4));
        w.put(chunk_key(f, 3), chunk(3..=6));
        w.put(chunk_key(f, 5), chunk(5..=6));
        rt.block_on(store.submit(w)).expect("write");
        let got: Vec<u64> = store
            .feed_entries(f, 2, 10)
            .expect("entries")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(store.feed_head(f).expect("head").last, 6);
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
