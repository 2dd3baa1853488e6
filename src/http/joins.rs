//! The join behind a scan, and the answer to a join challenge that
//! completes one: the request's risk signals, the group actor's decision,
//! and the reply.

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::auth::User;
use super::AppState;
use crate::clock::now;
use crate::domain::challenge::{self, Challenge, Subject};
use crate::domain::ids::{GroupId, RequestId, UserId};
use crate::domain::join::Refusal;
use crate::domain::risk::{ChallengeKind, Mode};
use crate::domain::token;
use crate::error::{ApiError, Problem};
use crate::groups::join::{AnswerChallenge, Join, JoinOutcome};
use crate::groups::signals::{Activity, UserSignals};
use crate::metrics;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The invitation token (from the QR code's URL).
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct JoinResult {
    /// `joined` (200) or `pending` (202, waiting for approval).
    status: &'static str,
    group_id: GroupId,
    request_id: Option<RequestId>,
}

/// Join a group through an invitation token: a membership (200) or a join request (202).
#[utoipa::path(
    request_body = JoinBody,
    responses(
        (status = 200, body = JoinResult, description = "joined"),
        (status = 202, body = JoinResult, description = "waiting for approval"),
        (status = 400, body = Problem, description = "invalid_token"),
        (status = 403, body = Problem, description = "group_banned, blocked, invite_paused, challenge_required (with a `challenge` to solve and answer at POST /v1/challenges/{id})"),
        (status = 409, body = Problem, description = "group_full, already_member, request_pending"),
        (status = 410, body = Problem, description = "invite_expired, invite_revoked, invite_exhausted"),
        (status = 429, body = Problem, description = "rate_limited (with Retry-After)"),
    ),
    security(("bearer" = [])), tag = "invitations"
)]
#[post("/v1/join")]
pub async fn join(
    state: web::Data<AppState>,
    user: User,
    req: actix_web::HttpRequest,
    body: web::Json<JoinBody>,
) -> Result<HttpResponse, ApiError> {
    let result = join_inner(&state, &req, user.0, &body.token).await;
    join_reply(result)
}

/// The answer to a join (or a challenge answer that completed one), counted by outcome.
pub fn join_reply(
    result: Result<(JoinOutcome, GroupId), ApiError>,
) -> Result<HttpResponse, ApiError> {
    let outcome = match &result {
        Ok((JoinOutcome::Joined, _)) => "joined",
        Ok((JoinOutcome::Pending(_), _)) => "pending",
        Err(e) => e.code(),
    };
    metrics::JOIN_OUTCOMES.with_label_values(&[outcome]).inc();
    let (outcome, group_id) = result?;
    Ok(match outcome {
        JoinOutcome::Joined => HttpResponse::Ok().json(JoinResult {
            status: "joined",
            group_id,
            request_id: None,
        }),
        JoinOutcome::Pending(rid) => HttpResponse::Accepted().json(JoinResult {
            status: "pending",
            group_id,
            request_id: Some(rid),
        }),
    })
}

async fn join_inner(
    state: &AppState,
    req: &actix_web::HttpRequest,
    user: UserId,
    text: &str,
) -> Result<(JoinOutcome, GroupId), ApiError> {
    super::not_frozen(state, user)?;
    let invalid = || ApiError::from(Refusal::InvalidToken);
    let parsed = token::parse(text).map_err(|_| invalid())?;
    if state.keys.verifying_key(parsed.claims.kid).is_none() {
        return Err(invalid());
    }
    let g = state
        .groups
        .group_by_ref(&parsed.claims.group_ref)?
        .ok_or_else(invalid)?;
    let tag = parsed.tag(state.keys.tag_key());
    let signals = signals(state, req, user)?;
    // Cluster mode: the user's join quota is counted by the node that
    // holds it, also for joins of groups owned by other nodes.
    let user_quota = super::limits::ask_owner(state, super::limits::Limit::UserJoins(user)).await;
    let outcome = state
        .groups
        .call(
            g,
            Join {
                user,
                claims: parsed.claims,
                tag,
                signals,
                user_quota,
            },
        )
        .await?;
    Ok((outcome, g))
}

/// The keyed hash of the client's `X-Device-Id`, if it sent one.
pub fn device(state: &AppState, req: &HttpRequest) -> Result<Option<[u8; 16]>, ApiError> {
    let Some(v) = req.headers().get("x-device-id") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::validation("`X-Device-Id` must be 1 to 128 printable ASCII characters")
        })?;
    Ok(Some(state.keys.device_hash(s)))
}

/// The user-level risk signals of a join attempt (None when scoring is off).
pub fn signals(
    state: &AppState,
    req: &HttpRequest,
    user: UserId,
) -> Result<Option<UserSignals>, ApiError> {
    let p = &state.config.risk;
    if p.mode == Mode::Off {
        return Ok(None);
    }
    let device = device(state, req)?;
    let store = &state.groups.shared().signals;
    Ok(Some(store.observe(
        &state.storage,
        user,
        device,
        Activity::Join,
        now(),
        p,
    )?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    /// `pow`: the solution found (1 to 64 printable ASCII characters).
    solution: Option<String>,
    /// `captcha`: the token the provider's widget gave the client.
    response: Option<String>,
}

#[derive(Deserialize)]
struct SiteVerify {
    success: bool,
}

/// Ask the captcha provider whether `response` is a passed captcha
/// (hCaptcha, reCAPTCHA and Turnstile share this "siteverify" shape).
async fn captcha_passed(state: &AppState, response: &str) -> Result<bool, ApiError> {
    let Some(c) = &state.config.risk.challenge.captcha else {
        return Err(ApiError::CaptchaUnavailable);
    };
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let mut resp = client
        .post(&c.verify_url)
        .send_form(&[("secret", c.secret.as_str()), ("response", response)])
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "captcha provider unreachable");
            ApiError::CaptchaUnavailable
        })?;
    if !resp.status().is_success() {
        tracing::warn!(status = %resp.status(), "captcha provider refused the check");
        return Err(ApiError::CaptchaUnavailable);
    }
    let v: SiteVerify = resp.json().limit(64 * 1024).await.map_err(|e| {
        tracing::warn!(error = %e, "captcha provider answered garbage");
        ApiError::CaptchaUnavailable
    })?;
    Ok(v.success)
}

/// Answer a challenge; a passed one completes the join or the claim it
/// interrupted, and answers as that would have (a claim: 200 with its
/// `ClaimResult`).
#[utoipa::path(
    params(("id" = String, Path, description = "challenge id (from the `challenge_required` problem)")),
    request_body = ChallengeAnswer,
    responses(
        (status = 200, body = JoinResult, description = "joined"),
        (status = 202, body = JoinResult, description = "waiting for approval"),
        (status = 400, body = Problem, description = "invalid_challenge, validation_failed"),
        (status = 403, body = Problem, description = "challenge_failed, and the join refusals"),
        (status = 409, body = Problem, description = "challenge_used, and the join refusals"),
        (status = 410, body = Problem, description = "challenge_expired, and the join refusals"),
        (status = 502, body = Problem, description = "captcha_unavailable"),
    ),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[post("/v1/challenges/{id}")]
pub async fn answer_challenge(
    state: web::Data<AppState>,
    user: User,
    path: web::Path<String>,
    body: web::Json<ChallengeAnswer>,
) -> Result<HttpResponse, ApiError> {
    super::not_frozen(&state, user.0)?;
    let cid = path.into_inner();
    let (c, tag) = Challenge::open(&cid, state.keys.challenge_key())?;
    if c.subject == Subject::NewAccount {
        // answered by repeating `POST /v1/users`
        return Err(challenge::Refusal::Invalid.into());
    }
    // Checked here too so that nobody spends a captcha check on a challenge
    // that is not theirs or is over.
    c.admits(user.0, now())?;
    if state.storage.challenge_was_used(c.expires_at, &tag)? {
        return Err(challenge::Refusal::Used.into());
    }
    let passed = match c.kind {
        ChallengeKind::Pow => {
            let s = body.solution.as_deref().ok_or_else(|| {
                ApiError::validation("`solution` is required to answer a proof-of-work challenge")
            })?;
            challenge::pow_solves(&cid, s, c.bits)
        }
        ChallengeKind::Captcha => {
            let r = body
                .response
                .as_deref()
                .filter(|r| !r.is_empty() && r.len() <= 4096)
                .ok_or_else(|| {
                    ApiError::validation("`response` (1 to 4096 characters) is required to answer a captcha challenge")
                })?;
            captcha_passed(&state, r).await?
        }
    };
    match c.subject {
        Subject::Join { group, .. } => {
            let result = state
                .groups
                .call(
                    group,
                    AnswerChallenge {
                        user: user.0,
                        challenge: c,
                        tag,
                        passed,
                    },
                )
                .await
                .map(|o| (o, group));
            join_reply(result)
        }
        Subject::Claim {
            packet,
            at,
            referrer,
        } => {
            let outcome = if passed { "passed" } else { "failed" };
            metrics::CHALLENGES
                .with_label_values(&[c.kind.as_str(), outcome])
                .inc();
            if !passed {
                return Err(challenge::Refusal::Failed.into());
            }
            let ask = super::packets::Ask {
                packet,
                at,
                referrer,
                device: None,
                solved: true,
            };
            super::packets::take_claim(&state, user.0, ask).await
        }
        Subject::NewAccount => Err(challenge::Refusal::Invalid.into()),
    }
}
