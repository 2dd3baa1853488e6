//! The merchant-side adapter: talks to the payment provider (or to
//! `qrgate paysim`, which speaks the same protocol) over HTTP.
//!
//! Built from a [`ProviderConfig`] (base URL, merchant credentials, the
//! provider's public key). Every call builds its own `awc::Client`, so the
//! [`ProviderClient`] is `Send + Sync + Clone` while the returned futures are
//! not `Send` (await them on an actix/tokio current-thread runtime, e.g. in a
//! handler or an actor).
//!
//! # Wire protocol
//!
//! WeChat Pay flavoured: the OAuth endpoints follow the WeChat web OAuth API,
//! the transfer endpoints the v3 conventions (JSON, RSA signatures both
//! ways, see [`super::sign`]).
//!
//! ## OAuth (plain, unsigned)
//!
//! ```text
//! GET /sns/oauth2/access_token?appid=APPID&secret=SECRET&code=CODE&grant_type=authorization_code
//! GET /sns/oauth2/refresh_token?appid=APPID&grant_type=refresh_token&refresh_token=TOKEN
//! 200 {"access_token":"..","expires_in":7200,"refresh_token":"..","openid":"..","scope":"snsapi_base"}
//! 200 {"errcode":40029,"errmsg":"invalid code"}          (errors: HTTP 200 too)
//! ```
//!
//! Codes are single use (a second exchange is `40163 code been used`);
//! a refresh answers a new access token and the same refresh token.
//! An `errcode` answer is [`ClientError::Rejected`] with `status: 200` and
//! `code` = the errcode in decimal.
//!
//! ## Transfer bills, queries, cancels and bills (signed both ways)
//!
//! Every request carries
//! `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",signature="..",timestamp="..",serial_no=".."`
//! signed with the merchant key over `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`.
//! Every answer below 500 carries `Wechatpay-Timestamp`, `Wechatpay-Nonce`,
//! `Wechatpay-Signature` and `Wechatpay-Serial` over
//! `TIMESTAMP\nNONCE\nBODY\n`; the client looks the serial up among the
//! configured verification keys (the WeChat Pay public key, `PUB_KEY_ID_…`,
//! and any platform certificates), checks the timestamp is within 5 minutes
//! and the signature verifies *before* it looks at the body or trusts the
//! status. An answer that fails this is [`ClientError::BadSignature`]
//! ([`ClientError::SignatureProbe`] for the provider's
//! `WECHATPAY/SIGNTEST/` probes), whatever its status.
//!
//! ```text
//! POST /v3/fund-app/mch-transfer/transfer-bills
//!   [Wechatpay-Serial: the key user_name is encrypted under]
//!   {"appid":"wx..","out_bill_no":"QG..","transfer_scene_id":"1000","openid":"o..",
//!    "user_name":"<RSA-OAEP base64, from 2,000 yuan>","transfer_amount":100,
//!    "transfer_remark":"..","notify_url":"https://..","user_recv_perception":"现金奖励",
//!    "transfer_scene_report_infos":[{"info_type":"活动名称","info_content":".."},..]}
//! 200 {"out_bill_no":"QG..","transfer_bill_no":"1330..","create_time":"RFC 3339",
//!      "state":"ACCEPTED"|"WAIT_USER_CONFIRM"|..,"fail_reason":"..","package_info":".."}
//! GET /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}
//! GET /v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}
//! 200 {"mch_id":"..","out_bill_no":"..","transfer_bill_no":"..","appid":"..","state":"..",
//!      "transfer_amount":100,"transfer_remark":"..","fail_reason":"..","openid":"..",
//!      "user_name":"..","create_time":"..","update_time":".."}
//!   | 404 {"code":"NOT_FOUND","message":".."}
//! POST /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel
//! 200 {"out_bill_no":"..","transfer_bill_no":"..","state":"CANCELING","update_time":".."}
//! GET /v3/bills?date=YYYY-MM-DD
//! 200 text/plain, the bill of super::bill (signature over the bill bytes)
//! 4xx {"code":"PARAM_ERROR"|"INVALID_REQUEST"|"NO_AUTH"|"NOT_ENOUGH"|..,"message":".."}
//! 5xx {"code":"SYSTEM_ERROR",..} and 429 FREQUENCY_LIMITED (content not trusted)
//! ```
//!
//! `transfer_amount` is integer fen. The states are `ACCEPTED`,
//! `PROCESSING`, `WAIT_USER_CONFIRM` (the user must confirm receipt in
//! WeChat with the `package_info` of the create answer), `TRANSFERING`,
//! `SUCCESS`, `FAIL`, `CANCELING` and `CANCELLED`; the last three of
//! `SUCCESS`, `FAIL`, `CANCELLED` are final. A cancel is possible before
//! the user confirmed, and is asynchronous: a user who confirms during
//! `CANCELING` is paid. Creation is idempotent on `out_bill_no`: the same
//! number with the same fields answers the existing bill; with different
//! ones it is `400 INVALID_REQUEST` (the number is taken: query it).
//! `out_bill_no` is 1 to 32 letters and digits.
//!
//! The bill route is this project's own (the provider's bills are
//! downloaded through a separate flow this adapter does not implement).
//!
//! ## Notifications (provider -> merchant)
//!
//! When a transfer reaches a final state the provider POSTs the
//! `MCHTRANSFER.BILL.FINISHED` envelope of [`super::notify`] to the
//! transfer's `notify_url`, signed like a response. The merchant answers 200
//! or 204 once it has durably applied it (anything else is redelivered on the
//! WeChat schedule: 15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m, 30 m, 30 m,
//! 60 m, 3 h, 3 h, 3 h, 6 h, 6 h). Check it with
//! [`ProviderClient::verify_notification`]; deliveries may repeat and arrive
//! out of order, so apply them idempotently by `out_bill_no`.
//!
//! # Errors and retries
//!
//! [`ClientError::is_transient`] tells whether the outcome is unknown: a
//! transfer create that timed out, got a 5xx, a 429, or a reply that failed
//! its signature check may or may not have been processed. Query it first,
//! then resend with the *same* `out_bill_no` and the same fields (creation
//! is idempotent); never create a new number for the same payout unless a
//! query shows `FAIL`. [`ClientError::is_refusal`] tells a definitive
//! refusal (`PARAM_ERROR`, `INVALID_REQUEST`, `NO_AUTH`, ...: the request
//! changed nothing and resending it unchanged cannot help) from a `4xx`
//! whose code this client does not know, which is retried like a transient
//! error (`status: 0` means it was refused locally, before anything was
//! sent).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, Uri};
use serde::Deserialize;

pub use super::notify::NotifyHeaders;
use super::notify::{self, TransferResult};
pub use super::reply::ClientError;
use super::reply::*;
use super::sign::{self, RsaPrivateKey, RsaPublicKey};
pub use super::wire::*;

/// The codes a query for a bill the provider does not have may carry (the
/// documentation names `NOT_FOUND`; the others are WeChat Pay's generic
/// spellings of it).
const NOT_FOUND_CODES: [&str; 3] = ["NOT_FOUND", "ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"];

/// Largest JSON answer read.
const MAX_JSON_BODY: usize = 1 << 20;
/// Largest bill read.
const MAX_BILL_BODY: usize = 64 << 20;

fn default_timeout_ms() -> u64 {
    5000
}

fn default_remark() -> String {
    "奖励提现".into()
}

/// Another key that verifies the provider's signatures: a platform
/// certificate (or public key) and its serial.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// The `Wechatpay-Serial` it signs with.
    pub serial: String,
    /// PEM file: a `CERTIFICATE` or a `PUBLIC KEY`.
    pub file: PathBuf,
}

/// Provider connection settings and merchant credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL of the provider, e.g. `http://127.0.0.1:9090` (a path
    /// prefix is allowed and is part of the signed URL).
    pub base_url: String,
    /// Merchant id.
    pub mchid: String,
    /// App id (OAuth and transfers).
    pub appid: String,
    /// OAuth app secret.
    pub app_secret: String,
    /// Merchant RSA private key (PEM) that signs requests.
    pub merchant_key_file: PathBuf,
    /// Serial number of the merchant certificate.
    pub merchant_serial: String,
    /// The WeChat Pay public key (PEM; or a platform certificate) that
    /// verifies answers and notifications signed with `platform_serial`,
    /// and encrypts the real names sent to the provider.
    pub platform_public_key_file: PathBuf,
    /// Its `Wechatpay-Serial`: the public key id (`PUB_KEY_ID_…`) or the
    /// platform certificate's serial.
    pub platform_serial: String,
    /// Platform certificates also trusted to sign (a merchant moving from
    /// certificates to the public key receives both for a while).
    #[serde(default)]
    pub platform_certificates: Vec<VerifyKey>,
    /// The 32-character APIv3 key that decrypts notifications.
    pub api_v3_key: String,
    /// Per-request deadline, connect to last body byte.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The transfer scene and its report entries, sent with every transfer
    /// (default: scene 1000, cash marketing, with its two entries).
    #[serde(default)]
    pub transfer_scene: TransferScene,
    /// `transfer_remark`, shown to the user (at most 32 characters); see
    /// [`ProviderClient::remark`].
    #[serde(default = "default_remark")]
    pub transfer_remark: String,
    /// Where the OAuth token endpoints are (`/sns/oauth2/...`): default
    /// `https://api.weixin.qq.com`, or `base_url` when that is plain http
    /// to this machine (the simulator serves both).
    #[serde(default)]
    pub oauth_base_url: Option<String>,
    /// The OAuth authorize page the browser link flow sends users to;
    /// default WeChat's, `https://open.weixin.qq.com/connect/oauth2/authorize`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// A PEM file of CA certificates trusted for the provider's TLS, on top
    /// of the system's (for a provider behind a private CA, or a test).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for ProviderConfig {
    /// Secrets (`app_secret`, `api_v3_key`) are not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("app_secret", &"<redacted>")
            .field("merchant_key_file", &self.merchant_key_file)
            .field("merchant_serial", &self.merchant_serial)
            .field("platform_public_key_file", &self.platform_public_key_file)
            .field("platform_serial", &self.platform_serial)
            .field("api_v3_key", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("platform_certificates", &self.platform_certificates)
            .field("transfer_scene", &self.transfer_scene)
            .field("transfer_remark", &self.transfer_remark)
            .field("oauth_base_url", &self.oauth_base_url)
            .field("authorize_url", &self.authorize_url)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Unix seconds of the system clock: the provider checks the timestamps
/// it is sent against its own clock, so this is never the server's (moved)
/// clock.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

struct Inner {
    /// `scheme://authority` without a trailing slash.
    origin: String,
    /// The same for the OAuth endpoints.
    oauth_origin: String,
    oauth_prefix: String,
    /// Path prefix of the base URL, without a trailing slash (often empty).
    prefix: String,
    mchid: String,
    appid: String,
    app_secret: String,
    merchant_key: RsaPrivateKey,
    merchant_serial: String,
    /// Encrypts sensitive fields; also the first verification key.
    platform_key: RsaPublicKey,
    platform_serial: String,
    remark: String,
    /// Every key that verifies the provider's signatures, by serial.
    verify_keys: Vec<(String, RsaPublicKey)>,
    scene: TransferScene,
    api_v3_key: [u8; 32],
    timeout: Duration,
    /// For an `https` base URL.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The official account's `jsapi_ticket` and until when it serves.
    jsapi_ticket: std::sync::Mutex<Option<(String, i64)>>,
    authorize_url: String,
}

/// The provider client. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ProviderClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field(
                "base_url",
                &format!("{}{}", self.inner.origin, self.inner.prefix),
            )
            .field("mchid", &self.inner.mchid)
            .finish_non_exhaustive()
    }
}

/// Where WeChat serves the OAuth token endpoints.
pub const DEFAULT_OAUTH_BASE_URL: &str = "https://api.weixin.qq.com";

/// `(scheme://authority, path prefix, https)` of a base URL: http or https
/// with a host, no credentials, no query; plain http only to this machine.
fn parse_base(url: &str, name: &str) -> Result<(String, String, bool), ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::Config(format!("{name} {url:?}: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(ClientError::Config(format!(
                "{name} {url:?} must be an http or https URL"
            )))
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| ClientError::Config(format!("{name} {url:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(ClientError::Config(format!(
            "{name} must not carry credentials"
        )));
    }
    if uri.query().is_some() {
        return Err(ClientError::Config(format!("{name} must not have a query")));
    }
    if !https && !crate::tls::is_loopback(authority.host()) {
        return Err(ClientError::Config(format!(
            "{name} {url:?}: plain http only to this machine (the simulator); use https"
        )));
    }
    let scheme = if https { "https" } else { "http" };
    Ok((
        format!("{scheme}://{authority}"),
        uri.path().trim_end_matches('/').to_owned(),
        https,
    ))
}

/// WeChat's OAuth authorize page.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";

/// `s` percent-encoded for a query value.
pub fn percent_encode(s: &str) -> String {
    super::reply::encode_query_value(s)
}

fn check_config_field(value: &str, name: &str) -> Result<(), ClientError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ClientError::Config(format!(
            "{name} must be 1 to 256 visible ASCII characters without quotes or backslashes"
        )))
    }
}

impl ProviderClient {
    /// Loads and checks the keys and settings.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ClientError> {
        let (origin, prefix, https) = parse_base(&cfg.base_url, "base_url")?;
        // WeChat serves OAuth from another host than payments; the
        // simulator (on this machine) serves both.
        let oauth_base = match &cfg.oauth_base_url {
            Some(u) => u.clone(),
            None if !https => cfg.base_url.clone(),
            None => DEFAULT_OAUTH_BASE_URL.to_owned(),
        };
        let (oauth_origin, oauth_prefix, oauth_https) = parse_base(&oauth_base, "oauth_base_url")?;
        let authorize_url = cfg
            .authorize_url
            .clone()
            .unwrap_or_else(|| DEFAULT_AUTHORIZE_URL.to_owned());
        if !(authorize_url.starts_with("https://")
            || authorize_url
                .strip_prefix("http://")
                .and_then(|r| r.split(['/', '?']).next())
                .and_then(|a| a.rsplit_once(':').map(|(h, _)| h).or(Some(a)))
                .is_some_and(crate::tls::is_loopback))
            || authorize_url.contains(['?', '#'])
        {
            return Err(ClientError::Config(format!(
                "authorize_url {authorize_url:?}: an https URL without a query (http only to this machine)"
            )));
        }
        let tls = if https || oauth_https {
            Some(crate::tls::client_config(cfg.ca_file.as_deref()).map_err(ClientError::Config)?)
        } else {
            None
        };
        for (value, name) in [
            (&cfg.mchid, "mchid"),
            (&cfg.appid, "appid"),
            (&cfg.app_secret, "app_secret"),
            (&cfg.merchant_serial, "merchant_serial"),
            (&cfg.platform_serial, "platform_serial"),
        ] {
            check_config_field(value, name)?;
        }
        let api_v3_key = notify::api_v3_key_from_str(&cfg.api_v3_key)
            .map_err(|_| ClientError::Config("api_v3_key must be exactly 32 bytes".into()))?;
        if cfg.timeout_ms == 0 {
            return Err(ClientError::Config("timeout_ms must be positive".into()));
        }
        cfg.transfer_scene
            .check()
            .map_err(|e| ClientError::Config(format!("transfer_scene: {e}")))?;
        if !valid_remark(&cfg.transfer_remark) {
            return Err(ClientError::Config(format!(
                "transfer_remark: 1 to {MAX_REMARK_CHARS} characters"
            )));
        }
        let merchant_key = sign::load_private_key(&cfg.merchant_key_file).map_err(|e| {
            ClientError::Config(format!(
                "merchant key {}: {e}",
                cfg.merchant_key_file.display()
            ))
        })?;
        let platform_key = sign::load_public_key(&cfg.platform_public_key_file).map_err(|e| {
            ClientError::Config(format!(
                "platform public key {}: {e}",
                cfg.platform_public_key_file.display()
            ))
        })?;
        let mut verify_keys = vec![(cfg.platform_serial.clone(), platform_key.clone())];
        for k in &cfg.platform_certificates {
            check_config_field(&k.serial, "platform_certificates.serial")?;
            if verify_keys.iter().any(|(s, _)| *s == k.serial) {
                return Err(ClientError::Config(format!(
                    "serial {:?} is configured twice",
                    k.serial
                )));
            }
            let key = sign::load_public_key(&k.file).map_err(|e| {
                ClientError::Config(format!("platform certificate {}: {e}", k.file.display()))
            })?;
            verify_keys.push((k.serial.clone(), key));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                origin,
                prefix,
                oauth_origin,
                oauth_prefix,
                mchid: cfg.mchid.clone(),
                appid: cfg.appid.clone(),
                app_secret: cfg.app_secret.clone(),
                merchant_key,
                merchant_serial: cfg.merchant_serial.clone(),
                platform_key,
                platform_serial: cfg.platform_serial.clone(),
                verify_keys,
                scene: cfg.transfer_scene.clone(),
                remark: cfg.transfer_remark.clone(),
                api_v3_key,
                timeout: Duration::from_millis(cfg.timeout_ms),
                tls,
                jsapi_ticket: std::sync::Mutex::new(None),
                authorize_url,
            }),
        })
    }

    /// The configured `transfer_remark`.
    pub fn remark(&self) -> &str {
        &self.inner.remark
    }

    /// Where to send a user's browser to authorize the link: the provider
    /// approves, then sends it to `redirect_uri?code=...&state=...`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        let query = query_string(&[
            ("appid", &self.inner.appid),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "snsapi_base"),
            ("state", state),
        ]);
        format!("{}?{query}#wechat_redirect", self.inner.authorize_url)
    }

    /// Exchanges a single-use OAuth code for tokens and the user's openid.
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthTokens, ClientError> {
        if code.is_empty() || code.len() > 512 {
            return Err(ClientError::local("40029", "invalid code"));
        }
        let query = query_string(&[
            ("appid", &self.inner.appid),
            ("secret", &self.inner.app_secret),
            ("code", code),
            ("grant_type", "authorization_code"),
        ]);
        let url = format!(
            "{}/sns/oauth2/access_token?{query}",
            self.inner.oauth_prefix
        );
        let reply = self.send_unsigned(Method::GET, &url, None).await?;
        oauth_tokens(reply.status, &reply.body)
    }

    /// The JS-SDK configuration for the page at `url` (its full URL as
    /// the browser has it). The `jsapi_ticket` is fetched once and kept
    /// until shortly before it expires.
    pub async fn jsapi_config(&self, url: &str) -> Result<crate::jsapi::JsapiConfig, ClientError> {
        let now = now();
        let cached = self
            .inner
            .jsapi_ticket
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .filter(|(_, until)| *until > now);
        let ticket = match cached {
            Some((t, _)) => t,
            None => {
                let (t, expires_in) = self.fetch_jsapi_ticket().await?;
                if let Ok(mut g) = self.inner.jsapi_ticket.lock() {
                    *g = Some((t.clone(), now + (expires_in - 300).max(60)));
                }
                t
            }
        };
        let nonce_str = sign::random_alphanumeric(16)
            .map_err(|e| ClientError::Config(format!("cannot make a nonce: {e}")))?;
        Ok(crate::jsapi::JsapiConfig {
            app_id: self.inner.appid.clone(),
            timestamp: now,
            signature: crate::jsapi::signature(&ticket, &nonce_str, now, url),
            nonce_str,
        })
    }

    async fn fetch_jsapi_ticket(&self) -> Result<(String, i64), ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "grant_type": "client_credential",
            "appid": self.inner.appid,
            "secret": self.inner.app_secret,
        }))
        .map_err(|e| ClientError::Protocol(format!("cannot serialise the request: {e}")))?;
        let url = format!("{}/cgi-bin/stable_token", self.inner.oauth_prefix);
        let reply = self.send_unsigned(Method::POST, &url, Some(body)).await?;
        let token = wx_field(
            wx_reply(reply.status, &reply.body)?.access_token,
            "access_token",
        )?;
        let url = format!(
            "{}/cgi-bin/ticket/getticket?{}",
            self.inner.oauth_prefix,
            query_string(&[("access_token", &token), ("type", "jsapi")])
        );
        let reply = self.send_unsigned(Method::GET, &url, None).await?;
        let r = wx_reply(reply.status, &reply.body)?;
        let expires_in = r.expires_in.unwrap_or(7200);
        Ok((wx_field(r.ticket, "ticket")?, expires_in))
    }

    /// Gets a new access token with a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<OAuthTokens, ClientError> {
        if refresh_token.is_empty() || refresh_token.len() > 512 {
            return Err(ClientError::local("40030", "invalid refresh_token"));
        }
        let query = query_string(&[
            ("appid", &self.inner.appid),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ]);
        let url = format!(
            "{}/sns/oauth2/refresh_token?{query}",
            self.inner.oauth_prefix
        );
        let reply = self.send_unsigned(Method::GET, &url, None).await?;
        oauth_tokens(reply.status, &reply.body)
    }

    /// The JSON body of a transfer create, with the real name encrypted;
    /// refuses (locally) an invalid request.
    pub fn transfer_body(&self, t: &TransferRequest) -> Result<TransferBillBody, ClientError> {
        if !valid_out_bill_no(&t.out_bill_no) {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "out_bill_no must be 1 to 32 letters and digits",
            ));
        }
        if !valid_openid(&t.openid) {
            return Err(ClientError::local("PARAM_ERROR", "invalid openid"));
        }
        if t.amount == 0 || i64::try_from(t.amount).is_err() {
            return Err(ClientError::local("PARAM_ERROR", "amount out of range"));
        }
        if !valid_remark(&t.remark) {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "transfer_remark must be 1 to 32 characters",
            ));
        }
        let local_receiver = t
            .notify_url
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(crate::tls::is_loopback))
            .unwrap_or(false);
        if !valid_notify_url(&t.notify_url, local_receiver) {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "notify_url must be an https URL without a query",
            ));
        }
        let user_name = match &t.user_name {
            Some(name) if !valid_real_name(name) => {
                return Err(ClientError::local("PARAM_ERROR", "invalid real name"))
            }
            Some(_) if t.amount < USER_NAME_ALLOWED_FROM_FEN => {
                return Err(ClientError::local(
                    "PARAM_ERROR",
                    "a transfer below 0.3 yuan must not carry a real name",
                ))
            }
            Some(name) => Some(
                sign::encrypt_sensitive(&self.inner.platform_key, name)
                    .map_err(|e| ClientError::Config(format!("cannot encrypt user_name: {e}")))?,
            ),
            None if t.amount >= USER_NAME_REQUIRED_FROM_FEN => {
                return Err(ClientError::local(
                    "PARAM_ERROR",
                    "a transfer of 2,000 yuan or more needs the payee's real name",
                ))
            }
            None => None,
        };
        Ok(TransferBillBody {
            appid: self.inner.appid.clone(),
            out_bill_no: t.out_bill_no.clone(),
            transfer_scene_id: self.inner.scene.id.clone(),
            openid: t.openid.clone(),
            user_name,
            transfer_amount: t.amount,
            transfer_remark: t.remark.clone(),
            notify_url: Some(t.notify_url.clone()),
            user_recv_perception: self.inner.scene.user_recv_perception.clone(),
            transfer_scene_report_infos: self.inner.scene.report_infos.clone(),
        })
    }

    fn bills_path(&self) -> String {
        format!(
            "{}/v3/fund-app/mch-transfer/transfer-bills",
            self.inner.prefix
        )
    }

    /// Creates (or, with the same `out_bill_no` and fields, finds) a
    /// transfer bill. A transient error leaves the outcome unknown: query
    /// it, then resend the same request.
    pub async fn create_transfer(
        &self,
        t: &TransferRequest,
    ) -> Result<TransferStatus, ClientError> {
        let body = self.transfer_body(t)?;
        let encrypted = body.user_name.is_some();
        let body = serde_json::to_vec(&body)
            .map_err(|e| ClientError::Protocol(format!("cannot serialise the request: {e}")))?;
        let reply = self
            .send(Request {
                method: Method::POST,
                url: &self.bills_path(),
                body: Some(body),
                signed: true,
                // Names the key the encrypted field is under.
                serial: encrypted.then_some(self.inner.platform_serial.as_str()),
                limit: MAX_JSON_BODY,
            })
            .await?;
        let reply: CreateReply = serde_json::from_slice(classify(&reply)?)
            .map_err(|e| ClientError::Protocol(format!("unreadable transfer: {e}")))?;
        for_bill(created_status(reply)?, &t.out_bill_no)
    }

    /// The provider's view of a transfer by our number; `None` when it has
    /// no such transfer.
    pub async fn query_transfer(
        &self,
        out_bill_no: &str,
    ) -> Result<Option<TransferStatus>, ClientError> {
        if !valid_out_bill_no(out_bill_no) {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "out_bill_no must be 1 to 32 letters and digits",
            ));
        }
        let url = format!("{}/out-bill-no/{out_bill_no}", self.bills_path());
        self.query(&url)
            .await?
            .map(|s| for_bill(s, out_bill_no))
            .transpose()
    }

    /// The provider's view of a transfer by its number; `None` when it has
    /// no such transfer.
    pub async fn query_transfer_by_bill_no(
        &self,
        transfer_bill_no: &str,
    ) -> Result<Option<TransferStatus>, ClientError> {
        if transfer_bill_no.is_empty()
            || transfer_bill_no.len() > 64
            || !transfer_bill_no.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "transfer_bill_no must be 1 to 64 letters and digits",
            ));
        }
        let url = format!("{}/transfer-bill-no/{transfer_bill_no}", self.bills_path());
        let status = self.query(&url).await?;
        if let Some(s) = &status {
            if s.transfer_bill_no != transfer_bill_no {
                return Err(ClientError::Protocol(format!(
                    "answer is for bill {:?}, not {transfer_bill_no:?}",
                    s.transfer_bill_no
                )));
            }
        }
        Ok(status)
    }

    async fn query(&self, url: &str) -> Result<Option<TransferStatus>, ClientError> {
        let reply = self
            .send(Request {
                method: Method::GET,
                url,
                body: None,
                signed: true,
                serial: None,
                limit: MAX_JSON_BODY,
            })
            .await?;
        let body = match classify(&reply) {
            Ok(body) => body,
            Err(ClientError::Rejected {
                status: 404, code, ..
            }) if NOT_FOUND_CODES.contains(&code.as_str()) => return Ok(None),
            Err(e) => return Err(e),
        };
        let reply: QueryReply = serde_json::from_slice(body)
            .map_err(|e| ClientError::Protocol(format!("unreadable transfer: {e}")))?;
        if reply.mch_id != self.inner.mchid || reply.appid != self.inner.appid {
            return Err(ClientError::Protocol(format!(
                "answer is for merchant {:?} app {:?}",
                reply.mch_id, reply.appid
            )));
        }
        queried_status(reply).map(Some)
    }

    /// Asks the provider to cancel a transfer the user has not confirmed
    /// yet. The answer is `CANCELING` (or already `CANCELLED`); the final
    /// state arrives as a notification or a query. A bill past
    /// confirmation answers a refusal (`INVALID_REQUEST`).
    pub async fn cancel_transfer(&self, out_bill_no: &str) -> Result<TransferStatus, ClientError> {
        if !valid_out_bill_no(out_bill_no) {
            return Err(ClientError::local(
                "PARAM_ERROR",
                "out_bill_no must be 1 to 32 letters and digits",
            ));
        }
        let url = format!("{}/out-bill-no/{out_bill_no}/cancel", self.bills_path());
        let reply = self
            .send(Request {
                method: Method::POST,
                url: &url,
                body: Some(Vec::new()),
                signed: true,
                serial: None,
                limit: MAX_JSON_BODY,
            })
            .await?;
        let reply: CancelReply = serde_json::from_slice(classify(&reply)?)
            .map_err(|e| ClientError::Protocol(format!("unreadable cancel answer: {e}")))?;
        for_bill(cancelled_status(reply)?, out_bill_no)
    }

    /// Downloads the daily bill of `date` (provider local date), verified;
    /// parse it with [`super::bill::parse_bill`].
    pub async fn download_bill(&self, date: chrono::NaiveDate) -> Result<String, ClientError> {
        let url = format!(
            "{}/v3/bills?date={}",
            self.inner.prefix,
            date.format("%Y-%m-%d")
        );
        let reply = self
            .send(Request {
                method: Method::GET,
                url: &url,
                body: None,
                signed: true,
                serial: None,
                limit: MAX_BILL_BODY,
            })
            .await?;
        let body = classify(&reply)?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Protocol("bill is not UTF-8".into()))
    }

    /// Verifies a notification's serial, timestamp (5 minutes around `now`,
    /// Unix seconds) and signature over the raw `body`, then decrypts it and
    /// checks it is for our merchant id.
    pub fn verify_notification(
        &self,
        h: &NotifyHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<TransferResult, ClientError> {
        self.verify_signed(h, body, now)?;
        let (_, result) = notify::parse_and_decrypt(&self.inner.api_v3_key, body)
            .map_err(|e| ClientError::Protocol(format!("notification: {e}")))?;
        if let Some(m) = result.merchant().filter(|m| *m != self.inner.mchid) {
            return Err(ClientError::Protocol(format!(
                "notification for merchant {m:?}"
            )));
        }
        Ok(result)
    }

    /// Checks the `Wechatpay-*` headers over `body`: a probe signature is
    /// [`ClientError::SignatureProbe`], an unknown serial, a timestamp 5
    /// minutes or more away, or a signature that does not verify
    /// [`ClientError::BadSignature`].
    fn verify_signed(&self, h: &NotifyHeaders, body: &[u8], now: i64) -> Result<(), ClientError> {
        if sign::is_probe_signature(&h.signature) {
            return Err(ClientError::SignatureProbe);
        }
        // Certificate serials are hex, in either case.
        let Some((_, key)) = self
            .inner
            .verify_keys
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(&h.serial))
        else {
            return Err(ClientError::BadSignature(format!(
                "unknown {} {:?}",
                sign::HEADER_SERIAL,
                h.serial
            )));
        };
        sign::verify_response(
            key,
            &h.timestamp,
            &h.nonce,
            body,
            &h.signature,
            now,
            sign::DEFAULT_MAX_SKEW_SECS,
        )
        .map_err(|e| ClientError::BadSignature(e.to_string()))
    }

    /// The `Authorization` header value for a request.
    pub fn authorization(
        &self,
        method: &Method,
        url: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<String, ClientError> {
        let nonce = sign::generate_nonce()
            .map_err(|e| ClientError::Config(format!("cannot make a nonce: {e}")))?;
        sign::build_authorization(
            &self.inner.merchant_key,
            &self.inner.mchid,
            &self.inner.merchant_serial,
            method.as_str(),
            url,
            timestamp,
            &nonce,
            body,
        )
        .map_err(|e| ClientError::Config(format!("cannot sign the request: {e}")))
    }

    /// Sends one request to `origin + url` (`url` = path and query, which is
    /// also what is signed) and reads the answer, all within the timeout.
    /// With `signed`, the request carries an `Authorization` header and an
    /// answer that needs one must have a valid provider signature.
    /// A request to WeChat's official-account API (OAuth, JS-SDK ticket):
    /// unsigned, answered with a small JSON body.
    async fn send_unsigned(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawReply, ClientError> {
        self.send(Request {
            method,
            url,
            body,
            signed: false,
            serial: None,
            limit: MAX_JSON_BODY,
        })
        .await
    }

    async fn send(&self, r: Request<'_>) -> Result<RawReply, ClientError> {
        let deadline = self.inner.timeout;
        let signed = r.signed;
        let reply = match actix_web::rt::time::timeout(deadline, self.send_inner(r)).await {
            Ok(result) => result?,
            Err(_elapsed) => return Err(ClientError::Timeout),
        };
        if signed && needs_signature(reply.status) {
            let headers = reply.headers.as_ref().ok_or_else(|| {
                ClientError::BadSignature(format!(
                    "HTTP {} answer without the Wechatpay-* headers",
                    reply.status
                ))
            })?;
            self.verify_signed(headers, &reply.body, now())?;
        }
        Ok(reply)
    }

    async fn send_inner(&self, r: Request<'_>) -> Result<RawReply, ClientError> {
        // Slightly longer than the overall deadline: the outer timeout is the
        // one that fires and is reported.
        let mut connector =
            awc::Connector::new().timeout(self.inner.timeout + Duration::from_millis(100));
        if let Some(tls) = &self.inner.tls {
            connector = connector.rustls_0_23(Arc::clone(tls));
        }
        let client = awc::Client::builder()
            .timeout(self.inner.timeout + Duration::from_millis(100))
            .connector(connector)
            .disable_redirects()
            .finish();
        // Unsigned requests are the OAuth ones.
        let origin = if r.signed {
            &self.inner.origin
        } else {
            &self.inner.oauth_origin
        };
        let full_url = format!("{origin}{}", r.url);
        let body = r.body.unwrap_or_default();
        let mut request = client
            .request(r.method.clone(), full_url)
            .insert_header(("Accept", "application/json"))
            .insert_header(("User-Agent", concat!("qrgate/", env!("CARGO_PKG_VERSION"))));
        if r.signed {
            let auth = self.authorization(&r.method, r.url, now(), &body)?;
            request = request.insert_header(("Authorization", auth));
        }
        if let Some(serial) = r.serial {
            request = request.insert_header((sign::HEADER_SERIAL, serial));
        }
        let sent = if r.method == Method::POST {
            request
                .insert_header(("Content-Type", "application/json"))
                .send_body(body)
                .await
        } else {
            request.send().await
        };
        let mut response = sent.map_err(map_send_error)?;
        let status = response.status();
        let headers = NotifyHeaders::from_headers(response.headers());
        let limit = r.limit;
        let body = response.body().limit(limit).await.map_err(|e| match e {
            awc::error::PayloadError::Overflow => {
                ClientError::Protocol(format!("answer larger than {limit} bytes"))
            }
            other => ClientError::Unavailable(format!("reading the answer: {other}")),
        })?;
        Ok(RawReply {
            status: status.as_u16(),
            headers,
            body,
        })
    }
}

/// One request to the provider.
struct Request<'a> {
    method: Method,
    /// Path and query (what is signed).
    url: &'a str,
    body: Option<Vec<u8>>,
    /// Carries an `Authorization`, and its answer must be signed.
    signed: bool,
    /// `Wechatpay-Serial` to send: the key an encrypted field is under.
    serial: Option<&'a str>,
    /// Largest answer read.
    limit: usize,
}

fn map_send_error(e: awc::error::SendRequestError) -> ClientError {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            ClientError::Timeout
        }
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => {
            ClientError::Config("https base_url: TLS is not set up".into())
        }
        SendRequestError::Url(e) => ClientError::Config(format!("invalid URL: {e}")),
        other => ClientError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::TransferState;
    use std::sync::OnceLock;

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: ProviderConfig,
        merchant_public: RsaPublicKey,
        platform_private: RsaPrivateKey,
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let (merchant_private, merchant_public) = sign::generate_keypair().expect("keys");
            let (platform_private, platform_public) = sign::generate_keypair().expect("keys");
            let merchant_key_file = dir.path().join("merchant.pem");
            let platform_public_key_file = dir.path().join("platform_public.pem");
            sign::save_private_key(&merchant_key_file, &merchant_private).expect("save");
            sign::save_public_key(&platform_public_key_file, &platform_public).expect("save");
            let cfg = ProviderConfig {
                base_url: "http://127.0.0.1:9".into(),
                mchid: "1900000001".into(),
                appid: "wx-test".into(),
                app_secret: "secret".into(),
                merchant_key_file,
                merchant_serial: "M-SERIAL".into(),
                platform_public_key_file,
                platform_serial: "P-SERIAL".into(),
                api_v3_key: "0123456789abcdefghijklmnopqrstuv".into(),
                timeout_ms: 5000,
                platform_certificates: Vec::new(),
                transfer_scene: TransferScene::default(),
                transfer_remark: "奖励提现".into(),
                oauth_base_url: None,
                authorize_url: None,
                ca_file: None,
            };
            Fixture {
                _dir: dir,
                cfg,
                merchant_public,
                platform_private,
            }
        })
    }

    fn client() -> ProviderClient {
        ProviderClient::new(&fixture().cfg).expect("client")
    }

    fn request() -> TransferRequest {
        TransferRequest {
            out_bill_no: "T1a".into(),
            openid: "o-user".into(),
            amount: 123,
            remark: "提现".into(),
            user_name: None,
            notify_url: "http://127.0.0.1:1/notify".into(),
        }
    }

    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn client_is_send_sync_clone() {
        assert_send_sync_clone::<ProviderClient>();
    }

    #[test]
    fn config_from_toml_with_defaults_and_redacted_debug() {
        let f = fixture();
        let text = format!(
            r#"
            base_url = "http://127.0.0.1:9090"
            mchid = "1900000001"
            appid = "wx"
            app_secret = "very-secret"
            merchant_key_file = "{}"
            merchant_serial = "S"
            platform_public_key_file = "{}"
            platform_serial = "P"
            api_v3_key = "0123456789abcdefghijklmnopqrstuv"
            "#,
            f.cfg.merchant_key_file.display(),
            f.cfg.platform_public_key_file.display()
        );
        let cfg: ProviderConfig = toml::from_str(&text).expect("parse");
        assert_eq!(cfg.timeout_ms, 5000);
        assert_eq!(cfg.transfer_scene, TransferScene::default());
        assert_eq!(cfg.transfer_remark, "奖励提现");
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        ProviderClient::new(&cfg).expect("valid");

        let unknown = format!("{text}\nextra = 1\n");
        assert!(toml::from_str::<ProviderConfig>(&unknown).is_err());
    }

    #[test]
    fn config_validation() {
        let base = &fixture().cfg;
        let bad = |edit: &dyn Fn(&mut ProviderConfig)| {
            let mut cfg = base.clone();
            edit(&mut cfg);
            match ProviderClient::new(&cfg) {
                Err(ClientError::Config(_)) => {}
                other => panic!("expected a config error, got {other:?}"),
            }
        };
        bad(&|c| c.base_url = "ftp://127.0.0.1".into());
        bad(&|c| c.base_url = "127.0.0.1:9090".into());
        bad(&|c| c.base_url = "http://".into());
        bad(&|c| c.base_url = "http://u:p@host".into());
        bad(&|c| c.base_url = "http://host/?x=1".into());
        bad(&|c| c.api_v3_key = "short".into());
        bad(&|c| c.api_v3_key = "0123456789abcdefghijklmnopqrstuvw".into());
        bad(&|c| c.mchid = String::new());
        bad(&|c| c.merchant_serial = "a\"b".into());
        bad(&|c| c.timeout_ms = 0);
        bad(&|c| c.transfer_remark = "字".repeat(33));
        bad(&|c| c.transfer_scene.report_infos.truncate(1));
        bad(&|c| c.transfer_scene.id = "10-00".into());
        bad(&|c| {
            c.platform_certificates.push(VerifyKey {
                serial: c.platform_serial.clone(),
                file: c.platform_public_key_file.clone(),
            })
        });
        bad(&|c| c.merchant_key_file = c.platform_public_key_file.clone());
        bad(&|c| c.platform_public_key_file = c.merchant_key_file.clone());
        bad(&|c| c.merchant_key_file = "/nonexistent/key.pem".into());

        let mut cfg = base.clone();
        cfg.base_url = "https://api.example.com/prefix/".into();
        let client = ProviderClient::new(&cfg).expect("https with a prefix");
        assert_eq!(client.inner.origin, "https://api.example.com");
        assert_eq!(client.inner.prefix, "/prefix");
        // WeChat serves OAuth from its own host; the simulator serves both.
        assert_eq!(client.inner.oauth_origin, "https://api.weixin.qq.com");
        assert_eq!(client.inner.oauth_prefix, "");
        let local = ProviderClient::new(base).expect("the simulator");
        assert_eq!(local.inner.oauth_origin, local.inner.origin);
        cfg.oauth_base_url = Some("https://oauth.example.com/o/".into());
        let client = ProviderClient::new(&cfg).expect("an OAuth base");
        assert_eq!(
            (
                client.inner.oauth_origin.as_str(),
                client.inner.oauth_prefix.as_str()
            ),
            ("https://oauth.example.com", "/o")
        );
        bad(&|c| c.oauth_base_url = Some("http://example.com".into()));
    }

    #[test]
    fn transfer_body_is_built_and_validated() {
        let c = client();
        let body = c.transfer_body(&request()).expect("body");
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "appid": "wx-test",
                "out_bill_no": "T1a",
                "transfer_scene_id": "1000",
                "openid": "o-user",
                "transfer_amount": 123,
                "transfer_remark": "提现",
                "notify_url": "http://127.0.0.1:1/notify",
                "user_recv_perception": "现金奖励",
                "transfer_scene_report_infos": [
                    {"info_type": "活动名称", "info_content": "社区奖励提现"},
                    {"info_type": "奖励说明", "info_content": "社区活动奖励"},
                ],
            })
        );
        // The real name travels encrypted under the provider's key.
        let mut named = request();
        named.user_name = Some("张三".into());
        let body = c.transfer_body(&named).expect("body");
        let cipher = body.user_name.clone().expect("encrypted name");
        assert_ne!(cipher, "张三");
        assert_eq!(
            sign::decrypt_sensitive(&fixture().platform_private, &cipher).expect("decrypt"),
            "张三"
        );
        assert_ne!(
            c.transfer_body(&named).expect("body").user_name,
            Some(cipher),
            "OAEP is randomised"
        );

        let refused = |edit: &dyn Fn(&mut TransferRequest)| {
            let mut t = request();
            edit(&mut t);
            match c.transfer_body(&t) {
                Err(e @ ClientError::Rejected { status: 0, .. }) => {
                    assert!(!e.is_transient());
                    assert!(e.is_refusal());
                }
                other => panic!("expected a local refusal, got {other:?}"),
            }
        };
        refused(&|t| t.out_bill_no = String::new());
        refused(&|t| t.out_bill_no = "T-1".into());
        refused(&|t| t.out_bill_no = "T_1".into());
        refused(&|t| t.out_bill_no = "x".repeat(33));
        refused(&|t| t.amount = 0);
        refused(&|t| t.amount = u64::MAX);
        refused(&|t| t.openid = "o user".into());
        refused(&|t| t.remark = String::new());
        refused(&|t| t.remark = "字".repeat(33));
        refused(&|t| t.remark = "a\nb".into());
        refused(&|t| t.notify_url = "/relative".into());
        refused(&|t| t.notify_url = "ftp://x/y".into());
        refused(&|t| t.notify_url = "http://example.com/notify".into());
        refused(&|t| t.notify_url = "https://example.com/notify?x=1".into());
        refused(&|t| t.user_name = Some(String::new()));
        refused(&|t| {
            t.amount = USER_NAME_ALLOWED_FROM_FEN - 1;
            t.user_name = Some("张三".into());
        });
        // From 2,000 yuan the name is required.
        refused(&|t| t.amount = USER_NAME_REQUIRED_FROM_FEN);
        let mut t = request();
        t.amount = USER_NAME_REQUIRED_FROM_FEN;
        t.user_name = Some("张三".into());
        c.transfer_body(&t).expect("named");
        // 32 characters (not bytes) are fine; https anywhere is.
        let mut t = request();
        t.remark = "字".repeat(32);
        t.notify_url = "https://example.com/v1/provider/notify".into();
        c.transfer_body(&t).expect("32 characters");
    }

    #[test]
    fn scene_1000_needs_its_two_report_entries() {
        let mut scene = TransferScene::default();
        assert_eq!(scene.check(), Ok(()));
        scene.report_infos.retain(|i| i.info_type != "奖励说明");
        scene.report_infos.push(SceneReportInfo {
            info_type: "其他".into(),
            info_content: "x".into(),
        });
        assert!(scene.check().is_err());
        scene.id = "1002".into();
        assert_eq!(
            scene.check(),
            Ok(()),
            "other scenes are the operator's to fill"
        );
        scene.report_infos[0].info_content = "字".repeat(33);
        assert!(scene.check().is_err());
    }

    #[test]
    fn refusals_are_told_from_unknown_codes() {
        let rejected = |code: &str| ClientError::Rejected {
            status: 400,
            code: code.into(),
            message: String::new(),
        };
        for code in ["PARAM_ERROR", "INVALID_REQUEST", "NO_AUTH"] {
            assert!(rejected(code).is_refusal(), "{code}");
        }
        assert!(!rejected("SOMETHING_NEW").is_refusal());
        assert!(!ClientError::Timeout.is_refusal());
        assert!(ClientError::SignatureProbe.is_transient());
    }

    #[test]
    fn answers_signed_by_a_platform_certificate_or_a_probe() {
        let f = fixture();
        let dir = tempfile::tempdir().expect("tempdir");
        // A platform certificate (X.509 PEM) with its own key.
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256);
        let (cert_private, cert_pem) = match cert_key {
            Ok(k) => {
                let cert = rcgen::CertificateParams::new(vec!["wechatpay".into()])
                    .expect("params")
                    .self_signed(&k)
                    .expect("cert");
                (
                    sign::private_key_from_pem(&k.serialize_pem()).expect("key"),
                    cert.pem(),
                )
            }
            // rcgen with ring cannot generate RSA keys: sign one ourselves.
            Err(_) => {
                let (private, _) = sign::generate_keypair().expect("keys");
                let pem = sign::private_key_to_pem(&private).expect("pem");
                let k = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                    .expect("rcgen key");
                let cert = rcgen::CertificateParams::new(vec!["wechatpay".into()])
                    .expect("params")
                    .self_signed(&k)
                    .expect("cert");
                (private, cert.pem())
            }
        };
        let cert_file = dir.path().join("platform_cert.pem");
        std::fs::write(&cert_file, cert_pem).expect("write");
        let mut cfg = f.cfg.clone();
        cfg.platform_certificates.push(VerifyKey {
            serial: "CERT-SERIAL".into(),
            file: cert_file,
        });
        let c = ProviderClient::new(&cfg).expect("client");
        let body = br#"{"ok":true}"#;
        let now = 1_700_000_000;
        let by = |key: &RsaPrivateKey, serial: &str| {
            let h = sign::sign_response_headers(key, serial, now, body).expect("headers");
            NotifyHeaders {
                timestamp: h.timestamp,
                nonce: h.nonce,
                signature: h.signature,
                serial: h.serial,
            }
        };
        c.verify_signed(&by(&cert_private, "CERT-SERIAL"), body, now)
            .expect("the certificate's serial");
        c.verify_signed(&by(&f.platform_private, "P-SERIAL"), body, now)
            .expect("the public key's serial");
        assert!(matches!(
            c.verify_signed(&by(&cert_private, "P-SERIAL"), body, now),
            Err(ClientError::BadSignature(_))
        ));
        let mut probe = by(&f.platform_private, "P-SERIAL");
        probe.signature = format!("{}abc", sign::PROBE_SIGNATURE_PREFIX);
        assert!(matches!(
            c.verify_signed(&probe, body, now),
            Err(ClientError::SignatureProbe)
        ));
        // Five minutes of skew or more is refused.
        let h = by(&f.platform_private, "P-SERIAL");
        assert!(c.verify_signed(&h, body, now + 299).is_ok());
        assert!(matches!(
            c.verify_signed(&h, body, now + 300),
            Err(ClientError::BadSignature(_))
        ));
    }

    #[test]
    fn authorization_verifies_with_the_merchant_key() {
        let c = client();
        let f = fixture();
        let body = br#"{"a":1}"#;
        let header = c
            .authorization(&Method::POST, "/v3/transfers", 1_700_000_000, body)
            .expect("auth");
        let auth = sign::parse_authorization(&header).expect("parse");
        assert_eq!(auth.mchid, "1900000001");
        assert_eq!(auth.serial_no, "M-SERIAL");
        sign::verify_request(
            &f.merchant_public,
            &auth,
            "POST",
            "/v3/transfers",
            body,
            1_700_000_000,
            300,
        )
        .expect("verifies");
        assert!(sign::verify_request(
            &f.merchant_public,
            &auth,
            "POST",
            "/v3/transfers?x",
            body,
            1_700_000_000,
            300
        )
        .is_err());
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(
            query_string(&[("code", "a b&c=d/é"), ("x", "AZaz09-._~")]),
            "code=a%20b%26c%3Dd%2F%C3%A9&x=AZaz09-._~"
        );
    }

    fn reply(status: u16, body: &str) -> RawReply {
        RawReply {
            status,
            headers: None,
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn status_classification() {
        assert!(classify(&reply(200, "{}")).is_ok());
        match classify(&reply(400, r#"{"code":"PARAM_ERROR","message":"bad"}"#)) {
            Err(ClientError::Rejected {
                status: 400,
                code,
                message,
            }) => {
                assert_eq!(code, "PARAM_ERROR");
                assert_eq!(message, "bad");
            }
            other => panic!("{other:?}"),
        }
        match classify(&reply(403, r#"{"code":"NOT_ENOUGH"}"#)) {
            Err(e @ ClientError::Rejected { status: 403, .. }) => assert!(!e.is_transient()),
            other => panic!("{other:?}"),
        }
        for status in [500, 502, 503, 429, 408] {
            match classify(&reply(status, "oops")) {
                Err(e @ ClientError::Unavailable(_)) => assert!(e.is_transient()),
                other => panic!("{status}: {other:?}"),
            }
        }
        match classify(&reply(400, "<html>")) {
            Err(e @ ClientError::Protocol(_)) => assert!(e.is_transient()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&reply(302, "")),
            Err(ClientError::Protocol(_))
        ));
        assert!(needs_signature(200) && needs_signature(404) && needs_signature(401));
        assert!(!needs_signature(500) && !needs_signature(429));
    }

    #[test]
    fn transience() {
        assert!(ClientError::Timeout.is_transient());
        assert!(ClientError::Unavailable("x".into()).is_transient());
        assert!(ClientError::BadSignature("x".into()).is_transient());
        assert!(ClientError::Protocol("x".into()).is_transient());
        assert!(!ClientError::Config("x".into()).is_transient());
        assert!(!ClientError::Rejected {
            status: 400,
            code: "PARAM_ERROR".into(),
            message: String::new()
        }
        .is_transient());
    }

    #[test]
    fn oauth_answers() {
        let ok = r#"{"access_token":"A","expires_in":7200,"refresh_token":"R","openid":"o1","scope":"snsapi_base"}"#;
        let tokens = oauth_tokens(200, ok.as_bytes()).expect("tokens");
        assert_eq!(tokens.openid, "o1");
        assert_eq!(tokens.expires_in, 7200);
        match oauth_tokens(200, br#"{"errcode":40029,"errmsg":"invalid code"}"#) {
            Err(ClientError::Rejected {
                status: 200,
                code,
                message,
            }) => {
                assert_eq!(code, "40029");
                assert_eq!(message, "invalid code");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            oauth_tokens(200, br#"{"access_token":"A"}"#),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            oauth_tokens(503, b""),
            Err(ClientError::Unavailable(_))
        ));
    }

    #[test]
    fn notifications_are_verified_then_decrypted() {
        let c = client();
        let f = fixture();
        let key = notify::api_v3_key_from_str(&f.cfg.api_v3_key).expect("key");
        let result = TransferResult {
            mch_id: Some("1900000001".into()),
            mchid: None,
            out_bill_no: "T1".into(),
            transfer_bill_no: "B1".into(),
            state: TransferState::Success,
            amount: 100,
            openid: "o1".into(),
            fail_reason: None,
            create_time: None,
            update_time: "2024-01-05T10:00:00+08:00".into(),
        };
        let body =
            notify::build_notification(&key, "EV-1", "2024-01-05T10:00:00+08:00", "done", &result)
                .expect("build");
        let now = 1_704_420_000;
        let h = sign::sign_response_headers(&f.platform_private, "P-SERIAL", now, body.as_bytes())
            .expect("sign");
        let headers = NotifyHeaders {
            timestamp: h.timestamp.clone(),
            nonce: h.nonce.clone(),
            signature: h.signature.clone(),
            serial: h.serial.clone(),
        };
        assert_eq!(
            c.verify_notification(&headers, body.as_bytes(), now + 10)
                .expect("valid"),
            result
        );
        // Too old.
        assert!(matches!(
            c.verify_notification(&headers, body.as_bytes(), now + 301),
            Err(ClientError::BadSignature(_))
        ));
        // Another serial.
        let other = NotifyHeaders {
            serial: "OTHER".into(),
            ..headers.clone()
        };
        assert!(matches!(
            c.verify_notification(&other, body.as_bytes(), now),
            Err(ClientError::BadSignature(_))
        ));
        // Tampered body.
        let tampered = body.replacen("EV-1", "EV-2", 1);
        assert!(matches!(
            c.verify_notification(&headers, tampered.as_bytes(), now),
            Err(ClientError::BadSignature(_))
        ));
        // Another merchant's notification, validly signed.
        let foreign = TransferResult {
            mch_id: None,
            mchid: Some("1900000002".into()),
            ..result
        };
        let body =
            notify::build_notification(&key, "EV-3", "2024-01-05T10:00:00+08:00", "", &foreign)
                .expect("build");
        let h = sign::sign_response_headers(&f.platform_private, "P-SERIAL", now, body.as_bytes())
            .expect("sign");
        let headers = NotifyHeaders {
            timestamp: h.timestamp,
            nonce: h.nonce,
            signature: h.signature,
            serial: h.serial,
        };
        assert!(matches!(
            c.verify_notification(&headers, body.as_bytes(), now),
            Err(ClientError::Protocol(_))
        ));
    }

    /// Nothing listens on port 9 of loopback: a connection error is
    /// `Unavailable`, so transient.
    #[actix_web::test]
    async fn connection_refused_is_unavailable() {
        let c = client();
        match c.query_transfer("T1").await {
            Err(e @ (ClientError::Unavailable(_) | ClientError::Timeout)) => {
                assert!(e.is_transient())
            }
            other => panic!("{other:?}"),
        }
    }
}
