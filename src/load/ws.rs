//! `ws`: K WebSocket subscribers hear a group's `member_joined` events while
//! a driver makes the joins one after the other; the push latency of each
//! delivery is measured from the moment the driver got its join's answer.
//!
//! A group holds at most 500 members, so the K connections belong to S =
//! min(K, 50) member users (a user may hold many connections), and the events
//! are spread over as many 500-seat groups as they need; every connection
//! subscribes to all of them.

use super::record::{Point, Recorder};
use super::steps::{drive_steps, users};
use super::{run_all, Api, Check, Latency, Row};
use actix_web::http::Method;
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What the readers share with the driver (one thread: `Rc` and cells).
struct Shared {
    /// Joiner user id -> event index.
    index: HashMap<String, usize>,
    answered: RefCell<Vec<Option<Instant>>>,
    /// Deliveries seen before their join's answer (latency counted as 0).
    early: Cell<u64>,
    counts: RefCell<Vec<u32>>,
    hist: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    closed: Cell<u64>,
    stop: Cell<bool>,
}

impl Shared {
    fn deliver(&self, text: &[u8]) {
        let Some(uid) = member_joined_user(text) else {
            return;
        };
        let Some(&i) = self.index.get(uid) else {
            return;
        };
        let now = Instant::now();
        match self.answered.borrow().get(i).copied().flatten() {
            Some(t) => {
                let micros = u64::try_from(now.saturating_duration_since(t).as_micros());
                self.hist
                    .borrow_mut()
                    .saturating_record(micros.unwrap_or(u64::MAX).max(1));
            }
            None => {
                self.early.set(self.early.get() + 1);
                self.hist.borrow_mut().saturating_record(1);
            }
        }
        if let Some(c) = self.counts.borrow_mut().get_mut(i) {
            *c += 1;
        }
        self.delivered.set(self.delivered.get() + 1);
    }
}

/// The `user_id` of a `member_joined` event, without parsing the whole JSON
/// (10k subscribers make the client the bottleneck otherwise).
fn member_joined_user(text: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(text).ok()?;
    if !s.contains("\"type\":\"member_joined\"") {
        return None;
    }
    let rest = &s[s.find("\"user_id\":\"")? + 11..];
    Some(&rest[..rest.find('"')?])
}

pub struct WsArgs {
    pub subscribers: usize,
    pub events: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub show_bar: bool,
}

/// Setup, run and checks: the driver's row, the checks and the push figures.
pub async fn run(
    api: &Api,
    admin: &str,
    a: &WsArgs,
) -> Result<(Row, Vec<Check>, Value, Vec<Point>), String> {
    let members_n = a.subscribers.min(50);
    let per_group = 499 - members_n;
    let n_groups = a.events.div_ceil(per_group);
    let conc = 32;
    let owner = users(api, admin, "ws-owner", 1, 1).await?;
    let owner = &owner.first().ok_or("no owner")?.1;
    let groups = run_all("ws group", n_groups, conc, |i| async move {
        let body = json!({"name": format!("load ws {i}"), "member_limit": 500});
        let v = api.call(Method::POST, "/v1/groups", owner, body).await?;
        let id = super::field(&v, "id")?;
        let path = format!("/v1/groups/{id}/invites");
        let inv = api.call(Method::POST, &path, owner, json!({})).await?;
        Ok((
            id,
            Bytes::from(json!({"token": super::field(&inv, "token")?}).to_string()),
        ))
    })
    .await?;
    let members = users(api, admin, "ws-member", members_n, conc).await?;
    let (groups, members) = (&groups, &members);
    run_all(
        "ws membership",
        members_n * n_groups,
        conc,
        |i| async move {
            let (g, m) = (i / members_n, i % members_n);
            let res = api
                .raw(
                    Method::POST,
                    "/v1/join",
                    &members[m].1,
                    groups[g].1.clone(),
                    None,
                )
                .await?;
            match res {
                (200, _) => Ok(()),
                (s, b) => Err(format!("join: {s} {}", String::from_utf8_lossy(&b))),
            }
        },
    )
    .await?;
    let joiners = users(api, admin, "ws-joiner", a.events, conc).await?;
    let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let shared = Rc::new(Shared {
        index: joiners
            .iter()
            .enumerate()
            .map(|(i, (u, _))| (u.clone(), i))
            .collect(),
        answered: RefCell::new(vec![None; a.events]),
        early: Cell::new(0),
        counts: RefCell::new(vec![0; a.events]),
        hist: RefCell::new(hist),
        delivered: Cell::new(0),
        closed: Cell::new(0),
        stop: Cell::new(false),
    });

    // K connections, each subscribed to every group, then a reader task each.
    let wsc = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(30))
        .finish();
    let (wsc, sh) = (&wsc, &shared);
    run_all("ws subscriber", a.subscribers, 64, |i| async move {
        let token = &members[i % members_n].1;
        let url = format!("{}/v1/ws?token={token}", api.base);
        let (_, mut conn) = wsc
            .ws(url)
            .connect()
            .await
            .map_err(|e| format!("ws connect: {e}"))?;
        for (gid, _) in groups.iter() {
            let msg = format!("{{\"subscribe\":\"group:{gid}\"}}");
            conn.send(ws::Message::Text(msg.into()))
                .await
                .map_err(|e| format!("ws send: {e}"))?;
        }
        let (mut subscribed, deadline) = (0, Instant::now() + Duration::from_secs(30));
        while subscribed < groups.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match actix_web::rt::time::timeout(left, conn.next()).await {
                Ok(Some(Ok(ws::Frame::Text(b)))) => {
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("subscribed") => subscribed += 1,
                        Some("error") => return Err(format!("ws subscribe: {v}")),
                        _ => {}
                    }
                }
                Ok(Some(Ok(ws::Frame::Ping(p)))) => {
                    let _ = conn.send(ws::Message::Pong(p)).await;
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => return Err(format!("ws ended while subscribing: {other:?}")),
                Err(_) => return Err("ws: no subscription answer within 30 s".into()),
            }
        }
        let sh = Rc::clone(sh);
        actix_web::rt::spawn(async move {
            while !sh.stop.get() {
                let next = actix_web::rt::time::timeout(Duration::from_millis(250), conn.next());
                match next.await {
                    Err(_) => {}
                    Ok(Some(Ok(ws::Frame::Text(b)))) => sh.deliver(&b),
                    Ok(Some(Ok(ws::Frame::Ping(p)))) => {
                        let _ = conn.send(ws::Message::Pong(p)).await;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(_) => {
                        sh.closed.set(sh.closed.get() + 1);
                        return;
                    }
                }
            }
            let _ = conn.send(ws::Message::Close(None)).await;
        });
        Ok(())
    })
    .await?;

    // The driver: one join at a time, `interval` apart.
    eprintln!(
        "load: ws, {} subscribers ({members_n} members) of {n_groups} group(s), {} events",
        a.subscribers, a.events
    );
    let rec = Recorder::new("ws", a.events as u64, a.duration, a.show_bar);
    let joiners = &joiners;
    let row = drive_steps(
        "ws",
        1,
        a.events as u64,
        a.duration,
        a.interval,
        &rec,
        |_, k| async move {
            let i = k as usize;
            let res = api
                .raw(
                    Method::POST,
                    "/v1/join",
                    &joiners[i].1,
                    groups[i / per_group].1.clone(),
                    None,
                )
                .await;
            if matches!(&res, Ok((200, _))) {
                sh.answered.borrow_mut()[i] = Some(Instant::now());
            }
            Some(("", res))
        },
    )
    .await?;
    let timeline = rec.finish();

    // Wait for the last deliveries (at most 10 s).
    let answered = shared.answered.borrow().iter().flatten().count() as u64;
    let expected = answered * a.subscribers as u64;
    let grace = Instant::now() + Duration::from_secs(10);
    while shared.delivered.get() < expected && Instant::now() < grace {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    shared.stop.set(true);
    let counts = shared.counts.borrow().clone();
    let answered_v = shared.answered.borrow().clone();
    let (mut missing, mut dup) = (0u64, 0u64);
    for (c, ans) in counts.iter().zip(&answered_v) {
        let want = if ans.is_some() {
            a.subscribers as u64
        } else {
            0
        };
        let got = u64::from(*c);
        missing += want.saturating_sub(got);
        dup += got.saturating_sub(want);
    }
    let h = shared.hist.borrow();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let push = Latency {
        p50: ms(0.5),
        p90: ms(0.9),
        p99: ms(0.99),
        p99_9: ms(0.999),
        max: ms(1.0),
    };
    let joined = row.outcomes.get("joined").copied().unwrap_or(0);
    let checks = vec![
        ("joins answered 200 (every event)", joined, row.requests),
        ("deliveries missing", missing, 0),
        ("deliveries duplicated", dup, 0),
        (
            "subscribers still connected",
            a.subscribers as u64 - shared.closed.get().min(a.subscribers as u64),
            a.subscribers as u64,
        ),
    ];
    let extra = json!({
        "subscribers": a.subscribers, "member_users": members_n, "groups": n_groups,
        "events": answered, "deliveries_expected": expected,
        "deliveries": shared.delivered.get(), "missing": missing,
        "before_answer": shared.early.get(), "push_latency_ms": push,
    });
    Ok((row, checks, extra, timeline))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_joiner_of_a_member_joined_event() {
        let ev = br#"{"type":"member_joined","group_id":"g_x","user_id":"u_abc","via_invite":"i_y","seq":3,"at":"2025-01-01T00:00:00Z"}"#;
        assert_eq!(super::member_joined_user(ev), Some("u_abc"));
        assert_eq!(
            super::member_joined_user(br#"{"type":"hello","user_id":"u_abc"}"#),
            None
        );
        assert_eq!(super::member_joined_user(b"\xff"), None);
    }
}
