//! Scan codes: bindings, the pool of pre-generated codes, scan counters and
//! the per-user daily quota.
//!
//! | prefix | key                          | value                                       |
//! |--------|------------------------------|---------------------------------------------|
//! | `sc/`  | code id (12)                 | [`Binding`] (created once; rewritten when revoked) |
//! | `sp/`  | code id (12)                 | PNG of the QR code of the code's URL: the pool of codes not yet bound |
//! | `sn/`  | code id                      | [`Tally`]: scans and unique visitors        |
//! | `sv/`  | code id, visitor hash (16)   | (empty): the code's visitors, at most 10,000 |
//! | `sq/`  | user id, 0, day (`YYYY-MM-DD`) | codes the user created that day (u32)     |
//! | `sx/`  | forget at (i64 BE), code id  | (empty): expired or revoked codes to forget |
//! | `x/code_pool_base` |                  | the base URL the pool's images were drawn for |
//!
//! Taking a code from the pool deletes its `sp/` record in the write set
//! that creates its `sc/` binding, so a code is bound at most once and a
//! pooled code is never lost.

use super::{key, Result, Storage, StorageError, WriteSet};
use crate::domain::code::{Binding, CodeId, Tally, ID_LEN};
use crate::domain::ids::UserId;

const POOL_BASE: &[u8] = b"x/code_pool_base";

fn forget_key(at: i64, id: &CodeId) -> Vec<u8> {
    key(b"sx/", &[&at.max(0).to_be_bytes(), id.as_bytes()])
}

fn quota_key(u: UserId, day: &str) -> Vec<u8> {
    key(b"sq/", &[u.as_bytes(), &[0], day.as_bytes()])
}

fn code_id(k: &[u8], at: usize) -> Result<CodeId> {
    k.get(at..at + ID_LEN)
        .and_then(|s| <[u8; ID_LEN]>::try_from(s).ok())
        .map(CodeId)
        .ok_or_else(|| StorageError::Corrupt(super::commit::printable_key(k), "code id".into()))
}

impl WriteSet {
    /// A new binding: refused whole if the code is bound already. A code
    /// from the pool leaves it in the same write set.
    pub fn new_code(&mut self, id: &CodeId, b: &Binding, from_pool: bool, forget_at: Option<i64>) {
        self.create_json(key(b"sc/", &[id.as_bytes()]), b);
        if from_pool {
            self.del(key(b"sp/", &[id.as_bytes()]));
        }
        if let Some(at) = forget_at {
            self.put(forget_key(at, id), Vec::new());
        }
    }

    /// A binding rewritten (revoked); its forget date moves from `old` to `new`.
    pub fn code_update(
        &mut self,
        id: &CodeId,
        b: &Binding,
        old_forget_at: Option<i64>,
        new_forget_at: Option<i64>,
    ) {
        self.put_json(key(b"sc/", &[id.as_bytes()]), b);
        if old_forget_at != new_forget_at {
            if let Some(at) = old_forget_at {
                self.del(forget_key(at, id));
            }
            if let Some(at) = new_forget_at {
                self.put(forget_key(at, id), Vec::new());
            }
        }
    }

    /// Drop a code and everything counted for it.
    pub fn forget_code(&mut self, id: &CodeId, forget_at: i64, visitors: &[[u8; 16]]) {
        self.del(key(b"sc/", &[id.as_bytes()]));
        self.del(key(b"sn/", &[id.as_bytes()]));
        for v in visitors {
            self.del(key(b"sv/", &[id.as_bytes(), v]));
        }
        self.del(forget_key(forget_at, id));
    }

    /// A pre-generated code and its QR image.
    pub fn pool_code(&mut self, id: &CodeId, png: &[u8]) {
        self.put(key(b"sp/", &[id.as_bytes()]), png.to_vec());
    }

    pub fn remove_pool_code(&mut self, id: &CodeId) {
        self.del(key(b"sp/", &[id.as_bytes()]));
    }

    pub fn pool_base(&mut self, base: &str) {
        self.put(POOL_BASE.to_vec(), base.as_bytes().to_vec());
    }

    pub fn code_tally(&mut self, id: &CodeId, t: &Tally) {
        self.put_json(key(b"sn/", &[id.as_bytes()]), t);
    }

    pub fn code_visitor(&mut self, id: &CodeId, visitor: &[u8; 16]) {
        self.put(key(b"sv/", &[id.as_bytes(), visitor]), Vec::new());
    }

    pub fn code_quota(&mut self, u: UserId, day: &str, count: u32) {
        self.put_json(quota_key(u, day), &count);
    }

    pub fn remove_code_quota(&mut self, u: UserId, day: &str) {
        self.del(quota_key(u, day));
    }
}

impl Storage {
    pub fn code(&self, id: &CodeId) -> Result<Option<Binding>> {
        self.get(key(b"sc/", &[id.as_bytes()]))
    }

    pub fn code_exists(&self, id: &CodeId) -> Result<bool> {
        self.inner.tree.contains_key(key(b"sc/", &[id.as_bytes()]))
    }

    /// The pooled codes and their images.
    pub fn code_pool(&self) -> Result<Vec<(CodeId, Vec<u8>)>> {
        self.inner
            .tree
            .scan_prefix(b"sp/")
            .map(|kv| {
                let (k, v) = kv?;
                Ok((code_id(&k, 3)?, v.to_vec()))
            })
            .collect()
    }

    pub fn code_pool_base(&self) -> Result<Option<String>> {
        Ok(self
            .inner
            .tree
            .get(POOL_BASE)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn code_tally(&self, id: &CodeId) -> Result<Tally> {
        Ok(self.get(key(b"sn/", &[id.as_bytes()]))?.unwrap_or_default())
    }

    pub fn has_code_visitor(&self, id: &CodeId, visitor: &[u8; 16]) -> Result<bool> {
        self.inner
            .tree
            .contains_key(key(b"sv/", &[id.as_bytes(), visitor]))
    }

    pub fn code_visitors(&self, id: &CodeId) -> Result<Vec<[u8; 16]>> {
        self.inner
            .tree
            .scan_prefix(key(b"sv/", &[id.as_bytes()]))
            .map(|kv| {
                let (k, _) = kv?;
                k.get(3 + ID_LEN..)
                    .and_then(|s| <[u8; 16]>::try_from(s).ok())
                    .ok_or_else(|| StorageError::Corrupt("sv/".into(), "visitor key".into()))
            })
            .collect()
    }

    /// A user's creation counts by day (normally just today's, if any).
    pub fn code_quota_days(&self, u: UserId) -> Result<Vec<(String, u32)>> {
        let prefix = key(b"sq/", &[u.as_bytes(), &[0]]);
        self.inner
            .tree
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let day = String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default());
                Ok((day.into_owned(), super::dec(&k, &v)?))
            })
            .collect()
    }

    /// Codes to forget at or before `now`, with their forget date.
    pub fn due_code_forgets(&self, now: i64, limit: usize) -> Result<Vec<(i64, CodeId)>> {
        let hi = key(b"sx/", &[&now.max(0).to_be_bytes(), &[0xff; ID_LEN]]);
        let mut out = Vec::new();
        for kv in self.inner.tree.range(b"sx/".to_vec()..=hi).take(limit) {
            let (k, _) = kv?;
            let at = k
                .get(3..11)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt("sx/".into(), "bad key".into()))?;
            out.push((at, code_id(&k, 11)?));
        }
        Ok(out)
    }
}
