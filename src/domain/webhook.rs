//! Webhooks to the operator's backend, as rules without I/O: which events
//! an endpoint takes, what a delivery carries, the order deliveries keep
//! and when a failed one is tried again.
//!
//! Deliveries follow the Standard Webhooks specification: the body is
//! `{"type","timestamp","data"}`, and `webhook-id` is the event's outbox
//! seq (`msg_<seq>`), the same for every endpoint, every attempt and every
//! node, so a receiver dedupes on it.

use serde::{Deserialize, Serialize};

use super::events::Event;

/// Every event type an endpoint may name in `events` (`"*"`: all).
pub const EVENT_TYPES: &[&str] = &[
    "member_joined",
    "join_requested",
    "join_approved",
    "join_rejected",
    "join_request_expired",
    "join_request_dropped",
    "invite_revoked",
    "member_blocked",
    "member_removed",
    "invite_stage_changed",
    "group_flagged",
    "group_banned",
    "group_unbanned",
    "link_changed",
    "payout_updated",
    "packet_claimed",
    "packet_empty",
    "packet_refunded",
    "packet_paused",
    "large_transaction",
    "payout_stuck",
    "notification_forged",
];

/// Whether an endpoint listing `events` takes an event of type `ty`.
pub fn wants(events: &[String], ty: &str) -> bool {
    events.iter().any(|e| e == "*" || e == ty)
}

/// A check of an endpoint's `events` list: each a known type or `"*"`.
pub fn check_events(events: &[String]) -> Result<(), String> {
    if events.is_empty() {
        return Err("lists no events (\"*\" takes them all)".into());
    }
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(format!(
                "names `{e}`, which is not an event type (known: {})",
                EVENT_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// An endpoint id: 1 to 32 of `a-z0-9_-` (it appears in paths and keys).
pub fn valid_endpoint_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The `webhook-id` of the event with outbox seq `seq`.
pub fn message_id(seq: u64) -> String {
    format!("msg_{seq}")
}

/// A delivery's id in the admin routes: the endpoint and the event's seq.
pub fn delivery_id(endpoint: &str, seq: u64) -> String {
    format!("{endpoint}.{seq}")
}

pub fn parse_delivery_id(s: &str) -> Option<(&str, u64)> {
    let (ep, seq) = s.rsplit_once('.')?;
    valid_endpoint_id(ep).then_some(())?;
    Some((ep, seq.parse().ok()?))
}

/// What an event is about, for the order of deliveries: deliveries of one
/// entity to one endpoint go in the order their events happened; those of
/// different entities do not wait for each other.
pub fn entity_of(e: &Event) -> String {
    match (e.group, e.users.first()) {
        (Some(g), _) => format!("group/{g}"),
        (None, Some(u)) => format!("user/{u}"),
        (None, None) => "operator".into(),
    }
}

/// The event's `type` name and the body a receiver gets:
/// `{"type","timestamp","data"}`, `data` being the event's fields and, for
/// events addressed to users, `recipient_ids`.
pub fn payload(e: &Event) -> Result<(String, String), serde_json::Error> {
    let mut data = serde_json::to_value(&e.kind)?;
    let ty = match data.as_object_mut().and_then(|m| m.remove("type")) {
        Some(serde_json::Value::String(t)) => t,
        _ => String::new(),
    };
    if let Some(m) = data.as_object_mut() {
        if !e.users.is_empty() {
            m.insert("recipient_ids".into(), serde_json::to_value(&e.users)?);
        }
        if let Some(g) = e.group {
            m.entry("group_id").or_insert(serde_json::to_value(g)?);
        }
    }
    let body = serde_json::json!({
        "type": ty,
        "timestamp": crate::clock::rfc3339(e.at),
        "data": data,
    });
    Ok((ty, serde_json::to_string(&body)?))
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its first attempt or its next one.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed for the retry window.
    Failed,
    /// Dropped at the queue's bound before it was delivered.
    Dropped,
}

impl State {
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "delivered" => State::Delivered,
            "failed" => State::Failed,
            "dropped" => State::Dropped,
            _ => return None,
        })
    }
}

/// What one attempt's answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// 410 Gone: the receiver asks for no more; the endpoint is disabled
    /// until an operator enables it again (the delivery stays pending).
    Gone,
    /// Anything else (another status, a timeout, no connection): tried again.
    Retry,
}

pub fn outcome(status: Option<u16>) -> Outcome {
    match status {
        Some(s) if (200..300).contains(&s) => Outcome::Delivered,
        Some(410) => Outcome::Gone,
        _ => Outcome::Retry,
    }
}

/// First retry after this many seconds; each next one waits twice as
/// long, up to [`MAX_BACKOFF_SECS`].
pub const FIRST_BACKOFF_SECS: i64 = 5;
pub const MAX_BACKOFF_SECS: i64 = 2 * 3600;

/// When to try again after `attempts` failed attempts of a delivery made
/// at `created`, at `now`: exponential backoff with jitter (`jitter` in
/// 0..1 takes up to a fifth off the wait, so retries of many deliveries do
/// not arrive together), or `None` once the next attempt would fall past
/// the retry window: the delivery failed.
pub fn next_attempt(
    created: i64,
    attempts: u32,
    now: i64,
    window: i64,
    jitter: f64,
) -> Option<i64> {
    let exp = attempts.saturating_sub(1).min(20);
    let wait = (FIRST_BACKOFF_SECS << exp).min(MAX_BACKOFF_SECS);
    let wait = wait - (wait as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as i64;
    let at = now + wait.max(1);
    (at <= created + window).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventKind;
    use crate::domain::ids::{GroupId, PacketId, UserId};

    #[test]
    fn an_endpoint_takes_what_it_lists() {
        let all = vec!["*".to_string()];
        let some = vec!["join_approved".to_string(), "payout_updated".to_string()];
        assert!(wants(&all, "member_joined"));
        assert!(wants(&some, "payout_updated"));
        assert!(!wants(&some, "member_joined"));
        assert!(check_events(&all).is_ok());
        assert!(check_events(&some).is_ok());
        assert!(check_events(&[]).is_err());
        assert!(check_events(&["join_aproved".to_string()]).is_err());
        assert!(valid_endpoint_id("crm-1"));
        assert!(!valid_endpoint_id("CRM"));
        assert!(!valid_endpoint_id("a.b"));
        assert!(!valid_endpoint_id(""));
        assert_eq!(
            parse_delivery_id(&delivery_id("crm_1", 42)),
            Some(("crm_1", 42))
        );
        assert_eq!(parse_delivery_id("crm.x"), None);
    }

    #[test]
    fn every_event_type_is_known_and_the_body_carries_type_timestamp_and_data() {
        let (g, u) = (GroupId([1; 16]), UserId([2; 16]));
        let p = PacketId([3; 16]);
        let events = [
            Event::for_group(g, vec![u], 0, EventKind::GroupUnbanned { group_id: g }),
            Event::for_users(
                vec![u],
                86_400,
                EventKind::PacketRefunded {
                    packet_id: p,
                    amount: 5,
                },
            ),
            Event::for_users(
                vec![],
                0,
                EventKind::LargeTransaction {
                    user_id: u,
                    kind: "single_transfer".into(),
                    amount: 5,
                },
            ),
        ];
        for e in &events {
            let (ty, body) = payload(e).expect("renders");
            assert!(EVENT_TYPES.contains(&ty.as_str()), "{ty}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["type"], ty.as_str());
            assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
            assert!(v["data"].get("type").is_none());
        }
        let v: serde_json::Value =
            serde_json::from_str(&payload(&events[1]).expect("renders").1).expect("json");
        assert_eq!(v["timestamp"], "1970-01-02T00:00:00Z");
        assert_eq!(v["data"]["amount"], 5);
        assert_eq!(
            v["data"]["recipient_ids"][0],
            serde_json::to_value(u).expect("id")
        );
        assert_eq!(entity_of(&events[0]), format!("group/{g}"));
        assert_eq!(entity_of(&events[1]), format!("user/{u}"));
        assert_eq!(entity_of(&events[2]), "operator");
    }

    #[test]
    fn only_2xx_delivers_and_410_disables() {
        assert_eq!(outcome(Some(200)), Outcome::Delivered);
        assert_eq!(outcome(Some(204)), Outcome::Delivered);
        assert_eq!(outcome(Some(410)), Outcome::Gone);
        for s in [Some(301), Some(404), Some(500), Some(429), None] {
            assert_eq!(outcome(s), Outcome::Retry, "{s:?}");
        }
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_within_the_window() {
        let day = 86_400;
        assert_eq!(next_attempt(0, 1, 0, day, 0.0), Some(5));
        assert_eq!(next_attempt(0, 2, 0, day, 0.0), Some(10));
        assert_eq!(next_attempt(0, 3, 100, day, 0.0), Some(120));
        // Jitter takes at most a fifth off.
        assert_eq!(next_attempt(0, 3, 100, day, 1.0), Some(116));
        // Capped at two hours.
        assert_eq!(next_attempt(0, 30, 0, day, 0.0), Some(MAX_BACKOFF_SECS));
        // Past the window: failed.
        assert_eq!(next_attempt(0, 30, day - 60, day, 0.0), None);
        // The schedule reaches 24 h in a bounded number of attempts.
        let (mut now, mut n) = (0, 1);
        while let Some(at) = next_attempt(0, n, now, day, 0.5) {
            now = at;
            n += 1;
        }
        assert!((15..=30).contains(&n), "{n} attempts");
    }
}
