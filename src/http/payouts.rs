//! Payouts, the large-transaction report and KYC flags.

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, User};
use super::{id, AppState};
use crate::clock::{rfc3339, Day};
use crate::domain::forgeries::Rejection;
use crate::domain::ids::{PayoutId, UserId};
use crate::domain::payout::{Confirm, Payout, PayoutState};
use crate::error::{ApiError, Problem};
use crate::metrics;
use crate::storage::{LargeTransaction, Link};
use crate::wallets::runner;
use qrgate_provider::client::{ClientError, NotifyHeaders, TransferStatus};

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayout {
    /// In fen, within the configured payout limits.
    amount: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PayoutView {
    id: PayoutId,
    status: PayoutState,
    amount: u64,
    /// Our number for this transfer at the provider (stable across retries).
    partner_trade_no: String,
    /// The provider's number, once it accepted the transfer.
    transfer_bill_no: Option<String>,
    fail_reason: Option<String>,
    automatic: bool,
    created_at: String,
    updated_at: String,
    /// While `awaiting_confirmation`: what the app hands to WeChat for the
    /// user to confirm (`wx.requestMerchantTransfer({mchId, appId,
    /// package})`), or open `/payouts/{id}/confirm` in WeChat.
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm: Option<Confirm>,
    /// Until when the user may confirm; later the transfer is cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm_by: Option<String>,
}

impl PayoutView {
    pub fn new(p: &Payout, config: &crate::config::Config) -> Self {
        let (mch_id, app_id) = config.merchant_ids();
        let confirm = crate::domain::payout::confirm_of(p, mch_id, app_id);
        PayoutView {
            id: p.id,
            status: p.state,
            amount: p.amount,
            partner_trade_no: p.partner_trade_no.clone(),
            transfer_bill_no: p.transfer_bill_no.clone(),
            fail_reason: p.fail_reason.clone(),
            automatic: p.automatic,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            confirm_by: confirm.as_ref().and(p.confirm_by).map(rfc3339),
            confirm,
        }
    }
}

/// The `Idempotency-Key` header: 1 to 128 printable ASCII characters.
pub fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let v = req
        .headers()
        .get("Idempotency-Key")
        .ok_or(ApiError::IdempotencyKeyRequired)?
        .to_str()
        .map_err(|_| ApiError::IdempotencyKeyRequired)?;
    if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::IdempotencyKeyRequired);
    }
    Ok(v.to_string())
}

/// Ask for a payout of wallet money to the linked payment account. Needs an
/// `Idempotency-Key`: the same key and body return the original payout (200),
/// another body 422 `idempotency_key_reused`. The amount is held at once;
/// the transfer to the provider happens in the background and its progress
/// arrives as `payout_updated` on the WebSocket.
#[utoipa::path(
    request_body = NewPayout,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 202, body = PayoutView), (status = 200, body = PayoutView),
        (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)
    ),
    security(("bearer" = [])), tag = "payouts"
)]
#[post("/v1/payouts")]
pub async fn create_payout(
    state: web::Data<AppState>,
    user: User,
    req: HttpRequest,
    body: web::Json<NewPayout>,
) -> Result<HttpResponse, ApiError> {
    super::not_frozen(&state, user.0)?;
    // Every check (the key, the body, the account, the limits) answers
    // before 503 `provider_not_configured`, which the wallet gives last.
    let key = idempotency_key(&req)?;
    let canonical = serde_json::to_vec(&body.0).map_err(|_| ApiError::Internal)?;
    let request_hash = *blake3::hash(&canonical).as_bytes();
    let r = state
        .wallets
        .request_payout(user.0, key, request_hash, body.amount)
        .await?;
    state.payout_jobs.notify_one();
    let view = PayoutView::new(&r.payout, &state.config);
    Ok(if r.fresh {
        HttpResponse::Accepted().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// One of the caller's payouts (another user's answers 404).
#[utoipa::path(
    params(("id" = String, Path)),
    responses((status = 200, body = PayoutView), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "payouts"
)]
#[get("/v1/payouts/{id}")]
pub async fn get_payout(
    state: web::Data<AppState>,
    user: User,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pid = id(PayoutId::parse, &path)?;
    match state.wallets.payout(pid)? {
        Some(p) if p.user == user.0 => {
            Ok(HttpResponse::Ok().json(PayoutView::new(&p, &state.config)))
        }
        _ => Err(ApiError::PayoutNotFound),
    }
}

#[derive(Serialize, ToSchema)]
pub struct PayoutList {
    payouts: Vec<PayoutView>,
}

/// The caller's latest payouts (at most 100), newest first.
#[utoipa::path(
    responses((status = 200, body = PayoutList)),
    security(("bearer" = [])), tag = "payouts"
)]
#[get("/v1/payouts")]
pub async fn list_payouts(
    state: web::Data<AppState>,
    user: User,
) -> Result<HttpResponse, ApiError> {
    let payouts = state.storage.user_payouts(user.0, 100)?;
    Ok(HttpResponse::Ok().json(PayoutList {
        payouts: payouts
            .iter()
            .map(|p| PayoutView::new(p, &state.config))
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminPayoutsQuery {
    /// `failed`, `stuck` (processing longer than `payouts.stuck_after_seconds`)
    /// or `open` (not final).
    filter: String,
}

#[derive(Serialize, ToSchema)]
pub struct AdminPayout {
    #[serde(flatten)]
    payout: PayoutView,
    user_id: UserId,
    attempts: u32,
    last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminPayoutList {
    payouts: Vec<AdminPayout>,
}

/// Payouts that need an operator's eye (admin token).
#[utoipa::path(
    params(AdminPayoutsQuery),
    responses((status = 200, body = AdminPayoutList), (status = 400, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/payouts")]
pub async fn admin_payouts(
    state: web::Data<AppState>,
    _admin: Admin,
    q: web::Query<AdminPayoutsQuery>,
) -> Result<HttpResponse, ApiError> {
    let now = crate::clock::now();
    let stuck_after = state.config.payouts.stuck_after_seconds;
    let storage = state.storage.clone();
    let filter = q.filter.clone();
    let selected: Vec<Payout> = match filter.as_str() {
        "failed" => web::block(move || storage.all_payouts())
            .await
            .map_err(|_| ApiError::Internal)??
            .into_iter()
            .filter(|p| p.state == PayoutState::Failed)
            .collect(),
        "stuck" | "open" => {
            let stuck = filter == "stuck";
            web::block(move || storage.open_payouts())
                .await
                .map_err(|_| ApiError::Internal)??
                .into_iter()
                .filter(|p| !stuck || crate::domain::payout::is_stuck(p, now, stuck_after))
                .collect()
        }
        _ => return Err(ApiError::validation("filter must be failed, stuck or open")),
    };
    Ok(HttpResponse::Ok().json(AdminPayoutList {
        payouts: selected
            .iter()
            .map(|p| admin_view(p, &state.config))
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// First business day, `YYYY-MM-DD`.
    from: String,
    /// Last business day, `YYYY-MM-DD` (default: `from`).
    to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LargeTransactionReport {
    transactions: Vec<LargeTransaction>,
}

fn parse_day(s: &str) -> Result<Day, ApiError> {
    Day::parse(s).map_err(ApiError::Validation)
}

/// Transfers and daily payout totals at or above
/// `payouts.large_transaction_fen` (admin token).
#[utoipa::path(
    params(ReportQuery),
    responses((status = 200, body = LargeTransactionReport), (status = 400, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/reports/large-transactions")]
pub async fn large_transactions(
    state: web::Data<AppState>,
    _admin: Admin,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = parse_day(&q.from)?;
    let to = match &q.to {
        Some(t) => parse_day(t)?,
        None => from,
    };
    Ok(HttpResponse::Ok().json(LargeTransactionReport {
        transactions: state
            .storage
            .large_transactions(&from.to_string(), &to.to_string())?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycBody {
    verified: bool,
    /// The verified real name (1 to 64 characters), for transfers that
    /// must name the payee. Stored sealed; never shown again.
    real_name: Option<String>,
}

/// Record whether a user's identity is verified (admin token), with the
/// verified real name when the operator has it. Not verified drops the name.
#[utoipa::path(
    params(("id" = String, Path)),
    request_body = KycBody,
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/users/{id}/kyc")]
pub async fn set_kyc(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<KycBody>,
) -> Result<HttpResponse, ApiError> {
    let uid = id(UserId::parse, &path)?;
    let sealed = match body.real_name.as_deref().map(str::trim) {
        None => None,
        Some(n) if (1..=64).contains(&n.chars().count()) && !n.chars().any(char::is_control) => {
            if !body.verified {
                return Err(ApiError::validation(
                    "`real_name` goes with `verified: true`",
                ));
            }
            Some(state.keys.seal(n, uid, "real_name").map_err(|e| {
                tracing::error!(error = %e, "sealing a real name failed");
                ApiError::Internal
            })?)
        }
        Some(_) => {
            return Err(ApiError::validation(
                "`real_name` must be 1 to 64 characters, none of them control characters",
            ))
        }
    };
    state.accounts.set_kyc(uid, body.verified, sealed).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The OAuth authorization code the provider gave the user's app.
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct LinkView {
    linked: bool,
    openid: String,
    linked_at: String,
}

/// Link the caller's payment account: the server exchanges the OAuth code
/// with the provider and keeps the tokens sealed. Payouts go to this account.
/// Changing it to another account is refused while a payout is open (409
/// `link_change_blocked`), tells the user (`link_changed`), and holds
/// payouts for `payouts.relink_cooling_hours` (403 `payout_cooling_off`).
#[utoipa::path(
    request_body = LinkBody,
    responses(
        (status = 200, body = LinkView), (status = 400, body = Problem),
        (status = 409, body = Problem, description = "link_change_blocked"),
        (status = 502, body = Problem), (status = 503, body = Problem)
    ),
    security(("bearer" = [])), tag = "payouts"
)]
#[post("/v1/wallet/link")]
pub async fn link(
    state: web::Data<AppState>,
    user: User,
    body: web::Json<LinkBody>,
) -> Result<HttpResponse, ApiError> {
    let view = link_user(&state, user.0, &body.code).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Exchange `code` and keep `user`'s link (both link routes).
async fn link_user(state: &AppState, user: UserId, code: &str) -> Result<LinkView, ApiError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 256 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::validation(
            "code must be 1 to 256 printable ASCII characters",
        ));
    }
    let client = state
        .provider
        .as_ref()
        .ok_or(ApiError::ProviderNotConfigured)?;
    let tokens = client.exchange_code(code).await.map_err(provider_error)?;
    let now = crate::clock::now();
    let record = Link {
        openid: tokens.openid.clone(),
        access_token: state
            .keys
            .seal(&tokens.access_token, user, "access_token")
            .map_err(seal_error)?,
        refresh_token: state
            .keys
            .seal(&tokens.refresh_token, user, "refresh_token")
            .map_err(seal_error)?,
        expires_at: now.saturating_add(tokens.expires_in),
        linked_at: now,
        refreshed_at: now,
        relinked_at: None,
    };
    state.wallets.set_link(user, record).await?;
    Ok(LinkView {
        linked: true,
        openid: tokens.openid,
        linked_at: rfc3339(now),
    })
}

/// How long a browser link flow's `state` may come back.
const LINK_STATE_SECS: i64 = 600;

#[derive(Serialize, ToSchema)]
pub struct LinkStart {
    /// Send the user's browser here (inside WeChat): the provider asks the
    /// user, then sends the browser to `/v1/wallet/link/callback`.
    authorize_url: String,
    /// Single use, for 10 minutes; it names the caller, so keep it to them.
    state: String,
}

/// Start linking the caller's payment account in their browser (the
/// OAuth authorize page): the answer's `authorize_url` leads back to
/// `GET /v1/wallet/link/callback`, which links the account.
#[utoipa::path(
    responses(
        (status = 200, body = LinkStart), (status = 401, body = Problem),
        (status = 503, body = Problem, description = "provider_not_configured")
    ),
    security(("bearer" = [])), tag = "payouts"
)]
#[post("/v1/wallet/link/start")]
pub async fn link_start(state: web::Data<AppState>, user: User) -> Result<HttpResponse, ApiError> {
    let client = state
        .provider
        .as_ref()
        .ok_or(ApiError::ProviderNotConfigured)?;
    let link_state = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::domain::ids::random_bytes::<24>())
    };
    let mut w = crate::storage::WriteSet::new();
    w.link_state(
        &crate::accounts::token_hash(&link_state),
        &crate::storage::LinkState {
            user: user.0,
            expires_at: crate::clock::now() + LINK_STATE_SECS,
        },
    );
    state.storage.commit(w).await?;
    let callback = format!("{}/v1/wallet/link/callback", state.base_url);
    Ok(HttpResponse::Ok().json(LinkStart {
        authorize_url: client.authorize_url(&callback, &link_state),
        state: link_state,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

/// Where the provider sends the browser back: links the payment account
/// of the user the `state` was issued to, and says so in a page (JSON for
/// a client that asks for it). A state that is unknown, used or older
/// than 10 minutes: 400 `link_state_invalid`.
#[utoipa::path(
        params(CallbackQuery),
    responses(
        (status = 200, description = "linked: a page, or the link with `Accept: application/json`",
            content((LinkView = "application/json"), (String = "text/html"))),
        (status = 400, description = "link_state_invalid, link_code_invalid (problem+json, or a page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html"))),
                        (status = 409, description = "link_change_blocked: a payout is open (problem+json, or a page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html"))),
        (status = 502, description = "the provider is unreachable (problem+json, or a page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html"))),
        (status = 503, description = "provider_not_configured, storage unavailable (problem+json, or a page for browsers)",
            content((Problem = "application/problem+json"), (String = "text/html")))
    ),
    tag = "payouts"
)]
#[get("/v1/wallet/link/callback")]
pub async fn link_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<CallbackQuery>,
) -> HttpResponse {
    let json = super::codes::wants_json(&req);
    let lang = crate::i18n::Lang::of(&req);
    let result = callback(&state, &q).await;
    match result {
        Ok(view) if json => HttpResponse::Ok().json(view),
        Ok(_) => super::pages::html(
            actix_web::http::StatusCode::OK,
            super::pages::render_message_page(lang, "link-done"),
        ),
        Err(e) if json => actix_web::ResponseError::error_response(&e),
        Err(e) => {
            let key = match &e {
                ApiError::LinkStateInvalid => "link-state-invalid",
                ApiError::LinkCodeRejected(_) | ApiError::Validation(_) => "link-refused",
                _ => "link-failed",
            };
            super::pages::html(
                actix_web::ResponseError::status_code(&e),
                super::pages::render_message_page(lang, key),
            )
        }
    }
}

async fn callback(state: &AppState, q: &CallbackQuery) -> Result<LinkView, ApiError> {
    let link_state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or(ApiError::LinkStateInvalid)?;
    let hash = crate::accounts::token_hash(link_state);
    let mut found = state.storage.link_state(&hash)?;
    if found.is_none() && state.storage.is_cluster() {
        // Started through another node a moment ago.
        state.storage.sync_all().await?;
        found = state.storage.link_state(&hash)?;
    }
    let s = found.ok_or(ApiError::LinkStateInvalid)?;
    let now = crate::clock::now();
    if now > s.expires_at {
        return Err(ApiError::LinkStateInvalid);
    }
    // Used once: a second use (a reload, or someone else's copy) is refused.
    let mut w = crate::storage::WriteSet::new();
    w.link_state_used(&hash, now);
    match state.storage.commit(w).await {
        Ok(()) => {}
        Err(crate::storage::StorageError::Exists(_)) => return Err(ApiError::LinkStateInvalid),
        Err(e) => return Err(e.into()),
    }
    link_user(state, s.user, q.code.as_deref().unwrap_or_default()).await
}

fn seal_error(e: crate::keys::KeyError) -> ApiError {
    tracing::error!(error = %e, "cannot seal a token");
    ApiError::Internal
}

/// A provider error as the client of our API sees it. Never echoes tokens.
fn provider_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Rejected { code, .. } => ApiError::LinkCodeRejected(code),
        other => {
            tracing::warn!(error = %other, "provider call failed");
            ApiError::ProviderUnavailable
        }
    }
}

/// The provider's asynchronous notification of a transfer's final state.
/// Signed (verified with the provider's key, at most 5 minutes old) and
/// encrypted (AEAD_AES_256_GCM under the API v3 key). Applied idempotently:
/// duplicates and out-of-order deliveries are normal. 204 when applied or
/// already known; 401 for a bad signature (logged and counted).
#[utoipa::path(
    request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    tag = "payouts"
)]
#[post("/v1/provider/notify")]
pub async fn provider_notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Result<super::body::RawBody, ApiError>,
) -> HttpResponse {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            metrics::NOTIFICATIONS
                .with_label_values(&["too_large"])
                .inc();
            return actix_web::ResponseError::error_response(&e);
        }
    };
    match notify(&state, &req, &body).await {
        Ok(result) => {
            metrics::NOTIFICATIONS.with_label_values(&[result]).inc();
            HttpResponse::NoContent().finish()
        }
        Err((result, e)) => {
            metrics::NOTIFICATIONS.with_label_values(&[result]).inc();
            actix_web::ResponseError::error_response(&e)
        }
    }
}

/// Tell the operator's backend (webhooks) of a forged notification, at
/// most once a minute: a flood is counted in the alerts, not sent on.
fn forgery_event(state: &AppState, now: i64, peer: String, reason: String) {
    use std::sync::atomic::Ordering;
    let last = state.forgery_event_at.load(Ordering::Relaxed);
    if now - last < 60
        || state
            .forgery_event_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let mut w = crate::storage::WriteSet::new();
    w.event(&crate::domain::events::Event::for_users(
        vec![],
        now,
        crate::domain::events::EventKind::NotificationForged { peer, reason },
    ));
    let written = state.storage.submit(w);
    actix_web::rt::spawn(async move {
        if let Err(e) = written.await {
            tracing::warn!(error = %e, "the forged-notification event was not written");
        }
    });
}

async fn notify(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
) -> Result<&'static str, (&'static str, ApiError)> {
    let client = state
        .provider
        .as_ref()
        .ok_or(("not_configured", ApiError::ProviderNotConfigured))?;
    let network = super::forward::client_ip(req).map(super::limits::network);
    // A network refused too often this minute is refused unread.
    if let Some(until) = network.and_then(|n| state.notify_blocked.get(&n)) {
        let now = std::time::Instant::now();
        if until > now {
            if let Ok(mut g) = state.notifications.lock() {
                g.forgeries.count("rate_limited");
            }
            return Err((
                "rate_limited",
                ApiError::RateLimited {
                    scope: "refused notifications per network",
                    retry_after_secs: (until - now).as_secs() + 1,
                },
            ));
        }
    }
    // Missing headers verify as empty ones: refused like a bad signature.
    let h = NotifyHeaders::from_headers(req.headers()).unwrap_or_default();
    let now = crate::clock::now();
    // Refusals count against the sender's network (a flood is then refused
    // unread).
    let count_refusal = || {
        if let Some(n) = network {
            if let Err(nu) = state.notify_refusals.check_key(&n) {
                let wait =
                    nu.wait_time_from(governor::clock::Clock::now(&state.groups.shared().clock));
                state
                    .notify_blocked
                    .insert(n, std::time::Instant::now() + wait);
            }
        }
    };
    let peer = || {
        req.peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default()
    };
    let result = match client.verify_notification(&h, body, now) {
        Ok(r) => r,
        // The provider probing whether we verify signatures: refused, as it
        // expects, but no forgery.
        Err(ClientError::SignatureProbe) => {
            tracing::debug!("a provider signature probe (WECHATPAY/SIGNTEST) refused");
            count_refusal();
            return Err(("probe", ApiError::Unauthorized));
        }
        Err(e @ ClientError::BadSignature(_)) => {
            // The body is not logged: it is what a forger controls.
            tracing::warn!(error = %e, serial = %h.serial, "provider notification rejected");
            let detail: String = e.to_string().chars().take(200).collect();
            if let Ok(mut g) = state.notifications.lock() {
                g.forgeries.record(
                    Rejection {
                        at: rfc3339(now),
                        peer: peer(),
                        reason: detail.clone(),
                    },
                    "signature",
                );
            }
            forgery_event(state, now, peer(), detail);
            count_refusal();
            return Err(("rejected", ApiError::Unauthorized));
        }
        // Signed by the provider, yet not readable (or for another
        // merchant): no forgery, but the operator must look. Refused, so
        // the provider delivers it again.
        Err(e) => {
            tracing::error!(error = %e, "a signed provider notification that cannot be applied");
            if let Ok(mut g) = state.notifications.lock() {
                g.forgeries.record(
                    Rejection {
                        at: rfc3339(now),
                        peer: peer(),
                        reason: e.to_string().chars().take(200).collect(),
                    },
                    "unreadable",
                );
            }
            return Err(("unreadable", ApiError::Unauthorized));
        }
    };
    // Signed, in time: a nonce seen already is a captured request sent
    // again. Acknowledged (the provider may not retry it) and not applied.
    let fresh = state
        .notifications
        .lock()
        .map(|mut g| {
            let fresh = g.nonces.first_use(&h.nonce, now);
            if !fresh {
                g.forgeries.count("replay");
            }
            fresh
        })
        .unwrap_or(true);
    if !fresh {
        tracing::warn!(nonce = %h.nonce, "a replayed provider notification; not applied");
        return Ok("replayed");
    }
    let unknown = || {
        tracing::error!(out_bill_no = %result.out_bill_no, "notification for an unknown payout");
        ("unknown_payout", ApiError::PayoutNotFound)
    };
    let id = state
        .storage
        .payout_by_trade_no(&result.out_bill_no)
        .map_err(|e| ("error", e.into()))?
        .ok_or_else(unknown)?;
    let p = state
        .wallets
        .payout(id)
        .map_err(|e| ("error", e))?
        .ok_or_else(unknown)?;
    let amount = u64::try_from(result.amount).unwrap_or(0);
    if let Err(why) = runner::same_transfer(&p, Some(amount), Some(&result.openid)) {
        tracing::error!(why = %why, "notification does not match its payout");
        return Err((
            "mismatch",
            ApiError::validation("the notification does not match the payout"),
        ));
    }
    let answer = runner::answer_of(&TransferStatus {
        out_bill_no: result.out_bill_no.clone(),
        transfer_bill_no: result.transfer_bill_no.clone(),
        state: result.state,
        amount: Some(amount),
        openid: Some(result.openid.clone()),
        fail_reason: result.fail_reason.clone(),
        package_info: None,
        update_time: result.update_time.clone(),
    });
    let before = p.state;
    let after = state
        .wallets
        .payout_progress(&p, Some(answer), None, false)
        .await
        .map_err(|e| ("error", e))?;
    Ok(if after.state == before {
        "duplicate"
    } else {
        "applied"
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBody {
    /// The bill's business day, `YYYY-MM-DD`.
    date: String,
    /// The bill's text; absent: downloaded from the provider.
    bill: Option<String>,
}

/// Reconcile one day's provider bill against our payouts (admin token). The
/// report lists every break by class and is stored for later reads.
#[utoipa::path(
    request_body = ReconcileBody,
    responses((status = 200, body = crate::domain::reconcile::Report), (status = 400, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[post("/v1/admin/reconcile")]
pub async fn reconcile(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<ReconcileBody>,
) -> Result<HttpResponse, ApiError> {
    let date = parse_day(&body.date)?;
    let text = match &body.bill {
        Some(t) => t.clone(),
        None => {
            let client = state
                .provider
                .as_ref()
                .ok_or(ApiError::ProviderNotConfigured)?;
            client.download_bill(date.date()).await.map_err(|e| {
                tracing::warn!(error = %e, "bill download failed");
                ApiError::ProviderUnavailable
            })?
        }
    };
    let bill = qrgate_provider::bill::parse_bill(&text)
        .map_err(|e| ApiError::validation(format!("the bill does not parse: {e}")))?;
    let report = state.wallets.reconcile(date, bill).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoPayout {
    /// Pay out whenever the available balance reaches this many fen (at
    /// least `payouts.auto_min_threshold_fen`); null turns it off.
    threshold: Option<u64>,
}

/// Opt in to (or out of) automatic payouts. Each one passes the same risk
/// checks as a requested payout; its idempotency key is the wallet's ledger
/// position, so a replayed credit cannot trigger it twice.
#[utoipa::path(
    request_body = AutoPayout,
    responses((status = 200, body = AutoPayout), (status = 400, body = Problem)),
    security(("bearer" = [])), tag = "payouts"
)]
#[put("/v1/wallet/auto-payout")]
pub async fn set_auto_payout(
    state: web::Data<AppState>,
    user: User,
    body: web::Json<AutoPayout>,
) -> Result<HttpResponse, ApiError> {
    state
        .wallets
        .set_auto_payout(user.0, body.threshold)
        .await?;
    Ok(HttpResponse::Ok().json(body.0))
}

/// Refused notifications and the nonces of accepted ones.
pub struct NotifyGuard {
    pub forgeries: crate::domain::forgeries::Forgeries,
    pub nonces: crate::domain::forgeries::Nonces,
}

impl Default for NotifyGuard {
    fn default() -> Self {
        NotifyGuard {
            forgeries: Default::default(),
            // Twice the signature's allowed clock skew; at most 100k nonces.
            nonces: crate::domain::forgeries::Nonces::new(
                2 * qrgate_provider::sign::DEFAULT_MAX_SKEW_SECS as i64,
                100_000,
            ),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Alerts {
    /// Payouts that failed.
    failed_payouts: usize,
    /// Payouts not final after `payouts.stuck_after_seconds`.
    stuck_payouts: Vec<AdminPayout>,
    /// The latest notifications whose signature or timestamp did not verify
    /// (at most 20).
    rejected_notifications: Vec<Rejection>,
    /// The first refused notification since the start, and every refusal
    /// counted by reason: a flood washes none of it out.
    forgeries: crate::domain::forgeries::ForgeriesView,
    /// Outbox events the consumer could not decode, set aside (at most the
    /// first 100).
    quarantined_events: Vec<crate::storage::QuarantineRecord>,
}

/// What needs an operator (admin token): failed and stuck payouts and
/// rejected provider notifications. The same are counted in `/metrics`.
#[utoipa::path(
    responses((status = 200, body = Alerts)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/alerts")]
pub async fn alerts(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let storage = state.storage.clone();
    let now = crate::clock::now();
    let after = state.config.payouts.stuck_after_seconds;
    let (failed, stuck, quarantined) = web::block(move || -> Result<_, ApiError> {
        let failed = storage
            .all_payouts()?
            .iter()
            .filter(|p| p.state == PayoutState::Failed)
            .count();
        let stuck: Vec<Payout> = storage
            .open_payouts()?
            .into_iter()
            .filter(|p| crate::domain::payout::is_stuck(p, now, after))
            .collect();
        let mut quarantined = storage.quarantined_events()?;
        quarantined.truncate(100);
        Ok((failed, stuck, quarantined))
    })
    .await
    .map_err(|_| ApiError::Internal)??;
    let (rejected, forgeries) = state
        .notifications
        .lock()
        .map(|g| (g.forgeries.latest(), g.forgeries.view()))
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(Alerts {
        failed_payouts: failed,
        stuck_payouts: stuck.iter().map(|p| admin_view(p, &state.config)).collect(),
        rejected_notifications: rejected,
        forgeries,
        quarantined_events: quarantined,
    }))
}

fn admin_view(p: &Payout, config: &crate::config::Config) -> AdminPayout {
    AdminPayout {
        payout: PayoutView::new(p, config),
        user_id: p.user,
        attempts: p.attempts,
        last_error: p.last_error.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct LinkStatus {
    linked: bool,
    openid: Option<String>,
    linked_at: Option<String>,
    /// When the access token was last refreshed.
    refreshed_at: Option<String>,
    /// When the current access token expires.
    expires_at: Option<String>,
}

/// The caller's linked payment account (tokens are never shown).
#[utoipa::path(
    responses((status = 200, body = LinkStatus)),
    security(("bearer" = [])), tag = "payouts"
)]
#[get("/v1/wallet/link")]
pub async fn link_status(state: web::Data<AppState>, user: User) -> Result<HttpResponse, ApiError> {
    let l = state.storage.link(user.0)?;
    Ok(HttpResponse::Ok().json(LinkStatus {
        linked: l.is_some(),
        openid: l.as_ref().map(|l| l.openid.clone()),
        linked_at: l.as_ref().map(|l| rfc3339(l.linked_at)),
        refreshed_at: l.as_ref().map(|l| rfc3339(l.refreshed_at)),
        expires_at: l.as_ref().map(|l| rfc3339(l.expires_at)),
    }))
}

/// The stored report of the last reconciliation of a day (admin token).
#[utoipa::path(
    params(("date" = String, Path)),
    responses((status = 200, body = crate::domain::reconcile::Report), (status = 404, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/reconcile/{date}")]
pub async fn reconciliation(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let date = parse_day(&path)?;
    match state
        .storage
        .reconciliation::<crate::domain::reconcile::Report>(&date.to_string())?
    {
        Some(r) => Ok(HttpResponse::Ok().json(r)),
        None => Err(ApiError::ReportNotFound),
    }
}
