//! Ledger entries and chain records as sled keeps them: in pages.
//!
//! The committer writes one record per entry (`le/` account, 0, seq) and
//! per chain record (`lj/` seq), into the journal and the overlay. The
//! checkpoint does not copy those into sled one by one (sled costs 10-17 µs
//! of CPU a record): it gathers them into pages and writes one record per
//! page it touched.
//!
//! | prefix | key                              | value                          |
//! |--------|----------------------------------|--------------------------------|
//! | `lE/`  | account id, 0, page (u64 BE)     | entries `ENTRY_PAGE * page ..` |
//! | `lJ/`  | page (u64 BE)                    | chain records `CHAIN_PAGE * page ..` |
//!
//! A page's value is a run of items in seq order, each `seq (u64 BE)`,
//! `length (u32 BE)`, then the record's bytes exactly as the flat record
//! holds them. Pages stay far below sled's large-value threshold (entries
//! are a few hundred bytes). Data dirs from before the pages keep their
//! flat records; readers merge both.

use std::collections::BTreeMap;

use super::{key, Result, StorageError};

/// Entries per page (a page of a wallet's entries is about 6 KB).
pub(super) const ENTRY_PAGE: u64 = 16;
/// Chain records per page (about 16 KB).
pub(super) const CHAIN_PAGE: u64 = 32;

/// The page a flat ledger record goes into at a checkpoint, and its seq.
pub(super) fn page_of(flat: &[u8]) -> Option<(Vec<u8>, u64)> {
    let seq_at_end = |k: &[u8]| -> Option<u64> {
        let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
        Some(u64::from_be_bytes(tail))
    };
    if let Some(rest) = flat.strip_prefix(b"le/") {
        // account, 0, seq
        let seq = seq_at_end(rest)?;
        let account = rest.get(..rest.len() - 8)?;
        if account.last() != Some(&0) {
            return None;
        }
        let page = (seq / ENTRY_PAGE).to_be_bytes();
        return Some((key(b"lE/", &[account, &page]), seq));
    }
    if let Some(rest) = flat.strip_prefix(b"lj/") {
        if rest.len() != 8 {
            return None;
        }
        let seq = seq_at_end(rest)?;
        return Some((key(b"lJ/", &[&(seq / CHAIN_PAGE).to_be_bytes()]), seq));
    }
    None
}

/// The page key of `account_prefix` (`account`, 0) holding `seq`.
pub(super) fn entry_page_key(account_prefix: &[u8], seq: u64) -> Vec<u8> {
    key(b"lE/", &[account_prefix, &(seq / ENTRY_PAGE).to_be_bytes()])
}

pub(super) fn encode(items: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.values().map(|v| 12 + v.len()).sum());
    for (seq, v) in items {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// The items of a page, in seq order.
pub(super) fn decode<'a>(k: &[u8], v: &'a [u8]) -> Result<Vec<(u64, &'a [u8])>> {
    let bad = || {
        StorageError::Corrupt(
            super::commit::printable_key(k),
            "ledger page cut short".into(),
        )
    };
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let head = rest.get(..12).ok_or_else(bad)?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&head[..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&head[8..12]);
        let len = u32::from_be_bytes(l) as usize;
        let body = rest.get(12..12 + len).ok_or_else(bad)?;
        out.push((u64::from_be_bytes(s), body));
        rest = &rest[12 + len..];
    }
    Ok(out)
}

/// Merge `new` items into the page stored as `old` (new ones win).
pub(super) fn merge(k: &[u8], old: Option<&[u8]>, new: BTreeMap<u64, Vec<u8>>) -> Result<Vec<u8>> {
    let mut all: BTreeMap<u64, Vec<u8>> = match old {
        Some(old) => decode(k, old)?
            .into_iter()
            .map(|(s, b)| (s, b.to_vec()))
            .collect(),
        None => BTreeMap::new(),
    };
    all.extend(new);
    Ok(encode(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_records_map_to_their_pages_and_pages_round_trip() {
        let mut e = b"le/wallet:u_x\0".to_vec();
        e.extend_from_slice(&37u64.to_be_bytes());
        let (pk, seq) = page_of(&e).unwrap();
        assert_eq!(seq, 37);
        assert_eq!(pk, entry_page_key(b"wallet:u_x\0", 37));
        assert_eq!(&pk[pk.len() - 8..], &2u64.to_be_bytes());
        let mut j = b"lj/".to_vec();
        j.extend_from_slice(&65u64.to_be_bytes());
        assert_eq!(
            page_of(&j).unwrap(),
            (key(b"lJ/", &[&2u64.to_be_bytes()]), 65)
        );
        assert!(page_of(b"la/wallet:u_x").is_none());
        assert!(page_of(b"lj/short").is_none());
        let first: BTreeMap<u64, Vec<u8>> = [(65, b"a".to_vec()), (64, b"bb".to_vec())].into();
        let page = encode(&first);
        let more: BTreeMap<u64, Vec<u8>> = [(66, b"c".to_vec()), (65, b"A".to_vec())].into();
        let merged = merge(b"lJ/", Some(&page), more).unwrap();
        let items = decode(b"lJ/", &merged).unwrap();
        assert_eq!(
            items,
            vec![(64, &b"bb"[..]), (65, &b"A"[..]), (66, &b"c"[..])]
        );
        assert!(decode(b"lJ/", &merged[..merged.len() - 1]).is_err());
    }
}
