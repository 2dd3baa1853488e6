//! Cluster mode: a request for a group (its routes, and joins and
//! invitation pages by the group their token names), a red packet or a
//! scan code that another live node owns (`domain::placement`) is served
//! by that node, whose actor holds the entity in memory, instead of two
//! nodes taking turns writing it. The forward is one hop over internal HTTP, signed with the cluster
//! secret (`domain::forward`); the owner serves a signed forward itself
//! whoever it thinks owns the entity, and refuses a forward whose signature
//! does not hold (403 `forward_refused`).
//!
//! When the owner cannot be reached before the request was sent, this node
//! leaves it out of placement for a while (every node does alike) and
//! sends the request to the next owner, or serves it when that is itself
//! (the log's compare-and-set keeps one writer per entity meanwhile); when
//! the owner took it and did not answer, it may have applied it, so the
//! client gets 503 `node_unavailable` rather than a second attempt here.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::time::Duration;

use super::AppState;
use crate::domain::forward::{self, Forward};
use crate::domain::ids::{GroupId, PacketId};
use crate::error::ApiError;
use crate::metrics;
use crate::node::Node;

const FROM: &str = "x-qrgate-forward-from";
const AT: &str = "x-qrgate-forward-at";
const HOPS: &str = "x-qrgate-forward-hops";
const SIGNATURE: &str = "x-qrgate-forward-signature";
/// The log position the forwarding node had applied: the owner serves the
/// forward once it has applied as much, so a client's own writes through
/// one node (its account, its session) are there on the owner too.
const POSITION: &str = "x-qrgate-forward-position";
/// The address the forwarding node got the request from.
const CLIENT_IP: &str = "x-qrgate-forward-client-ip";
/// The request headers the owner acts on: forwarded, and signed.
const SIGNED: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "accept-language",
    "idempotency-key",
    "x-device-id",
    "cookie",
    "user-agent",
    POSITION,
    CLIENT_IP,
];
/// How long a forward waits for its owner to apply the sender's position.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Response headers that belong to one connection, not to the answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];
/// A forward sent longer ago than this (by the sender's clock) is refused.
const MAX_SKEW_MS: i64 = 30_000;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies buffered for a forward: the handlers enforce their own limits.
const MAX_BODY: usize = 4 << 20;

thread_local! {
    /// awc's client is per thread; no default headers, so that what the
    /// owner receives is what was signed.
    static CLIENT: awc::Client = awc::Client::builder()
        .no_default_headers()
        .timeout(TIMEOUT)
        .finish();
}

/// Marks a request answered by the node it was forwarded to (the request
/// metrics label it `forwarded`: it matched no route here).
pub struct Forwarded;

/// The client's address of a request forwarded by another node.
struct ClientIp(std::net::IpAddr);

/// Marks a request another node sent, whose signature held: the internal
/// routes serve only these.
pub struct FromNode;

/// The address a request came from: the client's, also when another node
/// forwarded it or a trusted reverse proxy passed it on
/// (`domain::network::client_address`).
pub fn client_ip(req: &actix_web::HttpRequest) -> Option<std::net::IpAddr> {
    if let Some(ip) = req.extensions().get::<ClientIp>() {
        return Some(ip.0);
    }
    let peer = req.peer_addr()?.ip();
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Some(peer);
    };
    if state.trusted_proxies.is_empty() {
        return Some(peer);
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(crate::domain::network::client_address(
        peer,
        &forwarded,
        &state.trusted_proxies,
    ))
}

/// The middleware (`middleware::from_fn`).
pub async fn route(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some((state, node)) = state.and_then(|s| s.node.clone().map(|n| (s, n))) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if [FROM, AT, HOPS, SIGNATURE]
        .iter()
        .any(|h| req.headers().contains_key(*h))
    {
        let body = take_body(&mut req).await?;
        if let Err(e) = check(&node, &req, &body) {
            tracing::warn!(error = %e, path = %req.path(), "a forwarded request refused");
            metrics::FORWARDS.with_label_values(&["refused"]).inc();
            return Ok(req.into_response(ApiError::ForwardRefused.error_response()));
        }
        metrics::FORWARDS.with_label_values(&["served"]).inc();
        req.extensions_mut().insert(FromNode);
        let position = req
            .headers()
            .get(POSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(p) = position {
            if let Err(e) = state.storage.reach(p, CATCH_UP).await {
                // The log cannot bring this node up to the sender (no
                // quorum, or it lags): a read is served from what this node
                // applied, as every read is then; a write is refused.
                if !req.method().is_safe() {
                    return Ok(req.into_response(ApiError::from(e).error_response()));
                }
                tracing::warn!(error = %e, path = %req.path(), "serving a forwarded read from what this node applied");
            }
        }
        let ip = req
            .headers()
            .get(CLIENT_IP)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let Some(ip) = ip {
            req.extensions_mut().insert(ClientIp(ip));
        }
        req.set_payload(Payload::from(body));
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let code_key = state.keys.code_tag_key();
    let (entity, body) = match entity_of_path(req.path(), &code_key) {
        Some(e) => (Some(e), None),
        // An invitation's landing page counts the scan in its group's actor.
        None if req.path().starts_with("/j/") => {
            let token = req.path().trim_start_matches("/j/").to_string();
            (token_entity(&state, &token).await, None)
        }
        // A user's new scan codes are counted against the user's daily
        // quota by the node that owns the user's quota.
        None if req.path() == "/v1/codes" && req.method() == actix_web::http::Method::POST => (
            super::auth::bearer_user(&state, req.request()).map(|u| format!("quota/codes/{u}")),
            None,
        ),
        // An answered challenge completes a join or a claim: its group's or
        // its packet's owner takes it.
        None if req.path().starts_with("/v1/challenges/") => {
            let id = req.path().trim_start_matches("/v1/challenges/");
            (challenge_entity(state.keys.challenge_key(), id), None)
        }
        None if req.path() == "/v1/join" && req.method() == actix_web::http::Method::POST => {
            let body = take_body(&mut req).await?;
            (join_entity(&state, &body).await, Some(body))
        }
        None => (None, None),
    };
    let Some(entity) = entity else {
        if let Some(body) = body {
            req.set_payload(Payload::from(body));
        }
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let mut owner = node.owner_elsewhere(&entity);
    let body = match (body, owner.is_some()) {
        (Some(b), _) => b,
        (None, true) => take_body(&mut req).await?,
        (None, false) => return Ok(next.call(req).await?.map_into_boxed_body()),
    };
    // The owner, or, when it cannot be reached, the next owner: every node
    // leaves an unreachable node out of placement alike, so the entity
    // keeps one writer before the dead node's heartbeat expires.
    for _ in 0..2 {
        let Some(to) = owner.take() else {
            break;
        };
        req.extensions_mut().insert(Forwarded);
        let sent = send(&node, &to.url, &req, body.clone(), state.storage.position()).await;
        match sent {
            Ok(resp) => {
                metrics::FORWARDS.with_label_values(&["sent"]).inc();
                return Ok(req.into_response(resp));
            }
            Err(Failed::NotSent(e)) => {
                tracing::warn!(owner = %to.id, error = %e, "the owner is unreachable; placing without it");
                metrics::FORWARDS.with_label_values(&["not_sent"]).inc();
                req.extensions_mut().remove::<Forwarded>();
                node.suspect(&to.id);
                owner = node.owner_elsewhere(&entity);
            }
            Err(Failed::Lost(e)) => {
                tracing::warn!(owner = %to.id, error = %e, "the owner took a request and did not answer");
                metrics::FORWARDS.with_label_values(&["lost"]).inc();
                return Ok(req.into_response(ApiError::NodeUnavailable.error_response()));
            }
        }
    }
    req.set_payload(Payload::from(body));
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The entity a request's path names: groups and their sub-resources
/// (admin routes included), red packets, and scan codes (their landing page
/// counts scans in the owner's memory; a code whose tag does not check is
/// refused where it arrives).
fn entity_of_path(path: &str, code_key: &[u8; 32]) -> Option<String> {
    let first = |rest: &str| rest.split('/').next().map(str::to_string);
    if let Some(rest) = path
        .strip_prefix("/s/")
        .or_else(|| path.strip_prefix("/v1/codes/"))
    {
        let text = first(rest)?;
        let id = crate::domain::code::parse(code_key, &text).ok()?;
        return Some(format!("code/{}", hex(id.as_bytes())));
    }
    if let Some(rest) = path
        .strip_prefix("/v1/groups/")
        .or_else(|| path.strip_prefix("/v1/admin/groups/"))
    {
        let id = first(rest)?;
        GroupId::parse(&id).ok()?;
        return Some(format!("group/{id}"));
    }
    if let Some(rest) = path.strip_prefix("/v1/packets/") {
        let id = first(rest)?;
        PacketId::parse(&id).ok()?;
        return Some(format!("packet/{id}"));
    }
    None
}

/// The group or packet a challenge's answer writes to.
fn challenge_entity(key: &[u8; 32], id: &str) -> Option<String> {
    use crate::domain::challenge::{Challenge, Subject};
    let (c, _) = Challenge::open(id, key).ok()?;
    match c.subject {
        Subject::Join { group, .. } => Some(format!("group/{group}")),
        Subject::Claim { packet, .. } => Some(format!("packet/{packet}")),
        Subject::NewAccount => None,
    }
}

/// A join names its group inside the invitation token.
async fn join_entity(state: &AppState, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Join {
        token: String,
    }
    let j: Join = serde_json::from_slice(body).ok()?;
    token_entity(state, &j.token).await
}

/// The group an invitation token names.
async fn token_entity(state: &AppState, token: &str) -> Option<String> {
    let parsed = crate::domain::token::parse(token).ok()?;
    let g = state.groups.group_of_token(&parsed).await.ok().flatten()?;
    Some(format!("group/{g}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn take_body(req: &mut ServiceRequest) -> Result<Bytes, actix_web::Error> {
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::PayloadTooLarge(MAX_BODY).into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The signed headers `req` carries, in [`SIGNED`] order.
fn signed_headers(req: &ServiceRequest) -> Vec<(&'static str, Vec<u8>)> {
    SIGNED
        .iter()
        .filter_map(|h| req.headers().get(*h).map(|v| (*h, v.as_bytes().to_vec())))
        .collect()
}

fn target(req: &ServiceRequest) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| req.path().to_string(), |p| p.as_str().to_string())
}

/// Whether a forward's signature holds.
fn check(node: &Node, req: &ServiceRequest, body: &[u8]) -> Result<(), String> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no {h} header"))
    };
    let from = header(FROM)?;
    let sent_ms: i64 = header(AT)?.parse().map_err(|_| format!("bad {AT}"))?;
    let hops: u8 = header(HOPS)?.parse().map_err(|_| format!("bad {HOPS}"))?;
    let signature = header(SIGNATURE)?;
    let headers = signed_headers(req);
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let method = req.method().as_str().to_string();
    let target = target(req);
    let f = Forward {
        method: &method,
        target: &target,
        headers: &headers,
        body,
        from_node: from,
        sent_ms,
        hops,
    };
    forward::verify(
        &node.forward_key,
        &f,
        signature,
        crate::clock::now_ms(),
        MAX_SKEW_MS,
    )
    .map_err(|e| e.to_string())
}

enum Failed {
    /// The request never reached the owner.
    NotSent(String),
    /// The owner may have it; its answer is lost.
    Lost(String),
}

/// Send `req` to the owner at `base` and return its answer.
async fn send(
    node: &Node,
    base: &str,
    req: &ServiceRequest,
    body: Bytes,
    position: u64,
) -> Result<HttpResponse, Failed> {
    let mut headers: Vec<_> = signed_headers(req)
        .into_iter()
        .filter(|(h, _)| *h != POSITION && *h != CLIENT_IP)
        .collect();
    headers.push((POSITION, position.to_string().into_bytes()));
    if let Some(ip) = client_ip(req.request()) {
        headers.push((CLIENT_IP, ip.to_string().into_bytes()));
    }
    let mut resp = deliver(
        node,
        base,
        req.method().clone(),
        &target(req),
        &headers,
        body,
    )
    .await?;
    let bytes = resp
        .body()
        .limit(32 << 20)
        .await
        .map_err(|e| Failed::Lost(e.to_string()))?;
    let mut answer = HttpResponse::build(resp.status());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            answer.append_header((name.clone(), value.clone()));
        }
    }
    Ok(answer.body(bytes))
}

/// Ask another node's internal route (`POST target`, no body, signed as a
/// forward): its status and body.
pub async fn ask(
    node: &Node,
    base: &str,
    target: &str,
) -> Result<(actix_web::http::StatusCode, Bytes), String> {
    let method = actix_web::http::Method::POST;
    let mut resp = deliver(node, base, method, target, &[], Bytes::new())
        .await
        .map_err(|e| match e {
            Failed::NotSent(e) | Failed::Lost(e) => e,
        })?;
    let body = resp
        .body()
        .limit(64 << 10)
        .await
        .map_err(|e| e.to_string())?;
    Ok((resp.status(), body))
}

/// Send a request to the node at `base`, signed with `headers` (the
/// owner's [`check`] verifies it).
async fn deliver(
    node: &Node,
    base: &str,
    method: actix_web::http::Method,
    target: &str,
    headers: &[(&'static str, Vec<u8>)],
    body: Bytes,
) -> Result<
    awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>>>,
    Failed,
> {
    let sent_ms = crate::clock::now_ms();
    let signature = {
        let h: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        forward::sign(
            &node.forward_key,
            &Forward {
                method: method.as_str(),
                target,
                headers: &h,
                body: &body,
                from_node: &node.id,
                sent_ms,
                hops: 1,
            },
        )
    };
    let url = format!("{}{target}", base.trim_end_matches('/'));
    let mut out = CLIENT.with(|c| c.request(method, url));
    for (name, value) in headers {
        out = out.insert_header((*name, value.as_slice()));
    }
    out = out
        .insert_header((FROM, node.id.as_str()))
        .insert_header((AT, sent_ms.to_string()))
        .insert_header((HOPS, "1"))
        .insert_header((SIGNATURE, signature));
    out.send_body(body).await.map_err(|e| match e {
        // awc also reports a connection that closed after the request was
        // sent, before the answer (the owner died meanwhile), as
        // `Disconnected`: the owner may have applied it.
        awc::error::SendRequestError::Connect(awc::error::ConnectError::Disconnected) => {
            Failed::Lost(e.to_string())
        }
        awc::error::SendRequestError::Connect(e) => Failed::NotSent(e.to_string()),
        e => Failed::Lost(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::entity_of_path as of;

    const KEY: [u8; 32] = [3; 32];

    fn entity_of_path(path: &str) -> Option<String> {
        of(path, &KEY)
    }

    #[test]
    fn codes_are_routed_when_their_tag_checks() {
        let id = crate::domain::code::CodeId([7; 12]);
        let text = crate::domain::code::encode(&KEY, &id);
        let want = Some(format!("code/{}", "07".repeat(12)));
        assert_eq!(entity_of_path(&format!("/s/{text}")), want);
        assert_eq!(entity_of_path(&format!("/v1/codes/{text}")), want);
        let forged = crate::domain::code::encode(&[4; 32], &id);
        assert_eq!(entity_of_path(&format!("/s/{forged}")), None);
    }

    #[test]
    fn groups_and_packets_are_routed_by_their_path() {
        let g = "g_AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            entity_of_path(&format!("/v1/groups/{g}/members")),
            Some(format!("group/{g}"))
        );
        assert_eq!(
            entity_of_path(&format!("/v1/admin/groups/{g}/ban")),
            Some(format!("group/{g}"))
        );
        assert_eq!(entity_of_path("/v1/groups"), None);
        assert_eq!(entity_of_path("/v1/groups/not-an-id"), None);
        let p = "rp_AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            entity_of_path(&format!("/v1/packets/{p}/claim")),
            Some(format!("packet/{p}"))
        );
        assert_eq!(entity_of_path("/v1/wallet"), None);
    }

    #[test]
    fn a_challenge_answer_goes_to_what_it_completes() {
        use crate::domain::challenge::{Challenge, Subject};
        use crate::domain::ids::{GroupId, InviteId, PacketId, UserId};
        use crate::domain::risk::ChallengeKind;
        let of = |subject: Subject| {
            let c = Challenge {
                kind: ChallengeKind::Pow,
                bits: 8,
                subject,
                user: UserId([1; 16]),
                issued_at: 0,
                expires_at: 10,
                salt: [0; 8],
                score: 0,
                reasons: 0,
            };
            super::challenge_entity(&KEY, &c.seal(&KEY).0)
        };
        let (g, p) = (GroupId([2; 16]), PacketId([3; 16]));
        let join = Subject::Join {
            group: g,
            invite: InviteId([4; 16]),
            epoch: 0,
        };
        assert_eq!(of(join), Some(format!("group/{g}")));
        let claim = Subject::Claim {
            packet: p,
            at: None,
            referrer: None,
        };
        assert_eq!(of(claim), Some(format!("packet/{p}")));
        assert_eq!(of(Subject::NewAccount), None);
        assert_eq!(super::challenge_entity(&KEY, "ch_forged"), None);
    }
}
