//! Red packets: create, look at, QR code, claim; the blacklist.

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Authed, User};
use super::payouts::idempotency_key;
use super::{id, AppState};
use crate::clock::{now, rfc3339};
use crate::domain::challenge::{Challenge, Subject};
use crate::domain::ids::{random_bytes, PacketId, TransferId, UserId};
use crate::domain::ledger::{valid_kind, AccountId};
use crate::domain::packet::{self, ClaimAsk, Geofence, Mode, Packet, Referral, Refusal};
use crate::error::{ApiError, Problem};
use crate::groups::Caller;
use crate::storage::BlacklistEntry;
use crate::wallets::PacketState;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPacket {
    /// In fen, within `[packets]` limits.
    total: u64,
    /// Number of shares.
    count: u32,
    mode: Mode,
    #[serde(default)]
    message: String,
    /// Default `packets.default_ttl_seconds` (24 h); `packets.min_ttl_seconds` (60) to `packets.max_ttl_seconds` (7 days).
    ttl_seconds: Option<u32>,
    /// A skin name the landing page uses; carried on the landing URL.
    theme: Option<String>,
    /// `utm_source`, `utm_medium`, `utm_campaign`, `utm_term`, `utm_content`.
    #[serde(default)]
    utm: BTreeMap<String, String>,
    /// Claims must come from within this circle.
    geofence: Option<Geofence>,
    /// Campaign packets (admin token only): the merchant it advertises and
    /// whose account (`merchant:<name>`) funds it.
    merchant: Option<String>,
    /// Campaign packets: a referral budget (fen) held with the packet.
    referral_budget_fen: Option<u64>,
    /// Campaign packets: the bonus per referred claimant (default `packets.referral_bonus_fen`).
    referral_bonus_fen: Option<u64>,
}

/// A claim: whole to the packet's sender and the operator; to anyone else
/// its amount alone, and only once the packet is closed.
#[derive(Serialize, ToSchema)]
pub struct ClaimView {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    amount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<UserId>,
    #[serde(skip_serializing_if = "is_zero")]
    bonus: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, ToSchema)]
pub struct PacketView {
    id: PacketId,
    /// `open`, `empty` (every share claimed, settling), `expired` (settling)
    /// or `closed` (settled: the rest went back to the funder).
    status: &'static str,
    mode: Mode,
    /// In fen.
    total: u64,
    count: u32,
    /// The smallest share (fen), an input of the split.
    min_share: u64,
    claimed_count: u32,
    claimed_amount: u64,
    message: String,
    theme: Option<String>,
    utm: BTreeMap<String, String>,
    /// The landing URL (what the QR code holds).
    url: String,
    /// Where to claim (POST).
    claim_url: String,
    sender: Option<UserId>,
    /// Campaign packets: the merchant they advertise.
    merchant: Option<String>,
    /// Marketing packets must be labelled as advertising.
    advertising: bool,
    geofence: Option<Geofence>,
    referral: Option<Referral>,
    /// blake3 of the split seed, shown from creation.
    commitment: String,
    /// The split seed (hex), revealed once the packet is closed: anyone can
    /// check `blake3(seed) == commitment` and recompute every share.
    seed: Option<String>,
    created_at: String,
    expires_at: String,
    closed_at: Option<String>,
    /// Released back to the funder at close.
    refunded: Option<u64>,
    /// Times the packet was looked at by others than its sender.
    opens: u64,
    /// Claims are paused by the circuit breaker until then.
    paused_until: Option<String>,
    /// The viewer's own share, when the viewer (a user's session) claimed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    your_claim: Option<ClaimView>,
    /// A page of the claims, in claim order (`claims_offset`, `claims_limit`).
    claims: Vec<ClaimView>,
}

/// How much of the claims a viewer sees: who claimed what is the sender's
/// (and the operator's) to know; everyone else sees the counts, their own
/// share, and, once the packet is closed, the amounts in claim order (what
/// `qrgate verify-packet` checks against the revealed seed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sees {
    Everything,
    Amounts,
}

fn claim_view(c: &crate::domain::packet::Claim, sees: Sees) -> ClaimView {
    match sees {
        Sees::Everything => ClaimView {
            user_id: Some(c.user),
            amount: c.amount,
            at: Some(rfc3339(c.at)),
            referrer: c.referrer,
            bonus: c.bonus,
        },
        Sees::Amounts => ClaimView {
            user_id: None,
            amount: c.amount,
            at: None,
            referrer: None,
            bonus: 0,
        },
    }
}

fn view(state: &AppState, s: PacketState, sees: Sees) -> PacketView {
    let p = &s.packet;
    let now = now();
    let status = match (&p.closed, s.tally.claims >= p.count) {
        (Some(_), _) => "closed",
        (None, true) => "empty",
        (None, false) if now >= p.expires_at => "expired",
        _ => "open",
    };
    let paused = s.paused_until_ms > crate::clock::now_ms();
    PacketView {
        id: p.id,
        status,
        mode: p.mode,
        total: p.total,
        count: p.count,
        min_share: p.min_share,
        claimed_count: s.tally.claims,
        claimed_amount: s.tally.claimed,
        message: p.message.clone(),
        theme: p.theme.clone(),
        utm: p.utm.clone(),
        url: packet::landing_url(&state.base_url, p),
        claim_url: format!("{}/v1/packets/{}/claim", state.base_url, p.id),
        sender: p.sender,
        merchant: p.merchant.clone(),
        advertising: p.merchant.is_some(),
        geofence: p.geofence,
        referral: p.referral,
        commitment: p.commitment.clone(),
        seed: p.closed.map(|_| p.seed.clone()),
        created_at: rfc3339(p.created_at),
        expires_at: rfc3339(p.expires_at),
        closed_at: p.closed.map(|c| rfc3339(c.at)),
        refunded: p.closed.map(|c| c.refunded),
        opens: s.opens,
        paused_until: paused.then(|| rfc3339(s.paused_until_ms.div_euclid(1000) + 1)),
        claims: if sees == Sees::Everything || p.closed.is_some() {
            s.claims.iter().map(|c| claim_view(c, sees)).collect()
        } else {
            Vec::new()
        },
        your_claim: s.own.as_ref().map(|c| claim_view(c, Sees::Everything)),
    }
}

/// Build the packet a request asks for (not checked against amounts and
/// daily totals: the funder's actor does that).
fn draft(state: &AppState, who: &Caller, b: &NewPacket) -> Result<Packet, ApiError> {
    let cfg = &state.config.packets;
    packet::check_presentation(
        &b.message,
        cfg.max_message_chars,
        b.theme.as_deref(),
        &b.utm,
    )
    .map_err(ApiError::Validation)?;
    let ttl = b.ttl_seconds.unwrap_or(cfg.default_ttl_seconds);
    if !(cfg.min_ttl_seconds..=cfg.max_ttl_seconds).contains(&ttl) {
        return Err(ApiError::validation(format!(
            "ttl_seconds must be between {} and {}",
            cfg.min_ttl_seconds, cfg.max_ttl_seconds
        )));
    }
    if b.geofence.is_some_and(|g| !g.valid()) {
        return Err(ApiError::validation(
            "geofence needs a valid lat/lon and a radius_m of 10 to 100000",
        ));
    }
    let (funder, sender, merchant) = match (who, &b.merchant) {
        (Caller::User(u), None) => {
            super::not_frozen(state, *u)?;
            (AccountId::Wallet(*u), Some(*u), None)
        }
        (Caller::User(_), Some(_)) => {
            return Err(ApiError::forbidden(
                "campaign packets (with `merchant`) are created with the admin token",
            ))
        }
        (Caller::Admin, Some(m)) if valid_kind(m) => {
            (AccountId::Merchant(m.clone()), None, Some(m.clone()))
        }
        (Caller::Admin, Some(_)) => {
            return Err(ApiError::validation(
                "merchant must be 1 to 32 of a-z, 0-9 and _",
            ))
        }
        (Caller::Admin, None) => {
            return Err(ApiError::forbidden(
                "the admin token creates campaign packets only: name the `merchant`",
            ))
        }
    };
    let referral = match (b.referral_budget_fen, b.referral_bonus_fen) {
        (None, None) => None,
        (_, _) if merchant.is_none() => {
            return Err(ApiError::validation(
                "referral bonuses are for campaign packets",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::validation(
                "referral_bonus_fen needs referral_budget_fen",
            ))
        }
        (Some(budget), bonus) => {
            let bonus = bonus.unwrap_or(cfg.referral_bonus_fen);
            if bonus == 0 || bonus > cfg.max_referral_bonus_fen || budget < bonus {
                return Err(ApiError::validation(format!(
                    "referral_bonus_fen must be 1 to {} and at most referral_budget_fen",
                    cfg.max_referral_bonus_fen
                )));
            }
            if budget > cfg.max_total_fen {
                return Err(ApiError::validation(format!(
                    "referral_budget_fen must be at most {} fen",
                    cfg.max_total_fen
                )));
            }
            Some(Referral {
                bonus_fen: bonus,
                budget_fen: budget,
            })
        }
    };
    let id = PacketId::random();
    let seed = random_bytes::<32>();
    let created_at = now();
    Ok(Packet {
        id,
        funder,
        sender,
        merchant,
        total: b.total,
        count: b.count,
        mode: b.mode,
        min_share: cfg.min_share_fen,
        message: b.message.clone(),
        theme: b.theme.clone(),
        utm: b.utm.clone(),
        geofence: b.geofence,
        referral,
        seed: packet::seed_hex(&seed),
        commitment: packet::commitment(&seed),
        created_at,
        expires_at: created_at + i64::from(ttl),
        hold: TransferId::derive("packet hold", &[id.as_bytes()]),
        closed: None,
    })
}

/// Create a red packet. Its total (plus any referral budget) is held from
/// the funder's wallet at once; `insufficient_funds` holds nothing. Needs an
/// `Idempotency-Key`: the same key and body answer the original packet (200).
#[utoipa::path(
    request_body = NewPacket,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 201, body = PacketView), (status = 200, body = PacketView, description = "a retry"),
        (status = 400, body = Problem), (status = 403, body = Problem, description = "account_frozen, forbidden"),
        (status = 409, body = Problem, description = "insufficient_funds, daily_packet_limit"),
        (status = 422, body = Problem, description = "packet_* limits, idempotency_key_reused"),
    ),
    security(("bearer" = [])), tag = "packets"
)]
#[post("/v1/packets")]
pub async fn create_packet(
    state: web::Data<AppState>,
    req: HttpRequest,
    who: Authed,
    body: web::Json<NewPacket>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let p = draft(&state, &who.0, &body)?;
    let canonical = serde_json::to_vec(&*body).map_err(|_| ApiError::Internal)?;
    let request_hash = blake3::hash(&canonical).to_hex().to_string();
    let key_hash = *blake3::hash(key.as_bytes()).as_bytes();
    let c = state
        .wallets
        .create_packet(key_hash, request_hash, p)
        .await?;
    let v = view(
        &state,
        PacketState {
            packet: c.packet,
            claims: Vec::new(),
            tally: Default::default(),
            opens: 0,
            paused_until_ms: 0,
            own: None,
        },
        Sees::Everything,
    );
    Ok(if c.fresh {
        HttpResponse::Created().json(v)
    } else {
        HttpResponse::Ok().json(v)
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClaimsPage {
    /// First claim listed (claim order, from 0); default 0.
    claims_offset: Option<usize>,
    /// Claims listed, 0 to 1000; default 100.
    claims_limit: Option<usize>,
}

/// A red packet: its status, shares claimed (who, how much, when; a page of
/// them), counts and opens. Anyone with its link may look; the split seed
/// appears once it closed.
#[utoipa::path(
    params(("id" = String, Path, description = "packet id"), ClaimsPage),
    responses((status = 200, body = PacketView), (status = 404, body = Problem)),
    tag = "packets"
)]
#[get("/v1/packets/{id}")]
pub async fn get_packet(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<ClaimsPage>,
) -> Result<HttpResponse, ApiError> {
    let pid = id(PacketId::parse, &path)?;
    let limit = q.claims_limit.unwrap_or(100);
    if limit > 1000 {
        return Err(ApiError::validation("claims_limit must be at most 1000"));
    }
    let from = q.claims_offset.unwrap_or(0);
    // Opens count views by anyone but the sender.
    let viewer = super::auth::bearer_user(&state, &req);
    let s = state
        .wallets
        .packet(pid, true, from..from.saturating_add(limit), viewer)
        .await?;
    let own = viewer.is_some() && viewer == s.packet.sender;
    let sees = if own || super::auth::is_admin(&state, &req) {
        Sees::Everything
    } else {
        Sees::Amounts
    };
    let mut v = view(&state, s, sees);
    if own {
        v.opens = v.opens.saturating_sub(1);
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SizeQuery {
    /// Image width and height in pixels, 128 to 2048 (default 512), rounded
    /// down to a multiple of 64; without a session at most 1024.
    size: Option<u32>,
}

/// QR code (PNG, error correction M) of the packet's landing URL. Anyone
/// may fetch it; without a session, a client network fetches at most
/// `limits.anonymous_images_per_minute_per_ip` a minute.
#[utoipa::path(
    params(("id" = String, Path, description = "packet id"), SizeQuery),
    responses(
        (status = 200, content_type = "image/png", description = "PNG"),
        (status = 404, body = Problem),
        (status = 429, body = Problem, description = "rate_limited: too many images from this network without a session")
    ),
    tag = "packets"
)]
#[get("/v1/packets/{id}/qr.png")]
pub async fn qr_png(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<SizeQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::qr;
    let pid = id(PacketId::parse, &path)?;
    let anonymous =
        super::auth::bearer_user(&state, &req).is_none() && !super::auth::is_admin(&state, &req);
    let cap = if anonymous {
        if let Some(ip) = super::forward::client_ip(&req) {
            state
                .image_limiter
                .check_key(&super::limits::network(ip))
                .map_err(|nu| {
                    ApiError::rate_limited(
                        "images per network without a session",
                        &nu,
                        &state.groups.shared().clock,
                    )
                })?;
        }
        qr::ANONYMOUS_MAX_SIZE
    } else {
        qr::MAX_SIZE
    };
    let size = qr::requested_size(q.size, cap).map_err(|e| ApiError::validation(e.to_string()))?;
    let key = (qr::Subject::Packet(pid), 0, size, 0);
    if let Some(png) = state.qr_cache.get(&key) {
        crate::metrics::QR_RENDERS.with_label_values(&["hit"]).inc();
        return Ok(qr_answer(png));
    }
    crate::metrics::QR_RENDERS
        .with_label_values(&["miss"])
        .inc();
    let packet = state.storage.packet(pid)?.ok_or(Refusal::NotFound)?;
    let url = packet::landing_url(&state.base_url, &packet);
    let png: bytes::Bytes = web::block(move || qr::render_png(&url, size))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|e| match e {
            qr::QrError::BadSize => ApiError::validation(e.to_string()),
            _ => {
                tracing::error!(error = %e, "QR rendering failed");
                ApiError::Internal
            }
        })?
        .into();
    state.qr_cache.insert(key, png.clone());
    Ok(qr_answer(png))
}

fn qr_answer(png: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/png")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(png)
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Where the claimant is (needed for packets with a geofence).
    lat: Option<f64>,
    lon: Option<f64>,
    /// The user whose share link brought this claimant (campaign referral).
    #[serde(rename = "ref")]
    referrer: Option<UserId>,
}

#[derive(Serialize, ToSchema)]
pub struct ClaimResult {
    packet_id: PacketId,
    /// The share won, in fen (now in the caller's wallet).
    amount: u64,
    /// Shares left.
    left: u32,
    /// This claimant's own share link: new claimants through it earn them a
    /// referral bonus (campaign packets with a referral budget).
    share_url: String,
}

/// Claim a share. The body is optional (`{}`, or `lat`/`lon` for a
/// geofenced packet, `ref` for a referral link).
#[utoipa::path(
    params(("id" = String, Path, description = "packet id")),
    request_body(content = ClaimBody, description = "optional"),
    responses(
        (status = 200, body = ClaimResult),
        (status = 403, body = Problem, description = "outside_geofence, account_frozen, challenge_required (campaign packets, for an account that looks farmed: new, on a shared device, or claiming in a burst; solve it and answer at POST /v1/challenges/{id}, which answers this claim's 200)"),
        (status = 404, body = Problem, description = "packet_not_found"),
        (status = 409, body = Problem, description = "already_claimed"),
        (status = 410, body = Problem, description = "packet_empty, packet_expired"),
        (status = 429, body = Problem, description = "rate_limited"),
        (status = 503, body = Problem, description = "packet_paused (circuit breaker; Retry-After)"),
    ),
    security(("bearer" = [])), tag = "packets"
)]
#[post("/v1/packets/{id}/claim")]
pub async fn claim(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: User,
    path: web::Path<String>,
    body: super::body::RawBody,
) -> Result<HttpResponse, ApiError> {
    let pid = id(PacketId::parse, &path)?;
    let b: ClaimBody = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?
    };
    super::not_frozen(&state, user.0)?;
    let at = match (b.lat, b.lon) {
        (Some(lat), Some(lon)) if packet::valid_point(lat, lon) => Some((lat, lon)),
        (None, None) => None,
        _ => {
            return Err(ApiError::validation(
                "lat and lon go together: latitude -90..90, longitude -180..180",
            ))
        }
    };
    let ask = Ask {
        packet: pid,
        at,
        referrer: b.referrer,
        device: super::device(&state, &req)?,
        solved: false,
    };
    take_claim(&state, user.0, ask).await
}

/// A claim as its request asked it.
pub(super) struct Ask {
    pub packet: PacketId,
    pub at: Option<(f64, f64)>,
    pub referrer: Option<UserId>,
    /// The keyed hash of the client's device id.
    pub device: Option<[u8; 16]>,
    /// It comes with a solved challenge (`POST /v1/challenges/{id}`).
    pub solved: bool,
}

/// Take a claim once its request was read: the user's rate limit, the
/// risk signals, then the packet's own decision. A claim the packet
/// refuses for want of a challenge answers the challenge to solve, which
/// carries the claim so that answering it completes the claim.
pub(super) async fn take_claim(
    state: &AppState,
    user: UserId,
    ask: Ask,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::risk::{self, ClaimSignals, Mode};
    super::limits::take(state, super::limits::Limit::UserClaims(user)).await?;
    let p = &state.config.risk;
    let store = &state.groups.shared().signals;
    let now = now();
    // Only a claim through a share link can earn a bonus.
    let earns_referral = match ask.referrer {
        Some(_) => {
            store.account_age(&state.storage, user, now)?
                >= state.config.packets.referral_min_account_age_seconds
        }
        None => false,
    };
    let mut challenge_due = false;
    if !ask.solved && p.mode != Mode::Off {
        let s = store.observe(
            &state.storage,
            user,
            ask.device,
            crate::groups::signals::Activity::Claim,
            now,
            p,
        )?;
        if let Some(d) = ask.device {
            store.note_device(d, user);
        }
        let a = risk::assess_claim(
            &ClaimSignals {
                account_age_seconds: s.account_age_seconds,
                user_recent_claims: s.recent,
                device_accounts: s.device_accounts,
            },
            p,
        );
        challenge_due = risk::claim_needs_challenge(&a, p);
    }
    let claimed = state
        .wallets
        .claim_packet(
            ask.packet,
            ClaimAsk {
                user,
                at: ask.at,
                referrer: ask.referrer,
                challenge_due,
                earns_referral,
            },
        )
        .await;
    let pid = ask.packet;
    let c = match claimed {
        Ok(c) => c,
        Err(ApiError::Packet(Refusal::ChallengeRequired)) => {
            let cp = &p.challenge;
            let c = Challenge {
                kind: cp.kind,
                bits: cp.pow_bits,
                subject: Subject::Claim {
                    packet: pid,
                    at: ask.at,
                    referrer: ask.referrer,
                },
                user,
                issued_at: now,
                expires_at: now + cp.ttl_seconds,
                salt: random_bytes(),
                score: 0,
                reasons: 0,
            };
            crate::metrics::CHALLENGES
                .with_label_values(&[cp.kind.as_str(), "issued"])
                .inc();
            return Err(ApiError::ChallengeRequired(Box::new(
                c.offer(state.keys.challenge_key(), cp),
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(HttpResponse::Ok().json(ClaimResult {
        packet_id: pid,
        amount: c.claim.amount,
        left: c.left,
        share_url: format!("{}/p/{pid}?ref={}", state.base_url, user),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlacklistBody {
    /// Why (kept for the record), up to 200 characters.
    #[serde(default)]
    reason: String,
}

/// Freeze a user (an alias of `POST /v1/admin/users/{id}/freeze` that
/// answers with the entry).
#[utoipa::path(
    params(("user_id" = String, Path)),
    request_body = BlacklistBody,
    responses((status = 200, body = BlacklistEntry), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "packets"
)]
#[put("/v1/admin/blacklist/{user_id}")]
pub async fn blacklist_add(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
    body: web::Json<BlacklistBody>,
) -> Result<HttpResponse, ApiError> {
    let u = id(UserId::parse, &path)?;
    Ok(HttpResponse::Ok().json(state.accounts.freeze(u, &body.reason).await?))
}

/// Unfreeze a user (an alias of `POST /v1/admin/users/{id}/unfreeze`; one
/// from `packets.blacklist` in the config stays).
#[utoipa::path(
    params(("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "packets"
)]
#[delete("/v1/admin/blacklist/{user_id}")]
pub async fn blacklist_remove(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let u = id(UserId::parse, &path)?;
    state.accounts.unfreeze(u).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Frozen users (admin API entries; config entries are listed with reason `config`).
#[utoipa::path(
    responses((status = 200, body = [BlacklistEntry]), (status = 403, body = Problem)),
    security(("bearer" = [])), tag = "packets"
)]
#[get("/v1/admin/blacklist")]
pub async fn blacklist_list(
    state: web::Data<AppState>,
    _: Admin,
) -> Result<HttpResponse, ApiError> {
    let mut list = state.storage.frozen()?;
    for s in &state.config.packets.blacklist {
        if let Ok(u) = UserId::parse(s) {
            if !list.iter().any(|e| e.user_id == u) {
                list.push(BlacklistEntry {
                    user_id: u,
                    reason: "config".into(),
                    at: 0,
                });
            }
        }
    }
    Ok(HttpResponse::Ok().json(list))
}
