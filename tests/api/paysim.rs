//! `qrgate paysim` as a real process, driven through the merchant-side
//! `ProviderClient`; notifications land on a tiny actix-web listener here.

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use qrgate_paysim as paysim;
use qrgate_provider::bill::parse_bill;
use qrgate_provider::client::{
    ClientError, NotifyHeaders, ProviderClient, ProviderConfig, TransferRequest,
};
use qrgate_provider::notify::{TransferResult, TransferState};
use qrgate_provider::wire::TransferBillBody;

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

    async fn transfer(&self, out_bill_no: &str) -> Value {
        self.transfers()
            .await
            .into_iter()
            .find(|t| t["out_bill_no"] == out_bill_no)
            .unwrap_or_else(|| panic!("no transfer {out_bill_no}"))
    }

    /// A create sent by hand (signed by `client`), to see what the
    /// simulator does with what the client would refuse to send.
    async fn raw_create(
        &self,
        client: &ProviderClient,
        body: &TransferBillBody,
        serial: Option<&str>,
    ) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        let auth = client
            .authorization(&Method::POST, BILLS, chrono::Utc::now().timestamp(), &bytes)
            .expect("authorization");
        let mut req = self
            .http
            .post(format!("{}{BILLS}", self.base))
            .insert_header(("Authorization", auth))
            .insert_header(("Content-Type", "application/json"));
        if let Some(serial) = serial {
            req = req.insert_header(("Wechatpay-Serial", serial));
        }
        let mut resp = req.send_body(bytes).await.expect("create");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(1 << 20).await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
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

const BILLS: &str = "/v3/fund-app/mch-transfer/transfer-bills";

fn transfer(no: &str, openid: &str, amount: u64, notify_url: &str) -> TransferRequest {
    TransferRequest {
        out_bill_no: no.into(),
        openid: openid.into(),
        amount,
        remark: "payout".into(),
        user_name: None,
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
async fn transfer_waits_for_the_user_then_is_notified_idempotent_and_queryable() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();

    let t1 = transfer("T1", "o-alice", 150, &rx.url);
    let created = client.create_transfer(&t1).await.expect("create");
    assert_eq!(created.out_bill_no, "T1");
    assert_eq!(created.state, TransferState::WaitUserConfirm, "{created:?}");
    let package_info = created.package_info.clone().expect("package_info");
    assert!(!package_info.is_empty());

    // The simulated user confirms at once (confirmation "auto").
    rx.wait_for(1).await;
    let got = rx.verified(&client);
    assert_eq!(got.len(), 1);
    let n = &got[0];
    assert_eq!(n.out_bill_no, "T1");
    assert_eq!(n.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(n.state, TransferState::Success);
    assert_eq!(n.amount, 150);
    assert_eq!(n.openid, "o-alice");
    assert_eq!(n.merchant(), Some(paysim::MCHID));
    let view = sim.transfer("T1").await;
    assert_eq!(view["package_info"], package_info.as_str());
    assert_eq!(view["confirmation"], "auto");
    assert_eq!(view["confirmed"], true);
    assert_eq!(view["partner_trade_no"], "T1");

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

    // Idempotent re-create: same bill, now final, no package_info.
    let again = client.create_transfer(&t1).await.expect("re-create");
    assert_eq!(again.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(again.state, TransferState::Success);
    assert_eq!(again.package_info, None);
    wait_field(&sim, "T1", "acks", json!(1)).await;
    let all = sim.transfers().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["create_requests"], 2);
    assert_eq!(all[0]["notifications"], 1);

    // Same number, other fields: refused for good, nothing created.
    let mut other = t1.clone();
    other.amount = 151;
    let err = client.create_transfer(&other).await.expect_err("conflict");
    assert!(err.is_refusal(), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(
        rejected_code(Err::<(), _>(err)),
        (400, "INVALID_REQUEST".into())
    );
    let mut other = t1.clone();
    other.remark = "another remark".into();
    assert_eq!(
        rejected_code(client.create_transfer(&other).await),
        (400, "INVALID_REQUEST".into())
    );
    // Another notify_url is the same bill.
    let mut moved = t1.clone();
    moved.notify_url = format!("{}2", rx.url);
    assert_eq!(
        client
            .create_transfer(&moved)
            .await
            .expect("same")
            .transfer_bill_no,
        created.transfer_bill_no
    );
    assert_eq!(sim.transfers().await.len(), 1);

    let queried = client
        .query_transfer("T1")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(queried.transfer_bill_no, created.transfer_bill_no);
    assert_eq!(queried.state, TransferState::Success);
    assert_eq!(queried.amount, Some(150));
    assert_eq!(queried.openid.as_deref(), Some("o-alice"));
    assert_eq!(queried.fail_reason, None);
    let by_no = client
        .query_transfer_by_bill_no(&created.transfer_bill_no)
        .await
        .expect("query")
        .expect("found");
    assert_eq!(by_no.out_bill_no, "T1");
    assert_eq!(by_no.state, TransferState::Success);
    assert!(client
        .query_transfer("Tunknown")
        .await
        .expect("query")
        .is_none());
    assert!(client
        .query_transfer_by_bill_no("1330000")
        .await
        .expect("query")
        .is_none());

    // Failures: a `fail-` openid, an amount above the limit.
    client
        .create_transfer(&transfer("T2", "fail-bob", 100, &rx.url))
        .await
        .expect("create");
    client
        .create_transfer(&transfer("T3", "o-carol", 20_001, &rx.url))
        .await
        .expect("create");
    rx.wait_for(3).await;
    let got = rx.verified(&client);
    let find = |no: &str| {
        got.iter()
            .find(|r| r.out_bill_no == no)
            .cloned()
            .unwrap_or_else(|| panic!("no notification for {no}"))
    };
    let t2 = find("T2");
    assert_eq!(t2.state, TransferState::Fail);
    assert_eq!(t2.fail_reason.as_deref(), Some("PAYEE_ACCOUNT_ABNORMAL"));
    let t3 = find("T3");
    assert_eq!(t3.state, TransferState::Fail);
    assert_eq!(t3.fail_reason.as_deref(), Some("TRANSFER_QUOTA_EXCEED"));
    let q = client
        .query_transfer("T2")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.fail_reason.as_deref(), Some("PAYEE_ACCOUNT_ABNORMAL"));

    // Business errors are definitive.
    let err = client
        .create_transfer(&transfer("T4", "mismatch-dave", 100, &rx.url))
        .await
        .expect_err("mismatch");
    assert!(err.is_refusal());
    assert_eq!(
        rejected_code(Err::<(), _>(err)),
        (400, "OPENID_MISMATCH".into())
    );
    sim.faults(json!({ "balance": 10 })).await;
    let err = client
        .create_transfer(&transfer("T5", "o-erin", 100, &rx.url))
        .await;
    assert_eq!(rejected_code(err), (403, "NOT_ENOUGH".into()));
    assert_eq!(sim.transfers().await.len(), 3);
    rx.stop().await;
}

#[actix_web::test]
async fn held_bills_wait_for_sim_confirm_or_are_refused() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    sim.faults(json!({ "confirmation": "hold" })).await;

    let t = transfer("H1", "o-alice", 100, &rx.url);
    let created = client.create_transfer(&t).await.expect("create");
    assert_eq!(created.state, TransferState::WaitUserConfirm);
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let q = client
        .query_transfer("H1")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.state, TransferState::WaitUserConfirm);
    // Asking again answers the same package_info.
    let again = client.create_transfer(&t).await.expect("again");
    assert_eq!(again.package_info, created.package_info);
    assert_eq!(sim.transfer("H1").await["confirmation"], "hold");
    assert_eq!(rx.count(), 0);

    let v = sim
        .post(
            "/sim/confirm",
            json!({ "out_bill_no": "H1", "action": "confirm" }),
        )
        .await;
    assert_eq!(v["state"], "TRANSFERING");
    rx.wait_for(1).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("H1", TransferState::Success)
    );
    let (status, _) = sim
        .control(
            "POST",
            "/sim/confirm",
            Some(json!({ "out_bill_no": "H1", "action": "confirm" })),
        )
        .await;
    assert_eq!(status, 409, "only a waiting bill can be confirmed");

    // The user declines: CANCELLED, notified.
    client
        .create_transfer(&transfer("H2", "o-bob", 100, &rx.url))
        .await
        .expect("create");
    let v = sim
        .post(
            "/sim/confirm",
            json!({ "partner_trade_no": "H2", "action": "refuse" }),
        )
        .await;
    assert_eq!(v["state"], "CANCELLED");
    rx.wait_for(2).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("H2", TransferState::Cancelled)
    );
    let (status, _) = sim
        .control(
            "POST",
            "/sim/confirm",
            Some(json!({ "out_bill_no": "H9", "action": "confirm" })),
        )
        .await;
    assert_eq!(status, 404);

    // Refuse and expire modes act by themselves.
    sim.faults(json!({ "confirmation": "refuse" })).await;
    client
        .create_transfer(&transfer("H3", "o-carol", 100, &rx.url))
        .await
        .expect("create");
    sim.faults(json!({ "confirmation": "expire", "expire_after_ms": 100 }))
        .await;
    client
        .create_transfer(&transfer("H4", "o-dave", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(4).await;
    let got = rx.verified(&client);
    let h3 = got.iter().find(|r| r.out_bill_no == "H3").expect("H3");
    assert_eq!(h3.state, TransferState::Cancelled);
    let h4 = got.iter().find(|r| r.out_bill_no == "H4").expect("H4");
    assert_eq!(h4.state, TransferState::Cancelled);
    assert_eq!(h4.fail_reason.as_deref(), Some("OVERDUE_CLOSE"));
    rx.stop().await;
}

#[actix_web::test]
async fn cancel_before_confirmation_is_cancelled_and_a_confirmation_during_canceling_pays() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    sim.faults(json!({ "confirmation": "hold" })).await;

    // Cancel → CANCELING → CANCELLED, notified.
    client
        .create_transfer(&transfer("C1", "o-alice", 100, &rx.url))
        .await
        .expect("create");
    let c = client.cancel_transfer("C1").await.expect("cancel");
    assert_eq!(c.state, TransferState::Canceling);
    assert!(!c.transfer_bill_no.is_empty());
    rx.wait_for(1).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("C1", TransferState::Cancelled)
    );
    assert_eq!(n.fail_reason.as_deref(), Some("MCH_CANCEL"));
    let q = client
        .query_transfer("C1")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.state, TransferState::Cancelled);
    // Idempotent.
    let c = client.cancel_transfer("C1").await.expect("again");
    assert_eq!(c.state, TransferState::Cancelled);
    assert_eq!(
        rejected_code(client.cancel_transfer("C9").await),
        (404, "NOT_FOUND".into())
    );

    // Held cancel: the user confirms during CANCELING and is paid.
    sim.faults(json!({ "hold_cancels": true })).await;
    client
        .create_transfer(&transfer("C2", "o-bob", 100, &rx.url))
        .await
        .expect("create");
    assert_eq!(
        client.cancel_transfer("C2").await.expect("cancel").state,
        TransferState::Canceling
    );
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let q = client
        .query_transfer("C2")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.state, TransferState::Canceling);
    assert_eq!(
        client.cancel_transfer("C2").await.expect("again").state,
        TransferState::Canceling
    );
    sim.post(
        "/sim/confirm",
        json!({ "out_bill_no": "C2", "action": "confirm" }),
    )
    .await;
    rx.wait_for(2).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("C2", TransferState::Success)
    );
    // Past the confirmation a cancel is refused for good.
    let err = client.cancel_transfer("C2").await.expect_err("paid");
    assert!(err.is_refusal(), "{err:?}");
    assert_eq!(
        rejected_code(Err::<(), _>(err)),
        (400, "INVALID_REQUEST".into())
    );

    // Held cancels are forced by /sim/complete, or go through when released.
    for no in ["C3", "C4"] {
        client
            .create_transfer(&transfer(no, "o-carol", 100, &rx.url))
            .await
            .expect("create");
        client.cancel_transfer(no).await.expect("cancel");
    }
    sim.post(
        "/sim/complete",
        json!({ "out_bill_no": "C3", "state": "CANCELLED" }),
    )
    .await;
    rx.wait_for(3).await;
    sim.faults(json!({ "hold_cancels": false })).await;
    rx.wait_for(4).await;
    let got = rx.verified(&client);
    let states: Vec<(&str, TransferState)> = got[2..]
        .iter()
        .map(|r| (r.out_bill_no.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("C3", TransferState::Cancelled),
            ("C4", TransferState::Cancelled)
        ]
    );
    let all = sim.transfers().await;
    let c1 = all.iter().find(|t| t["out_bill_no"] == "C1").expect("C1");
    assert_eq!(c1["cancel_requests"], 2);
    rx.stop().await;
}

#[actix_web::test]
async fn real_names_are_encrypted_and_required_from_2000_yuan() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    sim.faults(json!({ "amount_limit": 10_000_000 })).await;
    sim.post(
        "/sim/codes",
        json!({ "code": "code-n", "openid": "o-named", "real_name": "张三" }),
    )
    .await;

    // The client refuses to send 2,000 yuan without a name...
    let mut big = transfer("R1", "o-named", 200_000, &rx.url);
    let err = client.create_transfer(&big).await.expect_err("no name");
    assert!(err.is_refusal());
    assert_eq!(rejected_code(Err::<(), _>(err)), (0, "PARAM_ERROR".into()));
    // ... and so does the simulator.
    let mut raw = client
        .transfer_body(&transfer("R1", "o-named", 100, &rx.url))
        .expect("body");
    raw.transfer_amount = 200_000;
    let (status, v) = sim.raw_create(&client, &raw, None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );

    // With the name: accepted, encrypted, checked against the real name.
    big.user_name = Some("张三".into());
    let created = client.create_transfer(&big).await.expect("named");
    assert_eq!(created.state, TransferState::WaitUserConfirm);
    let body = client.transfer_body(&big).expect("body");
    let ciphertext = body.user_name.clone().expect("encrypted");
    assert_ne!(ciphertext, "张三");
    // Each encryption differs; the same name is the same bill.
    let again = client.create_transfer(&big).await.expect("again");
    assert_eq!(again.transfer_bill_no, created.transfer_bill_no);
    rx.wait_for(1).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("R1", TransferState::Success)
    );
    let view = sim.transfer("R1").await;
    assert_eq!(view["user_name"], "张三");
    assert_eq!(view["create_requests"], 2);
    // Another name under the same number is another request.
    let mut renamed = big.clone();
    renamed.user_name = Some("李四".into());
    assert_eq!(
        rejected_code(client.create_transfer(&renamed).await),
        (400, "INVALID_REQUEST".into())
    );

    // A name that is not the registered one fails the transfer.
    let mut wrong = transfer("R2", "o-named", 300_000, &rx.url);
    wrong.user_name = Some("李四".into());
    client.create_transfer(&wrong).await.expect("create");
    rx.wait_for(2).await;
    let n = rx.verified(&client).pop().expect("notification");
    assert_eq!(
        (n.out_bill_no.as_str(), n.state),
        ("R2", TransferState::Fail)
    );
    assert_eq!(n.fail_reason.as_deref(), Some("NAME_NOT_CORRECT"));

    // By hand: an encrypted name without Wechatpay-Serial, or one that does
    // not decrypt, is refused.
    let mut raw = client.transfer_body(&big).expect("body");
    raw.out_bill_no = "R3".into();
    let (status, v) = sim.raw_create(&client, &raw, None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );
    let (status, v) = sim.raw_create(&client, &raw, Some("OTHER-SERIAL")).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );
    raw.user_name = Some("bm90IGVuY3J5cHRlZA==".into());
    let (status, v) = sim
        .raw_create(&client, &raw, Some(paysim::PLATFORM_SERIAL))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );
    // Scene 1000 without its report entries.
    let mut raw = client
        .transfer_body(&transfer("R4", "o-named", 100, &rx.url))
        .expect("body");
    raw.transfer_scene_report_infos.pop();
    let (status, v) = sim.raw_create(&client, &raw, None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );
    // A public http notify_url.
    let mut raw = client
        .transfer_body(&transfer("R5", "o-named", 100, &rx.url))
        .expect("body");
    raw.notify_url = Some("http://merchant.example/notify".into());
    let (status, v) = sim.raw_create(&client, &raw, None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{v}"
    );
    assert_eq!(sim.transfers().await.len(), 2);
    rx.stop().await;
}

#[actix_web::test]
async fn lost_reply_then_retry_with_the_same_number_pays_once() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    sim.faults(json!({ "lost_reply_next": 1 })).await;

    let t = transfer("Tlost", "o-alice", 500, &rx.url);
    let err = client.create_transfer(&t).await.expect_err("lost reply");
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    // It was processed all the same.
    assert!(client
        .query_transfer("Tlost")
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
    assert_eq!(all[0]["out_bill_no"], "Tlost");
    assert_eq!(all[0]["partner_trade_no"], "Tlost");
    assert_eq!(all[0]["create_requests"], 2);
    assert_eq!(all[0]["state"], "SUCCESS");
    assert_eq!(all[0]["amount"], 500);
    rx.stop().await;
}

#[actix_web::test]
async fn server_errors_rate_limits_and_timeouts_are_transient() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();

    // SYSTEM_ERROR without processing.
    sim.faults(json!({ "fail_5xx_next": 1 })).await;
    let t = transfer("T5xx", "o-alice", 100, &rx.url);
    let err = client.create_transfer(&t).await.expect_err("5xx");
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient() && !err.is_refusal());
    assert!(client
        .query_transfer("T5xx")
        .await
        .expect("query")
        .is_none());
    client.create_transfer(&t).await.expect("retry");

    // FREQUENCY_LIMITED without processing.
    sim.faults(json!({ "frequency_limited_next": 2 })).await;
    let t = transfer("T429", "o-alice", 100, &rx.url);
    for _ in 0..2 {
        let err = client.create_transfer(&t).await.expect_err("429");
        assert!(err.is_transient() && !err.is_refusal(), "{err:?}");
    }
    assert!(client
        .query_transfer("T429")
        .await
        .expect("query")
        .is_none());
    client.create_transfer(&t).await.expect("retry");

    // NO_AUTH: a refusal.
    sim.faults(json!({ "no_auth_next": 1 })).await;
    let t = transfer("T403", "o-alice", 100, &rx.url);
    let err = client.create_transfer(&t).await.expect_err("403");
    assert!(err.is_refusal() && !err.is_transient(), "{err:?}");
    assert_eq!(rejected_code(Err::<(), _>(err)), (403, "NO_AUTH".into()));
    assert!(client
        .query_transfer("T403")
        .await
        .expect("query")
        .is_none());
    let faults = sim.control("GET", "/sim/faults", None).await.1;
    assert_eq!(faults["no_auth_next"], 0);
    assert_eq!(faults["frequency_limited_next"], 0);
    assert_eq!(faults["confirmation"], "auto");

    // No answer in time: processed, answered 30 s later.
    let impatient = sim.client_with(|c| c.timeout_ms = 400);
    sim.faults(json!({ "timeout_next": 1 })).await;
    let started = Instant::now();
    let err = impatient
        .create_transfer(&transfer("Tslow", "o-bob", 100, &rx.url))
        .await
        .expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3));
    let found = impatient
        .query_transfer("Tslow")
        .await
        .expect("query")
        .expect("processed");
    assert_eq!(found.amount, Some(100));

    // A slow provider within the deadline is fine; beyond it, a timeout.
    sim.faults(json!({ "delay_ms": 600 })).await;
    assert!(matches!(
        impatient.query_transfer("Tslow").await,
        Err(ClientError::Timeout)
    ));
    client
        .query_transfer("Tslow")
        .await
        .expect("patient query")
        .expect("found");
    sim.faults(json!({ "delay_ms": 0 })).await;

    // Nobody listening: unavailable.
    let gone = sim.client_with(|c| c.base_url = "http://127.0.0.1:9".into());
    let err = gone.query_transfer("Tslow").await.expect_err("refused");
    assert!(err.is_transient(), "{err:?}");
    rx.stop().await;
}

#[actix_web::test]
async fn forged_and_probe_signatures_and_wrong_merchant_keys_are_refused() {
    let sim = Sim::start();
    let client = sim.client();
    let rx = Receiver::start();
    client
        .create_transfer(&transfer("Tok", "o-alice", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(1).await;

    sim.faults(json!({ "forge_signatures": true })).await;
    let err = client.query_transfer("Tok").await.expect_err("forged");
    assert!(matches!(err, ClientError::BadSignature(_)), "{err:?}");
    assert!(err.is_transient());
    // A forged 404 is not believed either.
    assert!(matches!(
        client.query_transfer("Tnone").await,
        Err(ClientError::BadSignature(_))
    ));
    let err = client
        .create_transfer(&transfer("Tforged", "o-bob", 100, &rx.url))
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

    // The provider's probes: answers and notifications.
    sim.faults(json!({ "forge_signatures": false, "probe_signatures": true }))
        .await;
    let err = client.query_transfer("Tok").await.expect_err("probe");
    assert!(matches!(err, ClientError::SignatureProbe), "{err:?}");
    assert!(err.is_transient());
    let err = client
        .create_transfer(&transfer("Tprobe", "o-carol", 100, &rx.url))
        .await
        .expect_err("probe");
    assert!(matches!(err, ClientError::SignatureProbe), "{err:?}");
    rx.wait_for(3).await;
    let results = rx.results(&client);
    assert!(
        matches!(results[2], Err(ClientError::SignatureProbe)),
        "{:?}",
        results[2]
    );
    {
        let inbox = rx.inbox.received.lock().expect("inbox");
        assert!(inbox[2]
            .headers
            .signature
            .starts_with(qrgate_provider::sign::PROBE_SIGNATURE_PREFIX));
    }
    sim.faults(json!({ "probe_signatures": false })).await;
    assert_eq!(
        client
            .query_transfer("Tprobe")
            .await
            .expect("query")
            .expect("processed")
            .state,
        TransferState::Success
    );

    // Requests signed with a key the provider does not know.
    let keys = sim.dir.path().join("keys");
    let stranger =
        sim.client_with(|c| c.merchant_key_file = keys.join(paysim::PLATFORM_PRIVATE_FILE));
    assert_eq!(
        rejected_code(stranger.query_transfer("Tok").await),
        (401, "SIGN_ERROR".into())
    );
    let wrong_serial = sim.client_with(|c| c.merchant_serial = "OTHER".into());
    assert_eq!(
        rejected_code(wrong_serial.query_transfer("Tok").await),
        (401, "SIGN_ERROR".into())
    );
    // The client refuses answers from another platform serial.
    let other_platform = sim.client_with(|c| c.platform_serial = "OTHER".into());
    assert!(matches!(
        other_platform.query_transfer("Tok").await,
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
        ("B1", "o-a", 100),
        ("B2", "o-b", 200),
        ("B3", "o-c", 300),
        ("B4", "fail-d", 400),
    ] {
        client
            .create_transfer(&transfer(no, openid, amount, &rx.url))
            .await
            .expect("create");
    }
    for no in ["B1", "B2", "B3"] {
        wait_state(&sim, no, "SUCCESS").await;
    }
    wait_state(&sim, "B4", "FAIL").await;
    let today = chrono::Utc::now()
        .with_timezone(&paysim::state::BEIJING)
        .date_naive();

    let bill = parse_bill(&client.download_bill(today).await.expect("bill")).expect("parse");
    assert_eq!(bill.rows.len(), 4);
    let summary = bill.summary().expect("summary");
    assert_eq!((summary.success_count, summary.success_amount), (3, 600));

    sim.post(
        "/sim/bill_override",
        json!({ "out_bill_no": "B1", "amount": 101 }),
    )
    .await;
    sim.post(
        "/sim/bill_override",
        json!({ "partner_trade_no": "B2", "omit": true }),
    )
    .await;
    sim.post(
        "/sim/bill_override",
        json!({ "out_bill_no": "B3", "status": "FAIL" }),
    )
    .await;
    sim.post(
        "/sim/bill_extra",
        json!({ "out_bill_no": "BX", "openid": "o-x", "amount": 999 }),
    )
    .await;
    let (status, _) = sim
        .control(
            "POST",
            "/sim/bill_extra",
            Some(json!({ "partner_trade_no": "B1", "openid": "o-x", "amount": 1 })),
        )
        .await;
    assert_eq!(status, 409, "a known transfer cannot be an extra row");

    let text = client.download_bill(today).await.expect("bill");
    let bill = parse_bill(&text).expect("parse");
    let row = |no: &str| bill.rows.iter().find(|r| r.partner_trade_no == no);
    assert_eq!(row("B1").map(|r| r.amount), Some(101));
    assert!(row("B2").is_none());
    assert_eq!(row("B3").map(|r| r.status), Some(TransferState::Fail));
    let failed = row("B4").expect("B4");
    assert_eq!(failed.status, TransferState::Fail);
    assert_eq!(
        failed.fail_reason.as_deref(),
        Some("PAYEE_ACCOUNT_ABNORMAL")
    );
    let extra = row("BX").expect("BX");
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
        .create_transfer(&transfer("N1", "o-a", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(2).await;
    let got = rx.verified(&client);
    assert_eq!(got[0], got[1], "a redelivery carries the same result");
    let t = wait_field(&sim, "N1", "acks", json!(1)).await;
    assert_eq!(t["deliveries"], 2);

    // Duplicates.
    sim.faults(json!({ "duplicate_notifications": true })).await;
    client
        .create_transfer(&transfer("N2", "o-b", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(4).await;
    let got = rx.verified(&client);
    assert_eq!(got[2], got[3]);
    assert_eq!(got[2].out_bill_no, "N2");
    sim.faults(json!({ "duplicate_notifications": false }))
        .await;

    // Replays: the same bytes and headers twice.
    sim.faults(json!({ "replay_notifications": true })).await;
    client
        .create_transfer(&transfer("N2r", "o-b", 100, &rx.url))
        .await
        .expect("create");
    rx.wait_for(6).await;
    {
        let inbox = rx.inbox.received.lock().expect("inbox");
        assert_eq!(inbox[4].headers, inbox[5].headers);
        assert_eq!(inbox[4].body, inbox[5].body);
    }
    sim.faults(json!({ "replay_notifications": false })).await;

    // Held, then released newest first.
    sim.faults(json!({ "hold_notifications": true, "out_of_order": true }))
        .await;
    // One after the other: each is held when it succeeds, so the held
    // order is this one only if each succeeds before the next is made.
    for no in ["N3", "N4", "N5"] {
        client
            .create_transfer(&transfer(no, "o-c", 100, &rx.url))
            .await
            .expect("create");
        wait_state(&sim, no, "SUCCESS").await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.count(), 6, "held notifications must not be sent");
    let v = sim.post("/sim/release", json!({})).await;
    assert_eq!(v["released"], 3);
    rx.wait_for(9).await;
    let order: Vec<String> = rx.verified(&client)[6..]
        .iter()
        .map(|r| r.out_bill_no.clone())
        .collect();
    assert_eq!(order, ["N5", "N4", "N3"]);

    // Out of order by itself: a batch window collects, then newest first.
    sim.faults(json!({ "hold_notifications": false, "batch_window_ms": 600 }))
        .await;
    for no in ["N6", "N7"] {
        client
            .create_transfer(&transfer(no, "o-d", 100, &rx.url))
            .await
            .expect("create");
    }
    rx.wait_for(11).await;
    let order: Vec<String> = rx.verified(&client)[9..]
        .iter()
        .map(|r| r.out_bill_no.clone())
        .collect();
    assert_eq!(order, ["N7", "N6"]);
    sim.faults(json!({ "out_of_order": false })).await;

    // Forced completion while automatic completion is off: the user
    // confirms, the bill stays TRANSFERING.
    sim.faults(json!({ "auto_complete": false })).await;
    client
        .create_transfer(&transfer("N8", "o-e", 100, &rx.url))
        .await
        .expect("create");
    wait_state(&sim, "N8", "TRANSFERING").await;
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let q = client
        .query_transfer("N8")
        .await
        .expect("query")
        .expect("found");
    assert_eq!(q.state, TransferState::Transfering);
    let v = sim
        .post(
            "/sim/complete",
            json!({ "partner_trade_no": "N8", "state": "FAIL", "fail_reason": "ACCOUNT_FROZEN" }),
        )
        .await;
    assert_eq!(v["state"], "FAIL");
    rx.wait_for(12).await;
    let last = rx.verified(&client).pop().expect("last");
    assert_eq!(last.out_bill_no, "N8");
    assert_eq!(last.state, TransferState::Fail);
    assert_eq!(last.fail_reason.as_deref(), Some("ACCOUNT_FROZEN"));
    let (status, _) = sim
        .control(
            "POST",
            "/sim/complete",
            Some(json!({ "out_bill_no": "N8", "state": "SUCCESS" })),
        )
        .await;
    assert_eq!(status, 409, "a final state never changes");
    assert!(!sim.log().is_empty());
    rx.stop().await;
}
