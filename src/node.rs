//! This process as a node of a cluster (docs/cluster.md): the log it
//! joins, the key ring every node shares, its heartbeat and the live nodes
//! it sees. One node (no `[cluster]`) has none of this.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::storage::jetstream::{LogOptions, StreamLog};
use crate::storage::Storage;

/// The shared value holding the cluster's key ring.
const KEY_RING: &str = "ring";
/// The entity whose owner writes the snapshots and trims the log.
const SNAPSHOTS: &str = "snapshots/state";

pub struct Node {
    pub id: String,
    /// Where the other nodes reach this one.
    pub url: String,
    pub log: Arc<StreamLog>,
    /// Keys the signatures of requests forwarded between nodes.
    pub forward_key: [u8; 32],
    /// The live nodes as the last heartbeat saw them (ids, and each node).
    live: RwLock<(Vec<String>, Vec<crate::storage::jetstream::Node>)>,
    /// Nodes this one could not reach, and when: left out of placement
    /// until their heartbeat has had time to expire.
    suspects: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a node this one could not reach is left out of placement (a
/// heartbeat expires after 5 s).
const SUSPECT_FOR: Duration = Duration::from_secs(5);

impl Node {
    /// Connect to the log (creating its stream on first use) and make the
    /// data dir's key ring the cluster's. Blocking: call it off any async
    /// runtime.
    pub fn join(config: &Config, url: String) -> Result<Node, String> {
        let c = &config.cluster;
        let mut opts = LogOptions::new(c.nats.clone());
        opts.replicas = c.replicas;
        let log = Arc::new(StreamLog::connect(opts)?);
        share_keys(&log, &config.data_dir)?;
        Ok(Node {
            id: c.node_id.clone(),
            url,
            log,
            forward_key: blake3::derive_key("qrgate 2026 cluster forward", c.secret.as_bytes()),
            live: RwLock::default(),
            suspects: Default::default(),
        })
    }

    /// Announce this node now and then, with the log position its
    /// checkpoint holds, and note who else is live; and, while this node
    /// owns the snapshots, write one every `snapshot_every` and trim the log
    /// below what it and every live node's checkpoint hold. Threads of their
    /// own, for as long as the process runs.
    pub fn start(
        self: &Arc<Self>,
        storage: Storage,
        data_dir: PathBuf,
        snapshot_every: Duration,
    ) -> Result<(), String> {
        std::sync::LazyLock::force(&crate::metrics::PLACEMENT_CHANGES);
        let node = Arc::clone(self);
        let store = storage.clone();
        std::thread::Builder::new()
            .name("qrgate-heartbeat".into())
            .spawn(move || loop {
                let checkpoint = store.checkpoint_position().unwrap_or(0);
                if let Err(e) = node.log.announce(&node.id, &node.url, checkpoint) {
                    tracing::warn!(error = %e, "cannot announce this node");
                }
                match node.log.live_nodes() {
                    Ok(nodes) => {
                        crate::metrics::LIVE_NODES.set(nodes.len() as i64);
                        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
                        if let Ok(mut live) = node.live.write() {
                            let same = |a: &[String], b: &[String]| {
                                a.len() == b.len() && a.iter().all(|x| b.contains(x))
                            };
                            if !live.0.is_empty() && !same(&live.0, &ids) {
                                crate::metrics::PLACEMENT_CHANGES.inc();
                            }
                            *live = (ids, nodes);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list the live nodes"),
                }
                std::thread::sleep(Duration::from_millis(1500));
            })
            .map_err(|e| format!("cannot start the heartbeat: {e}"))?;
        let node = Arc::clone(self);
        std::thread::Builder::new()
            .name("qrgate-snapshots".into())
            .spawn(move || {
                let mut previous = None;
                loop {
                    std::thread::sleep(snapshot_every);
                    if node.owns(SNAPSHOTS) {
                        match node.snapshot_and_trim(&storage, &data_dir, previous) {
                            Ok(pos) => previous = Some(pos),
                            Err(e) => tracing::warn!(error = %e, "no snapshot this time"),
                        }
                    } else {
                        previous = None;
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the snapshots: {e}"))
    }

    /// Write a snapshot and store it in the log's object store; then trim
    /// the log below what the `previous` snapshot (this one's predecessor,
    /// written a whole interval ago) and every live node's checkpoint hold.
    /// The previous one, not this one: a node that started from the
    /// previous snapshot a moment ago, before its first heartbeat, still
    /// finds what follows it. Returns this snapshot's position.
    fn snapshot_and_trim(
        &self,
        storage: &Storage,
        data_dir: &Path,
        previous: Option<u64>,
    ) -> Result<u64, String> {
        let started = std::time::Instant::now();
        let file = data_dir.join("snapshot.out");
        let pos = storage.export_snapshot(&file).map_err(|e| e.to_string())?;
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let stored = self.log.put_snapshot(&file);
        let _ = std::fs::remove_file(&file);
        stored?;
        crate::metrics::SNAPSHOT_POSITION.set(pos as i64);
        let oldest = self
            .live
            .read()
            .map(|l| l.1.iter().map(|n| n.checkpoint).min().unwrap_or(0))
            .unwrap_or(0);
        let Some(previous) = previous else {
            tracing::info!(position = pos, mb = bytes as f64 / 1e6, "snapshot stored");
            return Ok(pos);
        };
        let keep_from = previous.min(oldest) + 1;
        let purged = self.log.trim(keep_from).map_err(|e| e.to_string())?;
        tracing::info!(
            position = pos,
            mb = bytes as f64 / 1e6,
            ms = started.elapsed().as_millis(),
            keep_from,
            purged,
            "snapshot stored; log trimmed"
        );
        Ok(pos)
    }

    /// This node could not reach `id`: place entities as if it were gone
    /// until its heartbeat has had time to expire, so that every node
    /// moves its entities to the same next owner at once, not only after
    /// the heartbeat expired.
    pub fn suspect(&self, id: &str) {
        if id == self.id {
            return;
        }
        if let Ok(mut s) = self.suspects.lock() {
            let fresh = s
                .insert(id.to_string(), std::time::Instant::now())
                .is_none_or(|at| at.elapsed() >= SUSPECT_FOR);
            if fresh {
                crate::metrics::PLACEMENT_CHANGES.inc();
            }
        }
    }

    /// The live nodes entities are placed among: those of the last
    /// heartbeat, less the ones this node could not reach lately.
    fn placing(&self) -> Option<(Vec<String>, Vec<crate::storage::jetstream::Node>)> {
        let live = self.live.read().ok()?;
        let (ids, nodes) = &*live;
        let suspects: Vec<String> = match self.suspects.lock() {
            Ok(mut s) => {
                s.retain(|_, at| at.elapsed() < SUSPECT_FOR);
                s.keys().cloned().collect()
            }
            Err(_) => Vec::new(),
        };
        let keep = |id: &String| !suspects.contains(id);
        Some((
            ids.iter().filter(|i| keep(i)).cloned().collect(),
            nodes.iter().filter(|n| keep(&n.id)).cloned().collect(),
        ))
    }

    /// Whether this node, among the live ones, owns `entity`.
    pub fn owns(&self, entity: &str) -> bool {
        let Some((ids, _)) = self.placing() else {
            return false;
        };
        ids.contains(&self.id)
            && crate::domain::placement::owner(entity, &ids) == Some(self.id.as_str())
    }

    /// The ids of the live nodes as last seen.
    pub fn live(&self) -> Vec<String> {
        self.live.read().map(|l| l.0.clone()).unwrap_or_default()
    }

    /// The node that owns `entity` when it is another live one; `None`
    /// when this node owns it, or when this node is not among the live
    /// nodes it sees (it then serves everything itself).
    pub fn owner_elsewhere(&self, entity: &str) -> Option<crate::storage::jetstream::Node> {
        let (ids, nodes) = self.placing()?;
        if !ids.contains(&self.id) {
            return None;
        }
        let owner = crate::domain::placement::owner(entity, &ids)?;
        if owner == self.id {
            return None;
        }
        nodes.into_iter().find(|n| n.id == owner)
    }
}

/// Every node signs and checks invitations, tags and the ledger chain with
/// the same keys: the first node to start puts its data dir's key ring in
/// the cluster's shared bucket, and every other node installs that one in
/// its data dir.
fn share_keys(log: &StreamLog, data_dir: &Path) -> Result<(), String> {
    let install = |payload: &Bytes| -> Result<(), String> {
        let files: Vec<(String, String)> = serde_json::from_slice(payload)
            .map_err(|e| format!("the cluster's key ring is unreadable: {e}"))?;
        crate::keys::install_ring(data_dir, &files).map_err(|e| e.to_string())
    };
    if let Some(payload) = log.shared(KEY_RING).map_err(|e| e.to_string())? {
        return install(&payload);
    }
    crate::keys::KeyRing::load_or_create(data_dir).map_err(|e| e.to_string())?;
    let files = crate::keys::ring_files(data_dir).map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(&files).map_err(|e| e.to_string())?;
    if log
        .share(KEY_RING, Bytes::from(payload))
        .map_err(|e| e.to_string())?
    {
        tracing::info!("this node's key ring is now the cluster's");
        return Ok(());
    }
    // Another node was first: take its ring.
    match log.shared(KEY_RING).map_err(|e| e.to_string())? {
        Some(payload) => install(&payload),
        None => Err("the cluster's key ring vanished".into()),
    }
}

/// Which node runs a background job about an entity (a sweep of expired
/// join requests, a packet's settlement, a payout's talks with the
/// provider, the system holder's inbox): on one node, that node; in a
/// cluster, the entity's owner among the live nodes, so each job runs once
/// per cluster and moves with its entity when a node leaves. A node that
/// does not see itself among the live nodes (before its first heartbeat,
/// or cut off from the log) runs none.
#[derive(Clone, Default)]
pub struct Duty(Option<Arc<Node>>);

impl Duty {
    pub fn of(node: Option<Arc<Node>>) -> Duty {
        Duty(node)
    }

    /// Whether this node runs the jobs of `entity` (`group/…`,
    /// `wallet/…`, `packet/…`, `jobs/…`).
    pub fn mine(&self, entity: &str) -> bool {
        self.0.as_ref().is_none_or(|n| n.owns(entity))
    }
}
