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

#![deny(missing_docs)]

mod dataset;
mod goods;
mod parcel;
mod physics;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use dataset::{write_dataset, Error, DATASET_COUNTERFEIT_PROBABILITY};
pub use physics::pseudo_colour;

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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let width = rng.gen_range(224..=288);
    let height = rng.gen_range(224..=288);
    let mut canvas = physics::Canvas::new(width, height);
    parcel::pack(&mut canvas, spec, &mut rng);
    let (high, low) = canvas.expose(&mut rng);
    let rgb = pseudo_colour(&high, &low);
    Scan { rgb, high, low }
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
