//! WeChat Pay API v3 style signatures: SHA256-with-RSA (PKCS#1 v1.5,
//! RSA 2048).
//!
//! # Requests (merchant -> provider)
//!
//! The signed message is
//!
//! ```text
//! METHOD\nCANONICAL_URL\nTIMESTAMP\nNONCE\nBODY\n
//! ```
//!
//! where `CANONICAL_URL` is the path plus `?query` if any (no scheme, no
//! host), `TIMESTAMP` is Unix seconds and `BODY` is the raw request body
//! (empty for `GET`). The method is upper-cased before signing and verifying.
//! The signature travels in the `Authorization` header:
//!
//! ```text
//! Authorization: WECHATPAY2-SHA256-RSA2048 mchid="1900000001",nonce_str="...",signature="<base64>",timestamp="1700000000",serial_no="..."
//! ```
//!
//! # Responses and notifications (provider -> merchant)
//!
//! The signed message is `TIMESTAMP\nNONCE\nBODY\n`, carried in the
//! `Wechatpay-Timestamp`, `Wechatpay-Nonce`, `Wechatpay-Signature` (base64) and
//! `Wechatpay-Serial` headers (see the `HEADER_*` constants).
//!
//! # Keys
//!
//! Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what the
//! provider's `apiclient_key.pem` is; PKCS#1 `BEGIN RSA PRIVATE KEY` is also
//! accepted on load), public keys are SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
//! Only RSA keys of 2048 to 4096 bits are accepted.
//!
//! Signing uses RSA blinding with the OS random generator.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use thiserror::Error;

pub use rsa::{RsaPrivateKey, RsaPublicKey};

/// The authorization scheme of WeChat Pay API v3.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// Response/notification header: Unix timestamp in seconds.
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
/// Response/notification header: random nonce.
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
/// Response/notification header: base64 signature.
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
/// Response/notification header: serial number of the signing key.
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// Response/notification header naming the signature type (optional).
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";
/// Default tolerated clock difference: 5 minutes.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// Length of nonces produced by [`generate_nonce`].
pub const NONCE_LEN: usize = 32;
/// Key size used by [`generate_keypair`].
pub const KEY_BITS: usize = 2048;
/// How a signature the provider sends on purpose to probe whether the
/// merchant verifies signatures begins. It never verifies; it is a test of
/// the merchant, not a forgery.
pub const PROBE_SIGNATURE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// Whether `signature` is one of the provider's probe signatures.
pub fn is_probe_signature(signature: &str) -> bool {
    signature.starts_with(PROBE_SIGNATURE_PREFIX)
}

const MIN_KEY_BITS: usize = 2048;
const MAX_KEY_BITS: usize = 4096;
/// Upper bound on the length of any single header field value we sign or
/// parse (the signature of a 4096-bit key is 684 base64 characters).
const MAX_FIELD_LEN: usize = 1024;
/// Upper bound on the canonical URL (path and query).
const MAX_URL_LEN: usize = 8192;

/// Errors of signing, verification and key handling.
#[derive(Debug, Error)]
pub enum SignError {
    /// The `Authorization` header does not start with [`AUTH_SCHEME`].
    #[error("authorization scheme is not {AUTH_SCHEME}")]
    WrongScheme,
    /// The `Authorization` header parameters are not `key="value"` pairs
    /// separated by commas.
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    /// A required authorization field is absent.
    #[error("authorization field {0} is missing")]
    MissingField(&'static str),
    /// An authorization field appears twice.
    #[error("authorization field {0} appears more than once")]
    DuplicateField(String),
    /// An authorization field that this scheme does not define.
    #[error("unknown authorization field {0}")]
    UnknownField(String),
    /// A field value is empty, too long, or contains characters that cannot
    /// be carried (quotes, backslashes, control characters, newlines).
    #[error("invalid value for {0}")]
    InvalidField(&'static str),
    /// The timestamp is not a plain non-negative decimal number.
    #[error("timestamp is not a valid number")]
    InvalidTimestamp,
    /// The timestamp is older than the allowed skew.
    #[error("timestamp {timestamp} is too old (now {now}, max skew {max_skew}s)")]
    TimestampExpired {
        /// Signed timestamp.
        timestamp: i64,
        /// Verifier's clock.
        now: i64,
        /// Allowed skew in seconds.
        max_skew: u64,
    },
    /// The timestamp is ahead of the verifier's clock by more than the skew.
    #[error("timestamp {timestamp} is in the future (now {now}, max skew {max_skew}s)")]
    TimestampInFuture {
        /// Signed timestamp.
        timestamp: i64,
        /// Verifier's clock.
        now: i64,
        /// Allowed skew in seconds.
        max_skew: u64,
    },
    /// The signature is not valid base64.
    #[error("signature is not valid base64")]
    BadBase64,
    /// The signature does not match the message and key.
    #[error("signature verification failed")]
    BadSignature,
    /// The RSA key is not between 2048 and 4096 bits.
    #[error("unsupported RSA key size {0} bits")]
    UnsupportedKeySize(usize),
    /// A key could not be decoded from PEM.
    #[error("invalid key PEM: {0}")]
    KeyDecode(String),
    /// A key could not be encoded to PEM.
    #[error("cannot encode key: {0}")]
    KeyEncode(String),
    /// RSA key generation or signing failed (includes random generator
    /// failures).
    #[error("RSA operation failed: {0}")]
    Crypto(String),
    /// The OS random generator failed.
    #[error("random generator failed: {0}")]
    Random(String),
    /// Reading or writing a key file failed.
    #[error("key file I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The parsed `Authorization` header of a merchant request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// Merchant id (`mchid`).
    pub mchid: String,
    /// Request nonce (`nonce_str`).
    pub nonce_str: String,
    /// Base64 signature (`signature`).
    pub signature: String,
    /// Unix seconds exactly as sent (`timestamp`); guaranteed to be 1..=19
    /// ASCII digits after [`parse_authorization`].
    pub timestamp: String,
    /// Serial number of the merchant key (`serial_no`).
    pub serial_no: String,
}

impl AuthHeader {
    /// The timestamp as Unix seconds.
    pub fn timestamp_secs(&self) -> Result<i64, SignError> {
        parse_timestamp(&self.timestamp)
    }
}

/// The four provider headers of a signed response or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature`.
    pub signature: String,
    /// `Wechatpay-Serial`.
    pub serial: String,
}

impl ResponseHeaders {
    /// `(name, value)` pairs ready to be inserted into an HTTP response.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (HEADER_TIMESTAMP, self.timestamp.as_str()),
            (HEADER_NONCE, self.nonce.as_str()),
            (HEADER_SIGNATURE, self.signature.as_str()),
            (HEADER_SERIAL, self.serial.as_str()),
            (HEADER_SIGNATURE_TYPE, AUTH_SCHEME),
        ]
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

fn check_key_size(bits: usize) -> Result<(), SignError> {
    if (MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(SignError::UnsupportedKeySize(bits))
    }
}

/// Generates a fresh RSA 2048 key pair from the OS random generator.
///
/// Slow in unoptimised builds unless `num-bigint-dig` is built with
/// `opt-level = 3`.
pub fn generate_keypair() -> Result<(RsaPrivateKey, RsaPublicKey), SignError> {
    let private =
        RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(|e| SignError::Crypto(e.to_string()))?;
    let public = private.to_public_key();
    Ok((private, public))
}

/// Encodes a private key as PKCS#8 PEM (LF line endings).
pub fn private_key_to_pem(key: &RsaPrivateKey) -> Result<String, SignError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|e| SignError::KeyEncode(e.to_string()))
}

/// Decodes a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`)
/// PEM private key and checks it is 2048..=4096 bits.
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, SignError> {
    let pem = pem.trim();
    let key = match RsaPrivateKey::from_pkcs8_pem(pem) {
        Ok(key) => key,
        Err(pkcs8_err) => RsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|_| SignError::KeyDecode(pkcs8_err.to_string()))?,
    };
    check_key_size(key.n().bits())?;
    Ok(key)
}

/// Encodes a public key as SPKI PEM (`BEGIN PUBLIC KEY`, LF line endings).
pub fn public_key_to_pem(key: &RsaPublicKey) -> Result<String, SignError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::KeyEncode(e.to_string()))
}

/// Decodes an SPKI PEM public key and checks it is 2048..=4096 bits.
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, SignError> {
    let key = RsaPublicKey::from_public_key_pem(pem.trim())
        .map_err(|e| SignError::KeyDecode(e.to_string()))?;
    check_key_size(key.n().bits())?;
    Ok(key)
}

/// Reads a private key PEM file (see [`private_key_from_pem`]).
pub fn load_private_key(path: &Path) -> Result<RsaPrivateKey, SignError> {
    private_key_from_pem(&std::fs::read_to_string(path)?)
}

/// The RSA public key of a `PUBLIC KEY` PEM (the WeChat Pay public key) or
/// of a `CERTIFICATE` PEM (a platform certificate).
pub fn public_key_or_certificate_from_pem(pem: &str) -> Result<RsaPublicKey, SignError> {
    let pem = pem.trim();
    if !pem.starts_with("-----BEGIN CERTIFICATE-----") {
        return public_key_from_pem(pem);
    }
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(pem)
        .map_err(|e| SignError::KeyDecode(format!("certificate: {e}")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| SignError::KeyDecode(format!("certificate key: {e}")))?;
    let key = RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| SignError::KeyDecode(format!("certificate key: {e}")))?;
    check_key_size(key.n().bits())?;
    Ok(key)
}

/// Reads a public key or certificate PEM file (see
/// [`public_key_or_certificate_from_pem`]).
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey, SignError> {
    public_key_or_certificate_from_pem(&std::fs::read_to_string(path)?)
}

/// Encrypts a sensitive field (a real name) for the provider: RSA-OAEP with
/// SHA-1 and MGF1-SHA-1 under the provider's public key, base64.
pub fn encrypt_sensitive(key: &RsaPublicKey, plaintext: &str) -> Result<String, SignError> {
    let ciphertext = key
        .encrypt(
            &mut OsRng,
            rsa::Oaep::new::<sha1::Sha1>(),
            plaintext.as_bytes(),
        )
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    Ok(B64.encode(ciphertext))
}

/// Decrypts what [`encrypt_sensitive`] made, with the provider's private key.
pub fn decrypt_sensitive(key: &RsaPrivateKey, ciphertext_b64: &str) -> Result<String, SignError> {
    let ciphertext = B64
        .decode(ciphertext_b64)
        .map_err(|_| SignError::BadBase64)?;
    let plain = key
        .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &ciphertext)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    String::from_utf8(plain).map_err(|_| SignError::Crypto("not UTF-8".into()))
}

/// Writes a private key as PKCS#8 PEM. On Unix a newly created file gets mode
/// `0600`; an existing file is truncated and keeps its mode.
pub fn save_private_key(path: &Path, key: &RsaPrivateKey) -> Result<(), SignError> {
    use std::io::Write as _;
    let pem = private_key_to_pem(key)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Writes a public key as SPKI PEM.
pub fn save_public_key(path: &Path, key: &RsaPublicKey) -> Result<(), SignError> {
    std::fs::write(path, public_key_to_pem(key)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Nonces and messages
// ---------------------------------------------------------------------------

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Returns `len` random ASCII alphanumeric characters from the OS random
/// generator (uniform: rejection sampling, no modulo bias).
pub fn random_alphanumeric(len: usize) -> Result<String, SignError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng
            .try_fill_bytes(&mut buf)
            .map_err(|e| SignError::Random(e.to_string()))?;
        for &b in &buf {
            // 248 = 4 * 62: values at or above it would bias the result.
            if b < 248 {
                if let Some(&c) = ALPHANUMERIC.get(usize::from(b % 62)) {
                    out.push(char::from(c));
                }
                if out.len() == len {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// A fresh 32-character alphanumeric nonce.
pub fn generate_nonce() -> Result<String, SignError> {
    random_alphanumeric(NONCE_LEN)
}

/// Checks a value that is placed inside a header or on its own line of the
/// signed message: non-empty, bounded, printable ASCII except `"` and `\`.
fn check_field(value: &str, name: &'static str) -> Result<(), SignError> {
    check_field_len(value, name, MAX_FIELD_LEN)
}

fn check_field_len(value: &str, name: &'static str, max_len: usize) -> Result<(), SignError> {
    let ok = !value.is_empty()
        && value.len() <= max_len
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(SignError::InvalidField(name))
    }
}

/// Parses a timestamp made of 1..=19 ASCII digits (no sign, no spaces).
fn parse_timestamp(value: &str) -> Result<i64, SignError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignError::InvalidTimestamp);
    }
    value
        .parse::<i64>()
        .map_err(|_| SignError::InvalidTimestamp)
}

fn check_skew(timestamp: i64, now: i64, max_skew: u64) -> Result<(), SignError> {
    let diff = i128::from(now) - i128::from(timestamp);
    if diff >= i128::from(max_skew) {
        Err(SignError::TimestampExpired {
            timestamp,
            now,
            max_skew,
        })
    } else if -diff >= i128::from(max_skew) {
        Err(SignError::TimestampInFuture {
            timestamp,
            now,
            max_skew,
        })
    } else {
        Ok(())
    }
}

/// The request message `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`.
///
/// `method` is upper-cased; `method`, `url`, `timestamp` and `nonce` must be
/// printable ASCII without `"` or `\` so that the framing is unambiguous.
pub fn request_message(
    method: &str,
    url: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Result<Vec<u8>, SignError> {
    check_field(method, "method")?;
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(SignError::InvalidField("method"));
    }
    check_field_len(url, "url", MAX_URL_LEN)?;
    if !url.starts_with('/') {
        return Err(SignError::InvalidField("url"));
    }
    parse_timestamp(timestamp)?;
    check_field(nonce, "nonce")?;
    let mut msg = Vec::with_capacity(method.len() + url.len() + nonce.len() + body.len() + 32);
    msg.extend_from_slice(method.to_ascii_uppercase().as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(url.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(body);
    msg.push(b'\n');
    Ok(msg)
}

/// The response/notification message `TIMESTAMP\nNONCE\nBODY\n`.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Result<Vec<u8>, SignError> {
    parse_timestamp(timestamp)?;
    check_field(nonce, "nonce")?;
    let mut msg = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    msg.extend_from_slice(timestamp.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(body);
    msg.push(b'\n');
    Ok(msg)
}

// ---------------------------------------------------------------------------
// Raw sign / verify
// ---------------------------------------------------------------------------

/// Signs `message` with SHA256-with-RSA (PKCS#1 v1.5) and returns base64.
pub fn sign_message(key: &RsaPrivateKey, message: &[u8]) -> Result<String, SignError> {
    let signing_key = SigningKey::<Sha256>::new(key.clone());
    let signature = signing_key
        .try_sign_with_rng(&mut OsRng, message)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    Ok(B64.encode(signature.to_bytes()))
}

/// Verifies a base64 SHA256-with-RSA (PKCS#1 v1.5) signature of `message`.
pub fn verify_message(
    key: &RsaPublicKey,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), SignError> {
    if signature_b64.len() > MAX_FIELD_LEN {
        return Err(SignError::BadBase64);
    }
    let raw = B64
        .decode(signature_b64.as_bytes())
        .map_err(|_| SignError::BadBase64)?;
    if raw.len() != key.size() {
        return Err(SignError::BadSignature);
    }
    let signature = Signature::try_from(raw.as_slice()).map_err(|_| SignError::BadSignature)?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(message, &signature)
        .map_err(|_| SignError::BadSignature)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Signs a merchant request and returns the full `Authorization` header value
/// (`WECHATPAY2-SHA256-RSA2048 mchid="...",...`).
///
/// `url` is the canonical URL: path plus `?query` if any.
#[allow(clippy::too_many_arguments)]
pub fn build_authorization(
    key: &RsaPrivateKey,
    mchid: &str,
    serial_no: &str,
    method: &str,
    url: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Result<String, SignError> {
    check_field(mchid, "mchid")?;
    check_field(serial_no, "serial_no")?;
    if timestamp < 0 {
        return Err(SignError::InvalidTimestamp);
    }
    let timestamp = timestamp.to_string();
    let message = request_message(method, url, &timestamp, nonce, body)?;
    let signature = sign_message(key, &message)?;
    Ok(format!(
        "{AUTH_SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    ))
}

/// Parses an `Authorization` header value.
///
/// Accepts the fields in any order, with optional spaces/tabs around `,`
/// and `=`. Rejects another scheme, missing, duplicated, unknown or empty
/// fields, unquoted values, and a timestamp that is not decimal digits.
pub fn parse_authorization(header: &str) -> Result<AuthHeader, SignError> {
    let rest = header
        .trim()
        .strip_prefix(AUTH_SCHEME)
        .ok_or(SignError::WrongScheme)?;
    // The scheme must be followed by whitespace, not glued to more letters.
    let params = match rest.strip_prefix([' ', '\t']) {
        Some(params) => params.trim_start_matches([' ', '\t']),
        None if rest.is_empty() => return Err(SignError::MissingField("mchid")),
        None => return Err(SignError::WrongScheme),
    };

    let mut mchid = None;
    let mut nonce_str = None;
    let mut signature = None;
    let mut timestamp = None;
    let mut serial_no = None;

    let mut cursor = params;
    loop {
        cursor = cursor.trim_start_matches([' ', '\t']);
        if cursor.is_empty() {
            break;
        }
        let eq = cursor
            .find('=')
            .ok_or(SignError::MalformedHeader("expected key=\"value\""))?;
        let (raw_key, after_key) = cursor.split_at(eq);
        let key = raw_key.trim_end_matches([' ', '\t']);
        let after_eq = after_key
            .get(1..)
            .unwrap_or_default()
            .trim_start_matches([' ', '\t']);
        let quoted = after_eq
            .strip_prefix('"')
            .ok_or(SignError::MalformedHeader("value must be quoted"))?;
        let close = quoted
            .find('"')
            .ok_or(SignError::MalformedHeader("unterminated quoted value"))?;
        let (value, after_value) = quoted.split_at(close);
        let after_value = after_value
            .get(1..)
            .unwrap_or_default()
            .trim_start_matches([' ', '\t']);

        let slot = match key {
            "mchid" => &mut mchid,
            "nonce_str" => &mut nonce_str,
            "signature" => &mut signature,
            "timestamp" => &mut timestamp,
            "serial_no" => &mut serial_no,
            other => {
                if other.is_empty() || other.contains([',', '"']) {
                    return Err(SignError::MalformedHeader("expected key=\"value\""));
                }
                return Err(SignError::UnknownField(other.to_owned()));
            }
        };
        if slot.is_some() {
            return Err(SignError::DuplicateField(key.to_owned()));
        }
        *slot = Some(value.to_owned());

        cursor = match after_value.strip_prefix(',') {
            Some(next) => next,
            None if after_value.is_empty() => after_value,
            None => return Err(SignError::MalformedHeader("expected ',' between fields")),
        };
    }

    let header = AuthHeader {
        mchid: mchid.ok_or(SignError::MissingField("mchid"))?,
        nonce_str: nonce_str.ok_or(SignError::MissingField("nonce_str"))?,
        signature: signature.ok_or(SignError::MissingField("signature"))?,
        timestamp: timestamp.ok_or(SignError::MissingField("timestamp"))?,
        serial_no: serial_no.ok_or(SignError::MissingField("serial_no"))?,
    };
    check_field(&header.mchid, "mchid")?;
    check_field(&header.nonce_str, "nonce_str")?;
    check_field(&header.signature, "signature")?;
    check_field(&header.serial_no, "serial_no")?;
    parse_timestamp(&header.timestamp)?;
    Ok(header)
}

/// Verifies a merchant request against its parsed `Authorization` header.
///
/// Checks the timestamp against `now` (Unix seconds) first — older than
/// `max_skew` seconds is [`SignError::TimestampExpired`], ahead by more than
/// `max_skew` is [`SignError::TimestampInFuture`] — then the signature over
/// `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`. Which key to use (by
/// `auth.mchid` / `auth.serial_no`) is the caller's decision.
pub fn verify_request(
    public_key: &RsaPublicKey,
    auth: &AuthHeader,
    method: &str,
    url: &str,
    body: &[u8],
    now: i64,
    max_skew: u64,
) -> Result<(), SignError> {
    let timestamp = parse_timestamp(&auth.timestamp)?;
    check_skew(timestamp, now, max_skew)?;
    let message = request_message(method, url, &auth.timestamp, &auth.nonce_str, body)?;
    verify_message(public_key, &message, &auth.signature)
}

// ---------------------------------------------------------------------------
// Responses / notifications
// ---------------------------------------------------------------------------

/// Signs a provider response or notification body; returns the base64 value
/// of `Wechatpay-Signature`.
pub fn sign_response(
    key: &RsaPrivateKey,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Result<String, SignError> {
    if timestamp < 0 {
        return Err(SignError::InvalidTimestamp);
    }
    let message = response_message(&timestamp.to_string(), nonce, body)?;
    sign_message(key, &message)
}

/// Produces all provider headers for `body`: a fresh nonce, `timestamp`, the
/// signature and the key serial.
pub fn sign_response_headers(
    key: &RsaPrivateKey,
    serial: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<ResponseHeaders, SignError> {
    check_field(serial, "serial")?;
    let nonce = generate_nonce()?;
    let signature = sign_response(key, timestamp, &nonce, body)?;
    Ok(ResponseHeaders {
        timestamp: timestamp.to_string(),
        nonce,
        signature,
        serial: serial.to_owned(),
    })
}

/// Verifies a provider response or notification from its
/// `Wechatpay-Timestamp`, `Wechatpay-Nonce` and `Wechatpay-Signature`
/// headers.
///
/// Rejects a non-numeric timestamp ([`SignError::InvalidTimestamp`]), one
/// older than `max_skew_secs` ([`SignError::TimestampExpired`]) or ahead of
/// `now_unix` by more than `max_skew_secs` ([`SignError::TimestampInFuture`]),
/// a signature that is not base64 ([`SignError::BadBase64`]) and a wrong
/// signature ([`SignError::BadSignature`]). Use [`DEFAULT_MAX_SKEW_SECS`]
/// (5 minutes) unless there is a reason not to.
pub fn verify_response(
    public_key: &RsaPublicKey,
    timestamp_str: &str,
    nonce: &str,
    body: &[u8],
    signature_b64: &str,
    now_unix: i64,
    max_skew_secs: u64,
) -> Result<(), SignError> {
    let timestamp = parse_timestamp(timestamp_str)?;
    check_skew(timestamp, now_unix, max_skew_secs)?;
    let message = response_message(timestamp_str, nonce, body)?;
    verify_message(public_key, &message, signature_b64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One key pair for the whole test binary (RSA generation is slow).
    pub(crate) fn test_keys() -> &'static (RsaPrivateKey, RsaPublicKey) {
        static KEYS: OnceLock<(RsaPrivateKey, RsaPublicKey)> = OnceLock::new();
        KEYS.get_or_init(|| generate_keypair().expect("test key generation"))
    }

    /// A second, different key pair.
    fn other_keys() -> &'static (RsaPrivateKey, RsaPublicKey) {
        static KEYS: OnceLock<(RsaPrivateKey, RsaPublicKey)> = OnceLock::new();
        KEYS.get_or_init(|| generate_keypair().expect("test key generation"))
    }

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"out_bill_no":"T1","transfer_amount":100}"#;
    const URL: &str = "/v3/fund-app/mch-transfer/transfer-bills?x=1";

    fn signed_header() -> String {
        let (private, _) = test_keys();
        build_authorization(
            private,
            "1900000001",
            "SERIAL01",
            "POST",
            URL,
            NOW,
            "abcDEF1234567890abcDEF1234567890",
            BODY,
        )
        .expect("sign")
    }

    #[test]
    fn nonce_is_32_alphanumeric_and_random() {
        let a = generate_nonce().expect("nonce");
        let b = generate_nonce().expect("nonce");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(random_alphanumeric(0).expect("empty"), "");
        assert_eq!(random_alphanumeric(200).expect("long").len(), 200);
    }

    #[test]
    fn request_message_layout() {
        let msg = request_message("post", "/a?b=c", "12", "N", b"{}").expect("msg");
        assert_eq!(msg, b"POST\n/a?b=c\n12\nN\n{}\n");
        let msg = request_message("GET", "/a", "12", "N", b"").expect("msg");
        assert_eq!(msg, b"GET\n/a\n12\nN\n\n");
        assert!(matches!(
            request_message("GET", "/a", "12", "N\nX", b""),
            Err(SignError::InvalidField("nonce"))
        ));
        assert!(matches!(
            request_message("GET", "https://x/a", "12", "N", b""),
            Err(SignError::InvalidField("url"))
        ));
        assert!(matches!(
            request_message("GE T", "/a", "12", "N", b""),
            Err(SignError::InvalidField("method"))
        ));
        assert_eq!(
            response_message("12", "N", b"x").expect("msg"),
            b"12\nN\nx\n"
        );
    }

    #[test]
    fn request_round_trip() {
        let (_, public) = test_keys();
        let header = signed_header();
        assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\",nonce_str="));
        let auth = parse_authorization(&header).expect("parse");
        assert_eq!(auth.mchid, "1900000001");
        assert_eq!(auth.serial_no, "SERIAL01");
        assert_eq!(auth.timestamp, NOW.to_string());
        assert_eq!(auth.timestamp_secs().expect("ts"), NOW);
        assert_eq!(auth.nonce_str, "abcDEF1234567890abcDEF1234567890");
        verify_request(public, &auth, "POST", URL, BODY, NOW, DEFAULT_MAX_SKEW_SECS)
            .expect("verify");
        // Method case does not matter.
        verify_request(public, &auth, "post", URL, BODY, NOW + 10, 300).expect("verify");
    }

    #[test]
    fn request_tampering_rejected() {
        let (_, public) = test_keys();
        let auth = parse_authorization(&signed_header()).expect("parse");
        let bad = |r: Result<(), SignError>| matches!(r, Err(SignError::BadSignature));

        assert!(bad(verify_request(
            public,
            &auth,
            "POST",
            URL,
            br#"{"out_bill_no":"T1","transfer_amount":900}"#,
            NOW,
            300
        )));
        assert!(bad(verify_request(
            public, &auth, "PUT", URL, BODY, NOW, 300
        )));
        assert!(bad(verify_request(
            public,
            &auth,
            "POST",
            "/v3/fund-app/mch-transfer/transfer-bills?x=2",
            BODY,
            NOW,
            300
        )));
        let mut t = auth.clone();
        t.timestamp = (NOW + 1).to_string();
        assert!(bad(verify_request(public, &t, "POST", URL, BODY, NOW, 300)));
        let mut t = auth.clone();
        t.nonce_str = "abcDEF1234567890abcDEF1234567891".into();
        assert!(bad(verify_request(public, &t, "POST", URL, BODY, NOW, 300)));
        // Wrong key.
        let (_, other_public) = other_keys();
        assert!(bad(verify_request(
            other_public,
            &auth,
            "POST",
            URL,
            BODY,
            NOW,
            300
        )));
        // Signature bytes changed but still valid base64 of the right length.
        let mut t = auth.clone();
        let mut raw = B64.decode(&t.signature).expect("b64");
        if let Some(byte) = raw.get_mut(10) {
            *byte ^= 1;
        }
        t.signature = B64.encode(raw);
        assert!(bad(verify_request(public, &t, "POST", URL, BODY, NOW, 300)));
        // Truncated signature.
        let mut t = auth.clone();
        t.signature = B64.encode([1u8; 16]);
        assert!(bad(verify_request(public, &t, "POST", URL, BODY, NOW, 300)));
        // Not base64.
        let mut t = auth;
        t.signature = "!!!notbase64!!!".into();
        assert!(matches!(
            verify_request(public, &t, "POST", URL, BODY, NOW, 300),
            Err(SignError::BadBase64)
        ));
    }

    #[test]
    fn request_skew() {
        let (_, public) = test_keys();
        let auth = parse_authorization(&signed_header()).expect("parse");
        // Just inside the limit is accepted on both sides; at it (five
        // minutes or more) refused.
        verify_request(public, &auth, "POST", URL, BODY, NOW + 299, 300).expect("edge old");
        verify_request(public, &auth, "POST", URL, BODY, NOW - 299, 300).expect("edge future");
        assert!(matches!(
            verify_request(public, &auth, "POST", URL, BODY, NOW + 300, 300),
            Err(SignError::TimestampExpired { .. })
        ));
        assert!(matches!(
            verify_request(public, &auth, "POST", URL, BODY, NOW - 300, 300),
            Err(SignError::TimestampInFuture { .. })
        ));
        assert!(matches!(
            verify_request(public, &auth, "POST", URL, BODY, i64::MIN, 300),
            Err(SignError::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn header_parse_any_order_and_spacing() {
        let h = r#"WECHATPAY2-SHA256-RSA2048   serial_no="S1" , timestamp = "17",signature="c2ln",nonce_str="N1",mchid="M1""#;
        let auth = parse_authorization(h).expect("parse");
        assert_eq!(
            auth,
            AuthHeader {
                mchid: "M1".into(),
                nonce_str: "N1".into(),
                signature: "c2ln".into(),
                timestamp: "17".into(),
                serial_no: "S1".into(),
            }
        );
        // Trailing comma tolerated.
        let h = r#"WECHATPAY2-SHA256-RSA2048 mchid="M1",nonce_str="N1",signature="c2ln",timestamp="17",serial_no="S1","#;
        assert_eq!(parse_authorization(h).expect("parse"), auth);
        // Values may contain commas and '=' inside quotes (base64 padding).
        let h = r#"WECHATPAY2-SHA256-RSA2048 mchid="M1",nonce_str="N1",signature="c2=,",timestamp="17",serial_no="S1""#;
        assert_eq!(parse_authorization(h).expect("parse").signature, "c2=,");
    }

    #[test]
    fn header_parse_rejects_malformed() {
        const FULL: &str =
            r#"mchid="M1",nonce_str="N1",signature="c2ln",timestamp="17",serial_no="S1""#;
        let p = |s: &str| parse_authorization(s);

        assert!(matches!(
            p(&format!("WECHATPAY2-SHA256-RSA4096 {FULL}")),
            Err(SignError::WrongScheme)
        ));
        assert!(matches!(
            p(&format!("Bearer {FULL}")),
            Err(SignError::WrongScheme)
        ));
        assert!(matches!(
            p(&format!("WECHATPAY2-SHA256-RSA2048X {FULL}")),
            Err(SignError::WrongScheme)
        ));
        assert!(matches!(p(""), Err(SignError::WrongScheme)));
        assert!(matches!(
            p("WECHATPAY2-SHA256-RSA2048"),
            Err(SignError::MissingField("mchid"))
        ));
        assert!(matches!(
            p(
                r#"WECHATPAY2-SHA256-RSA2048 mchid="M1",nonce_str="N1",signature="c2ln",timestamp="17""#
            ),
            Err(SignError::MissingField("serial_no"))
        ));
        assert!(matches!(
            p(&format!(r#"WECHATPAY2-SHA256-RSA2048 {FULL},mchid="M2""#)),
            Err(SignError::DuplicateField(f)) if f == "mchid"
        ));
        assert!(matches!(
            p(&format!(r#"WECHATPAY2-SHA256-RSA2048 {FULL},extra="1""#)),
            Err(SignError::UnknownField(f)) if f == "extra"
        ));
        assert!(matches!(
            p(
                r#"WECHATPAY2-SHA256-RSA2048 mchid=M1,nonce_str="N1",signature="c2ln",timestamp="17",serial_no="S1""#
            ),
            Err(SignError::MalformedHeader(_))
        ));
        assert!(matches!(
            p(
                r#"WECHATPAY2-SHA256-RSA2048 mchid="M1" nonce_str="N1",signature="c2ln",timestamp="17",serial_no="S1""#
            ),
            Err(SignError::MalformedHeader(_))
        ));
        assert!(matches!(
            p(r#"WECHATPAY2-SHA256-RSA2048 mchid="M1,nonce_str="N1""#),
            Err(SignError::MalformedHeader(_))
        ));
        assert!(matches!(
            p(r#"WECHATPAY2-SHA256-RSA2048 mchid="M1",,nonce_str="N1""#),
            Err(SignError::MalformedHeader(_))
        ));
        assert!(matches!(
            p(r#"WECHATPAY2-SHA256-RSA2048 mchid"#),
            Err(SignError::MalformedHeader(_))
        ));
        assert!(matches!(
            p(
                r#"WECHATPAY2-SHA256-RSA2048 mchid="",nonce_str="N1",signature="c2ln",timestamp="17",serial_no="S1""#
            ),
            Err(SignError::InvalidField("mchid"))
        ));
        for ts in [
            "-17",
            "+17",
            "1.5",
            "abc",
            "",
            " 17",
            "99999999999999999999",
            "１",
        ] {
            let h = format!(
                r#"WECHATPAY2-SHA256-RSA2048 mchid="M1",nonce_str="N1",signature="c2ln",timestamp="{ts}",serial_no="S1""#
            );
            assert!(
                matches!(p(&h), Err(SignError::InvalidTimestamp)),
                "timestamp {ts:?}"
            );
        }
        // Multi-byte characters around the syntax never panic.
        for s in [
            "WECHATPAY2-SHA256-RSA2048 é=\"x\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"é\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"x\"é",
            "WECHATPAY2-SHA256-RSA2048 mchid=",
            "WECHATPAY2-SHA256-RSA2048 =\"x\"",
        ] {
            assert!(p(s).is_err(), "{s}");
        }
    }

    #[test]
    fn build_rejects_unsafe_fields() {
        let (private, _) = test_keys();
        assert!(matches!(
            build_authorization(private, "M\"1", "S", "POST", "/a", NOW, "N", b""),
            Err(SignError::InvalidField("mchid"))
        ));
        assert!(matches!(
            build_authorization(private, "M1", "S", "POST", "/a", NOW, "N\"", b""),
            Err(SignError::InvalidField("nonce"))
        ));
        assert!(matches!(
            build_authorization(private, "M1", "S", "POST", "/a", -1, "N", b""),
            Err(SignError::InvalidTimestamp)
        ));
    }

    #[test]
    fn response_round_trip_and_tampering() {
        let (private, public) = test_keys();
        let ts = NOW.to_string();
        let nonce = "Nonce0123456789Nonce0123456789AB";
        let sig = sign_response(private, NOW, nonce, BODY).expect("sign");
        verify_response(public, &ts, nonce, BODY, &sig, NOW, DEFAULT_MAX_SKEW_SECS)
            .expect("verify");

        assert!(matches!(
            verify_response(public, &ts, nonce, b"{}", &sig, NOW, 300),
            Err(SignError::BadSignature)
        ));
        assert!(matches!(
            verify_response(public, &(NOW + 1).to_string(), nonce, BODY, &sig, NOW, 300),
            Err(SignError::BadSignature)
        ));
        assert!(matches!(
            verify_response(public, &ts, "OtherNonce", BODY, &sig, NOW, 300),
            Err(SignError::BadSignature)
        ));
        let (_, other_public) = other_keys();
        assert!(matches!(
            verify_response(other_public, &ts, nonce, BODY, &sig, NOW, 300),
            Err(SignError::BadSignature)
        ));
        assert!(matches!(
            verify_response(public, &ts, nonce, BODY, "%%%", NOW, 300),
            Err(SignError::BadBase64)
        ));
        assert!(matches!(
            verify_response(public, &ts, nonce, BODY, "", NOW, 300),
            Err(SignError::BadSignature)
        ));
        for bad_ts in ["", "abc", "17a", "-5", "1e9", " 1700000000"] {
            assert!(
                matches!(
                    verify_response(public, bad_ts, nonce, BODY, &sig, NOW, 300),
                    Err(SignError::InvalidTimestamp)
                ),
                "{bad_ts:?}"
            );
        }
    }

    #[test]
    fn response_skew() {
        let (private, public) = test_keys();
        let nonce = "n";
        let old = NOW - 301;
        let sig = sign_response(private, old, nonce, BODY).expect("sign");
        assert!(matches!(
            verify_response(public, &old.to_string(), nonce, BODY, &sig, NOW, 300),
            Err(SignError::TimestampExpired { timestamp, now: NOW, max_skew: 300 }) if timestamp == old
        ));
        // A wider configured skew accepts it.
        verify_response(public, &old.to_string(), nonce, BODY, &sig, NOW, 600).expect("wide");

        let future = NOW + 301;
        let sig = sign_response(private, future, nonce, BODY).expect("sign");
        assert!(matches!(
            verify_response(public, &future.to_string(), nonce, BODY, &sig, NOW, 300),
            Err(SignError::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn response_headers_helper() {
        let (private, public) = test_keys();
        let h = sign_response_headers(private, "PUB_KEY_ID_01", NOW, BODY).expect("headers");
        assert_eq!(h.serial, "PUB_KEY_ID_01");
        assert_eq!(h.nonce.len(), NONCE_LEN);
        verify_response(public, &h.timestamp, &h.nonce, BODY, &h.signature, NOW, 300)
            .expect("verify");
        let pairs = h.pairs();
        assert!(pairs.contains(&(HEADER_SIGNATURE, h.signature.as_str())));
        assert!(pairs.contains(&(HEADER_SIGNATURE_TYPE, AUTH_SCHEME)));
    }

    #[test]
    fn pem_round_trip() {
        let (private, public) = test_keys();
        let private_pem = private_key_to_pem(private).expect("pem");
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public_pem = public_key_to_pem(public).expect("pem");
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));

        let private2 = private_key_from_pem(&private_pem).expect("load private");
        let public2 = public_key_from_pem(&public_pem).expect("load public");
        assert_eq!(&public2, public);
        assert_eq!(&private2.to_public_key(), public);

        // A signature made with the reloaded key verifies with the original.
        let sig = sign_response(&private2, NOW, "n", BODY).expect("sign");
        verify_response(public, &NOW.to_string(), "n", BODY, &sig, NOW, 300).expect("verify");

        assert!(matches!(
            private_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(SignError::KeyDecode(_))
        ));
        assert!(matches!(
            public_key_from_pem("garbage"),
            Err(SignError::KeyDecode(_))
        ));
        // A public key is not a private key and vice versa.
        assert!(matches!(
            private_key_from_pem(&public_pem),
            Err(SignError::KeyDecode(_))
        ));
        assert!(matches!(
            public_key_from_pem(&private_pem),
            Err(SignError::KeyDecode(_))
        ));
    }

    #[test]
    fn small_keys_rejected() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024).expect("1024-bit key");
        let pem = private_key_to_pem(&small).expect("pem");
        assert!(matches!(
            private_key_from_pem(&pem),
            Err(SignError::UnsupportedKeySize(1024))
        ));
        let pem = public_key_to_pem(&small.to_public_key()).expect("pem");
        assert!(matches!(
            public_key_from_pem(&pem),
            Err(SignError::UnsupportedKeySize(1024))
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let (private, public) = test_keys();
        let dir = std::env::temp_dir().join(format!(
            "provider-sign-test-{}-{}",
            std::process::id(),
            generate_nonce().expect("nonce")
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let private_path = dir.join("apiclient_key.pem");
        let public_path = dir.join("pub_key.pem");
        save_private_key(&private_path, private).expect("save private");
        save_public_key(&public_path, public).expect("save public");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&private_path)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "private key must not be group/world readable"
            );
        }
        assert_eq!(&load_public_key(&public_path).expect("load"), public);
        assert_eq!(
            &load_private_key(&private_path)
                .expect("load")
                .to_public_key(),
            public
        );
        assert!(matches!(
            load_private_key(&dir.join("missing.pem")),
            Err(SignError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// Known-answer test against OpenSSL: the key below is a throwaway test
    /// key generated with `openssl genpkey -algorithm RSA`, and the signature
    /// is `openssl dgst -sha256 -sign` of the message. PKCS#1 v1.5 signing
    /// is deterministic, so our output must be byte-identical.
    #[test]
    fn openssl_known_answer() {
        const KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC3KVmorvtZspmK\n\
v2i4PNiOxXxnVfUqyMifI4G3Lbh73nU0gbEBsAqWZPQD4GHLGu3PlEAy9IWk+gkY\n\
cxHf+mcOlQhb9r+dyMDa1SYx3JvK3iR+uGr+8OKFyP3RQ2XMSSUlCXZ2F0hqsmf9\n\
3rzM93/BkIodEQQ/3rK3oBW+KkcurLT0pGc4QmrFetY/F4Go/52WVnDtmDLZsP3H\n\
xAUDojsG6PdIvlcILwbYna2d0zg8MpESBG7KcV7otHvsSDznM6y9tMHk22V1QM++\n\
jmOdIzt/XmMIEe4pP8J6FKwm0h4idf1QaeeSxHCVXlNXrR2sSeauN0KJZXxi3DFf\n\
CBoRKqFLAgMBAAECggEARGGcNyVo8rKCr3HJs2sIALmLOfs2BmyitgMoFQ7tPtWt\n\
VVaMEpC6Sy7SiTX23MCng2WaWEvBL3gn+ChRxpiybBfI4KitHkfKdIi6c0glI+au\n\
ol7Ql3CwaXlCBaQPd+bhBsRTJUCJCUilGXtUaoOGf2oqnjJxrzTB7VtHctFO9QXk\n\
6xg65qSV4xf+PAtX4DX0pOuQq23Ju5WWGYnOOzDApCLCBuYiz5XoZGjt7a409UML\n\
remVPHNHmrShE9ZddK7Iky/LwYLhZ77g5LZtXdp+mwNWEJ0vewycqVmN32UvsKgY\n\
zrvq11KBvulhaK8NHyESSEyP4VjjAThf9d6LDSqfOQKBgQDc2KJ6V6H5rD+x4dnY\n\
EeO4RfpMhL7fdMw2zwGJVn+iIkJ5bqVMCdtt2qRtaupRK1Oxv4bIzX3WbyN3AOpB\n\
ZPJAR+N1sD6Vpy+jEo46EdErOCNIKuxqzaz3z/9kfAriKVh5N/KukONB7fNtoHaf\n\
OQGc5e0xkJQnSuyGrMsQUwkU8wKBgQDUURWEXYL1BzG+MwG4uWcas7KFzER4DqvP\n\
bfyPQ0hWqhiVB+BZBezvsHIajWbRAVqot43WjmvnCdDC33oHwqQ4xM7rAJmpzXJi\n\
KuK2t3WnRzSQmQKA3s2HJzd3Cx/4CL/A4vTQFVI6PLn6POcH02W8onEJ37Q8mqO1\n\
s1ughqe4SQKBgQCmvaWG620u/d8lZdk9Ktyc/7CoXz1hp2ScKRUG5Vj+SBGab3C8\n\
BWE4AvFMb4G0gRryxCF2sLfG1CiZrAYyE45X/C7/Z28JPK5Z2COsMlGT6RGyZj4T\n\
sXBbth4kdwcclIzpENXY+SmsWIUHizSkqLzQAkVgu8EwHYCRehrjG15rAwKBgHjf\n\
3M8p6ceUG/a71UwUiaWDDqzr2UM8nwYOCQ6K8KEeX7Zg8JHeNMFVA/En9ZQiIDoT\n\
njW7iaTUSrzXPAM1BgenzGGwSsuIQomu/rmlgt8EQ+Haqrkxn3NFmWc1tzKf0IOA\n\
8n2Q1ep/7iWQDLvA15foJ1DGwjcKlw94GD8wykW5AoGAN7XSCSTibjfLpMgtDo3u\n\
M0+DvWZ2j7FguWiwMuIvy/ofZ3nHDEDNOGMcFQlMXDfh8fDVVK2j/Zl6CQQG+ax7\n\
k7jyJh5REKpjBgoEJTx3g/gyU5EhEmmSWmatlURgt5+WF5ZU2BPyj9/OqrArGAOy\n\
PgkDKpxgNNfoQBGyYLQhb+A=\n\
-----END PRIVATE KEY-----\n";
        const MESSAGE: &[u8] = b"1700000000\nKAT_NONCE_0123456789abcdefghijkl\n{\"id\":\"EV-1\"}\n";
        const OPENSSL_SIGNATURE: &str = "Gm44EwsTh1PpFLbbELV4P8It69FUJudwiI5EdhG0BmRViHAthmuVnpsByVw9QuF1Skm5r1YGKet39+gINKa/UNAYLIeWzGo67JHC+OBkWyXOcB4/Qz0ZHDeKPQt9/w/uH6iJRVQAWrLyIf+mXPRwIGd/1FtzXPgQhyT+YolUhOuizfMmc2xMAf4DLZ4tZq/snjMFyL0XwlfOiI2y4bDf7HBOhGA1wTALkh9vHkhySMa1CmUPo7YotH54vp3+xdxuvz/gNH5y4kNnEff8RGmAlJAFjDBu5uK8lmrpw4efQOnxTkvCmkCjzhaT9zcbNcdaA5Kzi2mDMnrw2qqHZsMVfw==";
        let private = private_key_from_pem(KEY).expect("test key");
        let public = private.to_public_key();
        let message = response_message(
            "1700000000",
            "KAT_NONCE_0123456789abcdefghijkl",
            br#"{"id":"EV-1"}"#,
        )
        .expect("message");
        assert_eq!(message, MESSAGE);
        assert_eq!(
            sign_message(&private, &message).expect("sign"),
            OPENSSL_SIGNATURE
        );
        verify_response(
            &public,
            "1700000000",
            "KAT_NONCE_0123456789abcdefghijkl",
            br#"{"id":"EV-1"}"#,
            OPENSSL_SIGNATURE,
            1_700_000_100,
            DEFAULT_MAX_SKEW_SECS,
        )
        .expect("verify openssl signature");
    }
}
