//! The operator's view of webhooks: endpoints, their deliveries, a resend,
//! and enabling an endpoint its receiver disabled (410).

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Admin;
use super::AppState;
use crate::clock::rfc3339;
use crate::domain::webhook::{self as rules, State};
use crate::error::{ApiError, Problem};
use crate::storage::webhooks::{Done, Queued};
use crate::webhooks::Endpoint;

#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    id: String,
    url: String,
    events: Vec<String>,
    enabled: bool,
    /// Why it is disabled (its receiver answered 410), and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
    /// Deliveries waiting on this node, and their bytes on disk.
    queued: u64,
    queued_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    endpoints: Vec<EndpointView>,
}

/// The configured webhook endpoints (secrets are never shown).
#[utoipa::path(
    responses((status = 200, body = EndpointList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "webhooks"
)]
#[get("/v1/admin/webhooks")]
pub async fn list(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let hooks = &state.webhooks;
    let mut endpoints = Vec::with_capacity(hooks.endpoints.len());
    for ep in &hooks.endpoints {
        let disabled = hooks.disabled(&ep.id)?;
        let (queued, queued_bytes) = hooks.queued(&ep.id);
        endpoints.push(EndpointView {
            id: ep.id.to_string(),
            url: shown_url(&ep.url),
            events: ep.events.clone(),
            enabled: disabled.is_none(),
            disabled_reason: disabled.as_ref().map(|d| d.reason.clone()),
            disabled_at: disabled.map(|d| rfc3339(d.at)),
            queued,
            queued_bytes,
        });
    }
    Ok(HttpResponse::Ok().json(EndpointList { endpoints }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered`, `failed` or `dropped`; omitted: every state.
    state: Option<String>,
    /// Deliveries after this event seq (a page's `next_after`).
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    /// For the resend route: `<endpoint>.<seq>`.
    id: String,
    /// The `webhook-id` header it is sent with (the same on every attempt).
    webhook_id: String,
    #[serde(rename = "type")]
    ty: String,
    state: State,
    attempts: u32,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    /// Pass as `after` for the next page (absent: this was the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// An endpoint's URL without its query (which may carry a token).
fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

fn queued_view(ep: &str, seq: u64, q: Queued) -> DeliveryView {
    DeliveryView {
        id: rules::delivery_id(ep, seq),
        webhook_id: rules::message_id(seq),
        ty: q.ty,
        state: State::Pending,
        attempts: q.tries.attempts,
        created_at: rfc3339(q.created),
        next_attempt_at: Some(rfc3339(q.tries.next_at)),
        ended_at: None,
        last_status: q.tries.last_status,
        last_error: q.tries.last_error,
    }
}

fn done_view(ep: &str, seq: u64, d: Done) -> DeliveryView {
    DeliveryView {
        id: rules::delivery_id(ep, seq),
        webhook_id: rules::message_id(seq),
        ty: d.ty,
        state: d.state,
        attempts: d.attempts,
        created_at: rfc3339(d.created),
        next_attempt_at: None,
        ended_at: Some(rfc3339(d.at)),
        last_status: d.last_status,
        last_error: d.last_error,
    }
}

fn endpoint<'a>(state: &'a AppState, id: &str) -> Result<&'a std::sync::Arc<Endpoint>, ApiError> {
    state.webhooks.endpoint(id).ok_or(ApiError::WebhookNotFound)
}

/// An endpoint's deliveries, oldest first (pending ones with their next
/// attempt; done ones for `webhook_delivery.keep_days`).
#[utoipa::path(
    params(("id" = String, Path, description = "endpoint id"), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "webhooks"
)]
#[get("/v1/admin/webhooks/{id}/deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let ep = endpoint(&state, &path)?;
    let want = match q.state.as_deref() {
        None => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            ApiError::validation("state must be pending, delivered, failed or dropped")
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be 1 to 1000"));
    }
    let mut out: Vec<(u64, DeliveryView)> = Vec::new();
    if want.is_none_or(|s| s == State::Pending) {
        for (seq, d) in state.storage.webhook_queue(&ep.id, q.after, limit)? {
            out.push((seq, queued_view(&ep.id, seq, d)));
        }
    }
    if want != Some(State::Pending) {
        // Done ones of other states are skipped: read on until a page fills.
        let mut after = q.after;
        loop {
            let page = state.storage.webhook_done_list(&ep.id, after, limit)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            let full = page.len() == limit;
            for (seq, d) in page {
                if want.is_none_or(|s| s == d.state) {
                    out.push((seq, done_view(&ep.id, seq, d)));
                }
            }
            if !full || out.len() >= limit {
                break;
            }
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    out.truncate(limit);
    let next_after = (out.len() == limit)
        .then(|| out.last().map(|(seq, _)| *seq))
        .flatten();
    Ok(HttpResponse::Ok().json(DeliveryList {
        deliveries: out.into_iter().map(|(_, v)| v).collect(),
        next_after,
    }))
}

/// Send a delivery again at once (a failed or dropped one, or one waiting
/// for its next attempt): it gets a new retry window and keeps its
/// `webhook-id`, so a receiver that had it dedupes it.
#[utoipa::path(
    params(("id" = String, Path, description = "delivery id (`<endpoint>.<seq>`)")),
    responses((status = 202), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "webhooks"
)]
#[post("/v1/admin/webhooks/deliveries/{id}/resend")]
pub async fn resend(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (ep, seq) = rules::parse_delivery_id(&path).ok_or(ApiError::DeliveryNotFound)?;
    let ep = endpoint(&state, ep).map_err(|_| ApiError::DeliveryNotFound)?;
    if !state.webhooks.resend(ep, seq).await? {
        return Err(ApiError::DeliveryNotFound);
    }
    Ok(HttpResponse::Accepted().finish())
}

/// Enable an endpoint again (its receiver had answered 410 Gone): what it
/// queued meanwhile goes out in order.
#[utoipa::path(
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "webhooks"
)]
#[post("/v1/admin/webhooks/{id}/enable")]
pub async fn enable(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ep = endpoint(&state, &path)?;
    state.webhooks.enable(ep).await?;
    Ok(HttpResponse::NoContent().finish())
}
