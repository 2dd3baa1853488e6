//! Reading what the provider answers: the client's errors, status classes, signatures needed,
//! error bodies, transfer and OAuth replies; and query strings.

use serde::Deserialize;

use super::notify::{NotifyHeaders, TransferState};
use super::wire::*;
use thiserror::Error;

/// Errors of the provider client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No answer within `timeout_ms`.
    #[error("provider did not answer in time")]
    Timeout,
    /// Connection error or a 5xx (or 408/429) answer.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// A definitive 4xx business error from the provider (`status` 200 for
    /// OAuth `errcode` answers, 0 when refused locally before sending).
    #[error("provider rejected the request ({status} {code}): {message}")]
    Rejected {
        /// HTTP status (200 for OAuth errors, 0 for local refusals).
        status: u16,
        /// Provider error code, e.g. `PARAM_ERROR`, or an OAuth errcode.
        code: String,
        /// Provider message.
        message: String,
    },
    /// The answer's (or notification's) signature, timestamp or serial is
    /// invalid: its content must not be trusted.
    #[error("bad provider signature: {0}")]
    BadSignature(String),
    /// The provider's probe of whether we verify signatures (a
    /// `WECHATPAY/SIGNTEST/` signature): refused like a bad signature, but
    /// not an attack.
    #[error("provider signature probe (WECHATPAY/SIGNTEST), refused")]
    SignatureProbe,
    /// A malformed answer.
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// Invalid configuration or key files.
    #[error("provider client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether the outcome of the call is unknown and it may be retried (with
    /// the same `out_bill_no`) or queried: `Timeout`, `Unavailable`,
    /// `BadSignature` and `Protocol`. `Rejected` and `Config` are definitive.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout
            | Self::Unavailable(_)
            | Self::BadSignature(_)
            | Self::SignatureProbe
            | Self::Protocol(_) => true,
            Self::Rejected { .. } | Self::Config(_) => false,
        }
    }

    /// Whether the provider refused the request for good: it changed
    /// nothing, and sending it again unchanged cannot succeed
    /// (`PARAM_ERROR`, `INVALID_REQUEST`, `NO_AUTH`, ... or a local
    /// refusal). A `4xx` with a code not known here is not: its outcome is
    /// treated as unknown (query, then resend the same request).
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Rejected { status: 0, .. } => true,
            Self::Rejected { code, .. } => REFUSALS.contains(&code.as_str()),
            _ => false,
        }
    }

    pub(crate) fn local(code: &str, message: impl Into<String>) -> Self {
        Self::Rejected {
            status: 0,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Error codes that refuse a transfer request for good. `SYSTEM_ERROR`
/// (5xx) and `FREQUENCY_LIMITED` (429) are transient; `NOT_FOUND` answers
/// a query; `NOT_ENOUGH` (the merchant's funds are short) is not a refusal:
/// the provider's advice is to top up and send the same number again.
pub const REFUSALS: &[&str] = &[
    "PARAM_ERROR",
    "INVALID_REQUEST",
    "NO_AUTH",
    "APPID_MCHID_NOT_MATCH",
    "OPENID_MISMATCH",
    "ACCOUNT_ERROR",
    "QUOTA_EXCEED",
];

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What an answer looked like on the wire.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub(crate) status: u16,
    pub(crate) headers: Option<NotifyHeaders>,
    pub(crate) body: bytes::Bytes,
}

pub(crate) fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        snippet.push('…');
    }
    snippet
}

/// Classifies a transfer/query/bill answer whose signature (if the status
/// needed one) has been checked. `Ok(body)` for 2xx.
pub(crate) fn classify(reply: &RawReply) -> Result<&[u8], ClientError> {
    let status = reply.status;
    match status {
        200..=299 => Ok(&reply.body),
        408 | 429 => Err(ClientError::Unavailable(format!(
            "HTTP {status}: {}",
            body_snippet(&reply.body)
        ))),
        400..=499 => {
            let err: ErrorReply = serde_json::from_slice(&reply.body).map_err(|e| {
                ClientError::Protocol(format!("HTTP {status} with an unreadable error body: {e}"))
            })?;
            Err(ClientError::Rejected {
                status,
                code: err.code,
                message: err.message,
            })
        }
        500..=599 => Err(ClientError::Unavailable(format!(
            "HTTP {status}: {}",
            body_snippet(&reply.body)
        ))),
        _ => Err(ClientError::Protocol(format!(
            "unexpected HTTP status {status}"
        ))),
    }
}

/// Whether an answer must carry a valid signature before it is believed:
/// everything the client reads (2xx, and 4xx business errors other than
/// 408/429).
pub(crate) fn needs_signature(status: u16) -> bool {
    status < 500 && status != 408 && status != 429
}

/// A transfer status with what every answer carries; the rest unknown.
fn bill(
    out_bill_no: String,
    transfer_bill_no: String,
    state: TransferState,
    update_time: String,
) -> Result<TransferStatus, ClientError> {
    if transfer_bill_no.is_empty() {
        return Err(ClientError::Protocol("empty transfer_bill_no".into()));
    }
    Ok(TransferStatus {
        out_bill_no,
        transfer_bill_no,
        state,
        amount: None,
        openid: None,
        fail_reason: None,
        package_info: None,
        update_time,
    })
}

/// `s`, refused unless it is the transfer `out_bill_no`.
pub(crate) fn for_bill(
    s: TransferStatus,
    out_bill_no: &str,
) -> Result<TransferStatus, ClientError> {
    if s.out_bill_no != out_bill_no {
        return Err(ClientError::Protocol(format!(
            "answer is for transfer {:?}, not {out_bill_no:?}",
            s.out_bill_no
        )));
    }
    Ok(s)
}

pub(crate) fn created_status(r: CreateReply) -> Result<TransferStatus, ClientError> {
    Ok(TransferStatus {
        fail_reason: r.fail_reason.filter(|x| !x.is_empty()),
        package_info: r.package_info.filter(|x| !x.is_empty()),
        ..bill(r.out_bill_no, r.transfer_bill_no, r.state, r.create_time)?
    })
}

pub(crate) fn queried_status(r: QueryReply) -> Result<TransferStatus, ClientError> {
    Ok(TransferStatus {
        amount: Some(r.transfer_amount),
        openid: r.openid,
        fail_reason: r.fail_reason.filter(|x| !x.is_empty()),
        ..bill(r.out_bill_no, r.transfer_bill_no, r.state, r.update_time)?
    })
}

pub(crate) fn cancelled_status(r: CancelReply) -> Result<TransferStatus, ClientError> {
    bill(r.out_bill_no, r.transfer_bill_no, r.state, r.update_time)
}

/// An answer of WeChat's own (not WeChat Pay's) API: OAuth, the official
/// account's tokens and tickets. Errors come as 200 with an `errcode`.
#[derive(Deserialize)]
pub(crate) struct WxReply {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
    #[serde(default)]
    pub(crate) openid: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<i64>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    #[serde(default)]
    pub(crate) ticket: Option<String>,
}

/// Reads a [`WxReply`]: a 5xx, 408 or 429 is unavailable, another 4xx a
/// refusal, a non-zero `errcode` a refusal with that code.
pub(crate) fn wx_reply(status: u16, body: &[u8]) -> Result<WxReply, ClientError> {
    match status {
        200 => {}
        408 | 429 | 500..=599 => {
            return Err(ClientError::Unavailable(format!(
                "HTTP {status}: {}",
                body_snippet(body)
            )))
        }
        400..=499 => {
            return Err(ClientError::Rejected {
                status,
                code: format!("HTTP_{status}"),
                message: body_snippet(body),
            })
        }
        _ => {
            return Err(ClientError::Protocol(format!(
                "unexpected HTTP status {status}"
            )))
        }
    }
    let reply: WxReply = serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("unreadable answer: {e}")))?;
    if let Some(errcode) = reply.errcode.filter(|c| *c != 0) {
        return Err(ClientError::Rejected {
            status,
            code: errcode.to_string(),
            message: reply.errmsg.unwrap_or_default(),
        });
    }
    Ok(reply)
}

/// A non-empty `value`, or a protocol error naming the field.
pub(crate) fn wx_field(value: Option<String>, name: &str) -> Result<String, ClientError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ClientError::Protocol(format!("answer without {name}")))
}

pub(crate) fn oauth_tokens(status: u16, body: &[u8]) -> Result<OAuthTokens, ClientError> {
    let reply = wx_reply(status, body)?;
    Ok(OAuthTokens {
        access_token: wx_field(reply.access_token, "access_token")?,
        refresh_token: wx_field(reply.refresh_token, "refresh_token")?,
        openid: wx_field(reply.openid, "openid")?,
        expires_in: reply
            .expires_in
            .ok_or_else(|| ClientError::Protocol("OAuth answer without expires_in".into()))?,
        scope: reply.scope.unwrap_or_default(),
    })
}
