//! Configuration: built-in defaults, then `config.toml`, then `QRGATE_*`
//! environment variables (highest precedence).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The token the example config and older versions shipped with.
pub const SHIPPED_ADMIN_TOKEN: &str = "dev-admin-token-change-me";

/// Whether `bind` (host:port) listens on a loopback address only.
fn loopback(bind: &str) -> bool {
    if let Ok(a) = bind.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    bind.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// host:port to listen on. Port 0 picks a free port (printed at start).
    pub bind: String,
    pub data_dir: PathBuf,
    /// Operator token (`Authorization: Bearer ...` on admin routes). Empty:
    /// the one in `{data_dir}/admin.token`, generated on first start.
    pub admin_token: String,
    /// Base of the links put in QR codes; defaults to `http://{bind}`.
    pub public_base_url: Option<String>,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// is believed for the client's address; none by default.
    pub trusted_proxies: Vec<String>,
    pub limits: Limits,
    pub actors: Actors,
    pub sessions: Sessions,
    pub metrics: Metrics,
    pub websocket: WebSocket,
    pub wallets: Wallets,
    pub payouts: Payouts,
    pub packets: Packets,
    pub codes: Codes,
    pub cards: Cards,
    pub events: Events,
    /// The operator's backend: endpoints that receive events as signed
    /// webhooks (`[[webhooks]]`; one from `QRGATE_WEBHOOK_URL` and
    /// `QRGATE_WEBHOOK_SECRET`).
    pub webhooks: Vec<Webhook>,
    pub webhook_delivery: WebhookDelivery,
    pub storage: StorageCfg,
    /// Cluster mode: absent (no `nats`), one node with its journal.
    pub cluster: ClusterCfg,
    /// Anti-abuse on joins: risk scoring, step-up, challenges (see `domain::risk`).
    pub risk: crate::domain::risk::Policy,
    /// The payment provider (`[provider] kind`): the embedded simulator
    /// by default, WeChat Pay, or none (payouts and account links answer
    /// 503 `provider_not_configured`).
    #[serde(deserialize_with = "provider_choice")]
    pub provider: Provider,
}

/// Which payment provider payouts and account links use.
#[derive(Debug, Clone, Default)]
pub enum Provider {
    /// No `[provider]` kind: the embedded simulator on a loopback bind
    /// (one node); a server reachable from elsewhere refuses to start
    /// until a kind is chosen; in a cluster, none.
    #[default]
    Default,
    /// `kind = "embedded_simulator"`: the simulator in this process, set
    /// explicitly (also on a bind others can reach).
    Embedded,
    /// `kind = "wechatpay"` (the default when `base_url` is given): the
    /// provider at `base_url`, or `qrgate paysim` run apart.
    External(Box<qrgate_provider::client::ProviderConfig>),
    /// `kind = "none"`: no payouts and no account links.
    None,
}

/// What `[provider]` comes to on this server.
pub enum ProviderUse<'a> {
    Embedded,
    External(&'a qrgate_provider::client::ProviderConfig),
    None,
}

fn provider_choice<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Provider, D::Error> {
    use serde::de::Error;
    let mut table = toml::Table::deserialize(d)?;
    let kind = match table.remove("kind") {
        None => None,
        Some(toml::Value::String(k)) => Some(k),
        Some(_) => return Err(D::Error::custom("provider.kind must be a string")),
    };
    match kind.as_deref() {
        None if table.is_empty() => Ok(Provider::Default),
        Some("embedded_simulator" | "none") if !table.is_empty() => Err(D::Error::custom(
            "provider: with kind = \"embedded_simulator\" or \"none\", set nothing else",
        )),
        Some("embedded_simulator") => Ok(Provider::Embedded),
        Some("none") => Ok(Provider::None),
        None | Some("wechatpay") => {
            qrgate_provider::client::ProviderConfig::deserialize(toml::Value::Table(table))
                .map(|p| Provider::External(Box::new(p)))
                .map_err(|e| D::Error::custom(format!("provider: {e}")))
        }
        Some(other) => Err(D::Error::custom(format!(
            "provider.kind `{other}`: use \"embedded_simulator\", \"wechatpay\" or \"none\""
        ))),
    }
}

/// The invitation cards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cards {
    /// A font file (TTF, OTF, TTC) cards prefer over the system's fonts;
    /// the system's still cover what it lacks.
    pub font_file: Option<std::path::PathBuf>,
}

/// The embedded database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageCfg {
    /// sled's page cache, in MiB. Resident actors hold the hot state, so the
    /// cache mostly serves activations; it is a large part of the server's
    /// memory when many groups are resident (BENCHMARKS.md "Memory").
    pub cache_mb: u64,
    /// A checkpoint (the journal's records into sled) at least this often,
    /// in seconds, when anything was written.
    pub checkpoint_secs: u64,
    /// ... and whenever this many MiB of journal were written since the last.
    pub checkpoint_mb: u64,
    /// Size at which a journal segment file is closed, in KiB.
    pub segment_kb: u64,
    /// sled is closed and opened again (a pause of cold reads, about a
    /// second) once checkpoints wrote this many MiB to it since it last
    /// opened; an open scans what sled wrote since the previous one, so this
    /// bounds the start after a crash. 0: never.
    pub sled_reopen_mb: f64,
    /// `false` switches the journal off: nothing reaches the disk and
    /// nothing survives a restart. Only for measuring the request path alone
    /// (the load harness's `--no-storage`); the server warns at start.
    pub journal: bool,
}

impl Default for StorageCfg {
    fn default() -> Self {
        StorageCfg {
            cache_mb: 64,
            checkpoint_secs: 30,
            checkpoint_mb: 64,
            segment_kb: 16384,
            sled_reopen_mb: 256.0,
            journal: true,
        }
    }
}

impl StorageCfg {
    pub fn options(&self) -> crate::storage::StorageOptions {
        crate::storage::StorageOptions {
            cache_bytes: self.cache_mb.saturating_mul(1 << 20),
            checkpoint_every: std::time::Duration::from_secs(self.checkpoint_secs),
            checkpoint_bytes: self.checkpoint_mb.saturating_mul(1 << 20),
            segment_bytes: self.segment_kb.saturating_mul(1 << 10),
            sled_reopen_bytes: (self.sled_reopen_mb * (1u64 << 20) as f64) as u64,
            journal: self.journal,
            fs: None,
        }
    }
}

/// Cluster mode (docs/cluster.md): several nodes over a NATS JetStream log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterCfg {
    /// NATS server URLs; empty: one node, no cluster.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (letters, digits, `-`, `_`).
    pub node_id: String,
    /// Where the other nodes reach this one; defaults to `http://{bind}`.
    pub advertise_url: Option<String>,
    /// Shared by every node: signs the requests they forward to each other
    /// (at least 32 characters).
    pub secret: String,
    /// Replicas of the log's stream (3: it survives the loss of a server).
    pub replicas: usize,
    /// How often the snapshots' owner stores a snapshot of the state and
    /// trims the log below it, in seconds.
    pub snapshot_secs: u64,
}

impl Default for ClusterCfg {
    fn default() -> Self {
        ClusterCfg {
            nats: Vec::new(),
            node_id: String::new(),
            advertise_url: None,
            secret: String::new(),
            replicas: 3,
            snapshot_secs: 600,
        }
    }
}

impl ClusterCfg {
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted JSON body.
    pub max_body_bytes: usize,
    /// Joins (grants and requests) per minute into one group, unless its owner overrides it.
    pub group_joins_per_minute: u32,
    /// Ceiling for an owner's override of the above.
    pub group_joins_per_minute_max: u32,
    /// Joins per minute by one user across all groups.
    pub user_joins_per_minute: u32,
    /// Users created per minute from one client network (an IPv4 address,
    /// an IPv6 /64).
    pub users_per_minute_per_ip: u32,
    /// How long a join request waits for a decision before it expires.
    pub join_request_ttl_seconds: i64,
    /// Live (unexpired, unrevoked) invitations one group may have at once.
    pub max_live_invites_per_group: usize,
    /// Invitations one group may store, revoked and expired ones included.
    pub max_stored_invites_per_group: usize,
    /// Invitations one member may make in a group within an hour.
    pub invites_per_member_per_hour: u32,
    /// Largest uploaded image (a group's avatar), in bytes.
    pub max_image_bytes: usize,
    /// Join requests one invitation may have waiting for approval at once
    /// (a link on a poster cannot bury the moderators' queue).
    pub max_pending_requests_per_invite: usize,
    /// Rendered QR images and cards kept in memory, in MiB.
    pub qr_cache_mb: u64,
    /// QR images one client network may fetch a minute without a session.
    pub anonymous_images_per_minute_per_ip: u32,
    /// Accounts one client network may create a minute before each further
    /// one needs a proof of work (`risk.mode = "enforce"` only).
    pub users_per_minute_per_network_before_challenge: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Serve `/metrics` to anyone. Off: it needs the admin token (Prometheus
    /// sends it with `authorization: {credentials: ...}` in its scrape config).
    pub public: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// A session ends this many days after its last use (sliding; the
    /// expiry is moved at most once a day). 1 to 3650.
    pub lifetime_days: u32,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { lifetime_days: 30 }
    }
}

impl Sessions {
    pub fn lifetime_seconds(&self) -> i64 {
        i64::from(self.lifetime_days) * 86_400
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actors {
    /// A group actor idle this long is passivated (dropped from memory).
    pub idle_timeout_seconds: u64,
    /// Bounded mailbox of each actor.
    pub mailbox: usize,
    /// Threads (actix arbiters) that host the entity actors; 0 = one per core.
    /// With `on_http_workers`, they host them only until the HTTP workers run.
    pub arbiters: usize,
    /// Host the entity actors on the HTTP workers' threads (spread by
    /// entity), so a request served by the worker hosting its actor crosses
    /// no thread.
    pub on_http_workers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    /// Events queued for one connection before it is closed as a slow consumer.
    pub queue: usize,
    /// Open connections per user, per client address, and in all (on this
    /// node): one more is refused with 429 `too_many_connections` before
    /// the upgrade.
    pub max_per_user: usize,
    pub max_per_ip: usize,
    pub max_connections: usize,
    /// Groups one connection may subscribe to.
    pub max_groups_per_connection: usize,
    /// Subscribe frames one connection may send per minute.
    pub subscribes_per_minute: u32,
}

/// The event feeds (`GET /v1/events`, a resumed WebSocket): each user's
/// and each group's events are kept this long, and at most this many.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    pub retention_days: u32,
    pub max_per_feed: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            retention_days: 30,
            max_per_feed: 10_000,
        }
    }
}

/// One webhook endpoint.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// 1 to 32 of `a-z0-9_-`; names the endpoint in the admin routes.
    pub id: String,
    /// `https://...` (or `http://` for a receiver on this machine or network).
    pub url: String,
    /// `whsec_` and base64 of 24 to 64 random bytes (Standard Webhooks).
    pub secret: String,
    /// Event types it takes (`"*"`: every type).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

/// Secrets stay out of logs and debug output.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDelivery {
    /// Bytes of undelivered deliveries kept on disk, over every endpoint
    /// (default 1 GiB); at the bound the oldest of the endpoint with the
    /// most are dropped (counted, and logged as an error).
    pub max_queue_bytes: u64,
    /// How long a delivery is tried again, in hours, before it fails.
    pub retry_hours: u64,
    /// Seconds to connect, and for a whole attempt.
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    /// Days a delivered, failed or dropped delivery stays listed.
    pub keep_days: u64,
    /// Attempts in flight at once, per endpoint.
    pub concurrency: usize,
    /// A PEM file of CA certificates trusted for `https` endpoints, on top
    /// of the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhookDelivery {
    fn default() -> Self {
        WebhookDelivery {
            max_queue_bytes: 1 << 30,
            retry_hours: 24,
            connect_timeout_secs: 5,
            timeout_secs: 15,
            keep_days: 7,
            concurrency: 8,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wallets {
    /// Earning kinds `POST /v1/earnings` accepts; each is paid from its own
    /// revenue account (`revenue:<kind>`). 1 to 32 of `a-z0-9_`.
    pub earning_kinds: Vec<String>,
    /// Bounds of one earning, in fen.
    pub earning_min_fen: u64,
    pub earning_max_fen: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Payouts {
    /// Bounds of one payout, in fen.
    pub min_fen: u64,
    pub max_fen: u64,
    /// A user's payouts per day: total amount and count.
    pub daily_max_fen: u64,
    pub daily_max_count: u32,
    /// Payouts above this amount need a KYC-verified user.
    pub kyc_above_fen: u64,
    /// Lowest threshold a user may choose for automatic payouts.
    pub auto_min_threshold_fen: u64,
    /// A payout still `processing` after this long is reported as stuck
    /// (the provider's guidance: 30 minutes).
    pub stuck_after_seconds: i64,
    /// Single transfers and users' daily payout totals at or above this go
    /// into the large-transaction report (default 50,000 yuan).
    pub large_transaction_fen: u64,
    /// Hours east of UTC of the business day (limits, reports, bills): 8 for China.
    pub day_offset_hours: i32,
    /// Multiplies retry delays (tests shorten them).
    pub retry_factor: f64,
    /// A transfer the user has not confirmed in WeChat this long after the
    /// provider asked is cancelled and its money returned to the wallet.
    /// Under 24 hours (WeChat closes an unconfirmed transfer itself then).
    pub confirm_timeout_seconds: i64,
    /// Where the provider sends notifications. Default:
    /// `{public_base_url}/v1/provider/notify`.
    pub notify_url: Option<String>,
    /// Refresh a linked account's access token this long before it expires.
    pub refresh_before_seconds: i64,
    /// After a user links a different payout account, their payouts wait
    /// this long (a stolen session's quickest theft is a re-link). 0: none.
    pub relink_cooling_hours: u32,
    /// Notifications one client network may have refused a minute; beyond,
    /// its notifications are refused unread (429) until the minute passes.
    pub rejected_notifications_per_minute_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Packets {
    /// Smallest share, in fen.
    pub min_share_fen: u64,
    /// Largest packet total, in fen (default 200 yuan).
    pub max_total_fen: u64,
    pub max_shares: u32,
    /// What one user may put into packets per business day, in fen.
    pub daily_max_fen: u64,
    /// Bounds of a packet's lifetime (`ttl_seconds`), and the default.
    pub min_ttl_seconds: u32,
    pub default_ttl_seconds: u32,
    pub max_ttl_seconds: u32,
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// Claims one user may make per minute, across packets.
    pub claims_per_minute_per_user: u32,
    /// Circuit breaker: more claim attempts than this within one second on
    /// one packet pause its claims for `breaker_pause_seconds` (0: off).
    pub breaker_claims_per_second: u32,
    pub breaker_pause_seconds: u32,
    /// Users who may neither send nor claim packets (also editable through
    /// the admin API).
    pub blacklist: Vec<String>,
    /// Campaign packets: the referral bonus when a request names a budget
    /// but no bonus, and the largest bonus allowed.
    pub referral_bonus_fen: u64,
    pub max_referral_bonus_fen: u64,
    /// A claimant's account must be at least this old to earn its referrer
    /// a bonus (a farm of fresh accounts cannot cash a budget out).
    pub referral_min_account_age_seconds: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Codes {
    /// Landing pages a code may point to: `/` then 1 to 64 of `a-z0-9_-/`.
    pub pages: Vec<String>,
    /// Largest `params` object, in bytes of compact JSON.
    pub max_params_bytes: usize,
    /// Codes one user may create per business day (the admin token is not limited).
    pub user_quota_per_day: u32,
    /// Pre-generated codes (with their QR images) kept ready.
    pub pool_size: usize,
    /// Below this many the pool is refilled up to `pool_size`.
    pub pool_low_water: usize,
    /// The refill waits until no code was taken for this long (at most 5 s),
    /// so a burst is not slowed down by QR rendering.
    pub refill_idle_ms: u64,
    /// Width and height of the QR images (`qr_png`), in pixels.
    pub qr_size: u32,
    /// Bounds of `ttl_seconds` (codes without it never expire).
    pub min_ttl_seconds: u32,
    pub max_ttl_seconds: u32,
    /// Bindings kept in memory for resolution.
    pub cache_entries: usize,
    /// Where path pages live: a browser's scan is sent (302) to this base
    /// plus the page. Unset: `public_base_url`, and this server answers the
    /// path pages itself with a page listing the parameters.
    pub page_base_url: Option<String>,
    /// Hosts that absolute pages (`https://host/path` in `pages`) may name;
    /// a scan is never sent anywhere else.
    pub redirect_hosts: Vec<String>,
}

impl Default for Codes {
    fn default() -> Self {
        Codes {
            pages: vec!["/landing".into(), "/promo".into()],
            max_params_bytes: 1024,
            user_quota_per_day: 100,
            pool_size: 1000,
            pool_low_water: 200,
            refill_idle_ms: 250,
            qr_size: 256,
            min_ttl_seconds: 60,
            max_ttl_seconds: 365 * 86_400,
            cache_entries: 100_000,
            page_base_url: None,
            redirect_hosts: Vec::new(),
        }
    }
}

impl Default for Packets {
    fn default() -> Self {
        Packets {
            min_share_fen: 1,
            max_total_fen: 20_000,
            max_shares: 1000,
            daily_max_fen: 100_000,
            min_ttl_seconds: 60,
            default_ttl_seconds: 86_400,
            max_ttl_seconds: 7 * 86_400,
            max_message_chars: 200,
            claims_per_minute_per_user: 60,
            breaker_claims_per_second: 5000,
            breaker_pause_seconds: 5,
            blacklist: Vec::new(),
            referral_bonus_fen: 100,
            max_referral_bonus_fen: 1000,
            referral_min_account_age_seconds: 86_400,
        }
    }
}

impl Packets {
    pub fn limits(&self) -> crate::domain::packet::Limits {
        crate::domain::packet::Limits {
            min_share_fen: self.min_share_fen,
            max_total_fen: self.max_total_fen,
            max_shares: self.max_shares,
            daily_max_fen: self.daily_max_fen,
        }
    }
}

impl Default for Payouts {
    fn default() -> Self {
        Payouts {
            min_fen: 100,
            max_fen: 20_000,
            daily_max_fen: 50_000,
            daily_max_count: 10,
            kyc_above_fen: 5_000,
            auto_min_threshold_fen: 100,
            stuck_after_seconds: 1800,
            large_transaction_fen: 5_000_000,
            day_offset_hours: 8,
            retry_factor: 1.0,
            confirm_timeout_seconds: 12 * 3600,
            notify_url: None,
            refresh_before_seconds: 600,
            relink_cooling_hours: 24,
            rejected_notifications_per_minute_per_ip: 10,
        }
    }
}

impl Payouts {
    pub fn limits(&self) -> crate::domain::payout::Limits {
        crate::domain::payout::Limits {
            min_fen: self.min_fen,
            max_fen: self.max_fen,
            daily_max_fen: self.daily_max_fen,
            daily_max_count: self.daily_max_count,
            kyc_above_fen: self.kyc_above_fen,
        }
    }

    /// The business day (`YYYY-MM-DD`) of a unix time.
    pub fn day_of(&self, ts: i64) -> String {
        let shifted = ts + i64::from(self.day_offset_hours) * 3600;
        chrono::DateTime::from_timestamp(shifted, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }
}

impl Default for Wallets {
    fn default() -> Self {
        Wallets {
            earning_kinds: vec!["task_completed".into(), "ad_view_verified".into()],
            earning_min_fen: 1,
            earning_max_fen: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            admin_token: String::new(),
            public_base_url: None,
            trusted_proxies: Vec::new(),
            workers: 0,
            limits: Limits::default(),
            actors: Actors::default(),
            sessions: Sessions::default(),
            metrics: Metrics::default(),
            websocket: WebSocket::default(),
            wallets: Wallets::default(),
            payouts: Payouts::default(),
            packets: Packets::default(),
            codes: Codes::default(),
            cards: Cards::default(),
            events: Events::default(),
            webhooks: Vec::new(),
            webhook_delivery: WebhookDelivery::default(),
            storage: StorageCfg::default(),
            cluster: ClusterCfg::default(),
            risk: crate::domain::risk::Policy::default(),
            provider: Provider::Default,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024,
            group_joins_per_minute: 600,
            group_joins_per_minute_max: 60_000,
            user_joins_per_minute: 30,
            users_per_minute_per_ip: 600,
            join_request_ttl_seconds: 3 * 24 * 3600,
            max_live_invites_per_group: 1000,
            max_stored_invites_per_group: 10_000,
            invites_per_member_per_hour: 60,
            max_pending_requests_per_invite: 500,
            max_image_bytes: 1 << 20,
            qr_cache_mb: 64,
            anonymous_images_per_minute_per_ip: 120,
            users_per_minute_per_network_before_challenge: 30,
        }
    }
}

impl Default for Actors {
    fn default() -> Self {
        Actors {
            idle_timeout_seconds: 300,
            mailbox: 1024,
            arbiters: 0,
            on_http_workers: true,
        }
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            queue: 256,
            max_per_user: 5,
            max_per_ip: 100,
            max_connections: 20_000,
            max_groups_per_connection: 50,
            subscribes_per_minute: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The endpoint `QRGATE_WEBHOOK_URL` makes.
pub const ENV_WEBHOOK: &str = "env";

impl Config {
    /// What `[provider]` comes to on this server (see [`Provider`]).
    pub fn provider_use(&self) -> ProviderUse<'_> {
        match &self.provider {
            Provider::Default if self.cluster.nats.is_empty() => ProviderUse::Embedded,
            Provider::Default | Provider::None => ProviderUse::None,
            Provider::Embedded => ProviderUse::Embedded,
            Provider::External(p) => ProviderUse::External(p),
        }
    }

    /// The merchant and app ids payouts are made under (empty without a
    /// configured provider; the embedded simulator's once it started).
    pub fn merchant_ids(&self) -> (&str, &str) {
        match &self.provider {
            Provider::External(p) => (&p.mchid, &p.appid),
            _ => ("", ""),
        }
    }

    /// The remark transfers carry (the configured provider's).
    pub fn transfer_remark(&self) -> Option<&str> {
        match &self.provider {
            Provider::External(p) => Some(&p.transfer_remark),
            _ => None,
        }
    }

    fn validate_provider(&self) -> Result<(), String> {
        let clustered = !self.cluster.nats.is_empty();
        match &self.provider {
            Provider::Default if !clustered && !loopback(&self.bind) => Err(format!(
                "bind {} is reachable from other machines, and no payment provider is chosen: set [provider] kind = \"wechatpay\" (with the merchant's settings), \"none\" (no payouts), or \"embedded_simulator\" (a simulator: no real money moves)",
                self.bind
            )),
            Provider::Embedded if clustered => Err(
                "[provider] kind = \"embedded_simulator\" runs on one node only: in a cluster use \"wechatpay\" or \"none\"".into(),
            ),
            _ => Ok(()),
        }
    }

    fn validate_webhooks(&self) -> Result<(), String> {
        use crate::domain::webhook::{check_events, valid_endpoint_id};
        let mut seen = std::collections::HashSet::new();
        for w in &self.webhooks {
            if !valid_endpoint_id(&w.id) || !seen.insert(w.id.as_str()) {
                return Err(format!(
                    "webhooks: id `{}` must be 1 to 32 of a-z, 0-9, '_' or '-', and unique",
                    w.id
                ));
            }
            let url = url::Url::parse(&w.url)
                .map_err(|e| format!("webhooks.{}: url `{}`: {e}", w.id, w.url))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(format!("webhooks.{}: url must be http(s)://host/...", w.id));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("webhooks.{}: put no credentials in the url", w.id));
            }
            let key = w
                .secret
                .strip_prefix("whsec_")
                .and_then(|b| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .ok_or(format!(
                    "webhooks.{}: secret must be `whsec_` then base64 (e.g. `whsec_$(head -c 32 /dev/urandom | base64)`)",
                    w.id
                ))?;
            if !(24..=64).contains(&key.len()) {
                return Err(format!(
                    "webhooks.{}: the secret must hold 24 to 64 bytes",
                    w.id
                ));
            }
            check_events(&w.events).map_err(|e| format!("webhooks.{}: events {e}", w.id))?;
        }
        let d = &self.webhook_delivery;
        if d.max_queue_bytes < 4096
            || !(1..=24 * 7).contains(&d.retry_hours)
            || d.connect_timeout_secs == 0
            || d.timeout_secs == 0
            || d.timeout_secs > 120
            || !(1..=64).contains(&d.concurrency)
            || !(1..=3650).contains(&d.keep_days)
        {
            return Err("webhook_delivery: max_queue_bytes at least 4096, keep_days 1 to 3650; retry_hours 1 to 168; timeouts 1 to 120 s; concurrency 1 to 64".into());
        }
        Ok(())
    }

    /// Load `path` if given (it must exist), else `./config.toml` if present,
    /// else defaults; then apply environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("config.toml"), false),
        };
        let mut cfg = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: file.clone(),
                source,
            })?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        cfg.apply_env(|k| std::env::var(k).ok());
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("QRGATE_BIND") {
            self.bind = v;
        }
        if let Some(v) = get("QRGATE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("QRGATE_ADMIN_TOKEN") {
            self.admin_token = v;
        }
        if let Some(v) = get("QRGATE_PUBLIC_BASE_URL") {
            self.public_base_url = Some(v);
        }
        if let Some(v) = get("QRGATE_CLUSTER_NATS") {
            self.cluster.nats = v
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect();
        }
        if let Some(v) = get("QRGATE_NODE_ID") {
            self.cluster.node_id = v;
        }
        if let Some(v) = get("QRGATE_ADVERTISE_URL") {
            self.cluster.advertise_url = Some(v);
        }
        if let Some(v) = get("QRGATE_CLUSTER_SECRET") {
            self.cluster.secret = v;
        }
        if let (Some(url), Some(secret)) = (get("QRGATE_WEBHOOK_URL"), get("QRGATE_WEBHOOK_SECRET"))
        {
            let events = get("QRGATE_WEBHOOK_EVENTS").map_or_else(all_events, |v| {
                v.split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect()
            });
            self.webhooks.retain(|w| w.id != ENV_WEBHOOK);
            self.webhooks.push(Webhook {
                id: ENV_WEBHOOK.into(),
                url,
                secret,
                events,
            });
        }
        // Provider secrets belong in the environment rather than the file.
        if let Provider::External(p) = &mut self.provider {
            if let Some(v) = get("QRGATE_PROVIDER_API_V3_KEY") {
                p.api_v3_key = v;
            }
            if let Some(v) = get("QRGATE_PROVIDER_APP_SECRET") {
                p.app_secret = v;
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if let Err(e) = self.validate_webhooks() {
            return bad(&e);
        }
        if let Err(e) = crate::domain::network::parse_proxies(&self.trusted_proxies) {
            return bad(&e);
        }
        if !self.admin_token.is_empty() {
            if self.admin_token.len() < 16 {
                return bad("admin_token must be at least 16 characters");
            }
            if (self.admin_token == SHIPPED_ADMIN_TOKEN || self.admin_token.len() < 32)
                && !loopback(&self.bind)
            {
                return bad(
                    "admin_token is the example value or shorter than 32 characters, which is \
                     allowed only on a loopback bind: set a long random one (or leave it unset to \
                     use the one generated into the data dir's admin.token)",
                );
            }
        }
        if let Err(e) = self.validate_provider() {
            return bad(&e);
        }
        if !(1..=3650).contains(&self.sessions.lifetime_days) {
            return bad("sessions.lifetime_days must be between 1 and 3650");
        }
        if !(8..=65536).contains(&self.storage.cache_mb) {
            return bad("storage.cache_mb must be between 8 and 65536");
        }
        if !(1..=3600).contains(&self.storage.checkpoint_secs) {
            return bad("storage.checkpoint_secs must be between 1 and 3600");
        }
        if !(1..=4096).contains(&self.storage.checkpoint_mb) {
            return bad("storage.checkpoint_mb must be between 1 and 4096");
        }
        if !(0.0..=1048576.0).contains(&self.storage.sled_reopen_mb) {
            return bad("storage.sled_reopen_mb must be between 0 (never) and 1048576");
        }
        if !(64..=1 << 20).contains(&self.storage.segment_kb) {
            return bad("storage.segment_kb must be between 64 and 1048576");
        }
        if self.cluster.enabled() {
            let c = &self.cluster;
            let id_ok = (1..=64).contains(&c.node_id.len())
                && c.node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return bad(
                    "cluster.node_id (QRGATE_NODE_ID) must be 1 to 64 letters, digits, '-' or '_'",
                );
            }
            if c.secret.len() < 32 {
                return bad("cluster.secret (QRGATE_CLUSTER_SECRET) must be at least 32 characters, the same on every node");
            }
            if !(1..=86400).contains(&c.snapshot_secs) {
                return bad("cluster.snapshot_secs must be between 1 and 86400");
            }
            if !(1..=5).contains(&c.replicas) {
                return bad("cluster.replicas must be between 1 and 5");
            }
            if !self.storage.journal {
                return bad("storage.journal = false cannot be used in cluster mode");
            }
        }
        let l = &self.limits;
        if l.group_joins_per_minute == 0 || l.user_joins_per_minute == 0 {
            return bad("join rate limits must be at least 1 per minute");
        }
        if self.payouts.rejected_notifications_per_minute_per_ip == 0 {
            return bad("payouts.rejected_notifications_per_minute_per_ip must be at least 1");
        }
        if l.users_per_minute_per_ip == 0 {
            return bad("limits.users_per_minute_per_ip must be at least 1");
        }
        if l.max_stored_invites_per_group < l.max_live_invites_per_group
            || l.invites_per_member_per_hour == 0
        {
            return bad("limits.max_stored_invites_per_group must be >= max_live_invites_per_group, and invites_per_member_per_hour at least 1");
        }
        if l.max_pending_requests_per_invite == 0 {
            return bad("limits.max_pending_requests_per_invite must be at least 1");
        }
        if l.anonymous_images_per_minute_per_ip == 0
            || l.qr_cache_mb == 0
            || l.users_per_minute_per_network_before_challenge == 0
        {
            return bad("limits.anonymous_images_per_minute_per_ip, qr_cache_mb and users_per_minute_per_network_before_challenge must be at least 1");
        }
        if l.group_joins_per_minute_max < l.group_joins_per_minute {
            return bad("limits.group_joins_per_minute_max must be >= group_joins_per_minute");
        }
        if l.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes must be at least 1024");
        }
        if l.max_live_invites_per_group == 0 {
            return bad("limits.max_live_invites_per_group must be at least 1");
        }
        if l.join_request_ttl_seconds < 1 {
            return bad("limits.join_request_ttl_seconds must be positive");
        }
        if self.actors.mailbox < 16 || self.websocket.queue < 1 {
            return bad("actors.mailbox must be >= 16 and websocket.queue >= 1");
        }
        if self.events.retention_days == 0 || self.events.max_per_feed == 0 {
            return bad("events.retention_days and events.max_per_feed must be at least 1");
        }
        let w = &self.websocket;
        if w.max_per_user < 1
            || w.max_per_ip < 1
            || w.max_connections < 1
            || w.max_groups_per_connection < 1
            || w.subscribes_per_minute < 1
        {
            return bad("websocket.max_per_user, max_per_ip, max_connections, max_groups_per_connection and subscribes_per_minute must be at least 1");
        }
        let w = &self.wallets;
        if let Some(k) = w
            .earning_kinds
            .iter()
            .find(|k| !crate::domain::ledger::valid_kind(k))
        {
            return bad(&format!(
                "wallets.earning_kinds: `{k}` must be 1 to 32 of a-z, 0-9 and _"
            ));
        }
        if w.earning_min_fen == 0 || w.earning_max_fen < w.earning_min_fen {
            return bad("wallets.earning_min_fen must be >= 1 and <= earning_max_fen");
        }
        if w.earning_max_fen > crate::domain::ledger::MAX_AMOUNT {
            return bad("wallets.earning_max_fen is above the largest transfer");
        }
        let p = &self.payouts;
        if p.min_fen == 0 || p.max_fen < p.min_fen || p.max_fen > crate::domain::ledger::MAX_AMOUNT
        {
            return bad("payouts.min_fen must be >= 1 and <= max_fen (<= the largest transfer)");
        }
        if p.auto_min_threshold_fen < p.min_fen {
            return bad("payouts.auto_min_threshold_fen must be >= payouts.min_fen");
        }
        if !(-12..=14).contains(&p.day_offset_hours) {
            return bad("payouts.day_offset_hours must be between -12 and 14");
        }
        if !(p.retry_factor > 0.0 && p.retry_factor <= 100.0) || p.stuck_after_seconds < 1 {
            return bad("payouts.retry_factor must be in (0, 100] and stuck_after_seconds >= 1");
        }
        if !(1..24 * 3600).contains(&p.confirm_timeout_seconds) {
            return bad(
                "payouts.confirm_timeout_seconds must be between 1 and 86399 (under 24 hours)",
            );
        }
        let k = &self.packets;
        if k.min_share_fen == 0
            || k.max_shares == 0
            || k.max_total_fen < k.min_share_fen
            || k.max_total_fen > crate::domain::ledger::MAX_AMOUNT
        {
            return bad("packets: min_share_fen and max_shares must be >= 1, max_total_fen >= min_share_fen (<= the largest transfer)");
        }
        if k.min_ttl_seconds == 0
            || k.default_ttl_seconds < k.min_ttl_seconds
            || k.max_ttl_seconds < k.default_ttl_seconds
        {
            return bad(
                "packets: need 1 <= min_ttl_seconds <= default_ttl_seconds <= max_ttl_seconds",
            );
        }
        if k.claims_per_minute_per_user == 0 {
            return bad("packets.claims_per_minute_per_user must be at least 1");
        }
        if let Some(u) = k
            .blacklist
            .iter()
            .find(|u| crate::domain::ids::UserId::parse(u).is_err())
        {
            return bad(&format!("packets.blacklist: `{u}` is not a user id"));
        }
        self.codes.validate().map_err(ConfigError::Invalid)?;
        self.risk.validate().map_err(ConfigError::Invalid)?;
        if let Some(u) = &self.public_base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return bad("public_base_url must start with http:// or https://");
            }
            // Invitation URLs must stay short enough to encode as a QR code.
            if u.len() > 256 {
                return bad("public_base_url must be at most 256 characters");
            }
        }
        Ok(())
    }

    pub fn arbiters(&self) -> usize {
        match self.actors.arbiters {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl Codes {
    fn validate(&self) -> Result<(), String> {
        if self.pages.is_empty() {
            return Err("codes.pages must list at least one page".into());
        }
        use crate::domain::code::{absolute_page_host, valid_page, RESERVED_SEGMENTS};
        for p in &self.pages {
            if valid_page(p) {
                let first = p[1..].split('/').next().unwrap_or_default();
                if self.page_base_url.is_none() && RESERVED_SEGMENTS.contains(&first) {
                    return Err(format!(
                        "codes.pages: `{p}` is a path this server answers itself; name another, or set codes.page_base_url"
                    ));
                }
                continue;
            }
            match absolute_page_host(p) {
                Some(h) if self.redirect_hosts.iter().any(|a| a.eq_ignore_ascii_case(&h)) => {}
                Some(h) => {
                    return Err(format!(
                        "codes.pages: `{p}` names host `{h}`, which is not in codes.redirect_hosts"
                    ))
                }
                None => {
                    return Err(format!(
                        "codes.pages: `{p}` must be / followed by 1 to 64 of a-z, 0-9, _, - and /, or an http(s) URL without query or fragment"
                    ))
                }
            }
        }
        if let Some(b) = &self.page_base_url {
            if absolute_page_host(b).is_none() {
                return Err(
                    "codes.page_base_url must be an http(s) URL without query or fragment".into(),
                );
            }
        }
        if let Some(h) = self
            .redirect_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ':', '?', '#', '@', ' ']))
        {
            return Err(format!(
                "codes.redirect_hosts: `{h}` must be a bare host name"
            ));
        }
        // Bindings stay small sled values: 17 of them (a full leaf) must stay
        // below sled's blob threshold (see the storage module).
        if !(2..=4096).contains(&self.max_params_bytes) {
            return Err("codes.max_params_bytes must be between 2 and 4096".into());
        }
        if self.pool_size > 100_000 || self.pool_low_water > self.pool_size {
            return Err("codes: need pool_low_water <= pool_size <= 100000".into());
        }
        if self.refill_idle_ms > 5000 {
            return Err("codes.refill_idle_ms must be at most 5000".into());
        }
        // Pooled images are stored in sled; larger ones could pass its blob threshold.
        if !(crate::qr::MIN_SIZE..=512).contains(&self.qr_size) {
            return Err(format!(
                "codes.qr_size must be between {} and 512",
                crate::qr::MIN_SIZE
            ));
        }
        if self.min_ttl_seconds == 0 || self.max_ttl_seconds < self.min_ttl_seconds {
            return Err("codes: need 1 <= min_ttl_seconds <= max_ttl_seconds".into());
        }
        if self.cache_entries == 0 {
            return Err("codes.cache_entries must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file() {
        let mut c: Config =
            toml::from_str("bind = \"0.0.0.0:1\"\n[limits]\nuser_joins_per_minute = 5").unwrap();
        assert_eq!(c.limits.user_joins_per_minute, 5);
        assert_eq!(
            c.limits.group_joins_per_minute, 600,
            "defaults fill the rest"
        );
        c.apply_env(|k| (k == "QRGATE_BIND").then(|| "127.0.0.1:9".to_string()));
        assert_eq!(c.bind, "127.0.0.1:9");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn webhooks_come_from_the_file_or_the_environment_and_are_checked() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let file = format!(
            "[[webhooks]]\nid = \"crm\"\nurl = \"https://crm.example/hooks\"\nsecret = \"{secret}\"\nevents = [\"join_approved\"]\n"
        );
        let mut c: Config = toml::from_str(&file).unwrap();
        assert!(c.validate().is_ok());
        c.apply_env(|k| match k {
            "QRGATE_WEBHOOK_URL" => Some("https://ops.example/in".into()),
            "QRGATE_WEBHOOK_SECRET" => Some(secret.into()),
            _ => None,
        });
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(
            (c.webhooks[1].id.as_str(), c.webhooks[1].events.clone()),
            (ENV_WEBHOOK, vec!["*".to_string()])
        );
        assert!(c.validate().is_ok());
        assert!(
            !format!("{c:?}").contains("MfKQ9r8"),
            "secrets stay out of debug output"
        );
        let bad = |f: &dyn Fn(&mut Webhook)| {
            let mut c: Config = toml::from_str(&file).unwrap();
            f(&mut c.webhooks[0]);
            c.validate().is_err()
        };
        assert!(bad(
            &|w| w.secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
        ));
        assert!(bad(&|w| w.secret = "whsec_c2hvcnQ=".into()));
        assert!(bad(&|w| w.url = "ftp://crm.example/".into()));
        assert!(bad(&|w| w.url = "https://user:pw@crm.example/".into()));
        assert!(bad(&|w| w.id = "CRM".into()));
        assert!(bad(&|w| w.events = vec!["joined".into()]));
        assert!(bad(&|w| w.events = vec![]));
    }

    #[test]
    fn the_provider_is_the_embedded_simulator_only_where_nobody_else_can_reach_it() {
        let parse = |text: &str| toml::from_str::<Config>(text).unwrap();
        let c = parse("bind = \"127.0.0.1:8080\"");
        assert!(matches!(c.provider_use(), ProviderUse::Embedded));
        assert!(c.validate().is_ok());
        // Reachable from elsewhere: a kind must be chosen.
        let c = parse(
            "bind = \"0.0.0.0:8080\"\nadmin_token = \"a-long-enough-operator-token-0123456789\"",
        );
        assert!(c.validate().is_err());
        for kind in ["none", "embedded_simulator"] {
            let c = parse(&format!(
                "bind = \"0.0.0.0:8080\"\nadmin_token = \"a-long-enough-operator-token-0123456789\"\n[provider]\nkind = \"{kind}\""
            ));
            assert!(c.validate().is_ok(), "{kind}");
        }
        assert!(matches!(
            parse("[provider]\nkind = \"none\"").provider_use(),
            ProviderUse::None
        ));
        // Without a kind, the settings of a provider mean WeChat Pay's.
        assert!(
            toml::from_str::<Config>("[provider]\nbase_url = \"https://x\"").is_err(),
            "the rest is required"
        );
        assert!(toml::from_str::<Config>("[provider]\nkind = \"paypal\"").is_err());
        assert!(
            toml::from_str::<Config>("[provider]\nkind = \"none\"\nbase_url = \"https://x\"")
                .is_err()
        );
        // A cluster: no simulator per node.
        let c = parse("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode_id = \"n1\"\nsecret = \"cluster-secret-for-tests-0123456789abcdef\"");
        assert!(matches!(c.provider_use(), ProviderUse::None));
        let c = parse("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode_id = \"n1\"\nsecret = \"cluster-secret-for-tests-0123456789abcdef\"\n[provider]\nkind = \"embedded_simulator\"");
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("bnid = \"x\"").is_err());
        let c = Config {
            admin_token: "short".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_weak_admin_token_is_refused_off_loopback() {
        let with = |bind: &str, token: &str| Config {
            bind: bind.into(),
            admin_token: token.into(),
            provider: Provider::None,
            ..Config::default()
        };
        let long = "k".repeat(40);
        for bind in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
            assert!(with(bind, SHIPPED_ADMIN_TOKEN).validate().is_ok(), "{bind}");
        }
        for bind in ["0.0.0.0:8080", "10.0.0.5:80", "[::]:8080", "example.com:80"] {
            assert!(
                with(bind, SHIPPED_ADMIN_TOKEN).validate().is_err(),
                "{bind}"
            );
            assert!(with(bind, &"k".repeat(31)).validate().is_err(), "{bind}");
            assert!(with(bind, &long).validate().is_ok(), "{bind}");
            assert!(with(bind, "").validate().is_ok(), "unset: generated");
        }
    }

    #[test]
    fn the_shipped_config_file_is_valid() {
        let c: Config = toml::from_str(include_str!("../config.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.codes.pool_size, Codes::default().pool_size);
    }

    #[test]
    fn codes_section() {
        let c: Config = toml::from_str(
            "[codes]\npages = [\"/shop\"]\npool_size = 20\npool_low_water = 5\nmin_ttl_seconds = 1",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.codes.max_params_bytes, 1024, "defaults fill the rest");
        for good in [
            "[codes]\npages = [\"https://shop.example.com/x\"]\nredirect_hosts = [\"SHOP.example.com\"]",
            "[codes]\npages = [\"/v1/x\"]\npage_base_url = \"https://www.example.com/qr\"",
        ] {
            let c: Config = toml::from_str(good).unwrap();
            assert!(c.validate().is_ok(), "{good}");
        }
        for bad in [
            "[codes]\npages = []",
            "[codes]\npages = [\"shop\"]",
            "[codes]\npool_size = 5\npool_low_water = 6",
            "[codes]\nqr_size = 64",
            "[codes]\nmin_ttl_seconds = 0",
            "[codes]\nmax_params_bytes = 100000",
            // absolute pages need their host allowed; the server's own paths are taken
            "[codes]\npages = [\"https://shop.example.com/x\"]",
            "[codes]\npages = [\"https://shop.example.com/x?a=1\"]\nredirect_hosts = [\"shop.example.com\"]",
            "[codes]\npages = [\"/v1/x\"]",
            "[codes]\npages = [\"/s\"]",
            "[codes]\npage_base_url = \"ftp://x\"",
            "[codes]\nredirect_hosts = [\"https://shop.example.com\"]",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
