//! The checkpoint: what the overlay holds goes into sled, coalesced (one
//! record per key however often it was written since the last checkpoint;
//! a record created and deleted in between never reaches sled; ledger
//! entries and chain records gathered into pages, `pages.rs`; feed events
//! appended to their feed's last chunk, `feeds.rs`), then sled
//! is made durable, and only then are the journal segments it covers (and
//! whose events the outbox has consumed) deleted.
//!
//! sled's `x/checkpoint` record says which journal position the checkpoint
//! holds and the last event seq at that position; recovery replays the
//! frames after it.

use sled::IVec;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::feeds::ChunkMerge;
use super::kv::Map;
use super::{pages, runs, Inner, Result, StorageError};
use crate::metrics;

pub(super) const CHECKPOINT: &[u8] = b"x/checkpoint";

/// Records per sled batch: a crash before the mark is durable leaves sled
/// with part of the checkpoint under the old position, which replay makes
/// whole again.
const BATCH: usize = 8192;

/// The value of [`CHECKPOINT`] for `(position, last event seq)`.
pub(super) fn mark((pos, last_event): (u64, u64)) -> Vec<u8> {
    let mut mark = Vec::with_capacity(16);
    mark.extend_from_slice(&pos.to_be_bytes());
    mark.extend_from_slice(&last_event.to_be_bytes());
    mark
}

/// (journal position, last event seq) of the checkpoint in sled.
pub(super) fn read_position(tree: &sled::Tree) -> Result<(u64, u64)> {
    match tree.get(CHECKPOINT)? {
        None => Ok((0, 0)),
        Some(v) if v.len() == 16 => {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&v[..8]);
            b.copy_from_slice(&v[8..]);
            Ok((u64::from_be_bytes(a), u64::from_be_bytes(b)))
        }
        Some(_) => Err(StorageError::Corrupt(
            "x/checkpoint".into(),
            "length".into(),
        )),
    }
}

/// Cluster mode: events applied here and not yet consumed are in no
/// journal of this node, and the log is followed again only after the
/// checkpoint's position: the checkpoint keeps them as `o/` records, which
/// the next start loads and the consumer deletes (as it does those of data
/// dirs from before the journal).
fn unconsumed_events(inner: &Inner) -> Result<Vec<(Vec<u8>, IVec)>> {
    let consumed = super::cursor(&inner.tree)?;
    let outbox = inner
        .outbox
        .lock()
        .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?;
    let mut kept = inner
        .legacy_outbox
        .lock()
        .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?;
    let mut out = Vec::new();
    for (first, events) in outbox.iter() {
        let last = first + (events.len() as u64).saturating_sub(1);
        if last <= consumed || kept.contains(first) {
            continue;
        }
        let mut v = b"[".to_vec();
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                v.push(b',');
            }
            v.extend_from_slice(e);
        }
        v.push(b']');
        out.push((super::key(b"o/", &[&first.to_be_bytes()]), IVec::from(v)));
        kept.insert(*first);
    }
    Ok(out)
}

/// Run one checkpoint now. One at a time; returns the position it holds.
pub(super) fn run(inner: &Inner) -> Result<u64> {
    let _one = inner
        .checkpoint_lock
        .lock()
        .map_err(|_| StorageError::Io("checkpoint lock poisoned".into()))?;
    let started = Instant::now();
    // A backup copying sled and the journal (`backup.rs`): no segment is
    // deleted, no transfer run merged and sled not reopened meanwhile.
    let backup = inner.backup_running.load(Ordering::SeqCst);
    // 1. Freeze the overlay at a round boundary.
    let (frozen, pos, last_event) = {
        let _quiet = inner
            .apply_lock
            .write()
            .map_err(|_| StorageError::Io("apply lock poisoned".into()))?;
        let events = if inner.cluster.is_some() {
            unconsumed_events(inner)?
        } else {
            Vec::new()
        };
        let mut g = inner
            .tree
            .overlay
            .write()
            .map_err(|_| StorageError::Io("overlay lock poisoned".into()))?;
        for (k, v) in events {
            g.active.insert(k, Some(v));
        }
        let active = std::mem::take(&mut g.active);
        let frozen = match g.frozen.take() {
            // An earlier checkpoint failed: take its records too.
            Some(old) => {
                let mut m: Map = Arc::try_unwrap(old).unwrap_or_else(|a| (*a).clone());
                m.extend(active);
                Arc::new(m)
            }
            None => Arc::new(active),
        };
        g.frozen = Some(Arc::clone(&frozen));
        inner.since_checkpoint.store(0, Ordering::SeqCst);
        (
            frozen,
            inner.applied_pos.load(Ordering::SeqCst),
            inner.last_event.load(Ordering::SeqCst),
        )
    };
    // 2. Into sled, then durable.
    let sled = inner.tree.sled.get()?;
    let mut batch = sled::Batch::default();
    let mut n = 0usize;
    let mut written = 0usize;
    let mut bytes = 0usize;
    // Ledger entries and chain records go into pages (`pages.rs`).
    let mut paged: BTreeMap<Vec<u8>, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    // Transfers go into a sorted run (`runs.rs`).
    let mut transfers: Vec<runs::Record> = Vec::new();
    let mut put = |batch: &mut sled::Batch, k: &[u8], v: Option<IVec>| -> Result<()> {
        bytes += k.len() + v.as_ref().map_or(0, |v| v.len());
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
        n += 1;
        written += 1;
        if n == BATCH {
            sled.tree.apply_batch(std::mem::take(batch))?;
            n = 0;
        }
        Ok(())
    };
    // Feed chunks go into each feed's last chunk (`feeds.rs`).
    let mut chunks = ChunkMerge::default();
    for (k, v) in frozen.iter() {
        if chunks.take(k, v.as_ref()) {
            continue;
        }
        if let (Some(v), Some((page, seq))) = (v, pages::page_of(k)) {
            paged.entry(page).or_default().insert(seq, v.to_vec());
            continue;
        }
        if let Some(id) = k.strip_prefix(runs::PREFIX) {
            if v.is_some() || inner.tree.runs.get(&sled.tree, k)?.is_some() {
                transfers.push((id.to_vec(), v.clone()));
            }
            continue;
        }
        if v.is_none() && !sled.tree.contains_key(k)? {
            continue;
        }
        put(&mut batch, k, v.clone())?;
    }
    chunks.finish(&sled.tree, &mut |k, v| put(&mut batch, k, v))?;
    for (page, items) in paged {
        let old = sled.tree.get(&page)?;
        let value = pages::merge(&page, old.as_deref(), items)?;
        put(&mut batch, &page, Some(IVec::from(value)))?;
    }
    let run = if transfers.is_empty() {
        None
    } else {
        let mut sink = |k: Vec<u8>, v: IVec| put(&mut batch, &k, Some(v));
        Some(inner.tree.runs.write(transfers, &mut sink)?)
    };
    sled.tree.apply_batch(batch)?;
    // The records are durable before the mark that names them is written:
    // sled does not promise that a crash keeps its batches as a prefix, so
    // a mark recovered without some batch before it would skip records
    // that replay alone can restore.
    sled.durable()?;
    super::crash_point("checkpoint_records_synced");
    let mut marks = sled::Batch::default();
    marks.insert(CHECKPOINT, IVec::from(mark((pos, last_event))));
    if let Some(run) = &run {
        marks.insert(runs::MANIFEST, inner.tree.runs.manifest_with(run)?);
    }
    sled.tree.apply_batch(marks)?;
    sled.durable()?;
    super::crash_point("checkpoint_synced");
    if let Some(run) = run {
        inner.tree.runs.publish(run)?;
    }
    // 3. sled holds it: reads go there now. Not while a round is being
    // applied: its deletes decided against sled and the frozen records.
    {
        let _quiet = inner
            .apply_lock
            .write()
            .map_err(|_| StorageError::Io("apply lock poisoned".into()))?;
        if let Ok(mut g) = inner.tree.overlay.write() {
            g.frozen = None;
        }
    }
    // 4. The journal segments it covers, once the outbox is past them too.
    let consumed = super::cursor(&inner.tree)?;
    let gone = match inner.journal.lock() {
        Ok(_) if backup => Vec::new(),
        Ok(mut j) => match j.as_mut() {
            Some(j) => j.detach_through(pos, consumed),
            None => Vec::new(),
        },
        Err(_) => return Err(StorageError::Io("journal lock poisoned".into())),
    };
    if !gone.is_empty() {
        for path in &gone {
            std::fs::remove_file(path)
                .map_err(|e| StorageError::Io(format!("cannot remove {}: {e}", path.display())))?;
        }
        super::journal::sync_dir(&inner.journal_dir)
            .map_err(|e| StorageError::Io(format!("cannot sync the journal dir: {e}")))?;
    }
    // 5. Merge transfer runs (binary-counter style, `runs.rs`).
    let (merges, merged_bytes) = if backup {
        (0, 0)
    } else {
        inner.tree.runs.compact(&sled.tree, &|| sled.durable())?
    };
    drop(sled);
    inner.tree.sled.wrote((bytes + merged_bytes) as u64);
    // 6. sled's next open scans what it wrote since its last one: reopen
    // it now and then to keep that (and the next start) short.
    let reopen = inner.opts.sled_reopen_bytes;
    if reopen > 0 && !backup && inner.tree.sled.written() >= reopen {
        match inner.tree.sled.reopen(Duration::from_secs(2)) {
            Ok(true) => metrics::SLED_REOPENS.inc(),
            Ok(false) => tracing::warn!("sled was busy; reopening it at a later checkpoint"),
            Err(e) => {
                tracing::error!(error = %e, "sled did not reopen; reads of checkpointed data fail until it does");
                return Err(e);
            }
        }
    }
    let (run_count, in_runs) = inner.tree.runs.stats();
    metrics::TRANSFER_RUNS.set(run_count as i64);
    let secs = started.elapsed().as_secs_f64();
    metrics::CHECKPOINT_SECONDS.observe(secs);
    tracing::debug!(
        position = pos,
        records = written,
        segments_deleted = gone.len(),
        transfer_runs = run_count,
        transfers_in_runs = in_runs,
        run_merges = merges,
        ms = secs * 1000.0,
        "checkpoint"
    );
    Ok(pos)
}

/// Run this thread at a lower CPU priority (nice 10): a checkpoint is
/// background work that must keep up over minutes, while requests want the
/// cores now. Only this thread: Linux applies `setpriority` per thread.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; failure only leaves
    // the priority as it was.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        tracing::debug!("checkpointer: cannot lower its priority");
    }
}

/// The checkpointer thread: a checkpoint every `every`, or sooner when the
/// committer says the journal grew past the configured size.
pub(super) fn run_loop(inner: Arc<Inner>, every: Duration) {
    lower_priority();
    loop {
        let stop = {
            let Ok(g) = inner.wake.0.lock() else { return };
            let Ok((mut g, _)) = inner
                .wake
                .1
                .wait_timeout_while(g, every, |w| !w.stop && !w.now)
            else {
                return;
            };
            g.now = false;
            g.stop
        };
        if stop {
            return;
        }
        if inner.poisoned.load(Ordering::SeqCst) {
            continue;
        }
        if inner.applied_pos.load(Ordering::SeqCst) == 0 && inner.tree.overlay_len() == 0 {
            continue;
        }
        if let Err(e) = run(&inner) {
            metrics::CHECKPOINT_FAILED.inc();
            tracing::error!(error = %e, "checkpoint failed; the journal keeps everything, retrying later");
        }
    }
}
