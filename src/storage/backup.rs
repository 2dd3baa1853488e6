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
//! and has exactly what was acknowledged up to Q. Nothing stops writes
//! meanwhile: only checkpoints wait (they would delete segments being
//! copied and move sled under the snapshot), so the overlay grows by what
//! is written during the backup.

use std::io::{Read, Write};
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copy the first `len` bytes of `from` into a new file `to`, durably;
/// returns the blake3 of what was copied.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<[u8; 32]> {
    let src = std::fs::File::open(from).map_err(io_at(from))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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

impl Storage {
    /// Write a backup of the store into `target` (an existing, empty
    /// directory): see the module's documentation. Writes go on; only
    /// checkpoints wait until it is done.
    pub fn backup_into(&self, target: &Path) -> Result<Copied> {
        let inner = &self.inner;
        if inner.cluster.is_some() {
            return Err(StorageError::Io(
                "a cluster node keeps no journal of its own: back up the NATS stream".into(),
            ));
        }
        if !inner.opts.journal {
            return Err(StorageError::Io("the journal is switched off".into()));
        }
        // No checkpoint first: the journal since the last one is at most
        // `checkpoint_mb`, and copying it is cheaper than a checkpoint.
        let _one = inner
            .checkpoint_lock
            .lock()
            .map_err(|_| StorageError::Io("checkpoint lock poisoned".into()))?;
        let sled = inner.tree.sled.get()?;
        let at = checkpoint::read_position(&sled.tree)?;
        let state = target.join(STATE_FILE);
        let (bytes, hash) = snapshot::write(&sled.tree, at, &state)?;
        drop(sled);
        let mut files = vec![FileCopy {
            path: STATE_FILE.into(),
            bytes,
            blake3: hex(&hash),
        }];
        crash_point("backup_state_written");
        // The segments as they stand now; their frames up to here are
        // durable, and no checkpoint can delete them while this runs.
        let segments = match inner.journal.lock() {
            Ok(j) => j
                .as_ref()
                .map(|j| j.segments().to_vec())
                .unwrap_or_default(),
            Err(_) => return Err(StorageError::Io("journal lock poisoned".into())),
        };
        let dir = target.join(JOURNAL_DIR);
        std::fs::create_dir(&dir).map_err(io_at(&dir))?;
        let mut position = at.0;
        for s in &segments {
            let name = journal::segment_name(s.first);
            let hash = copy_prefix(&inner.journal_dir.join(&name), &dir.join(&name), s.bytes)?;
            files.push(FileCopy {
                path: format!("{JOURNAL_DIR}/{name}"),
                bytes: s.bytes,
                blake3: hex(&hash),
            });
            position = position.max(s.last);
        }
        sync_dir(&dir)?;
        sync_dir(target)?;
        Ok(Copied {
            position,
            checkpoint: at.0,
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
