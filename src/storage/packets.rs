//! Red packets, their claims, and frozen users.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `kp/`  | packet id                             | [`Packet`] (created with its hold; rewritten at close) |
//! | `kc/`  | packet id, user id                    | [`Claim`] (created once: one share per user) |
//! | `ki/`  | funder holder, 0, blake3(idempotency key) | [`KeyRecord`]             |
//! | `kd/`  | funder holder, 0, day (`YYYY-MM-DD`)  | fen sent in packets that day  |
//! | `kx/`  | close at (i64 BE), packet id          | (empty): packets to settle, by when |
//! | `ko/`  | packet id                             | opens (u64 BE)                |
//! | `kb/`  | user id                               | [`BlacklistEntry`]            |

use serde::{Deserialize, Serialize};

use super::{id16, key, Result, Storage, StorageError, WriteSet};
use crate::domain::ids::{PacketId, UserId};
use crate::domain::ledger::Holder;
use crate::domain::packet::{Claim, Packet};

/// What an idempotency key of a packet creation points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub packet: PacketId,
    /// blake3 of the canonical request: tells a retry from a reused key.
    pub request_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlacklistEntry {
    pub user_id: UserId,
    pub reason: String,
    pub at: i64,
}

fn holder_key(prefix: &[u8], h: Holder, rest: &[u8]) -> Vec<u8> {
    key(prefix, &[h.to_string().as_bytes(), &[0], rest])
}

fn close_key(at: i64, p: PacketId) -> Vec<u8> {
    key(b"kx/", &[&at.max(0).to_be_bytes(), p.as_bytes()])
}

impl WriteSet {
    /// A new packet: refused whole if its id exists. Indexed to be settled
    /// at its expiry.
    pub fn new_packet(&mut self, p: &Packet) {
        self.create_json(key(b"kp/", &[p.id.as_bytes()]), p);
        self.put(close_key(p.expires_at, p.id), Vec::new());
    }

    /// Move a packet's settlement from its expiry to `at` (it emptied).
    pub fn packet_close_at(&mut self, p: &Packet, at: i64) {
        self.del(close_key(p.expires_at, p.id));
        self.put(close_key(at, p.id), Vec::new());
    }

    /// A packet that closed: its record, and no settlement left to do.
    pub fn packet_closed(&mut self, p: &Packet, close_at: i64) {
        self.put_json(key(b"kp/", &[p.id.as_bytes()]), p);
        self.del(close_key(close_at, p.id));
        self.del(close_key(p.expires_at, p.id));
    }

    /// A claim: refused whole if this user has one on this packet.
    pub fn claim(&mut self, p: PacketId, c: &Claim) {
        self.create_json(key(b"kc/", &[p.as_bytes(), c.user.as_bytes()]), c);
    }

    pub fn packet_key(&mut self, funder: Holder, key_hash: &[u8; 32], r: &KeyRecord) {
        self.create_json(holder_key(b"ki/", funder, key_hash), r);
    }

    pub fn packet_day_usage(&mut self, funder: Holder, day: &str, fen: u64) {
        self.put_json(holder_key(b"kd/", funder, day.as_bytes()), &fen);
    }

    pub fn packet_opens(&mut self, p: PacketId, opens: u64) {
        self.put(key(b"ko/", &[p.as_bytes()]), opens.to_be_bytes().to_vec());
    }

    /// Freeze a user (the record kept its name from the packets-only
    /// blacklist it replaced).
    pub fn freeze(&mut self, e: &BlacklistEntry) {
        self.put_json(key(b"kb/", &[e.user_id.as_bytes()]), e);
    }

    pub fn unfreeze(&mut self, u: UserId) {
        self.del(key(b"kb/", &[u.as_bytes()]));
    }
}

/// A packet with everything its actor keeps.
pub struct PacketRecords {
    pub packet: Packet,
    pub claims: Vec<Claim>,
    pub opens: u64,
}

impl Storage {
    pub fn packet(&self, id: PacketId) -> Result<Option<Packet>> {
        self.get(key(b"kp/", &[id.as_bytes()]))
    }

    pub fn load_packet(&self, id: PacketId) -> Result<Option<PacketRecords>> {
        let Some(packet) = self.packet(id)? else {
            return Ok(None);
        };
        let mut claims: Vec<Claim> = self.scan(key(b"kc/", &[id.as_bytes()]))?;
        claims.sort_by_key(|c| c.index);
        let k = key(b"ko/", &[id.as_bytes()]);
        let opens =
            match self.inner.tree.get(&k)? {
                Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    StorageError::Corrupt("ko/".into(), "opens counter length".into())
                })?),
                None => 0,
            };
        Ok(Some(PacketRecords {
            packet,
            claims,
            opens,
        }))
    }

    pub fn packet_by_key(&self, funder: Holder, key_hash: &[u8; 32]) -> Result<Option<KeyRecord>> {
        self.get(holder_key(b"ki/", funder, key_hash))
    }

    pub fn packet_day_usage(&self, funder: Holder, day: &str) -> Result<u64> {
        Ok(self
            .get(holder_key(b"kd/", funder, day.as_bytes()))?
            .unwrap_or(0))
    }

    /// Packets to settle at or before `now`, with the time they were due.
    pub fn due_packets(&self, now: i64, limit: usize) -> Result<Vec<(i64, PacketId)>> {
        let hi = key(b"kx/", &[&now.max(0).to_be_bytes(), &[0xff; 16]]);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(b"kx/".to_vec()..=hi).take(limit) {
            let (k, _) = kv?;
            let at = k
                .get(3..11)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt("kx/".into(), "bad key".into()))?;
            out.push((at, PacketId(id16(&k, k.get(11..27).unwrap_or_default())?)));
        }
        Ok(out)
    }

    /// Whether the admin API froze `u` (the config's list is not here).
    pub fn is_frozen(&self, u: UserId) -> Result<bool> {
        self.inner.tree.contains_key(key(b"kb/", &[u.as_bytes()]))
    }

    /// Frozen users (admin API entries).
    pub fn frozen(&self) -> Result<Vec<BlacklistEntry>> {
        self.scan(b"kb/".to_vec())
    }
}
