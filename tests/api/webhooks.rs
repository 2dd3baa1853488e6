//! Webhooks to the operator's backend, against a real receiver in the
//! test: signed as Standard Webhooks (checked with the reference library,
//! and with its Python one when `QRGATE_WEBHOOK_VERIFIER` names a Python
//! that has it), at least once with a stable id, in order per entity,
//! retried while the receiver is down, disabled by 410 until enabled, and
//! sent again after a kill -9.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::helpers::*;

pub(super) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone, Debug)]
pub(super) struct Received {
    pub id: String,
    timestamp: String,
    signature: String,
    pub body: String,
}

/// A receiver answering `status` (0: never answers) to every POST, keeping
/// what it got.
pub(super) struct Receiver {
    pub url: String,
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<Received>>>,
    _server: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        Self::start_with(status, None).await
    }

    /// Over TLS when `tls` is given (its URL then names `localhost`).
    async fn start_with(status: u16, tls: Option<rustls::ServerConfig>) -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let answer = Arc::new(AtomicU16::new(status));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (a, g) = (answer.clone(), got.clone());
        let server = HttpServer::new(move || {
            let (a, g) = (a.clone(), g.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (a, g) = (a.clone(), g.clone());
                async move {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    g.lock().expect("lock").push(Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body: String::from_utf8_lossy(&body).to_string(),
                    });
                    match a.load(Ordering::SeqCst) {
                        0 => {
                            actix_web::rt::time::sleep(Duration::from_secs(120)).await;
                            HttpResponse::Ok().finish()
                        }
                        s => HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(s).expect("status"),
                        )
                        .body("ok"),
                    }
                }
            }))
        })
        .workers(1);
        let secure = tls.is_some();
        let server = match tls {
            Some(t) => server.bind_rustls_0_23("127.0.0.1:0", t),
            None => server.bind("127.0.0.1:0"),
        }
        .expect("bind");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: if secure {
                format!("https://localhost:{}/hooks", addr.port())
            } else {
                format!("http://{addr}/hooks")
            },
            status: answer,
            got,
            _server: handle,
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Wait until `pred` holds of what it received.
    pub async fn until(
        &self,
        what: &str,
        secs: u64,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        for _ in 0..secs * 10 {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: the receiver got {:#?}", self.got());
    }
}

pub(super) fn config(endpoints: &[(&str, &str, &str)]) -> String {
    let mut c = String::new();
    for (id, url, events) in endpoints {
        c.push_str(&format!(
            "[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = {events}\n"
        ));
    }
    c
}

/// The delivery verifies with the Standard Webhooks reference library.
fn verify(r: &Received) -> Value {
    let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
    let mut h = http::HeaderMap::new();
    for (n, v) in [
        ("webhook-id", &r.id),
        ("webhook-timestamp", &r.timestamp),
        ("webhook-signature", &r.signature),
    ] {
        h.insert(n, v.parse().expect("header"));
    }
    wh.verify(r.body.as_bytes(), &h)
        .unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let bad =
        standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("secret");
    assert!(
        bad.verify(r.body.as_bytes(), &h).is_err(),
        "another secret refuses it"
    );
    serde_json::from_str(&r.body).expect("json body")
}

/// And with the Python one, when CI provides it.
fn verify_in_python(r: &Received) {
    let Ok(python) = std::env::var("QRGATE_WEBHOOK_VERIFIER") else {
        println!("SKIPPED: the Python Standard Webhooks verifier (set QRGATE_WEBHOOK_VERIFIER to a python with `standardwebhooks`)");
        return;
    };
    let script = "import sys\nfrom standardwebhooks.webhooks import Webhook\nWebhook(sys.argv[1]).verify(sys.argv[5], {'webhook-id': sys.argv[2], 'webhook-timestamp': sys.argv[3], 'webhook-signature': sys.argv[4]})\nprint('verified')\n";
    let out = std::process::Command::new(python)
        .args([
            "-c",
            script,
            SECRET,
            &r.id,
            &r.timestamp,
            &r.signature,
            &r.body,
        ])
        .output()
        .expect("run the python verifier");
    assert!(
        out.status.success(),
        "python refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The event seqs of an endpoint's deliveries in `state`, as listed.
async fn listed(app: &TestApp, endpoint: &str, state: &str) -> Vec<u64> {
    let (s, v) = app
        .get(
            &format!("/v1/admin/webhooks/{endpoint}/deliveries?state={state}&limit=1000"),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|x| {
            s_(&x["webhook_id"])
                .trim_start_matches("msg_")
                .parse()
                .expect("seq")
        })
        .collect()
}

fn seq(r: &Received) -> u64 {
    r.id.strip_prefix("msg_")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("webhook-id {}", r.id))
}

#[actix_web::test]
async fn events_reach_the_operators_backend_signed_in_order_with_stable_ids() {
    let rx = Receiver::start(200).await;
    let app = TestApp::spawn_with(&config(&[
        ("crm", &rx.url, "[\"*\"]"),
        (
            "payouts",
            &rx.url.replace("/hooks", "/payouts"),
            "[\"payout_updated\"]",
        ),
    ]))
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Hooked"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let (id, t) = app.user(&format!("m{i}")).await;
        assert_eq!(app.join(&t, &tok).await.0, 200);
        ids.push(id);
    }
    // The owner's member_joined at creation, then four.
    let got = rx
        .until("five member_joined", 20, |g| {
            g.iter()
                .filter(|r| r.body.contains("\"member_joined\""))
                .count()
                >= 5
        })
        .await;
    let joins: Vec<&Received> = got
        .iter()
        .filter(|r| r.body.contains("\"member_joined\""))
        .collect();
    for r in &joins {
        let v = verify(r);
        assert_eq!(v["type"], "member_joined");
        assert_eq!(v["data"]["group_id"], g.as_str());
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
    }
    verify_in_python(joins[0]);
    // One group's events in the order they happened, each once.
    let seqs: Vec<u64> = joins.iter().map(|r| seq(r)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let members: Vec<String> = joins[1..]
        .iter()
        .map(|r| s_(&verify(r)["data"]["user_id"]))
        .collect();
    assert_eq!(members, ids);
    // The other endpoint takes payouts only: it got nothing.
    assert!(got.iter().all(|r| !r.body.contains("payout_updated")));

    // The operator's view: no secret, counts, and the deliveries.
    let (s, v) = app.get("/v1/admin/webhooks", Some(ADMIN)).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains("whsec_"), "{v}");
    let crm = v["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["id"] == "crm")
        .cloned()
        .expect("crm listed");
    assert_eq!(
        (crm["enabled"].clone(), crm["url"].clone()),
        (json!(true), json!(rx.url))
    );
    let (s, v) = app
        .get(
            "/v1/admin/webhooks/crm/deliveries?state=delivered",
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let listed = v["deliveries"].as_array().expect("deliveries");
    assert!(listed.len() >= 5, "{v}");
    assert!(
        listed
            .iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1),
        "{v}"
    );
    let (s, v) = app
        .get("/v1/admin/webhooks/payouts/deliveries", Some(ADMIN))
        .await;
    assert_eq!((s, v["deliveries"].clone()), (200, json!([])));
    assert_eq!(
        app.get("/v1/admin/webhooks/crm/deliveries?state=lost", Some(ADMIN))
            .await
            .0,
        400
    );
    assert_eq!(
        code(
            &app.get("/v1/admin/webhooks/nope/deliveries", Some(ADMIN))
                .await
                .1
        ),
        "webhook_not_found"
    );

    // A resend goes out again with the same webhook-id.
    let first = &listed[0];
    let before = rx.got().len();
    let (s, v) = app
        .post(
            &format!("/v1/admin/webhooks/deliveries/{}/resend", s_(&first["id"])),
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let again = rx
        .until("the resent delivery", 10, |g| g.len() > before)
        .await;
    assert_eq!(again[before].id, s_(&first["webhook_id"]));
    let (s, v) = app
        .post(
            "/v1/admin/webhooks/deliveries/crm.999999/resend",
            Some(ADMIN),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "delivery_not_found"));

    // Only the operator (or a key with webhooks:admin).
    for (token, status) in [(Some(owner.as_str()), 403), (None, 401)] {
        assert_eq!(app.get("/v1/admin/webhooks", token).await.0, status);
        assert_eq!(
            app.get("/v1/admin/webhooks/crm/deliveries", token).await.0,
            status
        );
        assert_eq!(
            app.post("/v1/admin/webhooks/crm/enable", token, json!({}))
                .await
                .0,
            status
        );
        let path = format!("/v1/admin/webhooks/deliveries/{}/resend", s_(&first["id"]));
        assert_eq!(app.post(&path, token, json!({})).await.0, status);
    }
    assert!(
        !app.log().contains("MfKQ9r8GKYqr"),
        "the secret is never logged"
    );
}

#[actix_web::test]
async fn a_receiver_that_is_down_gets_everything_later_and_410_disables_it_until_enabled() {
    let rx = Receiver::start(503).await;
    let app = TestApp::spawn_with(&config(&[("crm", &rx.url, "[\"*\"]")])).await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Down"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..3 {
        let (_, t) = app.user(&format!("d{i}")).await;
        assert_eq!(
            app.join(&t, &tok).await.0,
            200,
            "requests never wait for webhooks"
        );
    }
    // Refused: the first of the group's deliveries is tried, the others
    // of the same group wait behind it.
    rx.until("a refused attempt", 10, |g| !g.is_empty()).await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let tried: std::collections::HashSet<String> = rx.got().into_iter().map(|r| r.id).collect();
    assert_eq!(tried.len(), 1, "one entity, one at a time: {tried:?}");
    let (_, v) = app
        .get(
            "/v1/admin/webhooks/crm/deliveries?state=pending",
            Some(ADMIN),
        )
        .await;
    let pending = v["deliveries"].as_array().expect("deliveries").clone();
    assert_eq!(pending.len(), 4, "{v}");
    assert_eq!(pending[0]["last_status"], 503, "{v}");
    assert!(
        app.metric("qrgate_webhook_attempts_total{endpoint=\"crm\",result=\"retry\"}")
            .await
            >= 1.0
    );

    // Back up: everything arrives, in order, after the backoff.
    rx.set(200);
    let got = rx
        .until("the four after the retry", 30, |g| {
            g.iter()
                .map(|r| r.id.clone())
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 4
        })
        .await;
    let mut order: Vec<u64> = Vec::new();
    for r in &got {
        let s = seq(r);
        if order.last() != Some(&s) {
            order.push(s);
        }
    }
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");

    // 410: disabled, its deliveries wait; enabled, they go out.
    rx.set(410);
    let (_, t) = app.user("late").await;
    assert_eq!(app.join(&t, &tok).await.0, 200);
    let n = got.len();
    rx.until("the 410", 10, |g| g.len() > n).await;
    let mut v = json!(null);
    for _ in 0..50 {
        v = app.get("/v1/admin/webhooks", Some(ADMIN)).await.1;
        if v["endpoints"][0]["enabled"] == false {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v["endpoints"][0]["enabled"], false, "{v}");
    assert!(
        s_(&v["endpoints"][0]["disabled_reason"]).contains("410"),
        "{v}"
    );
    rx.set(200);
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let quiet = rx.got().len();
    assert_eq!(quiet, n + 1, "a disabled endpoint is not called");
    assert_eq!(
        app.post("/v1/admin/webhooks/crm/enable", Some(ADMIN), json!({}))
            .await
            .0,
        204
    );
    let after = rx.until("the held delivery", 10, |g| g.len() > quiet).await;
    let r = after.last().expect("one");
    assert_eq!(verify(r)["type"], "member_joined");
    let (_, v) = app.get("/v1/admin/webhooks", Some(ADMIN)).await;
    assert_eq!(v["endpoints"][0]["enabled"], true, "{v}");
}

/// A kill -9 right after a change is acknowledged (before the consumer
/// queued its delivery), then another while the receiver has the request
/// and has not answered: it is delivered, with the same `webhook-id`.
#[actix_web::test]
async fn a_kill_9_before_the_delivery_or_before_the_answer_sends_it_again_with_the_same_id() {
    // The receiver takes the request and never answers.
    let rx = Receiver::start(0).await;
    let mut app = TestApp::spawn_with(&config(&[("crm", &rx.url, "[\"group_banned\"]")])).await;
    ban_a_group(&app).await;
    app.kill9();
    assert!(
        rx.got().is_empty(),
        "killed before the consumer's round: {:?}",
        rx.got()
    );
    app.restart().await;
    let first = rx.until("the first attempt", 10, |g| !g.is_empty()).await;
    app.kill9();
    rx.set(200);
    app.restart().await;
    let got = rx
        .until("the attempt after the restart", 20, |g| g.len() >= 2)
        .await;
    assert_eq!(got[1].id, first[0].id, "the same webhook-id");
    assert_eq!(got[1].body, first[0].body);
    let v = verify(&got[1]);
    assert_eq!(
        (v["type"].clone(), v["data"]["reason"].clone()),
        (json!("group_banned"), json!("spam"))
    );
}

#[actix_web::test]
async fn the_queue_is_bounded_on_disk_and_drops_the_oldest_of_the_failing_endpoint() {
    let rx = Receiver::start(503).await;
    let app = TestApp::spawn_with(&format!(
        "{}[webhook_delivery]\nmax_queue_bytes = 6000\n",
        config(&[("crm", &rx.url, "[\"*\"]")])
    ))
    .await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Flood"})).await;
    let (_, tok, _) = app.invite(&owner, &g, json!({})).await;
    for i in 0..24 {
        let (_, t) = app.user(&format!("f{i}")).await;
        assert_eq!(
            app.join(&t, &tok).await.0,
            200,
            "requests never wait for webhooks"
        );
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = app
            .metric("qrgate_webhooks_dropped_total{endpoint=\"crm\"}")
            .await;
        if dropped > 0.0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped > 0.0, "deliveries past the bound are dropped");
    let (_, v) = app.get("/v1/admin/webhooks", Some(ADMIN)).await;
    let queued_bytes = v["endpoints"][0]["queued_bytes"].as_u64().expect("bytes");
    assert!(queued_bytes <= 6000, "{v}");
    let gone = listed(&app, "crm", "dropped").await;
    assert_eq!(gone.len() as f64, dropped, "{gone:?}");
    let left = listed(&app, "crm", "pending").await;
    assert_eq!(
        left.len() + gone.len(),
        25,
        "every event is pending or dropped"
    );
    assert!(
        gone.iter().max() < left.iter().min(),
        "the oldest were dropped: {gone:?} {left:?}"
    );
    assert!(app.log().contains("webhook queue is full"));
    // Up again: what was kept arrives, what was dropped does not.
    let before = rx.got().len();
    rx.set(200);
    let got = rx
        .until("the kept deliveries", 30, |g| {
            let ids: std::collections::HashSet<u64> = g.iter().map(seq).collect();
            left.iter().all(|s| ids.contains(s))
        })
        .await;
    let late: Vec<u64> = got[before..].iter().map(seq).collect();
    assert!(late.iter().all(|s| !gone.contains(s)), "{late:?} {gone:?}");
}

/// The operator's events go out the same way: a large transaction, a
/// payout stuck at the provider, a forged provider notification.
#[actix_web::test]
async fn the_operators_events_go_out_too() {
    let sim = super::payouts::Sim::start();
    let rx = Receiver::start(200).await;
    let app = TestApp::spawn_with(&format!(
        "{}{}",
        sim.config("large_transaction_fen = 3000\nstuck_after_seconds = 1\n"),
        config(&[(
            "ops",
            &rx.url,
            "[\"large_transaction\", \"payout_stuck\", \"notification_forged\"]"
        )])
    ))
    .await;
    let (uid, tok) = app.payee(&sim, "hal", 5000, "o-hal").await;
    let (s, v) = sim
        .post("/sim/faults", json!({"auto_complete": false}))
        .await;
    assert!(s < 300, "{v}");
    let (s, v) = app.payout(&tok, "big", 3000).await;
    assert_eq!(s, 202, "{v}");
    let payout = s_(&v["id"]);
    let (s, _) = app
        .call_with(
            "POST",
            "/v1/provider/notify",
            None,
            Some(json!({"id": "forged", "event_type": "MCHTRANSFER.BILL.FINISHED"})),
            &[
                (
                    "Wechatpay-Timestamp",
                    chrono::Utc::now().timestamp().to_string(),
                ),
                ("Wechatpay-Nonce", "forged".into()),
                ("Wechatpay-Signature", "Zm9yZ2Vk".into()),
                ("Wechatpay-Serial", "SIM-PLATFORM-SERIAL".into()),
            ],
        )
        .await;
    assert_eq!(s, 401);
    let got = rx
        .until("the three operator events", 20, |g| {
            ["large_transaction", "payout_stuck", "notification_forged"]
                .iter()
                .all(|t| {
                    g.iter()
                        .any(|r| r.body.contains(&format!("\"type\":\"{t}\"")))
                })
        })
        .await;
    let of = |t: &str| {
        let r = got
            .iter()
            .find(|r| r.body.contains(&format!("\"type\":\"{t}\"")))
            .expect("received");
        verify(r)["data"].clone()
    };
    let large = of("large_transaction");
    assert_eq!(
        (
            large["user_id"].clone(),
            large["kind"].clone(),
            large["amount"].clone()
        ),
        (json!(uid), json!("single_transfer"), json!(3000))
    );
    let stuck = of("payout_stuck");
    assert_eq!(
        (stuck["payout_id"].clone(), stuck["amount"].clone()),
        (json!(payout), json!(3000))
    );
    assert!(!s_(&of("notification_forged")["reason"]).is_empty());
    // Each stuck payout is told once.
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let told = rx
        .got()
        .iter()
        .filter(|r| r.body.contains("\"payout_stuck\""))
        .count();
    assert_eq!(told, 1);
}

/// A test CA (PEM) and a server config whose certificate it signed for
/// `localhost` and 127.0.0.1.
fn test_pki() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "qrgate test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("cert");
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca_cert.pem(), config)
}

/// An operator bans a new group (one `group_banned` event).
async fn ban_a_group(app: &TestApp) {
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Banned"})).await;
    let (s, v) = app.ban_group(&g, "spam").await;
    assert_eq!(s, 200, "{v}");
}

/// An `https` receiver is reached over TLS when its CA is trusted
/// (`webhook_delivery.ca_file`), and not otherwise.
#[actix_web::test]
async fn an_https_receiver_is_reached_over_tls_only_with_a_trusted_certificate() {
    let (ca, tls) = test_pki();
    let rx = Receiver::start_with(200, Some(tls)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("write ca");
    let hooks = config(&[("crm", &rx.url, "[\"group_banned\"]")]);

    let trusting = TestApp::spawn_with(&format!(
        "{hooks}[webhook_delivery]\nca_file = \"{}\"\n",
        ca_file.display()
    ))
    .await;
    ban_a_group(&trusting).await;
    let got = rx
        .until("the delivery over TLS", 10, |g| !g.is_empty())
        .await;
    assert_eq!(verify(&got[0])["type"], "group_banned");
    drop(trusting);

    // The system's roots alone do not know the test CA. (A machine with
    // no roots at all refuses to start with an https endpoint.)
    if qrgate_provider::tls::client_config(None).is_err() {
        println!("SKIPPED: the part without the CA (this machine has no root certificates)");
        return;
    }
    let strict = TestApp::spawn_with(&hooks).await;
    let before = rx.got().len();
    ban_a_group(&strict).await;
    let mut last_error = String::new();
    for _ in 0..50 {
        let (_, v) = strict
            .get(
                "/v1/admin/webhooks/crm/deliveries?state=pending",
                Some(ADMIN),
            )
            .await;
        if let Some(e) = v["deliveries"][0]["last_error"].as_str() {
            last_error = e.to_string();
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!last_error.is_empty(), "the attempt failed without the CA");
    assert_eq!(rx.got().len(), before, "no request reached the receiver");
}
