//! sled, held so that it can be closed and opened again while the server
//! runs.
//!
//! sled 0.34 writes its recovery snapshot only when it opens, so each open
//! scans everything sled wrote since the previous one (about 2.4 s a GB on
//! this class of machine): a server that ran for days would take minutes
//! to start after a crash. Reopening once the checkpoints have written
//! `storage.sled_reopen_mb` bounds that scan, and with it the next start.
//!
//! Every user of sled holds an `Arc<Sled>` for as long as it uses sled
//! (an iterator keeps its own), so a reopen knows when nobody does: it
//! stops handing out the handle, waits (briefly) for the holders to
//! finish, closes sled and opens it again. A reopen that cannot drain in
//! time puts the old handle back and is tried at a later checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Result, StorageError};

/// sled's database, its one tree, and its log file.
pub(super) struct Sled {
    db: sled::Db,
    pub(super) tree: sled::Tree,
    /// sled's `flush` makes its log stable with `sync_file_range`, which
    /// neither flushes the drive's cache nor commits the grown file size;
    /// an `fdatasync` of the file after each flush does. `None` for a
    /// temporary sled.
    log: Option<File>,
}

impl Sled {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Sled> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let tree = db.open_tree("state")?;
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| StorageError::Io(format!("cannot open {}: {e}", log_path.display())))?;
        Ok(Sled {
            db,
            tree,
            log: Some(log),
        })
    }

    /// A sled that lives in memory (`/dev/shm` where there is one) and
    /// leaves nothing behind: its directory is removed as soon as it is
    /// open (its files stay readable through the open descriptors), so a
    /// process that exits without dropping it (actors hold stores until the
    /// end) leaves no files. Only for stores that never checkpoint, since
    /// sled cannot create new files there.
    fn temporary(cache_bytes: u64) -> Result<Sled> {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "qrgate-mem-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let db = sled::Config::new()
            .path(&dir)
            .temporary(true)
            .cache_capacity(cache_bytes)
            .open();
        let removed = std::fs::remove_dir_all(&dir);
        let db = db?;
        removed.map_err(|e| StorageError::Io(format!("cannot remove {}: {e}", dir.display())))?;
        let tree = db.open_tree("state")?;
        Ok(Sled {
            db,
            tree,
            log: None,
        })
    }

    /// Everything written to sled so far is on disk.
    pub(super) fn durable(&self) -> Result<()> {
        self.db.flush()?;
        match &self.log {
            Some(log) => log
                .sync_data()
                .map_err(|e| StorageError::Io(format!("fdatasync of sled's log failed: {e}"))),
            None => Ok(()),
        }
    }
}

struct State {
    current: Option<Arc<Sled>>,
    reopening: bool,
}

/// The one sled of a store, reopenable.
pub(super) struct SledSlot {
    /// `None`: a temporary sled, never reopened.
    dir: Option<PathBuf>,
    cache_bytes: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// Bytes the checkpoints gave sled since it was last opened.
    written: AtomicU64,
}

fn poisoned() -> StorageError {
    StorageError::Io("sled slot lock poisoned".into())
}

impl SledSlot {
    pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<SledSlot> {
        let sled = Sled::open(dir, cache_bytes)?;
        Ok(Self::holding(sled, Some(dir.to_path_buf()), cache_bytes))
    }

    /// A temporary sled (see [`Sled::temporary`]).
    pub(super) fn temporary(cache_bytes: u64) -> Result<SledSlot> {
        Ok(Self::holding(
            Sled::temporary(cache_bytes)?,
            None,
            cache_bytes,
        ))
    }

    fn holding(sled: Sled, dir: Option<PathBuf>, cache_bytes: u64) -> SledSlot {
        SledSlot {
            dir,
            cache_bytes,
            state: Mutex::new(State {
                current: Some(Arc::new(sled)),
                reopening: false,
            }),
            changed: Condvar::new(),
            written: AtomicU64::new(0),
        }
    }

    /// The handle; waits while a reopen runs. After a reopen that failed,
    /// tries to open sled again.
    pub(super) fn get(&self) -> Result<Arc<Sled>> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        while s.reopening {
            s = self.changed.wait(s).map_err(|_| poisoned())?;
        }
        if let Some(sled) = &s.current {
            return Ok(Arc::clone(sled));
        }
        let Some(dir) = &self.dir else {
            return Err(StorageError::Io("the temporary sled is gone".into()));
        };
        let sled = Arc::new(Sled::open(dir, self.cache_bytes)?);
        s.current = Some(Arc::clone(&sled));
        Ok(sled)
    }

    /// The handle if no reopen is running, without waiting.
    pub(super) fn try_get(&self) -> Option<Arc<Sled>> {
        let s = self.state.lock().ok()?;
        if s.reopening {
            return None;
        }
        s.current.clone()
    }

    /// Count bytes a checkpoint gave sled.
    pub(super) fn wrote(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Close sled and open it again (which writes its snapshot). Waits up
    /// to `drain` for the handle's other holders; `Ok(false)` if they did
    /// not finish in time (nothing changed). An error leaves no handle:
    /// the next [`get`](Self::get) tries to open sled again.
    pub(super) fn reopen(&self, drain: Duration) -> Result<bool> {
        let Some(dir) = self.dir.clone() else {
            return Ok(false);
        };
        let old = {
            let mut s = self.state.lock().map_err(|_| poisoned())?;
            if s.reopening {
                return Ok(false);
            }
            let Some(old) = s.current.take() else {
                return Ok(false);
            };
            s.reopening = true;
            old
        };
        let started = Instant::now();
        while Arc::strong_count(&old) > 1 && started.elapsed() < drain {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Arc::strong_count(&old) > 1 {
            self.finish(Some(old))?;
            return Ok(false);
        }
        // Flushes and closes sled (its threads and its file lock go with it).
        drop(old);
        let opened = started.elapsed();
        let mut result = Err(StorageError::Io("sled did not reopen".into()));
        // The file lock can outlive the handle by a moment.
        for _ in 0..50 {
            result = Sled::open(&dir, self.cache_bytes);
            match &result {
                Err(StorageError::Io(m)) if m.contains("lock") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
        match result {
            Ok(sled) => {
                self.written.store(0, Ordering::Relaxed);
                self.finish(Some(Arc::new(sled)))?;
                tracing::info!(
                    drain_ms = opened.as_millis(),
                    ms = started.elapsed().as_millis(),
                    "sled reopened"
                );
                Ok(true)
            }
            Err(e) => {
                self.finish(None)?;
                Err(e)
            }
        }
    }

    fn finish(&self, current: Option<Arc<Sled>>) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.current = current;
        s.reopening = false;
        self.changed.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_waits_for_holders_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SledSlot::open(dir.path(), 1 << 20).unwrap();
        let s = slot.get().unwrap();
        for i in 0..1000u32 {
            s.tree.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
        }
        s.durable().unwrap();
        slot.wrote(1000);
        // A holder (with an open iterator) that does not finish: nothing
        // changes.
        let it = s.tree.iter();
        assert!(!slot.reopen(Duration::from_millis(20)).unwrap());
        assert_eq!(slot.written(), 1000);
        assert!(slot.try_get().is_some(), "the old handle is back");
        drop((it, s));
        // A holder that finishes while the reopen waits.
        let held = slot.get().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        assert!(slot.reopen(Duration::from_secs(5)).unwrap());
        release.join().unwrap();
        assert_eq!(slot.written(), 0);
        let s = slot.get().unwrap();
        assert_eq!(s.tree.len(), 1000);
        assert_eq!(s.tree.get(999u32.to_be_bytes()).unwrap().unwrap(), b"v");
    }

    #[test]
    fn readers_wait_for_a_reopen_and_then_see_the_new_sled() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Arc::new(SledSlot::open(dir.path(), 1 << 20).unwrap());
        slot.get().unwrap().tree.insert("k", "v").unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let slot = Arc::clone(&slot);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let s = slot.get().unwrap();
                        assert_eq!(s.tree.get("k").unwrap().unwrap(), b"v");
                    }
                })
            })
            .collect();
        let mut reopened = 0;
        for _ in 0..3 {
            if slot.reopen(Duration::from_secs(5)).unwrap() {
                reopened += 1;
            }
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(reopened, 3);
    }
}
