//! The provider's asynchronous transfer notification (WeChat Pay API v3
//! "商家转账回调通知").
//!
//! The provider POSTs a JSON envelope, signed with the response-signature
//! headers of [`super::sign`] (verify those first, over the raw body):
//!
//! ```json
//! {
//!   "id": "EV-2018022511223320873",
//!   "create_time": "2015-05-20T13:29:35+08:00",
//!   "resource_type": "encrypt-resource",
//!   "event_type": "MCHTRANSFER.BILL.FINISHED",
//!   "summary": "商家转账单据终态通知",
//!   "resource": {
//!     "original_type": "mch_payment",
//!     "algorithm": "AEAD_AES_256_GCM",
//!     "ciphertext": "<base64 of ciphertext || 16-byte GCM tag>",
//!     "associated_data": "mch_payment",
//!     "nonce": "<12 ASCII characters, used as the 12-byte GCM nonce>"
//!   }
//! }
//! ```
//!
//! The event naming follows the v3 "merchant transfer" API
//! (`/v3/fund-app/mch-transfer/transfer-bills`): one event type,
//! [`EVENT_TRANSFER_FINISHED`] = `MCHTRANSFER.BILL.FINISHED`, sent when a
//! transfer bill reaches a final state (`SUCCESS`, `FAIL` or `CANCELLED`);
//! success and failure are told apart by the decrypted `state`.
//!
//! The resource is encrypted with AES-256-GCM under the merchant's 32-byte
//! "APIv3 key"; the associated data is authenticated but not encrypted. The
//! decrypted plaintext is a JSON [`TransferResult`]:
//!
//! ```json
//! {
//!   "mch_id": "1900001109",
//!   "out_bill_no": "plfk2020042013",
//!   "transfer_bill_no": "1330000071100999991182020050700019480001",
//!   "state": "SUCCESS",
//!   "transfer_amount": 400000,
//!   "openid": "o-MYE42l80oelYMDE34nYD456Xoy",
//!   "fail_reason": "PAYEE_ACCOUNT_ABNORMAL",
//!   "create_time": "2015-05-20T13:29:35.120+08:00",
//!   "update_time": "2015-05-20T13:29:35.120+08:00"
//! }
//! ```
//!
//! `out_bill_no` is our number, `transfer_bill_no` the provider's,
//! `transfer_amount` is integer fen (struct field `amount`). Some SDKs spell
//! the merchant id `mchid`: both are read.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::sign;

/// The only algorithm of v3 encrypted resources.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";
/// `resource_type` of an encrypted notification.
pub const RESOURCE_TYPE_ENCRYPTED: &str = "encrypt-resource";
/// `event_type` of a transfer that reached a final state.
pub const EVENT_TRANSFER_FINISHED: &str = "MCHTRANSFER.BILL.FINISHED";
/// `original_type` (and the associated data used by [`build_notification`])
/// of a transfer resource.
pub const ORIGINAL_TYPE_TRANSFER: &str = "mch_payment";
/// Length of the AEAD nonce, in bytes (and ASCII characters).
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// Errors of decrypting and parsing a notification.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The body is not a JSON notification envelope.
    #[error("invalid notification envelope: {0}")]
    InvalidEnvelope(#[source] serde_json::Error),
    /// `resource_type` is not `encrypt-resource`.
    #[error("unexpected resource_type {0:?}")]
    UnexpectedResourceType(String),
    /// `event_type` is not [`EVENT_TRANSFER_FINISHED`].
    #[error("unexpected event_type {0:?}")]
    UnexpectedEventType(String),
    /// `resource.algorithm` is not `AEAD_AES_256_GCM`.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `resource.ciphertext` is not valid base64.
    #[error("ciphertext is not valid base64")]
    BadBase64,
    /// `resource.nonce` is not 12 bytes long.
    #[error("nonce must be {NONCE_LEN} bytes, got {0}")]
    BadNonceLength(usize),
    /// The ciphertext is shorter than the 16-byte tag.
    #[error("ciphertext shorter than the authentication tag")]
    CiphertextTooShort,
    /// Wrong key, or ciphertext / associated data / nonce were altered.
    #[error("decryption failed: authentication tag mismatch")]
    AuthenticationFailed,
    /// The APIv3 key is not exactly 32 bytes.
    #[error("APIv3 key must be 32 bytes, got {0}")]
    BadKeyLength(usize),
    /// The decrypted resource is not a JSON transfer result.
    #[error("invalid decrypted resource: {0}")]
    InvalidResource(#[source] serde_json::Error),
    /// A field of the envelope or the transfer result has an invalid value.
    #[error("invalid field {0}")]
    InvalidField(&'static str),
    /// A `MCHTRANSFER.BILL.FINISHED` notification carried a non-final state.
    #[error("transfer state {0:?} is not final")]
    NonFinalState(TransferState),
    /// Encryption failed (only for absurdly large plaintexts).
    #[error("encryption failed")]
    EncryptFailed,
    /// The random generator failed while making a nonce.
    #[error("random generator failed: {0}")]
    Random(String),
    /// Serialising a notification failed.
    #[error("cannot serialise notification: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// The encrypted `resource` of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Base64 of ciphertext followed by the 16-byte tag.
    pub ciphertext: String,
    /// Authenticated, unencrypted associated data (may be empty).
    #[serde(default)]
    pub associated_data: String,
    /// 12-character nonce.
    pub nonce: String,
    /// Type of the plaintext object, e.g. `mch_payment`.
    #[serde(default)]
    pub original_type: String,
}

/// The notification envelope (outer, unencrypted JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique notification id (same id on redelivery).
    pub id: String,
    /// RFC 3339 creation time of the notification.
    pub create_time: String,
    /// Event type, e.g. [`EVENT_TRANSFER_FINISHED`].
    pub event_type: String,
    /// [`RESOURCE_TYPE_ENCRYPTED`].
    pub resource_type: String,
    /// Human-readable summary.
    #[serde(default)]
    pub summary: String,
    /// The encrypted payload.
    pub resource: Resource,
}

/// State of a transfer bill (v3 `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    /// `ACCEPTED`: created, not yet processed.
    Accepted,
    /// `PROCESSING`: being processed.
    Processing,
    /// `WAIT_USER_CONFIRM`: waiting for the user to confirm receipt.
    WaitUserConfirm,
    /// `TRANSFERING` (sic, the provider's spelling): money moving.
    Transfering,
    /// `SUCCESS`: final, the user has the money.
    Success,
    /// `FAIL`: final, the money stays with the merchant (see `fail_reason`).
    Fail,
    /// `CANCELING`: cancellation requested.
    Canceling,
    /// `CANCELLED`: final, cancelled; the money stays with the merchant.
    Cancelled,
    /// Any state string this code does not know. Never final.
    #[serde(other)]
    Unknown,
}

impl TransferState {
    /// `SUCCESS`, `FAIL` and `CANCELLED` are final; everything else may still
    /// change.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Fail | Self::Cancelled)
    }

    /// Parses a wire spelling; `None` for anything unknown (including
    /// `"UNKNOWN"`).
    pub fn from_wire(value: &str) -> Option<Self> {
        Some(match value {
            "ACCEPTED" => Self::Accepted,
            "PROCESSING" => Self::Processing,
            "WAIT_USER_CONFIRM" => Self::WaitUserConfirm,
            "TRANSFERING" => Self::Transfering,
            "SUCCESS" => Self::Success,
            "FAIL" => Self::Fail,
            "CANCELING" => Self::Canceling,
            "CANCELLED" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "ACCEPTED",
            Self::Processing => "PROCESSING",
            Self::WaitUserConfirm => "WAIT_USER_CONFIRM",
            Self::Transfering => "TRANSFERING",
            Self::Success => "SUCCESS",
            Self::Fail => "FAIL",
            Self::Canceling => "CANCELING",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// The decrypted transfer result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    /// Merchant id. The documentation says `mch_id`, some SDKs `mchid`;
    /// both are read, and neither is required (the resource is encrypted
    /// under our APIv3 key already). See [`TransferResult::merchant`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mch_id: Option<String>,
    /// See `mch_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// Our transfer number.
    pub out_bill_no: String,
    /// The provider's transfer id.
    pub transfer_bill_no: String,
    /// Transfer state.
    pub state: TransferState,
    /// Amount in fen (wire name `transfer_amount`).
    #[serde(rename = "transfer_amount")]
    pub amount: i64,
    /// Receiving user's openid.
    pub openid: String,
    /// Failure reason code, e.g. `PAYEE_ACCOUNT_ABNORMAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// RFC 3339 creation time of the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// RFC 3339 time of the last state change.
    pub update_time: String,
}

impl TransferResult {
    /// The merchant id it names, under either spelling.
    pub fn merchant(&self) -> Option<&str> {
        self.mch_id.as_deref().or(self.mchid.as_deref())
    }

    /// `update_time` as a timestamp.
    pub fn update_time_parsed(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.update_time).ok()
    }
}

/// Interprets a 32-character APIv3 key string as the AES-256 key bytes.
pub fn api_v3_key_from_str(key: &str) -> Result<[u8; 32], NotifyError> {
    key.as_bytes()
        .try_into()
        .map_err(|_| NotifyError::BadKeyLength(key.len()))
}

fn cipher(api_v3_key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(api_v3_key.into())
}

/// Encrypts `plaintext` into a resource with a fresh random 12-character
/// alphanumeric nonce. `original_type` is set to [`ORIGINAL_TYPE_TRANSFER`].
pub fn encrypt_resource(
    api_v3_key: &[u8; 32],
    plaintext: &[u8],
    associated_data: &str,
) -> Result<Resource, NotifyError> {
    let nonce_str =
        sign::random_alphanumeric(NONCE_LEN).map_err(|e| NotifyError::Random(e.to_string()))?;
    encrypt_resource_with_nonce(api_v3_key, plaintext, associated_data, &nonce_str)
}

/// [`encrypt_resource`] with a caller-chosen nonce (must be 12 bytes; never
/// reuse a nonce with the same key).
pub fn encrypt_resource_with_nonce(
    api_v3_key: &[u8; 32],
    plaintext: &[u8],
    associated_data: &str,
    nonce: &str,
) -> Result<Resource, NotifyError> {
    let nonce_bytes: [u8; NONCE_LEN] = nonce
        .as_bytes()
        .try_into()
        .map_err(|_| NotifyError::BadNonceLength(nonce.len()))?;
    let sealed = cipher(api_v3_key)
        .encrypt(
            &Nonce::from(nonce_bytes),
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| NotifyError::EncryptFailed)?;
    Ok(Resource {
        algorithm: ALGORITHM.to_owned(),
        ciphertext: B64.encode(sealed),
        associated_data: associated_data.to_owned(),
        nonce: nonce.to_owned(),
        original_type: ORIGINAL_TYPE_TRANSFER.to_owned(),
    })
}

/// Decrypts and authenticates a resource.
pub fn decrypt_resource(
    api_v3_key: &[u8; 32],
    resource: &Resource,
) -> Result<Vec<u8>, NotifyError> {
    if resource.algorithm != ALGORITHM {
        return Err(NotifyError::UnsupportedAlgorithm(
            resource.algorithm.clone(),
        ));
    }
    let nonce_bytes: [u8; NONCE_LEN] = resource
        .nonce
        .as_bytes()
        .try_into()
        .map_err(|_| NotifyError::BadNonceLength(resource.nonce.len()))?;
    let sealed = B64
        .decode(resource.ciphertext.as_bytes())
        .map_err(|_| NotifyError::BadBase64)?;
    if sealed.len() < TAG_LEN {
        return Err(NotifyError::CiphertextTooShort);
    }
    cipher(api_v3_key)
        .decrypt(
            &Nonce::from(nonce_bytes),
            Payload {
                msg: &sealed,
                aad: resource.associated_data.as_bytes(),
            },
        )
        .map_err(|_| NotifyError::AuthenticationFailed)
}

fn is_rfc3339(value: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(value).is_ok()
}

fn validate_result(result: &TransferResult) -> Result<(), NotifyError> {
    if result.merchant().is_some_and(str::is_empty) {
        return Err(NotifyError::InvalidField("mch_id"));
    }
    if result.out_bill_no.is_empty() {
        return Err(NotifyError::InvalidField("out_bill_no"));
    }
    if result.transfer_bill_no.is_empty() {
        return Err(NotifyError::InvalidField("transfer_bill_no"));
    }
    if result.openid.is_empty() {
        return Err(NotifyError::InvalidField("openid"));
    }
    if result.amount <= 0 {
        return Err(NotifyError::InvalidField("transfer_amount"));
    }
    if !is_rfc3339(&result.update_time) {
        return Err(NotifyError::InvalidField("update_time"));
    }
    if let Some(create_time) = &result.create_time {
        if !is_rfc3339(create_time) {
            return Err(NotifyError::InvalidField("create_time"));
        }
    }
    if !result.state.is_final() {
        return Err(NotifyError::NonFinalState(result.state));
    }
    Ok(())
}

/// Parses a notification body, decrypts its resource and parses the transfer
/// result.
///
/// Checks, in order: envelope JSON, `resource_type` =
/// `encrypt-resource`, `event_type` = [`EVENT_TRANSFER_FINISHED`], RFC 3339
/// `create_time`, then decryption (see [`decrypt_resource`]), then the
/// result: JSON shape, non-empty ids and openid, `transfer_amount > 0`,
/// RFC 3339 times, and a final `state` (`SUCCESS`, `FAIL`, `CANCELLED`).
///
/// It does not check the signature headers (use
/// [`super::sign::verify_response`] on the raw body first), nor that `mch_id`
/// is ours, nor deduplicate redeliveries (use `Envelope::id` or
/// `out_bill_no`).
pub fn parse_and_decrypt(
    api_v3_key: &[u8; 32],
    body: &[u8],
) -> Result<(Envelope, TransferResult), NotifyError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(NotifyError::InvalidEnvelope)?;
    if envelope.resource_type != RESOURCE_TYPE_ENCRYPTED {
        return Err(NotifyError::UnexpectedResourceType(
            envelope.resource_type.clone(),
        ));
    }
    if envelope.event_type != EVENT_TRANSFER_FINISHED {
        return Err(NotifyError::UnexpectedEventType(
            envelope.event_type.clone(),
        ));
    }
    if envelope.id.is_empty() {
        return Err(NotifyError::InvalidField("id"));
    }
    if !is_rfc3339(&envelope.create_time) {
        return Err(NotifyError::InvalidField("create_time"));
    }
    let plaintext = decrypt_resource(api_v3_key, &envelope.resource)?;
    let result: TransferResult =
        serde_json::from_slice(&plaintext).map_err(NotifyError::InvalidResource)?;
    validate_result(&result)?;
    Ok((envelope, result))
}

/// Builds a complete notification body for `result` (used by the simulator):
/// the result is serialised, encrypted with associated data
/// [`ORIGINAL_TYPE_TRANSFER`], and wrapped in a
/// [`EVENT_TRANSFER_FINISHED`] envelope. Sign the returned body with
/// [`super::sign::sign_response_headers`].
pub fn build_notification(
    api_v3_key: &[u8; 32],
    id: &str,
    create_time: &str,
    summary: &str,
    result: &TransferResult,
) -> Result<String, NotifyError> {
    let plaintext = serde_json::to_vec(result).map_err(NotifyError::Serialize)?;
    let resource = encrypt_resource(api_v3_key, &plaintext, ORIGINAL_TYPE_TRANSFER)?;
    let envelope = Envelope {
        id: id.to_owned(),
        create_time: create_time.to_owned(),
        event_type: EVENT_TRANSFER_FINISHED.to_owned(),
        resource_type: RESOURCE_TYPE_ENCRYPTED.to_owned(),
        summary: summary.to_owned(),
        resource,
    };
    serde_json::to_string(&envelope).map_err(NotifyError::Serialize)
}

/// The `Wechatpay-*` headers of a notification, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyHeaders {
    /// `Wechatpay-Timestamp`.
    pub timestamp: String,
    /// `Wechatpay-Nonce`.
    pub nonce: String,
    /// `Wechatpay-Signature`.
    pub signature: String,
    /// `Wechatpay-Serial`.
    pub serial: String,
}

impl NotifyHeaders {
    /// Reads the four headers from a request's header map; `None` when one is
    /// missing or not visible ASCII.
    pub fn from_headers(headers: &actix_web::http::header::HeaderMap) -> Option<Self> {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Some(Self {
            timestamp: get(sign::HEADER_TIMESTAMP)?,
            nonce: get(sign::HEADER_NONCE)?,
            signature: get(sign::HEADER_SIGNATURE)?,
            serial: get(sign::HEADER_SERIAL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    const OTHER_KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuw";

    fn result(state: TransferState) -> TransferResult {
        TransferResult {
            mch_id: Some("1900001109".into()),
            mchid: None,
            out_bill_no: "plfk2020042013".into(),
            transfer_bill_no: "1330000071100999991182020050700019480001".into(),
            state,
            amount: 400_000,
            openid: "o-MYE42l80oelYMDE34nYD456Xoy".into(),
            fail_reason: None,
            create_time: Some("2015-05-20T13:29:35.120+08:00".into()),
            update_time: "2015-05-20T13:29:36+08:00".into(),
        }
    }

    fn notification_json(resource: &Resource, event_type: &str, resource_type: &str) -> String {
        serde_json::json!({
            "id": "EV-2018022511223320873",
            "create_time": "2015-05-20T13:29:35+08:00",
            "resource_type": resource_type,
            "event_type": event_type,
            "summary": "商家转账单据终态通知",
            "resource": resource,
        })
        .to_string()
    }

    fn flip_ciphertext_byte(resource: &mut Resource, index: usize) {
        let mut raw = B64.decode(&resource.ciphertext).expect("b64");
        if let Some(b) = raw.get_mut(index) {
            *b ^= 0x01;
        }
        resource.ciphertext = B64.encode(raw);
    }

    #[test]
    fn aead_round_trip() {
        let r = encrypt_resource(KEY, b"hello transfer", "mch_payment").expect("encrypt");
        assert_eq!(r.algorithm, ALGORITHM);
        assert_eq!(r.nonce.len(), NONCE_LEN);
        assert!(r.nonce.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(r.associated_data, "mch_payment");
        assert_eq!(r.original_type, ORIGINAL_TYPE_TRANSFER);
        let raw = B64.decode(&r.ciphertext).expect("b64");
        assert_eq!(raw.len(), b"hello transfer".len() + TAG_LEN);
        assert_eq!(
            decrypt_resource(KEY, &r).expect("decrypt"),
            b"hello transfer"
        );

        // Empty plaintext and empty associated data also work.
        let r = encrypt_resource(KEY, b"", "").expect("encrypt");
        assert_eq!(decrypt_resource(KEY, &r).expect("decrypt"), b"");

        // Two encryptions of the same plaintext use different nonces.
        let a = encrypt_resource(KEY, b"x", "").expect("encrypt");
        let b = encrypt_resource(KEY, b"x", "").expect("encrypt");
        assert_ne!(a.nonce, b.nonce);
    }

    /// Known answer: AES-256-GCM is deterministic for a fixed nonce, so this
    /// pins the wire format (ciphertext || tag, standard base64). Cross-checked
    /// with Python's `cryptography` AESGCM.
    #[test]
    fn aead_known_answer() {
        let r = encrypt_resource_with_nonce(KEY, b"{\"a\":1}", "mch_payment", "abcdefghijkl")
            .expect("encrypt");
        assert_eq!(r.ciphertext, KAT_CIPHERTEXT);
        assert_eq!(decrypt_resource(KEY, &r).expect("decrypt"), b"{\"a\":1}");
    }
    const KAT_CIPHERTEXT: &str = "vEKP3q8PbeiAFlA5ruTdDdAPtV5AFKM=";

    #[test]
    fn aead_tampering_rejected() {
        let good = encrypt_resource(KEY, b"{\"amount\":1}", "mch_payment").expect("encrypt");

        let mut r = good.clone();
        flip_ciphertext_byte(&mut r, 0);
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::AuthenticationFailed)
        ));

        // Tag byte.
        let mut r = good.clone();
        let last = B64.decode(&r.ciphertext).expect("b64").len() - 1;
        flip_ciphertext_byte(&mut r, last);
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::AuthenticationFailed)
        ));

        let mut r = good.clone();
        r.associated_data = "transaction".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::AuthenticationFailed)
        ));

        let mut r = good.clone();
        r.nonce = "AAAAAAAAAAAA".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::AuthenticationFailed)
        ));

        assert!(matches!(
            decrypt_resource(OTHER_KEY, &good),
            Err(NotifyError::AuthenticationFailed)
        ));

        let mut r = good.clone();
        r.algorithm = "AEAD_AES_128_GCM".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::UnsupportedAlgorithm(a)) if a == "AEAD_AES_128_GCM"
        ));

        let mut r = good.clone();
        r.ciphertext = "not base64!".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::BadBase64)
        ));

        let mut r = good.clone();
        r.nonce = "short".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::BadNonceLength(5))
        ));
        let mut r = good.clone();
        r.nonce = "0123456789abc".into();
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::BadNonceLength(13))
        ));

        let mut r = good;
        r.ciphertext = B64.encode([0u8; 15]);
        assert!(matches!(
            decrypt_resource(KEY, &r),
            Err(NotifyError::CiphertextTooShort)
        ));
    }

    #[test]
    fn api_v3_key_parsing() {
        assert_eq!(
            &api_v3_key_from_str("0123456789abcdefghijklmnopqrstuv").expect("key"),
            KEY
        );
        assert!(matches!(
            api_v3_key_from_str("short"),
            Err(NotifyError::BadKeyLength(5))
        ));
    }

    #[test]
    fn full_notification_round_trip() {
        let mut expected = result(TransferState::Fail);
        expected.fail_reason = Some("PAYEE_ACCOUNT_ABNORMAL".into());
        let body = build_notification(
            KEY,
            "EV-1",
            "2015-05-20T13:29:35+08:00",
            "商家转账单据终态通知",
            &expected,
        )
        .expect("build");
        let (envelope, got) = parse_and_decrypt(KEY, body.as_bytes()).expect("parse");
        assert_eq!(got, expected);
        assert_eq!(envelope.id, "EV-1");
        assert_eq!(envelope.event_type, EVENT_TRANSFER_FINISHED);
        assert_eq!(envelope.resource.original_type, "mch_payment");
        assert_eq!(
            got.update_time_parsed().expect("time").timestamp(),
            1_432_099_776
        );

        // The plaintext uses the wire names.
        let plain = decrypt_resource(KEY, &envelope.resource).expect("decrypt");
        let value: serde_json::Value = serde_json::from_slice(&plain).expect("json");
        assert_eq!(value["out_bill_no"], "plfk2020042013");
        assert_eq!(value["transfer_amount"], 400_000);
        assert_eq!(value["state"], "FAIL");
        assert!(value.get("partner_trade_no").is_none());

        assert!(matches!(
            parse_and_decrypt(OTHER_KEY, body.as_bytes()),
            Err(NotifyError::AuthenticationFailed)
        ));
    }

    #[test]
    fn parses_provider_shaped_plaintext() {
        let plaintext = br#"{
            "mchid": "1900001109",
            "out_bill_no": "plfk2020042013",
            "transfer_bill_no": "1330000071100999991182020050700019480001",
            "state": "SUCCESS",
            "transfer_amount": 400000,
            "openid": "o-MYE42l80oelYMDE34nYD456Xoy",
            "create_time": "2015-05-20T13:29:35.120+08:00",
            "update_time": "2015-05-20T13:29:35.120+08:00",
            "some_future_field": 1
        }"#;
        let resource = encrypt_resource(KEY, plaintext, "mch_payment").expect("encrypt");
        let body = notification_json(&resource, EVENT_TRANSFER_FINISHED, "encrypt-resource");
        let (_, r) = parse_and_decrypt(KEY, body.as_bytes()).expect("parse");
        assert_eq!(r.out_bill_no, "plfk2020042013");
        assert_eq!(r.merchant(), Some("1900001109"), "the mchid spelling");
        assert_eq!(r.amount, 400_000);
        assert_eq!(r.state, TransferState::Success);
        assert_eq!(r.fail_reason, None);
    }

    #[test]
    fn envelope_checks() {
        let plaintext = serde_json::to_vec(&result(TransferState::Success)).expect("json");
        let resource = encrypt_resource(KEY, &plaintext, "mch_payment").expect("encrypt");

        let body = notification_json(&resource, "TRANSACTION.SUCCESS", "encrypt-resource");
        assert!(matches!(
            parse_and_decrypt(KEY, body.as_bytes()),
            Err(NotifyError::UnexpectedEventType(e)) if e == "TRANSACTION.SUCCESS"
        ));
        let body = notification_json(&resource, EVENT_TRANSFER_FINISHED, "plain");
        assert!(matches!(
            parse_and_decrypt(KEY, body.as_bytes()),
            Err(NotifyError::UnexpectedResourceType(_))
        ));
        for bad in [&b""[..], b"{", b"[]", b"{\"id\":1}", b"\xff\xfe"] {
            assert!(matches!(
                parse_and_decrypt(KEY, bad),
                Err(NotifyError::InvalidEnvelope(_))
            ));
        }
        let mut r = resource.clone();
        r.algorithm = "RSA".into();
        let body = notification_json(&r, EVENT_TRANSFER_FINISHED, "encrypt-resource");
        assert!(matches!(
            parse_and_decrypt(KEY, body.as_bytes()),
            Err(NotifyError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn result_checks() {
        let check = |r: &TransferResult| {
            let body =
                build_notification(KEY, "EV-1", "2015-05-20T13:29:35+08:00", "", r).expect("build");
            parse_and_decrypt(KEY, body.as_bytes())
        };
        for state in [
            TransferState::Success,
            TransferState::Fail,
            TransferState::Cancelled,
        ] {
            check(&result(state)).expect("final state accepted");
        }
        for state in [
            TransferState::Accepted,
            TransferState::Processing,
            TransferState::WaitUserConfirm,
            TransferState::Transfering,
            TransferState::Canceling,
        ] {
            assert!(matches!(
                check(&result(state)),
                Err(NotifyError::NonFinalState(s)) if s == state
            ));
        }
        let mut r = result(TransferState::Success);
        r.amount = 0;
        assert!(matches!(
            check(&r),
            Err(NotifyError::InvalidField("transfer_amount"))
        ));
        let mut r = result(TransferState::Success);
        r.amount = -1;
        assert!(matches!(
            check(&r),
            Err(NotifyError::InvalidField("transfer_amount"))
        ));
        let mut r = result(TransferState::Success);
        r.out_bill_no.clear();
        assert!(matches!(
            check(&r),
            Err(NotifyError::InvalidField("out_bill_no"))
        ));
        let mut r = result(TransferState::Success);
        r.update_time = "yesterday".into();
        assert!(matches!(
            check(&r),
            Err(NotifyError::InvalidField("update_time"))
        ));
        let body = build_notification(
            KEY,
            "EV-1",
            "not a time",
            "",
            &result(TransferState::Success),
        )
        .expect("build");
        assert!(matches!(
            parse_and_decrypt(KEY, body.as_bytes()),
            Err(NotifyError::InvalidField("create_time"))
        ));

        // Unknown state strings decode to Unknown and are rejected as non-final.
        let plaintext = serde_json::to_string(&result(TransferState::Success))
            .expect("json")
            .replace("\"SUCCESS\"", "\"REFUNDED\"");
        let resource = encrypt_resource(KEY, plaintext.as_bytes(), "mch_payment").expect("enc");
        let body = notification_json(&resource, EVENT_TRANSFER_FINISHED, "encrypt-resource");
        assert!(matches!(
            parse_and_decrypt(KEY, body.as_bytes()),
            Err(NotifyError::NonFinalState(TransferState::Unknown))
        ));

        // Amount as a string or float is a shape error.
        for bad in [
            r#"{"mchid":"1","out_bill_no":"a","transfer_bill_no":"b","state":"SUCCESS","transfer_amount":"100","openid":"o","update_time":"2015-05-20T13:29:35+08:00"}"#,
            r#"{"mchid":"1","out_bill_no":"a","transfer_bill_no":"b","state":"SUCCESS","transfer_amount":1.5,"openid":"o","update_time":"2015-05-20T13:29:35+08:00"}"#,
            r#"{"mchid":"1","transfer_bill_no":"b","state":"SUCCESS","transfer_amount":100,"openid":"o","update_time":"2015-05-20T13:29:35+08:00"}"#,
            "not json",
        ] {
            let resource = encrypt_resource(KEY, bad.as_bytes(), "mch_payment").expect("enc");
            let body = notification_json(&resource, EVENT_TRANSFER_FINISHED, "encrypt-resource");
            assert!(
                matches!(
                    parse_and_decrypt(KEY, body.as_bytes()),
                    Err(NotifyError::InvalidResource(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn state_helpers() {
        assert!(TransferState::Success.is_final());
        assert!(TransferState::Fail.is_final());
        assert!(TransferState::Cancelled.is_final());
        assert!(!TransferState::Processing.is_final());
        assert!(!TransferState::Unknown.is_final());
        for s in [
            TransferState::Accepted,
            TransferState::Processing,
            TransferState::WaitUserConfirm,
            TransferState::Transfering,
            TransferState::Success,
            TransferState::Fail,
            TransferState::Canceling,
            TransferState::Cancelled,
        ] {
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(
                serde_json::from_str::<TransferState>(&json).expect("back"),
                s
            );
            assert_eq!(TransferState::from_wire(s.as_str()), Some(s));
        }
        assert_eq!(TransferState::from_wire("UNKNOWN"), None);
        assert_eq!(TransferState::from_wire("success"), None);
        assert_eq!(
            serde_json::from_str::<TransferState>("\"NEW_STATE\"").expect("other"),
            TransferState::Unknown
        );
    }
}
