//! `qrgate paysim` as a real process, driven through the merchant-side
//! `ProviderClient`; notifications land on a tiny actix-web listener here.

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use qrgate_paysim as paysim;
use qrgate_provider::bill::parse_bill;
use qrgate_provider::client::{
    CheckName, ClientError, NotifyHeaders, ProviderClient, ProviderConfig, TransferRequest,
};
use qrgate_provider::notify::{TransferResult, TransferState};

/// The simulator process; killed on drop.
struct Sim {
    base: String,
    dir: tempfile::TempDir,
    child: Child,
    http: awc::Client,
}

impl Sim {
    fn start() -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, base) = super::helpers::spawn_paysim(dir.path());
        Sim {
            base,
            dir,
            child,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }

    fn config(&self) -> ProviderConfig {
        paysim::merchant_config(&self.base, &self.dir.path().join("keys")).expect("config")
    }

    fn client(&self) -> ProviderClient {
        ProviderClient::new(&self.config()).expect("client")
    }

    fn client_with(&self, edit: impl FnOnce(&mut ProviderConfig)) -> ProviderClient {
        let mut cfg = self.config();
        edit(&mut cfg);
        ProviderClient::new(&cfg).expect("client")
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        let mut resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .expect("control request");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(1 << 20).await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.control("POST", path, Some(body)).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }

    async fn faults(&self, patch: Value) {
        self.post("/sim/faults", patch).await;
    }

    async fn transfers(&self) -> Vec<Value> {
        let (status, v) = self.control("GET", "/sim/transfers", None).await;
        assert_eq!(status, 200, "{v}");
        v.as_array().cloned().expect("array")
    }

    async fn transfer(&self, partner_trade_no: &str) -> Value {
        self.transfers()
            .await
            .into_iter()
            .find(|t| t["partner_trade_no"] == partner_trade_no)
            .unwrap_or_else(|| panic!("no transfer {partner_trade_no}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("paysim.log")).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Received {
    headers: NotifyHeaders,
    body: web::Bytes,
}

#[derive(Clone, Default)]
struct Inbox {
    received: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many POSTs first.
    fail_first: Arc<AtomicUsize>,
}

/// The merchant's notification endpoint.
struct Receiver {
    url: String,
    inbox: Inbox,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(inbox: web::Data<Inbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(headers) = NotifyHeaders::from_headers(req.headers()) else {
        return HttpResponse::BadRequest().finish();
    };
    let failing = inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    inbox
        .received
        .lock()
        .expect("inbox")
        .push(Received { headers, body });
    if failing {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::NoContent().finish()
    }
}

impl Receiver {
    fn start() -> Receiver {
        let inbox = Inbox::default();
        let data = web::Data::new(inbox.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/notify", web::post().to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://{addr}/notify"),
            inbox,
            handle,
        }
    }

    fn count(&self) -> usize {
        self.inbox.received.lock().expect("inbox").len()
    }

    /// Waits until at least `n` POSTs arrived (at most 10 s).
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} notifications arrived",
                self.count()
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every POST so far, verified and decrypted.
    fn results(&self, client: &ProviderClient) -> Vec<Result<TransferResult, ClientError>> {
        let now = chrono::Utc::now().timestamp();
        self.inbox
            .received
            .lock()
            .expect("inbox")
            .iter()
            .map(|r| client.verify_notification(&r.headers, &r.body, now))
            .collect()
    }

    fn verified(&self, client: &ProviderClient) -> Vec<TransferResult> {
        self.results(client)
            .into_iter()
            .map(|r| r.expect("valid notification"))
            .collect()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn transfer(no: &str, openid: &str, amount: u64, notify_url: &str) -> TransferRequest {
    TransferRequest {
        partner_trade_no: no.into(),
        openid: openid.into(),
        amount,
        description: "payout".into(),
        check_name: CheckName::NoCheck,
        notify_url: notify_url.into(),
    }
}

fn rejected_code(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Rejected { status, code, .. }) => (status, code),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Polls `GET /sim/transfers` until the transfer's `field` is `value` (at
/// most 10 s).
async fn wait_field(sim: &Sim, no: &str, field: &str, value: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = sim.transfer(no).await;
        if t[field] == value {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{no}: {field} never became {value}: {t}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_state(sim: &Sim, no: &str, state: &str) -> Value {
    wait_field(sim, no, "state", json!(state)).await
}

#[actix_web::test]
async fn oauth_codes_are_single_use_and_refresh_tokens_last_until_revoked() {
    let sim = Sim::start();
    let client = sim.client();
    sim.post(
        "/sim/codes",
        json!({ "code": "code-1", "openid": "o-alice" }),
    )
    .await;

    let tokens = client.exchange_code("code-1").await.expect("exchange");
    assert_eq!(tokens.openid, "o-alice");
    assert_eq!(tokens.expires_in, 7200);
    assert_eq!(tokens.scope, "snsapi_base");
    assert!(!tokens.access_token.is_empty() && !tokens.refresh_token.is_empty());

    // Single use.
    assert_eq!(
        rejected_code(client.exchange_code("code-1").await),
        (200, "40163".into())
    );
    // Never registered.
    let err = client.exchange_code("never-registered").await;
    assert_eq!(rejected_code(err), (200, "40029".into()));
    // Characters that need encoding reach the provider intact (and are unknown).
    assert_eq!(
        rejected_code(client.exchange_code("a&b=c d").await),
        (200, "40029".into())
    );

    let refreshed = client
        .refresh(&tokens.refresh_token)
        .await
        .expect("refresh");
    assert_eq!(refreshed.openid, "o-alice");
    assert_ne!(refreshed.access_token, tokens.access_token);
    assert_eq!(refreshed.refresh_token, tokens.refresh_token);
    // Still valid.
    client
        .refresh(&tokens.refresh_token)
        .await
        .expect("refresh again");

    let v = sim
        .post(
            "/sim/revoke",
            json!({ "refresh_token": tokens.refresh_token }),
        )
        .await;
    assert_eq!(v["revoked"], true);
    assert_eq!(
        rejected_code(client.refresh(&tokens.refresh_token).await),
        (200, "40030".into())
    );

    // A wrong app secret.
    sim.post("/sim/codes", json!({ "code": "code-2", "openid": "o-bob" }))
        .await;
    let wrong = sim.client_with(|c| c.app_secret = "not-the-secret".into());
    assert_eq!(
        rejected_code(wrong.exchange_code("code-2").await),
        (200, "40125".into())
    );
    // ... did not burn the code.
    assert_eq!(
        client
            .exchange_code("code-2")
            .await
            .expect("exchange")
            .openid,
        "o-bob"
    );
}

#[actix_web::test]
async fn transfer_is_notified_idempotent_and_queryable() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();

    let t1 = transfer("T-1", "o-alice", 150, &rx.url);
    let created = client.create_transfer(&t1).await.expect("create");
    assert_eq!(created.partner_trade_no, "T-1");
    assert_eq!(created.amount, 150);
    assert!(
        matches!(
            created.state,
            TransferState::Accepted | TransferState::Success
        ),
        "{created:?}"
    );

    rx.wait_for(1).await;
    let got = rx.verified(&client);
    assert_eq!(got.len(), 1);
    let n = &got[0];
    assert_eq!(n.partner_trade_no, "T-1");
    assert_eq!(n.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(n.state, TransferState::Success);
    assert_eq!(n.amount, 150);
    assert_eq!(n.openid, "o-alice");
    assert_eq!(n.mchid, paysim::MCHID);

    // A tampered notification does not verify.
    {
        let inbox = rx.inbox.received.lock().expect("inbox");
        let r = &inbox[0];
        let mut body = r.body.to_vec();
        let last = body.len() - 2;
        body[last] ^= 1;
        let now = chrono::Utc::now().timestamp();
        assert!(matches!(
            client.verify_notification(&r.headers, &body, now),
            Err(ClientError::BadSignature(_))
        ));
        // Nor does a replay far in the future.
        assert!(matches!(
            client.verify_notification(&r.headers, &r.body, now + 600),
            Err(ClientError::BadSignature(_))
        ));
    }

    // Idempotent re-create: same transfer, now final.
    let again = client.create_transfer(&t1).await.expect("re-create");
    assert_eq!(again.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(again.state, TransferState::Success);
    wait_field(&sim, "T-1", "acks", json!(1)).await;
    let all = sim.transfers().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["create_requests"], 2);
    assert_eq!(all[0]["notifications"], 1);

    // Same number, other fields: refused, nothing created.
    let mut other = t1.clone();
    other.amount = 151;
    assert_eq!(
        rejected_code(client.create_transfer(&other).await),
        (400, "INVALID_REQUEST".into())
    );
    assert_eq!(sim.transfers().await.len(), 1);

    let queried = client
        .query_transfer("T-1")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(queried.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(queried.state, TransferState::Success);
    assert_eq!(queried.fail_reason, None);
    assert!(client
        .query_transfer("T-unknown")
        .await
        .expect("query")
        .is_none());

    // Failures: a `fail-` openid, an amount above the limit.
    client
        .create_transfer(&transfer("T-2", "fail-bob", 100, &rx.url))
        .await
        .expect("create");
    client
        .create_transfer(&transfer("T-3", "o-carol", 20_001, &rx.url))
        .await
        .expect("create");
    rx.wait_for(3).await;
    let got = rx.verified(&client);
    let find = |no: &str| {
        got.iter()
            .find(|r| r.partner_trade_no == no)
            .cloned()
            .unwrap_or_else(|| panic!("no notification for {no}"))
    };
    let t2 = find("T-2");
    assert_eq!(t2.state, TransferState::Fail);
    assert_eq!(t2.fail_reason.as_deref(), Some("PAYEE_ACCOUNT_ABNORMAL"));
    let t3 = find("T-3");
    assert_eq!(t3.state, TransferState::Fail);
    assert_eq!(t3.fail_reason.as_deref(), Some("TRANSFER_QUOTA_EXCEED"));
    let q = client
        .query_transfer("T-2")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.fail_reason.as_deref(), Some("PAYEE_ACCOUNT_ABNORMAL"));

    // Business errors are definitive.
    let err = client
        .create_transfer(&transfer("T-4", "mismatch-dave", 100, &rx.url))
        .await;
    assert_eq!(rejected_code(err), (400, "OPENID_MISMATCH".into()));
    sim.faults(json!({ "balance": 10 })).await;
    let err = client
        .create_transfer(&transfer("T-5", "o-erin", 100, &rx.url))
        .await;
    assert_eq!(rejected_code(err), (403, "NOT_ENOUGH".into()));
    assert_eq!(sim.transfers().await.len(), 3);
    rx.stop().await;
}

#[actix_web::test]
async fn lost_reply_then_retry_with_the_same_number_pays_once() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    sim.faults(json!({ "lost_reply_next": 1 })).await;

    let t = transfer("T-lost", "o-alice", 500, &rx.url);
    let err = client.create_transfer(&t).await.expect_err("lost reply");
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    // It was processed all the same.
    assert!(client
        .query_transfer("T-lost")
        .await
        .expect("query")
        .is_some());

    let retried = client.create_transfer(&t).await.expect("retry");
    rx.wait_for(1).await;
    // Give a wrong second notification the time to show up.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let got = rx.verified(&client);
    assert_eq!(got.len(), 1, "one transfer, one notification");
    assert_eq!(got[0].transfer_bill_no, retried.transfer_bill_no);
    assert_eq!(got[0].state, TransferState::Success);

    let all = sim.transfers().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["partner_trade_no"], "T-lost");
    assert_eq!(all[0]["create_requests"], 2);
    assert_eq!(all[0]["state"], "SUCCESS");
    assert_eq!(all[0]["amount"], 500);
    rx.stop().await;
}

#[actix_web::test]
async fn server_errors_and_timeouts_are_transient() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();

    // 5xx without processing.
    sim.faults(json!({ "fail_5xx_next": 1 })).await;
    let t = transfer("T-5xx", "o-alice", 100, &rx.url);
    let err = client.create_transfer(&t).await.expect_err("5xx");
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(client
        .query_transfer("T-5xx")
        .await
        .expect("query")
        .is_none());
    client.create_transfer(&t).await.expect("retry");

    // No answer in time: processed, answered 30 s later.
    let impatient = sim.client_with(|c| c.timeout_ms = 400);
    sim.faults(json!({ "timeout_next": 1 })).await;
    let started = Instant::now();
    let err = impatient
        .create_transfer(&transfer("T-slow", "o-bob", 100, &rx.url))
        .await
        .expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3));
    let found = impatient
        .query_transfer("T-slow")
        .await
        .expect("query")
        .expect("processed");
    assert_eq!(found.amount, 100);

    // A slow provider within the deadline is fine; beyond it, a timeout.
    sim.faults(json!({ "delay_ms": 600 })).await;
    assert!(matches!(
        impatient.query_transfer("T-slow").await,
        Err(ClientError::Timeout)
    ));
    client
        .query_transfer("T-slow")
        .await
        .expect("patient query")
        .expect("found");
    sim.faults(json!({ "delay_ms": 0 })).await;

    // Nobody listening: unavailable.
    let gone = sim.client_with(|c| c.base_url = "http://127.0.0.1:9".into());
    let err = gone.query_transfer("T-slow").await.expect_err("refused");
    assert!(err.is_transient(), "{err:?}");
    rx.stop().await;
}

#[actix_web::test]
async fn forged_signatures_and_wrong_merchant_keys_are_refused() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    client
        .create_transfer(&transfer("T-ok", "o-alice", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(1).await;

    sim.faults(json!({ "forge_signatures": true })).await;
    let err = client.query_transfer("T-ok").await.expect_err("forged");
    assert!(matches!(err, ClientError::BadSignature(_)), "{err:?}");
    assert!(err.is_transient());
    // A forged 404 is not believed either.
    assert!(matches!(
        client.query_transfer("T-none").await,
        Err(ClientError::BadSignature(_))
    ));
    let err = client
        .create_transfer(&transfer("T-forged", "o-bob", 100, &rx.url))
        .await
        .expect_err("forged");
    assert!(matches!(err, ClientError::BadSignature(_)), "{err:?}");
    rx.wait_for(2).await;
    let results = rx.results(&client);
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(ClientError::BadSignature(_))),
        "{:?}",
        results[1]
    );
    let today = chrono::Utc::now()
        .with_timezone(&paysim::state::BEIJING)
        .date_naive();
    assert!(matches!(
        client.download_bill(today).await,
        Err(ClientError::BadSignature(_))
    ));

    // Requests signed with a key the provider does not know.
    sim.faults(json!({ "forge_signatures": false })).await;
    let keys = sim.dir.path().join("keys");
    let stranger =
        sim.client_with(|c| c.merchant_key_file = keys.join(paysim::PLATFORM_PRIVATE_FILE));
    assert_eq!(
        rejected_code(stranger.query_transfer("T-ok").await),
        (401, "SIGN_ERROR".into())
    );
    let wrong_serial = sim.client_with(|c| c.merchant_serial = "OTHER".into());
    assert_eq!(
        rejected_code(wrong_serial.query_transfer("T-ok").await),
        (401, "SIGN_ERROR".into())
    );
    // The client refuses answers from another platform serial.
    let other_platform = sim.client_with(|c| c.platform_serial = "OTHER".into());
    assert!(matches!(
        other_platform.query_transfer("T-ok").await,
        Err(ClientError::BadSignature(_))
    ));
    rx.stop().await;
}

#[actix_web::test]
async fn bill_reports_transfers_with_overrides_and_extras() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    for (no, openid, amount) in [
        ("B-1", "o-a", 100),
        ("B-2", "o-b", 200),
        ("B-3", "o-c", 300),
        ("B-4", "fail-d", 400),
    ] {
        client
            .create_transfer(&transfer(no, openid, amount, &rx.url))
            .await
            .expect("create");
    }
    for no in ["B-1", "B-2", "B-3"] {
        wait_state(&sim, no, "SUCCESS").await;
    }
    wait_state(&sim, "B-4", "FAIL").await;
    let today = chrono::Utc::now()
        .with_timezone(&paysim::state::BEIJING)
        .date_naive();

    let bill = parse_bill(&client.download_bill(today).await.expect("bill")).expect("parse");
    assert_eq!(bill.rows.len(), 4);
    let summary = bill.summary().expect("summary");
    assert_eq!((summary.success_count, summary.success_amount), (3, 600));

    sim.post(
        "/sim/bill_override",
        json!({ "partner_trade_no": "B-1", "amount": 101 }),
    )
    .await;
    sim.post(
        "/sim/bill_override",
        json!({ "partner_trade_no": "B-2", "omit": true }),
    )
    .await;
    sim.post(
        "/sim/bill_override",
        json!({ "partner_trade_no": "B-3", "status": "FAIL" }),
    )
    .await;
    sim.post(
        "/sim/bill_extra",
        json!({ "partner_trade_no": "B-X", "openid": "o-x", "amount": 999 }),
    )
    .await;
    let (status, _) = sim
        .control(
            "POST",
            "/sim/bill_extra",
            Some(json!({ "partner_trade_no": "B-1", "openid": "o-x", "amount": 1 })),
        )
        .await;
    assert_eq!(status, 409, "a known transfer cannot be an extra row");

    let text = client.download_bill(today).await.expect("bill");
    let bill = parse_bill(&text).expect("parse");
    let row = |no: &str| bill.rows.iter().find(|r| r.partner_trade_no == no);
    assert_eq!(row("B-1").map(|r| r.amount), Some(101));
    assert!(row("B-2").is_none());
    assert_eq!(row("B-3").map(|r| r.status), Some(TransferState::Fail));
    let failed = row("B-4").expect("B-4");
    assert_eq!(failed.status, TransferState::Fail);
    assert_eq!(
        failed.fail_reason.as_deref(),
        Some("PAYEE_ACCOUNT_ABNORMAL")
    );
    let extra = row("B-X").expect("B-X");
    assert_eq!((extra.amount, extra.status), (999, TransferState::Success));
    assert_eq!(extra.mchid, paysim::MCHID);
    assert_eq!(bill.rows.len(), 4);

    // Other days: yesterday is empty, tomorrow does not exist yet.
    let yesterday = today.pred_opt().expect("yesterday");
    let empty = parse_bill(&client.download_bill(yesterday).await.expect("bill")).expect("parse");
    assert!(empty.rows.is_empty());
    let tomorrow = today.succ_opt().expect("tomorrow");
    assert_eq!(
        rejected_code(client.download_bill(tomorrow).await),
        (400, "NO_STATEMENT_EXIST".into())
    );
    rx.stop().await;
}

#[actix_web::test]
async fn notifications_are_retried_duplicated_held_and_reordered() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();

    // The merchant fails the first delivery: redelivered 15 s × 0.01 later.
    rx.inbox.fail_first.store(1, Ordering::SeqCst);
    client
        .create_transfer(&transfer("N-1", "o-a", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(2).await;
    let got = rx.verified(&client);
    assert_eq!(got[0], got[1], "a redelivery carries the same result");
    let t = wait_field(&sim, "N-1", "acks", json!(1)).await;
    assert_eq!(t["deliveries"], 2);

    // Duplicates.
    sim.faults(json!({ "duplicate_notifications": true })).await;
    client
        .create_transfer(&transfer("N-2", "o-b", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(4).await;
    let got = rx.verified(&client);
    assert_eq!(got[2], got[3]);
    assert_eq!(got[2].partner_trade_no, "N-2");
    sim.faults(json!({ "duplicate_notifications": false }))
        .await;

    // Held, then released newest first.
    sim.faults(json!({ "hold_notifications": true, "out_of_order": true }))
        .await;
    for no in ["N-3", "N-4", "N-5"] {
        client
            .create_transfer(&transfer(no, "o-c", 100, &rx.url))
            .await
            .expect("create");
    }
    for no in ["N-3", "N-4", "N-5"] {
        wait_state(&sim, no, "SUCCESS").await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.count(), 4, "held notifications must not be sent");
    let v = sim.post("/sim/release", json!({})).await;
    assert_eq!(v["released"], 3);
    rx.wait_for(7).await;
    let order: Vec<String> = rx.verified(&client)[4..]
        .iter()
        .map(|r| r.partner_trade_no.clone())
        .collect();
    assert_eq!(order, ["N-5", "N-4", "N-3"]);

    // Out of order by itself: a batch window collects, then newest first.
    sim.faults(json!({ "hold_notifications": false, "batch_window_ms": 600 }))
        .await;
    for no in ["N-6", "N-7"] {
        client
            .create_transfer(&transfer(no, "o-d", 100, &rx.url))
            .await
            .expect("create");
    }
    rx.wait_for(9).await;
    let order: Vec<String> = rx.verified(&client)[7..]
        .iter()
        .map(|r| r.partner_trade_no.clone())
        .collect();
    assert_eq!(order, ["N-7", "N-6"]);
    sim.faults(json!({ "out_of_order": false })).await;

    // Forced completion while automatic completion is off.
    sim.faults(json!({ "auto_complete": false })).await;
    client
        .create_transfer(&transfer("N-8", "o-e", 100, &rx.url))
        .await
        .expect("create");
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let q = client
        .query_transfer("N-8")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.state, TransferState::Accepted);
    let v = sim
        .post(
            "/sim/complete",
            json!({ "partner_trade_no": "N-8", "state": "FAIL", "fail_reason": "ACCOUNT_FROZEN" }),
        )
        .await;
    assert_eq!(v["state"], "FAIL");
    rx.wait_for(10).await;
    let last = rx.verified(&client).pop().expect("last");
    assert_eq!(last.partner_trade_no, "N-8");
    assert_eq!(last.state, TransferState::Fail);
    assert_eq!(last.fail_reason.as_deref(), Some("ACCOUNT_FROZEN"));
    let (status, _) = sim
        .control(
            "POST",
            "/sim/complete",
            Some(json!({ "partner_trade_no": "N-8", "state": "SUCCESS" })),
        )
        .await;
    assert_eq!(status, 409, "a final state never changes");
    assert!(!sim.log().is_empty());
    rx.stop().await;
}
