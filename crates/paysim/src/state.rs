//! The simulator's in-memory state: transfer bills, OAuth codes and tokens,
//! faults, bill adjustments, and the rules that act on them (no I/O here:
//! randomness and decryption are handed in by the routes).
//!
//! A bill's life: created `ACCEPTED` and at once `WAIT_USER_CONFIRM` (with
//! a `package_info`); the user confirms ([`State::confirm`]) → `TRANSFERING`
//! → `SUCCESS` / `FAIL` ([`State::settle`]); or the user declines
//! ([`State::decline`]) or never confirms ([`State::expire`]) →
//! `CANCELLED`; or the merchant cancels ([`State::cancel`]) → `CANCELING`
//! → `CANCELLED` ([`State::finish_cancel`]), unless the user confirms
//! first. Every final state is notified once per [`State::complete`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use qrgate_provider::bill::{Bill, BillRow};
use qrgate_provider::notify::{TransferResult, TransferState};
use qrgate_provider::wire::{
    self, CancelReply, CreateReply, QueryReply, TransferBillBody, TransferScene,
};

use super::{APPID, MCHID, PLATFORM_SERIAL};

/// The provider's local time zone (Beijing, UTC+8).
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// `fail_reason` of a transfer to an openid starting with `fail-`.
pub const REASON_PAYEE_ABNORMAL: &str = "PAYEE_ACCOUNT_ABNORMAL";
/// `fail_reason` of a transfer above the amount limit.
pub const REASON_QUOTA: &str = "TRANSFER_QUOTA_EXCEED";
/// `fail_reason` of a transfer whose `user_name` does not match the real
/// name registered with the user's OAuth code.
pub const REASON_NAME: &str = "NAME_NOT_CORRECT";
/// `fail_reason` when a FAIL is forced without a reason.
pub const REASON_OTHER: &str = "OTHER_FAIL_REASON_TYPE";
/// `fail_reason` of a bill the merchant cancelled.
pub const REASON_MCH_CANCEL: &str = "MCH_CANCEL";
/// `fail_reason` of a bill nobody confirmed in time.
pub const REASON_OVERDUE: &str = "OVERDUE_CLOSE";

/// Now in the provider's time zone.
pub fn now() -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&BEIJING)
}

/// RFC 3339 with seconds and the `+08:00` offset.
pub fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// What the simulated user does with a bill waiting for confirmation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirmation {
    /// Confirms after `100 ms × time-factor`.
    #[default]
    Auto,
    /// Waits for `POST /sim/confirm`.
    Hold,
    /// Declines after `100 ms × time-factor`: the bill is `CANCELLED`.
    Refuse,
    /// Never confirms: the bill is `CANCELLED` after `expire_after_ms`.
    Expire,
}

impl Confirmation {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Hold => "hold",
            Self::Refuse => "refuse",
            Self::Expire => "expire",
        }
    }
}

/// Injected faults (`POST /sim/faults` patches them; `GET /sim/faults` shows
/// them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Delay every `/v3` answer by this many milliseconds.
    pub delay_ms: u64,
    /// The next N transfer creates are processed, but answered after 30 s.
    pub timeout_next: u32,
    /// The next N transfer creates answer `500 SYSTEM_ERROR` without being
    /// processed.
    pub fail_5xx_next: u32,
    /// The next N transfer creates are processed, then answer
    /// `500 SYSTEM_ERROR`.
    pub lost_reply_next: u32,
    /// The next N transfer creates answer `429 FREQUENCY_LIMITED` without
    /// being processed.
    pub frequency_limited_next: u32,
    /// The next N transfer creates answer `403 NO_AUTH` without being
    /// processed.
    pub no_auth_next: u32,
    /// Every notification POST is sent twice.
    pub duplicate_notifications: bool,
    /// Every notification POST is sent twice with the same signature,
    /// timestamp and nonce: a replay, as an eavesdropper would send it.
    pub replay_notifications: bool,
    /// First deliveries are batched and sent newest first.
    pub out_of_order: bool,
    /// Responses and notifications are signed with a wrong key.
    pub forge_signatures: bool,
    /// Responses and notifications carry a `WECHATPAY/SIGNTEST/` probe
    /// signature.
    pub probe_signatures: bool,
    /// First deliveries wait for `POST /sim/release` (or this turned off).
    pub hold_notifications: bool,
    /// Confirmed transfers complete by themselves after
    /// `100 ms × time-factor`; when off they stay `TRANSFERING` until
    /// `POST /sim/complete`.
    pub auto_complete: bool,
    /// What the user does with new bills.
    pub confirmation: Confirmation,
    /// With `confirmation: "expire"`: milliseconds until an unconfirmed bill
    /// is closed; default `24 h × time-factor`.
    pub expire_after_ms: Option<u64>,
    /// Cancelled bills stay `CANCELING` (until `/sim/confirm`,
    /// `/sim/complete`, or this turned off).
    pub hold_cancels: bool,
    /// How long an out-of-order batch collects; default `15 s × time-factor`.
    pub batch_window_ms: Option<u64>,
    /// Transfers above this many fen fail with `TRANSFER_QUOTA_EXCEED`.
    pub amount_limit: u64,
    /// The merchant's balance in fen: a create above it is `403 NOT_ENOUGH`.
    pub balance: u64,
}

/// A partial update of [`Faults`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    /// See [`Faults::delay_ms`].
    pub delay_ms: Option<u64>,
    /// See [`Faults::timeout_next`].
    pub timeout_next: Option<u32>,
    /// See [`Faults::fail_5xx_next`].
    pub fail_5xx_next: Option<u32>,
    /// See [`Faults::lost_reply_next`].
    pub lost_reply_next: Option<u32>,
    /// See [`Faults::frequency_limited_next`].
    pub frequency_limited_next: Option<u32>,
    /// See [`Faults::no_auth_next`].
    pub no_auth_next: Option<u32>,
    /// See [`Faults::duplicate_notifications`].
    pub duplicate_notifications: Option<bool>,
    /// See [`Faults::replay_notifications`].
    pub replay_notifications: Option<bool>,
    /// See [`Faults::out_of_order`].
    pub out_of_order: Option<bool>,
    /// See [`Faults::forge_signatures`].
    pub forge_signatures: Option<bool>,
    /// See [`Faults::probe_signatures`].
    pub probe_signatures: Option<bool>,
    /// See [`Faults::hold_notifications`].
    pub hold_notifications: Option<bool>,
    /// See [`Faults::auto_complete`].
    pub auto_complete: Option<bool>,
    /// See [`Faults::confirmation`].
    pub confirmation: Option<Confirmation>,
    /// See [`Faults::expire_after_ms`].
    pub expire_after_ms: Option<u64>,
    /// See [`Faults::hold_cancels`].
    pub hold_cancels: Option<bool>,
    /// See [`Faults::batch_window_ms`].
    pub batch_window_ms: Option<u64>,
    /// See [`Faults::amount_limit`].
    pub amount_limit: Option<u64>,
    /// See [`Faults::balance`].
    pub balance: Option<u64>,
}

impl Faults {
    /// Applies a patch.
    pub fn apply(&mut self, p: &FaultsPatch) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = p.$field {
                    self.$field = v;
                }
            )*};
        }
        set!(
            delay_ms,
            timeout_next,
            fail_5xx_next,
            lost_reply_next,
            frequency_limited_next,
            no_auth_next,
            duplicate_notifications,
            replay_notifications,
            out_of_order,
            forge_signatures,
            probe_signatures,
            hold_notifications,
            auto_complete,
            confirmation,
            hold_cancels,
            amount_limit,
            balance
        );
        if let Some(v) = p.batch_window_ms {
            self.batch_window_ms = Some(v);
        }
        if let Some(v) = p.expire_after_ms {
            self.expire_after_ms = Some(v);
        }
    }
}

/// What a transfer create does with its answer, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFault {
    /// Answer normally.
    None,
    /// Answer `429 FREQUENCY_LIMITED` without processing.
    FrequencyLimited,
    /// Answer `403 NO_AUTH` without processing.
    NoAuth,
    /// Answer `500 SYSTEM_ERROR` without processing.
    Fail5xx,
    /// Process, then answer `500 SYSTEM_ERROR`.
    LostReply,
    /// Process, then answer after 30 s.
    Timeout,
}

/// A bill adjustment for one transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillOverride {
    /// The transfer (`partner_trade_no` is accepted as an alias).
    #[serde(alias = "partner_trade_no")]
    pub out_bill_no: String,
    /// Report this amount (fen) instead.
    #[serde(default)]
    pub amount: Option<u64>,
    /// Report this status instead (`SUCCESS`, `FAIL` or `CANCELLED`).
    #[serde(default)]
    pub status: Option<String>,
    /// Leave the transfer out of the bill.
    #[serde(default)]
    pub omit: bool,
}

/// A bill row for a transfer the simulator does not have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillExtra {
    /// Transfer id (must not be a known transfer's; `partner_trade_no` is
    /// accepted as an alias).
    #[serde(alias = "partner_trade_no")]
    pub out_bill_no: String,
    /// Provider id; generated when absent.
    #[serde(default)]
    pub transfer_bill_no: Option<String>,
    /// Payee.
    pub openid: String,
    /// Fen.
    pub amount: u64,
    /// `SUCCESS` by default.
    #[serde(default)]
    pub status: Option<String>,
    /// Remark.
    #[serde(default)]
    pub description: Option<String>,
    /// Failure code.
    #[serde(default)]
    pub fail_reason: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` Beijing time; now by default (decides the
    /// bill date).
    #[serde(default)]
    pub transfer_time: Option<String>,
    /// Defaults to the simulator's mchid.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Defaults to the simulator's appid.
    #[serde(default)]
    pub appid: Option<String>,
}

/// A notification to deliver.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Envelope id.
    pub id: String,
    /// The transfer it reports.
    pub out_bill_no: String,
    /// Where to POST.
    pub notify_url: String,
    /// The encrypted envelope (signed at each attempt).
    pub body: String,
}

/// One transfer bill.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The create request as first received (`user_name` encrypted).
    pub request: TransferBillBody,
    /// The decrypted `user_name`.
    pub user_name: Option<String>,
    /// The provider's id.
    pub transfer_bill_no: String,
    /// Current state.
    pub state: TransferState,
    /// Failure code when `FAIL` (why, when `CANCELLED`).
    pub fail_reason: Option<String>,
    /// What the app hands to WeChat for the user to confirm (answered while
    /// `WAIT_USER_CONFIRM`).
    pub package_info: String,
    /// What the user was set to do when the bill was made.
    pub confirmation: Confirmation,
    /// Whether the user confirmed (the money then moves, whatever the
    /// merchant asks).
    pub confirmed: bool,
    /// Creation time.
    pub create_time: DateTime<FixedOffset>,
    /// Last change.
    pub update_time: DateTime<FixedOffset>,
    /// Create requests that reached this transfer (first one included).
    pub create_requests: u32,
    /// Cancel requests that reached it.
    pub cancel_requests: u32,
    /// Notifications made for it.
    pub notifications: u32,
    /// Notification POSTs sent.
    pub deliveries: u32,
    /// Notification POSTs answered 200/204.
    pub acks: u32,
}

impl Transfer {
    /// Our number.
    pub fn out_bill_no(&self) -> &str {
        &self.request.out_bill_no
    }

    /// The create answer (`package_info` while `WAIT_USER_CONFIRM` only).
    pub fn create_reply(&self) -> CreateReply {
        CreateReply {
            out_bill_no: self.request.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            create_time: rfc3339(&self.create_time),
            state: self.state,
            fail_reason: self.fail_reason.clone(),
            package_info: (self.state == TransferState::WaitUserConfirm)
                .then(|| self.package_info.clone()),
        }
    }

    /// The query answer.
    pub fn query_reply(&self) -> QueryReply {
        let r = &self.request;
        QueryReply {
            mch_id: MCHID.to_owned(),
            out_bill_no: r.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            appid: r.appid.clone(),
            state: self.state,
            transfer_amount: r.transfer_amount,
            transfer_remark: r.transfer_remark.clone(),
            fail_reason: self.fail_reason.clone(),
            openid: Some(r.openid.clone()),
            user_name: r.user_name.clone(),
            create_time: rfc3339(&self.create_time),
            update_time: rfc3339(&self.update_time),
        }
    }

    /// The cancel answer.
    pub fn cancel_reply(&self) -> CancelReply {
        CancelReply {
            out_bill_no: self.request.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            state: self.state,
            update_time: rfc3339(&self.update_time),
        }
    }

    /// The decrypted notification content.
    pub fn result(&self) -> TransferResult {
        TransferResult {
            mch_id: Some(MCHID.to_owned()),
            mchid: None,
            out_bill_no: self.request.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            state: self.state,
            amount: i64::try_from(self.request.transfer_amount).unwrap_or(i64::MAX),
            openid: self.request.openid.clone(),
            fail_reason: self.fail_reason.clone(),
            create_time: Some(rfc3339(&self.create_time)),
            update_time: rfc3339(&self.update_time),
        }
    }

    /// The `GET /sim/transfers` view (`partner_trade_no`, `desc` and
    /// `check_name` are kept for older readers).
    pub fn view(&self) -> serde_json::Value {
        let r = &self.request;
        serde_json::json!({
            "out_bill_no": r.out_bill_no,
            "partner_trade_no": r.out_bill_no,
            "transfer_bill_no": self.transfer_bill_no,
            "openid": r.openid,
            "amount": r.transfer_amount,
            "transfer_remark": r.transfer_remark,
            "desc": r.transfer_remark,
            "user_name": self.user_name,
            "check_name": if self.user_name.is_some() { "FORCE_CHECK" } else { "NO_CHECK" },
            "transfer_scene_id": r.transfer_scene_id,
            "notify_url": r.notify_url,
            "state": self.state.as_str(),
            "fail_reason": self.fail_reason,
            "package_info": self.package_info,
            "confirmation": self.confirmation.as_str(),
            "confirmed": self.confirmed,
            "create_time": rfc3339(&self.create_time),
            "update_time": rfc3339(&self.update_time),
            "create_requests": self.create_requests,
            "cancel_requests": self.cancel_requests,
            "notifications": self.notifications,
            "deliveries": self.deliveries,
            "acks": self.acks,
        })
    }

    /// Whether a create asks for this same bill: every field but
    /// `notify_url`, the real name compared decrypted.
    fn same_request(&self, other: &TransferBillBody, user_name: Option<&str>) -> bool {
        let a = &self.request;
        a.appid == other.appid
            && a.transfer_scene_id == other.transfer_scene_id
            && a.openid == other.openid
            && self.user_name.as_deref() == user_name
            && a.transfer_amount == other.transfer_amount
            && a.transfer_remark == other.transfer_remark
            && a.user_recv_perception == other.user_recv_perception
            && a.transfer_scene_report_infos == other.transfer_scene_report_infos
    }
}

/// A refusal: HTTP status, error code, message.
pub type Refusal = (u16, &'static str, String);

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    (status, code, message.into())
}

fn param_error(message: impl Into<String>) -> Refusal {
    refuse(400, "PARAM_ERROR", message)
}

/// The decrypted `user_name` of a create: `None` when absent. An encrypted
/// name must come with `Wechatpay-Serial` (`serial`) naming the platform
/// key, and `decrypt` must open it; else `400 PARAM_ERROR`.
pub fn decrypt_user_name(
    body: &TransferBillBody,
    serial: Option<&str>,
    decrypt: impl FnOnce(&str) -> Option<String>,
) -> Result<Option<String>, Refusal> {
    let Some(ciphertext) = body.user_name.as_deref() else {
        return Ok(None);
    };
    if serial != Some(PLATFORM_SERIAL) {
        return Err(param_error(format!(
            "user_name is encrypted: Wechatpay-Serial must be {PLATFORM_SERIAL}"
        )));
    }
    decrypt(ciphertext)
        .map(Some)
        .ok_or_else(|| param_error("user_name cannot be decrypted"))
}

/// Whether `url` is an acceptable `notify_url`: https, or http to a
/// loopback host; no query.
pub fn valid_notify_url(url: &str) -> bool {
    let loopback = url
        .parse::<actix_web::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(qrgate_provider::tls::is_loopback))
        .unwrap_or(false);
    wire::valid_notify_url(url, loopback)
}

/// Checks a create request's fields (with the decrypted `user_name`):
/// `400 APPID_MCHID_NOT_MATCH` for another app, `400 OPENID_MISMATCH` for a
/// `mismatch-` openid, `400 PARAM_ERROR` for anything malformed.
pub fn validate_create(body: &TransferBillBody, user_name: Option<&str>) -> Result<(), Refusal> {
    if body.appid != APPID {
        return Err(refuse(
            400,
            "APPID_MCHID_NOT_MATCH",
            "appid is not bound to this merchant",
        ));
    }
    if !wire::valid_out_bill_no(&body.out_bill_no) {
        return Err(param_error(format!(
            "out_bill_no must be 1 to {} letters and digits",
            wire::MAX_OUT_BILL_NO_LEN
        )));
    }
    if !wire::valid_openid(&body.openid) {
        return Err(param_error("invalid openid"));
    }
    if body.transfer_amount == 0 || i64::try_from(body.transfer_amount).is_err() {
        return Err(param_error("transfer_amount out of range"));
    }
    if !wire::valid_remark(&body.transfer_remark) {
        return Err(param_error(format!(
            "transfer_remark must be 1 to {} characters",
            wire::MAX_REMARK_CHARS
        )));
    }
    let scene = TransferScene {
        id: body.transfer_scene_id.clone(),
        user_recv_perception: body.user_recv_perception.clone(),
        report_infos: body.transfer_scene_report_infos.clone(),
    };
    scene.check().map_err(param_error)?;
    let infos = &body.transfer_scene_report_infos;
    if infos
        .iter()
        .enumerate()
        .any(|(i, a)| infos[..i].iter().any(|b| b.info_type == a.info_type))
    {
        return Err(param_error(
            "transfer_scene_report_infos repeats an info_type",
        ));
    }
    if let Some(url) = &body.notify_url {
        if !valid_notify_url(url) {
            return Err(param_error(
                "notify_url must be https (http only to a loopback host), without a query",
            ));
        }
    }
    match user_name {
        Some(name) if !wire::valid_real_name(name) => {
            return Err(param_error(format!(
                "user_name must be 1 to {} characters",
                wire::MAX_REAL_NAME_CHARS
            )))
        }
        Some(_) if body.transfer_amount < wire::USER_NAME_ALLOWED_FROM_FEN => {
            return Err(param_error("user_name is not allowed below 0.3 yuan"))
        }
        None if body.transfer_amount >= wire::USER_NAME_REQUIRED_FROM_FEN => {
            return Err(param_error(
                "user_name is required from 2,000 yuan (transfer_amount 200000)",
            ))
        }
        _ => {}
    }
    if body.openid.starts_with("mismatch-") {
        return Err(refuse(
            400,
            "OPENID_MISMATCH",
            "openid does not belong to this appid",
        ));
    }
    Ok(())
}

/// A registered OAuth code.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    /// The user.
    pub openid: String,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub struct State {
    /// Transfers by `out_bill_no`.
    pub transfers: BTreeMap<String, Transfer>,
    /// `transfer_bill_no` -> `out_bill_no`.
    pub bill_nos: HashMap<String, String>,
    /// Unused OAuth codes.
    pub codes: HashMap<String, CodeGrant>,
    /// Codes already exchanged.
    pub used_codes: HashSet<String>,
    /// Refresh token -> openid.
    pub refresh_tokens: HashMap<String, String>,
    /// The official account's access tokens (`/cgi-bin/stable_token`).
    pub mp_tokens: HashSet<String>,
    /// The official account's `jsapi_ticket` (made on first request).
    pub jsapi_ticket: Option<String>,
    /// openid -> real name (from `POST /sim/codes`).
    pub real_names: HashMap<String, String>,
    /// Injected faults and limits.
    pub faults: Faults,
    /// Bill adjustments by `out_bill_no`.
    pub overrides: HashMap<String, BillOverride>,
    /// Extra bill rows.
    pub extras: Vec<BillRow>,
    /// Notifications waiting for a release.
    pub held: Vec<Notice>,
    /// Notifications collecting for an out-of-order batch.
    pub batch: Vec<Notice>,
    /// Whether a batch flush is scheduled.
    pub batch_armed: bool,
    seq: u64,
}

impl State {
    /// Empty state with the given limits.
    pub fn new(amount_limit: u64, balance: u64) -> Self {
        Self {
            transfers: BTreeMap::new(),
            bill_nos: HashMap::new(),
            codes: HashMap::new(),
            used_codes: HashSet::new(),
            refresh_tokens: HashMap::new(),
            mp_tokens: HashSet::new(),
            jsapi_ticket: None,
            real_names: HashMap::new(),
            faults: Faults {
                delay_ms: 0,
                timeout_next: 0,
                fail_5xx_next: 0,
                lost_reply_next: 0,
                frequency_limited_next: 0,
                no_auth_next: 0,
                duplicate_notifications: false,
                replay_notifications: false,
                out_of_order: false,
                forge_signatures: false,
                probe_signatures: false,
                hold_notifications: false,
                auto_complete: true,
                confirmation: Confirmation::Auto,
                expire_after_ms: None,
                hold_cancels: false,
                batch_window_ms: None,
                amount_limit,
                balance,
            },
            overrides: HashMap::new(),
            extras: Vec::new(),
            held: Vec::new(),
            batch: Vec::new(),
            batch_armed: false,
            seq: 0,
        }
    }

    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Consumes one create fault counter, if any is set.
    pub fn take_create_fault(&mut self) -> CreateFault {
        let f = &mut self.faults;
        if f.frequency_limited_next > 0 {
            f.frequency_limited_next -= 1;
            CreateFault::FrequencyLimited
        } else if f.no_auth_next > 0 {
            f.no_auth_next -= 1;
            CreateFault::NoAuth
        } else if f.fail_5xx_next > 0 {
            f.fail_5xx_next -= 1;
            CreateFault::Fail5xx
        } else if f.lost_reply_next > 0 {
            f.lost_reply_next -= 1;
            CreateFault::LostReply
        } else if f.timeout_next > 0 {
            f.timeout_next -= 1;
            CreateFault::Timeout
        } else {
            CreateFault::None
        }
    }

    /// The bill of a `transfer_bill_no`.
    pub fn by_bill_no(&self, transfer_bill_no: &str) -> Option<&Transfer> {
        self.bill_nos
            .get(transfer_bill_no)
            .and_then(|no| self.transfers.get(no))
    }

    /// Creates a bill (validated, `user_name` decrypted), or finds the one
    /// with the same number and fields. A new bill is `WAIT_USER_CONFIRM`
    /// with `package_info`, and the user will act per `faults.confirmation`.
    /// `Ok((reply, true))` when it is new (schedule what the user does).
    pub fn create(
        &mut self,
        body: TransferBillBody,
        user_name: Option<String>,
        package_info: String,
        now: DateTime<FixedOffset>,
    ) -> Result<(CreateReply, bool), Refusal> {
        if let Some(existing) = self.transfers.get_mut(&body.out_bill_no) {
            existing.create_requests += 1;
            if existing.same_request(&body, user_name.as_deref()) {
                return Ok((existing.create_reply(), false));
            }
            return Err(refuse(
                400,
                "INVALID_REQUEST",
                "out_bill_no already used with different parameters: query it",
            ));
        }
        if self.faults.balance < body.transfer_amount {
            return Err(refuse(
                403,
                "NOT_ENOUGH",
                "merchant balance insufficient; retry with the same out_bill_no",
            ));
        }
        self.faults.balance -= body.transfer_amount;
        let seq = self.next_seq();
        let transfer = Transfer {
            transfer_bill_no: format!("1330{}{seq:020}", now.format("%Y%m%d")),
            // ACCEPTED, and at once waiting for the user.
            state: TransferState::WaitUserConfirm,
            fail_reason: None,
            package_info,
            confirmation: self.faults.confirmation,
            confirmed: false,
            create_time: now,
            update_time: now,
            create_requests: 1,
            cancel_requests: 0,
            notifications: 0,
            deliveries: 0,
            acks: 0,
            user_name,
            request: body,
        };
        let reply = transfer.create_reply();
        self.bill_nos.insert(
            transfer.transfer_bill_no.clone(),
            transfer.request.out_bill_no.clone(),
        );
        self.transfers
            .insert(transfer.request.out_bill_no.clone(), transfer);
        Ok((reply, true))
    }

    fn get_mut(&mut self, out_bill_no: &str) -> Result<&mut Transfer, Refusal> {
        self.transfers
            .get_mut(out_bill_no)
            .ok_or_else(|| refuse(404, "NOT_FOUND", "no such transfer bill"))
    }

    /// The user confirms: `WAIT_USER_CONFIRM` or `CANCELING` →
    /// `TRANSFERING` (a confirmation during a cancel wins). `409` in any
    /// other state, `404` when unknown.
    pub fn confirm(
        &mut self,
        out_bill_no: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Transfer, Refusal> {
        let t = self.get_mut(out_bill_no)?;
        if !matches!(
            t.state,
            TransferState::WaitUserConfirm | TransferState::Canceling
        ) {
            return Err(refuse(
                409,
                "NOT_WAITING",
                format!("bill is {}, not waiting for the user", t.state.as_str()),
            ));
        }
        t.state = TransferState::Transfering;
        t.confirmed = true;
        t.update_time = now;
        Ok(t.clone())
    }

    /// The user declines: `WAIT_USER_CONFIRM` → `CANCELLED` (notify). `409`
    /// in any other state.
    pub fn decline(
        &mut self,
        out_bill_no: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Transfer, Refusal> {
        let t = self.get_mut(out_bill_no)?;
        if t.state != TransferState::WaitUserConfirm {
            return Err(refuse(
                409,
                "NOT_WAITING",
                format!("bill is {}, not waiting for the user", t.state.as_str()),
            ));
        }
        self.complete(out_bill_no, TransferState::Cancelled, None, now)
    }

    /// Nobody confirmed in time: a bill still `WAIT_USER_CONFIRM` is
    /// `CANCELLED` with `OVERDUE_CLOSE` (notify); `None` otherwise.
    pub fn expire(&mut self, out_bill_no: &str, now: DateTime<FixedOffset>) -> Option<Transfer> {
        let waiting = self
            .transfers
            .get(out_bill_no)
            .is_some_and(|t| t.state == TransferState::WaitUserConfirm);
        waiting
            .then(|| {
                self.complete(
                    out_bill_no,
                    TransferState::Cancelled,
                    Some(REASON_OVERDUE.into()),
                    now,
                )
                .ok()
            })
            .flatten()
    }

    /// The simulated user acts on a new bill in `auto` or `refuse` mode: a
    /// bill still `WAIT_USER_CONFIRM` is confirmed (`TRANSFERING`, nothing
    /// to notify) or declined (`CANCELLED`, notify). `None` when there is
    /// nothing to do.
    pub fn user_acts(&mut self, out_bill_no: &str, now: DateTime<FixedOffset>) -> Option<Transfer> {
        let t = self.transfers.get(out_bill_no)?;
        if t.state != TransferState::WaitUserConfirm {
            return None;
        }
        match t.confirmation {
            Confirmation::Auto => self.confirm(out_bill_no, now).ok(),
            Confirmation::Refuse => self.decline(out_bill_no, now).ok(),
            Confirmation::Hold | Confirmation::Expire => None,
        }
    }

    /// The merchant cancels: `ACCEPTED`, `PROCESSING` or
    /// `WAIT_USER_CONFIRM` → `CANCELING` (`true`: schedule the
    /// cancellation); `CANCELING` and `CANCELLED` answer as they are
    /// (`false`); past the user's confirmation it is `400 INVALID_REQUEST`;
    /// unknown `404 NOT_FOUND`.
    pub fn cancel(
        &mut self,
        out_bill_no: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<(CancelReply, bool), Refusal> {
        let t = self.get_mut(out_bill_no)?;
        t.cancel_requests += 1;
        match t.state {
            TransferState::Accepted
            | TransferState::Processing
            | TransferState::WaitUserConfirm => {
                t.state = TransferState::Canceling;
                t.update_time = now;
                Ok((t.cancel_reply(), true))
            }
            TransferState::Canceling | TransferState::Cancelled => Ok((t.cancel_reply(), false)),
            other => Err(refuse(
                400,
                "INVALID_REQUEST",
                format!(
                    "bill is {}: the user has confirmed, it cannot be cancelled",
                    other.as_str()
                ),
            )),
        }
    }

    /// A cancellation goes through: a bill still `CANCELING` (and
    /// `hold_cancels` off) is `CANCELLED` with `MCH_CANCEL` (notify);
    /// `None` otherwise.
    pub fn finish_cancel(
        &mut self,
        out_bill_no: &str,
        now: DateTime<FixedOffset>,
    ) -> Option<Transfer> {
        if self.faults.hold_cancels {
            return None;
        }
        let canceling = self
            .transfers
            .get(out_bill_no)
            .is_some_and(|t| t.state == TransferState::Canceling);
        canceling
            .then(|| {
                self.complete(
                    out_bill_no,
                    TransferState::Cancelled,
                    Some(REASON_MCH_CANCEL.into()),
                    now,
                )
                .ok()
            })
            .flatten()
    }

    /// Bills waiting in `CANCELING`.
    pub fn canceling(&self) -> Vec<String> {
        self.transfers
            .values()
            .filter(|t| t.state == TransferState::Canceling)
            .map(|t| t.request.out_bill_no.clone())
            .collect()
    }

    /// A confirmed bill completes on its own: `TRANSFERING` (and
    /// `auto_complete` on) → its [`natural_outcome`](Self::natural_outcome)
    /// (notify); `None` otherwise.
    pub fn settle(&mut self, out_bill_no: &str, now: DateTime<FixedOffset>) -> Option<Transfer> {
        if !self.faults.auto_complete {
            return None;
        }
        let t = self.transfers.get(out_bill_no)?;
        if t.state != TransferState::Transfering {
            return None;
        }
        let (state, reason) = self.natural_outcome(t);
        self.complete(out_bill_no, state, reason, now).ok()
    }

    /// The final state a confirmed transfer reaches on its own.
    pub fn natural_outcome(&self, t: &Transfer) -> (TransferState, Option<String>) {
        let r = &t.request;
        if r.openid.starts_with("fail-") {
            return (TransferState::Fail, Some(REASON_PAYEE_ABNORMAL.into()));
        }
        if r.transfer_amount > self.faults.amount_limit {
            return (TransferState::Fail, Some(REASON_QUOTA.into()));
        }
        if let (Some(name), Some(real)) = (&t.user_name, self.real_names.get(&r.openid)) {
            if name != real {
                return (TransferState::Fail, Some(REASON_NAME.into()));
            }
        }
        (TransferState::Success, None)
    }

    /// Moves a transfer to a final state and counts one more notification;
    /// returns the transfer. `FAIL` and `CANCELLED` refund the merchant.
    /// Refused (404) when unknown, (400) for a state that is not final, and
    /// (409) when already final in another state; a repeated completion in
    /// the same state changes nothing but is notified again.
    pub fn complete(
        &mut self,
        out_bill_no: &str,
        state: TransferState,
        fail_reason: Option<String>,
        now: DateTime<FixedOffset>,
    ) -> Result<Transfer, Refusal> {
        if !state.is_final() {
            return Err(param_error("state must be SUCCESS, FAIL or CANCELLED"));
        }
        let t = self.get_mut(out_bill_no)?;
        let mut refund = 0;
        if t.state.is_final() {
            if t.state != state {
                return Err(refuse(
                    409,
                    "ALREADY_FINAL",
                    format!("transfer is already {}", t.state.as_str()),
                ));
            }
        } else {
            t.state = state;
            t.update_time = now;
            match state {
                TransferState::Fail => {
                    t.confirmed = true;
                    t.fail_reason = Some(fail_reason.unwrap_or_else(|| REASON_OTHER.into()));
                    refund = t.request.transfer_amount;
                }
                TransferState::Cancelled => {
                    t.fail_reason = fail_reason;
                    refund = t.request.transfer_amount;
                }
                _ => t.confirmed = true,
            }
        }
        t.notifications += 1;
        let t = t.clone();
        self.faults.balance = self.faults.balance.saturating_add(refund);
        Ok(t)
    }

    /// Records one notification POST and whether it was acknowledged.
    pub fn record_delivery(&mut self, out_bill_no: &str, acked: bool) {
        if let Some(t) = self.transfers.get_mut(out_bill_no) {
            t.deliveries += 1;
            if acked {
                t.acks += 1;
            }
        }
    }

    /// Adds an extra bill row after checking it can be written.
    pub fn add_extra(
        &mut self,
        extra: BillExtra,
        now: DateTime<FixedOffset>,
    ) -> Result<BillRow, Refusal> {
        let bad = |m: &str| param_error(m);
        if self.transfers.contains_key(&extra.out_bill_no)
            || self
                .extras
                .iter()
                .any(|r| r.partner_trade_no == extra.out_bill_no)
        {
            return Err(refuse(
                409,
                "ALREADY_EXISTS",
                "out_bill_no is already known",
            ));
        }
        let status = match extra.status.as_deref() {
            None => TransferState::Success,
            Some(s) => TransferState::from_wire(s).ok_or_else(|| bad("unknown status"))?,
        };
        let transfer_time = match extra.transfer_time.as_deref() {
            None => now.naive_local(),
            Some(s) => NaiveDateTime::parse_from_str(s, qrgate_provider::bill::TIME_FORMAT)
                .map_err(|_| bad("transfer_time must be YYYY-MM-DD HH:MM:SS"))?,
        };
        let seq = self.next_seq();
        let row = BillRow {
            transfer_time,
            mchid: extra.mchid.unwrap_or_else(|| MCHID.into()),
            appid: extra.appid.unwrap_or_else(|| APPID.into()),
            transfer_bill_no: extra
                .transfer_bill_no
                .unwrap_or_else(|| format!("1339{}{seq:020}", transfer_time.format("%Y%m%d"))),
            partner_trade_no: extra.out_bill_no,
            openid: extra.openid,
            amount: i64::try_from(extra.amount).map_err(|_| bad("amount out of range"))?,
            status,
            description: extra.description.unwrap_or_default(),
            fail_reason: extra.fail_reason,
        };
        let check = Bill {
            rows: vec![row.clone()],
        };
        qrgate_provider::bill::write_bill(&check).map_err(|e| bad(&e.to_string()))?;
        self.extras.push(row.clone());
        Ok(row)
    }

    /// Records a bill override after checking it.
    pub fn set_override(&mut self, o: BillOverride) -> Result<(), Refusal> {
        if !wire::valid_out_bill_no(&o.out_bill_no) {
            return Err(param_error("invalid out_bill_no"));
        }
        if let Some(s) = o.status.as_deref() {
            if !matches!(s, "SUCCESS" | "FAIL" | "CANCELLED") {
                return Err(param_error("status must be SUCCESS, FAIL or CANCELLED"));
            }
        }
        if o.amount
            .is_some_and(|a| a == 0 || i64::try_from(a).is_err())
        {
            return Err(param_error("amount out of range"));
        }
        self.overrides.insert(o.out_bill_no.clone(), o);
        Ok(())
    }

    /// The bill of `date` (Beijing): final transfers created that day, as
    /// adjusted by the overrides, then the extra rows of that day, in time
    /// order.
    pub fn bill(&self, date: NaiveDate) -> Bill {
        let mut rows = Vec::new();
        for t in self.transfers.values() {
            if t.create_time.date_naive() != date {
                continue;
            }
            let o = self.overrides.get(t.out_bill_no());
            if o.is_some_and(|o| o.omit) {
                continue;
            }
            let status = o
                .and_then(|o| o.status.as_deref())
                .and_then(TransferState::from_wire)
                .unwrap_or(t.state);
            if !status.is_final() {
                continue;
            }
            let amount = o
                .and_then(|o| o.amount)
                .unwrap_or(t.request.transfer_amount);
            let fail_reason = match status {
                TransferState::Fail => {
                    Some(t.fail_reason.clone().unwrap_or_else(|| REASON_OTHER.into()))
                }
                TransferState::Cancelled => t.fail_reason.clone(),
                _ => None,
            };
            rows.push(BillRow {
                transfer_time: t.create_time.naive_local(),
                mchid: MCHID.into(),
                appid: t.request.appid.clone(),
                partner_trade_no: t.request.out_bill_no.clone(),
                transfer_bill_no: t.transfer_bill_no.clone(),
                openid: t.request.openid.clone(),
                amount: i64::try_from(amount).unwrap_or(i64::MAX),
                status,
                // Bills cannot carry commas.
                description: t.request.transfer_remark.replace(',', " "),
                fail_reason,
            });
        }
        rows.extend(
            self.extras
                .iter()
                .filter(|r| r.transfer_time.date() == date)
                .cloned(),
        );
        rows.sort_by(|a, b| {
            (a.transfer_time, &a.partner_trade_no).cmp(&(b.transfer_time, &b.partner_trade_no))
        });
        Bill { rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrgate_provider::bill::{parse_bill, write_bill};
    use qrgate_provider::wire::SceneReportInfo;

    fn body(no: &str, openid: &str, amount: u64) -> TransferBillBody {
        let scene = TransferScene::default();
        TransferBillBody {
            appid: APPID.into(),
            out_bill_no: no.into(),
            transfer_scene_id: scene.id,
            openid: openid.into(),
            user_name: None,
            transfer_amount: amount,
            transfer_remark: "payout".into(),
            notify_url: Some("http://127.0.0.1:1/n".into()),
            user_recv_perception: scene.user_recv_perception,
            transfer_scene_report_infos: scene.report_infos,
        }
    }

    fn new_bill(s: &mut State, b: TransferBillBody) -> CreateReply {
        let (reply, fresh) = s.create(b, None, "pkg".into(), now()).expect("create");
        assert!(fresh);
        reply
    }

    #[test]
    fn create_waits_for_the_user_and_is_idempotent_per_number() {
        let mut s = State::new(20_000, 1_000);
        let now = now();
        let (a, fresh) = s
            .create(body("T1", "o1", 100), None, "pkg-1".into(), now)
            .expect("create");
        assert!(fresh);
        assert_eq!(a.state, TransferState::WaitUserConfirm);
        assert_eq!(a.package_info.as_deref(), Some("pkg-1"));
        // Same fields: the same bill, the same package_info.
        let (b, fresh) = s
            .create(body("T1", "o1", 100), None, "pkg-2".into(), now)
            .expect("again");
        assert!(!fresh);
        assert_eq!(a, b);
        assert_eq!(
            s.by_bill_no(&a.transfer_bill_no)
                .expect("by no")
                .out_bill_no(),
            "T1"
        );
        // Another notify_url is the same bill.
        let mut same = body("T1", "o1", 100);
        same.notify_url = Some("http://127.0.0.1:2/other".into());
        assert!(!s.create(same, None, "x".into(), now).expect("same").1);
        // Any other field differs: refused.
        let edits: [&dyn Fn(&mut TransferBillBody); 5] = [
            &|b| b.transfer_amount = 101,
            &|b| b.openid = "o2".into(),
            &|b| b.transfer_remark = "other".into(),
            &|b| b.user_recv_perception = Some("活动奖励".into()),
            &|b| b.transfer_scene_report_infos[0].info_content = "x".into(),
        ];
        for edit in edits {
            let mut b = body("T1", "o1", 100);
            edit(&mut b);
            let err = s.create(b, None, "x".into(), now).expect_err("conflict");
            assert_eq!((err.0, err.1), (400, "INVALID_REQUEST"));
        }
        let err = s
            .create(body("T1", "o1", 100), Some("张三".into()), "x".into(), now)
            .expect_err("a name where there was none");
        assert_eq!(err.1, "INVALID_REQUEST");
        assert_eq!(s.transfers.len(), 1);
        assert_eq!(s.transfers["T1"].create_requests, 9);
        assert_eq!(s.faults.balance, 900);
        let err = s
            .create(body("T2", "o1", 901), None, "x".into(), now)
            .expect_err("balance");
        assert_eq!((err.0, err.1), (403, "NOT_ENOUGH"));

        // Once past WAIT_USER_CONFIRM, the answer has no package_info.
        s.confirm("T1", now).expect("confirm");
        let (c, _) = s
            .create(body("T1", "o1", 100), None, "x".into(), now)
            .expect("again");
        assert_eq!(c.state, TransferState::Transfering);
        assert_eq!(c.package_info, None);
    }

    #[test]
    fn the_decrypted_name_decides_idempotency() {
        let mut s = State::new(1_000_000, 10_000_000);
        let now = now();
        let mut b = body("N1", "o1", 300_000);
        b.user_name = Some("cipher-1".into());
        let (first, _) = s
            .create(b.clone(), Some("张三".into()), "p".into(), now)
            .expect("create");
        // A new ciphertext of the same name (OAEP is randomised).
        b.user_name = Some("cipher-2".into());
        let (again, fresh) = s
            .create(b.clone(), Some("张三".into()), "p".into(), now)
            .expect("same name");
        assert!(!fresh);
        assert_eq!(first, again);
        // The query echoes the first ciphertext.
        assert_eq!(
            s.transfers["N1"].query_reply().user_name.as_deref(),
            Some("cipher-1")
        );
        let err = s
            .create(b, Some("李四".into()), "p".into(), now)
            .expect_err("other name");
        assert_eq!(err.1, "INVALID_REQUEST");
    }

    #[test]
    fn user_name_needs_the_serial_and_must_decrypt() {
        let mut b = body("N1", "o1", 100);
        assert_eq!(
            decrypt_user_name(&b, None, |_| panic!("nothing to decrypt")),
            Ok(None)
        );
        b.user_name = Some("c".into());
        let ok = |c: &str| (c == "c").then(|| "张三".to_owned());
        assert_eq!(
            decrypt_user_name(&b, Some(PLATFORM_SERIAL), ok),
            Ok(Some("张三".into()))
        );
        let err = decrypt_user_name(&b, None, ok).expect_err("no serial");
        assert_eq!(err.1, "PARAM_ERROR");
        let err = decrypt_user_name(&b, Some("OTHER"), ok).expect_err("other serial");
        assert_eq!(err.1, "PARAM_ERROR");
        let err = decrypt_user_name(&b, Some(PLATFORM_SERIAL), |_| None).expect_err("garbage");
        assert_eq!(err.1, "PARAM_ERROR");
    }

    #[test]
    fn create_validation() {
        let ok = body("T1", "o1", 1);
        validate_create(&ok, None).expect("valid");
        let mut no_url = ok.clone();
        no_url.notify_url = None;
        validate_create(&no_url, None).expect("notify_url is optional");
        let mut https = ok.clone();
        https.notify_url = Some("https://merchant.example/notify".into());
        validate_create(&https, None).expect("https anywhere");

        let refused = |edit: &dyn Fn(&mut TransferBillBody), name: Option<&str>, code: &str| {
            let mut b = ok.clone();
            edit(&mut b);
            let err = validate_create(&b, name).expect_err("refused");
            assert_eq!(err.1, code, "{err:?}");
        };
        let param = "PARAM_ERROR";
        refused(
            &|b| b.appid = "wx-other".into(),
            None,
            "APPID_MCHID_NOT_MATCH",
        );
        refused(&|b| b.transfer_amount = 0, None, param);
        refused(&|b| b.transfer_amount = u64::MAX, None, param);
        refused(&|b| b.out_bill_no = "a-b".into(), None, param);
        refused(&|b| b.out_bill_no = String::new(), None, param);
        refused(&|b| b.out_bill_no = "A".repeat(33), None, param);
        refused(&|b| b.openid = String::new(), None, param);
        refused(&|b| b.transfer_remark = String::new(), None, param);
        refused(&|b| b.transfer_remark = "长".repeat(33), None, param);
        refused(&|b| b.transfer_scene_id = String::new(), None, param);
        refused(&|b| b.transfer_scene_report_infos.clear(), None, param);
        refused(
            &|b| {
                b.transfer_scene_report_infos.pop();
            },
            None,
            param,
        );
        refused(
            &|b| b.transfer_scene_report_infos[1].info_type = "其他".into(),
            None,
            param,
        );
        refused(
            &|b| b.transfer_scene_report_infos[0].info_content = "x".repeat(33),
            None,
            param,
        );
        refused(
            &|b| {
                b.transfer_scene_report_infos.push(SceneReportInfo {
                    info_type: wire::SCENE_1000_INFO_TYPES[0].into(),
                    info_content: "again".into(),
                })
            },
            None,
            param,
        );
        refused(
            &|b| b.user_recv_perception = Some(String::new()),
            None,
            param,
        );
        refused(&|b| b.notify_url = Some("nowhere".into()), None, param);
        refused(
            &|b| b.notify_url = Some("http://merchant.example/n".into()),
            None,
            param,
        );
        refused(
            &|b| b.notify_url = Some("https://merchant.example/n?a=1".into()),
            None,
            param,
        );
        refused(&|b| b.openid = "mismatch-1".into(), None, "OPENID_MISMATCH");
        // Real names: required from 2,000 yuan, not allowed below 0.3 yuan.
        refused(
            &|b| b.transfer_amount = wire::USER_NAME_REQUIRED_FROM_FEN,
            None,
            param,
        );
        refused(&|_| {}, Some("张三"), param);
        refused(&|b| b.transfer_amount = 100, Some(""), param);
        let mut big = ok.clone();
        big.transfer_amount = wire::USER_NAME_REQUIRED_FROM_FEN;
        validate_create(&big, Some("张三")).expect("named");
        big.transfer_amount = wire::USER_NAME_ALLOWED_FROM_FEN;
        validate_create(&big, Some("张三")).expect("named, small");
        // Another scene has its own entries.
        let mut other = ok;
        other.transfer_scene_id = "1002".into();
        other.transfer_scene_report_infos = vec![SceneReportInfo {
            info_type: "补贴类型".into(),
            info_content: "x".into(),
        }];
        validate_create(&other, None).expect("scene 1002");
    }

    #[test]
    fn create_faults_are_consumed_in_order() {
        let mut s = State::new(1, 1);
        s.faults.apply(&FaultsPatch {
            frequency_limited_next: Some(1),
            no_auth_next: Some(1),
            fail_5xx_next: Some(1),
            lost_reply_next: Some(1),
            timeout_next: Some(1),
            ..FaultsPatch::default()
        });
        assert_eq!(s.take_create_fault(), CreateFault::FrequencyLimited);
        assert_eq!(s.take_create_fault(), CreateFault::NoAuth);
        assert_eq!(s.take_create_fault(), CreateFault::Fail5xx);
        assert_eq!(s.take_create_fault(), CreateFault::LostReply);
        assert_eq!(s.take_create_fault(), CreateFault::Timeout);
        assert_eq!(s.take_create_fault(), CreateFault::None);
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"confirmation":"expire","expire_after_ms":5,"hold_cancels":true,"probe_signatures":true}"#)
                .expect("patch");
        s.faults.apply(&patch);
        assert_eq!(s.faults.confirmation, Confirmation::Expire);
        assert_eq!(s.faults.expire_after_ms, Some(5));
        assert!(s.faults.hold_cancels && s.faults.probe_signatures);
        assert!(serde_json::from_str::<FaultsPatch>(r#"{"confirmation":"maybe"}"#).is_err());
        let shown = serde_json::to_value(&s.faults).expect("json");
        assert_eq!(shown["confirmation"], "expire");
    }

    #[test]
    fn auto_confirmation_then_natural_outcomes() {
        let mut s = State::new(500, 10_000);
        let now = now();
        new_bill(&mut s, body("A", "o1", 100));
        new_bill(&mut s, body("B", "fail-o2", 100));
        new_bill(&mut s, body("C", "o3", 501));
        s.create(body("D", "o4", 100), Some("Wrong".into()), "p".into(), now)
            .expect("D");
        s.real_names.insert("o4".into(), "Right".into());
        assert_eq!(s.faults.balance, 10_000 - 801);
        // Not confirmed yet: nothing settles.
        assert!(s.settle("A", now).is_none());
        for no in ["A", "B", "C", "D"] {
            let t = s.user_acts(no, now).expect("confirms");
            assert_eq!(t.state, TransferState::Transfering);
            assert!(t.confirmed);
            assert_eq!(t.notifications, 0, "TRANSFERING is not notified");
            assert!(s.user_acts(no, now).is_none(), "only once");
        }
        let settled = |s: &mut State, no: &str| {
            let t = s.settle(no, now).expect("settles");
            assert_eq!(t.notifications, 1);
            (t.state, t.fail_reason)
        };
        assert_eq!(settled(&mut s, "A"), (TransferState::Success, None));
        assert_eq!(
            settled(&mut s, "B"),
            (TransferState::Fail, Some(REASON_PAYEE_ABNORMAL.into()))
        );
        assert_eq!(
            settled(&mut s, "C"),
            (TransferState::Fail, Some(REASON_QUOTA.into()))
        );
        assert_eq!(
            settled(&mut s, "D"),
            (TransferState::Fail, Some(REASON_NAME.into()))
        );
        assert!(s.settle("A", now).is_none(), "final");
        assert_eq!(
            s.faults.balance,
            10_000 - 100,
            "failed transfers are refunded"
        );
    }

    #[test]
    fn auto_complete_off_stays_transfering_until_completed() {
        let mut s = State::new(500, 10_000);
        let now = now();
        new_bill(&mut s, body("A", "o1", 100));
        s.faults.auto_complete = false;
        s.user_acts("A", now).expect("confirm");
        assert!(s.settle("A", now).is_none());
        assert_eq!(s.transfers["A"].state, TransferState::Transfering);
        let t = s
            .complete("A", TransferState::Fail, None, now)
            .expect("forced");
        assert_eq!(t.fail_reason.as_deref(), Some(REASON_OTHER));
        let err = s
            .complete("A", TransferState::Success, None, now)
            .expect_err("final");
        assert_eq!((err.0, err.1), (409, "ALREADY_FINAL"));
        // Same state again: notifies again, changes nothing.
        let t = s
            .complete("A", TransferState::Fail, None, now)
            .expect("again");
        assert_eq!(t.notifications, 2);
        assert_eq!(s.faults.balance, 10_000);
        assert_eq!(
            s.complete("Z", TransferState::Success, None, now)
                .expect_err("unknown")
                .0,
            404
        );
        assert_eq!(
            s.complete("A", TransferState::Transfering, None, now)
                .expect_err("not final")
                .0,
            400
        );
    }

    #[test]
    fn hold_then_confirm_or_decline() {
        let mut s = State::new(500, 10_000);
        let now = now();
        s.faults.confirmation = Confirmation::Hold;
        new_bill(&mut s, body("H1", "o1", 100));
        new_bill(&mut s, body("H2", "o1", 100));
        assert_eq!(s.transfers["H1"].confirmation, Confirmation::Hold);
        assert!(
            s.user_acts("H1", now).is_none(),
            "held: the user does nothing"
        );
        let t = s.confirm("H1", now).expect("confirm");
        assert_eq!(t.state, TransferState::Transfering);
        assert_eq!(s.confirm("H1", now).expect_err("twice").0, 409);
        assert_eq!(s.decline("H1", now).expect_err("confirmed").0, 409);
        assert_eq!(
            s.settle("H1", now).expect("settles").state,
            TransferState::Success
        );

        let t = s.decline("H2", now).expect("decline");
        assert_eq!(t.state, TransferState::Cancelled);
        assert_eq!(t.fail_reason, None);
        assert_eq!(t.notifications, 1);
        assert_eq!(s.confirm("H2", now).expect_err("cancelled").0, 409);
        assert_eq!(s.confirm("nope", now).expect_err("unknown").0, 404);
        assert_eq!(s.faults.balance, 10_000 - 100);
    }

    #[test]
    fn refuse_and_expire_cancel_the_bill() {
        let mut s = State::new(500, 10_000);
        let now = now();
        s.faults.confirmation = Confirmation::Refuse;
        new_bill(&mut s, body("R1", "o1", 100));
        s.faults.confirmation = Confirmation::Expire;
        new_bill(&mut s, body("E1", "o1", 100));
        new_bill(&mut s, body("E2", "o1", 100));

        let t = s.user_acts("R1", now).expect("declines");
        assert_eq!(t.state, TransferState::Cancelled);
        assert_eq!(t.notifications, 1);

        assert!(s.user_acts("E1", now).is_none(), "nobody confirms");
        let t = s.expire("E1", now).expect("expires");
        assert_eq!(t.state, TransferState::Cancelled);
        assert_eq!(t.fail_reason.as_deref(), Some(REASON_OVERDUE));
        assert!(s.expire("E1", now).is_none(), "once");
        // Confirmed in time: the expiry does nothing.
        s.confirm("E2", now).expect("confirm");
        assert!(s.expire("E2", now).is_none());
        assert_eq!(s.transfers["E2"].state, TransferState::Transfering);
        assert_eq!(s.faults.balance, 10_000 - 100);
    }

    #[test]
    fn cancel_paths() {
        let mut s = State::new(500, 10_000);
        let now = now();
        s.faults.confirmation = Confirmation::Hold;
        for no in ["C1", "C2", "C3"] {
            new_bill(&mut s, body(no, "o1", 100));
        }

        // Cancel → CANCELING → CANCELLED, idempotent on the way.
        let (r, fresh) = s.cancel("C1", now).expect("cancel");
        assert!(fresh);
        assert_eq!(r.state, TransferState::Canceling);
        assert_eq!(r.out_bill_no, "C1");
        let (r, fresh) = s.cancel("C1", now).expect("again");
        assert!(!fresh);
        assert_eq!(r.state, TransferState::Canceling);
        assert_eq!(s.canceling(), ["C1"]);
        assert_eq!(s.decline("C1", now).expect_err("not waiting").0, 409);
        let t = s.finish_cancel("C1", now).expect("cancelled");
        assert_eq!(t.state, TransferState::Cancelled);
        assert_eq!(t.fail_reason.as_deref(), Some(REASON_MCH_CANCEL));
        assert_eq!(t.notifications, 1);
        assert!(s.finish_cancel("C1", now).is_none());
        let (r, fresh) = s.cancel("C1", now).expect("after");
        assert!(!fresh);
        assert_eq!(r.state, TransferState::Cancelled);
        assert_eq!(s.transfers["C1"].cancel_requests, 3);

        // Held cancel: the user confirms during CANCELING and is paid.
        s.faults.hold_cancels = true;
        s.cancel("C2", now).expect("cancel");
        assert!(s.finish_cancel("C2", now).is_none(), "held");
        let t = s.confirm("C2", now).expect("confirm while canceling");
        assert_eq!(t.state, TransferState::Transfering);
        s.faults.hold_cancels = false;
        assert!(s.finish_cancel("C2", now).is_none(), "confirmed wins");
        assert_eq!(
            s.settle("C2", now).expect("settles").state,
            TransferState::Success
        );

        // Past confirmation: refused; unknown: 404.
        let err = s.cancel("C2", now).expect_err("after success");
        assert_eq!((err.0, err.1), (400, "INVALID_REQUEST"));
        s.confirm("C3", now).expect("confirm");
        let err = s.cancel("C3", now).expect_err("transfering");
        assert_eq!((err.0, err.1), (400, "INVALID_REQUEST"));
        s.complete("C3", TransferState::Fail, None, now)
            .expect("fail");
        assert_eq!(
            s.cancel("C3", now).expect_err("failed").1,
            "INVALID_REQUEST"
        );
        assert_eq!(s.cancel("C9", now).expect_err("unknown").0, 404);
        // C1 refunded, C2 paid, C3 refunded.
        assert_eq!(s.faults.balance, 10_000 - 100);
    }

    #[test]
    fn views_and_replies() {
        let mut s = State::new(500, 10_000);
        let reply = new_bill(&mut s, body("V1", "o1", 100));
        let t = &s.transfers["V1"];
        let v = t.view();
        assert_eq!(v["out_bill_no"], "V1");
        assert_eq!(v["partner_trade_no"], "V1");
        assert_eq!(v["package_info"], "pkg");
        assert_eq!(v["confirmation"], "auto");
        assert_eq!(v["state"], "WAIT_USER_CONFIRM");
        assert_eq!(v["amount"], 100);
        assert_eq!(v["check_name"], "NO_CHECK");
        let q = t.query_reply();
        assert_eq!(q.mch_id, MCHID);
        assert_eq!(q.transfer_bill_no, reply.transfer_bill_no);
        assert_eq!(q.transfer_amount, 100);
        assert_eq!(q.user_name, None);
        let r = t.result();
        assert_eq!(r.out_bill_no, "V1");
        assert_eq!(r.merchant(), Some(MCHID));
        assert_eq!(r.amount, 100);
        assert_eq!(reply.create_time, rfc3339(&t.create_time));
    }

    #[test]
    fn bill_applies_overrides_and_extras() {
        let mut s = State::new(20_000, 100_000);
        let now = now();
        for (no, amount) in [("A", 100), ("B", 200), ("C", 300), ("D", 400), ("E", 500)] {
            new_bill(&mut s, body(no, "o1", amount));
        }
        for no in ["A", "B", "C"] {
            s.complete(no, TransferState::Success, None, now)
                .expect("complete");
        }
        s.cancel("E", now).expect("cancel");
        s.finish_cancel("E", now).expect("cancelled");
        // D stays WAIT_USER_CONFIRM: not in the bill unless overridden.
        s.set_override(BillOverride {
            out_bill_no: "A".into(),
            amount: Some(150),
            ..Default::default()
        })
        .expect("override");
        s.set_override(BillOverride {
            out_bill_no: "B".into(),
            omit: true,
            ..Default::default()
        })
        .expect("override");
        s.set_override(BillOverride {
            out_bill_no: "C".into(),
            status: Some("FAIL".into()),
            ..Default::default()
        })
        .expect("override");
        assert!(s
            .set_override(BillOverride {
                out_bill_no: "C".into(),
                status: Some("WHATEVER".into()),
                ..Default::default()
            })
            .is_err());
        let alias: BillOverride =
            serde_json::from_str(r#"{"partner_trade_no":"Q","omit":true}"#).expect("alias");
        assert_eq!(alias.out_bill_no, "Q");
        let extra: BillExtra =
            serde_json::from_str(r#"{"partner_trade_no":"X","openid":"o9","amount":999}"#)
                .expect("extra");
        s.add_extra(extra.clone(), now).expect("extra");
        assert_eq!(s.add_extra(extra, now).expect_err("duplicate").0, 409);

        let bill = s.bill(now.date_naive());
        let text = write_bill(&bill).expect("write");
        let parsed = parse_bill(&text).expect("parse");
        let got: Vec<(&str, i64, TransferState)> = parsed
            .rows
            .iter()
            .map(|r| (r.partner_trade_no.as_str(), r.amount, r.status))
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&("A", 150, TransferState::Success)));
        assert!(got.contains(&("C", 300, TransferState::Fail)));
        assert!(got.contains(&("E", 500, TransferState::Cancelled)));
        assert!(got.contains(&("X", 999, TransferState::Success)));
        let other_day = now.date_naive().pred_opt().expect("yesterday");
        assert!(s.bill(other_day).rows.is_empty());
    }
}
