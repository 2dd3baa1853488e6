//! The committer: the thread that turns queued write sets into durable
//! rounds of the journal (group commit). See the module docs of `storage`
//! for the whole picture.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::oneshot;

use super::journal::AppendError;
pub use super::ledger::ChainHead;
use super::{Inner, Result, StorageError, WriteSet};
use crate::metrics;

/// One write set waiting for the committer, and whom to tell.
pub(super) struct Job {
    pub(super) w: WriteSet,
    pub(super) done: Option<oneshot::Sender<Result<()>>>,
    pub(super) tracker: Option<Arc<Tracker>>,
}

/// Lets a writer (a group actor) know, without awaiting anything, whether it
/// has write sets not yet durable and whether one of them failed. The
/// committer updates it, so it stays right even if nobody awaits the future
/// returned by [`Storage::submit_tracked`] (e.g. the client went away).
pub struct Tracker {
    in_flight: AtomicUsize,
    failed: AtomicBool,
    /// Tells writers apart for [`super::Fence`].
    id: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Tracker {
            in_flight: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Tracker {
    /// Write sets submitted and not yet durable (or failed).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A write set failed: the writer's memory may be ahead of storage.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Tells this writer apart from every other of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Mark the writer failed now (its write set is being refused, or its
    /// memory went ahead of what it could write): it is rebuilt from storage.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub(super) fn finish(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Job {
    /// Tell the tracker first, so a client that reacts to the answer finds
    /// its actor already knowing the outcome.
    pub(super) fn answer(mut self, r: Result<()>) {
        if let Some(t) = self.tracker.take() {
            t.finish(r.is_ok());
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(r);
        }
    }
}

/// A job dropped unanswered (a committer thread died) counts as failed.
impl Drop for Job {
    fn drop(&mut self) {
        if let Some(t) = self.tracker.take() {
            t.finish(false);
        }
    }
}

/// Most write sets in one round (one journal frame).
const MAX_JOBS_PER_COMMIT: usize = 4096;

/// Version of the round payload layout (first byte of every frame).
const ROUND_V1: u8 = 1;

/// One round as a journal frame's payload:
///
/// ```text
/// u8 version (1)
/// u32 LE  number of records, then each: u8 kind (0 delete, 1 put),
///         u32 LE key length, key, and for a put u32 LE value length, value
/// u64 LE  seq of the first event
/// u32 LE  number of events, then each: u32 LE length, the event (JSON)
/// ```
///
/// Every record is a whole-record put or delete, so replaying a frame twice
/// leaves the same state (the ledger's chain records are puts too).
pub(super) struct Round {
    pub(super) ops: Vec<(Vec<u8>, Option<sled::IVec>)>,
    pub(super) first_event: u64,
    pub(super) events: Vec<Vec<u8>>,
}

impl Round {
    pub(super) fn last_event(&self) -> u64 {
        last_event(self.first_event, self.events.len())
    }
}

/// The seq of the last of `n` events from `first` (0: none).
fn last_event(first: u64, n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        first + n as u64 - 1
    }
}

fn put_u32(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Append a round's payload to `buf` (a journal frame buffer).
fn encode_round(
    buf: &mut Vec<u8>,
    ops: &[(Vec<u8>, Option<sled::IVec>)],
    first_event: u64,
    events: &[Vec<u8>],
) {
    buf.push(ROUND_V1);
    put_u32(buf, ops.len());
    for (k, v) in ops {
        buf.push(u8::from(v.is_some()));
        put_u32(buf, k.len());
        buf.extend_from_slice(k);
        if let Some(v) = v {
            put_u32(buf, v.len());
            buf.extend_from_slice(v);
        }
    }
    buf.extend_from_slice(&first_event.to_le_bytes());
    put_u32(buf, events.len());
    for e in events {
        put_u32(buf, e.len());
        buf.extend_from_slice(e);
    }
}

/// Reads little-endian fields off a payload (rounds, cluster entries).
pub(super) struct Cur<'a>(pub(super) &'a [u8]);

impl<'a> Cur<'a> {
    pub(super) fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("payload cut short".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    pub(super) fn u32(&mut self) -> std::result::Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    pub(super) fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A u32 count, then that many u32-length-prefixed byte strings.
    pub(super) fn list(&mut self) -> std::result::Result<Vec<Vec<u8>>, String> {
        let n = self.u32()?;
        let mut out = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let l = self.u32()?;
            out.push(self.take(l)?.to_vec());
        }
        Ok(out)
    }

    /// Nothing may follow the last field.
    pub(super) fn end(&self) -> std::result::Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("bytes after the payload".into())
        }
    }
}

/// Read a round back from a frame's payload.
pub(super) fn decode_round(p: &[u8]) -> std::result::Result<Round, String> {
    let mut c = Cur(p);
    let v = c.take(1)?[0];
    if v != ROUND_V1 {
        return Err(format!("unknown round version {v}"));
    }
    let n = c.u32()?;
    let mut ops = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let kind = c.take(1)?[0];
        let kl = c.u32()?;
        let k = c.take(kl)?.to_vec();
        let v = match kind {
            0 => None,
            1 => {
                let vl = c.u32()?;
                Some(sled::IVec::from(c.take(vl)?))
            }
            k => return Err(format!("unknown record kind {k}")),
        };
        ops.push((k, v));
    }
    let first_event = c.u64()?;
    let events = c.list()?;
    c.end()?;
    Ok(Round {
        ops,
        first_event,
        events,
    })
}

/// What the committer carries from round to round.
pub(super) struct Cursor {
    /// Seq the next event gets.
    pub(super) next_seq: u64,
    pub(super) chain: ChainHead,
    /// Per fenced entity: the position it was last written at, and by
    /// which writer (entities written since this process started).
    pub(super) positions: HashMap<u64, (u64, u64), foldhash::fast::RandomState>,
}

/// Group commit: take every write set queued so far, check it, give its
/// ledger records their place in the hash chain and its events their seqs,
/// and write the whole round as one journal frame (one `pwrite`, one
/// `fdatasync`). Only then is the round applied to the overlay (reads see
/// it), its events handed to the outbox, and its writers answered. While a
/// round is on its way to the disk the next one queues up.
pub(super) fn commit_loop(inner: Arc<Inner>, rx: mpsc::Receiver<Job>, mut cur: Cursor) {
    let inner = &inner;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        keep_within_checkpoints(inner);
        let started = Instant::now();
        let chain_before = cur.chain.clone();
        let mut ops: Vec<(Vec<u8>, Option<sled::IVec>)> = Vec::new();
        let mut events: Vec<Vec<u8>> = Vec::new();
        // Keys created in this round, for write sets that create keys.
        let mut created: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut refused = Vec::new();
        // Fenced entities written in this round, by writer.
        let mut fenced: HashMap<u64, u64, foldhash::fast::RandomState> = HashMap::default();
        for (n, j) in jobs.iter_mut().enumerate() {
            // A writer whose earlier write set was refused has memory ahead
            // of storage: nothing more of it may land until it is rebuilt.
            if j.tracker.as_ref().is_some_and(|t| t.failed()) {
                refused.push((
                    n,
                    StorageError::Exists("an earlier write set of this writer".to_string()),
                ));
                continue;
            }
            let writer = j.tracker.as_ref().map_or(0, |t| t.id);
            let fence = j.w.fence.take().filter(|_| !j.w.is_empty());
            if let Some(f) = &fence {
                let last = fenced
                    .get(&f.entity)
                    .map(|w| (u64::MAX, *w))
                    .or_else(|| cur.positions.get(&f.entity).copied());
                if let Some((pos, by)) = last {
                    if by != writer && pos > f.since {
                        if let Some(t) = &j.tracker {
                            t.fail();
                        }
                        refused.push((n, StorageError::Fenced(f.name.to_string())));
                        continue;
                    }
                }
            }
            if !j.w.creates.is_empty() {
                if let Some(k) = first_existing(inner, &j.w.creates, &created) {
                    if let Some(t) = &j.tracker {
                        t.fail();
                    }
                    refused.push((n, StorageError::Exists(k)));
                    continue;
                }
                created.extend(j.w.creates.drain(..));
            }
            // Only a write set that lands makes its writer the entity's last:
            // a refused one wrote nothing, and the writer that replaces it
            // (activated after the refusal was answered, possibly before
            // this round is published) must not be fenced by it.
            if let Some(f) = fence {
                fenced.insert(f.entity, writer);
            }
            for (k, v) in j.w.ops.drain(..) {
                ops.push((k, v.map(sled::IVec::from)));
            }
            for r in j.w.journal.drain(..) {
                let (k, v) = cur.chain.append(&r);
                ops.push((k, Some(sled::IVec::from(v))));
            }
            events.append(&mut j.w.events);
        }
        // Refused write sets applied nothing: answer them now.
        for (n, e) in refused.into_iter().rev() {
            let j = jobs.remove(n);
            j.answer(Err(e));
        }
        for (k, v) in cur.chain.day_anchors() {
            ops.push((k, Some(sled::IVec::from(v))));
        }
        let first_event = cur.next_seq;
        let result = if inner.poisoned.load(Ordering::Relaxed) {
            Err(StorageError::Io(
                "storage failed earlier; restart the server".into(),
            ))
        } else if ops.is_empty() && events.is_empty() {
            // Barriers only: every earlier round is durable already.
            Ok(None)
        } else {
            write_round(inner, &ops, first_event, &events)
        };
        metrics::STORAGE_WRITE_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::FLUSH_BATCH.observe(jobs.len() as f64);
        match result {
            Ok(pos) => {
                let n_events = events.len() as u64;
                if let Err(e) = publish_round(inner, pos, ops, first_event, events) {
                    poison(inner, &e);
                    for j in jobs {
                        j.answer(Err(e.clone()));
                    }
                    continue;
                }
                cur.next_seq += n_events;
                if let Some(pos) = pos {
                    for (entity, writer) in fenced {
                        cur.positions.insert(entity, (pos, writer));
                    }
                }
                for j in jobs {
                    j.answer(Ok(()));
                }
            }
            Err(e) => {
                cur.chain = chain_before;
                for j in jobs {
                    j.answer(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes past this many times `checkpoint_bytes` since the last
/// checkpoint began wait for the next one: the overlay (memory) and the
/// replay at start stay bounded when writes outrun the checkpoints.
const STALL_AFTER: u64 = 2;
/// ... but not longer than this per round: a checkpoint that keeps failing
/// (sled's disk full) must not stop writes the journal can still take.
const STALL_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

fn keep_within_checkpoints(inner: &Inner) {
    let limit = inner.opts.checkpoint_bytes.saturating_mul(STALL_AFTER);
    if !inner.opts.journal || inner.since_checkpoint.load(Ordering::SeqCst) < limit {
        return;
    }
    let started = Instant::now();
    inner.wake_checkpointer();
    while inner.since_checkpoint.load(Ordering::SeqCst) >= limit
        && !inner.poisoned.load(Ordering::Relaxed)
        && !inner.stopping()
    {
        if started.elapsed() >= STALL_AT_MOST {
            tracing::warn!("checkpoints are not keeping up; writing on beyond the overlay's bound");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    metrics::COMMIT_STALL_SECONDS.inc_by(started.elapsed().as_secs_f64());
}

/// Write one round to the journal and make it durable.
fn write_round(
    inner: &Inner,
    ops: &[(Vec<u8>, Option<sled::IVec>)],
    first_event: u64,
    events: &[Vec<u8>],
) -> Result<Option<u64>> {
    let mut journal = inner
        .journal
        .lock()
        .map_err(|_| StorageError::Io("journal lock poisoned".into()))?;
    let Some(j) = journal.as_mut() else {
        // Storage switched off (benchmarks): nothing reaches the disk.
        return Ok(Some(inner.applied_pos.load(Ordering::SeqCst) + 1));
    };
    let size: usize = ops
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum::<usize>()
        + events.iter().map(|e| 4 + e.len()).sum::<usize>()
        + 17;
    let mut buf = super::journal::frame_buffer(size);
    encode_round(&mut buf, ops, first_event, events);
    let started = Instant::now();
    let appended = j.append(&mut buf, last_event(first_event, events.len()));
    metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
    match appended {
        Ok(pos) => {
            inner.refusing.store(false, Ordering::SeqCst);
            let since = inner
                .since_checkpoint
                .fetch_add(buf.len() as u64, Ordering::SeqCst)
                + buf.len() as u64;
            metrics::JOURNAL_BYTES.inc_by(buf.len() as u64);
            if since >= inner.opts.checkpoint_bytes {
                inner.wake_checkpointer();
            }
            Ok(Some(pos))
        }
        Err(AppendError::Refused(e)) => {
            if !inner.refusing.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %e, "journal write failed; refusing writes until one succeeds");
            }
            metrics::JOURNAL_REFUSED.inc();
            Err(StorageError::Io(format!("journal write failed: {e}")))
        }
        Err(e @ AppendError::Fatal(_)) => {
            let e = StorageError::Io(e.to_string());
            poison(inner, &e);
            Err(e)
        }
    }
}

/// A durable round becomes visible: the overlay takes its records, the
/// outbox its events, and the durable watermark moves.
pub(super) fn publish_round(
    inner: &Inner,
    pos: Option<u64>,
    ops: Vec<(Vec<u8>, Option<sled::IVec>)>,
    first_event: u64,
    events: Vec<Vec<u8>>,
) -> Result<()> {
    let n = events.len() as u64;
    {
        let _applying = inner
            .apply_lock
            .read()
            .map_err(|_| StorageError::Io("apply lock poisoned".into()))?;
        inner.tree.apply(ops)?;
        if let Some(p) = pos {
            inner.applied_pos.store(p, Ordering::SeqCst);
        }
        if n > 0 {
            inner
                .outbox
                .lock()
                .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?
                .insert(first_event, events);
            inner
                .last_event
                .store(first_event + n - 1, Ordering::SeqCst);
        }
    }
    if n > 0 {
        let d = first_event + n - 1;
        inner.durable_tx.send_if_modified(|v| {
            let changed = *v < d;
            *v = (*v).max(d);
            changed
        });
    }
    Ok(())
}

/// The first of `keys` that exists or was created this round.
fn first_existing(
    inner: &Inner,
    keys: &[Vec<u8>],
    created: &std::collections::HashSet<Vec<u8>>,
) -> Option<String> {
    keys.iter()
        .find(|k| created.contains(*k) || inner.tree.contains_key(k).unwrap_or(true))
        .map(|k| printable_key(k))
}

/// A key for a log line: its ASCII prefix (up to the first `/`), then the
/// binary rest in hex.
pub(super) fn printable_key(k: &[u8]) -> String {
    let cut = k.iter().position(|b| *b == b'/').map_or(0, |i| i + 1);
    let (prefix, rest) = k.split_at(cut);
    let mut out = String::from_utf8_lossy(prefix).into_owned();
    for b in rest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(super) fn poison(inner: &Inner, e: &StorageError) {
    if !inner.poisoned.swap(true, Ordering::SeqCst) {
        tracing::error!(error = %e, "storage fsync or apply failed; refusing further writes until a restart");
        metrics::STORAGE_POISONED.set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StorageError, Tracker, WriteSet};
    use std::sync::Arc;

    fn create(k: &str) -> WriteSet {
        let mut w = WriteSet::new();
        w.create_json(k.as_bytes().to_vec(), &1);
        w
    }

    fn put(k: &str) -> WriteSet {
        let mut w = WriteSet::new();
        w.put_json(k.as_bytes().to_vec(), &1);
        w
    }

    /// A refused write set fences its writer: nothing it submits later
    /// lands, in the same round or after, while other writers go on.
    #[test]
    fn a_refused_write_set_stops_its_writer() {
        let (_dir, rt, store) = super::super::test_store();
        rt.block_on(async {
            store.commit(create("x/taken")).await.unwrap();
            let t = Arc::new(Tracker::default());
            // Submitted together: likely one round.
            let a = store.submit_tracked(create("x/taken"), Some(Arc::clone(&t)));
            let b = store.submit_tracked(put("x/after"), Some(Arc::clone(&t)));
            let other = store.submit(put("x/other"));
            assert!(matches!(a.await, Err(StorageError::Exists(_))));
            assert!(matches!(b.await, Err(StorageError::Exists(_))));
            other.await.unwrap();
            // And in a later round.
            let c = store.submit_tracked(put("x/later"), Some(Arc::clone(&t)));
            assert!(c.await.is_err());
            assert!(t.failed());
            assert_eq!(t.in_flight(), 0);
        });
        assert!(store.inner.tree.get("x/after").unwrap().is_none());
        assert!(store.inner.tree.get("x/later").unwrap().is_none());
        assert!(store.inner.tree.get("x/other").unwrap().is_some());
    }

    fn fenced(k: &str, f: &super::super::Fence) -> WriteSet {
        let mut w = put(k);
        w.fence(f.clone());
        w
    }

    /// A write set refused because a record it creates exists wrote
    /// nothing, so it does not fence the writer that replaces its writer,
    /// even one that read before the refused round was published.
    #[test]
    fn a_refused_create_does_not_fence_the_next_owner() {
        use super::super::Fence;
        let (_dir, rt, store) = super::super::test_store();
        rt.block_on(async {
            store.commit(create("x/taken")).await.unwrap();
            let read_at = store.position();
            let f = Fence::new("wallet/u_1", read_at);
            let mut refused = create("x/taken");
            refused.fence(f.clone());
            let old = Arc::new(Tracker::default());
            let r = store.submit_tracked(refused, Some(Arc::clone(&old)));
            // Another writer's write in the same round gives it a position.
            let other = store.submit(put("x/other"));
            assert!(matches!(r.await, Err(StorageError::Exists(_))));
            other.await.unwrap();
            assert!(old.failed());
            let new = Arc::new(Tracker::default());
            store
                .submit_tracked(fenced("x/mine", &f), Some(new))
                .await
                .unwrap();
        });
    }

    /// One writer per entity: a writer that read the entity before another
    /// writer wrote it is refused (and stopped); the owner, other entities
    /// and writers that read after the write go on.
    #[test]
    fn a_fence_refuses_a_writer_that_read_before_another_wrote() {
        use super::super::Fence;
        let (_dir, rt, store) = super::super::test_store();
        rt.block_on(async {
            let (old, new) = (Arc::new(Tracker::default()), Arc::new(Tracker::default()));
            let read_at = store.position();
            let old_fence = Fence::new("group/g_1", read_at);
            store
                .submit_tracked(fenced("g/1/a", &old_fence), Some(Arc::clone(&old)))
                .await
                .unwrap();
            // A second owner reads after that write and writes.
            let new_fence = Fence::new("group/g_1", store.position());
            store
                .submit_tracked(fenced("g/1/b", &new_fence), Some(Arc::clone(&new)))
                .await
                .unwrap();
            // The first owner's next write is refused; it wrote before, but
            // read before the other writer's write.
            let r = store
                .submit_tracked(fenced("g/1/c", &old_fence), Some(Arc::clone(&old)))
                .await;
            assert!(
                matches!(r, Err(StorageError::Fenced(ref e)) if e == "group/g_1"),
                "{r:?}"
            );
            assert!(old.failed());
            // The owner goes on; another entity of the stale writer's age is fine.
            store
                .submit_tracked(fenced("g/1/d", &new_fence), Some(Arc::clone(&new)))
                .await
                .unwrap();
            let other = Arc::new(Tracker::default());
            store
                .submit_tracked(
                    fenced("g/2/a", &Fence::new("group/g_2", read_at)),
                    Some(other),
                )
                .await
                .unwrap();
            // Two writers racing in one round: the second is refused.
            let (x, y) = (Arc::new(Tracker::default()), Arc::new(Tracker::default()));
            let f = Fence::new("group/g_3", store.position());
            let a = store.submit_tracked(fenced("g/3/x", &f), Some(x));
            let b = store.submit_tracked(fenced("g/3/y", &f), Some(y));
            let (a, b) = (a.await, b.await);
            assert!(
                a.is_ok() != b.is_ok(),
                "exactly one of two racing writers lands"
            );
        });
        assert!(store.inner.tree.get("g/1/c").unwrap().is_none());
        assert!(store.inner.tree.get("g/1/d").unwrap().is_some());
    }

    /// Once the journal since the last checkpoint passes twice the trigger,
    /// a round waits for the next checkpoint (here held back by the test),
    /// and goes on as soon as it ran.
    #[test]
    fn writes_wait_for_a_checkpoint_when_they_outrun_it() {
        use super::super::{Storage, StorageOptions};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = StorageOptions {
            checkpoint_bytes: 4096,
            checkpoint_every: Duration::from_secs(3600),
            ..StorageOptions::default()
        };
        let store = Storage::open_with(dir.path(), [0; 32], opts).unwrap();
        let big = |n: usize| {
            let mut w = WriteSet::new();
            w.put(format!("x/{n}").into_bytes(), vec![7; 1024]);
            w
        };
        // The checkpoint lock, held by another thread until told to let go.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let inner = Arc::clone(&store.inner);
        let holder = std::thread::spawn(move || {
            let _held = inner.checkpoint_lock.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        locked_rx.recv().unwrap();
        rt.block_on(async {
            // Up to twice the trigger goes through at once.
            for n in 0..7 {
                store.commit(big(n)).await.unwrap();
            }
            let mut n = 7;
            let mut stalled = Box::pin(store.commit(big(n)));
            while tokio::time::timeout(Duration::from_millis(300), &mut stalled)
                .await
                .is_ok()
            {
                n += 1;
                assert!(n < 12, "a round past twice the trigger waits");
                stalled = Box::pin(store.commit(big(n)));
            }
            release_tx.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(5), stalled)
                .await
                .expect("goes on once a checkpoint ran")
                .unwrap();
        });
        holder.join().unwrap();
        assert!(store.inner.tree.get(b"x/7").unwrap().is_some());
    }
}
