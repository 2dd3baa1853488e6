//! The log of record on NATS JetStream, for cluster mode: a replicated
//! stream in which each entity (a group, a wallet, a packet, ...) appends to
//! its own subject.
//!
//! - [`StreamLog::append`] publishes with `Nats-Expected-Last-Subject-Sequence`
//!   set to the entity's last position as its writer knows it: JetStream
//!   refuses the append if anyone else wrote the entity since
//!   ([`AppendError::Conflict`]), which keeps one writer per entity even while
//!   two nodes briefly both think they own it. `Nats-Msg-Id` makes a retried
//!   publish land once; timeouts and leader elections are retried with the
//!   same id until `retry_for` runs out ([`AppendError::Unavailable`]). The
//!   position returned is durable: JetStream acknowledged it on a quorum of
//!   replicas.
//! - [`StreamLog::last`] reads an entity's last position (0: never written),
//!   where its new writer starts.
//! - [`StreamLog::follow`] delivers every entry from a position on, in stream
//!   order: what each node applies to its local view.
//! - [`StreamLog::announce`] and [`StreamLog::live_nodes`]: each node's
//!   heartbeat in a key-value bucket whose entries expire after `node_ttl`
//!   (2.9 has no per-key expiry, so the bucket's `max_age` does it); the
//!   live nodes are those whose last heartbeat has not expired. Both are
//!   read from the bucket's stream leader, so a read sees every
//!   acknowledged heartbeat.
//!
//! The client runs on a runtime of its own (one thread), so the store's
//! threads can use it without an async context of theirs; the blocking
//! calls (`connect`, `last`, `announce`, `live_nodes`) are for such threads,
//! never for async code. Written against
//! nats-server 2.9 (Debian's): no stream settings of later servers are
//! used, since 2.9 silently ignores them.

use async_nats::jetstream::{
    self,
    consumer::{pull, DeliverPolicy},
    context::{Context, PublishErrorKind},
    kv,
    message::PublishMessage,
    object_store,
    stream::{Config, DiscardPolicy, StorageType},
};
use bytes::Bytes;
use futures_util::StreamExt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::metrics;

/// How to reach the stream.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// NATS server URLs (`nats://host:port`).
    pub urls: Vec<String>,
    /// The stream's name; its subjects are `{subject_prefix}.>`.
    pub stream: String,
    pub subject_prefix: String,
    /// Replicas of the stream (3 in production: it survives one server).
    pub replicas: usize,
    /// How long an append retries through timeouts and leader elections
    /// (NATS elects a new stream leader within about 10 s).
    pub retry_for: Duration,
    /// The heartbeats' bucket, and how long a heartbeat keeps its node live.
    pub nodes_bucket: String,
    pub node_ttl: Duration,
    /// The bucket holding what every node shares (the key ring).
    pub keys_bucket: String,
    /// The object store holding the latest snapshot of the state.
    pub snapshots_bucket: String,
}

impl LogOptions {
    pub fn new(urls: Vec<String>) -> LogOptions {
        LogOptions {
            urls,
            stream: "QRGATE".into(),
            subject_prefix: "qrgate".into(),
            replicas: 3,
            retry_for: Duration::from_secs(20),
            nodes_bucket: "qrgate-nodes".into(),
            node_ttl: Duration::from_secs(5),
            keys_bucket: "qrgate-keys".into(),
            snapshots_bucket: "qrgate-snapshots".into(),
        }
    }
}

/// Why an append did not land.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Someone else wrote the entity after the position its writer gave:
    /// this writer is stale and must be rebuilt from the log.
    #[error("another writer appended to {entity} after position {expected}")]
    Conflict { entity: String, expected: u64 },
    /// A retried append was refused because the entity moved on, and an
    /// earlier attempt may have landed before its answer was lost: the
    /// entry is in the log at or before position `last` (the entity's last
    /// entry now), or nowhere.
    #[error("an append to {entity} may have landed at or before position {last}")]
    InDoubt { entity: String, last: u64 },
    /// JetStream did not acknowledge in time (no quorum, no leader). The
    /// append may still land later, once, under its message id.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
}

/// One entry of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the stream (from 1).
    pub seq: u64,
    pub entity: String,
    pub payload: Bytes,
}

pub struct StreamLog {
    rt: tokio::runtime::Runtime,
    js: Context,
    opts: LogOptions,
    names: Names,
    buckets: Buckets,
    /// Set when a follower found the stream without an entry it had
    /// delivered (see [`StreamLog::went_back`]).
    went_back: Arc<Mutex<Option<WentBack>>>,
}

/// The stream no longer holds what a follower delivered: the entry at
/// `delivered` is gone or different, and the stream ends at `stream_last`.
/// NATS servers that lose a quorum to crashes can come back without
/// entries they had acknowledged (nats-server issues 6888, 6236).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WentBack {
    pub delivered: u64,
    pub stream_last: u64,
}

/// A node as its last heartbeat announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// Where other nodes reach it.
    pub url: String,
    /// The log position its local checkpoint holds: the log must keep what
    /// follows it.
    pub checkpoint: u64,
}

/// Entities and their subjects: `group/g_…` is `{prefix}.group.g_…` (ids
/// hold no `.`).
#[derive(Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn subject(&self, entity: &str) -> String {
        format!("{}.{}", self.prefix, entity.replacen('/', ".", 1))
    }

    fn entity(&self, subject: &str) -> Option<String> {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.strip_prefix('.'))
            .map(|e| e.replacen('.', "/", 1))
    }
}

impl StreamLog {
    /// Connect and create the stream (and the heartbeats' bucket) if they
    /// do not exist, retrying through a leader election for `retry_for`.
    pub fn connect(opts: LogOptions) -> Result<StreamLog, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qrgate-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS runtime: {e}"))?;
        let (js, buckets) = rt.block_on(async {
            // A ping a second: a server that stopped answering (SIGSTOP, a
            // stalled host) holds its connections open, and the client only
            // moves to another server after two unanswered pings (with the
            // default of one a minute, every write waited two minutes).
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .ping_interval(Duration::from_secs(1))
                .connect(opts.urls.clone())
                .await
                .map_err(|e| format!("cannot connect to NATS at {:?}: {e}", opts.urls))?;
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(2))
                .build(client);
            // A node may start while the servers elect a leader (after one
            // was lost): try again until `retry_for` runs out.
            let deadline = Instant::now() + opts.retry_for;
            let mut attempt = 0u32;
            loop {
                match open_streams(&js, &opts).await {
                    Ok(buckets) => return Ok::<_, String>((js, buckets)),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(e) => tracing::warn!(error = %e, "the log is not ready; trying again"),
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        })?;
        let names = Names {
            prefix: opts.subject_prefix.clone(),
        };
        Ok(StreamLog {
            rt,
            js,
            opts,
            names,
            buckets,
            went_back: Arc::default(),
        })
    }

    /// Append `payload` to `entity`'s subject if its last position is still
    /// `expected` (0: the entity was never written). Resolves to the entry's
    /// position once a quorum stored it.
    pub fn append(
        &self,
        entity: &str,
        expected: u64,
        msg_id: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<u64, AppendError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let (js, subject) = (self.js.clone(), self.names.subject(entity));
        let (entity, msg_id) = (entity.to_string(), msg_id.to_string());
        let deadline = Instant::now() + self.opts.retry_for;
        let stream = self.opts.stream.clone();
        self.rt.spawn(async move {
            let started = Instant::now();
            let r = append(
                &js, &stream, &subject, &entity, expected, &msg_id, payload, deadline,
            )
            .await;
            metrics::LOG_APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
            let outcome = match &r {
                Ok(_) => "ok",
                Err(AppendError::Conflict { .. }) => "conflict",
                Err(AppendError::InDoubt { .. }) => "in_doubt",
                Err(AppendError::Unavailable(_)) => "unavailable",
            };
            metrics::LOG_APPENDS.with_label_values(&[outcome]).inc();
            let _ = tx.send(r);
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(AppendError::Unavailable("the NATS runtime stopped".into()))
            })
        }
    }

    /// The last position of `entity` (0: never written).
    pub fn last(&self, entity: &str) -> Result<u64, AppendError> {
        let subject = self.names.subject(entity);
        let deadline = Instant::now() + self.opts.retry_for;
        self.rt
            .block_on(last_of(&self.js, &self.opts.stream, &subject, deadline))
            .map(|m| m.map_or(0, |(seq, ..)| seq))
    }

    /// [`last`](Self::last) for async code: runs on the log's runtime.
    pub fn last_of(
        &self,
        entity: &str,
    ) -> impl Future<Output = Result<u64, AppendError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let (js, stream, subject) = (
            self.js.clone(),
            self.opts.stream.clone(),
            self.names.subject(entity),
        );
        let deadline = Instant::now() + self.opts.retry_for;
        self.rt.spawn(async move {
            let r = last_of(&js, &stream, &subject, deadline)
                .await
                .map(|m| m.map_or(0, |(seq, ..)| seq));
            let _ = tx.send(r);
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(AppendError::Unavailable("the NATS runtime stopped".into()))
            })
        }
    }

    /// The stream's last position (0: empty): where a starting node has
    /// caught up. Blocking.
    pub fn stream_last(&self) -> Result<u64, AppendError> {
        let deadline = Instant::now() + self.opts.retry_for;
        self.rt
            .block_on(stream_last(&self.js, &self.opts.stream, deadline))
    }

    /// The stream's last position, asked for at most `within`.
    pub fn stream_last_within(
        &self,
        within: Duration,
    ) -> impl Future<Output = Result<u64, AppendError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let (js, stream) = (self.js.clone(), self.opts.stream.clone());
        let deadline = Instant::now() + within;
        self.rt.spawn(async move {
            let _ = tx.send(stream_last(&js, &stream, deadline).await);
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(AppendError::Unavailable("the NATS runtime stopped".into()))
            })
        }
    }

    /// The shared value `key` (`None`: never set), retried through a
    /// leader election for `retry_for`. Blocking.
    pub fn shared(&self, key: &str) -> Result<Option<Bytes>, AppendError> {
        self.retrying(|| read_key(&self.buckets.keys, key))
    }

    /// Set the shared value `key` unless it is set: `false` when another
    /// node set it first (or an earlier try of this one whose answer was
    /// lost). Retried through a leader election for `retry_for`. Blocking.
    pub fn share(&self, key: &str, value: Bytes) -> Result<bool, AppendError> {
        use async_nats::jetstream::kv::CreateErrorKind;
        self.retrying(|| async {
            match self.buckets.keys.create(key, value.clone()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// `f` until it succeeds or `retry_for` runs out.
    fn retrying<T, F: Future<Output = Result<T, String>>>(
        &self,
        f: impl Fn() -> F,
    ) -> Result<T, AppendError> {
        let deadline = Instant::now() + self.opts.retry_for;
        self.rt.block_on(async {
            let mut attempt = 0u32;
            loop {
                match f().await {
                    Ok(v) => return Ok(v),
                    Err(e) if Instant::now() >= deadline => return Err(AppendError::Unavailable(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "the cluster's shared bucket did not answer; trying again");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        })
    }

    /// The stream's first position (0: empty): what a trim left.
    pub fn first(&self) -> Result<u64, AppendError> {
        self.rt
            .block_on(async {
                let mut s = self.js.get_stream(&self.opts.stream).await?;
                Ok::<_, async_nats::Error>(s.info().await?.state.first_sequence)
            })
            .map_err(|e| AppendError::Unavailable(e.to_string()))
    }

    /// Remove the entries before position `keep_from` (nothing that
    /// follows it). Blocking.
    pub fn trim(&self, keep_from: u64) -> Result<u64, AppendError> {
        self.rt
            .block_on(async {
                let s = self.js.get_stream(&self.opts.stream).await?;
                Ok::<_, async_nats::Error>(s.purge().sequence(keep_from).await?.purged)
            })
            .map_err(|e| AppendError::Unavailable(e.to_string()))
    }

    /// Store the file at `path` as the latest snapshot. Blocking.
    pub fn put_snapshot(&self, path: &std::path::Path) -> Result<(), String> {
        self.rt.block_on(async {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            self.buckets
                .snapshots
                .put("state", &mut f)
                .await
                .map_err(|e| format!("cannot store the snapshot: {e}"))?;
            Ok(())
        })
    }

    /// Write the latest snapshot into `path`: `false` if there is none.
    /// Blocking.
    pub fn get_snapshot(&self, path: &std::path::Path) -> Result<bool, String> {
        use async_nats::jetstream::object_store::GetErrorKind;
        self.rt.block_on(async {
            let mut obj = match self.buckets.snapshots.get("state").await {
                Ok(o) => o,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(format!("cannot read the snapshot: {e}")),
            };
            let mut f = tokio::fs::File::create(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tokio::io::copy(&mut obj, &mut f)
                .await
                .map_err(|e| format!("cannot read the snapshot: {e}"))?;
            f.sync_all()
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(true)
        })
    }

    /// The log's runtime, for threads that wait on its channels.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Announce `node`, reachable at `url`: live for `node_ttl` from now.
    /// Call it every third of `node_ttl` or so.
    pub fn announce(&self, node: &str, url: &str, checkpoint: u64) -> Result<(), AppendError> {
        let unavailable = |e: &dyn std::fmt::Display| AppendError::Unavailable(e.to_string());
        self.rt.block_on(async {
            tokio::time::timeout(
                self.opts.node_ttl,
                self.buckets
                    .nodes
                    .put(node, Bytes::from(format!("{url} {checkpoint}"))),
            )
            .await
            .map_err(|e| unavailable(&e))?
            .map_err(|e| unavailable(&e))
        })?;
        Ok(())
    }

    /// The nodes whose last heartbeat has not expired, by id.
    pub fn live_nodes(&self) -> Result<Vec<Node>, AppendError> {
        let nodes = &self.buckets.nodes;
        self.rt
            .block_on(async {
                let mut subjects = nodes
                    .stream
                    .info_with_subjects(format!("{}>", nodes.prefix))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut ids = Vec::new();
                while let Some(got) = subjects.next().await {
                    let (subject, _) = got.map_err(|e| e.to_string())?;
                    if let Some(id) = subject.strip_prefix(&nodes.prefix) {
                        ids.push(id.to_string());
                    }
                }
                let mut out = Vec::new();
                for id in ids {
                    // Expired between the listing and now: not live.
                    let Some(v) = read_key(nodes, &id).await? else {
                        continue;
                    };
                    let v = String::from_utf8_lossy(&v).into_owned();
                    let (url, checkpoint) = v.split_once(' ').unwrap_or((v.as_str(), "0"));
                    out.push(Node {
                        id,
                        url: url.to_string(),
                        checkpoint: checkpoint.parse().unwrap_or(0),
                    });
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            })
            .map_err(AppendError::Unavailable)
    }

    /// Every entry from position `from` on (1: the start), in stream order,
    /// through a bounded channel (a reader that falls behind holds the log
    /// back); the follower stops when the receiver is dropped. Read it with
    /// `blocking_recv` from a thread, or `recv().await`.
    ///
    /// A follower that finds the stream without an entry it delivered
    /// stops delivering and says so through [`went_back`](Self::went_back).
    pub fn follow(&self, from: u64) -> tokio::sync::mpsc::Receiver<Entry> {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let f = Follower {
            js: self.js.clone(),
            stream: self.opts.stream.clone(),
            names: self.names.clone(),
            next: from.max(1),
            last: None,
            went_back: Arc::clone(&self.went_back),
        };
        self.rt.spawn(async move { f.run(&tx).await });
        rx
    }

    /// Whether a follower found that the stream went back behind what it
    /// had delivered.
    pub fn went_back(&self) -> Option<WentBack> {
        self.went_back.lock().ok().and_then(|w| *w)
    }
}

/// The buckets beside the log.
struct Buckets {
    nodes: kv::Store,
    keys: kv::Store,
    snapshots: object_store::ObjectStore,
}

/// A bucket's value for `key` as the bucket's stream leader holds it, so
/// a read sees every put acknowledged before it. (The bucket's own `get`
/// asks any replica, and a follower that has not yet applied the last put
/// answers without it; listing keys through a consumer has the same hole.)
async fn read_key(bucket: &kv::Store, key: &str) -> Result<Option<Bytes>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match bucket
        .stream
        .get_last_raw_message_by_subject(&format!("{}{key}", bucket.prefix))
        .await
    {
        Ok(m) => Ok(Some(m.payload)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A key-value bucket's own stream: async-nats 0.52 cannot create a bucket
/// on a 2.9 server (it reads account fields 2.9 lacks), but opens one made
/// this way. `max_age` zero: entries never expire.
async fn open_bucket(
    js: &Context,
    bucket: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, String> {
    js.get_or_create_stream(Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        num_replicas: replicas,
        storage: StorageType::File,
        max_messages_per_subject: 1,
        max_age,
        discard: DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create the bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("cannot open the bucket {bucket}: {e}"))
}

/// Create (or find) the stream, the heartbeats' and the keys' buckets and
/// the snapshots' object store.
async fn open_streams(js: &Context, opts: &LogOptions) -> Result<Buckets, String> {
    js.get_or_create_stream(Config {
        name: opts.stream.clone(),
        subjects: vec![format!("{}.>", opts.subject_prefix)],
        num_replicas: opts.replicas,
        storage: StorageType::File,
        max_messages_per_subject: -1,
        max_messages: -1,
        max_bytes: -1,
        discard: DiscardPolicy::Old,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create the stream {}: {e}", opts.stream))?;
    let nodes = open_bucket(js, &opts.nodes_bucket, opts.replicas, opts.node_ttl).await?;
    let keys = open_bucket(js, &opts.keys_bucket, opts.replicas, Duration::ZERO).await?;
    let bucket = &opts.snapshots_bucket;
    let snapshots = match js.get_object_store(bucket).await {
        Ok(s) => s,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                storage: StorageType::File,
                num_replicas: opts.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the object store {bucket}: {e}"))?,
    };
    Ok(Buckets {
        nodes,
        keys,
        snapshots,
    })
}

/// After this long without an entry, the follower checks that the stream
/// holds nothing it has not delivered.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// How long a stream that seems to have gone back behind what this node
/// applied must keep seeming so before the node believes it.
const WENT_BACK_CONFIRM: Duration = Duration::from_secs(10);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(5)).min(500))
}

#[allow(clippy::too_many_arguments)]
async fn append(
    js: &Context,
    stream: &str,
    subject: &str,
    entity: &str,
    expected: u64,
    msg_id: &str,
    payload: Bytes,
    deadline: Instant,
) -> Result<u64, AppendError> {
    let conflict = || AppendError::Conflict {
        entity: entity.to_string(),
        expected,
    };
    let mut attempt = 0u32;
    loop {
        let msg = PublishMessage::build()
            .payload(payload.clone())
            .expected_last_subject_sequence(expected)
            .message_id(msg_id);
        let sent = match js.send_publish(subject.to_string(), msg).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let e = match sent {
            Ok(ack) => return Ok(ack.sequence),
            Err(e) => e,
        };
        if e.kind() == PublishErrorKind::WrongLastSequence {
            if attempt == 0 {
                return Err(conflict());
            }
            // An earlier attempt may have landed before its answer was
            // lost: the server checks the sequence before the message id,
            // so look at what the subject holds now. Ours last: it landed.
            // Another's last: ours may be before it, or nowhere.
            return match last_of(js, stream, subject, deadline).await? {
                Some((seq, id, _)) if id.as_deref() == Some(msg_id) => Ok(seq),
                Some((seq, _, _)) => Err(AppendError::InDoubt {
                    entity: entity.to_string(),
                    last: seq,
                }),
                None => Err(conflict()),
            };
        }
        if Instant::now() >= deadline {
            return Err(AppendError::Unavailable(e.to_string()));
        }
        metrics::LOG_RETRIES.inc();
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// The subject's last entry: its position and message id.
async fn stream_last(js: &Context, stream: &str, deadline: Instant) -> Result<u64, AppendError> {
    let mut attempt = 0u32;
    loop {
        let e = match js.get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => return Ok(info.state.last_sequence),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(AppendError::Unavailable(e));
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

async fn last_of(
    js: &Context,
    stream: &str,
    subject: &str,
    deadline: Instant,
) -> Result<Option<(u64, Option<String>, Bytes)>, AppendError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let mut attempt = 0u32;
    loop {
        let got = match js.get_stream(stream).await {
            Ok(s) => s
                .get_last_raw_message_by_subject(subject)
                .await
                .map_err(|e| match e.kind() {
                    LastRawMessageErrorKind::NoMessageFound => None,
                    _ => Some(e.to_string()),
                }),
            Err(e) => Err(Some(e.to_string())),
        };
        let e = match got {
            Ok(m) => {
                let id = m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_string());
                return Ok(Some((m.sequence, id, m.payload)));
            }
            Err(None) => return Ok(None),
            Err(Some(e)) => e,
        };
        if Instant::now() >= deadline {
            return Err(AppendError::Unavailable(e));
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Follows the stream for [`StreamLog::follow`]: a consumer from `next`
/// on, started again whenever it cannot be made or fails (a leader
/// election, a lost server), and each time it starts, a check that the
/// stream still holds the last entry delivered, as it was.
struct Follower {
    js: Context,
    stream: String,
    names: Names,
    next: u64,
    /// The last entry delivered: its position and a hash of its payload.
    last: Option<(u64, blake3::Hash)>,
    went_back: Arc<Mutex<Option<WentBack>>>,
}

/// Why a consumer ended.
enum Stop {
    /// The receiver is gone.
    Done,
    /// The stream went back behind what was delivered: deliver nothing more.
    WentBack(WentBack),
    /// Start again.
    Failed(String),
}

impl Follower {
    /// Ends when the receiver is gone or the stream went back. A stream
    /// that seems to have gone back is asked again for [`WENT_BACK_CONFIRM`]
    /// first: right after an election a server that was leader (stopped,
    /// say, and resumed) can still answer with the state it had, behind
    /// what the new leader holds.
    async fn run(mut self, tx: &tokio::sync::mpsc::Sender<Entry>) {
        let mut attempt = 0u32;
        let mut seemed_back: Option<std::time::Instant> = None;
        loop {
            match self.once(tx).await {
                Stop::Done => return,
                Stop::WentBack(w)
                    if seemed_back.is_none_or(|t| t.elapsed() < WENT_BACK_CONFIRM) =>
                {
                    let since = *seemed_back.get_or_insert_with(std::time::Instant::now);
                    tracing::warn!(
                        delivered = w.delivered,
                        stream_last = w.stream_last,
                        for_ms = since.elapsed().as_millis() as u64,
                        "the log seems to have gone back; asking again"
                    );
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Stop::WentBack(w) => {
                    tracing::error!(
                        delivered = w.delivered,
                        stream_last = w.stream_last,
                        "the log went back: it no longer holds entries this node applied"
                    );
                    if let Ok(mut g) = self.went_back.lock() {
                        *g = Some(w);
                    }
                    return;
                }
                Stop::Failed(e) => {
                    if tx.is_closed() {
                        return;
                    }
                    // The stream held what was delivered, after all.
                    seemed_back = None;
                    tracing::warn!(error = %e, next = self.next, "following the log failed; starting again");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Whether the stream still holds the last entry delivered, as it was.
    async fn check_last(&self, stream: &jetstream::stream::Stream) -> Result<(), Stop> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let Some((seq, hash)) = self.last else {
            return Ok(());
        };
        let state = &stream.cached_info().state;
        let went_back = Stop::WentBack(WentBack {
            delivered: seq,
            stream_last: state.last_sequence,
        });
        if state.last_sequence < seq {
            return Err(went_back);
        }
        if state.first_sequence > seq {
            // Trimmed below it: nothing to compare with.
            return Ok(());
        }
        match stream.get_raw_message(seq).await {
            Ok(m) if blake3::hash(&m.payload) == hash => Ok(()),
            Ok(_) => Err(went_back),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Err(went_back),
            Err(e) => Err(Stop::Failed(format!("cannot read the entry at {seq}: {e}"))),
        }
    }

    /// One consumer from `next` on.
    async fn once(&mut self, tx: &tokio::sync::mpsc::Sender<Entry>) -> Stop {
        let stream = match self.js.get_stream(&self.stream).await {
            Ok(s) => s,
            Err(e) => return Stop::Failed(format!("cannot open the stream: {e}")),
        };
        if let Err(stop) = self.check_last(&stream).await {
            return stop;
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.next,
                },
                ..Default::default()
            })
            .await;
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => return Stop::Failed(format!("cannot follow the stream: {e}")),
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => return Stop::Failed(format!("cannot follow the stream: {e}")),
        };
        loop {
            // A consumer whose server died can stay silent for half a minute
            // before it errs, and every write waiting to be applied waits as
            // long: when nothing came for a moment, ask the stream whether it
            // holds more than was delivered (start over), or less (it went
            // back).
            let m = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    let last = match stream.get_info().await {
                        Ok(info) => info.state.last_sequence,
                        Err(e) => {
                            return Stop::Failed(format!("cannot read the stream's state: {e}"))
                        }
                    };
                    if last + 1 < self.next {
                        return Stop::WentBack(WentBack {
                            delivered: self.next - 1,
                            stream_last: last,
                        });
                    }
                    if last >= self.next {
                        return Stop::Failed(format!(
                            "the follower stalled at {} while the stream holds {last}",
                            self.next
                        ));
                    }
                    continue;
                }
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => return Stop::Failed(format!("following the stream failed: {e}")),
            };
            let seq = match m.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => return Stop::Failed(format!("an entry without its position: {e}")),
            };
            if seq < self.next {
                continue;
            }
            self.next = seq + 1;
            self.last = Some((seq, blake3::hash(&m.payload)));
            let Some(entity) = self.names.entity(&m.subject) else {
                continue;
            };
            let entry = Entry {
                seq,
                entity,
                payload: m.payload.clone(),
            };
            if tx.send(entry).await.is_err() {
                return Stop::Done;
            }
        }
        Stop::Failed("the stream's consumer ended".into())
    }
}
