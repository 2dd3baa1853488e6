//! Cluster mode: the state a node's checkpoint holds, as one file, so that a
//! node can start after the log was trimmed below what it holds (a new
//! node, or one that was down for long): it installs the latest snapshot
//! and follows the log from the snapshot's position.
//!
//! ```text
//! b"QRGSNAP1"
//! u64 LE  the log position the state is at;   u64 LE  the last event seq
//! records, each: u8 1, u32 LE key length, key, u32 LE value length, value
//! u8 0
//! 32 bytes: blake3 of everything before
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{checkpoint, Inner, Result, StorageError};

const MAGIC: &[u8; 8] = b"QRGSNAP1";

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::Io(format!("{}: {e}", path.display()))
}

/// Hashes what passes through it.
struct Hashed<W> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Write the state at this node's checkpoint into `path` (a checkpoint
/// runs first); returns the log position it is at. Checkpoints wait
/// meanwhile, so sled holds exactly that position's state.
pub(super) fn export(inner: &Inner, path: &Path) -> Result<u64> {
    checkpoint::run(inner)?;
    let _one = inner
        .checkpoint_lock
        .lock()
        .map_err(|_| StorageError::Io("checkpoint lock poisoned".into()))?;
    let sled = inner.tree.sled.get()?;
    let (pos, last_event) = checkpoint::read_position(&sled.tree)?;
    // One left by an export a crash interrupted.
    let _ = std::fs::remove_file(path);
    write(&sled.tree, (pos, last_event), &BTreeMap::new(), path)?;
    Ok(pos)
}

/// Write every record of `tree` (at `(position, last event seq)`) into a
/// new file at `path` (mode 0600), made durable: returns its size and the
/// blake3 of the whole file. The records in `overrides` are written as it
/// gives them (`None`: left out) instead of as `tree` holds them.
pub(super) fn write(
    tree: &sled::Tree,
    (pos, last_event): (u64, u64),
    overrides: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    path: &Path,
) -> Result<(u64, [u8; 32])> {
    let err = io(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(&err)?;
    // Outer: the whole file, for a backup's manifest; inner: the body, for
    // the trailer the snapshot carries itself.
    let mut w = Hashed {
        inner: Hashed {
            inner: BufWriter::new(file),
            hash: blake3::Hasher::new(),
        },
        hash: blake3::Hasher::new(),
    };
    w.write_all(MAGIC).map_err(&err)?;
    w.write_all(&pos.to_le_bytes()).map_err(&err)?;
    w.write_all(&last_event.to_le_bytes()).map_err(&err)?;
    fn record(w: &mut impl Write, k: &[u8], v: &[u8]) -> std::io::Result<()> {
        w.write_all(&[1])?;
        w.write_all(&(k.len() as u32).to_le_bytes())?;
        w.write_all(k)?;
        w.write_all(&(v.len() as u32).to_le_bytes())?;
        w.write_all(v)
    }
    for kv in tree.iter() {
        let (k, v) = kv?;
        if !overrides.contains_key(&*k) {
            record(&mut w, &k, &v).map_err(&err)?;
        }
    }
    for (k, v) in overrides {
        if let Some(v) = v {
            record(&mut w, k, v).map_err(&err)?;
        }
    }
    w.write_all(&[0]).map_err(&err)?;
    let body = w.hash.finalize();
    let mut whole = w.inner.hash;
    whole.update(body.as_bytes());
    let mut f = w
        .inner
        .inner
        .into_inner()
        .map_err(|e| StorageError::Io(format!("{}: {e}", path.display())))?;
    f.write_all(body.as_bytes()).map_err(&err)?;
    f.sync_all().map_err(&err)?;
    let size = f.metadata().map_err(&err)?.len();
    Ok((size, *whole.finalize().as_bytes()))
}

/// Read the snapshot at `path`, checking it whole first, into `tree`
/// (empty): returns its log position.
pub(super) fn install(path: &Path, tree: &sled::Tree) -> Result<u64> {
    let err = io(path);
    let corrupt = |why: &str| StorageError::Corrupt(path.display().to_string(), why.into());
    // The whole file's hash first: nothing of a damaged snapshot goes in.
    let len = std::fs::metadata(path).map_err(&err)?.len();
    if len < 8 + 16 + 1 + 32 {
        return Err(corrupt("too short"));
    }
    let mut r = Hashed {
        inner: BufReader::new(File::open(path).map_err(&err)?).take(len - 32),
        hash: blake3::Hasher::new(),
    };
    std::io::copy(&mut r, &mut std::io::sink()).map_err(&err)?;
    let mut stored = [0u8; 32];
    r.inner.into_inner().read_exact(&mut stored).map_err(&err)?;
    if *r.hash.finalize().as_bytes() != stored {
        return Err(corrupt("its hash does not match"));
    }
    let mut r = BufReader::new(File::open(path).map_err(&err)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(&err)?;
    if &magic != MAGIC {
        return Err(corrupt("not a qrgate snapshot"));
    }
    let u64_of = |r: &mut BufReader<File>| -> Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(&err)?;
        Ok(u64::from_le_bytes(b))
    };
    let pos = u64_of(&mut r)?;
    let _last_event = u64_of(&mut r)?;
    let read_bytes = |r: &mut BufReader<File>| -> Result<Vec<u8>> {
        let mut n = [0u8; 4];
        r.read_exact(&mut n).map_err(&err)?;
        let mut b = vec![0u8; u32::from_le_bytes(n) as usize];
        r.read_exact(&mut b).map_err(&err)?;
        Ok(b)
    };
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(&err)?;
        match tag[0] {
            0 => break,
            1 => {
                let k = read_bytes(&mut r)?;
                let v = read_bytes(&mut r)?;
                batch.insert(k, v);
                in_batch += 1;
                if in_batch == 8192 {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            _ => return Err(corrupt("unknown record tag")),
        }
    }
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(pos)
}
