//! The journal: the store of record. An append-only log of segment files
//! in `<data>/journal/`, each named by the position of its first frame
//! (20 digits, `.log`). One commit round is one frame, written with one
//! `pwrite` and made durable with one `fdatasync` before anyone is answered.
//!
//! A frame is a 16-byte header and its payload:
//!
//! | bytes | field                                              |
//! |-------|----------------------------------------------------|
//! | 0..4  | payload length (u32 LE)                            |
//! | 4..8  | CRC-32C of bytes 8.. (position and payload)        |
//! | 8..16 | position (u64 LE): 1 for the first frame ever, +1 each |
//!
//! Recovery reads every segment in order. A frame that does not check out
//! at the end of the last segment (nothing valid after it) is a torn write
//! of a round nobody was answered for: the segment is cut back to the last
//! whole frame. A bad frame anywhere else, or a gap in the positions,
//! refuses to open with the file and offset: data is never skipped silently.
//!
//! Errors: a failed write (ENOSPC, EIO, a short write) is cut back to the
//! last whole frame and reported as [`AppendError::Refused`]; the journal
//! stays usable. A failed `fdatasync` is [`AppendError::Fatal`]: the kernel
//! may have dropped the dirty pages, so the caller must stop writing until a
//! restart (never retry an fsync and carry on).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const HEADER: usize = 16;
/// The largest payload recovery accepts (a round is capped far below).
const MAX_FRAME: u64 = 1 << 30;

/// One segment file as the journal uses it; a seam for fault injection.
pub trait SegmentFile: Send + Sync {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn read_all(&self) -> io::Result<Vec<u8>>;
}

/// The file system under the journal; a seam for fault injection.
pub trait JournalFs: Send + Sync {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn SegmentFile>>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
pub struct RealFs;

struct RealFile(std::fs::File);

impl SegmentFile for RealFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut v = Vec::new();
        (&self.0).read_to_end(&mut v)?;
        Ok(v)
    }
}

impl JournalFs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn SegmentFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing of the round is in the journal; later rounds may succeed.
    #[error("journal write refused: {0}")]
    Refused(io::Error),
    /// The journal cannot be trusted to hold what was written: stop.
    #[error("journal fdatasync failed: {0}")]
    Fatal(io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("journal I/O error on {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("journal corrupt: {0}")]
    Corrupt(String),
    #[error("replaying the journal: {0}")]
    Replay(String),
}

/// What the journal knows of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Position of its first frame (its name).
    pub first: u64,
    /// Position of its last frame; `first - 1` when empty.
    pub last: u64,
    /// Highest event seq in its frames (0: none), so segments holding
    /// events the outbox has not consumed are kept.
    pub max_event: u64,
    /// Bytes of whole frames.
    pub bytes: u64,
    /// Bytes of the file written (frames, then zeros): appends below this
    /// overwrite blocks the file already has, so their `fdatasync` has no
    /// file size or block allocation to commit.
    pub allocated: u64,
}

/// How far ahead of the frames a segment is zero-filled at a time.
const GROW: u64 = 4 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

pub struct Journal {
    dir: PathBuf,
    fs: Arc<dyn JournalFs>,
    active: Box<dyn SegmentFile>,
    segments: Vec<Segment>,
    segment_bytes: u64,
}

fn name(first: u64) -> String {
    format!("{first:020}.log")
}

fn crc(pos_and_payload: &[u8]) -> u32 {
    crc32c::crc32c(pos_and_payload)
}

/// A frame buffer with room for the header; the payload is appended to it.
pub fn frame_buffer(capacity: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + capacity);
    b.resize(HEADER, 0);
    b
}

/// Why a frame at some offset is not a whole, valid frame.
enum Bad {
    Short,
    Invalid(String),
}

/// The frame at `off`, if whole and valid with position `want`
/// (any position when `want` is None): (position, payload range end).
fn parse_at(buf: &[u8], off: usize, want: Option<u64>) -> Result<(u64, usize), Bad> {
    let Some(h) = buf.get(off..off + HEADER) else {
        return Err(Bad::Short);
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut p = [0u8; 8];
    p.copy_from_slice(&h[8..16]);
    let pos = u64::from_le_bytes(p);
    if len > MAX_FRAME {
        return Err(Bad::Invalid(format!("implausible frame length {len}")));
    }
    let end = off + HEADER + len as usize;
    let Some(body) = buf.get(off + 8..end) else {
        return Err(Bad::Short);
    };
    if crc(body) != sum {
        return Err(Bad::Invalid("checksum mismatch".into()));
    }
    if let Some(w) = want {
        if pos != w {
            return Err(Bad::Invalid(format!(
                "position {pos} where {w} was expected"
            )));
        }
    }
    Ok((pos, end))
}

/// How the frames of a segment end.
enum End {
    /// Whole frames, then zeros (filled ahead) or the end of the file.
    Clean,
    /// A frame that does not check out at `offset`: `torn` when it is the
    /// end of the last segment with nothing valid after it (a write cut
    /// short), else damage.
    Bad {
        offset: usize,
        why: String,
        torn: bool,
    },
}

/// Walk the frames of one segment's bytes from position `first`, handing
/// each to `frame(position, offset, payload)` (whose error stops the walk):
/// returns the offset after the last whole frame, its position (`first - 1`
/// if none) and how the frames end.
fn walk<E>(
    buf: &[u8],
    first: u64,
    is_last: bool,
    mut frame: impl FnMut(u64, usize, &[u8]) -> Result<(), E>,
) -> Result<(usize, u64, End), E> {
    let mut want = first;
    let mut off = 0usize;
    while off < buf.len() {
        // Zeros to the end: the part filled ahead, not yet written.
        if buf[off..].iter().all(|b| *b == 0) {
            break;
        }
        match parse_at(buf, off, Some(want)) {
            Ok((pos, end)) => {
                frame(pos, off, &buf[off + HEADER..end])?;
                want = pos + 1;
                off = end;
            }
            Err(bad) => {
                let why = match bad {
                    Bad::Short => "a frame cut short".to_string(),
                    Bad::Invalid(w) => w,
                };
                let torn = is_last && !valid_frame_after(buf, off + 1, want);
                return Ok((
                    off,
                    want - 1,
                    End::Bad {
                        offset: off,
                        why,
                        torn,
                    },
                ));
            }
        }
    }
    Ok((off, want - 1, End::Clean))
}

impl Journal {
    /// Open the journal in `dir` (created if missing) and hand every frame to
    /// `replay` in order: `replay(position, payload)` returns the highest
    /// event seq the frame holds (0: none). `after` is the checkpoint's
    /// position: frames up to it may have been deleted, frames after it must
    /// all be here. Returns the journal ready to append after the last frame.
    pub fn open(
        dir: &Path,
        fs: Arc<dyn JournalFs>,
        segment_bytes: u64,
        after: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<u64, String>,
    ) -> Result<Journal, OpenError> {
        let io_err = |path: &Path, err: io::Error| OpenError::Io {
            path: path.display().to_string(),
            err,
        };
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let firsts = segment_firsts(dir).map_err(|e| io_err(dir, e))?;
        let mut segments: Vec<Segment> = Vec::new();
        let mut expect: Option<u64> = None;
        let mut last_file: Option<Box<dyn SegmentFile>> = None;
        for (n, first) in firsts.iter().copied().enumerate() {
            let path = dir.join(name(first));
            let file = fs.open(&path, false).map_err(|e| io_err(&path, e))?;
            let buf = file.read_all().map_err(|e| io_err(&path, e))?;
            let is_last = n + 1 == firsts.len();
            let mut want = expect.unwrap_or(first);
            if want != first {
                return Err(OpenError::Corrupt(format!(
                    "{} starts at position {first} but the segment before it ends at {}",
                    path.display(),
                    want - 1
                )));
            }
            if expect.is_none() && first > after + 1 {
                return Err(OpenError::Corrupt(format!(
                    "the checkpoint is at position {after} but the journal starts at {first} ({}): frames are missing",
                    path.display()
                )));
            }
            let mut seg = Segment {
                first,
                last: first - 1,
                max_event: 0,
                bytes: 0,
                allocated: buf.len() as u64,
            };
            let (off, last, ending) = walk(&buf, first, is_last, |pos, off, payload| {
                let ev = replay(pos, payload).map_err(|e| {
                    OpenError::Replay(format!(
                        "{} offset {off} (position {pos}): {e}",
                        path.display()
                    ))
                })?;
                seg.max_event = seg.max_event.max(ev);
                Ok(())
            })?;
            seg.last = last;
            want = last + 1;
            if let End::Bad { offset, why, torn } = ending {
                if !torn {
                    let place = if is_last {
                        "whole frames follow it"
                    } else {
                        "later segments follow it"
                    };
                    return Err(OpenError::Corrupt(format!(
                        "{} offset {offset}: {why}; {place}, so this is not a torn write (refusing to skip data)",
                        path.display()
                    )));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    cut = buf.len() - offset,
                    "journal: torn tail ({why}); cutting back to the last whole frame"
                );
                file.set_len(offset as u64).map_err(|e| io_err(&path, e))?;
                file.sync_data().map_err(|e| io_err(&path, e))?;
                seg.allocated = offset as u64;
            }
            seg.bytes = off as u64;
            expect = Some(want);
            segments.push(seg);
            if is_last {
                last_file = Some(file);
            }
        }
        if let Some(e) = expect {
            if e <= after {
                return Err(OpenError::Corrupt(format!(
                    "the journal in {} ends at position {} but the checkpoint is at {after}",
                    dir.display(),
                    e - 1
                )));
            }
        }
        let next = after + 1;
        let active = match last_file {
            Some(f) => f,
            None => {
                let path = dir.join(name(next));
                let f = fs.open(&path, true).map_err(|e| io_err(&path, e))?;
                fs.sync_dir(dir).map_err(|e| io_err(dir, e))?;
                segments.push(Segment {
                    first: next,
                    last: next - 1,
                    max_event: 0,
                    bytes: 0,
                    allocated: 0,
                });
                f
            }
        };
        Ok(Journal {
            dir: dir.to_path_buf(),
            fs,
            active,
            segments,
            segment_bytes,
        })
    }

    /// The position the next frame gets.
    pub fn next_position(&self) -> u64 {
        self.segments.last().map(|s| s.last + 1).unwrap_or(1)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Seal the frame in `buf` (built with [`frame_buffer`]) at the next
    /// position, write it and fdatasync it. Returns its position.
    pub fn append(&mut self, buf: &mut [u8], max_event: u64) -> Result<u64, AppendError> {
        let pos = self.next_position();
        let len = (buf.len() - HEADER) as u32;
        buf[0..4].copy_from_slice(&len.to_le_bytes());
        buf[8..16].copy_from_slice(&pos.to_le_bytes());
        let sum = crc(&buf[8..]);
        buf[4..8].copy_from_slice(&sum.to_le_bytes());
        let full = self
            .segments
            .last()
            .is_some_and(|s| s.bytes > 0 && s.bytes + buf.len() as u64 > self.segment_bytes);
        if full {
            self.roll(pos).map_err(AppendError::Refused)?;
        }
        let Some(seg) = self.segments.last_mut() else {
            return Err(AppendError::Refused(io::Error::other("no active segment")));
        };
        let off = seg.bytes;
        let end = off + buf.len() as u64;
        if end > seg.allocated {
            // Zero-fill ahead: this round's fdatasync commits the new size
            // and blocks once, and the rounds after it only overwrite.
            let target = end.max(seg.allocated + GROW.min(self.segment_bytes));
            let mut at = seg.allocated;
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                if let Err(e) = self.active.write_at(&ZEROS[..n], at) {
                    // Zeros past the frames read as the end: nothing to undo.
                    seg.allocated = at;
                    return Err(AppendError::Refused(e));
                }
                at += n as u64;
            }
            seg.allocated = target;
        }
        if let Err(e) = self.active.write_at(buf, off) {
            // Cut back whatever part of the frame reached the file; if even
            // that fails, the frame is torn at the tail and recovery cuts it.
            if let Err(cut) = self.active.set_len(off) {
                tracing::error!(error = %cut, "journal: cannot cut a failed write back");
            }
            seg.allocated = off;
            return Err(AppendError::Refused(e));
        }
        self.active.sync_data().map_err(AppendError::Fatal)?;
        seg.bytes += buf.len() as u64;
        seg.last = pos;
        seg.max_event = seg.max_event.max(max_event);
        Ok(pos)
    }

    /// Start a new segment whose first frame will be `first`.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        let path = self.dir.join(name(first));
        let f = match self.fs.open(&path, true) {
            Ok(f) => f,
            // A segment file left by an earlier failed roll-over (empty).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = self.fs.open(&path, false)?;
                f.set_len(0)?;
                f
            }
            Err(e) => return Err(e),
        };
        self.fs.sync_dir(&self.dir)?;
        super::crash_point("segment_created");
        self.active = f;
        self.segments.push(Segment {
            first,
            last: first - 1,
            max_event: 0,
            bytes: 0,
            allocated: 0,
        });
        Ok(())
    }

    /// Forget the segments that only hold frames at or below `upto` whose
    /// events are all at or below `consumed` (never the active segment),
    /// oldest first, and return their paths for the caller to remove
    /// (oldest first, then [`sync_dir`]) outside the journal's lock.
    pub fn detach_through(&mut self, upto: u64, consumed: u64) -> Vec<PathBuf> {
        let n = self.segments.len().saturating_sub(1);
        let mut gone = 0;
        while gone < n {
            let s = &self.segments[gone];
            if s.last > upto || s.max_event > consumed {
                break;
            }
            gone += 1;
        }
        self.segments
            .drain(..gone)
            .map(|s| self.dir.join(name(s.first)))
            .collect()
    }
}

/// The segment files of a journal dir by their first position, in order.
fn segment_firsts(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let file = entry?.file_name();
        let Some(stem) = file.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push(first);
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// The file name of the segment whose first frame is `first`.
pub fn segment_name(first: u64) -> String {
    name(first)
}

/// A problem a read-only scan found, named by file and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanFinding {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

/// What a read-only scan of a journal dir found ([`scan`]).
#[derive(Debug, Default)]
pub struct Scan {
    /// Each segment file and what it holds (whole frames up to the first
    /// problem in it).
    pub segments: Vec<(PathBuf, Segment)>,
    /// Frames that do not check out (or that `each` refused), and gaps.
    pub findings: Vec<ScanFinding>,
    /// A torn write at the very end (what recovery cuts back at the next
    /// start: a round nobody was answered for), not a finding.
    pub torn_tail: Option<ScanFinding>,
}

impl Scan {
    /// Position of the first frame, if any.
    pub fn first(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|(_, s)| s.last >= s.first)
            .map(|(_, s)| s.first)
    }

    /// Position of the last whole frame (0: none).
    pub fn last(&self) -> u64 {
        self.segments.iter().map(|(_, s)| s.last).max().unwrap_or(0)
    }
}

/// Read every segment in `dir` without changing anything, checking each
/// frame (checksum, length, position continuing the one before) and
/// handing the valid ones to `each(position, payload)`, whose error is a
/// finding at that frame. Unlike [`Journal::open`] it goes on past a
/// problem (from the next segment), so that one run names them all. A
/// missing dir is an empty journal.
pub fn scan(
    dir: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> io::Result<Scan> {
    let mut out = Scan::default();
    let firsts = match segment_firsts(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut expect: Option<u64> = None;
    for (n, first) in firsts.iter().copied().enumerate() {
        let path = dir.join(name(first));
        let buf = std::fs::read(&path)?;
        let is_last = n + 1 == firsts.len();
        let finding = |offset: usize, what: String| ScanFinding {
            file: path.clone(),
            offset: offset as u64,
            what,
        };
        if let Some(want) = expect {
            if want != first {
                out.findings.push(finding(
                    0,
                    format!(
                        "starts at position {first} but the segment before it ends at {}",
                        want - 1
                    ),
                ));
            }
        }
        let mut seg = Segment {
            first,
            last: first.saturating_sub(1),
            max_event: 0,
            bytes: 0,
            allocated: buf.len() as u64,
        };
        let Ok((off, last, ending)) = walk(&buf, first, is_last, |pos, off, payload| {
            if let Err(e) = each(pos, payload) {
                out.findings
                    .push(finding(off, format!("frame at position {pos}: {e}")));
            }
            Ok::<(), std::convert::Infallible>(())
        });
        seg.last = last;
        let mut broken = false;
        match ending {
            End::Bad {
                offset,
                why,
                torn: true,
            } => out.torn_tail = Some(finding(offset, why)),
            End::Bad { offset, why, .. } => {
                out.findings.push(finding(
                    offset,
                    format!(
                        "the frame at position {} does not check out: {why}",
                        last + 1
                    ),
                ));
                broken = true;
            }
            End::Clean => {}
        }
        seg.bytes = off as u64;
        // After a bad frame the next segment's start is not a second finding.
        expect = (!broken).then_some(seg.last + 1);
        out.segments.push((path, seg));
    }
    Ok(out)
}

/// fsync a directory (after creating or removing a segment in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether a whole, valid frame at position `want` or later starts anywhere
/// at or after `from` (a flipped byte rather than a torn tail).
fn valid_frame_after(buf: &[u8], from: usize, want: u64) -> bool {
    (from..buf.len().saturating_sub(HEADER - 1)).any(|off| {
        let mut p = [0u8; 8];
        p.copy_from_slice(&buf[off + 8..off + 16]);
        let pos = u64::from_le_bytes(p);
        pos >= want && pos < want.saturating_add(1 << 32) && parse_at(buf, off, None).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(j: &mut Journal, payloads: &[&[u8]]) {
        for p in payloads {
            let mut b = frame_buffer(p.len());
            b.extend_from_slice(p);
            j.append(&mut b, 0).expect("append");
        }
    }

    type Frames = Vec<(u64, Vec<u8>)>;

    fn reopen(dir: &Path, after: u64) -> Result<(Journal, Frames), OpenError> {
        let mut seen = Vec::new();
        let j = Journal::open(dir, Arc::new(RealFs), 1 << 20, after, |pos, p| {
            seen.push((pos, p.to_vec()));
            Ok(0)
        })?;
        Ok((j, seen))
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.pop().unwrap()
    }

    #[test]
    fn frames_come_back_in_order_and_positions_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, seen) = reopen(dir.path(), 0).unwrap();
        assert!(seen.is_empty());
        frames(&mut j, &[b"one", b"two", b""]);
        drop(j);
        let (mut j, seen) = reopen(dir.path(), 0).unwrap();
        assert_eq!(
            seen,
            vec![(1, b"one".to_vec()), (2, b"two".to_vec()), (3, Vec::new())]
        );
        frames(&mut j, &[b"four"]);
        drop(j);
        assert_eq!(reopen(dir.path(), 0).unwrap().1.len(), 4);
    }

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = reopen(dir.path(), 0).unwrap();
        frames(&mut j, &[b"kept"]);
        drop(j);
        let seg = only_segment(dir.path());
        // The file is zero-filled ahead of its frames.
        assert!(std::fs::metadata(&seg).unwrap().len() > (HEADER + 4) as u64);
        // A frame cut short after the first: its first 20 bytes, then zeros.
        let mut torn = frame_buffer(10);
        torn.extend_from_slice(b"torn frame");
        torn[0..4].copy_from_slice(&10u32.to_le_bytes());
        torn[8..16].copy_from_slice(&2u64.to_le_bytes());
        let sum = crc(&torn[8..]);
        torn[4..8].copy_from_slice(&sum.to_le_bytes());
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&torn[..20], (HEADER + 4) as u64).unwrap();
        drop(f);
        let (mut j, seen) = reopen(dir.path(), 0).unwrap();
        assert_eq!(seen, vec![(1, b"kept".to_vec())]);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            (HEADER + 4) as u64,
            "cut back"
        );
        // And appends go on from there, zero-filling again.
        frames(&mut j, &[b"next"]);
        drop(j);
        let (_, seen) = reopen(dir.path(), 0).unwrap();
        assert_eq!(seen.last().unwrap(), &(2, b"next".to_vec()));
        // Garbage past the zeros (not at the frames' end) is torn too.
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"\x07garbage", len).unwrap();
        drop(f);
        let (_, seen) = reopen(dir.path(), 0).unwrap();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_flipped_byte_mid_segment_refuses_to_open_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = reopen(dir.path(), 0).unwrap();
        frames(&mut j, &[b"first", b"second", b"third"]);
        drop(j);
        let seg = only_segment(dir.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = HEADER + 5;
        bytes[second + HEADER + 2] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        let err = reopen(dir.path(), 0).err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains(&format!("offset {second}")), "{msg}");
        assert!(msg.contains(&*seg.to_string_lossy()), "{msg}");
    }

    #[test]
    fn a_read_only_scan_names_every_bad_frame_and_tells_a_torn_tail_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), Arc::new(RealFs), 64, 0, |_, _| Ok(0)).unwrap();
        for n in 0..4u64 {
            let mut b = frame_buffer(40);
            b.extend_from_slice(&[n as u8; 40]);
            j.append(&mut b, 0).unwrap();
        }
        drop(j);
        let clean = scan(dir.path(), |_, _| Ok(())).unwrap();
        assert!(clean.findings.is_empty() && clean.torn_tail.is_none());
        assert_eq!(
            (clean.first(), clean.last(), clean.segments.len()),
            (Some(1), 4, 4)
        );
        let segs: Vec<PathBuf> = clean.segments.iter().map(|(p, _)| p.clone()).collect();
        let flip = |p: &Path, at: usize| {
            let mut b = std::fs::read(p).unwrap();
            b[at] ^= 0x10;
            std::fs::write(p, b).unwrap();
        };
        // A flipped byte in the second segment and a torn last frame.
        flip(&segs[1], HEADER + 3);
        flip(&segs[3], HEADER + 3);
        let before: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let mut seen = Vec::new();
        let s = scan(dir.path(), |pos, _| {
            seen.push(pos);
            if pos == 3 {
                return Err("refused".into());
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![1, 3], "goes on past a bad frame");
        assert_eq!(s.findings.len(), 2, "{:?}", s.findings);
        assert_eq!((&s.findings[0].file, s.findings[0].offset), (&segs[1], 0));
        assert!(s.findings[0].what.contains("checksum"), "{:?}", s.findings);
        assert!(s.findings[1].what.contains("refused"), "{:?}", s.findings);
        let torn = s.torn_tail.expect("torn tail");
        assert_eq!((&torn.file, torn.offset), (&segs[3], 0));
        let after: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(before, after, "nothing changed");
    }

    #[test]
    fn segments_roll_over_and_are_deleted_only_when_checkpointed_and_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), Arc::new(RealFs), 64, 0, |_, _| Ok(0)).unwrap();
        for n in 0..6u64 {
            let mut b = frame_buffer(40);
            b.extend_from_slice(&[n as u8; 40]);
            j.append(&mut b, n + 1).unwrap();
        }
        assert_eq!(
            j.segments().len(),
            6,
            "one 56-byte frame per 64-byte segment"
        );
        let mut delete = |upto, consumed| {
            let gone = j.detach_through(upto, consumed);
            for p in &gone {
                std::fs::remove_file(p).unwrap();
            }
            gone.len()
        };
        assert_eq!(delete(3, 1), 1, "events 2.. not consumed");
        assert_eq!(delete(3, 10), 2);
        assert_eq!(delete(100, 100), 2, "never the active one");
        drop(j);
        let mut seen = Vec::new();
        let j = Journal::open(dir.path(), Arc::new(RealFs), 64, 5, |pos, _| {
            seen.push(pos);
            Ok(0)
        })
        .unwrap();
        assert_eq!(seen, vec![6]);
        assert_eq!(j.next_position(), 7);
        drop(j);
        // A checkpoint older than the oldest frame kept: frames are missing.
        let err = Journal::open(dir.path(), Arc::new(RealFs), 64, 2, |_, _| Ok(0));
        assert!(matches!(err, Err(OpenError::Corrupt(_))));
    }
}
