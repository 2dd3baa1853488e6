//! Scoped API keys for the operator's own services: creating, listing and
//! revoking them. A key acts as the operator on the routes its scopes name
//! (`auth::ROUTE_SCOPES`), and nowhere else. Keys are shown once and stored
//! hashed; the admin token stays for bootstrap.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{Admin, SCOPES};
use super::AppState;
use crate::error::{ApiError, Problem};
use crate::storage::ApiKey;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// 1 to 64 characters, for the operator's eyes.
    name: String,
    /// At least one of: earnings:write, sessions:write, reports:read,
    /// moderation, payouts:admin, codes:write, webhooks:admin, campaigns:write.
    scopes: Vec<String>,
}

/// A key as listed (never the key itself).
#[derive(serde::Serialize, ToSchema)]
pub struct ApiKeyView {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: i64,
    /// The key: present only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl ApiKeyView {
    fn of(k: &ApiKey, key: Option<String>) -> ApiKeyView {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            scopes: k.scopes.clone(),
            created_at: k.created_at,
            key,
        }
    }
}

/// Create a key (admin token only): shown once in this answer, stored hashed.
#[utoipa::path(
    request_body = NewApiKey,
    responses((status = 201, body = ApiKeyView), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/api-keys")]
pub async fn create(
    state: web::Data<AppState>,
    _: Admin,
    body: web::Json<NewApiKey>,
) -> Result<HttpResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::validation("name must be 1 to 64 characters"));
    }
    let mut scopes = body.scopes.clone();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::validation(format!(
            "scopes must be a non-empty list of: {}",
            SCOPES.join(", ")
        )));
    }
    let (k, key) = state.accounts.create_api_key(name, scopes).await?;
    Ok(HttpResponse::Created().json(ApiKeyView::of(&k, Some(key))))
}

/// The keys (admin token only), never the keys themselves.
#[utoipa::path(
    responses((status = 200, body = [ApiKeyView]), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/api-keys")]
pub async fn list(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let mut keys: Vec<ApiKeyView> = state
        .accounts
        .api_keys()?
        .iter()
        .map(|k| ApiKeyView::of(k, None))
        .collect();
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(HttpResponse::Ok().json(keys))
}

/// Revoke a key (admin token only): it answers 401 from now on.
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[delete("/v1/admin/api-keys/{id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.accounts.revoke_api_key(&path).await?;
    Ok(HttpResponse::NoContent().finish())
}
