//! The store's part of a backup, of its restore, and of the offline check
//! of a data dir (`crate::backup` adds the key files and the manifest).
//!
//! A backup of the store is two things, consistent at a journal position:
//! - `state.snap`: sled's checkpoint at position P, in the snapshot format
//!   (`snapshot.rs`, whose trailer hashes it whole);
//! - `journal/*.log`: every segment the journal held, each cut after the
//!   last whole frame it had when the copy began (position Q >= P).
//!
//! Restoring installs the snapshot into a new sled and puts the segments
//! in place: the next start replays the frames after P, as after a crash,
//! and has exactly what was acknowledged up to Q. Neither writes nor
//! checkpoints wait meanwhile ([`Storage::backup_begin`] says why the copy
//! of sled still restores exactly).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::journal::{self, Scan};
use super::kv::Kv;
use super::{checkpoint, commit, crash_point, ledger, sled_slot, snapshot};
use super::{Finding, LedgerBooks, Result, Storage, StorageError};

/// The snapshot's file name in a backup.
pub const STATE_FILE: &str = "state.snap";
/// The journal's directory, in a backup as in a data dir.
pub const JOURNAL_DIR: &str = "journal";

/// One file a backup wrote: its path under the backup dir, size and blake3.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCopy {
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// What [`Storage::backup_into`] wrote.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The journal position the backup is consistent at.
    pub position: u64,
    /// The checkpoint's position within it (replay starts after it).
    pub checkpoint: u64,
    pub files: Vec<FileCopy>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io(format!("{}: {e}", path.display()))
}

/// Copy the first `len` bytes of `from` into a new file `to`, durably;
/// returns the blake3 of what was copied.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<[u8; 32]> {
    let src = std::fs::File::open(from).map_err(io_at(from))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_at(to))?;
    let mut hash = blake3::Hasher::new();
    let mut r = src.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(io_at(from))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_at(to))?;
        copied += n as u64;
    }
    if copied != len {
        return Err(StorageError::Io(format!(
            "{}: {copied} bytes where {len} were expected",
            from.display()
        )));
    }
    dst.sync_all().map_err(io_at(to))?;
    Ok(*hash.finalize().as_bytes())
}

fn sync_dir(dir: &Path) -> Result<()> {
    journal::sync_dir(dir).map_err(io_at(dir))
}

/// What a backup captured when it began: the checkpoint it starts from.
pub(super) struct Begun {
    at: (u64, u64),
    /// The runs manifest at that checkpoint (`runs.rs`), if any.
    runs: Option<Vec<u8>>,
}

/// Clears [`Inner::backup_running`](super::Inner) when the backup ends,
/// however it ends.
pub(super) struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Storage {
    /// Write a backup of the store into `target` (an existing, empty
    /// directory): see the module's documentation. Writes go on, and so do
    /// checkpoints.
    pub fn backup_into(&self, target: &Path) -> Result<Copied> {
        let (running, begun) = self.backup_begin()?;
        let copied = self.backup_finish(&begun, target);
        drop(running);
        copied
    }

    /// Mark a backup running and capture the checkpoint it starts from.
    ///
    /// From here until it ends, checkpoints go on but delete no journal
    /// segment, merge no transfer run and do not reopen sled. The copy of
    /// sled is then fuzzy (each record as of some checkpoint between this
    /// one, P, and the end of the copy) and still restores exactly: every
    /// record a later checkpoint changed was written by a journal frame
    /// after P, which the backup holds and a start replays over it (frames
    /// carry whole records; ledger pages only gain entries, keyed by seq).
    /// The copy names P as its checkpoint and the runs that existed at P:
    /// runs written since are left unnamed (removed at open) and their
    /// transfers come back from the frames.
    pub(super) fn backup_begin(&self) -> Result<(Running<'_>, Begun)> {
        let inner = &self.inner;
        if inner.cluster.is_some() {
            return Err(StorageError::Io(
                "a cluster node keeps no journal of its own: back up the NATS stream".into(),
            ));
        }
        if !inner.opts.journal {
            return Err(StorageError::Io("the journal is switched off".into()));
        }
        use std::sync::atomic::Ordering;
        if inner.backup_running.swap(true, Ordering::SeqCst) {
            return Err(StorageError::Io("a backup is running".into()));
        }
        let running = Running(&inner.backup_running);
        // Set before taking the lock: a checkpoint that takes it after this
        // sees it.
        let _one = inner
            .checkpoint_lock
            .lock()
            .map_err(|_| StorageError::Io("checkpoint lock poisoned".into()))?;
        let sled = inner.tree.sled.get()?;
        let at = checkpoint::read_position(&sled.tree)?;
        let runs = sled.tree.get(super::runs::MANIFEST)?.map(|v| v.to_vec());
        Ok((running, Begun { at, runs }))
    }

    /// Copy sled (as [`backup_begin`](Self::backup_begin) says) and then
    /// the journal as it stands into `target`.
    pub(super) fn backup_finish(&self, begun: &Begun, target: &Path) -> Result<Copied> {
        let inner = &self.inner;
        let overrides = std::collections::BTreeMap::from([
            (
                checkpoint::CHECKPOINT.to_vec(),
                Some(checkpoint::mark(begun.at)),
            ),
            (super::runs::MANIFEST.to_vec(), begun.runs.clone()),
        ]);
        let state = target.join(STATE_FILE);
        let sled = inner.tree.sled.get()?;
        let (bytes, hash) = snapshot::write(&sled.tree, begun.at, &overrides, &state)?;
        drop(sled);
        let mut files = vec![FileCopy {
            path: STATE_FILE.into(),
            bytes,
            blake3: blake3::Hash::from(hash).to_hex().to_string(),
        }];
        crash_point("backup_state_written");
        // The segments as they stand now: every frame in them is durable,
        // the last is the backup's position, and none is deleted while the
        // backup runs.
        let segments = match inner.journal.lock() {
            Ok(j) => j
                .as_ref()
                .map(|j| j.segments().to_vec())
                .unwrap_or_default(),
            Err(_) => return Err(StorageError::Io("journal lock poisoned".into())),
        };
        let dir = target.join(JOURNAL_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_at(&dir))?;
        let mut position = begun.at.0;
        for s in &segments {
            let name = journal::segment_name(s.first);
            let hash = copy_prefix(&inner.journal_dir.join(&name), &dir.join(&name), s.bytes)?;
            files.push(FileCopy {
                path: format!("{JOURNAL_DIR}/{name}"),
                bytes: s.bytes,
                blake3: blake3::Hash::from(hash).to_hex().to_string(),
            });
            position = position.max(s.last);
        }
        sync_dir(&dir)?;
        sync_dir(target)?;
        Ok(Copied {
            position,
            checkpoint: begun.at.0,
            files,
        })
    }
}

/// Check the store's part of the backup in `from` (its files already
/// checked against the manifest) and install it into `data_dir`: sled from
/// the snapshot, the journal's segments copied. `position` is the one the
/// manifest names; the journal must end exactly there.
pub fn restore(from: &Path, data_dir: &Path, position: u64) -> Result<u64> {
    let journal_from = from.join(JOURNAL_DIR);
    let scan = journal::scan(&journal_from, |_, p| commit::decode_round(p).map(|_| ()))
        .map_err(io_at(&journal_from))?;
    if let Some(f) = scan.findings.first().or(scan.torn_tail.as_ref()) {
        return Err(StorageError::Corrupt(
            format!("{} offset {}", f.file.display(), f.offset),
            f.what.clone(),
        ));
    }
    if scan.last() != position && !scan.segments.is_empty() {
        return Err(StorageError::Corrupt(
            journal_from.display().to_string(),
            format!(
                "the journal ends at {} but the manifest says {position}",
                scan.last()
            ),
        ));
    }
    let db = data_dir.join("db");
    let slot = sled_slot::SledSlot::open(&db, 16 << 20)?;
    let sled = slot.get()?;
    let at = snapshot::install(&from.join(STATE_FILE), &sled.tree)?;
    sled.durable()?;
    if let Some(first) = scan.first() {
        if first > at + 1 {
            return Err(StorageError::Corrupt(
                journal_from.display().to_string(),
                format!("the journal starts at {first}, after the checkpoint ({at})"),
            ));
        }
    }
    drop(sled);
    drop(slot);
    let dir = data_dir.join(JOURNAL_DIR);
    std::fs::create_dir(&dir).map_err(io_at(&dir))?;
    for (path, seg) in &scan.segments {
        let name = journal::segment_name(seg.first);
        copy_prefix(path, &dir.join(&name), seg.bytes)?;
    }
    sync_dir(&dir)?;
    sync_dir(data_dir)?;
    Ok(at)
}

/// What [`inspect`] found in a data dir.
pub struct Inspection {
    /// The position sled's checkpoint holds.
    pub checkpoint: u64,
    /// The journal's first and last frame (None: no frames).
    pub journal: Option<(u64, u64)>,
    pub segments: usize,
    /// Frames after the checkpoint, which a start would replay.
    pub replayed: u64,
    pub findings: Vec<Finding>,
    /// What is worth knowing but not wrong (a torn tail a start cuts back).
    pub notes: Vec<String>,
    /// The ledger as a start would see it (sled and the journal after it).
    pub books: LedgerBooks,
}

fn journal_finding(data_dir: &Path, f: &journal::ScanFinding) -> Finding {
    let file = f.file.strip_prefix(data_dir).unwrap_or(&f.file);
    Finding::new(
        format!("{} offset {}", file.display(), f.offset),
        f.what.clone(),
    )
}

/// Check a data dir no server has open, changing nothing of the journal:
/// every journal frame (checksum, position, that it decodes), that the
/// journal holds every frame after sled's checkpoint, and the ledger as a
/// start would see it (the caller checks the books). sled itself is opened
/// (it refuses while a server holds the directory).
pub fn inspect(data_dir: &Path, journal_key: [u8; 32]) -> Result<Inspection> {
    let db = data_dir.join("db");
    if !db.is_dir() {
        return Err(StorageError::Io(format!(
            "{} holds no db/: not a qrgate data dir",
            data_dir.display()
        )));
    }
    let slot = sled_slot::SledSlot::open(&db, 64 << 20).map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            StorageError::Io(format!(
                "{} is in use (a server has it open): stop it, or check a backup restored elsewhere",
                data_dir.display()
            ))
        } else {
            e
        }
    })?;
    let (checkpoint, _) = checkpoint::read_position(&slot.get()?.tree)?;
    let tree = Kv::open(slot)?;
    let mut findings = Vec::new();
    let mut replayed = 0u64;
    let journal_dir = data_dir.join(JOURNAL_DIR);
    let mut apply_error = None;
    let scan: Scan = journal::scan(&journal_dir, |pos, p| {
        let round = commit::decode_round(p)?;
        if pos > checkpoint {
            replayed += 1;
            if let Err(e) = tree.apply(round.ops) {
                apply_error.get_or_insert(e);
            }
        }
        Ok(())
    })
    .map_err(io_at(&journal_dir))?;
    if let Some(e) = apply_error {
        return Err(e);
    }
    findings.extend(scan.findings.iter().map(|f| journal_finding(data_dir, f)));
    let mut notes = Vec::new();
    if let Some(t) = &scan.torn_tail {
        notes.push(format!(
            "{}: a torn write at the end (a round nobody was answered for: {}); the next start cuts it back",
            journal_finding(data_dir, t).place,
            t.what
        ));
    }
    let journal = scan.first().map(|f| (f, scan.last()));
    match journal {
        Some((first, _)) if first > checkpoint + 1 => findings.push(Finding::new(
            JOURNAL_DIR,
            format!(
                "the checkpoint is at position {checkpoint} but the journal starts at {first}: frames {}..{} are missing",
                checkpoint + 1,
                first - 1
            ),
        )),
        Some((_, last)) if last < checkpoint => findings.push(Finding::new(
            JOURNAL_DIR,
            format!("the journal ends at position {last} but the checkpoint is at {checkpoint}"),
        )),
        None if checkpoint > 0 && scan.segments.is_empty() => notes.push(format!(
            "no journal segments: the checkpoint ({checkpoint}) holds everything; the next start begins a journal"
        )),
        _ => {}
    }
    let books = ledger::read_books(&tree, journal_key)?;
    Ok(Inspection {
        checkpoint,
        journal,
        segments: scan.segments.len(),
        replayed,
        findings,
        notes,
        books,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{pages, test_store, Storage, WriteSet};
    use super::*;
    use std::collections::BTreeMap;

    fn key(prefix: &[u8], n: u64) -> Vec<u8> {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        k
    }
    fn entry(n: u64) -> Vec<u8> {
        key(b"le/wallet:a\0", n)
    }
    fn chain(n: u64) -> Vec<u8> {
        key(b"lj/", n)
    }
    fn transfer(n: u64) -> Vec<u8> {
        key(b"lt/transfer-", n)
    }
    fn user(n: u64) -> Vec<u8> {
        key(b"u/", n)
    }

    /// Every record as reads see it: pages opened into the records they
    /// hold, transfers by point reads (scans do not see runs).
    fn logical(s: &Storage, transfers: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let tree = &s.inner.tree;
        let mut out = BTreeMap::new();
        for kv in tree.range(..) {
            let (k, v) = kv.unwrap();
            if let Some(rest) = k.strip_prefix(b"lE/") {
                let account = &rest[..rest.len() - 8];
                for (seq, body) in pages::decode(&k, &v).unwrap() {
                    let mut flat = b"le/".to_vec();
                    flat.extend_from_slice(account);
                    out.insert(key(&flat, seq), body.to_vec());
                }
            } else if k.starts_with(b"lJ/") {
                for (seq, body) in pages::decode(&k, &v).unwrap() {
                    out.insert(chain(seq), body.to_vec());
                }
            } else if !(k.starts_with(b"lT/") || k.starts_with(b"lF/") || k.starts_with(b"x/")) {
                out.insert(k.to_vec(), v.to_vec());
            }
        }
        for n in 0..transfers {
            if let Some(v) = tree.get(transfer(n)).unwrap() {
                out.insert(transfer(n), v.to_vec());
            }
        }
        out
    }

    /// The ids of the transfer runs sled holds (`runs.rs`).
    fn run_ids(s: &Storage) -> std::collections::HashSet<Vec<u8>> {
        let sled = s.inner.tree.sled.get().unwrap();
        sled.tree
            .scan_prefix(b"lT/")
            .map(|kv| kv.unwrap().0[3..11].to_vec())
            .collect()
    }

    fn round(n: u64, generation: &str) -> WriteSet {
        let mut w = WriteSet::new();
        w.put(user(n), format!("{generation} {n}").into_bytes());
        w.put(entry(n), format!("entry {n}").into_bytes());
        // A chain record is its hash, then the record.
        let mut c = vec![0u8; 32];
        c.extend_from_slice(format!("chain {n}").as_bytes());
        w.put(chain(n), c);
        w.put(transfer(n), format!("transfer {n}").into_bytes());
        w
    }

    /// The worst case of the fuzzy copy: a checkpoint moved everything
    /// written since the backup began (overwrites, deletes, ledger pages,
    /// a new transfer run) into sled before sled was copied. The restored
    /// store reads exactly as the source did at the backup's position.
    #[test]
    fn a_backup_whose_sled_moved_on_during_the_copy_restores_exactly() {
        let (_dir, rt, store) = test_store();
        rt.block_on(async {
            for n in 0..60 {
                store.commit(round(n, "first")).await.unwrap();
            }
        });
        store.checkpoint().unwrap();
        let runs_before = run_ids(&store);
        let (running, begun) = store.backup_begin().unwrap();
        assert!(store.backup_begin().is_err(), "one backup at a time");
        rt.block_on(async {
            for n in 60..120 {
                store.commit(round(n, "second")).await.unwrap();
            }
            for n in 0..10 {
                store.commit(round(n, "rewritten")).await.unwrap();
            }
            let mut w = WriteSet::new();
            for n in 10..20 {
                w.del(user(n));
            }
            store.commit(w).await.unwrap();
        });
        store.checkpoint().unwrap();
        rt.block_on(async {
            for n in 120..130 {
                store.commit(round(n, "third")).await.unwrap();
            }
        });
        let want = logical(&store, 130);
        // And the copy met sled between two batches of that checkpoint: the
        // runs manifest already naming the new run, its records not there
        // yet (a copy reads sled in key order, with the manifest last).
        let sled = store.inner.tree.sled.get().unwrap();
        let mut gone = 0;
        for kv in sled.tree.iter() {
            let (k, _) = kv.unwrap();
            let new_run = (k.starts_with(b"lT/") || k.starts_with(b"lF/"))
                && !runs_before.contains(&k[3..11]);
            if new_run {
                sled.tree.remove(&k).unwrap();
                gone += 1;
            }
        }
        assert!(gone > 0, "the checkpoint wrote a new run");
        drop(sled);
        let target = tempfile::tempdir().unwrap();
        let copied = store.backup_finish(&begun, target.path()).unwrap();
        drop(running);
        assert_eq!(copied.checkpoint, begun.at.0);
        assert!(copied.position > copied.checkpoint + 70, "{copied:?}");
        assert_eq!(want.get(&user(3)).unwrap(), b"rewritten 3");
        assert!(!want.contains_key(&user(15)));
        assert_eq!(want.len(), 130 * 4 - 10);

        let restored = tempfile::tempdir().unwrap();
        let data = restored.path().join("data");
        std::fs::create_dir(&data).unwrap();
        restore(target.path(), &data, copied.position).unwrap();
        let back = Storage::open(&data, [0; 32]).unwrap();
        assert_eq!(back.position(), copied.position);
        let got = logical(&back, 130);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the restored store reads as the source did");
    }
}
