//! Payouts end to end: the real server and the provider simulator
//! (`qrgate paysim`) as two processes.

use super::helpers::*;
use serde_json::{json, Value};
use std::process::Child;
use std::time::Duration;

/// The provider simulator, running.
pub struct Sim {
    pub base: String,
    pub keys: tempfile::TempDir,
    child: Child,
    client: awc::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    pub fn start() -> Sim {
        let keys = tempfile::tempdir().expect("tempdir");
        let (child, base) = spawn_paysim(keys.path());
        Sim {
            base,
            keys,
            child,
            client: client(),
        }
    }

    /// The `[provider]` and `[payouts]` config for a server using this simulator.
    pub fn config(&self, extra_payouts: &str) -> String {
        let dir = self.keys.path().join("keys");
        let key = std::fs::read_to_string(dir.join("api_v3_key")).expect("api v3 key");
        format!(
            "[provider]\nbase_url = \"{}\"\nmchid = \"1900000001\"\nappid = \"wx-qrgate-sim\"\napp_secret = \"sim-app-secret\"\nmerchant_key_file = \"{}\"\nmerchant_serial = \"SIM-MERCHANT-SERIAL\"\nplatform_public_key_file = \"{}\"\nplatform_serial = \"SIM-PLATFORM-SERIAL\"\napi_v3_key = \"{}\"\ntimeout_ms = 500\nauthorize_url = \"{}/connect/oauth2/authorize\"\n\n[payouts]\nretry_factor = 0.01\nkyc_above_fen = 5000\n{extra_payouts}\n",
            self.base,
            dir.join("merchant_private.pem").display(),
            dir.join("platform_public.pem").display(),
            key.trim(),
            self.base
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = self.client.post(format!("{}{path}", self.base));
        self.send(req, Some(&body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req, None).await
    }

    /// Its status and JSON (null when not JSON).
    async fn send(&self, req: awc::ClientRequest, body: Option<&Value>) -> (u16, Value) {
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut r = sent.expect("sim request");
        let b = r.body().await.expect("body");
        (
            r.status().as_u16(),
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }

    /// Wait until the simulator's bill `out_bill_no` is in `state`; its view.
    pub async fn transfer_in(&self, out_bill_no: &str, state: &str) -> Value {
        let mut t = Value::Null;
        for _ in 0..100 {
            t = self.transfer(out_bill_no).await;
            if t["state"] == state {
                return t;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bill {out_bill_no} never became {state}: {t}");
    }

    /// Every transfer the simulator knows, by partner_trade_no.
    pub async fn transfers(&self) -> Vec<Value> {
        let mut r = self
            .client
            .get(format!("{}/sim/transfers", self.base))
            .send()
            .await
            .expect("sim transfers");
        let v: Value = serde_json::from_slice(&r.body().await.expect("body")).expect("json");
        match v {
            Value::Array(a) => a,
            other => other["transfers"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Wait until the payout's status is `status`; its view.
    pub async fn status_of(&self, app: &TestApp, tok: &str, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (s, v) = app.get(&format!("/v1/payouts/{id}"), Some(tok)).await;
            assert_eq!(s, 200, "{v}");
            if v["status"] == status {
                return v;
            }
            last = v;
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("payout {id} never became {status}: {last}");
    }

    /// The simulator's view of one transfer.
    pub async fn transfer(&self, out_bill_no: &str) -> Value {
        self.transfers()
            .await
            .into_iter()
            .find(|t| t["out_bill_no"] == out_bill_no)
            .unwrap_or(Value::Null)
    }

    /// Wait until the payout job has sent `partner_trade_no` (it sends
    /// after the 202, in the background).
    pub async fn wait_for(&self, partner_trade_no: &str) {
        for _ in 0..100 {
            let sent = self.transfers().await;
            if sent
                .iter()
                .any(|t| t["partner_trade_no"] == partner_trade_no)
            {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the provider never received {partner_trade_no}");
    }
}

impl TestApp {
    /// A user with `fen` earned and a linked payment account.
    pub async fn payee(&self, sim: &Sim, name: &str, fen: u64, openid: &str) -> (String, String) {
        let (uid, tok) = self.user(name).await;
        if fen > 0 {
            let (s, v) = self
                .post(
                    "/v1/earnings",
                    Some(ADMIN),
                    json!({"event_id": format!("seed-{uid}"), "user_id": uid, "kind": "task_completed", "amount": fen.min(10_000)}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            let mut left = fen.saturating_sub(10_000);
            let mut n = 0;
            while left > 0 {
                n += 1;
                let (s, v) = self
                    .post(
                        "/v1/earnings",
                        Some(ADMIN),
                        json!({"event_id": format!("seed-{uid}-{n}"), "user_id": uid, "kind": "task_completed", "amount": left.min(10_000)}),
                    )
                    .await;
                assert_eq!(s, 201, "{v}");
                left = left.saturating_sub(10_000);
            }
        }
        let code = format!("code-{name}-{}", &uid[2..10]);
        let (s, v) = sim
            .post("/sim/codes", json!({"code": code, "openid": openid}))
            .await;
        assert!(s < 300, "register code: {s} {v}");
        let (s, v) = self
            .post("/v1/wallet/link", Some(&tok), json!({"code": code}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["openid"], openid);
        (uid, tok)
    }

    pub async fn payout(&self, tok: &str, key: &str, amount: u64) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}/v1/payouts", self.base))
            .insert_header(("Authorization", format!("Bearer {tok}")))
            .insert_header(("Idempotency-Key", key.to_string()))
            .send_json(&json!({ "amount": amount }))
            .await
            .expect("payout request");
        let b = r.body().await.expect("body");
        (
            r.status().as_u16(),
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }

    /// Wait until the payout is final; its view.
    pub async fn settled(&self, tok: &str, id: &str) -> Value {
        for _ in 0..200 {
            let (s, v) = self.get(&format!("/v1/payouts/{id}"), Some(tok)).await;
            assert_eq!(s, 200, "{v}");
            if ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("payout {id} did not settle");
    }
}

pub async fn server(sim: &Sim, extra: &str) -> TestApp {
    TestApp::spawn_with(&sim.config(extra)).await
}

#[actix_web::test]
async fn earn_link_payout_notify_and_retry_with_the_same_key() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "alice", 1000, "o-alice").await;
    let (s, v) = app.payout(&tok, "k-1", 300).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "pending");
    let id = s_(&v["id"]);
    let ptn = s_(&v["partner_trade_no"]);
    assert_eq!(ptn.len(), 32);
    // Held at once: the balance stays, the available amount drops.
    let (_, w) = app.get("/v1/wallet", Some(&tok)).await;
    assert!(w["available"].as_i64() <= Some(700), "{w}");
    let done = app.settled(&tok, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["transfer_bill_no"].is_string(), "{done}");
    assert_eq!(app.balance(&tok).await, 700);
    // The same key and body: the same payout, no second transfer.
    let (s, v) = app.payout(&tok, "k-1", 300).await;
    assert_eq!((s, s_(&v["id"])), (200, id.clone()), "{v}");
    // The same key with another body.
    let (s, v) = app.payout(&tok, "k-1", 301).await;
    assert_eq!((s, code(&v)), (422, "idempotency_key_reused"), "{v}");
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let paid: Vec<Value> = sim
        .transfers()
        .await
        .into_iter()
        .filter(|t| t["partner_trade_no"] == ptn.as_str())
        .collect();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(app.balance(&tok).await, 700);
    let (_, list) = app.get("/v1/payouts", Some(&tok)).await;
    assert_eq!(list["payouts"].as_array().map(Vec::len), Some(1));
    app.books_clean().await;

    // The user hears the payout's progress on the WebSocket.
    let mut ws = super::ws::connect(&app, &tok).await;
    let (s, v) = app.payout(&tok, "k-ws", 200).await;
    assert_eq!(s, 202, "{v}");
    let id = s_(&v["id"]);
    let mut last = Value::Null;
    // pending, awaiting_confirmation (the simulator's user confirms at
    // once), processing, succeeded.
    for _ in 0..4 {
        let e = super::ws::next_of(&mut ws, "payout_updated").await;
        assert_eq!(e["payout_id"], json!(id), "{e}");
        last = e;
        if last["status"] == "succeeded" {
            break;
        }
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["amount"], 200);
}

#[actix_web::test]
async fn risk_checks_refuse_before_money_moves() {
    let sim = Sim::start();
    let app = server(&sim, "daily_max_count = 2\ndaily_max_fen = 9000\n").await;
    let (_, unlinked) = app.user("nolink").await;
    let (s, v) = app.payout(&unlinked, "a", 200).await;
    assert_eq!((s, code(&v)), (409, "account_not_linked"), "{v}");
    let (bob, tok) = app.payee(&sim, "bob", 20_000, "o-bob").await;
    for (amount, status, want) in [
        (99, 422, "payout_below_minimum"),
        (20_001, 422, "payout_above_maximum"),
        (6_000, 403, "kyc_required"),
    ] {
        let (s, v) = app.payout(&tok, &format!("r-{amount}"), amount).await;
        assert_eq!((s, code(&v)), (status, want), "{amount}: {v}");
    }
    // Missing key.
    let (s, v) = app
        .post("/v1/payouts", Some(&tok), json!({"amount": 200}))
        .await;
    assert_eq!((s, code(&v)), (400, "idempotency_key_required"), "{v}");
    // KYC lifts the KYC refusal; the daily total then applies.
    let (s, _) = app
        .post(
            &format!("/v1/admin/users/{bob}/kyc"),
            Some(ADMIN),
            json!({"verified": true}),
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = app.payout(&tok, "big", 6_000).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = app.payout(&tok, "over-day", 3_001).await;
    assert_eq!((s, code(&v)), (409, "daily_payout_limit"), "{v}");
    let (s, v) = app.payout(&tok, "second", 100).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = app.payout(&tok, "third", 100).await;
    assert_eq!((s, code(&v)), (429, "payout_velocity_exceeded"), "{v}");
    // Not enough money: nothing held.
    let (_, poor) = app.payee(&sim, "poor", 150, "o-poor").await;
    let (s, v) = app.payout(&poor, "p", 200).await;
    assert_eq!((s, code(&v)), (409, "insufficient_funds"), "{v}");
    let (_, w) = app.get("/v1/wallet", Some(&poor)).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(150), Some(150))
    );
    // Another user cannot see bob's payout; anonymous cannot ask.
    let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
    let id = s_(&v["payouts"][0]["id"]);
    let (s, _) = app.get(&format!("/v1/payouts/{id}"), Some(&poor)).await;
    assert_eq!(s, 404);
    let (s, _) = app.get(&format!("/v1/payouts/{id}"), None).await;
    assert_eq!(s, 401);
    let (s, _) = app
        .post(
            &format!("/v1/admin/users/{bob}/kyc"),
            Some(&poor),
            json!({"verified": true}),
        )
        .await;
    assert_eq!(s, 403);
    app.books_clean().await;
}

#[actix_web::test]
async fn provider_faults_never_pay_twice() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "carol", 5000, "o-carol").await;
    // A timeout, then a lost reply (processed, answered 500), then 5xx.
    for (n, fault) in [
        json!({"timeout_next": 1}),
        json!({"lost_reply_next": 1}),
        json!({"fail_5xx_next": 2}),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = sim.post("/sim/faults", fault.clone()).await;
        assert!(s < 300, "{v}");
        let (s, v) = app.payout(&tok, &format!("f-{n}"), 500).await;
        assert_eq!(s, 202, "{v}");
        let done = app.settled(&tok, &s_(&v["id"])).await;
        assert_eq!(done["status"], "succeeded", "{fault}: {done}");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let transfers = sim.transfers().await;
    assert_eq!(transfers.len(), 3, "{transfers:?}");
    assert_eq!(
        app.balance(&tok).await,
        3500,
        "three payouts of 500, each once"
    );
    app.books_clean().await;
}

#[actix_web::test]
async fn notifications_forged_duplicated_or_failed() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    // A forged notification straight at our webhook.
    let (s, v) = app
        .post(
            "/v1/provider/notify",
            None,
            json!({"id": "x", "event_type": "MCHTRANSFER.BILL.FINISHED", "resource": {}}),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
    assert!(
        app.metric("qrgate_provider_notifications_total{result=\"rejected\"}")
            .await
            >= 1.0
    );

    // Every notification twice: applied once.
    let (s, _) = sim
        .post("/sim/faults", json!({"duplicate_notifications": true}))
        .await;
    assert!(s < 300);
    let (_, tok) = app.payee(&sim, "dave", 2000, "o-dave").await;
    let (_, v) = app.payout(&tok, "d-1", 400).await;
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "succeeded");
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.balance(&tok).await, 1600);

    // A payout the provider fails: the hold goes back.
    let (_, erin) = app.payee(&sim, "erin", 2000, "fail-erin").await;
    let (_, v) = app.payout(&erin, "e-1", 700).await;
    let done = app.settled(&erin, &s_(&v["id"])).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["fail_reason"].is_string(), "{done}");
    let (_, w) = app.get("/v1/wallet", Some(&erin)).await;
    assert_eq!(
        (w["balance"].as_i64(), w["available"].as_i64()),
        (Some(2000), Some(2000))
    );
    let (s, v) = app
        .get("/v1/admin/payouts?filter=failed", Some(ADMIN))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["payouts"].as_array().map(Vec::len), Some(1), "{v}");
    app.books_clean().await;
}

#[actix_web::test]
async fn reconciliation_names_each_break() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "fay", 5000, "o-fay").await;
    let mut ptns = Vec::new();
    for n in 0..4 {
        let (_, v) = app.payout(&tok, &format!("r-{n}"), 100 + n).await;
        let done = app.settled(&tok, &s_(&v["id"])).await;
        assert_eq!(done["status"], "succeeded");
        ptns.push(s_(&done["partner_trade_no"]));
    }
    // The bill: one amount differs, one status differs, one is missing, one unknown extra.
    for o in [
        json!({"partner_trade_no": ptns[0], "amount": 999}),
        json!({"partner_trade_no": ptns[1], "status": "FAIL"}),
        json!({"partner_trade_no": ptns[2], "omit": true}),
    ] {
        let (s, v) = sim.post("/sim/bill_override", o).await;
        assert!(s < 300, "{v}");
    }
    let (s, v) = sim
        .post(
            "/sim/bill_extra",
            json!({"partner_trade_no": "QGUNKNOWN0000000000000000000000", "transfer_bill_no": "X1", "openid": "o-x", "amount": 123, "status": "SUCCESS"}),
        )
        .await;
    assert!(s < 300, "{v}");
    let today = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m-%d")
        .to_string();
    let (s, report) = app
        .post("/v1/admin/reconcile", Some(ADMIN), json!({"date": today}))
        .await;
    assert_eq!(s, 200, "{report}");
    let classes: Vec<(String, String)> = report["breaks"]
        .as_array()
        .expect("breaks")
        .iter()
        .map(|b| (s_(&b["class"]), s_(&b["partner_trade_no"])))
        .collect();
    assert!(
        classes.contains(&("amount_mismatch".into(), ptns[0].clone())),
        "{report}"
    );
    assert!(
        classes.contains(&("status_mismatch".into(), ptns[1].clone())),
        "{report}"
    );
    assert!(
        classes.contains(&("missing_on_their_side".into(), ptns[2].clone())),
        "{report}"
    );
    assert!(
        classes.contains(&(
            "missing_on_our_side".into(),
            "QGUNKNOWN0000000000000000000000".into()
        )),
        "{report}"
    );
    assert_eq!(report["matched"], 1, "{report}");
    // Not the operator: refused.
    let (s, _) = app
        .post("/v1/admin/reconcile", Some(&tok), json!({"date": today}))
        .await;
    assert_eq!(s, 403);

    // The report is kept for later reads.
    let (s, stored) = app
        .get(&format!("/v1/admin/reconcile/{today}"), Some(ADMIN))
        .await;
    assert_eq!(
        (s, stored["breaks"].clone()),
        (200, report["breaks"].clone())
    );
    let (s, v) = app.get("/v1/admin/reconcile/2001-01-01", Some(ADMIN)).await;
    assert_eq!((s, code(&v)), (404, "report_not_found"));

    // The CLI with a bill file: exit 0 when it matches, 2 with a break.
    let row = |no: &str, amount: i64| qrgate_provider::bill::BillRow {
        transfer_time: chrono::Utc::now().naive_utc() + chrono::Duration::hours(8),
        mchid: "1900000001".into(),
        appid: "wx-qrgate-sim".into(),
        partner_trade_no: no.into(),
        transfer_bill_no: format!("B{}", &no[2..12]),
        openid: "o-fay".into(),
        amount,
        status: qrgate_provider::notify::TransferState::Success,
        description: "qrgate payout".into(),
        fail_reason: None,
    };
    let mut rows: Vec<_> = ptns.iter().zip(100..).map(|(no, a)| row(no, a)).collect();
    let run = |rows: &Vec<qrgate_provider::bill::BillRow>| {
        let text =
            qrgate_provider::bill::write_bill(&qrgate_provider::bill::Bill { rows: rows.clone() })
                .expect("write bill");
        let file = app.dir.path().join("bill.csv");
        std::fs::write(&file, text).expect("bill file");
        std::process::Command::new(env!("CARGO_BIN_EXE_qrgate"))
            .args([
                "reconcile",
                "--url",
                &app.base,
                "--admin-token",
                ADMIN,
                "--date",
                &today,
                "--file",
            ])
            .arg(&file)
            .output()
            .expect("run reconcile")
    };
    let out = run(&rows);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 matched, 0 breaks"));
    rows[3].amount += 1;
    let out = run(&rows);
    assert_eq!(out.status.code(), Some(2));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("amount_mismatch") && table.contains(&ptns[3]),
        "{table}"
    );
}

#[actix_web::test]
async fn sigkill_during_payouts_pays_each_once() {
    let sim = Sim::start();
    let mut app = server(&sim, "").await;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(
            app.payee(&sim, &format!("k{i}"), 3000, &format!("o-k{i}"))
                .await,
        );
    }
    // The provider accepts transfers but does not finish them, so payouts
    // are mid-flight when the server dies.
    let (s, _) = sim
        .post(
            "/sim/faults",
            json!({"auto_complete": false, "delay_ms": 20}),
        )
        .await;
    assert!(s < 300);
    let mut tasks = Vec::new();
    for (i, (_, tok)) in users.iter().enumerate() {
        for n in 0..4 {
            let base = app.base.clone();
            let client = app.client.clone();
            let tok = tok.clone();
            tasks.push(actix_web::rt::spawn(async move {
                let r = client
                    .post(format!("{base}/v1/payouts"))
                    .insert_header(("Authorization", format!("Bearer {tok}")))
                    .insert_header(("Idempotency-Key", format!("kill-{i}-{n}")))
                    .send_json(&json!({"amount": 100 + n}))
                    .await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
    }
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    app.kill9();
    let mut acked = 0;
    for t in tasks {
        if t.await.unwrap_or(0) == 202 {
            acked += 1;
        }
    }
    assert!(acked > 0, "no payout was acknowledged before the kill");
    app.restart().await;
    // Every acknowledged payout is there, none final yet.
    let mut ours = Vec::new();
    for (_, tok) in &users {
        let (_, v) = app.get("/v1/payouts", Some(tok)).await;
        for p in v["payouts"].as_array().cloned().unwrap_or_default() {
            assert!(
                ["pending", "processing", "awaiting_confirmation"]
                    .contains(&p["status"].as_str().unwrap_or("")),
                "{p}"
            );
            ours.push((tok.clone(), s_(&p["id"])));
        }
    }
    assert!(
        ours.len() >= acked,
        "{} payouts stored, {acked} acknowledged",
        ours.len()
    );
    // The restarted job resends the unaccepted ones (same numbers); then
    // the provider finishes everything it has.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = sim
        .post("/sim/faults", json!({"auto_complete": true, "delay_ms": 0}))
        .await;
    assert!(s < 300);
    for t in sim.transfers().await {
        let (s, v) = sim
            .post(
                "/sim/complete",
                json!({"partner_trade_no": t["partner_trade_no"], "state": "SUCCESS"}),
            )
            .await;
        assert!(s < 300 || s == 409, "{s} {v}");
    }
    for (tok, id) in &ours {
        let done = app.settled(tok, id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let ours = ours.len();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let transfers = sim.transfers().await;
    let mut seen = std::collections::HashSet::new();
    for t in &transfers {
        assert!(seen.insert(s_(&t["partner_trade_no"])), "paid twice: {t}");
    }
    assert_eq!(
        transfers.len(),
        ours,
        "the provider paid exactly our payouts"
    );
    app.books_clean().await;
}

#[actix_web::test]
async fn automatic_payouts_trigger_once_per_ledger_position() {
    let sim = Sim::start();
    let mut app = server(&sim, "").await;
    let (uid, tok) = app.payee(&sim, "gus", 0, "o-gus").await;
    let (s, v) = app
        .call(
            "PUT",
            "/v1/wallet/auto-payout",
            Some(&tok),
            Some(json!({"threshold": 50})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (400, "validation_failed"),
        "below the minimum: {v}"
    );
    let (s, v) = app
        .call(
            "PUT",
            "/v1/wallet/auto-payout",
            Some(&tok),
            Some(json!({"threshold": 500})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // 300: below the threshold, nothing happens.
    let (s, _) = app.earn("auto-1", &uid, 300).await;
    assert_eq!(s, 201);
    let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
    assert_eq!(v["payouts"].as_array().map(Vec::len), Some(0), "{v}");
    // 300 more: 600 available, one automatic payout of 600.
    let (s, _) = app.earn("auto-2", &uid, 300).await;
    assert_eq!(s, 201);
    let mut id = None;
    for _ in 0..100 {
        let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
        if let Some(p) = v["payouts"].as_array().and_then(|a| a.first()) {
            assert_eq!(p["automatic"], true, "{p}");
            assert_eq!(p["amount"], 600, "{p}");
            id = Some(s_(&p["id"]));
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let id = id.expect("an automatic payout");
    assert_eq!(app.settled(&tok, &id).await["status"], "succeeded");
    assert_eq!(app.balance(&tok).await, 0);
    // A replayed earning after a restart credits nothing and pays nothing.
    app.restart().await;
    let (s, _) = app.earn("auto-2", &uid, 300).await;
    assert_eq!(s, 200);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
    assert_eq!(v["payouts"].as_array().map(Vec::len), Some(1), "{v}");
    // Off again.
    let (s, v) = app
        .call(
            "PUT",
            "/v1/wallet/auto-payout",
            Some(&tok),
            Some(json!({"threshold": null})),
        )
        .await;
    assert_eq!((s, v["threshold"].clone()), (200, Value::Null));
    let (s, _) = app.earn("auto-3", &uid, 900).await;
    assert_eq!(s, 201);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
    assert_eq!(v["payouts"].as_array().map(Vec::len), Some(1), "{v}");
    app.books_clean().await;
}

#[actix_web::test]
async fn large_transactions_are_reported_and_tokens_refreshed() {
    let sim = Sim::start();
    // Every link is due for refresh at once; 3,000 fen counts as large.
    let mut app = server(
        &sim,
        "large_transaction_fen = 3000\nrefresh_before_seconds = 100000\n",
    )
    .await;
    let (uid, tok) = app.payee(&sim, "hal", 9000, "o-hal").await;
    let (s, _) = app
        .post(
            &format!("/v1/admin/users/{uid}/kyc"),
            Some(ADMIN),
            json!({"verified": true}),
        )
        .await;
    assert_eq!(s, 204);
    for (key, amount) in [("l-1", 1000), ("l-2", 1500), ("l-3", 3000)] {
        let (s, v) = app.payout(&tok, key, amount).await;
        assert_eq!(s, 202, "{v}");
    }
    let today = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m-%d")
        .to_string();
    let (s, v) = app
        .get(
            &format!("/v1/admin/reports/large-transactions?from={today}"),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let kinds: Vec<(String, u64)> = v["transactions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| (s_(&t["kind"]), t["amount"].as_u64().unwrap_or(0)))
        .collect();
    assert!(kinds.contains(&("single_transfer".into(), 3000)), "{v}");
    assert!(kinds.contains(&("daily_total".into(), 5500)), "{v}");
    assert_eq!(kinds.len(), 2, "{v}");
    let (s, _) = app
        .get(
            &format!("/v1/admin/reports/large-transactions?from={today}"),
            Some(&tok),
        )
        .await;
    assert_eq!(s, 403);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args([
            "report",
            "large-transactions",
            "--url",
            &app.base,
            "--admin-token",
            ADMIN,
            "--from",
            &today,
        ])
        .output()
        .expect("run report");
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("day,user_id,kind,amount_fen"), "{csv}");

    // Tokens: refreshed by the background job (it runs at start).
    let (_, before) = app.get("/v1/wallet/link", Some(&tok)).await;
    assert_eq!(before["linked"], true, "{before}");
    assert!(
        !before.to_string().contains("access_token"),
        "tokens are never shown"
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    app.restart().await;
    let mut refreshed = false;
    for _ in 0..50 {
        if app
            .metric("qrgate_provider_calls_total{operation=\"refresh_token\",result=\"ok\"}")
            .await
            >= 1.0
        {
            refreshed = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshed, "the link was refreshed");
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let (_, after) = app.get("/v1/wallet/link", Some(&tok)).await;
    assert_ne!(after["refreshed_at"], before["refreshed_at"], "{after}");
    // Sealed at rest: the data files do not hold the raw tokens.
    let (_, unlinked) = app.user("nobody").await;
    let (_, v) = app.get("/v1/wallet/link", Some(&unlinked)).await;
    assert_eq!(v["linked"], false);
}

#[actix_web::test]
async fn a_relink_waits_for_open_payouts_tells_the_user_and_holds_payouts() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (_, tok) = app.payee(&sim, "relinker", 1000, "o-first").await;
    let (s, v) = sim
        .post("/sim/faults", json!({"auto_complete": false}))
        .await;
    assert!(s < 300, "{v}");
    let (s, v) = app.payout(&tok, "k-open", 100).await;
    assert_eq!(s, 202, "{v}");
    let ptn = s_(&v["partner_trade_no"]);
    let id = s_(&v["id"]);
    let link = |code: &'static str, openid: &'static str| {
        let (app, sim, tok) = (&app, &sim, tok.clone());
        async move {
            let (s, v) = sim
                .post("/sim/codes", json!({"code": code, "openid": openid}))
                .await;
            assert!(s < 300, "{v}");
            app.post("/v1/wallet/link", Some(&tok), json!({"code": code}))
                .await
        }
    };
    // Another account while a payout is open: refused, the link unchanged.
    let (s, v) = link("c-second", "o-second").await;
    assert_eq!((s, code(&v)), (409, "link_change_blocked"), "{v}");
    let (_, l) = app.get("/v1/wallet/link", Some(&tok)).await;
    assert_eq!(l["openid"], "o-first", "{l}");
    sim.wait_for(&ptn).await;
    let (s, v) = sim
        .post(
            "/sim/complete",
            json!({"partner_trade_no": ptn, "state": "SUCCESS"}),
        )
        .await;
    assert!(s < 300, "{v}");
    assert_eq!(app.settled(&tok, &id).await["status"], "succeeded");
    // Over: the change goes through, and the user hears of it.
    let mut ws = super::ws::connect(&app, &tok).await;
    let (s, v) = link("c-third", "o-third").await;
    assert_eq!(s, 200, "{v}");
    let e = super::ws::next_of(&mut ws, "link_changed").await;
    assert_eq!(e["openid_hint"], "…hird", "{e}");
    // Payouts wait for the cooling period (24 h by default).
    let mut r = app
        .client
        .post(format!("{}/v1/payouts", app.base))
        .insert_header(("Authorization", format!("Bearer {tok}")))
        .insert_header(("Idempotency-Key", "k-after-relink"))
        .send_json(&json!({ "amount": 100 }))
        .await
        .expect("payout");
    assert_eq!(r.status().as_u16(), 403);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((86_000..=86_400).contains(&wait), "{wait}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(code(&v), "payout_cooling_off", "{v}");
}

#[actix_web::test]
async fn without_a_cooling_period_a_relinked_user_pays_out_at_once() {
    let sim = Sim::start();
    let app = server(&sim, "relink_cooling_hours = 0").await;
    let (_, tok) = app.payee(&sim, "mover", 1000, "o-old").await;
    let (s, v) = sim
        .post("/sim/codes", json!({"code": "c-new", "openid": "o-new"}))
        .await;
    assert!(s < 300, "{v}");
    let (s, v) = app
        .post("/v1/wallet/link", Some(&tok), json!({"code": "c-new"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.payout(&tok, "k-now", 100).await;
    assert_eq!(s, 202, "{v}");
}

#[actix_web::test]
async fn a_frozen_account_is_credited_but_pays_nothing_out_automatically() {
    let sim = Sim::start();
    let app = server(&sim, "").await;
    let (uid, tok) = app.payee(&sim, "ice", 0, "o-ice").await;
    let (s, v) = app
        .call(
            "PUT",
            "/v1/wallet/auto-payout",
            Some(&tok),
            Some(json!({"threshold": 500})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .post(
            &format!("/v1/admin/users/{uid}/freeze"),
            Some(ADMIN),
            json!({"reason": "review"}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = app.earn("ice-1", &uid, 800).await;
    assert_eq!(s, 201, "credited while frozen");
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
    assert_eq!(
        v["payouts"].as_array().map(Vec::len),
        Some(0),
        "no automatic payout: {v}"
    );
    assert_eq!(app.balance(&tok).await, 800);
    // Unfrozen: the next earning crosses the threshold again and pays out.
    let (s, _) = app
        .post(
            &format!("/v1/admin/users/{uid}/unfreeze"),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = app.earn("ice-2", &uid, 100).await;
    assert_eq!(s, 201);
    let mut paid = false;
    for _ in 0..100 {
        let (_, v) = app.get("/v1/payouts", Some(&tok)).await;
        if v["payouts"].as_array().is_some_and(|a| !a.is_empty()) {
            paid = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(paid, "an automatic payout once unfrozen");
}

/// A flood of forged notifications: each is refused and counted, the first
/// stays on record whatever follows, and a network refused too often is
/// refused unread; a captured notification sent again is not applied.
#[actix_web::test]
async fn forged_floods_and_replayed_notifications_are_refused_and_kept_on_record() {
    let sim = Sim::start();
    let app = server(&sim, "rejected_notifications_per_minute_per_ip = 3").await;
    // Every notification sent twice, byte for byte: the copy is acknowledged
    // and not applied.
    let (s, _) = sim
        .post("/sim/faults", json!({"replay_notifications": true}))
        .await;
    assert!(s < 300);
    let (_, tok) = app.payee(&sim, "gus", 2000, "o-gus").await;
    let (_, v) = app.payout(&tok, "g-1", 400).await;
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let mut replayed = 0.0;
    for _ in 0..50 {
        replayed = app
            .metric("qrgate_provider_notifications_total{result=\"replayed\"}")
            .await;
        if replayed >= 1.0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        replayed >= 1.0,
        "the copy was counted as a replay: {:?}",
        sim.transfers().await
    );
    assert_eq!(app.balance(&tok).await, 1600);
    app.books_clean().await;
    // (Last: the flood comes from the same address as the simulator.)
    let forged = |n: u32| {
        app.post(
            "/v1/provider/notify",
            None,
            json!({"id": format!("forged-{n}"), "event_type": "MCHTRANSFER.BILL.FINISHED", "resource": {}}),
        )
    };
    for n in 0..4 {
        let (s, v) = forged(n).await;
        assert_eq!((s, code(&v)), (401, "unauthorized"), "forgery {n}: {v}");
    }
    for n in 4..7 {
        let (s, v) = forged(n).await;
        assert_eq!((s, code(&v)), (429, "rate_limited"), "forgery {n}: {v}");
    }
    let (s, a) = app.get("/v1/admin/alerts", Some(ADMIN)).await;
    assert_eq!(s, 200, "{a}");
    let replays = a["forgeries"]["by_reason"]["replay"].as_u64().unwrap_or(0);
    assert!(replays >= 1, "{a}");
    assert_eq!(a["forgeries"]["total"], 7 + replays, "{a}");
    assert_eq!(a["forgeries"]["by_reason"]["signature"], 4, "{a}");
    assert_eq!(a["forgeries"]["by_reason"]["rate_limited"], 3, "{a}");
    assert!(a["forgeries"]["first"]["reason"].is_string(), "{a}");
    assert_eq!(
        a["rejected_notifications"].as_array().map(Vec::len),
        Some(4),
        "{a}"
    );
}

/// Without a provider, every check still answers its 4xx; 503
/// `provider_not_configured` only for a request that is valid and needs
/// the provider, and it holds nothing.
#[actix_web::test]
async fn every_check_answers_before_provider_not_configured() {
    let sim = Sim::start();
    let mut app = server(&sim, "").await;
    let (_, linked) = app.payee(&sim, "linked", 1000, "o-linked").await;
    let (_, unlinked) = app.user("unlinked").await;
    // The same data, and no provider any more.
    app.extra_config = "[payouts]\nkyc_above_fen = 500\n".into();
    app.restart().await;
    let (s, v) = app
        .post("/v1/payouts", Some(&linked), json!({"amount": 300}))
        .await;
    assert_eq!((s, code(&v)), (400, "idempotency_key_required"), "{v}");
    let (s, v) = app
        .call_with(
            "POST",
            "/v1/payouts",
            Some(&linked),
            Some(json!({"amount": "lots"})),
            &[("Idempotency-Key", "k-bad".to_string())],
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_json"), "{v}");
    for (tok, amount, status, want) in [
        (&unlinked, 300, 409, "account_not_linked"),
        (&linked, 1, 422, "payout_below_minimum"),
        (&linked, 600, 403, "kyc_required"),
        (&linked, 400, 503, "provider_not_configured"),
    ] {
        let (s, v) = app.payout(tok, &format!("k-{amount}"), amount).await;
        assert_eq!((s, code(&v)), (status, want), "{amount}: {v}");
    }
    let w = app.wallet(&linked).await;
    assert_eq!(
        (w["balance"].as_u64(), w["held"].as_u64()),
        (Some(1000), Some(0)),
        "nothing held: {w}"
    );
    let (s, v) = app.get("/v1/payouts", Some(&linked)).await;
    assert_eq!(
        (s, v["payouts"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    // Linking: a bad code is refused as such, a good one needs the provider.
    let (s, v) = app
        .post("/v1/wallet/link", Some(&unlinked), json!({"code": ""}))
        .await;
    assert_eq!((s, code(&v)), (400, "validation_failed"), "{v}");
    let (s, v) = app
        .post(
            "/v1/wallet/link",
            Some(&unlinked),
            json!({"code": "sim-code"}),
        )
        .await;
    assert_eq!((s, code(&v)), (503, "provider_not_configured"), "{v}");
}

/// The operator records a verified real name: it is stored sealed (no
/// byte of it in clear anywhere in the data dir or the log), kept across a
/// restart with the verification, and dropped when the verification is.
#[actix_web::test]
async fn a_verified_real_name_is_kept_sealed() {
    let mut app = TestApp::spawn().await;
    let (uid, _) = app.user("payee").await;
    let path = format!("/v1/admin/users/{uid}/kyc");
    let name = "欧阳修远 Ouyang";
    for bad in [
        json!({"verified": true, "real_name": ""}),
        json!({"verified": true, "real_name": "x".repeat(65)}),
        json!({"verified": true, "real_name": "a\u{0}b"}),
        json!({"verified": false, "real_name": name}),
    ] {
        let (s, v) = app.post(&path, Some(ADMIN), bad.clone()).await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "{bad}: {v}");
    }
    let (s, v) = app
        .post(
            &path,
            Some(ADMIN),
            json!({"verified": true, "real_name": name}),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, user_tok) = app.user("someone").await;
    let (s, _) = app
        .post(
            &path,
            Some(&user_tok),
            json!({"verified": true, "real_name": "me"}),
        )
        .await;
    assert_eq!(s, 403, "the admin token only");
    app.restart().await;
    // Nowhere in clear: not the journal, not sled, not the log.
    let needle = "欧阳修远".as_bytes();
    let mut files = vec![app.dir.path().to_path_buf()];
    let sealed = b"\"real_name\":\"v2.";
    let (mut read, mut stored) = (0, false);
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("dir") {
                files.push(e.expect("entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&p) {
            read += 1;
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the name in clear",
                p.display()
            );
            stored |= bytes.windows(sealed.len()).any(|w| w == sealed);
        }
    }
    assert!(
        read > 3 && stored,
        "{read} files read; a sealed name stored: {stored}"
    );
    // Withdrawn: verified false drops the name too (and a new one can be set).
    let (s, _) = app
        .post(&path, Some(ADMIN), json!({"verified": false}))
        .await;
    assert_eq!(s, 204);
    let (s, _) = app
        .post(
            &path,
            Some(ADMIN),
            json!({"verified": true, "real_name": "Li Lei"}),
        )
        .await;
    assert_eq!(s, 204);
}

/// Follow a provider redirect by hand: (status, Location, body).
pub async fn browse(app: &TestApp, url: &str, accept: &str) -> (u16, String, String) {
    let mut r = app
        .client
        .get(url)
        .insert_header(("Accept", accept))
        .send()
        .await
        .expect("request");
    let location = header(r.headers(), "location");
    let body = r.body().await.expect("body");
    (
        r.status().as_u16(),
        location,
        String::from_utf8_lossy(&body).to_string(),
    )
}

/// The account link as a browser flow: start (a session), the provider's
/// authorize page, the callback that links the user the state was issued
/// to; a state used twice, forged, or older than 10 minutes is refused.
#[actix_web::test]
async fn the_browser_link_flow_links_the_user_its_state_was_issued_to_once() {
    let sim = Sim::start();
    let mut app = server(&sim, "").await;
    let (_, alice) = app.user("alice").await;
    let (_, mallory) = app.user("mallory").await;
    assert_eq!(
        app.post("/v1/wallet/link/start", None, json!({})).await.0,
        401
    );
    let (s, v) = app
        .post("/v1/wallet/link/start", Some(&alice), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let authorize = s_(&v["authorize_url"]);
    let state = s_(&v["state"]);
    assert!(
        authorize.starts_with(&format!(
            "{}/connect/oauth2/authorize?appid=wx-qrgate-sim&redirect_uri=",
            sim.base
        )),
        "{authorize}"
    );
    assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
    // The simulator approves at once (as the user `o-browser`).
    let page = authorize.trim_end_matches("#wechat_redirect").to_string() + "&openid=o-browser";
    let (s, callback, _) = browse(&app, &page, "text/html").await;
    assert_eq!(s, 302);
    assert!(
        callback.starts_with(&format!("{}/v1/wallet/link/callback?code=", app.base)),
        "{callback}"
    );
    assert!(callback.contains(&format!("state={state}")), "{callback}");
    let (s, _, html) = browse(&app, &callback, "text/html").await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("linked"), "{html}");
    let (_, v) = app.get("/v1/wallet/link", Some(&alice)).await;
    assert_eq!(v["openid"], "o-browser", "{v}");
    let (_, v) = app.get("/v1/wallet/link", Some(&mallory)).await;
    assert_ne!(
        v["openid"], "o-browser",
        "only the user the state was issued to: {v}"
    );

    // Used once: a reload is refused, as a page and as a problem.
    let (s, _, html) = browse(&app, &callback, "text/html").await;
    assert_eq!(s, 400);
    assert!(html.contains("expired"), "{html}");
    let (s, _, body) = browse(&app, &callback, "application/json").await;
    let v: Value = serde_json::from_str(&body).expect("problem");
    assert_eq!((s, code(&v)), (400, "link_state_invalid"), "{v}");
    // A state nobody was issued.
    let (s, _, body) = browse(
        &app,
        &format!("{}/v1/wallet/link/callback?code=x&state=forged", app.base),
        "application/json",
    )
    .await;
    assert_eq!(s, 400, "{body}");

    // Older than 10 minutes.
    let (_, v) = app
        .post("/v1/wallet/link/start", Some(&mallory), json!({}))
        .await;
    let page = s_(&v["authorize_url"])
        .trim_end_matches("#wechat_redirect")
        .to_string();
    let old_base = app.base.clone();
    app.env
        .push(("QRGATE_CLOCK_OFFSET_SECS".into(), "660".into()));
    app.restart().await;
    let (_, callback, _) = browse(&app, &page, "text/html").await;
    let callback = callback.replace(&old_base, &app.base);
    let (s, _, body) = browse(&app, &callback, "application/json").await;
    let v: Value = serde_json::from_str(&body).expect("problem");
    assert_eq!((s, code(&v)), (400, "link_state_invalid"), "{v}");
    let (_, v) = app.get("/v1/wallet/link", Some(&mallory)).await;
    assert_eq!(v["linked"], false, "{v}");
}

/// The shipped default: the payment simulator runs in the server's own
/// process, so a newcomer can link an account in a browser and pay out
/// with nothing else running; it says so at start and on /healthz.
#[actix_web::test]
async fn the_embedded_simulator_links_and_pays_out_with_nothing_else_running() {
    let app = TestApp::spawn_with("[provider]\nkind = \"embedded_simulator\"\n").await;
    let mut r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    let health = String::from_utf8_lossy(&r.body().await.expect("body")).to_string();
    assert!(health.contains("provider embedded_simulator"), "{health}");
    assert!(app.log().contains("EMBEDDED PAYMENT SIMULATOR"));
    let (uid, tok) = app.user("newcomer").await;
    let (s, v) = app
        .post(
            "/v1/earnings",
            Some(ADMIN),
            json!({"event_id": "first", "user_id": uid, "kind": "task_completed", "amount": 500}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .post("/v1/wallet/link/start", Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let authorize = s_(&v["authorize_url"]);
    let (s, callback, _) = browse(
        &app,
        authorize.trim_end_matches("#wechat_redirect"),
        "text/html",
    )
    .await;
    assert_eq!(s, 302);
    let (s, _, html) = browse(&app, &callback, "text/html").await;
    assert_eq!(s, 200, "{html}");
    let (s, v) = app.payout(&tok, "first-payout", 300).await;
    assert_eq!(s, 202, "{v}");
    let done = app.settled(&tok, &s_(&v["id"])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.balance(&tok).await, 200);
}
