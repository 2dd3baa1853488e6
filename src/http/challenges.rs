//! Answering a human-verification challenge: a passed one completes what
//! it interrupted (a join, or a claim on a campaign packet), through the
//! same path as the original request.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;
use std::time::Duration;
use utoipa::ToSchema;

use super::auth::User;
use super::joins::{join_reply, JoinResult};
use super::AppState;
use crate::clock::now;
use crate::domain::challenge::{self, Challenge, Subject};
use crate::domain::risk::ChallengeKind;
use crate::error::{ApiError, Problem};
use crate::groups::join::AnswerChallenge;
use crate::metrics;

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
    // A join records the challenges it used; a claim is single-use by
    // itself (one share per user and packet).
    let join = matches!(c.subject, Subject::Join { .. });
    if join && state.storage.challenge_was_used(c.expires_at, &tag)? {
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
