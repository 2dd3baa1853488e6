//! Invitation tokens: `base64url(message || signature)`.
//!
//! Message layout, version 1 (49 bytes, all integers big-endian):
//!
//! | offset | len | field                                                        |
//! |-------:|----:|--------------------------------------------------------------|
//! |      0 |   1 | format version (`1`)                                         |
//! |      1 |   4 | key id (`kid`, first 4 bytes of blake3(public key))          |
//! |      5 |  16 | invitation id (128 random bits)                              |
//! |     21 |   8 | group reference (keyed blake3 of the group id, not the id)   |
//! |     29 |   4 | group epoch (bumped when a ban burns every invitation)       |
//! |     33 |   8 | creator reference (keyed blake3 of the creator's user id)    |
//! |     41 |   8 | expiry, seconds since the Unix epoch (i64)                   |
//!
//! followed by the 64-byte Ed25519 signature of those 49 bytes. The whole token
//! is 113 bytes, 151 base64url characters without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::ids::InviteId;

pub const VERSION: u8 = 1;
pub const MESSAGE_LEN: usize = 49;
pub const SIGNATURE_LEN: usize = 64;
pub const TOKEN_LEN: usize = MESSAGE_LEN + SIGNATURE_LEN;
/// Length of the token in base64url without padding.
pub const TOKEN_TEXT_LEN: usize = (TOKEN_LEN * 4).div_ceil(3);

/// A reference that names a group or a user inside a token without revealing its id.
pub type Ref = [u8; 8];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub kid: u32,
    pub invite_id: InviteId,
    pub group_ref: Ref,
    pub epoch: u32,
    pub creator_ref: Ref,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not base64url of the expected length")]
    Malformed,
    #[error("unknown token format version")]
    UnknownVersion,
    #[error("the token's key id is not one of the server's keys")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// The key id of a public key.
pub fn kid_of(key: &VerifyingKey) -> u32 {
    let h = blake3::hash(key.as_bytes());
    let b = h.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Claims {
    pub fn message(&self) -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        m[0] = VERSION;
        m[1..5].copy_from_slice(&self.kid.to_be_bytes());
        m[5..21].copy_from_slice(self.invite_id.as_bytes());
        m[21..29].copy_from_slice(&self.group_ref);
        m[29..33].copy_from_slice(&self.epoch.to_be_bytes());
        m[33..41].copy_from_slice(&self.creator_ref);
        m[41..49].copy_from_slice(&self.expires_at.to_be_bytes());
        m
    }

    fn from_message(m: &[u8; MESSAGE_LEN]) -> Result<Self, TokenError> {
        if m[0] != VERSION {
            return Err(TokenError::UnknownVersion);
        }
        let mut invite = [0u8; 16];
        invite.copy_from_slice(&m[5..21]);
        let mut group_ref = [0u8; 8];
        group_ref.copy_from_slice(&m[21..29]);
        let mut creator_ref = [0u8; 8];
        creator_ref.copy_from_slice(&m[33..41]);
        let mut kid = [0u8; 4];
        kid.copy_from_slice(&m[1..5]);
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&m[29..33]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&m[41..49]);
        Ok(Claims {
            kid: u32::from_be_bytes(kid),
            invite_id: InviteId(invite),
            group_ref,
            epoch: u32::from_be_bytes(epoch),
            creator_ref,
            expires_at: i64::from_be_bytes(exp),
        })
    }

    /// Sign these claims; `key` must be the key named by `self.kid`.
    pub fn sign(&self, key: &SigningKey) -> String {
        let msg = self.message();
        let sig = key.sign(&msg);
        let mut raw = [0u8; TOKEN_LEN];
        raw[..MESSAGE_LEN].copy_from_slice(&msg);
        raw[MESSAGE_LEN..].copy_from_slice(&sig.to_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }
}

/// A token split into its parts, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub claims: Claims,
    pub raw: [u8; TOKEN_LEN],
}

/// Decode the text form and read the claims. Cheap: no signature check.
pub fn parse(text: &str) -> Result<Parsed, TokenError> {
    if text.len() != TOKEN_TEXT_LEN {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed)?;
    let raw: [u8; TOKEN_LEN] = bytes.try_into().map_err(|_| TokenError::Malformed)?;
    let mut msg = [0u8; MESSAGE_LEN];
    msg.copy_from_slice(&raw[..MESSAGE_LEN]);
    let claims = Claims::from_message(&msg)?;
    Ok(Parsed { claims, raw })
}

impl Parsed {
    /// Full Ed25519 verification against the key this token names.
    pub fn verify(&self, lookup: impl Fn(u32) -> Option<VerifyingKey>) -> Result<(), TokenError> {
        let key = lookup(self.claims.kid).ok_or(TokenError::UnknownKey)?;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&self.raw[MESSAGE_LEN..]);
        key.verify(&self.raw[..MESSAGE_LEN], &Signature::from_bytes(&sig))
            .map_err(|_| TokenError::BadSignature)
    }

    /// The keyed digest the server records when it issues a token. A presented
    /// token whose digest equals the recorded one is byte-for-byte the token the
    /// server signed, so the hot join path checks this (blake3, >100x cheaper)
    /// instead of the Ed25519 signature.
    pub fn tag(&self, key: &[u8; 32]) -> [u8; 32] {
        tag_of(&self.raw, key)
    }
}

pub fn tag_of(raw: &[u8], key: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, raw).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(k: &SigningKey) -> Claims {
        Claims {
            kid: kid_of(&k.verifying_key()),
            invite_id: InviteId([7; 16]),
            group_ref: [1; 8],
            epoch: 3,
            creator_ref: [2; 8],
            expires_at: 1_900_000_000,
        }
    }

    #[test]
    fn encode_parse_verify() {
        let k = key(1);
        let c = claims(&k);
        let text = c.sign(&k);
        assert_eq!(text.len(), TOKEN_TEXT_LEN);
        assert_eq!(TOKEN_TEXT_LEN, 151);
        let p = parse(&text).unwrap();
        assert_eq!(p.claims, c);
        let vk = k.verifying_key();
        p.verify(|kid| (kid == kid_of(&vk)).then_some(vk)).unwrap();
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let k = key(1);
        let vk = k.verifying_key();
        let text = claims(&k).sign(&k);
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        let tag_key = [9u8; 32];
        let good_tag = tag_of(&raw, &tag_key);
        for byte in 0..TOKEN_LEN {
            for bit in 0..8 {
                let mut t = raw.clone();
                t[byte] ^= 1 << bit;
                let forged = URL_SAFE_NO_PAD.encode(&t);
                // Either it no longer parses, or neither check accepts it.
                if let Ok(p) = parse(&forged) {
                    assert!(p.verify(|_| Some(vk)).is_err(), "byte {byte} bit {bit}");
                    assert_ne!(p.tag(&tag_key), good_tag);
                }
            }
        }
    }

    #[test]
    fn wrong_key_and_unknown_kid() {
        let k = key(1);
        let other = key(2).verifying_key();
        let p = parse(&claims(&k).sign(&k)).unwrap();
        assert_eq!(p.verify(|_| Some(other)), Err(TokenError::BadSignature));
        assert_eq!(p.verify(|_| None), Err(TokenError::UnknownKey));
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(parse("").unwrap_err(), TokenError::Malformed);
        assert_eq!(parse("abc").unwrap_err(), TokenError::Malformed);
        let junk = "!".repeat(TOKEN_TEXT_LEN);
        assert_eq!(parse(&junk).unwrap_err(), TokenError::Malformed);
        let k = key(1);
        let mut c = claims(&k).message().to_vec();
        c[0] = 9;
        c.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            parse(&URL_SAFE_NO_PAD.encode(&c)).unwrap_err(),
            TokenError::UnknownVersion
        );
    }
}
