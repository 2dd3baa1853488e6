//! `GET /v1/ws?token=<session token>`: a user's own events, plus the events of
//! groups the user subscribes to (members only) with `{"subscribe":"group:<id>"}`.
//! A connection whose queue fills up is closed with code 4008 (slow consumer).

use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use serde::Deserialize;
use std::future::Future as _;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;
use utoipa::IntoParams;

use super::{auth, AppState};
use crate::domain::ids::{GroupId, UserId};
use crate::error::ApiError;
use crate::groups::actor::IsMember;
use crate::groups::Caller;
use crate::push::{CLOSE_SESSION_ENDED, CLOSE_SLOW_CONSUMER};

#[derive(Deserialize, IntoParams)]
pub struct WsQuery {
    /// The user's session token (browsers cannot set headers on WebSocket requests).
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMsg {
    subscribe: String,
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
        (status = 401, body = crate::error::Problem)
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
    let token = q.token.as_deref().ok_or(ApiError::Unauthorized)?;
    let user = match auth::resolve(&state, token)? {
        Caller::User(u) => u,
        Caller::Admin => {
            return Err(ApiError::forbidden(
                "WebSocket events belong to users; use a session token",
            )
            .into())
        }
    };
    let (resp, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::validation(format!(
            "this route is a WebSocket: send an upgrade request ({e})"
        ))
    })?;
    let stream = stream.max_frame_size(MAX_FRAME);
    let hash = token
        .starts_with(auth::SESSION_PREFIX)
        .then(|| auth::session_hash(token));
    actix_web::rt::spawn(run(state, user, hash, session, stream));
    Ok(resp)
}

async fn run(
    state: web::Data<AppState>,
    user: UserId,
    hash: Option<[u8; 32]>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    let Some(mut sub) = state.hub.connect(user, hash) else {
        let _ = session.close(None).await;
        return;
    };
    let hello = serde_json::json!({"type": "hello", "user_id": user}).to_string();
    let mut close: Option<CloseReason> = None;
    if session.text(hello).await.is_ok() {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                ev = sub.rx.recv() => match ev {
                    Some(text) => {
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
                        let reply = handle_client(&state, user, sub.id, &t).await;
                        if session.text(reply).await.is_err() {
                            break;
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

async fn handle_client(state: &AppState, user: UserId, conn: u64, text: &str) -> String {
    let err = |code: &str, detail: &str| {
        serde_json::json!({"type": "error", "code": code, "detail": detail}).to_string()
    };
    let Ok(msg) = serde_json::from_str::<ClientMsg>(text) else {
        return err("invalid_json", "expected {\"subscribe\":\"group:<id>\"}");
    };
    let Some(g) = msg
        .subscribe
        .strip_prefix("group:")
        .and_then(|s| GroupId::parse(s).ok())
    else {
        return err("invalid_id", "subscribe to \"group:<group id>\"");
    };
    match state.groups.call(g, IsMember { user }).await {
        Ok(true) => {
            state.hub.subscribe(conn, g);
            serde_json::json!({"type": "subscribed", "group_id": g}).to_string()
        }
        Ok(false) => err(
            "forbidden",
            "only members may subscribe to a group's events",
        ),
        Err(e) => err(e.code(), &e.to_string()),
    }
}
