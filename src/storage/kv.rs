//! The read view: what the journal holds since the last checkpoint (the
//! overlay, in memory) over what sled holds (the checkpoint). Every read
//! consults the overlay first; a `None` in it is a delete not yet in sled.
//!
//! The overlay has two generations: `active` takes the committer's rounds;
//! a checkpoint freezes it (`frozen`), writes it to sled, and drops it once
//! sled is durable. Reads see active, then frozen, then sled, so the view
//! does not change while a checkpoint runs.

use sled::IVec;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use super::runs::{self, Runs};
use super::sled_slot::{Sled, SledSlot};
use super::{Result, StorageError};

/// Records by key (`None`: deleted). A hash map answers point reads and
/// rewrites of a key already there (most writes: a bucket, an account) in
/// one lookup; the ordered set of keys, touched only when a key is new,
/// serves scans and ranges.
#[derive(Clone, Default)]
pub(super) struct Map {
    values: HashMap<Arc<[u8]>, Option<IVec>, foldhash::fast::RandomState>,
    keys: BTreeSet<Arc<[u8]>>,
}

impl Map {
    pub(super) fn get(&self, k: &[u8]) -> Option<&Option<IVec>> {
        self.values.get(k)
    }

    pub(super) fn insert(&mut self, k: Vec<u8>, v: Option<IVec>) {
        if let Some(slot) = self.values.get_mut(k.as_slice()) {
            *slot = v;
            return;
        }
        let k: Arc<[u8]> = k.into();
        self.keys.insert(Arc::clone(&k));
        self.values.insert(k, v);
    }

    /// Forget `k` altogether (not a delete: sled never had it).
    pub(super) fn forget(&mut self, k: &[u8]) {
        if self.values.remove(k).is_some() {
            self.keys.remove(k);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// Records in key order within the bounds.
    pub(super) fn range<'a>(
        &'a self,
        r: (Bound<&'a [u8]>, Bound<&'a [u8]>),
    ) -> impl Iterator<Item = (&'a [u8], &'a Option<IVec>)> + 'a {
        self.keys
            .range::<[u8], _>(r)
            .filter_map(|k| self.values.get(k).map(|v| (&k[..], v)))
    }

    /// Every record in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &Option<IVec>)> {
        self.range((Bound::Unbounded, Bound::Unbounded))
    }

    /// Take every record of `later` over these.
    pub(super) fn extend(&mut self, later: Map) {
        for (k, v) in later.values {
            if let Some(slot) = self.values.get_mut(&k) {
                *slot = v;
            } else {
                self.keys.insert(Arc::clone(&k));
                self.values.insert(k, v);
            }
        }
    }
}

#[derive(Default)]
pub(super) struct Generations {
    pub(super) active: Map,
    pub(super) frozen: Option<Arc<Map>>,
}

pub(super) struct Kv {
    pub(super) sled: SledSlot,
    pub(super) overlay: RwLock<Generations>,
    /// Transfers (`lt/`) below the overlay: sorted runs, not sled records.
    pub(super) runs: Runs,
}

fn poisoned() -> StorageError {
    StorageError::Io("overlay lock poisoned".into())
}

impl Kv {
    pub(super) fn open(sled: SledSlot) -> Result<Kv> {
        Ok(Kv {
            runs: Runs::open(&sled.get()?.tree)?,
            sled,
            overlay: RwLock::new(Generations::default()),
        })
    }

    /// What the overlay says of `k`: `Some(None)` deleted, `None` ask sled.
    fn in_overlay(&self, k: &[u8]) -> Result<Option<Option<IVec>>> {
        let g = self.overlay.read().map_err(|_| poisoned())?;
        if let Some(v) = g.active.get(k) {
            return Ok(Some(v.clone()));
        }
        Ok(g.frozen.as_ref().and_then(|f| f.get(k).cloned()))
    }

    pub(super) fn get<K: AsRef<[u8]>>(&self, k: K) -> Result<Option<IVec>> {
        let k = k.as_ref();
        match self.in_overlay(k)? {
            Some(v) => Ok(v),
            None => self.below_overlay(k),
        }
    }

    /// What the checkpoint holds of `k`: the transfer runs for `lt/` keys
    /// (point reads only: scans do not see them), sled for the rest.
    fn below_overlay(&self, k: &[u8]) -> Result<Option<IVec>> {
        Self::in_checkpoint(&self.runs, &*self.sled.get()?, k)
    }

    fn in_checkpoint(runs: &Runs, sled: &Sled, k: &[u8]) -> Result<Option<IVec>> {
        if k.starts_with(runs::PREFIX) {
            return Ok(runs.get(&sled.tree, k)?.flatten());
        }
        Ok(sled.tree.get(k)?)
    }

    pub(super) fn contains_key<K: AsRef<[u8]>>(&self, k: K) -> Result<bool> {
        Ok(self.get(k)?.is_some())
    }

    /// The overlay's records in `range` (and under `prefix`, if given),
    /// active over frozen.
    fn overlay_range(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<VecDeque<(IVec, Option<IVec>)>> {
        let under = |k: &[u8]| prefix.is_none_or(|p| k.starts_with(p));
        let g = self.overlay.read().map_err(|_| poisoned())?;
        let r = (lo, hi);
        let active = g.active.range(r).take_while(|(k, _)| under(k));
        let Some(frozen) = g.frozen.as_ref() else {
            return Ok(active.map(|(k, v)| (IVec::from(k), v.clone())).collect());
        };
        let mut merged: BTreeMap<&[u8], &Option<IVec>> =
            frozen.range(r).take_while(|(k, _)| under(k)).collect();
        for (k, v) in active {
            merged.insert(k, v);
        }
        Ok(merged
            .into_iter()
            .map(|(k, v)| (IVec::from(k), v.clone()))
            .collect())
    }

    pub(super) fn range<R: RangeBounds<Vec<u8>>>(&self, r: R) -> Merged {
        let lo = r.start_bound().map(|v| v.as_slice());
        let hi = r.end_bound().map(|v| v.as_slice());
        let over = self.overlay_range(lo, hi, None);
        Merged::new(over, self.sled_range(lo, hi))
    }

    pub(super) fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Merged {
        let p = prefix.as_ref();
        let over = self.overlay_range(Bound::Included(p), Bound::Unbounded, Some(p));
        Merged::new(over, self.sled_scan(p))
    }

    /// sled's records in `range` alone, for prefixes only the checkpoint
    /// writes (ledger pages).
    pub(super) fn checkpoint_range<R: RangeBounds<Vec<u8>>>(&self, r: R) -> Merged {
        let lo = r.start_bound().map(|v| v.as_slice());
        let hi = r.end_bound().map(|v| v.as_slice());
        Merged::new(Ok(VecDeque::new()), self.sled_range(lo, hi))
    }

    /// sled's records under `prefix` alone (see [`checkpoint_range`](Self::checkpoint_range)).
    pub(super) fn checkpoint_scan<P: AsRef<[u8]>>(&self, prefix: P) -> Merged {
        Merged::new(Ok(VecDeque::new()), self.sled_scan(prefix.as_ref()))
    }

    fn sled_range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<(Arc<Sled>, sled::Iter)> {
        let s = self.sled.get()?;
        let it = s.tree.range::<&[u8], _>((lo, hi));
        Ok((s, it))
    }

    fn sled_scan(&self, p: &[u8]) -> Result<(Arc<Sled>, sled::Iter)> {
        let s = self.sled.get()?;
        let it = s.tree.scan_prefix(p);
        Ok((s, it))
    }

    /// Apply one round of puts and deletes (the committer, after the round
    /// is durable in the journal). A delete of a record that neither sled
    /// nor the frozen generation holds leaves nothing behind, so records
    /// created and deleted between two checkpoints (inbox postings, outbox
    /// records) cost nothing later: no tombstone to scan past, nothing for
    /// the checkpoint to write.
    pub(super) fn apply(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<IVec>)>,
    ) -> Result<()> {
        // Whether sled holds each deleted key, asked before taking the lock:
        // only the checkpoint writes sled, and only keys of the frozen
        // generation, which are looked at under the lock. While sled is
        // being reopened, every delete is kept (the checkpoint drops those
        // sled does not hold) rather than waiting for it.
        let sled = self.sled.try_get();
        let ops: Vec<(Vec<u8>, Option<IVec>, bool)> = ops
            .into_iter()
            .map(|(k, v)| {
                let in_sled = v.is_none()
                    && match &sled {
                        Some(s) => Self::in_checkpoint(&self.runs, s, &k)?.is_some(),
                        None => true,
                    };
                Ok((k, v, in_sled))
            })
            .collect::<Result<_>>()?;
        let mut g = self.overlay.write().map_err(|_| poisoned())?;
        for (k, v, in_sled) in ops {
            if v.is_none() && !in_sled {
                let frozen_put = g
                    .frozen
                    .as_ref()
                    .and_then(|f| f.get(&k))
                    .is_some_and(|v| v.is_some());
                if !frozen_put {
                    g.active.forget(&k);
                    continue;
                }
            }
            g.active.insert(k, v);
        }
        Ok(())
    }

    /// Records in the overlay (both generations).
    pub(super) fn overlay_len(&self) -> usize {
        self.overlay
            .read()
            .map(|g| g.active.len() + g.frozen.as_ref().map_or(0, |f| f.len()))
            .unwrap_or(0)
    }
}

/// Overlay records merged over a sled iterator, in key order both ways.
pub(super) struct Merged {
    over: VecDeque<(IVec, Option<IVec>)>,
    /// Fused: a sled iterator asked again after its end may start over
    /// (and yield keys already passed) when the tree changed meanwhile.
    base: Option<std::iter::Fuse<sled::Iter>>,
    /// Held while the iterator lives, so sled is not reopened under it.
    _sled: Option<Arc<Sled>>,
    front: Option<(IVec, IVec)>,
    back: Option<(IVec, IVec)>,
    error: Option<StorageError>,
}

impl Merged {
    fn new(
        over: Result<VecDeque<(IVec, Option<IVec>)>>,
        base: Result<(Arc<Sled>, sled::Iter)>,
    ) -> Merged {
        let (over, base, sled, error) = match (over, base) {
            (Ok(o), Ok((s, b))) => (o, Some(b.fuse()), Some(s), None),
            (Err(e), _) | (_, Err(e)) => (VecDeque::new(), None, None, Some(e)),
        };
        Merged {
            over,
            base,
            _sled: sled,
            front: None,
            back: None,
            error,
        }
    }
}

impl Iterator for Merged {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        loop {
            if self.front.is_none() {
                match self.base.as_mut().and_then(|b| b.next()) {
                    Some(Ok(kv)) => self.front = Some(kv),
                    Some(Err(e)) => return Some(Err(e.into())),
                    // Met the other end: what it peeked is next.
                    None => self.front = self.back.take(),
                }
            }
            let order = match (self.over.front(), &self.front) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((o, _)), Some((b, _))) => o.cmp(b),
            };
            match order {
                std::cmp::Ordering::Greater => return self.front.take().map(Ok),
                eq_or_less => {
                    if eq_or_less == std::cmp::Ordering::Equal {
                        self.front = None;
                    }
                    if let Some((k, Some(v))) = self.over.pop_front() {
                        return Some(Ok((k, v)));
                    }
                }
            }
        }
    }
}

impl DoubleEndedIterator for Merged {
    fn next_back(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        loop {
            if self.back.is_none() {
                match self.base.as_mut().and_then(|b| b.next_back()) {
                    Some(Ok(kv)) => self.back = Some(kv),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => self.back = self.front.take(),
                }
            }
            let order = match (self.over.back(), &self.back) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some((o, _)), Some((b, _))) => o.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => return self.back.take().map(Ok),
                eq_or_greater => {
                    if eq_or_greater == std::cmp::Ordering::Equal {
                        self.back = None;
                    }
                    if let Some((k, Some(v))) = self.over.pop_back() {
                        return Some(Ok((k, v)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> (tempfile::TempDir, Kv) {
        let dir = tempfile::tempdir().unwrap();
        let slot = SledSlot::open(dir.path(), 1 << 20).unwrap();
        (dir, Kv::open(slot).unwrap())
    }

    fn tree(kv: &Kv) -> sled::Tree {
        kv.sled.get().unwrap().tree.clone()
    }

    fn keys(it: impl Iterator<Item = Result<(IVec, IVec)>>) -> Vec<String> {
        it.map(|kv| {
            let (k, v) = kv.unwrap();
            format!(
                "{}={}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .collect()
    }

    #[test]
    fn the_overlay_shadows_sled_both_ways_and_across_generations() {
        let (_d, kv) = kv();
        for k in ["a/1", "a/2", "a/4", "a/6", "b/1"] {
            tree(&kv).insert(k, "s").unwrap();
        }
        kv.apply([
            (b"a/2".to_vec(), None),
            (b"a/3".to_vec(), Some(IVec::from("f"))),
            (b"a/6".to_vec(), Some(IVec::from("f"))),
        ])
        .unwrap();
        // Freeze what is there (as a checkpoint does), then write more.
        {
            let mut g = kv.overlay.write().unwrap();
            let a = std::mem::take(&mut g.active);
            g.frozen = Some(Arc::new(a));
        }
        kv.apply([
            (b"a/3".to_vec(), None),
            (b"a/5".to_vec(), Some(IVec::from("o"))),
            (b"a/0".to_vec(), Some(IVec::from("o"))),
        ])
        .unwrap();
        let want = ["a/0=o", "a/1=s", "a/4=s", "a/5=o", "a/6=f"];
        assert_eq!(keys(kv.scan_prefix("a/")), want);
        let rev: Vec<_> = want.iter().rev().map(|s| s.to_string()).collect();
        assert_eq!(keys(kv.scan_prefix("a/").rev()), rev);
        assert_eq!(
            keys(kv.range(b"a/1".to_vec()..b"a/5".to_vec())),
            ["a/1=s", "a/4=s"]
        );
        assert_eq!(
            keys(kv.range(b"a/1".to_vec()..=b"a/5".to_vec()).rev().take(2)),
            ["a/5=o", "a/4=s"]
        );
        // Both ends at once meet in the middle without repeats.
        let mut it = kv.scan_prefix("a/");
        let mut got = vec![];
        loop {
            match (it.next(), it.next_back()) {
                (None, None) => break,
                (a, b) => {
                    got.extend(a.map(|x| x.unwrap().0));
                    got.extend(b.map(|x| x.unwrap().0));
                }
            }
        }
        got.sort();
        assert_eq!(got.len(), 5);
        got.dedup();
        assert_eq!(got.len(), 5, "no key twice");
        assert_eq!(kv.get("a/2").unwrap(), None);
        assert_eq!(kv.get("a/3").unwrap(), None);
        assert_eq!(kv.get("a/6").unwrap(), Some(IVec::from("f")));
        assert_eq!(kv.get("b/1").unwrap(), Some(IVec::from("s")));
        assert!(!kv.contains_key("a/2").unwrap());
    }

    #[test]
    fn a_record_created_and_deleted_between_checkpoints_leaves_nothing() {
        let (_d, kv) = kv();
        tree(&kv).insert("q/in-sled", "s").unwrap();
        kv.apply([(b"q/new".to_vec(), Some(IVec::from("v")))])
            .unwrap();
        kv.apply([(b"q/new".to_vec(), None), (b"q/in-sled".to_vec(), None)])
            .unwrap();
        assert_eq!(kv.overlay_len(), 1, "only the delete sled needs");
        assert_eq!(kv.get("q/in-sled").unwrap(), None);
        assert_eq!(kv.get("q/new").unwrap(), None);
        assert_eq!(kv.scan_prefix("q/").count(), 0);
    }

    /// A scan yields each key once, in order, both ways, while sled's tree
    /// changes under it (as when a checkpoint writes the same range).
    #[test]
    fn a_scan_while_sled_changes_yields_each_key_once_in_order() {
        let (_dir, kv) = kv();
        let t = tree(&kv);
        // Even keys in the overlay; the writer puts even or odd keys into
        // sled and takes the odd ones out again.
        for i in 0..2000u32 {
            let k = format!("q/{:08}", i * 2).into_bytes();
            kv.apply([(k, Some(IVec::from(&b"v"[..])))]).unwrap();
        }
        let writer = std::thread::spawn(move || {
            for round in 0..20u32 {
                let mut b = sled::Batch::default();
                for i in 0..2000u32 {
                    b.insert(
                        format!("q/{:08}", i * 2 + (round % 2)).as_bytes(),
                        &b"s"[..],
                    );
                }
                t.apply_batch(b).unwrap();
                for i in 0..2000u32 {
                    t.remove(format!("q/{:08}", i * 2 + 1).as_bytes()).unwrap();
                }
            }
        });
        let check = |keys: Vec<IVec>, forward: bool| {
            for w in keys.windows(2) {
                assert!((w[0] < w[1]) == forward, "{:?} then {:?}", w[0], w[1]);
            }
            let even = keys.iter().filter(|k| k.last().is_some_and(|d| d % 2 == 0));
            assert_eq!(even.count(), 2000, "every key the overlay holds, once");
        };
        let mut scans = 0;
        while !writer.is_finished() || scans < 5 {
            check(kv.scan_prefix(b"q/").map(|r| r.unwrap().0).collect(), true);
            check(
                kv.scan_prefix(b"q/").rev().map(|r| r.unwrap().0).collect(),
                false,
            );
            scans += 1;
        }
        writer.join().unwrap();
    }
}
