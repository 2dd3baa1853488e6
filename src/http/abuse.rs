//! Anti-abuse routes: the lineage of an
//! invitation, analytics, resetting a stepped-up invitation, burning a
//! re-shared branch, removing members, and the operator's list of flagged
//! groups.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Authed};
use super::{id, AppState};
use crate::clock::rfc3339;
use crate::domain::group::JoinRisk;
use crate::domain::ids::{GroupId, InviteId, UserId};
use crate::domain::risk::{Bucket, Stage};
use crate::error::{ApiError, Problem};
use crate::groups::moderation::{
    BurnBranch, ClearFlag, GetAnalytics, ListJoins, RemoveMember, ResetInvite,
};
use crate::storage::Suspect;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JoinsQuery {
    /// Include the invitations re-shared from this one, at any depth.
    branch: Option<bool>,
    /// Paging: skip this many (default 0), return at most `limit` (1 to 1000, default 200).
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct JoinTraceView {
    user_id: UserId,
    /// The invitation of the branch the user came through.
    via_invite: InviteId,
    /// That invitation's creator.
    invited_by: Option<UserId>,
    /// `member`, `pending`, `removed`, `blocked` or `left` (an invitation's
    /// creator who does not moderate sees `former` for the last three).
    status: &'static str,
    /// When they joined (or asked to).
    at: String,
    left_at: Option<String>,
    /// The risk score and reasons recorded with the join (moderators only).
    risk: Option<JoinRisk>,
}

#[derive(Serialize, ToSchema)]
pub struct JoinTraceList {
    joins: Vec<JoinTraceView>,
    /// Pass as `offset` for the next page; absent on the last one.
    next_offset: Option<usize>,
}

/// Who joined through an invitation (lineage): members, pending requests,
/// and former members (removed, blocked or left). The group's moderators,
/// the invitation's creator, operators.
#[utoipa::path(
    params(("id" = String, Path, description = "group id"), ("iid" = String, Path, description = "invitation id"), JoinsQuery),
    responses((status = 200, body = JoinTraceList), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[get("/v1/groups/{id}/invites/{iid}/joins")]
pub async fn joins(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    q: web::Query<JoinsQuery>,
) -> Result<HttpResponse, ApiError> {
    let g = id(GroupId::parse, &path.0)?;
    let iid = id(InviteId::parse, &path.1)?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("`limit` must be between 1 and 1000"));
    }
    let page = state
        .groups
        .call(
            g,
            ListJoins {
                caller: who.0,
                invite_id: iid,
                branch: q.branch.unwrap_or(false),
                offset: q.offset.unwrap_or(0),
                limit,
            },
        )
        .await?;
    let joins = page
        .joins
        .into_iter()
        .map(|t| JoinTraceView {
            user_id: t.user_id,
            via_invite: t.via_invite,
            invited_by: t.invited_by,
            status: t.status,
            at: rfc3339(t.at),
            left_at: t.left_at.map(rfc3339),
            risk: t.risk,
        })
        .collect();
    Ok(HttpResponse::Ok().json(JoinTraceList {
        joins,
        next_offset: page.next_offset,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// How many minutes back, 1 to 10080 (7 days). Default 60.
    minutes: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Minute {
    /// Start of the minute (RFC 3339).
    at: String,
    #[serde(flatten)]
    counts: Bucket,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsView {
    /// Sums over the window.
    totals: Bucket,
    /// Minutes with activity, oldest first.
    series: Vec<Minute>,
    /// Invitations only: the step-up stage.
    stage: Option<Stage>,
}

async fn analytics(
    state: &AppState,
    who: Authed,
    g: GroupId,
    invite_id: Option<InviteId>,
    minutes: Option<u32>,
) -> Result<HttpResponse, ApiError> {
    let minutes = minutes.unwrap_or(60);
    if !(1..=7 * 24 * 60).contains(&minutes) {
        return Err(ApiError::validation(
            "`minutes` must be between 1 and 10080",
        ));
    }
    let a = state
        .groups
        .call(
            g,
            GetAnalytics {
                caller: who.0,
                invite_id,
                minutes,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(AnalyticsView {
        totals: a.totals,
        series: a
            .series
            .into_iter()
            .map(|(m, counts)| Minute {
                at: rfc3339(i64::from(m) * 60),
                counts,
            })
            .collect(),
        stage: a.stage,
    }))
}

/// An invitation's analytics per minute: scans, attempts, joins, refusals
/// by code, flagged attempts, challenges (moderators, its creator, operators).
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id"), AnalyticsQuery),
    responses((status = 200, body = AnalyticsView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[get("/v1/invites/{id}/analytics")]
pub async fn invite_analytics(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<AnalyticsQuery>,
) -> Result<HttpResponse, ApiError> {
    let iid = id(InviteId::parse, &path)?;
    let g = state.groups.group_by_invite(iid)?;
    analytics(&state, who, g, Some(iid), q.minutes).await
}

/// A group's analytics per minute (moderators, operators).
#[utoipa::path(
    params(("id" = String, Path, description = "group id"), AnalyticsQuery),
    responses((status = 200, body = AnalyticsView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[get("/v1/groups/{id}/analytics")]
pub async fn group_analytics(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<AnalyticsQuery>,
) -> Result<HttpResponse, ApiError> {
    let g = id(GroupId::parse, &path)?;
    analytics(&state, who, g, None, q.minutes).await
}

/// Reset a stepped-up invitation to `open` (moderators, operators).
/// Flagged attempts before the reset no longer count towards its stage.
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id")),
    responses((status = 200, body = super::invites::InviteView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[post("/v1/invites/{id}/reset")]
pub async fn reset_invite(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let iid = id(InviteId::parse, &path)?;
    let g = state.groups.group_by_invite(iid)?;
    let inv = state
        .groups
        .call(
            g,
            ResetInvite {
                caller: who.0,
                invite_id: iid,
            },
        )
        .await?;
    super::invites::invite_response(&state, g, inv).await
}

#[derive(Serialize, ToSchema)]
pub struct Burned {
    /// Every invitation revoked by this burn (the branch's root first).
    revoked: Vec<InviteId>,
}

/// Burn a branch: revoke an invitation and every invitation re-shared from
/// it, at any depth (its creator, moderators, operators). Siblings and the
/// invitation's own parent keep working.
#[utoipa::path(
    params(("id" = String, Path, description = "invitation id")),
    responses((status = 200, body = Burned), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[post("/v1/invites/{id}/burn")]
pub async fn burn_branch(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let iid = id(InviteId::parse, &path)?;
    let g = state.groups.group_by_invite(iid)?;
    let revoked = state
        .groups
        .call(
            g,
            BurnBranch {
                caller: who.0,
                invite_id: iid,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(Burned { revoked }))
}

/// Remove a member (owner, group admins for plain members, operators), or
/// leave (the member themself; not the owner). The lineage is kept.
#[utoipa::path(
    params(("id" = String, Path, description = "group id"), ("user_id" = String, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem, description = "cannot_remove_owner")),
    security(("bearer" = [])), tag = "groups"
)]
#[delete("/v1/groups/{id}/members/{user_id}")]
pub async fn remove_member(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let g = id(GroupId::parse, &path.0)?;
    let user = id(UserId::parse, &path.1)?;
    state
        .groups
        .call(
            g,
            RemoveMember {
                caller: who.0,
                user,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
pub struct FlaggedGroup {
    group_id: GroupId,
    since: String,
    /// The window that listed it: attempts and how many were flagged.
    attempts: u64,
    flagged: u64,
}

#[derive(Serialize, ToSchema)]
pub struct FlaggedGroups {
    groups: Vec<FlaggedGroup>,
}

/// Groups whose recent joins were mostly flagged (operators): their
/// invitation creation is rate limited until cleared.
#[utoipa::path(
    responses((status = 200, body = FlaggedGroups), (status = 401, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[get("/v1/admin/groups/flagged")]
pub async fn flagged_groups(
    state: web::Data<AppState>,
    _: Admin,
) -> Result<HttpResponse, ApiError> {
    let mut list: Vec<Suspect> = state.storage.suspects()?;
    list.sort_by_key(|s| std::cmp::Reverse(s.since));
    let groups = list
        .into_iter()
        .map(|s| FlaggedGroup {
            group_id: s.group_id,
            since: rfc3339(s.since),
            attempts: s.attempts,
            flagged: s.flagged,
        })
        .collect();
    Ok(HttpResponse::Ok().json(FlaggedGroups { groups }))
}

/// Take a group off the flagged list (operators); attempts before now no
/// longer count towards its reputation.
#[utoipa::path(
    params(("id" = String, Path, description = "group id")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "anti-abuse"
)]
#[delete("/v1/admin/groups/{id}/flag")]
pub async fn clear_flag(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let g = id(GroupId::parse, &path)?;
    state.groups.call(g, ClearFlag {}).await?;
    Ok(HttpResponse::NoContent().finish())
}
