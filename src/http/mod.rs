//! The HTTP gateway: thin handlers that parse, authorise, call an actor and map
//! the result. Route modules mirror the API sections of DESIGN.md.

pub mod abuse;
pub mod api_keys;
pub mod auth;
pub mod body;
pub mod challenges;
pub mod codes;
pub mod events;
pub mod forward;
pub mod groups;
pub mod invites;
pub mod joins;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod packets;
pub mod pages;
pub mod payouts;
pub mod users;
pub mod wallets;
pub mod webhooks;
pub mod ws;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};
use governor::DefaultKeyedRateLimiter;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::domain::ids::BadId;
use crate::error::ApiError;
use crate::groups::Directory;
use crate::keys::KeyRing;
use crate::push::Hub;
use crate::storage::Storage;

/// Process-wide state shared by every worker.
pub struct AppState {
    pub config: Config,
    pub storage: Storage,
    pub keys: Arc<KeyRing>,
    pub groups: Directory,
    pub wallets: crate::wallets::Wallets,
    /// The payment provider, when configured.
    pub provider: Option<std::sync::Arc<dyn qrgate_provider::adapter::PayoutProvider>>,
    /// `trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether the outbox consumer keeps up (`/healthz`).
    pub consumer: Arc<crate::push::ConsumerHealth>,
    /// Refused provider notifications, and the nonces of accepted ones.
    pub notifications: std::sync::Mutex<payouts::NotifyGuard>,
    /// Refusals of provider notifications per client network.
    pub notify_refusals: DefaultKeyedRateLimiter<IpAddr>,
    /// Client networks whose notifications are refused unread, until when.
    pub notify_blocked: quick_cache::sync::Cache<IpAddr, std::time::Instant>,
    /// Wakes the payout job (a payout was requested).
    pub payout_jobs: Arc<tokio::sync::Notify>,
    pub hub: Hub,
    /// Each user's and group's events, for clients that were away.
    pub feeds: crate::feeds::FeedStore,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Where the embedded payment simulator listens, when it is the provider.
    pub embedded_provider: Option<std::net::SocketAddr>,
    /// When the last forged-notification event was written (unix seconds).
    pub forgery_event_at: std::sync::atomic::AtomicI64,
    pub admin_hash: blake3::Hash,
    pub base_url: String,
    /// Rendered QR images of live invitations: (invite, kind, size) -> bytes.
    pub qr_cache: crate::qr::Cache,
    /// Account creations per client network before a proof of work.
    pub new_user_burst: DefaultKeyedRateLimiter<IpAddr>,
    /// Images fetched without a session, per client network.
    pub image_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub ip_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Red packet claims per user.
    /// Users, sessions, freezes and API keys.
    pub accounts: crate::accounts::Accounts,
    /// WebSocket tickets: blake3(ticket) -> who may open one socket, until when.
    pub ws_tickets: quick_cache::sync::Cache<[u8; 32], ws::Ticket>,
    /// Scan codes: the pool, the binding cache, scan counters.
    pub codes: Arc<crate::codes::Codes>,
    /// Cluster mode: this node, its log and the live nodes.
    pub node: Option<Arc<crate::node::Node>>,
}

/// Routes without path parameters: their metric label is the path itself, which
/// spares the hot path a second routing pass (`match_pattern`).
pub const STATIC_ROUTES: &[&str] = &[
    "/v1/join",
    "/v1/users",
    "/v1/sessions/current",
    "/v1/groups",
    "/v1/keys",
    "/v1/wallet",
    "/v1/wallet/entries",
    "/v1/earnings",
    "/v1/admin/ledger/check",
    "/v1/wallet/link",
    "/v1/wallet/auto-payout",
    "/v1/payouts",
    "/v1/provider/notify",
    "/v1/admin/payouts",
    "/v1/admin/reports/large-transactions",
    "/v1/admin/reconcile",
    "/v1/admin/alerts",
    "/v1/packets",
    "/v1/admin/blacklist",
    "/v1/admin/groups/flagged",
    "/v1/codes",
    "/v1/ws",
    "/v1/ws/ticket",
    "/v1/admin/api-keys",
    "/v1/admin/backup",
    "/healthz",
    "/metrics",
    "/openapi.json",
];

/// The pattern of the hot routes with a path parameter, found from the path
/// alone: `match_pattern` runs the router again (a regex per route) and
/// showed up at 9 % of a scan burst's CPU profile.
pub fn hot_pattern(path: &str) -> Option<&'static str> {
    let one_segment = |rest: &str| !rest.is_empty() && !rest.contains('/');
    if path.strip_prefix("/s/").is_some_and(one_segment) {
        return Some("/s/{code}");
    }
    if path.strip_prefix("/j/").is_some_and(one_segment) {
        return Some("/j/{token}");
    }
    if path.strip_prefix("/p/").is_some_and(one_segment) {
        return Some("/p/{id}");
    }
    path.strip_prefix("/v1/packets/")
        .and_then(|rest| rest.strip_suffix("/claim"))
        .filter(|id| one_segment(id))
        .map(|_| "/v1/packets/{id}/claim")
}

pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.config.limits.max_body_bytes;
        // Path pages of scan codes land here unless they live on another site.
        if state.config.codes.page_base_url.is_none() {
            for page in state
                .config
                .codes
                .pages
                .iter()
                .filter(|p| p.starts_with('/'))
            {
                cfg.route(page, web::get().to(codes::landing));
            }
        }
        cfg.app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |e, _| json_error(e, limit).into()),
            )
            .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                ApiError::InvalidId(format!("bad path parameter: {e}")).into()
            }))
            // The hot route first: actix tries services in order.
            .service(joins::join)
            .service(web::scope("/s").default_service(web::to(codes::resolve)))
            .service(ops::healthz)
            .service(ops::metrics)
            .service(ops::backup)
            .service(openapi::document)
            .service(users::create_user)
            .service(limits::take_here)
            .service(api_keys::create)
            .service(api_keys::list)
            .service(api_keys::revoke)
            .service(ws::ticket)
            .service(users::logout)
            .service(users::revoke_sessions)
            .service(users::issue_session)
            .service(users::freeze_user)
            .service(users::unfreeze_user)
            .service(users::keys)
            .service(groups::create_group)
            .service(groups::get_group)
            .service(groups::update_group)
            .service(groups::members)
            .service(groups::set_admin)
            .service(groups::unset_admin)
            .service(groups::requests)
            .service(groups::approve)
            .service(groups::reject)
            .service(groups::reject_many)
            .service(groups::put_avatar)
            .service(groups::delete_avatar)
            .service(groups::block)
            .service(groups::ban)
            .service(groups::unban)
            .service(invites::create_invite)
            .service(invites::get_invite)
            .service(invites::revoke_invite)
            .service(invites::qr_png)
            .service(invites::qr_svg)
            .service(invites::card_png)
            .service(wallets::wallet)
            .service(wallets::entries)
            .service(wallets::earn)
            .service(wallets::ledger_check)
            .service(payouts::link_start)
            .service(payouts::link_callback)
            .service(payouts::link)
            .service(payouts::link_status)
            .service(payouts::reconciliation)
            .service(payouts::set_auto_payout)
            .service(payouts::create_payout)
            .service(payouts::list_payouts)
            .service(payouts::get_payout)
            .service(payouts::provider_notify)
            .service(payouts::admin_payouts)
            .service(payouts::large_transactions)
            .service(payouts::set_kyc)
            .service(payouts::reconcile)
            .service(payouts::alerts)
            .service(packets::create_packet)
            .service(packets::get_packet)
            .service(packets::qr_png)
            .service(packets::claim)
            .service(packets::blacklist_add)
            .service(packets::blacklist_remove)
            .service(packets::blacklist_list)
            .service(pages::invite_page)
            .service(pages::packet_page)
            .service(pages::payout_confirm_page)
            .service(codes::create_code)
            .service(codes::get_code)
            .service(codes::revoke_code)
            .service(ws::ws)
            .service(events::events)
            .service(webhooks::list)
            .service(webhooks::deliveries)
            .service(webhooks::resend)
            .service(webhooks::enable)
            .service(challenges::answer_challenge)
            .service(abuse::joins)
            .service(abuse::invite_analytics)
            .service(abuse::group_analytics)
            .service(abuse::reset_invite)
            .service(abuse::burn_branch)
            .service(abuse::remove_member)
            .service(abuse::flagged_groups)
            .service(abuse::clear_flag)
            .default_service(web::to(not_found));
    }
}

/// No route took the request: 405 if the path is a route (another method), else 404.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.match_pattern().is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    Err(ApiError::RouteNotFound)
}

fn json_error(e: JsonPayloadError, limit: usize) -> ApiError {
    match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge(limit)
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => ApiError::InvalidJson(e.to_string()),
        other => ApiError::InvalidJson(other.to_string()),
    }
}

fn query_error(e: QueryPayloadError) -> ApiError {
    ApiError::validation(format!("bad query string: {e}"))
}

/// The keyed hash of the client's `X-Device-Id`, if it sent one (a risk
/// signal of joins and claims; the raw id is never kept).
pub fn device(state: &AppState, req: &HttpRequest) -> Result<Option<[u8; 16]>, ApiError> {
    let Some(v) = req.headers().get("x-device-id") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::validation("`X-Device-Id` must be 1 to 128 printable ASCII characters")
        })?;
    Ok(Some(state.keys.device_hash(s)))
}

/// Parse a path id, mapping a malformed one to `invalid_id`.
/// Refuse a frozen user (403 `account_frozen`).
pub fn not_frozen(state: &AppState, u: crate::domain::ids::UserId) -> Result<(), ApiError> {
    if state.accounts.is_frozen(u)? {
        return Err(ApiError::AccountFrozen);
    }
    Ok(())
}

pub fn id<T>(parse: fn(&str) -> Result<T, BadId>, s: &str) -> Result<T, ApiError> {
    parse(s).map_err(|e| ApiError::InvalidId(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::hot_pattern;

    #[test]
    fn hot_patterns_match_exactly_one_segment() {
        assert_eq!(hot_pattern("/s/abc"), Some("/s/{code}"));
        assert_eq!(hot_pattern("/s/"), None);
        assert_eq!(hot_pattern("/s/a/b"), None);
        assert_eq!(hot_pattern("/j/tok"), Some("/j/{token}"));
        assert_eq!(hot_pattern("/p/rp_x"), Some("/p/{id}"));
        assert_eq!(
            hot_pattern("/v1/packets/rp_x/claim"),
            Some("/v1/packets/{id}/claim")
        );
        assert_eq!(hot_pattern("/v1/packets//claim"), None);
        assert_eq!(hot_pattern("/v1/packets/a/b/claim"), None);
        assert_eq!(hot_pattern("/v1/packets/rp_x"), None);
    }
}
