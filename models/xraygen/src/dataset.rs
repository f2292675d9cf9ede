//! Writing labelled datasets in the layout PRODUCT.md defines: `labels.csv`
//! (`image,category,counterfeit`) beside an `images/` folder of pseudo-colour PNGs.
//!
//! `labels.csv` is written last (through a temporary file and a rename), so a folder with
//! a `labels.csv` is a complete dataset; an interrupted run leaves none.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;

use crate::{derive_seed, random_spec, render};

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
