//! Writing labelled datasets in the layout PRODUCT.md defines: `labels.csv`
//! (`image,category,counterfeit`) beside an `images/` folder of pseudo-colour PNGs or of
//! dual-energy 16-bit pairs, and (from [`write_dataset_with`]) `boxes.csv`, the lots' boxes.
//!
//! `labels.csv` is written last (through a temporary file and a rename), so a folder with
//! a `labels.csv` is a complete dataset; an interrupted run leaves none.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;

use crate::{derive_seed, random_spec, render, render_scan_inner, Draw, Scanner};

/// The share of counterfeit parcels in a dataset from [`write_dataset`]: balanced, so a
/// classifier sees both classes equally often.
pub const DATASET_COUNTERFEIT_PROBABILITY: f64 = 0.5;

/// Why a dataset could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be created or written.
    #[error(
        "cannot write {path}: {source} (check that the folder is writable and the disk has space)"
    )]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be encoded.
    #[error("cannot encode image {path}: {source}")]
    Image {
        /// The image file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a labelled dataset in PRODUCT.md's layout: DIR/labels.csv (`image,category,counterfeit`) and DIR/images/NNNNNN.png (pseudo-colour). Calls progress(done, total) as it goes. Deterministic by seed.
///
/// Image `i` is `render(random_spec(s, 0.5), s)` with `s = derive_seed(seed, i)`, so the
/// first N images of a larger dataset with the same seed are the same images.
pub fn write_dataset(
    dir: &Path,
    count: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), Error> {
    let images = dir.join("images");
    fs::create_dir_all(&images).map_err(io(&images))?;
    let mut labels = String::from("image,category,counterfeit\n");
    for i in 0..count {
        let s = derive_seed(seed, i as u64);
        let spec = random_spec(s, DATASET_COUNTERFEIT_PROBABILITY);
        let scan = render(spec, s);
        let name = format!("images/{i:06}.png");
        write_png(&dir.join(&name), &scan.rgb)?;
        labels.push_str(&format!(
            "{name},{},{}\n",
            spec.category_key(),
            u8::from(spec.counterfeit)
        ));
        progress(i + 1, count);
    }
    let tmp = dir.join("labels.csv.tmp");
    fs::write(&tmp, labels).map_err(io(&tmp))?;
    let csv = dir.join("labels.csv");
    fs::rename(&tmp, &csv).map_err(io(&csv))
}

/// What [`write_dataset_with`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatasetOptions {
    /// The scanner profile the scans come from.
    pub scanner: Scanner,
    /// For the large profiles, also write each scan's pseudo-colour render as
    /// `images/NNNNNN.png` (labels.csv and boxes.csv still name the pair). Ignored for
    /// `Small`, whose images are pseudo-colour anyway.
    pub pseudo_colour: bool,
}

impl From<Scanner> for DatasetOptions {
    fn from(scanner: Scanner) -> DatasetOptions {
        DatasetOptions {
            scanner,
            pseudo_colour: false,
        }
    }
}

/// Writes a labelled dataset from any scanner profile, with the lots' boxes.
///
/// Image `i` is `render_scan(scanner, random_spec(s, 0.5), s)` with `s = derive_seed(seed, i)`
/// (so for `Small` the images and `labels.csv` are byte for byte those of [`write_dataset`]).
/// In DIR:
///
/// - `images/`: for `Small`, `NNNNNN.png` (8-bit pseudo-colour RGB); for the large profiles
///   the dual-energy pair `NNNNNN.high.png` and `NNNNNN.low.png` (16-bit grey, 65535 =
///   unattenuated), and with `pseudo_colour` also `NNNNNN.png` (the pseudo-colour render).
/// - `boxes.csv`: `image,category,counterfeit,x0,y0,x1,y1`, one row per lot (main lot first),
///   pixel boxes of the high-energy image with `x1`, `y1` exclusive (see [`crate::Item`]).
/// - `labels.csv`: `image,category,counterfeit` as PRODUCT.md defines it; `image` is
///   `images/NNNNNN.png` for `Small` and `images/NNNNNN.high.png;images/NNNNNN.low.png` for
///   the large profiles, the same string as in `boxes.csv`. The category is the main lot's;
///   counterfeit (0 or 1) is 1 iff any lot is counterfeit.
///
/// A `labels.csv` already in DIR is removed first; `boxes.csv` and then `labels.csv` are
/// written last, each through a temporary file and a rename, so a folder with a
/// `labels.csv` is complete. Calls progress(done, total) as it goes. Deterministic by seed.
pub fn write_dataset_with(
    dir: &Path,
    count: usize,
    seed: u64,
    options: impl Into<DatasetOptions>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), Error> {
    let DatasetOptions {
        scanner,
        pseudo_colour,
    } = options.into();
    let pairs = scanner.writes_pairs();
    let images = dir.join("images");
    fs::create_dir_all(&images).map_err(io(&images))?;
    let csv = dir.join("labels.csv");
    match fs::remove_file(&csv) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&csv)(e)),
        _ => {}
    }
    let mut labels = String::from("image,category,counterfeit\n");
    let mut boxes = String::from("image,category,counterfeit,x0,y0,x1,y1\n");
    for i in 0..count {
        let s = derive_seed(seed, i as u64);
        let spec = random_spec(s, DATASET_COUNTERFEIT_PROBABILITY);
        let scan = render_scan_inner(
            scanner,
            spec,
            s,
            Draw {
                rgb: !pairs || pseudo_colour,
                exact: false,
            },
        );
        let name = if pairs {
            let (high, low) = (
                format!("images/{i:06}.high.png"),
                format!("images/{i:06}.low.png"),
            );
            write_png16(&dir.join(&high), &scan.high)?;
            write_png16(&dir.join(&low), &scan.low)?;
            if pseudo_colour {
                write_png(&dir.join(format!("images/{i:06}.png")), &scan.rgb)?;
            }
            format!("{high};{low}")
        } else {
            let name = format!("images/{i:06}.png");
            write_png(&dir.join(&name), &scan.rgb)?;
            name
        };
        labels.push_str(&format!(
            "{name},{},{}\n",
            scan.category_key(),
            u8::from(scan.counterfeit)
        ));
        for item in &scan.items {
            boxes.push_str(&format!("{name},{}\n", item.csv_fields()));
        }
        progress(i + 1, count);
    }
    write_atomically(dir, "boxes.csv", &boxes)?;
    write_atomically(dir, "labels.csv", &labels)
}

/// Writes DIR/NAME through DIR/NAME.tmp and a rename.
fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    let tmp = dir.join(format!("{name}.tmp"));
    fs::write(&tmp, text).map_err(io(&tmp))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// Writes a 16-bit grey image as PNG (fast compression).
fn write_png16(path: &Path, img: &crate::physics::Grey16) -> Result<(), Error> {
    let file = File::create(path).map_err(io(path))?;
    let mut out = BufWriter::new(file);
    img.write_with_encoder(PngEncoder::new_with_quality(
        &mut out,
        CompressionType::Fast,
        FilterType::Adaptive,
    ))
    .map_err(|source| Error::Image {
        path: path.to_path_buf(),
        source,
    })?;
    out.flush().map_err(io(path))
}

/// Writes an 8-bit RGB image as PNG (fast compression: datasets are large, disks are not slow).
pub(crate) fn write_png(path: &Path, rgb: &image::RgbImage) -> Result<(), Error> {
    let file = File::create(path).map_err(io(path))?;
    let mut out = BufWriter::new(file);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| Error::Image {
            path: path.to_path_buf(),
            source,
        })?;
    out.flush().map_err(io(path))
}
