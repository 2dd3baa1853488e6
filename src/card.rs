//! The invitation card: a 600x900 PNG with the group's avatar (round), its
//! name and description, the QR code of the invitation and the validity
//! line in the reader's language.
//!
//! Text is laid out, shaped and anti-aliased by cosmic-text (rustybuzz
//! shaping, swash rasterising, font fallback across the fonts it knows), so
//! Chinese, Latin and emoji mix on one line; long names wrap and end in an
//! ellipsis, never cut inside a character. Fonts come from the system
//! (Debian: `fonts-noto-cjk`) and from `cards.font_file`. Without a font
//! that has Chinese glyphs the server says so at start, and cards still
//! render, Chinese as the font's fallback glyph.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cosmic_text::{
    Align, Attrs, Buffer, Color, Ellipsize, EllipsizeHeightLimit, Family, FontSystem, Metrics,
    Shaping, SwashCache, Weight, Wrap,
};
use image::{DynamicImage, Rgb, RgbImage};

use crate::qr::{self, QrError};

pub const WIDTH: u32 = 600;
pub const HEIGHT: u32 = 900;
const MARGIN: u32 = 36;
const AVATAR_CY: u32 = 118;
const AVATAR_R: u32 = 64;
const TITLE_TOP: f32 = 200.0;
/// The QR panel (white, including the quiet zone) is centred in this square.
const PANEL_Y: u32 = 400;
const PANEL_MAX: u32 = 400;
const FOOTER_TOP: f32 = 826.0;

/// Saturated avatar colours; one is picked from the group's name.
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

pub struct Card<'a> {
    /// The group's name.
    pub title: &'a str,
    /// Its description (may be empty).
    pub subtitle: &'a str,
    /// The validity line, in the reader's language.
    pub footer: &'a str,
    /// RGB background colour.
    pub background: [u8; 3],
    /// The group's avatar (any size; drawn as a circle), or None for its
    /// initial on a colour.
    pub avatar: Option<&'a RgbImage>,
}

/// The fonts cards are drawn with: one font system for the process (it
/// takes up to a second to build), behind a lock (shaping needs it
/// mutably).
pub struct Fonts {
    inner: Mutex<(FontSystem, SwashCache)>,
    /// Whether a font with Chinese glyphs was found.
    pub cjk: bool,
    /// Font faces known.
    pub faces: usize,
}

static FONTS: OnceLock<Fonts> = OnceLock::new();
static FONT_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Name the font file of `cards.font_file` (before the first card).
pub fn configure(font_file: Option<&Path>) {
    let _ = FONT_FILE.set(font_file.map(Path::to_path_buf));
}

/// The fonts, loaded on first use.
pub fn fonts() -> &'static Fonts {
    FONTS.get_or_init(|| Fonts::load(FONT_FILE.get().cloned().flatten().as_deref()))
}

impl Fonts {
    fn load(font_file: Option<&Path>) -> Fonts {
        let mut db = cosmic_text::fontdb::Database::new();
        db.load_system_fonts();
        let mut preferred = None;
        if let Some(f) = font_file {
            let before = db.len();
            if let Err(e) = db.load_font_file(f) {
                tracing::error!(file = %f.display(), error = %e, "cards.font_file cannot be read");
            }
            preferred = db
                .faces()
                .skip(before)
                .find_map(|face| face.families.first().map(|(name, _)| name.clone()));
        }
        let has = |name: &str| {
            db.faces()
                .any(|f| f.families.iter().any(|(n, _)| n == name))
        };
        let family = preferred.or_else(|| {
            ["Noto Sans CJK SC", "WenQuanYi Micro Hei", "DejaVu Sans"]
                .into_iter()
                .find(|n| has(n))
                .map(str::to_string)
        });
        if let Some(f) = &family {
            db.set_sans_serif_family(f.clone());
        }
        let faces = db.len();
        let mut system = FontSystem::new_with_locale_and_db("zh-CN".into(), db);
        let cjk = missing_glyphs(&mut system, "中文字体") == 0;
        Fonts {
            inner: Mutex::new((system, SwashCache::new())),
            cjk,
            faces,
        }
    }

    /// Glyphs of `text` that no known font has.
    pub fn missing(&self, text: &str) -> usize {
        let mut g = self.lock();
        missing_glyphs(&mut g.0, text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (FontSystem, SwashCache)> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

fn attrs(bold: bool) -> Attrs<'static> {
    Attrs::new()
        .family(Family::SansSerif)
        .weight(if bold { Weight::BOLD } else { Weight::NORMAL })
}

fn missing_glyphs(system: &mut FontSystem, text: &str) -> usize {
    let mut b = Buffer::new(system, Metrics::new(20.0, 24.0));
    b.set_text(text, &attrs(false), Shaping::Advanced, None);
    b.shape_until_scroll(system, false);
    b.layout_runs()
        .flat_map(|r| r.glyphs.iter())
        .filter(|g| g.glyph_id == 0)
        .count()
}

/// Text as one paragraph: control characters (newlines included) become
/// spaces, so the line limits hold.
fn one_paragraph(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Draws `text` centred across the card from `top`, at most `max_lines`
/// lines (the last ending in an ellipsis when cut); answers the height used.
#[allow(clippy::too_many_arguments)]
fn draw_text(
    img: &mut RgbImage,
    fonts: &mut (FontSystem, SwashCache),
    text: &str,
    top: f32,
    size: f32,
    bold: bool,
    max_lines: usize,
    colour: Rgb<u8>,
) -> f32 {
    let text = one_paragraph(text);
    if text.is_empty() {
        return 0.0;
    }
    let (system, cache) = (&mut fonts.0, &mut fonts.1);
    let line_height = (size * 1.3).round();
    let mut b = Buffer::new(system, Metrics::new(size, line_height));
    b.set_size(Some((WIDTH - 2 * MARGIN) as f32), None);
    b.set_wrap(Wrap::WordOrGlyph);
    b.set_ellipsize(Ellipsize::End(EllipsizeHeightLimit::Lines(max_lines)));
    b.set_text(&text, &attrs(bold), Shaping::Advanced, Some(Align::Center));
    b.shape_until_scroll(system, false);
    let lines = b.layout_runs().count().min(max_lines);
    let bottom = top + lines as f32 * line_height;
    let [r, g, bl] = colour.0;
    let (x0, y0) = (MARGIN as i32, top as i32);
    b.draw(system, cache, Color::rgb(r, g, bl), |x, y, w, h, c| {
        let a = u32::from(c.a());
        if a == 0 {
            return;
        }
        for dy in 0..h as i32 {
            for dx in 0..w as i32 {
                let (px, py) = (x0 + x + dx, y0 + y + dy);
                if px < 0 || py < 0 || py as f32 >= bottom {
                    continue;
                }
                let (px, py) = (px as u32, py as u32);
                if px >= img.width() || py >= img.height() {
                    continue;
                }
                let d = img.get_pixel_mut(px, py);
                for (dst, src) in d.0.iter_mut().zip([c.r(), c.g(), c.b()]) {
                    *dst = ((u32::from(src) * a + u32::from(*dst) * (255 - a)) / 255) as u8;
                }
            }
        }
    });
    lines as f32 * line_height
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

/// A tiny stable hash, so one name always gets one colour.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Draws `avatar` scaled into the circle of radius `r` at (`cx`, `cy`),
/// its edge anti-aliased.
fn draw_round(img: &mut RgbImage, avatar: &RgbImage, cx: u32, cy: u32, r: u32) {
    let d = 2 * r;
    let scaled = image::imageops::resize(avatar, d, d, image::imageops::FilterType::Triangle);
    let (x0, y0) = (i64::from(cx) - i64::from(r), i64::from(cy) - i64::from(r));
    let rf = r as f32;
    for (x, y, p) in scaled.enumerate_pixels() {
        let (dx, dy) = (x as f32 + 0.5 - rf, y as f32 + 0.5 - rf);
        let coverage = (rf - (dx * dx + dy * dy).sqrt() + 0.5).clamp(0.0, 1.0);
        if coverage <= 0.0 {
            continue;
        }
        let (px, py) = (x0 + i64::from(x), y0 + i64::from(y));
        if px < 0 || py < 0 || px >= i64::from(img.width()) || py >= i64::from(img.height()) {
            continue;
        }
        let dst = img.get_pixel_mut(px as u32, py as u32);
        for (d, s) in dst.0.iter_mut().zip(p.0) {
            *d = (f32::from(s) * coverage + f32::from(*d) * (1.0 - coverage)).round() as u8;
        }
    }
}

/// The card PNG for the QR code of `data` (level M).
pub fn render(data: &str, card: &Card) -> Result<Vec<u8>, QrError> {
    let code = qr::encode(data)?;
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(card.background));
    let fg = contrast_colour(card.background);
    let mut fonts = fonts().lock();

    // The avatar, ringed in the text colour so it shows on any background.
    qr::fill_circle(&mut img, WIDTH / 2, AVATAR_CY, AVATAR_R + 4, fg);
    match card.avatar {
        Some(a) => draw_round(&mut img, a, WIDTH / 2, AVATAR_CY, AVATAR_R),
        None => {
            let colour = AVATAR_PALETTE[(fnv1a(card.title.as_bytes()) % 8) as usize];
            qr::fill_circle(&mut img, WIDTH / 2, AVATAR_CY, AVATAR_R, Rgb(colour));
            let initial: String = card
                .title
                .trim()
                .chars()
                .next()
                .map(|c| c.to_uppercase().collect())
                .unwrap_or_default();
            draw_text(
                &mut img,
                &mut fonts,
                &initial,
                (AVATAR_CY - 38) as f32,
                56.0,
                true,
                1,
                contrast_colour(colour),
            );
        }
    }

    let used = draw_text(
        &mut img, &mut fonts, card.title, TITLE_TOP, 34.0, true, 2, fg,
    );
    let room = (PANEL_Y as f32 - 12.0) - (TITLE_TOP + used + 8.0);
    let lines = ((room / (20.0 * 1.3)).floor() as usize).clamp(0, 3);
    if lines > 0 {
        draw_text(
            &mut img,
            &mut fonts,
            card.subtitle,
            TITLE_TOP + used + 8.0,
            20.0,
            false,
            lines,
            fg,
        );
    }
    draw_text(
        &mut img,
        &mut fonts,
        card.footer,
        FOOTER_TOP,
        22.0,
        false,
        2,
        fg,
    );
    drop(fonts);

    // The QR panel: white, with a 4-module quiet zone, centred in its slot.
    let modules = code.width() as u32;
    let total = modules + 2 * qr::QUIET;
    let px = (PANEL_MAX / total).max(1);
    let panel = total * px;
    let (x0, y0) = ((WIDTH - panel) / 2, PANEL_Y + (PANEL_MAX - panel) / 2);
    qr::fill_rect(&mut img, x0, y0, panel, panel, Rgb([255, 255, 255]));
    for (i, colour) in code.to_colors().iter().enumerate() {
        if *colour == qrcode::Color::Dark {
            let (mx, my) = (i as u32 % modules, i as u32 / modules);
            let (x, y) = (x0 + (qr::QUIET + mx) * px, y0 + (qr::QUIET + my) * px);
            qr::fill_rect(&mut img, x, y, px, px, Rgb([0, 0, 0]));
        }
    }
    qr::encode_png(DynamicImage::ImageRgb8(img))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qr::tests::{decode_png, invite_url};

    /// The code as a phone's camera frames it: the white panel and a band
    /// of the card around it. (Decoding the whole card with rqrr is not a
    /// fair test: quirc-style detectors take some Chinese glyphs, 周 or 回,
    /// for finder patterns and group them with the code's own; phone
    /// scanners pick finder patterns by module size.)
    pub(crate) fn decode_framed(png: &[u8]) -> Vec<(u16, String)> {
        let img = image::load_from_memory(png).expect("png");
        let framed = img.crop_imm(80, PANEL_Y - 8, WIDTH - 160, PANEL_MAX + 16);
        let mut out = Vec::new();
        framed
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        decode_png(&out)
    }

    /// Whether Chinese can be checked here: with no CJK font the checks
    /// that need one say SKIPPED, unless `QRGATE_REQUIRE_FONTS` is set.
    fn cjk_or_skip() -> bool {
        if fonts().cjk {
            return true;
        }
        assert!(
            std::env::var_os("QRGATE_REQUIRE_FONTS").is_none(),
            "no font with Chinese glyphs, and QRGATE_REQUIRE_FONTS is set (install fonts-noto-cjk)"
        );
        eprintln!("SKIPPED: no font with Chinese glyphs (install fonts-noto-cjk)");
        false
    }

    fn card<'a>(title: &'a str, subtitle: &'a str, avatar: Option<&'a RgbImage>) -> Card<'a> {
        Card {
            title,
            subtitle,
            footer: "该二维码7天内(12月13日前)有效",
            background: [30, 90, 200],
            avatar,
        }
    }

    #[test]
    fn chinese_has_glyphs_and_long_names_still_leave_a_readable_code() {
        if !cjk_or_skip() {
            return;
        }
        assert_eq!(fonts().missing("徒步小组 Hikers 该二维码有效"), 0);
        let url = invite_url();
        let avatar =
            RgbImage::from_fn(300, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let long = "徒步小组".repeat(30);
        for (title, subtitle, a) in [
            ("徒步小组 Hikers", "每周六早上八点在山脚集合", Some(&avatar)),
            (long.as_str(), long.as_str(), Some(&avatar)),
            ("Rust Meetup Berlin", "", None),
        ] {
            let png = render(&url, &card(title, subtitle, a)).expect("renders");
            let img = image::load_from_memory(&png).expect("png");
            assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
            assert!(decode_framed(&png).contains(&(0, url.clone())), "{title}");
        }
    }

    #[test]
    fn text_is_drawn_anti_aliased_within_its_lines() {
        let url = invite_url();
        let png = render(&url, &card("Hikers", "", None)).expect("renders");
        let img = image::load_from_memory(&png).expect("png").to_rgb8();
        // The title band holds ink and in-between shades (anti-aliasing).
        let bg = Rgb([30u8, 90, 200]);
        let band: Vec<&Rgb<u8>> = (200..250)
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y))
            .collect();
        let ink = band.iter().filter(|p| ***p == Rgb([255, 255, 255])).count();
        let shades = band
            .iter()
            .filter(|p| ***p != bg && ***p != Rgb([255, 255, 255]))
            .count();
        assert!(ink > 100 && shades > 50, "ink {ink}, shades {shades}");
    }

    #[test]
    fn odd_text_does_not_panic() {
        let url = invite_url();
        let long = "Lorem ipsum dolor sit amet ".repeat(40);
        let huge_word = "W".repeat(1000);
        for (title, subtitle) in [
            ("", ""),
            ("   ", long.as_str()),
            ("Ünïcödé ΑΒΓ 😀", huge_word.as_str()),
            (huge_word.as_str(), "\n\t multi\nline \u{0}"),
            ("\u{202e}gnp.exe", "\u{200b}"),
        ] {
            let png = render(&url, &card(title, subtitle, None)).expect("renders");
            assert!(decode_framed(&png).contains(&(0, url.clone())), "{title}");
        }
        let data = "x".repeat(3500);
        assert!(matches!(
            render(&data, &card("t", "", None)),
            Err(QrError::DataTooLong)
        ));
    }

    #[test]
    fn the_code_decodes_on_any_background() {
        let url = invite_url();
        let name = format!("徒步小组 Hikers {}", "周末登山".repeat(12));
        for i in 0..16u32 {
            let b = *blake3::hash(&i.to_le_bytes()).as_bytes();
            let c = Card {
                background: [b[0], b[1], b[2]],
                ..card(&name, "回家", None)
            };
            let png = render(&url, &c).expect("renders");
            assert!(
                decode_framed(&png).contains(&(0, url.clone())),
                "{:?}",
                c.background
            );
        }
    }

    #[test]
    fn one_paragraph_keeps_characters_whole() {
        assert_eq!(one_paragraph(" a\nb\t\u{0}c  "), "a b c");
        assert_eq!(one_paragraph("徒步\n小组"), "徒步 小组");
    }
}
