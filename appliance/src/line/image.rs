//! An X-ray scan's image files as the appliance takes them from the drop folder: each file
//! read once through a checked descriptor ([`super::dropfile::read_regular`]), hashed, and
//! decoded within one set of limits against oversized and malicious files (the intake's
//! header check and the decoder use the same [`limits`]). These bytes are what screening
//! decodes, the report hashes, the store archives and the `evidence` command sends.

use image::ImageReader;
use sha2::{Digest, Sha256};
use std::io::Cursor;

/// Largest image file accepted from the drop folder.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest decoded image, against decompression bombs.
pub const MAX_PIXELS_SIDE: u32 = 8192;
/// Bytes the decoder may allocate.
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// One file of a scan as screening read it: once, through a checked descriptor
/// ([`super::dropfile::read_regular`]). These bytes are what is decoded, hashed,
/// archived and sent as evidence.
#[derive(Debug, Clone)]
pub struct ScanFile {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Which file it was, so that the drop folder's name is removed only while it is.
    pub id: super::dropfile::FileId,
}

impl ScanFile {
    /// Reads a dropped image file once, within [`MAX_IMAGE_BYTES`], and hashes it.
    pub fn read(path: &std::path::Path) -> Result<ScanFile, String> {
        let (bytes, id) = super::dropfile::read_regular(path, MAX_IMAGE_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(ScanFile { bytes, sha256, id })
    }
}

/// The evidence kept for a screened image: the files exactly as the X-ray machine wrote
/// them (the report carries their hashes; the store archives these bytes; the regulator's
/// `evidence` command sends the archived files).
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The one pseudo-colour image, or the high-energy half of a dual-energy pair.
    pub image: ScanFile,
    /// The low-energy half of a dual-energy pair.
    pub low_energy: Option<ScanFile>,
    /// A small JPEG for reports (made for flagged parcels only).
    pub thumbnail_jpeg: Option<Vec<u8>>,
}

impl Evidence {
    /// The files in order: the image (or high half), then the low half.
    pub fn files(&self) -> impl Iterator<Item = &ScanFile> {
        std::iter::once(&self.image).chain(self.low_energy.as_ref())
    }
}

/// The decoder's limits: at most [`MAX_PIXELS_SIDE`] a side and [`MAX_DECODE_ALLOC`] bytes.
pub fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PIXELS_SIDE);
    limits.max_image_height = Some(MAX_PIXELS_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

/// Decodes an image with limits against oversized and malicious files.
pub fn decode_image(bytes: &[u8]) -> Result<image::RgbImage, String> {
    Ok(decode_limited(bytes)?.into_rgb8())
}

fn decode_limited(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot tell the image format: {e}"))?;
    reader.limits(limits());
    reader.decode().map_err(|e| e.to_string())
}

/// A 16-bit grey channel of a dual-energy scan.
pub type Energy = image::ImageBuffer<image::Luma<u16>, Vec<u16>>;

/// A scan's image as decoded for screening.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// The one pseudo-colour image the X-ray machine wrote.
    Rgb(image::RgbImage),
    /// A dual-energy pair (16-bit transmission, 65535 = air), the same size.
    Pair { high: Energy, low: Energy },
}

impl Decoded {
    /// Width and height in pixels (of the high half, for a pair).
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Decoded::Rgb(rgb) => rgb.dimensions(),
            Decoded::Pair { high, .. } => high.dimensions(),
        }
    }

    /// The operators' pseudo-colour rendering: the image itself, or the pair's render.
    pub fn pseudo_colour(&self) -> std::borrow::Cow<'_, image::RgbImage> {
        match self {
            Decoded::Rgb(rgb) => std::borrow::Cow::Borrowed(rgb),
            Decoded::Pair { high, low } => {
                std::borrow::Cow::Owned(xraygen::pseudo_colour(high, low))
            }
        }
    }
}

/// Decodes a dual-energy pair (16-bit grey, same size) with the same limits as
/// [`decode_image`].
pub fn decode_pair(high: &[u8], low: &[u8]) -> Result<Decoded, String> {
    let grey = |bytes: &[u8], which: &str| -> Result<Energy, String> {
        let img = decode_limited(bytes).map_err(|e| format!("{which}-energy image: {e}"))?;
        if !matches!(img.color(), image::ColorType::L16 | image::ColorType::L8) {
            return Err(format!(
                "{which}-energy image is {:?}, not grey (16-bit expected)",
                img.color()
            ));
        }
        // A 16-bit image is moved out, not copied.
        Ok(img.into_luma16())
    };
    let (high, low) = (grey(high, "high")?, grey(low, "low")?);
    if high.dimensions() != low.dimensions() {
        return Err(format!(
            "the pair's halves differ in size: high {}x{}, low {}x{}",
            high.width(),
            high.height(),
            low.width(),
            low.height()
        ));
    }
    Ok(Decoded::Pair { high, low })
}

/// Reads a scan's files — each once, through a checked descriptor — hashes and decodes
/// them: one image, or a pair. Nothing is encoded here: the evidence is the files as read.
pub fn load_scan(
    scan: &crate::domain::XrayScan,
) -> Result<(ScanFile, Option<ScanFile>, Decoded), String> {
    let image = ScanFile::read(&scan.path)?;
    match &scan.low_energy {
        None => {
            let rgb = decode_image(&image.bytes)?;
            Ok((image, None, Decoded::Rgb(rgb)))
        }
        Some(low) => {
            let low = ScanFile::read(low)?;
            let pair = decode_pair(&image.bytes, &low.bytes)?;
            Ok((image, Some(low), pair))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::XrayScan;
    use std::path::{Path, PathBuf};

    fn scan(high: &Path, low: &Path) -> XrayScan {
        XrayScan {
            scan_id: "p".into(),
            path: high.to_path_buf(),
            completed: std::time::Instant::now(),
            low_energy: Some(low.to_path_buf()),
            waybill: None,
            captured_at: std::time::SystemTime::now(),
        }
    }

    fn grey(dir: &Path, name: &str, w: u32, h: u32, level: u16) -> PathBuf {
        let path = dir.join(name);
        Energy::from_fn(w, h, |x, y| image::Luma([level ^ (x * 7 + y) as u16]))
            .save(&path)
            .expect("write a 16-bit PNG");
        path
    }

    /// A pair's halves are each file's own bytes, hash and pixels.
    #[test]
    fn a_pair_loads_each_half_from_its_own_file() {
        let dir = crate::testutil::temp_dir("image-pair");
        let (high, low) = (
            grey(&dir, "p.high.png", 40, 30, 60000),
            grey(&dir, "p.low.png", 40, 30, 30000),
        );
        let (h, l, decoded) = load_scan(&scan(&high, &low)).expect("loads");
        let l = l.expect("a low half");
        for (file, path) in [(&h, &high), (&l, &low)] {
            let on_disk = std::fs::read(path).expect("the file");
            assert_eq!(file.sha256, hex::encode(Sha256::digest(&on_disk)));
            assert_eq!(file.bytes, on_disk);
        }
        let Decoded::Pair { high: hi, low: lo } = decoded else {
            panic!("a pair decodes as a pair")
        };
        assert_eq!(hi.get_pixel(3, 2).0[0], 60000 ^ 23);
        assert_eq!(lo.get_pixel(3, 2).0[0], 30000 ^ 23);
    }

    /// What is wrong with a pair is said of the half it is wrong in, the high one first.
    #[test]
    fn a_broken_pair_names_its_broken_half() {
        let dir = crate::testutil::temp_dir("image-broken-pair");
        let good = grey(&dir, "good.png", 40, 30, 100);
        let small = grey(&dir, "small.png", 20, 30, 100);
        let rgb = dir.join("rgb.png");
        image::RgbImage::new(40, 30).save(&rgb).expect("rgb");
        let garbage = dir.join("garbage.png");
        std::fs::write(&garbage, b"\x89PNG\r\n\x1a\n not a PNG").expect("garbage");
        let missing = dir.join("missing.png");
        let err = |h: &Path, l: &Path| load_scan(&scan(h, l)).expect_err("refused");
        assert!(err(&good, &rgb).starts_with("low-energy image is Rgb8, not grey"));
        assert!(err(&garbage, &good).starts_with("high-energy image: "));
        assert!(err(&good, &small).contains("differ in size: high 40x30, low 20x30"));
        let both = err(&missing, &garbage);
        assert!(both.contains("missing.png"), "{both}");
    }
}
