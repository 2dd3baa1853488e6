//! Users and signing keys.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{auth, id, AppState};
use crate::clock::now;
use crate::domain::group::parse_user_name;
use crate::domain::ids::UserId;
use crate::error::{ApiError, Problem};
use crate::keys::Jwk;
use crate::storage::{User, WriteSet};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name, 1 to 64 characters.
    name: String,
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

/// Create a user and a session token.
#[utoipa::path(
    request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 400, body = Problem), (status = 429, body = Problem)
    ),
    tag = "users"
)]
#[post("/v1/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_user_name(&body.name).map_err(ApiError::Validation)?;
    // Service backends creating users with the admin token are not limited per address.
    let limited = !auth::is_admin(&state, &req);
    if let Some(ip) = req.peer_addr().map(|a| a.ip()).filter(|_| limited) {
        if let Err(nu) = state.ip_limiter.check_key(&ip) {
            let clock = &state.groups.shared().clock;
            return Err(ApiError::rate_limited(
                "users created from this address",
                &nu,
                clock,
            ));
        }
    }
    let user = User {
        id: UserId::random(),
        name,
        created_at: now(),
        kyc_verified: false,
    };
    let (token, hash, session) = auth::issue(&state, user.id);
    let mut w = WriteSet::new();
    w.user_record(&user);
    w.session(&hash, &session);
    state.storage.commit(w).await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user_id: user.id,
        token,
        expires_at: session.expires_at.unwrap_or(0),
    }))
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
    let mut w = WriteSet::new();
    w.end_session(&hash);
    state.storage.commit(w).await?;
    state.sessions.remove(&hash);
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
    let uid = existing_user(&state, &path)?;
    // Sessions created up to this millisecond end; one issued after does not.
    let before = crate::clock::now_ms() + 1;
    let mut w = WriteSet::new();
    w.sessions_revoked(uid, before);
    state.storage.commit(w).await?;
    state
        .revoked
        .write()
        .map_err(|_| ApiError::Internal)?
        .insert(uid, before);
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
    let uid = existing_user(&state, &path)?;
    let (token, hash, session) = auth::issue(&state, uid);
    let mut w = WriteSet::new();
    w.session(&hash, &session);
    state.storage.commit(w).await?;
    Ok(HttpResponse::Created().json(IssuedSession {
        token,
        expires_at: session.expires_at.unwrap_or(0),
    }))
}

/// Freeze `u` for `reason` (durable, then in force at once).
pub async fn freeze(
    state: &AppState,
    u: UserId,
    reason: &str,
) -> Result<crate::storage::BlacklistEntry, ApiError> {
    if reason.chars().count() > 200 {
        return Err(ApiError::validation(
            "reason must be at most 200 characters",
        ));
    }
    let e = crate::storage::BlacklistEntry {
        user_id: u,
        reason: reason.to_string(),
        at: now(),
    };
    let mut w = WriteSet::new();
    w.freeze(&e);
    state.storage.commit(w).await?;
    state
        .frozen
        .write()
        .map_err(|_| ApiError::Internal)?
        .insert(u);
    Ok(e)
}

/// Unfreeze `u` (one frozen by `packets.blacklist` in the config stays).
pub async fn unfreeze(state: &AppState, u: UserId) -> Result<(), ApiError> {
    let mut w = WriteSet::new();
    w.unfreeze(u);
    state.storage.commit(w).await?;
    let from_config = state
        .config
        .packets
        .blacklist
        .iter()
        .any(|s| *s == u.to_string());
    if !from_config {
        state
            .frozen
            .write()
            .map_err(|_| ApiError::Internal)?
            .remove(&u);
    }
    Ok(())
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
    let uid = existing_user(&state, &path)?;
    freeze(&state, uid, &body.reason).await?;
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
    let uid = existing_user(&state, &path)?;
    unfreeze(&state, uid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The user a path names: 400 if it is no user id, 404 if nobody has it.
fn existing_user(state: &AppState, path: &str) -> Result<UserId, ApiError> {
    let uid = id(UserId::parse, path)?;
    state.storage.user(uid)?.ok_or(ApiError::UserNotFound)?;
    Ok(uid)
}
