//! Durable feeds: what a user missed while away is in `GET /v1/events` and
//! on a resumed WebSocket, exactly once, across restarts and `kill -9`;
//! feeds keep what retention allows and say so when asked for more.

use super::helpers::*;
use super::ws::{connect, Conn};
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;

/// Next JSON text frame (answering pings), or `None` after `wait`.
async fn frame_within(conn: &mut Conn, wait: Duration) -> Option<Value> {
    let fut = async {
        loop {
            match conn.next().await {
                Some(Ok(ws::Frame::Text(b))) => {
                    return serde_json::from_slice::<Value>(&b).expect("json frame")
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = conn.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    };
    actix_web::rt::time::timeout(wait, fut).await.ok()
}

async fn connect_after(app: &TestApp, token: &str, after: u64) -> (u16, Option<Conn>) {
    let r = awc::Client::new()
        .ws(format!("{}/v1/ws?token={token}&after={after}", app.base))
        .connect()
        .await;
    match r {
        Ok((resp, conn)) => (resp.status().as_u16(), Some(conn)),
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => (s.as_u16(), None),
        Err(e) => panic!("ws connect: {e}"),
    }
}

/// The whole feed of `token`'s user after `after`, page by page.
async fn feed(app: &TestApp, token: &str, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let (s, v) = app
            .get(&format!("/v1/events?after={after}&limit=7"), Some(token))
            .await;
        assert_eq!(s, 200, "{v}");
        let events = v["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert_eq!(v["next_after"], after, "{v}");
            return out;
        }
        after = v["next_after"].as_u64().expect("next_after");
        assert_eq!(events.last().map(|e| &e["seq"]), Some(&json!(after)));
        out.extend(events);
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

/// The frames of `feed` a connection gets within `quiet` of each other.
async fn frames_of(conn: &mut Conn, feed: &str, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(f) = frame_within(conn, quiet).await {
        if f["feed"] == feed {
            out.push(f);
        }
    }
    out
}

/// An applicant away during the approval finds `join_approved` in the
/// feed and on a resumed socket, exactly once; a sender resuming while
/// claims pour in gets every claim once, replayed then live, with no gap;
/// after a restart and after `kill -9` the feed holds the same events
/// under the same seqs.
#[actix_web::test]
async fn what_a_user_missed_is_in_the_feed_and_on_a_resumed_socket() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "Approvals", "approval_required": true}),
        )
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (ann_id, ann) = app.user("ann").await;
    let (s, v) = app.join(&ann, &tok).await;
    assert_eq!(s, 202, "{v}");
    let rid = s_(&v["request_id"]);
    let path = format!("/v1/groups/{g}/requests/{rid}/approve");
    assert_eq!(app.post(&path, Some(&owner), json!({})).await.0, 200);

    // Ann was not connected. Her feed holds the approval, numbered from 1.
    let mut mine = Vec::new();
    for _ in 0..50 {
        mine = feed(&app, &ann, 0).await;
        if mine.iter().any(|e| e["type"] == "join_approved") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let approved: Vec<&Value> = mine
        .iter()
        .filter(|e| e["type"] == "join_approved")
        .collect();
    assert_eq!(approved.len(), 1, "{mine:?}");
    assert_eq!(approved[0]["request_id"], rid.as_str());
    assert_eq!(approved[0]["feed"], "user");
    assert!(approved[0]["at"].as_str().is_some());
    let numbered: Vec<u64> = (1..=mine.len() as u64).collect();
    assert_eq!(seqs(&mine), numbered, "{mine:?}");
    // The owner's feed has the request, addressed to the group's moderators.
    let owners = feed(&app, &owner, 0).await;
    assert!(owners
        .iter()
        .any(|e| e["type"] == "join_requested" && e["request_id"] == rid.as_str()));

    // A socket resumed from 0 replays the same events, once, then goes on live.
    let (s, conn) = connect_after(&app, &ann, 0).await;
    assert_eq!(s, 101);
    let mut conn = conn.expect("upgraded");
    let hello = frame_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("hello");
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["last_seq"], mine.len());
    let replayed = frames_of(&mut conn, "user", Duration::from_millis(500)).await;
    assert_eq!(replayed, mine);
    // Removed from the group while connected: heard live, next seq.
    let path = format!("/v1/groups/{g}/members/{ann_id}");
    assert_eq!(app.call("DELETE", &path, Some(&owner), None).await.0, 204);
    let live = frames_of(&mut conn, "user", Duration::from_millis(800)).await;
    assert_eq!(seqs(&live), vec![mine.len() as u64 + 1], "{live:?}");
    assert_eq!(live[0]["type"], "member_removed");

    // A sender resumes from the middle of a stream of claims.
    let (_, sender) = app.funded("sender", 10_000).await;
    let (s, v) = app
        .create_packet(
            &sender,
            "stream",
            json!({"total": 4000, "count": 40, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    let mut claimers = Vec::new();
    for i in 0..40 {
        claimers.push(app.user(&format!("c{i}")).await.1);
    }
    for tok in &claimers[..10] {
        assert_eq!(app.claim(tok, &packet, json!({})).await.0, 200);
    }
    let before = feed(&app, &sender, 0).await;
    let resume_at = before.len() as u64 - 3;
    // The rest are claimed while the socket opens and replays.
    let claims = futures_util::future::join_all(claimers[10..].iter().map(|tok| {
        let (app, packet) = (&app, &packet);
        async move { app.claim(tok, packet, json!({})).await.0 }
    }));
    let socket = async {
        actix_web::rt::time::sleep(Duration::from_millis(30)).await;
        let (s, conn) = connect_after(&app, &sender, resume_at).await;
        assert_eq!(s, 101);
        let mut conn = conn.expect("upgraded");
        frames_of(&mut conn, "user", Duration::from_millis(1500)).await
    };
    let (answers, heard) = futures_util::join!(claims, socket);
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let all = feed(&app, &sender, 0).await;
    assert_eq!(seqs(&all), (1..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        heard,
        all[resume_at as usize..].to_vec(),
        "replayed then live: every event after {resume_at} once, in order"
    );
    let claimed = all.iter().filter(|e| e["type"] == "packet_claimed").count();
    assert_eq!(claimed, 40, "one event per claim");

    // The feeds survive a restart, and a kill -9 (the consumer numbers
    // again what it had not persisted, the same way).
    app.restart().await;
    assert_eq!(feed(&app, &sender, 0).await, all);
    assert_eq!(feed(&app, &ann, 0).await.len(), mine.len() + 1);
    let (_, late) = app.user("late").await;
    let (_, v) = app
        .create_packet(
            &sender,
            "after",
            json!({"total": 100, "count": 1, "mode": "fixed"}),
        )
        .await;
    assert_eq!(app.claim(&late, &s_(&v["id"]), json!({})).await.0, 200);
    // Its claim and its emptying: two more events for the sender.
    let with_late = {
        let mut f = Vec::new();
        for _ in 0..50 {
            f = feed(&app, &sender, 0).await;
            if f.len() >= all.len() + 2 {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        f
    };
    assert_eq!(with_late.len(), all.len() + 2, "{with_late:?}");
    app.kill9();
    app.restart().await;
    assert_eq!(feed(&app, &sender, 0).await, with_late);
}

/// `wait` long-polls: an event that comes during the wait answers it.
#[actix_web::test]
async fn a_long_poll_answers_when_the_event_comes() {
    let app = TestApp::spawn().await;
    let (_, sender) = app.funded("sender", 1000).await;
    let (_, v) = app
        .create_packet(
            &sender,
            "p",
            json!({"total": 100, "count": 1, "mode": "fixed"}),
        )
        .await;
    let packet = s_(&v["id"]);
    let (_, claimer) = app.user("claimer").await;
    let last = feed(&app, &sender, 0).await.len() as u64;
    let started = std::time::Instant::now();
    let url = format!("/v1/events?after={last}&wait=20");
    let poll = app.get(&url, Some(&sender));
    let claim = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        app.claim(&claimer, &packet, json!({})).await.0
    };
    let ((s, v), c) = futures_util::join!(poll, claim);
    assert_eq!((s, c), (200, 200), "{v}");
    let events = v["events"].as_array().expect("events");
    assert!(!events.is_empty(), "woken by the claim: {v}");
    assert_eq!(events[0]["type"], "packet_claimed");
    assert_eq!(events[0]["seq"], last + 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Nothing new: the wait runs out and answers an empty page.
    let next = v["next_after"].as_u64().expect("next_after");
    let started = std::time::Instant::now();
    let (s, v) = app
        .get(&format!("/v1/events?after={next}&wait=1"), Some(&sender))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["next_after"], next);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Bad requests and strangers.
    for q in [
        "limit=0",
        "limit=1001",
        "wait=31",
        "after=-1",
        "after=x",
        "other=1",
    ] {
        let (s, v) = app.get(&format!("/v1/events?{q}"), Some(&sender)).await;
        assert_eq!(s, 400, "{q}: {v}");
    }
    assert_eq!(app.get("/v1/events", None).await.0, 401);
    assert_eq!(app.get("/v1/events", Some(ADMIN)).await.0, 403);
}

/// A feed keeps `max_per_feed` events and those younger than
/// `retention_days`: asking from before what it holds answers 410
/// `events_expired` with `oldest_seq`, on `/v1/events`, before the
/// WebSocket upgrade, and in a frame for a group subscription.
#[actix_web::test]
async fn asking_for_more_than_retention_kept_is_refused_with_the_oldest_seq() {
    let mut app = TestApp::spawn_with("[events]\nmax_per_feed = 3\nretention_days = 1\n").await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Busy"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let mut members = Vec::new();
    for i in 0..5 {
        let (_, t) = app.user(&format!("m{i}")).await;
        assert_eq!(app.join(&t, &tok).await.0, 200);
        members.push(t);
    }
    // The group's feed: six member_joined (the owner's at creation, then
    // five), of which it keeps the last 3.
    let mut conn = connect(&app, &members[0]).await;
    let _hello = frame_within(&mut conn, Duration::from_secs(5)).await;
    let sub = |after: u64| {
        ws::Message::Text(format!("{{\"subscribe\":\"group:{g}\",\"after\":{after}}}").into())
    };
    let mut replay = Vec::new();
    for _ in 0..50 {
        conn.send(sub(3)).await.expect("send");
        let first = frame_within(&mut conn, Duration::from_secs(5))
            .await
            .expect("answer");
        if first["type"] == "subscribed" {
            replay = frames_of(&mut conn, &format!("group:{g}"), Duration::from_millis(500)).await;
            if replay.len() == 3 {
                break;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seqs(&replay), vec![4, 5, 6], "{replay:?}");
    assert!(replay
        .iter()
        .all(|f| f["type"] == "member_joined" && f["group_id"] == g.as_str()));
    conn.send(sub(2)).await.expect("send");
    let refused = frame_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["code"].as_str(),
            refused["oldest_seq"].as_u64()
        ),
        (Some("error"), Some("events_expired"), Some(4)),
        "{refused}"
    );

    // A user feed past its bound: six removals of one user make six
    // events in its feed (a join is not echoed to the joiner), of which it
    // keeps the last 3.
    let (m_id, m) = app.user("mover").await;
    for _ in 0..6 {
        assert_eq!(app.join(&m, &tok).await.0, 200);
        let path = format!("/v1/groups/{g}/members/{m_id}");
        assert_eq!(app.call("DELETE", &path, Some(&owner), None).await.0, 204);
    }
    let mut head = json!(null);
    for _ in 0..50 {
        let (_, v) = app.get("/v1/events", Some(&m)).await;
        if v["last_seq"] == 6 {
            head = v;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (head["last_seq"].as_u64(), head["oldest_seq"].as_u64()),
        (Some(6), Some(4)),
        "{head}"
    );
    assert_eq!(
        seqs(head["events"].as_array().expect("events")),
        vec![4, 5, 6]
    );
    assert_eq!(feed(&app, &m, 3).await.len(), 3);
    let (s, v) = app.get("/v1/events?after=2", Some(&m)).await;
    assert_eq!(
        (s, code(&v), v["oldest_seq"].as_u64()),
        (410, "events_expired", Some(4)),
        "{v}"
    );
    let (s, _) = connect_after(&app, &m, 2).await;
    assert_eq!(s, 410, "refused before the upgrade");
    let (s, _) = connect_after(&app, &m, 3).await;
    assert_eq!(s, 101);

    // Two days later every event is past retention (1 day): the feed is
    // empty, its numbering goes on, and what it held is expired.
    app.env
        .push(("QRGATE_CLOCK_OFFSET_SECS".into(), (2 * 86_400).to_string()));
    // Readers see it at once, whether or not the sweep has dropped them yet.
    app.restart().await;
    let v = app.get("/v1/events", Some(&m)).await.1;
    assert_eq!(
        (
            v["events"].clone(),
            v["oldest_seq"].as_u64(),
            v["last_seq"].as_u64(),
            v["next_after"].as_u64()
        ),
        (json!([]), Some(7), Some(6), Some(6)),
        "{v}"
    );
    let (s, v) = app.get("/v1/events?after=5", Some(&m)).await;
    assert_eq!((s, v["oldest_seq"].as_u64()), (410, Some(7)), "{v}");
    assert_eq!(app.get("/v1/events?after=6", Some(&m)).await.0, 200);
}

/// A busy group feed over several checkpoints (its events merged into
/// chunks on disk, the chunks that fell past its bound deleted) and a
/// `kill -9`: it replays exactly its last `max_per_feed` events, each
/// once, in order, one per acknowledged join.
#[actix_web::test]
async fn a_feed_merged_over_checkpoints_and_a_kill_replays_each_event_once() {
    let mut app = TestApp::spawn_with(
        "[storage]\ncheckpoint_secs = 1\n[events]\nmax_per_feed = 100\n[limits]\ngroup_joins_per_minute = 60000\ngroup_joins_per_minute_max = 60000\n",
    )
    .await;
    let (owner_id, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Busy", "member_limit": 200}))
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    // The owner's member_joined, then one per join, in join order.
    let mut joined = vec![owner_id];
    for wave in 0..3 {
        for i in 0..60 {
            let (id, t) = app.user(&format!("w{wave}u{i}")).await;
            let (s, v) = app.join(&t, &tok).await;
            assert_eq!(s, 200, "{v}");
            joined.push(id);
        }
        if wave == 1 {
            app.kill9();
            app.restart().await;
        }
        // A checkpoint or two after each wave.
        actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    }
    let last = joined.len() as u64;
    let after = last - 100;
    let mut conn = connect(&app, &owner).await;
    let _hello = frame_within(&mut conn, Duration::from_secs(5)).await;
    let mut replay = Vec::new();
    for _ in 0..50 {
        let sub = format!("{{\"subscribe\":\"group:{g}\",\"after\":{after}}}");
        conn.send(ws::Message::Text(sub.into()))
            .await
            .expect("send");
        let first = frame_within(&mut conn, Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(first["type"], "subscribed", "{first}");
        replay = frames_of(&mut conn, &format!("group:{g}"), Duration::from_millis(500)).await;
        if replay.len() == 100 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seqs(&replay), (after + 1..=last).collect::<Vec<_>>());
    let users: Vec<&str> = replay
        .iter()
        .map(|f| f["user_id"].as_str().unwrap_or_default())
        .collect();
    let want: Vec<&str> = joined[after as usize..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(users, want);
    assert!(replay.iter().all(|f| f["type"] == "member_joined"));
    // What fell past the bound is gone for readers.
    let sub = format!("{{\"subscribe\":\"group:{g}\",\"after\":{}}}", after - 1);
    conn.send(ws::Message::Text(sub.into()))
        .await
        .expect("send");
    let refused = frame_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(
        (refused["code"].as_str(), refused["oldest_seq"].as_u64()),
        (Some("events_expired"), Some(after + 1)),
        "{refused}"
    );
}
