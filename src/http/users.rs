//! Users and signing keys.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{auth, now, AppState};
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
    let (token, hash) = auth::new_session();
    let mut w = WriteSet::new();
    w.user(&user, &hash);
    state.storage.commit(w).await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user_id: user.id,
        token,
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
