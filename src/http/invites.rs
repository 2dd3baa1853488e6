//! Invitations: create, read, revoke, and their QR images and cards.

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Authed, User};
use super::{id, AppState};
use crate::card;
use crate::clock::{now, rfc3339};
use crate::domain::group::{parse_max_uses, parse_ttl, GroupStatus, Invite};
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::domain::join::Refusal;
use crate::domain::risk::Stage;
use crate::error::{ApiError, Problem};
use crate::groups::actor::{Caller, GetInvite};
use crate::groups::invites::{CreateInvite, RevokeInvite};
use crate::i18n::Lang;
use crate::metrics;
use crate::qr;
use crate::storage::Counters;

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// Validity in seconds, 1 to 604800 (7 days, also the default).
    ttl_seconds: Option<i64>,
    /// How many joins the invitation admits; unlimited when absent.
    max_uses: Option<u32>,
    /// Re-share a live invitation of the same group: the new one is its
    /// child (lineage), so a leak traces to one branch and
    /// `POST /v1/invites/{id}/burn` revokes the branch at once.
    parent_id: Option<InviteId>,
}

#[derive(Serialize, ToSchema)]
pub struct InviteView {
    /// The invitation this one re-shares, if any, and its depth in the chain (0: a root).
    parent_id: Option<InviteId>,
    depth: u8,
    /// Step-up stage: `open`, `challenge`, `approval` or `paused`.
    stage: Stage,
    id: InviteId,
    group_id: GroupId,
    creator_id: UserId,
    /// `base64url(message || ed25519 signature)`; see docs/api.md for the layout.
    token: String,
    /// `{public_base_url}/j/{token}`, the content of the QR code.
    url: String,
    created_at: String,
    expires_at: String,
    max_uses: Option<u32>,
    uses: u32,
    revoked: bool,
    /// `live`, `expired`, `revoked`, `exhausted` or `burned` (by a group ban).
    state: &'static str,
    /// Outcomes through this invitation (kept by the outbox consumer).
    counters: Option<Counters>,
}

fn state_of(i: &Invite, group_epoch: u32, banned: bool, now: i64) -> &'static str {
    if i.revoked {
        "revoked"
    } else if now >= i.expires_at {
        "expired"
    } else if banned || i.epoch != group_epoch {
        "burned"
    } else if i.max_uses.is_some_and(|m| i.uses >= m) {
        "exhausted"
    } else {
        "live"
    }
}

fn view(
    state: &AppState,
    i: Invite,
    group_epoch: u32,
    banned: bool,
    counters: Option<Counters>,
) -> InviteView {
    InviteView {
        parent_id: i.parent_id,
        depth: i.depth,
        stage: i.stage,
        state: state_of(&i, group_epoch, banned, now()),
        url: format!("{}/j/{}", state.base_url, i.token),
        id: i.id,
        group_id: i.group_id,
        creator_id: i.creator_id,
        token: i.token,
        created_at: rfc3339(i.created_at),
        expires_at: rfc3339(i.expires_at),
        max_uses: i.max_uses,
        uses: i.uses,
        revoked: i.revoked,
        counters,
    }
}

/// Create an invitation (members of the group).
#[utoipa::path(
    params(("id" = String, Path, description = "group id")),
    request_body = NewInvite,
    responses((status = 201, body = InviteView), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[post("/v1/groups/{id}/invites")]
pub async fn create_invite(
    state: web::Data<AppState>,
    user: User,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
    body: super::body::RawBody,
) -> Result<HttpResponse, ApiError> {
    let g = id(GroupId::parse, &path)?;
    // The body is optional (all fields have defaults), but a body that is
    // present must be valid: a typo must not silently mint a 7-day invitation.
    let b: NewInvite = optional_json(&req, &body)?;
    let ttl_seconds = parse_ttl(b.ttl_seconds).map_err(ApiError::Validation)?;
    let max_uses = parse_max_uses(b.max_uses).map_err(ApiError::Validation)?;
    let inv = state
        .groups
        .call(
            g,
            CreateInvite {
                creator: user.0,
                ttl_seconds,
                max_uses,
                parent: b.parent_id,
            },
        )
        .await?;
    let epoch = inv.epoch;
    Ok(HttpResponse::Created().json(view(&state, inv, epoch, false, None)))
}

/// Parse an optional JSON body: empty means defaults; otherwise it must be JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

async fn load_invite(
    state: &AppState,
    caller: Caller,
    iid: &str,
) -> Result<(Invite, crate::domain::group::Group), ApiError> {
    let iid = id(InviteId::parse, iid)?;
    let g = state.groups.group_by_invite(iid)?;
    state
        .groups
        .call(
            g,
            GetInvite {
                caller,
                invite_id: iid,
            },
        )
        .await
}

/// Read an invitation with its use counters (members of its group, operators).
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id")),
    responses((status = 200, body = InviteView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[get("/v1/invites/{id}")]
pub async fn get_invite(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (inv, group) = load_invite(&state, who.0, &path).await?;
    with_counters(&state, inv, &group)
}

fn with_counters(
    state: &AppState,
    inv: Invite,
    group: &crate::domain::group::Group,
) -> Result<HttpResponse, ApiError> {
    let counters = state
        .groups
        .shared()
        .counters
        .invite(&state.storage, inv.id)?;
    let banned = group.status == GroupStatus::Banned;
    let mut inv = inv;
    if inv.max_uses.is_none() {
        // Unlimited invitations do not store their count with each join.
        inv.uses = u32::try_from(counters.uses).unwrap_or(u32::MAX);
    }
    Ok(HttpResponse::Ok().json(view(state, inv, group.epoch, banned, Some(counters))))
}

/// An invitation as `GET /v1/invites/{id}` shows it, after a change.
pub async fn invite_response(
    state: &AppState,
    g: GroupId,
    inv: Invite,
) -> Result<HttpResponse, ApiError> {
    let (_, group) = state
        .groups
        .call(
            g,
            GetInvite {
                caller: Caller::Admin,
                invite_id: inv.id,
            },
        )
        .await?;
    with_counters(state, inv, &group)
}

/// Revoke an invitation (its creator, the group's owner or admins, operators).
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[delete("/v1/invites/{id}")]
pub async fn revoke_invite(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let iid = id(InviteId::parse, &path)?;
    let g = state.groups.group_by_invite(iid)?;
    state
        .groups
        .call(
            g,
            RevokeInvite {
                caller: who.0,
                invite_id: iid,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SizeQuery {
    /// Image width and height in pixels, 128 to 2048 (default 512).
    size: Option<u32>,
}

#[derive(Clone, Copy)]
enum Kind {
    Png = 0,
    Svg = 1,
    Card = 2,
}

async fn image(
    state: web::Data<AppState>,
    who: Authed,
    iid: &str,
    kind: Kind,
    size: Option<u32>,
    lang: Lang,
) -> Result<HttpResponse, ApiError> {
    let size =
        qr::requested_size(size, qr::MAX_SIZE).map_err(|e| ApiError::validation(e.to_string()))?;
    let (inv, group) = load_invite(&state, who.0, iid).await?;
    match state_of(
        &inv,
        group.epoch,
        group.status == GroupStatus::Banned,
        now(),
    ) {
        "revoked" | "burned" => return Err(Refusal::Revoked.into()),
        "expired" => return Err(Refusal::Expired.into()),
        _ => {}
    }
    let content_type = match kind {
        Kind::Svg => "image/svg+xml",
        Kind::Png | Kind::Card => "image/png",
    };
    // A card shows more than the code: the group's name, description and
    // avatar, and its validity in the reader's language.
    let footer = lang.validity(now(), inv.expires_at, state.config.payouts.day_offset_hours);
    let (size, variant) = match kind {
        Kind::Card => {
            let mut hasher = blake3::Hasher::new();
            for part in [&group.name, &group.description, &footer] {
                hasher.update(part.as_bytes());
                hasher.update(b"\0");
            }
            hasher.update(
                group
                    .avatar
                    .as_ref()
                    .map_or(&b""[..], |a| a.hash.as_bytes()),
            );
            let h = hasher.finalize();
            let mut v = [0u8; 8];
            v.copy_from_slice(&h.as_bytes()[..8]);
            (0, u64::from_le_bytes(v))
        }
        Kind::Png | Kind::Svg => (size, 0),
    };
    let key = (qr::Subject::Invite(inv.id), kind as u8, size, variant);
    let bytes = match state.qr_cache.get(&key) {
        Some(b) => {
            metrics::QR_RENDERS.with_label_values(&["hit"]).inc();
            b
        }
        None => {
            metrics::QR_RENDERS.with_label_values(&["miss"]).inc();
            let url = format!("{}/j/{}", state.base_url, inv.token);
            let avatar = match kind {
                Kind::Card => super::groups::avatar_jpeg(&state, &group)?,
                Kind::Png | Kind::Svg => None,
            };
            let b: Bytes = web::block(move || -> Result<Bytes, qr::QrError> {
                let avatar = avatar.as_deref().and_then(crate::avatar::decode);
                Ok(match kind {
                    Kind::Png => qr::render_png(&url, size)?.into(),
                    Kind::Svg => qr::render_svg(&url, size)?.into(),
                    Kind::Card => card::render(
                        &url,
                        &card::Card {
                            title: &group.name,
                            subtitle: &group.description,
                            footer: &footer,
                            background: card_colour(group.id),
                            avatar: avatar.as_ref(),
                        },
                    )?
                    .into(),
                })
            })
            .await
            .map_err(|_| ApiError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "QR rendering failed");
                ApiError::Internal
            })?;
            state.qr_cache.insert(key, b.clone());
            b
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .body(bytes))
}

/// A soft background colour derived from the group id, so cards of one group look alike.
fn card_colour(g: GroupId) -> [u8; 3] {
    let h = blake3::hash(g.as_bytes());
    let b = h.as_bytes();
    [160 + b[0] % 96, 160 + b[1] % 96, 160 + b[2] % 96]
}

/// QR code (PNG, error correction M) of the invitation's URL.
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id"), SizeQuery),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 410, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[get("/v1/invites/{id}/qr.png")]
pub async fn qr_png(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<SizeQuery>,
) -> Result<HttpResponse, ApiError> {
    image(state, who, &path, Kind::Png, q.size, Lang::En).await
}

/// QR code (SVG, error correction M) of the invitation's URL.
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id"), SizeQuery),
    responses((status = 200, content_type = "image/svg+xml", description = "SVG"), (status = 410, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[get("/v1/invites/{id}/qr.svg")]
pub async fn qr_svg(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<SizeQuery>,
) -> Result<HttpResponse, ApiError> {
    image(state, who, &path, Kind::Svg, q.size, Lang::En).await
}

/// A branded invitation card (PNG, 600x900): the group's avatar, name and
/// description, the QR code, and how long it is valid, in the reader's
/// language (`Accept-Language`, or `?lang=zh`/`en`).
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id")),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 410, body = Problem)),
    security(("bearer" = [])), tag = "invitations"
)]
#[get("/v1/invites/{id}/card.png")]
pub async fn card_png(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    image(state, who, &path, Kind::Card, None, Lang::of(&req)).await
}
