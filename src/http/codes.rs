//! Scan codes: create, look at, revoke; and `/s/{code}`, where every code
//! lands (JSON for API clients; a browser is sent on to the code's page
//! with its parameters); and the built-in landing pages.

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Authed;
use super::pages::{render_landing_page, render_message_page};
use super::AppState;
use crate::clock::rfc3339;
use crate::codes::Codes;
use crate::domain::code::{Binding, Tally};
use crate::domain::ids::UserId;
use crate::error::{ApiError, Problem};
use crate::i18n::Lang;

/// The visitor cookie (see docs/pages-and-codes.md: counting scans).
const VISITOR_COOKIE: &str = "qrv";

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCode {
    /// One of `codes.pages` in the config (e.g. `/landing`).
    page: String,
    /// A JSON object of at most `codes.max_params_bytes` (1024) bytes; default `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    params: Value,
    /// The code expires after this long (`codes.min_ttl_seconds` to
    /// `codes.max_ttl_seconds`); without it, it never expires.
    ttl_seconds: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedCode {
    /// 24 base64url characters.
    code: String,
    /// `{public_base_url}/s/{code}`: what the QR code holds.
    url: String,
    /// The PNG of the QR code of `url` (level M), base64 (standard alphabet).
    qr_png: String,
    page: String,
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ResolvedCode {
    code: String,
    page: String,
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    /// Resolutions so far, this one included.
    scans: u64,
    /// Distinct visitors (by cookie, else address and User-Agent), at most 10,000.
    unique_visitors: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CodeView {
    code: String,
    url: String,
    page: String,
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    /// `live`, `expired` or `revoked`.
    status: &'static str,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    /// The user who created it (absent: the operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<UserId>,
    scans: u64,
    unique_visitors: u64,
}

fn resolved(b: &Binding, t: Tally) -> ResolvedCode {
    ResolvedCode {
        code: b.code.clone(),
        page: b.page.clone(),
        params: b.params.clone(),
        created_at: rfc3339(b.created_at),
        expires_at: b.expires_at.map(rfc3339),
        scans: t.scans,
        unique_visitors: t.unique,
    }
}

/// Bind a landing page and its parameters to a new short code. Users may
/// create `codes.user_quota_per_day` codes per business day; the admin token
/// is not limited.
#[utoipa::path(
    request_body = NewCode,
    responses(
        (status = 201, body = CreatedCode),
        (status = 400, body = Problem, description = "validation_failed: unknown page, params not an object or too big, ttl out of range"),
        (status = 401, body = Problem),
        (status = 429, body = Problem, description = "code_quota_exceeded (Retry-After: the next business day)"),
    ),
    security(("bearer" = [])), tag = "codes"
)]
#[post("/v1/codes")]
pub async fn create_code(
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<NewCode>,
) -> Result<HttpResponse, ApiError> {
    if let crate::groups::Caller::User(u) = &who.0 {
        super::not_frozen(&state, *u)?;
    }
    let b = body.into_inner();
    let c = state
        .codes
        .create(&who.0, b.page, b.params, b.ttl_seconds)
        .await?;
    let b = &c.binding;
    Ok(HttpResponse::Created().json(CreatedCode {
        code: b.code.clone(),
        url: state.codes.url(&b.code),
        qr_png: STANDARD.encode(&c.png),
        page: b.page.clone(),
        params: b.params.clone(),
        expires_at: b.expires_at.map(rfc3339),
    }))
}

/// A code with its counters (its creator and the admin token).
#[utoipa::path(
    params(("code" = String, Path)),
    responses(
        (status = 200, body = CodeView),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "code_not_found"),
    ),
    security(("bearer" = [])), tag = "codes"
)]
#[get("/v1/codes/{code}")]
pub async fn get_code(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (id, b) = state.codes.lookup(&path).await?;
    Codes::authorize(&who.0, &b)?;
    let t = state.codes.tally(&id)?;
    Ok(HttpResponse::Ok().json(CodeView {
        code: b.code.clone(),
        url: state.codes.url(&b.code),
        page: b.page.clone(),
        params: b.params.clone(),
        status: b.status(crate::clock::now()).as_str(),
        created_at: rfc3339(b.created_at),
        expires_at: b.expires_at.map(rfc3339),
        revoked_at: b.revoked_at.map(rfc3339),
        creator: b.creator,
        scans: t.scans,
        unique_visitors: t.unique,
    }))
}

/// Revoke a code: it answers `code_revoked` (410) from now on.
#[utoipa::path(
    params(("code" = String, Path)),
    responses(
        (status = 204),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "code_not_found"),
    ),
    security(("bearer" = [])), tag = "codes"
)]
#[delete("/v1/codes/{code}")]
pub async fn revoke_code(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.codes.revoke(&who.0, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub(super) fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Where every code lands. With `Accept: application/json`: the binding
/// and its counters; otherwise a small HTML page showing the parameters.
/// Unknown and forged codes: 404 `code_not_found`; expired or revoked: 410
/// `code_expired` / `code_revoked` (an HTML page for browsers). Each
/// resolution of a live code counts a scan; a visitor without the `qrv`
/// cookie gets one.
#[utoipa::path(
    get,
    path = "/s/{code}",
    params(("code" = String, Path)),
    responses(
        (status = 200, description = "with `Accept: application/json`: the binding", body = ResolvedCode),
        (status = 302, description = "a browser: `Location` is the code's page (under `codes.page_base_url`, or an absolute page on one of `codes.redirect_hosts`) with the parameters as its query string"),
        (status = 403, description = "a browser, when the code's page names a host no longer in `codes.redirect_hosts` (an HTML page)"),
        (status = 404, description = "code_not_found (problem+json, or an HTML page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html"))),
        (status = 410, description = "code_expired, code_revoked (problem+json, or an HTML page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html"))),
    ),
    tag = "codes"
)]
pub async fn resolve(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Served as the default service of the static scope `/s` (see
    // `http::configure`): the router then needs no regex for the hottest
    // route, and the code is the one path segment after `/s/`.
    if req.method() != actix_web::http::Method::GET && req.method() != actix_web::http::Method::HEAD
    {
        return Err(ApiError::MethodNotAllowed);
    }
    let path = req
        .match_info()
        .unprocessed()
        .strip_prefix('/')
        .unwrap_or_default()
        .to_string();
    let json = wants_json(&req);
    let ip = super::forward::client_ip(&req)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (visitor, set_cookie, hash) = state.codes.visitor(cookie(&req, VISITOR_COOKIE), &ip, ua);
    let mut resp = match state.codes.resolve(&path, &hash).await {
        Ok((id, b)) if json => {
            let t = state.codes.tally(&id)?;
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::VARY, "Accept"))
                .json(resolved(&b, t))
        }
        Ok((_, b)) => {
            let c = &state.config.codes;
            let base = c.page_base_url.as_deref().unwrap_or(&state.base_url);
            match crate::domain::code::destination(&b.page, base, &c.redirect_hosts, &b.params) {
                Ok(to) => HttpResponse::Found()
                    .insert_header((header::LOCATION, to))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::VARY, "Accept"))
                    .finish(),
                Err(_) => {
                    tracing::warn!(code = %b.code, "a scan code's page names a host not in codes.redirect_hosts");
                    super::pages::html(
                        actix_web::http::StatusCode::FORBIDDEN,
                        render_message_page(Lang::of(&req), "code-not-allowed"),
                    )
                }
            }
        }
        Err(e) if json => return Ok(e.error_response()),
        Err(e) => {
            let key = match e {
                ApiError::CodeExpired => "code-expired",
                ApiError::CodeRevoked => "code-revoked",
                ApiError::CodeNotFound => "code-missing",
                other => return Err(other),
            };
            return Ok(super::pages::html(
                e.status(),
                render_message_page(Lang::of(&req), key),
            ));
        }
    };
    if set_cookie {
        let secure = if state.base_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        resp.headers_mut().append(
            header::SET_COOKIE,
            header::HeaderValue::from_str(&format!(
                "{VISITOR_COOKIE}={visitor}; Path=/s/; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}"
            ))
            .map_err(|_| ApiError::Internal)?,
        );
    }
    Ok(resp)
}

/// A path page this server answers itself when `codes.page_base_url` is
/// unset, so that a scan lands somewhere out of the box: the page's name
/// and the parameters the scan brought.
pub async fn landing(req: HttpRequest) -> HttpResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .take(100)
        .collect();
    super::pages::html(
        actix_web::http::StatusCode::OK,
        render_landing_page(Lang::of(&req), req.path(), &params),
    )
}
