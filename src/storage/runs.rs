//! Transfers by id, without a random sled insert per transfer.
//!
//! Transfer ids are hashes, so their records have no locality: written one
//! sled record each, every transfer would cost a sled insert at a random
//! place. Instead a checkpoint writes the transfers it carries as one
//! **sorted run**:
//!
//! | key                                  | value                              |
//! |--------------------------------------|------------------------------------|
//! | `lT/` run (u64 BE), first id         | a chunk: up to [`CHUNK`] records, by id |
//! | `lF/` run (u64 BE), piece (u32 BE)   | 4 KiB of the run's Bloom filter    |
//! | `x/runs`                             | the live runs (the manifest)       |
//!
//! The manifest is written with the checkpoint's mark, after the run's
//! records are durable; records of a run the manifest does not name (a
//! crash came first) are removed at open.
//!
//! A lookup asks the overlay first (`kv.rs`), then the runs newest first
//! (each run's filter, in memory, says whether to read one chunk), then the
//! flat `lt/` records older data dirs hold. Runs merge like a binary
//! counter (whenever the newest holds at least as many records as the one
//! before it, the two become one) up to [`MERGE_MAX`] records: each
//! transfer is rewritten at most ~log2(MERGE_MAX / run) times, a chunk at
//! a time, and a miss costs one filter probe per large run.

use fastbloom::BloomFilter;
use sled::IVec;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Result, StorageError};

/// The key space held in runs.
pub(super) const PREFIX: &[u8] = b"lt/";
const CHUNKS: &[u8] = b"lT/";
const FILTERS: &[u8] = b"lF/";
pub(super) const MANIFEST: &[u8] = b"x/runs";
/// Records per chunk: a transfer is ~300 bytes, a chunk ~5 KiB.
const CHUNK: usize = 16;
/// Filter words per sled record (4 KiB).
const PIECE: usize = 512;
const BITS_PER_KEY: usize = 10;
/// Runs grow by merging up to this many records; larger ones stay as they
/// are. A merge then rewrites at most ~80 MB, and a lookup that misses
/// probes one in-memory filter per 128k transfers (80 for 10M).
const MERGE_MAX: u64 = 1 << 18;
const HASHES: u32 = 7;

/// One record of a run: the key after [`PREFIX`], and its value (`None`: deleted).
pub(super) type Record = (Vec<u8>, Option<IVec>);

pub(super) struct Run {
    id: u64,
    records: u64,
    filter: BloomFilter,
}

pub(super) struct Runs {
    /// Oldest first.
    live: RwLock<Vec<Arc<Run>>>,
    next_id: AtomicU64,
    /// Whether sled holds flat `lt/` records (written before runs existed).
    flat: AtomicBool,
}

fn poisoned() -> StorageError {
    StorageError::Io("runs lock poisoned".into())
}

fn corrupt(k: &[u8], what: &str) -> StorageError {
    StorageError::Corrupt(String::from_utf8_lossy(k).into_owned(), what.into())
}

/// The filter's source hash of a key: stable across versions, because
/// filters are stored.
fn hash(k: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&blake3::hash(k).as_bytes()[..8]);
    u64::from_le_bytes(a)
}

fn chunk_key(run: u64, first: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(CHUNKS.len() + 8 + first.len());
    k.extend_from_slice(CHUNKS);
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(first);
    k
}

fn filter_key(run: u64, piece: u32) -> Vec<u8> {
    let mut k = FILTERS.to_vec();
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(&piece.to_be_bytes());
    k
}

/// The run a `lT/` or `lF/` key belongs to.
fn run_of(k: &[u8]) -> Option<u64> {
    let b = k.get(3..11)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

fn encode_chunk(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 320);
    for (k, v) in records {
        out.push(u8::from(v.is_some()));
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    out
}

fn decode_chunk(ck: &[u8], mut b: &[u8]) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(CHUNK);
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if b.len() < n {
            return Err(corrupt(ck, "chunk cut short"));
        }
        let (a, rest) = b.split_at(n);
        *b = rest;
        Ok(a.to_vec())
    };
    while !b.is_empty() {
        let put = take(&mut b, 1)?[0] == 1;
        let kl = take(&mut b, 2)?;
        let k = take(&mut b, u16::from_le_bytes([kl[0], kl[1]]) as usize)?;
        let v = if put {
            let vl = take(&mut b, 4)?;
            let n = u32::from_le_bytes([vl[0], vl[1], vl[2], vl[3]]) as usize;
            Some(IVec::from(take(&mut b, n)?))
        } else {
            None
        };
        out.push((k, v));
    }
    Ok(out)
}

/// A run's records in key order, read chunk by chunk.
fn records_of(sled: &sled::Tree, run: u64) -> impl Iterator<Item = Result<Record>> + '_ {
    sled.range(chunk_key(run, &[])..chunk_key(run + 1, &[]))
        .flat_map(|kv| -> Vec<Result<Record>> {
            match kv {
                Ok((k, v)) => match decode_chunk(&k, &v) {
                    Ok(rs) => rs.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(e.into())],
            }
        })
}

/// Two ascending record streams as one, `newer` winning on equal keys.
fn merge<'a>(
    older: impl Iterator<Item = Result<Record>> + 'a,
    newer: impl Iterator<Item = Result<Record>> + 'a,
) -> impl Iterator<Item = Result<Record>> + 'a {
    let mut a = older.peekable();
    let mut b = newer.peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Less,
            (_, Some(Err(_))) | (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok((x, _))), Some(Ok((y, _)))) => x.cmp(y),
        };
        match order {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                a.next();
                b.next()
            }
        }
    })
}

/// Write `records` (ascending keys, at most `hint` of them) as run `id`:
/// every sled record goes to `sink`. Returns the run, not yet live.
fn build(
    id: u64,
    hint: u64,
    records: impl Iterator<Item = Result<Record>>,
    sink: &mut dyn FnMut(Vec<u8>, IVec) -> Result<()>,
) -> Result<Run> {
    let bits = (hint.max(1) as usize * BITS_PER_KEY).div_ceil(64) * 64;
    let mut filter = BloomFilter::with_num_bits(bits).hashes(HASHES);
    let mut chunk: Vec<Record> = Vec::with_capacity(CHUNK);
    let mut count = 0u64;
    let mut flush = |chunk: &mut Vec<Record>| -> Result<()> {
        if let Some((first, _)) = chunk.first() {
            sink(chunk_key(id, first), IVec::from(encode_chunk(chunk)))?;
            chunk.clear();
        }
        Ok(())
    };
    for r in records {
        let (k, v) = r?;
        filter.insert_hash(hash(&k));
        chunk.push((k, v));
        count += 1;
        if chunk.len() == CHUNK {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)?;
    for (i, piece) in filter.as_slice().chunks(PIECE).enumerate() {
        let bytes: Vec<u8> = piece.iter().flat_map(|w| w.to_le_bytes()).collect();
        sink(filter_key(id, i as u32), IVec::from(bytes))?;
    }
    Ok(Run {
        id,
        records: count,
        filter,
    })
}

fn encode_manifest<'a>(runs: impl Iterator<Item = &'a Run>) -> IVec {
    let mut out = Vec::new();
    for r in runs {
        out.extend_from_slice(&r.id.to_be_bytes());
        out.extend_from_slice(&r.records.to_be_bytes());
        out.extend_from_slice(&r.filter.num_hashes().to_be_bytes());
    }
    IVec::from(out)
}

fn remove_run(sled: &sled::Tree, run: u64) -> Result<()> {
    let ranges = [
        chunk_key(run, &[])..chunk_key(run + 1, &[]),
        filter_key(run, 0)..filter_key(run + 1, 0),
    ];
    for r in ranges {
        let keys: Vec<IVec> = sled
            .range(r)
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        for part in keys.chunks(4096) {
            let mut batch = sled::Batch::default();
            for k in part {
                batch.remove(k.clone());
            }
            sled.apply_batch(batch)?;
        }
    }
    Ok(())
}

impl Runs {
    /// The live runs as the manifest names them, with their filters; runs a
    /// crash left unnamed are removed.
    pub(super) fn open(sled: &sled::Tree) -> Result<Runs> {
        let mut live = Vec::new();
        if let Some(m) = sled.get(MANIFEST)? {
            if m.len() % 20 != 0 {
                return Err(corrupt(MANIFEST, "length"));
            }
            for e in m.chunks(20) {
                let mut a = [0u8; 8];
                a.copy_from_slice(&e[..8]);
                let id = u64::from_be_bytes(a);
                a.copy_from_slice(&e[8..16]);
                let records = u64::from_be_bytes(a);
                let hashes = u32::from_be_bytes([e[16], e[17], e[18], e[19]]);
                live.push(Arc::new(load_run(sled, id, records, hashes)?));
            }
        }
        // Records of runs the manifest does not name.
        let named: std::collections::HashSet<u64> = live.iter().map(|r| r.id).collect();
        let mut max = live.iter().map(|r| r.id).max().unwrap_or(0);
        for prefix in [CHUNKS, FILTERS] {
            let mut from = prefix.to_vec();
            loop {
                let Some(kv) = sled.range(from.clone()..).next() else {
                    break;
                };
                let (k, _) = kv?;
                if !k.starts_with(prefix) {
                    break;
                }
                let run = run_of(&k).ok_or_else(|| corrupt(&k, "run key"))?;
                max = max.max(run);
                if !named.contains(&run) {
                    tracing::info!(run, "removing a transfer run a crash left unfinished");
                    remove_run(sled, run)?;
                }
                from = prefix.to_vec();
                from.extend_from_slice(&(run + 1).to_be_bytes());
            }
        }
        let flat = sled.scan_prefix(PREFIX).next().transpose()?.is_some();
        Ok(Runs {
            live: RwLock::new(live),
            next_id: AtomicU64::new(max + 1),
            flat: AtomicBool::new(flat),
        })
    }

    /// What the runs (then the flat records) say of `k` (a key under
    /// [`PREFIX`]): `None` when nothing holds it.
    pub(super) fn get(&self, sled: &sled::Tree, k: &[u8]) -> Result<Option<Option<IVec>>> {
        let Some(id) = k.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let h = hash(id);
        {
            // Held while reading: a merge removes the runs it replaced only
            // once no lookup can still be reading them.
            let live = self.live.read().map_err(|_| poisoned())?;
            for run in live.iter().rev() {
                if !run.filter.contains_hash(h) {
                    continue;
                }
                let Some(kv) = sled
                    .range(chunk_key(run.id, &[])..=chunk_key(run.id, id))
                    .next_back()
                else {
                    continue;
                };
                let (ck, cv) = kv?;
                if let Some((_, v)) = decode_chunk(&ck, &cv)?.into_iter().find(|(x, _)| x == id) {
                    return Ok(Some(v));
                }
            }
        }
        if self.flat.load(Ordering::Relaxed) {
            return Ok(sled.get(k)?.map(Some));
        }
        Ok(None)
    }

    /// Write `records` (ascending, keys under [`PREFIX`] without it) as a
    /// new run through `sink`. Not live until [`publish`](Self::publish).
    pub(super) fn write(
        &self,
        records: Vec<Record>,
        sink: &mut dyn FnMut(Vec<u8>, IVec) -> Result<()>,
    ) -> Result<Run> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let n = records.len() as u64;
        build(id, n, records.into_iter().map(Ok), sink)
    }

    /// The manifest naming the live runs and `new`.
    pub(super) fn manifest_with(&self, new: &Run) -> Result<IVec> {
        let live = self.live.read().map_err(|_| poisoned())?;
        Ok(encode_manifest(
            live.iter().map(|r| r.as_ref()).chain(std::iter::once(new)),
        ))
    }

    /// `run` is in the manifest: lookups see it.
    pub(super) fn publish(&self, run: Run) -> Result<()> {
        self.live
            .write()
            .map_err(|_| poisoned())?
            .push(Arc::new(run));
        Ok(())
    }

    /// Merge the two newest runs while the newest is at least as large as
    /// the one before it. `durable` makes sled's writes so far durable.
    /// Returns how many merges ran and the bytes they wrote.
    pub(super) fn compact(
        &self,
        sled: &sled::Tree,
        durable: &dyn Fn() -> Result<()>,
    ) -> Result<(usize, usize)> {
        let (mut merges, mut bytes) = (0, 0);
        loop {
            let (older, newer) = {
                let live = self.live.read().map_err(|_| poisoned())?;
                match live.as_slice() {
                    [.., a, b] if b.records >= a.records && a.records + b.records <= MERGE_MAX => {
                        (Arc::clone(a), Arc::clone(b))
                    }
                    _ => return Ok((merges, bytes)),
                }
            };
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let mut sink = |k: Vec<u8>, v: IVec| -> Result<()> {
                bytes += k.len() + v.len();
                batch.insert(k, v);
                n += 1;
                if n == 4096 {
                    sled.apply_batch(std::mem::take(&mut batch))?;
                    n = 0;
                }
                Ok(())
            };
            let merged = build(
                id,
                older.records + newer.records,
                merge(records_of(sled, older.id), records_of(sled, newer.id)),
                &mut sink,
            )?;
            sled.apply_batch(batch)?;
            durable()?;
            let manifest = {
                let mut live = self.live.write().map_err(|_| poisoned())?;
                live.retain(|r| r.id != older.id && r.id != newer.id);
                live.push(Arc::new(merged));
                encode_manifest(live.iter().map(|r| r.as_ref()))
            };
            sled.insert(MANIFEST, manifest)?;
            durable()?;
            // No lookup reads the replaced runs any more (they take the
            // read lock for the whole lookup).
            remove_run(sled, older.id)?;
            remove_run(sled, newer.id)?;
            tracing::debug!(
                run = id,
                records = older.records + newer.records,
                "transfer runs merged"
            );
            merges += 1;
        }
    }

    /// (live runs, records in them).
    pub(super) fn stats(&self) -> (usize, u64) {
        self.live
            .read()
            .map(|l| (l.len(), l.iter().map(|r| r.records).sum()))
            .unwrap_or((0, 0))
    }
}

/// A live run's filter from its pieces, checked against keys the run
/// holds; rebuilt from the run's records if it does not answer for it (its
/// layout changed under a new version of the filter crate).
fn load_run(sled: &sled::Tree, id: u64, records: u64, hashes: u32) -> Result<Run> {
    let mut words = Vec::new();
    for kv in sled.range(filter_key(id, 0)..filter_key(id + 1, 0)) {
        let (k, v) = kv?;
        if v.len() % 8 != 0 {
            return Err(corrupt(&k, "filter piece length"));
        }
        words.extend(v.chunks(8).map(|w| {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            u64::from_le_bytes(a)
        }));
    }
    // The first key of each of the first chunks: a filter read under a
    // changed layout fails some of them (each passes by chance ~1 in 2^7).
    let mut probes = Vec::new();
    for kv in sled
        .range(chunk_key(id, &[])..chunk_key(id + 1, &[]))
        .take(32)
    {
        let (k, v) = kv?;
        if let Some((first, _)) = decode_chunk(&k, &v)?.into_iter().next() {
            probes.push(first);
        }
    }
    if probes.is_empty() {
        return Err(corrupt(
            &chunk_key(id, &[]),
            "a live transfer run has no records",
        ));
    }
    if !words.is_empty() {
        let filter = BloomFilter::from_vec(words).hashes(hashes.max(1));
        if probes.iter().all(|p| filter.contains_hash(hash(p))) {
            return Ok(Run {
                id,
                records,
                filter,
            });
        }
    }
    tracing::warn!(
        run = id,
        "rebuilding a transfer run's filter from its records"
    );
    let bits = (records.max(1) as usize * BITS_PER_KEY).div_ceil(64) * 64;
    let mut filter = BloomFilter::with_num_bits(bits).hashes(HASHES);
    for r in records_of(sled, id) {
        filter.insert_hash(hash(&r?.0));
    }
    Ok(Run {
        id,
        records,
        filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let t = db.open_tree("t").unwrap();
        (dir, t)
    }

    fn id(i: u32) -> Vec<u8> {
        blake3::hash(&i.to_le_bytes()).as_bytes()[..16].to_vec()
    }

    fn key(i: u32) -> Vec<u8> {
        let mut k = PREFIX.to_vec();
        k.extend_from_slice(&id(i));
        k
    }

    /// Write `ids` (value = tag) as a checkpoint would, manifest included.
    fn checkpoint(t: &sled::Tree, runs: &Runs, ids: impl Iterator<Item = u32>, tag: &str) {
        let mut recs: Vec<Record> = ids.map(|i| (id(i), Some(IVec::from(tag)))).collect();
        recs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sink = |k: Vec<u8>, v: IVec| -> Result<()> {
            t.insert(k, v)?;
            Ok(())
        };
        let run = runs.write(recs, &mut sink).unwrap();
        t.insert(MANIFEST, runs.manifest_with(&run).unwrap())
            .unwrap();
        runs.publish(run).unwrap();
    }

    #[test]
    fn newest_run_wins_merges_keep_every_record_and_reopen_agrees() {
        let (_d, t) = tree();
        let runs = Runs::open(&t).unwrap();
        checkpoint(&t, &runs, 0..1000, "a");
        checkpoint(&t, &runs, 500..700, "b");
        assert_eq!(runs.get(&t, &key(10)).unwrap(), Some(Some(IVec::from("a"))));
        assert_eq!(
            runs.get(&t, &key(600)).unwrap(),
            Some(Some(IVec::from("b")))
        );
        assert_eq!(runs.get(&t, &key(5000)).unwrap(), None);
        let mut gone: Vec<Record> = vec![(id(11), None)];
        let run = runs
            .write(std::mem::take(&mut gone), &mut |k, v| {
                t.insert(k, v)?;
                Ok(())
            })
            .unwrap();
        t.insert(MANIFEST, runs.manifest_with(&run).unwrap())
            .unwrap();
        runs.publish(run).unwrap();
        assert_eq!(
            runs.get(&t, &key(11)).unwrap(),
            Some(None),
            "a deletion shadows"
        );
        assert_eq!(runs.stats().0, 3);
        // 1000, 200, 1: nothing to merge; one more of 300 merges with 1,
        // then with 200 (501 >= 200), not with 1000.
        assert_eq!(runs.compact(&t, &|| Ok(())).unwrap().0, 0);
        checkpoint(&t, &runs, 2000..2300, "c");
        assert_eq!(runs.compact(&t, &|| Ok(())).unwrap().0, 2);
        assert_eq!(runs.stats(), (2, 1000 + 501));
        let check = |runs: &Runs| {
            for i in (0..1000).chain(2000..2300) {
                let want = match i {
                    11 => None,
                    500..700 => Some(IVec::from("b")),
                    2000.. => Some(IVec::from("c")),
                    _ => Some(IVec::from("a")),
                };
                assert_eq!(runs.get(&t, &key(i)).unwrap(), Some(want), "record {i}");
            }
            let misses = (10_000..20_000)
                .filter(|i| runs.get(&t, &key(*i)).unwrap().is_some())
                .count();
            assert_eq!(misses, 0);
        };
        check(&runs);
        // Runs merged away left nothing behind.
        let chunks: std::collections::BTreeSet<u64> = t
            .scan_prefix(CHUNKS)
            .map(|kv| run_of(&kv.unwrap().0).unwrap())
            .collect();
        assert_eq!(chunks.len(), 2);
        drop(runs);
        check(&Runs::open(&t).unwrap());
    }

    #[test]
    fn a_run_the_manifest_does_not_name_is_removed_and_a_bad_filter_rebuilt() {
        let (_d, t) = tree();
        let runs = Runs::open(&t).unwrap();
        checkpoint(&t, &runs, 0..100, "a");
        // A crash after a run's records, before its manifest.
        let recs: Vec<Record> = vec![(id(7), Some(IVec::from("lost")))];
        runs.write(recs, &mut |k, v| {
            t.insert(k, v)?;
            Ok(())
        })
        .unwrap();
        // A filter that answers for nothing (as if its layout changed).
        for kv in t.scan_prefix(FILTERS) {
            let (k, v) = kv.unwrap();
            t.insert(k, vec![0u8; v.len()]).unwrap();
        }
        drop(runs);
        let runs = Runs::open(&t).unwrap();
        assert_eq!(runs.stats(), (1, 100));
        assert_eq!(runs.get(&t, &key(7)).unwrap(), Some(Some(IVec::from("a"))));
        let live: std::collections::BTreeSet<u64> = t
            .scan_prefix(CHUNKS)
            .map(|kv| run_of(&kv.unwrap().0).unwrap())
            .collect();
        assert_eq!(live.len(), 1, "the unnamed run is gone");
    }

    #[test]
    fn flat_records_from_before_runs_are_found_last() {
        let (_d, t) = tree();
        t.insert(key(1), "flat").unwrap();
        let runs = Runs::open(&t).unwrap();
        assert_eq!(
            runs.get(&t, &key(1)).unwrap(),
            Some(Some(IVec::from("flat")))
        );
        checkpoint(&t, &runs, 1..2, "run");
        assert_eq!(
            runs.get(&t, &key(1)).unwrap(),
            Some(Some(IVec::from("run")))
        );
        assert_eq!(runs.get(&t, &key(2)).unwrap(), None);
    }
}
