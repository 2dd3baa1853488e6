//! Cluster mode: the log of record is a JetStream stream (`jetstream.rs`)
//! shared by every node, instead of this node's journal.
//!
//! - **Writing** (the cluster committer, [`run_committer`]): each write set
//!   goes to its entity's lane: the entity its [`Fence`](super::Fence)
//!   names, or this node's own lane (`node/{id}`) for write sets of no
//!   entity (accounts, codes). A lane has one entry in flight at a time;
//!   what queues meanwhile goes out as one entry once it is applied. An
//!   entry is appended with the lane's last position as the expected one
//!   (compare-and-set): a refused append means another writer wrote the
//!   entity, and its write sets answer [`StorageError::Fenced`]: nothing
//!   applied, the actor is rebuilt and the request asked again.
//! - **Applying** (the applier, [`run_applier`]): every node follows the
//!   whole stream and applies each entry in stream order with the same
//!   rules, so every node holds the same state at the same position: a
//!   write set that creates a key that exists is skipped with the rest of
//!   its entry, and ledger chain records and event seqs are given in stream
//!   order. A writer is answered when its node has applied its entry: a
//!   2xx is acknowledged by a quorum of the stream's replicas, and the next
//!   read on that node sees it.
//! - **Checkpoints** move the applied records into this node's sled at a
//!   stream position, as the journal's checkpoints do; a restart follows
//!   the stream from there.
//! - **Local writes** ([`WriteSet::local`]): records every node derives
//!   alike from the stream (the outbox consumer's counters and cursor) are
//!   applied on this node only.

use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::commit::{printable_key, publish_round, ChainHead, Cur, Job};
use super::jetstream::{AppendError, Entry, StreamLog};
use super::{Inner, Result, StorageError, WriteSet};
use crate::metrics;

/// How to join a cluster: the log, and who this node is.
#[derive(Clone)]
pub struct ClusterOptions {
    pub log: Arc<StreamLog>,
    /// Letters, digits, `-` and `_` (it is part of a subject name).
    pub node_id: String,
}

/// A writer, unique across nodes and restarts: the process's boot id and
/// the writer's tracker id.
type Writer = [u8; 16];

/// Version of the entry layout (first byte of every entry).
const ENTRY_V1: u8 = 1;

/// How long an activation waits for this node to apply its entity's last
/// position before the request answers 503.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an activation waits for the log to say where its entity ends.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a stopping node waits for its entries in flight to be applied.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the cluster committer hears besides new write sets.
pub(super) enum Done {
    /// The entry `msg_id` of `entity` was applied here; its jobs answered.
    Applied { entity: String, msg_id: String },
    /// The append of `msg_id` did not land: its jobs answer `error`, and
    /// the entity's next activation waits for position `catch_up`.
    Refused {
        entity: String,
        msg_id: String,
        error: StorageError,
        catch_up: Option<u64>,
    },
}

/// Whether a writer that read its entity at `since` is behind `last` (the
/// entity's last position and writer): `Err` with that position if another
/// writer wrote it after.
fn stale(last: Option<(u64, Writer)>, since: u64, writer: Writer) -> std::result::Result<(), u64> {
    match last {
        Some((pos, by)) if pos > since && by != writer => Err(pos),
        _ => Ok(()),
    }
}

/// Where an entity's last position and its writer are kept: state like any
/// other record, written by every node as it applies the entry, so a
/// restarted node has it from its checkpoint.
fn last_key(entity: &str) -> Vec<u8> {
    super::key(b"xl/", &[entity.as_bytes()])
}

fn last_of_entity(inner: &Inner, entity: &str) -> Result<Option<(u64, Writer)>> {
    let k = last_key(entity);
    match inner.tree.get(&k)? {
        None => Ok(None),
        Some(v) if v.len() == 24 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&v[..8]);
            let mut w = [0u8; 16];
            w.copy_from_slice(&v[8..]);
            Ok(Some((u64::from_be_bytes(seq), w)))
        }
        Some(_) => Err(StorageError::Corrupt(printable_key(&k), "length".into())),
    }
}

/// Hears each key another node's entry changed.
pub(super) type Listener = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Cluster state shared by the committer, the applier and the readers.
pub(super) struct Cluster {
    pub(super) log: Arc<StreamLog>,
    pub(super) node: String,
    boot: u64,
    next_msg: AtomicU64,
    /// The store, to read entities' last positions (`xl/` records).
    store: std::sync::OnceLock<std::sync::Weak<Inner>>,
    /// Entries this node appended whose writers wait for them to be
    /// applied, by message id.
    awaiting: Mutex<HashMap<String, Vec<Job>>>,
    /// Per entity: a position its next activation must have applied.
    catch_up: Mutex<HashMap<String, u64>>,
    /// The position applied here, for waiters.
    pub(super) applied: watch::Sender<u64>,
    pub(super) done: mpsc::UnboundedSender<Done>,
    /// Set when the log skipped positions this node had not applied.
    trimmed: Mutex<Option<(u64, u64)>>,
    /// Why this node stopped applying the log, once it did.
    halted: Mutex<Option<String>>,
    /// Called with every key an entry written by another node changed (to
    /// drop what a node caches in memory).
    listeners: RwLock<Vec<Listener>>,
}

impl Cluster {
    pub(super) fn new(
        opts: &ClusterOptions,
        applied_at: u64,
        done: mpsc::UnboundedSender<Done>,
    ) -> Cluster {
        Cluster {
            log: Arc::clone(&opts.log),
            node: opts.node_id.clone(),
            boot: u64::from_le_bytes(crate::domain::ids::random_bytes()),
            next_msg: AtomicU64::new(1),
            store: std::sync::OnceLock::new(),
            awaiting: Mutex::default(),
            catch_up: Mutex::default(),
            applied: watch::channel(applied_at).0,
            done,
            listeners: RwLock::default(),
            trimmed: Mutex::default(),
            halted: Mutex::default(),
        }
    }

    fn writer(&self, job: &Job) -> Writer {
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&self.boot.to_le_bytes());
        w[8..].copy_from_slice(&job.tracker.as_ref().map_or(0, |t| t.id()).to_le_bytes());
        w
    }

    /// Why this node stopped applying the log, if it did.
    pub(super) fn halted(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }

    /// The positions the log skipped from and to, if it was trimmed past
    /// this node.
    pub(super) fn trimmed_past(&self) -> Option<(u64, u64)> {
        self.trimmed.lock().ok().and_then(|t| *t)
    }

    /// Give the cluster its store (made after it).
    pub(super) fn attach(&self, inner: &Arc<Inner>) {
        let _ = self.store.set(Arc::downgrade(inner));
    }

    fn own_lane(&self) -> String {
        format!("node/{}", self.node)
    }

    /// `entity`'s last position applied here and its writer (`None`:
    /// never written).
    fn last_applied(&self, entity: &str) -> Option<(u64, Writer)> {
        let inner = self.store.get()?.upgrade()?;
        last_of_entity(&inner, entity).ok().flatten()
    }

    /// Whether an actor of `entity` activated at `since` by writer
    /// `tracker` is behind a write of another writer applied here.
    pub(super) fn is_stale(&self, entity: &str, since: u64, tracker: u64) -> bool {
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&self.boot.to_le_bytes());
        w[8..].copy_from_slice(&tracker.to_le_bytes());
        stale(self.last_applied(entity), since, w).is_err()
    }

    fn need(&self, entity: &str, pos: u64) {
        if let Ok(mut m) = self.catch_up.lock() {
            let at = m.entry(entity.to_string()).or_insert(0);
            *at = (*at).max(pos);
        }
    }

    /// Wait until this node applied every position a new activation of
    /// `entity` must see (after another writer was found to write it).
    pub(super) async fn catch_up(&self, entity: &str) -> Result<()> {
        let Some(pos) = self
            .catch_up
            .lock()
            .ok()
            .and_then(|m| m.get(entity).copied())
        else {
            return Ok(());
        };
        self.reach(pos, CATCH_UP_TIMEOUT).await?;
        if let Ok(mut m) = self.catch_up.lock() {
            if m.get(entity).is_some_and(|p| *p <= pos) {
                m.remove(entity);
            }
        }
        Ok(())
    }

    /// Wait until this node applied every entry the log holds for
    /// `entity` (one request to the log). When the log does not answer
    /// within [`SYNC_TIMEOUT`] (no quorum), go on with what this node
    /// applied: reads from memory go on, and a write is still refused by
    /// the compare-and-set if it missed an entry.
    pub(super) async fn sync_entity(&self, entity: &str) -> Result<()> {
        let last = match tokio::time::timeout(SYNC_TIMEOUT, self.log.last_of(entity)).await {
            Ok(Ok(last)) => last,
            Ok(Err(e)) => {
                tracing::debug!(%entity, error = %e, "the log did not say where the entity ends");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        self.reach(last, CATCH_UP_TIMEOUT).await
    }

    /// Wait until this node applied everything the log held a moment ago
    /// (at most [`SYNC_TIMEOUT`] to ask, [`CATCH_UP_TIMEOUT`] to apply).
    pub(super) async fn sync_all(&self) -> Result<()> {
        let last = self
            .log
            .stream_last_within(SYNC_TIMEOUT)
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?;
        self.reach(last, CATCH_UP_TIMEOUT).await
    }

    /// Wait (at most `timeout`) until this node applied the log up to `pos`.
    pub(super) async fn reach(&self, pos: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= pos))
            .await
            .map_err(|_| StorageError::Io(format!("the log is not applied up to {pos} here")))?
            .map_err(|_| StorageError::Closed)?;
        Ok(())
    }

    pub(super) fn listen(&self, f: Listener) {
        if let Ok(mut l) = self.listeners.write() {
            l.push(f);
        }
    }
}

// ---------- entries ----------

/// One write set as an entry carries it.
struct Set {
    writer: Writer,
    creates: Vec<Vec<u8>>,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    journal: Vec<Vec<u8>>,
    events: Vec<Vec<u8>>,
}

/// ```text
/// u8 version (1)
/// u32 LE + bytes  message id;   u64 LE boot id of the writing process;
/// i64 LE          written at (unix seconds, the writer's clock)
/// u64 LE          the entity's position it follows (0: the first)
/// u32 LE          number of write sets, then each:
///   16 bytes writer
///   u32 n, then n keys it creates (u32 len, key)
///   u32 n, then n records (u8 0 delete / 1 put, u32 len, key, [u32 len, value])
///   u32 n, then n ledger journal records (u32 len, record)
///   u32 n, then n events (u32 len, event)
/// ```
fn encode_entry(
    msg_id: &str,
    boot: u64,
    at: i64,
    expected: u64,
    sets: &[(Writer, &WriteSet)],
) -> Vec<u8> {
    fn bytes(b: &mut Vec<u8>, x: &[u8]) {
        b.extend_from_slice(&(x.len() as u32).to_le_bytes());
        b.extend_from_slice(x);
    }
    fn list(b: &mut Vec<u8>, xs: &[Vec<u8>]) {
        b.extend_from_slice(&(xs.len() as u32).to_le_bytes());
        for x in xs {
            bytes(b, x);
        }
    }
    let mut b = vec![ENTRY_V1];
    bytes(&mut b, msg_id.as_bytes());
    b.extend_from_slice(&boot.to_le_bytes());
    b.extend_from_slice(&at.to_le_bytes());
    b.extend_from_slice(&expected.to_le_bytes());
    b.extend_from_slice(&(sets.len() as u32).to_le_bytes());
    for (writer, w) in sets {
        b.extend_from_slice(writer);
        list(&mut b, &w.creates);
        b.extend_from_slice(&(w.ops.len() as u32).to_le_bytes());
        for (k, v) in &w.ops {
            b.push(u8::from(v.is_some()));
            bytes(&mut b, k);
            if let Some(v) = v {
                bytes(&mut b, v);
            }
        }
        list(&mut b, &w.journal);
        list(&mut b, &w.events);
    }
    b
}

struct Decoded {
    msg_id: String,
    boot: u64,
    at: i64,
    expected: u64,
    sets: Vec<Set>,
}

fn decode_entry(p: &[u8]) -> std::result::Result<Decoded, String> {
    let mut c = Cur(p);
    let v = c.take(1)?[0];
    if v != ENTRY_V1 {
        return Err(format!("unknown entry version {v}"));
    }
    let n = c.u32()?;
    let msg_id = String::from_utf8_lossy(c.take(n)?).into_owned();
    let boot = c.u64()?;
    let at = c.u64()? as i64;
    let expected = c.u64()?;
    let n = c.u32()?;
    let mut sets = Vec::with_capacity(n.min(1 << 12));
    for _ in 0..n {
        let mut writer = [0u8; 16];
        writer.copy_from_slice(c.take(16)?);
        let creates = c.list()?;
        let n_ops = c.u32()?;
        let mut ops = Vec::with_capacity(n_ops.min(1 << 12));
        for _ in 0..n_ops {
            let kind = c.take(1)?[0];
            let kl = c.u32()?;
            let k = c.take(kl)?.to_vec();
            let v = match kind {
                0 => None,
                1 => {
                    let vl = c.u32()?;
                    Some(c.take(vl)?.to_vec())
                }
                k => return Err(format!("unknown record kind {k}")),
            };
            ops.push((k, v));
        }
        let journal = c.list()?;
        let events = c.list()?;
        sets.push(Set {
            writer,
            creates,
            ops,
            journal,
            events,
        });
    }
    c.end()?;
    Ok(Decoded {
        msg_id,
        boot,
        at,
        expected,
        sets,
    })
}

// ---------- the applier ----------

/// What the applier carries from entry to entry: the same on every node at
/// the same position.
pub(super) struct Applier {
    pub(super) next_seq: u64,
    pub(super) chain: ChainHead,
}

/// Apply one entry of the stream (every node, in stream order).
pub(super) fn apply_entry(inner: &Inner, cl: &Cluster, st: &mut Applier, e: Entry) -> Result<()> {
    // The stream's positions have no holes (nothing in it is deleted one by
    // one); a hole means it was trimmed past what this node holds.
    let next = inner.applied_pos.load(Ordering::SeqCst) + 1;
    if e.seq != next {
        if let Ok(mut t) = cl.trimmed.lock() {
            *t = Some((next - 1, e.seq));
        }
        tracing::error!(
            from = next - 1,
            to = e.seq,
            "the log was trimmed past this node; restart it to start from the cluster's snapshot"
        );
        return Err(StorageError::TrimmedPast(next - 1, e.seq));
    }
    let d = match decode_entry(&e.payload) {
        Ok(d) => d,
        Err(why) => {
            // Every node skips it alike; nobody can have been answered 2xx.
            tracing::error!(seq = e.seq, entity = %e.entity, %why, "an unreadable log entry: skipped");
            inner.applied_pos.store(e.seq, Ordering::SeqCst);
            cl.applied.send_replace(e.seq);
            return Ok(());
        }
    };
    let day = crate::clock::date_of(d.at);
    // JetStream 2.9 checks an append's expected position on the stream's
    // leader before replicating it, and two appends in flight with the
    // same expected position can both pass (nats-server issue 4320). Every
    // node checks it again here, in stream order, alike: an entry that
    // does not follow the entity's last position applies nothing.
    let prev = last_of_entity(inner, &e.entity)?.map_or(0, |(pos, _)| pos);
    let follows = d.expected == prev;
    let mut outcomes: Vec<Result<()>> = Vec::with_capacity(d.sets.len());
    let mut ops: Vec<(Vec<u8>, Option<sled::IVec>)> = Vec::new();
    let mut events = Vec::new();
    let mut created: std::collections::HashSet<Vec<u8>> = Default::default();
    // Writers (actors) with a refused write set in this entry: the rest
    // of theirs built on state that never was, so none of it applies.
    // Write sets of no writer (tracker 0) stand alone.
    let mut refused: HashMap<Writer, String> = HashMap::new();
    let mut last_writer = [0u8; 16];
    for s in d.sets {
        last_writer = s.writer;
        if !follows {
            outcomes.push(Err(StorageError::Fenced(e.entity.clone())));
            continue;
        }
        if let Some(k) = refused.get(&s.writer) {
            outcomes.push(Err(StorageError::Exists(k.clone())));
            continue;
        }
        if let Some(k) = s
            .creates
            .iter()
            .find(|k| created.contains(*k) || inner.tree.contains_key(k).unwrap_or(true))
        {
            let k = printable_key(k);
            outcomes.push(Err(StorageError::Exists(k.clone())));
            if s.writer[8..] != [0; 8] {
                refused.insert(s.writer, k);
            }
            continue;
        }
        created.extend(s.creates);
        ops.extend(s.ops.into_iter().map(|(k, v)| (k, v.map(sled::IVec::from))));
        for r in &s.journal {
            let (k, v) = st.chain.append_on(r, day.clone());
            ops.push((k, Some(sled::IVec::from(v))));
        }
        events.extend(s.events);
        outcomes.push(Ok(()));
    }
    for (k, v) in st.chain.day_anchors() {
        ops.push((k, Some(sled::IVec::from(v))));
    }
    if !follows {
        metrics::LOG_REFUSED_AT_APPLY.inc();
        tracing::warn!(entity = %e.entity, seq = e.seq, expected = d.expected, last = prev, "an entry that does not follow its entity's last position: applied nothing");
    }
    let mut last = e.seq.to_be_bytes().to_vec();
    last.extend_from_slice(&last_writer);
    ops.push((last_key(&e.entity), Some(sled::IVec::from(last))));
    let from_elsewhere = d.boot != cl.boot;
    let keys: Vec<Vec<u8>> = if from_elsewhere {
        ops.iter().map(|(k, _)| k.clone()).collect()
    } else {
        Vec::new()
    };
    let first_event = st.next_seq;
    let n_events = events.len() as u64;
    publish_round(inner, Some(e.seq), ops, first_event, events)?;
    st.next_seq += n_events;
    inner
        .since_checkpoint
        .fetch_add(e.payload.len() as u64, Ordering::SeqCst);
    if inner.since_checkpoint.load(Ordering::SeqCst) >= inner.opts.checkpoint_bytes {
        inner.wake_checkpointer();
    }
    if !keys.is_empty() {
        if let Ok(listeners) = cl.listeners.read() {
            for k in &keys {
                for f in listeners.iter() {
                    f(k);
                }
            }
        }
    }
    cl.applied.send_replace(e.seq);
    metrics::LOG_APPLIED.set(e.seq as i64);
    if !from_elsewhere {
        let jobs = cl
            .awaiting
            .lock()
            .ok()
            .and_then(|mut a| a.remove(&d.msg_id));
        if let Some(jobs) = jobs {
            for (j, r) in jobs.into_iter().zip(outcomes) {
                j.answer(r);
            }
            let _ = cl.done.send(Done::Applied {
                entity: e.entity,
                msg_id: d.msg_id,
            });
        }
    }
    Ok(())
}

/// Follow the stream from `from` and apply it until the store stops.
pub(super) fn run_applier(
    inner: Arc<Inner>,
    cl: Arc<Cluster>,
    mut st: Applier,
    mut rx: mpsc::Receiver<Entry>,
) {
    let handle = cl.log.handle();
    let mut stop_seen: Option<std::time::Instant> = None;
    loop {
        if inner.stopping() {
            // Apply what this node's writers still wait for, a while.
            let since = *stop_seen.get_or_insert_with(std::time::Instant::now);
            let waiting = cl.awaiting.lock().map_or(0, |a| a.len());
            if waiting == 0 || since.elapsed() >= STOP_GRACE {
                return;
            }
        }
        let next = handle
            .block_on(async { tokio::time::timeout(Duration::from_millis(200), rx.recv()).await });
        // A follower that found the log went back stops: so does applying.
        if matches!(next, Err(_) | Ok(None)) {
            if let Some(w) = cl.log.went_back() {
                halt(
                    &inner,
                    &cl,
                    StorageError::LogWentBack(w.delivered, w.stream_last),
                );
                return;
            }
        }
        match next {
            Err(_) => continue,
            Ok(None) => return,
            Ok(Some(e)) => {
                if let Err(err) = apply_entry(&inner, &cl, &mut st, e) {
                    halt(&inner, &cl, err);
                    return;
                }
            }
        }
    }
}

/// Stop applying: refuse writes from now on (a restart rebuilds this node),
/// and answer the writers waiting for their entries with `err`.
fn halt(inner: &Inner, cl: &Cluster, err: StorageError) {
    if let Ok(mut h) = cl.halted.lock() {
        h.get_or_insert_with(|| err.to_string());
    }
    super::commit::poison(inner, &err);
    let waiting: Vec<Job> = cl
        .awaiting
        .lock()
        .map(|mut a| a.drain().flat_map(|(_, jobs)| jobs).collect())
        .unwrap_or_default();
    for j in waiting {
        j.answer(Err(err.clone()));
    }
}

// ---------- the committer ----------

/// One entity's lane: at most one entry in flight, the rest waiting.
#[derive(Default)]
struct Lane {
    busy: Option<String>,
    queue: Vec<(u64, Job)>,
}

struct Committer {
    inner: Arc<Inner>,
    cl: Arc<Cluster>,
    lanes: HashMap<String, Lane>,
    /// Arrival numbers of jobs not yet answered, and of each entry's jobs.
    outstanding: BTreeSet<u64>,
    in_entry: HashMap<String, Vec<u64>>,
    /// Barriers (empty write sets of no entity) by arrival.
    barriers: Vec<(u64, Job)>,
    arrivals: u64,
}

/// The cluster committer: runs until the store stops taking write sets and
/// nothing is in flight.
pub(super) fn run_committer(
    inner: Arc<Inner>,
    cl: Arc<Cluster>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut done: mpsc::UnboundedReceiver<Done>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the cluster committer");
            return;
        }
    };
    let mut c = Committer {
        inner,
        cl,
        lanes: HashMap::new(),
        outstanding: BTreeSet::new(),
        in_entry: HashMap::new(),
        barriers: Vec::new(),
        arrivals: 0,
    };
    rt.block_on(async move {
        let mut open = true;
        let mut closed_at: Option<std::time::Instant> = None;
        loop {
            if !open {
                let at = *closed_at.get_or_insert_with(std::time::Instant::now);
                if c.outstanding.is_empty() || at.elapsed() >= STOP_GRACE {
                    break;
                }
            }
            tokio::select! {
                j = jobs.recv(), if open => match j {
                    Some(j) => c.arrive(j),
                    None => open = false,
                },
                d = done.recv() => match d {
                    Some(d) => c.settle(d),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(200)), if !open => {}
            }
        }
        // Whatever is left will not be answered by the log any more.
        let left: Vec<Job> =
            c.cl.awaiting
                .lock()
                .map(|mut a| a.drain().flat_map(|(_, jobs)| jobs).collect())
                .unwrap_or_default();
        for j in left {
            j.answer(Err(StorageError::Closed));
        }
        for (_, j) in c.barriers.drain(..) {
            j.answer(Ok(()));
        }
    });
}

impl Committer {
    fn arrive(&mut self, mut j: Job) {
        self.arrivals += 1;
        let n = self.arrivals;
        if j.w.local {
            let r = self.apply_local(&mut j.w);
            j.answer(r);
            return;
        }
        let entity = match &j.w.fence {
            Some(f) => f.name.to_string(),
            None if j.w.is_empty() => {
                self.barriers.push((n, j));
                self.answer_barriers();
                return;
            }
            None => self.cl.own_lane(),
        };
        self.outstanding.insert(n);
        let lane = self.lanes.entry(entity.clone()).or_default();
        lane.queue.push((n, j));
        if lane.busy.is_none() {
            self.send(&entity);
        }
    }

    /// Records only this node keeps (derived alike on every node).
    fn apply_local(&self, w: &mut WriteSet) -> Result<()> {
        let ops: Vec<(Vec<u8>, Option<sled::IVec>)> = w
            .ops
            .drain(..)
            .map(|(k, v)| (k, v.map(sled::IVec::from)))
            .collect();
        let _applying = self
            .inner
            .apply_lock
            .read()
            .map_err(|_| StorageError::Io("apply lock poisoned".into()))?;
        self.inner.tree.apply(ops)
    }

    fn finish(&mut self, arrivals: &[u64]) {
        for n in arrivals {
            self.outstanding.remove(n);
        }
        self.answer_barriers();
    }

    fn answer_barriers(&mut self) {
        let first = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.barriers.drain(..).partition(|(n, _)| *n < first);
        self.barriers = wait;
        for (_, j) in ready {
            j.answer(Ok(()));
        }
    }

    fn settle(&mut self, d: Done) {
        let (entity, msg_id) = match d {
            Done::Applied { entity, msg_id } => (entity, msg_id),
            Done::Refused {
                entity,
                msg_id,
                error,
                catch_up,
            } => {
                if let Some(pos) = catch_up {
                    self.cl.need(&entity, pos);
                }
                let jobs = self
                    .cl
                    .awaiting
                    .lock()
                    .ok()
                    .and_then(|mut a| a.remove(&msg_id))
                    .unwrap_or_default();
                for j in jobs {
                    j.answer(Err(error.clone()));
                }
                (entity, msg_id)
            }
        };
        if let Some(arrivals) = self.in_entry.remove(&msg_id) {
            self.finish(&arrivals);
        }
        if let Some(lane) = self.lanes.get_mut(&entity) {
            if lane.busy.as_deref() == Some(msg_id.as_str()) {
                lane.busy = None;
            }
            if lane.queue.is_empty() {
                self.lanes.remove(&entity);
            } else {
                self.send(&entity);
            }
        }
    }

    /// Send what `entity`'s lane has queued as one entry.
    fn send(&mut self, entity: &str) {
        let Some(lane) = self.lanes.get_mut(entity) else {
            return;
        };
        let queued = std::mem::take(&mut lane.queue);
        // One read for both the writers' check and the expected position:
        // an entry applied between the two would otherwise pass the check
        // and then be named as the position this entry follows.
        let last = self.cl.last_applied(entity);
        let mut arrivals = Vec::new();
        let mut jobs = Vec::new();
        let mut answered = Vec::new();
        for (n, mut j) in queued {
            // A writer whose earlier write set was refused has memory ahead
            // of storage: nothing more of it may land until it is rebuilt.
            // Nothing of it applied, so its request may be asked again.
            if j.tracker.as_ref().is_some_and(|t| t.failed()) {
                answered.push(n);
                j.answer(Err(StorageError::Fenced(entity.to_string())));
                continue;
            }
            if let Some(f) = j.w.fence.take() {
                if let Err(pos) = stale(last, f.since, self.cl.writer(&j)) {
                    self.cl.need(entity, pos);
                    if let Some(t) = &j.tracker {
                        t.fail();
                    }
                    answered.push(n);
                    j.answer(Err(StorageError::Fenced(f.name.to_string())));
                    continue;
                }
            }
            arrivals.push(n);
            jobs.push(j);
        }
        self.finish(&answered);
        if jobs.iter().all(|j| j.w.is_empty()) {
            // Barriers of this lane: every earlier entry of it is applied.
            for j in jobs {
                j.answer(Ok(()));
            }
            self.finish(&arrivals);
            if self.lanes.get(entity).is_some_and(|l| l.queue.is_empty()) {
                self.lanes.remove(entity);
            }
            return;
        }
        let msg_id = format!(
            "{}-{:x}-{}",
            self.cl.node,
            self.cl.boot,
            self.cl.next_msg.fetch_add(1, Ordering::Relaxed)
        );
        let expected = last.map_or(0, |(pos, _)| pos);
        let sets: Vec<(Writer, &WriteSet)> =
            jobs.iter().map(|j| (self.cl.writer(j), &j.w)).collect();
        let payload = Bytes::from(encode_entry(
            &msg_id,
            self.cl.boot,
            crate::clock::now(),
            expected,
            &sets,
        ));
        if let Ok(mut a) = self.cl.awaiting.lock() {
            a.insert(msg_id.clone(), jobs);
        }
        self.in_entry.insert(msg_id.clone(), arrivals);
        if let Some(lane) = self.lanes.get_mut(entity) {
            lane.busy = Some(msg_id.clone());
        }
        let (cl, entity) = (Arc::clone(&self.cl), entity.to_string());
        tokio::spawn(async move {
            let refused = |error, catch_up| Done::Refused {
                entity: entity.clone(),
                msg_id: msg_id.clone(),
                error,
                catch_up,
            };
            match cl.log.append(&entity, expected, &msg_id, payload).await {
                // Answered by the applier once applied here.
                Ok(_) => {}
                Err(AppendError::Conflict { .. }) => {
                    let now = cl.log.last_of(&entity).await.ok();
                    let _ = cl
                        .done
                        .send(refused(StorageError::Fenced(entity.clone()), now));
                }
                Err(AppendError::InDoubt { last, .. }) => {
                    // If it landed, applying it answers its writers; once
                    // this node applied `last` and it is still waiting, it
                    // did not.
                    let mut applied = cl.applied.subscribe();
                    while *applied.borrow_and_update() < last {
                        if applied.changed().await.is_err() {
                            break;
                        }
                    }
                    let waiting = cl.awaiting.lock().is_ok_and(|a| a.contains_key(&msg_id));
                    if waiting {
                        let _ = cl
                            .done
                            .send(refused(StorageError::Fenced(entity.clone()), Some(last)));
                    }
                }
                Err(e @ AppendError::Unavailable(_)) => {
                    let _ = cl.done.send(refused(StorageError::Io(e.to_string()), None));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer is behind once another writer wrote its entity after the
    /// position it read; its own writes never make it so.
    #[test]
    fn a_writer_is_stale_only_after_another_writers_later_write() {
        let (me, other) = ([1; 16], [2; 16]);
        assert_eq!(stale(None, 5, me), Ok(()));
        assert_eq!(stale(Some((9, me)), 5, me), Ok(()));
        assert_eq!(stale(Some((5, other)), 5, me), Ok(()));
        assert_eq!(stale(Some((4, other)), 5, me), Ok(()));
        assert_eq!(stale(Some((6, other)), 5, me), Err(6));
    }

    #[test]
    fn entries_read_back_as_written() {
        let mut a = WriteSet::new();
        a.creates.push(b"u/1".to_vec());
        a.ops.push((b"u/1".to_vec(), Some(b"{}".to_vec())));
        a.ops.push((b"x/gone".to_vec(), None));
        a.journal.push(b"rec".to_vec());
        a.events.push(b"{\"e\":1}".to_vec());
        let b = WriteSet::new();
        let bytes = encode_entry(
            "n1-1-1",
            7,
            1_700_000_000,
            41,
            &[([1; 16], &a), ([2; 16], &b)],
        );
        let d = decode_entry(&bytes).expect("decodes");
        assert_eq!(
            (d.msg_id.as_str(), d.boot, d.at, d.expected),
            ("n1-1-1", 7, 1_700_000_000, 41)
        );
        assert_eq!(d.sets.len(), 2);
        assert_eq!(d.sets[0].writer, [1; 16]);
        assert_eq!(d.sets[0].creates, a.creates);
        assert_eq!(d.sets[0].ops, a.ops);
        assert_eq!(d.sets[0].journal, a.journal);
        assert_eq!(d.sets[0].events, a.events);
        assert!(d.sets[1].ops.is_empty());
        for cut in 0..bytes.len() {
            assert!(decode_entry(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
