//! What travels between the merchant and the provider: the transfer bill as
//! we ask for it and as the provider answers, OAuth tokens, error bodies,
//! and the limits every field is checked against (the client before
//! sending, the simulator on receipt).
//!
//! The shapes are those of WeChat Pay's merchant transfer API (商家转账,
//! `/v3/fund-app/mch-transfer/transfer-bills`).

use actix_web::http::Uri;
use serde::{Deserialize, Serialize};

use super::notify::TransferState;

/// Longest `out_bill_no`.
pub const MAX_OUT_BILL_NO_LEN: usize = 32;
/// Longest `transfer_remark` (characters): the user sees it.
pub const MAX_REMARK_CHARS: usize = 32;
/// Longest openid.
pub const MAX_OPENID_LEN: usize = 128;
/// Longest `notify_url`.
pub const MAX_NOTIFY_URL_LEN: usize = 256;
/// Longest real name (characters).
pub const MAX_REAL_NAME_CHARS: usize = 64;
/// Longest `transfer_scene_id`.
pub const MAX_SCENE_ID_LEN: usize = 36;
/// Longest `user_recv_perception` (characters).
pub const MAX_PERCEPTION_CHARS: usize = 32;
/// Longest `info_type` of a scene report entry (characters).
pub const MAX_INFO_TYPE_CHARS: usize = 15;
/// Longest `info_content` of a scene report entry (characters).
pub const MAX_INFO_CONTENT_CHARS: usize = 32;
/// Most scene report entries in one transfer.
pub const MAX_REPORT_INFOS: usize = 8;
/// Transfers of at least this many fen (2,000 yuan) must carry the payee's
/// real name (`user_name`, encrypted).
pub const USER_NAME_REQUIRED_FROM_FEN: u64 = 200_000;
/// Transfers of at least this many fen (0.3 yuan) and below 2,000 yuan may
/// carry a real name; below 0.3 yuan they must not.
pub const USER_NAME_ALLOWED_FROM_FEN: u64 = 30;
/// The scene "现金营销" (cash marketing), whose report needs
/// [`SCENE_1000_INFO_TYPES`].
pub const SCENE_CASH_MARKETING: &str = "1000";
/// The report entries scene 1000 requires, in this order.
pub const SCENE_1000_INFO_TYPES: [&str; 2] = ["活动名称", "奖励说明"];

/// OAuth tokens of one user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthTokens {
    /// Access token.
    pub access_token: String,
    /// Refresh token (valid until revoked).
    pub refresh_token: String,
    /// The user's openid under our appid.
    pub openid: String,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
    /// Granted scope, e.g. `snsapi_base`.
    pub scope: String,
}

/// One `transfer_scene_report_infos` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneReportInfo {
    /// What is reported, e.g. `活动名称`.
    pub info_type: String,
    /// Its value, e.g. `新会员有礼`.
    pub info_content: String,
}

/// The transfer scene a deployment reports with every transfer (fixed per
/// merchant account and scene; WeChat checks the entries against the scene).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferScene {
    /// `transfer_scene_id`, e.g. `1000`.
    pub id: String,
    /// `user_recv_perception`: what the user is told they receive (`现金奖励`,
    /// ...); absent: the scene's default.
    #[serde(default)]
    pub user_recv_perception: Option<String>,
    /// `transfer_scene_report_infos`.
    pub report_infos: Vec<SceneReportInfo>,
}

impl Default for TransferScene {
    /// Scene 1000 (cash marketing) with its two required entries.
    fn default() -> Self {
        Self {
            id: SCENE_CASH_MARKETING.into(),
            user_recv_perception: Some("现金奖励".into()),
            report_infos: vec![
                SceneReportInfo {
                    info_type: SCENE_1000_INFO_TYPES[0].into(),
                    info_content: "社区奖励提现".into(),
                },
                SceneReportInfo {
                    info_type: SCENE_1000_INFO_TYPES[1].into(),
                    info_content: "社区活动奖励".into(),
                },
            ],
        }
    }
}

impl TransferScene {
    /// Checks the fields against their limits and the entries scene 1000
    /// requires.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty()
            || self.id.len() > MAX_SCENE_ID_LEN
            || !self.id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!(
                "transfer scene id {:?}: 1 to {MAX_SCENE_ID_LEN} letters and digits",
                self.id
            ));
        }
        if let Some(p) = &self.user_recv_perception {
            if !valid_text(p, MAX_PERCEPTION_CHARS) {
                return Err(format!(
                    "user_recv_perception: 1 to {MAX_PERCEPTION_CHARS} characters"
                ));
            }
        }
        if self.report_infos.is_empty() || self.report_infos.len() > MAX_REPORT_INFOS {
            return Err(format!("report_infos: 1 to {MAX_REPORT_INFOS} entries"));
        }
        for i in &self.report_infos {
            if !valid_text(&i.info_type, MAX_INFO_TYPE_CHARS)
                || !valid_text(&i.info_content, MAX_INFO_CONTENT_CHARS)
            {
                return Err(format!(
                    "report_infos entry {:?}: info_type 1 to {MAX_INFO_TYPE_CHARS} characters, info_content 1 to {MAX_INFO_CONTENT_CHARS}",
                    i.info_type
                ));
            }
        }
        if self.id == SCENE_CASH_MARKETING {
            for needed in SCENE_1000_INFO_TYPES {
                if !self.report_infos.iter().any(|i| i.info_type == needed) {
                    return Err(format!("scene 1000 needs the report entry {needed:?}"));
                }
            }
        }
        Ok(())
    }
}

/// A transfer to a user's balance, as the payout job asks for it.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// Our number: 1 to 32 letters and digits, unique per payout, reused on
    /// every retry.
    pub out_bill_no: String,
    /// Payee.
    pub openid: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// `transfer_remark`, shown to the payee (1 to 32 characters).
    pub remark: String,
    /// The payee's real name, in clear: the client encrypts it. Required
    /// from [`USER_NAME_REQUIRED_FROM_FEN`].
    pub user_name: Option<String>,
    /// Where the provider sends the final-state notification (https, no
    /// query; http to this machine for the simulator).
    pub notify_url: String,
}

impl std::fmt::Debug for TransferRequest {
    /// The real name is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferRequest")
            .field("out_bill_no", &self.out_bill_no)
            .field("openid", &self.openid)
            .field("amount", &self.amount)
            .field("remark", &self.remark)
            .field("user_name", &self.user_name.as_ref().map(|_| "<redacted>"))
            .field("notify_url", &self.notify_url)
            .finish()
    }
}

/// A transfer as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStatus {
    /// Our number.
    pub out_bill_no: String,
    /// The provider's number.
    pub transfer_bill_no: String,
    /// Current state.
    pub state: TransferState,
    /// Fen (queries and notifications; a create answer has none).
    pub amount: Option<u64>,
    /// Payee (queries and notifications).
    pub openid: Option<String>,
    /// Failure code when `state` is `FAIL` (or why it was cancelled).
    pub fail_reason: Option<String>,
    /// What the app passes to WeChat for the user to confirm the transfer
    /// (create answers in `WAIT_USER_CONFIRM` only).
    pub package_info: Option<String>,
    /// RFC 3339 time of the last change (`create_time` for a create).
    pub update_time: String,
}

/// The JSON of `POST /v3/fund-app/mch-transfer/transfer-bills` (also read
/// by the simulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillBody {
    /// App id.
    pub appid: String,
    /// Our number.
    pub out_bill_no: String,
    /// Scene id.
    pub transfer_scene_id: String,
    /// Payee.
    pub openid: String,
    /// The real name, RSA-OAEP encrypted under the provider's key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Fen.
    pub transfer_amount: u64,
    /// Remark shown to the user.
    pub transfer_remark: String,
    /// Notification URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// What the user is told they receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_recv_perception: Option<String>,
    /// The scene's report entries.
    pub transfer_scene_report_infos: Vec<SceneReportInfo>,
}

/// The answer of a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateReply {
    /// Our number.
    pub out_bill_no: String,
    /// The provider's number.
    pub transfer_bill_no: String,
    /// RFC 3339.
    pub create_time: String,
    /// State.
    pub state: TransferState,
    /// Failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// For `WAIT_USER_CONFIRM`: what the app hands to WeChat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_info: Option<String>,
}

/// The answer of a query (by our number or by the provider's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    /// Merchant id.
    pub mch_id: String,
    /// Our number.
    pub out_bill_no: String,
    /// The provider's number.
    pub transfer_bill_no: String,
    /// App id.
    pub appid: String,
    /// State.
    pub state: TransferState,
    /// Fen.
    pub transfer_amount: u64,
    /// Remark.
    pub transfer_remark: String,
    /// Failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// Payee (not promised in every answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The encrypted real name, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// RFC 3339.
    pub create_time: String,
    /// RFC 3339.
    pub update_time: String,
}

/// The answer of a cancel: the bill is `CANCELING` (or already
/// `CANCELLED`); the final state arrives as a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// Our number.
    pub out_bill_no: String,
    /// The provider's number.
    pub transfer_bill_no: String,
    /// `CANCELING` or `CANCELLED`.
    pub state: TransferState,
    /// RFC 3339.
    pub update_time: String,
}

/// The error JSON of a 4xx or 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Error code, e.g. `PARAM_ERROR`.
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// Whether `value` is a valid `out_bill_no`: 1 to 32 letters and digits.
pub fn valid_out_bill_no(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_OUT_BILL_NO_LEN
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `value` is a plausible openid: 1 to 128 visible ASCII characters.
pub fn valid_openid(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_OPENID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic())
}

/// 1 to `max` characters, none a control character.
pub fn valid_text(value: &str, max: usize) -> bool {
    let chars = value.chars().count();
    (1..=max).contains(&chars) && !value.chars().any(char::is_control)
}

/// Whether `value` is a valid transfer remark: 1 to 32 characters, none a
/// control character.
pub fn valid_remark(value: &str) -> bool {
    valid_text(value, MAX_REMARK_CHARS)
}

/// Whether `value` is a valid real name: 1 to 64 characters, no control
/// characters.
pub fn valid_real_name(value: &str) -> bool {
    valid_text(value, MAX_REAL_NAME_CHARS)
}

/// Whether `value` is an absolute URL with a host and no query, at most 256
/// bytes: `https`, or `http` when `allow_http` (a loopback receiver).
pub fn valid_notify_url(value: &str, allow_http: bool) -> bool {
    value.len() <= MAX_NOTIFY_URL_LEN
        && value.parse::<Uri>().ok().is_some_and(|uri| {
            let scheme_ok = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => allow_http,
                _ => false,
            };
            scheme_ok && uri.host().is_some() && uri.query().is_none()
        })
}
