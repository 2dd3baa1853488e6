//! Limits keyed by a user or a client network that must hold across a
//! cluster: a user's joins per minute, a user's red packet claims per
//! minute, and accounts created per network. Each key's limiter lives on
//! one node, the owner of the key's entity (`limit/…`, by the same
//! placement as groups); the other nodes ask it over a signed internal
//! request. On one node, and when the owner cannot be asked, the node
//! decides with its own limiter: a limit then holds per node, never less.
//!
//! A group's join rate and a packet's claim limits need none of this: they
//! live in the entity's actor, on its owner.

use actix_web::{post, web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use super::forward::{self, FromNode};
use super::AppState;
use crate::domain::ids::UserId;
use crate::error::{retry_after_secs, ApiError};
use crate::metrics;

/// A limit and the key it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.user_joins_per_minute`.
    UserJoins(UserId),
    /// `packets.claims_per_minute_per_user`.
    UserClaims(UserId),
    /// `limits.users_per_minute_per_ip`, per network (see [`network`]).
    NewUsers(IpAddr),
}

/// The network a client address counts under: an IPv4 address itself, an
/// IPv6 address's /64 (one subscriber's prefix: its addresses are free to
/// the subscriber).
pub fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

impl Limit {
    fn parts(&self) -> (&'static str, String) {
        match self {
            Limit::UserJoins(u) => ("joins", u.to_string()),
            Limit::UserClaims(u) => ("claims", u.to_string()),
            Limit::NewUsers(ip) => ("users", network(*ip).to_string()),
        }
    }

    fn parse(kind: &str, key: &str) -> Option<Limit> {
        match kind {
            "joins" => UserId::parse(key).ok().map(Limit::UserJoins),
            "claims" => UserId::parse(key).ok().map(Limit::UserClaims),
            "users" => key.parse().ok().map(Limit::NewUsers),
            _ => None,
        }
    }

    /// What a refusal names (the problem's detail).
    pub fn scope(&self) -> &'static str {
        match self {
            Limit::UserJoins(_) => "joins by this user",
            Limit::UserClaims(_) => "red packet claims by this user",
            Limit::NewUsers(_) => "users created from this network",
        }
    }

    /// Count one against this node's limiter: Ok, or the seconds to wait.
    pub fn check_here(&self, state: &AppState) -> Result<(), u64> {
        match self {
            Limit::UserJoins(u) => state.groups.shared().count_user_join(u),
            Limit::UserClaims(u) => state.wallets.shared().count_claim(u),
            Limit::NewUsers(ip) => state
                .ip_limiter
                .check_key(&network(*ip))
                .map_err(|nu| retry_after_secs(&nu, &state.groups.shared().clock)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Answer {
    /// Seconds to wait; absent when counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// The owner's answer when the limit's owner is another node: Ok, or the
/// seconds to wait. None when this node decides (one node, it owns the
/// limit, or the owner could not be asked).
pub async fn ask_owner(state: &AppState, limit: Limit) -> Option<Result<(), u64>> {
    let node = state.node.as_ref()?;
    let (kind, key) = limit.parts();
    let owner = node.owner_elsewhere(&format!("limit/{kind}/{key}"))?;
    let target = format!("/v1/internal/limits/{kind}/{key}");
    let answer = forward::ask(node, &owner.url, &target)
        .await
        .and_then(|(status, body)| {
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            serde_json::from_slice::<Answer>(&body).map_err(|e| e.to_string())
        });
    match answer {
        Ok(a) => {
            metrics::LIMIT_ASKS.with_label_values(&["asked"]).inc();
            Some(a.retry_after.map_or(Ok(()), Err))
        }
        Err(e) => {
            tracing::warn!(owner = %owner.id, error = %e, "a limit's owner could not be asked; deciding here");
            metrics::LIMIT_ASKS
                .with_label_values(&["unavailable"])
                .inc();
            None
        }
    }
}

/// Count one against `limit` wherever it is held; 429 `rate_limited` when
/// it is used up.
pub async fn take(state: &AppState, limit: Limit) -> Result<(), ApiError> {
    let r = match ask_owner(state, limit).await {
        Some(r) => r,
        None => limit.check_here(state),
    };
    r.map_err(|retry_after_secs| ApiError::RateLimited {
        scope: limit.scope(),
        retry_after_secs,
    })
}

/// Another node counts one against a limit this node holds. Only signed
/// requests from nodes of the cluster (403 `forward_refused` otherwise).
#[post("/v1/internal/limits/{kind}/{key}")]
pub async fn take_here(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    if req.extensions().get::<FromNode>().is_none() {
        return Err(ApiError::ForwardRefused);
    }
    let (kind, key) = path.into_inner();
    let limit = Limit::parse(&kind, &key)
        .ok_or_else(|| ApiError::validation(format!("no limit {kind}/{key}")))?;
    let retry_after = limit.check_here(&state).err();
    Ok(HttpResponse::Ok().json(Answer { retry_after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_counts_under_its_64_and_ipv4_under_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_eq!(network(a).to_string(), "2001:db8:1:2::");
        assert_ne!(network(a), network(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(network(v4), v4);
    }

    #[test]
    fn limits_travel_as_path_parts_and_back() {
        let u = UserId([7; 16]);
        for l in [
            Limit::UserJoins(u),
            Limit::UserClaims(u),
            Limit::NewUsers("2001:db8::".parse().unwrap()),
            Limit::NewUsers("192.0.2.1".parse().unwrap()),
        ] {
            let (kind, key) = l.parts();
            assert_eq!(Limit::parse(kind, &key), Some(l));
        }
        assert_eq!(Limit::parse("joins", "nope"), None);
        assert_eq!(Limit::parse("other", "u_x"), None);
    }
}
