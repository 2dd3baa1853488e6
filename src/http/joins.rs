//! The join behind a scan: the request's risk signals, the group actor's
//! decision, and the reply (also the reply of a join completed by an
//! answered challenge, `challenges.rs`).

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::User;
use super::AppState;
use crate::clock::now;
use crate::domain::ids::{GroupId, RequestId, UserId};
use crate::domain::join::Refusal;
use crate::domain::risk::Mode;
use crate::domain::token;
use crate::error::{ApiError, Problem};
use crate::groups::join::{Join, JoinOutcome};
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
        .group_of_token(&parsed)
        .await?
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
    let device = super::device(state, req)?;
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
