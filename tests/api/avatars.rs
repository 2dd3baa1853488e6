//! Group avatars on the real server: uploaded by the group's moderators,
//! refused when they are not a PNG or JPEG of sane size, re-encoded (no
//! uploaded byte is served back), shown on the card (whose QR code still
//! decodes) and the join page, kept across a restart, removed.

use super::helpers::*;
use serde_json::json;
use std::io::Cursor;

pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 60])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

impl TestApp {
    pub async fn upload(
        &self,
        token: &str,
        group: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut r = self
            .client
            .put(format!("{}/v1/groups/{group}/avatar", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Content-Type", content_type.to_string()))
            .send_body(body)
            .await
            .expect("upload");
        let b = r.body().limit(1 << 20).await.expect("body");
        (
            r.status().as_u16(),
            serde_json::from_slice(&b).unwrap_or_default(),
        )
    }

    async fn bytes(&self, token: &str, path: &str) -> Vec<u8> {
        let mut r = self
            .client
            .get(format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.body().limit(8 << 20).await.expect("body").to_vec()
    }
}

/// The avatar a join page embeds, decoded from its `data:` URL.
async fn page_avatar(app: &TestApp, url: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    // The server's address changes with a restart: keep the path.
    let path = &url[url.find("/j/").expect("a join link")..];
    let mut r = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("page");
    let html =
        String::from_utf8(r.body().limit(1 << 20).await.expect("body").to_vec()).expect("utf-8");
    let start = html.find("src=\"data:image/jpeg;base64,")? + "src=\"data:image/jpeg;base64,".len();
    let end = start + html[start..].find('"')?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(&html[start..end])
            .expect("base64"),
    )
}

#[actix_web::test]
async fn moderators_set_an_avatar_the_card_and_page_show_it() {
    let mut app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let name = format!("徒步小组 Hikers {}", "周末登山".repeat(12));
    let g = app
        .group(
            &owner,
            json!({"name": name.chars().take(64).collect::<String>()}),
        )
        .await;
    let (iid, invite_token, url) = app.invite(&owner, &g, json!({})).await;
    let (_, member) = app.user("member").await;
    assert_eq!(app.join(&member, &invite_token).await.0, 200);
    let (_, outsider) = app.user("outsider").await;
    let card_path = format!("/v1/invites/{iid}/card.png?lang=zh");
    let plain_card = app.bytes(&owner, &card_path).await;
    assert!(page_avatar(&app, &url).await.is_none());

    let upload = png(900, 600);
    for who in [&member, &outsider] {
        let (s, v) = app.upload(who, &g, "image/png", upload.clone()).await;
        assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    }
    let (s, v) = app.upload(&owner, &g, "image/png", upload.clone()).await;
    assert_eq!(s, 204, "{v}");

    // The card shows it (another image), and its code still decodes.
    let card = app.bytes(&owner, &card_path).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("card-avatar-zh.png"), &card).expect("write");
    assert!(card != plain_card, "the card shows the avatar");
    assert_eq!(
        card_code(&card),
        url,
        "the code decodes with an avatar and a long Chinese name"
    );
    // The page embeds it: a JPEG of at most 256x256, not the uploaded bytes.
    let shown = page_avatar(&app, &url)
        .await
        .expect("the page shows the avatar");
    assert_eq!(
        image::guess_format(&shown).ok(),
        Some(image::ImageFormat::Jpeg)
    );
    let img = image::load_from_memory(&shown).expect("jpeg");
    assert_eq!((img.width(), img.height()), (256, 256));
    assert!(shown != upload, "no uploaded byte is served back");

    // Kept across a restart (the server's address, so the code, changes).
    app.restart().await;
    assert!(page_avatar(&app, &url).await == Some(shown.clone()));
    let card = app.bytes(&owner, &card_path).await;
    assert!(card_code(&card).ends_with(&format!("/j/{invite_token}")));

    // Removed: the card and the page are plain again.
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/avatar"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/v1/groups/{g}/avatar"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(page_avatar(&app, &url).await.is_none());
    let plain_again = app.bytes(&owner, &card_path).await;
    assert!(plain_again != card, "the card lost its avatar");
}

#[actix_web::test]
async fn images_that_are_not_what_they_say_or_too_big_are_refused() {
    let app = TestApp::spawn().await;
    let (_, owner) = app.user("owner").await;
    let g = app.group(&owner, json!({"name": "Pictures"})).await;
    let good = png(64, 64);
    // A flipped byte inside the image data: its chunk's CRC fails.
    let mut bad_crc = good.clone();
    let at = bad_crc.len() - 20;
    bad_crc[at] ^= 0xff;
    // A JPEG whose frame header declares 60000x60000.
    let mut huge = Vec::new();
    image::RgbImage::new(16, 16)
        .write_to(&mut Cursor::new(&mut huge), image::ImageFormat::Jpeg)
        .expect("jpeg");
    let sof = huge
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("baseline frame");
    huge[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    huge[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    let html = b"<html><body><script>alert(1)</script></body></html>".to_vec();
    for (content_type, body, status, want) in [
        ("image/png", bad_crc, 422, "invalid_image"),
        ("image/jpeg", huge, 422, "image_too_large"),
        ("image/svg+xml", svg.clone(), 415, "unsupported_media_type"),
        ("image/png", svg, 422, "invalid_image"),
        ("text/html", html.clone(), 415, "unsupported_media_type"),
        ("image/png", html, 422, "invalid_image"),
        ("image/jpeg", good.clone(), 422, "invalid_image"),
        (
            "image/png",
            vec![0u8; (1 << 20) + 1],
            413,
            "payload_too_large",
        ),
    ] {
        let (s, v) = app.upload(&owner, &g, content_type, body).await;
        assert_eq!((s, code(&v)), (status, want), "{content_type}: {v}");
    }
    // Nothing was stored: the page has no avatar; a good one is taken.
    let (_, _, url) = app.invite(&owner, &g, json!({})).await;
    assert!(page_avatar(&app, &url).await.is_none());
    let (s, v) = app.upload(&owner, &g, "image/png", good).await;
    assert_eq!(s, 204, "{v}");
    assert!(page_avatar(&app, &url).await.is_some());
}
