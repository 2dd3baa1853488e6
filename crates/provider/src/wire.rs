//! What travels between the merchant and the provider: the transfer as we
//! ask for it and as the provider answers, OAuth tokens, error bodies, and
//! the limits every field is checked against (the client before sending,
//! the simulator on receipt).

use actix_web::http::Uri;
use serde::{Deserialize, Serialize};

use super::notify::TransferState;

/// Longest `partner_trade_no`.
pub const MAX_TRADE_NO_LEN: usize = 32;
/// Longest transfer description (characters).
pub const MAX_DESC_CHARS: usize = 32;
/// Longest openid.
pub const MAX_OPENID_LEN: usize = 128;
/// Longest `notify_url`.
pub const MAX_NOTIFY_URL_LEN: usize = 256;
/// Longest real name for `FORCE_CHECK` (characters).
pub const MAX_REAL_NAME_CHARS: usize = 64;

/// OAuth tokens of one user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthTokens {
    /// Access token.
    pub access_token: String,
    /// Refresh token (valid until revoked).
    pub refresh_token: String,
    /// The user's openid under our appid.
    pub openid: String,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
    /// Granted scope, e.g. `snsapi_base`.
    pub scope: String,
}

/// Real-name check of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckName {
    /// `NO_CHECK`.
    NoCheck,
    /// `FORCE_CHECK`: the provider fails the transfer unless the account
    /// holder's real name is `real_name`.
    ForceCheck {
        /// The payee's real name.
        real_name: String,
    },
}

/// A transfer to a user's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// Our id: 1 to 32 of `[A-Za-z0-9_-]`, unique per payout, reused on retry.
    pub partner_trade_no: String,
    /// Payee.
    pub openid: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// Remark shown to the payee (1 to 32 characters, no control characters).
    pub description: String,
    /// Real-name check.
    pub check_name: CheckName,
    /// Where the provider sends the final-state notification (http/https).
    pub notify_url: String,
}

/// A transfer as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStatus {
    /// Our id.
    pub partner_trade_no: String,
    /// The provider's id.
    pub transfer_bill_no: String,
    /// Current state.
    pub state: TransferState,
    /// Fen.
    pub amount: u64,
    /// Payee.
    pub openid: String,
    /// Failure code when `state` is `FAIL`.
    pub fail_reason: Option<String>,
    /// RFC 3339 time of the last change.
    pub update_time: String,
}

/// The transfer JSON of `POST /v3/transfers` (also read by the simulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBody {
    /// Merchant id.
    pub mchid: String,
    /// App id.
    pub appid: String,
    /// Our id.
    pub partner_trade_no: String,
    /// Payee.
    pub openid: String,
    /// `NO_CHECK` or `FORCE_CHECK`.
    pub check_name: String,
    /// Real name, with `FORCE_CHECK` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_user_name: Option<String>,
    /// Fen.
    pub amount: u64,
    /// Remark.
    pub desc: String,
    /// The merchant server's IP.
    pub spbill_create_ip: String,
    /// Notification URL.
    pub notify_url: String,
}

/// The transfer JSON answered by create and query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReply {
    /// Our id.
    pub partner_trade_no: String,
    /// The provider's id.
    pub transfer_bill_no: String,
    /// State.
    pub state: TransferState,
    /// Fen.
    pub amount: u64,
    /// Payee.
    pub openid: String,
    /// RFC 3339.
    pub create_time: String,
    /// RFC 3339.
    pub update_time: String,
    /// Failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
}

/// The error JSON of a 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Error code, e.g. `PARAM_ERROR`.
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// Whether `value` is a valid `partner_trade_no`: 1 to 32 of `[A-Za-z0-9_-]`.
pub fn valid_trade_no(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TRADE_NO_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `value` is a plausible openid: 1 to 128 visible ASCII characters.
pub fn valid_openid(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_OPENID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `value` is a valid transfer remark: 1 to 32 characters, none a
/// control character.
pub fn valid_description(value: &str) -> bool {
    let chars = value.chars().count();
    (1..=MAX_DESC_CHARS).contains(&chars) && !value.chars().any(char::is_control)
}

/// Whether `value` is a valid real name: 1 to 64 characters, no control
/// characters.
pub fn valid_real_name(value: &str) -> bool {
    let chars = value.chars().count();
    (1..=MAX_REAL_NAME_CHARS).contains(&chars) && !value.chars().any(char::is_control)
}

/// Whether `value` is an absolute http(s) URL with a host, at most 256 bytes.
pub fn valid_notify_url(value: &str) -> bool {
    value.len() <= MAX_NOTIFY_URL_LEN
        && value.parse::<Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        })
}
