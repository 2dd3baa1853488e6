//! Groups: creation, reading, settings, admins, approvals, blocks, bans.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Admin, Authed, User};
use super::{id, AppState};
use crate::clock::rfc3339;
use crate::domain::group::{
    BanReason, Description, Group, GroupName, GroupStatus, JoinRequest, Member, MemberLimit, Role,
};
use crate::domain::ids::{GroupId, InviteId, RequestId, UserId};
use crate::error::{ApiError, Problem};
use crate::groups::actor::{Caller, GetGroup, GroupInfo, ListMembers, ListRequests};
use crate::groups::decisions::{Block, Decide, SetAdmin, SetBanned, UpdateSettings};
use crate::storage::Counters;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// 1 to 64 characters.
    name: String,
    /// Up to 280 characters.
    description: Option<String>,
    /// 100, 200 or 500 (the group's tier). Default 100.
    member_limit: Option<u32>,
    /// Joins wait for an owner or admin to approve them. Default false.
    approval_required: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    id: GroupId,
    name: String,
    description: String,
    owner_id: UserId,
    member_count: u32,
    member_limit: u32,
    approval_required: bool,
    status: GroupStatus,
    /// Join requests holding a seat while they wait for a decision.
    pending_requests: u32,
    /// The caller's role, if a member.
    my_role: Option<Role>,
    /// Owner's override of the per-group join rate, if any.
    join_rate_per_minute: Option<u32>,
    /// The join page shows a few members' initials.
    preview_members: bool,
    /// Whether the group has an avatar (`PUT /v1/groups/{id}/avatar`).
    has_avatar: bool,
    ban_reason: Option<String>,
    created_at: String,
    /// Shown to the owner, group admins and operators.
    counters: Option<Counters>,
}

impl GroupView {
    fn of(i: GroupInfo) -> Self {
        GroupView {
            id: i.group.id,
            name: i.group.name,
            description: i.group.description,
            owner_id: i.group.owner_id,
            member_count: i.member_count,
            member_limit: i.group.member_limit,
            approval_required: i.group.approval_required,
            status: i.group.status,
            pending_requests: i.pending_count,
            my_role: i.my_role,
            join_rate_per_minute: i.group.join_rate_per_minute,
            preview_members: i.group.preview_members,
            has_avatar: i.group.avatar.is_some(),
            ban_reason: i.group.ban_reason,
            created_at: rfc3339(i.group.created_at),
            counters: i.counters,
        }
    }

    fn new_group(g: Group) -> Self {
        GroupView::of(GroupInfo {
            group: g,
            member_count: 1,
            pending_count: 0,
            my_role: Some(Role::Owner),
            counters: Some(Counters::default()),
        })
    }
}

fn gid(s: &str) -> Result<GroupId, ApiError> {
    id(GroupId::parse, s)
}

/// Create a group; the caller becomes its owner and first member.
#[utoipa::path(
    request_body = NewGroup,
    responses((status = 201, body = GroupView), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[post("/v1/groups")]
pub async fn create_group(
    state: web::Data<AppState>,
    user: User,
    body: web::Json<NewGroup>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let name = GroupName::parse(&b.name).map_err(ApiError::Validation)?;
    let description =
        Description::parse(b.description.as_deref().unwrap_or("")).map_err(ApiError::Validation)?;
    let limit = MemberLimit::parse(b.member_limit).map_err(ApiError::Validation)?;
    let g = state
        .groups
        .create_group(
            user.0,
            name,
            description,
            limit,
            b.approval_required.unwrap_or(false),
        )
        .await?;
    Ok(HttpResponse::Created().json(GroupView::new_group(g)))
}

/// Read a group (any authenticated caller).
#[utoipa::path(
    params(("id" = String, Path, description = "group id")),
    responses((status = 200, body = GroupView), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[get("/v1/groups/{id}")]
pub async fn get_group(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    let info = state.groups.call(g, GetGroup { caller: who.0 }).await?;
    Ok(HttpResponse::Ok().json(GroupView::of(info)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    description: Option<String>,
    approval_required: Option<bool>,
    /// Override of the configured per-group join rate (1 to the configured ceiling).
    join_rate_per_minute: Option<u32>,
    /// Show the initials of up to 9 members on the join page (default false:
    /// an invitation on a poster is public).
    preview_members: Option<bool>,
}

/// Change a group's settings (owner or operator).
#[utoipa::path(
    params(("id" = String, Path, description = "group id")),
    request_body = GroupSettings,
    responses((status = 200, body = GroupView), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[patch("/v1/groups/{id}")]
pub async fn update_group(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<GroupSettings>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    let b = body.into_inner();
    let description = match b.description {
        Some(d) => Some(Description::parse(&d).map_err(ApiError::Validation)?),
        None => None,
    };
    state
        .groups
        .call(
            g,
            UpdateSettings {
                caller: who.0,
                description,
                approval_required: b.approval_required,
                join_rate_per_minute: b.join_rate_per_minute,
                preview_members: b.preview_members,
            },
        )
        .await?;
    let info = state.groups.call(g, GetGroup { caller: who.0 }).await?;
    Ok(HttpResponse::Ok().json(GroupView::of(info)))
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    user_id: UserId,
    role: Role,
    joined_at: String,
    /// The invitation the member joined through, and its creator (lineage).
    via_invite: Option<InviteId>,
    invited_by: Option<UserId>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    members: Vec<MemberView>,
}

/// List members (members and operators only).
#[utoipa::path(
    params(("id" = String, Path, description = "group id")),
    responses((status = 200, body = MemberList), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[get("/v1/groups/{id}/members")]
pub async fn members(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    let list = state.groups.call(g, ListMembers { caller: who.0 }).await?;
    let members = list
        .into_iter()
        .map(|m: Member| MemberView {
            user_id: m.user_id,
            role: m.role,
            joined_at: rfc3339(m.joined_at),
            via_invite: m.via_invite,
            invited_by: m.invited_by,
        })
        .collect();
    Ok(HttpResponse::Ok().json(MemberList { members }))
}

async fn set_admin_flag(
    state: &AppState,
    who: Caller,
    path: &(String, String),
    admin: bool,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path.0)?;
    let user = id(UserId::parse, &path.1)?;
    state
        .groups
        .call(
            g,
            SetAdmin {
                caller: who,
                user,
                admin,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Make a member a group admin (owner only).
#[utoipa::path(
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[put("/v1/groups/{id}/admins/{user_id}")]
pub async fn set_admin(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    set_admin_flag(&state, who.0, &path, true).await
}

/// Return a group admin to plain member (owner only).
#[utoipa::path(
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[delete("/v1/groups/{id}/admins/{user_id}")]
pub async fn unset_admin(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    set_admin_flag(&state, who.0, &path, false).await
}

#[derive(Serialize, ToSchema)]
pub struct RequestView {
    id: RequestId,
    user_id: UserId,
    via_invite: InviteId,
    invited_by: UserId,
    created_at: String,
    expires_at: String,
    /// The join's risk score and reasons (anti-abuse), for the decision.
    risk: Option<crate::domain::group::JoinRisk>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestList {
    requests: Vec<RequestView>,
}

/// Pending join requests (owner, group admins, operators).
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 200, body = RequestList), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "approvals"
)]
#[get("/v1/groups/{id}/requests")]
pub async fn requests(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    let list = state.groups.call(g, ListRequests { caller: who.0 }).await?;
    let requests = list
        .into_iter()
        .map(|r: JoinRequest| RequestView {
            id: r.id,
            user_id: r.user_id,
            via_invite: r.invite_id,
            invited_by: r.invited_by,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            risk: r.risk,
        })
        .collect();
    Ok(HttpResponse::Ok().json(RequestList { requests }))
}

#[derive(Serialize, ToSchema)]
pub struct DecisionView {
    request_id: RequestId,
    user_id: UserId,
    /// `approved` or `rejected`.
    status: &'static str,
}

async fn decide(
    state: &AppState,
    who: Caller,
    path: &(String, String),
    approving: bool,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path.0)?;
    let rid = id(RequestId::parse, &path.1)?;
    let user_id = state
        .groups
        .call(
            g,
            Decide {
                caller: who,
                request_id: rid,
                approve: approving,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(DecisionView {
        request_id: rid,
        user_id,
        status: if approving { "approved" } else { "rejected" },
    }))
}

/// Approve a join request: the requester becomes a member (the seat was reserved).
#[utoipa::path(
    params(("id" = String, Path), ("rid" = String, Path)),
    responses((status = 200, body = DecisionView), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])), tag = "approvals"
)]
#[post("/v1/groups/{id}/requests/{rid}/approve")]
pub async fn approve(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    decide(&state, who.0, &path, true).await
}

/// Reject a join request; its seat is released.
#[utoipa::path(
    params(("id" = String, Path), ("rid" = String, Path)),
    responses((status = 200, body = DecisionView), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])), tag = "approvals"
)]
#[post("/v1/groups/{id}/requests/{rid}/reject")]
pub async fn reject(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    decide(&state, who.0, &path, false).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectManyBody {
    /// The requests to reject (1 to 500).
    request_ids: Option<Vec<RequestId>>,
    /// Or: the pending requests that came through this invitation, oldest
    /// first, 500 at a time (`remaining` says how many are left).
    via_invite: Option<InviteId>,
}

#[derive(Serialize, ToSchema)]
pub struct RejectedView {
    /// Rejected now, oldest first; each requester hears `join_rejected`.
    rejected: Vec<DecisionView>,
    /// Ids that name no pending request (decided, expired, or unknown).
    not_found: Vec<RequestId>,
    /// `via_invite`: requests through it still pending (call again).
    remaining: usize,
}

/// Reject many join requests at once (owner, group admins, operators):
/// named by id, or all those through one invitation (a link that drew a
/// wave of unwanted requests). Their seats come free in one write.
#[utoipa::path(
    params(("id" = String, Path)),
    request_body = RejectManyBody,
    responses(
        (status = 200, body = RejectedView),
        (status = 400, body = Problem, description = "validation_failed: exactly one of `request_ids` (1 to 500) and `via_invite`"),
        (status = 403, body = Problem),
        (status = 404, body = Problem, description = "group_not_found, invite_not_found"),
    ),
    security(("bearer" = [])), tag = "approvals"
)]
#[post("/v1/groups/{id}/requests/reject")]
pub async fn reject_many(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<RejectManyBody>,
) -> Result<HttpResponse, ApiError> {
    use crate::groups::decisions::{Pick, RejectMany, MAX_BULK};
    let g = gid(&path)?;
    let body = body.into_inner();
    let pick = match (body.request_ids, body.via_invite) {
        (Some(ids), None) if (1..=MAX_BULK).contains(&ids.len()) => Pick::Ids(ids),
        (None, Some(iid)) => Pick::ViaInvite(iid),
        _ => {
            return Err(ApiError::validation(format!(
                "give exactly one of `request_ids` (1 to {MAX_BULK}) and `via_invite`"
            )))
        }
    };
    let done = state
        .groups
        .call(
            g,
            RejectMany {
                caller: who.0,
                pick,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(RejectedView {
        rejected: done
            .rejected
            .into_iter()
            .map(|(request_id, user_id)| DecisionView {
                request_id,
                user_id,
                status: "rejected",
            })
            .collect(),
        not_found: done.not_found,
        remaining: done.remaining,
    }))
}

/// Upload the group's avatar (owner, group admins, operators): a PNG or
/// JPEG (`Content-Type` saying which) of at most `limits.max_image_bytes`
/// and 4096x4096 pixels. It is decoded and stored re-encoded as a square
/// JPEG of at most 256x256: the card and the join page show it.
#[utoipa::path(
    params(("id" = String, Path)),
    request_body(content = Vec<u8>, content_type = "image/png", description = "or image/jpeg"),
    responses(
        (status = 204),
        (status = 403, body = Problem),
        (status = 413, body = Problem, description = "payload_too_large"),
        (status = 415, body = Problem, description = "unsupported_media_type: not image/png or image/jpeg"),
        (status = 422, body = Problem, description = "image_too_large (more than 4096x4096), invalid_image (not what its type says, or corrupt)"),
    ),
    security(("bearer" = [])), tag = "groups"
)]
#[put("/v1/groups/{id}/avatar")]
pub async fn put_avatar(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
    who: Authed,
    path: web::Path<String>,
    body: super::body::ImageBody,
) -> Result<HttpResponse, ApiError> {
    use crate::groups::decisions::{MayModerate, SetAvatar};
    let g = gid(&path)?;
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Only those who may set it get an image looked at.
    state.groups.call(g, MayModerate { caller: who.0 }).await?;
    crate::avatar::format_of(&content_type).map_err(ApiError::Image)?;
    let raw = body.0;
    let jpeg = web::block(move || crate::avatar::normalize(&content_type, &raw))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(ApiError::Image)?;
    state
        .groups
        .call(
            g,
            SetAvatar {
                caller: who.0,
                jpeg: Some(jpeg.into()),
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The stored JPEG of `group`'s avatar, if it has one (kept in the image
/// cache, keyed by its hash).
pub(super) fn avatar_jpeg(
    state: &AppState,
    group: &crate::domain::group::Group,
) -> Result<Option<bytes::Bytes>, ApiError> {
    let Some(r) = &group.avatar else {
        return Ok(None);
    };
    let version = u64::from_str_radix(&r.hash, 16).unwrap_or_default();
    let key = (crate::qr::Subject::Avatar(group.id), 9, 0, version);
    if let Some(b) = state.qr_cache.get(&key) {
        return Ok(Some(b));
    }
    // A page or card goes on without an avatar it cannot read whole.
    let jpeg = match state.storage.avatar(group.id, r) {
        Ok(Some(jpeg)) => jpeg,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(group = %group.id, error = %e, "avatar unreadable");
            return Ok(None);
        }
    };
    let b = bytes::Bytes::from(jpeg);
    state.qr_cache.insert(key, b.clone());
    Ok(Some(b))
}

/// Remove the group's avatar (owner, group admins, operators).
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[delete("/v1/groups/{id}/avatar")]
pub async fn delete_avatar(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    state
        .groups
        .call(
            g,
            crate::groups::decisions::SetAvatar {
                caller: who.0,
                jpeg: None,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    user_id: UserId,
}

/// Block a user from the group (removes them if a member, drops their request).
#[utoipa::path(
    params(("id" = String, Path)),
    request_body = BlockBody,
    responses((status = 204), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])), tag = "groups"
)]
#[post("/v1/groups/{id}/blocks")]
pub async fn block(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<BlockBody>,
) -> Result<HttpResponse, ApiError> {
    let g = gid(&path)?;
    // Whether the user exists is told to moderators only (the actor checks
    // the caller first): others must not learn which user ids exist.
    let known_user = state.storage.user(body.user_id)?.is_some();
    state
        .groups
        .call(
            g,
            Block {
                caller: who.0,
                user: body.user_id,
                known_user,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// Shown to members and kept with the group; up to 280 characters.
    reason: String,
}

async fn set_banned(
    state: &AppState,
    g: &str,
    banned: bool,
    reason: BanReason,
) -> Result<HttpResponse, ApiError> {
    let g = gid(g)?;
    state.groups.call(g, SetBanned { banned, reason }).await?;
    let info = state
        .groups
        .call(
            g,
            GetGroup {
                caller: Caller::Admin,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(GroupView::of(info)))
}

/// Ban a group (admin token): joins are refused and every invitation is burned for good.
#[utoipa::path(
    params(("id" = String, Path)),
    request_body = BanBody,
    responses((status = 200, body = GroupView), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/groups/{id}/ban")]
pub async fn ban(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<BanBody>,
) -> Result<HttpResponse, ApiError> {
    let reason = body.into_inner().reason;
    let reason = BanReason::parse(&reason).map_err(ApiError::Validation)?;
    set_banned(&state, &path, true, reason).await
}

/// Lift a ban (admin token). Invitations burned by the ban stay burned.
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 200, body = GroupView), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/groups/{id}/unban")]
pub async fn unban(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_banned(&state, &path, false, BanReason::default()).await
}
