//! Wallets, earnings and the books check.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, User};
use super::AppState;
use crate::clock::rfc3339;
use crate::domain::ids::{TransferId, UserId};
use crate::domain::ledger::{valid_kind, AccountId, Entry, Transfer};
use crate::error::{ApiError, Problem};
use crate::wallets::BooksCheck;

#[derive(Serialize, ToSchema)]
pub struct WalletView {
    /// Posted balance in fen.
    balance: i64,
    /// Balance minus amounts held by pending transfers (payouts in progress).
    available: i64,
    /// Held by pending transfers.
    held: u64,
    currency: &'static str,
}

fn fen(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The caller's wallet.
#[utoipa::path(
    responses((status = 200, body = WalletView), (status = 401, body = Problem)),
    security(("bearer" = [])), tag = "wallets"
)]
#[get("/v1/wallet")]
pub async fn wallet(state: web::Data<AppState>, user: User) -> Result<HttpResponse, ApiError> {
    let a = state.wallets.account(AccountId::Wallet(user.0)).await?;
    Ok(HttpResponse::Ok().json(WalletView {
        balance: fen(a.balance()),
        available: fen(a.available()),
        held: a.debits_pending,
        currency: "CNY",
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Entries with a `seq` below this (paging backwards); default: the newest.
    before: Option<u64>,
    /// 1 to 200, default 50.
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    seq: u64,
    transfer_id: TransferId,
    /// `earning`, `payout`, ...
    #[schema(value_type = String)]
    reason: crate::domain::ledger::Reason,
    /// `single`, `pending`, `post`, `void`, `expire`.
    kind: String,
    /// Change of the posted balance, in fen (negative: money out).
    amount: i64,
    /// Change of the amount held by pending transfers.
    held: i64,
    /// Posted balance after this entry.
    balance: i64,
    #[schema(value_type = String)]
    counterparty: AccountId,
    user_data: String,
    at: String,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        let p = e.posting;
        EntryView {
            seq: e.seq,
            transfer_id: e.transfer_id,
            reason: e.reason,
            kind: e.kind,
            amount: p.credits_posted - p.debits_posted,
            held: p.debits_pending,
            balance: fen(e.balance),
            counterparty: e.counterparty,
            user_data: e.user_data,
            at: rfc3339(e.at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EntriesPage {
    entries: Vec<EntryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<u64>,
}

/// The caller's wallet entries, newest first.
#[utoipa::path(
    params(EntriesQuery),
    responses((status = 200, body = EntriesPage), (status = 401, body = Problem)),
    security(("bearer" = [])), tag = "wallets"
)]
#[get("/v1/wallet/entries")]
pub async fn entries(
    state: web::Data<AppState>,
    user: User,
    q: web::Query<EntriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 200"));
    }
    let entries = state
        .storage
        .entries(&AccountId::Wallet(user.0), q.before, limit)?;
    let next_before = match entries.last() {
        Some(e) if entries.len() == limit && e.seq > 0 => Some(e.seq),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(EntriesPage {
        entries: entries.into_iter().map(EntryView::from).collect(),
        next_before,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEarning {
    /// The event's id in the caller's system, 1 to 128 printable ASCII
    /// characters. Sending it again credits nothing more.
    event_id: String,
    user_id: UserId,
    /// One of the configured earning kinds.
    kind: String,
    /// In fen, within the configured bounds.
    amount: u64,
}

#[derive(Serialize, ToSchema)]
pub struct EarningView {
    transfer_id: TransferId,
    event_id: String,
    user_id: UserId,
    kind: String,
    amount: u64,
    created_at: String,
}

fn earning_view(t: &Transfer, user: UserId, kind: &str) -> EarningView {
    EarningView {
        transfer_id: t.spec.id,
        event_id: t.spec.user_data.clone(),
        user_id: user,
        kind: kind.to_string(),
        amount: t.spec.amount,
        created_at: rfc3339(t.at),
    }
}

/// Credit a user for an earning event (admin token). Idempotent on
/// `event_id`: 201 when credited, 200 when this event was credited before
/// with the same fields, 409 `exists_with_different_*` otherwise.
#[utoipa::path(
    request_body = NewEarning,
    responses(
        (status = 201, body = EarningView), (status = 200, body = EarningView),
        (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)
    ),
    security(("bearer" = [])), tag = "wallets"
)]
#[post("/v1/earnings")]
pub async fn earn(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<NewEarning>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let w = &state.config.wallets;
    if b.event_id.is_empty()
        || b.event_id.len() > 128
        || !b.event_id.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(ApiError::validation(
            "event_id must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    if !valid_kind(&b.kind) || !w.earning_kinds.contains(&b.kind) {
        return Err(ApiError::validation(format!(
            "kind must be one of: {}",
            w.earning_kinds.join(", ")
        )));
    }
    if b.amount < w.earning_min_fen || b.amount > w.earning_max_fen {
        return Err(ApiError::validation(format!(
            "amount must be between {} and {} fen",
            w.earning_min_fen, w.earning_max_fen
        )));
    }
    if !state.accounts.known(b.user_id).await? {
        return Err(ApiError::UserNotFound);
    }
    let done = state
        .wallets
        .earn(&b.event_id, b.user_id, &b.kind, b.amount)
        .await?;
    let view = earning_view(&done.transfer, b.user_id, &b.kind);
    Ok(if done.fresh {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// Verify the ledger (admin token): every posting sums to zero, every
/// account equals its entries and the journal, no wallet is overdrawn, and
/// the journal's hash chain holds. 409 `ledger_inconsistent` with the
/// findings otherwise. Commits wait while it reads the whole ledger.
#[utoipa::path(
    responses((status = 200, body = BooksCheck), (status = 409, body = Problem)),
    security(("bearer" = [])), tag = "admin"
)]
#[get("/v1/admin/ledger/check")]
pub async fn ledger_check(
    state: web::Data<AppState>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    let report = state.wallets.check().await?;
    if report.report.findings.is_empty() {
        return Ok(HttpResponse::Ok().json(report));
    }
    tracing::error!(
        findings = report.report.findings.len(),
        "ledger check failed"
    );
    Err(ApiError::LedgerInconsistent {
        findings: report.report.findings.len(),
        report: Box::new(serde_json::to_value(&report).map_err(|_| ApiError::Internal)?),
    })
}
