//! The write set: the records and events of one state change, built on the
//! caller's thread and applied atomically by the committer. The builders of
//! each kind of record are here; those of the ledger, members, packets,
//! payouts, codes and analytics sit with their records in their own files.

use super::*;

/// The records and events of one state change, applied atomically.
/// Values are encoded on the caller's thread; the committer only copies bytes.
/// An encoding failure is kept and reported by [`Storage::submit`], so the
/// builder methods cannot half-fail.
#[derive(Default)]
pub struct WriteSet {
    pub(super) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Encoded events; their outbox seq is assigned at commit (it is the key).
    pub(super) events: Vec<Vec<u8>>,
    /// Keys this write set creates: the whole set is refused
    /// ([`StorageError::Exists`]) if one of them exists already.
    pub(super) creates: Vec<Vec<u8>>,
    /// Encoded journal records; their seq and chain hash are assigned at commit.
    pub(super) journal: Vec<Vec<u8>>,
    /// The entity this write set writes, and since when its writer owns it.
    pub(super) fence: Option<Fence>,
    pub(super) error: Option<StorageError>,
    /// Records every node derives alike from the log (cluster mode keeps
    /// them on this node only; one node journals them as any other).
    pub(super) local: bool,
}

/// One writer per entity: a write set carrying a fence is refused
/// ([`StorageError::Fenced`]) when another writer wrote the same entity
/// after position `since` (the journal position its writer read the entity
/// at, [`Storage::position`]). Writers are told apart by their
/// [`Tracker`]. On one node the registry keeps one actor per entity and the
/// fence never trips; a replicated log behind the same interface (cluster
/// mode) trips it when two nodes briefly both think they own an entity.
#[derive(Debug, Clone)]
pub struct Fence {
    pub(super) entity: u64,
    pub(super) name: Arc<str>,
    pub(super) since: u64,
}

impl Fence {
    pub fn new(entity: &str, since: u64) -> Fence {
        let h = blake3::hash(entity.as_bytes());
        let mut a = [0u8; 8];
        a.copy_from_slice(&h.as_bytes()[..8]);
        Fence {
            entity: u64::from_le_bytes(a),
            name: entity.into(),
            since,
        }
    }
}

impl Fence {
    /// Cluster mode: another writer than `writes` wrote the entity after
    /// this fence's position.
    pub fn is_stale_in(&self, storage: &Storage, writes: &Tracker) -> bool {
        storage.is_stale(&self.name, self.since, writes.id())
    }
}

impl WriteSet {
    pub fn new() -> Self {
        WriteSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty() && self.journal.is_empty()
    }

    /// Mark as derived records (see the field).
    pub(super) fn local(&mut self) {
        self.local = true;
    }

    /// Write as the owner of an entity since a position (see [`Fence`]).
    pub fn fence(&mut self, f: Fence) {
        self.fence = Some(f);
    }

    pub(super) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }

    pub(super) fn put_json<T: Serialize>(&mut self, k: Vec<u8>, v: &T) {
        match enc(v) {
            Ok(bytes) => self.put(k, bytes),
            Err(e) => self.error = Some(e),
        }
    }

    pub(super) fn del(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }

    /// Add everything of `other` after what is already here.
    pub fn append(&mut self, mut other: WriteSet) {
        self.ops.append(&mut other.ops);
        self.events.append(&mut other.events);
        self.creates.append(&mut other.creates);
        self.journal.append(&mut other.journal);
        if self.error.is_none() {
            self.error = other.error.take();
        }
    }

    /// Put `v` under `k`, which must not exist yet (checked by the committer,
    /// the only writer, so two racing creators cannot both succeed).
    pub(super) fn create_json<T: Serialize>(&mut self, k: Vec<u8>, v: &T) {
        self.creates.push(k.clone());
        self.put_json(k, v);
    }

    pub(super) fn journal_json<T: Serialize>(&mut self, v: &T) {
        match enc(v) {
            Ok(bytes) => self.journal.push(bytes),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn session(&mut self, token_hash: &[u8; 32], s: &crate::domain::session::Session) {
        self.put(key(b"s/", &[token_hash]), crate::domain::session::encode(s));
    }

    pub fn api_key(&mut self, k: &ApiKey) {
        self.put_json(key(b"ak/", &[k.id.as_bytes()]), k);
    }

    pub fn api_key_revoked(&mut self, k: &ApiKey) {
        self.del(key(b"ak/", &[k.id.as_bytes()]));
    }

    /// A session's expiry moved (it slides with use).
    pub fn session_expiry(&mut self, token_hash: &[u8; 32], expires_at: i64) {
        self.put(
            key(b"se/", &[token_hash]),
            expires_at.to_be_bytes().to_vec(),
        );
    }

    pub fn end_session(&mut self, token_hash: &[u8; 32]) {
        self.del(key(b"s/", &[token_hash]));
        self.del(key(b"se/", &[token_hash]));
    }

    /// Every session of `user` created before `not_before_ms` is revoked.
    pub fn sessions_revoked(&mut self, user: UserId, not_before_ms: i64) {
        self.put(
            key(b"sr/", &[user.as_bytes()]),
            not_before_ms.to_be_bytes().to_vec(),
        );
    }

    /// A user's record alone (its sessions stay).
    pub fn user_record(&mut self, u: &User) {
        self.put_json(key(b"u/", &[u.id.as_bytes()]), u);
    }

    pub fn group(&mut self, g: &Group) {
        self.put_json(key(b"g/", &[g.id.as_bytes()]), g);
    }

    pub fn group_ref(&mut self, r: &[u8; 8], g: GroupId) {
        self.put(key(b"gr/", &[r]), g.as_bytes().to_vec());
    }

    /// Store `user`'s membership of `g` as `roster` now has it (present,
    /// changed or gone): rewrites the bucket that holds `user`. (Records
    /// from before the buckets are moved and dropped when the group is
    /// activated, in a write set ordered before this one by its actor.)
    pub fn membership(&mut self, g: GroupId, roster: &Roster, user: UserId) {
        self.member_bucket(g, roster, member::bucket_of(&user));
    }

    /// Store every membership of `g` (a group seeded whole, or one moved
    /// off one-record-per-member storage).
    pub fn roster(&mut self, g: GroupId, roster: &Roster) {
        for b in 0..member::BUCKETS {
            self.member_bucket(g, roster, b);
        }
    }

    /// Delete the one-record-per-member records of `users` in `g` (once
    /// [`WriteSet::roster`] holds them).
    pub fn drop_member_records(&mut self, g: GroupId, users: &[UserId]) {
        for u in users {
            self.del(key(b"m/", &[g.as_bytes(), u.as_bytes()]));
        }
    }

    /// A membership stored the way versions before the buckets did (one
    /// record each): for the tests that prove such data dirs still load.
    #[doc(hidden)]
    pub fn member_record_before_buckets(&mut self, g: GroupId, m: &Member) {
        self.put(
            key(b"m/", &[g.as_bytes(), m.user_id.as_bytes()]),
            member::encode(m),
        );
    }

    pub(super) fn member_bucket(&mut self, g: GroupId, roster: &Roster, b: u8) {
        let k = key(b"mb/", &[g.as_bytes(), &[b]]);
        let (from, to) = member::bucket_range(b);
        let mut members = roster.members_between(&from, &to).peekable();
        if members.peek().is_none() {
            self.del(k);
        } else {
            self.put(k, member::encode_bucket(members));
        }
    }

    pub fn invite(&mut self, i: &Invite) {
        self.put_json(key(b"i/", &[i.group_id.as_bytes(), i.id.as_bytes()]), i);
    }

    /// The invitation -> group index; written once, when the invitation is created.
    pub fn invite_index(&mut self, i: &Invite) {
        self.put(
            key(b"ii/", &[i.id.as_bytes()]),
            i.group_id.as_bytes().to_vec(),
        );
    }

    pub fn remove_invite(&mut self, i: &Invite) {
        self.del(key(b"i/", &[i.group_id.as_bytes(), i.id.as_bytes()]));
        self.del(key(b"ii/", &[i.id.as_bytes()]));
    }

    pub fn request(&mut self, g: GroupId, r: &JoinRequest) {
        self.put_json(key(b"r/", &[g.as_bytes(), r.id.as_bytes()]), r);
        self.put(due_key(r.expires_at, g, r.id), Vec::new());
    }

    pub fn remove_request(&mut self, g: GroupId, r: &JoinRequest) {
        self.del(key(b"r/", &[g.as_bytes(), r.id.as_bytes()]));
        self.del(due_key(r.expires_at, g, r.id));
    }

    pub fn block(&mut self, g: GroupId, u: UserId, at: i64) {
        self.put(
            key(b"b/", &[g.as_bytes(), u.as_bytes()]),
            at.to_be_bytes().to_vec(),
        );
    }

    pub fn event(&mut self, e: &Event) {
        match enc(e) {
            Ok(bytes) => self.events.push(bytes),
            Err(err) => self.error = Some(err),
        }
    }

    /// An event as raw bytes, for tests of what cannot be decoded.
    #[cfg(test)]
    pub fn raw_event(&mut self, bytes: &[u8]) {
        self.events.push(bytes.to_vec());
    }
}

/// Index of pending join requests by expiry, so expiries are found without
/// activating every group: `rx/` expires_at (i64 BE, non-negative) group request.
pub(super) fn due_key(expires_at: i64, g: GroupId, r: RequestId) -> Vec<u8> {
    key(
        b"rx/",
        &[&expires_at.max(0).to_be_bytes(), g.as_bytes(), r.as_bytes()],
    )
}
