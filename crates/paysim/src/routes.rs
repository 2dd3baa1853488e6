//! The simulator's HTTP routes: OAuth, `/v3` (signed) and `/sim` (control).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::json;

use super::notifier;
use super::state::{
    self, BillExtra, BillOverride, Confirmation, CreateFault, FaultsPatch, Notice, Refusal,
    Transfer,
};
use super::{
    Sim, APPID, APP_SECRET, COMPLETE_AFTER, EXPIRE_AFTER, MCHID, MERCHANT_SERIAL, TIMEOUT_HOLD,
};
use qrgate_provider::bill;
use qrgate_provider::notify::{self, TransferState};
use qrgate_provider::sign;
use qrgate_provider::wire::{self, ErrorReply, TransferBillBody};

type Data = web::Data<Sim>;

/// The transfer bills resource.
pub const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(1 << 20))
        .app_data(
            web::JsonConfig::default()
                .limit(1 << 20)
                .error_handler(|err, _req| {
                    let response = HttpResponse::BadRequest().json(ErrorReply {
                        code: "PARAM_ERROR".into(),
                        message: err.to_string(),
                    });
                    actix_web::error::InternalError::from_response(err, response).into()
                }),
        )
        .route("/connect/oauth2/authorize", web::get().to(authorize))
        .route("/sns/oauth2/access_token", web::get().to(access_token))
        .route("/sns/oauth2/refresh_token", web::get().to(refresh_token))
        .route(BILLS, web::post().to(create_transfer))
        .route(
            &format!("{BILLS}/out-bill-no/{{out_bill_no}}"),
            web::get().to(query_by_out_bill_no),
        )
        .route(
            &format!("{BILLS}/out-bill-no/{{out_bill_no}}/cancel"),
            web::post().to(cancel_transfer),
        )
        .route(
            &format!("{BILLS}/transfer-bill-no/{{transfer_bill_no}}"),
            web::get().to(query_by_transfer_bill_no),
        )
        .route("/cgi-bin/stable_token", web::post().to(stable_token))
        .route("/cgi-bin/ticket/getticket", web::get().to(get_ticket))
        .route("/v3/bills", web::get().to(bill))
        .service(
            web::scope("/sim")
                .route("/codes", web::post().to(add_code))
                .route("/revoke", web::post().to(revoke))
                .route("/faults", web::get().to(get_faults))
                .route("/faults", web::post().to(set_faults))
                .route("/release", web::post().to(release))
                .route("/bill_override", web::post().to(bill_override))
                .route("/bill_extra", web::post().to(bill_extra))
                .route("/transfers", web::get().to(transfers))
                .route("/jsapi_ticket", web::get().to(jsapi_ticket))
                .route("/confirm", web::post().to(confirm))
                .route("/complete", web::post().to(complete)),
        );
}

fn arc(sim: &Data) -> Arc<Sim> {
    sim.clone().into_inner()
}

// ---------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------

fn oauth_error(errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "errcode": errcode, "errmsg": errmsg }))
}

fn issue_tokens(sim: &Sim, openid: String, refresh: Option<String>) -> HttpResponse {
    let access = match sign::random_alphanumeric(64) {
        Ok(t) => t,
        Err(_) => return oauth_error(-1, "system error"),
    };
    let refresh = match refresh {
        Some(r) => r,
        None => match sign::random_alphanumeric(64) {
            Ok(r) => {
                sim.lock().refresh_tokens.insert(r.clone(), openid.clone());
                r
            }
            Err(_) => return oauth_error(-1, "system error"),
        },
    };
    HttpResponse::Ok().json(json!({
        "access_token": access,
        "expires_in": 7200,
        "refresh_token": refresh,
        "openid": openid,
        "scope": "snsapi_base",
    }))
}

/// The OAuth authorize page, approved at once: a new simulated WeChat
/// user (or the `openid` the caller names, for tests) gets a single-use
/// code, and the browser is sent to `redirect_uri?code=...&state=...`.
async fn authorize(sim: Data, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| query.get(k).map(String::as_str);
    if get("appid") != Some(APPID) {
        return oauth_error(40013, "invalid appid");
    }
    if get("response_type") != Some("code") {
        return oauth_error(40002, "response_type must be code");
    }
    if !matches!(get("scope"), Some("snsapi_base" | "snsapi_userinfo")) {
        return oauth_error(10005, "invalid scope");
    }
    let Some(redirect) = get("redirect_uri")
        .filter(|u| (u.starts_with("http://") || u.starts_with("https://")) && !u.contains('#'))
    else {
        return oauth_error(10003, "redirect_uri is not an http(s) URL");
    };
    let (code, openid) = match (sign::random_alphanumeric(32), sign::random_alphanumeric(22)) {
        (Ok(c), Ok(o)) => (c, get("openid").map_or(format!("o-sim-{o}"), str::to_owned)),
        _ => return oauth_error(-1, "system error"),
    };
    if !qrgate_provider::client::valid_openid(&openid) {
        return oauth_error(40003, "invalid openid");
    }
    sim.lock()
        .codes
        .insert(code.clone(), state::CodeGrant { openid });
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let mut to = format!("{redirect}{sep}code={code}");
    if let Some(st) = get("state") {
        to.push_str("&state=");
        to.push_str(&qrgate_provider::client::percent_encode(st));
    }
    HttpResponse::Found()
        .insert_header(("Location", to))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

async fn access_token(sim: Data, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| query.get(k).map(String::as_str);
    if get("appid") != Some(APPID) {
        return oauth_error(40013, "invalid appid");
    }
    if get("secret") != Some(APP_SECRET) {
        return oauth_error(40125, "invalid appsecret");
    }
    if get("grant_type") != Some("authorization_code") {
        return oauth_error(40002, "invalid grant_type");
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return oauth_error(41008, "missing code");
    };
    let grant = {
        let mut st = sim.lock();
        match st.codes.remove(code) {
            Some(grant) => {
                st.used_codes.insert(code.to_owned());
                Ok(grant)
            }
            None if st.used_codes.contains(code) => Err((40163, "code been used")),
            None => Err((40029, "invalid code")),
        }
    };
    match grant {
        Ok(grant) => issue_tokens(&sim, grant.openid, None),
        Err((errcode, errmsg)) => oauth_error(errcode, errmsg),
    }
}

// ---------------------------------------------------------------------------
// The official account's API: the JS-SDK ticket
// ---------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct StableToken {
    grant_type: String,
    appid: String,
    secret: String,
}

/// `POST /cgi-bin/stable_token`: an access token for the app's credentials.
async fn stable_token(sim: Data, body: web::Bytes) -> HttpResponse {
    let Ok(req) = serde_json::from_slice::<StableToken>(&body) else {
        return oauth_error(47001, "data format error");
    };
    if req.grant_type != "client_credential" {
        return oauth_error(40002, "invalid grant_type");
    }
    if req.appid != APPID {
        return oauth_error(40013, "invalid appid");
    }
    if req.secret != APP_SECRET {
        return oauth_error(40125, "invalid appsecret");
    }
    let Ok(token) = sign::random_alphanumeric(64) else {
        return oauth_error(-1, "system error");
    };
    sim.lock().mp_tokens.insert(token.clone());
    HttpResponse::Ok().json(json!({ "access_token": token, "expires_in": 7200 }))
}

/// `GET /cgi-bin/ticket/getticket?access_token=..&type=jsapi`.
async fn get_ticket(sim: Data, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| query.get(k).map(String::as_str);
    if get("type") != Some("jsapi") {
        return oauth_error(40097, "invalid args");
    }
    let mut st = sim.lock();
    if !get("access_token").is_some_and(|t| st.mp_tokens.contains(t)) {
        return oauth_error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        );
    }
    let ticket = match st.jsapi_ticket.clone() {
        Some(t) => t,
        None => match sign::random_alphanumeric(86) {
            Ok(t) => {
                st.jsapi_ticket = Some(t.clone());
                t
            }
            Err(_) => return oauth_error(-1, "system error"),
        },
    };
    HttpResponse::Ok()
        .json(json!({ "errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": 7200 }))
}

/// `GET /sim/jsapi_ticket`: the ticket the simulator hands out (for tests
/// that check a page's JS-SDK signature); `null` before the first.
async fn jsapi_ticket(sim: Data) -> HttpResponse {
    let ticket = sim.lock().jsapi_ticket.clone();
    HttpResponse::Ok().json(json!({ "ticket": ticket }))
}

async fn refresh_token(sim: Data, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| query.get(k).map(String::as_str);
    if get("appid") != Some(APPID) {
        return oauth_error(40013, "invalid appid");
    }
    if get("grant_type") != Some("refresh_token") {
        return oauth_error(40002, "invalid grant_type");
    }
    let Some(token) = get("refresh_token").filter(|t| !t.is_empty()) else {
        return oauth_error(41003, "missing refresh_token");
    };
    let openid = sim.lock().refresh_tokens.get(token).cloned();
    match openid {
        Some(openid) => issue_tokens(&sim, openid, Some(token.to_owned())),
        None => oauth_error(40030, "invalid refresh_token"),
    }
}

// ---------------------------------------------------------------------------
// /v3: signed both ways
// ---------------------------------------------------------------------------

/// Delays (faults), signs and builds a `/v3` answer.
async fn signed(
    sim: &Sim,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: Duration,
) -> HttpResponse {
    let delay = Duration::from_millis(sim.lock().faults.delay_ms) + extra;
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.content_type(content_type.to_owned());
    match sim.sign(&body) {
        Ok(headers) => {
            for (name, value) in headers.pairs() {
                response.insert_header((name, value.to_owned()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an answer");
            return HttpResponse::InternalServerError().finish();
        }
    }
    response.body(body)
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorReply {
        code: code.to_owned(),
        message: message.to_owned(),
    })
    .unwrap_or_default()
}

async fn signed_error(
    sim: &Sim,
    (status, code, message): Refusal,
    extra: Duration,
) -> HttpResponse {
    signed(
        sim,
        status,
        "application/json",
        error_body(code, &message),
        extra,
    )
    .await
}

async fn signed_json<T: serde::Serialize>(sim: &Sim, value: &T, extra: Duration) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => signed(sim, 200, "application/json", body, extra).await,
        Err(e) => signed_error(sim, (500, "SYSTEM_ERROR", e.to_string()), extra).await,
    }
}

/// Checks the merchant `Authorization` of a `/v3` request; the mchid on
/// success.
fn authenticate(sim: &Sim, req: &HttpRequest, body: &[u8]) -> Result<String, Refusal> {
    let sign_error = |m: String| (401, "SIGN_ERROR", m);
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| sign_error("missing Authorization".into()))?;
    let auth = sign::parse_authorization(header).map_err(|e| sign_error(e.to_string()))?;
    if auth.mchid != MCHID {
        return Err(sign_error(format!("unknown mchid {:?}", auth.mchid)));
    }
    if auth.serial_no != MERCHANT_SERIAL {
        return Err(sign_error(format!(
            "unknown serial_no {:?}",
            auth.serial_no
        )));
    }
    let url = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| req.path());
    sign::verify_request(
        &sim.keys.merchant_public,
        &auth,
        req.method().as_str(),
        url,
        body,
        chrono::Utc::now().timestamp(),
        sign::DEFAULT_MAX_SKEW_SECS,
    )
    .map_err(|e| sign_error(e.to_string()))?;
    Ok(auth.mchid)
}

// ---------------------------------------------------------------------------
// Transfer bills: what happens after an answer
// ---------------------------------------------------------------------------

/// Runs `step` on the state after `delay`; a bill it returns (one that
/// reached a final state) is notified.
fn after(
    sim: &Arc<Sim>,
    delay: Duration,
    step: impl FnOnce(&Arc<Sim>) -> Option<Transfer> + 'static,
) {
    let sim = Arc::clone(sim);
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(delay).await;
        if let Some(t) = step(&sim) {
            if t.state.is_final() {
                notify_final(&sim, &t);
            }
        }
    });
}

/// What the simulated user does with a new bill, per its confirmation
/// mode.
fn schedule_user(sim: &Arc<Sim>, out_bill_no: String, mode: Confirmation) {
    match mode {
        Confirmation::Hold => {}
        Confirmation::Auto | Confirmation::Refuse => {
            after(sim, sim.scaled(COMPLETE_AFTER), move |sim| {
                let t = sim.lock().user_acts(&out_bill_no, state::now())?;
                if t.state == TransferState::Transfering {
                    schedule_settle(sim, out_bill_no);
                }
                Some(t)
            });
        }
        Confirmation::Expire => {
            let delay = match sim.lock().faults.expire_after_ms {
                Some(ms) => Duration::from_millis(ms),
                None => sim.scaled(EXPIRE_AFTER),
            };
            after(sim, delay, move |sim| {
                sim.lock().expire(&out_bill_no, state::now())
            });
        }
    }
}

/// A confirmed bill reaches its natural outcome after the scaled delay, if
/// `auto_complete` is on then.
fn schedule_settle(sim: &Arc<Sim>, out_bill_no: String) {
    after(sim, sim.scaled(COMPLETE_AFTER), move |sim| {
        sim.lock().settle(&out_bill_no, state::now())
    });
}

/// A cancel goes through after the scaled delay, unless `hold_cancels` is
/// on then or the user confirmed meanwhile.
fn schedule_cancel(sim: &Arc<Sim>, out_bill_no: String) {
    after(sim, sim.scaled(COMPLETE_AFTER), move |sim| {
        sim.lock().finish_cancel(&out_bill_no, state::now())
    });
}

/// Builds and dispatches the notification of a bill in a final state (to
/// nowhere when it has no `notify_url`).
fn notify_final(sim: &Arc<Sim>, transfer: &Transfer) {
    let now = state::now();
    let seq = sim.lock().next_seq();
    let id = format!("EV-{}-{seq}", transfer.transfer_bill_no);
    let body = match notify::build_notification(
        &sim.keys.api_v3_key,
        &id,
        &state::rfc3339(&now),
        "商家转账单据终态通知",
        &transfer.result(),
    ) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(out_bill_no = transfer.out_bill_no(), error = %e, "cannot build a notification");
            return;
        }
    };
    let Some(notify_url) = transfer.request.notify_url.clone() else {
        tracing::debug!(
            out_bill_no = transfer.out_bill_no(),
            "no notify_url: nothing sent"
        );
        return;
    };
    notifier::dispatch(
        sim,
        Notice {
            id,
            out_bill_no: transfer.out_bill_no().to_owned(),
            notify_url,
            body,
        },
    );
}

/// Completes a bill and dispatches its notification.
fn complete_and_notify(
    sim: &Arc<Sim>,
    out_bill_no: &str,
    state: TransferState,
    fail_reason: Option<String>,
) -> Result<Transfer, Refusal> {
    let transfer = sim
        .lock()
        .complete(out_bill_no, state, fail_reason, state::now())?;
    notify_final(sim, &transfer);
    Ok(transfer)
}

// ---------------------------------------------------------------------------
// Transfer bills: the routes
// ---------------------------------------------------------------------------

async fn create_transfer(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(refusal) = authenticate(&sim, &req, &body) {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let request: TransferBillBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return signed_error(&sim, (400, "PARAM_ERROR", e.to_string()), Duration::ZERO).await
        }
    };
    let serial = req
        .headers()
        .get(sign::HEADER_SERIAL)
        .and_then(|v| v.to_str().ok());
    let user_name = state::decrypt_user_name(&request, serial, |c| {
        sign::decrypt_sensitive(&sim.keys.platform_private, c).ok()
    })
    .and_then(|name| state::validate_create(&request, name.as_deref()).map(|()| name));
    let user_name = match user_name {
        Ok(name) => name,
        Err(refusal) => return signed_error(&sim, refusal, Duration::ZERO).await,
    };
    let fault = sim.lock().take_create_fault();
    let unprocessed = match fault {
        CreateFault::FrequencyLimited => Some((
            429,
            "FREQUENCY_LIMITED",
            "simulated rate limit, not processed".to_owned(),
        )),
        CreateFault::NoAuth => Some((
            403,
            "NO_AUTH",
            "simulated missing permission, not processed".to_owned(),
        )),
        CreateFault::Fail5xx => Some((
            500,
            "SYSTEM_ERROR",
            "simulated fault, not processed".to_owned(),
        )),
        _ => None,
    };
    if let Some(refusal) = unprocessed {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let package_info = match sign::random_alphanumeric(64) {
        Ok(p) => p,
        Err(e) => {
            return signed_error(&sim, (500, "SYSTEM_ERROR", e.to_string()), Duration::ZERO).await
        }
    };
    let out_bill_no = request.out_bill_no.clone();
    let (outcome, mode) = {
        let mut st = sim.lock();
        let outcome = st.create(request, user_name, package_info, state::now());
        let mode = st.transfers.get(&out_bill_no).map(|t| t.confirmation);
        (outcome, mode)
    };
    if let (Ok((_, true)), Some(mode)) = (&outcome, mode) {
        schedule_user(&arc(&sim), out_bill_no, mode);
    }
    match (fault, outcome) {
        (CreateFault::LostReply, _) => {
            signed_error(
                &sim,
                (
                    500,
                    "SYSTEM_ERROR",
                    "simulated fault after processing".into(),
                ),
                Duration::ZERO,
            )
            .await
        }
        (CreateFault::Timeout, Ok((reply, _))) => signed_json(&sim, &reply, TIMEOUT_HOLD).await,
        (CreateFault::Timeout, Err(refusal)) => signed_error(&sim, refusal, TIMEOUT_HOLD).await,
        (_, Ok((reply, _))) => signed_json(&sim, &reply, Duration::ZERO).await,
        (_, Err(refusal)) => signed_error(&sim, refusal, Duration::ZERO).await,
    }
}

fn not_found() -> Refusal {
    (404, "NOT_FOUND", "no such transfer bill".into())
}

async fn query_by_out_bill_no(
    sim: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = authenticate(&sim, &req, b"") {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    if !wire::valid_out_bill_no(&path) {
        let refusal = (400, "PARAM_ERROR", "invalid out_bill_no".into());
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let reply = sim
        .lock()
        .transfers
        .get(path.as_str())
        .map(Transfer::query_reply);
    query_answer(&sim, reply).await
}

/// A query's answer: the bill, or `404 NOT_FOUND`.
async fn query_answer(sim: &Sim, reply: Option<qrgate_provider::wire::QueryReply>) -> HttpResponse {
    match reply {
        Some(reply) => signed_json(sim, &reply, Duration::ZERO).await,
        None => signed_error(sim, not_found(), Duration::ZERO).await,
    }
}

async fn query_by_transfer_bill_no(
    sim: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = authenticate(&sim, &req, b"") {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let reply = sim.lock().by_bill_no(&path).map(Transfer::query_reply);
    query_answer(&sim, reply).await
}

async fn cancel_transfer(
    sim: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(refusal) = authenticate(&sim, &req, &body) {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    // No body, or an empty JSON object.
    let body_ok = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
            .is_ok_and(|m| m.is_empty());
    if !body_ok {
        let refusal = (400, "PARAM_ERROR", "a cancel has no body".into());
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let outcome = sim.lock().cancel(&path, state::now());
    match outcome {
        Ok((reply, fresh)) => {
            if fresh {
                schedule_cancel(&arc(&sim), path.into_inner());
            }
            signed_json(&sim, &reply, Duration::ZERO).await
        }
        Err(refusal) => signed_error(&sim, refusal, Duration::ZERO).await,
    }
}

#[derive(Deserialize)]
struct BillQuery {
    date: Option<String>,
}

async fn bill(sim: Data, req: HttpRequest) -> HttpResponse {
    if let Err(refusal) = authenticate(&sim, &req, b"") {
        return signed_error(&sim, refusal, Duration::ZERO).await;
    }
    let date = web::Query::<BillQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.date.clone())
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
    let Some(date) = date else {
        return signed_error(
            &sim,
            (400, "PARAM_ERROR", "date must be YYYY-MM-DD".into()),
            Duration::ZERO,
        )
        .await;
    };
    if date > state::now().date_naive() {
        return signed_error(
            &sim,
            (
                400,
                "NO_STATEMENT_EXIST",
                "no bill for a future date".into(),
            ),
            Duration::ZERO,
        )
        .await;
    }
    let text = bill::write_bill(&sim.lock().bill(date));
    match text {
        Ok(text) => {
            signed(
                &sim,
                200,
                "text/plain; charset=utf-8",
                text.into_bytes(),
                Duration::ZERO,
            )
            .await
        }
        Err(e) => signed_error(&sim, (500, "SYSTEM_ERROR", e.to_string()), Duration::ZERO).await,
    }
}

// ---------------------------------------------------------------------------
// /sim: control
// ---------------------------------------------------------------------------

fn refused((status, code, message): Refusal) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(ErrorReply {
        code: code.to_owned(),
        message,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddCode {
    code: String,
    openid: String,
    #[serde(default)]
    real_name: Option<String>,
}

async fn add_code(sim: Data, body: web::Json<AddCode>) -> HttpResponse {
    let AddCode {
        code,
        openid,
        real_name,
    } = body.into_inner();
    if code.is_empty() || code.len() > 512 || !qrgate_provider::client::valid_openid(&openid) {
        return refused((400, "PARAM_ERROR", "invalid code or openid".into()));
    }
    let mut st = sim.lock();
    if st.codes.contains_key(&code) || st.used_codes.contains(&code) {
        return refused((409, "ALREADY_EXISTS", "code already registered".into()));
    }
    if let Some(name) = real_name {
        st.real_names.insert(openid.clone(), name);
    }
    st.codes.insert(
        code.clone(),
        state::CodeGrant {
            openid: openid.clone(),
        },
    );
    HttpResponse::Created().json(json!({ "code": code, "openid": openid }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    refresh_token: String,
}

async fn revoke(sim: Data, body: web::Json<Revoke>) -> HttpResponse {
    let revoked = sim
        .lock()
        .refresh_tokens
        .remove(&body.refresh_token)
        .is_some();
    HttpResponse::Ok().json(json!({ "revoked": revoked }))
}

async fn get_faults(sim: Data) -> HttpResponse {
    let faults = sim.lock().faults.clone();
    HttpResponse::Ok().json(faults)
}

async fn set_faults(sim: Data, body: web::Json<FaultsPatch>) -> HttpResponse {
    let (faults, release_held, flush, cancels) = {
        let mut st = sim.lock();
        let was_holding = st.faults.hold_notifications;
        let was_ooo = st.faults.out_of_order;
        let was_holding_cancels = st.faults.hold_cancels;
        st.faults.apply(&body);
        let cancels = if was_holding_cancels && !st.faults.hold_cancels {
            st.canceling()
        } else {
            Vec::new()
        };
        (
            st.faults.clone(),
            was_holding && !st.faults.hold_notifications,
            was_ooo && !st.faults.out_of_order,
            cancels,
        )
    };
    let sim = arc(&sim);
    if flush {
        notifier::flush_batch(&sim);
    }
    if release_held {
        notifier::release(&sim);
    }
    // Held cancels go through now.
    for out_bill_no in cancels {
        let t = sim.lock().finish_cancel(&out_bill_no, state::now());
        if let Some(t) = t {
            notify_final(&sim, &t);
        }
    }
    HttpResponse::Ok().json(faults)
}

async fn release(sim: Data) -> HttpResponse {
    let released = notifier::release(&arc(&sim));
    HttpResponse::Ok().json(json!({ "released": released }))
}

async fn bill_override(sim: Data, body: web::Json<BillOverride>) -> HttpResponse {
    let o = body.into_inner();
    let mut view = json!(o);
    view["partner_trade_no"] = json!(o.out_bill_no);
    match sim.lock().set_override(o) {
        Ok(()) => HttpResponse::Ok().json(view),
        Err(refusal) => refused(refusal),
    }
}

async fn bill_extra(sim: Data, body: web::Json<BillExtra>) -> HttpResponse {
    let row = sim.lock().add_extra(body.into_inner(), state::now());
    match row {
        Ok(row) => HttpResponse::Created().json(json!({
            "out_bill_no": row.partner_trade_no,
            "partner_trade_no": row.partner_trade_no,
            "transfer_bill_no": row.transfer_bill_no,
            "transfer_time": row.transfer_time.format(bill::TIME_FORMAT).to_string(),
        })),
        Err(refusal) => refused(refusal),
    }
}

async fn transfers(sim: Data) -> HttpResponse {
    let list: Vec<serde_json::Value> = sim.lock().transfers.values().map(|t| t.view()).collect();
    HttpResponse::Ok().json(list)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    #[serde(alias = "partner_trade_no")]
    out_bill_no: String,
    action: String,
}

/// The user confirms (`TRANSFERING`, then the natural outcome) or declines
/// (`CANCELLED`, notified) a bill waiting for them.
async fn confirm(sim: Data, body: web::Json<Confirm>) -> HttpResponse {
    let sim = arc(&sim);
    let now = state::now();
    let outcome = match body.action.as_str() {
        "confirm" => {
            let t = sim.lock().confirm(&body.out_bill_no, now);
            if t.is_ok() {
                schedule_settle(&sim, body.out_bill_no.clone());
            }
            t
        }
        "refuse" => {
            let t = sim.lock().decline(&body.out_bill_no, now);
            if let Ok(t) = &t {
                notify_final(&sim, t);
            }
            t
        }
        _ => {
            return refused((
                400,
                "PARAM_ERROR",
                "action must be confirm or refuse".into(),
            ))
        }
    };
    match outcome {
        Ok(t) => HttpResponse::Ok().json(t.view()),
        Err(refusal) => refused(refusal),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    #[serde(alias = "partner_trade_no")]
    out_bill_no: String,
    state: String,
    #[serde(default)]
    fail_reason: Option<String>,
}

async fn complete(sim: Data, body: web::Json<Complete>) -> HttpResponse {
    let state = match body.state.as_str() {
        "SUCCESS" => TransferState::Success,
        "FAIL" => TransferState::Fail,
        "CANCELLED" => TransferState::Cancelled,
        _ => {
            return refused((
                400,
                "PARAM_ERROR",
                "state must be SUCCESS, FAIL or CANCELLED".into(),
            ))
        }
    };
    if body
        .fail_reason
        .as_deref()
        .is_some_and(|r| r.is_empty() || r.contains(',') || r.chars().any(char::is_control))
    {
        return refused((400, "PARAM_ERROR", "invalid fail_reason".into()));
    }
    match complete_and_notify(
        &arc(&sim),
        &body.out_bill_no,
        state,
        body.fail_reason.clone(),
    ) {
        Ok(t) => HttpResponse::Ok().json(t.view()),
        Err(refusal) => refused(refusal),
    }
}
