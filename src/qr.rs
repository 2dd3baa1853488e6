//! QR code rendering: plain PNG/SVG codes and a branded invitation card PNG.
//!
//! Everything uses error-correction level M and the standard 4-module quiet zone.
//! Card text is drawn with the 8x8 bitmap font from `font8x8`; characters it has
//! no glyph for (e.g. CJK) are drawn as '?'.

use std::io::Cursor;

use font8x8::{UnicodeFonts, BASIC_FONTS, GREEK_FONTS, LATIN_FONTS};
use image::{DynamicImage, ImageFormat, Luma, Rgb, RgbImage};
use qrcode::types::QrError as LibError;
use qrcode::{render::svg, Color, EcLevel, QrCode};

/// Smallest and largest accepted `size` (pixels, the image's width = height) for PNG/SVG.
pub const MIN_SIZE: u32 = 128;
pub const MAX_SIZE: u32 = 2048;
pub const DEFAULT_SIZE: u32 = 512;
/// The largest image a caller without a session gets (larger sizes are
/// served at this one).
pub const ANONYMOUS_MAX_SIZE: u32 = 1024;

/// Sizes are rounded down to a multiple of this, so that a handful of
/// renders per code serve every request (the image never exceeds `size`).
pub const SIZE_STEP: u32 = 64;

/// `size` as rendered: rounded down to [`SIZE_STEP`], at least [`MIN_SIZE`],
/// at most `cap`.
pub fn rendered_size(size: u32, cap: u32) -> u32 {
    (size.min(cap) / SIZE_STEP * SIZE_STEP).max(MIN_SIZE)
}

/// A request's `size` (default [`DEFAULT_SIZE`]), refused outside
/// [`MIN_SIZE`]..=[`MAX_SIZE`], then as rendered under `cap`.
pub fn requested_size(size: Option<u32>, cap: u32) -> Result<u32, QrError> {
    let size = size.unwrap_or(DEFAULT_SIZE);
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(QrError::BadSize);
    }
    Ok(rendered_size(size, cap))
}

/// What a cached image shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Invite(crate::domain::ids::InviteId),
    Packet(crate::domain::ids::PacketId),
}

/// A rendered image's cache key: what it shows, its kind, its size.
pub type CacheKey = (Subject, u8, u32);

/// Weighs a cached image by its bytes, so the cache is bounded in memory,
/// not in entries (a 2048-pixel card weighs a hundred small codes).
#[derive(Clone, Copy, Debug, Default)]
pub struct ByBytes;

impl quick_cache::Weighter<CacheKey, bytes::Bytes> for ByBytes {
    fn weight(&self, _: &CacheKey, v: &bytes::Bytes) -> u64 {
        // The key and the entry's bookkeeping, roughly.
        v.len() as u64 + 64
    }
}

/// Rendered images, at most `bytes` of them.
pub type Cache = quick_cache::sync::Cache<CacheKey, bytes::Bytes, ByBytes>;

pub fn cache(bytes: u64) -> Cache {
    // An invitation code at the default size is about 4 KB.
    Cache::with_weighter((bytes / 4096).max(16) as usize, bytes, ByBytes)
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("data too long to encode as a QR code")]
    DataTooLong,
    #[error("size must be between {MIN_SIZE} and {MAX_SIZE} pixels")]
    BadSize,
    #[error("image encoding failed: {0}")]
    Encode(String),
}

/// Modules of quiet zone on each side (the standard value for full-size QR codes,
/// and what `qrcode`'s renderer uses for them).
const QUIET: u32 = 4;

fn encode(data: &str) -> Result<QrCode, QrError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(|e| match e {
        LibError::DataTooLong => QrError::DataTooLong,
        other => QrError::Encode(other.to_string()),
    })
}

fn check_size(size: u32) -> Result<(), QrError> {
    if (MIN_SIZE..=MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(QrError::BadSize)
    }
}

/// Integer pixels per module so that code + quiet zone fits in `size`, at least 1.
fn module_px(code: &QrCode, size: u32) -> u32 {
    let total = code.width() as u32 + 2 * QUIET;
    (size / total).max(1)
}

fn encode_png(img: DynamicImage) -> Result<Vec<u8>, QrError> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
        .map_err(|e| QrError::Encode(e.to_string()))?;
    Ok(buf)
}

/// QR code of `data` at error-correction level M, quiet zone 4 modules, black on white,
/// as a PNG whose width/height is as close as possible to `size` without exceeding it
/// (integer pixels per module, at least 1). Rejects size outside MIN_SIZE..=MAX_SIZE.
pub fn render_png(data: &str, size: u32) -> Result<Vec<u8>, QrError> {
    check_size(size)?;
    let code = encode(data)?;
    let px = module_px(&code, size);
    let img = code
        .render::<Luma<u8>>()
        .quiet_zone(true)
        .module_dimensions(px, px)
        .build();
    encode_png(DynamicImage::ImageLuma8(img))
}

/// Same as [`render_png`] but as a standalone SVG document whose width/height
/// attributes are the pixel size.
pub fn render_svg(data: &str, size: u32) -> Result<String, QrError> {
    check_size(size)?;
    let code = encode(data)?;
    let px = module_px(&code, size);
    Ok(code
        .render::<svg::Color>()
        .quiet_zone(true)
        .module_dimensions(px, px)
        .build())
}

pub struct Card<'a> {
    /// Group name, up to 64 chars, may be non-ASCII.
    pub title: &'a str,
    /// Description, may be empty, up to 280 chars.
    pub subtitle: &'a str,
    /// E.g. "Scan to join - expires 2026-11-30".
    pub footer: &'a str,
    /// RGB background colour of the card.
    pub background: [u8; 3],
}

// Card layout (pixels). Glyphs are 8x8 font cells scaled up by an integer factor.
const CARD_W: u32 = 600;
const CARD_H: u32 = 900;
const MARGIN: u32 = 30;
const AVATAR_CY: u32 = 120;
const AVATAR_R: u32 = 64;
const TITLE_Y: u32 = 210;
const SUBTITLE_Y: u32 = 290;
/// The QR panel (white, including the quiet zone) is centred in this square.
const PANEL_Y: u32 = 400;
const PANEL_MAX: u32 = 400;
const FOOTER_Y: u32 = 820;

/// Pleasant, saturated avatar colours; one is picked from a hash of the title.
const AVATAR_PALETTE: [[u8; 3]; 8] = [
    [229, 57, 53],
    [216, 27, 96],
    [142, 36, 170],
    [57, 73, 171],
    [3, 155, 229],
    [0, 137, 123],
    [67, 160, 71],
    [244, 81, 30],
];

/// A branded invitation card PNG (600x900): background, avatar circle with the
/// title's initial, title, word-wrapped subtitle, the QR code of `data` (level M)
/// on a white panel with its own quiet zone, and the footer.
pub fn render_card(data: &str, card: &Card) -> Result<Vec<u8>, QrError> {
    let code = encode(data)?;
    let mut img = RgbImage::from_pixel(CARD_W, CARD_H, Rgb(card.background));
    let fg = contrast_colour(card.background);

    // Avatar: a ring in the text colour keeps it visible on any background.
    let avatar = AVATAR_PALETTE[(fnv1a(card.title.as_bytes()) % 8) as usize];
    fill_circle(&mut img, CARD_W / 2, AVATAR_CY, AVATAR_R + 4, fg);
    fill_circle(&mut img, CARD_W / 2, AVATAR_CY, AVATAR_R, Rgb(avatar));
    let initial = card
        .title
        .trim()
        .chars()
        .next()
        .and_then(|c| c.to_uppercase().next())
        .unwrap_or('?');
    let scale = 8;
    draw_glyph(
        &mut img,
        CARD_W / 2 - 4 * scale,
        AVATAR_CY - 4 * scale,
        glyph(initial),
        scale,
        contrast_colour(avatar),
    );

    draw_block(&mut img, card.title, TITLE_Y, 3, 2, fg);
    draw_block(&mut img, card.subtitle, SUBTITLE_Y, 2, 4, fg);
    draw_block(&mut img, card.footer, FOOTER_Y, 2, 2, fg);

    // QR panel: white square with a 4-module quiet zone, centred in its slot.
    let modules = code.width() as u32;
    let total = modules + 2 * QUIET;
    let px = (PANEL_MAX / total).max(1);
    let panel = total * px;
    let (x0, y0) = ((CARD_W - panel) / 2, PANEL_Y + (PANEL_MAX - panel) / 2);
    fill_rect(&mut img, x0, y0, panel, panel, Rgb([255, 255, 255]));
    for (i, colour) in code.to_colors().iter().enumerate() {
        if *colour == Color::Dark {
            let (mx, my) = (i as u32 % modules, i as u32 / modules);
            let (x, y) = (x0 + (QUIET + mx) * px, y0 + (QUIET + my) * px);
            fill_rect(&mut img, x, y, px, px, Rgb([0, 0, 0]));
        }
    }

    encode_png(DynamicImage::ImageRgb8(img))
}

/// Near-black or white, whichever reads better on `bg` (ITU-R BT.601 luma).
fn contrast_colour(bg: [u8; 3]) -> Rgb<u8> {
    let [r, g, b] = bg.map(u32::from);
    if 299 * r + 587 * g + 114 * b >= 128_000 {
        Rgb([20, 20, 20])
    } else {
        Rgb([255, 255, 255])
    }
}

/// FNV-1a: a tiny stable hash so the same title always gets the same colour.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The 8x8 bitmap for `c`, or '?' when the font has none.
fn glyph(c: char) -> [u8; 8] {
    BASIC_FONTS
        .get(c)
        .or_else(|| LATIN_FONTS.get(c))
        .or_else(|| GREEK_FONTS.get(c))
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Draws `text` word-wrapped to the card width, centred, starting at `y`.
fn draw_block(img: &mut RgbImage, text: &str, y: u32, scale: u32, max_lines: usize, fg: Rgb<u8>) {
    let cell = 8 * scale;
    let per_line = ((CARD_W - 2 * MARGIN) / cell) as usize;
    let line_h = cell + cell / 3;
    for (i, line) in wrap(text, per_line, max_lines).iter().enumerate() {
        let n = line.chars().count() as u32;
        let mut x = CARD_W.saturating_sub(n * cell) / 2;
        for c in line.chars() {
            draw_glyph(img, x, y + i as u32 * line_h, glyph(c), scale, fg);
            x += cell;
        }
    }
}

/// Greedy word wrap to `width` chars per line (long words are hard-broken). If the
/// text needs more than `max_lines`, the last kept line ends with "...".
fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(4);
    let mut lines: Vec<Vec<char>> = Vec::new();
    let mut cur: Vec<char> = Vec::new();
    for word in text.split_whitespace() {
        // Stop early: more than enough lines to know we must truncate.
        if lines.len() > max_lines {
            break;
        }
        let chars: Vec<char> = word.chars().collect();
        for piece in chars.chunks(width) {
            if !cur.is_empty() && cur.len() + 1 + piece.len() > width {
                lines.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.extend_from_slice(piece);
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            last.truncate(width - 3);
            while last.last() == Some(&' ') {
                last.pop();
            }
            last.extend_from_slice(&['.', '.', '.']);
        }
    }
    lines.into_iter().map(|l| l.into_iter().collect()).collect()
}

/// Draws one glyph; bit `col` of byte `row` set means "ink" (bit 0 = leftmost).
fn draw_glyph(img: &mut RgbImage, x: u32, y: u32, rows: [u8; 8], scale: u32, fg: Rgb<u8>) {
    for (row, bits) in (0u32..).zip(rows) {
        for col in 0..8 {
            if bits >> col & 1 == 1 {
                fill_rect(img, x + col * scale, y + row * scale, scale, scale, fg);
            }
        }
    }
}

/// Fills a rectangle, clipped to the image.
fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    let (x1, y1) = (
        x.saturating_add(w).min(img.width()),
        y.saturating_add(h).min(img.height()),
    );
    for yy in y.min(y1)..y1 {
        for xx in x.min(x1)..x1 {
            img.put_pixel(xx, yy, c);
        }
    }
}

fn fill_circle(img: &mut RgbImage, cx: u32, cy: u32, r: u32, c: Rgb<u8>) {
    let (cx, cy, r) = (i64::from(cx), i64::from(cy), i64::from(r));
    for y in (cy - r).max(0)..(cy + r + 1).min(i64::from(img.height())) {
        for x in (cx - r).max(0)..(cx + r + 1).min(i64::from(img.width())) {
            if (x - cx).pow(2) + (y - cy).pow(2) <= r * r {
                img.put_pixel(x as u32, y as u32, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_down_to_a_step_within_the_cap() {
        assert_eq!(rendered_size(700, MAX_SIZE), 640);
        assert_eq!(rendered_size(2048, ANONYMOUS_MAX_SIZE), 1024);
        assert_eq!(rendered_size(130, MAX_SIZE), MIN_SIZE);
        assert_eq!(rendered_size(512, MAX_SIZE), 512);
    }

    #[test]
    fn the_image_cache_is_bounded_in_bytes() {
        let c = cache(1 << 20);
        let big = bytes::Bytes::from(vec![0u8; 100 << 10]);
        for n in 0..40u32 {
            let id = crate::domain::ids::PacketId([n as u8; 16]);
            c.insert((Subject::Packet(id), 0, n), big.clone());
        }
        assert!(c.weight() <= 1 << 20, "{} bytes held", c.weight());
        assert!(c.len() <= 10, "{} images of 100 KB in 1 MB", c.len());
    }

    /// An invitation-like URL with 150 chars of base64url payload.
    fn invite_url() -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let token: String = (0..150).map(|i| B64[(i * 37 + 11) % 64] as char).collect();
        format!("http://127.0.0.1:8080/j/{token}")
    }

    /// Decodes every QR grid rqrr finds in a PNG; returns (ecc_level, content) pairs.
    fn decode_png(png: &[u8]) -> Vec<(u16, String)> {
        let img = image::load_from_memory(png).expect("valid png").to_luma8();
        let mut prepared = rqrr::PreparedImage::prepare(img);
        prepared
            .detect_grids()
            .iter()
            .filter_map(|g| g.decode().ok())
            .map(|(meta, content)| (meta.ecc_level, content))
            .collect()
    }

    fn dims(png: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory(png).expect("valid png");
        (img.width(), img.height())
    }

    #[test]
    fn png_round_trip_level_m() {
        let url = invite_url();
        let png = render_png(&url, DEFAULT_SIZE).unwrap();
        let (w, h) = dims(&png);
        assert!(w == h && w <= DEFAULT_SIZE && w > DEFAULT_SIZE / 2);
        // rqrr reports the raw 2-bit format field, where M = 0b00 (L=1, H=2, Q=3).
        assert_eq!(decode_png(&png), vec![(0, url)]);
    }

    #[test]
    fn size_limits() {
        let url = invite_url();
        for size in [MIN_SIZE, MAX_SIZE] {
            let (w, h) = dims(&render_png(&url, size).unwrap());
            assert!(w == h && w <= size, "{size}: {w}x{h}");
            assert_eq!(decode_png(&render_png(&url, size).unwrap())[0].1, url);
        }
        for size in [MIN_SIZE - 1, MAX_SIZE + 1, 0, u32::MAX] {
            assert!(matches!(render_png(&url, size), Err(QrError::BadSize)));
            assert!(matches!(render_svg(&url, size), Err(QrError::BadSize)));
        }
    }

    #[test]
    fn svg_document() {
        let svg = render_svg(&invite_url(), DEFAULT_SIZE).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        // Same module size as the PNG, so the same pixel width.
        let (w, _) = dims(&render_png(&invite_url(), DEFAULT_SIZE).unwrap());
        assert!(svg.contains(&format!("width=\"{w}\"")), "{}", &svg[..200]);
    }

    #[test]
    fn data_too_long() {
        let data = "x".repeat(3500);
        assert!(matches!(render_png(&data, 512), Err(QrError::DataTooLong)));
        assert!(matches!(render_svg(&data, 512), Err(QrError::DataTooLong)));
        let card = Card {
            title: "t",
            subtitle: "",
            footer: "",
            background: [0; 3],
        };
        assert!(matches!(
            render_card(&data, &card),
            Err(QrError::DataTooLong)
        ));
    }

    #[test]
    fn card_round_trip() {
        let url = invite_url();
        for bg in [[255, 255, 255], [0, 0, 0], [30, 90, 200], [250, 220, 80]] {
            let card = Card {
                title: "Rust Meetup Berlin",
                subtitle: "Monthly talks about Rust, async and embedded. Pizza included!",
                footer: "Scan to join - expires 2026-11-30",
                background: bg,
            };
            let png = render_card(&url, &card).unwrap();
            assert_eq!(dims(&png), (CARD_W, CARD_H));
            let found = decode_png(&png);
            assert!(found.contains(&(0, url.clone())), "bg {bg:?}: {found:?}");
        }
    }

    #[test]
    fn card_odd_text_does_not_panic() {
        let url = invite_url();
        let long = "Lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(40);
        let huge_word = "W".repeat(1000);
        for (title, subtitle) in [
            ("中文群组 北京", ""),
            ("", ""),
            ("   ", long.as_str()),
            ("Ünïcödé ΑΒΓ 😀", huge_word.as_str()),
            (huge_word.as_str(), "\n\t multi\nline \u{0}"),
        ] {
            let card = Card {
                title,
                subtitle,
                footer: "页脚 footer",
                background: [12, 34, 56],
            };
            let png = render_card(&url, &card).unwrap();
            assert!(decode_png(&png).contains(&(0, url.clone())), "{title}");
        }
    }

    #[test]
    fn wrap_truncates() {
        assert!(wrap("", 10, 3).is_empty());
        assert_eq!(wrap("hello world foo", 11, 3), vec!["hello world", "foo"]);
        assert_eq!(wrap("aaaa bbbb cccc dddd", 9, 1), vec!["aaaa b..."]);
        assert_eq!(wrap("abcdefghij", 4, 2), vec!["abcd", "e..."]);
        for l in wrap(&"word ".repeat(500), 33, 4) {
            assert!(l.chars().count() <= 33);
        }
    }
}
