//! Who is calling: bearer session tokens of users, and the operator's admin token.
//! Tokens are only ever compared by their blake3 hash; they are never logged.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::Future;
use std::pin::Pin;

use super::AppState;
use crate::accounts::{token_hash, API_KEY_PREFIX, SESSION_PREFIX};
use crate::domain::ids::UserId;
use crate::error::ApiError;
use crate::groups::Caller;

fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let s = v.to_str().ok()?;
    let (scheme, token) = s.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Resolve a bearer token (header) to a caller.
pub fn resolve(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::Unauthorized);
    }
    if blake3::hash(token.as_bytes()) == state.admin_hash {
        return Ok(Caller::Admin);
    }
    if !token.starts_with(SESSION_PREFIX) {
        return Err(ApiError::Unauthorized);
    }
    state
        .accounts
        .session_user(&token_hash(token))
        .map(Caller::User)
}

/// The bearer token's session hash (for logout).
pub fn bearer_session(req: &HttpRequest) -> Option<[u8; 32]> {
    bearer(req)
        .filter(|t| t.starts_with(SESSION_PREFIX))
        .map(token_hash)
}

/// Refuse unless the request carries the operator token: 401 without a
/// valid token, 403 for a user's session.
pub fn require_admin(_state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    match caller_of(req)? {
        Caller::Admin => Ok(()),
        Caller::User(_) => Err(ApiError::forbidden("this route needs the admin token")),
    }
}

/// Whether the request carries the operator token (without requiring any auth).
pub fn is_admin(_state: &AppState, req: &HttpRequest) -> bool {
    bearer(req).is_some() && matches!(caller_of(req), Ok(Caller::Admin))
}

/// The user a request's bearer token names, if any (for routes open to
/// everyone that still want to know who looks).
pub fn bearer_user(state: &AppState, req: &HttpRequest) -> Option<UserId> {
    match resolve(state, bearer(req)?) {
        Ok(Caller::User(u)) => Some(u),
        _ => None,
    }
}

fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or(ApiError::Internal)?;
    let token = bearer(req).ok_or(ApiError::Unauthorized)?;
    if token.starts_with(API_KEY_PREFIX) {
        return key_caller(state, req, token);
    }
    resolve(state, token)
}

/// An API key acts as the operator on the routes its scopes name (403
/// `insufficient_scope` elsewhere); an unknown or revoked key is 401.
fn key_caller(state: &AppState, req: &HttpRequest, key: &str) -> Result<Caller, ApiError> {
    let k = state
        .accounts
        .api_key(&token_hash(key))?
        .ok_or(ApiError::Unauthorized)?;
    match scope_of(req) {
        Some(scope) if k.scopes.iter().any(|s| s == scope) => Ok(Caller::Admin),
        Some(scope) => Err(ApiError::InsufficientScope(scope)),
        None => Err(ApiError::InsufficientScope("admin token")),
    }
}

/// [`caller_of`], except that in cluster mode a token this node does not
/// know may belong to a session or key made through another node a moment
/// ago: it first applies what the log holds, then asks again.
async fn caller_catching_up(req: HttpRequest) -> Result<Caller, ApiError> {
    match caller_of(&req) {
        Err(ApiError::Unauthorized) => {
            let Some(state) = req.app_data::<web::Data<AppState>>() else {
                return Err(ApiError::Unauthorized);
            };
            let may_be_new = bearer(&req)
                .is_some_and(|t| t.starts_with(SESSION_PREFIX) || t.starts_with(API_KEY_PREFIX));
            if !state.storage.is_cluster() || !may_be_new {
                return Err(ApiError::Unauthorized);
            }
            if let Err(e) = state.storage.sync_all().await {
                tracing::debug!(error = %e, "cannot catch up with the log");
            }
            caller_of(&req)
        }
        r => r,
    }
}

/// Any authenticated caller: a user or the operator.
pub struct Authed(pub Caller);

/// A user session (the operator token is refused: it is nobody's account).
pub struct User(pub UserId);

/// The operator token.
pub struct Admin;

type Fut<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { caller_catching_up(req).await.map(Authed) })
    }
}

impl FromRequest for User {
    type Error = ApiError;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match caller_catching_up(req).await {
                Ok(Caller::User(u)) => Ok(User(u)),
                Ok(Caller::Admin) => Err(ApiError::forbidden(
                    "this route acts as a user; use a user session token, not the admin token",
                )),
                Err(e) => Err(e),
            }
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Fut<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match caller_catching_up(req).await {
                Ok(Caller::Admin) => Ok(Admin),
                Ok(Caller::User(_)) => Err(ApiError::forbidden("this route needs the admin token")),
                Err(e) => Err(e),
            }
        })
    }
}

/// Every scope a key may hold.
pub const SCOPES: [&str; 8] = [
    "earnings:write",
    "sessions:write",
    "reports:read",
    "moderation",
    "payouts:admin",
    "codes:write",
    "webhooks:admin",
    "campaigns:write",
];

/// The scope a key needs on each route that takes the admin token (method,
/// route as declared). A route not here takes no key.
pub const ROUTE_SCOPES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/earnings", "earnings:write"),
    ("POST", "/v1/users", "sessions:write"),
    ("POST", "/v1/admin/users/{id}/sessions", "sessions:write"),
    (
        "POST",
        "/v1/admin/users/{id}/sessions/revoke",
        "sessions:write",
    ),
    ("GET", "/metrics", "reports:read"),
    ("GET", "/v1/admin/ledger/check", "reports:read"),
    (
        "GET",
        "/v1/admin/reports/large-transactions",
        "reports:read",
    ),
    ("GET", "/v1/admin/payouts", "payouts:admin"),
    ("GET", "/v1/admin/alerts", "payouts:admin"),
    ("POST", "/v1/admin/users/{id}/kyc", "payouts:admin"),
    ("POST", "/v1/admin/reconcile", "payouts:admin"),
    ("GET", "/v1/admin/reconcile/{date}", "payouts:admin"),
    ("POST", "/v1/codes", "codes:write"),
    ("GET", "/v1/codes/{code}", "codes:write"),
    ("DELETE", "/v1/codes/{code}", "codes:write"),
    ("POST", "/v1/packets", "campaigns:write"),
    ("GET", "/v1/groups/{id}", "moderation"),
    ("PATCH", "/v1/groups/{id}", "moderation"),
    ("GET", "/v1/groups/{id}/members", "moderation"),
    ("PUT", "/v1/groups/{id}/admins/{user_id}", "moderation"),
    ("DELETE", "/v1/groups/{id}/admins/{user_id}", "moderation"),
    ("GET", "/v1/groups/{id}/requests", "moderation"),
    (
        "POST",
        "/v1/groups/{id}/requests/{rid}/approve",
        "moderation",
    ),
    (
        "POST",
        "/v1/groups/{id}/requests/{rid}/reject",
        "moderation",
    ),
    ("POST", "/v1/groups/{id}/requests/reject", "moderation"),
    ("PUT", "/v1/groups/{id}/avatar", "moderation"),
    ("DELETE", "/v1/groups/{id}/avatar", "moderation"),
    ("POST", "/v1/groups/{id}/blocks", "moderation"),
    ("DELETE", "/v1/groups/{id}/members/{user_id}", "moderation"),
    ("POST", "/v1/admin/groups/{id}/ban", "moderation"),
    ("POST", "/v1/admin/groups/{id}/unban", "moderation"),
    ("GET", "/v1/admin/groups/flagged", "moderation"),
    ("DELETE", "/v1/admin/groups/{id}/flag", "moderation"),
    ("GET", "/v1/invites/{id}", "moderation"),
    ("DELETE", "/v1/invites/{id}", "moderation"),
    ("GET", "/v1/invites/{id}/qr.png", "moderation"),
    ("GET", "/v1/invites/{id}/qr.svg", "moderation"),
    ("GET", "/v1/invites/{id}/card.png", "moderation"),
    ("GET", "/v1/invites/{id}/analytics", "moderation"),
    ("POST", "/v1/invites/{id}/reset", "moderation"),
    ("POST", "/v1/invites/{id}/burn", "moderation"),
    ("GET", "/v1/groups/{id}/analytics", "moderation"),
    ("GET", "/v1/groups/{id}/invites/{iid}/joins", "moderation"),
    ("POST", "/v1/admin/users/{id}/freeze", "moderation"),
    ("POST", "/v1/admin/users/{id}/unfreeze", "moderation"),
    ("GET", "/v1/admin/blacklist", "moderation"),
    ("PUT", "/v1/admin/blacklist/{user_id}", "moderation"),
    ("DELETE", "/v1/admin/blacklist/{user_id}", "moderation"),
    ("GET", "/v1/admin/webhooks", "webhooks:admin"),
    (
        "GET",
        "/v1/admin/webhooks/{id}/deliveries",
        "webhooks:admin",
    ),
    (
        "POST",
        "/v1/admin/webhooks/deliveries/{id}/resend",
        "webhooks:admin",
    ),
    ("POST", "/v1/admin/webhooks/{id}/enable", "webhooks:admin"),
];

/// The scope `req`'s route needs from a key, if a key may call it at all.
pub fn scope_of(req: &HttpRequest) -> Option<&'static str> {
    let pattern = req.match_pattern()?;
    let method = req.method().as_str();
    ROUTE_SCOPES
        .iter()
        .find(|(m, p, _)| *m == method && *p == pattern)
        .map(|(_, _, s)| *s)
}
