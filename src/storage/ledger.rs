//! The ledger's records and the hash-chained journal.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `la/`  | account id                            | [`Account`]                   |
//! | `lt/`  | transfer id (16)                      | [`Transfer`] (created once, status updated; checkpointed into sorted runs, `runs.rs`) |
//! | `le/`  | account id, 0, seq (u64 BE)           | [`Entry`] (wallets only)      |
//! | `lq/`  | holder, 0, transfer id, side (1)      | [`InboxItem`]: a posting on its way to its holder |
//! | `lx/`  | expires_at (i64 BE), holder, 0, transfer id | (empty): pending transfers by timeout |
//! | `lj/`  | journal seq (u64 BE)                  | chain hash (32) then [`JournalRecord`] |
//! | `lE/`  | account id, 0, page (u64 BE)          | a page of `le/` entries (sled only, `pages.rs`) |
//! | `lJ/`  | page (u64 BE)                         | a page of `lj/` records (sled only, `pages.rs`) |
//! | `jd/`  | day (`YYYY-MM-DD`)                    | [`DayAnchor`]                 |
//!
//! `le/` and `lj/` records live in the journal and the overlay until a
//! checkpoint gathers them into pages; readers merge both.
//!
//! The journal is one hash chain: record `n` stores
//! `blake3_keyed(journal_key, hash(n-1) || n (u64 BE) || record)`, the first
//! record chaining from 32 zero bytes. The key comes from the data dir's
//! secret, so whoever edits the database without it cannot forge a chain that
//! verifies. Each UTC day's stretch of the chain has an anchor (its first and
//! last seq and its head hash) that operators can copy elsewhere.

use crate::clock::today;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{dec, enc, key, pages, Finding, Result, Storage, StorageError, WriteSet};
use crate::domain::ids::TransferId;
use crate::domain::ledger::{Account, AccountId, Entry, Holder, JournalRecord, Posting, Transfer};

fn account_key(prefix: &[u8], a: &AccountId) -> Vec<u8> {
    key(prefix, &[a.to_string().as_bytes()])
}

fn entry_prefix(a: &AccountId) -> Vec<u8> {
    key(b"le/", &[a.to_string().as_bytes(), &[0]])
}

fn holder_prefix(prefix: &[u8], h: Holder) -> Vec<u8> {
    key(prefix, &[h.to_string().as_bytes(), &[0]])
}

fn inbox_key(h: Holder, t: TransferId, side: u8) -> Vec<u8> {
    let mut k = holder_prefix(b"lq/", h);
    k.extend_from_slice(t.as_bytes());
    k.push(side);
    k
}

fn timeout_key(expires_at: i64, h: Holder, t: TransferId) -> Vec<u8> {
    key(
        b"lx/",
        &[
            &expires_at.max(0).to_be_bytes(),
            h.to_string().as_bytes(),
            &[0],
            t.as_bytes(),
        ],
    )
}

/// A posting journalled by one holder's actor for an account of another
/// holder, who applies it (and writes its entry) later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub account: AccountId,
    pub posting: Posting,
    pub transfer_id: TransferId,
    /// 0: the debit side, 1: the credit side.
    pub side: u8,
    /// The transfer, for accounts that keep entries (wallets); system
    /// accounts keep none, so their items stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

impl InboxItem {
    /// The other side of `t` for `account`, on its way to its holder.
    pub fn of(t: &Transfer, account: &AccountId, posting: Posting) -> InboxItem {
        InboxItem {
            account: account.clone(),
            posting,
            transfer_id: t.spec.id,
            side: u8::from(*account == t.spec.credit),
            transfer: account.keeps_entries().then(|| t.clone()),
        }
    }
}

/// A holder as [`Holder`]'s `Display` writes it.
fn parse_holder(s: &str) -> Option<Holder> {
    use crate::domain::ids::{PacketId, UserId};
    if s == "system" {
        return Some(Holder::System);
    }
    if s.starts_with(PacketId::PREFIX) {
        return PacketId::parse(s).ok().map(Holder::Packet);
    }
    UserId::parse(s).ok().map(Holder::User)
}

/// One UTC day's stretch of the journal chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayAnchor {
    pub day: String,
    pub first: u64,
    pub last: u64,
    /// Hex of the chain hash after `last`.
    pub head: String,
}

/// The end of the journal chain, kept by the committer (the only writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    key: [u8; 32],
    next: u64,
    head: [u8; 32],
    /// The current day and its first seq; `dirty` once it needs storing.
    day: Option<(String, u64)>,
    dirty: bool,
    /// Anchors of days that ended during the current round.
    closed: Vec<(Vec<u8>, Vec<u8>)>,
}

fn chain_hash(key: &[u8; 32], prev: &[u8; 32], seq: u64, record: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(prev);
    h.update(&seq.to_be_bytes());
    h.update(record);
    *h.finalize().as_bytes()
}

impl ChainHead {
    /// Chain `record` on: its key and value in the tree.
    pub(super) fn append(&mut self, record: &[u8]) -> (Vec<u8>, Vec<u8>) {
        self.append_on(record, today())
    }

    /// Chain `record` on as written on `day` (`YYYY-MM-DD`, UTC). Days
    /// only move forward: an earlier day than the current one counts as
    /// the current one, so writers whose clocks differ (cluster mode)
    /// still give one stretch per day.
    pub(super) fn append_on(&mut self, record: &[u8], day: String) -> (Vec<u8>, Vec<u8>) {
        let seq = self.next;
        let h = chain_hash(&self.key, &self.head, seq, record);
        let mut v = Vec::with_capacity(32 + record.len());
        v.extend_from_slice(&h);
        v.extend_from_slice(record);
        let day = match &self.day {
            Some((current, _)) if *current > day => current.clone(),
            _ => day,
        };
        if self.day.as_ref().is_none_or(|(d, _)| *d != day) {
            // A new day: close the old day's anchor at the record before this one.
            if let Some(a) = self.anchor() {
                self.closed.push(a);
            }
            self.day = Some((day, seq));
        }
        self.head = h;
        self.next += 1;
        self.dirty = true;
        (key(b"lj/", &[&seq.to_be_bytes()]), v)
    }

    /// The anchor of the current day as it stands.
    fn anchor(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (day, first) = self.day.clone()?;
        if self.next <= first {
            return None;
        }
        let anchor = DayAnchor {
            day: day.clone(),
            first,
            last: self.next - 1,
            head: hex(&self.head),
        };
        Some((key(b"jd/", &[day.as_bytes()]), enc(&anchor).ok()?))
    }

    /// The anchors to store after this round: days closed during it, and
    /// the current day if records were appended.
    pub(super) fn day_anchors(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.closed);
        if self.dirty {
            self.dirty = false;
            out.extend(self.anchor());
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn seq_at(k: &[u8]) -> Result<u64> {
    k.get(3..11)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt("lj/".into(), "bad journal key".into()))
}

/// Where the chain stands after the last stored record.
pub(super) fn chain_head(tree: &super::kv::Kv, key: [u8; 32]) -> Result<ChainHead> {
    let mut c = ChainHead {
        key,
        next: 1,
        head: [0; 32],
        day: None,
        dirty: false,
        closed: Vec::new(),
    };
    // The last chain record: flat (the overlay, or sled before the pages)
    // or the last item of the last page, whichever is later.
    let mut last: Option<(u64, Vec<u8>)> = None;
    if let Some(kv) = tree.scan_prefix(b"lj/").next_back() {
        let (k, v) = kv?;
        last = Some((seq_at(&k)?, v.to_vec()));
    }
    if let Some(kv) = tree.checkpoint_scan(b"lJ/").next_back() {
        let (k, v) = kv?;
        if let Some((seq, body)) = pages::decode(&k, &v)?.pop() {
            if last.as_ref().is_none_or(|(s, _)| *s < seq) {
                last = Some((seq, body.to_vec()));
            }
        }
    }
    if let Some((seq, v)) = last {
        c.next = seq + 1;
        c.head = v
            .get(..32)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| StorageError::Corrupt("lj/".into(), "short record".into()))?;
    }
    if let Some(kv) = tree.scan_prefix(b"jd/").next_back() {
        let (k, v) = kv?;
        let a: DayAnchor = dec(&k, &v)?;
        c.day = Some((a.day, a.first));
    }
    Ok(c)
}

impl WriteSet {
    /// An account's totals (its holder's actor is the only writer).
    pub fn account(&mut self, a: &Account) {
        self.put_json(account_key(b"la/", &a.id), a);
    }

    /// A new transfer: refused by the committer if its id exists.
    pub fn new_transfer(&mut self, t: &Transfer) {
        self.create_json(key(b"lt/", &[t.spec.id.as_bytes()]), t);
    }

    /// A transfer's new status (a pending transfer posted, voided, expired).
    pub fn transfer_status(&mut self, t: &Transfer, holder: Holder) {
        self.put_json(key(b"lt/", &[t.spec.id.as_bytes()]), t);
        if let Some(at) = t.expires_at {
            self.del(timeout_key(at, holder, t.spec.id));
        }
    }

    /// Index a pending transfer under its timeout, for `holder` to expire it.
    pub fn pending_timeout(&mut self, t: &Transfer, holder: Holder) {
        if let Some(at) = t.expires_at {
            self.put(timeout_key(at, holder, t.spec.id), Vec::new());
        }
    }

    pub fn entry(&mut self, e: &Entry) {
        let mut k = entry_prefix(&e.account);
        k.extend_from_slice(&e.seq.to_be_bytes());
        self.put_json(k, e);
    }

    pub fn journal(&mut self, r: &JournalRecord) {
        self.journal_json(r);
    }

    pub fn inbox(&mut self, item: &InboxItem) {
        let k = inbox_key(item.account.holder(), item.transfer_id, item.side);
        self.put_json(k, item);
    }

    pub fn inbox_done(&mut self, item: &InboxItem) {
        self.del(inbox_key(
            item.account.holder(),
            item.transfer_id,
            item.side,
        ));
    }
}

/// Everything the books check reads, in one consistent view.
pub struct LedgerBooks {
    pub accounts: Vec<Account>,
    pub entries: Vec<Entry>,
    pub journal: Vec<JournalRecord>,
    pub in_flight: Vec<(AccountId, Posting)>,
    /// Breaks of the hash chain and of day anchors, and records that do
    /// not decode.
    pub chain_findings: Vec<Finding>,
    pub anchors: Vec<DayAnchor>,
}

impl Storage {
    pub fn account(&self, id: &AccountId) -> Result<Option<Account>> {
        self.get(account_key(b"la/", id))
    }

    /// Every account of `holder` and the postings waiting in its inbox.
    pub fn load_holder(&self, h: Holder) -> Result<(Vec<Account>, Vec<InboxItem>)> {
        let accounts = match h {
            Holder::User(u) => self.account(&AccountId::Wallet(u))?.into_iter().collect(),
            Holder::System => {
                let mut v: Vec<Account> = self.scan(b"la/revenue:".to_vec())?;
                v.extend(self.scan::<Account>(b"la/merchant:".to_vec())?);
                v.extend(self.account(&AccountId::Clearing)?);
                v
            }
            Holder::Packet(p) => self.account(&AccountId::Escrow(p))?.into_iter().collect(),
        };
        Ok((accounts, self.inbox(h)?))
    }

    pub fn inbox(&self, h: Holder) -> Result<Vec<InboxItem>> {
        self.scan(holder_prefix(b"lq/", h))
    }

    pub fn transfer(&self, id: TransferId) -> Result<Option<Transfer>> {
        self.get(key(b"lt/", &[id.as_bytes()]))
    }

    /// Up to `limit` entries of `account`, newest first, with seq below
    /// `before`: the flat records (since the last checkpoint, or from
    /// before the pages) merged with the pages.
    pub fn entries(&self, a: &AccountId, before: Option<u64>, limit: usize) -> Result<Vec<Entry>> {
        let before = before.unwrap_or(u64::MAX);
        let prefix = entry_prefix(a);
        let account = &prefix[3..];
        let mut hi = prefix.clone();
        hi.extend_from_slice(&before.to_be_bytes());
        let mut found: BTreeMap<u64, Entry> = BTreeMap::new();
        for kv in self.inner.tree.range(prefix.clone()..hi).rev().take(limit) {
            let (k, v) = kv?;
            let e: Entry = dec(&k, &v)?;
            found.insert(e.seq, e);
        }
        let lo = pages::entry_page_key(account, 0);
        let top = pages::entry_page_key(account, before.saturating_sub(1));
        let mut from_pages = 0;
        for kv in self.inner.tree.checkpoint_range(lo..=top).rev() {
            let (k, v) = kv?;
            for (seq, body) in pages::decode(&k, &v)?.into_iter().rev() {
                if seq < before && from_pages < limit {
                    found.entry(seq).or_insert(dec(&k, body)?);
                    from_pages += 1;
                }
            }
            if from_pages >= limit {
                break;
            }
        }
        Ok(found.into_values().rev().take(limit).collect())
    }

    /// Pending transfers whose timeout is at or before `now`, with their holder.
    pub fn due_pending(&self, now: i64, limit: usize) -> Result<Vec<(Holder, TransferId)>> {
        let hi = key(b"lx/", &[&now.max(0).to_be_bytes(), &[0xff]]);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(b"lx/".to_vec()..hi).take(limit) {
            let (k, _) = kv?;
            let bad = || StorageError::Corrupt("lx/".into(), "bad timeout key".into());
            let rest = k.get(11..).ok_or_else(bad)?;
            let sep = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
            let holder = std::str::from_utf8(&rest[..sep]).map_err(|_| bad())?;
            let holder = parse_holder(holder).ok_or_else(bad)?;
            let id: [u8; 16] = rest
                .get(sep + 1..)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)?;
            out.push((holder, TransferId(id)));
        }
        Ok(out)
    }

    pub fn day_anchors(&self) -> Result<Vec<DayAnchor>> {
        self.scan(b"jd/".to_vec())
    }

    /// Read the whole ledger for the books check. Commits wait while it
    /// reads, so the view is consistent (an admin operation: it is O(ledger)).
    pub fn ledger_books(&self) -> Result<LedgerBooks> {
        // No checkpoint either: one moving records from the overlay into
        // sled's pages while these scans run could hide them from both.
        let _no_checkpoint = self
            .inner
            .checkpoint_lock
            .lock()
            .map_err(|_| StorageError::Io("checkpoint lock poisoned".into()))?;
        let _quiet = self
            .inner
            .apply_lock
            .write()
            .map_err(|_| StorageError::Io("apply lock poisoned".into()))?;
        read_books(&self.inner.tree, self.inner.journal_key)
    }
}

/// Where a record is, for a finding: its key, as text when it is text
/// (`la/wallet:usr_…`), else its prefix and then hex.
fn place(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => format!("key {s}"),
        _ => format!("key {}", super::commit::printable_key(k)),
    }
}

/// Every record under `prefix`, decoded; one that does not decode is a
/// finding at its key instead of an error, so that one check names them all.
fn scan_lenient<T: serde::de::DeserializeOwned>(
    tree: &super::kv::Kv,
    prefix: &[u8],
    findings: &mut Vec<Finding>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix(prefix) {
        let (k, v) = kv?;
        match dec(&k, &v) {
            Ok(t) => out.push(t),
            Err(e) => findings.push(Finding::new(place(&k), format!("unreadable: {e}"))),
        }
    }
    Ok(out)
}

/// The items of a ledger page, or a finding at its key.
fn page_items<'a>(k: &[u8], v: &'a [u8], findings: &mut Vec<Finding>) -> Vec<(u64, &'a [u8])> {
    pages::decode(k, v).unwrap_or_else(|e| {
        findings.push(Finding::new(place(k), format!("unreadable page: {e}")));
        Vec::new()
    })
}

/// The whole ledger as `tree` holds it, with the breaks of the hash chain,
/// of the day anchors and of unreadable records as findings.
pub(super) fn read_books(tree: &super::kv::Kv, journal_key: [u8; 32]) -> Result<LedgerBooks> {
    let mut findings = Vec::new();
    let accounts = scan_lenient(tree, b"la/", &mut findings)?;
    // Entries: flat records and pages, each (account, seq) once.
    let mut entries: BTreeMap<(AccountId, u64), Entry> = BTreeMap::new();
    for e in scan_lenient::<Entry>(tree, b"le/", &mut findings)? {
        entries.insert((e.account.clone(), e.seq), e);
    }
    for kv in tree.checkpoint_scan(b"lE/") {
        let (k, v) = kv?;
        for (seq, body) in page_items(&k, &v, &mut findings) {
            match dec::<Entry>(&k, body) {
                Ok(e) => {
                    entries.entry((e.account.clone(), e.seq)).or_insert(e);
                }
                Err(e) => findings.push(Finding::new(
                    place(&k),
                    format!("entry {seq} unreadable: {e}"),
                )),
            }
        }
    }
    let entries: Vec<Entry> = entries.into_values().collect();
    let in_flight = scan_lenient::<InboxItem>(tree, b"lq/", &mut findings)?
        .into_iter()
        .map(|i| (i.account, i.posting))
        .collect();
    let anchors: Vec<DayAnchor> = scan_lenient(tree, b"jd/", &mut findings)?;
    let mut journal = Vec::new();
    let mut prev = [0u8; 32];
    let mut expect = 1u64;
    let mut heads = std::collections::HashMap::new();
    // Chain records: flat ones (newer, or from before the pages) over the
    // pages, in seq order, each with the key it was read from.
    let mut chain: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for kv in tree.checkpoint_scan(b"lJ/") {
        let (k, v) = kv?;
        for (seq, body) in page_items(&k, &v, &mut findings) {
            chain.insert(seq, (body.to_vec(), k.to_vec()));
        }
    }
    for kv in tree.scan_prefix(b"lj/") {
        let (k, v) = kv?;
        chain.insert(seq_at(&k)?, (v.to_vec(), k.to_vec()));
    }
    for (seq, (v, at)) in chain {
        let k = key(b"lj/", &[&seq.to_be_bytes()]);
        if seq != expect {
            findings.push(Finding::new(
                place(&at),
                format!("journal: record {expect} is missing (next is {seq})"),
            ));
        }
        expect = seq + 1;
        let (stored, body) = v.split_at(32.min(v.len()));
        let h = chain_hash(&journal_key, &prev, seq, body);
        if stored != h {
            findings.push(Finding::new(
                place(&at),
                format!("journal: record {seq} does not match the chain (edited, or an earlier record was)"),
            ));
        }
        prev = stored.try_into().unwrap_or([0; 32]);
        heads.insert(seq, hex(&prev));
        match dec::<JournalRecord>(&k, body) {
            Ok(r) => journal.push(r),
            Err(e) => findings.push(Finding::new(
                place(&at),
                format!("journal: record {seq} unreadable: {e}"),
            )),
        }
    }
    for a in &anchors {
        if heads.get(&a.last) != Some(&a.head) {
            findings.push(Finding::new(
                place(&key(b"jd/", &[a.day.as_bytes()])),
                format!(
                    "journal: the anchor of {} (records {}..={}) does not match the chain",
                    a.day, a.first, a.last
                ),
            ));
        }
    }
    Ok(LedgerBooks {
        accounts,
        entries,
        journal,
        in_flight,
        chain_findings: findings,
        anchors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_links_each_record_to_the_previous_one() {
        let mut c = ChainHead {
            key: [7; 32],
            next: 1,
            head: [0; 32],
            day: None,
            dirty: false,
            closed: Vec::new(),
        };
        let (k1, v1) = c.append(b"one");
        let (_, v2) = c.append(b"two");
        assert_eq!(seq_at(&k1).unwrap(), 1);
        assert_eq!(&v1[..32], &chain_hash(&[7; 32], &[0; 32], 1, b"one"));
        assert_eq!(
            &v2[..32],
            &chain_hash(&[7; 32], &v1[..32].try_into().unwrap(), 2, b"two")
        );
        // Another key gives another chain.
        assert_ne!(
            chain_hash(&[8; 32], &[0; 32], 1, b"one"),
            chain_hash(&[7; 32], &[0; 32], 1, b"one")
        );
        let anchors = c.day_anchors();
        assert_eq!(anchors.len(), 1);
        let a: DayAnchor = serde_json::from_slice(&anchors[0].1).unwrap();
        assert_eq!((a.first, a.last, a.head), (1, 2, hex(&v2[..32])));
        assert!(c.day_anchors().is_empty(), "nothing new since");
        // Midnight within a round: yesterday's anchor is closed at the
        // record before the first of today.
        c.day = Some(("2000-01-01".into(), 1));
        let (_, v3) = c.append(b"three");
        let anchors = c.day_anchors();
        assert_eq!(anchors.len(), 2, "yesterday's and today's");
        let old: DayAnchor = serde_json::from_slice(&anchors[0].1).unwrap();
        assert_eq!(
            (old.day.as_str(), old.first, old.last, old.head),
            ("2000-01-01", 1, 2, hex(&v2[..32]))
        );
        let new: DayAnchor = serde_json::from_slice(&anchors[1].1).unwrap();
        assert_eq!((new.first, new.last, new.head), (3, 3, hex(&v3[..32])));
    }
}
