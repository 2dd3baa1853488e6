//! Red packets on the real server: create, claim, settle, refund; limits and
//! risk controls; campaigns with referrals; concurrency and `kill -9`.

use super::helpers::*;
use super::ws::{connect, next_of};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Short lifetimes allowed, a high claim rate per user.
const FAST: &str = "[packets]\nmin_ttl_seconds = 1\nclaims_per_minute_per_user = 1000\n";

impl TestApp {
    pub async fn create_packet(&self, token: &str, key: &str, body: Value) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}/v1/packets", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Idempotency-Key", key.to_string()))
            .send_json(&body)
            .await
            .expect("request");
        let s = r.status().as_u16();
        let v = serde_json::from_slice(&r.body().await.expect("body")).unwrap_or(Value::Null);
        (s, v)
    }

    pub async fn claim(&self, token: &str, packet: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v1/packets/{packet}/claim"), Some(token), body)
            .await
    }

    /// The packet as the operator sees it (every claim, with its claimant).
    pub async fn packet(&self, id: &str) -> Value {
        let (s, v) = self
            .get(&format!("/v1/packets/{id}?claims_limit=1000"), Some(ADMIN))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Wait until the packet is settled; its view.
    pub async fn packet_closed(&self, id: &str) -> Value {
        for _ in 0..150 {
            let v = self.packet(id).await;
            if v["status"] == "closed" {
                return v;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("packet {id} did not close: {}", self.packet(id).await);
    }

    pub async fn wallet(&self, token: &str) -> Value {
        let (s, v) = self.get("/v1/wallet", Some(token)).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// A user with `fen` in their wallet.
    pub async fn funded(&self, name: &str, fen: u64) -> (String, String) {
        let (id, tok) = self.user(name).await;
        let (s, v) = self.earn(&format!("fund-{id}"), &id, fen).await;
        assert_eq!(s, 201, "{v}");
        (id, tok)
    }
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

#[actix_web::test]
async fn a_lucky_packet_is_claimed_once_per_user_settles_and_can_be_verified() {
    let app = TestApp::spawn_with("[wallets]\nearning_max_fen = 100000\n").await;
    let (alice, alice_tok) = app.funded("alice", 1000).await;
    let mut alice_ws = connect(&app, &alice_tok).await;
    let body = json!({"total": 300, "count": 3, "mode": "lucky", "message": "Happy new year",
                      "theme": "spring", "utm": {"utm_source": "poster"}});
    let (s, v) = app.create_packet(&alice_tok, "k1", body.clone()).await;
    assert_eq!(s, 201, "{v}");
    let id = s_(&v["id"]);
    assert!(id.starts_with("rp_"));
    assert_eq!(v["status"], "open");
    assert_eq!(v["sender"], alice.as_str());
    assert_eq!(v["advertising"], false);
    assert!(
        v["seed"].is_null(),
        "the seed stays secret until the packet closes"
    );
    assert!(s_(&v["url"]).ends_with(&format!("/p/{id}?theme=spring&utm_source=poster")));
    let commitment = s_(&v["commitment"]);
    let url = s_(&v["url"]);
    // The total is held at once.
    let w = app.wallet(&alice_tok).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(1000), Some(700)),
        "{w}"
    );

    // A retry answers the same packet; the key with another body is refused.
    let (s, again) = app.create_packet(&alice_tok, "k1", body).await;
    assert_eq!((s, s_(&again["id"])), (200, id.clone()), "{again}");
    let (s, v) = app
        .create_packet(
            &alice_tok,
            "k1",
            json!({"total": 301, "count": 3, "mode": "lucky"}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, "idempotency_key_reused"), "{v}");
    assert_eq!(app.wallet(&alice_tok).await["available"], 700, "held once");

    // The QR code holds the landing URL.
    let mut r = app
        .client
        .get(format!("{}/v1/packets/{id}/qr.png?size=256", app.base))
        .send()
        .await
        .expect("qr");
    assert_eq!(r.status().as_u16(), 200);
    let png = r.body().await.expect("png");
    let img = image::load_from_memory(&png).expect("png").to_luma8();
    let mut prep = rqrr::PreparedImage::prepare(img);
    let (_, content) = prep.detect_grids()[0].decode().expect("decode");
    assert_eq!(content, url);

    let mut claimed = Vec::new();
    let mut tokens = Vec::new();
    for n in 0..3 {
        let (_, tok) = app.user(&format!("c{n}")).await;
        let (s, v) = app.claim(&tok, &id, json!({})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["left"], 2 - n);
        let amount = v["amount"].as_u64().expect("amount");
        assert!(amount >= 1);
        // The share is in the claimant's wallet as soon as the claim is answered.
        assert_eq!(app.wallet(&tok).await["balance"].as_u64(), Some(amount));
        claimed.push(amount);
        tokens.push(tok);
    }
    assert_eq!(claimed.iter().sum::<u64>(), 300);
    let (s, v) = app.claim(&tokens[0], &id, json!({})).await;
    assert_eq!((s, code(&v)), (409, "already_claimed"), "{v}");
    let (_, late) = app.user("late").await;
    let (s, v) = app.claim(&late, &id, json!({})).await;
    assert_eq!((s, code(&v)), (410, "packet_empty"), "{v}");

    // The sender hears every claim and the packet emptying.
    for _ in 0..3 {
        let e = next_of(&mut alice_ws, "packet_claimed").await;
        assert_eq!(e["packet_id"], id.as_str());
    }
    let e = next_of(&mut alice_ws, "packet_empty").await;
    assert_eq!(e["claimed"], 300);

    // Settled: the hold is posted for what was paid; the seed is revealed
    // and recomputes every share.
    let v = app.packet_closed(&id).await;
    assert_eq!(v["refunded"], 0);
    assert_eq!(v["claimed_count"], 3);
    let seed = hex32(&s_(&v["seed"]));
    assert!(qrgate::domain::packet::verify_reveal(&seed, &commitment));
    let recomputed =
        qrgate::domain::packet::shares(qrgate::domain::packet::Mode::Lucky, &seed, 300, 3, 1);
    assert_eq!(recomputed, claimed);
    let listed: Vec<u64> = v["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| c["amount"].as_u64().expect("amount"))
        .collect();
    assert_eq!(listed, claimed);
    // Closed: anyone sees the amounts in claim order, and nobody's id.
    let (_, public) = app
        .get(&format!("/v1/packets/{id}?claims_limit=1000"), None)
        .await;
    let amounts: Vec<Value> = claimed.iter().map(|a| json!({ "amount": a })).collect();
    assert_eq!(public["claims"], json!(amounts), "{public}");
    // Anyone can check it with the verifier, from the landing URL alone.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(["verify-packet", &url])
        .output()
        .expect("run verify-packet");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("all 3 claims"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Claims are listed a page at a time.
    let (s, page) = app
        .get(
            &format!("/v1/packets/{id}?claims_offset=1&claims_limit=1"),
            None,
        )
        .await;
    assert_eq!(
        (s, page["claims"][0]["amount"].as_u64()),
        (200, Some(claimed[1]))
    );
    assert_eq!(page["claims"].as_array().map(Vec::len), Some(1));
    let w = app.wallet(&alice_tok).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(700), Some(700)),
        "{w}"
    );
    app.books_clean().await;
}

#[actix_web::test]
async fn creation_limits_and_insufficient_funds_hold_nothing() {
    let app = TestApp::spawn_with("[packets]\ndaily_max_fen = 500\nmax_total_fen = 400\n").await;
    let (_, tok) = app.funded("alice", 450).await;
    let cases = [
        (
            json!({"total": 101, "count": 10, "mode": "fixed"}),
            422,
            "packet_not_divisible",
        ),
        (
            json!({"total": 401, "count": 1, "mode": "lucky"}),
            422,
            "packet_above_maximum",
        ),
        (
            json!({"total": 5, "count": 10, "mode": "lucky"}),
            422,
            "packet_share_below_minimum",
        ),
        (
            json!({"total": 5, "count": 0, "mode": "lucky"}),
            422,
            "packet_bad_count",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "lucky", "ttl_seconds": 10}),
            400,
            "validation_failed",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "lucky", "utm": {"x": "y"}}),
            400,
            "validation_failed",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "lucky", "geofence": {"lat": 0, "lon": 0, "radius_m": 1}}),
            400,
            "validation_failed",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "lucky", "merchant": "acme"}),
            403,
            "forbidden",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "lucky", "referral_budget_fen": 10}),
            400,
            "validation_failed",
        ),
        (
            json!({"total": 5, "count": 1, "mode": "odd"}),
            400,
            "invalid_json",
        ),
    ];
    for (n, (body, status, c)) in cases.into_iter().enumerate() {
        let (s, v) = app
            .create_packet(&tok, &format!("bad-{n}"), body.clone())
            .await;
        assert_eq!((s, code(&v)), (status, c), "{body}: {v}");
    }
    // No Idempotency-Key.
    let (s, v) = app
        .post(
            "/v1/packets",
            Some(&tok),
            json!({"total": 5, "count": 1, "mode": "lucky"}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "idempotency_key_required"), "{v}");

    let (s, v) = app
        .create_packet(
            &tok,
            "ok",
            json!({"total": 400, "count": 4, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // 50 left: 60 is refused and holds nothing.
    let (s, v) = app
        .create_packet(
            &tok,
            "poor",
            json!({"total": 60, "count": 1, "mode": "lucky"}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "insufficient_funds"), "{v}");
    assert_eq!(app.wallet(&tok).await["available"], 50);
    // The daily total: 400 used of 500.
    let (_, rich) = app.funded("rich", 5000).await;
    let (s, _) = app
        .create_packet(
            &rich,
            "d1",
            json!({"total": 400, "count": 1, "mode": "lucky"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = app
        .create_packet(
            &rich,
            "d2",
            json!({"total": 101, "count": 1, "mode": "lucky"}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "daily_packet_limit"), "{v}");
    let (s, _) = app
        .create_packet(
            &rich,
            "d3",
            json!({"total": 100, "count": 1, "mode": "lucky"}),
        )
        .await;
    assert_eq!(s, 201, "exactly the daily total");
    // Claims: unknown, malformed.
    let (s, v) = app
        .claim(&rich, "rp_AAAAAAAAAAAAAAAAAAAAAA", json!({}))
        .await;
    assert_eq!((s, code(&v)), (404, "packet_not_found"), "{v}");
    let (s, v) = app.claim(&rich, "nope", json!({})).await;
    assert_eq!((s, code(&v)), (400, "invalid_id"), "{v}");
    app.books_clean().await;
}

#[actix_web::test]
async fn expiry_refunds_the_rest_even_across_a_kill() {
    let mut app = TestApp::spawn_with(FAST).await;
    let (_, alice) = app.funded("alice", 1000).await;
    let (s, v) = app
        .create_packet(
            &alice,
            "e1",
            json!({"total": 500, "count": 5, "mode": "fixed", "ttl_seconds": 3}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = s_(&v["id"]);
    let (_, bob) = app.user("bob").await;
    let (s, v) = app.claim(&bob, &id, json!({})).await;
    assert_eq!((s, v["amount"].as_u64()), (200, Some(100)), "{v}");
    // Crash before the expiry; the refund must still happen after restart.
    app.kill9();
    app.restart().await;
    let mut ws = connect(&app, &alice).await;
    let v = app.packet_closed(&id).await;
    assert_eq!(v["refunded"], 400, "{v}");
    let e = next_of(&mut ws, "packet_refunded").await;
    assert_eq!(
        (e["packet_id"].as_str(), e["amount"].as_u64()),
        (Some(id.as_str()), Some(400))
    );
    let w = app.wallet(&alice).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(900), Some(900)),
        "{w}"
    );
    assert_eq!(app.wallet(&bob).await["balance"], 100);
    let (s, v) = app.claim(&bob, &id, json!({})).await;
    assert_eq!((s, code(&v)), (409, "already_claimed"), "{v}");
    let (_, carol) = app.user("carol").await;
    let (s, v) = app.claim(&carol, &id, json!({})).await;
    assert_eq!((s, code(&v)), (410, "packet_expired"), "{v}");
    // A packet nobody claimed is voided: everything goes back.
    let (s, v) = app
        .create_packet(
            &alice,
            "e2",
            json!({"total": 300, "count": 3, "mode": "lucky", "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let v = app.packet_closed(&s_(&v["id"])).await;
    assert_eq!(v["refunded"], 300);
    assert_eq!(app.wallet(&alice).await["available"], 900);
    app.books_clean().await;
}

#[actix_web::test]
async fn five_hundred_concurrent_claimants_share_one_hundred_shares_exactly() {
    let app = TestApp::spawn_with("[wallets]\nearning_max_fen = 100000\n").await;
    let (_, alice) = app.funded("alice", 10_000).await;
    let (s, v) = app
        .create_packet(
            &alice,
            "hot",
            json!({"total": 10_000, "count": 100, "mode": "lucky"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = s_(&v["id"]);
    let mut users = Vec::new();
    for n in 0..500 {
        users.push(app.user(&format!("u{n}")).await.1);
    }
    let results =
        futures_util::future::join_all(users.iter().map(|t| app.claim(t, &id, json!({})))).await;
    let mut by_status: HashMap<(u16, String), usize> = HashMap::new();
    let mut paid = 0u64;
    for (s, v) in &results {
        *by_status.entry((*s, code(v).to_string())).or_default() += 1;
        if *s == 200 {
            paid += v["amount"].as_u64().expect("amount");
        }
    }
    assert_eq!(
        by_status.get(&(200, String::new())),
        Some(&100),
        "{by_status:?}"
    );
    assert_eq!(
        by_status.get(&(410, "packet_empty".into())),
        Some(&400),
        "{by_status:?}"
    );
    assert_eq!(paid, 10_000);
    let v = app.packet_closed(&id).await;
    assert_eq!(
        (v["claimed_count"].as_u64(), v["refunded"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(app.wallet(&alice).await["balance"], 0);
    app.books_clean().await;
}

#[actix_web::test]
async fn risk_controls_rate_limit_blacklist_breaker_and_geofence() {
    let app = TestApp::spawn_with(
        "[packets]\nclaims_per_minute_per_user = 3\nbreaker_claims_per_second = 3\nbreaker_pause_seconds = 5\n",
    )
    .await;
    let (alice_id, alice) = app.funded("alice", 5000).await;
    let mut alice_ws = connect(&app, &alice).await;
    let new = |key: &'static str, body: Value| {
        let alice = alice.clone();
        let app = &app;
        async move {
            let (s, v) = app.create_packet(&alice, key, body).await;
            assert_eq!(s, 201, "{v}");
            s_(&v["id"])
        }
    };
    // Geofence around a square in Beijing.
    let fenced = new(
        "g",
        json!({"total": 100, "count": 10, "mode": "fixed",
               "geofence": {"lat": 39.9055, "lon": 116.3976, "radius_m": 500}}),
    )
    .await;
    let (_, bob) = app.user("bob").await;
    let (s, v) = app.claim(&bob, &fenced, json!({})).await;
    assert_eq!((s, code(&v)), (403, "outside_geofence"), "{v}");
    let (s, v) = app
        .claim(&bob, &fenced, json!({"lat": 31.23, "lon": 121.47}))
        .await;
    assert_eq!((s, code(&v)), (403, "outside_geofence"), "{v}");
    let (s, v) = app
        .claim(&bob, &fenced, json!({"lat": 39.906, "lon": 116.398}))
        .await;
    assert_eq!(s, 200, "{v}");
    // Bob made 3 claim attempts this minute: the 4th is refused.
    let (s, v) = app
        .claim(&bob, &fenced, json!({"lat": 39.906, "lon": 116.398}))
        .await;
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");

    // The blacklist refuses claimants and senders, until lifted.
    let (carol_id, carol) = app.funded("carol", 100).await;
    let (s, v) = app
        .call(
            "PUT",
            &format!("/v1/admin/blacklist/{carol_id}"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (403, "forbidden"),
        "users cannot blacklist: {v}"
    );
    let (s, v) = app
        .call(
            "PUT",
            &format!("/v1/admin/blacklist/{carol_id}"),
            Some(ADMIN),
            Some(json!({"reason": "fraud ring"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let open = new("o", json!({"total": 100, "count": 10, "mode": "fixed"})).await;
    let (s, v) = app.claim(&carol, &open, json!({})).await;
    assert_eq!((s, code(&v)), (403, "account_frozen"), "{v}");
    let (s, v) = app
        .create_packet(
            &carol,
            "c",
            json!({"total": 10, "count": 1, "mode": "fixed"}),
        )
        .await;
    assert_eq!((s, code(&v)), (403, "account_frozen"), "{v}");
    let (s, v) = app.get("/v1/admin/blacklist", Some(ADMIN)).await;
    assert_eq!(
        (s, v[0]["reason"].as_str()),
        (200, Some("fraud ring")),
        "{v}"
    );
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/admin/blacklist/{carol_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = app.claim(&carol, &open, json!({})).await;
    assert_eq!(s, 200, "{v}");

    // The breaker: more than 3 claim attempts within a second pause the packet.
    let hot = new("h", json!({"total": 100, "count": 10, "mode": "fixed"})).await;
    let mut claimers = Vec::new();
    for n in 0..6 {
        claimers.push(app.user(&format!("h{n}")).await.1);
    }
    let results =
        futures_util::future::join_all(claimers.iter().map(|t| app.claim(t, &hot, json!({}))))
            .await;
    let paused = results
        .iter()
        .filter(|(s, v)| *s == 503 && code(v) == "packet_paused")
        .count();
    assert!(paused >= 1, "{results:?}");
    let e = next_of(&mut alice_ws, "packet_paused").await;
    assert_eq!(e["packet_id"], hot.as_str());
    let v = app.packet(&hot).await;
    assert!(v["paused_until"].is_string(), "{v}");
    assert_eq!(v["sender"], alice_id.as_str());
    app.books_clean().await;
}

#[actix_web::test]
async fn campaign_packets_are_advertising_and_pay_referrals_within_budget() {
    // Fresh accounts may earn bonuses here (the age rule: `access.rs`).
    let app = TestApp::spawn_with(&format!("{FAST}referral_min_account_age_seconds = 0\n")).await;
    let (_, alice) = app.user("alice").await;
    let body = json!({"total": 50, "count": 5, "mode": "fixed", "merchant": "acme",
                      "referral_budget_fen": 20, "referral_bonus_fen": 10, "ttl_seconds": 4});
    let (s, v) = app.create_packet(&alice, "c", body.clone()).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = app
        .create_packet(
            ADMIN,
            "c0",
            json!({"total": 50, "count": 5, "mode": "fixed"}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (403, "forbidden"),
        "the operator only makes campaign packets: {v}"
    );
    let (s, v) = app.create_packet(ADMIN, "c", body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["advertising"].as_bool(), v["merchant"].as_str()),
        (Some(true), Some("acme"))
    );
    let id = s_(&v["id"]);

    let (bob_id, bob) = app.user("bob").await;
    let (s, v) = app.claim(&bob, &id, json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(s_(&v["share_url"]).ends_with(&format!("?ref={bob_id}")));
    // Two new claimants through Bob's link earn him two bonuses; a third
    // would exceed the budget of 20.
    for n in 0..3 {
        let (_, t) = app.user(&format!("r{n}")).await;
        let (s, v) = app.claim(&t, &id, json!({"ref": bob_id})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(app.wallet(&t).await["balance"], 10);
    }
    assert_eq!(app.wallet(&bob).await["balance"], 10 + 20);
    // A referrer who has not claimed earns nothing.
    let (stranger, _) = app.user("stranger").await;
    let (_, t) = app.user("r3").await;
    let (s, _) = app.claim(&t, &id, json!({"ref": stranger})).await;
    assert_eq!(s, 200);
    let v = app.packet_closed(&id).await;
    assert_eq!(
        (v["refunded"].as_u64(), v["claimed_amount"].as_u64()),
        (Some(0), Some(50)),
        "{v}"
    );
    app.books_clean().await;
}

#[actix_web::test]
async fn kill_during_claims_loses_no_acknowledged_share_and_pays_none_twice() {
    let mut app =
        TestApp::spawn_with(&format!("{FAST}[wallets]\nearning_max_fen = 100000\n")).await;
    let (_, alice) = app.funded("alice", 20_000).await;
    let mut users = Vec::new();
    for n in 0..400 {
        users.push(app.user(&format!("u{n}")).await);
    }
    let (s, v) = app
        .create_packet(
            &alice,
            "k",
            json!({"total": 20_000, "count": 300, "mode": "lucky", "ttl_seconds": 6}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = s_(&v["id"]);
    // Claims in flight from many clients; kill -9 partway through.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, u64)>::new()));
    let base = app.base.clone();
    let mut handles = Vec::new();
    for (uid, tok) in users.clone() {
        let (acked, base, id) = (acked.clone(), base.clone(), id.clone());
        handles.push(actix_web::rt::spawn(async move {
            let c = client();
            if let Ok(mut r) = c
                .post(format!("{base}/v1/packets/{id}/claim"))
                .insert_header(("Authorization", format!("Bearer {tok}")))
                .send_json(&json!({}))
                .await
            {
                if r.status().as_u16() == 200 {
                    if let Ok(b) = r.body().await {
                        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                        if let Some(a) = v["amount"].as_u64() {
                            acked.lock().unwrap().push((uid, tok, a));
                        }
                    }
                }
            }
        }));
    }
    // Kill once some claims were answered, while others are in flight.
    for _ in 0..2000 {
        if acked.lock().unwrap().len() >= 20 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    app.kill9();
    for h in handles {
        let _ = h.await;
    }
    let acked = acked.lock().unwrap().clone();
    app.restart().await;
    let v = app.packet(&id).await;
    let stored: HashMap<String, u64> = v["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| (s_(&c["user_id"]), c["amount"].as_u64().expect("amount")))
        .collect();
    assert_eq!(
        stored.len(),
        v["claims"].as_array().map_or(0, |a| a.len()),
        "one claim per user"
    );
    for (uid, tok, amount) in &acked {
        assert_eq!(
            stored.get(uid),
            Some(amount),
            "acknowledged claim of {uid} lost"
        );
        let (s, v) = app.claim(tok, &id, json!({})).await;
        assert_eq!((s, code(&v)), (409, "already_claimed"), "{v}");
        assert_eq!(app.wallet(tok).await["balance"].as_u64(), Some(*amount));
    }
    let claimed: u64 = stored.values().sum();
    eprintln!(
        "{} acknowledged, {} stored before the kill",
        acked.len(),
        stored.len()
    );
    assert!(
        acked.len() < 300,
        "the kill came after every claim was answered: the test proves nothing"
    );
    // The rest expires and goes back to Alice.
    let v = app.packet_closed(&id).await;
    assert_eq!(v["refunded"].as_u64(), Some(20_000 - claimed), "{v}");
    assert_eq!(
        app.wallet(&alice).await["balance"].as_u64(),
        Some(20_000 - claimed)
    );
    app.books_clean().await;
}

/// PNG width from its header (IHDR).
fn png_width(png: &[u8]) -> u32 {
    u32::from_be_bytes([png[16], png[17], png[18], png[19]])
}

#[actix_web::test]
async fn packet_qr_codes_are_cached_capped_and_limited_for_callers_without_a_session() {
    let app = TestApp::spawn_with(&format!(
        "{FAST}[wallets]\nearning_max_fen = 100000\n[limits]\nanonymous_images_per_minute_per_ip = 3\n"
    ))
    .await;
    let (_, alice) = app.funded("alice", 1000).await;
    let (s, v) = app
        .create_packet(
            &alice,
            "k",
            json!({"total": 100, "count": 1, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = s_(&v["id"]);
    let fetch = |size: u32, token: Option<String>| {
        let mut req = app
            .client
            .get(format!("{}/v1/packets/{id}/qr.png?size={size}", app.base));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        async move {
            let mut r = req.send().await.expect("qr");
            (r.status().as_u16(), r.body().await.expect("body"))
        }
    };
    let misses = app.metric("qrgate_qr_images_total{result=\"miss\"}").await;
    // Without a session: at most 1024 pixels, rounded down to a step of 64
    // (the code fills whole modules, so the image is at most that size).
    let within = |w: u32, size: u32| w <= size && w > size - 64;
    let (s, first) = fetch(2048, None).await;
    assert!(
        s == 200 && within(png_width(&first), 1024),
        "{}",
        png_width(&first)
    );
    let (s, png) = fetch(700, None).await;
    assert!(
        s == 200 && within(png_width(&png), 640),
        "{}",
        png_width(&png)
    );
    let (s, again) = fetch(2048, None).await;
    assert_eq!((s, &again), (200, &first));
    assert_eq!(
        app.metric("qrgate_qr_images_total{result=\"miss\"}").await - misses,
        2.0,
        "the third was served from the cache"
    );
    let (s, body) = fetch(512, None).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!((s, code(&v)), (429, "rate_limited"), "{v}");
    // With a session: the full size, and no limit per network.
    for _ in 0..5 {
        let (s, png) = fetch(2048, Some(alice.clone())).await;
        assert!(s == 200 && png_width(&png) > 1024, "{}", png_width(&png));
    }
}
