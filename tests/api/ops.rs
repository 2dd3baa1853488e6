//! Operations: health, metrics, OpenAPI coverage, keys (offline verification
//! and rotation), clean shutdown.

use super::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::json;

/// Verify an invitation token the way an offline client would: with the JWKS only.
fn verify_offline(jwks: &serde_json::Value, token: &str) -> bool {
    let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
    let (msg, sig) = raw.split_at(raw.len() - 64);
    let kid = format!("{:08x}", u32::from_be_bytes(msg[1..5].try_into().unwrap()));
    let Some(k) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
    else {
        return false;
    };
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(k["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let vk = VerifyingKey::from_bytes(&x).unwrap();
    vk.verify(msg, &Signature::from_bytes(&sig.try_into().unwrap()))
        .is_ok()
}

#[actix_web::test]
async fn keys_verify_offline_and_rotate_without_breaking_old_invitations() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Keys"})).await;
    let (_, old_tok, _) = app.invite(&owner, &g, json!({})).await;
    let (s, jwks) = app.get("/v1/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(verify_offline(&jwks, &old_tok));
    let mut forged = URL_SAFE_NO_PAD.decode(&old_tok).unwrap();
    forged[45] ^= 1; // later expiry
    assert!(!verify_offline(&jwks, &URL_SAFE_NO_PAD.encode(&forged)));

    // rotate: `qrgate keygen` on the same data dir, then restart
    app.kill9();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qrgate"))
        .args(["keygen", "--config"])
        .arg(app.dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.restart().await;
    let (_, jwks2) = app.get("/v1/keys", None).await;
    assert_eq!(
        jwks2["keys"].as_array().unwrap().len(),
        2,
        "the retired key is still published"
    );
    let (_, new_tok, _) = app.invite(&owner, &g, json!({})).await;
    assert_ne!(
        old_tok[..8],
        new_tok[..8],
        "new invitations carry the new key id"
    );
    assert!(verify_offline(&jwks2, &old_tok));
    assert!(verify_offline(&jwks2, &new_tok));
    let (_, u) = app.user("u").await;
    assert_eq!(
        app.join(&u, &old_tok).await.0,
        200,
        "old invitations keep working"
    );
}

#[actix_web::test]
async fn openapi_covers_every_route_and_metrics_and_health_answer() {
    let mut app = TestApp::spawn().await;
    let (s, doc) = app.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/v1/users",
        "/v1/keys",
        "/v1/groups",
        "/v1/groups/{id}",
        "/v1/groups/{id}/members",
        "/v1/groups/{id}/admins/{user_id}",
        "/v1/groups/{id}/invites",
        "/v1/groups/{id}/requests",
        "/v1/groups/{id}/requests/{rid}/approve",
        "/v1/groups/{id}/requests/{rid}/reject",
        "/v1/groups/{id}/blocks",
        "/v1/admin/groups/{id}/ban",
        "/v1/admin/groups/{id}/unban",
        "/v1/invites/{id}",
        "/v1/invites/{id}/qr.png",
        "/v1/invites/{id}/qr.svg",
        "/v1/invites/{id}/card.png",
        "/v1/join",
        "/v1/ws",
        "/v1/wallet",
        "/v1/wallet/entries",
        "/v1/wallet/link",
        "/v1/wallet/auto-payout",
        "/v1/earnings",
        "/v1/payouts",
        "/v1/payouts/{id}",
        "/v1/provider/notify",
        "/v1/admin/ledger/check",
        "/v1/admin/payouts",
        "/v1/admin/alerts",
        "/v1/admin/reconcile",
        "/v1/admin/reconcile/{date}",
        "/v1/admin/reports/large-transactions",
        "/v1/admin/users/{id}/kyc",
        "/v1/packets",
        "/v1/packets/{id}",
        "/v1/packets/{id}/qr.png",
        "/v1/packets/{id}/claim",
        "/v1/admin/blacklist",
        "/v1/admin/blacklist/{user_id}",
        "/v1/codes",
        "/v1/codes/{code}",
        "/s/{code}",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let (s, _) = app.get("/healthz", None).await;
    assert_eq!(s, 200);
    // Not public by default: the admin token reads it.
    let (s, v) = app.get("/metrics", None).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    let (_, user) = app.user("curious").await;
    assert_eq!(app.get("/metrics", Some(&user)).await.0, 403);
    let mut r = app
        .client
        .get(format!("{}/metrics", app.base))
        .insert_header(("Authorization", format!("Bearer {ADMIN}")))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
    for m in [
        "qrgate_http_requests_total",
        "qrgate_http_request_seconds_bucket",
        "qrgate_storage_flush_seconds",
        "qrgate_group_actors_resident",
        "qrgate_wallet_actors_resident",
        "qrgate_heap_bytes{kind=\"allocated\"}",
        "qrgate_heap_bytes{kind=\"resident\"}",
        "qrgate_payouts_total",
        "qrgate_payouts_stuck",
        "qrgate_packets_total",
        "qrgate_provider_notifications_total",
        "qrgate_code_pool_size",
        "qrgate_code_lookups_total",
    ] {
        assert!(text.contains(m), "metrics lack {m}");
    }
    // The system wallet's actor (started with the server) is a wallet's,
    // not a group's: no group exists here.
    assert!(
        text.contains("\nqrgate_group_actors_resident 0\n"),
        "{text}"
    );
    // SIGTERM drains and exits cleanly.
    let status = app.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[actix_web::test]
async fn metrics_can_be_made_public() {
    let app = TestApp::spawn_with("[metrics]\npublic = true\n").await;
    let mut r = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("qrgate_http_requests_total"));
}

/// A new data dir is private: it holds the server's secrets and every record.
#[actix_web::test]
async fn a_new_data_dir_is_private_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    let mode = std::fs::metadata(app.data_dir())
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "mode {:o}", mode & 0o777);
    let secret = std::fs::metadata(app.data_dir().join("secret.key"))
        .expect("secret")
        .permissions()
        .mode();
    assert_eq!(secret & 0o077, 0, "secret.key mode {:o}", secret & 0o777);
}
