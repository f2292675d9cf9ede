//! Scanner profiles: the machines a scan can come from.
//!
//! A profile fixes everything a vendor's machine decides — image width, the pixel pitch
//! across and along the belt, detector noise, the energy response — and how hard its
//! scenes are (how many lots of goods a parcel holds, how much they overlap, how much
//! clutter). Callers choose a [`Scanner`]; they cannot tune its parameters. The numbers are
//! listed here and in `models/xraygen/PROFILES.md`.
//!
//! The two large profiles are modelled on two common classes of parcel scanner (a 65 × 50 cm
//! tunnel and a 100 × 100 cm tunnel). They are plausible, not any vendor's specification.

use std::fmt;

/// A simulated X-ray machine. [`Scanner::Small`] (the default) is the scanner every earlier
/// dataset, model and test was made with; the two others are line-sized machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scanner {
    /// Key `"small"`: today's scans. 224–288 px a side, square pixels of about 2 mm, one
    /// category per parcel (1–3 retail boxes, or one counterfeit grid), 0–3 clutter, photon
    /// noise of 20 000 / 12 000 photons per pixel, no read noise. Pseudo-colour datasets.
    /// [`crate::render`] draws exactly these scans.
    #[default]
    Small,
    /// Key `"6550"`: a 650 × 500 mm tunnel, 812 px across the belt at 0.8 mm, 1.0 mm per line
    /// along it (pixel aspect 1.25); 9 000 / 5 000 photons, read noise 0.08 % of full scale,
    /// column gain spread 0.2 %; softer spectrum (high-energy gain 0.95, ratio exponent 0.97,
    /// hardening 0.05). Scenes: 2–3 lots of different categories, slots grown up to 10 % into
    /// their neighbours, 2–5 pieces of clutter, a secondary lot counterfeit with p = 0.10.
    S6550,
    /// Key `"100100"`: a 1000 × 1000 mm tunnel, 1250 px across the 900 mm usable belt at 0.72 mm,
    /// 0.8 mm per line (pixel aspect 1.11); 5 000 / 2 800 photons, read noise 0.15 %, column
    /// gain spread 0.4 %; harder spectrum (high-energy gain 0.85, ratio exponent 1.08,
    /// hardening 0.10). Scenes: 3–5 lots of different categories, slots grown up to 30 % into
    /// their neighbours, 4–9 pieces of clutter, a secondary lot counterfeit with p = 0.10.
    S100100,
}

/// How a profile's detector samples and reads out the scene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    /// Image width in pixels (across the belt): smallest and largest, inclusive.
    pub width_px: (u32, u32),
    /// Image height in pixels (along the belt, one row per detector line): smallest and
    /// largest, inclusive. For the large profiles it follows the parcel's length.
    pub height_px: (u32, u32),
    /// Millimetres per pixel across the belt (detector pitch). Nominal for `Small`.
    pub pitch_across_mm: f32,
    /// Millimetres per pixel along the belt (belt speed ÷ line rate). Nominal for `Small`.
    pub pitch_along_mm: f32,
    /// Photons per pixel reaching an empty high-energy detector (sets the photon noise).
    pub photons_high: f32,
    /// Photons per pixel reaching an empty low-energy detector.
    pub photons_low: f32,
    /// Electronic read noise, standard deviation as a fraction of full scale (both channels).
    pub read_noise: f32,
    /// Residual per-column gain after flat-field calibration: standard deviation, fraction.
    pub column_gain_spread: f32,
    /// Energy response: the high-energy attenuation relative to the reference materials
    /// (below 1: a harder spectrum, things look thinner).
    pub high_gain: f32,
    /// Energy response: the low/high attenuation ratio `R` is read as `R^ratio_exponent`
    /// (above 1: materials are separated more; below 1: less).
    pub ratio_exponent: f32,
    /// Energy response: beam hardening; the ratio's excess over 1 is divided by
    /// `1 + hardening · A_high`, so thick objects look less metallic.
    pub hardening: f32,
}

/// How hard a profile's scenes are. Fixed per profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difficulty {
    /// Lots of goods per parcel, smallest and largest, inclusive. A lot is one group of goods
    /// of one category: an item in its own retail box (genuine) or a tight grid of identical
    /// unpackaged items (counterfeit). In the large profiles every lot of a parcel has a
    /// different category.
    pub lots: (usize, usize),
    /// How far a lot's slot may grow into its neighbours (fraction of its size), so that
    /// lots overlap in projection. 0 for `Small` (retail boxes may still touch when turned).
    pub overlap: f32,
    /// Pieces of clutter per parcel (coins, pens, keys, tape, cables, paper; and for the
    /// large profiles also packing paper, air pillows and bubble wrap), inclusive.
    pub clutter: (usize, usize),
    /// The chance that a lot other than the main one is counterfeit. 0 for `Small`.
    pub secondary_counterfeit_probability: f64,
    /// Carton size across the belt, millimetres (nominal for `Small`), inclusive range.
    pub carton_across_mm: (f32, f32),
    /// Carton size along the belt, millimetres (nominal for `Small`), inclusive range.
    pub carton_along_mm: (f32, f32),
}

/// A scanner profile: its key, its detector and its scenes' difficulty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// The key used on command lines and in file names.
    pub key: &'static str,
    /// The detector.
    pub detector: Detector,
    /// The scenes.
    pub difficulty: Difficulty,
}

const SMALL: Profile = Profile {
    key: "small",
    detector: Detector {
        width_px: (224, 288),
        height_px: (224, 288),
        pitch_across_mm: 2.0,
        pitch_along_mm: 2.0,
        photons_high: 20_000.0,
        photons_low: 12_000.0,
        read_noise: 0.0,
        column_gain_spread: 0.0,
        high_gain: 1.0,
        ratio_exponent: 1.0,
        hardening: 0.0,
    },
    difficulty: Difficulty {
        lots: (1, 3),
        overlap: 0.0,
        clutter: (0, 3),
        secondary_counterfeit_probability: 0.0,
        carton_across_mm: (358.4, 506.9),
        carton_along_mm: (358.4, 506.9),
    },
};

const S6550: Profile = Profile {
    key: "6550",
    detector: Detector {
        width_px: (812, 812),
        height_px: (360, 818),
        pitch_across_mm: 0.8,
        pitch_along_mm: 1.0,
        photons_high: 9_000.0,
        photons_low: 5_000.0,
        read_noise: 0.0008,
        column_gain_spread: 0.002,
        high_gain: 0.95,
        ratio_exponent: 0.97,
        hardening: 0.05,
    },
    difficulty: Difficulty {
        lots: (2, 3),
        overlap: 0.10,
        clutter: (2, 5),
        secondary_counterfeit_probability: 0.10,
        carton_across_mm: (250.0, 520.0),
        carton_along_mm: (280.0, 600.0),
    },
};

const S100100: Profile = Profile {
    key: "100100",
    detector: Detector {
        width_px: (1250, 1250),
        height_px: (538, 1431),
        pitch_across_mm: 0.72,
        pitch_along_mm: 0.8,
        photons_high: 5_000.0,
        photons_low: 2_800.0,
        read_noise: 0.0015,
        column_gain_spread: 0.004,
        high_gain: 0.85,
        ratio_exponent: 1.08,
        hardening: 0.10,
    },
    difficulty: Difficulty {
        lots: (3, 5),
        overlap: 0.30,
        clutter: (4, 9),
        secondary_counterfeit_probability: 0.10,
        carton_across_mm: (300.0, 760.0),
        carton_along_mm: (350.0, 900.0),
    },
};

impl Scanner {
    /// Every profile, `Small` first.
    pub const ALL: [Scanner; 3] = [Scanner::Small, Scanner::S6550, Scanner::S100100];

    /// Every profile, `Small` first.
    pub fn all() -> &'static [Scanner] {
        &Scanner::ALL
    }

    /// The profile's key: `"small"`, `"6550"` or `"100100"`.
    pub fn key(self) -> &'static str {
        self.profile().key
    }

    /// The profile with this key (see [`Scanner::key`]); `None` for any other string.
    pub fn from_key(key: &str) -> Option<Scanner> {
        Scanner::ALL.into_iter().find(|s| s.key() == key)
    }

    /// The profile's fixed parameters.
    pub fn profile(self) -> &'static Profile {
        match self {
            Scanner::Small => &SMALL,
            Scanner::S6550 => &S6550,
            Scanner::S100100 => &S100100,
        }
    }

    /// Whether datasets of this scanner hold dual-energy 16-bit pairs (the large profiles)
    /// rather than pseudo-colour PNGs (`Small`).
    pub fn writes_pairs(self) -> bool {
        self != Scanner::Small
    }

    /// The ChaCha8 stream the large profiles draw their scenes from (distinct per profile,
    /// and distinct from `Small`'s stream 0).
    pub(crate) fn stream(self) -> u64 {
        match self {
            Scanner::Small => 0,
            Scanner::S6550 => 6550,
            Scanner::S100100 => 100_100,
        }
    }
}

impl fmt::Display for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}
