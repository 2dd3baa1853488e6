//! The simulator's in-memory state: transfers, OAuth codes and tokens,
//! faults, bill adjustments, and the rules that act on them (no I/O here).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use qrgate_provider::bill::{Bill, BillRow};
use qrgate_provider::client::{self, TransferBody, TransferReply};
use qrgate_provider::notify::{TransferResult, TransferState};

use super::{APPID, MCHID};

/// The provider's local time zone (Beijing, UTC+8).
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// `fail_reason` of a transfer to an openid starting with `fail-`.
pub const REASON_PAYEE_ABNORMAL: &str = "PAYEE_ACCOUNT_ABNORMAL";
/// `fail_reason` of a transfer above the amount limit.
pub const REASON_QUOTA: &str = "TRANSFER_QUOTA_EXCEED";
/// `fail_reason` of a `FORCE_CHECK` transfer whose name does not match the
/// real name registered with the user's OAuth code.
pub const REASON_NAME: &str = "NAME_NOT_CORRECT";
/// `fail_reason` when a FAIL is forced without a reason.
pub const REASON_OTHER: &str = "OTHER_FAIL_REASON_TYPE";

/// Now in the provider's time zone.
pub fn now() -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&BEIJING)
}

/// RFC 3339 with seconds and the `+08:00` offset.
pub fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Injected faults (`POST /sim/faults` patches them; `GET /sim/faults` shows
/// them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Delay every `/v3` answer by this many milliseconds.
    pub delay_ms: u64,
    /// The next N transfer creates are processed, but answered after 30 s.
    pub timeout_next: u32,
    /// The next N transfer creates answer 500 without being processed.
    pub fail_5xx_next: u32,
    /// The next N transfer creates are processed, then answer 500.
    pub lost_reply_next: u32,
    /// Every notification POST is sent twice.
    pub duplicate_notifications: bool,
    /// Every notification POST is sent twice with the same signature,
    /// timestamp and nonce: a replay, as an eavesdropper would send it.
    pub replay_notifications: bool,
    /// First deliveries are batched and sent newest first.
    pub out_of_order: bool,
    /// Responses and notifications are signed with a wrong key.
    pub forge_signatures: bool,
    /// First deliveries wait for `POST /sim/release` (or this turned off).
    pub hold_notifications: bool,
    /// Transfers complete by themselves after `100 ms × time-factor`; when
    /// off they stay `ACCEPTED` until `POST /sim/complete`.
    pub auto_complete: bool,
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
    /// See [`Faults::duplicate_notifications`].
    pub duplicate_notifications: Option<bool>,
    /// See [`Faults::replay_notifications`].
    pub replay_notifications: Option<bool>,
    /// See [`Faults::out_of_order`].
    pub out_of_order: Option<bool>,
    /// See [`Faults::forge_signatures`].
    pub forge_signatures: Option<bool>,
    /// See [`Faults::hold_notifications`].
    pub hold_notifications: Option<bool>,
    /// See [`Faults::auto_complete`].
    pub auto_complete: Option<bool>,
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
            duplicate_notifications,
            replay_notifications,
            out_of_order,
            forge_signatures,
            hold_notifications,
            auto_complete,
            amount_limit,
            balance
        );
        if let Some(v) = p.batch_window_ms {
            self.batch_window_ms = Some(v);
        }
    }
}

/// What a transfer create does with its answer, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFault {
    /// Answer normally.
    None,
    /// Answer 500 without processing.
    Fail5xx,
    /// Process, then answer 500.
    LostReply,
    /// Process, then answer after 30 s.
    Timeout,
}

/// A bill adjustment for one transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillOverride {
    /// The transfer.
    pub partner_trade_no: String,
    /// Report this amount (fen) instead.
    #[serde(default)]
    pub amount: Option<u64>,
    /// Report this status instead (`SUCCESS` or `FAIL`).
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
    /// Transfer id (must not be a known transfer's).
    pub partner_trade_no: String,
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
    pub partner_trade_no: String,
    /// Where to POST.
    pub notify_url: String,
    /// The encrypted envelope (signed at each attempt).
    pub body: String,
}

/// One transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The create request as first received.
    pub request: TransferBody,
    /// The provider's id.
    pub transfer_bill_no: String,
    /// Current state.
    pub state: TransferState,
    /// Failure code when `FAIL`.
    pub fail_reason: Option<String>,
    /// Creation time.
    pub create_time: DateTime<FixedOffset>,
    /// Last change.
    pub update_time: DateTime<FixedOffset>,
    /// Create requests that reached this transfer (first one included).
    pub create_requests: u32,
    /// Notifications made for it.
    pub notifications: u32,
    /// Notification POSTs sent.
    pub deliveries: u32,
    /// Notification POSTs answered 200/204.
    pub acks: u32,
}

impl Transfer {
    /// The create/query answer.
    pub fn reply(&self) -> TransferReply {
        TransferReply {
            partner_trade_no: self.request.partner_trade_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            state: self.state,
            amount: self.request.amount,
            openid: self.request.openid.clone(),
            create_time: rfc3339(&self.create_time),
            update_time: rfc3339(&self.update_time),
            fail_reason: self.fail_reason.clone(),
        }
    }

    /// The decrypted notification content.
    pub fn result(&self) -> TransferResult {
        TransferResult {
            mchid: MCHID.to_owned(),
            partner_trade_no: self.request.partner_trade_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            state: self.state,
            amount: i64::try_from(self.request.amount).unwrap_or(i64::MAX),
            openid: self.request.openid.clone(),
            fail_reason: self.fail_reason.clone(),
            create_time: Some(rfc3339(&self.create_time)),
            update_time: rfc3339(&self.update_time),
        }
    }

    /// The `GET /sim/transfers` view.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "partner_trade_no": self.request.partner_trade_no,
            "transfer_bill_no": self.transfer_bill_no,
            "openid": self.request.openid,
            "amount": self.request.amount,
            "desc": self.request.desc,
            "check_name": self.request.check_name,
            "state": self.state.as_str(),
            "fail_reason": self.fail_reason,
            "create_time": rfc3339(&self.create_time),
            "update_time": rfc3339(&self.update_time),
            "create_requests": self.create_requests,
            "notifications": self.notifications,
            "deliveries": self.deliveries,
            "acks": self.acks,
        })
    }

    fn same_request(&self, other: &TransferBody) -> bool {
        let a = &self.request;
        a.appid == other.appid
            && a.openid == other.openid
            && a.amount == other.amount
            && a.desc == other.desc
            && a.check_name == other.check_name
            && a.re_user_name == other.re_user_name
    }
}

/// A refusal: HTTP status, error code, message.
pub type Refusal = (u16, &'static str, String);

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    (status, code, message.into())
}

/// Checks a create request's fields: `400 PARAM_ERROR` (or
/// `OPENID_MISMATCH`) when wrong.
pub fn validate_create(body: &TransferBody, auth_mchid: &str) -> Result<(), Refusal> {
    let bad = |m: &str| Err(refuse(400, "PARAM_ERROR", m));
    if body.mchid != MCHID || body.mchid != auth_mchid {
        return bad("mchid does not match the merchant");
    }
    if body.appid != APPID {
        return Err(refuse(
            400,
            "APPID_MCHID_NOT_MATCH",
            "appid is not bound to this merchant",
        ));
    }
    if !client::valid_trade_no(&body.partner_trade_no) {
        return bad("partner_trade_no must be 1 to 32 of [A-Za-z0-9_-]");
    }
    if !client::valid_openid(&body.openid) {
        return bad("invalid openid");
    }
    if body.amount == 0 || i64::try_from(body.amount).is_err() {
        return bad("amount out of range");
    }
    if !client::valid_description(&body.desc) {
        return bad("desc must be 1 to 32 characters");
    }
    match (body.check_name.as_str(), &body.re_user_name) {
        ("NO_CHECK", None) => {}
        ("FORCE_CHECK", Some(name)) if client::valid_real_name(name) => {}
        ("NO_CHECK" | "FORCE_CHECK", _) => {
            return bad("re_user_name is required with FORCE_CHECK only")
        }
        _ => return bad("check_name must be NO_CHECK or FORCE_CHECK"),
    }
    if body.spbill_create_ip.parse::<std::net::IpAddr>().is_err() {
        return bad("spbill_create_ip is not an IP address");
    }
    if !client::valid_notify_url(&body.notify_url) {
        return bad("invalid notify_url");
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
    /// Transfers by `partner_trade_no`.
    pub transfers: BTreeMap<String, Transfer>,
    /// Unused OAuth codes.
    pub codes: HashMap<String, CodeGrant>,
    /// Codes already exchanged.
    pub used_codes: HashSet<String>,
    /// Refresh token -> openid.
    pub refresh_tokens: HashMap<String, String>,
    /// openid -> real name (from `POST /sim/codes`).
    pub real_names: HashMap<String, String>,
    /// Injected faults and limits.
    pub faults: Faults,
    /// Bill adjustments by `partner_trade_no`.
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
            codes: HashMap::new(),
            used_codes: HashSet::new(),
            refresh_tokens: HashMap::new(),
            real_names: HashMap::new(),
            faults: Faults {
                delay_ms: 0,
                timeout_next: 0,
                fail_5xx_next: 0,
                lost_reply_next: 0,
                duplicate_notifications: false,
                replay_notifications: false,
                out_of_order: false,
                forge_signatures: false,
                hold_notifications: false,
                auto_complete: true,
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
        if f.fail_5xx_next > 0 {
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

    /// Creates a transfer, or finds the one with the same number and fields.
    /// `Ok((reply, true))` when it is new (schedule its completion).
    pub fn create(
        &mut self,
        body: TransferBody,
        now: DateTime<FixedOffset>,
    ) -> Result<(TransferReply, bool), Refusal> {
        if let Some(existing) = self.transfers.get_mut(&body.partner_trade_no) {
            existing.create_requests += 1;
            if existing.same_request(&body) {
                return Ok((existing.reply(), false));
            }
            return Err(refuse(
                400,
                "INVALID_REQUEST",
                "partner_trade_no already used with different parameters",
            ));
        }
        if self.faults.balance < body.amount {
            return Err(refuse(403, "NOT_ENOUGH", "merchant balance insufficient"));
        }
        self.faults.balance -= body.amount;
        let seq = self.next_seq();
        let transfer = Transfer {
            transfer_bill_no: format!("1330{}{seq:020}", now.format("%Y%m%d")),
            state: TransferState::Accepted,
            fail_reason: None,
            create_time: now,
            update_time: now,
            create_requests: 1,
            notifications: 0,
            deliveries: 0,
            acks: 0,
            request: body,
        };
        let reply = transfer.reply();
        self.transfers
            .insert(transfer.request.partner_trade_no.clone(), transfer);
        Ok((reply, true))
    }

    /// The final state a transfer reaches on its own.
    pub fn natural_outcome(&self, t: &Transfer) -> (TransferState, Option<String>) {
        let r = &t.request;
        if r.openid.starts_with("fail-") {
            return (TransferState::Fail, Some(REASON_PAYEE_ABNORMAL.into()));
        }
        if r.amount > self.faults.amount_limit {
            return (TransferState::Fail, Some(REASON_QUOTA.into()));
        }
        if let (Some(name), Some(real)) = (&r.re_user_name, self.real_names.get(&r.openid)) {
            if name != real {
                return (TransferState::Fail, Some(REASON_NAME.into()));
            }
        }
        (TransferState::Success, None)
    }

    /// Moves a transfer to a final state and counts one more notification;
    /// returns the transfer. Refused (404) when unknown and (409) when
    /// already final in the other state; a repeated completion in the same
    /// state changes nothing but is notified again.
    pub fn complete(
        &mut self,
        partner_trade_no: &str,
        state: TransferState,
        fail_reason: Option<String>,
        now: DateTime<FixedOffset>,
    ) -> Result<Transfer, Refusal> {
        let Some(t) = self.transfers.get_mut(partner_trade_no) else {
            return Err(refuse(404, "NOT_FOUND", "no such transfer"));
        };
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
            if state == TransferState::Fail {
                t.fail_reason = Some(fail_reason.unwrap_or_else(|| REASON_OTHER.into()));
                self.faults.balance = self.faults.balance.saturating_add(t.request.amount);
            }
        }
        t.notifications += 1;
        Ok(t.clone())
    }

    /// Records one notification POST and whether it was acknowledged.
    pub fn record_delivery(&mut self, partner_trade_no: &str, acked: bool) {
        if let Some(t) = self.transfers.get_mut(partner_trade_no) {
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
        let bad = |m: &str| refuse(400, "PARAM_ERROR", m);
        if self.transfers.contains_key(&extra.partner_trade_no)
            || self
                .extras
                .iter()
                .any(|r| r.partner_trade_no == extra.partner_trade_no)
        {
            return Err(refuse(
                409,
                "ALREADY_EXISTS",
                "partner_trade_no is already known",
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
            partner_trade_no: extra.partner_trade_no,
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
        let bad = |m: &str| refuse(400, "PARAM_ERROR", m);
        if !client::valid_trade_no(&o.partner_trade_no) {
            return Err(bad("invalid partner_trade_no"));
        }
        if let Some(s) = o.status.as_deref() {
            if !matches!(s, "SUCCESS" | "FAIL") {
                return Err(bad("status must be SUCCESS or FAIL"));
            }
        }
        if o.amount
            .is_some_and(|a| a == 0 || i64::try_from(a).is_err())
        {
            return Err(bad("amount out of range"));
        }
        self.overrides.insert(o.partner_trade_no.clone(), o);
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
            let o = self.overrides.get(&t.request.partner_trade_no);
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
            let amount = o.and_then(|o| o.amount).unwrap_or(t.request.amount);
            let fail_reason = (status == TransferState::Fail)
                .then(|| t.fail_reason.clone().unwrap_or_else(|| REASON_OTHER.into()));
            rows.push(BillRow {
                transfer_time: t.create_time.naive_local(),
                mchid: MCHID.into(),
                appid: t.request.appid.clone(),
                partner_trade_no: t.request.partner_trade_no.clone(),
                transfer_bill_no: t.transfer_bill_no.clone(),
                openid: t.request.openid.clone(),
                amount: i64::try_from(amount).unwrap_or(i64::MAX),
                status,
                // Bills cannot carry commas.
                description: t.request.desc.replace(',', " "),
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

    fn body(no: &str, openid: &str, amount: u64) -> TransferBody {
        TransferBody {
            mchid: MCHID.into(),
            appid: APPID.into(),
            partner_trade_no: no.into(),
            openid: openid.into(),
            check_name: "NO_CHECK".into(),
            re_user_name: None,
            amount,
            desc: "payout".into(),
            spbill_create_ip: "127.0.0.1".into(),
            notify_url: "http://127.0.0.1:1/n".into(),
        }
    }

    #[test]
    fn create_is_idempotent_per_number() {
        let mut s = State::new(20_000, 1_000);
        let now = now();
        let (a, fresh) = s.create(body("T1", "o1", 100), now).expect("create");
        assert!(fresh);
        assert_eq!(a.state, TransferState::Accepted);
        let (b, fresh) = s.create(body("T1", "o1", 100), now).expect("again");
        assert!(!fresh);
        assert_eq!(a.transfer_bill_no, b.transfer_bill_no);
        // A different notify_url or IP is the same transfer.
        let mut same = body("T1", "o1", 100);
        same.notify_url = "http://127.0.0.1:2/other".into();
        same.spbill_create_ip = "10.0.0.1".into();
        assert!(!s.create(same, now).expect("same").1);
        let err = s.create(body("T1", "o1", 101), now).expect_err("conflict");
        assert_eq!((err.0, err.1), (400, "INVALID_REQUEST"));
        assert_eq!(s.transfers.len(), 1);
        assert_eq!(s.transfers["T1"].create_requests, 4);
        assert_eq!(s.faults.balance, 900);
        let err = s.create(body("T2", "o1", 901), now).expect_err("balance");
        assert_eq!((err.0, err.1), (403, "NOT_ENOUGH"));
    }

    #[test]
    fn create_faults_are_consumed_in_order() {
        let mut s = State::new(1, 1);
        s.faults.apply(&FaultsPatch {
            fail_5xx_next: Some(1),
            lost_reply_next: Some(1),
            timeout_next: Some(1),
            ..FaultsPatch::default()
        });
        assert_eq!(s.take_create_fault(), CreateFault::Fail5xx);
        assert_eq!(s.take_create_fault(), CreateFault::LostReply);
        assert_eq!(s.take_create_fault(), CreateFault::Timeout);
        assert_eq!(s.take_create_fault(), CreateFault::None);
    }

    #[test]
    fn outcomes_and_completion() {
        let mut s = State::new(500, 10_000);
        let now = now();
        s.create(body("A", "o1", 100), now).expect("A");
        s.create(body("B", "fail-o2", 100), now).expect("B");
        s.create(body("C", "o3", 501), now).expect("C");
        let mut forced = body("D", "o4", 100);
        forced.check_name = "FORCE_CHECK".into();
        forced.re_user_name = Some("Wrong".into());
        s.real_names.insert("o4".into(), "Right".into());
        s.create(forced, now).expect("D");
        let outcome = |s: &State, no: &str| s.natural_outcome(&s.transfers[no]);
        assert_eq!(outcome(&s, "A"), (TransferState::Success, None));
        assert_eq!(
            outcome(&s, "B"),
            (TransferState::Fail, Some(REASON_PAYEE_ABNORMAL.into()))
        );
        assert_eq!(
            outcome(&s, "C"),
            (TransferState::Fail, Some(REASON_QUOTA.into()))
        );
        assert_eq!(
            outcome(&s, "D"),
            (TransferState::Fail, Some(REASON_NAME.into()))
        );

        assert_eq!(s.faults.balance, 10_000 - 801);
        s.complete("B", TransferState::Fail, None, now)
            .expect("fail B");
        assert_eq!(
            s.faults.balance,
            10_000 - 701,
            "a failed transfer is refunded"
        );
        assert_eq!(s.transfers["B"].fail_reason.as_deref(), Some(REASON_OTHER));
        let err = s
            .complete("B", TransferState::Success, None, now)
            .expect_err("final");
        assert_eq!(err.1, "ALREADY_FINAL");
        // Same state again: notifies again, changes nothing.
        let t = s
            .complete("B", TransferState::Fail, None, now)
            .expect("again");
        assert_eq!(t.notifications, 2);
        assert_eq!(s.faults.balance, 10_000 - 701);
        assert_eq!(
            s.complete("Z", TransferState::Success, None, now)
                .expect_err("unknown")
                .0,
            404
        );
    }

    #[test]
    fn bill_applies_overrides_and_extras() {
        let mut s = State::new(20_000, 100_000);
        let now = now();
        for (no, amount) in [("A", 100), ("B", 200), ("C", 300), ("D", 400)] {
            s.create(body(no, "o1", amount), now).expect("create");
        }
        for no in ["A", "B", "C"] {
            s.complete(no, TransferState::Success, None, now)
                .expect("complete");
        }
        // D stays ACCEPTED: not in the bill unless overridden.
        s.set_override(BillOverride {
            partner_trade_no: "A".into(),
            amount: Some(150),
            ..Default::default()
        })
        .expect("override");
        s.set_override(BillOverride {
            partner_trade_no: "B".into(),
            omit: true,
            ..Default::default()
        })
        .expect("override");
        s.set_override(BillOverride {
            partner_trade_no: "C".into(),
            status: Some("FAIL".into()),
            ..Default::default()
        })
        .expect("override");
        assert!(s
            .set_override(BillOverride {
                partner_trade_no: "C".into(),
                status: Some("WHATEVER".into()),
                ..Default::default()
            })
            .is_err());
        let extra = BillExtra {
            partner_trade_no: "X".into(),
            transfer_bill_no: None,
            openid: "o9".into(),
            amount: 999,
            status: None,
            description: None,
            fail_reason: None,
            transfer_time: None,
            mchid: None,
            appid: None,
        };
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
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&("A", 150, TransferState::Success)));
        assert!(got.contains(&("C", 300, TransferState::Fail)));
        assert!(got.contains(&("X", 999, TransferState::Success)));
        let other_day = now.date_naive().pred_opt().expect("yesterday");
        assert!(s.bill(other_day).rows.is_empty());
    }

    #[test]
    fn create_validation() {
        let ok = body("T1", "o1", 1);
        validate_create(&ok, MCHID).expect("valid");
        let refused = |edit: &dyn Fn(&mut TransferBody), code: &str| {
            let mut b = ok.clone();
            edit(&mut b);
            let err = validate_create(&b, MCHID).expect_err("refused");
            assert_eq!(err.1, code, "{err:?}");
        };
        refused(&|b| b.mchid = "1".into(), "PARAM_ERROR");
        refused(&|b| b.appid = "wx-other".into(), "APPID_MCHID_NOT_MATCH");
        refused(&|b| b.amount = 0, "PARAM_ERROR");
        refused(&|b| b.partner_trade_no = "a b".into(), "PARAM_ERROR");
        refused(&|b| b.check_name = "MAYBE".into(), "PARAM_ERROR");
        refused(&|b| b.check_name = "FORCE_CHECK".into(), "PARAM_ERROR");
        refused(&|b| b.re_user_name = Some("X".into()), "PARAM_ERROR");
        refused(&|b| b.spbill_create_ip = "host".into(), "PARAM_ERROR");
        refused(&|b| b.notify_url = "nowhere".into(), "PARAM_ERROR");
        refused(&|b| b.openid = "mismatch-1".into(), "OPENID_MISMATCH");
        assert_eq!(
            validate_create(&ok, "1900000002")
                .expect_err("other merchant")
                .1,
            "PARAM_ERROR"
        );
    }
}
