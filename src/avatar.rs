//! Group avatars: an upload is decoded (PNG or JPEG only, its declared type
//! matching its bytes, at most 4096x4096) and re-encoded as a square JPEG of
//! at most 256x256, so no uploaded byte is ever served back. Stored in
//! chunks well under sled's large-value threshold (`storage::avatars`).

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

/// The largest width or height an upload may declare.
pub const MAX_DIMENSION: u32 = 4096;
/// The stored avatar's side, at most.
pub const SIDE: u32 = 256;
const JPEG_QUALITY: u8 = 85;

/// Why an upload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("an avatar must be image/png or image/jpeg")]
    UnsupportedType,
    #[error("the image is {width}x{height}: at most {MAX_DIMENSION}x{MAX_DIMENSION}")]
    TooLarge { width: u32, height: u32 },
    #[error("the body is not a valid {0} image")]
    Invalid(&'static str),
}

/// The image format a `Content-Type` names (parameters ignored).
pub fn format_of(content_type: &str) -> Result<ImageFormat, Refused> {
    match content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "image/png" => Ok(ImageFormat::Png),
        "image/jpeg" | "image/jpg" => Ok(ImageFormat::Jpeg),
        _ => Err(Refused::UnsupportedType),
    }
}

fn name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        _ => "JPEG",
    }
}

/// Decode an upload of `content_type` and answer the JPEG to store.
pub fn normalize(content_type: &str, bytes: &[u8]) -> Result<Vec<u8>, Refused> {
    let format = format_of(content_type)?;
    // The bytes must be what the type says (an HTML or SVG page sent as
    // image/png is refused here, before any decoder runs on it).
    if image::guess_format(bytes).ok() != Some(format) {
        return Err(Refused::Invalid(name(format)));
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|_| Refused::Invalid(name(format)))?;
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(Refused::TooLarge { width, height });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|_| Refused::Invalid(name(format)))?;
    let rgba = decoded.to_rgba8();
    // Transparency on white, the square middle, then at most SIDE pixels.
    let rgb = RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = u32::from(p[3]);
        let mix = |c: u8| ((u32::from(c) * a + 255 * (255 - a)) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    });
    let side = rgb.width().min(rgb.height()).max(1);
    let (x, y) = ((rgb.width() - side) / 2, (rgb.height() - side) / 2);
    let square = image::imageops::crop_imm(&rgb, x, y, side, side).to_image();
    let out_side = side.min(SIDE);
    let small = if out_side == side {
        square
    } else {
        image::imageops::resize(
            &square,
            out_side,
            out_side,
            image::imageops::FilterType::Lanczos3,
        )
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode_image(&small)
        .map_err(|_| Refused::Invalid(name(format)))?;
    Ok(jpeg)
}

/// A stored avatar, decoded (for the card).
pub fn decode(jpeg: &[u8]) -> Option<RgbImage> {
    image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg)
        .ok()
        .map(|i| i.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([
                (x % 256) as u8,
                (y % 256) as u8,
                128,
                if x < 4 { 0 } else { 255 },
            ])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("png");
        out
    }

    #[test]
    fn uploads_become_small_square_jpegs() {
        for (w, h) in [(1000, 600), (64, 64), (257, 3000)] {
            let out = normalize("image/png", &png(w, h)).expect("accepted");
            assert_eq!(image::guess_format(&out).ok(), Some(ImageFormat::Jpeg));
            let img = decode(&out).expect("decodes");
            let side = w.min(h).min(SIDE);
            assert_eq!((img.width(), img.height()), (side, side), "{w}x{h}");
            assert!(out.len() < 40_000, "{} bytes", out.len());
        }
        let jpeg = normalize("image/png", &png(300, 300)).expect("png");
        assert!(normalize("image/jpeg; charset=binary", &jpeg).is_ok());
    }

    #[test]
    fn what_is_refused() {
        let p = png(10, 10);
        assert_eq!(
            normalize("image/svg+xml", b"<svg/>"),
            Err(Refused::UnsupportedType)
        );
        assert_eq!(
            normalize("text/html", b"<html>"),
            Err(Refused::UnsupportedType)
        );
        assert_eq!(
            normalize("image/gif", b"GIF89a"),
            Err(Refused::UnsupportedType)
        );
        // the type must match the bytes
        assert_eq!(
            normalize("image/png", b"<html><script>"),
            Err(Refused::Invalid("PNG"))
        );
        assert_eq!(normalize("image/jpeg", &p), Err(Refused::Invalid("JPEG")));
        assert_eq!(
            normalize("image/png", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            Err(Refused::Invalid("PNG"))
        );
        // a flipped byte in a chunk fails its CRC
        let mut bad = p.clone();
        let at = bad.len() - 20;
        bad[at] ^= 0xff;
        assert_eq!(normalize("image/png", &bad), Err(Refused::Invalid("PNG")));
        // truncated
        assert_eq!(
            normalize("image/png", &p[..p.len() / 2]),
            Err(Refused::Invalid("PNG"))
        );
    }

    #[test]
    fn huge_declared_dimensions_are_refused_before_decoding() {
        // A PNG header claiming 60000x60000 (the CRC of IHDR recomputed).
        let mut p = png(8, 8);
        p[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        p[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            normalize("image/png", &p),
            Err(Refused::TooLarge {
                width: 60_000,
                height: 60_000
            })
        );
        // A JPEG whose frame header says 65000x65000.
        let mut j = normalize("image/png", &png(16, 16)).expect("jpeg");
        let sof = j
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("a baseline frame");
        j[sof + 5..sof + 7].copy_from_slice(&65_000u16.to_be_bytes());
        j[sof + 7..sof + 9].copy_from_slice(&65_000u16.to_be_bytes());
        assert_eq!(
            normalize("image/jpeg", &j),
            Err(Refused::TooLarge {
                width: 65_000,
                height: 65_000
            })
        );
    }

    /// CRC-32 (ISO-HDLC), as PNG chunks carry it.
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for b in data {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
