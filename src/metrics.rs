//! Prometheus metrics, registered once in a process-wide registry.

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn reg<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration only fails on a duplicate name, which is a programming error
    // caught by the first test that renders /metrics.
    if let Err(e) = REGISTRY.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_http_requests_total",
            "HTTP requests by route and status",
        ),
        &["method", "route", "status"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static HTTP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    reg(HistogramVec::new(
        HistogramOpts::new("qrgate_http_request_seconds", "HTTP request latency")
            .buckets(LATENCY_BUCKETS.to_vec()),
        &["method", "route"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static JOIN_OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_join_outcomes_total",
            "Join attempts by outcome code",
        ),
        &["outcome"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_storage_flush_seconds",
            "Duration of one journal append (write and fdatasync) of a group commit",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static FLUSH_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_storage_commit_write_sets",
            "Write sets made durable by one group commit (one journal frame)",
        )
        .buckets(vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ]),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_log_append_seconds",
            "Cluster mode: one append to the replicated log until its outcome, retries included",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_APPENDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_log_appends_total",
            "Cluster mode: appends to the replicated log by outcome (ok; conflict: another writer wrote the entity; in_doubt: a retried append refused as the entity moved on, settled by applying the log; unavailable)",
        ),
        &["outcome"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_log_append_retries_total",
        "Cluster mode: appends published again after a timeout or a leader election",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_APPLIED: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_log_applied_position",
        "Cluster mode: the position of the replicated log this node has applied",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_REFUSED_AT_APPLY: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_log_refused_at_apply_total",
        "Cluster mode: entries the log took that did not follow their entity's last position, applied as nothing",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LIMIT_ASKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_limit_asks_total",
            "Cluster mode: counts asked of the node holding a user's or a network's limit (asked; unavailable: decided here instead)",
        ),
        &["outcome"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static FORWARDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_forwards_total",
            "Cluster mode: requests forwarded to the node owning their entity (sent; not_sent: served here as the owner was unreachable; lost: the owner took it and did not answer) and forwards received (served, refused)",
        ),
        &["outcome"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LIVE_NODES: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_cluster_live_nodes",
        "Cluster mode: the live nodes this node sees (its own heartbeat included)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static PLACEMENT_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_cluster_placement_changes_total",
        "Cluster mode: times the nodes this node places entities among changed (a node came or went, or this node could not reach one); entities move owner each time",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static SNAPSHOT_POSITION: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_cluster_snapshot_position",
        "Cluster mode: the log position of the last snapshot this node stored",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static LOG_STALE_ACTORS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_log_stale_actors_total",
        "Cluster mode: actors rebuilt because another node wrote their entity",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static STORAGE_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_storage_apply_seconds",
            "One group commit from taking its write sets to durable (before the overlay)",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

/// The life cycle of one kind of resident actor (`qrgate_{kind}_actors_resident`,
/// `qrgate_{kind}_actor_activations_total`, `qrgate_{kind}_actor_passivations_total`).
pub struct ActorMetrics {
    pub resident: IntGauge,
    pub activations: IntCounter,
    pub passivations: IntCounter,
}

fn actor_metrics(kind: &str, what: &str) -> ActorMetrics {
    let gauge = |name: String, help: String| {
        reg(IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric()))
    };
    let counter = |name: String, help: String| {
        reg(IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric()))
    };
    ActorMetrics {
        resident: gauge(
            format!("qrgate_{kind}_actors_resident"),
            format!("{what} actors in memory"),
        ),
        activations: counter(
            format!("qrgate_{kind}_actor_activations_total"),
            format!("{what} actors rebuilt from storage"),
        ),
        passivations: counter(
            format!("qrgate_{kind}_actor_passivations_total"),
            format!("Idle {} actors dropped", what.to_lowercase()),
        ),
    }
}

pub static GROUP_ACTORS: LazyLock<ActorMetrics> = LazyLock::new(|| actor_metrics("group", "Group"));

pub static WALLET_ACTORS: LazyLock<ActorMetrics> =
    LazyLock::new(|| actor_metrics("wallet", "Wallet"));

pub static PACKET_ACTORS: LazyLock<ActorMetrics> =
    LazyLock::new(|| actor_metrics("packet", "Packet"));

pub static STORAGE_POISONED: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_storage_failed",
        "1 after a journal fsync failed (writes are refused until restart)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static JOURNAL_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_journal_bytes_total",
        "Bytes appended to the journal (frames with their headers)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static JOURNAL_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_journal_refused_rounds_total",
        "Commit rounds refused because the journal write failed (disk full, I/O error)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CHECKPOINT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_checkpoint_seconds",
            "Duration of one checkpoint (overlay into sled, sled durable, segments deleted)",
        )
        .buckets(vec![
            0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CHECKPOINT_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_checkpoint_failures_total",
        "Checkpoints that failed (retried; the journal keeps everything meanwhile)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static EVENTS_QUARANTINED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_events_quarantined_total",
        "Outbox events the consumer could not decode, set aside (q/ records, GET /v1/admin/alerts) instead of retried forever",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WEBHOOKS_QUEUED: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    reg(prometheus::IntGaugeVec::new(
        Opts::new(
            "qrgate_webhooks_queued",
            "Webhook deliveries queued on this node, per endpoint",
        ),
        &["endpoint"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WEBHOOK_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_webhook_attempts_total",
            "Webhook delivery attempts per endpoint, by result (delivered, retry, gone)",
        ),
        &["endpoint", "result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WEBHOOKS_DONE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_webhooks_total",
            "Webhook deliveries ended per endpoint: delivered, or failed for the whole retry window",
        ),
        &["endpoint", "state"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WEBHOOKS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_webhooks_dropped_total",
            "Undelivered webhook deliveries dropped at the queue's bound (webhook_delivery.max_queue_bytes), per endpoint",
        ),
        &["endpoint"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WEBHOOKS_DISABLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_webhook_endpoints_disabled_total",
            "Times a webhook endpoint was disabled because its receiver answered 410 Gone",
        ),
        &["endpoint"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_ws_refused_total",
            "WebSocket connections refused before the upgrade, by the cap they hit: per user, per address, on this server",
        ),
        &["cap"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WS_SUBSCRIBES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_ws_subscribe_frames_total",
            "Subscribe frames by result: subscribed, rate_limited, too_many_subscriptions, forbidden, invalid, failed",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static BACKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_backups_total",
            "Online backups (POST /v1/admin/backup) by result: ok, failed",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static BACKUP_LAST_SUCCESS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_backup_last_success_timestamp_seconds",
        "Unix time the last online backup finished (0: none since the start); alert when it gets old",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static BACKUP_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new("qrgate_backup_seconds", "Duration of one online backup").buckets(vec![
            0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
        ]),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static SLED_REOPENS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_sled_reopens_total",
        "Times sled was closed and opened again to keep its next open's recovery scan short (storage.sled_reopen_mb)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static COMMIT_STALL_SECONDS: LazyLock<Counter> = LazyLock::new(|| {
    reg(Counter::new(
        "qrgate_commit_stall_seconds_total",
        "Time commit rounds waited for a checkpoint because the journal since the last one passed twice checkpoint_mb",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static TRANSFER_RUNS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_transfer_runs",
        "Sorted runs holding checkpointed transfers (merged as they grow: about log2 of their count)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static OUTBOX_LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_outbox_lag_events",
        "Durable events not yet consumed",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static WS_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(
        IntGauge::new("qrgate_ws_connections", "Open WebSocket connections")
            .unwrap_or_else(|_| unreachable_metric()),
    )
});

pub static WS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_ws_slow_consumers_closed_total",
        "WebSocket connections closed for falling behind",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static QR_RENDERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_qr_images_total",
            "QR images served, by cache result",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static PAYOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_payouts_total",
            "Payouts by event: requested, succeeded, failed, contradiction",
        ),
        &["event"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static PACKETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_packets_total",
            "Red packet events: created, claimed, closed, claim_paused, breaker_tripped",
        ),
        &["event"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static PAYOUTS_STUCK: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_payouts_stuck",
        "Payouts processing longer than payouts.stuck_after_seconds",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static PROVIDER_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_provider_calls_total",
            "Calls to the payment provider by operation and result",
        ),
        &["operation", "result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_provider_notifications_total",
            "Provider notifications by result (applied, duplicate, rejected_signature, ...)",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_POOL_SIZE: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "qrgate_code_pool_size",
        "Pre-generated scan codes (with their QR images) ready to be bound",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_POOL_REFILLS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_code_pool_refills_total",
        "Refills of the scan code pool (from below the low-water mark up to pool_size)",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_POOL_GENERATED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_code_pool_generated_total",
        "Scan codes generated into the pool",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_POOL_TAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_code_pool_takes_total",
            "Scan codes created: from the pool (hit) or generated inline (miss)",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_code_lookups_total",
            "Scan code lookups: forged (refused by the tag, no read), cached (no read), hit or miss (a storage read)",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODE_SCANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_code_scans_total",
            "Resolutions of live scan codes: counted, or dropped (too many unflushed)",
        ),
        &["result"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CODES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_codes_total",
            "Scan code events: created, revoked, forgotten",
        ),
        &["event"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static JOIN_RISK: LazyLock<Histogram> = LazyLock::new(|| {
    reg(Histogram::with_opts(
        HistogramOpts::new(
            "qrgate_join_risk_score",
            "Risk score of join attempts (0-100)",
        )
        .buckets(vec![
            0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
        ]),
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static JOINS_FLAGGED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_joins_flagged_total",
        "Join attempts whose risk score reached risk.flag_score",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static CHALLENGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_challenges_total",
            "Join challenges by kind and outcome (issued, passed, or the refusal code)",
        ),
        &["kind", "outcome"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static INVITE_STAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "qrgate_invite_stage_changes_total",
            "Invitations stepped up to a stage, or reset by a moderator",
        ),
        &["stage"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static GROUPS_FLAGGED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_groups_flagged_total",
        "Groups listed for review because most of their recent joins were flagged",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

pub static INVITE_SCANS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "qrgate_invite_scans_total",
        "Invitation tokens checked by a landing page",
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

/// Metric constructors only fail on invalid names, which are constants here.
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}

/// Touch every metric so it shows up in /metrics before its first use.
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_SECONDS);
    LazyLock::force(&JOIN_OUTCOMES);
    LazyLock::force(&FLUSH_SECONDS);
    LazyLock::force(&FLUSH_BATCH);
    LazyLock::force(&STORAGE_WRITE_SECONDS);
    LazyLock::force(&GROUP_ACTORS);
    LazyLock::force(&WALLET_ACTORS);
    LazyLock::force(&PACKET_ACTORS);
    LazyLock::force(&OUTBOX_LAG);
    LazyLock::force(&STORAGE_POISONED);
    LazyLock::force(&JOURNAL_BYTES);
    LazyLock::force(&JOURNAL_REFUSED);
    LazyLock::force(&CHECKPOINT_SECONDS);
    LazyLock::force(&CHECKPOINT_FAILED);
    LazyLock::force(&BACKUP_LAST_SUCCESS);
    LazyLock::force(&EVENTS_QUARANTINED);
    LazyLock::force(&BACKUP_SECONDS);
    for r in ["ok", "failed"] {
        BACKUPS.with_label_values(&[r]);
    }
    for c in ["per user", "per address", "on this server"] {
        WS_REFUSED.with_label_values(&[c]);
    }
    for r in [
        "subscribed",
        "rate_limited",
        "too_many_subscriptions",
        "forbidden",
        "invalid",
        "failed",
    ] {
        WS_SUBSCRIBES.with_label_values(&[r]);
    }
    LazyLock::force(&SLED_REOPENS);
    LazyLock::force(&TRANSFER_RUNS);
    LazyLock::force(&COMMIT_STALL_SECONDS);
    LazyLock::force(&WS_CONNECTIONS);
    LazyLock::force(&WS_DROPPED);
    LazyLock::force(&QR_RENDERS);
    for e in ["requested", "succeeded", "failed", "contradiction"] {
        PAYOUTS.with_label_values(&[e]);
    }
    for e in [
        "created",
        "claimed",
        "closed",
        "claim_paused",
        "breaker_tripped",
    ] {
        PACKETS.with_label_values(&[e]);
    }
    for r in [
        "applied",
        "duplicate",
        "rejected",
        "unknown_payout",
        "mismatch",
    ] {
        NOTIFICATIONS.with_label_values(&[r]);
    }
    LazyLock::force(&CODE_POOL_SIZE);
    LazyLock::force(&CODE_POOL_REFILLS);
    LazyLock::force(&CODE_POOL_GENERATED);
    for r in ["hit", "miss"] {
        CODE_POOL_TAKES.with_label_values(&[r]);
    }
    for r in ["forged", "cached", "hit", "miss"] {
        CODE_LOOKUPS.with_label_values(&[r]);
    }
    for r in ["counted", "dropped"] {
        CODE_SCANS.with_label_values(&[r]);
    }
    for e in ["created", "revoked", "forgotten"] {
        CODES.with_label_values(&[e]);
    }
    LazyLock::force(&JOIN_RISK);
    LazyLock::force(&JOINS_FLAGGED);
    LazyLock::force(&GROUPS_FLAGGED);
    LazyLock::force(&INVITE_SCANS);
    for k in ["pow", "captcha"] {
        for o in ["issued", "passed", "challenge_failed", "challenge_expired"] {
            CHALLENGES.with_label_values(&[k, o]);
        }
    }
    for s in ["challenge", "approval", "paused", "reset"] {
        INVITE_STAGES.with_label_values(&[s]);
    }
    LazyLock::force(&PAYOUTS_STUCK);
    LazyLock::force(&PROVIDER_CALLS);
    LazyLock::force(&NOTIFICATIONS);
}

/// jemalloc's figures, read at each scrape: what the program holds live
/// (`allocated`), the pages that back it (`active`), and what the allocator
/// keeps resident (`resident`, which includes dirty pages not yet returned).
pub static HEAP_BYTES: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    reg(prometheus::IntGaugeVec::new(
        Opts::new(
            "qrgate_heap_bytes",
            "The allocator's figures (jemalloc stats): allocated, active, resident, retained",
        ),
        &["kind"],
    )
    .unwrap_or_else(|_| unreachable_metric()))
});

/// Refresh [`HEAP_BYTES`] from jemalloc (a no-op where its stats fail,
/// e.g. a test binary on the system allocator still reads jemalloc's own,
/// nearly empty, arenas).
fn refresh_heap() {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    let figures = [
        ("allocated", stats::allocated::read()),
        ("active", stats::active::read()),
        ("resident", stats::resident::read()),
        ("retained", stats::retained::read()),
    ];
    for (kind, value) in figures {
        if let Ok(v) = value {
            HEAP_BYTES
                .with_label_values(&[kind])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
}

pub fn render() -> String {
    refresh_heap();
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut buf) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}
