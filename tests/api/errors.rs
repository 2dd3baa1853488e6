//! Bad input: always a 4xx problem+json with a code, never a 5xx.

use super::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn malformed_requests_get_typed_errors() {
    let app = TestApp::spawn().await;
    let (_, u) = app.user("u").await;
    let raw = |path: &str, ct: &str, body: Vec<u8>| {
        app.client
            .post(format!("{}{}", app.base, path))
            .insert_header(("Authorization", format!("Bearer {u}")))
            .insert_header(("Content-Type", ct.to_string()))
            .send_body(body)
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/groups",
            "application/json",
            b"{\"name\":".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/v1/groups",
            "application/json",
            b"[1,2]".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/v1/groups",
            "application/json",
            br#"{"name":"x","bogus":1}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/v1/groups",
            "application/json",
            br#"{"name":""}"#.to_vec(),
            400,
            "validation_failed",
        ),
        (
            "/v1/groups",
            "application/json",
            br#"{"name":"x","member_limit":300}"#.to_vec(),
            400,
            "validation_failed",
        ),
        (
            "/v1/groups",
            "application/json",
            br#"{"name":"x","member_limit":-1}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/v1/groups",
            "text/plain",
            br#"{"name":"x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/v1/groups",
            "application/json",
            format!("{{\"name\":\"{}\"}}", "x".repeat(40_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "/v1/join",
            "application/json",
            br#"{"token":123}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/v1/users",
            "application/json",
            br#"{"name":"a\u0000b"}"#.to_vec(),
            400,
            "validation_failed",
        ),
    ];
    for (path, ct, body, status, want) in cases {
        let mut r = raw(path, ct, body).await.unwrap();
        let s = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let v: serde_json::Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
        assert_eq!((s, code(&v)), (status, want), "{path} {v}");
        assert_eq!(ctype.as_deref(), Some("application/problem+json"));
    }
    // bad ids
    for p in [
        "/v1/groups/nope",
        "/v1/groups/u_AAAAAAAAAAAAAAAAAAAAAA",
        "/v1/invites/i_short",
        "/v1/groups/g_%00",
    ] {
        let (s, v) = app.get(p, Some(&u)).await;
        assert_eq!((s, code(&v)), (400, "invalid_id"), "{p}");
    }
    let (s, v) = app
        .get("/v1/groups/g_AAAAAAAAAAAAAAAAAAAAAA", Some(&u))
        .await;
    assert_eq!((s, code(&v)), (404, "group_not_found"));
    let (s, v) = app
        .get("/v1/invites/i_AAAAAAAAAAAAAAAAAAAAAA", Some(&u))
        .await;
    assert_eq!((s, code(&v)), (404, "invite_not_found"));
    let (s, v) = app.get("/v1/nothing-here", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = app.get("/v1/join", Some(&u)).await;
    assert_eq!((s, code(&v)), (405, "method_not_allowed"));
    let (s, v) = app
        .call(
            "PUT",
            "/v1/groups/g_AAAAAAAAAAAAAAAAAAAAAA/members",
            Some(&u),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (405, "method_not_allowed"));
    let (s, v) = app
        .post(
            "/v1/groups/g_AAAAAAAAAAAAAAAAAAAAAA/requests/r_AAAAAAAAAAAAAAAAAAAAAA/approve",
            Some(&u),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "group_not_found"));
    let g = app.group(&u, json!({"name": "g"})).await;
    let (s, v) = app
        .post(
            &format!("/v1/groups/{g}/requests/r_AAAAAAAAAAAAAAAAAAAAAA/approve"),
            Some(&u),
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "request_not_found"));
    let (s, v) = app
        .get(&format!("/v1/groups/{g}/members"), Some("Basic abc"))
        .await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    // QR size bounds
    let (iid, _, _) = app.invite(&u, &g, json!({})).await;
    for q in ["size=10", "size=999999", "size=abc", "bogus=1"] {
        let (s, v) = app
            .get(&format!("/v1/invites/{iid}/qr.png?{q}"), Some(&u))
            .await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "{q}");
    }
    assert_eq!(
        app.metric(
            "qrgate_http_requests_total{method=\"POST\",route=\"/v1/groups\",status=\"500\"}"
        )
        .await,
        0.0
    );
}

/// Text other people read refuses invisible formatting characters: a bidi
/// override in a name could make "gpj.exe" read as "exe.jpg".
#[actix_web::test]
async fn names_and_messages_refuse_bidi_overrides_and_hidden_characters() {
    let app = TestApp::spawn_with("[wallets]\nearning_max_fen = 100000\n").await;
    let (_, owner) = app.funded("owner", 1000).await;
    let g = app.group(&owner, json!({"name": "Hikers"})).await;
    let tricks = [
        "pay\u{202E}gpj.exe",
        "a\u{2066}b\u{2069}",
        "ad\u{200B}min",
        "x\u{200F}",
    ];
    for (i, t) in tricks.into_iter().enumerate() {
        let (s, v) = app
            .post("/v1/users", Some(ADMIN), json!({ "name": t }))
            .await;
        assert_eq!((s, code(&v)), (400, "validation_failed"), "user {t:?}: {v}");
        let (s, v) = app
            .post("/v1/groups", Some(&owner), json!({ "name": t }))
            .await;
        assert_eq!(
            (s, code(&v)),
            (400, "validation_failed"),
            "group {t:?}: {v}"
        );
        let (s, v) = app
            .call(
                "PATCH",
                &format!("/v1/groups/{g}"),
                Some(&owner),
                Some(json!({ "description": t })),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (400, "validation_failed"),
            "description {t:?}: {v}"
        );
        let (s, v) = app
            .create_packet(
                &owner,
                &format!("k{i}"),
                json!({"total": 100, "count": 1, "mode": "fixed", "message": t}),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (400, "validation_failed"),
            "packet {t:?}: {v}"
        );
    }
    // Emoji sequences and CJK are names like any other.
    let (s, v) = app
        .post(
            "/v1/groups",
            Some(&owner),
            json!({"name": "徒步小组 👨\u{200D}👩\u{200D}👧"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

/// Every route that takes a body refuses one over `limits.max_body_bytes`
/// with 413 problem+json, those that read their body themselves included.
#[actix_web::test]
async fn every_body_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(
        "[limits]\nmax_body_bytes = 2048\n[wallets]\nearning_max_fen = 100000\n",
    )
    .await;
    let (_, owner) = app.funded("owner", 1000).await;
    let g = app.group(&owner, json!({"name": "g"})).await;
    let (s, v) = app
        .create_packet(
            &owner,
            "p",
            json!({"total": 100, "count": 1, "mode": "fixed"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let packet = s_(&v["id"]);
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(4096)).into_bytes();
    let routes = [
        ("/v1/groups".to_string(), Some(owner.as_str())),
        ("/v1/join".to_string(), Some(owner.as_str())),
        (format!("/v1/groups/{g}/invites"), Some(owner.as_str())),
        (format!("/v1/packets/{packet}/claim"), Some(owner.as_str())),
        ("/v1/earnings".to_string(), Some(ADMIN)),
        ("/v1/provider/notify".to_string(), None),
    ];
    for (path, token) in routes {
        for chunked in [false, true] {
            let mut req = app
                .client
                .post(format!("{}{path}", app.base))
                .insert_header(("Content-Type", "application/json"));
            if let Some(t) = token {
                req = req.insert_header(("Authorization", format!("Bearer {t}")));
            }
            // Chunked: no Content-Length, so the limit holds while reading.
            let mut r = if chunked {
                let body = bytes::Bytes::from(big.clone());
                req.send_stream(futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(body)
                }))
                .await
            } else {
                req.send_body(big.clone()).await
            }
            .expect("request");
            let ct = header(r.headers(), "content-type");
            let v: serde_json::Value =
                serde_json::from_slice(&r.body().await.expect("body")).unwrap_or_default();
            assert_eq!(
                (r.status().as_u16(), code(&v)),
                (413, "payload_too_large"),
                "{path} (chunked: {chunked}): {v}"
            );
            assert!(ct.starts_with("application/problem+json"), "{path}: {ct}");
        }
    }
}
