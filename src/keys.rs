//! Signing keys and server secrets, kept as files in the data dir so that
//! `qrgate keygen` works while sled is locked by a running server.
//!
//! - `keys/<created-unix>-<kid>.ed25519`: hex Ed25519 seed, mode 0600. The
//!   newest key signs; older keys stay published in `/v1/keys` until every
//!   invitation they could have signed has expired (7 days after retirement).
//! - `secret.key`: 32 random bytes (hex) from which the keyed-blake3 keys for
//!   token tags, group/creator references and scan code tags are derived.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::domain::group::MAX_TTL_SECONDS;
use crate::domain::ids::{random_bytes, GroupId, UserId};
use crate::domain::token::{self, kid_of, Ref};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key file {0} is not 64 hex characters")]
    Bad(PathBuf),
    #[error("{0} is missing but the data dir holds a database: restore it from backup (a new secret would invalidate every invitation)")]
    MissingSecret(PathBuf),
    #[error("a sealed secret could not be encrypted or decrypted (wrong data dir secret, or the record is damaged)")]
    Seal,
}

struct KeyEntry {
    kid: u32,
    key: VerifyingKey,
    retired_at: Option<i64>,
}

pub struct KeyRing {
    signing: SigningKey,
    kid: u32,
    keys: Vec<KeyEntry>,
    tag_key: [u8; 32],
    group_ref_key: [u8; 32],
    creator_ref_key: [u8; 32],
    journal_key: [u8; 32],
    seal_key: [u8; 32],
    code_tag_key: [u8; 32],
    challenge_key: [u8; 32],
    device_key: [u8; 32],
    visitor_key: [u8; 32],
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kid: String,
    pub kty: &'static str,
    pub crv: &'static str,
    /// base64url public key
    pub x: String,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
}

/// The prefix of values sealed with associated data ('.' is not base64url).
const SEAL_V2: &str = "v2.";

fn seal_aad(user: UserId, field: &str) -> Vec<u8> {
    format!("qrgate sealed\0{user}\0{field}").into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Write a secret atomically and durably: a temp file, fsync, rename (which
/// refuses to replace an existing file), fsync of the directory.
fn write_secret(path: &Path, bytes: &[u8; 32]) -> Result<(), KeyError> {
    write_secret_text(path, &hex(bytes))
}

fn write_secret_text(path: &Path, text: &str) -> Result<(), KeyError> {
    let io = |e| KeyError::Io(path.to_path_buf(), e);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::hard_link(&tmp, path).map_err(io)?;
    std::fs::remove_file(&tmp).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn read_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
    unhex32(&text).ok_or_else(|| KeyError::Bad(path.to_path_buf()))
}

/// Create the data dir if it is missing, private to the server's user
/// (0700: it holds the secrets and every record). An existing one open to
/// others is left as it is, with a warning.
pub fn create_data_dir(data_dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| KeyError::Io(data_dir.to_path_buf(), e))?;
    if let Ok(m) = std::fs::metadata(data_dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %data_dir.display(),
                mode = format!("{mode:o}"),
                "the data dir is open to other users; `chmod 700` it (it holds the server's secrets)"
            );
        }
    }
    Ok(())
}

/// Where the generated admin token lives (when the config sets none).
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The admin token of a data dir whose config sets none: read from
/// `admin.token`, or generated there (mode 0600) on first start. Returns
/// the token and whether it was generated now. The token itself is never
/// logged; callers say where it is.
pub fn admin_token(data_dir: &Path, create: bool) -> Result<(String, bool), KeyError> {
    let path = admin_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok((t.trim().to_string(), false)),
        Ok(_) => return Err(KeyError::Bad(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => return Err(KeyError::Io(path, e)),
    }
    create_data_dir(data_dir)?;
    let token = format!("qra_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    write_secret_text(&path, &token)?;
    Ok((token, true))
}

/// Create a new signing key in `data_dir`; it becomes the active key at the
/// next start. Returns its kid.
pub fn generate(data_dir: &Path) -> Result<String, KeyError> {
    let dir = data_dir.join("keys");
    std::fs::create_dir_all(&dir).map_err(|e| KeyError::Io(dir.clone(), e))?;
    let seed: [u8; 32] = random_bytes();
    let kid = kid_of(&SigningKey::from_bytes(&seed).verifying_key());
    let now = crate::clock::now();
    write_secret(&dir.join(format!("{now:012}-{kid:08x}.ed25519")), &seed)?;
    Ok(format!("{kid:08x}"))
}

/// The key ring's files in `data_dir` (`secret.key`, `keys/*.ed25519`) by
/// path relative to it, as hex text: what every node of a cluster shares.
pub fn ring_files(data_dir: &Path) -> Result<Vec<(String, String)>, KeyError> {
    let mut out = vec![(
        "secret.key".to_string(),
        hex(&read_secret(&data_dir.join("secret.key"))?),
    )];
    let dir = data_dir.join("keys");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| KeyError::Io(dir.clone(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".ed25519"))
        .collect();
    names.sort();
    for n in names {
        out.push((format!("keys/{n}"), hex(&read_secret(&dir.join(&n))?)));
    }
    Ok(out)
}

const JOURNAL_CONTEXT: &str = "qrgate 2026 ledger journal chain";

/// The key of the ledger journal's hash chain, from `data_dir`'s secret
/// (read only: for tools that check a data dir no server has open).
pub fn journal_key(data_dir: &Path) -> Result<[u8; 32], KeyError> {
    let secret = read_secret(&data_dir.join("secret.key"))?;
    Ok(blake3::derive_key(JOURNAL_CONTEXT, &secret))
}

/// Write `text` as a new secret file at `path` (mode 0600, durably; an
/// existing file is not replaced).
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), KeyError> {
    write_secret_text(path, text)
}

/// Put a cluster's key ring (from [`ring_files`]) into `data_dir` in place
/// of the one there: the files it names are written, other signing keys
/// removed.
pub fn install_ring(data_dir: &Path, files: &[(String, String)]) -> Result<(), KeyError> {
    let dir = data_dir.join("keys");
    std::fs::create_dir_all(&dir).map_err(|e| KeyError::Io(dir.clone(), e))?;
    let safe = |n: &str| {
        n == "secret.key"
            || n.strip_prefix("keys/").is_some_and(|f| {
                f.ends_with(".ed25519")
                    && f.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            })
    };
    for (name, text) in files {
        if !safe(name) || unhex32(text).is_none() {
            return Err(KeyError::Bad(data_dir.join(name)));
        }
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = format!("keys/{}", e.file_name().to_string_lossy());
            if !files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(e.path()).map_err(|err| KeyError::Io(e.path(), err))?;
            }
        }
    }
    for (name, text) in files {
        let path = data_dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == text) {
            continue;
        }
        let _ = std::fs::remove_file(&path);
        write_secret_text(&path, text)?;
    }
    Ok(())
}

impl KeyRing {
    /// Load keys and secrets from `data_dir`, creating them on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<KeyRing, KeyError> {
        create_data_dir(data_dir)?;
        let secret_path = data_dir.join("secret.key");
        if !secret_path.exists() {
            // A new secret would silently invalidate every stored invitation
            // and group reference: only ever create one for a new data dir.
            if data_dir.join("db").exists() {
                return Err(KeyError::MissingSecret(secret_path));
            }
            write_secret(&secret_path, &random_bytes())?;
        }
        let secret = read_secret(&secret_path)?;
        let dir = data_dir.join("keys");
        let list = |dir: &Path| -> Result<Vec<PathBuf>, KeyError> {
            let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "ed25519"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
                Err(e) => return Err(KeyError::Io(dir.to_path_buf(), e)),
            };
            v.sort(); // names start with the zero-padded creation time
            Ok(v)
        };
        let mut files = list(&dir)?;
        if files.is_empty() {
            generate(data_dir)?;
            files = list(&dir)?;
        }
        let created = |p: &Path| -> i64 {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        };
        let mut keys = Vec::new();
        let mut signing = None;
        for (i, p) in files.iter().enumerate() {
            let sk = SigningKey::from_bytes(&read_secret(p)?);
            let vk = sk.verifying_key();
            let retired_at = files.get(i + 1).map(|next| created(next));
            keys.push(KeyEntry {
                kid: kid_of(&vk),
                key: vk,
                retired_at,
            });
            signing = Some(sk);
        }
        let signing = signing.ok_or_else(|| KeyError::Bad(dir.clone()))?;
        Ok(KeyRing::from_parts(signing, keys, &secret))
    }

    /// Keys that live only in memory (a fresh signing key and secret), for
    /// unit tests of actors: nothing signed with them outlives the process.
    pub fn ephemeral() -> KeyRing {
        let signing = SigningKey::from_bytes(&random_bytes());
        let vk = signing.verifying_key();
        let keys = vec![KeyEntry {
            kid: kid_of(&vk),
            key: vk,
            retired_at: None,
        }];
        KeyRing::from_parts(signing, keys, &random_bytes())
    }

    fn from_parts(signing: SigningKey, keys: Vec<KeyEntry>, secret: &[u8; 32]) -> KeyRing {
        KeyRing {
            kid: kid_of(&signing.verifying_key()),
            signing,
            keys,
            tag_key: blake3::derive_key("qrgate 2026 invitation token tag", secret),
            group_ref_key: blake3::derive_key("qrgate 2026 group reference", secret),
            creator_ref_key: blake3::derive_key("qrgate 2026 creator reference", secret),
            journal_key: blake3::derive_key(JOURNAL_CONTEXT, secret),
            seal_key: blake3::derive_key("qrgate 2026 token sealing", secret),
            code_tag_key: blake3::derive_key("qrgate 2026 scan code tag", secret),
            challenge_key: blake3::derive_key("qrgate 2026 join challenge", secret),
            device_key: blake3::derive_key("qrgate 2026 device id", secret),
            visitor_key: blake3::derive_key("qrgate 2026 scan code visitor", secret),
        }
    }

    pub fn active_kid(&self) -> u32 {
        self.kid
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn tag_key(&self) -> &[u8; 32] {
        &self.tag_key
    }

    /// Encrypt a secret of `user`'s, kept in its record's `field`, for
    /// storage: AES-256-GCM with a random nonce, the user and the field as
    /// associated data (a sealed value copied into another user's record or
    /// another field does not open). `v2.` then base64url of nonce ||
    /// ciphertext || tag.
    pub fn seal(&self, plaintext: &str, user: UserId, field: &str) -> Result<String, KeyError> {
        use aes_gcm::aead::{Aead, Payload};
        use aes_gcm::KeyInit;
        let cipher =
            aes_gcm::Aes256Gcm::new_from_slice(&self.seal_key).map_err(|_| KeyError::Seal)?;
        let nonce: [u8; 12] = random_bytes();
        let aad = seal_aad(user, field);
        let ct = cipher
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{SEAL_V2}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Decrypt what [`seal`](Self::seal) made for the same user and field
    /// (values sealed before the associated data, without the `v2.`
    /// prefix, open without it).
    pub fn open(&self, sealed: &str, user: UserId, field: &str) -> Result<String, KeyError> {
        use aes_gcm::aead::{Aead, Payload};
        use aes_gcm::KeyInit;
        let (encoded, aad) = match sealed.strip_prefix(SEAL_V2) {
            Some(rest) => (rest, seal_aad(user, field)),
            None => (sealed, Vec::new()),
        };
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| KeyError::Seal)?;
        if raw.len() < 12 + 16 {
            return Err(KeyError::Seal);
        }
        let (nonce, ct) = raw.split_at(12);
        let cipher =
            aes_gcm::Aes256Gcm::new_from_slice(&self.seal_key).map_err(|_| KeyError::Seal)?;
        let pt = cipher
            .decrypt(
                aes_gcm::Nonce::from_slice(nonce),
                Payload { msg: ct, aad: &aad },
            )
            .map_err(|_| KeyError::Seal)?;
        String::from_utf8(pt).map_err(|_| KeyError::Seal)
    }

    /// MAC key of challenge ids.
    pub fn challenge_key(&self) -> &[u8; 32] {
        &self.challenge_key
    }

    /// Keyed hash of a client's `X-Device-Id` (the raw id is never kept).
    pub fn device_hash(&self, device: &str) -> [u8; 16] {
        let h = blake3::keyed_hash(&self.device_key, device.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.as_bytes()[..16]);
        out
    }

    /// Keys the tags of scan codes.
    pub fn code_tag_key(&self) -> [u8; 32] {
        self.code_tag_key
    }

    /// Keys the hashes that identify scan code visitors.
    pub fn visitor_key(&self) -> [u8; 32] {
        self.visitor_key
    }

    /// Keys the hash chain of the ledger journal.
    pub fn journal_key(&self) -> [u8; 32] {
        self.journal_key
    }

    /// Verification key for `kid`, if it is one of ours.
    pub fn verifying_key(&self, kid: u32) -> Option<VerifyingKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| k.key)
    }

    pub fn group_ref(&self, g: GroupId) -> Ref {
        truncate(blake3::keyed_hash(&self.group_ref_key, g.as_bytes()))
    }

    pub fn creator_ref(&self, u: UserId) -> Ref {
        truncate(blake3::keyed_hash(&self.creator_ref_key, u.as_bytes()))
    }

    /// Keys to publish at `now`: the active one and those retired less than
    /// the maximum invitation lifetime ago.
    pub fn jwks(&self, now: i64) -> Vec<Jwk> {
        self.keys
            .iter()
            .rev()
            .filter(|k| k.retired_at.is_none_or(|r| now < r + MAX_TTL_SECONDS))
            .map(|k| Jwk {
                kid: format!("{:08x}", k.kid),
                kty: "OKP",
                crv: "Ed25519",
                x: URL_SAFE_NO_PAD.encode(k.key.as_bytes()),
                use_: "sig",
                alg: "EdDSA",
            })
            .collect()
    }

    /// Sign claims with the active key (the claims' kid is set here).
    pub fn sign(&self, mut claims: token::Claims) -> String {
        claims.kid = self.kid;
        claims.sign(&self.signing)
    }
}

fn truncate(h: blake3::Hash) -> Ref {
    let mut r = [0u8; 8];
    r.copy_from_slice(&h.as_bytes()[..8]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeyRing::load_or_create(dir.path()).unwrap();
        let b = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(a.active_kid(), b.active_kid());
        assert_eq!(a.group_ref(GroupId([1; 16])), b.group_ref(GroupId([1; 16])));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let new_kid = generate(dir.path()).unwrap();
        let c = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(format!("{:08x}", c.active_kid()), new_kid);
        assert!(
            c.verifying_key(a.active_kid()).is_some(),
            "old key still verifies"
        );
        let now = crate::clock::now();
        assert_eq!(c.jwks(now).len(), 2);
        assert_eq!(
            c.jwks(now + MAX_TTL_SECONDS + 10).len(),
            1,
            "retired key unpublished after max ttl"
        );
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_secret_user_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let (alice, bob) = (UserId::random(), UserId::random());
        let sealed = ring
            .seal("access-token-123", alice, "refresh_token")
            .unwrap();
        assert!(!sealed.contains("access-token-123"));
        assert_ne!(
            sealed,
            ring.seal("access-token-123", alice, "refresh_token")
                .unwrap(),
            "random nonce"
        );
        assert_eq!(
            ring.open(&sealed, alice, "refresh_token").unwrap(),
            "access-token-123"
        );
        assert!(
            matches!(
                ring.open(&sealed, bob, "refresh_token"),
                Err(KeyError::Seal)
            ),
            "another user's record"
        );
        assert!(
            matches!(
                ring.open(&sealed, alice, "access_token"),
                Err(KeyError::Seal)
            ),
            "another field"
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = KeyRing::load_or_create(other_dir.path()).unwrap();
        assert!(matches!(
            other.open(&sealed, alice, "refresh_token"),
            Err(KeyError::Seal)
        ));
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            ring.open(&tampered, alice, "refresh_token"),
            Err(KeyError::Seal)
        ));
        assert!(matches!(
            ring.open("short", alice, "x"),
            Err(KeyError::Seal)
        ));
        // A value sealed before the associated data still opens.
        let legacy = {
            use aes_gcm::aead::Aead;
            use aes_gcm::KeyInit;
            let cipher = aes_gcm::Aes256Gcm::new_from_slice(&ring.seal_key).unwrap();
            let nonce = [7u8; 12];
            let mut out = nonce.to_vec();
            out.extend(
                cipher
                    .encrypt(aes_gcm::Nonce::from_slice(&nonce), b"old".as_slice())
                    .unwrap(),
            );
            URL_SAFE_NO_PAD.encode(out)
        };
        assert_eq!(ring.open(&legacy, alice, "refresh_token").unwrap(), "old");
    }
}
