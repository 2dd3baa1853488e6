//! `qrgate paysim`: a payment-provider simulator speaking the protocol of
//! [`qrgate_provider::client`]: WeChat Pay style OAuth, WeChat Pay's
//! merchant transfer API (商家转账, `/v3/fund-app/mch-transfer/transfer-bills`:
//! create, query by either number, cancel, the user's confirmation), daily
//! bills and signed, encrypted `MCHTRANSFER.BILL.FINISHED` notifications,
//! with a control API to inject faults and play the user. State is in
//! memory.
//!
//! ```text
//! qrgate paysim --bind 127.0.0.1:0 --keys DIR [--time-factor F]
//!               [--amount-limit FEN] [--balance FEN] [--workers N]
//! ```
//!
//! On start, `DIR` gets (when absent) `platform_private.pem`,
//! `platform_public.pem`, `merchant_private.pem`, `merchant_public.pem` and
//! `api_v3_key` (32 random alphanumerics); existing files are reused. The
//! first stdout line is exactly `paysim listening on http://ADDR`. It binds
//! loopback addresses only: the control API has no authentication.
//!
//! The merchant side is configured with [`merchant_config`], or by hand:
//!
//! | setting | value |
//! |---|---|
//! | `mchid` | [`MCHID`] = `1900000001` |
//! | `appid` | [`APPID`] = `wx-qrgate-sim` |
//! | `app_secret` | [`APP_SECRET`] = `sim-app-secret` |
//! | `merchant_serial` | [`MERCHANT_SERIAL`] = `SIM-MERCHANT-SERIAL` |
//! | `platform_serial` | [`PLATFORM_SERIAL`] = `SIM-PLATFORM-SERIAL` |
//! | `merchant_key_file` | `DIR/merchant_private.pem` |
//! | `platform_public_key_file` | `DIR/platform_public.pem` (also encrypts `user_name`) |
//! | `api_v3_key` | contents of `DIR/api_v3_key` |
//! | `transfer_scene` | any valid scene; scene `1000` needs `活动名称` and `奖励说明` |
//!
//! # Behaviour
//!
//! - `/v3/*` requests must carry a valid merchant `Authorization` (merchant
//!   public key, 5-minute skew, mchid and serial as above), else
//!   `401 {"code":"SIGN_ERROR"}`. Every `/v3` answer is signed with the
//!   platform key (`Wechatpay-Serial: SIM-PLATFORM-SERIAL`). Errors are
//!   `{"code","message"}`: `PARAM_ERROR`, `INVALID_REQUEST`,
//!   `APPID_MCHID_NOT_MATCH`, `OPENID_MISMATCH` (400), `NO_AUTH`,
//!   `NOT_ENOUGH` (403), `NOT_FOUND` (404), `FREQUENCY_LIMITED` (429),
//!   `SYSTEM_ERROR` (500).
//! - `POST /v3/fund-app/mch-transfer/transfer-bills` takes a
//!   [`TransferBillBody`](qrgate_provider::wire::TransferBillBody) and answers
//!   a [`CreateReply`](qrgate_provider::wire::CreateReply). `400
//!   PARAM_ERROR` for: an `out_bill_no` that is not 1 to 32 letters and
//!   digits, a bad openid, `transfer_amount` 0, a remark not 1 to 32
//!   characters, a missing scene id, report entries out of their limits,
//!   repeated, or (scene `1000`) without `活动名称` and `奖励说明`, a
//!   `notify_url` not https (http only to a loopback host) or with a query,
//!   a `user_name` that is not RSA-OAEP(SHA-1) under the platform key or
//!   comes without `Wechatpay-Serial: SIM-PLATFORM-SERIAL`, no `user_name`
//!   from 200000 fen (2,000 yuan), a `user_name` below 30 fen. A wrong
//!   `appid` is `400 APPID_MCHID_NOT_MATCH`, an openid starting with
//!   `mismatch-` `400 OPENID_MISMATCH`, an amount above the merchant
//!   balance `403 NOT_ENOUGH` (the amount is taken at creation; `FAIL` and
//!   `CANCELLED` give it back).
//! - Creation is idempotent on `out_bill_no`: the same fields (`notify_url`
//!   aside, `user_name` compared decrypted) answer the existing bill,
//!   other fields are `400 INVALID_REQUEST`.
//! - A new bill is `ACCEPTED` and at once `WAIT_USER_CONFIRM`, answered with
//!   a random `package_info` (stable per bill; only answered in that state).
//!   What the user does follows the `confirmation` fault as it was when the
//!   bill was made: `auto` — confirms after `100 ms × time-factor`
//!   (`TRANSFERING`); `hold` — waits for `POST /sim/confirm`; `refuse` —
//!   declines after `100 ms × time-factor` (`CANCELLED`, no `fail_reason`);
//!   `expire` — nobody confirms, `CANCELLED` with `OVERDUE_CLOSE` after
//!   `expire_after_ms` (default `24 h × time-factor`).
//! - A confirmed bill (`TRANSFERING`) completes `100 ms × time-factor`
//!   later: `FAIL` with `PAYEE_ACCOUNT_ABNORMAL` when the openid starts
//!   with `fail-`, `FAIL` with `TRANSFER_QUOTA_EXCEED` above the amount
//!   limit (default 20000 fen), `FAIL` with `NAME_NOT_CORRECT` for a
//!   `user_name` that differs from the `real_name` registered with the
//!   user's code, `SUCCESS` otherwise.
//! - `GET .../transfer-bills/out-bill-no/{out_bill_no}` and
//!   `GET .../transfer-bills/transfer-bill-no/{transfer_bill_no}` answer a
//!   [`QueryReply`](qrgate_provider::wire::QueryReply) (`user_name` as the
//!   first create sent it), `404 NOT_FOUND` when unknown.
//! - `POST .../transfer-bills/out-bill-no/{out_bill_no}/cancel` (no body,
//!   or `{}`) answers a [`CancelReply`](qrgate_provider::wire::CancelReply):
//!   `ACCEPTED`, `PROCESSING` and `WAIT_USER_CONFIRM` become `CANCELING`,
//!   then `CANCELLED` with `MCH_CANCEL` after `100 ms × time-factor` (unless
//!   `hold_cancels`; a user who confirms meanwhile is paid); `CANCELING` and
//!   `CANCELLED` answer as they are; after the user confirmed
//!   (`TRANSFERING`, `SUCCESS`, `FAIL`) it is `400 INVALID_REQUEST`.
//! - Each final state (`SUCCESS`, `FAIL`, `CANCELLED`) POSTs a
//!   `MCHTRANSFER.BILL.FINISHED` notification to the bill's `notify_url`
//!   (none without one), redelivered until a 200/204 after 15 s, 15 s,
//!   30 s, 3 m, 10 m, 20 m, 30 m, 30 m, 30 m, 60 m, 3 h, 3 h, 3 h, 6 h and
//!   6 h, each times the time factor.
//! - The official account's API: `POST /cgi-bin/stable_token`
//!   (`client_credential` with the app id and secret) answers an access
//!   token, `GET /cgi-bin/ticket/getticket?access_token&type=jsapi` the
//!   JS-SDK `jsapi_ticket` (one per simulator).
//! - OAuth: codes registered with `POST /sim/codes` map to an openid and are
//!   single use (`40029 invalid code` when unknown, `40163 code been used`
//!   the second time); a wrong appid is `40013`, a wrong secret `40125`, a
//!   wrong grant type `40002`. Refresh tokens stay valid until
//!   `POST /sim/revoke` (`40030 invalid refresh_token` after).
//! - Bills (`GET /v3/bills?date=YYYY-MM-DD`, Beijing date; this project's
//!   own format, its `partner_trade_no` column holding `out_bill_no`): the
//!   final transfers created that day plus extra rows, adjusted by the
//!   overrides; a future date is `400 NO_STATEMENT_EXIST`, today's bill is
//!   partial.
//!
//! # Control API (loopback, no auth, JSON)
//!
//! `partner_trade_no` is accepted wherever `out_bill_no` is asked for.
//!
//! | route | body | effect |
//! |---|---|---|
//! | `POST /sim/codes` | `{"code","openid","real_name"?}` | registers an OAuth code (409 if known) |
//! | `POST /sim/revoke` | `{"refresh_token"}` | revokes a refresh token |
//! | `GET/POST /sim/faults` | any of `delay_ms`, `timeout_next`, `fail_5xx_next`, `lost_reply_next`, `frequency_limited_next`, `no_auth_next`, `duplicate_notifications`, `replay_notifications`, `out_of_order`, `forge_signatures`, `probe_signatures`, `hold_notifications`, `auto_complete`, `confirmation`, `expire_after_ms`, `hold_cancels`, `batch_window_ms`, `amount_limit`, `balance` | patches the faults, answers them all |
//! | `POST /sim/release` | | sends held notifications: `{"released":N}` |
//! | `POST /sim/confirm` | `{"out_bill_no","action":"confirm"\|"refuse"}` | the user confirms (`WAIT_USER_CONFIRM` or `CANCELING` → `TRANSFERING`, then the outcome above) or declines (`WAIT_USER_CONFIRM` → `CANCELLED`, notified); 409 in other states |
//! | `POST /sim/complete` | `{"out_bill_no","state":"SUCCESS"\|"FAIL"\|"CANCELLED","fail_reason"?}` | completes now from any state and notifies (409 if final in another state; same state: notifies again) |
//! | `POST /sim/bill_override` | `{"out_bill_no","amount"?,"status"?:"SUCCESS"\|"FAIL"\|"CANCELLED","omit"?}` | the bill reports that transfer differently, or not at all |
//! | `POST /sim/bill_extra` | `{"out_bill_no","openid","amount","status"?,"transfer_bill_no"?,"description"?,"fail_reason"?,"transfer_time"?,"mchid"?,"appid"?}` | a bill row for a transfer that does not exist |
//! | `GET /sim/jsapi_ticket` | | `{"ticket"}`: the official account's JS-SDK ticket handed out (`null` before the first) |
//! | `GET /sim/transfers` | | every bill: `out_bill_no` (and `partner_trade_no`), `state`, `package_info`, `confirmation`, `confirmed`, `user_name` (decrypted), `create_requests`, `cancel_requests`, `notifications`, `deliveries`, `acks`, ... |
//!
//! Faults: `delay_ms` delays every `/v3` answer; `timeout_next: N` — the
//! next N creates are processed but answered after 30 s; `fail_5xx_next: N`
//! — answered `500 SYSTEM_ERROR` without processing; `lost_reply_next: N`
//! — processed, then answered `500 SYSTEM_ERROR`; `frequency_limited_next:
//! N` — answered `429 FREQUENCY_LIMITED` without processing;
//! `no_auth_next: N` — answered `403 NO_AUTH` without processing (these
//! count creates that passed validation);
//! `duplicate_notifications` — every POST twice;
//! `replay_notifications` — every POST twice, the second a byte-for-byte
//! copy of the first (signature, timestamp and nonce included);
//! `out_of_order` — first deliveries collect for `batch_window_ms` (default
//! `15 s × time-factor`) and go out newest first; `forge_signatures` —
//! answers and notifications are signed with the merchant's key instead of
//! the platform's; `probe_signatures` — answers and notifications carry a
//! `WECHATPAY/SIGNTEST/` probe signature instead; `hold_notifications` —
//! first deliveries wait for `POST /sim/release` or for the flag to be
//! turned off (redeliveries already scheduled are not held);
//! `auto_complete: false` — confirmed bills stay `TRANSFERING` until
//! `POST /sim/complete`; `confirmation` — `auto` (default), `hold`,
//! `refuse` or `expire`, see above; `hold_cancels` — cancelled bills stay
//! `CANCELING` until `/sim/confirm`, `/sim/complete`, or the flag is turned
//! off (they are then `CANCELLED` at once).

mod notifier;
mod routes;
pub mod state;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use qrgate_provider::client::ProviderConfig;
use qrgate_provider::notify;
use qrgate_provider::sign::{self, ResponseHeaders, RsaPrivateKey, RsaPublicKey, SignError};
use qrgate_provider::wire::TransferScene;

/// Merchant id.
pub const MCHID: &str = "1900000001";
/// App id.
pub const APPID: &str = "wx-qrgate-sim";
/// OAuth app secret.
pub const APP_SECRET: &str = "sim-app-secret";
/// Serial of the merchant certificate (`serial_no` in `Authorization`).
pub const MERCHANT_SERIAL: &str = "SIM-MERCHANT-SERIAL";
/// Serial of the platform key (`Wechatpay-Serial`).
pub const PLATFORM_SERIAL: &str = "SIM-PLATFORM-SERIAL";
/// Platform private key file in the keys dir.
pub const PLATFORM_PRIVATE_FILE: &str = "platform_private.pem";
/// Platform public key file in the keys dir.
pub const PLATFORM_PUBLIC_FILE: &str = "platform_public.pem";
/// Merchant private key file in the keys dir.
pub const MERCHANT_PRIVATE_FILE: &str = "merchant_private.pem";
/// Merchant public key file in the keys dir.
pub const MERCHANT_PUBLIC_FILE: &str = "merchant_public.pem";
/// APIv3 key file in the keys dir.
pub const API_V3_KEY_FILE: &str = "api_v3_key";
/// Base delay before a transfer completes (times the time factor).
pub const COMPLETE_AFTER: Duration = Duration::from_millis(100);
/// How long a bill waits for the user's confirmation in `expire` mode
/// (times the time factor, unless `expire_after_ms` is set).
pub const EXPIRE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a `timeout_next` answer is held back.
pub const TIMEOUT_HOLD: Duration = Duration::from_secs(30);
/// Notification redelivery intervals in seconds (times the time factor).
pub const NOTIFY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];
/// Default amount limit in fen (transfers above it fail).
pub const DEFAULT_AMOUNT_LIMIT: u64 = 20_000;
/// Default merchant balance in fen.
pub const DEFAULT_BALANCE: u64 = 100_000_000_000;

/// Arguments of `qrgate paysim`.
#[derive(clap::Args, Debug, Clone)]
pub struct PaysimArgs {
    /// host:port to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Directory of the keys (created and filled when absent).
    #[arg(long)]
    pub keys: PathBuf,
    /// Multiplies every simulated delay (completion, redelivery schedule).
    #[arg(long, default_value_t = 1.0)]
    pub time_factor: f64,
    /// Transfers above this many fen fail with TRANSFER_QUOTA_EXCEED.
    #[arg(long, default_value_t = DEFAULT_AMOUNT_LIMIT)]
    pub amount_limit: u64,
    /// The merchant's balance in fen.
    #[arg(long, default_value_t = DEFAULT_BALANCE)]
    pub balance: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// Errors of starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum PaysimError {
    /// A key file could not be read, written or decoded.
    #[error("keys in {dir}: {source}")]
    Keys {
        /// The keys dir.
        dir: String,
        /// What went wrong.
        source: SignError,
    },
    /// The APIv3 key file is unreadable or not 32 characters.
    #[error("{0}")]
    ApiV3Key(String),
    /// Binding failed or the address is not loopback.
    #[error("cannot bind {0}: {1}")]
    Bind(String, String),
    /// An argument is out of range.
    #[error("{0}")]
    Args(String),
}

/// The simulator's keys.
pub struct SimKeys {
    /// Signs answers and notifications.
    pub platform_private: RsaPrivateKey,
    /// Verifies merchant requests.
    pub merchant_public: RsaPublicKey,
    /// Signs "forged" answers (a key the merchant does not trust for this).
    pub forge_private: RsaPrivateKey,
    /// Encrypts notifications.
    pub api_v3_key: [u8; 32],
}

fn keys_err(dir: &Path) -> impl Fn(SignError) -> PaysimError + '_ {
    move |source| PaysimError::Keys {
        dir: dir.display().to_string(),
        source,
    }
}

/// Loads a key pair from `dir`, generating and saving what is missing; a
/// public key file that does not match its private key is an error.
fn key_pair(
    dir: &Path,
    private_file: &str,
    public_file: &str,
) -> Result<(RsaPrivateKey, RsaPublicKey), PaysimError> {
    let err = keys_err(dir);
    let private_path = dir.join(private_file);
    let public_path = dir.join(public_file);
    let private = if private_path.exists() {
        sign::load_private_key(&private_path).map_err(&err)?
    } else {
        if public_path.exists() {
            return Err(PaysimError::Args(format!(
                "{} exists without {}",
                public_path.display(),
                private_path.display()
            )));
        }
        let (private, _) = sign::generate_keypair().map_err(&err)?;
        sign::save_private_key(&private_path, &private).map_err(&err)?;
        private
    };
    let public = private.to_public_key();
    if public_path.exists() {
        if sign::load_public_key(&public_path).map_err(&err)? != public {
            return Err(PaysimError::Args(format!(
                "{} does not match {}",
                public_path.display(),
                private_path.display()
            )));
        }
    } else {
        sign::save_public_key(&public_path, &public).map_err(&err)?;
    }
    Ok((private, public))
}

fn read_api_v3_key(path: &Path) -> Result<String, PaysimError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PaysimError::ApiV3Key(format!("{}: {e}", path.display())))?;
    let key = text.trim().to_owned();
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PaysimError::ApiV3Key(format!(
            "{} must hold 32 alphanumeric characters",
            path.display()
        )));
    }
    Ok(key)
}

fn api_v3_key(dir: &Path) -> Result<[u8; 32], PaysimError> {
    let path = dir.join(API_V3_KEY_FILE);
    if !path.exists() {
        let key = sign::random_alphanumeric(32).map_err(keys_err(dir))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| PaysimError::ApiV3Key(format!("{}: {e}", path.display())))?;
        file.write_all(key.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| PaysimError::ApiV3Key(format!("{}: {e}", path.display())))?;
    }
    let key = read_api_v3_key(&path)?;
    notify::api_v3_key_from_str(&key).map_err(|e| PaysimError::ApiV3Key(e.to_string()))
}

/// Loads the keys from `dir`, creating the directory and any missing key.
pub fn load_or_create_keys(dir: &Path) -> Result<SimKeys, PaysimError> {
    std::fs::create_dir_all(dir).map_err(|e| PaysimError::Keys {
        dir: dir.display().to_string(),
        source: SignError::Io(e),
    })?;
    let (platform_private, _) = key_pair(dir, PLATFORM_PRIVATE_FILE, PLATFORM_PUBLIC_FILE)?;
    let (merchant_private, merchant_public) =
        key_pair(dir, MERCHANT_PRIVATE_FILE, MERCHANT_PUBLIC_FILE)?;
    Ok(SimKeys {
        platform_private,
        merchant_public,
        forge_private: merchant_private,
        api_v3_key: api_v3_key(dir)?,
    })
}

/// The merchant-side configuration for a simulator at `base_url` whose keys
/// are in `keys_dir` (run the simulator once first so they exist).
pub fn merchant_config(base_url: &str, keys_dir: &Path) -> Result<ProviderConfig, PaysimError> {
    Ok(ProviderConfig {
        base_url: base_url.to_owned(),
        mchid: MCHID.into(),
        appid: APPID.into(),
        app_secret: APP_SECRET.into(),
        merchant_key_file: keys_dir.join(MERCHANT_PRIVATE_FILE),
        merchant_serial: MERCHANT_SERIAL.into(),
        platform_public_key_file: keys_dir.join(PLATFORM_PUBLIC_FILE),
        platform_serial: PLATFORM_SERIAL.into(),
        api_v3_key: read_api_v3_key(&keys_dir.join(API_V3_KEY_FILE))?,
        timeout_ms: 5000,
        platform_certificates: Vec::new(),
        transfer_scene: TransferScene::default(),
        transfer_remark: "奖励提现".into(),
        oauth_base_url: None,
        authorize_url: Some(format!(
            "{}/connect/oauth2/authorize",
            base_url.trim_end_matches('/')
        )),
        ca_file: None,
    })
}

/// `d × factor`, saturating; never panics.
pub(crate) fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// The shared simulator.
pub(crate) struct Sim {
    keys: SimKeys,
    time_factor: f64,
    state: Mutex<state::State>,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock leaves consistent-enough test state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scaled(&self, d: Duration) -> Duration {
        scale(d, self.time_factor)
    }

    /// Signs an answer or notification body (with the wrong key while
    /// `forge_signatures` is on; a `WECHATPAY/SIGNTEST/` probe while
    /// `probe_signatures` is).
    fn sign(&self, body: &[u8]) -> Result<ResponseHeaders, SignError> {
        let (forge, probe) = {
            let st = self.lock();
            (st.faults.forge_signatures, st.faults.probe_signatures)
        };
        let key = if forge {
            &self.keys.forge_private
        } else {
            &self.keys.platform_private
        };
        let mut headers = sign::sign_response_headers(
            key,
            PLATFORM_SERIAL,
            chrono::Utc::now().timestamp(),
            body,
        )?;
        if probe {
            // Random base64 the length of a real signature: never verifies.
            headers.signature = format!(
                "{}{}",
                sign::PROBE_SIGNATURE_PREFIX,
                sign::random_alphanumeric(344)?
            );
        }
        Ok(headers)
    }
}

/// A started simulator: await `server` to serve.
pub struct Started {
    /// The running server.
    pub server: actix_web::dev::Server,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Loads the keys and binds the server. Must run inside an actix system.
pub fn start(args: &PaysimArgs) -> Result<Started, PaysimError> {
    if !(args.time_factor.is_finite() && args.time_factor > 0.0 && args.time_factor <= 1000.0) {
        return Err(PaysimError::Args(
            "--time-factor must be a number in (0, 1000]".into(),
        ));
    }
    if args.workers == 0 || args.workers > 64 {
        return Err(PaysimError::Args("--workers must be 1 to 64".into()));
    }
    let listener = TcpListener::bind(&args.bind)
        .map_err(|e| PaysimError::Bind(args.bind.clone(), e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| PaysimError::Bind(args.bind.clone(), e.to_string()))?;
    if !addr.ip().is_loopback() {
        return Err(PaysimError::Bind(
            args.bind.clone(),
            "the simulator listens on loopback addresses only".into(),
        ));
    }
    let keys = load_or_create_keys(&args.keys)?;
    let sim = Arc::new(Sim {
        keys,
        time_factor: args.time_factor,
        state: Mutex::new(state::State::new(args.amount_limit, args.balance)),
    });
    let data = actix_web::web::Data::from(sim);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .workers(args.workers)
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(|e| PaysimError::Bind(args.bind.clone(), e.to_string()))?
    .run();
    Ok(Started { server, addr })
}

/// `qrgate paysim`: start, print the listening line, serve until stopped.
pub fn run(args: PaysimArgs) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let started = start(&args).map_err(|e| e.to_string())?;
        // Tests and scripts read this line to find the port when binding to :0.
        println!("paysim listening on http://{}", started.addr);
        let _ = std::io::stdout().flush();
        tracing::info!(addr = %started.addr, keys = %args.keys.display(), "paysim serving");
        started.server.await.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys_dir = dir.path().join("keys");
        let first = load_or_create_keys(&keys_dir).expect("create");
        for f in [
            PLATFORM_PRIVATE_FILE,
            PLATFORM_PUBLIC_FILE,
            MERCHANT_PRIVATE_FILE,
            MERCHANT_PUBLIC_FILE,
            API_V3_KEY_FILE,
        ] {
            assert!(keys_dir.join(f).exists(), "{f}");
        }
        let again = load_or_create_keys(&keys_dir).expect("reuse");
        assert_eq!(first.api_v3_key, again.api_v3_key);
        assert_eq!(
            first.platform_private.to_public_key(),
            again.platform_private.to_public_key()
        );
        assert_eq!(first.merchant_public, again.merchant_public);

        // The merchant side can be built from the same dir.
        let cfg = merchant_config("http://127.0.0.1:1", &keys_dir).expect("config");
        qrgate_provider::client::ProviderClient::new(&cfg).expect("client");

        // A mismatched public key is refused, not silently replaced.
        std::fs::copy(
            keys_dir.join(MERCHANT_PUBLIC_FILE),
            keys_dir.join(PLATFORM_PUBLIC_FILE),
        )
        .expect("copy");
        assert!(matches!(
            load_or_create_keys(&keys_dir),
            Err(PaysimError::Args(_))
        ));
        std::fs::write(keys_dir.join(API_V3_KEY_FILE), "short").expect("write");
        assert!(merchant_config("http://x", &keys_dir).is_err());
    }

    #[test]
    fn scaling_never_panics() {
        assert_eq!(
            scale(Duration::from_secs(15), 0.01),
            Duration::from_millis(150)
        );
        assert_eq!(scale(Duration::from_secs(1), f64::INFINITY), Duration::MAX);
        assert_eq!(scale(Duration::from_secs(1), -1.0), Duration::MAX);
    }
}
