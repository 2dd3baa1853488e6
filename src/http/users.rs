//! Users and signing keys.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{auth, id, AppState};
use crate::clock::now;
use crate::domain::group::UserName;
use crate::domain::ids::UserId;
use crate::error::{ApiError, Problem};
use crate::keys::Jwk;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name, 1 to 64 characters.
    name: String,
    /// When a creation answered 403 `challenge_required`: its challenge's
    /// id, and `solution`, the proof of work that solves it.
    challenge_id: Option<String>,
    solution: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    user_id: UserId,
    /// Bearer session token. Shown once; the server keeps only its hash.
    token: String,
    /// When the session ends unless used (unix seconds); each use moves it
    /// to `sessions.lifetime_days` ahead, at most once a day.
    expires_at: i64,
}

/// Create a user and a session token. Creations from one network are
/// limited; while they burst (past
/// `limits.users_per_minute_per_network_before_challenge`), a creation
/// answers 403 `challenge_required` with a proof of work, and the client
/// repeats it with `challenge_id` and `solution`.
#[utoipa::path(
    request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 400, body = Problem),
        (status = 403, body = Problem, description = "challenge_required (with `challenge`), challenge_failed"),
        (status = 409, body = Problem, description = "challenge_used"),
        (status = 410, body = Problem, description = "challenge_expired"),
        (status = 429, body = Problem)
    ),
    tag = "users"
)]
#[post("/v1/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let name = UserName::parse(&body.name).map_err(ApiError::Validation)?;
    // Service backends creating users with the admin token are not limited per address.
    let limited = !auth::is_admin(&state, &req);
    let mut passed = None;
    if let Some(ip) = super::forward::client_ip(&req).filter(|_| limited) {
        super::limits::take(&state, super::limits::Limit::NewUsers(ip)).await?;
        passed = step_up(&state, ip, &body).await?;
    }
    let (user, token, session) = state.accounts.create_user(name, passed).await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user_id: user.id,
        token,
        expires_at: session.expires_at.unwrap_or(0),
    }))
}

/// The proof of work on account creation: `Some((expires_at, tag))` of
/// the challenge the request solved; a burst from the network without one
/// is refused with the challenge to solve.
async fn step_up(
    state: &AppState,
    ip: std::net::IpAddr,
    body: &NewUser,
) -> Result<Option<(i64, [u8; 16])>, ApiError> {
    use crate::domain::challenge::{self, Challenge, Refusal};
    let network = super::limits::network(ip);
    let key = state.keys.challenge_key();
    let now = now();
    match (&body.challenge_id, &body.solution) {
        (Some(id), Some(solution)) => {
            let (c, tag) = Challenge::open(id, key)?;
            if c.subject != challenge::Subject::NewAccount {
                return Err(Refusal::Invalid.into());
            }
            c.admits(challenge::new_account_tag(key, network), now)?;
            if state.storage.challenge_was_used(c.expires_at, &tag)? {
                return Err(Refusal::Used.into());
            }
            if !challenge::pow_solves(id, solution, c.bits) {
                return Err(Refusal::Failed.into());
            }
            Ok(Some((c.expires_at, tag)))
        }
        (None, None) => {
            let enforce = state.config.risk.mode == crate::domain::risk::Mode::Enforce;
            if !enforce || state.new_user_burst.check_key(&network).is_ok() {
                return Ok(None);
            }
            let p = &state.config.risk.challenge;
            let c = Challenge::for_new_account(key, network, p.pow_bits, now, p.ttl_seconds);
            let mut offer = c.offer(key, p);
            offer.answer_url = "/v1/users".into();
            Err(ApiError::ChallengeRequired(Box::new(offer)))
        }
        _ => Err(ApiError::validation(
            "`challenge_id` and `solution` go together",
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// Public keys that verify invitation tokens (JWKS shape, Ed25519 `OKP`).
#[utoipa::path(responses((status = 200, body = Jwks)), tag = "keys")]
#[get("/v1/keys")]
pub async fn keys(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(Jwks {
            keys: state.keys.jwks(now()),
        })
}

/// End the calling session (logout): the token answers 401 from now on,
/// and WebSockets opened with it close with code 4001.
#[utoipa::path(
    responses((status = 204), (status = 401, body = Problem)),
    security(("bearer" = [])), tag = "users"
)]
#[delete("/v1/sessions/current")]
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    _user: auth::User,
) -> Result<HttpResponse, ApiError> {
    let hash = auth::bearer_session(&req).ok_or(ApiError::Unauthorized)?;
    state.accounts.end_session(&hash).await?;
    state.hub.end_sessions(|_, s| s == Some(hash));
    Ok(HttpResponse::NoContent().finish())
}

/// Revoke every session of a user (admin token): each answers 401 from now
/// on, on every route, and their WebSockets close with code 4001.
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/users/{id}/sessions/revoke")]
pub async fn revoke_sessions(
    state: web::Data<AppState>,
    _admin: auth::Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = existing_user(&state, &path).await?;
    state.accounts.revoke_sessions(uid).await?;
    state.hub.end_sessions(|u, _| u == uid);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct IssuedSession {
    /// Bearer session token. Shown once; the server keeps only its hash.
    token: String,
    /// When the session ends unless used (unix seconds).
    expires_at: i64,
}

/// A new session for an existing user (admin token): the app's backend
/// logs its users in with it.
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 201, body = IssuedSession), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/users/{id}/sessions")]
pub async fn issue_session(
    state: web::Data<AppState>,
    _admin: auth::Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = existing_user(&state, &path).await?;
    let (token, session) = state.accounts.issue_session(uid).await?;
    Ok(HttpResponse::Created().json(IssuedSession {
        token,
        expires_at: session.expires_at.unwrap_or(0),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    /// Why (kept for the record), up to 200 characters.
    #[serde(default)]
    reason: String,
}

/// Freeze a user (admin token): they may still read, log out and be
/// credited, but not join, claim, create packets or codes, or pay out (403
/// `account_frozen`). Durable; in force at once.
#[utoipa::path(
    params(("id" = String, Path)),
    request_body = FreezeBody,
    responses((status = 204), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/users/{id}/freeze")]
pub async fn freeze_user(
    state: web::Data<AppState>,
    _admin: auth::Admin,
    path: web::Path<String>,
    body: web::Json<FreezeBody>,
) -> Result<HttpResponse, ApiError> {
    let uid = existing_user(&state, &path).await?;
    state.accounts.freeze(uid, &body.reason).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Unfreeze a user (admin token; one frozen by `packets.blacklist` in the
/// config stays frozen).
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/users/{id}/unfreeze")]
pub async fn unfreeze_user(
    state: web::Data<AppState>,
    _admin: auth::Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = existing_user(&state, &path).await?;
    state.accounts.unfreeze(uid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The user a path names: 400 if it is no user id, 404 if nobody has it.
pub async fn existing_user(state: &AppState, path: &str) -> Result<UserId, ApiError> {
    let uid = id(UserId::parse, path)?;
    if !state.accounts.known(uid).await? {
        return Err(ApiError::UserNotFound);
    }
    Ok(uid)
}
