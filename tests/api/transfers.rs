//! Payouts through WeChat Pay's merchant transfer API as the simulator
//! speaks it: the user's confirmation (held, confirmed, cancelled at its
//! deadline, confirmed while being cancelled), the real name of large
//! transfers, the provider's error codes and its signature probes.

use super::helpers::*;
use super::payouts::{browse, server, Sim};
use serde_json::{json, Value};
use std::time::Duration;

async fn faults(sim: &Sim, f: Value) {
    let (s, v) = sim.post("/sim/faults", f).await;
    assert!(s < 300, "{s} {v}");
}

/// The `payout_updated` events of `tok`'s feed for payout `id`.
async fn updates(app: &TestApp, tok: &str, id: &str) -> Vec<Value> {
    let (s, v) = app.get("/v1/events?limit=1000", Some(tok)).await;
    assert_eq!(s, 200, "{v}");
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["type"] == "payout_updated" && e["payout_id"] == id)
        .collect()
}

/// A transfer held at WAIT_USER_CONFIRM: the payout shows what the app
/// hands to WeChat (in its view, its event and its confirm page); the user
/// confirms and is paid once.
#[actix_web::test]
async fn a_payout_waits_for_the_users_confirmation_then_pays() {
    let sim = Sim::start();
    faults(&sim, json!({"confirmation": "hold"})).await;
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "dora", 1000, "o-dora").await;
    let (s, v) = app.payout(&tok, "c-1", 300).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let ptn = s_(&v["partner_trade_no"]);
    let waiting = sim
        .status_of(&app, &tok, &id, "awaiting_confirmation")
        .await;
    let confirm = &waiting["confirm"];
    assert_eq!(confirm["mch_id"], "1900000001", "{waiting}");
    assert_eq!(confirm["app_id"], "wx-qrgate-sim", "{waiting}");
    let package = s_(&confirm["package_info"]);
    assert!(!package.is_empty(), "{waiting}");
    assert!(waiting["confirm_by"].is_string(), "{waiting}");
    // partner_trade_no is the provider's out_bill_no.
    let t = sim.transfer(&ptn).await;
    assert_eq!(t["state"], "WAIT_USER_CONFIRM", "{t}");
    assert_eq!(t["package_info"], json!(package), "{t}");
    // The money stays held meanwhile.
    let (_, w) = app.get("/v1/wallet", Some(&tok)).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(1000), Some(700)),
        "{w}"
    );
    let events = updates(&app, &tok, &id).await;
    let asked = events
        .iter()
        .find(|e| e["status"] == "awaiting_confirmation")
        .expect("an awaiting_confirmation event");
    assert_eq!(asked["confirm"]["package_info"], json!(package), "{asked}");

    // The confirm page carries the package for WeixinJSBridge, escaped.
    let url = format!("{}/payouts/{id}/confirm", app.base);
    let (s, _, page) = browse(&app, &url, "text/html").await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("requestMerchantTransfer"), "{page}");
    assert!(page.contains("data-app-id=\"wx-qrgate-sim\""), "{page}");
    assert!(page.contains("¥3.00"), "{page}");
    // It loads WeChat's JS-SDK and configures it for its own URL, signed
    // with the official account's jsapi_ticket.
    assert!(
        page.contains("res.wx.qq.com/open/js/jweixin-1.6.0.js"),
        "{page}"
    );
    let attr = page
        .split("data-jsapi=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("data-jsapi");
    let jsapi: Value = serde_json::from_str(&attr.replace("&quot;", "\"").replace("&#34;", "\""))
        .expect("wx.config arguments");
    assert_eq!(jsapi["appId"], "wx-qrgate-sim", "{jsapi}");
    let (s, t) = sim.get("/sim/jsapi_ticket").await;
    assert_eq!(s, 200);
    let ticket = s_(&t["ticket"]);
    assert_eq!(
        jsapi["signature"],
        json!(qrgate_provider::jsapi::signature(
            &ticket,
            jsapi["nonceStr"].as_str().unwrap_or(""),
            jsapi["timestamp"].as_i64().unwrap_or(0),
            &url
        )),
        "{jsapi}"
    );
    let (s, _, _) = browse(
        &app,
        &format!(
            "{}/payouts/00000000000000000000000000000000/confirm",
            app.base
        ),
        "text/html",
    )
    .await;
    assert_eq!(s, 404);

    let (s, v) = sim
        .post(
            "/sim/confirm",
            json!({"out_bill_no": ptn, "action": "confirm"}),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    let done = app.settled(&tok, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done.get("confirm").is_none(), "{done}");
    assert_eq!(app.balance(&tok).await, 700);
    let (s, _, page) = browse(&app, &url, "text/html").await;
    assert_eq!(s, 200);
    assert!(
        !page.contains("data-package"),
        "no package once paid: {page}"
    );
    app.books_clean().await;
}

/// Not confirmed by its deadline: the job cancels it, and only CANCELLED
/// (not CANCELING) returns the money.
#[actix_web::test]
async fn an_unconfirmed_payout_is_cancelled_at_its_deadline_and_its_money_returns() {
    let sim = Sim::start();
    faults(&sim, json!({"confirmation": "hold", "hold_cancels": true})).await;
    let app = server(&sim, "confirm_timeout_seconds = 1").await;
    let (_, tok) = app.payee(&sim, "emil", 1000, "o-emil").await;
    let (s, v) = app.payout(&tok, "c-2", 400).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let ptn = s_(&v["partner_trade_no"]);
    sim.status_of(&app, &tok, &id, "awaiting_confirmation")
        .await;
    // The deadline passes: the job asks the provider to cancel.
    sim.transfer_in(&ptn, "CANCELING").await;
    // CANCELING is not final: the payout still waits, its money held.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = app.get(&format!("/v1/payouts/{id}"), Some(&tok)).await;
    assert_eq!(v["status"], "awaiting_confirmation", "{v}");
    let (_, w) = app.get("/v1/wallet", Some(&tok)).await;
    assert_eq!(w["available"].as_i64(), Some(600), "{w}");
    // The provider ends the cancel.
    let (s, v) = sim
        .post(
            "/sim/complete",
            json!({"out_bill_no": ptn, "state": "CANCELLED"}),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    let done = app.settled(&tok, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let (_, w) = app.get("/v1/wallet", Some(&tok)).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(1000), Some(1000)),
        "{w}"
    );
    let events = updates(&app, &tok, &id).await;
    assert!(
        events.iter().any(|e| e["status"] == "cancelled"),
        "{events:?}"
    );
    app.books_clean().await;

    // Declined by the user: cancelled by the provider, money back.
    faults(&sim, json!({"confirmation": "refuse"})).await;
    let (s, v) = app.payout(&tok, "c-3", 100).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(app.balance(&tok).await, 1000);
    app.books_clean().await;
}

/// A user who confirms while the cancel is under way is paid, and the
/// hold is posted, not voided.
#[actix_web::test]
async fn a_user_who_confirms_while_it_is_being_cancelled_is_paid_once() {
    let sim = Sim::start();
    faults(&sim, json!({"confirmation": "hold", "hold_cancels": true})).await;
    let app = server(&sim, "confirm_timeout_seconds = 1").await;
    let (_, tok) = app.payee(&sim, "fay", 1000, "o-fay").await;
    let (s, v) = app.payout(&tok, "c-4", 250).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let ptn = s_(&v["partner_trade_no"]);
    sim.transfer_in(&ptn, "CANCELING").await;
    let (s, v) = sim
        .post(
            "/sim/confirm",
            json!({"out_bill_no": ptn, "action": "confirm"}),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    let done = app.settled(&tok, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.balance(&tok).await, 750);
    app.books_clean().await;
}

/// The create answer (the only one with the package) is lost: the query
/// says WAIT_USER_CONFIRM, and the same create again brings the package.
#[actix_web::test]
async fn a_lost_create_answer_still_gets_the_package() {
    let sim = Sim::start();
    faults(&sim, json!({"confirmation": "hold", "lost_reply_next": 1})).await;
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "gus", 1000, "o-gus").await;
    let (s, v) = app.payout(&tok, "c-5", 300).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let waiting = sim
        .status_of(&app, &tok, &id, "awaiting_confirmation")
        .await;
    let mut seen = waiting.clone();
    for _ in 0..100 {
        if seen["confirm"]["package_info"].is_string() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        seen = app.get(&format!("/v1/payouts/{id}"), Some(&tok)).await.1;
    }
    let t = sim.transfer(&s_(&v["partner_trade_no"])).await;
    assert!(t["package_info"].is_string(), "{t}");
    assert_eq!(
        seen["confirm"]["package_info"], t["package_info"],
        "{seen} {t}"
    );
    assert_eq!(sim.transfers().await.len(), 1, "one bill");
}

/// From 2,000 yuan the transfer names the payee (encrypted); the simulator
/// pays only if the name matches the account's.
#[actix_web::test]
async fn a_transfer_of_2000_yuan_carries_the_verified_real_name() {
    let sim = Sim::start();
    faults(
        &sim,
        json!({"amount_limit": 100_000_000u64, "balance": 100_000_000u64}),
    )
    .await;
    let app = server(
        &sim,
        "max_fen = 1000000\ndaily_max_fen = 10000000\nlarge_transaction_fen = 100000000",
    )
    .await;
    let (uid, tok) = app.user("hana").await;
    for n in 0..41 {
        let (s, v) = app
            .post(
                "/v1/earnings",
                Some(ADMIN),
                json!({"event_id": format!("big-{n}"), "user_id": uid, "kind": "task_completed", "amount": 10_000}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = sim
        .post(
            "/sim/codes",
            json!({"code": "code-hana", "openid": "o-hana", "real_name": "王花"}),
        )
        .await;
    assert!(s < 300, "{v}");
    let (s, v) = app
        .post("/v1/wallet/link", Some(&tok), json!({"code": "code-hana"}))
        .await;
    assert_eq!(s, 200, "{v}");
    // Verified without a name: not enough from 2,000 yuan.
    let kyc = |body: Value| {
        let app = &app;
        let uid = uid.clone();
        async move {
            let (s, v) = app
                .post(&format!("/v1/admin/users/{uid}/kyc"), Some(ADMIN), body)
                .await;
            assert_eq!(s, 204, "{v}");
        }
    };
    kyc(json!({"verified": true})).await;
    let (s, v) = app.payout(&tok, "big-1", 200_000).await;
    assert_eq!((s, code(&v)), (403, "kyc_required"), "{v}");
    kyc(json!({"verified": true, "real_name": "王花"})).await;
    let (s, v) = app.payout(&tok, "big-2", 200_000).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let t = sim.transfer(&s_(&v["partner_trade_no"])).await;
    assert_eq!(
        t["user_name"], "王花",
        "the name the simulator decrypted: {t}"
    );
    // A name the account does not carry: the provider fails it, money back.
    kyc(json!({"verified": true, "real_name": "李雷"})).await;
    let (s, v) = app.payout(&tok, "big-3", 200_000).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(app.balance(&tok).await, 210_000);
    app.books_clean().await;
}

/// The provider's error codes: FREQUENCY_LIMITED is retried with the same
/// number until it goes through; NO_AUTH refuses the transfer for good.
#[actix_web::test]
async fn frequency_limits_are_retried_and_refusals_end_the_payout() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "ivo", 2000, "o-ivo").await;
    faults(&sim, json!({"frequency_limited_next": 2})).await;
    let (s, v) = app.payout(&tok, "e-1", 300).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    faults(&sim, json!({"no_auth_next": 1})).await;
    let (s, v) = app.payout(&tok, "e-2", 300).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["fail_reason"]
            .as_str()
            .is_some_and(|r| r.contains("NO_AUTH")),
        "{done}"
    );
    assert_eq!(app.balance(&tok).await, 1700);
    assert_eq!(
        sim.transfers().await.len(),
        1,
        "the refused one never existed"
    );
    app.books_clean().await;
}

/// WECHATPAY/SIGNTEST probes are refused like bad signatures, but are not
/// forgeries: no alert. Once they stop, the payout completes.
#[actix_web::test]
async fn signature_probes_are_refused_without_a_forgery_alert() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "jo", 1000, "o-jo").await;
    faults(&sim, json!({"probe_signatures": true})).await;
    let (s, v) = app.payout(&tok, "p-1", 300).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let mut probes = 0.0;
    for _ in 0..100 {
        probes = app
            .metric(
                "qrgate_provider_calls_total{operation=\"create_transfer\",result=\"signature_probe\"}",
            )
            .await;
        if probes > 0.0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(probes > 0.0, "the job met a probe answer");
    // A probe notification straight at our route: refused, counted as a
    // probe, not kept as a forgery.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let r = app
        .client
        .post(format!("{}/v1/provider/notify", app.base))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Wechatpay-Timestamp", now.to_string()))
        .insert_header(("Wechatpay-Nonce", "PROBENONCE0123456789"))
        .insert_header(("Wechatpay-Serial", "SIM-PLATFORM-SERIAL"))
        .insert_header(("Wechatpay-Signature", "WECHATPAY/SIGNTEST/cHJvYmU="))
        .send_body("{}")
        .await
        .expect("probe");
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        app.metric("qrgate_provider_notifications_total{result=\"probe\"}")
            .await
            >= 1.0
    );
    faults(&sim, json!({"probe_signatures": false})).await;
    let done = app.settled(&tok, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, alerts) = app.get("/v1/admin/alerts", Some(ADMIN)).await;
    let text = alerts.to_string();
    assert!(!text.contains("SIGNTEST"), "{alerts}");
    assert_eq!(app.balance(&tok).await, 700);
}
