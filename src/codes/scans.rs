//! Scan counting: every resolution of a live code adds a scan and maybe a
//! visitor in memory; a flush every second stores what changed in one write
//! set. A resolution never waits for a disk flush. The price: a `kill -9`
//! loses the scans of the last second or so (a scan is not an acknowledged
//! write). A clean shutdown flushes.
//!
//! Memory holds an entry per code scanned since the last flush (or being
//! flushed); it is authoritative for that code while it exists, so a reader
//! never adds an in-flight count to a stored one that already holds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::domain::code::{CodeId, Tally, MAX_VISITORS_PER_CODE};
use crate::metrics;
use crate::storage::{Storage, StorageError, WriteSet};

const SHARDS: usize = 16;
/// Codes with unflushed scans, per shard, beyond which scans are dropped
/// (counted in `qrgate_code_scans_total{result="dropped"}`): memory stays
/// bounded when storage cannot keep up.
const MAX_CODES_PER_SHARD: usize = 16_384;

#[derive(Default)]
struct Entry {
    /// What storage holds (the last completed flush).
    stored: Tally,
    /// Scans and new visitors not yet flushed.
    scans: u64,
    visitors: HashSet<[u8; 16]>,
    /// Being flushed now.
    flushing_scans: u64,
    flushing: HashSet<[u8; 16]>,
}

impl Entry {
    fn tally(&self) -> Tally {
        Tally {
            scans: self.stored.scans + self.flushing_scans + self.scans,
            unique: self.stored.unique + (self.flushing.len() + self.visitors.len()) as u64,
        }
    }

    fn idle(&self) -> bool {
        self.scans == 0 && self.visitors.is_empty() && self.flushing.is_empty()
    }
}

pub struct Scans {
    shards: Vec<Mutex<HashMap<CodeId, Entry>>>,
    /// One flush at a time (the periodic one, the one at shutdown).
    flushing: tokio::sync::Mutex<()>,
}

impl Default for Scans {
    fn default() -> Self {
        Scans {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }
}

impl Scans {
    fn shard(&self, id: &CodeId) -> MutexGuard<'_, HashMap<CodeId, Entry>> {
        let n = usize::from(id.0[0]) % SHARDS;
        match self.shards[n].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Count a scan of `id` by `visitor` (a visitor hash).
    pub fn record(
        &self,
        storage: &Storage,
        id: &CodeId,
        visitor: &[u8; 16],
    ) -> Result<(), StorageError> {
        let mut shard = self.shard(id);
        if !shard.contains_key(id) {
            if shard.len() >= MAX_CODES_PER_SHARD {
                metrics::CODE_SCANS.with_label_values(&["dropped"]).inc();
                return Ok(());
            }
            let stored = storage.code_tally(id)?;
            shard.insert(
                *id,
                Entry {
                    stored,
                    ..Entry::default()
                },
            );
        }
        let Some(e) = shard.get_mut(id) else {
            return Ok(());
        };
        e.scans += 1;
        let new = e.tally().unique < MAX_VISITORS_PER_CODE
            && !e.visitors.contains(visitor)
            && !e.flushing.contains(visitor)
            && !storage.has_code_visitor(id, visitor)?;
        if new {
            e.visitors.insert(*visitor);
        }
        metrics::CODE_SCANS.with_label_values(&["counted"]).inc();
        Ok(())
    }

    /// The counts of `id`, unflushed scans included.
    pub fn tally(&self, storage: &Storage, id: &CodeId) -> Result<Tally, StorageError> {
        let shard = self.shard(id);
        match shard.get(id) {
            Some(e) => Ok(e.tally()),
            None => storage.code_tally(id),
        }
    }

    /// Store everything counted since the last flush, in one write set.
    /// Entries with nothing new since the previous flush are dropped from
    /// memory (storage holds their counts).
    pub async fn flush(&self, storage: &Storage) -> Result<(), StorageError> {
        let _one = self.flushing.lock().await;
        let mut w = WriteSet::new();
        let mut flushed = Vec::new();
        for shard in &self.shards {
            let mut shard = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            shard.retain(|_, e| !e.idle());
            for (id, e) in shard.iter_mut() {
                e.flushing_scans = std::mem::take(&mut e.scans);
                e.flushing = std::mem::take(&mut e.visitors);
                w.code_tally(id, &e.tally());
                for v in &e.flushing {
                    w.code_visitor(id, v);
                }
                flushed.push(*id);
            }
        }
        if flushed.is_empty() {
            return Ok(());
        }
        let result = storage.commit(w).await;
        for id in &flushed {
            let mut shard = self.shard(id);
            if let Some(e) = shard.get_mut(id) {
                if result.is_ok() {
                    e.stored.scans += e.flushing_scans;
                    e.stored.unique += e.flushing.len() as u64;
                }
                e.flushing_scans = 0;
                e.flushing.clear();
            }
        }
        result
    }
}
