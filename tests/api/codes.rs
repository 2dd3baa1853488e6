//! Scan codes on the real server: create, resolve as JSON and as a
//! browser's redirect to the code's page (and no other host), the QR
//! image, forged codes, the pool across `kill -9`, expiry, revocation,
//! quotas, scan counters.

use super::helpers::*;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// A fixed base URL (pooled images survive restarts on a new port), a
/// small pool that refills only after a 1 s lull, short lifetimes allowed,
/// three codes per user per day.
const CODES: &str = "public_base_url = \"http://qr.test\"\n[codes]\npool_size = 20\npool_low_water = 5\nrefill_idle_ms = 1000\nmin_ttl_seconds = 1\nuser_quota_per_day = 3\n";

struct Answer {
    status: u16,
    content_type: String,
    set_cookie: Option<String>,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A GET of `path` with an `Accept` header and maybe a `Cookie`.
async fn fetch(app: &TestApp, path: &str, accept: &str, cookie: Option<&str>) -> Answer {
    let mut req = app
        .client
        .get(format!("{}{}", app.base, path))
        .insert_header(("Accept", accept));
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", c));
    }
    let mut r = req.send().await.expect("request");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, set_cookie, location) = (
        header("content-type").unwrap_or_default(),
        header("set-cookie"),
        header("location"),
    );
    let body = r.body().limit(1 << 20).await.expect("body");
    Answer {
        status: r.status().as_u16(),
        content_type,
        set_cookie,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

const JSON: &str = "application/json";
const HTML: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";

impl TestApp {
    async fn create_code(&self, token: &str, body: Value) -> (u16, Value) {
        self.post("/v1/codes", Some(token), body).await
    }

    /// A new code (its JSON answer).
    async fn code(&self, token: &str, body: Value) -> Value {
        let (s, v) = self.create_code(token, body).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn wait_metric(&self, name: &str, want: f64) {
        for _ in 0..300 {
            if self.metric(name).await == want {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} never reached {want}: {}", self.metric(name).await);
    }

    /// Storage reads made to look up codes.
    async fn code_reads(&self) -> f64 {
        self.metric("qrgate_code_lookups_total{result=\"hit\"}")
            .await
            + self
                .metric("qrgate_code_lookups_total{result=\"miss\"}")
                .await
    }
}

fn decode_qr(png_b64: &str) -> String {
    let png = base64::engine::general_purpose::STANDARD
        .decode(png_b64)
        .expect("base64");
    let img = image::load_from_memory(&png).expect("png").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code");
    grids[0].decode().expect("decodes").1
}

#[actix_web::test]
async fn round_trip_as_json_and_html_with_a_decodable_qr_code() {
    let app = TestApp::spawn_with(CODES).await;
    let params = json!({"campaign": "spring", "x": "<script>alert('hi')</script>", "n": 3});
    let (s, v) = app
        .create_code(
            ADMIN,
            json!({"page": "/landing", "params": params, "ttl_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let code = s_(&v["code"]);
    assert_eq!(code.len(), 24);
    assert!(code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(v["url"], format!("http://qr.test/s/{code}"));
    assert_eq!(v["page"], "/landing");
    assert_eq!(v["params"], params);
    assert!(v["expires_at"].is_string());
    assert_eq!(decode_qr(v["qr_png"].as_str().unwrap()), s_(&v["url"]));

    // An API client gets the binding.
    let a = fetch(&app, &format!("/s/{code}"), JSON, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = a.json();
    assert_eq!(r["code"], code.as_str());
    assert_eq!(r["page"], "/landing");
    assert_eq!(r["params"], params);
    assert!(r["created_at"].is_string() && r["expires_at"].is_string());
    assert_eq!(
        (r["scans"].as_u64(), r["unique_visitors"].as_u64()),
        (Some(1), Some(1))
    );

    // A browser is sent on to the page, the parameters as its query
    // string; the built-in landing page shows them, escaped.
    let a = fetch(&app, &format!("/s/{code}"), HTML, None).await;
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(
        a.location.as_deref(),
        Some("http://qr.test/landing?campaign=spring&n=3&x=%3Cscript%3Ealert%28%27hi%27%29%3C%2Fscript%3E")
    );
    let cookie = a.set_cookie.expect("a visitor cookie");
    assert!(
        cookie.starts_with("qrv=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let to = a.location.unwrap_or_default();
    let landing = fetch(&app, to.trim_start_matches("http://qr.test"), HTML, None).await;
    assert_eq!(landing.status, 200);
    assert_eq!(landing.content_type, "text/html; charset=utf-8");
    assert!(landing.body.contains("spring"));
    assert!(landing
        .body
        .contains("&#60;script&#62;alert(&#39;hi&#39;)&#60;/script&#62;"));
    assert!(!landing.body.contains("<script"), "{}", landing.body);
    assert!(landing.body.contains("/landing"));

    // Its creator (here the operator) sees it with its counters.
    let (s, v) = app.get(&format!("/v1/codes/{code}"), Some(ADMIN)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "live");
    assert_eq!(v["scans"], 2);
    assert!(v.get("creator").is_none());

    // Anonymous callers cannot create codes.
    let (s, v) = app.create_code("", json!({"page": "/landing"})).await;
    assert_eq!((s, code_of(&v)), (401, "unauthorized".to_string()));

    // Bad input.
    for (body, why) in [
        (json!({"page": "/nope", "params": {}}), "page"),
        (json!({"page": "landing", "params": {}}), "page"),
        (json!({"page": "/landing", "params": [1, 2]}), "object"),
        (json!({"page": "/landing", "params": "a=b"}), "object"),
        (json!({"page": "/landing", "params": null}), "object"),
        (
            json!({"page": "/landing", "params": {"k": "x".repeat(2000)}}),
            "at most 1024",
        ),
        (json!({"page": "/landing", "ttl_seconds": 0}), "ttl_seconds"),
        (
            json!({"page": "/landing", "ttl_seconds": 999_999_999}),
            "ttl_seconds",
        ),
    ] {
        let (s, v) = app.create_code(ADMIN, body.clone()).await;
        assert_eq!(
            (s, code_of(&v)),
            (400, "validation_failed".into()),
            "{body}: {v}"
        );
        assert!(v["detail"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    for body in [
        json!({"params": {}}),
        json!({"page": "/landing", "extra": 1}),
    ] {
        let (s, v) = app.create_code(ADMIN, body.clone()).await;
        assert_eq!(
            (s, code_of(&v)),
            (400, "invalid_json".into()),
            "{body}: {v}"
        );
    }
    // No params: an empty object; no ttl: no expiry.
    let v = app.code(ADMIN, json!({"page": "/promo"})).await;
    assert_eq!(v["params"], json!({}));
    assert!(v.get("expires_at").is_none());
}

fn code_of(v: &Value) -> String {
    code(v).to_string()
}

#[actix_web::test]
async fn forged_and_malformed_codes_are_refused_without_a_storage_read() {
    let app = TestApp::spawn_with(CODES).await;
    let real = s_(&app.code(ADMIN, json!({"page": "/landing"})).await["code"]);
    // Flip one character of a real code.
    let mut b = real.clone().into_bytes();
    b[5] = if b[5] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(b).unwrap();
    let reads = app.code_reads().await;
    let refused = app
        .metric("qrgate_code_lookups_total{result=\"forged\"}")
        .await;

    let a = fetch(&app, &format!("/s/{forged}"), JSON, None).await;
    assert_eq!(
        (a.status, code_of(&a.json())),
        (404, "code_not_found".into())
    );
    assert_eq!(a.content_type, "application/problem+json");
    let a = fetch(&app, &format!("/s/{forged}"), HTML, None).await;
    assert_eq!(a.status, 404);
    assert!(a.content_type.starts_with("text/html"));
    assert!(
        a.set_cookie.is_none(),
        "no cookie for a code that does not resolve"
    );
    let long = "A".repeat(200);
    for garbage in [
        "abc",
        &real[..23],
        &format!("{real}A"),
        long.as_str(),
        "%F0%9F%98%80",
    ] {
        let a = fetch(&app, &format!("/s/{garbage}"), JSON, None).await;
        assert_eq!(
            (a.status, code_of(&a.json())),
            (404, "code_not_found".into()),
            "{garbage}"
        );
    }
    for (method, path) in [("GET", &forged), ("DELETE", &forged)] {
        let (s, v) = app
            .call(method, &format!("/v1/codes/{path}"), Some(ADMIN), None)
            .await;
        assert_eq!((s, code(&v)), (404, "code_not_found"), "{method}");
    }
    assert_eq!(
        app.code_reads().await,
        reads,
        "no storage read for any of them"
    );
    assert_eq!(
        app.metric("qrgate_code_lookups_total{result=\"forged\"}")
            .await,
        refused + 9.0
    );
    // The real one still resolves.
    assert_eq!(
        fetch(&app, &format!("/s/{real}"), JSON, None).await.status,
        200
    );
}

#[actix_web::test]
async fn a_burst_is_served_from_the_durable_pool_which_survives_kill_9() {
    let mut app = TestApp::spawn_with(CODES).await;
    app.wait_metric("qrgate_code_pool_size", 20.0).await;
    assert!(app.metric("qrgate_code_pool_refills_total").await >= 1.0);

    // 25 at once: 20 from the pool, the rest drawn inline (the refill
    // waits for a lull).
    let burst =
        (0..25).map(|i| app.create_code(ADMIN, json!({"page": "/landing", "params": {"i": i}})));
    let answers = futures_util::future::join_all(burst).await;
    let mut codes = HashSet::new();
    for (s, v) in &answers {
        assert_eq!(*s, 201, "{v}");
        assert!(codes.insert(s_(&v["code"])), "a code handed out twice");
        assert_eq!(decode_qr(v["qr_png"].as_str().unwrap()), s_(&v["url"]));
    }
    let hits = app
        .metric("qrgate_code_pool_takes_total{result=\"hit\"}")
        .await;
    let misses = app
        .metric("qrgate_code_pool_takes_total{result=\"miss\"}")
        .await;
    assert_eq!(hits + misses, 25.0);
    assert!(
        hits >= 20.0 && misses >= 1.0,
        "hits {hits}, misses {misses}"
    );

    // Refilled once takes stop.
    app.wait_metric("qrgate_code_pool_size", 20.0).await;
    assert!(app.metric("qrgate_code_pool_generated_total").await >= 40.0);

    let before = answers[0].1["code"].as_str().unwrap().to_string();
    app.restart().await;
    // The pool is still there: nothing had to be drawn.
    assert_eq!(app.metric("qrgate_code_pool_size").await, 20.0);
    assert_eq!(app.metric("qrgate_code_pool_generated_total").await, 0.0);
    let a = fetch(&app, &format!("/s/{before}"), JSON, None).await;
    assert_eq!(a.status, 200, "a code created before the kill resolves");
    for _ in 0..5 {
        let v = app.code(ADMIN, json!({"page": "/promo"})).await;
        assert!(codes.insert(s_(&v["code"])), "a code handed out twice");
        assert_eq!(decode_qr(v["qr_png"].as_str().unwrap()), s_(&v["url"]));
    }
    assert_eq!(
        app.metric("qrgate_code_pool_takes_total{result=\"hit\"}")
            .await,
        5.0
    );
}

#[actix_web::test]
async fn pooled_images_drawn_for_another_base_url_are_dropped() {
    // No fixed public_base_url: the base changes with the port at restart.
    let config = "[codes]\npool_size = 10\npool_low_water = 5\n";
    let mut app = TestApp::spawn_with(config).await;
    app.wait_metric("qrgate_code_pool_size", 10.0).await;
    app.restart().await;
    app.wait_metric("qrgate_code_pool_size", 10.0).await;
    assert!(app.metric("qrgate_code_pool_generated_total").await >= 10.0);
    let v = app.code(ADMIN, json!({"page": "/landing"})).await;
    assert_eq!(
        app.metric("qrgate_code_pool_takes_total{result=\"hit\"}")
            .await,
        1.0
    );
    assert_eq!(s_(&v["url"]), format!("{}/s/{}", app.base, s_(&v["code"])));
    assert_eq!(decode_qr(v["qr_png"].as_str().unwrap()), s_(&v["url"]));
}

#[actix_web::test]
async fn codes_expire_and_are_revoked_by_their_creator_or_the_operator() {
    let app = TestApp::spawn_with(CODES).await;
    let (ann_id, ann) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;

    let short = s_(&app
        .code(&ann, json!({"page": "/landing", "ttl_seconds": 2}))
        .await["code"]);
    assert_eq!(
        fetch(&app, &format!("/s/{short}"), JSON, None).await.status,
        200
    );
    actix_web::rt::time::sleep(Duration::from_millis(3100)).await;
    let a = fetch(&app, &format!("/s/{short}"), JSON, None).await;
    assert_eq!((a.status, code_of(&a.json())), (410, "code_expired".into()));
    let a = fetch(&app, &format!("/s/{short}"), HTML, None).await;
    assert_eq!(a.status, 410);
    assert!(a.content_type.starts_with("text/html") && a.body.contains("expired"));
    let (s, v) = app.get(&format!("/v1/codes/{short}"), Some(&ann)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("expired")));
    assert_eq!(v["creator"], ann_id.as_str());

    let c = s_(&app.code(&ann, json!({"page": "/promo"})).await["code"]);
    let path = format!("/v1/codes/{c}");
    let (s, v) = app.get(&path, Some(&bob)).await;
    assert_eq!((s, code(&v)), (403, "forbidden"));
    let (s, v) = app.call("DELETE", &path, Some(&bob), None).await;
    assert_eq!(
        (s, code(&v)),
        (403, "forbidden"),
        "another user may not revoke"
    );
    let (s, _) = app.call("DELETE", &path, None, None).await;
    assert_eq!(s, 401);
    assert_eq!(
        fetch(&app, &format!("/s/{c}"), JSON, None).await.status,
        200
    );
    let (s, _) = app.call("DELETE", &path, Some(&ann), None).await;
    assert_eq!(s, 204, "the creator may");
    let a = fetch(&app, &format!("/s/{c}"), JSON, None).await;
    assert_eq!((a.status, code_of(&a.json())), (410, "code_revoked".into()));
    assert_eq!(
        fetch(&app, &format!("/s/{c}"), HTML, None).await.status,
        410
    );
    let (s, _) = app.call("DELETE", &path, Some(&ann), None).await;
    assert_eq!(s, 204, "again: nothing changes");
    let (s, v) = app.get(&path, Some(&ann)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("revoked")));
    assert!(v["revoked_at"].is_string());

    let c = s_(&app.code(&ann, json!({"page": "/promo"})).await["code"]);
    let (s, _) = app
        .call("DELETE", &format!("/v1/codes/{c}"), Some(ADMIN), None)
        .await;
    assert_eq!(s, 204, "the operator may");
    let a = fetch(&app, &format!("/s/{c}"), JSON, None).await;
    assert_eq!(a.status, 410);
}

#[actix_web::test]
async fn users_have_a_daily_quota_that_survives_a_restart() {
    let mut app = TestApp::spawn_with(CODES).await;
    let (_, ann) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    for i in 0..3 {
        app.code(&ann, json!({"page": "/landing", "params": {"i": i}}))
            .await;
    }
    let mut r = app
        .client
        .post(format!("{}/v1/codes", app.base))
        .insert_header(("Authorization", format!("Bearer {ann}")))
        .send_json(&json!({"page": "/landing"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    let v: Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
    assert_eq!(code(&v), "code_quota_exceeded");
    // Others are not affected; the operator has no quota.
    app.code(&bob, json!({"page": "/landing"})).await;
    for _ in 0..4 {
        app.code(ADMIN, json!({"page": "/landing"})).await;
    }
    app.restart().await;
    let (s, v) = app.create_code(&ann, json!({"page": "/landing"})).await;
    assert_eq!((s, code(&v)), (429, "code_quota_exceeded"));
    let (s, _) = app.create_code(&bob, json!({"page": "/landing"})).await;
    assert_eq!(s, 201);
}

#[actix_web::test]
async fn scans_and_unique_visitors_are_counted_and_flushed() {
    let mut app = TestApp::spawn_with(CODES).await;
    let c = s_(&app.code(ADMIN, json!({"page": "/landing"})).await["code"]);
    let path = format!("/s/{c}");
    let (a, b) = ("qrv=aaaaaaaaaaaaaaaaaaaaaa", "qrv=bbbbbbbbbbbbbbbbbbbbbb");
    for _ in 0..3 {
        let r = fetch(&app, &path, HTML, Some(a)).await;
        assert_eq!(r.status, 302);
        assert!(r.set_cookie.is_none(), "the visitor has a cookie");
    }
    for _ in 0..2 {
        fetch(&app, &path, JSON, Some(&format!("theme=dark; {b}"))).await;
    }
    // Without a cookie: one visitor (address and User-Agent), who is given
    // a cookie that keeps them the same visitor.
    let first = fetch(&app, &path, HTML, None).await;
    fetch(&app, &path, HTML, Some("qrv=not-a-valid-cookie")).await;
    let set = first.set_cookie.expect("cookie");
    let mine = set.split(';').next().unwrap().to_string();
    let r = fetch(&app, &path, JSON, Some(&mine)).await.json();
    assert_eq!(
        (r["scans"].as_u64(), r["unique_visitors"].as_u64()),
        (Some(8), Some(3))
    );
    let (_, v) = app.get(&format!("/v1/codes/{c}"), Some(ADMIN)).await;
    assert_eq!(
        (v["scans"].as_u64(), v["unique_visitors"].as_u64()),
        (Some(8), Some(3))
    );

    // Flushed within a second: a kill -9 after that loses nothing.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    app.restart().await;
    let (_, v) = app.get(&format!("/v1/codes/{c}"), Some(ADMIN)).await;
    assert_eq!(
        (v["scans"].as_u64(), v["unique_visitors"].as_u64()),
        (Some(8), Some(3))
    );
    // Known visitors stay known after the restart.
    let r = fetch(&app, &path, JSON, Some(b)).await.json();
    assert_eq!(
        (r["scans"].as_u64(), r["unique_visitors"].as_u64()),
        (Some(9), Some(3))
    );
    let r = fetch(&app, &path, JSON, Some("qrv=cccccccccccccccccccccc"))
        .await
        .json();
    assert_eq!(
        (r["scans"].as_u64(), r["unique_visitors"].as_u64()),
        (Some(10), Some(4))
    );
}

/// sled writes values it deems large to blob files it never fsyncs: the
/// largest pooled images and bindings the config allows stay in its log.
#[actix_web::test]
async fn the_largest_pooled_images_and_bindings_stay_in_the_log() {
    let base = format!("http://{}", "q".repeat(249));
    let config = format!(
        "public_base_url = \"{base}\"\n[codes]\npool_size = 60\npool_low_water = 5\nqr_size = 512\nmax_params_bytes = 4096\n"
    );
    let app = TestApp::spawn_with(&config).await;
    app.wait_metric("qrgate_code_pool_size", 60.0).await;
    for i in 0..40 {
        let params = json!({ "i": i, "text": "x".repeat(4070) });
        app.code(ADMIN, json!({"page": "/landing", "params": params}))
            .await;
    }
    let blobs = std::fs::read_dir(app.data_dir().join("db").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "no sled blob files");
}

#[actix_web::test]
async fn a_scan_lands_on_the_business_page_and_never_on_another_host() {
    let config = "[codes]\npool_size = 0\npool_low_water = 0\npages = [\"/spring\", \"https://shop.example.com/promo\"]\n\
                  page_base_url = \"https://www.example.com/qr/\"\n\
                  redirect_hosts = [\"shop.example.com\"]\n";
    let mut app = TestApp::spawn_with(config).await;
    let path_page = s_(&app
        .code(
            ADMIN,
            json!({"page": "/spring", "params": {"src": "poster 3"}}),
        )
        .await["code"]);
    let a = fetch(&app, &format!("/s/{path_page}"), HTML, None).await;
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(
        a.location.as_deref(),
        Some("https://www.example.com/qr/spring?src=poster+3")
    );
    let shop = s_(&app
        .code(
            ADMIN,
            json!({"page": "https://shop.example.com/promo", "params": {"n": 7}}),
        )
        .await["code"]);
    let a = fetch(&app, &format!("/s/{shop}"), HTML, None).await;
    assert_eq!(a.status, 302);
    assert_eq!(
        a.location.as_deref(),
        Some("https://shop.example.com/promo?n=7")
    );
    // An app still gets the binding; both scans were counted.
    let v = fetch(&app, &format!("/s/{shop}"), JSON, None).await.json();
    assert_eq!(
        (s_(&v["page"]), v["scans"].as_u64()),
        ("https://shop.example.com/promo".into(), Some(2))
    );
    // A page that is not configured cannot be bound...
    for page in [
        "https://evil.example.com/promo",
        "https://shop.example.com/other",
    ] {
        let (s, v) = app.create_code(ADMIN, json!({ "page": page })).await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "{page}: {v}");
    }
    // ...and once the page and its host leave the config, a scan of a code
    // bound to it goes nowhere.
    app.extra_config = "[codes]\npool_size = 0\npool_low_water = 0\npages = [\"/spring\", \"https://evil.example.com/x\"]\nredirect_hosts = [\"evil.example.com\"]\npage_base_url = \"https://www.example.com\"\n".into();
    app.restart().await;
    let a = fetch(&app, &format!("/s/{shop}"), HTML, None).await;
    assert_eq!(a.status, 403, "{:?}", a.location);
    assert!(
        a.location.is_none() && a.body.contains("does not send visitors"),
        "{}",
        a.body
    );
}
