//! Build the application from a config and serve it.

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpMessage, HttpServer};
use governor::{Quota, RateLimiter};
use qrgate_provider::client::ClientError;
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::groups::{Directory, Shared};
use crate::http::{self, AppState};
use crate::keys::KeyRing;
use crate::metrics;
use crate::push::{self, Hub};
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {0}: {1}")]
    Bind(String, std::io::Error),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error("cannot open storage in {0}: {1}")]
    Storage(String, crate::storage::StorageError),
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
    #[error("[provider]: {0}")]
    Provider(qrgate_provider::client::ClientError),
    #[error("{0}")]
    Webhooks(String),
    #[error("the embedded payment simulator: {0}")]
    Embedded(String),
}

/// A server bound to its port, not yet awaited.
pub struct Application {
    pub server: Server,
    pub addr: SocketAddr,
    pub storage: Storage,
    /// Its scan counts are flushed at shutdown.
    pub codes: Arc<crate::codes::Codes>,
}

/// With the embedded simulator, start it (on loopback, its keys in
/// `{data_dir}/paysim`) and point `config` at it; its address, to say so.
fn embedded_provider(config: &mut Config) -> Result<Option<SocketAddr>, StartError> {
    if !matches!(config.provider_use(), crate::config::ProviderUse::Embedded) {
        return Ok(None);
    }
    let keys = config.data_dir.join("paysim");
    let started = qrgate_paysim::start(&qrgate_paysim::PaysimArgs {
        bind: "127.0.0.1:0".into(),
        keys: keys.clone(),
        time_factor: 1.0,
        amount_limit: qrgate_paysim::DEFAULT_AMOUNT_LIMIT,
        balance: qrgate_paysim::DEFAULT_BALANCE,
        workers: 1,
    })
    .map_err(|e| StartError::Embedded(e.to_string()))?;
    let base = format!("http://{}", started.addr);
    let merchant = qrgate_paysim::merchant_config(&base, &keys)
        .map_err(|e| StartError::Embedded(e.to_string()))?;
    actix_web::rt::spawn(started.server);
    tracing::warn!(
        at = %base,
        "payouts and account links use the EMBEDDED PAYMENT SIMULATOR: no real money moves (set [provider] kind = \"wechatpay\" for a merchant account)"
    );
    config.provider = crate::config::Provider::External(Box::new(merchant));
    Ok(Some(started.addr))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// Open storage and keys, start the actor directory and the outbox consumer,
/// and bind the HTTP server. Must run inside an actix system.
pub fn build(mut config: Config) -> Result<Application, StartError> {
    metrics::init();
    let listener =
        TcpListener::bind(&config.bind).map_err(|e| StartError::Bind(config.bind.clone(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.bind.clone(), e))?;
    let node = if config.cluster.enabled() {
        let url = config
            .cluster
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        // Blocking NATS calls, off this thread's runtime.
        let joined = std::thread::scope(|s| {
            s.spawn(|| crate::node::Node::join(&config, url))
                .join()
                .unwrap_or_else(|_| Err("joining the cluster panicked".into()))
        });
        Some(Arc::new(joined.map_err(StartError::Cluster)?))
    } else {
        None
    };
    let keys = Arc::new(KeyRing::load_or_create(&config.data_dir)?);
    // Cards need fonts; loading them takes a moment, so it happens aside,
    // and says whether Chinese can be drawn.
    crate::card::configure(config.cards.font_file.as_deref());
    std::thread::spawn(|| {
        let f = crate::card::fonts();
        if f.cjk {
            tracing::info!(faces = f.faces, "card fonts loaded");
        } else {
            tracing::warn!(
                faces = f.faces,
                "no font with Chinese glyphs: invitation cards draw Chinese as boxes (install fonts-noto-cjk, or set cards.font_file)"
            );
        }
    });
    if !config.storage.journal {
        tracing::warn!(
            "storage.journal = false: NOTHING IS WRITTEN TO DISK and every write is lost at exit (benchmarks only)"
        );
    }
    let storage = match &node {
        None => Storage::open_with(
            &config.data_dir,
            keys.journal_key(),
            config.storage.options(),
        ),
        Some(node) => {
            let opts = crate::storage::cluster::ClusterOptions {
                log: Arc::clone(&node.log),
                node_id: node.id.clone(),
            };
            std::thread::scope(|s| {
                s.spawn(|| {
                    Storage::open_cluster(
                        &config.data_dir,
                        keys.journal_key(),
                        config.storage.options(),
                        opts,
                    )
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(crate::storage::StorageError::Io(
                        "opening storage panicked".into(),
                    ))
                })
            })
        }
    }
    .map_err(|e| StartError::Storage(config.data_dir.display().to_string(), e))?;
    if let Some(node) = &node {
        node.start(
            storage.clone(),
            config.data_dir.clone(),
            Duration::from_secs(config.cluster.snapshot_secs),
        )
        .map_err(StartError::Cluster)?;
        tracing::info!(node = %node.id, url = %node.url, "joined the cluster");
    }
    let base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();

    let embedded = embedded_provider(&mut config)?;
    let duty = crate::node::Duty::of(node.clone());
    // One clock for every limiter, so a refusal's Retry-After is computed on
    // the same time base the limiter used.
    let clock = governor::clock::DefaultClock::default();
    let user_limiter = Arc::new(RateLimiter::dashmap_with_clock(
        per_minute(config.limits.user_joins_per_minute),
        clock.clone(),
    ));
    let shared = Arc::new(Shared {
        config: config.clone(),
        storage: storage.clone(),
        keys: Arc::clone(&keys),
        user_limiter: Arc::clone(&user_limiter),
        clock: clock.clone(),
        counters: push::CounterStore::default(),
        signals: crate::groups::signals::SignalStore::default(),
        duty: duty.clone(),
    });
    // Shared actors start here, outside the HttpServer factory, so that every
    // worker talks to the same ones.
    let mut arbiters = crate::registry::Arbiters::start(config.arbiters());
    if config.actors.on_http_workers {
        arbiters = arbiters.on_http_workers();
    }
    let worker_arbiters = arbiters.clone();
    let directory = Directory::new(shared, arbiters.clone());
    let provider = match config.provider_use() {
        crate::config::ProviderUse::External(p) => {
            let client =
                qrgate_provider::client::ProviderClient::new(p).map_err(StartError::Provider)?;
            Some(Arc::new(client) as Arc<dyn qrgate_provider::adapter::PayoutProvider>)
        }
        _ => None,
    };
    let wallets = crate::wallets::Wallets::new(
        Arc::new(
            crate::wallets::Shared::new(config.clone(), storage.clone()).with_duty(duty.clone()),
        ),
        arbiters,
    );
    let hub = Hub::new(
        config.websocket.queue,
        crate::push::Caps::of(&config.websocket),
    );
    let consumer = Arc::new(push::ConsumerHealth::default());
    let feeds = crate::feeds::FeedStore::new(&config.events);
    let webhooks = crate::webhooks::Webhooks::new(
        &config.webhooks,
        config.webhook_delivery.clone(),
        storage.clone(),
        duty.clone(),
    )
    .map_err(StartError::Webhooks)?;
    webhooks.start();
    actix_web::rt::spawn(push::run_outbox(
        storage.clone(),
        hub.clone(),
        directory.shared().counters.clone(),
        feeds.clone(),
        Arc::clone(&webhooks),
        Arc::clone(&consumer),
    ));

    let payout_jobs = Arc::new(tokio::sync::Notify::new());
    if let Some(client) = provider.clone() {
        let notify_url = config
            .payouts
            .notify_url
            .clone()
            .unwrap_or_else(|| format!("{base_url}/v1/provider/notify"));
        let loopback = notify_url
            .parse::<actix_web::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(qrgate_provider::tls::is_loopback))
            .unwrap_or(false);
        if !qrgate_provider::wire::valid_notify_url(&notify_url, loopback) {
            return Err(StartError::Provider(ClientError::Config(format!(
                "the provider's notification URL {notify_url:?} must be https without a query (http only to this machine): set public_base_url or payouts.notify_url"
            ))));
        }
        actix_web::rt::spawn(
            crate::wallets::runner::Runner {
                wallets: wallets.clone(),
                client: client.clone(),
                notify_url,
                wake: Arc::clone(&payout_jobs),
                keys: Arc::clone(&keys),
            }
            .run(),
        );
        actix_web::rt::spawn(crate::wallets::runner::refresh_links(
            wallets.clone(),
            client,
            Arc::clone(&keys),
        ));
    }
    let admin_token = if config.admin_token.is_empty() {
        let (token, generated) = crate::keys::admin_token(&config.data_dir, true)?;
        let path = crate::keys::admin_token_path(&config.data_dir);
        if generated {
            tracing::warn!(path = %path.display(), "no admin_token configured: generated one into this file (keep it secret)");
        } else {
            tracing::info!(path = %path.display(), "admin token read from the data dir");
        }
        token
    } else {
        config.admin_token.clone()
    };
    let accounts = crate::accounts::Accounts::load(&storage, &config)
        .map_err(|e| StartError::Storage(config.data_dir.display().to_string(), e))?;
    let (codes, stale_pool) = crate::codes::Codes::open(&config, storage.clone(), &keys, &base_url)
        .map_err(|e| StartError::Storage(config.data_dir.display().to_string(), e))?;
    codes.start(stale_pool, duty.clone());
    let state = web::Data::new(AppState {
        codes: Arc::clone(&codes),
        node: node.clone(),
        admin_hash: blake3::hash(admin_token.as_bytes()),
        qr_cache: crate::qr::cache(config.limits.qr_cache_mb << 20),
        new_user_burst: RateLimiter::dashmap_with_clock(
            per_minute(config.limits.users_per_minute_per_network_before_challenge),
            clock.clone(),
        ),
        image_limiter: RateLimiter::dashmap_with_clock(
            per_minute(config.limits.anonymous_images_per_minute_per_ip),
            clock.clone(),
        ),
        ws_tickets: quick_cache::sync::Cache::new(100_000),
        ip_limiter: RateLimiter::dashmap_with_clock(
            per_minute(config.limits.users_per_minute_per_ip),
            clock.clone(),
        ),
        accounts,
        storage: storage.clone(),
        keys,
        groups: directory,
        wallets: wallets.clone(),
        provider: provider.clone(),
        payout_jobs: payout_jobs.clone(),
        notifications: Default::default(),
        consumer,
        trusted_proxies: crate::domain::network::parse_proxies(&config.trusted_proxies)
            .unwrap_or_default(),
        notify_refusals: RateLimiter::dashmap_with_clock(
            per_minute(config.payouts.rejected_notifications_per_minute_per_ip),
            clock.clone(),
        ),
        notify_blocked: quick_cache::sync::Cache::new(10_000),
        hub,
        feeds,
        webhooks,
        forgery_event_at: Default::default(),
        embedded_provider: embedded,
        base_url: base_url.clone(),
        config: config.clone(),
    });
    // Another node's change to a session, a freeze, an API key or a scan
    // code's binding reaches this node's memory (a weak handle: the store outlives no state).
    let weak = Arc::downgrade(&state.clone().into_inner());
    storage.on_remote_change(move |k| {
        if let Some(state) = weak.upgrade() {
            state.accounts.refresh(k);
            state.codes.refresh(k);
            state.webhooks.remote_change(k);
        }
    });

    // Keyed limiters keep a key until told to forget idle ones.
    let sweep = state.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            user_limiter.retain_recent();
            sweep.ip_limiter.retain_recent();
            sweep.image_limiter.retain_recent();
            sweep.notify_refusals.retain_recent();
            sweep.new_user_burst.retain_recent();
            user_limiter.shrink_to_fit();
            sweep.ip_limiter.shrink_to_fit();
            sweep.image_limiter.shrink_to_fit();
        }
    });

    let clustered = config.cluster.enabled();
    let mut server = HttpServer::new(move || {
        // Runs on each worker's thread as it starts.
        worker_arbiters.register_current();
        App::new()
            // Cluster mode: a group's, a packet's or a code's requests go
            // to its owner (one node: not in the path at all).
            .wrap(actix_web::middleware::Condition::new(
                clustered,
                actix_web::middleware::from_fn(http::forward::route),
            ))
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                // A fixed set of labels: clients can send any method string.
                let method = method_label(req.method());
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    // The matched pattern, never the raw path or query (which may carry tokens).
                    let path = res.request().path();
                    // A request another node answered (cluster mode) is
                    // counted there under its route, here as `forwarded`.
                    let forwarded = res
                        .request()
                        .extensions()
                        .contains::<http::forward::Forwarded>();
                    let route = match http::STATIC_ROUTES.iter().find(|r| **r == path) {
                        _ if forwarded => "forwarded".to_string(),
                        Some(r) => (*r).to_string(),
                        None => match http::hot_pattern(path) {
                            Some(r) => r.to_string(),
                            None => res
                                .request()
                                .match_pattern()
                                .unwrap_or_else(|| "unmatched".into()),
                        },
                    };
                    let status = res.status().as_u16();
                    let secs = started.elapsed().as_secs_f64();
                    metrics::HTTP_REQUESTS
                        .with_label_values(&[method, &route, &status.to_string()])
                        .inc();
                    metrics::HTTP_SECONDS
                        .with_label_values(&[method, &route])
                        .observe(secs);
                    tracing::debug!(%method, %route, status, ms = secs * 1000.0, "request");
                    Ok(res)
                }
            })
            .configure(http::configure(state.clone()))
    })
    .shutdown_timeout(10)
    .listen(listener)
    .map_err(|e| StartError::Bind(config.bind.clone(), e))?;
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    Ok(Application {
        server: server.run(),
        addr,
        storage,
        codes,
    })
}

/// A fixed set of metric labels: clients can send any method string.
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
