//! Who may act as whom: the admin token a server starts with, and user
//! sessions that end (logout, revocation, expiry) and can be issued again.

use super::helpers::*;
use super::ws::connect;
use awc::ws;
use futures_util::StreamExt;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The next close frame's code (answering nothing else), within 5 s.
async fn closed_with(conn: &mut super::ws::Conn) -> Option<u16> {
    let fut = async {
        loop {
            match conn.next().await {
                Some(Ok(ws::Frame::Close(reason))) => return reason.map(|r| u16::from(r.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    };
    actix_web::rt::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("closed within 5 s")
}

#[actix_web::test]
async fn with_no_admin_token_configured_one_is_generated_into_the_data_dir() {
    let mut app = TestApp::spawn_with("admin_token = \"\"\n").await;
    let path = app.data_dir().join("admin.token");
    let token = std::fs::read_to_string(&path).expect("admin.token written");
    assert!(token.len() >= 32, "a long token: {token}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by the owner only");
    let (s, v) = app.get("/v1/admin/ledger/check", Some(&token)).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app.get("/v1/admin/ledger/check", Some(ADMIN)).await;
    assert_eq!(s, 401, "no other token is the admin's");
    assert!(
        app.log().contains("admin.token"),
        "the log says where it is"
    );
    assert!(!app.log().contains(&token), "never the token itself");
    // The same token after a restart.
    app.restart().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    let (s, _) = app.get("/v1/admin/ledger/check", Some(&token)).await;
    assert_eq!(s, 200);
}

#[test]
fn the_example_admin_token_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    for (bind, token, ok) in [
        ("0.0.0.0:0", "dev-admin-token-change-me", false),
        ("0.0.0.0:0", "only-twenty-six-characters", false),
        ("127.0.0.1:0", "dev-admin-token-change-me", true),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "bind = \"{bind}\"\ndata_dir = \"{}\"\nadmin_token = \"{token}\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_qrgate"))
            .args(["check-config", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run qrgate");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), ok, "{bind} {token}: {text}");
        if !ok {
            assert!(text.contains("loopback"), "says why: {text}");
        }
    }
}

#[actix_web::test]
async fn logout_ends_that_session_only_and_closes_its_websockets() {
    let app = TestApp::spawn().await;
    let (alice, first) = app.user("alice").await;
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{alice}/sessions"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let second = s_(&v["token"]);
    assert!(v["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 29 * 86_400);
    let mut ws1 = connect(&app, &first).await;
    let mut ws2 = connect(&app, &second).await;
    assert_eq!(app.get("/v1/wallet", Some(&first)).await.0, 200);

    let (s, v) = app
        .call_with("DELETE", "/v1/sessions/current", Some(&first), None, &[])
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = app.get("/v1/wallet", Some(&first)).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    assert_eq!(closed_with(&mut ws1).await, Some(4001));
    // The other session goes on, its WebSocket too.
    assert_eq!(app.get("/v1/wallet", Some(&second)).await.0, 200);
    let open = actix_web::rt::time::timeout(Duration::from_millis(300), ws2.next()).await;
    assert!(
        !matches!(open, Ok(Some(Ok(ws::Frame::Close(_)))) | Ok(None)),
        "the other session's socket stays open: {open:?}"
    );
    // A logged-out token cannot open a WebSocket either.
    let (s, _) = app.get(&format!("/v1/ws?token={first}"), None).await;
    assert_eq!(s, 401);
}

#[actix_web::test]
async fn revocation_ends_every_session_at_once_durably_and_a_new_one_works() {
    let mut app = TestApp::spawn().await;
    let (bob, first) = app.user("bob").await;
    let issue = |app: &TestApp| {
        let (base, client) = (app.base.clone(), app.client.clone());
        let bob = bob.clone();
        async move {
            let mut r = client
                .post(format!("{base}/v1/admin/users/{bob}/sessions"))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")))
                .send_json(&json!({}))
                .await
                .expect("issue");
            assert_eq!(r.status().as_u16(), 201);
            let v: serde_json::Value = r.json().await.expect("json");
            s_(&v["token"])
        }
    };
    let second = issue(&app).await;
    // Both are cached by a request first.
    assert_eq!(app.get("/v1/wallet", Some(&first)).await.0, 200);
    assert_eq!(app.get("/v1/wallet", Some(&second)).await.0, 200);
    let mut ws = connect(&app, &second).await;

    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{bob}/sessions/revoke"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    for t in [&first, &second] {
        let (s, v) = app.get("/v1/wallet", Some(t)).await;
        assert_eq!((s, code(&v)), (401, "unauthorized"));
    }
    assert_eq!(closed_with(&mut ws).await, Some(4001));
    // The app's backend logs bob in again.
    let third = issue(&app).await;
    assert_eq!(app.get("/v1/wallet", Some(&third)).await.0, 200);
    // Durable: after a kill -9, still ended; the new one still works.
    app.restart().await;
    for t in [&first, &second] {
        assert_eq!(app.get("/v1/wallet", Some(t)).await.0, 401);
    }
    assert_eq!(app.get("/v1/wallet", Some(&third)).await.0, 200);
    // Unknown users: 404, nothing issued.
    let nobody = "u_AAAAAAAAAAAAAAAAAAAAAA";
    for path in ["sessions", "sessions/revoke"] {
        let (s, v) = app
            .post(
                &format!("/v1/admin/users/{nobody}/{path}"),
                Some(ADMIN),
                json!({}),
            )
            .await;
        assert_eq!((s, code(&v)), (404, "user_not_found"), "{path}");
    }
}

#[actix_web::test]
async fn an_expired_session_answers_401() {
    let mut app = TestApp::spawn().await;
    let (carol, token) = app.user("carol").await;
    assert_eq!(app.get("/v1/wallet", Some(&token)).await.0, 200);
    // Move its expiry into the past, as a month without use would.
    app.kill9();
    {
        let data = app.data_dir();
        let key = qrgate::keys::KeyRing::load_or_create(&data)
            .unwrap()
            .journal_key();
        let store = open_storage(&data, key, Default::default());
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let mut s = store.session(&hash).unwrap().expect("stored");
        assert_eq!(s.user.to_string(), carol);
        s.expires_at = Some(chrono::Utc::now().timestamp() - 1);
        let mut w = qrgate::storage::WriteSet::new();
        w.session(&hash, &s);
        store.commit(w).await.unwrap();
        store.shutdown().unwrap();
    }
    app.restart().await;
    let (s, v) = app.get("/v1/wallet", Some(&token)).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
}

/// The server's clock moved (`QRGATE_CLOCK_OFFSET_SECS`) instead of a
/// month of waiting: a session used today still works 29 days on, and one
/// left unused past `sessions.lifetime_days` (30) ends; a fresh login works.
#[actix_web::test]
async fn a_month_without_use_ends_a_session() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.user("erin").await;
    assert_eq!(app.get("/v1/wallet", Some(&token)).await.0, 200);
    let days = |d: i64| {
        (
            "QRGATE_CLOCK_OFFSET_SECS".to_string(),
            (d * 86_400).to_string(),
        )
    };
    app.env = vec![days(29)];
    app.restart().await;
    assert_eq!(
        app.get("/v1/wallet", Some(&token)).await.0,
        200,
        "29 days on"
    );
    app.env = vec![days(29 + 31)];
    app.restart().await;
    let (s, v) = app.get("/v1/wallet", Some(&token)).await;
    assert_eq!(
        (s, code(&v)),
        (401, "unauthorized"),
        "31 days after its last use"
    );
    let (_, fresh) = app.user("frank").await;
    assert_eq!(app.get("/v1/wallet", Some(&fresh)).await.0, 200);
}

#[actix_web::test]
async fn a_websocket_ticket_opens_one_socket_and_dies_with_its_session() {
    let app = TestApp::spawn().await;
    let (dana, token) = app.user("dana").await;
    let ticket = |app: &TestApp, token: &str| {
        let (base, client, token) = (app.base.clone(), app.client.clone(), token.to_string());
        async move {
            let mut r = client
                .post(format!("{base}/v1/ws/ticket"))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .send()
                .await
                .expect("ticket");
            assert_eq!(r.status().as_u16(), 201);
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["expires_in"], 60);
            s_(&v["ticket"])
        }
    };
    let open = |app: &TestApp, ticket: &str| {
        awc::Client::new()
            .ws(format!("{}/v1/ws?ticket={ticket}", app.base))
            .connect()
    };
    let t = ticket(&app, &token).await;
    let (_, mut conn) = open(&app, &t).await.expect("the ticket opens a socket");
    match actix_web::rt::time::timeout(Duration::from_secs(5), conn.next()).await {
        Ok(Some(Ok(ws::Frame::Text(b)))) => {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["user_id"], dana.as_str());
        }
        other => panic!("no hello: {other:?}"),
    }
    // Once only.
    let (s, v) = app.get(&format!("/v1/ws?ticket={t}"), None).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "a used ticket");
    let (s, _) = app.get("/v1/ws?ticket=qrt_never-issued", None).await;
    assert_eq!(s, 401);
    // A ticket of a session that ended meanwhile opens nothing; the socket
    // the session opened closes.
    let unused = ticket(&app, &token).await;
    let (s, _) = app
        .call_with("DELETE", "/v1/sessions/current", Some(&token), None, &[])
        .await;
    assert_eq!(s, 204);
    assert_eq!(closed_with(&mut conn).await, Some(4001));
    let (s, _) = app.get(&format!("/v1/ws?ticket={unused}"), None).await;
    assert_eq!(s, 401, "the session ended after the ticket was issued");
    // The admin token is nobody's: no ticket.
    let (s, _) = app.post("/v1/ws/ticket", Some(ADMIN), json!({})).await;
    assert_eq!(s, 403);
}

#[actix_web::test]
async fn a_frozen_account_reads_and_is_credited_but_acts_on_nothing() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Freeze"})).await;
    // The group's only use: its invitation.
    let (_, invite, _) = app.invite(&owner, &g, json!({})).await;
    let (eve, eve_tok) = app.user("eve").await;
    let (s, v) = app.earn("before-freeze", &eve, 500).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{eve}/freeze"),
            Some(&owner),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "users cannot freeze");
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{eve}/freeze"),
            Some(ADMIN),
            json!({"reason": "chargebacks"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let refused = |app: &TestApp, tok: &str| {
        let (app_base, client, tok, invite) = (
            app.base.clone(),
            app.client.clone(),
            tok.to_string(),
            invite.clone(),
        );
        async move {
            let call = |method: &'static str, path: String, body: serde_json::Value| {
                let (client, base, tok) = (client.clone(), app_base.clone(), tok.clone());
                async move {
                    let mut r = client
                        .request(method.parse().unwrap(), format!("{base}{path}"))
                        .insert_header(("Authorization", format!("Bearer {tok}")))
                        .insert_header(("Idempotency-Key", "freeze-test-1"))
                        .send_json(&body)
                        .await
                        .expect("call");
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    (r.status().as_u16(), v)
                }
            };
            vec![
                (
                    "join",
                    call("POST", "/v1/join".into(), json!({"token": invite})).await,
                ),
                (
                    "packet",
                    call(
                        "POST",
                        "/v1/packets".into(),
                        json!({"total": 10, "count": 1, "mode": "fixed"}),
                    )
                    .await,
                ),
                (
                    "code",
                    call("POST", "/v1/codes".into(), json!({"page": "/landing"})).await,
                ),
                (
                    "payout",
                    call("POST", "/v1/payouts".into(), json!({"amount": 100})).await,
                ),
            ]
        }
    };
    for (what, (s, v)) in refused(&app, &eve_tok).await {
        assert_eq!((s, code(&v)), (403, "account_frozen"), "{what}: {v}");
    }
    // Reads and earnings still work; durable across a kill.
    app.restart().await;
    for (what, (s, v)) in refused(&app, &eve_tok).await {
        assert_eq!(
            (s, code(&v)),
            (403, "account_frozen"),
            "{what} after a restart: {v}"
        );
    }
    let (s, v) = app.earn("while-frozen", &eve, 100).await;
    assert_eq!(s, 201, "earnings still credit: {v}");
    assert_eq!(app.balance(&eve_tok).await, 600);
    let (s, v) = app.get("/v1/admin/blacklist", Some(ADMIN)).await;
    assert_eq!(
        (s, v[0]["user_id"].as_str()),
        (200, Some(eve.as_str())),
        "listed: {v}"
    );
    // Unfrozen: the join goes through.
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{eve}/unfreeze"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = app.join(&eve_tok, &invite).await;
    assert_eq!(s, 200, "{v}");
    let nobody = "u_AAAAAAAAAAAAAAAAAAAAAA";
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{nobody}/freeze"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "user_not_found"));
}

#[actix_web::test]
async fn an_api_key_acts_as_the_operator_within_its_scopes_only() {
    let app = TestApp::spawn().await;
    let (uid, tok) = app.user("worker").await;
    let key = |scopes: serde_json::Value| {
        let (base, client) = (app.base.clone(), app.client.clone());
        async move {
            let mut r = client
                .post(format!("{base}/v1/admin/api-keys"))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")))
                .send_json(&json!({"name": "backend", "scopes": scopes}))
                .await
                .expect("create key");
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(r.status().as_u16(), 201, "{v}");
            (s_(&v["id"]), s_(&v["key"]))
        }
    };
    let (earn_id, earn) = key(json!(["earnings:write"])).await;
    let (_, reports) = key(json!(["reports:read", "sessions:write"])).await;
    let (_, moderation) = key(json!(["moderation"])).await;
    let earning = json!({"event_id": "k-1", "user_id": uid, "kind": "task_completed", "amount": 5});
    let (s, v) = app.post("/v1/earnings", Some(&earn), earning.clone()).await;
    assert_eq!(s, 201, "{v}");
    for (who, path) in [(&reports, "/v1/earnings"), (&moderation, "/v1/earnings")] {
        let (s, v) = app.post(path, Some(who), earning.clone()).await;
        assert_eq!((s, code(&v)), (403, "insufficient_scope"), "{v}");
    }
    assert_eq!(
        app.get("/v1/admin/ledger/check", Some(&reports)).await.0,
        200
    );
    assert_eq!(app.get("/metrics", Some(&reports)).await.0, 200);
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{uid}/sessions"),
            Some(&reports),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app.get("/v1/admin/ledger/check", Some(&earn)).await;
    assert_eq!((s, code(&v)), (403, "insufficient_scope"), "{v}");
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{uid}/freeze"),
            Some(&moderation),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // Keys manage no keys; they are not users either.
    let (s, v) = app.get("/v1/admin/api-keys", Some(&moderation)).await;
    assert_eq!((s, code(&v)), (403, "insufficient_scope"), "{v}");
    let (s, _) = app.get("/v1/wallet", Some(&earn)).await;
    assert_eq!(s, 403);
    assert_eq!(app.get("/v1/wallet", Some(&tok)).await.0, 200);
    // Listed without the key; stored hashed.
    let (s, list) = app.get("/v1/admin/api-keys", Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    assert!(!list.to_string().contains(&earn), "never the key: {list}");
    // Bad scopes and names.
    for body in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "", "scopes": ["moderation"]}),
    ] {
        let (s, v) = app.post("/v1/admin/api-keys", Some(ADMIN), body).await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    }
    // Revoked: 401 at once; an unknown id 404.
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/admin/api-keys/{earn_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = app.post("/v1/earnings", Some(&earn), earning).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    let (s, v) = app
        .call("DELETE", "/v1/admin/api-keys/ak_nope", Some(ADMIN), None)
        .await;
    assert_eq!((s, code(&v)), (404, "api_key_not_found"), "{v}");
}

#[actix_web::test]
async fn api_keys_survive_a_restart_and_are_stored_hashed() {
    let mut app = TestApp::spawn().await;
    let (s, v) = app
        .post(
            "/v1/admin/api-keys",
            Some(ADMIN),
            json!({"name": "ops", "scopes": ["reports:read"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = s_(&v["key"]);
    app.restart().await;
    assert_eq!(app.get("/v1/admin/ledger/check", Some(&key)).await.0, 200);
    app.kill9();
    assert!(
        !super::helpers::any_file_holds(&app.data_dir(), key.as_bytes()),
        "the key itself is in no file of the data dir"
    );
}
