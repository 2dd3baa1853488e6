//! Wallets over HTTP: earnings, balances, entries, the books check, and
//! what survives a restart or a `kill -9`.

use super::helpers::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

impl TestApp {
    pub async fn earn(&self, event: &str, user: &str, amount: u64) -> (u16, Value) {
        self.post(
            "/v1/earnings",
            Some(ADMIN),
            json!({"event_id": event, "user_id": user, "kind": "task_completed", "amount": amount}),
        )
        .await
    }

    pub async fn balance(&self, token: &str) -> i64 {
        let (s, v) = self.get("/v1/wallet", Some(token)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["currency"], "CNY");
        v["balance"].as_i64().expect("balance")
    }

    /// The books check; asserts it is clean and returns the report.
    pub async fn books_clean(&self) -> Value {
        let (s, v) = self.get("/v1/admin/ledger/check", Some(ADMIN)).await;
        assert_eq!(s, 200, "books do not hold: {v}");
        assert_eq!(v["findings"], json!([]), "{v}");
        assert_eq!(v["posted_sum"], 0, "{v}");
        assert_eq!(v["pending_sum"], 0, "{v}");
        v
    }
}

#[actix_web::test]
async fn earnings_credit_once_and_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let (alice, alice_tok) = app.user("alice").await;
    let (bob, bob_tok) = app.user("bob").await;
    assert_eq!(app.balance(&alice_tok).await, 0, "a new wallet is empty");

    let (s, v) = app.earn("ev-1", &alice, 250).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["amount"], 250);
    let transfer = s_(&v["transfer_id"]);
    // The same event again: the original answer, no second credit.
    let (s, v) = app.earn("ev-1", &alice, 250).await;
    assert_eq!((s, s_(&v["transfer_id"])), (200, transfer.clone()), "{v}");
    // The same event with other fields is a conflict, naming the difference.
    let (s, v) = app.earn("ev-1", &alice, 251).await;
    assert_eq!((s, code(&v)), (409, "exists_with_different_amount"), "{v}");
    let (s, v) = app.earn("ev-1", &bob, 250).await;
    assert_eq!(
        (s, code(&v)),
        (409, "exists_with_different_credit_account_id"),
        "{v}"
    );
    let (s, _) = app.earn("ev-2", &alice, 50).await;
    assert_eq!(s, 201);
    assert_eq!(app.balance(&alice_tok).await, 300);
    assert_eq!(app.balance(&bob_tok).await, 0);

    let (s, v) = app.get("/v1/wallet/entries", Some(&alice_tok)).await;
    assert_eq!(s, 200, "{v}");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{v}");
    assert_eq!(entries[0]["amount"], 50, "newest first: {v}");
    assert_eq!(entries[0]["balance"], 300);
    assert_eq!(entries[1]["amount"], 250);
    assert_eq!(entries[1]["transfer_id"], json!(transfer));
    assert_eq!(entries[1]["reason"], "earning");
    assert_eq!(entries[1]["counterparty"], "revenue:task_completed");
    assert_eq!(entries[1]["user_data"], "ev-1");
    // Paging.
    let (_, v) = app
        .get("/v1/wallet/entries?limit=1", Some(&alice_tok))
        .await;
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(1));
    let next = v["next_before"].as_u64().expect("next page");
    let (_, v) = app
        .get(
            &format!("/v1/wallet/entries?limit=1&before={next}"),
            Some(&alice_tok),
        )
        .await;
    assert_eq!(v["entries"][0]["amount"], 250, "{v}");
    assert_eq!(v["next_before"], Value::Null);

    let report = app.books_clean().await;
    assert_eq!(report["transfers"], 2, "{report}");

    app.restart().await;
    assert_eq!(app.balance(&alice_tok).await, 300);
    let (s, _) = app.earn("ev-1", &alice, 250).await;
    assert_eq!(s, 200, "idempotent across restarts");
    assert_eq!(app.balance(&alice_tok).await, 300);
    let report = app.books_clean().await;
    assert_eq!(report["transfers"], 2, "{report}");
    assert_eq!(report["journal_days"].as_array().map(Vec::len), Some(1));
}

#[actix_web::test]
async fn earnings_are_validated_and_admin_only() {
    let app = TestApp::spawn().await;
    let (alice, alice_tok) = app.user("alice").await;
    let body = |kind: &str, amount: u64, event: &str| json!({"event_id": event, "user_id": alice, "kind": kind, "amount": amount});
    for (b, want) in [
        (body("task_completed", 0, "e"), "validation_failed"),
        (body("task_completed", 10_001, "e"), "validation_failed"),
        (body("mining", 10, "e"), "validation_failed"),
        (body("task_completed", 10, ""), "validation_failed"),
        (body("task_completed", 10, "has space"), "validation_failed"),
        (
            body("task_completed", 10, &"x".repeat(129)),
            "validation_failed",
        ),
    ] {
        let (s, v) = app.post("/v1/earnings", Some(ADMIN), b.clone()).await;
        assert_eq!((s, code(&v)), (400, want), "{b} -> {v}");
    }
    let (s, v) = app
        .post(
            "/v1/earnings",
            Some(ADMIN),
            json!({"event_id": "e", "user_id": "u_AAAAAAAAAAAAAAAAAAAAAA", "kind": "task_completed", "amount": 5}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "user_not_found"), "{v}");
    let (s, v) = app
        .post(
            "/v1/earnings",
            Some(ADMIN),
            json!({"event_id": "e", "user_id": alice, "kind": "task_completed", "amount": -5}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_json"), "{v}");
    // Only the operator credits wallets.
    let good = body("task_completed", 10, "e-ok");
    let (s, v) = app.post("/v1/earnings", None, good.clone()).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    let (s, v) = app
        .post("/v1/earnings", Some(&alice_tok), good.clone())
        .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = app.get("/v1/admin/ledger/check", Some(&alice_tok)).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    // A wallet is only ever the caller's own.
    let (s, _) = app.get("/v1/wallet", None).await;
    assert_eq!(s, 401);
    let (s, _) = app.get("/v1/wallet/entries", Some("forged")).await;
    assert_eq!(s, 401);
    let (s, v) = app
        .get("/v1/wallet/entries?limit=0", Some(&alice_tok))
        .await;
    assert_eq!((s, code(&v)), (400, "validation_failed"));
    assert_eq!(app.balance(&alice_tok).await, 0, "nothing was credited");
    app.books_clean().await;
}

async fn post_earning(
    base: String,
    client: awc::Client,
    event: String,
    user: String,
    amount: u64,
) -> (u16, String) {
    let mut r = client
        .post(format!("{base}/v1/earnings"))
        .insert_header(("Authorization", format!("Bearer {ADMIN}")))
        .send_json(&json!({"event_id": event, "user_id": user, "kind": "task_completed", "amount": amount}))
        .await
        .expect("request");
    let body = r.body().await.expect("body");
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (r.status().as_u16(), code(&v).to_string())
}

#[actix_web::test]
async fn concurrent_earnings_and_retries_credit_each_event_once() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(app.user(&format!("u{i}")).await);
    }
    // 400 distinct events, each sent twice at the same time.
    let mut tasks = Vec::new();
    for n in 0..800u64 {
        let event = n / 2;
        let user = users[(event % 4) as usize].0.clone();
        tasks.push(actix_web::rt::spawn(post_earning(
            app.base.clone(),
            app.client.clone(),
            format!("ev-{event}"),
            user,
            event + 1,
        )));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            (201, _) => created += 1,
            (200, _) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(created, 400, "each event credited exactly once");
    for (k, (_, tok)) in users.iter().enumerate() {
        let want: i64 = (0..400i64)
            .filter(|e| e % 4 == k as i64)
            .map(|e| e + 1)
            .sum();
        assert_eq!(app.balance(tok).await, want, "user {k}");
    }
    let report = app.books_clean().await;
    assert_eq!(report["transfers"], 400, "{report}");
}

#[actix_web::test]
async fn one_event_id_racing_for_two_users_credits_one() {
    let app = TestApp::spawn().await;
    let (a, a_tok) = app.user("a").await;
    let (b, b_tok) = app.user("b").await;
    // Different users' actors decide in parallel; the committer lets only
    // one transfer with the id exist.
    for round in 0..20 {
        let ev = format!("race-{round}");
        let ta = actix_web::rt::spawn(post_earning(
            app.base.clone(),
            app.client.clone(),
            ev.clone(),
            a.clone(),
            10,
        ));
        let tb = actix_web::rt::spawn(post_earning(
            app.base.clone(),
            app.client.clone(),
            ev,
            b.clone(),
            10,
        ));
        let mut answers = [ta.await.expect("a"), tb.await.expect("b")];
        answers.sort();
        assert_eq!(answers[0].0, 201, "{answers:?}");
        assert_eq!(answers[1].0, 409, "{answers:?}");
        assert!(
            [
                "exists_with_different_credit_account_id",
                "concurrent_update"
            ]
            .contains(&answers[1].1.as_str()),
            "{answers:?}"
        );
    }
    let total = app.balance(&a_tok).await + app.balance(&b_tok).await;
    assert_eq!(total, 200, "20 events of 10 fen, each credited once");
    app.books_clean().await;
}

#[actix_web::test]
async fn sigkill_during_earnings_loses_no_acknowledged_credit() {
    let mut app = TestApp::spawn().await;
    let (alice, alice_tok) = app.user("alice").await;
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for n in 0..600u64 {
        let base = app.base.clone();
        let client = app.client.clone();
        let alice = alice.clone();
        let acked = Arc::clone(&acked);
        tasks.push(actix_web::rt::spawn(async move {
            let r = client
                .post(format!("{base}/v1/earnings"))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")))
                .send_json(&json!({"event_id": format!("k-{n}"), "user_id": alice, "kind": "ad_view_verified", "amount": 1 + n % 7}))
                .await;
            if let Ok(r) = r {
                if r.status().as_u16() == 201 {
                    acked.lock().expect("lock").push(n);
                }
            }
        }));
    }
    // Kill once some answers are in (waits up to 10 s on a loaded machine).
    for _ in 0..2000 {
        if acked.lock().expect("lock").len() >= 100 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 100,
        "only {} acked before the kill",
        acked.len()
    );
    app.restart().await;
    let balance = app.balance(&alice_tok).await;
    let acked_sum: i64 = acked.iter().map(|n| (1 + n % 7) as i64).sum();
    assert!(
        balance >= acked_sum,
        "balance {balance} lost acknowledged credits (acked sum {acked_sum})"
    );
    // Each acked event is there exactly once: replaying it answers 200.
    for n in acked.iter().take(50) {
        let (s, v) = app
            .post(
                "/v1/earnings",
                Some(ADMIN),
                json!({"event_id": format!("k-{n}"), "user_id": alice, "kind": "ad_view_verified", "amount": 1 + n % 7}),
            )
            .await;
        assert_eq!(s, 200, "event k-{n} was acknowledged but is missing: {v}");
    }
    let (_, v) = app
        .get("/v1/wallet/entries?limit=200", Some(&alice_tok))
        .await;
    let last = v["entries"][0]["balance"].as_i64().unwrap_or(0);
    assert_eq!(
        last,
        app.balance(&alice_tok).await,
        "entries agree with the balance"
    );
    app.books_clean().await;
}

/// Edit a wallet's posted credits directly in the database.
fn set_credits(tree: &sled::Tree, user: &str, credits: u64) {
    let key = format!("la/wallet:{user}");
    let v = tree.get(&key).expect("get").expect("wallet record");
    let mut a: Value = serde_json::from_slice(&v).expect("json");
    a["credits_posted"] = json!(credits);
    tree.insert(&key, serde_json::to_vec(&a).expect("enc"))
        .expect("insert");
}

#[actix_web::test]
async fn the_books_check_finds_edited_balances_and_journal_records() {
    let mut app = TestApp::spawn().await;
    let (alice, alice_tok) = app.user("alice").await;
    for n in 0..3 {
        let (s, _) = app.earn(&format!("t-{n}"), &alice, 100).await;
        assert_eq!(s, 201);
    }
    app.books_clean().await;
    // Edit the database behind the server's back: a balance, then a journal record.
    app.terminate();
    {
        let db = sled::open(app.data_dir().join("db")).expect("open db");
        let tree = db.open_tree("state").expect("tree");
        set_credits(&tree, &alice, 1_000_000);
        db.flush().expect("flush");
    }
    app.restart().await;
    assert_eq!(
        app.balance(&alice_tok).await,
        1_000_000,
        "the edit is visible"
    );
    let (s, v) = app.get("/v1/admin/ledger/check", Some(ADMIN)).await;
    assert_eq!((s, code(&v)), (409, "ledger_inconsistent"), "{v}");
    let findings = v["report"]["findings"].to_string();
    assert!(findings.contains(&format!("wallet:{alice}")), "{findings}");
    assert_ne!(v["report"]["posted_sum"], 0);

    app.terminate();
    {
        let db = sled::open(app.data_dir().join("db")).expect("open db");
        let tree = db.open_tree("state").expect("tree");
        // Undo the balance edit, then change a field inside journal record
        // 2 (which the checkpoint at the graceful stop put in the first
        // page of chain records, `lJ/` page 0).
        set_credits(&tree, &alice, 300);
        let mut jkey = b"lJ/".to_vec();
        jkey.extend_from_slice(&0u64.to_be_bytes());
        let page = tree.get(&jkey).expect("get").expect("chain page 0");
        let (from, to) = (&b"\"user_data\":\"t-1\""[..], &b"\"user_data\":\"t-X\""[..]);
        let at = page
            .windows(from.len())
            .position(|w| w == from)
            .expect("record 2 in the page");
        let mut edited = page.to_vec();
        edited[at..at + to.len()].copy_from_slice(to);
        tree.insert(&jkey, edited).expect("insert");
        db.flush().expect("flush");
    }
    app.restart().await;
    let (s, v) = app.get("/v1/admin/ledger/check", Some(ADMIN)).await;
    assert_eq!((s, code(&v)), (409, "ledger_inconsistent"), "{v}");
    let findings = v["report"]["findings"].to_string();
    assert!(
        findings.contains("record 2 does not match the chain"),
        "{findings}"
    );
}

/// Entries that a checkpoint moved into pages and entries written since
/// read back as one history: newest first, every one once, paged with
/// `before`, the balances running down to the first credit.
#[actix_web::test]
async fn entries_read_across_checkpointed_pages_and_newer_records() {
    let mut app = TestApp::spawn().await;
    let (alice, tok) = app.user("alice").await;
    for n in 0..37u64 {
        let (s, v) = app.earn(&format!("p-{n}"), &alice, 1 + n).await;
        assert_eq!(s, 201, "{v}");
    }
    // A graceful stop ends with a checkpoint: these 37 go into pages.
    app.terminate();
    app.restart().await;
    for n in 37..45u64 {
        let (s, v) = app.earn(&format!("p-{n}"), &alice, 1 + n).await;
        assert_eq!(s, 201, "{v}");
    }
    let mut seen = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/v1/wallet/entries?limit=10&before={b}"),
            None => "/v1/wallet/entries?limit=10".to_string(),
        };
        let (s, v) = app.get(&path, Some(&tok)).await;
        assert_eq!(s, 200, "{v}");
        for e in v["entries"].as_array().expect("entries") {
            seen.push((
                e["seq"].as_u64().expect("seq"),
                e["balance"].as_i64().expect("balance"),
            ));
        }
        match v["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (0..45).rev().collect::<Vec<_>>(),
        "every entry once, newest first"
    );
    // Balance after entry n: 1 + 2 + ... + (n + 1).
    for (seq, balance) in &seen {
        assert_eq!(*balance as u64, (seq + 1) * (seq + 2) / 2, "entry {seq}");
    }
    app.books_clean().await;
}
