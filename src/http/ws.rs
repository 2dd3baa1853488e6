//! `GET /v1/ws?ticket=<ticket>` (from `POST /v1/ws/ticket`; or `?token=<session
//! token>`, which proxies may log): a user's own events, plus the events of
//! groups the user subscribes to (members only) with `{"subscribe":"group:<id>"}`.
//! Every event frame names its feed (`user` or `group:<id>`) and its `seq`
//! there; `&after=SEQ` (and `"after"` in a subscribe frame) first replays
//! what the feed holds after SEQ, then goes on live, with no gap and no
//! duplicate across the switch.
//! A connection whose queue fills up is closed with code 4008 (slow consumer);
//! one whose session ends (logout, revocation), with 4001.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde::Serialize;
use std::future::Future as _;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::{auth, AppState};
use crate::domain::feed::Feed;
use crate::domain::ids::{random_bytes, GroupId, UserId};
use crate::error::ApiError;
use crate::feeds::{frame, ReadError, MAX_LIMIT};
use crate::groups::actor::IsMember;
use crate::groups::Caller;
use crate::push::{CLOSE_SESSION_ENDED, CLOSE_SLOW_CONSUMER};

#[derive(Deserialize, IntoParams)]
pub struct WsQuery {
    /// A ticket from `POST /v1/ws/ticket`: single use, 60 s.
    ticket: Option<String>,
    /// The user's session token (browsers cannot set headers on WebSocket
    /// requests). Works, but URLs end up in proxy logs: prefer a ticket.
    token: Option<String>,
    /// Replay the user's events after this `seq` first (the last one the
    /// client has). Older than the feed holds: 410 `events_expired`.
    after: Option<u64>,
}

/// Who may open one WebSocket, until when.
#[derive(Clone, Copy)]
pub struct Ticket {
    user: UserId,
    session: Option<[u8; 32]>,
    until: Instant,
}

const TICKET_PREFIX: &str = "qrt_";
const TICKET_TTL: Duration = Duration::from_secs(60);

#[derive(Serialize, ToSchema)]
pub struct IssuedTicket {
    /// Pass as `GET /v1/ws?ticket=...`; good for one connection.
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// A single-use ticket to open the caller's WebSocket within 60 s, so that
/// the session token never travels in a URL.
#[utoipa::path(
    responses((status = 201, body = IssuedTicket), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])), tag = "events"
)]
#[post("/v1/ws/ticket")]
pub async fn ticket(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: auth::User,
) -> Result<HttpResponse, ApiError> {
    let ticket = format!(
        "{TICKET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    );
    state.ws_tickets.insert(
        *blake3::hash(ticket.as_bytes()).as_bytes(),
        Ticket {
            user: user.0,
            session: auth::bearer_session(&req),
            until: Instant::now() + TICKET_TTL,
        },
    );
    Ok(HttpResponse::Created().json(IssuedTicket {
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    }))
}

/// The user (and session) a ticket or token opens a socket for.
fn caller(state: &AppState, q: &WsQuery) -> Result<(UserId, Option<[u8; 32]>), ApiError> {
    if let Some(t) = q.ticket.as_deref() {
        let hash = *blake3::hash(t.as_bytes()).as_bytes();
        // Removed as it is used: a ticket opens one socket.
        let (_, t) = state
            .ws_tickets
            .remove(&hash)
            .ok_or(ApiError::Unauthorized)?;
        if t.until <= Instant::now() {
            return Err(ApiError::Unauthorized);
        }
        // Its session may have ended since.
        if let Some(s) = &t.session {
            if state.accounts.session_user(s)? != t.user {
                return Err(ApiError::Unauthorized);
            }
        }
        return Ok((t.user, t.session));
    }
    let token = q.token.as_deref().ok_or(ApiError::Unauthorized)?;
    match auth::resolve(state, token)? {
        Caller::User(u) => Ok((
            u,
            token
                .starts_with(crate::accounts::SESSION_PREFIX)
                .then(|| crate::accounts::token_hash(token)),
        )),
        Caller::Admin => Err(ApiError::forbidden(
            "WebSocket events belong to users; use a session token",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMsg {
    subscribe: String,
    /// Replay the group's events after this `seq` first.
    after: Option<u64>,
}

/// The answer to a client frame, and the feed to replay after it.
struct Reply {
    text: String,
    replay: Option<(Feed, u64)>,
}

const PING_EVERY: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FRAME: usize = 4 * 1024;

/// WebSocket of events. Messages are JSON objects with a `type`.
#[utoipa::path(
    params(WsQuery),
    responses(
        (status = 101, description = "switching protocols"),
        (status = 400, body = crate::error::Problem, description = "not a WebSocket upgrade request"),
        (status = 401, body = crate::error::Problem),
        (status = 410, body = crate::error::Problem, description = "`events_expired`: the user's events after `after` are no longer held; `oldest_seq` says where the feed starts"),
        (status = 429, body = crate::error::Problem, description = "`too_many_connections`: the user, the address or the server is at its cap")
    ),
    tag = "events"
)]
#[get("/v1/ws")]
pub async fn ws(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let (user, hash) = caller(&state, &q)?;
    let feed = Feed::User(user);
    let head = state
        .feeds
        .head(&state.storage, feed)
        .map_err(ApiError::from)?;
    if let Some(after) = q.after {
        head.start(Some(after))
            .map_err(|x| ApiError::EventsExpired {
                oldest_seq: x.oldest_seq,
            })?;
    }
    // The caps hold before the upgrade: a refused client gets a problem.
    let ip = super::forward::client_ip(&req);
    let sub = state.hub.connect(user, hash, ip).map_err(|full| {
        crate::metrics::WS_REFUSED
            .with_label_values(&[full.scope()])
            .inc();
        ApiError::TooManyConnections(full.scope())
    })?;
    let (resp, session, stream) = match actix_ws::handle(&req, body) {
        Ok(upgraded) => upgraded,
        Err(e) => {
            state.hub.disconnect(sub.id);
            return Err(ApiError::validation(format!(
                "this route is a WebSocket: send an upgrade request ({e})"
            ))
            .into());
        }
    };
    let stream = stream.max_frame_size(MAX_FRAME);
    let replay = q.after.map(|a| (feed, a));
    actix_web::rt::spawn(run(state, user, head.last, replay, sub, session, stream));
    Ok(resp)
}

/// Send what `feed` holds after `after`, page by page; the last seq sent
/// (or `after`). An `after` the feed no longer holds gets an
/// `events_expired` error frame. `Err` when the socket is gone.
async fn replay(
    state: &AppState,
    session: &mut actix_ws::Session,
    feed: Feed,
    mut after: u64,
) -> Result<u64, ()> {
    loop {
        match state
            .feeds
            .read(&state.storage, feed, Some(after), MAX_LIMIT)
        {
            Ok(page) if page.events.is_empty() => return Ok(after),
            Ok(page) => {
                for (seq, s) in &page.events {
                    session.text(frame(feed, *seq, s)).await.map_err(|_| ())?;
                    after = *seq;
                }
            }
            Err(ReadError::Expired(x)) => {
                let text = serde_json::json!({
                    "type": "error",
                    "code": "events_expired",
                    "feed": feed.to_string(),
                    "oldest_seq": x.oldest_seq,
                    "detail": "the events after the given seq are no longer kept",
                });
                session.text(text.to_string()).await.map_err(|_| ())?;
                return Ok(after);
            }
            Err(ReadError::Storage(e)) => {
                tracing::warn!(error = %e, "replaying a feed failed");
                let e = ApiError::from(e);
                let text = serde_json::json!({"type": "error", "code": e.code(), "feed": feed.to_string(), "detail": e.to_string()});
                session.text(text.to_string()).await.map_err(|_| ())?;
                return Ok(after);
            }
        }
    }
}

async fn run(
    state: web::Data<AppState>,
    user: UserId,
    last_seq: u64,
    first: Option<(Feed, u64)>,
    mut sub: crate::push::Subscription,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    // Subscribe frames per connection: each costs a question to the group.
    let per_minute = std::num::NonZeroU32::new(state.config.websocket.subscribes_per_minute)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let subscribes = governor::RateLimiter::direct(governor::Quota::per_minute(per_minute));
    let hello =
        serde_json::json!({"type": "hello", "user_id": user, "last_seq": last_seq}).to_string();
    let mut close: Option<CloseReason> = None;
    // Per feed, the last seq replayed: live frames up to it were sent
    // already (they queued while the replay ran).
    let mut marks: std::collections::HashMap<Feed, u64> = std::collections::HashMap::new();
    let mut ok = session.text(hello).await.is_ok();
    if let (true, Some((feed, after))) = (ok, first) {
        match replay(&state, &mut session, feed, after).await {
            Ok(last) => {
                marks.insert(feed, last);
            }
            Err(()) => ok = false,
        }
    }
    if ok {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                ev = sub.rx.recv() => match ev {
                    Some(f) => {
                        if marks.get(&f.feed).is_some_and(|m| f.seq <= *m) {
                            continue;
                        }
                        let text = f.text;
                        // A client that stops reading blocks the send once the
                        // socket and actix-ws's small buffer are full: give up
                        // on it rather than hold the connection forever. The
                        // send almost always completes at once: only one that
                        // does not is given a timer (one per event and
                        // connection costs 10k timers per event at 10k
                        // subscribers).
                        let mut send = std::pin::pin!(session.text(text));
                        let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
                        let sent = match first {
                            Poll::Ready(r) => Ok(r),
                            Poll::Pending => tokio::time::timeout(SEND_TIMEOUT, send).await,
                        };
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break,
                            Err(_) => {
                                crate::metrics::WS_DROPPED.inc();
                                break;
                            }
                        }
                    }
                    None => {
                        if sub.ended.load(Ordering::SeqCst) {
                            close = Some(CloseReason {
                                code: CloseCode::Other(CLOSE_SESSION_ENDED),
                                description: Some("session ended".into()),
                            });
                        } else if sub.slow.load(Ordering::SeqCst) {
                            close = Some(CloseReason {
                                code: CloseCode::Other(CLOSE_SLOW_CONSUMER),
                                description: Some("slow consumer: too many undelivered events".into()),
                            });
                        }
                        break;
                    }
                },
                msg = stream.recv() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let reply = if subscribes.check().is_err() {
                            crate::metrics::WS_SUBSCRIBES.with_label_values(&["rate_limited"]).inc();
                            Reply {
                                text: serde_json::json!({
                                    "type": "error",
                                    "code": "rate_limited",
                                    "detail": format!("at most {per_minute} subscribe frames a minute on one connection"),
                                })
                                .to_string(),
                                replay: None,
                            }
                        } else {
                            handle_client(&state, user, sub.id, &t).await
                        };
                        if session.text(reply.text).await.is_err() {
                            break;
                        }
                        if let Some((feed, after)) = reply.replay {
                            match replay(&state, &mut session, feed, after).await {
                                Ok(last) => {
                                    marks.insert(feed, last);
                                }
                                Err(()) => break,
                            }
                        }
                    }
                    Some(Ok(Message::Ping(b))) => {
                        if session.pong(&b).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        close = Some(CloseReason {
                            code: CloseCode::Protocol,
                            description: Some("protocol error".into()),
                        });
                        break;
                    }
                },
                _ = ping.tick() => {
                    if session.ping(b"").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    state.hub.disconnect(sub.id);
    let _ = session.close(close).await;
}

async fn handle_client(state: &AppState, user: UserId, conn: u64, text: &str) -> Reply {
    let err = |code: &str, detail: &str| Reply {
        text: serde_json::json!({"type": "error", "code": code, "detail": detail}).to_string(),
        replay: None,
    };
    let counted = |result: &str| {
        crate::metrics::WS_SUBSCRIBES
            .with_label_values(&[result])
            .inc()
    };
    let Ok(msg) = serde_json::from_str::<ClientMsg>(text) else {
        counted("invalid");
        return err(
            "invalid_json",
            "expected {\"subscribe\":\"group:<id>\"} (and \"after\": a seq, to replay)",
        );
    };
    let Some(g) = msg
        .subscribe
        .strip_prefix("group:")
        .and_then(|s| GroupId::parse(s).ok())
    else {
        counted("invalid");
        return err("invalid_id", "subscribe to \"group:<group id>\"");
    };
    match state.groups.call(g, IsMember { user }).await {
        Ok(true) => {}
        Ok(false) => {
            counted("forbidden");
            return err(
                "forbidden",
                "only members may subscribe to a group's events",
            );
        }
        Err(e) => {
            counted("failed");
            return err(e.code(), &e.to_string());
        }
    }
    let feed = Feed::Group(g);
    // Refused before subscribing: the client decides where to go on from.
    if let Some(after) = msg.after {
        let head = match state.feeds.head(&state.storage, feed) {
            Ok(h) => h,
            Err(e) => {
                counted("failed");
                let e = ApiError::from(e);
                return err(e.code(), &e.to_string());
            }
        };
        if let Err(x) = head.start(Some(after)) {
            counted("expired");
            return Reply {
                text: serde_json::json!({
                    "type": "error",
                    "code": "events_expired",
                    "group_id": g,
                    "oldest_seq": x.oldest_seq,
                    "detail": "the group's events after the given seq are no longer kept",
                })
                .to_string(),
                replay: None,
            };
        }
    }
    match state.hub.subscribe(conn, g) {
        Ok(()) => {
            counted("subscribed");
            Reply {
                text: serde_json::json!({"type": "subscribed", "group_id": g}).to_string(),
                replay: msg.after.map(|a| (feed, a)),
            }
        }
        Err(_) => {
            counted("too_many_subscriptions");
            err(
                "too_many_subscriptions",
                &format!(
                    "one connection follows at most {} groups",
                    state.hub.caps().groups_per_connection
                ),
            )
        }
    }
}
