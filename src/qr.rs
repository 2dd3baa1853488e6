//! QR code rendering: plain PNG/SVG codes (the invitation card around one
//! is `crate::card`).
//!
//! Everything uses error-correction level M and the standard 4-module quiet zone.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Luma, Rgb, RgbImage};
use qrcode::types::QrError as LibError;
use qrcode::{render::svg, EcLevel, QrCode};

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
    /// A group's avatar (the stored JPEG).
    Avatar(crate::domain::ids::GroupId),
}

/// A rendered image's cache key: what it shows, its kind, its size, and
/// for a card what else it shows (language, avatar, days left).
pub type CacheKey = (Subject, u8, u32, u64);

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
pub(crate) const QUIET: u32 = 4;

pub(crate) fn encode(data: &str) -> Result<QrCode, QrError> {
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

pub(crate) fn encode_png(img: DynamicImage) -> Result<Vec<u8>, QrError> {
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

/// Fills a rectangle, clipped to the image.
pub(crate) fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
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

pub(crate) fn fill_circle(img: &mut RgbImage, cx: u32, cy: u32, r: u32, c: Rgb<u8>) {
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
pub(crate) mod tests {
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
            c.insert((Subject::Packet(id), 0, n, 0), big.clone());
        }
        assert!(c.weight() <= 1 << 20, "{} bytes held", c.weight());
        assert!(c.len() <= 10, "{} images of 100 KB in 1 MB", c.len());
    }

    /// An invitation-like URL with 150 chars of base64url payload.
    pub(crate) fn invite_url() -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let token: String = (0..150).map(|i| B64[(i * 37 + 11) % 64] as char).collect();
        format!("http://127.0.0.1:8080/j/{token}")
    }

    /// Decodes every QR grid rqrr finds in a PNG; returns (ecc_level, content) pairs.
    pub(crate) fn decode_png(png: &[u8]) -> Vec<(u16, String)> {
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
    }
}
