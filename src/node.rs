//! This process as a node of a cluster (docs/cluster.md): the log it
//! joins, the key ring every node shares, its heartbeat and the live nodes
//! it sees. One node (no `[cluster]`) has none of this.

use bytes::Bytes;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::storage::jetstream::{AppendError, LogOptions, StreamLog};

/// The log's entity holding the cluster's key ring.
const KEY_RING: &str = "keys/ring";

pub struct Node {
    pub id: String,
    /// Where the other nodes reach this one.
    pub url: String,
    pub log: Arc<StreamLog>,
    /// Keys the signatures of requests forwarded between nodes.
    pub forward_key: [u8; 32],
    /// The live nodes as the last heartbeat saw them (ids, and each node).
    live: RwLock<(Vec<String>, Vec<crate::storage::jetstream::Node>)>,
}

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
        })
    }

    /// Announce this node now and then, and note who else is live, on a
    /// thread of its own for as long as the process runs.
    pub fn start_heartbeat(self: &Arc<Self>) -> Result<(), String> {
        let node = Arc::clone(self);
        std::thread::Builder::new()
            .name("qrgate-heartbeat".into())
            .spawn(move || loop {
                if let Err(e) = node.log.announce(&node.id, &node.url) {
                    tracing::warn!(error = %e, "cannot announce this node");
                }
                match node.log.live_nodes() {
                    Ok(nodes) => {
                        crate::metrics::LIVE_NODES.set(nodes.len() as i64);
                        let ids = nodes.iter().map(|n| n.id.clone()).collect();
                        if let Ok(mut live) = node.live.write() {
                            *live = (ids, nodes);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list the live nodes"),
                }
                std::thread::sleep(Duration::from_millis(1500));
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the heartbeat: {e}"))
    }

    /// The ids of the live nodes as last seen.
    pub fn live(&self) -> Vec<String> {
        self.live.read().map(|l| l.0.clone()).unwrap_or_default()
    }

    /// The node that owns `entity` when it is another live one; `None`
    /// when this node owns it, or when this node is not among the live
    /// nodes it sees (it then serves everything itself).
    pub fn owner_elsewhere(&self, entity: &str) -> Option<crate::storage::jetstream::Node> {
        let live = self.live.read().ok()?;
        let (ids, nodes) = &*live;
        if !ids.contains(&self.id) {
            return None;
        }
        let owner = crate::domain::placement::owner(entity, ids)?;
        if owner == self.id {
            return None;
        }
        nodes.iter().find(|n| n.id == owner).cloned()
    }
}

/// Every node signs and checks invitations, tags and the ledger chain with
/// the same keys: the first node to start puts its data dir's key ring in
/// the log, and every other node installs that one in its data dir.
fn share_keys(log: &StreamLog, data_dir: &Path) -> Result<(), String> {
    let install = |payload: &Bytes| -> Result<(), String> {
        let files: Vec<(String, String)> = serde_json::from_slice(payload)
            .map_err(|e| format!("the cluster's key ring is unreadable: {e}"))?;
        crate::keys::install_ring(data_dir, &files).map_err(|e| e.to_string())
    };
    if let Some((_, payload)) = log.read_last(KEY_RING).map_err(|e| e.to_string())? {
        return install(&payload);
    }
    crate::keys::KeyRing::load_or_create(data_dir).map_err(|e| e.to_string())?;
    let files = crate::keys::ring_files(data_dir).map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(&files).map_err(|e| e.to_string())?;
    // A message id of its own: two nodes starting together must not be
    // taken for one append retried.
    let msg_id = format!(
        "key-ring-{:x}",
        u64::from_le_bytes(crate::domain::ids::random_bytes())
    );
    match log.append_blocking(KEY_RING, 0, &msg_id, Bytes::from(payload)) {
        Ok(_) => {
            tracing::info!("this node's key ring is now the cluster's");
            Ok(())
        }
        // Another node was first: take its ring.
        Err(AppendError::Conflict { .. }) => match log.read_last(KEY_RING) {
            Ok(Some((_, payload))) => install(&payload),
            Ok(None) => Err("the cluster's key ring vanished".into()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}
