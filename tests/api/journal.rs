//! The journal under a file layer that fails on purpose: short writes, EIO
//! and ENOSPC on write, EIO on fsync. Nothing is acknowledged before its
//! fdatasync returns, a failed write refuses only its round, a failed fsync
//! stops every write until a restart, and nothing acknowledged is lost.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qrgate::domain::ids::UserId;
use qrgate::storage::journal::{JournalFs, RealFs, SegmentFile};
use qrgate::storage::{Storage, StorageError, StorageOptions, User, WriteSet};

#[derive(Default)]
struct Faults {
    /// The next writes fail with this error.
    write_error: Option<io::ErrorKind>,
    /// The next write reaches the file only half, then fails.
    short_write: bool,
    /// The next fsync fails.
    sync_error: bool,
    /// fsyncs wait until this is false.
    hold_sync: bool,
    syncs: usize,
}

#[derive(Clone, Default)]
struct FaultyFs(Arc<Mutex<Faults>>);

struct FaultyFile {
    real: Box<dyn SegmentFile>,
    faults: Arc<Mutex<Faults>>,
}

impl SegmentFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (err, short) = {
            let mut f = self.faults.lock().unwrap();
            (f.write_error, std::mem::take(&mut f.short_write))
        };
        if short {
            self.real.write_at(&buf[..buf.len() / 2], offset)?;
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        match err {
            Some(kind) => Err(io::Error::from(kind)),
            None => self.real.write_at(buf, offset),
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        while self.faults.lock().unwrap().hold_sync {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut f = self.faults.lock().unwrap();
        f.syncs += 1;
        if std::mem::take(&mut f.sync_error) {
            return Err(io::Error::from_raw_os_error(5));
        }
        drop(f);
        self.real.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.real.set_len(len)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        self.real.read_all()
    }
}

impl JournalFs for FaultyFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FaultyFile {
            real: RealFs.open(path, create)?,
            faults: Arc::clone(&self.0),
        }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

fn open(dir: &Path, fs: Option<FaultyFs>) -> Storage {
    let opts = StorageOptions {
        fs: fs.map(|f| Arc::new(f) as Arc<dyn JournalFs>),
        ..StorageOptions::default()
    };
    super::helpers::open_storage(dir, [5; 32], opts)
}

fn user(n: u8) -> (WriteSet, UserId) {
    let id = UserId([n; 16]);
    let mut w = WriteSet::new();
    w.user_record(&User {
        id,
        name: format!("u{n}"),
        created_at: 0,
        kyc_verified: false,
        real_name: None,
    });
    (w, id)
}

async fn write(s: &Storage, n: u8) -> Result<UserId, StorageError> {
    let (w, id) = user(n);
    tokio::time::timeout(Duration::from_secs(10), s.commit(w))
        .await
        .expect("answered in time")?;
    Ok(id)
}

fn present(s: &Storage, n: u8) -> bool {
    s.user(UserId([n; 16])).expect("read").is_some()
}

#[actix_web::test]
async fn failed_writes_refuse_their_round_and_writes_resume_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let s = open(dir.path(), Some(fs.clone()));
    write(&s, 1).await.expect("a healthy write");
    for (n, fault) in [
        (2, Some(io::ErrorKind::StorageFull)),
        (3, Some(io::ErrorKind::Other)),
        (4, None),
    ] {
        {
            let mut f = fs.0.lock().unwrap();
            f.write_error = fault;
            f.short_write = fault.is_none();
        }
        assert!(write(&s, n).await.is_err(), "write {n} refused");
        assert!(!present(&s, n), "a refused write is not visible");
        assert!(s.write_refusal().is_some(), "healthz would say why");
        assert!(!s.is_poisoned(), "a failed write does not poison");
        fs.0.lock().unwrap().write_error = None;
        write(&s, n + 10)
            .await
            .expect("writes resume once the disk takes them");
        assert!(s.write_refusal().is_none());
    }
    s.shutdown().expect("close");
    // Every refused round left no trace: the journal opens clean.
    let s = open(dir.path(), None);
    for n in [1, 12, 13, 14] {
        assert!(present(&s, n), "acknowledged write {n} kept");
    }
    for n in [2, 3, 4] {
        assert!(!present(&s, n), "refused write {n} absent");
    }
    s.shutdown().expect("close");
}

#[actix_web::test]
async fn a_failed_fsync_poisons_until_a_restart_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let s = open(dir.path(), Some(fs.clone()));
    write(&s, 1).await.expect("a healthy write");
    fs.0.lock().unwrap().sync_error = true;
    assert!(write(&s, 2).await.is_err(), "not acknowledged");
    assert!(s.is_poisoned());
    // Never retried and carried on from: later writes are refused too,
    // though the file would now sync.
    assert!(write(&s, 3).await.is_err());
    let syncs = fs.0.lock().unwrap().syncs;
    assert!(write(&s, 4).await.is_err());
    assert_eq!(fs.0.lock().unwrap().syncs, syncs, "no fsync retried");
    assert!(s.write_refusal().is_some());
    // Reads keep being served.
    assert!(present(&s, 1));
    // A crash (no checkpoint): the acknowledged write is there.
    s.abandon();
    let s = open(dir.path(), None);
    assert!(present(&s, 1));
    assert!(!present(&s, 3) && !present(&s, 4));
    write(&s, 5).await.expect("a restart clears the poison");
    s.shutdown().expect("close");
}

#[actix_web::test]
async fn nothing_is_acknowledged_before_fdatasync_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let s = open(dir.path(), Some(fs.clone()));
    fs.0.lock().unwrap().hold_sync = true;
    let (w, _) = user(1);
    let mut pending = Box::pin(s.commit(w));
    let early = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
    assert!(early.is_err(), "answered while fdatasync had not returned");
    assert!(!present(&s, 1), "not visible before it is durable");
    fs.0.lock().unwrap().hold_sync = false;
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered once the fsync returned")
        .expect("durable");
    assert!(present(&s, 1));
    s.shutdown().expect("close");
}

/// Checkpoints move the overlay into sled and delete the segments they
/// cover; a restart after them (graceful or not) has everything.
#[actix_web::test]
async fn checkpoints_move_writes_into_sled_and_cut_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StorageOptions {
        segment_bytes: 4096,
        ..StorageOptions::default()
    };
    let s = super::helpers::open_storage(dir.path(), [5; 32], opts.clone());
    for n in 0..60 {
        write(&s, n).await.expect("write");
    }
    let (pos, _, segments, overlay) = s.journal_stats();
    assert!(segments > 2, "rolled over: {segments} segments");
    assert!(overlay > 0);
    assert_eq!(s.checkpoint().expect("checkpoint"), pos);
    let (_, _, after, overlay) = s.journal_stats();
    assert_eq!(after, 1, "covered segments deleted");
    assert_eq!(overlay, 0, "sled holds everything");
    for n in 60..70 {
        write(&s, n).await.expect("write");
    }
    s.abandon(); // as a crash: the last ten are in the journal only
    let s = super::helpers::open_storage(dir.path(), [5; 32], opts);
    for n in 0..70 {
        assert!(present(&s, n), "write {n} kept");
    }
    s.shutdown().expect("close");
}

/// sled is closed and opened again after checkpoints (every one, here)
/// while readers scan and writers commit: nothing is lost, reads never
/// fail, and a crash after it keeps everything.
#[actix_web::test]
async fn sled_reopens_under_reads_and_writes_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StorageOptions {
        segment_bytes: 4096,
        sled_reopen_bytes: 1,
        ..StorageOptions::default()
    };
    let s = super::helpers::open_storage(dir.path(), [5; 32], opts.clone());
    let reopens = qrgate::metrics::SLED_REOPENS.get();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop) = (s.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                s.user(UserId([0; 16])).expect("a read during a reopen");
                reads += 1;
            }
            reads
        })
    };
    for n in 0..60 {
        write(&s, n).await.expect("write");
        if n % 10 == 9 {
            s.checkpoint().expect("checkpoint");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().expect("reader") > 0);
    assert!(
        qrgate::metrics::SLED_REOPENS.get() >= reopens + 6,
        "sled reopened after each checkpoint"
    );
    for n in 0..60 {
        assert!(present(&s, n), "write {n} kept across the reopens");
    }
    for n in 60..70 {
        write(&s, n).await.expect("write");
    }
    s.abandon();
    let s = super::helpers::open_storage(dir.path(), [5; 32], opts);
    for n in 0..70 {
        assert!(present(&s, n), "write {n} kept");
    }
    s.shutdown().expect("close");
}

/// Events ride in the journal frames: after crashes (before and after a
/// checkpoint, with part of them consumed) every event not consumed comes
/// back once, with seqs that follow each other without a gap, and seqs go
/// on from there.
#[actix_web::test]
async fn event_seqs_have_no_gaps_and_unconsumed_events_survive_crashes() {
    use qrgate::domain::events::{Event, EventKind};
    use qrgate::domain::ids::GroupId;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = GroupId([3; 16]);
    let mut written = 0u64;
    let mut consumed = 0u64;
    for round in 0..4 {
        let s = open(dir.path(), None);
        // What is there: every event after the cursor, once, in order.
        let cursor = s.outbox_cursor().expect("cursor");
        assert_eq!(cursor, consumed, "round {round}: the cursor is durable");
        let upto = *s.durable_seq().borrow();
        assert_eq!(
            upto, written,
            "round {round}: seqs go on from the last durable one"
        );
        let seqs: Vec<u64> = s
            .outbox_range(cursor, upto)
            .expect("outbox")
            .records
            .into_iter()
            .flat_map(|(_, _, events)| events.into_iter().map(|e| e.seq))
            .collect();
        assert_eq!(
            seqs,
            (cursor + 1..=upto).collect::<Vec<_>>(),
            "round {round}"
        );
        // Write more, some rounds together.
        let pending: Vec<_> = (0..25)
            .map(|n| {
                let mut w = WriteSet::new();
                w.event(&Event::for_group(
                    g,
                    vec![],
                    n,
                    EventKind::GroupUnbanned { group_id: g },
                ));
                s.commit(w)
            })
            .collect();
        for p in pending {
            p.await.expect("durable");
        }
        written += 25;
        if round == 1 {
            s.checkpoint().expect("checkpoint");
        }
        // Consume the records up to about half of what is there.
        let upto = *s.durable_seq().borrow();
        let records = s.outbox_range(consumed, upto).expect("outbox").records;
        let mut last = consumed;
        let mut firsts = Vec::new();
        for (first, n, _) in &records {
            if last >= consumed + 20 {
                break;
            }
            firsts.push(*first);
            last = first + n - 1;
        }
        s.consume_outbox(qrgate::storage::Consumed {
            records: &firsts,
            upto: last,
            groups: &[],
            invites: &[],
            quarantined: &[],
            feeds: &Default::default(),
            webhooks: &Default::default(),
        })
        .await
        .expect("consumed");
        consumed = last;
        if round == 2 {
            s.checkpoint().expect("checkpoint after consuming");
        }
        s.abandon();
    }
}
