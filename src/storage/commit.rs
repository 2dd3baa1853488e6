//! The committer: two threads that turn queued write sets into durable
//! state (group commit). See the module docs of `storage` for the whole picture.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::oneshot;

pub use super::ledger::ChainHead;
use super::{key, Inner, Result, StorageError, WriteSet};
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
#[derive(Default)]
pub struct Tracker {
    in_flight: AtomicUsize,
    failed: AtomicBool,
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
    fn answer(mut self, r: Result<()>) {
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

fn sync_log(log: &std::fs::File) -> Result<()> {
    log.sync_data()
        .map_err(|e| StorageError::Io(format!("fdatasync of the log failed: {e}")))
}

/// Most write sets merged into one batch.
const MAX_JOBS_PER_COMMIT: usize = 4096;

/// Keeps a record near 4 KiB: a sled leaf holds up to 16 items and must stay
/// below sled's blob threshold (a quarter of a 512 KiB segment).
const EVENTS_PER_RECORD: usize = 16;

/// A JSON array of encoded events, stored under the seq of its first event.
struct OutboxRecord {
    first: u64,
    len: usize,
    bytes: Vec<u8>,
}

impl OutboxRecord {
    fn new(first: u64) -> Self {
        OutboxRecord {
            first,
            len: 0,
            bytes: vec![b'['],
        }
    }

    fn push(&mut self, event: &[u8]) {
        if self.len > 0 {
            self.bytes.push(b',');
        }
        self.bytes.extend_from_slice(event);
        self.len += 1;
    }

    fn finish_into(mut self, batch: &mut sled::Batch) {
        if self.len > 0 {
            self.bytes.push(b']');
            batch.insert(key(b"o/", &[&self.first.to_be_bytes()]), self.bytes);
        }
    }
}

/// A round the applier has applied in memory, waiting for the flusher.
struct Applied {
    jobs: Vec<Job>,
    /// Highest outbox seq in this round or before it.
    last_seq: u64,
    result: Result<()>,
}

/// Group commit, stage 1 (applier): take every write set queued so far,
/// apply them as one atomic sled batch (assigning outbox seqs in order), and
/// hand the round to the flusher. The next round is applied while the
/// flusher waits on the disk (sled's own flush excludes applies, but the
/// fdatasync that follows it does not).
pub(super) fn commit_loop(
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Job>,
    mut next_seq: u64,
    mut chain: ChainHead,
) {
    let inner = &inner;
    let (flush_tx, flush_rx) = mpsc::channel::<Applied>();
    let flusher = std::thread::Builder::new()
        .name("qrgate-flusher".into())
        .spawn({
            let inner = Arc::clone(inner);
            move || flush_loop(&inner, flush_rx)
        });
    if let Err(e) = &flusher {
        tracing::error!(error = %e, "cannot start the flusher thread; refusing writes");
        inner.poisoned.store(true, Ordering::SeqCst);
    }
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let mut seq = next_seq;
        let mut writes = false;
        let chain_before = chain.clone();
        // Keys created in this round, for write sets that create keys.
        let mut created: std::collections::HashSet<Vec<u8>> = Default::default();
        // The round's events go into outbox records of up to
        // EVENTS_PER_RECORD events: one sled write (and later one delete) per
        // record instead of per event, and records stay far below sled's
        // blob threshold (large values go to separate files sled never fsyncs).
        let mut record = OutboxRecord::new(next_seq);
        let mut refused = Vec::new();
        for (n, j) in jobs.iter_mut().enumerate() {
            // A writer whose earlier write set was refused has memory ahead
            // of storage: nothing more of it may land until it is rebuilt.
            if j.tracker.as_ref().is_some_and(|t| t.failed()) {
                refused.push((n, "an earlier write set of this writer".to_string()));
                continue;
            }
            if !j.w.creates.is_empty() {
                if let Some(k) = first_existing(inner, &j.w.creates, &created) {
                    if let Some(t) = &j.tracker {
                        t.fail();
                    }
                    refused.push((n, k));
                    continue;
                }
                created.extend(j.w.creates.drain(..));
            }
            for (k, v) in j.w.ops.drain(..) {
                writes = true;
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            for r in j.w.journal.drain(..) {
                writes = true;
                let (k, v) = chain.append(&r);
                batch.insert(k, v);
            }
            for e in j.w.events.drain(..) {
                writes = true;
                record.push(&e);
                seq += 1;
                if record.len == EVENTS_PER_RECORD {
                    record.finish_into(&mut batch);
                    record = OutboxRecord::new(seq);
                }
            }
        }
        // Refused write sets applied nothing: answer them now.
        for (n, k) in refused.into_iter().rev() {
            let j = jobs.remove(n);
            j.answer(Err(StorageError::Exists(k)));
        }
        for (k, v) in chain.day_anchors() {
            batch.insert(k, v);
        }
        record.finish_into(&mut batch);
        let result = if inner.poisoned.load(Ordering::Relaxed) {
            Err(StorageError::Io(
                "storage failed earlier; restart the server".into(),
            ))
        } else if writes {
            match inner.apply_lock.read() {
                Ok(_applying) => inner.tree.apply_batch(batch).map_err(StorageError::from),
                Err(_) => Err(StorageError::Io("apply lock poisoned".into())),
            }
        } else {
            Ok(())
        };
        match &result {
            Ok(()) => next_seq = seq,
            // Nothing after a failed round may be applied or acknowledged:
            // later write sets may depend on it (their actor's memory does).
            Err(e) => {
                chain = chain_before.clone();
                poison(inner, e)
            }
        }
        metrics::STORAGE_WRITE_SECONDS.observe(started.elapsed().as_secs_f64());
        let round = Applied {
            jobs,
            last_seq: next_seq - 1,
            result,
        };
        if let Err(mpsc::SendError(round)) = flush_tx.send(round) {
            fail_round(inner, round, StorageError::Closed);
        }
    }
    // Closed: let the flusher finish the rounds it holds.
    drop(flush_tx);
    if let Ok(f) = flusher {
        let _ = f.join();
    }
}

/// The first of `keys` that exists in the tree or was created this round.
fn first_existing(
    inner: &Inner,
    keys: &[Vec<u8>],
    created: &std::collections::HashSet<Vec<u8>>,
) -> Option<String> {
    keys.iter()
        .find(|k| created.contains(*k) || inner.tree.contains_key(k).unwrap_or(true))
        .map(|k| String::from_utf8_lossy(k).into_owned())
}

fn poison(inner: &Inner, e: &StorageError) {
    if !inner.poisoned.swap(true, Ordering::SeqCst) {
        tracing::error!(error = %e, "storage write or flush failed; refusing further writes");
        metrics::STORAGE_POISONED.set(1);
    }
}

fn fail_round(inner: &Inner, round: Applied, e: StorageError) {
    poison(inner, &e);
    for j in round.jobs {
        j.answer(Err(e.clone()));
    }
}

/// Group commit, stage 2 (flusher): one fsync for every round applied so
/// far, then answer all their write sets and advance the durable watermark.
fn flush_loop(inner: &Inner, rx: mpsc::Receiver<Applied>) {
    let mut failed: Option<StorageError> = None;
    while let Ok(first) = rx.recv() {
        let mut rounds = vec![first];
        while let Ok(r) = rx.try_recv() {
            rounds.push(r);
        }
        let started = Instant::now();
        let flushed = match &failed {
            // Once anything failed, nothing later is acknowledged.
            Some(e) => Err(e.clone()),
            None => inner
                .db
                .flush()
                .map_err(StorageError::from)
                .and_then(|_| sync_log(&inner.log)),
        };
        if let Err(e) = &flushed {
            failed.get_or_insert_with(|| e.clone());
        }
        metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
        let mut durable = None;
        for round in rounds {
            metrics::FLUSH_BATCH.observe(round.jobs.len() as f64);
            match (&round.result, &flushed) {
                (Ok(()), Ok(())) => {
                    durable = Some(round.last_seq);
                    for j in round.jobs {
                        j.answer(Ok(()));
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    let e = e.clone();
                    failed.get_or_insert_with(|| e.clone());
                    fail_round(inner, round, e);
                }
            }
        }
        if let Some(d) = durable {
            inner.durable_tx.send_if_modified(|v| {
                let changed = *v < d;
                *v = (*v).max(d);
                changed
            });
        }
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
}
