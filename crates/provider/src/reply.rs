//! Reading what the provider answers: the client's errors, status classes, signatures needed,
//! error bodies, transfer and OAuth replies; and query strings.

use serde::Deserialize;

use super::notify::NotifyHeaders;
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

pub(crate) fn created_status(reply: CreateReply) -> Result<TransferStatus, ClientError> {
    if reply.transfer_bill_no.is_empty() {
        return Err(ClientError::Protocol("empty transfer_bill_no".into()));
    }
    Ok(TransferStatus {
        out_bill_no: reply.out_bill_no,
        transfer_bill_no: reply.transfer_bill_no,
        state: reply.state,
        amount: None,
        openid: None,
        fail_reason: reply.fail_reason.filter(|r| !r.is_empty()),
        package_info: reply.package_info.filter(|p| !p.is_empty()),
        update_time: reply.create_time,
    })
}

pub(crate) fn queried_status(reply: QueryReply) -> Result<TransferStatus, ClientError> {
    if reply.transfer_bill_no.is_empty() {
        return Err(ClientError::Protocol("empty transfer_bill_no".into()));
    }
    Ok(TransferStatus {
        out_bill_no: reply.out_bill_no,
        transfer_bill_no: reply.transfer_bill_no,
        state: reply.state,
        amount: Some(reply.transfer_amount),
        openid: reply.openid,
        fail_reason: reply.fail_reason.filter(|r| !r.is_empty()),
        package_info: None,
        update_time: reply.update_time,
    })
}

#[derive(Deserialize)]
struct OAuthReply {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

pub(crate) fn oauth_tokens(status: u16, body: &[u8]) -> Result<OAuthTokens, ClientError> {
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
    let reply: OAuthReply = serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("unreadable OAuth answer: {e}")))?;
    if let Some(errcode) = reply.errcode.filter(|c| *c != 0) {
        return Err(ClientError::Rejected {
            status,
            code: errcode.to_string(),
            message: reply.errmsg.unwrap_or_default(),
        });
    }
    let field = |value: Option<String>, name: &str| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ClientError::Protocol(format!("OAuth answer without {name}")))
    };
    Ok(OAuthTokens {
        access_token: field(reply.access_token, "access_token")?,
        refresh_token: field(reply.refresh_token, "refresh_token")?,
        openid: field(reply.openid, "openid")?,
        expires_in: reply
            .expires_in
            .ok_or_else(|| ClientError::Protocol("OAuth answer without expires_in".into()))?,
        scope: reply.scope.unwrap_or_default(),
    })
}
