//! The X-ray viewer's pixels (`GET /parcel/{id}/pixels`): a record's archived scan decoded on
//! the appliance and sent as plain numbers, because a browser decodes a 16-bit PNG to 8 bits
//! and window and level must work on the 16-bit values. The viewer (`viewer.js`) renders
//! every tool from these on a Canvas 2D.
//!
//! The payload (`application/vnd.screenline.pixels`), all integers little-endian:
//!
//! | offset | bytes | what |
//! | --- | --- | --- |
//! | 0 | 4 | `SLPX` |
//! | 4 | 1 | version, 1 |
//! | 5 | 1 | kind: 1 a dual-energy pair (16-bit), 2 one pseudo-colour image (8-bit RGB) |
//! | 6 | 2 | 0 |
//! | 8 | 4 | width (`u32`) |
//! | 12 | 4 | height (`u32`) |
//! | 16 | … | a pair: `width × height` `u16` of the high half, then as many of the low half (transmission, 65535 = air); an image: `width × height × 3` bytes R, G, B |
//!
//! The header is 16 bytes so that the `u16` samples start aligned for a `Uint16Array`.

use crate::line::image::{decode_image, decode_pair, Decoded};
use std::path::PathBuf;

/// The payload's media type.
pub(super) const CONTENT_TYPE: &str = "application/vnd.screenline.pixels";
/// The payload's first bytes.
const MAGIC: &[u8; 4] = b"SLPX";
const VERSION: u8 = 1;
/// The header's length: the samples start here.
pub(super) const HEADER: usize = 16;

/// A kept scan, decoded.
#[derive(Debug)]
pub(super) enum Pixels {
    /// Both halves of a dual-energy pair, row by row.
    Pair {
        width: u32,
        height: u32,
        high: Vec<u16>,
        low: Vec<u16>,
    },
    /// The one pseudo-colour image a machine wrote, RGB row by row.
    Rgb {
        width: u32,
        height: u32,
        rgb: Vec<u8>,
    },
}

/// Why there are no pixels to send.
#[derive(Debug)]
pub(super) enum PixelError {
    /// The files are gone (retention, the disk budget).
    Gone,
    /// They are there but cannot be read or decoded.
    Unreadable(String),
}

impl Pixels {
    /// Reads and decodes a record's image files ([`crate::record::Record::image_files`]:
    /// one image, or a pair's high and low halves) with the intake's limits.
    pub(super) fn load(files: &[PathBuf]) -> Result<Pixels, PixelError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => PixelError::Gone,
                _ => PixelError::Unreadable(format!("{}: {e}", p.display())),
            })
        };
        match files {
            [image] => {
                let rgb = decode_image(&read(image)?).map_err(PixelError::Unreadable)?;
                let (width, height) = rgb.dimensions();
                Ok(Pixels::Rgb {
                    width,
                    height,
                    rgb: rgb.into_raw(),
                })
            }
            [high, low] => match decode_pair(&read(high)?, &read(low)?) {
                Ok(Decoded::Pair { high, low }) => {
                    let (width, height) = high.dimensions();
                    Ok(Pixels::Pair {
                        width,
                        height,
                        high: high.into_raw(),
                        low: low.into_raw(),
                    })
                }
                Ok(Decoded::Rgb(_)) => Err(PixelError::Unreadable("not a pair".into())),
                Err(e) => Err(PixelError::Unreadable(e)),
            },
            _ => Err(PixelError::Gone),
        }
    }

    /// The payload (module docs).
    pub(super) fn encode(&self) -> Vec<u8> {
        let (kind, width, height, len) = match self {
            Pixels::Pair {
                width,
                height,
                high,
                ..
            } => (1u8, *width, *height, high.len() * 4),
            Pixels::Rgb { width, height, rgb } => (2u8, *width, *height, rgb.len()),
        };
        let mut out = Vec::with_capacity(HEADER + len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, kind, 0, 0]);
        out.extend_from_slice(&width.to_le_bytes());
        out.extend_from_slice(&height.to_le_bytes());
        match self {
            Pixels::Pair { high, low, .. } => {
                for v in high.iter().chain(low) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Pixels::Rgb { rgb, .. } => out.extend_from_slice(rgb),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_sent_as_its_16_bit_values_and_an_image_as_its_colours() {
        let dir = crate::testutil::temp_dir("pixels");
        let high = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(3, 2, |x, y| {
            image::Luma([65535 - (x + 3 * y) as u16 * 1000])
        });
        let low = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(3, 2, |x, y| {
            image::Luma([1 + (x + 3 * y) as u16 * 257])
        });
        let (h, l) = (dir.join("r.high.png"), dir.join("r.low.png"));
        high.save(&h).expect("save");
        low.save(&l).expect("save");
        let bytes = Pixels::load(&[h.clone(), l.clone()])
            .expect("pair")
            .encode();
        assert_eq!(&bytes[..8], b"SLPX\x01\x01\x00\x00");
        assert_eq!(bytes[8..12], 3u32.to_le_bytes());
        assert_eq!(bytes[12..16], 2u32.to_le_bytes());
        let samples: Vec<u16> = bytes[HEADER..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(samples.len(), 12);
        assert_eq!(&samples[..6], high.as_raw().as_slice());
        assert_eq!(&samples[6..], low.as_raw().as_slice());

        let rgb = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let p = dir.join("s.png");
        rgb.save(&p).expect("save");
        let bytes = Pixels::load(std::slice::from_ref(&p))
            .expect("image")
            .encode();
        assert_eq!(bytes[5], 2);
        assert_eq!(&bytes[HEADER..], rgb.as_raw().as_slice());

        std::fs::remove_file(&l).expect("remove");
        assert!(matches!(Pixels::load(&[h, l]), Err(PixelError::Gone)));
        std::fs::write(&p, b"not an image").expect("write");
        assert!(matches!(Pixels::load(&[p]), Err(PixelError::Unreadable(_))));
    }
}
