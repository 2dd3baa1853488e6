//! WebSocket events: a joiner hears the decision; members hear their group.

use super::helpers::*;
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;

pub type Conn = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

pub async fn connect(app: &TestApp, token: &str) -> Conn {
    let (_, conn) = awc::Client::new()
        .ws(format!("{}/v1/ws?token={token}", app.base))
        .connect()
        .await
        .expect("ws connect");
    conn
}

/// Next JSON text frame (answering pings), within 5 s.
async fn next(conn: &mut Conn) -> Value {
    let fut = async {
        loop {
            match conn.next().await {
                Some(Ok(ws::Frame::Text(b))) => {
                    return serde_json::from_slice::<Value>(&b).unwrap()
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = conn.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    };
    actix_web::rt::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("event within 5 s")
}

/// The next frame that is not an event: the answer to a client frame
/// (an event of a group just followed may come first).
async fn answer(conn: &mut Conn) -> Value {
    loop {
        let v = next(conn).await;
        if !v["seq"].is_u64() {
            return v;
        }
    }
}

pub async fn next_of(conn: &mut Conn, ty: &str) -> Value {
    for _ in 0..20 {
        let v = next(conn).await;
        if v["type"] == ty {
            return v;
        }
    }
    panic!("no {ty} event");
}

#[actix_web::test]
async fn joiner_hears_the_decision_and_members_hear_the_group() {
    let app = TestApp::spawn().await;
    let (owner_id, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Live", "approval_required": true}))
        .await;
    let (iid, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (ann_id, ann) = app.user("ann").await;

    let mut owner_ws = connect(&app, &owner).await;
    assert_eq!(next(&mut owner_ws).await["type"], "hello");
    owner_ws
        .send(ws::Message::Text(
            format!("{{\"subscribe\":\"group:{g}\"}}").into(),
        ))
        .await
        .unwrap();
    let v = answer(&mut owner_ws).await;
    assert_eq!(
        (v["type"].as_str(), v["group_id"].as_str()),
        (Some("subscribed"), Some(g.as_str()))
    );

    let mut ann_ws = connect(&app, &ann).await;
    assert_eq!(next(&mut ann_ws).await["user_id"], ann_id.as_str());
    // Not a member: may not subscribe to the group.
    ann_ws
        .send(ws::Message::Text(
            format!("{{\"subscribe\":\"group:{g}\"}}").into(),
        ))
        .await
        .unwrap();
    let v = next(&mut ann_ws).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    ann_ws
        .send(ws::Message::Text("nonsense".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ann_ws).await["code"], "invalid_json");

    let (s, v) = app.join(&ann, &tok).await;
    assert_eq!(s, 202);
    let rid = s_(&v["request_id"]);
    let ev = next_of(&mut owner_ws, "join_requested").await;
    assert_eq!(ev["request_id"], rid.as_str());
    assert_eq!(ev["via_invite"], iid.as_str());
    assert!(ev["seq"].as_u64().is_some() && ev["at"].as_str().is_some());

    assert_eq!(
        app.post(
            &format!("/v1/groups/{g}/requests/{rid}/approve"),
            Some(&owner),
            json!({})
        )
        .await
        .0,
        200
    );
    let ev = next_of(&mut ann_ws, "join_approved").await;
    assert_eq!(ev["group_id"], g.as_str());
    assert_eq!(ev["decided_by"], owner_id.as_str());
    let ev = next_of(&mut owner_ws, "member_joined").await;
    assert_eq!(ev["user_id"], ann_id.as_str());

    // A rejected joiner hears it too.
    let (_, bob) = app.user("bob").await;
    let mut bob_ws = connect(&app, &bob).await;
    let _ = next(&mut bob_ws).await;
    let (_, v) = app.join(&bob, &tok).await;
    let brid = s_(&v["request_id"]);
    assert_eq!(
        app.post(
            &format!("/v1/groups/{g}/requests/{brid}/reject"),
            Some(&owner),
            json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        next_of(&mut bob_ws, "join_rejected").await["request_id"],
        brid.as_str()
    );

    // Revocation and ban reach subscribed members.
    assert_eq!(
        app.call("DELETE", &format!("/v1/invites/{iid}"), Some(&owner), None)
            .await
            .0,
        204
    );
    assert_eq!(
        next_of(&mut owner_ws, "invite_revoked").await["invite_id"],
        iid.as_str()
    );
    assert_eq!(app.ban_group(&g, "test").await.0, 200);
    assert_eq!(
        next_of(&mut owner_ws, "group_banned").await["reason"],
        "test"
    );

    // Bad session tokens are refused before the upgrade.
    let err = awc::Client::new()
        .ws(format!("{}/v1/ws?token=qrs_nope", app.base))
        .connect()
        .await;
    match err {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

#[actix_web::test]
async fn a_blocked_member_stops_hearing_the_group() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Closed"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (mal_id, mal) = app.user("mal").await;
    assert_eq!(app.join(&mal, &tok).await.0, 200);
    let mut ws = connect(&app, &mal).await;
    let _ = next(&mut ws).await;
    ws.send(ws::Message::Text(
        format!("{{\"subscribe\":\"group:{g}\"}}").into(),
    ))
    .await
    .unwrap();
    // (mal's own member_joined may still be on its way before the answer)
    assert_eq!(next_of(&mut ws, "subscribed").await["group_id"], g.as_str());
    let (s, _) = app.block(&owner, &g, &mal_id).await;
    assert_eq!(s, 204);
    assert_eq!(
        next_of(&mut ws, "member_blocked").await["user_id"],
        mal_id.as_str()
    );
    // Later group events do not reach the blocked user.
    let (_, other) = app.user("other").await;
    assert_eq!(app.join(&other, &tok).await.0, 200);
    let (s, _) = app
        .post(&format!("/v1/groups/{g}/invites"), Some(&owner), json!({}))
        .await;
    assert_eq!(s, 201);
    let quiet = actix_web::rt::time::timeout(Duration::from_millis(800), next(&mut ws)).await;
    assert!(quiet.is_err(), "no group event after the block: {quiet:?}");
}

#[actix_web::test]
async fn a_request_expires_in_a_passivated_group_and_the_joiner_hears_it() {
    let app = TestApp::spawn_with(
        "[limits]\njoin_request_ttl_seconds = 2\n[actors]\nidle_timeout_seconds = 1\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(&owner, json!({"name": "Slow", "approval_required": true}))
        .await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let (_, ann) = app.user("ann").await;
    let mut ws = connect(&app, &ann).await;
    let _ = next(&mut ws).await;
    let (s, v) = app.join(&ann, &tok).await;
    assert_eq!(s, 202);
    let rid = s_(&v["request_id"]);
    // Nobody touches the group: it passivates, and the sweeper still expires the request.
    let ev = next_of(&mut ws, "join_request_expired").await;
    assert_eq!(ev["request_id"], rid.as_str());
    let (_, v) = app.get(&format!("/v1/groups/{g}"), Some(&owner)).await;
    assert_eq!(v["pending_requests"], 0);
    assert_eq!(v["counters"]["expirations"], 1);
}

/// The status of a WebSocket handshake, and the problem's code when refused
/// (the same request without the upgrade answers it).
async fn handshake(app: &TestApp, token: &str) -> (u16, Option<Conn>) {
    match awc::Client::new()
        .ws(format!("{}/v1/ws?token={token}", app.base))
        .connect()
        .await
    {
        Ok((resp, conn)) => (resp.status().as_u16(), Some(conn)),
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => (s.as_u16(), None),
        Err(e) => panic!("ws handshake: {e}"),
    }
}

#[actix_web::test]
async fn connections_are_capped_per_user_per_address_and_per_server_before_the_upgrade() {
    let app = TestApp::spawn_with("[websocket]\nmax_per_user = 2\nmax_per_ip = 3\n").await;
    let (_, ann) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    let (_, cid) = app.user("cid").await;
    let (s, mut a1) = handshake(&app, &ann).await;
    assert_eq!(s, 101);
    let (s, _a2) = handshake(&app, &ann).await;
    assert_eq!(s, 101);
    let (s, _) = handshake(&app, &ann).await;
    assert_eq!(s, 429, "ann's third");
    let (s, v) = app.get(&format!("/v1/ws?token={ann}"), None).await;
    assert_eq!((s, code(&v)), (429, "too_many_connections"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("per user"), "{v}");
    let (s, _b1) = handshake(&app, &bob).await;
    assert_eq!(s, 101, "bob's first: the address's third");
    let (s, v) = app.get(&format!("/v1/ws?token={cid}"), None).await;
    assert_eq!((s, code(&v)), (429, "too_many_connections"), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("per address"), "{v}");
    // Closing one frees its slot.
    let mut a1 = a1.take().unwrap();
    a1.send(ws::Message::Close(None)).await.unwrap();
    drop(a1);
    let mut opened = false;
    for _ in 0..50 {
        if handshake(&app, &cid).await.0 == 101 {
            opened = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened, "a closed connection frees its slot");
    assert!(
        app.metric("qrgate_ws_refused_total{cap=\"per user\"}")
            .await
            >= 2.0
    );

    let small = TestApp::spawn_with("[websocket]\nmax_connections = 2\n").await;
    let mut held = Vec::new();
    for n in 0..2 {
        let (_, t) = small.user(&format!("u{n}")).await;
        let (s, c) = handshake(&small, &t).await;
        assert_eq!(s, 101);
        held.push(c);
    }
    let (_, t) = small.user("third").await;
    let (s, v) = small.get(&format!("/v1/ws?token={t}"), None).await;
    assert_eq!((s, code(&v)), (429, "too_many_connections"), "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("on this server"),
        "{v}"
    );
}

#[actix_web::test]
async fn subscriptions_are_capped_per_connection_and_subscribe_frames_throttled() {
    let app = TestApp::spawn_with(
        "[websocket]\nmax_groups_per_connection = 2\nsubscribes_per_minute = 5\n",
    )
    .await;
    let (_, owner) = app.user("owner").await;
    let mut groups = Vec::new();
    for n in 0..3 {
        groups.push(app.group(&owner, json!({"name": format!("g{n}")})).await);
    }
    let mut c = connect(&app, &owner).await;
    assert_eq!(next(&mut c).await["type"], "hello");
    let mut answers = Vec::new();
    // Three groups, the first again, then two more frames: the sixth frame
    // in a minute is over the rate.
    for g in [
        &groups[0], &groups[1], &groups[2], &groups[0], &groups[1], &groups[0],
    ] {
        c.send(ws::Message::Text(
            format!("{{\"subscribe\":\"group:{g}\"}}").into(),
        ))
        .await
        .unwrap();
        let v = answer(&mut c).await;
        answers.push(if v["type"] == "subscribed" {
            "subscribed".to_string()
        } else {
            v["code"].as_str().unwrap_or("").to_string()
        });
    }
    assert_eq!(
        answers,
        [
            "subscribed",
            "subscribed",
            "too_many_subscriptions",
            "subscribed",
            "subscribed",
            "rate_limited"
        ]
    );
    assert_eq!(
        app.metric("qrgate_ws_subscribe_frames_total{result=\"rate_limited\"}")
            .await,
        1.0
    );
}
