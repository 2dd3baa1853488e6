//! `ws`: K WebSocket subscribers hear a group's `member_joined` events while
//! a driver makes the joins one after the other; the push latency of each
//! delivery is measured from the moment the driver got its join's answer.
//!
//! A group holds at most 500 members, so the K connections belong to S =
//! min(K, 50) member users (a user may hold many connections), and the events
//! are spread over as many 500-seat groups as they need; every connection
//! subscribes to all of them.
//!
//! The sockets are read by `readers` threads, each its own runtime (one
//! thread reading 10k sockets queues deliveries behind each other and
//! measures its own backlog); a delivery is timed when its frame is decoded.

use super::record::{Point, Recorder};
use super::steps::{drive_steps, users};
use super::{run_all, Api, Check, Latency, Row};
use actix_web::http::Method;
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the reader threads share with the driver.
struct Shared {
    /// The origin of the timestamps below.
    base: Instant,
    /// Joiner user id -> event index.
    index: HashMap<String, usize>,
    /// Nanoseconds after `base`, plus 1, at which the driver got event i's
    /// answer; 0 while it has not.
    answered: Vec<AtomicU64>,
    delivered: AtomicU64,
    closed: AtomicU64,
}

impl Shared {
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn answered_at(&self, i: usize) -> Option<u64> {
        match self.answered.get(i)?.load(Ordering::Acquire) {
            0 => None,
            t => Some(t - 1),
        }
    }
}

/// One reader thread's deliveries.
struct Tally {
    hist: Histogram<u64>,
    counts: Vec<u32>,
    /// Deliveries read before the driver had recorded their join's answer:
    /// (event, arrival in nanoseconds after `base`), settled after the run.
    unsettled: Vec<(usize, u64)>,
}

impl Tally {
    fn new(events: usize) -> Result<Tally, String> {
        Ok(Tally {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?,
            counts: vec![0; events],
            unsettled: Vec::new(),
        })
    }

    /// A frame read at `at` (taken as soon as the frame was decoded).
    fn deliver(&mut self, sh: &Shared, at: Instant, text: &[u8]) {
        let Some(uid) = member_joined_user(text) else {
            return;
        };
        let Some(&i) = sh.index.get(uid) else {
            return;
        };
        let at = sh.nanos(at);
        match sh.answered_at(i) {
            Some(t) => record(&mut self.hist, at.saturating_sub(t)),
            None => self.unsettled.push((i, at)),
        }
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        sh.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Record a latency in nanoseconds, in microseconds.
fn record(h: &mut Histogram<u64>, nanos: u64) {
    h.saturating_record((nanos / 1000).max(1));
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

/// What a reader thread needs to open its connections.
#[derive(Clone)]
struct Target {
    base: String,
    /// Session tokens of the member users.
    members: Arc<Vec<String>>,
    /// Ids of the groups every connection subscribes to.
    groups: Arc<Vec<String>>,
}

/// An open WebSocket as awc hands it out (a framed socket).
trait WsConn:
    futures_util::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
    + futures_util::Sink<ws::Message, Error = awc::error::WsProtocolError>
    + Unpin
{
}

impl<T> WsConn for T where
    T: futures_util::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
        + futures_util::Sink<ws::Message, Error = awc::error::WsProtocolError>
        + Unpin
{
}

/// Open subscriber `i`'s connection and subscribe it to every group.
async fn subscribe(wsc: &awc::Client, t: &Target, i: usize) -> Result<impl WsConn, String> {
    let token = t
        .members
        .get(i % t.members.len().max(1))
        .ok_or("no member user")?;
    let url = format!("{}/v1/ws?token={token}", t.base);
    let (_, mut conn) = wsc
        .ws(url)
        .connect()
        .await
        .map_err(|e| format!("ws connect: {e}"))?;
    for gid in t.groups.iter() {
        let msg = format!("{{\"subscribe\":\"group:{gid}\"}}");
        conn.send(ws::Message::Text(msg.into()))
            .await
            .map_err(|e| format!("ws send: {e}"))?;
    }
    let (mut subscribed, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while subscribed < t.groups.len() {
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
    Ok(conn)
}

/// Read one connection until it ends; the arrival time is taken as soon as
/// a frame is decoded, before anything else is done with it.
async fn read(mut conn: impl WsConn, sh: Arc<Shared>, tally: Rc<RefCell<Tally>>) {
    while let Some(frame) = conn.next().await {
        let at = Instant::now();
        match frame {
            Ok(ws::Frame::Text(b)) => tally.borrow_mut().deliver(&sh, at, &b),
            Ok(ws::Frame::Ping(p)) => {
                let _ = conn.send(ws::Message::Pong(p)).await;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    sh.closed.fetch_add(1, Ordering::Relaxed);
}

/// One reader thread's share: the subscribers `mine` (indices), opened
/// `conc` at a time.
struct Reader {
    n: usize,
    mine: Vec<usize>,
    conc: usize,
    target: Target,
    sh: Arc<Shared>,
    events: usize,
}

/// A reader thread: its own runtime (System) opens the subscribers `mine`,
/// reads them until `stop`, then hands back what it counted.
fn reader_thread(
    r: Reader,
    ready: oneshot::Sender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) -> Result<Tally, String> {
    let Reader {
        n,
        mine,
        conc,
        target,
        sh,
        events,
    } = r;
    actix_web::rt::System::new().block_on(async move {
        let tally = Rc::new(RefCell::new(Tally::new(events)?));
        let wsc = awc::Client::builder()
            .connector(awc::Connector::new().limit(0))
            .timeout(Duration::from_secs(30))
            .finish();
        let (wsc, target, mine) = (&wsc, &target, &mine);
        let label = format!("ws subscriber (reader {n})");
        let conns = run_all(&label, mine.len(), conc, |j| async move {
            subscribe(wsc, target, mine[j]).await
        })
        .await;
        match conns {
            Ok(conns) => {
                for conn in conns {
                    actix_web::rt::spawn(read(conn, Arc::clone(&sh), Rc::clone(&tally)));
                }
                let _ = ready.send(Ok(()));
            }
            Err(e) => {
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
        }
        let _ = stop.await;
        // The connections close when this thread's runtime goes.
        let empty = Tally::new(0)?;
        let t = std::mem::replace(&mut *tally.borrow_mut(), empty);
        Ok(t)
    })
}

pub struct WsArgs {
    pub subscribers: usize,
    pub events: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub show_bar: bool,
    /// Threads reading the subscribers' sockets (each its own runtime).
    pub readers: usize,
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
    let shared = Arc::new(Shared {
        base: Instant::now(),
        index: joiners
            .iter()
            .enumerate()
            .map(|(i, (u, _))| (u.clone(), i))
            .collect(),
        answered: (0..a.events).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });

    // K connections, each subscribed to every group, spread over reader
    // threads so that reading 10k sockets does not queue behind one thread.
    let target = Target {
        base: api.base.clone(),
        members: Arc::new(members.iter().map(|(_, t)| t.clone()).collect()),
        groups: Arc::new(groups.iter().map(|(id, _)| id.clone()).collect()),
    };
    let n_readers = a.readers.clamp(1, a.subscribers);
    let mut readers = Vec::new();
    for r in 0..n_readers {
        let mine: Vec<usize> = (r..a.subscribers).step_by(n_readers).collect();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let reader = Reader {
            n: r,
            mine,
            conc: (64 / n_readers).max(1),
            target: target.clone(),
            sh: Arc::clone(&shared),
            events: a.events,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ws-reader-{r}"))
            .spawn(move || reader_thread(reader, ready_tx, stop_rx))
            .map_err(|e| format!("cannot start a reader thread: {e}"))?;
        readers.push((thread, ready_rx, stop_tx));
    }
    for (_, ready, _) in &mut readers {
        ready
            .await
            .map_err(|_| "a reader thread died".to_string())??;
    }

    // The driver: one join at a time, `interval` apart.
    eprintln!(
        "load: ws, {} subscribers ({members_n} members) of {n_groups} group(s) read by {n_readers} thread(s), {} events",
        a.subscribers, a.events
    );
    let rec = Recorder::new("ws", a.events as u64, a.duration, a.show_bar);
    let (joiners, sh) = (&joiners, &shared);
    let row = drive_steps(
        "ws",
        1,
        a.events as u64,
        a.duration,
        a.interval,
        &rec,
        |_, k| async move {
            let i = k as usize;
            let join = || {
                api.raw(
                    Method::POST,
                    "/v1/join",
                    &joiners[i].1,
                    groups[i / per_group].1.clone(),
                    None,
                )
            };
            // A pooled connection left idle through the subscribers' setup
            // may have been closed by the server (keep-alive) just as it is
            // reused: that join never got an answer, so it is sent again once.
            let res = match join().await {
                Err(_) => join().await,
                ok => ok,
            };
            if matches!(&res, Ok((200, _))) {
                let at = sh.nanos(Instant::now());
                if let Some(a) = sh.answered.get(i) {
                    a.store(at + 1, Ordering::Release);
                }
            }
            Some(("", res))
        },
    )
    .await?;
    let timeline = rec.finish();

    // Wait for the last deliveries (at most 10 s).
    let answered: Vec<Option<u64>> = (0..a.events).map(|i| shared.answered_at(i)).collect();
    let n_answered = answered.iter().flatten().count() as u64;
    let expected = n_answered * a.subscribers as u64;
    let grace = Instant::now() + Duration::from_secs(10);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < grace {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = shared.closed.load(Ordering::Relaxed);
    let mut tallies = Vec::new();
    for (thread, _, stop) in readers {
        let _ = stop.send(());
        let t = thread
            .join()
            .map_err(|_| "a reader thread panicked".to_string())??;
        tallies.push(t);
    }
    let mut h = Tally::new(a.events)?;
    let mut early = 0u64;
    for t in tallies {
        h.hist.add(&t.hist).map_err(|e| e.to_string())?;
        for (c, n) in h.counts.iter_mut().zip(&t.counts) {
            *c += n;
        }
        // Read before the driver stored the answer: either really before it
        // (counted as 0 ms, as `before_answer`) or just after.
        for (i, at) in t.unsettled {
            match answered.get(i).copied().flatten() {
                Some(ans) if at >= ans => record(&mut h.hist, at - ans),
                _ => {
                    early += 1;
                    record(&mut h.hist, 0);
                }
            }
        }
    }
    let (mut missing, mut dup) = (0u64, 0u64);
    for (c, ans) in h.counts.iter().zip(&answered) {
        let want = if ans.is_some() {
            a.subscribers as u64
        } else {
            0
        };
        let got = u64::from(*c);
        missing += want.saturating_sub(got);
        dup += got.saturating_sub(want);
    }
    let h = &h.hist;
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
            a.subscribers as u64 - closed.min(a.subscribers as u64),
            a.subscribers as u64,
        ),
    ];
    let extra = json!({
        "subscribers": a.subscribers, "member_users": members_n, "groups": n_groups,
        "events": n_answered, "deliveries_expected": expected,
        "deliveries": shared.delivered.load(Ordering::Relaxed), "missing": missing,
        "before_answer": early, "readers": n_readers, "push_latency_ms": push,
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
