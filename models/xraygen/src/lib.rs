//! Deterministic synthetic X-ray parcel generator.
//!
//! Screenline has no library of real scans to train on or to demo with, so this crate
//! simulates a dual-energy parcel scanner: it packs a shipping carton with goods of one of
//! the regulator's categories, computes the attenuation at two energies, adds photon noise,
//! and renders the operators' pseudo-colour image. Everything is a pure function of a seed
//! (ChaCha8), so a dataset, a demo run or a test image can be reproduced exactly.
//!
//! Counterfeit parcels carry a deliberate, documented signature (see [`render`] and
//! `models/screenline-ref-0.1/README.md`): many identical unpackaged items in a tight grid,
//! where genuine parcels hold 1–3 items each in its own retail box.
//!
//! [`render`] draws the small scans every earlier dataset and model used. [`render_scan`]
//! draws a scan on any [`Scanner`] profile — the small one, or a line-sized machine with
//! several lots of goods per parcel — and returns where each lot is ([`Item`] boxes).
//! `models/xraygen/PROFILES.md` lists the profiles' parameters and render times.

#![deny(missing_docs)]

mod dataset;
mod goods;
mod parcel;
mod physics;
mod scanner;
mod scene;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use dataset::{
    write_dataset, write_dataset_with, DatasetOptions, Error, DATASET_COUNTERFEIT_PROBABILITY,
};
pub use physics::pseudo_colour;
pub use scanner::{Detector, Difficulty, Profile, Scanner};

/// The regulator's priority categories, in manifest/label order.
pub const CATEGORY_KEYS: [&str; 16] = [
    "agri_inputs",
    "food",
    "medicine",
    "cosmetics",
    "medical_devices",
    "electronics",
    "auto_parts",
    "decoration",
    "explosive_precursors",
    "childrens_products",
    "apparel_footwear",
    "bags_leather",
    "tobacco",
    "ppe",
    "publications",
    "other",
];

/// What a simulated parcel contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParcelSpec {
    /// Index into [`CATEGORY_KEYS`]; an index past the end renders as `other`.
    pub category: usize,
    /// Whether the parcel is packed the way counterfeit shipments are.
    pub counterfeit: bool,
}

impl ParcelSpec {
    /// The category's key, as used in manifests, reports and datasets.
    pub fn category_key(&self) -> &'static str {
        CATEGORY_KEYS[self.category.min(CATEGORY_KEYS.len() - 1)]
    }
}

/// Looks up a category key's index in [`CATEGORY_KEYS`].
pub fn category_index(key: &str) -> Option<usize> {
    CATEGORY_KEYS.iter().position(|k| *k == key)
}

/// One simulated scan: the pseudo-colour rendering and the dual-energy channels it was made from.
pub struct Scan {
    /// Pseudo-colour image (organic orange, mixed green, metal blue, dense dark, air white).
    pub rgb: image::RgbImage,
    /// High-energy transmission, 65535 = unattenuated.
    pub high: image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
    /// Low-energy transmission, 65535 = unattenuated; always attenuated more than `high`.
    pub low: image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
}

/// Renders one parcel deterministically from (spec, seed).
///
/// The image is 224–288 pixels on each side: a carton (slightly turned and off-centre)
/// holding the goods, a few pieces of clutter, and photon noise. A genuine parcel holds
/// 1–3 items in retail boxes with inserts; a counterfeit one 6–12 identical items in a
/// tight regular grid without retail packaging. The same (spec, seed) always gives the
/// same bytes; the random stream is ChaCha8, the same on every platform.
pub fn render(spec: ParcelSpec, seed: u64) -> Scan {
    render_small(spec, seed).0
}

/// The `Small` scanner's scan and its lots' pixel boxes.
fn render_small(spec: ParcelSpec, seed: u64) -> (Scan, Vec<physics::PixelBox>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let width = rng.gen_range(224..=288);
    let height = rng.gen_range(224..=288);
    let mut canvas = physics::Canvas::new(width, height);
    let lots = parcel::pack(&mut canvas, spec, &mut rng);
    let (high, low) = canvas.expose(&mut rng);
    let rgb = pseudo_colour(&high, &low);
    (Scan { rgb, high, low }, lots)
}

/// One lot of goods in a scan and where it is: its axis-aligned bounding box in pixels of
/// the high-energy image (the same pixels in the low-energy and pseudo-colour images).
///
/// Columns `x0..x1` and rows `y0..y1`: `x1` and `y1` are **exclusive**, so the box is
/// `x1 − x0` by `y1 − y0` pixels, and `x0 < x1 ≤ width`, `y0 < y1 ≤ height` (clipped to the
/// image). The box is drawn around the lot's footprint: a genuine lot's retail box, or the
/// union of a counterfeit grid's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// Index into [`CATEGORY_KEYS`].
    pub category: usize,
    /// Whether this lot is packed the counterfeit way (a tight grid of identical,
    /// unpackaged items).
    pub counterfeit: bool,
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl Item {
    /// The category's key, as in datasets.
    pub fn category_key(&self) -> &'static str {
        CATEGORY_KEYS[self.category.min(CATEGORY_KEYS.len() - 1)]
    }

    /// The item as `boxes.csv` has it after the image column:
    /// `category,counterfeit,x0,y0,x1,y1` (counterfeit `0`/`1`).
    pub fn csv_fields(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.category_key(),
            u8::from(self.counterfeit),
            self.x0,
            self.y0,
            self.x1,
            self.y1
        )
    }

    /// The box's area in pixels.
    pub fn area(&self) -> u64 {
        u64::from(self.x1.saturating_sub(self.x0)) * u64::from(self.y1.saturating_sub(self.y0))
    }
}

/// A scan from any [`Scanner`] profile, with its lots' boxes and the parcel's label.
///
/// `items[0]` is the parcel's main lot: the largest box (no other box is larger). The
/// parcel's label follows from its lots: `category` is the main lot's, `counterfeit` is
/// true iff any lot is counterfeit.
pub struct ScanWithItems {
    /// The profile the scan was made on.
    pub scanner: Scanner,
    /// Pseudo-colour image, as [`Scan::rgb`].
    pub rgb: image::RgbImage,
    /// High-energy transmission, 65535 = unattenuated.
    pub high: image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
    /// Low-energy transmission, 65535 = unattenuated. On the large profiles `low <= high`
    /// at every pixel.
    pub low: image::ImageBuffer<image::Luma<u16>, Vec<u16>>,
    /// The lots, main lot first. Never empty.
    pub items: Vec<Item>,
    /// The parcel's category: the main lot's (index into [`CATEGORY_KEYS`]).
    pub category: usize,
    /// The parcel's counterfeit label: whether any lot is counterfeit.
    pub counterfeit: bool,
}

impl ScanWithItems {
    /// The parcel's category key, as written to `labels.csv`.
    pub fn category_key(&self) -> &'static str {
        CATEGORY_KEYS[self.category.min(CATEGORY_KEYS.len() - 1)]
    }

    /// The images without the boxes.
    pub fn into_scan(self) -> Scan {
        Scan {
            rgb: self.rgb,
            high: self.high,
            low: self.low,
        }
    }
}

/// Renders one parcel on `scanner` deterministically from (spec, seed), with its lots' boxes.
///
/// - [`Scanner::Small`]: exactly the images of [`render`]`(spec, seed)`. The lots are the
///   parcel's retail boxes (1–3, genuine) or its one counterfeit grid, all of
///   `spec.category`; the largest is `items[0]`.
/// - [`Scanner::S6550`], [`Scanner::S100100`]: a line-sized scan (see
///   `models/xraygen/PROFILES.md`) of a carton holding several lots of different categories.
///   The main (largest) lot has `spec.category` and is counterfeit iff `spec.counterfeit`;
///   each other lot has another category and is counterfeit with the profile's fixed
///   [`Difficulty::secondary_counterfeit_probability`], so the parcel's `counterfeit` label
///   can be true for a genuine `spec`.
///
/// An index past the end of [`CATEGORY_KEYS`] renders as `other`. The same (scanner, spec,
/// seed) always gives the same bytes.
pub fn render_scan(scanner: Scanner, spec: ParcelSpec, seed: u64) -> ScanWithItems {
    render_scan_inner(scanner, spec, seed, Draw::default())
}

/// What [`render_scan_inner`] draws besides the pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Draw {
    /// The pseudo-colour image (the large profiles leave it 0 × 0 without).
    pub(crate) rgb: bool,
    /// Every secondary lot genuine ([`render_scan_exact`]).
    pub(crate) exact: bool,
}

impl Default for Draw {
    fn default() -> Draw {
        Draw {
            rgb: true,
            exact: false,
        }
    }
}

/// The parcel holding exactly what `spec` says: [`render_scan`]'s carton, slots and lot
/// categories, but every secondary lot genuine, so the parcel is counterfeit iff
/// `spec.counterfeit` (a scan with no counterfeit secondary lot is [`render_scan`]'s, byte
/// for byte). For traffic
/// whose mix decides which parcels are counterfeit (the demo's), where a dataset's share of
/// counterfeit secondary lots would be counterfeit parcels nobody sent.
pub fn render_scan_exact(scanner: Scanner, spec: ParcelSpec, seed: u64) -> ScanWithItems {
    let draw = Draw {
        exact: true,
        ..Draw::default()
    };
    render_scan_inner(scanner, spec, seed, draw)
}

/// [`render_scan`], drawing what `draw` says.
pub(crate) fn render_scan_inner(
    scanner: Scanner,
    spec: ParcelSpec,
    seed: u64,
    draw: Draw,
) -> ScanWithItems {
    if scanner != Scanner::Small {
        return scene::render(scanner, spec, seed, draw);
    }
    let (scan, boxes) = render_small(spec, seed);
    let category = spec.category.min(CATEGORY_KEYS.len() - 1);
    let mut items: Vec<Item> = boxes
        .iter()
        .map(|b| Item {
            category,
            counterfeit: spec.counterfeit,
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        })
        .collect();
    // Largest first (stable): the main lot.
    items.sort_by_key(|i| std::cmp::Reverse(i.area()));
    ScanWithItems {
        scanner,
        rgb: scan.rgb,
        high: scan.high,
        low: scan.low,
        items,
        category,
        counterfeit: spec.counterfeit,
    }
}

/// Draws a random spec (uniform category, counterfeit with probability p) from the seed.
///
/// `counterfeit_probability` is clamped to 0..=1 (NaN counts as 0).
pub fn random_spec(seed: u64, counterfeit_probability: f64) -> ParcelSpec {
    // A different stream from render(…, seed), so the spec does not correlate with the layout.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5bd1_e995_0000_5bec);
    let p = if counterfeit_probability.is_nan() {
        0.0
    } else {
        counterfeit_probability.clamp(0.0, 1.0)
    };
    ParcelSpec {
        category: rng.gen_range(0..CATEGORY_KEYS.len()),
        counterfeit: rng.gen_bool(p),
    }
}

/// A well-mixed 64-bit value from a seed and an index (SplitMix64), for per-item seeds.
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_scanner;
