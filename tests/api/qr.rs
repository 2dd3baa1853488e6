//! QR images decode back to the invitation URL; live images are cached.

use super::helpers::*;
use serde_json::json;

fn decode(png: &[u8]) -> (usize, String) {
    let img = image::load_from_memory(png).expect("png").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code");
    let (meta, content) = grids[0].decode().expect("decodes");
    (meta.ecc_level as usize, content)
}

async fn fetch(app: &TestApp, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let mut r = app
        .client
        .get(format!("{}{}", app.base, path))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ct,
        r.body().limit(8 << 20).await.unwrap().to_vec(),
    )
}

#[actix_web::test]
async fn qr_png_svg_and_card_carry_the_invitation_url() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app
        .group(
            &owner,
            json!({"name": "Poster", "description": "We print QR codes on posters"}),
        )
        .await;
    let (iid, tok, url) = app.invite(&owner, &g, json!({})).await;

    let (s, ct, png) = fetch(&app, &format!("/v1/invites/{iid}/qr.png"), &owner).await;
    assert_eq!((s, ct.as_str()), (200, "image/png"));
    let (ecc, content) = decode(&png);
    assert_eq!(content, url);
    assert_eq!(ecc, 0, "rqrr reports level M as 0");

    let (s, _, png) = fetch(&app, &format!("/v1/invites/{iid}/qr.png?size=1024"), &owner).await;
    assert_eq!(s, 200);
    let img = image::load_from_memory(&png).unwrap();
    assert!(img.width() <= 1024 && img.width() > 512);
    assert_eq!(decode(&png).1, url);

    let (s, ct, svg) = fetch(&app, &format!("/v1/invites/{iid}/qr.svg"), &owner).await;
    assert_eq!((s, ct.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().contains("<svg"));

    let (s, _, card) = fetch(&app, &format!("/v1/invites/{iid}/card.png"), &owner).await;
    assert_eq!(s, 200);
    assert_eq!(card_code(&card), url, "the card's QR code is decodable");

    // The second fetch of the same image is served from the cache.
    let hits = app.metric("qrgate_qr_images_total{result=\"hit\"}").await;
    let (s, _, again) = fetch(&app, &format!("/v1/invites/{iid}/qr.png"), &owner).await;
    assert_eq!(s, 200);
    assert_eq!(decode(&again).1, url);
    assert_eq!(
        app.metric("qrgate_qr_images_total{result=\"hit\"}").await,
        hits + 1.0
    );

    // A revoked invitation has no image.
    assert_eq!(
        app.call("DELETE", &format!("/v1/invites/{iid}"), Some(&owner), None)
            .await
            .0,
        204
    );
    let (s, v) = app
        .get(&format!("/v1/invites/{iid}/qr.png"), Some(&owner))
        .await;
    assert_eq!((s, code(&v)), (410, "invite_revoked"));
    let _ = tok;
}

/// Whether this machine has a font with Chinese glyphs (the card tests that
/// need one say SKIPPED otherwise, unless `QRGATE_REQUIRE_FONTS` is set).
fn cjk_font() -> bool {
    if qrgate::card::fonts().cjk {
        return true;
    }
    assert!(
        std::env::var_os("QRGATE_REQUIRE_FONTS").is_none(),
        "no font with Chinese glyphs, and QRGATE_REQUIRE_FONTS is set (install fonts-noto-cjk)"
    );
    eprintln!("SKIPPED: no font with Chinese glyphs (install fonts-noto-cjk)");
    false
}

#[actix_web::test]
async fn the_card_prints_chinese_in_the_readers_language() {
    if !cjk_font() {
        return;
    }
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let name = format!("徒步小组 Hikers {}", "周末登山".repeat(12));
    let g = app
        .group(
            &owner,
            json!({"name": name.chars().take(64).collect::<String>(), "description": "每周六早上八点在山脚集合，风雨无阻。Saturdays at 8, rain or shine."}),
        )
        .await;
    let (iid, _, url) = app
        .invite(&owner, &g, json!({"ttl_seconds": 7 * 86_400}))
        .await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cards = Vec::new();
    for lang in ["zh", "en"] {
        let (s, ct, png) = fetch(
            &app,
            &format!("/v1/invites/{iid}/card.png?lang={lang}"),
            &owner,
        )
        .await;
        assert_eq!((s, ct.as_str()), (200, "image/png"));
        let img = image::load_from_memory(&png).expect("png");
        assert_eq!((img.width(), img.height()), (600, 900));
        assert_eq!(
            card_code(&png),
            url,
            "{lang}: the code decodes under a long Chinese name"
        );
        std::fs::write(dir.join(format!("card-{lang}.png")), &png).expect("write");
        cards.push(png);
    }
    assert_ne!(
        cards[0], cards[1],
        "the validity line is in the reader's language"
    );
    // Accept-Language chooses too, and the cache keeps the languages apart.
    let mut r = app
        .client
        .get(format!("{}/v1/invites/{iid}/card.png", app.base))
        .insert_header(("Authorization", format!("Bearer {owner}")))
        .insert_header(("Accept-Language", "zh-CN,zh;q=0.9"))
        .send()
        .await
        .expect("card");
    assert_eq!(
        r.body().limit(8 << 20).await.expect("body").to_vec(),
        cards[0]
    );
    // A new description is a new card, not the cached one.
    let (s, v) = app
        .call(
            "PATCH",
            &format!("/v1/groups/{g}"),
            Some(&owner),
            Some(json!({"description": "周日改为九点集合"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, _, png) = fetch(&app, &format!("/v1/invites/{iid}/card.png?lang=zh"), &owner).await;
    assert!(png != cards[0], "the card shows the new description");
}
