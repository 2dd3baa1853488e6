//! The one place that knows sled: trees, key layout, encodings, durability.
//!
//! Everything lives in one sled tree so that a [`WriteSet`] (all the records
//! one state change touches, plus its outbox events) is applied atomically
//! with `apply_batch`. Keys are a short ASCII prefix and fixed-width binary ids:
//!
//! | prefix | key                  | value                                   |
//! |--------|----------------------|-----------------------------------------|
//! | `u/`   | user id              | [`User`] (JSON)                         |
//! | `s/`   | blake3(session token)| user id (16 bytes)                      |
//! | `g/`   | group id             | [`Group`]                               |
//! | `gr/`  | group ref (8)        | group id                                |
//! | `m/`   | group id, user id    | [`Member`]                              |
//! | `i/`   | group id, invite id  | [`Invite`]                              |
//! | `ii/`  | invite id            | group id                                |
//! | `r/`   | group id, request id | [`JoinRequest`] (pending only)          |
//! | `b/`   | group id, user id    | blocked-at (i64)                        |
//! | `cg/`  | group id             | [`Counters`] kept by the outbox consumer|
//! | `ci/`  | invite id            | [`Counters`]                            |
//! | `o/`   | seq (u64 BE)         | [`Event`]                               |
//! | `x/outbox_cursor` |           | last consumed seq (u64 BE)              |
//!
//! Durability: [`Storage::write`] applies in memory; [`Storage::sync`] returns
//! once everything written before the call is on disk. Concurrent `sync` calls
//! share one `flush` (group commit) run by a dedicated thread.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;
use tokio::sync::{oneshot, watch};

use crate::domain::events::Event;
use crate::domain::group::{Group, Invite, JoinRequest, Member};
use crate::domain::ids::{GroupId, InviteId, RequestId, UserId};
use crate::metrics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("corrupt record under {0}: {1}")]
    Corrupt(String, String),
    #[error("the storage flusher has stopped")]
    Closed,
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub created_at: i64,
}

/// Everything a GroupActor needs to rebuild itself.
pub struct GroupSnapshot {
    pub group: Group,
    pub members: Vec<Member>,
    pub invites: Vec<Invite>,
    pub requests: Vec<JoinRequest>,
    pub blocks: Vec<UserId>,
}

/// Counters derived from the outbox (per group and per invitation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    pub joins: u64,
    pub requests: u64,
    pub approvals: u64,
    pub rejections: u64,
    pub expirations: u64,
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StorageError::Io(format!("encode: {e}")))
}

fn dec<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v)
        .map_err(|e| StorageError::Corrupt(String::from_utf8_lossy(k).into_owned(), e.to_string()))
}

fn id16(k: &[u8], v: &[u8]) -> Result<[u8; 16]> {
    v.try_into().map_err(|_| {
        StorageError::Corrupt(String::from_utf8_lossy(k).into_owned(), "id length".into())
    })
}

/// The records and events of one state change, applied atomically.
#[derive(Default)]
pub struct WriteSet {
    batch: sled::Batch,
    events: Vec<Event>,
    empty: bool,
}

impl WriteSet {
    pub fn new() -> Self {
        WriteSet {
            empty: true,
            ..Default::default()
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.empty = false;
        self.batch.insert(k, v);
    }

    fn del(&mut self, k: Vec<u8>) {
        self.empty = false;
        self.batch.remove(k);
    }

    pub fn user(&mut self, u: &User, session_hash: &[u8; 32]) -> Result<()> {
        self.put(key(b"u/", &[u.id.as_bytes()]), enc(u)?);
        self.put(key(b"s/", &[session_hash]), u.id.as_bytes().to_vec());
        Ok(())
    }

    pub fn group(&mut self, g: &Group) -> Result<()> {
        self.put(key(b"g/", &[g.id.as_bytes()]), enc(g)?);
        Ok(())
    }

    pub fn group_ref(&mut self, r: &[u8; 8], g: GroupId) {
        self.put(key(b"gr/", &[r]), g.as_bytes().to_vec());
    }

    pub fn member(&mut self, g: GroupId, m: &Member) -> Result<()> {
        self.put(key(b"m/", &[g.as_bytes(), m.user_id.as_bytes()]), enc(m)?);
        Ok(())
    }

    pub fn remove_member(&mut self, g: GroupId, u: UserId) {
        self.del(key(b"m/", &[g.as_bytes(), u.as_bytes()]));
    }

    pub fn invite(&mut self, i: &Invite) -> Result<()> {
        self.put(
            key(b"i/", &[i.group_id.as_bytes(), i.id.as_bytes()]),
            enc(i)?,
        );
        self.put(
            key(b"ii/", &[i.id.as_bytes()]),
            i.group_id.as_bytes().to_vec(),
        );
        Ok(())
    }

    pub fn request(&mut self, g: GroupId, r: &JoinRequest) -> Result<()> {
        self.put(key(b"r/", &[g.as_bytes(), r.id.as_bytes()]), enc(r)?);
        Ok(())
    }

    pub fn remove_request(&mut self, g: GroupId, r: RequestId) {
        self.del(key(b"r/", &[g.as_bytes(), r.as_bytes()]));
    }

    pub fn block(&mut self, g: GroupId, u: UserId, at: i64) {
        self.put(
            key(b"b/", &[g.as_bytes(), u.as_bytes()]),
            at.to_be_bytes().to_vec(),
        );
    }

    pub fn event(&mut self, e: Event) {
        self.empty = false;
        self.events.push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

type Waiter = oneshot::Sender<Result<()>>;

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Next outbox seq; held while a write set is applied so that seq order is
    /// application order (the outbox consumer relies on it).
    next_seq: Mutex<u64>,
    /// Highest seq applied so far.
    applied_seq: AtomicU64,
    flush_tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    durable_tx: watch::Sender<u64>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

const CURSOR: &[u8] = b"x/outbox_cursor";

impl Storage {
    pub fn open(dir: &Path) -> Result<Storage> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("state")?;
        let last = match tree.scan_prefix(b"o/").next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                seq_of(&k)?
            }
            None => cursor(&tree)?,
        };
        let (durable_tx, _) = watch::channel(last);
        let (flush_tx, flush_rx) = mpsc::channel::<Waiter>();
        let inner = Arc::new(Inner {
            db,
            tree,
            next_seq: Mutex::new(last + 1),
            applied_seq: AtomicU64::new(last),
            flush_tx: Mutex::new(Some(flush_tx)),
            durable_tx,
        });
        let flusher = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("qrgate-flusher".into())
            .spawn(move || flush_loop(&flusher, flush_rx))
            .map_err(|e| StorageError::Io(format!("cannot start flusher: {e}")))?;
        Ok(Storage { inner })
    }

    /// Apply a write set atomically (in memory; call [`sync`](Self::sync) before acknowledging).
    pub fn write(&self, mut w: WriteSet) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut next = self
            .inner
            .next_seq
            .lock()
            .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?;
        let mut seq = *next;
        for mut e in w.events.drain(..) {
            e.seq = seq;
            w.batch.insert(key(b"o/", &[&seq.to_be_bytes()]), enc(&e)?);
            seq += 1;
        }
        self.inner.tree.apply_batch(w.batch)?;
        *next = seq;
        self.inner.applied_seq.store(seq - 1, Ordering::SeqCst);
        drop(next);
        metrics::STORAGE_WRITE_SECONDS.observe(now.elapsed().as_secs_f64());
        Ok(())
    }

    /// Wait until everything written before this call is on disk.
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self
                .inner
                .flush_tx
                .lock()
                .map_err(|_| StorageError::Closed)?;
            let sender = guard.as_ref().ok_or(StorageError::Closed)?;
            sender.send(tx).map_err(|_| StorageError::Closed)?;
        }
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Write and wait for durability.
    pub async fn commit(&self, w: WriteSet) -> Result<()> {
        self.write(w)?;
        self.sync().await
    }

    /// Flush and stop the flusher (graceful shutdown).
    pub fn close(&self) -> Result<()> {
        if let Ok(mut g) = self.inner.flush_tx.lock() {
            g.take();
        }
        self.inner.db.flush()?;
        Ok(())
    }

    // ---------- reads ----------

    fn get<T: DeserializeOwned>(&self, k: Vec<u8>) -> Result<Option<T>> {
        match self.inner.tree.get(&k)? {
            Some(v) => Ok(Some(dec(&k, &v)?)),
            None => Ok(None),
        }
    }

    fn get_id(&self, k: Vec<u8>) -> Result<Option<[u8; 16]>> {
        match self.inner.tree.get(&k)? {
            Some(v) => Ok(Some(id16(&k, &v)?)),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.inner
            .tree
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                dec(&k, &v)
            })
            .collect()
    }

    pub fn user_by_session(&self, session_hash: &[u8; 32]) -> Result<Option<UserId>> {
        Ok(self.get_id(key(b"s/", &[session_hash]))?.map(UserId))
    }

    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get(key(b"u/", &[id.as_bytes()]))
    }

    pub fn group_by_ref(&self, r: &[u8; 8]) -> Result<Option<GroupId>> {
        Ok(self.get_id(key(b"gr/", &[r]))?.map(GroupId))
    }

    pub fn group_by_invite(&self, i: InviteId) -> Result<Option<GroupId>> {
        Ok(self.get_id(key(b"ii/", &[i.as_bytes()]))?.map(GroupId))
    }

    pub fn load_group(&self, id: GroupId) -> Result<Option<GroupSnapshot>> {
        let Some(group) = self.get::<Group>(key(b"g/", &[id.as_bytes()]))? else {
            return Ok(None);
        };
        let g = id.as_bytes();
        let blocks = self
            .inner
            .tree
            .scan_prefix(key(b"b/", &[g]))
            .map(|kv| {
                let (k, _) = kv?;
                id16(&k, &k[k.len() - 16..]).map(UserId)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(GroupSnapshot {
            group,
            members: self.scan(key(b"m/", &[g]))?,
            invites: self.scan(key(b"i/", &[g]))?,
            requests: self.scan(key(b"r/", &[g]))?,
            blocks,
        }))
    }

    pub fn group_counters(&self, id: GroupId) -> Result<Counters> {
        Ok(self.get(key(b"cg/", &[id.as_bytes()]))?.unwrap_or_default())
    }

    pub fn invite_counters(&self, id: InviteId) -> Result<Counters> {
        Ok(self.get(key(b"ci/", &[id.as_bytes()]))?.unwrap_or_default())
    }

    // ---------- outbox ----------

    /// Highest outbox seq known to be on disk; changes after every flush.
    pub fn durable_seq(&self) -> watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    pub fn outbox_cursor(&self) -> Result<u64> {
        cursor(&self.inner.tree)
    }

    /// Events with `cursor < seq <= upto`, in order.
    pub fn outbox_range(&self, cursor: u64, upto: u64) -> Result<Vec<Event>> {
        let lo = (cursor + 1).to_be_bytes();
        let hi = upto.to_be_bytes();
        self.inner
            .tree
            .range(key(b"o/", &[&lo])..=key(b"o/", &[&hi]))
            .map(|kv| {
                let (k, v) = kv?;
                dec(&k, &v)
            })
            .collect()
    }

    /// Record that events up to `upto` were consumed: remove them, store the
    /// counters they produced and the new cursor, in one atomic batch.
    pub fn consume_outbox(
        &self,
        from: u64,
        upto: u64,
        groups: &[(GroupId, Counters)],
        invites: &[(InviteId, Counters)],
    ) -> Result<()> {
        let mut b = sled::Batch::default();
        for seq in from + 1..=upto {
            b.remove(key(b"o/", &[&seq.to_be_bytes()]));
        }
        for (g, c) in groups {
            b.insert(key(b"cg/", &[g.as_bytes()]), enc(c)?);
        }
        for (i, c) in invites {
            b.insert(key(b"ci/", &[i.as_bytes()]), enc(c)?);
        }
        b.insert(CURSOR, upto.to_be_bytes().to_vec());
        self.inner.tree.apply_batch(b)?;
        Ok(())
    }
}

fn seq_of(k: &[u8]) -> Result<u64> {
    let tail: [u8; 8] = k
        .get(2..10)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt("o/".into(), "bad outbox key".into()))?;
    Ok(u64::from_be_bytes(tail))
}

fn cursor(tree: &sled::Tree) -> Result<u64> {
    match tree.get(CURSOR)? {
        Some(v) => {
            let b: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| StorageError::Corrupt("x/outbox_cursor".into(), "length".into()))?;
            Ok(u64::from_be_bytes(b))
        }
        None => Ok(0),
    }
}

/// Group commit: take every waiter queued so far, flush once, answer them all.
fn flush_loop(inner: &Inner, rx: mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        // Everything applied up to here is covered by the flush below.
        let watermark = inner.applied_seq.load(Ordering::SeqCst);
        let started = Instant::now();
        let res = inner.db.flush().map(|_| ()).map_err(StorageError::from);
        metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::FLUSH_BATCH.observe(waiters.len() as f64);
        if let Err(e) = &res {
            tracing::error!(error = %e, "flush failed; answering waiters with an error");
        }
        for w in waiters {
            let _ = w.send(res.clone());
        }
        if res.is_ok() {
            inner.durable_tx.send_if_modified(|v| {
                let changed = *v != watermark;
                *v = watermark;
                changed
            });
        }
    }
}
