//! Group avatars, in chunks: `av/` group id, chunk (u8) -> up to
//! [`CHUNK`] bytes of the JPEG. A 256x256 avatar is a few chunks; each stays
//! far below sled's large-value threshold, so it lives in sled's own
//! (fsynced) segments, not in blob files. The group record names the
//! avatar ([`AvatarRef`]: its hash, length and chunk count), written in the
//! same write set as the chunks.

use super::{key, Result, Storage, StorageError, WriteSet};
use crate::domain::group::AvatarRef;
use crate::domain::ids::GroupId;

/// Bytes per chunk.
pub const CHUNK: usize = 8 * 1024;

fn chunk_key(g: GroupId, i: u8) -> Vec<u8> {
    key(b"av/", &[g.as_bytes(), &[i]])
}

/// The reference the group record keeps of `jpeg`.
pub fn reference(jpeg: &[u8]) -> AvatarRef {
    let h = blake3::hash(jpeg);
    AvatarRef {
        hash: h.to_hex()[..16].to_string(),
        len: u32::try_from(jpeg.len()).unwrap_or(u32::MAX),
        chunks: u8::try_from(jpeg.len().div_ceil(CHUNK)).unwrap_or(u8::MAX),
    }
}

impl WriteSet {
    /// Store `jpeg` as `g`'s avatar (None: remove it), replacing `old`.
    pub fn avatar(&mut self, g: GroupId, jpeg: Option<&[u8]>, old: Option<&AvatarRef>) {
        let mut written = 0u8;
        if let Some(bytes) = jpeg {
            for (i, part) in bytes.chunks(CHUNK).enumerate().take(usize::from(u8::MAX)) {
                let i = u8::try_from(i).unwrap_or(u8::MAX);
                self.put(chunk_key(g, i), part.to_vec());
                written = i + 1;
            }
        }
        for i in written..old.map_or(0, |o| o.chunks) {
            self.del(chunk_key(g, i));
        }
    }
}

impl Storage {
    /// `g`'s avatar as `r` names it; None if a chunk is missing or the
    /// bytes do not match its hash.
    pub fn avatar(&self, g: GroupId, r: &AvatarRef) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(r.len as usize);
        for i in 0..r.chunks {
            match self.inner.tree.get(chunk_key(g, i))? {
                Some(part) => out.extend_from_slice(&part),
                None => return Ok(None),
            }
        }
        if out.len() != r.len as usize || reference(&out).hash != r.hash {
            return Err(StorageError::Corrupt(
                "av/".into(),
                format!("the avatar of group {g} does not match its record"),
            ));
        }
        Ok(Some(out))
    }
}
