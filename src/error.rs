//! The one error type of the HTTP API and the table of its stable codes.
//!
//! Every error a client can see is an [`ApiError`]: it knows its HTTP status and
//! its machine-readable `code`, and renders as RFC 7807 `application/problem+json`.
//! The table in [`ApiError::code`]/[`ApiError::status`] is the contract: codes
//! never change meaning once published. The domain's refusals name their
//! codes; their HTTP statuses are decided here, and only here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::join::Refusal;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    // ---- request shape ----
    #[error("the request body is not valid JSON for this route: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Validation(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// An uploaded image refused (type, size, or not decodable).
    #[error("{0}")]
    Image(crate::avatar::Refused),
    #[error("{0}")]
    InvalidId(String),

    // ---- who is calling ----
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this API key lacks the scope `{0}` this route needs")]
    InsufficientScope(&'static str),
    #[error("API key not found")]
    ApiKeyNotFound,
    #[error("this link request is unknown, used or expired: start the link again")]
    LinkStateInvalid,
    #[error("no webhook endpoint with this id is configured")]
    WebhookNotFound,
    #[error(
        "no webhook delivery with this id (done ones are listed for webhook_delivery.keep_days)"
    )]
    DeliveryNotFound,
    #[error("a payout is in progress: the payout account can be changed once it is over")]
    LinkChangeBlocked,
    #[error("payouts wait {retry_after_secs} s more after a change of payout account")]
    PayoutCoolingOff { retry_after_secs: u64 },
    #[error("this account is frozen by the operator: it may read, log out and be credited, not join, claim, create packets or codes, or pay out")]
    AccountFrozen,

    // ---- what is addressed ----
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    #[error("group not found")]
    GroupNotFound,
    #[error("invitation not found")]
    InviteNotFound,
    #[error("no pending join request with this id (it may have been decided or have expired)")]
    RequestNotFound,
    #[error("user not found")]
    UserNotFound,

    // ---- the join workflow ----
    #[error("{}", .0.detail())]
    Join(Refusal),
    #[error("this join looks automated: solve the challenge (`challenge`), then answer it with POST /v1/challenges/{{id}}")]
    ChallengeRequired(Box<crate::domain::challenge::Offer>),
    #[error("{}", .0.detail())]
    Challenge(crate::domain::challenge::Refusal),

    #[error("too many requests; retry after {retry_after_secs} s ({scope})")]
    RateLimited {
        scope: &'static str,
        retry_after_secs: u64,
    },

    // ---- the ledger ----
    #[error("{0}")]
    Transfer(crate::domain::ledger::TransferError),
    /// The books check found something; `report` is its whole answer.
    #[error("the books do not hold: {findings} finding(s)")]
    LedgerInconsistent {
        findings: usize,
        report: Box<serde_json::Value>,
    },
    #[error("transfer not found")]
    TransferNotFound,

    // ---- red packets ----
    #[error("{0}")]
    Packet(crate::domain::packet::Refusal),

    // ---- scan codes ----
    #[error("no such scan code")]
    CodeNotFound,
    #[error("this scan code has expired")]
    CodeExpired,
    #[error("this scan code has been revoked")]
    CodeRevoked,
    #[error("you created your daily quota of {quota} scan codes; retry after {retry_after_secs} s (the next business day)")]
    CodeQuotaExceeded { quota: u32, retry_after_secs: u64 },

    // ---- payouts and the provider ----
    #[error("{0}")]
    Payout(crate::domain::payout::Refusal),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("an Idempotency-Key header (1 to 128 printable ASCII characters) is required")]
    IdempotencyKeyRequired,
    #[error("payout not found")]
    PayoutNotFound,
    #[error("no report for this day")]
    ReportNotFound,
    #[error("payouts need a payment provider: configure [provider]")]
    ProviderNotConfigured,
    #[error("the payment provider did not answer properly; retry later")]
    ProviderUnavailable,
    #[error("the payment provider refused the authorization code: {0}")]
    LinkCodeRejected(String),

    // ---- other domain conflicts ----
    #[error("the captcha provider did not answer properly; retry later")]
    CaptchaUnavailable,

    #[error("another request changed this at the same moment; retry")]
    ConcurrentUpdate,
    #[error("the group's owner cannot be removed")]
    CannotRemoveOwner,
    #[error("the group's owner cannot be blocked")]
    CannotBlockOwner,
    #[error("the group has as many live invitations as it may have; revoke one first")]
    TooManyInvites,
    #[error("the group stores as many invitations as it may, revoked and expired ones included")]
    TooManyStoredInvites,

    #[error("too many open WebSocket connections {0}; close one first")]
    TooManyConnections(&'static str),

    #[error(
        "the events after the given seq are no longer kept; the feed starts at seq {oldest_seq}"
    )]
    EventsExpired { oldest_seq: u64 },

    // ---- backups ----
    #[error("{0}")]
    BackupTargetNotEmpty(String),
    #[error("a backup is running; one at a time")]
    BackupRunning,
    #[error("{0}")]
    BackupNotSupported(String),
    #[error("the backup failed, and the target was left empty: {0}")]
    BackupFailed(String),

    // ---- the server ----
    #[error("storage is unavailable: a change could not be made durable (nothing was acknowledged), or the data could not be read; retry later")]
    StorageUnavailable,
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("the node that owns this entity did not answer; retry shortly")]
    NodeUnavailable,
    #[error("a forwarded request whose cluster signature does not hold")]
    ForwardRefused,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Validation(_) => "validation_failed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Image(r) => match r {
                crate::avatar::Refused::UnsupportedType => "unsupported_media_type",
                crate::avatar::Refused::TooLarge { .. } => "image_too_large",
                crate::avatar::Refused::Invalid(_) => "invalid_image",
            },
            ApiError::InvalidId(_) => "invalid_id",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::GroupNotFound => "group_not_found",
            ApiError::InviteNotFound => "invite_not_found",
            ApiError::RequestNotFound => "request_not_found",
            ApiError::UserNotFound => "user_not_found",
            ApiError::AccountFrozen => "account_frozen",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::ApiKeyNotFound => "api_key_not_found",
            ApiError::WebhookNotFound => "webhook_not_found",
            ApiError::LinkStateInvalid => "link_state_invalid",
            ApiError::DeliveryNotFound => "delivery_not_found",
            ApiError::LinkChangeBlocked => "link_change_blocked",
            ApiError::PayoutCoolingOff { .. } => "payout_cooling_off",
            ApiError::Join(r) => r.code(),
            ApiError::ChallengeRequired(_) => "challenge_required",
            ApiError::Challenge(r) => r.code(),

            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Transfer(e) => e.code(),
            ApiError::TransferNotFound => "transfer_not_found",
            ApiError::LedgerInconsistent { .. } => "ledger_inconsistent",
            ApiError::Payout(r) => r.code(),
            ApiError::Packet(r) => r.code(),
            ApiError::CodeNotFound => "code_not_found",
            ApiError::CodeExpired => "code_expired",
            ApiError::CodeRevoked => "code_revoked",
            ApiError::CodeQuotaExceeded { .. } => "code_quota_exceeded",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyRequired => "idempotency_key_required",
            ApiError::PayoutNotFound => "payout_not_found",
            ApiError::ReportNotFound => "report_not_found",
            ApiError::ProviderNotConfigured => "provider_not_configured",
            ApiError::ProviderUnavailable => "provider_unavailable",
            ApiError::LinkCodeRejected(_) => "link_code_invalid",
            ApiError::CaptchaUnavailable => "captcha_unavailable",
            ApiError::ConcurrentUpdate => "concurrent_update",
            ApiError::CannotRemoveOwner => "cannot_remove_owner",
            ApiError::CannotBlockOwner => "cannot_block_owner",
            ApiError::TooManyInvites | ApiError::TooManyStoredInvites => "too_many_invites",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::EventsExpired { .. } => "events_expired",
            ApiError::BackupTargetNotEmpty(_) => "backup_target_not_empty",
            ApiError::BackupRunning => "backup_running",
            ApiError::BackupNotSupported(_) => "backup_not_supported",
            ApiError::BackupFailed(_) => "backup_failed",
            ApiError::StorageUnavailable => "storage_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::NodeUnavailable => "node_unavailable",
            ApiError::ForwardRefused => "forward_refused",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::Validation(_) | ApiError::InvalidId(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Image(crate::avatar::Refused::UnsupportedType) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::Image(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_)
            | ApiError::AccountFrozen
            | ApiError::InsufficientScope(_)
            | ApiError::PayoutCoolingOff { .. } => StatusCode::FORBIDDEN,
            ApiError::LinkChangeBlocked => StatusCode::CONFLICT,
            ApiError::RouteNotFound
            | ApiError::GroupNotFound
            | ApiError::InviteNotFound
            | ApiError::RequestNotFound
            | ApiError::UserNotFound
            | ApiError::ApiKeyNotFound
            | ApiError::WebhookNotFound
            | ApiError::DeliveryNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Join(r) => {
                use crate::domain::join::Refusal::*;
                match r {
                    InvalidToken => StatusCode::BAD_REQUEST,
                    Expired | Revoked | Exhausted => StatusCode::GONE,
                    GroupBanned | Blocked | Paused => StatusCode::FORBIDDEN,
                    AlreadyMember | RequestPending | GroupFull | QueueFull => StatusCode::CONFLICT,
                }
            }
            ApiError::ChallengeRequired(_) => StatusCode::FORBIDDEN,
            ApiError::Challenge(r) => {
                use crate::domain::challenge::Refusal::*;
                match r {
                    Invalid => StatusCode::BAD_REQUEST,
                    Expired => StatusCode::GONE,
                    Used => StatusCode::CONFLICT,
                    Failed => StatusCode::FORBIDDEN,
                }
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Transfer(e) => {
                use crate::domain::ledger::TransferError::*;
                match e {
                    AmountMustNotBeZero
                    | AmountTooLarge
                    | AccountsMustBeDifferent
                    | UserDataTooLong => StatusCode::BAD_REQUEST,
                    PendingTransferNotFound => StatusCode::NOT_FOUND,
                    _ => StatusCode::CONFLICT,
                }
            }
            ApiError::TransferNotFound | ApiError::PayoutNotFound | ApiError::ReportNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::Payout(r) => {
                use crate::domain::payout::Refusal::*;
                match r {
                    NotLinked | DailyAmount { .. } => StatusCode::CONFLICT,
                    BelowMinimum(_) | AboveMaximum(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    DailyCount(_) => StatusCode::TOO_MANY_REQUESTS,
                    KycRequired(_) | RealNameRequired(_) => StatusCode::FORBIDDEN,
                }
            }
            ApiError::Packet(r) => {
                use crate::domain::packet::Refusal::*;
                match r {
                    DailyAmount { .. } | AlreadyClaimed => StatusCode::CONFLICT,
                    NotFound => StatusCode::NOT_FOUND,
                    Expired | Empty => StatusCode::GONE,
                    OutsideGeofence { .. } | ChallengeRequired => StatusCode::FORBIDDEN,
                    Paused { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    BadCount(_)
                    | BelowShareMinimum { .. }
                    | AboveMaximum(_)
                    | NotDivisible { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                }
            }
            ApiError::CodeNotFound => StatusCode::NOT_FOUND,
            ApiError::CodeExpired | ApiError::CodeRevoked => StatusCode::GONE,
            ApiError::CodeQuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyKeyRequired
            | ApiError::LinkCodeRejected(_)
            | ApiError::LinkStateInvalid => StatusCode::BAD_REQUEST,
            ApiError::ProviderNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ProviderUnavailable | ApiError::CaptchaUnavailable => StatusCode::BAD_GATEWAY,
            ApiError::LedgerInconsistent { .. }
            | ApiError::ConcurrentUpdate
            | ApiError::CannotRemoveOwner
            | ApiError::CannotBlockOwner
            | ApiError::TooManyInvites
            | ApiError::TooManyStoredInvites => StatusCode::CONFLICT,
            ApiError::StorageUnavailable | ApiError::Overloaded | ApiError::NodeUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::ForwardRefused => StatusCode::FORBIDDEN,
            ApiError::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::EventsExpired { .. } => StatusCode::GONE,
            ApiError::BackupTargetNotEmpty(_)
            | ApiError::BackupRunning
            | ApiError::BackupNotSupported(_) => StatusCode::CONFLICT,
            ApiError::BackupFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }

    /// A refusal by a governor limiter: `Retry-After` is when it frees up.
    pub fn rate_limited<C: governor::clock::Clock>(
        scope: &'static str,
        refusal: &governor::NotUntil<C::Instant>,
        clock: &C,
    ) -> Self {
        ApiError::RateLimited {
            scope,
            retry_after_secs: retry_after_secs(refusal, clock),
        }
    }

    pub fn forbidden(why: impl Into<String>) -> Self {
        ApiError::Forbidden(why.into())
    }

    pub fn validation(why: impl Into<String>) -> Self {
        ApiError::Validation(why.into())
    }
}

/// Whole seconds until a governor limiter that refused frees up (at least 1).
pub fn retry_after_secs<C: governor::clock::Clock>(
    refusal: &governor::NotUntil<C::Instant>,
    clock: &C,
) -> u64 {
    refusal.wait_time_from(clock.now()).as_secs() + 1
}

impl From<crate::domain::ledger::TransferError> for ApiError {
    fn from(e: crate::domain::ledger::TransferError) -> Self {
        ApiError::Transfer(e)
    }
}

impl From<crate::domain::packet::Refusal> for ApiError {
    fn from(r: crate::domain::packet::Refusal) -> Self {
        ApiError::Packet(r)
    }
}

impl From<crate::domain::challenge::Refusal> for ApiError {
    fn from(r: crate::domain::challenge::Refusal) -> Self {
        ApiError::Challenge(r)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Join(r)
    }
}

/// RFC 7807 body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank#<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// `challenge_required` only: the challenge to solve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::domain::challenge::Offer>,
    /// `ledger_inconsistent` only: the books check with its findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// `events_expired` only: the oldest `seq` the feed still holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        let body = Problem {
            kind: format!("https://qrgate.dev/problems/{}", self.code()),
            title: self.title().to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_string(),
            challenge: match self {
                ApiError::ChallengeRequired(o) => Some((**o).clone()),
                _ => None,
            },
            report: match self {
                ApiError::LedgerInconsistent { report, .. } => Some((**report).clone()),
                _ => None,
            },
            oldest_seq: match self {
                ApiError::EventsExpired { oldest_seq } => Some(*oldest_seq),
                _ => None,
            },
        };
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            resp.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
        }
        if let Some(secs) = match self {
            ApiError::Packet(r) => r.retry_after(),
            ApiError::CodeQuotaExceeded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::PayoutCoolingOff { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        } {
            resp.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        if let ApiError::Unauthorized = self {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        match serde_json::to_vec(&body) {
            Ok(bytes) => resp.body(bytes),
            Err(_) => resp.finish(),
        }
    }
}

/// Storage failures are never shown in detail to clients; they are logged where they happen.
impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        if let crate::storage::StorageError::Exists(k) = &e {
            // Two writers raced to create the same record; the loser applied
            // nothing and may simply retry.
            tracing::warn!(key = %k, "write set refused: record exists");
            return ApiError::ConcurrentUpdate;
        }
        if let crate::storage::StorageError::Fenced(entity) = &e {
            // A stale owner (another writer took the entity over): it
            // applied nothing and is rebuilt from storage.
            tracing::warn!(%entity, "write set refused: another writer owns the entity");
            return ApiError::StorageUnavailable;
        }
        tracing::error!(error = %e, "storage error");
        ApiError::StorageUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{challenge, join, packet, payout};

    fn pair(e: impl Into<ApiError>) -> (&'static str, u16) {
        let e = e.into();
        (e.code(), e.status().as_u16())
    }

    #[test]
    fn join_refusals_match_the_contract() {
        use join::Refusal;
        let all = [
            (Refusal::InvalidToken, "invalid_token", 400),
            (Refusal::Expired, "invite_expired", 410),
            (Refusal::Revoked, "invite_revoked", 410),
            (Refusal::Exhausted, "invite_exhausted", 410),
            (Refusal::GroupBanned, "group_banned", 403),
            (Refusal::Blocked, "blocked", 403),
            (Refusal::GroupFull, "group_full", 409),
            (Refusal::AlreadyMember, "already_member", 409),
            (Refusal::RequestPending, "request_pending", 409),
            (Refusal::Paused, "invite_paused", 403),
            (Refusal::QueueFull, "too_many_pending_requests", 409),
        ];
        for (r, code, status) in all {
            assert_eq!(pair(r), (code, status));
        }
    }

    #[test]
    fn challenge_refusals_match_the_contract() {
        use challenge::Refusal;
        for (r, c, s) in [
            (Refusal::Invalid, "invalid_challenge", 400),
            (Refusal::Expired, "challenge_expired", 410),
            (Refusal::Used, "challenge_used", 409),
            (Refusal::Failed, "challenge_failed", 403),
        ] {
            assert_eq!(pair(r), (c, s));
        }
    }

    #[test]
    fn packet_and_payout_refusals_have_their_statuses() {
        for r in [
            packet::Refusal::BadCount(1),
            packet::Refusal::AboveMaximum(1),
        ] {
            let (code, status) = pair(r);
            assert!(code.starts_with("packet_") && status == 422);
        }
        for r in [
            payout::Refusal::NotLinked,
            payout::Refusal::DailyCount(1),
            payout::Refusal::KycRequired(1),
        ] {
            let (code, status) = pair(ApiError::Payout(r));
            assert!(!code.is_empty() && status >= 400);
        }
    }

    #[test]
    fn the_former_conflicts_keep_their_codes() {
        for (e, c) in [
            (ApiError::ConcurrentUpdate, "concurrent_update"),
            (ApiError::CannotRemoveOwner, "cannot_remove_owner"),
            (ApiError::CannotBlockOwner, "cannot_block_owner"),
            (ApiError::TooManyInvites, "too_many_invites"),
        ] {
            assert_eq!(pair(e), (c, 409));
        }
    }

    /// Every code the API can answer is in the reference's error table
    /// (`docs/api.md`), read from the `code()` tables of the error and the
    /// domain's refusals.
    #[test]
    fn every_code_is_in_the_api_reference() {
        let docs = include_str!("../docs/api.md");
        let sources = [
            include_str!("error.rs"),
            include_str!("domain/join.rs"),
            include_str!("domain/challenge.rs"),
            include_str!("domain/ledger.rs"),
            include_str!("domain/packet.rs"),
            include_str!("domain/payout.rs"),
        ];
        let mut missing = Vec::new();
        let mut seen = 0;
        for src in sources {
            let Some(start) = src.find("pub fn code(") else {
                continue;
            };
            let body = &src[start..];
            let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
            for arm in body.split("=> \"").skip(1) {
                let code = &arm[..arm.find('"').unwrap_or(0)];
                seen += 1;
                let listed = docs.contains(&format!("`{code}`"))
                    || code
                        .char_indices()
                        .filter(|(_, c)| *c == '_')
                        .any(|(i, _)| docs.contains(&format!("`…{}`", &code[i..])));
                if !listed {
                    missing.push(code.to_string());
                }
            }
        }
        assert!(seen > 60, "read {seen} codes");
        assert!(missing.is_empty(), "not in docs/api.md: {missing:?}");
    }
}
