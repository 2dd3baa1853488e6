//! The one place that knows the disk: the journal, sled's trees, key layout, encodings, durability.
//!
//! A [`WriteSet`] holds all the records one state change touches, plus its
//! outbox events; a commit round of them is one journal frame, so a write
//! set is on disk whole or not at all. Records are keyed by a short ASCII
//! prefix and fixed-width binary ids, the same keys in the journal, the
//! overlay and sled's one tree (`state`):
//!
//! | prefix | key                  | value                                   |
//! |--------|----------------------|-----------------------------------------|
//! | `u/`   | user id              | [`User`] (JSON)                         |
//! | `s/`   | blake3(session token)| a session (`domain::session::encode`: user, created, expires) |
//! | `se/`  | blake3(session token)| its expiry moved later (i64 BE), apart from `s/` so a late move never revives an ended session |
//! | `sr/`  | user id              | sessions created before this (ms, i64 BE) are revoked |
//! | `ak/`  | API key id           | [`ApiKey`] (JSON; the key's blake3 hash, never the key) |
//! | `g/`   | group id             | [`Group`]                               |
//! | `gr/`  | group ref (8)        | group id                                |
//! | `mb/`  | group id, bucket (1) | the [`Member`]s of one bucket (binary, see `member.rs`) |
//! | `m/`   | group id, user id    | [`Member`], one each: before the buckets; read, moved on activation |
//! | `i/`   | group id, invite id  | [`Invite`]                              |
//! | `ii/`  | invite id            | group id                                |
//! | `r/`   | group id, request id | [`JoinRequest`] (pending only)          |
//! | `rx/`  | expiry, group, request | (empty): pending requests by expiry   |
//! | `b/`   | group id, user id    | blocked-at (i64)                        |
//! | `av/`  | group id, chunk (1)  | 8 KB of the group's avatar (JPEG; `avatars.rs`) |
//! | `cg/`  | group id             | [`Counters`] kept by the outbox consumer|
//! | `ci/`  | invite id            | [`Counters`]                            |
//! | `o/`   | first seq (u64 BE)   | JSON array of [`Event`]s: the outbox before the journal; read once, deleted when consumed |
//! | `fe/`  | feed (17: `u`/`g`, id), first seq (u64 BE) | a chunk of a user's or group's feed (`feeds.rs`) |
//! | `fh/`  | feed (17)            | where the feed stands: last seq, oldest held (u64 BE each) |
//! | `wq/`  | endpoint, `\0`, first event seq (u64 BE) | a chunk of webhook deliveries waiting (`webhooks.rs`: type, entity, body), or with `r` after the seq one delivery sent again |
//! | `wt/`  | endpoint, `\0`, event seq (u64 BE) | a waiting delivery's attempts (the delivering node's only) |
//! | `wo/`  | endpoint, `\0`, event seq (u64 BE) | a webhook delivery done: delivered, failed or dropped |
//! | `we/`  | endpoint             | the endpoint is disabled (its receiver answered 410) |
//! | `lk/`  | blake3(link state)   | [`LinkState`]: a browser link flow under way (user, expiry) |
//! | `lku/` | blake3(link state)   | the state came back once (unix seconds)  |
//! | `q/`   | event seq (u64 BE)   | [`QuarantineRecord`]: an outbox event the consumer could not decode |
//! | `x/outbox_cursor` |           | last consumed seq (u64 BE)              |
//! | `x/checkpoint` |              | journal position and last event seq sled holds (u64 BE each) |
//!
//! Durability: the journal (`journal.rs`, files in `<data>/journal/`) is the
//! store of record. [`Storage::submit`] queues a write set for the committer
//! thread, which writes every queued set as one journal frame with one
//! `fdatasync` (group commit); the returned future resolves when the frame
//! is on disk. Only then does the round reach the overlay (`kv.rs`), an
//! in-memory map of every record written since the last checkpoint, which
//! every read consults before sled. Events ride in the same frame and wait
//! in memory for the outbox consumer. The checkpointer (`checkpoint.rs`)
//! moves the overlay into sled every `checkpoint_secs` or
//! `checkpoint_mb` of journal, coalesced, and then deletes the journal
//! segments sled holds. Recovery replays the frames after sled's position.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

use crate::domain::events::Event;
use crate::domain::group::{Group, Invite, JoinRequest, Member};
use crate::domain::ids::{GroupId, InviteId, RequestId, UserId};
use crate::domain::roster::Roster;
mod abuse;
pub mod avatars;
pub mod backup;
mod checkpoint;
pub mod cluster;
mod codes;
mod commit;
pub mod feeds;
mod groups;
pub mod jetstream;
pub mod journal;
mod kv;
mod ledger;
mod member;
mod outbox;
mod packets;
mod pages;
mod payouts;
mod runs;
mod sled_slot;
mod snapshot;
pub mod webhooks;
mod writeset;

pub use groups::{Counters, GroupSnapshot};
pub use outbox::{Consumed, OutboxRound, QuarantineRecord, Quarantined};
pub use writeset::{Fence, WriteSet};

pub use abuse::{Scope, Suspect};
use commit::{commit_loop, Job};
pub use commit::{ChainHead, Tracker};
use journal::{Journal, JournalFs};
use kv::Kv;
pub use ledger::{DayAnchor, InboxItem, LedgerBooks};
pub use packets::{BlacklistEntry, KeyRecord, PacketRecords};
pub use payouts::{LargeTransaction, Link, LinkState};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("corrupt record under {0}: {1}")]
    Corrupt(String, String),
    #[error("the storage flusher has stopped")]
    Closed,
    /// A write set was refused because a key it creates exists (nothing applied).
    #[error("a record it creates exists already: {0}")]
    Exists(String),
    /// A write set was refused because another writer wrote its entity after
    /// the position its writer read it at (nothing applied): the writer is
    /// stale and must be rebuilt.
    #[error("another writer wrote {0} since this one read it")]
    Fenced(String),
    /// Cluster mode: the log was trimmed past what this node holds while
    /// it was catching up; it starts again from the latest snapshot.
    #[error("the log skips from position {0} to {1}: it was trimmed past this node")]
    TrimmedPast(u64, u64),
    /// Cluster mode: the log no longer holds an entry this node applied
    /// (its servers lost entries they had acknowledged); a restart rebuilds
    /// this node from the log.
    #[error("the log went back: it no longer holds position {0} as this node applied it (it ends at {1}); restart the node to rebuild it from the log")]
    LogWentBack(u64, u64),
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StorageError>;

/// A problem found in stored data, and where: a key (`key lJ/…`), or a
/// file and offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(rename = "where")]
    pub place: String,
    pub what: String,
}

impl Finding {
    pub fn new(place: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding {
            place: place.into(),
            what: what.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.what)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub created_at: i64,
    /// Identity verified (KYC) by the operator; large payouts need it.
    #[serde(default)]
    pub kyc_verified: bool,
    /// The verified real name, sealed (`KeyRing::seal`, field `real_name`):
    /// never on disk in clear. Transfers that must name the payee use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_name: Option<String>,
}

/// A scoped API key of the operator's services (`http/api_keys.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// blake3 of the key, base64url.
    pub hash: String,
    pub created_at: i64,
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
        .map_err(|e| StorageError::Corrupt(commit::printable_key(k), e.to_string()))
}

fn id16(k: &[u8], v: &[u8]) -> Result<[u8; 16]> {
    v.try_into()
        .map_err(|_| StorageError::Corrupt(commit::printable_key(k), "id length".into()))
}

/// For the crash tests: `QRGATE_CRASH_AT=<name>` makes the process abort
/// (as `kill -9` would, at a known moment) when it reaches the named point:
/// `checkpoint_synced` (sled durable, segments not yet deleted),
/// `segment_created` (a new segment file exists, nothing written to it),
/// `replayed` (recovery replayed the journal, the server not yet serving).
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("QRGATE_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        eprintln!("QRGATE_CRASH_AT={name}: aborting here");
        std::process::abort();
    }
}

/// How the store runs; [`StorageOptions::default`] is what `config.toml`
/// defaults to.
#[derive(Clone)]
pub struct StorageOptions {
    /// sled's page cache.
    pub cache_bytes: u64,
    /// A checkpoint at least this often (when anything was written).
    pub checkpoint_every: Duration,
    /// ... and whenever this much journal was written since the last one.
    pub checkpoint_bytes: u64,
    /// A journal segment is closed once it holds this much.
    pub segment_bytes: u64,
    /// sled is closed and opened again once the checkpoints gave it this
    /// much since it last opened (0: never): its next open, at the next
    /// start, scans about that much (`sled_slot.rs`).
    pub sled_reopen_bytes: u64,
    /// `false` switches the journal off: nothing is written to disk and
    /// nothing survives a restart. For measuring the request path alone.
    pub journal: bool,
    /// The file system under the journal (fault injection in tests).
    pub fs: Option<Arc<dyn JournalFs>>,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cache_bytes: 64 << 20,
            checkpoint_every: Duration::from_secs(30),
            checkpoint_bytes: 64 << 20,
            segment_bytes: 16 << 20,
            sled_reopen_bytes: 256 << 20,
            journal: true,
            fs: None,
        }
    }
}

#[derive(Default)]
struct Wake {
    now: bool,
    stop: bool,
}

/// Where write sets go: this node's committer (the journal), or the
/// cluster committer (the replicated log).
enum Sink {
    Local(mpsc::Sender<Job>),
    Cluster(tokio::sync::mpsc::UnboundedSender<Job>),
}

impl Sink {
    /// Hands the job back if the committer is gone.
    fn send(&self, job: Job) -> std::result::Result<(), Box<Job>> {
        match self {
            Sink::Local(tx) => tx.send(job).map_err(|mpsc::SendError(j)| Box::new(j)),
            Sink::Cluster(tx) => tx
                .send(job)
                .map_err(|tokio::sync::mpsc::error::SendError(j)| Box::new(j)),
        }
    }
}

struct Inner {
    /// The read view: the overlay over sled.
    tree: Kv,
    jobs: Mutex<Option<Sink>>,
    /// Cluster mode: the replicated log and what follows it.
    cluster: Option<Arc<cluster::Cluster>>,
    durable_tx: watch::Sender<u64>,
    /// The committer holds it (shared) while applying a round; a reader that
    /// needs a consistent view of everything holds it exclusively.
    apply_lock: std::sync::RwLock<()>,
    journal_key: [u8; 32],
    /// `None` when the journal is switched off.
    journal: Mutex<Option<Journal>>,
    journal_dir: PathBuf,
    /// Events durable in the journal and not yet consumed: first seq of a
    /// round -> its encoded events.
    outbox: Mutex<BTreeMap<u64, Vec<Vec<u8>>>>,
    /// Outbox records that came from sled's `o/` (data dirs from before
    /// the journal): deleted from sled when consumed.
    legacy_outbox: Mutex<std::collections::HashSet<u64>>,
    /// The last journal position and event seq applied to the overlay.
    applied_pos: AtomicU64,
    last_event: AtomicU64,
    /// Journal bytes written since the last checkpoint began.
    since_checkpoint: AtomicU64,
    checkpoint_lock: Mutex<()>,
    wake: (Mutex<Wake>, Condvar),
    opts: StorageOptions,
    /// Set after an fsync error: nothing written since can be trusted.
    poisoned: AtomicBool,
    /// Set while journal writes fail (a full disk); cleared by the next
    /// write that succeeds.
    refusing: AtomicBool,
    /// Set while a backup copies sled and the journal (`backup.rs`).
    backup_running: AtomicBool,
    /// The committer and checkpointer threads, joined by [`Storage::shutdown`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Inner {
    /// The store's shared state, writes going to `jobs`, its reads
    /// reflecting `(position, last event seq)`.
    fn new(
        tree: Kv,
        jobs: Sink,
        cluster: Option<Arc<cluster::Cluster>>,
        (journal_key, journal, journal_dir): ([u8; 32], Option<Journal>, PathBuf),
        (outbox, legacy): (BTreeMap<u64, Vec<Vec<u8>>>, std::collections::HashSet<u64>),
        (pos, last_event): (u64, u64),
        opts: StorageOptions,
    ) -> Inner {
        Inner {
            tree,
            jobs: Mutex::new(Some(jobs)),
            cluster,
            durable_tx: watch::channel(last_event).0,
            apply_lock: std::sync::RwLock::new(()),
            journal_key,
            journal: Mutex::new(journal),
            journal_dir,
            outbox: Mutex::new(outbox),
            legacy_outbox: Mutex::new(legacy),
            applied_pos: AtomicU64::new(pos),
            last_event: AtomicU64::new(last_event),
            since_checkpoint: AtomicU64::new(0),
            checkpoint_lock: Mutex::new(()),
            wake: (Mutex::new(Wake::default()), Condvar::new()),
            opts,
            poisoned: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            backup_running: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// [`Storage::shutdown`] or [`Storage::close`] began.
    fn stopping(&self) -> bool {
        self.wake.0.lock().map_or(true, |w| w.stop)
    }

    fn wake_checkpointer(&self) {
        if let Ok(mut w) = self.wake.0.lock() {
            w.now = true;
            self.wake.1.notify_one();
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

const CURSOR: &[u8] = b"x/outbox_cursor";

impl Storage {
    /// Open (or create) the store in `dir`. `journal_key` keys the hash
    /// chain of the ledger journal.
    pub fn open(dir: &Path, journal_key: [u8; 32]) -> Result<Storage> {
        Storage::open_with(dir, journal_key, StorageOptions::default())
    }

    /// Open with every option: sled's checkpoint, then the journal's frames
    /// after it replayed into the overlay and the outbox.
    pub fn open_with(dir: &Path, journal_key: [u8; 32], opts: StorageOptions) -> Result<Storage> {
        let started = std::time::Instant::now();
        let slot = sled_slot::SledSlot::open(&dir.join("db"), opts.cache_bytes)?;
        Storage::start(slot, dir, journal_key, opts, started, None)
    }

    /// Open as a node of a cluster: the replicated log is the store of
    /// record (`cluster.rs`); `dir` holds this node's checkpoint of it,
    /// and the log from there on is applied before this returns.
    pub fn open_cluster(
        dir: &Path,
        journal_key: [u8; 32],
        opts: StorageOptions,
        cluster: cluster::ClusterOptions,
    ) -> Result<Storage> {
        // The log may be trimmed past a starting node (it is not among the
        // live nodes yet); it then starts again from the newer snapshot.
        let mut attempt = 0;
        loop {
            match Storage::open_cluster_once(dir, journal_key, opts.clone(), cluster.clone()) {
                Err(StorageError::TrimmedPast(from, to)) if attempt < 3 => {
                    tracing::warn!(from, to, "the log was trimmed past this node while it caught up; starting from the newer snapshot");
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn open_cluster_once(
        dir: &Path,
        journal_key: [u8; 32],
        opts: StorageOptions,
        cluster: cluster::ClusterOptions,
    ) -> Result<Storage> {
        let started = std::time::Instant::now();
        let db = dir.join("db");
        let mut slot = sled_slot::SledSlot::open(&db, opts.cache_bytes)?;
        let (pos, _) = checkpoint::read_position(&slot.get()?.tree)?;
        let first = cluster
            .log
            .first()
            .map_err(|e| StorageError::Io(format!("cannot read the log: {e}")))?;
        let mut last = cluster
            .log
            .stream_last()
            .map_err(|e| StorageError::Io(format!("cannot read the log: {e}")))?;
        // Behind the checkpoint: ask again for a while before believing it
        // (right after an election a server a few entries behind can answer).
        let asked = std::time::Instant::now();
        while last < pos && asked.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(500));
            last = cluster
                .log
                .stream_last()
                .map_err(|e| StorageError::Io(format!("cannot read the log: {e}")))?;
        }
        if last < pos {
            // The log lost entries this node's checkpoint holds: rebuild
            // this node from the log (from the start, or from a snapshot
            // no newer than what the log still holds).
            tracing::error!(checkpoint = pos, log_last = last, "the log went back behind this node's checkpoint; rebuilding this node from the log");
            drop(slot);
            std::fs::remove_dir_all(&db)
                .map_err(|e| StorageError::Io(format!("{}: {e}", db.display())))?;
            slot = sled_slot::SledSlot::open(&db, opts.cache_bytes)?;
            if first > 1 {
                let file = dir.join("snapshot.in");
                let found = cluster.log.get_snapshot(&file).map_err(StorageError::Io)?;
                let at = if found {
                    snapshot::install(&file, &slot.get()?.tree)?
                } else {
                    0
                };
                let _ = std::fs::remove_file(&file);
                if !found || at > last || at + 1 < first {
                    return Err(StorageError::Io(format!(
                        "the log went back to {last} behind this node's checkpoint ({pos}), starts at {first}, and holds no snapshot within it"
                    )));
                }
            }
            return Storage::start(slot, dir, journal_key, opts, started, Some(cluster));
        }
        if first > pos + 1 {
            // The log no longer holds what follows this node's checkpoint:
            // start from the cluster's latest snapshot instead (this node's
            // sled is a copy of the log, replaced whole).
            drop(slot);
            let file = dir.join("snapshot.in");
            let found = cluster.log.get_snapshot(&file).map_err(StorageError::Io)?;
            if !found {
                return Err(StorageError::Io(format!(
                    "the log starts at {first}, after this node's checkpoint ({pos}), and holds no snapshot"
                )));
            }
            std::fs::remove_dir_all(&db)
                .map_err(|e| StorageError::Io(format!("{}: {e}", db.display())))?;
            slot = sled_slot::SledSlot::open(&db, opts.cache_bytes)?;
            let at = snapshot::install(&file, &slot.get()?.tree)?;
            if at + 1 < first {
                return Err(StorageError::Io(format!(
                    "the latest snapshot ({at}) is older than the log's start ({first})"
                )));
            }
            let _ = std::fs::remove_file(&file);
            tracing::info!(position = at, was = pos, "installed the cluster's snapshot");
        }
        Storage::start(slot, dir, journal_key, opts, started, Some(cluster))
    }

    /// Cluster mode: write the state this node's checkpoint holds into
    /// `path` (a checkpoint runs first); returns its log position.
    pub fn export_snapshot(&self, path: &Path) -> Result<u64> {
        snapshot::export(&self.inner, path)
    }

    /// The log position sled's checkpoint holds.
    pub fn checkpoint_position(&self) -> Result<u64> {
        Ok(checkpoint::read_position(&self.inner.tree.sled.get()?.tree)?.0)
    }

    /// A store in memory, for unit tests of actors: the same records, reads
    /// and write sets as on disk, without a journal and over a temporary
    /// sled, so nothing survives it and nothing is fsynced. Integration,
    /// crash and upgrade tests use [`open`](Self::open).
    pub fn in_memory() -> Result<Storage> {
        let opts = StorageOptions {
            cache_bytes: 8 << 20,
            journal: false,
            ..StorageOptions::default()
        };
        let slot = sled_slot::SledSlot::temporary(opts.cache_bytes)?;
        Storage::start(
            slot,
            Path::new(""),
            [0; 32],
            opts,
            std::time::Instant::now(),
            None,
        )
    }

    fn start(
        slot: sled_slot::SledSlot,
        dir: &Path,
        journal_key: [u8; 32],
        opts: StorageOptions,
        started: std::time::Instant,
        cluster: Option<cluster::ClusterOptions>,
    ) -> Result<Storage> {
        let (ckpt_pos, ckpt_event) = checkpoint::read_position(&slot.get()?.tree)?;
        let sled_ms = started.elapsed().as_millis();
        let tree = Kv::open(slot)?;
        let runs_ms = started.elapsed().as_millis() - sled_ms;
        let mut last_event = ckpt_event;
        // The outbox as sled held it before the journal.
        let mut outbox: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        let mut legacy = std::collections::HashSet::new();
        for kv in tree.checkpoint_scan(b"o/") {
            let (k, v) = kv?;
            let first = seq_of(&k)?;
            let events: Vec<serde_json::Value> = dec(&k, &v)?;
            let events = events.iter().map(enc).collect::<Result<Vec<_>>>()?;
            last_event = last_event.max(first + (events.len() as u64).saturating_sub(1));
            legacy.insert(first);
            outbox.insert(first, events);
        }
        let journal_dir = dir.join("journal");
        let mut replayed: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        let (mut frames, mut bytes) = (0u64, 0usize);
        let replay_started = std::time::Instant::now();
        let mut last_pos = ckpt_pos;
        let journal = if opts.journal && cluster.is_none() {
            let fs = opts
                .fs
                .clone()
                .unwrap_or_else(|| Arc::new(journal::RealFs) as Arc<dyn JournalFs>);
            let j = Journal::open(&journal_dir, fs, opts.segment_bytes, ckpt_pos, |pos, p| {
                let round = commit::decode_round(p)?;
                let last = round.last_event();
                if pos > ckpt_pos {
                    frames += 1;
                    bytes += p.len();
                    tree.apply(round.ops).map_err(|e| e.to_string())?;
                }
                if !round.events.is_empty() {
                    replayed.push((round.first_event, round.events));
                }
                Ok(last)
            })
            .map_err(|e| StorageError::Io(e.to_string()))?;
            last_pos = last_pos.max(j.next_position() - 1);
            Some(j)
        } else {
            None
        };
        tracing::info!(
            sled_ms,
            runs_ms,
            replayed_frames = frames,
            replayed_mb = bytes as f64 / 1e6,
            replay_ms = replay_started.elapsed().as_millis(),
            "storage opened"
        );
        crash_point("replayed");
        let consumed = cursor(&tree)?;
        for (first, events) in replayed {
            let last = first + events.len() as u64 - 1;
            last_event = last_event.max(last);
            if last > consumed {
                outbox.insert(first, events);
            }
        }
        last_event = last_event.max(consumed);
        let chain = ledger::chain_head(&tree, journal_key)?;
        if let Some(c) = cluster {
            return Storage::start_cluster(
                tree,
                dir,
                journal_key,
                opts,
                c,
                (last_pos, last_event),
                outbox,
                legacy,
            );
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let inner = Arc::new(Inner::new(
            tree,
            Sink::Local(jobs_tx),
            None,
            (journal_key, journal, journal_dir),
            (outbox, legacy),
            (last_pos, last_event),
            opts,
        ));
        let committer = Arc::clone(&inner);
        let cur = commit::Cursor {
            next_seq: last_event + 1,
            chain,
            positions: Default::default(),
        };
        let mut threads = vec![std::thread::Builder::new()
            .name("qrgate-committer".into())
            .spawn(move || commit_loop(committer, jobs_rx, cur))
            .map_err(|e| StorageError::Io(format!("cannot start committer: {e}")))?];
        if inner.opts.journal {
            let checkpointer = Arc::clone(&inner);
            let every = inner.opts.checkpoint_every;
            threads.push(
                std::thread::Builder::new()
                    .name("qrgate-checkpoint".into())
                    .spawn(move || checkpoint::run_loop(checkpointer, every))
                    .map_err(|e| StorageError::Io(format!("cannot start checkpointer: {e}")))?,
            );
        }
        if let Ok(mut t) = inner.threads.lock() {
            *t = threads;
        }
        Ok(Storage { inner })
    }

    /// The cluster half of [`start`](Self::start): the cluster committer,
    /// the applier following the log from the checkpoint on, and the
    /// checkpointer; returns once the log as it stood at the start is
    /// applied.
    #[allow(clippy::too_many_arguments)]
    fn start_cluster(
        tree: Kv,
        dir: &Path,
        journal_key: [u8; 32],
        opts: StorageOptions,
        c: cluster::ClusterOptions,
        (pos, last_event): (u64, u64),
        outbox: BTreeMap<u64, Vec<Vec<u8>>>,
        legacy: std::collections::HashSet<u64>,
    ) -> Result<Storage> {
        let started = std::time::Instant::now();
        let chain = ledger::chain_head(&tree, journal_key)?;
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        let cl = Arc::new(cluster::Cluster::new(&c, pos, done_tx));
        let inner = Arc::new(Inner::new(
            tree,
            Sink::Cluster(jobs_tx),
            Some(Arc::clone(&cl)),
            (journal_key, None, dir.join("journal")),
            (outbox, legacy),
            (pos, last_event),
            opts,
        ));
        cl.attach(&inner);
        let target = c
            .log
            .stream_last()
            .map_err(|e| StorageError::Io(format!("cannot read the log: {e}")))?;
        let applier = cluster::Applier {
            next_seq: last_event + 1,
            chain,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StorageError::Io(format!("cannot start {name}: {e}")))
        };
        let entries = c.log.follow(pos + 1);
        let threads = vec![
            {
                let (inner, cl) = (Arc::clone(&inner), Arc::clone(&cl));
                spawn(
                    "qrgate-applier",
                    Box::new(move || cluster::run_applier(inner, cl, applier, entries)),
                )?
            },
            {
                let (inner, cl) = (Arc::clone(&inner), Arc::clone(&cl));
                spawn(
                    "qrgate-committer",
                    Box::new(move || cluster::run_committer(inner, cl, jobs_rx, done_rx)),
                )?
            },
            {
                let (inner, every) = (Arc::clone(&inner), inner.opts.checkpoint_every);
                spawn(
                    "qrgate-checkpoint",
                    Box::new(move || checkpoint::run_loop(inner, every)),
                )?
            },
        ];
        if let Ok(mut t) = inner.threads.lock() {
            *t = threads;
        }
        let store = Storage { inner };
        let mut applied = cl.applied.subscribe();
        let caught_up = c.log.handle().block_on(async {
            loop {
                if *applied.borrow_and_update() >= target {
                    return Ok(());
                }
                if let Some((from, to)) = cl.trimmed_past() {
                    return Err(StorageError::TrimmedPast(from, to));
                }
                if let Some(w) = c.log.went_back() {
                    return Err(StorageError::LogWentBack(w.delivered, w.stream_last));
                }
                if store.is_poisoned() {
                    return Err(StorageError::Io("applying the log failed".into()));
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
            }
        });
        if let Err(e) = caught_up {
            store.abandon();
            return Err(e);
        }
        tracing::info!(
            from = pos,
            to = target,
            ms = started.elapsed().as_millis(),
            node = %c.node_id,
            "caught up with the log"
        );
        Ok(store)
    }

    /// Queue a write set for the committer and return a future that resolves
    /// once it is applied and on disk. Write sets are applied in the order they
    /// are submitted; one submitted later is never durable before this one.
    /// An empty write set is a barrier: it resolves when everything submitted
    /// before it is durable.
    pub fn submit(&self, w: WriteSet) -> impl std::future::Future<Output = Result<()>> + 'static {
        self.submit_tracked(w, None)
    }

    /// [`submit`](Self::submit), also counting the write set in `tracker`
    /// until it is durable or failed.
    pub fn submit_tracked(
        &self,
        mut w: WriteSet,
        tracker: Option<Arc<Tracker>>,
    ) -> impl std::future::Future<Output = Result<()>> + 'static {
        let (tx, rx) = oneshot::channel();
        if let Some(t) = &tracker {
            t.begin();
        }
        let queued = if let Some(e) = w.error.take() {
            Err(e)
        } else if self.inner.poisoned.load(Ordering::Relaxed) {
            Err(StorageError::Io(
                "storage failed earlier; restart the server".into(),
            ))
        } else {
            match self.inner.jobs.lock() {
                Ok(g) => match g.as_ref() {
                    Some(s) => s
                        .send(Job {
                            w,
                            done: Some(tx),
                            tracker: tracker.clone(),
                        })
                        .map_err(|mut job| {
                            // Counted below, not again by the job's Drop.
                            job.tracker = None;
                            StorageError::Closed
                        }),
                    None => Err(StorageError::Closed),
                },
                Err(_) => Err(StorageError::Closed),
            }
        };
        if queued.is_err() {
            if let Some(t) = &tracker {
                t.finish(false);
            }
        }
        async move {
            queued?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Submit and wait.
    pub async fn commit(&self, w: WriteSet) -> Result<()> {
        self.submit(w).await
    }

    /// Resolve once everything submitted before this call is durable.
    pub async fn barrier(&self) -> Result<()> {
        self.submit(WriteSet::new()).await
    }

    /// The journal position reads reflect now: an entity read after this
    /// call reflects every write up to it (the `since` of a [`Fence`]).
    pub fn position(&self) -> u64 {
        self.inner.applied_pos.load(Ordering::SeqCst)
    }

    /// Cluster mode: whether an actor of `entity` activated at `since`
    /// (writing as `tracker`) is behind a write another writer made.
    pub fn is_stale(&self, entity: &str, since: u64, tracker: u64) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_some_and(|c| c.is_stale(entity, since, tracker))
    }

    /// Cluster mode: wait until this node applied what a new activation of
    /// `entity` must see (another writer was found writing it).
    pub async fn catch_up(&self, entity: &str) -> Result<()> {
        match &self.inner.cluster {
            Some(c) => c.catch_up(entity).await,
            None => Ok(()),
        }
    }

    /// Cluster mode: wait until this node applied every entry the log
    /// holds for `entity`, so that an actor activated now starts from all
    /// of them (written through another node a moment ago, before
    /// ownership moved here). One node: at once.
    pub async fn sync_entity(&self, entity: &str) -> Result<()> {
        match &self.inner.cluster {
            Some(c) => c.sync_entity(entity).await,
            None => Ok(()),
        }
    }

    /// Cluster mode: wait until this node applied everything the log held
    /// a moment ago, for a record this node does not know that another
    /// node may have written just now (a user made through another node).
    /// One node: at once.
    pub async fn sync_all(&self) -> Result<()> {
        match &self.inner.cluster {
            Some(c) => c.sync_all().await,
            None => Ok(()),
        }
    }

    /// Cluster mode: wait (at most `timeout`) until this node applied the
    /// log up to `pos`. One node: at once.
    pub async fn reach(&self, pos: u64, timeout: Duration) -> Result<()> {
        match &self.inner.cluster {
            Some(c) => c.reach(pos, timeout).await,
            None => Ok(()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// Cluster mode: `f` hears every key changed by an entry another node
    /// wrote (to drop what memory caches of it). One node: never called.
    pub fn on_remote_change(&self, f: impl Fn(&[u8]) + Send + Sync + 'static) {
        if let Some(c) = &self.inner.cluster {
            c.listen(Box::new(f));
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Relaxed)
    }

    /// Why writes are refused right now, if they are.
    pub fn write_refusal(&self) -> Option<String> {
        if let Some(why) = self.inner.cluster.as_ref().and_then(|c| c.halted()) {
            Some(why)
        } else if self.inner.poisoned.load(Ordering::Relaxed) {
            Some("storage failed (fsync); restart the server".into())
        } else if self.inner.refusing.load(Ordering::Relaxed) {
            Some("journal writes are failing (disk full or I/O error)".into())
        } else {
            None
        }
    }

    /// Write a checkpoint now (sled takes the overlay; covered journal
    /// segments are deleted). Returns the journal position it holds.
    pub fn checkpoint(&self) -> Result<u64> {
        checkpoint::run(&self.inner)
    }

    /// Journal position and bytes, overlay records (for metrics and tests).
    pub fn journal_stats(&self) -> (u64, u64, usize, usize) {
        let (bytes, segments) = match self.inner.journal.lock() {
            Ok(j) => j
                .as_ref()
                .map_or((0, 0), |j| (j.bytes(), j.segments().len())),
            Err(_) => (0, 0),
        };
        (
            self.inner.applied_pos.load(Ordering::SeqCst),
            bytes,
            segments,
            self.inner.tree.overlay_len(),
        )
    }

    /// Graceful shutdown: the committer finishes the queued work and stops
    /// (later submits answer [`StorageError::Closed`]), then a last
    /// checkpoint leaves the next start nothing to replay.
    pub fn close(&self) -> Result<()> {
        if let Ok(mut g) = self.inner.jobs.lock() {
            g.take();
        }
        self.stop_threads()?;
        if self.inner.opts.journal && !self.is_poisoned() {
            checkpoint::run(&self.inner)?;
        }
        self.inner.tree.sled.get()?.durable()?;
        Ok(())
    }

    /// [`close`](Self::close) and release the store (its directory lock
    /// goes with the last handle: this one must be the last).
    pub fn shutdown(self) -> Result<()> {
        self.close()
    }

    /// Stop without a checkpoint, as a crash would (the journal alone
    /// holds what came after the last checkpoint): for tests of recovery.
    #[doc(hidden)]
    pub fn abandon(self) {
        if let Ok(mut g) = self.inner.jobs.lock() {
            g.take();
        }
        let _ = self.stop_threads();
    }

    fn stop_threads(&self) -> Result<()> {
        if let Ok(mut w) = self.inner.wake.0.lock() {
            w.stop = true;
            self.inner.wake.1.notify_all();
        }
        let threads = self
            .inner
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for h in threads {
            h.join()
                .map_err(|_| StorageError::Io("a storage thread panicked".into()))?;
        }
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

    pub fn session(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<crate::domain::session::Session>> {
        let k = key(b"s/", &[token_hash]);
        let Some(v) = self.inner.tree.get(&k)? else {
            return Ok(None);
        };
        let mut s = crate::domain::session::decode(&v)
            .ok_or_else(|| StorageError::Corrupt("s/".into(), "session record".into()))?;
        if let Some(v) = self.inner.tree.get(key(b"se/", &[token_hash]))? {
            let moved = i64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("se/".into(), "session expiry".into()))?,
            );
            s.expires_at = Some(s.expires_at.map_or(moved, |at| at.max(moved)));
        }
        Ok(Some(s))
    }

    /// Every API key.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.scan(b"ak/".to_vec())
    }

    /// Sessions of `user` created before this (ms) are revoked; 0 if never.
    pub fn sessions_revoked_before(&self, user: UserId) -> Result<i64> {
        let k = key(b"sr/", &[user.as_bytes()]);
        match self.inner.tree.get(&k)? {
            None => Ok(0),
            Some(v) => Ok(i64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                StorageError::Corrupt("sr/".into(), "revocation record".into())
            })?)),
        }
    }

    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get(key(b"u/", &[id.as_bytes()]))
    }
}

fn seq_of(k: &[u8]) -> Result<u64> {
    let tail: [u8; 8] = k
        .get(2..10)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt("o/".into(), "bad outbox key".into()))?;
    Ok(u64::from_be_bytes(tail))
}

fn cursor(tree: &Kv) -> Result<u64> {
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

/// A store in a fresh temporary dir and a runtime to await its commits,
/// for unit tests (keep the dir alive as long as the store).
#[cfg(test)]
pub(crate) fn test_store() -> (tempfile::TempDir, tokio::runtime::Runtime, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = Storage::open(dir.path(), [0; 32]).expect("open");
    (dir, rt, store)
}
