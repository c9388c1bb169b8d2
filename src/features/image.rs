//! Images: decoding PNG and JPEG to 8-bit RGB, and resizing.
//!
//! Grey images are replicated to three channels, transparency is composited over white, 16-bit
//! samples are reduced to 8 bits, palettes expanded. Resizing is separable bilinear
//! interpolation with a support that widens when shrinking (antialiasing), as PIL's
//! `Image.resize(..., BILINEAR)` does, in PIL's fixed-point arithmetic (weights with 22
//! fractional bits, sums rounded and clipped to 8 bits after each pass), so that the pixels are
//! PIL's own (`tests/resize_golden.rs`).

use std::path::Path;

use crate::error::{Error, Result};

/// An 8-bit RGB image, row-major `[height, width, 3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Largest accepted image side and pixel count (decoding refuses bigger headers up front).
pub const MAX_SIDE: usize = 16_384;
pub const MAX_PIXELS: usize = 64 << 20;
/// Largest image file read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

impl Image {
    /// A grey image replicated to RGB.
    pub fn from_grey(width: usize, height: usize, grey: &[u8]) -> Self {
        Image {
            width,
            height,
            rgb: grey.iter().flat_map(|&g| [g, g, g]).collect(),
        }
    }

    /// Decodes a PNG or JPEG file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = crate::util::read_limited(path, MAX_FILE_BYTES, "an image file")?;
        Self::decode(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    }

    /// Decodes PNG or JPEG bytes (by their signature).
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            decode_png(bytes)
        } else if bytes.starts_with(&[0xff, 0xd8]) {
            decode_jpeg(bytes)
        } else {
            Err("neither a PNG nor a JPEG file".into())
        }
    }

    /// The image resized to `width × height` (PIL-style bilinear, see the module docs).
    pub fn resize(&self, width: usize, height: usize) -> Image {
        if width == self.width && height == self.height {
            return self.clone();
        }
        // horizontal pass, then vertical, each rounded to 8 bits
        let hcoef = coefficients(self.width, width);
        let mut tmp = vec![0u8; self.height * width * 3];
        for y in 0..self.height {
            let src = &self.rgb[y * self.width * 3..(y + 1) * self.width * 3];
            for (x, (start, w)) in hcoef.iter().enumerate() {
                for c in 0..3 {
                    let v: i32 = w
                        .iter()
                        .enumerate()
                        .map(|(i, &k)| k * src[(start + i) * 3 + c] as i32)
                        .sum();
                    tmp[(y * width + x) * 3 + c] = clip8(v);
                }
            }
        }
        let vcoef = coefficients(self.height, height);
        let mut out = vec![0u8; height * width * 3];
        for (y, (start, w)) in vcoef.iter().enumerate() {
            for x in 0..width {
                for c in 0..3 {
                    let v: i32 = w
                        .iter()
                        .enumerate()
                        .map(|(i, &k)| k * tmp[((start + i) * width + x) * 3 + c] as i32)
                        .sum();
                    out[(y * width + x) * 3 + c] = clip8(v);
                }
            }
        }
        Image {
            width,
            height,
            rgb: out,
        }
    }

    /// The backbone's input: `(v − 127) / 128`, `[height, width, 3]`.
    pub fn normalized(&self) -> Vec<f32> {
        self.rgb
            .iter()
            .map(|&v| (v as f32 - 127.0) / 128.0)
            .collect()
    }
}

/// A channel value composited over a white background with alpha `a`.
fn over_white(v: u8, a: u8) -> u8 {
    ((v as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8
}

/// Fractional bits of PIL's fixed-point resampling weights (8-bit images).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A fixed-point sum to 8 bits, as PIL does: add one half, shift, clip.
fn clip8(v: i32) -> u8 {
    let v = v.saturating_add(1 << (PRECISION_BITS - 1));
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// For each output position: the first input index and the normalised weights, in PIL's fixed
/// point (rounded half away from zero).
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support is 1
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).max(0.0)) as usize;
            let xmax = ((center + support + 0.5) as usize).min(input);
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| (1.0 - ((x as f64 - center + 0.5) / filterscale).abs()).max(0.0))
                .collect();
            let total: f64 = w.iter().sum();
            if total > 0.0 {
                w.iter_mut().for_each(|x| *x /= total);
            }
            let one = (1u32 << PRECISION_BITS) as f64;
            let fixed = w
                .into_iter()
                .map(|x| {
                    if x < 0.0 {
                        (x * one - 0.5) as i32
                    } else {
                        (x * one + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pixels per byte of input beyond which a header's size cannot be honest: deflate (PNG) tops
/// out near 1032:1 on bytes, which hold up to 8 pixels at 1 bit per pixel, and a JPEG needs at
/// least a bit or so per 8x8 block.
const MAX_PNG_PIXELS_PER_BYTE: usize = 1100 * 8;
const MAX_JPEG_PIXELS_PER_BYTE: usize = 2048;

/// Checks a header's size against the caps and against what `len` bytes can encode, before
/// anything is allocated for the pixels.
fn check_size(w: usize, h: usize, len: usize, per_byte: usize) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("image has no pixels ({w}x{h})"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w * h > MAX_PIXELS {
        return Err(format!(
            "image of {w}x{h} exceeds the limit of {MAX_SIDE} per side and {MAX_PIXELS} pixels"
        ));
    }
    if w * h > len.saturating_mul(per_byte) {
        return Err(format!(
            "header claims {w}x{h} pixels, more than a {len}-byte file can encode: truncated or forged"
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Image, String> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("unreadable PNG: {e}"))?;
    let info = reader.info();
    check_size(
        info.width as usize,
        info.height as usize,
        bytes.len(),
        MAX_PNG_PIXELS_PER_BYTE,
    )?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("unreadable PNG: {e}"))?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let data = &buf[..frame.buffer_size()];
    let rgb: Vec<u8> = match frame.color_type {
        png::ColorType::Rgb => data.to_vec(),
        png::ColorType::Rgba => data
            .chunks_exact(4)
            .flat_map(|p| {
                [
                    over_white(p[0], p[3]),
                    over_white(p[1], p[3]),
                    over_white(p[2], p[3]),
                ]
            })
            .collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => data
            .chunks_exact(2)
            .flat_map(|p| {
                let g = over_white(p[0], p[1]);
                [g, g, g]
            })
            .collect(),
        png::ColorType::Indexed => return Err("indexed PNG was not expanded".into()),
    };
    if rgb.len() != w * h * 3 {
        return Err("PNG data does not match its size".into());
    }
    Ok(Image {
        width: w,
        height: h,
        rgb,
    })
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Image, String> {
    use zune_core::colorspace::ColorSpace;
    let opts = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut dec =
        zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), opts);
    dec.decode_headers()
        .map_err(|e| format!("unreadable JPEG: {e:?}"))?;
    let info = dec.info().ok_or("JPEG without a header")?;
    let (w, h) = (info.width as usize, info.height as usize);
    check_size(w, h, bytes.len(), MAX_JPEG_PIXELS_PER_BYTE)?;
    let rgb = dec
        .decode()
        .map_err(|e| format!("unreadable JPEG: {e:?}"))?;
    if rgb.len() != w * h * 3 {
        return Err("JPEG data does not match its size".into());
    }
    Ok(Image {
        width: w,
        height: h,
        rgb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_constant_images_and_averages_when_shrinking() {
        let img = Image {
            width: 4,
            height: 2,
            rgb: vec![100; 4 * 2 * 3],
        };
        let r = img.resize(7, 5);
        assert!(r.rgb.iter().all(|&v| v == 100));
        // 2x shrink of a 0/200 stripe, PIL's triangle filter with support 2 (by hand): output 0
        // is centred on input 1.0 and weighs inputs 0,1,2 by 0.75,0.75,0.25 -> 200*0.75/1.75 =
        // 85.7; output 1 weighs inputs 1,2,3 by 0.25,0.75,0.75 -> 200*1.0/1.75 = 114.3.
        let mut rgb = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                let v = if x % 2 == 0 { 0 } else { 200 };
                rgb.extend([v, v, v]);
            }
        }
        let s = Image {
            width: 4,
            height: 2,
            rgb,
        }
        .resize(2, 1);
        assert_eq!(s.rgb, vec![86, 86, 86, 114, 114, 114]);
    }

    #[test]
    fn upscaling_interpolates_between_pixels() {
        let img = Image {
            width: 2,
            height: 1,
            rgb: vec![0, 0, 0, 200, 200, 200],
        };
        let r = img.resize(4, 1);
        // centres at 0.25, 0.75, 1.25, 1.75 input pixels: 0, 50, 150, 200
        let got: Vec<u8> = r.rgb.iter().step_by(3).copied().collect();
        assert_eq!(got, vec![0, 50, 150, 200]);
    }

    #[test]
    fn bad_bytes_are_reported() {
        assert!(Image::decode(b"GIF89a")
            .unwrap_err()
            .contains("neither a PNG nor a JPEG"));
        assert!(Image::decode(b"\x89PNG\r\n\x1a\n\0\0")
            .unwrap_err()
            .contains("unreadable PNG"));
        assert!(Image::decode(&[0xff, 0xd8, 0xff, 0x00])
            .unwrap_err()
            .contains("unreadable JPEG"));
    }
}
